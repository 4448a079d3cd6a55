/* test_sha256.c - SHA-256 (libcrypto behind bfs_sha256_*) against the NIST FIPS 180-4
 * example vectors, and MD5 (bfs_md5_*) against RFC 1321's. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "battlefs/sha256.h"

static void hex_of(const void *data, size_t n, char out[65])
{
    uint8_t d[32];
    assert_int_equal(bfs_sha256(data, n, d), 0);
    bfs_hex(d, 32, out);
}

static void test_empty(void **state)
{
    (void)state;
    char h[65];
    hex_of("", 0, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_abc(void **state)
{
    (void)state;
    char h[65];
    hex_of("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_448_bits(void **state)
{
    (void)state;
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(strlen(m), 56);
    char h[65];
    hex_of(m, strlen(m), h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_896_bits(void **state)
{
    (void)state;
    const char *m =
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnop"
        "qklmnopqrlmnopqrsmnopqrstnopqrstu";
    assert_int_equal(strlen(m), 112);
    char h[65];
    hex_of(m, strlen(m), h);
    assert_string_equal(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a(void **state)
{
    (void)state;
    /* Streamed in uneven pieces so every path of update() is taken. */
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    struct bfs_sha256 c;
    assert_int_equal(bfs_sha256_init(&c), 0);
    size_t left = 1000000, step = 1;
    while (left) {
        size_t n = step < left ? step : left;
        if (n > sizeof chunk)
            n = sizeof chunk;
        bfs_sha256_update(&c, chunk, n);
        left -= n;
        step = step * 7 % 997 + 1;
    }
    uint8_t d[32];
    char h[65];
    assert_int_equal(bfs_sha256_final(&c, d), 0);
    assert_null(c.md);
    bfs_hex(d, 32, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Every length around the padding boundaries: streaming byte by byte equals one shot. */
static void test_streaming_equals_oneshot(void **state)
{
    (void)state;
    uint8_t msg[200];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 31 + 7);
    for (size_t n = 0; n <= sizeof msg; n++) {
        uint8_t a[32], b[32];
        assert_int_equal(bfs_sha256(msg, n, a), 0);
        struct bfs_sha256 c;
        assert_int_equal(bfs_sha256_init(&c), 0);
        for (size_t i = 0; i < n; i++)
            bfs_sha256_update(&c, msg + i, 1);
        assert_int_equal(bfs_sha256_final(&c, b), 0);
        assert_memory_equal(a, b, 32);
    }
}

/* A hash given up half way frees its state (ASan checks); discard is idempotent. */
static void test_discard(void **state)
{
    (void)state;
    struct bfs_sha256 c;
    assert_int_equal(bfs_sha256_init(&c), 0);
    bfs_sha256_update(&c, "abc", 3);
    bfs_sha256_discard(&c);
    assert_null(c.md);
    bfs_sha256_discard(&c);
    /* a final after a discard reports an error instead of a digest */
    uint8_t d[32];
    assert_int_equal(bfs_sha256_final(&c, d), -EIO);
    /* zero-length updates (even with NULL data) change nothing */
    assert_int_equal(bfs_sha256_init(&c), 0);
    bfs_sha256_update(&c, NULL, 0);
    bfs_sha256_update(&c, "abc", 3);
    bfs_sha256_update(&c, NULL, 0);
    char h[65];
    assert_int_equal(bfs_sha256_final(&c, d), 0);
    bfs_hex(d, 32, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_hex(void **state)
{
    (void)state;
    const uint8_t in[] = {0x00, 0x0f, 0xa0, 0xff};
    char out[9];
    bfs_hex(in, 4, out);
    assert_string_equal(out, "000fa0ff");
    bfs_hex(in, 0, out);
    assert_string_equal(out, "");
}

/* MD5: the RFC 1321 test suite (A.5), one shot and in pieces. */
static void md5_hex(const char *s, size_t piece, char out[33])
{
    struct bfs_md5 c;
    uint8_t d[16];
    assert_int_equal(bfs_md5_init(&c), 0);
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i += piece)
        bfs_md5_update(&c, s + i, n - i < piece ? n - i : piece);
    assert_int_equal(bfs_md5_final(&c, d), 0);
    assert_null(c.md);
    bfs_hex(d, 16, out);
}

static void test_md5(void **state)
{
    (void)state;
    static const char *const v[][2] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char h[33];
        md5_hex(v[i][0], 1000, h);
        assert_string_equal(h, v[i][1]);
        md5_hex(v[i][0], 3, h);
        assert_string_equal(h, v[i][1]);
    }
    struct bfs_md5 c;
    assert_int_equal(bfs_md5_init(&c), 0);
    bfs_md5_update(&c, "x", 1);
    bfs_md5_discard(&c);
    assert_null(c.md);
    bfs_md5_discard(&c); /* twice: a no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),     cmocka_unit_test(test_abc),
        cmocka_unit_test(test_448_bits),  cmocka_unit_test(test_896_bits),
        cmocka_unit_test(test_million_a), cmocka_unit_test(test_streaming_equals_oneshot),
        cmocka_unit_test(test_discard),   cmocka_unit_test(test_hex),
        cmocka_unit_test(test_md5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
