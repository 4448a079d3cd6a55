/* test_ocf.c - OCF header parsing, block validation, normalisation, layout headers.
 *
 * Files come from two places: fixtures written by python3-avro
 * (tests/data/ocf/, see tools/gen_ocf_fixtures.py) and files built here byte
 * by byte, so that every rejection can be produced exactly.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>

#include "battlefs/buf.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "testblock.h"

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

static uint8_t *slurp(const char *name, size_t *n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/ocf/%s", BFS_TEST_DATA, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)sz + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return buf;
}

static const char *SCHEMA =
    "{\"type\":\"record\",\"name\":\"T\",\"namespace\":\"t\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"long\"},"
    "{\"name\":\"name\",\"type\":\"string\"},"
    "{\"name\":\"tags\",\"type\":{\"type\":\"array\",\"items\":\"int\"}},"
    "{\"name\":\"opt\",\"type\":[\"null\",\"string\"]},"
    "{\"name\":\"ok\",\"type\":\"boolean\"},"
    "{\"name\":\"rank\",\"type\":{\"type\":\"enum\",\"name\":\"R\",\"symbols\":[\"A\",\"B\"]}},"
    "{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":\"long\"}}]}";

static const uint8_t SYNC_A[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t SYNC_B[16] = {0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7,
                                   0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf};

static void put_long(struct bfs_buf *b, int64_t v)
{
    assert_int_equal(bfs_buf_put_long(b, v), 0);
}

static void put_bytes(struct bfs_buf *b, const void *p, size_t n)
{
    put_long(b, (int64_t)n);
    assert_int_equal(bfs_buf_append(b, p, n), 0);
}

static void put_str(struct bfs_buf *b, const char *s)
{
    put_bytes(b, s, strlen(s));
}

/* One record of SCHEMA, number i. */
static void rec(struct bfs_buf *b, int i)
{
    char name[32];
    snprintf(name, sizeof name, "name-%d", i);
    put_long(b, (int64_t)i * 7919 - 3);
    put_str(b, name);
    put_long(b, i % 4); /* tags: one block of i % 4 items */
    for (int k = 0; k < i % 4; k++)
        put_long(b, k * 1000 - i);
    if (i % 4)
        put_long(b, 0);
    put_long(b, i % 2); /* opt */
    if (i % 2)
        put_str(b, "x");
    uint8_t ok = (uint8_t)(i % 3 == 0);
    assert_int_equal(bfs_buf_append(b, &ok, 1), 0);
    put_long(b, i % 2); /* rank */
    put_long(b, 1);     /* m: {"k": i} */
    put_str(b, "k");
    put_long(b, i);
    put_long(b, 0);
}

/* The header of a file: codec NULL leaves avro.codec out; extra adds a key. */
static void hdr(struct bfs_buf *f, const char *codec, const char *schema, const uint8_t sync[16])
{
    assert_int_equal(bfs_buf_append(f, "Obj\x01", 4), 0);
    put_long(f, (codec ? 1 : 0) + (schema ? 1 : 0) + 1);
    if (codec) {
        put_str(f, "avro.codec");
        put_str(f, codec);
    }
    if (schema) {
        put_str(f, "avro.schema");
        put_str(f, schema);
    }
    put_str(f, "user.key");
    put_str(f, "v");
    put_long(f, 0);
    assert_int_equal(bfs_buf_append(f, sync, 16), 0);
}

/* The codec named codec ("null", "deflate", "snappy"). */
static enum bfs_codec codec_of(const char *codec)
{
    enum bfs_codec c;
    assert_int_equal(bfs_codec_parse(codec, strlen(codec), &c), 0);
    return c;
}

/* A block of count records numbered from first. */
static void blk(struct bfs_buf *f, int first, int count, const char *codec, const uint8_t sync[16])
{
    struct bfs_buf plain = {0};
    for (int i = 0; i < count; i++)
        rec(&plain, first + i);
    tblock_make(codec_of(codec), plain.data, plain.len, count, sync, f);
    bfs_buf_free(&plain);
}

/* A valid file of `nblocks` blocks of 5 records. */
static void file(struct bfs_buf *f, const char *codec, int nblocks)
{
    f->len = 0;
    hdr(f, codec, SCHEMA, SYNC_A);
    for (int b = 0; b < nblocks; b++)
        blk(f, b * 5, 5, codec ? codec : "null", SYNC_A);
}

/* Parse and process; return the rc and leave the message in err. */
static int check(const uint8_t *buf, size_t len, uint64_t *records, struct bfs_err *err)
{
    struct bfs_ocf_header h;
    int rc = bfs_ocf_parse_header(buf, len, &h, err);
    if (rc < 0)
        return rc;
    struct bfs_buf out = {0};
    rc = bfs_ocf_process(buf, len, &h, SYNC_B, BFS_CODEC_DEFLATE, &out, records, BFS_OCF_CROSSCHECK,
                         0, err);
    bfs_buf_free(&out);
    bfs_ocf_header_free(&h);
    return rc;
}

static void expect_ok(const uint8_t *buf, size_t len, uint64_t want_records)
{
    struct bfs_err err = {0};
    uint64_t records = 999;
    int rc = check(buf, len, &records, &err);
    if (rc != 0)
        fail_msg("expected success, got %d: %s", rc, err.msg);
    assert_int_equal(records, want_records);
}

static void expect_reject(const uint8_t *buf, size_t len, const char *needle)
{
    struct bfs_err err = {0};
    uint64_t records;
    int rc = check(buf, len, &records, &err);
    if (rc != -EINVAL)
        fail_msg("expected -EINVAL (%s), got %d: %s", needle, rc, err.msg);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
    assert_null(strchr(err.msg, '\n'));
    assert_int_equal(err.code, -EINVAL); /* the reason carries the errno returned */
}

static size_t header_len_of(const uint8_t *buf, size_t len)
{
    struct bfs_ocf_header h;
    struct bfs_err err;
    assert_int_equal(bfs_ocf_parse_header(buf, len, &h, &err), 0);
    size_t n = h.header_len;
    bfs_ocf_header_free(&h);
    return n;
}

/* ------------------------------------------------------------------------ */
/* codecs and headers                                                        */

static void test_codec_names(void **state)
{
    (void)state;
    enum bfs_codec c;
    assert_int_equal(bfs_codec_parse("null", 4, &c), 0);
    assert_int_equal(c, BFS_CODEC_NULL);
    assert_int_equal(bfs_codec_parse("deflate", 7, &c), 0);
    assert_int_equal(c, BFS_CODEC_DEFLATE);
    assert_int_equal(bfs_codec_parse("snappy", 6, &c), 0);
    assert_int_equal(c, BFS_CODEC_SNAPPY);
    assert_int_equal(bfs_codec_parse("snappyx", 6, &c), 0); /* length counts */
    assert_int_equal(bfs_codec_parse("snappy", 5, &c), -EINVAL);
    assert_int_equal(bfs_codec_parse("lzma", 4, &c), -EINVAL);
    assert_int_equal(bfs_codec_parse("", 0, &c), -EINVAL);
    assert_string_equal(bfs_codec_name(BFS_CODEC_NULL), "null");
    assert_string_equal(bfs_codec_name(BFS_CODEC_DEFLATE), "deflate");
    assert_string_equal(bfs_codec_name(BFS_CODEC_SNAPPY), "snappy");
}

static void test_header_fields(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    file(&f, "snappy", 1);
    struct bfs_ocf_header h;
    struct bfs_err err;
    assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h, &err), 0);
    assert_int_equal(h.codec, BFS_CODEC_SNAPPY);
    assert_memory_equal(h.sync, SYNC_A, 16);
    assert_string_equal(h.schema_json, SCHEMA);
    assert_int_equal(h.schema_len, strlen(SCHEMA));
    assert_int_equal(h.n_meta, 3);
    const struct bfs_ocf_meta *m = bfs_ocf_meta_get(&h, "user.key");
    assert_non_null(m);
    assert_int_equal(m->val_len, 1);
    assert_string_equal((const char *)m->val, "v");
    assert_null(bfs_ocf_meta_get(&h, "nope"));
    /* the header ends right before the first block */
    struct bfs_buf hb = {0};
    hdr(&hb, "snappy", SCHEMA, SYNC_A);
    assert_int_equal(h.header_len, hb.len);
    bfs_ocf_header_free(&h);
    bfs_buf_free(&hb);

    /* avro.codec absent: null */
    file(&f, NULL, 2);
    assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h, &err), 0);
    assert_int_equal(h.codec, BFS_CODEC_NULL);
    bfs_ocf_header_free(&h);
    expect_ok(f.data, f.len, 10);
    bfs_buf_free(&f);
}

/* The metadata map may come in several blocks, with negative counts and sizes. */
static void test_header_map_blocks(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    assert_int_equal(bfs_buf_append(&f, "Obj\x01", 4), 0);
    struct bfs_buf entry = {0};
    put_str(&entry, "avro.schema");
    put_str(&entry, SCHEMA);
    put_long(&f, -1); /* one entry, followed by its byte size */
    put_long(&f, (int64_t)entry.len);
    assert_int_equal(bfs_buf_append(&f, entry.data, entry.len), 0);
    put_long(&f, 2);
    put_str(&f, "avro.codec");
    put_str(&f, "deflate");
    put_str(&f, "a");
    put_str(&f, "");
    put_long(&f, 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    blk(&f, 0, 3, "deflate", SYNC_A);
    expect_ok(f.data, f.len, 3);
    struct bfs_ocf_header h;
    struct bfs_err err;
    assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h, &err), 0);
    assert_int_equal(h.n_meta, 3);
    assert_int_equal(bfs_ocf_meta_get(&h, "a")->val_len, 0);
    bfs_ocf_header_free(&h);
    bfs_buf_free(&entry);
    bfs_buf_free(&f);
}

/* ------------------------------------------------------------------------ */
/* fixtures written by python3-avro                                          */

static void test_fixtures(void **state)
{
    (void)state;
    size_t n;
    char *list = (char *)slurp("fixtures.txt", &n);
    list[n] = '\0';
    int seen = 0;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], codec[16];
        unsigned long long records, blocks;
        assert_int_equal(sscanf(line, "%63s %15s %llu %llu", name, codec, &records, &blocks), 4);
        size_t len;
        uint8_t *buf = slurp(name, &len);
        enum bfs_codec c;
        if (bfs_codec_parse(codec, strlen(codec), &c) < 0) {
            char want[128];
            snprintf(want, sizeof want, "codec '%s' is not supported (null, deflate, snappy)",
                     codec);
            struct bfs_ocf_header h;
            struct bfs_err err;
            assert_int_equal(bfs_ocf_parse_header(buf, len, &h, &err), -EINVAL);
            assert_string_equal(err.msg, want);
        } else {
            struct bfs_ocf_header h;
            struct bfs_err err;
            assert_int_equal(bfs_ocf_parse_header(buf, len, &h, &err), 0);
            assert_int_equal(h.codec, c);
            uint64_t got = 0;
            assert_int_equal(
                bfs_ocf_process(buf, len, &h, h.sync, c, NULL, &got, BFS_OCF_CROSSCHECK, 0, &err),
                0);
            assert_int_equal(got, records);
            bfs_ocf_header_free(&h);
        }
        free(buf);
        seen++;
    }
    assert_int_equal(seen, 5);
    free(list);
}

/* ------------------------------------------------------------------------ */
/* normalisation                                                             */

/* Normalise src to (sync, codec); return layout header + blocks. */
static void normalise(const uint8_t *src, size_t len, const uint8_t sync[16], enum bfs_codec codec,
                      struct bfs_buf *whole, uint64_t *records)
{
    struct bfs_ocf_header h;
    struct bfs_err err;
    assert_int_equal(bfs_ocf_parse_header(src, len, &h, &err), 0);
    whole->len = 0;
    assert_int_equal(bfs_ocf_layout_header(h.schema_json, h.schema_len, codec, sync, whole), 0);
    int rc =
        bfs_ocf_process(src, len, &h, sync, codec, whole, records, BFS_OCF_CROSSCHECK, 0, &err);
    if (rc != 0)
        fail_msg("process: %d %s", rc, err.msg);
    bfs_ocf_header_free(&h);
}

/* Every pair of codecs: the result re-parses and re-validates with the same count. */
static void test_normalise_matrix(void **state)
{
    (void)state;
    const char *names[] = {"rich-null.avro", "rich-deflate.avro", "rich-snappy.avro"};
    const enum bfs_codec codecs[] = {BFS_CODEC_NULL, BFS_CODEC_DEFLATE, BFS_CODEC_SNAPPY};
    for (int s = 0; s < 3; s++) {
        size_t len;
        uint8_t *src = slurp(names[s], &len);
        for (int t = 0; t < 3; t++) {
            struct bfs_buf whole = {0};
            uint64_t records = 0;
            normalise(src, len, SYNC_B, codecs[t], &whole, &records);
            assert_int_equal(records, 50);
            struct bfs_ocf_header h;
            struct bfs_err err;
            assert_int_equal(bfs_ocf_parse_header(whole.data, whole.len, &h, &err), 0);
            assert_int_equal(h.codec, codecs[t]);
            assert_memory_equal(h.sync, SYNC_B, 16);
            uint64_t again = 0;
            assert_int_equal(bfs_ocf_process(whole.data, whole.len, &h, SYNC_B, codecs[t], NULL,
                                             &again, BFS_OCF_CROSSCHECK, 0, &err),
                             0);
            assert_int_equal(again, 50);
            /* Normalising a normalised file changes nothing. */
            struct bfs_buf second = {0};
            assert_int_equal(
                bfs_ocf_layout_header(h.schema_json, h.schema_len, codecs[t], SYNC_B, &second), 0);
            assert_int_equal(bfs_ocf_process(whole.data, whole.len, &h, SYNC_B, codecs[t], &second,
                                             &again, BFS_OCF_CROSSCHECK, 0, &err),
                             0);
            assert_int_equal(second.len, whole.len);
            assert_memory_equal(second.data, whole.data, whole.len);
            bfs_buf_free(&second);
            bfs_ocf_header_free(&h);
            bfs_buf_free(&whole);
        }
        free(src);
    }
}

/* BFS_OCF_DEFLATE_LEVEL: levels 1 and 9 give valid files of the same records
 * in different bytes (the level reaches the compressor), level 0 means 6, and a
 * level past 9 is refused. */
static void test_deflate_level(void **state)
{
    (void)state;
    size_t len;
    uint8_t *src = slurp("rich-null.avro", &len);
    struct bfs_ocf_header h;
    struct bfs_err err;
    assert_int_equal(bfs_ocf_parse_header(src, len, &h, &err), 0);
    struct bfs_buf out[4] = {{0}};
    const unsigned levels[] = {1, 9, 0, 6};
    for (int i = 0; i < 4; i++) {
        uint64_t records = 0;
        assert_int_equal(
            bfs_ocf_layout_header(h.schema_json, h.schema_len, BFS_CODEC_DEFLATE, SYNC_B, &out[i]),
            0);
        assert_int_equal(bfs_ocf_process(src, len, &h, SYNC_B, BFS_CODEC_DEFLATE, &out[i], &records,
                                         BFS_OCF_CROSSCHECK | BFS_OCF_DEFLATE_LEVEL(levels[i]), 0,
                                         &err),
                         0);
        assert_int_equal(records, 50);
        /* the output decodes (avro-c cross-check) to the same records */
        struct bfs_ocf_header h2;
        assert_int_equal(bfs_ocf_parse_header(out[i].data, out[i].len, &h2, &err), 0);
        uint64_t again = 0;
        assert_int_equal(bfs_ocf_process(out[i].data, out[i].len, &h2, SYNC_B, BFS_CODEC_NULL, NULL,
                                         &again, BFS_OCF_CROSSCHECK, 0, &err),
                         0);
        assert_int_equal(again, 50);
        bfs_ocf_header_free(&h2);
    }
    assert_true(out[1].len != out[0].len || memcmp(out[1].data, out[0].data, out[0].len) != 0);
    assert_int_equal(out[2].len, out[3].len); /* 0 is the default, 6 */
    assert_memory_equal(out[2].data, out[3].data, out[2].len);
    uint64_t records;
    assert_int_equal(bfs_ocf_process(src, len, &h, SYNC_B, BFS_CODEC_DEFLATE, NULL, &records,
                                     BFS_OCF_DEFLATE_LEVEL(10), 0, &err),
                     -EINVAL);
    assert_int_equal(
        bfs_ocf_process(src, len, &h, SYNC_B, BFS_CODEC_DEFLATE, NULL, &records, 1u << 12, 0, &err),
        -EINVAL);
    for (int i = 0; i < 4; i++)
        bfs_buf_free(&out[i]);
    bfs_ocf_header_free(&h);
    free(src);
}

/* deflate -> null and snappy -> null with python's sync marker give python's
 * null-codec file byte for byte (same records, same block boundaries). */
static void test_normalise_matches_python(void **state)
{
    (void)state;
    size_t nlen;
    uint8_t *null_file = slurp("rich-null.avro", &nlen);
    size_t nhdr = header_len_of(null_file, nlen);
    const uint8_t *py_sync = null_file + nhdr - 16;
    const char *others[] = {"rich-deflate.avro", "rich-snappy.avro", "rich-null.avro"};
    for (int i = 0; i < 3; i++) {
        size_t len;
        uint8_t *src = slurp(others[i], &len);
        struct bfs_ocf_header h;
        struct bfs_err err;
        assert_int_equal(bfs_ocf_parse_header(src, len, &h, &err), 0);
        struct bfs_buf out = {0};
        uint64_t records;
        assert_int_equal(bfs_ocf_process(src, len, &h, py_sync, BFS_CODEC_NULL, &out, &records,
                                         BFS_OCF_CROSSCHECK, 0, &err),
                         0);
        assert_int_equal(out.len, nlen - nhdr);
        assert_memory_equal(out.data, null_file + nhdr, out.len);
        bfs_buf_free(&out);
        bfs_ocf_header_free(&h);
        free(src);
    }
    free(null_file);
}

/* Same codec: the compressed bytes are copied, only the sync marker changes. */
static void test_normalise_same_codec_copies(void **state)
{
    (void)state;
    const char *names[] = {"rich-deflate.avro", "rich-snappy.avro"};
    const enum bfs_codec codecs[] = {BFS_CODEC_DEFLATE, BFS_CODEC_SNAPPY};
    for (int i = 0; i < 2; i++) {
        size_t len;
        uint8_t *src = slurp(names[i], &len);
        size_t hl = header_len_of(src, len);
        uint8_t old[16];
        memcpy(old, src + hl - 16, 16);
        struct bfs_ocf_header h;
        struct bfs_err err;
        assert_int_equal(bfs_ocf_parse_header(src, len, &h, &err), 0);
        struct bfs_buf out = {0};
        uint64_t records;
        assert_int_equal(bfs_ocf_process(src, len, &h, SYNC_B, codecs[i], &out, &records,
                                         BFS_OCF_CROSSCHECK, 0, &err),
                         0);
        assert_int_equal(out.len, len - hl);
        /* the body with every old sync marker replaced */
        uint8_t *want = malloc(len - hl);
        memcpy(want, src + hl, len - hl);
        int replaced = 0;
        for (size_t k = 0; k + 16 <= len - hl; k++) {
            if (memcmp(want + k, old, 16) == 0) {
                memcpy(want + k, SYNC_B, 16);
                replaced++;
            }
        }
        assert_int_equal(replaced, 3);
        assert_memory_equal(out.data, want, out.len);
        free(want);
        bfs_buf_free(&out);
        bfs_ocf_header_free(&h);
        free(src);
    }
}

/* Blocks of several uploads concatenated after one layout header are one valid file. */
static void test_concatenation(void **state)
{
    (void)state;
    char *canon;
    size_t clen;
    struct bfs_err msg;
    assert_int_equal(bfs_schema_canonical(SCHEMA, strlen(SCHEMA), &canon, &clen, &msg), 0);
    uint8_t sync[16];
    assert_int_equal(bfs_schema_sync(canon, clen, sync), 0);
    struct bfs_buf all = {0};
    assert_int_equal(bfs_ocf_layout_header(canon, clen, BFS_CODEC_SNAPPY, sync, &all), 0);
    const char *codecs[] = {"null", "deflate", "snappy", NULL};
    uint64_t total = 0;
    for (int i = 0; i < 4; i++) {
        struct bfs_buf f = {0};
        file(&f, codecs[i], i + 1);
        struct bfs_ocf_header h;
        struct bfs_err err;
        assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h, &err), 0);
        uint64_t records;
        assert_int_equal(bfs_ocf_process(f.data, f.len, &h, sync, BFS_CODEC_SNAPPY, &all, &records,
                                         BFS_OCF_CROSSCHECK, 0, &err),
                         0);
        assert_int_equal(records, 5 * (i + 1));
        total += records;
        bfs_ocf_header_free(&h);
        bfs_buf_free(&f);
    }
    expect_ok(all.data, all.len, total);
    bfs_buf_free(&all);
    free(canon);
}

/* Empty blocks are valid, and left out of the normalised output; so is a file
 * without blocks. */
static void test_empty_blocks(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    hdr(&f, "deflate", SCHEMA, SYNC_A);
    size_t hl = f.len;
    expect_ok(f.data, f.len, 0);
    tblock_make(BFS_CODEC_DEFLATE, NULL, 0, 0, SYNC_A, &f);
    blk(&f, 0, 2, "deflate", SYNC_A);
    tblock_make(BFS_CODEC_DEFLATE, NULL, 0, 0, SYNC_A, &f);
    expect_ok(f.data, f.len, 2);
    struct bfs_ocf_header h;
    struct bfs_err err;
    assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h, &err), 0);
    assert_int_equal(h.header_len, hl);
    struct bfs_buf out = {0}, want = {0};
    uint64_t records;
    assert_int_equal(bfs_ocf_process(f.data, f.len, &h, SYNC_B, BFS_CODEC_NULL, &out, &records,
                                     BFS_OCF_CROSSCHECK, 0, &err),
                     0);
    blk(&want, 0, 2, "null", SYNC_B);
    assert_int_equal(out.len, want.len);
    assert_memory_equal(out.data, want.data, out.len);
    bfs_ocf_header_free(&h);
    bfs_buf_free(&out);
    bfs_buf_free(&want);
    bfs_buf_free(&f);
}

/* ------------------------------------------------------------------------ */
/* the layout header                                                         */

static void test_layout_header(void **state)
{
    (void)state;
    struct bfs_buf a = {0}, b = {0}, want = {0};
    assert_int_equal(bfs_buf_append(&a, "prefix", 6), 0);
    assert_int_equal(bfs_ocf_layout_header("\"int\"", 5, BFS_CODEC_DEFLATE, SYNC_A, &a), 0);
    assert_int_equal(bfs_ocf_layout_header("\"int\"", 5, BFS_CODEC_DEFLATE, SYNC_A, &b), 0);
    /* appended after what was there, deterministic */
    assert_int_equal(a.len, 6 + b.len);
    assert_memory_equal(a.data + 6, b.data, b.len);
    /* an unknown codec is refused and appends nothing */
    assert_int_equal(bfs_ocf_layout_header("\"int\"", 5, (enum bfs_codec)7, SYNC_A, &a), -EINVAL);
    assert_int_equal(a.len, 6 + b.len);
    /* exactly: magic, {avro.codec, avro.schema} in one block, 0, sync */
    assert_int_equal(bfs_buf_append(&want, "Obj\x01", 4), 0);
    put_long(&want, 2);
    put_str(&want, "avro.codec");
    put_str(&want, "deflate");
    put_str(&want, "avro.schema");
    put_str(&want, "\"int\"");
    put_long(&want, 0);
    assert_int_equal(bfs_buf_append(&want, SYNC_A, 16), 0);
    assert_int_equal(b.len, want.len);
    assert_memory_equal(b.data, want.data, b.len);
    /* and it parses */
    struct bfs_ocf_header h;
    struct bfs_err err;
    assert_int_equal(bfs_ocf_parse_header(b.data, b.len, &h, &err), 0);
    assert_int_equal(h.n_meta, 2);
    assert_string_equal(h.meta[0].key, "avro.codec");
    assert_string_equal(h.meta[1].key, "avro.schema");
    assert_int_equal(h.header_len, b.len);
    bfs_ocf_header_free(&h);
    bfs_buf_free(&a);
    bfs_buf_free(&b);
    bfs_buf_free(&want);
}

/* ------------------------------------------------------------------------ */
/* rejections                                                                */

static void test_reject_magic(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    file(&f, "null", 1);
    f.data[3] = 2;
    expect_reject(f.data, f.len, "not an Avro object container file (bad magic)");
    expect_reject((const uint8_t *)"PK\x03\x04 zip", 8,
                  "not an Avro object container file (bad magic)");
    expect_reject((const uint8_t *)"Ob", 2, "truncated header");
    expect_reject((const uint8_t *)"X", 1, "bad magic");
    bfs_buf_free(&f);
}

static void test_reject_truncated_header(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    file(&f, "deflate", 1);
    size_t hl = header_len_of(f.data, f.len);
    for (size_t n = 0; n < hl; n++) {
        struct bfs_err err;
        struct bfs_ocf_header h;
        int rc = bfs_ocf_parse_header(f.data, n, &h, &err);
        if (rc != -EINVAL || strcmp(err.msg, "truncated header") != 0)
            fail_msg("prefix of %zu bytes: %d %s", n, rc, err.msg);
    }
    bfs_buf_free(&f);
}

static void test_reject_header_content(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    /* no schema */
    hdr(&f, "null", NULL, SYNC_A);
    expect_reject(f.data, f.len, "no avro.schema");
    /* schemas that do not parse */
    const char *bad[] = {"{\"type\":", "\"Nope\"", "{\"type\":\"record\",\"name\":\"R\"}", "[]"};
    for (size_t i = 0; i < 4; i++) {
        f.len = 0;
        hdr(&f, "null", bad[i], SYNC_A);
        expect_reject(f.data, f.len, "schema does not parse");
    }
    /* a schema avro-c parses but cannot decode */
    f.len = 0;
    hdr(&f, "null", "{\"type\":\"fixed\",\"name\":\"Z\",\"size\":0}", SYNC_A);
    expect_reject(f.data, f.len, "schema is not supported: a fixed of size 0");
    /* a schema only the Java rules accept (null-namespace fallback): avro-c decides */
    f.len = 0;
    hdr(&f, "null",
        "[{\"type\":\"fixed\",\"name\":\"G\",\"size\":1},{\"type\":\"record\",\"name\":"
        "\"a.R\",\"fields\":[{\"name\":\"g\",\"type\":\"G\"}]}]",
        SYNC_A);
    expect_reject(f.data, f.len, "schema does not parse (avro-c)");
    /* unsupported codecs, with the exact message */
    const char *codecs[] = {"lzma", "xz", "zstandard", "bzip2", "Deflate", ""};
    for (size_t i = 0; i < 6; i++) {
        f.len = 0;
        hdr(&f, codecs[i], SCHEMA, SYNC_A);
        char want[128];
        snprintf(want, sizeof want, "codec '%s' is not supported (null, deflate, snappy)",
                 codecs[i]);
        struct bfs_err err;
        struct bfs_ocf_header h;
        assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h, &err), -EINVAL);
        assert_string_equal(err.msg, want);
    }
    /* a codec name with control characters is shown safely */
    f.len = 0;
    hdr(&f, "bad\ncodec", SCHEMA, SYNC_A);
    expect_reject(f.data, f.len, "codec 'bad?codec' is not supported");
    /* duplicate keys */
    f.len = 0;
    assert_int_equal(bfs_buf_append(&f, "Obj\x01", 4), 0);
    put_long(&f, 1);
    put_str(&f, "avro.schema");
    put_str(&f, "\"int\"");
    put_long(&f, 1);
    put_str(&f, "avro.schema");
    put_str(&f, "\"long\"");
    put_long(&f, 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "metadata key 'avro.schema' appears twice");
    /* negative lengths and overlong varints in the map */
    f.len = 0;
    assert_int_equal(bfs_buf_append(&f, "Obj\x01\x02\x01", 6), 0); /* key length -1 */
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "bad header");
    f.len = 0;
    assert_int_equal(bfs_buf_append(&f, "Obj\x01", 4), 0);
    for (int i = 0; i < 11; i++)
        assert_int_equal(bfs_buf_append(&f, "\x80", 1), 0);
    assert_int_equal(bfs_buf_append(&f, "\x01", 1), 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "bad header");
    /* a huge entry count is a truncated header, not a huge allocation */
    f.len = 0;
    assert_int_equal(bfs_buf_append(&f, "Obj\x01", 4), 0);
    put_long(&f, INT64_MAX);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "truncated header");
    f.len = 0;
    assert_int_equal(bfs_buf_append(&f, "Obj\x01", 4), 0);
    put_long(&f, INT64_MIN);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "bad header");
    /* a huge string length */
    f.len = 0;
    assert_int_equal(bfs_buf_append(&f, "Obj\x01", 4), 0);
    put_long(&f, 1);
    put_long(&f, INT64_MAX);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "truncated header");
    bfs_buf_free(&f);
}

/* Hostile uploads cost little: a header over BFS_OCF_MAX_HEADER is refused
 * with EFBIG before its bytes are copied, and blocks that decompress beyond
 * the caller's max_plain stop there with EFBIG (a decompression bomb). */
static void test_hostile_bounds(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    struct bfs_err err;
    struct bfs_ocf_header h;
    /* a metadata value of 2 MiB */
    size_t big = 2u << 20;
    char *v = malloc(big + 1);
    assert_non_null(v);
    memset(v, 'a', big);
    v[big] = '\0';
    assert_int_equal(bfs_buf_append(&f, "Obj\x01", 4), 0);
    put_long(&f, 2);
    put_str(&f, "avro.schema");
    put_str(&f, SCHEMA);
    put_str(&f, "user.big");
    put_str(&f, v);
    put_long(&f, 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h, &err), -EFBIG);
    assert_non_null(strstr(err.msg, "header (metadata and schema) larger than 1024 KiB"));
    free(v);

    /* a deflate block of 8 MiB of zero-length... of 8 MiB of bytes, 8 KiB compressed */
    const char *bytes_schema = "\"bytes\"";
    size_t plain_len = 8u << 20;
    struct bfs_buf plain = {0}, z = {0};
    put_long(&plain, (int64_t)(plain_len - 4)); /* one record: a bytes value */
    assert_int_equal(bfs_buf_reserve(&plain, plain_len), 0);
    memset(plain.data + plain.len, 0, plain_len - plain.len);
    plain.len = plain_len;
    tblock_compress(BFS_CODEC_DEFLATE, plain.data, plain.len, &z);
    assert_true(z.len < 64 * 1024);
    f.len = 0;
    hdr(&f, "deflate", bytes_schema, SYNC_A);
    put_long(&f, 1);
    put_bytes(&f, z.data, z.len);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h, &err), 0);
    uint64_t records;
    struct bfs_buf out = {0};
    /* within the bound: accepted */
    assert_int_equal(bfs_ocf_process(f.data, f.len, &h, SYNC_B, BFS_CODEC_NULL, &out, &records, 0,
                                     plain_len, &err),
                     0);
    assert_int_equal(records, 1);
    /* beyond: EFBIG, and the output never grew past the bound */
    out.len = 0;
    assert_int_equal(bfs_ocf_process(f.data, f.len, &h, SYNC_B, BFS_CODEC_NULL, &out, &records, 0,
                                     plain_len - 1, &err),
                     -EFBIG);
    assert_non_null(strstr(err.msg, "decompress to more than"));
    assert_true(out.len < plain_len);
    bfs_ocf_header_free(&h);
    bfs_buf_free(&out);
    bfs_buf_free(&plain);
    bfs_buf_free(&z);
    bfs_buf_free(&f);
}

/* Offset of block k (1-based) in a file made by file(). */
static size_t block_at(const uint8_t *buf, size_t len, int k)
{
    size_t pos = header_len_of(buf, len);
    for (int i = 1; i < k; i++) {
        int64_t v[2];
        for (int j = 0; j < 2; j++) {
            uint64_t u = 0;
            int sh = 0;
            uint8_t b;
            do {
                b = buf[pos++];
                u |= (uint64_t)(b & 0x7f) << sh;
                sh += 7;
            } while (b & 0x80);
            v[j] = (int64_t)((u >> 1) ^ (0 - (u & 1)));
        }
        pos += (size_t)v[1] + 16;
    }
    return pos;
}

static void test_reject_bad_sync(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    file(&f, "deflate", 3);
    size_t b2 = block_at(f.data, f.len, 2), b3 = block_at(f.data, f.len, 3);
    f.data[b3 - 1] ^= 1; /* last byte of block 2's sync */
    char want[128];
    snprintf(want, sizeof want, "block 2 at byte %zu: sync marker does not match the header", b2);
    struct bfs_err err;
    assert_int_equal(check(f.data, f.len, NULL, &err), -EINVAL);
    assert_string_equal(err.msg, want);
    bfs_buf_free(&f);
}

static void test_reject_block_framing(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    /* negative count */
    file(&f, "null", 1);
    tblock_make(BFS_CODEC_NULL, NULL, 0, -1, SYNC_A, &f);
    put_long(&f, 0); /* padding so the block is long enough to be one */
    expect_reject(f.data, f.len, "block 2 at byte");
    expect_reject(f.data, f.len, "negative record count -1");
    /* a size beyond the file */
    file(&f, "null", 1);
    put_long(&f, 1);
    put_long(&f, 1000000);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "beyond the end of the file");
    /* a negative size */
    file(&f, "null", 1);
    put_long(&f, 1);
    put_long(&f, -5);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "negative block size -5");
    /* truncated in the middle of a block */
    file(&f, "snappy", 3);
    size_t b3 = block_at(f.data, f.len, 3);
    expect_reject(f.data, b3 + 30, "truncated block");
    /* ... and right before the last byte of the sync */
    expect_reject(f.data, f.len - 1, "block 3 at byte");
    /* trailing bytes */
    file(&f, "deflate", 2);
    assert_int_equal(bfs_buf_append(&f, "junk", 4), 0);
    struct bfs_err err;
    assert_int_equal(check(f.data, f.len, NULL, &err), -EINVAL);
    assert_string_equal(err.msg, "4 bytes after the last block");
    /* overlong count varint */
    file(&f, "null", 1);
    for (int i = 0; i < 11; i++)
        assert_int_equal(bfs_buf_append(&f, "\xff", 1), 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "record count is not a valid long");
    bfs_buf_free(&f);
}

static void test_reject_records(void **state)
{
    (void)state;
    struct bfs_buf f = {0}, plain = {0};
    /* too few records for the count */
    hdr(&f, "deflate", SCHEMA, SYNC_A);
    for (int i = 0; i < 2; i++)
        rec(&plain, i);
    tblock_make(BFS_CODEC_DEFLATE, plain.data, plain.len, 3, SYNC_A, &f);
    expect_reject(f.data, f.len, "record 3 does not decode against the schema");
    /* too many */
    f.len = 0;
    hdr(&f, "snappy", SCHEMA, SYNC_A);
    tblock_make(BFS_CODEC_SNAPPY, plain.data, plain.len, 1, SYNC_A, &f);
    expect_reject(f.data, f.len, "bytes left after the block's 1 records");
    /* undecodable record 2 in block 2: union branch out of range */
    f.len = 0;
    hdr(&f, "null", SCHEMA, SYNC_A);
    blk(&f, 0, 2, "null", SYNC_A);
    size_t b2 = f.len;
    plain.len = 0;
    rec(&plain, 0);
    put_long(&plain, 1);
    put_str(&plain, "n");
    put_long(&plain, 0);
    put_long(&plain, 5); /* opt: no branch 5 */
    tblock_make(BFS_CODEC_NULL, plain.data, plain.len, 2, SYNC_A, &f);
    char want[128];
    snprintf(want, sizeof want,
             "block 2 at byte %zu: record 2 does not decode against the schema (union branch 5",
             b2);
    expect_reject(f.data, f.len, want);

    /* each kind of bad value, as the only record of a block */
    const struct {
        const char *needle;
        uint8_t bytes[32];
        size_t n;
    } bad[] = {
        /* id, then name of length INT64_MAX */
        {"goes beyond the block",
         {0x02, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         11},
        /* name of length -2 */
        {"negative length", {0x02, 0x03}, 2},
        /* name "a", tags with count 2^61 */
        {"goes beyond the block",
         {0x02, 0x02, 'a', 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40},
         12},
        /* tags with count INT64_MIN (encoded as -(2^63)) */
        {"out of range",
         {0x02, 0x02, 'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         13},
        /* tags: an int out of range */
        {"int is out of range", {0x02, 0x02, 'a', 0x02, 0x80, 0x80, 0x80, 0x80, 0x20, 0x00}, 10},
        /* invalid UTF-8 in name */
        {"not valid UTF-8", {0x02, 0x04, 0xc3, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00}, 9},
        /* boolean 2 */
        {"boolean is 2", {0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00}, 7},
        /* enum 3 of 2 */
        {"enum index 2", {0x02, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00}, 7},
        /* negative array block count with a size that does not match */
        {"does not match", {0x02, 0x00, 0x01, 0x06, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00}, 10},
        /* an 11-byte varint for id */
        {"not a valid varint",
         {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00},
         12},
        /* a 10-byte varint whose last byte has more than bit 63 */
        {"not a valid varint",
         {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0x00, 0x00},
         12},
        /* map key of length 100 */
        {"a map key", {0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xc8, 0x01, 0x00}, 10},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f.len = 0;
        hdr(&f, "null", SCHEMA, SYNC_A);
        tblock_make(BFS_CODEC_NULL, bad[i].bytes, bad[i].n, 1, SYNC_A, &f);
        expect_reject(f.data, f.len, "record 1 does not decode against the schema");
        expect_reject(f.data, f.len, bad[i].needle);
    }
    /* negative array block counts with the right size are fine */
    f.len = 0;
    hdr(&f, "null", SCHEMA, SYNC_A);
    const uint8_t good[] = {0x02, 0x00, 0x01, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00};
    tblock_make(BFS_CODEC_NULL, good, sizeof good, 1, SYNC_A, &f);
    expect_ok(f.data, f.len, 1);
    /* a count larger than the block's bytes */
    f.len = 0;
    hdr(&f, "null", SCHEMA, SYNC_A);
    tblock_make(BFS_CODEC_NULL, good, sizeof good, INT64_MAX, SYNC_A, &f);
    expect_reject(f.data, f.len, "is more than the block's 10 bytes can hold");
    bfs_buf_free(&plain);
    bfs_buf_free(&f);
}

static void test_reject_codec_data(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    /* bad snappy CRC */
    file(&f, "snappy", 2);
    size_t b3 = f.len;
    f.data[b3 - 17] ^= 0x55; /* last CRC byte of block 2 */
    expect_reject(f.data, f.len, "block 2 at byte");
    expect_reject(f.data, f.len, "snappy CRC32 does not match the data");
    /* corrupt snappy */
    file(&f, "snappy", 1);
    f.len = 0;
    hdr(&f, "snappy", SCHEMA, SYNC_A);
    put_long(&f, 1);
    put_long(&f, 8);
    assert_int_equal(bfs_buf_append(&f, "\x05\xff\xff\xff\x00\x00\x00\x00", 8), 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "snappy data is corrupt");
    /* snappy shorter than its CRC */
    f.len = 0;
    hdr(&f, "snappy", SCHEMA, SYNC_A);
    put_long(&f, 1);
    put_long(&f, 2);
    assert_int_equal(bfs_buf_append(&f, "\x00\x00", 2), 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "shorter than its CRC32");
    /* snappy claiming 2 GiB */
    f.len = 0;
    hdr(&f, "snappy", SCHEMA, SYNC_A);
    put_long(&f, 1);
    put_long(&f, 9);
    assert_int_equal(bfs_buf_append(&f, "\x80\x80\x80\x80\x08\x00\x00\x00\x00", 9), 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "more than 64 MiB");
    /* corrupt deflate: a reserved block type */
    f.len = 0;
    hdr(&f, "deflate", SCHEMA, SYNC_A);
    put_long(&f, 1);
    put_long(&f, 4);
    assert_int_equal(bfs_buf_append(&f, "\x07\x00\x00\x00", 4), 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "deflate data is corrupt");
    /* deflate cut short */
    struct bfs_buf plain = {0}, c = {0};
    for (int i = 0; i < 50; i++)
        rec(&plain, i);
    tblock_compress(BFS_CODEC_DEFLATE, plain.data, plain.len, &c);
    f.len = 0;
    hdr(&f, "deflate", SCHEMA, SYNC_A);
    put_long(&f, 50);
    put_long(&f, (int64_t)c.len / 2);
    assert_int_equal(bfs_buf_append(&f, c.data, c.len / 2), 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_reject(f.data, f.len, "deflate data ends before its end marker");
    /* bytes after the deflate stream's end are ignored (python3-avro writes some) */
    f.len = 0;
    hdr(&f, "deflate", SCHEMA, SYNC_A);
    put_long(&f, 50);
    put_long(&f, (int64_t)c.len + 3);
    assert_int_equal(bfs_buf_append(&f, c.data, c.len), 0);
    assert_int_equal(bfs_buf_append(&f, "abc", 3), 0);
    assert_int_equal(bfs_buf_append(&f, SYNC_A, 16), 0);
    expect_ok(f.data, f.len, 50);
    bfs_buf_free(&plain);
    bfs_buf_free(&c);
    bfs_buf_free(&f);
}

/* Decompression stops at BFS_OCF_MAX_BLOCK; exactly that much is accepted. */
static void test_deflate_bomb(void **state)
{
    (void)state;
    const char *schema = "{\"type\":\"fixed\",\"name\":\"F\",\"size\":1048576}";
    uint8_t *zeros = calloc(1, BFS_OCF_MAX_BLOCK + 1);
    assert_non_null(zeros);
    struct bfs_buf f = {0};
    hdr(&f, "deflate", schema, SYNC_A);
    tblock_make(BFS_CODEC_DEFLATE, zeros, BFS_OCF_MAX_BLOCK, BFS_OCF_MAX_BLOCK >> 20, SYNC_A, &f);
    expect_ok(f.data, f.len, BFS_OCF_MAX_BLOCK >> 20);
    f.len = 0;
    hdr(&f, "deflate", schema, SYNC_A);
    tblock_make(BFS_CODEC_DEFLATE, zeros, BFS_OCF_MAX_BLOCK + 1, 1, SYNC_A, &f);
    expect_reject(f.data, f.len, "block decompresses to more than 64 MiB");
    free(zeros);
    bfs_buf_free(&f);
}

/* Values of zero bytes cannot make a few bytes ask for unbounded work. */
static void test_empty_values_budget(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    hdr(&f, "null", "\"null\"", SYNC_A);
    tblock_make(BFS_CODEC_NULL, NULL, 0, 1000, SYNC_A, &f);
    expect_ok(f.data, f.len, 1000);
    f.len = 0;
    hdr(&f, "null", "\"null\"", SYNC_A);
    tblock_make(BFS_CODEC_NULL, NULL, 0, INT64_MAX, SYNC_A, &f);
    expect_reject(f.data, f.len, "too large for records of no bytes");
    /* the budget is per file, not per block */
    f.len = 0;
    hdr(&f, "null", "\"null\"", SYNC_A);
    for (int i = 0; i < 3; i++)
        tblock_make(BFS_CODEC_NULL, NULL, 0, BFS_OCF_MAX_EMPTY / 2, SYNC_A, &f);
    expect_reject(f.data, f.len, "block 3 at byte");
    /* arrays of null */
    f.len = 0;
    hdr(&f, "null", "{\"type\":\"array\",\"items\":\"null\"}", SYNC_A);
    struct bfs_buf d = {0};
    put_long(&d, INT64_MAX / 2);
    put_long(&d, 0);
    tblock_make(BFS_CODEC_NULL, d.data, d.len, 1, SYNC_A, &f);
    expect_reject(f.data, f.len, "empty items is too long");
    f.len = 0;
    d.len = 0;
    hdr(&f, "null", "{\"type\":\"array\",\"items\":\"null\"}", SYNC_A);
    put_long(&d, 3000);
    put_long(&d, 0);
    tblock_make(BFS_CODEC_NULL, d.data, d.len, 1, SYNC_A, &f);
    expect_ok(f.data, f.len, 1);
    /* records of no bytes: a record of null and an empty record */
    f.len = 0;
    hdr(&f, "deflate",
        "{\"type\":\"record\",\"name\":\"E\",\"fields\":[{\"name\":\"a\",\"type\":\"null\"},"
        "{\"name\":\"z\",\"type\":{\"type\":\"record\",\"name\":\"Z\",\"fields\":[]}}]}",
        SYNC_A);
    tblock_make(BFS_CODEC_DEFLATE, NULL, 0, 5000, SYNC_A, &f);
    expect_ok(f.data, f.len, 5000);
    bfs_buf_free(&d);
    bfs_buf_free(&f);
}

/* A file of one block of one record: valid (needle NULL) or refused with needle. */
static void expect_one(const char *schema, const uint8_t *rec, size_t n, const char *needle)
{
    struct bfs_buf f = {0};
    hdr(&f, "null", schema, SYNC_A);
    tblock_make(BFS_CODEC_NULL, rec, n, 1, SYNC_A, &f);
    if (needle)
        expect_reject(f.data, f.len, needle);
    else
        expect_ok(f.data, f.len, 1);
    bfs_buf_free(&f);
}

/* The validator's compiled shortcuts: runs of ints and longs, unions of null
 * and one value (null first or second), arrays of ints, records inlined and
 * called, and varints at the very end of a block (fewer than eight bytes
 * left). Each valid record is also decoded by avro-c (BFS_OCF_CROSSCHECK). */
static void test_validator_shortcuts(void **state)
{
    (void)state;
    const char *schema =
        "{\"type\":\"record\",\"name\":\"V\",\"fields\":["
        "{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"long\"},"
        "{\"name\":\"c\",\"type\":\"int\"},"
        "{\"name\":\"o1\",\"type\":[\"null\",\"int\"]},"
        "{\"name\":\"o2\",\"type\":[\"string\",\"null\"]},"
        "{\"name\":\"o3\",\"type\":[\"null\",{\"type\":\"enum\",\"name\":\"K\","
        "\"symbols\":[\"X\",\"Y\"]}]},"
        "{\"name\":\"xs\",\"type\":{\"type\":\"array\",\"items\":\"int\"}},"
        "{\"name\":\"in\",\"type\":{\"type\":\"record\",\"name\":\"I\",\"fields\":["
        "{\"name\":\"p\",\"type\":\"double\"},{\"name\":\"q\",\"type\":\"float\"},"
        "{\"name\":\"r\",\"type\":[\"null\",\"I\"]}]}},"
        "{\"name\":\"z\",\"type\":\"long\"}]}";
    struct bfs_buf d = {0}, f = {0};
    /* a valid record with every shortcut's slow side: multi-byte varints,
     * the int extremes, both union branches, a nested I */
    put_long(&d, INT32_MAX);
    put_long(&d, INT64_MIN);
    put_long(&d, INT32_MIN);
    put_long(&d, 1);
    put_long(&d, -123456);
    put_long(&d, 1);
    put_long(&d, 1);
    put_long(&d, 1);
    put_long(&d, 3);
    put_long(&d, 0);
    put_long(&d, INT32_MAX);
    put_long(&d, -1);
    put_long(&d, 0);
    bfs_buf_append(&d, "\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11", 12); /* p, q */
    put_long(&d, 1);                                                            /* r: an inner I */
    bfs_buf_append(&d, "\0\0\0\0\0\0\0\0\0\0\0\0", 12);
    put_long(&d, 0);         /* its r: null */
    put_long(&d, INT64_MAX); /* z: ten bytes, at the very end */
    size_t good_len = d.len;
    hdr(&f, "null", schema, SYNC_A);
    tblock_make(BFS_CODEC_NULL, d.data, d.len, 1, SYNC_A, &f);
    expect_ok(f.data, f.len, 1);
    /* two records back to back: the first one's z is no longer at the end */
    bfs_buf_append(&d, d.data, good_len);
    f.len = 0;
    hdr(&f, "null", schema, SYNC_A);
    tblock_make(BFS_CODEC_NULL, d.data, d.len, 2, SYNC_A, &f);
    expect_ok(f.data, f.len, 2);

    /* the same record with one thing wrong */
    const struct {
        size_t at;      /* byte to replace from */
        uint8_t by[10]; /* with */
        size_t n;
        const char *needle;
    } bad[] = {
        /* a: five bytes, the fifth above 0x0f (2^32 zig-zag) */
        {0, {0x80, 0x80, 0x80, 0x80, 0x10}, 5, "int is out of range"},
        /* a: six bytes (2^35 zig-zag); six bytes for a small value are fine */
        {0, {0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 6, "int is out of range"},
        /* o1: branch 2 of 2 */
        {20, {0x04}, 1, "union branch 2 is not one of the 2 branches"},
        /* o1: branch -1 */
        {20, {0x01}, 1, "union branch -1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct bfs_buf r = {0};
        bfs_buf_append(&r, d.data, good_len);
        /* the offset of o1 is after a (5), b (10), c (5) */
        assert_true(bad[i].at + bad[i].n <= r.len);
        if (bad[i].at == 0) { /* a is 5 bytes: splice */
            struct bfs_buf t = {0};
            bfs_buf_append(&t, bad[i].by, bad[i].n);
            bfs_buf_append(&t, r.data + 5, r.len - 5);
            bfs_buf_free(&r);
            r = t;
        } else {
            memcpy(r.data + bad[i].at, bad[i].by, bad[i].n);
        }
        f.len = 0;
        hdr(&f, "null", schema, SYNC_A);
        tblock_make(BFS_CODEC_NULL, r.data, r.len, 1, SYNC_A, &f);
        expect_reject(f.data, f.len, bad[i].needle);
        bfs_buf_free(&r);
    }

    /* unions of null and a value, each way round, at the end of a block */
    const char *opt = "{\"type\":\"record\",\"name\":\"O\",\"fields\":["
                      "{\"name\":\"s\",\"type\":[\"string\",\"null\"]},"
                      "{\"name\":\"i\",\"type\":[\"null\",\"int\"]}]}";
    const struct {
        uint8_t b[8];
        size_t n;
        const char *needle; /* NULL: valid */
    } opts[] = {
        {{0x02, 0x00}, 2, NULL},                               /* null, null */
        {{0x00, 0x02, 'h', 0x02, 0x7f}, 5, NULL},              /* "h", -64 */
        {{0x02, 0x02, 0xfe, 0xff, 0xff, 0xff, 0x0f}, 7, NULL}, /* null, INT32_MAX */
        {{0x02, 0x02, 0xfe, 0xff, 0xff, 0xff, 0x1f}, 7, "int is out of range"},
        {{0x02, 0x02, 0xfe}, 3, "the block ends inside an int"},
        {{0x00, 0x04, 0xff, 0xfe, 0x00}, 5, "not valid UTF-8"},
        {{0x00, 0x04, 'h'}, 3, "goes beyond the block"},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        expect_one(opt, opts[i].b, opts[i].n, opts[i].needle);

    /* an array of ints: the tight loop, and its errors */
    const char *arr = "{\"type\":\"array\",\"items\":\"int\"}";
    const struct {
        uint8_t b[16];
        size_t n;
        const char *needle;
    } arrs[] = {
        {{0x06, 0x02, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x00}, 9, NULL},
        {{0x06, 0x02, 0xfe, 0xff, 0xff, 0xff, 0x1f, 0x01, 0x00}, 9, "int is out of range"},
        {{0x05, 0x04, 0x02, 0x04, 0x06, 0x00}, 6, "does not match"},
        {{0x06, 0x02, 0x04}, 3, "goes beyond the block"},
    };
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++)
        expect_one(arr, arrs[i].b, arrs[i].n, arrs[i].needle);
    bfs_buf_free(&d);
    bfs_buf_free(&f);
}

/* Deeply nested data of a recursive schema is refused before avro-c recurses. */
static void test_nesting_limit(void **state)
{
    (void)state;
    const char *schema = "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"next\","
                         "\"type\":[\"null\",\"L\"]}]}";
    for (int depth = 10; depth <= 1000; depth += 990) {
        struct bfs_buf d = {0}, f = {0};
        for (int i = 0; i < depth; i++)
            put_long(&d, 1);
        put_long(&d, 0);
        hdr(&f, "null", schema, SYNC_A);
        tblock_make(BFS_CODEC_NULL, d.data, d.len, 1, SYNC_A, &f);
        if (depth == 10)
            expect_ok(f.data, f.len, 1);
        else
            expect_reject(f.data, f.len, "nested more than");
        bfs_buf_free(&d);
        bfs_buf_free(&f);
    }
}

/* Every schema type once, through avro-c, all codecs (the fixtures use them all);
 * plus avro-c-specific: a fixed of size 0. */
static void test_schema_types(void **state)
{
    (void)state;
    struct bfs_buf f = {0};
    hdr(&f, "null", "{\"type\":\"map\",\"values\":[\"float\",\"double\",\"bytes\"]}", SYNC_A);
    struct bfs_buf d = {0};
    put_long(&d, -2); /* two entries, with their size */
    put_long(&d, 2 + 1 + 4 + 2 + 1 + 8);
    put_str(&d, "a");
    put_long(&d, 0);
    assert_int_equal(bfs_buf_append(&d, "\x00\x00\x80\x3f", 4), 0);
    put_str(&d, "b");
    put_long(&d, 1);
    assert_int_equal(bfs_buf_append(&d, "\x00\x00\x00\x00\x00\x00\xf0\x3f", 8), 0);
    put_long(&d, 0);
    tblock_make(BFS_CODEC_NULL, d.data, d.len, 1, SYNC_A, &f);
    expect_ok(f.data, f.len, 1);
    bfs_buf_free(&d);
    bfs_buf_free(&f);
}

/* ingest runs on many threads: independent calls must not interfere. */
static void *worker(void *arg)
{
    const char *name = arg;
    size_t len;
    uint8_t *src = slurp(name, &len);
    for (int i = 0; i < 20; i++) {
        struct bfs_ocf_header h;
        struct bfs_err err;
        if (bfs_ocf_parse_header(src, len, &h, &err) != 0)
            return (void *)1;
        struct bfs_buf out = {0};
        uint64_t records = 0;
        int rc = bfs_ocf_process(src, len, &h, SYNC_B, (enum bfs_codec)(i % 3), &out, &records,
                                 BFS_OCF_CROSSCHECK, 0, &err);
        bfs_buf_free(&out);
        bfs_ocf_header_free(&h);
        if (rc != 0 || records != 50)
            return (void *)2;
        /* and a rejection, so error paths run concurrently too */
        src[len - 1] ^= 1;
        if (bfs_ocf_parse_header(src, len, &h, &err) != 0)
            return (void *)3;
        rc = bfs_ocf_process(src, len, &h, SYNC_B, BFS_CODEC_NULL, NULL, &records,
                             BFS_OCF_CROSSCHECK, 0, &err);
        bfs_ocf_header_free(&h);
        src[len - 1] ^= 1;
        if (rc != -EINVAL || !strstr(err.msg, "block 3 at byte"))
            return (void *)4;
    }
    free(src);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    const char *names[] = {"rich-null.avro", "rich-deflate.avro", "rich-snappy.avro",
                           "rich-deflate.avro"};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)names[i]), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        assert_int_equal(pthread_join(t[i], &r), 0);
        assert_null(r);
    }
}

/* Compiled schemas: the cache returns the same object for the same JSON bytes,
 * keeps the most recently used, never keeps failures, and a header parsed
 * through it validates like one parsed without it. */
static void test_schema_cache(void **state)
{
    (void)state;
    struct bfs_ocf_schema_cache *c;
    struct bfs_err err;
    assert_int_equal(bfs_ocf_schema_cache_new(0, &c), -EINVAL);
    assert_int_equal(bfs_ocf_schema_cache_new(2, &c), 0);
    const char *a = SCHEMA;
    const char *b =
        "{\"type\":\"record\",\"name\":\"B\",\"fields\":[{\"name\":\"x\",\"type\":\"int\"}]}";
    const char *d = "\"long\"";
    struct bfs_ocf_schema *s1, *s2, *s3, *s4;
    assert_int_equal(bfs_ocf_schema_get(c, a, strlen(a), &s1, &err), 0);
    assert_int_equal(bfs_ocf_schema_get(c, a, strlen(a), &s2, &err), 0);
    assert_ptr_equal(s1, s2);
    /* the canonical form and sync marker are those of schema.c */
    char *canon;
    size_t clen, got_len;
    assert_int_equal(bfs_schema_canonical(a, strlen(a), &canon, &clen, NULL), 0);
    const char *got = bfs_ocf_schema_canonical(s1, &got_len);
    assert_int_equal(got_len, clen);
    assert_memory_equal(got, canon, clen);
    uint8_t sync[16];
    assert_int_equal(bfs_schema_sync(canon, clen, sync), 0);
    assert_memory_equal(bfs_ocf_schema_sync(s1), sync, 16);
    assert_true(bfs_ocf_schema_fingerprint(s1) == bfs_schema_rabin(canon, clen));
    free(canon);
    /* failures are reported and not kept */
    const char *bad = "{\"type\":\"fixed\",\"name\":\"Z\",\"size\":0}";
    assert_int_equal(bfs_ocf_schema_get(c, bad, strlen(bad), &s3, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "schema is not supported"));
    /* two slots: b and d push a out; a is compiled anew (a different object) */
    assert_int_equal(bfs_ocf_schema_get(c, b, strlen(b), &s3, &err), 0);
    assert_int_equal(bfs_ocf_schema_get(c, d, strlen(d), &s4, &err), 0);
    bfs_ocf_schema_unref(s3);
    bfs_ocf_schema_unref(s4);
    assert_int_equal(bfs_ocf_schema_get(c, a, strlen(a), &s3, &err), 0);
    assert_ptr_not_equal(s3, s1); /* s1 outlived its eviction: still usable */
    size_t l1, l3;
    assert_memory_equal(bfs_ocf_schema_canonical(s1, &l1), bfs_ocf_schema_canonical(s3, &l3), clen);
    bfs_ocf_schema_unref(s3);
    bfs_ocf_schema_unref(s2);
    /* a header through the cache: same validation, same output */
    struct bfs_buf f = {0};
    file(&f, "deflate", 3);
    struct bfs_ocf_header h1, h2;
    assert_int_equal(bfs_ocf_parse_header(f.data, f.len, &h1, &err), 0);
    assert_int_equal(bfs_ocf_parse_header_cached(f.data, f.len, c, &h2, &err), 0);
    struct bfs_buf o1 = {0}, o2 = {0};
    uint64_t r1 = 0, r2 = 0;
    assert_int_equal(
        bfs_ocf_process(f.data, f.len, &h1, SYNC_B, BFS_CODEC_NULL, &o1, &r1, 0, 0, &err), 0);
    assert_int_equal(bfs_ocf_process(f.data, f.len, &h2, SYNC_B, BFS_CODEC_NULL, &o2, &r2,
                                     BFS_OCF_CROSSCHECK, 0, &err),
                     0);
    assert_int_equal(r1, r2);
    assert_int_equal(o1.len, o2.len);
    assert_memory_equal(o1.data, o2.data, o1.len);
    bfs_buf_free(&o1);
    bfs_buf_free(&o2);
    bfs_ocf_header_free(&h1);
    bfs_ocf_header_free(&h2);
    bfs_buf_free(&f);
    bfs_ocf_schema_unref(s1);
    bfs_ocf_schema_cache_free(c);
}

/* Avro longs are zigzag varints (spec: 0 -> 00, -1 -> 01, 1 -> 02, -64 -> 7f, 64 -> 80 01);
 * the extremes take ten bytes. */
static void test_put_long_zigzag(void **state)
{
    (void)state;
    static const struct {
        int64_t v;
        size_t n;
        uint8_t bytes[10];
    } cases[] = {
        {0, 1, {0x00}},
        {-1, 1, {0x01}},
        {1, 1, {0x02}},
        {-2, 1, {0x03}},
        {-64, 1, {0x7f}},
        {64, 2, {0x80, 0x01}},
        {INT64_MAX, 10, {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
        {INT64_MIN, 10, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct bfs_buf b = {0};
        assert_int_equal(bfs_buf_put_long(&b, cases[i].v), 0);
        assert_int_equal(b.len, cases[i].n);
        assert_memory_equal(b.data, cases[i].bytes, cases[i].n);
        bfs_buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_long_zigzag),
        cmocka_unit_test(test_codec_names),
        cmocka_unit_test(test_header_fields),
        cmocka_unit_test(test_header_map_blocks),
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_normalise_matrix),
        cmocka_unit_test(test_normalise_matches_python),
        cmocka_unit_test(test_deflate_level),
        cmocka_unit_test(test_normalise_same_codec_copies),
        cmocka_unit_test(test_concatenation),
        cmocka_unit_test(test_empty_blocks),
        cmocka_unit_test(test_layout_header),
        cmocka_unit_test(test_reject_magic),
        cmocka_unit_test(test_reject_truncated_header),
        cmocka_unit_test(test_reject_header_content),
        cmocka_unit_test(test_hostile_bounds),
        cmocka_unit_test(test_reject_bad_sync),
        cmocka_unit_test(test_reject_block_framing),
        cmocka_unit_test(test_reject_records),
        cmocka_unit_test(test_reject_codec_data),
        cmocka_unit_test(test_deflate_bomb),
        cmocka_unit_test(test_empty_values_budget),
        cmocka_unit_test(test_nesting_limit),
        cmocka_unit_test(test_validator_shortcuts),
        cmocka_unit_test(test_schema_types),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_schema_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
