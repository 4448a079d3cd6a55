/* layout.c - a partition's layout as its schema versions change (layout.h). */
#include "battlefs/layout.h"

#include <errno.h>
#include <inttypes.h>
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
