/* roller.c - the background roll of the hot buffer into store archives.
 *
 * One roll (bfs_roll_once) follows the brief's protocol:
 *
 *  1. Claim. bfs_catalog_roll_claim marks every unclaimed buffer row with a new
 *     roll id in one transaction. While a claimed roll is unfinished
 *     (bfs_catalog_roll_pending) nothing new is claimed: the next attempt
 *     finishes that roll first.
 *  2. Build. bfs_catalog_roll_rows streams the claimed rows ordered by (table,
 *     period, dataset, id). Each (table, period) group goes into archives in
 *     deps->work_dir: the partition's layout header, then the rows' stored blocks,
 *     copied through a ring of HASH_RING chunks of ROLL_CHUNK bytes (memory
 *     does not grow with the buffer). A group is split into a new archive when
 *     the next row would make the archive exceed archive_max_bytes (a row is
 *     never split; an archive holds at least one row). Every dataset's rows
 *     are contiguous in an archive; one index entry per dataset per archive
 *     records start_byte, length and the summed record count.
 *  3. Upload. Each archive is put under "<table>/<period>/<roll-id>-<n>.avro",
 *     n numbering the archives of the roll within the (table, period) from 0.
 *     Keys and bytes are a pure function of the claimed rows, the partition
 *     header and archive_max_bytes, so a rebuild of the same roll puts the same
 *     objects again (harmless). A failed put fails the roll; the claim stays.
 *     (Retries with backoff inside one put are the store's business.)
 *     The puts overlap the build: an upload thread puts each archive as soon
 *     as the build has closed it and the hash thread has its digest (in
 *     order, one at a time) while the build writes the next one; the commit
 *     waits for the last put. A failed put stops the build at the next
 *     archive; a failed build lets the put in progress finish and puts
 *     nothing more. Objects put before a roll fails are uncommitted, so never
 *     read, and a rebuild puts them again.
 *  4. Commit. bfs_catalog_roll_commit inserts archived_files and block_indexes
 *     and deletes the claimed buffer rows in one transaction.
 *  5. Recovery. bfs_roller_recover finishes a pending roll at mount (same rows,
 *     same bytes, same keys), before the roll thread starts.
 *
 * Local archive files are named "<roll-id>-<i>.avro" (i counting all archives
 * of the roll). The roller does not fsync them: they are only the source of the
 * put, the store makes what it keeps durable, and after a crash they are
 * rebuilt from the catalog, never reused (stale ones are removed when a roll
 * starts). Each one is removed as soon as its put succeeded, so the work
 * directory holds at most one roll's archives. If the mount is restarted with
 * another archive_max_bytes while a roll is pending, the rebuilt roll splits
 * differently: the objects put before the crash under other keys are
 * unreferenced (never read), not duplicated data.
 *
 * The put may take the file itself (may_link: file:// hard-links it into the
 * store when both are on one file system and fsyncs it there, so no byte is
 * copied twice). So an archive is never written again once put, and a new one
 * is always a new file (O_EXCL, never O_TRUNC): a stale name that could not be
 * removed fails the roll instead of truncating what may be a store object.
 * Each archive's SHA-256 (for the manifest) is computed by a hash thread
 * (hasher_main) fed by the build: the copy buffer is a ring of HASH_RING
 * chunks of ROLL_CHUNK bytes; each filled chunk is handed to the hash thread
 * and written to the file, and the build goes on filling the next free chunk
 * while the other core hashes, so nothing is read back and the hash runs
 * concurrently with the copy (hashing in the build thread slowed a 1 GiB roll
 * by a third; hashing in the put thread, reading each closed archive back,
 * left the commit waiting for it: docs/bench.md). Once an archive is written
 * and closed, the build hands the hash thread an empty "last" chunk; the hash
 * thread then stores the digest in the archive's entry and publishes the
 * archive to the put thread (n_closed), so a put never sees an archive without
 * its digest. When the store wants it (put_wants_sha256: s3://), the digest
 * goes to the put, which then does not read the file to hash it.
 *
 * Locking of a roll's three threads (build, hash, put): h_lock guards the
 * ring (h_ring, h_submitted, h_done, h_stop, h_closing, h_err): a chunk's
 * bytes belong to the build until it is submitted (h_submitted advanced under
 * h_lock) and to the hash thread, read-only, until it is done (h_done
 * advanced under h_lock); the build only reads a submitted chunk (its write to
 * the file) and refills it only once h_done covers it. up_lock guards the put
 * queue, the address of arch and the digests of the archives (written by the
 * hash thread under up_lock, read by the put thread under up_lock, by the
 * manifest after both threads are joined). The two locks are never held
 * together (each is a leaf). The hash thread is started after the put thread
 * and ended before it (it signals up_cond).
 *
 * The fault hook (struct bfs_roll_deps: fault, fault_arg) is called at each
 * step of the protocol (enum bfs_roll_step, roller.h):
 *   after-claim    right after the claim transaction committed
 *   mid-build      after the first row of the first archive is written (flushed
 *                  to the file: a partial archive)
 *   after-build    when every archive is built (with deps->hold_puts, before
 *                  any put: the puts wait for the end of the build)
 *   mid-upload     in the put thread right after the first archive was put and
 *                  removed (the build may be writing later ones)
 *   after-upload   when every archive has been put, before the commit
 *   before-commit  the same point, right after
 *   after-commit   right after the commit transaction
 *   put-fail       before each put (an error is that put's failure)
 * An error from the hook at any step but put-fail stops the roll there as a
 * crash would: nothing is undone (the claim, the archive files in the work
 * directory, the objects put), so the unit tests (tests/unit/test_roller.c)
 * run the recovery after it as after a crash. main.c's hook, in builds with
 * -Dfault_injection=true, does what -o fault=STEP asks: _exit(99) at that
 * step, or EIO from every put for put-fail (tests/integration/test_roll_faults.py).
 *
 * The roll thread (bfs_roller_start) rolls at every multiple of roll_interval
 * seconds since the Unix epoch (UTC), when the buffer holds roll_bytes (checked
 * at most every ROLL_BYTES_CHECK_MS after bfs_roller_notify, in the thread, so
 * an upload never waits for a query), on demand (bfs_roller_roll_now), and
 * after a failed roll with exponential backoff (1 s doubling up to
 * ROLL_RETRY_MAX_S). Rolls are serialised: only this thread rolls after start.
 * When idle after a committed roll (and once at start, for what a crash left),
 * the thread deletes the rolled blobs the commit left (bfs_catalog_purge), a
 * few rows per transaction so that uploads and readers interleave; a roll
 * request goes first.
 */
#include "battlefs/roller.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/catalog.h"
#include "battlefs/err.h"
#include "battlefs/errors.h"
#include "battlefs/evolve.h"
#include "battlefs/layout.h"
#include "battlefs/log.h"
#include "battlefs/fsutil.h"
#include "battlefs/ledger.h"
#include "battlefs/manifest.h"
#include "battlefs/names.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "battlefs/progress.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"

#define ROLL_CHUNK          (1024u * 1024u) /* one chunk of a roll's copy buffer */
#define HASH_RING           4               /* chunks in the ring between build and hash */
#define ROLL_BYTES_CHECK_MS 200             /* roll_bytes is checked at most this often */
#define PURGE_ROWS          16              /* rolled blobs deleted per purge transaction */
#define ROLL_RETRY_MAX_S    300             /* longest wait before retrying a failed roll */
#define STORE_TEMP_AGE_S    3600            /* store temporaries older than this are a dead put's */

/* ---- the fault hook ---- */

static const char *const step_names[BFS_ROLL_STEPS] = {
    "after-claim",   "mid-build",    "after-build", "mid-upload",     "after-upload",
    "before-commit", "after-commit", "put-fail",    "after-manifest", "after-log",
};

const char *bfs_roll_step_name(enum bfs_roll_step step)
{
    return (unsigned)step < BFS_ROLL_STEPS ? step_names[step] : NULL;
}

int bfs_roll_step_parse(const char *name, enum bfs_roll_step *out)
{
    int i = bfs_name_index(step_names, BFS_ROLL_STEPS, name);
    if (i < 0)
        return -EINVAL;
    *out = (enum bfs_roll_step)i;
    return 0;
}

/* Call the deps' fault hook at step: 0 to go on, else its error. */
static int fault_at(const struct bfs_roll_deps *d, enum bfs_roll_step step, const char *roll_id)
{
    if (!d->fault)
        return 0;
    int rc = d->fault(d->fault_arg, step, roll_id);
    return rc < 0 ? rc : 0;
}

/* ---- building archives ---- */

struct archive {
    char *key;
    char *path;         /* the local file; NULL once removed */
    uint8_t sha256[32]; /* of the whole file */
    char schema_fp[17];
    char (*versions)[17]; /* the versions its schema merges (n_versions 0: it is one) */
    size_t n_versions;
    enum bfs_codec codec;
    char table[BFS_NAME_MAX + 1];
    char period[BFS_NAME_MAX + 1];
    uint64_t size;
    uint64_t header_length;
    long spool_off; /* its index rows in the index spool */
    size_t n_index;
};

struct index_ent {
    char dataset[BFS_NAME_MAX + 1];
    uint64_t start;
    uint64_t length;
    uint64_t records;
    int64_t uploaded_at; /* the newest of its rows' upload times */
};

struct build {
    const struct bfs_roll_deps *d;
    const char *roll_id;
    struct bfs_err err; /* the first failure and its reason (without the roll id) */
    uint8_t *buf;       /* the ring chunk being filled (h_ring[h_submitted % HASH_RING]):
                         * data not yet written to fd */
    size_t buf_len;
    int fd;          /* the open archive (arch[n_arch - 1]) or -1 */
    int pass_sha256; /* hand each archive's SHA-256 to the put (put_wants_sha256) */
    struct archive *arch;
    size_t n_arch, cap_arch;
    struct index_ent *idx;
    struct index_ent cur; /* the open archive's current dataset (when ds_open) */
    size_t n_idx;         /* index rows so far, all archives */
    FILE *ispool;         /* every finished index row, in order (memory stays flat) */
    char *ispool_path;
    /* The current group's partition, its layout replaced by the archive
     * schema's when the group's rows are not all in the merged schema (then
     * part.schema_id, schema_json, sync, header and fingerprint are the
     * archive schema's: the merge of the versions of the group's rows). */
    struct bfs_partition part;
    int have_part;
    struct bfs_versions rv; /* the partition's versions at the claim (bfs_catalog_roll_versions) */
    char (*versions)[17];   /* their fingerprints when the archives' schema is their merge */
    size_t n_versions;
    struct bfs_schema_text wtext;            /* the last row schema read that is not in rv */
    struct bfs_buf row_in, row_out, scratch; /* a row being converted */
    unsigned group_n;                        /* archives of the current group so far */
    uint64_t arch_rows;                      /* rows in the open archive */
    int ds_open;                             /* cur is the open archive's current dataset */
    uint64_t rows, bytes, records;           /* bytes: of the claimed rows */
    uint64_t ibytes;                    /* written for them (index lengths; more when converted) */
    struct bfs_progress prog;           /* of the build: bytes of the claimed rows */
    double t_build, t_upload, t_commit; /* seconds per phase */
    /* The upload thread (uploader_main) and what it shares with the build.
     * up_lock guards these fields and the address of arch (the build grows it
     * with the lock held; the thread copies arch[i] and clears arch[i].path
     * only with the lock held, for i < n_closed, which the build no longer
     * touches). */
    pthread_t up_thread;
    int up_started;
    pthread_mutex_t up_lock;
    pthread_cond_t up_cond;
    size_t n_closed;       /* arch[0..n_closed) are complete: the thread may put them */
    size_t n_put;          /* arch[0..n_put) are put and removed locally */
    int hold_puts;         /* publish no archive until the build is done (deps->hold_puts) */
    int crashed;           /* the fault hook stopped the roll: leave the files as a crash would */
    int up_closing;        /* the build is done: put what is left, then end */
    int up_stop;           /* the build failed: put nothing more */
    struct bfs_err up_err; /* the first put failure and what failed (then the thread has
                            * ended), else code 0 */
    double t_puts;         /* seconds spent in puts */
    /* The hash thread (hasher_main) and its ring of chunks (see the header
     * comment for the locking). */
    pthread_t h_thread;
    int h_started;
    pthread_mutex_t h_lock;
    pthread_cond_t h_cond; /* both ways: a chunk submitted, a chunk hashed, the end */
    struct hchunk {
        uint8_t *buf; /* ROLL_CHUNK bytes */
        size_t len;   /* bytes to hash */
        size_t arch;  /* the archive they belong to */
        int last;     /* the archive is written and closed: finish its digest */
    } h_ring[HASH_RING];
    uint64_t h_submitted;       /* chunks handed to the hash thread so far */
    uint64_t h_done;            /* chunks hashed (their buffers are free again) */
    int h_stop;                 /* the build failed: hash nothing more */
    int h_closing;              /* the build is done: hash what is left, then end */
    struct bfs_err h_err;       /* the hash thread's failure (then it has ended), else code 0 */
    double t_hash_wait;         /* seconds the build waited for a free chunk */
    struct bfs_hot_reader *hot; /* the claimed rows' blobs (released at each archive) */
    /* The manifest (put_manifest). */
    char *manifest_path;
    char manifest_key[BFS_STORE_KEY_MAX];
    uint64_t manifest_size;
    uint8_t manifest_sha[32];
};

static int fail(struct build *b, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first failure: rc and "what: strerror(rc)"; returns rc. */
static int fail(struct build *b, int rc, const char *fmt, ...)
{
    assert(rc < 0);
    if (b->err.code)
        return rc;
    va_list ap;
    va_start(ap, fmt);
    bfs_err_vset(&b->err, rc, fmt, ap);
    va_end(ap);
    return bfs_err_set(&b->err, rc, "%s: %s", b->err.msg, strerror(-rc));
}

/* The fault hook stopped the roll at step with rc: record it, and leave the
 * roll's files and objects as a crash there would. Returns rc. */
static int crash(struct build *b, int rc, enum bfs_roll_step step)
{
    if (b->up_started) { /* the put thread reads it (remove_local) */
        pthread_mutex_lock(&b->up_lock);
        b->crashed = 1;
        pthread_mutex_unlock(&b->up_lock);
    } else {
        b->crashed = 1;
    }
    return fail(b, rc, "stopped by the fault hook at %s", bfs_roll_step_name(step));
}

static struct archive *cur_archive(struct build *b)
{
    assert(b->fd >= 0 && b->n_arch > 0);
    return &b->arch[b->n_arch - 1];
}

static double mono_now(void);

/* Hand the chunk being filled (b->buf, buf_len bytes of the open archive, or
 * of the archive just closed with last) to the hash thread, without waiting. */
static int hash_submit(struct build *b, int last)
{
    assert(b->h_started && b->n_arch > 0);
    pthread_mutex_lock(&b->h_lock);
    int rc = b->h_err.code;
    if (rc == 0) {
        struct hchunk *c = &b->h_ring[b->h_submitted % HASH_RING];
        assert(c->buf == b->buf && b->h_submitted - b->h_done < HASH_RING);
        c->len = b->buf_len;
        c->arch = b->n_arch - 1;
        c->last = last;
        b->h_submitted++;
        pthread_cond_broadcast(&b->h_cond);
    }
    pthread_mutex_unlock(&b->h_lock);
    return rc < 0 ? fail(b, rc, "%s", b->h_err.msg) : 0; /* the thread has ended */
}

/* Make the next chunk of the ring the one being filled, once the hash thread
 * is done with it. */
static int hash_next(struct build *b)
{
    pthread_mutex_lock(&b->h_lock);
    if (b->h_submitted - b->h_done >= HASH_RING && !b->h_err.code) {
        double t = mono_now();
        while (b->h_submitted - b->h_done >= HASH_RING && !b->h_err.code)
            pthread_cond_wait(&b->h_cond, &b->h_lock);
        b->t_hash_wait += mono_now() - t;
    }
    int rc = b->h_err.code;
    b->buf = b->h_ring[b->h_submitted % HASH_RING].buf;
    pthread_mutex_unlock(&b->h_lock);
    b->buf_len = 0;
    return rc < 0 ? fail(b, rc, "%s", b->h_err.msg) : 0;
}

/* Write the filled chunk to the open archive's file and hand it to the hash
 * thread (which reads it while the write does); go on with the next chunk. */
static int flush_buf(struct build *b)
{
    if (b->buf_len == 0)
        return 0;
    int rc = hash_submit(b, 0);
    if (rc < 0)
        return rc;
    if ((rc = bfs_write_all(b->fd, b->buf, b->buf_len)) < 0)
        return fail(b, rc, "write %s", cur_archive(b)->path);
    return hash_next(b);
}

/* Append bytes to the open archive (through the chunks). */
static int out_write(struct build *b, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n > 0) {
        int rc;
        if (b->buf_len == ROLL_CHUNK && (rc = flush_buf(b)) < 0)
            return rc;
        size_t k = ROLL_CHUNK - b->buf_len;
        if (k > n)
            k = n;
        memcpy(b->buf + b->buf_len, q, k);
        b->buf_len += k;
        q += k;
        n -= k;
    }
    return 0;
}

static int open_archive(struct build *b, const char *table, const char *period)
{
    assert(b->fd < 0 && b->have_part);
    /* The upload thread may be copying an earlier entry: move the array only
     * under its lock. A failed put ends the build here, at an archive boundary. */
    assert(b->up_started);
    pthread_mutex_lock(&b->up_lock);
    int up_rc = b->up_err.code;
    int grow_rc =
        up_rc ? 0 : bfs_array_reserve(&b->arch, &b->cap_arch, b->n_arch + 1, sizeof *b->arch);
    pthread_mutex_unlock(&b->up_lock);
    if (up_rc < 0) /* the upload thread has ended: up_err is ours */
        return fail(b, up_rc, "%s", b->up_err.msg);
    if (grow_rc < 0)
        return fail(b, grow_rc, "archive list");
    struct archive *a = &b->arch[b->n_arch];
    memset(a, 0, sizeof *a);
    snprintf(a->table, sizeof a->table, "%s", table);
    snprintf(a->period, sizeof a->period, "%s", period);
    memcpy(a->schema_fp, b->part.fingerprint, sizeof a->schema_fp);
    a->codec = b->part.codec;
    if (b->n_versions > 0) {
        a->versions = malloc(b->n_versions * sizeof *a->versions);
        if (!a->versions)
            return fail(b, -ENOMEM, "archive versions");
        memcpy(a->versions, b->versions, b->n_versions * sizeof *a->versions);
        a->n_versions = b->n_versions;
    }
    if (asprintf(&a->key, "%s/%s/%s-%u.avro", table, period, b->roll_id, b->group_n) < 0) {
        a->key = NULL;
        return fail(b, -ENOMEM, "archive key");
    }
    if (asprintf(&a->path, "%s/%s-%zu.avro", b->d->work_dir, b->roll_id, b->n_arch) < 0) {
        free(a->key);
        a->key = NULL;
        a->path = NULL;
        return fail(b, -ENOMEM, "archive path");
    }
    a->spool_off = ftell(b->ispool);
    if (a->spool_off < 0)
        return fail(b, -errno, "index spool %s", b->ispool_path);
    b->n_arch++;
    b->group_n++;
    /* Never O_TRUNC: a stale file of that name may be linked into the store. */
    b->fd = open(a->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (b->fd < 0) {
        int rc = -errno;
        fail(b, rc, "create %s", a->path);
        free(a->path); /* nothing to remove (or not ours) */
        a->path = NULL;
        return rc;
    }
    b->arch_rows = 0;
    b->ds_open = 0;
    a->header_length = b->part.header_len;
    a->size = b->part.header_len;
    return out_write(b, b->part.header, b->part.header_len);
}

/* Append the current dataset's index row to the spool. */
static int spool_index(struct build *b)
{
    if (!b->ds_open)
        return 0;
    const struct index_ent *e = &b->cur;
    uint16_t n = (uint16_t)strlen(e->dataset);
    uint64_t v[4] = {e->start, e->length, e->records, (uint64_t)e->uploaded_at};
    if (fwrite(&n, sizeof n, 1, b->ispool) != 1 || fwrite(e->dataset, 1, n, b->ispool) != n ||
        fwrite(v, sizeof v, 1, b->ispool) != 1)
        return fail(b, -EIO, "write the index spool %s", b->ispool_path);
    b->ds_open = 0;
    cur_archive(b)->n_index++;
    b->n_idx++;
    return 0;
}

/* Read the next index row of the spool into e. */
static int unspool_index(struct build *b, struct index_ent *e)
{
    uint16_t n;
    uint64_t v[4];
    if (fread(&n, sizeof n, 1, b->ispool) != 1 || n == 0 || n > BFS_NAME_MAX ||
        fread(e->dataset, 1, n, b->ispool) != n || fread(v, sizeof v, 1, b->ispool) != 1)
        return fail(b, -EIO, "read the index spool %s", b->ispool_path);
    e->dataset[n] = '\0';
    e->start = v[0];
    e->length = v[1];
    e->records = v[2];
    e->uploaded_at = (int64_t)v[3];
    return 0;
}

static int close_archive(struct build *b)
{
    if (b->fd < 0)
        return 0;
    struct archive *a = cur_archive(b);
    /* not one read transaction for the whole build: the WAL is reset between */
    bfs_catalog_hot_release(b->hot);
    int rc = spool_index(b);
    if (rc < 0)
        return rc;
    rc = flush_buf(b);
    if (close(b->fd) < 0 && rc == 0)
        rc = fail(b, -errno, "close %s", a->path);
    b->fd = -1;
    b->ds_open = 0;
    if (rc < 0)
        return rc;
    assert(b->arch_rows >= 1 && a->n_index >= 1);
    /* Complete on disk: the hash thread finishes its digest, then publishes it
     * to the put thread. */
    assert(b->buf_len == 0);
    if ((rc = hash_submit(b, 1)) < 0)
        return rc;
    return hash_next(b);
}

static int cmp_fp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Give the group's archives the merged schema of the partition's versions
 * at the claim (b->rv, when its rows are not all in the partition's merged
 * schema): a function of the claim alone, so a roll rebuilt after a crash
 * writes the same bytes, and the partition's own merged schema when no
 * version came since, so the archive's segments are served as they are.
 * Recorded as an alias of the partition; the manifest names the versions. */
static int archive_layout(struct build *b, const char *table, const char *period)
{
    struct bfs_partition *p = &b->part;
    struct bfs_err err = {0};
    int64_t rid = b->rv.v[0].id;
    char *json = NULL;
    size_t len = 0;
    char *canon = NULL;
    size_t clen = 0;
    const char **texts = calloc(b->rv.n, sizeof *texts);
    size_t *lens = calloc(b->rv.n, sizeof *lens);
    free(b->versions);
    b->n_versions = 0;
    b->versions = b->rv.n > 1 ? calloc(b->rv.n, sizeof *b->versions) : NULL;
    int rc = texts && lens && (b->rv.n == 1 || b->versions) ? 0 : -ENOMEM;
    if (b->rv.n > BFS_MANIFEST_VERSIONS_MAX)
        rc = bfs_err_set(&err, -E2BIG, "%zu schema versions", b->rv.n);
    for (size_t i = 0; rc == 0 && i < b->rv.n; i++) {
        texts[i] = b->rv.v[i].json;
        lens[i] = b->rv.v[i].len;
        if (b->rv.n > 1 &&
            (rc = bfs_layout_fingerprint(texts[i], lens[i], b->versions[b->n_versions++])) < 0)
            bfs_err_set(&err, -EIO, "schema %" PRId64 " does not parse", b->rv.v[i].id);
    }
    if (rc == 0 && b->n_versions > 1)
        qsort(b->versions, b->n_versions, sizeof *b->versions, cmp_fp);
    if (rc == 0)
        rc = bfs_schema_merge(texts, lens, b->rv.n, &json, &len, &err);
    if (rc == 0)
        rc = bfs_schema_canonical(json, len, &canon, &clen, &err);
    if (rc == 0 && b->rv.n > 1)
        rc = bfs_catalog_partition_add_alias(b->d->cat, table, period, json, len, canon, clen,
                                             bfs_schema_rabin(canon, clen), &rid, &err);
    free(texts);
    free(lens);
    struct bfs_buf hdr = {0};
    if (rc == 0 && (rc = bfs_schema_sync(canon, clen, p->sync)) == 0)
        rc = bfs_ocf_layout_header(json, len, p->codec, p->sync, &hdr);
    if (rc == 0) {
        free(p->schema_json);
        free(p->header);
        p->schema_json = json; /* taken */
        json = NULL;
        p->schema_len = len;
        p->header = hdr.data; /* taken */
        p->header_len = hdr.len;
        hdr = (struct bfs_buf){0};
        p->schema_id = rid;
        snprintf(p->fingerprint, sizeof p->fingerprint, "%016" PRIx64,
                 bfs_schema_rabin(canon, clen));
    }
    bfs_buf_free(&hdr);
    free(json);
    free(canon);
    if (rc < 0)
        return fail(b, rc, "archive schema of %s/%s: %s", table, period,
                    err.msg[0] ? err.msg : strerror(-rc));
    return 0;
}

static int start_group(struct build *b, const char *table, const char *period)
{
    if (b->have_part) {
        bfs_partition_free(&b->part);
        b->have_part = 0;
    }
    bfs_versions_free(&b->rv);
    free(b->versions);
    b->versions = NULL;
    b->n_versions = 0;
    memset(&b->part, 0, sizeof b->part);
    int rc = bfs_catalog_partition_get(b->d->cat, table, period, &b->part);
    if (rc < 0) {
        memset(&b->part, 0, sizeof b->part);
        return fail(b, rc == -ENOENT ? -EIO : rc, "partition %s/%s", table, period);
    }
    b->have_part = 1;
    if (!b->part.header || b->part.header_len == 0)
        return fail(b, -EIO, "partition %s/%s has no layout header", table, period);
    rc = bfs_catalog_roll_versions(b->d->cat, b->roll_id, table, period, &b->rv);
    if (rc < 0 || b->rv.n == 0)
        return fail(b, rc < 0 ? rc : -EIO, "schema versions of %s/%s at the claim", table, period);
    if ((b->rv.n > 1 || b->rv.v[0].id != b->part.schema_id) &&
        (rc = archive_layout(b, table, period)) < 0)
        return rc;
    b->group_n = 0;
    /* Its schema in the store before any manifest names it, and the
     * versions it merges (the manifest lists them). */
    struct bfs_err err;
    rc = bfs_ledger_put_schema(b->d->ledger, b->part.fingerprint, b->part.schema_json,
                               b->part.schema_len, &err);
    for (size_t i = 0; rc == 0 && b->n_versions > 0 && i < b->rv.n; i++) {
        char fp[17];
        rc = bfs_layout_fingerprint(b->rv.v[i].json, b->rv.v[i].len, fp);
        if (rc == 0)
            rc = bfs_ledger_put_schema(b->d->ledger, fp, b->rv.v[i].json, b->rv.v[i].len, &err);
    }
    if (rc < 0)
        return fail(b, rc, "%s", err.msg[0] ? err.msg : "put the schema");
    return 0;
}

static int convert_blocks(struct build *b, const struct bfs_roll_row *row,
                          const struct bfs_conv *conv, uint64_t *len);

/* Append row's blocks converted from its version into the archive schema;
 * *len gets the bytes written. */
static int convert_row(struct build *b, const struct bfs_roll_row *row, uint64_t *len)
{
    /* The row's schema: a version, or a merged schema it was converted to
     * at ingest (its text read once per run of rows). */
    const struct bfs_schema_text *w = NULL;
    for (size_t i = 0; i < b->rv.n && !w; i++)
        if (b->rv.v[i].id == row->schema_id)
            w = &b->rv.v[i];
    if (!w && b->wtext.id != row->schema_id) {
        free(b->wtext.json);
        b->wtext.json = NULL;
        b->wtext.id = 0;
        int rc = bfs_catalog_schema_json(b->d->cat, row->schema_id, &b->wtext.json, &b->wtext.len);
        if (rc < 0)
            return fail(b, rc == -ENOENT ? -EIO : rc,
                        "buffer row %" PRId64 ": schema %" PRId64 " is not here", row->id,
                        row->schema_id);
        b->wtext.id = row->schema_id;
    }
    if (!w)
        w = &b->wtext;
    struct bfs_conv *conv;
    struct bfs_err err = {0};
    int rc = bfs_conv_get(b->d->convs, w->json, w->len, b->part.schema_json, b->part.schema_len,
                          b->part.codec, b->part.sync, &conv, &err);
    if (rc < 0)
        return fail(b, rc, "conversion of buffer row %" PRId64 ": %s", row->id, err.msg);
    rc = convert_blocks(b, row, conv, len);
    bfs_conv_unref(conv);
    return rc;
}

/* convert_row's work, with its conversion. */
static int convert_blocks(struct build *b, const struct bfs_roll_row *row,
                          const struct bfs_conv *conv, uint64_t *len)
{
    struct bfs_err err = {0};
    int rc;
    bfs_buf_reset(&b->row_in);
    if (row->length > SIZE_MAX || (rc = bfs_buf_reserve(&b->row_in, (size_t)row->length)) < 0)
        return fail(b, -ENOMEM, "buffer row %" PRId64, row->id);
    rc = bfs_catalog_hot_read(b->hot, row->id, 0, b->row_in.data, (size_t)row->length);
    if (rc < 0)
        return fail(b, rc == -ENOENT ? -EIO : rc, "read buffer row %" PRId64, row->id);
    size_t off = 0;
    *len = 0;
    while (off < row->length) {
        size_t span;
        rc = bfs_ocf_block_span(b->row_in.data + off, (size_t)row->length - off, &span);
        if (rc == 0 && span > row->length - off)
            rc = -EINVAL;
        bfs_buf_reset(&b->row_out);
        if (rc == 0)
            rc = bfs_conv_block(conv, b->row_in.data + off, span, &b->row_out, &b->scratch, &err);
        if (rc < 0)
            return fail(b, rc == -ENOMEM ? rc : -EIO, "convert buffer row %" PRId64 ": %s", row->id,
                        err.msg[0] ? err.msg : "corrupt block");
        if ((rc = out_write(b, b->row_out.data, b->row_out.len)) < 0)
            return rc;
        *len += b->row_out.len;
        off += span;
    }
    return 0;
}

static int same_group(const struct build *b, const struct bfs_roll_row *row)
{
    if (b->n_arch == 0 || !b->have_part)
        return 0;
    const struct archive *a = &b->arch[b->n_arch - 1];
    return strcmp(a->table, row->table) == 0 && strcmp(a->period, row->period) == 0;
}

static int on_row(void *vb, const struct bfs_roll_row *row)
{
    struct build *b = vb;
    const struct bfs_roll_deps *d = b->d;
    int rc;

    if (!bfs_name_valid(row->table, strlen(row->table)) ||
        !bfs_name_valid(row->period, strlen(row->period)) ||
        !bfs_name_valid(row->dataset, strlen(row->dataset)))
        return fail(b, -EIO, "buffer row %" PRId64 " has a bad name", row->id);
    if (!same_group(b, row)) {
        if ((rc = close_archive(b)) < 0 || (rc = start_group(b, row->table, row->period)) < 0)
            return rc;
    } else if (b->fd >= 0 && b->arch_rows > 0 &&
               cur_archive(b)->size + row->length > d->archive_max_bytes) {
        if ((rc = close_archive(b)) < 0)
            return rc;
    }
    if (b->fd < 0 && (rc = open_archive(b, row->table, row->period)) < 0)
        return rc;
    struct archive *a = cur_archive(b);

    if (!b->ds_open || strcmp(b->cur.dataset, row->dataset) != 0) {
        if ((rc = spool_index(b)) < 0)
            return rc;
        struct index_ent *e = &b->cur;
        snprintf(e->dataset, sizeof e->dataset, "%s", row->dataset);
        e->start = a->size;
        e->length = 0;
        e->records = 0;
        e->uploaded_at = 0;
        b->ds_open = 1;
    }
    struct index_ent *e = &b->cur;

    uint64_t written = row->length;
    if (row->schema_id != b->part.schema_id) {
        if ((rc = convert_row(b, row, &written)) < 0)
            return rc;
    } else {
        /* Copy the row's bytes in bounded pieces straight into the buffer. */
        uint64_t off = 0;
        while (off < row->length) {
            if (b->buf_len == ROLL_CHUNK && (rc = flush_buf(b)) < 0)
                return rc;
            size_t n = ROLL_CHUNK - b->buf_len;
            if ((uint64_t)n > row->length - off)
                n = (size_t)(row->length - off);
            rc = bfs_catalog_hot_read(b->hot, row->id, off, b->buf + b->buf_len, n);
            if (rc < 0)
                return fail(b, rc == -ENOENT ? -EIO : rc, "read buffer row %" PRId64, row->id);
            b->buf_len += n;
            off += n;
        }
    }
    a->size += written;
    e->length += written;
    e->records += row->records;
    if (row->created_at > e->uploaded_at)
        e->uploaded_at = row->created_at;
    b->arch_rows++;
    b->rows++;
    b->bytes += row->length;
    b->ibytes += written;
    b->records += row->records;
    bfs_progress_report(&b->prog, b->bytes);

    if (b->n_arch == 1 && b->arch_rows == 1 && d->fault) {
        if ((rc = flush_buf(b)) < 0)
            return rc;
        if ((rc = fault_at(d, BFS_ROLL_MID_BUILD, b->roll_id)) < 0)
            return crash(b, rc, BFS_ROLL_MID_BUILD);
    }
    return 0;
}

static void remove_local(struct build *b, struct archive *a)
{
    if (!a->path)
        return;
    if (!b->crashed && unlink(a->path) < 0 && errno != ENOENT)
        bfs_warn("roll %s: cannot remove %s: %s", b->roll_id, a->path, strerror(errno));
    free(a->path);
    a->path = NULL;
}

/* ---- uploading: the puts overlap the build ---- */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Put one complete archive (a copy of its entry); on failure err says what
 * failed: "put <key>" and what the store said, if anything. */
static int put_archive(struct build *b, const struct archive *a, struct bfs_err *err)
{
    int rc = fault_at(b->d, BFS_ROLL_PUT, b->roll_id);
    if (rc < 0)
        return bfs_err_set(err, rc, "put %s (fault %s)", a->key, bfs_roll_step_name(BFS_ROLL_PUT));
    const struct bfs_put_src src = {
        .path = a->path,
        .sha256 = b->pass_sha256 ? a->sha256 : NULL,
        .may_link = 1,          /* never written again; removed right after the put */
        .cond = BFS_PUT_CREATE, /* never over another writer's object */
    };
    rc = bfs_store_put_src(b->d->store, a->key, &src, err);
    if (rc < 0)
        bfs_err_prefix(err, "put %s", a->key);
    return rc;
}

/* The upload thread: puts arch[n_put] as soon as the build has closed it, in
 * order, one at a time, and removes the local file; ends when the build is
 * done and everything is put, when the build failed (up_stop), or at the
 * first failed put (up_err). */
static void *uploader_main(void *arg)
{
    struct build *b = arg;
    struct bfs_err err;
    pthread_mutex_lock(&b->up_lock);
    for (;;) {
        while (!b->up_stop && b->n_put == b->n_closed && !b->up_closing)
            pthread_cond_wait(&b->up_cond, &b->up_lock);
        if (b->up_stop || b->n_put == b->n_closed)
            break;
        size_t i = b->n_put;
        struct archive a = b->arch[i]; /* the build may move the array meanwhile */
        pthread_mutex_unlock(&b->up_lock);
        double t = mono_now();
        int rc = put_archive(b, &a, &err);
        pthread_mutex_lock(&b->up_lock);
        b->t_puts += mono_now() - t;
        if (rc < 0) {
            b->up_err = err;
            break;
        }
        remove_local(b, &b->arch[i]);
        b->n_put++;
        if (i == 0 && b->d->fault) {
            pthread_mutex_unlock(&b->up_lock);
            rc = fault_at(b->d, BFS_ROLL_MID_UPLOAD, b->roll_id);
            pthread_mutex_lock(&b->up_lock);
            if (rc < 0) {
                bfs_err_set(&b->up_err, rc, "stopped by the fault hook at %s",
                            bfs_roll_step_name(BFS_ROLL_MID_UPLOAD));
                b->crashed = 1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&b->up_lock);
    return NULL;
}

static int uploader_start(struct build *b)
{
    int rc = pthread_mutex_init(&b->up_lock, NULL);
    if (rc)
        return fail(b, -rc, "upload thread lock");
    if ((rc = pthread_cond_init(&b->up_cond, NULL)) != 0) {
        pthread_mutex_destroy(&b->up_lock);
        return fail(b, -rc, "upload thread condition");
    }
    b->hold_puts = b->d->hold_puts;
    if ((rc = pthread_create(&b->up_thread, NULL, uploader_main, b)) != 0) {
        pthread_cond_destroy(&b->up_cond);
        pthread_mutex_destroy(&b->up_lock);
        return fail(b, -rc, "start the upload thread");
    }
    b->up_started = 1;
    return 0;
}

/* End the upload thread. build_done: every archive is built, so put the rest
 * and wait for them; else (the build failed) wait for the put in progress, if
 * any, and put nothing more. Returns the first put failure (up_err says
 * which) or 0. */
static int uploader_finish(struct build *b, int build_done)
{
    if (!b->up_started)
        return 0;
    pthread_mutex_lock(&b->up_lock);
    if (build_done) {
        b->n_closed = b->n_arch;
        b->up_closing = 1;
    } else {
        b->up_stop = 1;
    }
    pthread_cond_broadcast(&b->up_cond);
    pthread_mutex_unlock(&b->up_lock);
    int rc = pthread_join(b->up_thread, NULL);
    if (rc) {
        /* Only a bug can make this fail; the thread's state cannot be freed. */
        bfs_error("roll %s: cannot join the upload thread: %s", b->roll_id, strerror(rc));
        abort();
    }
    pthread_cond_destroy(&b->up_cond);
    pthread_mutex_destroy(&b->up_lock);
    b->up_started = 0;
    return b->up_err.code;
}

/* ---- hashing: the build's chunks, on the other core ---- */

/* The hash thread: hashes each submitted chunk in order into the digest of its
 * archive; at an archive's last chunk stores the digest in its entry and lets
 * the put thread put it. Ends when the build is done and every chunk is
 * hashed, when the build failed (h_stop), or at its first failure (h_err). */
static void *hasher_main(void *arg)
{
    struct build *b = arg;
    struct bfs_sha256 sha = {0};
    int started = 0; /* sha holds the open archive's digest so far */
    struct bfs_err err = {0};
    pthread_mutex_lock(&b->h_lock);
    for (;;) {
        while (!b->h_stop && b->h_done == b->h_submitted && !b->h_closing)
            pthread_cond_wait(&b->h_cond, &b->h_lock);
        if (b->h_stop || b->h_done == b->h_submitted)
            break;
        struct hchunk c = b->h_ring[b->h_done % HASH_RING];
        pthread_mutex_unlock(&b->h_lock);
        int rc = 0;
        if (!started) {
            rc = bfs_sha256_init(&sha);
            started = rc == 0;
        }
        if (rc == 0)
            bfs_sha256_update(&sha, c.buf, c.len);
        if (rc == 0 && c.last) {
            uint8_t digest[32];
            started = 0;
            if ((rc = bfs_sha256_final(&sha, digest)) == 0) {
                pthread_mutex_lock(&b->up_lock);
                memcpy(b->arch[c.arch].sha256, digest, sizeof digest);
                if (!b->hold_puts) {
                    b->n_closed = c.arch + 1; /* the put thread may put it now */
                    pthread_cond_signal(&b->up_cond);
                }
                pthread_mutex_unlock(&b->up_lock);
            }
        }
        pthread_mutex_lock(&b->h_lock);
        if (rc < 0) {
            bfs_err_set(&err, rc, "SHA-256 of archive %zu", c.arch);
            b->h_err = err;
            break;
        }
        b->h_done++;
        pthread_cond_broadcast(&b->h_cond); /* the build may wait for this chunk */
    }
    pthread_cond_broadcast(&b->h_cond); /* the end: the build may be waiting */
    pthread_mutex_unlock(&b->h_lock);
    if (started)
        bfs_sha256_discard(&sha);
    return NULL;
}

static int hasher_start(struct build *b)
{
    for (unsigned i = 0; i < HASH_RING; i++)
        if (!(b->h_ring[i].buf = malloc(ROLL_CHUNK)))
            return fail(b, -ENOMEM, "copy buffer");
    b->buf = b->h_ring[0].buf;
    b->buf_len = 0;
    int rc = pthread_mutex_init(&b->h_lock, NULL);
    if (rc)
        return fail(b, -rc, "hash thread lock");
    if ((rc = pthread_cond_init(&b->h_cond, NULL)) != 0) {
        pthread_mutex_destroy(&b->h_lock);
        return fail(b, -rc, "hash thread condition");
    }
    if ((rc = pthread_create(&b->h_thread, NULL, hasher_main, b)) != 0) {
        pthread_cond_destroy(&b->h_cond);
        pthread_mutex_destroy(&b->h_lock);
        return fail(b, -rc, "start the hash thread");
    }
    b->h_started = 1;
    return 0;
}

/* End the hash thread. build_done: every archive is built and closed, so hash
 * what is left (at most HASH_RING chunks) and wait for it; else stop at the
 * chunk in progress. Returns the hash thread's failure (h_err) or 0. Called
 * before uploader_finish: the hash thread uses up_lock. */
static int hasher_finish(struct build *b, int build_done)
{
    if (!b->h_started)
        return 0;
    pthread_mutex_lock(&b->h_lock);
    if (build_done)
        b->h_closing = 1;
    else
        b->h_stop = 1;
    pthread_cond_broadcast(&b->h_cond);
    pthread_mutex_unlock(&b->h_lock);
    int rc = pthread_join(b->h_thread, NULL);
    if (rc) {
        bfs_error("roll %s: cannot join the hash thread: %s", b->roll_id, strerror(rc));
        abort();
    }
    pthread_cond_destroy(&b->h_cond);
    pthread_mutex_destroy(&b->h_lock);
    b->h_started = 0;
    return b->h_err.code;
}

static void build_free(struct build *b)
{
    bfs_progress_end(&b->prog);
    bfs_catalog_hot_reader_free(b->hot);
    b->hot = NULL;
    hasher_finish(b, 0);
    uploader_finish(b, 0);
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
    for (size_t i = 0; i < b->n_arch; i++) {
        remove_local(b, &b->arch[i]);
        free(b->arch[i].key);
        free(b->arch[i].versions);
    }
    free(b->arch);
    if (b->ispool)
        fclose(b->ispool);
    if (b->ispool_path && !b->crashed && unlink(b->ispool_path) < 0 && errno != ENOENT)
        bfs_warn("roll %s: cannot remove %s: %s", b->roll_id, b->ispool_path, strerror(errno));
    free(b->ispool_path);
    if (b->manifest_path && !b->crashed && unlink(b->manifest_path) < 0 && errno != ENOENT)
        bfs_warn("roll %s: cannot remove %s: %s", b->roll_id, b->manifest_path, strerror(errno));
    free(b->manifest_path);
    if (b->have_part)
        bfs_partition_free(&b->part);
    bfs_versions_free(&b->rv);
    free(b->versions);
    free(b->wtext.json);
    bfs_buf_free(&b->row_in);
    bfs_buf_free(&b->row_out);
    bfs_buf_free(&b->scratch);
    for (unsigned i = 0; i < HASH_RING; i++)
        free(b->h_ring[i].buf);
}

/* Remove archive files left in the work directory by an interrupted roll. */
/* A roll's files in the work directory: archives and manifests (.avro), its
 * index rows (.spool); not the ledger's (ledger-*.tmp: a lease renewal may be
 * putting one now; the ledger removes its own at open). */
static int is_roll_file(const char *name)
{
    const char *dot = strrchr(name, '.');
    return strlen(name) >= 5 && name[0] != '.' && dot &&
           (strcmp(dot, ".avro") == 0 || strcmp(dot, ".spool") == 0);
}

/* Remove the files an interrupted roll left in the work directory. */
static void clean_work_dir(const struct bfs_roll_deps *deps)
{
    int rc = bfs_remove_files(deps->work_dir, is_roll_file);
    if (rc < 0)
        bfs_warn("cannot open the work directory %s: %s", deps->work_dir, strerror(-rc));
}

/* The work directory has room for the archives being built and put at once:
 * at most two of archive_max_bytes (one built while the other is put), fewer
 * for a small roll. A full disk fails the roll before it writes anything (and
 * the buffer keeps everything); it is retried once there is room. */
static int check_space(struct build *b, uint64_t claimed_bytes)
{
    const struct bfs_roll_deps *d = b->d;
    struct statvfs sv;
    if (statvfs(d->work_dir, &sv) < 0)
        return fail(b, -errno, "free space of %s", d->work_dir);
    uint64_t two = d->archive_max_bytes > UINT64_MAX / 2 ? UINT64_MAX : 2 * d->archive_max_bytes;
    uint64_t need = (claimed_bytes < two ? claimed_bytes : two) + (1u << 20);
    uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    if (avail < need)
        return fail(b, -ENOSPC,
                    "%s has %" PRIu64 " bytes free, the roll needs about %" PRIu64
                    " (it is retried when there is room)",
                    d->work_dir, avail, need);
    return 0;
}

/* Write the roll's manifest (deterministic: the same claim gives the same
 * bytes, so a rebuilt roll finds its earlier put) and put it create-only. */
static int put_manifest(struct build *b)
{
    const struct bfs_roll_deps *d = b->d;
    struct bfs_roll_info info;
    int rc = bfs_catalog_roll_info(d->cat, b->roll_id, &info);
    if (rc < 0)
        return fail(b, rc, "read the claim");
    if (asprintf(&b->manifest_path, "%s/%s-manifest.avro", d->work_dir, b->roll_id) < 0) {
        b->manifest_path = NULL;
        return fail(b, -ENOMEM, "manifest path");
    }
    if ((rc = bfs_ledger_manifest_key(d->node, b->roll_id, b->manifest_key,
                                      sizeof b->manifest_key)) < 0)
        return fail(b, rc, "manifest key");
    if (unlink(b->manifest_path) < 0 && errno != ENOENT)
        return fail(b, -errno, "remove %s", b->manifest_path);
    const struct bfs_manifest_roll roll = {
        .node = d->node,
        .roll_id = b->roll_id,
        .rows = (int64_t)info.rows,
        .bytes = (int64_t)b->ibytes, /* the sum of the index lengths */
        .claimed_at = info.claimed_at,
        .base = info.base,
    };
    struct bfs_manifest_writer *w;
    if ((rc = bfs_manifest_create(b->manifest_path, &roll, &w)) < 0)
        return fail(b, rc, "create %s", b->manifest_path);
    for (size_t i = 0; i < b->n_arch && rc == 0; i++) {
        const struct archive *a = &b->arch[i];
        struct bfs_manifest_archive ma = {
            .key = a->key,
            .table = a->table,
            .period = a->period,
            .size = a->size,
            .header_length = a->header_length,
            .schema_fingerprint = a->schema_fp,
            .codec = a->codec,
            .n_versions = a->n_versions,
            .versions = (const char(*)[17])a->versions,
        };
        memcpy(ma.sha256, a->sha256, 32);
        rc = bfs_manifest_add_archive(w, &ma);
        if (rc == 0 && fseek(b->ispool, a->spool_off, SEEK_SET) < 0)
            rc = fail(b, -errno, "index spool %s", b->ispool_path);
        for (size_t j = 0; j < a->n_index && rc == 0; j++) {
            struct index_ent e;
            if ((rc = unspool_index(b, &e)) < 0)
                break;
            const struct bfs_manifest_index mx = {
                .dataset = e.dataset,
                .start = e.start,
                .length = e.length,
                .records = e.records,
                .uploaded_at = e.uploaded_at,
            };
            rc = bfs_manifest_add_index(w, &mx);
        }
    }
    if (rc < 0) {
        bfs_manifest_abort(w);
        return fail(b, rc, "write %s", b->manifest_path);
    }
    if ((rc = bfs_manifest_finish(w, b->manifest_sha, &b->manifest_size)) < 0)
        return fail(b, rc, "write %s", b->manifest_path);
    const struct bfs_put_src src = {
        .path = b->manifest_path,
        .sha256 = b->pass_sha256 ? b->manifest_sha : NULL,
        .may_link = 1, /* only read from now on, removed after the commit */
        .cond = BFS_PUT_CREATE,
    };
    struct bfs_err err;
    rc = bfs_store_put_src(d->store, b->manifest_key, &src, &err);
    if (rc < 0)
        return fail(b, rc, "put %s%s%s", b->manifest_key, err.msg[0] ? ": " : "", err.msg);
    return 0;
}

/* The ledger's call right after the log entry is put. */
static int after_log_hook(void *arg)
{
    struct build *b = arg;
    int rc = fault_at(b->d, BFS_ROLL_AFTER_LOG, b->roll_id);
    if (rc < 0)
        crash(b, rc, BFS_ROLL_AFTER_LOG);
    return rc;
}

/* Build, upload and commit the claimed roll roll_id. claimed_rows/bytes are
 * the totals the claim reported (UINT64_MAX when unknown: a pending roll).
 * 0 or -errno with b->err set. */
static int roll_finish(struct build *b, uint64_t claimed_rows, uint64_t claimed_bytes)
{
    const struct bfs_roll_deps *d = b->d;
    int rc;
    double t = mono_now();

    clean_work_dir(d);
    /* 1b. Pack: every claimed row compressed before it is copied (a crash
     * here leaves each row in one form; the rebuild packs the rest). The
     * claim's bytes were counted before: the build checks what they are now. */
    if (d->pack) {
        int64_t first, last;
        uint64_t now_bytes;
        /* Packing writes to the catalog: with the disk nearly full, say so
         * before (the claimed bytes only shrink by packing). */
        if ((rc = check_space(b, claimed_bytes)) < 0)
            return rc;
        if ((rc = bfs_catalog_roll_range(d->cat, b->roll_id, &first, &last, &now_bytes)) < 0)
            return fail(b, rc, "the claimed rows");
        if ((rc = d->pack(d->pack_arg, first, last)) < 0)
            return fail(b, rc, "pack the claimed rows");
        if ((rc = bfs_catalog_roll_range(d->cat, b->roll_id, &first, &last, &now_bytes)) < 0)
            return fail(b, rc, "the claimed rows");
        if (claimed_bytes != UINT64_MAX)
            claimed_bytes = now_bytes;
    }
    if ((rc = check_space(b, claimed_bytes)) < 0)
        return rc;
    /* The index rows wait in a file until the manifest is written: a roll of
     * a million datasets holds none of them in memory. */
    if (asprintf(&b->ispool_path, "%s/%s-index.spool", d->work_dir, b->roll_id) < 0) {
        b->ispool_path = NULL;
        return fail(b, -ENOMEM, "index spool path");
    }
    int sfd = open(b->ispool_path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (sfd < 0 || !(b->ispool = fdopen(sfd, "w+"))) {
        rc = -errno;
        if (sfd >= 0)
            close(sfd);
        return fail(b, rc, "create %s", b->ispool_path);
    }
    if ((rc = uploader_start(b)) < 0 || (rc = hasher_start(b)) < 0)
        return rc;
    if ((rc = bfs_catalog_hot_reader(d->cat, &b->hot)) < 0)
        return fail(b, rc, "blob reader");

    /* 2. Build (the hash thread hashes each chunk as it is written; 3. the
     * upload thread puts each archive once it is closed and hashed). */
    char what[160];
    snprintf(what, sizeof what, "roll %s: build", b->roll_id);
    bfs_progress_start(&b->prog, d->stats, BFS_WORK_ROLL, what, BFS_PROGRESS_BYTES, NULL,
                       claimed_bytes != UINT64_MAX ? claimed_bytes : 0);
    rc = bfs_catalog_roll_rows(d->cat, b->roll_id, on_row, b);
    if (rc < 0)
        return fail(b, rc, "read the claimed rows");
    if (rc > 0)
        return fail(b, -EIO, "read the claimed rows (walk stopped with %d)", rc);
    if ((rc = close_archive(b)) < 0)
        return rc;
    if ((rc = hasher_finish(b, 1)) < 0) /* the tail: the last few chunks */
        return fail(b, rc, "%s", b->h_err.msg);
    if (b->rows == 0)
        return fail(b, -EIO, "the roll has no rows");
    if (claimed_rows != UINT64_MAX && (b->rows != claimed_rows || b->bytes != claimed_bytes))
        return fail(b, -EIO,
                    "claimed %" PRIu64 " rows / %" PRIu64 " bytes but read %" PRIu64
                    " rows / %" PRIu64 " bytes",
                    claimed_rows, claimed_bytes, b->rows, b->bytes);
    if ((rc = fault_at(d, BFS_ROLL_AFTER_BUILD, b->roll_id)) < 0)
        return crash(b, rc, BFS_ROLL_AFTER_BUILD);
    b->t_build = mono_now() - t;
    t = mono_now();

    /* 3. Upload: wait for the puts still to do. */
    rc = uploader_finish(b, 1);
    if (rc < 0)
        return fail(b, rc, "%s", b->up_err.msg);
    assert(b->n_put == b->n_arch);
    if ((rc = fault_at(d, BFS_ROLL_AFTER_UPLOAD, b->roll_id)) < 0)
        return crash(b, rc, BFS_ROLL_AFTER_UPLOAD);
    if ((rc = fault_at(d, BFS_ROLL_BEFORE_COMMIT, b->roll_id)) < 0)
        return crash(b, rc, BFS_ROLL_BEFORE_COMMIT);
    b->t_upload = mono_now() - t;
    t = mono_now();

    /* 4. Commit: the manifest, then the log entry (the commit in the store),
     * then the local commit (the ledger applies the entry). */
    if ((rc = put_manifest(b)) < 0)
        return rc;
    if ((rc = fault_at(d, BFS_ROLL_AFTER_MANIFEST, b->roll_id)) < 0)
        return crash(b, rc, BFS_ROLL_AFTER_MANIFEST);
    const struct bfs_ledger_roll lr = {
        .roll_id = b->roll_id,
        .manifest_key = b->manifest_key,
        .manifest_path = b->manifest_path,
        .size = b->manifest_size,
        .after_log = after_log_hook,
        .after_log_arg = b,
    };
    memcpy((uint8_t *)lr.sha256, b->manifest_sha, 32);
    struct bfs_err lerr;
    rc = bfs_ledger_commit(d->ledger, &lr, &lerr);
    if (b->crashed)
        return rc;
    if (rc < 0)
        return fail(b, rc, "commit: %s", lerr.msg[0] ? lerr.msg : strerror(-rc));
    b->t_commit = mono_now() - t;
    if ((rc = fault_at(d, BFS_ROLL_AFTER_COMMIT, b->roll_id)) < 0)
        return crash(b, rc, BFS_ROLL_AFTER_COMMIT);
    return 0;
}

/* One roll; *did is set to 1 when a roll was committed, *was_pending to 1 when
 * it finished a roll claimed earlier. */
static int roll_step(const struct bfs_roll_deps *d, int *did, int *was_pending)
{
    char roll_id[BFS_ROLL_ID_MAX] = "";
    uint64_t rows = UINT64_MAX, bytes = UINT64_MAX;
    struct bfs_err err; /* why the roll failed, as logged and recorded */
    double t0 = mono_now();
    *did = 0;
    *was_pending = 0;

    int rc = bfs_catalog_roll_pending(d->cat, roll_id, &bytes);
    if (rc == 0) {
        /* Its log entry may be in the store already (a crash before the
         * local commit): then reading the log commits it. */
        rc = bfs_ledger_refresh(d->ledger, &err);
        if (rc < 0) {
            char why[sizeof err.msg];
            snprintf(why, sizeof why, "%s", err.msg);
            bfs_err_set(&err, rc, "roll %s: %s: %s", roll_id, why, strerror(-rc));
            goto failed;
        }
        rc = bfs_catalog_roll_pending(d->cat, roll_id, &bytes);
        if (rc == -ENOENT) {
            clean_work_dir(d); /* the crashed roll's local manifest */
            bfs_info("roll: the unfinished roll was committed in the store: done");
            *did = 1;
            *was_pending = 1;
            bfs_stats_add(d->stats, rolls, 1);
            bfs_hist_observe(&d->stats->roll_seconds, mono_now() - t0);
            bfs_stats_set_roll_error(d->stats, NULL);
            return 0;
        }
    }
    if (rc == 0) {
        *was_pending = 1;
        bfs_info("roll %s: finishing the unfinished roll", roll_id);
    } else if (rc == -ENOENT) {
        rc = bfs_catalog_roll_claim(d->cat, d->node, roll_id, &rows, &bytes);
        if (rc == -ENODATA) {
            bfs_debug("roll: the buffer is empty");
            bfs_stats_set_roll_error(d->stats, NULL);
            return 0;
        }
        if (rc < 0) {
            bfs_err_set(&err, rc, "roll: claim: %s", strerror(-rc));
            goto failed;
        }
        bfs_debug("roll %s: claimed %" PRIu64 " rows, %" PRIu64 " bytes", roll_id, rows, bytes);
        if ((rc = fault_at(d, BFS_ROLL_AFTER_CLAIM, roll_id)) < 0) {
            bfs_err_set(&err, rc, "roll %s: stopped by the fault hook at %s", roll_id,
                        bfs_roll_step_name(BFS_ROLL_AFTER_CLAIM));
            goto failed;
        }
    } else {
        bfs_err_set(&err, rc, "roll: find an unfinished roll: %s", strerror(-rc));
        goto failed;
    }
    roll_id[BFS_ROLL_ID_MAX - 1] = '\0';
    if (!bfs_name_valid(roll_id, strlen(roll_id))) {
        rc = bfs_err_set(&err, -EIO, "roll: bad roll id \"%s\"", roll_id);
        goto failed;
    }

    struct build b = {
        .d = d, .roll_id = roll_id, .fd = -1, .pass_sha256 = d->store->put_wants_sha256};
    rc = roll_finish(&b, rows, bytes);
    if (rc < 0) {
        err = b.err;
        if (!err.msg[0])
            bfs_err_set(&err, rc, "%s", strerror(-rc));
        bfs_err_prefix(&err, "roll %s", roll_id);
        int crashed = b.crashed;
        build_free(&b);
        /* A real failure gives back the space of its partial archives at once
         * (the retry builds them again); a crash stop leaves them, as a crash. */
        if (!crashed)
            clean_work_dir(d);
        goto failed;
    }
    bfs_stats_add(d->stats, rolls, 1);
    bfs_hist_observe(&d->stats->roll_seconds, mono_now() - t0);
    bfs_stats_set_roll_error(d->stats, NULL);
    bfs_info("roll %s: committed %" PRIu64 " rows, %" PRIu64 " records, %" PRIu64
             " bytes in %zu archives, %zu index rows, %.3f s (build %.3f, upload %.3f, "
             "commit %.3f), puts %.3f s in all, %.3f s waiting for the hash",
             roll_id, b.rows, b.records, b.bytes, b.n_arch, b.n_idx, mono_now() - t0, b.t_build,
             b.t_upload, b.t_commit, b.t_puts, b.t_hash_wait);
    build_free(&b);
    *did = 1;
    return 0;

failed:
    assert(rc < 0);
    bfs_error("%s", err.msg);
    if (bfs_errors_add(d->errors, ".battlefs/roll", err.msg) < 0)
        bfs_error("cannot record the roll error: out of memory");
    bfs_stats_set_roll_error(d->stats, err.msg);
    return rc;
}

int bfs_roll_once(const struct bfs_roll_deps *deps)
{
    int did, was_pending;
    return roll_step(deps, &did, &was_pending);
}

int bfs_roller_recover(const struct bfs_roll_deps *deps)
{
    /* Temporaries a killed daemon's puts left in the store (file://), old
     * enough that no put in progress, here or on another host, owns them. */
    int n = bfs_store_clean(deps->store, STORE_TEMP_AGE_S, NULL);
    if (n > 0)
        bfs_info("removed %d temporary files of interrupted puts from %s", n, deps->store->url);
    else if (n < 0)
        bfs_warn("cannot clean temporary files from %s: %s", deps->store->url, strerror(-n));
    char roll_id[BFS_ROLL_ID_MAX];
    int rc = bfs_catalog_roll_pending(deps->cat, roll_id, NULL);
    if (rc == -ENOENT) {
        clean_work_dir(deps);
        return 0;
    }
    if (rc < 0) {
        bfs_error("roll recovery: cannot look for an unfinished roll: %s", strerror(-rc));
        return rc;
    }
    return bfs_roll_once(deps);
}

/* ---- the roll thread ---- */

struct bfs_roller {
    struct bfs_roll_deps d; /* a copy of bfs_roller_start's */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* to the thread: a request, a notify, stop */
    pthread_cond_t done; /* from the thread: a roll finished, or it stopped */
    int stop;
    int stopped;
    uint64_t requested; /* on-demand requests so far */
    uint64_t served;    /* requests covered by finished rolls */
    int served_rc;      /* the result of the last finished roll */
    int grew;           /* bfs_roller_notify since the last roll_bytes check */
    int purge;          /* rolled blobs may be left to delete */
    int failing;        /* the last roll failed: retry at retry_at */
    unsigned backoff_s;
    struct timespec retry_at;
    struct timespec next_check; /* earliest next roll_bytes check */
};

static struct timespec real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

static int ts_before(struct timespec a, struct timespec b)
{
    return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

static struct timespec ts_add_ms(struct timespec a, long ms)
{
    a.tv_sec += ms / 1000;
    a.tv_nsec += (ms % 1000) * 1000000L;
    if (a.tv_nsec >= 1000000000L) {
        a.tv_sec++;
        a.tv_nsec -= 1000000000L;
    }
    return a;
}

/* The next multiple of roll_interval seconds since the epoch after now. */
static struct timespec next_tick(const struct bfs_roller *r, struct timespec now)
{
    uint64_t iv = r->d.roll_interval;
    struct timespec t = {0, 0};
    uint64_t s = (uint64_t)now.tv_sec;
    uint64_t next = (s / iv + 1) * iv;
    if (next > (uint64_t)INT64_MAX / 2)
        next = (uint64_t)INT64_MAX / 2;
    t.tv_sec = (time_t)next;
    return t;
}

/* Roll until nothing claimed before now is left: finish a pending roll, then
 * claim and roll what the buffer holds. */
static int roll_all(const struct bfs_roll_deps *d)
{
    int did, was_pending;
    int rc = roll_step(d, &did, &was_pending);
    if (rc == 0 && was_pending)
        rc = roll_step(d, &did, &was_pending);
    return rc;
}

static void *roller_main(void *arg)
{
    struct bfs_roller *r = arg;
    const struct bfs_roll_deps *d = &r->d;
    int interval = d->roll_interval > 0;
    struct timespec tick = interval ? next_tick(r, real_now()) : (struct timespec){0, 0};

    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        struct timespec now = real_now();
        const char *why = NULL;
        if (r->requested > r->served)
            why = "requested";
        else if (interval && !ts_before(now, tick))
            why = "interval";
        else if (r->failing && !ts_before(now, r->retry_at))
            why = "retry";
        else if (r->grew && !r->failing && d->roll_bytes > 0 && !ts_before(now, r->next_check)) {
            r->grew = 0;
            r->next_check = ts_add_ms(now, ROLL_BYTES_CHECK_MS);
            pthread_mutex_unlock(&r->lock);
            struct bfs_catalog_counts c;
            int crc = bfs_catalog_counts(d->cat, &c);
            pthread_mutex_lock(&r->lock);
            if (crc < 0)
                bfs_warn("roll: cannot read the buffer size: %s", strerror(-crc));
            else if (c.buffer_bytes >= d->roll_bytes)
                why = "roll_bytes";
            if (!why)
                continue;
        }
        if (!why && r->purge) {
            pthread_mutex_unlock(&r->lock);
            int n = bfs_catalog_purge(d->cat, PURGE_ROWS);
            pthread_mutex_lock(&r->lock);
            if (n < 0)
                bfs_warn("roll: cannot delete rolled blobs (retried after the next roll): %s",
                         strerror(-n));
            if (n <= 0)
                r->purge = 0;
            continue;
        }
        if (!why) {
            /* Sleep until the earliest thing that can make us roll. */
            struct timespec until = {0, 0};
            int have = 0;
            if (interval) {
                until = tick;
                have = 1;
            }
            if (r->failing && (!have || ts_before(r->retry_at, until))) {
                until = r->retry_at;
                have = 1;
            }
            if (r->grew && !r->failing && d->roll_bytes > 0 &&
                (!have || ts_before(r->next_check, until))) {
                until = r->next_check;
                have = 1;
            }
            if (have)
                pthread_cond_timedwait(&r->wake, &r->lock, &until);
            else
                pthread_cond_wait(&r->wake, &r->lock);
            continue;
        }

        uint64_t covers = r->requested;
        pthread_mutex_unlock(&r->lock);
        bfs_debug("roll: starting (%s)", why);
        int rc = roll_all(d);
        pthread_mutex_lock(&r->lock);

        now = real_now();
        if (interval && !ts_before(now, tick))
            tick = next_tick(r, now);
        if (rc < 0) {
            r->failing = 1;
            r->backoff_s = r->backoff_s ? r->backoff_s * 2 : 1;
            if (r->backoff_s > ROLL_RETRY_MAX_S)
                r->backoff_s = ROLL_RETRY_MAX_S;
            r->retry_at = ts_add_ms(now, (long)r->backoff_s * 1000);
        } else {
            r->failing = 0;
            r->backoff_s = 0;
            r->purge = 1;
        }
        r->served = covers;
        r->served_rc = rc;
        pthread_cond_broadcast(&r->done);
    }
    r->stopped = 1;
    pthread_cond_broadcast(&r->done);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int bfs_roller_start(const struct bfs_roll_deps *deps, struct bfs_roller **out)
{
    struct bfs_roller *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->d = *deps;
    r->purge = 1; /* what a crash between a commit and its purge left */
    int rc = pthread_mutex_init(&r->lock, NULL);
    if (rc) {
        free(r);
        return -rc;
    }
    if ((rc = pthread_cond_init(&r->wake, NULL)) != 0) {
        pthread_mutex_destroy(&r->lock);
        free(r);
        return -rc;
    }
    if ((rc = pthread_cond_init(&r->done, NULL)) != 0) {
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return -rc;
    }
    /* A roll left unfinished (recovery failed: the store is down) is retried
     * soon, not only at the next interval. */
    char roll_id[BFS_ROLL_ID_MAX];
    if (bfs_catalog_roll_pending(deps->cat, roll_id, NULL) == 0) {
        r->failing = 1;
        r->backoff_s = 1;
        r->retry_at = ts_add_ms(real_now(), 1000);
    }
    r->grew = 1; /* check roll_bytes once at start */
    if ((rc = pthread_create(&r->thread, NULL, roller_main, r)) != 0) {
        pthread_cond_destroy(&r->done);
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return -rc;
    }
    *out = r;
    return 0;
}

void bfs_roller_notify(struct bfs_roller *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    if (!r->grew) {
        r->grew = 1;
        pthread_cond_signal(&r->wake);
    }
    pthread_mutex_unlock(&r->lock);
}

int bfs_roller_roll_now(struct bfs_roller *r)
{
    if (!r)
        return -EIO;
    pthread_mutex_lock(&r->lock);
    if (r->stop || r->stopped) {
        pthread_mutex_unlock(&r->lock);
        return -EIO;
    }
    uint64_t mine = ++r->requested;
    pthread_cond_signal(&r->wake);
    while (r->served < mine && !r->stopped)
        pthread_cond_wait(&r->done, &r->lock);
    int rc = r->served >= mine ? r->served_rc : -EIO;
    pthread_mutex_unlock(&r->lock);
    return rc < 0 ? -EIO : 0;
}

void bfs_roller_stop(struct bfs_roller *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    pthread_cond_broadcast(&r->wake);
    pthread_mutex_unlock(&r->lock);
    int rc = pthread_join(r->thread, NULL);
    if (rc)
        bfs_error("roll: cannot join the roll thread: %s", strerror(rc));
    pthread_cond_destroy(&r->done);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
