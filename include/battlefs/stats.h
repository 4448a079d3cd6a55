/* stats.h - counters since mount, rendered as .battlefs/stats. */
#ifndef BATTLEFS_STATS_H
#define BATTLEFS_STATS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/metrics.h"

/* Long work in progress (progress.h), one slot per kind, shown in
 * .battlefs/stats as "progress" while it runs. */
enum bfs_work {
    BFS_WORK_ROLL = 0,    /* a roll's build: bytes of the claimed rows */
    BFS_WORK_REFRESH = 1, /* reading the store's log: entries (a checkpoint: index rows) */
    BFS_WORKS = 2,
};
struct bfs_stats_work {
    atomic_int active;
    atomic_uint_fast64_t done;
    atomic_uint_fast64_t total; /* 0: not known */
    char what[128];             /* under the stats' lock */
    const char *unit;           /* "bytes", "log entries", ... (a static string) */
};

struct bfs_stats {
    atomic_uint_fast64_t uploads_ingested;
    atomic_uint_fast64_t uploads_rejected;
    /* -o upload_memory (spool.h): uploads spilled to spool files, ingests
     * that waited for memory, the bytes charged now and their peak. */
    atomic_uint_fast64_t uploads_spilled;
    atomic_uint_fast64_t upload_memory_waits;
    atomic_uint_fast64_t upload_memory_bytes;
    atomic_uint_fast64_t upload_memory_peak;
    atomic_uint_fast64_t rolls;
    atomic_uint_fast64_t store_get_requests;
    atomic_uint_fast64_t store_get_bytes;
    atomic_uint_fast64_t store_put_requests;
    atomic_uint_fast64_t store_put_bytes;
    atomic_uint_fast64_t cache_hits;
    atomic_uint_fast64_t cache_misses;
    atomic_uint_fast64_t manifests_loaded; /* roll entries of the store's log applied */
    atomic_uint_fast64_t refreshes;        /* reads of the store's log, successful or not */
    atomic_int_fast64_t log_position;      /* the last log entry applied */
    atomic_uint_fast64_t compactions;      /* compactions this mount committed */
    atomic_uint_fast64_t rows_packed;      /* hot rows compressed after their close (packer.h) */
    atomic_uint_fast64_t erasures_pending; /* erasures hidden, bytes not all removed yet */
    atomic_uint_fast64_t store_deletes;    /* objects deleted from the store (retired, void) */
    atomic_uint_fast64_t rolls_adopted;    /* rolls from before the log put into it (adopt.h) */
    atomic_uint_fast64_t rolls_unadopted;  /* rolls from before the log left (set at mount) */
    atomic_int fenced;                     /* the node's lease was taken over */
    int read_only;                         /* -o ro (set before the mount serves) */
    char node[72];                         /* -o node (set before the mount serves) */
    pthread_mutex_t lock;                  /* guards last_roll_error and last_refresh_error */
    char last_roll_error[512];
    int has_roll_error;
    char last_refresh_error[512];
    int has_refresh_error;
    /* Latencies for the metrics (metrics.h): an upload's ingest at close
     * (accepted uploads), store GETs and PUTs (successful requests, as the
     * counters above) and committed rolls. */
    struct bfs_hist close_seconds;
    struct bfs_hist store_get_seconds;
    struct bfs_hist store_put_seconds;
    struct bfs_hist roll_seconds;
    struct bfs_stats_work work[BFS_WORKS];
};

void bfs_stats_init(struct bfs_stats *s);
void bfs_stats_destroy(struct bfs_stats *s);
#define bfs_stats_add(s, field, n) atomic_fetch_add(&(s)->field, (uint_fast64_t)(n))
/* Record (msg != NULL) or clear (msg == NULL) the last roll error. */
void bfs_stats_set_roll_error(struct bfs_stats *s, const char *msg);
/* The same for the last refresh error. */
void bfs_stats_set_refresh_error(struct bfs_stats *s, const char *msg);

/* Publish long work of kind k: begin (what it is, its unit, total), how
 * much is done, the end. */
void bfs_stats_work_begin(struct bfs_stats *s, enum bfs_work k, const char *what, const char *unit,
                          uint64_t total);
#define bfs_stats_work_done(s, k, n) atomic_store(&(s)->work[k].done, (uint_fast64_t)(n))
void bfs_stats_work_end(struct bfs_stats *s, enum bfs_work k);

struct bfs_catalog_counts;
/* Render the JSON object of .battlefs/stats into out (with a trailing newline). */
int bfs_stats_json(struct bfs_stats *s, const struct bfs_catalog_counts *c, struct bfs_buf *out);

#endif
