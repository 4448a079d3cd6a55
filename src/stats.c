/* stats.c - counters and the .battlefs/stats JSON. */
#include "battlefs/stats.h"

#include <stdio.h>
#include <string.h>

#include "battlefs/catalog.h"

void bfs_stats_init(struct bfs_stats *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
}

void bfs_stats_destroy(struct bfs_stats *s)
{
    pthread_mutex_destroy(&s->lock);
}

static void set_error(struct bfs_stats *s, char *dst, size_t cap, int *has, const char *msg)
{
    pthread_mutex_lock(&s->lock);
    snprintf(dst, cap, "%s", msg ? msg : "");
    *has = msg != NULL;
    pthread_mutex_unlock(&s->lock);
}

void bfs_stats_set_roll_error(struct bfs_stats *s, const char *msg)
{
    set_error(s, s->last_roll_error, sizeof s->last_roll_error, &s->has_roll_error, msg);
}

void bfs_stats_set_refresh_error(struct bfs_stats *s, const char *msg)
{
    set_error(s, s->last_refresh_error, sizeof s->last_refresh_error, &s->has_refresh_error, msg);
}

void bfs_stats_work_begin(struct bfs_stats *s, enum bfs_work k, const char *what, const char *unit,
                          uint64_t total)
{
    struct bfs_stats_work *w = &s->work[k];
    pthread_mutex_lock(&s->lock);
    snprintf(w->what, sizeof w->what, "%s", what);
    w->unit = unit;
    atomic_store(&w->done, 0);
    atomic_store(&w->total, total);
    atomic_store(&w->active, 1);
    pthread_mutex_unlock(&s->lock);
}

void bfs_stats_work_end(struct bfs_stats *s, enum bfs_work k)
{
    atomic_store(&s->work[k].active, 0);
}

static int json_string(struct bfs_buf *out, const char *s)
{
    int rc = bfs_buf_append(out, "\"", 1);
    for (; rc == 0 && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            rc = bfs_buf_printf(out, "\\%c", c);
        else if (c < 0x20)
            rc = bfs_buf_printf(out, "\\u%04x", c);
        else
            rc = bfs_buf_append(out, s, 1);
    }
    return rc ? rc : bfs_buf_append(out, "\"", 1);
}

int bfs_stats_json(struct bfs_stats *s, const struct bfs_catalog_counts *c, struct bfs_buf *out)
{
#define U(f) (unsigned long long)atomic_load(&s->f)
    int rc = bfs_buf_printf(
        out,
        "{\"uploads_ingested\": %llu, \"uploads_rejected\": %llu, \"uploads_spilled\": %llu, "
        "\"upload_memory_bytes\": %llu, \"upload_memory_peak\": %llu, "
        "\"upload_memory_waits\": %llu, \"buffer_uploads\": %llu, "
        "\"buffer_bytes\": %llu, \"rolls\": %llu, \"last_roll_error\": ",
        U(uploads_ingested), U(uploads_rejected), U(uploads_spilled), U(upload_memory_bytes),
        U(upload_memory_peak), U(upload_memory_waits), (unsigned long long)c->buffer_uploads,
        (unsigned long long)c->buffer_bytes, U(rolls));
    if (rc)
        return rc;
    pthread_mutex_lock(&s->lock);
    if (s->has_roll_error)
        rc = json_string(out, s->last_roll_error);
    else
        rc = bfs_buf_append(out, "null", 4);
    pthread_mutex_unlock(&s->lock);
    if (rc)
        return rc;
    rc = bfs_buf_printf(
        out,
        ", \"archived_files\": %llu, \"store_get_requests\": %llu, \"store_get_bytes\": %llu, "
        "\"store_put_requests\": %llu, \"store_put_bytes\": %llu, \"cache_hits\": %llu, "
        "\"cache_misses\": %llu, \"manifests_loaded\": %llu, \"refreshes\": %llu, "
        "\"log_position\": %lld, \"compactions\": %llu, \"erasures_pending\": %llu, "
        "\"store_deletes\": %llu, \"rolls_adopted\": %llu, \"rolls_unadopted\": %llu, "
        "\"rows_packed\": %llu, \"pack_pending\": %llu, "
        "\"wal_restarts\": %llu, \"wal_inline_checkpoints\": %llu, \"fenced\": %s, \"read_only\": "
        "%s, \"node\": ",
        (unsigned long long)c->archived_files, U(store_get_requests), U(store_get_bytes),
        U(store_put_requests), U(store_put_bytes), U(cache_hits), U(cache_misses),
        U(manifests_loaded), U(refreshes), (long long)atomic_load(&s->log_position), U(compactions),
        U(erasures_pending), U(store_deletes), U(rolls_adopted), U(rolls_unadopted), U(rows_packed),
        (unsigned long long)c->pack_pending, (unsigned long long)c->wal_restarts,
        (unsigned long long)c->wal_inline_checkpoints, atomic_load(&s->fenced) ? "true" : "false",
        s->read_only ? "true" : "false");
    if (rc == 0)
        rc = json_string(out, s->node);
    if (rc == 0)
        rc = bfs_buf_append(out, ", \"last_refresh_error\": ", 24);
    if (rc)
        return rc;
    pthread_mutex_lock(&s->lock);
    if (s->has_refresh_error)
        rc = json_string(out, s->last_refresh_error);
    else
        rc = bfs_buf_append(out, "null", 4);
    /* uploads per group commit: how many groups had 1, 2, 3-4, ... uploads */
    static const char *const group_names[BFS_CATALOG_GROUP_BUCKETS] = {
        "1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", "65+"};
    if (rc == 0)
        rc = bfs_buf_printf(out, ", \"commit_group_uploads\": {");
    for (int b = 0; rc == 0 && b < BFS_CATALOG_GROUP_BUCKETS; b++)
        rc = bfs_buf_printf(out, "%s\"%s\": %llu", b ? ", " : "", group_names[b],
                            (unsigned long long)c->group_sizes[b]);
    if (rc == 0)
        rc = bfs_buf_append(out, "}", 1);
    /* "progress": the long work running now, [] when none */
    if (rc == 0)
        rc = bfs_buf_printf(out, ", \"progress\": [");
    for (int k = 0, n = 0; rc == 0 && k < BFS_WORKS; k++) {
        const struct bfs_stats_work *w = &s->work[k];
        if (!atomic_load(&w->active))
            continue;
        rc = bfs_buf_printf(out, "%s{\"what\": ", n++ ? ", " : "");
        if (rc == 0)
            rc = json_string(out, w->what);
        if (rc == 0)
            rc = bfs_buf_printf(out, ", \"unit\": \"%s\", \"done\": %llu, \"total\": %llu}",
                                w->unit ? w->unit : "", (unsigned long long)atomic_load(&w->done),
                                (unsigned long long)atomic_load(&w->total));
    }
    pthread_mutex_unlock(&s->lock);
    return rc ? rc : bfs_buf_append(out, "]}\n", 3);
#undef U
}
