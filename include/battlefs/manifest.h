/* manifest.h - the manifest of a roll: what it added to the store, as an
 * immutable Avro object container file any Avro reader can read.
 *
 * A manifest is one roll of one node: a Roll entry first, then each archive
 * the roll put (an Archive entry) followed by that archive's index rows (one
 * Index entry per dataset). Together with the archives and the schemas it is
 * enough to rebuild every archived_files and block_indexes row of the roll
 * exactly (docs/format.md, "Manifests"). Writing and reading stream: memory
 * does not grow with the number of entries.
 *
 * The bytes are a pure function of the entries (the sync marker is derived
 * from the manifest schema, blocks are cut at fixed entry counts, deflate at a
 * fixed level), so a roll rebuilt after a crash writes an identical manifest
 * and a create-only put of it finds the same bytes.
 */
#ifndef BATTLEFS_MANIFEST_H
#define BATTLEFS_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/ocf.h"

/* The manifest's own schema (Avro JSON) and the version in its metadata. */
extern const char bfs_manifest_schema[];
#define BFS_MANIFEST_VERSION "1"

struct bfs_manifest_roll {
    const char *node;    /* the writer's -o node name */
    const char *roll_id; /* the roll's deterministic id */
    int64_t rows;        /* buffer rows (uploads) the roll took, >= 1 */
    int64_t bytes;       /* their bytes: the sum of the index rows' lengths */
    int64_t claimed_at;  /* unix seconds of the roll's claim */
};

struct bfs_manifest_archive {
    const char *key; /* store key, relative to the store root */
    const char *table;
    const char *period;
    uint64_t size;
    uint64_t header_length;
    uint8_t sha256[32];
    const char *schema_fingerprint; /* 16 hex digits: CRC-64-AVRO of the canonical form */
    enum bfs_codec codec;
};

struct bfs_manifest_index {
    const char *dataset;
    uint64_t start; /* byte offset of the dataset's first block in the archive */
    uint64_t length;
    uint64_t records;
    int64_t uploaded_at; /* unix seconds of the newest upload in the range */
};

struct bfs_manifest_writer;

/* Start a manifest at path (created, must not exist) with its Roll entry.
 * 0 or -errno. */
int bfs_manifest_create(const char *path, const struct bfs_manifest_roll *roll,
                        struct bfs_manifest_writer **out);
/* Add an archive; its index rows follow with bfs_manifest_add_index. 0,
 * -EINVAL (a field that cannot be stored: bad names, an index before any
 * archive, a range outside the archive), or -errno. */
int bfs_manifest_add_archive(struct bfs_manifest_writer *w, const struct bfs_manifest_archive *a);
int bfs_manifest_add_index(struct bfs_manifest_writer *w, const struct bfs_manifest_index *x);
/* Write the last block and close: 0 with the file's SHA-256 and size, or
 * -errno (the file is removed). The writer is freed either way. */
int bfs_manifest_finish(struct bfs_manifest_writer *w, uint8_t sha256[32], uint64_t *size);
/* Give up: close, remove the file, free. */
void bfs_manifest_abort(struct bfs_manifest_writer *w);

/* What a read calls for each entry, in file order. A non-zero return stops
 * the read and is returned. The pointers are valid during the call only. */
struct bfs_manifest_visitor {
    int (*roll)(void *ctx, const struct bfs_manifest_roll *r);
    int (*archive)(void *ctx, const struct bfs_manifest_archive *a);
    int (*index)(void *ctx, const struct bfs_manifest_index *x);
    void *ctx;
};

/* Read the manifest in the file fd (from its start), block by block, checking
 * everything (magic, schema, sync, counts, every field's bounds and names, a
 * Roll entry first and only there, index rows after an archive and inside
 * it). 0, the visitor's non-zero return, or -EINVAL with err saying where and
 * what, -ENOMEM, -EIO (err's code only). */
int bfs_manifest_read(int fd, const struct bfs_manifest_visitor *v, struct bfs_err *err);

#endif
