/* test_checkpoint.c - checkpoints and the catalog: a catalog X built by
 * applying log entries is snapshot into a checkpoint file, which is loaded
 * into catalogs that applied nothing of the log; their tables must hold X's
 * rows, compared row by row with SQLite. Also: the snapshot is consistent and
 * streams (memory does not follow the rows), and what a load refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/catalog.h"
#include "battlefs/manifest.h"
#include "battlefs/names.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "testenv.h"

#define T1 "battle"
#define P1 "2025-12-18"
#define T2 "ship"
#define P2 "2025-12-19"

/* ---- building catalogs ---- */

/* The archive fields of (table, period) from its partition. */
struct layout {
    char fingerprint[17];
    enum bfs_codec codec;
    uint64_t header_len;
};

static void layout_of(struct bfs_catalog *cat, const char *table, const char *period,
                      struct layout *l)
{
    struct bfs_partition p;
    assert_int_equal(bfs_catalog_partition_get(cat, table, period, &p), 0);
    memcpy(l->fingerprint, p.fingerprint, 17);
    l->codec = p.codec;
    l->header_len = p.header_len;
    bfs_partition_free(&p);
}

static void apply_ok(struct bfs_cat_apply *a, int rc, struct bfs_err *err)
{
    int own = 0;
    rc = bfs_catalog_apply_end(a, rc, &own, err);
    if (rc != 0)
        fail_msg("apply: %d %s", rc, err->msg);
}

/* Apply log entry seq: a roll of another node with n_arch archives of n_idx
 * index rows each in (table, period); dataset names of name_len characters. */
static void apply_foreign(struct bfs_catalog *cat, int64_t seq, const char *node, int64_t epoch,
                          const char *table, const char *period, int n_arch, int n_idx,
                          int name_len)
{
    struct layout l;
    layout_of(cat, table, period, &l);
    char roll_id[BFS_ROLL_ID_MAX];
    snprintf(roll_id, sizeof roll_id, "%s-20251218T1300%02dZ-0f3a9c21-%" PRId64, node,
             (int)(seq % 60), seq * 1000);
    const uint64_t len = 100;
    struct bfs_log_roll r = {
        .seq = seq,
        .node = node,
        .roll_id = roll_id,
        .epoch = epoch,
        .claimed_at = 1766062000 + seq,
        .committed_at = 1766063000 + seq,
        .rows = (uint64_t)(n_arch * n_idx) + 1,
        .bytes = (uint64_t)(n_arch * n_idx) * len,
    };
    struct bfs_cat_apply *a;
    assert_int_equal(bfs_catalog_apply_begin(cat, &r, &a), 0);
    struct bfs_err err = {0};
    int rc = 0;
    for (int k = 0; k < n_arch && rc == 0; k++) {
        char key[256];
        snprintf(key, sizeof key, "%s/%s/%s-%d.avro", table, period, roll_id, k);
        struct bfs_manifest_archive ar = {
            .key = key,
            .table = table,
            .period = period,
            .size = l.header_len + (uint64_t)n_idx * len,
            .header_length = l.header_len,
            .schema_fingerprint = l.fingerprint,
            .codec = l.codec,
        };
        for (int i = 0; i < 32; i++)
            ar.sha256[i] = (uint8_t)(seq * 31 + k * 7 + i);
        rc = bfs_catalog_apply_archive(a, &ar, &err);
        for (int i = 0; i < n_idx && rc == 0; i++) {
            char name[BFS_NAME_MAX + 1];
            snprintf(name, sizeof name, "d%0*d", name_len - 1, i);
            struct bfs_manifest_index x = {
                .dataset = name,
                .start = l.header_len + (uint64_t)i * len,
                .length = len,
                .records = (uint64_t)(i % 7 + 1),
                .uploaded_at = 1766061000 + i,
            };
            rc = bfs_catalog_apply_index(a, &x, &err);
        }
    }
    apply_ok(a, rc, &err);
}

/* Apply log entry seq: the commit of this catalog's pending claim (node
 * "a"), whose rows are the uploads up[first..last]: one archive of T1/P1
 * with one index row per dataset (its uploads' bytes, in commit order). */
static void apply_own(struct tenv *e, int64_t seq, int64_t epoch, const char *roll_id, size_t first,
                      size_t last)
{
    struct layout l;
    layout_of(e->cat, T1, P1, &l);
    struct bfs_roll_info info;
    assert_int_equal(bfs_catalog_roll_info(e->cat, roll_id, &info), 0);
    struct bfs_log_roll r = {
        .seq = seq,
        .node = "a",
        .roll_id = roll_id,
        .epoch = epoch,
        .claimed_at = info.claimed_at,
        .committed_at = 1766063000 + seq,
        .rows = info.rows,
        .bytes = info.bytes,
    };
    struct bfs_cat_apply *a;
    assert_int_equal(bfs_catalog_apply_begin(e->cat, &r, &a), 0);
    char key[256];
    snprintf(key, sizeof key, "%s/%s/%s-0.avro", T1, P1, roll_id);
    struct bfs_manifest_archive ar = {
        .key = key,
        .table = T1,
        .period = P1,
        .size = l.header_len + info.bytes,
        .header_length = l.header_len,
        .schema_fingerprint = l.fingerprint,
        .codec = l.codec,
    };
    memset(ar.sha256, 0xa5, 32);
    struct bfs_err err = {0};
    int rc = bfs_catalog_apply_archive(a, &ar, &err);
    /* datasets in name order, each its uploads' total */
    const char *names[] = {"user1", "user2"};
    uint64_t start = l.header_len;
    for (int d = 0; d < 2 && rc == 0; d++) {
        struct bfs_manifest_index x = {.dataset = names[d], .start = start, .uploaded_at = 1};
        for (size_t i = first; i <= last; i++)
            if (strcmp(e->up[i].dataset, names[d]) == 0) {
                x.length += e->up[i].len;
                x.records += e->up[i].records;
            }
        start += x.length;
        rc = bfs_catalog_apply_index(a, &x, &err);
    }
    int own = 0;
    rc = bfs_catalog_apply_end(a, rc, &own, &err);
    if (rc != 0)
        fail_msg("apply own: %d %s", rc, err.msg);
    assert_int_equal(own, 1);
}

/* Uploads of user1, user2, user1 in T1/P1 and their claim by node "a". */
static void upload_and_claim(struct tenv *e, char roll_id[BFS_ROLL_ID_MAX], size_t *first,
                             size_t *last)
{
    *first = tenv_upload(e, T1, P1, "user1", 300, 1);
    tenv_upload(e, T1, P1, "user2", 200, 2);
    *last = tenv_upload(e, T1, P1, "user1", 100, 3);
    uint64_t rows, bytes;
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "a", roll_id, &rows, &bytes), 0);
    assert_int_equal(rows, 3);
}

/* ---- writing and loading checkpoints ---- */

struct snap {
    struct bfs_manifest_writer *w;
    uint64_t rolls, archives, indexes, nodes;
    /* the memory test: in-use heap bytes, sampled at every call */
    int sample;
    size_t peak;
    /* the consistency test: at the first index row, the catalog moves on */
    struct bfs_catalog *move;
    int64_t move_to;
};

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static void sample(struct snap *s)
{
    if (s->sample) {
        size_t n = heap_in_use();
        if (n > s->peak)
            s->peak = n;
    }
}

static int snap_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                     int64_t committed_at)
{
    struct snap *s = ctx;
    s->rolls++;
    sample(s);
    return s->w ? bfs_checkpoint_add_roll(s->w, r, seq, epoch, committed_at) : 0;
}

static int snap_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct snap *s = ctx;
    s->archives++;
    sample(s);
    return s->w ? bfs_manifest_add_archive(s->w, a) : 0;
}

static int snap_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct snap *s = ctx;
    if (s->indexes++ == 0 && s->move)
        assert_int_equal(bfs_catalog_log_skip(s->move, s->move_to, "late", 99), 0);
    sample(s);
    return s->w ? bfs_manifest_add_index(s->w, x) : 0;
}

static int snap_node(void *ctx, const char *node, int64_t epoch)
{
    struct snap *s = ctx;
    s->nodes++;
    sample(s);
    return s->w ? bfs_checkpoint_add_node(s->w, node, epoch) : 0;
}

/* Snapshot cat at upto into a new checkpoint file at path. */
static void snapshot_to(struct bfs_catalog *cat, int64_t upto, const char *path, struct snap *s)
{
    assert_int_equal(bfs_checkpoint_create(path, &s->w), 0);
    struct bfs_checkpoint_visitor v = {snap_roll, snap_archive, snap_index, snap_node,
                                       s,         NULL,         NULL};
    int rc = bfs_catalog_snapshot(cat, upto, &v);
    if (rc != 0) {
        bfs_manifest_abort(s->w);
        fail_msg("snapshot: %d", rc);
    }
    uint8_t sha[32];
    uint64_t size;
    assert_int_equal(bfs_manifest_finish(s->w, sha, &size), 0);
    s->w = NULL;
}

/* ---- comparing catalogs ---- */

static sqlite3 *sql_open(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
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

/* The rows of sql in the databases at px and py are the same, in the same
 * order, column by column (type and value). Returns how many. */
static int64_t same_rows(const char *px, const char *py, const char *sql)
{
    sqlite3 *dx = sql_open(px), *dy = sql_open(py);
    sqlite3_stmt *sx = sql_prepare(dx, sql), *sy = sql_prepare(dy, sql);
    int64_t n = 0;
    for (;; n++) {
        int rx = sqlite3_step(sx), ry = sqlite3_step(sy);
        if (rx != ry)
            fail_msg("%s: row %" PRId64 ": %s in X, %s in Y", sql, n,
                     rx == SQLITE_ROW ? "a row" : "no row", ry == SQLITE_ROW ? "a row" : "no row");
        if (rx != SQLITE_ROW) {
            assert_int_equal(rx, SQLITE_DONE);
            break;
        }
        int cols = sqlite3_column_count(sx);
        for (int c = 0; c < cols; c++) {
            int tx = sqlite3_column_type(sx, c), ty = sqlite3_column_type(sy, c);
            int nx = sqlite3_column_bytes(sx, c), ny = sqlite3_column_bytes(sy, c);
            const void *vx = tx == SQLITE_BLOB ? sqlite3_column_blob(sx, c)
                                               : (const void *)sqlite3_column_text(sx, c);
            const void *vy = ty == SQLITE_BLOB ? sqlite3_column_blob(sy, c)
                                               : (const void *)sqlite3_column_text(sy, c);
            if (tx != ty || nx != ny || (nx && memcmp(vx, vy, (size_t)nx) != 0))
                fail_msg("%s: row %" PRId64 ", column %s differs", sql, n,
                         sqlite3_column_name(sx, c));
        }
    }
    sqlite3_finalize(sx);
    sqlite3_finalize(sy);
    sqlite3_close(dx);
    sqlite3_close(dy);
    return n;
}

static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db = sql_open(path);
    sqlite3_stmt *st = sql_prepare(db, sql);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* What a checkpoint carries of X, compared with Y. own: Y is X before the
 * log (it holds X's pending claim), so the claim ranges are the same too. */
static void check_same(const char *px, const char *py, int own, int64_t archives, int64_t indexes,
                       int64_t rolls, int64_t nodes)
{
    assert_int_equal(same_rows(px, py,
                               "SELECT id, file_path, table_name, period_tag, size, header_length,"
                               " roll_id, seq, created_at, sha256, schema_fingerprint, codec"
                               " FROM archived_files ORDER BY id"),
                     archives);
    assert_int_equal(same_rows(px, py,
                               "SELECT id, dataset_id, table_name, period_tag, file_id, start_byte,"
                               " length, record_count, uploaded_at FROM block_indexes ORDER BY id"),
                     indexes);
    /* created_at is the roll's committed_at */
    assert_int_equal(sql_int(py, "SELECT count(*) FROM archived_files a JOIN rolls r"
                                 " ON r.id = a.roll_id WHERE a.created_at != r.committed_at"),
                     0);
    assert_int_equal(
        same_rows(px, py,
                  own ? "SELECT * FROM rolls WHERE log_seq IS NOT NULL ORDER BY log_seq"
                      : "SELECT id, claimed_at, committed_at, row_count, byte_count,"
                        " node, log_seq, epoch FROM rolls"
                        " WHERE log_seq IS NOT NULL ORDER BY log_seq"),
        rolls);
    /* (but "late": test_snapshot_streams applies it to X after the snapshot) */
    assert_int_equal(same_rows(px, py,
                               "SELECT node, epoch FROM ledger_nodes WHERE node != 'late'"
                               " ORDER BY node"),
                     nodes);
}

/* ---- tests ---- */

/* X: log entries 1 to 5 (a foreign roll, a fence, X's own roll, a fenced
 * roll, a foreign roll of another partition), then a pending claim. Y0 is a
 * copy of X taken before the log (with the claim of entry 3), Y1 a new catalog. */
static void test_snapshot_load_equal(void **state)
{
    (void)state;
    struct tenv *x = tenv_new(0);
    struct tenv *y0 = tenv_new(0);
    struct tenv *y1 = tenv_new(0);
    char roll_id[BFS_ROLL_ID_MAX];
    size_t first, last;
    upload_and_claim(x, roll_id, &first, &last);
    /* Y0: X as it is now, before any log entry */
    bfs_catalog_close(x->cat); /* the last connection: the WAL is in the database */
    x->cat = NULL;
    bfs_catalog_close(y0->cat);
    y0->cat = NULL;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", x->db, y0->db);
    assert_int_equal(system(cmd), 0);
    tenv_reopen(x);
    tenv_reopen(y0);
    tenv_add_partition(x->cat, T2, P2, BFS_CODEC_DEFLATE);

    apply_foreign(x->cat, 1, "b", 1, T1, P1, 2, 3, 8);
    assert_int_equal(bfs_catalog_log_skip(x->cat, 2, "c", 5), 0); /* a fence */
    apply_own(x, 3, 2, roll_id, first, last);
    assert_int_equal(bfs_catalog_log_skip(x->cat, 4, NULL, 0), 0); /* a fenced roll */
    apply_foreign(x->cat, 5, "b", 1, T2, P2, 1, 2, 20);
    /* a pending claim: not in the checkpoint */
    tenv_upload(x, T1, P1, "user3", 50, 4);
    char pending[BFS_ROLL_ID_MAX];
    uint64_t rows, bytes;
    assert_int_equal(bfs_catalog_roll_claim(x->cat, "a", pending, &rows, &bytes), 0);

    char ck[128], ck2[128];
    snprintf(ck, sizeof ck, "%s/ckpt.avro", x->dir);
    struct snap s = {0};
    struct bfs_checkpoint_visitor none = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    assert_int_equal(bfs_catalog_snapshot(x->cat, 4, &none), -ESTALE);
    assert_int_equal(bfs_catalog_snapshot(x->cat, 6, &none), -ESTALE);
    snapshot_to(x->cat, 5, ck, &s);
    assert_int_equal(s.rolls, 3);
    assert_int_equal(s.archives, 4);
    assert_int_equal(s.indexes, 2 * 3 + 2 + 2);
    assert_int_equal(s.nodes, 3); /* a, b, c */

    /* Y1: a new catalog; its partitions first, as for a log entry */
    struct bfs_err err = {0};
    tenv_add_partition(y1->cat, T2, P2, BFS_CODEC_DEFLATE);
    assert_int_equal(tenv_load_checkpoint(y1->cat, ck, 5, &err), -ENOENT); /* no T1/P1 yet */
    int64_t pos;
    assert_int_equal(bfs_catalog_ledger_state(y1->cat, &pos, NULL), 0);
    assert_int_equal(pos, 0); /* rolled back */
    assert_int_equal(tenv_sql_int(y1, "SELECT count(*) FROM rolls"), 0);
    tenv_add_partition(y1->cat, T1, P1, BFS_CODEC_NULL);
    err = (struct bfs_err){0};
    if (tenv_load_checkpoint(y1->cat, ck, 5, &err) != 0)
        fail_msg("load: %s", err.msg);
    assert_int_equal(bfs_catalog_ledger_state(y1->cat, &pos, NULL), 0);
    assert_int_equal(pos, 5);
    check_same(x->db, y1->db, 0, 4, 10, 3, 3);
    assert_int_equal(tenv_sql_int(y1, "SELECT count(*) FROM rolls WHERE first_row != 0"
                                      " OR last_row != -1 OR log_seq IS NULL"),
                     0);
    /* loaded once: the log goes on from there */
    assert_int_equal(tenv_load_checkpoint(y1->cat, ck, 5, &err), -EEXIST);
    /* Y1's snapshot is X's, byte for byte */
    snprintf(ck2, sizeof ck2, "%s/ckpt2.avro", y1->dir);
    struct snap s2 = {0};
    snapshot_to(y1->cat, 5, ck2, &s2);
    struct bfs_buf b1 = {0}, b2 = {0};
    read_whole(ck, &b1);
    read_whole(ck2, &b2);
    assert_int_equal(b1.len, b2.len);
    assert_memory_equal(b1.data, b2.data, b1.len);
    bfs_buf_free(&b1);
    bfs_buf_free(&b2);

    /* Y0: X before the log, with the claim of entry 3: the load commits it */
    assert_int_equal(tenv_sql_int(y0, "SELECT count(*) FROM buffer_rows"), 3);
    tenv_add_partition(y0->cat, T2, P2, BFS_CODEC_DEFLATE);
    err = (struct bfs_err){0};
    if (tenv_load_checkpoint(y0->cat, ck, 5, &err) != 0)
        fail_msg("load: %s", err.msg);
    check_same(x->db, y0->db, 1, 4, 10, 3, 3);
    assert_int_equal(tenv_sql_int(y0, "SELECT count(*) FROM buffer_rows"), 0);
    char rid[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_pending(y0->cat, rid, NULL), -ENOENT);
    int64_t seq = 0;
    assert_int_equal(bfs_catalog_roll_committed(y0->cat, roll_id, &seq), 1);
    assert_int_equal(seq, 3);
    /* and the cold part of a dataset reads the same */
    struct bfs_dataset_view vx, vy;
    assert_int_equal(bfs_catalog_dataset(x->cat, T1, P1, "user1", &vx), 0);
    assert_int_equal(bfs_catalog_dataset(y0->cat, T1, P1, "user1", &vy), 0);
    assert_int_equal(vx.n, vy.n);
    assert_int_equal(vx.size, vy.size);
    for (size_t i = 0; i < vx.n; i++) {
        assert_int_equal(vx.seg[i].kind, BFS_SEG_COLD);
        assert_string_equal(vx.seg[i].key, vy.seg[i].key);
        assert_int_equal(vx.seg[i].offset, vy.seg[i].offset);
        assert_int_equal(vx.seg[i].length, vy.seg[i].length);
    }
    bfs_dataset_view_free(&vx);
    bfs_dataset_view_free(&vy);

    tenv_free(x);
    tenv_free(y0);
    tenv_free(y1);
}

/* 40,000 index rows of 100-character dataset names (about 6 MB of rows):
 * the snapshot's heap stays far below that, and the snapshot is one read
 * transaction: an entry applied during the walk is not in it. */
static void test_snapshot_streams(void **state)
{
    (void)state;
    enum { N_ARCH = 4, N_IDX = 10000, NAME = 100 };
    struct tenv *x = tenv_new(0);
    struct tenv *y = tenv_new(0);
    tenv_add_partition(x->cat, T2, P2, BFS_CODEC_DEFLATE);
    tenv_add_partition(y->cat, T2, P2, BFS_CODEC_DEFLATE);
    apply_foreign(x->cat, 1, "b", 1, T2, P2, N_ARCH, N_IDX, NAME);
    apply_foreign(x->cat, 2, "c", 3, T2, P2, 1, 1, 5);

    /* the heap during a walk that only counts */
    struct snap s = {.sample = 1};
    struct bfs_checkpoint_visitor v = {snap_roll, snap_archive, snap_index, snap_node,
                                       &s,        NULL,         NULL};
    size_t base = heap_in_use();
    s.peak = base;
    assert_int_equal(bfs_catalog_snapshot(x->cat, 2, &v), 0);
    assert_int_equal(s.indexes, N_ARCH * N_IDX + 1);
    size_t grew = s.peak - base;
    print_message("snapshot of %d index rows: heap grew by %zu bytes\n", N_ARCH * N_IDX + 1, grew);
    /* SQLite's page cache (2 MiB by default) and statements, no rows */
    assert_true(grew < 3u * 1024 * 1024);

    /* into a file while X applies entry 3 (a new node's fence) */
    char ck[128];
    snprintf(ck, sizeof ck, "%s/ckpt.avro", x->dir);
    struct snap w = {.move = x->cat, .move_to = 3};
    snapshot_to(x->cat, 2, ck, &w);
    assert_int_equal(w.nodes, 2); /* b, c: not "late" */
    int64_t pos;
    assert_int_equal(bfs_catalog_ledger_state(x->cat, &pos, NULL), 0);
    assert_int_equal(pos, 3);
    struct bfs_err err = {0};
    if (tenv_load_checkpoint(y->cat, ck, 2, &err) != 0)
        fail_msg("load: %s", err.msg);
    /* X without entry 3 */
    check_same(x->db, y->db, 0, N_ARCH + 1, N_ARCH * N_IDX + 1, 2, 2);
    assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM ledger_nodes"), 3);
    tenv_free(x);
    tenv_free(y);
}

static void load_roll_direct(struct bfs_cat_ckpt *c, const char *id, int64_t seq, int want,
                             struct bfs_err *err)
{
    const struct bfs_manifest_roll r = {
        .node = "b", .roll_id = id, .rows = 1, .bytes = 0, .claimed_at = 1};
    int rc = bfs_catalog_ckpt_roll(c, &r, seq, 1, 2, err);
    if (rc != want)
        fail_msg("roll %s at %" PRId64 ": %d (%s), expected %d", id, seq, rc, err->msg, want);
}

/* What a load refuses. */
static void test_load_refuses(void **state)
{
    (void)state;
    struct tenv *y = tenv_new(0);
    struct bfs_cat_ckpt *c;
    struct bfs_err err = {0};
    int64_t pos;

    /* a pending claim is no log entry: a load may begin */
    char roll_id[BFS_ROLL_ID_MAX];
    size_t first, last;
    upload_and_claim(y, roll_id, &first, &last);
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), 0);
    assert_int_equal(bfs_catalog_ckpt_end(c, -EIO, 5, &err), -EIO); /* rolled back */

    /* seq not increasing, a roll twice, rows after the nodes, the position */
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), 0);
    load_roll_direct(c, "b-r1", 3, 0, &err);
    load_roll_direct(c, "b-r2", 3, -EINVAL, &err);
    assert_int_equal(bfs_catalog_ckpt_end(c, 0, 5, &err), -EINVAL); /* a call failed */
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), 0);
    load_roll_direct(c, "b-r1", 3, 0, &err);
    load_roll_direct(c, "b-r1", 4, -EINVAL, &err);
    assert_non_null(strstr(err.msg, "again"));
    bfs_catalog_ckpt_end(c, -EINVAL, 5, &err);
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), 0);
    load_roll_direct(c, "b-r1", 3, 0, &err);
    assert_int_equal(bfs_catalog_ckpt_node(c, "b", 1, &err), 0);
    load_roll_direct(c, "b-r2", 4, -EINVAL, &err);
    bfs_catalog_ckpt_end(c, -EINVAL, 5, &err);
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), 0);
    load_roll_direct(c, "b-r1", 3, 0, &err);
    struct bfs_manifest_index x = {.dataset = "d", .start = 0, .length = 0};
    assert_int_equal(bfs_catalog_ckpt_index(c, &x, &err), -EINVAL); /* before an archive */
    bfs_catalog_ckpt_end(c, -EINVAL, 5, &err);
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), 0);
    load_roll_direct(c, "b-r1", 3, 0, &err);
    err = (struct bfs_err){0};
    assert_int_equal(bfs_catalog_ckpt_end(c, 0, 2, &err), -EINVAL); /* before its last roll */
    /* a visitor's stop is rolled back too */
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), 0);
    load_roll_direct(c, "b-r1", 3, 0, &err);
    assert_int_equal(bfs_catalog_ckpt_end(c, 99, 5, &err), 99);
    assert_int_equal(bfs_catalog_ledger_state(y->cat, &pos, NULL), 0);
    assert_int_equal(pos, 0);
    assert_int_equal(tenv_sql_int(y, "SELECT count(*) FROM rolls"), 1); /* the claim only */
    assert_int_equal(tenv_sql_int(y, "SELECT count(*) FROM ledger_nodes"), 0);

    /* a roll committed here before the log (as battlefs before the log did,
     * with an archive and an index row) is adopted: its rows become the
     * checkpoint's (the archive's columns, its place in the log; the index
     * rows the checkpoint holds), its rolls row takes the entry; the epoch
     * counts */
    tenv_add_partition(y->cat, T2, P2, BFS_CODEC_DEFLATE);
    struct layout l;
    layout_of(y->cat, T2, P2, &l);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(y->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO rolls(id, claimed_at, committed_at, first_row, last_row, row_count,"
             " byte_count) VALUES('b-old', 1, 2, 0, -1, 2, 70);"
             "INSERT INTO archived_files(file_path, table_name, period_tag, size, header_length,"
             " roll_id, seq, created_at) VALUES('%s/%s/old-0.avro', '%s', '%s', %" PRIu64
             ", %" PRIu64 ", 'b-old', 0, 2);"
             "INSERT INTO block_indexes(dataset_id, table_name, period_tag, file_id, start_byte,"
             " length, record_count, uploaded_at) SELECT d, '%s', '%s', a.id, %" PRIu64
             " + o, 35, 1, 1 FROM archived_files a, (SELECT 'u1' d, 0 o UNION SELECT 'u2', 35)"
             " WHERE a.roll_id = 'b-old';",
             T2, P2, T2, P2, l.header_len + 70, l.header_len, T2, P2, l.header_len);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), 0);
    const struct bfs_manifest_roll old = {
        .node = "b", .roll_id = "b-old", .rows = 2, .bytes = 70, .claimed_at = 1};
    assert_int_equal(bfs_catalog_ckpt_roll(c, &old, 2, 1, 2, &err), 0);
    char key[128];
    snprintf(key, sizeof key, "%s/%s/old-0.avro", T2, P2);
    struct bfs_manifest_archive a = {.key = key,
                                     .table = T2,
                                     .period = P2,
                                     .size = l.header_len + 70,
                                     .header_length = l.header_len,
                                     .schema_fingerprint = l.fingerprint,
                                     .codec = l.codec};
    memset(a.sha256, 0xab, sizeof a.sha256);
    assert_int_equal(bfs_catalog_ckpt_archive(c, &a, &err), 0);
    /* u1 only: u2 was erased later in the log */
    const struct bfs_manifest_index x1 = {
        .dataset = "u1", .start = l.header_len, .length = 35, .records = 1, .uploaded_at = 1};
    assert_int_equal(bfs_catalog_ckpt_index(c, &x1, &err), 0);
    const struct bfs_manifest_roll r3 = {
        .node = "d", .roll_id = "d-r3", .rows = 1, .bytes = 0, .claimed_at = 1};
    assert_int_equal(bfs_catalog_ckpt_roll(c, &r3, 3, 4, 5, &err), 0);
    assert_int_equal(bfs_catalog_ckpt_node(c, "b", 1, &err), 0);
    assert_int_equal(bfs_catalog_ckpt_node(c, "d", 4, &err), 0);
    assert_int_equal(bfs_catalog_ckpt_end(c, 0, 3, &err), 0);
    assert_int_equal(bfs_catalog_ledger_state(y->cat, &pos, NULL), 0);
    assert_int_equal(pos, 3);
    assert_int_equal(tenv_sql_int(y, "SELECT count(*) FROM rolls WHERE id = 'b-old'"
                                     " AND log_seq = 2 AND node = 'b' AND epoch = 1"
                                     " AND byte_count = 70 AND base = 0"),
                     1);
    assert_int_equal(tenv_sql_int(y, "SELECT log_seq FROM rolls WHERE id = 'd-r3'"), 3);
    assert_int_equal(tenv_sql_int(y, "SELECT count(*) FROM archived_files WHERE roll_id = 'b-old'"
                                     " AND ord = 2 AND seq = 0 AND dirty = 1"
                                     " AND hex(sha256) LIKE 'ABAB%'"),
                     1);
    assert_int_equal(tenv_sql_int(y, "SELECT count(*) FROM block_indexes"), 1);
    assert_int_equal(tenv_sql_int(y, "SELECT count(*) FROM block_indexes WHERE dataset_id = 'u1'"),
                     1);
    assert_int_equal(tenv_sql_int(y, "SELECT count(*) FROM ledger_nodes"), 2);
    assert_int_equal(tenv_sql_int(y, "SELECT epoch FROM ledger_nodes WHERE node = 'b'"), 1);

    /* the catalog applied log entries: -EEXIST, and nothing began */
    assert_int_equal(bfs_catalog_ckpt_begin(y->cat, &c), -EEXIST);
    struct tenv *z = tenv_new(0);
    assert_int_equal(bfs_catalog_log_skip(z->cat, 1, "b", 1), 0);
    assert_int_equal(bfs_catalog_ckpt_begin(z->cat, &c), -EEXIST);
    assert_int_equal(bfs_catalog_log_skip(z->cat, 2, NULL, 0), 0); /* the writer is free */
    tenv_free(z);
    tenv_free(y);
}

/* A bulk load (bfs_catalog_bulk with drop_indexes) into a new catalog: the
 * checkpoint's transaction drops block_indexes' indexes; the end makes them
 * again; a crash in between (the catalog closed without the end) leaves a
 * catalog whose next open makes them; either way the rows are X's and the
 * snapshot is X's, byte for byte. Manifests applied after the checkpoint in
 * the same bulk load append to the table without its indexes. */
static void test_bulk_load(void **state)
{
    (void)state;
    struct tenv *x = tenv_new(0);
    tenv_add_partition(x->cat, T2, P2, BFS_CODEC_DEFLATE);
    apply_foreign(x->cat, 1, "b", 1, T2, P2, 2, 3, 8);
    apply_foreign(x->cat, 2, "b", 1, T2, P2, 1, 4, 20);
    char ck[128];
    snprintf(ck, sizeof ck, "%s/ckpt.avro", x->dir);
    struct snap s = {0};
    snapshot_to(x->cat, 2, ck, &s);
    apply_foreign(x->cat, 3, "c", 1, T2, P2, 1, 2, 12);
    const char *idx = "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND"
                      " name IN ('block_indexes_dataset', 'block_indexes_file')";
    for (int crash = 0; crash < 2; crash++) {
        struct tenv *y = tenv_new(0);
        tenv_add_partition(y->cat, T2, P2, BFS_CODEC_DEFLATE);
        assert_int_equal(bfs_catalog_bulk(y->cat, 1, 1), 0);
        struct bfs_err err = {0};
        if (tenv_load_checkpoint(y->cat, ck, 2, &err) != 0)
            fail_msg("load: %s", err.msg);
        assert_int_equal(tenv_sql_int(y, idx), 0); /* dropped, committed */
        apply_foreign(y->cat, 3, "c", 1, T2, P2, 1, 2, 12);
        assert_int_equal(tenv_sql_int(y, idx), 0);
        if (crash)
            tenv_reopen(y); /* as after a kill -9: the open makes them */
        else
            assert_int_equal(bfs_catalog_bulk(y->cat, 0, 0), 0);
        assert_int_equal(tenv_sql_int(y, idx), 2);
        assert_int_equal(tenv_sql_int(y, "SELECT count(*) FROM block_indexes"), 2 * 3 + 4 + 2);
        bfs_catalog_close(y->cat);
        y->cat = NULL;
        bfs_catalog_close(x->cat);
        x->cat = NULL;
        check_same(x->db, y->db, 0, 4, 2 * 3 + 4 + 2, 3, 2);
        tenv_reopen(x);
        tenv_free(y);
    }
    tenv_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_load_equal),
        cmocka_unit_test(test_snapshot_streams),
        cmocka_unit_test(test_load_refuses),
        cmocka_unit_test(test_bulk_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
