/* catalog_roll.c - the roll protocol's side in the catalog: the pending roll,
 * claims (id ranges: see the schema comment in catalog_db.c), the claimed
 * rows paged through with a keyset, the commit, and the purge of rolled blobs. */
#include <inttypes.h>
#include <time.h>

#include "catalog_int.h"

/* ---- rolls ---- */

int bfs_catalog_roll_pending(struct bfs_catalog *cat, char roll_id[BFS_ROLL_ID_MAX],
                             uint64_t *bytes)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_PENDING];
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (id && strlen(id) < BFS_ROLL_ID_MAX) {
            memcpy(roll_id, id, strlen(id) + 1);
            if (bytes)
                *bytes = (uint64_t)sqlite3_column_int64(st, 1);
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
    bfs_cat_rrelease(cat, c);
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

/* In a write transaction: record a claim of every buffered row in id. 0 with
 * its rows and bytes, -EBUSY, -ENODATA, -errno. */
static int claim_locked(struct bfs_catalog *cat, const char *node, char id[BFS_ROLL_ID_MAX],
                        int64_t *rows, int64_t *bytes)
{
    sqlite3 *db = cat->w;
    char pending[BFS_ROLL_ID_MAX];
    int rc = pending_locked(cat, pending);
    if (rc != SQLITE_OK)
        return sql_fail(db, rc, "claim");
    if (pending[0]) {
        bfs_debug("catalog: claim refused: roll %s is pending", pending);
        return -EBUSY;
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
        return sql_fail(db, rc, "claim");
    if (empty != (n == 0) || n < 0 || total < 0 || (!empty && n > last - first + 1)) {
        bfs_error("catalog: buffer totals (%" PRId64 " rows) do not match rows %" PRId64
                  "..%" PRId64,
                  n, first, last);
        return -EIO;
    }
    if (empty)
        return -ENODATA;
    time_t now = time(NULL);
    struct tm tm;
    char stamp[32];
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    /* Row ids start again at 1 in a new state directory (a rebuilt one, or
     * another host taking the node name over): its id keeps roll ids apart. */
    char sid[16] = "";
    st = cat->ws[W_LEDGER_GET];
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        snprintf(sid, sizeof sid, "%s", (const char *)sqlite3_column_text(st, 1));
    sqlite3_reset(st);
    if (rc != SQLITE_ROW || strlen(sid) != 8)
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? -EIO : sql_fail(db, rc, "claim");
    snprintf(id, BFS_ROLL_ID_MAX, "%s-%s-%s-%" PRId64, node, stamp, sid, first);

    st = cat->ws[W_ROLL_INS];
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, (int64_t)now);
    sqlite3_bind_int64(st, 3, first);
    sqlite3_bind_int64(st, 4, last);
    sqlite3_bind_int64(st, 5, n);
    sqlite3_bind_int64(st, 6, total);
    if ((rc = run(st)) != SQLITE_OK)
        return sql_fail(db, rc, "claim");
    /* The versions of the partitions it touches, as they are now: its
     * archives are in their merges, rebuilt the same after a crash. */
    st = cat->ws[W_ROLL_VERSIONS];
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, first);
    sqlite3_bind_int64(st, 3, last);
    if ((rc = run(st)) != SQLITE_OK)
        return sql_fail(db, rc, "claim");
    *rows = n;
    *bytes = total;
    return 0;
}

int bfs_catalog_roll_claim(struct bfs_catalog *cat, const char *node, char roll_id[BFS_ROLL_ID_MAX],
                           uint64_t *rows, uint64_t *bytes)
{
    char id[BFS_ROLL_ID_MAX];
    if (!bfs_node_valid(node))
        return -EINVAL;
    int64_t n = 0, total = 0;
    struct wtx tx = {.what = "claim"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e == 0)
        e = bfs_cat_wtx_end(cat, &tx, claim_locked(cat, node, id, &n, &total));
    if (e < 0)
        return e;
    memcpy(roll_id, id, strlen(id) + 1);
    *rows = (uint64_t)n;
    *bytes = (uint64_t)total;
    return 0;
}

int bfs_catalog_purge(struct bfs_catalog *cat, int rows)
{
    assert(rows > 0);
    struct wtx tx = {.what = "purge"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return e;
    sqlite3_stmt *st = cat->ws[W_PURGE];
    sqlite3_bind_int(st, 1, rows);
    int rc = run(st);
    int n = rc == SQLITE_OK ? sqlite3_changes(cat->w) : sql_fail(cat->w, rc, "purge rolled blobs");
    e = bfs_cat_wtx_end(cat, &tx, n < 0 ? n : 0);
    return e < 0 ? e : n;
}

struct page_row {
    int64_t id, schema_id;
    int64_t created_at;
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

/* The id range [lo, hi] of roll_id's rows (and, if info is not NULL, its
 * claim): 0, -ENOENT or -errno. */
static int roll_get(struct bfs_catalog *cat, const char *roll_id, int64_t *lo, int64_t *hi,
                    struct bfs_roll_info *info)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_ROLL_GET];
    bind_text(st, 1, roll_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *lo = sqlite3_column_int64(st, 0);
        *hi = sqlite3_column_int64(st, 1);
        if (info) {
            info->claimed_at = sqlite3_column_int64(st, 2);
            info->rows = (uint64_t)sqlite3_column_int64(st, 3);
            info->bytes = (uint64_t)sqlite3_column_int64(st, 4);
            info->base = sqlite3_column_int64(st, 5);
        }
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : sql_fail(c->db, rc, "look a roll up");
    }
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

/* Read up to ROLL_PAGE rows with ids in [lo, hi] that come after *last in
 * (table, period, dataset, id) order into rows. The number read or -errno. */
static int roll_page(struct bfs_catalog *cat, int64_t lo, int64_t hi, const struct page_row *last,
                     struct page_row *rows)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
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
            r->created_at = sqlite3_column_int64(st, 6);
            r->schema_id = sqlite3_column_int64(st, 7);
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
    bfs_cat_rrelease(cat, c);
    return n;
}

int bfs_catalog_roll_rows(struct bfs_catalog *cat, const char *roll_id,
                          int (*cb)(void *ctx, const struct bfs_roll_row *row), void *ctx)
{
    int64_t lo, hi;
    int ret = roll_get(cat, roll_id, &lo, &hi, NULL);
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
                .schema_id = rows[i].schema_id,
                .table = rows[i].table,
                .period = rows[i].period,
                .dataset = rows[i].dataset,
                .records = rows[i].records,
                .length = rows[i].length,
                .created_at = rows[i].created_at,
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

int bfs_catalog_roll_info(struct bfs_catalog *cat, const char *roll_id, struct bfs_roll_info *info)
{
    int64_t lo, hi;
    return roll_get(cat, roll_id, &lo, &hi, info);
}
