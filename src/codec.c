/* codec.c - codec names (codec.h). */
#include "battlefs/codec.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>

static const struct {
    const char *name;
    enum bfs_codec codec;
} codecs[] = {
    {"null", BFS_CODEC_NULL},
    {"deflate", BFS_CODEC_DEFLATE},
    {"snappy", BFS_CODEC_SNAPPY},
};

int bfs_codec_parse(const char *name, size_t len, enum bfs_codec *out)
{
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++) {
        if (strlen(codecs[i].name) == len && memcmp(codecs[i].name, name, len) == 0) {
            *out = codecs[i].codec;
            return 0;
        }
    }
    return -EINVAL;
}

bool bfs_codec_valid(enum bfs_codec c)
{
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++)
        if (codecs[i].codec == c)
            return true;
    return false;
}

const char *bfs_codec_name(enum bfs_codec c)
{
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++)
        if (codecs[i].codec == c)
            return codecs[i].name;
    return "unknown";
}

#define LITERAL_MAX 65536u /* snappy literal element */

static size_t uvarint(uint64_t v, uint8_t *b)
{
    size_t n = 0;
    do {
        b[n] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
        n++;
    } while (v);
    return n;
}

/* The header of a snappy literal of n (1..LITERAL_MAX) bytes. */
static size_t literal_tag(size_t n, uint8_t *b)
{
    size_t m = n - 1;
    if (m < 60) {
        b[0] = (uint8_t)(m << 2);
        return 1;
    }
    if (m < 256) {
        b[0] = 60 << 2;
        b[1] = (uint8_t)m;
        return 2;
    }
    b[0] = 61 << 2;
    b[1] = (uint8_t)m;
    b[2] = (uint8_t)(m >> 8);
    return 3;
}

size_t bfs_codec_framed_size(enum bfs_codec codec, size_t n)
{
    uint8_t tmp[10];
    switch (codec) {
    case BFS_CODEC_DEFLATE:
        return n + 5 * (n ? (n + BFS_CODEC_STORED_MAX - 1) / BFS_CODEC_STORED_MAX : 1);
    case BFS_CODEC_SNAPPY: {
        size_t full = n / LITERAL_MAX, rest = n % LITERAL_MAX;
        return uvarint(n, tmp) + n + 3 * full + (rest ? literal_tag(rest, tmp) : 0) + 4;
    }
    default:
        return n;
    }
}

size_t bfs_codec_frame(enum bfs_codec codec, const uint8_t *src, size_t n, uint8_t *dst)
{
    uint8_t *q = dst;
    if (codec == BFS_CODEC_DEFLATE) {
        size_t off = 0;
        do {
            size_t k = n - off < BFS_CODEC_STORED_MAX ? n - off : BFS_CODEC_STORED_MAX;
            q[0] = off + k == n ? 1 : 0; /* BFINAL, BTYPE 00 */
            q[1] = (uint8_t)k;
            q[2] = (uint8_t)(k >> 8);
            q[3] = (uint8_t)~k;
            q[4] = (uint8_t)(~k >> 8);
            memcpy(q + 5, src + off, k);
            q += 5 + k;
            off += k;
        } while (off < n);
    } else if (codec == BFS_CODEC_SNAPPY) {
        q += uvarint(n, q);
        for (size_t off = 0; off < n;) {
            size_t k = n - off < LITERAL_MAX ? n - off : LITERAL_MAX;
            q += literal_tag(k, q);
            memcpy(q, src + off, k);
            q += k;
            off += k;
        }
        uint32_t crc = (uint32_t)crc32(0L, src, (uInt)n);
        for (int i = 0; i < 4; i++)
            *q++ = (uint8_t)(crc >> (24 - 8 * i));
    } else {
        memcpy(q, src, n);
        q += n;
    }
    return (size_t)(q - dst);
}
