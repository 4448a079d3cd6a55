/* testenv.h - what the roller's and the reader's unit tests share: an
 * in-memory store (the vtable of store.h), a real catalog in a temporary
 * directory, uploads committed straight to the catalog with a model of their
 * bytes, and the model of a roll (the archives and index rows it must make).
 * The helpers fail the running cmocka test on any unexpected result. */
#ifndef BATTLEFS_TESTENV_H
#define BATTLEFS_TESTENV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/catalog.h"
#include "battlefs/errors.h"
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
};

struct memstore {
    struct bfs_store base;
    pthread_mutex_t lock; /* guards everything below */
    struct memobj *obj;
    size_t n, cap;
    unsigned puts;       /* successful puts */
    unsigned changed;    /* puts that replaced an object with other bytes */
    unsigned bad_sha;    /* puts whose digest was not the file's */
    unsigned linked;     /* puts that were offered the file (may_link) */
    int put_rc;          /* nonzero: every put fails with it */
    const char *put_msg; /* with put_rc: what the failing put says (as s3:// does), or NULL */
    unsigned gets;       /* get_range calls */
    struct {
        char key[128];
        uint64_t off, len;
    } get_log[MEMSTORE_GET_LOG];
    /* Called at the start of every get_range, without the lock (a test may
     * roll from there). */
    void (*on_get)(void *arg, const char *key);
    void *on_get_arg;
};

/* A new empty store; wants_sha256: put_wants_sha256 (every digest handed to
 * a put is then checked against the file). */
struct memstore *memstore_new(int wants_sha256);
void memstore_free(struct memstore *m);
/* The object at key, or NULL. Not thread-safe against puts. */
const struct memobj *memstore_find(struct memstore *m, const char *key);
unsigned memstore_gets(struct memstore *m);

/* ---- a catalog with uploads ---- */

/* One upload, as committed. */
struct tupload {
    char table[32], period[32], dataset[80];
    uint8_t *data;
    size_t len;
    uint64_t records;
};

struct tenv {
    char dir[64];
    char db[96];
    char work[96];
    struct bfs_catalog *cat;
    struct memstore *ms;
    struct bfs_stats stats;
    struct bfs_errors errors;
    struct bfs_roll_deps roll; /* cat, store, stats, errors, work_dir; archive_max_bytes 1M */
    char *canon;
    size_t canon_len;
    struct tupload *up;
    size_t n_up, cap_up;
};

/* A temporary directory with catalog.db and work/, and a memstore. */
struct tenv *tenv_new(int wants_sha256);
void tenv_free(struct tenv *e);
/* Close and open the catalog again (a restart); roll.cat follows. */
void tenv_reopen(struct tenv *e);

/* Commit an upload of len deterministic bytes (seed) to the catalog; returns
 * its index in e->up. */
size_t tenv_upload(struct tenv *e, const char *table, const char *period, const char *dataset,
                   size_t len, unsigned seed);
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

/* ---- the model of a roll ---- */

struct mindex {
    char dataset[80];
    uint64_t start, length, records;
};
struct march {
    char key[256];
    char table[32], period[32];
    struct bfs_buf bytes; /* header + the rows' bytes */
    uint64_t header_length;
    struct mindex *idx;
    size_t n_idx;
};
struct mroll {
    struct march *a;
    size_t n;
};

/* The archives a roll of uploads up[first..last] (claimed together) must make
 * under roll_id with archive_max_bytes max: rows ordered by (table, period,
 * dataset, row id), a (table, period) per group, split before a row that
 * would make an archive exceed max. */
void model_roll(struct tenv *e, const char *roll_id, size_t first, size_t last, uint64_t max,
                struct mroll *out);
void model_free(struct mroll *m);

/* Everything a committed roll must leave, exactly once: the store holds
 * exactly the model's objects (no other, same bytes) plus `others` objects
 * of earlier rolls, archived_files and block_indexes hold exactly the model's
 * rows for roll_id, no roll is pending, the work directory is empty, and no
 * put ever replaced an object with other bytes. */
void check_roll(struct tenv *e, const char *roll_id, const struct mroll *m, size_t others);
/* Each dataset of up[0..n_up) reads (header + segments, cold ones from the
 * store) as its uploads' bytes in order. */
void check_datasets(struct tenv *e, size_t n_up);

#endif
