/* rewrite.c - copy a partition's live segments into new archives, one
 * contiguous range per dataset (rewrite.h is the contract).
 *
 * One dataset at a time, in two passes over its segments:
 *
 *  1. Gather. The segments of the dataset are taken from `next` and checked
 *     (source index, range inside the source object, datasets in increasing
 *     byte order). A segment whose source is in the target schema is only
 *     recorded: its output is its stored bytes, so its length is known. A
 *     segment in another schema is converted now, block by block, exactly as
 *     the reader converts it (bfs_conv_get of (source schema, target schema,
 *     codec, target sync), then bfs_conv_block per block), into a staging
 *     file in work_dir: its converted length must be known before the dataset
 *     is placed. The segments' descriptors go to a spool (SPOOL_MEM in
 *     memory, the rest in a file), so memory does not grow with the number of
 *     segments of a dataset.
 *  2. Place and write. The dataset's output length is now known: if it does
 *     not fit what is left of the open archive (which holds a segment
 *     already), that archive is closed first, so a dataset that fits an empty
 *     archive is never split. Then each segment is appended, closing the
 *     archive before a segment that would make it exceed archive_max_bytes
 *     (unless it holds no segment yet): only a dataset larger than an empty
 *     archive is split, at segment boundaries. Copied segments are walked
 *     block by block (bfs_ocf_block_span) and each block's sync marker must
 *     be the target's; the bytes go to the archive as they are.
 *
 * Reading: each source has a read-ahead window (at most BFS_RW_WINDOW bytes,
 * BFS_RW_READAHEAD_MAX / n_sources when there are many, at least
 * MIN_WINDOW, and always at least the block asked for). A read inside the
 * window is served from it; otherwise the window is refilled starting at the
 * bytes asked for (what it already holds of them is kept, the rest fetched
 * with one ranged GET up to the window's size or the end of the object). As
 * datasets are visited in byte order and every archive holds its datasets in
 * that order, each source is read front to back. Windows are allocated when
 * first used; when the windows together would hold more than
 * BFS_RW_READAHEAD_MAX (more than that many / MIN_WINDOW sources), the least
 * recently used window is dropped.
 *
 * Writing: the archive's bytes go through one OUT_CHUNK buffer to the file
 * (created O_EXCL, never truncated, not fsynced) and into its SHA-256. The
 * index rows of the open archive are spooled like the segments (SPOOL_MEM in
 * memory, the rest in a file) and handed to `index` after `archive`.
 * Temporary files (the spools, the staging of converted bytes) are unlinked
 * as soon as they are created: nothing of them outlives the call, even a
 * crash.
 */
#include "battlefs/rewrite.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/evolve.h"
#include "battlefs/fsutil.h"
#include "battlefs/log.h"
#include "battlefs/names.h"
#include "battlefs/sha256.h"
#include "battlefs/store.h"

#define MIN_WINDOW (64u << 10) /* the smallest read-ahead window of a source */
#define OUT_CHUNK  (1u << 20)  /* the output buffer */
#define SPOOL_MEM  1024u       /* records of a spool kept in memory; the rest go to its file */
#define BLOCK_HEAD 20u         /* a block's two varints, at most */

/* A list of fixed-size records: the first SPOOL_MEM in memory, the others
 * in a temporary file (made when first needed, unlinked at once). */
struct spool {
    const char *suffix; /* of its file's name: "<name>.<suffix>" */
    size_t elem;
    uint8_t *mem;
    size_t n; /* records */
    int fd;   /* -1: none yet */
};

/* One source's read-ahead window: bytes [off, off + len) of the object. */
struct window {
    uint8_t *buf;
    size_t cap, len;
    uint64_t off;
    uint64_t used;         /* tick of its last use (least recently used out) */
    struct bfs_conv *conv; /* the source's conversion, once needed */
};

/* A segment of the current dataset, gathered. */
struct seg {
    size_t source;
    uint64_t start, length, records;
    int64_t uploaded_at;
    int converted;     /* its output is in the staging file at conv_off */
    uint64_t conv_off; /* (converted) */
    uint64_t out_len;  /* its bytes in the output */
};

/* An index row of the open archive. */
struct ixrow {
    char dataset[BFS_NAME_MAX + 1];
    uint64_t start, length, records;
    int64_t uploaded_at;
};

struct rw {
    const struct bfs_rw_job *job;
    struct bfs_rw_stats st;
    struct bfs_err *err;
    /* reading */
    struct window *win;
    size_t wsize;      /* the window size of a source */
    uint64_t wtotal;   /* bytes allocated for windows */
    uint64_t tick;     /* window uses */
    struct bfs_buf cb; /* a converted block */
    struct bfs_buf scratch;
    /* the current dataset */
    char ds[BFS_NAME_MAX + 1];
    struct spool segs;
    int conv_fd;       /* the staging file of converted bytes, or -1 */
    uint64_t conv_len; /* bytes of the current dataset in it */
    /* the open archive */
    int fd; /* -1: none */
    char *path;
    unsigned n; /* archives opened so far */
    uint64_t size;
    uint64_t arch_segs; /* segments in it */
    uint8_t *obuf;
    size_t olen;
    struct bfs_sha256 sha;
    struct spool idx;
    int range_open; /* cur is the open archive's range of the current dataset */
    struct ixrow cur;
};

static int stopped(const struct rw *r)
{
    return r->job->stop && atomic_load(r->job->stop);
}

/* Fail with rc and "what: strerror(rc)". */
static int fail_errno(struct rw *r, int rc, const char *what, const char *path)
{
    return bfs_err_set(r->err, rc, "%s %s: %s", what, path, strerror(-rc));
}

/* ---- temporary files and spools ---- */

/* A new temporary file "<work_dir>/<name>.<suffix>", unlinked at once (a
 * stale one of that name, from a crash between the two, is removed first: it
 * is ours and never a store object). */
static int temp_open(struct rw *r, const char *suffix, int *fd)
{
    char *path;
    if (asprintf(&path, "%s/%s.%s", r->job->work_dir, r->job->name, suffix) < 0)
        return bfs_err_set(r->err, -ENOMEM, "temporary file name");
    if (unlink(path) < 0 && errno != ENOENT) {
        int rc = fail_errno(r, -errno, "remove stale", path);
        free(path);
        return rc;
    }
    *fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc = *fd < 0 ? fail_errno(r, -errno, "create", path) : 0;
    if (rc == 0 && unlink(path) < 0) {
        rc = fail_errno(r, -errno, "remove", path);
        close(*fd);
        *fd = -1;
    }
    free(path);
    return rc;
}

/* pwrite (wr) or pread all n bytes at off: 0 or -errno (-EIO: a short
 * read, the file is shorter than what was written to it). */
static int io_all(int fd, uint8_t *p, size_t n, uint64_t off, int wr)
{
    while (n > 0) {
        ssize_t k = wr ? pwrite(fd, p, n, (off_t)off) : pread(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return -EIO;
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    return io_all(fd, (uint8_t *)(uintptr_t)p, n, off, 1); /* only read from */
}

static int pread_all(int fd, void *p, size_t n, uint64_t off)
{
    return io_all(fd, p, n, off, 0);
}

static int spool_add(struct rw *r, struct spool *s, const void *rec)
{
    if (s->n < SPOOL_MEM) {
        if (!s->mem && !(s->mem = malloc((size_t)SPOOL_MEM * s->elem)))
            return bfs_err_set(r->err, -ENOMEM, "spool of %s", s->suffix);
        memcpy(s->mem + s->n * s->elem, rec, s->elem);
    } else {
        int rc;
        if (s->fd < 0 && (rc = temp_open(r, s->suffix, &s->fd)) < 0)
            return rc;
        if ((rc = pwrite_all(s->fd, rec, s->elem, (uint64_t)(s->n - SPOOL_MEM) * s->elem)) < 0)
            return bfs_err_set(r->err, rc, "write the spool of %s: %s", s->suffix, strerror(-rc));
    }
    s->n++;
    return 0;
}

static int spool_get(struct rw *r, const struct spool *s, size_t i, void *rec)
{
    if (i < SPOOL_MEM) {
        memcpy(rec, s->mem + i * s->elem, s->elem);
        return 0;
    }
    int rc = pread_all(s->fd, rec, s->elem, (uint64_t)(i - SPOOL_MEM) * s->elem);
    if (rc < 0)
        return bfs_err_set(r->err, rc, "read the spool of %s: %s", s->suffix, strerror(-rc));
    return 0;
}

static void spool_free(struct spool *s)
{
    free(s->mem);
    if (s->fd >= 0)
        close(s->fd);
}

/* ---- reading the sources ---- */

/* Drop least recently used windows (not keep's) until `more` bytes fit the
 * read-ahead budget, or no other window is left. */
static void window_evict(struct rw *r, size_t keep, uint64_t more)
{
    while (r->wtotal + more > BFS_RW_READAHEAD_MAX) {
        struct window *lru = NULL;
        for (size_t i = 0; i < r->job->n_sources; i++) {
            struct window *w = &r->win[i];
            if (i != keep && w->buf && (!lru || w->used < lru->used))
                lru = w;
        }
        if (!lru)
            return;
        r->wtotal -= lru->cap;
        free(lru->buf);
        lru->buf = NULL;
        lru->cap = lru->len = 0;
    }
}

/* Bytes [off, off + len) of source i (inside the object: checked by the
 * caller), through its window; *p is valid until the next call. */
static int source_read(struct rw *r, size_t i, uint64_t off, size_t len, const uint8_t **p)
{
    struct window *w = &r->win[i];
    const struct bfs_rw_source *s = &r->job->sources[i];
    w->used = ++r->tick;
    if (w->buf && off >= w->off && off + len <= w->off + w->len) {
        *p = w->buf + (off - w->off);
        return 0;
    }
    uint64_t want = r->wsize > len ? r->wsize : len;
    if (want > s->size - off)
        want = s->size - off; /* >= len */
    size_t keep = 0;
    if (w->buf && off >= w->off && off < w->off + w->len)
        keep = (size_t)(w->off + w->len - off);
    if (want > w->cap) {
        window_evict(r, i, want - w->cap);
        uint8_t *nb = realloc(w->buf, (size_t)want);
        if (!nb)
            return bfs_err_set(r->err, -ENOMEM, "read-ahead of %s", s->key);
        r->wtotal += want - w->cap;
        w->buf = nb;
        w->cap = (size_t)want;
    }
    if (keep > 0)
        memmove(w->buf, w->buf + (off - w->off), keep);
    w->off = off;
    w->len = keep;
    r->st.gets++;
    int rc =
        bfs_store_get_range(r->job->store, s->key, off + keep, want - keep, w->buf + keep, r->err);
    if (rc < 0) {
        w->len = 0;
        unsigned long long a = off + keep, b = off + want - 1;
        if (r->err->msg[0])
            return bfs_err_prefix(r->err, "get %s bytes %llu-%llu", s->key, a, b);
        return bfs_err_set(r->err, rc, "get %s bytes %llu-%llu: %s", s->key, a, b, strerror(-rc));
    }
    w->len = (size_t)want;
    r->st.bytes_read += want - keep;
    *p = w->buf;
    return 0;
}

/* The next whole block of segment g at pos (< its end): *blk, *span. */
static int next_block(struct rw *r, const struct seg *g, uint64_t pos, const uint8_t **blk,
                      size_t *span)
{
    const char *key = r->job->sources[g->source].key;
    uint64_t left = g->start + g->length - pos;
    size_t head = left < BLOCK_HEAD ? (size_t)left : BLOCK_HEAD;
    const uint8_t *p;
    int rc = source_read(r, g->source, pos, head, &p);
    if (rc < 0)
        return rc;
    rc = bfs_ocf_block_span(p, head, span);
    if (rc == -EAGAIN || (rc == 0 && *span > left))
        return bfs_err_set(r->err, -EINVAL,
                           "source %s at byte %llu: not whole blocks (the segment [%llu, %llu) "
                           "ends inside a block)",
                           key, (unsigned long long)pos, (unsigned long long)g->start,
                           (unsigned long long)(g->start + g->length));
    if (rc < 0)
        return bfs_err_set(r->err, -EINVAL, "source %s at byte %llu: not a block", key,
                           (unsigned long long)pos);
    return source_read(r, g->source, pos, *span, blk);
}

/* Call fn for each block of segment g, in order (pos: its offset in the
 * source). */
static int walk_blocks(struct rw *r, struct seg *g,
                       int (*fn)(struct rw *r, struct seg *g, uint64_t pos, const uint8_t *blk,
                                 size_t span))
{
    for (uint64_t pos = g->start; pos < g->start + g->length;) {
        const uint8_t *blk;
        size_t span;
        int rc = next_block(r, g, pos, &blk, &span);
        if (rc == 0)
            rc = fn(r, g, pos, blk, span);
        if (rc < 0)
            return rc;
        pos += span;
    }
    return 0;
}

/* ---- the open archive ---- */

static int out_flush(struct rw *r)
{
    if (r->olen == 0)
        return 0;
    bfs_sha256_update(&r->sha, r->obuf, r->olen);
    int rc = bfs_write_all(r->fd, r->obuf, r->olen);
    if (rc < 0)
        return fail_errno(r, rc, "write", r->path);
    r->olen = 0;
    return 0;
}

static int out_write(struct rw *r, const void *p, size_t n)
{
    int rc;
    if (r->olen + n > OUT_CHUNK && (rc = out_flush(r)) < 0)
        return rc;
    if (n >= OUT_CHUNK) {
        bfs_sha256_update(&r->sha, p, n);
        if ((rc = bfs_write_all(r->fd, p, n)) < 0)
            return fail_errno(r, rc, "write", r->path);
    } else {
        memcpy(r->obuf + r->olen, p, n);
        r->olen += n;
    }
    r->size += n;
    return 0;
}

static int archive_open(struct rw *r)
{
    const struct bfs_rw_job *j = r->job;
    char *path;
    if (asprintf(&path, "%s/%s-%u.avro", j->work_dir, j->name, r->n) < 0)
        return bfs_err_set(r->err, -ENOMEM, "archive path");
    /* Never O_TRUNC: a stale file of that name may be linked into the store. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = fail_errno(r, -errno, "create", path);
        free(path); /* not ours: nothing to remove */
        return rc;
    }
    r->fd = fd;
    r->path = path;
    int rc = bfs_sha256_init(&r->sha);
    if (rc < 0)
        return bfs_err_set(r->err, rc, "SHA-256 of %s: %s", path, strerror(-rc));
    r->n++;
    r->size = 0;
    r->olen = 0;
    r->arch_segs = 0;
    r->range_open = 0;
    return out_write(r, j->header, j->header_len);
}

/* The current dataset's range in the open archive is complete. */
static int range_close(struct rw *r)
{
    if (!r->range_open)
        return 0;
    r->range_open = 0;
    return spool_add(r, &r->idx, &r->cur);
}

/* Close the open archive, hand it to `archive`, then its rows to `index`. */
static int archive_close(struct rw *r)
{
    const struct bfs_rw_job *j = r->job;
    int rc = range_close(r);
    if (rc == 0)
        rc = out_flush(r);
    if (close(r->fd) < 0 && rc == 0)
        rc = fail_errno(r, -errno, "close", r->path);
    r->fd = -1;
    struct bfs_rw_archive a = {
        .n = r->n - 1, .path = r->path, .size = r->size, .header_length = j->header_len};
    int hrc = bfs_sha256_final(&r->sha, a.sha256);
    if (rc < 0)
        return rc; /* r->path is still ours: removed by the caller */
    if (hrc < 0)
        return bfs_err_set(r->err, hrc, "SHA-256 of %s: %s", r->path, strerror(-hrc));
    /* From here on the file is the caller's, whatever archive answers. */
    char *path = r->path;
    r->path = NULL;
    rc = j->archive(j->ctx, &a);
    if (rc == 0) {
        r->st.archives++;
        r->st.bytes_written += a.size;
    }
    for (size_t i = 0; i < r->idx.n && rc == 0; i++) {
        struct ixrow x;
        if ((rc = spool_get(r, &r->idx, i, &x)) < 0)
            break;
        struct bfs_rw_index e = {.dataset = x.dataset,
                                 .start = x.start,
                                 .length = x.length,
                                 .records = x.records,
                                 .uploaded_at = x.uploaded_at};
        if ((rc = j->index(j->ctx, &e)) == 0)
            r->st.datasets++;
        else if (r->err->code == 0) /* else the callback said why */
            bfs_err_set(r->err, rc < 0 ? rc : -EIO, "the index callback refused %s of %s: %s",
                        x.dataset, path, strerror(rc < 0 ? -rc : EIO));
    }
    if (rc != 0 && r->err->code == 0) /* else the callback said why */
        bfs_err_set(r->err, rc < 0 ? rc : -EIO, "the archive callback refused %s: %s", path,
                    strerror(rc < 0 ? -rc : EIO));
    r->idx.n = 0;
    free(path);
    return rc;
}

/* ---- one dataset ---- */

/* Convert one block of segment g to the end of the staging file. */
static int convert_block(struct rw *r, struct seg *g, uint64_t pos, const uint8_t *blk, size_t span)
{
    bfs_buf_reset(&r->cb);
    int rc = bfs_conv_block(r->win[g->source].conv, blk, span, &r->cb, &r->scratch, r->err);
    if (rc < 0)
        return bfs_err_prefix(r->err, "source %s at byte %llu: converting the block",
                              r->job->sources[g->source].key, (unsigned long long)pos);
    if ((rc = pwrite_all(r->conv_fd, r->cb.data, r->cb.len, r->conv_len)) < 0)
        return bfs_err_set(r->err, rc, "write converted bytes to %s: %s", r->job->work_dir,
                           strerror(-rc));
    r->conv_len += r->cb.len;
    g->out_len += r->cb.len;
    return 0;
}

/* Check the sync marker of one block of segment g and append the block. */
static int copy_block(struct rw *r, struct seg *g, uint64_t pos, const uint8_t *blk, size_t span)
{
    const struct bfs_rw_job *j = r->job;
    if (memcmp(blk + span - 16, j->sync, 16) != 0)
        return bfs_err_set(r->err, -EINVAL,
                           "source %s at byte %llu: the block's sync marker is not the "
                           "partition's (schema %lld)",
                           j->sources[g->source].key, (unsigned long long)pos,
                           (long long)j->schema_id);
    return out_write(r, blk, span);
}

/* Convert segment g into the staging file (g->conv_off, g->out_len). */
static int convert_segment(struct rw *r, struct seg *g)
{
    const struct bfs_rw_job *j = r->job;
    const struct bfs_rw_source *s = &j->sources[g->source];
    struct window *w = &r->win[g->source];
    int rc;
    if (!w->conv) {
        rc = bfs_conv_get(j->convs, s->schema_json, s->schema_len, j->schema_json, j->schema_len,
                          j->codec, j->sync, &w->conv, r->err);
        if (rc < 0) {
            w->conv = NULL;
            return bfs_err_prefix(r->err, "source %s: schema %lld does not convert", s->key,
                                  (long long)s->schema_id);
        }
    }
    if (r->conv_fd < 0 && (rc = temp_open(r, "conv.tmp", &r->conv_fd)) < 0)
        return rc;
    g->converted = 1;
    g->conv_off = r->conv_len;
    g->out_len = 0;
    if ((rc = walk_blocks(r, g, convert_block)) < 0)
        return rc;
    r->st.converted++;
    return 0;
}

/* Append segment g's bytes to the open archive. */
static int write_segment(struct rw *r, struct seg *g)
{
    const struct bfs_rw_job *j = r->job;
    int rc;
    if (g->converted) {
        uint64_t off = g->conv_off, left = g->out_len;
        while (left > 0) {
            if (r->olen == OUT_CHUNK && (rc = out_flush(r)) < 0)
                return rc;
            size_t k = OUT_CHUNK - r->olen;
            if (k > left)
                k = (size_t)left;
            if ((rc = pread_all(r->conv_fd, r->obuf + r->olen, k, off)) < 0)
                return bfs_err_set(r->err, rc, "read converted bytes back from %s: %s", j->work_dir,
                                   strerror(-rc));
            r->olen += k;
            r->size += k;
            off += k;
            left -= k;
        }
        return 0;
    }
    return walk_blocks(r, g, copy_block);
}

/* Check the segment x handed by next and add it to the current dataset. */
static int gather(struct rw *r, const struct bfs_rw_segment *x, uint64_t *out_len)
{
    const struct bfs_rw_job *j = r->job;
    if (x->source >= j->n_sources)
        return bfs_err_set(r->err, -EINVAL, "dataset %s: segment of source %zu (of %zu)", r->ds,
                           x->source, j->n_sources);
    const struct bfs_rw_source *s = &j->sources[x->source];
    if (x->start > s->size || x->length > s->size - x->start)
        return bfs_err_set(r->err, -EINVAL,
                           "source %s at byte %llu: the segment [%llu, +%llu) of %s is outside "
                           "the object (%llu bytes)",
                           s->key, (unsigned long long)x->start, (unsigned long long)x->start,
                           (unsigned long long)x->length, r->ds, (unsigned long long)s->size);
    struct seg g = {.source = x->source,
                    .start = x->start,
                    .length = x->length,
                    .records = x->records,
                    .uploaded_at = x->uploaded_at,
                    .out_len = x->length};
    int rc;
    if (s->schema_id != j->schema_id && x->length > 0 && (rc = convert_segment(r, &g)) < 0)
        return rc;
    *out_len = g.out_len;
    return spool_add(r, &r->segs, &g);
}

/* Write the gathered dataset (total: its output bytes). */
static int place(struct rw *r, uint64_t total)
{
    const struct bfs_rw_job *j = r->job;
    int rc;
    /* A dataset that does not fit what is left starts a new archive. */
    if (r->fd >= 0 && r->arch_segs > 0 &&
        (r->size > j->archive_max_bytes || total > j->archive_max_bytes - r->size) &&
        (rc = archive_close(r)) != 0)
        return rc;
    for (size_t i = 0; i < r->segs.n; i++) {
        if (stopped(r))
            return bfs_err_set(r->err, -ECANCELED, "stopped");
        struct seg g;
        if ((rc = spool_get(r, &r->segs, i, &g)) < 0)
            return rc;
        /* Split only a dataset larger than an empty archive, between segments. */
        if (r->fd >= 0 && r->arch_segs > 0 && r->size + g.out_len > j->archive_max_bytes &&
            (rc = archive_close(r)) != 0)
            return rc;
        if (r->fd < 0 && (rc = archive_open(r)) < 0)
            return rc;
        if (!r->range_open) {
            memset(&r->cur, 0, sizeof r->cur);
            memcpy(r->cur.dataset, r->ds, sizeof r->cur.dataset);
            r->cur.start = r->size;
            r->cur.uploaded_at = g.uploaded_at;
            r->range_open = 1;
        }
        if ((rc = write_segment(r, &g)) < 0)
            return rc;
        r->cur.length += g.out_len;
        r->cur.records += g.records;
        if (g.uploaded_at > r->cur.uploaded_at)
            r->cur.uploaded_at = g.uploaded_at;
        r->arch_segs++;
        r->st.segments++;
    }
    return range_close(r);
}

static int next_segment(struct rw *r, struct bfs_rw_segment *x)
{
    memset(x, 0, sizeof *x);
    int rc = r->job->next(r->job->ctx, x);
    if (rc < 0 && r->err->code == 0) /* else the callback said why */
        return bfs_err_set(r->err, rc, "next segment: %s", strerror(-rc));
    if (rc < 0)
        return rc;
    if (rc > 0 && (!x->dataset || !bfs_name_valid(x->dataset, strlen(x->dataset))))
        return bfs_err_set(r->err, -EINVAL, "a segment of no valid dataset name");
    return rc > 0 ? 1 : 0;
}

static int run(struct rw *r)
{
    struct bfs_rw_segment x;
    int more = next_segment(r, &x), rc = 0;
    while (more > 0) {
        snprintf(r->ds, sizeof r->ds, "%s", x.dataset);
        r->segs.n = 0;
        if (r->conv_len > 0 && ftruncate(r->conv_fd, 0) < 0)
            return bfs_err_set(r->err, -errno, "truncate the staging file: %s", strerror(errno));
        r->conv_len = 0;
        uint64_t total = 0;
        for (;;) {
            if (stopped(r))
                return bfs_err_set(r->err, -ECANCELED, "stopped");
            uint64_t len = 0;
            if ((rc = gather(r, &x, &len)) < 0)
                return rc;
            total += len;
            if ((more = next_segment(r, &x)) <= 0)
                break;
            int cmp = strcmp(x.dataset, r->ds);
            if (cmp < 0)
                return bfs_err_set(r->err, -EINVAL,
                                   "segments out of order: dataset %s after %s (or twice)",
                                   x.dataset, r->ds);
            if (cmp > 0)
                break;
        }
        if (more < 0)
            return more;
        if ((rc = place(r, total)) != 0)
            return rc;
    }
    if (more < 0)
        return more;
    if (r->fd >= 0)
        return archive_close(r);
    return 0;
}

int bfs_rewrite(const struct bfs_rw_job *job, struct bfs_rw_stats *st, struct bfs_err *err)
{
    struct bfs_err local = {0};
    bfs_err_clear(err);
    if (!err)
        err = &local;
    if (!job || !job->store || !job->header || job->header_len == 0 || !job->work_dir ||
        !job->name || !job->next || !job->archive || !job->index || job->archive_max_bytes == 0 ||
        (job->n_sources > 0 && !job->sources) || !job->schema_json)
        return bfs_err_set(err, -EINVAL, "incomplete rewrite job");
    struct rw r = {.job = job, .err = err, .conv_fd = -1, .fd = -1};
    r.segs = (struct spool){.suffix = "segs.tmp", .elem = sizeof(struct seg), .fd = -1};
    r.idx = (struct spool){.suffix = "index.tmp", .elem = sizeof(struct ixrow), .fd = -1};
    r.wsize = BFS_RW_WINDOW;
    if (job->n_sources > 0 && BFS_RW_READAHEAD_MAX / job->n_sources < r.wsize)
        r.wsize = BFS_RW_READAHEAD_MAX / job->n_sources;
    if (r.wsize < MIN_WINDOW)
        r.wsize = MIN_WINDOW;
    int rc = 0;
    r.win = calloc(job->n_sources ? job->n_sources : 1, sizeof *r.win);
    r.obuf = malloc(OUT_CHUNK);
    if (!r.win || !r.obuf)
        rc = bfs_err_set(err, -ENOMEM, "rewrite buffers");
    if (rc == 0)
        rc = run(&r);
    if (rc != 0 && err->code == 0)
        bfs_err_set(err, rc < 0 ? rc : -EIO, "%s", strerror(rc < 0 ? -rc : EIO));
    if (r.fd >= 0) {
        close(r.fd);
        bfs_sha256_discard(&r.sha);
    }
    /* Only on failure (a closed archive's path is the caller's): the caller
     * learns of the failure, not of a file left over, so that is logged. */
    if (r.path && unlink(r.path) < 0 && errno != ENOENT)
        bfs_warn("rewrite: cannot remove %s: %s", r.path, strerror(errno));
    free(r.path);
    for (size_t i = 0; r.win && i < job->n_sources; i++) {
        free(r.win[i].buf);
        bfs_conv_unref(r.win[i].conv);
    }
    free(r.win);
    free(r.obuf);
    bfs_buf_free(&r.cb);
    bfs_buf_free(&r.scratch);
    spool_free(&r.segs);
    spool_free(&r.idx);
    if (r.conv_fd >= 0)
        close(r.conv_fd);
    if (st)
        *st = r.st;
    return rc;
}
