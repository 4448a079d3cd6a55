/* test_options.c - the command line (options.c): defaults, sizes, refused
 * values and their messages, ownership and modes, the store URL default. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/options.h"
#include "battlefs/roller.h"

#define MAX_ARGS 16

/* Parse "battlefs" followed by the NULL-terminated arguments; the FUSE
 * arguments left are returned in *rest (if not NULL; free with
 * fuse_opt_free_args). */
static int parse_rest(struct bfs_options *o, struct bfs_err *err, struct fuse_args *rest, ...)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = "battlefs";
    va_list ap;
    va_start(ap, rest);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(argc < MAX_ARGS);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    int rc = bfs_options_parse(&args, o, err);
    if (rest)
        *rest = args;
    else
        fuse_opt_free_args(&args);
    return rc;
}

#define parse(o, err, ...) parse_rest(o, &(err), NULL, __VA_ARGS__, (const char *)NULL)

/* Expect -EINVAL and a message containing want. */
static void refused(const char *opt, const char *want)
{
    struct bfs_options o;
    struct bfs_err err;
    int rc = parse(&o, err, "/mnt/x", "-o", "state=/tmp/st", "-o", opt);
    if (rc != -EINVAL)
        fail_msg("-o %s: %d, want -EINVAL", opt, rc);
    if (!strstr(err.msg, want))
        fail_msg("-o %s: message \"%s\", want \"%s\"", opt, err.msg, want);
    bfs_options_free(&o);
}

static void test_defaults(void **state)
{
    (void)state;
    struct bfs_options o;
    struct bfs_err err;
    struct fuse_args rest;
    assert_int_equal(parse_rest(&o, &err, &rest, "/mnt/x", "-o", "state=/tmp/st", "-f", "-o",
                                "allow_other", (const char *)NULL),
                     BFS_OPTIONS_RUN);
    assert_string_equal(err.msg, "");
    assert_string_equal(o.mountpoint, "/mnt/x");
    assert_string_equal(o.state_dir, "/tmp/st");
    assert_string_equal(o.store_url, "file:///tmp/st/store");
    assert_int_equal(o.store_default, 1);
    assert_int_equal(o.roll_interval, 3600);
    assert_int_equal(o.roll_bytes, 256ull << 20);
    assert_int_equal(o.max_upload, 64ull << 20);
    assert_int_equal(o.cache_size, 1ull << 30);
    assert_int_equal(o.archive_max_bytes, 128ull << 20);
    assert_int_equal(o.read_chunk, 4ull << 20);
    assert_int_equal(o.store_timeout, 30);
    assert_int_equal(o.held_timeout, 3600);
    assert_int_equal(o.held_bytes_max, 16 * (64ull << 20));
    assert_int_equal(o.codec, BFS_CODEC_DEFLATE);
    assert_int_equal(o.deflate_level, 1);
    assert_int_equal(o.uid, getuid());
    assert_int_equal(o.gid, getgid());
    assert_int_equal(o.umask, 022);
    assert_null(o.endpoint);
    assert_null(o.region);
    assert_null(o.fault);
    assert_int_equal(o.log_level, -1);
    enum bfs_roll_step step;
    assert_int_equal(bfs_options_roll_fault(&o, &step), -ENOENT);
    /* FUSE's options stay for fuse_parse_cmdline; ours and the positionals go */
    int f = 0, allow = 0;
    for (int i = 1; i < rest.argc; i++) {
        f += strcmp(rest.argv[i], "-f") == 0;
        allow += strstr(rest.argv[i], "allow_other") != NULL;
        assert_null(strstr(rest.argv[i], "state="));
        assert_null(strstr(rest.argv[i], "/mnt/x"));
    }
    assert_int_equal(f, 1);
    assert_int_equal(allow, 1);
    fuse_opt_free_args(&rest);
    bfs_options_free(&o);

    /* -h and -V */
    assert_int_equal(parse(&o, err, "-h"), BFS_OPTIONS_HELP);
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "/mnt/x", "--version"), BFS_OPTIONS_VERSION);
    bfs_options_free(&o);
}

static void test_sizes(void **state)
{
    (void)state;
    struct bfs_options o;
    struct bfs_err err;
    assert_int_equal(parse(&o, err, "/mnt/x", "-o",
                           "state=/tmp/st,roll_bytes=10K,max_upload=3M,cache_size=2G,"
                           "archive_max_bytes=4096,read_chunk=8k,roll_interval=60,cache_size=0"),
                     0);
    assert_int_equal(o.roll_bytes, 10240);
    assert_int_equal(o.max_upload, 3ull << 20);
    assert_int_equal(o.held_bytes_max, 48ull << 20);
    assert_int_equal(o.cache_size, 0); /* the last one given */
    assert_int_equal(o.archive_max_bytes, 4096);
    assert_int_equal(o.read_chunk, 8192);
    assert_int_equal(o.roll_interval, 60);
    bfs_options_free(&o);

    static const struct {
        const char *s;
        int rc;
        uint64_t v;
    } cases[] = {
        {"0", 0, 0},
        {"1", 0, 1},
        {"1k", 0, 1024},
        {"1K", 0, 1024},
        {"7m", 0, 7ull << 20},
        {"5G", 0, 5ull << 30},
        {"17179869183G", 0, 17179869183ull << 30},
        {"17179869184G", -EINVAL, 0}, /* 2^64: overflow */
        {"18446744073709551615", 0, UINT64_MAX},
        {"18446744073709551616", -EINVAL, 0},
        {"", -EINVAL, 0},
        {"-1", -EINVAL, 0},
        {"+1", -EINVAL, 0},
        {"12X", -EINVAL, 0},
        {"1.5M", -EINVAL, 0},
        {"1MB", -EINVAL, 0},
        {"K", -EINVAL, 0},
        {" 1", -EINVAL, 0},
        {" -1", -EINVAL, 0},
        {"0x10", -EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 12345;
        int rc = bfs_parse_size(cases[i].s, &v);
        if (rc != cases[i].rc)
            fail_msg("bfs_parse_size(\"%s\"): %d, want %d", cases[i].s, rc, cases[i].rc);
        if (rc == 0)
            assert_true(v == cases[i].v);
    }
    assert_int_equal(bfs_parse_size(NULL, &(uint64_t){0}), -EINVAL);
}

static void test_bad_values(void **state)
{
    (void)state;
    const char *size_msg = " (a byte size >= 1, with optional K, M or G suffix)";
    char want[256];
    static const char *const ones[] = {"roll_interval", "roll_bytes", "max_upload", "store_timeout",
                                       "held_timeout"};
    for (size_t i = 0; i < sizeof ones / sizeof ones[0]; i++) {
        char opt[64];
        snprintf(opt, sizeof opt, "%s=0", ones[i]);
        snprintf(want, sizeof want, "bad -o %s%s", opt, size_msg);
        refused(opt, want);
        snprintf(opt, sizeof opt, "%s=ten", ones[i]);
        snprintf(want, sizeof want, "bad -o %s%s", opt, size_msg);
        refused(opt, want);
    }
    refused("archive_max_bytes=4095",
            "bad -o archive_max_bytes=4095 (a byte size >= 4096, with optional K, M or G suffix)");
    refused("read_chunk=1K",
            "bad -o read_chunk=1K (a byte size >= 4096, with optional K, M or G suffix)");
    refused("cache_size=-1", "bad -o cache_size=-1 (a byte size >= 0,");
    refused("store_timeout=86401", "-o store_timeout=86401: at most 86400 seconds");
    refused("deflate_level=0", "bad -o deflate_level=0 (1 to 9)");
    refused("deflate_level=10", "bad -o deflate_level=10 (1 to 9)");
    refused("codec=zstd", "bad -o codec=zstd (null, deflate or snappy)");
    refused("log_level=verbose", "bad -o log_level=verbose (error, warn, info, debug)");
#ifdef BFS_FAULT_INJECTION
    refused("fault=mid-roll",
            "unknown -o fault=mid-roll (after-claim, mid-build, after-build, mid-upload, "
            "after-upload, before-commit, after-commit, put-fail, after-manifest, after-log, "
            "compact:after-lease, compact:mid-build, compact:after-build, "
            "compact:after-manifest, compact:after-log, compact:after-commit, "
            "adopt:after-schemas, adopt:after-manifest, adopt:after-log, adopt:after-commit, "
            "spool:named, ingest:pause, pack:mid, pack:after-commit, pack:hold)");
    refused("fault=compact:bogus", "unknown -o fault=compact:bogus (");
    refused("fault=adopt:bogus", "unknown -o fault=adopt:bogus (");
    refused("fault=spool:bogus", "unknown -o fault=spool:bogus (");
    refused("fault=roll:put", "unknown -o fault=roll:put (");
#else
    refused("fault=after-claim", "needs a build with -Dfault_injection=true");
#endif
    /* the first problem is the one reported */
    struct bfs_options o;
    struct bfs_err err;
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=/s,roll_bytes=x,codec=y"), -EINVAL);
    assert_non_null(strstr(err.msg, "roll_bytes=x"));
    assert_null(strstr(err.msg, "codec"));
    bfs_options_free(&o);

    /* positional arguments */
    assert_int_equal(parse(&o, err, "-o", "state=/s"), -EINVAL);
    assert_string_equal(err.msg, "expected [STORE] MOUNTPOINT (see --help)");
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "bucket", "/mnt/x", "-o", "state=/s"), -EINVAL);
    assert_string_equal(err.msg,
                        "STORE must be file:///abs/dir or s3://bucket[/prefix], not bucket");
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "s3://b", "/mnt/x", "/mnt/y", "-o", "state=/s"), -EINVAL);
    assert_string_equal(err.msg, "expected [STORE] MOUNTPOINT (see --help)");
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "a://", "b", "c", "d", "-o", "state=/s"), -EINVAL);
    assert_string_equal(err.msg, "too many arguments: expected [STORE] MOUNTPOINT");
    bfs_options_free(&o);
}

static void test_owner_and_modes(void **state)
{
    (void)state;
    struct bfs_options o;
    struct bfs_err err;
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=/s,uid=1234,gid=5678,umask=027"), 0);
    assert_int_equal(o.uid, 1234);
    assert_int_equal(o.gid, 5678);
    assert_int_equal(o.umask, 027);
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=/s,uid=0,gid=0,umask=0"), 0);
    assert_int_equal(o.uid, 0);
    assert_int_equal(o.gid, 0);
    assert_int_equal(o.umask, 0);
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=/s,uid=4294967294,umask=777"), 0);
    assert_int_equal(o.uid, 4294967294u);
    assert_int_equal(o.umask, 0777);
    bfs_options_free(&o);
    refused("uid=-1", "bad -o uid=-1 (a number)");
    refused("uid=4294967295", "bad -o uid=4294967295 (a number)"); /* (uid_t)-1 */
    refused("gid=staff", "bad -o gid=staff (a number)");
    refused("gid=", "bad -o gid= (a number)");
    refused("umask=0778", "bad -o umask=0778 (an octal mode mask such as 027)");
    refused("umask=1000", "bad -o umask=1000 (an octal mode mask such as 027)");
}

static void test_held_timeout_and_others(void **state)
{
    (void)state;
    struct bfs_options o;
    struct bfs_err err;
    assert_int_equal(parse(&o, err, "/mnt/x", "-o",
                           "state=/s,held_timeout=10,codec=snappy,deflate_level=9,"
                           "log_level=debug,endpoint=http://127.0.0.1:9000,region=eu-west-1"),
                     0);
    assert_int_equal(o.held_timeout, 10);
    assert_int_equal(o.codec, BFS_CODEC_SNAPPY);
    assert_int_equal(o.deflate_level, 9);
    assert_int_equal(o.log_level, 3); /* BFS_LOG_DEBUG, applied by main.c */
    assert_string_equal(o.endpoint, "http://127.0.0.1:9000");
    assert_string_equal(o.region, "eu-west-1");
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=/s,held_timeout=2K"), 0);
    assert_int_equal(o.held_timeout, 2048);
    bfs_options_free(&o);
    refused("held_timeout=-5", "bad -o held_timeout=-5 (a byte size >= 1");
#ifdef BFS_FAULT_INJECTION
    static const struct {
        const char *fault;
        int rc;
        enum bfs_roll_step step;
    } faults[] = {
        {"after-claim", 0, BFS_ROLL_AFTER_CLAIM},
        {"roll:after-claim", 0, BFS_ROLL_AFTER_CLAIM},
        {"roll:mid-upload", 0, BFS_ROLL_MID_UPLOAD},
        {"before-commit", 0, BFS_ROLL_BEFORE_COMMIT},
        {"after-commit", 0, BFS_ROLL_AFTER_COMMIT},
        {"put-fail", 0, BFS_ROLL_PUT},
        {"after-manifest", 0, BFS_ROLL_AFTER_MANIFEST},
        {"roll:after-log", 0, BFS_ROLL_AFTER_LOG},
        {"spool:named", -ENOENT, 0},
        {"ingest:pause", -ENOENT, 0},
    };
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) {
        char opt[64];
        snprintf(opt, sizeof opt, "state=/s,fault=%s", faults[i].fault);
        assert_int_equal(parse(&o, err, "/mnt/x", "-o", opt), 0);
        assert_string_equal(o.fault, faults[i].fault);
        enum bfs_roll_step step;
        assert_int_equal(bfs_options_roll_fault(&o, &step), faults[i].rc);
        if (faults[i].rc == 0)
            assert_int_equal(step, faults[i].step);
        bfs_options_free(&o);
    }
#endif
}

/* The node name (default: the host name, made a valid one), the read-only
 * replica, the refresh period and (test builds) the lease time. */
static void test_node_and_replica(void **state)
{
    (void)state;
    struct bfs_options o;
    struct bfs_err err;
    struct fuse_args rest;
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=/s"), 0);
    char host[256] = "";
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    host[64] = '\0';
    for (char *p = host; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", *p))
            *p = '-';
    assert_string_equal(o.node, host[0] ? host : "node");
    assert_int_equal(o.read_only, 0);
    assert_int_equal(o.refresh, 30);
    assert_int_equal(o.compact_after, 7200);
    assert_int_equal(o.gc_grace, 3600);
    assert_int_equal(o.erase_within, 86400);
    assert_int_equal(o.lease_ttl, 0);
    bfs_options_free(&o);

    assert_int_equal(parse_rest(&o, &err, &rest, "/mnt/x", "-o", "state=/s,node=web_1-A,refresh=5",
                                "-o", "ro", (const char *)NULL),
                     0);
    assert_string_equal(o.node, "web_1-A");
    assert_int_equal(o.read_only, 1);
    assert_int_equal(o.refresh, 5);
    /* -o ro is ours: the kernel mount stays writable (.battlefs/refresh) */
    for (int i = 1; i < rest.argc; i++) {
        assert_null(strstr(rest.argv[i], "node="));
        assert_string_not_equal(rest.argv[i], "ro");
        assert_null(strstr(rest.argv[i], ",ro"));
    }
    fuse_opt_free_args(&rest);
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=/s,refresh=0"), 0);
    assert_int_equal(o.refresh, 0);
    bfs_options_free(&o);
    char longest[80];
    memset(longest, 'n', 64);
    longest[64] = '\0';
    char opt[96];
    snprintf(opt, sizeof opt, "state=/s,node=%s", longest);
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", opt), 0);
    assert_string_equal(o.node, longest);
    bfs_options_free(&o);

    const char *node_msg = " (1 to 64 of A-Z, a-z, 0-9, '_' and '-')";
    static const char *const bad_nodes[] = {"a.b", "a b", "a/b", "", "\xc3\xa9"};
    char want[160];
    for (size_t i = 0; i < sizeof bad_nodes / sizeof bad_nodes[0]; i++) {
        snprintf(opt, sizeof opt, "node=%s", bad_nodes[i]);
        snprintf(want, sizeof want, "bad -o %s%s", opt, node_msg);
        refused(opt, want);
    }
    strcat(longest, "n"); /* 65 */
    snprintf(opt, sizeof opt, "node=%s", longest);
    snprintf(want, sizeof want, "bad -o %s%s", opt, node_msg);
    refused(opt, want);
    refused("refresh=soon", "bad -o refresh=soon (");
#ifdef BFS_FAULT_INJECTION
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=/s,lease_ttl=3"), 0);
    assert_int_equal(o.lease_ttl, 3);
    bfs_options_free(&o);
    refused("lease_ttl=0", "bad -o lease_ttl=0 (");
#else
    refused("lease_ttl=3", "-o lease_ttl=3 needs a build with -Dfault_injection=true");
#endif
}

static void test_store_and_state(void **state)
{
    (void)state;
    struct bfs_options o;
    struct bfs_err err;
    /* a store given: as is */
    assert_int_equal(parse(&o, err, "s3://bucket/prefix", "/mnt/x", "-o", "state=/s"), 0);
    assert_string_equal(o.store_url, "s3://bucket/prefix");
    assert_int_equal(o.store_default, 0);
    assert_string_equal(o.mountpoint, "/mnt/x");
    bfs_options_free(&o);
    assert_int_equal(parse(&o, err, "file:///data/store", "/mnt/x", "-o", "state=/s"), 0);
    assert_string_equal(o.store_url, "file:///data/store");
    bfs_options_free(&o);

    /* a relative state directory is made absolute; the default store is in it */
    char cwd[PATH_MAX], want[PATH_MAX + 64];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(parse(&o, err, "/mnt/x", "-o", "state=rel/st"), 0);
    snprintf(want, sizeof want, "%s/rel/st", cwd);
    assert_string_equal(o.state_dir, want);
    snprintf(want, sizeof want, "file://%s/rel/st/store", cwd);
    assert_string_equal(o.store_url, want);
    assert_int_equal(o.store_default, 1);
    bfs_options_free(&o);

    /* no -o state: /var/lib/battlefs for root, else $XDG_STATE_HOME/battlefs,
     * else $HOME/.local/state/battlefs */
    char *xdg = getenv("XDG_STATE_HOME") ? strdup(getenv("XDG_STATE_HOME")) : NULL;
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("XDG_STATE_HOME", "/xdg/state", 1);
    setenv("HOME", "/home/someone", 1);
    assert_int_equal(parse(&o, err, "/mnt/x"), 0);
    assert_string_equal(o.state_dir, getuid() == 0 ? "/var/lib/battlefs" : "/xdg/state/battlefs");
    bfs_options_free(&o);
    if (getuid() != 0) {
        unsetenv("XDG_STATE_HOME");
        assert_int_equal(parse(&o, err, "/mnt/x"), 0);
        assert_string_equal(o.state_dir, "/home/someone/.local/state/battlefs");
        bfs_options_free(&o);
        unsetenv("HOME");
        assert_int_equal(parse(&o, err, "/mnt/x"), -EINVAL);
        assert_string_equal(err.msg, "no state directory: set -o state=DIR");
        bfs_options_free(&o);
    } else {
        assert_int_equal(parse(&o, err, "/mnt/x"), 0);
        assert_string_equal(o.store_url, "file:///var/lib/battlefs/store");
        bfs_options_free(&o);
    }
    if (xdg)
        setenv("XDG_STATE_HOME", xdg, 1);
    else
        unsetenv("XDG_STATE_HOME");
    if (home)
        setenv("HOME", home, 1);
    else
        unsetenv("HOME");
    free(xdg);
    free(home);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_owner_and_modes),
        cmocka_unit_test(test_held_timeout_and_others),
        cmocka_unit_test(test_node_and_replica),
        cmocka_unit_test(test_store_and_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
