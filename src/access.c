/* access.c - Unix permission bits for battlefs' own checks (see access.h). */
#include "battlefs/access.h"

#include <errno.h>
#include <stdbool.h>

#define GROUPS_MAX 256

static bool in_groups(const struct bfs_caller *c, gid_t group)
{
    if (c->gid == group)
        return true;
    if (!c->get_groups)
        return false;
    gid_t list[GROUPS_MAX];
    int n = c->get_groups(list, GROUPS_MAX);
    for (int i = 0; i < n && i < GROUPS_MAX; i++)
        if (list[i] == group)
            return true;
    return false;
}

int bfs_access_check(const struct bfs_caller *c, mode_t mode, uid_t owner, gid_t group, int want)
{
    if (c->uid == 0)
        return 0;
    unsigned bits;
    if (c->uid == owner)
        bits = (mode >> 6) & 7;
    else if (in_groups(c, group))
        bits = (mode >> 3) & 7;
    else
        bits = mode & 7;
    return ((unsigned)want & ~bits) == 0 ? 0 : -EACCES;
}
