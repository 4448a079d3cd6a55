/* ledger.h - the store as the source of truth: the log of every node's
 * rolls, the lease that gives a node its name, and the refresh that brings
 * what is in the store into the local catalog (docs/design.md, "The bucket is
 * the source of truth"; docs/format.md, "The log").
 *
 * Objects, all under "_battlefs/" in the store:
 *   log/<seq>.json            the log: entry seq (20 digits, from 1) is put
 *                             create-only by a writer that has read entry
 *                             seq - 1, so the log has no gaps and one order
 *                             that every mount reads the same
 *   manifests/<node>/<roll>.avro   what a roll added (manifest.h), create-only
 *   schemas/<fingerprint>.avsc     each schema once, create-only
 *   nodes/<node>/lease        who holds the node name (compare-and-swap)
 *   checkpoints/<seq>-<sha256>.avro  the whole index up to log entry seq
 *                             (every BFS_LEDGER_CHECKPOINT_EVERY entries): a
 *                             new catalog starts from the newest one
 *
 * A roll is committed when its log entry exists; a mount's catalog holds
 * exactly the log prefix it has applied. Everything here is serialised by
 * the ledger's lock, which is held across store requests (the roll commit,
 * a refresh); uploads and reads never take it.
 */
#ifndef BATTLEFS_LEDGER_H
#define BATTLEFS_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/err.h"

struct bfs_cache;
struct bfs_catalog;
struct bfs_errors;
struct bfs_ledger;
struct bfs_stats;
struct bfs_store;

#define BFS_LEDGER_PREFIX    "_battlefs/"
#define BFS_LEDGER_LEASE_TTL 60 /* seconds, the default */
/* The writer whose roll takes a log position that is a multiple of this puts
 * a checkpoint (the whole index so far) under _battlefs/checkpoints/. */
#define BFS_LEDGER_CHECKPOINT_EVERY 20

struct bfs_ledger_deps {
    struct bfs_catalog *cat;
    struct bfs_store *store;
    struct bfs_stats *stats;   /* manifests_loaded, refreshes, log_position, fenced, errors */
    struct bfs_errors *errors; /* a ".battlefs/refresh" line per failed refresh */
    const char *node;          /* -o node */
    int read_only;             /* -o ro: no lease, nothing written to the store */
    uint64_t refresh_s;        /* the refresh thread's period; 0: no thread */
    uint64_t lease_ttl_s;      /* 0: BFS_LEDGER_LEASE_TTL */
    const char *work_dir;      /* log entries being put */
    struct bfs_cache *cache;   /* entries of retired or erased archives are dropped; NULL: none */
};

/* Open the ledger (no store request yet): 0, -EINVAL (bad node), -errno. */
int bfs_ledger_open(const struct bfs_ledger_deps *d, struct bfs_ledger **out);
/* Stop the threads and, for a writer holding its lease, release it (a clean
 * unmount frees the node name at once). */
void bfs_ledger_close(struct bfs_ledger *l);

/* Writers: take the node's lease. -EBUSY when another live mount holds it
 * (err says who and until when), -ESTALE when the lease changed under us
 * too often, or a store error. A lease taken over from a holder that did
 * not release it (crashed, or cut off) is fenced in the log before this
 * node commits anything. */
int bfs_ledger_acquire(struct bfs_ledger *l, struct bfs_err *err);

/* Writers, before the mount: -EBUSY (err says who) when another live mount
 * holds the node name, 0 when acquire may take it; nothing is written. */
int bfs_ledger_check(struct bfs_ledger *l, struct bfs_err *err);

/* Read the log entries the catalog has not applied and apply them, in order.
 * 0 or -errno with err (also in stats' last_refresh_error). */
int bfs_ledger_refresh(struct bfs_ledger *l, struct bfs_err *err);

/* Start the lease renewal (writers) and the periodic refresh (refresh_s > 0). */
int bfs_ledger_start(struct bfs_ledger *l);

/* A roll to commit: its manifest is put; the log entry is next. */
struct bfs_ledger_roll {
    const char *roll_id;
    const char *manifest_key;  /* where the manifest is in the store */
    const char *manifest_path; /* the same bytes, locally (read for the local commit) */
    uint64_t size;
    uint8_t sha256[32];
    /* Called right after the log entry was put, before the local commit
     * (the roller's fault hook, "after-log"); NULL: none. A negative return
     * stops the commit there, as a crash would. */
    int (*after_log)(void *arg);
    void *after_log_arg;
    /* A compaction (compact.c): the entry's type is "compact" and roll_id
     * its compact_id. After the commit, bfs_catalog_compaction_state says
     * whether it applied or was void (another compaction came first). */
    int compact;
    /* A roll this catalog committed before the log (adopt.c): committed
     * here, not yet in the log; applying its entry stamps its rows. */
    int adopt;
    /* The entry's committed_at (unix seconds); 0: now. An adopted roll's is
     * its commit time here, so the entry's bytes are the same when a
     * commit cut short by a crash is done again. */
    int64_t committed_at;
};

/* Commit a roll: put its log entry at the next free position (reading what
 * others put meanwhile), then apply it to the catalog from the local manifest
 * (the local commit). 0 (also when the log already holds the roll: a commit
 * that a crash cut short), -ESTALE (this node is fenced: err says so), -EROFS
 * (read-only), -ENOENT (r->adopt and the roll is not committed here), or a
 * store or catalog error. */
int bfs_ledger_commit(struct bfs_ledger *l, const struct bfs_ledger_roll *r, struct bfs_err *err);

/* Erase dataset in (table, period), or in every table and period (both
 * NULL): put an erase entry at the next free log position and apply it
 * (the dataset is hidden on this mount when this returns). 0 with its log
 * position in *seq (may be NULL), -EROFS, -ESTALE (fenced), or a store or
 * catalog error, with err. */
int bfs_ledger_erase(struct bfs_ledger *l, const char *dataset, const char *table,
                     const char *period, int64_t *seq, struct bfs_err *err);

/* Put the schema object of fingerprint fp (16 hex digits) unless this mount
 * knows it is there. 0 or -errno with err. */
int bfs_ledger_put_schema(struct bfs_ledger *l, const char *fp, const char *json, size_t len,
                          struct bfs_err *err);

/* Store keys: "_battlefs/manifests/<node>/<roll_id>.avro" into out (cap bytes). */
int bfs_ledger_manifest_key(const char *node, const char *roll_id, char *out, size_t cap);

#endif
