/* store.c - store URLs, key rules, and dispatch to the backends.
 *
 * Counting of store_* stats happens in the backends (each knows when a
 * request really went out and how many bytes came back); store.c hands the
 * stats pointer to the opened store and times the successful GETs and PUTs
 * of every backend into its latency histograms (the dispatch below).
 */
#include "battlefs/store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "battlefs/fsutil.h"
#include "battlefs/log.h"
#include "battlefs/metrics.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"

#define COMPONENT_MAX 255u

static int is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* Check the components of s[0..n): each non-empty, not "." or "..", at most
 * COMPONENT_MAX bytes, no control characters, not a temporary file's name.
 * With partial_last, the last component (after the last '/') is a name filter:
 * it may be empty, "." or "..". */
static int check_components(const char *s, size_t n, int partial_last)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '/') {
            if (is_ctl((unsigned char)s[i]))
                return -EINVAL;
            continue;
        }
        const char *c = s + start;
        size_t len = i - start;
        int last = i == n;
        if (!(last && partial_last)) {
            if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
                return -EINVAL;
        }
        if (len > COMPONENT_MAX)
            return -EINVAL;
        size_t tl = strlen(BFS_STORE_TEMP_PREFIX);
        if (len >= tl && memcmp(c, BFS_STORE_TEMP_PREFIX, tl) == 0)
            return -EINVAL;
        start = i + 1;
    }
    return 0;
}

int bfs_store_key_check(const char *key)
{
    if (!key)
        return -EINVAL;
    size_t n = strlen(key);
    if (n == 0 || n > BFS_STORE_KEY_MAX || key[0] == '/' || key[n - 1] == '/')
        return -EINVAL;
    return check_components(key, n, 0);
}

int bfs_store_prefix_check(const char *prefix)
{
    if (!prefix)
        return -EINVAL;
    size_t n = strlen(prefix);
    if (n == 0)
        return 0;
    if (n > BFS_STORE_KEY_MAX || prefix[0] == '/')
        return -EINVAL;
    return check_components(prefix, n, 1);
}

int bfs_store_is_temp_name(const char *name)
{
    return strncmp(name, BFS_STORE_TEMP_PREFIX, strlen(BFS_STORE_TEMP_PREFIX)) == 0;
}

int bfs_store_etag_check(const char *etag)
{
    if (!etag || !etag[0])
        return -EINVAL;
    size_t n = 0;
    for (const char *p = etag; *p; p++, n++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x21 || c > 0x7e || c == '"' || c == '\\' || n + 1 >= BFS_STORE_ETAG_MAX)
            return -EINVAL;
    }
    return 0;
}

/* ---- URLs ------------------------------------------------------------- */

int bfs_store_bucket_check(const char *b, size_t n)
{
    if (!b || n < 3 || n > 63)
        return -EINVAL;
    int all_digits_dots = 1, dots = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && ch != '.' && ch != '-')
            return -EINVAL;
        if ((i == 0 || i == n - 1) && !alnum)
            return -EINVAL;
        if (i > 0 && (ch == '.' || ch == '-') && (b[i - 1] == '.' || b[i - 1] == '-') &&
            !(ch == '-' && b[i - 1] == '-'))
            return -EINVAL; /* "..", ".-", "-." ("--" is allowed) */
        if (ch == '.')
            dots++;
        else if (!(ch >= '0' && ch <= '9'))
            all_digits_dots = 0;
    }
    if (all_digits_dots && dots == 3)
        return -EINVAL; /* formatted as an IPv4 address */
    return 0;
}

void bfs_store_url_free(struct bfs_store_url *u)
{
    if (!u)
        return;
    free(u->path);
    free(u->bucket);
    free(u->prefix);
    memset(u, 0, sizeof *u);
}

static int parse_file(const char *rest, struct bfs_store_url *out, struct bfs_err *err)
{
    /* RFC 8089: file:///path or file://localhost/path; no other host. */
    if (strncasecmp(rest, "localhost/", 10) == 0)
        rest += 9;
    if (rest[0] != '/') {
        return bfs_err_set(
            err, -EINVAL,
            "file:// store needs an absolute path, as in file:///abs/dir (three slashes)");
    }
    size_t n = strlen(rest);
    for (size_t i = 0; i < n; i++)
        if (is_ctl((unsigned char)rest[i]))
            return bfs_err_set(err, -EINVAL, "file:// store path contains a control character");
    while (n > 1 && rest[n - 1] == '/')
        n--;
    out->scheme = BFS_STORE_FILE;
    out->path = strndup(rest, n);
    if (!out->path)
        return bfs_err_set(err, -ENOMEM, "out of memory");
    return 0;
}

static int parse_s3(const char *rest, struct bfs_store_url *out, struct bfs_err *err)
{
    const char *slash = strchr(rest, '/');
    size_t bl = slash ? (size_t)(slash - rest) : strlen(rest);
    if (bfs_store_bucket_check(rest, bl) < 0) {
        return bfs_err_set(
            err, -EINVAL,
            "bad S3 bucket name \"%.*s\": 3-63 characters of a-z, 0-9, '.' and '-', "
            "starting and ending with a letter or digit, no \"..\", not an IP address",
            (int)(bl > 63 ? 63 : bl), rest);
    }
    const char *p = slash ? slash + 1 : "";
    size_t pl = strlen(p);
    while (pl && p[pl - 1] == '/')
        pl--;
    char *prefix = strndup(p, pl);
    if (!prefix)
        return bfs_err_set(err, -ENOMEM, "out of memory");
    if (pl && bfs_store_key_check(prefix) < 0) {
        bfs_err_set(err, -EINVAL,
                    "bad S3 prefix \"%s\": no leading or double '/', no \".\" or \"..\" parts, no "
                    "control characters, at most %u bytes",
                    prefix, BFS_STORE_KEY_MAX);
        free(prefix);
        return -EINVAL;
    }
    out->scheme = BFS_STORE_S3;
    out->prefix = prefix;
    out->bucket = strndup(rest, bl);
    if (!out->bucket)
        return bfs_err_set(err, -ENOMEM, "out of memory");
    return 0;
}

int bfs_store_parse_url(const char *url, struct bfs_store_url *out, struct bfs_err *err)
{
    assert(out);
    memset(out, 0, sizeof *out);
    bfs_err_clear(err);
    if (!url || !url[0]) {
        return bfs_err_set(err, -EINVAL,
                           "empty store URL (use file:///abs/dir or s3://bucket[/prefix])");
    }
    int rc;
    if (strncasecmp(url, "file://", 7) == 0) {
        rc = parse_file(url + 7, out, err);
    } else if (strncasecmp(url, "s3://", 5) == 0) {
        rc = parse_s3(url + 5, out, err);
    } else {
        rc = bfs_err_set(err, -EINVAL,
                         "unsupported store URL (use file:///abs/dir or s3://bucket[/prefix])");
    }
    if (rc < 0)
        bfs_store_url_free(out);
    return rc;
}

/* ---- open / close ----------------------------------------------------- */

int bfs_store_open(const char *url, const struct bfs_store_opts *opts, struct bfs_stats *stats,
                   struct bfs_store **out, struct bfs_err *err)
{
    assert(out);
    *out = NULL;
    struct bfs_store_url u;
    int rc = bfs_store_parse_url(url, &u, err);
    if (rc < 0)
        return rc;
    struct bfs_store *st = NULL;
    if (u.scheme == BFS_STORE_FILE) {
        rc = bfs_store_file_open(u.path, &st);
        if (rc < 0)
            bfs_err_set(err, rc, "store directory %s: %s", u.path, strerror(-rc));
    } else {
        rc = bfs_store_s3_open(u.bucket, u.prefix, opts, &st, err);
        if (rc < 0 && err && !err->msg[0])
            bfs_err_set(err, rc, "s3://%s: %s", u.bucket, strerror(-rc));
    }
    bfs_store_url_free(&u);
    if (rc < 0)
        return rc;
    assert(st && st->ops);
    st->stats = stats;
    *out = st;
    return 0;
}

void bfs_store_close(struct bfs_store *st)
{
    if (!st)
        return;
    st->ops->destroy(st);
}

/* ---- timed dispatch ---------------------------------------------------- */

int bfs_store_put_src(struct bfs_store *st, const char *key, const struct bfs_put_src *src,
                      struct bfs_err *err)
{
    bfs_err_clear(err);
    /* never let a store that ignores the condition overwrite */
    if (src && src->cond != BFS_PUT_ALWAYS && !st->conditional)
        return bfs_store_result(err, -ENOTSUP);
    double t = bfs_metrics_now();
    int rc = st->ops->put(st, key, src, err);
    if (rc == 0 && st->stats)
        bfs_hist_observe(&st->stats->store_put_seconds, bfs_metrics_now() - t);
    return bfs_store_result(err, rc);
}

int bfs_store_put_bytes(struct bfs_store *st, const char *work_dir, const char *tag,
                        const char *key, const void *data, size_t len,
                        const struct bfs_put_src *how, struct bfs_err *err)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s-%ld.tmp", work_dir, tag, (long)gettid());
    if (n < 0 || (size_t)n >= sizeof path)
        return bfs_err_set(err, -ENAMETOOLONG, "work directory name too long: %s", work_dir);
    /* O_TRUNC: replaces a file a crash left */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return bfs_err_set(err, -errno, "write %s: %s", path, strerror(errno));
    int rc = bfs_write_all(fd, data, len);
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0) {
        unlink(path);
        return bfs_err_set(err, rc, "write %s: %s", path, strerror(-rc));
    }
    struct bfs_put_src src = how ? *how : (struct bfs_put_src){0};
    src.path = path;
    src.may_link = 0;
    src.sha256 = NULL;
    src.md5 = NULL;
    rc = bfs_store_put_src(st, key, &src, err);
    unlink(path);
    return rc;
}

int bfs_store_get(struct bfs_store *st, const char *key, size_t max, void **data, size_t *len,
                  char *etag, struct bfs_err *err)
{
    bfs_err_clear(err);
    if (!st->ops->get)
        return bfs_store_result(err, -ENOTSUP);
    double t = bfs_metrics_now();
    int rc = st->ops->get(st, key, max, data, len, etag, err);
    if (rc == 0 && st->stats)
        bfs_hist_observe(&st->stats->store_get_seconds, bfs_metrics_now() - t);
    return bfs_store_result(err, rc);
}

int bfs_store_get_range(struct bfs_store *st, const char *key, uint64_t off, uint64_t len,
                        void *buf, struct bfs_err *err)
{
    bfs_err_clear(err);
    double t = bfs_metrics_now();
    int rc = st->ops->get_range(st, key, off, len, buf, err);
    if (rc == 0 && len > 0 && st->stats) /* a get_range of 0 bytes does no request */
        bfs_hist_observe(&st->stats->store_get_seconds, bfs_metrics_now() - t);
    return bfs_store_result(err, rc);
}

int bfs_store_fetch(struct bfs_store *st, const char *key, uint64_t size, void *buf, size_t chunk,
                    int fd, uint8_t sha256[32], struct bfs_err *err)
{
    struct bfs_sha256 h;
    int rc = sha256 ? bfs_sha256_init(&h) : 0;
    if (rc < 0)
        return bfs_err_set(err, rc, "SHA-256: %s", strerror(-rc));
    for (uint64_t off = 0; rc == 0 && off < size;) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        rc = bfs_store_get_range(st, key, off, n, buf, err);
        if (rc < 0) {
            bfs_err_prefix(err, "bytes [%llu, %llu)", (unsigned long long)off,
                           (unsigned long long)(off + n));
            break;
        }
        if (sha256)
            bfs_sha256_update(&h, buf, n);
        if (fd >= 0 && (rc = bfs_write_all(fd, buf, n)) < 0)
            bfs_err_set(err, rc, "write: %s", strerror(-rc));
        off += n;
    }
    if (sha256 && rc == 0 && (rc = bfs_sha256_final(&h, sha256)) < 0)
        bfs_err_set(err, rc, "SHA-256: %s", strerror(-rc));
    else if (sha256 && rc < 0)
        bfs_sha256_discard(&h);
    return rc;
}
