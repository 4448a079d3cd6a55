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
 * (whether the bytes were copied, sent or the file linked, and for a
 * conditional put that found its bytes already there);
 * get_range and get -> store_get_requests + 1, store_get_bytes + the bytes
 * actually fetched. A get_range of len 0 does no I/O and counts nothing; head
 * counts nothing.
 *
 * Conditional writes (bfs_put_src.cond; both backends, st->conditional):
 *   BFS_PUT_CREATE  create-only (S3 "If-None-Match: *"): the put succeeds only
 *       if the key does not exist. If it does, and holds exactly the bytes of
 *       this put, the put succeeds too (the retry of a put whose first attempt
 *       landed, or a second writer of the same bytes); if it holds other bytes
 *       the put fails with -EEXIST, leaves the object alone and logs an ERROR.
 *   BFS_PUT_MATCH   compare-and-swap (S3 "If-Match: <etag>"): the put succeeds
 *       only if the object exists and its ETag is src->if_match; -ENOENT if
 *       the key does not exist, -ESTALE if its ETag is another. It also
 *       succeeds if the object already holds exactly this put's bytes (for the
 *       same reason as above), so the bytes of a compare-and-swap object must
 *       say who wrote them and when (a lease names its holder and a sequence
 *       number): two writers must never mean the same bytes differently.
 * An ETag is an opaque string of at most BFS_STORE_ETAG_MAX - 1 printable
 * bytes, without the quotes of HTTP. Both backends report the lower-case hex
 * MD5 of the content for what they store with put (file:// always; S3 for a
 * single-part PUT without SSE-KMS or SSE-C, i.e. every battlefs put), so a
 * writer can know the ETag of what it wrote (etag_out says it anyway).
 *
 * Errors are negative errno. Every operation also takes a struct bfs_err *err
 * (err.h; NULL: the errno is enough): on failure it holds the same code and,
 * when the backend knows more than the errno, the detail (s3://: "HTTP 403
 * SignatureDoesNotMatch: ... (1 attempt, 0.0 s)"), else an empty msg; on
 * success it is cleared. The detail never contains a secret. The callers
 * (roller, battlefs-store) put it in their message; the inline wrappers below
 * set err's code, so a backend sets only what it has to say.
 * Backends do not log failures at WARN/ERROR level on their own behalf where
 * the caller reports them (file://); the caller (roller, reader) logs one line
 * with the key and strerror(-rc). The s3:// backend logs each request that
 * failed after its retries (method, key, HTTP status, request id, attempts).
 * And a create-only put that finds other bytes under its key logs an ERROR in
 * every backend (two writers disagree about one object: never routine).
 */
#ifndef BATTLEFS_STORE_H
#define BATTLEFS_STORE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "battlefs/err.h"

struct bfs_stats;
struct bfs_store;

#define BFS_STORE_ETAG_MAX 128u /* an ETag and its NUL */

/* The condition of a put (see "Conditional writes" above). */
enum bfs_put_cond {
    BFS_PUT_ALWAYS = 0, /* replace whatever is there: the plain put */
    BFS_PUT_CREATE = 1, /* only if the key does not exist (If-None-Match: *) */
    BFS_PUT_MATCH = 2,  /* only if the object's ETag is if_match (If-Match) */
};

/* What a put uploads: a local regular file, and what the caller knows of it.
 * Fields after may_link are for conditional puts; zero (the default of a
 * designated initializer) is the plain put. */
struct bfs_put_src {
    const char *path;       /* the local file */
    const uint8_t *sha256;  /* its SHA-256 (32 bytes) if known, else NULL. s3:// then sends it
                             * as x-amz-content-sha256 instead of reading the file once more
                             * to compute it (a wrong one makes S3 refuse the PUT) */
    int may_link;           /* nonzero: the file will not change again and the caller removes
                             * it after the put, so the store may take the file itself
                             * instead of a copy (file:// hard-links it when it can) */
    enum bfs_put_cond cond; /* BFS_PUT_ALWAYS (0), BFS_PUT_CREATE or BFS_PUT_MATCH */
    const char *if_match;   /* BFS_PUT_MATCH: the ETag the object must have (unquoted) */
    const uint8_t *md5;     /* the file's MD5 (16 bytes) if known, else NULL: a conditional put
                             * that finds an object there computes it to compare */
    char *etag_out;         /* if not NULL: on success, the object's ETag now
                             * (BFS_STORE_ETAG_MAX bytes; "" if the store did not say) */
    int race_ok;            /* BFS_PUT_CREATE: another writer's bytes under the key are a
                             * routine outcome (the store's log: two writers race for one
                             * position), so -EEXIST is logged at DEBUG, not ERROR */
};

/* What head says of an object. */
struct bfs_store_head {
    uint64_t size;
    char etag[BFS_STORE_ETAG_MAX]; /* unquoted; "" if the store sent none */
};

/* The most a get may be asked to hold (get is for small objects: leases,
 * manifests). */
#define BFS_STORE_GET_MAX (64u << 20)

struct bfs_store_ops {
    /* Upload src->path under key, atomically (readers see all or nothing) and,
     * on success, durably. Putting an existing key replaces it (a repeated put
     * of the same bytes is harmless), unless src->cond says otherwise: then
     * also -EEXIST, -ESTALE, -ENOENT as above. file://: -EROFS, -ENOSPC,
     * -EACCES, -EDQUOT pass through. */
    int (*put)(struct bfs_store *st, const char *key, const struct bfs_put_src *src,
               struct bfs_err *err);
    /* Read exactly len bytes at off of key into buf. -ENOENT no such key,
     * -EIO (short, wrong range, transport), -ETIMEDOUT. Never partial. */
    int (*get_range)(struct bfs_store *st, const char *key, uint64_t off, uint64_t len, void *buf,
                     struct bfs_err *err);
    /* Call cb for every key starting with prefix (any order). A non-zero
     * return of cb stops the walk and is returned. */
    int (*list)(struct bfs_store *st, const char *prefix,
                int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx,
                struct bfs_err *err);
    /* Delete key; deleting a key that does not exist is not an error (as S3). */
    int (*del)(struct bfs_store *st, const char *key, struct bfs_err *err);
    /* Remove what a killed daemon's puts left behind (file://: temporary
     * files) if older than age seconds. The number removed or -errno. NULL:
     * nothing to clean (s3://: a PUT is one request, nothing stays). */
    int (*clean)(struct bfs_store *st, uint64_t age, struct bfs_err *err);
    void (*destroy)(struct bfs_store *st);
    /* The size and ETag of key: 0, -ENOENT no such key, -EIO, -ETIMEDOUT.
     * NULL: not supported (bfs_store_head answers -ENOTSUP). */
    int (*head)(struct bfs_store *st, const char *key, struct bfs_store_head *out,
                struct bfs_err *err);
    /* The whole of key, at most max (<= BFS_STORE_GET_MAX) bytes, in a new
     * buffer (*data, free() it; *len bytes), and, if etag is not NULL, its
     * ETag (BFS_STORE_ETAG_MAX bytes): the bytes and the ETag are of one
     * version of the object (one request), which is what a compare-and-swap
     * needs. -ENOENT, -EFBIG (larger than max), -EIO, -ETIMEDOUT.
     * NULL: not supported (bfs_store_get answers -ENOTSUP). */
    int (*get)(struct bfs_store *st, const char *key, size_t max, void **data, size_t *len,
               char *etag, struct bfs_err *err);
    /* Call cb for every key that starts with prefix and sorts strictly after
     * start_after (bytewise, as strcmp and S3's ListObjectsV2 start-after; NULL
     * or "" = from the first key), in ascending bytewise order, stopping after
     * max_keys calls when max_keys > 0. A non-zero return of cb stops the walk
     * and is returned. Both prefix and start_after follow bfs_store_prefix_check
     * (start_after need not exist: a key, or "dir/", "dir/2025-"). 0, -EINVAL
     * (bad prefix or start_after), -EIO (s3://: also a listing out of order),
     * -ETIMEDOUT, with err; file:// also the errno of its walk (-EACCES, -ENOMEM).
     * For a reader that picks up what is new since the last key it read: s3://
     * sends start-after and asks for no page once max_keys keys came; file://
     * walks the directory of the prefix (as list) and sorts what sorts after.
     * NULL: not supported (bfs_store_list_after answers -ENOTSUP). */
    int (*list_after)(struct bfs_store *st, const char *prefix, const char *start_after,
                      unsigned max_keys, int (*cb)(void *ctx, const char *key, uint64_t size),
                      void *ctx, struct bfs_err *err);
};

struct bfs_store {
    const struct bfs_store_ops *ops;
    struct bfs_stats *stats; /* store_get_* / store_put_* are counted here; may be NULL */
    char *url;               /* as given, for messages (no secrets) */
    int put_wants_sha256;    /* put uses the file's SHA-256: a caller that can compute it
                              * cheaply (while writing the file) should pass it */
    int conditional;         /* put honours bfs_put_src.cond (else a conditional put
                              * fails with -ENOTSUP before reaching the backend) */
};

struct bfs_store_opts {
    const char *endpoint; /* s3: -o endpoint, NULL = environment / AWS default */
    const char *region;   /* s3: -o region, NULL = environment / us-east-1 */
    unsigned timeout_s;   /* s3: bound on one request's total time (0 = default) */
};

/* Open the store named by url ("file:///abs/dir" or "s3://bucket[/prefix]").
 * 0, or -EINVAL (bad url), -errno, with err saying what is wrong. */
int bfs_store_open(const char *url, const struct bfs_store_opts *opts, struct bfs_stats *stats,
                   struct bfs_store **out, struct bfs_err *err);
void bfs_store_close(struct bfs_store *st);

/* What an operation returned, into err: its code on failure (a backend may
 * have said more in msg), cleared on success. Returns rc. */
static inline int bfs_store_result(struct bfs_err *err, int rc)
{
    if (err) {
        if (rc < 0)
            err->code = rc;
        else
            bfs_err_clear(err);
    }
    return rc;
}

/* The dispatch of put, get and get_range is in store.c: it also times each
 * successful request into st->stats' latency histograms (every backend is
 * measured the same way: the request, retries included). */
int bfs_store_put_src(struct bfs_store *st, const char *key, const struct bfs_put_src *src,
                      struct bfs_err *err);
static inline int bfs_store_head(struct bfs_store *st, const char *key, struct bfs_store_head *out,
                                 struct bfs_err *err)
{
    bfs_err_clear(err);
    return bfs_store_result(err, st->ops->head ? st->ops->head(st, key, out, err) : -ENOTSUP);
}
/* Put len bytes from memory as key: they go through a temporary file of
 * work_dir, "<tag>-<thread id>.tmp" (removed afterwards; one left by a kill
 * is replaced by the thread's next put, and its owner removes the rest). how gives the condition,
 * if_match, race_ok and etag_out (NULL: an unconditional put); its path,
 * may_link, sha256 and md5 are ignored. Small objects only (leases, log
 * entries, schemas). Returns what bfs_store_put_src returns. */
int bfs_store_put_bytes(struct bfs_store *st, const char *work_dir, const char *tag,
                        const char *key, const void *data, size_t len,
                        const struct bfs_put_src *how, struct bfs_err *err);
int bfs_store_get(struct bfs_store *st, const char *key, size_t max, void **data, size_t *len,
                  char *etag, struct bfs_err *err);
/* Read the first size bytes of key in ranged GETs of at most chunk bytes
 * through buf (chunk bytes), writing them to fd (-1: nowhere) and hashing
 * them into sha256 (NULL: not hashed): memory does not grow with the object.
 * 0, or -errno with err ("bytes [a, b): <the store's reason>", or "write:
 * ..."). */
int bfs_store_fetch(struct bfs_store *st, const char *key, uint64_t size, void *buf, size_t chunk,
                    int fd, uint8_t sha256[32], struct bfs_err *err);
/* What bfs_store_ops.clean says, or 0 for a store that needs no cleaning. */
static inline int bfs_store_clean(struct bfs_store *st, uint64_t age, struct bfs_err *err)
{
    bfs_err_clear(err);
    return bfs_store_result(err, st->ops->clean ? st->ops->clean(st, age, err) : 0);
}
/* A put of path with nothing known: no digest, never linked (the file is copied). */
static inline int bfs_store_put(struct bfs_store *st, const char *key, const char *path,
                                struct bfs_err *err)
{
    const struct bfs_put_src src = {.path = path, .sha256 = NULL, .may_link = 0};
    return bfs_store_put_src(st, key, &src, err);
}
int bfs_store_get_range(struct bfs_store *st, const char *key, uint64_t off, uint64_t len,
                        void *buf, struct bfs_err *err);
static inline int bfs_store_list(struct bfs_store *st, const char *prefix,
                                 int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx,
                                 struct bfs_err *err)
{
    bfs_err_clear(err);
    return bfs_store_result(err, st->ops->list(st, prefix, cb, ctx, err));
}
static inline int bfs_store_list_after(struct bfs_store *st, const char *prefix,
                                       const char *start_after, unsigned max_keys,
                                       int (*cb)(void *ctx, const char *key, uint64_t size),
                                       void *ctx, struct bfs_err *err)
{
    bfs_err_clear(err);
    return bfs_store_result(err, st->ops->list_after ? st->ops->list_after(st, prefix, start_after,
                                                                           max_keys, cb, ctx, err)
                                                     : -ENOTSUP);
}
static inline int bfs_store_del(struct bfs_store *st, const char *key, struct bfs_err *err)
{
    bfs_err_clear(err);
    return bfs_store_result(err, st->ops->del(st, key, err));
}

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
 * 0 (free with bfs_store_url_free), -EINVAL or -ENOMEM with err set. */
int bfs_store_parse_url(const char *url, struct bfs_store_url *out, struct bfs_err *err);
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
/* 0 if etag may be sent as a condition (1..BFS_STORE_ETAG_MAX-1 bytes of
 * printable ASCII without '"' or '\\'), else -EINVAL. */
int bfs_store_etag_check(const char *etag);
#define BFS_STORE_TEMP_PREFIX ".bfs-tmp-"
#define BFS_STORE_KEY_MAX     1024u

/* Backends (store.c dispatches on the scheme). */
int bfs_store_file_open(const char *dir, struct bfs_store **out);
int bfs_store_s3_open(const char *bucket, const char *prefix, const struct bfs_store_opts *opts,
                      struct bfs_store **out, struct bfs_err *err);

#endif
