/* catalog_pack.c - catalog: the rows of compression off the close path
 * (packer.h). A row committed with packed = 0 holds deflate blocks framed
 * as stored blocks; the packer reads it, compresses its blocks outside every
 * lock and replaces blob, byte_length and packed in one write transaction,
 * so a crash leaves each row in exactly one form. */
#include "catalog_int.h"

int bfs_catalog_unpacked(struct bfs_catalog *cat, int64_t first, int64_t last, int64_t *ids,
                         size_t max, size_t *n)
{
    *n = 0;
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(c->db,
                            "SELECT id FROM buffer_rows INDEXED BY buffer_rows_unpacked"
                            " WHERE packed = 0 AND id BETWEEN ?1 AND ?2 ORDER BY id LIMIT ?3",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, first);
        sqlite3_bind_int64(st, 2, last);
        sqlite3_bind_int64(st, 3, (int64_t)max);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max)
            ids[(*n)++] = sqlite3_column_int64(st, 0);
    }
    rc = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sql_fail(c->db, rc, "unpacked rows");
    sqlite3_finalize(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

int bfs_catalog_row_data(struct bfs_catalog *cat, int64_t id, struct bfs_buf *out, int *packed)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(c->db,
                            "SELECT r.packed, d.data FROM buffer_rows r JOIN buffer_data d"
                            " ON d.id = r.id WHERE r.id = ?1",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        *packed = sqlite3_column_int(st, 0) != 0;
        const void *p = sqlite3_column_blob(st, 1);
        size_t n = (size_t)sqlite3_column_bytes(st, 1);
        bfs_buf_reset(out);
        rc = bfs_buf_append(out, p, n) < 0 ? -ENOMEM : 0;
    } else if (rc == SQLITE_DONE) {
        rc = -ENOENT;
    } else {
        rc = sql_fail(c->db, rc, "read a row to pack");
    }
    sqlite3_finalize(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

static int pack_locked(struct bfs_catalog *cat, const struct bfs_pack_row *rows, size_t n,
                       size_t *applied)
{
    sqlite3 *db = cat->w;
    sqlite3_stmt *row = NULL, *data = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "UPDATE buffer_rows SET packed = 1, byte_length = ?2"
                                " WHERE id = ?1 AND packed = 0",
                                -1, &row, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "UPDATE buffer_data SET data = ?2 WHERE id = ?1", -1, &data,
                                NULL);
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        sqlite3_bind_int64(row, 1, rows[i].id);
        sqlite3_bind_int64(row, 2, (int64_t)rows[i].len);
        if ((rc = run(row)) != SQLITE_OK || sqlite3_changes(db) == 0)
            continue; /* packed by someone else, or gone: left as it is */
        sqlite3_bind_int64(data, 1, rows[i].id);
        rc = sqlite3_bind_blob64(data, 2, rows[i].data, rows[i].len, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = run(data);
        sqlite3_clear_bindings(data);
        if (rc == SQLITE_OK)
            (*applied)++;
    }
    int e = rc == SQLITE_OK ? 0 : sql_fail(db, rc, "pack rows");
    sqlite3_finalize(row);
    sqlite3_finalize(data);
    return e;
}

int bfs_catalog_pack_commit(struct bfs_catalog *cat, const struct bfs_pack_row *rows, size_t n,
                            size_t *applied)
{
    size_t done = 0;
    struct wtx tx = {.what = "pack", .flags = WTX_NO_SYNC};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return e;
    e = bfs_cat_wtx_end(cat, &tx, pack_locked(cat, rows, n, &done));
    if (applied)
        *applied = e == 0 ? done : 0;
    return e;
}

int bfs_catalog_roll_range(struct bfs_catalog *cat, const char *roll_id, int64_t *first,
                           int64_t *last, uint64_t *bytes)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = NULL;
    rc =
        sqlite3_prepare_v2(c->db,
                           "SELECT o.first_row, o.last_row, (SELECT coalesce(sum(b.byte_length), 0)"
                           " FROM buffer_rows b WHERE b.id BETWEEN o.first_row AND o.last_row)"
                           " FROM rolls o WHERE o.id = ?1",
                           -1, &st, NULL);
    if (rc == SQLITE_OK) {
        bind_text(st, 1, roll_id);
        rc = sqlite3_step(st);
    }
    if (rc == SQLITE_ROW) {
        *first = sqlite3_column_int64(st, 0);
        *last = sqlite3_column_int64(st, 1);
        *bytes = (uint64_t)sqlite3_column_int64(st, 2);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = -ENOENT;
    } else {
        rc = sql_fail(c->db, rc, "a roll's rows");
    }
    sqlite3_finalize(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}
