/* ingest_writer.c - one writer of tools/bench/bench_ingest.py --writer c: the
 * same work as its Python writer (each upload `open(O_CREAT|O_TRUNC); write;
 * close` through the mount, parents made first), with less of the machine's
 * CPU spent in the load generator itself, which shares the 2 vCPUs with the
 * daemon (docs/bench.md).
 *
 * usage: ingest_writer SRC DST LIST OUT
 * LIST holds one relative path per line: SRC/path is read into memory before
 * anything is timed, DST/path is the upload. Then "ready\n" goes to stdout and
 * the writer waits for a line on stdin (every writer ready), uploads in order,
 * and writes to OUT: "N T0 T1\n" (uploads, CLOCK_MONOTONIC seconds at the
 * first open and after the last close), then per upload "OPEN_TO_CLOSE CLOSE\n"
 * in seconds. Exit 1 with a message on any failure (a rejected upload too). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct upload {
    char *dst;
    char *data;
    size_t len;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

static int read_all(const char *path, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    *data = rc == 0 ? malloc(st.st_size > 0 ? (size_t)st.st_size : 1) : NULL;
    *len = 0;
    if (rc == 0 && !*data)
        rc = -ENOMEM;
    while (rc == 0 && *len < (size_t)st.st_size) {
        ssize_t k = read(fd, *data + *len, (size_t)st.st_size - *len);
        if (k <= 0)
            rc = k < 0 ? -errno : -EIO;
        else
            *len += (size_t)k;
    }
    close(fd);
    return rc;
}

/* mkdir -p of path's parent. */
static int make_parents(const char *path)
{
    char *d = strdup(path);
    if (!d)
        return -ENOMEM;
    char *slash = strrchr(d, '/');
    int rc = 0;
    if (slash && slash != d) {
        *slash = '\0';
        for (char *p = d + 1; rc == 0; p++) {
            char c = *p;
            if (c != '/' && c != '\0')
                continue;
            *p = '\0';
            if (mkdir(d, 0755) < 0 && errno != EEXIST)
                rc = -errno;
            *p = c;
            if (c == '\0')
                break;
        }
    }
    free(d);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s SRC DST LIST OUT\n", argv[0]);
        return 2;
    }
    FILE *list = fopen(argv[3], "r");
    if (!list) {
        perror(argv[3]);
        return 1;
    }
    struct upload *ups = NULL;
    size_t n = 0, cap = 0;
    char line[4096];
    while (fgets(line, sizeof line, list)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0])
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            struct upload *u = realloc(ups, cap * sizeof *u);
            if (!u)
                return 1;
            ups = u;
        }
        char *src = join(argv[1], line);
        ups[n].dst = join(argv[2], line);
        if (!src || !ups[n].dst || read_all(src, &ups[n].data, &ups[n].len) < 0) {
            fprintf(stderr, "ingest_writer: cannot read %s\n", src ? src : line);
            return 1;
        }
        free(src);
        n++;
    }
    fclose(list);
    double *lat = calloc(2 * (n ? n : 1), sizeof *lat);
    if (!lat)
        return 1;

    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        return 1;

    const char *made = ""; /* its first made_len bytes: the last directory made */
    size_t made_len = 0;
    double t0 = mono();
    for (size_t i = 0; i < n; i++) {
        const char *slash = strrchr(ups[i].dst, '/');
        size_t dlen = slash ? (size_t)(slash - ups[i].dst) : 0;
        if (made_len != dlen || strncmp(made, ups[i].dst, dlen) != 0) {
            if (make_parents(ups[i].dst) < 0) {
                fprintf(stderr, "ingest_writer: mkdir for %s: %s\n", ups[i].dst, strerror(errno));
                return 1;
            }
            made = ups[i].dst;
            made_len = dlen;
        }
        double t = mono();
        int fd = open(ups[i].dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "ingest_writer: open %s: %s\n", ups[i].dst, strerror(errno));
            return 1;
        }
        ssize_t k = write(fd, ups[i].data, ups[i].len);
        if (k < 0 || (size_t)k != ups[i].len) {
            fprintf(stderr, "ingest_writer: write %s: %s\n", ups[i].dst,
                    k < 0 ? strerror(errno) : "short write");
            return 1;
        }
        double tc = mono();
        if (close(fd) < 0) {
            fprintf(stderr, "ingest_writer: close %s: %s\n", ups[i].dst, strerror(errno));
            return 1;
        }
        double te = mono();
        lat[2 * i] = te - t;
        lat[2 * i + 1] = te - tc;
    }
    double t1 = mono();

    FILE *out = fopen(argv[4], "w");
    if (!out) {
        perror(argv[4]);
        return 1;
    }
    fprintf(out, "%zu %.9f %.9f\n", n, t0, t1);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%.9f %.9f\n", lat[2 * i], lat[2 * i + 1]);
    if (fclose(out) != 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        free(ups[i].dst);
        free(ups[i].data);
    }
    free(ups);
    free(lat);
    return 0;
}
