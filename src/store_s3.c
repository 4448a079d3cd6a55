/* store_s3.c - the s3:// store: S3-compatible object storage over libcurl.
 *
 * Requests are signed by libcurl (CURLOPT_AWS_SIGV4, "aws:amz:<region>:s3").
 * libcurl 7.88 does not add x-amz-content-sha256 by itself, so every request
 * carries it: the SHA-256 of the PUT body (the caller's, when it passes one,
 * else computed by streaming the file before the upload), or of the empty
 * string otherwise; curl then signs it.
 *
 * Addressing: path-style (<endpoint>/<bucket>/<key>) when an endpoint is given
 * (-o endpoint, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), virtual-host style
 * (https://<bucket>.s3.<region>.amazonaws.com/<key>) for AWS itself.
 *
 * Robustness: easy handles are kept in a LIFO pool (each keeps its live
 * connections across curl_easy_reset), DNS and TLS sessions are shared.
 * Every request has a deadline (opts->timeout_s, default 30 s; a PUT gets one
 * more second per MiB of body); inside it, 5xx, 429, 408, 409
 * ConditionalRequestConflict (AWS: a concurrent conditional write; "retry")
 * and transport errors are retried with exponential backoff and full jitter,
 * at most S3_MAX_ATTEMPTS times. Other 4xx are final.
 *
 * Conditional puts (store.h) send "If-None-Match: *" or "If-Match: \"<etag>\""
 * (signed like every header curl sends). 412 PreconditionFailed is then not
 * the end: a HEAD says what the key holds now, and if it is exactly this
 * put's bytes the put succeeded (typically our own earlier attempt landed and
 * its answer was lost: a 503, a timeout, a dropped connection; the retry got
 * the 412). "Exactly": the same size and an ETag equal to the local file's
 * MD5 (S3's ETag of a single-part PUT without SSE-KMS/SSE-C: AWS, R2, MinIO,
 * s3rver). An ETag of the form of an MD5 (32 hex digits) is taken for one,
 * so another such ETag means other bytes; an ETag of another form (multipart:
 * "<hex>-<parts>") with the same size is settled by reading the object back
 * and comparing the bytes, and so is every ETag once this store answered a
 * conditional PUT with an ETag that is not the body's MD5 (SSE-KMS, SSE-C:
 * the retry of such a put is typically not the first put of a daemon). Other
 * bytes:
 * create-only fails with -EEXIST and an ERROR line, CAS with -ESTALE (a
 * routine outcome, logged at DEBUG). A CAS of a missing key is -ENOENT (AWS
 * answers 404 NoSuchKey; stores that answer 412 get the same through the
 * HEAD).
 *
 * Listing: ListObjectsV2 (list-type=2) pages, following NextContinuationToken.
 * list_after sends start-after=<store prefix><start_after> with every page,
 * max-keys no larger than the keys still wanted (no page is asked for once
 * max_keys were delivered), and checks that the keys ascend strictly: its
 * caller resumes from the last key it saw, so one out of order is -EIO.
 *
 * Secrets: the secret key is only handed to libcurl; it and the Authorization
 * header never reach a log line (nothing here logs request headers).
 */
#include "battlefs/store.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/log.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"

#define S3_DEFAULT_TIMEOUT_S  30u
#define S3_CONNECT_TIMEOUT_MS 10000L
#define S3_LOW_SPEED_TIME_S   15L
#define S3_MAX_ATTEMPTS       5u
#define S3_BACKOFF_BASE_MS    200u
#define S3_BACKOFF_CAP_MS     5000u
#define S3_POOL_MAX           16u
#define S3_ERRBODY_MAX        (16u * 1024u)
#define S3_LIST_BODY_MAX      (32u * 1024u * 1024u)
#define S3_LIST_MAX_PAGES     1000000u
#define S3_LIST_PAGE_KEYS     1000u /* S3's page when max-keys is not sent */
#define S3_COMPARE_CHUNK      (8u * 1024u * 1024u)
/* Statuses a request's caller handles itself: no ERROR line for them. */
#define S3_QUIET_404 1u
#define S3_QUIET_412 2u
/* SHA-256 of the empty string: the payload hash of GET, DELETE and LIST. */
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_store {
    struct bfs_store base;
    char *bucket;
    char *prefix;   /* "" or "dir/sub/" */
    char *base_url; /* ends with '/': the object key follows */
    char *list_url; /* the bucket's URL for ListObjectsV2 ("<endpoint>/<bucket>" path-style) */
    char *region;
    char *sigv4;            /* "aws:amz:<region>:s3" */
    char *access_key;       /* AWS_ACCESS_KEY_ID */
    char *secret_key;       /* AWS_SECRET_ACCESS_KEY: only ever passed to libcurl */
    char *token_header;     /* "x-amz-security-token: ..." or NULL */
    unsigned timeout_s;     /* deadline of one operation, retries included */
    unsigned list_max_keys; /* 0 = server default (1000) */
    CURLSH *share;
    pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_lock;
    CURL *idle[S3_POOL_MAX];
    size_t n_idle;
    atomic_int etags_not_md5; /* a PUT was answered with an ETag that is not its body's MD5 */
};

/* One logical request (retried as a whole). */
struct s3_req {
    struct s3_store *st;
    const char *method; /* "GET", "PUT", "DELETE", "HEAD" */
    const char *what;   /* for log lines: the key, or "list <prefix>" */
    char *url;
    char range[64]; /* "bytes=a-b" or "" */
    /* ranged GET sink */
    uint8_t *dst;
    uint64_t dst_off, dst_len, dst_got;
    /* whole-body sink (LIST, get) */
    struct bfs_buf *body;
    size_t body_max; /* bound of body; 0: S3_LIST_BODY_MAX (a listing page) */
    /* conditional PUT: "If-None-Match: *" / "If-Match: \"<etag>\"", or "" */
    char cond_header[BFS_STORE_ETAG_MAX + 16];
    unsigned quiet; /* S3_QUIET_*: statuses the caller reports */
    /* PUT source */
    int fd;
    uint64_t put_size, put_pos;
    int put_errno;
    int put_shrank;
    char sha_hex[65];
    /* per attempt: response state */
    long status;
    struct bfs_buf errbody;
    int errbody_full;
    char content_range[128];
    char request_id[96];
    char etag[BFS_STORE_ETAG_MAX]; /* the answer's ETag, unquoted, or "" */
    int etag_long;                 /* the answer's ETag did not fit */
    char content_length[24];       /* the answer's Content-Length (HEAD), or "" */
    char err_code[64];             /* <Code> of the last error answer, "" if none */
    int bad_status;                /* a 2xx we did not ask for (200 to a Range): aborted */
    int overflow;                  /* more body than asked for: aborted */
    char curl_err[CURL_ERROR_SIZE];
};

static pthread_once_t s3_once = PTHREAD_ONCE_INIT;
static CURLcode s3_global_rc = CURLE_FAILED_INIT;

static void s3_global_init(void)
{
    s3_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    int rc = clock_gettime(CLOCK_MONOTONIC, &ts);
    assert(rc == 0);
    (void)rc;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000u), .tv_nsec = (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static uint64_t random_u64(void)
{
    uint64_t r;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) == (ssize_t)sizeof r)
        return r;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_nsec * 6364136223846793005ull + (uint64_t)pthread_self();
}

/* ---- encoding -------------------------------------------------------- */

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Percent-encode s the way SigV4 canonicalises it: unreserved characters
 * stay, everything else becomes %XX (upper-case); '/' stays if keep_slash. */
static int uri_encode(struct bfs_buf *b, const char *s, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int rc;
        if (is_unreserved(*p) || (keep_slash && *p == '/')) {
            rc = bfs_buf_append(b, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            rc = bfs_buf_append(b, e, 3);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static char *buf_cstr(struct bfs_buf *b)
{
    if (bfs_buf_append(b, "", 1) < 0) {
        bfs_buf_free(b);
        return NULL;
    }
    char *s = (char *)b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

/* The URL of key (relative to the store's prefix). NULL on ENOMEM. */
static char *object_url(struct s3_store *st, const char *key)
{
    struct bfs_buf b = {0};
    if (bfs_buf_append(&b, st->base_url, strlen(st->base_url)) < 0 ||
        uri_encode(&b, st->prefix, 1) < 0 || uri_encode(&b, key, 1) < 0) {
        bfs_buf_free(&b);
        return NULL;
    }
    return buf_cstr(&b);
}

/* ---- XML (the few S3 answers we read) -------------------------------- */

static int put_utf8(struct bfs_buf *b, unsigned long cp)
{
    uint8_t u[4];
    size_t n;
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -EIO;
    if (cp < 0x80) {
        u[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (uint8_t)(0xC0 | (cp >> 6));
        u[1] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xE0 | (cp >> 12));
        u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (uint8_t)(0xF0 | (cp >> 18));
        u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return bfs_buf_append(b, u, n);
}

/* Decode the XML character data [s, e) (entities, character references) into
 * a new NUL-terminated string. 0, -EIO (malformed) or -ENOMEM. */
static int xml_text(const char *s, const char *e, char **out)
{
    struct bfs_buf b = {0};
    int rc = 0;
    while (s < e && rc == 0) {
        if (*s != '&') {
            const char *amp = memchr(s, '&', (size_t)(e - s));
            const char *stop = amp ? amp : e;
            rc = bfs_buf_append(&b, s, (size_t)(stop - s));
            s = stop;
            continue;
        }
        const char *semi = memchr(s, ';', (size_t)(e - s));
        if (!semi || semi - s > 12) {
            rc = -EIO;
            break;
        }
        size_t n = (size_t)(semi - s - 1);
        const char *name = s + 1;
        if (n == 3 && memcmp(name, "amp", 3) == 0)
            rc = bfs_buf_append(&b, "&", 1);
        else if (n == 2 && memcmp(name, "lt", 2) == 0)
            rc = bfs_buf_append(&b, "<", 1);
        else if (n == 2 && memcmp(name, "gt", 2) == 0)
            rc = bfs_buf_append(&b, ">", 1);
        else if (n == 4 && memcmp(name, "quot", 4) == 0)
            rc = bfs_buf_append(&b, "\"", 1);
        else if (n == 4 && memcmp(name, "apos", 4) == 0)
            rc = bfs_buf_append(&b, "'", 1);
        else if (n >= 2 && name[0] == '#') {
            int hex = name[1] == 'x' || name[1] == 'X';
            const char *d = name + 1 + hex;
            unsigned long cp = 0;
            if (d == semi)
                rc = -EIO;
            for (; d < semi && rc == 0; d++) {
                int v;
                if (*d >= '0' && *d <= '9')
                    v = *d - '0';
                else if (hex && *d >= 'a' && *d <= 'f')
                    v = *d - 'a' + 10;
                else if (hex && *d >= 'A' && *d <= 'F')
                    v = *d - 'A' + 10;
                else {
                    rc = -EIO;
                    break;
                }
                cp = cp * (hex ? 16u : 10u) + (unsigned long)v;
                if (cp > 0x10FFFF)
                    rc = -EIO;
            }
            if (rc == 0)
                rc = put_utf8(&b, cp);
        } else {
            rc = -EIO;
        }
        s = semi + 1;
    }
    if (rc < 0) {
        bfs_buf_free(&b);
        return rc;
    }
    *out = buf_cstr(&b);
    return *out ? 0 : -ENOMEM;
}

/* Find <tag>...</tag> in [s, e). Sets [*vs, *ve) to the content and returns
 * 1, or returns 0 if absent. An empty element <tag/> counts as empty content. */
static int xml_find(const char *s, const char *e, const char *tag, const char **vs, const char **ve)
{
    size_t tl = strlen(tag);
    const char *p = s;
    while (p < e) {
        const char *lt = memchr(p, '<', (size_t)(e - p));
        if (!lt || (size_t)(e - lt) < tl + 2)
            return 0;
        if (memcmp(lt + 1, tag, tl) == 0) {
            const char *q = lt + 1 + tl;
            if (*q == '/' && q + 1 < e && q[1] == '>') {
                *vs = *ve = q + 2;
                return 1;
            }
            if (*q == '>' || *q == ' ' || *q == '\t' || *q == '\r' || *q == '\n') {
                const char *gt = memchr(q, '>', (size_t)(e - q));
                if (!gt)
                    return 0;
                if (gt[-1] == '/') {
                    *vs = *ve = gt + 1;
                    return 1;
                }
                const char *c = gt + 1;
                /* find the matching close tag */
                const char *r = c;
                while (r < e) {
                    const char *l2 = memchr(r, '<', (size_t)(e - r));
                    if (!l2 || (size_t)(e - l2) < tl + 3)
                        return 0;
                    if (l2[1] == '/' && memcmp(l2 + 2, tag, tl) == 0 && l2[2 + tl] == '>') {
                        *vs = c;
                        *ve = l2;
                        return 1;
                    }
                    r = l2 + 1;
                }
                return 0;
            }
        }
        p = lt + 1;
    }
    return 0;
}

/* Copy an error answer's <Code> and <Message> into out, printable only. */
static void s3_error_summary(const struct bfs_buf *body, char *out, size_t outlen, char *code_out,
                             size_t code_len)
{
    out[0] = '\0';
    code_out[0] = '\0';
    if (!body->len)
        return;
    const char *s = (const char *)body->data, *e = s + body->len;
    const char *cs, *ce, *ms, *me;
    char *code = NULL, *msg = NULL;
    if (xml_find(s, e, "Code", &cs, &ce) && xml_text(cs, ce, &code) < 0)
        code = NULL;
    if (xml_find(s, e, "Message", &ms, &me) && xml_text(ms, me, &msg) < 0)
        msg = NULL;
    if (code)
        snprintf(code_out, code_len, "%s", code);
    snprintf(out, outlen, "%s%s%.300s", code ? code : "", code && msg ? ": " : "", msg ? msg : "");
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    free(code);
    free(msg);
}

/* ---- curl plumbing ---------------------------------------------------- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userp)
{
    (void)h;
    (void)access;
    struct s3_store *st = userp;
    if ((int)data < 0 || data >= CURL_LOCK_DATA_LAST)
        data = CURL_LOCK_DATA_SHARE;
    pthread_mutex_lock(&st->share_lock[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userp)
{
    (void)h;
    struct s3_store *st = userp;
    if ((int)data < 0 || data >= CURL_LOCK_DATA_LAST)
        data = CURL_LOCK_DATA_SHARE;
    pthread_mutex_unlock(&st->share_lock[data]);
}

static CURL *pool_get(struct s3_store *st)
{
    CURL *h = NULL;
    pthread_mutex_lock(&st->pool_lock);
    if (st->n_idle)
        h = st->idle[--st->n_idle];
    pthread_mutex_unlock(&st->pool_lock);
    if (!h)
        h = curl_easy_init();
    return h;
}

static void pool_put(struct s3_store *st, CURL *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&st->pool_lock);
    if (st->n_idle < S3_POOL_MAX) {
        st->idle[st->n_idle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&st->pool_lock);
    if (h)
        curl_easy_cleanup(h);
}

static size_t on_header(char *data, size_t size, size_t n, void *userp)
{
    struct s3_req *r = userp;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue, say): forget the last one. */
        const char *sp = memchr(data, ' ', len);
        r->status = 0;
        if (sp && (size_t)(sp - data) + 4 <= len && isdigit((unsigned char)sp[1]) &&
            isdigit((unsigned char)sp[2]) && isdigit((unsigned char)sp[3]))
            r->status = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
        r->content_range[0] = '\0';
        r->request_id[0] = '\0';
        r->etag[0] = '\0';
        r->etag_long = 0;
        r->content_length[0] = '\0';
        return len;
    }
    const char *colon = memchr(data, ':', len);
    if (!colon)
        return len;
    size_t nl = (size_t)(colon - data);
    const char *v = colon + 1, *ve = data + len;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == '\r' || ve[-1] == '\n' || ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    char *dst = NULL;
    size_t dstlen = 0;
    if (nl == 13 && strncasecmp(data, "Content-Range", 13) == 0) {
        dst = r->content_range;
        dstlen = sizeof r->content_range;
    } else if (nl == 16 && strncasecmp(data, "x-amz-request-id", 16) == 0) {
        dst = r->request_id;
        dstlen = sizeof r->request_id;
    } else if (nl == 14 && strncasecmp(data, "Content-Length", 14) == 0) {
        dst = r->content_length;
        dstlen = sizeof r->content_length;
    } else if (nl == 4 && strncasecmp(data, "ETag", 4) == 0) {
        /* unquoted: W/"x" and "x" are x */
        if (ve - v >= 2 && v[0] == 'W' && v[1] == '/')
            v += 2;
        if (ve - v >= 2 && v[0] == '"' && ve[-1] == '"') {
            v++;
            ve--;
        }
        dst = r->etag;
        dstlen = sizeof r->etag;
        r->etag_long = (size_t)(ve - v) >= dstlen;
    }
    if (dst) {
        size_t vl = (size_t)(ve - v);
        if (vl >= dstlen)
            vl = dstlen - 1;
        memcpy(dst, v, vl);
        dst[vl] = '\0';
        for (char *p = dst; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
    struct s3_req *r = userp;
    size_t len = size * n;
    if (r->status >= 200 && r->status < 300) {
        if (r->dst) {
            if (r->status != 206) {
                r->bad_status = 1;
                return 0; /* abort: never download a whole object we did not ask for */
            }
            if (len > r->dst_len - r->dst_got) {
                r->overflow = 1;
                return 0;
            }
            memcpy(r->dst + r->dst_got, data, len);
            r->dst_got += len;
            return len;
        }
        if (r->body) {
            if (r->body->len + len > (r->body_max ? r->body_max : S3_LIST_BODY_MAX)) {
                r->overflow = 1;
                return 0;
            }
            return bfs_buf_append(r->body, data, len) < 0 ? 0 : len;
        }
        return len; /* PUT / DELETE answers: nothing we need */
    }
    /* An error answer: keep its beginning for the log line. */
    if (!r->errbody_full) {
        size_t room = S3_ERRBODY_MAX - r->errbody.len;
        size_t take = len < room ? len : room;
        if (bfs_buf_append(&r->errbody, data, take) < 0 || take < len)
            r->errbody_full = 1;
    }
    return len;
}

static size_t on_read(char *out, size_t size, size_t n, void *userp)
{
    struct s3_req *r = userp;
    size_t want = size * n;
    uint64_t left = r->put_size - r->put_pos;
    if (want > left)
        want = (size_t)left;
    if (want == 0)
        return 0;
    ssize_t got;
    do {
        got = pread(r->fd, out, want, (off_t)r->put_pos);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        r->put_errno = errno;
        return CURL_READFUNC_ABORT;
    }
    if (got == 0) {
        r->put_shrank = 1;
        return CURL_READFUNC_ABORT;
    }
    r->put_pos += (uint64_t)got;
    return (size_t)got;
}

static int on_seek(void *userp, curl_off_t offset, int origin)
{
    struct s3_req *r = userp;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > r->put_size)
        return CURL_SEEKFUNC_CANTSEEK;
    r->put_pos = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

#define SETOPT(h, opt, val)                                                                        \
    do {                                                                                           \
        CURLcode c_ = curl_easy_setopt((h), (opt), (val));                                         \
        if (c_ != CURLE_OK) {                                                                      \
            snprintf(why, whylen, "curl_easy_setopt(%s): %s", #opt, curl_easy_strerror(c_));       \
            return -EIO;                                                                           \
        }                                                                                          \
    } while (0)

static int setup_handle(struct s3_req *r, CURL *h, struct curl_slist *hdrs, long timeout_ms,
                        char *why, size_t whylen)
{
    struct s3_store *st = r->st;
    SETOPT(h, CURLOPT_URL, r->url);
    SETOPT(h, CURLOPT_NOSIGNAL, 1L);
    SETOPT(h, CURLOPT_SHARE, st->share);
    SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(h, CURLOPT_USERAGENT, "battlefs/0.1");
    SETOPT(h, CURLOPT_USERNAME, st->access_key);
    SETOPT(h, CURLOPT_PASSWORD, st->secret_key);
    SETOPT(h, CURLOPT_AWS_SIGV4, st->sigv4);
    SETOPT(h, CURLOPT_HTTPHEADER, hdrs);
    SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS,
           timeout_ms < S3_CONNECT_TIMEOUT_MS ? timeout_ms : S3_CONNECT_TIMEOUT_MS);
    SETOPT(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    SETOPT(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(h, CURLOPT_LOW_SPEED_TIME,
           (long)st->timeout_s < S3_LOW_SPEED_TIME_S ? (long)st->timeout_s : S3_LOW_SPEED_TIME_S);
    SETOPT(h, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(h, CURLOPT_ERRORBUFFER, r->curl_err);
    SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(h, CURLOPT_HEADERDATA, r);
    SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(h, CURLOPT_WRITEDATA, r);
    if (strcmp(r->method, "PUT") == 0) {
        SETOPT(h, CURLOPT_UPLOAD, 1L);
        SETOPT(h, CURLOPT_READFUNCTION, on_read);
        SETOPT(h, CURLOPT_READDATA, r);
        SETOPT(h, CURLOPT_SEEKFUNCTION, on_seek);
        SETOPT(h, CURLOPT_SEEKDATA, r);
        SETOPT(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->put_size);
        SETOPT(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 1000L);
    } else if (strcmp(r->method, "DELETE") == 0) {
        SETOPT(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    } else if (strcmp(r->method, "HEAD") == 0) {
        SETOPT(h, CURLOPT_NOBODY, 1L);
    } else {
        assert(strcmp(r->method, "GET") == 0);
        SETOPT(h, CURLOPT_HTTPGET, 1L);
    }
    return 0;
}

static int add_header(struct curl_slist **l, const char *h)
{
    struct curl_slist *n = curl_slist_append(*l, h);
    if (!n)
        return -ENOMEM;
    *l = n;
    return 0;
}

static int is_retryable_curl(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_SEND_FAIL_REWIND:
        return 1;
    default:
        return 0;
    }
}

/* Outcome of one attempt. */
struct s3_outcome {
    int rc;        /* 0 or negative errno */
    int retryable; /* worth another attempt */
};

/* Check a ranged GET's 206 answer: Content-Range and the byte count. */
static int check_range_answer(struct s3_req *r, char *why, size_t whylen, int *retryable)
{
    uint64_t a, b;
    char total[32];
    if (sscanf(r->content_range, "bytes %" SCNu64 "-%" SCNu64 "/%31s", &a, &b, total) != 3) {
        snprintf(why, whylen, "HTTP 206 with a bad Content-Range \"%s\"", r->content_range);
        return -EIO;
    }
    uint64_t want_end = r->dst_off + r->dst_len - 1;
    if (a != r->dst_off || b != want_end) {
        snprintf(why, whylen,
                 "HTTP 206 answered Content-Range \"%s\" for Range %s (object shorter than the "
                 "range asked for?)",
                 r->content_range, r->range);
        return -EIO;
    }
    if (r->dst_got != r->dst_len) {
        snprintf(why, whylen, "short body: %" PRIu64 " of %" PRIu64 " bytes", r->dst_got,
                 r->dst_len);
        *retryable = 1;
        return -EIO;
    }
    return 0;
}

static struct s3_outcome attempt(struct s3_req *r, CURL *h, struct curl_slist *hdrs,
                                 long timeout_ms, char *why, size_t whylen)
{
    struct s3_outcome o = {0, 0};
    /* fresh per-attempt state */
    r->status = 0;
    bfs_buf_reset(&r->errbody);
    r->errbody_full = 0;
    r->content_range[0] = '\0';
    r->request_id[0] = '\0';
    r->etag[0] = '\0';
    r->etag_long = 0;
    r->content_length[0] = '\0';
    r->err_code[0] = '\0';
    r->bad_status = r->overflow = 0;
    r->curl_err[0] = '\0';
    r->dst_got = 0;
    r->put_pos = 0;
    r->put_errno = 0;
    r->put_shrank = 0;
    if (r->body)
        bfs_buf_reset(r->body);

    curl_easy_reset(h);
    o.rc = setup_handle(r, h, hdrs, timeout_ms, why, whylen);
    if (o.rc < 0)
        return o;
    CURLcode c = curl_easy_perform(h);
    long status = 0;
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status)
        r->status = status;

    if (c != CURLE_OK) {
        if (r->bad_status) {
            snprintf(why, whylen,
                     "HTTP %ld instead of 206 Partial Content for Range %s: the server ignored "
                     "the range (refusing a whole-object answer)",
                     r->status, r->range);
            o.rc = -EIO;
        } else if (r->overflow) {
            o.rc = -EIO;
            if (r->dst) {
                snprintf(why, whylen,
                         "the answer is longer than the %" PRIu64
                         " bytes asked for (Range %s, Content-Range \"%s\")",
                         r->dst_len, r->range, r->content_range);
            } else if (r->body_max) {
                snprintf(why, whylen, "the object is over %zu bytes", r->body_max);
                o.rc = -EFBIG;
            } else {
                snprintf(why, whylen, "the listing page is over %u bytes", S3_LIST_BODY_MAX);
            }
        } else if (r->put_errno) {
            snprintf(why, whylen, "reading the local file: %s", strerror(r->put_errno));
            o.rc = -r->put_errno;
        } else if (r->put_shrank) {
            snprintf(why, whylen, "the local file shrank during the upload");
            o.rc = -EIO;
        } else {
            snprintf(why, whylen, "%s (curl error %d)",
                     r->curl_err[0] ? r->curl_err : curl_easy_strerror(c), (int)c);
            o.rc = c == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
                   : c == CURLE_OUT_OF_MEMORY    ? -ENOMEM
                                                 : -EIO;
            o.retryable = is_retryable_curl(c);
        }
        return o;
    }

    long st = r->status;
    if (st >= 200 && st < 300) {
        if (r->dst) {
            if (st != 206) {
                snprintf(why, whylen,
                         "HTTP %ld instead of 206 Partial Content for Range %s: the server "
                         "ignored the range",
                         st, r->range);
                o.rc = -EIO;
                return o;
            }
            o.rc = check_range_answer(r, why, whylen, &o.retryable);
            return o;
        }
        return o; /* success */
    }
    char summary[400];
    s3_error_summary(&r->errbody, summary, sizeof summary, r->err_code, sizeof r->err_code);
    const char *hint = "";
    if (st == 403 && strstr(summary, "SignatureDoesNotMatch"))
        hint = " (check AWS_SECRET_ACCESS_KEY and the region)";
    else if (st == 403 && strstr(summary, "InvalidAccessKeyId"))
        hint = " (check AWS_ACCESS_KEY_ID)";
    else if (st == 403 && !summary[0]) /* HEAD: no body to say why */
        hint = " (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, the region and the bucket's "
               "permissions)";
    else if (st == 301 || st == 307 || strstr(summary, "PermanentRedirect") ||
             strstr(summary, "AuthorizationHeaderMalformed"))
        hint = " (wrong region or endpoint?)";
    snprintf(why, whylen, "HTTP %ld%s%s%s%s%s%s", st, summary[0] ? " " : "", summary, hint,
             r->request_id[0] ? " (request id " : "", r->request_id, r->request_id[0] ? ")" : "");
    if (st == 404)
        o.rc = -ENOENT;
    else if (st == 401 || st == 403)
        o.rc = -EACCES;
    else if (st == 412)
        o.rc = -EEXIST; /* a condition failed: the caller (s3_put) says what it means */
    else
        o.rc = -EIO;
    o.retryable = st >= 500 || st == 429 || st == 408 ||
                  (st == 409 && strcmp(r->err_code, "ConditionalRequestConflict") == 0);
    return o;
}

/* Run r with retries inside its deadline. extra_ms widens the deadline (PUT). */
static int s3_perform(struct s3_req *r, uint64_t extra_ms, struct bfs_err *err)
{
    struct s3_store *st = r->st;
    char why[1024] = "";
    struct curl_slist *hdrs = NULL;
    char line[2200];
    int rc;

    snprintf(line, sizeof line, "x-amz-content-sha256: %s",
             r->sha_hex[0] ? r->sha_hex : S3_EMPTY_SHA256);
    rc = add_header(&hdrs, line);
    if (rc == 0 && st->token_header)
        rc = add_header(&hdrs, st->token_header);
    if (rc == 0 && r->range[0]) {
        snprintf(line, sizeof line, "Range: %s", r->range);
        rc = add_header(&hdrs, line);
    }
    /* No "Expect:" header to turn 100-continue off: libcurl 7.88 signs every
     * custom header, including a disabled (unsent) one, and S3 then refuses the
     * signature. 100-continue also spares the body upload when S3 says no. */
    if (rc == 0 && strcmp(r->method, "PUT") == 0)
        rc = add_header(&hdrs, "Content-Type: application/octet-stream");
    if (rc == 0 && r->cond_header[0])
        rc = add_header(&hdrs, r->cond_header);
    if (rc < 0) {
        curl_slist_free_all(hdrs);
        bfs_error("s3: %s s3://%s/%s%s: out of memory", r->method, st->bucket, st->prefix, r->what);
        return rc;
    }

    CURL *h = pool_get(st);
    if (!h) {
        curl_slist_free_all(hdrs);
        bfs_error("s3: curl_easy_init failed");
        return -ENOMEM;
    }
    bfs_err_clear(err);
    uint64_t start = now_ms();
    uint64_t deadline = start + (uint64_t)st->timeout_s * 1000u + extra_ms;
    unsigned n;
    rc = -ETIMEDOUT;
    for (n = 1; n <= S3_MAX_ATTEMPTS; n++) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        struct s3_outcome o = attempt(r, h, hdrs, (long)(deadline - now), why, sizeof why);
        rc = o.rc;
        if (rc == 0 || !o.retryable || n == S3_MAX_ATTEMPTS)
            break;
        uint64_t cap = (uint64_t)S3_BACKOFF_BASE_MS << (n - 1);
        if (cap > S3_BACKOFF_CAP_MS)
            cap = S3_BACKOFF_CAP_MS;
        uint64_t wait = random_u64() % (cap + 1); /* full jitter */
        if (now_ms() + wait >= deadline) {
            if (rc != -ETIMEDOUT && now_ms() >= deadline)
                rc = -ETIMEDOUT;
            break;
        }
        bfs_info("s3: %s s3://%s/%s%s%s%s: %s; retrying in %" PRIu64 " ms (attempt %u of %u)",
                 r->method, st->bucket, st->prefix, r->what, r->range[0] ? " " : "", r->range, why,
                 wait, n + 1, S3_MAX_ATTEMPTS);
        sleep_ms(wait);
    }
    pool_put(st, h);
    curl_slist_free_all(hdrs);
    if (rc < 0) {
        unsigned tried = n > S3_MAX_ATTEMPTS ? S3_MAX_ATTEMPTS : n;
        if (rc == -ENOENT && strcmp(r->method, "DELETE") == 0)
            return rc; /* the caller decides whether a missing key matters */
        const char *reason = why[0] ? why : "deadline reached before the request could be sent";
        double secs = (double)(now_ms() - start) / 1000.0;
        int quiet = (r->status == 404 && (r->quiet & S3_QUIET_404)) ||
                    (r->status == 412 && (r->quiet & S3_QUIET_412));
        if (quiet)
            bfs_debug("s3: %s s3://%s/%s%s: %s (%u attempt%s, %.1f s)", r->method, st->bucket,
                      st->prefix, r->what, reason, tried, tried == 1 ? "" : "s", secs);
        else
            bfs_error("s3: %s s3://%s/%s%s%s%s failed: %s (%u attempt%s, %.1f s)", r->method,
                      st->bucket, st->prefix, r->what, r->range[0] ? " " : "", r->range, reason,
                      tried, tried == 1 ? "" : "s", secs);
        bfs_err_set(err, rc, "%s (%u attempt%s, %.1f s)", reason, tried, tried == 1 ? "" : "s",
                    secs);
    }
    return rc;
}

static void req_init(struct s3_req *r, struct s3_store *st, const char *method, const char *what)
{
    memset(r, 0, sizeof *r);
    r->st = st;
    r->method = method;
    r->what = what;
    r->fd = -1;
}

static void req_free(struct s3_req *r)
{
    free(r->url);
    bfs_buf_free(&r->errbody);
}

/* The shared key rules (store.h), with a log line naming the bad key. */
static int key_ok(const char *op, const char *key)
{
    if (bfs_store_key_check(key) == 0)
        return 1;
    bfs_error("s3: %s: invalid store key \"%.200s\"", op, key ? key : "(null)");
    return 0;
}

/* ---- operations ------------------------------------------------------- */

/* The SHA-256 and/or MD5 (either may be NULL) of fd's size bytes, streamed
 * with pread: the file is never held in memory whole. 0, -EIO if the file
 * changed size, -errno. */
static int hash_file(int fd, uint64_t size, const char *key, const char *path, uint8_t sha[32],
                     uint8_t md5[16])
{
    struct bfs_sha256 sc = {0};
    struct bfs_md5 mc = {0};
    int rc = sha ? bfs_sha256_init(&sc) : 0;
    if (rc == 0 && md5 && (rc = bfs_md5_init(&mc)) < 0)
        bfs_sha256_discard(&sc);
    if (rc < 0) {
        bfs_error("s3: PUT %s: %s: %s", key, md5 && !mc.md ? "MD5" : "SHA-256", strerror(-rc));
        return rc;
    }
    uint8_t chunk[65536];
    uint64_t total = 0;
    for (;;) {
        ssize_t got = pread(fd, chunk, sizeof chunk, (off_t)total);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -errno;
            bfs_error("s3: PUT %s: reading %s: %s", key, path, strerror(-rc));
            break;
        }
        if (got == 0)
            break;
        if (sha)
            bfs_sha256_update(&sc, chunk, (size_t)got);
        if (md5)
            bfs_md5_update(&mc, chunk, (size_t)got);
        total += (uint64_t)got;
    }
    int frc = sha ? bfs_sha256_final(&sc, sha) : 0;
    int mrc = md5 ? bfs_md5_final(&mc, md5) : 0;
    if (rc < 0)
        return rc;
    if (frc < 0 || mrc < 0) {
        bfs_error("s3: PUT %s: %s: %s", key, frc < 0 ? "SHA-256" : "MD5",
                  strerror(-(frc < 0 ? frc : mrc)));
        return frc < 0 ? frc : mrc;
    }
    if (total != size) {
        bfs_error("s3: PUT %s: %s changed size while being hashed", key, path);
        return -EIO;
    }
    return 0;
}

static int s3_head(struct bfs_store *base, const char *key, struct bfs_store_head *out,
                   struct bfs_err *err);
static int s3_get(struct bfs_store *base, const char *key, size_t max, void **data, size_t *len,
                  char *etag, struct bfs_err *err);
static int s3_get_range(struct bfs_store *base, const char *key, uint64_t off, uint64_t len,
                        void *buf, struct bfs_err *err);

/* 1 if key holds exactly the size bytes of the local file fd, 0 if not,
 * -errno: read back and compared (for an ETag that is not an MD5). */
static int same_as_remote(struct bfs_store *base, const char *key, int fd, uint64_t size,
                          struct bfs_err *err)
{
    size_t chunk = size < S3_COMPARE_CHUNK ? (size_t)size : S3_COMPARE_CHUNK;
    uint8_t *mine = malloc(chunk ? chunk : 1);
    if (!mine)
        return -ENOMEM;
    int rc = 1;
    void *whole = NULL;
    size_t wlen = 0;
    uint8_t *theirs = NULL;
    if (size <= S3_COMPARE_CHUNK) {
        /* one GET of the whole object (no Range: a 1-byte range is answered
         * wrongly by some servers) */
        rc = s3_get(base, key, S3_COMPARE_CHUNK, &whole, &wlen, NULL, err);
        rc = rc < 0 ? rc : wlen == size;
        theirs = whole;
    } else {
        theirs = malloc(chunk);
        if (!theirs)
            rc = -ENOMEM;
    }
    for (uint64_t off = 0; rc == 1 && off < size; off += chunk) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        if (!whole) {
            int grc = s3_get_range(base, key, off, n, theirs, err);
            if (grc < 0) {
                rc = grc == -EIO ? 0 : grc; /* shorter now: not the same */
                break;
            }
        }
        size_t got = 0;
        while (got < n) {
            ssize_t m = pread(fd, mine + got, n - got, (off_t)(off + got));
            if (m < 0 && errno == EINTR)
                continue;
            if (m <= 0) {
                rc = m < 0 ? -errno : -EIO;
                break;
            }
            got += (size_t)m;
        }
        if (rc == 1 && memcmp(mine, theirs + (whole ? (size_t)off : 0), n) != 0)
            rc = 0;
    }
    if (whole)
        free(whole);
    else
        free(theirs);
    free(mine);
    return rc;
}

/* 1 if etag looks like an MD5 (32 hex digits), else 0. */
static int is_md5_form(const char *etag)
{
    size_t n = 0;
    for (; etag[n]; n++)
        if (!isxdigit((unsigned char)etag[n]))
            return 0;
    return n == 32;
}

/* A conditional PUT was refused (412): does key hold this put's bytes
 * anyway? 0 yes (the put succeeded; etag_out set), -EEXIST (create-only) /
 * -ESTALE (CAS) no, -ENOENT (CAS: no object now), -errno. */
static int settle_412(struct s3_store *st, const char *key, const struct bfs_put_src *src, int fd,
                      uint64_t size, const uint8_t md5[16], struct bfs_err *err)
{
    struct bfs_store_head h;
    int create = src->cond == BFS_PUT_CREATE;
    const char *how = create ? "create-only" : "if ETag";
    int rc = s3_head(&st->base, key, &h, err);
    if (rc == -ENOENT) {
        if (create) {
            bfs_warn("s3: PUT s3://%s/%s%s (create-only): refused (412) but the key is gone "
                     "now (deleted meanwhile?)",
                     st->bucket, st->prefix, key);
            return bfs_err_set(err, -EEXIST, "the key existed, then was deleted");
        }
        return bfs_err_set(err, -ENOENT, "no such key");
    }
    if (rc < 0)
        return rc;
    char mine[33];
    bfs_hex(md5, 16, mine);
    int same;
    if (h.size != size)
        same = 0;
    else if (size == 0 || strcasecmp(h.etag, mine) == 0)
        same = 1;
    else if (is_md5_form(h.etag) && !atomic_load(&st->etags_not_md5))
        same = 0;
    else
        same = same_as_remote(&st->base, key, fd, size, err);
    if (same < 0)
        return same;
    if (same) {
        bfs_info("s3: PUT s3://%s/%s%s (%s): the key already holds these bytes (an earlier "
                 "attempt landed, or another writer put the same): done",
                 st->bucket, st->prefix, key, how);
        if (src->etag_out)
            snprintf(src->etag_out, BFS_STORE_ETAG_MAX, "%s", h.etag[0] ? h.etag : mine);
        bfs_err_clear(err);
        return 0;
    }
    if (create) {
        bfs_log(src->race_ok ? BFS_LOG_DEBUG : BFS_LOG_ERROR,
                "s3: PUT s3://%s/%s%s (create-only) refused: the key holds other bytes (%" PRIu64
                " bytes, ETag %s; this put: %" PRIu64 " bytes, MD5 %s): not overwritten",
                st->bucket, st->prefix, key, h.size, h.etag[0] ? h.etag : "(none)", size, mine);
        return bfs_err_set(err, -EEXIST, "the key holds other bytes (%" PRIu64 " bytes, ETag %s)",
                           h.size, h.etag[0] ? h.etag : "(none)");
    }
    bfs_debug("s3: PUT s3://%s/%s%s if ETag %s: the ETag is %s: not replaced", st->bucket,
              st->prefix, key, src->if_match, h.etag);
    return bfs_err_set(err, -ESTALE, "the ETag is %s, not %s", h.etag[0] ? h.etag : "(none)",
                       src->if_match);
}

static int s3_put(struct bfs_store *base, const char *key, const struct bfs_put_src *src,
                  struct bfs_err *err)
{
    struct s3_store *st = (struct s3_store *)base;
    if (!key_ok("PUT", key))
        return -EINVAL;
    if (!src || !src->path)
        return -EINVAL;
    enum bfs_put_cond cond = src->cond;
    if ((cond != BFS_PUT_ALWAYS && cond != BFS_PUT_CREATE && cond != BFS_PUT_MATCH) ||
        (cond == BFS_PUT_MATCH && bfs_store_etag_check(src->if_match) < 0)) {
        bfs_error("s3: PUT %s: bad condition", key);
        return -EINVAL;
    }
    if (src->etag_out)
        src->etag_out[0] = '\0';
    const char *local_path = src->path;
    int fd = open(local_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        bfs_error("s3: PUT %s: cannot open %s: %s", key, local_path, strerror(e));
        return -e;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        bfs_error("s3: PUT %s: stat %s: %s", key, local_path, strerror(e));
        close(fd);
        return -e;
    }
    if (!S_ISREG(sb.st_mode)) {
        bfs_error("s3: PUT %s: %s is not a regular file", key, local_path);
        close(fd);
        return -EINVAL;
    }
    uint64_t total = (uint64_t)sb.st_size;
    uint8_t digest[32], md5[16];
    int have_md5 = 0;
    if (src->md5) {
        memcpy(md5, src->md5, sizeof md5);
        have_md5 = 1;
    }
    if (src->sha256) {
        memcpy(digest, src->sha256, sizeof digest);
    } else {
        /* A conditional put may need the MD5: it costs nothing in this pass. */
        int with_md5 = cond != BFS_PUT_ALWAYS && !have_md5;
        int hrc = hash_file(fd, total, key, local_path, digest, with_md5 ? md5 : NULL);
        if (hrc < 0) {
            close(fd);
            return hrc;
        }
        have_md5 |= with_md5;
    }

    struct s3_req r;
    req_init(&r, st, "PUT", key);
    r.fd = fd;
    r.put_size = total;
    bfs_hex(digest, sizeof digest, r.sha_hex);
    if (cond == BFS_PUT_CREATE) {
        snprintf(r.cond_header, sizeof r.cond_header, "If-None-Match: *");
        r.quiet = S3_QUIET_412;
    } else if (cond == BFS_PUT_MATCH) {
        snprintf(r.cond_header, sizeof r.cond_header, "If-Match: \"%s\"", src->if_match);
        r.quiet = S3_QUIET_412 | S3_QUIET_404;
    }
    r.url = object_url(st, key);
    int rc = r.url ? s3_perform(&r, total / 1024u, err) /* +1 s per MiB */ : -ENOMEM;
    if (rc == 0 && have_md5 && r.etag[0]) {
        char mine[33];
        bfs_hex(md5, sizeof md5, mine);
        if (strcasecmp(r.etag, mine) != 0 && !atomic_exchange(&st->etags_not_md5, 1))
            bfs_info("s3: %s answers a PUT with an ETag that is not the body's MD5 (SSE-KMS? "
                     "SSE-C?): a conditional put that meets an object of its size reads it back "
                     "to compare",
                     base->url);
    }
    if (rc == 0 && src->etag_out)
        snprintf(src->etag_out, BFS_STORE_ETAG_MAX, "%s", r.etag_long ? "" : r.etag);
    if (rc == -ENOENT && cond == BFS_PUT_MATCH) {
        bfs_debug("s3: PUT s3://%s/%s%s if ETag %s: no such key", st->bucket, st->prefix, key,
                  src->if_match);
    } else if (rc < 0 && r.status == 412 && cond != BFS_PUT_ALWAYS) {
        if (!have_md5 && (rc = hash_file(fd, total, key, local_path, NULL, md5)) == 0)
            have_md5 = 1;
        if (have_md5)
            rc = settle_412(st, key, src, fd, total, md5, err);
    }
    if (rc == 0 && base->stats) {
        bfs_stats_add(base->stats, store_put_requests, 1);
        bfs_stats_add(base->stats, store_put_bytes, total);
    }
    req_free(&r);
    close(fd);
    return rc;
}

static int s3_head(struct bfs_store *base, const char *key, struct bfs_store_head *out,
                   struct bfs_err *err)
{
    struct s3_store *st = (struct s3_store *)base;
    if (!key_ok("HEAD", key) || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    struct s3_req r;
    req_init(&r, st, "HEAD", key);
    r.quiet = S3_QUIET_404; /* "no such key" is an answer */
    r.url = object_url(st, key);
    int rc = r.url ? s3_perform(&r, 0, err) : -ENOMEM;
    if (rc == 0) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(r.content_length, &end, 10);
        if (!r.content_length[0] || r.content_length[0] == '-' || errno || *end) {
            bfs_error("s3: HEAD s3://%s/%s%s: no valid Content-Length (\"%s\")", st->bucket,
                      st->prefix, key, r.content_length);
            rc = -EIO;
        } else if (r.etag_long) {
            bfs_error("s3: HEAD s3://%s/%s%s: an ETag longer than %u bytes", st->bucket, st->prefix,
                      key, BFS_STORE_ETAG_MAX - 1);
            rc = -EIO;
        } else {
            out->size = n;
            snprintf(out->etag, sizeof out->etag, "%s", r.etag);
        }
    }
    req_free(&r);
    return rc;
}

static int s3_get(struct bfs_store *base, const char *key, size_t max, void **data, size_t *len,
                  char *etag, struct bfs_err *err)
{
    struct s3_store *st = (struct s3_store *)base;
    if (!key_ok("GET", key) || !data || !len || max > BFS_STORE_GET_MAX)
        return -EINVAL;
    *data = NULL;
    *len = 0;
    if (etag)
        etag[0] = '\0';
    struct bfs_buf body = {0};
    struct s3_req r;
    req_init(&r, st, "GET", key);
    r.body = &body;
    r.body_max = max ? max : 1; /* 0 means "the listing bound" to on_body */
    r.quiet = S3_QUIET_404;
    r.url = object_url(st, key);
    int rc = r.url ? s3_perform(&r, 0, err) : -ENOMEM;
    if (rc == 0 && max == 0 && body.len) {
        rc = -EFBIG;
    } else if (rc == 0 && r.status != 200) {
        bfs_error("s3: GET s3://%s/%s%s: HTTP %ld instead of 200", st->bucket, st->prefix, key,
                  r.status);
        rc = -EIO;
    } else if (rc == 0 && etag && r.etag_long) {
        bfs_error("s3: GET s3://%s/%s%s: an ETag longer than %u bytes", st->bucket, st->prefix, key,
                  BFS_STORE_ETAG_MAX - 1);
        rc = -EIO;
    }
    if (rc == 0) {
        if (etag)
            snprintf(etag, BFS_STORE_ETAG_MAX, "%s", r.etag);
        *len = body.len;
        if (!body.data && bfs_buf_append(&body, "", 1) == 0)
            body.len = 0; /* an empty object: still a buffer to free */
        *data = body.data;
        if (!*data)
            rc = -ENOMEM;
        else
            body.data = NULL;
    }
    if (rc == 0 && base->stats) {
        bfs_stats_add(base->stats, store_get_requests, 1);
        bfs_stats_add(base->stats, store_get_bytes, *len);
    }
    bfs_buf_free(&body);
    req_free(&r);
    return rc;
}

static int s3_get_range(struct bfs_store *base, const char *key, uint64_t off, uint64_t len,
                        void *buf, struct bfs_err *err)
{
    struct s3_store *st = (struct s3_store *)base;
    if (!key_ok("GET", key))
        return -EINVAL;
    if ((len && !buf) || off > UINT64_MAX - len)
        return -EINVAL;
    if (len == 0)
        return 0;
    struct s3_req r;
    req_init(&r, st, "GET", key);
    /* "No such key" is an answer: a compaction deleted an archive a caller's
     * view still names (it takes a new view), or a rebuild replays a roll
     * whose archives are gone; callers log what it means for them. */
    r.quiet = S3_QUIET_404;
    r.dst = buf;
    r.dst_off = off;
    r.dst_len = len;
    snprintf(r.range, sizeof r.range, "bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
    r.url = object_url(st, key);
    int rc = r.url ? s3_perform(&r, 0, err) : -ENOMEM;
    if (rc == 0 && base->stats) {
        bfs_stats_add(base->stats, store_get_requests, 1);
        bfs_stats_add(base->stats, store_get_bytes, len);
    }
    req_free(&r);
    return rc;
}

static int s3_del(struct bfs_store *base, const char *key, struct bfs_err *err)
{
    struct s3_store *st = (struct s3_store *)base;
    if (!key_ok("DELETE", key))
        return -EINVAL;
    struct s3_req r;
    req_init(&r, st, "DELETE", key);
    r.url = object_url(st, key);
    int rc = r.url ? s3_perform(&r, 0, err) : -ENOMEM;
    if (rc == -ENOENT && strcmp(r.err_code, "NoSuchKey") == 0)
        rc = 0; /* deleting a missing key is not an error (S3 itself answers 204) */
    else if (rc == -ENOENT)
        bfs_error("s3: DELETE s3://%s/%s%s failed: HTTP 404 %s", st->bucket, st->prefix, key,
                  r.err_code[0] ? r.err_code : "(no error code)");
    req_free(&r);
    return rc;
}

/* One listing (s3_list, s3_list_after): what was asked, and where it is. */
struct s3_listing {
    const char *prefix; /* as the caller gave it, for messages */
    int (*cb)(void *ctx, const char *key, uint64_t size);
    void *ctx;
    uint64_t max_keys; /* deliver at most this many keys; 0: all */
    uint64_t count;    /* keys delivered */
    int ordered;       /* list_after: each key must sort after the last one */
    char *last;        /* ordered: the last key delivered (full, malloc'ed), at first
                        * start-after's; NULL: none yet */
};

/* Parse one ListObjectsV2 page: call l->cb for each key, set *token to the
 * continuation token (malloc'ed) if the listing goes on, else NULL. */
static int parse_list_page(struct s3_store *st, const struct bfs_buf *body, struct s3_listing *l,
                           char **token)
{
    const char *what = l->prefix;
    const char *s = (const char *)body->data, *e = s + body->len;
    const char *vs, *ve;
    *token = NULL;
    if (!body->len || !xml_find(s, e, "ListBucketResult", &vs, &ve)) {
        bfs_error("s3: list %s: the answer is not a ListBucketResult", what);
        return -EIO;
    }
    s = vs;
    e = ve;
    size_t plen = strlen(st->prefix);
    const char *p = s;
    const char *cs, *ce;
    while (xml_find(p, e, "Contents", &cs, &ce)) {
        const char *ks, *ke, *ss, *se;
        char *key = NULL, *size = NULL;
        if (!xml_find(cs, ce, "Key", &ks, &ke) || !xml_find(cs, ce, "Size", &ss, &se)) {
            bfs_error("s3: list %s: an entry without Key or Size", what);
            return -EIO;
        }
        int rc = xml_text(ks, ke, &key);
        if (rc == 0)
            rc = xml_text(ss, se, &size);
        if (rc < 0) {
            if (rc == -EIO)
                bfs_error("s3: list %s: malformed XML text in an entry", what);
            free(key);
            free(size);
            return rc;
        }
        char *endp;
        errno = 0;
        unsigned long long sz = strtoull(size, &endp, 10);
        if (errno || endp == size || *endp || size[0] == '-') {
            bfs_error("s3: list %s: bad Size \"%.40s\"", what, size);
            free(key);
            free(size);
            return -EIO;
        }
        free(size);
        if (strncmp(key, st->prefix, plen) != 0 || !key[plen]) {
            bfs_error("s3: list %s: key \"%.200s\" is outside the store's prefix", what, key);
            free(key);
            return -EIO;
        }
        if (l->ordered && l->last && strcmp(key, l->last) <= 0) {
            /* The caller goes on from the last key it saw: a key out of order
             * would be skipped for good. */
            bfs_error("s3: list %s: key \"%.200s\" does not sort after \"%.200s\": the store does "
                      "not list in ascending order",
                      what, key, l->last);
            free(key);
            return -EIO;
        }
        rc = l->cb(l->ctx, key + plen, (uint64_t)sz);
        if (l->ordered) {
            free(l->last);
            l->last = key;
        } else {
            free(key);
        }
        if (rc != 0)
            return rc;
        l->count++;
        if (l->max_keys && l->count >= l->max_keys)
            return 0; /* enough: no token, no more pages */
        p = ce + strlen("</Contents>");
    }
    const char *ts, *te;
    int truncated =
        xml_find(s, e, "IsTruncated", &ts, &te) && te - ts == 4 && memcmp(ts, "true", 4) == 0;
    if (!truncated)
        return 0;
    if (!xml_find(s, e, "NextContinuationToken", &ts, &te) || ts == te) {
        bfs_error("s3: list %s: truncated listing without NextContinuationToken", what);
        return -EIO;
    }
    int rc = xml_text(ts, te, token);
    if (rc == -EIO)
        bfs_error("s3: list %s: malformed NextContinuationToken", what);
    return rc;
}

/* Run listing l (prefix checked) from the first key after start_after ("":
 * from the first key): ListObjectsV2 pages, following continuation tokens. */
static int list_pages(struct s3_store *st, struct s3_listing *l, const char *start_after,
                      struct bfs_err *err)
{
    char *full = NULL, *after = NULL, *what = NULL;
    if (asprintf(&full, "%s%s", st->prefix, l->prefix) < 0)
        full = NULL;
    if (start_after[0] && asprintf(&after, "%s%s", st->prefix, start_after) < 0)
        after = NULL;
    if (asprintf(&what, "list %s", l->prefix) < 0)
        what = NULL;
    if (!full || (start_after[0] && !after) || !what) {
        free(full);
        free(after);
        free(what);
        return -ENOMEM;
    }
    if (l->ordered && after && !(l->last = strdup(after))) {
        free(full);
        free(after);
        free(what);
        return -ENOMEM;
    }
    struct bfs_buf body = {0};
    char *token = NULL;
    int rc = 0;
    for (unsigned page = 0; page < S3_LIST_MAX_PAGES; page++) {
        /* Ask for no more keys than are still wanted. */
        uint64_t keys = st->list_max_keys;
        if (l->max_keys && l->max_keys - l->count < (keys ? keys : S3_LIST_PAGE_KEYS))
            keys = l->max_keys - l->count;
        /* Parameters in canonical (sorted, encoded) order: libcurl 7.88 signs
         * the query string as written. start-after goes with every page, as the
         * AWS SDKs' paginators send it (S3 goes on from the token). */
        struct bfs_buf u = {0};
        rc = bfs_buf_printf(&u, "%s?", st->list_url);
        if (rc == 0 && token) {
            rc = bfs_buf_printf(&u, "continuation-token=");
            if (rc == 0)
                rc = uri_encode(&u, token, 0);
            if (rc == 0)
                rc = bfs_buf_printf(&u, "&");
        }
        if (rc == 0)
            rc = bfs_buf_printf(&u, "list-type=2&");
        if (rc == 0 && keys)
            rc = bfs_buf_printf(&u, "max-keys=%" PRIu64 "&", keys);
        if (rc == 0)
            rc = bfs_buf_printf(&u, "prefix=");
        if (rc == 0)
            rc = uri_encode(&u, full, 0);
        if (rc == 0 && after) {
            rc = bfs_buf_printf(&u, "&start-after=");
            if (rc == 0)
                rc = uri_encode(&u, after, 0);
        }
        struct s3_req r;
        req_init(&r, st, "GET", what);
        r.body = &body;
        r.url = rc == 0 ? buf_cstr(&u) : NULL;
        if (rc == 0 && !r.url)
            rc = -ENOMEM;
        bfs_buf_free(&u);
        if (rc == 0)
            rc = s3_perform(&r, 0, err);
        req_free(&r);
        if (rc < 0)
            break;
        free(token);
        token = NULL;
        rc = parse_list_page(st, &body, l, &token);
        if (rc != 0 || !token)
            break;
    }
    if (rc == 0 && token) {
        bfs_error("s3: list %s: more than %u pages", l->prefix, S3_LIST_MAX_PAGES);
        rc = -EIO;
    }
    free(token);
    bfs_buf_free(&body);
    free(l->last);
    l->last = NULL;
    free(full);
    free(after);
    free(what);
    return rc;
}

static int s3_list(struct bfs_store *base, const char *prefix,
                   int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx,
                   struct bfs_err *err)
{
    struct s3_store *st = (struct s3_store *)base;
    if (!cb || bfs_store_prefix_check(prefix) < 0) {
        bfs_error("s3: list: invalid prefix \"%.200s\"", prefix ? prefix : "(null)");
        return -EINVAL;
    }
    struct s3_listing l = {.prefix = prefix, .cb = cb, .ctx = ctx};
    return list_pages(st, &l, "", err);
}

static int s3_list_after(struct bfs_store *base, const char *prefix, const char *start_after,
                         unsigned max_keys, int (*cb)(void *ctx, const char *key, uint64_t size),
                         void *ctx, struct bfs_err *err)
{
    struct s3_store *st = (struct s3_store *)base;
    if (!prefix)
        prefix = "";
    if (!start_after)
        start_after = "";
    if (!cb || bfs_store_prefix_check(prefix) < 0) {
        bfs_error("s3: list: invalid prefix \"%.200s\"", prefix);
        return -EINVAL;
    }
    if (bfs_store_prefix_check(start_after) < 0) {
        bfs_error("s3: list %s: invalid start-after \"%.200s\"", prefix, start_after);
        return -EINVAL;
    }
    struct s3_listing l = {
        .prefix = prefix, .cb = cb, .ctx = ctx, .max_keys = max_keys, .ordered = 1};
    return list_pages(st, &l, start_after, err);
}

static void s3_destroy(struct bfs_store *base)
{
    struct s3_store *st = (struct s3_store *)base;
    if (!st)
        return;
    for (size_t i = 0; i < st->n_idle; i++)
        curl_easy_cleanup(st->idle[i]);
    if (st->share) {
        CURLSHcode sc = curl_share_cleanup(st->share);
        if (sc != CURLSHE_OK)
            bfs_warn("s3: curl_share_cleanup: %s", curl_share_strerror(sc));
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&st->share_lock[i]);
    pthread_mutex_destroy(&st->pool_lock);
    if (st->secret_key) {
        /* Do not leave the secret in freed memory. */
        volatile char *p = st->secret_key;
        while (*p)
            *p++ = 0;
    }
    if (st->token_header) {
        volatile char *p = st->token_header;
        while (*p)
            *p++ = 0;
    }
    free(st->bucket);
    free(st->prefix);
    free(st->base_url);
    free(st->list_url);
    free(st->region);
    free(st->sigv4);
    free(st->access_key);
    free(st->secret_key);
    free(st->token_header);
    free(st->base.url);
    free(st);
}

static const struct bfs_store_ops s3_ops = {
    .put = s3_put,
    .get_range = s3_get_range,
    .list = s3_list,
    .list_after = s3_list_after,
    .del = s3_del,
    .destroy = s3_destroy,
    .head = s3_head,
    .get = s3_get,
};

/* ---- open ------------------------------------------------------------- */

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

static int dns_bucket(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || b[0] == '-' || b[n - 1] == '-')
        return 0;
    for (const char *p = b; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return 0;
    return 1;
}

static int region_ok(const char *r)
{
    if (!r[0] || strlen(r) > 64)
        return 0;
    for (const char *p = r; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return 0;
    return 1;
}

int bfs_store_s3_open(const char *bucket, const char *prefix, const struct bfs_store_opts *opts,
                      struct bfs_store **out, struct bfs_err *err)
{
    assert(out);
    *out = NULL;
    bfs_err_clear(err);
    pthread_once(&s3_once, s3_global_init);
    if (s3_global_rc != CURLE_OK)
        return bfs_err_set(err, -EIO, "s3: curl_global_init: %s", curl_easy_strerror(s3_global_rc));
    const curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    if (!vi || vi->version_num < 0x075500) {
        return bfs_err_set(err, -ENOTSUP, "s3: libcurl %s is too old (7.85 or later is needed)",
                           vi ? vi->version : "?");
    }
    if (!bucket || bfs_store_bucket_check(bucket, strlen(bucket)) < 0)
        return bfs_err_set(err, -EINVAL, "s3: bad bucket name \"%s\"", bucket ? bucket : "");
    const char *endpoint = opts && opts->endpoint && opts->endpoint[0] ? opts->endpoint : NULL;
    if (!endpoint)
        endpoint = env_nonempty("AWS_ENDPOINT_URL_S3");
    if (!endpoint)
        endpoint = env_nonempty("AWS_ENDPOINT_URL");
    const char *region = opts && opts->region && opts->region[0] ? opts->region : NULL;
    if (!region)
        region = env_nonempty("AWS_REGION");
    if (!region)
        region = "us-east-1";
    if (!region_ok(region))
        return bfs_err_set(err, -EINVAL, "s3: bad region \"%s\"", region);
    if (endpoint &&
        (strncasecmp(endpoint, "http://", 7) != 0 && strncasecmp(endpoint, "https://", 8) != 0)) {
        return bfs_err_set(err, -EINVAL, "s3: endpoint \"%s\" must start with http:// or https://",
                           endpoint);
    }
    if (endpoint && (strchr(endpoint, '?') || strchr(endpoint, '#') || strchr(endpoint, '@') ||
                     strchr(endpoint, ' '))) {
        return bfs_err_set(err, -EINVAL,
                           "s3: endpoint \"%s\": no query, fragment, user or spaces allowed",
                           endpoint);
    }
    const char *akey = env_nonempty("AWS_ACCESS_KEY_ID");
    const char *skey = env_nonempty("AWS_SECRET_ACCESS_KEY");
    const char *token = env_nonempty("AWS_SESSION_TOKEN");
    if (!akey || !skey) {
        return bfs_err_set(
            err, -EINVAL,
            "s3: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (they "
            "are never taken from the command line)");
    }
    if (strpbrk(akey, "\r\n") || (token && strpbrk(token, "\r\n"))) {
        return bfs_err_set(err, -EINVAL,
                           "s3: AWS_ACCESS_KEY_ID or AWS_SESSION_TOKEN contains a line break");
    }

    struct s3_store *st = calloc(1, sizeof *st);
    if (!st)
        return bfs_err_set(err, -ENOMEM, "s3: out of memory");
    atomic_init(&st->etags_not_md5, 0);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&st->share_lock[i], NULL);
    pthread_mutex_init(&st->pool_lock, NULL);
    st->base.ops = &s3_ops;
    st->base.put_wants_sha256 = 1;
    st->base.conditional = 1;
    st->timeout_s = opts && opts->timeout_s ? opts->timeout_s : S3_DEFAULT_TIMEOUT_S;
    const char *mk = getenv("BATTLEFS_S3_LIST_MAX_KEYS"); /* tests: force pagination */
    if (mk && mk[0]) {
        char *end;
        unsigned long v = strtoul(mk, &end, 10);
        if (*end || v < 1 || v > 1000) {
            s3_destroy(&st->base);
            return bfs_err_set(err, -EINVAL, "s3: BATTLEFS_S3_LIST_MAX_KEYS must be 1..1000");
        }
        st->list_max_keys = (unsigned)v;
    }

    /* prefix: without leading/trailing '/', then with one trailing '/' */
    const char *ps = prefix ? prefix : "";
    while (*ps == '/')
        ps++;
    size_t pl = strlen(ps);
    while (pl && ps[pl - 1] == '/')
        pl--;
    int rc = 0;
    if (pl) {
        if (asprintf(&st->prefix, "%.*s/", (int)pl, ps) < 0)
            st->prefix = NULL;
    } else {
        st->prefix = strdup("");
    }
    st->bucket = strdup(bucket);
    st->region = strdup(region);
    st->access_key = strdup(akey);
    st->secret_key = strdup(skey);
    if (token && asprintf(&st->token_header, "x-amz-security-token: %s", token) < 0)
        st->token_header = NULL, rc = -ENOMEM;
    if (asprintf(&st->sigv4, "aws:amz:%s:s3", region) < 0)
        st->sigv4 = NULL;
    if (endpoint) {
        size_t el = strlen(endpoint);
        while (el && endpoint[el - 1] == '/')
            el--;
        if (asprintf(&st->base_url, "%.*s/%s/", (int)el, endpoint, bucket) < 0)
            st->base_url = NULL;
    } else if (dns_bucket(bucket)) {
        if (asprintf(&st->base_url, "https://%s.s3.%s.amazonaws.com/", bucket, region) < 0)
            st->base_url = NULL;
    } else {
        if (asprintf(&st->base_url, "https://s3.%s.amazonaws.com/%s/", region, bucket) < 0)
            st->base_url = NULL;
    }
    if (st->base_url) {
        size_t bl = strlen(st->base_url);
        /* path-style: "<endpoint>/<bucket>"; virtual-host: "https://<host>/" */
        if (endpoint || !dns_bucket(bucket))
            bl--;
        st->list_url = strndup(st->base_url, bl);
    }
    if (pl) {
        if (asprintf(&st->base.url, "s3://%s/%.*s", bucket, (int)pl, ps) < 0)
            st->base.url = NULL;
    } else if (asprintf(&st->base.url, "s3://%s", bucket) < 0) {
        st->base.url = NULL;
    }
    if (rc < 0 || !st->prefix || !st->bucket || !st->region || !st->access_key || !st->secret_key ||
        !st->sigv4 || !st->base_url || !st->list_url || !st->base.url) {
        s3_destroy(&st->base);
        return bfs_err_set(err, -ENOMEM, "s3: out of memory");
    }

    st->share = curl_share_init();
    if (!st->share) {
        s3_destroy(&st->base);
        return bfs_err_set(err, -ENOMEM, "s3: curl_share_init failed");
    }
    CURLSHcode sc = curl_share_setopt(st->share, CURLSHOPT_LOCKFUNC, share_lock);
    if (sc == CURLSHE_OK)
        sc = curl_share_setopt(st->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    if (sc == CURLSHE_OK)
        sc = curl_share_setopt(st->share, CURLSHOPT_USERDATA, st);
    if (sc == CURLSHE_OK)
        sc = curl_share_setopt(st->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    if (sc == CURLSHE_OK)
        sc = curl_share_setopt(st->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    if (sc != CURLSHE_OK) {
        s3_destroy(&st->base);
        return bfs_err_set(err, -EIO, "s3: curl_share_setopt: %s", curl_share_strerror(sc));
    }
    bfs_debug("s3: store %s at %s (region %s, %s-style, timeout %u s)", st->base.url, st->base_url,
              st->region, endpoint ? "path" : "virtual-host", st->timeout_s);
    *out = &st->base;
    return 0;
}
