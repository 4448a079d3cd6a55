/* test_adopt.c - rolls committed before the store's log (battlefs before
 * issue 11), put into it (adopt.h) and read back.
 *
 * A pre-log catalog is made from a real one (testenv: rolls through the
 * ledger into an in-memory store): its rolls lose their log position, node
 * and epoch, its archives their SHA-256, schema and codec and their place
 * (ord 0), its log position goes back to 0, and the store loses everything
 * under "_battlefs/" but the leases, as a catalog migrated from before the
 * log and its store look. Then bfs_adopt_run: the log holds each roll once,
 * the catalog holds the same rows, stamped (no row added), and a catalog
 * rebuilt from the store (the log, or a checkpoint and the log) holds the
 * same rows and reads the same bytes. A stop at each step of the adoption,
 * then a restart, gives the same. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/adopt.h"
#include "battlefs/catalog.h"
#include "battlefs/ledger.h"
#include "battlefs/manifest.h"
#include "testenv.h"

#define P1 "2025-12-18"
#define P2 "2025-12-19"

/* What a catalog rebuilt from the store must hold as the adopter's does: the
 * archives in their order (ids differ: the adopter's are from before the
 * log) with every column the log gives, the index rows of each, the dataset
 * files' segments in file order (R_COLD's), the rolls of the log, the
 * erasures and what they wait for. */
static const char *const SAME[] = {
    "SELECT file_path, table_name, period_tag, size, header_length, roll_id, seq, created_at,"
    " hex(sha256), schema_fingerprint, codec, versions, ord, dirty FROM archived_files"
    " ORDER BY ord, seq",
    "SELECT a.file_path, i.dataset_id, i.table_name, i.period_tag, i.start_byte, i.length,"
    " i.record_count, i.uploaded_at FROM block_indexes i JOIN archived_files a"
    " ON a.id = i.file_id ORDER BY a.ord, a.seq, i.start_byte",
    "SELECT i.table_name, i.period_tag, i.dataset_id, a.file_path, i.start_byte FROM"
    " block_indexes i JOIN archived_files a ON a.id = i.file_id"
    " ORDER BY i.table_name, i.period_tag, i.dataset_id, a.ord, i.file_id, i.id",
    "SELECT id, claimed_at, committed_at, row_count, byte_count, node, log_seq, epoch, base, kind"
    " FROM rolls WHERE log_seq IS NOT NULL ORDER BY log_seq",
    "SELECT seq, node, dataset_id, table_name, period_tag, epoch, erased_at, committed_at,"
    " done_at IS NULL FROM erasures ORDER BY seq",
    "SELECT log_pos FROM ledger",
    "SELECT seq, file_path FROM erase_hits ORDER BY seq, file_path",
};
/* erase_hits is compared only when no archive's bytes were erased before
 * its roll was adopted: the manifest does not say which erasure's, so a
 * reader of the log has every erasure of its scope wait for it (as after a
 * checkpoint's load), where the adopter knows the one. */
#define SAME_HITS (sizeof SAME / sizeof SAME[0] - 1)

static void same_catalogs_but(struct tenv *x, struct tenv *y, size_t n)
{
    struct bfs_buf a = {0}, b = {0};
    for (size_t i = 0; i < n; i++) {
        tenv_sql_text(x, SAME[i], &a);
        tenv_sql_text(y, SAME[i], &b);
        if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
            fail_msg("%s and %s differ in\n%s\n---- %s:\n%.*s---- %s:\n%.*s", x->node, y->node,
                     SAME[i], x->node, (int)a.len, (const char *)a.data, y->node, (int)b.len,
                     (const char *)b.data);
    }
    bfs_buf_free(&a);
    bfs_buf_free(&b);
}

static void same_catalogs(struct tenv *x, struct tenv *y)
{
    same_catalogs_but(x, y, sizeof SAME / sizeof SAME[0]);
}

static void sql_exec(struct tenv *e, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(e->db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

struct keys {
    char (*k)[256];
    size_t n, cap;
};

static int collect(void *ctx, const char *key, uint64_t size)
{
    (void)size;
    struct keys *ks = ctx;
    assert_int_equal(bfs_array_reserve(&ks->k, &ks->cap, ks->n + 1, sizeof *ks->k), 0);
    snprintf(ks->k[ks->n++], sizeof ks->k[0], "%s", key);
    return 0;
}

/* How many roll entries of the log name roll_id (the last one's position in
 * *seq when not NULL); the log has no gap. */
static size_t log_count_roll(struct memstore *ms, const char *roll_id, int64_t *seq)
{
    size_t n = 0;
    for (int64_t i = 1;; i++) {
        char key[64];
        snprintf(key, sizeof key, BFS_LEDGER_PREFIX "log/%020" PRId64 ".json", i);
        const struct memobj *o = memstore_find(ms, key);
        if (!o)
            break;
        json_t *j = json_loadb((const char *)o->data, o->len, 0, NULL);
        assert_non_null(j);
        const char *type = json_string_value(json_object_get(j, "type"));
        const char *id = json_string_value(json_object_get(j, "roll_id"));
        assert_non_null(type);
        if (strcmp(type, "roll") == 0 && id && strcmp(id, roll_id) == 0) {
            n++;
            if (seq)
                *seq = i;
        }
        json_decref(j);
    }
    return n;
}

/* Make e's catalog and store what battlefs before the log left: see the top. */
static void to_prelog(struct tenv *e)
{
    sql_exec(e,
             "PRAGMA foreign_keys = OFF;"
             "UPDATE archived_files SET roll_id = (SELECT '20251218T12' || printf('%04d',"
             " r.log_seq) || 'Z-' || r.log_seq FROM rolls r WHERE r.id = archived_files.roll_id),"
             " sha256 = NULL, schema_fingerprint = NULL, codec = NULL, versions = NULL, ord = 0;"
             "UPDATE rolls SET id = '20251218T12' || printf('%04d', log_seq) || 'Z-' || log_seq,"
             " node = NULL, log_seq = NULL, epoch = NULL, base = NULL;"
             "UPDATE ledger SET log_pos = 0; DELETE FROM ledger_nodes;");
    struct keys ks = {0};
    struct bfs_err err;
    assert_int_equal(bfs_store_list(&e->ms->base, BFS_LEDGER_PREFIX, collect, &ks, &err), 0);
    for (size_t i = 0; i < ks.n; i++)
        if (strncmp(ks.k[i], BFS_LEDGER_PREFIX "nodes/", strlen(BFS_LEDGER_PREFIX "nodes/")))
            assert_int_equal(bfs_store_del(&e->ms->base, ks.k[i], &err), 0);
    free(ks.k);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "log/"), 0);
    /* a restart: the ledger forgets what it knew of the store */
    tenv_reopen(e);
    assert_int_equal(tenv_log_pos(e), 0);
}

/* A catalog with rolls rolls of a few datasets in three partitions, made
 * pre-log, and one upload left hot. */
static struct tenv *prelog_env(int rolls)
{
    struct tenv *e = tenv_new(0);
    for (int i = 0; i < rolls; i++) {
        tenv_upload(e, "battle", P1, "d1", 120 + (size_t)i, 1 + (unsigned)i);
        if (i % 2 == 0)
            tenv_upload(e, "battle", P1, "d2", 80, 40 + (unsigned)i);
        if (i % 3 == 0)
            tenv_upload(e, "own_ship", P1, "d1", 60, 70 + (unsigned)i);
        if (i % 4 == 1)
            tenv_upload(e, "battle", P2, "d3", 90, 90 + (unsigned)i);
        assert_int_equal(bfs_roll_once(&e->roll), 0);
    }
    assert_int_equal(tenv_log_pos(e), rolls);
    to_prelog(e);
    tenv_upload(e, "battle", P1, "d1", 50, 200);
    return e;
}

static struct bfs_adopt_deps deps_of(struct tenv *e)
{
    return (struct bfs_adopt_deps){
        .cat = e->cat,
        .store = &e->ms->base,
        .ledger = e->ledger,
        .stats = &e->stats,
        .errors = &e->errors,
        .node = e->node,
        .work_dir = e->work,
    };
}

static void adopt_ok(struct tenv *e)
{
    struct bfs_adopt_deps d = deps_of(e);
    struct bfs_err err = {0};
    int rc = bfs_adopt_run(&d, &err);
    if (rc != 0)
        fail_msg("adopt: %d %s", rc, err.msg);
}

/* The rolls e committed before the log, each in the log exactly once, in
 * their commit order, at positions after first (the log's entries before
 * are other entries); the catalog's rows stamped, none added. */
static void check_adopted(struct tenv *e, int rolls, int64_t first)
{
    assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM rolls WHERE committed_at IS NOT NULL"
                                     " AND log_seq IS NULL"),
                     0);
    assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM archived_files WHERE ord = 0 OR"
                                     " sha256 IS NULL OR codec IS NULL OR"
                                     " schema_fingerprint IS NULL"),
                     0);
    /* ord: the log position of the roll, which follows the old commit order */
    assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM archived_files a JOIN rolls r ON"
                                     " r.id = a.roll_id WHERE a.ord != r.log_seq OR r.node != 't'"
                                     " OR r.base != 0"),
                     0);
    assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM archived_files a, archived_files b"
                                     " WHERE a.id < b.id AND a.ord > b.ord"),
                     0);
    for (int i = 1; i <= rolls; i++) {
        char id[64];
        snprintf(id, sizeof id, "20251218T12%04dZ-%d", i, i);
        int64_t seq = 0;
        if (log_count_roll(e->ms, id, &seq) != 1)
            fail_msg("roll %s is in the log %zu times", id, log_count_roll(e->ms, id, NULL));
        assert_true(seq > first);
        char manifest[160];
        assert_int_equal(bfs_ledger_manifest_key("t", id, manifest, sizeof manifest), 0);
        assert_non_null(memstore_find(e->ms, manifest));
    }
    assert_int_equal(e->ms->changed, 0);
    assert_int_equal(e->stats.rolls_unadopted, 0);
    assert_int_equal(tenv_work_files(e, NULL, 0), 0);
}

/* Adopt three rolls; the rows stay (the same segments in the same order),
 * the log and the manifests hold them, a catalog rebuilt from the log has
 * the same rows and reads the same bytes; a second run does nothing. */
static void test_adopt_and_rebuild(void **state)
{
    (void)state;
    struct tenv *x = prelog_env(3);
    struct bfs_buf before = {0}, after = {0};
    tenv_sql_text(x, SAME[2], &before);
    int64_t arch = tenv_sql_int(x, "SELECT count(*) FROM archived_files");
    int64_t idx = tenv_sql_int(x, "SELECT count(*) FROM block_indexes");
    /* ... whose catalog only knows it is before the log */
    int64_t seq = -1;
    assert_int_equal(bfs_catalog_roll_committed(x->cat, "20251218T120001Z-1", &seq), 1);
    assert_int_equal(seq, 0);

    adopt_ok(x);
    assert_int_equal(x->stats.rolls_adopted, 3);
    assert_int_equal(tenv_log_pos(x), 3);
    check_adopted(x, 3, 0);
    tenv_sql_text(x, SAME[2], &after);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len); /* dataset files unchanged */
    assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM archived_files"), arch);
    assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM block_indexes"), idx);
    check_datasets(x, x->n_up);
    /* the archives' SHA-256 is the store's */
    assert_int_equal(tenv_sql_int(x, "SELECT count(DISTINCT sha256) FROM archived_files"), arch);

    /* again: nothing left to do */
    unsigned puts = x->ms->puts;
    adopt_ok(x);
    assert_int_equal(x->ms->puts, puts);
    assert_int_equal(tenv_log_pos(x), 3);

    /* a replica reads it from the store alone */
    const struct tenv_opts ro = {.ms = x->ms, .node = "r", .read_only = 1};
    struct tenv *r = tenv_new_opts(&ro);
    tenv_refresh(r);
    same_catalogs(x, r);
    check_datasets_in(r, x, x->n_up - 1); /* the last upload is x's hot row */

    /* the writer rolls on: its new roll after the adopted ones */
    tenv_upload(x, "battle", P1, "d2", 30, 300);
    assert_int_equal(bfs_roll_once(&x->roll), 0);
    assert_int_equal(tenv_log_pos(x), 4);
    tenv_refresh(r);
    same_catalogs(x, r);
    check_datasets_in(r, x, x->n_up);
    tenv_free(r);
    tenv_free(x);
    bfs_buf_free(&before);
    bfs_buf_free(&after);
}

/* 21 rolls: the 20th adoption writes a checkpoint, which holds the adopted
 * rolls; a new catalog loads it and reads the last entry. A copy of the
 * pre-log catalog (a state directory restored or copied) loading it adopts
 * its rolls from the checkpoint: its rows become the checkpoint's. */
static void test_adopt_checkpoint(void **state)
{
    (void)state;
    struct tenv *x = prelog_env(21);
    /* a copy of x before the adoption */
    char copy[160];
    snprintf(copy, sizeof copy, "%s/copy.db", x->dir);
    char sql[256];
    snprintf(sql, sizeof sql, "VACUUM INTO '%s'", copy);
    sql_exec(x, sql);

    adopt_ok(x);
    check_adopted(x, 21, 0);
    assert_int_equal(memstore_count(x->ms, BFS_LEDGER_PREFIX "checkpoints/00000000000000000020-"),
                     1);
    const struct tenv_opts ro = {.ms = x->ms, .node = "r", .read_only = 1};
    struct tenv *r = tenv_new_opts(&ro);
    unsigned gets = x->ms->whole_gets;
    tenv_refresh(r);
    assert_int_equal(r->stats.manifests_loaded, 1); /* the checkpoint, then entry 21 */
    assert_true(x->ms->whole_gets - gets <= 3);
    same_catalogs(x, r);
    check_datasets_in(r, x, x->n_up - 1);

    /* the copy: before the log, with x's rolls; its log position 0 */
    struct tenv *c = tenv_new_opts(&ro);
    bfs_ledger_close(c->ledger);
    c->ledger = NULL;
    bfs_catalog_close(c->cat);
    c->cat = NULL;
    char path[160];
    assert_int_equal(rename(copy, c->db), 0);
    snprintf(path, sizeof path, "%s-wal", c->db);
    unlink(path);
    snprintf(path, sizeof path, "%s-shm", c->db);
    unlink(path);
    tenv_reopen(c);
    tenv_refresh(c);
    /* 1..20 by the checkpoint's load (no log entry), 21 by its entry */
    assert_int_equal(c->stats.rolls_adopted, 1);
    same_catalogs(x, c);
    check_datasets_in(c, x, x->n_up);
    tenv_free(c);
    tenv_free(r);
    tenv_free(x);
}

/* Erasures: one before the adoption (its rows are not in the manifests: the
 * archives they were in hold bytes no row covers) and one between a first
 * attempt that put the manifest and the next (the store's manifest names a
 * row the catalog no longer has: every reader drops it, base 0). Both
 * catalogs: the same rows, the same dirty archives, the same pending
 * erasures. */
static int stop_at_manifest(void *arg, enum bfs_adopt_step step, const char *roll_id)
{
    (void)roll_id;
    int *n = arg;
    return step == BFS_ADOPT_AFTER_MANIFEST && (*n)++ == 0 ? -EIO : 0;
}

static void test_adopt_after_erasures(void **state)
{
    (void)state;
    struct tenv *x = prelog_env(3);
    struct bfs_err err = {0};
    int64_t eseq = 0;
    /* d3 is in roll 2 only (battle/P2) */
    assert_int_equal(bfs_ledger_erase(x->ledger, "d3", "battle", P2, &eseq, &err), 0);
    assert_int_equal(eseq, 1);
    assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM archived_files WHERE dirty = 1"), 1);

    /* the first roll's manifest is put, then the adoption stops */
    int n = 0;
    struct bfs_adopt_deps d = deps_of(x);
    d.fault = stop_at_manifest;
    d.fault_arg = &n;
    assert_int_equal(bfs_adopt_run(&d, &err), -EIO);
    assert_int_equal(memstore_count(x->ms, BFS_LEDGER_PREFIX "manifests/"), 1);
    assert_int_equal(x->stats.rolls_unadopted, 3);
    /* d1 (in roll 1) erased everywhere before the next attempt */
    assert_int_equal(bfs_ledger_erase(x->ledger, "d1", NULL, NULL, &eseq, &err), 0);
    adopt_ok(x);
    check_adopted(x, 3, 2);
    const struct tenv_opts ro = {.ms = x->ms, .node = "r", .read_only = 1};
    struct tenv *r = tenv_new_opts(&ro);
    tenv_refresh(r);
    same_catalogs_but(x, r, SAME_HITS);
    /* x's hits are r's, r has more: erasure 2 waits for the archive of
     * battle/P2 too, whose erased bytes are 1's */
    assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM erase_hits"), 5);
    assert_int_equal(tenv_sql_int(r, "SELECT count(*) FROM erase_hits"), 6);
    struct bfs_buf hx = {0}, hr = {0};
    tenv_sql_text(x, SAME[SAME_HITS], &hx);
    tenv_sql_text(r, SAME[SAME_HITS], &hr);
    assert_int_equal(bfs_buf_append(&hr, "", 1), 0);
    for (char *line = (char *)hx.data, *end; line < (char *)hx.data + hx.len; line = end + 1) {
        end = memchr(line, '\n', (size_t)((char *)hx.data + hx.len - line));
        assert_non_null(end);
        *end = '\0';
        assert_non_null(strstr((const char *)hr.data, line));
    }
    bfs_buf_free(&hx);
    bfs_buf_free(&hr);
    assert_true(tenv_sql_int(x, "SELECT count(*) FROM erasures WHERE done_at IS NULL") > 0);
    assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM block_indexes WHERE dataset_id = 'd1'"
                                     " OR dataset_id = 'd3'"),
                     0);
    tenv_free(r);
    tenv_free(x);
}

/* A stop (as a kill -9) at each step of the first roll's adoption, then a
 * restart that does not release the lease (a crash): the next run finishes,
 * each roll is in the log once, no row is added, a rebuild agrees. */
struct stop {
    enum bfs_adopt_step step;
    int done;
};

static int stop_once(void *arg, enum bfs_adopt_step step, const char *roll_id)
{
    (void)roll_id;
    struct stop *s = arg;
    if (step != s->step || s->done)
        return 0;
    s->done = 1;
    return -EIO;
}

static void test_adopt_stops(void **state)
{
    (void)state;
    for (int step = 0; step < BFS_ADOPT_STEPS; step++) {
        struct tenv *x = prelog_env(2);
        int64_t arch = tenv_sql_int(x, "SELECT count(*) FROM archived_files");
        int64_t idx = tenv_sql_int(x, "SELECT count(*) FROM block_indexes");
        struct stop s = {.step = (enum bfs_adopt_step)step};
        struct bfs_adopt_deps d = deps_of(x);
        d.fault = stop_once;
        d.fault_arg = &s;
        struct bfs_err err = {0};
        assert_int_equal(bfs_adopt_run(&d, &err), -EIO);
        assert_true(s.done);
        assert_int_equal(log_count_roll(x->ms, "20251218T120001Z-1", NULL),
                         step >= BFS_ADOPT_AFTER_LOG);
        assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM rolls WHERE log_seq IS NOT NULL"),
                         step >= BFS_ADOPT_AFTER_COMMIT);
        tenv_crash_reopen(x); /* takes the lease over: a fence entry */
        tenv_refresh(x);      /* as the mount does: applies an entry put before the stop */
        adopt_ok(x);
        check_adopted(x, 2, 0);
        assert_int_equal(tlog_count_fences(x->ms), 1);
        assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM archived_files"), arch);
        assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM block_indexes"), idx);
        const struct tenv_opts ro = {.ms = x->ms, .node = "r", .read_only = 1};
        struct tenv *r = tenv_new_opts(&ro);
        tenv_refresh(r);
        same_catalogs(x, r);
        check_datasets_in(r, x, x->n_up - 1);
        tenv_free(r);
        tenv_free(x);
    }
}

/* A roll whose archive is not in the store is left, reported, and the
 * others are adopted. An entry naming the roll whose manifest does not name
 * its archives is refused, and changes nothing. */
static void test_adopt_broken_roll(void **state)
{
    (void)state;
    struct tenv *x = prelog_env(3);
    struct bfs_buf key = {0};
    tenv_sql_text(x,
                  "SELECT file_path FROM archived_files WHERE roll_id = '20251218T120002Z-2'"
                  " ORDER BY seq LIMIT 1",
                  &key);
    assert_true(key.len > 1);
    key.data[key.len - 1] = '\0'; /* the newline */
    struct bfs_err err = {0};
    assert_int_equal(bfs_store_del(&x->ms->base, (const char *)key.data, &err), 0);
    adopt_ok(x);
    assert_int_equal(x->stats.rolls_adopted, 2);
    assert_int_equal(x->stats.rolls_unadopted, 1);
    assert_int_equal(log_count_roll(x->ms, "20251218T120002Z-2", NULL), 0);
    assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM rolls WHERE log_seq IS NULL"
                                     " AND id = '20251218T120002Z-2'"),
                     1);
    struct bfs_buf lines = {0};
    assert_int_equal(bfs_errors_render(&x->errors, &lines), 0);
    assert_int_equal(bfs_buf_append(&lines, "", 1), 0);
    assert_non_null(strstr((const char *)lines.data, "adopt: roll 20251218T120002Z-2"));
    assert_non_null(strstr((const char *)lines.data, "is not in the store"));
    bfs_buf_free(&lines);

    /* an entry for it whose manifest names another archive: refused */
    const struct bfs_log_roll lr = {.seq = tenv_log_pos(x) + 1,
                                    .node = "z",
                                    .roll_id = "20251218T120002Z-2",
                                    .epoch = 1,
                                    .claimed_at = 1,
                                    .committed_at = 2,
                                    .rows = 1};
    struct bfs_cat_apply *a;
    assert_int_equal(bfs_catalog_apply_begin(x->cat, &lr, &a), 0);
    const struct bfs_manifest_archive ma = {.key = "battle/x/other-0.avro",
                                            .table = "battle",
                                            .period = "x",
                                            .size = 10,
                                            .schema_fingerprint = "0123456789abcdef"};
    assert_int_equal(bfs_catalog_apply_knows(a, &ma), 1);
    int rc = bfs_catalog_apply_archive(a, &ma, &err);
    assert_int_equal(rc, -EINVAL);
    assert_non_null(strstr(err.msg, "is not one of roll"));
    assert_int_equal(bfs_catalog_apply_end(a, rc, NULL, &err), -EINVAL);
    /* ... or none of them */
    assert_int_equal(bfs_catalog_apply_begin(x->cat, &lr, &a), 0);
    rc = bfs_catalog_apply_end(a, 0, NULL, &err);
    assert_int_equal(rc, -EINVAL);
    assert_non_null(strstr(err.msg, "not in the entry's manifest"));
    assert_int_equal(tenv_sql_int(x, "SELECT count(*) FROM rolls WHERE log_seq IS NULL"
                                     " AND id = '20251218T120002Z-2'"),
                     1);
    bfs_buf_free(&key);
    tenv_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adopt_and_rebuild),    cmocka_unit_test(test_adopt_checkpoint),
        cmocka_unit_test(test_adopt_after_erasures), cmocka_unit_test(test_adopt_stops),
        cmocka_unit_test(test_adopt_broken_roll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
