/* varint.h - the decoder of Avro's zig-zag varints ("int" and "long"), shared by
 * the OCF parser (ocf.c) and the record validator (validate.c). The encoder is
 * bfs_buf_put_long (buf.h).
 *
 * A long is at most 10 bytes of 7 bits each, least significant group first,
 * the top bit set on every byte but the last; the 10th byte may carry only bit
 * 63 (0x00 or 0x01). Overlong encodings of small values (0x80 0x00 for 0) are
 * accepted, as avro-c and the Java reader do. */
#ifndef BATTLEFS_VARINT_H
#define BATTLEFS_VARINT_H

#include <stddef.h>
#include <stdint.h>

enum {
    BFS_VARINT_OK = 0,
    BFS_VARINT_TRUNCATED = -1, /* the buffer ends inside the varint */
    BFS_VARINT_BAD = -2,       /* more than 10 bytes, or more than 64 bits */
};

#define BFS_VARINT_MAX 10 /* bytes of the longest long */

/* The signed value of the zig-zag encoded u (0, -1, 1, -2, ... for 0, 1, 2, 3, ...). */
static inline int64_t bfs_zigzag_decode(uint64_t u)
{
    return (int64_t)((u >> 1) ^ (0 - (u & 1)));
}

/* Decode the long at buf[*pos] (buf holds len bytes). BFS_VARINT_OK: *out is
 * the value and *pos is past it; else *pos and *out are unchanged. A one-byte
 * varint (most values) takes the first branch only; callers on a hot path may
 * test that case themselves and call this for the rest. */
static inline int bfs_varint_get_long(const uint8_t *buf, size_t len, size_t *pos, int64_t *out)
{
    size_t p = *pos;
    if (p < len && buf[p] < 0x80) {
        *pos = p + 1;
        *out = bfs_zigzag_decode(buf[p]);
        return BFS_VARINT_OK;
    }
    uint64_t v = 0;
    for (int i = 0; i < BFS_VARINT_MAX; i++) {
        if (p >= len)
            return BFS_VARINT_TRUNCATED;
        uint8_t b = buf[p++];
        if (i == BFS_VARINT_MAX - 1 && (b & 0xfe))
            return BFS_VARINT_BAD;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *pos = p;
            *out = bfs_zigzag_decode(v);
            return BFS_VARINT_OK;
        }
    }
    return BFS_VARINT_BAD; /* unreachable: the 10th byte either ends it or is bad */
}

#endif
