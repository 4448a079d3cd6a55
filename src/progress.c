/* progress.c - the throttled progress report of long work (progress.h). */
#include "battlefs/progress.h"

#include <stdio.h>
#include <string.h>

#include "battlefs/log.h"
#include "battlefs/metrics.h"

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

void bfs_progress_start(struct bfs_progress *p, struct bfs_stats *s, enum bfs_work k,
                        const char *what, enum bfs_progress_unit unit, const char *items,
                        uint64_t total)
{
    bfs_progress_begin(p, what, unit, items, total, BFS_PROGRESS_EVERY, bfs_metrics_now());
    p->stats = s;
    p->work = k;
    if (s)
        bfs_stats_work_begin(s, k, what, unit == BFS_PROGRESS_BYTES ? "bytes" : p->items, total);
}

void bfs_progress_report(struct bfs_progress *p, uint64_t done)
{
    if (p->stats)
        bfs_stats_work_done(p->stats, p->work, done);
    double now = bfs_metrics_now();
    if (!bfs_progress_update(p, done, now))
        return;
    char line[256];
    bfs_progress_text(p, now, line, sizeof line);
    bfs_info("%s", line);
}

void bfs_progress_end(struct bfs_progress *p)
{
    if (p->stats)
        bfs_stats_work_end(p->stats, p->work);
    p->stats = NULL;
}
