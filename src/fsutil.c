/* fsutil.c - small file-system helpers shared by the daemon's modules. */
#include "battlefs/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/log.h"

int bfs_mkdirs(const char *path, mode_t mode)
{
    if (!path || !path[0])
        return -EINVAL;
    if (strlen(path) >= PATH_MAX)
        return -ENAMETOOLONG;
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    int rc = 0;
    /* Each prefix ending before a '/' (the root "/" itself is skipped), then the whole. */
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char ch = *s;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        *s = ch;
        if (!ch)
            break;
    }
    free(p);
    if (rc < 0)
        return rc;
    /* EEXIST says nothing of what exists: the last one may be a file. */
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int bfs_dir_check(const char *path, uid_t uid, struct bfs_err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        int e = errno;
        return bfs_err_set(err, -e, "%s: %s", path, strerror(e));
    }
    if (S_ISLNK(st.st_mode)) {
        char to[PATH_MAX];
        ssize_t n = readlink(path, to, sizeof to - 1);
        to[n < 0 ? 0 : n] = '\0';
        return bfs_err_set(err, -ELOOP,
                           "%s is a symbolic link (to %s): battlefs empties and changes the modes "
                           "of its state directories, so it does not follow links; give the real "
                           "directory",
                           path, n < 0 ? "?" : to);
    }
    if (!S_ISDIR(st.st_mode))
        return bfs_err_set(err, -ENOTDIR, "%s is not a directory", path);
    if (st.st_uid != uid)
        return bfs_err_set(err, -EPERM, "%s belongs to uid %u, not to the mounting user (uid %u)",
                           path, (unsigned)st.st_uid, (unsigned)uid);
    bfs_err_clear(err);
    return 0;
}

char *bfs_path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

int bfs_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int bfs_remove_files(const char *dir, int (*match)(const char *name))
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        int rc = -errno;
        if (fd >= 0)
            close(fd);
        return rc;
    }
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!match(de->d_name))
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            removed++;
        else if (errno != ENOENT)
            bfs_warn("cannot remove %s/%s: %s", dir, de->d_name, strerror(errno));
    }
    closedir(d);
    return removed;
}
