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

/* In a write transaction: log_pos = seq, node's epoch at least epoch. */
static int advance(struct bfs_catalog *cat, int64_t seq, const char *node, int64_t epoch)
{
    sqlite3_stmt *st = cat->ws[W_LEDGER_SET];
    sqlite3_bind_int64(st, 1, seq);
    int rc = run(st);
    if (rc == SQLITE_OK && node) {
        st = cat->ws[W_NODE_EPOCH];
        bind_text(st, 1, node);
        sqlite3_bind_int64(st, 2, epoch);
        rc = run(st);
    }
    return rc == SQLITE_OK ? 0 : sql_fail(cat->w, rc, "advance the log position");
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

struct bfs_cat_apply {
    struct bfs_catalog *cat;
    struct wtx tx;
    struct bfs_log_roll r;
    char node[BFS_NODE_MAX + 1];
    char roll_id[BFS_ROLL_ID_MAX];
    int own;         /* the roll is this catalog's pending claim */
    int64_t lo, hi;  /* its claimed rows */
    int64_t file_id; /* the last archive inserted, or 0 */
    uint64_t file_size, file_header;
    char table[BFS_NAME_MAX + 1], period[BFS_NAME_MAX + 1];
    int64_t n_arch;
    uint64_t bytes, n_index;
};

/* The pending claim roll_id (own: 1, with its rows), a committed roll
 * (-EALREADY), or neither (0). */
static int roll_state_locked(struct bfs_cat_apply *a)
{
    sqlite3_stmt *st = a->cat->ws[W_ROLL_GET];
    bind_text(st, 1, a->roll_id);
    int rc = sqlite3_step(st);
    int ret = 0;
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
            ret = -EALREADY;
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

int bfs_catalog_apply_begin(struct bfs_catalog *cat, const struct bfs_log_roll *r,
                            struct bfs_cat_apply **out)
{
    if (!bfs_node_valid(r->node) || !r->roll_id || strlen(r->roll_id) >= BFS_ROLL_ID_MAX ||
        !valid_name(r->roll_id) || r->seq < 1 || r->epoch < 0)
        return -EINVAL;
    struct bfs_cat_apply *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->cat = cat;
    a->r = *r;
    snprintf(a->node, sizeof a->node, "%s", r->node);
    snprintf(a->roll_id, sizeof a->roll_id, "%s", r->roll_id);
    a->r.node = a->node;
    a->r.roll_id = a->roll_id;
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
        e = roll_state_locked(a);
    if (e == 0 && !a->own) {
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
        if (rc != SQLITE_OK)
            e = sql_fail(cat->w, rc, "add a roll");
    }
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
        if (!fp || strcmp(fp, ar->schema_fingerprint) != 0)
            e = bfs_err_set(err, -EINVAL,
                            "archive %s: partition %s/%s has schema %s here, the archive %s",
                            ar->key, ar->table, ar->period, fp ? fp : "?", ar->schema_fingerprint);
        else if (!pcodec || strcmp(pcodec, codec) != 0)
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

/* In the transaction: an own roll's commit (the index covers the claim
 * exactly; the claimed rows go; the roll is committed at its log position). */
static int finish_locked(struct bfs_cat_apply *a, struct bfs_err *err)
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
    int e = advance(cat, a->r.seq, a->node, a->r.epoch);
    return e < 0 ? bfs_err_set(err, e, "catalog: advance the log position") : 0;

sql_error:
    return bfs_err_set(err, sql_fail(cat->w, rc, "log apply"), "catalog: %s",
                       sqlite3_errmsg(cat->w));
}

int bfs_catalog_apply_end(struct bfs_cat_apply *a, int rc, int *own, struct bfs_err *err)
{
    if (rc == 0)
        rc = finish_locked(a, err);
    rc = bfs_cat_wtx_end(a->cat, &a->tx, rc);
    if (own)
        *own = rc == 0 && a->own;
    free(a);
    return rc;
}
