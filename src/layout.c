/* layout.c - a partition's layout as its schema versions change (layout.h). */
#include "battlefs/layout.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "battlefs/evolve.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"

void bfs_layout_free(struct bfs_layout *l)
{
    if (!l)
        return;
    free(l->json);
    free(l->canonical);
    bfs_buf_free(&l->header);
    memset(l, 0, sizeof *l);
}

int bfs_layout_merge(const struct bfs_versions *vers, const char *wjson, size_t wlen,
                     enum bfs_codec codec, struct bfs_layout *out, struct bfs_err *err)
{
    memset(out, 0, sizeof *out);
    size_t n = vers->n + 1;
    const char **texts = malloc(n * sizeof *texts);
    size_t *lens = malloc(n * sizeof *lens);
    int rc = texts && lens ? 0 : -ENOMEM;
    if (rc == 0) {
        for (size_t i = 0; i < vers->n; i++) {
            texts[i] = vers->v[i].json;
            lens[i] = vers->v[i].len;
        }
        texts[vers->n] = wjson;
        lens[vers->n] = wlen;
        rc = bfs_schema_merge(texts, lens, n, &out->json, &out->len, err);
    }
    if (rc == 0)
        rc = bfs_schema_canonical(out->json, out->len, &out->canonical, &out->canonical_len, err);
    free(texts);
    free(lens);
    if (rc == 0) {
        out->m.base_vgen = vers->vgen;
        out->m.json = out->json;
        out->m.len = out->len;
        out->m.canonical = out->canonical;
        out->m.canonical_len = out->canonical_len;
        out->m.fingerprint = bfs_schema_rabin(out->canonical, out->canonical_len);
        rc = bfs_schema_sync(out->canonical, out->canonical_len, out->m.sync);
    }
    if (rc == 0)
        rc = bfs_ocf_layout_header(out->json, out->len, codec, out->m.sync, &out->header);
    if (rc == 0) {
        out->m.header = out->header.data;
        out->m.header_len = out->header.len;
    } else {
        if (rc != -EINVAL)
            bfs_err_set(err, rc, "merged layout: %s", strerror(-rc));
        bfs_layout_free(out);
    }
    return rc;
}

int bfs_layout_fingerprint(const char *json, size_t len, char fp[17])
{
    char *canon = NULL;
    size_t clen;
    int rc = bfs_schema_canonical(json, len, &canon, &clen, NULL);
    if (rc == 0)
        snprintf(fp, 17, "%016" PRIx64, bfs_schema_rabin(canon, clen));
    free(canon);
    return rc;
}

static int cmp_fp(const void *a, const void *b)
{
    return strcmp(a, b);
}

int bfs_layout_archive_schema(const struct bfs_versions *vs, char **json, size_t *len,
                              struct bfs_err *err)
{
    *json = NULL;
    if (vs->n < 2 || vs->n > BFS_LAYOUT_SOURCES_MAX)
        return bfs_err_set(err, -EINVAL, "%zu versions to merge", vs->n);
    char(*fps)[17] = calloc(vs->n, sizeof *fps);
    const char **texts = calloc(vs->n, sizeof *texts);
    size_t *lens = calloc(vs->n, sizeof *lens);
    char *merged = NULL;
    size_t mlen;
    json_t *root = NULL, *list = NULL;
    int rc = fps && texts && lens ? 0 : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < vs->n; i++) {
        texts[i] = vs->v[i].json;
        lens[i] = vs->v[i].len;
        rc = bfs_layout_fingerprint(vs->v[i].json, vs->v[i].len, fps[i]);
    }
    if (rc == 0)
        rc = bfs_schema_merge(texts, lens, vs->n, &merged, &mlen, err);
    if (rc == 0) {
        qsort(fps, vs->n, sizeof *fps, cmp_fp);
        root = json_loadb(merged, mlen, 0, NULL);
        list = json_array();
        rc = json_is_object(root) && list ? 0 : -ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < vs->n; i++)
        if ((i == 0 || strcmp(fps[i], fps[i - 1]) != 0) &&
            json_array_append_new(list, json_string(fps[i])) < 0)
            rc = -ENOMEM;
    if (rc == 0) {
        rc = json_object_set(root, BFS_LAYOUT_SOURCES, list) < 0 ? -ENOMEM : 0;
        *json = rc == 0 ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        if (rc == 0 && !*json)
            rc = -ENOMEM;
        if (rc == 0)
            *len = strlen(*json);
    }
    if (rc < 0 && rc != -EINVAL)
        bfs_err_set(err, rc, "archive schema: %s", strerror(-rc));
    json_decref(list);
    json_decref(root);
    free(merged);
    free(fps);
    free(texts);
    free(lens);
    return rc;
}

int bfs_layout_sources(const char *json, size_t len, char (*fps)[17], size_t *n)
{
    *n = 0;
    json_t *root = json_loadb(json, len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return -EINVAL;
    }
    json_t *list = json_object_get(root, BFS_LAYOUT_SOURCES);
    int rc = 0;
    if (list) {
        size_t i;
        json_t *v;
        if (!json_is_array(list) || json_array_size(list) > BFS_LAYOUT_SOURCES_MAX)
            rc = -EINVAL;
        json_array_foreach(list, i, v)
        {
            const char *s = json_string_value(v);
            if (rc < 0 || !s || strlen(s) != 16 || strspn(s, "0123456789abcdef") != 16) {
                rc = -EINVAL;
                break;
            }
            memcpy(fps[(*n)++], s, 17);
        }
    }
    json_decref(root);
    if (rc < 0)
        *n = 0;
    return rc;
}
