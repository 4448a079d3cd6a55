/* catalog.c - the SQLite catalog (see include/battlefs/catalog.h).
 *
 * Schema (version 1; PRAGMA user_version holds the version, MIGRATIONS below
 * is the forward-only list of steps, each applied in its own transaction; a
 * database newer than this code is refused):
 *
 *   schemas(id, canonical UNIQUE, fingerprint, json)
 *       one row per Parsing Canonical Form; fingerprint = hex CRC-64-AVRO;
 *       json = the text of the first upload that brought it.
 *   partitions(id, table_name, period_tag, schema_id, codec, sync, schema_json,
 *              header, header_length, created_at, UNIQUE(table_name, period_tag))
 *       created by the first upload of a (table, period): its layout header
 *       (bfs_ocf_layout_header of that upload's schema text, the codec, and
 *       sync = bfs_schema_sync(canonical)).
 *   buffer_rows(id AUTOINCREMENT, table_name, period_tag, dataset_id, schema_id,
 *               record_count, byte_length, created_at)
 *   buffer_data(id -> buffer_rows, data BLOB)
 *   buffer_totals(uploads, bytes): one row kept by triggers on buffer_rows,
 *       so bfs_catalog_counts and a claim do not scan the buffer.
 *   buffer_logs: a VIEW with the brief's columns (id, table_name, period_tag,
 *       dataset_id, schema_id, record_count, byte_length, data, created_at,
 *       roll_id = the pending roll that claimed the row, else NULL).
 *   rolls(id, claimed_at, committed_at, first_row, last_row, row_count,
 *         byte_count)
 *   archived_files(id AUTOINCREMENT, file_path UNIQUE, table_name, period_tag,
 *                  size, header_length, roll_id, seq, created_at)
 *       seq = the archive's position in its roll commit, so id order is
 *       (roll commit order, seq).
 *   block_indexes(id, dataset_id, table_name, period_tag, file_id, start_byte,
 *                 length, record_count, uploaded_at)
 *       uploaded_at = the newest created_at of the dataset's rows in the roll:
 *       a cold segment keeps the upload time, so a dataset's mtime (the newest
 *       of its segments) does not change when it is rolled.
 *
 * Claims are id ranges. Ids of buffer_rows are AUTOINCREMENT (never reused)
 * and assigned under the one writer, so id order is commit order. At most one
 * roll is pending (a claim while one is pending fails with -EBUSY), and a
 * committed roll deleted its rows, so when a claim runs every buffered row is
 * unclaimed: the claim records [min(id), max(id)] in its rolls row, in O(1).
 * Rows committed later get larger ids and stay unclaimed; the roll's rows are
 * the buffer rows in its range until its commit deletes them (their blobs in
 * buffer_data stay, orphaned, until bfs_catalog_purge deletes them in small
 * transactions: freeing a blob reads all its overflow pages, 0.6 s per GiB,
 * too long to hold the writer in the commit). The claim is
 * not written into each row because SQLite rewrites a whole row on UPDATE:
 * marking 100k rows held the writer (every upload) for 0.6 s, and with the
 * blob in the row, claiming 256 MiB wrote 256 MiB more to the WAL. For the
 * same reason the blobs live in their own table: scans and lookups of the hot
 * metadata never touch blob pages. Ids are never reused, so
 * bfs_catalog_read_hot of a rolled row gives its own bytes until its purge,
 * then -ENOENT, never another row's bytes.
 *
 * Connections and locking:
 *   - One read-write connection (cat->w) with its prepared statements, used
 *     only under cat->wmu: upload groups, claims, roll commits.
 *   - Group commit: bfs_catalog_commit_upload appends a request to a queue
 *     (cat->qmu). If no leader is running, the caller becomes the leader,
 *     takes the whole queue, runs one BEGIN IMMEDIATE ... COMMIT over it (one
 *     SAVEPOINT per upload, so one upload's failure does not fail the others),
 *     then marks every request done and wakes the waiters (cat->qcv); one of
 *     the callers queued meanwhile leads the next group. WAL with
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
 * Lock order: qmu is never held while wmu or rmu is taken, and wmu and rmu are
 * never held together.
 */
#include "battlefs/catalog.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/log.h"
#include "battlefs/names.h"
#include "battlefs/schema.h"

#define POOL_MAX        8   /* idle read connections kept */
#define ROLL_PAGE       256 /* claimed rows read per query by roll_rows */
#define BUSY_TIMEOUT_MS 10000
#define WAL_LIMIT       (64 * 1024 * 1024) /* journal_size_limit */
#define CKPT_FRAMES     1000               /* WAL frames that wake the checkpointer */
#define CKPT_INLINE     16000 /* WAL frames (64 MiB) past which a commit checkpoints itself */

/* ---- schema ---- */

static const char *const MIGRATIONS[] = {
    /* 1: the initial schema */
    "CREATE TABLE schemas("
    "  id INTEGER PRIMARY KEY,"
    "  canonical TEXT NOT NULL UNIQUE,"
    "  fingerprint TEXT NOT NULL,"
    "  json TEXT NOT NULL);"
    "CREATE TABLE partitions("
    "  id INTEGER PRIMARY KEY,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  schema_id INTEGER NOT NULL REFERENCES schemas(id),"
    "  codec TEXT NOT NULL,"
    "  sync BLOB NOT NULL,"
    "  schema_json TEXT NOT NULL,"
    "  header BLOB NOT NULL,"
    "  header_length INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE(table_name, period_tag));"
    "CREATE TABLE rolls("
    "  id TEXT PRIMARY KEY,"
    "  claimed_at INTEGER NOT NULL,"
    "  committed_at INTEGER,"
    "  first_row INTEGER NOT NULL,"
    "  last_row INTEGER NOT NULL,"
    "  row_count INTEGER NOT NULL,"
    "  byte_count INTEGER NOT NULL);"
    "CREATE INDEX rolls_pending ON rolls(claimed_at) WHERE committed_at IS NULL;"
    "CREATE TABLE buffer_rows("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  dataset_id TEXT NOT NULL,"
    "  schema_id INTEGER NOT NULL REFERENCES schemas(id),"
    "  record_count INTEGER NOT NULL,"
    "  byte_length INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL);"
    "CREATE INDEX buffer_rows_dataset ON buffer_rows(table_name, period_tag, dataset_id);"
    "CREATE TABLE buffer_data("
    "  id INTEGER PRIMARY KEY REFERENCES buffer_rows(id),"
    "  data BLOB NOT NULL);"
    "CREATE VIEW buffer_logs AS SELECT r.id AS id, r.table_name AS table_name,"
    "  r.period_tag AS period_tag, r.dataset_id AS dataset_id, r.schema_id AS schema_id,"
    "  r.record_count AS record_count, r.byte_length AS byte_length, d.data AS data,"
    "  r.created_at AS created_at, (SELECT o.id FROM rolls o WHERE o.committed_at IS NULL"
    "  AND r.id BETWEEN o.first_row AND o.last_row) AS roll_id"
    "  FROM buffer_rows r JOIN buffer_data d ON d.id = r.id;"
    "CREATE TABLE buffer_totals("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  uploads INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL);"
    "INSERT INTO buffer_totals VALUES(1, 0, 0);"
    "CREATE TRIGGER buffer_rows_ins AFTER INSERT ON buffer_rows BEGIN"
    "  UPDATE buffer_totals SET uploads = uploads + 1, bytes = bytes + NEW.byte_length;"
    "  END;"
    "CREATE TRIGGER buffer_rows_del AFTER DELETE ON buffer_rows BEGIN"
    "  UPDATE buffer_totals SET uploads = uploads - 1, bytes = bytes - OLD.byte_length;"
    "  END;"
    "CREATE TABLE archived_files("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  file_path TEXT NOT NULL UNIQUE,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  header_length INTEGER NOT NULL,"
    "  roll_id TEXT NOT NULL REFERENCES rolls(id),"
    "  seq INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE(roll_id, seq));"
    "CREATE TABLE block_indexes("
    "  id INTEGER PRIMARY KEY,"
    "  dataset_id TEXT NOT NULL,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  file_id INTEGER NOT NULL REFERENCES archived_files(id),"
    "  start_byte INTEGER NOT NULL,"
    "  length INTEGER NOT NULL,"
    "  record_count INTEGER NOT NULL,"
    "  uploaded_at INTEGER NOT NULL);"
    "CREATE INDEX block_indexes_dataset ON block_indexes(table_name, period_tag, dataset_id,"
    "  file_id);"
    "CREATE INDEX block_indexes_file ON block_indexes(file_id);",
};
#define SCHEMA_VERSION ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

/* ---- statements ---- */

enum wst {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_PART_LOOKUP,
    W_SCHEMA_FIND,
    W_SCHEMA_INS,
    W_PART_INS,
    W_ROW_INS,
    W_DATA_INS,
    W_PENDING,
    W_UNCLAIMED,
    W_ROLL_INS,
    W_ROLL_GET,
    W_ARCH_INS,
    W_IDX_INS,
    W_ROLL_CHECK,
    W_PURGE,
    W_DEL_ROWS,
    W_ROLL_DONE,
    W_COUNT
};

static const char *const WSQL[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT up",
    [W_RELEASE] = "RELEASE up",
    [W_ROLLBACK_TO] = "ROLLBACK TO up",
    [W_PART_LOOKUP] = "SELECT p.schema_id, p.codec, s.canonical, s.fingerprint FROM partitions p"
                      " JOIN schemas s ON s.id = p.schema_id"
                      " WHERE p.table_name = ?1 AND p.period_tag = ?2",
    [W_SCHEMA_FIND] = "SELECT id FROM schemas WHERE canonical = ?1",
    [W_SCHEMA_INS] = "INSERT INTO schemas(canonical, fingerprint, json) VALUES(?1, ?2, ?3)",
    [W_PART_INS] = "INSERT INTO partitions(table_name, period_tag, schema_id, codec, sync,"
                   " schema_json, header, header_length, created_at)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [W_ROW_INS] = "INSERT INTO buffer_rows(table_name, period_tag, dataset_id, schema_id,"
                  " record_count, byte_length, created_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [W_DATA_INS] = "INSERT INTO buffer_data(id, data) VALUES(?1, ?2)",
    [W_PENDING] = "SELECT id FROM rolls WHERE committed_at IS NULL ORDER BY claimed_at, id LIMIT 1",
    [W_UNCLAIMED] = "SELECT (SELECT min(id) FROM buffer_rows), (SELECT max(id) FROM buffer_rows),"
                    " uploads, bytes FROM buffer_totals",
    [W_ROLL_INS] = "INSERT INTO rolls(id, claimed_at, first_row, last_row, row_count, byte_count)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    [W_ROLL_GET] = "SELECT committed_at, first_row, last_row FROM rolls WHERE id = ?1",
    [W_ARCH_INS] = "INSERT INTO archived_files(file_path, table_name, period_tag, size,"
                   " header_length, roll_id, seq, created_at)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [W_IDX_INS] = "INSERT INTO block_indexes(dataset_id, table_name, period_tag, file_id,"
                  " start_byte, length, record_count, uploaded_at)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT coalesce(max(created_at), ?8)"
                  " FROM buffer_rows WHERE table_name = ?2 AND period_tag = ?3 AND dataset_id = ?1"
                  " AND id BETWEEN ?9 AND ?10))",
    /* Rows of (table, period, dataset, bytes, records) on one side only. */
    [W_ROLL_CHECK] =
        "WITH b AS (SELECT table_name, period_tag, dataset_id, sum(byte_length),"
        "  sum(record_count) FROM buffer_rows WHERE id BETWEEN ?2 AND ?3 GROUP BY 1, 2, 3),"
        " c AS (SELECT i.table_name, i.period_tag, i.dataset_id, sum(i.length),"
        "  sum(i.record_count) FROM archived_files a"
        "  JOIN block_indexes i ON i.file_id = a.id WHERE a.roll_id = ?1"
        "  GROUP BY 1, 2, 3)"
        " SELECT (SELECT count(*) FROM (SELECT * FROM b EXCEPT SELECT * FROM c)) +"
        " (SELECT count(*) FROM (SELECT * FROM c EXCEPT SELECT * FROM b))",
    /* Blobs whose buffer_rows row a roll commit deleted: every id below the
     * smallest live row (rolls claim whole prefixes; ids are never reused). */
    [W_PURGE] = "DELETE FROM buffer_data WHERE id IN (SELECT id FROM buffer_data WHERE id <"
                " coalesce((SELECT min(id) FROM buffer_rows), 9223372036854775807)"
                " ORDER BY id LIMIT ?1)",
    [W_DEL_ROWS] = "DELETE FROM buffer_rows WHERE id BETWEEN ?1 AND ?2",
    [W_ROLL_DONE] = "UPDATE rolls SET committed_at = ?2 WHERE id = ?1 AND committed_at IS NULL",
};

enum rst {
    R_BEGIN,
    R_COMMIT,
    R_PARTITION,
    R_COLD,
    R_HOT,
    R_STAT,
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
    R_COUNT
};

#define HAS_DATA(p)                                                                                \
    "(EXISTS (SELECT 1 FROM buffer_rows b WHERE b.table_name = " p ".table_name"                   \
    " AND b.period_tag = " p ".period_tag) OR EXISTS (SELECT 1 FROM block_indexes c"               \
    " WHERE c.table_name = " p ".table_name AND c.period_tag = " p ".period_tag))"

static const char *const RSQL[R_COUNT] = {
    [R_BEGIN] = "BEGIN",
    [R_COMMIT] = "COMMIT",
    [R_PARTITION] = "SELECT id, schema_id, codec, sync, schema_json, header FROM partitions"
                    " WHERE table_name = ?1 AND period_tag = ?2",
    [R_COLD] = "SELECT a.id, a.file_path, i.start_byte, i.length, i.record_count, i.uploaded_at"
               " FROM block_indexes i JOIN archived_files a ON a.id = i.file_id"
               " WHERE i.table_name = ?1 AND i.period_tag = ?2 AND i.dataset_id = ?3"
               " ORDER BY i.file_id, i.id",
    [R_HOT] = "SELECT id, byte_length, record_count, created_at FROM buffer_rows"
              " WHERE table_name = ?1 AND period_tag = ?2 AND dataset_id = ?3 ORDER BY id",
    [R_STAT] = "SELECT p.header_length, c.n, c.len, c.t, h.n, h.len, h.t FROM partitions p,"
               " (SELECT count(*) n, coalesce(sum(length), 0) len, max(uploaded_at) t"
               "  FROM block_indexes WHERE table_name = ?1 AND period_tag = ?2"
               "  AND dataset_id = ?3) c,"
               " (SELECT count(*) n, coalesce(sum(byte_length), 0) len, max(created_at) t"
               "  FROM buffer_rows WHERE table_name = ?1 AND period_tag = ?2"
               "  AND dataset_id = ?3) h"
               " WHERE p.table_name = ?1 AND p.period_tag = ?2",
    /* Tables and periods come from partitions (a handful of rows) and are
     * listed when they hold hot or cold data. */
    [R_TABLES] = "SELECT DISTINCT p.table_name FROM partitions p WHERE " HAS_DATA(
        "p") " ORDER BY p.table_name",
    [R_PERIODS] = "SELECT p.period_tag FROM partitions p WHERE p.table_name = ?1 AND " HAS_DATA(
        "p") " ORDER BY p.period_tag",
    [R_DATASETS] = "SELECT dataset_id FROM buffer_rows WHERE table_name = ?1 AND period_tag = ?2"
                   " UNION SELECT dataset_id FROM block_indexes WHERE table_name = ?1"
                   " AND period_tag = ?2 ORDER BY 1",
    [R_TABLE_EXISTS] =
        "SELECT 1 FROM partitions p WHERE p.table_name = ?1 AND " HAS_DATA("p") " LIMIT 1",
    [R_PERIOD_EXISTS] = "SELECT 1 FROM partitions p WHERE p.table_name = ?1 AND p.period_tag = ?2"
                        " AND " HAS_DATA("p"),
    [R_COUNTS] = "SELECT uploads, bytes, (SELECT count(*) FROM archived_files) FROM buffer_totals",
    [R_PENDING] = "SELECT id FROM rolls WHERE committed_at IS NULL ORDER BY claimed_at, id LIMIT 1",
    [R_ROLL_GET] = "SELECT first_row, last_row FROM rolls WHERE id = ?1",
    /* A page of the roll's rows (ids ?6 to ?1) after (table, period, dataset,
     * id) = (?2, ?3, ?4, ?5): the rest of that dataset, then the next
     * datasets. (Two queries: SQLite does not seek on a row value that
     * includes the rowid.) */
    [R_ROLL_SAME] = "SELECT id, table_name, period_tag, dataset_id, record_count, byte_length"
                    " FROM buffer_rows WHERE table_name = ?2 AND period_tag = ?3"
                    " AND dataset_id = ?4 AND id > ?5 AND id BETWEEN ?6 AND ?1"
                    " ORDER BY id LIMIT ?7",
    [R_ROLL_NEXT] = "SELECT id, table_name, period_tag, dataset_id, record_count, byte_length"
                    " FROM buffer_rows INDEXED BY buffer_rows_dataset"
                    " WHERE (table_name, period_tag, dataset_id) > (?2, ?3, ?4)"
                    " AND id BETWEEN ?6 AND ?1"
                    " ORDER BY table_name, period_tag, dataset_id, id LIMIT ?7",
    [R_ARCHIVES] = "SELECT file_path FROM archived_files ORDER BY id",
};

/* ---- the catalog ---- */

struct rconn {
    sqlite3 *db;
    sqlite3_stmt *st[R_COUNT];
    struct rconn *next;
};

struct request {
    const struct bfs_upload *up;
    char *msg;
    size_t msglen;
    int rc;
    int done;
    struct request *next;
};

struct bfs_catalog {
    char *path;

    pthread_mutex_t wmu; /* w and ws */
    sqlite3 *w;
    sqlite3_stmt *ws[W_COUNT];

    pthread_mutex_t qmu; /* the commit queue and the counters below */
    pthread_cond_t qcv;
    struct request *qhead, **qtail;
    int leading;
    uint64_t groups;

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
    int ckpt_mark; /* WAL frames at the last wake-up (the WAL hook's, under wmu) */
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

static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_msg(char *msg, size_t msglen, const char *fmt, ...)
{
    if (!msg || msglen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
}

/* -errno of a SQLite result code: SQLITE_FULL is ENOSPC, everything else EIO. */
static int sql_errno(int rc)
{
    assert(rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE);
    return (rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO;
}

/* Log a SQLite failure and return its -errno. */
static int sql_fail(sqlite3 *db, int rc, const char *what)
{
    bfs_error("catalog: %s: %s", what, sqlite3_errmsg(db));
    return sql_errno(rc);
}

/* Step a statement that returns no rows (or whose rows are ignored) and
 * reset it. SQLITE_DONE -> SQLITE_OK. */
static int run(sqlite3_stmt *st)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        ;
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

static int bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
    if (n > INT_MAX)
        return SQLITE_TOOBIG;
    if (n == 0)
        return sqlite3_bind_zeroblob(st, i, 0);
    return sqlite3_bind_blob(st, i, p, (int)n, SQLITE_STATIC);
}

static int u64_ok(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX;
}

static char *dup_n(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return NULL;
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static int set_pragmas(sqlite3 *db, int writer)
{
    char sql[256];
    if (writer)
        snprintf(sql, sizeof sql,
                 "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                 " PRAGMA journal_size_limit = %d; PRAGMA secure_delete = FAST;",
                 WAL_LIMIT);
    else
        snprintf(sql, sizeof sql, "PRAGMA query_only = ON;");
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static int prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **st, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static void finalize_all(sqlite3_stmt **st, int n)
{
    for (int i = 0; i < n; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
}

/* ---- open, migrate, close ---- */

static int migrate(struct bfs_catalog *cat)
{
    sqlite3 *db = cat->w;
    for (;;) {
        int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return sql_fail(db, rc, "begin migration");
        sqlite3_stmt *st;
        int version = -1;
        rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                version = sqlite3_column_int(st, 0);
                rc = SQLITE_OK;
            }
            sqlite3_finalize(st);
        }
        if (rc != SQLITE_OK) {
            int e = sql_fail(db, rc, "read the schema version");
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return e;
        }
        if (version == SCHEMA_VERSION || version > SCHEMA_VERSION || version < 0) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            if (version == SCHEMA_VERSION)
                return 0;
            bfs_error("catalog %s has schema version %d, but this battlefs knows versions up "
                      "to %d: use a newer battlefs",
                      cat->path, version, SCHEMA_VERSION);
            return -ENOTSUP;
        }
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", version + 1);
        rc = sqlite3_exec(db, MIGRATIONS[version], NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, set, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            char what[64];
            snprintf(what, sizeof what, "migration to schema version %d", version + 1);
            int e = sql_fail(db, rc, what);
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return e;
        }
        bfs_debug("catalog %s: migrated to schema version %d", cat->path, version + 1);
    }
}

static int open_conn(const char *path, int writer, sqlite3 **out)
{
    int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE |
                (writer ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_extended_result_codes(db, 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = set_pragmas(db, writer);
    if (rc != SQLITE_OK) {
        bfs_error("catalog: open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return sql_errno(rc);
    }
    *out = db;
    return 0;
}

static int set_wal(struct bfs_catalog *cat)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(cat->w, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(cat->w, rc, "set WAL mode");
    rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    int ok = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return sql_fail(cat->w, rc, "set WAL mode");
    if (!ok) {
        bfs_error("catalog %s: cannot switch to WAL mode", cat->path);
        return -EIO;
    }
    return 0;
}

/* Create the database file if it is missing: mode 0600 (SQLite gives the
 * -wal and -shm files the database's mode), and its directory entry synced
 * (SQLite syncs the directory for the WAL it creates, not for the database). */
static int create_private(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? 0 : -errno;
    int e = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    char *dir = strdup(path);
    if (!dir)
        return -ENOMEM;
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, strlen(dir) + 1, ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    int dfd = e == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (e == 0 && (dfd < 0 || fsync(dfd) < 0))
        e = -errno;
    if (dfd >= 0)
        close(dfd);
    free(dir);
    return e;
}

/* ---- the checkpointer ---- */

/* The writer connection's WAL hook, called after each commit (under wmu):
 * wake the checkpointer for every CKPT_FRAMES new frames (not after every
 * commit past the mark: a checkpoint ends with an fsync of the database, and
 * a checkpointer chasing each commit syncs the database as often as the WAL);
 * past CKPT_INLINE frames (the checkpointer never caught up with a stream of
 * commits), checkpoint here so the WAL stays bounded: with wmu held no commit
 * lands meanwhile, and the next transaction restarts the WAL from its start. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct bfs_catalog *cat = arg;
    if (frames >= CKPT_INLINE) {
        int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            bfs_warn("catalog: checkpoint of a %d-frame WAL: %s", frames, sqlite3_errmsg(db));
        return SQLITE_OK;
    }
    if (frames < cat->ckpt_mark)
        cat->ckpt_mark = 0; /* the WAL restarted */
    if (frames >= cat->ckpt_mark + CKPT_FRAMES && cat->ckpt_started) {
        cat->ckpt_mark = frames;
        pthread_mutex_lock(&cat->cmu);
        if (!cat->ckpt_wanted) {
            cat->ckpt_wanted = 1;
            pthread_cond_signal(&cat->ccv);
        }
        pthread_mutex_unlock(&cat->cmu);
    }
    return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
    struct bfs_catalog *cat = arg;
    pthread_mutex_lock(&cat->cmu);
    for (;;) {
        while (!cat->ckpt_wanted && !cat->ckpt_stop)
            pthread_cond_wait(&cat->ccv, &cat->cmu);
        if (cat->ckpt_stop)
            break;
        cat->ckpt_wanted = 0;
        pthread_mutex_unlock(&cat->cmu);
        int rc =
            sqlite3_wal_checkpoint_v2(cat->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            bfs_warn("catalog: checkpoint: %s", sqlite3_errmsg(cat->ckpt_db));
        pthread_mutex_lock(&cat->cmu);
        cat->checkpoints++;
    }
    pthread_mutex_unlock(&cat->cmu);
    return NULL;
}

/* Hand checkpoints to the checkpointer thread. Without it (it cannot start),
 * SQLite's own automatic checkpoints in the committing thread stay on. */
static void start_checkpointer(struct bfs_catalog *cat)
{
    if (open_conn(cat->path, 1, &cat->ckpt_db) < 0)
        return;
    if (pthread_create(&cat->ckpt_thread, NULL, ckpt_main, cat) != 0) {
        bfs_warn("catalog: no checkpointer thread; commits checkpoint themselves");
        sqlite3_close(cat->ckpt_db);
        cat->ckpt_db = NULL;
        return;
    }
    cat->ckpt_started = 1;
    sqlite3_wal_hook(cat->w, wal_hook, cat); /* replaces the automatic checkpoints */
}

static void stop_checkpointer(struct bfs_catalog *cat)
{
    if (cat->ckpt_started) {
        pthread_mutex_lock(&cat->cmu);
        cat->ckpt_stop = 1;
        pthread_cond_signal(&cat->ccv);
        pthread_mutex_unlock(&cat->cmu);
        pthread_join(cat->ckpt_thread, NULL);
        cat->ckpt_started = 0;
    }
    if (cat->ckpt_db && sqlite3_close(cat->ckpt_db) != SQLITE_OK)
        bfs_error("catalog: close the checkpointer's connection: %s", sqlite3_errmsg(cat->ckpt_db));
    cat->ckpt_db = NULL;
}

uint64_t bfs_catalog_checkpoints(struct bfs_catalog *cat)
{
    pthread_mutex_lock(&cat->cmu);
    uint64_t n = cat->checkpoints;
    pthread_mutex_unlock(&cat->cmu);
    return n;
}

int bfs_catalog_open(const char *path, struct bfs_catalog **out)
{
    *out = NULL;
    int rc = create_private(path);
    if (rc < 0) {
        bfs_error("catalog: cannot create %s: %s", path, strerror(-rc));
        return rc;
    }

    struct bfs_catalog *cat = calloc(1, sizeof *cat);
    if (!cat)
        return -ENOMEM;
    cat->path = strdup(path);
    if (!cat->path) {
        free(cat);
        return -ENOMEM;
    }
    pthread_mutex_init(&cat->wmu, NULL);
    pthread_mutex_init(&cat->qmu, NULL);
    pthread_cond_init(&cat->qcv, NULL);
    pthread_mutex_init(&cat->rmu, NULL);
    pthread_mutex_init(&cat->lmu, NULL);
    pthread_mutex_init(&cat->cmu, NULL);
    pthread_cond_init(&cat->ccv, NULL);
    cat->qtail = &cat->qhead;
    cat->layouts = calloc(LAYOUT_SLOTS, sizeof *cat->layouts);
    if (!cat->layouts) {
        bfs_catalog_close(cat);
        return -ENOMEM;
    }

    rc = open_conn(path, 1, &cat->w);
    if (rc == 0)
        rc = set_wal(cat);
    if (rc == 0)
        rc = migrate(cat);
    if (rc == 0) {
        int src = prepare_all(cat->w, WSQL, cat->ws, W_COUNT);
        if (src != SQLITE_OK)
            rc = sql_fail(cat->w, src, "prepare statements");
    }
    if (rc < 0) {
        bfs_catalog_close(cat);
        return rc;
    }
    start_checkpointer(cat);
    *out = cat;
    return 0;
}

static void rconn_free(struct rconn *c)
{
    finalize_all(c->st, R_COUNT);
    sqlite3_close(c->db);
    free(c);
}

void bfs_catalog_close(struct bfs_catalog *cat)
{
    if (!cat)
        return;
    assert(!cat->leading && !cat->qhead);
    stop_checkpointer(cat);
    while (cat->idle) {
        struct rconn *c = cat->idle;
        cat->idle = c->next;
        rconn_free(c);
    }
    finalize_all(cat->ws, W_COUNT);
    if (cat->w && sqlite3_close(cat->w) != SQLITE_OK)
        bfs_error("catalog: close %s: %s", cat->path, sqlite3_errmsg(cat->w));
    pthread_mutex_destroy(&cat->wmu);
    pthread_mutex_destroy(&cat->qmu);
    pthread_cond_destroy(&cat->qcv);
    pthread_mutex_destroy(&cat->rmu);
    pthread_mutex_destroy(&cat->lmu);
    pthread_mutex_destroy(&cat->cmu);
    pthread_cond_destroy(&cat->ccv);
    free(cat->layouts);
    free(cat->path);
    free(cat);
}

/* ---- the read pool ---- */

static int racquire(struct bfs_catalog *cat, struct rconn **out)
{
    pthread_mutex_lock(&cat->rmu);
    struct rconn *c = cat->idle;
    if (c) {
        cat->idle = c->next;
        cat->n_idle--;
    }
    pthread_mutex_unlock(&cat->rmu);
    if (c) {
        *out = c;
        return 0;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    int rc = open_conn(cat->path, 0, &c->db);
    if (rc < 0) {
        free(c);
        return rc;
    }
    int src = prepare_all(c->db, RSQL, c->st, R_COUNT);
    if (src != SQLITE_OK) {
        rc = sql_fail(c->db, src, "prepare read statements");
        rconn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void rrelease(struct bfs_catalog *cat, struct rconn *c)
{
    if (!sqlite3_get_autocommit(c->db) &&
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK) {
        bfs_error("catalog: end a read: %s", sqlite3_errmsg(c->db));
        rconn_free(c);
        return;
    }
    pthread_mutex_lock(&cat->rmu);
    if (cat->n_idle < POOL_MAX) {
        c->next = cat->idle;
        cat->idle = c;
        cat->n_idle++;
        c = NULL;
    }
    pthread_mutex_unlock(&cat->rmu);
    if (c)
        rconn_free(c);
}

/* ---- partitions ---- */

void bfs_partition_free(struct bfs_partition *p)
{
    if (!p)
        return;
    free(p->schema_json);
    free(p->header);
    memset(p, 0, sizeof *p);
}

/* Read the partition row with R_PARTITION on c. 0, -ENOENT, -errno. */
static int read_partition(struct rconn *c, const char *table, const char *period,
                          struct bfs_partition *p)
{
    memset(p, 0, sizeof *p);
    sqlite3_stmt *st = c->st[R_PARTITION];
    bind_text(st, 1, table);
    bind_text(st, 2, period);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return -ENOENT;
    }
    if (rc != SQLITE_ROW) {
        int e = sql_fail(c->db, rc, "read partition");
        sqlite3_reset(st);
        return e;
    }
    int e = 0;
    p->id = sqlite3_column_int64(st, 0);
    p->schema_id = sqlite3_column_int64(st, 1);
    const char *codec = (const char *)sqlite3_column_text(st, 2);
    if (!codec || bfs_codec_parse(codec, strlen(codec), &p->codec) < 0)
        e = -EIO;
    if (e == 0 && sqlite3_column_bytes(st, 3) != 16)
        e = -EIO;
    if (e == 0)
        memcpy(p->sync, sqlite3_column_blob(st, 3), 16);
    if (e == 0) {
        const void *json = sqlite3_column_text(st, 4);
        p->schema_len = (size_t)sqlite3_column_bytes(st, 4);
        const void *hdr = sqlite3_column_blob(st, 5);
        p->header_len = (size_t)sqlite3_column_bytes(st, 5);
        p->schema_json = dup_n(json, p->schema_len);
        p->header = malloc(p->header_len ? p->header_len : 1);
        if (!p->schema_json || !p->header)
            e = -ENOMEM;
        else if (p->header_len)
            memcpy(p->header, hdr, p->header_len);
    }
    if (e == -EIO)
        bfs_error("catalog: partition %s/%s has a bad codec or sync marker", table, period);
    sqlite3_reset(st);
    if (e < 0)
        bfs_partition_free(p);
    return e;
}

int bfs_catalog_partition_get(struct bfs_catalog *cat, const char *table, const char *period,
                              struct bfs_partition *p)
{
    struct rconn *c;
    memset(p, 0, sizeof *p);
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    rc = read_partition(c, table, period, p);
    rrelease(cat, c);
    return rc;
}

/* FNV-1a of "table\0period". */
static size_t layout_hash(const char *table, const char *period)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *s = table;; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
        if (!*s)
            break;
    }
    for (const char *s = period; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return (size_t)(h % LAYOUT_SLOTS);
}

int bfs_catalog_partition_layout(struct bfs_catalog *cat, const char *table, const char *period,
                                 uint8_t sync[16], enum bfs_codec *codec)
{
    if (strlen(table) > BFS_NAME_MAX || strlen(period) > BFS_NAME_MAX)
        return -ENOENT; /* no partition has such a name */
    struct layout_slot *slot = &cat->layouts[layout_hash(table, period)];
    pthread_mutex_lock(&cat->lmu);
    int hit = slot->used && strcmp(slot->table, table) == 0 && strcmp(slot->period, period) == 0;
    if (hit) {
        memcpy(sync, slot->sync, 16);
        *codec = slot->codec;
    }
    pthread_mutex_unlock(&cat->lmu);
    if (hit)
        return 0;

    struct bfs_partition p;
    int rc = bfs_catalog_partition_get(cat, table, period, &p);
    if (rc < 0)
        return rc;
    memcpy(sync, p.sync, 16);
    *codec = p.codec;
    bfs_partition_free(&p);
    /* Committed rows only (a reader sees no uncommitted write), and a
     * partition is never changed or removed: the slot stays true. */
    pthread_mutex_lock(&cat->lmu);
    slot->used = 1;
    slot->codec = *codec;
    memcpy(slot->sync, sync, 16);
    snprintf(slot->table, sizeof slot->table, "%s", table);
    snprintf(slot->period, sizeof slot->period, "%s", period);
    pthread_mutex_unlock(&cat->lmu);
    return 0;
}

/* ---- upload commits ---- */

static int valid_name(const char *s)
{
    return s && bfs_name_valid(s, strlen(s));
}

static void fingerprint_hex(const struct bfs_upload *up, char hex[17])
{
    snprintf(hex, 17, "%016" PRIx64, bfs_schema_rabin(up->canonical, up->canonical_len));
}

/* Insert one upload inside the group transaction (under its savepoint).
 * Returns 0 or -errno with msg set. */
static int insert_upload(struct bfs_catalog *cat, const struct bfs_upload *up, int64_t now,
                         char *msg, size_t msglen)
{
    sqlite3 *db = cat->w;
    sqlite3_stmt *st;
    int rc;
    int64_t schema_id = -1;
    const char *codec = bfs_codec_name(up->codec);
    /* The fingerprint is for a new schema's row and for messages only: the
     * common case, an upload to an existing partition, does not compute it. */
    char fp_hex[17];

    /* The partition, if it exists. */
    st = cat->ws[W_PART_LOOKUP];
    bind_text(st, 1, up->table);
    bind_text(st, 2, up->period);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        schema_id = sqlite3_column_int64(st, 0);
        const char *pcodec = (const char *)sqlite3_column_text(st, 1);
        const void *canon = sqlite3_column_blob(st, 2);
        size_t canon_len = (size_t)sqlite3_column_bytes(st, 2);
        int same = canon_len == up->canonical_len &&
                   (canon_len == 0 || memcmp(canon, up->canonical, canon_len) == 0);
        if (!same) {
            fingerprint_hex(up, fp_hex);
            set_msg(msg, msglen,
                    "schema differs from the one stored for %s/%s (fingerprint %s, upload has "
                    "%s)",
                    up->table, up->period,
                    sqlite3_column_text(st, 3) ? (const char *)sqlite3_column_text(st, 3) : "?",
                    fp_hex);
            sqlite3_reset(st);
            return -EINVAL;
        }
        if (!pcodec || strcmp(pcodec, codec) != 0) {
            set_msg(msg, msglen, "partition %s/%s stores codec %s, the upload has %s", up->table,
                    up->period, pcodec ? pcodec : "?", codec);
            sqlite3_reset(st);
            return -EAGAIN;
        }
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_OK)
        goto sql_error;

    if (schema_id < 0) {
        /* A new partition: find or insert the schema, then the partition. */
        st = cat->ws[W_SCHEMA_FIND];
        sqlite3_bind_text(st, 1, up->canonical, (int)up->canonical_len, SQLITE_STATIC);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            schema_id = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
        sqlite3_reset(st);
        if (rc != SQLITE_OK)
            goto sql_error;
        if (schema_id < 0) {
            st = cat->ws[W_SCHEMA_INS];
            sqlite3_bind_text(st, 1, up->canonical, (int)up->canonical_len, SQLITE_STATIC);
            fingerprint_hex(up, fp_hex);
            bind_text(st, 2, fp_hex);
            sqlite3_bind_text(st, 3, up->schema_json, (int)up->schema_len, SQLITE_STATIC);
            if ((rc = run(st)) != SQLITE_OK)
                goto sql_error;
            schema_id = sqlite3_last_insert_rowid(db);
        }
        uint8_t sync[16];
        struct bfs_buf hdr = {0};
        int e = bfs_schema_sync(up->canonical, up->canonical_len, sync);
        if (e == 0)
            e = bfs_ocf_layout_header(up->schema_json, up->schema_len, up->codec, sync, &hdr);
        if (e < 0) {
            bfs_buf_free(&hdr);
            set_msg(msg, msglen, "layout header for %s/%s: %s", up->table, up->period,
                    strerror(-e));
            return e == -ENOMEM ? -EIO : e;
        }
        st = cat->ws[W_PART_INS];
        bind_text(st, 1, up->table);
        bind_text(st, 2, up->period);
        sqlite3_bind_int64(st, 3, schema_id);
        bind_text(st, 4, codec);
        bind_blob(st, 5, sync, sizeof sync);
        sqlite3_bind_text(st, 6, up->schema_json, (int)up->schema_len, SQLITE_STATIC);
        rc = bind_blob(st, 7, hdr.data, hdr.len);
        sqlite3_bind_int64(st, 8, (int64_t)hdr.len);
        sqlite3_bind_int64(st, 9, now);
        if (rc == SQLITE_OK)
            rc = run(st);
        sqlite3_clear_bindings(st);
        bfs_buf_free(&hdr);
        if (rc != SQLITE_OK)
            goto sql_error;
    }

    st = cat->ws[W_ROW_INS];
    bind_text(st, 1, up->table);
    bind_text(st, 2, up->period);
    bind_text(st, 3, up->dataset);
    sqlite3_bind_int64(st, 4, schema_id);
    sqlite3_bind_int64(st, 5, (int64_t)up->records);
    sqlite3_bind_int64(st, 6, (int64_t)up->len);
    sqlite3_bind_int64(st, 7, now);
    if ((rc = run(st)) != SQLITE_OK)
        goto sql_error;
    st = cat->ws[W_DATA_INS];
    sqlite3_bind_int64(st, 1, sqlite3_last_insert_rowid(db));
    rc = bind_blob(st, 2, up->data, up->len);
    if (rc == SQLITE_OK)
        rc = run(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_OK)
        goto sql_error;
    return 0;

sql_error:
    set_msg(msg, msglen, "catalog: %s", sqlite3_errmsg(db));
    return sql_errno(rc);
}

/* One upload of a group: validated, then inserted under a savepoint. */
static int commit_one(struct bfs_catalog *cat, const struct bfs_upload *up, int64_t now, char *msg,
                      size_t msglen)
{
    if (!valid_name(up->table) || !valid_name(up->period) || !valid_name(up->dataset)) {
        set_msg(msg, msglen, "bad table, period or dataset name");
        return -EINVAL;
    }
    if (up->codec != BFS_CODEC_NULL && up->codec != BFS_CODEC_DEFLATE &&
        up->codec != BFS_CODEC_SNAPPY) {
        set_msg(msg, msglen, "unknown codec %d", (int)up->codec);
        return -EINVAL;
    }
    if (!up->canonical || !up->schema_json || (up->len && !up->data) || up->len > INT_MAX ||
        up->canonical_len > INT_MAX || up->schema_len > INT_MAX || !u64_ok(up->records)) {
        set_msg(msg, msglen, "bad upload (missing schema or data, or too large)");
        return -EINVAL;
    }
    sqlite3 *db = cat->w;
    int rc = run(cat->ws[W_SAVEPOINT]);
    if (rc != SQLITE_OK) {
        set_msg(msg, msglen, "catalog: savepoint: %s", sqlite3_errmsg(db));
        return sql_errno(rc);
    }
    int e = insert_upload(cat, up, now, msg, msglen);
    if (e < 0 && !sqlite3_get_autocommit(db) && run(cat->ws[W_ROLLBACK_TO]) != SQLITE_OK)
        bfs_error("catalog: rollback to savepoint: %s", sqlite3_errmsg(db));
    if (!sqlite3_get_autocommit(db)) {
        rc = run(cat->ws[W_RELEASE]);
        if (rc != SQLITE_OK && e == 0) {
            set_msg(msg, msglen, "catalog: release savepoint: %s", sqlite3_errmsg(db));
            e = sql_errno(rc);
        }
    }
    return e;
}

static void fail_all(struct request *r, int e, const char *what, const char *why)
{
    for (; r; r = r->next) {
        r->rc = e;
        set_msg(r->msg, r->msglen, "catalog: %s: %s", what, why);
    }
}

/* Commit a group of uploads in one transaction; set each request's rc. */
static void commit_group(struct bfs_catalog *cat, struct request *group)
{
    sqlite3 *db = cat->w;
    pthread_mutex_lock(&cat->wmu);
    int rc = run(cat->ws[W_BEGIN]);
    if (rc != SQLITE_OK) {
        fail_all(group, sql_errno(rc), "begin", sqlite3_errmsg(db));
        pthread_mutex_unlock(&cat->wmu);
        return;
    }
    int64_t now = (int64_t)time(NULL);
    for (struct request *r = group; r; r = r->next) {
        r->rc = commit_one(cat, r->up, now, r->msg, r->msglen);
        if (sqlite3_get_autocommit(db)) {
            /* The error rolled the whole transaction back (e.g. disk full):
             * nothing of the group is stored. */
            int e = r->rc < 0 ? r->rc : -EIO;
            char why[256];
            snprintf(why, sizeof why, "%s", r->msg && r->msglen ? r->msg : "rolled back");
            fail_all(group, e, "transaction rolled back", why);
            pthread_mutex_unlock(&cat->wmu);
            return;
        }
    }
    rc = run(cat->ws[W_COMMIT]);
    if (rc != SQLITE_OK) {
        int e = sql_errno(rc);
        char why[256];
        snprintf(why, sizeof why, "%s", sqlite3_errmsg(db));
        if (!sqlite3_get_autocommit(db) && run(cat->ws[W_ROLLBACK]) != SQLITE_OK)
            bfs_error("catalog: rollback: %s", sqlite3_errmsg(db));
        for (struct request *r = group; r; r = r->next)
            if (r->rc == 0) {
                r->rc = e;
                set_msg(r->msg, r->msglen, "catalog: commit: %s", why);
            }
    }
    pthread_mutex_unlock(&cat->wmu);
}

int bfs_catalog_commit_upload(struct bfs_catalog *cat, const struct bfs_upload *up, char *msg,
                              size_t msglen)
{
    struct request req = {.up = up, .msg = msg, .msglen = msglen};
    set_msg(msg, msglen, "%s", "");

    pthread_mutex_lock(&cat->qmu);
    /* req lives on this stack in the queue: a leader takes the whole queue
     * before it commits, and this function returns only once req is done. */
    *cat->qtail = &req;
    // cppcheck-suppress autoVariables
    cat->qtail = &req.next;
    while (!req.done) {
        if (cat->leading) {
            pthread_cond_wait(&cat->qcv, &cat->qmu);
            continue;
        }
        /* Lead: take the whole queue (ours included) and commit it. */
        cat->leading = 1;
        struct request *group = cat->qhead;
        cat->qhead = NULL;
        cat->qtail = &cat->qhead;
        pthread_mutex_unlock(&cat->qmu);

        commit_group(cat, group);

        pthread_mutex_lock(&cat->qmu);
        /* A follower may return as soon as it sees done (after we unlock):
         * read next before marking. */
        for (struct request *r = group, *next; r; r = next) {
            next = r->next;
            r->done = 1;
        }
        cat->groups++;
        cat->leading = 0;
        pthread_cond_broadcast(&cat->qcv);
    }
    pthread_mutex_unlock(&cat->qmu);
    return req.rc;
}

uint64_t bfs_catalog_commit_groups(struct bfs_catalog *cat)
{
    pthread_mutex_lock(&cat->qmu);
    uint64_t n = cat->groups;
    pthread_mutex_unlock(&cat->qmu);
    return n;
}

/* ---- listing ---- */

static int list_names(struct bfs_catalog *cat, enum rst which, const char *a, const char *b,
                      bfs_name_cb cb, void *ctx)
{
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[which];
    if (a)
        bind_text(st, 1, a);
    if (b)
        bind_text(st, 2, b);
    int ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (!name) {
            ret = -ENOMEM;
            break;
        }
        if ((ret = cb(ctx, name)) != 0)
            break;
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = sql_fail(c->db, rc, "list");
    sqlite3_reset(st);
    rrelease(cat, c);
    return ret;
}

int bfs_catalog_list_tables(struct bfs_catalog *cat, bfs_name_cb cb, void *ctx)
{
    return list_names(cat, R_TABLES, NULL, NULL, cb, ctx);
}

int bfs_catalog_list_periods(struct bfs_catalog *cat, const char *table, bfs_name_cb cb, void *ctx)
{
    return list_names(cat, R_PERIODS, table, NULL, cb, ctx);
}

int bfs_catalog_list_datasets(struct bfs_catalog *cat, const char *table, const char *period,
                              bfs_name_cb cb, void *ctx)
{
    return list_names(cat, R_DATASETS, table, period, cb, ctx);
}

int bfs_catalog_list_archives(struct bfs_catalog *cat, bfs_name_cb cb, void *ctx)
{
    return list_names(cat, R_ARCHIVES, NULL, NULL, cb, ctx);
}

static int exists(struct bfs_catalog *cat, enum rst which, const char *a, const char *b)
{
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[which];
    bind_text(st, 1, a);
    if (b)
        bind_text(st, 2, b);
    rc = sqlite3_step(st);
    int ret = rc == SQLITE_ROW    ? 0
              : rc == SQLITE_DONE ? -ENOENT
                                  : sql_fail(c->db, rc, "look a name up");
    sqlite3_reset(st);
    rrelease(cat, c);
    return ret;
}

int bfs_catalog_table_exists(struct bfs_catalog *cat, const char *table)
{
    return exists(cat, R_TABLE_EXISTS, table, NULL);
}

int bfs_catalog_period_exists(struct bfs_catalog *cat, const char *table, const char *period)
{
    return exists(cat, R_PERIOD_EXISTS, table, period);
}

/* ---- dataset views ---- */

void bfs_dataset_view_free(struct bfs_dataset_view *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        free(v->seg[i].key);
    free(v->seg);
    bfs_partition_free(&v->part);
    memset(v, 0, sizeof *v);
}

static struct bfs_segment *add_segment(struct bfs_dataset_view *v, size_t *cap)
{
    if (v->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct bfs_segment *s = realloc(v->seg, ncap * sizeof *s);
        if (!s)
            return NULL;
        v->seg = s;
        *cap = ncap;
    }
    struct bfs_segment *s = &v->seg[v->n++];
    memset(s, 0, sizeof *s);
    return s;
}

/* Fill v inside the read transaction of c. */
static int read_view(struct rconn *c, const char *table, const char *period, const char *dataset,
                     struct bfs_dataset_view *v)
{
    int rc = read_partition(c, table, period, &v->part);
    if (rc < 0)
        return rc;
    size_t cap = 0;
    uint64_t size = v->part.header_len;
    int64_t mtime = 0;
    for (int pass = 0; pass < 2; pass++) {
        int cold = pass == 0;
        sqlite3_stmt *st = c->st[cold ? R_COLD : R_HOT];
        bind_text(st, 1, table);
        bind_text(st, 2, period);
        bind_text(st, 3, dataset);
        int e = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            struct bfs_segment *s = add_segment(v, &cap);
            if (!s) {
                e = -ENOMEM;
                break;
            }
            s->id = sqlite3_column_int64(st, 0);
            if (cold) {
                s->kind = BFS_SEG_COLD;
                s->key = dup_n(sqlite3_column_text(st, 1), (size_t)sqlite3_column_bytes(st, 1));
                s->offset = (uint64_t)sqlite3_column_int64(st, 2);
                s->length = (uint64_t)sqlite3_column_int64(st, 3);
                s->records = (uint64_t)sqlite3_column_int64(st, 4);
                if (!s->key) {
                    e = -ENOMEM;
                    break;
                }
            } else {
                s->kind = BFS_SEG_HOT;
                s->length = (uint64_t)sqlite3_column_int64(st, 1);
                s->records = (uint64_t)sqlite3_column_int64(st, 2);
            }
            int64_t t = sqlite3_column_int64(st, cold ? 5 : 3);
            if (t > mtime)
                mtime = t;
            size += s->length;
        }
        if (e == 0 && rc != SQLITE_DONE)
            e = sql_fail(c->db, rc, "read a dataset");
        sqlite3_reset(st);
        if (e < 0)
            return e;
    }
    if (v->n == 0)
        return -ENOENT;
    v->size = size;
    v->mtime = mtime;
    return 0;
}

int bfs_catalog_dataset(struct bfs_catalog *cat, const char *table, const char *period,
                        const char *dataset, struct bfs_dataset_view *v)
{
    memset(v, 0, sizeof *v);
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    int src = run(c->st[R_BEGIN]);
    if (src != SQLITE_OK) {
        rc = sql_fail(c->db, src, "begin a read");
    } else {
        rc = read_view(c, table, period, dataset, v);
        src = run(c->st[R_COMMIT]);
        if (src != SQLITE_OK && rc == 0)
            rc = sql_fail(c->db, src, "end a read");
    }
    rrelease(cat, c);
    if (rc < 0)
        bfs_dataset_view_free(v);
    return rc;
}

int bfs_catalog_dataset_stat(struct bfs_catalog *cat, const char *table, const char *period,
                             const char *dataset, uint64_t *size, int64_t *mtime)
{
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    /* One statement: one consistent snapshot. */
    sqlite3_stmt *st = c->st[R_STAT];
    bind_text(st, 1, table);
    bind_text(st, 2, period);
    bind_text(st, 3, dataset);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int64_t cold_n = sqlite3_column_int64(st, 1), hot_n = sqlite3_column_int64(st, 4);
        int64_t tc = sqlite3_column_int64(st, 3), th = sqlite3_column_int64(st, 6);
        *size = (uint64_t)sqlite3_column_int64(st, 0) + (uint64_t)sqlite3_column_int64(st, 2) +
                (uint64_t)sqlite3_column_int64(st, 5);
        *mtime = tc > th ? tc : th;
        rc = cold_n + hot_n > 0 ? 0 : -ENOENT;
    } else if (rc == SQLITE_DONE) {
        rc = -ENOENT;
    } else {
        rc = sql_fail(c->db, rc, "stat a dataset");
    }
    sqlite3_reset(st);
    rrelease(cat, c);
    return rc;
}

int bfs_catalog_read_hot(struct bfs_catalog *cat, int64_t id, uint64_t off, void *buf, size_t len)
{
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_blob *b = NULL;
    int src = sqlite3_blob_open(c->db, "main", "buffer_data", "data", id, 0, &b);
    if (src != SQLITE_OK) {
        /* A missing row is SQLITE_ERROR with "no such rowid: N". */
        if ((src & 0xff) == SQLITE_ERROR &&
            strncmp(sqlite3_errmsg(c->db), "no such rowid", 13) == 0)
            rc = -ENOENT;
        else
            rc = sql_fail(c->db, src, "open a buffer row");
    } else {
        uint64_t size = (uint64_t)sqlite3_blob_bytes(b);
        if (off > size || len > size - off) {
            bfs_error("catalog: read of %zu bytes at %" PRIu64 " of buffer row %" PRId64
                      " (%" PRIu64 " bytes)",
                      len, off, id, size);
            rc = -EINVAL;
        } else if (len > 0 && (src = sqlite3_blob_read(b, buf, (int)len, (int)off)) != SQLITE_OK) {
            rc = sql_fail(c->db, src, "read a buffer row");
        }
    }
    if (b)
        sqlite3_blob_close(b);
    rrelease(cat, c);
    return rc;
}

int bfs_catalog_counts(struct bfs_catalog *cat, struct bfs_catalog_counts *out)
{
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_COUNTS];
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->buffer_uploads = (uint64_t)sqlite3_column_int64(st, 0);
        out->buffer_bytes = (uint64_t)sqlite3_column_int64(st, 1);
        out->archived_files = (uint64_t)sqlite3_column_int64(st, 2);
        rc = 0;
    } else {
        rc = sql_fail(c->db, rc == SQLITE_DONE ? SQLITE_CORRUPT : rc, "counts");
    }
    sqlite3_reset(st);
    rrelease(cat, c);
    return rc;
}

/* ---- rolls ---- */

int bfs_catalog_roll_pending(struct bfs_catalog *cat, char roll_id[BFS_ROLL_ID_MAX])
{
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_PENDING];
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (id && strlen(id) < BFS_ROLL_ID_MAX) {
            memcpy(roll_id, id, strlen(id) + 1);
            rc = 0;
        } else {
            bfs_error("catalog: the pending roll has a bad id");
            rc = -EIO;
        }
    } else if (rc == SQLITE_DONE) {
        rc = -ENOENT;
    } else {
        rc = sql_fail(c->db, rc, "find the pending roll");
    }
    sqlite3_reset(st);
    rrelease(cat, c);
    return rc;
}

/* Under wmu, in a transaction: the pending roll's id into id (or ""). */
static int pending_locked(struct bfs_catalog *cat, char id[BFS_ROLL_ID_MAX])
{
    sqlite3_stmt *st = cat->ws[W_PENDING];
    int rc = sqlite3_step(st);
    id[0] = '\0';
    if (rc == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 0);
        snprintf(id, BFS_ROLL_ID_MAX, "%s", s ? s : "?");
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int bfs_catalog_roll_claim(struct bfs_catalog *cat, char roll_id[BFS_ROLL_ID_MAX], uint64_t *rows,
                           uint64_t *bytes)
{
    sqlite3 *db = cat->w;
    int e = 0;
    pthread_mutex_lock(&cat->wmu);
    int rc = run(cat->ws[W_BEGIN]);
    if (rc != SQLITE_OK) {
        e = sql_fail(db, rc, "begin a claim");
        goto out;
    }
    char pending[BFS_ROLL_ID_MAX];
    if ((rc = pending_locked(cat, pending)) != SQLITE_OK)
        goto sql_error;
    if (pending[0]) {
        bfs_debug("catalog: claim refused: roll %s is pending", pending);
        e = -EBUSY;
        goto rollback;
    }
    /* No roll is pending, so every buffered row is unclaimed: the claim is
     * the id range [min, max] (later rows get larger ids). */
    sqlite3_stmt *st = cat->ws[W_UNCLAIMED];
    rc = sqlite3_step(st);
    int64_t first = 0, last = 0, n = 0, total = 0;
    int empty = 1;
    if (rc == SQLITE_ROW) {
        empty = sqlite3_column_type(st, 0) == SQLITE_NULL;
        first = sqlite3_column_int64(st, 0);
        last = sqlite3_column_int64(st, 1);
        n = sqlite3_column_int64(st, 2);
        total = sqlite3_column_int64(st, 3);
        rc = SQLITE_OK;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_OK)
        goto sql_error;
    if (empty != (n == 0) || n < 0 || total < 0 || (!empty && n > last - first + 1)) {
        bfs_error("catalog: buffer totals (%" PRId64 " rows) do not match rows %" PRId64
                  "..%" PRId64,
                  n, first, last);
        e = -EIO;
        goto rollback;
    }
    if (empty) {
        e = -ENODATA;
        goto rollback;
    }
    time_t now = time(NULL);
    struct tm tm;
    char stamp[32];
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    char id[BFS_ROLL_ID_MAX];
    snprintf(id, sizeof id, "%s-%" PRId64, stamp, first);

    st = cat->ws[W_ROLL_INS];
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, (int64_t)now);
    sqlite3_bind_int64(st, 3, first);
    sqlite3_bind_int64(st, 4, last);
    sqlite3_bind_int64(st, 5, n);
    sqlite3_bind_int64(st, 6, total);
    if ((rc = run(st)) != SQLITE_OK)
        goto sql_error;
    if ((rc = run(cat->ws[W_COMMIT])) != SQLITE_OK)
        goto sql_error;
    memcpy(roll_id, id, strlen(id) + 1);
    *rows = (uint64_t)n;
    *bytes = (uint64_t)total;
    goto out;

sql_error:
    e = sql_fail(db, rc, "claim");
rollback:
    if (!sqlite3_get_autocommit(db) && run(cat->ws[W_ROLLBACK]) != SQLITE_OK)
        bfs_error("catalog: rollback: %s", sqlite3_errmsg(db));
out:
    rc = sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
    if (rc != SQLITE_OK && e == 0)
        e = sql_fail(db, rc, "foreign keys back on after a roll commit");
    pthread_mutex_unlock(&cat->wmu);
    return e;
}

int bfs_catalog_purge(struct bfs_catalog *cat, int rows)
{
    assert(rows > 0);
    sqlite3 *db = cat->w;
    pthread_mutex_lock(&cat->wmu);
    sqlite3_stmt *st = cat->ws[W_PURGE];
    sqlite3_bind_int(st, 1, rows);
    int rc = run(st); /* its own transaction (autocommit) */
    int e = rc == SQLITE_OK ? sqlite3_changes(db) : sql_fail(db, rc, "purge rolled blobs");
    pthread_mutex_unlock(&cat->wmu);
    return e;
}

struct page_row {
    int64_t id;
    uint64_t records, length;
    char table[BFS_NAME_MAX + 1], period[BFS_NAME_MAX + 1], dataset[BFS_NAME_MAX + 1];
};

static int copy_name(char dst[BFS_NAME_MAX + 1], sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    int n = sqlite3_column_bytes(st, col);
    if (!s || n <= 0 || n > BFS_NAME_MAX)
        return -EIO;
    memcpy(dst, s, (size_t)n + 1);
    return 0;
}

/* The id range [lo, hi] of roll_id's rows: 0, -ENOENT or -errno. */
static int roll_range(struct bfs_catalog *cat, const char *roll_id, int64_t *lo, int64_t *hi)
{
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_ROLL_GET];
    bind_text(st, 1, roll_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *lo = sqlite3_column_int64(st, 0);
        *hi = sqlite3_column_int64(st, 1);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : sql_fail(c->db, rc, "look a roll up");
    }
    sqlite3_reset(st);
    rrelease(cat, c);
    return rc;
}

/* Read up to ROLL_PAGE rows with ids in [lo, hi] that come after *last in
 * (table, period, dataset, id) order into rows. The number read or -errno. */
static int roll_page(struct bfs_catalog *cat, int64_t lo, int64_t hi, const struct page_row *last,
                     struct page_row *rows)
{
    struct rconn *c;
    int rc = racquire(cat, &c);
    if (rc < 0)
        return rc;
    int n = 0;
    for (int q = 0; q < 2 && n >= 0 && n < ROLL_PAGE; q++) {
        sqlite3_stmt *st = c->st[q == 0 ? R_ROLL_SAME : R_ROLL_NEXT];
        sqlite3_bind_int64(st, 1, hi);
        bind_text(st, 2, last->table);
        bind_text(st, 3, last->period);
        bind_text(st, 4, last->dataset);
        if (q == 0)
            sqlite3_bind_int64(st, 5, last->id);
        sqlite3_bind_int64(st, 6, lo);
        sqlite3_bind_int(st, 7, ROLL_PAGE - n);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            assert(n < ROLL_PAGE);
            struct page_row *r = &rows[n];
            r->id = sqlite3_column_int64(st, 0);
            r->records = (uint64_t)sqlite3_column_int64(st, 4);
            r->length = (uint64_t)sqlite3_column_int64(st, 5);
            if (copy_name(r->table, st, 1) < 0 || copy_name(r->period, st, 2) < 0 ||
                copy_name(r->dataset, st, 3) < 0) {
                bfs_error("catalog: buffer row %" PRId64 " has a bad name", r->id);
                n = -EIO;
                break;
            }
            n++;
        }
        if (n >= 0 && rc != SQLITE_DONE)
            n = sql_fail(c->db, rc, "read the roll's rows");
        sqlite3_reset(st);
    }
    rrelease(cat, c);
    return n;
}

int bfs_catalog_roll_rows(struct bfs_catalog *cat, const char *roll_id,
                          int (*cb)(void *ctx, const struct bfs_roll_row *row), void *ctx)
{
    int64_t lo, hi;
    int ret = roll_range(cat, roll_id, &lo, &hi);
    if (ret < 0)
        return ret;
    struct page_row *rows = malloc(ROLL_PAGE * sizeof *rows);
    if (!rows)
        return -ENOMEM;
    /* Names are never empty, so ("", "", "", 0) sorts before every row. */
    struct page_row last = {.id = 0};
    for (;;) {
        int n = roll_page(cat, lo, hi, &last, rows);
        if (n < 0) {
            ret = n;
            break;
        }
        for (int i = 0; i < n && ret == 0; i++) {
            struct bfs_roll_row row = {
                .id = rows[i].id,
                .table = rows[i].table,
                .period = rows[i].period,
                .dataset = rows[i].dataset,
                .records = rows[i].records,
                .length = rows[i].length,
            };
            ret = cb(ctx, &row);
        }
        if (ret != 0 || n < ROLL_PAGE)
            break;
        last = rows[n - 1];
    }
    free(rows);
    return ret;
}

/* Check the shape of a roll commit's records before touching the database. */
static int check_records(const char *roll_id, const struct bfs_archive_rec *ar, size_t n_ar,
                         const struct bfs_index_rec *ix, size_t n_ix)
{
    size_t next = 0;
    for (size_t i = 0; i < n_ar; i++) {
        const struct bfs_archive_rec *a = &ar[i];
        if (!a->key || !a->key[0] || !valid_name(a->table) || !valid_name(a->period) ||
            !u64_ok(a->size) || a->header_length > a->size || a->first_index != next ||
            a->n_index > n_ix - next) {
            bfs_error("catalog: roll %s: bad archive record %zu", roll_id, i);
            return -EINVAL;
        }
        for (size_t j = a->first_index; j < a->first_index + a->n_index; j++) {
            const struct bfs_index_rec *x = &ix[j];
            if (!valid_name(x->dataset) || x->start_byte < a->header_length ||
                x->start_byte > a->size || x->length > a->size - x->start_byte ||
                !u64_ok(x->records)) {
                bfs_error("catalog: roll %s: bad index record %zu of %s", roll_id, j, a->key);
                return -EINVAL;
            }
        }
        next += a->n_index;
    }
    if (next != n_ix) {
        bfs_error("catalog: roll %s: %zu index records, archives cover %zu", roll_id, n_ix, next);
        return -EINVAL;
    }
    return 0;
}

int bfs_catalog_roll_commit(struct bfs_catalog *cat, const char *roll_id,
                            const struct bfs_archive_rec *archives, size_t n_archives,
                            const struct bfs_index_rec *index, size_t n_index)
{
    int e = check_records(roll_id, archives, n_archives, index, n_index);
    if (e < 0)
        return e;
    sqlite3 *db = cat->w;
    sqlite3_stmt *st;
    pthread_mutex_lock(&cat->wmu);
    int rc = sqlite3_exec(db, "PRAGMA foreign_keys = OFF", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        e = sql_fail(db, rc, "foreign keys off for a roll commit");
        goto out;
    }
    rc = run(cat->ws[W_BEGIN]);
    if (rc != SQLITE_OK) {
        e = sql_fail(db, rc, "begin a roll commit");
        goto out;
    }
    st = cat->ws[W_ROLL_GET];
    bind_text(st, 1, roll_id);
    rc = sqlite3_step(st);
    int committed = rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL;
    int64_t lo = rc == SQLITE_ROW ? sqlite3_column_int64(st, 1) : 0;
    int64_t hi = rc == SQLITE_ROW ? sqlite3_column_int64(st, 2) : 0;
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        bfs_error("catalog: commit of roll %s: no such roll", roll_id);
        e = -ENOENT;
        goto rollback;
    }
    if (rc != SQLITE_ROW)
        goto sql_error;
    if (committed) {
        bfs_error("catalog: commit of roll %s: already committed", roll_id);
        e = -EALREADY;
        goto rollback;
    }

    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < n_archives; i++) {
        const struct bfs_archive_rec *a = &archives[i];
        st = cat->ws[W_ARCH_INS];
        bind_text(st, 1, a->key);
        bind_text(st, 2, a->table);
        bind_text(st, 3, a->period);
        sqlite3_bind_int64(st, 4, (int64_t)a->size);
        sqlite3_bind_int64(st, 5, (int64_t)a->header_length);
        bind_text(st, 6, roll_id);
        sqlite3_bind_int64(st, 7, (int64_t)i);
        sqlite3_bind_int64(st, 8, now);
        if ((rc = run(st)) != SQLITE_OK)
            goto sql_error;
        int64_t file_id = sqlite3_last_insert_rowid(db);
        st = cat->ws[W_IDX_INS];
        for (size_t j = a->first_index; j < a->first_index + a->n_index; j++) {
            const struct bfs_index_rec *x = &index[j];
            bind_text(st, 1, x->dataset);
            bind_text(st, 2, a->table);
            bind_text(st, 3, a->period);
            sqlite3_bind_int64(st, 4, file_id);
            sqlite3_bind_int64(st, 5, (int64_t)x->start_byte);
            sqlite3_bind_int64(st, 6, (int64_t)x->length);
            sqlite3_bind_int64(st, 7, (int64_t)x->records);
            sqlite3_bind_int64(st, 8, now);
            sqlite3_bind_int64(st, 9, lo);
            sqlite3_bind_int64(st, 10, hi);
            if ((rc = run(st)) != SQLITE_OK)
                goto sql_error;
        }
    }
    /* Every claimed row must be covered: per (table, period, dataset), the
     * index rows' bytes and records equal the claimed rows'. */
    st = cat->ws[W_ROLL_CHECK];
    bind_text(st, 1, roll_id);
    sqlite3_bind_int64(st, 2, lo);
    sqlite3_bind_int64(st, 3, hi);
    rc = sqlite3_step(st);
    int64_t diff = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        goto sql_error;
    if (diff != 0) {
        bfs_error("catalog: commit of roll %s: the index does not match the claimed rows "
                  "(%" PRId64 " datasets differ)",
                  roll_id, diff);
        e = -EINVAL;
        goto rollback;
    }
    /* The rows only: their blobs stay, orphaned (foreign keys are off for
     * this transaction), until bfs_catalog_purge. Nothing reads a blob
     * without its row but a reader that resolved the row before this commit,
     * and it gets the same bytes the archive now holds. */
    st = cat->ws[W_DEL_ROWS];
    sqlite3_bind_int64(st, 1, lo);
    sqlite3_bind_int64(st, 2, hi);
    if ((rc = run(st)) != SQLITE_OK)
        goto sql_error;
    st = cat->ws[W_ROLL_DONE];
    bind_text(st, 1, roll_id);
    sqlite3_bind_int64(st, 2, now);
    if ((rc = run(st)) != SQLITE_OK)
        goto sql_error;
    if ((rc = run(cat->ws[W_COMMIT])) != SQLITE_OK)
        goto sql_error;
    goto out;

sql_error:
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        bfs_error("catalog: commit of roll %s: %s", roll_id, sqlite3_errmsg(db));
        e = -EINVAL;
    } else {
        e = sql_fail(db, rc, "roll commit");
    }
rollback:
    if (!sqlite3_get_autocommit(db) && run(cat->ws[W_ROLLBACK]) != SQLITE_OK)
        bfs_error("catalog: rollback: %s", sqlite3_errmsg(db));
out:
    pthread_mutex_unlock(&cat->wmu);
    return e;
}
