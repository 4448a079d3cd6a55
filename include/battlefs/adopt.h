/* adopt.h - rolls committed before the store's log, put into it.
 *
 * battlefs before the store's log (issue 11) committed its rolls into its own
 * catalog only: their archives are in the store under
 * "<table>/<period>/<claim time>-<row id>-<n>.avro", but no manifest and no
 * log entry describes them, so a catalog rebuilt from the store, a replica or
 * another node never saw them, and compaction left them alone. A writer
 * mount adopts them: once it holds its node's lease and has read the log,
 * before it serves, it commits each such roll of its catalog into the log,
 * oldest first, exactly as a roll whose archives are put already:
 *
 *   1. its archives are checked in the store (there, of the size the catalog
 *      says, their header a battlefs layout header of the schema and codec
 *      the catalog says) and, when the catalog (one migrated from before the
 *      log) lacks their SHA-256, schema fingerprint or codec, read whole to
 *      hash them; each schema they name is put (bfs_ledger_put_schema);
 *   2. its manifest is written from the catalog's rows of the roll as they
 *      are now (its archives, their live index rows: an erasure may have
 *      removed some), with the roll's own claim time and rows and base 0
 *      (the data is older than every entry of the log: an erasure anywhere
 *      before its entry erases from it), and put create-only at
 *      "_battlefs/manifests/<node>/<roll id>.avro"; if a crash left one
 *      there (same bytes, or other bytes when an erasure came in between),
 *      that one is the manifest;
 *   3. bfs_ledger_commit puts its log entry (committed_at: the roll's commit
 *      time here, so the entry's bytes are the same when done again) and
 *      applies it, which stamps the rows here with their log position
 *      instead of inserting them (bfs_catalog_apply_begin).
 *
 * A kill -9 at any point is finished by the next mount: before the log entry
 * nothing refers to what was put (the manifest is found again), after it the
 * refresh at mount applies the entry, which stamps the rows. From then on the
 * roll is an ordinary roll of the log: checkpoints hold it, rebuilds and
 * replicas read it, compaction may rewrite it (docs/design.md, "Rolls from
 * before the log").
 */
#ifndef BATTLEFS_ADOPT_H
#define BATTLEFS_ADOPT_H

#include "battlefs/err.h"

struct bfs_catalog;
struct bfs_errors;
struct bfs_ledger;
struct bfs_stats;
struct bfs_store;

/* Where the fault hook is called (test builds: -o fault=adopt:STEP). */
enum bfs_adopt_step {
    BFS_ADOPT_AFTER_SCHEMAS = 0, /* archives checked, schemas put; no manifest */
    BFS_ADOPT_AFTER_MANIFEST,    /* the manifest put; no log entry */
    BFS_ADOPT_AFTER_LOG,         /* the log entry put; not applied here */
    BFS_ADOPT_AFTER_COMMIT,      /* applied: the roll is adopted */
};
#define BFS_ADOPT_STEPS 4
const char *bfs_adopt_step_name(enum bfs_adopt_step step);
/* 0 with *out, or -EINVAL. */
int bfs_adopt_step_parse(const char *name, enum bfs_adopt_step *out);
/* Non-zero stops the adoption there, as a crash would (nothing undone). */
typedef int (*bfs_adopt_fault_fn)(void *arg, enum bfs_adopt_step step, const char *roll_id);

struct bfs_adopt_deps {
    struct bfs_catalog *cat;
    struct bfs_store *store;
    struct bfs_ledger *ledger;
    struct bfs_stats *stats;   /* rolls_unadopted; the progress of the reading */
    struct bfs_errors *errors; /* a line per roll that cannot be adopted */
    const char *node;          /* -o node: the manifests' and entries' node */
    const char *work_dir;      /* a manifest while it is committed */
    bfs_adopt_fault_fn fault;  /* NULL: none */
    void *fault_arg;
};

/* Adopt every roll the catalog committed before the store's log, oldest
 * first (one INFO line each, from the ledger). A roll whose archives are not
 * in the store as the catalog has them (missing, another size, not the
 * header of its schema) is left as it is, with an ERROR line and a line in
 * .battlefs/errors, and the next ones are adopted. 0 (none is left but such
 * rolls), or the first other failure, -errno with err (a store or catalog
 * error, the lease: what is left is adopted at the next mount). */
int bfs_adopt_run(const struct bfs_adopt_deps *d, struct bfs_err *err);

#endif
