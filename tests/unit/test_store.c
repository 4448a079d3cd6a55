/* test_store.c - store URLs, key rules and the file:// backend (with its conditional
 * writes, head and get). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/sha256.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"

/* ---- helpers --------------------------------------------------------------- */

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/bfs-test-store-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void rm_rf(const char *path)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static char *path_join(const char *a, const char *b)
{
    char *p;
    assert_true(asprintf(&p, "%s/%s", a, b) > 0);
    return p;
}

static void write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
}

static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
    return p;
}

/* Count files whose name starts with the temporary prefix, anywhere under dir. */
static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (bfs_store_is_temp_name(de->d_name))
            n++;
        char *sub = path_join(dir, de->d_name);
        struct stat sb;
        assert_int_equal(lstat(sub, &sb), 0);
        if (S_ISDIR(sb.st_mode))
            n += count_temp_files(sub);
        free(sub);
    }
    closedir(d);
    return n;
}

static struct bfs_store *open_file_store(const char *dir, struct bfs_stats *stats)
{
    char url[4200];
    snprintf(url, sizeof url, "file://%s", dir);
    struct bfs_store *st = NULL;
    struct bfs_err err = {0};
    int rc = bfs_store_open(url, NULL, stats, &st, &err);
    if (rc != 0)
        fail_msg("open %s: %d %s", url, rc, err.msg);
    assert_non_null(st);
    return st;
}

/* ---- URL parsing ------------------------------------------------------------ */

static void parse_ok(const char *url, enum bfs_store_scheme scheme, const char *a, const char *b)
{
    struct bfs_store_url u;
    struct bfs_err err = {0};
    int rc = bfs_store_parse_url(url, &u, &err);
    if (rc != 0)
        fail_msg("%s: %d %s", url, rc, err.msg);
    assert_int_equal(u.scheme, scheme);
    if (scheme == BFS_STORE_FILE) {
        assert_string_equal(u.path, a);
        assert_null(u.bucket);
    } else {
        assert_string_equal(u.bucket, a);
        assert_string_equal(u.prefix, b);
        assert_null(u.path);
    }
    bfs_store_url_free(&u);
}

static void parse_bad(const char *url, const char *msg_part)
{
    struct bfs_store_url u;
    struct bfs_err err = {0};
    int rc = bfs_store_parse_url(url, &u, &err);
    if (rc != -EINVAL)
        fail_msg("%s: expected -EINVAL, got %d", url ? url : "(null)", rc);
    assert_true(err.msg[0] != '\0');
    if (msg_part && !strstr(err.msg, msg_part))
        fail_msg("%s: message \"%s\" lacks \"%s\"", url, err.msg, msg_part);
    assert_null(u.path);
    assert_null(u.bucket);
    assert_null(u.prefix);
}

static void test_parse_file_urls(void **state)
{
    (void)state;
    parse_ok("file:///tmp/x", BFS_STORE_FILE, "/tmp/x", NULL);
    parse_ok("file:///tmp/x///", BFS_STORE_FILE, "/tmp/x", NULL);
    parse_ok("file:///", BFS_STORE_FILE, "/", NULL);
    parse_ok("file://localhost/srv/a b", BFS_STORE_FILE, "/srv/a b", NULL);
    parse_ok("FILE:///var/lib/battlefs/store", BFS_STORE_FILE, "/var/lib/battlefs/store", NULL);
    parse_ok("file:///100%25", BFS_STORE_FILE, "/100%25", NULL); /* literal, no %-decoding */
    parse_bad("file://relative/dir", "absolute");
    parse_bad("file://", "absolute");
    parse_bad("file:relative", "file:///abs/dir");
    parse_bad("file:/abs", NULL);
    parse_bad("file:///a\nb", "control");
}

static void test_parse_s3_urls(void **state)
{
    (void)state;
    parse_ok("s3://battle-archive", BFS_STORE_S3, "battle-archive", "");
    parse_ok("s3://battle-archive/", BFS_STORE_S3, "battle-archive", "");
    parse_ok("S3://my.bucket-1/pre/fix/", BFS_STORE_S3, "my.bucket-1", "pre/fix");
    parse_ok("s3://abc/x", BFS_STORE_S3, "abc", "x");
    parse_ok("s3://a--b/x.y", BFS_STORE_S3, "a--b", "x.y");
    parse_ok("s3://1.2.3/p", BFS_STORE_S3, "1.2.3", "p");
    parse_ok("s3://1.2.3.4a", BFS_STORE_S3, "1.2.3.4a", "");
    char b63[80];
    memset(b63, 'b', 63);
    b63[63] = '\0';
    char url[128];
    snprintf(url, sizeof url, "s3://%s/p", b63);
    parse_ok(url, BFS_STORE_S3, b63, "p");

    snprintf(url, sizeof url, "s3://%sb/p", b63); /* 64 characters */
    parse_bad(url, "bucket");
    const char *bad_buckets[] = {
        "s3://",
        "s3://ab",
        "s3://Upper",
        "s3://-abc",
        "s3://abc-",
        "s3://.ab",
        "s3://a..b",
        "s3://a.-b",
        "s3://a-.b",
        "s3://192.168.1.1",
        "s3://under_score",
        "s3:///prefix",
        "s3://user:pw@bucket",
        "s3://b c",
    };
    for (size_t i = 0; i < sizeof bad_buckets / sizeof *bad_buckets; i++)
        parse_bad(bad_buckets[i], "bucket");
    const char *bad_prefixes[] = {
        "s3://bucket//x",   "s3://bucket/a//b", "s3://bucket/a/../b",     "s3://bucket/./a",
        "s3://bucket/a\tb", "s3://bucket/..",   "s3://bucket/.bfs-tmp-1",
    };
    for (size_t i = 0; i < sizeof bad_prefixes / sizeof *bad_prefixes; i++)
        parse_bad(bad_prefixes[i], "prefix");
}

/* The one bucket rule: bfs_store_bucket_check, used by the URL parser and by the
 * S3 backend itself (which once had a looser rule of its own: 1-255 characters
 * with upper case and '_'). */
static void test_bucket_rules(void **state)
{
    (void)state;
    const char *good[] = {
        "abc",      "battle-archive", "my.bucket-1", "a--b", "1.2.3", "1.2.3.4a",
        "a1.2.3.4", "1.2.3.4.5",      "0ab",         "ab9",  "a.b.c", "123",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (bfs_store_bucket_check(good[i], strlen(good[i])) != 0)
            fail_msg("\"%s\" should be a valid bucket name", good[i]);
    const char *bad[] = {
        "",     "a",           "ab",      "Abc",  "abC",        "under_score", "-abc",
        "abc-", ".abc",        "abc.",    "a..b", "a.-b",       "a-.b",        "a b",
        "a/b",  "192.168.1.1", "1.2.3.4", "a\tb", "ab\xc3\xa9", "a:b",         "a@b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (bfs_store_bucket_check(bad[i], strlen(bad[i])) != -EINVAL)
            fail_msg("\"%s\" should be refused", bad[i]);
    assert_int_equal(bfs_store_bucket_check(NULL, 3), -EINVAL);

    char b[80];
    memset(b, 'b', sizeof b);
    assert_int_equal(bfs_store_bucket_check(b, 63), 0);
    assert_int_equal(bfs_store_bucket_check(b, 64), -EINVAL);
    /* the length given is the name: what follows is not looked at */
    assert_int_equal(bfs_store_bucket_check("abc/prefix", 3), 0);
    assert_int_equal(bfs_store_bucket_check("abc-", 3), 0);

    /* The S3 backend applies the same rule when opened directly (no I/O at open). */
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret-for-tests", 1);
    struct bfs_store_opts o = {.endpoint = "http://127.0.0.1:9", .region = "us-east-1"};
    const char *s3_bad[] = {"Upper", "under_score", "ab", "a..b", "10.0.0.1"};
    for (size_t i = 0; i < sizeof s3_bad / sizeof *s3_bad; i++) {
        struct bfs_store *st = (struct bfs_store *)1;
        struct bfs_err err = {0};
        assert_int_equal(bfs_store_s3_open(s3_bad[i], "", &o, &st, &err), -EINVAL);
        assert_null(st);
        if (!strstr(err.msg, "bucket"))
            fail_msg("%s: message \"%s\" lacks \"bucket\"", s3_bad[i], err.msg);
    }
    struct bfs_store *st = NULL;
    struct bfs_err err = {0};
    assert_int_equal(bfs_store_s3_open("my.bucket-1", "p", &o, &st, &err), 0);
    bfs_store_close(st);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void test_parse_other_urls(void **state)
{
    (void)state;
    parse_bad("", "file:///abs/dir");
    parse_bad(NULL, NULL);
    parse_bad("http://example.com/x", "file:///abs/dir or s3://bucket");
    parse_bad("/abs/dir", "file:///abs/dir");
    parse_bad("s3:/bucket", NULL);
    parse_bad("gs://bucket", NULL);
    /* err may be NULL */
    struct bfs_store_url u;
    assert_int_equal(bfs_store_parse_url("nope", &u, NULL), -EINVAL);
}

static void test_open_errors(void **state)
{
    (void)state;
    struct bfs_store *st = (struct bfs_store *)1;
    struct bfs_err err = {0};
    assert_int_equal(bfs_store_open("ftp://x", NULL, NULL, &st, &err), -EINVAL);
    assert_null(st);
    assert_non_null(strstr(err.msg, "file:///abs/dir"));

    bfs_err_clear(&err);
    assert_int_equal(bfs_store_open("file:///nonexistent/bfs-store-dir", NULL, NULL, &st, &err),
                     -ENOENT);
    assert_null(st);
    assert_non_null(strstr(err.msg, "/nonexistent/bfs-store-dir"));

    char *dir = make_tmpdir();
    char *file = path_join(dir, "plain");
    write_file(file, "x", 1);
    char url[4200];
    snprintf(url, sizeof url, "file://%s", file);
    assert_int_equal(bfs_store_open(url, NULL, NULL, &st, &err), -ENOTDIR);
    assert_null(st);
    free(file);
    rm_rf(dir);
    free(dir);
}

static void test_open_dispatch(void **state)
{
    (void)state;
    struct bfs_stats stats;
    bfs_stats_init(&stats);
    char *dir = make_tmpdir();
    char url[4200];
    snprintf(url, sizeof url, "file://%s//", dir);
    struct bfs_store *st = NULL;
    struct bfs_err err = {0};
    assert_int_equal(bfs_store_open(url, NULL, &stats, &st, &err), 0);
    assert_ptr_equal(st->stats, &stats);
    char want[4200];
    snprintf(want, sizeof want, "file://%s", dir);
    assert_string_equal(st->url, want);
    bfs_store_close(st);
    bfs_store_close(NULL);

    /* s3:// goes to the S3 backend with bucket and normalised prefix (no I/O at open). */
    setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret-for-tests", 1);
    struct bfs_store_opts o = {.endpoint = "http://127.0.0.1:9", .region = "us-east-1"};
    st = NULL;
    assert_int_equal(bfs_store_open("s3://battlefs-test/pre/fix/", &o, &stats, &st, &err), 0);
    assert_non_null(st);
    assert_ptr_equal(st->stats, &stats);
    assert_string_equal(st->url, "s3://battlefs-test/pre/fix");
    bfs_store_close(st);

    /* Without credentials the S3 backend refuses, with a message. */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    st = (struct bfs_store *)1;
    bfs_err_clear(&err);
    int rc = bfs_store_open("s3://battlefs-test", &o, &stats, &st, &err);
    assert_true(rc < 0);
    assert_null(st);
    assert_true(err.msg[0] != '\0');
    rm_rf(dir);
    free(dir);
    bfs_stats_destroy(&stats);
}

/* ---- key rules ------------------------------------------------------------- */

static void test_key_rules(void **state)
{
    (void)state;
    const char *good[] = {
        "a",       "a/b.avro", "battle/2025-12-18/20251218T130000Z-1-0.avro",
        ".hidden", "a/..b",    "a/b..",
        "x/.y/z",  "sp ace/ü", "a\\b",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (bfs_store_key_check(good[i]) != 0)
            fail_msg("key \"%s\" should be valid", good[i]);
    const char *bad[] = {
        "",  "/a",   "a/",   "a//b",  "./a",  "a/./b",      "a/..",           "..",
        ".", "../x", "a\nb", "a\x7f", "\x01", ".bfs-tmp-x", "a/.bfs-tmp-1-b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (bfs_store_key_check(bad[i]) != -EINVAL)
            fail_msg("key \"%s\" should be invalid", bad[i]);
    assert_int_equal(bfs_store_key_check(NULL), -EINVAL);

    /* lengths: 1024 bytes in components of 255 is fine; 1025 or a 256-byte component is not */
    char k[1100];
    memset(k, 'k', sizeof k);
    for (size_t i = 200; i < 1000; i += 200)
        k[i] = '/';
    k[1024] = '\0';
    assert_int_equal(bfs_store_key_check(k), 0);
    k[1024] = 'k';
    k[1025] = '\0';
    assert_int_equal(bfs_store_key_check(k), -EINVAL);
    memset(k, 'k', 256);
    k[256] = '\0';
    assert_int_equal(bfs_store_key_check(k), -EINVAL);
    k[255] = '\0';
    assert_int_equal(bfs_store_key_check(k), 0);

    /* prefixes */
    const char *good_p[] = {"", "battle/", "battle/20", "a", "a/b/", "a/..", "a/."};
    for (size_t i = 0; i < sizeof good_p / sizeof *good_p; i++)
        if (bfs_store_prefix_check(good_p[i]) != 0)
            fail_msg("prefix \"%s\" should be valid", good_p[i]);
    const char *bad_p[] = {"/", "/a", "a//", "a/./", "../", "a/../b", "a\n", ".bfs-tmp-"};
    for (size_t i = 0; i < sizeof bad_p / sizeof *bad_p; i++)
        if (bfs_store_prefix_check(bad_p[i]) != -EINVAL)
            fail_msg("prefix \"%s\" should be invalid", bad_p[i]);
    assert_int_equal(bfs_store_prefix_check(NULL), -EINVAL);

    assert_true(bfs_store_is_temp_name(".bfs-tmp-1-x"));
    assert_false(bfs_store_is_temp_name("bfs-tmp-1"));
    assert_false(bfs_store_is_temp_name(".bfs-tm"));
}

/* ---- file:// put / get_range -------------------------------------------- */

static void test_file_put_get(void **state)
{
    (void)state;
    struct bfs_stats stats;
    bfs_stats_init(&stats);
    char *dir = make_tmpdir();
    char *root = path_join(dir, "store");
    assert_int_equal(mkdir(root, 0755), 0);
    struct bfs_store *st = open_file_store(root, &stats);

    const size_t n = 300000;
    uint8_t *data = pattern(n, 1);
    char *src = path_join(dir, "src.avro");
    write_file(src, data, n);
    const char *key = "battle/2025-12-18/20251218T130000Z-1-0.avro";
    assert_int_equal(bfs_store_put(st, key, src, NULL), 0);
    assert_int_equal(stats.store_put_requests, 1);
    assert_int_equal(stats.store_put_bytes, n);

    /* modes: directories 0700, the object 0600 */
    struct stat sb;
    char *p = path_join(root, "battle");
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);
    free(p);
    p = path_join(root, "battle/2025-12-18");
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0700);
    free(p);
    p = path_join(root, key);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(sb.st_size, n);
    free(p);
    assert_int_equal(count_temp_files(root), 0);

    uint8_t *buf = malloc(n + 16);
    /* whole object */
    assert_int_equal(bfs_store_get_range(st, key, 0, n, buf, NULL), 0);
    assert_memory_equal(buf, data, n);
    /* exact ranges: first byte, last byte, middle */
    assert_int_equal(bfs_store_get_range(st, key, 0, 1, buf, NULL), 0);
    assert_int_equal(buf[0], data[0]);
    assert_int_equal(bfs_store_get_range(st, key, n - 1, 1, buf, NULL), 0);
    assert_int_equal(buf[0], data[n - 1]);
    memset(buf, 0xEE, n + 16);
    assert_int_equal(bfs_store_get_range(st, key, 12345, 54321, buf, NULL), 0);
    assert_memory_equal(buf, data + 12345, 54321);
    assert_int_equal(buf[54321], 0xEE); /* nothing written past len */
    assert_int_equal(stats.store_get_requests, 4);
    assert_int_equal(stats.store_get_bytes, n + 1 + 1 + 54321);

    /* out of range: never partial, buffer untouched, not counted */
    memset(buf, 0xEE, 64);
    assert_int_equal(bfs_store_get_range(st, key, n, 1, buf, NULL), -EIO);
    assert_int_equal(bfs_store_get_range(st, key, n - 10, 11, buf, NULL), -EIO);
    assert_int_equal(bfs_store_get_range(st, key, UINT64_MAX / 2, 10, buf, NULL), -EIO);
    assert_int_equal(buf[0], 0xEE);
    assert_int_equal(bfs_store_get_range(st, key, UINT64_MAX - 1, 5, buf, NULL), -EINVAL);
    /* len 0 does nothing */
    assert_int_equal(bfs_store_get_range(st, key, n + 100, 0, buf, NULL), 0);
    assert_int_equal(stats.store_get_requests, 4);

    /* missing keys */
    assert_int_equal(bfs_store_get_range(st, "battle/2025-12-18/nope.avro", 0, 1, buf, NULL),
                     -ENOENT);
    assert_int_equal(bfs_store_get_range(st, "nodir/x.avro", 0, 1, buf, NULL), -ENOENT);
    char under_file[512];
    snprintf(under_file, sizeof under_file, "%s/x", key);
    assert_int_equal(bfs_store_get_range(st, under_file, 0, 1, buf, NULL), -ENOENT);
    assert_int_equal(bfs_store_get_range(st, "battle", 0, 1, buf, NULL), -ENOENT); /* a directory */
    assert_int_equal(stats.store_get_requests, 4);

    /* invalid keys */
    assert_int_equal(bfs_store_get_range(st, "../x", 0, 1, buf, NULL), -EINVAL);
    assert_int_equal(bfs_store_get_range(st, "/etc/passwd", 0, 1, buf, NULL), -EINVAL);
    assert_int_equal(bfs_store_put(st, "a/../../escape", src, NULL), -EINVAL);
    assert_int_equal(bfs_store_put(st, "", src, NULL), -EINVAL);
    assert_int_equal(bfs_store_del(st, "a//b", NULL), -EINVAL);

    /* bad sources: nothing stored, nothing left behind */
    assert_int_equal(bfs_store_put(st, "k/missing", "/nonexistent/src", NULL), -ENOENT);
    assert_int_equal(bfs_store_put(st, "k/dir", dir, NULL), -EINVAL);
    assert_int_equal(bfs_store_get_range(st, "k/missing", 0, 1, buf, NULL), -ENOENT);
    /* a key below an existing object */
    assert_int_equal(bfs_store_put(st, under_file, src, NULL), -ENOTDIR);
    /* a key naming an existing directory */
    assert_true(bfs_store_put(st, "battle/2025-12-18", src, NULL) < 0);
    assert_int_equal(count_temp_files(root), 0);
    assert_int_equal(stats.store_put_requests, 1);

    /* an empty object */
    char *empty = path_join(dir, "empty");
    write_file(empty, "", 0);
    assert_int_equal(bfs_store_put(st, "e", empty, NULL), 0);
    assert_int_equal(bfs_store_get_range(st, "e", 0, 0, buf, NULL), 0);
    assert_int_equal(bfs_store_get_range(st, "e", 0, 1, buf, NULL), -EIO);

    free(empty);
    free(buf);
    free(src);
    free(data);
    bfs_store_close(st);
    rm_rf(dir);
    free(dir);
    free(root);
    bfs_stats_destroy(&stats);
}

static void test_file_reput_idempotent(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *root = path_join(dir, "store");
    assert_int_equal(mkdir(root, 0700), 0);
    struct bfs_store *st = open_file_store(root, NULL);
    const size_t n = 5000;
    uint8_t *data = pattern(n, 7);
    char *src = path_join(dir, "a");
    write_file(src, data, n);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bfs_store_put(st, "t/p/r-0.avro", src, NULL), 0);
    uint8_t *buf = malloc(n);
    assert_int_equal(bfs_store_get_range(st, "t/p/r-0.avro", 0, n, buf, NULL), 0);
    assert_memory_equal(buf, data, n);
    assert_int_equal(count_temp_files(root), 0);
    /* exactly one object */
    DIR *d = opendir(root);
    char *pd = path_join(root, "t/p");
    closedir(d);
    d = opendir(pd);
    assert_non_null(d);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            files++;
    closedir(d);
    assert_int_equal(files, 1);

    /* a put of other bytes replaces the object */
    uint8_t *data2 = pattern(n / 2, 8);
    write_file(src, data2, n / 2);
    assert_int_equal(bfs_store_put(st, "t/p/r-0.avro", src, NULL), 0);
    assert_int_equal(bfs_store_get_range(st, "t/p/r-0.avro", 0, n / 2, buf, NULL), 0);
    assert_memory_equal(buf, data2, n / 2);
    assert_int_equal(bfs_store_get_range(st, "t/p/r-0.avro", 0, n / 2 + 1, buf, NULL), -EIO);

    free(pd);
    free(buf);
    free(data);
    free(data2);
    free(src);
    bfs_store_close(st);
    rm_rf(dir);
    free(dir);
    free(root);
}

/* ---- list / del ------------------------------------------------------------ */

struct listing {
    char keys[32][128];
    uint64_t sizes[32];
    int n;
    int stop_after; /* 0 = never */
};

static int collect(void *ctx, const char *key, uint64_t size)
{
    struct listing *l = ctx;
    assert_true(l->n < 32);
    snprintf(l->keys[l->n], sizeof l->keys[l->n], "%s", key);
    l->sizes[l->n] = size;
    l->n++;
    if (l->stop_after && l->n == l->stop_after)
        return 42;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* List prefix and compare with the expected keys (a NULL-terminated list, any order). */
static void expect_list(struct bfs_store *st, const char *prefix, const char *const *want)
{
    struct listing l = {.n = 0};
    assert_int_equal(bfs_store_list(st, prefix, collect, &l, NULL), 0);
    qsort(l.keys, (size_t)l.n, sizeof l.keys[0], cmp_str);
    int nw = 0;
    while (want[nw])
        nw++;
    if (l.n != nw) {
        for (int i = 0; i < l.n; i++)
            print_message("  got %s\n", l.keys[i]);
        fail_msg("list \"%s\": %d keys, expected %d", prefix, l.n, nw);
    }
    for (int i = 0; i < nw; i++)
        assert_string_equal(l.keys[i], want[i]); /* want is sorted */
}

static void test_file_list_del(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *root = path_join(dir, "store");
    assert_int_equal(mkdir(root, 0700), 0);
    struct bfs_store *st = open_file_store(root, NULL);
    const char *keys[] = {"a/1", "a/2", "a/b/3", "ab/5", "b/4", "top"};
    for (size_t i = 0; i < 6; i++) {
        char *src = path_join(dir, "src");
        uint8_t *d = pattern(10 + i, (unsigned)i);
        write_file(src, d, 10 + i);
        assert_int_equal(bfs_store_put(st, keys[i], src, NULL), 0);
        free(d);
        free(src);
    }
    /* things list must skip: a temporary file, a symlink, a fifo, a bad name */
    char *p = path_join(root, "a/.bfs-tmp-99-1-x");
    write_file(p, "junk", 4);
    free(p);
    p = path_join(root, "a/link");
    assert_int_equal(symlink("1", p), 0);
    free(p);
    p = path_join(root, "b/fifo");
    assert_int_equal(mkfifo(p, 0600), 0);
    free(p);
    p = path_join(root, "b/new\nline");
    write_file(p, "x", 1);
    free(p);

    struct listing l = {.n = 0};
    assert_int_equal(bfs_store_list(st, "", collect, &l, NULL), 0);
    assert_int_equal(l.n, 6);
    for (int i = 0; i < l.n; i++) {
        int found = 0;
        for (size_t k = 0; k < 6; k++)
            if (!strcmp(l.keys[i], keys[k])) {
                assert_int_equal(l.sizes[i], 10 + k);
                found = 1;
            }
        assert_true(found);
    }
    expect_list(st, "", (const char *const[]){"a/1", "a/2", "a/b/3", "ab/5", "b/4", "top", NULL});
    expect_list(st, "a/", (const char *const[]){"a/1", "a/2", "a/b/3", NULL});
    expect_list(st, "a", (const char *const[]){"a/1", "a/2", "a/b/3", "ab/5", NULL});
    expect_list(st, "a/b", (const char *const[]){"a/b/3", NULL});
    expect_list(st, "a/b/3", (const char *const[]){"a/b/3", NULL});
    expect_list(st, "t", (const char *const[]){"top", NULL});
    expect_list(st, "zzz/", (const char *const[]){NULL});
    expect_list(st, "top/", (const char *const[]){NULL}); /* a file, not a directory */
    expect_list(st, "a/b/3/x", (const char *const[]){NULL});

    /* the callback stops the walk */
    struct listing s = {.n = 0, .stop_after = 2};
    assert_int_equal(bfs_store_list(st, "", collect, &s, NULL), 42);
    assert_int_equal(s.n, 2);
    /* bad prefixes */
    assert_int_equal(bfs_store_list(st, "../", collect, &l, NULL), -EINVAL);
    assert_int_equal(bfs_store_list(st, "/a", collect, &l, NULL), -EINVAL);

    /* del */
    assert_int_equal(bfs_store_del(st, "a/1", NULL), 0);
    uint8_t b;
    assert_int_equal(bfs_store_get_range(st, "a/1", 0, 1, &b, NULL), -ENOENT);
    assert_int_equal(bfs_store_del(st, "a/1", NULL), 0);       /* again: not an error */
    assert_int_equal(bfs_store_del(st, "nodir/x/y", NULL), 0); /* never existed */
    expect_list(st, "a/", (const char *const[]){"a/2", "a/b/3", NULL});
    assert_int_equal(bfs_store_del(st, "a/b", NULL), -EISDIR); /* a directory is no object */
    expect_list(st, "a/", (const char *const[]){"a/2", "a/b/3", NULL});

    bfs_store_close(st);
    rm_rf(dir);
    free(dir);
    free(root);
}

/* ---- file:// put that takes the file (may_link) ------------------------- */

/* A temporary directory with an empty store directory "store" in it. */
struct tmp_store {
    char *dir, *root;
    struct bfs_store *st; /* open on root with stats, or NULL */
    struct bfs_stats stats;
};

static void tmp_store_new(struct tmp_store *t, int open_store)
{
    bfs_stats_init(&t->stats);
    t->dir = make_tmpdir();
    t->root = path_join(t->dir, "store");
    assert_int_equal(mkdir(t->root, 0700), 0);
    t->st = open_store ? open_file_store(t->root, &t->stats) : NULL;
}

static void tmp_store_free(struct tmp_store *t)
{
    if (t->st)
        bfs_store_close(t->st);
    rm_rf(t->dir);
    free(t->dir);
    free(t->root);
    bfs_stats_destroy(&t->stats);
}

static int put_link(struct bfs_store *st, const char *key, const char *path, int may_link)
{
    const struct bfs_put_src src = {.path = path, .sha256 = NULL, .may_link = may_link};
    return bfs_store_put_src(st, key, &src, NULL);
}

static void assert_object(struct bfs_store *st, const char *key, const uint8_t *data, size_t n)
{
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(bfs_store_get_range(st, key, 0, n, buf, NULL), 0);
    assert_memory_equal(buf, data, n);
    assert_int_equal(bfs_store_get_range(st, key, 0, n + 1, buf, NULL), -EIO); /* nothing more */
    free(buf);
}

static void assert_file(const char *path, const uint8_t *data, size_t n)
{
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, buf, n + 1), (ssize_t)n);
    close(fd);
    assert_memory_equal(buf, data, n);
    free(buf);
}

static ino_t ino_of(const char *path)
{
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    return sb.st_ino;
}

static void test_file_put_link(void **state)
{
    (void)state;
    struct tmp_store t;
    tmp_store_new(&t, 1);
    struct bfs_store *st = t.st;
    const char *dir = t.dir, *root = t.root;
    const struct bfs_stats *stats = &t.stats;
    const size_t n = 200000;
    uint8_t *data = pattern(n, 11);
    char *src = path_join(dir, "r-0.avro");
    write_file(src, data, n);
    assert_int_equal(chmod(src, 0644), 0);
    const char *key = "battle/2025-12-18/r-0.avro";
    char *obj = path_join(root, key);

    /* Linked: the object is the source file itself, made 0600; the source is intact. */
    assert_int_equal(put_link(st, key, src, 1), 0);
    assert_int_equal(stats->store_put_requests, 1);
    assert_int_equal(stats->store_put_bytes, n);
    assert_true(ino_of(obj) == ino_of(src));
    struct stat sb;
    assert_int_equal(stat(obj, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(sb.st_nlink, 2);
    assert_object(st, key, data, n);
    assert_file(src, data, n);
    assert_int_equal(count_temp_files(root), 0);

    /* Putting the same linked file again (rename(2) of a link over a link to
     * the same file does nothing): no temporary file stays. */
    assert_int_equal(put_link(st, key, src, 1), 0);
    assert_int_equal(count_temp_files(root), 0);
    assert_int_equal(stat(obj, &sb), 0);
    assert_int_equal(sb.st_nlink, 2);

    /* The caller removes its file: the object stays whole. */
    assert_int_equal(unlink(src), 0);
    assert_int_equal(stat(obj, &sb), 0);
    assert_int_equal(sb.st_nlink, 1);
    assert_object(st, key, data, n);

    /* may_link = 0 copies: another file, and changing the source later does
     * not change the object. */
    uint8_t *data2 = pattern(n / 3, 12);
    write_file(src, data2, n / 3);
    assert_int_equal(put_link(st, key, src, 0), 0);
    assert_true(ino_of(obj) != ino_of(src));
    assert_object(st, key, data2, n / 3);
    write_file(src, data, n);
    assert_object(st, key, data2, n / 3);
    /* bfs_store_put never links */
    assert_int_equal(bfs_store_put(st, "flat.avro", src, NULL), 0);
    char *flat = path_join(root, "flat.avro");
    assert_true(ino_of(flat) != ino_of(src));
    assert_object(st, "flat.avro", data, n);

    /* A symbolic link as the source: linkat would link the symlink itself, so
     * the put copies the file it points to. */
    char *sym = path_join(dir, "sym.avro");
    assert_int_equal(symlink(src, sym), 0);
    assert_int_equal(put_link(st, "t/p/sym.avro", sym, 1), 0);
    char *symobj = path_join(root, "t/p/sym.avro");
    assert_int_equal(lstat(symobj, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_true(sb.st_ino != ino_of(src));
    assert_object(st, "t/p/sym.avro", data, n);

    /* The sha256 hint means nothing to file:// (even a wrong one). */
    uint8_t zero[32] = {0};
    const struct bfs_put_src hinted = {.path = src, .sha256 = zero, .may_link = 1};
    assert_int_equal(bfs_store_put_src(st, "t/p/hinted.avro", &hinted, NULL), 0);
    assert_object(st, "t/p/hinted.avro", data, n);

    /* Failures are the copy's: a missing source, a directory. */
    assert_int_equal(put_link(st, "k/missing", "/nonexistent/src", 1), -ENOENT);
    assert_int_equal(put_link(st, "k/dir", dir, 1), -EINVAL);
    assert_int_equal(count_temp_files(root), 0);
    assert_int_equal(stats->store_put_requests, 6);
    assert_int_equal(stats->store_put_bytes, 5 * n + n / 3);

    free(symobj);
    free(sym);
    free(flat);
    free(data2);
    free(obj);
    free(src);
    free(data);
    tmp_store_free(&t);
}

/* may_link with the store on another file system (a tmpfs mounted over the
 * store directory in a private mount namespace: root only): link(2) fails
 * with EXDEV and the put copies. In a child; exit code 0 = checked. */
static void test_file_put_link_other_fs(void **state)
{
    (void)state;
    struct tmp_store t;
    tmp_store_new(&t, 0); /* the store is opened in the child, on the tmpfs */
    const char *dir = t.dir, *root = t.root;
    const size_t n = 150000;
    uint8_t *data = pattern(n, 13);
    char *src = path_join(dir, "r-1.avro");
    write_file(src, data, n);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("bfs-test", root, "tmpfs", 0, "size=4m") < 0)
            _exit(250); /* not permitted here */
        struct bfs_store *st = open_file_store(root, &t.stats);
        if (put_link(st, "t/p/r-1.avro", src, 1) != 0)
            _exit(1);
        char *obj = path_join(root, "t/p/r-1.avro");
        struct stat so, ss;
        if (stat(obj, &so) < 0 || stat(src, &ss) < 0 || so.st_dev == ss.st_dev)
            _exit(2); /* not another file system after all */
        if ((so.st_mode & 07777) != 0600 || so.st_nlink != 1 || ss.st_nlink != 1)
            _exit(3);
        uint8_t *buf = malloc(n);
        if (!buf || bfs_store_get_range(st, "t/p/r-1.avro", 0, n, buf, NULL) != 0 ||
            memcmp(buf, data, n) != 0)
            _exit(4);
        if (t.stats.store_put_requests != 1 || t.stats.store_put_bytes != n)
            _exit(5);
        if (count_temp_files(root) != 0)
            _exit(6);
        /* too big for the tmpfs: the copy's ENOSPC, nothing left behind */
        char *big = path_join(dir, "big");
        int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || ftruncate(fd, 8 << 20) < 0 || close(fd) < 0)
            _exit(7);
        if (put_link(st, "t/p/big.avro", big, 1) != -ENOSPC || count_temp_files(root) != 0)
            _exit(8);
        free(big);
        free(buf);
        free(obj);
        bfs_store_close(st);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 250)
        print_message("skipped: no permission to mount a tmpfs here\n");
    else
        assert_int_equal(WEXITSTATUS(status), 0);
    assert_file(src, data, n); /* the source is intact */
    free(src);
    free(data);
    tmp_store_free(&t);
}

/* ---- failures: read-only, permission ---------------------------------- */

/* In a child: open the store at root and put; exit with -rc (0 = success). */
static int put_in_child(const char *root, const char *src, int drop_to_nobody, int ro_mount)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (ro_mount) {
            if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                mount(root, root, NULL, MS_BIND, NULL) < 0 ||
                mount(NULL, root, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
                _exit(250); /* not permitted here */
        }
        if (drop_to_nobody && (setgid(65534) < 0 || setuid(65534) < 0))
            _exit(251);
        char url[4200];
        snprintf(url, sizeof url, "file://%s", root);
        struct bfs_store *st = NULL;
        if (bfs_store_open(url, NULL, NULL, &st, NULL) < 0)
            _exit(252);
        int rc = bfs_store_put(st, "t/p/x.avro", src, NULL);
        int rc2 = bfs_store_put(st, "flat.avro", src, NULL);
        bfs_store_close(st);
        _exit(rc == rc2 ? -rc : 253);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_file_put_denied(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    assert_int_equal(chmod(dir, 0755), 0);
    char *root = path_join(dir, "store");
    assert_int_equal(mkdir(root, 0755), 0);
    char *src = path_join(dir, "src");
    write_file(src, "0123456789", 10);
    assert_int_equal(chmod(src, 0644), 0);

    /* Permission: the store directory is not writable for the caller. */
    int code;
    if (geteuid() == 0) {
        code = put_in_child(root, src, 1, 0);
    } else {
        assert_int_equal(chmod(root, 0500), 0);
        code = put_in_child(root, src, 0, 0);
        assert_int_equal(chmod(root, 0700), 0);
    }
    assert_int_equal(code, EACCES);
    assert_int_equal(count_temp_files(root), 0);

    /* Read-only file system (needs a mount namespace: root only). */
    code = put_in_child(root, src, 0, 1);
    if (code == 250) {
        print_message("skipped the read-only mount case: no permission to mount here\n");
    } else {
        assert_int_equal(code, EROFS);
    }
    assert_int_equal(count_temp_files(root), 0);
    DIR *d = opendir(root);
    struct dirent *de;
    while ((de = readdir(d)))
        assert_true(!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."));
    closedir(d);

    free(src);
    rm_rf(dir);
    free(dir);
    free(root);
}

/* ---- atomicity under concurrency ------------------------------------------ */

struct race {
    struct bfs_store *st;
    const char *root;
    const char *src_a, *src_b;
    size_t na, nb;
    atomic_int stop;
    atomic_int bad;
    atomic_int reads;
};

static void *racer_put(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 60; i++) {
        int rc = bfs_store_put(r->st, "race/obj", (i & 1) ? r->src_b : r->src_a, NULL);
        if (rc != 0)
            r->bad++;
    }
    r->stop = 1;
    return NULL;
}

static void *racer_read(void *arg)
{
    struct race *r = arg;
    uint8_t *buf = malloc(r->nb);
    char *path = path_join(r->root, "race/obj");
    while (!r->stop) {
        /* through the store: a prefix both versions have */
        int rc = bfs_store_get_range(r->st, "race/obj", 0, r->na, buf, NULL);
        if (rc == 0) {
            for (size_t i = 1; i < r->na; i++)
                if (buf[i] != buf[0]) {
                    r->bad++;
                    break;
                }
            if (buf[0] != 'a' && buf[0] != 'b')
                r->bad++;
        } else if (rc != -ENOENT) {
            r->bad++;
        }
        /* directly: the whole file is one version, complete */
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            ssize_t n = read(fd, buf, r->nb);
            close(fd);
            size_t want = n > 0 && buf[0] == 'a' ? r->na : r->nb;
            if (n != (ssize_t)want)
                r->bad++;
            for (ssize_t i = 1; i < n; i++)
                if (buf[i] != buf[0]) {
                    r->bad++;
                    break;
                }
        }
        r->reads++;
    }
    free(path);
    free(buf);
    return NULL;
}

static void test_file_put_atomic(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *root = path_join(dir, "store");
    assert_int_equal(mkdir(root, 0700), 0);
    struct bfs_store *st = open_file_store(root, NULL);
    struct race r = {.st = st, .root = root, .na = 1 << 20, .nb = 3 << 19};
    uint8_t *a = malloc(r.na), *b = malloc(r.nb);
    memset(a, 'a', r.na);
    memset(b, 'b', r.nb);
    char *sa = path_join(dir, "a"), *sb = path_join(dir, "b");
    write_file(sa, a, r.na);
    write_file(sb, b, r.nb);
    r.src_a = sa;
    r.src_b = sb;
    pthread_t tp, tr;
    assert_int_equal(pthread_create(&tr, NULL, racer_read, &r), 0);
    assert_int_equal(pthread_create(&tp, NULL, racer_put, &r), 0);
    pthread_join(tp, NULL);
    pthread_join(tr, NULL);
    assert_int_equal(r.bad, 0);
    assert_true(r.reads > 0);
    assert_int_equal(count_temp_files(root), 0);
    free(a);
    free(b);
    free(sa);
    free(sb);
    bfs_store_close(st);
    rm_rf(dir);
    free(dir);
    free(root);
}

/* Many threads putting into the same new directories (mkdir races). */
struct mput {
    struct bfs_store *st;
    const char *src;
    int id;
    int bad;
};

static void *mput_thread(void *arg)
{
    struct mput *m = arg;
    for (int i = 0; i < 20; i++) {
        char key[64];
        snprintf(key, sizeof key, "t%d/p/x/%d-%d.avro", i, m->id, i);
        if (bfs_store_put(m->st, key, m->src, NULL) != 0)
            m->bad++;
    }
    return NULL;
}

static int count_cb(void *ctx, const char *key, uint64_t size)
{
    (void)key;
    (void)size;
    (*(int *)ctx)++;
    return 0;
}

static void test_file_concurrent_puts(void **state)
{
    (void)state;
    struct bfs_stats stats;
    bfs_stats_init(&stats);
    char *dir = make_tmpdir();
    char *root = path_join(dir, "store");
    assert_int_equal(mkdir(root, 0700), 0);
    struct bfs_store *st = open_file_store(root, &stats);
    char *src = path_join(dir, "src");
    write_file(src, "hello", 5);
    struct mput m[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        m[i] = (struct mput){.st = st, .src = src, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, mput_thread, &m[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(m[i].bad, 0);
    }
    int n = 0;
    assert_int_equal(bfs_store_list(st, "", count_cb, &n, NULL), 0);
    assert_int_equal(n, 120);
    assert_int_equal(stats.store_put_requests, 120);
    assert_int_equal(stats.store_put_bytes, 600);
    assert_int_equal(count_temp_files(root), 0);
    free(src);
    bfs_store_close(st);
    rm_rf(dir);
    free(dir);
    free(root);
    bfs_stats_destroy(&stats);
}

/* The store directory deleted and made again under a running store: the next
 * operations reopen it (they used to fail until a remount). */
static void test_file_root_recreated(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *root = path_join(dir, "store");
    assert_int_equal(mkdir(root, 0755), 0);
    struct bfs_store *st = open_file_store(root, NULL);
    uint8_t *data = pattern(1000, 3);
    char *src = path_join(dir, "src");
    write_file(src, data, 1000);
    assert_int_equal(bfs_store_put(st, "t/p/a.avro", src, NULL), 0);
    rm_rf(root);
    assert_int_equal(mkdir(root, 0755), 0);
    uint8_t buf[1000];
    assert_int_equal(bfs_store_get_range(st, "t/p/a.avro", 0, 10, buf, NULL), -ENOENT);
    assert_int_equal(bfs_store_put(st, "t/p/b.avro", src, NULL), 0);
    char *p = path_join(root, "t/p/b.avro");
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0); /* in the new directory */
    assert_int_equal(bfs_store_get_range(st, "t/p/b.avro", 0, 1000, buf, NULL), 0);
    assert_memory_equal(buf, data, 1000);
    /* deleted and not made again: a clear ENOENT, every time */
    rm_rf(root);
    assert_int_equal(bfs_store_put(st, "t/p/c.avro", src, NULL), -ENOENT);
    bfs_store_close(st);
    free(p);
    free(src);
    free(data);
    free(root);
    rm_rf(dir);
    free(dir);
}

/* clean: temporaries a killed put left, older than the bound, are removed;
 * young ones (a put in progress) and objects are not. */
static void test_file_clean_temps(void **state)
{
    (void)state;
    char *dir = make_tmpdir();
    char *root = path_join(dir, "store");
    assert_int_equal(mkdir(root, 0755), 0);
    struct bfs_store *st = open_file_store(root, NULL);
    char *src = path_join(dir, "src");
    write_file(src, "abc", 3);
    assert_int_equal(bfs_store_put(st, "t/p/a.avro", src, NULL), 0);
    const char *olds[] = {".bfs-tmp-1-0-a.avro", "t/.bfs-tmp-2-5-x", "t/p/.bfs-tmp-9-1-b.avro"};
    struct timespec past[2] = {{.tv_sec = time(NULL) - 7200}, {.tv_sec = time(NULL) - 7200}};
    for (size_t i = 0; i < 3; i++) {
        char *p = path_join(root, olds[i]);
        write_file(p, "x", 1);
        assert_int_equal(utimensat(AT_FDCWD, p, past, 0), 0);
        free(p);
    }
    char *young = path_join(root, "t/p/.bfs-tmp-3-1-c.avro");
    write_file(young, "y", 1);
    /* dated after now (another host's clock, or the file system's tick):
     * young, not the oldest of all */
    char *ahead = path_join(root, "t/p/.bfs-tmp-4-1-d.avro");
    write_file(ahead, "z", 1);
    struct timespec future[2] = {{.tv_sec = time(NULL) + 7200}, {.tv_sec = time(NULL) + 7200}};
    assert_int_equal(utimensat(AT_FDCWD, ahead, future, 0), 0);
    assert_int_equal(bfs_store_clean(st, 3600, NULL), 3);
    struct stat sb;
    assert_int_equal(stat(young, &sb), 0);
    assert_int_equal(stat(ahead, &sb), 0);
    char *obj = path_join(root, "t/p/a.avro");
    assert_int_equal(stat(obj, &sb), 0);
    assert_int_equal(bfs_store_clean(st, 3600, NULL), 0);
    bfs_store_close(st);
    free(obj);
    free(young);
    free(ahead);
    free(src);
    free(root);
    rm_rf(dir);
    free(dir);
}

/* ---- file:// list_after ---------------------------------------------------- */

/* list_after and compare with want (NULL-terminated, in the order expected). */
static void expect_after(struct bfs_store *st, const char *prefix, const char *after,
                         unsigned max_keys, const char *const *want)
{
    struct listing l = {.n = 0};
    struct bfs_err err = {.code = 1};
    assert_int_equal(bfs_store_list_after(st, prefix, after, max_keys, collect, &l, &err), 0);
    assert_int_equal(err.code, 0);
    int nw = 0;
    while (want[nw])
        nw++;
    if (l.n != nw) {
        for (int i = 0; i < l.n; i++)
            print_message("  got %s\n", l.keys[i]);
        fail_msg("list_after \"%s\" after \"%s\" max %u: %d keys, expected %d", prefix,
                 after ? after : "(null)", max_keys, l.n, nw);
    }
    for (int i = 0; i < nw; i++)
        assert_string_equal(l.keys[i], want[i]);
}

/* Counts keys and checks that they ascend. */
struct ascending {
    char last[64];
    char first[64];
    int n;
};

static int check_ascending(void *ctx, const char *key, uint64_t size)
{
    (void)size;
    struct ascending *a = ctx;
    if (a->n == 0)
        snprintf(a->first, sizeof a->first, "%s", key);
    else
        assert_true(strcmp(a->last, key) < 0);
    snprintf(a->last, sizeof a->last, "%s", key);
    a->n++;
    return 0;
}

static void test_file_list_after(void **state)
{
    (void)state;
    struct tmp_store t;
    tmp_store_new(&t, 1);
    struct bfs_store *st = t.st;
    /* put out of order, in nested directories; '.' < '/' < '0' bytewise, so a
     * walk of the tree, directory by directory, is not the order of the keys */
    const char *keys[] = {"log/00000000000000000003.json",
                          "log/a0",
                          "log/00000000000000000001.json",
                          "log/a/x",
                          "log/00000000000000000010.json",
                          "log/a.x",
                          "log/a/b/c",
                          "log/00000000000000000002.json",
                          "logs/z",
                          "other/1",
                          "top"};
    char *src = path_join(t.dir, "src");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        write_file(src, "0123456789", i + 1);
        assert_int_equal(bfs_store_put(st, keys[i], src, NULL), 0);
    }
    /* what list_after skips, as list does */
    const char *junk[] = {"log/.bfs-tmp-1-2-00000000000000000004.json", "log/a/.bfs-tmp-9-1-y"};
    for (size_t i = 0; i < 2; i++) {
        char *p = path_join(t.root, junk[i]);
        write_file(p, "junk", 4);
        free(p);
    }
    char *p = path_join(t.root, "log/a/link");
    assert_int_equal(symlink("x", p), 0);
    free(p);

    const char *const all[] = {"log/00000000000000000001.json",
                               "log/00000000000000000002.json",
                               "log/00000000000000000003.json",
                               "log/00000000000000000010.json",
                               "log/a.x",
                               "log/a/b/c",
                               "log/a/x",
                               "log/a0",
                               NULL};
    expect_after(st, "log/", NULL, 0, all);
    expect_after(st, "log/", "", 0, all);
    expect_after(st, "log/", "log/", 0, all);
    expect_after(st, "log/", "a", 0, all);   /* before the prefix */
    expect_after(st, "log/", "log", 0, all); /* a prefix of the prefix */
    /* strictly after: a key itself is not listed again */
    expect_after(st, "log/", "log/00000000000000000002.json", 0, all + 2);
    expect_after(st, "log/", "log/00000000000000000010.json", 0, all + 4);
    expect_after(st, "log/", "log/a.x", 0, all + 5);
    expect_after(st, "log/", "log/a/b/c", 0, all + 6);
    expect_after(st, "log/", "log/a0", 0, all + 8);
    /* between keys, and a directory's name */
    expect_after(st, "log/", "log/00000000000000000002", 0, all + 1);
    expect_after(st, "log/", "log/00000000000000000005.json", 0, all + 3);
    expect_after(st, "log/", "log/a", 0, all + 4);
    expect_after(st, "log/", "log/a/", 0, all + 5);
    expect_after(st, "log/", "log/a/b/", 0, all + 5);
    expect_after(st, "log/", "log/a/c", 0, all + 6);
    /* beyond the last */
    expect_after(st, "log/", "log/b", 0, all + 8);
    expect_after(st, "log/", "zzz", 0, all + 8);
    /* max_keys */
    expect_after(st, "log/", NULL, 1, (const char *const[]){all[0], NULL});
    expect_after(st, "log/", NULL, 3, (const char *const[]){all[0], all[1], all[2], NULL});
    expect_after(st, "log/", "log/00000000000000000003.json", 2,
                 (const char *const[]){all[3], all[4], NULL});
    expect_after(st, "log/", "log/a/x", 5, all + 7);
    expect_after(st, "log/", NULL, 8, all);
    expect_after(st, "log/", NULL, 1000, all);
    /* prefixes */
    expect_after(st, "log/a", NULL, 0, all + 4);
    expect_after(st, "log/a/", NULL, 0, (const char *const[]){"log/a/b/c", "log/a/x", NULL});
    expect_after(st, "log/a/", "log/a/b", 0, (const char *const[]){"log/a/b/c", "log/a/x", NULL});
    expect_after(st, "log/a/", "log/a/b/c", 0, (const char *const[]){"log/a/x", NULL});
    expect_after(st, "log/a/", "log/a0", 0, (const char *const[]){NULL});
    expect_after(st, "log/0", "log/00000000000000000003.json", 0,
                 (const char *const[]){all[3], NULL});
    expect_after(st, "log", "log/a/x", 0, (const char *const[]){"log/a0", "logs/z", NULL});
    expect_after(st, "", "log/a0", 0, (const char *const[]){"logs/z", "other/1", "top", NULL});
    expect_after(st, "", "other/", 2, (const char *const[]){"other/1", "top", NULL});
    expect_after(st, "nothing/", NULL, 0, (const char *const[]){NULL});
    expect_after(st, "top/", NULL, 0, (const char *const[]){NULL}); /* a file, not a directory */
    /* sizes */
    struct listing l = {.n = 0};
    assert_int_equal(bfs_store_list_after(st, "log/a", "log/a/b/c", 1, collect, &l, NULL), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.keys[0], "log/a/x");
    assert_int_equal(l.sizes[0], 4); /* keys[3] */

    /* the callback stops the walk; its value is returned */
    struct listing s = {.n = 0, .stop_after = 2};
    assert_int_equal(bfs_store_list_after(st, "log/", "log/a.x", 0, collect, &s, NULL), 42);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.keys[1], "log/a/x");

    /* many keys, put in an order unlike theirs; max_keys keeps only the
     * smallest while walking */
    char *many = path_join(t.root, "many");
    assert_int_equal(mkdir(many, 0700), 0);
    for (unsigned i = 0; i < 300; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s/%03u", many, (i * 7u) % 300u);
        write_file(name, "m", 1);
    }
    free(many);
    struct ascending a = {.n = 0};
    assert_int_equal(bfs_store_list_after(st, "many/", NULL, 0, check_ascending, &a, NULL), 0);
    assert_int_equal(a.n, 300);
    assert_string_equal(a.first, "many/000");
    assert_string_equal(a.last, "many/299");
    for (unsigned max = 1; max <= 301; max += 50) {
        memset(&a, 0, sizeof a);
        assert_int_equal(
            bfs_store_list_after(st, "many/", "many/099", max, check_ascending, &a, NULL), 0);
        assert_int_equal(a.n, max < 200 ? (int)max : 200);
        assert_string_equal(a.first, "many/100");
        char want[16];
        snprintf(want, sizeof want, "many/%03u", max < 200 ? 99 + max : 299);
        assert_string_equal(a.last, want);
    }

    /* bad arguments */
    struct bfs_err err;
    assert_int_equal(bfs_store_list_after(st, "../", NULL, 0, collect, &l, &err), -EINVAL);
    assert_int_equal(err.code, -EINVAL);
    assert_int_equal(bfs_store_list_after(st, "/log", NULL, 0, collect, &l, &err), -EINVAL);
    assert_int_equal(bfs_store_list_after(st, "log//", NULL, 0, collect, &l, &err), -EINVAL);
    assert_int_equal(bfs_store_list_after(st, "log/", NULL, 0, NULL, NULL, &err), -EINVAL);
    const char *bad_after[] = {"log/a\nb", "log/\x7f", "/log/a",
                               "log//a",   "log/../a", "log/.bfs-tmp-1"};
    for (size_t i = 0; i < sizeof bad_after / sizeof bad_after[0]; i++) {
        assert_int_equal(bfs_store_list_after(st, "log/", bad_after[i], 0, collect, &l, &err),
                         -EINVAL);
        assert_int_equal(err.code, -EINVAL);
    }
    char longkey[BFS_STORE_KEY_MAX + 2];
    memset(longkey, 'z', sizeof longkey - 1);
    for (size_t i = 100; i < BFS_STORE_KEY_MAX; i += 100)
        longkey[i] = '/';
    longkey[sizeof longkey - 1] = '\0'; /* 1025 bytes */
    assert_int_equal(bfs_store_list_after(st, "", longkey, 0, collect, &l, &err), -EINVAL);
    longkey[BFS_STORE_KEY_MAX] = '\0'; /* 1024 bytes: fine, and after every key */
    expect_after(st, "", longkey, 0, (const char *const[]){NULL});

    /* a store without list_after */
    static const struct bfs_store_ops no_ops = {.list = NULL};
    struct bfs_store none = {.ops = &no_ops};
    assert_int_equal(bfs_store_list_after(&none, "", NULL, 0, collect, &l, &err), -ENOTSUP);
    assert_int_equal(err.code, -ENOTSUP);

    free(src);
    tmp_store_free(&t);
}

/* ---- conditional writes, head, get ---------------------------------------- */

static void md5_hex_of(const void *data, size_t n, char out[33])
{
    struct bfs_md5 c;
    uint8_t d[16];
    assert_int_equal(bfs_md5_init(&c), 0);
    bfs_md5_update(&c, data, n);
    assert_int_equal(bfs_md5_final(&c, d), 0);
    bfs_hex(d, 16, out);
}

static int put_cond(struct bfs_store *st, const char *key, const char *path, enum bfs_put_cond cond,
                    const char *if_match, char *etag_out, int may_link)
{
    const struct bfs_put_src src = {.path = path,
                                    .may_link = may_link,
                                    .cond = cond,
                                    .if_match = if_match,
                                    .etag_out = etag_out};
    return bfs_store_put_src(st, key, &src, NULL);
}

static void test_file_create_only(void **state)
{
    (void)state;
    struct tmp_store t;
    tmp_store_new(&t, 1);
    const size_t n = 70000;
    uint8_t *a = pattern(n, 21), *b = pattern(n, 22);
    char *pa = path_join(t.dir, "a"), *pb = path_join(t.dir, "b"), *pc = path_join(t.dir, "c");
    write_file(pa, a, n);
    write_file(pb, b, n);
    write_file(pc, a, n - 1); /* a prefix of a: same start, other size */
    char want[33], etag[BFS_STORE_ETAG_MAX];
    md5_hex_of(a, n, want);
    const char *key = "_battlefs/m/0001.json";

    /* A new key: created (its directories too); the ETag is the content's MD5. */
    assert_int_equal(put_cond(t.st, key, pa, BFS_PUT_CREATE, NULL, etag, 0), 0);
    assert_string_equal(etag, want);
    assert_object(t.st, key, a, n);
    assert_int_equal(t.stats.store_put_requests, 1);
    /* The same bytes again (a retry whose first attempt landed): success, unchanged. */
    char *obj = path_join(t.root, key);
    ino_t ino = ino_of(obj);
    assert_int_equal(put_cond(t.st, key, pa, BFS_PUT_CREATE, NULL, etag, 0), 0);
    assert_string_equal(etag, want);
    assert_true(ino_of(obj) == ino);
    /* ... also when the put would have linked the file. */
    assert_int_equal(put_cond(t.st, key, pa, BFS_PUT_CREATE, NULL, NULL, 1), 0);
    assert_true(ino_of(obj) == ino);
    /* Other bytes of the same size, or other sizes: -EEXIST, the object stays. */
    etag[0] = 'x';
    assert_int_equal(put_cond(t.st, key, pb, BFS_PUT_CREATE, NULL, etag, 0), -EEXIST);
    assert_int_equal(put_cond(t.st, key, pc, BFS_PUT_CREATE, NULL, NULL, 1), -EEXIST);
    assert_object(t.st, key, a, n);
    assert_true(ino_of(obj) == ino);
    assert_int_equal(t.stats.store_put_requests, 3);
    /* A key that is a directory here is not an object: not replaced either. */
    assert_int_equal(put_cond(t.st, "_battlefs/m", pa, BFS_PUT_CREATE, NULL, NULL, 0), -EEXIST);
    /* A linked create-only put of a new key: the object is the file itself. */
    assert_int_equal(put_cond(t.st, "_battlefs/m/0002.json", pb, BFS_PUT_CREATE, NULL, NULL, 1), 0);
    char *obj2 = path_join(t.root, "_battlefs/m/0002.json");
    assert_true(ino_of(obj2) == ino_of(pb));
    assert_int_equal(count_temp_files(t.root), 0);
    /* A plain put still replaces. */
    assert_int_equal(bfs_store_put(t.st, key, pb, NULL), 0);
    assert_object(t.st, key, b, n);
    assert_int_equal(count_temp_files(t.root), 0);
    free(obj);
    free(obj2);
    free(pa);
    free(pb);
    free(pc);
    free(a);
    free(b);
    tmp_store_free(&t);
}

static void test_file_head_get(void **state)
{
    (void)state;
    struct tmp_store t;
    tmp_store_new(&t, 1);
    const size_t n = 3000;
    uint8_t *a = pattern(n, 31);
    char *pa = path_join(t.dir, "a");
    write_file(pa, a, n);
    char want[33];
    md5_hex_of(a, n, want);
    struct bfs_store_head h;
    assert_int_equal(bfs_store_head(t.st, "l/lease", &h, NULL), -ENOENT);
    assert_int_equal(bfs_store_put(t.st, "l/lease", pa, NULL), 0);
    assert_int_equal(bfs_store_head(t.st, "l/lease", &h, NULL), 0);
    assert_int_equal(h.size, n);
    assert_string_equal(h.etag, want);
    assert_int_equal(bfs_store_head(t.st, "l", &h, NULL), -ENOENT); /* a directory */
    assert_int_equal(bfs_store_head(t.st, "l/lease/x", &h, NULL), -ENOENT);
    assert_int_equal(bfs_store_head(t.st, "../x", &h, NULL), -EINVAL);

    void *data = NULL;
    size_t len = 0;
    char etag[BFS_STORE_ETAG_MAX];
    uint64_t gets = t.stats.store_get_requests;
    assert_int_equal(bfs_store_get(t.st, "l/lease", n, &data, &len, etag, NULL), 0);
    assert_int_equal(len, n);
    assert_memory_equal(data, a, n);
    assert_string_equal(etag, want);
    free(data);
    assert_int_equal(t.stats.store_get_requests, gets + 1);
    assert_int_equal(bfs_store_get(t.st, "l/lease", n - 1, &data, &len, NULL, NULL), -EFBIG);
    assert_null(data);
    assert_int_equal(bfs_store_get(t.st, "l/none", n, &data, &len, etag, NULL), -ENOENT);
    assert_int_equal(
        bfs_store_get(t.st, "l/lease", BFS_STORE_GET_MAX + 1ul, &data, &len, etag, NULL), -EINVAL);
    /* An empty object. */
    char *pe = path_join(t.dir, "e");
    write_file(pe, "", 0);
    assert_int_equal(bfs_store_put(t.st, "l/empty", pe, NULL), 0);
    assert_int_equal(bfs_store_get(t.st, "l/empty", 10, &data, &len, etag, NULL), 0);
    assert_int_equal(len, 0);
    assert_string_equal(etag, "d41d8cd98f00b204e9800998ecf8427e");
    free(data);
    free(pe);
    free(pa);
    free(a);
    tmp_store_free(&t);
}

static void test_file_compare_and_swap(void **state)
{
    (void)state;
    struct tmp_store t;
    tmp_store_new(&t, 1);
    char *p1 = path_join(t.dir, "1"), *p2 = path_join(t.dir, "2"), *p3 = path_join(t.dir, "3");
    write_file(p1, "holder=a seq=1", 14);
    write_file(p2, "holder=a seq=2", 14);
    write_file(p3, "holder=b seq=2", 14);
    const char *key = "_battlefs/leases/battle";
    char e1[BFS_STORE_ETAG_MAX], e2[BFS_STORE_ETAG_MAX], e[BFS_STORE_ETAG_MAX];

    /* A missing key (and a missing directory): -ENOENT, nothing made. */
    assert_int_equal(put_cond(t.st, key, p1, BFS_PUT_MATCH, "0123", NULL, 0), -ENOENT);
    char *ldir = path_join(t.root, "_battlefs");
    struct stat sb;
    assert_int_equal(stat(ldir, &sb), -1);
    assert_int_equal(put_cond(t.st, key, p1, BFS_PUT_CREATE, NULL, e1, 0), 0);
    assert_int_equal(put_cond(t.st, "_battlefs/leases/other", p1, BFS_PUT_MATCH, e1, NULL, 0),
                     -ENOENT);
    /* The right ETag: replaced; the new ETag is the new content's. */
    assert_int_equal(put_cond(t.st, key, p2, BFS_PUT_MATCH, e1, e2, 0), 0);
    assert_string_not_equal(e1, e2);
    md5_hex_of("holder=a seq=2", 14, e);
    assert_string_equal(e2, e);
    assert_object(t.st, key, (const uint8_t *)"holder=a seq=2", 14);
    /* A stale ETag: -ESTALE, unchanged. */
    assert_int_equal(put_cond(t.st, key, p3, BFS_PUT_MATCH, e1, e, 0), -ESTALE);
    assert_object(t.st, key, (const uint8_t *)"holder=a seq=2", 14);
    /* A stale ETag but the object holds these very bytes (a retry that landed): success. */
    assert_int_equal(put_cond(t.st, key, p2, BFS_PUT_MATCH, e1, e, 0), 0);
    assert_string_equal(e, e2);
    /* Linked CAS. */
    assert_int_equal(put_cond(t.st, key, p3, BFS_PUT_MATCH, e2, NULL, 1), 0);
    assert_object(t.st, key, (const uint8_t *)"holder=b seq=2", 14);
    /* Bad ETags are refused before anything. */
    assert_int_equal(put_cond(t.st, key, p1, BFS_PUT_MATCH, NULL, NULL, 0), -EINVAL);
    assert_int_equal(put_cond(t.st, key, p1, BFS_PUT_MATCH, "", NULL, 0), -EINVAL);
    assert_int_equal(put_cond(t.st, key, p1, BFS_PUT_MATCH, "\"abc\"", NULL, 0), -EINVAL);
    assert_int_equal(put_cond(t.st, key, p1, BFS_PUT_MATCH, "a b", NULL, 0), -EINVAL);
    assert_int_equal(put_cond(t.st, key, p1, (enum bfs_put_cond)7, NULL, NULL, 0), -EINVAL);
    assert_int_equal(count_temp_files(t.root), 0);
    /* del then CAS: -ENOENT. */
    assert_int_equal(bfs_store_del(t.st, key, NULL), 0);
    assert_int_equal(put_cond(t.st, key, p1, BFS_PUT_MATCH, e2, NULL, 0), -ENOENT);
    assert_int_equal(count_temp_files(t.root), 0);
    free(ldir);
    free(p1);
    free(p2);
    free(p3);
    tmp_store_free(&t);
}

/* Concurrent creators of one key: exactly one wins, the others see -EEXIST;
 * writers of the same bytes all succeed. Two store handles, several threads. */
struct creator {
    struct bfs_store *st;
    const char *key;
    char path[4200];
    atomic_int *go;
    int rc;
};

static void *creator_thread(void *arg)
{
    struct creator *c = arg;
    while (!atomic_load(c->go))
        sched_yield();
    c->rc = put_cond(c->st, c->key, c->path, BFS_PUT_CREATE, NULL, NULL, 0);
    return NULL;
}

static void create_race(int no_noreplace)
{
    struct tmp_store t;
    if (no_noreplace)
        setenv("BATTLEFS_FAULT_STORE", "no-noreplace", 1);
    tmp_store_new(&t, 1);
    struct bfs_store *st2 = open_file_store(t.root, NULL);
    unsetenv("BATTLEFS_FAULT_STORE");
    enum { N = 8, ROUNDS = 20 };
    for (int round = 0; round < ROUNDS; round++) {
        int same = round % 4 == 3; /* every fourth round: all write the same bytes */
        char key[64];
        snprintf(key, sizeof key, "race/r%d/obj", round);
        struct creator c[N];
        pthread_t th[N];
        atomic_int go = 0;
        for (int i = 0; i < N; i++) {
            c[i] = (struct creator){.st = i & 1 ? st2 : t.st, .key = key, .go = &go};
            snprintf(c[i].path, sizeof c[i].path, "%s/src-%d-%d", t.dir, round, i);
            char body[64];
            int bl = snprintf(body, sizeof body, "writer %d of round %d", same ? 0 : i, round);
            write_file(c[i].path, body, (size_t)bl);
            assert_int_equal(pthread_create(&th[i], NULL, creator_thread, &c[i]), 0);
        }
        atomic_store(&go, 1);
        int won = 0, lost = 0;
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            if (c[i].rc == 0)
                won++;
            else if (c[i].rc == -EEXIST)
                lost++;
            else
                fail_msg("round %d writer %d: %d", round, i, c[i].rc);
        }
        if (same) {
            assert_int_equal(won, N);
        } else {
            assert_int_equal(won, 1);
            assert_int_equal(lost, N - 1);
            /* the object is the winner's */
            for (int i = 0; i < N; i++)
                if (c[i].rc == 0) {
                    char body[64];
                    int bl = snprintf(body, sizeof body, "writer %d of round %d", i, round);
                    assert_object(t.st, key, (const uint8_t *)body, (size_t)bl);
                }
        }
    }
    assert_int_equal(count_temp_files(t.root), 0);
    bfs_store_close(st2);
    tmp_store_free(&t);
}

static void test_file_create_race(void **state)
{
    (void)state;
    create_race(0);
}

/* The same where the file system has no RENAME_NOREPLACE: link(2) decides. */
static void test_file_create_race_linkat(void **state)
{
    (void)state;
#ifdef BFS_FAULT_INJECTION
    create_race(1);
#else
    skip();
#endif
}

/* Concurrent compare-and-swap increments of one counter: none is lost. Each
 * body names its writer (the rule of store.h: two writers never write the
 * same bytes). */
struct incr {
    struct bfs_store *st;
    const char *dir;
    int id, n, stale;
    int bad;
};

static void *incr_thread(void *arg)
{
    struct incr *w = arg;
    char path[4200];
    for (int done = 0, attempt = 0; done < w->n && !w->bad; attempt++) {
        /* a new file each time: a linked put takes the file itself (may_link) */
        snprintf(path, sizeof path, "%s/incr-%d-%d", w->dir, w->id, attempt);
        void *data = NULL;
        size_t len = 0;
        char etag[BFS_STORE_ETAG_MAX];
        if (bfs_store_get(w->st, "c/counter", 100, &data, &len, etag, NULL) != 0) {
            w->bad++;
            break;
        }
        char body[101];
        memcpy(body, data, len);
        body[len] = '\0';
        free(data);
        long v = strtol(body, NULL, 10);
        int bl = snprintf(body, sizeof body, "%ld by %d", v + 1, w->id);
        write_file(path, body, (size_t)bl);
        int rc = put_cond(w->st, "c/counter", path, BFS_PUT_MATCH, etag, NULL, attempt & 1);
        unlink(path);
        if (rc == 0)
            done++;
        else if (rc == -ESTALE)
            w->stale++;
        else
            w->bad++;
    }
    return NULL;
}

static void test_file_cas_race(void **state)
{
    (void)state;
    struct tmp_store t;
    tmp_store_new(&t, 1);
    struct bfs_store *st2 = open_file_store(t.root, NULL);
    char *p0 = path_join(t.dir, "zero");
    write_file(p0, "0 by none", 9);
    assert_int_equal(put_cond(t.st, "c/counter", p0, BFS_PUT_CREATE, NULL, NULL, 0), 0);
    enum { N = 4, EACH = 40 };
    struct incr w[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct incr){.st = i & 1 ? st2 : t.st, .dir = t.dir, .id = i, .n = EACH};
        assert_int_equal(pthread_create(&th[i], NULL, incr_thread, &w[i]), 0);
    }
    int stale = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].bad, 0);
        stale += w[i].stale;
    }
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(bfs_store_get(t.st, "c/counter", 100, &data, &len, NULL, NULL), 0);
    assert_int_equal(strtol(data, NULL, 10), N * EACH);
    free(data);
    print_message("cas race: %d stale attempts\n", stale);
    assert_int_equal(count_temp_files(t.root), 0);
    free(p0);
    bfs_store_close(st2);
    tmp_store_free(&t);
}

/* A store that does not say it honours conditions is never asked to. */
static void test_conditional_needs_support(void **state)
{
    (void)state;
    struct tmp_store t;
    tmp_store_new(&t, 1);
    char *p = path_join(t.dir, "p");
    write_file(p, "x", 1);
    t.st->conditional = 0;
    assert_int_equal(put_cond(t.st, "k", p, BFS_PUT_CREATE, NULL, NULL, 0), -ENOTSUP);
    assert_int_equal(put_cond(t.st, "k", p, BFS_PUT_MATCH, "e", NULL, 0), -ENOTSUP);
    assert_int_equal(put_cond(t.st, "k", p, BFS_PUT_ALWAYS, NULL, NULL, 0), 0);
    t.st->conditional = 1;
    free(p);
    tmp_store_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_file_urls),
        cmocka_unit_test(test_parse_s3_urls),
        cmocka_unit_test(test_bucket_rules),
        cmocka_unit_test(test_parse_other_urls),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_open_dispatch),
        cmocka_unit_test(test_key_rules),
        cmocka_unit_test(test_file_put_get),
        cmocka_unit_test(test_file_reput_idempotent),
        cmocka_unit_test(test_file_list_del),
        cmocka_unit_test(test_file_list_after),
        cmocka_unit_test(test_file_put_denied),
        cmocka_unit_test(test_file_put_atomic),
        cmocka_unit_test(test_file_concurrent_puts),
        cmocka_unit_test(test_file_put_link),
        cmocka_unit_test(test_file_put_link_other_fs),
        cmocka_unit_test(test_file_root_recreated),
        cmocka_unit_test(test_file_clean_temps),
        cmocka_unit_test(test_file_create_only),
        cmocka_unit_test(test_file_head_get),
        cmocka_unit_test(test_file_compare_and_swap),
        cmocka_unit_test(test_file_create_race),
        cmocka_unit_test(test_file_create_race_linkat),
        cmocka_unit_test(test_file_cas_race),
        cmocka_unit_test(test_conditional_needs_support),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
