/* test_rewrite.c - the partition rewrite (rewrite.h) against a model.
 *
 * A "partition" here is a few source archives in an in-memory store
 * (testenv's memstore, which counts and logs the ranged GETs), each the layout
 * header of its schema and datasets' blocks of real records: the target
 * schema M (a long and a nullable string) or an older version W (the long
 * only), whose blocks the rewrite converts. The model of every dataset is the
 * concatenation of its segments' bytes: as stored for sources in M, converted
 * with bfs_conv_block (the reader's conversion) for sources in W. Each output
 * archive is checked as a whole (layout header, whole blocks with the target
 * sync, records decoded by ocf.c, SHA-256 of the file as handed), each
 * dataset's ranges against the model, the split rule of archive_max_bytes,
 * the number of GETs, and that nothing is left in the work directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/evolve.h"
#include "battlefs/fsutil.h"
#include "battlefs/ocf.h"
#include "battlefs/rewrite.h"
#include "battlefs/sha256.h"
#include "battlefs/store.h"
#include "testblock.h"
#include "testenv.h"

static const char W_JSON[] = "{\"type\":\"record\",\"name\":\"R\",\"fields\":["
                             "{\"name\":\"a\",\"type\":\"long\"}]}";
static const char M_JSON[] = "{\"type\":\"record\",\"name\":\"R\",\"fields\":["
                             "{\"name\":\"a\",\"type\":\"long\"},"
                             "{\"name\":\"b\",\"type\":[\"null\",\"string\"],\"default\":null}]}";
static const uint8_t M_SYNC[16] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
                                   0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
static const uint8_t W_SYNC[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
#define M_ID 7
#define W_ID 3

/* ---- sources and segments ---- */

#define MAX_SRC 8

struct tseg {
    char ds[40];
    size_t src, order; /* order: of creation (the file order within a dataset) */
    uint64_t start, length, records;
    int64_t at;
};

struct part {
    enum bfs_codec codec;
    struct memstore *ms;
    struct bfs_store *store; /* another store the sources are in (file://), or NULL: ms */
    struct bfs_buf header;   /* the target layout (M) */
    struct bfs_rw_source src[MAX_SRC];
    char keys[MAX_SRC][64];
    struct bfs_buf bytes[MAX_SRC];
    size_t n_src;
    struct tseg *seg;
    size_t n_seg, cap_seg;
};

static void put_long(struct bfs_buf *b, int64_t v)
{
    assert_int_equal(bfs_buf_put_long(b, v), 0);
}

/* One block of n records (M: a long and a string of seed-dependent length;
 * W: the long) in the partition's codec with sync. */
static void make_block(struct part *p, int old, unsigned n, unsigned seed, struct bfs_buf *out)
{
    struct bfs_buf plain = {0};
    for (unsigned i = 0; i < n; i++) {
        put_long(&plain, (int64_t)seed * 1000 + i);
        if (!old) {
            unsigned len = (seed * 7 + i * 13) % 40;
            put_long(&plain, 1);
            put_long(&plain, len);
            for (unsigned k = 0; k < len; k++)
                assert_int_equal(bfs_buf_append(&plain, &"abcdefghijklmnopqrstuvwxyz"[k % 26], 1),
                                 0);
        }
    }
    tblock_make(p->codec, plain.data, plain.len, n, old ? W_SYNC : M_SYNC, out);
    bfs_buf_free(&plain);
}

static void part_init(struct part *p, enum bfs_codec codec)
{
    memset(p, 0, sizeof *p);
    p->codec = codec;
    p->ms = memstore_new(0);
    assert_int_equal(bfs_ocf_layout_header(M_JSON, strlen(M_JSON), codec, M_SYNC, &p->header), 0);
}

/* A new source archive (old: in W). Returns its index. */
static size_t add_source(struct part *p, int old)
{
    assert_true(p->n_src < MAX_SRC);
    size_t i = p->n_src++;
    snprintf(p->keys[i], sizeof p->keys[i], "t/2025-01-01/r%zu-0.avro", i);
    const char *json = old ? W_JSON : M_JSON;
    assert_int_equal(
        bfs_ocf_layout_header(json, strlen(json), p->codec, old ? W_SYNC : M_SYNC, &p->bytes[i]),
        0);
    p->src[i] = (struct bfs_rw_source){.key = p->keys[i],
                                       .schema_id = old ? W_ID : M_ID,
                                       .schema_json = json,
                                       .schema_len = strlen(json)};
    return i;
}

/* Append a segment of dataset ds to source s: blocks blocks of records
 * records each. */
static struct tseg *add_segment(struct part *p, size_t s, const char *ds, unsigned blocks,
                                unsigned records, unsigned seed)
{
    assert_int_equal(bfs_array_reserve(&p->seg, &p->cap_seg, p->n_seg + 1, sizeof *p->seg), 0);
    struct tseg *g = &p->seg[p->n_seg];
    memset(g, 0, sizeof *g);
    snprintf(g->ds, sizeof g->ds, "%s", ds);
    g->src = s;
    g->order = p->n_seg++;
    g->start = p->bytes[s].len;
    for (unsigned b = 0; b < blocks; b++)
        make_block(p, p->src[s].schema_id == W_ID, records, seed * 31 + b, &p->bytes[s]);
    g->length = p->bytes[s].len - g->start;
    g->records = (uint64_t)blocks * records;
    g->at = 1000 + (int64_t)seed;
    return g;
}

static int seg_cmp(const void *a, const void *b)
{
    const struct tseg *x = a, *y = b;
    int c = strcmp(x->ds, y->ds);
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

/* Put the sources into the store and sort the segments (dataset, file order). */
static void part_seal(struct part *p)
{
    for (size_t i = 0; i < p->n_src; i++) {
        memstore_set(p->ms, p->keys[i], p->bytes[i].data, p->bytes[i].len);
        p->src[i].size = p->bytes[i].len;
    }
    qsort(p->seg, p->n_seg, sizeof *p->seg, seg_cmp);
}

static void part_free(struct part *p)
{
    memstore_free(p->ms);
    bfs_buf_free(&p->header);
    for (size_t i = 0; i < MAX_SRC; i++)
        bfs_buf_free(&p->bytes[i]);
    free(p->seg);
}

/* The bytes segment g has in a dataset file (its blocks, converted if its
 * source is in W: bfs_conv_block, as the reader does). */
static void seg_bytes(struct part *p, const struct tseg *g, struct bfs_buf *out)
{
    const uint8_t *in = p->bytes[g->src].data + g->start;
    if (p->src[g->src].schema_id == M_ID) {
        if (g->length)
            assert_int_equal(bfs_buf_append(out, in, g->length), 0);
        return;
    }
    struct bfs_conv *c;
    struct bfs_err err = {0};
    assert_int_equal(
        bfs_conv_new(W_JSON, strlen(W_JSON), M_JSON, strlen(M_JSON), p->codec, M_SYNC, &c, &err),
        0);
    struct bfs_buf scratch = {0};
    size_t pos = 0;
    while (pos < g->length) {
        size_t span;
        assert_int_equal(bfs_ocf_block_span(in + pos, g->length - pos, &span), 0);
        assert_int_equal(bfs_conv_block(c, in + pos, span, out, &scratch, &err), 0);
        pos += span;
    }
    bfs_conv_free(c);
    bfs_buf_free(&scratch);
}

/* ---- the job's callbacks, recording what the rewrite hands over ---- */

#define MAX_ARCH 256

struct tarch {
    struct bfs_buf bytes;
    uint64_t header_length;
    size_t first_row, n_rows;
};

struct trow {
    char ds[40];
    size_t arch;
    uint64_t start, length, records;
    int64_t at;
};

struct ctx {
    struct part *p;
    size_t pos;    /* the next segment handed */
    int order_bad; /* hand segments of the first two datasets interleaved */
    struct tarch arch[MAX_ARCH];
    size_t n_arch;
    struct trow *row;
    size_t n_row, cap_row;
    int archive_rc_at; /* 1-based archive whose callback fails (0: none) */
    int index_rc_at;   /* 1-based index row whose callback fails (0: none) */
    int stop_at;       /* set stop when this archive (1-based) is handed */
    int keep;          /* leave the archive files in place (else read and remove them) */
    atomic_int stop;
    struct bfs_err *err; /* the rewrite's: a failing callback says why there */
    char paths[MAX_ARCH][256];
};

static int cb_next(void *arg, struct bfs_rw_segment *out)
{
    struct ctx *c = arg;
    if (c->pos >= c->p->n_seg)
        return 0;
    size_t i = c->pos++;
    if (c->order_bad && i == 1)
        i = c->p->n_seg - 1; /* a later dataset, then back */
    else if (c->order_bad && c->pos == c->p->n_seg)
        i = 1;
    const struct tseg *g = &c->p->seg[i];
    *out = (struct bfs_rw_segment){.dataset = g->ds,
                                   .source = g->src,
                                   .start = g->start,
                                   .length = g->length,
                                   .records = g->records,
                                   .uploaded_at = g->at};
    return 1;
}

static int cb_archive(void *arg, const struct bfs_rw_archive *a)
{
    struct ctx *c = arg;
    assert_true(c->n_arch < MAX_ARCH);
    assert_int_equal(a->n, c->n_arch);
    struct tarch *t = &c->arch[c->n_arch++];
    snprintf(c->paths[a->n], sizeof c->paths[0], "%s", a->path);
    read_whole(a->path, &t->bytes);
    assert_int_equal(t->bytes.len, a->size);
    uint8_t sha[32];
    assert_int_equal(bfs_sha256(t->bytes.data, t->bytes.len, sha), 0);
    assert_memory_equal(sha, a->sha256, 32);
    t->header_length = a->header_length;
    t->first_row = c->n_row;
    if (!c->keep)
        assert_int_equal(unlink(a->path), 0);
    if (c->stop_at == (int)c->n_arch)
        c->stop = 1;
    if (c->archive_rc_at != (int)c->n_arch)
        return 0;
    return bfs_err_set(c->err, -EIO, "put refused by the test");
}

static int cb_index(void *arg, const struct bfs_rw_index *x)
{
    struct ctx *c = arg;
    assert_true(c->n_arch > 0);
    assert_int_equal(bfs_array_reserve(&c->row, &c->cap_row, c->n_row + 1, sizeof *c->row), 0);
    struct trow *r = &c->row[c->n_row++];
    snprintf(r->ds, sizeof r->ds, "%s", x->dataset);
    r->arch = c->n_arch - 1;
    r->start = x->start;
    r->length = x->length;
    r->records = x->records;
    r->at = x->uploaded_at;
    c->arch[r->arch].n_rows++;
    return c->index_rc_at == (int)c->n_row ? -EPIPE : 0;
}

static void ctx_free(struct ctx *c)
{
    for (size_t i = 0; i < MAX_ARCH; i++)
        bfs_buf_free(&c->arch[i].bytes);
    free(c->row);
}

/* ---- running one ---- */

struct run {
    char dir[64];
    struct bfs_rw_job job;
    struct bfs_rw_stats st;
    struct bfs_err err;
    int rc;
    unsigned gets; /* store GETs of the rewrite */
};

static void make_dir(struct run *r)
{
    snprintf(r->dir, sizeof r->dir, "/tmp/bfs-rw-XXXXXX");
    assert_non_null(mkdtemp(r->dir));
}

static size_t dir_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    const struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    const struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
}

static void run_job(struct run *r, struct part *p, struct ctx *c, uint64_t max,
                    struct bfs_conv_cache *convs)
{
    if (!r->dir[0])
        make_dir(r);
    c->p = p;
    c->err = &r->err;
    r->job = (struct bfs_rw_job){
        .store = p->store ? p->store : &p->ms->base,
        .convs = convs,
        .sources = p->src,
        .n_sources = p->n_src,
        .header = p->header.data,
        .header_len = p->header.len,
        .schema_id = M_ID,
        .schema_json = M_JSON,
        .schema_len = strlen(M_JSON),
        .codec = p->codec,
        .archive_max_bytes = max,
        .work_dir = r->dir,
        .name = "c1",
        .next = cb_next,
        .archive = cb_archive,
        .index = cb_index,
        .ctx = c,
        .stop = &c->stop,
    };
    memcpy(r->job.sync, M_SYNC, 16);
    unsigned g0 = memstore_gets(p->ms);
    r->rc = bfs_rewrite(&r->job, &r->st, &r->err);
    r->gets = memstore_gets(p->ms) - g0;
    if (p->store)
        r->gets = (unsigned)r->st.gets;
    assert_int_equal(r->st.gets, r->gets);
}

/* Every output archive is the target header + whole blocks with the target
 * sync that ocf.c decodes; its rows cover it in order. Returns the records. */
static uint64_t check_archive(struct part *p, struct ctx *c, size_t a)
{
    const struct tarch *t = &c->arch[a];
    assert_int_equal(t->header_length, p->header.len);
    assert_true(t->bytes.len >= p->header.len);
    assert_memory_equal(t->bytes.data, p->header.data, p->header.len);
    struct bfs_ocf_header h;
    struct bfs_err err = {0};
    assert_int_equal(bfs_ocf_parse_header(t->bytes.data, t->bytes.len, &h, &err), 0);
    uint64_t records = 0;
    int rc = bfs_ocf_process(t->bytes.data, t->bytes.len, &h, M_SYNC, p->codec, NULL, &records, 0,
                             0, &err);
    if (rc != 0)
        fail_msg("archive %zu: %s", a, err.msg);
    bfs_ocf_header_free(&h);
    uint64_t pos = p->header.len, rec = 0;
    assert_true(t->n_rows >= 1);
    for (size_t i = t->first_row; i < t->first_row + t->n_rows; i++) {
        assert_int_equal(c->row[i].arch, a);
        assert_int_equal(c->row[i].start, pos);
        pos += c->row[i].length;
        rec += c->row[i].records;
    }
    assert_int_equal(pos, t->bytes.len);
    assert_int_equal(rec, records);
    return records;
}

/* The whole output against the model; max: the job's archive_max_bytes. */
static void check_output(struct part *p, struct ctx *c, const struct run *r, uint64_t max)
{
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->st.archives, c->n_arch);
    assert_int_equal(r->st.datasets, c->n_row);
    assert_int_equal(r->st.segments, p->n_seg);
    uint64_t written = 0, records = 0, want_records = 0, converted = 0;
    for (size_t a = 0; a < c->n_arch; a++) {
        records += check_archive(p, c, a);
        written += c->arch[a].bytes.len;
    }
    assert_int_equal(r->st.bytes_written, written);
    for (size_t i = 0; i < p->n_seg; i++) {
        want_records += p->seg[i].records;
        converted += p->src[p->seg[i].src].schema_id != M_ID && p->seg[i].length;
    }
    assert_int_equal(records, want_records);
    assert_int_equal(r->st.converted, converted);
    /* Each dataset: its rows, in order, hold the model's bytes. */
    struct bfs_buf want = {0}, got = {0};
    size_t row = 0;
    for (size_t i = 0; i < p->n_seg;) {
        size_t j = i;
        bfs_buf_reset(&want);
        uint64_t rec = 0, largest = 0;
        int64_t at = 0;
        for (; j < p->n_seg && !strcmp(p->seg[j].ds, p->seg[i].ds); j++) {
            size_t before = want.len;
            seg_bytes(p, &p->seg[j], &want);
            rec += p->seg[j].records;
            if (want.len - before > largest)
                largest = want.len - before;
            if (p->seg[j].at > at)
                at = p->seg[j].at;
        }
        bfs_buf_reset(&got);
        uint64_t grec = 0;
        size_t rows = 0;
        int64_t gat = 0;
        for (; row < c->n_row && !strcmp(c->row[row].ds, p->seg[i].ds); row++, rows++) {
            const struct trow *x = &c->row[row];
            const struct tarch *t = &c->arch[x->arch];
            if (x->length)
                assert_int_equal(bfs_buf_append(&got, t->bytes.data + x->start, x->length), 0);
            grec += x->records;
            if (x->at > gat)
                gat = x->at;
            /* An archive over the maximum holds one segment (larger than max
             * less the header): its one row, no larger than the largest. */
            if (t->bytes.len > max) {
                assert_int_equal(t->n_rows, 1);
                assert_true(x->length <= largest && x->length + p->header.len > max);
            }
        }
        if (rows == 0)
            fail_msg("dataset %s has no row", p->seg[i].ds);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.data, want.data, want.len);
        assert_int_equal(grec, rec);
        assert_int_equal(gat, at);
        /* Split only when it cannot fit an empty archive. */
        if (want.len + p->header.len <= max)
            assert_int_equal(rows, 1);
        i = j;
    }
    assert_int_equal(row, c->n_row);
    bfs_buf_free(&want);
    bfs_buf_free(&got);
    /* Nothing left behind (the callbacks removed the archives). */
    if (!c->keep)
        assert_int_equal(dir_files(r->dir), 0);
}

/* ---- tests ---- */

/* Three sources with interleaved datasets (as three rolls of five datasets
 * leave them), copied into one archive: one range per dataset, the bytes its
 * segments had; each source read with one GET. Also checked with Python's
 * avro reader. */
static void test_copy_interleaved(void **state)
{
    (void)state;
    for (int codec = 0; codec < 2; codec++) {
        struct part p;
        part_init(&p, codec ? BFS_CODEC_DEFLATE : BFS_CODEC_NULL);
        for (unsigned s = 0; s < 3; s++) {
            size_t i = add_source(&p, 0);
            for (unsigned d = 0; d < 5; d++) {
                if ((d + s) % 4 == 3)
                    continue; /* not every dataset in every roll */
                char ds[16];
                snprintf(ds, sizeof ds, "ds%u", d);
                add_segment(&p, i, ds, 1 + (d + s) % 3, 5 + d, s * 10 + d);
            }
        }
        part_seal(&p);
        struct ctx c = {.keep = 1};
        struct run r = {0};
        run_job(&r, &p, &c, 1u << 20, NULL);
        if (r.rc)
            fail_msg("%d %s", r.rc, r.err.msg);
        check_output(&p, &c, &r, 1u << 20);
        assert_int_equal(c.n_arch, 1);
        assert_int_equal(c.n_row, 5);
        assert_int_equal(r.gets, 3);
        uint64_t src_bytes = 0;
        for (size_t i = 0; i < p.n_src; i++)
            src_bytes += p.bytes[i].len - p.header.len;
        assert_int_equal(r.st.bytes_read, src_bytes);
        /* Another reader agrees it is one Avro file with every record. */
        char cmd[1024];
        uint64_t want = 0;
        for (size_t i = 0; i < p.n_seg; i++)
            want += p.seg[i].records;
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import sys, avro.datafile, avro.io\n"
                 "n = sum(1 for _ in avro.datafile.DataFileReader(open(sys.argv[1], \"rb\"), "
                 "avro.io.DatumReader()))\n"
                 "sys.exit(0 if n == int(sys.argv[2]) else 1)' %s %llu",
                 c.paths[0], (unsigned long long)want);
        assert_int_equal(system(cmd), 0);
        rm_dir(r.dir);
        ctx_free(&c);
        part_free(&p);
    }
}

/* archive_max_bytes: whole datasets per archive, a new archive when the next
 * dataset does not fit, a dataset larger than an empty archive split at its
 * segment boundaries, a segment larger than the maximum alone. */
static void test_split(void **state)
{
    (void)state;
    struct part p;
    part_init(&p, BFS_CODEC_NULL);
    size_t a = add_source(&p, 0), b = add_source(&p, 0);
    for (unsigned d = 0; d < 12; d++) {
        char ds[16];
        snprintf(ds, sizeof ds, "d%02u", d);
        unsigned segs = d == 4 ? 8 : 1 + d % 3; /* d04: larger than an archive */
        for (unsigned k = 0; k < segs; k++)
            add_segment(&p, k % 2 ? b : a, ds, d == 9 && k == 0 ? 30 : 1 + k % 2, 6,
                        d * 100 + k); /* d09: one segment larger than an archive */
    }
    part_seal(&p);
    for (uint64_t max = 1500; max <= 6000; max += 1500) {
        struct ctx c = {0};
        struct run r = {0};
        run_job(&r, &p, &c, max, NULL);
        if (r.rc)
            fail_msg("%d %s", r.rc, r.err.msg);
        check_output(&p, &c, &r, max);
        assert_true(c.n_arch >= 3);
        size_t rows04 = 0, over = 0;
        uint64_t len04 = 0;
        for (size_t k = 0; k < c.n_row; k++)
            if (!strcmp(c.row[k].ds, "d04")) {
                rows04++;
                len04 += c.row[k].length;
            }
        for (size_t k = 0; k < c.n_arch; k++)
            over += c.arch[k].bytes.len > max;
        if (max == 1500)
            assert_true(len04 + p.header.len > max); /* the case is there */
        if (len04 + p.header.len > max)
            assert_true(rows04 >= 2); /* larger than an archive: split */
        uint64_t largest = 0;
        for (size_t k = 0; k < p.n_seg; k++)
            if (p.seg[k].length > largest)
                largest = p.seg[k].length;
        if (max == 1500)
            assert_true(largest + p.header.len > max);
        if (largest + p.header.len > max)
            assert_true(over >= 1); /* d09's first segment alone */
        /* Greedy: an archive was closed only because the next dataset (or,
         * splitting, segment) did not fit. */
        for (size_t i = 0; i + 1 < c.n_arch; i++) {
            const struct trow *next = &c.row[c.arch[i + 1].first_row];
            uint64_t total = 0;
            for (size_t k = 0; k < c.n_row; k++)
                if (!strcmp(c.row[k].ds, next->ds))
                    total += c.row[k].length;
            assert_true(c.arch[i].bytes.len + total > max ||
                        !strcmp(next->ds, c.row[c.arch[i].first_row + c.arch[i].n_rows - 1].ds));
        }
        rm_dir(r.dir);
        ctx_free(&c);
    }
    part_free(&p);
}

/* A source in an older schema is converted block by block to the bytes the
 * reader serves (bfs_conv_block), mixed with copied ones in one dataset. */
static void test_convert(void **state)
{
    (void)state;
    for (int codec = 0; codec < 2; codec++) {
        struct part p;
        part_init(&p, codec ? BFS_CODEC_DEFLATE : BFS_CODEC_NULL);
        size_t old = add_source(&p, 1), cur = add_source(&p, 0), old2 = add_source(&p, 1);
        for (unsigned d = 0; d < 6; d++) {
            char ds[16];
            snprintf(ds, sizeof ds, "x%u", d);
            add_segment(&p, old, ds, 1 + d % 3, 40 + d, d);
            if (d % 2)
                add_segment(&p, cur, ds, 2, 7, 50 + d);
            if (d % 3 == 0)
                add_segment(&p, old2, ds, 1, 9, 80 + d);
        }
        part_seal(&p);
        struct bfs_conv_cache *cc = NULL;
        if (codec)
            assert_int_equal(bfs_conv_cache_new(4, &cc), 0);
        static const uint64_t maxes[] = {700, 1400, 2800, 5600, 1u << 20};
        for (size_t m = 0; m < sizeof maxes / sizeof *maxes; m++) {
            uint64_t max = maxes[m];
            struct ctx c = {0};
            struct run r = {0};
            run_job(&r, &p, &c, max, cc);
            if (r.rc)
                fail_msg("%d %s", r.rc, r.err.msg);
            check_output(&p, &c, &r, max);
            assert_true(r.st.converted > 0);
            rm_dir(r.dir);
            ctx_free(&c);
        }
        bfs_conv_cache_free(cc);
        part_free(&p);
    }
}

/* A source whose schema does not convert to the target fails with EINVAL. */
static void test_convert_refused(void **state)
{
    (void)state;
    struct part p;
    part_init(&p, BFS_CODEC_NULL);
    size_t s = add_source(&p, 1);
    add_segment(&p, s, "a", 1, 3, 1);
    part_seal(&p);
    static const char bad[] = "{\"type\":\"record\",\"name\":\"R\",\"fields\":["
                              "{\"name\":\"a\",\"type\":\"string\"}]}";
    p.src[s].schema_json = bad;
    p.src[s].schema_len = strlen(bad);
    struct ctx c = {0};
    struct run r = {0};
    run_job(&r, &p, &c, 1u << 20, NULL);
    assert_int_equal(r.rc, -EINVAL);
    assert_non_null(strstr(r.err.msg, p.keys[s]));
    assert_int_equal(c.n_arch, 0);
    assert_int_equal(dir_files(r.dir), 0);
    rm_dir(r.dir);
    ctx_free(&c);
    part_free(&p);
}

/* Run a corrupted partition: the rewrite fails with -EINVAL naming the source
 * and leaves no file. what: 0 a bad sync, 1 a cut block, 2 a segment past
 * the object's end, 3 a block that does not convert, 4 out of order. */
static void corrupt_case(int what, uint64_t max)
{
    struct part p;
    part_init(&p, BFS_CODEC_NULL);
    size_t s = add_source(&p, what == 3), t = add_source(&p, 0);
    for (unsigned d = 0; d < 6; d++) {
        char ds[16];
        snprintf(ds, sizeof ds, "k%u", d);
        add_segment(&p, s, ds, 2, 5, d);
        add_segment(&p, t, ds, 1, 5, 10 + d);
    }
    /* The victim: the last dataset's segment in s (after some archives were
     * handed over when max is small). */
    struct tseg *v = NULL;
    for (size_t i = 0; i < p.n_seg; i++)
        if (p.seg[i].src == s)
            v = &p.seg[i];
    assert_non_null(v);
    if (!v)
        return;
    uint64_t bad_at = v->start;
    if (what == 0) {
        size_t first;
        assert_int_equal(bfs_ocf_block_span(p.bytes[s].data + v->start, v->length, &first), 0);
        bad_at = v->start + first; /* the second block */
        p.bytes[s].data[v->start + v->length - 3] ^= 0x40;
    } else if (what == 1) {
        v->length -= 5;
    } else if (what == 3) {
        size_t first;
        assert_int_equal(bfs_ocf_block_span(p.bytes[s].data + v->start, v->length, &first), 0);
        /* the first record's long runs over its block */
        memset(p.bytes[s].data + v->start + 2, 0xff, first - 18);
    }
    part_seal(&p);
    if (what == 2)
        for (size_t i = 0; i < p.n_seg; i++)
            if (p.seg[i].src == s && !strcmp(p.seg[i].ds, "k5"))
                p.seg[i].length = p.src[s].size - p.seg[i].start + 1;
    struct ctx c = {.order_bad = what == 4};
    struct run r = {0};
    run_job(&r, &p, &c, max, NULL);
    assert_int_equal(r.rc, -EINVAL);
    assert_int_equal(r.err.code, -EINVAL);
    if (what != 4) {
        if (!strstr(r.err.msg, p.keys[s]))
            fail_msg("case %d: %s", what, r.err.msg);
        char at[32];
        snprintf(at, sizeof at, "byte %llu", (unsigned long long)bad_at);
        if (what != 3 && what != 1 && !strstr(r.err.msg, at))
            fail_msg("case %d: %s (want %s)", what, r.err.msg, at);
    }
    assert_int_equal(dir_files(r.dir), 0);
    rm_dir(r.dir);
    ctx_free(&c);
    part_free(&p);
}

static void test_corrupt(void **state)
{
    (void)state;
    for (int what = 0; what < 5; what++) {
        corrupt_case(what, 1u << 20);
        corrupt_case(what, 400); /* archives handed over before the failure */
    }
}

/* A store error (a source missing) fails cleanly with the store's errno and
 * the key; so does a stale archive name (never truncated). */
static void test_store_error_and_stale(void **state)
{
    (void)state;
    struct part p;
    part_init(&p, BFS_CODEC_NULL);
    size_t s = add_source(&p, 0), t = add_source(&p, 0);
    add_segment(&p, s, "a", 1, 5, 1);
    add_segment(&p, s, "a2", 1, 5, 3);
    add_segment(&p, t, "b", 1, 5, 2);
    part_seal(&p);
    snprintf(p.keys[t], sizeof p.keys[t], "t/2025-01-01/gone.avro");
    struct ctx c = {0};
    struct run r = {0};
    run_job(&r, &p, &c, 200, NULL); /* "a", "a2" handed over, "b"'s archive removed */
    assert_int_equal(r.rc, -ENOENT);
    assert_non_null(strstr(r.err.msg, "gone.avro"));
    assert_int_equal(c.n_arch, 2);
    assert_int_equal(dir_files(r.dir), 0);
    ctx_free(&c);
    /* A stale c1-0.avro: EEXIST, the file left as it was. */
    snprintf(p.keys[t], sizeof p.keys[t], "t/2025-01-01/r%zu-0.avro", t);
    char path[256];
    snprintf(path, sizeof path, "%s/c1-0.avro", r.dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "stale", 5), 5);
    close(fd);
    struct ctx c2 = {0};
    run_job(&r, &p, &c2, 1u << 20, NULL);
    assert_int_equal(r.rc, -EEXIST);
    assert_non_null(strstr(r.err.msg, "c1-0.avro"));
    struct bfs_buf b = {0};
    read_whole(path, &b);
    assert_int_equal(b.len, 5);
    bfs_buf_free(&b);
    assert_int_equal(dir_files(r.dir), 1);
    rm_dir(r.dir);
    ctx_free(&c2);
    part_free(&p);
}

/* Read-ahead: 100 datasets of one 1 MiB source in one GET; two sources
 * interleaved, one GET each; a 20 MiB source in windows of BFS_RW_WINDOW; a
 * gap larger than the window (dead bytes) skipped with a new window. */
static void test_readahead(void **state)
{
    (void)state;
    struct part p;
    part_init(&p, BFS_CODEC_NULL);
    size_t s = add_source(&p, 0);
    for (unsigned d = 0; d < 100; d++) {
        char ds[16];
        snprintf(ds, sizeof ds, "r%03u", d);
        add_segment(&p, s, ds, 1, 400, d); /* about 10 KiB each */
    }
    part_seal(&p);
    assert_true(p.src[s].size > (900u << 10) && p.src[s].size < BFS_RW_WINDOW); /* ~1 MiB */
    struct ctx c = {0};
    struct run r = {0};
    run_job(&r, &p, &c, 64u << 20, NULL);
    check_output(&p, &c, &r, 64u << 20);
    assert_int_equal(r.gets, 1);
    assert_int_equal(r.st.bytes_read, p.src[s].size - p.header.len);
    assert_int_equal(r.st.segments, 100);
    /* Archives of 64 KiB: still one GET. */
    struct ctx c2 = {0};
    struct run r2 = {0};
    run_job(&r2, &p, &c2, 64u << 10, NULL);
    check_output(&p, &c2, &r2, 64u << 10);
    assert_true(c2.n_arch > 10);
    assert_int_equal(r2.gets, 1);
    rm_dir(r.dir);
    rm_dir(r2.dir);
    ctx_free(&c);
    ctx_free(&c2);
    part_free(&p);

    /* 20 MiB in one source: 3 GETs of at most 8 MiB; with a dead dataset of
     * 9 MiB in the middle, one more window after the gap and its bytes not
     * read. */
    for (int gap = 0; gap < 2; gap++) {
        part_init(&p, BFS_CODEC_NULL);
        s = add_source(&p, 0);
        for (unsigned d = 0; d < 20; d++) {
            char ds[16];
            snprintf(ds, sizeof ds, "big%02u", d);
            add_segment(&p, s, ds, 1, 40000, d); /* about 1 MB */
        }
        uint64_t dead = 0;
        if (gap) { /* drop big05..big13 (9 segments): dead bytes */
            size_t k = 0;
            for (size_t i = 0; i < p.n_seg; i++) {
                if (i >= 5 && i < 14)
                    dead += p.seg[i].length;
                else
                    p.seg[k++] = p.seg[i];
            }
            p.n_seg = k;
        }
        part_seal(&p);
        struct ctx c3 = {0};
        struct run r3 = {0};
        run_job(&r3, &p, &c3, 64u << 20, NULL);
        check_output(&p, &c3, &r3, 64u << 20);
        uint64_t body = p.src[s].size - p.header.len;
        if (!gap) {
            assert_int_equal(r3.gets, (body + BFS_RW_WINDOW - 1) / BFS_RW_WINDOW);
            assert_int_equal(r3.st.bytes_read, body);
        } else {
            assert_true(r3.gets <= 3);
            assert_true(r3.st.bytes_read < body - dead + BFS_RW_WINDOW);
        }
        rm_dir(r3.dir);
        ctx_free(&c3);
        part_free(&p);
    }
}

/* More segments in one dataset and more datasets in one archive than the
 * spools keep in memory. */
static void test_spools(void **state)
{
    (void)state;
    struct part p;
    part_init(&p, BFS_CODEC_NULL);
    size_t s = add_source(&p, 0), t = add_source(&p, 1);
    for (unsigned k = 0; k < 2600; k++)
        add_segment(&p, k % 3 ? s : t, "many", 1, 1, k);
    for (unsigned d = 0; d < 2600; d++) {
        char ds[16];
        snprintf(ds, sizeof ds, "z%04u", d);
        add_segment(&p, d % 5 ? s : t, ds, 1, 1, d);
    }
    part_seal(&p);
    struct ctx c = {0};
    struct run r = {0};
    run_job(&r, &p, &c, 64u << 20, NULL);
    if (r.rc)
        fail_msg("%d %s", r.rc, r.err.msg);
    check_output(&p, &c, &r, 64u << 20);
    assert_int_equal(c.n_arch, 1);
    assert_int_equal(c.n_row, 2601);
    rm_dir(r.dir);
    ctx_free(&c);
    part_free(&p);
}

/* job->stop: -ECANCELED between segments, the open archive removed; an
 * archive or index callback's error stops the rewrite and is returned. */
static void test_stop_and_callbacks(void **state)
{
    (void)state;
    struct part p;
    part_init(&p, BFS_CODEC_NULL);
    size_t s = add_source(&p, 0);
    for (unsigned d = 0; d < 10; d++) {
        char ds[16];
        snprintf(ds, sizeof ds, "s%u", d);
        add_segment(&p, s, ds, 2, 10, d);
    }
    part_seal(&p);
    /* Nothing to rewrite: no archive. */
    struct part empty;
    part_init(&empty, BFS_CODEC_NULL);
    struct ctx c0 = {0};
    struct run r0 = {0};
    run_job(&r0, &empty, &c0, 1u << 20, NULL);
    assert_int_equal(r0.rc, 0);
    assert_int_equal(c0.n_arch, 0);
    assert_int_equal(dir_files(r0.dir), 0);
    rm_dir(r0.dir);
    ctx_free(&c0);
    part_free(&empty);
    /* Stopped from the start. */
    struct ctx c = {0};
    c.stop = 1;
    struct run r = {0};
    run_job(&r, &p, &c, 1u << 20, NULL);
    assert_int_equal(r.rc, -ECANCELED);
    assert_int_equal(r.err.code, -ECANCELED);
    assert_int_equal(c.n_arch, 0);
    assert_int_equal(dir_files(r.dir), 0);
    ctx_free(&c);
    /* Stopped after the second archive: no third. */
    struct ctx c2 = {.stop_at = 2};
    run_job(&r, &p, &c2, 400, NULL);
    assert_int_equal(r.rc, -ECANCELED);
    assert_int_equal(c2.n_arch, 2);
    assert_int_equal(r.st.archives, 2);
    assert_int_equal(dir_files(r.dir), 0);
    ctx_free(&c2);
    /* The second archive refused: returned, that file is the caller's. */
    struct ctx c3 = {.archive_rc_at = 2, .keep = 1};
    run_job(&r, &p, &c3, 400, NULL);
    assert_int_equal(r.rc, -EIO);
    assert_int_equal(r.err.code, -EIO);
    assert_string_equal(r.err.msg, "put refused by the test");
    assert_int_equal(c3.n_arch, 2);
    assert_int_equal(c3.arch[1].n_rows, 0); /* no index rows after a refused archive */
    assert_int_equal(dir_files(r.dir), 2);  /* the two handed over, nothing else */
    assert_int_equal(unlink(c3.paths[0]), 0);
    assert_int_equal(unlink(c3.paths[1]), 0);
    ctx_free(&c3);
    /* An index row refused. */
    struct ctx c4 = {.index_rc_at = 2};
    run_job(&r, &p, &c4, 400, NULL);
    assert_int_equal(r.rc, -EPIPE);
    assert_non_null(strstr(r.err.msg, "index callback refused s1"));
    assert_int_equal(c4.n_row, 2);
    assert_int_equal(dir_files(r.dir), 0);
    ctx_free(&c4);
    rm_dir(r.dir);
    part_free(&p);
}

/* Many sources: windows shrink to BFS_RW_READAHEAD_MAX / n (at least 64 KiB),
 * and the output is the same. */
static void test_many_sources(void **state)
{
    (void)state;
    struct part p;
    part_init(&p, BFS_CODEC_NULL);
    for (unsigned i = 0; i < MAX_SRC; i++) {
        size_t s = add_source(&p, i == 3);
        for (unsigned d = 0; d < 8; d++) {
            char ds[16];
            snprintf(ds, sizeof ds, "m%u", d);
            add_segment(&p, s, ds, 1 + (i + d) % 2, 30, i * 8 + d);
        }
    }
    part_seal(&p);
    struct ctx c = {0};
    struct run r = {0};
    run_job(&r, &p, &c, 3000, NULL);
    if (r.rc)
        fail_msg("%d %s", r.rc, r.err.msg);
    check_output(&p, &c, &r, 3000);
    assert_int_equal(r.gets, MAX_SRC);
    rm_dir(r.dir);
    ctx_free(&c);
    part_free(&p);
}

/* The same on a file:// store. */
static void test_file_store(void **state)
{
    (void)state;
    struct part p;
    part_init(&p, BFS_CODEC_DEFLATE);
    for (unsigned s = 0; s < 3; s++) {
        size_t i = add_source(&p, s == 1);
        for (unsigned d = 0; d < 4; d++) {
            char ds[16];
            snprintf(ds, sizeof ds, "f%u", d);
            add_segment(&p, i, ds, 1 + d % 2, 20, s * 10 + d);
        }
    }
    part_seal(&p);
    char root[64] = "/tmp/bfs-rwstore-XXXXXX", dir[128];
    assert_non_null(mkdtemp(root));
    snprintf(dir, sizeof dir, "%s/t/2025-01-01", root);
    assert_int_equal(bfs_mkdirs(dir, 0700), 0);
    for (size_t i = 0; i < p.n_src; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", root, p.keys[i]);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(p.bytes[i].data, 1, p.bytes[i].len, f), p.bytes[i].len);
        assert_int_equal(fclose(f), 0);
    }
    assert_int_equal(bfs_store_file_open(root, &p.store), 0);
    struct ctx c = {0};
    struct run r = {0};
    run_job(&r, &p, &c, 1500, NULL);
    if (r.rc)
        fail_msg("%d %s", r.rc, r.err.msg);
    check_output(&p, &c, &r, 1500);
    assert_int_equal(r.gets, 3);
    bfs_store_close(p.store);
    for (size_t i = 0; i < p.n_src; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", root, p.keys[i]);
        assert_int_equal(unlink(path), 0);
    }
    assert_int_equal(rmdir(dir), 0);
    snprintf(dir, sizeof dir, "%s/t", root);
    assert_int_equal(rmdir(dir), 0);
    rm_dir(root);
    rm_dir(r.dir);
    ctx_free(&c);
    part_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_interleaved),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_convert),
        cmocka_unit_test(test_convert_refused),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_store_error_and_stale),
        cmocka_unit_test(test_readahead),
        cmocka_unit_test(test_spools),
        cmocka_unit_test(test_stop_and_callbacks),
        cmocka_unit_test(test_many_sources),
        cmocka_unit_test(test_file_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
