/* errors.h - the ring of the last BFS_ERRORS_MAX rejections (.battlefs/errors). */
#ifndef BATTLEFS_ERRORS_H
#define BATTLEFS_ERRORS_H

#include <pthread.h>

#include "battlefs/buf.h"

#define BFS_ERRORS_MAX 100

struct bfs_errors {
    pthread_mutex_t lock;
    char *line[BFS_ERRORS_MAX];
    unsigned next;
    unsigned count;
};

void bfs_errors_init(struct bfs_errors *e);
void bfs_errors_destroy(struct bfs_errors *e);
/* Add the line "<UTC time> <what>: <reason>" (the caller logs). 0 or -ENOMEM. */
int bfs_errors_add(struct bfs_errors *e, const char *what, const char *reason);
/* All lines, oldest first, each ending in '\n'. */
int bfs_errors_render(struct bfs_errors *e, struct bfs_buf *out);

#endif
