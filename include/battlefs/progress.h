/* progress.h - progress of long work (a big roll, a rebuild from the store,
 * an fsck): how much of how much is done, at what rate, reported at most once
 * every few seconds, never per object.
 *
 * Pure: the caller passes the time (bfs_metrics_now), so the throttle is
 * unit-tested without sleeping. The caller decides where a report goes (an
 * INFO line of the log, a line on a terminal) and publishes done/total in
 * .battlefs/stats (bfs_stats_set_progress) while the work runs.
 */
#ifndef BATTLEFS_PROGRESS_H
#define BATTLEFS_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/stats.h"

/* Seconds between two reports of the daemon's long work in the log. */
#define BFS_PROGRESS_EVERY 5.0

enum bfs_progress_unit {
    BFS_PROGRESS_BYTES = 0, /* "120.0 MiB of 512.0 MiB", rate in MiB/s */
    BFS_PROGRESS_ITEMS = 1, /* "120 of 512 <items>", rate per second */
};

struct bfs_progress {
    char what[128];    /* what is being done: "roll r1", "rebuild from the store" */
    const char *items; /* BFS_PROGRESS_ITEMS: their name ("log entries"); a static string */
    enum bfs_progress_unit unit;
    uint64_t total; /* 0: not known */
    uint64_t done;
    double start;            /* when the work began */
    double last;             /* the last report (start: none yet) */
    double every;            /* seconds between reports */
    struct bfs_stats *stats; /* bfs_progress_start: where it is published, or NULL */
    enum bfs_work work;
};

/* Begin: nothing done, no report before `every` seconds have passed. */
void bfs_progress_begin(struct bfs_progress *p, const char *what, enum bfs_progress_unit unit,
                        const char *items, uint64_t total, double every, double now);
/* Record that done units are done: 1 when a report is due (every seconds
 * after the last one, or after the start), else 0. */
int bfs_progress_update(struct bfs_progress *p, uint64_t done, double now);
/* The report, e.g. "roll r1: 120.0 MiB of 512.0 MiB (23%), 40.1 MiB/s, 9 s" or
 * "rebuild from the store: 1200 of 4000 log entries (30%), 600/s, 2 s"; cut
 * to cap. */
void bfs_progress_text(const struct bfs_progress *p, double now, char *out, size_t cap);

/* The daemon's long work: begin (reports every BFS_PROGRESS_EVERY seconds,
 * published in s as kind k while it runs; s may be NULL), record done (an
 * INFO line with bfs_progress_text when due; cheap enough to call per
 * object), end (no more in the stats). */
void bfs_progress_start(struct bfs_progress *p, struct bfs_stats *s, enum bfs_work k,
                        const char *what, enum bfs_progress_unit unit, const char *items,
                        uint64_t total);
void bfs_progress_report(struct bfs_progress *p, uint64_t done);
void bfs_progress_end(struct bfs_progress *p);

#endif
