/* catalog_int.h - what the catalog's files share; not a public header.
 *
 * The catalog (include/battlefs/catalog.h) is four files:
 *   catalog_db.c      the schema and its migrations, the SQL of every
 *                     statement, open and close, the read pool, the
 *                     checkpointer;
 *   catalog_ingest.c  partitions and their layout cache, upload commits,
 *                     group commit;
 *   catalog_read.c    listing, dataset views, hot reads, counts;
 *   catalog_roll.c    the roll protocol: pending, claim, rows, commit, purge.
 *
 * Connections and locking:
 *   - One read-write connection (cat->w) with its prepared statements, used
 *     only under cat->wmu, which only bfs_cat_wtx_begin/_end take for writes
 *     (below): migrations, upload groups, claims, roll commits, purges.
 *   - Group commit: bfs_catalog_commit_upload appends a request to a queue
 *     (cat->qmu). If no leader is running, the caller becomes the leader,
 *     takes the whole queue, runs one BEGIN IMMEDIATE ... COMMIT over it (one
 *     SAVEPOINT per upload, so one upload's failure does not fail the others),
 *     then marks every request done and wakes each of their callers (each
 *     waits on its request's own cv: a broadcast woke every caller queued
 *     for the next group too, to sleep again); it wakes the first caller
 *     queued meanwhile, which leads the next group. WAL with
 *     synchronous=FULL makes the commit durable (the WAL is fsynced) before
 *     any of the group's callers returns.
 *   - Reads use read-only connections from a pool (cat->rmu guards the idle
 *     list; up to POOL_MAX idle ones are kept, more are opened on demand and
 *     closed after use). Acquiring never waits, so a callback that calls back
 *     into the catalog cannot deadlock, and WAL readers never wait for a
 *     writer's fsync. A dataset view is one read transaction on one
 *     connection: a consistent snapshot.
 *   - bfs_catalog_roll_rows pages through the claimed rows (ROLL_PAGE at a
 *     time, keyset on (table, period, dataset, id)) and calls the callback
 *     with no connection held: memory is bounded and no read transaction
 *     stays open across a long roll build.
 * Locks (docs/design.md, "Catalog locks"), in the order they may be taken:
 *   qmu      the group-commit queue (each request's cv waits with it);
 *            released before the leader takes wmu.
 *   wmu      the writer; held for a whole write transaction, and by the
 *            checkpointer thread for a checkpoint's last pass (ckpt_run,
 *            with cmu released).
 *   cmu/ccv  the checkpointer's flags; taken under wmu by the WAL hook,
 *            which SQLite runs inside each COMMIT.
 *   rmu      the idle read connections, and lmu, the layout cache: leaves,
 *            held for a few loads and stores, never with another of these.
 * So: qmu is never held while another lock is taken; wmu -> cmu and wmu ->
 * lmu (a transaction that changes a partition's layout drops its slot) are
 * the only nestings; nothing that holds wmu takes rmu.
 */
#ifndef BATTLEFS_CATALOG_INT_H
#define BATTLEFS_CATALOG_INT_H

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "battlefs/catalog.h"
#include "battlefs/log.h"
#include "battlefs/metrics.h"
#include "battlefs/names.h"

#define POOL_MAX  8   /* idle read connections kept */
#define ROLL_PAGE 256 /* claimed rows read per query by roll_rows */

/* ---- statements (their SQL: WSQL and RSQL in catalog_db.c) ---- */

enum wst {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_TX_COUNT, /* the statements above use no table: prepared before the migrations */
    W_PART_LOOKUP = W_TX_COUNT,
    W_SCHEMA_FIND,
    W_SCHEMA_INS,
    W_VERSION_FIND,
    W_VERSION_INS,
    W_VERSION_FP,
    W_PART_MERGE,
    W_MEMO_HOT,
    W_MEMO_COLD,
    W_PART_INS,
    W_ROW_INS,
    W_DATA_INS,
    W_PENDING,
    W_UNCLAIMED,
    W_ROLL_INS,
    W_ROLL_VERSIONS,
    W_ROLL_VERSIONS_DEL,
    W_ROLL_GET,
    W_ARCH_INS,
    W_IDX_INS,
    W_ROLL_CHECK,
    W_PURGE,
    W_DEL_ROWS,
    W_ROLL_DONE,
    W_LEDGER_GET,
    W_LEDGER_SET,
    W_NODE_EPOCH,
    W_ROLL_LOGGED,
    W_ROLL_ADD,
    W_ARCH_ADD,
    W_IDX_ADD,
    W_LOG_EMPTY,
    W_ERASED_AFTER,
    W_ANY_ERASURE,
    W_HIT_INS,
    W_ARCH_DIRTY,
    W_RETIRE_FIND,
    W_RETIRE_IDX,
    W_RETIRE_ARCH,
    W_GC_INS,
    W_HITS_DEL,
    W_RETIRE_LEFT,
    W_ERASE_INS,
    W_ERASE_HITS,
    W_ERASE_DIRTY,
    W_ERASE_IDX,
    W_ERASE_HOT_DATA,
    W_ERASE_HOT_ROWS,
    W_ERASE_SETTLE,
    W_ARCH_ADOPT,
    W_ADOPT_LEFT,
    W_ROLL_ADOPT,
    W_ADOPT_DROP_IDX,
    W_ADOPT_DROP_ARCH,
    W_UNCOVERED_HITS,
    W_HITS_PENDING,
    W_COUNT
};

enum rst {
    R_BEGIN,
    R_COMMIT,
    R_PARTITION,
    R_COLD,
    R_HOT,
    R_STAT,
    R_SCHEMA_JSON,
    R_VERSIONS,
    R_HAS_VERSION,
    R_ROLL_VERSIONS,
    R_ROLL_ROW_SCHEMAS,
    R_TABLES,
    R_PERIODS,
    R_DATASETS,
    R_TABLE_EXISTS,
    R_PERIOD_EXISTS,
    R_COUNTS,
    R_PENDING,
    R_ROLL_GET,
    R_ROLL_SAME,
    R_ROLL_NEXT,
    R_ARCHIVES,
    R_LEDGER,
    R_NODE_EPOCH,
    R_ROLL_STATE,
    R_SNAP_ROLLS,
    R_SNAP_ARCH,
    R_SNAP_IDX,
    R_SNAP_NODES,
    R_SNAP_ERASURES,
    R_PRELOG_NEXT,
    R_PRELOG_COUNT,
    R_WALK_ROLL,
    R_COUNT
};

/* ---- the catalog ---- */

struct rconn {
    sqlite3 *db;
    sqlite3_stmt *st[R_COUNT];
    struct rconn *next;
};

struct request {
    const struct bfs_upload *up;
    struct bfs_err *err; /* the caller's, may be NULL */
    int rc;
    int done;
    pthread_cond_t cv; /* its caller waits here (with qmu): done, or its turn to lead */
    struct request *next;
};

struct bfs_catalog {
    char *path;

    pthread_mutex_t wmu; /* w, ws, w_fk_off, w_nosync, w_cache, bulk and idx_dropped (taken
                          * by bfs_cat_wtx_begin and, to read a pragma,
                          * bfs_catalog_writer_pragma) */
    sqlite3 *w;
    sqlite3_stmt *ws[W_COUNT];
    int w_fk_off; /* w's foreign keys are (or may be) off: a WTX_FK_OFF transaction ran */
    int w_nosync; /* w's synchronous is (or may be) NORMAL: a WTX_NO_SYNC transaction ran */
    int w_cache;  /* w's cache_size before bfs_catalog_bulk raised it (0: not raised) */
    int bulk;     /* bfs_catalog_bulk is on with drop_indexes: a load into an empty
                   * block_indexes drops its secondary indexes (idx_dropped), made again
                   * when it ends */
    int idx_dropped;

    pthread_mutex_t qmu; /* the commit queue and the counters below */
    struct request *qhead, **qtail;
    int leading;
    uint64_t groups;
    uint64_t group_sizes[BFS_CATALOG_GROUP_BUCKETS]; /* groups by uploads (catalog.h) */

    pthread_mutex_t rmu; /* the idle read connections */
    struct rconn *idle;
    unsigned n_idle;

    /* Layouts of committed partitions, which never change once stored: a
     * direct-mapped cache by hash of (table, period). */
    pthread_mutex_t lmu;
    struct layout_slot *layouts; /* LAYOUT_SLOTS */

    /* The checkpointer: a thread with its own connection that copies the WAL
     * into the database (PASSIVE checkpoints) when the writer's WAL hook says
     * it holds CKPT_FRAMES frames, so no commit waits for a checkpoint. */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    pthread_t ckpt_thread;
    int ckpt_started, ckpt_wanted, ckpt_stop;
    int ckpt_mark;                 /* WAL frames at the last wake-up (the WAL hook's, under wmu) */
    _Atomic int wal_frames;        /* the WAL's frames after the last commit (the WAL hook's) */
    _Atomic uint64_t wal_restarts; /* commits that began the WAL again (the hook's) */
    _Atomic uint64_t wal_inline_ckpts; /* checkpoints a commit made past CKPT_INLINE */
    struct bfs_commit_timing timing;   /* histograms (atomics): the leader's, the checkpointer's */
    sqlite3 *ckpt_db;
    uint64_t checkpoints;
};

#define LAYOUT_SLOTS 1024

struct layout_slot {
    int used;
    enum bfs_codec codec;
    uint8_t sync[16];
    char table[BFS_NAME_MAX + 1];
    char period[BFS_NAME_MAX + 1];
};

/* ---- helpers ---- */

/* -errno of a SQLite result code: SQLITE_FULL is ENOSPC, everything else EIO. */
static inline int sql_errno(int rc)
{
    assert(rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE);
    return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
}

/* Log a SQLite failure and return its -errno. */
static inline int sql_fail(sqlite3 *db, int rc, const char *what)
{
    bfs_error("catalog: %s: %s", what, sqlite3_errmsg(db));
    return sql_errno(rc);
}

/* Step a statement that returns no rows (or whose rows are ignored) and
 * reset it. SQLITE_DONE -> SQLITE_OK. */
static inline int run(sqlite3_stmt *st)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static inline int bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

static inline int bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
    if (n > INT_MAX)
        return SQLITE_TOOBIG;
    if (n == 0)
        return sqlite3_bind_zeroblob(st, i, 0);
    return sqlite3_bind_blob(st, i, p, (int)n, SQLITE_STATIC);
}

static inline int u64_ok(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX;
}

static inline char *dup_n(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static inline int valid_name(const char *s)
{
    return s && bfs_name_valid(s, strlen(s));
}

/* partitions.codec: the codec's Avro name (avro.codec); NULL for no codec. */
static inline const char *codec_text(enum bfs_codec c)
{
    return bfs_codec_valid(c) ? bfs_codec_name(c) : NULL;
}

static inline int codec_from_text(const char *s, enum bfs_codec *out)
{
    return bfs_codec_parse(s, strlen(s), out);
}

/* ---- shared between the files ---- */

/* The read pool (catalog_db.c): a read-only connection with its prepared
 * statements (RSQL), never waiting; give it back with bfs_cat_rrelease, which ends
 * any read transaction left open. 0 or -errno. */
int bfs_cat_racquire(struct bfs_catalog *cat, struct rconn **out);
void bfs_cat_rrelease(struct bfs_catalog *cat, struct rconn *c);
/* Close c instead of pooling it (a connection whose settings could not be
 * restored). */
void bfs_cat_rdiscard(struct bfs_catalog *cat, struct rconn *c);

/* Write transactions (catalog_db.c). Every write to the database is one
 * bfs_cat_wtx_begin ... bfs_cat_wtx_end pair on the writer connection, and
 * nothing else takes wmu to write: the pair takes and releases wmu, and
 * whatever a transaction changes on the connection for itself (flags) is
 * set by the begin and restored by the end on every path, so no setting
 * outlives its transaction.
 *
 *     struct wtx tx = {.what = "claim"};
 *     int e = bfs_cat_wtx_begin(cat, &tx);
 *     if (e < 0)
 *         return e;
 *     e = claim_locked(cat, ...);       (statements of cat->ws; 0 or -errno)
 *     e = bfs_cat_wtx_end(cat, &tx, e); (COMMIT if e == 0, else ROLLBACK)
 */
/* block_indexes' secondary indexes, as schema version 1 made them (MIGRATIONS
 * in catalog_db.c): "CREATE INDEX [IF NOT EXISTS] " each. */
#define BI_INDEX_DATASET                                                                           \
    "block_indexes_dataset ON block_indexes(table_name, period_tag, dataset_id,  file_id)"
#define BI_INDEX_FILE "block_indexes_file ON block_indexes(file_id)"
#define BI_INDEXES_MAKE                                                                            \
    "CREATE INDEX IF NOT EXISTS " BI_INDEX_DATASET ";CREATE INDEX IF NOT EXISTS " BI_INDEX_FILE ";"

/* Under wmu, in a write transaction: make block_indexes' secondary indexes
 * if a bulk load dropped them (catalog_ledger.c). 0 or -errno. */
int bfs_cat_make_indexes_locked(struct bfs_catalog *cat);

#define WTX_FK_OFF 1u /* PRAGMA foreign_keys = OFF for this transaction */
#define WTX_QUIET  2u /* begin and commit failures are not logged, only put in err */
/* PRAGMA synchronous = NORMAL for this transaction: its commit is not
 * fsynced. Only for a transaction whose loss at a power failure loses
 * nothing (a packing: the rows stay in their stored form). The WAL is
 * append-only, so the next FULL commit's fsync makes it durable too, and
 * recovery never keeps a later commit without it. */
#define WTX_NO_SYNC 4u

struct wtx {
    unsigned flags;     /* WTX_* */
    const char *what;   /* names the transaction in messages: "catalog: <what>: commit: ..." */
    struct bfs_err err; /* the begin's or the commit's failure (SQLite's message), else {0, ""} */
};

/* Take wmu, set the connection up as tx->flags ask (outside a transaction:
 * SQLite ignores PRAGMA foreign_keys inside one) and BEGIN IMMEDIATE. 0 with
 * wmu held and the transaction open; -errno (tx->err set, logged unless
 * WTX_QUIET) with wmu released and the connection as before. */
int bfs_cat_wtx_begin(struct bfs_catalog *cat, struct wtx *tx);

/* End the transaction of bfs_cat_wtx_begin: COMMIT if e == 0, else ROLLBACK
 * (unless SQLite rolled it back already); then restore what tx->flags
 * changed and release wmu. Returns e, or the COMMIT's -errno (tx->err set,
 * logged unless WTX_QUIET; the transaction is rolled back). A setting that
 * cannot be restored is logged and restored by the next begin, which fails
 * rather than run a transaction without it. */
int bfs_cat_wtx_end(struct bfs_catalog *cat, struct wtx *tx, int e);

/* Read the partition row with R_PARTITION on c (catalog_ingest.c).
 * 0, -ENOENT, -errno. */
int bfs_cat_read_partition(struct rconn *c, const char *table, const char *period,
                           struct bfs_partition *p);

#endif
