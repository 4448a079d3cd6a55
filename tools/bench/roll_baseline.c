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
 *   roll_baseline CATALOG OUT_DIR [MAX_BYTES]     (MAX_BYTES default 128 MiB)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
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

static void close_file(int fd, const char *path)
{
    if (fsync(fd) < 0)
        die_errno("fsync", path);
    if (close(fd) < 0)
        die_errno("close", path);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s CATALOG OUT_DIR [MAX_BYTES]\n", argv[0]);
        return 2;
    }
    const char *out_dir = argv[2];
    long long max_bytes = argc == 4 ? atoll(argv[3]) : 128LL * 1024 * 1024;
    if (max_bytes <= 0) {
        fprintf(stderr, "roll_baseline: bad MAX_BYTES %s\n", argv[3]);
        return 2;
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
    if (sqlite3_prepare_v2(db,
                           "SELECT header FROM partitions WHERE table_name = ? AND period_tag = ?",
                           -1, &hq, NULL) != SQLITE_OK)
        die_sql(db, "prepare header");

    char table[256] = "", period[256] = "", path[4096];
    void *header = NULL;
    int header_len = 0;
    int fd = -1, nfile = 0;
    long long rows = 0, bytes = 0, in_file = 0;
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
        bytes += len;
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
           "\"peak_rss_kib\": %ld}\n",
           rows, bytes, nfile, dt, ru.ru_maxrss);
    return 0;
}
