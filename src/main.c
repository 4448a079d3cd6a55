/* main.c - command line, state directory, mount and the FUSE loop.
 *
 *   battlefs [STORE] MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d]
 *
 * Everything that takes locks or starts threads (SQLite, curl, the roller) is
 * opened after fuse_daemonize(): POSIX locks and threads do not survive fork.
 * Before that, the same modules are opened once and closed again so that a bad
 * option, state directory or store URL fails the command with a clear message
 * instead of a daemon that dies after the shell got exit status 0.
 */
#include <errno.h>
#include <signal.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/battlefs.h"
#include "battlefs/cache.h"
#include "battlefs/catalog.h"
#include "battlefs/fs.h"
#include "battlefs/fsutil.h"
#include "battlefs/log.h"
#include "battlefs/options.h"
#include "battlefs/roller.h"
#include "battlefs/store.h"

/* Raw option strings as fuse_opt_parse fills them. */
struct raw_opts {
    char *state;
    char *roll_interval;
    char *roll_bytes;
    char *codec;
    char *deflate_level;
    char *max_upload;
    char *cache_size;
    char *archive_max_bytes;
    char *read_chunk;
    char *store_timeout;
    char *held_timeout;
    char *uid;
    char *gid;
    char *umask;
    char *endpoint;
    char *region;
    char *fault;
    char *log_level;
    char *positional[3];
    int n_positional;
    int show_help;
    int show_version;
};

#define OPT(t, f)                                                                                  \
    {                                                                                              \
        t, offsetof(struct raw_opts, f), 0                                                         \
    }
static const struct fuse_opt bfs_opts[] = {
    OPT("state=%s", state),
    OPT("roll_interval=%s", roll_interval),
    OPT("roll_bytes=%s", roll_bytes),
    OPT("codec=%s", codec),
    OPT("deflate_level=%s", deflate_level),
    OPT("max_upload=%s", max_upload),
    OPT("cache_size=%s", cache_size),
    OPT("archive_max_bytes=%s", archive_max_bytes),
    OPT("read_chunk=%s", read_chunk),
    OPT("store_timeout=%s", store_timeout),
    OPT("held_timeout=%s", held_timeout),
    OPT("uid=%s", uid),
    OPT("gid=%s", gid),
    OPT("umask=%s", umask),
    OPT("endpoint=%s", endpoint),
    OPT("region=%s", region),
    OPT("fault=%s", fault),
    OPT("log_level=%s", log_level),
    FUSE_OPT_KEY("-h", 'h'),
    FUSE_OPT_KEY("--help", 'h'),
    FUSE_OPT_KEY("-V", 'V'),
    FUSE_OPT_KEY("--version", 'V'),
    FUSE_OPT_END,
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct raw_opts *r = data;
    (void)outargs;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (r->n_positional >= 3)
            return -1;
        r->positional[r->n_positional++] = strdup(arg);
        return 0; /* consumed: the mountpoint is added back later */
    case 'h':
        r->show_help = 1;
        return 0;
    case 'V':
        r->show_version = 1;
        return 0;
    default:
        return 1; /* keep: a FUSE option */
    }
}

static void usage(const char *prog)
{
    printf(
        "usage: %s [STORE] MOUNTPOINT [-o OPTION[,OPTION...]] [-f] [-d]\n"
        "\n"
        "STORE is file:///abs/dir or s3://bucket[/prefix]; default file://STATE/store.\n"
        "\n"
        "battlefs options:\n"
        "    -o state=DIR               catalog, spool and cache (default /var/lib/battlefs\n"
        "                               for root, else $XDG_STATE_HOME/battlefs)\n"
        "    -o roll_interval=SECONDS   roll at multiples of this since the epoch (3600)\n"
        "    -o roll_bytes=BYTES        also roll when the buffer holds this much (256M)\n"
        "    -o codec=null|deflate|snappy  codec of stored blocks (deflate)\n"
        "    -o deflate_level=1..9      zlib level of blocks compressed at ingest (6)\n"
        "    -o max_upload=BYTES        largest accepted upload (64M)\n"
        "    -o cache_size=BYTES        cold-read cache bound (1G)\n"
        "    -o archive_max_bytes=BYTES split larger roll groups (128M)\n"
        "    -o read_chunk=BYTES        largest single ranged GET (4M)\n"
        "    -o store_timeout=SECONDS   bound on one S3 request, retries included (30)\n"
        "    -o held_timeout=SECONDS    a closed dot-file in incoming/ not renamed by then is\n"
        "                               discarded (3600)\n"
        "    -o uid=N,gid=N             owner and group of the tree (the mount's user and group)\n"
        "    -o umask=M                 modes of the tree: data 0444/0555, incoming/ 01777,\n"
        "                               less this mask (022); uploads are 0600 of their writer\n"
        "    -o endpoint=URL            S3 endpoint (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)\n"
        "    -o region=NAME             S3 region (else AWS_REGION, else us-east-1)\n"
        "    -o log_level=LEVEL         error, warn, info (default) or debug\n"
        "Credentials come only from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and\n"
        "AWS_SESSION_TOKEN. Sizes accept K, M and G suffixes.\n"
        "\n"
        "FUSE options:\n",
        prog);
    fuse_cmdline_help();
    fuse_lib_help(&(struct fuse_args)FUSE_ARGS_INIT(0, NULL));
}

int bfs_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift)
        end++;
    if (*end != '\0')
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}

static int size_opt(const char *name, const char *val, uint64_t def, uint64_t min, uint64_t *out)
{
    if (!val) {
        *out = def;
        return 0;
    }
    if (bfs_parse_size(val, out) < 0 || *out < min) {
        fprintf(stderr,
                "battlefs: bad -o %s=%s (a byte size >= %" PRIu64
                ", with optional K, M or G suffix)\n",
                name, val, min);
        return -EINVAL;
    }
    return 0;
}

/* A uid, gid (decimal) or umask (octal) option: 0 or -EINVAL. */
static int id_opt(const char *name, const char *val, int base, unsigned long max, unsigned def,
                  unsigned *out)
{
    *out = def;
    if (!val)
        return 0;
    char *end;
    errno = 0;
    unsigned long v = strtoul(val, &end, base);
    if (errno || end == val || *end || v > max || val[0] == '-') {
        fprintf(stderr, "battlefs: bad -o %s=%s (%s)\n", name, val,
                base == 8 ? "an octal mode mask such as 027" : "a number");
        return -EINVAL;
    }
    *out = (unsigned)v;
    return 0;
}

static char *default_state_dir(void)
{
    if (getuid() == 0)
        return strdup("/var/lib/battlefs");
    const char *xdg = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    char buf[PATH_MAX];
    if (xdg && *xdg == '/')
        snprintf(buf, sizeof buf, "%s/battlefs", xdg);
    else if (home && *home)
        snprintf(buf, sizeof buf, "%s/.local/state/battlefs", home);
    else
        return NULL;
    return strdup(buf);
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

static int resolve_options(struct raw_opts *r, struct bfs_options *o)
{
    memset(o, 0, sizeof *o);
    if (r->n_positional == 1) {
        o->mountpoint = strdup(r->positional[0]);
    } else if (r->n_positional == 2) {
        o->store_url = strdup(r->positional[0]);
        o->mountpoint = strdup(r->positional[1]);
        if (!o->store_url)
            return -ENOMEM;
    } else {
        fprintf(stderr, "battlefs: expected [STORE] MOUNTPOINT (see --help)\n");
        return -EINVAL;
    }
    if (o->store_url && !strstr(o->store_url, "://")) {
        fprintf(stderr, "battlefs: STORE must be file:///abs/dir or s3://bucket[/prefix], not %s\n",
                o->store_url);
        return -EINVAL;
    }
    o->state_dir = r->state ? strdup(r->state) : default_state_dir();
    if (!o->state_dir) {
        fprintf(stderr, "battlefs: no state directory: set -o state=DIR\n");
        return -EINVAL;
    }
    if (o->state_dir[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd))
            return -errno;
        char *abs = path_join(cwd, o->state_dir);
        free(o->state_dir);
        o->state_dir = abs;
        if (!abs)
            return -ENOMEM;
    }
    int rc = 0;
    rc |= size_opt("roll_interval", r->roll_interval, 3600, 1, &o->roll_interval);
    rc |= size_opt("roll_bytes", r->roll_bytes, 256ull << 20, 1, &o->roll_bytes);
    rc |= size_opt("max_upload", r->max_upload, 64ull << 20, 1, &o->max_upload);
    rc |= size_opt("cache_size", r->cache_size, 1ull << 30, 0, &o->cache_size);
    rc |= size_opt("archive_max_bytes", r->archive_max_bytes, 128ull << 20, 4096,
                   &o->archive_max_bytes);
    rc |= size_opt("read_chunk", r->read_chunk, 4ull << 20, 4096, &o->read_chunk);
    rc |= size_opt("store_timeout", r->store_timeout, 30, 1, &o->store_timeout);
    rc |= size_opt("held_timeout", r->held_timeout, 3600, 1, &o->held_timeout);
    unsigned uid, gid, um;
    rc |= id_opt("uid", r->uid, 10, UINT32_MAX - 1, (unsigned)getuid(), &uid);
    rc |= id_opt("gid", r->gid, 10, UINT32_MAX - 1, (unsigned)getgid(), &gid);
    rc |= id_opt("umask", r->umask, 8, 0777, 022, &um);
    o->uid = (uid_t)uid;
    o->gid = (gid_t)gid;
    o->umask = (mode_t)um;
    o->held_bytes_max = o->max_upload > UINT64_MAX / 16 ? UINT64_MAX : 16 * o->max_upload;
    if (rc == 0 && o->store_timeout > 86400) {
        fprintf(stderr, "battlefs: -o store_timeout=%s: at most 86400 seconds\n", r->store_timeout);
        rc = 1;
    }
    o->deflate_level = 6;
    if (r->deflate_level) {
        const char *v = r->deflate_level;
        if (strlen(v) != 1 || v[0] < '1' || v[0] > '9') {
            fprintf(stderr, "battlefs: bad -o deflate_level=%s (1 to 9)\n", v);
            rc = 1;
        } else {
            o->deflate_level = v[0] - '0';
        }
    }
    if (rc)
        return -EINVAL;
    o->codec = BFS_CODEC_DEFLATE;
    if (r->codec && bfs_codec_parse(r->codec, strlen(r->codec), &o->codec) < 0) {
        fprintf(stderr, "battlefs: bad -o codec=%s (null, deflate or snappy)\n", r->codec);
        return -EINVAL;
    }
    if (r->log_level) {
        static const char *const lv[] = {"error", "warn", "info", "debug"};
        int found = 0;
        for (int i = 0; i < 4; i++)
            if (strcmp(r->log_level, lv[i]) == 0) {
                bfs_log_set_level((enum bfs_log_level)i);
                found = 1;
            }
        if (!found) {
            fprintf(stderr, "battlefs: bad -o log_level=%s (error, warn, info, debug)\n",
                    r->log_level);
            return -EINVAL;
        }
    }
    if (!o->mountpoint)
        return -ENOMEM;
    o->endpoint = r->endpoint ? strdup(r->endpoint) : NULL;
    o->region = r->region ? strdup(r->region) : NULL;
    if ((r->endpoint && !o->endpoint) || (r->region && !o->region))
        return -ENOMEM;
#ifdef BFS_FAULT_INJECTION
    o->fault = r->fault ? strdup(r->fault) : NULL;
#else
    if (r->fault) {
        fprintf(stderr, "battlefs: -o fault= needs a build with -Dfault_injection=true\n");
        return -EINVAL;
    }
#endif
    if (!o->store_url) {
        size_t n = strlen(o->state_dir) + 16;
        o->store_url = malloc(n);
        if (!o->store_url)
            return -ENOMEM;
        snprintf(o->store_url, n, "file://%s/store", o->state_dir);
        /* The embedded default store lives in the state directory. */
        char *dir = path_join(o->state_dir, "store");
        if (!dir)
            return -ENOMEM;
        int mrc = bfs_mkdirs(dir, 0700);
        free(dir);
        if (mrc < 0) {
            fprintf(stderr, "battlefs: cannot create %s/store: %s\n", o->state_dir, strerror(-mrc));
            return mrc;
        }
    }
    return 0;
}

static void free_raw(struct raw_opts *r)
{
    char **s[] = {&r->state,         &r->roll_interval, &r->roll_bytes,   &r->codec,
                  &r->deflate_level, &r->max_upload,    &r->cache_size,   &r->archive_max_bytes,
                  &r->read_chunk,    &r->store_timeout, &r->endpoint,     &r->region,
                  &r->fault,         &r->log_level,     &r->held_timeout, &r->uid,
                  &r->gid,           &r->umask};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        free(*s[i]);
        *s[i] = NULL;
    }
    for (int i = 0; i < r->n_positional; i++)
        free(r->positional[i]);
    r->n_positional = 0;
}

static void free_options(struct bfs_options *o)
{
    free(o->store_url);
    free(o->mountpoint);
    free(o->state_dir);
    free(o->endpoint);
    free(o->region);
    free(o->fault);
    memset(o, 0, sizeof *o);
}

/* Exit status from the FUSE loop's result: libfuse returns the number of the
 * signal that ended the loop (SIGTERM from systemd or kill, SIGINT, SIGHUP);
 * that is an orderly stop, as an unmount is. Anything else is a failure. */
static int loop_status(int rc)
{
    if (rc == 0 || rc == SIGTERM || rc == SIGINT || rc == SIGHUP)
        return 0;
    bfs_error("the FUSE loop failed: %s", rc < 0 ? strerror(-rc) : "unexpected result");
    return 1;
}

static void ctx_close_modules(struct bfs_ctx *ctx)
{
    if (ctx->roller) {
        bfs_roller_stop(ctx->roller);
        ctx->roller = NULL;
    }
    if (ctx->cache) {
        bfs_cache_close(ctx->cache);
        ctx->cache = NULL;
    }
    bfs_ocf_schema_cache_free(ctx->schemas);
    ctx->schemas = NULL;
    if (ctx->store) {
        bfs_store_close(ctx->store);
        ctx->store = NULL;
    }
    if (ctx->cat) {
        bfs_catalog_close(ctx->cat);
        ctx->cat = NULL;
    }
}

/* Open catalog, store and cache; with start, also recover and start the roller. */
static int ctx_open_modules(struct bfs_ctx *ctx, int start)
{
    char *db = path_join(ctx->opt.state_dir, "catalog.db");
    if (!db)
        return -ENOMEM;
    int rc = bfs_catalog_open(db, &ctx->cat);
    if (rc < 0) {
        bfs_error("cannot open catalog %s: %s", db, strerror(-rc));
        free(db);
        return rc;
    }
    free(db);
    struct bfs_store_opts so = {
        .endpoint = ctx->opt.endpoint,
        .region = ctx->opt.region,
        .timeout_s = (unsigned)ctx->opt.store_timeout,
    };
    char msg[256] = "";
    rc = bfs_store_open(ctx->opt.store_url, &so, &ctx->stats, &ctx->store, msg, sizeof msg);
    if (rc < 0) {
        bfs_error("cannot open store %s: %s", ctx->opt.store_url, msg[0] ? msg : strerror(-rc));
        goto fail;
    }
    rc = bfs_cache_open(ctx->cache_dir, ctx->opt.cache_size, &ctx->stats, &ctx->cache);
    if (rc < 0) {
        bfs_error("cannot open cache %s: %s", ctx->cache_dir, strerror(-rc));
        goto fail;
    }
    /* 64 slots: the FUSOU client has 35 tables, one schema each per version. */
    rc = bfs_ocf_schema_cache_new(64, &ctx->schemas);
    if (rc < 0) {
        bfs_error("cannot create the schema cache: %s", strerror(-rc));
        goto fail;
    }
    if (!start)
        return 0;
    rc = bfs_roller_recover(ctx);
    if (rc < 0) {
        /* Not fatal: the data stays claimed and hot-readable; the roller retries. */
        bfs_error("recovery of an unfinished roll failed: %s (will retry)", strerror(-rc));
    }
    rc = bfs_roller_start(ctx, &ctx->roller);
    if (rc < 0) {
        bfs_error("cannot start the roller: %s", strerror(-rc));
        goto fail;
    }
    return 0;
fail:
    ctx_close_modules(ctx);
    return rc;
}

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct raw_opts raw = {0};
    struct bfs_ctx ctx;
    int ret = 1;

    memset(&ctx, 0, sizeof ctx);
    bfs_stats_init(&ctx.stats);
    bfs_errors_init(&ctx.errors);
    umask(077);

    if (fuse_opt_parse(&args, &raw, bfs_opts, opt_proc) < 0)
        goto out_args;
    if (raw.show_help) {
        usage(argv[0]);
        ret = 0;
        goto out_args;
    }
    if (raw.show_version) {
        printf("battlefs version 0.1.0\n");
        printf("FUSE library version %s\n", fuse_pkgversion());
        ret = 0;
        goto out_args;
    }
    if (resolve_options(&raw, &ctx.opt) < 0)
        goto out_args;

    int rc = bfs_mkdirs(ctx.opt.state_dir, 0700);
    if (rc == 0)
        rc = chmod(ctx.opt.state_dir, 0700) < 0 ? -errno : 0;
    ctx.spool_dir = path_join(ctx.opt.state_dir, "spool");
    ctx.cache_dir = path_join(ctx.opt.state_dir, "cache");
    ctx.work_dir = path_join(ctx.opt.state_dir, "work");
    if (rc == 0 && (!ctx.spool_dir || !ctx.cache_dir || !ctx.work_dir))
        rc = -ENOMEM;
    if (rc == 0)
        rc = bfs_mkdirs(ctx.spool_dir, 0700);
    if (rc == 0)
        rc = bfs_mkdirs(ctx.work_dir, 0700);
    if (rc < 0) {
        fprintf(stderr, "battlefs: state directory %s: %s\n", ctx.opt.state_dir, strerror(-rc));
        goto out_args;
    }

    /* Check everything once before forking (see the top of this file). */
    if (ctx_open_modules(&ctx, 0) < 0)
        goto out_args;
    ctx_close_modules(&ctx);

    if (fuse_opt_add_arg(&args, ctx.opt.mountpoint) < 0)
        goto out_args;
    struct fuse_cmdline_opts copts;
    if (fuse_parse_cmdline(&args, &copts) != 0)
        goto out_args;
    ctx.opt.foreground = copts.foreground;
    ctx.opt.debug = copts.debug;
    if (copts.debug)
        bfs_log_set_level(BFS_LOG_DEBUG);

    struct fuse *fuse = fuse_new(&args, bfs_fs_operations(), sizeof(struct fuse_operations), &ctx);
    if (!fuse)
        goto out_cmd;
    if (fuse_mount(fuse, copts.mountpoint) != 0)
        goto out_fuse;
    if (fuse_daemonize(copts.foreground) != 0)
        goto out_unmount;
    if (!copts.foreground)
        bfs_log_to_syslog(1); /* fuse_daemonize pointed stderr at /dev/null */
    struct fuse_session *se = fuse_get_session(fuse);
    if (fuse_set_signal_handlers(se) != 0)
        goto out_unmount;
    if (bfs_fs_init(&ctx) < 0 || ctx_open_modules(&ctx, 1) < 0)
        goto out_signals;

    bfs_info("mounted %s on %s (state %s, codec %s)", ctx.opt.store_url, copts.mountpoint,
             ctx.opt.state_dir, bfs_codec_name(ctx.opt.codec));
    if (copts.singlethread) {
        ret = loop_status(fuse_loop(fuse));
    } else {
        struct fuse_loop_config *lc = fuse_loop_cfg_create();
        if (!lc)
            goto out_modules;
        fuse_loop_cfg_set_clone_fd(lc, (unsigned)copts.clone_fd);
        if (copts.max_idle_threads != UINT_MAX) /* UINT_MAX: not given; 3.14 would complain */
            fuse_loop_cfg_set_idle_threads(lc, copts.max_idle_threads);
        if (copts.max_threads > 0 && copts.max_threads <= 100000)
            fuse_loop_cfg_set_max_threads(lc, copts.max_threads);
        ret = loop_status(fuse_loop_mt(fuse, lc));
        fuse_loop_cfg_destroy(lc);
    }
    bfs_info("unmounting %s", copts.mountpoint);
out_modules:
    ctx_close_modules(&ctx);
out_signals:
    fuse_remove_signal_handlers(se);
out_unmount:
    fuse_unmount(fuse);
out_fuse:
    fuse_destroy(fuse);
out_cmd:
    free(copts.mountpoint);
out_args:
    fuse_opt_free_args(&args);
    free_raw(&raw);
    free_options(&ctx.opt);
    bfs_fs_destroy(&ctx);
    bfs_errors_destroy(&ctx.errors);
    bfs_stats_destroy(&ctx.stats);
    free(ctx.spool_dir);
    free(ctx.cache_dir);
    free(ctx.work_dir);
    return ret;
}
