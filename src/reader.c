/* reader.c - the bytes of one dataset file: layout header + cold + hot segments.
 *
 * An open file holds a snapshot of the dataset's segments (a "view"). Its
 * content never changes: a roll moves hot rows into an archive without
 * changing the byte stream (same blocks, same order), and new uploads only
 * append. So when a hot row of the snapshot has been rolled away, the reader
 * takes a fresh view, whose first `size` bytes are the same, and carries on.
 * A read past the end of the view also takes a fresh view: the file may have
 * grown since it was opened, and the kernel may already know the new size.
 */
#include "battlefs/reader.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "battlefs/cache.h"
#include "battlefs/catalog.h"
#include "battlefs/log.h"
#include "battlefs/names.h"
#include "battlefs/store.h"

struct view {
    atomic_int refs;
    struct bfs_dataset_view v;
    uint64_t *start; /* start[i]: file offset of segment i */
    uint64_t groups; /* upload commits before the view was taken */
};

struct bfs_reader {
    struct bfs_reader_deps d; /* a copy of bfs_reader_open's */
    char table[BFS_NAME_MAX + 1];
    char period[BFS_NAME_MAX + 1];
    char dataset[BFS_NAME_MAX + 1];
    pthread_mutex_t lock; /* guards cur and size */
    struct view *cur;
    uint64_t size; /* the size of cur: reads never go past it */
};

static void view_put(struct view *w)
{
    if (w && atomic_fetch_sub(&w->refs, 1) == 1) {
        bfs_dataset_view_free(&w->v);
        free(w->start);
        free(w);
    }
}

static int view_load(struct bfs_reader *r, struct view **out)
{
    struct view *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    /* Read before the snapshot: any upload committed after it changes this. */
    w->groups = bfs_catalog_commit_groups(r->d.cat);
    int rc = bfs_catalog_dataset(r->d.cat, r->table, r->period, r->dataset, &w->v);
    if (rc < 0) {
        free(w);
        return rc;
    }
    w->start = malloc((w->v.n + 1) * sizeof *w->start);
    if (!w->start) {
        bfs_dataset_view_free(&w->v);
        free(w);
        return -ENOMEM;
    }
    uint64_t pos = w->v.part.header_len;
    for (size_t i = 0; i < w->v.n; i++) {
        w->start[i] = pos;
        pos += w->v.seg[i].length;
    }
    w->start[w->v.n] = pos;
    if (pos != w->v.size) {
        bfs_error("catalog view of %s/%s/%s: size %llu != header + segments %llu", r->table,
                  r->period, r->dataset, (unsigned long long)w->v.size, (unsigned long long)pos);
        bfs_dataset_view_free(&w->v);
        free(w->start);
        free(w);
        return -EIO;
    }
    atomic_init(&w->refs, 1);
    *out = w;
    return 0;
}

int bfs_reader_open(const struct bfs_reader_deps *deps, const char *table, const char *period,
                    const char *dataset, struct bfs_reader **out)
{
    if (deps->read_chunk == 0)
        return -EINVAL;
    struct bfs_reader *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->d = *deps;
    snprintf(r->table, sizeof r->table, "%s", table);
    snprintf(r->period, sizeof r->period, "%s", period);
    snprintf(r->dataset, sizeof r->dataset, "%s", dataset);
    int rc = view_load(r, &r->cur);
    if (rc < 0) {
        free(r);
        return rc;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->size = r->cur->v.size;
    *out = r;
    return 0;
}

uint64_t bfs_reader_size(struct bfs_reader *r)
{
    pthread_mutex_lock(&r->lock);
    uint64_t size = r->size;
    pthread_mutex_unlock(&r->lock);
    return size;
}

void bfs_reader_close(struct bfs_reader *r)
{
    if (!r)
        return;
    view_put(r->cur);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static struct view *view_get(struct bfs_reader *r)
{
    pthread_mutex_lock(&r->lock);
    struct view *w = r->cur;
    atomic_fetch_add(&w->refs, 1);
    pthread_mutex_unlock(&r->lock);
    return w;
}

/* Replace the view `old` by a fresh one (a roll moved some of its hot rows). */
static int view_refresh(struct bfs_reader *r, struct view *old)
{
    struct view *w;
    int rc = view_load(r, &w);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&r->lock);
    uint64_t size = r->size;
    if (w->v.size < size || w->v.part.header_len != old->v.part.header_len) {
        pthread_mutex_unlock(&r->lock);
        bfs_error("%s/%s/%s changed under an open file (size %llu -> %llu)", r->table, r->period,
                  r->dataset, (unsigned long long)size, (unsigned long long)w->v.size);
        view_put(w);
        return -EIO;
    }
    struct view *prev = r->cur;
    r->cur = w;
    r->size = w->v.size;
    pthread_mutex_unlock(&r->lock);
    view_put(prev);
    return 0;
}

/* The segment holding file offset pos (pos >= header_len, < size). */
static size_t find_segment(const struct view *w, uint64_t pos)
{
    size_t lo = 0, hi = w->v.n; /* start[lo] <= pos < start[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->start[mid] <= pos)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static int read_cold(struct bfs_reader *r, const struct bfs_segment *s, uint64_t in_seg, char *dst,
                     size_t n)
{
    const struct bfs_reader_deps *d = &r->d;
    uint64_t chunk = d->read_chunk;
    while (n > 0) {
        uint64_t k = in_seg / chunk;
        uint64_t unit_off = s->offset + k * chunk;
        uint64_t unit_len = s->length - k * chunk < chunk ? s->length - k * chunk : chunk;
        uint64_t want_off = s->offset + in_seg;
        uint64_t want_len = unit_off + unit_len - want_off;
        if (want_len > n)
            want_len = n;
        int rc;
        if (d->cache)
            rc = bfs_cache_read(d->cache, d->store, s->key, unit_off, unit_len, want_off, want_len,
                                dst);
        else
            rc = bfs_store_get_range(d->store, s->key, want_off, want_len, dst, NULL);
        if (rc < 0) {
            bfs_error("read of %s/%s/%s: %s bytes %llu-%llu: %s", r->table, r->period, r->dataset,
                      s->key, (unsigned long long)want_off,
                      (unsigned long long)(want_off + want_len - 1), strerror(-rc));
            return -EIO;
        }
        dst += want_len;
        n -= (size_t)want_len;
        in_seg += want_len;
    }
    return 0;
}

/* The current end of the file: the view's size, or, when want goes past it
 * and an upload has committed since the view was taken, a fresh view's. */
static int reader_end(struct bfs_reader *r, uint64_t want, uint64_t *end)
{
    *end = bfs_reader_size(r);
    if (want <= *end)
        return 0;
    struct view *w = view_get(r);
    int rc = 0;
    if (w->groups != bfs_catalog_commit_groups(r->d.cat))
        rc = view_refresh(r, w);
    view_put(w);
    if (rc < 0)
        return rc;
    *end = bfs_reader_size(r);
    return 0;
}

/* Read exactly [off, off + size), which lies within the current view. */
static int read_range(struct bfs_reader *r, char *buf, size_t size, uint64_t off)
{
    size_t done = 0;
    int refreshes = 0;
    while (done < size) {
        struct view *w = view_get(r);
        uint64_t pos = off + done;
        int rc = 0;
        if (pos < w->v.part.header_len) {
            size_t n = (size_t)(w->v.part.header_len - pos);
            if (n > size - done)
                n = size - done;
            memcpy(buf + done, w->v.part.header + pos, n);
            done += n;
            view_put(w);
            continue;
        }
        size_t i = find_segment(w, pos);
        const struct bfs_segment *s = &w->v.seg[i];
        uint64_t in_seg = pos - w->start[i];
        size_t n = (size_t)(s->length - in_seg < size - done ? s->length - in_seg : size - done);
        if (s->kind == BFS_SEG_HOT)
            rc = bfs_catalog_read_hot(r->d.cat, s->id, in_seg, buf + done, n);
        else
            rc = read_cold(r, s, in_seg, buf + done, n);
        if (rc == -ENOENT && s->kind == BFS_SEG_HOT && refreshes < 5) {
            refreshes++;
            rc = view_refresh(r, w);
            view_put(w);
            if (rc < 0)
                return rc;
            continue;
        }
        view_put(w);
        if (rc < 0)
            return rc == -ENOENT ? -EIO : rc;
        done += n;
    }
    return 0;
}

ssize_t bfs_reader_read(struct bfs_reader *r, char *buf, size_t size, uint64_t off)
{
    size_t done = 0;
    while (done < size) {
        uint64_t end, pos = off + done;
        int rc = reader_end(r, off + size, &end);
        if (rc < 0)
            return rc;
        if (pos >= end)
            break;
        size_t n = end - pos < size - done ? (size_t)(end - pos) : size - done;
        rc = read_range(r, buf + done, n, pos);
        if (rc < 0)
            return rc;
        done += n;
        /* Short of size: loop, for the file may have grown while we read (a
         * slow cold read). The kernel takes a short reply for the end of the
         * file and zero-fills the rest of the page, even when it already
         * knows a larger size. */
    }
    return (ssize_t)done;
}
