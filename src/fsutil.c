/* fsutil.c - small file-system helpers shared by the daemon's modules. */
#include "battlefs/fsutil.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
