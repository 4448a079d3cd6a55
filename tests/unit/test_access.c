/* test_access.c - the permission check battlefs makes itself (access.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>

#include "battlefs/access.h"

static int calls;

static int groups_7_and_9(gid_t *list, int size)
{
    calls++;
    if (size < 2)
        return 0;
    list[0] = 7;
    list[1] = 9;
    return 2;
}

static void test_classes(void **state)
{
    (void)state;
    struct bfs_caller owner = {100, 100, groups_7_and_9};
    struct bfs_caller member = {200, 9, groups_7_and_9};
    struct bfs_caller supplementary = {300, 300, groups_7_and_9};
    struct bfs_caller other = {400, 400, NULL};
    /* 0640 of 100:9 */
    assert_int_equal(bfs_access_check(&owner, 0640, 100, 9, BFS_MAY_READ | BFS_MAY_WRITE), 0);
    assert_int_equal(bfs_access_check(&owner, 0640, 100, 9, BFS_MAY_EXEC), -EACCES);
    assert_int_equal(bfs_access_check(&member, 0640, 100, 9, BFS_MAY_READ), 0);
    assert_int_equal(bfs_access_check(&member, 0640, 100, 9, BFS_MAY_WRITE), -EACCES);
    assert_int_equal(bfs_access_check(&supplementary, 0640, 100, 9, BFS_MAY_READ), 0);
    assert_int_equal(bfs_access_check(&other, 0640, 100, 9, BFS_MAY_READ), -EACCES);
    /* the owner's bits count even when they are fewer than the group's (Unix) */
    assert_int_equal(bfs_access_check(&owner, 0070, 100, 9, BFS_MAY_READ), -EACCES);
    /* nothing asked: allowed */
    assert_int_equal(bfs_access_check(&other, 0, 100, 9, 0), 0);
}

static void test_root_and_lazy_groups(void **state)
{
    (void)state;
    struct bfs_caller root = {0, 0, groups_7_and_9};
    calls = 0;
    assert_int_equal(bfs_access_check(&root, 0, 100, 9, BFS_MAY_READ | BFS_MAY_WRITE), 0);
    struct bfs_caller owner = {100, 5, groups_7_and_9};
    assert_int_equal(bfs_access_check(&owner, 0600, 100, 9, BFS_MAY_READ), 0);
    struct bfs_caller primary = {200, 9, groups_7_and_9};
    assert_int_equal(bfs_access_check(&primary, 0060, 100, 9, BFS_MAY_READ), 0);
    assert_int_equal(calls, 0); /* the groups are asked only when they decide */
    struct bfs_caller other = {300, 300, groups_7_and_9};
    assert_int_equal(bfs_access_check(&other, 0604, 100, 8, BFS_MAY_READ), 0);
    assert_int_equal(calls, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_root_and_lazy_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
