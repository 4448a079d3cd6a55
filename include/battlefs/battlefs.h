/* battlefs.h - the mount's context: options and the modules it owns.
 *
 * Only main.c and fs.c see it. The roller, the ingest and the reader take a
 * small struct of what they use (struct bfs_roll_deps, bfs_ingest_deps,
 * bfs_reader_deps), which main.c fills once from this context. */
#ifndef BATTLEFS_BATTLEFS_H
#define BATTLEFS_BATTLEFS_H

#include <stdint.h>
#include <sys/types.h>

#include "battlefs/errors.h"
#include "battlefs/ingest.h"
#include "battlefs/ocf.h"
#include "battlefs/options.h"
#include "battlefs/reader.h"
#include "battlefs/roller.h"
#include "battlefs/stats.h"

struct bfs_catalog;
struct bfs_store;
struct bfs_cache;
struct bfs_roller;
struct bfs_packer;
struct bfs_ledger;
struct bfs_fs;
struct bfs_ocf_schema_cache;
struct bfs_metrics_server;
struct bfs_compactor;

struct bfs_ctx {
    struct bfs_options opt;
    char *spool_dir;   /* <state>/spool */
    char *cache_dir;   /* <state>/cache */
    char *work_dir;    /* <state>/work (roll archives being built) */
    char *compact_dir; /* <state>/compact (compactions' archives being built) */
    struct bfs_catalog *cat;
    struct bfs_store *store;
    struct bfs_cache *cache;
    struct bfs_ocf_schema_cache *schemas; /* compiled upload schemas, by JSON */
    struct bfs_conv_cache *convs; /* compiled conversions between schema versions (evolve.h) */
    struct bfs_roller *roller;
    struct bfs_packer *packer;          /* compression off the close path (writers) */
    int pack_fault;                     /* test builds: -o fault=pack:STEP (packer.h), else -1 */
    struct bfs_ledger *ledger;          /* the store's log, the node lease, the refresh */
    struct bfs_compactor *compactor;    /* compaction, store garbage, erased bytes (writers) */
    int lock_fd;                        /* <state>/lock, held while mounted */
    int metrics_fd;                     /* -o metrics: the socket bound before the fork, or -1 */
    struct bfs_metrics_server *metrics; /* serving it (after the fork) */
    struct bfs_fs *fs;                  /* incoming/ state, owned by fs.c */
    struct bfs_stats stats;
    struct bfs_errors errors;
    /* What each module uses, filled by main.c once the modules are open. */
    struct bfs_ingest_deps ingest;
    struct bfs_reader_deps reader;
    struct bfs_roll_deps roll;
    struct bfs_compact_deps compact;
    enum bfs_compact_step compact_fault; /* test builds: -o fault=compact:STEP */
    enum bfs_adopt_step adopt_fault;     /* test builds: -o fault=adopt:STEP */
};

#endif
