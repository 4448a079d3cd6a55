/* manifest.h - the manifest of a roll: what it added to the store, as an
 * immutable Avro object container file any Avro reader can read; and the
 * checkpoint, the same format holding the whole applied log up to a position.
 *
 * A manifest is one roll of one node: a Roll entry first, then each archive
 * the roll put (an Archive entry) followed by that archive's index rows (one
 * Index entry per dataset). Together with the archives and the schemas it is
 * enough to rebuild every archived_files and block_indexes row of the roll
 * exactly (docs/format.md, "Manifests"). Writing and reading stream: memory
 * does not grow with the number of entries.
 *
 * The bytes are a pure function of the entries (the sync marker is derived
 * from the manifest schema, blocks are cut at fixed entry counts, deflate at a
 * fixed level), so a roll rebuilt after a crash writes an identical manifest
 * and a create-only put of it finds the same bytes.
 *
 * A checkpoint is the index of every roll committed in the log up to a
 * position, in log order: per roll a Roll entry, a Commit entry (where the
 * roll stands in the log), its Archive and Index entries; then a Node entry
 * per node (its highest epoch in the log), in increasing order of names
 * (docs/format.md, "Checkpoints"). Same header, blocks and determinism as a
 * manifest; a manifest has no Commit or Node entry.
 */
#ifndef BATTLEFS_MANIFEST_H
#define BATTLEFS_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/ocf.h"

/* The manifest's own schema (Avro JSON) and the version in its metadata. */
extern const char bfs_manifest_schema[];
/* Version 1's schema (read, never written): no Archive.versions. */
extern const char bfs_manifest_schema_v1[];
/* Version 2's schema (read, never written): no Roll.base, no Compact,
 * Retire or Erase entries. */
extern const char bfs_manifest_schema_v2[];
#define BFS_MANIFEST_VERSION "3"
/* Most schema versions one archive names. */
#define BFS_MANIFEST_VERSIONS_MAX 256

struct bfs_manifest_roll {
    const char *node;    /* the writer's -o node name */
    const char *roll_id; /* the roll's deterministic id */
    int64_t rows;        /* buffer rows (uploads) the roll took, >= 1 */
    int64_t bytes;       /* their bytes: the sum of the index rows' lengths */
    int64_t claimed_at;  /* unix seconds of the roll's claim */
    /* The log position the writer had applied when it claimed the rows: an
     * erasure after it and before the roll's own entry also erases the
     * roll's rows of that dataset (the writer had not seen it). Version 2
     * manifests: INT64_MAX (none of them). */
    int64_t base;
};

/* A compaction of one partition (compact.c): the archives it puts replace
 * every live archive of the partition that the log up to `upto` holds (its
 * Retire entries list them); they stand where those stood, so dataset files
 * do not change. */
struct bfs_manifest_compact {
    const char *node;
    const char *compact_id; /* deterministic, unique: "<node>-<time>-<state>-c<upto>" */
    const char *table;
    const char *period;
    int64_t upto;    /* the log position the compactor had applied, >= 1 */
    int64_t bytes;   /* the sum of its index rows' lengths */
    int64_t retired; /* how many Retire entries follow */
};

/* An erasure, as a checkpoint holds it (the log entry holds it otherwise):
 * dataset in (table, period), or in every table and period (both NULL). */
struct bfs_manifest_erase {
    const char *node;
    const char *dataset;
    const char *table;  /* NULL: every table */
    const char *period; /* NULL with table */
    int64_t erased_at;  /* unix seconds */
};

struct bfs_manifest_archive {
    const char *key; /* store key, relative to the store root */
    const char *table;
    const char *period;
    uint64_t size;
    uint64_t header_length;
    uint8_t sha256[32];
    const char *schema_fingerprint; /* 16 hex digits: CRC-64-AVRO of the canonical form */
    enum bfs_codec codec;
    /* The writer schemas (versions) of the partition whose merge the
     * archive's schema is, at the roll's claim (fingerprints, sorted). 0: the
     * archive's schema is a version itself (and a manifest of version 1). */
    size_t n_versions;
    const char (*versions)[17];
};

struct bfs_manifest_index {
    const char *dataset;
    uint64_t start; /* byte offset of the dataset's first block in the archive */
    uint64_t length;
    uint64_t records;
    int64_t uploaded_at; /* unix seconds of the newest upload in the range */
};

struct bfs_manifest_writer;

/* Start a manifest at path (created, must not exist) with its Roll entry.
 * 0 or -errno. */
int bfs_manifest_create(const char *path, const struct bfs_manifest_roll *roll,
                        struct bfs_manifest_writer **out);
/* Start a compaction's manifest: its Compact entry; then c->retired Retire
 * entries (bfs_manifest_add_retire), then its archives and index rows. */
int bfs_manifest_create_compact(const char *path, const struct bfs_manifest_compact *c,
                                struct bfs_manifest_writer **out);
/* A store key the compaction retires: -EINVAL after an archive, or past the
 * count its Compact entry gave. */
int bfs_manifest_add_retire(struct bfs_manifest_writer *w, const char *key);
/* Add an archive; its index rows follow with bfs_manifest_add_index. 0,
 * -EINVAL (a field that cannot be stored: bad names, an index before any
 * archive (of its roll, in a checkpoint), a range outside the archive; in a
 * checkpoint, before any roll or after a node), or -errno. */
int bfs_manifest_add_archive(struct bfs_manifest_writer *w, const struct bfs_manifest_archive *a);
int bfs_manifest_add_index(struct bfs_manifest_writer *w, const struct bfs_manifest_index *x);
/* Write the last block and close: 0 with the file's SHA-256 and size, or
 * -errno (the file is removed; -EINVAL: a checkpoint without entries). The
 * writer is freed either way. */
int bfs_manifest_finish(struct bfs_manifest_writer *w, uint8_t sha256[32], uint64_t *size);
/* Give up: close, remove the file, free. */
void bfs_manifest_abort(struct bfs_manifest_writer *w);

/* What a read calls for each entry, in file order. A non-zero return stops
 * the read and is returned. The pointers are valid during the call only. */
struct bfs_manifest_visitor {
    int (*roll)(void *ctx, const struct bfs_manifest_roll *r);
    int (*archive)(void *ctx, const struct bfs_manifest_archive *a);
    int (*index)(void *ctx, const struct bfs_manifest_index *x);
    void *ctx;
    /* A compaction's manifest: its Compact entry (first), its Retire entries. */
    int (*compact)(void *ctx, const struct bfs_manifest_compact *c);
    int (*retire)(void *ctx, const char *key);
};

/* Read the manifest in the file fd (from its start), block by block, checking
 * everything (magic, schema, sync, counts, every field's bounds and names, a
 * Roll or Compact entry first and only there, a Compact entry's Retire
 * entries next and as many as it says, index rows after an archive and
 * inside it). 0, the visitor's non-zero return, or -EINVAL with err saying where and
 * what, -ENOMEM, -EIO (err's code only). */
int bfs_manifest_read(int fd, const struct bfs_manifest_visitor *v, struct bfs_err *err);

/* ---- checkpoints ---- */

/* Start a checkpoint at path (created, must not exist). 0 or -errno. */
int bfs_checkpoint_create(const char *path, struct bfs_manifest_writer **out);
/* The next roll: its Roll and Commit entries (seq: its log position, above
 * the last roll's; epoch: its log entry's; committed_at: unix seconds). Its
 * archives and index rows follow with bfs_manifest_add_archive and
 * bfs_manifest_add_index, as in a manifest. 0, -EINVAL (a bad field, seq not
 * above the last one, after a Node entry, or not a checkpoint), or -errno. */
int bfs_checkpoint_add_roll(struct bfs_manifest_writer *w, const struct bfs_manifest_roll *r,
                            int64_t seq, int64_t epoch, int64_t committed_at);
/* A compaction committed at log position seq (its Compact entry with its
 * Commit entry; retired is 0 here: a checkpoint lists only live archives),
 * its archives and index rows following as for a roll. */
int bfs_checkpoint_add_compact(struct bfs_manifest_writer *w, const struct bfs_manifest_compact *c,
                               int64_t seq, int64_t epoch, int64_t committed_at);
/* An erasure committed at log position seq (no archive follows it). */
int bfs_checkpoint_add_erase(struct bfs_manifest_writer *w, const struct bfs_manifest_erase *e,
                             int64_t seq, int64_t epoch, int64_t committed_at);
/* After the last roll, each node with its highest epoch in the log, in
 * increasing (strcmp) order of names. 0, -EINVAL (a bad name or epoch, a name
 * not above the last one, not a checkpoint), or -errno. No roll, archive or
 * index row may follow. bfs_manifest_finish ends the checkpoint (-EINVAL if it
 * has no entry at all: nothing reads an empty checkpoint), bfs_manifest_abort
 * gives it up. */
int bfs_checkpoint_add_node(struct bfs_manifest_writer *w, const char *node, int64_t epoch);

/* What a checkpoint read calls, in file order: roll (once its Commit entry is
 * read), the roll's archives and index rows, then node for each node. A
 * non-zero return stops the read and is returned. The pointers are valid
 * during the call only. */
struct bfs_checkpoint_visitor {
    int (*roll)(void *ctx, const struct bfs_manifest_roll *r, int64_t seq, int64_t epoch,
                int64_t committed_at);
    int (*archive)(void *ctx, const struct bfs_manifest_archive *a);
    int (*index)(void *ctx, const struct bfs_manifest_index *x);
    int (*node)(void *ctx, const char *node, int64_t epoch);
    void *ctx;
    /* A compaction (then its archives and index rows), an erasure. */
    int (*compact)(void *ctx, const struct bfs_manifest_compact *c, int64_t seq, int64_t epoch,
                   int64_t committed_at);
    int (*erase)(void *ctx, const struct bfs_manifest_erase *e, int64_t seq, int64_t epoch,
                 int64_t committed_at);
};

/* Read the checkpoint in the file fd (from its start), streaming, with the
 * checks of bfs_manifest_read, and: each Roll entry directly followed by its
 * Commit entry, seq strictly increasing, an archive's index rows in the same
 * roll, Node entries only after the last roll and in increasing order of
 * names, at least one entry. Returns as bfs_manifest_read. The file does not
 * say how far the log went (the last roll may come before fences): the
 * position is the caller's, e.g. in its name. */
int bfs_checkpoint_read(int fd, const struct bfs_checkpoint_visitor *v, struct bfs_err *err);

#endif
