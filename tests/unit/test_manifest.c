/* test_manifest.c - roll manifests: written, read back entry for entry,
 * deterministic bytes, and every kind of damage refused with a reason. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/manifest.h"

#define N_INDEX 10000 /* three blocks of entries */

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/bfs-test-manifest-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const struct bfs_manifest_roll ROLL = {.node = "node-a",
                                              .roll_id = "20251218T130000Z-42",
                                              .rows = 7,
                                              .bytes = 3,
                                              .claimed_at = 1766062800};

static void archive_of(int k, struct bfs_manifest_archive *a, char *key, size_t keylen)
{
    snprintf(key, keylen, "battle/2025-12-18/node-a-20251218T130000Z-42-%d.avro", k);
    memset(a, 0, sizeof *a);
    a->key = key;
    a->table = "battle";
    a->period = "2025-12-18";
    a->size = 100000000;
    a->header_length = 3000 + (uint64_t)k;
    for (int i = 0; i < 32; i++)
        a->sha256[i] = (uint8_t)(i * 7 + k);
    a->schema_fingerprint = "0123456789abcdef";
    a->codec = k ? BFS_CODEC_SNAPPY : BFS_CODEC_DEFLATE;
}

static void index_of(int i, struct bfs_manifest_index *x, char *name, size_t len)
{
    snprintf(name, len, "user%05d", i);
    x->dataset = name;
    x->start = 3001 + (uint64_t)i * 1000;
    x->length = 999;
    x->records = (uint64_t)i % 17;
    x->uploaded_at = 1766062000 + i;
}

/* A manifest of ROLL, two archives, N_INDEX index rows split between them. */
static void write_manifest(const char *path, uint8_t sha[32], uint64_t *size)
{
    struct bfs_manifest_writer *w;
    assert_int_equal(bfs_manifest_create(path, &ROLL, &w), 0);
    char key[128], name[32];
    for (int k = 0; k < 2; k++) {
        struct bfs_manifest_archive a;
        archive_of(k, &a, key, sizeof key);
        assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
        for (int i = k * N_INDEX / 2; i < (k + 1) * N_INDEX / 2; i++) {
            struct bfs_manifest_index x;
            index_of(i, &x, name, sizeof name);
            assert_int_equal(bfs_manifest_add_index(w, &x), 0);
        }
    }
    assert_int_equal(bfs_manifest_finish(w, sha, size), 0);
}

struct seen {
    int rolls, archives, indexes, bad;
    int stop_at; /* stop with 99 at this index row (0: never) */
};

static int on_roll(void *ctx, const struct bfs_manifest_roll *r)
{
    struct seen *s = ctx;
    s->rolls++;
    if (strcmp(r->node, ROLL.node) || strcmp(r->roll_id, ROLL.roll_id) || r->rows != ROLL.rows ||
        r->bytes != ROLL.bytes || r->claimed_at != ROLL.claimed_at)
        s->bad++;
    return 0;
}

static int on_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct seen *s = ctx;
    struct bfs_manifest_archive want;
    char key[128];
    archive_of(s->archives, &want, key, sizeof key);
    if (strcmp(a->key, want.key) || strcmp(a->table, want.table) ||
        strcmp(a->period, want.period) || a->size != want.size ||
        a->header_length != want.header_length || memcmp(a->sha256, want.sha256, 32) ||
        strcmp(a->schema_fingerprint, want.schema_fingerprint) || a->codec != want.codec)
        s->bad++;
    s->archives++;
    return 0;
}

static int on_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct seen *s = ctx;
    struct bfs_manifest_index want;
    char name[32];
    index_of(s->indexes, &want, name, sizeof name);
    if (strcmp(x->dataset, want.dataset) || x->start != want.start || x->length != want.length ||
        x->records != want.records || x->uploaded_at != want.uploaded_at)
        s->bad++;
    s->indexes++;
    return s->stop_at && s->indexes == s->stop_at ? 99 : 0;
}

static int read_path(const char *path, struct seen *s, struct bfs_err *err)
{
    struct bfs_manifest_visitor v = {on_roll, on_archive, on_index, s};
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    int rc = bfs_manifest_read(fd, &v, err);
    close(fd);
    return rc;
}

static void test_round_trip_and_determinism(void **state)
{
    (void)state;
    char p1[128], p2[128];
    snprintf(p1, sizeof p1, "%s/m1.avro", dir);
    snprintf(p2, sizeof p2, "%s/m2.avro", dir);
    uint8_t s1[32], s2[32];
    uint64_t z1, z2;
    write_manifest(p1, s1, &z1);
    write_manifest(p2, s2, &z2);
    assert_int_equal(z1, z2);
    assert_memory_equal(s1, s2, 32);
    struct stat st;
    assert_int_equal(stat(p1, &st), 0);
    assert_int_equal((uint64_t)st.st_size, z1);
    assert_true(z1 < 100 * N_INDEX); /* deflate: a few bytes per row */
    struct seen s = {0};
    struct bfs_err err = {0};
    assert_int_equal(read_path(p1, &s, &err), 0);
    assert_int_equal(s.rolls, 1);
    assert_int_equal(s.archives, 2);
    assert_int_equal(s.indexes, N_INDEX);
    assert_int_equal(s.bad, 0);
    /* the visitor can stop the read */
    struct seen stop = {.stop_at = 5000};
    assert_int_equal(read_path(p1, &stop, &err), 99);
    /* create refuses an existing file and leaves it alone */
    struct bfs_manifest_writer *w;
    assert_int_equal(bfs_manifest_create(p1, &ROLL, &w), -EEXIST);
    assert_int_equal(stat(p1, &st), 0);
}

static void test_writer_refuses_bad_fields(void **state)
{
    (void)state;
    char p[128], key[128], name[32];
    snprintf(p, sizeof p, "%s/bad.avro", dir);
    struct bfs_manifest_writer *w;
    struct bfs_manifest_roll r = ROLL;
    r.node = "bad node";
    assert_int_equal(bfs_manifest_create(p, &r, &w), -EINVAL);
    assert_int_equal(bfs_manifest_create(p, &ROLL, &w), 0);
    struct bfs_manifest_index x;
    index_of(1, &x, name, sizeof name);
    assert_int_equal(bfs_manifest_add_index(w, &x), -EINVAL); /* before any archive */
    struct bfs_manifest_archive a;
    archive_of(0, &a, key, sizeof key);
    a.table = ".hidden";
    assert_int_equal(bfs_manifest_add_archive(w, &a), -EINVAL);
    archive_of(0, &a, key, sizeof key);
    a.schema_fingerprint = "XYZ";
    assert_int_equal(bfs_manifest_add_archive(w, &a), -EINVAL);
    archive_of(0, &a, key, sizeof key);
    assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
    x.start = 10; /* inside the header */
    assert_int_equal(bfs_manifest_add_index(w, &x), -EINVAL);
    index_of(1, &x, name, sizeof name);
    x.length = a.size; /* past the end */
    assert_int_equal(bfs_manifest_add_index(w, &x), -EINVAL);
    bfs_manifest_abort(w);
    struct stat st;
    assert_int_equal(stat(p, &st), -1); /* removed */
}

/* Every byte flipped in turn, in the header and the first block, and every
 * truncation: an error with a reason, or (a byte no check covers, e.g. inside
 * a string) entries that differ; never a crash. */
static void test_damage(void **state)
{
    (void)state;
    char p[128], q[128];
    snprintf(p, sizeof p, "%s/good.avro", dir);
    snprintf(q, sizeof q, "%s/damaged.avro", dir);
    uint8_t sha[32];
    uint64_t size;
    write_manifest(p, sha, &size);
    uint8_t *data = malloc(size);
    int fd = open(p, O_RDONLY);
    assert_int_equal(read(fd, data, size), (ssize_t)size);
    close(fd);
    int refused = 0;
    for (uint64_t cut = 0; cut < size; cut += size / 97 + 1) {
        fd = open(q, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_int_equal(write(fd, data, cut), (ssize_t)cut);
        close(fd);
        struct seen s = {0};
        struct bfs_err err = {0};
        int rc = read_path(q, &s, &err);
        if (rc == -EINVAL) {
            refused++;
            assert_true(err.msg[0] != '\0');
        }
        /* a cut between blocks reads as a shorter manifest: fewer rows */
        if (rc == 0)
            assert_true(s.indexes < N_INDEX);
    }
    assert_true(refused > 90);
    for (uint64_t at = 0; at < 4000 && at < size; at += 3) {
        data[at] ^= 0x41;
        fd = open(q, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_int_equal(write(fd, data, size), (ssize_t)size);
        close(fd);
        data[at] ^= 0x41;
        struct seen s = {0};
        struct bfs_err err = {0};
        int rc = read_path(q, &s, &err);
        assert_true(rc == 0 || rc == -EINVAL);
        if (rc == 0)
            assert_true(s.bad > 0 || s.indexes != N_INDEX);
    }
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_determinism),
        cmocka_unit_test(test_writer_refuses_bad_fields),
        cmocka_unit_test(test_damage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
