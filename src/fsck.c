/* fsck.c - check a store against its index (fsck.h): battlefs-store fsck and ls.
 *
 * The index is walked with bfs_catalog_snapshot (one read transaction); an
 * archive's index rows are collected while the walk visits them and the
 * archive is checked when the next archive (or roll, node, the end) comes.
 * Reads: one listing of the store (sizes, what is missing), each archive
 * streamed once for its SHA-256 (CHUNK bytes at a time), then each index row
 * fetched once (one ranged GET; memory: the largest row).
 */
#include "battlefs/fsck.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/catalog.h"
#include "battlefs/errors.h"
#include "battlefs/fsutil.h"
#include "battlefs/ledger.h"
#include "battlefs/manifest.h"
#include "battlefs/metrics.h"
#include "battlefs/ocf.h"
#include "battlefs/progress.h"
#include "battlefs/sha256.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"
#include "battlefs/varint.h"

#define CHUNK     (4u << 20)   /* bytes per GET of the SHA-256 pass */
#define ROW_MAX   (1ull << 30) /* an index row larger than this is not fetched */
#define FSCK_NODE "fsck"       /* the ledger's node name (read-only: never written) */

/* ---- the index from the store alone ---- */

int bfs_fsck_load_store(struct bfs_store *st, const char *dir, struct bfs_catalog **cat,
                        struct bfs_err *err)
{
    *cat = NULL;
    char *db = bfs_path_join(dir, "catalog.db");
    char *work = bfs_path_join(dir, "work");
    int rc = db && work ? bfs_mkdirs(work, 0700) : -ENOMEM;
    if (rc == 0 && (rc = bfs_catalog_open(db, cat)) < 0)
        bfs_err_set(err, rc, "cannot create a catalog in %s: %s", dir, strerror(-rc));
    struct bfs_stats stats;
    struct bfs_errors errors;
    bfs_stats_init(&stats);
    bfs_errors_init(&errors);
    struct bfs_ledger *l = NULL;
    if (rc == 0) {
        const struct bfs_ledger_deps d = {
            .cat = *cat,
            .store = st,
            .stats = &stats,
            .errors = &errors,
            .node = FSCK_NODE,
            .read_only = 1,
            .work_dir = work,
        };
        if ((rc = bfs_ledger_open(&d, &l)) < 0)
            bfs_err_set(err, rc, "cannot open the store's log: %s", strerror(-rc));
    }
    if (rc == 0)
        rc = bfs_ledger_refresh(l, err);
    bfs_ledger_close(l);
    bfs_errors_destroy(&errors);
    bfs_stats_destroy(&stats);
    if (rc == -ENOMEM && !err->msg[0])
        bfs_err_set(err, rc, "out of memory");
    free(db);
    free(work);
    return rc;
}

/* ---- the check ---- */

struct row {
    char *dataset;
    uint64_t start, length, records;
};

struct fsck {
    struct bfs_store *st;
    const struct bfs_fsck_opts *o;
    const char *source;
    bfs_fsck_problem_fn fn;
    void *arg;
    struct bfs_fsck_counts *counts;
    json_t *objects;  /* the store's keys: size (the listing) */
    json_t *archives; /* archive keys already checked */
    /* the archive being collected */
    int pending;
    struct bfs_manifest_archive a;
    char *key, *table, *period, *fp;
    struct row *rows;
    size_t n, cap;
    uint8_t *buf; /* CHUNK bytes */
    struct bfs_progress prog;
    uint64_t total_archives;
};

static void problem(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct fsck *f, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    f->counts->problems++;
    f->fn(f->arg, line);
}

static int list_cb(void *ctx, const char *key, uint64_t size)
{
    return json_object_set_new(ctx, key, json_integer((json_int_t)size)) < 0 ? -ENOMEM : 0;
}

static void pending_free(struct fsck *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->rows[i].dataset);
    f->n = 0;
    free(f->key);
    free(f->table);
    free(f->period);
    free(f->fp);
    f->key = f->table = f->period = f->fp = NULL;
    f->pending = 0;
}

static int cmp_rows(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The SHA-256 pass: 0 (with the digest), or -errno (reported). */
static int hash_archive(struct fsck *f, uint64_t size, uint8_t sha[32])
{
    struct bfs_err e;
    int rc = bfs_store_fetch(f->st, f->key, size, f->buf, CHUNK, -1, sha, &e);
    if (rc < 0)
        problem(f, "archive %s: cannot read %s (%s)", f->key, e.msg, strerror(-rc));
    return rc;
}

/* The blocks of one index row (buf[0..len), the row's bytes): count, size,
 * the layout's sync marker, nothing after the last block. 0 with the record
 * count, or -EINVAL with err ("at byte X: ..."; X in the archive). */
static int walk_blocks(const uint8_t *buf, size_t len, uint64_t base, const uint8_t sync[16],
                       uint64_t *records, struct bfs_err *err)
{
    size_t pos = 0;
    uint64_t total = 0;
    while (pos < len) {
        size_t at = pos;
        int64_t count, size;
        if (bfs_varint_get_long(buf, len, &pos, &count) != BFS_VARINT_OK || count < 0 ||
            bfs_varint_get_long(buf, len, &pos, &size) != BFS_VARINT_OK || size < 0)
            return bfs_err_set(err, -EINVAL,
                               "block at byte %" PRIu64 ": not a block (record count, size)",
                               base + at);
        if ((uint64_t)size > len - pos || len - pos - (size_t)size < 16)
            return bfs_err_set(err, -EINVAL,
                               "block at byte %" PRIu64 ": its %" PRId64
                               " bytes and sync marker go past the row's end",
                               base + at, size);
        pos += (size_t)size;
        if (memcmp(buf + pos, sync, 16) != 0)
            return bfs_err_set(err, -EINVAL,
                               "block at byte %" PRIu64 ": sync marker is not the layout's",
                               base + at);
        pos += 16;
        total += (uint64_t)count;
    }
    *records = total;
    return 0;
}

/* Fetch and decode one row (inside the archive, after its header). */
static void check_row(struct fsck *f, const struct row *r, const struct bfs_ocf_header *h,
                      const uint8_t *hdr)
{
    if (r->length > ROW_MAX) {
        problem(f, "archive %s: dataset %s: index row of %" PRIu64 " bytes is too large to check",
                f->key, r->dataset, r->length);
        return;
    }
    size_t hl = f->o->deep ? h->header_len : 0;
    uint8_t *buf = malloc(hl + (size_t)r->length + 1);
    if (!buf) {
        problem(f, "archive %s: dataset %s: out of memory", f->key, r->dataset);
        return;
    }
    memcpy(buf, hdr, hl);
    struct bfs_err e;
    int rc = bfs_store_get_range(f->st, f->key, r->start, r->length, buf + hl, &e);
    uint64_t records = 0;
    if (rc < 0) {
        problem(f, "archive %s: dataset %s: cannot read bytes [%" PRIu64 ", %" PRIu64 "): %s%s%s",
                f->key, r->dataset, r->start, r->start + r->length, strerror(-rc),
                e.msg[0] ? ": " : "", e.msg);
    } else if (f->o->deep) {
        /* the ingest's validator: framing, codec, every record */
        rc = bfs_ocf_process(buf, hl + (size_t)r->length, h, h->sync, h->codec, NULL, &records, 0,
                             0, &e);
        if (rc < 0) /* e's offsets are in the header followed by the row */
            problem(f,
                    "archive %s: dataset %s: bytes [%" PRIu64 ", %" PRIu64 ") after the header: %s",
                    f->key, r->dataset, r->start, r->start + r->length,
                    e.msg[0] ? e.msg : strerror(-rc));
    } else if ((rc = walk_blocks(buf, (size_t)r->length, r->start, h->sync, &records, &e)) < 0) {
        problem(f, "archive %s: dataset %s: %s", f->key, r->dataset, e.msg);
    }
    if (rc == 0 && records != r->records)
        problem(f, "archive %s: dataset %s: its blocks hold %" PRIu64 " records, %s says %" PRIu64,
                f->key, r->dataset, records, f->source, r->records);
    free(buf);
}

/* The header: parsed, and the recorded schema and codec. 0 with h and hdr
 * (free both), or -1 (reported). */
static int check_header(struct fsck *f, uint64_t real, struct bfs_ocf_header *h, uint8_t **hdr)
{
    const struct bfs_manifest_archive *a = &f->a;
    *hdr = NULL;
    if (a->header_length == 0 || a->header_length > BFS_OCF_MAX_HEADER || a->header_length > real) {
        problem(f, "archive %s: header length %" PRIu64 " is not within the archive", f->key,
                a->header_length);
        return -1;
    }
    *hdr = malloc((size_t)a->header_length);
    struct bfs_err e = {0};
    int rc = *hdr ? bfs_store_get_range(f->st, f->key, 0, a->header_length, *hdr, &e) : -ENOMEM;
    int parsed = 0;
    if (rc == 0)
        parsed = (rc = bfs_ocf_parse_header(*hdr, (size_t)a->header_length, h, &e)) == 0;
    if (rc == 0 && h->header_len != a->header_length)
        rc = bfs_err_set(&e, -EINVAL, "it is %zu bytes, %s says %" PRIu64, h->header_len, f->source,
                         a->header_length);
    char fp[17] = "";
    if (rc == 0)
        snprintf(fp, sizeof fp, "%016" PRIx64, bfs_ocf_schema_fingerprint(h->compiled));
    if (rc == 0 && (strcmp(fp, f->fp) != 0 || h->codec != a->codec))
        rc = bfs_err_set(&e, -EINVAL, "schema %s, codec %s; %s says schema %s, codec %s", fp,
                         bfs_codec_name(h->codec), f->source, f->fp, bfs_codec_name(a->codec));
    if (rc < 0) {
        problem(f, "archive %s: header: %s", f->key, e.msg[0] ? e.msg : strerror(-rc));
        if (parsed)
            bfs_ocf_header_free(h);
        free(*hdr);
        *hdr = NULL;
        return -1;
    }
    return 0;
}

/* Rows: after the header, within the archive, no overlap, one per dataset. */
static void check_rows(struct fsck *f, uint64_t real, const struct bfs_ocf_header *h,
                       const uint8_t *hdr)
{
    qsort(f->rows, f->n, sizeof *f->rows, cmp_rows);
    json_t *seen = json_object();
    uint64_t prev_end = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < f->n; i++) {
        const struct row *r = &f->rows[i];
        uint64_t end = r->start + r->length;
        int ok = 1;
        if (seen && json_object_get(seen, r->dataset))
            problem(f, "archive %s: dataset %s has two index rows", f->key, r->dataset);
        else if (seen)
            json_object_set_new(seen, r->dataset, json_true());
        if (r->length == 0 || end < r->start) {
            problem(f, "archive %s: dataset %s: empty or wrapping index row at byte %" PRIu64,
                    f->key, r->dataset, r->start);
            ok = 0;
        } else if (r->start < f->a.header_length) {
            problem(f,
                    "archive %s: dataset %s: bytes [%" PRIu64 ", %" PRIu64
                    ") start inside the header (%" PRIu64 " bytes)",
                    f->key, r->dataset, r->start, end, f->a.header_length);
            ok = 0;
        } else if (end > real) {
            problem(f,
                    "archive %s: dataset %s: bytes [%" PRIu64 ", %" PRIu64
                    ") end past the archive's end (%" PRIu64 " bytes)",
                    f->key, r->dataset, r->start, end, real);
            ok = 0;
        }
        if (prev && r->start < prev_end)
            problem(f,
                    "archive %s: datasets %s and %s: bytes [%" PRIu64 ", %" PRIu64
                    ") are indexed twice (the rows overlap)",
                    f->key, prev, r->dataset, r->start, prev_end < end ? prev_end : end);
        if (ok && h)
            check_row(f, r, h, hdr);
        if (end > prev_end || !prev) {
            prev_end = end;
            prev = r->dataset;
        }
    }
    json_decref(seen);
}

static void check_archive(struct fsck *f)
{
    const struct bfs_manifest_archive *a = &f->a;
    f->counts->archives++;
    f->counts->index_rows += f->n;
    f->counts->bytes += a->size;
    if (json_object_get(f->archives, f->key))
        problem(f, "archive %s: indexed by two rolls", f->key);
    json_object_set_new(f->archives, f->key, json_true());
    json_t *obj = json_object_get(f->objects, f->key);
    if (!obj) {
        problem(f, "archive %s: missing from the store (%s: %" PRIu64 " bytes, %zu index rows)",
                f->key, f->source, a->size, f->n);
        return;
    }
    uint64_t real = (uint64_t)json_integer_value(obj);
    if (real != a->size) {
        problem(f, "archive %s: size %" PRIu64 ", %s says %" PRIu64, f->key, real, f->source,
                a->size);
    } else {
        uint8_t sha[32];
        if (hash_archive(f, real, sha) == 0 && memcmp(sha, a->sha256, 32) != 0) {
            char got[65], want[65];
            bfs_hex(sha, 32, got);
            bfs_hex(a->sha256, 32, want);
            problem(f, "archive %s: SHA-256 %s, %s says %s", f->key, got, f->source, want);
        }
    }
    struct bfs_ocf_header h;
    uint8_t *hdr = NULL;
    int have = check_header(f, real, &h, &hdr) == 0;
    check_rows(f, real, have ? &h : NULL, hdr);
    if (have)
        bfs_ocf_header_free(&h);
    free(hdr);
}

static void progress(struct fsck *f, int last)
{
    if (!f->o->progress)
        return;
    double now = bfs_metrics_now();
    if (!bfs_progress_update(&f->prog, f->counts->archives, now) && !last)
        return;
    char line[256];
    bfs_progress_text(&f->prog, now, line, sizeof line);
    fprintf(stderr, "\r%-79.200s%s", line, last ? "\n" : "");
    fflush(stderr);
}

static void flush_pending(struct fsck *f)
{
    if (!f->pending)
        return;
    check_archive(f);
    pending_free(f);
    progress(f, 0);
}

static int v_roll(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                  int64_t committed_at)
{
    (void)r;
    (void)seq;
    (void)epoch;
    (void)committed_at;
    flush_pending(ctx);
    return 0;
}

static int v_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct fsck *f = ctx;
    flush_pending(f);
    f->a = *a;
    f->key = strdup(a->key);
    f->table = strdup(a->table);
    f->period = strdup(a->period);
    f->fp = strdup(a->schema_fingerprint ? a->schema_fingerprint : "");
    f->pending = 1;
    if (!f->key || !f->table || !f->period || !f->fp)
        return -ENOMEM;
    f->a.key = f->key;
    f->a.table = f->table;
    f->a.period = f->period;
    f->a.schema_fingerprint = f->fp;
    return 0;
}

static int v_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct fsck *f = ctx;
    if (!f->pending)
        return -EIO;
    if (bfs_array_reserve(&f->rows, &f->cap, f->n + 1, sizeof *f->rows) < 0)
        return -ENOMEM;
    struct row *r = &f->rows[f->n];
    r->dataset = strdup(x->dataset);
    if (!r->dataset)
        return -ENOMEM;
    r->start = x->start;
    r->length = x->length;
    r->records = x->records;
    f->n++;
    return 0;
}

static int v_node(void *ctx, const char *node, int64_t epoch)
{
    (void)node;
    (void)epoch;
    flush_pending(ctx);
    return 0;
}

int bfs_fsck_check(struct bfs_catalog *cat, struct bfs_store *st, const struct bfs_fsck_opts *o,
                   bfs_fsck_problem_fn fn, void *arg, struct bfs_fsck_counts *counts,
                   struct bfs_err *err)
{
    memset(counts, 0, sizeof *counts);
    struct fsck f = {
        .st = st,
        .o = o,
        .source = o->source ? o->source : "catalog",
        .fn = fn,
        .arg = arg,
        .counts = counts,
        .objects = json_object(),
        .archives = json_object(),
        .buf = malloc(CHUNK),
    };
    int64_t upto = 0;
    struct bfs_catalog_counts cc = {0};
    int rc = f.objects && f.archives && f.buf ? 0 : -ENOMEM;
    if (rc == 0 && ((rc = bfs_catalog_ledger_state(cat, &upto, NULL)) < 0 ||
                    (rc = bfs_catalog_counts(cat, &cc)) < 0))
        bfs_err_set(err, rc, "cannot read the catalog: %s", strerror(-rc));
    if (rc == 0 && (rc = bfs_store_list(st, "", list_cb, f.objects, err)) < 0)
        bfs_err_prefix(err, "cannot list the store");
    if (rc == 0) {
        bfs_progress_begin(&f.prog, "fsck", BFS_PROGRESS_ITEMS, "archives", cc.archived_files, 1.0,
                           bfs_metrics_now());
        const struct bfs_checkpoint_visitor v = {
            .roll = v_roll, .archive = v_archive, .index = v_index, .node = v_node, .ctx = &f};
        rc = bfs_catalog_snapshot(cat, upto, &v);
        if (rc == 0)
            flush_pending(&f);
        else
            bfs_err_set(err, rc, "cannot read the index: %s", strerror(-rc));
        progress(&f, 1);
    }
    pending_free(&f);
    free(f.rows);
    free(f.buf);
    json_decref(f.objects);
    json_decref(f.archives);
    return rc;
}

/* ---- partitions (ls) ---- */

struct parts {
    json_t *by; /* "table\x01period" -> {archives, bytes, records, datasets: {dataset: true}} */
    json_t *cur;
    const char *table, *period;
};

static void add_int(json_t *o, const char *k, uint64_t v)
{
    json_object_set_new(o, k,
                        json_integer(json_integer_value(json_object_get(o, k)) + (json_int_t)v));
}

static int p_archive(void *ctx, const struct bfs_manifest_archive *a)
{
    struct parts *p = ctx;
    p->cur = NULL;
    if ((p->table && strcmp(p->table, a->table) != 0) ||
        (p->period && strcmp(p->period, a->period) != 0))
        return 0;
    char k[2 * BFS_STORE_KEY_MAX];
    snprintf(k, sizeof k, "%s\x01%s", a->table, a->period);
    json_t *e = json_object_get(p->by, k);
    if (!e) {
        e = json_pack("{s:s, s:s, s:I, s:I, s:I, s:{}}", "table", a->table, "period", a->period,
                      "archives", (json_int_t)0, "bytes", (json_int_t)0, "records", (json_int_t)0,
                      "datasets");
        if (!e || json_object_set_new(p->by, k, e) < 0)
            return -ENOMEM;
    }
    add_int(e, "archives", 1);
    add_int(e, "bytes", a->size);
    p->cur = e;
    return 0;
}

static int p_index(void *ctx, const struct bfs_manifest_index *x)
{
    struct parts *p = ctx;
    if (!p->cur)
        return 0;
    add_int(p->cur, "records", x->records);
    return json_object_set_new(json_object_get(p->cur, "datasets"), x->dataset, json_true()) < 0
               ? -ENOMEM
               : 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int bfs_fsck_partitions(struct bfs_catalog *cat, const char *table, const char *period,
                        int (*fn)(void *arg, const struct bfs_fsck_partition *p), void *arg)
{
    struct parts p = {.by = json_object(), .table = table, .period = period};
    int64_t upto = 0;
    int rc = p.by ? bfs_catalog_ledger_state(cat, &upto, NULL) : -ENOMEM;
    if (rc == 0) {
        const struct bfs_checkpoint_visitor v = {.archive = p_archive, .index = p_index, .ctx = &p};
        rc = bfs_catalog_snapshot(cat, upto, &v);
    }
    size_t n = rc == 0 ? json_object_size(p.by) : 0;
    const char **keys = calloc(n + 1, sizeof *keys);
    if (rc == 0 && !keys)
        rc = -ENOMEM;
    if (rc == 0) {
        size_t i = 0;
        const char *k;
        json_t *e;
        json_object_foreach(p.by, k, e) keys[i++] = k;
        /* "table\x01period": \x01 sorts below every character of a name,
         * so this is table order, then period order */
        qsort(keys, n, sizeof *keys, cmp_str);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *e = json_object_get(p.by, keys[i]);
        const struct bfs_fsck_partition part = {
            .table = json_string_value(json_object_get(e, "table")),
            .period = json_string_value(json_object_get(e, "period")),
            .datasets = json_object_size(json_object_get(e, "datasets")),
            .archives = (uint64_t)json_integer_value(json_object_get(e, "archives")),
            .bytes = (uint64_t)json_integer_value(json_object_get(e, "bytes")),
            .records = (uint64_t)json_integer_value(json_object_get(e, "records")),
        };
        rc = fn(arg, &part);
    }
    free(keys);
    json_decref(p.by);
    return rc;
}
