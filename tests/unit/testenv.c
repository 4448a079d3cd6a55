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
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static int mem_put(struct bfs_store *st, const char *key, const struct bfs_put_src *src,
                   struct bfs_err *err)
{
    struct memstore *m = (struct memstore *)st;
    pthread_mutex_lock(&m->lock);
    int rc = m->put_rc;
    const char *msg = m->put_msg;
    pthread_mutex_unlock(&m->lock);
    if (rc)
        return msg ? bfs_err_set(err, rc, "%s", msg) : rc;
    if (bfs_store_key_check(key) < 0)
        return -EINVAL;
    struct bfs_buf b = {0};
    read_whole(src->path, &b);
    int sha_ok = 1;
    if (src->sha256) {
        uint8_t d[32];
        assert_int_equal(bfs_sha256(b.data, b.len, d), 0);
        sha_ok = memcmp(d, src->sha256, 32) == 0;
    }
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
    if (!o) {
        assert_int_equal(bfs_array_reserve(&m->obj, &m->cap, m->n + 1, sizeof *m->obj), 0);
        o = &m->obj[m->n++];
        memset(o, 0, sizeof *o);
        o->key = strdup(key);
        assert_non_null(o->key);
    } else {
        if (o->len != b.len || memcmp(o->data, b.data, b.len) != 0)
            m->changed++;
        free(o->data);
    }
    o->data = b.data;
    o->len = b.len;
    o->puts++;
    m->puts++;
    pthread_mutex_unlock(&m->lock);
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

static int mem_list(struct bfs_store *st, const char *prefix,
                    int (*cb)(void *ctx, const char *key, uint64_t size), void *ctx,
                    struct bfs_err *err)
{
    (void)err;
    struct memstore *m = (struct memstore *)st;
    pthread_mutex_lock(&m->lock);
    int rc = 0;
    for (size_t i = 0; i < m->n && rc == 0; i++)
        if (strncmp(m->obj[i].key, prefix, strlen(prefix)) == 0)
            rc = cb(ctx, m->obj[i].key, m->obj[i].len);
    pthread_mutex_unlock(&m->lock);
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
};

struct memstore *memstore_new(int wants_sha256)
{
    struct memstore *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->base.ops = &mem_ops;
    m->base.put_wants_sha256 = wants_sha256;
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

struct tenv *tenv_new(int wants_sha256)
{
    struct tenv *e = calloc(1, sizeof *e);
    assert_non_null(e);
    snprintf(e->dir, sizeof e->dir, "/tmp/bfs-unit-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->db, sizeof e->db, "%s/catalog.db", e->dir);
    snprintf(e->work, sizeof e->work, "%s/work", e->dir);
    assert_int_equal(mkdir(e->work, 0700), 0);
    assert_int_equal(bfs_catalog_open(e->db, &e->cat), 0);
    e->ms = memstore_new(wants_sha256);
    bfs_stats_init(&e->stats);
    bfs_errors_init(&e->errors);
    e->roll = (struct bfs_roll_deps){
        .cat = e->cat,
        .store = &e->ms->base,
        .stats = &e->stats,
        .errors = &e->errors,
        .work_dir = e->work,
        .archive_max_bytes = 1u << 20,
        .roll_interval = 3600,
        .roll_bytes = 1ull << 40,
    };
    struct bfs_err err = {0};
    assert_int_equal(bfs_schema_canonical(SCHEMA, strlen(SCHEMA), &e->canon, &e->canon_len, &err),
                     0);
    return e;
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
    bfs_catalog_close(e->cat);
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

void tenv_reopen(struct tenv *e)
{
    bfs_catalog_close(e->cat);
    e->cat = NULL;
    assert_int_equal(bfs_catalog_open(e->db, &e->cat), 0);
    e->roll.cat = e->cat;
}

size_t tenv_upload(struct tenv *e, const char *table, const char *period, const char *dataset,
                   size_t len, unsigned seed)
{
    assert_int_equal(bfs_array_reserve(&e->up, &e->cap_up, e->n_up + 1, sizeof *e->up), 0);
    struct tupload *u = &e->up[e->n_up];
    memset(u, 0, sizeof *u);
    snprintf(u->table, sizeof u->table, "%s", table);
    snprintf(u->period, sizeof u->period, "%s", period);
    snprintf(u->dataset, sizeof u->dataset, "%s", dataset);
    u->len = len;
    u->records = len / 10 + 1;
    u->data = malloc(len);
    assert_non_null(u->data);
    for (size_t i = 0; i < len; i++)
        u->data[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));

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
        .len = len,
        .records = u->records,
    };
    assert_int_equal(bfs_schema_sync(e->canon, e->canon_len, up.sync), 0);
    struct bfs_buf hdr = {0};
    assert_int_equal(bfs_ocf_layout_header(up.schema_json, up.schema_len, up.codec, up.sync, &hdr),
                     0);
    up.header = hdr.data;
    up.header_len = hdr.len;
    struct bfs_err err = {0};
    int rc = bfs_catalog_commit_upload(e->cat, &up, &err);
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
    for (size_t i = 0; i < n; i++) {
        const struct tupload *r = rows[i];
        struct march *a = out->n ? &out->a[out->n - 1] : NULL;
        int new_group = !a || strcmp(a->table, r->table) || strcmp(a->period, r->period);
        if (new_group) {
            tenv_header(e, r->table, r->period, &hdr);
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
        arch_rows++;
    }
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

void check_roll(struct tenv *e, const char *roll_id, const struct mroll *m, size_t others)
{
    char pending[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), -ENOENT);
    assert_int_equal(tenv_work_files(e, NULL, 0), 0);

    /* The store: exactly the model's objects (and the earlier rolls'). */
    pthread_mutex_lock(&e->ms->lock);
    assert_int_equal(e->ms->n, m->n + others);
    assert_int_equal(e->ms->changed, 0);
    assert_int_equal(e->ms->bad_sha, 0);
    char infix[BFS_ROLL_ID_MAX + 2];
    snprintf(infix, sizeof infix, "/%s-", roll_id);
    size_t mine = 0;
    for (size_t i = 0; i < e->ms->n; i++)
        mine += strstr(e->ms->obj[i].key, infix) != NULL;
    pthread_mutex_unlock(&e->ms->lock);
    assert_int_equal(mine, m->n);
    for (size_t i = 0; i < m->n; i++) {
        const struct memobj *o = memstore_find(e->ms, m->a[i].key);
        if (!o)
            fail_msg("no object %s in the store", m->a[i].key);
        assert_int_equal(o->len, m->a[i].bytes.len);
        assert_memory_equal(o->data, m->a[i].bytes.data, o->len);
    }

    /* The catalog: archived_files and block_indexes, exactly the model's. */
    sqlite3 *db = sql_open(e);
    sqlite3_stmt *st = sql_prepare(db, "SELECT file_path, table_name, period_tag, size,"
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
                         " b.start_byte, b.length, b.record_count FROM block_indexes b"
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
        }
    }
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
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
        assert_int_equal(bfs_catalog_dataset(e->cat, u->table, u->period, u->dataset, &v), 0);
        bfs_buf_reset(&got);
        assert_int_equal(bfs_buf_append(&got, v.part.header, v.part.header_len), 0);
        for (size_t s = 0; s < v.n; s++) {
            const struct bfs_segment *sg = &v.seg[s];
            assert_int_equal(bfs_buf_reserve(&got, sg->length), 0);
            if (sg->kind == BFS_SEG_COLD) {
                const struct memobj *o = memstore_find(e->ms, sg->key);
                if (!o)
                    fail_msg("%s/%s/%s: segment in %s, not in the store", u->table, u->period,
                             u->dataset, sg->key);
                assert_true(sg->offset + sg->length <= o->len);
                memcpy(got.data + got.len, o->data + sg->offset, sg->length);
            } else {
                assert_int_equal(
                    bfs_catalog_read_hot(e->cat, sg->id, 0, got.data + got.len, sg->length), 0);
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
