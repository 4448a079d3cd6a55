/* reader.c - the bytes of one dataset file: layout header + cold + hot segments.
 *
 * An open file holds a snapshot of the dataset's segments (a "view"). Its
 * content never changes: a roll moves hot rows into an archive without
 * changing the byte stream (same blocks, same order), and new uploads only
 * append. So when a hot row of the snapshot has been rolled away, the reader
 * takes a fresh view, whose first `size` bytes are the same, and carries on.
 * A read past the end of the view also takes a fresh view: the file may have
 * grown since it was opened, and the kernel may already know the new size.
 *
 * Segments written in another schema version than the partition's merged
 * schema are converted block by block (evolve.h) as they are read: each open
 * file keeps a cursor (the converted block that holds the last offset read
 * and where the next block starts), so a sequential read converts each block
 * once. A view whose partition's schema changed (a new version merged) is not
 * taken: an open file keeps the file as it was (its end included) while it
 * can; if a hot row it still needs was rolled meanwhile, reads fail with EIO.
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
#include "battlefs/evolve.h"
#include "battlefs/log.h"
#include "battlefs/names.h"
#include "battlefs/store.h"

struct view {
    atomic_int refs;
    struct bfs_dataset_view v;
    uint64_t *start; /* start[i]: file offset of segment i */
    uint64_t groups; /* upload commits before the view was taken */
};

/* Where the conversion of a segment stands: the converted block that starts
 * at out_off of the segment's converted bytes, and the stored offset of the
 * block after it. */
struct cursor {
    struct view *w; /* a reference (NULL: none) */
    size_t seg;
    uint64_t in_off;  /* stored offset of the next block */
    uint64_t out_off; /* converted offset of blk */
    struct bfs_buf blk, in, scratch;
};

struct bfs_reader {
    struct bfs_reader_deps d; /* a copy of bfs_reader_open's */
    char table[BFS_NAME_MAX + 1];
    char period[BFS_NAME_MAX + 1];
    char dataset[BFS_NAME_MAX + 1];
    char what[3 * BFS_NAME_MAX + 16]; /* "table/period/dataset", for messages */
    pthread_mutex_t lock;             /* guards cur and size */
    struct view *cur;
    uint64_t size;       /* the size of cur: reads never go past it */
    pthread_mutex_t cmu; /* guards cursor; taken before lock, never under it */
    struct cursor cursor;
};

static void view_put(struct view *w)
{
    if (w && atomic_fetch_sub(&w->refs, 1) == 1) {
        bfs_dataset_view_free(&w->v);
        free(w->start);
        free(w);
    }
}

/* The conversion of segment s of view v into v's merged schema: a reference
 * (bfs_conv_unref). */
static int seg_conv(const struct bfs_reader_deps *d, const struct bfs_dataset_view *v,
                    const struct bfs_segment *s, struct bfs_conv **out, struct bfs_err *err)
{
    const struct bfs_schema_text *t = NULL;
    for (size_t i = 0; i < v->n_schemas && !t; i++)
        if (v->schemas[i].id == s->schema_id)
            t = &v->schemas[i];
    if (!t)
        return bfs_err_set(err, -EIO, "no text for schema %lld", (long long)s->schema_id);
    return bfs_conv_get(d->convs, t->json, t->len, v->part.schema_json, v->part.schema_len,
                        v->part.codec, v->part.sync, out, err);
}

static int read_cold(const struct bfs_reader_deps *d, const char *what, const struct bfs_segment *s,
                     uint64_t in_seg, char *dst, size_t n);

/* Read n stored bytes at off of segment s. */
static int read_stored(const struct bfs_reader_deps *d, const char *what,
                       const struct bfs_segment *s, uint64_t off, void *dst, size_t n)
{
    if (s->kind == BFS_SEG_HOT)
        return bfs_catalog_read_hot(d->cat, s->id, off, dst, n);
    return read_cold(d, what, s, off, dst, n);
}

/* Convert the stored block of s at *in_off into out (replacing it) and move
 * *in_off past it. in and scratch: the caller's buffers. */
static int convert_next(const struct bfs_reader_deps *d, const char *what,
                        const struct bfs_segment *s, const struct bfs_conv *conv, uint64_t *in_off,
                        struct bfs_buf *in, struct bfs_buf *scratch, struct bfs_buf *out)
{
    struct bfs_err err = {0};
    uint64_t left = s->length - *in_off;
    size_t head = left < 20 ? (size_t)left : 20; /* two varints at most */
    bfs_buf_reset(in);
    int rc = bfs_buf_reserve(in, head);
    if (rc == 0)
        rc = read_stored(d, what, s, *in_off, in->data, head);
    if (rc < 0)
        return rc;
    size_t span;
    rc = bfs_ocf_block_span(in->data, head, &span);
    if (rc == 0 && span > left)
        rc = -EINVAL;
    if (rc < 0) {
        bfs_error("read of %s: block at stored byte %llu of a segment is corrupt", what,
                  (unsigned long long)*in_off);
        return -EIO;
    }
    if ((rc = bfs_buf_reserve(in, span)) < 0)
        return rc;
    if (span > head &&
        (rc = read_stored(d, what, s, *in_off + head, in->data + head, span - head)) < 0)
        return rc;
    bfs_buf_reset(out);
    rc = bfs_conv_block(conv, in->data, span, out, scratch, &err);
    if (rc < 0) {
        bfs_error("read of %s: converting the block at stored byte %llu: %s", what,
                  (unsigned long long)*in_off, err.msg[0] ? err.msg : strerror(-rc));
        return rc == -ENOMEM ? rc : -EIO;
    }
    *in_off += span;
    return 0;
}

/* Measure the converted length of every segment of v whose length is not
 * known, and memoise them. */
static int measure(const struct bfs_reader_deps *d, const char *what, struct bfs_dataset_view *v)
{
    struct bfs_conv_memo *memo = calloc(v->unknown, sizeof *memo);
    if (!memo)
        return -ENOMEM;
    struct bfs_buf in = {0}, scratch = {0}, out = {0};
    size_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < v->n && rc == 0; i++) {
        struct bfs_segment *s = &v->seg[i];
        if (s->vknown)
            continue;
        struct bfs_conv *conv;
        struct bfs_err err = {0};
        rc = seg_conv(d, v, s, &conv, &err);
        if (rc < 0) {
            bfs_error("read of %s: %s", what, err.msg[0] ? err.msg : strerror(-rc));
            rc = -EIO;
            break;
        }
        uint64_t in_off = 0, vlen = 0;
        while (rc == 0 && in_off < s->length) {
            rc = convert_next(d, what, s, conv, &in_off, &in, &scratch, &out);
            vlen += out.len;
        }
        bfs_conv_unref(conv);
        if (rc < 0)
            break;
        s->vlength = vlen;
        s->vknown = 1;
        v->size += vlen;
        v->unknown--;
        memo[k++] = (struct bfs_conv_memo){s->kind, s->row, v->part.schema_id, vlen};
    }
    bfs_buf_free(&in);
    bfs_buf_free(&scratch);
    bfs_buf_free(&out);
    /* A memo lost (a full disk) is measured again next time. */
    if (rc == 0 && k > 0) {
        int e = bfs_catalog_conv_memo(d->cat, memo, k);
        if (e < 0)
            bfs_warn("read of %s: memoising converted lengths: %s", what, strerror(-e));
    }
    free(memo);
    return rc;
}

/* Drop the segments of v from its first hot row not packed yet: the file as
 * it was before that row (hot rows are last, in commit order). */
static void view_cut(struct bfs_dataset_view *v)
{
    size_t i = 0;
    while (i < v->n && !v->seg[i].stored)
        i++;
    for (size_t j = i; j < v->n; j++) {
        struct bfs_segment *s = &v->seg[j];
        if (s->vknown)
            v->size -= s->vlength;
        else
            v->unknown--;
        free(s->key);
        s->key = NULL;
    }
    v->n = i;
    v->stored = 0;
}

/* A view of v's dataset with every hot row packed: the rows it holds that
 * are not are packed (d->pack) and the view taken again. *cut: rows kept
 * coming (a dataset uploaded to without pause), so the view ends before the
 * first unpacked one. */
static int packed_view(const struct bfs_reader_deps *d, const char *table, const char *period,
                       const char *dataset, struct bfs_dataset_view *v, int *cut)
{
    for (int attempt = 0;; attempt++) {
        int rc = bfs_catalog_dataset(d->cat, table, period, dataset, v);
        if (rc < 0 || v->stored == 0 || !d->pack)
            return rc;
        if (attempt == 3) {
            view_cut(v);
            *cut = 1;
            return v->n == 0 ? (bfs_dataset_view_free(v), -ENOENT) : 0;
        }
        int64_t *ids = malloc(v->stored * sizeof *ids);
        size_t k = 0;
        for (size_t i = 0; ids && i < v->n; i++)
            if (v->seg[i].stored)
                ids[k++] = v->seg[i].id;
        bfs_dataset_view_free(v);
        rc = ids ? d->pack(d->pack_arg, ids, k) : -ENOMEM;
        free(ids);
        if (rc < 0) {
            bfs_error("read of %s/%s/%s: packing its hot rows: %s", table, period, dataset,
                      strerror(-rc));
            return rc == -ENOMEM ? rc : -EIO;
        }
    }
}

/* A view of the dataset, every length known, every hot row packed. */
static int dataset_view(const struct bfs_reader_deps *d, const char *table, const char *period,
                        const char *dataset, struct bfs_dataset_view *v, int *cut)
{
    char what[3 * BFS_NAME_MAX + 16];
    snprintf(what, sizeof what, "%s/%s/%s", table, period, dataset);
    /* A segment gone while it is measured (a hot row rolled, an archive a
     * compaction deleted): a fresh view names where its bytes are now. */
    for (int attempt = 0;; attempt++) {
        int rc = packed_view(d, table, period, dataset, v, cut);
        if (rc < 0 || v->unknown == 0)
            return rc;
        rc = measure(d, what, v);
        if (rc == 0)
            return 0;
        bfs_dataset_view_free(v);
        if (rc != -ENOENT)
            return rc;
        if (attempt == 1 && d->refresh)
            d->refresh(d->refresh_arg);
        if (attempt == 3) {
            bfs_error("read of %s: a segment to convert is missing from the store", what);
            return -EIO;
        }
    }
}

int bfs_reader_stat(const struct bfs_reader_deps *deps, const char *table, const char *period,
                    const char *dataset, uint64_t *size, int64_t *mtime)
{
    int rc = bfs_catalog_dataset_stat(deps->cat, table, period, dataset, size, mtime);
    if (rc != -EAGAIN)
        return rc;
    struct bfs_dataset_view v;
    int cut = 0;
    rc = dataset_view(deps, table, period, dataset, &v, &cut);
    if (rc < 0)
        return rc;
    *size = v.size;
    *mtime = v.mtime;
    bfs_dataset_view_free(&v);
    return 0;
}

static int view_load(struct bfs_reader *r, struct view **out)
{
    struct view *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    /* Read before the snapshot: any upload committed after it changes this. */
    w->groups = bfs_catalog_commit_groups(r->d.cat);
    int cut = 0;
    int rc = dataset_view(&r->d, r->table, r->period, r->dataset, &w->v, &cut);
    if (rc < 0) {
        free(w);
        return rc;
    }
    if (cut) /* a read past its end looks again */
        w->groups = UINT64_MAX;
    w->start = malloc((w->v.n + 1) * sizeof *w->start);
    if (!w->start) {
        bfs_dataset_view_free(&w->v);
        free(w);
        return -ENOMEM;
    }
    uint64_t pos = w->v.part.header_len;
    for (size_t i = 0; i < w->v.n; i++) {
        w->start[i] = pos;
        pos += w->v.seg[i].vlength;
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
    snprintf(r->what, sizeof r->what, "%s/%s/%s", table, period, dataset);
    int rc = view_load(r, &r->cur);
    if (rc < 0) {
        free(r);
        return rc;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->cmu, NULL);
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
    view_put(r->cursor.w);
    bfs_buf_free(&r->cursor.blk);
    bfs_buf_free(&r->cursor.in);
    bfs_buf_free(&r->cursor.scratch);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->cmu);
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

/* Replace the view `old` by a fresh one (a roll moved some of its hot rows, or a
 * compaction retired an archive it names). */
static int view_refresh(struct bfs_reader *r, struct view *old)
{
    struct view *w;
    int rc = view_load(r, &w);
    if (rc < 0)
        return rc;
    if (w->v.part.schema_id != old->v.part.schema_id) {
        /* A version was merged: the file is another one now. */
        view_put(w);
        return -ESTALE;
    }
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

static int read_cold(const struct bfs_reader_deps *d, const char *what, const struct bfs_segment *s,
                     uint64_t in_seg, char *dst, size_t n)
{
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
        if (rc == -ENOENT)
            return rc; /* deleted by a compaction: the caller takes a new view */
        if (rc < 0) {
            bfs_error("read of %s: %s bytes %llu-%llu: %s", what, s->key,
                      (unsigned long long)want_off, (unsigned long long)(want_off + want_len - 1),
                      strerror(-rc));
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
    if (rc < 0 && rc != -ESTALE) /* ESTALE: the file as opened ends here */
        return rc;
    *end = bfs_reader_size(r);
    return 0;
}

/* Read n converted bytes at in_seg of segment i of view w, through the
 * reader's cursor. */
static int read_converted(struct bfs_reader *r, struct view *w, size_t i, uint64_t in_seg,
                          char *dst, size_t n)
{
    const struct bfs_segment *s = &w->v.seg[i];
    pthread_mutex_lock(&r->cmu);
    struct cursor *c = &r->cursor;
    int rc = 0;
    struct bfs_conv *conv = NULL;
    if (c->w != w || c->seg != i || in_seg < c->out_off) {
        view_put(c->w);
        atomic_fetch_add(&w->refs, 1);
        c->w = w;
        c->seg = i;
        c->in_off = c->out_off = 0;
        bfs_buf_reset(&c->blk);
    }
    while (n > 0) {
        if (in_seg < c->out_off + c->blk.len) {
            size_t k = (size_t)(c->out_off + c->blk.len - in_seg);
            if (k > n)
                k = n;
            memcpy(dst, c->blk.data + (in_seg - c->out_off), k);
            dst += k;
            n -= k;
            in_seg += k;
            continue;
        }
        if (c->in_off >= s->length) {
            bfs_error("read of %s: converted segment ends before its length", r->what);
            rc = -EIO;
            break;
        }
        if (!conv) {
            struct bfs_err err = {0};
            rc = seg_conv(&r->d, &w->v, s, &conv, &err);
            if (rc < 0) {
                bfs_error("read of %s: %s", r->what, err.msg[0] ? err.msg : strerror(-rc));
                rc = -EIO;
                break;
            }
        }
        c->out_off += c->blk.len;
        rc = convert_next(&r->d, r->what, s, conv, &c->in_off, &c->in, &c->scratch, &c->blk);
        if (rc < 0) {
            /* Start over next time. */
            view_put(c->w);
            c->w = NULL;
            break;
        }
    }
    bfs_conv_unref(conv);
    pthread_mutex_unlock(&r->cmu);
    return rc;
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
        size_t n = (size_t)(s->vlength - in_seg < size - done ? s->vlength - in_seg : size - done);
        if (s->schema_id != w->v.part.schema_id)
            rc = read_converted(r, w, i, in_seg, buf + done, n);
        else if (s->kind == BFS_SEG_HOT)
            rc = bfs_catalog_read_hot(r->d.cat, s->id, in_seg, buf + done, n);
        else
            rc = read_cold(&r->d, r->what, s, in_seg, buf + done, n);
        /* A hot row a roll moved, or a cold archive a compaction retired
         * and deleted after gc_grace: the file's bytes are the same in a
         * fresh view (dataset files only grow), so read on from it. */
        if (rc == -ENOENT && refreshes < 5) {
            refreshes++;
            /* Twice missing from a fresh view: this mount has not read the
             * compaction that deleted it yet. */
            if (refreshes == 2 && s->kind == BFS_SEG_COLD && r->d.refresh)
                r->d.refresh(r->d.refresh_arg);
            rc = view_refresh(r, w);
            view_put(w);
            if (rc < 0)
                return rc == -ESTALE ? -EIO : rc;
            continue;
        }
        if (rc == -ENOENT && s->kind == BFS_SEG_COLD)
            bfs_error("%s: archive %s is missing from the store (and from no newer view)", r->what,
                      s->key);
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
