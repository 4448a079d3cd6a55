/* spool.c - the bytes of the uploads in incoming/: in memory under the
 * mount's bound, spilled to <state>/spool past it (spool.h). */
#include "battlefs/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "battlefs/fsutil.h"
#include "battlefs/log.h"
#include "battlefs/stats.h"

/* One upload held in memory: at most this, and half the bound. */
#define FILE_MEM_MAX (1024 * 1024)
/* A spilled upload up to this size is read into memory for its ingest;
 * larger ones are mapped (no second copy of a big upload). */
#define READ_MAX (1024 * 1024)

struct bfs_spool {
    char *dir;
    bool named;
    uint64_t max;      /* -o upload_memory; 0: no memory held, no bound */
    uint64_t hold_max; /* bytes of uploads being written held in memory: max / 2 */
    uint64_t file_max; /* of one upload: min(FILE_MEM_MAX, hold_max) */
    struct bfs_stats *stats;
    pthread_mutex_t lock;   /* guards everything below (a leaf) */
    pthread_cond_t room;    /* memory was given back */
    uint64_t held;          /* charged by uploads held in memory (their capacity): <= hold_max */
    uint64_t work;          /* charged by ingests (bfs_spool_view): <= max - hold_max, or one */
    unsigned waiters;       /* ingests waiting for room */
    unsigned long long seq; /* names of named spool files */
};

struct bfs_spool_file {
    struct bfs_spool *sp;
    pthread_mutex_t lock; /* guards everything below; see spool.h */
    uint8_t *mem;         /* in memory: cap bytes, charged to sp->held */
    size_t cap;
    uint64_t size;
    int fd;     /* the spool file once spilled, else -1 */
    char *name; /* its name when named, else NULL (O_TMPFILE) */
    /* between bfs_spool_view and bfs_spool_unview */
    uint8_t *copy; /* a spilled upload's bytes, read or mapped */
    size_t copy_len;
    uint64_t charge; /* charged to sp->work */
};

/* sp->lock held: the gauges of .battlefs/stats. */
static void publish(struct bfs_spool *sp)
{
    if (!sp->stats)
        return;
    uint64_t now = sp->held + sp->work;
    atomic_store(&sp->stats->upload_memory_bytes, now);
    if (now > atomic_load(&sp->stats->upload_memory_peak))
        atomic_store(&sp->stats->upload_memory_peak, now);
}

/* Charge n bytes held by an upload being written, if they fit. */
static bool hold(struct bfs_spool *sp, uint64_t n)
{
    pthread_mutex_lock(&sp->lock);
    bool ok = sp->held + n <= sp->hold_max;
    if (ok) {
        sp->held += n;
        publish(sp);
    }
    pthread_mutex_unlock(&sp->lock);
    return ok;
}

static void give_back(struct bfs_spool *sp, uint64_t *counter, uint64_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&sp->lock);
    *counter -= n;
    if (sp->waiters)
        pthread_cond_broadcast(&sp->room);
    publish(sp);
    pthread_mutex_unlock(&sp->lock);
}

/* Charge an ingest's n bytes of working memory: wait until they fit in the
 * ingests' half of the bound, or until no other ingest holds a charge. */
static void charge_work(struct bfs_spool *sp, uint64_t n)
{
    uint64_t work_max = sp->max - sp->hold_max;
    pthread_mutex_lock(&sp->lock);
    if (sp->work > 0 && sp->work + n > work_max) {
        if (sp->stats)
            bfs_stats_add(sp->stats, upload_memory_waits, 1);
        sp->waiters++;
        while (sp->work > 0 && sp->work + n > work_max)
            pthread_cond_wait(&sp->room, &sp->lock);
        sp->waiters--;
    }
    sp->work += n;
    publish(sp);
    pthread_mutex_unlock(&sp->lock);
}

/* Remove what a previous daemon left in dir (never through a link). */
static int empty_dir(const char *dir)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    if (!d) {
        int e = errno;
        bfs_error("cannot open spool %s: %s", dir, strerror(e));
        if (dfd >= 0)
            close(dfd);
        return -e;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) < 0)
            bfs_warn("cannot remove stale spool file %s: %s", e->d_name, strerror(errno));
    }
    closedir(d);
    return 0;
}

int bfs_spool_open(const char *dir, uint64_t mem_max, bool named, struct bfs_stats *stats,
                   struct bfs_spool **out)
{
    int rc = empty_dir(dir);
    if (rc < 0)
        return rc;
    struct bfs_spool *sp = calloc(1, sizeof *sp);
    if (!sp || !(sp->dir = strdup(dir))) {
        free(sp);
        return -ENOMEM;
    }
    sp->named = named;
    sp->max = mem_max;
    sp->hold_max = mem_max / 2;
    sp->file_max = sp->hold_max < FILE_MEM_MAX ? sp->hold_max : FILE_MEM_MAX;
    sp->stats = stats;
    pthread_mutex_init(&sp->lock, NULL);
    pthread_cond_init(&sp->room, NULL);
    *out = sp;
    return 0;
}

void bfs_spool_close(struct bfs_spool *sp)
{
    if (!sp)
        return;
    pthread_cond_destroy(&sp->room);
    pthread_mutex_destroy(&sp->lock);
    free(sp->dir);
    free(sp);
}

/* A spool file: anonymous (O_TMPFILE) where the file system has them, so
 * there is no name to create or unlink and a crash leaves nothing behind;
 * else <dir>/<n>.upload, unlinked when the upload is freed. The fd or
 * -errno; *name is the name, or NULL. */
static int open_file(struct bfs_spool *sp, char **name)
{
    *name = NULL;
    int fd = -1;
    errno = EOPNOTSUPP;
    if (!sp->named)
        fd = open(sp->dir, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
        int e = errno;
        bfs_error("cannot create a spool file in %s: %s", sp->dir, strerror(e));
        return -e;
    }
    pthread_mutex_lock(&sp->lock);
    unsigned long long n = ++sp->seq;
    pthread_mutex_unlock(&sp->lock);
    char base[64];
    snprintf(base, sizeof base, "%llu.upload", n);
    char *path = bfs_path_join(sp->dir, base);
    if (!path)
        return -ENOMEM;
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        bfs_error("cannot create spool file %s: %s", path, strerror(e));
        free(path);
        return -e;
    }
    *name = path;
    return fd;
}

int bfs_spool_file_new(struct bfs_spool *sp, struct bfs_spool_file **out)
{
    struct bfs_spool_file *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->sp = sp;
    f->fd = -1;
    if (sp->max == 0) {
        f->fd = open_file(sp, &f->name);
        if (f->fd < 0) {
            int rc = f->fd;
            free(f);
            return rc;
        }
    }
    pthread_mutex_init(&f->lock, NULL);
    *out = f;
    return 0;
}

void bfs_spool_file_free(struct bfs_spool_file *f)
{
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    if (f->name && unlink(f->name) < 0 && errno != ENOENT)
        bfs_warn("cannot remove spool file %s: %s", f->name, strerror(errno));
    free(f->name);
    give_back(f->sp, &f->sp->held, f->cap);
    free(f->mem);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* f->lock held: move the bytes in memory to a spool file, for good. */
static int spill(struct bfs_spool_file *f)
{
    int fd = open_file(f->sp, &f->name);
    if (fd < 0)
        return fd;
    int rc = bfs_write_all(fd, f->mem, (size_t)f->size);
    if (rc < 0) {
        bfs_error("cannot spill an upload to the spool: %s", strerror(-rc));
        close(fd);
        if (f->name)
            unlink(f->name);
        free(f->name);
        f->name = NULL;
        return rc;
    }
    f->fd = fd;
    give_back(f->sp, &f->sp->held, f->cap);
    free(f->mem);
    f->mem = NULL;
    f->cap = 0;
    if (f->sp->stats)
        bfs_stats_add(f->sp->stats, uploads_spilled, 1);
    return 0;
}

/* f->lock held, f in memory: room for end bytes in memory, or f spilled. */
static int reserve(struct bfs_spool_file *f, uint64_t end)
{
    struct bfs_spool *sp = f->sp;
    if (end <= f->cap)
        return 0;
    if (end <= sp->file_max) {
        /* Doubling, within the bounds; the first write takes what it needs
         * (most uploads are written in one). */
        uint64_t want = 2 * (uint64_t)f->cap;
        if (want > sp->file_max)
            want = sp->file_max;
        if (want < end)
            want = end;
        if (!hold(sp, want - f->cap)) {
            if (want == end || !hold(sp, end - f->cap))
                return spill(f);
            want = end;
        }
        uint8_t *m = realloc(f->mem, (size_t)want);
        if (m) {
            f->mem = m;
            f->cap = (size_t)want;
            return 0;
        }
        give_back(sp, &sp->held, want - f->cap);
    }
    return spill(f);
}

ssize_t bfs_spool_write(struct bfs_spool_file *f, const void *buf, size_t n, uint64_t off)
{
    if (off > UINT64_MAX - n)
        return -EFBIG;
    if (n == 0)
        return 0; /* as pwrite(2): nothing written, the size unchanged */
    uint64_t end = off + n;
    ssize_t rc = 0;
    pthread_mutex_lock(&f->lock);
    if (f->fd < 0)
        rc = reserve(f, end);
    if (rc < 0) {
        /* nothing written */
    } else if (f->fd < 0) {
        if (off > f->size)
            memset(f->mem + f->size, 0, (size_t)(off - f->size));
        memcpy(f->mem + off, buf, n);
        if (end > f->size)
            f->size = end;
        rc = (ssize_t)n;
    } else {
        rc = pwrite(f->fd, buf, n, (off_t)off);
        if (rc < 0)
            rc = -errno;
        else if (off + (uint64_t)rc > f->size)
            f->size = off + (uint64_t)rc;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

ssize_t bfs_spool_read(struct bfs_spool_file *f, void *buf, size_t n, uint64_t off)
{
    ssize_t rc;
    pthread_mutex_lock(&f->lock);
    if (f->fd >= 0) {
        rc = pread(f->fd, buf, n, (off_t)off);
        if (rc < 0)
            rc = -errno;
    } else if (off >= f->size) {
        rc = 0;
    } else {
        if (n > f->size - off)
            n = (size_t)(f->size - off);
        memcpy(buf, f->mem + off, n);
        rc = (ssize_t)n;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

int bfs_spool_truncate(struct bfs_spool_file *f, uint64_t size)
{
    int rc = 0;
    pthread_mutex_lock(&f->lock);
    if (f->fd < 0 && size > f->size)
        rc = reserve(f, size);
    if (rc < 0) {
        /* nothing changed */
    } else if (f->fd >= 0) {
        if (ftruncate(f->fd, (off_t)size) < 0)
            rc = -errno;
        else
            f->size = size;
    } else {
        if (size > f->size)
            memset(f->mem + f->size, 0, (size_t)(size - f->size));
        f->size = size;
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

int bfs_spool_sync(struct bfs_spool_file *f, bool datasync)
{
    int rc = 0;
    pthread_mutex_lock(&f->lock);
    if (f->fd >= 0 && (datasync ? fdatasync(f->fd) : fsync(f->fd)) < 0)
        rc = -errno;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

bool bfs_spool_spilled(struct bfs_spool_file *f)
{
    pthread_mutex_lock(&f->lock);
    bool spilled = f->fd >= 0;
    pthread_mutex_unlock(&f->lock);
    return spilled;
}

/* f->lock held, f spilled: its len bytes in f->copy. Read for small uploads
 * (the common case: an munmap in this many-threaded process is a TLB
 * shootdown on every CPU that runs one of its threads, which costs more than
 * copying a few pages), mapped for large ones. 0 or -errno. */
static int load(struct bfs_spool_file *f, size_t len)
{
    if (len > READ_MAX) {
        void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, f->fd, 0);
        if (m == MAP_FAILED)
            return -errno;
        f->copy = m;
        f->copy_len = len;
        return 0;
    }
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    for (size_t got = 0; got < len;) {
        ssize_t n = pread(f->fd, buf + got, len - got, (off_t)got);
        if (n <= 0) {
            int e = n < 0 ? errno : EIO; /* shorter than its size */
            free(buf);
            return -e;
        }
        got += (size_t)n;
    }
    f->copy = buf;
    f->copy_len = len;
    return 0;
}

int bfs_spool_view(struct bfs_spool_file *f, const uint8_t **data, size_t *len)
{
    struct bfs_spool *sp = f->sp;
    pthread_mutex_lock(&f->lock);
    if (f->size > SIZE_MAX / 2) {
        pthread_mutex_unlock(&f->lock);
        return -EFBIG;
    }
    size_t n = (size_t)f->size;
    /* the normalised copy, about the upload's size; a spilled one's bytes */
    f->charge = sp->max == 0 ? 0 : f->fd >= 0 ? 2 * (uint64_t)n : n;
    if (f->charge)
        charge_work(sp, f->charge);
    if (f->fd >= 0) {
        int rc = load(f, n);
        if (rc < 0) {
            give_back(sp, &sp->work, f->charge);
            f->charge = 0;
            pthread_mutex_unlock(&f->lock);
            return rc;
        }
        *data = f->copy;
    } else {
        *data = f->mem;
    }
    *len = n;
    return 0;
}

void bfs_spool_unview(struct bfs_spool_file *f)
{
    if (f->copy) {
        if (f->copy_len > READ_MAX)
            munmap(f->copy, f->copy_len);
        else
            free(f->copy);
        f->copy = NULL;
        f->copy_len = 0;
    }
    give_back(f->sp, &f->sp->work, f->charge);
    f->charge = 0;
    pthread_mutex_unlock(&f->lock);
}
