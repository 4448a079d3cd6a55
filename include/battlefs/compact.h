/* compact.h - period compaction and the physical side of erasure.
 *
 * A compaction rewrites every live archive of one partition (table, period)
 * that the log holds, from every node, into new archives in which each
 * dataset is one contiguous range (rewrite.h), and commits one log entry of
 * type "compact" whose manifest retires the old archives and indexes the
 * new ones where the old ones stood, so every dataset file keeps its bytes
 * (docs/design.md, "Compaction and erasure"). Retired objects are deleted
 * after gc_grace, or at once when they hold an erased dataset's bytes.
 *
 * One compactor per partition at a time: a lease object in the store
 * (_battlefs/compaction/<table>/<period>.lease, compare-and-swap). The log
 * decides anyway: a compaction whose retired archives are not exactly the
 * live ones when its entry is applied is void for every reader.
 */
#ifndef BATTLEFS_COMPACT_H
#define BATTLEFS_COMPACT_H

#include <stdatomic.h>
#include <stdint.h>

#include "battlefs/err.h"

struct bfs_cache;
struct bfs_catalog;
struct bfs_conv_cache;
struct bfs_errors;
struct bfs_ledger;
struct bfs_stats;
struct bfs_store;

/* The points of a compaction where the fault hook is called (test builds:
 * -o fault=compact:STEP). */
enum bfs_compact_step {
    BFS_COMPACT_AFTER_LEASE,    /* the lease is held, the compaction recorded locally */
    BFS_COMPACT_MID_BUILD,      /* the first new archive is put */
    BFS_COMPACT_AFTER_BUILD,    /* every new archive is put */
    BFS_COMPACT_AFTER_MANIFEST, /* the manifest is put, no log entry yet */
    BFS_COMPACT_AFTER_LOG,      /* the log entry is put, not applied here */
    BFS_COMPACT_AFTER_COMMIT,   /* applied here; retired objects not deleted yet */
};
#define BFS_COMPACT_STEPS 6

const char *bfs_compact_step_name(enum bfs_compact_step step);
int bfs_compact_step_parse(const char *name, enum bfs_compact_step *out);

/* 0 goes on; a negative errno stops the compaction right there, as a crash
 * would (nothing undone); the hook may also not return (_exit). */
typedef int (*bfs_compact_fault_fn)(void *arg, enum bfs_compact_step step, const char *id);

struct bfs_compact_deps {
    struct bfs_catalog *cat;
    struct bfs_store *store;
    struct bfs_ledger *ledger;
    struct bfs_cache *cache;      /* entries of deleted objects go; NULL: none */
    struct bfs_conv_cache *convs; /* NULL: conversions compiled when needed */
    struct bfs_stats *stats;      /* compactions, store_deletes, erasures_pending */
    struct bfs_errors *errors;    /* a ".battlefs/compact" line per failure */
    const char *node;
    const char *work_dir; /* its own directory: every file in it is a compaction's */
    uint64_t archive_max_bytes;
    uint64_t compact_after; /* seconds without a roll into a partition before it compacts */
    uint64_t gc_grace;      /* seconds retired objects stay readable */
    uint64_t erase_within;  /* seconds by which an erased dataset's bytes are gone */
    uint64_t lease_ttl_s;   /* the compaction lease's time (0: 60) */
    bfs_compact_fault_fn fault;
    void *fault_arg;
    /* Non-NULL: a rewrite gives up (-ECANCELED) when it reads non-zero
     * (the compactor's own, set at its stop). */
    const atomic_int *stop;
};

/* Compact (table, period) now, whatever its age, in the calling thread: 0
 * (also when there is nothing to rewrite), -EBUSY (another node holds its
 * lease), -ECANCELED (another compaction came first: void), or -errno; err
 * says why. */
int bfs_compact_partition(const struct bfs_compact_deps *d, const char *table, const char *period,
                          struct bfs_err *err);
/* Delete the retired objects that are due (urgent ones at once), then mark
 * erasures complete. 0 or -errno (the first failure; the others go on). */
int bfs_compact_gc(const struct bfs_compact_deps *d);
/* The audit line of an erasure found physically complete (a settle
 * callback, bfs_catalog_erasures_settle): the log and errors (a struct
 * bfs_errors *, may be NULL). */
struct bfs_erasure;
int bfs_compact_report_erased(void *errors, const struct bfs_erasure *e);

/* At mount, after the log is read: a compaction a crash cut short before its
 * log entry leaves objects nobody references: delete them. 0 or -errno. */
int bfs_compact_recover(const struct bfs_compact_deps *d);

/* The background thread: every few seconds, the partitions due (no roll for
 * compact_after; erased bytes older than erase_within / 2) and the
 * garbage. */
struct bfs_compactor;
int bfs_compactor_start(const struct bfs_compact_deps *d, struct bfs_compactor **out);
/* Look now (after an erasure). */
void bfs_compactor_kick(struct bfs_compactor *c);
/* Compact (table, period) now, serialised with the thread's own work. */
int bfs_compactor_compact_now(struct bfs_compactor *c, const char *table, const char *period,
                              struct bfs_err *err);
void bfs_compactor_stop(struct bfs_compactor *c);

#endif
