/* fs.c - FUSE operations and path routing.
 *
 * The tree:
 *   /                                   tables, incoming, .battlefs
 *   /incoming/...                       drop box: uploads being written, held
 *                                       dot-files and virtual directories
 *   /<table>/<period>/<dataset>.avro    read-only, from the catalog (reader.c)
 *   /.battlefs/{stats,errors,metrics,roll,refresh}  control files
 *
 * incoming/ lives in memory (struct bfs_fs): the list of open or held uploads
 * (their bytes in memory, or spilled to a file in <state>/spool: spool.h),
 * and the directories made with mkdir. A directory inside incoming/ at depth
 * 1 or 2 whose name has no '.' exists implicitly, so
 * `cp x.avro incoming/battle/2025-12-18/u1.avro` needs no mkdir; names with a
 * dot need mkdir (-p). See docs/design.md for the errno of each operation
 * that makes no sense here.
 */
#include "battlefs/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <fuse.h>
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/access.h"
#include "battlefs/battlefs.h"
#include "battlefs/buf.h"
#include "battlefs/catalog.h"
#include "battlefs/compact.h"
#include "battlefs/err.h"
#include "battlefs/ingest.h"
#include "battlefs/ledger.h"
#include "battlefs/log.h"
#include "battlefs/metrics.h"
#include "battlefs/names.h"
#include "battlefs/reader.h"
#include "battlefs/roller.h"
#include "battlefs/spool.h"
#include "battlefs/upload.h"

#define INCOMING  "incoming"
#define CTL       ".battlefs"
#define MAX_DEPTH 3 /* incoming/<table>/<period>/<dataset>.avro */
/* incoming/ and its directories: anyone the umask lets in may upload; the
 * sticky bit keeps each upload to its writer (and the tree's owner, root). */
#define INCOMING_DIR_MODE 01777
/* Directories made with mkdir in incoming/ (kept in memory; the implicit ones
 * cost nothing): beyond, mkdir fails with EMLINK. */
#define BFS_VDIRS_MAX 10000
#define UPLOAD_MODE   0600         /* an upload is its writer's alone */
#define BFS_MAX_WRITE (128 * 1024) /* bytes of one FUSE write (bfs_init) */

struct upload {
    struct upload *next; /* in fs->uploads while listed: bound to its name */
    bool listed;
    char *path;                   /* relative to incoming/, e.g. "battle/2025-12-18/u1.avro" */
    struct bfs_spool_file *bytes; /* in memory or spooled (spool.h) */
    uid_t uid; /* its creator (owner, mode 0600): held files are counted per uid */
    gid_t gid;
    struct bfs_up st;  /* the lifecycle (upload.c) */
    uint64_t charged;  /* bytes counted against uid's held-file bound (0 or size) */
    bool charged_file; /* counted as one of uid's held files */
    struct timespec mtime;
    mode_t mode;
};

/* Held files of one uid: at most BFS_HELD_FILES_MAX of them and
 * opt.held_bytes_max bytes (beyond, a create fails with EDQUOT). */
#define BFS_HELD_FILES_MAX 1024u
struct held_quota {
    uid_t uid;
    unsigned files;
    uint64_t bytes;
};

struct vdir {
    struct vdir *next;
    char *path; /* relative to incoming/ */
};

struct handle;

/* Lock order: fs->lock is taken before nothing else of the daemon's except
 * the log's, the errors ring's and an upload's spool file lock (a truncate);
 * it is never held across an ingest, a catalog call or a spool write.
 * fs->ingested is waited on with fs->lock. */
struct bfs_fs {
    pthread_mutex_t lock;    /* guards everything below */
    pthread_cond_t ingested; /* an upload left INGESTING */
    struct upload *uploads;  /* bound to their names in incoming/ */
    struct vdir *dirs;
    size_t n_dirs;            /* at most BFS_VDIRS_MAX */
    struct handle *handles;   /* open files; what is left at unmount is freed there */
    struct held_quota *quota; /* per uid */
    size_t n_quota;
    struct bfs_spool *spool;    /* the uploads' bytes and their memory bound */
    struct timespec mount_time; /* times of the directories */
    int pause_ingest;           /* test builds, -o fault=ingest:pause */
};

enum node_kind {
    N_ROOT,
    N_INCOMING,
    N_IN, /* something inside incoming/ */
    N_CTL,
    N_CTL_STATS,
    N_CTL_ERRORS,
    N_CTL_METRICS,
    N_CTL_ROLL,
    N_CTL_REFRESH,
    N_CTL_COMPACT,
    N_CTL_ERASE,
    N_TABLE,
    N_PERIOD,
    N_DATASET,
};

struct node {
    enum node_kind kind;
    const char *rel; /* N_IN: path relative to incoming/ */
    int depth;       /* N_IN: number of components */
    char table[BFS_NAME_MAX + 1];
    char period[BFS_NAME_MAX + 1];
    char dataset[BFS_NAME_MAX + 1];
};

enum handle_kind { H_UPLOAD, H_READER, H_TEXT, H_ROLL, H_REFRESH, H_COMPACT, H_ERASE };

/* The control files written to act: .battlefs/roll, .battlefs/refresh. */
static bool is_action(enum node_kind k)
{
    return k == N_CTL_ROLL || k == N_CTL_REFRESH || k == N_CTL_COMPACT || k == N_CTL_ERASE;
}

struct handle {
    struct handle *prev, *next; /* in fs->handles */
    enum handle_kind kind;
    struct upload *up;
    struct bfs_up_desc desc; /* H_UPLOAD: this file description's part in up's lifecycle */
    pid_t opener;            /* H_UPLOAD: the thread that opened it */
    struct bfs_reader *rd;
    struct bfs_buf text;
};

static struct handle *get_handle(struct fuse_file_info *fi)
{
    return (struct handle *)(uintptr_t)fi->fh;
}

static struct bfs_ctx *get_ctx(void)
{
    return fuse_get_context()->private_data;
}

/* ---- paths ---- */

static int copy_name(char *dst, const char *s, size_t n)
{
    if (!bfs_name_valid(s, n))
        return -ENOENT;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && memcmp(s + n - k, suffix, k) == 0;
}

/* Classify an absolute path. 0 or -ENOENT. */
static int parse_path(const char *path, struct node *nd)
{
    memset(nd, 0, sizeof *nd);
    if (!path)
        return -ENOENT; /* an open file whose name is gone (nullpath_ok) */
    const char *p = path + 1;
    if (*p == '\0') {
        nd->kind = N_ROOT;
        return 0;
    }
    const char *c[4] = {0};
    size_t len[4] = {0};
    int n = 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t l = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 4)
            return -ENOENT;
        c[n] = p;
        len[n] = l;
        n++;
        p += l;
        if (*p == '/')
            p++;
    }
    if (len[0] == strlen(INCOMING) && memcmp(c[0], INCOMING, len[0]) == 0) {
        if (n == 1) {
            nd->kind = N_INCOMING;
            return 0;
        }
        nd->kind = N_IN;
        nd->rel = c[1];
        nd->depth = n - 1;
        return 0;
    }
    if (len[0] == strlen(CTL) && memcmp(c[0], CTL, len[0]) == 0) {
        if (n == 1) {
            nd->kind = N_CTL;
            return 0;
        }
        if (n != 2)
            return -ENOENT;
        if (strcmp(c[1], "stats") == 0)
            nd->kind = N_CTL_STATS;
        else if (strcmp(c[1], "errors") == 0)
            nd->kind = N_CTL_ERRORS;
        else if (strcmp(c[1], "metrics") == 0)
            nd->kind = N_CTL_METRICS;
        else if (strcmp(c[1], "roll") == 0)
            nd->kind = N_CTL_ROLL;
        else if (strcmp(c[1], "refresh") == 0)
            nd->kind = N_CTL_REFRESH;
        else if (strcmp(c[1], "compact") == 0)
            nd->kind = N_CTL_COMPACT;
        else if (strcmp(c[1], "erase") == 0)
            nd->kind = N_CTL_ERASE;
        else
            return -ENOENT;
        return 0;
    }
    if (n > 3 || copy_name(nd->table, c[0], len[0]) < 0)
        return -ENOENT;
    nd->kind = N_TABLE;
    if (n == 1)
        return 0;
    if (copy_name(nd->period, c[1], len[1]) < 0)
        return -ENOENT;
    nd->kind = N_PERIOD;
    if (n == 2)
        return 0;
    if (!ends_with(c[2], len[2], ".avro") ||
        copy_name(nd->dataset, c[2], len[2] - strlen(".avro")) < 0)
        return -ENOENT;
    nd->kind = N_DATASET;
    return 0;
}

static int is_data_tree(enum node_kind k)
{
    return k == N_TABLE || k == N_PERIOD || k == N_DATASET;
}

static int is_incoming(enum node_kind k)
{
    return k == N_INCOMING || k == N_IN;
}

static const char *base_name(const char *rel)
{
    const char *s = strrchr(rel, '/');
    return s ? s + 1 : rel;
}

static int is_held_name(const char *rel)
{
    return base_name(rel)[0] == '.';
}

/* ---- access (access.h: battlefs checks the modes it reports) ---- */

/* The permission bits of everything but an upload (which is UPLOAD_MODE of
 * its writer): directories and control files of the tree's owner. */
static mode_t perm_of(const struct bfs_ctx *ctx, enum node_kind k)
{
    switch (k) {
    case N_ROOT:
    case N_CTL:
        return 0755 & ~ctx->opt.umask;
    case N_INCOMING:
    case N_IN: /* a directory inside incoming/ */
        return INCOMING_DIR_MODE & ~ctx->opt.umask;
    case N_TABLE:
    case N_PERIOD:
        return 0555 & ~ctx->opt.umask;
    case N_DATASET:
    case N_CTL_STATS:
    case N_CTL_ERRORS:
    case N_CTL_METRICS:
        return 0444 & ~ctx->opt.umask;
    case N_CTL_ROLL:
    case N_CTL_REFRESH:
    case N_CTL_COMPACT:
    case N_CTL_ERASE:
        return 0200;
    }
    return 0;
}

static int caller_groups(gid_t *list, int size)
{
    return fuse_getgroups(size, list);
}

static struct bfs_caller caller(void)
{
    const struct fuse_context *fc = fuse_get_context();
    return (struct bfs_caller){fc->uid, fc->gid, caller_groups};
}

/* May the caller do `want` on a node of kind k (not an upload)? 0 or -EACCES. */
static int may(const struct bfs_ctx *ctx, enum node_kind k, int want)
{
    struct bfs_caller c = caller();
    return bfs_access_check(&c, perm_of(ctx, k), ctx->opt.uid, ctx->opt.gid, want);
}

/* Search permission on every directory above nd (to look it up). */
static int may_reach(const struct bfs_ctx *ctx, const struct node *nd)
{
    if (fuse_get_context()->uid == 0 || nd->kind == N_ROOT)
        return 0;
    int rc = may(ctx, N_ROOT, BFS_MAY_EXEC);
    if (rc == 0 && (nd->kind == N_IN))
        rc = may(ctx, N_INCOMING, BFS_MAY_EXEC);
    if (rc == 0 && (nd->kind == N_PERIOD || nd->kind == N_DATASET))
        rc = may(ctx, N_TABLE, BFS_MAY_EXEC);
    if (rc == 0 && (nd->kind == N_CTL_STATS || nd->kind == N_CTL_ERRORS ||
                    nd->kind == N_CTL_METRICS || is_action(nd->kind)))
        rc = may(ctx, N_CTL, BFS_MAY_EXEC);
    return rc;
}

/* An upload is its writer's (mode 0600): 0 or -EACCES. fs->lock held. */
static int may_upload(const struct upload *u, int want)
{
    struct bfs_caller c = caller();
    return bfs_access_check(&c, u->mode & 07777, u->uid, u->gid, want);
}

/* Removing or renaming u out of incoming/'s sticky directories: its writer,
 * the tree's owner or root. 0 or -EPERM. */
static int may_remove(const struct bfs_ctx *ctx, const struct upload *u)
{
    uid_t uid = fuse_get_context()->uid;
    return uid == 0 || uid == u->uid || uid == ctx->opt.uid ? 0 : -EPERM;
}

/* Creating or removing a name in incoming/: write and search on it. */
static int may_change_incoming(const struct bfs_ctx *ctx)
{
    return may(ctx, N_INCOMING, BFS_MAY_WRITE | BFS_MAY_EXEC);
}

/* ---- incoming/ state (call with fs->lock held) ---- */

static struct upload *find_upload(struct bfs_fs *fs, const char *rel)
{
    for (struct upload *u = fs->uploads; u; u = u->next)
        if (strcmp(u->path, rel) == 0)
            return u;
    return NULL;
}

static struct vdir *find_dir(struct bfs_fs *fs, const char *rel)
{
    for (struct vdir *d = fs->dirs; d; d = d->next)
        if (strcmp(d->path, rel) == 0)
            return d;
    return NULL;
}

/* 1 if rel is strictly below dir (dir "" is incoming/ itself). */
static int is_below(const char *rel, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 0)
        return 1;
    return strncmp(rel, dir, n) == 0 && rel[n] == '/';
}

static int has_children(struct bfs_fs *fs, const char *dir)
{
    for (struct upload *u = fs->uploads; u; u = u->next)
        if (is_below(u->path, dir))
            return 1;
    for (struct vdir *d = fs->dirs; d; d = d->next)
        if (is_below(d->path, dir))
            return 1;
    return 0;
}

static int implicit_dir(const char *rel, int depth)
{
    const char *b = base_name(rel);
    return depth <= MAX_DEPTH - 1 && strchr(b, '.') == NULL && bfs_name_valid(b, strlen(b));
}

static struct held_quota *quota_of(struct bfs_fs *fs, uid_t uid, bool add)
{
    for (size_t i = 0; i < fs->n_quota; i++)
        if (fs->quota[i].uid == uid)
            return &fs->quota[i];
    if (!add)
        return NULL;
    struct held_quota *q = realloc(fs->quota, (fs->n_quota + 1) * sizeof *q);
    if (!q)
        return NULL;
    fs->quota = q;
    q = &fs->quota[fs->n_quota++];
    *q = (struct held_quota){.uid = uid};
    return q;
}

/* Bring fs's view of u in line with its lifecycle state after a transition:
 * listed exactly while bound to its name, and counted against its uid's
 * held-file bound exactly while it is a named held file. */
static void sync_upload(struct bfs_fs *fs, struct upload *u)
{
    if (u->listed && !u->st.named) {
        for (struct upload **pp = &fs->uploads; *pp; pp = &(*pp)->next)
            if (*pp == u) {
                *pp = u->next;
                break;
            }
        u->next = NULL;
        u->listed = false;
    }
    bool held = u->st.named && u->st.held_name;
    uint64_t bytes = held ? u->st.size : 0;
    if (held == u->charged_file && bytes == u->charged)
        return;
    struct held_quota *q = quota_of(fs, u->uid, true);
    if (!q)
        return; /* out of memory: the bound is not kept for this uid */
    q->files = q->files - (u->charged_file ? 1 : 0) + (held ? 1 : 0);
    q->bytes = q->bytes - u->charged + bytes;
    u->charged_file = held;
    u->charged = bytes;
}

static void free_upload(struct upload *u)
{
    bfs_spool_file_free(u->bytes);
    free(u->path);
    free(u);
}

/* Reject a name that can never become an upload's: "<dir>/.avro" or
 * "<dir>/..avro" would be a dataset called "" or ".". 0 or -EINVAL. */
static int check_new_name(struct bfs_ctx *ctx, const char *rel)
{
    const char *b = base_name(rel);
    size_t n = strlen(b);
    if (!ends_with(b, n, ".avro") && strcmp(b, ".avro") != 0)
        return 0;
    if (strspn(b, ".") < n - strlen("avro"))
        return 0;
    char what[PATH_MAX];
    snprintf(what, sizeof what, INCOMING "/%s", rel);
    bfs_ingest_reject(&ctx->ingest, what, "no dataset name before .avro");
    return -EINVAL;
}

/* A new upload bound to rel (the caller has unbound any other upload there).
 * NULL with *err on failure. */
static struct upload *new_upload(struct bfs_ctx *ctx, const char *rel, uid_t uid, gid_t gid,
                                 int *err)
{
    struct bfs_fs *fs = ctx->fs;
    bool held = is_held_name(rel);
    if (held) {
        struct held_quota *q = quota_of(fs, uid, false);
        if (q && (q->files >= BFS_HELD_FILES_MAX || q->bytes >= ctx->opt.held_bytes_max)) {
            char what[PATH_MAX], reason[200];
            snprintf(what, sizeof what, INCOMING "/%s", rel);
            snprintf(reason, sizeof reason,
                     "uid %u holds %u held files of %llu bytes (bounds: %u files, %llu bytes): "
                     "rename or remove some",
                     (unsigned)uid, q->files, (unsigned long long)q->bytes, BFS_HELD_FILES_MAX,
                     (unsigned long long)ctx->opt.held_bytes_max);
            bfs_ingest_reject(&ctx->ingest, what, reason);
            *err = -EDQUOT;
            return NULL;
        }
    }
    struct upload *u = calloc(1, sizeof *u);
    if (!u || !(u->path = strdup(rel))) {
        *err = -ENOMEM;
        goto fail;
    }
    if ((*err = bfs_spool_file_new(fs->spool, &u->bytes)) < 0)
        goto fail;
    bfs_up_init(&u->st, held);
    u->uid = uid;
    u->gid = gid;
    u->mode = S_IFREG | UPLOAD_MODE;
    clock_gettime(CLOCK_REALTIME, &u->mtime);
    u->listed = true;
    u->next = fs->uploads;
    fs->uploads = u;
    sync_upload(fs, u);
    return u;
fail:
    if (u) {
        free(u->path);
        free(u);
    }
    return NULL;
}

/* Carry out a transition's FREE, else nothing (INGEST and WAIT are the
 * caller's). Returns true if u was freed. */
static bool settle(struct bfs_fs *fs, struct upload *u, enum bfs_up_action act)
{
    sync_upload(fs, u);
    if (act != BFS_UP_FREE)
        return false;
    free_upload(u);
    return true;
}

/* Unbind whatever upload holds rel's name, for a new upload or a rename onto
 * it: a held file there is discarded, a real upload being written keeps
 * going under its old identity and is ingested at its close. */
static void unbind_name(struct bfs_fs *fs, const char *rel)
{
    struct upload *v = find_upload(fs, rel);
    if (v)
        settle(fs, v, bfs_up_replaced(&v->st));
}

/* Discard HELD uploads left unrenamed for held_timeout seconds. */
static void expire_held(struct bfs_ctx *ctx)
{
    struct bfs_fs *fs = ctx->fs;
    time_t now = time(NULL);
    for (struct upload *u = fs->uploads, *next; u; u = next) {
        next = u->next;
        if (!bfs_up_expired(&u->st, now, (time_t)ctx->opt.held_timeout))
            continue;
        char what[PATH_MAX], reason[128];
        snprintf(what, sizeof what, INCOMING "/%s", u->path);
        snprintf(reason, sizeof reason, "held file not renamed within %llu s: discarded",
                 (unsigned long long)ctx->opt.held_timeout);
        bfs_ingest_reject(&ctx->ingest, what, reason);
        settle(fs, u, bfs_up_discard(&u->st, 0));
    }
}

/* Whether the threads a and b (FUSE request pids, i.e. thread ids) belong to
 * one process. A pid of 0 (a process in another pid namespace) counts as the
 * same, which ingests at its close as before this rule. */
static bool same_process(pid_t a, pid_t b)
{
    if (a == b || a <= 0 || b <= 0)
        return true;
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/task/%d", (int)a, (int)b);
    return access(p, F_OK) == 0;
}

/* Identity from a path inside incoming/ (rel, depth 1..3). Fields point into
 * buf. 0 or -EINVAL with reason. */
static int identity_from_path(const char *rel, char *buf, size_t buflen, struct bfs_identity *id,
                              struct bfs_err *err)
{
    if (snprintf(buf, buflen, "%s", rel) >= (int)buflen)
        return bfs_err_set(err, -EINVAL, "name too long");
    char *part[3];
    int n = 0;
    for (char *p = buf; n < 3;) {
        part[n++] = p;
        char *slash = strchr(p, '/');
        if (!slash)
            break;
        *slash = '\0';
        p = slash + 1;
    }
    char *file = part[n - 1];
    size_t fl = strlen(file);
    if (!ends_with(file, fl, ".avro"))
        return bfs_err_set(err, -EINVAL, "upload names must end in .avro");
    file[fl - strlen(".avro")] = '\0';
    memset(id, 0, sizeof *id);
    if (n == 1)
        return 0; /* identity from the OCF metadata */
    id->table = part[0];
    id->dataset = file;
    if (n == 3)
        id->period = part[1];
    return 0;
}

#ifdef BFS_FAULT_INJECTION
/* -o fault=ingest:pause: the ingest waits while <state>/fault-ingest-paused
 * exists; it creates the file when it starts waiting (the test removes it). */
static void fault_pause_ingest(struct bfs_ctx *ctx)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/fault-ingest-paused", ctx->opt.state_dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    bfs_info("fault injection: ingest paused until %s is removed", p);
    while (access(p, F_OK) == 0)
        usleep(10 * 1000);
}
#endif

/* Run the ingest that a transition started (u is INGESTING): fs->lock held
 * on entry and exit, dropped while ingesting. Returns its result; u is freed
 * here when nothing refers to it any more (*freed). */
static int run_ingest(struct bfs_ctx *ctx, struct upload *u, bool *freed)
{
    struct bfs_fs *fs = ctx->fs;
    char what[PATH_MAX];
    snprintf(what, sizeof what, INCOMING "/%s", u->path);
    sync_upload(fs, u); /* it left incoming/ */
    pthread_mutex_unlock(&fs->lock);

#ifdef BFS_FAULT_INJECTION
    if (fs->pause_ingest)
        fault_pause_ingest(ctx);
#endif
    char buf[PATH_MAX];
    struct bfs_err err;
    struct bfs_identity id;
    int rc = identity_from_path(what + strlen(INCOMING) + 1, buf, sizeof buf, &id, &err);
    if (rc < 0)
        bfs_ingest_reject(&ctx->ingest, what, err.msg);
    else {
        double t = bfs_metrics_now();
        const uint8_t *data;
        size_t len;
        rc = bfs_spool_view(u->bytes, &data, &len);
        if (rc < 0) {
            snprintf(buf, sizeof buf, "cannot read the upload's spool file: %s", strerror(-rc));
            bfs_ingest_reject(&ctx->ingest, what, buf);
            rc = -EIO;
        } else {
            rc = bfs_ingest(&ctx->ingest, data, len, &id, what);
            bfs_spool_unview(u->bytes);
        }
        if (rc == 0)
            bfs_hist_observe(&ctx->stats.close_seconds, bfs_metrics_now() - t);
    }
    if (rc == 0 && ctx->roller)
        bfs_roller_notify(ctx->roller);

    pthread_mutex_lock(&fs->lock);
    *freed = settle(fs, u, bfs_up_ingested(&u->st, rc));
    pthread_cond_broadcast(&fs->ingested);
    return rc;
}

/* Wait until u leaves INGESTING (fs->lock held); its result. */
static int wait_ingest(struct bfs_fs *fs, const struct upload *u)
{
    while (u->st.state == BFS_UP_INGESTING)
        pthread_cond_wait(&fs->ingested, &fs->lock);
    return u->st.result;
}

/* ---- getattr / readdir ---- */

/* Directories carry the mount time: they have no history of their own. */

static void fill_dir(struct stat *st, enum node_kind k)
{
    const struct bfs_ctx *ctx = get_ctx();
    st->st_mode = S_IFDIR | perm_of(ctx, k);
    st->st_nlink = 2;
    st->st_mtim = st->st_atim = st->st_ctim = ctx->fs->mount_time;
}

static void fill_upload(struct stat *st, const struct upload *u)
{
    st->st_mode = u->mode;
    st->st_uid = u->uid;
    st->st_gid = u->gid;
    st->st_nlink = 1;
    st->st_size = (off_t)u->st.size;
    st->st_mtim = u->mtime;
    st->st_ctim = u->mtime;
}

static int bfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    memset(st, 0, sizeof *st);
    st->st_uid = ctx->opt.uid;
    st->st_gid = ctx->opt.gid;
    struct handle *h = fi ? get_handle(fi) : NULL;
    if (!path && h && h->kind == H_UPLOAD) { /* an upload whose name is gone */
        pthread_mutex_lock(&ctx->fs->lock);
        fill_upload(st, h->up);
        pthread_mutex_unlock(&ctx->fs->lock);
        return 0;
    }
    int rc = parse_path(path, &nd);
    if (rc < 0 || (rc = may_reach(ctx, &nd)) < 0)
        return rc;
    switch (nd.kind) {
    case N_ROOT:
    case N_CTL:
    case N_INCOMING:
        fill_dir(st, nd.kind);
        return 0;
    case N_CTL_STATS:
    case N_CTL_ERRORS:
    case N_CTL_METRICS:
    case N_CTL_ROLL:
    case N_CTL_REFRESH:
    case N_CTL_COMPACT:
    case N_CTL_ERASE:
        st->st_mode = S_IFREG | perm_of(ctx, nd.kind);
        st->st_nlink = 1;
        return 0; /* content is rendered at open; reads are direct_io */
    case N_IN: {
        struct bfs_fs *fs = ctx->fs;
        pthread_mutex_lock(&fs->lock);
        /* fstat(2) of an open upload answers for its own file description,
         * also once the name has gone to another upload or it was ingested. */
        struct upload *u = h && h->kind == H_UPLOAD ? h->up : find_upload(fs, nd.rel);
        if (u) {
            fill_upload(st, u);
            rc = 0;
        } else if (nd.depth < MAX_DEPTH &&
                   (find_dir(fs, nd.rel) || implicit_dir(nd.rel, nd.depth))) {
            fill_dir(st, N_IN);
            rc = 0;
        } else if (nd.depth < MAX_DEPTH && !strchr(base_name(nd.rel), '.')) {
            /* Would be an implicit directory but is no valid table or period name:
             * refuse it here, so `cp x "incoming/bad name/p/u.avro"` fails with EINVAL. */
            rc = -EINVAL;
        } else {
            rc = -ENOENT;
        }
        pthread_mutex_unlock(&fs->lock);
        return rc;
    }
    case N_TABLE:
        rc = bfs_catalog_table_exists(ctx->cat, nd.table);
        if (rc == 0)
            fill_dir(st, N_TABLE);
        return rc;
    case N_PERIOD:
        rc = bfs_catalog_period_exists(ctx->cat, nd.table, nd.period);
        if (rc == 0)
            fill_dir(st, N_PERIOD);
        return rc;
    case N_DATASET: {
        uint64_t size;
        int64_t mtime;
        rc = bfs_reader_stat(&ctx->reader, nd.table, nd.period, nd.dataset, &size, &mtime);
        if (rc < 0)
            return rc;
        st->st_mode = S_IFREG | perm_of(ctx, N_DATASET);
        st->st_nlink = 1;
        st->st_size = (off_t)size;
        st->st_mtime = (time_t)mtime;
        st->st_ctime = (time_t)mtime;
        st->st_blocks = (blkcnt_t)((size + 511) / 512);
        return 0;
    }
    }
    return -ENOENT;
}

struct fill_ctx {
    void *buf;
    fuse_fill_dir_t filler;
    const char *suffix;
};

static int fill_name(void *arg, const char *name)
{
    struct fill_ctx *f = arg;
    char tmp[BFS_NAME_MAX + 16];
    if (f->suffix) {
        snprintf(tmp, sizeof tmp, "%s%s", name, f->suffix);
        name = tmp;
    }
    return f->filler(f->buf, name, NULL, 0, 0) ? -ENOMEM : 0;
}

/* Names directly below dir in incoming/ (dir "" = incoming/ itself), each once. */
static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names directly below dir in incoming/ (dir "" = incoming/ itself), each
 * once, sorted: collected under the lock, sorted and deduplicated outside it
 * (O(n log n) for n uploads and directories; at most BFS_VDIRS_MAX of the latter). */
static int fill_incoming(struct bfs_fs *fs, const char *dir, void *buf, fuse_fill_dir_t filler)
{
    size_t dl = strlen(dir);
    size_t cap = 0, n = 0;
    struct bfs_ctx *ctx = get_ctx();
    char **seen = NULL;
    int rc = 0;
    pthread_mutex_lock(&fs->lock);
    expire_held(ctx);
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        struct upload *u = fs->uploads;
        struct vdir *d = fs->dirs;
        for (;;) {
            const char *p;
            if (pass == 0) {
                if (!u)
                    break;
                p = u->path;
                u = u->next;
            } else {
                if (!d)
                    break;
                p = d->path;
                d = d->next;
            }
            if (!is_below(p, dir))
                continue;
            const char *child = p + (dl ? dl + 1 : 0);
            if (bfs_array_reserve(&seen, &cap, n + 1, sizeof *seen) < 0 ||
                !(seen[n] = strndup(child, strcspn(child, "/")))) {
                rc = -ENOMEM;
                break;
            }
            n++;
        }
    }
    pthread_mutex_unlock(&fs->lock);
    if (n)
        qsort(seen, n, sizeof *seen, cmp_names);
    for (size_t i = 0; i < n; i++) {
        bool dup = i > 0 && strcmp(seen[i], seen[i - 1]) == 0;
        if (rc == 0 && !dup && filler(buf, seen[i], NULL, 0, 0))
            rc = -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        free(seen[i]);
    free(seen);
    return rc;
}

static int bfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    (void)off;
    (void)fi;
    (void)flags;
    int rc = parse_path(path, &nd);
    if (rc < 0 || (rc = may_reach(ctx, &nd)) < 0 || (rc = may(ctx, nd.kind, BFS_MAY_READ)) < 0)
        return rc;
    filler(buf, ".", NULL, 0, 0);
    filler(buf, "..", NULL, 0, 0);
    struct fill_ctx f = {buf, filler, NULL};
    switch (nd.kind) {
    case N_ROOT:
        filler(buf, INCOMING, NULL, 0, 0);
        filler(buf, CTL, NULL, 0, 0);
        return bfs_catalog_list_tables(ctx->cat, fill_name, &f);
    case N_CTL:
        filler(buf, "stats", NULL, 0, 0);
        filler(buf, "errors", NULL, 0, 0);
        filler(buf, "metrics", NULL, 0, 0);
        filler(buf, "roll", NULL, 0, 0);
        filler(buf, "refresh", NULL, 0, 0);
        filler(buf, "compact", NULL, 0, 0);
        filler(buf, "erase", NULL, 0, 0);
        return 0;
    case N_INCOMING:
        return fill_incoming(ctx->fs, "", buf, filler);
    case N_IN:
        if (nd.depth >= MAX_DEPTH)
            return -ENOTDIR;
        return fill_incoming(ctx->fs, nd.rel, buf, filler);
    case N_TABLE:
        if ((rc = bfs_catalog_table_exists(ctx->cat, nd.table)) < 0)
            return rc;
        return bfs_catalog_list_periods(ctx->cat, nd.table, fill_name, &f);
    case N_PERIOD:
        if ((rc = bfs_catalog_period_exists(ctx->cat, nd.table, nd.period)) < 0)
            return rc;
        f.suffix = ".avro";
        return bfs_catalog_list_datasets(ctx->cat, nd.table, nd.period, fill_name, &f);
    default:
        return -ENOTDIR;
    }
}

/* ---- directories in incoming/ ---- */

static int bfs_mkdir(const char *path, mode_t mode)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    (void)mode;
    int rc = parse_path(path, &nd);
    if (rc < 0)
        return -EROFS;
    if (nd.kind != N_IN)
        return nd.kind == N_CTL ? -EEXIST : -EROFS;
    if (ctx->opt.read_only)
        return -EROFS; /* a replica takes no uploads */
    if (nd.depth >= MAX_DEPTH)
        return -EPERM; /* uploads are at most incoming/<table>/<period>/<file> */
    const char *b = base_name(nd.rel);
    if (b[0] == '\0')
        return -EINVAL;
    if ((rc = may_reach(ctx, &nd)) < 0 || (rc = may_change_incoming(ctx)) < 0)
        return rc;
    struct bfs_fs *fs = ctx->fs;
    pthread_mutex_lock(&fs->lock);
    if (find_dir(fs, nd.rel) || find_upload(fs, nd.rel)) {
        rc = -EEXIST;
    } else if (fs->n_dirs >= BFS_VDIRS_MAX) {
        rc = -EMLINK; /* directories made with mkdir live in memory: bounded */
    } else {
        struct vdir *d = calloc(1, sizeof *d);
        if (!d || !(d->path = strdup(nd.rel))) {
            free(d);
            rc = -ENOMEM;
        } else {
            d->next = fs->dirs;
            fs->dirs = d;
            fs->n_dirs++;
        }
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static int bfs_rmdir(const char *path)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    int rc = parse_path(path, &nd);
    if (rc < 0)
        return rc;
    if (nd.kind != N_IN)
        return -EROFS;
    if ((rc = may_reach(ctx, &nd)) < 0 || (rc = may_change_incoming(ctx)) < 0)
        return rc;
    struct bfs_fs *fs = ctx->fs;
    pthread_mutex_lock(&fs->lock);
    if (find_upload(fs, nd.rel)) {
        rc = -ENOTDIR;
    } else if (has_children(fs, nd.rel)) {
        rc = -ENOTEMPTY;
    } else {
        rc = implicit_dir(nd.rel, nd.depth) ? 0 : -ENOENT;
        for (struct vdir **pp = &fs->dirs; *pp; pp = &(*pp)->next)
            if (strcmp((*pp)->path, nd.rel) == 0) {
                struct vdir *d = *pp;
                *pp = d->next;
                free(d->path);
                free(d);
                fs->n_dirs--;
                rc = 0;
                break;
            }
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

/* ---- files ---- */

static struct handle *new_handle(enum handle_kind kind)
{
    struct handle *h = calloc(1, sizeof *h);
    if (h)
        h->kind = kind;
    return h;
}

/* Give h to the kernel as fi->fh. Call with fs->lock held. */
static void handle_attach_locked(struct bfs_fs *fs, struct handle *h, struct fuse_file_info *fi)
{
    h->prev = NULL;
    h->next = fs->handles;
    if (fs->handles)
        fs->handles->prev = h;
    fs->handles = h;
    fi->fh = (uint64_t)(uintptr_t)h;
}

static void handle_attach(struct bfs_fs *fs, struct handle *h, struct fuse_file_info *fi)
{
    pthread_mutex_lock(&fs->lock);
    handle_attach_locked(fs, h, fi);
    pthread_mutex_unlock(&fs->lock);
}

/* Call with fs->lock held. */
static void handle_detach(struct bfs_fs *fs, struct handle *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        fs->handles = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
}

static int render_ctl(struct bfs_ctx *ctx, enum node_kind kind, struct bfs_buf *out)
{
    if (kind == N_CTL_ERRORS)
        return bfs_errors_render(&ctx->errors, out);
    if (kind == N_CTL_METRICS)
        return bfs_metrics_collect(&ctx->stats, ctx->cat, out);
    struct bfs_catalog_counts c;
    int rc = bfs_catalog_counts(ctx->cat, &c);
    if (rc < 0)
        return rc;
    return bfs_stats_json(&ctx->stats, &c, out);
}

/* Open an upload in incoming/ for h. The drop box's rule: every open for
 * writing that creates or truncates starts an upload of its own (another
 * upload at that name keeps going and is ingested on its own, or, held,
 * is discarded); other opens join the upload at that name. */
static int open_upload(struct bfs_ctx *ctx, const struct node *nd, struct fuse_file_info *fi,
                       bool create, struct handle *h)
{
    struct bfs_fs *fs = ctx->fs;
    const struct fuse_context *fc = fuse_get_context();
    int acc = fi->flags & O_ACCMODE;
    bool writable = acc != O_RDONLY;
    int want = (acc == O_WRONLY ? 0 : BFS_MAY_READ) | (writable ? BFS_MAY_WRITE : 0);
    int rc = may_reach(ctx, nd);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&fs->lock);
    expire_held(ctx);
    struct upload *u = find_upload(fs, nd->rel);
    if (u && create && (fi->flags & O_EXCL)) {
        rc = -EEXIST;
    } else if (u && (rc = may_upload(u, want)) < 0) {
        /* another writer's upload: not to be read, joined or truncated */
    } else if (writable && !u && (rc = may_change_incoming(ctx)) < 0) {
        /* no new names here for this caller */
    } else if (writable && (!u || (fi->flags & O_TRUNC))) {
        /* A new name, a truncating open, or a name whose upload was ingested
         * between the kernel's lookup and this open (two writers of one
         * name): a new upload, as O_CREAT would have made a moment later. */
        if (nd->depth > MAX_DEPTH)
            rc = -ENOENT;
        else if ((rc = check_new_name(ctx, nd->rel)) == 0) {
            if (u)
                unbind_name(fs, nd->rel);
            u = new_upload(ctx, nd->rel, fc->uid, fc->gid, &rc);
        }
    } else if (!u) {
        rc = -ENOENT;
    }
    if (rc == 0) {
        h->up = u;
        h->opener = fc->pid;
        bfs_up_open(&u->st, &h->desc, writable);
        sync_upload(fs, u);
        handle_attach_locked(fs, h, fi);
        fi->direct_io = 1; /* the spool is the truth; no page cache for uploads */
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static int bfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    int rc = parse_path(path, &nd);
    if (rc < 0)
        return -EROFS;
    if (nd.kind != N_IN)
        return is_action(nd.kind) ? -EEXIST : is_incoming(nd.kind) ? -EISDIR : -EROFS;
    if (ctx->opt.read_only)
        return -EROFS; /* a replica takes no uploads */
    struct handle *h = new_handle(H_UPLOAD);
    if (!h)
        return -ENOMEM;
    (void)mode; /* an upload is UPLOAD_MODE, whatever its writer asks */
    rc = open_upload(ctx, &nd, fi, true, h);
    if (rc < 0)
        free(h);
    return rc;
}

static int bfs_open(const char *path, struct fuse_file_info *fi)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    int rc = parse_path(path, &nd);
    if (rc < 0)
        return rc;
    int acc = fi->flags & O_ACCMODE;
    struct handle *h = NULL;
    switch (nd.kind) {
    case N_DATASET: {
        if (acc != O_RDONLY)
            return -EROFS;
        if ((rc = may_reach(ctx, &nd)) < 0 || (rc = may(ctx, nd.kind, BFS_MAY_READ)) < 0)
            return rc;
        h = new_handle(H_READER);
        if (!h)
            return -ENOMEM;
        rc = bfs_reader_open(&ctx->reader, nd.table, nd.period, nd.dataset, &h->rd);
        /* No page cache: a file that grows while open would otherwise read
         * as zeros where the kernel zero-filled a page past an older size
         * (docs/design.md, "The data tree"). */
        fi->direct_io = 1;
        break;
    }
    case N_CTL_STATS:
    case N_CTL_ERRORS:
    case N_CTL_METRICS:
        if (acc != O_RDONLY)
            return -EACCES;
        if ((rc = may_reach(ctx, &nd)) < 0 || (rc = may(ctx, nd.kind, BFS_MAY_READ)) < 0)
            return rc;
        h = new_handle(H_TEXT);
        if (!h)
            return -ENOMEM;
        rc = render_ctl(ctx, nd.kind, &h->text);
        fi->direct_io = 1;
        break;
    case N_CTL_ROLL:
    case N_CTL_REFRESH:
    case N_CTL_COMPACT:
    case N_CTL_ERASE:
        if (acc == O_RDONLY)
            return -EACCES;
        if (nd.kind != N_CTL_REFRESH && ctx->opt.read_only)
            return -EROFS; /* a replica never rolls, compacts or erases */
        if ((rc = may_reach(ctx, &nd)) < 0 || (rc = may(ctx, nd.kind, BFS_MAY_WRITE)) < 0)
            return rc;
        h = new_handle(nd.kind == N_CTL_ROLL      ? H_ROLL
                       : nd.kind == N_CTL_REFRESH ? H_REFRESH
                       : nd.kind == N_CTL_COMPACT ? H_COMPACT
                                                  : H_ERASE);
        if (!h)
            return -ENOMEM;
        fi->direct_io = 1;
        break;
    case N_IN:
        if (ctx->opt.read_only && (acc != O_RDONLY || (fi->flags & O_TRUNC)))
            return -EROFS; /* a replica takes no uploads */
        h = new_handle(H_UPLOAD);
        if (!h)
            return -ENOMEM;
        rc = open_upload(ctx, &nd, fi, false, h);
        if (rc < 0)
            free(h);
        return rc; /* attached by open_upload */
    default:
        return -EISDIR;
    }
    if (rc < 0) {
        bfs_buf_free(&h->text);
        free(h);
        return rc;
    }
    handle_attach(ctx->fs, h, fi);
    return 0;
}

static int bfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    struct handle *h = get_handle(fi);
    (void)path;
    switch (h->kind) {
    case H_READER:
        return (int)bfs_reader_read(h->rd, buf, size, (uint64_t)off);
    case H_TEXT:
        if ((uint64_t)off >= h->text.len)
            return 0;
        if (size > h->text.len - (size_t)off)
            size = h->text.len - (size_t)off;
        memcpy(buf, h->text.data + off, size);
        return (int)size;
    case H_UPLOAD:
        return (int)bfs_spool_read(h->up->bytes, buf, size, (uint64_t)off);
    case H_ROLL:
    case H_REFRESH:
    case H_COMPACT:
    case H_ERASE:
        return -EBADF;
    }
    return -EBADF;
}

/* Record a rejection that a write or truncate just decided (u is DISCARDED
 * with its errno in result): log it and count it once. */
static void report_refusal(struct bfs_ctx *ctx, const char *rel, int err)
{
    char what[PATH_MAX], reason[160];
    snprintf(what, sizeof what, INCOMING "/%s", rel);
    if (err == -EFBIG)
        snprintf(reason, sizeof reason, "upload larger than max_upload (%llu bytes)",
                 (unsigned long long)ctx->opt.max_upload);
    else
        snprintf(reason, sizeof reason, "cannot spool the upload in the state directory: %s",
                 strerror(-err));
    bfs_ingest_reject(&ctx->ingest, what, reason);
}

/* The end of a write or truncate that a transition refused or rejected (rc
 * from bfs_up_*_begin/end, != 0): fs->lock held on entry, released. */
static int refuse_unlock(struct bfs_ctx *ctx, struct upload *u, int rc, enum bfs_up_action act,
                         size_t accepted)
{
    struct bfs_fs *fs = ctx->fs;
    char *rel = NULL;
    if (act == BFS_UP_REJECT)
        rel = strdup(u->path);
    sync_upload(fs, u);
    pthread_mutex_unlock(&fs->lock);
    if (act == BFS_UP_REJECT)
        report_refusal(ctx, rel ? rel : "?", rc);
    free(rel);
    return rc == 1 ? (int)accepted : rc; /* 1: a discarded upload takes and drops it */
}

/* Held files of one uid beyond held_bytes_max: the write that crosses it
 * fails with EDQUOT and the held file is discarded. fs->lock held. */
static bool over_held_bytes(struct bfs_ctx *ctx, const struct upload *u, uint64_t end)
{
    if (!u->st.held_name || !u->st.named || end <= u->st.size)
        return false;
    const struct held_quota *q = quota_of(ctx->fs, u->uid, false);
    return q && q->bytes - u->charged + end > ctx->opt.held_bytes_max;
}

/* ---- .battlefs/compact, .battlefs/erase and rm of a dataset ---- */

/* Record a failed control request: log and .battlefs/errors. */
static void control_failed(struct bfs_ctx *ctx, const char *what, const char *why)
{
    bfs_error("%s: %s", what, why);
    if (bfs_errors_add(&ctx->errors, what, why) < 0)
        bfs_error("cannot record the error: out of memory");
}

/* Erase dataset in (table, period), or everywhere (table NULL): the store's
 * log holds the erasure when this returns 0; -EIO (reason recorded),
 * -EROFS, -EINVAL. */
static int erase_dataset(struct bfs_ctx *ctx, const char *dataset, const char *table,
                         const char *period)
{
    char what[3 * BFS_NAME_MAX + 64];
    if (table)
        snprintf(what, sizeof what, "erase %s/%s/%s", table, period, dataset);
    else
        snprintf(what, sizeof what, ".battlefs/erase %s", dataset);
    if (!bfs_name_valid(dataset, strlen(dataset))) {
        control_failed(ctx, what, "not a dataset name");
        return -EINVAL;
    }
    if (!ctx->ledger)
        return -EIO;
    struct bfs_err err;
    int64_t seq = 0;
    int rc = bfs_ledger_erase(ctx->ledger, dataset, table, period, &seq, &err);
    if (rc < 0) {
        control_failed(ctx, what, err.msg[0] ? err.msg : strerror(-rc));
        return rc == -EROFS ? -EROFS : -EIO;
    }
    char note[256];
    snprintf(note, sizeof note,
             "erased at log position %lld: hidden now; its bytes leave the store within "
             "erase_within (%llu s)",
             (long long)seq, (unsigned long long)ctx->opt.erase_within);
    bfs_info("%s: %s", what, note);
    if (bfs_errors_add(&ctx->errors, what, note) < 0)
        bfs_error("cannot record the erasure: out of memory");
    bfs_compactor_kick(ctx->compactor);
    return 0;
}

/* Each line of a write to .battlefs/compact ("<table>/<period>") or
 * .battlefs/erase ("<dataset>"), done in turn; a write holds whole lines.
 * 0 when every line succeeded, else the first failure's errno. */
static int control_lines(struct bfs_ctx *ctx, enum handle_kind kind, const char *buf, size_t size)
{
    int first = 0;
    size_t i = 0;
    while (i < size) {
        size_t j = i;
        while (j < size && buf[j] != '\n')
            j++;
        char line[2 * BFS_NAME_MAX + 2];
        size_t n = j - i;
        while (n > 0 && (buf[i + n - 1] == ' ' || buf[i + n - 1] == '\r' || buf[i + n - 1] == '\t'))
            n--;
        size_t k = 0;
        while (k < n && (buf[i + k] == ' ' || buf[i + k] == '\t'))
            k++;
        int rc = 0;
        if (n - k == 0) {
            i = j + 1;
            continue;
        }
        if (n - k >= sizeof line) {
            control_failed(ctx, kind == H_COMPACT ? ".battlefs/compact" : ".battlefs/erase",
                           "line too long");
            rc = -EINVAL;
        } else {
            memcpy(line, buf + i + k, n - k);
            line[n - k] = '\0';
            if (kind == H_ERASE) {
                rc = erase_dataset(ctx, line, NULL, NULL);
            } else {
                char *slash = strchr(line, '/');
                char what[2 * BFS_NAME_MAX + 32];
                snprintf(what, sizeof what, ".battlefs/compact %s", line);
                if (!slash || !bfs_name_valid(line, (size_t)(slash - line)) ||
                    !bfs_name_valid(slash + 1, strlen(slash + 1))) {
                    control_failed(ctx, what, "write <table>/<period>");
                    rc = -EINVAL;
                } else if (!ctx->compactor) {
                    rc = -EROFS;
                } else {
                    *slash = '\0';
                    struct bfs_err err = {0};
                    rc = bfs_catalog_period_exists(ctx->cat, line, slash + 1);
                    if (rc == -ENOENT)
                        control_failed(ctx, what, "no such table and period");
                    else if (rc == 0 && (rc = bfs_compactor_compact_now(ctx->compactor, line,
                                                                        slash + 1, &err)) < 0)
                        rc = rc == -EBUSY ? -EBUSY : -EIO; /* the reason is recorded */
                }
            }
        }
        if (rc < 0 && first == 0)
            first = rc;
        i = j + 1;
    }
    return first;
}

static int bfs_write(const char *path, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct bfs_ctx *ctx = get_ctx();
    struct handle *h = get_handle(fi);
    (void)path;
    if (h->kind == H_ROLL) {
        int rc = ctx->roller ? bfs_roller_roll_now(ctx->roller) : -EIO;
        return rc < 0 ? -EIO : (int)size;
    }
    if (h->kind == H_REFRESH) {
        struct bfs_err err;
        int rc = ctx->ledger ? bfs_ledger_refresh(ctx->ledger, &err) : -EIO;
        if (rc < 0) {
            bfs_error("%s", ctx->ledger ? err.msg : "refresh: no store log");
            if (ctx->ledger && bfs_errors_add(&ctx->errors, ".battlefs/refresh", err.msg) < 0)
                bfs_error("cannot record the refresh error: out of memory");
        }
        return rc < 0 ? -EIO : (int)size;
    }
    if (h->kind == H_COMPACT || h->kind == H_ERASE) {
        int rc = control_lines(ctx, h->kind, buf, size);
        return rc < 0 ? rc : (int)size;
    }
    if (h->kind != H_UPLOAD)
        return -EBADF;
    struct bfs_fs *fs = ctx->fs;
    struct upload *u = h->up;
    uint64_t end = (uint64_t)off + size;
    enum bfs_up_action act;
    pthread_mutex_lock(&fs->lock);
    int rc = bfs_up_write_begin(&u->st, end, ctx->opt.max_upload, &act);
    if (rc == 0 && over_held_bytes(ctx, u, end)) {
        char what[PATH_MAX];
        snprintf(what, sizeof what, INCOMING "/%s", u->path);
        settle(fs, u, bfs_up_discard(&u->st, -EDQUOT));
        pthread_mutex_unlock(&fs->lock);
        bfs_ingest_reject(&ctx->ingest, what,
                          "held files of this uid over their byte bound: discarded");
        return -EDQUOT;
    }
    if (rc != 0)
        return refuse_unlock(ctx, u, rc, act, size);
    /* The copy into the spool runs unlocked, so writers of different uploads
     * copy in parallel. u and its bytes live while this handle is open. */
    pthread_mutex_unlock(&fs->lock);
    ssize_t n = bfs_spool_write(u->bytes, buf, size, (uint64_t)off);
    int e = n < 0 ? (int)n : 0;
    pthread_mutex_lock(&fs->lock);
    rc = bfs_up_write_end(&u->st, &h->desc, n < 0 ? end : (uint64_t)off + (uint64_t)n, e, &act);
    if (rc != 0)
        return refuse_unlock(ctx, u, rc, act, size);
    clock_gettime(CLOCK_REALTIME, &u->mtime);
    sync_upload(fs, u);
    pthread_mutex_unlock(&fs->lock);
    return (int)n;
}

/* flush runs at every close(2); its result is close's result (upload.h says
 * when it ingests). A flush that meets an ingest in progress waits for it. */
static int bfs_flush(const char *path, struct fuse_file_info *fi)
{
    struct bfs_ctx *ctx = get_ctx();
    struct handle *h = get_handle(fi);
    (void)path;
    if (h->kind != H_UPLOAD)
        return 0;
    struct bfs_fs *fs = ctx->fs;
    struct upload *u = h->up;
    pid_t pid = fuse_get_context()->pid;
    bool by_opener = same_process(pid, h->opener);
    int rc;
    pthread_mutex_lock(&fs->lock);
    enum bfs_up_action act = bfs_up_flush(&u->st, &h->desc, by_opener, &rc);
    if (act == BFS_UP_INGEST) {
        bool freed; /* never: this handle is still open */
        rc = run_ingest(ctx, u, &freed);
    } else if (act == BFS_UP_WAIT) {
        rc = wait_ingest(fs, u);
    } else {
        sync_upload(fs, u);
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static int bfs_release(const char *path, struct fuse_file_info *fi)
{
    struct bfs_ctx *ctx = get_ctx();
    struct handle *h = get_handle(fi);
    struct bfs_fs *fs = ctx->fs;
    (void)path;
    struct upload *to_free = NULL;
    pthread_mutex_lock(&fs->lock);
    handle_detach(fs, h);
    if (h->kind == H_UPLOAD) {
        struct upload *u = h->up;
        enum bfs_up_action act = bfs_up_release(&u->st, &h->desc, time(NULL));
        if (act == BFS_UP_INGEST) {
            bool freed;
            run_ingest(ctx, u, &freed); /* nobody hears this result: it is logged */
        } else {
            sync_upload(fs, u);
            if (act == BFS_UP_FREE)
                to_free = u;
        }
    }
    pthread_mutex_unlock(&fs->lock);
    /* Nothing else can reach a freed upload, so it is freed unlocked
     * (its memory given back, its spool file closed). */
    if (to_free)
        free_upload(to_free);
    if (h->kind == H_READER)
        bfs_reader_close(h->rd);
    bfs_buf_free(&h->text);
    free(h);
    return 0;
}

static int bfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    struct handle *h = get_handle(fi);
    (void)path;
    return h->kind == H_UPLOAD ? bfs_spool_sync(h->up->bytes, datasync != 0) : 0;
}

static int bfs_unlink(const char *path)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    int rc = parse_path(path, &nd);
    if (rc < 0)
        return rc;
    if (nd.kind == N_DATASET) {
        /* rm of a dataset file erases it in its partition: its owner (the
         * tree's) or root; a replica cannot. */
        if ((rc = may_reach(ctx, &nd)) < 0)
            return rc;
        if (ctx->opt.read_only)
            return -EROFS;
        uid_t uid = fuse_get_context()->uid;
        if (uid != 0 && uid != ctx->opt.uid)
            return -EACCES;
        uint64_t size;
        int64_t mtime;
        rc = bfs_catalog_dataset_stat(ctx->cat, nd.table, nd.period, nd.dataset, &size, &mtime);
        if (rc < 0 && rc != -EAGAIN)
            return rc == -ENOENT ? -ENOENT : -EIO;
        return erase_dataset(ctx, nd.dataset, nd.table, nd.period);
    }
    if (nd.kind != N_IN)
        return is_data_tree(nd.kind) ? -EROFS : -EACCES;
    if ((rc = may_reach(ctx, &nd)) < 0 || (rc = may_change_incoming(ctx)) < 0)
        return rc;
    struct bfs_fs *fs = ctx->fs;
    pthread_mutex_lock(&fs->lock);
    struct upload *u = find_upload(fs, nd.rel);
    if (!u)
        rc = -ENOENT;
    else if ((rc = may_remove(ctx, u)) == 0)
        settle(fs, u, bfs_up_discard(&u->st, 0)); /* like a file unlinked while open */
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static int bfs_rename(const char *from, const char *to, unsigned int flags)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node a, b;
    int rc = parse_path(from, &a);
    if (rc < 0)
        return rc;
    if (parse_path(to, &b) < 0)
        return a.kind == N_IN ? -ENOENT : -EROFS;
    if (a.kind != N_IN || b.kind != N_IN) {
        if (is_data_tree(a.kind) && is_data_tree(b.kind))
            return -EROFS;
        if (is_incoming(a.kind) != is_incoming(b.kind))
            return -EXDEV;
        return -EACCES;
    }
    if (flags & RENAME_EXCHANGE)
        return -EINVAL;
    if (b.depth > MAX_DEPTH)
        return -ENOENT;
    if ((rc = may_reach(ctx, &a)) < 0 || (rc = may_reach(ctx, &b)) < 0 ||
        (rc = may_change_incoming(ctx)) < 0)
        return rc;
    struct bfs_fs *fs = ctx->fs;
    pthread_mutex_lock(&fs->lock);
    struct upload *u = find_upload(fs, a.rel);
    struct upload *v = find_upload(fs, b.rel);
    char *np = NULL;
    if (!u) {
        /* A directory: renaming it would move its uploads' identity; let mv copy. */
        rc = (find_dir(fs, a.rel) || implicit_dir(a.rel, a.depth)) ? -EXDEV : -ENOENT;
    } else if (v && (flags & RENAME_NOREPLACE)) {
        rc = -EEXIST;
    } else if ((rc = may_remove(ctx, u)) < 0 || (v && (rc = may_remove(ctx, v)) < 0)) {
        /* incoming/ is sticky: only a writer moves or replaces its uploads */
    } else if (u != v && (rc = check_new_name(ctx, b.rel)) == 0) {
        if (!(np = strdup(b.rel))) {
            rc = -ENOMEM;
        } else {
            if (v)
                unbind_name(fs, b.rel);
            free(u->path);
            u->path = np;
            clock_gettime(CLOCK_REALTIME, &u->mtime);
            enum bfs_up_action act = bfs_up_rename(&u->st, is_held_name(u->path));
            if (act == BFS_UP_INGEST) {
                bool freed;
                rc = run_ingest(ctx, u, &freed);
            } else {
                sync_upload(fs, u);
            }
        }
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static int bfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    int rc = parse_path(path, &nd);
    struct handle *h = fi ? get_handle(fi) : NULL;
    if (rc < 0 && !(h && h->kind == H_UPLOAD))
        return rc;
    if (h && h->kind == H_UPLOAD)
        nd.kind = N_IN; /* ftruncate(2): its own upload, whatever its name */
    if (is_action(nd.kind))
        return 0; /* `echo > roll` truncates first */
    if (nd.kind != N_IN)
        return is_data_tree(nd.kind) ? -EROFS : -EACCES;
    struct bfs_fs *fs = ctx->fs;
    pthread_mutex_lock(&fs->lock);
    /* ftruncate(2) acts on its own file description's upload. */
    struct upload *u = h && h->kind == H_UPLOAD ? h->up : find_upload(fs, nd.rel);
    enum bfs_up_action act = BFS_UP_NONE;
    if (!u)
        rc = (find_dir(fs, nd.rel) || implicit_dir(nd.rel, nd.depth)) ? -EISDIR : -ENOENT;
    else if (!h && (rc = may_upload(u, BFS_MAY_WRITE)) < 0)
        ; /* truncate(2) of another writer's upload */
    else if ((rc = bfs_up_write_begin(&u->st, (uint64_t)size, ctx->opt.max_upload, &act)) != 0)
        return refuse_unlock(ctx, u, rc, act, 0);
    else if (over_held_bytes(ctx, u, (uint64_t)size))
        rc = -EDQUOT;
    else if ((rc = bfs_spool_truncate(u->bytes, (uint64_t)size)) < 0)
        ; /* the spool's errno */
    else {
        bfs_up_truncated(&u->st, (uint64_t)size);
        sync_upload(fs, u);
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

/* chmod, chown and utimens: accepted inside incoming/ (cp -p, rsync -a and mv
 * set them), refused in the read-only data tree. */
static int setattr_common(const char *path, const struct timespec *tv, struct fuse_file_info *fi)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    struct handle *h = fi ? get_handle(fi) : NULL;
    int rc = parse_path(path, &nd);
    if (rc < 0 && !(h && h->kind == H_UPLOAD))
        return rc;
    if (rc == 0 && !is_incoming(nd.kind))
        return is_data_tree(nd.kind) || nd.kind == N_ROOT ? -EROFS : -EACCES;
    if (rc == 0 && (rc = may_reach(ctx, &nd)) < 0)
        return rc;
    uid_t uid = fuse_get_context()->uid;
    struct bfs_fs *fs = ctx->fs;
    pthread_mutex_lock(&fs->lock);
    struct upload *u = h && h->kind == H_UPLOAD ? h->up : find_upload(fs, nd.rel);
    uid_t owner = u ? u->uid : ctx->opt.uid; /* an upload, or a directory of incoming/ */
    if (uid != 0 && uid != owner) {
        rc = -EPERM;
    } else if (u && tv && tv[1].tv_nsec != UTIME_OMIT) {
        if (tv[1].tv_nsec == UTIME_NOW)
            clock_gettime(CLOCK_REALTIME, &u->mtime);
        else
            u->mtime = tv[1];
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

/* access(2): the same checks as the operations make. */
static int bfs_access(const char *path, int mask)
{
    struct bfs_ctx *ctx = get_ctx();
    struct node nd;
    int rc = parse_path(path, &nd);
    if (rc < 0 || (rc = may_reach(ctx, &nd)) < 0 || mask == F_OK)
        return rc;
    if (nd.kind == N_IN) {
        struct bfs_fs *fs = ctx->fs;
        pthread_mutex_lock(&fs->lock);
        struct upload *u = find_upload(fs, nd.rel);
        rc = u ? may_upload(u, mask) : may(ctx, N_IN, mask);
        pthread_mutex_unlock(&fs->lock);
        return rc;
    }
    if ((mask & W_OK) && nd.kind != N_INCOMING && !is_action(nd.kind))
        return -EROFS;
    if ((mask & W_OK) && ctx->opt.read_only && nd.kind != N_CTL_REFRESH)
        return -EROFS;
    return may(ctx, nd.kind, mask);
}

static int bfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)mode;
    return setattr_common(path, NULL, fi);
}

static int bfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    (void)uid;
    (void)gid;
    return setattr_common(path, NULL, fi);
}

static int bfs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    return setattr_common(path, tv, fi);
}

static int bfs_link(const char *from, const char *to)
{
    (void)from;
    (void)to;
    return -EPERM;
}

static int bfs_symlink(const char *target, const char *path)
{
    (void)target;
    (void)path;
    return -EPERM;
}

static int bfs_mknod(const char *path, mode_t mode, dev_t dev)
{
    (void)path;
    (void)mode;
    (void)dev;
    return -EPERM;
}

static int bfs_statfs(const char *path, struct statvfs *st)
{
    struct bfs_ctx *ctx = get_ctx();
    (void)path;
    /* Free space is the state directory's: that is where uploads go. */
    return statvfs(ctx->opt.state_dir, st) < 0 ? -errno : 0;
}

static void *bfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    /* open(O_TRUNC) arrives as one OPEN with O_TRUNC, not as a SETATTR of the
     * name (which would truncate another writer's upload) and an OPEN. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    /* Writes of at most 128 KiB: libfuse gives each worker thread a receive
     * buffer of max_write bytes, which a large write fills, so 1 MiB (its
     * default) is up to 32 MiB of buffers with 32 workers; uploads are a
     * few KB to 64 KB, one write either way (docs/design.md, "Ingest"). */
    if (conn->max_write > BFS_MAX_WRITE)
        conn->max_write = BFS_MAX_WRITE;
    cfg->use_ino = 0;
    /* unlink and rename onto an open upload reach battlefs (upload.c decides),
     * instead of libfuse renaming it to a held .fuse_hidden* name. An open
     * file whose name is gone then gets a NULL path in the operations with
     * a file handle (getattr and truncate answer from the handle; parse_path
     * refuses NULL). */
    cfg->hard_remove = 1;
    /* Names are cached for a second: an upload is four lookups (incoming,
     * table, period, name) before its create, and directories never go away
     * behind the kernel's back. What can (an upload ingested at close, an empty
     * upload discarded) is handled where the stale name is used: getattr says
     * ENOENT, O_EXCL and rename targets make the kernel look up again, and a
     * writable open of a vanished upload starts a new one (bfs_open). Negative
     * lookups and attributes are never cached: new dataset files and their
     * growing sizes show at once. */
    cfg->entry_timeout = 1.0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    /* Dataset files are opened with direct_io (bfs_open): no page cache. */
    return get_ctx();
}

static const struct fuse_operations bfs_ops = {
    .init = bfs_init,
    .getattr = bfs_getattr,
    .readdir = bfs_readdir,
    .mkdir = bfs_mkdir,
    .rmdir = bfs_rmdir,
    .create = bfs_create,
    .open = bfs_open,
    .read = bfs_read,
    .write = bfs_write,
    .flush = bfs_flush,
    .release = bfs_release,
    .fsync = bfs_fsync,
    .unlink = bfs_unlink,
    .rename = bfs_rename,
    .truncate = bfs_truncate,
    .chmod = bfs_chmod,
    .chown = bfs_chown,
    .utimens = bfs_utimens,
    .link = bfs_link,
    .symlink = bfs_symlink,
    .mknod = bfs_mknod,
    .statfs = bfs_statfs,
    .access = bfs_access,
};

const struct fuse_operations *bfs_fs_operations(void)
{
    return &bfs_ops;
}

int bfs_fs_init(struct bfs_ctx *ctx)
{
    struct bfs_fs *fs = calloc(1, sizeof *fs);
    if (!fs)
        return -ENOMEM;
    pthread_mutex_init(&fs->lock, NULL);
    pthread_cond_init(&fs->ingested, NULL);
    ctx->fs = fs;
    clock_gettime(CLOCK_REALTIME, &fs->mount_time);
    bool named_spool = false;
#ifdef BFS_FAULT_INJECTION
    /* -o fault=spool:named: spool files as on a file system without O_TMPFILE;
     * -o fault=ingest:pause: every ingest waits (see fault_pause_ingest). */
    const char *f = ctx->opt.fault;
    if (f && (strncmp(f, "spool:", 6) == 0 || strncmp(f, "ingest:", 7) == 0)) {
        if (strcmp(f, "spool:named") == 0) {
            named_spool = true;
        } else if (strcmp(f, "ingest:pause") == 0) {
            fs->pause_ingest = 1;
        } else {
            bfs_error("unknown -o fault=%s (spool:named, ingest:pause)", f);
            return -EINVAL;
        }
    }
#endif
    /* Uploads a previous daemon never closed were never acknowledged: the
     * spool drops their files. */
    return bfs_spool_open(ctx->spool_dir, ctx->opt.upload_memory, named_spool, &ctx->stats,
                          &fs->spool);
}

void bfs_fs_destroy(struct bfs_ctx *ctx)
{
    struct bfs_fs *fs = ctx->fs;
    if (!fs)
        return;
    /* Files still open when the loop ended (a lazy unmount, a signal): the
     * kernel will not release them. Their uploads were never acknowledged. */
    while (fs->handles) {
        struct handle *h = fs->handles;
        handle_detach(fs, h);
        if (h->kind == H_READER)
            bfs_reader_close(h->rd);
        if (h->kind == H_UPLOAD && --h->up->st.opens == 0 && !h->up->listed)
            free_upload(h->up); /* listed ones are freed below */
        bfs_buf_free(&h->text);
        free(h);
    }
    while (fs->uploads) {
        struct upload *u = fs->uploads;
        fs->uploads = u->next;
        free_upload(u);
    }
    while (fs->dirs) {
        struct vdir *d = fs->dirs;
        fs->dirs = d->next;
        free(d->path);
        free(d);
    }
    free(fs->quota);
    bfs_spool_close(fs->spool);
    pthread_cond_destroy(&fs->ingested);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
    ctx->fs = NULL;
}
