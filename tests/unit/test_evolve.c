/* test_evolve.c - merged schemas and block conversion (evolve.h).
 *
 * Merges of the real FUSOU versions (tests/data/fusou/, copies of the client's
 * published schemas v0.4, v0.5 and v0.5.1) and of small schemas made here;
 * conversions checked end to end: records built with avro-c's generic values
 * in a writer's schema, written into a block in each codec, converted, and
 * decoded again with avro-c in the merged schema, field by field.
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

#include <avro.h>
#include <jansson.h>
#include <snappy-c.h>
#include <zlib.h>

#include "battlefs/buf.h"
#include "battlefs/evolve.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "testblock.h"

static const uint8_t SYNC_IN[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t MSYNC[16] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
                                  0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
static const enum bfs_codec CODECS[] = {BFS_CODEC_NULL, BFS_CODEC_DEFLATE, BFS_CODEC_SNAPPY};

/* ------------------------------------------------------------------------ */
/* the real versions                                                         */

#define NVERSIONS 3
static const char *const VERSION_FILES[NVERSIONS] = {"schema_v0_4.json", "schema_v0_5.json",
                                                     "schema_v0_5_1.json"};

/* table name -> [schema text or null per version] */
static json_t *load_tables(void)
{
    json_t *tables = json_object();
    assert_non_null(tables);
    for (int v = 0; v < NVERSIONS; v++) {
        char path[512];
        snprintf(path, sizeof path, "%s/fusou/%s", BFS_TEST_DATA, VERSION_FILES[v]);
        json_error_t jerr;
        json_t *root = json_load_file(path, 0, &jerr);
        if (!root)
            fail_msg("cannot load %s: %s", path, jerr.text);
        size_t i;
        json_t *s;
        for (i = 0; i < json_array_size(json_object_get(root, "schemas")) &&
                    (s = json_array_get(json_object_get(root, "schemas"), i));
             i++) {
            const char *name = json_string_value(json_object_get(s, "table_name"));
            json_t *slot = json_object_get(tables, name);
            if (!slot) {
                slot = json_array();
                for (int k = 0; k < NVERSIONS; k++)
                    json_array_append_new(slot, json_null());
                json_object_set_new(tables, name, slot);
            }
            json_array_set(slot, (size_t)v, json_object_get(s, "schema"));
        }
        json_decref(root);
    }
    return tables;
}

static const char *version_of(json_t *tables, const char *table, int v)
{
    return json_string_value(json_array_get(json_object_get(tables, table), (size_t)v));
}

/* The schemas of a table (in version order); their count. */
static size_t versions(json_t *tables, const char *table, const char **out)
{
    size_t n = 0;
    for (int v = 0; v < NVERSIONS; v++)
        if (version_of(tables, table, v))
            out[n++] = version_of(tables, table, v);
    return n;
}

static char *merge_n(const char *const *json, size_t n)
{
    size_t len[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++)
        len[i] = strlen(json[i]);
    char *out = NULL;
    size_t out_len = 0;
    struct bfs_err err = {0};
    int rc = bfs_schema_merge(json, len, n, &out, &out_len, &err);
    if (rc != 0)
        fail_msg("merge failed: %d %s", rc, err.msg);
    assert_non_null(out);
    assert_int_equal(strlen(out), out_len);
    return out;
}

static char *merge2(const char *a, const char *b)
{
    const char *v[2] = {a, b};
    return merge_n(v, 2);
}

static int merge_fails(const char *a, const char *b, struct bfs_err *err)
{
    const char *v[2] = {a, b};
    size_t len[2] = {strlen(a), strlen(b)};
    char *out = (char *)1;
    size_t out_len = 1;
    int rc = bfs_schema_merge(v, len, 2, &out, &out_len, err);
    assert_null(out);
    return rc;
}

static void assert_avro_parses(const char *json)
{
    avro_schema_t s = NULL;
    if (avro_schema_from_json_length(json, strlen(json), &s) != 0 || !s)
        fail_msg("avro-c does not parse %s: %s", json, avro_strerror());
    avro_schema_decref(s);
}

/* The fields of the top-level record of json: name -> field object. */
static json_t *fields_of(json_t *root)
{
    json_t *by = json_object();
    size_t i;
    json_t *f;
    for (i = 0; i < json_array_size(json_object_get(root, "fields")) &&
                (f = json_array_get(json_object_get(root, "fields"), i));
         i++)
        json_object_set(by, json_string_value(json_object_get(f, "name")), f);
    return by;
}

static long field_index(json_t *root, const char *name)
{
    size_t i;
    json_t *f;
    for (i = 0; i < json_array_size(json_object_get(root, "fields")) &&
                (f = json_array_get(json_object_get(root, "fields"), i));
         i++)
        if (strcmp(json_string_value(json_object_get(f, "name")), name) == 0)
            return (long)i;
    return -1;
}

static json_t *field_type(const char *json, const char *name)
{
    json_t *root = json_loads(json, 0, NULL);
    assert_non_null(root);
    long i = field_index(root, name);
    assert_true(i >= 0);
    json_t *t = json_object_get(json_array_get(json_object_get(root, "fields"), (size_t)i), "type");
    json_incref(t);
    json_decref(root);
    return t;
}

static void assert_type(const char *json, const char *field, const char *want)
{
    json_t *t = field_type(json, field);
    char *got = json_dumps(t, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (strcmp(got, want) != 0)
        fail_msg("field %s: type %s, expected %s (in %s)", field, got, want, json);
    free(got);
    json_decref(t);
}

static uint64_t fingerprint(const char *json)
{
    char *c;
    size_t n;
    assert_int_equal(bfs_schema_canonical(json, strlen(json), &c, &n, NULL), 0);
    uint64_t fp = bfs_schema_rabin(c, n);
    free(c);
    return fp;
}

/* ------------------------------------------------------------------------ */
/* values: generated, written, compared                                       */

/* Fill v with a value made from seed: every field, unions mostly in a
 * non-null branch, arrays and maps of 0 to 3 items. */
static void gen(avro_value_t *v, unsigned seed, int depth)
{
    avro_schema_t s = avro_value_get_schema(v);
    char buf[64];
    avro_value_t c;
    size_t n = seed % 4;
    switch (avro_value_get_type(v)) {
    case AVRO_NULL:
        assert_int_equal(avro_value_set_null(v), 0);
        break;
    case AVRO_BOOLEAN:
        assert_int_equal(avro_value_set_boolean(v, (int)(seed & 1)), 0);
        break;
    case AVRO_INT32:
        assert_int_equal(avro_value_set_int(v, (int32_t)(seed * 2654435761u) >> (seed % 31)), 0);
        break;
    case AVRO_INT64:
        assert_int_equal(avro_value_set_long(v, (int64_t)((uint64_t)seed * 0x9e3779b97f4a7c15ull) >>
                                                    (seed % 63)),
                         0);
        break;
    case AVRO_FLOAT:
        assert_int_equal(avro_value_set_float(v, (float)seed * 0.25f - 3.0f), 0);
        break;
    case AVRO_DOUBLE:
        assert_int_equal(avro_value_set_double(v, (double)seed * 1.5e-3 - 7.0), 0);
        break;
    case AVRO_STRING:
        snprintf(buf, sizeof buf, "s%u-\xc3\xa9-%0*u", seed, (int)(seed % 40), seed);
        assert_int_equal(avro_value_set_string(v, buf), 0);
        break;
    case AVRO_BYTES:
        snprintf(buf, sizeof buf, "b%u", seed);
        assert_int_equal(avro_value_set_bytes(v, buf, strlen(buf) + seed % 3), 0);
        break;
    case AVRO_FIXED: {
        size_t k = (size_t)avro_schema_fixed_size(s);
        uint8_t fx[64] = {0};
        for (size_t i = 0; i < k && i < sizeof fx; i++)
            fx[i] = (uint8_t)(seed + i);
        assert_int_equal(avro_value_set_fixed(v, fx, k), 0);
        break;
    }
    case AVRO_ENUM:
        assert_int_equal(
            avro_value_set_enum(v, (int)(seed % (unsigned)avro_schema_enum_number_of_symbols(s))),
            0);
        break;
    case AVRO_ARRAY:
        for (size_t i = 0; i < n && depth < 8; i++) {
            assert_int_equal(avro_value_append(v, &c, NULL), 0);
            gen(&c, seed * 7 + (unsigned)i + 1, depth + 1);
        }
        break;
    case AVRO_MAP:
        for (size_t i = 0; i < n && depth < 8; i++) {
            snprintf(buf, sizeof buf, "k%zu", i);
            assert_int_equal(avro_value_add(v, buf, &c, NULL, NULL), 0);
            gen(&c, seed * 5 + (unsigned)i + 3, depth + 1);
        }
        break;
    case AVRO_UNION: {
        size_t nb = avro_schema_union_size(s), nul = nb, pick;
        for (size_t i = 0; i < nb; i++)
            if (avro_typeof(avro_schema_union_branch(s, (int)i)) == AVRO_NULL)
                nul = i;
        if (nul < nb && (seed % 5 == 0 || depth >= 8))
            pick = nul;
        else
            pick = (seed / 5) % nb == nul && nb > 1 ? ((seed / 5) + 1) % nb : (seed / 5) % nb;
        assert_int_equal(avro_value_set_branch(v, (int)pick, &c), 0);
        gen(&c, seed * 3 + 1, depth + 1);
        break;
    }
    case AVRO_RECORD: {
        size_t nf;
        assert_int_equal(avro_value_get_size(v, &nf), 0);
        for (size_t i = 0; i < nf; i++) {
            assert_int_equal(avro_value_get_by_index(v, i, &c, NULL), 0);
            gen(&c, seed * 31 + (unsigned)i * 17 + 1, depth + 1);
        }
        break;
    }
    default:
        fail_msg("unexpected type");
    }
}

static double num(avro_value_t *v)
{
    int32_t i;
    int64_t l;
    float f;
    double d;
    switch (avro_value_get_type(v)) {
    case AVRO_INT32:
        avro_value_get_int(v, &i);
        return i;
    case AVRO_INT64:
        avro_value_get_long(v, &l);
        return (double)l;
    case AVRO_FLOAT:
        avro_value_get_float(v, &f);
        return f;
    case AVRO_DOUBLE:
        avro_value_get_double(v, &d);
        return d;
    default:
        fail_msg("not a number");
        return 0;
    }
}

/* The bytes of a string (without avro-c's NUL) or bytes value. */
static void blob(avro_value_t *v, const void **p, size_t *n)
{
    if (avro_value_get_type(v) == AVRO_STRING) {
        const char *s;
        assert_int_equal(avro_value_get_string(v, &s, n), 0);
        *p = s;
        *n -= 1;
    } else {
        assert_int_equal(avro_value_get_bytes(v, p, n), 0);
    }
}

/* Check that m (merged schema) holds what w (writer's schema) held. */
static void same(avro_value_t *w, avro_value_t *m, const char *path)
{
    avro_type_t wt = avro_value_get_type(w), mt = avro_value_get_type(m);
    avro_value_t wb, mb;
    if (wt == AVRO_UNION) {
        assert_int_equal(avro_value_get_current_branch(w, &wb), 0);
        same(&wb, m, path);
        return;
    }
    if (mt == AVRO_UNION) {
        assert_int_equal(avro_value_get_current_branch(m, &mb), 0);
        same(w, &mb, path);
        return;
    }
    switch (mt) {
    case AVRO_NULL:
        if (wt != AVRO_NULL)
            fail_msg("%s: null where the writer had type %d", path, wt);
        return;
    case AVRO_BOOLEAN: {
        int a, b;
        assert_int_equal(wt, AVRO_BOOLEAN);
        avro_value_get_boolean(w, &a);
        avro_value_get_boolean(m, &b);
        assert_int_equal(a, b);
        return;
    }
    case AVRO_INT32:
        assert_int_equal(wt, AVRO_INT32);
        break;
    case AVRO_INT64:
        if (wt != AVRO_INT32 && wt != AVRO_INT64)
            fail_msg("%s: long where the writer had type %d", path, wt);
        break;
    case AVRO_FLOAT:
        if (wt != AVRO_INT32 && wt != AVRO_INT64 && wt != AVRO_FLOAT)
            fail_msg("%s: float where the writer had type %d", path, wt);
        if ((float)num(w) != (float)num(m))
            fail_msg("%s: %g != %g", path, num(w), num(m));
        return;
    case AVRO_DOUBLE:
        if (wt == AVRO_STRING || wt == AVRO_BYTES || wt == AVRO_BOOLEAN)
            fail_msg("%s: double where the writer had type %d", path, wt);
        if (num(w) != num(m))
            fail_msg("%s: %.17g != %.17g", path, num(w), num(m));
        return;
    case AVRO_STRING:
    case AVRO_BYTES:
    case AVRO_FIXED: {
        const void *a, *b;
        size_t na, nb;
        if (mt == AVRO_FIXED) {
            assert_int_equal(wt, AVRO_FIXED);
            avro_value_get_fixed(w, &a, &na);
            avro_value_get_fixed(m, &b, &nb);
        } else {
            if (wt != AVRO_STRING && wt != AVRO_BYTES)
                fail_msg("%s: string/bytes where the writer had type %d", path, wt);
            blob(w, &a, &na);
            blob(m, &b, &nb);
        }
        if (na != nb || memcmp(a, b, na) != 0)
            fail_msg("%s: bytes differ", path);
        return;
    }
    case AVRO_ENUM: {
        int a, b;
        assert_int_equal(wt, AVRO_ENUM);
        avro_value_get_enum(w, &a);
        avro_value_get_enum(m, &b);
        assert_string_equal(avro_schema_enum_get(avro_value_get_schema(w), a),
                            avro_schema_enum_get(avro_value_get_schema(m), b));
        return;
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
        size_t na, nb;
        assert_int_equal(wt, mt);
        avro_value_get_size(w, &na);
        avro_value_get_size(m, &nb);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) {
            const char *key = NULL;
            assert_int_equal(avro_value_get_by_index(m, i, &mb, &key), 0);
            if (mt == AVRO_MAP)
                assert_int_equal(avro_value_get_by_name(w, key, &wb, NULL), 0);
            else
                assert_int_equal(avro_value_get_by_index(w, i, &wb, NULL), 0);
            same(&wb, &mb, path);
        }
        return;
    }
    case AVRO_RECORD: {
        size_t nm, nw, found = 0;
        assert_int_equal(wt, AVRO_RECORD);
        avro_value_get_size(m, &nm);
        avro_value_get_size(w, &nw);
        for (size_t i = 0; i < nm; i++) {
            const char *name;
            assert_int_equal(avro_value_get_by_index(m, i, &mb, &name), 0);
            char sub[256];
            snprintf(sub, sizeof sub, "%s.%s", path, name);
            if (avro_value_get_by_name(w, name, &wb, NULL) == 0) {
                found++;
                same(&wb, &mb, sub);
                continue;
            }
            /* a field the writer lacks: null */
            if (avro_value_get_type(&mb) == AVRO_UNION)
                assert_int_equal(avro_value_get_current_branch(&mb, &mb), 0);
            if (avro_value_get_type(&mb) != AVRO_NULL)
                fail_msg("%s: not null, and the writer has no such field", sub);
        }
        assert_int_equal(found, nw);
        return;
    }
    default:
        fail_msg("%s: unexpected type %d", path, mt);
    }
    if (num(w) != num(m))
        fail_msg("%s: %.17g != %.17g", path, num(w), num(m));
}

static void put_long(struct bfs_buf *b, int64_t v)
{
    assert_int_equal(bfs_buf_put_long(b, v), 0);
}

/* Check a converted block's framing in codec (deterministic stored deflate
 * blocks, snappy literals, the sync) and decompress it with zlib or snappy
 * into plain. Returns the record count. */
static int64_t open_block(enum bfs_codec codec, const uint8_t *b, size_t len, struct bfs_buf *plain)
{
    size_t pos = 0, span = 0;
    assert_int_equal(bfs_ocf_block_span(b, len, &span), 0);
    assert_int_equal(span, len);
    int64_t count = 0, size = 0;
    uint64_t u = 0;
    int shift = 0;
    do { /* count */
        u |= (uint64_t)(b[pos] & 0x7f) << shift;
        shift += 7;
    } while (b[pos++] & 0x80);
    count = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    u = 0;
    shift = 0;
    do { /* size */
        u |= (uint64_t)(b[pos] & 0x7f) << shift;
        shift += 7;
    } while (b[pos++] & 0x80);
    size = (int64_t)(u >> 1);
    assert_int_equal((size_t)size + pos + 16, len);
    assert_memory_equal(b + len - 16, MSYNC, 16);
    const uint8_t *d = b + pos;
    size_t n = (size_t)size;
    bfs_buf_reset(plain);
    if (codec == BFS_CODEC_NULL) {
        assert_int_equal(bfs_buf_append(plain, d, n), 0);
    } else if (codec == BFS_CODEC_DEFLATE) {
        /* stored blocks only, each full but the last, which is final */
        size_t at = 0;
        for (;;) {
            assert_true(n - at >= 5);
            size_t k = d[at + 1] | (size_t)d[at + 2] << 8;
            assert_int_equal(k ^ 0xffff, d[at + 3] | (size_t)d[at + 4] << 8);
            bool last = d[at] == 1;
            assert_true(d[at] == 0 || d[at] == 1);
            assert_true(last || k == 65535);
            at += 5 + k;
            if (last)
                break;
        }
        assert_int_equal(at, n);
        z_stream z = {0};
        assert_int_equal(inflateInit2(&z, -15), Z_OK);
        assert_int_equal(bfs_buf_reserve(plain, n + 1), 0);
        z.next_in = (Bytef *)d;
        z.avail_in = (uInt)n;
        z.next_out = plain->data;
        z.avail_out = (uInt)(n + 1);
        assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
        plain->len = z.total_out;
        assert_int_equal(z.avail_in, 0);
        inflateEnd(&z);
    } else {
        size_t ulen;
        assert_true(n >= 4);
        assert_int_equal(snappy_uncompressed_length((const char *)d, n - 4, &ulen), SNAPPY_OK);
        assert_int_equal(bfs_buf_reserve(plain, ulen + 1), 0);
        assert_int_equal(snappy_uncompress((const char *)d, n - 4, (char *)plain->data, &ulen),
                         SNAPPY_OK);
        plain->len = ulen;
        uint32_t crc = (uint32_t)crc32(0L, plain->data, (uInt)ulen);
        assert_int_equal(crc, (uint32_t)d[n - 4] << 24 | (uint32_t)d[n - 3] << 16 |
                                  (uint32_t)d[n - 2] << 8 | d[n - 1]);
    }
    return count;
}

struct written {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t *v;
    int n;
    struct bfs_buf plain;
};

/* n records of wjson made from seed, written with avro-c. */
static void write_records(const char *wjson, int n, unsigned seed, struct written *w)
{
    memset(w, 0, sizeof *w);
    if (avro_schema_from_json_length(wjson, strlen(wjson), &w->schema) != 0)
        fail_msg("avro-c: %s", avro_strerror());
    w->iface = avro_generic_class_from_schema(w->schema);
    assert_non_null(w->iface);
    w->v = calloc((size_t)n, sizeof *w->v);
    w->n = n;
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    avro_writer_t wr = avro_writer_memory(buf, (int64_t)cap);
    for (int i = 0; i < n; i++) {
        assert_int_equal(avro_generic_value_new(w->iface, &w->v[i]), 0);
        gen(&w->v[i], seed + (unsigned)i * 101, 0);
        assert_int_equal(avro_value_write(wr, &w->v[i]), 0);
    }
    assert_int_equal(bfs_buf_append(&w->plain, buf, (size_t)avro_writer_tell(wr)), 0);
    avro_writer_free(wr);
    free(buf);
}

static void written_free(struct written *w)
{
    for (int i = 0; i < w->n; i++)
        avro_value_decref(&w->v[i]);
    free(w->v);
    avro_value_iface_decref(w->iface);
    avro_schema_decref(w->schema);
    bfs_buf_free(&w->plain);
}

/* Decode count records of plain with mjson and compare them with w's. */
static void check_records(const char *mjson, const struct bfs_buf *plain, struct written *w)
{
    avro_schema_t ms;
    if (avro_schema_from_json_length(mjson, strlen(mjson), &ms) != 0)
        fail_msg("avro-c does not parse the merged schema: %s", avro_strerror());
    avro_value_iface_t *mi = avro_generic_class_from_schema(ms);
    assert_non_null(mi);
    avro_value_t mv;
    assert_int_equal(avro_generic_value_new(mi, &mv), 0);
    avro_reader_t rd = avro_reader_memory((const char *)plain->data, (int64_t)plain->len);
    for (int i = 0; i < w->n; i++) {
        avro_value_reset(&mv);
        if (avro_value_read(rd, &mv) != 0)
            fail_msg("record %d does not decode with the merged schema: %s", i, avro_strerror());
        same(&w->v[i], &mv, avro_schema_name(ms));
    }
    uint8_t extra;
    assert_int_not_equal(avro_read(rd, &extra, 1), 0); /* nothing left */
    avro_reader_free(rd);
    avro_value_decref(&mv);
    avro_value_iface_decref(mi);
    avro_schema_decref(ms);
}

/* Records of wjson in a block of codec, converted to mjson, decoded, compared.
 * The converted block is left in *conv (if not NULL). */
static void roundtrip(const char *wjson, const char *mjson, enum bfs_codec codec, int n,
                      unsigned seed, struct bfs_buf *conv)
{
    struct written w;
    write_records(wjson, n, seed, &w);
    struct bfs_buf in = {0}, out = {0}, again = {0}, scratch = {0}, plain = {0};
    tblock_make(codec, w.plain.data, w.plain.len, n, SYNC_IN, &in);
    size_t span = 0;
    assert_int_equal(bfs_ocf_block_span(in.data, in.len, &span), 0);
    assert_int_equal(span, in.len);

    struct bfs_conv *c = NULL;
    struct bfs_err err = {0};
    int rc = bfs_conv_new(wjson, strlen(wjson), mjson, strlen(mjson), codec, MSYNC, &c, &err);
    if (rc != 0)
        fail_msg("bfs_conv_new: %d %s", rc, err.msg);
    assert_int_equal(bfs_buf_append(&out, "prefix", 6), 0);
    rc = bfs_conv_block(c, in.data, in.len, &out, &scratch, &err);
    if (rc != 0)
        fail_msg("bfs_conv_block: %d %s", rc, err.msg);
    assert_memory_equal(out.data, "prefix", 6);
    assert_int_equal(scratch.len, 0);
    /* deterministic */
    assert_int_equal(bfs_conv_block(c, in.data, in.len, &again, &scratch, &err), 0);
    assert_int_equal(again.len, out.len - 6);
    assert_memory_equal(again.data, out.data + 6, again.len);

    assert_int_equal(open_block(codec, out.data + 6, out.len - 6, &plain), n);
    check_records(mjson, &plain, &w);
    if (conv) {
        bfs_buf_reset(conv);
        assert_int_equal(bfs_buf_append(conv, out.data + 6, out.len - 6), 0);
    }
    bfs_conv_free(c);
    bfs_buf_free(&in);
    bfs_buf_free(&out);
    bfs_buf_free(&again);
    bfs_buf_free(&scratch);
    bfs_buf_free(&plain);
    written_free(&w);
}

/* ------------------------------------------------------------------------ */
/* merges of the real versions                                               */

static void test_merge_real_tables(void **state)
{
    (void)state;
    json_t *tables = load_tables();
    const char *name;
    json_t *slot;
    int multi = 0;
    for (void *it1 = json_object_iter(tables);
         it1 && ((name = json_object_iter_key(it1)), (slot = json_object_iter_value(it1)));
         it1 = json_object_iter_next(tables, it1)) {
        const char *v[NVERSIONS];
        size_t n = versions(tables, name, v);
        if (n < 2)
            continue;
        multi++;
        char *m = merge_n(v, n);
        assert_avro_parses(m);
        assert_null(strpbrk(m, " \n\t"));
        json_t *root = json_loads(m, 0, NULL);
        assert_non_null(root);
        json_t *mf = fields_of(root);
        for (size_t i = 0; i < n; i++) {
            json_t *vr = json_loads(v[i], 0, NULL);
            json_t *vf = fields_of(vr);
            const char *fname;
            json_t *f;
            for (void *it2 = json_object_iter(vf);
                 it2 && ((fname = json_object_iter_key(it2)), (f = json_object_iter_value(it2)));
                 it2 = json_object_iter_next(vf, it2)) {
                if (!json_object_get(mf, fname))
                    fail_msg("table %s: field %s of a version is not in the merge", name, fname);
            }
            json_decref(vf);
            json_decref(vr);
        }
        /* every input order, with duplicates, gives the same bytes */
        static const int perm[][NVERSIONS] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                              {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
        for (size_t p = 0; p < 6; p++) {
            const char *o[NVERSIONS + 1];
            size_t k = 0;
            for (int i = 0; i < NVERSIONS; i++)
                if ((size_t)perm[p][i] < n)
                    o[k++] = v[perm[p][i]];
            o[k++] = v[p % n]; /* a duplicate */
            char *again = merge_n(o, k);
            assert_string_equal(again, m);
            free(again);
        }
        json_decref(mf);
        json_decref(root);
        free(m);
    }
    assert_true(multi >= 33);

    /* battle keeps f_deck_id right after cell_id */
    const char *bv[NVERSIONS];
    size_t bn = versions(tables, "battle", bv);
    assert_int_equal(bn, 3);
    char *m = merge_n(bv, bn);
    json_t *root = json_loads(m, 0, NULL);
    assert_int_equal(field_index(root, "f_deck_id"), field_index(root, "cell_id") + 1);
    json_decref(root);
    /* f_deck_id is missing from the later versions: nullable, default null */
    assert_type(m, "f_deck_id", "[\"null\",{\"logicalType\":\"uuid\",\"type\":\"string\"}]");
    assert_non_null(strstr(m, "{\"default\":null,\"name\":\"f_deck_id\""));
    free(m);

    /* own_ship.karyoku: the three-branch union */
    const char *ov[NVERSIONS];
    size_t on = versions(tables, "own_ship", ov);
    m = merge_n(ov, on);
    /* the fold's order: v0.5's ["null","int"] comes first by fingerprint */
    assert_true(fingerprint(ov[1]) < fingerprint(ov[0]));
    assert_type(m, "karyoku", "[\"null\",\"int\",{\"items\":\"int\",\"type\":\"array\"}]");

    free(m);
    /* cells v0.5 + v0.5.1: the new field nullable */
    const char *cv[2] = {version_of(tables, "cells", 1), version_of(tables, "cells", 2)};
    m = merge_n(cv, 2);
    assert_avro_parses(m);
    free(m);
    json_decref(tables);
}

static void test_merge_single_version(void **state)
{
    (void)state;
    json_t *tables = load_tables();
    const char *v = version_of(tables, "env_info", 2);
    /* the same canonical form in other bytes: still one version */
    json_t *j = json_loads(v, 0, NULL);
    char *pretty = json_dumps(j, JSON_INDENT(2));
    const char *set[3] = {v, pretty, v};
    char *m = merge_n(set, 3);
    assert_string_equal(m, v);
    free(m);
    const char *set2[2] = {pretty, v};
    m = merge_n(set2, 2);
    assert_string_equal(m, pretty); /* json[0], byte for byte */
    free(m);
    m = merge_n(&v, 1);
    assert_string_equal(m, v);
    free(m);
    free(pretty);
    json_decref(j);
    json_decref(tables);
}

/* What holds of merging a merge again: merge({M, v}) is M when M comes first
 * in the fold (M's fingerprint is the smaller); otherwise it has the same
 * fields, and every version still converts to it. merge({M}) is M. */
static void test_merge_again(void **state)
{
    (void)state;
    json_t *tables = load_tables();
    const char *name;
    json_t *slot;
    int same_bytes = 0, other = 0;
    for (void *it3 = json_object_iter(tables);
         it3 && ((name = json_object_iter_key(it3)), (slot = json_object_iter_value(it3)));
         it3 = json_object_iter_next(tables, it3)) {
        const char *v[NVERSIONS];
        size_t n = versions(tables, name, v);
        if (n < 2)
            continue;
        char *m = merge_n(v, n);
        const char *mm[2] = {m, m};
        char *self = merge_n(mm, 2);
        assert_string_equal(self, m);
        free(self);
        json_t *root = json_loads(m, 0, NULL);
        json_t *mf = fields_of(root);
        for (size_t i = 0; i < n; i++) {
            char *again = merge2(m, v[i]);
            if (fingerprint(m) < fingerprint(v[i])) {
                assert_string_equal(again, m);
                same_bytes++;
            } else {
                other++;
                json_t *r2 = json_loads(again, 0, NULL);
                json_t *f2 = fields_of(r2);
                assert_int_equal(json_object_size(f2), json_object_size(mf));
                const char *fname;
                json_t *f;
                for (void *it4 = json_object_iter(mf); it4 && ((fname = json_object_iter_key(it4)),
                                                               (f = json_object_iter_value(it4)));
                     it4 = json_object_iter_next(mf, it4))
                    assert_non_null(json_object_get(f2, fname));
                json_decref(f2);
                json_decref(r2);
                for (size_t k = 0; k < n; k++) {
                    struct bfs_conv *c = NULL;
                    struct bfs_err err = {0};
                    if (bfs_conv_new(v[k], strlen(v[k]), again, strlen(again), BFS_CODEC_NULL,
                                     MSYNC, &c, &err) != 0)
                        fail_msg("%s: %s", name, err.msg);
                    bfs_conv_free(c);
                }
            }
            free(again);
        }
        json_decref(mf);
        json_decref(root);
        free(m);
    }
    assert_true(same_bytes > 0);
    print_message("merge({M, v}) == M: %d cases (M first); other order: %d\n", same_bytes, other);
    json_decref(tables);
}

/* ------------------------------------------------------------------------ */
/* merge rules on small schemas                                              */

#define REC(name, fields) "{\"type\":\"record\",\"name\":\"" name "\",\"fields\":[" fields "]}"
#define F(name, type)     "{\"name\":\"" name "\",\"type\":" type "}"
/* The same, for a record inside another's fields (cppcheck does not expand a
 * macro inside its own argument). */
#define REC2(name, fields) "{\"type\":\"record\",\"name\":\"" name "\",\"fields\":[" fields "]}"
#define F2(name, type)     "{\"name\":\"" name "\",\"type\":" type "}"

static void test_merge_refusals(void **state)
{
    (void)state;
    struct bfs_err err = {0};
    assert_int_equal(merge_fails(REC("OwnShip", F("id", "\"int\"") "," F("karyoku", "\"int\"")),
                                 REC("OwnShip", F("id", "\"int\"") "," F("karyoku", "\"string\"")),
                                 &err),
                     -EINVAL);
    /* the types in the order of the fold (by fingerprint) */
    assert_true(strcmp(err.msg, "field OwnShip.karyoku: int and string do not merge") == 0 ||
                strcmp(err.msg, "field OwnShip.karyoku: string and int do not merge") == 0);
    assert_int_equal(err.code, -EINVAL);

    assert_int_equal(merge_fails(REC("A", F("x", "\"int\"")), REC("B", F("x", "\"int\"")), &err),
                     -EINVAL);
    assert_true(strcmp(err.msg, "record names differ: A and B") == 0 ||
                strcmp(err.msg, "record names differ: B and A") == 0);

    const char *f4 = REC("T", F("h", "{\"type\":\"fixed\",\"name\":\"H\",\"size\":4}"));
    const char *f8 = REC("T", F("h", "{\"type\":\"fixed\",\"name\":\"H\",\"size\":8}"));
    assert_int_equal(merge_fails(f4, f8, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "field T.h: fixed H of sizes"));

    /* a record and an array; records of other names; an enum and a record of one name */
    assert_int_equal(merge_fails(REC("T", F("a", REC2("R", F2("x", "\"int\"")))),
                                 REC("T", F("a", "{\"type\":\"array\",\"items\":\"int\"}")), &err),
                     -EINVAL);
    assert_true(strcmp(err.msg, "field T.a: record R and array do not merge") == 0 ||
                strcmp(err.msg, "field T.a: array and record R do not merge") == 0);
    assert_int_equal(merge_fails(REC("T", F("a", REC2("R", F2("x", "\"int\"")))),
                                 REC("T", F("a", REC2("S", F2("x", "\"int\"")))), &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "field T.a:"));
    /* long does not narrow to int inside an array either */
    assert_int_equal(merge_fails(REC("T", F("a", "{\"type\":\"map\",\"values\":\"boolean\"}")),
                                 REC("T", F("a", "{\"type\":\"map\",\"values\":\"long\"}")), &err),
                     -EINVAL);
    assert_true(strcmp(err.msg, "field T.a: boolean and long do not merge") == 0 ||
                strcmp(err.msg, "field T.a: long and boolean do not merge") == 0);
    /* not a schema; not a record */
    assert_int_equal(merge_fails("{", REC("T", F("a", "\"int\"")), &err), -EINVAL);
    assert_int_equal(merge_fails("\"int\"", "\"long\"", &err), -EINVAL);
}

/* Merge a and b, check the result has field f of type want (sorted JSON;
 * want2 instead when b comes first in the fold, if not NULL), and that
 * records of a and of b convert to it in every codec. */
static char *rule2(const char *a, const char *b, const char *f, const char *want, const char *want2)
{
    char *m = merge2(a, b);
    assert_avro_parses(m);
    if (want2 && fingerprint(b) < fingerprint(a))
        want = want2;
    if (f && want)
        assert_type(m, f, want);
    for (size_t k = 0; k < 3; k++) {
        roundtrip(a, m, CODECS[k], 7, 11 + (unsigned)k, NULL);
        roundtrip(b, m, CODECS[k], 7, 23 + (unsigned)k, NULL);
    }
    return m;
}

static char *rule(const char *a, const char *b, const char *f, const char *want)
{
    return rule2(a, b, f, want, NULL);
}

static void test_merge_rules(void **state)
{
    (void)state;
    free(rule(REC("T", F("a", "\"int\"")), REC("T", F("a", "\"long\"")), "a", "\"long\""));
    free(rule(REC("T", F("a", "\"int\"")), REC("T", F("a", "\"double\"")), "a", "\"double\""));
    free(rule(REC("T", F("a", "\"long\"")), REC("T", F("a", "\"float\"")), "a", "\"float\""));
    free(rule(REC("T", F("a", "\"float\"")), REC("T", F("a", "\"double\"")), "a", "\"double\""));
    free(rule(REC("T", F("a", "\"string\"")), REC("T", F("a", "\"bytes\"")), "a", "\"bytes\""));
    /* a promotion inside a union's branch and inside an array */
    free(rule(REC("T", F("a", "[\"null\",{\"type\":\"array\",\"items\":\"int\"}]")),
              REC("T", F("a", "[\"null\",{\"type\":\"array\",\"items\":\"long\"}]")), "a",
              "[\"null\",{\"items\":\"long\",\"type\":\"array\"}]"));
    /* unions: the union of the branches */
    char *m =
        rule2(REC("T", F("a", "[\"null\",\"int\"]")), REC("T", F("a", "[\"null\",\"string\"]")),
              "a", "[\"null\",\"int\",\"string\"]", "[\"null\",\"string\",\"int\"]");
    free(m);
    /* a non-union and a union */
    free(rule2(REC("T", F("a", "\"int\"")), REC("T", F("a", "[\"null\",\"string\"]")), "a",
               "[\"int\",\"null\",\"string\"]", "[\"null\",\"string\",\"int\"]"));
    /* enums: the first's symbols, then the new ones */
    free(rule(REC("T", F("e", "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\"]}")),
              REC("T", F("e", "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"C\",\"B\"]}")), "e",
              NULL) /* the order depends on the fingerprints: checked below */);
    m = merge2(REC("T", F("e", "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\"]}")),
               REC("T", F("e", "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"C\",\"B\"]}")));
    assert_true(strstr(m, "\"symbols\":[\"A\",\"B\",\"C\"]") ||
                strstr(m, "\"symbols\":[\"C\",\"B\",\"A\"]"));
    free(m);
    /* a record in a union: its fields merge (y new: nullable) */
    m = rule(
        REC("T", F("r", "[\"null\"," REC2("R", F2("x", "\"int\"")) "]")),
        REC("T", F("r", "[\"null\"," REC2("R", F2("x", "\"long\"") "," F2("y", "\"string\"")) "]")),
        NULL, NULL);
    assert_non_null(strstr(m, "{\"name\":\"x\",\"type\":\"long\"}"));
    assert_non_null(strstr(m, "{\"default\":null,\"name\":\"y\",\"type\":[\"null\",\"string\"]}"));
    free(m);
    /* an array of records, a map of records, the record used again by name */
    const char *p1 =
        REC("T", F("l", "{\"type\":\"array\",\"items\":" REC2("P", F2("x", "\"int\"")) "}") "," F(
                     "m", "{\"type\":\"map\",\"values\":\"P\"}"));
    const char *p2 = REC(
        "T",
        F("l",
          "{\"type\":\"array\",\"items\":" REC2(
              "P", F2("x", "\"int\"") "," F2(
                       "z", "[\"null\",\"double\"]")) "}") "," F("m",
                                                                 "{\"type\":\"map\",\"values\":"
                                                                 "\"P\"}") "," F("n",
                                                                                 "\"boolean\""));
    m = rule(p1, p2, "m", "{\"type\":\"map\",\"values\":\"P\"}");
    assert_non_null(strstr(m, "\"name\":\"z\""));
    assert_type(m, "n", "[\"null\",\"boolean\"]");
    free(m);
    /* a map's values merge */
    free(rule2(REC("T", F("m", "{\"type\":\"map\",\"values\":\"int\"}")),
               REC("T", F("m", "{\"type\":\"map\",\"values\":[\"null\",\"long\"]}")), "m",
               "{\"type\":\"map\",\"values\":[\"int\",\"null\",\"long\"]}",
               "{\"type\":\"map\",\"values\":[\"null\",\"long\",\"int\"]}"));
    /* fixed of one size; booleans, floats, bytes copied */
    free(rule(REC("T", F("h", "{\"type\":\"fixed\",\"name\":\"H\",\"size\":4}") "," F(
                           "b", "\"boolean\"") "," F("d", "\"double\"")),
              REC("T", F("h", "{\"type\":\"fixed\",\"name\":\"H\",\"size\":4}") "," F(
                           "f", "\"float\"") "," F("y", "\"bytes\"")),
              "h", "{\"name\":\"H\",\"size\":4,\"type\":\"fixed\"}"));
    /* fields in another order: the fold's order, the other version reordered */
    m = rule(REC("T", F("a", "\"int\"") "," F("b", "\"string\"") "," F("c", "\"long\"")),
             REC("T", F("c", "\"long\"") "," F("b", "\"string\"") "," F("d", "\"int\"") "," F(
                          "a", "\"int\"")),
             "d", "[\"null\",\"int\"]");
    free(m);
    /* a field missing from a version whose type has null last: null moves first */
    m = rule(REC("T", F("a", "\"int\"") "," F("b", "[\"string\",\"null\"]")),
             REC("T", F("a", "\"int\"")), "b", "[\"null\",\"string\"]");
    free(m);
    /* new fields: after their nearest preceding field; at the start */
    m = merge2(REC("T", F("a", "\"int\"") "," F("c", "\"int\"")),
               REC("T", F("n0", "\"int\"") "," F("a", "\"int\"") "," F("b1", "\"int\"") "," F(
                            "b2", "\"int\"") "," F("c", "\"int\"")));
    json_t *root = json_loads(m, 0, NULL);
    assert_int_equal(field_index(root, "n0"), 0);
    assert_int_equal(field_index(root, "a"), 1);
    assert_int_equal(field_index(root, "b1"), 2);
    assert_int_equal(field_index(root, "b2"), 3);
    assert_int_equal(field_index(root, "c"), 4);
    json_decref(root);
    free(m);
    /* attributes: logicalType kept, doc dropped, namespaces */
    m = merge2(
        "{\"type\":\"record\",\"name\":\"T\",\"namespace\":\"x.y\",\"doc\":\"d\",\"fields\":["
        "{\"name\":\"u\",\"doc\":\"d\",\"type\":{\"type\":\"string\",\"logicalType\":\"uuid\"}},"
        "{\"name\":\"r\",\"type\":{\"type\":\"record\",\"name\":\"R\",\"fields\":["
        "{\"name\":\"q\",\"type\":\"int\"}]}},{\"name\":\"s\",\"type\":\"R\"}]}",
        "{\"type\":\"record\",\"name\":\"T\",\"namespace\":\"x.y\",\"fields\":["
        "{\"name\":\"u\",\"type\":{\"type\":\"string\",\"logicalType\":\"uuid\"}},"
        "{\"name\":\"r\",\"type\":{\"type\":\"record\",\"name\":\"R\",\"fields\":["
        "{\"name\":\"q\",\"type\":\"long\"}]}},{\"name\":\"s\",\"type\":\"x.y.R\"}]}");
    assert_null(strstr(m, "\"doc\""));
    assert_non_null(strstr(m, "\"logicalType\":\"uuid\""));
    assert_non_null(strstr(m, "\"namespace\":\"x.y\""));
    assert_non_null(strstr(m, "\"type\":\"x.y.R\""));
    assert_avro_parses(m);
    free(m);
}

/* ------------------------------------------------------------------------ */
/* conversions                                                               */

static void test_conv_real_roundtrip(void **state)
{
    (void)state;
    json_t *tables = load_tables();
    static const char *const names[] = {"battle", "own_ship", "cells"};
    struct bfs_buf out = {0};
    for (size_t t = 0; t < 3; t++) {
        const char *v[NVERSIONS];
        size_t n = versions(tables, names[t], v);
        char *m = merge_n(v, n);
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < 3; k++)
                roundtrip(v[i], m, CODECS[k], 25, (unsigned)(t * 1000 + i * 10 + k), &out);
        free(m);
    }
    bfs_buf_free(&out);
    json_decref(tables);
}

static void test_conv_every_table(void **state)
{
    (void)state;
    json_t *tables = load_tables();
    const char *name;
    json_t *slot;
    int runs = 0;
    for (void *it5 = json_object_iter(tables);
         it5 && ((name = json_object_iter_key(it5)), (slot = json_object_iter_value(it5)));
         it5 = json_object_iter_next(tables, it5)) {
        const char *v[NVERSIONS];
        size_t n = versions(tables, name, v);
        char *m = merge_n(v, n);
        for (size_t i = 0; i < n; i++) {
            roundtrip(v[i], m, CODECS[runs % 3], 4, (unsigned)(runs * 7), NULL);
            runs++;
        }
        free(m);
    }
    assert_true(runs >= 100);
    json_decref(tables);
}

/* Empty and large blocks: the framing of every size class. */
static void test_conv_framing(void **state)
{
    (void)state;
    const char *s = REC("T", F("b", "\"bytes\""));
    const char *m = REC("T", F("b", "\"bytes\"") "," F("n", "[\"null\",\"int\"]"));
    /* records of about 200 KiB: several stored blocks and literals */
    struct bfs_buf plain = {0}, in = {0}, out = {0}, scratch = {0}, dec = {0};
    uint8_t *big = malloc(200000);
    for (size_t i = 0; i < 200000; i++)
        big[i] = (uint8_t)(i * 131);
    for (int r = 0; r < 3; r++) {
        put_long(&plain, 200000 - r);
        assert_int_equal(bfs_buf_append(&plain, big, 200000 - (size_t)r), 0);
    }
    for (size_t k = 0; k < 3; k++) {
        struct bfs_conv *c;
        assert_int_equal(bfs_conv_new(s, strlen(s), m, strlen(m), CODECS[k], MSYNC, &c, NULL), 0);
        bfs_buf_reset(&in);
        bfs_buf_reset(&out);
        tblock_make(CODECS[k], plain.data, plain.len, 3, SYNC_IN, &in);
        assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, NULL), 0);
        assert_int_equal(open_block(CODECS[k], out.data, out.len, &dec), 3);
        assert_int_equal(dec.len, plain.len + 3);
        size_t at = 0;
        for (int r = 0; r < 3; r++) {
            size_t n = 200000 - (size_t)r;
            at += n < 64 ? 1 : 3; /* the length varint */
            assert_memory_equal(dec.data + at, big, n);
            at += n;
            assert_int_equal(dec.data[at++], 0); /* n: null */
        }
        /* an empty block */
        bfs_buf_reset(&in);
        bfs_buf_reset(&out);
        tblock_make(CODECS[k], NULL, 0, 0, SYNC_IN, &in);
        assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, NULL), 0);
        assert_int_equal(open_block(CODECS[k], out.data, out.len, &dec), 0);
        assert_int_equal(dec.len, 0);
        if (CODECS[k] == BFS_CODEC_DEFLATE) {
            static const uint8_t empty[] = {0, 10, 1, 0, 0, 0xff, 0xff};
            assert_int_equal(out.len, sizeof empty + 16);
            assert_memory_equal(out.data, empty, sizeof empty);
        } else if (CODECS[k] == BFS_CODEC_SNAPPY) {
            static const uint8_t empty[] = {0, 10, 0, 0, 0, 0, 0};
            assert_int_equal(out.len, sizeof empty + 16);
            assert_memory_equal(out.data, empty, sizeof empty);
        }
        bfs_conv_free(c);
    }
    free(big);
    bfs_buf_free(&plain);
    bfs_buf_free(&in);
    bfs_buf_free(&out);
    bfs_buf_free(&scratch);
    bfs_buf_free(&dec);
}

/* A negative array count with a byte size, and a block of arrays of zero-byte
 * items. */
static void test_conv_array_blocks(void **state)
{
    (void)state;
    const char *s = REC("T", F("a", "{\"type\":\"array\",\"items\":\"int\"}"));
    const char *m = REC(
        "T", F("a", "{\"type\":\"array\",\"items\":\"long\"}") "," F("n", "[\"null\",\"int\"]"));
    struct bfs_conv *c;
    assert_int_equal(bfs_conv_new(s, strlen(s), m, strlen(m), BFS_CODEC_NULL, MSYNC, &c, NULL), 0);
    struct bfs_buf plain = {0}, in = {0}, out = {0}, scratch = {0};
    put_long(&plain, -2); /* two items, in 2 bytes */
    put_long(&plain, 2);
    put_long(&plain, 5);
    put_long(&plain, -5);
    put_long(&plain, 1);
    put_long(&plain, 7);
    put_long(&plain, 0);
    tblock_make(BFS_CODEC_NULL, plain.data, plain.len, 1, SYNC_IN, &in);
    assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, NULL), 0);
    static const uint8_t want[] = {2, 14, 4, 10, 9, 2, 14, 0, 0};
    assert_memory_equal(out.data, want, sizeof want);
    assert_memory_equal(out.data + sizeof want, MSYNC, 16);
    bfs_conv_free(c);

    /* arrays of null: a count beyond the bytes is bounded */
    s = REC("T", F("a", "{\"type\":\"array\",\"items\":\"null\"}"));
    m = REC("T",
            F("a", "{\"type\":\"array\",\"items\":\"null\"}") "," F("n", "[\"null\",\"int\"]"));
    assert_int_equal(bfs_conv_new(s, strlen(s), m, strlen(m), BFS_CODEC_NULL, MSYNC, &c, NULL), 0);
    bfs_buf_reset(&plain);
    bfs_buf_reset(&in);
    bfs_buf_reset(&out);
    put_long(&plain, 1000);
    put_long(&plain, 0);
    tblock_make(BFS_CODEC_NULL, plain.data, plain.len, 1, SYNC_IN, &in);
    assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, NULL), 0);
    bfs_buf_reset(&plain);
    bfs_buf_reset(&in);
    put_long(&plain, INT64_MAX);
    put_long(&plain, 0);
    tblock_make(BFS_CODEC_NULL, plain.data, plain.len, 1, SYNC_IN, &in);
    struct bfs_err err = {0};
    size_t before = out.len;
    assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, &err), -EINVAL);
    assert_int_equal(out.len, before);
    assert_non_null(strstr(err.msg, "record 1: "));
    bfs_conv_free(c);
    bfs_buf_free(&plain);
    bfs_buf_free(&in);
    bfs_buf_free(&out);
    bfs_buf_free(&scratch);
}

static void test_conv_refusals(void **state)
{
    (void)state;
    struct bfs_conv *c = (struct bfs_conv *)1;
    struct bfs_err err = {0};
    const char *w = REC("T", F("a", "\"long\""));
    const char *m = REC("T", F("a", "\"int\""));
    assert_int_equal(bfs_conv_new(w, strlen(w), m, strlen(m), BFS_CODEC_NULL, MSYNC, &c, &err),
                     -EINVAL);
    assert_null(c);
    assert_string_equal(err.msg, "field T.a: the writer's long does not resolve to int");
    /* a merged field the writer lacks must be nullable */
    w = REC("T", F("a", "\"int\""));
    m = REC("T", F("a", "\"int\"") "," F("b", "\"int\""));
    assert_int_equal(bfs_conv_new(w, strlen(w), m, strlen(m), BFS_CODEC_NULL, MSYNC, &c, &err),
                     -EINVAL);
    assert_string_equal(err.msg, "field T.b: the writer lacks it and it is not nullable");
    /* a writer's field the merge lacks */
    assert_int_equal(bfs_conv_new(m, strlen(m), w, strlen(w), BFS_CODEC_NULL, MSYNC, &c, &err),
                     -EINVAL);
    assert_string_equal(err.msg, "field T.b: not in the merged record T");
    /* an enum symbol the merge lacks */
    w = REC("T", F("e", "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"Z\"]}"));
    m = REC("T", F("e", "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\"]}"));
    assert_int_equal(bfs_conv_new(w, strlen(w), m, strlen(m), BFS_CODEC_NULL, MSYNC, &c, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "field T.e: enum symbol Z"));
    assert_int_equal(bfs_conv_new("{", 1, m, strlen(m), BFS_CODEC_NULL, MSYNC, &c, &err), -EINVAL);
    assert_int_equal(bfs_conv_new(m, strlen(m), m, strlen(m), (enum bfs_codec)7, MSYNC, &c, &err),
                     -EINVAL);
    bfs_conv_free(NULL);
}

static void test_block_span(void **state)
{
    (void)state;
    uint8_t b[32] = {0};
    size_t n = 0;
    assert_int_equal(bfs_ocf_block_span(b, 0, &n), -EAGAIN);
    b[0] = 0x80; /* a varint that goes on */
    assert_int_equal(bfs_ocf_block_span(b, 1, &n), -EAGAIN);
    b[0] = 4;
    assert_int_equal(bfs_ocf_block_span(b, 1, &n), -EAGAIN);
    b[1] = 0x90; /* size 200: 0x90 0x03 */
    assert_int_equal(bfs_ocf_block_span(b, 2, &n), -EAGAIN);
    b[2] = 0x03;
    assert_int_equal(bfs_ocf_block_span(b, 3, &n), 0);
    assert_int_equal(n, 3 + 200 + 16);
    b[0] = 3; /* count -2 */
    assert_int_equal(bfs_ocf_block_span(b, 3, &n), -EINVAL);
    b[0] = 4;
    b[1] = 1; /* size -1 */
    assert_int_equal(bfs_ocf_block_span(b, 3, &n), -EINVAL);
    struct bfs_buf big = {0};
    put_long(&big, 1);
    put_long(&big, (int64_t)BFS_OCF_MAX_COMPRESSED + 1);
    assert_int_equal(bfs_ocf_block_span(big.data, big.len, &n), -EINVAL);
    memset(b, 0xff, sizeof b); /* not a varint */
    assert_int_equal(bfs_ocf_block_span(b, sizeof b, &n), -EINVAL);
    bfs_buf_free(&big);
}

/* Truncated and corrupt blocks: -EINVAL (and never a crash, under ASan). */
static void test_conv_corrupt(void **state)
{
    (void)state;
    json_t *tables = load_tables();
    const char *v[NVERSIONS];
    size_t n = versions(tables, "own_ship", v);
    char *m = merge_n(v, n);
    struct bfs_buf plain = {0}, in = {0}, out = {0}, scratch = {0};
    struct bfs_err err = {0};
    for (size_t k = 0; k < 3; k++) {
        struct written w;
        write_records(v[0], 6, 5, &w);
        bfs_buf_reset(&in);
        tblock_make(CODECS[k], w.plain.data, w.plain.len, 6, SYNC_IN, &in);
        struct bfs_conv *c;
        assert_int_equal(bfs_conv_new(v[0], strlen(v[0]), m, strlen(m), CODECS[k], MSYNC, &c, &err),
                         0);
        for (size_t len = 0; len < in.len; len++) {
            bfs_buf_reset(&out);
            uint8_t *cut = malloc(len ? len : 1);
            memcpy(cut, in.data, len);
            assert_int_equal(bfs_conv_block(c, cut, len, &out, &scratch, &err), -EINVAL);
            assert_int_equal(out.len, 0);
            free(cut);
        }
        /* every byte of the data changed: converted or refused, nothing else */
        int refused = 0;
        for (size_t i = 2; i + 16 < in.len; i++) {
            for (int x = 0; x < 3; x++) {
                uint8_t save = in.data[i];
                in.data[i] = (uint8_t)(x == 0 ? 0xff : x == 1 ? save ^ 0x41 : 0x80);
                bfs_buf_reset(&out);
                int rc = bfs_conv_block(c, in.data, in.len, &out, &scratch, &err);
                assert_true(rc == 0 || rc == -EINVAL);
                refused += rc != 0;
                in.data[i] = save;
            }
        }
        assert_true(refused > 0);
        /* more records than the data holds; bytes left after the records */
        for (int d = -1; d <= 1; d += 2) {
            bfs_buf_reset(&in);
            tblock_make(CODECS[k], w.plain.data, w.plain.len, 6 + d, SYNC_IN, &in);
            assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, &err), -EINVAL);
            if (d < 0)
                assert_non_null(strstr(err.msg, "bytes left after the block's 5 records"));
            else
                assert_non_null(strstr(err.msg, "record 7: the data ends inside"));
        }
        bfs_conv_free(c);
        written_free(&w);
    }
    /* random blocks: converted or refused, nothing else */
    {
        uint64_t x = 88172645463325252ull;
        const char *bv[NVERSIONS];
        size_t bn = versions(tables, "battle", bv);
        char *bm = merge_n(bv, bn);
        for (size_t k = 0; k < 3; k++) {
            struct bfs_conv *c;
            assert_int_equal(
                bfs_conv_new(bv[0], strlen(bv[0]), bm, strlen(bm), CODECS[k], MSYNC, &c, NULL), 0);
            for (int i = 0; i < 2000; i++) {
                bfs_buf_reset(&plain);
                bfs_buf_reset(&in);
                size_t len = (size_t)(i % 300);
                for (size_t j = 0; j < len; j++) {
                    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                    uint8_t byte = (uint8_t)(i % 3 ? x & 0x7f : x);
                    assert_int_equal(bfs_buf_append(&plain, &byte, 1), 0);
                }
                tblock_make(CODECS[k], plain.data, plain.len, (int64_t)(x % 5), SYNC_IN, &in);
                int rc = bfs_conv_block(c, in.data, in.len, &out, &scratch, &err);
                assert_true(rc == 0 || rc == -EINVAL);
            }
            bfs_conv_free(c);
        }
        free(bm);
    }
    /* a union index out of range */
    {
        const char *s = REC("T", F("a", "[\"null\",\"int\"]"));
        const char *mm = REC("T", F("a", "[\"null\",\"int\",\"string\"]"));
        struct bfs_conv *c;
        assert_int_equal(
            bfs_conv_new(s, strlen(s), mm, strlen(mm), BFS_CODEC_NULL, MSYNC, &c, NULL), 0);
        bfs_buf_reset(&plain);
        bfs_buf_reset(&in);
        put_long(&plain, 2);
        put_long(&plain, 1);
        tblock_make(BFS_CODEC_NULL, plain.data, plain.len, 1, SYNC_IN, &in);
        assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, &err), -EINVAL);
        assert_string_equal(err.msg, "record 1: union index 2 is not one of 2");
        bfs_conv_free(c);
    }
    /* codec data: bad deflate, snappy CRC */
    {
        struct bfs_conv *c;
        assert_int_equal(
            bfs_conv_new(v[0], strlen(v[0]), m, strlen(m), BFS_CODEC_DEFLATE, MSYNC, &c, NULL), 0);
        static const uint8_t bad[] = {2, 6, 0xff, 0xff, 0xff, 0,  1,  2,  3,  4,  5,
                                      6, 7, 8,    9,    10,   11, 12, 13, 14, 15, 16};
        assert_int_equal(bfs_conv_block(c, bad, sizeof bad, &out, &scratch, &err), -EINVAL);
        bfs_conv_free(c);
        assert_int_equal(
            bfs_conv_new(v[0], strlen(v[0]), m, strlen(m), BFS_CODEC_SNAPPY, MSYNC, &c, NULL), 0);
        struct written w;
        write_records(v[0], 2, 9, &w);
        bfs_buf_reset(&in);
        tblock_make(BFS_CODEC_SNAPPY, w.plain.data, w.plain.len, 2, SYNC_IN, &in);
        in.data[in.len - 17] ^= 1; /* the CRC */
        assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, &err), -EINVAL);
        assert_string_equal(err.msg, "snappy CRC32 does not match the data");
        written_free(&w);
        bfs_conv_free(c);
    }
    free(m);
    bfs_buf_free(&plain);
    bfs_buf_free(&in);
    bfs_buf_free(&out);
    bfs_buf_free(&scratch);
    json_decref(tables);
}

static void test_conv_cache(void **state)
{
    (void)state;
    const char *w = REC("T", F("a", "\"int\""));
    const char *m = REC("T", F("a", "\"long\"") "," F("b", "[\"null\",\"int\"]"));
    struct bfs_conv_cache *cache;
    assert_int_equal(bfs_conv_cache_new(0, &cache), -EINVAL);
    assert_int_equal(bfs_conv_cache_new(2, &cache), 0);
    struct bfs_conv *a, *b, *c, *d;
    assert_int_equal(
        bfs_conv_get(cache, w, strlen(w), m, strlen(m), BFS_CODEC_NULL, MSYNC, &a, NULL), 0);
    assert_int_equal(
        bfs_conv_get(cache, w, strlen(w), m, strlen(m), BFS_CODEC_NULL, MSYNC, &b, NULL), 0);
    assert_ptr_equal(a, b);
    assert_int_equal(
        bfs_conv_get(cache, w, strlen(w), m, strlen(m), BFS_CODEC_SNAPPY, MSYNC, &c, NULL), 0);
    assert_ptr_not_equal(a, c);
    assert_int_equal(
        bfs_conv_get(cache, w, strlen(w), m, strlen(m), BFS_CODEC_NULL, SYNC_IN, &d, NULL), 0);
    assert_ptr_not_equal(a, d);
    struct bfs_err err = {0};
    struct bfs_conv *e = NULL;
    assert_int_equal(
        bfs_conv_get(cache, m, strlen(m), w, strlen(w), BFS_CODEC_NULL, MSYNC, &e, &err), -EINVAL);
    bfs_conv_cache_free(cache); /* references outlive the cache */
    struct bfs_buf plain = {0}, in = {0}, out = {0}, scratch = {0};
    put_long(&plain, 21);
    tblock_make(BFS_CODEC_NULL, plain.data, plain.len, 1, SYNC_IN, &in);
    assert_int_equal(bfs_conv_block(a, in.data, in.len, &out, &scratch, NULL), 0);
    static const uint8_t want[] = {2, 4, 42, 0};
    assert_memory_equal(out.data, want, sizeof want);
    bfs_conv_unref(a);
    bfs_conv_unref(b);
    bfs_conv_unref(c);
    bfs_conv_unref(d);
    bfs_buf_free(&plain);
    bfs_buf_free(&in);
    bfs_buf_free(&out);
    bfs_buf_free(&scratch);
}

/* A recursive record: merged once, converted at every depth. */
static void test_recursive_type(void **state)
{
    (void)state;
    const char *a =
        "{\"type\":\"record\",\"name\":\"Node\",\"fields\":[{\"name\":\"v\",\"type\":\"int\"},"
        "{\"name\":\"next\",\"type\":[\"null\",\"Node\"]}]}";
    const char *b =
        "{\"type\":\"record\",\"name\":\"Node\",\"fields\":[{\"name\":\"v\",\"type\":\"long\"},"
        "{\"name\":\"tag\",\"type\":\"string\"},"
        "{\"name\":\"next\",\"type\":[\"null\",\"Node\"]},"
        "{\"name\":\"kids\",\"type\":{\"type\":\"array\",\"items\":\"Node\"}}]}";
    char *m = merge2(a, b);
    assert_avro_parses(m);
    assert_type(m, "v", "\"long\"");
    assert_type(m, "tag", "[\"null\",\"string\"]");
    assert_type(m, "next", "[\"null\",\"Node\"]");
    for (size_t k = 0; k < 3; k++) {
        roundtrip(a, m, CODECS[k], 9, 3 + (unsigned)k, NULL);
        roundtrip(b, m, CODECS[k], 9, 5 + (unsigned)k, NULL);
    }
    free(m);
}

/* A writer whose canonical form is the merge's: records copied as they are. */
static void test_conv_identity(void **state)
{
    (void)state;
    const char *w = REC("T", F("a", "\"int\"") "," F("b", "[\"null\",\"string\"]"));
    const char *m =
        "{\"type\":\"record\",\"name\":\"T\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
        "{\"name\":\"b\",\"type\":[\"null\",\"string\"],\"default\":null}]}";
    struct written wr;
    write_records(w, 20, 77, &wr);
    for (size_t k = 0; k < 3; k++) {
        struct bfs_buf in = {0}, out = {0}, scratch = {0}, plain = {0};
        tblock_make(CODECS[k], wr.plain.data, wr.plain.len, 20, SYNC_IN, &in);
        struct bfs_conv *c;
        assert_int_equal(bfs_conv_new(w, strlen(w), m, strlen(m), CODECS[k], MSYNC, &c, NULL), 0);
        assert_int_equal(bfs_conv_block(c, in.data, in.len, &out, &scratch, NULL), 0);
        assert_int_equal(open_block(CODECS[k], out.data, out.len, &plain), 20);
        assert_int_equal(plain.len, wr.plain.len);
        assert_memory_equal(plain.data, wr.plain.data, plain.len);
        bfs_conv_free(c);
        bfs_buf_free(&in);
        bfs_buf_free(&out);
        bfs_buf_free(&scratch);
        bfs_buf_free(&plain);
    }
    written_free(&wr);
}

/* The file battlefs serves: a layout header with the merged schema, then the
 * blocks of every version converted. battlefs' own reader (bfs_ocf_process,
 * with avro-c decoding every record too) accepts it whole. */
static void test_whole_file(void **state)
{
    (void)state;
    json_t *tables = load_tables();
    static const char *const names[] = {"battle", "own_ship", "cells", "battle_result"};
    for (size_t t = 0; t < 4; t++) {
        const char *v[NVERSIONS];
        size_t n = versions(tables, names[t], v);
        char *m = merge_n(v, n);
        for (size_t k = 0; k < 3; k++) {
            struct bfs_buf file = {0}, blk = {0};
            assert_int_equal(bfs_ocf_layout_header(m, strlen(m), CODECS[k], MSYNC, &file), 0);
            int64_t total = 0;
            for (size_t i = 0; i < n; i++) {
                roundtrip(v[i], m, CODECS[k], 6 + (int)i, (unsigned)(t * 100 + i), &blk);
                assert_int_equal(bfs_buf_append(&file, blk.data, blk.len), 0);
                total += 6 + (int64_t)i;
            }
            struct bfs_ocf_header h;
            struct bfs_err err = {0};
            assert_int_equal(bfs_ocf_parse_header(file.data, file.len, &h, &err), 0);
            uint64_t records = 0;
            struct bfs_buf same_codec = {0};
            int rc = bfs_ocf_process(file.data, file.len, &h, MSYNC, CODECS[k], &same_codec,
                                     &records, BFS_OCF_CROSSCHECK, 0, &err);
            if (rc != 0)
                fail_msg("%s (%s): %s", names[t], bfs_codec_name(CODECS[k]), err.msg);
            assert_int_equal(records, total);
            /* blocks in the file's own codec are kept as they are */
            assert_int_equal(same_codec.len, file.len - h.header_len);
            assert_memory_equal(same_codec.data, file.data + h.header_len, same_codec.len);
            bfs_ocf_header_free(&h);
            bfs_buf_free(&same_codec);
            bfs_buf_free(&file);
            bfs_buf_free(&blk);
        }
        free(m);
    }
    json_decref(tables);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_real_tables), cmocka_unit_test(test_merge_single_version),
        cmocka_unit_test(test_merge_again),       cmocka_unit_test(test_merge_refusals),
        cmocka_unit_test(test_merge_rules),       cmocka_unit_test(test_conv_real_roundtrip),
        cmocka_unit_test(test_conv_every_table),  cmocka_unit_test(test_conv_framing),
        cmocka_unit_test(test_conv_array_blocks), cmocka_unit_test(test_conv_refusals),
        cmocka_unit_test(test_block_span),        cmocka_unit_test(test_conv_corrupt),
        cmocka_unit_test(test_conv_cache),        cmocka_unit_test(test_recursive_type),
        cmocka_unit_test(test_conv_identity),     cmocka_unit_test(test_whole_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
