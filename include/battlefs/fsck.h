/* fsck.h - check a store against its index (battlefs-store fsck, ls).
 *
 * The index is a catalog: either a state directory's catalog.db, or one
 * rebuilt from the store alone into a scratch directory (bfs_fsck_load_store:
 * the ledger's own refresh, read-only, so the log, its checkpoints and the
 * manifests are read and checked by the code every mount uses). Then
 * bfs_fsck_check walks the index (bfs_catalog_snapshot: every roll committed
 * in the log, in log order) and checks, per archive:
 *   - it exists in the store with the recorded size and SHA-256;
 *   - its layout header parses and is the recorded schema and codec;
 *   - every index row lies after the header and within the archive, no two
 *     rows overlap, no dataset has two rows in one archive;
 *   - every row's bytes are OCF blocks (count, size, the layout's sync
 *     marker) whose record counts sum to the row's record_count; with deep,
 *     every record also decodes against the archive's schema (the ingest's
 *     validator, bfs_ocf_process).
 * Each problem is one line handed to the caller, e.g.
 *   archive battle/2025-12-18/a-20251218T130000Z-0badc0de-1-0.avro: size 1000, manifest says 1001
 * Rolls committed before the store's log existed are only in the catalog
 * that wrote them and are not checked.
 */
#ifndef BATTLEFS_FSCK_H
#define BATTLEFS_FSCK_H

#include <stdint.h>

#include "battlefs/err.h"

struct bfs_catalog;
struct bfs_store;

struct bfs_fsck_opts {
    int deep;           /* decode every record against the archive's schema */
    int progress;       /* a progress line on stderr (a terminal) every second */
    const char *source; /* what recorded the index, for messages: "manifest" or "catalog" */
};

struct bfs_fsck_counts {
    uint64_t archives;
    uint64_t index_rows;
    uint64_t bytes; /* the archives' recorded sizes */
    uint64_t problems;
};

/* Called with each problem (one line, no newline). */
typedef void (*bfs_fsck_problem_fn)(void *arg, const char *line);

/* Rebuild the index of store st from the store alone, into a new catalog in
 * dir (an empty scratch directory): *cat is set whenever the catalog could be
 * opened (close it with bfs_catalog_close), also when reading the log failed
 * part way (then it holds the entries before the failure). 0, or -errno with
 * err (what stopped the read of the log). */
int bfs_fsck_load_store(struct bfs_store *st, const char *dir, struct bfs_catalog **cat,
                        struct bfs_err *err);

/* Check the index in cat against st (see above). 0 with *counts (problems
 * found are counted there and reported through fn), or -errno with err when
 * the check itself could not go on (the catalog could not be read). */
int bfs_fsck_check(struct bfs_catalog *cat, struct bfs_store *st, const struct bfs_fsck_opts *o,
                   bfs_fsck_problem_fn fn, void *arg, struct bfs_fsck_counts *counts,
                   struct bfs_err *err);

/* One partition of the index, for battlefs-store ls. */
struct bfs_fsck_partition {
    const char *table;
    const char *period;
    uint64_t datasets; /* distinct datasets with an index row */
    uint64_t archives;
    uint64_t bytes; /* the archives' sizes */
    uint64_t records;
};
/* Call fn for each partition of cat's index whose table is table (NULL:
 * every table) and period is period (NULL: every period), in increasing
 * order of table, then period. 0, fn's non-zero return, or -errno. */
int bfs_fsck_partitions(struct bfs_catalog *cat, const char *table, const char *period,
                        int (*fn)(void *arg, const struct bfs_fsck_partition *p), void *arg);

#endif
