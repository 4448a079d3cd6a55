/* test_schema.c - Parsing Canonical Form, Rabin fingerprint, layout sync. */
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

#include "battlefs/buf.h"
#include "battlefs/schema.h"
#include "battlefs/sha256.h"

/* Canonical form of json, asserting success. Caller frees. */
static char *canon(const char *json)
{
    char *out = NULL;
    size_t len = 0;
    struct bfs_err err = {0};
    int rc = bfs_schema_canonical(json, strlen(json), &out, &len, &err);
    if (rc != 0)
        fail_msg("canonical form of %s failed: %d %s", json, rc, err.msg);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

static void expect_once(const char *json, const char *want, int fixed_point)
{
    char *got = canon(json);
    if (strcmp(got, want) != 0)
        fail_msg("canonical form of\n  %s\nis\n  %s\nexpected\n  %s", json, got, want);
    if (fixed_point) {
        char *again = canon(got);
        assert_string_equal(again, got);
        free(again);
    }
    free(got);
}

/* The canonical form is json's, and a fixed point. */
static void expect(const char *json, const char *want)
{
    expect_once(json, want, 1);
}

/* Rejected with -EINVAL and a message containing `needle`. */
static void reject(const char *json, const char *needle)
{
    char *out = (char *)"sentinel";
    size_t len = 7;
    struct bfs_err err = {0};
    int rc = bfs_schema_canonical(json, strlen(json), &out, &len, &err);
    if (rc != -EINVAL)
        fail_msg("%s: expected -EINVAL, got %d", json, rc);
    assert_null(out);
    if (!strstr(err.msg, needle))
        fail_msg("%s: message '%s' lacks '%s'", json, err.msg, needle);
}

static void test_primitives(void **state)
{
    (void)state;
    const char *prims[] = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"};
    for (size_t i = 0; i < 8; i++) {
        char a[64], b[96], want[64];
        snprintf(a, sizeof a, "\"%s\"", prims[i]);
        snprintf(b, sizeof b, "{\"type\" : \"%s\", \"logicalType\": \"x\", \"doc\": \"d\"}",
                 prims[i]);
        snprintf(want, sizeof want, "\"%s\"", prims[i]);
        expect(a, want);
        expect(b, want);
    }
    expect("{\"type\":\"string\",\"logicalType\":\"uuid\"}", "\"string\"");
    expect("{\"type\":\"int\",\"logicalType\":\"date\"}", "\"int\"");
    expect("[{\"type\":\"null\"},{\"type\":\"long\"}]", "[\"null\",\"long\"]");
}

static void test_fullnames(void **state)
{
    (void)state;
    /* namespace attribute */
    expect("{\"type\":\"fixed\",\"name\":\"f\",\"namespace\":\"a.b\",\"size\":4}",
           "{\"name\":\"a.b.f\",\"type\":\"fixed\",\"size\":4}");
    /* a dotted name wins over the namespace attribute */
    expect("{\"type\":\"fixed\",\"name\":\"x.y.f\",\"namespace\":\"a.b\",\"size\":4}",
           "{\"name\":\"x.y.f\",\"type\":\"fixed\",\"size\":4}");
    /* the empty namespace is the null namespace */
    expect("{\"type\":\"enum\",\"name\":\"E\",\"namespace\":\"\",\"symbols\":[\"A\"]}",
           "{\"name\":\"E\",\"type\":\"enum\",\"symbols\":[\"A\"]}");
}

static void test_nested_namespaces(void **state)
{
    (void)state;
    const char *in =
        "{\"type\":\"record\",\"name\":\"Outer\",\"namespace\":\"com.ex\",\"fields\":["
        /* inherits com.ex */
        "{\"name\":\"a\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"X\",\"Y\"]}},"
        /* its own namespace, and its children inherit that one */
        "{\"name\":\"b\",\"type\":{\"type\":\"record\",\"name\":\"In\",\"namespace\":\"org.o\","
        "\"fields\":[{\"name\":\"c\",\"type\":{\"type\":\"fixed\",\"name\":\"F\",\"size\":2}}]}},"
        /* a dotted name sets the namespace of what is inside it */
        "{\"name\":\"d\",\"type\":{\"type\":\"record\",\"name\":\"p.q.R\",\"fields\":["
        "{\"name\":\"e\",\"type\":{\"type\":\"fixed\",\"name\":\"G\",\"size\":1}}]}},"
        /* null namespace inside a namespaced record */
        "{\"name\":\"f\",\"type\":{\"type\":\"fixed\",\"name\":\"H\",\"namespace\":\"\","
        "\"size\":3}},"
        /* references: short name resolved against com.ex, full names as they are */
        "{\"name\":\"g\",\"type\":\"E\"},"
        "{\"name\":\"h\",\"type\":\"org.o.F\"},"
        "{\"name\":\"i\",\"type\":\"com.ex.E\"},"
        /* a short name not in com.ex falls back to the null namespace */
        "{\"name\":\"j\",\"type\":\"H\"},"
        /* {\"type\": name} form */
        "{\"name\":\"k\",\"type\":{\"type\":\"p.q.G\"}}"
        "]}";
    const char *want =
        "{\"name\":\"com.ex.Outer\",\"type\":\"record\",\"fields\":["
        "{\"name\":\"a\",\"type\":{\"name\":\"com.ex.E\",\"type\":\"enum\",\"symbols\":[\"X\","
        "\"Y\"]}},"
        "{\"name\":\"b\",\"type\":{\"name\":\"org.o.In\",\"type\":\"record\",\"fields\":["
        "{\"name\":\"c\",\"type\":{\"name\":\"org.o.F\",\"type\":\"fixed\",\"size\":2}}]}},"
        "{\"name\":\"d\",\"type\":{\"name\":\"p.q.R\",\"type\":\"record\",\"fields\":["
        "{\"name\":\"e\",\"type\":{\"name\":\"p.q.G\",\"type\":\"fixed\",\"size\":1}}]}},"
        "{\"name\":\"f\",\"type\":{\"name\":\"H\",\"type\":\"fixed\",\"size\":3}},"
        "{\"name\":\"g\",\"type\":\"com.ex.E\"},"
        "{\"name\":\"h\",\"type\":\"org.o.F\"},"
        "{\"name\":\"i\",\"type\":\"com.ex.E\"},"
        "{\"name\":\"j\",\"type\":\"H\"},"
        "{\"name\":\"k\",\"type\":\"p.q.G\"}"
        "]}";
    /* Not a fixed point: the specification drops "namespace", so H (null namespace,
     * inside com.ex.Outer) reads back as com.ex.H. That is the canonical form as
     * specified (and as the Java implementation writes it). */
    expect_once(in, want, 0);
}

static void test_strip(void **state)
{
    (void)state;
    expect("{\"type\":\"record\",\"name\":\"R\",\"doc\":\"a record\",\"aliases\":[\"Q\"],"
           "\"custom\":{\"x\":1},\"fields\":[{\"name\":\"a\",\"type\":\"int\",\"default\":3,"
           "\"doc\":\"field\",\"order\":\"descending\",\"aliases\":[\"z\"]}]}",
           "{\"name\":\"R\",\"type\":\"record\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}");
    expect("{\"type\":\"enum\",\"name\":\"E\",\"doc\":\"d\",\"default\":\"A\",\"symbols\":[\"A\"]}",
           "{\"name\":\"E\",\"type\":\"enum\",\"symbols\":[\"A\"]}");
    expect("{\"type\":\"fixed\",\"name\":\"D\",\"size\":16,\"logicalType\":\"decimal\","
           "\"precision\":4}",
           "{\"name\":\"D\",\"type\":\"fixed\",\"size\":16}");
    expect("{\"type\":\"array\",\"items\":\"int\",\"default\":[]}",
           "{\"type\":\"array\",\"items\":\"int\"}");
}

static void test_order(void **state)
{
    (void)state;
    expect("{\"size\":8,\"type\":\"fixed\",\"name\":\"F\"}",
           "{\"name\":\"F\",\"type\":\"fixed\",\"size\":8}");
    expect("{\"fields\":[{\"type\":\"long\",\"name\":\"x\"}],\"type\":\"record\",\"name\":\"R\"}",
           "{\"name\":\"R\",\"type\":\"record\",\"fields\":[{\"name\":\"x\",\"type\":\"long\"}]}");
    expect("{\"symbols\":[\"B\",\"A\"],\"name\":\"E\",\"type\":\"enum\"}",
           "{\"name\":\"E\",\"type\":\"enum\",\"symbols\":[\"B\",\"A\"]}");
    expect("{\"values\":\"int\",\"type\":\"map\"}", "{\"type\":\"map\",\"values\":\"int\"}");
    expect("{\"items\":\"int\",\"type\":\"array\"}", "{\"type\":\"array\",\"items\":\"int\"}");
}

static void test_strings(void **state)
{
    (void)state;
    /* \u escapes become the characters they stand for */
    expect("{\"type\":\"\\u0066ixed\",\"name\":\"\\u0041b\",\"size\":1}",
           "{\"name\":\"Ab\",\"type\":\"fixed\",\"size\":1}");
    expect("\"\\u0069nt\"", "\"int\"");
    expect("{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"\\u0058\"]}",
           "{\"name\":\"E\",\"type\":\"enum\",\"symbols\":[\"X\"]}");
}

static void test_integers(void **state)
{
    (void)state;
    expect("{\"type\":\"fixed\",\"name\":\"F\",\"size\":\"016\"}",
           "{\"name\":\"F\",\"type\":\"fixed\",\"size\":16}");
    expect("{\"type\":\"fixed\",\"name\":\"F\",\"size\":0}",
           "{\"name\":\"F\",\"type\":\"fixed\",\"size\":0}");
    reject("{\"type\":\"fixed\",\"name\":\"F\",\"size\":-1}", "size");
    reject("{\"type\":\"fixed\",\"name\":\"F\",\"size\":1.5}", "size");
    reject("{\"type\":\"fixed\",\"name\":\"F\",\"size\":\"1x\"}", "size");
    reject("{\"type\":\"fixed\",\"name\":\"F\",\"size\":\"99999999999\"}", "size");
    reject("{\"type\":\"fixed\",\"name\":\"F\"}", "size");
}

static void test_whitespace(void **state)
{
    (void)state;
    expect(" \n\t{ \"type\" :\r\n \"map\" ,\n \"values\" : [ \"null\" , \"string\" ] }\n ",
           "{\"type\":\"map\",\"values\":[\"null\",\"string\"]}");
}

static void test_complex(void **state)
{
    (void)state;
    /* arrays of arrays, maps of arrays, unions of complex types */
    expect("{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"array\","
           "\"items\":\"double\"}}}",
           "{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"array\","
           "\"items\":\"double\"}}}");
    expect("{\"type\":\"map\",\"values\":{\"type\":\"array\",\"items\":[\"null\",{\"type\":"
           "\"map\",\"values\":\"bytes\"}]}}",
           "{\"type\":\"map\",\"values\":{\"type\":\"array\",\"items\":[\"null\",{\"type\":"
           "\"map\",\"values\":\"bytes\"}]}}");
    expect("[\"null\",{\"type\":\"array\",\"items\":\"int\"},{\"type\":\"enum\",\"name\":\"E\","
           "\"symbols\":[\"A\",\"B\"]},{\"type\":\"map\",\"values\":\"E\"}]",
           "[\"null\",{\"type\":\"array\",\"items\":\"int\"},{\"name\":\"E\",\"type\":\"enum\","
           "\"symbols\":[\"A\",\"B\"]},{\"type\":\"map\",\"values\":\"E\"}]");
}

static void test_named_references(void **state)
{
    (void)state;
    /* A named type is written in full once, then by its fullname; recursion works. */
    expect("{\"type\":\"record\",\"name\":\"Node\",\"namespace\":\"n\",\"fields\":["
           "{\"name\":\"v\",\"type\":{\"type\":\"fixed\",\"name\":\"Id\",\"size\":4}},"
           "{\"name\":\"w\",\"type\":\"Id\"},"
           "{\"name\":\"kids\",\"type\":{\"type\":\"array\",\"items\":\"Node\"}},"
           "{\"name\":\"next\",\"type\":[\"null\",\"n.Node\"]}]}",
           "{\"name\":\"n.Node\",\"type\":\"record\",\"fields\":["
           "{\"name\":\"v\",\"type\":{\"name\":\"n.Id\",\"type\":\"fixed\",\"size\":4}},"
           "{\"name\":\"w\",\"type\":\"n.Id\"},"
           "{\"name\":\"kids\",\"type\":{\"type\":\"array\",\"items\":\"n.Node\"}},"
           "{\"name\":\"next\",\"type\":[\"null\",\"n.Node\"]}]}");
}

static void test_rejections(void **state)
{
    (void)state;
    reject("", "not JSON");
    reject("{\"type\":", "not JSON");
    reject("\"Unknown\"", "unknown type 'Unknown'");
    reject("{\"type\":\"nosuch\"}", "unknown type 'nosuch'");
    reject("42", "must be");
    reject("[]", "union without branches");
    reject("{}", "\"type\"");
    reject("{\"type\":{\"type\":\"int\"}}", "\"type\"");
    reject("{\"type\":\"record\",\"fields\":[]}", "name");
    reject("{\"type\":\"record\",\"name\":\"R\"}", "fields");
    reject("{\"type\":\"record\",\"name\":\"1R\",\"fields\":[]}", "bad name");
    reject("{\"type\":\"record\",\"name\":\"a..R\",\"fields\":[]}", "bad name");
    reject("{\"type\":\"record\",\"name\":\"R\",\"namespace\":\"a-b\",\"fields\":[]}",
           "bad namespace");
    reject("{\"type\":\"record\",\"name\":\"int\",\"fields\":[]}", "primitive");
    reject("{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\"}]}", "no \"type\"");
    reject("{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"type\":\"int\"}]}", "name");
    reject("{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
           "{\"name\":\"a\",\"type\":\"int\"}]}",
           "field 'a' appears twice");
    reject("[{\"type\":\"fixed\",\"name\":\"F\",\"size\":1},{\"type\":\"fixed\",\"name\":\"F\","
           "\"size\":1}]",
           "type 'F' is defined twice");
    reject("{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[]}", "symbols");
    reject("{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"A\"]}", "appears twice");
    reject("{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"a b\"]}", "symbol 1");
    reject("{\"type\":\"array\"}", "items");
    /* unions: no union directly inside, no two branches of one type */
    reject("[\"int\",[\"null\"]]", "a union directly inside a union");
    reject("[\"int\",\"long\",{\"type\":\"int\"}]", "two branches of type 'int'");
    reject("[{\"type\":\"array\",\"items\":\"int\"},{\"type\":\"array\",\"items\":\"long\"}]",
           "two branches of type 'array'");
    reject("[{\"type\":\"map\",\"values\":\"int\"},\"null\",{\"type\":\"map\",\"values\":\"int\"}]",
           "two branches of type 'map'");
    reject("[{\"type\":\"fixed\",\"name\":\"F\",\"size\":1},\"F\"]", "two branches of type 'F'");
    expect("[{\"type\":\"fixed\",\"name\":\"F\",\"size\":1},{\"type\":\"fixed\",\"name\":\"G\","
           "\"size\":1},{\"type\":\"array\",\"items\":[\"F\",\"G\"]},{\"type\":\"map\",\"values\":"
           "\"F\"},\"int\",\"long\"]",
           "[{\"name\":\"F\",\"type\":\"fixed\",\"size\":1},{\"name\":\"G\",\"type\":\"fixed\","
           "\"size\":1},{\"type\":\"array\",\"items\":[\"F\",\"G\"]},{\"type\":\"map\",\"values\":"
           "\"F\"},\"int\",\"long\"]");
    reject("{\"type\":\"map\"}", "values");
    reject("{\"type\":\"error\",\"name\":\"X\",\"fields\":[]}", "error");
    /* a reference in another namespace is not found by its short name */
    reject("{\"type\":\"record\",\"name\":\"a.R\",\"fields\":[{\"name\":\"x\",\"type\":"
           "{\"type\":\"fixed\",\"name\":\"b.F\",\"size\":1}},{\"name\":\"y\",\"type\":\"F\"}]}",
           "unknown type 'F'");
    /* duplicate JSON keys are ambiguous */
    reject("{\"type\":\"int\",\"type\":\"long\"}", "not JSON");
    /* an embedded NUL */
    char nul[] = "\"int\"\0junk";
    char *out;
    size_t len;
    struct bfs_err err = {0};
    assert_int_equal(bfs_schema_canonical(nul, sizeof nul - 1, &out, &len, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "NUL"));
    /* a NULL message buffer is allowed */
    assert_int_equal(bfs_schema_canonical("[", 1, &out, &len, NULL), -EINVAL);
}

static void test_depth_limit(void **state)
{
    (void)state;
    struct {
        char *s;
        size_t n;
    } b = {NULL, 0};
    FILE *f = open_memstream(&b.s, &b.n);
    assert_non_null(f);
    for (int i = 0; i < 300; i++)
        fputs("{\"type\":\"array\",\"items\":", f);
    fputs("\"int\"", f);
    for (int i = 0; i < 300; i++)
        fputs("}", f);
    fclose(f);
    reject(b.s, "nested");
    free(b.s);
}

static void test_rabin(void **state)
{
    (void)state;
    /* The empty input gives EMPTY; the rest are from the Avro test suite
     * (share/test/data/schema-tests.txt) and were recomputed independently. */
    assert_true(bfs_schema_rabin("", 0) == UINT64_C(0xc15d213aa4d7a795));
    struct {
        const char *canon;
        int64_t fp;
    } v[] = {
        {"\"int\"", INT64_C(8247732601305521295)},
        {"\"null\"", INT64_C(7195948357588979594)},
        {"\"boolean\"", INT64_C(-6970731678124411036)},
        {"\"long\"", INT64_C(-3434872931120570953)},
        {"\"string\"", INT64_C(-8142146995180207161)},
        {"\"bytes\"", INT64_C(5746618253357095269)},
        {"\"float\"", INT64_C(5583340709985441680)},
        {"\"double\"", INT64_C(-8181574048448539266)},
        {"{\"type\":\"array\",\"items\":\"int\"}", INT64_C(5920968314789803198)},
        {"{\"type\":\"map\",\"values\":\"string\"}", INT64_C(-8732877298790414990)},
        {"{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", INT64_C(1756455273707447556)},
        {"{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A1\"]}",
         INT64_C(-6342190197741309591)},
        {"{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}", INT64_C(-4824392279771201922)},
        {"[\"int\"]", INT64_C(-5232228896498058493)},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint64_t got = bfs_schema_rabin(v[i].canon, strlen(v[i].canon));
        if (got != (uint64_t)v[i].fp)
            fail_msg("rabin(%s) = %016llx", v[i].canon, (unsigned long long)got);
    }
    assert_true(bfs_schema_rabin("\"int\"", 5) == UINT64_C(0x7275d51a3f395c8f));
    /* via the canonical form: {"type":"int"} fingerprints like "int" */
    char *c = canon("{\"type\":\"int\",\"doc\":\"x\"}");
    assert_true(bfs_schema_rabin(c, strlen(c)) == UINT64_C(0x7275d51a3f395c8f));
    free(c);
}

static void test_sync(void **state)
{
    (void)state;
    const char *c = "\"int\"";
    uint8_t sync[16], d[32];
    assert_int_equal(bfs_schema_sync(c, strlen(c), sync), 0);
    assert_int_equal(bfs_sha256(c, strlen(c), d), 0);
    assert_memory_equal(sync, d, 16);
    /* Differently written but equal schemas share a sync marker. */
    char *a = canon("{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"x\","
                    "\"type\":\"int\"}]}");
    char *b = canon(" {\"fields\":[{\"type\":{\"type\":\"int\"},\"name\":\"x\",\"doc\":\"\"}],"
                    "\"name\":\"R\",\"type\":\"record\",\"namespace\":\"\"}");
    uint8_t sa[16], sb[16];
    assert_int_equal(bfs_schema_sync(a, strlen(a), sa), 0);
    assert_int_equal(bfs_schema_sync(b, strlen(b), sb), 0);
    assert_memory_equal(sa, sb, 16);
    free(a);
    free(b);
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0;
    *n = 0;
    for (;;) {
        if (*n + 4096 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *grown = realloc(buf, cap);
            assert_non_null(grown);
            buf = grown;
        }
        size_t got = fread(buf + *n, 1, cap - *n - 1, f);
        *n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[*n] = '\0';
    return buf;
}

/* All FUSOU schemas: canonical form parses with avro-c, is a fixed point, and equals
 * the canonical form python3-avro computes (tests/data/ocf/canonical.txt, written by
 * tools/gen_ocf_fixtures.py; those schemas use no named type twice, where python3-avro
 * differs from the specification). */
static void test_fusou_schemas(void **state)
{
    (void)state;
    json_error_t err;
    json_t *root = json_load_file(BFS_TEST_DATA "/schema_v0_5_1.json", 0, &err);
    assert_non_null(root);
    json_t *schemas = json_object_get(root, "schemas");
    assert_true(json_is_array(schemas));
    assert_int_equal(json_array_size(schemas), 35);

    size_t exp_len;
    char *expected = slurp(BFS_TEST_DATA "/ocf/canonical.txt", &exp_len);
    char *line = expected;

    for (size_t i = 0; i < json_array_size(schemas); i++) {
        json_t *s = json_array_get(schemas, i);
        const char *table = json_string_value(json_object_get(s, "table_name"));
        const char *text = json_string_value(json_object_get(s, "schema"));
        assert_non_null(table);
        assert_non_null(text);
        char *c = canon(text);
        /* idempotent */
        char *c2 = canon(c);
        assert_string_equal(c, c2);
        free(c2);
        /* avro-c parses it, and as the same schema as the original */
        avro_schema_t sc = NULL, so = NULL;
        assert_int_equal(avro_schema_from_json_length(c, strlen(c), &sc), 0);
        assert_int_equal(avro_schema_from_json_length(text, strlen(text), &so), 0);
        assert_true(avro_schema_equal(sc, so));
        avro_schema_decref(sc);
        avro_schema_decref(so);
        /* independent computation */
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = '\0';
        assert_string_equal(line, table);
        if (strcmp(tab + 1, c) != 0)
            fail_msg("%s: ours\n  %s\npython3-avro\n  %s", table, c, tab + 1);
        line = nl + 1;
        free(c);
    }
    free(expected);
    json_decref(root);
}

/* Width costs linear time: 200,000 fields and 200,000 enum symbols (a
 * quadratic duplicate check took over 11 minutes for 300,000 fields; the
 * suite's timeout catches a regression), and duplicates are still found. */
static void test_wide_schemas(void **state)
{
    (void)state;
    const int n = 200000;
    struct bfs_buf j = {0};
    const char *head = "{\"type\":\"record\",\"name\":\"W\",\"fields\":[";
    assert_int_equal(bfs_buf_append(&j, head, strlen(head)), 0);
    char tmp[64];
    for (int i = 0; i < n; i++) {
        int k = snprintf(tmp, sizeof tmp, "%s{\"name\":\"f%d\",\"type\":\"int\"}", i ? "," : "", i);
        assert_int_equal(bfs_buf_append(&j, tmp, (size_t)k), 0);
    }
    const char *mid = ",{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[";
    assert_int_equal(bfs_buf_append(&j, mid, strlen(mid)), 0);
    for (int i = 0; i < n; i++) {
        int k = snprintf(tmp, sizeof tmp, "%s\"S%d\"", i ? "," : "", i);
        assert_int_equal(bfs_buf_append(&j, tmp, (size_t)k), 0);
    }
    assert_int_equal(bfs_buf_append(&j, "]}}]}", 5), 0);
    char *out = NULL;
    struct bfs_err err = {0};
    size_t out_len;
    int rc = bfs_schema_canonical((const char *)j.data, j.len, &out, &out_len, &err);
    if (rc != 0)
        fail_msg("%d: %s", rc, err.msg);
    assert_true(out_len > (size_t)n * 20);
    free(out);
    bfs_buf_free(&j);
    const char *dup =
        "{\"type\":\"record\",\"name\":\"D\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
        "{\"name\":\"b\",\"type\":\"int\"},{\"name\":\"a\",\"type\":\"long\"}]}";
    assert_int_equal(bfs_schema_canonical(dup, strlen(dup), &out, &out_len, &err), -EINVAL);
    assert_string_equal(err.msg, "record 'D': field 'a' appears twice");
    const char *dsym = "{\"type\":\"enum\",\"name\":\"F\",\"symbols\":[\"x\",\"y\",\"x\"]}";
    assert_int_equal(bfs_schema_canonical(dsym, strlen(dsym), &out, &out_len, &err), -EINVAL);
    assert_string_equal(err.msg, "enum 'F': symbol 'x' appears twice");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_primitives),
        cmocka_unit_test(test_fullnames),
        cmocka_unit_test(test_nested_namespaces),
        cmocka_unit_test(test_strip),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_complex),
        cmocka_unit_test(test_named_references),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_rabin),
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_fusou_schemas),
        cmocka_unit_test(test_wide_schemas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
