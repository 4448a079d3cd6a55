/* bench_validate.c - CPU per upload of the ingest's OCF pass (header, record
 * validation, normalisation: bfs_ocf_process), against baselines measured in
 * the same run over the same uploads:
 *   memcpy   copying the upload's bytes once (the floor of any pass over them);
 *   avro-c   the same pass with BFS_OCF_CROSSCHECK, which also decodes every
 *            record with avro-c (the reference decoder); its cost alone is the
 *            difference.
 *
 * usage: bench_validate DIR [UPLOADS] [ROUNDS]
 * DIR holds .avro uploads (any depth: tools/bench/bench_ingest.py's tree);
 * the first UPLOADS (default 1000, sorted by path) are read into memory, then
 * ROUNDS (default 20) rounds run each pass over all of them, alternating, and
 * the best round of each is reported: ns of CPU (CLOCK_THREAD_CPUTIME_ID) per
 * upload, MB/s, and the ratios. */

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "battlefs/buf.h"
#include "battlefs/ocf.h"

struct upload {
    uint8_t *data;
    size_t len;
};

static char **paths;
static size_t n_paths, cap_paths;

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    size_t n = strlen(path);
    if (type != FTW_F || n < 5 || strcmp(path + n - 5, ".avro") != 0)
        return 0;
    if (n_paths == cap_paths) {
        cap_paths = cap_paths ? 2 * cap_paths : 1024;
        char **p = realloc(paths, cap_paths * sizeof *p);
        if (!p)
            return -1;
        paths = p;
    }
    paths[n_paths] = strdup(path);
    return paths[n_paths++] ? 0 : -1;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load(const char *path, struct upload *u)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    u->data = malloc(n > 0 ? (size_t)n : 1);
    u->len = n > 0 ? (size_t)n : 0;
    int rc = u->data && fread(u->data, 1, u->len, f) == u->len ? 0 : -EIO;
    fclose(f);
    return rc;
}

static double now_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

enum pass { P_MEMCPY, P_BATTLEFS, P_AVROC, P_COUNT };
static const char *const pass_name[P_COUNT] = {"memcpy", "battlefs", "battlefs + avro-c"};

/* One round of pass p over every upload: CPU seconds, or -1 on a failure. */
static double round_of(enum pass p, const struct upload *ups, size_t n,
                       struct bfs_ocf_schema_cache *cache, struct bfs_buf *out)
{
    static const uint8_t sync[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    double t0 = now_cpu();
    for (size_t i = 0; i < n; i++) {
        out->len = 0;
        if (p == P_MEMCPY) {
            if (bfs_buf_append(out, ups[i].data, ups[i].len) < 0)
                return -1;
            continue;
        }
        struct bfs_ocf_header h;
        struct bfs_err err;
        uint64_t records = 0;
        int rc = bfs_ocf_parse_header_cached(ups[i].data, ups[i].len, cache, &h, &err);
        if (rc == 0) {
            rc = bfs_ocf_process(ups[i].data, ups[i].len, &h, sync, BFS_CODEC_NULL, out, &records,
                                 p == P_AVROC ? BFS_OCF_CROSSCHECK : 0, 0, &err);
            bfs_ocf_header_free(&h);
        }
        if (rc != 0) {
            fprintf(stderr, "bench_validate: upload %zu: %s\n", i, err.msg);
            return -1;
        }
    }
    return now_cpu() - t0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [UPLOADS] [ROUNDS]\n", argv[0]);
        return 2;
    }
    size_t want = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
    int rounds = argc > 3 ? atoi(argv[3]) : 20;
    if (nftw(argv[1], collect, 16, FTW_PHYS) != 0 || n_paths == 0) {
        fprintf(stderr, "bench_validate: no .avro files under %s\n", argv[1]);
        return 1;
    }
    qsort(paths, n_paths, sizeof *paths, cmp);
    size_t n = n_paths < want ? n_paths : want;
    struct upload *ups = calloc(n, sizeof *ups);
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ups || load(paths[i], &ups[i]) < 0) {
            fprintf(stderr, "bench_validate: cannot read %s\n", paths[i]);
            return 1;
        }
        bytes += ups[i].len;
    }
    struct bfs_ocf_schema_cache *cache;
    if (bfs_ocf_schema_cache_new(64, &cache) < 0)
        return 1;
    struct bfs_buf out = {0};
    double best[P_COUNT];
    for (int p = 0; p < P_COUNT; p++)
        best[p] = 1e30;
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < P_COUNT; k++) {
            enum pass p = (enum pass)((r + k) % P_COUNT); /* alternate the order */
            double s = round_of(p, ups, n, cache, &out);
            if (s < 0)
                return 1;
            if (s < best[p])
                best[p] = s;
        }
    printf("uploads: %zu, %.1f MB, best of %d rounds (CPU time of this thread)\n\n", n, bytes / 1e6,
           rounds);
    printf("| pass | ns/upload | MB/s | vs battlefs |\n| --- | ---: | ---: | ---: |\n");
    for (int p = 0; p < P_COUNT; p++)
        printf("| %s | %.0f | %.0f | %.2fx |\n", pass_name[p], best[p] / n * 1e9,
               bytes / best[p] / 1e6, best[p] / best[P_BATTLEFS]);
    double avroc = best[P_AVROC] - best[P_BATTLEFS];
    if (avroc > 0)
        printf("| avro-c alone (difference) | %.0f | %.0f | %.2fx |\n", avroc / n * 1e9,
               bytes / avroc / 1e6, avroc / best[P_BATTLEFS]);
    bfs_buf_free(&out);
    bfs_ocf_schema_cache_free(cache);
    for (size_t i = 0; i < n; i++)
        free(ups[i].data);
    free(ups);
    for (size_t i = 0; i < n_paths; i++)
        free(paths[i]);
    free(paths);
    return 0;
}
