/* layout.h - a partition's layout as its schema versions change.
 *
 * A partition holds uploads of one or more writer schemas (versions); its
 * dataset files are in the merged schema of all of them (evolve.h). This
 * module computes the layout a new version makes (the merged schema, its
 * sync marker and header).
 */
#ifndef BATTLEFS_LAYOUT_H
#define BATTLEFS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/catalog.h"
#include "battlefs/codec.h"
#include "battlefs/err.h"

/* The layout a writer schema makes when it joins a partition's versions. */
struct bfs_layout {
    struct bfs_merged m; /* for bfs_upload.merged and bfs_catalog_partition_add_version */
    char *json;
    size_t len;
    char *canonical;
    size_t canonical_len;
    struct bfs_buf header;
};

/* The layout of the partition whose versions are vers (read at vers->vgen)
 * plus the writer schema wjson (bfs_schema_merge), for codec codec.
 * 0, -EINVAL (err names the field), -ENOMEM. Free with bfs_layout_free. */
int bfs_layout_merge(const struct bfs_versions *vers, const char *wjson, size_t wlen,
                     enum bfs_codec codec, struct bfs_layout *out, struct bfs_err *err);
void bfs_layout_free(struct bfs_layout *l);

/* The fingerprint (16 hex digits) of schema text json. 0, -EINVAL, -ENOMEM. */
int bfs_layout_fingerprint(const char *json, size_t len, char fp[17]);

#endif
