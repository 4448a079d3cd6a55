/* adopt.c - rolls committed before the store's log, put into it (adopt.h).
 *
 * One roll at a time, oldest first (bfs_catalog_prelog_next: the order of
 * their first archive, the order they were committed in):
 *
 *   1. The roll's archives as the catalog lists them (bfs_catalog_roll_walk,
 *      without index rows), copied, so no read transaction stays open while
 *      the store is read: each is looked up (HEAD: there, its size), its
 *      layout header read and parsed (the schema and codec it is in, which
 *      must be what the catalog says when it says it), read whole to hash
 *      when the catalog lacks its SHA-256 (a catalog migrated from before the
 *      log), and its schema put (and the versions it merges). A roll whose
 *      archives are not in the store as the catalog has them is "broken":
 *      left as it is, reported, and the next roll goes on.
 *   2. The manifest: a second walk, with the index rows, in one read
 *      transaction (the Roll's bytes are the rows written), into
 *      <work>/adopt-<roll id>.avro. Its bytes are a function of the rows, so
 *      a retry writes the same; it is put create-only unless the store holds
 *      it already (a crash after its put), in which case the store's copy is
 *      the manifest: read back, checked to be of this roll and to name these
 *      archives (an erasure in between may leave it with rows the catalog no
 *      longer has; the entry's base, 0, drops them for every reader).
 *   3. bfs_ledger_commit(adopt): the log entry, applied from the local file,
 *      which stamps the catalog's rows (catalog.h, bfs_catalog_apply_begin).
 *
 * Runs in the mount's start-up thread (main.c), before the roller and the
 * compactor start and before the mount serves; it takes no lock of its own
 * (the ledger's and the catalog's, through their calls).
 */
#include "battlefs/adopt.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/catalog.h"
#include "battlefs/errors.h"
#include "battlefs/fsutil.h"
#include "battlefs/layout.h"
#include "battlefs/ledger.h"
#include "battlefs/log.h"
#include "battlefs/manifest.h"
#include "battlefs/metrics.h"
#include "battlefs/names.h"
#include "battlefs/ocf.h"
#include "battlefs/progress.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"

#define CHUNK (4u << 20) /* an archive is read in pieces of this */

static const char *const step_names[BFS_ADOPT_STEPS] = {
    "after-schemas",
    "after-manifest",
    "after-log",
    "after-commit",
};

const char *bfs_adopt_step_name(enum bfs_adopt_step step)
{
    return (unsigned)step < BFS_ADOPT_STEPS ? step_names[step] : NULL;
}

int bfs_adopt_step_parse(const char *name, enum bfs_adopt_step *out)
{
    int i = bfs_name_index(step_names, BFS_ADOPT_STEPS, name);
    if (i < 0)
        return -EINVAL;
    *out = (enum bfs_adopt_step)i;
    return 0;
}

/* An archive of the roll, as the catalog has it (and the store, once checked). */
struct arch {
    char *key, *table, *period;
    uint64_t size, header_length;
    int known; /* sha256, fp and codec are set (the catalog's, or read from the store) */
    uint8_t sha256[32];
    char fp[17];
    enum bfs_codec codec;
    size_t n_versions;
    char (*versions)[17];
};

struct adopt {
    const struct bfs_adopt_deps *d;
    char roll_id[BFS_ROLL_ID_MAX];
    struct bfs_err *err;
    int bad; /* err says how the roll's archives are not what the catalog says */
    struct arch *arch;
    size_t n_arch, cap;
    uint8_t *buf; /* CHUNK bytes */
    struct bfs_progress prog;
    uint64_t hashed; /* bytes of archives read to hash them, in all */
    /* the manifest */
    struct bfs_manifest_writer *w;
    size_t next; /* the archive its next Archive entry is (both walks list them in one order) */
    int64_t committed_at;
    char path[4096];
    char key[BFS_STORE_KEY_MAX];
    uint64_t size;
    uint8_t sha256[32];
};

static int broken(struct adopt *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The roll cannot be adopted as the catalog has it: -EIO with err. */
static int broken(struct adopt *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bfs_err_vset(a->err, -EIO, fmt, ap);
    va_end(ap);
    a->bad = 1;
    return -EIO;
}

static int fault_at(struct adopt *a, enum bfs_adopt_step step)
{
    int rc = a->d->fault ? a->d->fault(a->d->fault_arg, step, a->roll_id) : 0;
    if (rc < 0)
        return bfs_err_set(a->err, rc, "stopped by the fault hook at %s", step_names[step]);
    return 0;
}

static void arch_free(struct adopt *a)
{
    for (size_t i = 0; i < a->n_arch; i++) {
        free(a->arch[i].key);
        free(a->arch[i].table);
        free(a->arch[i].period);
        free(a->arch[i].versions);
    }
    a->n_arch = 0;
}

/* ---- 1. the archives ---- */

static int collect_archive(void *ctx, const struct bfs_manifest_archive *m)
{
    struct adopt *a = ctx;
    if (bfs_array_reserve(&a->arch, &a->cap, a->n_arch + 1, sizeof *a->arch) < 0)
        return bfs_err_set(a->err, -ENOMEM, "out of memory");
    struct arch *x = &a->arch[a->n_arch];
    *x = (struct arch){
        .key = strdup(m->key),
        .table = strdup(m->table),
        .period = strdup(m->period),
        .size = m->size,
        .header_length = m->header_length,
        .known = m->schema_fingerprint != NULL,
        .codec = m->codec,
        .n_versions = m->n_versions,
        .versions = m->n_versions ? calloc(m->n_versions, sizeof *x->versions) : NULL,
    };
    a->n_arch++;
    if (!x->key || !x->table || !x->period || (m->n_versions && !x->versions))
        return bfs_err_set(a->err, -ENOMEM, "out of memory");
    if (m->n_versions)
        memcpy(x->versions, m->versions, m->n_versions * sizeof *x->versions);
    if (x->known) {
        memcpy(x->sha256, m->sha256, sizeof x->sha256);
        snprintf(x->fp, sizeof x->fp, "%s", m->schema_fingerprint);
    }
    return 0;
}

/* Put the schemas of the versions archive x's schema merges (their texts are
 * its partition's versions here). */
static int put_versions(struct adopt *a, const struct arch *x)
{
    if (x->n_versions == 0)
        return 0;
    struct bfs_versions pv;
    int rc = bfs_catalog_partition_versions(a->d->cat, x->table, x->period, &pv);
    if (rc < 0)
        return bfs_err_set(a->err, rc, "partition %s/%s: %s", x->table, x->period, strerror(-rc));
    for (size_t i = 0; rc == 0 && i < x->n_versions; i++) {
        size_t j = 0;
        char fp[17] = "";
        while (j < pv.n && (bfs_layout_fingerprint(pv.v[j].json, pv.v[j].len, fp) < 0 ||
                            strcmp(fp, x->versions[i]) != 0))
            j++;
        if (j == pv.n)
            rc = bfs_err_set(a->err, -EIO, "archive %s: version %s is not one of %s/%s here",
                             x->key, x->versions[i], x->table, x->period);
        else
            rc = bfs_ledger_put_schema(a->d->ledger, fp, pv.v[j].json, pv.v[j].len, a->err);
    }
    bfs_versions_free(&pv);
    return rc;
}

/* Archive x in the store as the catalog has it; its SHA-256, schema and
 * codec known (read from the store if the catalog lacks them); its schemas
 * put. 0, -EIO with a->bad (it is not), -errno. */
static int check_archive(struct adopt *a, struct arch *x)
{
    const struct bfs_adopt_deps *d = a->d;
    struct bfs_store_head h;
    int rc = bfs_store_head(d->store, x->key, &h, a->err);
    if (rc == -ENOENT)
        return broken(a, "archive %s is not in the store", x->key);
    if (rc < 0) {
        bfs_err_prefix(a->err, "archive %s", x->key);
        return rc;
    }
    if (h.size != x->size)
        return broken(a, "archive %s has %" PRIu64 " bytes in the store, the catalog says %" PRIu64,
                      x->key, h.size, x->size);
    if (x->header_length == 0 || x->header_length > x->size ||
        x->header_length > BFS_OCF_MAX_HEADER)
        return broken(a, "archive %s: bad header length %" PRIu64, x->key, x->header_length);
    if ((rc = bfs_store_get_range(d->store, x->key, 0, x->header_length, a->buf, a->err)) < 0) {
        bfs_err_prefix(a->err, "archive %s: header", x->key);
        return rc;
    }
    struct bfs_ocf_header oh;
    struct bfs_err perr = {0};
    rc = bfs_ocf_parse_header(a->buf, (size_t)x->header_length, &oh, &perr);
    if (rc == -ENOMEM)
        return bfs_err_set(a->err, rc, "out of memory");
    if (rc < 0)
        return broken(a, "archive %s: its header does not parse: %s", x->key, perr.msg);
    char fp[17];
    snprintf(fp, sizeof fp, "%016" PRIx64, bfs_ocf_schema_fingerprint(oh.compiled));
    if (oh.header_len != x->header_length ||
        memcmp(oh.sync, bfs_ocf_schema_sync(oh.compiled), 16) != 0 ||
        (x->known && (strcmp(fp, x->fp) != 0 || oh.codec != x->codec)))
        rc = broken(a,
                    "archive %s: its header (schema %s, codec %s, %zu bytes) is not the layout "
                    "header the catalog says (schema %s, codec %s, %" PRIu64 " bytes)",
                    x->key, fp, bfs_codec_name(oh.codec), oh.header_len, x->known ? x->fp : "?",
                    x->known ? bfs_codec_name(x->codec) : "?", x->header_length);
    if (rc == 0 && !x->known) {
        rc = bfs_store_fetch(d->store, x->key, x->size, a->buf, CHUNK, -1, x->sha256, a->err);
        if (rc < 0) {
            bfs_err_prefix(a->err, "archive %s", x->key);
        } else {
            snprintf(x->fp, sizeof x->fp, "%s", fp);
            x->codec = oh.codec;
            x->known = 1;
            a->hashed += x->size;
            bfs_progress_report(&a->prog, a->hashed);
        }
    }
    if (rc == 0)
        rc = bfs_ledger_put_schema(d->ledger, fp, oh.schema_json, oh.schema_len, a->err);
    bfs_ocf_header_free(&oh);
    return rc == 0 ? put_versions(a, x) : rc;
}

/* ---- 2. the manifest ---- */

static int w_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                  int64_t committed_at)
{
    (void)seq, (void)epoch;
    struct adopt *a = ctx;
    struct bfs_manifest_roll roll = *r;
    roll.node = a->d->node;
    roll.base = 0; /* older than the whole log */
    a->committed_at = committed_at;
    int rc = bfs_manifest_create(a->path, &roll, &a->w);
    if (rc == -EINVAL)
        return broken(a, "its rolls row cannot be a manifest's Roll (rows %" PRId64 ")", r->rows);
    return rc < 0 ? bfs_err_set(a->err, rc, "create %s: %s", a->path, strerror(-rc)) : 0;
}

static int w_archive(void *ctx, const struct bfs_manifest_archive *m)
{
    struct adopt *a = ctx;
    const struct arch *x = a->next < a->n_arch ? &a->arch[a->next] : NULL;
    if (!x || strcmp(x->key, m->key) != 0)
        return bfs_err_set(a->err, -EAGAIN, "its archives changed while it was adopted");
    a->next++;
    struct bfs_manifest_archive ma = *m;
    memcpy(ma.sha256, x->sha256, sizeof ma.sha256);
    ma.schema_fingerprint = x->fp;
    ma.codec = x->codec;
    int rc = bfs_manifest_add_archive(a->w, &ma);
    if (rc == -EINVAL)
        return broken(a, "archive %s cannot be a manifest's Archive", m->key);
    return rc < 0 ? bfs_err_set(a->err, rc, "write %s: %s", a->path, strerror(-rc)) : 0;
}

static int w_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct adopt *a = ctx;
    int rc = bfs_manifest_add_index(a->w, x);
    if (rc == -EINVAL)
        return broken(a, "archive %s: the index row of %s is not inside it",
                      a->arch[a->next - 1].key, x->dataset);
    return rc < 0 ? bfs_err_set(a->err, rc, "write %s: %s", a->path, strerror(-rc)) : 0;
}

/* Write the manifest from the catalog's rows into a->path (its SHA-256 and
 * size in a). */
static int write_manifest(struct adopt *a)
{
    if (unlink(a->path) < 0 && errno != ENOENT)
        return bfs_err_set(a->err, -errno, "remove %s: %s", a->path, strerror(errno));
    const struct bfs_checkpoint_visitor v = {
        .roll = w_roll, .archive = w_archive, .index = w_index, .ctx = a};
    a->next = 0;
    a->w = NULL;
    int rc = bfs_catalog_roll_walk(a->d->cat, a->roll_id, &v);
    if (rc == 0 && a->next != a->n_arch)
        rc = bfs_err_set(a->err, -EAGAIN, "its archives changed while it was adopted");
    else if (rc < 0 && !a->err->code)
        bfs_err_set(a->err, rc, "read its rows: %s", strerror(-rc));
    if (a->w && rc == 0 && (rc = bfs_manifest_finish(a->w, a->sha256, &a->size)) < 0)
        bfs_err_set(a->err, rc, "write %s: %s", a->path, strerror(-rc));
    else if (a->w && rc < 0)
        bfs_manifest_abort(a->w);
    a->w = NULL;
    return rc;
}

/* Checks of a manifest the store held already: of this roll, naming its
 * archives in their order. */
static int r_roll(void *ctx, const struct bfs_manifest_roll *r)
{
    struct adopt *a = ctx;
    if (strcmp(r->node, a->d->node) != 0 || strcmp(r->roll_id, a->roll_id) != 0)
        return bfs_err_set(a->err, -EEXIST, "it is of roll %s of node %s", r->roll_id, r->node);
    return 0;
}

static int r_archive(void *ctx, const struct bfs_manifest_archive *m)
{
    struct adopt *a = ctx;
    const struct arch *x = a->next < a->n_arch ? &a->arch[a->next] : NULL;
    if (!x || strcmp(x->key, m->key) != 0 || x->size != m->size ||
        x->header_length != m->header_length || memcmp(x->sha256, m->sha256, sizeof x->sha256) != 0)
        return bfs_err_set(a->err, -EEXIST, "its archive %s is not the roll's %s", m->key,
                           x ? x->key : "(none)");
    a->next++;
    return 0;
}

static int r_index(void *ctx, const struct bfs_manifest_index *x)
{
    (void)ctx, (void)x;
    return 0;
}

/* The store holds the manifest's key (a crash after its put): 0 when it is
 * this manifest or one of this roll written before an erasure (then it
 * replaces a->path: it is the manifest), -EEXIST when it is something else. */
static int take_stored(struct adopt *a, uint64_t size)
{
    char tmp[sizeof a->path + 8];
    snprintf(tmp, sizeof tmp, "%s.store", a->path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return bfs_err_set(a->err, -errno, "create %s: %s", tmp, strerror(errno));
    uint8_t sha[32];
    int rc = bfs_store_fetch(a->d->store, a->key, size, a->buf, CHUNK, fd, sha, a->err);
    if (rc < 0)
        bfs_err_prefix(a->err, "manifest %s", a->key);
    int same = rc == 0 && size == a->size && memcmp(sha, a->sha256, 32) == 0;
    if (rc == 0 && !same) {
        const struct bfs_manifest_visitor v = {
            .roll = r_roll, .archive = r_archive, .index = r_index, .ctx = a};
        struct bfs_err rerr = {0};
        a->next = 0;
        rc = lseek(fd, 0, SEEK_SET) < 0 ? bfs_err_set(a->err, -errno, "seek %s", tmp)
                                        : bfs_manifest_read(fd, &v, &rerr);
        if (rc == 0 && a->next != a->n_arch)
            rc = bfs_err_set(a->err, -EEXIST, "it names %zu of the roll's %zu archives", a->next,
                             a->n_arch);
        else if (rc < 0 && !a->err->code)
            bfs_err_set(a->err, -EEXIST, "%s", rerr.msg[0] ? rerr.msg : strerror(-rc));
        if (rc < 0) {
            rc = -EEXIST;
            bfs_err_prefix(a->err, "manifest %s is in the store, but not this roll's", a->key);
        }
    }
    close(fd);
    if (rc == 0 && !same && rename(tmp, a->path) < 0) {
        rc = bfs_err_set(a->err, -errno, "rename %s: %s", tmp, strerror(errno));
    } else if (rc == 0 && !same) {
        a->size = size;
        memcpy(a->sha256, sha, sizeof sha);
        bfs_info("roll %s: the store holds its manifest from an earlier attempt, written before "
                 "an erasure: that one is committed (the erased rows it names are dropped by "
                 "every reader)",
                 a->roll_id);
    }
    unlink(tmp);
    return rc;
}

/* Put the manifest create-only, or take the store's (take_stored). */
static int put_manifest(struct adopt *a)
{
    const struct bfs_adopt_deps *d = a->d;
    int rc = bfs_ledger_manifest_key(d->node, a->roll_id, a->key, sizeof a->key);
    if (rc < 0)
        return bfs_err_set(a->err, rc, "manifest key: %s", strerror(-rc));
    struct bfs_store_head h;
    rc = bfs_store_head(d->store, a->key, &h, a->err);
    if (rc == 0)
        return take_stored(a, h.size);
    if (rc != -ENOENT) {
        bfs_err_prefix(a->err, "manifest %s", a->key);
        return rc;
    }
    const struct bfs_put_src src = {
        .path = a->path,
        .sha256 = d->store->put_wants_sha256 ? a->sha256 : NULL,
        .may_link = 1, /* only read from now on, removed after the commit */
        .cond = BFS_PUT_CREATE,
    };
    rc = bfs_store_put_src(d->store, a->key, &src, a->err);
    if (rc < 0)
        bfs_err_prefix(a->err, "put %s", a->key);
    return rc;
}

/* ---- 3. the commit ---- */

/* A manifest of ours in the work directory (adopt-<roll id>.avro, and its
 * ".store" copy): what a killed adoption left is removed when the next one
 * starts. */
static int is_adopt_file(const char *name)
{
    return strncmp(name, "adopt-", 6) == 0 && strstr(name, ".avro") != NULL;
}

static int after_log_hook(void *arg)
{
    return fault_at(arg, BFS_ADOPT_AFTER_LOG);
}

/* Adopt the roll a->roll_id: 0 (also when it was adopted meanwhile), -EIO
 * with a->bad, -errno with a->err. */
static int adopt_one(struct adopt *a)
{
    const struct bfs_adopt_deps *d = a->d;
    arch_free(a);
    const struct bfs_checkpoint_visitor list = {.archive = collect_archive, .ctx = a};
    int rc = bfs_catalog_roll_walk(d->cat, a->roll_id, &list);
    if (rc == -ENOENT)
        return 0; /* gone: the roll was not what it seemed */
    if (rc < 0)
        return a->err->code ? rc : bfs_err_set(a->err, rc, "read its archives: %s", strerror(-rc));
    for (size_t i = 0; i < a->n_arch && rc == 0; i++)
        rc = check_archive(a, &a->arch[i]);
    if (rc == 0)
        rc = fault_at(a, BFS_ADOPT_AFTER_SCHEMAS);
    if (rc == 0 && snprintf(a->path, sizeof a->path, "%s/adopt-%s.avro", d->work_dir, a->roll_id) >=
                       (int)sizeof a->path)
        rc = bfs_err_set(a->err, -ENAMETOOLONG, "%s: path too long", d->work_dir);
    if (rc == 0)
        rc = write_manifest(a);
    if (rc == 0)
        rc = put_manifest(a);
    if (rc == 0)
        rc = fault_at(a, BFS_ADOPT_AFTER_MANIFEST);
    if (rc < 0)
        return rc;
    struct bfs_ledger_roll lr = {
        .roll_id = a->roll_id,
        .manifest_key = a->key,
        .manifest_path = a->path,
        .size = a->size,
        .after_log = after_log_hook,
        .after_log_arg = a,
        .adopt = 1,
        .committed_at = a->committed_at,
    };
    memcpy(lr.sha256, a->sha256, sizeof lr.sha256);
    rc = bfs_ledger_commit(d->ledger, &lr, a->err);
    if (rc == 0)
        rc = fault_at(a, BFS_ADOPT_AFTER_COMMIT);
    if (rc == 0 && unlink(a->path) < 0 && errno != ENOENT)
        bfs_warn("roll %s: cannot remove %s: %s", a->roll_id, a->path, strerror(errno));
    return rc;
}

int bfs_adopt_run(const struct bfs_adopt_deps *d, struct bfs_err *err)
{
    bfs_err_clear(err);
    int64_t after = 0;
    uint64_t left = 0;
    struct adopt a = {.d = d, .err = err};
    int rc = bfs_catalog_prelog_next(d->cat, &after, a.roll_id, &left);
    if (rc == -ENOENT) {
        atomic_store(&d->stats->rolls_unadopted, 0);
        return 0;
    }
    if (rc < 0)
        return bfs_err_set(err, rc, "find the rolls from before the log: %s", strerror(-rc));
    atomic_store(&d->stats->rolls_unadopted, left);
    if (!(a.buf = malloc(CHUNK)))
        return bfs_err_set(err, -ENOMEM, "out of memory");
    int left_files = bfs_remove_files(d->work_dir, is_adopt_file);
    if (left_files < 0)
        bfs_warn("cannot open the work directory %s: %s", d->work_dir, strerror(-left_files));
    bfs_info("%" PRIu64 " rolls were committed here before the store's log: putting them into "
             "it (node %s), oldest first",
             left, d->node);
    double t0 = bfs_metrics_now();
    bfs_progress_start(&a.prog, d->stats, BFS_WORK_ROLL,
                       "adopt: read the archives of rolls from before the log", BFS_PROGRESS_BYTES,
                       NULL, 0);
    uint64_t adopted = 0, broken_rolls = 0;
    while (rc == 0) {
        a.bad = 0;
        bfs_err_clear(err);
        rc = adopt_one(&a);
        if (rc < 0 && a.bad) {
            char msg[sizeof err->msg + BFS_ROLL_ID_MAX + 64];
            snprintf(msg, sizeof msg, "roll %s (committed before the store's log): %s", a.roll_id,
                     err->msg);
            bfs_error("%s: it cannot be adopted and stays known to this catalog only", msg);
            if (bfs_errors_add(d->errors, "adopt", msg) < 0)
                bfs_error("cannot record the adoption error: out of memory");
            broken_rolls++;
            rc = 0;
        } else if (rc < 0) {
            bfs_err_prefix(err, "roll %s", a.roll_id);
            break;
        } else {
            adopted++;
        }
        rc = bfs_catalog_prelog_next(d->cat, &after, a.roll_id, NULL);
    }
    bfs_progress_end(&a.prog);
    arch_free(&a);
    free(a.arch);
    free(a.buf);
    if (rc == -ENOENT)
        rc = 0;
    else if (rc < 0 && !err->code)
        bfs_err_set(err, rc, "find the rolls from before the log: %s", strerror(-rc));
    /* How many are left: the count alone (no roll is after INT64_MAX). */
    int64_t end = INT64_MAX;
    char id[BFS_ROLL_ID_MAX];
    if (bfs_catalog_prelog_next(d->cat, &end, id, &left) == -ENOENT)
        atomic_store(&d->stats->rolls_unadopted, left);
    bfs_info("adopted %" PRIu64 " rolls from before the store's log in %.1f s (%" PRIu64
             " bytes of archives read to hash them); %" PRIu64 " left%s",
             adopted, bfs_metrics_now() - t0, a.hashed, left,
             broken_rolls ? " (some cannot be adopted: see the errors above)" : "");
    return rc;
}
