/* err.c - struct bfs_err: an errno and its reason (err.h). */
#include "battlefs/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int bfs_err_vset(struct bfs_err *e, int code, const char *fmt, va_list ap)
{
    if (!e)
        return code;
    /* Formatted apart first: an argument may be e->msg itself. */
    char msg[BFS_ERR_MSG_MAX] = "";
    if (fmt)
        vsnprintf(msg, sizeof msg, fmt, ap);
    e->code = code;
    memcpy(e->msg, msg, sizeof msg);
    return code;
}

int bfs_err_set(struct bfs_err *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    va_list ap;
    va_start(ap, fmt);
    bfs_err_vset(e, code, fmt, ap);
    va_end(ap);
    return code;
}

/* Append src to dst[*len..cap) as far as it fits; always NUL-terminated. */
static void append(char *dst, size_t cap, size_t *len, const char *src)
{
    size_t n = strlen(src);
    if (n > cap - 1 - *len)
        n = cap - 1 - *len;
    memcpy(dst + *len, src, n);
    *len += n;
    dst[*len] = '\0';
}

int bfs_err_prefix(struct bfs_err *e, const char *fmt, ...)
{
    if (!e)
        return 0;
    /* Both parts apart first: an argument may be e->msg itself. */
    char ctx[BFS_ERR_MSG_MAX] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    char old[BFS_ERR_MSG_MAX];
    memcpy(old, e->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    size_t len = 0;
    e->msg[0] = '\0';
    append(e->msg, sizeof e->msg, &len, ctx);
    if (old[0]) {
        append(e->msg, sizeof e->msg, &len, ": ");
        append(e->msg, sizeof e->msg, &len, old);
    }
    return e->code;
}

void bfs_err_clear(struct bfs_err *e)
{
    if (!e)
        return;
    e->code = 0;
    e->msg[0] = '\0';
}
