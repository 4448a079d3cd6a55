/* test_spool.c - the uploads' bytes and their memory bound (spool.h), without FUSE. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/spool.h"
#include "battlefs/stats.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

struct env {
    char dir[64];
    struct bfs_stats stats;
    struct bfs_spool *sp;
};

static struct env *env_new(uint64_t mem_max, bool named)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    snprintf(e->dir, sizeof e->dir, "/tmp/bfs-spool-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    bfs_stats_init(&e->stats);
    assert_int_equal(bfs_spool_open(e->dir, mem_max, named, &e->stats, &e->sp), 0);
    return e;
}

static void env_free(struct env *e)
{
    bfs_spool_close(e->sp);
    bfs_stats_destroy(&e->stats);
    assert_int_equal(rmdir(e->dir), 0); /* every spool file gone */
    free(e);
}

static unsigned files_in(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    unsigned n = 0;
    for (struct dirent *de; (de = readdir(d));)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 31 + seed);
    return p;
}

/* The view of f is exactly want. */
static void assert_view(struct bfs_spool_file *f, const uint8_t *want, size_t n)
{
    const uint8_t *data;
    size_t len;
    assert_int_equal(bfs_spool_view(f, &data, &len), 0);
    assert_int_equal(len, n);
    assert_memory_equal(data, want, n);
    bfs_spool_unview(f);
}

#define MEM(e) atomic_load(&(e)->stats.upload_memory_bytes)

/* Writes in any order, a gap, a truncate down and up, reads: the same bytes
 * in memory and once spilled. */
static void test_bytes_in_memory_and_spilled(void **state)
{
    (void)state;
    struct env *e = env_new(8 * MiB, true);
    size_t n = 300 * KiB;
    uint8_t *want = pattern(n, 7), *got = malloc(n);
    struct bfs_spool_file *f;
    assert_int_equal(bfs_spool_file_new(e->sp, &f), 0);
    assert_int_equal(bfs_spool_write(f, want, 0, 5 * MiB), 0); /* writes nothing */
    assert_int_equal(bfs_spool_read(f, got, 10, 0), 0);
    assert_int_equal(bfs_spool_write(f, want + 100 * KiB, 50 * KiB, 100 * KiB), 50 * KiB);
    assert_int_equal(bfs_spool_write(f, want, 100 * KiB, 0), 100 * KiB);
    assert_int_equal(bfs_spool_truncate(f, 120 * KiB), 0);
    assert_int_equal(bfs_spool_truncate(f, 150 * KiB), 0); /* zeros past 120 KiB */
    memset(want + 120 * KiB, 0, 30 * KiB);
    assert_int_equal(bfs_spool_write(f, want + 200 * KiB, 100 * KiB, 200 * KiB), 100 * KiB);
    memset(want + 150 * KiB, 0, 50 * KiB); /* the gap reads as zeros */
    assert_false(bfs_spool_spilled(f));
    assert_int_equal(files_in(e->dir), 0);
    assert_true(MEM(e) >= n);
    assert_int_equal(bfs_spool_read(f, got, n, 0), n);
    assert_memory_equal(got, want, n);
    assert_int_equal(bfs_spool_read(f, got, 10, n), 0);
    assert_view(f, want, n);
    /* past 1 MiB: spilled, with every byte so far, and written on there */
    uint8_t *more = pattern(MiB, 9);
    assert_int_equal(bfs_spool_write(f, more, MiB, n), MiB);
    assert_true(bfs_spool_spilled(f));
    assert_int_equal(files_in(e->dir), 1);
    assert_int_equal(MEM(e), 0);
    assert_int_equal(atomic_load(&e->stats.uploads_spilled), 1);
    uint8_t *all = malloc(n + MiB);
    memcpy(all, want, n);
    memcpy(all + n, more, MiB);
    assert_view(f, all, n + MiB);
    assert_int_equal(bfs_spool_read(f, got, 10 * KiB, 5), 10 * KiB);
    assert_memory_equal(got, all + 5, 10 * KiB);
    assert_int_equal(bfs_spool_sync(f, true), 0);
    bfs_spool_file_free(f);
    assert_int_equal(files_in(e->dir), 0);
    assert_int_equal(MEM(e), 0);
    free(want);
    free(got);
    free(more);
    free(all);
    env_free(e);
}

/* Uploads being written hold at most half the bound: the one that would
 * pass it spills, the others stay; memory comes back when they are freed. */
static void test_half_the_bound_for_uploads_being_written(void **state)
{
    (void)state;
    struct env *e = env_new(2 * MiB, false); /* 1 MiB for uploads being written */
    uint8_t *p = pattern(400 * KiB, 1);
    struct bfs_spool_file *f[3];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(bfs_spool_file_new(e->sp, &f[i]), 0);
        assert_int_equal(bfs_spool_write(f[i], p, 400 * KiB, 0), 400 * KiB);
    }
    assert_false(bfs_spool_spilled(f[0]));
    assert_false(bfs_spool_spilled(f[1]));
    assert_true(bfs_spool_spilled(f[2]));
    assert_int_equal(MEM(e), 800 * KiB);
    assert_int_equal(atomic_load(&e->stats.upload_memory_peak), 800 * KiB);
    for (int i = 0; i < 3; i++)
        assert_view(f[i], p, 400 * KiB);
    bfs_spool_file_free(f[0]);
    assert_int_equal(MEM(e), 400 * KiB);
    struct bfs_spool_file *g;
    assert_int_equal(bfs_spool_file_new(e->sp, &g), 0);
    assert_int_equal(bfs_spool_write(g, p, 400 * KiB, 0), 400 * KiB);
    assert_false(bfs_spool_spilled(g));
    bfs_spool_file_free(g);
    bfs_spool_file_free(f[1]);
    bfs_spool_file_free(f[2]);
    assert_int_equal(MEM(e), 0);
    free(p);
    env_free(e);
}

/* upload_memory=0: every upload is a spool file from its start. */
static void test_no_memory(void **state)
{
    (void)state;
    struct env *e = env_new(0, true);
    struct bfs_spool_file *f;
    assert_int_equal(bfs_spool_file_new(e->sp, &f), 0);
    assert_int_equal(files_in(e->dir), 1);
    uint8_t *p = pattern(10 * KiB, 3);
    assert_int_equal(bfs_spool_write(f, p, 10 * KiB, 0), 10 * KiB);
    assert_view(f, p, 10 * KiB);
    assert_int_equal(atomic_load(&e->stats.upload_memory_peak), 0);
    bfs_spool_file_free(f);
    assert_int_equal(files_in(e->dir), 0);
    free(p);
    env_free(e);
}

struct viewer {
    struct bfs_spool_file *f;
    int done;
};

static void *view_in_thread(void *arg)
{
    struct viewer *v = arg;
    const uint8_t *data;
    size_t len;
    assert_int_equal(bfs_spool_view(v->f, &data, &len), 0);
    __atomic_store_n(&v->done, 1, __ATOMIC_SEQ_CST);
    bfs_spool_unview(v->f);
    return NULL;
}

/* Ingests share the other half: a second ingest waits until the first
 * gives its memory back; one ingest alone may go past it. */
static void test_ingests_wait_for_room(void **state)
{
    (void)state;
    struct env *e = env_new(2 * MiB, false); /* 1 MiB for ingests */
    uint8_t *p = pattern(600 * KiB, 5);
    struct bfs_spool_file *a, *b;
    assert_int_equal(bfs_spool_file_new(e->sp, &a), 0);
    assert_int_equal(bfs_spool_file_new(e->sp, &b), 0);
    assert_int_equal(bfs_spool_write(a, p, 600 * KiB, 0), 600 * KiB);
    assert_int_equal(bfs_spool_write(b, p, 600 * KiB, 0), 600 * KiB);
    assert_true(bfs_spool_spilled(b)); /* 1.2 MiB would pass 1 MiB */
    const uint8_t *data;
    size_t len;
    assert_int_equal(bfs_spool_view(a, &data, &len), 0); /* charges 600 KiB */
    struct viewer v = {.f = b};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, view_in_thread, &v), 0);
    usleep(100 * 1000);
    assert_int_equal(__atomic_load_n(&v.done, __ATOMIC_SEQ_CST), 0); /* 1.2 MiB more: waits */
    assert_int_equal(atomic_load(&e->stats.upload_memory_waits), 1);
    bfs_spool_unview(a);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(v.done, 1);         /* alone, past the half: went through */
    assert_int_equal(MEM(e), 600 * KiB); /* a's bytes, still held */
    bfs_spool_file_free(a);
    bfs_spool_file_free(b);
    assert_int_equal(MEM(e), 0);
    free(p);
    env_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_in_memory_and_spilled),
        cmocka_unit_test(test_half_the_bound_for_uploads_being_written),
        cmocka_unit_test(test_no_memory),
        cmocka_unit_test(test_ingests_wait_for_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
