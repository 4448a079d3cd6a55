/* test_catalog.c - the SQLite catalog: migrations, group commit, views, listing, rolls. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/catalog.h"
#include "battlefs/manifest.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "battlefs/sha256.h"

/* ------------------------------------------------------------------------ */
/* fixtures                                                                  */

static const char *SCHEMA_A = "{\"type\": \"record\", \"name\": \"Battle\", \"doc\": \"x\","
                              " \"fields\": [{\"name\": \"id\", \"type\": \"long\"}]}";
static const char *SCHEMA_B = "{\"type\":\"record\",\"name\":\"Battle\","
                              "\"fields\":[{\"name\":\"id\",\"type\":\"string\"}]}";

struct env {
    char dir[64];
    char path[96];
    struct bfs_catalog *cat;
    char *canon_a, *canon_b;
    size_t canon_a_len, canon_b_len;
};

static char *canonical(const char *json, size_t *len)
{
    char *out = NULL;
    struct bfs_err err = {0};
    int rc = bfs_schema_canonical(json, strlen(json), &out, len, &err);
    if (rc != 0)
        fail_msg("canonical form: %d %s", rc, err.msg);
    return out;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    snprintf(e->dir, sizeof e->dir, "/tmp/bfs-catalog-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->path, sizeof e->path, "%s/catalog.db", e->dir);
    assert_int_equal(bfs_catalog_open(e->path, &e->cat), 0);
    e->canon_a = canonical(SCHEMA_A, &e->canon_a_len);
    e->canon_b = canonical(SCHEMA_B, &e->canon_b_len);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    bfs_catalog_close(e->cat);
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s%s", e->path, sfx[i]);
        unlink(p);
    }
    rmdir(e->dir);
    free(e->canon_a);
    free(e->canon_b);
    free(e);
    return 0;
}

static void reopen(struct env *e)
{
    bfs_catalog_close(e->cat);
    e->cat = NULL;
    assert_int_equal(bfs_catalog_open(e->path, &e->cat), 0);
}

/* Deterministic upload bytes: seed selects the content. */
static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seed * 131u + i * 7u + (i >> 8));
}

struct up_spec {
    const char *table, *period, *dataset;
    int schema_b;
    enum bfs_codec codec;
    size_t len;
    unsigned seed;
    uint64_t records;
};

/* What ingest derives from the schema for the catalog, as for an upload
 * that creates its partition: fingerprint, sync marker, layout header (in
 * hdr, which the caller frees). */
static void derive_layout(struct bfs_upload *up, struct bfs_buf *hdr)
{
    up->fingerprint = bfs_schema_rabin(up->canonical, up->canonical_len);
    assert_int_equal(bfs_schema_sync(up->canonical, up->canonical_len, up->sync), 0);
    assert_int_equal(
        bfs_ocf_layout_header(up->schema_json, up->schema_len, up->codec, up->sync, hdr), 0);
    up->header = hdr->data;
    up->header_len = hdr->len;
}

static int commit(struct env *e, const struct up_spec *s, struct bfs_err *err)
{
    uint8_t *data = malloc(s->len ? s->len : 1);
    assert_non_null(data);
    fill(data, s->len, s->seed);
    struct bfs_upload up = {
        .table = s->table,
        .period = s->period,
        .dataset = s->dataset,
        .schema_json = s->schema_b ? SCHEMA_B : SCHEMA_A,
        .schema_len = strlen(s->schema_b ? SCHEMA_B : SCHEMA_A),
        .canonical = s->schema_b ? e->canon_b : e->canon_a,
        .canonical_len = s->schema_b ? e->canon_b_len : e->canon_a_len,
        .codec = s->codec,
        .data = data,
        .len = s->len,
        .records = s->records,
    };
    struct bfs_buf hdr = {0};
    derive_layout(&up, &hdr);
    int rc = bfs_catalog_commit_upload(e->cat, &up, err);
    bfs_buf_free(&hdr);
    free(data);
    return rc;
}

/* Commit and expect success. */
static void put(struct env *e, const char *table, const char *period, const char *dataset,
                size_t len, unsigned seed)
{
    struct up_spec s = {table, period, dataset, 0, BFS_CODEC_DEFLATE, len, seed, len / 10 + 1};
    struct bfs_err err = {0};
    int rc = commit(e, &s, &err);
    if (rc != 0)
        fail_msg("commit %s/%s/%s: %d %s", table, period, dataset, rc, err.msg);
}

/* Read a hot segment fully and compare it with fill(len, seed). */
static void expect_hot(struct env *e, int64_t id, size_t len, unsigned seed)
{
    uint8_t *want = malloc(len + 1), *got = malloc(len + 1);
    assert_non_null(want);
    assert_non_null(got);
    fill(want, len, seed);
    assert_int_equal(bfs_catalog_read_hot(e->cat, id, 0, got, len), 0);
    assert_memory_equal(got, want, len);
    free(want);
    free(got);
}

static sqlite3 *raw_open(struct env *e)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(e->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Every row of the tables a log entry touches (and the buffer), as text:
 * equal before and after means nothing changed. Free the result. */
static char *db_state(struct env *e)
{
    static const char *const q[] = {
        "SELECT * FROM rolls ORDER BY id",
        "SELECT id, file_path, table_name, period_tag, size, header_length, roll_id, seq,"
        " hex(sha256), schema_fingerprint, codec FROM archived_files ORDER BY id",
        "SELECT * FROM block_indexes ORDER BY id",
        "SELECT * FROM buffer_rows ORDER BY id",
        "SELECT * FROM ledger",
        "SELECT * FROM ledger_nodes ORDER BY node",
        "SELECT id, table_name, period_tag, schema_id, codec FROM partitions ORDER BY id",
        "SELECT id, fingerprint FROM schemas ORDER BY id",
    };
    sqlite3 *db = raw_open(e);
    struct bfs_buf out = {0};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, q[i], -1, &st, NULL) != SQLITE_OK)
            fail_msg("%s: %s", q[i], sqlite3_errmsg(db));
        while (sqlite3_step(st) == SQLITE_ROW) {
            for (int c = 0; c < sqlite3_column_count(st); c++) {
                const char *t = (const char *)sqlite3_column_text(st, c);
                assert_int_equal(bfs_buf_append(&out, t ? t : "NULL", strlen(t ? t : "NULL")), 0);
                assert_int_equal(bfs_buf_append(&out, "|", 1), 0);
            }
            assert_int_equal(bfs_buf_append(&out, "\n", 1), 0);
        }
        sqlite3_finalize(st);
        assert_int_equal(bfs_buf_append(&out, "--\n", 3), 0);
    }
    assert_int_equal(bfs_buf_append(&out, "", 1), 0);
    sqlite3_close(db);
    return (char *)out.data;
}

/* The catalog still is as state says (db_state); frees state. */
static void unchanged(struct env *e, char *state)
{
    char *now = db_state(e);
    assert_string_equal(now, state);
    free(now);
    free(state);
}

struct names {
    int n;
    char name[64][64];
    int stop_after; /* return 7 after this many (0: never) */
};

static int collect(void *ctx, const char *name)
{
    struct names *ns = ctx;
    assert_true(ns->n < 64);
    snprintf(ns->name[ns->n++], sizeof ns->name[0], "%s", name);
    return ns->stop_after && ns->n == ns->stop_after ? 7 : 0;
}

/* ------------------------------------------------------------------------ */
/* migrations                                                                */

static int has_column(sqlite3 *db, const char *table, const char *col)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_table_info('%s') WHERE name = '%s'",
             table, col);
    return raw_int(db, sql) == 1;
}

static void test_migrations(void **state)
{
    struct env *e = *state;
    struct stat st;
    assert_int_equal(stat(e->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    sqlite3 *db = raw_open(e);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 5);
    /* WAL, and every table of the brief */
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    const char *fixed_af[] = {"id",         "file_path", "table_name",
                              "period_tag", "size",      "header_length"};
    for (size_t i = 0; i < sizeof fixed_af / sizeof *fixed_af; i++)
        assert_true(has_column(db, "archived_files", fixed_af[i]));
    const char *fixed_bi[] = {"dataset_id", "table_name", "period_tag",  "file_id",
                              "start_byte", "length",     "record_count"};
    for (size_t i = 0; i < sizeof fixed_bi / sizeof *fixed_bi; i++)
        assert_true(has_column(db, "block_indexes", fixed_bi[i]));
    const char *bl[] = {"table_name",  "period_tag", "dataset_id", "schema_id", "record_count",
                        "byte_length", "data",       "created_at", "roll_id"};
    for (size_t i = 0; i < sizeof bl / sizeof *bl; i++)
        assert_true(has_column(db, "buffer_logs", bl[i]));
    assert_true(has_column(db, "schemas", "canonical"));
    assert_true(has_column(db, "schemas", "fingerprint"));
    /* 2: the store's log */
    const char *rolls[] = {"node", "log_seq", "epoch"};
    for (size_t i = 0; i < sizeof rolls / sizeof *rolls; i++)
        assert_true(has_column(db, "rolls", rolls[i]));
    const char *af2[] = {"sha256", "schema_fingerprint", "codec"};
    for (size_t i = 0; i < sizeof af2 / sizeof *af2; i++)
        assert_true(has_column(db, "archived_files", af2[i]));
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger WHERE log_pos = 0"), 1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM ledger_nodes"), 0);
    /* 3: schema versions */
    assert_true(has_column(db, "partition_versions", "schema_id"));
    assert_true(has_column(db, "partitions", "vgen"));
    assert_true(has_column(db, "archived_files", "schema_id"));
    assert_true(has_column(db, "buffer_rows", "conv_length"));
    assert_true(has_column(db, "block_indexes", "conv_length"));
    /* 4: compaction and erasure */
    const char *r4[] = {"kind", "base", "table_name", "period_tag", "void"};
    for (size_t i = 0; i < sizeof r4 / sizeof *r4; i++)
        assert_true(has_column(db, "rolls", r4[i]));
    assert_true(has_column(db, "archived_files", "ord"));
    assert_true(has_column(db, "archived_files", "dirty"));
    assert_true(has_column(db, "erasures", "dataset_id"));
    assert_true(has_column(db, "erase_hits", "file_path"));
    assert_true(has_column(db, "store_gc", "urgent"));
    assert_true(has_column(db, "compactions", "upto"));
    sqlite3_close(db);
    char sid[BFS_STATE_ID_MAX], sid2[BFS_STATE_ID_MAX];
    int64_t pos = -1;
    assert_int_equal(bfs_catalog_ledger_state(e->cat, &pos, sid), 0);
    assert_int_equal(pos, 0);
    assert_int_equal(strlen(sid), 32);

    /* Reopen: the data survives, nothing is migrated twice. */
    put(e, "battle", "2025-12-18", "u1", 100, 1);
    reopen(e);
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 1);
    assert_int_equal(c.buffer_bytes, 100);

    /* The SQL view of the buffer shows the upload with its data. */
    db = raw_open(e);
    assert_int_equal(raw_int(db, "SELECT length(data) FROM buffer_logs"), 100);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_logs WHERE roll_id IS NULL"), 1);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 5);
    sqlite3_close(db);
    /* the catalog's identity is made once */
    assert_int_equal(bfs_catalog_ledger_state(e->cat, NULL, sid2), 0);
    assert_string_equal(sid2, sid);

    /* A database from a newer battlefs is refused. */
    bfs_catalog_close(e->cat);
    e->cat = NULL;
    db = raw_open(e);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct bfs_catalog *cat = NULL;
    assert_int_equal(bfs_catalog_open(e->path, &cat), -ENOTSUP);
    assert_null(cat);
    db = raw_open(e);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 5", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(bfs_catalog_open(e->path, &e->cat), 0);

    /* Not a database at all. */
    char junk[128];
    snprintf(junk, sizeof junk, "%s/junk.db", e->dir);
    FILE *f = fopen(junk, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not a sqlite database\n", f);
    fclose(f);
    assert_int_equal(bfs_catalog_open(junk, &cat), -EIO);
    unlink(junk);
}

/* ------------------------------------------------------------------------ */
/* commit, view, read                                                        */

static void test_commit_view_read(void **state)
{
    struct env *e = *state;
    struct bfs_partition p;
    assert_int_equal(bfs_catalog_partition_get(e->cat, "battle", "2025-12-18", &p), -ENOENT);
    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u1", &v), -ENOENT);

    int64_t t0 = (int64_t)time(NULL);
    put(e, "battle", "2025-12-18", "u1", 1000, 1);
    put(e, "battle", "2025-12-18", "u2", 10, 2);
    put(e, "battle", "2025-12-18", "u1", 70000, 3); /* spans many pages */
    put(e, "battle", "2025-12-18", "u1", 0, 4);     /* an upload without blocks */
    int64_t t1 = (int64_t)time(NULL);

    /* The partition: layout header of the first upload's schema, codec, sync. */
    assert_int_equal(bfs_catalog_partition_get(e->cat, "battle", "2025-12-18", &p), 0);
    uint8_t sync[16];
    assert_int_equal(bfs_schema_sync(e->canon_a, e->canon_a_len, sync), 0);
    assert_memory_equal(p.sync, sync, 16);
    assert_int_equal(p.codec, BFS_CODEC_DEFLATE);
    assert_int_equal(p.schema_len, strlen(SCHEMA_A));
    assert_string_equal(p.schema_json, SCHEMA_A);
    struct bfs_buf hdr = {0};
    assert_int_equal(
        bfs_ocf_layout_header(SCHEMA_A, strlen(SCHEMA_A), BFS_CODEC_DEFLATE, sync, &hdr), 0);
    assert_int_equal(p.header_len, hdr.len);
    assert_memory_equal(p.header, hdr.data, hdr.len);
    bfs_buf_free(&hdr);

    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u1", &v), 0);
    assert_int_equal(v.n, 3);
    assert_int_equal(v.part.header_len, p.header_len);
    assert_memory_equal(v.part.header, p.header, p.header_len);
    size_t lens[3] = {1000, 70000, 0};
    unsigned seeds[3] = {1, 3, 4};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(v.seg[i].kind, BFS_SEG_HOT);
        assert_null(v.seg[i].key);
        assert_int_equal(v.seg[i].offset, 0);
        assert_int_equal(v.seg[i].length, lens[i]);
        assert_int_equal(v.seg[i].records, lens[i] / 10 + 1);
        if (i > 0)
            assert_true(v.seg[i].id > v.seg[i - 1].id);
        expect_hot(e, v.seg[i].id, lens[i], seeds[i]);
    }
    assert_int_equal(v.size, p.header_len + 71000);
    assert_true(v.mtime >= t0 && v.mtime <= t1);

    /* Partial reads at odd offsets, and the bounds. */
    uint8_t want[70000], got[4096];
    fill(want, sizeof want, 3);
    assert_int_equal(bfs_catalog_read_hot(e->cat, v.seg[1].id, 65533, got, 4096), 0);
    assert_memory_equal(got, want + 65533, 4096);
    assert_int_equal(bfs_catalog_read_hot(e->cat, v.seg[1].id, 69999, got, 1), 0);
    assert_int_equal(got[0], want[69999]);
    assert_int_equal(bfs_catalog_read_hot(e->cat, v.seg[1].id, 69999, got, 2), -EINVAL);
    assert_int_equal(bfs_catalog_read_hot(e->cat, v.seg[1].id, 70001, got, 0), -EINVAL);
    assert_int_equal(bfs_catalog_read_hot(e->cat, 999999, 0, got, 1), -ENOENT);

    uint64_t size;
    int64_t mtime;
    assert_int_equal(bfs_catalog_dataset_stat(e->cat, "battle", "2025-12-18", "u1", &size, &mtime),
                     0);
    assert_int_equal(size, v.size);
    assert_int_equal(mtime, v.mtime);
    assert_int_equal(bfs_catalog_dataset_stat(e->cat, "battle", "2025-12-18", "u3", &size, &mtime),
                     -ENOENT);
    assert_int_equal(bfs_catalog_dataset_stat(e->cat, "battle", "2025-12-19", "u1", &size, &mtime),
                     -ENOENT);
    bfs_dataset_view_free(&v);
    bfs_partition_free(&p);

    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u2", &v), 0);
    assert_int_equal(v.n, 1);
    expect_hot(e, v.seg[0].id, 10, 2);
    bfs_dataset_view_free(&v);
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u3", &v), -ENOENT);

    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 4);
    assert_int_equal(c.buffer_bytes, 71010);
    assert_int_equal(c.archived_files, 0);

    /* Bad names are refused before anything is stored. */
    struct up_spec bad = {"battle", "2025-12-18", "../x", 0, BFS_CODEC_DEFLATE, 5, 1, 1};
    struct bfs_err err = {0};
    assert_int_equal(commit(e, &bad, &err), -EINVAL);
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 4);
}

/* A second schema version of a partition: refused without its merged layout
 * (-EAGAIN: the caller merges and retries), taken with it, checked against
 * the versions' generation; the partition's layout becomes the merged one,
 * and segments of the other versions have unknown lengths in the file until
 * they are measured and memoised. */
static void test_schema_versions(void **state)
{
    struct env *e = *state;
    put(e, "battle", "2025-12-18", "u1", 50, 1);
    struct up_spec s = {"battle", "2025-12-18", "u2", 1, BFS_CODEC_DEFLATE, 50, 2, 5};
    struct bfs_err err = {0};
    assert_int_equal(commit(e, &s, &err), -EAGAIN);
    assert_non_null(strstr(err.msg, "battle/2025-12-18"));
    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u2", &v), -ENOENT);

    struct bfs_versions vers;
    assert_int_equal(bfs_catalog_partition_versions(e->cat, "battle", "2025-12-18", &vers), 0);
    assert_int_equal(vers.n, 1);
    assert_int_equal(vers.vgen, 1);
    assert_int_equal(vers.v[0].id, vers.merged_id);
    assert_memory_equal(vers.v[0].json, SCHEMA_A, strlen(SCHEMA_A));
    int64_t vgen = vers.vgen;
    bfs_versions_free(&vers);
    char fa[17], fb[17];
    snprintf(fa, sizeof fa, "%016llx",
             (unsigned long long)bfs_schema_rabin(e->canon_a, e->canon_a_len));
    snprintf(fb, sizeof fb, "%016llx",
             (unsigned long long)bfs_schema_rabin(e->canon_b, e->canon_b_len));
    assert_int_equal(bfs_catalog_partition_has_version(e->cat, "battle", "2025-12-18", fa), 1);
    assert_int_equal(bfs_catalog_partition_has_version(e->cat, "battle", "2025-12-18", fb), 0);
    assert_int_equal(bfs_catalog_partition_has_version(e->cat, "battle", "none", fa), -ENOENT);

    /* The layout the caller merged (the catalog stores what it is handed). */
    const char *mjson = "{\"type\":\"record\",\"name\":\"Battle\",\"fields\":[{\"name\":"
                        "\"id\",\"type\":[\"long\",\"string\"]}]}";
    size_t mclen;
    char *mcanon = canonical(mjson, &mclen);
    struct bfs_merged m = {.base_vgen = vgen + 1,
                           .json = mjson,
                           .len = strlen(mjson),
                           .canonical = mcanon,
                           .canonical_len = mclen,
                           .fingerprint = bfs_schema_rabin(mcanon, mclen)};
    assert_int_equal(bfs_schema_sync(mcanon, mclen, m.sync), 0);
    struct bfs_buf mhdr = {0};
    assert_int_equal(bfs_ocf_layout_header(mjson, strlen(mjson), BFS_CODEC_DEFLATE, m.sync, &mhdr),
                     0);
    m.header = mhdr.data;
    m.header_len = mhdr.len;
    uint8_t data[50];
    fill(data, sizeof data, 2);
    struct bfs_upload up = {.table = "battle",
                            .period = "2025-12-18",
                            .dataset = "u2",
                            .schema_json = SCHEMA_B,
                            .schema_len = strlen(SCHEMA_B),
                            .canonical = e->canon_b,
                            .canonical_len = e->canon_b_len,
                            .fingerprint = bfs_schema_rabin(e->canon_b, e->canon_b_len),
                            .codec = BFS_CODEC_DEFLATE,
                            .merged = &m,
                            .data = data,
                            .len = sizeof data,
                            .records = 5};
    /* merged at another generation: refused */
    assert_int_equal(bfs_catalog_commit_upload(e->cat, &up, &err), -EAGAIN);
    m.base_vgen = vgen;
    assert_int_equal(bfs_catalog_commit_upload(e->cat, &up, &err), 0);
    bfs_catalog_layout_forget(e->cat, "battle", "2025-12-18");
    uint8_t sync[16];
    enum bfs_codec codec;
    assert_int_equal(bfs_catalog_partition_layout(e->cat, "battle", "2025-12-18", sync, &codec), 0);
    assert_memory_equal(sync, m.sync, 16);
    assert_int_equal(bfs_catalog_partition_has_version(e->cat, "battle", "2025-12-18", fb), 1);
    /* the merged schema is not a version: no upload was written in it */
    char fm[17];
    snprintf(fm, sizeof fm, "%016llx", (unsigned long long)m.fingerprint);
    assert_int_equal(bfs_catalog_partition_has_version(e->cat, "battle", "2025-12-18", fm), 0);
    /* a version already: no merge needed */
    up.merged = NULL;
    up.dataset = "u1";
    assert_int_equal(bfs_catalog_commit_upload(e->cat, &up, &err), 0);

    assert_int_equal(bfs_catalog_partition_versions(e->cat, "battle", "2025-12-18", &vers), 0);
    assert_int_equal(vers.n, 2);
    assert_int_equal(vers.vgen, vgen + 1);
    int64_t merged_id = vers.merged_id;
    assert_true(merged_id != vers.v[0].id && merged_id != vers.v[1].id);
    bfs_versions_free(&vers);

    /* u1: one segment of A, one of B, both unknown in the merged file */
    uint64_t size;
    int64_t mtime;
    assert_int_equal(bfs_catalog_dataset_stat(e->cat, "battle", "2025-12-18", "u1", &size, &mtime),
                     -EAGAIN);
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u1", &v), 0);
    assert_int_equal(v.n, 2);
    assert_int_equal(v.unknown, 2);
    assert_int_equal(v.part.schema_id, merged_id);
    assert_int_equal(v.part.header_len, mhdr.len);
    assert_int_equal(v.n_schemas, 2);
    assert_int_equal(v.size, mhdr.len);
    struct bfs_conv_memo memo[2];
    for (size_t i = 0; i < 2; i++) {
        assert_false(v.seg[i].vknown);
        assert_true(v.seg[i].schema_id != merged_id);
        memo[i] = (struct bfs_conv_memo){v.seg[i].kind, v.seg[i].row, merged_id, 60 + i};
    }
    bfs_dataset_view_free(&v);
    assert_int_equal(bfs_catalog_conv_memo(e->cat, memo, 2), 0);
    assert_int_equal(bfs_catalog_dataset_stat(e->cat, "battle", "2025-12-18", "u1", &size, &mtime),
                     0);
    assert_int_equal(size, mhdr.len + 60 + 61);
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u1", &v), 0);
    assert_int_equal(v.unknown, 0);
    assert_int_equal(v.size, size);
    assert_int_equal(v.seg[0].vlength, 60);
    assert_int_equal(v.seg[1].vlength, 61);
    assert_int_equal(v.seg[0].length, 50);
    bfs_dataset_view_free(&v);
    /* the other period is untouched: one version, its own layout */
    s.period = "2025-12-19";
    assert_int_equal(commit(e, &s, &err), 0);
    assert_int_equal(bfs_catalog_dataset_stat(e->cat, "battle", "2025-12-19", "u2", &size, &mtime),
                     0);
    bfs_buf_free(&mhdr);
    free(mcanon);
}

/* The catalog stores the layout it is handed (it derives nothing from the
 * schema itself), and needs a header only to create a partition. */
static void test_upload_layout(void **state)
{
    struct env *e = *state;
    static const char fake_header[] = "a header as the caller built it";
    uint8_t byte = 7;
    struct bfs_upload up = {.table = "battle",
                            .period = "p1",
                            .dataset = "u1",
                            .schema_json = SCHEMA_A,
                            .schema_len = strlen(SCHEMA_A),
                            .canonical = e->canon_a,
                            .canonical_len = e->canon_a_len,
                            .fingerprint = UINT64_C(0x0123456789abcdef),
                            .codec = BFS_CODEC_SNAPPY,
                            .data = &byte,
                            .len = 1,
                            .records = 1};
    memset(up.sync, 0xab, sizeof up.sync);
    struct bfs_err err = {0};

    /* A new partition without its header: refused, nothing stored. */
    assert_int_equal(bfs_catalog_commit_upload(e->cat, &up, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "no layout header"));
    struct bfs_partition p;
    assert_int_equal(bfs_catalog_partition_get(e->cat, "battle", "p1", &p), -ENOENT);

    /* With it: the partition row holds exactly the bytes handed over. */
    up.header = (const uint8_t *)fake_header;
    up.header_len = sizeof fake_header;
    assert_int_equal(bfs_catalog_commit_upload(e->cat, &up, &err), 0);
    assert_int_equal(bfs_catalog_partition_get(e->cat, "battle", "p1", &p), 0);
    assert_int_equal(p.header_len, sizeof fake_header);
    assert_memory_equal(p.header, fake_header, sizeof fake_header);
    uint8_t want_sync[16];
    memset(want_sync, 0xab, sizeof want_sync);
    assert_memory_equal(p.sync, want_sync, 16);
    assert_int_equal(p.codec, BFS_CODEC_SNAPPY);
    bfs_partition_free(&p);
    uint8_t sync[16];
    enum bfs_codec codec;
    assert_int_equal(bfs_catalog_partition_layout(e->cat, "battle", "p1", sync, &codec), 0);
    assert_memory_equal(sync, want_sync, 16);
    sqlite3 *db = raw_open(e);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT fingerprint FROM schemas", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "0123456789abcdef");
    sqlite3_finalize(st);
    sqlite3_close(db);

    /* An upload to an existing partition needs no header. */
    up.header = NULL;
    up.header_len = 0;
    up.dataset = "u2";
    assert_int_equal(bfs_catalog_commit_upload(e->cat, &up, &err), 0);
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 2);

    /* Another schema without its merged layout names the fingerprint the
     * upload brought. */
    up.canonical = e->canon_b;
    up.canonical_len = e->canon_b_len;
    up.fingerprint = UINT64_C(0xfedcba9876543210);
    assert_int_equal(bfs_catalog_commit_upload(e->cat, &up, &err), -EAGAIN);
    assert_non_null(strstr(err.msg, "schema fedcba9876543210 is not a version of battle/"));
}

static void test_codec_mismatch(void **state)
{
    struct env *e = *state;
    put(e, "battle", "2025-12-18", "u1", 50, 1); /* deflate */
    struct up_spec s = {"battle", "2025-12-18", "u1", 0, BFS_CODEC_SNAPPY, 50, 2, 5};
    struct bfs_err err = {0};
    assert_int_equal(commit(e, &s, &err), -EAGAIN);
    assert_int_equal(err.code, -EAGAIN);
    assert_non_null(strstr(err.msg, "deflate"));
    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u1", &v), 0);
    assert_int_equal(v.n, 1);
    bfs_dataset_view_free(&v);
    /* A new partition takes the upload's codec. */
    s.period = "2025-12-20";
    assert_int_equal(commit(e, &s, &err), 0);
    struct bfs_partition p;
    assert_int_equal(bfs_catalog_partition_get(e->cat, "battle", "2025-12-20", &p), 0);
    assert_int_equal(p.codec, BFS_CODEC_SNAPPY);
    bfs_partition_free(&p);
}

/* The layout cache answers as the partition rows do, for more partitions
 * than it has slots, and knows nothing of a partition before its commit. */
static void test_partition_layout(void **state)
{
    struct env *e = *state;
    uint8_t sync[16], want_a[16], want_b[16];
    enum bfs_codec codec;
    assert_int_equal(bfs_schema_sync(e->canon_a, e->canon_a_len, want_a), 0);
    assert_int_equal(bfs_schema_sync(e->canon_b, e->canon_b_len, want_b), 0);
    assert_int_equal(bfs_catalog_partition_layout(e->cat, "battle", "p0", sync, &codec), -ENOENT);
    enum { N = 3000 }; /* more than the cache's slots: entries are replaced */
    char period[32];
    struct bfs_err err = {0};
    for (int i = 0; i < N; i++) {
        snprintf(period, sizeof period, "p%d", i);
        struct up_spec s = {"battle", period, "u", i % 2, (enum bfs_codec)(i % 3), 10, 1, 1};
        assert_int_equal(commit(e, &s, &err), 0);
    }
    for (int pass = 0; pass < 2; pass++) /* the second pass mostly from the cache */
        for (int i = 0; i < N; i++) {
            snprintf(period, sizeof period, "p%d", i);
            memset(sync, 0, sizeof sync);
            assert_int_equal(bfs_catalog_partition_layout(e->cat, "battle", period, sync, &codec),
                             0);
            assert_memory_equal(sync, i % 2 ? want_b : want_a, 16);
            assert_int_equal(codec, (enum bfs_codec)(i % 3));
            struct bfs_partition p;
            if (i % 97 == 0) { /* and the row agrees */
                assert_int_equal(bfs_catalog_partition_get(e->cat, "battle", period, &p), 0);
                assert_memory_equal(p.sync, sync, 16);
                assert_int_equal(p.codec, codec);
                bfs_partition_free(&p);
            }
        }
    assert_int_equal(bfs_catalog_partition_layout(e->cat, "battle", "p-none", sync, &codec),
                     -ENOENT);
    assert_int_equal(bfs_catalog_partition_layout(e->cat, "other", "p1", sync, &codec), -ENOENT);
}

/* Commits hand checkpoints to the checkpointer thread: it runs, and the WAL
 * stays bounded while a stream of commits goes on: the checkpointer finishes
 * its checkpoints between two commits, so the WAL begins again from its start
 * long before a commit has to checkpoint 16000 frames itself (about 9,000
 * frames of uploads here, which a checkpointer that never caught up left
 * in the WAL whole). */
static void test_checkpointer(void **state)
{
    struct env *e = *state;
    enum { N = 3000, LEN = 12000 };
    char ds[32];
    for (int i = 0; i < N; i++) {
        snprintf(ds, sizeof ds, "u%d", i % 50);
        put(e, "battle", "2025-12-18", ds, LEN, (unsigned)i);
    }
    assert_true(bfs_catalog_checkpoints(e->cat) > 0);
    uint64_t restarts, inline_ckpts;
    bfs_catalog_wal_counts(e->cat, &restarts, &inline_ckpts);
    assert_true(restarts > 0);
    assert_int_equal(inline_ckpts, 0);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", e->path);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);
    assert_true(st.st_size < (off_t)6000 * (4096 + 24));
    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u7", &v), 0);
    assert_int_equal(v.n, N / 50);
    bfs_dataset_view_free(&v);
    reopen(e);
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", "u49", &v), 0);
    assert_int_equal(v.n, N / 50);
    bfs_dataset_view_free(&v);
}

/* ------------------------------------------------------------------------ */
/* listing                                                                   */

static void test_listing(void **state)
{
    struct env *e = *state;
    struct names ns = {0};
    assert_int_equal(bfs_catalog_list_tables(e->cat, collect, &ns), 0);
    assert_int_equal(ns.n, 0);
    assert_int_equal(bfs_catalog_table_exists(e->cat, "zeta"), -ENOENT);

    put(e, "zeta", "2025-12-18", "b", 10, 1);
    put(e, "alpha", "2025-12-19", "c", 10, 2);
    put(e, "alpha", "2025-12-18", "b", 10, 3);
    put(e, "alpha", "2025-12-18", "a", 10, 4);
    put(e, "alpha", "2025-12-18", "b", 10, 5);
    put(e, "mid", "p", "x", 10, 6);

    memset(&ns, 0, sizeof ns);
    assert_int_equal(bfs_catalog_list_tables(e->cat, collect, &ns), 0);
    assert_int_equal(ns.n, 3);
    assert_string_equal(ns.name[0], "alpha");
    assert_string_equal(ns.name[1], "mid");
    assert_string_equal(ns.name[2], "zeta");

    memset(&ns, 0, sizeof ns);
    assert_int_equal(bfs_catalog_list_periods(e->cat, "alpha", collect, &ns), 0);
    assert_int_equal(ns.n, 2);
    assert_string_equal(ns.name[0], "2025-12-18");
    assert_string_equal(ns.name[1], "2025-12-19");

    memset(&ns, 0, sizeof ns);
    assert_int_equal(bfs_catalog_list_datasets(e->cat, "alpha", "2025-12-18", collect, &ns), 0);
    assert_int_equal(ns.n, 2);
    assert_string_equal(ns.name[0], "a");
    assert_string_equal(ns.name[1], "b");

    memset(&ns, 0, sizeof ns);
    assert_int_equal(bfs_catalog_list_datasets(e->cat, "alpha", "nope", collect, &ns), 0);
    assert_int_equal(ns.n, 0);

    /* A non-zero callback return stops the walk and is returned. */
    memset(&ns, 0, sizeof ns);
    ns.stop_after = 1;
    assert_int_equal(bfs_catalog_list_tables(e->cat, collect, &ns), 7);
    assert_int_equal(ns.n, 1);

    assert_int_equal(bfs_catalog_table_exists(e->cat, "alpha"), 0);
    assert_int_equal(bfs_catalog_table_exists(e->cat, "alph"), -ENOENT);
    assert_int_equal(bfs_catalog_period_exists(e->cat, "alpha", "2025-12-19"), 0);
    assert_int_equal(bfs_catalog_period_exists(e->cat, "zeta", "2025-12-19"), -ENOENT);
    assert_int_equal(bfs_catalog_period_exists(e->cat, "nope", "2025-12-19"), -ENOENT);
}

/* ------------------------------------------------------------------------ */
/* group commit                                                              */

#define THREADS          8
#define PER_THREAD       200
#define BAD_EVERY        25 /* every 25th upload of a thread has the wrong schema */
#define UPLOAD_LEN(t, i) (100 + ((t)*37 + (i)*13) % 900)

struct worker {
    struct env *e;
    int t;
    int ok, bad, errors;
    char last_error[BFS_ERR_MSG_MAX + 64];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char ds[16];
    snprintf(ds, sizeof ds, "t%d", w->t);
    for (int i = 0; i < PER_THREAD; i++) {
        int bad = i % BAD_EVERY == BAD_EVERY - 1;
        struct up_spec s = {"battle",
                            "2025-12-18",
                            ds,
                            bad,
                            BFS_CODEC_DEFLATE,
                            UPLOAD_LEN(w->t, i),
                            (unsigned)(w->t * 1000 + i),
                            (uint64_t)i};
        struct bfs_err err = {0};
        int rc = commit(w->e, &s, &err);
        if (bad && rc == -EAGAIN && strstr(err.msg, "is not a version of"))
            w->bad++;
        else if (!bad && rc == 0 && err.msg[0] == '\0')
            w->ok++;
        else {
            w->errors++;
            snprintf(w->last_error, sizeof w->last_error, "upload %d: %d %s", i, rc, err.msg);
        }
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    struct env *e = *state;
    put(e, "battle", "2025-12-18", "seed", 10, 99); /* the partition exists with schema A */
    uint64_t g0 = bfs_catalog_commit_groups(e->cat);
    uint64_t h0[BFS_CATALOG_GROUP_BUCKETS];
    bfs_catalog_group_sizes(e->cat, h0);

    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t] = (struct worker){.e = e, .t = t};
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    int ok = 0, bad = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        if (w[t].errors)
            fail_msg("thread %d: %d unexpected results, last: %s", t, w[t].errors, w[t].last_error);
        ok += w[t].ok;
        bad += w[t].bad;
    }
    int uploads = THREADS * PER_THREAD;
    assert_int_equal(bad, THREADS * (PER_THREAD / BAD_EVERY));
    assert_int_equal(ok + bad, uploads);
    uint64_t groups = bfs_catalog_commit_groups(e->cat) - g0;
    print_message("group commit: %d uploads in %llu transactions\n", uploads,
                  (unsigned long long)groups);
    assert_true(groups < (uint64_t)uploads);
    assert_true(groups >= 1);
    /* the histogram of group sizes counts each group once, and its buckets'
     * bounds hold the uploads: at least 1, 2, 3, 5, ... a group */
    uint64_t h[BFS_CATALOG_GROUP_BUCKETS], in_hist = 0, at_least = 0;
    bfs_catalog_group_sizes(e->cat, h);
    for (int b = 0; b < BFS_CATALOG_GROUP_BUCKETS; b++) {
        in_hist += h[b] - h0[b];
        at_least += (h[b] - h0[b]) * (b == 0 ? 1 : (1u << (b - 1)) + 1);
    }
    assert_int_equal(in_hist, groups);
    assert_true(at_least <= (uint64_t)uploads);
    assert_true(h[0] - h0[0] < groups); /* some group had more than one upload */

    /* Every good upload is there, in each thread's order, byte-exact. */
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, (uint64_t)ok + 1);
    for (int t = 0; t < THREADS; t++) {
        char ds[16];
        snprintf(ds, sizeof ds, "t%d", t);
        struct bfs_dataset_view v;
        assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", ds, &v), 0);
        assert_int_equal(v.n, (size_t)w[t].ok);
        size_t k = 0;
        for (int i = 0; i < PER_THREAD; i++) {
            if (i % BAD_EVERY == BAD_EVERY - 1)
                continue;
            assert_int_equal(v.seg[k].length, UPLOAD_LEN(t, i));
            assert_int_equal(v.seg[k].records, (uint64_t)i);
            expect_hot(e, v.seg[k].id, UPLOAD_LEN(t, i), (unsigned)(t * 1000 + i));
            k++;
        }
        bfs_dataset_view_free(&v);
    }
}

/* ------------------------------------------------------------------------ */
/* rolls                                                                     */

struct rowlist {
    size_t n;
    struct {
        int64_t id;
        char table[32], period[32], dataset[32];
        uint64_t records, length;
    } r[1024];
};

static int collect_row(void *ctx, const struct bfs_roll_row *row)
{
    struct rowlist *l = ctx;
    assert_true(l->n < 1024);
    l->r[l->n].id = row->id;
    snprintf(l->r[l->n].table, 32, "%s", row->table);
    snprintf(l->r[l->n].period, 32, "%s", row->period);
    snprintf(l->r[l->n].dataset, 32, "%s", row->dataset);
    l->r[l->n].records = row->records;
    l->r[l->n].length = row->length;
    l->n++;
    return 0;
}

/* A simulated roller: one archive per (table, period) group (split into a
 * new archive after max_rows rows), built in memory from the claimed rows as
 * bfs_catalog_read_hot returns them, and committed as the ledger does:
 * applying its log entry (bfs_catalog_apply_*) with its manifest's archives
 * and index rows. */
struct sim_archive {
    char key[192], table[32], period[32];
    char fp[17];
    enum bfs_codec codec;
    struct bfs_buf bytes;
    size_t header_len, first_index, n_index, rows;
};
struct sim_index {
    char dataset[32];
    uint64_t start, length, records;
    int64_t uploaded_at;
};
struct sim {
    struct env *e;
    const char *roll_id;
    size_t max_rows;
    size_t n_ar, n_ix, rows;
    int64_t bytes_delta; /* added to the entry's bytes (0: the index rows') */
    struct sim_archive ar[16];
    struct sim_index ix[256];
};

static int sim_row(void *ctx, const struct bfs_roll_row *row)
{
    struct sim *s = ctx;
    struct sim_archive *a = s->n_ar ? &s->ar[s->n_ar - 1] : NULL;
    int new_group = !a || strcmp(a->table, row->table) || strcmp(a->period, row->period);
    if (new_group || a->rows == s->max_rows) {
        assert_true(s->n_ar < 16);
        int n = 0;
        for (size_t i = 0; !new_group && i < s->n_ar; i++)
            n += strcmp(s->ar[i].table, row->table) == 0 &&
                 strcmp(s->ar[i].period, row->period) == 0;
        a = &s->ar[s->n_ar++];
        memset(a, 0, sizeof *a);
        snprintf(a->table, 32, "%s", row->table);
        snprintf(a->period, 32, "%s", row->period);
        snprintf(a->key, sizeof a->key, "%s/%s/%s-%d.avro", row->table, row->period, s->roll_id, n);
        struct bfs_partition p;
        assert_int_equal(bfs_catalog_partition_get(s->e->cat, row->table, row->period, &p), 0);
        assert_int_equal(bfs_buf_append(&a->bytes, p.header, p.header_len), 0);
        a->header_len = p.header_len;
        memcpy(a->fp, p.fingerprint, sizeof a->fp);
        a->codec = p.codec;
        bfs_partition_free(&p);
        a->first_index = s->n_ix;
    }
    if (a->n_index == 0 || strcmp(s->ix[s->n_ix - 1].dataset, row->dataset) != 0) {
        assert_true(s->n_ix < 256);
        s->ix[s->n_ix] = (struct sim_index){.start = a->bytes.len};
        snprintf(s->ix[s->n_ix].dataset, 32, "%s", row->dataset);
        s->n_ix++;
        a->n_index++;
    }
    struct sim_index *x = &s->ix[s->n_ix - 1];
    size_t at = a->bytes.len;
    assert_int_equal(bfs_buf_reserve(&a->bytes, row->length + 1), 0);
    assert_int_equal(
        bfs_catalog_read_hot(s->e->cat, row->id, 0, a->bytes.data + at, (size_t)row->length), 0);
    a->bytes.len += row->length;
    x->length += row->length;
    x->records += row->records;
    if (row->created_at > x->uploaded_at)
        x->uploaded_at = row->created_at;
    a->rows++;
    s->rows++;
    return 0;
}

/* Build the sim of roll_id from e's claimed rows. */
static void sim_build(struct sim *s, struct env *e, const char *roll_id, size_t max_rows)
{
    memset(s, 0, sizeof *s);
    s->e = e;
    s->roll_id = roll_id;
    s->max_rows = max_rows;
    assert_int_equal(bfs_catalog_roll_rows(e->cat, roll_id, sim_row, s), 0);
}

/* Apply the sim's roll to cat as the log entry seq (0: the next position)
 * of node, epoch: bfs_catalog_apply_begin, each archive and its index rows,
 * end. The result of the first step that fails, or of the end. */
static int sim_apply_to(struct sim *s, struct bfs_catalog *cat, int64_t seq, const char *node,
                        int64_t epoch, int *own, struct bfs_err *err)
{
    int64_t pos = -1;
    assert_int_equal(bfs_catalog_ledger_state(cat, &pos, NULL), 0);
    uint64_t bytes = 0;
    for (size_t i = 0; i < s->n_ix; i++)
        bytes += s->ix[i].length;
    const struct bfs_log_roll r = {
        .seq = seq ? seq : pos + 1,
        .node = node,
        .roll_id = s->roll_id,
        .epoch = epoch,
        .claimed_at = 1766062800,
        .committed_at = (int64_t)time(NULL),
        .rows = s->rows,
        .bytes = bytes + (uint64_t)s->bytes_delta,
    };
    struct bfs_cat_apply *a = NULL;
    int rc = bfs_catalog_apply_begin(cat, &r, &a);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < s->n_ar && rc == 0; i++) {
        const struct sim_archive *sa = &s->ar[i];
        struct bfs_manifest_archive ma = {
            .key = sa->key,
            .table = sa->table,
            .period = sa->period,
            .size = sa->bytes.len,
            .header_length = sa->header_len,
            .schema_fingerprint = sa->fp,
            .codec = sa->codec,
        };
        assert_int_equal(bfs_sha256(sa->bytes.data, sa->bytes.len, ma.sha256), 0);
        rc = bfs_catalog_apply_archive(a, &ma, err);
        for (size_t j = sa->first_index; j < sa->first_index + sa->n_index && rc == 0; j++) {
            const struct bfs_manifest_index mx = {
                .dataset = s->ix[j].dataset,
                .start = s->ix[j].start,
                .length = s->ix[j].length,
                .records = s->ix[j].records,
                .uploaded_at = s->ix[j].uploaded_at,
            };
            rc = bfs_catalog_apply_index(a, &mx, err);
        }
    }
    return bfs_catalog_apply_end(a, rc, own, err);
}

/* The local commit of the sim's roll: its log entry at the next position. */
static int sim_commit(struct sim *s)
{
    struct bfs_err err = {0};
    int own = -1;
    int rc = sim_apply_to(s, s->e->cat, 0, "n1", 1, &own, &err);
    if (rc == 0)
        assert_int_equal(own, 1);
    return rc;
}

static void sim_free(struct sim *s)
{
    for (size_t i = 0; i < s->n_ar; i++)
        bfs_buf_free(&s->ar[i].bytes);
}

/* The whole virtual file of a dataset, from the simulated store and read_hot. */
static uint8_t *file_bytes(struct env *e, struct sim **sims, size_t n_sims, const char *table,
                           const char *period, const char *dataset, uint64_t *size)
{
    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, table, period, dataset, &v), 0);
    uint8_t *out = malloc(v.size + 1);
    assert_non_null(out);
    memcpy(out, v.part.header, v.part.header_len);
    size_t pos = v.part.header_len;
    int hot_seen = 0;
    for (size_t i = 0; i < v.n; i++) {
        struct bfs_segment *sg = &v.seg[i];
        if (sg->kind == BFS_SEG_HOT) {
            hot_seen = 1;
            assert_int_equal(bfs_catalog_read_hot(e->cat, sg->id, 0, out + pos, sg->length), 0);
        } else {
            assert_int_equal(sg->kind, BFS_SEG_COLD);
            assert_false(hot_seen); /* cold segments come first */
            const struct sim_archive *a = NULL;
            for (size_t k = 0; k < n_sims && !a; k++)
                for (size_t j = 0; j < sims[k]->n_ar && !a; j++)
                    if (strcmp(sims[k]->ar[j].key, sg->key) == 0)
                        a = &sims[k]->ar[j];
            assert_non_null(a);
            assert_true(sg->offset + sg->length <= a->bytes.len);
            memcpy(out + pos, a->bytes.data + sg->offset, sg->length);
        }
        pos += sg->length;
    }
    assert_int_equal(pos, v.size);
    *size = v.size;
    bfs_dataset_view_free(&v);
    return out;
}

static void test_roll(void **state)
{
    struct env *e = *state;
    char id[BFS_ROLL_ID_MAX];
    uint64_t rows, bytes;
    assert_int_equal(bfs_catalog_roll_pending(e->cat, id, NULL), -ENOENT);
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "n1", id, &rows, &bytes), -ENODATA);
    int64_t t_begin = (int64_t)time(NULL);

    put(e, "battle", "p1", "u1", 300, 1);
    put(e, "own_ship", "p1", "u1", 200, 2);
    put(e, "battle", "p1", "u2", 100, 3);
    put(e, "battle", "p1", "u1", 400, 4);
    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "p1", "u1", &v), 0);
    int64_t first_id = v.seg[0].id, rolled_id = v.seg[1].id;
    int64_t mtime_before = v.mtime;
    bfs_dataset_view_free(&v);
    uint64_t size_before;
    uint8_t *before = file_bytes(e, NULL, 0, "battle", "p1", "u1", &size_before);
    uint64_t size_u2;
    int64_t mtime_u2;
    assert_int_equal(bfs_catalog_dataset_stat(e->cat, "battle", "p1", "u2", &size_u2, &mtime_u2),
                     0);

    /* A bad node name: refused, nothing claimed. */
    static const char *const bad_nodes[] = {"",
                                            "a b",
                                            "a/b",
                                            "a.b",
                                            "n\x01",
                                            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                            "xxxxxxxxxxx"};
    for (size_t i = 0; i < sizeof bad_nodes / sizeof bad_nodes[0]; i++)
        assert_int_equal(bfs_catalog_roll_claim(e->cat, bad_nodes[i], id, &rows, &bytes), -EINVAL);
    assert_int_equal(bfs_catalog_roll_pending(e->cat, id, NULL), -ENOENT);

    /* Claim: the deterministic id is "<node>-<UTC time>-<state id: the first
     * 8 hex digits of the catalog's identity>-<smallest row id>". */
    int64_t t0 = (int64_t)time(NULL);
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "n1", id, &rows, &bytes), 0);
    int64_t t1 = (int64_t)time(NULL);
    assert_int_equal(rows, 4);
    assert_int_equal(bytes, 1000);
    char sid[BFS_STATE_ID_MAX];
    int64_t pos = -1;
    assert_int_equal(bfs_catalog_ledger_state(e->cat, &pos, sid), 0);
    assert_int_equal(pos, 0);
    assert_int_equal(strlen(sid), 32);
    assert_int_equal(strspn(sid, "0123456789abcdef"), 32);
    char want_id[BFS_ROLL_ID_MAX];
    snprintf(want_id, sizeof want_id, "n1-%.16s-%.8s-%lld", id + 3, sid, (long long)first_id);
    assert_string_equal(id, want_id);
    struct tm tm = {0};
    assert_non_null(strptime(id + 3, "%Y%m%dT%H%M%SZ", &tm));
    int64_t stamp = (int64_t)timegm(&tm);
    assert_true(stamp >= t0 && stamp <= t1);
    struct bfs_roll_info info;
    assert_int_equal(bfs_catalog_roll_info(e->cat, id, &info), 0);
    assert_int_equal(info.claimed_at, stamp);
    assert_int_equal(info.rows, 4);
    assert_int_equal(info.bytes, 1000);
    assert_int_equal(bfs_catalog_roll_info(e->cat, "no-such-roll", &info), -ENOENT);
    assert_int_equal(bfs_catalog_roll_committed(e->cat, id, NULL), 0); /* only claimed */
    char pending[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), 0);
    assert_string_equal(pending, id);
    uint64_t r2, b2;
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "n1", pending, &r2, &b2), -EBUSY);

    /* An upload after the claim stays hot and unclaimed. */
    put(e, "battle", "p1", "u1", 50, 5);

    static struct rowlist l;
    l.n = 0;
    assert_int_equal(bfs_catalog_roll_rows(e->cat, id, collect_row, &l), 0);
    assert_int_equal(l.n, 4);
    const char *order[4][2] = {
        {"battle", "u1"}, {"battle", "u1"}, {"battle", "u2"}, {"own_ship", "u1"}};
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(l.r[i].table, order[i][0]);
        assert_string_equal(l.r[i].dataset, order[i][1]);
        assert_string_equal(l.r[i].period, "p1");
    }
    assert_true(l.r[0].id < l.r[1].id);
    assert_int_equal(l.r[0].length, 300);
    assert_int_equal(l.r[1].length, 400);
    sqlite3 *db = raw_open(e);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_logs WHERE roll_id IS NOT NULL"), 4);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_logs WHERE roll_id IS NULL"), 1);
    sqlite3_close(db);

    /* A log entry of the pending roll whose index misses a dataset:
     * refused, nothing changes. */
    static struct sim s;
    sim_build(&s, e, id, 100);
    assert_int_equal(s.n_ar, 2);
    assert_int_equal(s.n_ix, 3);
    assert_string_equal(s.ix[1].dataset, "u2");
    s.ar[0].n_index--; /* drop u2 of battle */
    s.n_ix--;
    memmove(&s.ix[1], &s.ix[2], sizeof s.ix[0]);
    s.ar[1].first_index--;
    char *before_state = db_state(e);
    assert_int_equal(sim_commit(&s), -EINVAL);
    unchanged(e, before_state);
    assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), 0);
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 5);
    assert_int_equal(c.archived_files, 0);
    sim_free(&s);

    /* ... or whose records, or bytes, differ from the claimed rows', or that
     * has a dataset more: refused, nothing changes. */
    for (int k = 0; k < 3; k++) {
        sim_build(&s, e, id, 100);
        if (k == 0) {
            s.ix[2].records++;
        } else if (k == 1) {
            s.ix[0].length--;
            s.ix[1].start--;
        } else {
            s.ix[s.n_ix] = s.ix[s.n_ix - 1];
            snprintf(s.ix[s.n_ix].dataset, 32, "u9");
            s.ix[s.n_ix].length = 0;
            s.ix[s.n_ix].records = 0;
            s.n_ix++;
            s.ar[1].n_index++;
        }
        before_state = db_state(e);
        struct bfs_err err = {0};
        assert_int_equal(sim_apply_to(&s, e->cat, 0, "n1", 1, NULL, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "does not match the claimed rows"));
        unchanged(e, before_state);
        sim_free(&s);
    }

    /* The real commit: the log entry at position 1. */
    sim_build(&s, e, id, 100);
    assert_int_equal(sim_commit(&s), 0);
    assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), -ENOENT);
    int64_t seq = -1;
    assert_int_equal(bfs_catalog_roll_committed(e->cat, id, &seq), 1);
    assert_int_equal(seq, 1);
    assert_int_equal(bfs_catalog_ledger_state(e->cat, &pos, NULL), 0);
    assert_int_equal(pos, 1);
    int64_t epoch = -1;
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "n1", &epoch), 0);
    assert_int_equal(epoch, 1);
    /* Twice: refused, nothing duplicated, the log position stays. */
    before_state = db_state(e);
    assert_int_equal(sim_commit(&s), -EALREADY);
    unchanged(e, before_state);
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 1);
    assert_int_equal(c.buffer_bytes, 50);
    assert_int_equal(c.archived_files, 2);
    db = raw_open(e);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM block_indexes"), 3);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_rows"), 1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_logs"), 1);
    /* The rolled rows' blobs are left to the purge. */
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_data"), 5);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM rolls WHERE committed_at IS NOT NULL"), 1);
    assert_int_equal(raw_int(db, "SELECT log_seq FROM rolls"), 1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM rolls WHERE node = 'n1' AND epoch = 1"), 1);
    /* the archives as the manifest says: its SHA-256, schema and codec */
    assert_int_equal(raw_int(db, "SELECT count(*) FROM archived_files WHERE length(sha256) = 32"
                                 " AND codec = 'deflate' AND length(schema_fingerprint) = 16"),
                     2);
    /* each index row's uploaded_at: its newest upload's time */
    char q[160];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM block_indexes WHERE uploaded_at BETWEEN %lld AND %lld",
             (long long)t_begin, (long long)t1);
    assert_int_equal(raw_int(db, q), 3);

    /* Until purged, a rolled row reads as its own bytes (a reader that resolved
     * it before the commit sees what the archive now holds); then -ENOENT. */
    uint8_t b1[16], w1[16];
    assert_int_equal(bfs_catalog_read_hot(e->cat, first_id, 0, b1, 16), 0);
    fill(w1, 16, 1);
    assert_memory_equal(b1, w1, 16);
    assert_int_equal(bfs_catalog_purge(e->cat, 3), 3); /* in batches */
    assert_int_equal(bfs_catalog_purge(e->cat, 3), 1);
    assert_int_equal(bfs_catalog_purge(e->cat, 3), 0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_data"), 1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_data d JOIN buffer_rows r"
                                 " ON r.id = d.id"),
                     1);
    /* what is left obeys the foreign keys again */
    assert_int_equal(raw_int(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
    sqlite3_close(db);
    assert_int_equal(bfs_catalog_read_hot(e->cat, first_id, 0, b1, 1), -ENOENT);
    assert_int_equal(bfs_catalog_read_hot(e->cat, rolled_id, 0, b1, 1), -ENOENT);

    /* The view: one cold segment (header_len offset, both rows), then the hot row. */
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "p1", "u1", &v), 0);
    assert_int_equal(v.n, 2);
    assert_int_equal(v.seg[0].kind, BFS_SEG_COLD);
    assert_string_equal(v.seg[0].key, s.ar[0].key);
    assert_int_equal(v.seg[0].offset, s.ar[0].header_len);
    assert_int_equal(v.seg[0].length, 700);
    assert_int_equal(v.seg[0].records, 30 + 1 + 40 + 1);
    assert_int_equal(v.seg[1].kind, BFS_SEG_HOT);
    assert_int_equal(v.seg[1].length, 50);
    assert_int_equal(v.size, size_before + 50);
    assert_true(v.mtime >= mtime_before);
    bfs_dataset_view_free(&v);
    /* ... and its bytes are the bytes before the roll, plus the new upload. */
    struct sim *sims[1] = {&s};
    uint64_t size_after;
    uint8_t *after = file_bytes(e, sims, 1, "battle", "p1", "u1", &size_after);
    assert_int_equal(size_after, size_before + 50);
    assert_memory_equal(after, before, size_before);
    uint8_t tail[50];
    fill(tail, 50, 5);
    assert_memory_equal(after + size_before, tail, 50);
    free(after);
    free(before);

    /* A cold-only dataset keeps its size and mtime (the upload time). */
    uint64_t size2;
    int64_t mtime2;
    assert_int_equal(bfs_catalog_dataset_stat(e->cat, "battle", "p1", "u2", &size2, &mtime2), 0);
    assert_int_equal(size2, size_u2);
    assert_int_equal(mtime2, mtime_u2);
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "p1", "u2", &v), 0);
    assert_int_equal(v.n, 1);
    assert_int_equal(v.seg[0].kind, BFS_SEG_COLD);
    assert_int_equal(v.seg[0].offset, s.ar[0].header_len + 700);
    bfs_dataset_view_free(&v);

    /* Listing merges hot and cold. */
    struct names ns = {0};
    assert_int_equal(bfs_catalog_list_tables(e->cat, collect, &ns), 0);
    assert_int_equal(ns.n, 2);
    assert_string_equal(ns.name[1], "own_ship");
    assert_int_equal(bfs_catalog_table_exists(e->cat, "own_ship"), 0);
    assert_int_equal(bfs_catalog_period_exists(e->cat, "own_ship", "p1"), 0);
    memset(&ns, 0, sizeof ns);
    assert_int_equal(bfs_catalog_list_datasets(e->cat, "battle", "p1", collect, &ns), 0);
    assert_int_equal(ns.n, 2);
    assert_string_equal(ns.name[0], "u1");
    assert_string_equal(ns.name[1], "u2");
    memset(&ns, 0, sizeof ns);
    assert_int_equal(bfs_catalog_list_archives(e->cat, collect, &ns), 0);
    assert_int_equal(ns.n, 2);
    assert_string_equal(ns.name[0], s.ar[0].key);
    assert_string_equal(ns.name[1], s.ar[1].key);

    /* A second roll splits battle/p1 after every row: u1 gets two more cold
     * segments, in archive order, after the first roll's. */
    put(e, "battle", "p1", "u1", 60, 6);
    put(e, "battle", "p1", "u2", 70, 7);
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "n1", id, &rows, &bytes), 0);
    assert_int_equal(rows, 3);
    static struct sim s2;
    sim_build(&s2, e, id, 1);
    assert_int_equal(s2.n_ar, 3);
    assert_int_equal(sim_commit(&s2), 0);
    assert_int_equal(bfs_catalog_roll_committed(e->cat, id, &seq), 1);
    assert_int_equal(seq, 2);
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "p1", "u1", &v), 0);
    assert_int_equal(v.n, 3);
    assert_string_equal(v.seg[0].key, s.ar[0].key);
    assert_string_equal(v.seg[1].key, s2.ar[0].key);
    assert_string_equal(v.seg[2].key, s2.ar[1].key);
    assert_int_equal(v.seg[1].length, 50);
    assert_int_equal(v.seg[2].length, 60);
    bfs_dataset_view_free(&v);
    struct sim *both[2] = {&s, &s2};
    after = file_bytes(e, both, 2, "battle", "p1", "u1", &size_after);
    assert_int_equal(size_after, size_before + 110);
    free(after);
    sim_free(&s);
    sim_free(&s2);
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 0);
    assert_int_equal(c.buffer_bytes, 0);
    assert_int_equal(c.archived_files, 5);
}

/* The writer's PRAGMA foreign_keys, as every upload finds it. */
static int64_t writer_fk(struct env *e)
{
    int64_t v = -1;
    assert_int_equal(bfs_catalog_writer_pragma(e->cat, "foreign_keys", &v), 0);
    return v;
}

/* A roll commit turns foreign keys off for its own transaction only: after
 * it, failed or not, the writer has them on again, so the uploads that
 * follow are checked. */
static void test_roll_foreign_keys(void **state)
{
    struct env *e = *state;
    int64_t v;
    assert_int_equal(bfs_catalog_writer_pragma(e->cat, "foreign_keys; DROP TABLE x", &v), -EINVAL);
    assert_int_equal(bfs_catalog_writer_pragma(e->cat, "", &v), -EINVAL);
    assert_int_equal(writer_fk(e), 1);
    put(e, "battle", "p1", "u1", 300, 1);
    put(e, "battle", "p1", "u2", 100, 2);
    char id[BFS_ROLL_ID_MAX];
    uint64_t rows, bytes;
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "n1", id, &rows, &bytes), 0);
    assert_int_equal(writer_fk(e), 1);

    /* A failed commit: the index misses a dataset. */
    static struct sim s;
    sim_build(&s, e, id, 100);
    assert_int_equal(s.n_ix, 2);
    s.ar[0].n_index--;
    s.n_ix--;
    assert_int_equal(sim_commit(&s), -EINVAL);
    assert_int_equal(writer_fk(e), 1);
    s.ar[0].n_index++;
    s.n_ix++;
    /* ... one at the wrong log position (nothing began) ... */
    struct bfs_err err = {0};
    assert_int_equal(sim_apply_to(&s, e->cat, 2, "n1", 1, NULL, &err), -ESTALE);
    assert_int_equal(writer_fk(e), 1);
    /* ... and one whose archive fails (another codec) half-way. */
    s.ar[0].codec = BFS_CODEC_NULL;
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "n1", 1, NULL, &err), -EINVAL);
    assert_int_equal(writer_fk(e), 1);
    s.ar[0].codec = BFS_CODEC_DEFLATE;

    /* The real commit, then one twice. */
    assert_int_equal(sim_commit(&s), 0);
    assert_int_equal(writer_fk(e), 1);
    assert_int_equal(sim_commit(&s), -EALREADY);
    assert_int_equal(writer_fk(e), 1);

    /* The next upload is committed with foreign keys on, and so is a purge. */
    put(e, "battle", "p1", "u1", 50, 3);
    assert_int_equal(writer_fk(e), 1);
    assert_int_equal(bfs_catalog_purge(e->cat, 16), 2);
    assert_int_equal(writer_fk(e), 1);
    sim_free(&s);
}

/* A claim survives a crash (close without commit): the same roll, the same rows. */
static void test_roll_recovery(void **state)
{
    struct env *e = *state;
    /* More than two pages of roll_rows (256 rows), one dataset alone longer
     * than a page. */
    for (int i = 0; i < 600; i++) {
        char ds[16];
        snprintf(ds, sizeof ds, "d%03d", i % 3 && i < 450 ? 999 : (i * 7) % 50);
        put(e, i % 3 ? "battle" : "own_ship", "p1", ds, 20 + (size_t)i % 30, (unsigned)i);
    }
    char id[BFS_ROLL_ID_MAX];
    uint64_t rows, bytes;
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "n1", id, &rows, &bytes), 0);
    assert_int_equal(rows, 600);
    static struct rowlist l1, l2;
    l1.n = l2.n = 0;
    assert_int_equal(bfs_catalog_roll_rows(e->cat, id, collect_row, &l1), 0);
    assert_int_equal(l1.n, 600);
    uint64_t sum = 0;
    for (size_t i = 0; i < l1.n; i++) {
        sum += l1.r[i].length;
        if (i == 0)
            continue;
        int c = strcmp(l1.r[i - 1].table, l1.r[i].table);
        if (c == 0)
            c = strcmp(l1.r[i - 1].dataset, l1.r[i].dataset);
        assert_true(c < 0 || (c == 0 && l1.r[i - 1].id < l1.r[i].id));
    }
    assert_int_equal(sum, bytes);

    reopen(e); /* the "crash" */
    char pending[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), 0);
    assert_string_equal(pending, id);
    assert_int_equal(bfs_catalog_roll_rows(e->cat, pending, collect_row, &l2), 0);
    assert_int_equal(l2.n, l1.n);
    assert_memory_equal(&l2.r[0], &l1.r[0], l1.n * sizeof l1.r[0]);
    uint64_t r2, b2;
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "n1", pending, &r2, &b2), -EBUSY);
    assert_int_equal(bfs_catalog_roll_rows(e->cat, "no-such-roll", collect_row, &l2), -ENOENT);

    static struct sim s;
    sim_build(&s, e, pending, 1000);
    assert_int_equal(sim_commit(&s), 0);
    sim_free(&s);
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 0);
    assert_int_equal(c.archived_files, 2);
}

/* Uploads racing rolls: every upload ends up exactly once, hot or cold. */
#define RACE_UPLOADS 300
static void *race_uploader(void *arg)
{
    struct env *e = arg;
    for (int i = 0; i < RACE_UPLOADS; i++) {
        struct up_spec s = {"battle",          "p1", i % 2 ? "a" : "b", 0,
                            BFS_CODEC_DEFLATE, 32,   (unsigned)i,       1};
        struct bfs_err err = {0};
        if (commit(e, &s, &err) != 0)
            return (void *)1;
    }
    return NULL;
}

static void test_roll_races_uploads(void **state)
{
    struct env *e = *state;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, race_uploader, e), 0);
    size_t n_sims = 0, cap = 0;
    struct sim **ps = NULL;
    int done = 0;
    while (!done) {
        void *ret = NULL;
        done = pthread_tryjoin_np(th, &ret) == 0;
        assert_null(ret);
        char id[BFS_ROLL_ID_MAX];
        uint64_t rows, bytes;
        int rc = bfs_catalog_roll_claim(e->cat, "n1", id, &rows, &bytes);
        if (rc == -ENODATA)
            continue;
        assert_int_equal(rc, 0);
        if (n_sims == cap) {
            cap = cap ? cap * 2 : 16;
            struct sim **grown = realloc(ps, cap * sizeof *ps);
            assert_non_null(grown);
            ps = grown;
        }
        struct sim *s = calloc(1, sizeof *s);
        assert_non_null(s);
        s->e = e;
        s->roll_id = strdup(id);
        s->max_rows = SIZE_MAX; /* one archive: one (table, period), two datasets */
        assert_int_equal(bfs_catalog_roll_rows(e->cat, id, sim_row, s), 0);
        assert_int_equal(s->ar[0].rows, rows);
        assert_int_equal(sim_commit(s), 0);
        ps[n_sims++] = s;
        usleep(3000);
    }
    for (int d = 0; d < 2; d++) {
        const char *ds = d ? "a" : "b";
        struct bfs_dataset_view v;
        assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "p1", ds, &v), 0);
        uint64_t records = 0;
        for (size_t i = 0; i < v.n; i++)
            records += v.seg[i].records;
        assert_int_equal(records, RACE_UPLOADS / 2);
        assert_int_equal(v.size, v.part.header_len + 32 * (RACE_UPLOADS / 2));
        bfs_dataset_view_free(&v);
        /* and byte-exact: upload i of the dataset is fill(32, i) */
        uint64_t size;
        uint8_t *all = file_bytes(e, ps, n_sims, "battle", "p1", ds, &size);
        struct bfs_partition p;
        assert_int_equal(bfs_catalog_partition_get(e->cat, "battle", "p1", &p), 0);
        size_t pos = p.header_len;
        for (int i = d ? 1 : 0; i < RACE_UPLOADS; i += 2) {
            uint8_t want[32];
            fill(want, 32, (unsigned)i);
            assert_memory_equal(all + pos, want, 32);
            pos += 32;
        }
        bfs_partition_free(&p);
        free(all);
    }
    print_message("uploads racing rolls: %zu rolls\n", n_sims);
    assert_true(n_sims >= 1);
    for (size_t i = 0; i < n_sims; i++) {
        free((char *)ps[i]->roll_id);
        sim_free(ps[i]);
        free(ps[i]);
    }
    free(ps);
}

/* ------------------------------------------------------------------------ */
/* the store's log: entries applied                                           */

/* A second catalog (a writer "b") with its own uploads and pending claim. */
static struct env *writer_b(void)
{
    void *st = NULL;
    assert_int_equal(setup(&st), 0);
    return st;
}

static void writer_b_free(struct env *b)
{
    void *st = b;
    teardown(&st);
}

/* Another node's roll: inserted with its rows (roll, archives, index rows)
 * at its log position; its cold segments come before the reading catalog's
 * hot rows, in log order. Every refusal leaves the catalog as it was:
 * a partition it does not have (-ENOENT), another schema or codec (-EINVAL),
 * bad fields or index rows outside their archive (-EINVAL), another log
 * position than the next (-ESTALE), a roll applied twice (-EALREADY). */
static void test_apply_foreign(void **state)
{
    struct env *e = *state;
    struct env *b = writer_b();
    put(e, "battle", "p1", "u1", 100, 1); /* e's own hot row */
    put(b, "battle", "p1", "u1", 300, 2);
    put(b, "battle", "p1", "u2", 200, 3);
    put(b, "own_ship", "p1", "u1", 50, 4);
    char id[BFS_ROLL_ID_MAX];
    uint64_t rows, bytes;
    assert_int_equal(bfs_catalog_roll_claim(b->cat, "b", id, &rows, &bytes), 0);
    static struct sim s;
    sim_build(&s, b, id, 100);
    assert_int_equal(s.n_ar, 2);
    struct bfs_err err = {0};
    int own = -1;

    /* own_ship/p1 is not a partition of e's: -ENOENT, nothing changes. */
    char *before = db_state(e);
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, &own, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "no partition own_ship/p1"));
    assert_int_equal(own, 0);
    unchanged(e, before);
    /* Made from the archive's layout (as the ledger does from its header). */
    struct bfs_upload up = {
        .table = "own_ship",
        .period = "p1",
        .schema_json = SCHEMA_A,
        .schema_len = strlen(SCHEMA_A),
        .canonical = e->canon_a,
        .canonical_len = e->canon_a_len,
        .codec = BFS_CODEC_DEFLATE,
    };
    struct bfs_buf hdr = {0};
    derive_layout(&up, &hdr);
    assert_int_equal(bfs_catalog_partition_add(e->cat, &up, &err), 0);
    assert_int_equal(bfs_catalog_partition_add(e->cat, &up, &err), 0); /* the same: 0 */
    assert_memory_equal(hdr.data, s.ar[1].bytes.data, hdr.len);
    bfs_buf_free(&hdr);
    /* another schema for it: refused */
    struct bfs_upload other = up;
    other.schema_json = SCHEMA_B;
    other.schema_len = strlen(SCHEMA_B);
    other.canonical = e->canon_b;
    other.canonical_len = e->canon_b_len;
    derive_layout(&other, &hdr);
    assert_int_equal(bfs_catalog_partition_add(e->cat, &other, &err), -EINVAL);
    bfs_buf_free(&hdr);

    /* Refusals, each leaving e as it was. */
    before = db_state(e);
    struct sim_archive saved = s.ar[0], saved1 = s.ar[1];
    /* another schema's fingerprint */
    snprintf(s.ar[0].fp, sizeof s.ar[0].fp, "0123456789abcdef");
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "is not a version of partition"));
    s.ar[0] = saved;
    /* another codec */
    s.ar[1].codec = BFS_CODEC_SNAPPY;
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "has codec"));
    s.ar[1].codec = saved.codec;
    /* an index row past the end of its archive, or inside its header */
    uint64_t start1 = s.ix[1].start;
    s.ix[1].start = s.ar[0].bytes.len - s.ix[1].length + 1;
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "outside its archive"));
    s.ix[1].start = 3;
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, NULL, &err), -EINVAL);
    s.ix[1].start = start1;
    /* a header longer than its archive */
    s.ar[0].header_len = s.ar[0].bytes.len + 1;
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, NULL, &err), -EINVAL);
    s.ar[0] = saved;
    /* a key listed twice */
    snprintf(s.ar[1].key, sizeof s.ar[1].key, "%s", s.ar[0].key);
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "listed twice"));
    s.ar[1] = saved1;
    /* the roll's bytes are not its index rows' */
    s.bytes_delta = 1;
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, NULL, &err), -EINVAL);
    s.bytes_delta = 0;
    /* bad fields of the entry: node, roll id, position, epoch */
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b/c", 1, NULL, &err), -EINVAL);
    assert_int_equal(sim_apply_to(&s, e->cat, -1, "b", 1, NULL, &err), -EINVAL);
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", -1, NULL, &err), -EINVAL);
    s.roll_id = "b/../x";
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, NULL, &err), -EINVAL);
    s.roll_id = id;
    /* not the next position */
    assert_int_equal(sim_apply_to(&s, e->cat, 2, "b", 1, NULL, &err), -ESTALE);
    unchanged(e, before);

    /* Applied: a committed roll of node b at position 1, with its rows. */
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, &own, &err), 0);
    assert_int_equal(own, 0);
    int64_t seq = -1, pos = -1, epoch = -1;
    assert_int_equal(bfs_catalog_roll_committed(e->cat, id, &seq), 1);
    assert_int_equal(seq, 1);
    assert_int_equal(bfs_catalog_ledger_state(e->cat, &pos, NULL), 0);
    assert_int_equal(pos, 1);
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "b", &epoch), 0);
    assert_int_equal(epoch, 1);
    char pending[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), -ENOENT);
    sqlite3 *db = raw_open(e);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM rolls WHERE node = 'b' AND log_seq = 1"
                                 " AND epoch = 1 AND committed_at IS NOT NULL AND row_count = 3"
                                 " AND byte_count = 550 AND claimed_at = 1766062800"),
                     1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM archived_files"), 2);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM block_indexes"), 3);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM buffer_rows"), 1); /* e's own */
    sqlite3_close(db);
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    assert_int_equal(c.buffer_uploads, 1);
    assert_int_equal(c.archived_files, 2);
    struct names ns = {0};
    assert_int_equal(bfs_catalog_list_tables(e->cat, collect, &ns), 0);
    assert_int_equal(ns.n, 2); /* own_ship only from b's roll */
    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "p1", "u1", &v), 0);
    assert_int_equal(v.n, 2);
    assert_int_equal(v.seg[0].kind, BFS_SEG_COLD);
    assert_string_equal(v.seg[0].key, s.ar[0].key);
    assert_int_equal(v.seg[0].length, 300);
    assert_int_equal(v.seg[1].kind, BFS_SEG_HOT);
    assert_int_equal(v.seg[1].length, 100);
    bfs_dataset_view_free(&v);

    /* Twice: -EALREADY at the next position, -ESTALE at its own. */
    before = db_state(e);
    assert_int_equal(sim_apply_to(&s, e->cat, 0, "b", 1, &own, &err), -EALREADY);
    assert_int_equal(own, 0);
    assert_int_equal(sim_apply_to(&s, e->cat, 1, "b", 1, &own, &err), -ESTALE);
    unchanged(e, before);

    /* e's own roll comes next (position 2): its cold segment after b's. */
    char mine[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "a", mine, &rows, &bytes), 0);
    assert_int_equal(rows, 1);
    static struct sim s2;
    sim_build(&s2, e, mine, 100);
    assert_int_equal(sim_apply_to(&s2, e->cat, 0, "a", 1, &own, &err), 0);
    assert_int_equal(own, 1);
    assert_int_equal(bfs_catalog_roll_committed(e->cat, mine, &seq), 1);
    assert_int_equal(seq, 2);
    assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "p1", "u1", &v), 0);
    assert_int_equal(v.n, 2);
    assert_string_equal(v.seg[0].key, s.ar[0].key);
    assert_string_equal(v.seg[1].key, s2.ar[0].key);
    bfs_dataset_view_free(&v);
    struct sim *sims[2] = {&s, &s2};
    uint64_t size;
    uint8_t *all = file_bytes(e, sims, 2, "battle", "p1", "u1", &size);
    uint8_t want[300];
    fill(want, 300, 2);
    struct bfs_partition p;
    assert_int_equal(bfs_catalog_partition_get(e->cat, "battle", "p1", &p), 0);
    assert_int_equal(size, p.header_len + 400);
    assert_memory_equal(all + p.header_len, want, 300);
    fill(want, 100, 1);
    assert_memory_equal(all + p.header_len + 300, want, 100);
    bfs_partition_free(&p);
    free(all);
    sim_free(&s);
    sim_free(&s2);
    writer_b_free(b);
}

/* Entries without data (a fence, a fenced roll): the position advances by
 * one, a node's epoch only grows; another position than the next: -ESTALE. */
static void test_log_skip(void **state)
{
    struct env *e = *state;
    int64_t pos = -1, epoch = -1;
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "a", &epoch), 0);
    assert_int_equal(epoch, 0); /* never seen */
    assert_int_equal(bfs_catalog_log_skip(e->cat, 2, "a", 1), -ESTALE);
    assert_int_equal(bfs_catalog_log_skip(e->cat, 0, "a", 1), -ESTALE);
    assert_int_equal(bfs_catalog_log_skip(e->cat, 1, "a", 3), 0);
    assert_int_equal(bfs_catalog_ledger_state(e->cat, &pos, NULL), 0);
    assert_int_equal(pos, 1);
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "a", &epoch), 0);
    assert_int_equal(epoch, 3);
    assert_int_equal(bfs_catalog_log_skip(e->cat, 1, "a", 4), -ESTALE);
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "a", &epoch), 0);
    assert_int_equal(epoch, 3);
    assert_int_equal(bfs_catalog_log_skip(e->cat, 2, "a", 2), 0); /* lower: stays 3 */
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "a", &epoch), 0);
    assert_int_equal(epoch, 3);
    assert_int_equal(bfs_catalog_log_skip(e->cat, 3, NULL, 0), 0); /* no node */
    assert_int_equal(bfs_catalog_log_skip(e->cat, 4, "b", 7), 0);
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "b", &epoch), 0);
    assert_int_equal(epoch, 7);
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "a", &epoch), 0);
    assert_int_equal(epoch, 3);
    reopen(e);
    assert_int_equal(bfs_catalog_ledger_state(e->cat, &pos, NULL), 0);
    assert_int_equal(pos, 4);
    assert_int_equal(bfs_catalog_node_epoch(e->cat, "b", &epoch), 0);
    assert_int_equal(epoch, 7);
    /* a roll entry after skips: at position 5 only */
    put(e, "battle", "p1", "u1", 10, 1);
    char id[BFS_ROLL_ID_MAX];
    uint64_t rows, bytes;
    assert_int_equal(bfs_catalog_roll_claim(e->cat, "a", id, &rows, &bytes), 0);
    static struct sim s;
    sim_build(&s, e, id, 100);
    struct bfs_err err = {0};
    assert_int_equal(sim_apply_to(&s, e->cat, 4, "a", 3, NULL, &err), -ESTALE);
    assert_int_equal(sim_apply_to(&s, e->cat, 6, "a", 3, NULL, &err), -ESTALE);
    assert_int_equal(sim_apply_to(&s, e->cat, 5, "a", 3, NULL, &err), 0);
    int64_t seq = -1;
    assert_int_equal(bfs_catalog_roll_committed(e->cat, id, &seq), 1);
    assert_int_equal(seq, 5);
    /* the log position of a roll repeated in the log is skipped */
    assert_int_equal(bfs_catalog_log_skip(e->cat, 6, NULL, 0), 0);
    assert_int_equal(bfs_catalog_ledger_state(e->cat, &pos, NULL), 0);
    assert_int_equal(pos, 6);
    sim_free(&s);
}

/* ------------------------------------------------------------------------ */
/* the roll's reader: catalog.db through a bounded memory map                */

/* kB of catalog.db mapped in this process's RSS (/proc/self/smaps), and how
 * many mappings of it there are. */
static long mapped_rss(const char *path, int *maps)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    long kb = 0;
    int in = 0;
    size_t n = strlen(path);
    *maps = 0;
    while (fgets(line, sizeof line, f)) {
        size_t l = strcspn(line, "\n");
        line[l] = 0;
        /* a mapping's first line: "start-end perms offset dev inode [path]" */
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {
            in = l >= n && strcmp(line + l - n, path) == 0;
            *maps += in;
            continue;
        }
        long v;
        if (in && sscanf(line, "Rss: %ld kB", &v) == 1)
            kb += v;
    }
    fclose(f);
    return kb;
}

/* Rows read through a hot reader across several map windows (rows in the
 * database file after a checkpoint, as a roll finds them) equal the rows
 * read with pread; at most about a window of the file is in RSS at a time,
 * and a release unmaps it; rows of 100 bytes are read without the map. */
static void test_hot_reader_map(void **state)
{
    struct env *e = *state;
    enum { ROWS = 24, LEN = 512000, CHUNK = 65536 };
    char ds[16];
    for (int i = 0; i < ROWS; i++) {
        snprintf(ds, sizeof ds, "u%02d", i);
        put(e, "battle", "2025-12-18", ds, LEN, 100u + (unsigned)i);
    }
    reopen(e); /* the last close checkpoints: every row in catalog.db */

    int64_t ids[ROWS];
    for (int i = 0; i < ROWS; i++) {
        struct bfs_dataset_view v;
        snprintf(ds, sizeof ds, "u%02d", i);
        assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-18", ds, &v), 0);
        assert_int_equal(v.n, 1);
        ids[i] = v.seg[0].id;
        bfs_dataset_view_free(&v);
    }

    uint8_t *want = malloc(LEN), *got = malloc(LEN);
    assert_non_null(want);
    assert_non_null(got);
    struct bfs_hot_reader *r;
    assert_int_equal(bfs_catalog_hot_reader(e->cat, &r), 0);
    int maps;
    long peak = 0;
    for (int i = 0; i < ROWS; i++) {
        for (size_t off = 0; off < LEN; off += CHUNK) {
            size_t n = LEN - off < CHUNK ? LEN - off : CHUNK;
            assert_int_equal(bfs_catalog_hot_read(r, ids[i], off, got + off, n), 0);
        }
        fill(want, LEN, 100u + (unsigned)i);
        assert_memory_equal(got, want, LEN);
        long kb = mapped_rss(e->path, &maps);
        assert_int_equal(maps, 1); /* read through the map */
        if (kb > peak)
            peak = kb;
    }
    /* 12 MB read; a window of 4 MiB, plus a row's and the kernel's
     * fault-around (64 KiB a fault) */
    assert_true(peak > 0);
    assert_true(peak <= (long)(BFS_HOT_MAP_WINDOW + LEN + (1u << 20)) / 1024);
    bfs_catalog_hot_release(r);
    assert_int_equal(mapped_rss(e->path, &maps), 0);
    assert_int_equal(maps, 0);

    /* Sparse reads: 100 bytes every 64 KiB, twice over the 12 MB. The kernel
     * maps the 64 KiB around each page faulted in, so the bytes read say
     * nothing of the RSS: the reader's look at its resident pages still bounds
     * it (a window, and at most the 64 reads before the next look). */
    peak = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < ROWS; i++) {
            fill(want, LEN, 100u + (unsigned)i);
            for (size_t off = 4096 * (size_t)pass; off + 100 <= LEN; off += 65536) {
                assert_int_equal(bfs_catalog_hot_read(r, ids[i], off, got, 100), 0);
                assert_memory_equal(got, want + off, 100);
            }
            long kb = mapped_rss(e->path, &maps);
            if (kb > peak)
                peak = kb;
        }
    assert_true(peak <= (long)(2 * BFS_HOT_MAP_WINDOW + (1u << 20)) / 1024);
    bfs_catalog_hot_release(r);

    /* The pooled connection reads with pread again: nothing is mapped by a
     * read of another caller, and a reader used again maps again. */
    expect_hot(e, ids[3], LEN, 103);
    mapped_rss(e->path, &maps);
    assert_int_equal(maps, 0);
    assert_int_equal(bfs_catalog_hot_read(r, ids[5], 1000, got, 4096), 0);
    fill(want, LEN, 105);
    assert_memory_equal(got, want + 1000, 4096);
    bfs_catalog_hot_reader_free(r);
    mapped_rss(e->path, &maps);
    assert_int_equal(maps, 0);

    /* Small rows (SQLite's cache serves them better): never mapped. */
    enum { SMALL = 400 };
    for (int i = 0; i < SMALL; i++) {
        snprintf(ds, sizeof ds, "s%03d", i);
        put(e, "battle", "2025-12-19", ds, 100, 500u + (unsigned)i);
    }
    reopen(e);
    assert_int_equal(bfs_catalog_hot_reader(e->cat, &r), 0);
    for (int i = 0; i < SMALL; i++) {
        struct bfs_dataset_view v;
        snprintf(ds, sizeof ds, "s%03d", i);
        assert_int_equal(bfs_catalog_dataset(e->cat, "battle", "2025-12-19", ds, &v), 0);
        assert_int_equal(bfs_catalog_hot_read(r, v.seg[0].id, 0, got, 100), 0);
        fill(want, 100, 500u + (unsigned)i);
        assert_memory_equal(got, want, 100);
        bfs_dataset_view_free(&v);
        mapped_rss(e->path, &maps);
        assert_int_equal(maps, 0);
    }
    bfs_catalog_hot_reader_free(r);
    free(want);
    free(got);
}

/* ------------------------------------------------------------------------ */
/* a full disk                                                               */

/* On a small tmpfs (needs root; skipped otherwise): a commit that does not
 * fit fails with -ENOSPC and a message, stores nothing, and commits work again
 * once there is space. */
static void test_disk_full(void **state)
{
    (void)state;
    char dir[64] = "/tmp/bfs-catalog-full-XXXXXX";
    assert_non_null(mkdtemp(dir));
    if (mount("tmpfs", dir, "tmpfs", 0, "size=2m,mode=0700") != 0) {
        rmdir(dir);
        skip();
    }
    struct env e = {0};
    snprintf(e.path, sizeof e.path, "%s/catalog.db", dir);
    e.canon_a = canonical(SCHEMA_A, &e.canon_a_len);
    assert_int_equal(bfs_catalog_open(e.path, &e.cat), 0);
    put(&e, "battle", "p1", "u1", 1000, 1);

    /* Fill the file system, leaving a little room. */
    char filler[96];
    snprintf(filler, sizeof filler, "%s/filler", dir);
    FILE *f = fopen(filler, "w");
    assert_non_null(f);
    static uint8_t zeros[4096];
    struct statvfs sv;
    assert_int_equal(statvfs(dir, &sv), 0);
    uint64_t room = (uint64_t)sv.f_bavail * sv.f_frsize;
    for (uint64_t n = 0; n + 64 * 1024 + sizeof zeros <= room; n += sizeof zeros)
        assert_int_equal(fwrite(zeros, 1, sizeof zeros, f), sizeof zeros);
    assert_int_equal(fclose(f), 0);

    struct up_spec big = {"battle", "p1", "u1", 0, BFS_CODEC_DEFLATE, 512 * 1024, 2, 7};
    struct bfs_err err = {0};
    int rc = commit(&e, &big, &err);
    assert_int_equal(rc, -ENOSPC);
    print_message("disk full: %s\n", err.msg);
    assert_true(err.msg[0] != '\0');
    struct bfs_dataset_view v;
    assert_int_equal(bfs_catalog_dataset(e.cat, "battle", "p1", "u1", &v), 0);
    assert_int_equal(v.n, 1);
    bfs_dataset_view_free(&v);

    /* Space again: the same upload commits. */
    assert_int_equal(unlink(filler), 0);
    assert_int_equal(commit(&e, &big, &err), 0);
    reopen(&e);
    assert_int_equal(bfs_catalog_dataset(e.cat, "battle", "p1", "u1", &v), 0);
    assert_int_equal(v.n, 2);
    assert_int_equal(v.seg[1].length, 512 * 1024);
    expect_hot(&e, v.seg[1].id, 512 * 1024, 2);
    bfs_dataset_view_free(&v);
    bfs_catalog_close(e.cat);
    free(e.canon_a);
    assert_int_equal(umount2(dir, MNT_DETACH), 0);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_view_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upload_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_codec_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partition_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpointer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roll_foreign_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roll_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roll_races_uploads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_foreign, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_skip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hot_reader_map, setup, teardown),
        cmocka_unit_test(test_disk_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
