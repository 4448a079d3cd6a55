/* access.h - who may do what in the mount: Unix permission bits, checked by
 * battlefs itself.
 *
 * The kernel's default_permissions cannot be used: with it, the kernel asks
 * for the attributes of a name before every open, and an upload's name that
 * vanished at its ingest (but stays in the kernel's name cache for a second)
 * would then fail the next upload to that name with ENOENT instead of
 * starting a new one. So the FUSE operations call bfs_access_check with the
 * mode and owner they report in getattr (docs/design.md, "Access").
 */
#ifndef BATTLEFS_ACCESS_H
#define BATTLEFS_ACCESS_H

#include <stddef.h>
#include <sys/types.h>

/* What is asked: any of these, as for access(2). */
#define BFS_MAY_READ  4
#define BFS_MAY_WRITE 2
#define BFS_MAY_EXEC  1

/* The caller of a request. groups is filled lazily (only when needed). */
struct bfs_caller {
    uid_t uid;
    gid_t gid;
    int (*get_groups)(gid_t *list, int size); /* fuse_getgroups, or a test's */
};

/* 0 if the caller may `want` on an object of mode `mode` (permission bits)
 * owned by owner:group, else -EACCES. uid 0 may do anything. */
int bfs_access_check(const struct bfs_caller *c, mode_t mode, uid_t owner, gid_t group, int want);

#endif
