/* catalog_ingest.c - partitions, their layout cache, and upload commits
 * through the group commit (see catalog_int.h for the locking). */
#include <inttypes.h>
#include <time.h>

#include "catalog_int.h"

/* ---- partitions ---- */

void bfs_partition_free(struct bfs_partition *p)
{
    if (!p)
        return;
    free(p->schema_json);
    free(p->canonical);
    free(p->header);
    memset(p, 0, sizeof *p);
}

/* Read the partition row with R_PARTITION on c. 0, -ENOENT, -errno. */
int bfs_cat_read_partition(struct rconn *c, const char *table, const char *period,
                           struct bfs_partition *p)
{
    memset(p, 0, sizeof *p);
    sqlite3_stmt *st = c->st[R_PARTITION];
    bind_text(st, 1, table);
    bind_text(st, 2, period);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return -ENOENT;
    }
    if (rc != SQLITE_ROW) {
        int e = sql_fail(c->db, rc, "read partition");
        sqlite3_reset(st);
        return e;
    }
    int e = 0;
    p->id = sqlite3_column_int64(st, 0);
    p->schema_id = sqlite3_column_int64(st, 1);
    const char *codec = (const char *)sqlite3_column_text(st, 2);
    if (!codec || codec_from_text(codec, &p->codec) < 0)
        e = -EIO;
    if (e == 0 && sqlite3_column_bytes(st, 3) != 16)
        e = -EIO;
    if (e == 0)
        memcpy(p->sync, sqlite3_column_blob(st, 3), 16);
    if (e == 0) {
        const void *json = sqlite3_column_text(st, 4);
        p->schema_len = (size_t)sqlite3_column_bytes(st, 4);
        const void *hdr = sqlite3_column_blob(st, 5);
        p->header_len = (size_t)sqlite3_column_bytes(st, 5);
        p->schema_json = dup_n(json, p->schema_len);
        p->header = malloc(p->header_len ? p->header_len : 1);
        if (!p->schema_json || !p->header)
            e = -ENOMEM;
        else if (p->header_len)
            memcpy(p->header, hdr, p->header_len);
    }
    if (e == 0) {
        const char *fp = (const char *)sqlite3_column_text(st, 6);
        if (!fp || strlen(fp) != 16)
            e = -EIO;
        else
            memcpy(p->fingerprint, fp, 17);
        p->vgen = sqlite3_column_int64(st, 7);
        p->merged_at = sqlite3_column_int64(st, 8);
        p->canonical_len = (size_t)sqlite3_column_bytes(st, 9);
        p->canonical = dup_n(sqlite3_column_text(st, 9), p->canonical_len);
        if (!p->canonical)
            e = -ENOMEM;
    }
    if (e == -EIO)
        bfs_error("catalog: partition %s/%s has a bad codec or sync marker", table, period);
    sqlite3_reset(st);
    if (e < 0)
        bfs_partition_free(p);
    return e;
}

int bfs_catalog_partition_get(struct bfs_catalog *cat, const char *table, const char *period,
                              struct bfs_partition *p)
{
    struct rconn *c;
    memset(p, 0, sizeof *p);
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    rc = bfs_cat_read_partition(c, table, period, p);
    bfs_cat_rrelease(cat, c);
    return rc;
}

/* FNV-1a of "table\0period". */
static size_t layout_hash(const char *table, const char *period)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *s = table;; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
        if (!*s)
            break;
    }
    for (const char *s = period; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return (size_t)(h % LAYOUT_SLOTS);
}

int bfs_catalog_partition_layout(struct bfs_catalog *cat, const char *table, const char *period,
                                 uint8_t sync[16], enum bfs_codec *codec)
{
    if (strlen(table) > BFS_NAME_MAX || strlen(period) > BFS_NAME_MAX)
        return -ENOENT; /* no partition has such a name */
    struct layout_slot *slot = &cat->layouts[layout_hash(table, period)];
    pthread_mutex_lock(&cat->lmu);
    int hit = slot->used && strcmp(slot->table, table) == 0 && strcmp(slot->period, period) == 0;
    if (hit) {
        memcpy(sync, slot->sync, 16);
        *codec = slot->codec;
    }
    pthread_mutex_unlock(&cat->lmu);
    if (hit)
        return 0;

    struct bfs_partition p;
    int rc = bfs_catalog_partition_get(cat, table, period, &p);
    if (rc < 0)
        return rc;
    memcpy(sync, p.sync, 16);
    *codec = p.codec;
    bfs_partition_free(&p);
    /* Committed rows only (a reader sees no uncommitted write), and a
     * partition is never changed or removed: the slot stays true. */
    pthread_mutex_lock(&cat->lmu);
    slot->used = 1;
    slot->codec = *codec;
    memcpy(slot->sync, sync, 16);
    snprintf(slot->table, sizeof slot->table, "%s", table);
    snprintf(slot->period, sizeof slot->period, "%s", period);
    pthread_mutex_unlock(&cat->lmu);
    return 0;
}

/* ---- upload commits ---- */

/* Drop the layout cache's slot of (table, period): its merged schema changed
 * (the slot is a hint: an ingest that read it before is checked at commit).
 * Called in the transaction that changes it and again after its commit (a
 * reader may have refilled the slot from the old row in between). lmu is a
 * leaf: taken under wmu here, nothing is taken under it. */
static void layout_forget(struct bfs_catalog *cat, const char *table, const char *period)
{
    struct layout_slot *slot = &cat->layouts[layout_hash(table, period)];
    pthread_mutex_lock(&cat->lmu);
    if (slot->used && strcmp(slot->table, table) == 0 && strcmp(slot->period, period) == 0)
        slot->used = 0;
    pthread_mutex_unlock(&cat->lmu);
}

/* In a write transaction: the id of the schema row of canonical, inserted
 * (with its fingerprint and text) if missing. 0 or an SQLite error code. */
static int schema_row(struct bfs_catalog *cat, const char *canonical, size_t canonical_len,
                      uint64_t fingerprint, const char *json, size_t len, int64_t *id)
{
    sqlite3_stmt *st = cat->ws[W_SCHEMA_FIND];
    sqlite3_bind_text(st, 1, canonical, (int)canonical_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *id = -1;
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return rc;
    if (*id >= 0)
        return SQLITE_OK;
    char fp_hex[17];
    snprintf(fp_hex, sizeof fp_hex, "%016" PRIx64, fingerprint);
    st = cat->ws[W_SCHEMA_INS];
    sqlite3_bind_text(st, 1, canonical, (int)canonical_len, SQLITE_STATIC);
    bind_text(st, 2, fp_hex);
    sqlite3_bind_text(st, 3, json, (int)len, SQLITE_STATIC);
    if ((rc = run(st)) != SQLITE_OK)
        return rc;
    *id = sqlite3_last_insert_rowid(cat->w);
    return SQLITE_OK;
}

/* In a write transaction: whether schema_id is a version of partition pid. */
static int is_version(struct bfs_catalog *cat, int64_t pid, int64_t schema_id, int *yes)
{
    sqlite3_stmt *st = cat->ws[W_VERSION_FIND];
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int64(st, 2, schema_id);
    int rc = sqlite3_step(st);
    *yes = rc == SQLITE_ROW;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Record schema_id as a version (alias 0) or an alias (1) of partition pid. */
static int add_version_row(struct bfs_catalog *cat, int64_t pid, int64_t schema_id, int64_t now,
                           int alias)
{
    sqlite3_stmt *st = cat->ws[W_VERSION_INS];
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int64(st, 2, schema_id);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int(st, 4, alias);
    return run(st);
}

/* What a writer schema is to an existing partition (in a write transaction). */
struct version_in {
    const char *table, *period;
    const char *json, *canonical;
    size_t len, canonical_len;
    uint64_t fingerprint;
    const struct bfs_merged *merged;
};

/* The partition row (pid, its merged schema's id and canonical form, vgen)
 * holds `v` as a version (*schema_id), adding it with v->merged's layout if
 * it is new. 0, -EAGAIN (new, and no merge for this vgen), -errno; err. */
static int version_locked(struct bfs_catalog *cat, const struct version_in *v, int64_t pid,
                          int64_t merged_id, const void *mcanon, size_t mcanon_len, int64_t vgen,
                          int64_t now, int64_t *schema_id, struct bfs_err *err)
{
    sqlite3 *db = cat->w;
    /* The fast path: the partition's merged schema is the writer's (always
     * so for a partition of one version). */
    int rc, yes = 0;
    if (mcanon_len == v->canonical_len && memcmp(mcanon, v->canonical, mcanon_len) == 0) {
        /* With several versions the merged schema is none of them: an upload
         * in it (a served file uploaded again) makes it an alias. */
        if (vgen > 1 &&
            ((rc = is_version(cat, pid, merged_id, &yes)) != SQLITE_OK ||
             (!yes && (rc = add_version_row(cat, pid, merged_id, now, 1)) != SQLITE_OK)))
            goto sql_error;
        *schema_id = merged_id;
        return 0;
    }
    int64_t wid = -1;
    sqlite3_stmt *st = cat->ws[W_SCHEMA_FIND];
    sqlite3_bind_text(st, 1, v->canonical, (int)v->canonical_len, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        wid = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto sql_error;
    if (wid >= 0 && (rc = is_version(cat, pid, wid, &yes)) != SQLITE_OK)
        goto sql_error;
    if (yes) {
        *schema_id = wid;
        return 0;
    }
    const struct bfs_merged *m = v->merged;
    if (!m)
        return bfs_err_set(err, -EAGAIN,
                           "schema %016" PRIx64 " is not a version of %s/%s (merge it with the "
                           "partition's versions)",
                           v->fingerprint, v->table, v->period);
    if (m->base_vgen != vgen)
        return bfs_err_set(err, -EAGAIN,
                           "the schema versions of %s/%s changed while the upload was merged",
                           v->table, v->period);
    if (!m->header || m->header_len == 0 || m->len > INT_MAX || m->canonical_len > INT_MAX ||
        m->header_len > INT_MAX)
        return bfs_err_set(err, -EINVAL, "bad merged layout for %s/%s", v->table, v->period);
    if ((rc = schema_row(cat, v->canonical, v->canonical_len, v->fingerprint, v->json, v->len,
                         &wid)) != SQLITE_OK)
        goto sql_error;
    int64_t mid;
    if ((rc = schema_row(cat, m->canonical, m->canonical_len, m->fingerprint, m->json, m->len,
                         &mid)) != SQLITE_OK)
        goto sql_error;
    if ((rc = add_version_row(cat, pid, wid, now, 0)) != SQLITE_OK)
        goto sql_error;
    st = cat->ws[W_PART_MERGE];
    sqlite3_bind_int64(st, 1, pid);
    sqlite3_bind_int64(st, 2, mid);
    bind_blob(st, 3, m->sync, sizeof m->sync);
    sqlite3_bind_text(st, 4, m->json, (int)m->len, SQLITE_STATIC);
    rc = bind_blob(st, 5, m->header, m->header_len);
    sqlite3_bind_int64(st, 6, (int64_t)m->header_len);
    if (rc == SQLITE_OK)
        rc = run(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_OK)
        goto sql_error;
    layout_forget(cat, v->table, v->period);
    bfs_info("partition %s/%s: schema %016" PRIx64 " added; merged schema %016" PRIx64, v->table,
             v->period, v->fingerprint, m->fingerprint);
    *schema_id = wid;
    return 0;

sql_error:
    return bfs_err_set(err, sql_errno(rc), "catalog: %s", sqlite3_errmsg(db));
}

/* In a write transaction: find the upload's partition and its schema row
 * (*schema_id: the upload's writer schema, a version of the partition) or
 * create them. 0, -EAGAIN (another codec; a new version without a merge for
 * this vgen), -errno; err says why. */
static int partition_locked(struct bfs_catalog *cat, const struct bfs_upload *up, int64_t now,
                            int64_t *schema_id_out, struct bfs_err *err)
{
    sqlite3 *db = cat->w;
    sqlite3_stmt *st;
    int rc;
    int64_t schema_id = -1;
    const char *codec = codec_text(up->codec);
    struct version_in v = {
        .table = up->table,
        .period = up->period,
        .json = up->schema_json,
        .len = up->schema_len,
        .canonical = up->canonical,
        .canonical_len = up->canonical_len,
        .fingerprint = up->fingerprint,
        .merged = up->merged,
    };

    /* The partition, if it exists. */
    st = cat->ws[W_PART_LOOKUP];
    bind_text(st, 1, up->table);
    bind_text(st, 2, up->period);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *pcodec = (const char *)sqlite3_column_text(st, 1);
        if (!pcodec || strcmp(pcodec, codec) != 0) {
            bfs_err_set(err, -EAGAIN, "partition %s/%s stores codec %s, the upload has %s",
                        up->table, up->period, pcodec ? pcodec : "?", codec);
            sqlite3_reset(st);
            return -EAGAIN;
        }
        int e = version_locked(cat, &v, sqlite3_column_int64(st, 4), sqlite3_column_int64(st, 0),
                               sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2),
                               sqlite3_column_int64(st, 5), now, &schema_id, err);
        sqlite3_reset(st);
        if (e < 0)
            return e;
        *schema_id_out = schema_id;
        return 0;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        goto sql_error;

    /* A new partition: its one version is its merged schema. */
    if ((rc = schema_row(cat, up->canonical, up->canonical_len, up->fingerprint, up->schema_json,
                         up->schema_len, &schema_id)) != SQLITE_OK)
        goto sql_error;
    /* The layout as the upload brings it: its sync marker and the header
     * the caller built (the caller found no partition, so it built one). */
    if (!up->header || up->header_len == 0)
        return bfs_err_set(err, -EINVAL, "no layout header for the new partition %s/%s", up->table,
                           up->period);
    st = cat->ws[W_PART_INS];
    bind_text(st, 1, up->table);
    bind_text(st, 2, up->period);
    sqlite3_bind_int64(st, 3, schema_id);
    bind_text(st, 4, codec);
    bind_blob(st, 5, up->sync, sizeof up->sync);
    sqlite3_bind_text(st, 6, up->schema_json, (int)up->schema_len, SQLITE_STATIC);
    rc = bind_blob(st, 7, up->header, up->header_len);
    sqlite3_bind_int64(st, 8, (int64_t)up->header_len);
    sqlite3_bind_int64(st, 9, now);
    if (rc == SQLITE_OK)
        rc = run(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_OK)
        rc = add_version_row(cat, sqlite3_last_insert_rowid(db), schema_id, now, 0);
    if (rc != SQLITE_OK)
        goto sql_error;
    *schema_id_out = schema_id;
    return 0;

sql_error:
    return bfs_err_set(err, sql_errno(rc), "catalog: %s", sqlite3_errmsg(db));
}

/* In a write transaction: step W_PART_LOOKUP to the row of (table, period).
 * 0: the statement is on it (the caller reads it and resets the statement);
 * -ENOENT or -errno with err (reset). */
static int part_row(struct bfs_catalog *cat, const char *table, const char *period,
                    struct bfs_err *err)
{
    sqlite3_stmt *st = cat->ws[W_PART_LOOKUP];
    bind_text(st, 1, table);
    bind_text(st, 2, period);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 0;
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return bfs_err_set(err, -ENOENT, "no partition %s/%s", table, period);
    return bfs_err_set(err, sql_errno(rc), "catalog: %s", sqlite3_errmsg(cat->w));
}

int bfs_catalog_partition_add_version(struct bfs_catalog *cat, const char *table,
                                      const char *period, const char *json, size_t len,
                                      const char *canonical, size_t canonical_len,
                                      uint64_t fingerprint, const struct bfs_merged *m,
                                      int64_t *schema_id, struct bfs_err *err)
{
    if (!valid_name(table) || !valid_name(period) || len > INT_MAX || canonical_len > INT_MAX)
        return bfs_err_set(err, -EINVAL, "bad table, period or schema");
    struct version_in v = {
        .table = table,
        .period = period,
        .json = json,
        .len = len,
        .canonical = canonical,
        .canonical_len = canonical_len,
        .fingerprint = fingerprint,
        .merged = m,
    };
    struct wtx tx = {.what = "schema version"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return bfs_err_set(err, e, "catalog: begin: %s", strerror(-e));
    sqlite3_stmt *st = cat->ws[W_PART_LOOKUP];
    if ((e = part_row(cat, table, period, err)) == 0)
        e = version_locked(cat, &v, sqlite3_column_int64(st, 4), sqlite3_column_int64(st, 0),
                           sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2),
                           sqlite3_column_int64(st, 5), (int64_t)time(NULL), schema_id, err);
    sqlite3_reset(st);
    e = bfs_cat_wtx_end(cat, &tx, e);
    if (e == 0)
        layout_forget(cat, table, period);
    return e;
}

int bfs_catalog_partition_add_alias(struct bfs_catalog *cat, const char *table, const char *period,
                                    const char *json, size_t len, const char *canonical,
                                    size_t canonical_len, uint64_t fingerprint, int64_t *schema_id,
                                    struct bfs_err *err)
{
    if (!valid_name(table) || !valid_name(period) || len > INT_MAX || canonical_len > INT_MAX)
        return bfs_err_set(err, -EINVAL, "bad table, period or schema");
    struct wtx tx = {.what = "schema alias"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return bfs_err_set(err, e, "catalog: begin: %s", strerror(-e));
    sqlite3_stmt *st = cat->ws[W_PART_LOOKUP];
    e = part_row(cat, table, period, err);
    int64_t pid = e == 0 ? sqlite3_column_int64(st, 4) : -1;
    sqlite3_reset(st);
    int rc;
    if (e == 0 &&
        ((rc = schema_row(cat, canonical, canonical_len, fingerprint, json, len, schema_id)) !=
             SQLITE_OK ||
         (rc = add_version_row(cat, pid, *schema_id, (int64_t)time(NULL), 1)) != SQLITE_OK))
        e = bfs_err_set(err, sql_errno(rc), "catalog: %s", sqlite3_errmsg(cat->w));
    return bfs_cat_wtx_end(cat, &tx, e);
}

void bfs_catalog_layout_forget(struct bfs_catalog *cat, const char *table, const char *period)
{
    layout_forget(cat, table, period);
}

int bfs_catalog_partition_add(struct bfs_catalog *cat, const struct bfs_upload *up,
                              struct bfs_err *err)
{
    if (!valid_name(up->table) || !valid_name(up->period))
        return bfs_err_set(err, -EINVAL, "bad table or period name");
    int64_t schema_id;
    struct wtx tx = {.what = "partition"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return bfs_err_set(err, e, "catalog: begin: %s", strerror(-e));
    e = partition_locked(cat, up, (int64_t)time(NULL), &schema_id, err);
    if (e == -EAGAIN)
        e = -EINVAL; /* nothing normalises again here: the codecs differ */
    return bfs_cat_wtx_end(cat, &tx, e);
}

/* Insert one upload inside the group transaction (under its savepoint).
 * Returns 0 or -errno with err set. */
static int insert_upload(struct bfs_catalog *cat, const struct bfs_upload *up, int64_t now,
                         struct bfs_err *err)
{
    sqlite3 *db = cat->w;
    sqlite3_stmt *st;
    int64_t schema_id;
    int rc = partition_locked(cat, up, now, &schema_id, err);
    if (rc < 0)
        return rc;
    /* Converted: the row is in the merged schema it was converted to. */
    const struct bfs_merged *sd = up->stored;
    if (sd && (rc = schema_row(cat, sd->canonical, sd->canonical_len, sd->fingerprint, sd->json,
                               sd->len, &schema_id)) != SQLITE_OK)
        goto sql_error;

    st = cat->ws[W_ROW_INS];
    bind_text(st, 1, up->table);
    bind_text(st, 2, up->period);
    bind_text(st, 3, up->dataset);
    sqlite3_bind_int64(st, 4, schema_id);
    sqlite3_bind_int64(st, 5, (int64_t)up->records);
    sqlite3_bind_int64(st, 6, (int64_t)up->len);
    sqlite3_bind_int64(st, 7, now);
    sqlite3_bind_int(st, 8, up->deferred ? 0 : 1);
    if ((rc = run(st)) != SQLITE_OK)
        goto sql_error;
    st = cat->ws[W_DATA_INS];
    sqlite3_bind_int64(st, 1, sqlite3_last_insert_rowid(db));
    rc = bind_blob(st, 2, up->data, up->len);
    if (rc == SQLITE_OK)
        rc = run(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_OK)
        goto sql_error;
    return 0;

sql_error:
    return bfs_err_set(err, sql_errno(rc), "catalog: %s", sqlite3_errmsg(db));
}

/* The bucket of a group of n uploads (bfs_catalog_group_sizes). */
static unsigned group_bucket(unsigned n)
{
    unsigned b = 0;
    while (b + 1 < BFS_CATALOG_GROUP_BUCKETS && n > (1u << b))
        b++;
    return b;
}

/* One upload of a group: validated, then inserted under a savepoint. */
static int commit_one(struct bfs_catalog *cat, const struct bfs_upload *up, int64_t now,
                      struct bfs_err *err)
{
    if (!valid_name(up->table) || !valid_name(up->period) || !valid_name(up->dataset))
        return bfs_err_set(err, -EINVAL, "bad table, period or dataset name");
    if (!codec_text(up->codec))
        return bfs_err_set(err, -EINVAL, "unknown codec %d", (int)up->codec);
    if (!up->canonical || !up->schema_json || (up->len && !up->data) || up->len > INT_MAX ||
        up->canonical_len > INT_MAX || up->schema_len > INT_MAX || up->header_len > INT_MAX ||
        (up->stored && (!up->stored->json || !up->stored->canonical || up->stored->len > INT_MAX ||
                        up->stored->canonical_len > INT_MAX)) ||
        !u64_ok(up->records))
        return bfs_err_set(err, -EINVAL, "bad upload (missing schema or data, or too large)");
    sqlite3 *db = cat->w;
    int rc = run(cat->ws[W_SAVEPOINT]);
    if (rc != SQLITE_OK)
        return bfs_err_set(err, sql_errno(rc), "catalog: savepoint: %s", sqlite3_errmsg(db));
    int e = insert_upload(cat, up, now, err);
    if (e < 0 && !sqlite3_get_autocommit(db) && run(cat->ws[W_ROLLBACK_TO]) != SQLITE_OK)
        bfs_error("catalog: rollback to savepoint: %s", sqlite3_errmsg(db));
    if (!sqlite3_get_autocommit(db)) {
        rc = run(cat->ws[W_RELEASE]);
        if (rc != SQLITE_OK && e == 0)
            e = bfs_err_set(err, sql_errno(rc), "catalog: release savepoint: %s",
                            sqlite3_errmsg(db));
    }
    return e;
}

static void fail_all(struct request *r, int e, const char *what, const char *why)
{
    for (; r; r = r->next) {
        r->rc = bfs_err_set(r->err, e, "catalog: %s: %s", what, why);
    }
}

/* In the group's transaction: each upload under its savepoint, its rc set.
 * 0, or -errno when the error rolled the whole transaction back (e.g. disk
 * full): then nothing of the group is stored and every rc says so. */
static int commit_group_locked(struct bfs_catalog *cat, struct request *group)
{
    int64_t now = (int64_t)time(NULL);
    for (struct request *r = group; r; r = r->next) {
        r->rc = commit_one(cat, r->up, now, r->err);
        if (sqlite3_get_autocommit(cat->w)) {
            int e = r->rc < 0 ? r->rc : -EIO;
            char why[BFS_ERR_MSG_MAX]; /* fail_all sets r->err too */
            snprintf(why, sizeof why, "%s", r->err ? r->err->msg : "rolled back");
            fail_all(group, e, "transaction rolled back", why);
            return e;
        }
    }
    return 0;
}

/* Commit a group of uploads in one transaction; set each request's rc.
 * Failures are the requests' messages (each rejection is logged), not logged
 * here. */
static void commit_group(struct bfs_catalog *cat, struct request *group)
{
    struct wtx tx = {.flags = WTX_QUIET, .what = "upload group"};
    double t0 = bfs_metrics_now();
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0) {
        fail_all(group, e, "begin", tx.err.msg);
        return;
    }
    double t1 = bfs_metrics_now();
    int body = commit_group_locked(cat, group);
    double t2 = bfs_metrics_now();
    e = bfs_cat_wtx_end(cat, &tx, body);
    bfs_hist_observe(&cat->timing.wait, t1 - t0);
    bfs_hist_observe(&cat->timing.insert, t2 - t1);
    bfs_hist_observe(&cat->timing.sync, bfs_metrics_now() - t2);
    if (body == 0 && e < 0) /* the commit failed: the uploads that were fine are not stored */
        for (struct request *r = group; r; r = r->next)
            if (r->rc == 0)
                r->rc = bfs_err_set(r->err, e, "catalog: commit: %s", tx.err.msg);
}

int bfs_catalog_commit_upload(struct bfs_catalog *cat, const struct bfs_upload *up,
                              struct bfs_err *err)
{
    struct request req = {.up = up, .err = err};
    bfs_err_clear(err);
    pthread_cond_init(&req.cv, NULL);

    pthread_mutex_lock(&cat->qmu);
    /* req lives on this stack in the queue: a leader takes the whole queue
     * before it commits, and this function returns only once req is done. */
    *cat->qtail = &req;
    // cppcheck-suppress autoVariables
    cat->qtail = &req.next;
    while (!req.done) {
        if (cat->leading) {
            pthread_cond_wait(&req.cv, &cat->qmu);
            continue;
        }
        /* Lead: take the whole queue (ours included) and commit it. */
        cat->leading = 1;
        struct request *group = cat->qhead;
        cat->qhead = NULL;
        cat->qtail = &cat->qhead;
        pthread_mutex_unlock(&cat->qmu);

        commit_group(cat, group);

        pthread_mutex_lock(&cat->qmu);
        /* A follower may return as soon as it sees done (after we unlock):
         * read next before marking, signal before it can go. */
        unsigned n = 0;
        for (struct request *r = group, *next; r; r = next) {
            next = r->next;
            r->done = 1;
            if (r != &req)
                pthread_cond_signal(&r->cv);
            n++;
        }
        cat->groups++;
        cat->group_sizes[group_bucket(n)]++;
        cat->leading = 0;
        /* the first caller queued meanwhile leads the next group */
        if (cat->qhead)
            pthread_cond_signal(&cat->qhead->cv);
    }
    pthread_mutex_unlock(&cat->qmu);
    pthread_cond_destroy(&req.cv);
    return req.rc;
}

void bfs_catalog_group_sizes(struct bfs_catalog *cat, uint64_t out[BFS_CATALOG_GROUP_BUCKETS])
{
    pthread_mutex_lock(&cat->qmu);
    memcpy(out, cat->group_sizes, sizeof cat->group_sizes);
    pthread_mutex_unlock(&cat->qmu);
}

uint64_t bfs_catalog_commit_groups(struct bfs_catalog *cat)
{
    pthread_mutex_lock(&cat->qmu);
    uint64_t n = cat->groups;
    pthread_mutex_unlock(&cat->qmu);
    return n;
}

/* ---- converted lengths ---- */

int bfs_catalog_conv_memo(struct bfs_catalog *cat, const struct bfs_conv_memo *m, size_t n)
{
    if (n == 0)
        return 0;
    struct wtx tx = {.what = "converted lengths"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return e;
    for (size_t i = 0; i < n && e == 0; i++) {
        if (m[i].length > (uint64_t)INT64_MAX) {
            e = -EINVAL;
            break;
        }
        sqlite3_stmt *st = cat->ws[m[i].kind == BFS_SEG_HOT ? W_MEMO_HOT : W_MEMO_COLD];
        sqlite3_bind_int64(st, 1, m[i].row);
        sqlite3_bind_int64(st, 2, m[i].merged_id);
        sqlite3_bind_int64(st, 3, (int64_t)m[i].length);
        int rc = run(st);
        if (rc != SQLITE_OK)
            e = sql_fail(cat->w, rc, "memoise a converted length");
    }
    return bfs_cat_wtx_end(cat, &tx, e);
}
