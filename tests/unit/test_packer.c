/* test_packer.c - the deterministic framer (bfs_codec_frame) and the packer's repacking of a
 * row's stored blocks (bfs_packer_repack): valid deflate, same records, same counts and sync
 * markers, the same bytes as compressing at close, corrupt rows refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libdeflate.h>
#include <zlib.h>

#include "battlefs/buf.h"
#include "battlefs/codec.h"
#include "battlefs/ocf.h"
#include "battlefs/packer.h"

static const size_t sizes[] = {0, 1, 100, 65534, 65535, 65536, 131070, 131071, 200000};

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((i * 7) ^ (i >> 9)); /* compressible, not trivially */
    return p;
}

static void test_frame_deflate_inflates_back(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        uint8_t *src = pattern(n);
        size_t fn = bfs_codec_framed_size(BFS_CODEC_DEFLATE, n);
        uint8_t *dst = malloc(fn);
        assert_int_equal(bfs_codec_frame(BFS_CODEC_DEFLATE, src, n, dst), fn);
        uint8_t *back = malloc(n + 1);
        z_stream z = {0};
        assert_int_equal(inflateInit2(&z, -15), Z_OK);
        z.next_in = dst;
        z.avail_in = (uInt)fn;
        z.next_out = back;
        z.avail_out = (uInt)(n + 1);
        assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
        assert_int_equal(z.total_out, n);
        assert_int_equal(z.avail_in, 0);
        inflateEnd(&z);
        assert_memory_equal(back, src, n);
        /* deterministic: framing again gives the same bytes */
        uint8_t *again = malloc(fn);
        bfs_codec_frame(BFS_CODEC_DEFLATE, src, n, again);
        assert_memory_equal(again, dst, fn);
        free(again);
        free(back);
        free(dst);
        free(src);
    }
}

/* A row of blocks of the given plain sizes: framed stored (deferred) or compressed by c. */
static void make_row(struct bfs_buf *row, const size_t *n, size_t k,
                     struct libdeflate_compressor *c)
{
    static const uint8_t sync[16] = "0123456789abcdef";
    for (size_t i = 0; i < k; i++) {
        uint8_t *src = pattern(n[i]);
        size_t bound = c ? libdeflate_deflate_compress_bound(c, n[i])
                         : bfs_codec_framed_size(BFS_CODEC_DEFLATE, n[i]);
        uint8_t *d = malloc(bound);
        size_t dn = c ? libdeflate_deflate_compress(c, src, n[i], d, bound)
                      : bfs_codec_frame(BFS_CODEC_DEFLATE, src, n[i], d);
        assert_true(dn > 0);
        assert_int_equal(bfs_buf_put_long(row, (int64_t)(i + 1)), 0);
        assert_int_equal(bfs_buf_put_long(row, (int64_t)dn), 0);
        assert_int_equal(bfs_buf_append(row, d, dn), 0);
        assert_int_equal(bfs_buf_append(row, sync, 16), 0);
        free(d);
        free(src);
    }
}

static void test_repack_is_compress_at_close(void **state)
{
    (void)state;
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(1);
    assert_non_null(c);
    const size_t n[] = {1, 5000, 65536, 200000, 12};
    struct bfs_buf stored = {0}, want = {0}, got = {0}, scratch = {0};
    make_row(&stored, n, 5, NULL);
    make_row(&want, n, 5, c);
    struct bfs_err err = {0};
    assert_int_equal(bfs_packer_repack(c, stored.data, stored.len, &got, &scratch, &err), 0);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.data, want.data, want.len);
    assert_true(got.len < stored.len);
    /* a packed row repacked again: the same bytes */
    struct bfs_buf again = {0};
    assert_int_equal(bfs_packer_repack(c, got.data, got.len, &again, &scratch, &err), 0);
    assert_int_equal(again.len, got.len);
    assert_memory_equal(again.data, got.data, got.len);
    /* corrupt: truncated, or its deflate data changed */
    bfs_buf_reset(&again);
    assert_int_equal(bfs_packer_repack(c, stored.data, stored.len - 1, &again, &scratch, &err),
                     -EINVAL);
    stored.data[3] ^= 0xff;
    bfs_buf_reset(&again);
    assert_int_equal(bfs_packer_repack(c, stored.data, stored.len, &again, &scratch, &err),
                     -EINVAL);
    bfs_buf_free(&again);
    bfs_buf_free(&stored);
    bfs_buf_free(&want);
    bfs_buf_free(&got);
    bfs_buf_free(&scratch);
    libdeflate_free_compressor(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_deflate_inflates_back),
        cmocka_unit_test(test_repack_is_compress_at_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
