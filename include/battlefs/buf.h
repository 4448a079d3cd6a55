/* buf.h - a growable byte buffer. */
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
/* Make room for n more bytes without changing len. 0 or -ENOMEM. */
int bfs_buf_reserve(struct bfs_buf *b, size_t n);
/* printf-style append. 0 or -ENOMEM. */
int bfs_buf_printf(struct bfs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append a zig-zag varint long (Avro "long" encoding). 0 or -ENOMEM. */
int bfs_buf_put_long(struct bfs_buf *b, int64_t v);
void bfs_buf_reset(struct bfs_buf *b);
void bfs_buf_free(struct bfs_buf *b);

#endif
