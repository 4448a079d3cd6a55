/* testblock.h - Avro object container blocks as another writer would write
 * them (zlib's deflate, snappy's compressor), for the unit tests that feed
 * such blocks to battlefs (test_ocf.c, test_evolve.c, test_rewrite.c,
 * test_manifest.c). The helpers fail the running cmocka test on any
 * unexpected result. */
#ifndef BATTLEFS_TESTBLOCK_H
#define BATTLEFS_TESTBLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/codec.h"

/* Replace out's content with plain[0..n) compressed in codec as a block's
 * data (deflate: raw, level 6; snappy: followed by the big-endian CRC-32 of
 * plain; plain may be NULL when n is 0). */
void tblock_compress(enum bfs_codec codec, const uint8_t *plain, size_t n, struct bfs_buf *out);
/* Append to out one block of count records whose uncompressed data is
 * plain[0..n): the count (as declared: it may be wrong on purpose), the
 * length of tblock_compress's data, the data, then sync. */
void tblock_make(enum bfs_codec codec, const uint8_t *plain, size_t n, int64_t count,
                 const uint8_t sync[16], struct bfs_buf *out);

#endif
