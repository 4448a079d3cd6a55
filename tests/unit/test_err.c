/* test_err.c - struct bfs_err (err.h): set, prefix, clear, truncation, NULL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "battlefs/err.h"

/* set returns the code it records, with the formatted reason. */
static void test_set(void **state)
{
    (void)state;
    struct bfs_err e = {0};
    assert_int_equal(bfs_err_set(&e, -EINVAL, "block %d at byte %zu: %s", 3, (size_t)5120,
                                 "sync marker does not match the header"),
                     -EINVAL);
    assert_int_equal(e.code, -EINVAL);
    assert_string_equal(e.msg, "block 3 at byte 5120: sync marker does not match the header");

    /* a new set replaces both */
    assert_int_equal(bfs_err_set(&e, -EFBIG, "too big"), -EFBIG);
    assert_int_equal(e.code, -EFBIG);
    assert_string_equal(e.msg, "too big");

    /* no format: the code only, no reason */
    assert_int_equal(bfs_err_set(&e, -EIO, NULL), -EIO);
    assert_int_equal(e.code, -EIO);
    assert_string_equal(e.msg, "");

    /* the reason may quote the reason it replaces */
    bfs_err_set(&e, -EINVAL, "bad");
    bfs_err_set(&e, -EINVAL, "schema does not parse: %s", e.msg);
    assert_string_equal(e.msg, "schema does not parse: bad");
}

/* prefix puts "context: " in front and keeps the code. */
static void test_prefix(void **state)
{
    (void)state;
    struct bfs_err e = {0};
    bfs_err_set(&e, -EACCES, "HTTP 403 %s", "SignatureDoesNotMatch");
    assert_int_equal(bfs_err_prefix(&e, "put %s", "battle/2025-12-18/r-0.avro"), -EACCES);
    assert_int_equal(e.code, -EACCES);
    assert_string_equal(e.msg, "put battle/2025-12-18/r-0.avro: HTTP 403 SignatureDoesNotMatch");
    bfs_err_prefix(&e, "roll %s", "r");
    assert_string_equal(e.msg, "roll r: put battle/2025-12-18/r-0.avro: HTTP 403 "
                               "SignatureDoesNotMatch");

    /* an empty reason becomes the context alone */
    bfs_err_set(&e, -EIO, NULL);
    assert_int_equal(bfs_err_prefix(&e, "put %s", "k"), -EIO);
    assert_string_equal(e.msg, "put k");

    /* the context may use what is being prefixed's own buffer safely */
    bfs_err_set(&e, -EIO, "inner");
    bfs_err_prefix(&e, "outer (%s)", e.msg);
    assert_string_equal(e.msg, "outer (inner): inner");
}

/* Long reasons are cut, always NUL-terminated; prefix keeps the front. */
static void test_truncation(void **state)
{
    (void)state;
    char big[3 * BFS_ERR_MSG_MAX];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct bfs_err e;
    memset(&e, 0x55, sizeof e);
    assert_int_equal(bfs_err_set(&e, -EINVAL, "%s", big), -EINVAL);
    assert_int_equal(strlen(e.msg), BFS_ERR_MSG_MAX - 1);
    assert_int_equal(e.msg[0], 'x');

    bfs_err_prefix(&e, "context");
    assert_int_equal(strlen(e.msg), BFS_ERR_MSG_MAX - 1);
    assert_memory_equal(e.msg, "context: xxx", 12);
    assert_int_equal(e.code, -EINVAL);

    /* a context longer than the whole message */
    bfs_err_set(&e, -EIO, "tail");
    bfs_err_prefix(&e, "%s", big);
    assert_int_equal(strlen(e.msg), BFS_ERR_MSG_MAX - 1);
    assert_int_equal(e.msg[BFS_ERR_MSG_MAX - 2], 'x');
    assert_int_equal(e.code, -EIO);
}

/* NULL e: set returns the code, prefix 0, clear nothing; nothing crashes. */
static void test_null(void **state)
{
    (void)state;
    assert_int_equal(bfs_err_set(NULL, -ENOMEM, "out of %s", "memory"), -ENOMEM);
    assert_int_equal(bfs_err_set(NULL, 0, NULL), 0);
    assert_int_equal(bfs_err_prefix(NULL, "ctx %d", 1), 0);
    bfs_err_clear(NULL);
}

static void test_clear(void **state)
{
    (void)state;
    struct bfs_err e;
    bfs_err_set(&e, -EIO, "broken");
    bfs_err_clear(&e);
    assert_int_equal(e.code, 0);
    assert_string_equal(e.msg, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set),        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_truncation), cmocka_unit_test(test_null),
        cmocka_unit_test(test_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
