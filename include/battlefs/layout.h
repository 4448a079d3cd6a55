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

/* Merge vers (read at vers->vgen) with the writer schema wjson, for a
 * partition of codec codec (bfs_schema_merge: a function of the set of
 * versions; merging a set with its own merge gives that merge again, so an
 * archive written in a merged schema leaves the partition's layout as it
 * was). 0, -EINVAL (the schemas do not merge: err names the field),
 * -ENOMEM. Free with bfs_layout_free. */
int bfs_layout_merge(const struct bfs_versions *vers, const char *wjson, size_t wlen,
                     enum bfs_codec codec, struct bfs_layout *out, struct bfs_err *err);
void bfs_layout_free(struct bfs_layout *l);

/* The JSON attribute of an archive schema that is a merge: the sorted
 * fingerprints of the versions it merges. */
#define BFS_LAYOUT_SOURCES     "battlefs.versions"
#define BFS_LAYOUT_SOURCES_MAX 256

/* The schema of a roll's archive of a partition whose rows are in several
 * versions vs (vs->n >= 2): their merge, with BFS_LAYOUT_SOURCES naming them
 * (readers ignore the attribute; the canonical form and the fingerprint do
 * not see it), so that a replica adds the versions, not the merge, to the
 * partition. *json malloc'd. 0, -EINVAL (err), -ENOMEM. */
int bfs_layout_archive_schema(const struct bfs_versions *vs, char **json, size_t *len,
                              struct bfs_err *err);
/* The versions an archive schema names (BFS_LAYOUT_SOURCES): 0 with *n of
 * them in fps (at most BFS_LAYOUT_SOURCES_MAX), 0 with *n 0 when it names
 * none (a version itself), -EINVAL (not JSON, or a bad list). */
int bfs_layout_sources(const char *json, size_t len, char (*fps)[17], size_t *n);
/* The fingerprint (16 hex digits) of schema text json. 0, -EINVAL, -ENOMEM. */
int bfs_layout_fingerprint(const char *json, size_t len, char fp[17]);

#endif
