/* errors.c - ring of the last rejections. */
#include "battlefs/errors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "battlefs/names.h"

void bfs_errors_init(struct bfs_errors *e)
{
    memset(e, 0, sizeof *e);
    pthread_mutex_init(&e->lock, NULL);
}

void bfs_errors_destroy(struct bfs_errors *e)
{
    for (unsigned i = 0; i < BFS_ERRORS_MAX; i++)
        free(e->line[i]);
    pthread_mutex_destroy(&e->lock);
}

int bfs_errors_add(struct bfs_errors *e, const char *what, const char *reason)
{
    char when[21], w[1024], r[1024];
    bfs_utc_timestamp(when);
    /* One line per rejection, no terminal escapes from an upload's name. */
    bfs_escape_ctl(w, sizeof w, what);
    bfs_escape_ctl(r, sizeof r, reason);
    size_t n = strlen(when) + strlen(w) + strlen(r) + 8;
    char *line = malloc(n);
    if (!line)
        return -ENOMEM;
    snprintf(line, n, "%s %s: %s\n", when, w, r);
    pthread_mutex_lock(&e->lock);
    free(e->line[e->next]);
    e->line[e->next] = line;
    e->next = (e->next + 1) % BFS_ERRORS_MAX;
    if (e->count < BFS_ERRORS_MAX)
        e->count++;
    pthread_mutex_unlock(&e->lock);
    return 0;
}

int bfs_errors_render(struct bfs_errors *e, struct bfs_buf *out)
{
    int rc = 0;
    pthread_mutex_lock(&e->lock);
    unsigned first = (e->next + BFS_ERRORS_MAX - e->count) % BFS_ERRORS_MAX;
    for (unsigned i = 0; i < e->count && rc == 0; i++) {
        const char *l = e->line[(first + i) % BFS_ERRORS_MAX];
        rc = bfs_buf_append(out, l, strlen(l));
    }
    pthread_mutex_unlock(&e->lock);
    return rc;
}
