/* catalog.h - the SQLite catalog: schemas, partitions, hot buffer, archives, indexes.
 *
 * One database, <state>/catalog.db, in WAL mode with synchronous=FULL. Versioned
 * by PRAGMA user_version with forward-only migrations. Safe to call from many
 * threads: writes go through one connection under a mutex, concurrent upload
 * commits are grouped into one transaction (one fsync for the group), reads use
 * a small pool of read-only connections so they never wait for a commit.
 *
 * Tables (the names follow the FUSOU system battlefs replaces; details in
 * src/catalog_db.c):
 *   schemas(id, canonical UNIQUE, fingerprint, json)
 *   partitions(id, table_name, period_tag, schema_id, codec, sync, schema_json,
 *              header BLOB, header_length, created_at, vgen, UNIQUE(table_name, period_tag))
 *              schema_id..header_length: the layout of the merged schema of the
 *              partition's versions; vgen counts changes of the version set
 *   partition_versions(partition_id, schema_id, added_at, alias)
 *              the writer schemas (versions) seen, and the merges data is
 *              stored in (aliases: not merged again)
 *   buffer_rows(id, table_name, period_tag, dataset_id, schema_id, record_count,
 *               byte_length, created_at, conv_schema, conv_length, packed)
 *               the hot uploads' metadata (schema_id: the writer schema;
 *               conv_*: the length converted to the merged schema conv_schema)
 *   buffer_data(id, data BLOB)                      their normalised blocks
 *   buffer_logs   a VIEW joining the two: id, table_name, period_tag, dataset_id,
 *                 schema_id, record_count, byte_length, data, created_at, roll_id
 *                 (the pending roll that claimed the row, else NULL)
 *   buffer_totals(uploads, bytes)                   kept by triggers
 *   rolls(id TEXT, claimed_at, committed_at, first_row, last_row, row_count,
 *         byte_count)   a roll claims the buffer rows with ids in [first_row, last_row]
 *   archived_files(id, file_path UNIQUE, table_name, period_tag, size,
 *                  header_length, roll_id, seq, created_at, sha256,
 *                  schema_fingerprint, codec, schema_id, versions)
 *                  versions: the fingerprints of the versions its schema
 *                  merges (its manifest's), NULL when it is a version
 *   roll_versions(roll_id, table_name, period_tag, schema_id)
 *                  a claimed roll's partitions' versions at the claim
 *   block_indexes(id, dataset_id, table_name, period_tag, file_id, start_byte,
 *                 length, record_count, uploaded_at, conv_schema, conv_length)
 */
#ifndef BATTLEFS_CATALOG_H
#define BATTLEFS_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/err.h"
#include "battlefs/buf.h"
#include "battlefs/codec.h"

struct bfs_catalog;

/* Open (creating with mode 0600 and migrating as needed) the catalog at path.
 * 0, -ENOTSUP (the database is newer than this code; logged), or -errno. */
int bfs_catalog_open(const char *path, struct bfs_catalog **out);
void bfs_catalog_close(struct bfs_catalog *cat);

/* A (table, period): its codec and the layout of its merged schema (the
 * merge of every writer schema stored in it: evolve.h). With one version,
 * the merged schema is that version, text and all. */
struct bfs_partition {
    int64_t id;
    int64_t schema_id; /* the merged schema's row */
    enum bfs_codec codec;
    uint8_t sync[16];  /* bfs_schema_sync of the merged schema */
    char *schema_json; /* the merged schema's text */
    size_t schema_len;
    char *canonical; /* its Parsing Canonical Form */
    size_t canonical_len;
    uint8_t *header; /* the layout header bytes (bfs_ocf_layout_header) */
    size_t header_len;
    char fingerprint[17]; /* of the merged schema: 16 hex digits */
    int64_t vgen;         /* changes of the version set (the layout changes with it) */
    int64_t merged_at;    /* unix seconds of the last version added to several (0: one version) */
};
void bfs_partition_free(struct bfs_partition *p);

/* 0 (p filled, free with bfs_partition_free), -ENOENT, or -errno. */
int bfs_catalog_partition_get(struct bfs_catalog *cat, const char *table, const char *period,
                              struct bfs_partition *p);

/* Checkpoints done by the catalog's checkpointer thread since open. */
uint64_t bfs_catalog_checkpoints(struct bfs_catalog *cat);
/* Since open: the times the WAL began again from its start after at least
 * 1000 frames (the checkpointer finished a checkpoint between two commits),
 * and the checkpoints commits made themselves because the WAL reached 16000
 * frames (the checkpointer did not keep up; each holds every upload). */
void bfs_catalog_wal_counts(struct bfs_catalog *cat, uint64_t *restarts, uint64_t *inline_ckpts);
/* The histograms of the upload group commits' phases and of the
 * checkpointer's holds of the writer (metrics.h), valid while cat is open. */
struct bfs_commit_timing;
const struct bfs_commit_timing *bfs_catalog_commit_timing(struct bfs_catalog *cat);

/* The layout of a committed (table, period): its merged schema's sync marker
 * and its codec. Cached in memory: the ingest path asks this at every upload.
 * A hint: the sync marker changes when a version is added (the slot is
 * dropped then, but a caller may race with it); the commit checks. 0,
 * -ENOENT, or -errno. */
int bfs_catalog_partition_layout(struct bfs_catalog *cat, const char *table, const char *period,
                                 uint8_t sync[16], enum bfs_codec *codec);

/* A partition's layout after a version is added: the merged schema of its
 * versions and the new one (bfs_schema_merge), computed by the caller from
 * the versions it read at base_vgen (bfs_catalog_partition_versions). */
struct bfs_merged {
    int64_t base_vgen;
    const char *json;
    size_t len;
    const char *canonical;
    size_t canonical_len;
    uint64_t fingerprint;
    uint8_t sync[16];
    const uint8_t *header; /* bfs_ocf_layout_header(json, the partition's codec, sync) */
    size_t header_len;
};

/* Drop the cached layout of (table, period): after a commit that added a
 * version (upload->merged was used). */
void bfs_catalog_layout_forget(struct bfs_catalog *cat, const char *table, const char *period);

/* One validated, normalised upload to commit. The catalog stores what it is
 * handed: it derives nothing from the schema (under its writer lock). */
struct bfs_upload {
    const char *table;
    const char *period;
    const char *dataset;
    const char *schema_json; /* the upload's schema text */
    size_t schema_len;
    const char *canonical; /* its Parsing Canonical Form */
    size_t canonical_len;
    uint64_t fingerprint; /* bfs_schema_rabin(canonical): a new schema's row, messages */
    uint8_t sync[16];     /* bfs_schema_sync(canonical): the layout's sync marker */
    enum bfs_codec codec; /* the codec data is normalised to */
    /* The layout header of the partition, if this upload creates it:
     * bfs_ocf_layout_header(schema_json, codec, sync). NULL when the caller
     * found the partition's layout (bfs_catalog_partition_layout returned 0):
     * partitions are never removed, so the commit will not create it. */
    const uint8_t *header;
    size_t header_len;
    /* When the upload's schema is not a version of the partition yet: the
     * layout it makes. NULL otherwise (the commit then fails with -EAGAIN if
     * the schema turns out to be new). */
    const struct bfs_merged *merged;
    /* The schema data is in when it is not the upload's own (converted to
     * the partition's merged schema at ingest: its json, canonical form and
     * fingerprint are read); NULL: the upload's. */
    const struct bfs_merged *stored;
    const uint8_t *data; /* normalised blocks, no header */
    size_t len;
    uint64_t records;
    /* 1: deflate blocks framed stored (BFS_OCF_DEFLATE_STORED), to be
     * compressed by the packer (packer.h): the row is stored with packed = 0. */
    int deferred;
};

/* Commit one upload durably (the transaction's commit is fsynced before this
 * returns). Concurrent callers are committed together in one transaction.
 * Creates the schema and partition rows on first use.
 * Returns 0, or -errno with err (may be NULL) saying why:
 *   -EINVAL  the upload would create the partition but has no header;
 *   -EAGAIN  the partition exists with another codec than upload->codec
 *            (created concurrently): normalise again and retry; or the
 *            upload's schema is not a version of the partition and
 *            upload->merged is NULL or was computed at another vgen: read
 *            the versions, merge again and retry;
 *   -ENOSPC  the disk is full; -EIO otherwise.
 * Nothing is logged: the caller (ingest) decides and logs the rejection. */
int bfs_catalog_commit_upload(struct bfs_catalog *cat, const struct bfs_upload *up,
                              struct bfs_err *err);

/* How many upload transactions (groups of one or more uploads) have been
 * committed or attempted since open: for tests and benchmarks. */
uint64_t bfs_catalog_commit_groups(struct bfs_catalog *cat);
/* Those groups by their uploads: 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65 or more
 * (.battlefs/stats "commit_group_uploads"). */
#define BFS_CATALOG_GROUP_BUCKETS 8
void bfs_catalog_group_sizes(struct bfs_catalog *cat, uint64_t out[BFS_CATALOG_GROUP_BUCKETS]);

/* For tests: *value = PRAGMA name (letters and '_' only) as the writer
 * connection reads it between two write transactions (under the writer's
 * lock). 0, -EINVAL (a bad name), -ENOENT (the pragma returns no value), -EIO. */
int bfs_catalog_writer_pragma(struct bfs_catalog *cat, const char *name, int64_t *value);

/* Listing: cb is called once per distinct name, sorted; a non-zero return from
 * cb stops the walk and is returned. Hot and cold data are merged. */
typedef int (*bfs_name_cb)(void *ctx, const char *name);
int bfs_catalog_list_tables(struct bfs_catalog *cat, bfs_name_cb cb, void *ctx);
int bfs_catalog_list_periods(struct bfs_catalog *cat, const char *table, bfs_name_cb cb, void *ctx);
int bfs_catalog_list_datasets(struct bfs_catalog *cat, const char *table, const char *period,
                              bfs_name_cb cb, void *ctx);
/* 0 if the table (period) has any data, else -ENOENT. */
int bfs_catalog_table_exists(struct bfs_catalog *cat, const char *table);
int bfs_catalog_period_exists(struct bfs_catalog *cat, const char *table, const char *period);

enum bfs_segment_kind { BFS_SEG_HOT = 1, BFS_SEG_COLD = 2 };

/* One piece of a dataset's virtual file. */
struct bfs_segment {
    enum bfs_segment_kind kind;
    int64_t id;      /* buffer_logs.id (hot) or archived_files.id (cold) */
    char *key;       /* cold: archived_files.file_path; NULL for hot */
    uint64_t offset; /* cold: start_byte in the archive; hot: 0 */
    uint64_t length; /* stored bytes */
    uint64_t records;
    int64_t row;       /* buffer_rows.id (hot) or block_indexes.id (cold): the memo's key */
    int64_t schema_id; /* the writer schema of the stored bytes */
    /* Its length in the file: length when schema_id is the merged schema,
     * else the converted length if known (vknown). */
    uint64_t vlength;
    int vknown;
    int stored; /* hot: not packed yet (buffer_rows.packed = 0) */
};

struct bfs_schema_text {
    int64_t id;
    char *json;
    size_t len;
};

/* A consistent snapshot of a dataset: header + cold segments (oldest roll
 * first, archives in order) + hot segments (oldest upload first). */
struct bfs_dataset_view {
    struct bfs_partition part;
    size_t n;
    struct bfs_segment *seg;
    uint64_t size;  /* part.header_len + sum of the known vlengths */
    size_t unknown; /* segments whose converted length is not known yet */
    size_t stored;  /* hot segments not packed yet (bfs_segment.stored) */
    int64_t mtime;  /* unix seconds of the newest upload, or of the last merge if newer */
    /* The texts of the writer schemas other than the merged one. */
    size_t n_schemas;
    struct bfs_schema_text *schemas;
};
/* 0, -ENOENT (no such dataset), or -errno. Free with bfs_dataset_view_free. */
int bfs_catalog_dataset(struct bfs_catalog *cat, const char *table, const char *period,
                        const char *dataset, struct bfs_dataset_view *v);
void bfs_dataset_view_free(struct bfs_dataset_view *v);
/* Size and mtime only (for getattr): 0, -ENOENT, -EAGAIN (a segment's
 * converted length is not known yet: take a view and measure it), -errno. */
int bfs_catalog_dataset_stat(struct bfs_catalog *cat, const char *table, const char *period,
                             const char *dataset, uint64_t *size, int64_t *mtime);

/* The writer schemas of a partition, and the generation of that set. */
struct bfs_versions {
    int64_t vgen;
    int64_t merged_id; /* the partition's schema_id */
    size_t n;
    struct bfs_schema_text *v; /* in id order */
};
/* The versions (not the aliases): 0 (free with bfs_versions_free), -ENOENT
 * (no partition), -errno. */
int bfs_catalog_partition_versions(struct bfs_catalog *cat, const char *table, const char *period,
                                   struct bfs_versions *out);
void bfs_versions_free(struct bfs_versions *v);
/* 1 if the partition has a version or an alias of fingerprint fp (16 hex
 * digits), 0 if not, -ENOENT (no partition), -errno. */
int bfs_catalog_partition_has_version(struct bfs_catalog *cat, const char *table,
                                      const char *period, const char *fp);
/* Add a writer schema (text json, canonical form, fingerprint) as a version
 * of the existing partition, with the layout m it makes (m->base_vgen: the
 * vgen the caller merged at). 0 with its schema row in *schema_id (also when
 * it is a version already), -EAGAIN (the versions changed meanwhile: merge
 * again), -ENOENT, -errno; err. */
int bfs_catalog_partition_add_version(struct bfs_catalog *cat, const char *table,
                                      const char *period, const char *json, size_t len,
                                      const char *canonical, size_t canonical_len,
                                      uint64_t fingerprint, const struct bfs_merged *m,
                                      int64_t *schema_id, struct bfs_err *err);
/* Record a schema the partition's data is stored in that is a merge of its
 * versions (a roll's archive schema) as an alias: known to the partition
 * (bfs_catalog_partition_has_version finds it, archives in it apply), but not
 * one of the versions merged into its layout. 0 with its schema row in
 * *schema_id, -ENOENT (no partition), -errno; err. */
int bfs_catalog_partition_add_alias(struct bfs_catalog *cat, const char *table, const char *period,
                                    const char *json, size_t len, const char *canonical,
                                    size_t canonical_len, uint64_t fingerprint, int64_t *schema_id,
                                    struct bfs_err *err);
/* The versions of (table, period) when roll_id claimed its rows (for a roll
 * claimed before they were recorded: its rows' schemas), in id order. 0
 * (free with bfs_versions_free; vgen and merged_id are 0), -errno. */
int bfs_catalog_roll_versions(struct bfs_catalog *cat, const char *roll_id, const char *table,
                              const char *period, struct bfs_versions *out);
/* The text of schema row id: 0 (*json malloc'd, NUL-terminated), -ENOENT, -errno. */
int bfs_catalog_schema_json(struct bfs_catalog *cat, int64_t id, char **json, size_t *len);

/* Memoise segments' converted lengths (one write transaction). */
struct bfs_conv_memo {
    enum bfs_segment_kind kind;
    int64_t row;       /* bfs_segment.row */
    int64_t merged_id; /* the merged schema the length is for */
    uint64_t length;
};
int bfs_catalog_conv_memo(struct bfs_catalog *cat, const struct bfs_conv_memo *m, size_t n);

/* ---- packing (packer.h): compression off the close path ---- */

/* Up to max ids of rows not packed yet with first <= id <= last, ascending,
 * into ids (*n of them). 0 or -errno. */
int bfs_catalog_unpacked(struct bfs_catalog *cat, int64_t first, int64_t last, int64_t *ids,
                         size_t max, size_t *n);
/* Hot row id's whole blob into out (replacing its contents) and whether it
 * is packed. 0, -ENOENT (no such row), -errno. */
int bfs_catalog_row_data(struct bfs_catalog *cat, int64_t id, struct bfs_buf *out, int *packed);
/* One packed row: its new blob. */
struct bfs_pack_row {
    int64_t id;
    const uint8_t *data;
    size_t len;
};
/* Replace the blob, byte_length and packed flag of each row still unpacked
 * in ONE write transaction (a row packed or deleted meanwhile is left as it
 * is). *applied (may be NULL): the rows replaced. 0 or -errno. */
int bfs_catalog_pack_commit(struct bfs_catalog *cat, const struct bfs_pack_row *rows, size_t n,
                            size_t *applied);

/* Roll roll_id's row range and the bytes its rows hold now (packed rows
 * are smaller than at the claim: rolls.byte_count stays the claim's, an
 * upper bound). 0, -ENOENT, -errno. */
int bfs_catalog_roll_range(struct bfs_catalog *cat, const char *roll_id, int64_t *first,
                           int64_t *last, uint64_t *bytes);

/* Read len bytes at off of hot row id's data into buf. 0, -ENOENT if the row
 * is gone (rolled), -EIO. */
int bfs_catalog_read_hot(struct bfs_catalog *cat, int64_t id, uint64_t off, void *buf, size_t len);
/* The same for many rows in turn (a roll's build): a reader keeps one read
 * connection and one open blob, moved from row to row without compiling a
 * statement each time, and, while the rows it reads are 16 KiB long on
 * average, reads catalog.db through a memory map of it, dropped and made again
 * once it has added about BFS_HOT_MAP_WINDOW to the daemon's resident pages
 * (looked at in /proc/self/statm), and by a release.
 * While a blob is open, its read transaction keeps the WAL from being reset:
 * release it now and then (the roll does at each archive). Free with
 * bfs_catalog_hot_reader_free. */
#define BFS_HOT_MAP_WINDOW (4u << 20)
struct bfs_hot_reader;
int bfs_catalog_hot_reader(struct bfs_catalog *cat, struct bfs_hot_reader **out);
/* As bfs_catalog_read_hot. A failure releases the reader. */
int bfs_catalog_hot_read(struct bfs_hot_reader *r, int64_t id, uint64_t off, void *buf, size_t len);
/* Close the blob and give the connection back (r may be NULL). */
void bfs_catalog_hot_release(struct bfs_hot_reader *r);
void bfs_catalog_hot_reader_free(struct bfs_hot_reader *r);

/* Current state, for .battlefs/stats. */
struct bfs_catalog_counts {
    uint64_t buffer_uploads;
    uint64_t buffer_bytes;
    uint64_t archived_files;
    uint64_t pack_pending;                           /* hot rows not packed yet */
    uint64_t group_sizes[BFS_CATALOG_GROUP_BUCKETS]; /* bfs_catalog_group_sizes */
    uint64_t wal_restarts, wal_inline_checkpoints;   /* bfs_catalog_wal_counts */
};
int bfs_catalog_counts(struct bfs_catalog *cat, struct bfs_catalog_counts *c);
/* When the oldest upload still in the buffer was committed (Unix seconds;
 * rolled rows being claimed count until their roll commits): 0, or -ENOENT
 * when the buffer is empty, -errno. */
int bfs_catalog_oldest_buffered(struct bfs_catalog *cat, int64_t *created_at);

/* ---- Roll protocol (see docs/design.md) ---- */

#define BFS_ROLL_ID_MAX 128

/* The unfinished (claimed, not committed) roll, if any: 0 with its id (and,
 * if bytes is not NULL, the bytes it claimed), -ENOENT. */
int bfs_catalog_roll_pending(struct bfs_catalog *cat, char roll_id[BFS_ROLL_ID_MAX],
                             uint64_t *bytes);

/* Claim every unclaimed buffer row in one transaction under a new
 * deterministic roll id "<node>-<claim time>-<state id>-<first row id>" (e.g.
 * "a-20251218T130000Z-0f3a9c21-42"; the state id is the first 8 hex digits
 * of the catalog's random identity). 0 with the id and totals, -ENODATA if the buffer
 * is empty, -EBUSY if a claimed roll is not committed yet, -EINVAL (a bad
 * node name), -errno. Rows committed after the claim stay unclaimed. The roll
 * is committed by applying its log entry (bfs_catalog_apply_*). */
int bfs_catalog_roll_claim(struct bfs_catalog *cat, const char *node, char roll_id[BFS_ROLL_ID_MAX],
                           uint64_t *rows, uint64_t *bytes);

/* What a roll claimed: 0 with info, -ENOENT (no such roll), -errno. */
struct bfs_roll_info {
    int64_t claimed_at; /* unix seconds */
    uint64_t rows, bytes;
    int64_t base; /* the log position applied at the claim (0: not recorded) */
};
int bfs_catalog_roll_info(struct bfs_catalog *cat, const char *roll_id, struct bfs_roll_info *info);

struct bfs_roll_row {
    int64_t id;
    int64_t schema_id; /* the writer schema of the row's blocks */
    const char *table;
    const char *period;
    const char *dataset;
    uint64_t records;
    uint64_t length;
    int64_t created_at; /* unix seconds of the upload */
};
/* Stream the roll's rows ordered by (table, period, dataset, id); the callback
 * reads the data with bfs_catalog_read_hot. A non-zero return stops the walk
 * and is returned. The rows are read in pages: memory stays bounded and the
 * callback runs with no database connection held. -ENOENT: no such roll. */
int bfs_catalog_roll_rows(struct bfs_catalog *cat, const char *roll_id,
                          int (*cb)(void *ctx, const struct bfs_roll_row *row), void *ctx);

/* Delete up to `rows` blobs of committed rolls (left by bfs_catalog_roll_commit,
 * whose transaction would otherwise read every overflow page of 1 GiB of blobs
 * to free them, holding the writer meanwhile). One short transaction (a
 * purge lost in a crash is redone by the next). Returns the number deleted
 * (0: nothing left) or -errno. */
int bfs_catalog_purge(struct bfs_catalog *cat, int rows);

/* Store keys of every archived file, in archive (id) order (for checks and tools). */
int bfs_catalog_list_archives(struct bfs_catalog *cat, bfs_name_cb cb, void *ctx);

/* ---- The store's log (ledger.c; catalog_ledger.c) ----
 *
 * Cold data enters the catalog only by applying entries of the store's log,
 * in log order, one transaction each: a roll entry (this node's or another's)
 * with its manifest's archives and index rows, or a skipped entry (a fence, a
 * fenced roll, a roll already applied). The catalog remembers the last entry
 * applied (log_pos) and, per node, the highest lease epoch seen in the log. */

#define BFS_STATE_ID_MAX 33 /* 32 hex digits and the NUL */

/* 0 with the last log position applied (0: none) and this catalog's random
 * identity (made once, at creation: the lease holder of its mounts). */
int bfs_catalog_ledger_state(struct bfs_catalog *cat, int64_t *log_pos,
                             char state_id[BFS_STATE_ID_MAX]);
/* The highest epoch of node seen in the log (0 if none): 0 or -errno. */
int bfs_catalog_node_epoch(struct bfs_catalog *cat, const char *node, int64_t *epoch);
/* Whether roll_id is committed here: 1 (with its log position in *seq, 0 for
 * a roll committed before the log), 0 (unknown or only claimed), or -errno. */
int bfs_catalog_roll_committed(struct bfs_catalog *cat, const char *roll_id, int64_t *seq);

/* Apply log entry seq without data (a fence, a fenced or repeated roll):
 * log_pos becomes seq, node's epoch at least epoch (node NULL: none). seq must
 * be log_pos + 1 (else -ESTALE). 0 or -errno. */
int bfs_catalog_log_skip(struct bfs_catalog *cat, int64_t seq, const char *node, int64_t epoch);

/* A roll or compaction entry of the log. */
enum bfs_log_kind { BFS_LOG_ROLL = 0, BFS_LOG_COMPACT = 1 };
struct bfs_log_roll {
    int64_t seq; /* its position in the log */
    const char *node;
    const char *roll_id; /* a compaction's compact_id */
    int64_t epoch;
    int64_t claimed_at;
    int64_t committed_at;
    uint64_t rows, bytes; /* the manifest's totals (buffer rows rolled, their bytes) */
    enum bfs_log_kind kind;
    /* A roll: the log position its writer had applied at the claim
     * (INT64_MAX: not known, a manifest of version 2); a compaction: its
     * upto. An erasure after base and before seq also drops the entry's
     * index rows of the erased dataset (the writer had not seen it). */
    int64_t base;
    const char *table, *period; /* a compaction's partition */
    /* The store objects the entry retires or leaves unused are this mount's
     * to delete (its own node's entry, on a writer): store_gc. */
    int gc;
};
struct bfs_manifest_archive;
struct bfs_manifest_index;
struct bfs_cat_apply;

/* Begin applying a roll entry: one write transaction (it holds the catalog's
 * writer until bfs_catalog_apply_end) that inserts the manifest's archives and
 * index rows as they are read. When roll_id is this catalog's pending claim,
 * the entry is its commit: the end checks the index against the claimed rows
 * and deletes them. When roll_id is a roll committed here before the log
 * (adopt.h), the entry adopts it: nothing is inserted; each archive the
 * manifest names must be one of the roll's here (key, size, header length)
 * and takes the manifest's SHA-256, schema, codec and versions and the
 * entry's position (archived_files.ord), the end checks that the manifest
 * named them all and stamps the rolls row with the entry (node, log_seq,
 * epoch, committed_at, base, the manifest's rows and bytes); its index rows
 * stay as they are. 0, -ESTALE (seq is not log_pos + 1), -EALREADY (the roll
 * is committed here by the log already: nothing began; skip the entry),
 * -errno. */
int bfs_catalog_apply_begin(struct bfs_catalog *cat, const struct bfs_log_roll *r,
                            struct bfs_cat_apply **out);
/* A compaction's retired archive (before its archives): its index rows and
 * its archived_files row go. An archive that is not live in the partition
 * up to the compaction's upto makes the compaction void (it lost a race
 * with another: bfs_catalog_apply_void), which is not an error. 0 or -errno. */
int bfs_catalog_apply_retire(struct bfs_cat_apply *a, const char *key, struct bfs_err *err);
/* 1 if the compaction being applied is void: its end then applies nothing
 * but the log position (and a void rolls row, so the id is known). Known
 * after its first archive; a compaction without archives may be found void
 * only by its end (bfs_catalog_compaction_state then says 2). */
int bfs_catalog_apply_void(const struct bfs_cat_apply *a);
/* The next archive of the manifest: its partition must exist with the same
 * schema and codec (-EINVAL with err saying what differs; -ENOENT: no
 * partition). 0 or -errno. */
int bfs_catalog_apply_archive(struct bfs_cat_apply *a, const struct bfs_manifest_archive *ar,
                              struct bfs_err *err);
/* 1 if the partition of archive ar exists here and has each of its versions
 * and its schema_fingerprint (as a version or an alias), so that
 * bfs_catalog_apply_archive needs nothing made first; 0 if not (the ledger
 * makes them outside the transaction and applies the entry again), -errno. */
int bfs_catalog_apply_knows(struct bfs_cat_apply *a, const struct bfs_manifest_archive *ar);
/* An index row of the last archive, as bfs_manifest_read gives it (its
 * dataset name checked there). 0, -EINVAL (outside it), -errno. */
int bfs_catalog_apply_index(struct bfs_cat_apply *a, const struct bfs_manifest_index *x,
                            struct bfs_err *err);
/* What bfs_catalog_apply_end's entry was to this catalog. */
enum {
    BFS_APPLIED = 0,         /* another mount's roll or compaction (or nothing: rolled back) */
    BFS_APPLIED_OWN = 1,     /* the commit of this catalog's pending claim */
    BFS_APPLIED_ADOPTED = 2, /* a roll committed here before the log, now in the log */
};
/* End: rc == 0 commits (0, or -EINVAL: an own roll's index does not match its
 * claim, an adopted roll's archives are not the manifest's, or -errno), else
 * rolls back and returns rc. *own (may be NULL) is set to a BFS_APPLIED_*.
 * An archive of a roll or compaction whose index rows do not cover it (the
 * manifest of a roll from before the log written after an erasure) becomes
 * dirty, with every erasure of its scope before the entry pending on it, as
 * after a checkpoint's load. Frees a. */
int bfs_catalog_apply_end(struct bfs_cat_apply *a, int rc, int *own, struct bfs_err *err);

/* While the store's log is read (a refresh: manifests, a checkpoint), on: 1
 * gives the writer a larger page cache (index rows land all over
 * block_indexes' indexes); with drop_indexes, a roll entry or a checkpoint
 * applied while block_indexes is empty (a new catalog) also drops its
 * secondary indexes in its transaction: a bulk load, rows appended. Only
 * when nothing reads the catalog until the end (the rebuild before the
 * mount serves). on: 0 makes them again (one sort each, one transaction; the
 * catalog's open makes them too, after a crash cut a bulk load short), then
 * puts the cache back and frees it. 0 or -errno. */
int bfs_catalog_bulk(struct bfs_catalog *cat, int on, int drop_indexes);
/* Make block_indexes' secondary indexes now if a bulk load dropped them
 * (before an entry that looks rows up by dataset or archive: a compaction,
 * an erasure). 0 or -errno. */
int bfs_catalog_bulk_indexes(struct bfs_catalog *cat);

/* ---- Checkpoints (manifest.h: the format; the ledger writes and reads them) ----
 *
 * A checkpoint holds what applying the log up to a position left in the
 * catalog: every roll committed by the log (rolls with a log_seq) with its
 * archives and index rows, in log order, and every node's epoch. Loading it
 * into a catalog that has applied nothing of the log gives the rows applying
 * the log would: archived_files (same order, same columns; created_at is the
 * roll's committed_at; seq numbers a roll's live archives only; dirty: those
 * their index rows do not cover), block_indexes, rolls (first_row and
 * last_row are local: 0 and -1 but for this catalog's own claim),
 * ledger_nodes and erasures (done). An entry's live index rows may hold
 * fewer bytes than its total (retired archives, erased rows), never more.
 * Partitions and schemas are not in it: as for a log entry, the partition of
 * each archive must exist before the load (bfs_catalog_partition_add, which
 * cannot run while a load holds the writer: a first pass over the file). */
struct bfs_manifest_roll;
struct bfs_checkpoint_visitor;

/* Walk the applied index up to log position upto, in log order: v->roll for
 * each roll with log_seq <= upto (not rolls committed before the log, not a
 * pending claim), then its archives (seq order), each followed by its index
 * rows (id order); then v->node for every node (name order). One read
 * transaction (a consistent snapshot), streamed through cursors: memory does
 * not grow with the rows. A non-zero return of the visitor stops the walk
 * and is returned. 0, -ESTALE (log_pos is not upto), -EIO (a row a
 * checkpoint cannot hold), -errno. */
int bfs_catalog_snapshot(struct bfs_catalog *cat, int64_t upto,
                         const struct bfs_checkpoint_visitor *v);

/* Load a checkpoint into a catalog that applied nothing of the log (log_pos
 * 0, no roll with a log position, no node): one write transaction, which
 * holds the writer from the begin to the end. The begin gives 0 or -EEXIST
 * (the catalog applied log entries: read the log instead; nothing began), or
 * -errno. Then the entries as bfs_checkpoint_read gives them: each roll is
 * applied as its log entry would be (bfs_catalog_apply_*: the same checks; a
 * roll that is this catalog's pending claim commits it; one committed here
 * before the log is adopted, its archives and index rows replaced by the
 * checkpoint's, which hold what the log made of them since), each node's
 * epoch raised. A call that fails
 * (-EINVAL with err, -ENOENT: no partition, -errno) fails every later call
 * and the end. The end commits with log_pos = upto when rc == 0 (0, -EINVAL:
 * upto before the last roll, -errno), else rolls back and returns rc. It
 * frees c. Under bfs_catalog_bulk, a bulk load (see there). */
struct bfs_cat_ckpt;
int bfs_catalog_ckpt_begin(struct bfs_catalog *cat, struct bfs_cat_ckpt **out);
int bfs_catalog_ckpt_roll(struct bfs_cat_ckpt *c, const struct bfs_manifest_roll *r, int64_t seq,
                          int64_t epoch, int64_t committed_at, struct bfs_err *err);
int bfs_catalog_ckpt_archive(struct bfs_cat_ckpt *c, const struct bfs_manifest_archive *a,
                             struct bfs_err *err);
/* bfs_catalog_apply_knows for the checkpoint being loaded. */
int bfs_catalog_ckpt_knows(struct bfs_cat_ckpt *c, const struct bfs_manifest_archive *ar);
int bfs_catalog_ckpt_index(struct bfs_cat_ckpt *c, const struct bfs_manifest_index *x,
                           struct bfs_err *err);
int bfs_catalog_ckpt_node(struct bfs_cat_ckpt *c, const char *node, int64_t epoch,
                          struct bfs_err *err);
/* A compaction (its archives and index rows follow, as a roll's), an erasure
 * (its tombstone: what it hid is not in the checkpoint). */
struct bfs_manifest_compact;
struct bfs_manifest_erase;
int bfs_catalog_ckpt_compact(struct bfs_cat_ckpt *c, const struct bfs_manifest_compact *cp,
                             int64_t seq, int64_t epoch, int64_t committed_at, struct bfs_err *err);
int bfs_catalog_ckpt_erase(struct bfs_cat_ckpt *c, const struct bfs_manifest_erase *x, int64_t seq,
                           int64_t epoch, int64_t committed_at, struct bfs_err *err);
int bfs_catalog_ckpt_end(struct bfs_cat_ckpt *c, int rc, int64_t upto, struct bfs_err *err);
/* The visitor of a load: between the begin and the end,
 * bfs_checkpoint_read(fd, v, ...) gives each entry to its bfs_catalog_ckpt_*
 * call above, on ld->c with ld->err. ld is v's ctx and must outlive the
 * read. It may be the first member of the caller's own context, whose
 * callbacks then take the place of some of v's (to count or check an entry
 * before its call). */
struct bfs_cat_ckpt_load {
    struct bfs_cat_ckpt *c;
    struct bfs_err *err;
};
void bfs_catalog_ckpt_visitor(struct bfs_cat_ckpt_load *ld, struct bfs_checkpoint_visitor *v);

/* ---- Rolls committed before the store's log (adopt.h) ----
 *
 * battlefs before the log (issue 11) committed rolls into its catalog only:
 * rolls rows committed with no log position, their archives at ord 0 (first
 * in dataset files), without SHA-256, schema fingerprint or codec in a
 * catalog migrated from then. adopt.c puts each into the log, from these
 * rows; applying its entry stamps them (bfs_catalog_apply_begin). */

/* The next roll committed here before the log, in the order of their first
 * archive's id (the order they were committed in) after *after (0 at first):
 * 0 with its id in roll_id and *after its first archive's id, -ENOENT when
 * none is left, -errno. *left (may be NULL): how many there are in all. Rolls
 * without an archive are not listed. */
int bfs_catalog_prelog_next(struct bfs_catalog *cat, int64_t *after, char roll_id[BFS_ROLL_ID_MAX],
                            uint64_t *left);
/* Walk committed roll roll_id as its manifest lists it, in one read
 * transaction: v->roll with its Roll (node NULL: the caller's; rows, its
 * claimed_at, base (0 for a roll from before the log), bytes = the lengths of
 * its live index rows; seq and epoch 0, committed_at its commit time), then
 * its archives in seq order, each followed by its index rows in id order
 * (none read when v->index is NULL). An archive whose row lacks its SHA-256,
 * schema fingerprint or codec comes with schema_fingerprint NULL. 0, -ENOENT
 * (no such committed roll), the visitor's non-zero return, -errno. */
int bfs_catalog_roll_walk(struct bfs_catalog *cat, const char *roll_id,
                          const struct bfs_checkpoint_visitor *v);

/* ---- Erasure and compaction (catalog_compact.c) ---- */

/* An erasure entry of the log: dataset in (table, period), or everywhere
 * (table and period NULL). */
struct bfs_log_erase {
    int64_t seq;
    const char *node;
    int64_t epoch;
    const char *dataset;
    const char *table, *period;
    int64_t erased_at, committed_at;
};
/* Apply it in one transaction: the tombstone; the dataset's index rows go
 * (their archives become dirty and hold the erasure's hits until rewritten);
 * its hot rows go (the writer's secure_delete zeroes their pages), but rows a
 * pending roll claimed, which the roll's apply drops. *hits: the archives
 * holding its bytes. 0, -ESTALE (not the next position), -errno. */
int bfs_catalog_apply_erase(struct bfs_catalog *cat, const struct bfs_log_erase *e, uint64_t *hits,
                            struct bfs_err *err);
/* The archives that hold erasure seq's bytes (erase_hits). */
int bfs_catalog_erase_hit_keys(struct bfs_catalog *cat, int64_t seq,
                               int (*cb)(void *ctx, const char *key), void *ctx);
/* An erasure (table, period NULL: everywhere; done_at 0: pending). */
struct bfs_erasure {
    int64_t seq;
    const char *node, *dataset, *table, *period;
    int64_t erased_at, committed_at, done_at;
};
/* Erasures whose bytes nothing this mount knows holds any more get done_at =
 * now; cb (may be NULL) is called for each, inside the transaction (copy,
 * do not call the catalog). Returns how many are still pending (>= 0), or
 * -errno. */
int bfs_catalog_erasures_settle(struct bfs_catalog *cat, int64_t now,
                                int (*cb)(void *ctx, const struct bfs_erasure *e), void *ctx);
/* Every erasure, oldest first. */
int bfs_catalog_erasures(struct bfs_catalog *cat, int (*cb)(void *ctx, const struct bfs_erasure *e),
                         void *ctx);
/* Checkpoint the WAL into the database and truncate it (TRUNCATE), so no
 * deleted page survives in the WAL file. 0, -EBUSY (a reader held it: try
 * again), -errno. */
int bfs_catalog_wipe(struct bfs_catalog *cat);

/* Store objects to delete (store_gc): add one (retired_at: unix seconds;
 * urgent: as soon as possible, it holds erased bytes). */
int bfs_catalog_gc_add(struct bfs_catalog *cat, const char *key, int64_t retired_at, int urgent);
/* The keys due: urgent, or retired at least grace seconds before now. */
int bfs_catalog_gc_due(struct bfs_catalog *cat, int64_t now, int64_t grace,
                       int (*cb)(void *ctx, const char *key, int urgent), void *ctx);
/* key is deleted from the store: forget it (and the erasure hits it held). */
int bfs_catalog_gc_done(struct bfs_catalog *cat, const char *key);

/* A partition worth compacting (bfs_catalog_compact_candidates). */
struct bfs_compact_candidate {
    const char *table, *period;
    int64_t archives;  /* live archives in the log */
    int64_t rolled;    /* of them, written by rolls (not by a compaction) */
    int64_t newest;    /* unix seconds: the newest archive's commit */
    int64_t dirty;     /* archives holding erased bytes */
    int64_t erased_at; /* the oldest pending erasure with bytes here (0: none) */
};
/* Every partition with at least one live archive of the log. */
int bfs_catalog_compact_candidates(struct bfs_catalog *cat,
                                   int (*cb)(void *ctx, const struct bfs_compact_candidate *c),
                                   void *ctx);

/* A partition's live archives of the log up to its current position, in
 * file order (ord, id), read in one transaction with that position. */
struct bfs_compact_source {
    int64_t id;
    const char *key;
    uint64_t size, header_length;
    int64_t schema_id;
    const char *schema_json;
    int dirty;
};
int bfs_catalog_compact_sources(struct bfs_catalog *cat, const char *table, const char *period,
                                int64_t *upto,
                                int (*cb)(void *ctx, const struct bfs_compact_source *s),
                                void *ctx);
/* The live index rows of archives with 0 < ord <= upto of the partition, for
 * up to max_datasets datasets after `after` ("" : from the first), ordered
 * by (dataset, ord, archive, row). Returns the number of rows passed to cb
 * (0: no more), or -errno. */
struct bfs_compact_row {
    const char *dataset;
    int64_t file_id;
    uint64_t start, length, records;
    int64_t uploaded_at;
};
int bfs_catalog_compact_rows(struct bfs_catalog *cat, const char *table, const char *period,
                             int64_t upto, const char *after, int max_datasets,
                             int (*cb)(void *ctx, const struct bfs_compact_row *r), void *ctx);
/* This mount's compaction in progress: recorded before its first put,
 * forgotten after its commit (or its cleanup); listed by recovery. */
int bfs_catalog_compaction_begin(struct bfs_catalog *cat, const char *id, const char *table,
                                 const char *period, int64_t upto);
int bfs_catalog_compaction_end(struct bfs_catalog *cat, const char *id);
int bfs_catalog_compactions(struct bfs_catalog *cat,
                            int (*cb)(void *ctx, const char *id, const char *table,
                                      const char *period, int64_t upto),
                            void *ctx);
/* A compaction the log committed: 1 applied, 2 void, 0 not in the log, -errno. */
int bfs_catalog_compaction_state(struct bfs_catalog *cat, const char *id);
/* Counts for .battlefs/stats. */
int bfs_catalog_erase_counts(struct bfs_catalog *cat, uint64_t *pending, uint64_t *total);

/* Create the partition (table, period) of an archive read from the store, as
 * an upload would (schema row, layout header; up->data is not used). 0 (also
 * when it exists with the same schema and codec), -EINVAL (it exists with
 * another: err says which), -errno. */
int bfs_catalog_partition_add(struct bfs_catalog *cat, const struct bfs_upload *up,
                              struct bfs_err *err);

#endif
