/* compact.c - period compaction, the garbage it leaves, and the physical
 * side of erasure (compact.h; docs/design.md, "Compaction and erasure").
 *
 * One compaction of (table, period), bfs_compact_partition:
 *
 *  1. Snapshot. The log is read (a refresh), then in one read transaction
 *     the position reached (upto) and the partition's live archives of the
 *     log (ord in 1..upto), in file order: the sources.
 *  2. Lease. _battlefs/compaction/<table>/<period>.lease is taken (created
 *     or swapped with If-Match when absent, released, expired or ours):
 *     another live holder makes this one give up (-EBUSY). It is renewed
 *     while the rewrite runs and released at the end.
 *  3. Rewrite (rewrite.c): the live index rows of the sources, dataset by
 *     dataset, into new archives "<table>/<period>/<id>-<n>.avro", each put
 *     create-only as soon as it is closed; the index rows go to a spool
 *     file. id = "<node>-<time>-<state id>-c<upto>". The compaction is
 *     recorded in the catalog (compactions) before the first put, so a
 *     crash leaves a trace to clean up.
 *  4. Manifest: Compact, a Retire entry per source, the new archives and
 *     their index rows; put create-only; then the log entry (type compact)
 *     through the ledger, which applies it: the sources' rows go, the new
 *     ones stand where they stood (ord = upto), the retired keys go to
 *     store_gc. If another compaction of the partition came first, the
 *     entry is void for every reader and its own objects go to store_gc.
 *  5. Garbage (bfs_compact_gc): retired objects are deleted gc_grace after
 *     the commit, or at once when they hold erased bytes; then erasures
 *     whose bytes nothing holds any more are marked done.
 *
 * A crash before the log entry leaves objects that nothing references:
 * bfs_compact_recover (at mount, after the log is read) deletes them, but
 * only once a refresh succeeded, so a compaction whose entry is in the log
 * is never mistaken for an abandoned one. After the entry, the log is the
 * commit and the refresh at mount applies it.
 *
 * Locking: work_mu serialises compactions and garbage collection of one
 * mount (the thread and .battlefs/compact); mu guards the thread's wake-up
 * and stop. work_mu is taken before the ledger's and the catalog's locks
 * (through their APIs), never while holding mu.
 */
#include "battlefs/compact.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/cache.h"
#include "battlefs/catalog.h"
#include "battlefs/errors.h"
#include "battlefs/fsutil.h"
#include "battlefs/layout.h"
#include "battlefs/ledger.h"
#include "battlefs/log.h"
#include "battlefs/manifest.h"
#include "battlefs/names.h"
#include "battlefs/rewrite.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"

#define LEASE_PREFIX   "_battlefs/compaction/"
#define LEASE_TTL      60  /* seconds, the default */
#define PAGE_DATASETS  256 /* datasets read from the catalog at once */
#define TICK_MAX       30  /* seconds between the thread's looks, at most */
#define LEASE_BODY_MAX 4096

static const char *const STEP_NAMES[BFS_COMPACT_STEPS] = {
    "after-lease", "mid-build", "after-build", "after-manifest", "after-log", "after-commit",
};

const char *bfs_compact_step_name(enum bfs_compact_step step)
{
    return (unsigned)step < BFS_COMPACT_STEPS ? STEP_NAMES[step] : NULL;
}

int bfs_compact_step_parse(const char *name, enum bfs_compact_step *out)
{
    int i = bfs_name_index(STEP_NAMES, BFS_COMPACT_STEPS, name);
    if (i < 0)
        return -EINVAL;
    *out = (enum bfs_compact_step)i;
    return 0;
}

static int fault(const struct bfs_compact_deps *d, enum bfs_compact_step step, const char *id)
{
    return d->fault ? d->fault(d->fault_arg, step, id) : 0;
}

static uint64_t ttl_of(const struct bfs_compact_deps *d)
{
    return d->lease_ttl_s ? d->lease_ttl_s : LEASE_TTL;
}

/* ---- the lease ---- */

struct lease {
    char key[BFS_STORE_KEY_MAX + 1];
    char etag[BFS_STORE_ETAG_MAX];
    char holder[BFS_STATE_ID_MAX];
    int64_t seq;
    time_t renewed; /* when it was last put */
    int held;
};

/* Put a small object from memory (through a file of the work directory). */
static int put_text(const struct bfs_compact_deps *d, const char *key, const char *text,
                    enum bfs_put_cond cond, const char *if_match, char *etag_out,
                    struct bfs_err *err)
{
    const struct bfs_put_src how = {
        .cond = cond, .if_match = if_match, .etag_out = etag_out, .race_ok = 1};
    return bfs_store_put_bytes(d->store, d->work_dir, "compact-lease", key, text, strlen(text),
                               &how, err);
}

static char *lease_text(const struct bfs_compact_deps *d, const struct lease *ls, int released)
{
    json_t *j = json_pack("{s:i, s:s, s:s, s:I, s:I, s:b}", "battlefs_compaction_lease", 1, "node",
                          d->node, "holder", ls->holder, "seq", (json_int_t)ls->seq, "expires_at",
                          (json_int_t)(time(NULL) + (time_t)ttl_of(d)), "released", released);
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

/* Take the lease of (table, period): 0, -EBUSY (err: who holds it), -errno. */
static int lease_take(const struct bfs_compact_deps *d, const char *table, const char *period,
                      struct lease *ls, struct bfs_err *err)
{
    memset(ls, 0, sizeof *ls);
    snprintf(ls->key, sizeof ls->key, LEASE_PREFIX "%s/%s.lease", table, period);
    int rc = bfs_catalog_ledger_state(d->cat, NULL, ls->holder);
    if (rc < 0)
        return bfs_err_set(err, rc, "read the state id");
    for (int attempt = 0; attempt < 4; attempt++) {
        void *data = NULL;
        size_t len = 0;
        char etag[BFS_STORE_ETAG_MAX] = "";
        rc = bfs_store_get(d->store, ls->key, LEASE_BODY_MAX, &data, &len, etag, err);
        enum bfs_put_cond cond = BFS_PUT_CREATE;
        if (rc == 0) {
            json_t *j = json_loadb(data, len, 0, NULL);
            json_int_t seq = 0, exp = 0;
            int released = 0;
            const char *node = "?", *holder = "";
            if (!j || json_unpack(j, "{s:s, s:s, s:I, s:I, s:b}", "node", &node, "holder", &holder,
                                  "seq", &seq, "expires_at", &exp, "released", &released) < 0) {
                json_decref(j);
                free(data);
                return bfs_err_set(err, -EIO, "%s is not a compaction lease", ls->key);
            }
            int ours = strcmp(holder, ls->holder) == 0;
            if (!released && !ours && exp > (json_int_t)time(NULL)) {
                rc = bfs_err_set(err, -EBUSY, "compaction of %s/%s is held by node %s until %lld",
                                 table, period, node, (long long)exp);
                json_decref(j);
                free(data);
                return rc;
            }
            ls->seq = (int64_t)seq + 1;
            cond = BFS_PUT_MATCH;
            json_decref(j);
            free(data);
        } else if (rc == -ENOENT) {
            ls->seq = 1;
        } else {
            return rc;
        }
        char *text = lease_text(d, ls, 0);
        if (!text)
            return bfs_err_set(err, -ENOMEM, "out of memory");
        rc = put_text(d, ls->key, text, cond, cond == BFS_PUT_MATCH ? etag : NULL, ls->etag, err);
        free(text);
        if (rc == -EEXIST || rc == -ESTALE || rc == -ENOENT)
            continue; /* raced: read it again */
        if (rc < 0)
            return rc;
        ls->held = 1;
        ls->renewed = time(NULL);
        return 0;
    }
    return bfs_err_set(err, -EBUSY, "compaction lease of %s/%s: lost the race %d times", table,
                       period, 4);
}

/* Renew when a third of its time has passed: 0, or -errno (it is lost). */
static int lease_renew(const struct bfs_compact_deps *d, struct lease *ls, struct bfs_err *err)
{
    if (!ls->held || time(NULL) - ls->renewed < (time_t)(ttl_of(d) / 3))
        return 0;
    ls->seq++;
    char *text = lease_text(d, ls, 0);
    if (!text)
        return bfs_err_set(err, -ENOMEM, "out of memory");
    char etag[BFS_STORE_ETAG_MAX];
    snprintf(etag, sizeof etag, "%s", ls->etag);
    int rc = put_text(d, ls->key, text, BFS_PUT_MATCH, etag, ls->etag, err);
    free(text);
    if (rc < 0) {
        ls->held = 0;
        return bfs_err_set(err, rc, "the compaction lease %s was lost: %s", ls->key,
                           err->msg[0] ? err->msg : strerror(-rc));
    }
    ls->renewed = time(NULL);
    return 0;
}

static void lease_release(const struct bfs_compact_deps *d, struct lease *ls)
{
    if (!ls->held)
        return;
    ls->seq++;
    char *text = lease_text(d, ls, 1);
    struct bfs_err err = {0};
    char etag[BFS_STORE_ETAG_MAX];
    snprintf(etag, sizeof etag, "%s", ls->etag);
    int rc = text ? put_text(d, ls->key, text, BFS_PUT_MATCH, etag, NULL, &err) : -ENOMEM;
    free(text);
    if (rc < 0)
        bfs_warn("compaction lease %s: cannot release it (it expires by itself): %s", ls->key,
                 err.msg[0] ? err.msg : strerror(-rc));
    ls->held = 0;
}

/* ---- one compaction ---- */

struct source {
    int64_t id;
    char *key;
    char *json;
    uint64_t size, header_length;
    int64_t schema_id;
    int dirty;
};

struct archive {
    char key[BFS_STORE_KEY_MAX + 1];
    uint64_t size, header_length;
    uint8_t sha256[32];
};

struct job {
    const struct bfs_compact_deps *d;
    char id[BFS_ROLL_ID_MAX];
    const char *table, *period;
    int64_t upto;
    struct source *src;
    size_t n_src, cap_src;
    struct bfs_rw_source *rws;
    /* the catalog's rows, a page at a time */
    struct bfs_compact_row *rows;
    char **row_ds;
    size_t n_rows, cap_rows, next_row;
    char last_ds[BFS_NAME_MAX + 1];
    int done_rows;
    /* what the rewrite made */
    struct archive *arch;
    size_t n_arch, cap_arch;
    FILE *spool; /* index rows: archive number, dataset, start, length, records, uploaded_at */
    uint64_t bytes;
    struct lease lease;
    struct putter *put; /* puts the closed archives */
    struct bfs_err *err;
};

static int add_source(void *ctx, const struct bfs_compact_source *s)
{
    struct job *j = ctx;
    if (j->n_src == j->cap_src) {
        size_t cap = j->cap_src ? 2 * j->cap_src : 16;
        void *p = realloc(j->src, cap * sizeof *j->src);
        if (!p)
            return -ENOMEM;
        j->src = p;
        j->cap_src = cap;
    }
    struct source *x = &j->src[j->n_src];
    *x = (struct source){.id = s->id,
                         .key = strdup(s->key),
                         .json = strdup(s->schema_json),
                         .size = s->size,
                         .header_length = s->header_length,
                         .schema_id = s->schema_id,
                         .dirty = s->dirty};
    if (!x->key || !x->json) {
        free(x->key);
        free(x->json);
        return -ENOMEM;
    }
    j->n_src++;
    return 0;
}

static int add_row(void *ctx, const struct bfs_compact_row *r)
{
    struct job *j = ctx;
    if (j->n_rows == j->cap_rows) {
        size_t cap = j->cap_rows ? 2 * j->cap_rows : 1024;
        void *p = realloc(j->rows, cap * sizeof *j->rows);
        if (!p)
            return -ENOMEM;
        j->rows = p;
        if (!(p = realloc(j->row_ds, cap * sizeof *j->row_ds)))
            return -ENOMEM;
        j->row_ds = p;
        j->cap_rows = cap;
    }
    if (!(j->row_ds[j->n_rows] = strdup(r->dataset)))
        return -ENOMEM;
    j->rows[j->n_rows] = *r;
    j->rows[j->n_rows].dataset = j->row_ds[j->n_rows];
    j->n_rows++;
    return 0;
}

static void free_rows(struct job *j)
{
    for (size_t i = 0; i < j->n_rows; i++)
        free(j->row_ds[i]);
    j->n_rows = j->next_row = 0;
}

static int source_of(const struct job *j, int64_t file_id, size_t *out)
{
    for (size_t i = 0; i < j->n_src; i++) /* sources are few: a period's archives */
        if (j->src[i].id == file_id) {
            *out = i;
            return 0;
        }
    return -ENOENT;
}

/* The rewrite's input: the catalog's live rows, a page of datasets at a time. */
static int next_segment(void *ctx, struct bfs_rw_segment *out)
{
    struct job *j = ctx;
    if (j->next_row == j->n_rows) {
        if (j->done_rows)
            return 0;
        if (j->n_rows > 0)
            snprintf(j->last_ds, sizeof j->last_ds, "%s", j->row_ds[j->n_rows - 1]);
        free_rows(j);
        int n = bfs_catalog_compact_rows(j->d->cat, j->table, j->period, j->upto, j->last_ds,
                                         PAGE_DATASETS, add_row, j);
        if (n < 0)
            return n;
        if (n == 0) {
            j->done_rows = 1;
            return 0;
        }
    }
    const struct bfs_compact_row *r = &j->rows[j->next_row++];
    size_t s;
    if (source_of(j, r->file_id, &s) < 0)
        return -ESTALE; /* an archive that is not a source: the partition changed */
    *out = (struct bfs_rw_segment){.dataset = r->dataset,
                                   .source = s,
                                   .start = r->start,
                                   .length = r->length,
                                   .records = r->records,
                                   .uploaded_at = r->uploaded_at};
    return 1;
}

/* The put thread: puts each closed archive while the rewrite writes the
 * next one (one waiting at most: the compaction's directory holds two
 * archives at most), so the store's PUT and the sources' GETs overlap. */
struct putter {
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;
    pthread_t thread;
    int started, have, stop;
    char path[4096];
    char key[BFS_STORE_KEY_MAX + 1];
    uint8_t sha[32];
    unsigned done;      /* archives put */
    int rc;             /* the first failure */
    struct bfs_err err; /* its reason */
    const struct bfs_compact_deps *d;
    const char *id;
};

static void *put_main(void *arg)
{
    struct putter *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->have && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        if (!p->have)
            break;
        char path[sizeof p->path], key[sizeof p->key];
        uint8_t sha[32];
        memcpy(path, p->path, sizeof path);
        memcpy(key, p->key, sizeof key);
        memcpy(sha, p->sha, 32);
        int failed = p->rc < 0;
        pthread_mutex_unlock(&p->mu);
        struct bfs_err err = {0};
        int rc = 0;
        if (!failed) { /* after a failure the rest is only removed */
            const struct bfs_put_src src = {
                .path = path, .sha256 = sha, .may_link = 1, .cond = BFS_PUT_CREATE};
            rc = bfs_store_put_src(p->d->store, key, &src, &err);
            if (rc < 0)
                bfs_err_prefix(&err, "put %s", key);
        }
        unlink(path);
        pthread_mutex_lock(&p->mu);
        unsigned done = failed || rc < 0 ? p->done : ++p->done;
        pthread_mutex_unlock(&p->mu);
        if (rc == 0 && !failed && done == 1 && (rc = fault(p->d, BFS_COMPACT_MID_BUILD, p->id)) < 0)
            bfs_err_set(&err, rc, "stopped by the fault hook at mid-build");
        pthread_mutex_lock(&p->mu);
        if (rc < 0 && p->rc == 0) {
            p->rc = rc;
            p->err = err;
        }
        p->have = 0;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int putter_start(struct putter *p, const struct bfs_compact_deps *d, const char *id)
{
    memset(p, 0, sizeof *p);
    p->d = d;
    p->id = id;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    int rc = pthread_create(&p->thread, NULL, put_main, p);
    if (rc != 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        return -rc;
    }
    p->started = 1;
    return 0;
}

/* Wait until nothing is waiting to be put: 0 or the first put's failure
 * (into err). */
static int putter_drain(struct putter *p, struct bfs_err *err)
{
    pthread_mutex_lock(&p->mu);
    while (p->have)
        pthread_cond_wait(&p->cv, &p->mu);
    int rc = p->rc;
    if (rc < 0 && err)
        *err = p->err;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Drain, stop and join (nothing when it was not started). */
static void putter_stop(struct putter *p)
{
    if (!p->started)
        return;
    putter_drain(p, NULL);
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    p->started = 0;
}

static int on_archive(void *ctx, const struct bfs_rw_archive *a)
{
    struct job *j = ctx;
    if (j->n_arch == j->cap_arch) {
        size_t cap = j->cap_arch ? 2 * j->cap_arch : 8;
        void *p = realloc(j->arch, cap * sizeof *j->arch);
        if (!p) {
            unlink(a->path);
            return -ENOMEM;
        }
        j->arch = p;
        j->cap_arch = cap;
    }
    struct archive *x = &j->arch[j->n_arch];
    snprintf(x->key, sizeof x->key, "%s/%s/%s-%u.avro", j->table, j->period, j->id, a->n);
    x->size = a->size;
    x->header_length = a->header_length;
    memcpy(x->sha256, a->sha256, 32);
    /* The previous archive's put must be done (or failed) first. */
    int rc = putter_drain(j->put, j->err);
    if (rc < 0) {
        unlink(a->path);
        return rc;
    }
    struct putter *p = j->put;
    pthread_mutex_lock(&p->mu);
    snprintf(p->path, sizeof p->path, "%s", a->path);
    memcpy(p->key, x->key, sizeof p->key);
    memcpy(p->sha, a->sha256, 32);
    p->have = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    j->n_arch++;
    return lease_renew(j->d, &j->lease, j->err);
}

static int on_index(void *ctx, const struct bfs_rw_index *x)
{
    struct job *j = ctx;
    uint32_t n = (uint32_t)(j->n_arch - 1);
    uint16_t dl = (uint16_t)strlen(x->dataset);
    uint64_t v[4] = {x->start, x->length, x->records, (uint64_t)x->uploaded_at};
    if (fwrite(&n, sizeof n, 1, j->spool) != 1 || fwrite(&dl, sizeof dl, 1, j->spool) != 1 ||
        fwrite(x->dataset, 1, dl, j->spool) != dl || fwrite(v, sizeof v, 1, j->spool) != 1)
        return bfs_err_set(j->err, -EIO, "spool index rows: %s", strerror(errno));
    j->bytes += x->length;
    return 0;
}

static int cmp_fp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The fingerprints of the partition's versions when its merged schema is
 * their merge (as a roll's archive lists them), and each in the store. */
static int versions_of(struct job *j, const struct bfs_partition *p, char (**out)[17], size_t *n)
{
    *out = NULL;
    *n = 0;
    struct bfs_versions vs;
    int rc = bfs_catalog_partition_versions(j->d->cat, j->table, j->period, &vs);
    if (rc < 0)
        return bfs_err_set(j->err, rc, "versions of %s/%s", j->table, j->period);
    if (vs.n > BFS_MANIFEST_VERSIONS_MAX)
        rc = bfs_err_set(j->err, -E2BIG, "%zu schema versions", vs.n);
    else if (vs.n > 1 && !(*out = calloc(vs.n, sizeof **out)))
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && vs.n > 1 && i < vs.n; i++) {
        rc = bfs_layout_fingerprint(vs.v[i].json, vs.v[i].len, (*out)[i]);
        if (rc == 0)
            rc = bfs_ledger_put_schema(j->d->ledger, (*out)[i], vs.v[i].json, vs.v[i].len, j->err);
    }
    if (rc == 0 && vs.n > 1) {
        *n = vs.n;
        qsort(*out, *n, sizeof **out, cmp_fp);
    }
    if (rc == 0)
        rc = bfs_ledger_put_schema(j->d->ledger, p->fingerprint, p->schema_json, p->schema_len,
                                   j->err);
    bfs_versions_free(&vs);
    if (rc < 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* Write the manifest from the sources, the archives and the spool. */
static int write_manifest(struct job *j, const struct bfs_partition *p, char (*versions)[17],
                          size_t n_versions, const char *path, uint8_t sha[32], uint64_t *size)
{
    const struct bfs_manifest_compact c = {
        .node = j->d->node,
        .compact_id = j->id,
        .table = j->table,
        .period = j->period,
        .upto = j->upto,
        .bytes = (int64_t)j->bytes,
        .retired = (int64_t)j->n_src,
    };
    struct bfs_manifest_writer *w;
    unlink(path);
    int rc = bfs_manifest_create_compact(path, &c, &w);
    if (rc < 0)
        return bfs_err_set(j->err, rc, "create %s", path);
    for (size_t i = 0; rc == 0 && i < j->n_src; i++)
        rc = bfs_manifest_add_retire(w, j->src[i].key);
    rewind(j->spool);
    uint32_t n = 0;
    uint16_t dl = 0;
    char ds[BFS_NAME_MAX + 1];
    uint64_t v[4];
    int have = fread(&n, sizeof n, 1, j->spool) == 1;
    for (size_t a = 0; rc == 0 && a < j->n_arch; a++) {
        struct bfs_manifest_archive ar = {
            .key = j->arch[a].key,
            .table = j->table,
            .period = j->period,
            .size = j->arch[a].size,
            .header_length = j->arch[a].header_length,
            .schema_fingerprint = p->fingerprint,
            .codec = p->codec,
            .n_versions = n_versions,
            .versions = (const char(*)[17])versions,
        };
        memcpy(ar.sha256, j->arch[a].sha256, 32);
        rc = bfs_manifest_add_archive(w, &ar);
        while (rc == 0 && have && n == a) {
            if (fread(&dl, sizeof dl, 1, j->spool) != 1 || dl > BFS_NAME_MAX ||
                fread(ds, 1, dl, j->spool) != dl || fread(v, sizeof v, 1, j->spool) != 1) {
                rc = -EIO;
                break;
            }
            ds[dl] = '\0';
            const struct bfs_manifest_index x = {.dataset = ds,
                                                 .start = v[0],
                                                 .length = v[1],
                                                 .records = v[2],
                                                 .uploaded_at = (int64_t)v[3]};
            rc = bfs_manifest_add_index(w, &x);
            have = fread(&n, sizeof n, 1, j->spool) == 1;
        }
    }
    if (rc < 0) {
        bfs_manifest_abort(w);
        return bfs_err_set(j->err, rc, "write the manifest %s", path);
    }
    if ((rc = bfs_manifest_finish(w, sha, size)) < 0)
        return bfs_err_set(j->err, rc, "finish the manifest %s", path);
    return 0;
}

static int after_log(void *arg)
{
    struct job *j = arg;
    return fault(j->d, BFS_COMPACT_AFTER_LOG, j->id);
}

static void job_free(struct job *j)
{
    for (size_t i = 0; i < j->n_src; i++) {
        free(j->src[i].key);
        free(j->src[i].json);
    }
    free(j->src);
    free(j->rws);
    free_rows(j);
    free(j->rows);
    free(j->row_ds);
    free(j->arch);
    if (j->spool)
        fclose(j->spool);
}

/* Delete what an abandoned compaction id of (table, period) put. */
struct del_ctx {
    const struct bfs_compact_deps *d;
    int rc;
};

static int del_key(void *ctx, const char *key, uint64_t size)
{
    struct del_ctx *x = ctx;
    (void)size;
    struct bfs_err err = {0};
    int rc = bfs_store_del(x->d->store, key, &err);
    if (rc < 0 && rc != -ENOENT && x->rc == 0)
        x->rc = rc;
    else if (rc == 0)
        atomic_fetch_add(&x->d->stats->store_deletes, 1);
    return 0;
}

/* A compaction recorded here but not committed: after a successful refresh,
 * if the log does not hold it, its objects are deleted and the record goes.
 * 0, -EAGAIN (the log could not be read: left for later), -errno. */
static int abandon(const struct bfs_compact_deps *d, const char *id, const char *table,
                   const char *period)
{
    struct bfs_err err = {0};
    int rc = bfs_ledger_refresh(d->ledger, &err);
    if (rc < 0)
        return -EAGAIN;
    int state = bfs_catalog_compaction_state(d->cat, id);
    if (state < 0)
        return state;
    if (state == 0) {
        struct del_ctx x = {d, 0};
        char prefix[BFS_STORE_KEY_MAX + 1];
        snprintf(prefix, sizeof prefix, "%s/%s/%s-", table, period, id);
        rc = bfs_store_list(d->store, prefix, del_key, &x, &err);
        char mkey[BFS_STORE_KEY_MAX + 1];
        if (rc == 0 && bfs_ledger_manifest_key(d->node, id, mkey, sizeof mkey) == 0)
            del_key(&x, mkey, 0);
        if (rc == 0)
            rc = x.rc;
        if (rc < 0)
            return rc;
        bfs_info("compaction %s of %s/%s was not committed: its objects are deleted", id, table,
                 period);
    }
    return bfs_catalog_compaction_end(d->cat, id);
}

int bfs_compact_partition(const struct bfs_compact_deps *d, const char *table, const char *period,
                          struct bfs_err *err)
{
    bfs_err_clear(err);
    struct job j = {.d = d, .table = table, .period = period, .err = err};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = bfs_ledger_refresh(d->ledger, err);
    if (rc < 0)
        return rc;
    rc = bfs_catalog_compact_sources(d->cat, table, period, &j.upto, add_source, &j);
    if (rc < 0) {
        job_free(&j);
        return bfs_err_set(err, rc, "compaction of %s/%s: read its archives", table, period);
    }
    if (j.n_src == 0 || (j.n_src == 1 && !j.src[0].dirty)) {
        job_free(&j);
        bfs_debug("compaction of %s/%s: nothing to rewrite", table, period);
        return 0; /* one clean archive holds each dataset in one range already */
    }
    if ((rc = lease_take(d, table, period, &j.lease, err)) < 0) {
        job_free(&j);
        return rc;
    }
    struct bfs_partition p;
    memset(&p, 0, sizeof p);
    char(*versions)[17] = NULL;
    size_t n_versions = 0;
    char path[4096] = "", mpath[4096] = "", mkey[BFS_STORE_KEY_MAX + 1] = "";
    int recorded = 0, crashed = 0;
    if ((rc = bfs_catalog_partition_get(d->cat, table, period, &p)) < 0) {
        bfs_err_set(err, rc, "partition %s/%s", table, period);
        goto out;
    }
    char sid[BFS_STATE_ID_MAX];
    if ((rc = bfs_catalog_ledger_state(d->cat, NULL, sid)) < 0)
        goto out;
    time_t now = time(NULL);
    struct tm tm;
    char stamp[32];
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(j.id, sizeof j.id, "%s-%s-%.8s-c%" PRId64, d->node, stamp, sid, j.upto);
    if ((rc = bfs_ledger_manifest_key(d->node, j.id, mkey, sizeof mkey)) < 0)
        goto out;
    if ((rc = versions_of(&j, &p, &versions, &n_versions)) < 0)
        goto out;
    if ((rc = bfs_catalog_compaction_begin(d->cat, j.id, table, period, j.upto)) < 0) {
        bfs_err_set(err, rc, "record the compaction");
        goto out;
    }
    recorded = 1;
    if ((rc = fault(d, BFS_COMPACT_AFTER_LEASE, j.id)) < 0) {
        bfs_err_set(err, rc, "stopped by the fault hook at after-lease");
        goto out;
    }
    snprintf(path, sizeof path, "%s/%s.index", d->work_dir, j.id);
    int sfd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (sfd < 0 || !(j.spool = fdopen(sfd, "w+"))) {
        rc = bfs_err_set(err, -errno, "spool %s: %s", path, strerror(errno));
        if (sfd >= 0)
            close(sfd);
        goto out;
    }
    unlink(path); /* anonymous from now on */
    if (!(j.rws = calloc(j.n_src, sizeof *j.rws))) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < j.n_src; i++)
        j.rws[i] = (struct bfs_rw_source){.key = j.src[i].key,
                                          .size = j.src[i].size,
                                          .schema_id = j.src[i].schema_id,
                                          .schema_json = j.src[i].json,
                                          .schema_len = strlen(j.src[i].json)};
    struct bfs_rw_job rw = {
        .store = d->store,
        .convs = d->convs,
        .sources = j.rws,
        .n_sources = j.n_src,
        .header = p.header,
        .header_len = p.header_len,
        .schema_id = p.schema_id,
        .schema_json = p.schema_json,
        .schema_len = p.schema_len,
        .codec = p.codec,
        .archive_max_bytes = d->archive_max_bytes,
        .work_dir = d->work_dir,
        .name = j.id,
        .next = next_segment,
        .archive = on_archive,
        .index = on_index,
        .ctx = &j,
        .stop = d->stop,
    };
    memcpy(rw.sync, p.sync, 16);
    struct bfs_rw_stats st = {0};
    struct putter put;
    if ((rc = putter_start(&put, d, j.id)) < 0) {
        bfs_err_set(err, rc, "start the put thread");
        goto out;
    }
    j.put = &put;
    rc = bfs_rewrite(&rw, &st, err);
    if (rc == 0)
        rc = putter_drain(&put, err); /* the last archive's put */
    putter_stop(&put);
    j.put = NULL;
    if (rc < 0) {
        if (rc == -ESTALE)
            bfs_err_set(err, rc, "the partition changed during the compaction");
        goto out;
    }
    if ((rc = fault(d, BFS_COMPACT_AFTER_BUILD, j.id)) < 0) {
        bfs_err_set(err, rc, "stopped by the fault hook at after-build");
        goto out;
    }
    snprintf(mpath, sizeof mpath, "%s/%s.manifest", d->work_dir, j.id);
    uint8_t msha[32];
    uint64_t msize = 0;
    if ((rc = write_manifest(&j, &p, versions, n_versions, mpath, msha, &msize)) < 0)
        goto out;
    const struct bfs_put_src msrc = {.path = mpath, .sha256 = msha, .cond = BFS_PUT_CREATE};
    if ((rc = lease_renew(d, &j.lease, err)) < 0 ||
        (rc = bfs_store_put_src(d->store, mkey, &msrc, err)) < 0)
        goto out;
    if ((rc = fault(d, BFS_COMPACT_AFTER_MANIFEST, j.id)) < 0) {
        bfs_err_set(err, rc, "stopped by the fault hook at after-manifest");
        goto out;
    }
    struct bfs_ledger_roll lr = {
        .roll_id = j.id,
        .manifest_key = mkey,
        .manifest_path = mpath,
        .size = msize,
        .after_log = d->fault ? after_log : NULL,
        .after_log_arg = &j,
        .compact = 1,
    };
    memcpy(lr.sha256, msha, 32);
    if ((rc = bfs_ledger_commit(d->ledger, &lr, err)) < 0)
        goto out;
    int state = bfs_catalog_compaction_state(d->cat, j.id);
    if (state == 2) {
        rc = bfs_err_set(err, -ECANCELED,
                         "compaction of %s/%s: another compaction of the partition came first "
                         "(this one is void; its objects are deleted)",
                         table, period);
    } else if (state != 1) {
        rc = bfs_err_set(err, state < 0 ? state : -EIO,
                         "compaction %s: committed but not in the catalog", j.id);
        goto out;
    }
    if (rc == 0) {
        atomic_fetch_add(&d->stats->compactions, 1);
        if ((rc = fault(d, BFS_COMPACT_AFTER_COMMIT, j.id)) < 0) {
            bfs_err_set(err, rc, "stopped by the fault hook at after-commit");
            goto out;
        }
    }
    bfs_catalog_compaction_end(d->cat, j.id);
    recorded = 0;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc == 0)
        bfs_info("compaction %s of %s/%s: %zu archives -> %zu (%" PRIu64 " datasets, %" PRIu64
                 " bytes read in %" PRIu64 " GETs, %" PRIu64 " written, %" PRIu64
                 " segments converted) in %.2f s",
                 j.id, table, period, j.n_src, j.n_arch, st.datasets, st.bytes_read, st.gets,
                 st.bytes_written, st.converted,
                 (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
out:
    if (mpath[0])
        unlink(mpath);
    crashed = err->msg[0] && strstr(err->msg, "stopped by the fault hook") != NULL;
    if (recorded && rc < 0 && !crashed)
        abandon(d, j.id, table, period); /* not committed: clean up (else recovery does) */
    lease_release(d, &j.lease);
    free(versions);
    bfs_partition_free(&p);
    job_free(&j);
    if (rc == 0 || rc == -ECANCELED)
        bfs_compact_gc(d);
    return rc;
}

/* ---- garbage ---- */

int bfs_compact_report_erased(void *errors, const struct bfs_erasure *e)
{
    char what[3 * BFS_NAME_MAX + 64], note[128];
    if (e->table)
        snprintf(what, sizeof what, "erase %s/%s/%s", e->table, e->period, e->dataset);
    else
        snprintf(what, sizeof what, ".battlefs/erase %s", e->dataset);
    snprintf(note, sizeof note,
             "erasure at log position %lld physically complete: no byte left in the store, "
             "the catalog or the cache",
             (long long)e->seq);
    bfs_info("%s: %s", what, note);
    if (errors && bfs_errors_add(errors, what, note) < 0)
        bfs_error("cannot record the erasure: out of memory");
    return 0;
}

struct gc_ctx {
    const struct bfs_compact_deps *d;
    char (*keys)[BFS_STORE_KEY_MAX + 1];
    size_t n, cap;
};

static int gc_collect(void *ctx, const char *key, int urgent)
{
    struct gc_ctx *g = ctx;
    (void)urgent;
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 16;
        void *p = realloc(g->keys, cap * sizeof *g->keys);
        if (!p)
            return -ENOMEM;
        g->keys = p;
        g->cap = cap;
    }
    snprintf(g->keys[g->n++], sizeof g->keys[0], "%s", key);
    return 0;
}

int bfs_compact_gc(const struct bfs_compact_deps *d)
{
    struct gc_ctx g = {.d = d};
    int64_t now = (int64_t)time(NULL);
    int rc = bfs_catalog_gc_due(d->cat, now, (int64_t)d->gc_grace, gc_collect, &g);
    int first = rc;
    for (size_t i = 0; rc == 0 && i < g.n; i++) {
        struct bfs_err err = {0};
        int e = bfs_store_del(d->store, g.keys[i], &err);
        if (e < 0 && e != -ENOENT) {
            bfs_warn("delete %s from the store: %s (tried again later)", g.keys[i],
                     err.msg[0] ? err.msg : strerror(-e));
            if (first == 0)
                first = e;
            continue;
        }
        if (e == 0)
            atomic_fetch_add(&d->stats->store_deletes, 1);
        if (d->cache)
            bfs_cache_drop(d->cache, g.keys[i]);
        bfs_catalog_gc_done(d->cat, g.keys[i]);
        bfs_debug("deleted %s from the store", g.keys[i]);
    }
    free(g.keys);
    uint64_t pending = 0, total = 0;
    if (bfs_catalog_erase_counts(d->cat, &pending, &total) == 0 && pending > 0) {
        /* The WAL truncated first: an erasure settles only when nothing
         * holds its bytes (no archive, no hot row, no blob waiting for its
         * purge), so every page that held them was zeroed (secure_delete)
         * before this truncation and no later frame can hold them. */
        int w = bfs_catalog_wipe(d->cat);
        if (w < 0 && w != -EBUSY)
            bfs_warn("catalog: truncate the WAL: %s", strerror(-w));
        int left =
            w < 0 ? (int)pending
                  : bfs_catalog_erasures_settle(d->cat, now, bfs_compact_report_erased, d->errors);
        if (left >= 0) {
            atomic_store(&d->stats->erasures_pending, (uint64_t)left);
        }
    } else {
        atomic_store(&d->stats->erasures_pending, pending);
    }
    return first;
}

/* ---- recovery ---- */

struct rec_ctx {
    const struct bfs_compact_deps *d;
    int rc;
};

static int recover_one(void *ctx, const char *id, const char *table, const char *period,
                       int64_t upto)
{
    struct rec_ctx *r = ctx;
    (void)upto;
    int rc = abandon(r->d, id, table, period);
    if (rc < 0 && r->rc == 0)
        r->rc = rc;
    return 0;
}

static int any_file(const char *name)
{
    return name[0] != '.';
}

int bfs_compact_recover(const struct bfs_compact_deps *d)
{
    /* Nothing runs yet: what is in the compactor's work directory is a
     * crashed compaction's (never reused). */
    int e = bfs_remove_files(d->work_dir, any_file);
    if (e < 0)
        bfs_warn("cannot clean %s: %s", d->work_dir, strerror(-e));
    struct rec_ctx r = {d, 0};
    int rc = bfs_catalog_compactions(d->cat, recover_one, &r);
    return rc < 0 ? rc : r.rc;
}

/* ---- the thread ---- */

struct bfs_compactor {
    struct bfs_compact_deps d;
    atomic_int stopping;     /* d.stop points here: a rewrite in progress gives up */
    pthread_mutex_t work_mu; /* one compaction or gc at a time */
    pthread_mutex_t mu;      /* kick, stop */
    pthread_cond_t cv;
    int stop, kicked;
    pthread_t thread;
};

struct due {
    const struct bfs_compact_deps *d;
    int64_t now;
    char (*tp)[2][BFS_NAME_MAX + 1];
    size_t n, cap;
};

static int due_one(void *ctx, const struct bfs_compact_candidate *c)
{
    struct due *x = ctx;
    const struct bfs_compact_deps *d = x->d;
    int erase_due = c->erased_at > 0 && c->erased_at + (int64_t)(d->erase_within / 2) <= x->now;
    int age_due = ((c->rolled >= 1 && c->archives >= 2) || c->dirty > 0) &&
                  c->newest + (int64_t)d->compact_after <= x->now;
    if (!erase_due && !age_due)
        return 0;
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 8;
        void *p = realloc(x->tp, cap * sizeof *x->tp);
        if (!p)
            return -ENOMEM;
        x->tp = p;
        x->cap = cap;
    }
    snprintf(x->tp[x->n][0], BFS_NAME_MAX + 1, "%s", c->table);
    snprintf(x->tp[x->n][1], BFS_NAME_MAX + 1, "%s", c->period);
    x->n++;
    return 0;
}

static void record_failure(const struct bfs_compact_deps *d, const char *table, const char *period,
                           int rc, const struct bfs_err *err)
{
    char what[2 * BFS_NAME_MAX + 32];
    snprintf(what, sizeof what, ".battlefs/compact %s/%s", table, period);
    const char *why = err->msg[0] ? err->msg : strerror(-rc);
    bfs_error("compaction of %s/%s failed: %s", table, period, why);
    if (d->errors)
        bfs_errors_add(d->errors, what, why);
}

static void pass(struct bfs_compactor *c)
{
    struct due x = {.d = &c->d, .now = (int64_t)time(NULL)};
    pthread_mutex_lock(&c->work_mu);
    int rc = bfs_catalog_compact_candidates(c->d.cat, due_one, &x);
    for (size_t i = 0; rc == 0 && i < x.n; i++) {
        struct bfs_err err = {0};
        int e = bfs_compact_partition(&c->d, x.tp[i][0], x.tp[i][1], &err);
        if (e < 0 && e != -EBUSY && e != -ECANCELED)
            record_failure(&c->d, x.tp[i][0], x.tp[i][1], e, &err);
        else if (e < 0)
            bfs_info("compaction of %s/%s: %s", x.tp[i][0], x.tp[i][1], err.msg);
        pthread_mutex_lock(&c->mu);
        int stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
    }
    bfs_compact_gc(&c->d);
    pthread_mutex_unlock(&c->work_mu);
    free(x.tp);
}

static uint64_t tick_of(const struct bfs_compact_deps *d)
{
    uint64_t t = TICK_MAX;
    uint64_t v[3] = {d->compact_after / 4, d->gc_grace / 4, d->erase_within / 4};
    for (int i = 0; i < 3; i++)
        if (v[i] < t)
            t = v[i];
    return t < 1 ? 1 : t;
}

static void *compactor_main(void *arg)
{
    struct bfs_compactor *c = arg;
    uint64_t tick = tick_of(&c->d);
    for (;;) {
        pthread_mutex_lock(&c->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)tick;
        while (!c->stop && !c->kicked)
            if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0)
                break;
        int stop = c->stop;
        c->kicked = 0;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        pass(c);
    }
    return NULL;
}

int bfs_compactor_start(const struct bfs_compact_deps *d, struct bfs_compactor **out)
{
    struct bfs_compactor *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->d = *d;
    c->d.stop = &c->stopping;
    pthread_mutex_init(&c->work_mu, NULL);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    int rc = pthread_create(&c->thread, NULL, compactor_main, c);
    if (rc != 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        pthread_mutex_destroy(&c->work_mu);
        free(c);
        return -rc;
    }
    *out = c;
    return 0;
}

void bfs_compactor_kick(struct bfs_compactor *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->kicked = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int bfs_compactor_compact_now(struct bfs_compactor *c, const char *table, const char *period,
                              struct bfs_err *err)
{
    pthread_mutex_lock(&c->work_mu);
    int rc = bfs_compact_partition(&c->d, table, period, err);
    pthread_mutex_unlock(&c->work_mu);
    if (rc < 0)
        record_failure(&c->d, table, period, rc, err);
    return rc;
}

void bfs_compactor_stop(struct bfs_compactor *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    atomic_store(&c->stopping, 1);
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->work_mu);
    free(c);
}
