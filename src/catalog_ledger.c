/* catalog_ledger.c - the store's log in the catalog: what has been read of it
 * (log_pos, the epochs of nodes) and the application of its roll entries
 * (catalog.h, "The store's log"; ledger.c reads the log and the manifests).
 *
 * An applied roll is a rolls row (committed, with node, log_seq, epoch), its
 * archived_files rows (seq = position in the manifest) and block_indexes
 * rows, exactly as the manifest lists them, so a catalog rebuilt from the
 * store holds the same rows in the same order (archived_files.id follows log
 * order, which is the order of cold segments in a dataset file). The roll of
 * this catalog's own pending claim is applied the same way, from the local
 * manifest file: that transaction is the roll's local commit, and also deletes
 * the claimed buffer rows after checking the index covers them exactly. A
 * roll this catalog committed before the log existed is put into the log by
 * adopt.c; applying its entry stamps the rows it has (ADOPT_STAMP below)
 * instead of inserting them again.
 */
#include <inttypes.h>
#include <time.h>

#include "battlefs/buf.h"
#include "battlefs/manifest.h"
#include "battlefs/store.h"
#include "catalog_int.h"

int bfs_catalog_ledger_state(struct bfs_catalog *cat, int64_t *log_pos,
                             char state_id[BFS_STATE_ID_MAX])
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_LEDGER];
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 1);
        if (log_pos)
            *log_pos = sqlite3_column_int64(st, 0);
        if (state_id)
            snprintf(state_id, BFS_STATE_ID_MAX, "%s", id ? id : "");
        rc = id && strlen(id) == BFS_STATE_ID_MAX - 1 ? 0 : -EIO;
        if (rc < 0)
            bfs_error("catalog: the ledger row has a bad state id");
    } else {
        rc = rc == SQLITE_DONE ? -EIO : sql_fail(c->db, rc, "read the ledger");
        if (rc == -EIO)
            bfs_error("catalog: the ledger row is missing");
    }
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

int bfs_catalog_node_epoch(struct bfs_catalog *cat, const char *node, int64_t *epoch)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_NODE_EPOCH];
    bind_text(st, 1, node);
    rc = sqlite3_step(st);
    *epoch = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_fail(c->db, rc, "read a node's epoch");
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

int bfs_catalog_roll_committed(struct bfs_catalog *cat, const char *roll_id, int64_t *seq)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_ROLL_STATE];
    bind_text(st, 1, roll_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int done = sqlite3_column_int(st, 0);
        if (seq)
            *seq = sqlite3_column_int64(st, 1);
        rc = done ? 1 : 0;
    } else {
        rc = rc == SQLITE_DONE ? 0 : sql_fail(c->db, rc, "look a roll up");
    }
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

/* In a write transaction: 0 if seq is the next log position, else -ESTALE. */
static int check_next(struct bfs_catalog *cat, int64_t seq)
{
    sqlite3_stmt *st = cat->ws[W_LEDGER_GET];
    int rc = sqlite3_step(st);
    int64_t pos = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? -EIO : sql_fail(cat->w, rc, "read the ledger");
    if (seq != pos + 1) {
        bfs_error("catalog: log entry %" PRId64 " applied after %" PRId64, seq, pos);
        return -ESTALE;
    }
    return 0;
}

/* In a write transaction: log_pos = pos. */
static int set_log_pos(struct bfs_catalog *cat, int64_t pos)
{
    sqlite3_stmt *st = cat->ws[W_LEDGER_SET];
    sqlite3_bind_int64(st, 1, pos);
    int rc = run(st);
    return rc == SQLITE_OK ? 0 : sql_fail(cat->w, rc, "set the log position");
}

/* In a write transaction: node's epoch at least epoch. */
static int raise_epoch(struct bfs_catalog *cat, const char *node, int64_t epoch)
{
    sqlite3_stmt *st = cat->ws[W_NODE_EPOCH];
    bind_text(st, 1, node);
    sqlite3_bind_int64(st, 2, epoch);
    int rc = run(st);
    return rc == SQLITE_OK ? 0 : sql_fail(cat->w, rc, "record a node's epoch");
}

/* In a write transaction: log_pos = seq, node's epoch at least epoch. */
static int advance(struct bfs_catalog *cat, int64_t seq, const char *node, int64_t epoch)
{
    int e = set_log_pos(cat, seq);
    return e == 0 && node ? raise_epoch(cat, node, epoch) : e;
}

int bfs_catalog_log_skip(struct bfs_catalog *cat, int64_t seq, const char *node, int64_t epoch)
{
    struct wtx tx = {.what = "log skip"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return e;
    e = check_next(cat, seq);
    if (e == 0)
        e = advance(cat, seq, node, epoch);
    return bfs_cat_wtx_end(cat, &tx, e);
}

/* A roll entry being applied: the transaction of bfs_catalog_apply_begin,
 * or one roll of a checkpoint being loaded (struct bfs_cat_ckpt). */
struct bfs_cat_apply {
    struct bfs_catalog *cat;
    struct wtx tx;
    struct bfs_log_roll r;
    char node[BFS_NODE_MAX + 1];
    char roll_id[BFS_ROLL_ID_MAX];
    int own;         /* the roll is this catalog's pending claim */
    int adopt;       /* ADOPT_*: the roll was committed here before the log */
    int64_t lo, hi;  /* its claimed rows */
    int64_t logged;  /* -EALREADY: the log position it was committed at (0: before the log) */
    int64_t file_id; /* the last archive inserted, or 0 */
    uint64_t file_size, file_header;
    uint64_t file_bytes; /* the lengths of its index rows applied */
    int file_dirty;      /* it is marked dirty already (a row of it was erased) */
    char table[BFS_NAME_MAX + 1], period[BFS_NAME_MAX + 1];
    char key[BFS_STORE_KEY_MAX + 1]; /* the last archive's */
    int64_t n_arch;
    uint64_t bytes, n_index;
    /* a compaction: its partition, whether it is void (and since when a
     * savepoint undoes what it did), whether its retired archives were
     * checked to be all the partition's */
    char c_table[BFS_NAME_MAX + 1], c_period[BFS_NAME_MAX + 1];
    int voided, savepoint, left_checked;
    uint64_t retired;
    /* erasures after the entry's base exist: index rows are checked */
    int any_erasure;
    uint64_t dropped; /* bytes of index rows dropped by them */
    /* loading a checkpoint: it holds only the live archives and rows (a
     * compaction retired the others, an erasure removed some), so a roll's
     * bytes are not its index's */
    int ckpt;
    int idx_drop; /* this transaction dropped block_indexes' indexes (bulk_drop_locked) */
};

/* A roll committed here before the store's log (battlefs before issue 11:
 * a rolls row with no log position, its archives at ord 0) whose entry is
 * being applied: by its log entry, its rows here are the ones the entry's
 * manifest was written from (adopt.c), so they stay and are stamped with the
 * entry (ADOPT_STAMP: the archives' SHA-256, schema, codec, versions, their
 * place at the entry's position, the rolls row's node, log position and
 * epoch); by a checkpoint, which holds what the log made of it since (a
 * compaction may have retired its archives, an erasure some rows), its rows
 * are replaced by the checkpoint's (ADOPT_REPLACE). */
enum { ADOPT_NONE = 0, ADOPT_STAMP = 1, ADOPT_REPLACE = 2 };

/* In a's transaction, during bfs_catalog_bulk with drop_indexes and
 * block_indexes empty (a new catalog being loaded from the store's log):
 * drop its secondary indexes, so that each row is appended instead of
 * inserted all over them; bfs_catalog_bulk's end (or the next open, after a
 * crash) makes them again, each with one sort. Nothing reads the catalog
 * meanwhile: the rebuild runs before the mount serves; entries that look
 * rows up by dataset or archive (compactions, erasures) make them first
 * (bfs_catalog_bulk_indexes). 0 or -errno. */
static int bulk_drop_locked(struct bfs_cat_apply *a)
{
    struct bfs_catalog *cat = a->cat;
    if (!cat->bulk || cat->idx_dropped)
        return 0;
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(cat->w, "SELECT NOT EXISTS (SELECT 1 FROM block_indexes)", -1, &st,
                                NULL);
    int empty = 0;
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        empty = rc == SQLITE_ROW && sqlite3_column_int(st, 0);
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
        sqlite3_finalize(st);
    }
    if (rc == SQLITE_OK && empty)
        rc = sqlite3_exec(cat->w,
                          "DROP INDEX IF EXISTS block_indexes_dataset;"
                          "DROP INDEX IF EXISTS block_indexes_file;",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(cat->w, rc, "bulk load: drop block_indexes' indexes");
    if (empty)
        cat->idx_dropped = a->idx_drop = 1;
    return 0;
}

/* a's transaction is rolled back: a drop it made is undone. */
static void bulk_undone(struct bfs_cat_apply *a)
{
    if (a->idx_drop)
        a->cat->idx_dropped = a->idx_drop = 0;
}

int bfs_cat_make_indexes_locked(struct bfs_catalog *cat)
{
    int rc = sqlite3_exec(cat->w, BI_INDEXES_MAKE, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sql_fail(cat->w, rc, "make block_indexes' indexes");
}

/* The pending claim roll_id (own: 1, with its rows), a committed roll
 * (-EALREADY, logged = its log_seq or 0), or neither (0). */
static int roll_state_locked(struct bfs_cat_apply *a)
{
    sqlite3_stmt *st = a->cat->ws[W_ROLL_GET];
    bind_text(st, 1, a->roll_id);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
            ret = -EALREADY;
            a->logged = sqlite3_column_int64(st, 3);
        } else {
            a->own = 1;
            a->lo = sqlite3_column_int64(st, 1);
            a->hi = sqlite3_column_int64(st, 2);
        }
    } else if (rc != SQLITE_DONE) {
        ret = sql_fail(a->cat->w, rc, "look a roll up");
    }
    sqlite3_reset(st);
    return ret;
}

static int log_roll_valid(const struct bfs_log_roll *r)
{
    int kind_ok = r->kind == BFS_LOG_ROLL ||
                  (r->kind == BFS_LOG_COMPACT && r->table && r->period && valid_name(r->table) &&
                   valid_name(r->period) && r->base >= 1 && r->base < r->seq);
    return kind_ok && bfs_node_valid(r->node) && r->roll_id &&
           strlen(r->roll_id) < BFS_ROLL_ID_MAX && valid_name(r->roll_id) && r->seq >= 1 &&
           r->epoch >= 0 && u64_ok(r->rows) && u64_ok(r->bytes) && r->base >= 0;
}

/* A rolls row for r (committed at its log position; void: a compaction that
 * applied nothing). */
static int roll_row_locked(struct bfs_cat_apply *a, const struct bfs_log_roll *r, int voided)
{
    sqlite3_stmt *st = a->cat->ws[W_ROLL_ADD];
    bind_text(st, 1, a->roll_id);
    sqlite3_bind_int64(st, 2, r->claimed_at);
    sqlite3_bind_int64(st, 3, r->committed_at);
    sqlite3_bind_int64(st, 4, (int64_t)r->rows);
    sqlite3_bind_int64(st, 5, (int64_t)r->bytes);
    bind_text(st, 6, a->node);
    sqlite3_bind_int64(st, 7, r->seq);
    sqlite3_bind_int64(st, 8, r->epoch);
    sqlite3_bind_int(st, 9, (int)r->kind);
    sqlite3_bind_int64(st, 10, r->base);
    if (r->kind == BFS_LOG_COMPACT) {
        bind_text(st, 11, a->c_table);
        bind_text(st, 12, a->c_period);
    } else {
        sqlite3_bind_null(st, 11);
        sqlite3_bind_null(st, 12);
    }
    sqlite3_bind_int(st, 13, voided);
    int rc = run(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_OK ? 0 : sql_fail(a->cat->w, rc, "add a roll");
}

/* In the transaction: the roll being applied was committed here before the
 * log (see ADOPT_*). Its rolls row stays (the end stamps it); by a
 * checkpoint, its archives and index rows go: the checkpoint's come. */
static int adopt_begin_locked(struct bfs_cat_apply *a)
{
    a->adopt = a->ckpt ? ADOPT_REPLACE : ADOPT_STAMP;
    if (a->adopt == ADOPT_STAMP)
        return 0;
    static const enum wst drop[] = {W_ADOPT_DROP_IDX, W_ADOPT_DROP_ARCH};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++) {
        sqlite3_stmt *st = a->cat->ws[drop[i]];
        bind_text(st, 1, a->roll_id);
        int rc = run(st);
        if (rc != SQLITE_OK)
            return sql_fail(a->cat->w, rc, "replace the rows of a roll from before the log");
    }
    return 0;
}

/* In the transaction: start applying the valid roll r (a's roll before is
 * forgotten): its rolls row, unless it is the pending claim (own: committed
 * at its end). 0, -EALREADY (committed here already: nothing done), -errno. */
static int roll_begin_locked(struct bfs_cat_apply *a, const struct bfs_log_roll *r)
{
    struct bfs_catalog *cat = a->cat;
    a->r = *r;
    snprintf(a->node, sizeof a->node, "%s", r->node);
    snprintf(a->roll_id, sizeof a->roll_id, "%s", r->roll_id);
    a->r.node = a->node;
    a->r.roll_id = a->roll_id;
    a->own = 0;
    a->adopt = ADOPT_NONE;
    a->lo = a->hi = a->logged = 0;
    a->file_id = 0;
    a->file_size = a->file_header = a->file_bytes = 0;
    a->file_dirty = 0;
    a->table[0] = a->period[0] = '\0';
    a->n_arch = 0;
    a->bytes = a->n_index = 0;
    a->key[0] = '\0';
    a->voided = a->left_checked = 0;
    a->retired = a->dropped = 0;
    a->any_erasure = 0;
    snprintf(a->c_table, sizeof a->c_table, "%s", r->kind == BFS_LOG_COMPACT ? r->table : "");
    snprintf(a->c_period, sizeof a->c_period, "%s", r->kind == BFS_LOG_COMPACT ? r->period : "");
    a->r.table = a->c_table;
    a->r.period = a->c_period;
    if (r->base < INT64_MAX) {
        sqlite3_stmt *st = cat->ws[W_ANY_ERASURE];
        sqlite3_bind_int64(st, 1, r->base);
        int rc = sqlite3_step(st);
        a->any_erasure = rc == SQLITE_ROW && sqlite3_column_int(st, 0);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            return sql_fail(cat->w, rc, "look erasures up");
    }
    int e = roll_state_locked(a);
    if (e == -EALREADY && a->logged == 0 && r->kind == BFS_LOG_ROLL)
        return adopt_begin_locked(a);
    if (e < 0 || a->own)
        return e;
    return roll_row_locked(a, r, 0);
}

int bfs_catalog_apply_begin(struct bfs_catalog *cat, const struct bfs_log_roll *r,
                            struct bfs_cat_apply **out)
{
    if (!log_roll_valid(r))
        return -EINVAL;
    struct bfs_cat_apply *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->cat = cat;
    /* Foreign keys off: an own roll deletes its rows and leaves their blobs
     * to bfs_catalog_purge. */
    a->tx = (struct wtx){.flags = WTX_FK_OFF, .what = "log apply"};
    int e = bfs_cat_wtx_begin(cat, &a->tx);
    if (e < 0) {
        free(a);
        return e;
    }
    e = check_next(cat, r->seq);
    /* A compaction may turn out void: a savepoint undoes what it did. */
    if (e == 0 && r->kind == BFS_LOG_COMPACT) {
        int rc = run(cat->ws[W_SAVEPOINT]);
        if (rc != SQLITE_OK)
            e = sql_fail(cat->w, rc, "savepoint");
        else
            a->savepoint = 1;
    }
    if (e == 0)
        e = roll_begin_locked(a, r);
    if (e == 0 && r->kind == BFS_LOG_ROLL && !a->own && !a->adopt)
        e = bulk_drop_locked(a);
    if (e < 0) {
        bulk_undone(a);
        bfs_cat_wtx_end(cat, &a->tx, e);
        free(a);
        return e;
    }
    *out = a;
    return 0;
}

int bfs_catalog_apply_void(const struct bfs_cat_apply *a)
{
    return a->voided;
}

/* A compaction whose retired archives are not every live archive of its
 * partition up to its upto is void. */
static int check_left_locked(struct bfs_cat_apply *a, struct bfs_err *err)
{
    if (a->r.kind != BFS_LOG_COMPACT || a->left_checked || a->voided)
        return 0;
    a->left_checked = 1;
    sqlite3_stmt *st = a->cat->ws[W_RETIRE_LEFT];
    bind_text(st, 1, a->c_table);
    bind_text(st, 2, a->c_period);
    sqlite3_bind_int64(st, 3, a->r.base);
    bind_text(st, 4, a->roll_id);
    int rc = sqlite3_step(st);
    int64_t left = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return bfs_err_set(err, sql_fail(a->cat->w, rc, "count archives"), "catalog: %s",
                           sqlite3_errmsg(a->cat->w));
    if (left > 0) {
        bfs_warn("log %" PRId64 ": compaction %s of %s/%s leaves %" PRId64
                 " archives of its partition: void (another compaction came first)",
                 a->r.seq, a->roll_id, a->c_table, a->c_period, left);
        a->voided = 1;
    }
    return 0;
}

int bfs_catalog_apply_retire(struct bfs_cat_apply *a, const char *key, struct bfs_err *err)
{
    struct bfs_catalog *cat = a->cat;
    if (a->r.kind != BFS_LOG_COMPACT || a->n_arch > 0)
        return bfs_err_set(err, -EINVAL, "retire %s: not before a compaction's archives", key);
    if (a->voided)
        return 0;
    sqlite3_stmt *st = cat->ws[W_RETIRE_FIND];
    bind_text(st, 1, key);
    bind_text(st, 2, a->c_table);
    bind_text(st, 3, a->c_period);
    sqlite3_bind_int64(st, 4, a->r.base);
    int rc = sqlite3_step(st);
    int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    int dirty = rc == SQLITE_ROW ? sqlite3_column_int(st, 1) : 0;
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        bfs_warn("log %" PRId64 ": compaction %s retires %s, which is not live here: void "
                 "(another compaction came first)",
                 a->r.seq, a->roll_id, key);
        a->voided = 1;
        return 0;
    }
    if (rc != SQLITE_ROW)
        goto sql_error;
    st = cat->ws[W_RETIRE_IDX];
    sqlite3_bind_int64(st, 1, id);
    if ((rc = run(st)) != SQLITE_OK)
        goto sql_error;
    st = cat->ws[W_RETIRE_ARCH];
    sqlite3_bind_int64(st, 1, id);
    if ((rc = run(st)) != SQLITE_OK)
        goto sql_error;
    if (a->r.gc) {
        st = cat->ws[W_GC_INS];
        bind_text(st, 1, key);
        sqlite3_bind_int64(st, 2, a->r.committed_at);
        sqlite3_bind_int(st, 3, dirty);
    } else {
        /* Another node's compaction: it deletes the object; its erased
         * bytes are gone from what this mount reads. */
        st = cat->ws[W_HITS_DEL];
        bind_text(st, 1, key);
    }
    if ((rc = run(st)) != SQLITE_OK)
        goto sql_error;
    a->retired++;
    return 0;
sql_error:
    return bfs_err_set(err, sql_fail(cat->w, rc, "retire an archive"), "catalog: %s",
                       sqlite3_errmsg(cat->w));
}

/* The archive's versions, space-separated, into out (cap bytes): its length
 * (0: none). */
static size_t versions_text(const struct bfs_manifest_archive *ar, char *out, size_t cap)
{
    size_t vlen = 0;
    for (size_t i = 0; i < ar->n_versions && i < BFS_MANIFEST_VERSIONS_MAX; i++)
        vlen += (size_t)snprintf(out + vlen, cap - vlen, "%s%s", i ? " " : "", ar->versions[i]);
    return vlen;
}

/* In the transaction, when the last archive's index rows are all applied
 * (the next archive, or the end of the entry): an archive of a log entry that
 * its index rows do not cover holds bytes its writer's catalog no longer
 * indexed (a roll from before the log adopted after an erasure of some of
 * its rows: adopt.c writes the manifest from the rows left). It is dirty, and
 * every erasure of its scope before the entry is pending on it until a
 * compaction rewrites it, as after a checkpoint's load (which finds such
 * archives at its end). An archive of a roll, an erasure, a compaction is
 * covered, or dirty already (a row dropped). */
static int archive_done_locked(struct bfs_cat_apply *a, struct bfs_err *err)
{
    if (a->ckpt || a->own || a->adopt == ADOPT_STAMP || a->file_id == 0 || a->file_dirty ||
        a->file_size - a->file_header == a->file_bytes)
        return 0;
    a->file_dirty = 1;
    sqlite3_stmt *st = a->cat->ws[W_ARCH_DIRTY];
    sqlite3_bind_int64(st, 1, a->file_id);
    int rc = run(st);
    if (rc == SQLITE_OK) {
        st = a->cat->ws[W_UNCOVERED_HITS];
        bind_text(st, 1, a->key);
        sqlite3_bind_int64(st, 2, a->r.seq);
        bind_text(st, 3, a->table);
        bind_text(st, 4, a->period);
        rc = run(st);
    }
    if (rc == SQLITE_OK) {
        st = a->cat->ws[W_HITS_PENDING];
        bind_text(st, 1, a->key);
        rc = run(st);
    }
    if (rc != SQLITE_OK)
        return bfs_err_set(err, sql_fail(a->cat->w, rc, "mark an archive dirty"), "catalog: %s",
                           sqlite3_errmsg(a->cat->w));
    bfs_info("log %" PRId64 ": archive %s of roll %s: its index rows cover %" PRIu64
             " of its %" PRIu64 " bytes after the header (rows erased before the entry was "
             "written): rewritten by the next compaction",
             a->r.seq, a->key, a->roll_id, a->file_bytes, a->file_size - a->file_header);
    return 0;
}

/* ADOPT_STAMP: archive ar of the manifest is one of the roll's here (same key,
 * size and header length): it takes what the manifest says of it and the
 * entry's position. */
static int adopt_archive_locked(struct bfs_cat_apply *a, const struct bfs_manifest_archive *ar,
                                struct bfs_err *err)
{
    struct bfs_catalog *cat = a->cat;
    sqlite3_stmt *st = cat->ws[W_ARCH_ADOPT];
    char versions[BFS_MANIFEST_VERSIONS_MAX * 17];
    size_t vlen = versions_text(ar, versions, sizeof versions);
    bind_text(st, 1, a->roll_id);
    bind_text(st, 2, ar->key);
    int rc = bind_blob(st, 3, ar->sha256, sizeof ar->sha256);
    bind_text(st, 4, ar->schema_fingerprint);
    bind_text(st, 5, codec_text(ar->codec));
    if (vlen > 0)
        sqlite3_bind_text(st, 6, versions, (int)vlen, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 6);
    sqlite3_bind_int64(st, 7, a->r.seq);
    sqlite3_bind_int64(st, 8, a->r.committed_at);
    sqlite3_bind_int64(st, 9, (int64_t)ar->size);
    sqlite3_bind_int64(st, 10, (int64_t)ar->header_length);
    if (rc == SQLITE_OK)
        rc = run(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_OK)
        return bfs_err_set(err, sql_fail(cat->w, rc, "adopt an archive"), "catalog: %s",
                           sqlite3_errmsg(cat->w));
    if (sqlite3_changes(cat->w) != 1)
        return bfs_err_set(err, -EINVAL,
                           "archive %s (%" PRIu64 " bytes) is not one of roll %s here, which "
                           "was committed before the log",
                           ar->key, ar->size, a->roll_id);
    a->file_id = 0; /* its index rows are here already */
    a->n_arch++;
    return 0;
}

int bfs_catalog_apply_archive(struct bfs_cat_apply *a, const struct bfs_manifest_archive *ar,
                              struct bfs_err *err)
{
    struct bfs_catalog *cat = a->cat;
    if (!valid_name(ar->table) || !valid_name(ar->period) || ar->header_length > ar->size ||
        ar->size > (uint64_t)INT64_MAX || strlen(ar->key) > BFS_STORE_KEY_MAX)
        return bfs_err_set(err, -EINVAL, "archive %s: bad fields", ar->key);
    int done = archive_done_locked(a, err);
    if (done < 0)
        return done;
    if (a->adopt == ADOPT_STAMP)
        return adopt_archive_locked(a, ar, err);
    if (a->r.kind == BFS_LOG_COMPACT) {
        if (strcmp(ar->table, a->c_table) != 0 || strcmp(ar->period, a->c_period) != 0)
            return bfs_err_set(err, -EINVAL, "archive %s: not in the compaction's partition %s/%s",
                               ar->key, a->c_table, a->c_period);
        int e = check_left_locked(a, err);
        if (e < 0)
            return e;
        if (a->voided) {
            a->n_arch++;
            return 0;
        }
    }
    const char *codec = codec_text(ar->codec);
    sqlite3_stmt *st = cat->ws[W_PART_LOOKUP];
    bind_text(st, 1, ar->table);
    bind_text(st, 2, ar->period);
    int rc = sqlite3_step(st);
    int e = 0;
    if (rc == SQLITE_ROW) {
        const char *pcodec = (const char *)sqlite3_column_text(st, 1);
        const char *fp = (const char *)sqlite3_column_text(st, 3);
        if (!fp || strcmp(fp, ar->schema_fingerprint) != 0) {
            /* Not the merged schema: one of the partition's versions? */
            sqlite3_stmt *vs = cat->ws[W_VERSION_FP];
            sqlite3_bind_int64(vs, 1, sqlite3_column_int64(st, 4));
            bind_text(vs, 2, ar->schema_fingerprint);
            int vrc = sqlite3_step(vs);
            sqlite3_reset(vs);
            if (vrc == SQLITE_DONE)
                e = bfs_err_set(err, -EINVAL,
                                "archive %s: schema %s is not a version of partition %s/%s here",
                                ar->key, ar->schema_fingerprint, ar->table, ar->period);
            else if (vrc != SQLITE_ROW)
                e = bfs_err_set(err, sql_fail(cat->w, vrc, "look a version up"), "catalog: %s",
                                sqlite3_errmsg(cat->w));
        }
        if (e == 0 && (!pcodec || strcmp(pcodec, codec) != 0))
            e = bfs_err_set(err, -EINVAL,
                            "archive %s: partition %s/%s has codec %s here, the archive %s",
                            ar->key, ar->table, ar->period, pcodec ? pcodec : "?", codec);
    } else if (rc == SQLITE_DONE) {
        e = bfs_err_set(err, -ENOENT, "archive %s: no partition %s/%s", ar->key, ar->table,
                        ar->period);
    } else {
        e = bfs_err_set(err, sql_fail(cat->w, rc, "look a partition up"), "catalog: %s",
                        sqlite3_errmsg(cat->w));
    }
    sqlite3_reset(st);
    if (e < 0)
        return e;

    st = cat->ws[W_ARCH_ADD];
    bind_text(st, 1, ar->key);
    bind_text(st, 2, ar->table);
    bind_text(st, 3, ar->period);
    sqlite3_bind_int64(st, 4, (int64_t)ar->size);
    sqlite3_bind_int64(st, 5, (int64_t)ar->header_length);
    bind_text(st, 6, a->roll_id);
    sqlite3_bind_int64(st, 7, a->n_arch);
    sqlite3_bind_int64(st, 8, a->r.committed_at);
    rc = bind_blob(st, 9, ar->sha256, sizeof ar->sha256);
    bind_text(st, 10, ar->schema_fingerprint);
    bind_text(st, 11, codec);
    /* the versions, space-separated (NULL: none) */
    char versions[BFS_MANIFEST_VERSIONS_MAX * 17];
    size_t vlen = versions_text(ar, versions, sizeof versions);
    if (vlen > 0)
        sqlite3_bind_text(st, 12, versions, (int)vlen, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 12);
    /* Where it stands among the partition's archives: at its roll's log
     * position, or at a compaction's upto (where the archives it replaces
     * stood). */
    sqlite3_bind_int64(st, 13, a->r.kind == BFS_LOG_COMPACT ? a->r.base : a->r.seq);
    if (rc == SQLITE_OK)
        rc = run(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_OK) {
        const char *why = sqlite3_errmsg(cat->w);
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
            return bfs_err_set(err, -EINVAL, "archive %s: %s (a key listed twice?)", ar->key, why);
        return bfs_err_set(err, sql_fail(cat->w, rc, "add an archive"), "catalog: %s", why);
    }
    a->file_id = sqlite3_last_insert_rowid(cat->w);
    a->file_size = ar->size;
    a->file_header = ar->header_length;
    a->file_bytes = 0;
    a->file_dirty = 0;
    snprintf(a->key, sizeof a->key, "%s", ar->key);
    snprintf(a->table, sizeof a->table, "%s", ar->table);
    snprintf(a->period, sizeof a->period, "%s", ar->period);
    a->n_arch++;
    return 0;
}

/* Whether version fp is one of partition pid's (W_VERSION_FP): 1, 0, -errno. */
static int has_version_locked(struct bfs_catalog *cat, int64_t pid, const char *fp)
{
    sqlite3_stmt *vs = cat->ws[W_VERSION_FP];
    sqlite3_bind_int64(vs, 1, pid);
    bind_text(vs, 2, fp);
    int rc = sqlite3_step(vs);
    sqlite3_reset(vs);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : sql_fail(cat->w, rc, "look a version up");
}

static int knows_locked(struct bfs_catalog *cat, const struct bfs_manifest_archive *ar)
{
    sqlite3_stmt *st = cat->ws[W_PART_LOOKUP];
    bind_text(st, 1, ar->table);
    bind_text(st, 2, ar->period);
    int rc = sqlite3_step(st);
    int64_t pid = rc == SQLITE_ROW ? sqlite3_column_int64(st, 4) : 0;
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return sql_fail(cat->w, rc, "look a partition up");
    int e = has_version_locked(cat, pid, ar->schema_fingerprint);
    for (size_t i = 0; e == 1 && i < ar->n_versions; i++)
        e = has_version_locked(cat, pid, ar->versions[i]);
    return e;
}

int bfs_catalog_apply_knows(struct bfs_cat_apply *a, const struct bfs_manifest_archive *ar)
{
    if (a->adopt == ADOPT_STAMP)
        return 1; /* nothing is inserted */
    return knows_locked(a->cat, ar);
}

int bfs_catalog_apply_index(struct bfs_cat_apply *a, const struct bfs_manifest_index *x,
                            struct bfs_err *err)
{
    if (a->voided || (a->adopt == ADOPT_STAMP && a->n_arch > 0))
        return 0; /* a void compaction's; an adopted roll's: here already */
    if (a->file_id == 0)
        return bfs_err_set(err, -EINVAL, "an index row before any archive");
    /* x->dataset was checked by the manifest's reader (manifest.c) */
    if (x->start < a->file_header || x->start > a->file_size ||
        x->length > a->file_size - x->start || x->records > (uint64_t)INT64_MAX)
        return bfs_err_set(err, -EINVAL, "index row of %s outside its archive", x->dataset);
    if (a->any_erasure) {
        /* Erased after the writer took its input: not applied; the archive
         * holds erased bytes until it is rewritten. */
        sqlite3_stmt *q = a->cat->ws[W_ERASED_AFTER];
        bind_text(q, 1, x->dataset);
        bind_text(q, 2, a->table);
        bind_text(q, 3, a->period);
        sqlite3_bind_int64(q, 4, a->r.base);
        int qrc = sqlite3_step(q);
        int64_t eseq = qrc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
        sqlite3_reset(q);
        if (qrc != SQLITE_ROW && qrc != SQLITE_DONE)
            return bfs_err_set(err, sql_fail(a->cat->w, qrc, "look erasures up"), "catalog: %s",
                               sqlite3_errmsg(a->cat->w));
        if (eseq > 0) {
            sqlite3_stmt *d = a->cat->ws[W_ARCH_DIRTY];
            sqlite3_bind_int64(d, 1, a->file_id);
            int rc = run(d);
            if (rc == SQLITE_OK) {
                d = a->cat->ws[W_HIT_INS];
                sqlite3_bind_int64(d, 1, eseq);
                bind_text(d, 2, a->key);
                rc = run(d);
            }
            if (rc != SQLITE_OK)
                return bfs_err_set(err, sql_fail(a->cat->w, rc, "drop an erased row"),
                                   "catalog: %s", sqlite3_errmsg(a->cat->w));
            bfs_info("log %" PRId64 ": %s of %s/%s in %s was erased at log %" PRId64
                     ": not applied",
                     a->r.seq, x->dataset, a->table, a->period, a->key, eseq);
            a->dropped += x->length;
            a->file_dirty = 1;
            return 0;
        }
    }
    sqlite3_stmt *st = a->cat->ws[W_IDX_ADD];
    bind_text(st, 1, x->dataset);
    bind_text(st, 2, a->table);
    bind_text(st, 3, a->period);
    sqlite3_bind_int64(st, 4, a->file_id);
    sqlite3_bind_int64(st, 5, (int64_t)x->start);
    sqlite3_bind_int64(st, 6, (int64_t)x->length);
    sqlite3_bind_int64(st, 7, (int64_t)x->records);
    sqlite3_bind_int64(st, 8, x->uploaded_at);
    int rc = run(st);
    if (rc != SQLITE_OK)
        return bfs_err_set(err, sql_fail(a->cat->w, rc, "add an index row"), "catalog: %s",
                           sqlite3_errmsg(a->cat->w));
    a->bytes += x->length;
    a->file_bytes += x->length;
    a->n_index++;
    return 0;
}

/* bfs_cat_wtx_end, which rolls back only for rc < 0, for a caller's rc
 * that may be a visitor's positive stop: rolled back and returned as is. */
static int end_tx(struct bfs_catalog *cat, struct wtx *tx, int rc)
{
    int e = bfs_cat_wtx_end(cat, tx, rc > 0 ? -ECANCELED : rc);
    return rc > 0 ? rc : e;
}

/* In the transaction: the end of a roll committed here before the log (see
 * ADOPT_*): stamped with its entry (ADOPT_STAMP: every archive of it here was
 * named by the manifest). */
static int adopt_end_locked(struct bfs_cat_apply *a, struct bfs_err *err)
{
    struct bfs_catalog *cat = a->cat;
    sqlite3_stmt *st;
    int rc;
    if (a->adopt == ADOPT_STAMP) {
        st = cat->ws[W_ADOPT_LEFT];
        bind_text(st, 1, a->roll_id);
        sqlite3_bind_int64(st, 2, a->r.seq);
        rc = sqlite3_step(st);
        int64_t left = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            goto sql_error;
        if (left != 0)
            return bfs_err_set(err, -EINVAL,
                               "roll %s (committed here before the log): %" PRId64
                               " of its archives here are not in the entry's manifest",
                               a->roll_id, left);
    }
    st = cat->ws[W_ROLL_ADOPT];
    bind_text(st, 1, a->roll_id);
    sqlite3_bind_int64(st, 2, a->r.committed_at);
    bind_text(st, 3, a->node);
    sqlite3_bind_int64(st, 4, a->r.seq);
    sqlite3_bind_int64(st, 5, a->r.epoch);
    sqlite3_bind_int64(st, 6, a->r.base);
    sqlite3_bind_int64(st, 7, (int64_t)a->r.rows);
    sqlite3_bind_int64(st, 8, (int64_t)a->r.bytes);
    rc = run(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_OK)
        goto sql_error;
    if (sqlite3_changes(cat->w) != 1)
        return bfs_err_set(err, -EIO, "roll %s: its rolls row changed", a->roll_id);
    return 0;
sql_error:
    return bfs_err_set(err, sql_fail(cat->w, rc, "adopt a roll"), "catalog: %s",
                       sqlite3_errmsg(cat->w));
}

/* In the transaction: the end of a roll's rows. An own roll's commit (the
 * index covers the claim exactly; the claimed rows go; the roll is committed
 * at its log position); the index holds the roll's bytes. An adopted roll's:
 * adopt_end_locked. */
static int roll_end_locked(struct bfs_cat_apply *a, struct bfs_err *err)
{
    struct bfs_catalog *cat = a->cat;
    sqlite3_stmt *st;
    int rc = archive_done_locked(a, err);
    if (rc < 0)
        return rc;
    if (a->adopt && (rc = adopt_end_locked(a, err)) < 0)
        return rc;
    if (a->adopt == ADOPT_STAMP)
        return 0; /* its rows are the ones here (an erasure since the manifest: fewer) */
    if (a->own) {
        st = cat->ws[W_ROLL_CHECK];
        bind_text(st, 1, a->roll_id);
        sqlite3_bind_int64(st, 2, a->lo);
        sqlite3_bind_int64(st, 3, a->hi);
        sqlite3_bind_int64(st, 4, a->r.base);
        rc = sqlite3_step(st);
        int64_t diff = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            goto sql_error;
        if (diff != 0)
            return bfs_err_set(err, -EINVAL,
                               "roll %s: the manifest does not match the claimed rows "
                               "(%" PRId64 " datasets differ)",
                               a->roll_id, diff);
        /* The rows only: their blobs stay, orphaned, until bfs_catalog_purge.
         * Nothing reads a blob without its row but a reader that resolved the
         * row before this commit, and it gets the bytes the archive holds. */
        st = cat->ws[W_DEL_ROWS];
        sqlite3_bind_int64(st, 1, a->lo);
        sqlite3_bind_int64(st, 2, a->hi);
        if ((rc = run(st)) != SQLITE_OK)
            goto sql_error;
        st = cat->ws[W_ROLL_VERSIONS_DEL];
        bind_text(st, 1, a->roll_id);
        if ((rc = run(st)) != SQLITE_OK)
            goto sql_error;
        st = cat->ws[W_ROLL_LOGGED];
        bind_text(st, 1, a->roll_id);
        sqlite3_bind_int64(st, 2, a->r.committed_at);
        bind_text(st, 3, a->node);
        sqlite3_bind_int64(st, 4, a->r.seq);
        sqlite3_bind_int64(st, 5, a->r.epoch);
        if ((rc = run(st)) != SQLITE_OK)
            goto sql_error;
    }
    /* A checkpoint lists an entry's live rows only: a later compaction
     * retired some of its archives, a later erasure some of its rows. Their
     * bytes cannot be more than the entry's. */
    uint64_t held = a->bytes + a->dropped;
    if (a->ckpt ? held > a->r.bytes : held != a->r.bytes)
        return bfs_err_set(err, -EINVAL,
                           "roll %s: the index holds %" PRIu64 " bytes, the roll %" PRIu64,
                           a->roll_id, held, a->r.bytes);
    return 0;

sql_error:
    return bfs_err_set(err, sql_fail(cat->w, rc, "log apply"), "catalog: %s",
                       sqlite3_errmsg(cat->w));
}

int bfs_catalog_apply_end(struct bfs_cat_apply *a, int rc, int *own, struct bfs_err *err)
{
    if (rc == 0)
        rc = check_left_locked(a, err);
    if (rc == 0 && a->voided) {
        /* Undo what it did; only the log position moves, and a void rolls
         * row says the id is taken. */
        int s1 = run(a->cat->ws[W_ROLLBACK_TO]);
        int s2 = s1 == SQLITE_OK ? run(a->cat->ws[W_RELEASE]) : s1;
        a->savepoint = 0;
        rc = s2 == SQLITE_OK ? roll_row_locked(a, &a->r, 1)
                             : bfs_err_set(err, sql_fail(a->cat->w, s2, "undo a compaction"),
                                           "catalog: undo a void compaction");
    } else if (rc == 0) {
        rc = roll_end_locked(a, err);
    }
    if (rc == 0 && a->savepoint) {
        int s1 = run(a->cat->ws[W_RELEASE]);
        if (s1 != SQLITE_OK)
            rc = bfs_err_set(err, sql_fail(a->cat->w, s1, "release"), "catalog: release");
    }
    if (rc == 0) {
        rc = advance(a->cat, a->r.seq, a->node, a->r.epoch);
        if (rc < 0)
            bfs_err_set(err, rc, "catalog: advance the log position");
    }
    rc = end_tx(a->cat, &a->tx, rc);
    if (rc != 0) /* rolled back */
        bulk_undone(a);
    if (own)
        *own = rc != 0    ? BFS_APPLIED
               : a->own   ? BFS_APPLIED_OWN
               : a->adopt ? BFS_APPLIED_ADOPTED
                          : BFS_APPLIED;
    free(a);
    return rc;
}

/* ---- checkpoints ---- */

/* The index rows of archive file_id. */
static int snap_index(struct rconn *c, int64_t file_id, const struct bfs_checkpoint_visitor *v)
{
    sqlite3_stmt *st = c->st[R_SNAP_IDX];
    sqlite3_bind_int64(st, 1, file_id);
    int rc, e = 0;
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *dataset = (const char *)sqlite3_column_text(st, 0);
        struct bfs_manifest_index x = {
            .dataset = dataset,
            .start = (uint64_t)sqlite3_column_int64(st, 1),
            .length = (uint64_t)sqlite3_column_int64(st, 2),
            .records = (uint64_t)sqlite3_column_int64(st, 3),
            .uploaded_at = sqlite3_column_int64(st, 4),
        };
        if (!dataset) {
            bfs_error("catalog: index row of archive %" PRId64 " without a dataset", file_id);
            e = -EIO;
        } else if (v->index) {
            e = v->index(v->ctx, &x);
        }
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "snapshot: read index rows");
    sqlite3_reset(st);
    return e;
}

/* The archives of roll_id, each with its index rows (unless v->index is
 * NULL). strict: an archive without its SHA-256, schema or codec (one
 * committed before the log) is an error; else it comes with
 * schema_fingerprint NULL. */
static int snap_archives(struct rconn *c, const char *roll_id,
                         const struct bfs_checkpoint_visitor *v, int strict)
{
    sqlite3_stmt *st = c->st[R_SNAP_ARCH];
    bind_text(st, 1, roll_id);
    int rc, e = 0;
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct bfs_manifest_archive a = {
            .key = (const char *)sqlite3_column_text(st, 1),
            .table = (const char *)sqlite3_column_text(st, 2),
            .period = (const char *)sqlite3_column_text(st, 3),
            .size = (uint64_t)sqlite3_column_int64(st, 4),
            .header_length = (uint64_t)sqlite3_column_int64(st, 5),
            .schema_fingerprint = (const char *)sqlite3_column_text(st, 7),
        };
        const void *sha = sqlite3_column_blob(st, 6);
        int sha_len = sqlite3_column_bytes(st, 6);
        const char *codec = (const char *)sqlite3_column_text(st, 8);
        int known = a.schema_fingerprint && sha && sha_len == (int)sizeof a.sha256 && codec &&
                    codec_from_text(codec, &a.codec) == 0;
        if (!a.key || !a.table || !a.period || (strict && !known)) {
            bfs_error("catalog: archive %s of roll %s lacks what a checkpoint holds "
                      "(SHA-256, schema, codec)",
                      a.key ? a.key : "?", roll_id);
            e = -EIO;
            break;
        }
        if (known)
            memcpy(a.sha256, sha, sizeof a.sha256);
        else
            a.schema_fingerprint = NULL;
        /* the versions: 16 hex digits each, space-separated */
        const char *vs = (const char *)sqlite3_column_text(st, 9);
        char fps[BFS_MANIFEST_VERSIONS_MAX][17];
        while (vs && *vs && a.n_versions < BFS_MANIFEST_VERSIONS_MAX) {
            size_t k = strcspn(vs, " ");
            if (k != 16) {
                bfs_error("catalog: archive %s has a bad version list", a.key);
                e = -EIO;
                break;
            }
            memcpy(fps[a.n_versions], vs, 16);
            fps[a.n_versions++][16] = '\0';
            vs += k + (vs[k] == ' ');
        }
        a.versions = (const char(*)[17])fps;
        if (e == 0 && v->archive)
            e = v->archive(v->ctx, &a);
        if (e == 0 && v->index)
            e = snap_index(c, sqlite3_column_int64(st, 0), v);
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "snapshot: read archives");
    sqlite3_reset(st);
    return e;
}

/* The erasure at the erasures cursor's row. */
static int snap_erase(sqlite3_stmt *st, const struct bfs_checkpoint_visitor *v)
{
    struct bfs_manifest_erase x = {
        .node = (const char *)sqlite3_column_text(st, 1),
        .dataset = (const char *)sqlite3_column_text(st, 2),
        .table = (const char *)sqlite3_column_text(st, 3),
        .period = (const char *)sqlite3_column_text(st, 4),
        .erased_at = sqlite3_column_int64(st, 6),
    };
    if (!x.node || !x.dataset) {
        bfs_error("catalog: erasure at log %" PRId64 " has no node or dataset",
                  (int64_t)sqlite3_column_int64(st, 0));
        return -EIO;
    }
    return v->erase ? v->erase(v->ctx, &x, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 5),
                               sqlite3_column_int64(st, 7))
                    : 0;
}

/* In the read transaction: the rolls, compactions and erasures up to upto in
 * log order (two cursors merged by position), then the nodes. */
static int snap_walk(struct rconn *c, int64_t upto, const struct bfs_checkpoint_visitor *v)
{
    sqlite3_stmt *st = c->st[R_SNAP_ROLLS];
    sqlite3_stmt *es = c->st[R_SNAP_ERASURES];
    sqlite3_bind_int64(st, 1, upto);
    sqlite3_bind_int64(es, 1, upto);
    int rc, erc = sqlite3_step(es), e = 0;
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 5);
        while (e == 0 && erc == SQLITE_ROW && sqlite3_column_int64(es, 0) < seq) {
            e = snap_erase(es, v);
            erc = sqlite3_step(es);
        }
        if (e != 0)
            break;
        struct bfs_manifest_roll r = {
            .roll_id = (const char *)sqlite3_column_text(st, 0),
            .node = (const char *)sqlite3_column_text(st, 1),
            .claimed_at = sqlite3_column_int64(st, 2),
            .rows = sqlite3_column_int64(st, 3),
            .bytes = sqlite3_column_int64(st, 4),
            .base = sqlite3_column_type(st, 9) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 9),
        };
        if (!r.roll_id || !r.node || sqlite3_column_type(st, 6) == SQLITE_NULL) {
            bfs_error("catalog: roll %s of the log has no node or epoch",
                      r.roll_id ? r.roll_id : "?");
            e = -EIO;
            break;
        }
        if (sqlite3_column_int(st, 8) == BFS_LOG_COMPACT) {
            const struct bfs_manifest_compact cp = {
                .node = r.node,
                .compact_id = r.roll_id,
                .table = (const char *)sqlite3_column_text(st, 10),
                .period = (const char *)sqlite3_column_text(st, 11),
                .upto = r.base,
                .bytes = r.bytes,
                .retired = 0,
            };
            if (!cp.table || !cp.period) {
                bfs_error("catalog: compaction %s has no partition", r.roll_id);
                e = -EIO;
                break;
            }
            if (v->compact)
                e = v->compact(v->ctx, &cp, seq, sqlite3_column_int64(st, 6),
                               sqlite3_column_int64(st, 7));
        } else if (v->roll) {
            e = v->roll(v->ctx, &r, seq, sqlite3_column_int64(st, 6), sqlite3_column_int64(st, 7));
        }
        if (e == 0)
            e = snap_archives(c, r.roll_id, v, 1);
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "snapshot: read rolls");
    while (e == 0 && erc == SQLITE_ROW) {
        e = snap_erase(es, v);
        erc = sqlite3_step(es);
    }
    if (e == 0 && erc != SQLITE_DONE && erc != SQLITE_ROW)
        e = sql_fail(c->db, erc, "snapshot: read erasures");
    sqlite3_reset(st);
    sqlite3_reset(es);
    if (e != 0)
        return e;
    st = c->st[R_SNAP_NODES];
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *node = (const char *)sqlite3_column_text(st, 0);
        if (!node) {
            e = -EIO;
            break;
        }
        if (v->node)
            e = v->node(v->ctx, node, sqlite3_column_int64(st, 1));
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "snapshot: read nodes");
    sqlite3_reset(st);
    return e;
}

/* fn(c, arg) in one read transaction on a connection of the pool: what it
 * reads is of one state of the catalog. what names it in messages. */
static int in_read_tx(struct bfs_catalog *cat, const char *what,
                      int (*fn)(struct rconn *c, void *arg), void *arg)
{
    struct rconn *c;
    int e = bfs_cat_racquire(cat, &c);
    if (e < 0)
        return e;
    int rc = run(c->st[R_BEGIN]);
    if (rc != SQLITE_OK) {
        bfs_error("catalog: %s: begin: %s", what, sqlite3_errmsg(c->db));
        e = sql_errno(rc);
    } else if ((e = fn(c, arg)) == 0 && (rc = run(c->st[R_COMMIT])) != SQLITE_OK) {
        bfs_error("catalog: %s: end: %s", what, sqlite3_errmsg(c->db));
        e = sql_errno(rc);
    }
    bfs_cat_rrelease(cat, c); /* ends the read transaction if it is still open */
    return e;
}

struct snap_args {
    int64_t upto;
    const struct bfs_checkpoint_visitor *v;
};

/* The snapshot starts at its first read, the ledger row, so log_pos and
 * every row walked are of one state. */
static int snap_at(struct rconn *c, void *arg)
{
    const struct snap_args *a = arg;
    sqlite3_stmt *st = c->st[R_LEDGER];
    int rc = sqlite3_step(st);
    int64_t pos = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? -EIO : sql_fail(c->db, rc, "snapshot: read the ledger");
    return pos != a->upto ? -ESTALE : snap_walk(c, a->upto, a->v);
}

int bfs_catalog_snapshot(struct bfs_catalog *cat, int64_t upto,
                         const struct bfs_checkpoint_visitor *v)
{
    struct snap_args a = {upto, v};
    return in_read_tx(cat, "snapshot", snap_at, &a);
}

int bfs_catalog_prelog_next(struct bfs_catalog *cat, int64_t *after, char roll_id[BFS_ROLL_ID_MAX],
                            uint64_t *left)
{
    struct rconn *c;
    int e = bfs_cat_racquire(cat, &c);
    if (e < 0)
        return e;
    sqlite3_stmt *st = c->st[R_PRELOG_COUNT];
    int rc = SQLITE_ROW;
    if (left) {
        rc = sqlite3_step(st);
        *left = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        sqlite3_reset(st);
    }
    if (rc != SQLITE_ROW) {
        e = sql_fail(c->db, rc, "count the rolls from before the log");
        goto out;
    }
    st = c->st[R_PRELOG_NEXT];
    sqlite3_bind_int64(st, 1, *after);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (!id || strlen(id) >= BFS_ROLL_ID_MAX) {
            bfs_error("catalog: a roll from before the log has a bad id");
            e = -EIO;
        } else {
            snprintf(roll_id, BFS_ROLL_ID_MAX, "%s", id);
            *after = sqlite3_column_int64(st, 1);
        }
    } else {
        e = rc == SQLITE_DONE ? -ENOENT : sql_fail(c->db, rc, "find a roll from before the log");
    }
    sqlite3_reset(st);
out:
    bfs_cat_rrelease(cat, c);
    return e;
}

struct walk_args {
    const char *roll_id;
    const struct bfs_checkpoint_visitor *v;
};

/* In one read transaction: the Roll's bytes are the rows walked. */
static int walk_roll(struct rconn *c, void *arg)
{
    const struct walk_args *w = arg;
    sqlite3_stmt *st = c->st[R_WALK_ROLL];
    bind_text(st, 1, w->roll_id);
    int rc = sqlite3_step(st);
    struct bfs_manifest_roll r = {.roll_id = w->roll_id};
    int64_t committed_at = 0;
    int e = 0;
    if (rc == SQLITE_ROW) {
        r.claimed_at = sqlite3_column_int64(st, 0);
        committed_at = sqlite3_column_int64(st, 1);
        r.rows = sqlite3_column_int64(st, 2);
        r.bytes = sqlite3_column_int64(st, 3);
        r.base = sqlite3_column_int64(st, 4);
    } else {
        e = rc == SQLITE_DONE ? -ENOENT : sql_fail(c->db, rc, "roll walk: read the roll");
    }
    sqlite3_reset(st);
    if (e == 0 && w->v->roll)
        e = w->v->roll(w->v->ctx, &r, 0, 0, committed_at);
    return e == 0 ? snap_archives(c, w->roll_id, w->v, 0) : e;
}

int bfs_catalog_roll_walk(struct bfs_catalog *cat, const char *roll_id,
                          const struct bfs_checkpoint_visitor *v)
{
    struct walk_args w = {roll_id, v};
    return in_read_tx(cat, "roll walk", walk_roll, &w);
}

/* A checkpoint being loaded: one write transaction (a.tx), each roll
 * applied as its log entry would be (a), the log position set at the end. */
struct bfs_cat_ckpt {
    struct bfs_cat_apply a;
    int in_roll;      /* a holds a roll whose rows are being loaded */
    int nodes;        /* node entries began */
    int64_t last_seq; /* of the last roll (0: none yet) */
    int failed;       /* the first call that failed: the end rolls back */
};

static int ckpt_failed(struct bfs_cat_ckpt *c, int e)
{
    if (e < 0 && c->failed == 0)
        c->failed = e;
    return e;
}

/* In the transaction: the end of the roll being loaded, as the end of its
 * log entry (without the log position: the checkpoint's end sets it). */
static int ckpt_close_roll(struct bfs_cat_ckpt *c, struct bfs_err *err)
{
    if (!c->in_roll)
        return 0;
    c->in_roll = 0;
    int e = roll_end_locked(&c->a, err);
    if (e == 0 && (e = raise_epoch(c->a.cat, c->a.node, c->a.r.epoch)) < 0)
        bfs_err_set(err, e, "catalog: record a node's epoch");
    return e;
}

int bfs_catalog_ckpt_begin(struct bfs_catalog *cat, struct bfs_cat_ckpt **out)
{
    *out = NULL;
    struct bfs_cat_ckpt *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->a.cat = cat;
    c->a.ckpt = 1;
    /* Foreign keys off, as a log apply: an own roll deletes its rows. */
    c->a.tx = (struct wtx){.flags = WTX_FK_OFF, .what = "checkpoint load"};
    int e = bfs_cat_wtx_begin(cat, &c->a.tx);
    if (e < 0) {
        free(c);
        return e;
    }
    sqlite3_stmt *st = cat->ws[W_LOG_EMPTY];
    int rc = sqlite3_step(st);
    int empty = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        e = rc == SQLITE_DONE ? -EIO : sql_fail(cat->w, rc, "read the ledger");
    else if (!empty)
        e = -EEXIST;
    if (e == 0)
        e = bulk_drop_locked(&c->a);
    if (e < 0) {
        bulk_undone(&c->a);
        bfs_cat_wtx_end(cat, &c->a.tx, e);
        free(c);
        return e;
    }
    *out = c;
    return 0;
}

/* The next roll or compaction of the checkpoint being loaded. */
static int ckpt_entry(struct bfs_cat_ckpt *c, const struct bfs_log_roll *lr, struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    int e = ckpt_close_roll(c, err);
    if (e < 0)
        return ckpt_failed(c, e);
    int64_t seq = lr->seq;
    const struct bfs_log_roll *r = lr;
    if (c->nodes || seq <= c->last_seq)
        return ckpt_failed(c, bfs_err_set(err, -EINVAL,
                                          "checkpoint: roll %s at %" PRId64
                                          ": after the nodes or not after the roll before",
                                          r->roll_id, seq));
    if (!log_roll_valid(lr))
        return ckpt_failed(c, bfs_err_set(err, -EINVAL,
                                          "checkpoint: roll %s at %" PRId64 ": bad fields",
                                          r->roll_id, seq));
    e = roll_begin_locked(&c->a, lr);
    if (e == -EALREADY) {
        e = bfs_err_set(err, -EINVAL,
                        "checkpoint: roll %s at %" PRId64 " is the roll at %" PRId64 " again",
                        r->roll_id, seq, c->a.logged);
    } else if (e == 0 && c->a.adopt) {
        bfs_info("checkpoint: roll %s at %" PRId64 " was committed here before the log: "
                 "adopted, its rows are the checkpoint's",
                 r->roll_id, seq);
    } else if (e < 0) {
        bfs_err_set(err, e, "checkpoint: roll %s at %" PRId64 ": %s", r->roll_id, seq,
                    strerror(-e));
    }
    if (e < 0)
        return ckpt_failed(c, e);
    c->in_roll = 1;
    c->last_seq = seq;
    return 0;
}

int bfs_catalog_ckpt_roll(struct bfs_cat_ckpt *c, const struct bfs_manifest_roll *r, int64_t seq,
                          int64_t epoch, int64_t committed_at, struct bfs_err *err)
{
    if (r->rows < 0 || r->bytes < 0)
        return ckpt_failed(
            c, bfs_err_set(err, -EINVAL, "checkpoint: roll %s: bad fields", r->roll_id));
    const struct bfs_log_roll lr = {
        .seq = seq,
        .node = r->node,
        .roll_id = r->roll_id,
        .epoch = epoch,
        .claimed_at = r->claimed_at,
        .committed_at = committed_at,
        .rows = (uint64_t)r->rows,
        .bytes = (uint64_t)r->bytes,
        .base = r->base,
    };
    return ckpt_entry(c, &lr, err);
}

int bfs_catalog_ckpt_compact(struct bfs_cat_ckpt *c, const struct bfs_manifest_compact *cp,
                             int64_t seq, int64_t epoch, int64_t committed_at, struct bfs_err *err)
{
    if (cp->bytes < 0)
        return ckpt_failed(
            c, bfs_err_set(err, -EINVAL, "checkpoint: compaction %s: bad fields", cp->compact_id));
    const struct bfs_log_roll lr = {
        .seq = seq,
        .node = cp->node,
        .roll_id = cp->compact_id,
        .epoch = epoch,
        .claimed_at = committed_at,
        .committed_at = committed_at,
        .rows = 0,
        .bytes = (uint64_t)cp->bytes,
        .kind = BFS_LOG_COMPACT,
        .base = cp->upto,
        .table = cp->table,
        .period = cp->period,
    };
    return ckpt_entry(c, &lr, err);
}

int bfs_catalog_ckpt_erase(struct bfs_cat_ckpt *c, const struct bfs_manifest_erase *x, int64_t seq,
                           int64_t epoch, int64_t committed_at, struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    int e = ckpt_close_roll(c, err);
    if (e < 0)
        return ckpt_failed(c, e);
    if (c->nodes || seq <= c->last_seq || !bfs_node_valid(x->node) || !valid_name(x->dataset))
        return ckpt_failed(c, bfs_err_set(err, -EINVAL,
                                          "checkpoint: erasure at %" PRId64 ": bad or out of order",
                                          seq));
    /* History: what it hid is not in the checkpoint. Archives that still
     * hold erased bytes are found at the end (their index does not cover
     * them) and rewritten by the compactor. */
    sqlite3_stmt *st = c->a.cat->ws[W_ERASE_INS];
    sqlite3_bind_int64(st, 1, seq);
    bind_text(st, 2, x->node);
    bind_text(st, 3, x->dataset);
    if (x->table) {
        bind_text(st, 4, x->table);
        bind_text(st, 5, x->period);
    } else {
        sqlite3_bind_null(st, 4);
        sqlite3_bind_null(st, 5);
    }
    sqlite3_bind_int64(st, 6, epoch);
    sqlite3_bind_int64(st, 7, x->erased_at);
    sqlite3_bind_int64(st, 8, committed_at);
    sqlite3_bind_int64(st, 9, committed_at);
    int rc = run(st);
    sqlite3_clear_bindings(st);
    /* This catalog's own uploads (taken while it had not read the log) are
     * rows it had when it learnt of the erasure: its unclaimed ones go, as
     * applying the erasure's log entry would delete them (claimed ones are
     * dropped by their roll's apply, whose base is before the erasure). */
    static const enum wst hot[] = {W_ERASE_HOT_DATA, W_ERASE_HOT_ROWS};
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof hot / sizeof hot[0]; i++) {
        st = c->a.cat->ws[hot[i]];
        bind_text(st, 1, x->dataset);
        if (x->table) {
            bind_text(st, 2, x->table);
            bind_text(st, 3, x->period);
        }
        rc = run(st);
        sqlite3_clear_bindings(st);
    }
    if (rc != SQLITE_OK)
        return ckpt_failed(c, bfs_err_set(err, sql_fail(c->a.cat->w, rc, "add an erasure"),
                                          "catalog: %s", sqlite3_errmsg(c->a.cat->w)));
    if ((e = raise_epoch(c->a.cat, x->node, epoch)) < 0)
        return ckpt_failed(c, bfs_err_set(err, e, "catalog: record a node's epoch"));
    c->last_seq = seq;
    return 0;
}

int bfs_catalog_ckpt_archive(struct bfs_cat_ckpt *c, const struct bfs_manifest_archive *a,
                             struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    if (!c->in_roll)
        return ckpt_failed(
            c, bfs_err_set(err, -EINVAL, "checkpoint: archive %s outside a roll", a->key));
    return ckpt_failed(c, bfs_catalog_apply_archive(&c->a, a, err));
}

int bfs_catalog_ckpt_knows(struct bfs_cat_ckpt *c, const struct bfs_manifest_archive *ar)
{
    return knows_locked(c->a.cat, ar);
}

int bfs_catalog_ckpt_index(struct bfs_cat_ckpt *c, const struct bfs_manifest_index *x,
                           struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    if (!c->in_roll)
        return ckpt_failed(
            c, bfs_err_set(err, -EINVAL, "checkpoint: index row of %s outside a roll", x->dataset));
    return ckpt_failed(c, bfs_catalog_apply_index(&c->a, x, err));
}

int bfs_catalog_ckpt_node(struct bfs_cat_ckpt *c, const char *node, int64_t epoch,
                          struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    int e = ckpt_close_roll(c, err);
    if (e == 0 && (!bfs_node_valid(node) || epoch < 0))
        e = bfs_err_set(err, -EINVAL, "checkpoint: a bad node entry");
    if (e == 0 && (e = raise_epoch(c->a.cat, node, epoch)) < 0)
        bfs_err_set(err, e, "catalog: record a node's epoch");
    if (e == 0)
        c->nodes = 1;
    return ckpt_failed(c, e);
}

int bfs_catalog_ckpt_end(struct bfs_cat_ckpt *c, int rc, int64_t upto, struct bfs_err *err)
{
    if (rc == 0 && c->failed)
        rc = bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    if (rc == 0)
        rc = ckpt_close_roll(c, err);
    if (rc == 0 && (upto < 1 || upto < c->last_seq))
        rc = bfs_err_set(err, -EINVAL,
                         "checkpoint: position %" PRId64 " is before its last roll (%" PRId64 ")",
                         upto, c->last_seq);
    if (rc == 0 && (rc = set_log_pos(c->a.cat, upto)) < 0)
        bfs_err_set(err, rc, "catalog: set the log position");
    /* Archives whose index rows do not cover them hold erased bytes: each
     * erasure whose scope holds one is pending until it is rewritten (which
     * erasure's bytes it holds the checkpoint does not say: every erasure of
     * that scope waits, the safe side). */
    static const char *const dirty[] = {
        "UPDATE archived_files SET dirty = 1 WHERE size - header_length !="
        " (SELECT coalesce(sum(length), 0) FROM block_indexes WHERE file_id ="
        " archived_files.id);",
        /* block_indexes_file dropped (a bulk load): one pass over the rows */
        "WITH t(file_id, s) AS MATERIALIZED (SELECT file_id, sum(length) FROM block_indexes"
        " GROUP BY file_id) UPDATE archived_files SET dirty = 1 WHERE size - header_length !="
        " coalesce((SELECT s FROM t WHERE t.file_id = archived_files.id), 0);"};
    if (rc == 0 &&
        sqlite3_exec(c->a.cat->w, dirty[c->a.cat->idx_dropped != 0], NULL, NULL, NULL) != SQLITE_OK)
        rc = bfs_err_set(err, -EIO, "catalog: %s", sqlite3_errmsg(c->a.cat->w));
    if (rc == 0 &&
        sqlite3_exec(c->a.cat->w,
                     "INSERT OR IGNORE INTO erase_hits(seq, file_path) SELECT e.seq, a.file_path"
                     " FROM erasures e JOIN archived_files a ON a.dirty = 1 AND a.ord > 0 AND"
                     " (e.table_name IS NULL OR (a.table_name = e.table_name AND"
                     " a.period_tag = e.period_tag));"
                     "UPDATE erasures SET done_at = NULL WHERE EXISTS (SELECT 1 FROM erase_hits h"
                     " WHERE h.seq = erasures.seq);",
                     NULL, NULL, NULL) != SQLITE_OK)
        rc = bfs_err_set(err, -EIO, "catalog: %s", sqlite3_errmsg(c->a.cat->w));
    rc = end_tx(c->a.cat, &c->a.tx, rc);
    if (rc != 0) /* rolled back */
        bulk_undone(&c->a);
    if (rc < 0 && err && err->code == 0)
        bfs_err_set(err, rc, "catalog: commit: %s", c->a.tx.err.msg);
    free(c);
    return rc;
}

/* The load's visitor: each entry straight into its bfs_catalog_ckpt_* call. */
static int load_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                     int64_t committed_at)
{
    struct bfs_cat_ckpt_load *ld = ctx;
    return bfs_catalog_ckpt_roll(ld->c, r, seq, epoch, committed_at, ld->err);
}

static int load_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct bfs_cat_ckpt_load *ld = ctx;
    return bfs_catalog_ckpt_archive(ld->c, a, ld->err);
}

static int load_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct bfs_cat_ckpt_load *ld = ctx;
    return bfs_catalog_ckpt_index(ld->c, x, ld->err);
}

static int load_node(void *ctx, const char *node, int64_t epoch)
{
    struct bfs_cat_ckpt_load *ld = ctx;
    return bfs_catalog_ckpt_node(ld->c, node, epoch, ld->err);
}

static int load_compact(void *ctx, const struct bfs_manifest_compact *cp, int64_t seq,
                        int64_t epoch, int64_t committed_at)
{
    struct bfs_cat_ckpt_load *ld = ctx;
    return bfs_catalog_ckpt_compact(ld->c, cp, seq, epoch, committed_at, ld->err);
}

static int load_erase(void *ctx, const struct bfs_manifest_erase *x, int64_t seq, int64_t epoch,
                      int64_t committed_at)
{
    struct bfs_cat_ckpt_load *ld = ctx;
    return bfs_catalog_ckpt_erase(ld->c, x, seq, epoch, committed_at, ld->err);
}

void bfs_catalog_ckpt_visitor(struct bfs_cat_ckpt_load *ld, struct bfs_checkpoint_visitor *v)
{
    *v = (struct bfs_checkpoint_visitor){.roll = load_roll,
                                         .archive = load_archive,
                                         .index = load_index,
                                         .node = load_node,
                                         .ctx = ld,
                                         .compact = load_compact,
                                         .erase = load_erase};
}
