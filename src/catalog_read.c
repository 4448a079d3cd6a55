/* catalog_read.c - the read side: listing, dataset views (one read
 * transaction each), hot reads through incremental blob I/O, counts. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "catalog_int.h"

/* ---- listing ---- */

static int list_names(struct bfs_catalog *cat, enum rst which, const char *a, const char *b,
                      bfs_name_cb cb, void *ctx)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[which];
    if (a)
        bind_text(st, 1, a);
    if (b)
        bind_text(st, 2, b);
    int ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (!name) {
            ret = -ENOMEM;
            break;
        }
        if ((ret = cb(ctx, name)) != 0)
            break;
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = sql_fail(c->db, rc, "list");
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return ret;
}

int bfs_catalog_list_tables(struct bfs_catalog *cat, bfs_name_cb cb, void *ctx)
{
    return list_names(cat, R_TABLES, NULL, NULL, cb, ctx);
}

int bfs_catalog_list_periods(struct bfs_catalog *cat, const char *table, bfs_name_cb cb, void *ctx)
{
    return list_names(cat, R_PERIODS, table, NULL, cb, ctx);
}

int bfs_catalog_list_datasets(struct bfs_catalog *cat, const char *table, const char *period,
                              bfs_name_cb cb, void *ctx)
{
    return list_names(cat, R_DATASETS, table, period, cb, ctx);
}

int bfs_catalog_list_archives(struct bfs_catalog *cat, bfs_name_cb cb, void *ctx)
{
    return list_names(cat, R_ARCHIVES, NULL, NULL, cb, ctx);
}

static int exists(struct bfs_catalog *cat, enum rst which, const char *a, const char *b)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[which];
    bind_text(st, 1, a);
    if (b)
        bind_text(st, 2, b);
    rc = sqlite3_step(st);
    int ret = rc == SQLITE_ROW    ? 0
              : rc == SQLITE_DONE ? -ENOENT
                                  : sql_fail(c->db, rc, "look a name up");
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return ret;
}

int bfs_catalog_table_exists(struct bfs_catalog *cat, const char *table)
{
    return exists(cat, R_TABLE_EXISTS, table, NULL);
}

int bfs_catalog_period_exists(struct bfs_catalog *cat, const char *table, const char *period)
{
    return exists(cat, R_PERIOD_EXISTS, table, period);
}

/* ---- dataset views ---- */

void bfs_dataset_view_free(struct bfs_dataset_view *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        free(v->seg[i].key);
    free(v->seg);
    for (size_t i = 0; i < v->n_schemas; i++)
        free(v->schemas[i].json);
    free(v->schemas);
    bfs_partition_free(&v->part);
    memset(v, 0, sizeof *v);
}

static struct bfs_segment *add_segment(struct bfs_dataset_view *v, size_t *cap)
{
    if (v->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct bfs_segment *s = realloc(v->seg, ncap * sizeof *s);
        if (!s)
            return NULL;
        v->seg = s;
        *cap = ncap;
    }
    struct bfs_segment *s = &v->seg[v->n++];
    memset(s, 0, sizeof *s);
    return s;
}

/* The text of schema row id, on c: 0 (*json malloc'd), -ENOENT, -errno. */
static int schema_text(struct rconn *c, int64_t id, char **json, size_t *len)
{
    sqlite3_stmt *st = c->st[R_SCHEMA_JSON];
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    int e;
    if (rc == SQLITE_ROW) {
        *len = (size_t)sqlite3_column_bytes(st, 0);
        *json = dup_n(sqlite3_column_text(st, 0), *len);
        e = *json ? 0 : -ENOMEM;
    } else {
        e = rc == SQLITE_DONE ? -ENOENT : sql_fail(c->db, rc, "read a schema");
    }
    sqlite3_reset(st);
    return e;
}

/* Add the text of writer schema id to v->schemas, unless it is there. */
static int view_schema(struct rconn *c, struct bfs_dataset_view *v, int64_t id)
{
    for (size_t i = 0; i < v->n_schemas; i++)
        if (v->schemas[i].id == id)
            return 0;
    struct bfs_schema_text *t = realloc(v->schemas, (v->n_schemas + 1) * sizeof *t);
    if (!t)
        return -ENOMEM;
    v->schemas = t;
    t = &v->schemas[v->n_schemas];
    int e = schema_text(c, id, &t->json, &t->len);
    if (e == -ENOENT) {
        bfs_error("catalog: a segment's schema %" PRId64 " is missing", id);
        return -EIO;
    }
    if (e < 0)
        return e;
    t->id = id;
    v->n_schemas++;
    return 0;
}

/* Fill v inside the read transaction of c. */
static int read_view(struct rconn *c, const char *table, const char *period, const char *dataset,
                     struct bfs_dataset_view *v)
{
    int rc = bfs_cat_read_partition(c, table, period, &v->part);
    if (rc < 0)
        return rc;
    size_t cap = 0;
    uint64_t size = v->part.header_len;
    int64_t mtime = 0;
    for (int pass = 0; pass < 2; pass++) {
        int cold = pass == 0;
        sqlite3_stmt *st = c->st[cold ? R_COLD : R_HOT];
        bind_text(st, 1, table);
        bind_text(st, 2, period);
        bind_text(st, 3, dataset);
        int e = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            struct bfs_segment *s = add_segment(v, &cap);
            if (!s) {
                e = -ENOMEM;
                break;
            }
            s->id = sqlite3_column_int64(st, 0);
            if (cold) {
                s->kind = BFS_SEG_COLD;
                s->key = dup_n(sqlite3_column_text(st, 1), (size_t)sqlite3_column_bytes(st, 1));
                s->offset = (uint64_t)sqlite3_column_int64(st, 2);
                s->length = (uint64_t)sqlite3_column_int64(st, 3);
                s->records = (uint64_t)sqlite3_column_int64(st, 4);
                if (!s->key) {
                    e = -ENOMEM;
                    break;
                }
            } else {
                s->kind = BFS_SEG_HOT;
                s->length = (uint64_t)sqlite3_column_int64(st, 1);
                s->records = (uint64_t)sqlite3_column_int64(st, 2);
                s->stored = sqlite3_column_int(st, 8) == 0;
                v->stored += (size_t)s->stored;
            }
            int64_t t = sqlite3_column_int64(st, cold ? 5 : 3);
            if (t > mtime)
                mtime = t;
            int b = cold ? 6 : 4; /* schema_id, row, conv_schema, conv_length */
            s->schema_id = sqlite3_column_int64(st, b);
            s->row = sqlite3_column_int64(st, b + 1);
            if (s->schema_id == v->part.schema_id) {
                s->vlength = s->length;
                s->vknown = 1;
            } else if (sqlite3_column_type(st, b + 2) == SQLITE_INTEGER &&
                       sqlite3_column_int64(st, b + 2) == v->part.schema_id) {
                s->vlength = (uint64_t)sqlite3_column_int64(st, b + 3);
                s->vknown = 1;
            } else {
                v->unknown++;
            }
            if (s->vknown)
                size += s->vlength;
            if (s->schema_id != v->part.schema_id && (e = view_schema(c, v, s->schema_id)) < 0)
                break;
        }
        if (e == 0 && rc != SQLITE_DONE)
            e = sql_fail(c->db, rc, "read a dataset");
        sqlite3_reset(st);
        if (e < 0)
            return e;
    }
    if (v->n == 0)
        return -ENOENT;
    v->size = size;
    v->mtime = mtime > v->part.merged_at ? mtime : v->part.merged_at;
    return 0;
}

int bfs_catalog_dataset(struct bfs_catalog *cat, const char *table, const char *period,
                        const char *dataset, struct bfs_dataset_view *v)
{
    memset(v, 0, sizeof *v);
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    int src = run(c->st[R_BEGIN]);
    if (src != SQLITE_OK) {
        rc = sql_fail(c->db, src, "begin a read");
    } else {
        rc = read_view(c, table, period, dataset, v);
        src = run(c->st[R_COMMIT]);
        if (src != SQLITE_OK && rc == 0)
            rc = sql_fail(c->db, src, "end a read");
    }
    bfs_cat_rrelease(cat, c);
    if (rc < 0)
        bfs_dataset_view_free(v);
    return rc;
}

int bfs_catalog_dataset_stat(struct bfs_catalog *cat, const char *table, const char *period,
                             const char *dataset, uint64_t *size, int64_t *mtime)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    /* One statement: one consistent snapshot. */
    sqlite3_stmt *st = c->st[R_STAT];
    bind_text(st, 1, table);
    bind_text(st, 2, period);
    bind_text(st, 3, dataset);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int64_t cold_n = sqlite3_column_int64(st, 1), hot_n = sqlite3_column_int64(st, 5);
        int64_t tc = sqlite3_column_int64(st, 4), th = sqlite3_column_int64(st, 8);
        *size = (uint64_t)sqlite3_column_int64(st, 0) + (uint64_t)sqlite3_column_int64(st, 2) +
                (uint64_t)sqlite3_column_int64(st, 6);
        *mtime = tc > th ? tc : th;
        int64_t tm = sqlite3_column_int64(st, 9); /* 0 (NULL): never merged */
        if (tm > *mtime)
            *mtime = tm;
        /* A hot row not packed yet is as unknown: the reader packs it
         * before anyone sees its length (reader.c). */
        int64_t unknown = sqlite3_column_int64(st, 3) + sqlite3_column_int64(st, 7) +
                          sqlite3_column_int64(st, 10);
        rc = cold_n + hot_n == 0 ? -ENOENT : unknown > 0 ? -EAGAIN : 0;
    } else if (rc == SQLITE_DONE) {
        rc = -ENOENT;
    } else {
        rc = sql_fail(c->db, rc, "stat a dataset");
    }
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

/* ---- schema versions ---- */

void bfs_versions_free(struct bfs_versions *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i].json);
    free(v->v);
    memset(v, 0, sizeof *v);
}

/* Step st (rows of schema id, text) into out->v. */
static int read_texts(struct rconn *c, sqlite3_stmt *st, struct bfs_versions *out)
{
    size_t cap = 0;
    int src, rc = 0;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        if (bfs_array_reserve(&out->v, &cap, out->n + 1, sizeof *out->v) < 0) {
            rc = -ENOMEM;
            break;
        }
        struct bfs_schema_text *t = &out->v[out->n];
        t->id = sqlite3_column_int64(st, 0);
        t->len = (size_t)sqlite3_column_bytes(st, 1);
        t->json = dup_n(sqlite3_column_text(st, 1), t->len);
        if (!t->json) {
            rc = -ENOMEM;
            break;
        }
        out->n++;
    }
    if (rc == 0 && src != SQLITE_DONE)
        rc = sql_fail(c->db, src, "read schema versions");
    sqlite3_reset(st);
    return rc;
}

int bfs_catalog_roll_versions(struct bfs_catalog *cat, const char *roll_id, const char *table,
                              const char *period, struct bfs_versions *out)
{
    memset(out, 0, sizeof *out);
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    for (int q = 0; rc == 0 && out->n == 0 && q < 2; q++) {
        sqlite3_stmt *st = c->st[q == 0 ? R_ROLL_VERSIONS : R_ROLL_ROW_SCHEMAS];
        bind_text(st, 1, roll_id);
        bind_text(st, 2, table);
        bind_text(st, 3, period);
        rc = read_texts(c, st, out);
    }
    bfs_cat_rrelease(cat, c);
    if (rc < 0)
        bfs_versions_free(out);
    return rc;
}

int bfs_catalog_partition_versions(struct bfs_catalog *cat, const char *table, const char *period,
                                   struct bfs_versions *out)
{
    memset(out, 0, sizeof *out);
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    struct bfs_partition p;
    int src = run(c->st[R_BEGIN]);
    if (src != SQLITE_OK) {
        bfs_cat_rrelease(cat, c);
        return sql_fail(c->db, src, "begin a read");
    }
    rc = bfs_cat_read_partition(c, table, period, &p);
    if (rc == 0) {
        out->vgen = p.vgen;
        out->merged_id = p.schema_id;
        sqlite3_stmt *st = c->st[R_VERSIONS];
        sqlite3_bind_int64(st, 1, p.id);
        rc = read_texts(c, st, out);
        bfs_partition_free(&p);
    }
    src = run(c->st[R_COMMIT]);
    if (src != SQLITE_OK && rc == 0)
        rc = sql_fail(c->db, src, "end a read");
    bfs_cat_rrelease(cat, c);
    if (rc < 0)
        bfs_versions_free(out);
    return rc;
}

int bfs_catalog_partition_has_version(struct bfs_catalog *cat, const char *table,
                                      const char *period, const char *fp)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_HAS_VERSION];
    bind_text(st, 1, table);
    bind_text(st, 2, period);
    bind_text(st, 3, fp);
    rc = sqlite3_step(st);
    int ret = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : sql_fail(c->db, rc, "find a version");
    sqlite3_reset(st);
    if (ret == 0) {
        struct bfs_partition p;
        int e = bfs_cat_read_partition(c, table, period, &p);
        if (e < 0)
            ret = e;
        else
            bfs_partition_free(&p);
    }
    bfs_cat_rrelease(cat, c);
    return ret;
}

int bfs_catalog_schema_json(struct bfs_catalog *cat, int64_t id, char **json, size_t *len)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    rc = schema_text(c, id, json, len);
    bfs_cat_rrelease(cat, c);
    return rc;
}

/* Read len bytes at off of the blob open in *bp (row id), opening it on c or
 * moving it to row id (sqlite3_blob_reopen: no statement compiled again). */
static int blob_read(struct rconn *c, sqlite3_blob **bp, int64_t *bid, int64_t id, uint64_t off,
                     void *buf, size_t len)
{
    int src = SQLITE_OK;
    if (!*bp)
        src = sqlite3_blob_open(c->db, "main", "buffer_data", "data", id, 0, bp);
    else if (*bid != id)
        src = sqlite3_blob_reopen(*bp, id);
    if (src != SQLITE_OK) {
        /* the handle is unusable after a failed reopen */
        sqlite3_blob_close(*bp);
        *bp = NULL;
        /* A missing row is SQLITE_ERROR with "no such rowid: N". */
        if ((src & 0xff) == SQLITE_ERROR &&
            strncmp(sqlite3_errmsg(c->db), "no such rowid", 13) == 0)
            return -ENOENT;
        return sql_fail(c->db, src, "open a buffer row");
    }
    *bid = id;
    uint64_t size = (uint64_t)sqlite3_blob_bytes(*bp);
    if (off > size || len > size - off) {
        bfs_error("catalog: read of %zu bytes at %" PRIu64 " of buffer row %" PRId64 " (%" PRIu64
                  " bytes)",
                  len, off, id, size);
        return -EINVAL;
    }
    if (len > 0 && (src = sqlite3_blob_read(*bp, buf, (int)len, (int)off)) != SQLITE_OK)
        return sql_fail(c->db, src, "read a buffer row");
    return 0;
}

int bfs_catalog_read_hot(struct bfs_catalog *cat, int64_t id, uint64_t off, void *buf, size_t len)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_blob *b = NULL;
    int64_t bid = 0;
    rc = blob_read(c, &b, &bid, id, off, buf, len);
    sqlite3_blob_close(b);
    bfs_cat_rrelease(cat, c);
    return rc;
}

/* A hot reader reads catalog.db through a memory map (PRAGMA mmap_size on its
 * connection): SQLite then hands out pages of the map instead of reading each
 * overflow page of a blob into its cache with a pread of its own (a 1 GiB
 * roll: 262,144 preads and as many copies fewer; docs/bench.md, 2026-12-02
 * (3)). The map's pages count in the daemon's RSS (and its OOM score) once
 * touched, and more of them than the bytes read: the kernel maps the 64 KiB
 * around each page faulted in (fault-around), so rows of 100 bytes, one per
 * leaf page, touched 50 MB of map per 4 MiB read. The reader therefore looks
 * at the process's resident file pages (/proc/self/statm) after every
 * HOT_MAP_CHECK bytes read (a read counts at least HOT_READ_MIN), and once the
 * map has added BFS_HOT_MAP_WINDOW to them it closes the blob (SQLite keeps
 * its map while a page of it is in use) and drops the map and makes it again.
 * The map pays for rows of several overflow pages only: rows of 100 bytes, many
 * to a leaf page, are hits in SQLite's own cache without it, and with it a
 * roll of 10^6 of them took 19 s to build instead of 7 (not profiled: SQLite
 * fetches a page from the map at each access, where it hit its cache). So the
 * reader maps only while the rows it has read are HOT_MAP_ROW long on
 * average, decided at each look and at each acquire (none at first).
 * A release drops it before the connection goes back to the pool, where other
 * readers read with pread; without /proc the reader reads with pread too. An
 * I/O error under the map is a SIGBUS, not an error code: the daemon dies in
 * the middle of a roll's build, which the roll protocol recovers at the next
 * mount (design.md, "Roll"). */
#define HOT_MAP_SIZE  "2147418112" /* SQLite's largest (SQLITE_MAX_MMAP_SIZE) */
#define HOT_MAP_CHECK (256u << 10)
#define HOT_READ_MIN  4096u
#define HOT_MAP_ROW   (16u << 10)

struct bfs_hot_reader {
    struct bfs_catalog *cat;
    struct rconn *c; /* held while b is open */
    sqlite3_blob *b;
    int64_t id;
    int statm;       /* /proc/self/statm, -1: no map */
    long page;       /* bytes a page */
    long base;       /* resident file pages when the map was made */
    uint64_t looked; /* bytes read since the last look at statm */
    int mapped;      /* the connection reads through the map */
    uint64_t rows;   /* rows read from (reads of a row other than the last one) */
    uint64_t bytes;  /* bytes read */
};

/* Resident file-backed (and shared) pages of the process: statm's third
 * field. -1 if it cannot be read. */
static long file_pages(const struct bfs_hot_reader *r)
{
    char b[128];
    ssize_t n = pread(r->statm, b, sizeof b - 1, 0);
    long size, resident, shared;
    if (n <= 0)
        return -1;
    b[n] = 0;
    return sscanf(b, "%ld %ld %ld", &size, &resident, &shared) == 3 ? shared : -1;
}

static int hot_map(struct bfs_hot_reader *r, int on)
{
    int src =
        sqlite3_exec(r->c->db, on ? "PRAGMA mmap_size = " HOT_MAP_SIZE : "PRAGMA mmap_size = 0",
                     NULL, NULL, NULL);
    if (src != SQLITE_OK)
        return sql_fail(r->c->db, src, on ? "map the catalog" : "unmap the catalog");
    r->mapped = on;
    if (on) /* nothing of it touched yet */
        r->base = file_pages(r);
    return 0;
}

/* Whether the rows read so far are large enough for the map to pay. */
static int hot_wants_map(const struct bfs_hot_reader *r)
{
    return r->statm >= 0 && r->rows > 0 && r->bytes / r->rows >= HOT_MAP_ROW;
}

/* After HOT_MAP_CHECK bytes: map or unmap as the rows' mean size says, and
 * once the map has grown the resident file pages by a window, drop it and
 * make it again. The blob is closed first (it ends its read transaction; the
 * caller's rows stay). */
static int hot_look(struct bfs_hot_reader *r)
{
    r->looked = 0;
    int want = hot_wants_map(r);
    if (want == r->mapped) {
        if (!want)
            return 0;
        long now = file_pages(r); /* unknown counts as a full window: the map stays bounded */
        if (now >= 0 && r->base >= 0 && (now - r->base) * r->page < (long)BFS_HOT_MAP_WINDOW)
            return 0;
    }
    sqlite3_blob_close(r->b);
    r->b = NULL;
    int rc = r->mapped ? hot_map(r, 0) : 0;
    return rc < 0 || !want ? rc : hot_map(r, 1);
}

int bfs_catalog_hot_reader(struct bfs_catalog *cat, struct bfs_hot_reader **out)
{
    struct bfs_hot_reader *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->cat = cat;
    r->statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    r->page = sysconf(_SC_PAGESIZE);
    if (r->statm >= 0 && (r->page <= 0 || file_pages(r) < 0)) {
        close(r->statm);
        r->statm = -1;
    }
    if (r->statm < 0)
        bfs_debug("catalog: no /proc/self/statm: the roll reads the catalog with pread");
    *out = r;
    return 0;
}

int bfs_catalog_hot_read(struct bfs_hot_reader *r, int64_t id, uint64_t off, void *buf, size_t len)
{
    int rc = 0;
    if (!r->c) {
        if ((rc = bfs_cat_racquire(r->cat, &r->c)) < 0)
            return rc;
        r->looked = 0;
        if (hot_wants_map(r))
            rc = hot_map(r, 1);
    } else if (r->looked >= HOT_MAP_CHECK) {
        rc = hot_look(r);
    }
    if (rc == 0) {
        r->rows += id != r->id; /* ids start at 1 */
        r->bytes += len;
        r->looked += len > HOT_READ_MIN ? len : HOT_READ_MIN;
        rc = blob_read(r->c, &r->b, &r->id, id, off, buf, len);
    }
    if (rc < 0)
        bfs_catalog_hot_release(r);
    return rc;
}

void bfs_catalog_hot_release(struct bfs_hot_reader *r)
{
    if (!r || !r->c)
        return;
    sqlite3_blob_close(r->b); /* ends its read transaction */
    r->b = NULL;
    if (r->mapped && hot_map(r, 0) < 0) /* said; a connection still mapped is not pooled */
        bfs_cat_rdiscard(r->cat, r->c);
    else
        bfs_cat_rrelease(r->cat, r->c);
    r->c = NULL;
    r->mapped = 0;
}

void bfs_catalog_hot_reader_free(struct bfs_hot_reader *r)
{
    if (!r)
        return;
    bfs_catalog_hot_release(r);
    if (r->statm >= 0)
        close(r->statm);
    free(r);
}

int bfs_catalog_counts(struct bfs_catalog *cat, struct bfs_catalog_counts *out)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_COUNTS];
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->buffer_uploads = (uint64_t)sqlite3_column_int64(st, 0);
        out->buffer_bytes = (uint64_t)sqlite3_column_int64(st, 1);
        out->archived_files = (uint64_t)sqlite3_column_int64(st, 2);
        out->pack_pending = (uint64_t)sqlite3_column_int64(st, 3);
        bfs_catalog_group_sizes(cat, out->group_sizes);
        bfs_catalog_wal_counts(cat, &out->wal_restarts, &out->wal_inline_checkpoints);
        rc = 0;
    } else {
        rc = sql_fail(c->db, rc == SQLITE_DONE ? SQLITE_CORRUPT : rc, "counts");
    }
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

/* The rows' ids are commit order (AUTOINCREMENT), so the first row is the
 * oldest: one rowid lookup. Prepared per call (a scrape's rate), so the
 * read pool's statement table stays as it is. */
int bfs_catalog_oldest_buffered(struct bfs_catalog *cat, int64_t *created_at)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(c->db, "SELECT created_at FROM buffer_rows ORDER BY id LIMIT 1", -1,
                            &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *created_at = sqlite3_column_int64(st, 0);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = -ENOENT;
    } else {
        rc = sql_fail(c->db, rc, "oldest buffered upload");
    }
    sqlite3_finalize(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}
