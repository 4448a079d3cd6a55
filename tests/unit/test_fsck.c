/* test_fsck.c - fsck.h on the in-memory store: a clean index, the index
 * rebuilt from the store alone, the partitions of ls, and each kind of
 * damage found with its message. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/catalog.h"
#include "battlefs/fsck.h"
#include "battlefs/fsutil.h"
#include "battlefs/roller.h"
#include "testenv.h"

#define P1 "2025-12-18"
#define P2 "2025-12-19"

struct problems {
    char lines[32][512];
    size_t n;
};

static void collect(void *arg, const char *line)
{
    struct problems *p = arg;
    if (p->n < 32)
        snprintf(p->lines[p->n++], sizeof p->lines[0], "%s", line);
}

static int has(const struct problems *p, const char *a, const char *b)
{
    for (size_t i = 0; i < p->n; i++)
        if (strstr(p->lines[i], a) && (!b || strstr(p->lines[i], b)))
            return 1;
    return 0;
}

static void dump(const struct problems *p)
{
    for (size_t i = 0; i < p->n; i++)
        print_message("  %s\n", p->lines[i]);
}

static struct bfs_fsck_counts check(struct tenv *e, struct bfs_catalog *cat, int deep,
                                    struct problems *p)
{
    memset(p, 0, sizeof *p);
    const struct bfs_fsck_opts o = {.deep = deep, .source = "catalog"};
    struct bfs_fsck_counts c;
    struct bfs_err err = {0};
    int rc = bfs_fsck_check(cat, &e->ms->base, &o, collect, p, &c, &err);
    if (rc != 0)
        fail_msg("fsck: %d %s", rc, err.msg);
    assert_int_equal(c.problems, p->n);
    return c;
}

/* Three rolls over two partitions: 3 + 2 archives (archive_max_bytes splits
 * the first roll of P1). */
static struct tenv *populated(void)
{
    struct tenv *e = tenv_new(0);
    tenv_upload_records(e, "battle", P1, "u1", 20, 2);
    tenv_upload_records(e, "battle", P1, "u2", 7, 1);
    tenv_upload_records(e, "own_ship", P2, "u1", 5, 1);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    tenv_upload_records(e, "battle", P1, "u1", 9, 3);
    tenv_upload_records(e, "battle", P1, "u3", 4, 1);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    tenv_upload_records(e, "own_ship", P2, "u2", 3, 1);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    return e;
}

static void archive_key(struct tenv *e, const char *where, struct bfs_buf *key)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT file_path FROM archived_files WHERE %s ORDER BY id LIMIT 1",
             where);
    tenv_sql_text(e, sql, key);
    assert_true(key->len > 0);
    assert_int_equal(bfs_buf_append(key, "", 1), 0);
    /* tenv_sql_text ends each row with a newline */
    char *nl = strchr((char *)key->data, '\n');
    if (nl)
        *nl = '\0';
}

static void sql_exec(struct tenv *e, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(e->db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

static void test_clean(void **state)
{
    (void)state;
    struct tenv *e = populated();
    struct problems p;
    for (int deep = 0; deep < 2; deep++) {
        struct bfs_fsck_counts c = check(e, e->cat, deep, &p);
        dump(&p);
        assert_int_equal(c.problems, 0);
        assert_int_equal(c.archives, tenv_sql_int(e, "SELECT count(*) FROM archived_files"));
        assert_int_equal(c.index_rows, tenv_sql_int(e, "SELECT count(*) FROM block_indexes"));
        assert_int_equal(c.bytes, tenv_sql_int(e, "SELECT sum(size) FROM archived_files"));
        assert_true(c.archives >= 4);
    }
    tenv_free(e);
}

/* The index rebuilt from the store alone is the same index. */
static void test_from_the_store(void **state)
{
    (void)state;
    struct tenv *e = populated();
    char dir[] = "/tmp/test_fsck_XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct bfs_catalog *cat = NULL;
    struct bfs_err err = {0};
    int rc = bfs_fsck_load_store(&e->ms->base, dir, &cat, &err);
    if (rc != 0)
        fail_msg("load: %d %s", rc, err.msg);
    struct problems p;
    struct bfs_fsck_counts c = check(e, cat, 1, &p);
    dump(&p);
    assert_int_equal(c.problems, 0);
    assert_int_equal(c.archives, tenv_sql_int(e, "SELECT count(*) FROM archived_files"));
    assert_int_equal(c.index_rows, tenv_sql_int(e, "SELECT count(*) FROM block_indexes"));
    bfs_catalog_close(cat);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    tenv_free(e);
}

struct seen {
    char lines[8][256];
    size_t n;
};

static int part_cb(void *arg, const struct bfs_fsck_partition *p)
{
    struct seen *s = arg;
    assert_true(s->n < 8);
    snprintf(s->lines[s->n++], sizeof s->lines[0], "%s/%s d=%llu a=%llu r=%llu b=%d", p->table,
             p->period, (unsigned long long)p->datasets, (unsigned long long)p->archives,
             (unsigned long long)p->records, p->bytes > 0);
    return 0;
}

static void test_partitions(void **state)
{
    (void)state;
    struct tenv *e = populated();
    struct seen s = {0};
    assert_int_equal(bfs_fsck_partitions(e->cat, NULL, NULL, part_cb, &s), 0);
    assert_int_equal(s.n, 2);
    char want[64];
    snprintf(want, sizeof want, "battle/" P1 " d=3 a=%lld r=40 b=1",
             (long long)tenv_sql_int(e, "SELECT count(*) FROM archived_files "
                                        "WHERE table_name = 'battle'"));
    assert_string_equal(s.lines[0], want);
    assert_string_equal(s.lines[1], "own_ship/" P2 " d=2 a=2 r=8 b=1");
    memset(&s, 0, sizeof s);
    assert_int_equal(bfs_fsck_partitions(e->cat, "own_ship", NULL, part_cb, &s), 0);
    assert_int_equal(s.n, 1);
    memset(&s, 0, sizeof s);
    assert_int_equal(bfs_fsck_partitions(e->cat, "battle", P2, part_cb, &s), 0);
    assert_int_equal(s.n, 0);
    tenv_free(e);
}

/* An archive one byte short, one missing. */
static void test_truncated_and_missing(void **state)
{
    (void)state;
    struct tenv *e = populated();
    struct bfs_buf k1 = {0}, k2 = {0};
    archive_key(e, "table_name = 'battle'", &k1);
    archive_key(e, "table_name = 'own_ship'", &k2);
    const struct memobj *o = memstore_find(e->ms, (char *)k1.data);
    assert_non_null(o);
    size_t len = o->len;
    uint8_t *copy = malloc(len);
    memcpy(copy, o->data, len);
    memstore_set(e->ms, (char *)k1.data, copy, len - 1);
    assert_int_equal(bfs_store_del(&e->ms->base, (char *)k2.data, NULL), 0);
    struct problems p;
    struct bfs_fsck_counts c = check(e, e->cat, 0, &p);
    dump(&p);
    char want[256];
    snprintf(want, sizeof want, ": size %zu, catalog says %zu", len - 1, len);
    assert_true(has(&p, (char *)k1.data, want));
    assert_true(has(&p, (char *)k1.data, "end past the archive's end"));
    assert_true(has(&p, (char *)k2.data, ": missing from the store (catalog: "));
    assert_true(c.problems >= 3);

    /* the same bytes, another byte changed: only the digest says so */
    copy[len - 20] ^= 1;
    memstore_set(e->ms, (char *)k1.data, copy, len);
    c = check(e, e->cat, 0, &p);
    assert_true(has(&p, (char *)k1.data, ": SHA-256 "));
    free(copy);
    bfs_buf_free(&k1);
    bfs_buf_free(&k2);
    tenv_free(e);
}

/* A populated index damaged by sql: fsck says want. */
static void damaged(const char *sql, const char *want)
{
    struct tenv *e = populated();
    struct problems p;
    sql_exec(e, sql);
    check(e, e->cat, 0, &p);
    dump(&p);
    assert_true(has(&p, want, NULL));
    tenv_free(e);
}

/* Index rows past the end, overlapping, with a wrong record count, inside
 * the header, twice for one dataset. */
static void test_bad_index_rows(void **state)
{
    (void)state;
    struct tenv *e = populated();
    struct problems p;
    sql_exec(e, "UPDATE block_indexes SET length = length + 1000 WHERE id = "
                "(SELECT max(id) FROM block_indexes)");
    check(e, e->cat, 0, &p);
    dump(&p);
    assert_int_equal(p.n, 1);
    assert_true(has(&p, "end past the archive's end", NULL));
    sql_exec(e, "UPDATE block_indexes SET length = length - 1000 WHERE id = "
                "(SELECT max(id) FROM block_indexes)");

    sql_exec(e, "UPDATE block_indexes SET record_count = record_count + 1 WHERE id = "
                "(SELECT min(id) FROM block_indexes)");
    for (int deep = 0; deep < 2; deep++) {
        check(e, e->cat, deep, &p);
        assert_int_equal(p.n, 1);
        assert_true(has(&p, "blocks hold", "catalog says"));
    }
    sql_exec(e, "UPDATE block_indexes SET record_count = record_count - 1 WHERE id = "
                "(SELECT min(id) FROM block_indexes)");

    tenv_free(e);
    /* the first row of an archive of two rows grows into the second */
    damaged("UPDATE block_indexes SET length = length + 3 WHERE id = (SELECT min(id) FROM "
            "block_indexes WHERE file_id IN (SELECT file_id FROM block_indexes "
            "GROUP BY file_id HAVING count(*) > 1))",
            "are indexed twice (the rows overlap)");
    damaged("UPDATE block_indexes SET start_byte = 3 WHERE id = "
            "(SELECT min(id) FROM block_indexes)",
            "start inside the header");
    damaged("UPDATE block_indexes SET dataset_id = 'u2' WHERE dataset_id = 'u1' AND file_id "
            "IN (SELECT file_id FROM block_indexes WHERE dataset_id = 'u2')",
            "dataset u2 has two index rows");
}

/* A record that does not decode: only --deep sees it. */
static void test_deep(void **state)
{
    (void)state;
    struct tenv *e = populated();
    struct bfs_buf k = {0};
    archive_key(e, "table_name = 'own_ship'", &k);
    const struct memobj *o = memstore_find(e->ms, (char *)k.data);
    uint8_t *copy = malloc(o->len);
    size_t len = o->len;
    memcpy(copy, o->data, len);
    /* the first block's first record: a long of 11 bytes cannot be */
    int64_t start = 0;
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT min(start_byte) FROM block_indexes WHERE file_id = "
             "(SELECT id FROM archived_files WHERE file_path = '%s')",
             (char *)k.data);
    start = tenv_sql_int(e, sql);
    /* count (1 byte), size (1 byte), then the block's 5 records of one byte:
     * each made the start of a varint that never ends */
    for (int i = 2; i < 7; i++)
        copy[start + i] = 0x80;
    memstore_set(e->ms, (char *)k.data, copy, len);
    struct problems p;
    check(e, e->cat, 0, &p);
    assert_false(has(&p, "does not decode", NULL));
    check(e, e->cat, 1, &p);
    dump(&p);
    assert_true(has(&p, (char *)k.data, "does not decode against the schema"));
    free(copy);
    bfs_buf_free(&k);
    tenv_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean),          cmocka_unit_test(test_from_the_store),
        cmocka_unit_test(test_partitions),     cmocka_unit_test(test_truncated_and_missing),
        cmocka_unit_test(test_bad_index_rows), cmocka_unit_test(test_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
