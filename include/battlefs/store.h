/* store.h - the remote store: a small vtable, backends file:// and s3://.
 *
 * Keys are relative to the store's root (the file:// directory or the s3://
 * bucket/prefix), '/'-separated, e.g. "battle/2025-12-18/20251218T130000Z-1-0.avro".
 * Every operation is safe to call from several threads at once.
 *
 * Key rules (bfs_store_key_check, shared by all backends): 1..1024 bytes; no
 * leading or trailing '/', no empty component ("a//b"), no "." or ".."
 * component, components of at most 255 bytes, no control characters (bytes
 * below 0x20 and 0x7f), no component starting with ".bfs-tmp-" (reserved for
 * the file:// backend's temporary files).
 *
 * Counting: each backend adds to st->stats (when not NULL) after a successful
 * operation only: put -> store_put_requests + 1, store_put_bytes + file size
 * (whether the bytes were copied, sent or the file linked);
 * get_range -> store_get_requests + 1, store_get_bytes + len (the bytes
 * actually fetched). A get_range of len 0 does no I/O and counts nothing.
 *
 * Errors are negative errno. Backends do not log failures at WARN/ERROR
 * level on their own behalf where the caller reports them (file://); the
 * caller (roller, reader) logs one line with the key and strerror(-rc).
 */
#ifndef BATTLEFS_STORE_H
#define BATTLEFS_STORE_H

#include <stddef.h>
#include <stdint.h>

struct bfs_stats;
struct bfs_store;

/* What a put uploads: a local regular file, and what the caller knows of it. */
struct bfs_put_src {
    const char *path;      /* the local file */
    const uint8_t *sha256; /* its SHA-256 (32 bytes) if known, else NULL. s3:// then sends it
                            * as x-amz-content-sha256 instead of reading the file once more
                            * to compute it (a wrong one makes S3 refuse the PUT) */
    int may_link;          /* nonzero: the file will not change again and the caller removes
                            * it after the put, so the store may take the file itself
                            * instead of a copy (file:// hard-links it when it can) */
};

struct bfs_store_ops {
    /* Upload src->path under key, atomically (readers see all or nothing) and,
     * on success, durably. Putting an existing key replaces it (a repeated put
     * of the same bytes is harmless). file://: -EROFS, -ENOSPC, -EACCES,
     * -EDQUOT pass through. */
    int (*put)(struct bfs_store *st, const char *key, const struct bfs_put_src *src);
    /* Read exactly len bytes at off of key into buf. -ENOENT no such key,
     * -EIO (short, wrong range, transport), -ETIMEDOUT. Never partial. */
    int (*get_range)(struct bfs_store *st, const char *key, uint64_t off, uint64_t len, void *buf);
    /* Call cb for every key starting with prefix (any order). A non-zero
     * return of cb stops the walk and is returned. */
    int (*list)(struct bfs_store *st, const char *prefix,
                int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx);
    /* Delete key; deleting a key that does not exist is not an error (as S3). */
    int (*del)(struct bfs_store *st, const char *key);
    /* Remove what a killed daemon's puts left behind (file://: temporary
     * files) if older than age seconds. The number removed or -errno. NULL:
     * nothing to clean (s3://: a PUT is one request, nothing stays). */
    int (*clean)(struct bfs_store *st, uint64_t age);
    void (*destroy)(struct bfs_store *st);
};

struct bfs_store {
    const struct bfs_store_ops *ops;
    struct bfs_stats *stats; /* store_get_* / store_put_* are counted here; may be NULL */
    char *url;               /* as given, for messages (no secrets) */
    int put_wants_sha256;    /* put uses the file's SHA-256: a caller that can compute it
                              * cheaply (while writing the file) should pass it */
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

static inline int bfs_store_put_src(struct bfs_store *st, const char *key,
                                    const struct bfs_put_src *src)
{
    return st->ops->put(st, key, src);
}
/* What bfs_store_ops.clean says, or 0 for a store that needs no cleaning. */
static inline int bfs_store_clean(struct bfs_store *st, uint64_t age)
{
    return st->ops->clean ? st->ops->clean(st, age) : 0;
}
/* A put of path with nothing known: no digest, never linked (the file is copied). */
static inline int bfs_store_put(struct bfs_store *st, const char *key, const char *path)
{
    const struct bfs_put_src src = {.path = path, .sha256 = NULL, .may_link = 0};
    return st->ops->put(st, key, &src);
}
static inline int bfs_store_get_range(struct bfs_store *st, const char *key, uint64_t off,
                                      uint64_t len, void *buf)
{
    return st->ops->get_range(st, key, off, len, buf);
}
static inline int bfs_store_list(struct bfs_store *st, const char *prefix,
                                 int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx)
{
    return st->ops->list(st, prefix, cb, ctx);
}
static inline int bfs_store_del(struct bfs_store *st, const char *key)
{
    return st->ops->del(st, key);
}

/* Why the calling thread's most recent failed store operation failed, as the
 * backend knows it (s3://: "HTTP 403 SignatureDoesNotMatch: ..." and the
 * attempts made), or "" if the backend said nothing more than the errno.
 * Per thread, like errno; never contains a secret. */
const char *bfs_store_last_error(void);
/* For backends: record the detail of a failure (fmt NULL: clear it). */
void bfs_store_set_last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A parsed store URL (bfs_store_parse_url). */
enum bfs_store_scheme {
    BFS_STORE_FILE = 1,
    BFS_STORE_S3 = 2,
};
struct bfs_store_url {
    enum bfs_store_scheme scheme;
    char *path;   /* file: the absolute directory, without trailing '/' ("/" stays "/") */
    char *bucket; /* s3: the bucket */
    char *prefix; /* s3: "" or "a/b" (no leading, trailing or double '/') */
};

/* Parse url without opening anything:
 *   file:///abs/dir (also file://localhost/abs/dir): the path is taken literally
 *     (no %-decoding); trailing '/' are dropped; no control characters.
 *   s3://bucket[/prefix]: the bucket follows the S3 naming rules
 *     (bfs_store_bucket_check); the prefix follows the key rules, trailing '/'
 *     are dropped ("s3://b/" is the empty prefix).
 * 0 (free with bfs_store_url_free), -EINVAL with msg set, -ENOMEM. */
int bfs_store_parse_url(const char *url, struct bfs_store_url *out, char *msg, size_t msglen);
void bfs_store_url_free(struct bfs_store_url *u);

/* 0 if b[0..n) is a valid S3 bucket name, else -EINVAL: the one rule of
 * bfs_store_parse_url and the S3 backend (bfs_store_s3_open). AWS's naming
 * rules: 3-63 characters of a-z, 0-9, '.' and '-'; the first and last a letter
 * or digit; no "..", and no ".-" or "-." (each '.'-separated label starts and
 * ends with a letter or digit); not formatted as an IPv4 address (a.b.c.d of
 * digits). b need not be NUL-terminated. */
int bfs_store_bucket_check(const char *b, size_t n);
/* 0 if key follows the key rules above, else -EINVAL. */
int bfs_store_key_check(const char *key);
/* 0 if prefix may be listed, else -EINVAL: "" (everything), or a string whose
 * '/'-terminated components follow the key rules (its last, partial component
 * is only a name filter, e.g. "battle/2025-" matches "battle/2025-12-18/..."). */
int bfs_store_prefix_check(const char *prefix);
/* 1 if name (one path component) is a file:// temporary file, else 0. */
int bfs_store_is_temp_name(const char *name);
#define BFS_STORE_TEMP_PREFIX ".bfs-tmp-"
#define BFS_STORE_KEY_MAX     1024u

/* Backends (store.c dispatches on the scheme). */
int bfs_store_file_open(const char *dir, struct bfs_store **out);
int bfs_store_s3_open(const char *bucket, const char *prefix, const struct bfs_store_opts *opts,
                      struct bfs_store **out, char *msg, size_t msglen);

#endif
