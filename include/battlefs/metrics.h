/* metrics.h - Prometheus metrics: histograms, the text exposition format, and
 * the -o metrics=HOST:PORT endpoint (libmicrohttpd).
 *
 * The same text is served at GET /metrics and read from .battlefs/metrics
 * (for node_exporter's textfile collector): bfs_metrics_collect renders it
 * from the stats counters (struct bfs_stats) and what the catalog says now.
 *
 * Names (docs/operations.md, "Monitoring", has the list): every counter of
 * .battlefs/stats as battlefs_<name>_total; gauges for the buffer, the age of
 * its oldest upload, the log position, fenced, read_only; histograms of fixed
 * buckets (BFS_HIST_BOUNDS) for an upload's ingest at close, store GET and
 * PUT requests and rolls. The only labels are of bounded cardinality: the
 * node name and version on battlefs_info. Never a dataset, table or key.
 */
#ifndef BATTLEFS_METRICS_H
#define BATTLEFS_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/err.h"

struct bfs_stats;
struct bfs_catalog;

/* The upper bounds of the histograms' buckets, in seconds (the same for
 * every histogram: 0.5 ms to 30 min), and +Inf. */
#define BFS_HIST_BOUNDS 20
extern const double bfs_hist_bounds[BFS_HIST_BOUNDS];

/* A histogram: lock-free (one atomic add per bucket, count and sum); a
 * concurrent render may see an observation in one and not yet in another,
 * which the next scrape corrects. Zero-initialised is empty. */
struct bfs_hist {
    atomic_uint_fast64_t bucket[BFS_HIST_BOUNDS + 1]; /* per bucket (not cumulative); last +Inf */
    atomic_uint_fast64_t sum_ns;                      /* sum of the observations, nanoseconds */
};

/* Where an upload group commit's time goes (catalog_ingest.c), one
 * observation per group, and how long each last checkpoint pass held the
 * catalog's writer (catalog_db.c): owned by the catalog
 * (bfs_catalog_commit_timing), rendered by bfs_metrics_render. */
struct bfs_commit_timing {
    struct bfs_hist wait;            /* the writer lock and BEGIN */
    struct bfs_hist insert;          /* the group's rows, each under its savepoint */
    struct bfs_hist sync;            /* COMMIT: the WAL written and fsynced */
    struct bfs_hist checkpoint_hold; /* a checkpoint's last pass, every commit held */
};

/* Record one observation of seconds (negative counts as 0). */
void bfs_hist_observe(struct bfs_hist *h, double seconds);
/* Seconds since an arbitrary point (CLOCK_MONOTONIC), for timing. */
double bfs_metrics_now(void);

/* The gauges that come from the catalog, read at render time. */
struct bfs_metrics_gauges {
    uint64_t buffer_uploads;
    uint64_t buffer_bytes;
    uint64_t archived_files;
    uint64_t pack_pending;
    uint64_t wal_restarts, wal_inline_checkpoints; /* counters: bfs_catalog_wal_counts */
    double oldest_upload_age; /* seconds since the oldest buffered upload's commit; 0: none */
    const struct bfs_commit_timing *timing; /* NULL: not rendered */
};

/* Render the exposition text (version 0.0.4) of s and g into out. 0 or -ENOMEM. */
int bfs_metrics_render(struct bfs_stats *s, const struct bfs_metrics_gauges *g,
                       struct bfs_buf *out);
/* Ask cat for the gauges, then render. 0 or -errno. */
int bfs_metrics_collect(struct bfs_stats *s, struct bfs_catalog *cat, struct bfs_buf *out);

/* -o metrics=SPEC: "PORT", ":PORT" (loopback: 127.0.0.1), "HOST:PORT",
 * "[V6ADDR]:PORT". Splits it into host (cap bytes, "" for loopback) and port
 * (1..65535). 0, or -EINVAL with err saying what is wrong. Resolves nothing. */
int bfs_metrics_addr_parse(const char *spec, char *host, size_t cap, unsigned *port,
                           struct bfs_err *err);

/* Resolve spec and bind and listen on a TCP socket (before the daemon forks,
 * so that an unresolvable host or an address in use fails the command): the
 * socket's descriptor (close-on-exec), or -errno with err ("-o metrics=...:
 * address in use"). */
int bfs_metrics_bind(const char *spec, struct bfs_err *err);

struct bfs_metrics_server;
/* Serve GET /metrics on the bound socket fd (taken over: closed by
 * bfs_metrics_stop) from one thread of libmicrohttpd's. s and cat must outlive
 * the server. 0 or -errno. */
int bfs_metrics_start(int fd, struct bfs_stats *s, struct bfs_catalog *cat,
                      struct bfs_metrics_server **out);
/* Stop serving and close the socket; NULL is a no-op. */
void bfs_metrics_stop(struct bfs_metrics_server *m);

#endif
