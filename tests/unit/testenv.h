/* testenv.h - what the roller's and the reader's unit tests share: an
 * in-memory store (the vtable of store.h), a real catalog in a temporary
 * directory, uploads committed straight to the catalog with a model of their
 * bytes, and the model of a roll (the archives and index rows it must make).
 * Rolls commit through a ledger on the same store (the store's log).
 * The helpers fail the running cmocka test on any unexpected result. */
#ifndef BATTLEFS_TESTENV_H
#define BATTLEFS_TESTENV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/catalog.h"
#include "battlefs/errors.h"
#include "battlefs/ledger.h"
#include "battlefs/roller.h"
#include "battlefs/stats.h"
#include "battlefs/store.h"

/* ---- the in-memory store ---- */

#define MEMSTORE_GET_LOG 4096

struct memobj {
    char *key;
    uint8_t *data;
    size_t len;
    unsigned puts; /* how often it was put */
    char etag[33]; /* the lower-case hex MD5 of data, as both real backends say */
};

/* Conditional puts (store.h, "Conditional writes") are honoured: create-only
 * and compare-and-swap on the ETag, each accepting a put of the bytes already
 * there. */
struct memstore {
    struct bfs_store base;
    pthread_mutex_t lock; /* guards everything below */
    struct memobj *obj;
    size_t n, cap;
    unsigned puts;             /* successful puts */
    unsigned data_puts;        /* ... of keys outside "_battlefs/" (archives) */
    unsigned changed;          /* plain or create-only puts that replaced an object with other
                                * bytes (never expected) */
    unsigned swapped;          /* compare-and-swap puts that replaced an object (leases) */
    unsigned refused;          /* conditional puts refused: -EEXIST, -ESTALE, -ENOENT */
    unsigned bad_sha;          /* puts whose digest was not the file's */
    unsigned linked;           /* puts that were offered the file (may_link) */
    int put_rc;                /* nonzero: every put fails with it */
    const char *put_msg;       /* with put_rc: what the failing put says (as s3:// does), or NULL */
    const char *put_rc_prefix; /* with put_rc: only puts of keys starting with it fail
                                * (NULL: every put) */
    int put_lands;             /* with put_rc: the failing puts store their object first
                                * (the request landed, its answer was lost) */
    unsigned gets;             /* get_range calls */
    unsigned whole_gets;       /* get calls (whole objects) */
    unsigned lists_after;      /* list_after calls */
    struct {
        char key[128];
        uint64_t off, len;
    } get_log[MEMSTORE_GET_LOG];
    /* Called at the start of every get_range, without the lock (a test may
     * roll from there). */
    void (*on_get)(void *arg, const char *key);
    void *on_get_arg;
    /* Called at the start of every put, without the lock (a test may commit
     * from there: another writer racing this one). */
    void (*on_put)(void *arg, const char *key);
    void *on_put_arg;
};

/* A new empty store; wants_sha256: put_wants_sha256 (every digest handed to
 * a put is then checked against the file). */
struct memstore *memstore_new(int wants_sha256);
void memstore_free(struct memstore *m);
/* The object at key, or NULL. Not thread-safe against puts. */
const struct memobj *memstore_find(struct memstore *m, const char *key);
unsigned memstore_gets(struct memstore *m);
/* Store data under key directly (no put counted): what another writer, or a
 * damaged store, left there. */
void memstore_set(struct memstore *m, const char *key, const void *data, size_t len);
/* How many objects have keys starting with prefix. */
size_t memstore_count(struct memstore *m, const char *prefix);

/* ---- the store's log, as a test reads it ---- */

struct tlog {
    int64_t seq;
    int fence; /* a fence entry, else a roll entry */
    char node[72];
    int64_t epoch;
    char roll_id[BFS_ROLL_ID_MAX];
    char manifest[256];
    int64_t size;
    char sha256[65];
};
/* The entries of "_battlefs/log/" in order (into *out, free() it; their
 * number returned). Fails the test unless the keys are the positions 1..n,
 * with no gap, and every entry parses. */
size_t tlog_read(struct memstore *m, struct tlog **out);
/* How many roll entries name roll_id (their last position in *seq, if not NULL). */
size_t tlog_count_roll(struct memstore *m, const char *roll_id, int64_t *seq);
/* How many fence entries the log holds. */
size_t tlog_count_fences(struct memstore *m);

/* ---- a catalog with uploads ---- */

/* One upload, as committed. */
struct tupload {
    char table[32], period[32], dataset[80];
    uint8_t *data;
    size_t len;
    uint64_t records;
    int64_t t0, t1; /* unix seconds before and after its commit (its created_at between) */
};

/* How a tenv is made (tenv_new_opts); zero: tenv_new(0). */
struct tenv_opts {
    struct memstore *ms;  /* a store shared with other tenvs (not freed by tenv_free);
                           * NULL: a new one of the tenv's own */
    int wants_sha256;     /* the new store's put_wants_sha256 */
    const char *node;     /* the ledger's node; NULL: "t" */
    int read_only;        /* a read-only ledger (no lease, nothing written) */
    uint64_t lease_ttl_s; /* 0: the default */
    uint64_t refresh_s;   /* the ledger's refresh thread period (bfs_ledger_start); 0: none */
    int no_acquire;       /* open the ledger without taking the lease */
};

struct tenv {
    char dir[64];
    char db[96];
    char work[96];
    char node[72];
    struct tenv_opts opts; /* as made (ms and node: this tenv's) */
    int own_ms;            /* ms is freed by tenv_free */
    struct bfs_catalog *cat;
    struct memstore *ms;
    struct bfs_ledger *ledger; /* on cat and ms, node, lease taken (unless read_only or
                                * no_acquire); its threads not started */
    struct bfs_stats stats;
    struct bfs_errors errors;
    struct bfs_roll_deps roll; /* cat, store, ledger, node, stats, errors, work_dir;
                                * archive_max_bytes 1M */
    char *canon;
    size_t canon_len;
    struct tupload *up;
    size_t n_up, cap_up;
};

/* A temporary directory with catalog.db and work/, a memstore, and a ledger
 * of node "t" holding its lease. */
struct tenv *tenv_new(int wants_sha256);
struct tenv *tenv_new_opts(const struct tenv_opts *o);
/* Close the ledger (releasing the lease), the catalog and the store (if its own). */
void tenv_free(struct tenv *e);
/* Close and open the ledger and the catalog again (a restart: the lease is
 * released, then taken again); roll.cat and roll.ledger follow. */
void tenv_reopen(struct tenv *e);
/* The same after a crash: the lease is not released (the ledger's release
 * fails), so the next acquire takes over an unreleased lease. */
void tenv_crash_reopen(struct tenv *e);
/* The ledger's refresh; fails the test unless it returns 0. */
void tenv_refresh(struct tenv *e);
/* The catalog's log position. */
int64_t tenv_log_pos(struct tenv *e);

/* Commit an upload of len deterministic bytes (seed) to the catalog; returns
 * its index in e->up. */
size_t tenv_upload(struct tenv *e, const char *table, const char *period, const char *dataset,
                   size_t len, unsigned seed);
/* The same with data that are valid blocks of the layout: records records
 * (each one long) in blocks blocks (null codec, the layout's sync marker). */
size_t tenv_upload_records(struct tenv *e, const char *table, const char *period,
                           const char *dataset, unsigned records, unsigned blocks);
/* The layout header of (table, period) (a copy in out). */
void tenv_header(struct tenv *e, const char *table, const char *period, struct bfs_buf *out);
/* The bytes of the dataset file: its header, then its uploads' bytes in
 * commit order (the uploads up[0..n_up) only). */
void tenv_dataset_bytes(struct tenv *e, const char *table, const char *period, const char *dataset,
                        size_t n_up, struct bfs_buf *out);
/* Files in the work directory (not counting . and ..), names into names (if
 * not NULL, up to max). */
size_t tenv_work_files(struct tenv *e, char names[][128], size_t max);
/* The content of a file (fails the test if it cannot be read). */
void read_whole(const char *path, struct bfs_buf *out);
/* One integer from the catalog, through a connection of its own. */
int64_t tenv_sql_int(struct tenv *e, const char *sql);
/* Every row of a query, as text (columns '|'-separated, rows by newlines;
 * blobs in hex), into out. */
void tenv_sql_text(struct tenv *e, const char *sql, struct bfs_buf *out);

/* Create (table, period) with codec and the uploads' schema, as a ledger
 * does for an archive of the store (bfs_catalog_partition_add). */
void tenv_add_partition(struct bfs_catalog *cat, const char *table, const char *period,
                        enum bfs_codec codec);
/* Load the checkpoint file at path into cat at log position upto, as the
 * ledger does (bfs_checkpoint_read through bfs_catalog_ckpt_visitor, between
 * bfs_catalog_ckpt_begin and _end): the end's result (or the begin's), err
 * saying why. */
int tenv_load_checkpoint(struct bfs_catalog *cat, const char *path, int64_t upto,
                         struct bfs_err *err);

/* ---- the model of a roll ---- */

struct mindex {
    char dataset[80];
    uint64_t start, length, records;
    int64_t at_lo, at_hi; /* its uploaded_at: the newest upload's time, between these */
};
struct march {
    char key[256];
    char table[32], period[32];
    struct bfs_buf bytes; /* header + the rows' bytes */
    uint64_t header_length;
    char fingerprint[17]; /* the partition's schema */
    enum bfs_codec codec;
    struct mindex *idx;
    size_t n_idx;
};
struct mroll {
    struct march *a;
    size_t n;
    uint64_t rows, bytes; /* the uploads rolled, their bytes */
};

/* The archives a roll of uploads up[first..last] (claimed together) must make
 * under roll_id with archive_max_bytes max: rows ordered by (table, period,
 * dataset, row id), a (table, period) per group, split before a row that
 * would make an archive exceed max. */
void model_roll(struct tenv *e, const char *roll_id, size_t first, size_t last, uint64_t max,
                struct mroll *out);
void model_free(struct mroll *m);

/* Everything a committed roll must leave, exactly once: the store holds
 * exactly the model's archives (no other, same bytes) plus `others` archives
 * of other rolls, and under "_battlefs/" only schemas, manifests, log entries
 * and leases; the roll's manifest (at the key of the node its id starts with)
 * decodes to exactly the model's archives and index rows; exactly one roll
 * entry of the log (which has no gap) names it, with the manifest's size and
 * SHA-256; each archive's schema is in the store; archived_files and
 * block_indexes hold exactly the model's rows for roll_id (the roll at the
 * entry's log position); no roll is pending, the work directory is empty, and
 * no put ever replaced an object with other bytes but a lease. */
void check_roll(struct tenv *e, const char *roll_id, const struct mroll *m, size_t others);
/* Each dataset of up[0..n_up) reads (header + segments, cold ones from the
 * store) as its uploads' bytes in order. */
void check_datasets(struct tenv *e, size_t n_up);
/* The same, read through reader's catalog (and store): e's datasets as
 * another mount sees them once it has applied e's rolls. */
void check_datasets_in(struct tenv *reader, struct tenv *e, size_t n_up);

#endif
