/* roller.h - the background roll of the hot buffer into store archives. */
#ifndef BATTLEFS_ROLLER_H
#define BATTLEFS_ROLLER_H

#include <stdint.h>

struct bfs_catalog;
struct bfs_conv_cache;
struct bfs_errors;
struct bfs_ledger;
struct bfs_roller;
struct bfs_stats;
struct bfs_store;

/* The points of the roll protocol where the fault hook is called (roller.c's
 * header comment has the details). Their names (bfs_roll_step_name) are the
 * values of -o fault= in test builds. */
enum bfs_roll_step {
    BFS_ROLL_AFTER_CLAIM,    /* the claim transaction committed */
    BFS_ROLL_MID_BUILD,      /* the first row of the first archive is written to its file */
    BFS_ROLL_AFTER_BUILD,    /* every archive is built (none put yet, with hold_puts) */
    BFS_ROLL_MID_UPLOAD,     /* in the put thread: the first archive put and removed */
    BFS_ROLL_AFTER_UPLOAD,   /* every archive put, before the commit */
    BFS_ROLL_BEFORE_COMMIT,  /* the same point, right after AFTER_UPLOAD */
    BFS_ROLL_AFTER_COMMIT,   /* the commit transaction committed */
    BFS_ROLL_PUT,            /* before each put: an error fails that put, as a store would */
    BFS_ROLL_AFTER_MANIFEST, /* the manifest is put, its log entry not yet */
    BFS_ROLL_AFTER_LOG,      /* the log entry is put: committed in the store, not locally */
};
#define BFS_ROLL_STEPS 10

/* "after-claim", "mid-build", "after-build", "mid-upload", "after-upload",
 * "before-commit", "after-commit", "put-fail", "after-manifest", "after-log";
 * NULL for another value. */
const char *bfs_roll_step_name(enum bfs_roll_step step);
/* The step named name: 0, or -EINVAL. */
int bfs_roll_step_parse(const char *name, enum bfs_roll_step *out);

/* The fault hook: called at each step with the roll's id (from the put thread
 * for MID_UPLOAD and PUT). 0 goes on. A negative errno stops the roll right
 * there, as a crash would, and is the roll's result: nothing is undone (the
 * claim, archive files in the work directory, objects put, the commit stay
 * as they are), so bfs_roller_recover then finishes the roll as after a
 * crash. At PUT the error is that put's failure (the roll fails as for a
 * store error: local files are removed, the claim stays). The hook may also
 * not return (test builds' -o fault=: _exit(99)). */
typedef int (*bfs_roll_fault_fn)(void *arg, enum bfs_roll_step step, const char *roll_id);

/* What the roller uses; filled once by main.c (or a test), copied by
 * bfs_roller_start. The modules are borrowed: they must outlive the roller. */
struct bfs_roll_deps {
    struct bfs_catalog *cat;
    struct bfs_store *store;
    struct bfs_ledger *ledger; /* the store's log: the commit goes through it */
    const char *node;          /* -o node: the roll ids and keys carry it */
    struct bfs_stats *stats;   /* rolls; last_roll_error */
    struct bfs_errors *errors; /* a ".battlefs/roll" line per failed roll */
    const char *work_dir;      /* archives being built (<state>/work) */
    uint64_t archive_max_bytes;
    uint64_t roll_interval; /* seconds (the thread; 0: no interval rolls) */
    uint64_t roll_bytes;    /* roll when the buffer holds this much (the thread; 0: never) */
    /* Compiled conversions of rows written in another version than their
     * archive's schema (evolve.h); NULL: each is compiled when needed. */
    struct bfs_conv_cache *convs;
    bfs_roll_fault_fn fault; /* NULL: none */
    void *fault_arg;
    /* Publish no archive to the put thread before the build is done, so that
     * AFTER_BUILD is "all built, nothing put" (test builds' after-build). */
    int hold_puts;
    /* Pack (compress) the rows first <= id <= last still stored uncompressed
     * before the build (packer.h: bfs_packer_pack_range, in parallel
     * threads), so archives hold every block compressed. NULL: none. */
    int (*pack)(void *arg, int64_t first, int64_t last);
    void *pack_arg;
};

/* Complete an unfinished roll left by a crash (same rows, bytes, keys), and
 * empty the work directory. Called at mount before bfs_roller_start.
 * 0 or -errno. */
int bfs_roller_recover(const struct bfs_roll_deps *deps);

/* Start the roll thread (interval, roll_bytes and on-demand rolls). */
int bfs_roller_start(const struct bfs_roll_deps *deps, struct bfs_roller **out);
/* Tell the roller the buffer grew (checks roll_bytes). */
void bfs_roller_notify(struct bfs_roller *r);
/* Roll now and wait until it has committed. 0 (also when the buffer was
 * empty) or -EIO (reason logged, in .battlefs/errors and last_roll_error). */
int bfs_roller_roll_now(struct bfs_roller *r);
void bfs_roller_stop(struct bfs_roller *r);

/* One roll, synchronously, in the calling thread (used by the thread and
 * tests): finishes the pending roll if there is one, else claims the buffer.
 * 0 (also when the buffer was empty) or -errno (reason logged, in errors
 * and last_roll_error). */
int bfs_roll_once(const struct bfs_roll_deps *deps);

#endif
