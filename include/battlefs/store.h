/* store.h - the remote store: a small vtable, backends file:// and s3://.
 *
 * Keys are relative to the store's root (the file:// directory or the s3://
 * bucket/prefix), '/'-separated, e.g. "battle/2025-12-18/20251218T130000Z-1-0.avro".
 * Every operation is safe to call from several threads at once.
 */
#ifndef BATTLEFS_STORE_H
#define BATTLEFS_STORE_H

#include <stddef.h>
#include <stdint.h>

struct bfs_stats;
struct bfs_store;

struct bfs_store_ops {
    /* Upload the local file under key, atomically (readers see all or nothing). */
    int (*put)(struct bfs_store *st, const char *key, const char *local_path);
    /* Read exactly len bytes at off of key into buf. -ENOENT no such key,
     * -EIO (short, wrong range, transport), -ETIMEDOUT. Never partial. */
    int (*get_range)(struct bfs_store *st, const char *key, uint64_t off, uint64_t len,
                     void *buf);
    /* Call cb for every key starting with prefix (any order). */
    int (*list)(struct bfs_store *st, const char *prefix,
                int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx);
    int (*del)(struct bfs_store *st, const char *key);
    void (*destroy)(struct bfs_store *st);
};

struct bfs_store {
    const struct bfs_store_ops *ops;
    struct bfs_stats *stats; /* store_get_* / store_put_* are counted here; may be NULL */
    char *url;               /* as given, for messages (no secrets) */
};

struct bfs_store_opts {
    const char *endpoint; /* s3: -o endpoint, NULL = environment / AWS default */
    const char *region;   /* s3: -o region, NULL = environment / us-east-1 */
    unsigned timeout_s;   /* s3: bound on one request's total time (0 = default) */
};

/* Open the store named by url ("file:///abs/dir" or "s3://bucket[/prefix]").
 * 0 or -EINVAL (bad url, msg set), -errno. */
int bfs_store_open(const char *url, const struct bfs_store_opts *opts, struct bfs_stats *stats,
                   struct bfs_store **out, char *msg, size_t msglen);
void bfs_store_close(struct bfs_store *st);

static inline int bfs_store_put(struct bfs_store *st, const char *key, const char *path)
{
    return st->ops->put(st, key, path);
}
static inline int bfs_store_get_range(struct bfs_store *st, const char *key, uint64_t off,
                                      uint64_t len, void *buf)
{
    return st->ops->get_range(st, key, off, len, buf);
}

/* Backends (store.c dispatches on the scheme). */
int bfs_store_file_open(const char *dir, struct bfs_store **out);
int bfs_store_s3_open(const char *bucket, const char *prefix, const struct bfs_store_opts *opts,
                      struct bfs_store **out, char *msg, size_t msglen);

#endif
