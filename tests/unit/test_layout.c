/* test_layout.c - a partition's layout as versions join (layout.h): the
 * merged layout an upload makes; schema fingerprints. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "battlefs/evolve.h"
#include "battlefs/layout.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"

static const char *V1 = "{\"type\":\"record\",\"name\":\"T\",\"fields\":["
                        "{\"name\":\"id\",\"type\":\"int\"},"
                        "{\"name\":\"u\",\"type\":[\"null\",\"int\"]}]}";
static const char *V2 = "{\"type\":\"record\",\"name\":\"T\",\"fields\":["
                        "{\"name\":\"id\",\"type\":\"long\"},"
                        "{\"name\":\"x\",\"type\":[\"null\",\"string\"]}]}";
static const char *BAD = "{\"type\":\"record\",\"name\":\"T\",\"fields\":["
                         "{\"name\":\"id\",\"type\":\"string\"}]}";

static struct bfs_versions versions(const char *const *texts, size_t n)
{
    struct bfs_versions v = {.vgen = 7, .merged_id = 1, .n = n};
    v.v = calloc(n, sizeof *v.v);
    assert_non_null(v.v);
    for (size_t i = 0; i < n; i++) {
        v.v[i].id = (int64_t)i + 1;
        v.v[i].len = strlen(texts[i]);
        v.v[i].json = strdup(texts[i]);
    }
    return v;
}

static void fp_of(const char *json, char fp[17])
{
    assert_int_equal(bfs_layout_fingerprint(json, strlen(json), fp), 0);
}

static void test_merge_layout(void **state)
{
    (void)state;
    const char *one[] = {V1};
    struct bfs_versions vs = versions(one, 1);
    struct bfs_layout lay;
    struct bfs_err err = {0};
    assert_int_equal(bfs_layout_merge(&vs, V2, strlen(V2), BFS_CODEC_DEFLATE, &lay, &err), 0);
    assert_int_equal(lay.m.base_vgen, 7);
    /* the layout of the merged schema: its header, sync and fingerprint */
    char *canon;
    size_t clen;
    assert_int_equal(bfs_schema_canonical(lay.json, lay.len, &canon, &clen, NULL), 0);
    assert_int_equal(lay.m.fingerprint, bfs_schema_rabin(canon, clen));
    uint8_t sync[16];
    assert_int_equal(bfs_schema_sync(canon, clen, sync), 0);
    assert_memory_equal(lay.m.sync, sync, 16);
    struct bfs_ocf_header h;
    assert_int_equal(bfs_ocf_parse_header(lay.m.header, lay.m.header_len, &h, NULL), 0);
    assert_int_equal(h.codec, BFS_CODEC_DEFLATE);
    assert_memory_equal(h.sync, sync, 16);
    assert_string_equal(h.schema_json, lay.json);
    bfs_ocf_header_free(&h);
    assert_non_null(strstr(lay.json, "\"x\""));
    assert_non_null(strstr(lay.json, "\"u\""));
    free(canon);
    bfs_layout_free(&lay);
    /* does not merge: -EINVAL naming the field */
    assert_int_equal(bfs_layout_merge(&vs, BAD, strlen(BAD), BFS_CODEC_NULL, &lay, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "id"));
    bfs_versions_free(&vs);
}

/* The fingerprint of a text: of its canonical form (a doc changes nothing). */
static void test_fingerprint(void **state)
{
    (void)state;
    char f1[17], f2[17];
    fp_of(V1, f1);
    const char *doc = "{\"type\":\"record\",\"name\":\"T\",\"doc\":\"d\",\"fields\":["
                      "{\"name\":\"id\",\"type\":\"int\"},"
                      "{\"name\":\"u\",\"type\":[\"null\",\"int\"]}]}";
    fp_of(doc, f2);
    assert_string_equal(f1, f2);
    char *canon;
    size_t clen;
    assert_int_equal(bfs_schema_canonical(V1, strlen(V1), &canon, &clen, NULL), 0);
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)bfs_schema_rabin(canon, clen));
    assert_string_equal(f1, want);
    free(canon);
    assert_int_equal(bfs_layout_fingerprint("nope", 4, f1), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_layout),
        cmocka_unit_test(test_fingerprint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
