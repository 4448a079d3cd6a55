/* options.c - the command line of the mount: parsing and validation.
 *
 * fuse_opt_parse fills raw strings (struct raw_opts); resolve() turns them
 * into struct bfs_options, with defaults and checks. Messages name the option
 * and what it takes; the caller prints them.
 */
#include "battlefs/options.h"

#include <errno.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/fsutil.h"
#include "battlefs/log.h"
#include "battlefs/metrics.h"
#include "battlefs/names.h"

/* Raw option strings as fuse_opt_parse fills them. */
struct raw_opts {
    char *state;
    char *roll_interval;
    char *roll_bytes;
    char *codec;
    char *deflate_level;
    char *max_upload;
    char *upload_memory;
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
    char *node;
    char *refresh;
    char *lease_ttl;
    char *compact_after, *gc_grace, *erase_within;
    char *metrics;
    int ro;
    char *positional[3];
    int n_positional;
    int show_help;
    int show_version;
    int nomem;
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
    OPT("upload_memory=%s", upload_memory),
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
    OPT("node=%s", node),
    OPT("refresh=%s", refresh),
    OPT("lease_ttl=%s", lease_ttl),
    OPT("compact_after=%s", compact_after),
    OPT("gc_grace=%s", gc_grace),
    OPT("erase_within=%s", erase_within),
    OPT("metrics=%s", metrics),
    FUSE_OPT_KEY("ro", 'r'), /* ours, not the kernel's: .battlefs/refresh stays writable */
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
        r->positional[r->n_positional] = strdup(arg);
        if (!r->positional[r->n_positional]) {
            r->nomem = 1;
            return -1;
        }
        r->n_positional++;
        return 0; /* consumed: the mountpoint is added back by main.c */
    case 'h':
        r->show_help = 1;
        return 0;
    case 'V':
        r->show_version = 1;
        return 0;
    case 'r':
        r->ro = 1;
        return 0;
    default:
        return 1; /* keep: a FUSE option */
    }
}

void bfs_options_usage(const char *prog)
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
        "    -o deflate_level=1..9      libdeflate level of blocks compressed at ingest (1)\n"
        "    -o max_upload=BYTES        largest accepted upload (64M)\n"
        "    -o upload_memory=BYTES     memory for uploads being written and ingested; past\n"
        "                               it they spill to the spool directory (32M; 0: none)\n"
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
        "    -o node=NAME               this writer's name in a shared store: 1-64 of\n"
        "                               [A-Za-z0-9_-] (default: the host name)\n"
        "    -o ro                      read-only replica: reads and refresh, no uploads,\n"
        "                               no rolls, nothing written to the store\n"
        "    -o refresh=SECONDS         read other nodes' new rolls this often (30; 0: only\n"
        "                               at mount and on a write to .battlefs/refresh)\n"
        "    -o compact_after=SECONDS   compact a period no roll added to for this long (7200)\n"
        "    -o gc_grace=SECONDS        keep archives a compaction retired this long (3600)\n"
        "    -o erase_within=SECONDS    remove an erased dataset's bytes within this (86400)\n"
        "    -o log_level=LEVEL         error, warn, info (default) or debug\n"
        "    -o metrics=[HOST:]PORT     serve Prometheus metrics at http://HOST:PORT/metrics\n"
        "                               (HOST default 127.0.0.1; off by default)\n"
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
    if (!s || *s < '0' || *s > '9') /* strtoull would take " 1", "+1" and " -1" (2^64 - 1) */
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

/* Where resolve() reports: the first message wins. */
struct report {
    struct bfs_err *err; /* the caller's, may be NULL */
    int bad;
};

static void bad(struct report *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad(struct report *rep, const char *fmt, ...)
{
    if (!rep->bad) {
        va_list ap;
        va_start(ap, fmt);
        bfs_err_vset(rep->err, -EINVAL, fmt, ap);
        va_end(ap);
    }
    rep->bad = 1;
}

static void size_opt(struct report *rep, const char *name, const char *val, uint64_t def,
                     uint64_t min, uint64_t *out)
{
    *out = def;
    if (!val)
        return;
    if (bfs_parse_size(val, out) < 0 || *out < min) {
        *out = def;
        bad(rep, "bad -o %s=%s (a byte size >= %" PRIu64 ", with optional K, M or G suffix)", name,
            val, min);
    }
}

/* A uid, gid (decimal) or umask (octal) option. */
static void id_opt(struct report *rep, const char *name, const char *val, int base,
                   unsigned long max, unsigned def, unsigned *out)
{
    *out = def;
    if (!val)
        return;
    char *end;
    errno = 0;
    unsigned long v = strtoul(val, &end, base);
    if (errno || end == val || *end || v > max || val[0] == '-') {
        bad(rep, "bad -o %s=%s (%s)", name, val,
            base == 8 ? "an octal mode mask such as 027" : "a number");
        return;
    }
    *out = (unsigned)v;
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

/* The host name as a node name: other characters become '-', cut at
 * BFS_NODE_MAX; "node" if there is none. */
static char *default_node(void)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) < 0 || !host[0])
        snprintf(host, sizeof host, "node");
    host[BFS_NODE_MAX] = '\0';
    for (char *p = host; *p; p++)
        if (!bfs_node_char(*p))
            *p = '-';
    return strdup(host);
}

/* fs.c's faults; the roll's are the roll steps' names, also as "roll:STEP". */
static const char *const fs_faults[] = {"spool:named", "ingest:pause"};
/* The packer's (main.c): _exit(99) at a step of its first batch, or hold it. */
static const char *const pack_faults[] = {"pack:mid", "pack:after-commit", "pack:hold"};

static int roll_fault_of(const char *f, enum bfs_roll_step *step)
{
    if (!f)
        return -ENOENT;
    if (strncmp(f, "roll:", 5) == 0)
        f += 5;
    return bfs_roll_step_parse(f, step) == 0 ? 0 : -ENOENT;
}

int bfs_options_roll_fault(const struct bfs_options *o, enum bfs_roll_step *step)
{
    return roll_fault_of(o->fault, step);
}

int bfs_options_compact_fault(const struct bfs_options *o, enum bfs_compact_step *step)
{
    if (!o->fault || strncmp(o->fault, "compact:", 8) != 0)
        return -ENOENT;
    return bfs_compact_step_parse(o->fault + 8, step) == 0 ? 0 : -ENOENT;
}

int bfs_options_adopt_fault(const struct bfs_options *o, enum bfs_adopt_step *step)
{
    if (!o->fault || strncmp(o->fault, "adopt:", 6) != 0)
        return -ENOENT;
    return bfs_adopt_step_parse(o->fault + 6, step) == 0 ? 0 : -ENOENT;
}

int bfs_options_pack_fault(const struct bfs_options *o)
{
    for (int i = 0; o->fault && i < 3; i++)
        if (strcmp(o->fault, pack_faults[i]) == 0)
            return i;
    return -ENOENT;
}

static int check_fault(struct report *rep, const char *f)
{
#ifdef BFS_FAULT_INJECTION
    enum bfs_roll_step step;
    enum bfs_compact_step cstep;
    enum bfs_adopt_step astep;
    if (roll_fault_of(f, &step) == 0)
        return 0;
    if (strncmp(f, "compact:", 8) == 0 && bfs_compact_step_parse(f + 8, &cstep) == 0)
        return 0;
    if (strncmp(f, "adopt:", 6) == 0 && bfs_adopt_step_parse(f + 6, &astep) == 0)
        return 0;
    for (size_t i = 0; i < sizeof fs_faults / sizeof fs_faults[0]; i++)
        if (strcmp(f, fs_faults[i]) == 0)
            return 0;
    for (size_t i = 0; i < sizeof pack_faults / sizeof pack_faults[0]; i++)
        if (strcmp(f, pack_faults[i]) == 0)
            return 0;
    char known[768] = "";
    size_t n = 0;
    for (int i = 0; i < BFS_ROLL_STEPS; i++)
        n += (size_t)snprintf(known + n, sizeof known - n, "%s, ",
                              bfs_roll_step_name((enum bfs_roll_step)i));
    for (int i = 0; i < BFS_COMPACT_STEPS; i++)
        n += (size_t)snprintf(known + n, sizeof known - n, "compact:%s, ",
                              bfs_compact_step_name((enum bfs_compact_step)i));
    for (int i = 0; i < BFS_ADOPT_STEPS; i++)
        n += (size_t)snprintf(known + n, sizeof known - n, "adopt:%s, ",
                              bfs_adopt_step_name((enum bfs_adopt_step)i));
    snprintf(known + n, sizeof known - n, "%s, %s, %s, %s, %s", fs_faults[0], fs_faults[1],
             pack_faults[0], pack_faults[1], pack_faults[2]);
    bad(rep, "unknown -o fault=%s (%s)", f, known);
    return -EINVAL;
#else
    (void)fs_faults;
    (void)pack_faults;
    bad(rep, "-o fault=%s needs a build with -Dfault_injection=true", f);
    return -EINVAL;
#endif
}

static int resolve(const struct raw_opts *r, struct bfs_options *o, struct report *rep)
{
    if (r->n_positional == 1) {
        o->mountpoint = strdup(r->positional[0]);
    } else if (r->n_positional == 2) {
        o->store_url = strdup(r->positional[0]);
        o->mountpoint = strdup(r->positional[1]);
        if (!o->store_url)
            return -ENOMEM;
    } else {
        bad(rep, "expected [STORE] MOUNTPOINT (see --help)");
        return -EINVAL;
    }
    if (!o->mountpoint)
        return -ENOMEM;
    if (o->store_url && !strstr(o->store_url, "://")) {
        bad(rep, "STORE must be file:///abs/dir or s3://bucket[/prefix], not %s", o->store_url);
        return -EINVAL;
    }
    o->state_dir = r->state ? strdup(r->state) : default_state_dir();
    if (!o->state_dir) {
        if (r->state)
            return -ENOMEM;
        bad(rep, "no state directory: set -o state=DIR");
        return -EINVAL;
    }
    if (o->state_dir[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) {
            int e = errno;
            bad(rep, "-o state=%s: cannot find the current directory: %s", r->state, strerror(e));
            return -e;
        }
        char *abs = bfs_path_join(cwd, o->state_dir);
        free(o->state_dir);
        o->state_dir = abs;
        if (!abs)
            return -ENOMEM;
    }
    size_opt(rep, "roll_interval", r->roll_interval, 3600, 1, &o->roll_interval);
    size_opt(rep, "roll_bytes", r->roll_bytes, 256ull << 20, 1, &o->roll_bytes);
    size_opt(rep, "max_upload", r->max_upload, 64ull << 20, 1, &o->max_upload);
    size_opt(rep, "upload_memory", r->upload_memory, 32ull << 20, 0, &o->upload_memory);
    size_opt(rep, "cache_size", r->cache_size, 1ull << 30, 0, &o->cache_size);
    size_opt(rep, "archive_max_bytes", r->archive_max_bytes, 128ull << 20, 4096,
             &o->archive_max_bytes);
    size_opt(rep, "read_chunk", r->read_chunk, 4ull << 20, 4096, &o->read_chunk);
    size_opt(rep, "store_timeout", r->store_timeout, 30, 1, &o->store_timeout);
    size_opt(rep, "held_timeout", r->held_timeout, 3600, 1, &o->held_timeout);
    unsigned uid, gid, um;
    id_opt(rep, "uid", r->uid, 10, UINT32_MAX - 1, (unsigned)getuid(), &uid);
    id_opt(rep, "gid", r->gid, 10, UINT32_MAX - 1, (unsigned)getgid(), &gid);
    id_opt(rep, "umask", r->umask, 8, 0777, 022, &um);
    o->uid = (uid_t)uid;
    o->gid = (gid_t)gid;
    o->umask = (mode_t)um;
    o->held_bytes_max = o->max_upload > UINT64_MAX / 16 ? UINT64_MAX : 16 * o->max_upload;
    if (r->store_timeout && o->store_timeout > 86400)
        bad(rep, "-o store_timeout=%s: at most 86400 seconds", r->store_timeout);
    o->deflate_level = 1; /* faster and smaller than 6 on FUSOU records: docs/bench.md */
    if (r->deflate_level) {
        const char *v = r->deflate_level;
        if (strlen(v) != 1 || v[0] < '1' || v[0] > '9')
            bad(rep, "bad -o deflate_level=%s (1 to 9)", v);
        else
            o->deflate_level = v[0] - '0';
    }
    o->codec = BFS_CODEC_DEFLATE;
    if (r->codec && bfs_codec_parse(r->codec, strlen(r->codec), &o->codec) < 0)
        bad(rep, "bad -o codec=%s (null, deflate or snappy)", r->codec);
    o->log_level = -1;
    if (r->log_level) {
        static const char *const lv[] = {"error", "warn", "info", "debug"};
        for (int i = 0; i < 4; i++)
            if (strcmp(r->log_level, lv[i]) == 0)
                o->log_level = i;
        if (o->log_level < 0)
            bad(rep, "bad -o log_level=%s (error, warn, info, debug)", r->log_level);
    }
    if (r->fault && check_fault(rep, r->fault) == 0 && !(o->fault = strdup(r->fault)))
        return -ENOMEM;
    size_opt(rep, "refresh", r->refresh, 30, 0, &o->refresh);
    size_opt(rep, "compact_after", r->compact_after, 7200, 0, &o->compact_after);
    size_opt(rep, "gc_grace", r->gc_grace, 3600, 0, &o->gc_grace);
    size_opt(rep, "erase_within", r->erase_within, 86400, 0, &o->erase_within);
    o->read_only = r->ro;
    if (r->lease_ttl) {
#ifdef BFS_FAULT_INJECTION
        size_opt(rep, "lease_ttl", r->lease_ttl, 60, 1, &o->lease_ttl);
#else
        bad(rep, "-o lease_ttl=%s needs a build with -Dfault_injection=true", r->lease_ttl);
#endif
    }
    if (r->node) {
        if (!bfs_node_valid(r->node))
            bad(rep, "bad -o node=%s (1 to %d of A-Z, a-z, 0-9, '_' and '-')", r->node,
                BFS_NODE_MAX);
        else if (!(o->node = strdup(r->node)))
            return -ENOMEM;
    } else if (!(o->node = default_node())) {
        return -ENOMEM;
    }
    if (r->metrics) {
        char host[256];
        unsigned port;
        struct bfs_err merr;
        if (bfs_metrics_addr_parse(r->metrics, host, sizeof host, &port, &merr) < 0)
            bad(rep, "%s", merr.msg);
        else if (!(o->metrics = strdup(r->metrics)))
            return -ENOMEM;
    }
    if (rep->bad)
        return -EINVAL;
    o->endpoint = r->endpoint ? strdup(r->endpoint) : NULL;
    o->region = r->region ? strdup(r->region) : NULL;
    if ((r->endpoint && !o->endpoint) || (r->region && !o->region))
        return -ENOMEM;
    if (!o->store_url) {
        size_t n = strlen(o->state_dir) + 16;
        o->store_url = malloc(n);
        if (!o->store_url)
            return -ENOMEM;
        snprintf(o->store_url, n, "file://%s/store", o->state_dir);
        o->store_default = 1; /* the embedded default store lives in the state directory */
    }
    return 0;
}

static void free_raw(struct raw_opts *r)
{
    char **s[] = {&r->state,         &r->roll_interval, &r->roll_bytes,    &r->codec,
                  &r->deflate_level, &r->max_upload,    &r->cache_size,    &r->archive_max_bytes,
                  &r->read_chunk,    &r->store_timeout, &r->endpoint,      &r->region,
                  &r->fault,         &r->log_level,     &r->held_timeout,  &r->uid,
                  &r->gid,           &r->umask,         &r->node,          &r->refresh,
                  &r->lease_ttl,     &r->metrics,       &r->compact_after, &r->gc_grace,
                  &r->erase_within,  &r->upload_memory};
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        free(*s[i]);
        *s[i] = NULL;
    }
    for (int i = 0; i < r->n_positional; i++)
        free(r->positional[i]);
    r->n_positional = 0;
}

int bfs_options_parse(struct fuse_args *args, struct bfs_options *o, struct bfs_err *err)
{
    struct raw_opts raw;
    memset(&raw, 0, sizeof raw);
    memset(o, 0, sizeof *o);
    o->log_level = -1;
    bfs_err_clear(err);
    struct report rep = {.err = err, .bad = 0};
    int rc;
    if (fuse_opt_parse(args, &raw, bfs_opts, opt_proc) < 0) {
        if (raw.nomem) {
            rc = -ENOMEM;
        } else {
            bad(&rep, raw.n_positional >= 3 ? "too many arguments: expected [STORE] MOUNTPOINT"
                                            : "cannot parse the options");
            rc = -EINVAL;
        }
    } else if (raw.show_help) {
        rc = BFS_OPTIONS_HELP;
    } else if (raw.show_version) {
        rc = BFS_OPTIONS_VERSION;
    } else {
        rc = resolve(&raw, o, &rep);
    }
    if (rc == -ENOMEM && !rep.bad)
        bad(&rep, "out of memory");
    if (rc < 0 && err)
        err->code = rc;
    free_raw(&raw);
    return rc;
}

void bfs_options_free(struct bfs_options *o)
{
    free(o->store_url);
    free(o->mountpoint);
    free(o->state_dir);
    free(o->endpoint);
    free(o->region);
    free(o->fault);
    free(o->node);
    free(o->metrics);
    memset(o, 0, sizeof *o);
    o->log_level = -1;
}
