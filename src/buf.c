/* buf.c - growable byte buffer, and the growth of arrays. */
#include "battlefs/buf.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bfs_buf_reserve(struct bfs_buf *b, size_t n)
{
    if (n <= b->cap - b->len)
        return 0;
    if (n > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int bfs_buf_reserve_exact(struct bfs_buf *b, size_t n)
{
    if (n <= b->cap - b->len)
        return 0;
    if (n > SIZE_MAX - b->len)
        return -ENOMEM;
    uint8_t *p = realloc(b->data, b->len + n);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = b->len + n;
    return 0;
}

int bfs_buf_append(struct bfs_buf *b, const void *p, size_t n)
{
    int rc = bfs_buf_reserve(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int bfs_buf_printf(struct bfs_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    int rc = bfs_buf_reserve(b, (size_t)n + 1);
    if (rc < 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int bfs_buf_put_long(struct bfs_buf *b, int64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    uint64_t z = ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0); /* zigzag, no signed shift */
    do {
        uint8_t byte = z & 0x7f;
        z >>= 7;
        if (z)
            byte |= 0x80;
        tmp[n++] = byte;
    } while (z);
    return bfs_buf_append(b, tmp, n);
}

void bfs_buf_reset(struct bfs_buf *b)
{
    b->len = 0;
}

void bfs_buf_free(struct bfs_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int bfs_array_reserve(void *arrp, size_t *cap, size_t need, size_t elem)
{
    assert(need > 0 && elem > 0);
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return -ENOMEM;
        c *= 2;
    }
    if (c > SIZE_MAX / elem)
        return -ENOMEM;
    /* The T * at arrp is read and written as bytes: no T ** to void ** cast. */
    void *arr;
    memcpy(&arr, arrp, sizeof arr);
    void *n = realloc(arr, c * elem);
    if (!n)
        return -ENOMEM;
    memcpy(arrp, &n, sizeof n);
    *cap = c;
    return 0;
}
