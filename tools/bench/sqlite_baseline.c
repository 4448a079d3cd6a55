/* sqlite_baseline.c - the ingest benchmark's baseline.
 *
 * Inserts the normalised upload blobs that battlefs stored (read from a
 * battlefs catalog's buffer_logs) into a fresh SQLite database with the same
 * durability battlefs promises: WAL, synchronous=FULL, one transaction (one
 * fsync) per upload, one writer. Prints one JSON line with the timing.
 *
 *   sqlite_baseline SRC_CATALOG DST_DB
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct blob {
    char *table, *period, *dataset;
    void *data;
    int len;
    long long records;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int check(int rc, sqlite3 *db, const char *what)
{
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "sqlite_baseline: %s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SRC_CATALOG DST_DB\n", argv[0]);
        return 2;
    }
    sqlite3 *src, *dst;
    check(sqlite3_open_v2(argv[1], &src, SQLITE_OPEN_READONLY, NULL), src, "open src");
    sqlite3_stmt *q;
    check(sqlite3_prepare_v2(src,
                             "SELECT table_name, period_tag, dataset_id, record_count, data "
                             "FROM buffer_logs ORDER BY id",
                             -1, &q, NULL),
          src, "prepare select");
    size_t n = 0, cap = 1024;
    long long total = 0;
    struct blob *b = malloc(cap * sizeof *b);
    if (!b)
        return 1;
    while (check(sqlite3_step(q), src, "select") == SQLITE_ROW) {
        if (n == cap) {
            struct blob *grown = realloc(b, (cap *= 2) * sizeof *b);
            if (!grown)
                return 1;
            b = grown;
        }
        b[n].table = strdup((const char *)sqlite3_column_text(q, 0));
        b[n].period = strdup((const char *)sqlite3_column_text(q, 1));
        b[n].dataset = strdup((const char *)sqlite3_column_text(q, 2));
        b[n].records = sqlite3_column_int64(q, 3);
        b[n].len = sqlite3_column_bytes(q, 4);
        b[n].data = malloc(b[n].len ? b[n].len : 1);
        memcpy(b[n].data, sqlite3_column_blob(q, 4), b[n].len);
        total += b[n].len;
        n++;
    }
    sqlite3_finalize(q);
    sqlite3_close(src);

    remove(argv[2]);
    check(sqlite3_open(argv[2], &dst), dst, "open dst");
    check(sqlite3_exec(dst,
                       "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                       "CREATE TABLE buffer_logs(id INTEGER PRIMARY KEY, table_name TEXT, "
                       "period_tag TEXT, dataset_id TEXT, record_count INTEGER, "
                       "byte_length INTEGER, data BLOB, created_at INTEGER);"
                       "CREATE INDEX buffer_logs_dataset ON buffer_logs(table_name, period_tag, "
                       "dataset_id, id);",
                       NULL, NULL, NULL),
          dst, "schema");
    sqlite3_stmt *ins;
    check(sqlite3_prepare_v2(dst,
                             "INSERT INTO buffer_logs(table_name, period_tag, dataset_id, "
                             "record_count, byte_length, data, created_at) "
                             "VALUES(?,?,?,?,?,?,strftime('%s','now'))",
                             -1, &ins, NULL),
          dst, "prepare insert");
    double t0 = now();
    for (size_t i = 0; i < n; i++) {
        check(sqlite3_exec(dst, "BEGIN IMMEDIATE", NULL, NULL, NULL), dst, "begin");
        sqlite3_bind_text(ins, 1, b[i].table, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, b[i].period, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, b[i].dataset, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 4, b[i].records);
        sqlite3_bind_int64(ins, 5, b[i].len);
        sqlite3_bind_blob(ins, 6, b[i].data, b[i].len, SQLITE_STATIC);
        check(sqlite3_step(ins), dst, "insert");
        sqlite3_reset(ins);
        check(sqlite3_exec(dst, "COMMIT", NULL, NULL, NULL), dst, "commit");
    }
    double dt = now() - t0;
    sqlite3_finalize(ins);
    sqlite3_close(dst);
    printf("{\"uploads\": %zu, \"bytes\": %lld, \"seconds\": %.6f}\n", n, total, dt);
    for (size_t i = 0; i < n; i++) {
        free(b[i].table);
        free(b[i].period);
        free(b[i].dataset);
        free(b[i].data);
    }
    free(b);
    return 0;
}
