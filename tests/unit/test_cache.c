/* test_cache.c - the LRU cache of store units, against a counting fake store. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/cache.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"

/* ---- a fake store: deterministic bytes, counted gets ------------------------ */

#define MAX_GETS 4096

struct fake {
    struct bfs_store base;
    pthread_mutex_t lock;
    int gets;
    struct {
        char key[64];
        uint64_t off, len;
    } log[MAX_GETS];
    uint64_t object_size; /* every key has this size */
    int fail_rc;          /* returned by get_range when non-zero */
    unsigned delay_ms;    /* sleep in get_range (to overlap readers) */
};

static uint8_t byte_at(const char *key, uint64_t pos)
{
    uint32_t h = 2166136261u;
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return (uint8_t)((pos * 2654435761u) >> 13 ^ h ^ pos);
}

static int fake_get(struct bfs_store *st, const char *key, uint64_t off, uint64_t len, void *buf,
                    struct bfs_err *err)
{
    (void)err;
    struct fake *f = (struct fake *)st;
    pthread_mutex_lock(&f->lock);
    if (f->gets < MAX_GETS) {
        snprintf(f->log[f->gets].key, sizeof f->log[f->gets].key, "%s", key);
        f->log[f->gets].off = off;
        f->log[f->gets].len = len;
    }
    f->gets++;
    int rc = f->fail_rc;
    unsigned delay = f->delay_ms;
    uint64_t size = f->object_size;
    pthread_mutex_unlock(&f->lock);
    if (delay) {
        struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc)
        return rc;
    if (off + len > size)
        return -EIO;
    for (uint64_t i = 0; i < len; i++)
        ((uint8_t *)buf)[i] = byte_at(key, off + i);
    return 0;
}

static int fake_put(struct bfs_store *st, const char *key, const struct bfs_put_src *src,
                    struct bfs_err *err)
{
    (void)st, (void)key, (void)src, (void)err;
    return -ENOTSUP;
}
static int fake_list(struct bfs_store *st, const char *prefix,
                     int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx,
                     struct bfs_err *err)
{
    (void)st, (void)prefix, (void)cb, (void)ctx, (void)err;
    return -ENOTSUP;
}
static int fake_del(struct bfs_store *st, const char *key, struct bfs_err *err)
{
    (void)st, (void)key, (void)err;
    return -ENOTSUP;
}
static void fake_destroy(struct bfs_store *st)
{
    (void)st;
}

static const struct bfs_store_ops fake_ops = {
    .put = fake_put,
    .get_range = fake_get,
    .list = fake_list,
    .del = fake_del,
    .destroy = fake_destroy,
};

static struct fake *fake_new(uint64_t size)
{
    struct fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->base.ops = &fake_ops;
    f->object_size = size;
    pthread_mutex_init(&f->lock, NULL);
    return f;
}

static void fake_free(struct fake *f)
{
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static int fake_gets(struct fake *f)
{
    pthread_mutex_lock(&f->lock);
    int n = f->gets;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* ---- helpers --------------------------------------------------------------- */

struct env {
    char *dir; /* the cache directory */
    char *top; /* what to remove at the end */
    struct bfs_stats stats;
    struct fake *f;
    struct bfs_cache *c;
};

static void env_open(struct env *e, uint64_t max_bytes)
{
    assert_int_equal(bfs_cache_open(e->dir, max_bytes, &e->stats, &e->c), 0);
    assert_non_null(e->c);
}

static struct env *env_new(uint64_t max_bytes, uint64_t object_size)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    char tmpl[] = "/tmp/bfs-test-cache-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    e->top = strdup(tmpl);
    assert_true(asprintf(&e->dir, "%s/state/cache", tmpl) > 0);
    bfs_stats_init(&e->stats);
    e->f = fake_new(object_size);
    env_open(e, max_bytes);
    return e;
}

static void env_free(struct env *e)
{
    bfs_cache_close(e->c);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->top);
    assert_int_equal(system(cmd), 0);
    fake_free(e->f);
    bfs_stats_destroy(&e->stats);
    free(e->dir);
    free(e->top);
    free(e);
}

/* Read want range of unit through the cache and check the bytes. */
static void rd(struct env *e, const char *key, uint64_t uoff, uint64_t ulen, uint64_t woff,
               uint64_t wlen)
{
    uint8_t *buf = malloc(wlen + 1);
    buf[wlen] = 0x5A;
    int rc = bfs_cache_read(e->c, &e->f->base, key, uoff, ulen, woff, wlen, buf);
    if (rc != 0)
        fail_msg("read %s %lu+%lu: %d", key, (unsigned long)uoff, (unsigned long)ulen, rc);
    for (uint64_t i = 0; i < wlen; i++)
        if (buf[i] != byte_at(key, woff + i))
            fail_msg("read %s: byte %lu differs", key, (unsigned long)(woff + i));
    assert_int_equal(buf[wlen], 0x5A);
    free(buf);
}

/* Read a whole unit. */
static void rdu(struct env *e, const char *key, uint64_t uoff, uint64_t ulen)
{
    rd(e, key, uoff, ulen, uoff, ulen);
}

/* Entry files in the cache directory (names not starting with '.'), and their total size. */
static int entry_files(struct env *e, uint64_t *bytes, int *temps)
{
    DIR *d = opendir(e->dir);
    assert_non_null(d);
    int n = 0;
    uint64_t total = 0;
    if (temps)
        *temps = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') {
            if (temps && strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                (*temps)++;
            continue;
        }
        struct stat sb;
        char *p;
        assert_true(asprintf(&p, "%s/%s", e->dir, de->d_name) > 0);
        assert_int_equal(stat(p, &sb), 0);
        free(p);
        n++;
        total += (uint64_t)sb.st_size;
    }
    closedir(d);
    if (bytes)
        *bytes = total;
    return n;
}

static uint64_t hits(struct env *e)
{
    return e->stats.cache_hits;
}
static uint64_t misses(struct env *e)
{
    return e->stats.cache_misses;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_hit_miss(void **state)
{
    (void)state;
    struct env *e = env_new(1 << 20, 10000);
    struct stat sb;
    assert_int_equal(stat(e->dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0700);

    rd(e, "t/p/a.avro", 1000, 500, 1100, 20); /* miss: the whole unit is fetched */
    assert_int_equal(fake_gets(e->f), 1);
    assert_string_equal(e->f->log[0].key, "t/p/a.avro");
    assert_int_equal(e->f->log[0].off, 1000);
    assert_int_equal(e->f->log[0].len, 500);
    assert_int_equal(misses(e), 1);
    assert_int_equal(hits(e), 0);

    rdu(e, "t/p/a.avro", 1000, 500);         /* hit: whole unit */
    rd(e, "t/p/a.avro", 1000, 500, 1499, 1); /* hit: last byte */
    rd(e, "t/p/a.avro", 1000, 500, 1000, 1); /* hit: first byte */
    assert_int_equal(fake_gets(e->f), 1);
    assert_int_equal(hits(e), 3);

    /* another range of the same key, another key, the same range of another key: misses */
    rdu(e, "t/p/a.avro", 1500, 500);
    rdu(e, "t/p/b.avro", 1000, 500);
    rd(e, "t/p/a.avro", 1000, 400, 1000, 400); /* a different unit (shorter) */
    assert_int_equal(fake_gets(e->f), 4);
    assert_int_equal(misses(e), 4);
    uint64_t bytes;
    int temps;
    assert_int_equal(entry_files(e, &bytes, &temps), 4);
    assert_int_equal(bytes, 500 + 500 + 500 + 400);
    assert_int_equal(temps, 0);

    /* no store I/O for anything cached */
    rdu(e, "t/p/a.avro", 1500, 500);
    rdu(e, "t/p/b.avro", 1000, 500);
    assert_int_equal(fake_gets(e->f), 4);
    assert_int_equal(hits(e), 5);
    env_free(e);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct env *e = env_new(1 << 20, 10000);
    uint8_t buf[64];
    struct bfs_store *st = &e->f->base;
    assert_int_equal(bfs_cache_read(e->c, st, "k", 100, 50, 99, 2, buf), -EINVAL);  /* before */
    assert_int_equal(bfs_cache_read(e->c, st, "k", 100, 50, 149, 2, buf), -EINVAL); /* after */
    assert_int_equal(bfs_cache_read(e->c, st, "k", 100, 0, 100, 0, buf), -EINVAL);  /* empty */
    assert_int_equal(bfs_cache_read(e->c, st, "k", UINT64_MAX - 1, 5, UINT64_MAX - 1, 1, buf),
                     -EINVAL);
    assert_int_equal(bfs_cache_read(e->c, st, NULL, 0, 5, 0, 1, buf), -EINVAL);
    assert_int_equal(bfs_cache_read(e->c, st, "k", 0, 5, 0, 1, NULL), -EINVAL);
    assert_int_equal(bfs_cache_read(e->c, st, "k", 100, 50, 120, 0, buf), 0); /* nothing wanted */
    assert_int_equal(fake_gets(e->f), 0);
    assert_int_equal(hits(e) + misses(e), 0);
    env_free(e);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    struct env *e = env_new(300, 100000);
    rdu(e, "A", 0, 100);
    rdu(e, "B", 0, 100);
    rdu(e, "C", 0, 100);
    assert_int_equal(fake_gets(e->f), 3);
    assert_int_equal(entry_files(e, NULL, NULL), 3);
    rdu(e, "A", 0, 100); /* hit; LRU order now A C B */
    assert_int_equal(fake_gets(e->f), 3);
    rdu(e, "D", 0, 100); /* miss; evicts B */
    assert_int_equal(fake_gets(e->f), 4);
    uint64_t bytes;
    assert_int_equal(entry_files(e, &bytes, NULL), 3);
    assert_int_equal(bytes, 300);
    rdu(e, "A", 0, 100); /* hits: order D C A -> after these: A C D (A most recent) */
    rdu(e, "C", 0, 100);
    rdu(e, "D", 0, 100);
    assert_int_equal(fake_gets(e->f), 4);
    rdu(e, "B", 0, 100); /* miss; evicts A (least recently used) */
    assert_int_equal(fake_gets(e->f), 5);
    rdu(e, "C", 0, 100); /* still there */
    rdu(e, "D", 0, 100);
    rdu(e, "B", 0, 100);
    assert_int_equal(fake_gets(e->f), 5);
    rdu(e, "A", 0, 100); /* evicted: fetched again (evicts C) */
    assert_int_equal(fake_gets(e->f), 6);
    assert_string_equal(e->f->log[5].key, "A");
    rdu(e, "C", 0, 100);
    assert_int_equal(fake_gets(e->f), 7);

    /* one bigger entry pushes out as many as needed */
    rdu(e, "E", 0, 250); /* total would be 550: evicts the LRU ones until <= 300 */
    assert_int_equal(fake_gets(e->f), 8);
    assert_int_equal(entry_files(e, &bytes, NULL), 1);
    assert_int_equal(bytes, 250);
    rdu(e, "E", 0, 250);
    assert_int_equal(fake_gets(e->f), 8);
    assert_int_equal(misses(e), 8);
    env_free(e);
}

static void test_oversize_not_kept(void **state)
{
    (void)state;
    struct env *e = env_new(100, 100000);
    rdu(e, "small", 0, 60);
    rd(e, "big", 0, 150, 10, 100); /* served, not kept, evicts nothing */
    assert_int_equal(fake_gets(e->f), 2);
    uint64_t bytes;
    int temps;
    assert_int_equal(entry_files(e, &bytes, &temps), 1);
    assert_int_equal(bytes, 60);
    assert_int_equal(temps, 0);
    rdu(e, "big", 0, 150); /* fetched again */
    assert_int_equal(fake_gets(e->f), 3);
    rdu(e, "small", 0, 60); /* still a hit */
    assert_int_equal(fake_gets(e->f), 3);
    rdu(e, "exact", 0, 100); /* exactly max_bytes: kept, evicts small */
    rdu(e, "exact", 0, 100);
    assert_int_equal(fake_gets(e->f), 4);
    assert_int_equal(entry_files(e, &bytes, NULL), 1);
    assert_int_equal(bytes, 100);
    env_free(e);

    /* max_bytes 0: nothing is ever kept, reads still work */
    e = env_new(0, 1000);
    rdu(e, "k", 0, 10);
    rdu(e, "k", 0, 10);
    assert_int_equal(fake_gets(e->f), 2);
    assert_int_equal(entry_files(e, NULL, NULL), 0);
    env_free(e);
}

/* Concurrent readers of one unit. */
struct reader {
    struct env *e;
    pthread_barrier_t *bar;
    const char *key;
    uint64_t uoff, ulen, woff, wlen;
    int rc;
    int bad;
};

static void *reader_thread(void *arg)
{
    struct reader *r = arg;
    uint8_t *buf = malloc(r->wlen);
    pthread_barrier_wait(r->bar);
    r->rc =
        bfs_cache_read(r->e->c, &r->e->f->base, r->key, r->uoff, r->ulen, r->woff, r->wlen, buf);
    if (r->rc == 0)
        for (uint64_t i = 0; i < r->wlen; i++)
            if (buf[i] != byte_at(r->key, r->woff + i)) {
                r->bad = 1;
                break;
            }
    free(buf);
    return NULL;
}

/* Start n readers of the same unit at once; return how many failed with rc. */
static void concurrent(struct env *e, const char *key, uint64_t ulen, int n, int expect_rc)
{
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)n);
    struct reader r[16];
    pthread_t t[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        r[i] = (struct reader){.e = e, .bar = &bar, .key = key, .uoff = 4096, .ulen = ulen};
        r[i].woff = 4096 + (uint64_t)i * 7 % ulen;
        r[i].wlen = ulen - (r[i].woff - 4096);
        assert_int_equal(pthread_create(&t[i], NULL, reader_thread, &r[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].rc, expect_rc);
        assert_int_equal(r[i].bad, 0);
    }
    pthread_barrier_destroy(&bar);
}

/* A hung store: at most waiting_max reads wait for it; more fail at once with
 * EIO, and hits are served meanwhile. */
struct slow {
    struct env *e;
    char key[32];
    int rc;
};

static void *slow_reader(void *arg)
{
    struct slow *s = arg;
    uint8_t buf[100];
    s->rc = bfs_cache_read(s->e->c, &s->e->f->base, s->key, 0, 100, 0, 100, buf);
    return NULL;
}

static void test_waiting_bound(void **state)
{
    (void)state;
    struct env *e = env_new(1 << 20, 1 << 20);
    uint8_t buf[100];
    assert_int_equal(bfs_cache_read(e->c, &e->f->base, "hot", 0, 100, 0, 100, buf), 0);
    bfs_cache_set_waiting_max(e->c, 3);
    e->f->delay_ms = 400;
    struct slow s[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        s[i] = (struct slow){.e = e};
        snprintf(s[i].key, sizeof s[i].key, "cold%d", i);
        assert_int_equal(pthread_create(&t[i], NULL, slow_reader, &s[i]), 0);
    }
    while (fake_gets(e->f) < 1 + 3) /* all three fetching */
        usleep(1000);
    /* a fourth miss fails at once; a waiter for a unit already in flight too */
    assert_int_equal(bfs_cache_read(e->c, &e->f->base, "cold9", 0, 100, 0, 100, buf), -EIO);
    assert_int_equal(bfs_cache_read(e->c, &e->f->base, "cold0", 0, 100, 0, 100, buf), -EIO);
    /* a hit needs no store */
    assert_int_equal(bfs_cache_read(e->c, &e->f->base, "hot", 0, 100, 0, 100, buf), 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].rc, 0);
    }
    /* once they are done, misses work again */
    e->f->delay_ms = 0;
    assert_int_equal(bfs_cache_read(e->c, &e->f->base, "cold9", 0, 100, 0, 100, buf), 0);
    env_free(e);
}

static void test_concurrent_single_fetch(void **state)
{
    (void)state;
    struct env *e = env_new(1 << 20, 1 << 20);
    e->f->delay_ms = 300;
    concurrent(e, "same/unit", 5000, 8, 0);
    assert_int_equal(fake_gets(e->f), 1);
    assert_int_equal(misses(e), 1);
    assert_int_equal(hits(e), 7);
    assert_int_equal(entry_files(e, NULL, NULL), 1);

    /* a unit too big to keep is still fetched once for readers that overlap */
    bfs_cache_close(e->c);
    env_open(e, 1000);
    concurrent(e, "big/unit", 5000, 8, 0);
    assert_int_equal(fake_gets(e->f), 2);
    assert_int_equal(entry_files(e, NULL, NULL), 0);

    /* a failing fetch: every waiter gets its error, nothing is kept */
    e->f->fail_rc = -ETIMEDOUT;
    concurrent(e, "fail/unit", 500, 6, -ETIMEDOUT);
    assert_int_equal(fake_gets(e->f), 3);
    assert_int_equal(entry_files(e, NULL, NULL), 0);
    env_free(e);
}

struct stress {
    struct env *e;
    unsigned seed;
    int bad;
};

static void *stress_thread(void *arg)
{
    struct stress *s = arg;
    uint8_t buf[200];
    for (int i = 0; i < 3000; i++) {
        s->seed = s->seed * 1103515245u + 12345u;
        unsigned u = (s->seed >> 8) % 40;
        uint64_t uoff = u * 200, woff = uoff + (s->seed >> 20) % 100;
        uint64_t wlen = 1 + (s->seed >> 4) % 100;
        char key[32];
        snprintf(key, sizeof key, "s/%u", u % 7);
        if (bfs_cache_read(s->e->c, &s->e->f->base, key, uoff, 200, woff, wlen, buf) != 0) {
            s->bad++;
            continue;
        }
        for (uint64_t k = 0; k < wlen; k++)
            if (buf[k] != byte_at(key, woff + k)) {
                s->bad++;
                break;
            }
    }
    return NULL;
}

static void test_concurrent_stress(void **state)
{
    (void)state;
    struct env *e = env_new(10 * 200, 40 * 200);
    struct stress s[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        s[i] = (struct stress){.e = e, .seed = (unsigned)i * 7919u + 1};
        assert_int_equal(pthread_create(&t[i], NULL, stress_thread, &s[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].bad, 0);
    }
    assert_int_equal(hits(e) + misses(e), 6 * 3000);
    assert_int_equal((uint64_t)fake_gets(e->f), misses(e));
    assert_true(misses(e) >= 40); /* every unit at least once; the cache holds only 10 */
    uint64_t bytes;
    int temps;
    int n = entry_files(e, &bytes, &temps);
    assert_true(n <= 10);
    assert_true(bytes <= 2000);
    assert_int_equal(bytes, (uint64_t)n * 200);
    assert_int_equal(temps, 0);
    env_free(e);
}

static void test_reopen_clears(void **state)
{
    (void)state;
    struct env *e = env_new(1 << 20, 100000);
    rdu(e, "k/1", 0, 1000);
    rdu(e, "k/2", 0, 1000);
    assert_int_equal(entry_files(e, NULL, NULL), 2);
    bfs_cache_close(e->c);
    /* leftovers of a crash: a temporary file; and a file that is not the cache's */
    char *p;
    assert_true(asprintf(&p, "%s/.tmp-7-%064d", e->dir, 0) > 0);
    int fd = open(p, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "torn", 4), 4);
    close(fd);
    free(p);
    assert_true(asprintf(&p, "%s/README", e->dir) > 0);
    fd = open(p, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);

    env_open(e, 1 << 20);
    int temps;
    assert_int_equal(entry_files(e, NULL, &temps), 1); /* README stays */
    assert_int_equal(temps, 0);
    assert_int_equal(access(p, F_OK), 0);
    free(p);
    rdu(e, "k/1", 0, 1000); /* previous mount's entries are gone: a miss */
    assert_int_equal(fake_gets(e->f), 3);
    rdu(e, "k/1", 0, 1000);
    assert_int_equal(fake_gets(e->f), 3);
    env_free(e);
}

static void test_store_error_caches_nothing(void **state)
{
    (void)state;
    struct env *e = env_new(1 << 20, 1000);
    uint8_t buf[100];
    e->f->fail_rc = -EIO;
    assert_int_equal(bfs_cache_read(e->c, &e->f->base, "k", 0, 100, 0, 100, buf), -EIO);
    assert_int_equal(entry_files(e, NULL, NULL), 0);
    e->f->fail_rc = -ENOENT;
    assert_int_equal(bfs_cache_read(e->c, &e->f->base, "k", 0, 100, 0, 100, buf), -ENOENT);
    e->f->fail_rc = 0;
    /* a range the object does not have: the store's -EIO, nothing kept */
    assert_int_equal(bfs_cache_read(e->c, &e->f->base, "k", 950, 100, 950, 10, buf), -EIO);
    assert_int_equal(entry_files(e, NULL, NULL), 0);
    rdu(e, "k", 0, 100); /* now it works and is kept */
    rdu(e, "k", 0, 100);
    assert_int_equal(fake_gets(e->f), 4);
    assert_int_equal(misses(e), 4);
    assert_int_equal(hits(e), 1);
    assert_int_equal(entry_files(e, NULL, NULL), 1);
    env_free(e);
}

/* The path of the only entry file. */
static char *only_entry(struct env *e)
{
    DIR *d = opendir(e->dir);
    assert_non_null(d);
    char *p = NULL;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            assert_null(p);
            assert_true(asprintf(&p, "%s/%s", e->dir, de->d_name) > 0);
        }
    closedir(d);
    assert_non_null(p);
    return p;
}

static void test_damaged_entry_refetched(void **state)
{
    (void)state;
    struct env *e = env_new(1 << 20, 100000);
    rdu(e, "d/x", 0, 4000);
    char *p = only_entry(e);
    /* truncated: detected by its size, fetched again */
    assert_int_equal(truncate(p, 100), 0);
    rdu(e, "d/x", 0, 4000);
    assert_int_equal(fake_gets(e->f), 2);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_size, 4000);
    rdu(e, "d/x", 0, 4000);
    assert_int_equal(fake_gets(e->f), 2);
    /* removed behind the cache's back */
    assert_int_equal(unlink(p), 0);
    rd(e, "d/x", 0, 4000, 3999, 1);
    assert_int_equal(fake_gets(e->f), 3);
    assert_int_equal(stat(p, &sb), 0);
    free(p);
    env_free(e);
}

static void test_unwritable_dir_still_serves(void **state)
{
    (void)state;
    struct env *e = env_new(1 << 20, 100000);
    /* Entries cannot be written (as on a full or read-only file system; root ignores
     * modes, so a non-empty directory in the entry's place makes the rename fail). */
    rdu(e, "w/1", 0, 100);
    char *p = only_entry(e);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkdir(p, 0700), 0);
    char *inner;
    assert_true(asprintf(&inner, "%s/x", p) > 0);
    int fd = open(inner, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    /* the entry is missing (a directory is there): refetched, cannot be kept, served */
    rdu(e, "w/1", 0, 100);
    rdu(e, "w/1", 0, 100);
    assert_int_equal(fake_gets(e->f), 3);
    int temps;
    entry_files(e, NULL, &temps);
    assert_int_equal(temps, 0); /* the failed temporary file was removed */
    assert_int_equal(unlink(inner), 0);
    assert_int_equal(rmdir(p), 0);
    free(inner);
    free(p);
    env_free(e);
}

static void test_open_errors(void **state)
{
    (void)state;
    struct bfs_cache *c = (struct bfs_cache *)1;
    assert_int_equal(bfs_cache_open("", 100, NULL, &c), -EINVAL);
    assert_null(c);
    assert_int_equal(bfs_cache_open("/dev/null/cache", 100, NULL, &c), -ENOTDIR);
    assert_null(c);
    bfs_cache_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_oversize_not_kept),
        cmocka_unit_test(test_concurrent_single_fetch),
        cmocka_unit_test(test_waiting_bound),
        cmocka_unit_test(test_concurrent_stress),
        cmocka_unit_test(test_reopen_clears),
        cmocka_unit_test(test_store_error_caches_nothing),
        cmocka_unit_test(test_damaged_entry_refetched),
        cmocka_unit_test(test_unwritable_dir_still_serves),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
