/* roll_baseline.c - the roll benchmark's baseline.
 *
 * The same work as a battlefs roll without battlefs' logic: read the buffered
 * blobs out of a battlefs catalog (the buffer_logs view, ordered by table,
 * period, dataset, upload) and write them to files in OUT_DIR, one file per
 * (table, period) group (the group's layout header first, as battlefs writes),
 * starting a new file when the next blob would pass MAX_BYTES; every file is
 * fsynced, then the directory. No claim, no index, no commit, no store. Prints
 * one JSON line: rows, bytes (blob bytes), files, seconds, peak RSS (KiB).
 *
 *   roll_baseline CATALOG OUT_DIR [MAX_BYTES [LEVEL]]   (MAX_BYTES default 128 MiB)
 *
 * LEVEL 1..12 (default 0: blobs copied as they are): the roll with compression
 * (issue 14, goal 3). Every blob is a sequence of Avro blocks (zigzag varint
 * count, zigzag varint size, size bytes of data, 16-byte sync marker); each
 * block's data is inflated (libdeflate_deflate_decompress) when its partition's
 * codec is deflate (stored deflate blocks inflate at about memcpy speed), taken
 * as it is otherwise, compressed with libdeflate_deflate_compress at LEVEL in
 * this one thread, and count, size, data and sync are written. The JSON line
 * then adds out_bytes (bytes written after the headers), plain_bytes (inflated)
 * and the seconds spent inflating and compressing.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <libdeflate.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die_sql(sqlite3 *db, const char *what)
{
    fprintf(stderr, "roll_baseline: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
}

static void die_errno(const char *what, const char *path)
{
    fprintf(stderr, "roll_baseline: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void write_all(int fd, const void *p, size_t n, const char *path)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die_errno("write", path);
        }
        c += w;
        n -= (size_t)w;
    }
}

/* Growable byte buffer. */
struct buf {
    uint8_t *p;
    size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 1 << 20;
    while (cap < b->len + extra)
        cap *= 2;
    if (!(b->p = realloc(b->p, cap))) {
        fprintf(stderr, "roll_baseline: out of memory\n");
        exit(1);
    }
    b->cap = cap;
}

static void buf_put_long(struct buf *b, int64_t v)
{
    buf_reserve(b, 10);
    uint64_t z = ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
    while (z >= 0x80) {
        b->p[b->len++] = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    b->p[b->len++] = (uint8_t)z;
}

/* A zigzag varint at in[*pos..n); -1 if it is cut or too long. */
static int get_long(const uint8_t *in, size_t n, size_t *pos, int64_t *out)
{
    uint64_t z = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= n)
            return -1;
        uint8_t c = in[(*pos)++];
        z |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
            return 0;
        }
    }
    return -1;
}

struct recompress {
    struct libdeflate_compressor *c;
    struct libdeflate_decompressor *d;
    struct buf plain, out;
    long long plain_bytes;
    double t_inflate, t_compress;
};

/* Blob in[0..n) of row `row`, its blocks inflated if `inflate` and compressed
 * again, into r->out. */
static void recompress_blob(struct recompress *r, const uint8_t *in, size_t n, int inflate,
                            long long row)
{
    size_t pos = 0;
    r->out.len = 0;
    while (pos < n) {
        int64_t count, size;
        if (get_long(in, n, &pos, &count) < 0 || get_long(in, n, &pos, &size) < 0 || count < 0 ||
            size < 0 || (uint64_t)size > n - pos || n - pos - (size_t)size < 16) {
            fprintf(stderr, "roll_baseline: row %lld: corrupt block at byte %zu\n", row, pos);
            exit(1);
        }
        const uint8_t *plain = in + pos;
        size_t plain_len = (size_t)size;
        double t = now();
        if (inflate) {
            r->plain.len = 0;
            for (;;) {
                buf_reserve(&r->plain,
                            r->plain.cap > 4 * plain_len ? r->plain.cap : 4 * plain_len + 65536);
                enum libdeflate_result res = libdeflate_deflate_decompress(
                    r->d, in + pos, (size_t)size, r->plain.p, r->plain.cap, &plain_len);
                if (res == LIBDEFLATE_SUCCESS)
                    break;
                if (res != LIBDEFLATE_INSUFFICIENT_SPACE) {
                    fprintf(stderr, "roll_baseline: row %lld: bad deflate data (%d)\n", row,
                            (int)res);
                    exit(1);
                }
                buf_reserve(&r->plain, 2 * r->plain.cap); /* len is 0: doubles cap */
            }
            plain = r->plain.p;
        }
        double t1 = now();
        r->t_inflate += t1 - t;
        r->plain_bytes += (long long)plain_len;
        size_t bound = libdeflate_deflate_compress_bound(r->c, plain_len);
        buf_put_long(&r->out, count);
        buf_reserve(&r->out, 10 + bound + 16);
        /* The data goes after room for its size's varint, then moves down. */
        uint8_t *dst = r->out.p + r->out.len + 10;
        size_t clen = libdeflate_deflate_compress(r->c, plain, plain_len, dst, bound);
        if (clen == 0) {
            fprintf(stderr, "roll_baseline: row %lld: compression failed\n", row);
            exit(1);
        }
        r->t_compress += now() - t1;
        size_t before = r->out.len;
        buf_put_long(&r->out, (int64_t)clen);
        memmove(r->out.p + r->out.len, r->out.p + before + 10, clen);
        r->out.len += clen;
        pos += (size_t)size;
        memcpy(r->out.p + r->out.len, in + pos, 16);
        r->out.len += 16;
        pos += 16;
    }
}

static void close_file(int fd, const char *path)
{
    if (fsync(fd) < 0)
        die_errno("fsync", path);
    if (close(fd) < 0)
        die_errno("close", path);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: %s CATALOG OUT_DIR [MAX_BYTES [LEVEL]]\n", argv[0]);
        return 2;
    }
    const char *out_dir = argv[2];
    long long max_bytes = argc >= 4 ? atoll(argv[3]) : 128LL * 1024 * 1024;
    if (max_bytes <= 0) {
        fprintf(stderr, "roll_baseline: bad MAX_BYTES %s\n", argv[3]);
        return 2;
    }
    int level = argc == 5 ? atoi(argv[4]) : 0;
    if (level < 0 || level > 12) {
        fprintf(stderr, "roll_baseline: bad LEVEL %s (1..12, 0 to copy)\n", argv[4]);
        return 2;
    }
    struct recompress r = {0};
    if (level > 0 &&
        (!(r.c = libdeflate_alloc_compressor(level)) || !(r.d = libdeflate_alloc_decompressor()))) {
        fprintf(stderr, "roll_baseline: libdeflate: out of memory\n");
        return 1;
    }
    if (mkdir(out_dir, 0755) < 0 && errno != EEXIST)
        die_errno("mkdir", out_dir);

    double t0 = now();
    sqlite3 *db;
    if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        die_sql(db, "open");
    sqlite3_stmt *q, *hq;
    if (sqlite3_prepare_v2(db,
                           "SELECT table_name, period_tag, data FROM buffer_logs "
                           "ORDER BY table_name, period_tag, dataset_id, id",
                           -1, &q, NULL) != SQLITE_OK)
        die_sql(db, "prepare select");
    if (sqlite3_prepare_v2(
            db, "SELECT header, codec FROM partitions WHERE table_name = ? AND period_tag = ?", -1,
            &hq, NULL) != SQLITE_OK)
        die_sql(db, "prepare header");

    char table[256] = "", period[256] = "", path[4096];
    void *header = NULL;
    int header_len = 0;
    int fd = -1, nfile = 0, inflate = 0;
    long long rows = 0, bytes = 0, in_file = 0, out_bytes = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(q, 0);
        const char *p = (const char *)sqlite3_column_text(q, 1);
        const void *data = sqlite3_column_blob(q, 2);
        int len = sqlite3_column_bytes(q, 2);
        int new_group = strcmp(t, table) != 0 || strcmp(p, period) != 0;
        if (new_group) {
            snprintf(table, sizeof table, "%s", t);
            snprintf(period, sizeof period, "%s", p);
            sqlite3_reset(hq);
            sqlite3_bind_text(hq, 1, table, -1, SQLITE_STATIC);
            sqlite3_bind_text(hq, 2, period, -1, SQLITE_STATIC);
            if (sqlite3_step(hq) != SQLITE_ROW)
                die_sql(db, "partition header");
            header_len = sqlite3_column_bytes(hq, 0);
            free(header);
            header = malloc(header_len ? (size_t)header_len : 1);
            if (!header)
                return 1;
            memcpy(header, sqlite3_column_blob(hq, 0), (size_t)header_len);
            inflate = strcmp((const char *)sqlite3_column_text(hq, 1), "deflate") == 0;
        }
        long long blob_len = len;
        if (level > 0) {
            recompress_blob(&r, data, (size_t)len, inflate, rows);
            data = r.out.p;
            len = (int)r.out.len;
        }
        if (fd >= 0 && (new_group || in_file + len > max_bytes)) {
            close_file(fd, path);
            fd = -1;
        }
        if (fd < 0) {
            snprintf(path, sizeof path, "%s/%s-%s-%d.avro", out_dir, table, period, nfile++);
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0)
                die_errno("open", path);
            write_all(fd, header, (size_t)header_len, path);
            in_file = header_len;
        }
        write_all(fd, data, (size_t)len, path);
        in_file += len;
        rows++;
        bytes += blob_len;
        out_bytes += len;
    }
    if (rc != SQLITE_DONE)
        die_sql(db, "select");
    if (fd >= 0)
        close_file(fd, path);
    int dfd = open(out_dir, O_RDONLY | O_DIRECTORY);
    if (dfd < 0 || fsync(dfd) < 0)
        die_errno("fsync", out_dir);
    close(dfd);
    sqlite3_finalize(q);
    sqlite3_finalize(hq);
    sqlite3_close(db);
    free(header);
    double dt = now() - t0;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"rows\": %lld, \"bytes\": %lld, \"files\": %d, \"seconds\": %.6f, "
           "\"peak_rss_kib\": %ld",
           rows, bytes, nfile, dt, ru.ru_maxrss);
    if (level > 0)
        printf(", \"level\": %d, \"out_bytes\": %lld, \"plain_bytes\": %lld, "
               "\"inflate_seconds\": %.6f, \"compress_seconds\": %.6f",
               level, out_bytes, r.plain_bytes, r.t_inflate, r.t_compress);
    printf("}\n");
    libdeflate_free_compressor(r.c);
    libdeflate_free_decompressor(r.d);
    free(r.plain.p);
    free(r.out.p);
    return 0;
}
