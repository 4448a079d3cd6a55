/* options.h - the command line of the mount: parsing and validation.
 *
 *   battlefs [STORE] MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d]
 *
 * bfs_options_parse takes battlefs's own options out of the arguments and
 * leaves FUSE's for fuse_parse_cmdline. It creates nothing on disk and sets
 * nothing global: main.c applies the log level and creates the directories.
 */
#ifndef BATTLEFS_OPTIONS_H
#define BATTLEFS_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "battlefs/adopt.h"
#include "battlefs/compact.h"
#include "battlefs/err.h"
#include "battlefs/ocf.h"
#include "battlefs/roller.h"

struct fuse_args;

struct bfs_options {
    char *store_url;   /* as given, else file://<state_dir>/store */
    int store_default; /* store_url is the default one (main.c creates <state>/store) */
    char *mountpoint;
    char *state_dir;        /* absolute */
    uint64_t roll_interval; /* seconds */
    uint64_t roll_bytes;
    enum bfs_codec codec;
    int deflate_level; /* 1..9: zlib level of blocks compressed at ingest */
    uint64_t max_upload;
    uint64_t upload_memory; /* uploads in memory and ingests' copies (spool.h); 0: all spooled */
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
    char *node;             /* -o node: checked, or the host name made one */
    int read_only;          /* -o ro */
    uint64_t refresh;       /* seconds between reads of the store's log (0: none) */
    uint64_t lease_ttl;     /* seconds; 0: the default (test builds: -o lease_ttl) */
    uint64_t compact_after; /* seconds without a roll before a period is compacted */
    uint64_t gc_grace;      /* seconds a retired archive stays in the store */
    uint64_t erase_within;  /* seconds by which an erased dataset's bytes are gone */
    char *metrics;          /* -o metrics=HOST:PORT (checked by bfs_metrics_addr_parse), or NULL */
    char *fault;            /* test builds only: "roll:after-claim" etc., else NULL */
    int log_level;          /* -o log_level: an enum bfs_log_level, or -1 when not given */
    int foreground;         /* set by main.c from fuse_parse_cmdline */
    int debug;
};

/* Parse a byte size: decimal digits with an optional K, M or G suffix
 * (powers of 1024). 0 or -EINVAL (not a number, a sign or leading space,
 * overflow, trailing garbage). */
int bfs_parse_size(const char *s, uint64_t *out);

enum {
    BFS_OPTIONS_RUN = 0,     /* mount */
    BFS_OPTIONS_HELP = 1,    /* -h, --help: print bfs_options_usage */
    BFS_OPTIONS_VERSION = 2, /* -V, --version */
};

/* Parse args: battlefs's options go into o (every default filled in, every
 * value checked), the positional arguments (STORE, MOUNTPOINT) are taken out
 * of args and FUSE's options are left there. Returns BFS_OPTIONS_RUN,
 * BFS_OPTIONS_HELP or BFS_OPTIONS_VERSION; or -EINVAL with err (may be NULL)
 * saying what is wrong ("bad -o roll_bytes=x (a byte size >= 1, with optional
 * K, M or G suffix)"; the first problem found), or -ENOMEM. The state directory
 * defaults to /var/lib/battlefs for root, else $XDG_STATE_HOME/battlefs or
 * $HOME/.local/state/battlefs; a relative one is made absolute. o is always
 * to be freed with bfs_options_free. */
int bfs_options_parse(struct fuse_args *args, struct bfs_options *o, struct bfs_err *err);
void bfs_options_free(struct bfs_options *o);

/* The roll step -o fault names ("STEP" or "roll:STEP"): 0 with *step, or
 * -ENOENT (no fault, or one of fs.c's: "spool:named", "ingest:pause"). */
int bfs_options_roll_fault(const struct bfs_options *o, enum bfs_roll_step *step);
/* The compaction step -o fault=compact:STEP names: 0, or -ENOENT. */
int bfs_options_compact_fault(const struct bfs_options *o, enum bfs_compact_step *step);
/* The adoption step -o fault=adopt:STEP names (adopt.h): 0, or -ENOENT. */
int bfs_options_adopt_fault(const struct bfs_options *o, enum bfs_adopt_step *step);
/* -o fault=pack:mid (0), pack:after-commit (1), pack:hold (2): the value, or
 * -ENOENT for none of them. */
int bfs_options_pack_fault(const struct bfs_options *o);

/* Print the --help text (battlefs's options, then FUSE's) to stdout. */
void bfs_options_usage(const char *prog);

#endif
