/* test_manifest.c - roll manifests and checkpoints: written, read back entry
 * for entry, deterministic bytes, and every kind of damage or misplaced entry
 * refused with a reason. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/manifest.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "testblock.h"

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
    struct bfs_manifest_visitor v = {on_roll, on_archive, on_index, s, NULL, NULL};
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    int rc = bfs_manifest_read(fd, &v, err);
    close(fd);
    return rc;
}

/* Write a file with fn twice, at dir/a and dir/b (their paths into p1 and
 * p2): the same size (into *size) and SHA-256, as the bytes are a function
 * of the entries. */
static void write_twice(void (*fn)(const char *path, uint8_t sha[32], uint64_t *size),
                        const char *a, const char *b, char p1[128], char p2[128], uint64_t *size)
{
    snprintf(p1, 128, "%s/%s", dir, a);
    snprintf(p2, 128, "%s/%s", dir, b);
    uint8_t s1[32], s2[32];
    uint64_t z2;
    fn(p1, s1, size);
    fn(p2, s2, &z2);
    assert_int_equal(*size, z2);
    assert_memory_equal(s1, s2, 32);
}

static void test_round_trip_and_determinism(void **state)
{
    (void)state;
    char p1[128], p2[128];
    uint64_t z1;
    write_twice(write_manifest, "m1.avro", "m2.avro", p1, p2, &z1);
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

/* ---- checkpoints ---- */

#define CK_ROLLS 5

static const int64_t CK_SEQ[CK_ROLLS] = {1, 2, 4, 7, 8};
static const char *const CK_NODES[] = {"node-a", "node-b", "z"};

/* Roll k of the checkpoint: archive k (archive_of) with the index rows
 * [k * N_INDEX / CK_ROLLS, (k + 1) * N_INDEX / CK_ROLLS); roll 2 has two
 * archives, the second without rows. */
static void ck_roll_of(int k, struct bfs_manifest_roll *r, char *id, size_t idlen)
{
    snprintf(id, idlen, "node-%c-20251218T13000%dZ-0f3a9c21-%d", k % 2 ? 'b' : 'a', k, 10 * k + 1);
    *r = (struct bfs_manifest_roll){.node = k % 2 ? "node-b" : "node-a",
                                    .roll_id = id,
                                    .rows = 1 + k,
                                    .bytes = 999 * (N_INDEX / CK_ROLLS),
                                    .claimed_at = 1766062800 + k};
}

static void write_checkpoint(const char *path, uint8_t sha[32], uint64_t *size)
{
    struct bfs_manifest_writer *w;
    assert_int_equal(bfs_checkpoint_create(path, &w), 0);
    char id[128], key[128], name[32];
    for (int k = 0; k < CK_ROLLS; k++) {
        struct bfs_manifest_roll r;
        ck_roll_of(k, &r, id, sizeof id);
        assert_int_equal(bfs_checkpoint_add_roll(w, &r, CK_SEQ[k], 3 + k, 1766063000 + k), 0);
        struct bfs_manifest_archive a;
        archive_of(k, &a, key, sizeof key);
        assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
        for (int i = k * N_INDEX / CK_ROLLS; i < (k + 1) * N_INDEX / CK_ROLLS; i++) {
            struct bfs_manifest_index x;
            index_of(i, &x, name, sizeof name);
            assert_int_equal(bfs_manifest_add_index(w, &x), 0);
        }
        if (k == 2) {
            archive_of(100, &a, key, sizeof key);
            assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
        }
    }
    for (int n = 0; n < 3; n++)
        assert_int_equal(bfs_checkpoint_add_node(w, CK_NODES[n], 10 + n), 0);
    assert_int_equal(bfs_manifest_finish(w, sha, size), 0);
}

struct ck_seen {
    int rolls, archives, indexes, nodes, bad;
    int k; /* the current roll */
    int arch_of_roll;
};

static int ck_on_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                      int64_t committed_at)
{
    struct ck_seen *s = ctx;
    struct bfs_manifest_roll want;
    char id[128];
    s->k = s->rolls++;
    s->arch_of_roll = 0;
    ck_roll_of(s->k, &want, id, sizeof id);
    if (s->nodes || strcmp(r->node, want.node) || strcmp(r->roll_id, want.roll_id) ||
        r->rows != want.rows || r->bytes != want.bytes || r->claimed_at != want.claimed_at ||
        seq != CK_SEQ[s->k] || epoch != 3 + s->k || committed_at != 1766063000 + s->k)
        s->bad++;
    return 0;
}

static int ck_on_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct ck_seen *s = ctx;
    struct bfs_manifest_archive want;
    char key[128];
    archive_of(s->arch_of_roll++ ? 100 : s->k, &want, key, sizeof key);
    if (s->nodes || strcmp(a->key, want.key) || a->size != want.size ||
        a->header_length != want.header_length || memcmp(a->sha256, want.sha256, 32) ||
        a->codec != want.codec)
        s->bad++;
    s->archives++;
    return 0;
}

static int ck_on_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct ck_seen *s = ctx;
    struct bfs_manifest_index want;
    char name[32];
    index_of(s->indexes, &want, name, sizeof name);
    if (s->nodes || s->arch_of_roll != 1 || s->indexes / (N_INDEX / CK_ROLLS) != s->k ||
        strcmp(x->dataset, want.dataset) || x->start != want.start || x->length != want.length ||
        x->records != want.records || x->uploaded_at != want.uploaded_at)
        s->bad++;
    s->indexes++;
    return 0;
}

static int ck_on_node(void *ctx, const char *node, int64_t epoch)
{
    struct ck_seen *s = ctx;
    if (s->nodes >= 3 || strcmp(node, CK_NODES[s->nodes]) || epoch != 10 + s->nodes)
        s->bad++;
    s->nodes++;
    return 0;
}

static int ck_read_path(const char *path, struct ck_seen *s, struct bfs_err *err)
{
    struct bfs_checkpoint_visitor v = {ck_on_roll, ck_on_archive, ck_on_index, ck_on_node,
                                       s,          NULL,          NULL};
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    int rc = bfs_checkpoint_read(fd, &v, err);
    close(fd);
    return rc;
}

static void test_checkpoint_round_trip(void **state)
{
    (void)state;
    char p1[128], p2[128];
    uint64_t z1, z2;
    write_twice(write_checkpoint, "c1.avro", "c2.avro", p1, p2, &z1);
    z2 = z1;
    struct bfs_buf b1 = {0}, b2 = {0};
    int f1 = open(p1, O_RDONLY), f2 = open(p2, O_RDONLY);
    assert_int_equal(bfs_buf_reserve(&b1, z1), 0);
    assert_int_equal(bfs_buf_reserve(&b2, z2), 0);
    assert_int_equal(read(f1, b1.data, z1), (ssize_t)z1);
    assert_int_equal(read(f2, b2.data, z2), (ssize_t)z2);
    close(f1);
    close(f2);
    assert_memory_equal(b1.data, b2.data, z1);
    bfs_buf_free(&b1);
    bfs_buf_free(&b2);

    struct ck_seen s = {0};
    struct bfs_err err = {0};
    assert_int_equal(ck_read_path(p1, &s, &err), 0);
    assert_int_equal(s.rolls, CK_ROLLS);
    assert_int_equal(s.archives, CK_ROLLS + 1);
    assert_int_equal(s.indexes, N_INDEX);
    assert_int_equal(s.nodes, 3);
    assert_int_equal(s.bad, 0);

    /* a checkpoint is not a manifest, and a manifest is a checkpoint of no
     * Commit: refused both ways */
    struct seen m = {0};
    assert_int_equal(read_path(p1, &m, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "Commit entry in a manifest"));
    char pm[128];
    snprintf(pm, sizeof pm, "%s/m.avro", dir);
    uint8_t sm[32];
    uint64_t zm;
    write_manifest(pm, sm, &zm);
    struct ck_seen c = {0};
    assert_int_equal(ck_read_path(pm, &c, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "not followed by its Commit"));
}

static void test_checkpoint_writer_refuses(void **state)
{
    (void)state;
    char p[128], id[128], key[128], name[32];
    snprintf(p, sizeof p, "%s/ck-bad.avro", dir);
    struct bfs_manifest_writer *w;
    struct bfs_manifest_roll r;
    struct bfs_manifest_archive a;
    struct bfs_manifest_index x;
    uint8_t sha[32];
    uint64_t size;
    ck_roll_of(0, &r, id, sizeof id);
    archive_of(0, &a, key, sizeof key);
    index_of(0, &x, name, sizeof name);

    /* checkpoint entries in a manifest */
    assert_int_equal(bfs_manifest_create(p, &ROLL, &w), 0);
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 1, 1, 1), -EINVAL);
    assert_int_equal(bfs_checkpoint_add_node(w, "a", 1), -EINVAL);
    bfs_manifest_abort(w);

    assert_int_equal(bfs_checkpoint_create(p, &w), 0);
    assert_int_equal(bfs_manifest_add_archive(w, &a), -EINVAL);         /* before any roll */
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 0, 1, 1), -EINVAL); /* seq from 1 */
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 5, -1, 1), -EINVAL);
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 5, 1, -1), -EINVAL);
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 5, 1, 1), 0);
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 5, 1, 1), -EINVAL); /* seq not above */
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 4, 1, 1), -EINVAL);
    assert_int_equal(bfs_manifest_add_index(w, &x), -EINVAL); /* before the roll's archive */
    assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
    assert_int_equal(bfs_manifest_add_index(w, &x), 0);
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 6, 1, 1), 0);
    assert_int_equal(bfs_manifest_add_index(w, &x), -EINVAL); /* the archive was the last roll's */
    assert_int_equal(bfs_checkpoint_add_node(w, "bad node", 1), -EINVAL);
    assert_int_equal(bfs_checkpoint_add_node(w, "b", -1), -EINVAL);
    assert_int_equal(bfs_checkpoint_add_node(w, "b", 1), 0);
    assert_int_equal(bfs_checkpoint_add_node(w, "b", 2), -EINVAL); /* names increase */
    assert_int_equal(bfs_checkpoint_add_node(w, "a", 2), -EINVAL);
    assert_int_equal(bfs_checkpoint_add_roll(w, &r, 7, 1, 1), -EINVAL); /* after the nodes */
    assert_int_equal(bfs_manifest_add_archive(w, &a), -EINVAL);
    assert_int_equal(bfs_manifest_add_index(w, &x), -EINVAL);
    assert_int_equal(bfs_checkpoint_add_node(w, "c", 1), 0);
    assert_int_equal(bfs_manifest_finish(w, sha, &size), 0);
    struct ck_seen s = {0};
    struct bfs_err err = {0};
    struct bfs_checkpoint_visitor v = {NULL, NULL, NULL, NULL, &s, NULL, NULL};
    int fd = open(p, O_RDONLY);
    assert_int_equal(bfs_checkpoint_read(fd, &v, &err), 0);
    close(fd);
    unlink(p);

    /* an empty checkpoint is not finished */
    assert_int_equal(bfs_checkpoint_create(p, &w), 0);
    assert_int_equal(bfs_manifest_finish(w, sha, &size), -EINVAL);
    struct stat st;
    assert_int_equal(stat(p, &st), -1);
}

/* Files of any entries: the manifest header, then one deflate block. */
struct raw {
    struct bfs_buf b;
    int n;
    int v1; /* write version 1 (no Archive.versions) */
    int v3; /* write version 3 (Roll.base; Compact, Retire, Erase), else version 2 */
};

static void raw_str(struct raw *r, const char *s)
{
    assert_int_equal(bfs_buf_put_long(&r->b, (int64_t)strlen(s)), 0);
    assert_int_equal(bfs_buf_append(&r->b, s, strlen(s)), 0);
}

static void raw_long(struct raw *r, int64_t v)
{
    assert_int_equal(bfs_buf_put_long(&r->b, v), 0);
}

static void raw_roll(struct raw *r, const char *id)
{
    raw_long(r, 0);
    raw_str(r, "node-a");
    raw_str(r, id);
    raw_long(r, 1);
    raw_long(r, 999);
    raw_long(r, 1766062800);
    if (r->v3)
        raw_long(r, 5); /* base */
    r->n++;
}

/* A Compact entry of T1/P1 up to upto with retired Retire entries to follow. */
static void raw_compact(struct raw *r, int64_t upto, int64_t retired)
{
    raw_long(r, 5);
    raw_str(r, "node-a");
    raw_str(r, "node-a-c1");
    raw_str(r, "battle");
    raw_str(r, "2025-12-18");
    raw_long(r, upto);
    raw_long(r, 999);
    raw_long(r, retired);
    r->n++;
}

static void raw_retire(struct raw *r, const char *key)
{
    raw_long(r, 6);
    raw_str(r, key);
    r->n++;
}

/* An Erase entry of user1 in (table, period), or everywhere (NULL). */
static void raw_erase(struct raw *r, const char *table, const char *period)
{
    raw_long(r, 7);
    raw_str(r, "node-b");
    raw_str(r, "user1");
    raw_long(r, table ? 1 : 0);
    if (table)
        raw_str(r, table);
    raw_long(r, period ? 1 : 0);
    if (period)
        raw_str(r, period);
    raw_long(r, 1766064000);
    r->n++;
}

static void raw_archive(struct raw *r, const char *key)
{
    raw_long(r, 1);
    raw_str(r, key);
    raw_str(r, "battle");
    raw_str(r, "2025-12-18");
    raw_long(r, 100000);
    raw_long(r, 3000);
    uint8_t sha[32] = {1};
    assert_int_equal(bfs_buf_append(&r->b, sha, 32), 0);
    raw_str(r, "0123456789abcdef");
    raw_str(r, "deflate");
    if (!r->v1)
        raw_long(r, 0); /* versions: none */
    r->n++;
}

static void raw_index(struct raw *r)
{
    raw_long(r, 2);
    raw_str(r, "user1");
    raw_long(r, 3000);
    raw_long(r, 999);
    raw_long(r, 5);
    raw_long(r, 1766062000);
    r->n++;
}

static void raw_commit(struct raw *r, int64_t seq)
{
    raw_long(r, 3);
    raw_long(r, seq);
    raw_long(r, 2);
    raw_long(r, 1766063000);
    r->n++;
}

static void raw_node(struct raw *r, const char *node)
{
    raw_long(r, 4);
    raw_str(r, node);
    raw_long(r, 2);
    r->n++;
}

static void raw_write(struct raw *r, const char *path)
{
    char *canon;
    size_t clen;
    uint8_t sync[16];
    struct bfs_buf f = {0};
    const char *schema = r->v1   ? bfs_manifest_schema_v1
                         : r->v3 ? bfs_manifest_schema
                                 : bfs_manifest_schema_v2;
    assert_int_equal(bfs_schema_canonical(schema, strlen(schema), &canon, &clen, NULL), 0);
    assert_int_equal(bfs_schema_sync(canon, clen, sync), 0);
    free(canon);
    assert_int_equal(bfs_ocf_layout_header(schema, strlen(schema), BFS_CODEC_DEFLATE, sync, &f), 0);
    if (r->n)
        tblock_make(BFS_CODEC_DEFLATE, r->b.data, r->b.len, r->n, sync, &f);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, f.data, f.len), (ssize_t)f.len);
    close(fd);
    bfs_buf_free(&f);
    bfs_buf_free(&r->b);
    r->n = 0;
}

/* Read the raw file as a checkpoint (ckpt) or a manifest: the result, and
 * with -EINVAL a reason containing want. */
static void raw_expect(struct raw *r, int ckpt, int want_rc, const char *want)
{
    char p[128];
    snprintf(p, sizeof p, "%s/raw.avro", dir);
    raw_write(r, p);
    struct ck_seen cs = {0};
    struct seen ms = {0};
    struct bfs_checkpoint_visitor cv = {NULL, NULL, NULL, NULL, &cs, NULL, NULL};
    struct bfs_manifest_visitor mv = {NULL, NULL, NULL, &ms, NULL, NULL};
    struct bfs_err err = {0};
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    int rc = ckpt ? bfs_checkpoint_read(fd, &cv, &err) : bfs_manifest_read(fd, &mv, &err);
    close(fd);
    if (rc != want_rc || (want && !strstr(err.msg, want)))
        fail_msg("read gives %d (%s), expected %d (%s)", rc, err.msg, want_rc, want ? want : "");
}

/* An archive's versions: what the writer puts, the reader gives; a manifest
 * of version 1 (no versions) is still read, with none. */
struct vseen {
    size_t n;
    char first[17];
};

static int vseen_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct vseen *v = ctx;
    v->n = a->n_versions;
    if (a->n_versions)
        memcpy(v->first, a->versions[0], 17);
    return 0;
}

static void test_manifest_versions(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/versions.avro", dir);
    const struct bfs_manifest_roll roll = {"node-a", "node-a-1", 1, 999, 1766062800, 0};
    struct bfs_manifest_writer *w;
    assert_int_equal(bfs_manifest_create(p, &roll, &w), 0);
    const char fps[2][17] = {"00000000000000aa", "00000000000000bb"};
    struct bfs_manifest_archive a = {.key = "battle/2025-12-18/node-a-1-0.avro",
                                     .table = "battle",
                                     .period = "2025-12-18",
                                     .size = 4000,
                                     .header_length = 3000,
                                     .schema_fingerprint = "0123456789abcdef",
                                     .codec = BFS_CODEC_DEFLATE,
                                     .n_versions = 2,
                                     .versions = fps};
    assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
    const struct bfs_manifest_index x = {"user1", 3000, 999, 5, 1766062000};
    assert_int_equal(bfs_manifest_add_index(w, &x), 0);
    uint8_t sha[32];
    uint64_t size;
    assert_int_equal(bfs_manifest_finish(w, sha, &size), 0);
    struct vseen vs = {0};
    struct bfs_manifest_visitor mv = {NULL, vseen_archive, NULL, &vs, NULL, NULL};
    struct bfs_err err = {0};
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(bfs_manifest_read(fd, &mv, &err), 0);
    close(fd);
    assert_int_equal(vs.n, 2);
    assert_string_equal(vs.first, "00000000000000aa");
    /* a bad fingerprint is refused by the writer */
    const char bad[1][17] = {"xyz"};
    a.versions = bad;
    a.n_versions = 1;
    unlink(p);
    assert_int_equal(bfs_manifest_create(p, &roll, &w), 0);
    assert_int_equal(bfs_manifest_add_archive(w, &a), -EINVAL);
    bfs_manifest_abort(w);
    /* version 1 */
    struct raw r = {.v1 = 1};
    raw_roll(&r, "node-a-1");
    raw_archive(&r, "battle/2025-12-18/node-a-1-0.avro");
    raw_index(&r);
    raw_write(&r, p);
    vs = (struct vseen){.n = 99};
    fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(bfs_manifest_read(fd, &mv, &err), 0);
    close(fd);
    assert_int_equal(vs.n, 0);
}

static void test_checkpoint_reader_refuses(void **state)
{
    (void)state;
    struct raw r = {0};
    /* the raw writer makes what the real one does */
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_index(&r);
    raw_roll(&r, "r2");
    raw_commit(&r, 4);
    raw_node(&r, "a");
    raw_node(&r, "b");
    raw_expect(&r, 1, 0, NULL);
    raw_roll(&r, "r1");
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_index(&r);
    raw_expect(&r, 0, 0, NULL);
    raw_node(&r, "a"); /* nodes only: all the log's rolls were fenced */
    raw_expect(&r, 1, 0, NULL);

    /* a Commit or a Node in a manifest */
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_expect(&r, 0, -EINVAL, "a Commit entry in a manifest");
    raw_roll(&r, "r1");
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_node(&r, "a");
    raw_expect(&r, 0, -EINVAL, "a Node entry in a manifest");
    raw_commit(&r, 3);
    raw_expect(&r, 0, -EINVAL, "a Commit entry in a manifest");
    /* a Roll without its Commit: followed by anything else, or at the end */
    raw_roll(&r, "r1");
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_expect(&r, 1, -EINVAL, "not followed by its Commit");
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_roll(&r, "r2");
    raw_roll(&r, "r3");
    raw_expect(&r, 1, -EINVAL, "not followed by its Commit");
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_roll(&r, "r2");
    raw_expect(&r, 1, -EINVAL, "without its Commit");
    /* a Commit without a Roll */
    raw_commit(&r, 3);
    raw_expect(&r, 1, -EINVAL, "does not follow a Roll");
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_commit(&r, 4);
    raw_expect(&r, 1, -EINVAL, "does not follow a Roll");
    /* seq not increasing */
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_roll(&r, "r2");
    raw_commit(&r, 3);
    raw_expect(&r, 1, -EINVAL, "seq is not above");
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_roll(&r, "r2");
    raw_commit(&r, 2);
    raw_expect(&r, 1, -EINVAL, "seq is not above");
    raw_roll(&r, "r1");
    raw_commit(&r, 0);
    raw_expect(&r, 1, -EINVAL, "a Commit entry with a bad field");
    /* Node entries before a roll, before an archive or index row, twice */
    raw_node(&r, "a");
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_expect(&r, 1, -EINVAL, "a Roll entry after a Node entry");
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_node(&r, "a");
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_expect(&r, 1, -EINVAL, "after a Node entry");
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_node(&r, "a");
    raw_index(&r);
    raw_expect(&r, 1, -EINVAL, "after a Node entry");
    raw_node(&r, "b");
    raw_node(&r, "a");
    raw_expect(&r, 1, -EINVAL, "increasing order");
    raw_node(&r, "a");
    raw_node(&r, "a");
    raw_expect(&r, 1, -EINVAL, "increasing order");
    /* archives and index rows belong to a roll */
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_expect(&r, 1, -EINVAL, "before any Roll");
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_roll(&r, "r2");
    raw_commit(&r, 4);
    raw_index(&r);
    raw_expect(&r, 1, -EINVAL, "before any Archive entry of its roll");
    /* no entries at all */
    raw_expect(&r, 1, -EINVAL, "no entries");
    raw_expect(&r, 0, -EINVAL, "no entries");
}

/* ---- version 3: compactions, Roll.base, erasures in checkpoints ---- */

/* Every entry a read gives, as a line of text. */
static void tr_line(void *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tr_line(void *ctx, const char *fmt, ...)
{
    struct bfs_buf *b = ctx;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    assert_int_equal(bfs_buf_printf(b, "%s\n", line), 0);
}

static int tr_roll(void *ctx, const struct bfs_manifest_roll *r)
{
    tr_line(ctx, "roll %s %s %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64, r->node, r->roll_id,
            r->rows, r->bytes, r->claimed_at, r->base);
    return 0;
}

static int tr_compact(void *ctx, const struct bfs_manifest_compact *c)
{
    tr_line(ctx, "compact %s %s %s/%s %" PRId64 " %" PRId64 " %" PRId64, c->node, c->compact_id,
            c->table, c->period, c->upto, c->bytes, c->retired);
    return 0;
}

static int tr_retire(void *ctx, const char *key)
{
    tr_line(ctx, "retire %s", key);
    return 0;
}

static int tr_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    tr_line(ctx, "archive %s %s/%s %" PRIu64 " %" PRIu64 " %02x%02x %s %s %zu", a->key, a->table,
            a->period, a->size, a->header_length, a->sha256[0], a->sha256[31],
            a->schema_fingerprint, bfs_codec_name(a->codec), a->n_versions);
    return 0;
}

static int tr_index(void *ctx, const struct bfs_manifest_index *x)
{
    tr_line(ctx, "index %s %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRId64, x->dataset, x->start,
            x->length, x->records, x->uploaded_at);
    return 0;
}

static int tr_ck_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                      int64_t at)
{
    tr_line(ctx, "@%" PRId64 " e%" PRId64 " t%" PRId64, seq, epoch, at);
    return tr_roll(ctx, r);
}

static int tr_ck_compact(void *ctx, const struct bfs_manifest_compact *c, int64_t seq,
                         int64_t epoch, int64_t at)
{
    tr_line(ctx, "@%" PRId64 " e%" PRId64 " t%" PRId64, seq, epoch, at);
    return tr_compact(ctx, c);
}

static int tr_ck_erase(void *ctx, const struct bfs_manifest_erase *x, int64_t seq, int64_t epoch,
                       int64_t at)
{
    tr_line(ctx, "@%" PRId64 " e%" PRId64 " t%" PRId64, seq, epoch, at);
    tr_line(ctx, "erase %s %s %s/%s %" PRId64, x->node, x->dataset, x->table ? x->table : "*",
            x->period ? x->period : "*", x->erased_at);
    return 0;
}

static int tr_node(void *ctx, const char *node, int64_t epoch)
{
    tr_line(ctx, "node %s %" PRId64, node, epoch);
    return 0;
}

/* Read path as a manifest (or a checkpoint) into out: the result. */
static int tr_read(const char *path, int ckpt, struct bfs_buf *out, struct bfs_err *err)
{
    bfs_buf_reset(out);
    const struct bfs_manifest_visitor mv = {tr_roll, tr_archive, tr_index,
                                            out,     tr_compact, tr_retire};
    const struct bfs_checkpoint_visitor cv = {tr_ck_roll, tr_archive,    tr_index,   tr_node,
                                              out,        tr_ck_compact, tr_ck_erase};
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    int rc = ckpt ? bfs_checkpoint_read(fd, &cv, err) : bfs_manifest_read(fd, &mv, err);
    close(fd);
    assert_int_equal(bfs_buf_append(out, "", 1), 0);
    out->len--;
    return rc;
}

static const struct bfs_manifest_compact COMPACT = {.node = "node-a",
                                                    .compact_id = "node-a-20251219T010000Z-0f3a-c9",
                                                    .table = "battle",
                                                    .period = "2025-12-18",
                                                    .upto = 9,
                                                    .bytes = 3000,
                                                    .retired = 3};

/* A compaction's manifest: COMPACT, its three Retire entries, two archives. */
static void write_compact(const char *path, uint8_t sha[32], uint64_t *size)
{
    struct bfs_manifest_writer *w;
    assert_int_equal(bfs_manifest_create_compact(path, &COMPACT, &w), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/node-a-r1-0.avro"), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/node-b-r2-0.avro"), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/node-a-c4-1.avro"), 0);
    char key[128], name[32];
    for (int k = 0; k < 2; k++) {
        struct bfs_manifest_archive a;
        archive_of(k, &a, key, sizeof key);
        assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
        for (int i = k * 2; i < k * 2 + 2; i++) {
            struct bfs_manifest_index x;
            index_of(i, &x, name, sizeof name);
            assert_int_equal(bfs_manifest_add_index(w, &x), 0);
        }
    }
    assert_int_equal(bfs_manifest_finish(w, sha, size), 0);
}

static void test_compact_manifest(void **state)
{
    (void)state;
    char p1[128], p2[128];
    uint64_t z1;
    write_twice(write_compact, "cm1.avro", "cm2.avro", p1, p2, &z1);
    struct bfs_buf t = {0};
    struct bfs_err err = {0};
    assert_int_equal(tr_read(p1, 0, &t, &err), 0);
    assert_string_equal(
        (const char *)t.data,
        "compact node-a node-a-20251219T010000Z-0f3a-c9 battle/2025-12-18 9 3000 3\n"
        "retire battle/2025-12-18/node-a-r1-0.avro\n"
        "retire battle/2025-12-18/node-b-r2-0.avro\n"
        "retire battle/2025-12-18/node-a-c4-1.avro\n"
        "archive battle/2025-12-18/node-a-20251218T130000Z-42-0.avro battle/2025-12-18 100000000 "
        "3000 00d9 0123456789abcdef deflate 0\n"
        "index user00000 3001 999 0 1766062000\n"
        "index user00001 4001 999 1 1766062001\n"
        "archive battle/2025-12-18/node-a-20251218T130000Z-42-1.avro battle/2025-12-18 100000000 "
        "3001 01da 0123456789abcdef snappy 0\n"
        "index user00002 5001 999 2 1766062002\n"
        "index user00003 6001 999 3 1766062003\n");
    /* a manifest reader without compaction callbacks reads it too */
    struct seen sn = {0};
    assert_int_equal(read_path(p1, &sn, &err), 0);
    assert_int_equal(sn.rolls, 0);
    assert_int_equal(sn.archives, 2);
    /* nor is it a checkpoint */
    assert_int_equal(tr_read(p1, 1, &t, &err), -EINVAL);
    bfs_buf_free(&t);
}

static void test_compact_writer_refuses(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/cw.avro", dir);
    struct bfs_manifest_writer *w;
    /* bad fields: nothing is created */
    struct bfs_manifest_compact c = COMPACT;
    c.upto = 0;
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), -EINVAL);
    c = COMPACT;
    c.bytes = -1;
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), -EINVAL);
    c = COMPACT;
    c.retired = -1;
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), -EINVAL);
    c = COMPACT;
    c.node = "no de";
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), -EINVAL);
    c = COMPACT;
    c.table = "../x";
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), -EINVAL);
    c = COMPACT;
    c.period = "";
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), -EINVAL);
    struct stat st;
    assert_int_equal(stat(p, &st), -1);

    char key[128];
    struct bfs_manifest_archive a;
    archive_of(0, &a, key, sizeof key);
    /* an archive before the last Retire entry; a bad key; too many */
    c = COMPACT;
    c.retired = 2;
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/a-0.avro"), 0);
    assert_int_equal(bfs_manifest_add_archive(w, &a), -EINVAL);
    assert_int_equal(bfs_manifest_add_retire(w, "../etc/passwd"), -EINVAL);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/b-0.avro"), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/c-0.avro"), -EINVAL);
    assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/c-0.avro"), -EINVAL);
    uint8_t sha[32];
    uint64_t size;
    assert_int_equal(bfs_manifest_finish(w, sha, &size), 0);
    unlink(p);
    /* short of Retire entries at the end: refused, the file removed */
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/a-0.avro"), 0);
    assert_int_equal(bfs_manifest_finish(w, sha, &size), -EINVAL);
    assert_int_equal(stat(p, &st), -1);
    /* none: a compaction that retires nothing (allowed: the log decides) */
    c.retired = 0;
    assert_int_equal(bfs_manifest_create_compact(p, &c, &w), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/a-0.avro"), -EINVAL);
    bfs_manifest_abort(w);
    /* a roll's manifest has none; a checkpoint none either */
    assert_int_equal(bfs_manifest_create(p, &ROLL, &w), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/a-0.avro"), -EINVAL);
    bfs_manifest_abort(w);
    assert_int_equal(bfs_checkpoint_create(p, &w), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/a-0.avro"), -EINVAL);
    bfs_manifest_abort(w);
    assert_int_equal(stat(p, &st), -1);
}

static void test_compact_reader_refuses(void **state)
{
    (void)state;
    struct raw r = {.v3 = 1};
    /* the raw writer makes what the real one does */
    raw_compact(&r, 9, 2);
    raw_retire(&r, "battle/2025-12-18/r1-0.avro");
    raw_retire(&r, "battle/2025-12-18/r2-0.avro");
    raw_archive(&r, "battle/2025-12-18/c1-0.avro");
    raw_index(&r);
    raw_expect(&r, 0, 0, NULL);
    raw_compact(&r, 9, 0); /* nothing retired, nothing written */
    raw_expect(&r, 0, 0, NULL);
    /* Retire entries short, at an archive or at the end */
    raw_compact(&r, 9, 2);
    raw_retire(&r, "battle/2025-12-18/r1-0.avro");
    raw_archive(&r, "battle/2025-12-18/c1-0.avro");
    raw_expect(&r, 0, -EINVAL, "fewer Retire entries");
    raw_compact(&r, 9, 2);
    raw_retire(&r, "battle/2025-12-18/r1-0.avro");
    raw_expect(&r, 0, -EINVAL, "ends before the Compact entry's Retire entries");
    /* long */
    raw_compact(&r, 9, 1);
    raw_retire(&r, "battle/2025-12-18/r1-0.avro");
    raw_retire(&r, "battle/2025-12-18/r2-0.avro");
    raw_expect(&r, 0, -EINVAL, "does not follow its Compact");
    /* after an archive; in a roll's manifest */
    raw_compact(&r, 9, 1);
    raw_retire(&r, "battle/2025-12-18/r1-0.avro");
    raw_archive(&r, "battle/2025-12-18/c1-0.avro");
    raw_retire(&r, "battle/2025-12-18/r2-0.avro");
    raw_expect(&r, 0, -EINVAL, "does not follow its Compact");
    raw_roll(&r, "r1");
    raw_retire(&r, "battle/2025-12-18/r2-0.avro");
    raw_expect(&r, 0, -EINVAL, "does not follow its Compact");
    raw_compact(&r, 9, 1);
    raw_retire(&r, "../x");
    raw_expect(&r, 0, -EINVAL, "a Retire entry with a bad key");
    /* Compact not first, twice, after a Roll */
    raw_roll(&r, "r1");
    raw_compact(&r, 9, 0);
    raw_expect(&r, 0, -EINVAL, "a Compact entry that is not the first entry");
    raw_compact(&r, 9, 0);
    raw_compact(&r, 9, 0);
    raw_expect(&r, 0, -EINVAL, "a Compact entry that is not the first entry");
    raw_compact(&r, 9, 0);
    raw_roll(&r, "r1");
    raw_expect(&r, 0, -EINVAL, "a Roll entry that is not the first entry");
    /* bad fields */
    raw_compact(&r, 0, 0);
    raw_expect(&r, 0, -EINVAL, "a Compact entry with a bad field");
    raw_compact(&r, 9, -1);
    raw_expect(&r, 0, -EINVAL, "a Compact entry with a bad field");
    /* Erase entries are for checkpoints */
    raw_roll(&r, "r1");
    raw_erase(&r, "battle", "2025-12-18");
    raw_expect(&r, 0, -EINVAL, "an Erase entry in a manifest");
    raw_erase(&r, NULL, NULL);
    raw_expect(&r, 0, -EINVAL, "an Erase entry in a manifest");
    /* version 2 knows none of them */
    struct raw r2 = {0};
    raw_compact(&r2, 9, 0);
    raw_expect(&r2, 0, -EINVAL, "an unknown entry kind");
    raw_roll(&r2, "r1");
    raw_erase(&r2, NULL, NULL);
    raw_expect(&r2, 1, -EINVAL, "not followed by its Commit");
}

static void test_roll_base(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/base.avro", dir);
    struct bfs_manifest_roll roll = ROLL;
    roll.base = 17;
    struct bfs_manifest_writer *w;
    assert_int_equal(bfs_manifest_create(p, &roll, &w), 0);
    uint8_t sha[32];
    uint64_t size;
    assert_int_equal(bfs_manifest_finish(w, sha, &size), 0);
    struct bfs_buf t = {0};
    struct bfs_err err = {0};
    assert_int_equal(tr_read(p, 0, &t, &err), 0);
    assert_string_equal((const char *)t.data,
                        "roll node-a 20251218T130000Z-42 7 3 1766062800 17\n");
    unlink(p);
    roll.base = -1;
    assert_int_equal(bfs_manifest_create(p, &roll, &w), -EINVAL);
    /* version 3 raw, and version 2: no base (INT64_MAX) */
    struct raw r = {.v3 = 1};
    raw_roll(&r, "r1");
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_index(&r);
    raw_write(&r, p);
    assert_int_equal(tr_read(p, 0, &t, &err), 0);
    assert_non_null(strstr((const char *)t.data, "roll node-a r1 1 999 1766062800 5\n"));
    r = (struct raw){0};
    raw_roll(&r, "r1");
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_index(&r);
    raw_write(&r, p);
    assert_int_equal(tr_read(p, 0, &t, &err), 0);
    assert_non_null(
        strstr((const char *)t.data, "roll node-a r1 1 999 1766062800 9223372036854775807\n"));
    /* a checkpoint of version 2 too */
    raw_roll(&r, "r1");
    raw_commit(&r, 3);
    raw_node(&r, "a");
    raw_write(&r, p);
    assert_int_equal(tr_read(p, 1, &t, &err), 0);
    assert_string_equal((const char *)t.data,
                        "@3 e2 t1766063000\nroll node-a r1 1 999 1766062800 9223372036854775807\n"
                        "node a 2\n");
    bfs_buf_free(&t);
}

static void test_checkpoint_v3(void **state)
{
    (void)state;
    char p[128];
    snprintf(p, sizeof p, "%s/ck3.avro", dir);
    struct bfs_manifest_writer *w;
    assert_int_equal(bfs_checkpoint_create(p, &w), 0);
    struct bfs_manifest_roll roll = ROLL;
    roll.base = 0;
    char key[128], name[32];
    struct bfs_manifest_archive a;
    struct bfs_manifest_index x;
    assert_int_equal(bfs_checkpoint_add_roll(w, &roll, 1, 1, 1766063001), 0);
    archive_of(0, &a, key, sizeof key);
    assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
    index_of(0, &x, name, sizeof name);
    assert_int_equal(bfs_manifest_add_index(w, &x), 0);
    /* a compaction: retired must be 0 here */
    struct bfs_manifest_compact c = COMPACT;
    assert_int_equal(bfs_checkpoint_add_compact(w, &c, 4, 2, 1766063004), -EINVAL);
    c.retired = 0;
    c.upto = 3;
    assert_int_equal(bfs_checkpoint_add_compact(w, &c, 1, 2, 1766063004), -EINVAL); /* seq */
    assert_int_equal(bfs_checkpoint_add_compact(w, &c, 4, 2, 1766063004), 0);
    assert_int_equal(bfs_manifest_add_retire(w, "battle/2025-12-18/a-0.avro"), -EINVAL);
    archive_of(1, &a, key, sizeof key);
    assert_int_equal(bfs_manifest_add_archive(w, &a), 0);
    index_of(1, &x, name, sizeof name);
    assert_int_equal(bfs_manifest_add_index(w, &x), 0);
    /* an erasure: no archive or index row after it */
    const struct bfs_manifest_erase half = {"node-b", "user1", "battle", NULL, 1766064000};
    assert_int_equal(bfs_checkpoint_add_erase(w, &half, 5, 1, 1766064100), -EINVAL);
    const struct bfs_manifest_erase bad = {"node-b", "us er", NULL, NULL, 1766064000};
    assert_int_equal(bfs_checkpoint_add_erase(w, &bad, 5, 1, 1766064100), -EINVAL);
    const struct bfs_manifest_erase e1 = {"node-b", "user1", "battle", "2025-12-18", 1766064000};
    assert_int_equal(bfs_checkpoint_add_erase(w, &e1, 4, 1, 1766064100), -EINVAL); /* seq */
    assert_int_equal(bfs_checkpoint_add_erase(w, &e1, 5, 1, 1766064100), 0);
    assert_int_equal(bfs_manifest_add_archive(w, &a), -EINVAL);
    assert_int_equal(bfs_manifest_add_index(w, &x), -EINVAL);
    const struct bfs_manifest_erase e2 = {"node-b", "user2", NULL, NULL, 1766064001};
    assert_int_equal(bfs_checkpoint_add_erase(w, &e2, 6, 1, 1766064101), 0);
    roll.roll_id = "r7";
    roll.base = 6;
    assert_int_equal(bfs_checkpoint_add_roll(w, &roll, 7, 1, 1766063007), 0);
    assert_int_equal(bfs_checkpoint_add_node(w, "node-a", 2), 0);
    assert_int_equal(bfs_checkpoint_add_node(w, "node-b", 1), 0);
    /* nothing but nodes after the nodes */
    assert_int_equal(bfs_checkpoint_add_erase(w, &e2, 8, 1, 1766064101), -EINVAL);
    assert_int_equal(bfs_checkpoint_add_compact(w, &c, 8, 2, 1766063004), -EINVAL);
    uint8_t sha[32];
    uint64_t size;
    assert_int_equal(bfs_manifest_finish(w, sha, &size), 0);
    struct bfs_buf t = {0};
    struct bfs_err err = {0};
    int rc = tr_read(p, 1, &t, &err);
    if (rc != 0)
        fail_msg("read: %d %s", rc, err.msg);
    assert_string_equal(
        (const char *)t.data,
        "@1 e1 t1766063001\n"
        "roll node-a 20251218T130000Z-42 7 3 1766062800 0\n"
        "archive battle/2025-12-18/node-a-20251218T130000Z-42-0.avro battle/2025-12-18 100000000 "
        "3000 00d9 0123456789abcdef deflate 0\n"
        "index user00000 3001 999 0 1766062000\n"
        "@4 e2 t1766063004\n"
        "compact node-a node-a-20251219T010000Z-0f3a-c9 battle/2025-12-18 3 3000 0\n"
        "archive battle/2025-12-18/node-a-20251218T130000Z-42-1.avro battle/2025-12-18 100000000 "
        "3001 01da 0123456789abcdef snappy 0\n"
        "index user00001 4001 999 1 1766062001\n"
        "@5 e1 t1766064100\n"
        "erase node-b user1 battle/2025-12-18 1766064000\n"
        "@6 e1 t1766064101\n"
        "erase node-b user2 */* 1766064001\n"
        "@7 e1 t1766063007\n"
        "roll node-a r7 7 3 1766062800 6\n"
        "node node-a 2\n"
        "node node-b 1\n");
    /* a manifest reader refuses it */
    assert_int_equal(tr_read(p, 0, &t, &err), -EINVAL);
    bfs_buf_free(&t);
}

static void test_checkpoint_v3_reader_refuses(void **state)
{
    (void)state;
    struct raw r = {.v3 = 1};
    /* the raw writer makes what the real one does */
    raw_roll(&r, "r1");
    raw_commit(&r, 1);
    raw_compact(&r, 1, 0);
    raw_commit(&r, 2);
    raw_archive(&r, "battle/2025-12-18/c1-0.avro");
    raw_index(&r);
    raw_erase(&r, NULL, NULL);
    raw_commit(&r, 3);
    raw_erase(&r, "battle", "2025-12-18");
    raw_commit(&r, 4);
    raw_roll(&r, "r2");
    raw_commit(&r, 5);
    raw_node(&r, "a");
    raw_expect(&r, 1, 0, NULL);
    raw_erase(&r, NULL, NULL); /* erasures only */
    raw_commit(&r, 3);
    raw_expect(&r, 1, 0, NULL);
    /* a Compact with Retire entries */
    raw_compact(&r, 1, 1);
    raw_commit(&r, 2);
    raw_expect(&r, 1, -EINVAL, "a Compact entry with a bad field");
    raw_compact(&r, 1, 0);
    raw_retire(&r, "battle/2025-12-18/r1-0.avro");
    raw_expect(&r, 1, -EINVAL, "not followed by its Commit");
    raw_compact(&r, 1, 0);
    raw_commit(&r, 2);
    raw_retire(&r, "battle/2025-12-18/r1-0.avro");
    raw_expect(&r, 1, -EINVAL, "does not follow its Compact");
    /* an Erase not followed by its Commit */
    raw_erase(&r, NULL, NULL);
    raw_roll(&r, "r1");
    raw_expect(&r, 1, -EINVAL, "not followed by its Commit");
    raw_erase(&r, NULL, NULL);
    raw_expect(&r, 1, -EINVAL, "without its Commit");
    raw_compact(&r, 1, 0);
    raw_expect(&r, 1, -EINVAL, "without its Commit");
    /* an archive or index row after an Erase */
    raw_roll(&r, "r1");
    raw_commit(&r, 1);
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_erase(&r, NULL, NULL);
    raw_commit(&r, 2);
    raw_archive(&r, "battle/2025-12-18/r1-1.avro");
    raw_expect(&r, 1, -EINVAL, "before any Roll or Compact entry");
    raw_roll(&r, "r1");
    raw_commit(&r, 1);
    raw_archive(&r, "battle/2025-12-18/r1-0.avro");
    raw_erase(&r, NULL, NULL);
    raw_commit(&r, 2);
    raw_index(&r);
    raw_expect(&r, 1, -EINVAL, "before any Roll or Compact entry");
    /* bad erasures: a table without a period; the order of seqs; after the nodes */
    raw_erase(&r, "battle", NULL);
    raw_commit(&r, 2);
    raw_expect(&r, 1, -EINVAL, "an Erase entry with a bad field");
    raw_roll(&r, "r1");
    raw_commit(&r, 2);
    raw_erase(&r, NULL, NULL);
    raw_commit(&r, 2);
    raw_expect(&r, 1, -EINVAL, "seq is not above");
    raw_roll(&r, "r1");
    raw_commit(&r, 2);
    raw_node(&r, "a");
    raw_erase(&r, NULL, NULL);
    raw_commit(&r, 3);
    raw_expect(&r, 1, -EINVAL, "after a Node entry");
    raw_node(&r, "a");
    raw_compact(&r, 1, 0);
    raw_commit(&r, 3);
    raw_expect(&r, 1, -EINVAL, "after a Node entry");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_determinism),
        cmocka_unit_test(test_writer_refuses_bad_fields),
        cmocka_unit_test(test_damage),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_checkpoint_writer_refuses),
        cmocka_unit_test(test_checkpoint_reader_refuses),
        cmocka_unit_test(test_manifest_versions),
        cmocka_unit_test(test_compact_manifest),
        cmocka_unit_test(test_compact_writer_refuses),
        cmocka_unit_test(test_compact_reader_refuses),
        cmocka_unit_test(test_roll_base),
        cmocka_unit_test(test_checkpoint_v3),
        cmocka_unit_test(test_checkpoint_v3_reader_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
