/* test_misc.c - the small shared helpers: the varint decoder (varint.h), the
 * growth of buffers and arrays (buf.h) and mkdir -p (fsutil.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/fsutil.h"
#include "battlefs/names.h"
#include "battlefs/varint.h"

/* ---- varint decoder -------------------------------------------------------- */

static int decode(const uint8_t *b, size_t len, size_t *pos, int64_t *v)
{
    return bfs_varint_get_long(b, len, pos, v);
}

/* Every value the encoder writes decodes to itself, taking exactly its bytes,
 * also when more bytes follow. */
static void test_varint_round_trip(void **state)
{
    (void)state;
    /* each of these, its negation, and INT64_MIN */
    static const int64_t mags[] = {
        0, 1, 63, 64, 65, 8191, 8192, INT32_MAX, 281474976710656, INT64_MAX - 1, INT64_MAX};
    for (size_t i = 0; i < 2 * sizeof mags / sizeof *mags + 1; i++) {
        size_t k = i / 2;
        int64_t x = k == sizeof mags / sizeof *mags ? INT64_MIN : i % 2 ? -mags[k] : mags[k];
        struct bfs_buf b = {0};
        assert_int_equal(bfs_buf_put_long(&b, x), 0);
        size_t n = b.len;
        assert_int_equal(bfs_buf_append(&b, "\x7f\x80", 2), 0);
        size_t pos = 0;
        int64_t v = 12345;
        assert_int_equal(decode(b.data, b.len, &pos, &v), BFS_VARINT_OK);
        assert_int_equal(pos, n);
        assert_true(v == x);
        bfs_buf_free(&b);
    }
    /* a walk over powers of two and their neighbours, both signs */
    for (int k = 0; k < 63; k++) {
        for (int64_t d = -1; d <= 1; d++) {
            int64_t x = ((int64_t)1 << k) + d;
            for (int s = 0; s < 2; s++, x = -x) {
                struct bfs_buf b = {0};
                assert_int_equal(bfs_buf_put_long(&b, x), 0);
                size_t pos = 0;
                int64_t v;
                assert_int_equal(decode(b.data, b.len, &pos, &v), BFS_VARINT_OK);
                assert_int_equal(pos, b.len);
                assert_true(v == x);
                bfs_buf_free(&b);
            }
        }
    }
}

/* Decoding starts at *pos; one-byte values are the zig-zag of the byte. */
static void test_varint_at_offsets(void **state)
{
    (void)state;
    const uint8_t b[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0x01, 0x03};
    const int64_t want[] = {0, -1, 1, -64, 64, -2};
    size_t pos = 0;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int64_t v;
        assert_int_equal(decode(b, sizeof b, &pos, &v), BFS_VARINT_OK);
        assert_true(v == want[i]);
    }
    assert_int_equal(pos, sizeof b);
    assert_int_equal(bfs_zigzag_decode(0), 0);
    assert_true(bfs_zigzag_decode(UINT64_MAX) == INT64_MIN);
    assert_true(bfs_zigzag_decode(UINT64_MAX - 1) == INT64_MAX);
}

/* Ten bytes: the longest; the 10th may carry bit 63 only. */
static void test_varint_ten_bytes(void **state)
{
    (void)state;
    uint8_t b[11];
    memset(b, 0xff, 9);
    b[9] = 0x01;
    size_t pos = 0;
    int64_t v = 0;
    assert_int_equal(decode(b, 10, &pos, &v), BFS_VARINT_OK);
    assert_int_equal(pos, 10);
    assert_true(v == INT64_MIN);

    /* a 10th byte of 0x00 (an overlong 9-byte value) is fine, as in the encoders */
    b[9] = 0x00;
    pos = 0;
    assert_int_equal(decode(b, 10, &pos, &v), BFS_VARINT_OK);
    assert_int_equal(pos, 10);

    /* a 10th byte with any bit above bit 63, or a continuation bit: bad */
    const uint8_t tenth[] = {0x02, 0x7e, 0x7f, 0x80, 0x81, 0xff};
    for (size_t i = 0; i < sizeof tenth; i++) {
        b[9] = tenth[i];
        b[10] = 0x00; /* an 11th byte does not make it valid */
        pos = 0;
        v = 77;
        assert_int_equal(decode(b, 11, &pos, &v), BFS_VARINT_BAD);
        assert_int_equal(pos, 0); /* unchanged */
        assert_int_equal(v, 77);
    }
}

/* Overlong encodings of small values are accepted (as avro-c does): 0 in 2..10 bytes. */
static void test_varint_overlong(void **state)
{
    (void)state;
    for (size_t n = 2; n <= 10; n++) {
        uint8_t b[10];
        memset(b, 0x80, n - 1);
        b[n - 1] = 0x00;
        size_t pos = 0;
        int64_t v = 5;
        assert_int_equal(decode(b, n, &pos, &v), BFS_VARINT_OK);
        assert_int_equal(pos, n);
        assert_int_equal(v, 0);
    }
    /* eleven bytes: too long whatever the value */
    uint8_t b[11];
    memset(b, 0x80, 10);
    b[10] = 0x00;
    size_t pos = 0;
    int64_t v;
    assert_int_equal(decode(b, sizeof b, &pos, &v), BFS_VARINT_BAD);
    assert_int_equal(pos, 0);
}

/* A buffer ending inside a varint (or before it) is truncated, never read past. */
static void test_varint_truncated(void **state)
{
    (void)state;
    struct bfs_buf b = {0};
    assert_int_equal(bfs_buf_put_long(&b, INT64_MAX), 0);
    assert_int_equal(b.len, 10);
    for (size_t len = 0; len < 10; len++) {
        /* a copy of exactly len bytes, so ASan sees any read past it */
        uint8_t *c = malloc(len ? len : 1);
        assert_non_null(c);
        memcpy(c, b.data, len);
        size_t pos = 0;
        int64_t v = 9;
        assert_int_equal(decode(c, len, &pos, &v), BFS_VARINT_TRUNCATED);
        assert_int_equal(pos, 0);
        assert_int_equal(v, 9);
        free(c);
    }
    /* at the end of the buffer */
    size_t pos = 10;
    int64_t v;
    assert_int_equal(decode(b.data, 10, &pos, &v), BFS_VARINT_TRUNCATED);
    assert_int_equal(pos, 10);
    assert_int_equal(decode(NULL, 0, &(size_t){0}, &v), BFS_VARINT_TRUNCATED);
    bfs_buf_free(&b);
}

/* ---- growth of buffers and arrays ------------------------------------------ */

static void test_buf_reserve_exact(void **state)
{
    (void)state;
    struct bfs_buf b = {0};
    assert_int_equal(bfs_buf_reserve_exact(&b, 0), 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(bfs_buf_reserve_exact(&b, 1000), 0);
    assert_int_equal(b.cap, 1000); /* exactly, no doubling */
    memset(b.data, 'x', 1000);
    assert_int_equal(bfs_buf_reserve_exact(&b, 999), 0); /* fits: unchanged */
    assert_int_equal(b.cap, 1000);
    assert_int_equal(bfs_buf_reserve_exact(&b, 4097), 0);
    assert_int_equal(b.cap, 4097);
    for (size_t i = 0; i < 1000; i++) /* contents kept */
        assert_int_equal(b.data[i], 'x');
    b.len = 10; /* room is counted after len */
    assert_int_equal(bfs_buf_reserve_exact(&b, 5000), 0);
    assert_int_equal(b.cap, 5010);
    assert_int_equal(bfs_buf_reserve_exact(&b, SIZE_MAX - 5), -ENOMEM);
    assert_int_equal(b.cap, 5010);
    assert_int_equal(b.len, 10);
    bfs_buf_free(&b);

    /* bfs_buf_reserve still doubles from 256 */
    assert_int_equal(bfs_buf_reserve(&b, 1), 0);
    assert_int_equal(b.cap, 256);
    assert_int_equal(bfs_buf_reserve(&b, 257), 0);
    assert_int_equal(b.cap, 512);
    bfs_buf_free(&b);
}

struct item {
    uint64_t a, b;
    char name[24];
};

static void test_array_reserve(void **state)
{
    (void)state;
    struct item *v = NULL;
    size_t cap = 0;
    assert_int_equal(bfs_array_reserve(&v, &cap, 1, sizeof *v), 0);
    assert_non_null(v);
    assert_int_equal(cap, 16);
    for (size_t i = 0; i < 16; i++)
        v[i] = (struct item){.a = i, .b = ~i};
    struct item *was = v;
    assert_int_equal(bfs_array_reserve(&v, &cap, 16, sizeof *v), 0); /* fits */
    assert_ptr_equal(v, was);
    assert_int_equal(cap, 16);
    assert_int_equal(bfs_array_reserve(&v, &cap, 17, sizeof *v), 0);
    assert_int_equal(cap, 32);
    assert_int_equal(bfs_array_reserve(&v, &cap, 100, sizeof *v), 0);
    assert_int_equal(cap, 128);     /* doubled until it fits */
    for (size_t i = 0; i < 16; i++) /* contents kept */
        assert_true(v[i].a == i && v[i].b == ~i);

    /* too big: -ENOMEM, array and cap unchanged */
    was = v;
    assert_int_equal(bfs_array_reserve(&v, &cap, SIZE_MAX / 8, sizeof *v), -ENOMEM);
    assert_int_equal(bfs_array_reserve(&v, &cap, SIZE_MAX, 1), -ENOMEM);
    assert_ptr_equal(v, was);
    assert_int_equal(cap, 128);
    free(v);

    /* a cap that is not a power of two doubles from itself */
    char *s = malloc(10);
    assert_non_null(s);
    size_t scap = 10;
    assert_int_equal(bfs_array_reserve(&s, &scap, 11, 1), 0);
    assert_int_equal(scap, 20);
    free(s);
}

/* ---- mkdir -p ------------------------------------------------------------- */

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/bfs-test-misc-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    return strdup(tmpl);
}

static void rm_rf(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static int is_dir(const char *path, mode_t *mode)
{
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return 0;
    if (mode)
        *mode = st.st_mode & 07777;
    return 1;
}

static void test_mkdirs(void **state)
{
    (void)state;
    char *d = tmpdir();
    char p[PATH_MAX + 64];
    mode_t old = umask(022);

    snprintf(p, sizeof p, "%s/a/b/c", d);
    assert_int_equal(bfs_mkdirs(p, 0700), 0);
    mode_t m;
    assert_true(is_dir(p, &m));
    assert_int_equal(m, 0700);
    snprintf(p, sizeof p, "%s/a", d);
    assert_true(is_dir(p, &m));
    assert_int_equal(m, 0700);
    /* existing: fine, and its mode is left alone */
    assert_int_equal(chmod(p, 0755), 0);
    snprintf(p, sizeof p, "%s/a/b/c", d);
    assert_int_equal(bfs_mkdirs(p, 0700), 0);
    snprintf(p, sizeof p, "%s/a", d);
    assert_true(is_dir(p, &m));
    assert_int_equal(m, 0755);
    /* the mode given, less the umask */
    snprintf(p, sizeof p, "%s/m", d);
    assert_int_equal(bfs_mkdirs(p, 0777), 0);
    assert_true(is_dir(p, &m));
    assert_int_equal(m, 0755);
    /* repeated and trailing '/' */
    snprintf(p, sizeof p, "%s//x///y/", d);
    assert_int_equal(bfs_mkdirs(p, 0700), 0);
    snprintf(p, sizeof p, "%s/x/y", d);
    assert_true(is_dir(p, NULL));
    /* the root and a relative path */
    assert_int_equal(bfs_mkdirs("/", 0700), 0);
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(d), 0);
    assert_int_equal(bfs_mkdirs("rel/one", 0700), 0);
    assert_int_equal(chdir(cwd), 0);
    snprintf(p, sizeof p, "%s/rel/one", d);
    assert_true(is_dir(p, NULL));

    /* a file in the way, as the last component or a parent: -ENOTDIR */
    snprintf(p, sizeof p, "%s/file", d);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(bfs_mkdirs(p, 0700), -ENOTDIR);
    snprintf(p, sizeof p, "%s/file/sub", d);
    assert_int_equal(bfs_mkdirs(p, 0700), -ENOTDIR);

    /* bad arguments */
    assert_int_equal(bfs_mkdirs("", 0700), -EINVAL);
    assert_int_equal(bfs_mkdirs(NULL, 0700), -EINVAL);
    memset(p, 'n', sizeof p - 1);
    p[0] = '/';
    p[PATH_MAX] = '\0';
    assert_int_equal(bfs_mkdirs(p, 0700), -ENAMETOOLONG);
    /* a component longer than NAME_MAX: mkdir's errno */
    int n = snprintf(p, sizeof p, "%s/", d);
    memset(p + n, 'z', NAME_MAX + 1);
    p[n + NAME_MAX + 1] = '\0';
    assert_int_equal(bfs_mkdirs(p, 0700), -ENAMETOOLONG);

    umask(old);
    rm_rf(d);
    free(d);
}

/* ---- names: reserved tables, control bytes escaped ------------------------ */

static void test_table_reserved(void **state)
{
    (void)state;
    assert_true(bfs_table_reserved("incoming", 8));
    assert_true(bfs_table_reserved("_battlefs", 9));
    assert_false(bfs_table_reserved("incoming2", 9));
    assert_false(bfs_table_reserved("incoming", 7)); /* "incomin" */
    assert_false(bfs_table_reserved("battle", 6));
    /* the one lookup of a name among an enum's (the fault steps) */
    static const char *const names[] = {"after-log", "after-commit"};
    assert_int_equal(bfs_name_index(names, 2, "after-commit"), 1);
    assert_int_equal(bfs_name_index(names, 2, "after-log"), 0);
    assert_int_equal(bfs_name_index(names, 2, "after"), -1);
    assert_int_equal(bfs_name_index(names, 2, NULL), -1);
    assert_int_equal(bfs_name_index(names, 1, "after-commit"), -1);
}

static void test_escape_ctl(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(bfs_escape_ctl(out, sizeof out, "a\x1b[31mb\nc\x7f"), 19);
    assert_string_equal(out, "a\\x1b[31mb\\x0ac\\x7f");
    assert_int_equal(bfs_escape_ctl(out, sizeof out, "plain: \xc3\xa9"), 9); /* UTF-8 kept */
    /* cut at the buffer's end, never in the middle of an escape */
    assert_int_equal(bfs_escape_ctl(out, 6,
                                    "ab\x01"
                                    "cd"),
                     2);
    assert_string_equal(out, "ab");
    assert_int_equal(bfs_escape_ctl(out, 7,
                                    "ab\x01"
                                    "cd"),
                     6);
    assert_string_equal(out, "ab\\x01");
}

static void test_dir_check(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/bfs-test-dircheck-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char p[PATH_MAX], l[PATH_MAX], f[PATH_MAX];
    struct bfs_err err;
    snprintf(p, sizeof p, "%s/real", d);
    snprintf(l, sizeof l, "%s/link", d);
    snprintf(f, sizeof f, "%s/file", d);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(symlink(p, l), 0);
    int fd = open(f, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(bfs_dir_check(p, getuid(), &err), 0);
    assert_int_equal(bfs_dir_check(l, getuid(), &err), -ELOOP);
    assert_non_null(strstr(err.msg, "is a symbolic link (to "));
    assert_int_equal(bfs_dir_check(f, getuid(), &err), -ENOTDIR);
    assert_int_equal(err.code, -ENOTDIR);
    assert_int_equal(bfs_dir_check(p, getuid() + 1, &err), -EPERM);
    assert_non_null(strstr(err.msg, "not to the mounting user"));
    snprintf(f, sizeof f, "%s/none", d);
    assert_int_equal(bfs_dir_check(f, getuid(), &err), -ENOENT);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_round_trip), cmocka_unit_test(test_varint_at_offsets),
        cmocka_unit_test(test_varint_ten_bytes),  cmocka_unit_test(test_varint_overlong),
        cmocka_unit_test(test_varint_truncated),  cmocka_unit_test(test_buf_reserve_exact),
        cmocka_unit_test(test_array_reserve),     cmocka_unit_test(test_mkdirs),
        cmocka_unit_test(test_table_reserved),    cmocka_unit_test(test_escape_ctl),
        cmocka_unit_test(test_dir_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
