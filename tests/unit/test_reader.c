/* test_reader.c - the reader's mapping of a dataset file onto its segments
 * (layout header + cold segments in archives + hot buffer rows), without a
 * mount: a real catalog, the in-memory store of testenv.c, the roller to make
 * cold segments, and struct bfs_reader_deps. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "battlefs/cache.h"
#include "battlefs/catalog.h"
#include "battlefs/reader.h"
#include "battlefs/roller.h"
#include "testenv.h"

#define P1    "2025-12-18"
#define CHUNK 16 /* read_chunk: cold segments are read in units of this */

struct fixture {
    struct tenv *e;
    struct bfs_buf hdr;
    struct bfs_reader_deps deps;
};

static void purge_all(struct tenv *e)
{
    while (bfs_catalog_purge(e->cat, 16) > 0)
        ;
}

/* battle/P1/ds: the header, three cold segments (two from a roll split at
 * archive_max_bytes, one of two rows from a second roll) and three hot ones;
 * other datasets around it. */
static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    struct tenv *e = f->e = tenv_new(0);
    tenv_upload(e, "battle", P1, "ds", 40, 1);
    tenv_upload(e, "battle", P1, "a", 30, 2);
    tenv_upload(e, "battle", P1, "ds", 25, 3);
    tenv_upload(e, "own_ship", P1, "ds", 10, 4);
    tenv_header(e, "battle", P1, &f->hdr);
    /* rows of ds: 40 | 25 (40 + 25 > 50) */
    e->roll.archive_max_bytes = f->hdr.len + 50;
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    tenv_upload(e, "battle", P1, "ds", 30, 5);
    tenv_upload(e, "battle", P1, "ds", 17, 6);
    assert_int_equal(bfs_roll_once(&e->roll), 0); /* 30 + 17: one segment */
    purge_all(e);
    tenv_upload(e, "battle", P1, "ds", 13, 7);
    tenv_upload(e, "battle", P1, "b", 5, 8);
    tenv_upload(e, "battle", P1, "ds", 1, 9);
    tenv_upload(e, "battle", P1, "ds", 33, 10);

    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", P1, "ds", &v), 0);
    static const struct {
        enum bfs_segment_kind kind;
        uint64_t len;
    } want[] = {{BFS_SEG_COLD, 40}, {BFS_SEG_COLD, 25}, {BFS_SEG_COLD, 47},
                {BFS_SEG_HOT, 13},  {BFS_SEG_HOT, 1},   {BFS_SEG_HOT, 33}};
    assert_int_equal(v.n, 6);
    for (size_t i = 0; i < v.n; i++) {
        assert_int_equal(v.seg[i].kind, want[i].kind);
        assert_int_equal(v.seg[i].length, want[i].len);
    }
    assert_int_equal(v.part.header_len, f->hdr.len);
    bfs_dataset_view_free(&v);
    f->deps = (struct bfs_reader_deps){
        .cat = e->cat, .store = &e->ms->base, .cache = NULL, .read_chunk = CHUNK};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    bfs_buf_free(&f->hdr);
    tenv_free(f->e);
    free(f);
    return 0;
}

static void want_bytes(struct fixture *f, struct bfs_buf *out)
{
    tenv_dataset_bytes(f->e, "battle", P1, "ds", f->e->n_up, out);
}

/* Read [off, off + len) and compare with want (short only at its end). */
static void expect_read(struct bfs_reader *r, const struct bfs_buf *want, uint64_t off, size_t len,
                        uint8_t *buf)
{
    size_t n = off >= want->len ? 0 : want->len - off < len ? want->len - off : len;
    ssize_t got = bfs_reader_read(r, (char *)buf, len, off);
    if (got != (ssize_t)n)
        fail_msg("read %zu at %llu: %zd bytes, want %zu", len, (unsigned long long)off, got, n);
    if (n && memcmp(buf, want->data + off, n) != 0)
        fail_msg("read %zu at %llu: other bytes", len, (unsigned long long)off);
}

/* Every offset, every length (through the end and past it): exactly the
 * concatenation of the header and the segments. */
static void test_every_offset_and_length(void **state)
{
    struct fixture *f = *state;
    struct bfs_buf want = {0};
    want_bytes(f, &want);
    struct bfs_reader *r;
    assert_int_equal(bfs_reader_open(&f->deps, "battle", P1, "ds", &r), 0);
    assert_int_equal(bfs_reader_size(r), want.len);
    uint8_t *buf = malloc(want.len + 8);
    assert_non_null(buf);
    for (uint64_t off = 0; off <= want.len + 1; off++)
        for (size_t len = 0; off + len <= want.len + 2; len++)
            expect_read(r, &want, off, len, buf);
    assert_int_equal(bfs_reader_size(r), want.len);
    bfs_reader_close(r);
    /* the same through a cache */
    char dir[160];
    snprintf(dir, sizeof dir, "%s/cache", f->e->dir);
    struct bfs_reader_deps d = f->deps;
    assert_int_equal(bfs_cache_open(dir, 1u << 20, &f->e->stats, &d.cache), 0);
    assert_int_equal(bfs_reader_open(&d, "battle", P1, "ds", &r), 0);
    for (uint64_t off = 0; off <= want.len + 1; off += 3)
        for (size_t len = 0; off + len <= want.len + 2; len += 5)
            expect_read(r, &want, off, len, buf);
    bfs_reader_close(r);
    bfs_cache_close(d.cache);
    /* no such dataset; a read_chunk of 0 */
    assert_int_equal(bfs_reader_open(&f->deps, "battle", P1, "nope", &r), -ENOENT);
    d = f->deps;
    d.read_chunk = 0;
    assert_int_equal(bfs_reader_open(&d, "battle", P1, "ds", &r), -EINVAL);
    free(buf);
    bfs_buf_free(&want);
}

/* A roll (and the purge of its blobs) while a read is under way: the read
 * meets the hot rows gone (read_hot -> -ENOENT), takes a new view and returns
 * the same bytes, now from the store. */
struct roll_on_get {
    struct tenv *e;
    int rolled;
};

static void roll_on_first_get(void *arg, const char *key)
{
    struct roll_on_get *g = arg;
    (void)key;
    if (g->rolled++)
        return;
    assert_int_equal(bfs_roll_once(&g->e->roll), 0);
    purge_all(g->e);
}

static void test_hot_rows_rolled_mid_read(void **state)
{
    struct fixture *f = *state;
    struct tenv *e = f->e;
    struct bfs_buf want = {0};
    want_bytes(f, &want);
    struct bfs_reader *r;
    assert_int_equal(bfs_reader_open(&f->deps, "battle", P1, "ds", &r), 0);
    uint8_t *buf = malloc(want.len);
    assert_non_null(buf);
    /* The read starts in the last cold segment: its store get rolls the hot
     * rows away before the read reaches them. */
    uint64_t off = f->hdr.len + 40 + 25 + 10;
    struct bfs_dataset_view before;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", P1, "ds", &before), 0);
    unsigned g0 = memstore_gets(e->ms);
    struct roll_on_get g = {e, 0};
    e->ms->on_get = roll_on_first_get;
    e->ms->on_get_arg = &g;
    unsigned puts = e->ms->data_puts;
    expect_read(r, &want, off, want.len - off, buf);
    e->ms->on_get = NULL;
    /* the roll: b 5, ds 13, ds 1 | ds 33 (archive_max_bytes: header + 50) */
    assert_int_equal(e->ms->data_puts, puts + 2);
    /* the formerly hot bytes came from the new archives */
    unsigned from_new = 0;
    for (unsigned i = g0; i < memstore_gets(e->ms); i++) {
        int known = 0;
        for (size_t k = 0; k < before.n; k++)
            known |= before.seg[k].key && strcmp(before.seg[k].key, e->ms->get_log[i].key) == 0;
        from_new += !known;
    }
    assert_true(from_new >= 2);
    bfs_dataset_view_free(&before);
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 0);
    assert_int_equal(bfs_reader_size(r), want.len);
    expect_read(r, &want, 0, want.len, buf);
    bfs_reader_close(r);

    /* A reader whose view is all hot reads them from the archive after the roll. */
    tenv_upload(e, "battle", P1, "ds", 21, 11);
    tenv_upload(e, "battle", P1, "ds", 22, 12);
    want_bytes(f, &want);
    free(buf);
    buf = malloc(want.len);
    assert_non_null(buf);
    assert_int_equal(bfs_reader_open(&f->deps, "battle", P1, "ds", &r), 0);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    purge_all(e);
    expect_read(r, &want, want.len - 30, 30, buf);
    expect_read(r, &want, 0, want.len, buf);
    bfs_reader_close(r);
    free(buf);
    bfs_buf_free(&want);
}

/* A read past the end of the view after an upload committed to the dataset:
 * a new view, the new bytes; without a commit, the end of the file. */
static void test_read_past_end_after_commit(void **state)
{
    struct fixture *f = *state;
    struct tenv *e = f->e;
    struct bfs_buf want = {0};
    want_bytes(f, &want);
    uint64_t size = want.len;
    struct bfs_reader *r, *r2;
    assert_int_equal(bfs_reader_open(&f->deps, "battle", P1, "ds", &r), 0);
    assert_int_equal(bfs_reader_open(&f->deps, "battle", P1, "ds", &r2), 0);
    uint8_t buf[512];
    assert_int_equal(bfs_reader_read(r, (char *)buf, 100, size), 0);
    assert_int_equal(bfs_reader_read(r, (char *)buf, 100, size + 50), 0);
    tenv_upload(e, "battle", P1, "other", 9, 20); /* another dataset: no new bytes here */
    assert_int_equal(bfs_reader_read(r, (char *)buf, 100, size), 0);
    assert_int_equal(bfs_reader_size(r), size);

    tenv_upload(e, "battle", P1, "ds", 20, 21);
    want_bytes(f, &want);
    assert_int_equal(want.len, size + 20);
    assert_int_equal(bfs_reader_size(r), size); /* until a read goes past it */
    expect_read(r, &want, size, 100, buf);
    assert_int_equal(bfs_reader_size(r), size + 20);
    /* a read across the old end returns the old bytes and the new ones */
    expect_read(r2, &want, size - 5, 100, buf);
    assert_int_equal(bfs_reader_size(r2), size + 20);
    /* and after a roll of the new row, once more from the store */
    tenv_upload(e, "battle", P1, "ds", 7, 22);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    purge_all(e);
    want_bytes(f, &want);
    expect_read(r, &want, size, 100, buf);
    expect_read(r, &want, 0, want.len, buf);
    bfs_reader_close(r);
    bfs_reader_close(r2);
    bfs_buf_free(&want);
}

/* Cold reads through the cache: a miss fetches exactly its unit (read_chunk
 * bytes aligned to the segment's start, the last one shorter) with one ranged
 * get; a hit fetches nothing; hot segments never touch the store. */
static void test_cold_reads_through_cache(void **state)
{
    struct fixture *f = *state;
    struct tenv *e = f->e;
    struct bfs_buf want = {0};
    want_bytes(f, &want);
    char dir[160];
    snprintf(dir, sizeof dir, "%s/cache", e->dir);
    struct bfs_reader_deps d = f->deps;
    assert_int_equal(bfs_cache_open(dir, 1u << 20, &e->stats, &d.cache), 0);

    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", P1, "ds", &v), 0);
    struct unit {
        char key[128];
        uint64_t off, len;
        uint64_t file_off; /* where the unit starts in the dataset file */
    } units[64];
    memset(units, 0, sizeof units);
    size_t nu = 0;
    uint64_t pos = v.part.header_len;
    for (size_t i = 0; i < v.n; i++) {
        const struct bfs_segment *s = &v.seg[i];
        for (uint64_t k = 0; s->kind == BFS_SEG_COLD && k < s->length; k += CHUNK) {
            assert_true(nu < 64);
            snprintf(units[nu].key, sizeof units[0].key, "%s", s->key);
            units[nu].off = s->offset + k;
            units[nu].len = s->length - k < CHUNK ? s->length - k : CHUNK;
            units[nu].file_off = pos + k;
            nu++;
        }
        pos += s->length;
    }
    bfs_dataset_view_free(&v);
    assert_int_equal(nu, 3 + 2 + 3); /* 40, 25 and 47 bytes in units of 16 */

    /* Part of one unit: that unit, once. */
    struct bfs_reader *r;
    assert_int_equal(bfs_reader_open(&d, "battle", P1, "ds", &r), 0);
    uint8_t *buf = malloc(want.len);
    assert_non_null(buf);
    unsigned g0 = memstore_gets(e->ms);
    expect_read(r, &want, units[1].file_off + 3, 5, buf);
    assert_int_equal(memstore_gets(e->ms), g0 + 1);
    assert_string_equal(e->ms->get_log[g0].key, units[1].key);
    assert_int_equal(e->ms->get_log[g0].off, units[1].off);
    assert_int_equal(e->ms->get_log[g0].len, units[1].len);
    /* The whole file: every other unit once, in order. */
    expect_read(r, &want, 0, want.len, buf);
    assert_int_equal(memstore_gets(e->ms), g0 + nu);
    for (size_t i = 0, j = g0 + 1; i < nu; i++) {
        if (i == 1)
            continue;
        assert_string_equal(e->ms->get_log[j].key, units[i].key);
        assert_int_equal(e->ms->get_log[j].off, units[i].off);
        assert_int_equal(e->ms->get_log[j].len, units[i].len);
        j++;
    }
    /* Again, and by another reader, at any offsets: all hits. */
    expect_read(r, &want, 0, want.len, buf);
    bfs_reader_close(r);
    assert_int_equal(bfs_reader_open(&d, "battle", P1, "ds", &r), 0);
    for (uint64_t off = 0; off < want.len; off += 7)
        expect_read(r, &want, off, 29, buf);
    assert_int_equal(memstore_gets(e->ms), g0 + nu);
    assert_int_equal(e->stats.cache_misses, nu);
    bfs_reader_close(r);
    bfs_cache_close(d.cache);

    /* Without a cache: each read gets exactly the bytes it needs. */
    assert_int_equal(bfs_reader_open(&f->deps, "battle", P1, "ds", &r), 0);
    g0 = memstore_gets(e->ms);
    expect_read(r, &want, units[0].file_off + 20, 30, buf); /* the last 20 of 40, 10 of 25 */
    assert_int_equal(memstore_gets(e->ms), g0 + 3);
    assert_int_equal(e->ms->get_log[g0].off, units[1].off + 4);
    assert_int_equal(e->ms->get_log[g0].len, 12);
    assert_int_equal(e->ms->get_log[g0 + 1].off, units[2].off);
    assert_int_equal(e->ms->get_log[g0 + 1].len, 8);
    assert_int_equal(e->ms->get_log[g0 + 2].off, units[3].off);
    assert_int_equal(e->ms->get_log[g0 + 2].len, 10);
    bfs_reader_close(r);
    free(buf);
    bfs_buf_free(&want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_offset_and_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hot_rows_rolled_mid_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_past_end_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cold_reads_through_cache, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
