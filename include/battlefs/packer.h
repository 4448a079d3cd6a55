/* packer.h - compression off the close path.
 *
 * An upload to a deflate partition that does not arrive deflated is stored
 * at its close with its blocks framed as stored deflate blocks
 * (bfs_codec_frame: a valid deflate stream, a copy's cost) and packed = 0.
 * The packer compresses such rows afterwards with libdeflate at
 * -o deflate_level and replaces blob, length and flag in one transaction:
 * a crash at any point leaves each row whole in exactly one form. The
 * compressed blocks are exactly those the ingest used to write at close, so
 * archives are unchanged.
 *
 * Who packs: a background thread at SCHED_IDLE (it only runs when a core is
 * otherwise idle), a reader before it takes a view of a dataset (so no view
 * ever holds a row that could still change: see reader.c), and the roll,
 * before it builds, in parallel threads (bfs_packer_pack_range). */
#ifndef BATTLEFS_PACKER_H
#define BATTLEFS_PACKER_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/err.h"

struct bfs_catalog;
struct bfs_packer;
struct bfs_stats;
struct libdeflate_compressor;

/* Fault points of test builds (-o fault=pack:STEP). */
enum bfs_pack_step {
    BFS_PACK_MID,          /* "mid": a batch compressed, its transaction not begun */
    BFS_PACK_AFTER_COMMIT, /* "after-commit": the first batch committed */
};

struct bfs_packer_deps {
    struct bfs_catalog *cat;
    struct bfs_stats *stats; /* rows_packed (NULL: none) */
    int level;               /* deflate level, 1..9 */
    int hold;                /* tests (-o fault=pack:hold): the thread packs nothing */
    /* Called at each step by the background thread; a negative errno stops
     * the batch there as a crash would (nothing is undone). NULL: none. */
    int (*fault)(void *arg, enum bfs_pack_step step);
    void *fault_arg;
};

/* The row's blocks in[0..n) (count, size, deflate data, sync; no header)
 * with each block's data decompressed and compressed again by c, appended
 * to out. scratch: the caller's. 0, -EINVAL (err: a block is corrupt),
 * -ENOMEM. */
int bfs_packer_repack(struct libdeflate_compressor *c, const uint8_t *in, size_t n,
                      struct bfs_buf *out, struct bfs_buf *scratch, struct bfs_err *err);

/* Start the background thread. 0 or -errno. */
int bfs_packer_start(const struct bfs_packer_deps *deps, struct bfs_packer **out);
/* Stop and join it (NULL is fine). */
void bfs_packer_stop(struct bfs_packer *p);
/* Rows to pack were committed: wake the thread. */
void bfs_packer_kick(struct bfs_packer *p);
/* Pack rows ids[0..n) now, in the caller's thread (those packed already or
 * gone are skipped). 0 or -errno. */
int bfs_packer_pack_ids(struct bfs_packer *p, const int64_t *ids, size_t n);
/* Pack every row with first <= id <= last now, in `threads` threads (the
 * caller's and threads - 1 more). 0 or -errno. */
int bfs_packer_pack_range(struct bfs_packer *p, int64_t first, int64_t last, int threads);
/* Rows packed since start (by any of the above). */
uint64_t bfs_packer_rows(struct bfs_packer *p);

#endif
