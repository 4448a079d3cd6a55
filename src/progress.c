/* progress.c - the throttled progress report of long work (progress.h). */
#include "battlefs/progress.h"

#include <stdio.h>
#include <string.h>

void bfs_progress_begin(struct bfs_progress *p, const char *what, enum bfs_progress_unit unit,
                        const char *items, uint64_t total, double every, double now)
{
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->unit = unit;
    p->items = items ? items : "items";
    p->total = total;
    p->start = p->last = now;
    p->every = every;
}

int bfs_progress_update(struct bfs_progress *p, uint64_t done, double now)
{
    p->done = done;
    if (now - p->last < p->every)
        return 0;
    p->last = now;
    return 1;
}

static void amount(const struct bfs_progress *p, double v, char *out, size_t cap)
{
    if (p->unit == BFS_PROGRESS_BYTES)
        snprintf(out, cap, "%.1f MiB", v / (1024.0 * 1024.0));
    else
        snprintf(out, cap, "%.0f", v);
}

void bfs_progress_text(const struct bfs_progress *p, double now, char *out, size_t cap)
{
    double secs = now - p->start;
    double rate = secs > 0 ? (double)p->done / secs : 0;
    char done[32], total[32], r[32];
    amount(p, (double)p->done, done, sizeof done);
    amount(p, (double)p->total, total, sizeof total);
    amount(p, rate, r, sizeof r);
    const char *items = p->unit == BFS_PROGRESS_ITEMS ? p->items : "";
    const char *sep = p->unit == BFS_PROGRESS_ITEMS ? " " : "";
    if (p->total > 0)
        snprintf(out, cap, "%s: %s of %s%s%s (%.0f%%), %s/s, %.0f s", p->what, done, total, sep,
                 items, 100.0 * (double)p->done / (double)p->total, r, secs);
    else
        snprintf(out, cap, "%s: %s%s%s, %s/s, %.0f s", p->what, done, sep, items, r, secs);
}
