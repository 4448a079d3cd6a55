/* test_layout.c - a partition's layout as versions join (layout.h): the
 * merged layout an upload makes, and the schema of an archive of several
 * versions with the list of the versions it merges. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

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

static void test_archive_schema(void **state)
{
    (void)state;
    const char *two[] = {V2, V1};
    struct bfs_versions vs = versions(two, 2);
    char *json = NULL;
    size_t len;
    struct bfs_err err = {0};
    assert_int_equal(bfs_layout_archive_schema(&vs, &json, &len, &err), 0);
    /* the merge, plus the sorted list of the versions it merges */
    char f1[17], f2[17], fa[17];
    fp_of(V1, f1);
    fp_of(V2, f2);
    char(*fps)[17] = calloc(BFS_LAYOUT_SOURCES_MAX, sizeof *fps);
    size_t n;
    assert_int_equal(bfs_layout_sources(json, len, fps, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(fps[0], strcmp(f1, f2) < 0 ? f1 : f2);
    assert_string_equal(fps[1], strcmp(f1, f2) < 0 ? f2 : f1);
    /* the attribute changes neither the canonical form nor the fingerprint */
    const char *texts[] = {V1, V2};
    size_t lens[] = {strlen(V1), strlen(V2)};
    char *merged;
    size_t mlen;
    assert_int_equal(bfs_schema_merge(texts, lens, 2, &merged, &mlen, NULL), 0);
    char fm[17];
    fp_of(merged, fm);
    fp_of(json, fa);
    assert_string_equal(fa, fm);
    /* the same versions in another order: the same bytes */
    const char *rev[] = {V1, V2};
    struct bfs_versions vr = versions(rev, 2);
    char *json2;
    size_t len2;
    assert_int_equal(bfs_layout_archive_schema(&vr, &json2, &len2, &err), 0);
    assert_int_equal(len2, len);
    assert_memory_equal(json2, json, len);
    /* a version itself names none; bad lists are refused */
    assert_int_equal(bfs_layout_sources(V1, strlen(V1), fps, &n), 0);
    assert_int_equal(n, 0);
    const char *bad[] = {
        "{\"type\":\"record\",\"name\":\"T\",\"fields\":[],\"battlefs.versions\":\"x\"}",
        "{\"type\":\"record\",\"name\":\"T\",\"fields\":[],\"battlefs.versions\":[\"12\"]}",
        "{\"type\":\"record\",\"name\":\"T\",\"fields\":[],\"battlefs.versions\":[1]}",
        "{\"type\":\"record\",\"name\":\"T\",\"fields\":[],\"battlefs.versions\":"
        "[\"00000000000000zz\"]}",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(bfs_layout_sources(bad[i], strlen(bad[i]), fps, &n), -EINVAL);
    /* one version is not an archive merge */
    free(json2);
    struct bfs_versions v1 = versions(two, 1);
    assert_int_equal(bfs_layout_archive_schema(&v1, &json2, &len2, &err), -EINVAL);
    assert_null(json2);
    bfs_versions_free(&v1);
    free(merged);
    free(fps);
    free(json);
    bfs_versions_free(&vs);
    bfs_versions_free(&vr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_layout),
        cmocka_unit_test(test_archive_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
