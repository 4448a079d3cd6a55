/* testenv.c - the shared fixtures of test_roller.c and test_reader.c (testenv.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testenv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/manifest.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "battlefs/sha256.h"

static const char *SCHEMA = "{\"type\":\"record\",\"name\":\"Battle\","
                            "\"fields\":[{\"name\":\"id\",\"type\":\"long\"}]}";

/* ---- the in-memory store ---- */

static struct memobj *find_locked(struct memstore *m, const char *key)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->obj[i].key, key) == 0)
            return &m->obj[i];
    return NULL;
}

static void md5_hex(const uint8_t *data, size_t len, char out[33])
{
    struct bfs_md5 c;
    uint8_t d[16];
    assert_int_equal(bfs_md5_init(&c), 0);
    bfs_md5_update(&c, data, len);
    assert_int_equal(bfs_md5_final(&c, d), 0);
    bfs_hex(d, 16, out);
}

/* Under the lock: the object at key (a new empty one if there is none). */
static struct memobj *obj_locked(struct memstore *m, const char *key)
{
    struct memobj *o = find_locked(m, key);
    if (o)
        return o;
    assert_int_equal(bfs_array_reserve(&m->obj, &m->cap, m->n + 1, sizeof *m->obj), 0);
    o = &m->obj[m->n++];
    memset(o, 0, sizeof *o);
    o->key = strdup(key);
    assert_non_null(o->key);
    return o;
}

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int mem_put(struct bfs_store *st, const char *key, const struct bfs_put_src *src,
                   struct bfs_err *err)
{
    struct memstore *m = (struct memstore *)st;
    pthread_mutex_lock(&m->lock);
    void (*on_put)(void *, const char *) = m->on_put;
    void *on_put_arg = m->on_put_arg;
    pthread_mutex_unlock(&m->lock);
    if (on_put) /* without the lock: the hook may call into the store */
        on_put(on_put_arg, key);
    pthread_mutex_lock(&m->lock);
    int rc = m->put_rc;
    const char *msg = m->put_msg;
    if (rc && m->put_rc_prefix && !has_prefix(key, m->put_rc_prefix))
        rc = 0;
    const int fail_rc = rc, lands = rc && m->put_lands;
    pthread_mutex_unlock(&m->lock);
    if (rc && !lands)
        return msg ? bfs_err_set(err, rc, "%s", msg) : rc;
    if (bfs_store_key_check(key) < 0)
        return -EINVAL;
    if (src->cond == BFS_PUT_MATCH && (!src->if_match || bfs_store_etag_check(src->if_match) < 0))
        return -EINVAL;
    /* A source that cannot be opened fails the put as it would a real store's. */
    int fd = open(src->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bfs_err_set(err, -errno, "open %s: %s", src->path, strerror(errno));
    close(fd);
    struct bfs_buf b = {0};
    read_whole(src->path, &b);
    int sha_ok = 1;
    if (src->sha256) {
        uint8_t d[32];
        assert_int_equal(bfs_sha256(b.data, b.len, d), 0);
        sha_ok = memcmp(d, src->sha256, 32) == 0;
    }
    char etag[33];
    md5_hex(b.data, b.len, etag);
    pthread_mutex_lock(&m->lock);
    if (src->may_link)
        m->linked++;
    if (!sha_ok) {
        m->bad_sha++;
        pthread_mutex_unlock(&m->lock);
        bfs_buf_free(&b);
        return -EINVAL; /* as S3 refuses a PUT whose x-amz-content-sha256 is wrong */
    }
    struct memobj *o = find_locked(m, key);
    int same = o && o->len == b.len && memcmp(o->data, b.data, b.len) == 0;
    rc = 0;
    if (src->cond == BFS_PUT_CREATE && o && !same)
        rc = bfs_err_set(err, -EEXIST, "%s exists with other bytes", key);
    else if (src->cond == BFS_PUT_MATCH && !o)
        rc = bfs_err_set(err, -ENOENT, "%s does not exist", key);
    else if (src->cond == BFS_PUT_MATCH && !same && strcmp(o->etag, src->if_match) != 0)
        rc = bfs_err_set(err, -ESTALE, "%s has ETag %s, not %s", key, o->etag, src->if_match);
    if (rc < 0) {
        m->refused++;
        pthread_mutex_unlock(&m->lock);
        bfs_buf_free(&b);
        return rc;
    }
    if (o && !same) {
        if (src->cond == BFS_PUT_MATCH)
            m->swapped++;
        else
            m->changed++;
    }
    o = obj_locked(m, key);
    if (same) {
        bfs_buf_free(&b); /* found its bytes there: nothing changes */
    } else {
        free(o->data);
        o->data = b.data;
        o->len = b.len;
        memcpy(o->etag, etag, sizeof etag);
    }
    if (src->etag_out)
        snprintf(src->etag_out, BFS_STORE_ETAG_MAX, "%s", o->etag);
    o->puts++;
    m->puts++;
    if (!has_prefix(key, BFS_LEDGER_PREFIX))
        m->data_puts++;
    pthread_mutex_unlock(&m->lock);
    if (lands) /* the put landed, but its answer was lost: the writer sees the failure */
        return msg ? bfs_err_set(err, fail_rc, "%s", msg) : fail_rc;
    return 0;
}

static int mem_get(struct bfs_store *st, const char *key, uint64_t off, uint64_t len, void *buf,
                   struct bfs_err *err)
{
    (void)err;
    struct memstore *m = (struct memstore *)st;
    if (m->on_get)
        m->on_get(m->on_get_arg, key);
    pthread_mutex_lock(&m->lock);
    if (m->gets < MEMSTORE_GET_LOG) {
        snprintf(m->get_log[m->gets].key, sizeof m->get_log[0].key, "%s", key);
        m->get_log[m->gets].off = off;
        m->get_log[m->gets].len = len;
    }
    m->gets++;
    const struct memobj *o = find_locked(m, key);
    int rc = 0;
    if (!o)
        rc = -ENOENT;
    else if (off > o->len || len > o->len - off)
        rc = -EIO;
    else
        memcpy(buf, o->data + off, len);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int mem_get_whole(struct bfs_store *st, const char *key, size_t max, void **data,
                         size_t *len, char *etag, struct bfs_err *err)
{
    (void)err;
    struct memstore *m = (struct memstore *)st;
    if (bfs_store_key_check(key) < 0)
        return -EINVAL;
    assert_true(max <= BFS_STORE_GET_MAX);
    pthread_mutex_lock(&m->lock);
    m->whole_gets++;
    const struct memobj *o = find_locked(m, key);
    int rc = 0;
    if (!o) {
        rc = -ENOENT;
    } else if (o->len > max) {
        rc = -EFBIG;
    } else {
        *data = malloc(o->len ? o->len : 1);
        assert_non_null(*data);
        if (o->len)
            memcpy(*data, o->data, o->len);
        *len = o->len;
        if (etag)
            snprintf(etag, BFS_STORE_ETAG_MAX, "%s", o->etag);
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int mem_head(struct bfs_store *st, const char *key, struct bfs_store_head *out,
                    struct bfs_err *err)
{
    (void)err;
    struct memstore *m = (struct memstore *)st;
    if (bfs_store_key_check(key) < 0)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    const struct memobj *o = find_locked(m, key);
    if (o) {
        out->size = o->len;
        snprintf(out->etag, sizeof out->etag, "%s", o->etag);
    }
    pthread_mutex_unlock(&m->lock);
    return o ? 0 : -ENOENT;
}

static int mem_list(struct bfs_store *st, const char *prefix,
                    int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx,
                    struct bfs_err *err)
{
    (void)err;
    struct memstore *m = (struct memstore *)st;
    pthread_mutex_lock(&m->lock);
    int rc = 0;
    for (size_t i = 0; i < m->n && rc == 0; i++)
        if (has_prefix(m->obj[i].key, prefix))
            rc = cb(ctx, m->obj[i].key, m->obj[i].len);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

struct keysize {
    char *key;
    uint64_t size;
};

static int keysize_cmp(const void *pa, const void *pb)
{
    const struct keysize *a = pa, *b = pb;
    return strcmp(a->key, b->key);
}

/* Sorted, strictly after start_after, at most max_keys; cb runs without the lock. */
static int mem_list_after(struct bfs_store *st, const char *prefix, const char *start_after,
                          unsigned max_keys, int (*cb)(void *ctx, const char *key, uint64_t size),
                          void *ctx, struct bfs_err *err)
{
    struct memstore *m = (struct memstore *)st;
    if (!start_after)
        start_after = "";
    if (bfs_store_prefix_check(prefix) < 0 || bfs_store_prefix_check(start_after) < 0)
        return bfs_err_set(err, -EINVAL, "bad prefix or start-after");
    pthread_mutex_lock(&m->lock);
    m->lists_after++;
    struct keysize *ks = calloc(m->n + 1, sizeof *ks);
    assert_non_null(ks);
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++)
        if (has_prefix(m->obj[i].key, prefix) && strcmp(m->obj[i].key, start_after) > 0) {
            ks[n].key = strdup(m->obj[i].key);
            assert_non_null(ks[n].key);
            ks[n++].size = m->obj[i].len;
        }
    pthread_mutex_unlock(&m->lock);
    qsort(ks, n, sizeof *ks, keysize_cmp);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0 && (max_keys == 0 || i < max_keys); i++)
        rc = cb(ctx, ks[i].key, ks[i].size);
    for (size_t i = 0; i < n; i++)
        free(ks[i].key);
    free(ks);
    return rc;
}

static int mem_del(struct bfs_store *st, const char *key, struct bfs_err *err)
{
    (void)err;
    struct memstore *m = (struct memstore *)st;
    pthread_mutex_lock(&m->lock);
    struct memobj *o = find_locked(m, key);
    if (o) {
        free(o->key);
        free(o->data);
        *o = m->obj[--m->n];
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static void mem_destroy(struct bfs_store *st)
{
    (void)st;
}

static const struct bfs_store_ops mem_ops = {
    .put = mem_put,
    .get_range = mem_get,
    .list = mem_list,
    .del = mem_del,
    .destroy = mem_destroy,
    .head = mem_head,
    .get = mem_get_whole,
    .list_after = mem_list_after,
};

struct memstore *memstore_new(int wants_sha256)
{
    struct memstore *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->base.ops = &mem_ops;
    m->base.put_wants_sha256 = wants_sha256;
    m->base.conditional = 1;
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void memstore_free(struct memstore *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->obj[i].key);
        free(m->obj[i].data);
    }
    free(m->obj);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

const struct memobj *memstore_find(struct memstore *m, const char *key)
{
    pthread_mutex_lock(&m->lock);
    const struct memobj *o = find_locked(m, key);
    pthread_mutex_unlock(&m->lock);
    return o;
}

unsigned memstore_gets(struct memstore *m)
{
    pthread_mutex_lock(&m->lock);
    unsigned n = m->gets;
    pthread_mutex_unlock(&m->lock);
    return n;
}

void memstore_set(struct memstore *m, const char *key, const void *data, size_t len)
{
    assert_int_equal(bfs_store_key_check(key), 0);
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, data, len);
    char etag[33];
    md5_hex(copy, len, etag);
    pthread_mutex_lock(&m->lock);
    struct memobj *o = obj_locked(m, key);
    free(o->data);
    o->data = copy;
    o->len = len;
    memcpy(o->etag, etag, sizeof etag);
    pthread_mutex_unlock(&m->lock);
}

size_t memstore_count(struct memstore *m, const char *prefix)
{
    pthread_mutex_lock(&m->lock);
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++)
        n += has_prefix(m->obj[i].key, prefix);
    pthread_mutex_unlock(&m->lock);
    return n;
}

/* ---- the store's log ---- */

#define LOG_PREFIX BFS_LEDGER_PREFIX "log/"

static int log_key_cmp(const void *pa, const void *pb)
{
    return strcmp(*(char *const *)pa, *(char *const *)pb);
}

static void copy_str(json_t *j, const char *k, char *out, size_t cap, int required)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_string(v)) {
        if (required)
            fail_msg("log entry without \"%s\"", k);
        out[0] = '\0';
        return;
    }
    assert_true(strlen(json_string_value(v)) < cap);
    snprintf(out, cap, "%s", json_string_value(v));
}

static int64_t get_int(json_t *j, const char *k)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_integer(v))
        fail_msg("log entry without \"%s\"", k);
    return json_integer_value(v);
}

size_t tlog_read(struct memstore *m, struct tlog **out)
{
    pthread_mutex_lock(&m->lock);
    char **keys = calloc(m->n + 1, sizeof *keys);
    assert_non_null(keys);
    size_t n = 0;
    for (size_t i = 0; i < m->n; i++)
        if (has_prefix(m->obj[i].key, LOG_PREFIX)) {
            keys[n] = strdup(m->obj[i].key);
            assert_non_null(keys[n++]);
        }
    pthread_mutex_unlock(&m->lock);
    qsort(keys, n, sizeof *keys, log_key_cmp);
    struct tlog *t = calloc(n + 1, sizeof *t);
    assert_non_null(t);
    for (size_t i = 0; i < n; i++) {
        char want[64];
        snprintf(want, sizeof want, LOG_PREFIX "%020zu.json", i + 1);
        if (strcmp(keys[i], want) != 0)
            fail_msg("log entry %zu is %s: a gap in the log", i + 1, keys[i]);
        const struct memobj *o = memstore_find(m, keys[i]);
        assert_non_null(o);
        json_error_t jerr;
        json_t *j = json_loadb((const char *)o->data, o->len, 0, &jerr);
        if (!j)
            fail_msg("%s: not JSON: %s", keys[i], jerr.text);
        t[i].seq = (int64_t)i + 1;
        assert_int_equal(get_int(j, "battlefs_log"), 1);
        char type[16];
        copy_str(j, "type", type, sizeof type, 1);
        t[i].fence = strcmp(type, "fence") == 0;
        if (!t[i].fence)
            assert_string_equal(type, "roll");
        copy_str(j, "node", t[i].node, sizeof t[i].node, 1);
        t[i].epoch = get_int(j, "epoch");
        if (!t[i].fence) {
            copy_str(j, "roll_id", t[i].roll_id, sizeof t[i].roll_id, 1);
            copy_str(j, "manifest", t[i].manifest, sizeof t[i].manifest, 1);
            copy_str(j, "sha256", t[i].sha256, sizeof t[i].sha256, 1);
            t[i].size = get_int(j, "size");
            assert_true(get_int(j, "committed_at") > 0);
        } else {
            assert_true(get_int(j, "at") > 0);
        }
        json_decref(j);
        free(keys[i]);
    }
    free(keys);
    *out = t;
    return n;
}

size_t tlog_count_roll(struct memstore *m, const char *roll_id, int64_t *seq)
{
    struct tlog *t;
    size_t n = tlog_read(m, &t), k = 0;
    for (size_t i = 0; i < n; i++)
        if (!t[i].fence && strcmp(t[i].roll_id, roll_id) == 0) {
            k++;
            if (seq)
                *seq = t[i].seq;
        }
    free(t);
    return k;
}

size_t tlog_count_fences(struct memstore *m)
{
    struct tlog *t;
    size_t n = tlog_read(m, &t), k = 0;
    for (size_t i = 0; i < n; i++)
        k += t[i].fence;
    free(t);
    return k;
}

/* ---- the environment ---- */

void read_whole(const char *path, struct bfs_buf *out)
{
    bfs_buf_reset(out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail_msg("open %s: %s", path, strerror(errno));
    for (;;) {
        assert_int_equal(bfs_buf_reserve(out, 65536), 0);
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len);
        if (n < 0)
            fail_msg("read %s: %s", path, strerror(errno));
        if (n == 0)
            break;
        out->len += (size_t)n;
    }
    close(fd);
}

static void ledger_open(struct tenv *e)
{
    const struct bfs_ledger_deps ld = {
        .cat = e->cat,
        .store = &e->ms->base,
        .stats = &e->stats,
        .errors = &e->errors,
        .node = e->node,
        .read_only = e->opts.read_only,
        .refresh_s = e->opts.refresh_s,
        .lease_ttl_s = e->opts.lease_ttl_s,
        .work_dir = e->work,
    };
    assert_int_equal(bfs_ledger_open(&ld, &e->ledger), 0);
    e->roll.ledger = e->ledger;
    if (e->opts.read_only || e->opts.no_acquire)
        return;
    struct bfs_err err = {0};
    int rc = bfs_ledger_acquire(e->ledger, &err);
    if (rc != 0)
        fail_msg("node %s: acquire: %d %s", e->node, rc, err.msg);
}

struct tenv *tenv_new_opts(const struct tenv_opts *o)
{
    struct tenv *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->opts = *o;
    snprintf(e->node, sizeof e->node, "%s", o->node ? o->node : "t");
    e->opts.node = e->node;
    snprintf(e->dir, sizeof e->dir, "/tmp/bfs-unit-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->db, sizeof e->db, "%s/catalog.db", e->dir);
    snprintf(e->work, sizeof e->work, "%s/work", e->dir);
    assert_int_equal(mkdir(e->work, 0700), 0);
    assert_int_equal(bfs_catalog_open(e->db, &e->cat), 0);
    e->own_ms = o->ms == NULL;
    e->ms = o->ms ? o->ms : memstore_new(o->wants_sha256);
    e->opts.ms = e->ms;
    bfs_stats_init(&e->stats);
    bfs_errors_init(&e->errors);
    e->roll = (struct bfs_roll_deps){
        .cat = e->cat,
        .store = &e->ms->base,
        .node = e->node,
        .stats = &e->stats,
        .errors = &e->errors,
        .work_dir = e->work,
        .archive_max_bytes = 1u << 20,
        .roll_interval = 3600,
        .roll_bytes = 1ull << 40,
    };
    ledger_open(e);
    struct bfs_err err = {0};
    assert_int_equal(bfs_schema_canonical(SCHEMA, strlen(SCHEMA), &e->canon, &e->canon_len, &err),
                     0);
    return e;
}

struct tenv *tenv_new(int wants_sha256)
{
    const struct tenv_opts o = {.wants_sha256 = wants_sha256};
    return tenv_new_opts(&o);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

void tenv_free(struct tenv *e)
{
    if (!e)
        return;
    bfs_ledger_close(e->ledger);
    bfs_catalog_close(e->cat);
    if (e->own_ms)
        memstore_free(e->ms);
    bfs_errors_destroy(&e->errors);
    bfs_stats_destroy(&e->stats);
    nftw(e->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    for (size_t i = 0; i < e->n_up; i++)
        free(e->up[i].data);
    free(e->up);
    free(e->canon);
    free(e);
}

static void reopen(struct tenv *e, int crash)
{
    if (crash) {
        /* The lease stays as it is: its release fails. */
        char key[160];
        snprintf(key, sizeof key, BFS_LEDGER_PREFIX "nodes/%s/lease", e->node);
        pthread_mutex_lock(&e->ms->lock);
        assert_int_equal(e->ms->put_rc, 0);
        e->ms->put_rc = -EIO;
        e->ms->put_rc_prefix = key;
        pthread_mutex_unlock(&e->ms->lock);
        bfs_ledger_close(e->ledger);
        pthread_mutex_lock(&e->ms->lock);
        e->ms->put_rc = 0;
        e->ms->put_rc_prefix = NULL;
        pthread_mutex_unlock(&e->ms->lock);
    } else {
        bfs_ledger_close(e->ledger);
    }
    e->ledger = NULL;
    bfs_catalog_close(e->cat);
    e->cat = NULL;
    assert_int_equal(bfs_catalog_open(e->db, &e->cat), 0);
    e->roll.cat = e->cat;
    ledger_open(e);
}

void tenv_reopen(struct tenv *e)
{
    reopen(e, 0);
}

void tenv_crash_reopen(struct tenv *e)
{
    reopen(e, 1);
}

void tenv_refresh(struct tenv *e)
{
    struct bfs_err err = {0};
    int rc = bfs_ledger_refresh(e->ledger, &err);
    if (rc != 0)
        fail_msg("node %s: refresh: %d %s", e->node, rc, err.msg);
}

int64_t tenv_log_pos(struct tenv *e)
{
    int64_t pos = -1;
    assert_int_equal(bfs_catalog_ledger_state(e->cat, &pos, NULL), 0);
    return pos;
}

/* A new entry of e->up for (table, period, dataset) with len bytes of data
 * (to be filled) and records records. */
static struct tupload *new_upload(struct tenv *e, const char *table, const char *period,
                                  const char *dataset, size_t len, uint64_t records)
{
    assert_int_equal(bfs_array_reserve(&e->up, &e->cap_up, e->n_up + 1, sizeof *e->up), 0);
    struct tupload *u = &e->up[e->n_up];
    memset(u, 0, sizeof *u);
    snprintf(u->table, sizeof u->table, "%s", table);
    snprintf(u->period, sizeof u->period, "%s", period);
    snprintf(u->dataset, sizeof u->dataset, "%s", dataset);
    u->len = len;
    u->records = records;
    u->data = malloc(len ? len : 1);
    assert_non_null(u->data);
    return u;
}

static size_t commit_upload(struct tenv *e, struct tupload *u);

size_t tenv_upload(struct tenv *e, const char *table, const char *period, const char *dataset,
                   size_t len, unsigned seed)
{
    struct tupload *u = new_upload(e, table, period, dataset, len, len / 10 + 1);
    for (size_t i = 0; i < len; i++)
        u->data[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
    return commit_upload(e, u);
}

size_t tenv_upload_records(struct tenv *e, const char *table, const char *period,
                           const char *dataset, unsigned records, unsigned blocks)
{
    /* a record is one long: the values 0..63 take one byte each */
    struct bfs_buf b = {0};
    uint8_t sync[16];
    assert_int_equal(bfs_schema_sync(e->canon, e->canon_len, sync), 0);
    for (unsigned k = 0; k < blocks; k++) {
        unsigned n = records / blocks + (k < records % blocks);
        assert_int_equal(bfs_buf_put_long(&b, n), 0);
        assert_int_equal(bfs_buf_put_long(&b, n), 0);
        for (unsigned i = 0; i < n; i++)
            assert_int_equal(bfs_buf_put_long(&b, (int64_t)((i + k) % 64)), 0);
        assert_int_equal(bfs_buf_append(&b, sync, 16), 0);
    }
    struct tupload *u = new_upload(e, table, period, dataset, b.len, records);
    memcpy(u->data, b.data, b.len);
    bfs_buf_free(&b);
    return commit_upload(e, u);
}

/* Commit u (the last entry of e->up) to the catalog; its index. */
static size_t commit_upload(struct tenv *e, struct tupload *u)
{
    const char *table = u->table, *period = u->period, *dataset = u->dataset;
    struct bfs_upload up = {
        .table = table,
        .period = period,
        .dataset = dataset,
        .schema_json = SCHEMA,
        .schema_len = strlen(SCHEMA),
        .canonical = e->canon,
        .canonical_len = e->canon_len,
        .fingerprint = bfs_schema_rabin(e->canon, e->canon_len),
        .codec = BFS_CODEC_NULL,
        .data = u->data,
        .len = u->len,
        .records = u->records,
    };
    assert_int_equal(bfs_schema_sync(e->canon, e->canon_len, up.sync), 0);
    struct bfs_buf hdr = {0};
    assert_int_equal(bfs_ocf_layout_header(up.schema_json, up.schema_len, up.codec, up.sync, &hdr),
                     0);
    up.header = hdr.data;
    up.header_len = hdr.len;
    struct bfs_err err = {0};
    u->t0 = (int64_t)time(NULL);
    int rc = bfs_catalog_commit_upload(e->cat, &up, &err);
    u->t1 = (int64_t)time(NULL);
    if (rc != 0)
        fail_msg("commit %s/%s/%s: %d %s", table, period, dataset, rc, err.msg);
    bfs_buf_free(&hdr);
    return e->n_up++;
}

void tenv_header(struct tenv *e, const char *table, const char *period, struct bfs_buf *out)
{
    struct bfs_partition p;
    assert_int_equal(bfs_catalog_partition_get(e->cat, table, period, &p), 0);
    bfs_buf_reset(out);
    assert_int_equal(bfs_buf_append(out, p.header, p.header_len), 0);
    bfs_partition_free(&p);
}

void tenv_dataset_bytes(struct tenv *e, const char *table, const char *period, const char *dataset,
                        size_t n_up, struct bfs_buf *out)
{
    tenv_header(e, table, period, out);
    for (size_t i = 0; i < n_up; i++) {
        const struct tupload *u = &e->up[i];
        if (strcmp(u->table, table) == 0 && strcmp(u->period, period) == 0 &&
            strcmp(u->dataset, dataset) == 0)
            assert_int_equal(bfs_buf_append(out, u->data, u->len), 0);
    }
}

size_t tenv_work_files(struct tenv *e, char names[][128], size_t max)
{
    DIR *d = opendir(e->work);
    assert_non_null(d);
    size_t n = 0;
    const struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (names && n < max)
            snprintf(names[n], sizeof names[0], "%.127s", de->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static sqlite3 *sql_open(struct tenv *e)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(e->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static sqlite3_stmt *sql_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    return st;
}

int64_t tenv_sql_int(struct tenv *e, const char *sql)
{
    sqlite3 *db = sql_open(e);
    sqlite3_stmt *st = sql_prepare(db, sql);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

void tenv_sql_text(struct tenv *e, const char *sql, struct bfs_buf *out)
{
    bfs_buf_reset(out);
    sqlite3 *db = sql_open(e);
    sqlite3_stmt *st = sql_prepare(db, sql);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            if (i)
                assert_int_equal(bfs_buf_append(out, "|", 1), 0);
            if (sqlite3_column_type(st, i) == SQLITE_BLOB) {
                int n = sqlite3_column_bytes(st, i);
                char *hex = malloc(2 * (size_t)n + 1);
                assert_non_null(hex);
                bfs_hex(sqlite3_column_blob(st, i), (size_t)n, hex);
                assert_int_equal(bfs_buf_append(out, hex, 2 * (size_t)n), 0);
                free(hex);
            } else if (sqlite3_column_type(st, i) == SQLITE_NULL) {
                assert_int_equal(bfs_buf_append(out, "NULL", 4), 0);
            } else {
                const char *t = (const char *)sqlite3_column_text(st, i);
                assert_int_equal(bfs_buf_append(out, t, strlen(t)), 0);
            }
        }
        assert_int_equal(bfs_buf_append(out, "\n", 1), 0);
    }
    assert_int_equal(rc, SQLITE_DONE);
    assert_int_equal(bfs_buf_append(out, "", 1), 0); /* a C string */
    out->len--;
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ---- checkpoints ---- */

void tenv_add_partition(struct bfs_catalog *cat, const char *table, const char *period,
                        enum bfs_codec codec)
{
    char *canon;
    size_t clen;
    assert_int_equal(bfs_schema_canonical(SCHEMA, strlen(SCHEMA), &canon, &clen, NULL), 0);
    struct bfs_upload up = {
        .table = table,
        .period = period,
        .schema_json = SCHEMA,
        .schema_len = strlen(SCHEMA),
        .canonical = canon,
        .canonical_len = clen,
        .fingerprint = bfs_schema_rabin(canon, clen),
        .codec = codec,
    };
    assert_int_equal(bfs_schema_sync(canon, clen, up.sync), 0);
    struct bfs_buf hdr = {0};
    assert_int_equal(bfs_ocf_layout_header(SCHEMA, strlen(SCHEMA), codec, up.sync, &hdr), 0);
    up.header = hdr.data;
    up.header_len = hdr.len;
    struct bfs_err err = {0};
    if (bfs_catalog_partition_add(cat, &up, &err) != 0)
        fail_msg("partition %s/%s: %s", table, period, err.msg);
    bfs_buf_free(&hdr);
    free(canon);
}

int tenv_load_checkpoint(struct bfs_catalog *cat, const char *path, int64_t upto,
                         struct bfs_err *err)
{
    struct bfs_cat_ckpt_load ld = {.err = err};
    int rc = bfs_catalog_ckpt_begin(cat, &ld.c);
    if (rc < 0)
        return rc;
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct bfs_checkpoint_visitor v;
    bfs_catalog_ckpt_visitor(&ld, &v);
    struct bfs_err rerr = {0};
    rc = bfs_checkpoint_read(fd, &v, &rerr);
    close(fd);
    if (rc < 0 && err->code == 0)
        bfs_err_set(err, rc, "read: %s", rerr.msg);
    return bfs_catalog_ckpt_end(ld.c, rc, upto, err);
}

/* ---- the model of a roll ---- */

static int row_cmp(const void *pa, const void *pb)
{
    const struct tupload *a = *(const struct tupload *const *)pa;
    const struct tupload *b = *(const struct tupload *const *)pb;
    int c = strcmp(a->table, b->table);
    if (!c)
        c = strcmp(a->period, b->period);
    if (!c)
        c = strcmp(a->dataset, b->dataset);
    if (!c)
        c = a < b ? -1 : a > b; /* commit order: the row ids' */
    return c;
}

void model_roll(struct tenv *e, const char *roll_id, size_t first, size_t last, uint64_t max,
                struct mroll *out)
{
    memset(out, 0, sizeof *out);
    size_t n = last - first + 1;
    const struct tupload **rows = calloc(n, sizeof *rows);
    assert_non_null(rows);
    for (size_t i = 0; i < n; i++)
        rows[i] = &e->up[first + i];
    qsort(rows, n, sizeof *rows, row_cmp);
    size_t cap = 0, idx_cap = 0;
    unsigned group_n = 0;
    uint64_t arch_rows = 0;
    int ds_open = 0;
    struct bfs_buf hdr = {0};
    struct bfs_partition part = {0};
    for (size_t i = 0; i < n; i++) {
        const struct tupload *r = rows[i];
        struct march *a = out->n ? &out->a[out->n - 1] : NULL;
        int new_group = !a || strcmp(a->table, r->table) || strcmp(a->period, r->period);
        if (new_group) {
            bfs_partition_free(&part);
            assert_int_equal(bfs_catalog_partition_get(e->cat, r->table, r->period, &part), 0);
            bfs_buf_reset(&hdr);
            assert_int_equal(bfs_buf_append(&hdr, part.header, part.header_len), 0);
            group_n = 0;
        }
        if (new_group || (arch_rows > 0 && a->bytes.len + r->len > max)) {
            assert_int_equal(bfs_array_reserve(&out->a, &cap, out->n + 1, sizeof *out->a), 0);
            a = &out->a[out->n++];
            memset(a, 0, sizeof *a);
            idx_cap = 0;
            snprintf(a->table, sizeof a->table, "%s", r->table);
            snprintf(a->period, sizeof a->period, "%s", r->period);
            snprintf(a->key, sizeof a->key, "%s/%s/%s-%u.avro", r->table, r->period, roll_id,
                     group_n++);
            assert_int_equal(bfs_buf_append(&a->bytes, hdr.data, hdr.len), 0);
            a->header_length = hdr.len;
            memcpy(a->fingerprint, part.fingerprint, sizeof a->fingerprint);
            a->codec = part.codec;
            arch_rows = 0;
            ds_open = 0;
        }
        if (!ds_open || strcmp(a->idx[a->n_idx - 1].dataset, r->dataset) != 0) {
            assert_int_equal(bfs_array_reserve(&a->idx, &idx_cap, a->n_idx + 1, sizeof *a->idx), 0);
            struct mindex *x = &a->idx[a->n_idx++];
            memset(x, 0, sizeof *x);
            snprintf(x->dataset, sizeof x->dataset, "%s", r->dataset);
            x->start = a->bytes.len;
            ds_open = 1;
        }
        struct mindex *x = &a->idx[a->n_idx - 1];
        assert_int_equal(bfs_buf_append(&a->bytes, r->data, r->len), 0);
        x->length += r->len;
        x->records += r->records;
        x->at_lo = r->t0 > x->at_lo ? r->t0 : x->at_lo;
        x->at_hi = r->t1 > x->at_hi ? r->t1 : x->at_hi;
        out->rows++;
        out->bytes += r->len;
        arch_rows++;
    }
    bfs_partition_free(&part);
    bfs_buf_free(&hdr);
    free(rows);
}

void model_free(struct mroll *m)
{
    for (size_t i = 0; i < m->n; i++) {
        bfs_buf_free(&m->a[i].bytes);
        free(m->a[i].idx);
    }
    free(m->a);
    memset(m, 0, sizeof *m);
}

/* A manifest read back: its entries, flattened. */
struct mread {
    struct bfs_manifest_roll roll;
    char node[72], roll_id[BFS_ROLL_ID_MAX];
    int n_roll;
    struct {
        char key[256], table[32], period[32], fp[17];
        uint64_t size, header_length;
        uint8_t sha256[32];
        enum bfs_codec codec;
        size_t first, n;
    } a[64];
    size_t n_a;
    struct {
        char dataset[80];
        uint64_t start, length, records;
        int64_t uploaded_at;
    } x[512];
    size_t n_x;
};

static int mread_roll(void *ctx, const struct bfs_manifest_roll *r)
{
    struct mread *m = ctx;
    m->roll = *r;
    snprintf(m->node, sizeof m->node, "%s", r->node);
    snprintf(m->roll_id, sizeof m->roll_id, "%s", r->roll_id);
    m->roll.node = m->node;
    m->roll.roll_id = m->roll_id;
    m->n_roll++;
    return 0;
}

static int mread_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct mread *m = ctx;
    assert_true(m->n_a < 64);
    snprintf(m->a[m->n_a].key, sizeof m->a[0].key, "%s", a->key);
    snprintf(m->a[m->n_a].table, sizeof m->a[0].table, "%s", a->table);
    snprintf(m->a[m->n_a].period, sizeof m->a[0].period, "%s", a->period);
    snprintf(m->a[m->n_a].fp, sizeof m->a[0].fp, "%s", a->schema_fingerprint);
    m->a[m->n_a].size = a->size;
    m->a[m->n_a].header_length = a->header_length;
    memcpy(m->a[m->n_a].sha256, a->sha256, 32);
    m->a[m->n_a].codec = a->codec;
    m->a[m->n_a].first = m->n_x;
    m->a[m->n_a].n = 0;
    m->n_a++;
    return 0;
}

static int mread_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct mread *m = ctx;
    assert_true(m->n_x < 512 && m->n_a > 0);
    snprintf(m->x[m->n_x].dataset, sizeof m->x[0].dataset, "%s", x->dataset);
    m->x[m->n_x].start = x->start;
    m->x[m->n_x].length = x->length;
    m->x[m->n_x].records = x->records;
    m->x[m->n_x].uploaded_at = x->uploaded_at;
    m->n_x++;
    m->a[m->n_a - 1].n++;
    return 0;
}

/* Decode the manifest object key into r (fails the test if it does not decode). */
static void manifest_decode(struct memstore *ms, const char *key, struct mread *r)
{
    const struct memobj *o = memstore_find(ms, key);
    if (!o)
        fail_msg("no manifest %s in the store", key);
    int fd = memfd_create("test-manifest", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, o->data, o->len), (ssize_t)o->len);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    memset(r, 0, sizeof *r);
    const struct bfs_manifest_visitor v = {mread_roll, mread_archive, mread_index, r, NULL, NULL};
    struct bfs_err err = {0};
    int rc = bfs_manifest_read(fd, &v, &err);
    close(fd);
    if (rc != 0)
        fail_msg("manifest %s: %d %s", key, rc, err.msg);
    assert_int_equal(r->n_roll, 1);
}

/* The node a roll id starts with: "<node>-<stamp, 16>-<state, 8>-<row>". */
static void roll_node(const char *roll_id, char node[72])
{
    const char *last = strrchr(roll_id, '-');
    assert_non_null(last);
    size_t n = (size_t)(last - roll_id);
    assert_true(n > 16 + 1 + 8 + 1);
    n -= 16 + 1 + 8 + 1;
    assert_true(n >= 1 && n < 72);
    assert_int_equal(roll_id[n], '-');
    assert_int_equal(roll_id[n + 1 + 8], 'T');
    assert_int_equal(roll_id[n + 1 + 15], 'Z');
    assert_int_equal(roll_id[n + 1 + 16], '-');
    memcpy(node, roll_id, n);
    node[n] = '\0';
}

void check_roll(struct tenv *e, const char *roll_id, const struct mroll *m, size_t others)
{
    char pending[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), -ENOENT);
    assert_int_equal(tenv_work_files(e, NULL, 0), 0);

    /* The store: exactly the model's archives (and the other rolls'), and
     * under _battlefs/ only what the ledger puts there. */
    pthread_mutex_lock(&e->ms->lock);
    assert_int_equal(e->ms->changed, 0);
    assert_int_equal(e->ms->bad_sha, 0);
    char infix[BFS_ROLL_ID_MAX + 2];
    snprintf(infix, sizeof infix, "/%s-", roll_id);
    size_t mine = 0, data = 0;
    for (size_t i = 0; i < e->ms->n; i++) {
        const char *k = e->ms->obj[i].key;
        if (!has_prefix(k, BFS_LEDGER_PREFIX)) {
            data++;
            mine += strstr(k, infix) != NULL;
            continue;
        }
        size_t n = strlen(k);
        int known = (has_prefix(k, BFS_LEDGER_PREFIX "schemas/") && n > 5 &&
                     strcmp(k + n - 5, ".avsc") == 0) ||
                    (has_prefix(k, BFS_LEDGER_PREFIX "manifests/") && n > 5 &&
                     strcmp(k + n - 5, ".avro") == 0) ||
                    has_prefix(k, LOG_PREFIX) ||
                    (has_prefix(k, BFS_LEDGER_PREFIX "nodes/") && n > 6 &&
                     strcmp(k + n - 6, "/lease") == 0);
        if (!known)
            fail_msg("unexpected object %s in the store", k);
    }
    pthread_mutex_unlock(&e->ms->lock);
    assert_int_equal(data, m->n + others);
    assert_int_equal(mine, m->n);
    for (size_t i = 0; i < m->n; i++) {
        const struct memobj *o = memstore_find(e->ms, m->a[i].key);
        if (!o)
            fail_msg("no object %s in the store", m->a[i].key);
        assert_int_equal(o->len, m->a[i].bytes.len);
        assert_memory_equal(o->data, m->a[i].bytes.data, o->len);
        char skey[128];
        snprintf(skey, sizeof skey, BFS_LEDGER_PREFIX "schemas/%s.avsc", m->a[i].fingerprint);
        o = memstore_find(e->ms, skey);
        if (!o)
            fail_msg("no schema %s in the store", skey);
        assert_int_equal(o->len, strlen(SCHEMA));
        assert_memory_equal(o->data, SCHEMA, o->len);
    }

    /* The log: one roll entry names the roll, with its manifest. */
    char node[72];
    roll_node(roll_id, node);
    struct tlog *t;
    size_t n_log = tlog_read(e->ms, &t);
    const struct tlog *entry = NULL;
    for (size_t i = 0; i < n_log; i++)
        if (!t[i].fence && strcmp(t[i].roll_id, roll_id) == 0) {
            if (entry)
                fail_msg("log entries %" PRId64 " and %" PRId64 " both name roll %s", entry->seq,
                         t[i].seq, roll_id);
            entry = &t[i];
        }
    if (!entry)
        fail_msg("no log entry names roll %s", roll_id);
    assert_string_equal(entry->node, node);
    char mkey[256];
    assert_int_equal(bfs_ledger_manifest_key(node, roll_id, mkey, sizeof mkey), 0);
    assert_string_equal(entry->manifest, mkey);
    const struct memobj *mo = memstore_find(e->ms, mkey);
    if (!mo)
        fail_msg("no manifest %s in the store", mkey);
    assert_int_equal(entry->size, mo->len);
    uint8_t sha[32];
    char hex[65];
    assert_int_equal(bfs_sha256(mo->data, mo->len, sha), 0);
    bfs_hex(sha, 32, hex);
    assert_string_equal(entry->sha256, hex);
    int64_t seq = entry->seq;
    free(t);

    /* The manifest: exactly the model. */
    struct mread *r = calloc(1, sizeof *r);
    assert_non_null(r);
    manifest_decode(e->ms, mkey, r);
    assert_string_equal(r->node, node);
    assert_string_equal(r->roll_id, roll_id);
    assert_int_equal(r->roll.rows, m->rows);
    assert_int_equal(r->roll.bytes, m->bytes);
    assert_int_equal(r->n_a, m->n);
    for (size_t i = 0; i < m->n; i++) {
        const struct march *a = &m->a[i];
        assert_string_equal(r->a[i].key, a->key);
        assert_string_equal(r->a[i].table, a->table);
        assert_string_equal(r->a[i].period, a->period);
        assert_string_equal(r->a[i].fp, a->fingerprint);
        assert_int_equal(r->a[i].codec, a->codec);
        assert_int_equal(r->a[i].size, a->bytes.len);
        assert_int_equal(r->a[i].header_length, a->header_length);
        assert_int_equal(bfs_sha256(a->bytes.data, a->bytes.len, sha), 0);
        assert_memory_equal(r->a[i].sha256, sha, 32);
        assert_int_equal(r->a[i].n, a->n_idx);
        for (size_t j = 0; j < a->n_idx; j++) {
            const struct mindex *x = &a->idx[j];
            size_t k = r->a[i].first + j;
            assert_string_equal(r->x[k].dataset, x->dataset);
            assert_int_equal(r->x[k].start, x->start);
            assert_int_equal(r->x[k].length, x->length);
            assert_int_equal(r->x[k].records, x->records);
            if (r->x[k].uploaded_at < x->at_lo || r->x[k].uploaded_at > x->at_hi)
                fail_msg("%s %s: uploaded_at %" PRId64 ", want %" PRId64 "..%" PRId64, a->key,
                         x->dataset, r->x[k].uploaded_at, x->at_lo, x->at_hi);
        }
    }

    /* The catalog: archived_files and block_indexes, exactly the model's (and
     * the manifest's), the roll committed at its log position. */
    sqlite3 *db = sql_open(e);
    sqlite3_stmt *st = sql_prepare(db, "SELECT committed_at IS NOT NULL, log_seq, node, row_count,"
                                       " byte_count FROM rolls WHERE id = ?1");
    sqlite3_bind_text(st, 1, roll_id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    assert_int_equal(sqlite3_column_int64(st, 1), seq);
    assert_string_equal((const char *)sqlite3_column_text(st, 2), node);
    assert_int_equal(sqlite3_column_int64(st, 3), m->rows);
    assert_int_equal(sqlite3_column_int64(st, 4), m->bytes);
    sqlite3_finalize(st);
    st = sql_prepare(db, "SELECT file_path, table_name, period_tag, size,"
                         " header_length, seq FROM archived_files"
                         " WHERE roll_id = ?1 ORDER BY seq");
    sqlite3_bind_text(st, 1, roll_id, -1, SQLITE_STATIC);
    for (size_t i = 0; i < m->n; i++) {
        const struct march *a = &m->a[i];
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), a->key);
        assert_string_equal((const char *)sqlite3_column_text(st, 1), a->table);
        assert_string_equal((const char *)sqlite3_column_text(st, 2), a->period);
        assert_int_equal(sqlite3_column_int64(st, 3), a->bytes.len);
        assert_int_equal(sqlite3_column_int64(st, 4), a->header_length);
        assert_int_equal(sqlite3_column_int64(st, 5), i);
    }
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    st = sql_prepare(db, "SELECT a.file_path, b.dataset_id, b.table_name, b.period_tag,"
                         " b.start_byte, b.length, b.record_count, b.uploaded_at"
                         " FROM block_indexes b"
                         " JOIN archived_files a ON a.id = b.file_id WHERE a.roll_id = ?1"
                         " ORDER BY a.seq, b.start_byte");
    sqlite3_bind_text(st, 1, roll_id, -1, SQLITE_STATIC);
    for (size_t i = 0; i < m->n; i++) {
        const struct march *a = &m->a[i];
        for (size_t j = 0; j < a->n_idx; j++) {
            const struct mindex *x = &a->idx[j];
            assert_int_equal(sqlite3_step(st), SQLITE_ROW);
            assert_string_equal((const char *)sqlite3_column_text(st, 0), a->key);
            assert_string_equal((const char *)sqlite3_column_text(st, 1), x->dataset);
            assert_string_equal((const char *)sqlite3_column_text(st, 2), a->table);
            assert_string_equal((const char *)sqlite3_column_text(st, 3), a->period);
            assert_int_equal(sqlite3_column_int64(st, 4), x->start);
            assert_int_equal(sqlite3_column_int64(st, 5), x->length);
            assert_int_equal(sqlite3_column_int64(st, 6), x->records);
            assert_int_equal(sqlite3_column_int64(st, 7), r->x[r->a[i].first + j].uploaded_at);
        }
    }
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    free(r);
    /* No index row points at an archive that is not the catalog's. */
    st = sql_prepare(db, "SELECT count(*) FROM block_indexes"
                         " WHERE file_id NOT IN (SELECT id FROM archived_files)");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

void check_datasets(struct tenv *e, size_t n_up)
{
    check_datasets_in(e, e, n_up);
}

void check_datasets_in(struct tenv *reader, struct tenv *e, size_t n_up)
{
    struct bfs_buf want = {0}, got = {0};
    for (size_t i = 0; i < n_up; i++) {
        const struct tupload *u = &e->up[i];
        size_t k;
        for (k = 0; k < i; k++) /* each dataset once */
            if (strcmp(e->up[k].table, u->table) == 0 && strcmp(e->up[k].period, u->period) == 0 &&
                strcmp(e->up[k].dataset, u->dataset) == 0)
                break;
        if (k < i)
            continue;
        tenv_dataset_bytes(e, u->table, u->period, u->dataset, n_up, &want);
        struct bfs_dataset_view v;
        assert_int_equal(bfs_catalog_dataset(reader->cat, u->table, u->period, u->dataset, &v), 0);
        bfs_buf_reset(&got);
        assert_int_equal(bfs_buf_append(&got, v.part.header, v.part.header_len), 0);
        for (size_t s = 0; s < v.n; s++) {
            const struct bfs_segment *sg = &v.seg[s];
            assert_int_equal(bfs_buf_reserve(&got, sg->length), 0);
            if (sg->kind == BFS_SEG_COLD) {
                const struct memobj *o = memstore_find(reader->ms, sg->key);
                if (!o)
                    fail_msg("%s/%s/%s: segment in %s, not in the store", u->table, u->period,
                             u->dataset, sg->key);
                assert_true(sg->offset + sg->length <= o->len);
                memcpy(got.data + got.len, o->data + sg->offset, sg->length);
            } else {
                assert_int_equal(
                    bfs_catalog_read_hot(reader->cat, sg->id, 0, got.data + got.len, sg->length),
                    0);
            }
            got.len += sg->length;
        }
        assert_int_equal(v.size, got.len);
        bfs_dataset_view_free(&v);
        if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0)
            fail_msg("%s/%s/%s: %zu bytes, want %zu", u->table, u->period, u->dataset, got.len,
                     want.len);
    }
    bfs_buf_free(&want);
    bfs_buf_free(&got);
}
