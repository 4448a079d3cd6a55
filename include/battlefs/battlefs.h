/* battlefs.h - the mount's context: options and the modules it owns. */
#ifndef BATTLEFS_BATTLEFS_H
#define BATTLEFS_BATTLEFS_H

#include <stdint.h>
#include <sys/types.h>

#include "battlefs/errors.h"
#include "battlefs/ocf.h"
#include "battlefs/stats.h"

struct bfs_catalog;
struct bfs_store;
struct bfs_cache;
struct bfs_roller;
struct bfs_fs;

struct bfs_options {
    char *store_url; /* NULL until resolved: file://<state>/store */
    char *mountpoint;
    char *state_dir;
    uint64_t roll_interval; /* seconds */
    uint64_t roll_bytes;
    enum bfs_codec codec;
    int deflate_level; /* 1..9: zlib level of blocks compressed at ingest */
    uint64_t max_upload;
    uint64_t cache_size;
    uint64_t archive_max_bytes;
    uint64_t read_chunk;
    uint64_t store_timeout;  /* seconds: bound on one store operation, retries included */
    uint64_t held_timeout;   /* seconds a closed held (dot) file waits for its rename */
    uint64_t held_bytes_max; /* bytes of held files per uid: 16 x max_upload */
    uid_t uid;               /* owner of the tree and the control files (-o uid) */
    gid_t gid;               /* its group (-o gid) */
    mode_t umask;            /* taken from the tree's modes (-o umask) */
    char *endpoint;
    char *region;
    char *fault; /* test builds only: "roll:after-claim" etc., else NULL */
    int foreground;
    int debug;
};

struct bfs_ocf_schema_cache;

struct bfs_ctx {
    struct bfs_options opt;
    char *spool_dir; /* <state>/spool */
    char *cache_dir; /* <state>/cache */
    char *work_dir;  /* <state>/work (roll archives being built) */
    struct bfs_catalog *cat;
    struct bfs_store *store;
    struct bfs_cache *cache;
    struct bfs_ocf_schema_cache *schemas; /* compiled upload schemas, by JSON */
    struct bfs_roller *roller;
    struct bfs_fs *fs; /* incoming/ state, owned by fs.c */
    struct bfs_stats stats;
    struct bfs_errors errors;
};

#endif
