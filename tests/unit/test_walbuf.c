/* test_walbuf.c - the WAL-gathering VFS (walbuf.h): what SQLite reads is what
 * it wrote, in its own connection, in another one, and after a reopen with
 * the default VFS. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/walbuf.h"

static void exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
}

static sqlite3 *open_db(const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                     SQLITE_OK);
    exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;");
    return db;
}

/* Blob i: n bytes of a pattern of i. */
static void blob(uint8_t *p, size_t n, int i)
{
    for (size_t k = 0; k < n; k++)
        p[k] = (uint8_t)(k * 7 + (size_t)i * 13);
}

static void insert(sqlite3 *db, int from, int to, size_t n)
{
    uint8_t *p = malloc(n);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO t(id, b) VALUES(?1, ?2)", -1, &st, NULL),
                     SQLITE_OK);
    for (int i = from; i < to; i++) {
        blob(p, n, i);
        sqlite3_bind_int(st, 1, i);
        sqlite3_bind_blob(st, 2, p, (int)n, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    free(p);
}

/* Rows [0, to) are there, each with its blob. */
static void check(sqlite3 *db, int to, size_t n)
{
    uint8_t *p = malloc(n);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, b FROM t ORDER BY id", -1, &st, NULL),
                     SQLITE_OK);
    int i = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_int_equal(sqlite3_column_int(st, 0), i);
        blob(p, n, i);
        assert_int_equal(sqlite3_column_bytes(st, 1), (int)n);
        assert_memory_equal(sqlite3_column_blob(st, 1), p, n);
        i++;
    }
    assert_int_equal(i, to);
    sqlite3_finalize(st);
    free(p);
    sqlite3_stmt *ic;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &ic, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(ic), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(ic, 0), "ok");
    sqlite3_finalize(ic);
}

static void test_wal_through_walbuf(void **state)
{
    (void)state;
    const char *vfs = bfs_walbuf_vfs();
    assert_non_null(vfs);
    assert_ptr_equal(bfs_walbuf_vfs(), vfs); /* registered once */
    char dir[] = "/tmp/bfs-walbuf-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/t.db", dir);
    sqlite3 *w = open_db(path, vfs), *r = open_db(path, vfs);
    exec(w, "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB NOT NULL);"
            " PRAGMA cache_size = 20;"); /* a small cache: big transactions spill */
    size_t n = 30000;
    /* one row a transaction, then many (more than the buffer, spilled mid-way),
     * each read by the other connection between them */
    for (int i = 0; i < 20; i++) {
        insert(w, i, i + 1, n);
        check(r, i + 1, n);
    }
    exec(w, "BEGIN");
    insert(w, 20, 200, n);
    exec(w, "UPDATE t SET b = b WHERE id < 20"); /* pages written again in one transaction */
    check(w, 200, n);                            /* its own frames, before the commit */
    check(r, 20, n);                             /* the other connection: the last commit */
    exec(w, "COMMIT");
    check(r, 200, n);
    exec(w, "PRAGMA wal_checkpoint(TRUNCATE)");
    insert(w, 200, 210, n);
    check(r, 210, n);
    /* a reader's snapshot stays whole while a checkpoint writes the database
     * (gathered) and commits go on */
    exec(r, "BEGIN");
    check(r, 210, n);
    insert(w, 210, 260, n);
    exec(w, "PRAGMA wal_checkpoint(PASSIVE)");
    check(r, 210, n);
    exec(r, "COMMIT");
    check(r, 260, n);
    exec(w, "PRAGMA wal_checkpoint(TRUNCATE)");
    check(r, 260, n);
    insert(w, 260, 270, n);
    assert_int_equal(sqlite3_close(r), SQLITE_OK);
    assert_int_equal(sqlite3_close(w), SQLITE_OK);
    sqlite3 *d = open_db(path, NULL); /* the default VFS reads what was written */
    check(d, 270, n);
    assert_int_equal(sqlite3_close(d), SQLITE_OK);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wal_through_walbuf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
