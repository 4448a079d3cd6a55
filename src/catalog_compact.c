/* catalog_compact.c - erasures, store garbage and the compactor's reads
 * (catalog.h, "Erasure and compaction"; compact.c drives them, ledger.c
 * applies the log's erase entries).
 *
 * An erasure is a row of erasures (its log position, the dataset, the
 * partition or NULL for every one). Applying it removes the dataset's index
 * rows and unclaimed hot rows at once; the archives that held its bytes are
 * marked dirty and listed in erase_hits until a compaction rewrites them and
 * the retired objects are deleted (store_gc), so done_at says when nothing
 * this mount knows holds them any more.
 */
#include <inttypes.h>
#include <time.h>

#include "catalog_int.h"

/* One row statement on a read connection: prepare, bind with the caller's
 * function, step every row through cb. 0, cb's non-zero return, -errno. */
static int rquery(struct bfs_catalog *cat, const char *sql, void (*bind)(sqlite3_stmt *, void *),
                  void *bctx, int (*row)(sqlite3_stmt *, void *), void *rctx)
{
    struct rconn *c;
    int e = bfs_cat_racquire(cat, &c);
    if (e < 0)
        return e;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        e = sql_fail(c->db, rc, "prepare");
        goto out;
    }
    if (bind)
        bind(st, bctx);
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        e = row(st, rctx);
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "read");
out:
    sqlite3_finalize(st);
    bfs_cat_rrelease(cat, c);
    return e;
}

/* One statement in its own write transaction. */
static int wexec(struct bfs_catalog *cat, const char *what, const char *sql,
                 void (*bind)(sqlite3_stmt *, void *), void *bctx, int64_t *changes)
{
    struct wtx tx = {.what = what};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return e;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(cat->w, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        if (bind)
            bind(st, bctx);
        rc = run(st);
    }
    if (rc != SQLITE_OK)
        e = sql_fail(cat->w, rc, what);
    else if (changes)
        *changes = sqlite3_changes64(cat->w);
    sqlite3_finalize(st);
    return bfs_cat_wtx_end(cat, &tx, e);
}

/* ---- erasures ---- */

static void bind_erase(sqlite3_stmt *st, const struct bfs_log_erase *e, int seq_param)
{
    bind_text(st, 1, e->dataset);
    if (e->table) {
        bind_text(st, 2, e->table);
        bind_text(st, 3, e->period);
    } else {
        sqlite3_bind_null(st, 2);
        sqlite3_bind_null(st, 3);
    }
    if (seq_param)
        sqlite3_bind_int64(st, seq_param, e->seq);
}

int bfs_catalog_apply_erase(struct bfs_catalog *cat, const struct bfs_log_erase *e, uint64_t *hits,
                            struct bfs_err *err)
{
    *hits = 0;
    if (!bfs_node_valid(e->node) || !valid_name(e->dataset) || (!e->table) != (!e->period) ||
        (e->table && (!valid_name(e->table) || !valid_name(e->period))) || e->seq < 1)
        return bfs_err_set(err, -EINVAL, "erasure at log %" PRId64 ": bad fields", e->seq);
    struct wtx tx = {.what = "erase"};
    int rc, x = bfs_cat_wtx_begin(cat, &tx);
    if (x < 0)
        return bfs_err_set(err, x, "catalog: erase: %s", tx.err.msg);
    sqlite3_stmt *st = cat->ws[W_LEDGER_GET];
    rc = sqlite3_step(st);
    int64_t pos = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) {
        x = bfs_err_set(err, -EIO, "catalog: read the ledger");
        goto end;
    }
    if (e->seq != pos + 1) {
        x = bfs_err_set(err, -ESTALE, "catalog: erasure at log %" PRId64 " applied after %" PRId64,
                        e->seq, pos);
        goto end;
    }
    st = cat->ws[W_ERASE_INS];
    sqlite3_bind_int64(st, 1, e->seq);
    bind_text(st, 2, e->node);
    bind_text(st, 3, e->dataset);
    if (e->table) {
        bind_text(st, 4, e->table);
        bind_text(st, 5, e->period);
    } else {
        sqlite3_bind_null(st, 4);
        sqlite3_bind_null(st, 5);
    }
    sqlite3_bind_int64(st, 6, e->epoch);
    sqlite3_bind_int64(st, 7, e->erased_at);
    sqlite3_bind_int64(st, 8, e->committed_at);
    sqlite3_bind_null(st, 9);
    rc = run(st);
    sqlite3_clear_bindings(st);
    static const enum wst steps[] = {W_ERASE_HITS, W_ERASE_DIRTY, W_ERASE_IDX, W_ERASE_HOT_DATA,
                                     W_ERASE_HOT_ROWS};
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof steps / sizeof steps[0]; i++) {
        st = cat->ws[steps[i]];
        bind_erase(st, e, steps[i] == W_ERASE_HITS ? 4 : 0);
        rc = run(st);
        if (rc == SQLITE_OK && steps[i] == W_ERASE_HITS)
            *hits = (uint64_t)sqlite3_changes64(cat->w);
        sqlite3_clear_bindings(st);
    }
    if (rc == SQLITE_OK) {
        st = cat->ws[W_LEDGER_SET];
        sqlite3_bind_int64(st, 1, e->seq);
        rc = run(st);
    }
    if (rc == SQLITE_OK) {
        st = cat->ws[W_NODE_EPOCH];
        bind_text(st, 1, e->node);
        sqlite3_bind_int64(st, 2, e->epoch);
        rc = run(st);
    }
    if (rc != SQLITE_OK)
        x = bfs_err_set(err, sql_fail(cat->w, rc, "erase"), "catalog: erase: %s",
                        sqlite3_errmsg(cat->w));
end:
    x = bfs_cat_wtx_end(cat, &tx, x);
    if (x < 0 && err && !err->code)
        bfs_err_set(err, x, "catalog: erase: %s", tx.err.msg);
    return x;
}

static int count_row(sqlite3_stmt *st, void *ctx)
{
    *(int64_t *)ctx = sqlite3_column_int64(st, 0);
    return 0;
}

int bfs_catalog_erasures_settle(struct bfs_catalog *cat, int64_t now,
                                int (*cb)(void *ctx, const struct bfs_erasure *e), void *ctx)
{
    struct wtx tx = {.what = "settle erasures"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return e;
    sqlite3_stmt *st = cat->ws[W_ERASE_SETTLE];
    sqlite3_bind_int64(st, 1, now);
    int rc;
    /* The rows come as the update makes them: the callback only copies. */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const struct bfs_erasure x = {
            .seq = sqlite3_column_int64(st, 0),
            .node = (const char *)sqlite3_column_text(st, 1),
            .dataset = (const char *)sqlite3_column_text(st, 2),
            .table = (const char *)sqlite3_column_text(st, 3),
            .period = (const char *)sqlite3_column_text(st, 4),
            .erased_at = sqlite3_column_int64(st, 5),
            .committed_at = sqlite3_column_int64(st, 6),
            .done_at = now,
        };
        if (cb && x.node && x.dataset)
            cb(ctx, &x);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        e = sql_fail(cat->w, rc, "settle erasures");
    e = bfs_cat_wtx_end(cat, &tx, e);
    if (e < 0)
        return e;
    int64_t pending = 0;
    e = rquery(cat, "SELECT count(*) FROM erasures WHERE done_at IS NULL", NULL, NULL, count_row,
               &pending);
    return e < 0 ? e : (int)(pending > INT32_MAX ? INT32_MAX : pending);
}

struct erasures_ctx {
    int (*cb)(void *ctx, const struct bfs_erasure *e);
    void *ctx;
};

static int erasure_row(sqlite3_stmt *st, void *p)
{
    struct erasures_ctx *x = p;
    const struct bfs_erasure e = {
        .seq = sqlite3_column_int64(st, 0),
        .node = (const char *)sqlite3_column_text(st, 1),
        .dataset = (const char *)sqlite3_column_text(st, 2),
        .table = (const char *)sqlite3_column_text(st, 3),
        .period = (const char *)sqlite3_column_text(st, 4),
        .erased_at = sqlite3_column_int64(st, 5),
        .committed_at = sqlite3_column_int64(st, 6),
        .done_at = sqlite3_column_int64(st, 7),
    };
    return x->cb(x->ctx, &e);
}

int bfs_catalog_erasures(struct bfs_catalog *cat, int (*cb)(void *ctx, const struct bfs_erasure *e),
                         void *ctx)
{
    struct erasures_ctx x = {cb, ctx};
    return rquery(cat,
                  "SELECT seq, node, dataset_id, table_name, period_tag, erased_at, committed_at,"
                  " coalesce(done_at, 0) FROM erasures ORDER BY seq",
                  NULL, NULL, erasure_row, &x);
}

int bfs_catalog_erase_counts(struct bfs_catalog *cat, uint64_t *pending, uint64_t *total)
{
    int64_t v[2] = {0, 0};
    struct rconn *c;
    int e = bfs_cat_racquire(cat, &c);
    if (e < 0)
        return e;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        c->db, "SELECT count(*) FILTER (WHERE done_at IS NULL), count(*) FROM erasures", -1, &st,
        NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        v[0] = sqlite3_column_int64(st, 0);
        v[1] = sqlite3_column_int64(st, 1);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK)
        e = sql_fail(c->db, rc, "count erasures");
    sqlite3_finalize(st);
    bfs_cat_rrelease(cat, c);
    *pending = (uint64_t)v[0];
    *total = (uint64_t)v[1];
    return e;
}

int bfs_catalog_wipe(struct bfs_catalog *cat)
{
    pthread_mutex_lock(&cat->wmu);
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(cat->w, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log, &done);
    int e = 0;
    if (rc == SQLITE_BUSY || (rc == SQLITE_OK && log > 0))
        e = -EBUSY; /* a reader's snapshot: try again */
    else if (rc != SQLITE_OK)
        e = sql_fail(cat->w, rc, "checkpoint (truncate)");
    pthread_mutex_unlock(&cat->wmu);
    return e;
}

/* ---- store garbage ---- */

struct gc_add {
    const char *key;
    int64_t at;
    int urgent;
};

static void bind_gc_add(sqlite3_stmt *st, void *p)
{
    const struct gc_add *g = p;
    bind_text(st, 1, g->key);
    sqlite3_bind_int64(st, 2, g->at);
    sqlite3_bind_int(st, 3, g->urgent);
}

int bfs_catalog_gc_add(struct bfs_catalog *cat, const char *key, int64_t retired_at, int urgent)
{
    struct gc_add g = {key, retired_at, urgent};
    return wexec(cat, "store gc",
                 "INSERT INTO store_gc(key, retired_at, urgent) VALUES(?1, ?2, ?3)"
                 " ON CONFLICT(key) DO UPDATE SET urgent = max(urgent, excluded.urgent)",
                 bind_gc_add, &g, NULL);
}

struct gc_due {
    int64_t now, grace;
    int (*cb)(void *ctx, const char *key, int urgent);
    void *ctx;
};

static void bind_gc_due(sqlite3_stmt *st, void *p)
{
    const struct gc_due *g = p;
    sqlite3_bind_int64(st, 1, g->now - g->grace);
}

static int gc_due_row(sqlite3_stmt *st, void *p)
{
    struct gc_due *g = p;
    const char *key = (const char *)sqlite3_column_text(st, 0);
    return key ? g->cb(g->ctx, key, sqlite3_column_int(st, 1)) : -EIO;
}

int bfs_catalog_gc_due(struct bfs_catalog *cat, int64_t now, int64_t grace,
                       int (*cb)(void *ctx, const char *key, int urgent), void *ctx)
{
    struct gc_due g = {now, grace, cb, ctx};
    return rquery(cat,
                  "SELECT key, urgent FROM store_gc WHERE urgent != 0 OR retired_at <= ?1"
                  " ORDER BY urgent DESC, retired_at",
                  bind_gc_due, &g, gc_due_row, &g);
}

static void bind_key(sqlite3_stmt *st, void *p)
{
    bind_text(st, 1, p);
}

int bfs_catalog_gc_done(struct bfs_catalog *cat, const char *key)
{
    int e =
        wexec(cat, "store gc", "DELETE FROM store_gc WHERE key = ?1", bind_key, (void *)key, NULL);
    if (e == 0)
        e = wexec(cat, "store gc", "DELETE FROM erase_hits WHERE file_path = ?1", bind_key,
                  (void *)key, NULL);
    return e;
}

/* ---- the compactor's reads ---- */

struct cand_ctx {
    int (*cb)(void *ctx, const struct bfs_compact_candidate *c);
    void *ctx;
};

static int cand_row(sqlite3_stmt *st, void *p)
{
    struct cand_ctx *x = p;
    const struct bfs_compact_candidate c = {
        .table = (const char *)sqlite3_column_text(st, 0),
        .period = (const char *)sqlite3_column_text(st, 1),
        .archives = sqlite3_column_int64(st, 2),
        .rolled = sqlite3_column_int64(st, 3),
        .newest = sqlite3_column_int64(st, 4),
        .dirty = sqlite3_column_int64(st, 5),
        .erased_at = sqlite3_column_int64(st, 6),
    };
    return c.table && c.period ? x->cb(x->ctx, &c) : -EIO;
}

int bfs_catalog_compact_candidates(struct bfs_catalog *cat,
                                   int (*cb)(void *ctx, const struct bfs_compact_candidate *c),
                                   void *ctx)
{
    struct cand_ctx x = {cb, ctx};
    return rquery(
        cat,
        "SELECT a.table_name, a.period_tag, count(*),"
        " sum((SELECT r.kind = 0 FROM rolls r WHERE r.id = a.roll_id)), max(a.created_at),"
        " sum(a.dirty), coalesce((SELECT min(e.committed_at) FROM erase_hits h"
        "  JOIN erasures e ON e.seq = h.seq JOIN archived_files b ON b.file_path = h.file_path"
        "  WHERE b.table_name = a.table_name AND b.period_tag = a.period_tag"
        "  AND e.done_at IS NULL), 0)"
        " FROM archived_files a WHERE a.ord > 0 GROUP BY a.table_name, a.period_tag"
        " ORDER BY a.table_name, a.period_tag",
        NULL, NULL, cand_row, &x);
}

struct part_args {
    const char *table, *period;
    int64_t upto;
    const char *after;
    int max;
};

static void bind_part(sqlite3_stmt *st, void *p)
{
    const struct part_args *a = p;
    bind_text(st, 1, a->table);
    bind_text(st, 2, a->period);
    if (sqlite3_bind_parameter_count(st) >= 3)
        sqlite3_bind_int64(st, 3, a->upto);
    if (sqlite3_bind_parameter_count(st) >= 5) {
        bind_text(st, 4, a->after);
        sqlite3_bind_int(st, 5, a->max);
    }
}

int bfs_catalog_compact_sources(struct bfs_catalog *cat, const char *table, const char *period,
                                int64_t *upto,
                                int (*cb)(void *ctx, const struct bfs_compact_source *s), void *ctx)
{
    struct rconn *c;
    int e = bfs_cat_racquire(cat, &c);
    if (e < 0)
        return e;
    sqlite3_stmt *st = NULL;
    /* One read transaction: the position and the archives are of one state. */
    int rc = run(c->st[R_BEGIN]);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c->db, "SELECT log_pos FROM ledger WHERE id = 1", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *upto = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(c->db,
                                "SELECT a.id, a.file_path, a.size, a.header_length, a.schema_id,"
                                " s.json, a.dirty FROM archived_files a LEFT JOIN schemas s ON"
                                " s.id = a.schema_id WHERE a.table_name = ?1 AND a.period_tag = ?2"
                                " AND a.ord > 0 ORDER BY a.ord, a.id",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        e = sql_fail(c->db, rc, "compaction sources");
        goto out;
    }
    bind_text(st, 1, table);
    bind_text(st, 2, period);
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const struct bfs_compact_source s = {
            .id = sqlite3_column_int64(st, 0),
            .key = (const char *)sqlite3_column_text(st, 1),
            .size = (uint64_t)sqlite3_column_int64(st, 2),
            .header_length = (uint64_t)sqlite3_column_int64(st, 3),
            .schema_id = sqlite3_column_int64(st, 4),
            .schema_json = (const char *)sqlite3_column_text(st, 5),
            .dirty = sqlite3_column_int(st, 6),
        };
        if (!s.key || !s.schema_json) {
            bfs_error("catalog: archive %s has no schema", s.key ? s.key : "?");
            e = -EIO;
        } else {
            e = cb(ctx, &s);
        }
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "compaction sources");
out:
    sqlite3_finalize(st);
    bfs_cat_rrelease(cat, c);
    return e;
}

struct rows_ctx {
    int (*cb)(void *ctx, const struct bfs_compact_row *r);
    void *ctx;
    int n;
};

static int compact_row(sqlite3_stmt *st, void *p)
{
    struct rows_ctx *x = p;
    const struct bfs_compact_row r = {
        .dataset = (const char *)sqlite3_column_text(st, 0),
        .file_id = sqlite3_column_int64(st, 1),
        .start = (uint64_t)sqlite3_column_int64(st, 2),
        .length = (uint64_t)sqlite3_column_int64(st, 3),
        .records = (uint64_t)sqlite3_column_int64(st, 4),
        .uploaded_at = sqlite3_column_int64(st, 5),
    };
    if (!r.dataset)
        return -EIO;
    x->n++;
    return x->cb(x->ctx, &r);
}

int bfs_catalog_compact_rows(struct bfs_catalog *cat, const char *table, const char *period,
                             int64_t upto, const char *after, int max_datasets,
                             int (*cb)(void *ctx, const struct bfs_compact_row *r), void *ctx)
{
    struct part_args a = {table, period, upto, after, max_datasets};
    struct rows_ctx x = {cb, ctx, 0};
    /* The page is of datasets with rows in the sources: one only in a later
     * roll's archive (or one before the log) would fill it with nothing,
     * and an empty page ends the caller's walk, dropping the datasets after
     * it from the compaction. */
    int e = rquery(cat,
                   "SELECT i.dataset_id, i.file_id, i.start_byte, i.length, i.record_count,"
                   " i.uploaded_at FROM block_indexes i JOIN archived_files a ON a.id = i.file_id"
                   " WHERE i.table_name = ?1 AND i.period_tag = ?2 AND a.ord > 0 AND a.ord <= ?3"
                   " AND i.dataset_id IN (SELECT DISTINCT j.dataset_id FROM block_indexes j"
                   "  JOIN archived_files b ON b.id = j.file_id WHERE j.table_name = ?1"
                   "  AND j.period_tag = ?2 AND j.dataset_id > ?4 AND b.ord > 0 AND b.ord <= ?3"
                   "  ORDER BY j.dataset_id LIMIT ?5)"
                   " ORDER BY i.dataset_id, a.ord, i.file_id, i.id",
                   bind_part, &a, compact_row, &x);
    return e < 0 ? e : x.n;
}

struct comp_args {
    const char *id, *table, *period;
    int64_t upto, now;
};

static void bind_comp(sqlite3_stmt *st, void *p)
{
    const struct comp_args *a = p;
    bind_text(st, 1, a->id);
    if (sqlite3_bind_parameter_count(st) >= 5) {
        bind_text(st, 2, a->table);
        bind_text(st, 3, a->period);
        sqlite3_bind_int64(st, 4, a->upto);
        sqlite3_bind_int64(st, 5, a->now);
    }
}

int bfs_catalog_compaction_begin(struct bfs_catalog *cat, const char *id, const char *table,
                                 const char *period, int64_t upto)
{
    struct comp_args a = {id, table, period, upto, (int64_t)time(NULL)};
    return wexec(cat, "compaction",
                 "INSERT OR REPLACE INTO compactions(id, table_name, period_tag, upto, started_at)"
                 " VALUES(?1, ?2, ?3, ?4, ?5)",
                 bind_comp, &a, NULL);
}

int bfs_catalog_compaction_end(struct bfs_catalog *cat, const char *id)
{
    struct comp_args a = {.id = id};
    return wexec(cat, "compaction", "DELETE FROM compactions WHERE id = ?1", bind_comp, &a, NULL);
}

struct comps_ctx {
    int (*cb)(void *ctx, const char *id, const char *table, const char *period, int64_t upto);
    void *ctx;
};

static int comp_row(sqlite3_stmt *st, void *p)
{
    struct comps_ctx *x = p;
    const char *id = (const char *)sqlite3_column_text(st, 0);
    const char *t = (const char *)sqlite3_column_text(st, 1);
    const char *pe = (const char *)sqlite3_column_text(st, 2);
    return id && t && pe ? x->cb(x->ctx, id, t, pe, sqlite3_column_int64(st, 3)) : -EIO;
}

int bfs_catalog_compactions(struct bfs_catalog *cat,
                            int (*cb)(void *ctx, const char *id, const char *table,
                                      const char *period, int64_t upto),
                            void *ctx)
{
    struct comps_ctx x = {cb, ctx};
    return rquery(cat, "SELECT id, table_name, period_tag, upto FROM compactions ORDER BY id", NULL,
                  NULL, comp_row, &x);
}

static int state_row(sqlite3_stmt *st, void *p)
{
    *(int *)p = sqlite3_column_int(st, 0) ? 2 : 1;
    return 0;
}

int bfs_catalog_compaction_state(struct bfs_catalog *cat, const char *id)
{
    int state = 0;
    struct comp_args a = {.id = id};
    int e = rquery(cat,
                   "SELECT void FROM rolls WHERE id = ?1 AND kind = 1 AND committed_at IS NOT NULL",
                   bind_comp, &a, state_row, &state);
    return e < 0 ? e : state;
}

struct hitk_ctx {
    int (*cb)(void *ctx, const char *key);
    void *ctx;
};

static void bind_seq(sqlite3_stmt *st, void *p)
{
    sqlite3_bind_int64(st, 1, *(const int64_t *)p);
}

static int hitk_row(sqlite3_stmt *st, void *p)
{
    struct hitk_ctx *x = p;
    const char *key = (const char *)sqlite3_column_text(st, 0);
    return key ? x->cb(x->ctx, key) : -EIO;
}

int bfs_catalog_erase_hit_keys(struct bfs_catalog *cat, int64_t seq,
                               int (*cb)(void *ctx, const char *key), void *ctx)
{
    struct hitk_ctx x = {cb, ctx};
    return rquery(cat, "SELECT file_path FROM erase_hits WHERE seq = ?1 ORDER BY file_path",
                  bind_seq, &seq, hitk_row, &x);
}
