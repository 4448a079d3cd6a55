/* test_misc.c - the small shared helpers: mkdir -p (fsutil.h). */
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

#include "battlefs/fsutil.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mkdirs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
