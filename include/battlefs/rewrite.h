/* rewrite.h - copy a partition's live segments into new archives in which
 * each dataset is one contiguous range (compaction and erasure: compact.c).
 *
 * The input is the partition's live index rows in the order of the dataset
 * files (for each dataset, in increasing byte order of dataset names, its
 * segments in file order), handed over one at a time by the caller's `next`
 * (streamed: memory does not grow with the number of rows). Each segment's
 * bytes are whole OCF blocks of its source archive, [start, start + length).
 *
 * Output: archives in target->work_dir, "<name>-<n>.avro" (n from 0), each
 * the target's layout header followed by whole datasets: the blocks of a
 * dataset's segments, in order, copied as they are (same bytes) when the
 * source archive's schema is the target's, else converted block by block to
 * the target schema (bfs_conv_block: the bytes a read of the dataset file
 * serves for them). So a dataset's range in the new archive is byte for byte
 * what the dataset file held after the header, and the file does not change.
 *
 * An archive is closed before it would exceed archive_max_bytes (a dataset
 * whose bytes do not fit an empty archive is split at segment boundaries
 * into several; an archive always holds at least one segment). When one is
 * closed, `archive` is called with its path, size and SHA-256, then `index`
 * once per dataset range in it, in order; the caller may put and remove the
 * file at once. Sources are read with ranged GETs of the store, sequentially
 * through a read-ahead window per source (at most BFS_RW_WINDOW bytes each,
 * fewer when there are many sources: total read-ahead memory stays under
 * BFS_RW_READAHEAD_MAX), so a partition of 1 GiB is read in large requests
 * with bounded memory.
 *
 * A dataset that does not fit what is left of the open archive starts a new
 * one. So its length must be known first: the segments of a source in
 * another schema are converted when the dataset's segments are gathered,
 * into a temporary file in work_dir (room needed: the converted bytes of the
 * largest such dataset, besides the open archive). Temporary files
 * ("<name>.segs.tmp", "<name>.index.tmp", "<name>.conv.tmp": the current
 * dataset's segments and the open archive's index rows past the first 1024,
 * converted bytes) are unlinked as soon as they are made; a stale one of
 * those names is removed. Blocks of sources in another schema are not checked
 * for their sync marker (the reader does not either); bfs_conv_block checks
 * that their records decode.
 */
#ifndef BATTLEFS_REWRITE_H
#define BATTLEFS_REWRITE_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "battlefs/codec.h"
#include "battlefs/err.h"

struct bfs_conv_cache;
struct bfs_store;

#define BFS_RW_WINDOW        (8u << 20)  /* read-ahead per source, at most */
#define BFS_RW_READAHEAD_MAX (32u << 20) /* read-ahead of all sources together */

/* A source archive. */
struct bfs_rw_source {
    const char *key; /* store key */
    uint64_t size;   /* object size */
    /* The schema its blocks are written in: the same id as the target's
     * means copy as they are; else convert from schema_json. */
    int64_t schema_id;
    const char *schema_json;
    size_t schema_len;
};

/* One live index row. */
struct bfs_rw_segment {
    const char *dataset; /* valid until the next call of next */
    size_t source;       /* index into the sources */
    uint64_t start;      /* byte offset in the source archive (past its header) */
    uint64_t length;     /* whole blocks */
    uint64_t records;
    int64_t uploaded_at;
};

/* A closed output archive. */
struct bfs_rw_archive {
    unsigned n;       /* its number: "<name>-<n>.avro" */
    const char *path; /* the local file, in work_dir */
    uint64_t size;
    uint64_t header_length;
    uint8_t sha256[32];
};

/* One dataset's range in the archive last passed to `archive`. */
struct bfs_rw_index {
    const char *dataset;
    uint64_t start, length, records;
    int64_t uploaded_at; /* the newest of its segments' */
};

struct bfs_rw_job {
    struct bfs_store *store;
    struct bfs_conv_cache *convs; /* compiled conversions; NULL: compile each when needed */
    const struct bfs_rw_source *sources;
    size_t n_sources;
    /* The target layout: the partition's merged schema. */
    const uint8_t *header; /* bfs_ocf_layout_header(schema_json, codec, sync) */
    size_t header_len;
    int64_t schema_id;
    const char *schema_json;
    size_t schema_len;
    enum bfs_codec codec;
    uint8_t sync[16];
    uint64_t archive_max_bytes;
    const char *work_dir;
    const char *name; /* local file names "<name>-<n>.avro" */
    /* The next segment: 1 (*out filled), 0 (no more), or -errno. */
    int (*next)(void *ctx, struct bfs_rw_segment *out);
    /* Each closed archive, then its index rows; a non-zero return stops the
     * rewrite and is returned (the files of this call are removed but for
     * archives already passed to `archive`: the caller owns those). */
    int (*archive)(void *ctx, const struct bfs_rw_archive *a);
    int (*index)(void *ctx, const struct bfs_rw_index *x);
    void *ctx;
    /* Non-NULL: checked between segments; when it reads non-zero the
     * rewrite stops with -ECANCELED (an unmount). */
    const atomic_int *stop;
};

/* What a rewrite did. */
struct bfs_rw_stats {
    uint64_t bytes_read; /* from the store */
    uint64_t gets;       /* ranged GETs (a failed one too) */
    uint64_t bytes_written;
    uint64_t archives;
    uint64_t datasets;  /* index rows written */
    uint64_t segments;  /* segments read */
    uint64_t converted; /* segments converted (another schema) */
};

/* Run the rewrite. 0 with *st (may be NULL), or -errno with err saying what
 * failed (a store error, -EINVAL: a segment outside its source, not whole
 * blocks, a block whose sync marker is not job->sync, a block that does not
 * convert, segments out of order or an invalid dataset name; -EEXIST: a
 * stale "<name>-<n>.avro", left as it is; -ENOSPC; -ECANCELED). A non-zero
 * return of a callback is returned as it is (err's code: that errno, or
 * -EIO for a positive one; a callback may set err itself, the same struct
 * passed here: its reason is then kept). *st is filled on failure too (what was done).
 * On failure every file it made that was not passed to `archive` is
 * removed. */
int bfs_rewrite(const struct bfs_rw_job *job, struct bfs_rw_stats *st, struct bfs_err *err);

#endif
