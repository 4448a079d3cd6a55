/* buf.h - a growable byte buffer, and the growth of arrays. */
#ifndef BATTLEFS_BUF_H
#define BATTLEFS_BUF_H

#include <stddef.h>
#include <stdint.h>

struct bfs_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Append n bytes. 0 or -ENOMEM. */
int bfs_buf_append(struct bfs_buf *b, const void *p, size_t n);
/* Make room for n more bytes without changing len (the capacity doubles, from
 * 256, until it fits). 0 or -ENOMEM. */
int bfs_buf_reserve(struct bfs_buf *b, size_t n);
/* As bfs_buf_reserve, but a capacity that grows becomes exactly len + n: for
 * scratch buffers sized by a known bound (a decompressed block), where doubling
 * would only waste memory. 0 or -ENOMEM. */
int bfs_buf_reserve_exact(struct bfs_buf *b, size_t n);
/* printf-style append. 0 or -ENOMEM. */
int bfs_buf_printf(struct bfs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append a zig-zag varint long (Avro "long" encoding). 0 or -ENOMEM. */
int bfs_buf_put_long(struct bfs_buf *b, int64_t v);
void bfs_buf_reset(struct bfs_buf *b);
void bfs_buf_free(struct bfs_buf *b);

/* Make room for need (> 0) items of elem bytes in an array: arrp is the
 * address of the array's pointer (a T **; the pointer may be NULL with *cap 0),
 * *cap the items it has room for. When need > *cap the array is reallocated to
 * 16 items or *cap doubled until need fits, and *cap updated. 0, or -ENOMEM
 * (out of memory, or the size overflows) with the array and *cap unchanged:
 *     if (bfs_array_reserve(&a->v, &a->cap, a->n + 1, sizeof *a->v) < 0)
 *         return -ENOMEM; */
int bfs_array_reserve(void *arrp, size_t *cap, size_t need, size_t elem);

#endif
