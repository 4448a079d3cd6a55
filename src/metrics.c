/* metrics.c - Prometheus metrics: histograms, the text exposition format
 * (version 0.0.4) and the -o metrics endpoint through libmicrohttpd.
 *
 * The socket is bound by main.c before the daemon forks (bfs_metrics_bind:
 * an address in use or a host that does not resolve fails the command), and
 * served after it (bfs_metrics_start: libmicrohttpd's one polling thread
 * answers every request; a render is a few catalog reads and a few KB). */
#include "battlefs/metrics.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/catalog.h"
#include "battlefs/stats.h"

#ifndef BFS_VERSION
#define BFS_VERSION "unknown"
#endif

const double bfs_hist_bounds[BFS_HIST_BOUNDS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1,      2.5,   5,      10,    25,   60,    120,  300, 600,  1800,
};

void bfs_hist_observe(struct bfs_hist *h, double seconds)
{
    if (!(seconds > 0))
        seconds = 0;
    size_t i = 0;
    while (i < BFS_HIST_BOUNDS && seconds > bfs_hist_bounds[i])
        i++;
    atomic_fetch_add(&h->bucket[i], 1);
    atomic_fetch_add(&h->sum_ns, (uint_fast64_t)(seconds * 1e9));
}

double bfs_metrics_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the exposition format ---- */

static int head(struct bfs_buf *out, const char *name, const char *type, const char *help)
{
    return bfs_buf_printf(out, "# HELP battlefs_%s %s\n# TYPE battlefs_%s %s\n", name, help, name,
                          type);
}

static int counter(struct bfs_buf *out, const char *name, uint64_t v, const char *help)
{
    int rc = head(out, name, "counter", help);
    return rc ? rc : bfs_buf_printf(out, "battlefs_%s %llu\n", name, (unsigned long long)v);
}

static int gauge(struct bfs_buf *out, const char *name, double v, const char *help)
{
    int rc = head(out, name, "gauge", help);
    return rc ? rc : bfs_buf_printf(out, "battlefs_%s %.17g\n", name, v);
}

static int histogram(struct bfs_buf *out, const char *name, const struct bfs_hist *h,
                     const char *help)
{
    int rc = head(out, name, "histogram", help);
    /* The count is the sum of the buckets read here, so +Inf equals it. */
    uint64_t cum = 0;
    for (size_t i = 0; rc == 0 && i <= BFS_HIST_BOUNDS; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < BFS_HIST_BOUNDS)
            rc = bfs_buf_printf(out, "battlefs_%s_bucket{le=\"%g\"} %llu\n", name,
                                bfs_hist_bounds[i], (unsigned long long)cum);
        else
            rc = bfs_buf_printf(out, "battlefs_%s_bucket{le=\"+Inf\"} %llu\n", name,
                                (unsigned long long)cum);
    }
    if (rc == 0)
        rc = bfs_buf_printf(out, "battlefs_%s_sum %.9f\nbattlefs_%s_count %llu\n", name,
                            (double)atomic_load(&h->sum_ns) / 1e9, name, (unsigned long long)cum);
    return rc;
}

/* A label value: backslash, double quote and newline escaped. */
static int label_value(struct bfs_buf *out, const char *s)
{
    int rc = 0;
    for (; rc == 0 && *s; s++) {
        if (*s == '\\' || *s == '"')
            rc = bfs_buf_printf(out, "\\%c", *s);
        else if (*s == '\n')
            rc = bfs_buf_append(out, "\\n", 2);
        else
            rc = bfs_buf_append(out, s, 1);
    }
    return rc;
}

int bfs_metrics_render(struct bfs_stats *s, const struct bfs_metrics_gauges *g, struct bfs_buf *out)
{
    const struct {
        const char *name;
        atomic_uint_fast64_t *v;
        const char *help;
    } counters[] = {
        {"uploads_ingested_total", &s->uploads_ingested, "Uploads accepted since mount."},
        {"uploads_rejected_total", &s->uploads_rejected, "Uploads rejected since mount."},
        {"uploads_spilled_total", &s->uploads_spilled,
         "Uploads spilled from memory to a spool file since mount (-o upload_memory)."},
        {"upload_memory_waits_total", &s->upload_memory_waits,
         "Ingests that waited for memory under -o upload_memory since mount."},
        {"rolls_total", &s->rolls, "Rolls committed since mount."},
        {"store_get_requests_total", &s->store_get_requests,
         "Successful GET requests to the store since mount."},
        {"store_get_bytes_total", &s->store_get_bytes, "Bytes fetched from the store since mount."},
        {"store_put_requests_total", &s->store_put_requests,
         "Successful PUT requests to the store since mount."},
        {"store_put_bytes_total", &s->store_put_bytes, "Bytes put to the store since mount."},
        {"cache_hits_total", &s->cache_hits, "Cold reads served by the cache."},
        {"cache_misses_total", &s->cache_misses, "Cold reads fetched from the store."},
        {"manifests_loaded_total", &s->manifests_loaded,
         "Roll entries of the store's log applied since mount."},
        {"refreshes_total", &s->refreshes, "Reads of the store's log since mount."},
        {"compactions_total", &s->compactions, "Compactions this mount committed since mount."},
        {"store_deletes_total", &s->store_deletes,
         "Objects deleted from the store (retired by compactions) since mount."},
        {"rows_packed_total", &s->rows_packed,
         "Hot uploads compressed after their close (deflate partitions) since mount."},
        {"rolls_adopted_total", &s->rolls_adopted,
         "Rolls committed before the store's log existed, put into it since mount."},
    };
    pthread_mutex_lock(&s->lock);
    int roll_err = s->has_roll_error, refresh_err = s->has_refresh_error;
    pthread_mutex_unlock(&s->lock);
    const struct {
        const char *name;
        double v;
        const char *help;
    } gauges[] = {
        {"upload_memory_bytes", (double)atomic_load(&s->upload_memory_bytes),
         "Bytes of uploads held in memory and of ingests' working copies (-o upload_memory)."},
        {"upload_memory_peak_bytes", (double)atomic_load(&s->upload_memory_peak),
         "The most upload_memory_bytes has been since mount."},
        {"buffer_uploads", (double)g->buffer_uploads, "Uploads in the hot buffer, not rolled yet."},
        {"buffer_bytes", (double)g->buffer_bytes, "Bytes in the hot buffer."},
        {"buffer_oldest_upload_age_seconds", g->oldest_upload_age,
         "Age of the oldest upload in the hot buffer (0 when it is empty)."},
        {"archived_files", (double)g->archived_files,
         "Archives in the store that this mount indexes."},
        {"pack_pending", (double)g->pack_pending,
         "Hot uploads stored uncompressed (stored deflate blocks), not packed yet."},
        {"log_position", (double)atomic_load(&s->log_position),
         "The last entry of the store's log applied."},
        {"fenced", atomic_load(&s->fenced) ? 1 : 0,
         "1 when another mount took this node's name: nothing more is committed."},
        {"read_only", s->read_only ? 1 : 0, "1 for a read-only replica (-o ro)."},
        {"erasures_pending", (double)atomic_load(&s->erasures_pending),
         "Erasures whose bytes are hidden but not yet removed from every file."},
        {"rolls_unadopted", (double)atomic_load(&s->rolls_unadopted),
         "Rolls committed here before the store's log existed, not in it yet (adopted at "
         "mount)."},
        {"last_roll_failed", roll_err, "1 when the last roll failed (reason in .battlefs/stats)."},
        {"last_refresh_failed", refresh_err, "1 when the last read of the store's log failed."},
    };
    const struct {
        const char *name;
        struct bfs_hist *h;
        const char *help;
    } hists[] = {
        {"upload_close_seconds", &s->close_seconds,
         "Time an accepted upload's close spent in its ingest."},
        {"store_get_seconds", &s->store_get_seconds,
         "Duration of successful GET requests to the store, retries included."},
        {"store_put_seconds", &s->store_put_seconds,
         "Duration of successful PUT requests to the store, retries included."},
        {"roll_duration_seconds", &s->roll_seconds, "Duration of committed rolls."},
    };
    int rc = head(out, "info", "gauge", "The mount: its node name and the battlefs version.");
    if (rc == 0)
        rc = bfs_buf_append(out, "battlefs_info{node=\"", 20);
    if (rc == 0)
        rc = label_value(out, s->node);
    if (rc == 0)
        rc = bfs_buf_printf(out, "\",version=\"%s\"} 1\n", BFS_VERSION);
    for (size_t i = 0; rc == 0 && i < sizeof counters / sizeof counters[0]; i++)
        rc = counter(out, counters[i].name, (uint64_t)atomic_load(counters[i].v), counters[i].help);
    if (rc == 0)
        rc = counter(out, "wal_restarts_total", g->wal_restarts,
                     "Times the catalog's WAL began again from its start (a checkpoint finished "
                     "between two commits) since mount.");
    if (rc == 0)
        rc = counter(out, "wal_inline_checkpoints_total", g->wal_inline_checkpoints,
                     "Checkpoints a commit made itself, holding every upload, because the WAL "
                     "reached 16000 frames (the checkpointer did not keep up) since mount.");
    for (size_t i = 0; rc == 0 && i < sizeof gauges / sizeof gauges[0]; i++)
        rc = gauge(out, gauges[i].name, gauges[i].v, gauges[i].help);
    for (size_t i = 0; rc == 0 && i < sizeof hists / sizeof hists[0]; i++)
        rc = histogram(out, hists[i].name, hists[i].h, hists[i].help);
    const struct bfs_commit_timing *t = g->timing;
    if (t) {
        const struct bfs_hist *th[] = {&t->wait, &t->insert, &t->sync, &t->checkpoint_hold};
        static const char *const tname[] = {
            "upload_commit_wait_seconds", "upload_commit_insert_seconds",
            "upload_commit_sync_seconds", "checkpoint_hold_seconds"};
        static const char *const thelp[] = {
            "Per upload group commit: waiting for the catalog's writer (held by a checkpoint's "
            "last pass, the packer, a roll's claim) and BEGIN.",
            "Per upload group commit: inserting the group's rows.",
            "Per upload group commit: COMMIT, the WAL written and fsynced.",
            "Per checkpoint: its last pass, every commit held (the WAL then begins again)."};
        for (size_t i = 0; rc == 0 && i < sizeof th / sizeof th[0]; i++)
            rc = histogram(out, tname[i], th[i], thelp[i]);
    }
    return rc;
}

int bfs_metrics_collect(struct bfs_stats *s, struct bfs_catalog *cat, struct bfs_buf *out)
{
    struct bfs_catalog_counts c;
    int rc = bfs_catalog_counts(cat, &c);
    if (rc < 0)
        return rc;
    struct bfs_metrics_gauges g = {
        .buffer_uploads = c.buffer_uploads,
        .buffer_bytes = c.buffer_bytes,
        .archived_files = c.archived_files,
        .pack_pending = c.pack_pending,
        .wal_restarts = c.wal_restarts,
        .wal_inline_checkpoints = c.wal_inline_checkpoints,
        .timing = bfs_catalog_commit_timing(cat),
    };
    int64_t oldest;
    rc = bfs_catalog_oldest_buffered(cat, &oldest);
    if (rc == 0) {
        int64_t now = (int64_t)time(NULL);
        g.oldest_upload_age = now > oldest ? (double)(now - oldest) : 0;
    } else if (rc != -ENOENT) {
        return rc;
    }
    return bfs_metrics_render(s, &g, out);
}

/* ---- the address ---- */

int bfs_metrics_addr_parse(const char *spec, char *host, size_t cap, unsigned *port,
                           struct bfs_err *err)
{
    const char *p = spec, *colon;
    size_t hl = 0;
    if (!spec || !spec[0])
        return bfs_err_set(err, -EINVAL, "bad -o metrics= (HOST:PORT, :PORT or PORT)");
    if (spec[0] == '[') { /* [v6]:port */
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':')
            return bfs_err_set(err, -EINVAL, "bad -o metrics=%s ([ADDRESS]:PORT for IPv6)", spec);
        p = spec + 1;
        hl = (size_t)(close - p);
        colon = close + 1;
    } else if ((colon = strrchr(spec, ':')) != NULL) {
        if (memchr(spec, ':', (size_t)(colon - spec)))
            return bfs_err_set(err, -EINVAL, "bad -o metrics=%s (an IPv6 address goes in [])",
                               spec);
        hl = (size_t)(colon - spec);
    }
    const char *ps = colon ? colon + 1 : spec;
    if (!ps[0])
        return bfs_err_set(err, -EINVAL, "bad -o metrics=%s: no port (HOST:PORT, :PORT or PORT)",
                           spec);
    unsigned long v = 0;
    for (const char *q = ps; *q; q++) {
        if (*q < '0' || *q > '9' || v > 65535)
            return bfs_err_set(err, -EINVAL, "bad -o metrics=%s: port \"%s\" is not 1-65535", spec,
                               ps);
        v = v * 10 + (unsigned long)(*q - '0');
    }
    if (v < 1 || v > 65535)
        return bfs_err_set(err, -EINVAL, "bad -o metrics=%s: port %s is not 1-65535", spec, ps);
    if (hl >= cap)
        return bfs_err_set(err, -EINVAL, "bad -o metrics=%s: host name too long", spec);
    memcpy(host, p, hl);
    host[hl] = '\0';
    *port = (unsigned)v;
    return 0;
}

int bfs_metrics_bind(const char *spec, struct bfs_err *err)
{
    char host[256];
    unsigned port;
    int rc = bfs_metrics_addr_parse(spec, host, sizeof host, &port, err);
    if (rc < 0)
        return rc;
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    const char *h = host[0] ? host : "127.0.0.1"; /* loopback unless a host is given */
    int g = getaddrinfo(h, service, &hints, &res);
    if (g != 0)
        return bfs_err_set(err, g == EAI_MEMORY ? -ENOMEM : -EINVAL,
                           "-o metrics=%s: cannot resolve host %s: %s", spec, h, gai_strerror(g));
    rc = -EADDRNOTAVAIL;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 64) == 0) {
            freeaddrinfo(res);
            return fd;
        }
        rc = -errno;
        close(fd);
    }
    freeaddrinfo(res);
    return bfs_err_set(err, rc, "-o metrics=%s: cannot listen on %s port %u: %s", spec, h, port,
                       strerror(-rc));
}

/* ---- the server ---- */

struct bfs_metrics_server {
    struct MHD_Daemon *d;
    struct bfs_stats *stats;
    struct bfs_catalog *cat;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, void *body, size_t len,
                             const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result text_reply(struct MHD_Connection *conn, unsigned status, const char *msg)
{
    char *body = strdup(msg);
    return body ? reply(conn, status, body, strlen(body), "text/plain; charset=utf-8") : MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req)
{
    struct bfs_metrics_server *m = cls;
    (void)version;
    (void)upload_data;
    (void)req;
    if (*upload_data_size) { /* a body is not ours to read: drop it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return text_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics\n");
    if (strcmp(url, "/metrics") != 0)
        return text_reply(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics\n");
    struct bfs_buf b = {0};
    int rc = bfs_metrics_collect(m->stats, m->cat, &b);
    if (rc < 0) {
        bfs_buf_free(&b);
        return text_reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot read the catalog\n");
    }
    return reply(conn, MHD_HTTP_OK, b.data, b.len, "text/plain; version=0.0.4; charset=utf-8");
}

int bfs_metrics_start(int fd, struct bfs_stats *s, struct bfs_catalog *cat,
                      struct bfs_metrics_server **out)
{
    struct bfs_metrics_server *m = calloc(1, sizeof *m);
    if (!m) {
        close(fd);
        return -ENOMEM;
    }
    m->stats = s;
    m->cat = cat;
    m->d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL, on_request,
                         m, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
                         64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!m->d) {
        close(fd);
        free(m);
        return -EIO;
    }
    *out = m;
    return 0;
}

void bfs_metrics_stop(struct bfs_metrics_server *m)
{
    if (!m)
        return;
    MHD_stop_daemon(m->d); /* closes the listening socket */
    free(m);
}
