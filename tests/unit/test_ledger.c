/* test_ledger.c - the store as the source of truth (ledger.c): several
 * mounts, each a catalog in its own temporary directory with its own ledger,
 * on ONE in-memory store (testenv.c). Their rolls interleave in the store's
 * log; each mount's refresh applies the others' rolls, so every catalog ends
 * with the same archived_files and block_indexes, in the same order, and so
 * does a catalog rebuilt from the store alone. The lease gives a node name to
 * one mount at a time; a mount that takes it over from one that did not
 * release it fences the old one in the log. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/catalog.h"
#include "battlefs/ledger.h"
#include "battlefs/roller.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"
#include "testenv.h"

#define P1 "2025-12-18"
#define P2 "2025-12-19"

/* ---- fixtures ---- */

/* A fault hook that only records the roll id (the rolls run to the end). */
struct rec {
    char roll_id[BFS_ROLL_ID_MAX]; /* written only at after-claim (the roll's thread) */
};

static int rec_fn(void *arg, enum bfs_roll_step step, const char *roll_id)
{
    struct rec *r = arg;
    if (step == BFS_ROLL_AFTER_CLAIM || step == BFS_ROLL_AFTER_COMMIT)
        snprintf(r->roll_id, sizeof r->roll_id, "%s", roll_id);
    return 0;
}

/* A mount of node on the shared store ms. */
static struct tenv *mount_node(struct memstore *ms, const char *node, struct rec *rec)
{
    const struct tenv_opts o = {.ms = ms, .node = node};
    struct tenv *e = tenv_new_opts(&o);
    if (rec) {
        e->roll.fault = rec_fn;
        e->roll.fault_arg = rec;
    }
    return e;
}

/* A roll of everything e has uploaded since up[first]: 0, its model in m
 * (under the id rec saw) and the id in id. */
static void roll(struct tenv *e, struct rec *rec, size_t first, struct mroll *m, char *id)
{
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    snprintf(id, BFS_ROLL_ID_MAX, "%s", rec->roll_id);
    model_roll(e, id, first, e->n_up - 1, e->roll.archive_max_bytes, m);
}

static size_t data_objects(struct memstore *ms)
{
    return ms->n - memstore_count(ms, BFS_LEDGER_PREFIX);
}

/* What two catalogs must agree on, row for row and in order. */
static const char *const SAME[] = {
    "SELECT id, file_path, table_name, period_tag, size, header_length, roll_id, seq,"
    " created_at, hex(sha256), schema_fingerprint, codec FROM archived_files ORDER BY id",
    "SELECT id, dataset_id, table_name, period_tag, file_id, start_byte, length, record_count,"
    " uploaded_at FROM block_indexes ORDER BY id",
    "SELECT id, claimed_at, committed_at, row_count, byte_count, node, log_seq, epoch FROM rolls"
    " WHERE committed_at IS NOT NULL ORDER BY log_seq",
    "SELECT p.table_name, p.period_tag, p.codec, hex(p.sync), hex(p.header), p.header_length,"
    " s.fingerprint FROM partitions p JOIN schemas s ON s.id = p.schema_id"
    " ORDER BY p.table_name, p.period_tag",
    "SELECT log_pos FROM ledger",
    "SELECT node, epoch FROM ledger_nodes ORDER BY node",
};

static void same_catalogs(struct tenv *x, struct tenv *y)
{
    struct bfs_buf a = {0}, b = {0};
    for (size_t i = 0; i < sizeof SAME / sizeof SAME[0]; i++) {
        tenv_sql_text(x, SAME[i], &a);
        tenv_sql_text(y, SAME[i], &b);
        if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
            fail_msg("%s and %s differ in\n%s\n---- %s:\n%s---- %s:\n%s", x->node, y->node, SAME[i],
                     x->node, (const char *)a.data, y->node, (const char *)b.data);
    }
    bfs_buf_free(&a);
    bfs_buf_free(&b);
}

static int64_t sql_count(struct tenv *e, const char *fmt, const char *arg)
{
    char q[1024];
    assert_true(strlen(arg) < BFS_ROLL_ID_MAX);
    snprintf(q, sizeof q, fmt, arg);
    return tenv_sql_int(e, q);
}

/* The lease object of node, parsed (fails the test if it is not there). */
struct lease {
    char holder[BFS_STATE_ID_MAX];
    int64_t epoch, expires_at;
    int released;
    char etag[33];
};

static void read_lease(struct memstore *ms, const char *node, struct lease *out)
{
    char key[160];
    snprintf(key, sizeof key, BFS_LEDGER_PREFIX "nodes/%s/lease", node);
    const struct memobj *o = memstore_find(ms, key);
    if (!o)
        fail_msg("no lease %s", key);
    json_t *j = json_loadb((const char *)o->data, o->len, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "battlefs_lease")), 1);
    assert_string_equal(json_string_value(json_object_get(j, "node")), node);
    snprintf(out->holder, sizeof out->holder, "%s",
             json_string_value(json_object_get(j, "holder")));
    out->epoch = json_integer_value(json_object_get(j, "epoch"));
    out->expires_at = json_integer_value(json_object_get(j, "expires_at"));
    assert_true(json_is_boolean(json_object_get(j, "released")));
    out->released = json_is_true(json_object_get(j, "released"));
    snprintf(out->etag, sizeof out->etag, "%s", o->etag);
    json_decref(j);
}

/* .battlefs/stats of e, parsed (json_decref it). */
static json_t *stats_json(struct tenv *e)
{
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    struct bfs_buf out = {0};
    assert_int_equal(bfs_stats_json(&e->stats, &c, &out), 0);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)out.data, out.len, 0, &jerr);
    if (!j)
        fail_msg("stats: %s: %.*s", jerr.text, (int)out.len, (const char *)out.data);
    bfs_buf_free(&out);
    return j;
}

static void state_id(struct tenv *e, char out[BFS_STATE_ID_MAX])
{
    assert_int_equal(bfs_catalog_ledger_state(e->cat, NULL, out), 0);
}

/* Put a log entry at seq (20 digits) as another writer would have. */
static void put_log_entry(struct memstore *ms, int64_t seq, const char *json)
{
    char key[64];
    snprintf(key, sizeof key, BFS_LEDGER_PREFIX "log/%020" PRId64 ".json", seq);
    memstore_set(ms, key, json, strlen(json));
}

/* A roll entry naming manifest key mkey, with the manifest's real size and
 * SHA-256 unless bad_sha, of node and roll_id, epoch. */
static void put_roll_entry(struct memstore *ms, int64_t seq, const char *node, int64_t epoch,
                           const char *roll_id, const char *mkey, int bad_sha)
{
    const struct memobj *o = memstore_find(ms, mkey);
    assert_non_null(o);
    uint8_t sha[32];
    assert_int_equal(bfs_sha256(o->data, o->len, sha), 0);
    if (bad_sha)
        sha[31] ^= 1;
    char hex[65];
    bfs_hex(sha, 32, hex);
    char json[1024];
    snprintf(json, sizeof json,
             "{\"battlefs_log\":1,\"type\":\"roll\",\"node\":\"%s\",\"epoch\":%" PRId64
             ",\"roll_id\":\"%s\",\"manifest\":\"%s\",\"size\":%zu,\"sha256\":\"%s\","
             "\"committed_at\":%lld}",
             node, epoch, roll_id, mkey, o->len, hex, (long long)time(NULL));
    put_log_entry(ms, seq, json);
}

/* ---- tests ---- */

/* Two writers, a and b, on one store: their rolls take the log positions in
 * turn (each commit reads the other's entries first), each refresh applies
 * the other's rolls (partitions made from the archives' headers), and both
 * catalogs end with the same rows in the same order; every dataset reads the
 * same on both. */
static void test_two_writers(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(1);
    struct rec ra = {0}, rb = {0};
    struct tenv *a = mount_node(ms, "a", &ra);
    struct tenv *b = mount_node(ms, "b", &rb);
    a->roll.archive_max_bytes = 600;
    b->roll.archive_max_bytes = 600;
    struct mroll m[4];
    char id[4][BFS_ROLL_ID_MAX];
    struct tenv *who[4] = {a, b, a, b};

    /* a: battle/P1 and own_ship/P1; b: battle/P1 (its own datasets) and cells/P2 */
    tenv_upload(a, "battle", P1, "a1", 300, 1);
    tenv_upload(a, "own_ship", P1, "a1", 200, 2);
    tenv_upload(a, "battle", P1, "a2", 400, 3);
    roll(a, &ra, 0, &m[0], id[0]);
    tenv_upload(b, "battle", P1, "b1", 350, 4);
    tenv_upload(b, "cells", P2, "b1", 120, 5);
    tenv_upload(b, "battle", P1, "b1", 500, 6);
    roll(b, &rb, 0, &m[1], id[1]);
    assert_int_equal(tenv_log_pos(b), 2); /* a's roll applied first */
    assert_int_equal(tenv_log_pos(a), 1);
    tenv_upload(a, "battle", P1, "a1", 50, 7);
    tenv_upload(a, "cells", P2, "a3", 70, 8);
    roll(a, &ra, 3, &m[2], id[2]);
    tenv_upload(b, "own_ship", P1, "b2", 90, 9);
    roll(b, &rb, 3, &m[3], id[3]);
    assert_int_equal(tenv_log_pos(a), 3);
    tenv_refresh(a);
    tenv_refresh(b); /* nothing new */
    assert_int_equal(tenv_log_pos(a), 4);
    assert_int_equal(tenv_log_pos(b), 4);
    assert_int_equal(a->stats.log_position, 4);
    assert_int_equal(b->stats.log_position, 4);
    assert_int_equal(a->stats.manifests_loaded, 4);
    assert_int_equal(b->stats.manifests_loaded, 4);

    /* The log: a, b, a, b, no gap, each roll once, epoch 1. */
    struct tlog *t;
    assert_int_equal(tlog_read(ms, &t), 4);
    for (int i = 0; i < 4; i++) {
        assert_false(t[i].fence);
        assert_string_equal(t[i].node, who[i]->node);
        assert_string_equal(t[i].roll_id, id[i]);
        assert_int_equal(t[i].epoch, 1);
    }
    free(t);
    assert_int_equal(ms->refused, 0);
    assert_int_equal(memstore_count(ms, BFS_LEDGER_PREFIX "schemas/"), 1); /* one schema */

    /* Each roll, as its writer made it, in both catalogs. */
    size_t total = 0;
    for (int i = 0; i < 4; i++)
        total += m[i].n;
    assert_int_equal(data_objects(ms), total);
    for (int i = 0; i < 4; i++) {
        check_roll(a, id[i], &m[i], total - m[i].n);
        check_roll(b, id[i], &m[i], total - m[i].n);
        assert_int_equal(sql_count(a, "SELECT log_seq FROM rolls WHERE id = '%s'", id[i]), i + 1);
    }
    same_catalogs(a, b);
    /* the cold segments of a dataset of both nodes' partitions, in log order */
    check_datasets(a, a->n_up);
    check_datasets(b, b->n_up);
    check_datasets_in(b, a, a->n_up);
    check_datasets_in(a, b, b->n_up);
    int64_t epoch = 0;
    assert_int_equal(bfs_catalog_node_epoch(a->cat, "b", &epoch), 0);
    assert_int_equal(epoch, 1);

    /* A reopened mount goes on from its log position. */
    tenv_reopen(a);
    assert_int_equal(tenv_log_pos(a), 4);
    tenv_upload(a, "battle", P1, "a9", 10, 10);
    struct mroll m5;
    char id5[BFS_ROLL_ID_MAX];
    roll(a, &ra, a->n_up - 1, &m5, id5);
    tenv_refresh(b);
    check_roll(b, id5, &m5, total);
    same_catalogs(a, b);
    model_free(&m5);

    for (int i = 0; i < 4; i++)
        model_free(&m[i]);
    tenv_free(a);
    tenv_free(b);
    memstore_free(ms);
}

/* Log contention: b takes the position a is putting its entry at (between
 * a's read of the log and its put). a's create-only put is refused; a reads
 * b's entry, applies it, and puts its own at the next position: no gap, no
 * entry lost or doubled. */
struct race {
    struct tenv *other;
    int armed;
    int ran;
};

static void race_on_put(void *arg, const char *key)
{
    struct race *r = arg;
    if (!r->armed || strncmp(key, BFS_LEDGER_PREFIX "log/", strlen(BFS_LEDGER_PREFIX "log/")))
        return;
    r->armed = 0;
    r->ran++;
    assert_int_equal(bfs_roll_once(&r->other->roll), 0);
}

static void test_log_contention(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    struct rec ra = {0}, rb = {0};
    struct tenv *a = mount_node(ms, "a", &ra);
    struct tenv *b = mount_node(ms, "b", &rb);
    struct mroll ma, mb;
    char ida[BFS_ROLL_ID_MAX], idb[BFS_ROLL_ID_MAX];

    tenv_upload(a, "battle", P1, "a1", 300, 1);
    tenv_upload(b, "battle", P1, "b1", 200, 2);
    tenv_upload(b, "own_ship", P1, "b1", 100, 3);
    struct race r = {.other = b, .armed = 1};
    ms->on_put = race_on_put;
    ms->on_put_arg = &r;
    roll(a, &ra, 0, &ma, ida);
    ms->on_put = NULL;
    assert_int_equal(r.ran, 1);
    snprintf(idb, sizeof idb, "%s", rb.roll_id);
    model_roll(b, idb, 0, b->n_up - 1, b->roll.archive_max_bytes, &mb);

    /* b's entry at 1, a's at 2 (its put at 1 refused), no gap */
    assert_int_equal(ms->refused, 1);
    struct tlog *t;
    assert_int_equal(tlog_read(ms, &t), 2);
    assert_string_equal(t[0].roll_id, idb);
    assert_string_equal(t[1].roll_id, ida);
    free(t);
    assert_int_equal(tenv_log_pos(a), 2);
    assert_int_equal(tenv_log_pos(b), 1);
    tenv_refresh(b);
    check_roll(a, ida, &ma, mb.n);
    check_roll(a, idb, &mb, ma.n);
    check_roll(b, ida, &ma, mb.n);
    check_roll(b, idb, &mb, ma.n);
    same_catalogs(a, b);

    /* b commits while a does not read the log: a's next commit reads b's
     * entry before it puts its own (nothing refused). */
    tenv_upload(b, "battle", P1, "b1", 20, 4);
    struct mroll mb2, ma2;
    char idb2[BFS_ROLL_ID_MAX], ida2[BFS_ROLL_ID_MAX];
    roll(b, &rb, b->n_up - 1, &mb2, idb2);
    tenv_upload(a, "battle", P1, "a1", 30, 5);
    roll(a, &ra, a->n_up - 1, &ma2, ida2);
    assert_int_equal(ms->refused, 1);
    int64_t seq = 0;
    assert_int_equal(tlog_count_roll(ms, idb2, &seq), 1);
    assert_int_equal(seq, 3);
    assert_int_equal(tlog_count_roll(ms, ida2, &seq), 1);
    assert_int_equal(seq, 4);
    tenv_refresh(b);
    same_catalogs(a, b);
    check_datasets_in(b, a, a->n_up);
    check_datasets_in(a, b, b->n_up);

    model_free(&ma);
    model_free(&mb);
    model_free(&ma2);
    model_free(&mb2);
    tenv_free(a);
    tenv_free(b);
    memstore_free(ms);
}

/* The lease: a second mount of node a (another state directory) is refused
 * while the first holds it; once the first closes (releasing it), it takes
 * it at once with the next epoch and, the lease being released, puts no
 * fence. */
static void test_lease_release(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    struct rec r1 = {0}, r2 = {0};
    struct tenv *a1 = mount_node(ms, "a", &r1);
    const struct tenv_opts o = {.ms = ms, .node = "a", .no_acquire = 1};
    struct tenv *a2 = tenv_new_opts(&o);
    a2->roll.fault = rec_fn;
    a2->roll.fault_arg = &r2;
    struct lease l = {0};
    read_lease(ms, "a", &l);
    char sid1[BFS_STATE_ID_MAX], sid2[BFS_STATE_ID_MAX];
    state_id(a1, sid1);
    state_id(a2, sid2);
    assert_string_equal(l.holder, sid1);
    assert_int_equal(l.epoch, 1);
    assert_false(l.released);
    assert_true(l.expires_at >= (int64_t)time(NULL) + BFS_LEDGER_LEASE_TTL - 2);

    struct bfs_err err = {0};
    assert_int_equal(bfs_ledger_check(a2->ledger, &err), -EBUSY);
    assert_non_null(strstr(err.msg, "node a is held by another mount"));
    assert_int_equal(bfs_ledger_acquire(a2->ledger, &err), -EBUSY);
    struct lease l2 = {0};
    read_lease(ms, "a", &l2);
    assert_string_equal(l2.etag, l.etag); /* untouched */
    /* the holder itself may check (its own state directory) */
    assert_int_equal(bfs_ledger_check(a1->ledger, &err), 0);

    /* a1 rolls, then closes: the lease is released */
    tenv_upload(a1, "battle", P1, "u1", 100, 1);
    struct mroll m1, m2;
    char id1[BFS_ROLL_ID_MAX], id2[BFS_ROLL_ID_MAX];
    roll(a1, &r1, 0, &m1, id1);
    bfs_ledger_close(a1->ledger);
    a1->ledger = a1->roll.ledger = NULL;
    read_lease(ms, "a", &l);
    assert_true(l.released);
    assert_string_equal(l.holder, sid1);
    assert_int_equal(l.epoch, 1);

    /* a2 takes it at once, epoch 2, and commits without a fence */
    assert_int_equal(bfs_ledger_check(a2->ledger, &err), 0);
    assert_int_equal(bfs_ledger_acquire(a2->ledger, &err), 0);
    read_lease(ms, "a", &l);
    assert_false(l.released);
    assert_string_equal(l.holder, sid2);
    assert_int_equal(l.epoch, 2);
    tenv_upload(a2, "battle", P1, "u2", 60, 2);
    roll(a2, &r2, 0, &m2, id2);
    assert_int_equal(tlog_count_fences(ms), 0);
    struct tlog *t;
    assert_int_equal(tlog_read(ms, &t), 2);
    assert_int_equal(t[0].epoch, 1);
    assert_int_equal(t[1].epoch, 2);
    assert_string_equal(t[1].roll_id, id2);
    free(t);
    check_roll(a2, id1, &m1, m2.n); /* a1's roll, applied by a2 */
    check_roll(a2, id2, &m2, m1.n);
    int64_t epoch = 0;
    assert_int_equal(bfs_catalog_node_epoch(a2->cat, "a", &epoch), 0);
    assert_int_equal(epoch, 2);
    /* and a1 (its catalog) cannot come back while a2 holds the name */
    const struct bfs_ledger_deps ld = {
        .cat = a1->cat,
        .store = &ms->base,
        .stats = &a1->stats,
        .errors = &a1->errors,
        .node = "a",
        .work_dir = a1->work,
    };
    assert_int_equal(bfs_ledger_open(&ld, &a1->ledger), 0);
    a1->roll.ledger = a1->ledger;
    assert_int_equal(bfs_ledger_check(a1->ledger, &err), -EBUSY);
    assert_int_equal(bfs_ledger_acquire(a1->ledger, &err), -EBUSY);

    model_free(&m1);
    model_free(&m2);
    tenv_free(a1);
    tenv_free(a2);
    memstore_free(ms);
}

/* A mount that stops renewing (crashed, or cut off) without releasing: once
 * its lease has expired another mount of the node takes it over and fences
 * the old epoch in the log before its first roll. The old mount, back, sees
 * the fence: its commit fails with -ESTALE, its roll is in no catalog; an
 * entry it might still have put after the fence is ignored by every reader. */
static void test_lease_expiry_fence(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    struct rec r1 = {0}, r2 = {0};
    const struct tenv_opts o1 = {.ms = ms, .node = "a", .lease_ttl_s = 1};
    struct tenv *a1 = tenv_new_opts(&o1);
    a1->roll.fault = rec_fn;
    a1->roll.fault_arg = &r1;
    const struct tenv_opts o2 = {.ms = ms, .node = "a", .lease_ttl_s = 1, .no_acquire = 1};
    struct tenv *a2 = tenv_new_opts(&o2);
    a2->roll.fault = rec_fn;
    a2->roll.fault_arg = &r2;
    struct lease l = {0};
    read_lease(ms, "a", &l);
    assert_int_equal(l.epoch, 1);
    assert_true(l.expires_at <= (int64_t)time(NULL) + 1);

    tenv_upload(a1, "battle", P1, "u1", 100, 1);
    struct mroll m1, m2;
    char id1[BFS_ROLL_ID_MAX], id2[BFS_ROLL_ID_MAX];
    roll(a1, &r1, 0, &m1, id1);
    struct bfs_err err = {0};
    assert_int_equal(bfs_ledger_acquire(a2->ledger, &err), -EBUSY);

    /* a1 stops (neither renews nor releases); its lease expires */
    while ((int64_t)time(NULL) <= l.expires_at)
        usleep(50 * 1000);
    assert_int_equal(bfs_ledger_check(a2->ledger, &err), 0);
    assert_int_equal(bfs_ledger_acquire(a2->ledger, &err), 0);
    read_lease(ms, "a", &l);
    assert_int_equal(l.epoch, 2);
    assert_false(l.released);

    /* a2's first commit: a fence of epoch 2 first, then its roll */
    tenv_upload(a2, "battle", P1, "u2", 60, 2);
    roll(a2, &r2, 0, &m2, id2);
    struct tlog *t;
    assert_int_equal(tlog_read(ms, &t), 3);
    assert_string_equal(t[0].roll_id, id1);
    assert_true(t[1].fence);
    assert_string_equal(t[1].node, "a");
    assert_int_equal(t[1].epoch, 2);
    assert_string_equal(t[2].roll_id, id2);
    assert_int_equal(t[2].epoch, 2);
    free(t);
    check_roll(a2, id1, &m1, m2.n);
    check_roll(a2, id2, &m2, m1.n);

    /* a1 comes back and rolls: fenced. Its archives and manifest may be in
     * the store; no log entry names its roll; its rows stay in its buffer. */
    tenv_upload(a1, "battle", P1, "u1", 30, 3);
    assert_int_equal(bfs_roll_once(&a1->roll), -ESTALE);
    char pending[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_pending(a1->cat, pending, NULL), 0);
    assert_string_equal(pending, r1.roll_id);
    assert_int_equal(tlog_count_roll(ms, pending, NULL), 0);
    assert_int_equal(a1->stats.fenced, 1);
    assert_int_equal(a2->stats.fenced, 0);
    json_t *j = stats_json(a1);
    assert_true(json_is_true(json_object_get(j, "fenced")));
    assert_string_equal(json_string_value(json_object_get(j, "node")), "a");
    assert_true(json_is_false(json_object_get(j, "read_only")));
    assert_int_equal(json_integer_value(json_object_get(j, "log_position")), 3);
    json_decref(j);
    assert_int_equal(tenv_log_pos(a1), 3); /* it read the fence and a2's roll */
    assert_int_equal(
        sql_count(a1, "SELECT count(*) FROM buffer_rows WHERE dataset_id = '%s'", "u1"), 1);
    /* bfs_ledger_commit itself, again: -ESTALE, it says why */
    char mkey[256], path[256];
    assert_int_equal(bfs_ledger_manifest_key("a", pending, mkey, sizeof mkey), 0);
    const struct memobj *mo = memstore_find(ms, mkey);
    assert_non_null(mo);
    snprintf(path, sizeof path, "%s/manifest-copy.avro", a1->work);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, mo->data, mo->len), (ssize_t)mo->len);
    close(fd);
    struct bfs_ledger_roll lr = {
        .roll_id = pending,
        .manifest_key = mkey,
        .manifest_path = path,
        .size = mo->len,
    };
    assert_int_equal(bfs_sha256(mo->data, mo->len, lr.sha256), 0);
    assert_int_equal(bfs_ledger_commit(a1->ledger, &lr, &err), -ESTALE);
    assert_non_null(strstr(err.msg, "fenced"));
    unlink(path);
    assert_int_equal(memstore_count(ms, BFS_LEDGER_PREFIX "log/"), 3);

    /* Had a1's entry reached the log after the fence, nobody applies it:
     * a roll of node a under epoch 1 after epoch 2 is void. */
    put_roll_entry(ms, 4, "a", 1, pending, mkey, 0);
    tenv_refresh(a2);
    tenv_refresh(a1);
    assert_int_equal(tenv_log_pos(a2), 4);
    assert_int_equal(tenv_log_pos(a1), 4);
    for (int i = 0; i < 2; i++) {
        struct tenv *e = i ? a2 : a1;
        assert_int_equal(
            sql_count(e, "SELECT count(*) FROM archived_files WHERE roll_id = '%s'", pending), 0);
        assert_int_equal(
            sql_count(e, "SELECT count(*) FROM rolls WHERE id = '%s' AND committed_at IS NOT NULL",
                      pending),
            0);
    }
    assert_int_equal(bfs_catalog_roll_pending(a1->cat, pending, NULL), 0); /* still a claim */
    /* a catalog rebuilt from the store agrees */
    const struct tenv_opts ro = {.ms = ms, .node = "r", .read_only = 1};
    struct tenv *r = tenv_new_opts(&ro);
    tenv_refresh(r);
    assert_int_equal(tenv_log_pos(r), 4);
    same_catalogs(r, a2);
    tenv_free(r);

    model_free(&m1);
    model_free(&m2);
    tenv_free(a1); /* its release fails: the lease is a2's */
    read_lease(ms, "a", &l);
    assert_int_equal(l.epoch, 2);
    assert_false(l.released);
    tenv_free(a2);
    memstore_free(ms);
}

/* A catalog made from the store alone (a read-only mount, new state
 * directory): one refresh brings every roll of every node, with the same
 * rows in the same order as the writers' catalogs; later refreshes bring
 * only what is new. A read-only ledger writes nothing. */
static void test_rebuild(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    struct rec ra = {0}, rb = {0};
    struct tenv *a = mount_node(ms, "a", &ra);
    struct tenv *b = mount_node(ms, "b", &rb);
    a->roll.archive_max_bytes = 400;
    struct mroll m;
    char id[BFS_ROLL_ID_MAX];
    for (int i = 0; i < 3; i++) {
        size_t first = a->n_up;
        tenv_upload(a, "battle", P1, "a1", 150 + 10 * (size_t)i, 1 + (unsigned)i);
        tenv_upload(a, "battle", P2, "a2", 300, 10 + (unsigned)i);
        tenv_upload(a, "own_ship", P1, "a1", 90, 20 + (unsigned)i);
        roll(a, &ra, first, &m, id);
        model_free(&m);
        first = b->n_up;
        tenv_upload(b, "battle", P1, "b1", 70, 30 + (unsigned)i);
        roll(b, &rb, first, &m, id);
        model_free(&m);
    }
    tenv_refresh(a);
    assert_int_equal(tenv_log_pos(a), 6);

    const struct tenv_opts ro = {.ms = ms, .node = "r", .read_only = 1};
    struct tenv *r = tenv_new_opts(&ro);
    unsigned puts = ms->puts;
    assert_int_equal(tenv_log_pos(r), 0);
    tenv_refresh(r);
    assert_int_equal(ms->puts, puts);
    assert_int_equal(tenv_log_pos(r), 6);
    assert_int_equal(r->stats.manifests_loaded, 6);
    assert_int_equal(r->stats.log_position, 6);
    same_catalogs(r, a);
    same_catalogs(r, b);
    check_datasets_in(r, a, a->n_up);
    check_datasets_in(r, b, b->n_up);

    /* incremental: only the new entry */
    unsigned lists = ms->lists_after;
    tenv_refresh(r);
    assert_int_equal(r->stats.manifests_loaded, 6);
    assert_int_equal(ms->lists_after, lists + 1);
    tenv_upload(b, "cells", P1, "b9", 40, 99);
    roll(b, &rb, b->n_up - 1, &m, id);
    tenv_refresh(r);
    assert_int_equal(r->stats.manifests_loaded, 7);
    check_roll(r, id, &m, data_objects(ms) - m.n);
    model_free(&m);
    tenv_refresh(a);
    same_catalogs(r, a);

    /* read-only: no lease, no put, no commit */
    assert_int_equal(memstore_count(ms, BFS_LEDGER_PREFIX "nodes/r/"), 0);
    puts = ms->puts;
    struct bfs_err err = {0};
    assert_int_equal(bfs_ledger_check(r->ledger, &err), 0);
    assert_int_equal(bfs_ledger_acquire(r->ledger, &err), 0);
    const struct bfs_ledger_roll lr = {.roll_id = id, .manifest_key = "x", .manifest_path = "x"};
    assert_int_equal(bfs_ledger_commit(r->ledger, &lr, &err), -EROFS);
    tenv_refresh(r);
    tenv_free(r);
    assert_int_equal(ms->puts, puts);
    assert_int_equal(memstore_count(ms, BFS_LEDGER_PREFIX "nodes/r/"), 0);
    tenv_free(a);
    tenv_free(b);
    memstore_free(ms);
}

/* A log entry that does not match its manifest (size, SHA-256, roll or node)
 * or whose manifest is missing, or that is not an entry at all: the refresh
 * fails with the entry's position and reason, applies nothing of it, and
 * its log position stays; the entries before it are applied. */
static void test_refresh_refuses_bad_entries(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    struct rec ra = {0};
    struct tenv *a = mount_node(ms, "a", &ra);
    tenv_upload(a, "battle", P1, "u1", 100, 1);
    struct mroll m;
    char id[BFS_ROLL_ID_MAX], mkey[256];
    roll(a, &ra, 0, &m, id);
    assert_int_equal(bfs_ledger_manifest_key("a", id, mkey, sizeof mkey), 0);

    const struct tenv_opts ro = {.ms = ms, .node = "r", .read_only = 1};
    struct tenv *r = tenv_new_opts(&ro);
    struct bfs_err err = {0};
    /* (where: whether the message names the entry's position) */
    struct {
        const char *what;
        int rc;
        const char *says;
        int where;
    } cases[] = {
        {"sha", -EIO, "the log says", 1},
        {"node", -EIO, "the log says", 1},
        {"missing", -ENOENT, "manifests/c/", 1},
        {"junk", -EIO, "not a battlefs log entry", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strcmp(cases[i].what, "sha") == 0) {
            put_roll_entry(ms, 2, "a", 1, id, mkey, 1);
        } else if (strcmp(cases[i].what, "node") == 0) {
            put_roll_entry(ms, 2, "c", 1, id, mkey, 0); /* a's manifest, said to be c's */
        } else if (strcmp(cases[i].what, "missing") == 0) {
            put_log_entry(ms, 2,
                          "{\"battlefs_log\":1,\"type\":\"roll\",\"node\":\"c\",\"epoch\":1,"
                          "\"roll_id\":\"c-20251218T130000Z-0badc0de-1\",\"manifest\":"
                          "\"_battlefs/manifests/c/c-20251218T130000Z-0badc0de-1.avro\","
                          "\"size\":10,\"sha256\":\"0000000000000000000000000000000000000000"
                          "000000000000000000000000\",\"committed_at\":1766062800}");
        } else {
            put_log_entry(ms, 2, "{\"battlefs_log\":1,\"type\":\"roll\"");
        }
        for (int k = 0; k < 2; k++) {
            struct tenv *e = k ? a : r;
            int rc = bfs_ledger_refresh(e->ledger, &err);
            if (rc != cases[i].rc || !strstr(err.msg, cases[i].says) ||
                (cases[i].where && !strstr(err.msg, "log 2") &&
                 !strstr(err.msg, "00000000000000000002.json")))
                fail_msg("%s: %s: %d %s", cases[i].what, e->node, rc, err.msg);
            assert_int_equal(tenv_log_pos(e), 1); /* entry 1 applied, 2 not */
            assert_int_equal(e->stats.log_position, 1);
            pthread_mutex_lock(&e->stats.lock);
            assert_true(e->stats.has_refresh_error);
            assert_non_null(strstr(e->stats.last_refresh_error, cases[i].says));
            pthread_mutex_unlock(&e->stats.lock);
        }
        assert_int_equal(tenv_sql_int(r, "SELECT count(*) FROM rolls"), 1);
        assert_int_equal(tenv_sql_int(r, "SELECT count(*) FROM archived_files"), m.n);
    }
    json_t *j = stats_json(r);
    assert_string_equal(json_string_value(json_object_get(j, "node")), "r");
    assert_true(json_is_true(json_object_get(j, "read_only")));
    assert_true(json_is_false(json_object_get(j, "fenced")));
    assert_int_equal(json_integer_value(json_object_get(j, "log_position")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "manifests_loaded")), 1);
    assert_true(json_integer_value(json_object_get(j, "refreshes")) >= 4);
    const char *why = json_string_value(json_object_get(j, "last_refresh_error"));
    assert_non_null(why);
    assert_non_null(strstr(why, "refresh: "));
    json_decref(j);

    /* A bad entry stops a's own commits too: it cannot read the log past it. */
    tenv_upload(a, "battle", P1, "u1", 10, 2);
    assert_int_equal(bfs_roll_once(&a->roll), -EIO);
    assert_int_equal(tenv_log_pos(a), 1);

    /* Repaired (as an operator might: a fence in its place), the log reads on. */
    put_log_entry(ms, 2,
                  "{\"battlefs_log\":1,\"type\":\"fence\",\"node\":\"c\",\"epoch\":1,"
                  "\"at\":1766062800}");
    tenv_refresh(r);
    assert_int_equal(tenv_log_pos(r), 2);
    j = stats_json(r);
    assert_true(json_is_null(json_object_get(j, "last_refresh_error")));
    json_decref(j);
    assert_int_equal(bfs_roll_once(&a->roll), 0);
    assert_int_equal(tenv_log_pos(a), 3);

    /* A gap (an entry missing before a later one): the refresh stops before
     * it, without error, and reads on once the entry is there. */
    put_log_entry(ms, 5,
                  "{\"battlefs_log\":1,\"type\":\"fence\",\"node\":\"c\",\"epoch\":2,"
                  "\"at\":1766062800}");
    tenv_refresh(r);
    assert_int_equal(tenv_log_pos(r), 3);
    put_log_entry(ms, 4,
                  "{\"battlefs_log\":1,\"type\":\"fence\",\"node\":\"c\",\"epoch\":2,"
                  "\"at\":1766062800}");
    tenv_refresh(r);
    assert_int_equal(tenv_log_pos(r), 5);
    int64_t epoch = 0;
    assert_int_equal(bfs_catalog_node_epoch(r->cat, "c", &epoch), 0);
    assert_int_equal(epoch, 2);

    model_free(&m);
    tenv_free(r);
    tenv_free(a);
    memstore_free(ms);
}

/* More entries than one listing returns (pages of 1,000 keys): a refresh
 * reads on page after page; a second one lists once and finds nothing. */
static void test_refresh_pages(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    const struct tenv_opts ro = {.ms = ms, .node = "r", .read_only = 1};
    struct tenv *r = tenv_new_opts(&ro);
    enum { N = 2001 };
    for (int64_t i = 1; i <= N; i++) {
        char json[160];
        snprintf(json, sizeof json,
                 "{\"battlefs_log\":1,\"type\":\"fence\",\"node\":\"n%d\",\"epoch\":%" PRId64
                 ",\"at\":1766062800}",
                 (int)(i % 7), i);
        put_log_entry(ms, i, json);
    }
    unsigned lists = ms->lists_after;
    tenv_refresh(r);
    assert_int_equal(tenv_log_pos(r), N);
    /* one listing of _battlefs/checkpoints/ (none), then pages of 1,000 log keys */
    assert_int_equal(ms->lists_after, lists + 4);
    int64_t epoch = 0;
    assert_int_equal(bfs_catalog_node_epoch(r->cat, "n3", &epoch), 0);
    assert_int_equal(epoch, 1998); /* the highest i with i % 7 == 3 */
    tenv_refresh(r);
    assert_int_equal(ms->lists_after, lists + 5); /* one page: nothing new */
    assert_int_equal(tenv_log_pos(r), N);
    tenv_free(r);
    memstore_free(ms);
}

/* The ledger's threads (bfs_ledger_start): a read-only mount's refresh
 * thread brings a writer's roll within its period; a writer's renewal thread
 * renews its lease (compare-and-swap: the same epoch, a later expiry). */
static void test_threads(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    struct rec ra = {0};
    const struct tenv_opts oa = {.ms = ms, .node = "a", .lease_ttl_s = 3};
    struct tenv *a = tenv_new_opts(&oa);
    a->roll.fault = rec_fn;
    a->roll.fault_arg = &ra;
    const struct tenv_opts orr = {.ms = ms, .node = "r", .read_only = 1, .refresh_s = 1};
    struct tenv *r = tenv_new_opts(&orr);
    struct lease l0 = {0}, l = {0};
    read_lease(ms, "a", &l0);
    assert_int_equal(bfs_ledger_start(a->ledger), 0); /* renews every second */
    assert_int_equal(bfs_ledger_start(r->ledger), 0); /* refreshes every second */
    tenv_upload(a, "battle", P1, "u1", 100, 1);
    struct mroll m;
    char id[BFS_ROLL_ID_MAX];
    roll(a, &ra, 0, &m, id);
    for (int i = 0; i < 40 && atomic_load(&r->stats.log_position) < 1; i++)
        usleep(50 * 1000);
    assert_int_equal(atomic_load(&r->stats.log_position), 1);
    check_roll(r, id, &m, 0);
    assert_true(atomic_load(&r->stats.refreshes) >= 1);
    for (int i = 0; i < 40; i++) {
        pthread_mutex_lock(&ms->lock);
        unsigned swapped = ms->swapped;
        pthread_mutex_unlock(&ms->lock);
        if (swapped)
            break;
        usleep(50 * 1000);
    }
    read_lease(ms, "a", &l);
    assert_int_equal(l.epoch, l0.epoch);
    assert_false(l.released);
    assert_string_not_equal(l.etag, l0.etag);
    assert_true(l.expires_at >= l0.expires_at);
    assert_int_equal(a->stats.fenced, 0);
    model_free(&m);
    tenv_free(r);
    tenv_free(a);
    read_lease(ms, "a", &l);
    assert_true(l.released);
    memstore_free(ms);
}

/* ---- lease renewals that must not fence the mount ---- */

/* Fail the lease's next put; with lands, the put is stored first. */
struct lease_fault {
    struct tenv *e;
    atomic_int armed; /* cleared by the renewal thread */
    int clean;        /* empty the work directory first, as a roll starting meanwhile does */
};

static void lease_on_put(void *arg, const char *key)
{
    struct lease_fault *f = arg;
    if (!f->armed || !strstr(key, "/lease"))
        return;
    f->armed = 0;
    if (f->clean) /* the roller's clean_work_dir, from another thread in a mount */
        assert_int_equal(bfs_roller_recover(&f->e->roll), 0);
}

/* A lease renewal (the renewal thread) while a roll starting in the roll
 * thread empties the work directory: the renewal's source file is not the
 * roll's to remove, and the mount is not fenced (nobody took its lease). */
static void test_renewal_during_work_dir_cleaning(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    const struct tenv_opts o = {.ms = ms, .node = "a", .lease_ttl_s = 1};
    struct tenv *a = tenv_new_opts(&o);
    struct lease_fault f = {.e = a, .armed = 1, .clean = 1};
    pthread_mutex_lock(&ms->lock);
    ms->on_put = lease_on_put;
    ms->on_put_arg = &f;
    pthread_mutex_unlock(&ms->lock);
    assert_int_equal(bfs_ledger_start(a->ledger), 0); /* renews every second */
    for (int i = 0; i < 30 && f.armed; i++)
        usleep(100 * 1000);
    assert_int_equal(f.armed, 0);
    usleep(100 * 1000);
    pthread_mutex_lock(&ms->lock);
    ms->on_put = NULL;
    pthread_mutex_unlock(&ms->lock);
    struct lease l = {0};
    read_lease(ms, "a", &l);
    assert_int_equal(l.epoch, 1); /* nobody took it */
    assert_int_equal(a->stats.fenced, 0);
    tenv_free(a);
    memstore_free(ms);
}

/* A renewal whose put landed but whose answer was lost keeps the old ETag;
 * the next renewal's compare-and-swap finds "another" ETag (its own write's):
 * the lease still names this mount and epoch, so it renews on it, not fenced. */
static void test_renewal_after_a_lost_answer(void **state)
{
    (void)state;
    struct memstore *ms = memstore_new(0);
    struct rec ra = {0};
    const struct tenv_opts o = {.ms = ms, .node = "a", .lease_ttl_s = 1};
    struct tenv *a = tenv_new_opts(&o);
    a->roll.fault = rec_fn;
    a->roll.fault_arg = &ra;
    tenv_upload(a, "battle", P1, "u1", 100, 1);
    usleep(1100 * 1000);
    pthread_mutex_lock(&ms->lock);
    ms->put_rc = -ETIMEDOUT;
    ms->put_rc_prefix = BFS_LEDGER_PREFIX "nodes/";
    ms->put_lands = 1;
    pthread_mutex_unlock(&ms->lock);
    assert_int_equal(bfs_roll_once(&a->roll), -ETIMEDOUT); /* the renewal "failed" */
    pthread_mutex_lock(&ms->lock);
    ms->put_rc = 0;
    ms->put_rc_prefix = NULL;
    ms->put_lands = 0;
    pthread_mutex_unlock(&ms->lock);
    usleep(1100 * 1000); /* another second: the next renewal's bytes differ */
    assert_int_equal(bfs_roll_once(&a->roll), 0);
    assert_int_equal(a->stats.fenced, 0);
    tenv_free(a);
    memstore_free(ms);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_writers),
        cmocka_unit_test(test_log_contention),
        cmocka_unit_test(test_lease_release),
        cmocka_unit_test(test_lease_expiry_fence),
        cmocka_unit_test(test_rebuild),
        cmocka_unit_test(test_refresh_refuses_bad_entries),
        cmocka_unit_test(test_refresh_pages),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_renewal_during_work_dir_cleaning),
        cmocka_unit_test(test_renewal_after_a_lost_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
