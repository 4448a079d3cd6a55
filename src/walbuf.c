/* walbuf.c - an SQLite VFS that gathers the consecutive writes of a WAL and
 * of a checkpoint into one system call (walbuf.h). */
#include "battlefs/walbuf.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VFS_NAME "battlefs-walbuf"
/* Bytes gathered before they are written (30 frames of 4 KiB pages): the
 * unix VFS writes at most 128 KiB - 1 bytes in one call (its seekAndWrite
 * masks the count with 0x1ffff), so no more is handed to it at once. */
#define BUF_MAX (124 * 1024)

/* A WAL or main database file: our methods, then the default VFS's file
 * (real). */
struct wal_file {
    sqlite3_file base;
    sqlite3_file *real;
    uint8_t *buf; /* BUF_MAX bytes once written to */
    size_t len;   /* bytes gathered, to be written at off */
    sqlite3_int64 off;
    /* A main database: its connection's WAL while that is open; a WAL: its
     * main database. Both files are used by one connection, under its mutex.
     * A commit that is not synced (PRAGMA synchronous = NORMAL) publishes its
     * frames through the main database's shared memory (a barrier, then the
     * lock's release) without a call on the WAL: those calls write what the
     * WAL gathered first, or another connection would read past its end. */
    struct wal_file *wal, *db;
};

static sqlite3_vfs *root_vfs(sqlite3_vfs *v)
{
    return v->pAppData;
}

/* Write what is gathered. SQLite's code on failure. */
static int flush(struct wal_file *f)
{
    if (f->len == 0)
        return SQLITE_OK;
    int rc = f->real->pMethods->xWrite(f->real, f->buf, (int)f->len, f->off);
    if (rc == SQLITE_OK) /* else kept: the next flush writes it again and says so */
        f->len = 0;
    return rc;
}

static int w_close(sqlite3_file *file)
{
    struct wal_file *f = (struct wal_file *)file;
    if (f->db && f->db->wal == f)
        f->db->wal = NULL;
    if (f->wal && f->wal->db == f)
        f->wal->db = NULL;
    int rc = flush(f);
    int rc2 = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int w_read(sqlite3_file *file, void *p, int n, sqlite3_int64 off)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, p, n, off);
}

static int w_write(sqlite3_file *file, const void *p, int n, sqlite3_int64 off)
{
    struct wal_file *f = (struct wal_file *)file;
    size_t k = (size_t)n;
    if (f->len > 0 && off >= f->off && off + n <= f->off + (sqlite3_int64)f->len) {
        memcpy(f->buf + (off - f->off), p, k); /* a frame written again */
        return SQLITE_OK;
    }
    if (f->len > 0 && (off != f->off + (sqlite3_int64)f->len || f->len + k > BUF_MAX)) {
        int rc = flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (k > BUF_MAX)
        return f->real->pMethods->xWrite(f->real, p, n, off);
    if (!f->buf && !(f->buf = malloc(BUF_MAX)))
        return f->real->pMethods->xWrite(f->real, p, n, off);
    if (f->len == 0)
        f->off = off;
    memcpy(f->buf + f->len, p, k);
    f->len += k;
    return SQLITE_OK;
}

static int w_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int w_sync(sqlite3_file *file, int flags)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int w_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

/* Locks: what was gathered is written first, so nothing is left in the
 * buffer once a lock that covers it is given up. */
static int w_lock(sqlite3_file *file, int level)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xLock(f->real, level);
}

static int w_unlock(sqlite3_file *file, int level)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xUnlock(f->real, level);
}

static int w_check_reserved(sqlite3_file *file, int *out)
{
    struct wal_file *f = (struct wal_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int w_file_control(sqlite3_file *file, int op, void *arg)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int w_sector_size(sqlite3_file *file)
{
    struct wal_file *f = (struct wal_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int w_device(sqlite3_file *file)
{
    struct wal_file *f = (struct wal_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int w_shm_map(sqlite3_file *file, int pg, int pgsz, int extend, void volatile **pp)
{
    struct wal_file *f = (struct wal_file *)file;
    return f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, pp);
}

static int w_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    if (rc == SQLITE_OK && f->wal)
        rc = flush(f->wal);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void w_shm_barrier(sqlite3_file *file)
{
    struct wal_file *f = (struct wal_file *)file;
    /* No way to return an error: a failed write is written again by the
     * next flush, and the lock's release after the barrier reports it. */
    if (flush(f) == SQLITE_OK && f->wal)
        flush(f->wal);
    f->real->pMethods->xShmBarrier(f->real);
}

static int w_shm_unmap(sqlite3_file *file, int del)
{
    struct wal_file *f = (struct wal_file *)file;
    return f->real->pMethods->xShmUnmap(f->real, del);
}

static int w_fetch(sqlite3_file *file, sqlite3_int64 off, int n, void **pp)
{
    struct wal_file *f = (struct wal_file *)file;
    int rc = flush(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFetch(f->real, off, n, pp);
}

static int w_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    struct wal_file *f = (struct wal_file *)file;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

static const sqlite3_io_methods wal_methods = {
    .iVersion = 3,
    .xClose = w_close,
    .xRead = w_read,
    .xWrite = w_write,
    .xTruncate = w_truncate,
    .xSync = w_sync,
    .xFileSize = w_file_size,
    .xLock = w_lock,
    .xUnlock = w_unlock,
    .xCheckReservedLock = w_check_reserved,
    .xFileControl = w_file_control,
    .xSectorSize = w_sector_size,
    .xDeviceCharacteristics = w_device,
    .xShmMap = w_shm_map,
    .xShmLock = w_shm_lock,
    .xShmBarrier = w_shm_barrier,
    .xShmUnmap = w_shm_unmap,
    .xFetch = w_fetch,
    .xUnfetch = w_unfetch,
};

/* A WAL or a main database is wrapped (its real file right after our
 * struct); any other file (journals, temporary files) is the default VFS's
 * own, in the same memory. */
static int v_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *file, int flags, int *out)
{
    sqlite3_vfs *root = root_vfs(v);
    if (!(flags & (SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_DB)))
        return root->xOpen(root, name, file, flags, out);
    struct wal_file *f = (struct wal_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    int rc = root->xOpen(root, name, f->real, flags, out);
    if (rc != SQLITE_OK) {
        f->base.pMethods = NULL;
        return rc;
    }
    /* The methods of the version the real file has (3 for the unix VFS). */
    if (f->real->pMethods->iVersion < 3) {
        f->real->pMethods->xClose(f->real);
        f->base.pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    f->base.pMethods = &wal_methods;
    if (flags & SQLITE_OPEN_WAL) {
        sqlite3_file *m = sqlite3_database_file_object(name);
        if (m && m->pMethods == &wal_methods) {
            f->db = (struct wal_file *)m;
            f->db->wal = f;
        }
    }
    return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    return root_vfs(v)->xDelete(root_vfs(v), name, sync_dir);
}

static int v_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    return root_vfs(v)->xAccess(root_vfs(v), name, flags, out);
}

static int v_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    return root_vfs(v)->xFullPathname(root_vfs(v), name, n, out);
}

static void *v_dl_open(sqlite3_vfs *v, const char *name)
{
    return root_vfs(v)->xDlOpen(root_vfs(v), name);
}

static void v_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    root_vfs(v)->xDlError(root_vfs(v), n, msg);
}

static void (*v_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    return root_vfs(v)->xDlSym(root_vfs(v), h, sym);
}

static void v_dl_close(sqlite3_vfs *v, void *h)
{
    root_vfs(v)->xDlClose(root_vfs(v), h);
}

static int v_randomness(sqlite3_vfs *v, int n, char *out)
{
    return root_vfs(v)->xRandomness(root_vfs(v), n, out);
}

static int v_sleep(sqlite3_vfs *v, int us)
{
    return root_vfs(v)->xSleep(root_vfs(v), us);
}

static int v_current_time(sqlite3_vfs *v, double *t)
{
    return root_vfs(v)->xCurrentTime(root_vfs(v), t);
}

static int v_last_error(sqlite3_vfs *v, int n, char *msg)
{
    return root_vfs(v)->xGetLastError(root_vfs(v), n, msg);
}

static int v_current_time64(sqlite3_vfs *v, sqlite3_int64 *t)
{
    return root_vfs(v)->xCurrentTimeInt64(root_vfs(v), t);
}

/* Filled once by register_vfs (pthread_once), then read-only: SQLite keeps
 * a pointer to it. */
static sqlite3_vfs walbuf_vfs;
static const char *registered;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void register_vfs(void)
{
    sqlite3_vfs *root = sqlite3_vfs_find(NULL);
    if (!root || root->iVersion < 2 || !root->xCurrentTimeInt64)
        return;
    walbuf_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(struct wal_file) + root->szOsFile,
        .mxPathname = root->mxPathname,
        .zName = VFS_NAME,
        .pAppData = root,
        .xOpen = v_open,
        .xDelete = v_delete,
        .xAccess = v_access,
        .xFullPathname = v_full_pathname,
        .xDlOpen = v_dl_open,
        .xDlError = v_dl_error,
        .xDlSym = v_dl_sym,
        .xDlClose = v_dl_close,
        .xRandomness = v_randomness,
        .xSleep = v_sleep,
        .xCurrentTime = v_current_time,
        .xGetLastError = v_last_error,
        .xCurrentTimeInt64 = v_current_time64,
    };
    if (sqlite3_vfs_register(&walbuf_vfs, 0) == SQLITE_OK)
        registered = VFS_NAME;
}

const char *bfs_walbuf_vfs(void)
{
    pthread_once(&once, register_vfs);
    return registered;
}
