/* upload.h - the lifecycle of one upload in incoming/, as a state machine.
 *
 * An upload is the bytes written through one or more open file descriptions
 * (FUSE file handles) of a name in incoming/. This module holds its state and
 * the transitions for every FUSE operation that touches it; it does no I/O and
 * takes no lock: fs.c calls it with its lock held and carries out the action
 * each transition returns (ingest, wait for an ingest, free).
 *
 *                create, or an open that truncates
 *                          |
 *                          v
 *          +-----------> WRITING ---------------------------------+
 *          | reopen        |    \                                 | unlink; EFBIG or a
 *          |               |     \ last writer released,          | spool error at a
 *          |               |      \ held (dot) name               | write; empty at its
 *          |               |       v                              | last release; a held
 *          +-------------- | ---- HELD -------------------------->+ name lost
 *                          |       |    unlink, expiry, name lost |
 *                          |       |                              v
 *    flush by an opener    |       | renamed to a real name   DISCARDED
 *    that leaves no active |       |
 *    writer (real name);   |       |
 *    last writer released; |       |
 *    flushed, then renamed |       |
 *    to a real name        v       v
 *                         INGESTING       flushes of any duplicate wait here
 *                              |
 *                              v
 *                            DONE         result 0 or -errno, for every later flush
 *
 * Rules (docs/design.md, "incoming/"):
 *  - A description opened for writing is "active" from its open and after
 *    each write through it, until its opener's process flushes it (close(2)).
 *    A flush from another process (a child that inherited the descriptor, a
 *    shell's command in a `{ ...; } > file` group) is a copy closing: it
 *    changes nothing and returns 0.
 *  - An upload is ingested at the first flush by an opener that leaves no
 *    active writer, if anything was written and its name is not held; or at
 *    the release of its last writer if no such flush came; or at a rename of
 *    a held name to a real one once no writer is active. The ingest's result
 *    is the result of every later flush of any of its descriptions; a flush
 *    that meets the ingest in progress waits for it.
 *  - A held (dot) name is never ingested by a close; closed, it is HELD until
 *    a rename gives it a real name, an unlink discards it, or it expires.
 *  - Losing the name (another upload created over it, a rename over it)
 *    discards a held file; a real upload still being written keeps its
 *    identity and is ingested at its close: never two closes that return 0
 *    with one upload lost.
 */
#ifndef BATTLEFS_UPLOAD_H
#define BATTLEFS_UPLOAD_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

enum bfs_up_state {
    BFS_UP_WRITING,   /* open for writing, or released with a release pending */
    BFS_UP_HELD,      /* a held (dot) name, every writer closed: waits for a rename */
    BFS_UP_INGESTING, /* one thread validates and commits it, unlocked */
    BFS_UP_DONE,      /* ingested (result 0) or rejected (result < 0) */
    BFS_UP_DISCARDED, /* unlinked, replaced, expired, empty, or refused at a write */
};

/* What fs.c must do after a transition. */
enum bfs_up_action {
    BFS_UP_NONE,   /* nothing more */
    BFS_UP_INGEST, /* ingest it now (state is INGESTING), then bfs_up_ingested */
    BFS_UP_WAIT,   /* wait until it leaves INGESTING, then return its result */
    BFS_UP_REJECT, /* record the rejection (result says why); state is DISCARDED */
    BFS_UP_FREE,   /* nothing refers to it any more: free it */
};

struct bfs_up {
    enum bfs_up_state state;
    bool named;     /* bound to its path in incoming/ */
    bool held_name; /* its (last) basename starts with '.' */
    bool touched;   /* written or truncated since it was created */
    uint64_t size;
    int opens;         /* open file descriptions */
    int writers;       /* of those, opened for writing */
    int active;        /* writers not flushed by their opener since their open or last write */
    int busy;          /* ingests in progress (0 or 1): it must outlive them */
    int result;        /* DONE, DISCARDED: what later writes and flushes return */
    time_t held_since; /* HELD: when the last writer was released */
};

/* One open file description of an upload. */
struct bfs_up_desc {
    bool writable;
    bool active;
};

/* A new upload bound to a name (create, or an open that truncates). */
void bfs_up_init(struct bfs_up *u, bool held_name);

/* Whether a description may be opened on u through its name (WRITING or HELD). */
bool bfs_up_joinable(const struct bfs_up *u);
/* A description opened on u (which must be joinable). */
void bfs_up_open(struct bfs_up *u, struct bfs_up_desc *d, bool writable);

/* Before a write of bytes up to `end`, or a truncate to size `end`: 0 to go
 * ahead (write the spool, then bfs_up_write_end; or truncate it, then
 * bfs_up_truncated), 1 to accept it without storing (a discarded upload: as
 * for a file unlinked while open), or a negative errno to return (*act is
 * BFS_UP_REJECT when this call just refused the upload). */
int bfs_up_write_begin(struct bfs_up *u, uint64_t end, uint64_t max, enum bfs_up_action *act);
/* After the spool write: err 0 or the write's -errno. Same returns as
 * bfs_up_write_begin (a state change while the write ran unlocked wins). */
int bfs_up_write_end(struct bfs_up *u, struct bfs_up_desc *d, uint64_t end, int err,
                     enum bfs_up_action *act);
/* After a truncate that bfs_up_write_begin let go ahead. */
void bfs_up_truncated(struct bfs_up *u, uint64_t size);

/* A flush (close(2) of a descriptor) of d; by_opener: from the process that
 * opened d. INGEST, WAIT, or NONE with *rc the result for close. */
enum bfs_up_action bfs_up_flush(struct bfs_up *u, struct bfs_up_desc *d, bool by_opener, int *rc);
/* The last reference to d is gone: INGEST (nobody hears the result), FREE or NONE. */
enum bfs_up_action bfs_up_release(struct bfs_up *u, struct bfs_up_desc *d, time_t now);
/* The ingest started by INGEST ended with rc. FREE or NONE. */
enum bfs_up_action bfs_up_ingested(struct bfs_up *u, int rc);

/* Renamed (it keeps its name binding) to a name held or not: INGEST or NONE. */
enum bfs_up_action bfs_up_rename(struct bfs_up *u, bool held_name);
/* Its name was given to another upload (created over it, renamed onto it):
 * a held file is discarded, a real upload being written keeps going. FREE or NONE. */
enum bfs_up_action bfs_up_replaced(struct bfs_up *u);
/* Unlinked, expired or discarded for another reason; err is what later writes
 * and flushes return (0: they succeed and store nothing). FREE or NONE. */
enum bfs_up_action bfs_up_discard(struct bfs_up *u, int err);

/* A HELD upload left unrenamed for timeout seconds. */
bool bfs_up_expired(const struct bfs_up *u, time_t now, time_t timeout);

const char *bfs_up_state_name(enum bfs_up_state s);

#endif
