/* catalog_ledger.c - the store's log in the catalog: what has been read of it
 * (log_pos, the epochs of nodes) and the application of its roll entries
 * (catalog.h, "The store's log"; ledger.c reads the log and the manifests).
 *
 * An applied roll is a rolls row (committed, with node, log_seq, epoch), its
 * archived_files rows (seq = position in the manifest) and block_indexes
 * rows, exactly as the manifest lists them, so a catalog rebuilt from the
 * store holds the same rows in the same order (archived_files.id follows log
 * order, which is the order of cold segments in a dataset file). The roll of
 * this catalog's own pending claim is applied the same way, from the local
 * manifest file: that transaction is the roll's local commit, and also deletes
 * the claimed buffer rows after checking the index covers them exactly.
 */
#include <inttypes.h>
#include <time.h>

#include "battlefs/manifest.h"
#include "catalog_int.h"

int bfs_catalog_ledger_state(struct bfs_catalog *cat, int64_t *log_pos,
                             char state_id[BFS_STATE_ID_MAX])
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_LEDGER];
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 1);
        if (log_pos)
            *log_pos = sqlite3_column_int64(st, 0);
        if (state_id)
            snprintf(state_id, BFS_STATE_ID_MAX, "%s", id ? id : "");
        rc = id && strlen(id) == BFS_STATE_ID_MAX - 1 ? 0 : -EIO;
        if (rc < 0)
            bfs_error("catalog: the ledger row has a bad state id");
    } else {
        rc = rc == SQLITE_DONE ? -EIO : sql_fail(c->db, rc, "read the ledger");
        if (rc == -EIO)
            bfs_error("catalog: the ledger row is missing");
    }
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

int bfs_catalog_node_epoch(struct bfs_catalog *cat, const char *node, int64_t *epoch)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_NODE_EPOCH];
    bind_text(st, 1, node);
    rc = sqlite3_step(st);
    *epoch = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_fail(c->db, rc, "read a node's epoch");
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

int bfs_catalog_roll_committed(struct bfs_catalog *cat, const char *roll_id, int64_t *seq)
{
    struct rconn *c;
    int rc = bfs_cat_racquire(cat, &c);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = c->st[R_ROLL_STATE];
    bind_text(st, 1, roll_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int done = sqlite3_column_int(st, 0);
        if (seq)
            *seq = sqlite3_column_int64(st, 1);
        rc = done ? 1 : 0;
    } else {
        rc = rc == SQLITE_DONE ? 0 : sql_fail(c->db, rc, "look a roll up");
    }
    sqlite3_reset(st);
    bfs_cat_rrelease(cat, c);
    return rc;
}

/* In a write transaction: 0 if seq is the next log position, else -ESTALE. */
static int check_next(struct bfs_catalog *cat, int64_t seq)
{
    sqlite3_stmt *st = cat->ws[W_LEDGER_GET];
    int rc = sqlite3_step(st);
    int64_t pos = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? -EIO : sql_fail(cat->w, rc, "read the ledger");
    if (seq != pos + 1) {
        bfs_error("catalog: log entry %" PRId64 " applied after %" PRId64, seq, pos);
        return -ESTALE;
    }
    return 0;
}

/* In a write transaction: log_pos = pos. */
static int set_log_pos(struct bfs_catalog *cat, int64_t pos)
{
    sqlite3_stmt *st = cat->ws[W_LEDGER_SET];
    sqlite3_bind_int64(st, 1, pos);
    int rc = run(st);
    return rc == SQLITE_OK ? 0 : sql_fail(cat->w, rc, "set the log position");
}

/* In a write transaction: node's epoch at least epoch. */
static int raise_epoch(struct bfs_catalog *cat, const char *node, int64_t epoch)
{
    sqlite3_stmt *st = cat->ws[W_NODE_EPOCH];
    bind_text(st, 1, node);
    sqlite3_bind_int64(st, 2, epoch);
    int rc = run(st);
    return rc == SQLITE_OK ? 0 : sql_fail(cat->w, rc, "record a node's epoch");
}

/* In a write transaction: log_pos = seq, node's epoch at least epoch. */
static int advance(struct bfs_catalog *cat, int64_t seq, const char *node, int64_t epoch)
{
    int e = set_log_pos(cat, seq);
    return e == 0 && node ? raise_epoch(cat, node, epoch) : e;
}

int bfs_catalog_log_skip(struct bfs_catalog *cat, int64_t seq, const char *node, int64_t epoch)
{
    struct wtx tx = {.what = "log skip"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return e;
    e = check_next(cat, seq);
    if (e == 0)
        e = advance(cat, seq, node, epoch);
    return bfs_cat_wtx_end(cat, &tx, e);
}

/* A roll entry being applied: the transaction of bfs_catalog_apply_begin,
 * or one roll of a checkpoint being loaded (struct bfs_cat_ckpt). */
struct bfs_cat_apply {
    struct bfs_catalog *cat;
    struct wtx tx;
    struct bfs_log_roll r;
    char node[BFS_NODE_MAX + 1];
    char roll_id[BFS_ROLL_ID_MAX];
    int own;         /* the roll is this catalog's pending claim */
    int64_t lo, hi;  /* its claimed rows */
    int64_t logged;  /* -EALREADY: the log position it was committed at (0: before the log) */
    int64_t file_id; /* the last archive inserted, or 0 */
    uint64_t file_size, file_header;
    char table[BFS_NAME_MAX + 1], period[BFS_NAME_MAX + 1];
    int64_t n_arch;
    uint64_t bytes, n_index;
};

/* The pending claim roll_id (own: 1, with its rows), a committed roll
 * (-EALREADY, logged = its log_seq or 0), or neither (0). */
static int roll_state_locked(struct bfs_cat_apply *a)
{
    sqlite3_stmt *st = a->cat->ws[W_ROLL_GET];
    bind_text(st, 1, a->roll_id);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
            ret = -EALREADY;
            a->logged = sqlite3_column_int64(st, 3);
        } else {
            a->own = 1;
            a->lo = sqlite3_column_int64(st, 1);
            a->hi = sqlite3_column_int64(st, 2);
        }
    } else if (rc != SQLITE_DONE) {
        ret = sql_fail(a->cat->w, rc, "look a roll up");
    }
    sqlite3_reset(st);
    return ret;
}

static int log_roll_valid(const struct bfs_log_roll *r)
{
    return bfs_node_valid(r->node) && r->roll_id && strlen(r->roll_id) < BFS_ROLL_ID_MAX &&
           valid_name(r->roll_id) && r->seq >= 1 && r->epoch >= 0 && u64_ok(r->rows) &&
           u64_ok(r->bytes);
}

/* In the transaction: start applying the valid roll r (a's roll before is
 * forgotten): its rolls row, unless it is the pending claim (own: committed
 * at its end). 0, -EALREADY (committed here already: nothing done), -errno. */
static int roll_begin_locked(struct bfs_cat_apply *a, const struct bfs_log_roll *r)
{
    struct bfs_catalog *cat = a->cat;
    a->r = *r;
    snprintf(a->node, sizeof a->node, "%s", r->node);
    snprintf(a->roll_id, sizeof a->roll_id, "%s", r->roll_id);
    a->r.node = a->node;
    a->r.roll_id = a->roll_id;
    a->own = 0;
    a->lo = a->hi = a->logged = 0;
    a->file_id = 0;
    a->file_size = a->file_header = 0;
    a->table[0] = a->period[0] = '\0';
    a->n_arch = 0;
    a->bytes = a->n_index = 0;
    int e = roll_state_locked(a);
    if (e < 0 || a->own)
        return e;
    sqlite3_stmt *st = cat->ws[W_ROLL_ADD];
    bind_text(st, 1, a->roll_id);
    sqlite3_bind_int64(st, 2, r->claimed_at);
    sqlite3_bind_int64(st, 3, r->committed_at);
    sqlite3_bind_int64(st, 4, (int64_t)r->rows);
    sqlite3_bind_int64(st, 5, (int64_t)r->bytes);
    bind_text(st, 6, a->node);
    sqlite3_bind_int64(st, 7, r->seq);
    sqlite3_bind_int64(st, 8, r->epoch);
    int rc = run(st);
    return rc == SQLITE_OK ? 0 : sql_fail(cat->w, rc, "add a roll");
}

int bfs_catalog_apply_begin(struct bfs_catalog *cat, const struct bfs_log_roll *r,
                            struct bfs_cat_apply **out)
{
    if (!log_roll_valid(r))
        return -EINVAL;
    struct bfs_cat_apply *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->cat = cat;
    /* Foreign keys off: an own roll deletes its rows and leaves their blobs
     * to bfs_catalog_purge. */
    a->tx = (struct wtx){.flags = WTX_FK_OFF, .what = "log apply"};
    int e = bfs_cat_wtx_begin(cat, &a->tx);
    if (e < 0) {
        free(a);
        return e;
    }
    e = check_next(cat, r->seq);
    if (e == 0)
        e = roll_begin_locked(a, r);
    if (e < 0) {
        bfs_cat_wtx_end(cat, &a->tx, e);
        free(a);
        return e;
    }
    *out = a;
    return 0;
}

int bfs_catalog_apply_archive(struct bfs_cat_apply *a, const struct bfs_manifest_archive *ar,
                              struct bfs_err *err)
{
    struct bfs_catalog *cat = a->cat;
    if (!valid_name(ar->table) || !valid_name(ar->period) || ar->header_length > ar->size ||
        ar->size > (uint64_t)INT64_MAX)
        return bfs_err_set(err, -EINVAL, "archive %s: bad fields", ar->key);
    const char *codec = codec_text(ar->codec);
    sqlite3_stmt *st = cat->ws[W_PART_LOOKUP];
    bind_text(st, 1, ar->table);
    bind_text(st, 2, ar->period);
    int rc = sqlite3_step(st);
    int e = 0;
    if (rc == SQLITE_ROW) {
        const char *pcodec = (const char *)sqlite3_column_text(st, 1);
        const char *fp = (const char *)sqlite3_column_text(st, 3);
        if (!fp || strcmp(fp, ar->schema_fingerprint) != 0) {
            /* Not the merged schema: one of the partition's versions? */
            sqlite3_stmt *vs = cat->ws[W_VERSION_FP];
            sqlite3_bind_int64(vs, 1, sqlite3_column_int64(st, 4));
            bind_text(vs, 2, ar->schema_fingerprint);
            int vrc = sqlite3_step(vs);
            sqlite3_reset(vs);
            if (vrc == SQLITE_DONE)
                e = bfs_err_set(err, -EINVAL,
                                "archive %s: schema %s is not a version of partition %s/%s here",
                                ar->key, ar->schema_fingerprint, ar->table, ar->period);
            else if (vrc != SQLITE_ROW)
                e = bfs_err_set(err, sql_fail(cat->w, vrc, "look a version up"), "catalog: %s",
                                sqlite3_errmsg(cat->w));
        }
        if (e == 0 && (!pcodec || strcmp(pcodec, codec) != 0))
            e = bfs_err_set(err, -EINVAL,
                            "archive %s: partition %s/%s has codec %s here, the archive %s",
                            ar->key, ar->table, ar->period, pcodec ? pcodec : "?", codec);
    } else if (rc == SQLITE_DONE) {
        e = bfs_err_set(err, -ENOENT, "archive %s: no partition %s/%s", ar->key, ar->table,
                        ar->period);
    } else {
        e = bfs_err_set(err, sql_fail(cat->w, rc, "look a partition up"), "catalog: %s",
                        sqlite3_errmsg(cat->w));
    }
    sqlite3_reset(st);
    if (e < 0)
        return e;

    st = cat->ws[W_ARCH_ADD];
    bind_text(st, 1, ar->key);
    bind_text(st, 2, ar->table);
    bind_text(st, 3, ar->period);
    sqlite3_bind_int64(st, 4, (int64_t)ar->size);
    sqlite3_bind_int64(st, 5, (int64_t)ar->header_length);
    bind_text(st, 6, a->roll_id);
    sqlite3_bind_int64(st, 7, a->n_arch);
    sqlite3_bind_int64(st, 8, a->r.committed_at);
    rc = bind_blob(st, 9, ar->sha256, sizeof ar->sha256);
    bind_text(st, 10, ar->schema_fingerprint);
    bind_text(st, 11, codec);
    /* the versions, space-separated (NULL: none) */
    char versions[BFS_MANIFEST_VERSIONS_MAX * 17];
    size_t vlen = 0;
    for (size_t i = 0; i < ar->n_versions && i < BFS_MANIFEST_VERSIONS_MAX; i++)
        vlen += (size_t)snprintf(versions + vlen, sizeof versions - vlen, "%s%s", i ? " " : "",
                                 ar->versions[i]);
    if (ar->n_versions > 0)
        sqlite3_bind_text(st, 12, versions, (int)vlen, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 12);
    if (rc == SQLITE_OK)
        rc = run(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_OK) {
        const char *why = sqlite3_errmsg(cat->w);
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
            return bfs_err_set(err, -EINVAL, "archive %s: %s (a key listed twice?)", ar->key, why);
        return bfs_err_set(err, sql_fail(cat->w, rc, "add an archive"), "catalog: %s", why);
    }
    a->file_id = sqlite3_last_insert_rowid(cat->w);
    a->file_size = ar->size;
    a->file_header = ar->header_length;
    snprintf(a->table, sizeof a->table, "%s", ar->table);
    snprintf(a->period, sizeof a->period, "%s", ar->period);
    a->n_arch++;
    return 0;
}

int bfs_catalog_apply_index(struct bfs_cat_apply *a, const struct bfs_manifest_index *x,
                            struct bfs_err *err)
{
    if (a->file_id == 0)
        return bfs_err_set(err, -EINVAL, "an index row before any archive");
    if (!valid_name(x->dataset) || x->start < a->file_header || x->start > a->file_size ||
        x->length > a->file_size - x->start || x->records > (uint64_t)INT64_MAX)
        return bfs_err_set(err, -EINVAL, "index row of %s outside its archive", x->dataset);
    sqlite3_stmt *st = a->cat->ws[W_IDX_ADD];
    bind_text(st, 1, x->dataset);
    bind_text(st, 2, a->table);
    bind_text(st, 3, a->period);
    sqlite3_bind_int64(st, 4, a->file_id);
    sqlite3_bind_int64(st, 5, (int64_t)x->start);
    sqlite3_bind_int64(st, 6, (int64_t)x->length);
    sqlite3_bind_int64(st, 7, (int64_t)x->records);
    sqlite3_bind_int64(st, 8, x->uploaded_at);
    int rc = run(st);
    if (rc != SQLITE_OK)
        return bfs_err_set(err, sql_fail(a->cat->w, rc, "add an index row"), "catalog: %s",
                           sqlite3_errmsg(a->cat->w));
    a->bytes += x->length;
    a->n_index++;
    return 0;
}

/* bfs_cat_wtx_end, which rolls back only for rc < 0, for a caller's rc
 * that may be a visitor's positive stop: rolled back and returned as is. */
static int end_tx(struct bfs_catalog *cat, struct wtx *tx, int rc)
{
    int e = bfs_cat_wtx_end(cat, tx, rc > 0 ? -ECANCELED : rc);
    return rc > 0 ? rc : e;
}

/* In the transaction: the end of a roll's rows. An own roll's commit (the
 * index covers the claim exactly; the claimed rows go; the roll is committed
 * at its log position); the index holds the roll's bytes. */
static int roll_end_locked(struct bfs_cat_apply *a, struct bfs_err *err)
{
    struct bfs_catalog *cat = a->cat;
    sqlite3_stmt *st;
    int rc;
    if (a->own) {
        st = cat->ws[W_ROLL_CHECK];
        bind_text(st, 1, a->roll_id);
        sqlite3_bind_int64(st, 2, a->lo);
        sqlite3_bind_int64(st, 3, a->hi);
        rc = sqlite3_step(st);
        int64_t diff = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            goto sql_error;
        if (diff != 0)
            return bfs_err_set(err, -EINVAL,
                               "roll %s: the manifest does not match the claimed rows "
                               "(%" PRId64 " datasets differ)",
                               a->roll_id, diff);
        /* The rows only: their blobs stay, orphaned, until bfs_catalog_purge.
         * Nothing reads a blob without its row but a reader that resolved the
         * row before this commit, and it gets the bytes the archive holds. */
        st = cat->ws[W_DEL_ROWS];
        sqlite3_bind_int64(st, 1, a->lo);
        sqlite3_bind_int64(st, 2, a->hi);
        if ((rc = run(st)) != SQLITE_OK)
            goto sql_error;
        st = cat->ws[W_ROLL_VERSIONS_DEL];
        bind_text(st, 1, a->roll_id);
        if ((rc = run(st)) != SQLITE_OK)
            goto sql_error;
        st = cat->ws[W_ROLL_LOGGED];
        bind_text(st, 1, a->roll_id);
        sqlite3_bind_int64(st, 2, a->r.committed_at);
        bind_text(st, 3, a->node);
        sqlite3_bind_int64(st, 4, a->r.seq);
        sqlite3_bind_int64(st, 5, a->r.epoch);
        if ((rc = run(st)) != SQLITE_OK)
            goto sql_error;
    }
    if (a->bytes != a->r.bytes)
        return bfs_err_set(err, -EINVAL,
                           "roll %s: the index holds %" PRIu64 " bytes, the roll %" PRIu64,
                           a->roll_id, a->bytes, a->r.bytes);
    return 0;

sql_error:
    return bfs_err_set(err, sql_fail(cat->w, rc, "log apply"), "catalog: %s",
                       sqlite3_errmsg(cat->w));
}

int bfs_catalog_apply_end(struct bfs_cat_apply *a, int rc, int *own, struct bfs_err *err)
{
    if (rc == 0)
        rc = roll_end_locked(a, err);
    if (rc == 0) {
        rc = advance(a->cat, a->r.seq, a->node, a->r.epoch);
        if (rc < 0)
            bfs_err_set(err, rc, "catalog: advance the log position");
    }
    rc = end_tx(a->cat, &a->tx, rc);
    if (own)
        *own = rc == 0 && a->own;
    free(a);
    return rc;
}

/* ---- checkpoints ---- */

/* The index rows of archive file_id. */
static int snap_index(struct rconn *c, int64_t file_id, const struct bfs_checkpoint_visitor *v)
{
    sqlite3_stmt *st = c->st[R_SNAP_IDX];
    sqlite3_bind_int64(st, 1, file_id);
    int rc, e = 0;
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *dataset = (const char *)sqlite3_column_text(st, 0);
        struct bfs_manifest_index x = {
            .dataset = dataset,
            .start = (uint64_t)sqlite3_column_int64(st, 1),
            .length = (uint64_t)sqlite3_column_int64(st, 2),
            .records = (uint64_t)sqlite3_column_int64(st, 3),
            .uploaded_at = sqlite3_column_int64(st, 4),
        };
        if (!dataset) {
            bfs_error("catalog: index row of archive %" PRId64 " without a dataset", file_id);
            e = -EIO;
        } else if (v->index) {
            e = v->index(v->ctx, &x);
        }
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "snapshot: read index rows");
    sqlite3_reset(st);
    return e;
}

/* The archives of roll_id, each with its index rows. */
static int snap_archives(struct rconn *c, const char *roll_id,
                         const struct bfs_checkpoint_visitor *v)
{
    sqlite3_stmt *st = c->st[R_SNAP_ARCH];
    bind_text(st, 1, roll_id);
    int rc, e = 0;
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct bfs_manifest_archive a = {
            .key = (const char *)sqlite3_column_text(st, 1),
            .table = (const char *)sqlite3_column_text(st, 2),
            .period = (const char *)sqlite3_column_text(st, 3),
            .size = (uint64_t)sqlite3_column_int64(st, 4),
            .header_length = (uint64_t)sqlite3_column_int64(st, 5),
            .schema_fingerprint = (const char *)sqlite3_column_text(st, 7),
        };
        const void *sha = sqlite3_column_blob(st, 6);
        int sha_len = sqlite3_column_bytes(st, 6);
        const char *codec = (const char *)sqlite3_column_text(st, 8);
        if (!a.key || !a.table || !a.period || !a.schema_fingerprint || !sha ||
            sha_len != (int)sizeof a.sha256 || !codec || codec_from_text(codec, &a.codec) < 0) {
            bfs_error("catalog: archive %s of roll %s lacks what a checkpoint holds "
                      "(SHA-256, schema, codec)",
                      a.key ? a.key : "?", roll_id);
            e = -EIO;
            break;
        }
        memcpy(a.sha256, sha, sizeof a.sha256);
        /* the versions: 16 hex digits each, space-separated */
        const char *vs = (const char *)sqlite3_column_text(st, 9);
        char fps[BFS_MANIFEST_VERSIONS_MAX][17];
        while (vs && *vs && a.n_versions < BFS_MANIFEST_VERSIONS_MAX) {
            size_t k = strcspn(vs, " ");
            if (k != 16) {
                bfs_error("catalog: archive %s has a bad version list", a.key);
                e = -EIO;
                break;
            }
            memcpy(fps[a.n_versions], vs, 16);
            fps[a.n_versions++][16] = '\0';
            vs += k + (vs[k] == ' ');
        }
        a.versions = (const char(*)[17])fps;
        if (e == 0 && v->archive)
            e = v->archive(v->ctx, &a);
        if (e == 0)
            e = snap_index(c, sqlite3_column_int64(st, 0), v);
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "snapshot: read archives");
    sqlite3_reset(st);
    return e;
}

/* In the read transaction: the rolls up to upto, then the nodes. */
static int snap_walk(struct rconn *c, int64_t upto, const struct bfs_checkpoint_visitor *v)
{
    sqlite3_stmt *st = c->st[R_SNAP_ROLLS];
    sqlite3_bind_int64(st, 1, upto);
    int rc, e = 0;
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct bfs_manifest_roll r = {
            .roll_id = (const char *)sqlite3_column_text(st, 0),
            .node = (const char *)sqlite3_column_text(st, 1),
            .claimed_at = sqlite3_column_int64(st, 2),
            .rows = sqlite3_column_int64(st, 3),
            .bytes = sqlite3_column_int64(st, 4),
        };
        if (!r.roll_id || !r.node || sqlite3_column_type(st, 6) == SQLITE_NULL) {
            bfs_error("catalog: roll %s of the log has no node or epoch",
                      r.roll_id ? r.roll_id : "?");
            e = -EIO;
            break;
        }
        if (v->roll)
            e = v->roll(v->ctx, &r, sqlite3_column_int64(st, 5), sqlite3_column_int64(st, 6),
                        sqlite3_column_int64(st, 7));
        if (e == 0)
            e = snap_archives(c, r.roll_id, v);
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "snapshot: read rolls");
    sqlite3_reset(st);
    if (e != 0)
        return e;
    st = c->st[R_SNAP_NODES];
    while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *node = (const char *)sqlite3_column_text(st, 0);
        if (!node) {
            e = -EIO;
            break;
        }
        if (v->node)
            e = v->node(v->ctx, node, sqlite3_column_int64(st, 1));
    }
    if (e == 0 && rc != SQLITE_DONE)
        e = sql_fail(c->db, rc, "snapshot: read nodes");
    sqlite3_reset(st);
    return e;
}

int bfs_catalog_snapshot(struct bfs_catalog *cat, int64_t upto,
                         const struct bfs_checkpoint_visitor *v)
{
    struct rconn *c;
    int e = bfs_cat_racquire(cat, &c);
    if (e < 0)
        return e;
    /* One read transaction: the snapshot starts at its first read, the
     * ledger row, so log_pos and every row walked are of one state. */
    int rc = run(c->st[R_BEGIN]);
    if (rc != SQLITE_OK) {
        e = sql_fail(c->db, rc, "snapshot: begin");
        goto out;
    }
    sqlite3_stmt *st = c->st[R_LEDGER];
    rc = sqlite3_step(st);
    int64_t pos = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) {
        e = rc == SQLITE_DONE ? -EIO : sql_fail(c->db, rc, "snapshot: read the ledger");
        goto out;
    }
    if (pos != upto) {
        e = -ESTALE;
        goto out;
    }
    e = snap_walk(c, upto, v);
    if (e == 0 && (rc = run(c->st[R_COMMIT])) != SQLITE_OK)
        e = sql_fail(c->db, rc, "snapshot: end");
out:
    bfs_cat_rrelease(cat, c); /* ends the read transaction if it is still open */
    return e;
}

/* A checkpoint being loaded: one write transaction (a.tx), each roll
 * applied as its log entry would be (a), the log position set at the end. */
struct bfs_cat_ckpt {
    struct bfs_cat_apply a;
    int in_roll;      /* a holds a roll whose rows are being loaded */
    int skip;         /* that roll was committed here before the log: its rows are here */
    int nodes;        /* node entries began */
    int64_t last_seq; /* of the last roll (0: none yet) */
    int failed;       /* the first call that failed: the end rolls back */
};

static int ckpt_failed(struct bfs_cat_ckpt *c, int e)
{
    if (e < 0 && c->failed == 0)
        c->failed = e;
    return e;
}

/* In the transaction: the end of the roll being loaded, as the end of its
 * log entry, applied or skipped (without the log position: the checkpoint's
 * end sets it). */
static int ckpt_close_roll(struct bfs_cat_ckpt *c, struct bfs_err *err)
{
    if (!c->in_roll)
        return 0;
    c->in_roll = 0;
    int e = c->skip ? 0 : roll_end_locked(&c->a, err);
    if (e == 0 && (e = raise_epoch(c->a.cat, c->a.node, c->a.r.epoch)) < 0)
        bfs_err_set(err, e, "catalog: record a node's epoch");
    return e;
}

int bfs_catalog_ckpt_begin(struct bfs_catalog *cat, struct bfs_cat_ckpt **out)
{
    *out = NULL;
    struct bfs_cat_ckpt *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->a.cat = cat;
    /* Foreign keys off, as a log apply: an own roll deletes its rows. */
    c->a.tx = (struct wtx){.flags = WTX_FK_OFF, .what = "checkpoint load"};
    int e = bfs_cat_wtx_begin(cat, &c->a.tx);
    if (e < 0) {
        free(c);
        return e;
    }
    sqlite3_stmt *st = cat->ws[W_LOG_EMPTY];
    int rc = sqlite3_step(st);
    int empty = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        e = rc == SQLITE_DONE ? -EIO : sql_fail(cat->w, rc, "read the ledger");
    else if (!empty)
        e = -EEXIST;
    if (e < 0) {
        bfs_cat_wtx_end(cat, &c->a.tx, e);
        free(c);
        return e;
    }
    *out = c;
    return 0;
}

int bfs_catalog_ckpt_roll(struct bfs_cat_ckpt *c, const struct bfs_manifest_roll *r, int64_t seq,
                          int64_t epoch, int64_t committed_at, struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    int e = ckpt_close_roll(c, err);
    if (e < 0)
        return ckpt_failed(c, e);
    const struct bfs_log_roll lr = {
        .seq = seq,
        .node = r->node,
        .roll_id = r->roll_id,
        .epoch = epoch,
        .claimed_at = r->claimed_at,
        .committed_at = committed_at,
        .rows = (uint64_t)r->rows,
        .bytes = (uint64_t)r->bytes,
    };
    if (c->nodes || seq <= c->last_seq)
        return ckpt_failed(c, bfs_err_set(err, -EINVAL,
                                          "checkpoint: roll %s at %" PRId64
                                          ": after the nodes or not after the roll before",
                                          r->roll_id, seq));
    if (r->rows < 0 || r->bytes < 0 || !log_roll_valid(&lr))
        return ckpt_failed(c, bfs_err_set(err, -EINVAL,
                                          "checkpoint: roll %s at %" PRId64 ": bad fields",
                                          r->roll_id, seq));
    c->skip = 0;
    e = roll_begin_locked(&c->a, &lr);
    if (e == -EALREADY && c->a.logged) {
        e = bfs_err_set(err, -EINVAL,
                        "checkpoint: roll %s at %" PRId64 " is the roll at %" PRId64 " again",
                        r->roll_id, seq, c->a.logged);
    } else if (e == -EALREADY) {
        /* As the log apply does: the rows are here, the roll is skipped. */
        bfs_info("checkpoint: roll %s at %" PRId64 " is already committed here: skipped",
                 r->roll_id, seq);
        c->skip = 1;
        e = 0;
    } else if (e < 0) {
        bfs_err_set(err, e, "checkpoint: roll %s at %" PRId64 ": %s", r->roll_id, seq,
                    strerror(-e));
    }
    if (e < 0)
        return ckpt_failed(c, e);
    c->in_roll = 1;
    c->last_seq = seq;
    return 0;
}

int bfs_catalog_ckpt_archive(struct bfs_cat_ckpt *c, const struct bfs_manifest_archive *a,
                             struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    if (!c->in_roll)
        return ckpt_failed(
            c, bfs_err_set(err, -EINVAL, "checkpoint: archive %s outside a roll", a->key));
    return c->skip ? 0 : ckpt_failed(c, bfs_catalog_apply_archive(&c->a, a, err));
}

int bfs_catalog_ckpt_index(struct bfs_cat_ckpt *c, const struct bfs_manifest_index *x,
                           struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    if (!c->in_roll)
        return ckpt_failed(
            c, bfs_err_set(err, -EINVAL, "checkpoint: index row of %s outside a roll", x->dataset));
    return c->skip ? 0 : ckpt_failed(c, bfs_catalog_apply_index(&c->a, x, err));
}

int bfs_catalog_ckpt_node(struct bfs_cat_ckpt *c, const char *node, int64_t epoch,
                          struct bfs_err *err)
{
    if (c->failed)
        return bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    int e = ckpt_close_roll(c, err);
    if (e == 0 && (!bfs_node_valid(node) || epoch < 0))
        e = bfs_err_set(err, -EINVAL, "checkpoint: a bad node entry");
    if (e == 0 && (e = raise_epoch(c->a.cat, node, epoch)) < 0)
        bfs_err_set(err, e, "catalog: record a node's epoch");
    if (e == 0)
        c->nodes = 1;
    return ckpt_failed(c, e);
}

int bfs_catalog_ckpt_end(struct bfs_cat_ckpt *c, int rc, int64_t upto, struct bfs_err *err)
{
    if (rc == 0 && c->failed)
        rc = bfs_err_set(err, c->failed, "checkpoint: a call before failed");
    if (rc == 0)
        rc = ckpt_close_roll(c, err);
    if (rc == 0 && (upto < 1 || upto < c->last_seq))
        rc = bfs_err_set(err, -EINVAL,
                         "checkpoint: position %" PRId64 " is before its last roll (%" PRId64 ")",
                         upto, c->last_seq);
    if (rc == 0 && (rc = set_log_pos(c->a.cat, upto)) < 0)
        bfs_err_set(err, rc, "catalog: set the log position");
    rc = end_tx(c->a.cat, &c->a.tx, rc);
    if (rc < 0 && err && err->code == 0)
        bfs_err_set(err, rc, "catalog: commit: %s", c->a.tx.err.msg);
    free(c);
    return rc;
}
