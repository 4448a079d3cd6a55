/* codec.h - the block codecs of Avro object container files that battlefs
 * stores, and their names (the header's avro.codec). Shared by ocf.c, the
 * catalog (partitions.codec) and manifests. */
#ifndef BATTLEFS_CODEC_H
#define BATTLEFS_CODEC_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
