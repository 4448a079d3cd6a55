/* cache.c - size-bounded LRU cache of store ranges ("units") in <state>/cache.
 *
 * An entry is one whole unit (key, unit_off, unit_len), kept as the file
 * <dir>/<hex SHA-256 of key NUL off(8 BE) len(8 BE)> holding exactly the
 * unit's bytes. Archives never change, so an entry never needs invalidating.
 *
 * In memory: a hash table of the entries, a doubly linked LRU list (head =
 * most recently used) and the total of their lengths, kept <= max_bytes by
 * evicting from the tail. A unit larger than max_bytes is fetched and served
 * but not kept (and evicts nothing).
 *
 * Locking: one mutex guards the index, the in-flight table and the counters.
 * It is never held across store I/O; it is held across the local open/unlink
 * of entry files, so an entry that is evicted cannot vanish between lookup and
 * open (an open descriptor keeps reading an unlinked file). Reading the entry
 * (pread), fetching from the store and writing a new entry happen unlocked.
 *
 * Single flight: a miss registers the unit in the in-flight table; other
 * readers of the same unit wait on the condition variable and are served from
 * the fetcher's memory buffer, so a unit is fetched once however many threads
 * miss it together (also when it is too big to keep or cannot be written to
 * disk). If the fetch fails, they all get its error; nothing is cached.
 *
 * Counting: cache_misses = units fetched from the store; cache_hits = reads
 * served without a fetch of their own (from an entry, or by waiting for
 * another reader's fetch).
 *
 * Entries are written to ".tmp-<n>-<name>" and renamed into place, and their
 * size is checked (fstat) at every use: a wrong-sized or missing entry file is
 * dropped and the unit fetched again (WARN). Entry files are not fsynced
 * because they are never trusted across mounts: bfs_cache_open removes every
 * entry and temporary file a previous mount left (so a crash can never make a
 * torn entry look valid, and the cache needs no on-disk index).
 */
#include "battlefs/cache.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/fsutil.h"
#include "battlefs/log.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"

#define NAME_LEN      64 /* hex SHA-256 */
#define TMP_PREFIX    ".tmp-"
#define BUCKETS_FIRST 1024u

struct entry {
    uint8_t id[32];
    char *key;
    uint64_t off, len;
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* LRU list */
};

struct fetch {
    uint8_t id[32];
    struct fetch *next;
    int done;
    int rc;
    uint8_t *buf; /* the unit (rc == 0), freed with the last reference */
    unsigned refs;
};

struct bfs_cache {
    char *dir;
    int dirfd;
    uint64_t max_bytes;
    struct bfs_stats *stats;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
    uint64_t total;
    struct entry lru; /* sentinel: lru.next = most recent, lru.prev = least */
    struct fetch *inflight;
    uint64_t tmp_seq;
    int write_warned;
    unsigned waiting;     /* reads in a miss: fetching, or waiting for a fetch */
    unsigned waiting_max; /* beyond, a miss fails at once with EIO (0: no bound) */
    time_t busy_warned;   /* when the bound was last logged */
};

/* ---- identity ---------------------------------------------------------- */

/* 0, -ENOMEM, -EIO (SHA-256 failed). */
static int unit_id(const char *key, uint64_t off, uint64_t len, uint8_t id[32])
{
    struct bfs_sha256 h;
    uint8_t be[17];
    int rc = bfs_sha256_init(&h);
    if (rc < 0)
        return rc;
    bfs_sha256_update(&h, key, strlen(key));
    be[0] = 0;
    for (int i = 0; i < 8; i++) {
        be[1 + i] = (uint8_t)(off >> (56 - 8 * i));
        be[9 + i] = (uint8_t)(len >> (56 - 8 * i));
    }
    bfs_sha256_update(&h, be, sizeof be);
    return bfs_sha256_final(&h, id);
}

static void id_name(const uint8_t id[32], char name[NAME_LEN + 1])
{
    bfs_hex(id, 32, name);
}

static size_t bucket_of(const struct bfs_cache *c, const uint8_t id[32])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | id[i];
    return (size_t)(v & (c->nbuckets - 1));
}

/* ---- index (lock held) ------------------------------------------------- */

static struct entry *index_find(struct bfs_cache *c, const uint8_t id[32], const char *key,
                                uint64_t off, uint64_t len)
{
    for (struct entry *e = c->buckets[bucket_of(c, id)]; e; e = e->hnext)
        if (memcmp(e->id, id, 32) == 0 && e->off == off && e->len == len &&
            strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void lru_unlink(struct entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = e;
}

static void lru_push_front(struct bfs_cache *c, struct entry *e)
{
    e->next = c->lru.next;
    e->prev = &c->lru;
    c->lru.next->prev = e;
    c->lru.next = e;
}

static void index_grow(struct bfs_cache *c)
{
    size_t n = c->nbuckets * 2;
    struct entry **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct entry *e = c->buckets[i];
        while (e) {
            struct entry *next = e->hnext;
            uint64_t v = 0;
            for (int k = 0; k < 8; k++)
                v = v << 8 | e->id[k];
            size_t j = (size_t)(v & (n - 1));
            e->hnext = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

static void index_insert(struct bfs_cache *c, struct entry *e)
{
    if (c->count >= c->nbuckets)
        index_grow(c);
    size_t b = bucket_of(c, e->id);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_push_front(c, e);
    c->count++;
    c->total += e->len;
}

/* Remove e from the index and its file from disk, and free it. */
static void index_drop(struct bfs_cache *c, struct entry *e)
{
    struct entry **pp = &c->buckets[bucket_of(c, e->id)];
    while (*pp != e) {
        assert(*pp);
        pp = &(*pp)->hnext;
    }
    *pp = e->hnext;
    lru_unlink(e);
    assert(c->count > 0 && c->total >= e->len);
    c->count--;
    c->total -= e->len;
    char name[NAME_LEN + 1];
    id_name(e->id, name);
    if (unlinkat(c->dirfd, name, 0) < 0 && errno != ENOENT)
        bfs_warn("cache: cannot remove %s/%s: %s", c->dir, name, strerror(errno));
    free(e->key);
    free(e);
}

static struct fetch *inflight_find(struct bfs_cache *c, const uint8_t id[32])
{
    for (struct fetch *f = c->inflight; f; f = f->next)
        if (memcmp(f->id, id, 32) == 0)
            return f;
    return NULL;
}

static void fetch_unref(struct fetch *f)
{
    assert(f->refs > 0);
    if (--f->refs == 0) {
        free(f->buf);
        free(f);
    }
}

/* ---- entry files -------------------------------------------------------- */

/* Write buf as entry file name: temporary name, then rename. 0 or -errno. */
static int write_entry(struct bfs_cache *c, const char *name, uint64_t seq, const uint8_t *buf,
                       uint64_t len)
{
    char tmp[NAME_LEN + 48];
    snprintf(tmp, sizeof tmp, TMP_PREFIX "%" PRIu64 "-%s", seq, name);
    int fd = openat(c->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = 0;
    uint64_t done = 0;
    while (done < len) {
        size_t want = len - done > (1u << 30) ? (1u << 30) : (size_t)(len - done);
        ssize_t n = write(fd, buf + done, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        done += (uint64_t)n;
    }
    if (close(fd) < 0 && rc == 0 && errno != EINTR)
        rc = -errno;
    if (rc == 0 && renameat(c->dirfd, tmp, c->dirfd, name) < 0)
        rc = -errno;
    if (rc < 0)
        (void)unlinkat(c->dirfd, tmp, 0);
    return rc;
}

/* pread exactly n bytes at off. 0, -EIO on a short file, -errno. */
static int pread_exact(int fd, void *buf, uint64_t n, uint64_t off)
{
    uint64_t done = 0;
    while (done < n) {
        size_t want = n - done > (1u << 30) ? (1u << 30) : (size_t)(n - done);
        ssize_t r = pread(fd, (char *)buf + done, want, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO;
        done += (uint64_t)r;
    }
    return 0;
}

/* ---- read ---------------------------------------------------------------- */

int bfs_cache_read(struct bfs_cache *c, struct bfs_store *st, const char *key, uint64_t unit_off,
                   uint64_t unit_len, uint64_t want_off, uint64_t want_len, void *buf)
{
    if (!c || !st || !key || (want_len && !buf))
        return -EINVAL;
    if (unit_len == 0 || unit_off > UINT64_MAX - unit_len || want_off < unit_off ||
        want_off > UINT64_MAX - want_len || want_off + want_len > unit_off + unit_len ||
        unit_len > SIZE_MAX || unit_off + unit_len > (uint64_t)INT64_MAX)
        return -EINVAL;
    if (want_len == 0)
        return 0;
    uint8_t id[32];
    char name[NAME_LEN + 1];
    int idrc = unit_id(key, unit_off, unit_len, id);
    if (idrc < 0) {
        bfs_error("cache: naming the entry of %s bytes %" PRIu64 "+%" PRIu64 ": %s", key, unit_off,
                  unit_len, strerror(-idrc));
        return idrc;
    }
    id_name(id, name);
    uint64_t rel = want_off - unit_off;

    pthread_mutex_lock(&c->lock);
    for (int attempt = 0;; attempt++) {
        struct entry *e = index_find(c, id, key, unit_off, unit_len);
        if (e) {
            int fd = openat(c->dirfd, name, O_RDONLY | O_CLOEXEC);
            struct stat sb;
            int ok = fd >= 0 && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
                     (uint64_t)sb.st_size == unit_len;
            if (ok) {
                lru_unlink(e);
                lru_push_front(c, e);
                pthread_mutex_unlock(&c->lock);
                int rc = pread_exact(fd, buf, want_len, rel);
                close(fd);
                if (rc == 0) {
                    if (c->stats)
                        bfs_stats_add(c->stats, cache_hits, 1);
                    return 0;
                }
                pthread_mutex_lock(&c->lock);
                bfs_warn("cache: reading %s/%s (%s bytes %" PRIu64 "+%" PRIu64 "): %s; fetching "
                         "it again",
                         c->dir, name, key, unit_off, unit_len, strerror(-rc));
                e = index_find(c, id, key, unit_off, unit_len); /* may be gone meanwhile */
            } else {
                bfs_warn("cache: entry %s/%s (%s bytes %" PRIu64 "+%" PRIu64
                         ") is missing or has the wrong size; fetching it again",
                         c->dir, name, key, unit_off, unit_len);
                if (fd >= 0)
                    close(fd);
            }
            if (e)
                index_drop(c, e);
            if (attempt < 3)
                continue;
            /* An entry keeps going bad: fall through to a fetch. */
        }
        if (c->waiting_max && c->waiting >= c->waiting_max) {
            /* The store is not keeping up: every read waiting on it holds a
             * FUSE worker thread, and uploads and stats need some. */
            time_t now = time(NULL);
            bool warn = now != c->busy_warned;
            c->busy_warned = now;
            pthread_mutex_unlock(&c->lock);
            if (warn)
                bfs_warn("cache: %u reads already wait for the store; %s bytes %" PRIu64 "+%" PRIu64
                         " fails with EIO (at most one such line a second)",
                         c->waiting_max, key, unit_off, unit_len);
            return -EIO;
        }
        struct fetch *f = inflight_find(c, id);
        if (f) {
            /* Someone is fetching this unit: wait and share their bytes. */
            c->waiting++;
            f->refs++;
            while (!f->done)
                pthread_cond_wait(&c->cond, &c->lock);
            int rc = f->rc;
            if (rc == 0) {
                memcpy(buf, f->buf + rel, (size_t)want_len);
                if (c->stats)
                    bfs_stats_add(c->stats, cache_hits, 1);
            }
            fetch_unref(f);
            c->waiting--;
            pthread_mutex_unlock(&c->lock);
            return rc;
        }
        break;
    }

    /* A miss: this thread fetches the unit. */
    struct fetch *f = calloc(1, sizeof *f);
    if (!f) {
        pthread_mutex_unlock(&c->lock);
        return -ENOMEM;
    }
    memcpy(f->id, id, 32);
    f->refs = 1;
    f->next = c->inflight;
    c->inflight = f;
    c->waiting++;
    uint64_t seq = c->tmp_seq++;
    if (c->stats)
        bfs_stats_add(c->stats, cache_misses, 1);
    pthread_mutex_unlock(&c->lock);

    uint8_t *data = malloc((size_t)unit_len);
    int rc = data ? bfs_store_get_range(st, key, unit_off, unit_len, data, NULL) : -ENOMEM;
    struct entry *ne = NULL;
    if (rc == 0) {
        memcpy(buf, data + rel, (size_t)want_len);
        if (unit_len <= c->max_bytes) {
            ne = calloc(1, sizeof *ne);
            char *k = ne ? strdup(key) : NULL;
            int wrc = k ? write_entry(c, name, seq, data, unit_len) : -ENOMEM;
            if (wrc == 0) {
                memcpy(ne->id, id, 32);
                ne->key = k;
                ne->off = unit_off;
                ne->len = unit_len;
                ne->prev = ne->next = ne;
            } else {
                free(k);
                free(ne);
                ne = NULL;
                pthread_mutex_lock(&c->lock);
                int warned = c->write_warned;
                c->write_warned = 1;
                pthread_mutex_unlock(&c->lock);
                if (!warned)
                    bfs_warn("cache: cannot keep entries in %s: %s (reads still work, from the "
                             "store; further failures are logged at debug level)",
                             c->dir, strerror(-wrc));
                else
                    bfs_debug("cache: cannot keep %s/%s: %s", c->dir, name, strerror(-wrc));
            }
        }
    }

    pthread_mutex_lock(&c->lock);
    if (ne) {
        assert(!index_find(c, id, key, unit_off, unit_len));
        index_insert(c, ne);
        while (c->total > c->max_bytes) {
            struct entry *victim = c->lru.prev;
            assert(victim != &c->lru && victim != ne);
            index_drop(c, victim);
        }
    }
    struct fetch **pp = &c->inflight;
    while (*pp != f) {
        assert(*pp);
        pp = &(*pp)->next;
    }
    *pp = f->next;
    f->done = 1;
    f->rc = rc;
    if (rc == 0) {
        f->buf = data;
    } else {
        free(data);
    }
    pthread_cond_broadcast(&c->cond);
    fetch_unref(f);
    c->waiting--;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

size_t bfs_cache_drop(struct bfs_cache *c, const char *key)
{
    size_t n = 0;
    pthread_mutex_lock(&c->lock);
    for (struct entry *e = c->lru.next, *next; e != &c->lru; e = next) {
        next = e->next;
        if (strcmp(e->key, key) == 0) {
            index_drop(c, e);
            n++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}

void bfs_cache_set_waiting_max(struct bfs_cache *c, unsigned n)
{
    pthread_mutex_lock(&c->lock);
    c->waiting_max = n;
    pthread_mutex_unlock(&c->lock);
}

/* ---- open / close ---------------------------------------------------------- */

static int is_entry_name(const char *n)
{
    if (strncmp(n, TMP_PREFIX, strlen(TMP_PREFIX)) == 0)
        return 1;
    if (strlen(n) != NAME_LEN)
        return 0;
    for (const char *p = n; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

/* Remove every entry and temporary file a previous mount left. */
static int clear_dir(struct bfs_cache *c)
{
    int fd = openat(c->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    int rc = 0;
    unsigned long removed = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                rc = -errno;
            break;
        }
        if (!is_entry_name(de->d_name))
            continue;
        if (unlinkat(c->dirfd, de->d_name, 0) < 0) {
            if (errno == ENOENT)
                continue;
            rc = -errno;
            break;
        }
        removed++;
    }
    closedir(d);
    if (removed)
        bfs_debug("cache: removed %lu entries of a previous mount from %s", removed, c->dir);
    return rc;
}

int bfs_cache_open(const char *dir, uint64_t max_bytes, struct bfs_stats *stats,
                   struct bfs_cache **out)
{
    assert(out);
    *out = NULL;
    if (!dir || !dir[0])
        return -EINVAL;
    int rc = bfs_mkdirs(dir, 0700);
    if (rc < 0)
        return rc;
    struct bfs_cache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->dirfd = -1;
    c->dir = strdup(dir);
    c->nbuckets = BUCKETS_FIRST;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->dir || !c->buckets) {
        free(c->dir);
        free(c->buckets);
        free(c);
        return -ENOMEM;
    }
    c->max_bytes = max_bytes;
    c->stats = stats;
    c->lru.prev = c->lru.next = &c->lru;
    /* Never follow a link: clear_dir removes every entry-named file in it. */
    c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (c->dirfd < 0) {
        rc = -errno;
    } else {
        rc = clear_dir(c);
    }
    if (rc < 0) {
        if (c->dirfd >= 0)
            close(c->dirfd);
        free(c->dir);
        free(c->buckets);
        free(c);
        return rc;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    *out = c;
    return 0;
}

void bfs_cache_close(struct bfs_cache *c)
{
    if (!c)
        return;
    assert(!c->inflight); /* no reader may still be inside bfs_cache_read */
    struct entry *e = c->lru.next;
    while (e != &c->lru) {
        struct entry *next = e->next;
        free(e->key);
        free(e);
        e = next;
    }
    free(c->buckets);
    close(c->dirfd);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c->dir);
    free(c);
}
