/* upload.c - the lifecycle of one upload in incoming/ (see upload.h). Pure:
 * no I/O, no locks, no clock (callers pass the time). */
#include "battlefs/upload.h"

#include <errno.h>
#include <stddef.h>

void bfs_up_init(struct bfs_up *u, bool held_name)
{
    *u = (struct bfs_up){.state = BFS_UP_WRITING, .named = true, .held_name = held_name};
}

bool bfs_up_joinable(const struct bfs_up *u)
{
    return u->named && (u->state == BFS_UP_WRITING || u->state == BFS_UP_HELD);
}

void bfs_up_open(struct bfs_up *u, struct bfs_up_desc *d, bool writable)
{
    *d = (struct bfs_up_desc){.writable = writable, .active = writable};
    u->opens++;
    if (!writable)
        return;
    u->writers++;
    u->active++;
    if (u->state == BFS_UP_HELD)
        u->state = BFS_UP_WRITING; /* reopened before its rename */
}

static bool unreferenced(const struct bfs_up *u)
{
    return u->opens == 0 && u->busy == 0;
}

static enum bfs_up_action finished(struct bfs_up *u)
{
    return unreferenced(u) ? BFS_UP_FREE : BFS_UP_NONE;
}

static void set_active(struct bfs_up *u, struct bfs_up_desc *d, bool active)
{
    if (!d->writable || d->active == active)
        return;
    d->active = active;
    u->active += active ? 1 : -1;
}

/* What a write or truncate meets in a state where it cannot go ahead. */
static int refused(const struct bfs_up *u)
{
    switch (u->state) {
    case BFS_UP_DISCARDED:
        return u->result < 0 ? u->result : 1;
    case BFS_UP_DONE:
        return u->result < 0 ? u->result : -EBADF;
    case BFS_UP_INGESTING:
        return -EBADF;
    default:
        return 0;
    }
}

static int reject(struct bfs_up *u, int err, enum bfs_up_action *act)
{
    u->state = BFS_UP_DISCARDED;
    u->named = false;
    u->result = err;
    *act = BFS_UP_REJECT;
    return err;
}

int bfs_up_write_begin(struct bfs_up *u, uint64_t end, uint64_t max, enum bfs_up_action *act)
{
    *act = BFS_UP_NONE;
    int rc = refused(u);
    if (rc != 0)
        return rc;
    if (end > max)
        return reject(u, -EFBIG, act);
    return 0;
}

int bfs_up_write_end(struct bfs_up *u, struct bfs_up_desc *d, uint64_t end, int err,
                     enum bfs_up_action *act)
{
    *act = BFS_UP_NONE;
    int rc = refused(u);
    if (rc != 0)
        return rc;
    if (err < 0) /* the spool copy is incomplete: the upload cannot be stored */
        return reject(u, err, act);
    if (end > u->size)
        u->size = end;
    u->touched = true;
    set_active(u, d, true);
    return 0;
}

void bfs_up_truncated(struct bfs_up *u, uint64_t size)
{
    if (u->state != BFS_UP_WRITING && u->state != BFS_UP_HELD)
        return;
    u->size = size;
    u->touched = true;
}

static enum bfs_up_action start_ingest(struct bfs_up *u)
{
    u->state = BFS_UP_INGESTING;
    u->named = false; /* it leaves incoming/ whatever the outcome */
    u->busy++;
    return BFS_UP_INGEST;
}

enum bfs_up_action bfs_up_flush(struct bfs_up *u, struct bfs_up_desc *d, bool by_opener, int *rc)
{
    *rc = 0;
    switch (u->state) {
    case BFS_UP_INGESTING:
        return BFS_UP_WAIT;
    case BFS_UP_DONE:
    case BFS_UP_DISCARDED:
        *rc = u->result;
        return BFS_UP_NONE;
    case BFS_UP_HELD:
        return BFS_UP_NONE;
    case BFS_UP_WRITING:
        break;
    }
    if (!by_opener || !d->writable)
        return BFS_UP_NONE; /* a copy of the descriptor closed; its opener goes on */
    set_active(u, d, false);
    if (u->held_name || u->active > 0 || !u->touched)
        return BFS_UP_NONE;
    return start_ingest(u);
}

enum bfs_up_action bfs_up_release(struct bfs_up *u, struct bfs_up_desc *d, time_t now)
{
    set_active(u, d, false);
    u->opens--;
    if (d->writable)
        u->writers--;
    if (u->state == BFS_UP_WRITING && u->writers == 0) {
        if (u->held_name && u->named) {
            u->state = BFS_UP_HELD;
            u->held_since = now;
        } else if (u->held_name || u->size == 0) {
            /* Unnamed and held: nothing can ever rename it. Empty: touch. */
            u->state = BFS_UP_DISCARDED;
            u->named = false;
            u->result = 0;
        } else {
            /* Its last writer closed without a flush by an opener that ingested:
             * e.g. the opener closed first, then a child holding a copy. */
            return start_ingest(u);
        }
    }
    if (u->state == BFS_UP_DONE || u->state == BFS_UP_DISCARDED)
        return finished(u);
    return BFS_UP_NONE;
}

enum bfs_up_action bfs_up_ingested(struct bfs_up *u, int rc)
{
    u->state = BFS_UP_DONE;
    u->result = rc;
    u->busy--;
    return finished(u);
}

enum bfs_up_action bfs_up_rename(struct bfs_up *u, bool held_name)
{
    u->held_name = held_name;
    if (held_name)
        return BFS_UP_NONE;
    /* rsync and editors: a held file renamed to its real name right after its
     * close. close(2) waits for FLUSH, not for RELEASE: a writer flushed by its
     * opener counts as closed. */
    if (u->state == BFS_UP_HELD || (u->state == BFS_UP_WRITING && u->active == 0 && u->touched))
        return start_ingest(u);
    return BFS_UP_NONE;
}

enum bfs_up_action bfs_up_replaced(struct bfs_up *u)
{
    u->named = false;
    if (u->state == BFS_UP_HELD || (u->state == BFS_UP_WRITING && u->held_name))
        return bfs_up_discard(u, 0);
    return BFS_UP_NONE; /* a real upload being written: ingested at its close */
}

enum bfs_up_action bfs_up_discard(struct bfs_up *u, int err)
{
    u->named = false;
    if (u->state == BFS_UP_WRITING || u->state == BFS_UP_HELD) {
        u->state = BFS_UP_DISCARDED;
        u->result = err;
    }
    return u->state == BFS_UP_DISCARDED || u->state == BFS_UP_DONE ? finished(u) : BFS_UP_NONE;
}

bool bfs_up_expired(const struct bfs_up *u, time_t now, time_t timeout)
{
    return u->state == BFS_UP_HELD && now - u->held_since >= timeout;
}

const char *bfs_up_state_name(enum bfs_up_state s)
{
    static const char *const names[] = {"writing", "held", "ingesting", "done", "discarded"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "?";
}
