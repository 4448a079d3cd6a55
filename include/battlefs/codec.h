/* codec.h - the block codecs of Avro object container files that battlefs
 * stores, and their names (the header's avro.codec). Shared by ocf.c, the
 * catalog (partitions.codec) and manifests. */
#ifndef BATTLEFS_CODEC_H
#define BATTLEFS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bfs_codec {
    BFS_CODEC_NULL = 0,
    BFS_CODEC_DEFLATE = 1,
    BFS_CODEC_SNAPPY = 2,
};

/* "null", "deflate", "snappy" (len bytes, no NUL needed) -> codec. 0 or -EINVAL. */
int bfs_codec_parse(const char *name, size_t len, enum bfs_codec *out);
/* The codec's name, or "unknown" for a value that is none of them. */
const char *bfs_codec_name(enum bfs_codec c);
/* Whether c is one of the codecs above. */
bool bfs_codec_valid(enum bfs_codec c);

/* The one deterministic framing of uncompressed data as a block's data in
 * codec: null as it is; deflate as stored blocks only (BTYPE 00, at most
 * BFS_CODEC_STORED_MAX bytes each, the last one final; an empty input is one
 * empty final block); snappy as literal elements of at most 65536 bytes and
 * the big-endian CRC-32. The bytes are a function of the input alone, on
 * every host and whatever zlib or libdeflate it has: converted blocks
 * (evolve.c) and uploads whose compression is deferred (ocf.c, packer.c)
 * use it. */
#define BFS_CODEC_STORED_MAX 65535u
/* The framed size of n bytes. */
size_t bfs_codec_framed_size(enum bfs_codec codec, size_t n);
/* Frame src[0..n) into dst, which has bfs_codec_framed_size(codec, n) bytes
 * of room and does not overlap src. Returns the bytes written. */
size_t bfs_codec_frame(enum bfs_codec codec, const uint8_t *src, size_t n, uint8_t *dst);

#endif
