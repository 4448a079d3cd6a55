/* test_compact.c - compaction and erasure in the catalog (catalog.h, "Erasure
 * and compaction"; catalog_ledger.c, catalog_compact.c): log entries applied
 * straight through bfs_catalog_apply_* and bfs_catalog_apply_erase, as the
 * ledger applies them, and the rows they leave checked with SQLite. Also the
 * settling of erasures, checkpoints holding compactions and erasures, and
 * the store's garbage list. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/catalog.h"
#include "battlefs/compact.h"
#include "battlefs/ledger.h"
#include "battlefs/manifest.h"
#include "battlefs/names.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "testenv.h"

#define T1  "battle"
#define P1  "2025-12-18"
#define T2  "ship"
#define P2  "2025-12-19"
#define LEN 100 /* an index row's length, unless given */

/* ---- building catalogs ---- */

/* A catalog (in a tenv) with the partitions T1/P1 and T2/P2. */
static struct tenv *new_env(void)
{
    struct tenv *e = tenv_new(0);
    tenv_add_partition(e->cat, T1, P1, BFS_CODEC_NULL);
    tenv_add_partition(e->cat, T2, P2, BFS_CODEC_NULL);
    return e;
}

/* One index row: a dataset, its length and records. */
struct trow {
    const char *ds;
    uint64_t len, records;
};

/* An archive of an entry: in (table, period), its index rows back to back
 * after the header: datasets (space-separated names, LEN bytes and one
 * record each) or rows[0..n_rows). */
struct tarch {
    const char *table, *period;
    const char *datasets;
    const struct trow *rows;
    size_t n_rows;
};

/* A roll or compaction entry of the log. Archive k of id is
 * "<table>/<period>/<id>-<k>.avro". */
struct tentry {
    int64_t seq;
    const char *node;
    const char *id;
    int64_t base; /* a roll's base, a compaction's upto */
    int compact;
    const char *table, *period; /* a compaction's partition */
    int gc;
    const char *const *retire; /* NULL-terminated, or NULL */
    const struct tarch *arch;
    size_t n_arch;
    int64_t claimed_at; /* 0: 1766062000 */
    uint64_t rows;      /* 0: the number of index rows (a roll) */
};

static void arch_key(char *key, size_t n, const struct tarch *t, const char *id, int k)
{
    snprintf(key, n, "%s/%s/%s-%d.avro", t->table, t->period, id, k);
}

/* The rows of archive t into out (max 16); their number. */
static size_t arch_rows(const struct tarch *t, struct trow out[16],
                        char names[16][BFS_NAME_MAX + 1])
{
    if (!t->datasets) {
        assert_true(t->n_rows <= 16);
        memcpy(out, t->rows, t->n_rows * sizeof *out);
        return t->n_rows;
    }
    size_t n = 0;
    for (const char *p = t->datasets; *p;) {
        size_t k = strcspn(p, " ");
        assert_true(n < 16 && k > 0 && k < sizeof names[n]);
        memcpy(names[n], p, k);
        names[n][k] = '\0';
        out[n] = (struct trow){names[n], LEN, 1};
        n++;
        p += k + (p[k] == ' ');
    }
    return n;
}

/* The header length and fingerprint of (table, period). */
static void layout_of(struct bfs_catalog *cat, const char *table, const char *period,
                      uint64_t *header_len, char fp[17])
{
    struct bfs_partition p;
    assert_int_equal(bfs_catalog_partition_get(cat, table, period, &p), 0);
    *header_len = p.header_len;
    memcpy(fp, p.fingerprint, 17);
    bfs_partition_free(&p);
}

/* Apply t: the end's result; *voided: whether the compaction was void. */
static int apply_entry(struct bfs_catalog *cat, const struct tentry *t, int *voided, int *own,
                       struct bfs_err *err)
{
    uint64_t bytes = 0, n_idx = 0;
    for (size_t k = 0; k < t->n_arch; k++) {
        struct trow rows[16];
        char names[16][BFS_NAME_MAX + 1];
        size_t n = arch_rows(&t->arch[k], rows, names);
        for (size_t i = 0; i < n; i++)
            bytes += rows[i].len;
        n_idx += n;
    }
    struct bfs_log_roll r = {
        .seq = t->seq,
        .node = t->node,
        .roll_id = t->id,
        .epoch = 1,
        .claimed_at = t->claimed_at ? t->claimed_at : 1766062000,
        .committed_at = 1766063000 + t->seq,
        .rows = t->compact ? 0 : (t->rows ? t->rows : n_idx),
        .bytes = bytes,
        .kind = t->compact ? BFS_LOG_COMPACT : BFS_LOG_ROLL,
        .base = t->base,
        .table = t->table,
        .period = t->period,
        .gc = t->gc,
    };
    struct bfs_cat_apply *a;
    int rc = bfs_catalog_apply_begin(cat, &r, &a);
    if (rc < 0)
        return rc;
    for (size_t i = 0; rc == 0 && t->retire && t->retire[i]; i++)
        rc = bfs_catalog_apply_retire(a, t->retire[i], err);
    for (size_t k = 0; rc == 0 && k < t->n_arch; k++) {
        const struct tarch *ta = &t->arch[k];
        struct trow rows[16];
        char names[16][BFS_NAME_MAX + 1];
        size_t n = arch_rows(ta, rows, names);
        uint64_t hl;
        char fp[17];
        layout_of(cat, ta->table, ta->period, &hl, fp);
        uint64_t size = hl;
        for (size_t i = 0; i < n; i++)
            size += rows[i].len;
        char key[256];
        arch_key(key, sizeof key, ta, t->id, (int)k);
        struct bfs_manifest_archive ar = {
            .key = key,
            .table = ta->table,
            .period = ta->period,
            .size = size,
            .header_length = hl,
            .schema_fingerprint = fp,
            .codec = BFS_CODEC_NULL,
        };
        memset(ar.sha256, (int)(t->seq * 7 + (int64_t)k), 32);
        rc = bfs_catalog_apply_archive(a, &ar, err);
        uint64_t start = hl;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            const struct bfs_manifest_index x = {
                .dataset = rows[i].ds,
                .start = start,
                .length = rows[i].len,
                .records = rows[i].records,
                .uploaded_at = 1766061000 + (int64_t)i,
            };
            start += rows[i].len;
            rc = bfs_catalog_apply_index(a, &x, err);
        }
    }
    if (voided)
        *voided = bfs_catalog_apply_void(a);
    return bfs_catalog_apply_end(a, rc, own, err);
}

static void apply_ok(struct bfs_catalog *cat, const struct tentry *t, int want_void)
{
    struct bfs_err err = {0};
    int voided = -1;
    int rc = apply_entry(cat, t, &voided, NULL, &err);
    if (rc != 0)
        fail_msg("apply %s at %" PRId64 ": %d %s", t->id, t->seq, rc, err.msg);
    assert_int_equal(voided, want_void);
}

/* Apply roll seq of node (id, base) with the archives arch[0..n). */
static void roll(struct bfs_catalog *cat, int64_t seq, const char *node, const char *id,
                 int64_t base, const struct tarch *arch, size_t n)
{
    const struct tentry t = {
        .seq = seq, .node = node, .id = id, .base = base, .arch = arch, .n_arch = n};
    apply_ok(cat, &t, 0);
}

/* Apply compaction seq of T1/P1 by node (id, upto, gc) retiring retire, with
 * the archives arch[0..n): void or not as want_void. */
static void compaction(struct bfs_catalog *cat, int64_t seq, const char *node, const char *id,
                       int64_t upto, int gc, const char *const *retire, const struct tarch *arch,
                       size_t n, int want_void)
{
    const struct tentry t = {.seq = seq,
                             .node = node,
                             .id = id,
                             .base = upto,
                             .compact = 1,
                             .table = T1,
                             .period = P1,
                             .gc = gc,
                             .retire = retire,
                             .arch = arch,
                             .n_arch = n};
    apply_ok(cat, &t, want_void);
}

static uint64_t erase(struct bfs_catalog *cat, int64_t seq, const char *dataset, const char *table,
                      const char *period)
{
    const struct bfs_log_erase x = {
        .seq = seq,
        .node = "b",
        .epoch = 1,
        .dataset = dataset,
        .table = table,
        .period = period,
        .erased_at = 1766064000 + seq,
        .committed_at = 1766064100 + seq,
    };
    uint64_t hits = 99;
    struct bfs_err err = {0};
    if (bfs_catalog_apply_erase(cat, &x, &hits, &err) != 0)
        fail_msg("erase %s at %" PRId64 ": %s", dataset, seq, err.msg);
    return hits;
}

/* The rows of sql are want (columns '|'-separated, a newline after each row). */
static void sql_is(struct tenv *e, const char *sql, const char *want)
{
    struct bfs_buf b = {0};
    tenv_sql_text(e, sql, &b);
    if (strcmp((const char *)b.data, want) != 0)
        fail_msg("%s:\n%s\nexpected:\n%s", sql, (const char *)b.data, want);
    bfs_buf_free(&b);
}

/* The cold segments of a dataset's view, as "key@offset+length" lines. */
static void view_is(struct bfs_catalog *cat, const char *table, const char *period,
                    const char *dataset, const char *want)
{
    struct bfs_dataset_view v;
    int rc = bfs_catalog_dataset(cat, table, period, dataset, &v);
    if (!want) {
        assert_int_equal(rc, -ENOENT);
        return;
    }
    assert_int_equal(rc, 0);
    char got[2048] = "";
    size_t n = 0;
    for (size_t i = 0; i < v.n; i++)
        n += (size_t)snprintf(got + n, sizeof got - n, "%s@%" PRIu64 "+%" PRIu64 "\n",
                              v.seg[i].kind == BFS_SEG_COLD ? v.seg[i].key : "hot",
                              v.seg[i].offset -
                                  (v.seg[i].kind == BFS_SEG_COLD ? v.part.header_len : 0),
                              v.seg[i].length);
    bfs_dataset_view_free(&v);
    if (strcmp(got, want) != 0)
        fail_msg("%s/%s/%s:\n%s\nexpected:\n%s", table, period, dataset, got, want);
}

#define ARCHIVES "SELECT file_path, ord, dirty FROM archived_files ORDER BY ord, id"
#define INDEX                                                                                      \
    "SELECT a.file_path, i.dataset_id, i.start_byte - a.header_length, i.length"                   \
    " FROM block_indexes i JOIN archived_files a ON a.id = i.file_id ORDER BY a.ord, a.id, i.id"
#define HITS "SELECT seq, file_path FROM erase_hits ORDER BY seq, file_path"
#define GC   "SELECT key, retired_at, urgent FROM store_gc ORDER BY key"

/* ---- compaction ---- */

/* 1: a roll of b in both partitions; 2: one of c in T1/P1; 3: this node's
 * compaction of T1/P1 up to 2 (b-r1 keeps its T2/P2 archive). */
static void compacted_start(struct bfs_catalog *cat)
{
    const struct tarch r1[] = {{T1, P1, "u1 u2", NULL, 0}, {T2, P2, "u1 u2", NULL, 0}};
    roll(cat, 1, "b", "b-r1", 0, r1, 2);
    const struct tarch r2[] = {{T1, P1, "u1 u3", NULL, 0}};
    roll(cat, 2, "c", "c-r2", 1, r2, 1);
    const char *const ret1[] = {T1 "/" P1 "/b-r1-0.avro", T1 "/" P1 "/c-r2-0.avro", NULL};
    const struct trow c1rows[] = {{"u1", 200, 2}, {"u2", LEN, 1}, {"u3", LEN, 1}};
    const struct tarch c1[] = {{T1, P1, NULL, c1rows, 3}};
    compaction(cat, 3, "a", "a-c1", 2, 1, ret1, c1, 1, 0);
}

static void test_compaction_replaces_partition(void **state)
{
    (void)state;
    struct tenv *e = new_env();
    compacted_start(e->cat);
    /* 4: a later roll */
    const struct tarch r3[] = {{T1, P1, "u1", NULL, 0}};
    roll(e->cat, 4, "c", "c-r3", 3, r3, 1);
    assert_int_equal(tenv_log_pos(e), 4);
    assert_int_equal(bfs_catalog_compaction_state(e->cat, "a-c1"), 1);
    assert_int_equal(bfs_catalog_compaction_state(e->cat, "c-r3"), 0); /* a roll */
    assert_int_equal(bfs_catalog_compaction_state(e->cat, "a-c9"), 0);
    sql_is(e, ARCHIVES,
           T2 "/" P2 "/b-r1-1.avro|1|0\n" T1 "/" P1 "/a-c1-0.avro|2|0\n" T1 "/" P1
              "/c-r3-0.avro|4|0\n");
    sql_is(e, INDEX,
           T2 "/" P2 "/b-r1-1.avro|u1|0|100\n" T2 "/" P2 "/b-r1-1.avro|u2|100|100\n" T1 "/" P1
              "/a-c1-0.avro|u1|0|200\n" T1 "/" P1 "/a-c1-0.avro|u2|200|100\n" T1 "/" P1
              "/a-c1-0.avro|u3|300|100\n" T1 "/" P1 "/c-r3-0.avro|u1|0|100\n");
    view_is(e->cat, T1, P1, "u1",
            T1 "/" P1 "/a-c1-0.avro@0+200\n" T1 "/" P1 "/c-r3-0.avro@0+100\n");
    view_is(e->cat, T2, P2, "u1", T2 "/" P2 "/b-r1-1.avro@0+100\n");
    /* its own: the retired objects are this mount's to delete, after the grace */
    sql_is(e, GC, T1 "/" P1 "/b-r1-0.avro|1766063003|0\n" T1 "/" P1 "/c-r2-0.avro|1766063003|0\n");
    sql_is(e,
           "SELECT id, kind, base, table_name, period_tag, void, log_seq FROM rolls"
           " WHERE kind = 1",
           "a-c1|1|2|" T1 "|" P1 "|0|3\n");

    /* 5: an erasure of u1 in T1/P1 marks both archives; 6: another node's
     * compaction up to 5 retires them: their hits go with them */
    assert_int_equal(erase(e->cat, 5, "u1", T1, P1), 2);
    sql_is(e, HITS, "5|" T1 "/" P1 "/a-c1-0.avro\n5|" T1 "/" P1 "/c-r3-0.avro\n");
    sql_is(e, ARCHIVES,
           T2 "/" P2 "/b-r1-1.avro|1|0\n" T1 "/" P1 "/a-c1-0.avro|2|1\n" T1 "/" P1
              "/c-r3-0.avro|4|1\n");
    view_is(e->cat, T1, P1, "u1", NULL);
    const char *const ret2[] = {T1 "/" P1 "/a-c1-0.avro", T1 "/" P1 "/c-r3-0.avro", NULL};
    const struct tarch c2[] = {{T1, P1, "u2 u3", NULL, 0}};
    compaction(e->cat, 6, "b", "b-c2", 5, 0, ret2, c2, 1, 0);
    sql_is(e, HITS, "");
    sql_is(e, GC, T1 "/" P1 "/b-r1-0.avro|1766063003|0\n" T1 "/" P1 "/c-r2-0.avro|1766063003|0\n");
    sql_is(e, ARCHIVES, T2 "/" P2 "/b-r1-1.avro|1|0\n" T1 "/" P1 "/b-c2-0.avro|5|0\n");
    assert_int_equal(bfs_catalog_erasures_settle(e->cat, 1766070000, NULL, NULL), 0);

    /* 7: an erasure of u2 after 8's upto: 8's rows of u2 are not applied
     * (its writer had not seen it), its archive holds them */
    assert_int_equal(erase(e->cat, 7, "u2", T1, P1), 1);
    const char *const ret3[] = {T1 "/" P1 "/b-c2-0.avro", NULL};
    const struct tarch c3[] = {{T1, P1, "u2 u3", NULL, 0}};
    compaction(e->cat, 8, "a", "a-c3", 6, 1, ret3, c3, 1, 0);
    sql_is(e, ARCHIVES, T2 "/" P2 "/b-r1-1.avro|1|0\n" T1 "/" P1 "/a-c3-0.avro|6|1\n");
    sql_is(e, INDEX,
           T2 "/" P2 "/b-r1-1.avro|u1|0|100\n" T2 "/" P2 "/b-r1-1.avro|u2|100|100\n" T1 "/" P1
              "/a-c3-0.avro|u3|100|100\n");
    sql_is(e, HITS, "7|" T1 "/" P1 "/a-c3-0.avro\n7|" T1 "/" P1 "/b-c2-0.avro\n");
    /* the retired archive held erased bytes: urgent */
    sql_is(e, GC,
           T1 "/" P1 "/b-c2-0.avro|1766063008|1\n" T1 "/" P1 "/b-r1-0.avro|1766063003|0\n" T1 "/" P1
              "/c-r2-0.avro|1766063003|0\n");
    view_is(e->cat, T1, P1, "u2", NULL);
    view_is(e->cat, T1, P1, "u3", T1 "/" P1 "/a-c3-0.avro@100+100\n");
    tenv_free(e);
}

static void test_void_compactions(void **state)
{
    (void)state;
    struct tenv *e = new_env();
    const struct tarch r1[] = {{T1, P1, "u1 u2", NULL, 0}};
    roll(e->cat, 1, "b", "b-r1", 0, r1, 1);
    const struct tarch r2[] = {{T1, P1, "u1", NULL, 0}};
    roll(e->cat, 2, "b", "b-r2", 1, r2, 1);
    const char *const both[] = {T1 "/" P1 "/b-r1-0.avro", T1 "/" P1 "/b-r2-0.avro", NULL};
    const struct trow crows[] = {{"u1", 200, 2}, {"u2", LEN, 1}};
    const struct tarch c1[] = {{T1, P1, NULL, crows, 2}};
    compaction(e->cat, 3, "c", "c-c1", 2, 0, both, c1, 1, 0);
    struct bfs_buf before = {0}, after = {0}, ibefore = {0}, iafter = {0};
    tenv_sql_text(e, ARCHIVES, &before);
    tenv_sql_text(e, INDEX, &ibefore);

    /* 4: a second compaction of the same sources (this node's): it retires
     * archives that are not live any more */
    const struct tarch c2[] = {{T1, P1, NULL, crows, 2}};
    compaction(e->cat, 4, "a", "a-c2", 2, 1, both, c2, 1, 1);
    assert_int_equal(tenv_log_pos(e), 4);
    assert_int_equal(bfs_catalog_compaction_state(e->cat, "a-c2"), 2);
    assert_int_equal(bfs_catalog_compaction_state(e->cat, "c-c1"), 1);
    sql_is(e,
           "SELECT id, kind, void, log_seq, committed_at IS NOT NULL FROM rolls"
           " WHERE id = 'a-c2'",
           "a-c2|1|1|4|1\n");
    tenv_sql_text(e, ARCHIVES, &after);
    tenv_sql_text(e, INDEX, &iafter);
    assert_string_equal((const char *)after.data, (const char *)before.data);
    assert_string_equal((const char *)iafter.data, (const char *)ibefore.data);
    sql_is(e, GC, "");

    /* 5: a roll; 6: a compaction up to 5 that retires only that roll's
     * archive and leaves c1's (ord 2) out: void, and what its retire did is
     * undone (rows, the gc list) */
    const struct tarch r3[] = {{T1, P1, "u3", NULL, 0}};
    roll(e->cat, 5, "b", "b-r3", 4, r3, 1);
    tenv_sql_text(e, ARCHIVES, &before);
    tenv_sql_text(e, INDEX, &ibefore);
    const char *const one[] = {T1 "/" P1 "/b-r3-0.avro", NULL};
    const struct tarch c3[] = {{T1, P1, "u3", NULL, 0}};
    compaction(e->cat, 6, "a", "a-c3", 5, 1, one, c3, 1, 1);
    assert_int_equal(bfs_catalog_compaction_state(e->cat, "a-c3"), 2);
    tenv_sql_text(e, ARCHIVES, &after);
    tenv_sql_text(e, INDEX, &iafter);
    assert_string_equal((const char *)after.data, (const char *)before.data);
    assert_string_equal((const char *)iafter.data, (const char *)ibefore.data);
    sql_is(e, GC, "");
    /* the same without archives (everything it held was erased): found void
     * by its end only */
    compaction(e->cat, 7, "a", "a-c4", 6, 1, one, NULL, 0, 0);
    assert_int_equal(bfs_catalog_compaction_state(e->cat, "a-c4"), 2);
    sql_is(e, GC, "");
    tenv_sql_text(e, INDEX, &iafter);
    assert_string_equal((const char *)iafter.data, (const char *)ibefore.data);
    sql_is(e, "SELECT id, void FROM rolls WHERE kind = 1 ORDER BY log_seq",
           "c-c1|0\na-c2|1\na-c3|1\na-c4|1\n");
    /* a void compaction's id is taken: its entry again is skipped */
    struct bfs_err err = {0};
    struct bfs_cat_apply *a;
    const struct bfs_log_roll again = {.seq = 8,
                                       .node = "a",
                                       .roll_id = "a-c3",
                                       .epoch = 1,
                                       .kind = BFS_LOG_COMPACT,
                                       .base = 5,
                                       .table = T1,
                                       .period = P1};
    assert_int_equal(bfs_catalog_apply_begin(e->cat, &again, &a), -EALREADY);
    /* a compaction whose archive is in another partition is refused */
    const struct tarch c5[] = {{T2, P2, "u3", NULL, 0}};
    assert_int_equal(apply_entry(e->cat,
                                 &(struct tentry){.seq = 8,
                                                  .node = "a",
                                                  .id = "a-c5",
                                                  .base = 7,
                                                  .compact = 1,
                                                  .table = T1,
                                                  .period = P1,
                                                  .arch = c5,
                                                  .n_arch = 1},
                                 NULL, NULL, &err),
                     -EINVAL);
    assert_int_equal(tenv_log_pos(e), 7);
    /* a retire in a roll, or after a compaction's archive */
    const struct bfs_log_roll roll = {
        .seq = 8, .node = "b", .roll_id = "b-r9", .epoch = 1, .rows = 1, .base = 7};
    assert_int_equal(bfs_catalog_apply_begin(e->cat, &roll, &a), 0);
    assert_int_equal(bfs_catalog_apply_retire(a, T1 "/" P1 "/b-r3-0.avro", &err), -EINVAL);
    assert_int_equal(bfs_catalog_apply_end(a, -EINVAL, NULL, &err), -EINVAL);
    sql_is(e, "SELECT count(*) FROM rolls WHERE id = 'b-r9'", "0\n");
    const struct bfs_log_roll comp = {.seq = 8,
                                      .node = "b",
                                      .roll_id = "b-c9",
                                      .epoch = 1,
                                      .kind = BFS_LOG_COMPACT,
                                      .base = 7,
                                      .table = T1,
                                      .period = P1};
    assert_int_equal(bfs_catalog_apply_begin(e->cat, &comp, &a), 0);
    uint64_t hl;
    char fp[17];
    layout_of(e->cat, T1, P1, &hl, fp);
    const struct bfs_manifest_archive ar = {.key = T1 "/" P1 "/b-c9-0.avro",
                                            .table = T1,
                                            .period = P1,
                                            .size = hl,
                                            .header_length = hl,
                                            .schema_fingerprint = fp,
                                            .codec = BFS_CODEC_NULL};
    assert_int_equal(bfs_catalog_apply_archive(a, &ar, &err), 0);
    assert_int_equal(bfs_catalog_apply_retire(a, T1 "/" P1 "/b-r3-0.avro", &err), -EINVAL);
    assert_int_equal(bfs_catalog_apply_end(a, -EINVAL, NULL, &err), -EINVAL);
    assert_int_equal(tenv_log_pos(e), 7);
    tenv_sql_text(e, INDEX, &iafter);
    assert_string_equal((const char *)iafter.data, (const char *)ibefore.data);
    bfs_buf_free(&before);
    bfs_buf_free(&after);
    bfs_buf_free(&ibefore);
    bfs_buf_free(&iafter);
    tenv_free(e);
}

/* ---- erasure ---- */

static void test_erasure_of_cold_rows(void **state)
{
    (void)state;
    struct tenv *e = new_env();
    const struct tarch r1[] = {{T1, P1, "u1 u2 u1", NULL, 0}, {T2, P2, "u1 u2", NULL, 0}};
    roll(e->cat, 1, "b", "b-r1", 0, r1, 2);
    /* 2: u1 in T1/P1 only */
    assert_int_equal(erase(e->cat, 2, "u1", T1, P1), 1);
    sql_is(e, ARCHIVES, T1 "/" P1 "/b-r1-0.avro|1|1\n" T2 "/" P2 "/b-r1-1.avro|1|0\n");
    sql_is(e, INDEX,
           T1 "/" P1 "/b-r1-0.avro|u2|100|100\n" T2 "/" P2 "/b-r1-1.avro|u1|0|100\n" T2 "/" P2
              "/b-r1-1.avro|u2|100|100\n");
    sql_is(e, HITS, "2|" T1 "/" P1 "/b-r1-0.avro\n");
    view_is(e->cat, T1, P1, "u1", NULL);
    view_is(e->cat, T2, P2, "u1", T2 "/" P2 "/b-r1-1.avro@0+100\n");
    /* 3: u2 everywhere */
    assert_int_equal(erase(e->cat, 3, "u2", NULL, NULL), 2);
    sql_is(e, ARCHIVES, T1 "/" P1 "/b-r1-0.avro|1|1\n" T2 "/" P2 "/b-r1-1.avro|1|1\n");
    sql_is(e, INDEX, T2 "/" P2 "/b-r1-1.avro|u1|0|100\n");
    sql_is(e, HITS,
           "2|" T1 "/" P1 "/b-r1-0.avro\n3|" T1 "/" P1 "/b-r1-0.avro\n3|" T2 "/" P2
           "/b-r1-1.avro\n");
    sql_is(e, "SELECT seq, node, dataset_id, table_name, period_tag, done_at FROM erasures",
           "2|b|u1|" T1 "|" P1 "|NULL\n3|b|u2|NULL|NULL|NULL\n");
    /* the erasure is the next log position, or nothing */
    const struct bfs_log_erase stale = {.seq = 3, .node = "b", .dataset = "u3"};
    uint64_t hits;
    struct bfs_err err = {0};
    assert_int_equal(bfs_catalog_apply_erase(e->cat, &stale, &hits, &err), -ESTALE);
    const struct bfs_log_erase half = {.seq = 4, .node = "b", .dataset = "u3", .table = T1};
    assert_int_equal(bfs_catalog_apply_erase(e->cat, &half, &hits, &err), -EINVAL);
    assert_int_equal(tenv_log_pos(e), 3);

    /* 4: a roll whose writer had read up to 2 (base): u2 was erased after
     * that (3), its rows of u2 are dropped; u1 of T1/P1 was erased before
     * its base: applied (a later upload is a new dataset) */
    const struct tarch r2[] = {{T1, P1, "u1 u2", NULL, 0}, {T2, P2, "u2 u3", NULL, 0}};
    roll(e->cat, 4, "c", "c-r2", 2, r2, 2);
    sql_is(e, "SELECT file_path, ord, dirty FROM archived_files WHERE roll_id = 'c-r2' ORDER BY id",
           T1 "/" P1 "/c-r2-0.avro|4|1\n" T2 "/" P2 "/c-r2-1.avro|4|1\n");
    view_is(e->cat, T1, P1, "u1", T1 "/" P1 "/c-r2-0.avro@0+100\n");
    view_is(e->cat, T1, P1, "u2", NULL);
    view_is(e->cat, T2, P2, "u2", NULL);
    view_is(e->cat, T2, P2, "u3", T2 "/" P2 "/c-r2-1.avro@100+100\n");
    sql_is(e, "SELECT seq, file_path FROM erase_hits WHERE file_path LIKE '%c-r2%' ORDER BY 2",
           "3|" T1 "/" P1 "/c-r2-0.avro\n3|" T2 "/" P2 "/c-r2-1.avro\n");
    /* a roll that had read the erasures applies everything */
    const struct tarch r3[] = {{T1, P1, "u2", NULL, 0}};
    roll(e->cat, 5, "c", "c-r3", 3, r3, 1);
    view_is(e->cat, T1, P1, "u2", T1 "/" P1 "/c-r3-0.avro@0+100\n");
    /* a manifest of version 2 (no base): nothing dropped */
    const struct tarch r4[] = {{T1, P1, "u2", NULL, 0}};
    roll(e->cat, 6, "c", "c-r4", INT64_MAX, r4, 1);
    view_is(e->cat, T1, P1, "u2",
            T1 "/" P1 "/c-r3-0.avro@0+100\n" T1 "/" P1 "/c-r4-0.avro@0+100\n");
    /* settled once no archive holds them (gc_done: their objects are deleted) */
    assert_int_equal(bfs_catalog_erasures_settle(e->cat, 1766070000, NULL, NULL), 2);
    assert_int_equal(bfs_catalog_gc_done(e->cat, T1 "/" P1 "/b-r1-0.avro"), 0);
    assert_int_equal(bfs_catalog_gc_done(e->cat, T1 "/" P1 "/c-r2-0.avro"), 0);
    assert_int_equal(bfs_catalog_erasures_settle(e->cat, 1766070000, NULL, NULL), 1);
    sql_is(e, "SELECT seq, done_at FROM erasures", "2|1766070000\n3|NULL\n");
    tenv_free(e);
}

/* What the settle callback saw. */
struct settled {
    int n;
    int64_t seq[8];
    char dataset[8][32];
};

static int on_settled(void *ctx, const struct bfs_erasure *x)
{
    struct settled *s = ctx;
    assert_true(s->n < 8);
    s->seq[s->n] = x->seq;
    snprintf(s->dataset[s->n], sizeof s->dataset[0], "%s", x->dataset);
    s->n++;
    return 0;
}

static void test_erasure_of_hot_rows(void **state)
{
    (void)state;
    struct tenv *e = new_env();
    /* a roll claims user1 (twice) and user2 of T1/P1, user1 of T2/P2 */
    size_t u[8];
    u[0] = tenv_upload(e, T1, P1, "user1", 300, 1);
    u[1] = tenv_upload(e, T1, P1, "user2", 200, 2);
    u[2] = tenv_upload(e, T1, P1, "user1", 100, 3);
    u[3] = tenv_upload(e, T2, P2, "user1", 50, 4);
    char roll_id[BFS_ROLL_ID_MAX];
    uint64_t rows, bytes;
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "a", roll_id, &rows, &bytes), 0);
    assert_int_equal(rows, 4);
    struct bfs_roll_info info;
    assert_int_equal(bfs_catalog_roll_info(e->cat, roll_id, &info), 0);
    assert_int_equal(info.base, 0);
    /* then unclaimed rows */
    u[4] = tenv_upload(e, T1, P1, "user1", 70, 5);
    u[5] = tenv_upload(e, T1, P1, "user2", 80, 6);
    u[6] = tenv_upload(e, T2, P2, "user1", 90, 7);
    const char *HOT = "SELECT dataset_id, table_name, byte_length FROM buffer_rows ORDER BY id";
    /* 1: user1 of T1/P1: the unclaimed row goes (and its blob), the claimed ones stay */
    assert_int_equal(erase(e->cat, 1, "user1", T1, P1), 0);
    sql_is(e, HOT,
           "user1|" T1 "|300\nuser2|" T1 "|200\nuser1|" T1 "|100\nuser1|" T2 "|50\nuser2|" T1
           "|80\nuser1|" T2 "|90\n");
    assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM buffer_data"), 6);
    view_is(e->cat, T2, P2, "user1", "hot@0+50\nhot@0+90\n");
    /* claimed rows may still hold its bytes */
    struct settled s = {0};
    assert_int_equal(bfs_catalog_erasures_settle(e->cat, 1766070000, on_settled, &s), 1);
    assert_int_equal(s.n, 0);
    /* an upload after the erasure is a new dataset */
    u[7] = tenv_upload(e, T1, P1, "user1", 60, 8);

    /* 2: the roll's commit: its manifest holds user1 of T1/P1 (claimed
     * before the erasure), which is not applied, and the check of the
     * claim against the index passes */
    const struct trow t1rows[] = {{"user1", 400, e->up[u[0]].records + e->up[u[2]].records},
                                  {"user2", 200, e->up[u[1]].records}};
    const struct trow t2rows[] = {{"user1", 50, e->up[u[3]].records}};
    const struct tarch own[] = {{T1, P1, NULL, t1rows, 2}, {T2, P2, NULL, t2rows, 1}};
    struct bfs_err err = {0};
    int is_own = 0;
    int rc = apply_entry(e->cat,
                         &(struct tentry){.seq = 2,
                                          .node = "a",
                                          .id = roll_id,
                                          .base = info.base,
                                          .arch = own,
                                          .n_arch = 2,
                                          .claimed_at = info.claimed_at,
                                          .rows = info.rows},
                         NULL, &is_own, &err);
    if (rc != 0)
        fail_msg("own roll: %d %s", rc, err.msg);
    assert_int_equal(is_own, 1);
    char key[256];
    snprintf(key, sizeof key, "%s/%s/%s-0.avro", T1, P1, roll_id);
    struct bfs_buf want = {0};
    assert_int_equal(bfs_buf_printf(&want, "1|%s\n", key), 0);
    sql_is(e, HITS, (const char *)want.data);
    bfs_buf_reset(&want);
    assert_int_equal(bfs_buf_printf(&want, "hot@0+60\n"), 0);
    view_is(e->cat, T1, P1, "user1", (const char *)want.data);
    bfs_buf_reset(&want);
    assert_int_equal(bfs_buf_printf(&want, "%s/%s/%s-1.avro@0+50\nhot@0+90\n", T2, P2, roll_id), 0);
    view_is(e->cat, T2, P2, "user1", (const char *)want.data);
    sql_is(e, HOT, "user2|" T1 "|80\nuser1|" T2 "|90\nuser1|" T1 "|60\n");

    /* the archive holds it: pending; then its object is deleted (gc_done),
     * but the rolled blobs wait for their purge: pending; then purged: done,
     * told once */
    assert_int_equal(bfs_catalog_erasures_settle(e->cat, 1766070000, on_settled, &s), 1);
    assert_int_equal(bfs_catalog_gc_done(e->cat, key), 0);
    sql_is(e, HITS, "");
    assert_int_equal(bfs_catalog_erasures_settle(e->cat, 1766070000, on_settled, &s), 1);
    assert_int_equal(s.n, 0);
    assert_true(bfs_catalog_purge(e->cat, 1000) > 0);
    assert_int_equal(bfs_catalog_erasures_settle(e->cat, 1766070001, on_settled, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seq[0], 1);
    assert_string_equal(s.dataset[0], "user1");
    assert_int_equal(bfs_catalog_erasures_settle(e->cat, 1766070002, on_settled, &s), 0);
    assert_int_equal(s.n, 1);
    sql_is(e, "SELECT seq, done_at FROM erasures", "1|1766070001\n");
    uint64_t pending, total;
    assert_int_equal(bfs_catalog_erase_counts(e->cat, &pending, &total), 0);
    assert_int_equal(pending, 0);
    assert_int_equal(total, 1);
    bfs_buf_free(&want);
    tenv_free(e);
}

/* ---- checkpoints ---- */

struct snap {
    struct bfs_manifest_writer *w;
    int rolls, compacts, erases;
};

static int snap_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                     int64_t committed_at)
{
    struct snap *s = ctx;
    s->rolls++;
    return bfs_checkpoint_add_roll(s->w, r, seq, epoch, committed_at);
}

static int snap_compact(void *ctx, const struct bfs_manifest_compact *c, int64_t seq, int64_t epoch,
                        int64_t committed_at)
{
    struct snap *s = ctx;
    s->compacts++;
    return bfs_checkpoint_add_compact(s->w, c, seq, epoch, committed_at);
}

static int snap_erase(void *ctx, const struct bfs_manifest_erase *x, int64_t seq, int64_t epoch,
                      int64_t committed_at)
{
    struct snap *s = ctx;
    s->erases++;
    return bfs_checkpoint_add_erase(s->w, x, seq, epoch, committed_at);
}

static int snap_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    return bfs_manifest_add_archive(((struct snap *)ctx)->w, a);
}

static int snap_index(void *ctx, const struct bfs_manifest_index *x)
{
    return bfs_manifest_add_index(((struct snap *)ctx)->w, x);
}

static int snap_node(void *ctx, const char *node, int64_t epoch)
{
    return bfs_checkpoint_add_node(((struct snap *)ctx)->w, node, epoch);
}

/* Snapshot x at its log position into a checkpoint, load it into y (which
 * applied nothing of the log). */
static void checkpoint_into(struct tenv *x, struct tenv *y, struct snap *s)
{
    char path[160];
    snprintf(path, sizeof path, "%s/ckpt.avro", x->dir);
    unlink(path);
    int64_t upto = tenv_log_pos(x);
    assert_int_equal(bfs_checkpoint_create(path, &s->w), 0);
    const struct bfs_checkpoint_visitor sv = {snap_roll, snap_archive, snap_index, snap_node,
                                              s,         snap_compact, snap_erase};
    int rc = bfs_catalog_snapshot(x->cat, upto, &sv);
    uint8_t sha[32];
    uint64_t size;
    if (rc == 0)
        rc = bfs_manifest_finish(s->w, sha, &size); /* frees the writer */
    else
        bfs_manifest_abort(s->w);
    s->w = NULL;
    if (rc != 0)
        fail_msg("snapshot into a checkpoint: %d", rc);

    struct bfs_err err = {0};
    rc = tenv_load_checkpoint(y->cat, path, upto, &err);
    if (rc != 0)
        fail_msg("load: %d %s", rc, err.msg);
    assert_int_equal(tenv_log_pos(y), upto);
}

/* The rows of sql are the same in x and y. */
static void same(struct tenv *x, struct tenv *y, const char *sql)
{
    struct bfs_buf bx = {0}, by = {0};
    tenv_sql_text(x, sql, &bx);
    tenv_sql_text(y, sql, &by);
    if (strcmp((const char *)bx.data, (const char *)by.data) != 0)
        fail_msg("%s:\nX:\n%s\nY:\n%s", sql, (const char *)bx.data, (const char *)by.data);
    bfs_buf_free(&bx);
    bfs_buf_free(&by);
}

static void test_checkpoint_round_trip(void **state)
{
    (void)state;
    struct tenv *x = new_env();
    compacted_start(x->cat);
    /* 4: a roll whose writer had read 2; 5: an erasure of u2 everywhere
     * (before 6's base: applied there), of u1 in T2/P2 after 4 */
    const struct tarch r3[] = {{T1, P1, "u1 u2", NULL, 0}};
    roll(x->cat, 4, "c", "c-r3", 2, r3, 1);
    erase(x->cat, 5, "u2", NULL, NULL);
    /* 6: a roll whose writer had read 4: its u2 rows are dropped */
    const struct tarch r4[] = {{T1, P1, "u2 u4", NULL, 0}, {T2, P2, "u4", NULL, 0}};
    roll(x->cat, 6, "b", "b-r4", 4, r4, 2);
    /* 7: a void compaction; 8: a compaction of T1/P1 up to 6 after which
     * c1's archive is gone too; 9: a fence-like skip */
    const char *const ret_void[] = {T1 "/" P1 "/b-r1-0.avro", NULL};
    compaction(x->cat, 7, "a", "a-cv", 2, 1, ret_void, NULL, 0, 1);
    assert_int_equal(bfs_catalog_compaction_state(x->cat, "a-cv"), 2);
    const char *const ret2[] = {T1 "/" P1 "/a-c1-0.avro", T1 "/" P1 "/c-r3-0.avro",
                                T1 "/" P1 "/b-r4-0.avro", NULL};
    const struct tarch c2[] = {{T1, P1, "u1 u1 u3 u4", NULL, 0}};
    compaction(x->cat, 8, "b", "b-c2", 6, 0, ret2, c2, 1, 0);
    erase(x->cat, 9, "u1", T2, P2);
    const struct tarch r5[] = {{T2, P2, "u5", NULL, 0}};
    roll(x->cat, 10, "c", "c-r5", 9, r5, 1);
    assert_int_equal(bfs_catalog_log_skip(x->cat, 11, "d", 3), 0);

    struct tenv *y = new_env();
    struct snap s = {0};
    checkpoint_into(x, y, &s);
    assert_int_equal(s.rolls, 5);
    assert_int_equal(s.compacts, 2); /* not the void one */
    assert_int_equal(s.erases, 2);
    /* (not archived_files.seq, an archive's position in its manifest: the
     * checkpoint numbers the live ones only) */
    same(x, y,
         "SELECT file_path, table_name, period_tag, ord, dirty, size, header_length, roll_id,"
         " created_at, hex(sha256), schema_fingerprint, codec FROM archived_files"
         " ORDER BY id");
    same(x, y, INDEX);
    same(x, y,
         "SELECT i.dataset_id, i.table_name, i.period_tag, i.record_count, i.uploaded_at"
         " FROM block_indexes i JOIN archived_files a ON a.id = i.file_id"
         " ORDER BY a.ord, a.id, i.id");
    same(x, y,
         "SELECT seq, node, dataset_id, table_name, period_tag, epoch, erased_at,"
         " committed_at FROM erasures ORDER BY seq");
    same(x, y,
         "SELECT id, node, log_seq, epoch, kind, base, table_name, period_tag, void"
         " FROM rolls WHERE void = 0 ORDER BY log_seq");
    same(x, y, "SELECT node, epoch FROM ledger_nodes ORDER BY node");
    /* the dirty archives are those that do not hold only their index's bytes */
    sql_is(y, "SELECT file_path FROM archived_files WHERE dirty = 1 ORDER BY id",
           T2 "/" P2 "/b-r1-1.avro\n");
    view_is(y->cat, T1, P1, "u1",
            T1 "/" P1 "/b-c2-0.avro@0+100\n" T1 "/" P1 "/b-c2-0.avro@100+100\n");
    view_is(y->cat, T2, P2, "u1", NULL);
    view_is(y->cat, T2, P2, "u5", T2 "/" P2 "/c-r5-0.avro@0+100\n");
    tenv_free(y);
    tenv_free(x);
}

/* A catalog that applied nothing of the log may hold uploads (its store did
 * not answer at mount): an erasure in the checkpoint it loads deletes its
 * unclaimed rows of the dataset, as the erasure's log entry would. */
static void test_checkpoint_erasure_hot_rows(void **state)
{
    (void)state;
    struct tenv *x = new_env();
    const struct tarch r1[] = {{T1, P1, "user1 user2", NULL, 0}};
    roll(x->cat, 1, "b", "b-r1", 0, r1, 1);
    erase(x->cat, 2, "user1", T1, P1);
    erase(x->cat, 3, "user3", NULL, NULL);

    const char *HOT = "SELECT dataset_id, table_name FROM buffer_rows ORDER BY id";
    struct tenv *z[2];
    for (int i = 0; i < 2; i++) {
        z[i] = new_env();
        tenv_upload(z[i], T1, P1, "user1", 100, 1);
        tenv_upload(z[i], T1, P1, "user2", 100, 2);
        tenv_upload(z[i], T2, P2, "user1", 100, 3);
        tenv_upload(z[i], T2, P2, "user3", 100, 4);
    }
    /* z[0] reads the log, z[1] a checkpoint of it */
    roll(z[0]->cat, 1, "b", "b-r1", 0, r1, 1);
    erase(z[0]->cat, 2, "user1", T1, P1);
    erase(z[0]->cat, 3, "user3", NULL, NULL);
    sql_is(z[0], HOT, "user2|" T1 "\nuser1|" T2 "\n");
    struct snap s = {0};
    checkpoint_into(x, z[1], &s);
    sql_is(z[1], HOT, "user2|" T1 "\nuser1|" T2 "\n");
    assert_int_equal(tenv_sql_int(z[1], "SELECT count(*) FROM buffer_data"), 2);
    view_is(z[1]->cat, T1, P1, "user1", NULL);
    same(z[0], z[1], INDEX);
    for (int i = 0; i < 2; i++)
        tenv_free(z[i]);
    tenv_free(x);
}

/* ---- the compactor's reads ---- */

struct reads {
    char out[2048];
    size_t n;
};

static int on_source(void *ctx, const struct bfs_compact_source *s)
{
    struct reads *r = ctx;
    assert_non_null(s->schema_json);
    r->n += (size_t)snprintf(r->out + r->n, sizeof r->out - r->n, "%s %d\n", s->key, s->dirty);
    return 0;
}

static int on_row(void *ctx, const struct bfs_compact_row *x)
{
    struct reads *r = ctx;
    r->n += (size_t)snprintf(r->out + r->n, sizeof r->out - r->n, "%s@%" PRId64 "+%" PRIu64 "\n",
                             x->dataset, x->file_id, x->length);
    return 0;
}

static int on_candidate(void *ctx, const struct bfs_compact_candidate *c)
{
    struct reads *r = ctx;
    r->n += (size_t)snprintf(r->out + r->n, sizeof r->out - r->n,
                             "%s/%s %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n", c->table,
                             c->period, c->archives, c->rolled, c->dirty, c->erased_at);
    return 0;
}

static int on_compaction(void *ctx, const char *id, const char *table, const char *period,
                         int64_t upto)
{
    struct reads *r = ctx;
    r->n += (size_t)snprintf(r->out + r->n, sizeof r->out - r->n, "%s %s/%s %" PRId64 "\n", id,
                             table, period, upto);
    return 0;
}

/* The rows a compaction up to upto reads, a page of max datasets at a time
 * (as compact.c pages them: after the last dataset a page gave). */
static void rows_paged(struct bfs_catalog *cat, int64_t upto, int max, struct reads *r)
{
    char after[BFS_NAME_MAX + 1] = "";
    r->n = 0;
    r->out[0] = '\0';
    for (;;) {
        size_t from = r->n;
        int n = bfs_catalog_compact_rows(cat, T1, P1, upto, after, max, on_row, r);
        assert_true(n >= 0);
        if (n == 0)
            break;
        /* the last row's dataset */
        const char *last = r->out + from;
        for (const char *p = r->out + from; p < r->out + r->n - 1; p++)
            if (*p == '\n')
                last = p + 1;
        size_t k = strcspn(last, "@");
        memcpy(after, last, k);
        after[k] = '\0';
    }
}

static void test_compactor_reads(void **state)
{
    (void)state;
    struct tenv *e = new_env();
    const struct tarch r1[] = {{T1, P1, "u1 u5", NULL, 0}, {T2, P2, "u1", NULL, 0}};
    roll(e->cat, 1, "b", "b-r1", 0, r1, 2);
    const struct tarch r2[] = {{T1, P1, "u1 u6", NULL, 0}};
    roll(e->cat, 2, "b", "b-r2", 1, r2, 1);
    erase(e->cat, 3, "u6", NULL, NULL);
    /* the compactor's snapshot: the position and the sources in file order */
    int64_t upto = 0;
    struct reads r = {.n = 0};
    assert_int_equal(bfs_catalog_compact_sources(e->cat, T1, P1, &upto, on_source, &r), 0);
    assert_int_equal(upto, 3);
    assert_string_equal(r.out, T1 "/" P1 "/b-r1-0.avro 0\n" T1 "/" P1 "/b-r2-0.avro 1\n");
    /* 4: a roll after it, with datasets between the sources' */
    const struct tarch r3[] = {{T1, P1, "u2 u3 u4", NULL, 0}};
    roll(e->cat, 4, "c", "c-r3", 3, r3, 1);
    /* every live row of the sources, by dataset then file order, whatever
     * the page size: datasets only in later archives fill no page */
    int64_t f1 = tenv_sql_int(e, "SELECT id FROM archived_files WHERE file_path LIKE '%b-r1-0%'");
    int64_t f2 = tenv_sql_int(e, "SELECT id FROM archived_files WHERE file_path LIKE '%b-r2-0%'");
    char want[256];
    snprintf(want, sizeof want, "u1@%" PRId64 "+100\nu1@%" PRId64 "+100\nu5@%" PRId64 "+100\n", f1,
             f2, f1);
    for (int max = 1; max <= 4; max++) {
        rows_paged(e->cat, upto, max, &r);
        if (strcmp(r.out, want) != 0)
            fail_msg("pages of %d datasets:\n%s\nexpected:\n%s", max, r.out, want);
    }
    /* candidates: live archives of the log per partition, rolled ones, dirty
     * ones, the oldest pending erasure holding bytes there */
    r.n = 0;
    assert_int_equal(bfs_catalog_compact_candidates(e->cat, on_candidate, &r), 0);
    assert_string_equal(r.out, T1 "/" P1 " 3 3 1 1766064103\n" T2 "/" P2 " 1 1 0 0\n");
    /* this mount's compactions in progress */
    assert_int_equal(bfs_catalog_compaction_begin(e->cat, "a-c1", T1, P1, 3), 0);
    assert_int_equal(bfs_catalog_compaction_begin(e->cat, "a-c0", T2, P2, 2), 0);
    r.n = 0;
    assert_int_equal(bfs_catalog_compactions(e->cat, on_compaction, &r), 0);
    assert_string_equal(r.out, "a-c0 " T2 "/" P2 " 2\na-c1 " T1 "/" P1 " 3\n");
    assert_int_equal(bfs_catalog_compaction_end(e->cat, "a-c0"), 0);
    r.n = 0;
    assert_int_equal(bfs_catalog_compactions(e->cat, on_compaction, &r), 0);
    assert_string_equal(r.out, "a-c1 " T1 "/" P1 " 3\n");
    tenv_free(e);
}

/* ---- through the ledger ---- */

/* A writer rolls, erases and compacts through its ledger until a roll takes
 * log position 20 and writes a checkpoint; a new replica of the store loads
 * that checkpoint and holds the writer's rows. */
static void test_ledger_checkpoint_after_compaction(void **state)
{
    (void)state;
    struct tenv *a = tenv_new(0);
    char work[160];
    snprintf(work, sizeof work, "%s/compact", a->dir);
    assert_int_equal(mkdir(work, 0700), 0);
    const struct bfs_compact_deps cd = {
        .cat = a->cat,
        .store = &a->ms->base,
        .ledger = a->ledger,
        .stats = &a->stats,
        .errors = &a->errors,
        .node = a->node,
        .work_dir = work,
        .archive_max_bytes = 1u << 20,
        .gc_grace = 3600,
        .erase_within = 86400,
    };
    struct bfs_err err = {0};
    char name[16];
    /* 1..15: rolls of u0..u4 in T1/P1 (and u0 in T2/P2 now and then) */
    for (int i = 1; i <= 15; i++) {
        snprintf(name, sizeof name, "u%d", i % 5);
        tenv_upload_records(a, T1, P1, name, 3, 1);
        if (i % 4 == 0)
            tenv_upload_records(a, T2, P2, "u0", 2, 1);
        assert_int_equal(bfs_roll_once(&a->roll), 0);
    }
    assert_int_equal(tenv_log_pos(a), 15);
    /* 16: u1 erased in T1/P1; 17: T1/P1 compacted without it; 18: u2 everywhere */
    int64_t seq = 0;
    if (bfs_ledger_erase(a->ledger, "u1", T1, P1, &seq, &err) != 0)
        fail_msg("erase: %s", err.msg);
    assert_int_equal(seq, 16);
    if (bfs_compact_partition(&cd, T1, P1, &err) != 0)
        fail_msg("compact: %s", err.msg);
    assert_int_equal(tenv_log_pos(a), 17);
    assert_int_equal(bfs_ledger_erase(a->ledger, "u0", NULL, NULL, &seq, &err), 0);
    /* 19, 20: rolls; the second writes the checkpoint */
    for (int i = 19; i <= 20; i++) {
        tenv_upload_records(a, T1, P1, "u3", 2, 1);
        assert_int_equal(bfs_roll_once(&a->roll), 0);
    }
    assert_int_equal(tenv_log_pos(a), 20);
    assert_int_equal(memstore_count(a->ms, BFS_LEDGER_PREFIX "checkpoints/"), 1);
    sql_is(a, "SELECT count(*) FROM rolls WHERE kind = 1 AND void = 0", "1\n");

    const struct tenv_opts ro = {.ms = a->ms, .node = "r", .read_only = 1};
    struct tenv *b = tenv_new_opts(&ro);
    unsigned lists = a->ms->lists_after;
    tenv_refresh(b);
    assert_int_equal(tenv_log_pos(b), 20);
    /* one listing of the checkpoints, one of the log after 20 */
    assert_int_equal(a->ms->lists_after - lists, 2);
    same(a, b, "SELECT file_path, ord, dirty FROM archived_files ORDER BY id");
    same(a, b, INDEX);
    same(a, b, "SELECT seq, node, dataset_id, table_name, period_tag FROM erasures ORDER BY seq");
    view_is(b->cat, T1, P1, "u1", NULL);
    view_is(b->cat, T2, P2, "u0", NULL);
    tenv_free(b);
    tenv_free(a);
}

/* ---- the store's garbage ---- */

struct due {
    char keys[8][64];
    int urgent[8];
    int n;
};

static int on_due(void *ctx, const char *key, int urgent)
{
    struct due *d = ctx;
    assert_true(d->n < 8);
    snprintf(d->keys[d->n], sizeof d->keys[0], "%s", key);
    d->urgent[d->n++] = urgent;
    return 0;
}

static int stop_due(void *ctx, const char *key, int urgent)
{
    on_due(ctx, key, urgent);
    return 7;
}

static void test_gc(void **state)
{
    (void)state;
    struct tenv *e = new_env();
    assert_int_equal(bfs_catalog_gc_add(e->cat, "k/old", 1000, 0), 0);
    assert_int_equal(bfs_catalog_gc_add(e->cat, "k/new", 1900, 0), 0);
    assert_int_equal(bfs_catalog_gc_add(e->cat, "k/urgent", 1950, 1), 0);
    assert_int_equal(bfs_catalog_gc_add(e->cat, "k/mid", 1300, 0), 0);
    /* again: urgent only rises, the time stays */
    assert_int_equal(bfs_catalog_gc_add(e->cat, "k/urgent", 1990, 0), 0);
    assert_int_equal(bfs_catalog_gc_add(e->cat, "k/new", 1999, 1), 0);
    sql_is(e, GC, "k/mid|1300|0\nk/new|1900|1\nk/old|1000|0\nk/urgent|1950|1\n");
    /* due at 2000 with a grace of 600: the urgent ones first, then those
     * retired at 1400 or before, oldest first */
    struct due d = {0};
    assert_int_equal(bfs_catalog_gc_due(e->cat, 2000, 600, on_due, &d), 0);
    assert_int_equal(d.n, 4);
    assert_string_equal(d.keys[0], "k/new");
    assert_string_equal(d.keys[1], "k/urgent");
    assert_string_equal(d.keys[2], "k/old");
    assert_string_equal(d.keys[3], "k/mid");
    assert_int_equal(d.urgent[0] + d.urgent[1] + d.urgent[2] + d.urgent[3], 2);
    d.n = 0;
    assert_int_equal(bfs_catalog_gc_due(e->cat, 1500, 600, on_due, &d), 0);
    assert_int_equal(d.n, 2);
    /* a callback's non-zero return stops the walk and is returned */
    d.n = 0;
    assert_int_equal(bfs_catalog_gc_due(e->cat, 2000, 600, stop_due, &d), 7);
    assert_int_equal(d.n, 1);

    /* gc_done forgets the key and the erasure hits it held */
    const struct tarch r1[] = {{T1, P1, "u1", NULL, 0}, {T2, P2, "u1", NULL, 0}};
    roll(e->cat, 1, "b", "b-r1", 0, r1, 2);
    assert_int_equal(erase(e->cat, 2, "u1", NULL, NULL), 2);
    assert_int_equal(bfs_catalog_gc_done(e->cat, "k/old"), 0);
    assert_int_equal(bfs_catalog_gc_done(e->cat, T1 "/" P1 "/b-r1-0.avro"), 0);
    sql_is(e, GC, "k/mid|1300|0\nk/new|1900|1\nk/urgent|1950|1\n");
    sql_is(e, HITS, "2|" T2 "/" P2 "/b-r1-1.avro\n");
    /* unknown keys: nothing to do */
    assert_int_equal(bfs_catalog_gc_done(e->cat, "k/none"), 0);
    tenv_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compaction_replaces_partition),
        cmocka_unit_test(test_void_compactions),
        cmocka_unit_test(test_erasure_of_cold_rows),
        cmocka_unit_test(test_erasure_of_hot_rows),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_checkpoint_erasure_hot_rows),
        cmocka_unit_test(test_compactor_reads),
        cmocka_unit_test(test_ledger_checkpoint_after_compaction),
        cmocka_unit_test(test_gc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
