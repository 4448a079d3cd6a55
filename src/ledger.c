/* ledger.c - the store's log, the node lease, and the refresh (ledger.h).
 *
 * The log. Entry n is "_battlefs/log/<n, 20 digits>.json", a small JSON object
 * (docs/format.md, "The log"):
 *   {"battlefs_log": 1, "type": "roll", "node": N, "epoch": E, "roll_id": R,
 *    "manifest": KEY, "size": S, "sha256": HEX, "committed_at": T}
 *   {"battlefs_log": 1, "type": "fence", "node": N, "epoch": E, "at": T}
 * A writer puts entry pos + 1 create-only (If-None-Match: *) after applying
 * entries 1..pos. If another writer took that position, the put fails with
 * -EEXIST (or succeeds if the bytes there are this very entry: a retry whose
 * first attempt landed); the writer then applies the new entry and tries the
 * next position. An entry is only ever put by a writer that has read the one
 * before it, so the log has no gaps and a listing always sees a prefix of it
 * (S3 and the file store are strongly consistent). Every mount applies the
 * same entries in the same order: archived_files ids, hence the order of cold
 * segments in a dataset file, follow the log, and a new entry only ever adds
 * at the end (the file stays append-only for readers).
 *
 * Fencing. A node name is held by a lease object, "_battlefs/nodes/<node>/lease"
 *   {"battlefs_lease": 1, "node": N, "holder": STATE_ID, "host": H, "pid": P,
 *    "epoch": E, "expires_at": T, "released": B}
 * written with compare-and-swap (If-Match) only. A mount takes it when it is
 * absent, released, expired, or held by its own state directory (the previous
 * process on this state directory is gone: main.c holds a lock on it), with
 * epoch + 1. When it takes over a lease that was not released, it first puts
 * a fence entry {node, epoch} into the log. Every mount applies the rule:
 * a roll entry of node N whose epoch is lower than an epoch of N seen earlier
 * in the log is ignored. So a cut-off holder that comes back can put its
 * entry, but after the fence, and nobody applies it; it sees the fence (or
 * its failed lease renewal) and stops committing: its rolls fail loudly and
 * its rows stay in its buffer. The lease expiry (ttl) only decides when
 * another mount may take the name; the log decides what counts.
 *
 * Refresh. Lists "_battlefs/log/" after the last applied entry (start-after,
 * pages of LIST_PAGE keys), and applies each entry: a roll entry's manifest is
 * fetched (checked against the entry's size and SHA-256), read once to create
 * the partitions this mount does not have (from the header of the first
 * archive, so the header bytes are the writer's), and once more to insert its
 * rows in one catalog transaction (bfs_catalog_apply_*). The writer's own roll
 * is applied from its local manifest file: that is its local commit. An entry
 * of a roll this catalog committed before the log existed (adopt.h) stamps
 * the rows it has instead of inserting them (bfs_catalog_apply_begin).
 *
 * Threads and locks. mu serialises the log: refresh, commit, fence, and the
 * acquire. lease_mu guards the lease state (etag, epoch, valid_until) and is
 * taken under mu (commit checks the lease) or alone (renewal): mu -> lease_mu.
 * tmu/tcv only wake and stop the two threads (renewal every ttl/3, refresh
 * every refresh_s) and are never held with another lock. mu is held across
 * store requests and catalog transactions (mu -> the catalog's wmu).
 */
#include "battlefs/ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/cache.h"
#include "battlefs/catalog.h"
#include "battlefs/compact.h"
#include "battlefs/errors.h"
#include "battlefs/fsutil.h"
#include "battlefs/layout.h"
#include "battlefs/log.h"
#include "battlefs/manifest.h"
#include "battlefs/names.h"
#include "battlefs/progress.h"
#include "battlefs/ocf.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"

#define LOG_PREFIX      BFS_LEDGER_PREFIX "log/"
#define LOG_DIGITS      20
#define LIST_PAGE       1000        /* log keys listed per request */
#define ENTRY_MAX       (64u << 10) /* largest log entry or lease read */
#define COMMIT_ATTEMPTS 64          /* positions tried before a commit gives up */
#define ACQUIRE_TRIES   4
#define SCHEMAS_KNOWN   256        /* fingerprints this mount knows are in the store */
#define FETCH_CHUNK     (4u << 20) /* a manifest is fetched in pieces of this */
#define CKPT_PREFIX     BFS_LEDGER_PREFIX "checkpoints/"

struct bfs_ledger {
    struct bfs_ledger_deps d;
    char node[BFS_NODE_MAX + 1];
    char state_id[BFS_STATE_ID_MAX];
    char *work_dir;

    pthread_mutex_t mu; /* the log: refresh, commit, fence */
    int need_fence;     /* took over an unreleased lease: fence before committing */
    const struct bfs_ledger_roll *local; /* under mu: the roll being committed */

    pthread_mutex_t lease_mu; /* the lease state below */
    int have_lease;
    int64_t epoch;
    char etag[BFS_STORE_ETAG_MAX];
    struct timespec valid_until; /* CLOCK_MONOTONIC: renewed before it */

    pthread_mutex_t tmu; /* the threads' wake-ups and stop */
    pthread_cond_t tcv;
    int stop;
    pthread_t renew_thread, refresh_thread;
    int started; /* under mu: bfs_ledger_start ran (the mount serves) */
    int renew_started, refresh_started;

    pthread_mutex_t smu; /* schemas known to be in the store */
    char (*schemas)[17];
    size_t n_schemas;
};

/* ---- small helpers ---- */

static struct timespec mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

static int ts_before(struct timespec a, struct timespec b)
{
    return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

static uint64_t ttl_of(const struct bfs_ledger *l)
{
    return l->d.lease_ttl_s ? l->d.lease_ttl_s : BFS_LEDGER_LEASE_TTL;
}

static void log_key(int64_t seq, char out[64])
{
    snprintf(out, 64, LOG_PREFIX "%0*" PRId64 ".json", LOG_DIGITS, seq);
}

/* The LOG_DIGITS decimal digits at s as a position (>= 1), or -1. */
static int64_t position_of(const char *s)
{
    int64_t v = 0;
    for (size_t i = 0; i < LOG_DIGITS; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 ? v : -1;
}

/* The position of a log key, or -1 if key is not one. */
static int64_t log_seq_of(const char *key)
{
    size_t plen = strlen(LOG_PREFIX);
    if (strncmp(key, LOG_PREFIX, plen) != 0 || strlen(key) != plen + LOG_DIGITS + 5 ||
        strcmp(key + plen + LOG_DIGITS, ".json") != 0)
        return -1;
    return position_of(key + plen);
}

int bfs_ledger_manifest_key(const char *node, const char *roll_id, char *out, size_t cap)
{
    int n = snprintf(out, cap, BFS_LEDGER_PREFIX "manifests/%s/%s.avro", node, roll_id);
    return n > 0 && (size_t)n < cap ? 0 : -ENAMETOOLONG;
}

/* Put a small object from memory through a file in the work directory
 * (ledger-<tid>.tmp: see is_ledger_tmp). */
static int put_small(struct bfs_ledger *l, const char *key, const char *data, size_t len,
                     enum bfs_put_cond cond, const char *if_match, int race_ok, char *etag_out,
                     struct bfs_err *err)
{
    const struct bfs_put_src how = {
        .cond = cond,
        .if_match = if_match,
        .race_ok = race_ok,
        .etag_out = etag_out,
    };
    return bfs_store_put_bytes(l->d.store, l->work_dir, "ledger", key, data, len, &how, err);
}

static char *json_text(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

/* Fields of a JSON object, checked. */
static int jstr(json_t *o, const char *k, const char **out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        return -EINVAL;
    *out = json_string_value(v);
    return 0;
}

static int jint(json_t *o, const char *k, int64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -EINVAL;
    *out = json_integer_value(v);
    return 0;
}

/* ---- the lease ---- */

struct lease {
    char holder[BFS_STATE_ID_MAX];
    char host[256];
    int64_t pid, epoch, expires_at;
    int released;
};

static void lease_key(const struct bfs_ledger *l, char out[160])
{
    snprintf(out, 160, BFS_LEDGER_PREFIX "nodes/%s/lease", l->node);
}

static int lease_parse(const void *data, size_t len, struct lease *out)
{
    json_t *j = json_loadb(data, len, 0, NULL);
    const char *holder, *host;
    int64_t v;
    json_t *rel = j ? json_object_get(j, "released") : NULL;
    int rc = j && jint(j, "battlefs_lease", &v) == 0 && v == 1 && jstr(j, "holder", &holder) == 0 &&
                     jstr(j, "host", &host) == 0 && jint(j, "pid", &out->pid) == 0 &&
                     jint(j, "epoch", &out->epoch) == 0 &&
                     jint(j, "expires_at", &out->expires_at) == 0 && json_is_boolean(rel)
                 ? 0
                 : -EINVAL;
    if (rc == 0) {
        snprintf(out->holder, sizeof out->holder, "%s", holder);
        snprintf(out->host, sizeof out->host, "%s", host);
        out->released = json_is_true(rel);
    }
    json_decref(j);
    return rc;
}

/* Put the lease {epoch, expires now + ttl (or now, released)} with cond. */
static int lease_put(struct bfs_ledger *l, int64_t epoch, int released, enum bfs_put_cond cond,
                     const char *if_match, char etag_out[BFS_STORE_ETAG_MAX], struct bfs_err *err)
{
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    int64_t now = (int64_t)time(NULL);
    json_t *j =
        json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:b}", "battlefs_lease", 1, "node", l->node,
                  "holder", l->state_id, "host", host, "pid", (json_int_t)getpid(), "epoch",
                  (json_int_t)epoch, "expires_at",
                  (json_int_t)(released ? now : now + (int64_t)ttl_of(l)), "released", released);
    char *text = j ? json_text(j) : NULL;
    if (!text)
        return bfs_err_set(err, -ENOMEM, "lease: out of memory");
    char key[160];
    lease_key(l, key);
    int rc = put_small(l, key, text, strlen(text), cond, if_match, 0, etag_out, err);
    free(text);
    return rc;
}

static void lease_valid_from(struct bfs_ledger *l, struct timespec start)
{
    /* Counted from before the request: the store may have taken it late. */
    l->valid_until = start;
    l->valid_until.tv_sec += (time_t)ttl_of(l);
}

static int fence_locked(struct bfs_ledger *l, struct bfs_err *err);

/* -EBUSY (err says by whom) if old is held by another live mount, else 0. */
static int lease_busy(const struct bfs_ledger *l, const struct lease *old, struct bfs_err *err)
{
    int64_t now = (int64_t)time(NULL);
    if (old->released || strcmp(old->holder, l->state_id) == 0 || old->expires_at < now)
        return 0;
    char until[32];
    struct tm tm;
    time_t t = (time_t)old->expires_at;
    gmtime_r(&t, &tm);
    strftime(until, sizeof until, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return bfs_err_set(err, -EBUSY,
                       "node %s is held by another mount (host %s, pid %" PRId64
                       ", lease until %s): stop it, wait for its lease to expire, or mount "
                       "with another -o node",
                       l->node, old->host, old->pid, until);
}

int bfs_ledger_check(struct bfs_ledger *l, struct bfs_err *err)
{
    bfs_err_clear(err);
    if (l->d.read_only)
        return 0;
    char key[160];
    lease_key(l, key);
    void *data = NULL;
    size_t len = 0;
    int rc = bfs_store_get(l->d.store, key, ENTRY_MAX, &data, &len, NULL, err);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0) {
        bfs_err_prefix(err, "lease %s", key);
        return rc;
    }
    struct lease old;
    rc = lease_parse(data, len, &old);
    free(data);
    if (rc < 0)
        return bfs_err_set(err, -EIO, "lease %s: not a battlefs lease", key);
    return lease_busy(l, &old, err);
}

/* Take the lease (under mu). */
static int acquire_locked(struct bfs_ledger *l, struct bfs_err *err)
{
    char key[160];
    lease_key(l, key);
    int rc = -ESTALE;
    for (int attempt = 0; attempt < ACQUIRE_TRIES; attempt++) {
        void *data = NULL;
        size_t len = 0;
        char etag[BFS_STORE_ETAG_MAX] = "";
        struct timespec start = mono_now();
        rc = bfs_store_get(l->d.store, key, ENTRY_MAX, &data, &len, etag, err);
        int64_t epoch = 1;
        int fence = 0;
        enum bfs_put_cond cond = BFS_PUT_CREATE;
        if (rc == 0) {
            struct lease old;
            rc = lease_parse(data, len, &old);
            free(data);
            if (rc < 0) {
                bfs_err_set(err, -EIO, "lease %s: not a battlefs lease", key);
                rc = -EIO;
                break;
            }
            if ((rc = lease_busy(l, &old, err)) < 0)
                break;
            epoch = old.epoch + 1;
            fence = !old.released;
            cond = BFS_PUT_MATCH;
        } else if (rc != -ENOENT) {
            bfs_err_prefix(err, "lease %s", key);
            break;
        }
        char newtag[BFS_STORE_ETAG_MAX] = "";
        rc = lease_put(l, epoch, 0, cond, cond == BFS_PUT_MATCH ? etag : NULL, newtag, err);
        if (rc == -EEXIST || rc == -ESTALE || rc == -ENOENT) {
            bfs_debug("lease %s changed while taking it: again", key);
            rc = -ESTALE;
            continue;
        }
        if (rc < 0) {
            bfs_err_prefix(err, "lease %s", key);
            break;
        }
        pthread_mutex_lock(&l->lease_mu);
        l->have_lease = 1;
        l->epoch = epoch;
        snprintf(l->etag, sizeof l->etag, "%s", newtag);
        lease_valid_from(l, start);
        pthread_mutex_unlock(&l->lease_mu);
        l->need_fence = fence;
        bfs_info("node %s: lease taken (epoch %" PRId64 "%s)", l->node, epoch,
                 fence ? ", taken over from a holder that did not release it" : "");
        if (fence) {
            /* At once, so the earlier holder stops at its next look at the
             * log; if the store fails now, the first commit does it. */
            struct bfs_err ferr;
            int frc = fence_locked(l, &ferr);
            if (frc < 0)
                bfs_warn("node %s: cannot fence the earlier holder yet (before the first roll "
                         "then): %s",
                         l->node, ferr.msg[0] ? ferr.msg : strerror(-frc));
        }
        break;
    }
    if (rc == -ESTALE)
        bfs_err_set(err, rc, "lease %s changes too often to be taken", key);
    return rc;
}

int bfs_ledger_acquire(struct bfs_ledger *l, struct bfs_err *err)
{
    bfs_err_clear(err);
    if (l->d.read_only)
        return 0;
    pthread_mutex_lock(&l->mu);
    int rc = acquire_locked(l, err);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

/* Renew the lease now. 0, -ESTALE (it was taken over: fenced), -errno. */
static int lease_renew(struct bfs_ledger *l, struct bfs_err *err)
{
    pthread_mutex_lock(&l->lease_mu);
    if (!l->have_lease) {
        pthread_mutex_unlock(&l->lease_mu);
        return bfs_err_set(err, -ESTALE, "node %s holds no lease", l->node);
    }
    int64_t epoch = l->epoch;
    char etag[BFS_STORE_ETAG_MAX];
    snprintf(etag, sizeof etag, "%s", l->etag);
    pthread_mutex_unlock(&l->lease_mu);

    struct timespec start = mono_now();
    char newtag[BFS_STORE_ETAG_MAX] = "";
    int rc = lease_put(l, epoch, 0, BFS_PUT_MATCH, etag, newtag, err);
    if (rc == -ESTALE || rc == -ENOENT) {
        /* Not necessarily taken over: an earlier renewal may have landed
         * with its answer lost, so the ETag we hold is old. The lease says. */
        char key[160];
        lease_key(l, key);
        void *data = NULL;
        size_t len = 0;
        char cur[BFS_STORE_ETAG_MAX] = "";
        struct bfs_err gerr;
        int grc = bfs_store_get(l->d.store, key, ENTRY_MAX, &data, &len, cur, &gerr);
        struct lease now;
        if (grc == 0 && lease_parse(data, len, &now) == 0 && strcmp(now.holder, l->state_id) == 0 &&
            now.epoch == epoch && !now.released && cur[0]) {
            bfs_info("node %s: the lease holds an earlier renewal of ours: renewing on it",
                     l->node);
            start = mono_now();
            rc = lease_put(l, epoch, 0, BFS_PUT_MATCH, cur, newtag, err);
        } else if (grc < 0 && grc != -ENOENT) {
            rc = grc; /* cannot tell: retried, not fenced */
            bfs_err_set(err, grc, "lease %s: %s", key, gerr.msg[0] ? gerr.msg : strerror(-grc));
        }
        free(data);
    }
    pthread_mutex_lock(&l->lease_mu);
    if (rc == 0 && l->have_lease && l->epoch == epoch) {
        snprintf(l->etag, sizeof l->etag, "%s", newtag);
        lease_valid_from(l, start);
    } else if (rc == -ESTALE || rc == -ENOENT) {
        l->have_lease = 0;
        atomic_store(&l->d.stats->fenced, 1);
        bfs_error("node %s: the lease was taken over by another mount (epoch %" PRId64
                  " is no longer ours): this mount is fenced and will not commit rolls",
                  l->node, epoch);
        rc = bfs_err_set(err, -ESTALE, "node %s is fenced: its lease was taken over", l->node);
    }
    pthread_mutex_unlock(&l->lease_mu);
    return rc;
}

/* Before a commit (under mu): a lease with at least a third of its time
 * left; taken now if the mount could not take it yet (the store did not
 * answer at mount). */
static int lease_ensure(struct bfs_ledger *l, struct bfs_err *err)
{
    if (atomic_load(&l->d.stats->fenced))
        return bfs_err_set(err, -ESTALE, "node %s is fenced: its lease was taken over", l->node);
    pthread_mutex_lock(&l->lease_mu);
    struct timespec limit = mono_now();
    limit.tv_sec += (time_t)(ttl_of(l) / 3);
    int have = l->have_lease;
    int fresh = have && ts_before(limit, l->valid_until);
    pthread_mutex_unlock(&l->lease_mu);
    if (!have)
        return acquire_locked(l, err);
    return fresh ? 0 : lease_renew(l, err);
}

static void lease_release(struct bfs_ledger *l)
{
    pthread_mutex_lock(&l->lease_mu);
    int have = l->have_lease;
    int64_t epoch = l->epoch;
    char etag[BFS_STORE_ETAG_MAX];
    snprintf(etag, sizeof etag, "%s", l->etag);
    l->have_lease = 0;
    pthread_mutex_unlock(&l->lease_mu);
    if (!have)
        return;
    struct bfs_err err;
    int rc = lease_put(l, epoch, 1, BFS_PUT_MATCH, etag, NULL, &err);
    if (rc == -ENOENT || rc == -ESTALE)
        bfs_info("node %s: the lease is %s: nothing to release", l->node,
                 rc == -ENOENT ? "gone from the store" : "another mount's now");
    else if (rc < 0)
        bfs_warn("node %s: cannot release the lease (it expires by itself): %s", l->node,
                 err.msg[0] ? err.msg : strerror(-rc));
    else
        bfs_info("node %s: lease released", l->node);
}

/* ---- reading the log ---- */

enum entry_type { ENTRY_ROLL, ENTRY_FENCE, ENTRY_COMPACT, ENTRY_ERASE };

struct entry {
    enum entry_type type;
    const char *node, *roll_id, *manifest, *sha_hex; /* roll_id: a compaction's compact_id */
    const char *dataset, *table, *period;            /* an erasure (table, period: NULL) */
    int64_t epoch, size, committed_at, erased_at;
    json_t *j; /* owns the strings */
};

/* An optional string member: 0 (NULL when absent or null), -EINVAL. */
static int jopt_str(json_t *o, const char *k, const char **out)
{
    json_t *v = json_object_get(o, k);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    return jstr(o, k, out);
}

static int entry_parse(const void *data, size_t len, struct entry *e)
{
    memset(e, 0, sizeof *e);
    e->j = json_loadb(data, len, 0, NULL);
    const char *type;
    int64_t v;
    if (!e->j || jint(e->j, "battlefs_log", &v) < 0 || v != 1 || jstr(e->j, "type", &type) < 0 ||
        jstr(e->j, "node", &e->node) < 0 || jint(e->j, "epoch", &e->epoch) < 0 ||
        !bfs_node_valid(e->node))
        return -EINVAL;
    if (strcmp(type, "fence") == 0) {
        e->type = ENTRY_FENCE;
        return 0;
    }
    if (strcmp(type, "erase") == 0) {
        e->type = ENTRY_ERASE;
        if (jstr(e->j, "dataset", &e->dataset) < 0 || jopt_str(e->j, "table", &e->table) < 0 ||
            jopt_str(e->j, "period", &e->period) < 0 ||
            jint(e->j, "erased_at", &e->erased_at) < 0 ||
            jint(e->j, "committed_at", &e->committed_at) < 0 ||
            !bfs_name_valid(e->dataset, strlen(e->dataset)) || (!e->table) != (!e->period) ||
            (e->table && (!bfs_name_valid(e->table, strlen(e->table)) ||
                          !bfs_name_valid(e->period, strlen(e->period)))))
            return -EINVAL;
        return 0;
    }
    const char *id_key = "roll_id";
    if (strcmp(type, "compact") == 0) {
        e->type = ENTRY_COMPACT;
        id_key = "compact_id";
    } else if (strcmp(type, "roll") != 0) {
        return -EINVAL;
    }
    if (jstr(e->j, id_key, &e->roll_id) < 0 || jstr(e->j, "manifest", &e->manifest) < 0 ||
        jstr(e->j, "sha256", &e->sha_hex) < 0 || jint(e->j, "size", &e->size) < 0 ||
        jint(e->j, "committed_at", &e->committed_at) < 0 || strlen(e->sha_hex) != 64 ||
        strlen(e->roll_id) >= BFS_ROLL_ID_MAX || !bfs_name_valid(e->roll_id, strlen(e->roll_id)) ||
        bfs_store_key_check(e->manifest) < 0)
        return -EINVAL;
    return 0;
}

static void entry_free(struct entry *e)
{
    json_decref(e->j);
    e->j = NULL;
}

static int fetch_fd(struct bfs_ledger *l, const char *key, uint64_t size, const char *sha_hex,
                    struct bfs_err *err);

/* The manifest of a roll entry in a readable fd (a local file for this
 * mount's own roll being committed, else fetched and checked). */
static int manifest_fd(struct bfs_ledger *l, const struct entry *e, struct bfs_err *err)
{
    if (l->local && strcmp(e->node, l->node) == 0 && strcmp(e->roll_id, l->local->roll_id) == 0) {
        int fd = open(l->local->manifest_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return bfs_err_set(err, -errno, "open %s: %s", l->local->manifest_path,
                               strerror(errno));
        return fd;
    }
    return fetch_fd(l, e->manifest, (uint64_t)e->size, e->sha_hex, err);
}

/* The object key (size bytes, SHA-256 sha_hex) in a readable fd: fetched in
 * pieces into an anonymous file of the work directory and hashed on the way,
 * so memory does not grow with the object. The fd, or -errno with err. */
static int fetch_fd(struct bfs_ledger *l, const char *key, uint64_t size, const char *sha_hex,
                    struct bfs_err *err)
{
    int fd = open(l->work_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return bfs_err_set(err, -errno, "temporary file in %s: %s", l->work_dir, strerror(errno));
    uint8_t *buf = malloc(FETCH_CHUNK);
    uint8_t digest[32];
    int rc = buf ? bfs_store_fetch(l->d.store, key, size, buf, FETCH_CHUNK, fd, digest, err)
                 : bfs_err_set(err, -ENOMEM, "out of memory");
    if (rc < 0)
        bfs_err_prefix(err, "manifest %s", key);
    free(buf);
    if (rc == 0) {
        char hex[65];
        bfs_hex(digest, 32, hex);
        if (strcmp(hex, sha_hex) != 0)
            rc = bfs_err_set(err, -EIO, "manifest %s: SHA-256 %s, the log says %s", key, hex,
                             sha_hex);
    }
    if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0)
        rc = bfs_err_set(err, -errno, "manifest %s: seek: %s", key, strerror(errno));
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

/* Pass 1 over a manifest: its Roll entry, and the partitions of its archives
 * that this catalog does not have yet, created from the archive's own header. */
struct scan {
    struct bfs_ledger *l;
    const struct entry *e;
    struct bfs_err *err;
    struct bfs_manifest_roll roll;
    struct bfs_manifest_compact compact;
    char roll_id[BFS_ROLL_ID_MAX];
    char table[BFS_NAME_MAX + 1], period[BFS_NAME_MAX + 1];
    int have; /* the Roll or Compact entry was read */
};

static int scan_compact(void *ctx, const struct bfs_manifest_compact *c)
{
    struct scan *s = ctx;
    if (s->e->type != ENTRY_COMPACT || strcmp(c->node, s->e->node) != 0 ||
        strcmp(c->compact_id, s->e->roll_id) != 0)
        return bfs_err_set(s->err, -EIO,
                           "manifest %s is of compaction %s of node %s, the log says %s",
                           s->e->manifest, c->compact_id, c->node, s->e->roll_id);
    s->compact = *c;
    s->compact.node = s->e->node;
    snprintf(s->roll_id, sizeof s->roll_id, "%s", c->compact_id);
    snprintf(s->table, sizeof s->table, "%s", c->table);
    snprintf(s->period, sizeof s->period, "%s", c->period);
    s->compact.compact_id = s->roll_id;
    s->compact.table = s->table;
    s->compact.period = s->period;
    s->have = 1;
    return 0;
}

static int scan_roll(void *ctx, const struct bfs_manifest_roll *r)
{
    struct scan *s = ctx;
    if (s->e->type != ENTRY_ROLL || strcmp(r->node, s->e->node) != 0 ||
        strcmp(r->roll_id, s->e->roll_id) != 0)
        return bfs_err_set(s->err, -EIO, "manifest %s is of roll %s of node %s, the log says %s",
                           s->e->manifest, r->roll_id, r->node, s->e->roll_id);
    s->roll = *r;
    s->roll.node = s->e->node;
    snprintf(s->roll_id, sizeof s->roll_id, "%s", r->roll_id);
    s->roll.roll_id = s->roll_id;
    s->have = 1;
    return 0;
}

/* Writer schema json (its compiled form cs) joins partition (table, period)
 * of codec codec: the partition is made with it (exists 0: its layout is
 * the schema's), or it is added to the versions with the merged layout it
 * makes. what names the source in messages. */
static int add_schema(struct bfs_ledger *l, const char *table, const char *period, int exists,
                      const char *json, size_t len, const struct bfs_ocf_schema *cs,
                      enum bfs_codec codec, const char *what, struct bfs_err *err)
{
    size_t clen;
    const char *canon = bfs_ocf_schema_canonical(cs, &clen);
    uint64_t fp = bfs_ocf_schema_fingerprint(cs);
    int rc;
    if (!exists) {
        struct bfs_buf hdr = {0};
        rc = bfs_ocf_layout_header(json, len, codec, bfs_ocf_schema_sync(cs), &hdr);
        struct bfs_upload up = {
            .table = table,
            .period = period,
            .schema_json = json,
            .schema_len = len,
            .canonical = canon,
            .canonical_len = clen,
            .fingerprint = fp,
            .codec = codec,
            .header = hdr.data,
            .header_len = hdr.len,
        };
        memcpy(up.sync, bfs_ocf_schema_sync(cs), 16);
        if (rc == 0)
            rc = bfs_catalog_partition_add(l->d.cat, &up, err);
        else
            bfs_err_set(err, rc, "layout header: %s", strerror(-rc));
        bfs_buf_free(&hdr);
        if (rc == 0)
            bfs_info("partition %s/%s: layout of schema %016" PRIx64 ", codec %s, from %s", table,
                     period, fp, bfs_codec_name(codec), what);
        return rc;
    }
    rc = -EAGAIN;
    for (int attempt = 0; rc == -EAGAIN && attempt < 4; attempt++) {
        struct bfs_versions pv;
        rc = bfs_catalog_partition_versions(l->d.cat, table, period, &pv);
        if (rc < 0)
            return bfs_err_set(err, rc, "partition %s/%s: %s", table, period, strerror(-rc));
        struct bfs_layout lay;
        rc = bfs_layout_merge(&pv, json, len, codec, &lay, err);
        bfs_versions_free(&pv);
        if (rc < 0) {
            bfs_err_prefix(err, "%s: schema %016" PRIx64 " does not merge with partition %s/%s",
                           what, fp, table, period);
            return rc == -ENOMEM ? rc : -EIO;
        }
        int64_t id;
        rc = bfs_catalog_partition_add_version(l->d.cat, table, period, json, len, canon, clen, fp,
                                               &lay.m, &id, err);
        bfs_layout_free(&lay);
    }
    if (rc == 0)
        bfs_info("partition %s/%s: schema %016" PRIx64 " added from %s", table, period, fp, what);
    return rc;
}

/* The text of _battlefs/schemas/<fp>.avsc, compiled; checked to be of that
 * fingerprint. */
static int get_schema(struct bfs_ledger *l, const char *fp, struct bfs_ocf_schema **out,
                      char **json, size_t *len, struct bfs_err *err)
{
    char key[128];
    snprintf(key, sizeof key, BFS_LEDGER_PREFIX "schemas/%s.avsc", fp);
    struct bfs_store_head h;
    char *text = NULL;
    int rc = bfs_store_head(l->d.store, key, &h, err);
    if (rc == 0 && (h.size == 0 || h.size > BFS_OCF_MAX_HEADER))
        rc = bfs_err_set(err, -EIO, "%llu bytes", (unsigned long long)h.size);
    if (rc == 0 && !(text = malloc(h.size + 1)))
        rc = bfs_err_set(err, -ENOMEM, "out of memory");
    if (rc == 0)
        rc = bfs_store_get_range(l->d.store, key, 0, h.size, text, err);
    if (rc == 0) {
        text[h.size] = '\0';
        rc = bfs_ocf_schema_new(text, h.size, out, err);
    }
    if (rc == 0) {
        char got[17];
        snprintf(got, sizeof got, "%016" PRIx64, bfs_ocf_schema_fingerprint(*out));
        if (strcmp(got, fp) != 0) {
            rc = bfs_err_set(err, -EIO, "its fingerprint is %s", got);
            bfs_ocf_schema_unref(*out);
        }
    }
    if (rc < 0) {
        free(text);
        bfs_err_prefix(err, "schema %s", key);
        return rc == -ENOMEM ? rc : -EIO;
    }
    *json = text;
    *len = h.size;
    return 0;
}

/* The header of archive a, parsed and checked against the manifest. */
static int archive_header(struct bfs_ledger *l, const struct bfs_manifest_archive *a,
                          struct bfs_ocf_header *h, struct bfs_err *err)
{
    if (a->header_length == 0 || a->header_length > BFS_OCF_MAX_HEADER)
        return bfs_err_set(err, -EIO, "archive %s: bad header length", a->key);
    uint8_t *hdr = malloc(a->header_length);
    if (!hdr)
        return bfs_err_set(err, -ENOMEM, "out of memory");
    int rc = bfs_store_get_range(l->d.store, a->key, 0, a->header_length, hdr, err);
    if (rc == 0) {
        rc = bfs_ocf_parse_header(hdr, a->header_length, h, err);
    } else if (rc == -ENOENT) {
        /* Deleted since (a compaction retired it): its header is the layout of
         * its schema, which _battlefs/schemas/ keeps. */
        struct bfs_ocf_schema *cs = NULL;
        char *json = NULL;
        size_t len = 0;
        struct bfs_buf b = {0};
        bfs_err_clear(err);
        rc = get_schema(l, a->schema_fingerprint, &cs, &json, &len, err);
        if (rc == 0)
            rc = bfs_ocf_layout_header(json, len, a->codec, bfs_ocf_schema_sync(cs), &b);
        if (rc == 0)
            rc = bfs_ocf_parse_header(b.data, b.len, h, err);
        bfs_ocf_schema_unref(cs);
        free(json);
        bfs_buf_free(&b);
    }
    free(hdr);
    if (rc < 0) {
        bfs_err_prefix(err, "archive %s: header", a->key);
        return rc == -ENOMEM ? rc : -EIO;
    }
    char fp[17];
    snprintf(fp, sizeof fp, "%016" PRIx64, bfs_ocf_schema_fingerprint(h->compiled));
    if (h->header_len != a->header_length || strcmp(fp, a->schema_fingerprint) != 0 ||
        h->codec != a->codec || memcmp(h->sync, bfs_ocf_schema_sync(h->compiled), 16) != 0) {
        bfs_ocf_header_free(h);
        return bfs_err_set(err, -EIO,
                           "archive %s: its header (schema %s, codec %s) is not the layout the "
                           "manifest says (schema %s, codec %s)",
                           a->key, fp, bfs_codec_name(h->codec), a->schema_fingerprint,
                           bfs_codec_name(a->codec));
    }
    return 0;
}

/* The partition of archive a has each version the manifest names for it
 * (made with the first if it did not exist: the versions' texts come from
 * _battlefs/schemas/) and knows the archive's own schema, a merge of them
 * (an alias: read from the archive's header). A manifest of version 1 names
 * none: the archive's schema is a version (made or added from its header).
 * Pass 1 of a manifest or a checkpoint, outside the catalog's writer that
 * pass 2 holds; only schemas this catalog does not know are fetched. 0 or
 * -errno with err. */
static int ensure_partition(struct bfs_ledger *l, const struct bfs_manifest_archive *a,
                            struct bfs_err *err)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < a->n_versions; i++) {
        rc = bfs_catalog_partition_has_version(l->d.cat, a->table, a->period, a->versions[i]);
        if (rc == 1) {
            rc = 0;
            continue;
        }
        if (rc < 0 && rc != -ENOENT)
            return bfs_err_set(err, rc, "partition %s/%s: %s", a->table, a->period, strerror(-rc));
        int exists = rc == 0;
        struct bfs_ocf_schema *cs;
        char *json = NULL;
        size_t len = 0;
        rc = get_schema(l, a->versions[i], &cs, &json, &len, err);
        if (rc == 0) {
            rc = add_schema(l, a->table, a->period, exists, json, len, cs, a->codec, a->key, err);
            bfs_ocf_schema_unref(cs);
            free(json);
        }
    }
    if (rc < 0)
        return rc;
    rc = bfs_catalog_partition_has_version(l->d.cat, a->table, a->period, a->schema_fingerprint);
    if (rc == 1)
        return 0;
    if (rc < 0 && rc != -ENOENT)
        return bfs_err_set(err, rc, "partition %s/%s: %s", a->table, a->period, strerror(-rc));
    int exists = rc == 0;
    struct bfs_ocf_header h;
    if ((rc = archive_header(l, a, &h, err)) < 0)
        return rc;
    if (a->n_versions == 0) {
        rc = add_schema(l, a->table, a->period, exists, h.schema_json, h.schema_len, h.compiled,
                        h.codec, a->key, err);
    } else if (!exists) {
        rc = bfs_err_set(err, -EIO, "no partition %s/%s after its versions", a->table, a->period);
    } else {
        size_t clen;
        const char *canon = bfs_ocf_schema_canonical(h.compiled, &clen);
        int64_t id;
        rc = bfs_catalog_partition_add_alias(l->d.cat, a->table, a->period, h.schema_json,
                                             h.schema_len, canon, clen,
                                             bfs_ocf_schema_fingerprint(h.compiled), &id, err);
    }
    if (rc < 0)
        bfs_err_prefix(err, "archive %s", a->key);
    bfs_ocf_header_free(&h);
    return rc;
}

static int scan_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct scan *s = ctx;
    return ensure_partition(s->l, a, s->err);
}

static int scan_index(void *ctx, const struct bfs_manifest_index *x)
{
    (void)ctx;
    (void)x;
    return 0;
}

/* The rows, into one catalog transaction, in one pass over the manifest:
 * its Roll or Compact entry (the first) begins the apply; an archive whose
 * partition this catalog lacks stops it (APPLY_SCAN: rolled back; the
 * partition is made outside the transaction and the apply runs again, see
 * struct stopped; or pass 1 above makes them all first). */
enum { APPLY_ALREADY = 1, APPLY_SCAN = 2 }; /* the visitor's stops */

/* Where an apply stopped with APPLY_SCAN: the archive (a copy: the reader's
 * strings do not outlive the visit) and the index rows applied before it
 * (the work its rollback undid). Its partition is made, and the apply runs
 * again, while the work undone stays under RESTART_ROWS in all and the
 * restarts under RESTARTS_MAX; past that a whole pass makes every partition
 * first. */
#define RESTART_ROWS 50000
#define RESTARTS_MAX 16
struct stopped {
    struct bfs_manifest_archive a;
    char key[BFS_STORE_KEY_MAX + 1], table[BFS_NAME_MAX + 1], period[BFS_NAME_MAX + 1];
    char fp[17], versions[BFS_MANIFEST_VERSIONS_MAX][17];
    uint64_t rows;
};

static int stop_at(struct stopped *st, const struct bfs_manifest_archive *a, uint64_t rows)
{
    st->a = *a;
    snprintf(st->key, sizeof st->key, "%s", a->key);
    snprintf(st->table, sizeof st->table, "%s", a->table);
    snprintf(st->period, sizeof st->period, "%s", a->period);
    snprintf(st->fp, sizeof st->fp, "%s", a->schema_fingerprint);
    st->a.n_versions =
        a->n_versions < BFS_MANIFEST_VERSIONS_MAX ? a->n_versions : BFS_MANIFEST_VERSIONS_MAX;
    if (st->a.n_versions > 0)
        memcpy(st->versions, a->versions, st->a.n_versions * sizeof st->versions[0]);
    st->a.key = st->key;
    st->a.table = st->table;
    st->a.period = st->period;
    st->a.schema_fingerprint = st->fp;
    st->a.versions = (const char(*)[17])st->versions;
    st->rows = rows;
    return APPLY_SCAN;
}

struct apply {
    struct bfs_ledger *l;
    struct scan *s;
    int64_t seq;
    int check; /* stop with APPLY_SCAN at an archive of a partition not here */
    struct stopped stop;
    uint64_t rows; /* index rows applied */
    struct bfs_cat_apply *a;
    struct bfs_err *err;
    /* a compaction's retired keys and its archives' keys (its objects:
     * dropped from the cache, or collected when it is void) */
    char (*keys)[BFS_STORE_KEY_MAX + 1];
    size_t n_retired, n_keys, cap;
};

static int apply_keep(struct apply *p, const char *key)
{
    if (p->n_keys == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        void *k = realloc(p->keys, cap * sizeof *p->keys);
        if (!k)
            return bfs_err_set(p->err, -ENOMEM, "out of memory");
        p->keys = k;
        p->cap = cap;
    }
    snprintf(p->keys[p->n_keys++], sizeof p->keys[0], "%s", key);
    return 0;
}

static int apply_retire(void *ctx, const char *key)
{
    struct apply *p = ctx;
    int rc = bfs_catalog_apply_retire(p->a, key, p->err);
    if (rc == 0 && (rc = apply_keep(p, key)) == 0)
        p->n_retired++;
    return rc;
}

/* After the Roll or Compact entry (in p->s): begin the catalog's apply. */
static int apply_start(struct apply *p)
{
    const struct scan *s = p->s;
    const struct entry *e = s->e;
    struct bfs_log_roll lr = {
        .seq = p->seq,
        .node = e->node,
        .roll_id = e->roll_id,
        .epoch = e->epoch,
        .claimed_at = s->roll.claimed_at,
        .committed_at = e->committed_at,
        .rows = (uint64_t)s->roll.rows,
        .bytes = (uint64_t)s->roll.bytes,
        .base = s->roll.base,
        .gc = strcmp(e->node, p->l->node) == 0 && !p->l->d.read_only,
    };
    if (e->type == ENTRY_COMPACT) {
        lr.kind = BFS_LOG_COMPACT;
        lr.claimed_at = e->committed_at;
        lr.rows = 0;
        lr.bytes = (uint64_t)s->compact.bytes;
        lr.base = s->compact.upto;
        lr.table = s->compact.table;
        lr.period = s->compact.period;
        if (!p->keys) {
            if (!(p->keys = malloc(16 * sizeof *p->keys)))
                return bfs_err_set(p->err, -ENOMEM, "out of memory");
            p->cap = 16;
        }
    }
    int rc = bfs_catalog_apply_begin(p->l->d.cat, &lr, &p->a);
    if (rc == -EALREADY)
        return APPLY_ALREADY;
    if (rc < 0 && !p->err->code)
        bfs_err_set(p->err, rc, "log %" PRId64 ": apply: %s", p->seq, strerror(-rc));
    return rc;
}

static int apply_roll(void *ctx, const struct bfs_manifest_roll *r)
{
    struct apply *p = ctx;
    int rc = scan_roll(p->s, r);
    return rc ? rc : apply_start(p);
}

static int apply_compact(void *ctx, const struct bfs_manifest_compact *c)
{
    struct apply *p = ctx;
    int rc = scan_compact(p->s, c);
    return rc ? rc : apply_start(p);
}

static int apply_archive(void *ctx, const struct bfs_manifest_archive *ar)
{
    struct apply *p = ctx;
    if (p->check) {
        int k = bfs_catalog_apply_knows(p->a, ar);
        if (k < 0)
            return bfs_err_set(p->err, k, "partition %s/%s: %s", ar->table, ar->period,
                               strerror(-k));
        if (k == 0)
            return stop_at(&p->stop, ar, p->rows);
    }
    int rc = bfs_catalog_apply_archive(p->a, ar, p->err);
    return rc == 0 && p->keys != NULL ? apply_keep(p, ar->key) : rc;
}

static int apply_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct apply *p = ctx;
    p->rows++;
    return bfs_catalog_apply_index(p->a, x, p->err);
}

/* After a compaction's apply: the retired archives' cache entries go;
 * a void compaction of this node leaves its objects to collect. */
static void compaction_applied(struct bfs_ledger *l, const struct entry *e, struct apply *p,
                               int voided)
{
    int own = strcmp(e->node, l->node) == 0 && !l->d.read_only;
    for (size_t i = 0; i < p->n_keys; i++) {
        if (i < p->n_retired && !voided && l->d.cache)
            bfs_cache_drop(l->d.cache, p->keys[i]);
        if (i >= p->n_retired && voided && own)
            bfs_catalog_gc_add(l->d.cat, p->keys[i], e->committed_at, 1);
    }
    /* Its manifest stays: every reader of the log reads it to find the
     * compaction void. */
    /* Another node's compaction may have rewritten the last archive that
     * held an erasure's bytes (a replica has no compactor to notice). */
    uint64_t pending = 0, total = 0;
    if (!own && !voided && bfs_catalog_erase_counts(l->d.cat, &pending, &total) == 0 &&
        pending > 0 && bfs_catalog_wipe(l->d.cat) == 0) {
        int left = bfs_catalog_erasures_settle(l->d.cat, (int64_t)time(NULL),
                                               bfs_compact_report_erased, l->d.errors);
        if (left >= 0)
            atomic_store(&l->d.stats->erasures_pending, (uint64_t)left);
    }
}

/* One pass of the apply over the manifest in fd (from its start): 0 (applied
 * and committed), APPLY_ALREADY (committed here before: nothing done),
 * APPLY_SCAN (p->check and a partition is missing: rolled back), -errno with
 * err (rolled back). */
static int apply_pass(struct bfs_ledger *l, int fd, struct apply *p, struct bfs_err *err)
{
    const struct entry *e = p->s->e;
    const struct bfs_manifest_visitor v = {apply_roll, apply_archive, apply_index,
                                           p,          apply_compact, apply_retire};
    struct bfs_err rerr = {0};
    int rc = lseek(fd, 0, SEEK_SET) < 0 ? bfs_err_set(err, -errno, "manifest %s: seek", e->manifest)
                                        : bfs_manifest_read(fd, &v, &rerr);
    if (rc < 0 && !err->code)
        bfs_err_set(err, rc, "manifest %s: %s", e->manifest,
                    rerr.msg[0] ? rerr.msg : strerror(-rc));
    if (rc == 0 && !p->s->have)
        rc = bfs_err_set(err, -EIO, "manifest %s has no Roll or Compact entry", e->manifest);
    if (!p->a)
        return rc;
    int own = BFS_APPLIED;
    int voided = bfs_catalog_apply_void(p->a);
    rc = bfs_catalog_apply_end(p->a, rc, &own, err);
    p->a = NULL;
    if (rc != 0)
        return rc;
    /* A compaction without archives (all it held was erased) is found
     * void only by its end: ask the catalog. */
    if (e->type == ENTRY_COMPACT && !voided)
        voided = bfs_catalog_compaction_state(l->d.cat, e->roll_id) == 2;
    bfs_stats_add(l->d.stats, manifests_loaded, 1);
    const struct scan *s = p->s;
    if (e->type == ENTRY_COMPACT) {
        compaction_applied(l, e, p, voided);
        bfs_log(voided ? BFS_LOG_WARN : BFS_LOG_INFO,
                "log %" PRId64 ": %s compaction %s of %s/%s by node %s (%zu archives "
                "retired, %zu written)",
                p->seq, voided ? "void" : "applied", e->roll_id, s->compact.table,
                s->compact.period, e->node, p->n_retired, p->n_keys - p->n_retired);
    } else if (own == BFS_APPLIED_ADOPTED) {
        bfs_stats_add(l->d.stats, rolls_adopted, 1);
        uint_fast64_t left = atomic_load(&l->d.stats->rolls_unadopted);
        while (left > 0 &&
               !atomic_compare_exchange_weak(&l->d.stats->rolls_unadopted, &left, left - 1))
            ;
        bfs_info("log %" PRId64 ": adopted roll %s, committed here before the log (%" PRId64
                 " rows, %" PRId64 " bytes): in the store's log now (entry of node %s)",
                 p->seq, e->roll_id, s->roll.rows, s->roll.bytes, e->node);
    } else {
        bfs_log(own || strcmp(e->node, l->node) ? BFS_LOG_INFO : BFS_LOG_DEBUG,
                "log %" PRId64 ": %s roll %s of node %s (%" PRId64 " rows, %" PRId64 " bytes)",
                p->seq, own ? "committed" : "applied", e->roll_id, e->node, s->roll.rows,
                s->roll.bytes);
    }
    return 0;
}

/* Apply roll or compaction entry seq from its manifest. */
static int apply_roll_entry(struct bfs_ledger *l, int64_t seq, const struct entry *e,
                            struct bfs_err *err)
{
    const char *what = e->type == ENTRY_COMPACT ? "compaction" : "roll";
    int fd = manifest_fd(l, e, err);
    if (fd < 0) {
        bfs_err_prefix(err, "log %" PRId64 " (%s %s of node %s)", seq, what, e->roll_id, e->node);
        return fd;
    }
    struct scan s = {.l = l, .e = e, .err = err};
    struct apply p = {.l = l, .s = &s, .seq = seq, .check = 1, .err = err};
    int rc = apply_pass(l, fd, &p, err);
    uint64_t undone = p.stop.rows;
    for (int n = 0; rc == APPLY_SCAN && n < RESTARTS_MAX && undone <= RESTART_ROWS;
         n++, undone += p.stop.rows) {
        rc = ensure_partition(l, &p.stop.a, err);
        if (rc == 0) {
            s = (struct scan){.l = l, .e = e, .err = err};
            p.n_retired = p.n_keys = 0;
            p.rows = 0;
            rc = apply_pass(l, fd, &p, err);
        }
    }
    if (rc == APPLY_SCAN) {
        /* Pass 1: the partitions, outside the catalog's writer; then the
         * apply again. */
        const struct bfs_manifest_visitor v1 = {scan_roll, scan_archive, scan_index,
                                                &s,        scan_compact, NULL};
        struct bfs_err rerr = {0};
        s = (struct scan){.l = l, .e = e, .err = err};
        rc = lseek(fd, 0, SEEK_SET) < 0 ? bfs_err_set(err, -errno, "manifest %s: seek", e->manifest)
                                        : bfs_manifest_read(fd, &v1, &rerr);
        if (rc < 0 && !err->code)
            bfs_err_set(err, rc, "manifest %s: %s", e->manifest,
                        rerr.msg[0] ? rerr.msg : strerror(-rc));
        if (rc == 0) {
            s = (struct scan){.l = l, .e = e, .err = err};
            p.check = 0;
            p.n_retired = p.n_keys = 0;
            rc = apply_pass(l, fd, &p, err);
        }
    }
    free(p.keys);
    close(fd);
    if (rc == APPLY_ALREADY) {
        bfs_info("log %" PRId64 ": %s %s is already committed here: skipped", seq, what,
                 e->roll_id);
        rc = bfs_catalog_log_skip(l->d.cat, seq, e->node, e->epoch);
        return rc < 0 ? bfs_err_set(err, rc, "log %" PRId64 ": skip", seq) : 0;
    }
    if (rc > 0) /* cannot happen: a stop that is not one of these */
        rc = bfs_err_set(err, -EIO, "manifest %s: read stopped (%d)", e->manifest, rc);
    if (rc < 0)
        bfs_err_prefix(err, "log %" PRId64 " (%s %s of node %s)", seq, what, e->roll_id, e->node);
    return rc;
}

struct hit_keys {
    struct bfs_ledger *l;
};

static int drop_hit(void *ctx, const char *key)
{
    struct hit_keys *h = ctx;
    if (h->l->d.cache)
        bfs_cache_drop(h->l->d.cache, key);
    return 0;
}

/* Apply erase entry seq: hidden at once; its bytes leave the catalog now
 * (secure_delete, then the WAL truncated) and the cache; the archives that
 * hold them wait for the compactor. */
static int apply_erase_entry(struct bfs_ledger *l, int64_t seq, const struct entry *e,
                             struct bfs_err *err)
{
    const struct bfs_log_erase x = {
        .seq = seq,
        .node = e->node,
        .epoch = e->epoch,
        .dataset = e->dataset,
        .table = e->table,
        .period = e->period,
        .erased_at = e->erased_at,
        .committed_at = e->committed_at,
    };
    uint64_t hits = 0;
    int rc = bfs_catalog_apply_erase(l->d.cat, &x, &hits, err);
    if (rc < 0) {
        bfs_err_prefix(err, "log %" PRId64 " (erasure of %s)", seq, e->dataset);
        return rc;
    }
    struct hit_keys h = {l};
    bfs_catalog_erase_hit_keys(l->d.cat, seq, drop_hit, &h);
    /* Its hot rows' pages are zeroed (secure_delete); the WAL's older
     * frames may hold them: truncated (bfs_compact_gc retries when busy). */
    int w = bfs_catalog_wipe(l->d.cat);
    if (w < 0 && w != -EBUSY)
        bfs_warn("log %" PRId64 ": erasure of %s: cannot truncate the catalog's WAL: %s", seq,
                 e->dataset, strerror(-w));
    int pending = w == 0 ? bfs_catalog_erasures_settle(l->d.cat, (int64_t)time(NULL),
                                                       bfs_compact_report_erased, l->d.errors)
                         : -EBUSY;
    if (pending >= 0)
        atomic_store(&l->d.stats->erasures_pending, (uint64_t)pending);
    else
        atomic_fetch_add(&l->d.stats->erasures_pending, 1);
    char where[2 * BFS_NAME_MAX + 8];
    if (e->table)
        snprintf(where, sizeof where, "%s/%s", e->table, e->period);
    else
        snprintf(where, sizeof where, "every table and period");
    bfs_info("log %" PRId64 ": erasure of dataset %s in %s by node %s: hidden; %" PRIu64
             " archives hold its bytes until they are compacted",
             seq, e->dataset, where, e->node, hits);
    return 0;
}

/* Our own lease epoch, or 0 without a lease. */
static int64_t my_epoch(struct bfs_ledger *l)
{
    pthread_mutex_lock(&l->lease_mu);
    int64_t e = l->have_lease ? l->epoch : 0;
    pthread_mutex_unlock(&l->lease_mu);
    return e;
}

static void fence_self(struct bfs_ledger *l, int64_t seq, int64_t epoch)
{
    if (!atomic_exchange(&l->d.stats->fenced, 1))
        bfs_error("node %s: log %" PRId64 " holds epoch %" PRId64 " of this node, above ours "
                  "(%" PRId64 "): another mount took the name; this mount is fenced and "
                  "will not commit rolls",
                  l->node, seq, epoch, my_epoch(l));
}

/* Apply log entry seq (under mu). */
static int apply_entry(struct bfs_ledger *l, int64_t seq, struct bfs_err *err)
{
    char key[64];
    log_key(seq, key);
    void *data = NULL;
    size_t len = 0;
    int rc = bfs_store_get(l->d.store, key, ENTRY_MAX, &data, &len, NULL, err);
    if (rc < 0) {
        bfs_err_prefix(err, "log entry %s", key);
        return rc;
    }
    struct entry e;
    rc = entry_parse(data, len, &e);
    free(data);
    if (rc < 0) {
        entry_free(&e);
        return bfs_err_set(err, -EIO, "log entry %s is not a battlefs log entry", key);
    }
    int mine = strcmp(e.node, l->node) == 0 && !l->d.read_only;
    if (mine && e.epoch > my_epoch(l) && my_epoch(l) > 0)
        fence_self(l, seq, e.epoch);
    if (e.type == ENTRY_FENCE) {
        bfs_info("log %" PRId64 ": node %s fenced below epoch %" PRId64, seq, e.node, e.epoch);
        rc = bfs_catalog_log_skip(l->d.cat, seq, e.node, e.epoch);
        entry_free(&e);
        return rc < 0 ? bfs_err_set(err, rc, "log %" PRId64 ": skip", seq) : 0;
    }
    int64_t known = 0;
    rc = bfs_catalog_node_epoch(l->d.cat, e.node, &known);
    /* A compaction or an erasure looks rows up by archive or dataset: the
     * indexes a bulk load dropped first. */
    if (rc == 0 && e.epoch >= known && e.type != ENTRY_ROLL &&
        (rc = bfs_catalog_bulk_indexes(l->d.cat)) < 0)
        bfs_err_set(err, rc, "log %" PRId64 ": make the catalog's indexes: %s", seq, strerror(-rc));
    if (rc == 0 && e.epoch < known) {
        bfs_warn("log %" PRId64 ": %s of node %s was put under epoch %" PRId64
                 ", fenced by epoch %" PRId64 ": ignored (it is not committed)",
                 seq, e.type == ENTRY_ERASE ? "an erasure" : e.roll_id, e.node, e.epoch, known);
        rc = bfs_catalog_log_skip(l->d.cat, seq, NULL, 0);
    } else if (rc == 0 && e.type == ENTRY_ERASE) {
        rc = apply_erase_entry(l, seq, &e, err);
    } else if (rc == 0) {
        rc = apply_roll_entry(l, seq, &e, err);
    }
    if (rc < 0 && !err->code)
        bfs_err_set(err, rc, "log %" PRId64 ": %s", seq, strerror(-rc));
    entry_free(&e);
    return rc;
}

struct keys {
    char (*k)[64];
    size_t n;
};

static int collect_key(void *ctx, const char *key, uint64_t size)
{
    (void)size;
    struct keys *ks = ctx;
    if (ks->n < LIST_PAGE && strlen(key) < 64)
        snprintf(ks->k[ks->n++], 64, "%s", key);
    return 0;
}

/* ---- checkpoints ---- */

/* "_battlefs/checkpoints/<upto, 20 digits>-<SHA-256, 64 hex>.avro": upto and
 * the hex into sha (65 bytes), or -1 if key is not one. */
static int64_t ckpt_of(const char *key, char sha[65])
{
    size_t plen = strlen(CKPT_PREFIX);
    if (strncmp(key, CKPT_PREFIX, plen) != 0 || strlen(key) != plen + LOG_DIGITS + 1 + 64 + 5 ||
        key[plen + LOG_DIGITS] != '-' || strcmp(key + plen + LOG_DIGITS + 65, ".avro") != 0)
        return -1;
    int64_t v = position_of(key + plen);
    for (size_t i = 0; i < 64; i++) {
        char c = key[plen + LOG_DIGITS + 1 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -1;
        sha[i] = c;
    }
    sha[64] = '\0';
    return v;
}

struct newest {
    char key[160];
    uint64_t size;
    int64_t upto;
};

static int newest_ckpt(void *ctx, const char *key, uint64_t size)
{
    struct newest *n = ctx;
    char sha[65];
    int64_t upto = ckpt_of(key, sha);
    if (upto > n->upto && strlen(key) < sizeof n->key) {
        n->upto = upto;
        n->size = size;
        snprintf(n->key, sizeof n->key, "%s", key);
    }
    return 0;
}

struct ckpt_load {
    /* First: the catalog's visitor (bfs_catalog_ckpt_visitor) has it as ctx,
     * and ck_roll, ck_archive and ck_index, in place of three of its
     * callbacks, take it as the whole. */
    struct bfs_cat_ckpt_load ld;
    struct bfs_ledger *l;
    int64_t rolls;
    uint64_t rows, rows_total; /* index rows loaded, and in the checkpoint (pass 1) */
    int check;                 /* stop with APPLY_SCAN at an archive of a partition not here */
    struct stopped stop;
    struct bfs_progress prog;
};

static int ck_scan_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                        int64_t committed_at)
{
    (void)ctx, (void)r, (void)seq, (void)epoch, (void)committed_at;
    return 0;
}

static int ck_scan_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct ckpt_load *k = ctx;
    return ensure_partition(k->l, a, k->ld.err);
}

static int ck_scan_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct ckpt_load *k = ctx;
    (void)x;
    k->rows_total++;
    return 0;
}

static int ck_scan_node(void *ctx, const char *node, int64_t epoch)
{
    (void)ctx, (void)node, (void)epoch;
    return 0;
}

static int ck_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                   int64_t committed_at)
{
    struct ckpt_load *k = ctx;
    k->rolls++;
    return bfs_catalog_ckpt_roll(k->ld.c, r, seq, epoch, committed_at, k->ld.err);
}

static int ck_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct ckpt_load *k = ctx;
    if (k->check) {
        int e = bfs_catalog_ckpt_knows(k->ld.c, a);
        if (e < 0)
            return bfs_err_set(k->ld.err, e, "partition %s/%s: %s", a->table, a->period,
                               strerror(-e));
        if (e == 0)
            return stop_at(&k->stop, a, k->rows);
    }
    return bfs_catalog_ckpt_archive(k->ld.c, a, k->ld.err);
}

static int ck_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct ckpt_load *k = ctx;
    bfs_progress_report(&k->prog, ++k->rows);
    return bfs_catalog_ckpt_index(k->ld.c, x, k->ld.err);
}

/* One load of the checkpoint in fd (from its start) into the catalog, as
 * apply_pass: 0, -EEXIST (the catalog applied log entries meanwhile: nothing
 * done), APPLY_SCAN (k->check and a partition is missing: rolled back),
 * -errno with err. */
static int load_pass(struct bfs_ledger *l, int fd, const struct newest *n, struct ckpt_load *k,
                     struct bfs_err *rerr)
{
    if (lseek(fd, 0, SEEK_SET) < 0)
        return -errno;
    int rc = bfs_catalog_ckpt_begin(l->d.cat, &k->ld.c);
    if (rc < 0)
        return rc;
    char what[BFS_STORE_KEY_MAX + 32];
    snprintf(what, sizeof what, "checkpoint %s: load", n->key);
    k->rolls = 0;
    k->rows = 0;
    bfs_progress_start(&k->prog, l->d.stats, BFS_WORK_REFRESH, what, BFS_PROGRESS_ITEMS,
                       "index rows", k->rows_total);
    struct bfs_checkpoint_visitor load;
    bfs_catalog_ckpt_visitor(&k->ld, &load); /* nodes, compactions, erasures: as they are */
    load.roll = ck_roll;
    load.archive = ck_archive;
    load.index = ck_index;
    rc = bfs_checkpoint_read(fd, &load, rerr);
    rc = bfs_catalog_ckpt_end(k->ld.c, rc, n->upto, k->ld.err);
    k->ld.c = NULL;
    bfs_progress_end(&k->prog);
    return rc;
}

/* A catalog that has read nothing of the log starts from the newest
 * checkpoint (under mu): 0 with *pos its position (unchanged when there is
 * none, or the catalog is not empty), or -errno. One pass when this catalog
 * has the checkpoint's partitions; else the first archive of a partition it
 * lacks stops it, a pass makes the partitions (outside the catalog's
 * writer, which the load holds) and the load runs again. */
static int load_checkpoint_locked(struct bfs_ledger *l, int64_t *pos, struct bfs_err *err)
{
    struct newest n = {.upto = 0};
    int rc = bfs_store_list_after(l->d.store, CKPT_PREFIX, "", 0, newest_ckpt, &n, err);
    if (rc < 0) {
        bfs_err_prefix(err, "list %s", CKPT_PREFIX);
        return rc;
    }
    if (n.upto == 0)
        return 0;
    char sha[65];
    ckpt_of(n.key, sha);
    int fd = fetch_fd(l, n.key, n.size, sha, err);
    if (fd < 0)
        return fd;
    struct ckpt_load k = {.ld = {.err = err}, .l = l, .check = 1};
    struct bfs_err rerr = {0};
    rc = load_pass(l, fd, &n, &k, &rerr);
    uint64_t undone = k.stop.rows;
    for (int i = 0; rc == APPLY_SCAN && i < RESTARTS_MAX && undone <= RESTART_ROWS;
         i++, undone += k.stop.rows) {
        rc = ensure_partition(l, &k.stop.a, err);
        if (rc == 0)
            rc = load_pass(l, fd, &n, &k, &rerr);
    }
    if (rc == APPLY_SCAN) {
        /* Pass 1: the partitions (not under the catalog's writer: the load
         * holds it). */
        const struct bfs_checkpoint_visitor scan = {
            ck_scan_roll, ck_scan_archive, ck_scan_index, ck_scan_node, &k, NULL, NULL};
        rc = lseek(fd, 0, SEEK_SET) < 0 ? -errno : bfs_checkpoint_read(fd, &scan, &rerr);
        if (rc == 0) {
            k.check = 0;
            rc = load_pass(l, fd, &n, &k, &rerr);
        }
    }
    close(fd);
    if (rc == -EEXIST)
        return 0; /* something was applied meanwhile: the log goes on from there */
    if (rc > 0)   /* cannot happen: a stop that is not APPLY_SCAN */
        rc = -EIO;
    if (rc < 0) {
        if (!err->code || !err->msg[0])
            bfs_err_set(err, rc, "%s", rerr.msg[0] ? rerr.msg : strerror(-rc));
        bfs_err_prefix(err, "checkpoint %s", n.key);
        return rc;
    }
    bfs_info("checkpoint %s: %" PRId64 " rolls up to log %" PRId64 " loaded", n.key, k.rolls,
             n.upto);
    *pos = n.upto;
    return 0;
}

/* The snapshot's visitor: straight into the checkpoint writer. */
static int cw_roll(void *w, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                   int64_t committed_at)
{
    return bfs_checkpoint_add_roll(w, r, seq, epoch, committed_at);
}

static int cw_archive(void *w, const struct bfs_manifest_archive *a)
{
    return bfs_manifest_add_archive(w, a);
}

static int cw_index(void *w, const struct bfs_manifest_index *x)
{
    return bfs_manifest_add_index(w, x);
}

static int cw_node(void *w, const char *node, int64_t epoch)
{
    return bfs_checkpoint_add_node(w, node, epoch);
}

static int cw_compact(void *w, const struct bfs_manifest_compact *c, int64_t seq, int64_t epoch,
                      int64_t committed_at)
{
    return bfs_checkpoint_add_compact(w, c, seq, epoch, committed_at);
}

static int cw_erase(void *w, const struct bfs_manifest_erase *x, int64_t seq, int64_t epoch,
                    int64_t committed_at)
{
    return bfs_checkpoint_add_erase(w, x, seq, epoch, committed_at);
}

/* After this node's commit put entry pos at a multiple of
 * BFS_LEDGER_CHECKPOINT_EVERY: write the whole applied index as a checkpoint
 * (under mu, so the catalog holds exactly the log prefix 1..pos). A failure
 * only costs start-up time later: it is logged, not returned. */
static void write_checkpoint_locked(struct bfs_ledger *l)
{
    int64_t pos;
    struct bfs_err err = {0};
    int rc = bfs_catalog_ledger_state(l->d.cat, &pos, NULL);
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoint-%" PRId64 ".avro", l->work_dir, pos);
    unlink(path);
    struct bfs_manifest_writer *w = NULL;
    if (rc == 0)
        rc = bfs_checkpoint_create(path, &w);
    struct bfs_checkpoint_visitor v = {0};
    if (rc == 0) {
        v = (struct bfs_checkpoint_visitor){cw_roll, cw_archive, cw_index, cw_node,
                                            w,       cw_compact, cw_erase};
        rc = bfs_catalog_snapshot(l->d.cat, pos, &v);
    }
    uint8_t sha[32];
    uint64_t size = 0;
    if (w && rc == 0)
        rc = bfs_manifest_finish(w, sha, &size);
    else if (w)
        bfs_manifest_abort(w);
    char key[160];
    if (rc == 0) {
        char hex[65];
        bfs_hex(sha, 32, hex);
        snprintf(key, sizeof key, CKPT_PREFIX "%0*" PRId64 "-%s.avro", LOG_DIGITS, pos, hex);
        const struct bfs_put_src src = {.path = path, .may_link = 1, .cond = BFS_PUT_CREATE};
        rc = bfs_store_put_src(l->d.store, key, &src, &err);
    }
    unlink(path);
    if (rc < 0)
        bfs_warn("log %" PRId64 ": cannot write a checkpoint (the log is read from further "
                 "back): %s",
                 pos, err.msg[0] ? err.msg : strerror(-rc));
    else
        bfs_info("log %" PRId64 ": checkpoint %s (%" PRIu64 " bytes)", pos, key, size);
}

/* The catalog's larger cache while a refresh reads other entries than this
 * mount's own roll being committed (whose peak memory the roll bounds), and
 * before the mount serves (bfs_ledger_start) a bulk load into a new catalog:
 * *on is set once it is. A failure costs only speed: logged. */
static void bulk_on(struct bfs_ledger *l, int *on)
{
    if (*on || l->local)
        return;
    int rc = bfs_catalog_bulk(l->d.cat, 1, !l->started);
    if (rc < 0)
        bfs_warn("catalog: a larger cache for reading the log: %s", strerror(-rc));
    *on = rc == 0;
}

/* The end of bulk_on: the indexes a bulk load dropped made again (the mount
 * is about to serve: a failure fails the refresh, rc if it had not failed),
 * the cache back to its size. */
static int bulk_off(struct bfs_ledger *l, int on, int rc, struct bfs_err *err)
{
    int e = on ? bfs_catalog_bulk(l->d.cat, 0, 0) : 0;
    if (e < 0 && rc == 0)
        return bfs_err_set(err, e, "catalog: make the indexes after the log's bulk load: %s",
                           strerror(-e));
    if (e < 0)
        bfs_warn("catalog: make the indexes after the log's bulk load: %s", strerror(-e));
    return rc;
}

static int refresh_locked(struct bfs_ledger *l, struct bfs_err *err)
{
    int64_t pos;
    int bulk = 0;
    int rc = bfs_catalog_ledger_state(l->d.cat, &pos, NULL);
    if (rc < 0)
        return bfs_err_set(err, rc, "read the log position: %s", strerror(-rc));
    if (pos == 0) {
        bulk_on(l, &bulk);
        rc = load_checkpoint_locked(l, &pos, err);
    }
    struct keys ks = {.k = rc == 0 ? malloc(LIST_PAGE * sizeof *ks.k) : NULL};
    if (rc < 0 || !ks.k)
        return bulk_off(l, bulk, rc < 0 ? rc : bfs_err_set(err, -ENOMEM, "out of memory"), err);
    struct bfs_progress prog = {0}; /* started at the first entry to apply */
    int64_t first = pos;
    for (;;) {
        char after[64];
        log_key(pos, after);
        ks.n = 0;
        rc = bfs_store_list_after(l->d.store, LOG_PREFIX, pos > 0 ? after : "", LIST_PAGE,
                                  collect_key, &ks, err);
        if (rc < 0) {
            bfs_err_prefix(err, "list %s", LOG_PREFIX);
            break;
        }
        size_t i;
        for (i = 0; i < ks.n && rc == 0; i++) {
            int64_t seq = log_seq_of(ks.k[i]);
            if (seq < 0) {
                bfs_warn("%s is not a log entry name: ignored", ks.k[i]);
                continue;
            }
            if (seq != pos + 1) {
                /* Cannot happen with a consistent store: read it again later. */
                bfs_warn("log %" PRId64 " is missing before %s: the next refresh reads on", pos + 1,
                         ks.k[i]);
                break;
            }
            if (pos == first)
                bfs_progress_start(&prog, l->d.stats, BFS_WORK_REFRESH,
                                   "refresh: read the store's log", BFS_PROGRESS_ITEMS,
                                   "log entries", 0);
            bulk_on(l, &bulk);
            rc = apply_entry(l, seq, err);
            if (rc == 0)
                pos = seq;
            bfs_progress_report(&prog, (uint64_t)(pos - first));
        }
        atomic_store(&l->d.stats->log_position, pos);
        if (rc < 0 || i < ks.n || ks.n < LIST_PAGE)
            break;
    }
    bfs_progress_end(&prog);
    free(ks.k);
    return bulk_off(l, bulk, rc, err);
}

int bfs_ledger_refresh(struct bfs_ledger *l, struct bfs_err *err)
{
    pthread_mutex_lock(&l->mu);
    bfs_err_clear(err);
    int rc = refresh_locked(l, err);
    bfs_stats_add(l->d.stats, refreshes, 1);
    pthread_mutex_unlock(&l->mu);
    if (rc < 0) {
        if (!err->msg[0])
            bfs_err_set(err, rc, "%s", strerror(-rc));
        bfs_err_prefix(err, "refresh");
        bfs_stats_set_refresh_error(l->d.stats, err->msg);
    } else {
        bfs_stats_set_refresh_error(l->d.stats, NULL);
    }
    return rc;
}

/* ---- writing the log ---- */

/* Put entry text at position seq: 0, -EEXIST (taken), -errno. */
static int put_entry(struct bfs_ledger *l, int64_t seq, char *text, struct bfs_err *err)
{
    char key[64];
    log_key(seq, key);
    int rc = put_small(l, key, text, strlen(text), BFS_PUT_CREATE, NULL, 1, NULL, err);
    free(text);
    if (rc < 0 && rc != -EEXIST)
        bfs_err_prefix(err, "put %s", key);
    return rc;
}

static char *fence_text(struct bfs_ledger *l)
{
    json_t *j = json_pack("{s:i, s:s, s:s, s:I, s:I}", "battlefs_log", 1, "type", "fence", "node",
                          l->node, "epoch", (json_int_t)my_epoch(l), "at", (json_int_t)time(NULL));
    return j ? json_text(j) : NULL;
}

static char *roll_text(struct bfs_ledger *l, const struct bfs_ledger_roll *r)
{
    char hex[65];
    bfs_hex(r->sha256, 32, hex);
    json_t *j =
        json_pack("{s:i, s:s, s:s, s:I, s:s, s:s, s:I, s:s, s:I}", "battlefs_log", 1, "type",
                  r->compact ? "compact" : "roll", "node", l->node, "epoch",
                  (json_int_t)my_epoch(l), r->compact ? "compact_id" : "roll_id", r->roll_id,
                  "manifest", r->manifest_key, "size", (json_int_t)r->size, "sha256", hex,
                  "committed_at", (json_int_t)(r->committed_at ? r->committed_at : time(NULL)));
    return j ? json_text(j) : NULL;
}

static char *erase_text(struct bfs_ledger *l, const char *dataset, const char *table,
                        const char *period, int64_t erased_at)
{
    json_t *j =
        json_pack("{s:i, s:s, s:s, s:I, s:s, s:I, s:I}", "battlefs_log", 1, "type", "erase", "node",
                  l->node, "epoch", (json_int_t)my_epoch(l), "dataset", dataset, "erased_at",
                  (json_int_t)erased_at, "committed_at", (json_int_t)time(NULL));
    if (j && table &&
        (json_object_set_new(j, "table", json_string(table)) < 0 ||
         json_object_set_new(j, "period", json_string(period)) < 0)) {
        json_decref(j);
        return NULL;
    }
    return j ? json_text(j) : NULL;
}

/* Put the fence entry of our epoch at the next free position (under mu). */
static int fence_locked(struct bfs_ledger *l, struct bfs_err *err)
{
    bfs_err_clear(err);
    for (int attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
        int rc = refresh_locked(l, err);
        if (rc < 0)
            return rc;
        int64_t pos;
        if ((rc = bfs_catalog_ledger_state(l->d.cat, &pos, NULL)) < 0)
            return bfs_err_set(err, rc, "read the log position: %s", strerror(-rc));
        char *text = fence_text(l);
        if (!text)
            return bfs_err_set(err, -ENOMEM, "log entry: out of memory");
        rc = put_entry(l, pos + 1, text, err);
        if (rc == -EEXIST)
            continue;
        if (rc < 0)
            return rc;
        l->need_fence = 0;
        bfs_info("log %" PRId64 ": fenced the earlier holders of node %s", pos + 1, l->node);
        return refresh_locked(l, err);
    }
    return bfs_err_set(err, -EAGAIN, "no free log position after %d attempts", COMMIT_ATTEMPTS);
}

/* Under mu, after a refresh, before putting an entry of ours: the lease held
 * and earlier holders of the name fenced. 0 with *pos the last applied log
 * position, 1 (a fence entry was put: read the log again), or -errno. */
static int prepare_put_locked(struct bfs_ledger *l, int64_t *pos, struct bfs_err *err)
{
    int rc = lease_ensure(l, err);
    if (rc < 0)
        return rc;
    if ((rc = bfs_catalog_ledger_state(l->d.cat, pos, NULL)) < 0)
        return bfs_err_set(err, rc, "read the log position: %s", strerror(-rc));
    if (!l->need_fence)
        return 0;
    rc = fence_locked(l, err);
    return rc < 0 ? rc : 1;
}

int bfs_ledger_commit(struct bfs_ledger *l, const struct bfs_ledger_roll *r, struct bfs_err *err)
{
    bfs_err_clear(err);
    if (l->d.read_only)
        return bfs_err_set(err, -EROFS, "read-only mount");
    pthread_mutex_lock(&l->mu);
    l->local = r;
    int rc = -EAGAIN;
    for (int attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
        rc = refresh_locked(l, err);
        if (rc < 0)
            break;
        int64_t seq = 0;
        rc = bfs_catalog_roll_committed(l->d.cat, r->roll_id, &seq);
        if (rc < 0) {
            bfs_err_set(err, rc, "look roll %s up: %s", r->roll_id, strerror(-rc));
            break;
        }
        /* An adopted roll is committed here from the start: it is done
         * once the log holds it (a position). */
        if (rc == 1 && (seq > 0 || !r->adopt)) {
            rc = 0;
            if (seq > 0 && seq % BFS_LEDGER_CHECKPOINT_EVERY == 0)
                write_checkpoint_locked(l);
            break; /* in the log and applied: committed */
        }
        if (rc == 0 && r->adopt) {
            rc = bfs_err_set(err, -ENOENT, "roll %s is not committed here", r->roll_id);
            break;
        }
        int64_t pos;
        if ((rc = prepare_put_locked(l, &pos, err)) < 0)
            break;
        if (rc == 1)
            continue;
        char *text = roll_text(l, r);
        if (!text) {
            rc = bfs_err_set(err, -ENOMEM, "log entry: out of memory");
            break;
        }
        rc = put_entry(l, pos + 1, text, err);
        if (rc == -EEXIST) {
            bfs_debug("log %" PRId64 " was taken by another writer: reading it", pos + 1);
            continue;
        }
        if (rc < 0)
            break;
        if (r->after_log && (rc = r->after_log(r->after_log_arg)) < 0) {
            bfs_err_set(err, rc, "stopped by the fault hook after the log entry");
            break;
        }
        /* The next refresh applies it, from the local manifest: the local commit. */
    }
    if (rc == -EAGAIN)
        bfs_err_set(err, rc, "no free log position after %d attempts", COMMIT_ATTEMPTS);
    l->local = NULL;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int bfs_ledger_erase(struct bfs_ledger *l, const char *dataset, const char *table,
                     const char *period, int64_t *seq_out, struct bfs_err *err)
{
    bfs_err_clear(err);
    if (l->d.read_only)
        return bfs_err_set(err, -EROFS, "read-only mount");
    if (!bfs_name_valid(dataset, strlen(dataset)) || (!table) != (!period))
        return bfs_err_set(err, -EINVAL, "erase: bad dataset or partition");
    int64_t erased_at = (int64_t)time(NULL);
    pthread_mutex_lock(&l->mu);
    int rc = -EAGAIN;
    for (int attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
        int64_t pos;
        if ((rc = refresh_locked(l, err)) < 0 || (rc = prepare_put_locked(l, &pos, err)) < 0)
            break;
        if (rc == 1)
            continue;
        char *text = erase_text(l, dataset, table, period, erased_at);
        if (!text) {
            rc = bfs_err_set(err, -ENOMEM, "log entry: out of memory");
            break;
        }
        rc = put_entry(l, pos + 1, text, err);
        if (rc == -EEXIST)
            continue;
        if (rc < 0)
            break;
        /* Applied by the refresh, as every entry. */
        if ((rc = refresh_locked(l, err)) == 0) {
            if (seq_out)
                *seq_out = pos + 1;
            if ((pos + 1) % BFS_LEDGER_CHECKPOINT_EVERY == 0)
                write_checkpoint_locked(l);
        }
        break;
    }
    if (rc == -EAGAIN)
        bfs_err_set(err, rc, "no free log position after %d attempts", COMMIT_ATTEMPTS);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int bfs_ledger_put_schema(struct bfs_ledger *l, const char *fp, const char *json, size_t len,
                          struct bfs_err *err)
{
    pthread_mutex_lock(&l->smu);
    for (size_t i = 0; i < l->n_schemas; i++)
        if (strcmp(l->schemas[i], fp) == 0) {
            pthread_mutex_unlock(&l->smu);
            return 0;
        }
    pthread_mutex_unlock(&l->smu);
    char key[128];
    snprintf(key, sizeof key, BFS_LEDGER_PREFIX "schemas/%s.avsc", fp);
    struct bfs_store_head h;
    int rc = bfs_store_head(l->d.store, key, &h, err);
    if (rc == -ENOENT) {
        /* Another text of the same canonical form may win the race: any is
         * right, as the fingerprint names the canonical form. */
        rc = put_small(l, key, json, len, BFS_PUT_CREATE, NULL, 1, NULL, err);
        if (rc == -EEXIST)
            rc = 0;
    }
    if (rc < 0) {
        bfs_err_prefix(err, "schema %s", key);
        return rc;
    }
    pthread_mutex_lock(&l->smu);
    if (l->n_schemas < SCHEMAS_KNOWN)
        snprintf(l->schemas[l->n_schemas++], 17, "%s", fp);
    pthread_mutex_unlock(&l->smu);
    return 0;
}

/* ---- threads ---- */

/* Wait up to s seconds or until stop: 1 if stopping. */
static int nap(struct bfs_ledger *l, uint64_t s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)s;
    pthread_mutex_lock(&l->tmu);
    while (!l->stop && pthread_cond_timedwait(&l->tcv, &l->tmu, &until) != ETIMEDOUT)
        ;
    int stop = l->stop;
    pthread_mutex_unlock(&l->tmu);
    return stop;
}

static void *renew_main(void *arg)
{
    struct bfs_ledger *l = arg;
    uint64_t every = ttl_of(l) / 3 ? ttl_of(l) / 3 : 1;
    while (!nap(l, every)) {
        if (atomic_load(&l->d.stats->fenced))
            break;
        pthread_mutex_lock(&l->lease_mu);
        int have = l->have_lease;
        pthread_mutex_unlock(&l->lease_mu);
        struct bfs_err err;
        int rc = have ? lease_renew(l, &err) : bfs_ledger_acquire(l, &err);
        if (rc < 0 && rc != -ESTALE)
            bfs_warn("node %s: lease %s failed (retried): %s", l->node, have ? "renewal" : "taking",
                     err.msg[0] ? err.msg : strerror(-rc));
    }
    return NULL;
}

static void *refresh_main(void *arg)
{
    struct bfs_ledger *l = arg;
    while (!nap(l, l->d.refresh_s)) {
        struct bfs_err err;
        int rc = bfs_ledger_refresh(l, &err);
        if (rc < 0)
            bfs_warn("%s", err.msg);
    }
    return NULL;
}

int bfs_ledger_start(struct bfs_ledger *l)
{
    int rc = 0;
    pthread_mutex_lock(&l->mu);
    l->started = 1; /* the mount serves: refreshes keep the catalog's indexes */
    pthread_mutex_unlock(&l->mu);
    if (!l->d.read_only) {
        rc = pthread_create(&l->renew_thread, NULL, renew_main, l);
        if (rc)
            return -rc;
        l->renew_started = 1;
    }
    if (l->d.refresh_s > 0) {
        rc = pthread_create(&l->refresh_thread, NULL, refresh_main, l);
        if (rc)
            return -rc;
        l->refresh_started = 1;
    }
    return 0;
}

/* The small files of the ledger's puts (ledger-<tid>.tmp): a killed mount's
 * are removed at open. */
static int is_ledger_tmp(const char *name)
{
    size_t n = strlen(name);
    return n > 11 && strncmp(name, "ledger-", 7) == 0 && strcmp(name + n - 4, ".tmp") == 0;
}

int bfs_ledger_open(const struct bfs_ledger_deps *d, struct bfs_ledger **out)
{
    if (!bfs_node_valid(d->node))
        return -EINVAL;
    struct bfs_ledger *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->d = *d;
    snprintf(l->node, sizeof l->node, "%s", d->node);
    l->d.node = l->node;
    l->work_dir = strdup(d->work_dir);
    l->schemas = calloc(SCHEMAS_KNOWN, sizeof *l->schemas);
    int rc = l->work_dir && l->schemas ? 0 : -ENOMEM;
    if (rc == 0)
        rc = bfs_catalog_ledger_state(d->cat, NULL, l->state_id);
    if (rc < 0) {
        free(l->work_dir);
        free(l->schemas);
        free(l);
        return rc;
    }
    bfs_remove_files(l->work_dir, is_ledger_tmp); /* a missing one: the roller says so */
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->lease_mu, NULL);
    pthread_mutex_init(&l->tmu, NULL);
    pthread_mutex_init(&l->smu, NULL);
    pthread_cond_init(&l->tcv, NULL);
    l->d.work_dir = l->work_dir;
    snprintf(d->stats->node, sizeof d->stats->node, "%s", l->node);
    d->stats->read_only = d->read_only;
    uint64_t pending = 0, total = 0;
    if (bfs_catalog_erase_counts(d->cat, &pending, &total) == 0)
        atomic_store(&d->stats->erasures_pending, pending);
    *out = l;
    return 0;
}

void bfs_ledger_close(struct bfs_ledger *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->tmu);
    l->stop = 1;
    pthread_cond_broadcast(&l->tcv);
    pthread_mutex_unlock(&l->tmu);
    if (l->renew_started)
        pthread_join(l->renew_thread, NULL);
    if (l->refresh_started)
        pthread_join(l->refresh_thread, NULL);
    if (!l->d.read_only)
        lease_release(l);
    pthread_cond_destroy(&l->tcv);
    pthread_mutex_destroy(&l->smu);
    pthread_mutex_destroy(&l->tmu);
    pthread_mutex_destroy(&l->lease_mu);
    pthread_mutex_destroy(&l->mu);
    free(l->schemas);
    free(l->work_dir);
    free(l);
}
