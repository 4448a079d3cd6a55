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
#include <malloc.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/adopt.h"
#include "battlefs/battlefs.h"
#include "battlefs/cache.h"
#include "battlefs/catalog.h"
#include "battlefs/compact.h"
#include "battlefs/err.h"
#include "battlefs/fs.h"
#include "battlefs/fsutil.h"
#include "battlefs/evolve.h"
#include "battlefs/ledger.h"
#include "battlefs/log.h"
#include "battlefs/metrics.h"
#include "battlefs/options.h"
#include "battlefs/packer.h"
#include "battlefs/roller.h"
#include "battlefs/store.h"

/* The roll's fault hook in test builds (-o fault=STEP): _exit(99) at the
 * step, or EIO from every put for put-fail. */
struct roll_fault {
    enum bfs_roll_step step;
};

/* The compaction's (-o fault=compact:STEP): _exit(99) at the step. */
static int compact_fault_hook(void *arg, enum bfs_compact_step step, const char *id)
{
    const enum bfs_compact_step *want = arg;
    if (step != *want)
        return 0;
    bfs_info("fault injection: compaction %s: _exit(99) at %s", id, bfs_compact_step_name(step));
    fflush(stderr);
    _exit(99);
}

/* The adoption's (-o fault=adopt:STEP): _exit(99) at the step. */
static int adopt_fault_hook(void *arg, enum bfs_adopt_step step, const char *roll_id)
{
    const enum bfs_adopt_step *want = arg;
    if (step != *want)
        return 0;
    bfs_info("fault injection: adoption of roll %s: _exit(99) at %s", roll_id,
             bfs_adopt_step_name(step));
    fflush(stderr);
    _exit(99);
}

/* The rolls this catalog committed before the store's log go into it (a
 * writer, after ledger_mount took the lease and read the log, before the
 * roller and the compactor start and before the mount serves: adopting a
 * roll moves its archives from before the log's to its log position in
 * dataset files, which no open file may see; design.md, "Rolls from before
 * the log"). A failure (the store, the lease) leaves the rest for the next
 * mount; it does not stop this one. */
static void adopt_at_mount(struct bfs_ctx *ctx)
{
    struct bfs_adopt_deps ad = {
        .cat = ctx->cat,
        .store = ctx->store,
        .ledger = ctx->ledger,
        .stats = &ctx->stats,
        .errors = &ctx->errors,
        .node = ctx->opt.node,
        .work_dir = ctx->work_dir,
    };
    if (bfs_options_adopt_fault(&ctx->opt, &ctx->adopt_fault) == 0) {
        ad.fault = adopt_fault_hook;
        ad.fault_arg = &ctx->adopt_fault;
    }
    struct bfs_err err;
    int rc = bfs_adopt_run(&ad, &err);
    if (rc < 0)
        bfs_warn("rolls from before the store's log: %s (the rest is adopted at the next mount)",
                 err.msg[0] ? err.msg : strerror(-rc));
}

/* The packer's (-o fault=pack:mid|after-commit): _exit(99) at that step of
 * its first batch. */
static int pack_fault_hook(void *arg, enum bfs_pack_step step)
{
    const int *want = arg;
    if ((int)step != *want)
        return 0;
    bfs_info("fault injection: packer: _exit(99) at %s",
             step == BFS_PACK_MID ? "mid" : "after-commit");
    fflush(stderr);
    _exit(99);
}

static int reader_pack(void *arg, const int64_t *ids, size_t n)
{
    return bfs_packer_pack_ids(arg, ids, n);
}

/* The roll's packing: both cores (the machine's). */
static int roll_pack(void *arg, int64_t first, int64_t last)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return bfs_packer_pack_range(arg, first, last, cpus > 1 ? (int)cpus : 1);
}

static int roll_fault_hook(void *arg, enum bfs_roll_step step, const char *roll_id)
{
    const struct roll_fault *f = arg;
    if (step != f->step)
        return 0;
    if (step == BFS_ROLL_PUT)
        return -EIO;
    bfs_info("fault injection: roll %s: _exit(99) at %s", roll_id, bfs_roll_step_name(step));
    fflush(stderr);
    _exit(99);
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

/* The reader's refresh: read the store's log (a compaction this mount has
 * not read deleted an archive its view names). */
static int reader_refresh(void *arg)
{
    struct bfs_ctx *ctx = arg;
    struct bfs_err err;
    int rc = ctx->ledger ? bfs_ledger_refresh(ctx->ledger, &err) : -ENOENT;
    if (rc < 0 && ctx->ledger)
        bfs_warn("%s", err.msg);
    return rc;
}

static void ctx_close_modules(struct bfs_ctx *ctx)
{
    bfs_metrics_stop(ctx->metrics); /* first: it reads the catalog and the stats */
    ctx->metrics = NULL;
    memset(&ctx->ingest, 0, sizeof ctx->ingest);
    memset(&ctx->reader, 0, sizeof ctx->reader);
    memset(&ctx->roll, 0, sizeof ctx->roll);
    if (ctx->compactor) {
        bfs_compactor_stop(ctx->compactor);
        ctx->compactor = NULL;
    }
    memset(&ctx->compact, 0, sizeof ctx->compact);
    if (ctx->roller) {
        bfs_roller_stop(ctx->roller);
        ctx->roller = NULL;
    }
    if (ctx->packer) { /* after the roller, which packs through it */
        bfs_packer_stop(ctx->packer);
        ctx->packer = NULL;
    }
    if (ctx->ledger) {
        bfs_ledger_close(ctx->ledger); /* releases the node's lease */
        ctx->ledger = NULL;
    }
    if (ctx->cache) {
        bfs_cache_close(ctx->cache);
        ctx->cache = NULL;
    }
    bfs_ocf_schema_cache_free(ctx->schemas);
    ctx->schemas = NULL;
    bfs_conv_cache_free(ctx->convs);
    ctx->convs = NULL;
    if (ctx->store) {
        bfs_store_close(ctx->store);
        ctx->store = NULL;
    }
    if (ctx->cat) {
        bfs_catalog_close(ctx->cat);
        ctx->cat = NULL;
    }
}

/* The store's log at mount. Before the fork (check): refuse a node name held
 * by another live mount, and read the log (a new state directory is rebuilt
 * from the store here, before anything is served). After it: take the lease,
 * read what came meanwhile, start the renewal and refresh threads. A store
 * that cannot be read does not stop the mount (the threads retry;
 * last_refresh_error says why): only a node name held by another mount does. */
static int ledger_mount(struct bfs_ctx *ctx, int start)
{
    struct bfs_err err;
    int rc = 0;
    if (!ctx->opt.read_only) {
        rc = start ? bfs_ledger_acquire(ctx->ledger, &err) : bfs_ledger_check(ctx->ledger, &err);
        if (rc == -EBUSY) {
            bfs_error("%s", err.msg);
            return rc;
        }
        /* A store that does not answer must not stop uploads: the lease is
         * taken when it does (rolls wait for it). */
        if (rc < 0)
            bfs_warn("node %s: cannot %s the lease yet (retried; rolls wait for it): %s",
                     ctx->opt.node, start ? "take" : "check", err.msg[0] ? err.msg : strerror(-rc));
    }
    rc = bfs_ledger_refresh(ctx->ledger, &err);
    if (rc < 0)
        bfs_warn("%s (mounting anyway: read again %s)", err.msg,
                 ctx->opt.refresh ? "at every refresh" : "on a write to .battlefs/refresh");
    if (start && (rc = bfs_ledger_start(ctx->ledger)) < 0) {
        bfs_error("cannot start the store's log threads: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

/* Open catalog, store and cache and fill the modules' deps (fault: the roll's
 * fault hook's argument, or NULL); with start, also recover and start the
 * roller. */
static int ctx_open_modules(struct bfs_ctx *ctx, struct roll_fault *fault, int start)
{
    char *db = bfs_path_join(ctx->opt.state_dir, "catalog.db");
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
    struct bfs_err err;
    rc = bfs_store_open(ctx->opt.store_url, &so, &ctx->stats, &ctx->store, &err);
    if (rc < 0) {
        bfs_error("cannot open store %s: %s", ctx->opt.store_url,
                  err.msg[0] ? err.msg : strerror(-rc));
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
    /* A few conversions per partition that ever took a second version. */
    rc = bfs_conv_cache_new(64, &ctx->convs);
    if (rc < 0) {
        bfs_error("cannot create the conversion cache: %s", strerror(-rc));
        goto fail;
    }
    ctx->ingest = (struct bfs_ingest_deps){
        .cat = ctx->cat,
        .schemas = ctx->schemas,
        .stats = &ctx->stats,
        .errors = &ctx->errors,
        .max_upload = ctx->opt.max_upload,
        .codec = ctx->opt.codec,
        .deflate_level = ctx->opt.deflate_level,
        .convs = ctx->convs,
    };
    ctx->reader = (struct bfs_reader_deps){
        .cat = ctx->cat,
        .store = ctx->store,
        .cache = ctx->cache,
        .read_chunk = ctx->opt.read_chunk,
        .convs = ctx->convs,
        .refresh = reader_refresh,
        .refresh_arg = ctx,
    };
    const struct bfs_ledger_deps ld = {
        .cat = ctx->cat,
        .store = ctx->store,
        .stats = &ctx->stats,
        .errors = &ctx->errors,
        .node = ctx->opt.node,
        .read_only = ctx->opt.read_only,
        .refresh_s = ctx->opt.refresh,
        .lease_ttl_s = ctx->opt.lease_ttl,
        .work_dir = ctx->work_dir,
        .cache = ctx->cache,
    };
    rc = bfs_ledger_open(&ld, &ctx->ledger);
    if (rc < 0) {
        bfs_error("cannot open the store's log: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = ledger_mount(ctx, start)) < 0)
        goto fail;
    ctx->roll = (struct bfs_roll_deps){
        .cat = ctx->cat,
        .store = ctx->store,
        .ledger = ctx->ledger,
        .node = ctx->opt.node,
        .stats = &ctx->stats,
        .errors = &ctx->errors,
        .work_dir = ctx->work_dir,
        .archive_max_bytes = ctx->opt.archive_max_bytes,
        .roll_interval = ctx->opt.roll_interval,
        .roll_bytes = ctx->opt.roll_bytes,
        .convs = ctx->convs,
    };
    ctx->compact = (struct bfs_compact_deps){
        .cat = ctx->cat,
        .store = ctx->store,
        .ledger = ctx->ledger,
        .cache = ctx->cache,
        .convs = ctx->convs,
        .stats = &ctx->stats,
        .errors = &ctx->errors,
        .node = ctx->opt.node,
        .work_dir = ctx->compact_dir,
        .archive_max_bytes = ctx->opt.archive_max_bytes,
        .compact_after = ctx->opt.compact_after,
        .gc_grace = ctx->opt.gc_grace,
        .erase_within = ctx->opt.erase_within,
        .lease_ttl_s = ctx->opt.lease_ttl,
    };
    if (bfs_options_compact_fault(&ctx->opt, &ctx->compact_fault) == 0) {
        ctx->compact.fault = compact_fault_hook;
        ctx->compact.fault_arg = &ctx->compact_fault;
    }
    if (fault) {
        ctx->roll.fault = roll_fault_hook;
        ctx->roll.fault_arg = fault;
        ctx->roll.hold_puts = fault->step == BFS_ROLL_AFTER_BUILD;
    }
    if (start && ctx->metrics_fd >= 0) {
        rc = bfs_metrics_start(ctx->metrics_fd, &ctx->stats, ctx->cat, &ctx->metrics);
        ctx->metrics_fd = -1; /* taken over, also on failure */
        if (rc < 0) {
            bfs_error("cannot serve -o metrics=%s: %s", ctx->opt.metrics, strerror(-rc));
            goto fail;
        }
    }
    if (!start || ctx->opt.read_only)
        return 0;
    /* Compression off the close path: deflate partitions' uploads are
     * stored uncompressed at close and packed by this thread, by readers
     * before they take a view, and by the roll before it builds. */
    ctx->pack_fault = bfs_options_pack_fault(&ctx->opt);
    const struct bfs_packer_deps pd = {
        .cat = ctx->cat,
        .stats = &ctx->stats,
        .level = ctx->opt.deflate_level,
        .hold = ctx->pack_fault == 2,
        .fault = ctx->pack_fault == 0 || ctx->pack_fault == 1 ? pack_fault_hook : NULL,
        .fault_arg = &ctx->pack_fault,
    };
    rc = bfs_packer_start(&pd, &ctx->packer);
    if (rc < 0) {
        bfs_error("cannot start the packer: %s", strerror(-rc));
        goto fail;
    }
    ctx->ingest.packer = ctx->packer;
    ctx->reader.pack = reader_pack;
    ctx->reader.pack_arg = ctx->packer;
    ctx->roll.pack = roll_pack;
    ctx->roll.pack_arg = ctx->packer;
    adopt_at_mount(ctx);
    rc = bfs_roller_recover(&ctx->roll);
    if (rc < 0) {
        /* Not fatal: the data stays claimed and hot-readable; the roller retries. */
        bfs_error("recovery of an unfinished roll failed: %s (will retry)", strerror(-rc));
    }
    rc = bfs_roller_start(&ctx->roll, &ctx->roller);
    if (rc < 0) {
        bfs_error("cannot start the roller: %s", strerror(-rc));
        goto fail;
    }
    rc = bfs_compact_recover(&ctx->compact);
    if (rc < 0)
        bfs_error("cleanup of an unfinished compaction failed: %s (will retry at the next mount)",
                  strerror(-rc));
    rc = bfs_compactor_start(&ctx->compact, &ctx->compactor);
    if (rc < 0) {
        bfs_error("cannot start the compactor: %s", strerror(-rc));
        goto fail;
    }
    return 0;
fail:
    ctx_close_modules(ctx);
    return rc;
}

/* Make the state directory and its parts (spool, work, cache, and the
 * embedded store), and refuse a state whose parts are symbolic links or
 * belong to another user: battlefs empties spool/, work/ and cache/ and makes
 * the state 0700, which must never reach another directory (design.md,
 * "Start-up"). 0, or -errno with the reason printed. */
static int state_dirs(struct bfs_ctx *ctx)
{
    struct bfs_err err = {0};
    const char *state = ctx->opt.state_dir;
    int rc = bfs_mkdirs(state, 0700);
    if (rc == 0)
        rc = bfs_dir_check(state, getuid(), &err);
    if (rc == 0)
        rc = chmod(state, 0700) < 0 ? -errno : 0;
    ctx->spool_dir = bfs_path_join(state, "spool");
    ctx->cache_dir = bfs_path_join(state, "cache");
    ctx->work_dir = bfs_path_join(state, "work");
    /* The compactor's own (a roll empties work/ of its files when it starts). */
    ctx->compact_dir = bfs_path_join(state, "compact");
    char *store_dir = ctx->opt.store_default ? bfs_path_join(state, "store") : NULL;
    if (rc == 0 && (!ctx->spool_dir || !ctx->cache_dir || !ctx->work_dir || !ctx->compact_dir ||
                    (ctx->opt.store_default && !store_dir)))
        rc = -ENOMEM;
    /* The embedded default store lives in the state directory. */
    const char *parts[] = {ctx->spool_dir, ctx->work_dir, ctx->compact_dir, ctx->cache_dir,
                           store_dir};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0] && rc == 0; i++) {
        if (!parts[i])
            continue;
        struct stat sb;
        /* A link is refused as it is, not made through (mkdir -p follows it). */
        if (lstat(parts[i], &sb) < 0)
            rc = bfs_mkdirs(parts[i], 0700);
        if (rc == 0)
            rc = bfs_dir_check(parts[i], getuid(), &err);
    }
    free(store_dir);
    /* One mount per state directory: a lock held for the daemon's life (the
     * descriptor survives fuse_daemonize's fork). The node lease counts on
     * it: a lease held by this state directory's id is a dead process's. */
    if (rc == 0) {
        char *lock = bfs_path_join(state, "lock");
        int fd = lock ? open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
        if (!lock)
            rc = -ENOMEM;
        else if (fd < 0)
            rc = -errno;
        else if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
            if (rc == -EBUSY)
                bfs_err_set(&err, rc, "in use by another battlefs mount");
            close(fd);
        } else {
            ctx->lock_fd = fd;
        }
        free(lock);
    }
    if (rc < 0)
        fprintf(stderr, "battlefs: state directory %s: %s\n", state,
                err.msg[0] ? err.msg : strerror(-rc));
    return rc;
}

/* Whether the FUSE options name opt (e.g. "max_threads="). */
static bool fuse_opt_given(const struct fuse_args *args, const char *opt)
{
    for (int i = 0; i < args->argc; i++)
        if (strstr(args->argv[i], opt))
            return true;
    return false;
}

/* Worker threads of the FUSE loop unless -o max_threads= says otherwise. */
#define BFS_MAX_THREADS 32

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct bfs_ctx ctx;
    int ret = 1;

    /* Buffers past 256 KiB (a large upload's bytes, its normalised copy,
     * SQLite's copy of its blob) are mapped and unmapped, never kept in
     * malloc's arenas: glibc's default threshold rises to the largest block
     * freed, and freed megabytes then stay resident in each of the worker
     * threads' arenas (peak RSS 96 MiB instead of 68 MiB with 64 writers of
     * 1 MiB uploads; docs/bench.md). Uploads of a few KB are not affected. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    memset(&ctx, 0, sizeof ctx);
    ctx.lock_fd = -1;
    ctx.metrics_fd = -1;
    bfs_stats_init(&ctx.stats);
    bfs_errors_init(&ctx.errors);
    umask(077);

    struct bfs_err err;
    int rc = bfs_options_parse(&args, &ctx.opt, &err);
    if (rc < 0) {
        fprintf(stderr, "battlefs: %s\n", err.msg[0] ? err.msg : strerror(-rc));
        goto out_args;
    }
    if (rc == BFS_OPTIONS_HELP) {
        bfs_options_usage(argv[0]);
        ret = 0;
        goto out_args;
    }
    if (rc == BFS_OPTIONS_VERSION) {
        printf("battlefs version %s\n", BFS_VERSION);
        printf("FUSE library version %s\n", fuse_pkgversion());
        ret = 0;
        goto out_args;
    }
    if (ctx.opt.log_level >= 0)
        bfs_log_set_level((enum bfs_log_level)ctx.opt.log_level);
    struct roll_fault fault_plan;
    struct roll_fault *fault = NULL;
    if (bfs_options_roll_fault(&ctx.opt, &fault_plan.step) == 0)
        fault = &fault_plan;

    rc = state_dirs(&ctx);
    if (rc < 0)
        goto out_args;
    /* The metrics socket is bound now, so that a host that does not resolve
     * or an address in use fails the command; it is served after the fork. */
    if (ctx.opt.metrics && (ctx.metrics_fd = bfs_metrics_bind(ctx.opt.metrics, &err)) < 0) {
        fprintf(stderr, "battlefs: %s\n", err.msg);
        goto out_args;
    }

    /* Check everything once before forking (see the top of this file). */
    if (ctx_open_modules(&ctx, fault, 0) < 0)
        goto out_args;
    ctx_close_modules(&ctx);

    if (fuse_opt_add_arg(&args, ctx.opt.mountpoint) < 0)
        goto out_args;
    bool threads_given = fuse_opt_given(&args, "max_threads=");
    struct fuse_cmdline_opts copts;
    if (fuse_parse_cmdline(&args, &copts) != 0)
        goto out_args;
    /* Reads waiting for the store hold worker threads: more threads than
     * libfuse's 10, and at most half of them waiting for the store, so a hung
     * store leaves the rest to uploads, stats and hot reads (design.md,
     * "Threads and lock order"). */
    if (!threads_given)
        copts.max_threads = BFS_MAX_THREADS;
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
    if (bfs_fs_init(&ctx) < 0 || ctx_open_modules(&ctx, fault, 1) < 0)
        goto out_signals;
    if (!copts.singlethread)
        bfs_cache_set_waiting_max(ctx.cache, copts.max_threads > 1 ? copts.max_threads / 2 : 1);

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
    bfs_options_free(&ctx.opt);
    bfs_fs_destroy(&ctx);
    bfs_errors_destroy(&ctx.errors);
    bfs_stats_destroy(&ctx.stats);
    free(ctx.spool_dir);
    free(ctx.cache_dir);
    free(ctx.work_dir);
    free(ctx.compact_dir);
    if (ctx.lock_fd >= 0)
        close(ctx.lock_fd);
    if (ctx.metrics_fd >= 0)
        close(ctx.metrics_fd);
    return ret;
}
