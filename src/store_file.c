/* store_file.c - the file:// store: objects are files under a local directory.
 *
 * The root directory is opened once (O_DIRECTORY) and every operation works
 * relative to that descriptor (openat, mkdirat, renameat, unlinkat), so the
 * store keeps working on the directory it was opened on and needs no shared
 * mutable state: every operation is thread-safe.
 *
 * put: make "<dir of key>/.bfs-tmp-<pid>-<n>-<leaf>" (0600, parent directories
 *   created 0700 as needed, each new one made durable by an fsync of its
 *   parent) hold the local file's bytes, fsync it, rename it over the key,
 *   fsync the directory. Readers see the old object or the new one, never a
 *   partial one. On failure the temporary file is removed (directories created
 *   on the way stay; they hold no objects).
 *   The temporary file is a copy, or, when the caller allows it (may_link: the
 *   file will not change and is removed after the put), a hard link to the
 *   local file itself: no byte is copied, and the fsync makes the caller's
 *   bytes durable (the roller does not fsync its archives). A link that fails
 *   for any reason (EXDEV: another file system; EPERM: no hard links there or
 *   protected_hardlinks; EMLINK; ...) falls back to the copy, which then
 *   reports its own errors. The linked object takes mode 0600 like a copy.
 *   Conditional puts (store.h) differ only in how the temporary file becomes
 *   the object:
 *   - create-only: renameat2(RENAME_NOREPLACE), or, where the file system
 *     does not offer it (EINVAL, ENOSYS, EOPNOTSUPP; in fault-injection
 *     builds also with BATTLEFS_FAULT_STORE=no-noreplace), linkat() of the
 *     temporary file to the key and its unlink: both fail with EEXIST if the
 *     key exists, atomically (no check-then-rename race). On EEXIST the
 *     existing object is compared byte for byte with the local file: the same
 *     bytes are success (the object is fsynced, in case its first writer died
 *     before it could), others -EEXIST with an ERROR line.
 *   - compare-and-swap: under an exclusive flock(2) of the key's directory
 *     (every open of a directory is its own open file description, so threads
 *     and processes exclude one another), the object's ETag is computed and
 *     compared, the temporary file renamed over the key and the directory
 *     fsynced; then the lock is released. A missing key is -ENOENT, another
 *     ETag -ESTALE (unless the object already holds these bytes: success).
 *     A file system without flock on directories (NFS) fails the CAS with
 *     the flock error (-ENOLCK, -EBADF): it is never done unlocked.
 *   Plain puts and del take the same lock around their rename or unlink when
 *   they can (best effort: without it they behave as before), so they are
 *   ordered with a CAS of the same key.
 *   ETag: the lower-case hex MD5 of the content, as S3 reports for a
 *   single-part PUT: it changes exactly when the bytes do (never with a new
 *   inode or mtime alone), and a writer knows the ETag of what it wrote.
 *   The price: head, get and a CAS read the whole object to hash it, which is
 *   what they are for (small objects: leases, manifests).
 * get_range: pread of exactly len bytes; a range past the end is -EIO before
 *   anything is read; a file that shrinks under the read is -EIO too.
 * head: size (fstat) and ETag (MD5 of the content read through one open file:
 *   objects are replaced by rename, never changed in place, so an open file
 *   is one version). get: the same, with the bytes.
 * list: a recursive walk from the deepest directory the prefix names, skipping
 *   temporary files, symbolic links, non-regular files and names that are not
 *   valid keys.
 * list_after: the same walk, skipping the keys (and whole directories) that do
 *   not sort after start_after; the keys found are sorted with strcmp and
 *   delivered in order (at most max_keys; only the 2 * max_keys smallest are
 *   held while walking).
 * del: unlink; a missing key is not an error (as S3).
 *
 * clean: remove the temporary files a killed daemon left (older than a bound,
 *   so a put in progress, here or on another host, is never touched).
 *
 * The root is reopened by its path when it was deleted (an operator removed and
 * made the directory again): an operation that fails with ENOENT or ESTALE
 * checks whether the open root still has a link, reopens it if not, and tries
 * once more. The replaced descriptors stay open until the store is closed
 * (another thread may still be using one), at most ROOTS_MAX of them.
 *
 * Failures are returned as -errno (EROFS, ENOSPC, EDQUOT, EACCES pass through)
 * and logged at DEBUG level only: the caller reports them with its context.
 */
#include "battlefs/store.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "battlefs/log.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"

#define COPY_CHUNK (1u << 20)

#define ROOTS_MAX 16 /* reopens of a deleted root before giving up */

struct file_store {
    struct bfs_store base;
    char *dir;                   /* the root's path, to reopen it */
    atomic_int rootfd;           /* the root directory */
    pthread_mutex_t reopen_lock; /* guards old[] and the swap of rootfd (a leaf lock) */
    int old[ROOTS_MAX];          /* replaced roots, closed at destroy */
    size_t n_old;
    int no_noreplace; /* fault injection: act as if RENAME_NOREPLACE were missing */
};

/* Numbers the temporary files of this process: one counter for every store
 * opened in it (two stores on one directory must not pick the same name). */
static atomic_uint_fast64_t tmp_seq;

static struct file_store *fs_of(struct bfs_store *st)
{
    return (struct file_store *)st;
}

static int root(struct file_store *st)
{
    return atomic_load(&st->rootfd);
}

/* An operation on root `used` failed with rc: true if it is worth trying
 * again on a new root (another thread reopened it, or the root directory was
 * deleted and its path now opens). */
static bool retry_on_new_root(struct file_store *st, int used, int rc)
{
    if (rc != -ENOENT && rc != -ESTALE)
        return false;
    bool again = false;
    pthread_mutex_lock(&st->reopen_lock);
    struct stat sb;
    if (root(st) != used) {
        again = true;
    } else if (fstat(used, &sb) == 0 && sb.st_nlink == 0 && st->n_old < ROOTS_MAX) {
        int fd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            st->old[st->n_old++] = used;
            atomic_store(&st->rootfd, fd);
            bfs_warn("file store %s: the directory was deleted and made again: reopened it",
                     st->dir);
            again = true;
        }
    }
    pthread_mutex_unlock(&st->reopen_lock);
    return again;
}

static int close_checked(int fd)
{
    if (close(fd) < 0 && errno != EINTR)
        return -errno;
    return 0;
}

/* Open (creating with 0700 as needed) the directory holding key's leaf; the
 * directory part is key[0..dirlen). Returns a directory fd or -errno. */
static int open_parent(int rootfd, const char *key, size_t dirlen, int create)
{
    /* A new open file description (not dup): a directory stream's position
     * lives there, and concurrent walks must not share one. */
    int fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char comp[256];
    size_t i = 0;
    while (i < dirlen) {
        size_t j = i;
        while (j < dirlen && key[j] != '/')
            j++;
        size_t len = j - i;
        assert(len > 0 && len < sizeof comp); /* key checked */
        memcpy(comp, key + i, len);
        comp[len] = '\0';
        int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (nfd < 0 && errno == ENOENT && create) {
            if (mkdirat(fd, comp, 0700) < 0 && errno != EEXIST) {
                int e = errno;
                close(fd);
                return -e;
            }
            /* Make the new directory entry durable before anything is put in it. */
            if (fsync(fd) < 0) {
                int e = errno;
                close(fd);
                return -e;
            }
            nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (nfd < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        close(fd);
        fd = nfd;
        i = j + 1;
    }
    return fd;
}

static size_t dir_len(const char *key)
{
    const char *slash = strrchr(key, '/');
    return slash ? (size_t)(slash - key) : 0;
}

/* Copy all of src (size bytes) to dst. 0, -EIO if src changed size, -errno. */
static int copy_fd(int src, int dst, uint64_t size)
{
    uint64_t done = 0;
    int fallback = 0;
    while (!fallback && done < size) {
        size_t want = size - done > (1u << 30) ? (1u << 30) : (size_t)(size - done);
        ssize_t n = copy_file_range(src, NULL, dst, NULL, want, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                errno == ETXTBSY || errno == EPERM) {
                fallback = 1;
                break;
            }
            return -errno;
        }
        if (n == 0)
            return -EIO; /* the source shrank */
        done += (uint64_t)n;
    }
    if (fallback) {
        /* copy_file_range moved both file offsets by what it copied. */
        char *buf = malloc(COPY_CHUNK);
        if (!buf)
            return -ENOMEM;
        while (done < size) {
            size_t want = size - done > COPY_CHUNK ? COPY_CHUNK : (size_t)(size - done);
            ssize_t n = pread(src, buf, want, (off_t)done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                int e = errno;
                free(buf);
                return -e;
            }
            if (n == 0) {
                free(buf);
                return -EIO;
            }
            size_t w = 0;
            while (w < (size_t)n) {
                ssize_t m = pwrite(dst, buf + w, (size_t)n - w, (off_t)(done + w));
                if (m < 0 && errno == EINTR)
                    continue;
                if (m < 0) {
                    int e = errno;
                    free(buf);
                    return -e;
                }
                w += (size_t)m;
            }
            done += (uint64_t)n;
        }
        free(buf);
    }
    /* The source must not have grown either: what was stat'ed is what is stored. */
    char extra;
    ssize_t n;
    do
        n = pread(src, &extra, 1, (off_t)size);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n != 0)
        return -EIO;
    return 0;
}

/* Make tmp (in dfd) a hard link to the source file, open as src with stat sb.
 * 1: linked; 0: not (the reason logged at DEBUG; the caller copies). */
static int link_temp(int src, const struct stat *sb, const char *path, int dfd, const char *tmp,
                     const char *key)
{
    if (linkat(AT_FDCWD, path, dfd, tmp, 0) < 0) {
        bfs_debug("file store: put %s: cannot link %s (%s): copying it", key, path,
                  strerror(errno));
        return 0;
    }
    /* path must still name the file that was opened (and not a symbolic link,
     * which linkat links itself), and the object is 0600 like a copy. */
    struct stat lb;
    const char *why = NULL;
    if (fstatat(dfd, tmp, &lb, AT_SYMLINK_NOFOLLOW) < 0)
        why = strerror(errno);
    else if (lb.st_dev != sb->st_dev || lb.st_ino != sb->st_ino)
        why = "it was replaced after it was opened";
    else if ((sb->st_mode & 07777) != 0600 && fchmod(src, 0600) < 0)
        why = strerror(errno);
    if (!why)
        return 1;
    bfs_debug("file store: put %s: linked %s but %s: copying it", key, path, why);
    if (unlinkat(dfd, tmp, 0) < 0 && errno != ENOENT)
        bfs_debug("file store: put %s: removing %s: %s", key, tmp, strerror(errno));
    return 0;
}

/* Fill the new temporary file tmp (in dfd) with a copy of src (size bytes)
 * and fsync it. */
static int copy_temp(int src, uint64_t size, int dfd, const char *tmp)
{
    int tfd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (tfd < 0)
        return -errno;
    int rc = copy_fd(src, tfd, size);
    if (rc == 0 && fsync(tfd) < 0)
        rc = -errno;
    int crc = close_checked(tfd);
    return rc < 0 ? rc : crc;
}

/* ---- helpers of conditional puts ------------------------------------------ */

/* The lower-case hex MD5 of fd's content from offset 0 to its end (pread).
 * If size is not NULL, *size is set to the bytes hashed. */
static int md5_fd(int fd, char hex[33], uint64_t *size)
{
    struct bfs_md5 c;
    int rc = bfs_md5_init(&c);
    if (rc < 0)
        return rc;
    uint8_t *buf = malloc(COPY_CHUNK);
    if (!buf) {
        bfs_md5_discard(&c);
        return -ENOMEM;
    }
    uint64_t off = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, COPY_CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        bfs_md5_update(&c, buf, (size_t)n);
        off += (uint64_t)n;
    }
    free(buf);
    if (rc < 0) {
        bfs_md5_discard(&c);
        return rc;
    }
    uint8_t d[16];
    rc = bfs_md5_final(&c, d);
    if (rc < 0)
        return rc;
    bfs_hex(d, sizeof d, hex);
    if (size)
        *size = off;
    return 0;
}

/* 1 if a and b both hold exactly size bytes and the same ones, 0 if not,
 * -errno. */
static int same_bytes(int a, int b, uint64_t size)
{
    struct stat sa, sb;
    if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
        return -errno;
    if ((uint64_t)sa.st_size != size || (uint64_t)sb.st_size != size)
        return 0;
    if (sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino)
        return 1; /* one file (a linked put) */
    const size_t chunk = 64u * 1024u;
    uint8_t *ba = malloc(2 * chunk);
    if (!ba)
        return -ENOMEM;
    uint8_t *bb = ba + chunk;
    int rc = 1;
    uint64_t off = 0;
    while (rc == 1 && off < size) {
        size_t want = size - off < chunk ? (size_t)(size - off) : chunk;
        size_t got[2] = {0, 0};
        int fds[2] = {a, b};
        uint8_t *bufs[2] = {ba, bb};
        for (int i = 0; i < 2 && rc == 1; i++) {
            while (got[i] < want) {
                ssize_t n = pread(fds[i], bufs[i] + got[i], want - got[i], (off_t)(off + got[i]));
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0) {
                    rc = -errno;
                    break;
                }
                if (n == 0) {
                    rc = 0; /* shrank: not the same */
                    break;
                }
                got[i] += (size_t)n;
            }
        }
        if (rc == 1 && memcmp(ba, bb, want) != 0)
            rc = 0;
        off += want;
    }
    free(ba);
    return rc;
}

/* The existing object leaf (in dfd): 1 if it holds exactly src's size bytes,
 * 0 if it holds others or is not a regular file, -errno. fsyncs it when it is
 * the same (its first writer may have died before making it durable). */
static int leaf_is(int dfd, const char *leaf, int src, uint64_t size)
{
    int fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? 0 : -errno;
    struct stat sb;
    int rc;
    if (fstat(fd, &sb) < 0)
        rc = -errno;
    else if (!S_ISREG(sb.st_mode))
        rc = 0;
    else
        rc = same_bytes(fd, src, size);
    if (rc == 1 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

/* Make tmp the object leaf only if leaf does not exist: 0, -EEXIST, -errno. */
static int link_noreplace(const struct file_store *st, int dfd, const char *tmp, const char *leaf)
{
    if (!st->no_noreplace) {
        if (renameat2(dfd, tmp, dfd, leaf, RENAME_NOREPLACE) == 0)
            return 0;
        if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
            return -errno;
    }
    /* No RENAME_NOREPLACE here: link(2) never replaces either. The caller
     * removes tmp. */
    if (linkat(dfd, tmp, dfd, leaf, 0) < 0)
        return -errno;
    return 0;
}

/* Compare-and-swap, the directory locked: 0 (renamed, or the object already
 * holds these bytes), -ENOENT, -ESTALE, -errno. *decided: the outcome is the
 * condition's (not an I/O failure worth a retry). */
static int swap_if_match(int dfd, const char *tmp, const char *leaf, const char *want, int src,
                         uint64_t size, const char *key, int *decided)
{
    int fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            *decided = 1;
            return -ENOENT;
        }
        if (errno != ELOOP)
            return -errno;
    }
    char have[33] = "";
    int rc = 0;
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) < 0)
        rc = -errno;
    else if (fd >= 0 && S_ISREG(sb.st_mode))
        rc = md5_fd(fd, have, NULL);
    if (rc == 0 && have[0] && strcmp(have, want) == 0) {
        if (renameat(dfd, tmp, dfd, leaf) < 0)
            rc = -errno;
    } else if (rc == 0) {
        int same = have[0] ? same_bytes(fd, src, size) : 0;
        *decided = same >= 0;
        if (same < 0)
            rc = same;
        else if (!same) {
            bfs_debug("file store: put %s if ETag %s: the ETag is %s: not replaced", key, want,
                      have[0] ? have : "(not a regular file)");
            rc = -ESTALE;
        }
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

static int put_at(struct file_store *st, int rootfd, const char *key, const struct bfs_put_src *ps,
                  int *decided);

static int file_put(struct bfs_store *base, const char *key, const struct bfs_put_src *ps,
                    struct bfs_err *err)
{
    (void)err; /* the errno says it all (the callers name the key) */
    struct file_store *st = fs_of(base);
    int fd = root(st);
    int decided = 0;
    int rc = put_at(st, fd, key, ps, &decided);
    if (rc < 0 && !decided && retry_on_new_root(st, fd, rc))
        rc = put_at(st, root(st), key, ps, &decided);
    return rc;
}

static int put_at(struct file_store *st, int rootfd, const char *key, const struct bfs_put_src *ps,
                  int *decided)
{
    struct bfs_store *base = &st->base;
    if (bfs_store_key_check(key) < 0 || !ps || !ps->path)
        return -EINVAL;
    enum bfs_put_cond cond = ps->cond;
    if (cond != BFS_PUT_ALWAYS && cond != BFS_PUT_CREATE && cond != BFS_PUT_MATCH)
        return -EINVAL;
    if (cond == BFS_PUT_MATCH && bfs_store_etag_check(ps->if_match) < 0)
        return -EINVAL;
    const char *local_path = ps->path;
    int src = open(local_path, O_RDONLY | O_CLOEXEC);
    if (src < 0) {
        int e = errno;
        bfs_debug("file store: put %s: open %s: %s", key, local_path, strerror(e));
        return -e;
    }
    struct stat sb;
    if (fstat(src, &sb) < 0) {
        int e = errno;
        close(src);
        return -e;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(src);
        return -EINVAL;
    }
    uint64_t size = (uint64_t)sb.st_size;
    /* The ETag of what is put: its MD5 (the caller's, or read now). */
    char md5hex[33] = "";
    if (ps->etag_out) {
        ps->etag_out[0] = '\0';
        int mrc = 0;
        if (ps->md5)
            bfs_hex(ps->md5, 16, md5hex);
        else
            mrc = md5_fd(src, md5hex, NULL);
        if (mrc < 0) {
            close(src);
            return mrc;
        }
    }

    size_t dl = dir_len(key);
    const char *leaf = dl ? key + dl + 1 : key;
    /* A CAS needs the object, so its directory, to exist already. */
    int dfd = open_parent(rootfd, key, dl, cond != BFS_PUT_MATCH);
    if (dfd < 0) {
        bfs_debug("file store: put %s: parent directory: %s", key, strerror(-dfd));
        close(src);
        if (cond == BFS_PUT_MATCH && (dfd == -ENOENT || dfd == -ENOTDIR)) {
            *decided = 1;
            return -ENOENT;
        }
        return dfd;
    }
    /* ".bfs-tmp-<pid>-<seq>-" + leaf may exceed NAME_MAX for a long leaf: cut the leaf. */
    char tmp[256];
    uint64_t seq = atomic_fetch_add(&tmp_seq, 1);
    snprintf(tmp, sizeof tmp, "%s%ld-%" PRIu64 "-%.200s", BFS_STORE_TEMP_PREFIX, (long)getpid(),
             seq, leaf);
    int rc = 0;
    int linked = ps->may_link && link_temp(src, &sb, local_path, dfd, tmp, key);
    if (linked) {
        if (fsync(src) < 0)
            rc = -errno;
    } else {
        rc = copy_temp(src, size, dfd, tmp);
    }
    int locked = 0;
    if (rc == 0 && cond != BFS_PUT_CREATE) {
        /* A CAS is never done unlocked; a plain put goes on without the lock
         * where the file system has none for directories. */
        int lrc;
        do
            lrc = flock(dfd, LOCK_EX);
        while (lrc < 0 && errno == EINTR);
        if (lrc == 0)
            locked = 1;
        else if (cond == BFS_PUT_MATCH)
            rc = -errno;
        else
            bfs_debug("file store: put %s: flock: %s (going on unlocked)", key, strerror(errno));
    }
    if (rc == 0 && cond == BFS_PUT_ALWAYS) {
        if (renameat(dfd, tmp, dfd, leaf) < 0)
            rc = -errno;
    } else if (rc == 0 && cond == BFS_PUT_CREATE) {
        rc = link_noreplace(st, dfd, tmp, leaf);
        if (rc == -EEXIST) {
            int same = leaf_is(dfd, leaf, src, size);
            if (same == 1) {
                rc = 0;
                bfs_debug("file store: put %s (create-only): already holds these bytes", key);
            } else if (same == 0) {
                *decided = 1;
                bfs_log(ps->race_ok ? BFS_LOG_DEBUG : BFS_LOG_ERROR,
                        "file store %s: put %s (create-only): the key exists with other bytes: "
                        "not replaced",
                        st->dir, key);
            } else {
                rc = same;
            }
        }
    } else if (rc == 0) {
        rc = swap_if_match(dfd, tmp, leaf, ps->if_match, src, size, key, decided);
    }
    if (locked && cond == BFS_PUT_ALWAYS) {
        flock(dfd, LOCK_UN); /* a CAS keeps it until the directory is fsynced */
        locked = 0;
    }
    /* Whatever is left under the temporary name goes: a failure's, a link
     * renamed over a link to the same file (rename(2) does nothing then), a
     * create-only put that found the key taken, or made the object by linkat. */
    if (unlinkat(dfd, tmp, 0) < 0 && errno != ENOENT)
        bfs_debug("file store: put %s: removing %s: %s", key, tmp, strerror(errno));
    if (rc == 0 && fsync(dfd) < 0)
        rc = -errno; /* renamed, but not known to be durable: report it */
    if (locked)
        flock(dfd, LOCK_UN);
    if (rc < 0 && rc != -EEXIST)
        bfs_debug("file store: put %s: %s", key, strerror(-rc));
    close(dfd);
    close(src);
    if (rc == 0 && ps->etag_out)
        snprintf(ps->etag_out, BFS_STORE_ETAG_MAX, "%s", md5hex);
    if (rc == 0 && base->stats) {
        bfs_stats_add(base->stats, store_put_requests, 1);
        bfs_stats_add(base->stats, store_put_bytes, size);
    }
    return rc;
}

static int get_at(struct file_store *st, int rootfd, const char *key, uint64_t off, uint64_t len,
                  void *buf);

static int file_get_range(struct bfs_store *base, const char *key, uint64_t off, uint64_t len,
                          void *buf, struct bfs_err *err)
{
    (void)err;
    struct file_store *st = fs_of(base);
    int fd = root(st);
    int rc = get_at(st, fd, key, off, len, buf);
    if (rc < 0 && retry_on_new_root(st, fd, rc))
        rc = get_at(st, root(st), key, off, len, buf);
    return rc;
}

static int get_at(struct file_store *st, int rootfd, const char *key, uint64_t off, uint64_t len,
                  void *buf)
{
    struct bfs_store *base = &st->base;
    if (bfs_store_key_check(key) < 0 || (len && !buf) || off > UINT64_MAX - len)
        return -EINVAL;
    if (len == 0)
        return 0;
    if (len > SIZE_MAX)
        return -EINVAL;
    int fd = openat(rootfd, key, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        bfs_debug("file store: get %s: %s", key, strerror(e));
        return e == ENOTDIR ? -ENOENT : -e;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return -ENOENT;
    }
    if (off + len > (uint64_t)sb.st_size) {
        bfs_debug("file store: get %s bytes %" PRIu64 "-%" PRIu64 ": beyond the end (%" PRIu64
                  " bytes)",
                  key, off, off + len - 1, (uint64_t)sb.st_size);
        close(fd);
        return -EIO;
    }
    uint64_t done = 0;
    int rc = 0;
    while (done < len) {
        size_t want = len - done > (1u << 30) ? (1u << 30) : (size_t)(len - done);
        ssize_t n = pread(fd, (char *)buf + done, want, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0) {
            rc = -EIO; /* shrank under us */
            break;
        }
        done += (uint64_t)n;
    }
    close(fd);
    if (rc == 0 && base->stats) {
        bfs_stats_add(base->stats, store_get_requests, 1);
        bfs_stats_add(base->stats, store_get_bytes, len);
    }
    return rc;
}

/* Open key for reading a whole object: a regular file's fd (sb filled) or
 * -errno (-ENOENT for a missing key or something that is not an object). */
static int open_object(int rootfd, const char *key, struct stat *sb)
{
    int fd = openat(rootfd, key, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOTDIR ? -ENOENT : -errno;
    if (fstat(fd, sb) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (!S_ISREG(sb->st_mode)) {
        close(fd);
        return -ENOENT;
    }
    return fd;
}

static int head_at(int rootfd, const char *key, struct bfs_store_head *out)
{
    struct stat sb;
    int fd = open_object(rootfd, key, &sb);
    if (fd < 0)
        return fd;
    uint64_t size = 0;
    int rc = md5_fd(fd, out->etag, &size);
    close(fd);
    if (rc == 0)
        out->size = size; /* what was hashed: one version */
    return rc;
}

static int file_head(struct bfs_store *base, const char *key, struct bfs_store_head *out,
                     struct bfs_err *err)
{
    (void)err;
    struct file_store *st = fs_of(base);
    if (bfs_store_key_check(key) < 0 || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    int fd = root(st);
    int rc = head_at(fd, key, out);
    if (rc < 0 && retry_on_new_root(st, fd, rc))
        rc = head_at(root(st), key, out);
    if (rc < 0)
        bfs_debug("file store: head %s: %s", key, strerror(-rc));
    return rc;
}

static int whole_at(int rootfd, const char *key, size_t max, void **data, size_t *len, char *etag)
{
    struct stat sb;
    int fd = open_object(rootfd, key, &sb);
    if (fd < 0)
        return fd;
    if ((uint64_t)sb.st_size > max) {
        close(fd);
        return -EFBIG;
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size + 1); /* room to see it grew */
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    int rc = 0;
    while (got < size + 1) {
        ssize_t n = pread(fd, buf + got, size + 1 - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (rc == 0 && got != size)
        rc = -EIO; /* changed in place: not an object battlefs put */
    if (rc == 0 && etag) {
        struct bfs_md5 c;
        uint8_t d[16];
        rc = bfs_md5_init(&c);
        if (rc == 0) {
            bfs_md5_update(&c, buf, size);
            rc = bfs_md5_final(&c, d);
        }
        if (rc == 0)
            bfs_hex(d, sizeof d, etag);
    }
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = size;
    return 0;
}

static int file_get(struct bfs_store *base, const char *key, size_t max, void **data, size_t *len,
                    char *etag, struct bfs_err *err)
{
    (void)err;
    struct file_store *st = fs_of(base);
    if (bfs_store_key_check(key) < 0 || !data || !len || max > BFS_STORE_GET_MAX)
        return -EINVAL;
    *data = NULL;
    *len = 0;
    if (etag)
        etag[0] = '\0';
    int fd = root(st);
    int rc = whole_at(fd, key, max, data, len, etag);
    if (rc < 0 && retry_on_new_root(st, fd, rc))
        rc = whole_at(root(st), key, max, data, len, etag);
    if (rc < 0)
        bfs_debug("file store: get %s: %s", key, strerror(-rc));
    if (rc == 0 && base->stats) {
        bfs_stats_add(base->stats, store_get_requests, 1);
        bfs_stats_add(base->stats, store_get_bytes, *len);
    }
    return rc;
}

struct walk {
    const char *prefix;
    size_t plen;
    const char *after; /* list_after: only keys sorting after it (NULL: all) */
    int (*cb)(void *ctx, const char *key, uint64_t size);
    void *ctx;
    char key[BFS_STORE_KEY_MAX + 2];
};

/* Walk directory dfd (consumed) whose key prefix is w->key[0..klen) ("" or "a/b/"). */
static int walk_dir(struct walk *w, int dfd, size_t klen)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = errno;
        close(dfd);
        return -e;
    }
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                rc = -errno;
            break;
        }
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || bfs_store_is_temp_name(name))
            continue;
        size_t nl = strlen(name);
        if (klen + nl + 1 > BFS_STORE_KEY_MAX)
            continue;
        memcpy(w->key + klen, name, nl + 1);
        size_t kl = klen + nl;
        /* Only what can still match the prefix. */
        size_t cmp = kl < w->plen ? kl : w->plen;
        if (memcmp(w->key, w->prefix, cmp) != 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                continue; /* deleted meanwhile */
            rc = -errno;
            break;
        }
        if (S_ISDIR(sb.st_mode)) {
            if (bfs_store_prefix_check(w->key) < 0)
                continue;
            w->key[kl] = '/';
            w->key[kl + 1] = '\0';
            /* Every key below sorts before w->after: nothing to walk there. */
            if (w->after && strncmp(w->after, w->key, kl + 1) > 0)
                continue;
            int sub = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                if (errno == ENOENT)
                    continue;
                rc = -errno;
                break;
            }
            rc = walk_dir(w, sub, kl + 1);
            if (rc != 0)
                break;
        } else if (S_ISREG(sb.st_mode)) {
            if (kl < w->plen || bfs_store_key_check(w->key) < 0 ||
                (w->after && strcmp(w->key, w->after) <= 0))
                continue;
            rc = w->cb(w->ctx, w->key, (uint64_t)sb.st_size);
            if (rc != 0)
                break;
        }
    }
    closedir(d);
    return rc;
}

/* Walk the keys starting with prefix (checked) and, if after is not NULL,
 * sorting after it, from the deepest directory prefix names; cb as for list. */
static int walk_prefix(struct file_store *st, const char *prefix, const char *after,
                       int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx)
{
    struct walk *w = malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    w->prefix = prefix;
    w->plen = strlen(prefix);
    w->after = after;
    w->cb = cb;
    w->ctx = ctx;
    size_t dl = 0;
    const char *slash = strrchr(prefix, '/');
    if (slash)
        dl = (size_t)(slash - prefix);
    int dfd = open_parent(root(st), prefix, dl, 0);
    int rc;
    if (dfd == -ENOENT || dfd == -ENOTDIR) {
        rc = 0; /* nothing under that prefix */
    } else if (dfd < 0) {
        rc = dfd;
    } else {
        size_t klen = slash ? dl + 1 : 0;
        memcpy(w->key, prefix, klen);
        w->key[klen] = '\0';
        rc = walk_dir(w, dfd, klen);
    }
    free(w);
    return rc;
}

static int file_list(struct bfs_store *base, const char *prefix,
                     int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx,
                     struct bfs_err *err)
{
    (void)err;
    struct file_store *st = fs_of(base);
    if (!prefix)
        prefix = "";
    if (!cb || bfs_store_prefix_check(prefix) < 0)
        return -EINVAL;
    int rc = walk_prefix(st, prefix, NULL, cb, ctx);
    if (rc < 0)
        bfs_debug("file store: list %s: %s", prefix, strerror(-rc));
    return rc;
}

/* The keys list_after collected, to be sorted; at most 2 * max_keys are kept
 * (the smallest), so a walk with a bound needs memory for the bound only. */
struct after_key {
    char *key;
    uint64_t size;
};
struct after_keys {
    struct after_key *v;
    size_t n, cap;
    unsigned max_keys; /* 0: keep all */
};

static int cmp_after_key(const void *a, const void *b)
{
    return strcmp(((const struct after_key *)a)->key, ((const struct after_key *)b)->key);
}

/* Sort the keys and keep the max_keys smallest. */
static void after_trim(struct after_keys *l)
{
    if (l->n > 1) /* l->v is NULL when nothing was collected: qsort wants a pointer */
        qsort(l->v, l->n, sizeof *l->v, cmp_after_key);
    while (l->max_keys && l->n > l->max_keys)
        free(l->v[--l->n].key);
}

static int after_collect(void *ctx, const char *key, uint64_t size)
{
    struct after_keys *l = ctx;
    if (l->n == l->cap && l->max_keys && l->n >= 2 * (size_t)l->max_keys)
        after_trim(l);
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        struct after_key *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    char *k = strdup(key);
    if (!k)
        return -ENOMEM;
    l->v[l->n].key = k;
    l->v[l->n].size = size;
    l->n++;
    return 0;
}

static int file_list_after(struct bfs_store *base, const char *prefix, const char *start_after,
                           unsigned max_keys, int (*cb)(void *ctx, const char *key, uint64_t size),
                           void *ctx, struct bfs_err *err)
{
    (void)err;
    struct file_store *st = fs_of(base);
    if (!prefix)
        prefix = "";
    if (!start_after)
        start_after = "";
    if (!cb || bfs_store_prefix_check(prefix) < 0 || bfs_store_prefix_check(start_after) < 0)
        return -EINVAL;
    struct after_keys l = {.v = NULL, .n = 0, .cap = 0, .max_keys = max_keys};
    int rc = walk_prefix(st, prefix, start_after[0] ? start_after : NULL, after_collect, &l);
    if (rc == 0)
        after_trim(&l);
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        rc = cb(ctx, l.v[i].key, l.v[i].size);
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i].key);
    free(l.v);
    if (rc < 0)
        bfs_debug("file store: list %s after \"%s\": %s", prefix, start_after, strerror(-rc));
    return rc;
}

static int file_del(struct bfs_store *base, const char *key, struct bfs_err *err)
{
    (void)err;
    struct file_store *st = fs_of(base);
    if (bfs_store_key_check(key) < 0)
        return -EINVAL;
    size_t dl = dir_len(key);
    int dfd = open_parent(root(st), key, dl, 0);
    if (dfd == -ENOENT || dfd == -ENOTDIR)
        return 0;
    if (dfd < 0)
        return dfd;
    const char *leaf = dl ? key + dl + 1 : key;
    int rc = 0;
    /* Ordered with a CAS of the key (store_file.c's header); best effort. */
    int locked;
    do
        locked = flock(dfd, LOCK_EX) == 0;
    while (!locked && errno == EINTR);
    if (unlinkat(dfd, leaf, 0) < 0) {
        rc = errno == ENOENT ? 0 : -errno;
    } else if (fsync(dfd) < 0) {
        rc = -errno;
    }
    if (locked)
        flock(dfd, LOCK_UN);
    close(dfd);
    if (rc < 0)
        bfs_debug("file store: del %s: %s", key, strerror(-rc));
    return rc;
}

/* Remove temporaries older than age seconds below directory dfd (closed here).
 * One dated after now is young, not ancient: the file system's clock may be a
 * tick ahead of time() here, and another host's clock ahead of this one's
 * (a file:// store on a shared file system); (uint64_t)(now - mtime) would
 * make a temporary being written now the oldest of all.
 * Returns how many were removed, or -errno. */
static int clean_dir(int dfd, time_t now, uint64_t age, int depth)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = errno;
        close(dfd);
        return -e;
    }
    int removed = 0, rc = 0;
    struct dirent *e;
    while (rc >= 0 && (e = readdir(d))) {
        const char *name = e->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* gone meanwhile */
        if (S_ISDIR(sb.st_mode) && depth < 64) {
            int sub = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int n = sub < 0 ? 0 : clean_dir(sub, now, age, depth + 1);
            if (n > 0)
                removed += n;
        } else if (S_ISREG(sb.st_mode) &&
                   strncmp(name, BFS_STORE_TEMP_PREFIX, strlen(BFS_STORE_TEMP_PREFIX)) == 0 &&
                   sb.st_mtime <= now && (uint64_t)(now - sb.st_mtime) >= age) {
            if (unlinkat(dirfd(d), name, 0) == 0)
                removed++;
            else if (errno != ENOENT)
                rc = -errno;
        }
    }
    closedir(d);
    return rc < 0 ? rc : removed;
}

static int file_clean(struct bfs_store *base, uint64_t age, struct bfs_err *err)
{
    (void)err;
    struct file_store *st = fs_of(base);
    int fd = openat(root(st), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    return clean_dir(fd, time(NULL), age, 0);
}

static void file_destroy(struct bfs_store *base)
{
    struct file_store *st = fs_of(base);
    close(root(st));
    for (size_t i = 0; i < st->n_old; i++)
        close(st->old[i]);
    pthread_mutex_destroy(&st->reopen_lock);
    free(st->dir);
    free(st->base.url);
    free(st);
}

static const struct bfs_store_ops file_ops = {
    .put = file_put,
    .get_range = file_get_range,
    .list = file_list,
    .list_after = file_list_after,
    .del = file_del,
    .clean = file_clean,
    .destroy = file_destroy,
    .head = file_head,
    .get = file_get,
};

int bfs_store_file_open(const char *dir, struct bfs_store **out)
{
    assert(out);
    *out = NULL;
    if (!dir || dir[0] != '/')
        return -EINVAL;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct file_store *st = calloc(1, sizeof *st);
    if (!st) {
        close(fd);
        return -ENOMEM;
    }
    atomic_init(&st->rootfd, fd);
    pthread_mutex_init(&st->reopen_lock, NULL);
    st->base.ops = &file_ops;
    st->base.conditional = 1;
#ifdef BFS_FAULT_INJECTION
    /* Tests: BATTLEFS_FAULT_STORE=no-noreplace takes the linkat() way of a
     * create-only put, as on a file system without RENAME_NOREPLACE. */
    const char *fault = getenv("BATTLEFS_FAULT_STORE");
    st->no_noreplace = fault && strcmp(fault, "no-noreplace") == 0;
#endif
    if (!(st->dir = strdup(dir)) || asprintf(&st->base.url, "file://%s", dir) < 0) {
        st->base.url = NULL;
        free(st->dir);
        pthread_mutex_destroy(&st->reopen_lock);
        close(fd);
        free(st);
        return -ENOMEM;
    }
    bfs_debug("file store: %s", st->base.url);
    *out = &st->base;
    return 0;
}
