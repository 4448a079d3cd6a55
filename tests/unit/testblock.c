/* testblock.c - foreign Avro blocks for the unit tests (testblock.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testblock.h"

#include <snappy-c.h>
#include <zlib.h>

void tblock_compress(enum bfs_codec codec, const uint8_t *plain, size_t n, struct bfs_buf *out)
{
    out->len = 0;
    if (codec == BFS_CODEC_NULL) {
        assert_int_equal(bfs_buf_append(out, plain, n), 0);
    } else if (codec == BFS_CODEC_DEFLATE) {
        z_stream z = {0};
        assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
        size_t bound = deflateBound(&z, (uLong)n);
        assert_int_equal(bfs_buf_reserve(out, bound), 0);
        z.next_in = (Bytef *)plain;
        z.avail_in = (uInt)n;
        z.next_out = out->data;
        z.avail_out = (uInt)bound;
        assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
        out->len = z.total_out;
        deflateEnd(&z);
    } else {
        assert_int_equal(codec, BFS_CODEC_SNAPPY);
        size_t bound = snappy_max_compressed_length(n) + 4, clen = bound;
        assert_int_equal(bfs_buf_reserve(out, bound), 0);
        assert_int_equal(snappy_compress((const char *)plain, n, (char *)out->data, &clen),
                         SNAPPY_OK);
        uint32_t crc = (uint32_t)crc32(0L, plain, (uInt)n);
        for (int i = 0; i < 4; i++)
            out->data[clen + (size_t)i] = (uint8_t)(crc >> (24 - 8 * i));
        out->len = clen + 4;
    }
}

void tblock_make(enum bfs_codec codec, const uint8_t *plain, size_t n, int64_t count,
                 const uint8_t sync[16], struct bfs_buf *out)
{
    struct bfs_buf data = {0};
    tblock_compress(codec, plain, n, &data);
    assert_int_equal(bfs_buf_put_long(out, count), 0);
    assert_int_equal(bfs_buf_put_long(out, (int64_t)data.len), 0);
    assert_int_equal(bfs_buf_append(out, data.data, data.len), 0);
    assert_int_equal(bfs_buf_append(out, sync, 16), 0);
    bfs_buf_free(&data);
}
