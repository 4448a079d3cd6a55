/* fsutil.h - small file-system helpers shared by the daemon's modules. */
#ifndef BATTLEFS_FSUTIL_H
#define BATTLEFS_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "battlefs/err.h"

/* mkdir -p: create path and every missing parent, each new directory with mode
 * (less the umask); existing ones are left as they are. Absolute or relative;
 * repeated and trailing '/' are fine. 0 when path is then a directory;
 * -EINVAL (NULL or ""), -ENAMETOOLONG (PATH_MAX or longer), -ENOTDIR (path or
 * a parent exists and is not a directory), -ENOMEM, or mkdir's -errno. */
int bfs_mkdirs(const char *path, mode_t mode);

/* "a/b" in a new string (free it), or NULL when out of memory. */
char *bfs_path_join(const char *a, const char *b);

/* A directory of the state is what it should be: a real directory (not a
 * symbolic link: the mount would empty or chmod its target), owned by uid.
 * 0, or -ELOOP (a symbolic link), -ENOTDIR, -EPERM (another owner) or lstat's
 * -errno, with err saying which and what to do. */
int bfs_dir_check(const char *path, uid_t uid, struct bfs_err *err);

/* Write all n bytes of p to fd (retrying short writes and EINTR): 0 or -errno
 * (-EIO if write(2) returns 0). */
int bfs_write_all(int fd, const void *p, size_t n);

/* Remove every file of the directory dir (never through a symbolic link)
 * whose name match() accepts; a file that cannot be removed is logged (WARN)
 * and skipped. The number removed, or -errno when dir cannot be opened. */
int bfs_remove_files(const char *dir, int (*match)(const char *name));

#endif
