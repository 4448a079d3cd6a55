/* catalog_db.c - the catalog's database: its schema and migrations, the SQL
 * of every statement, open and close, the read pool and the checkpointer
 * (the catalog is described in catalog_int.h and include/battlefs/catalog.h).
 *
 * Schema (version 1; PRAGMA user_version holds the version, MIGRATIONS below
 * is the forward-only list of steps, each applied in its own transaction; a
 * database newer than this code is refused):
 *
 *   schemas(id, canonical UNIQUE, fingerprint, json)
 *       one row per Parsing Canonical Form; fingerprint = hex CRC-64-AVRO;
 *       json = the text of the first upload that brought it.
 *   partitions(id, table_name, period_tag, schema_id, codec, sync, schema_json,
 *              header, header_length, created_at, UNIQUE(table_name, period_tag))
 *       created by the first upload of a (table, period): its layout header
 *       (bfs_ocf_layout_header of that upload's schema text, the codec, and
 *       sync = bfs_schema_sync(canonical)), as the upload brings them: the
 *       catalog computes neither.
 *   buffer_rows(id AUTOINCREMENT, table_name, period_tag, dataset_id, schema_id,
 *               record_count, byte_length, created_at, conv_schema, conv_length,
 *               packed)
 *       packed = 0: deflate blocks framed stored, compressed later by the
 *       packer (packer.c), which replaces data, byte_length and packed in
 *       one transaction; 1: final.
 *   buffer_data(id -> buffer_rows, data BLOB)
 *   buffer_totals(uploads, bytes, unpacked): one row kept by triggers on buffer_rows,
 *       so bfs_catalog_counts and a claim do not scan the buffer.
 *   buffer_logs: a VIEW with the brief's columns (id, table_name, period_tag,
 *       dataset_id, schema_id, record_count, byte_length, data, created_at,
 *       roll_id = the pending roll that claimed the row, else NULL).
 *   rolls(id, claimed_at, committed_at, first_row, last_row, row_count,
 *         byte_count)
 *   archived_files(id AUTOINCREMENT, file_path UNIQUE, table_name, period_tag,
 *                  size, header_length, roll_id, seq, created_at)
 *       seq = the archive's position in its roll commit, so id order is
 *       (roll commit order, seq).
 *   block_indexes(id, dataset_id, table_name, period_tag, file_id, start_byte,
 *                 length, record_count, uploaded_at)
 *       uploaded_at = the newest created_at of the dataset's rows in the roll:
 *       a cold segment keeps the upload time, so a dataset's mtime (the newest
 *       of its segments) does not change when it is rolled.
 *
 * Claims are id ranges. Ids of buffer_rows are AUTOINCREMENT (never reused)
 * and assigned under the one writer, so id order is commit order. At most one
 * roll is pending (a claim while one is pending fails with -EBUSY), and a
 * committed roll deleted its rows, so when a claim runs every buffered row is
 * unclaimed: the claim records [min(id), max(id)] in its rolls row, in O(1).
 * Rows committed later get larger ids and stay unclaimed; the roll's rows are
 * the buffer rows in its range until its commit deletes them (their blobs in
 * buffer_data stay, orphaned, until bfs_catalog_purge deletes them in small
 * transactions: freeing a blob reads all its overflow pages, 0.6 s per GiB,
 * too long to hold the writer in the commit). The claim is
 * not written into each row because SQLite rewrites a whole row on UPDATE:
 * marking 100k rows held the writer (every upload) for 0.6 s, and with the
 * blob in the row, claiming 256 MiB wrote 256 MiB more to the WAL. For the
 * same reason the blobs live in their own table: scans and lookups of the hot
 * metadata never touch blob pages. Ids are never reused, so
 * bfs_catalog_read_hot of a rolled row gives its own bytes until its purge,
 * then -ENOENT, never another row's bytes.
 */
#include <fcntl.h>
#include <unistd.h>

#include "battlefs/walbuf.h"
#include "catalog_int.h"

#define BUSY_TIMEOUT_MS 10000
#define WAL_LIMIT       (64 * 1024 * 1024) /* journal_size_limit */
#define CKPT_FRAMES     1000               /* WAL frames that wake the checkpointer */
#define CKPT_INLINE     16000 /* WAL frames (64 MiB) past which a commit checkpoints itself */
#define CKPT_FINISH     256   /* frames (1 MiB) left that a checkpoint copies holding the writer */
#define CKPT_PASSES     8     /* passes after the first before a checkpoint gives up finishing */

/* ---- schema ---- */

static const char *const MIGRATIONS[] = {
    /* 1: the initial schema */
    "CREATE TABLE schemas("
    "  id INTEGER PRIMARY KEY,"
    "  canonical TEXT NOT NULL UNIQUE,"
    "  fingerprint TEXT NOT NULL,"
    "  json TEXT NOT NULL);"
    "CREATE TABLE partitions("
    "  id INTEGER PRIMARY KEY,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  schema_id INTEGER NOT NULL REFERENCES schemas(id),"
    "  codec TEXT NOT NULL,"
    "  sync BLOB NOT NULL,"
    "  schema_json TEXT NOT NULL,"
    "  header BLOB NOT NULL,"
    "  header_length INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE(table_name, period_tag));"
    "CREATE TABLE rolls("
    "  id TEXT PRIMARY KEY,"
    "  claimed_at INTEGER NOT NULL,"
    "  committed_at INTEGER,"
    "  first_row INTEGER NOT NULL,"
    "  last_row INTEGER NOT NULL,"
    "  row_count INTEGER NOT NULL,"
    "  byte_count INTEGER NOT NULL);"
    "CREATE INDEX rolls_pending ON rolls(claimed_at) WHERE committed_at IS NULL;"
    "CREATE TABLE buffer_rows("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  dataset_id TEXT NOT NULL,"
    "  schema_id INTEGER NOT NULL REFERENCES schemas(id),"
    "  record_count INTEGER NOT NULL,"
    "  byte_length INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL);"
    "CREATE INDEX buffer_rows_dataset ON buffer_rows(table_name, period_tag, dataset_id);"
    "CREATE TABLE buffer_data("
    "  id INTEGER PRIMARY KEY REFERENCES buffer_rows(id),"
    "  data BLOB NOT NULL);"
    "CREATE VIEW buffer_logs AS SELECT r.id AS id, r.table_name AS table_name,"
    "  r.period_tag AS period_tag, r.dataset_id AS dataset_id, r.schema_id AS schema_id,"
    "  r.record_count AS record_count, r.byte_length AS byte_length, d.data AS data,"
    "  r.created_at AS created_at, (SELECT o.id FROM rolls o WHERE o.committed_at IS NULL"
    "  AND r.id BETWEEN o.first_row AND o.last_row) AS roll_id"
    "  FROM buffer_rows r JOIN buffer_data d ON d.id = r.id;"
    "CREATE TABLE buffer_totals("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  uploads INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL);"
    "INSERT INTO buffer_totals VALUES(1, 0, 0);"
    "CREATE TRIGGER buffer_rows_ins AFTER INSERT ON buffer_rows BEGIN"
    "  UPDATE buffer_totals SET uploads = uploads + 1, bytes = bytes + NEW.byte_length;"
    "  END;"
    "CREATE TRIGGER buffer_rows_del AFTER DELETE ON buffer_rows BEGIN"
    "  UPDATE buffer_totals SET uploads = uploads - 1, bytes = bytes - OLD.byte_length;"
    "  END;"
    "CREATE TABLE archived_files("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  file_path TEXT NOT NULL UNIQUE,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  header_length INTEGER NOT NULL,"
    "  roll_id TEXT NOT NULL REFERENCES rolls(id),"
    "  seq INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE(roll_id, seq));"
    "CREATE TABLE block_indexes("
    "  id INTEGER PRIMARY KEY,"
    "  dataset_id TEXT NOT NULL,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  file_id INTEGER NOT NULL REFERENCES archived_files(id),"
    "  start_byte INTEGER NOT NULL,"
    "  length INTEGER NOT NULL,"
    "  record_count INTEGER NOT NULL,"
    "  uploaded_at INTEGER NOT NULL);"
    "CREATE INDEX " BI_INDEX_DATASET ";"
    "CREATE INDEX " BI_INDEX_FILE ";",
    /* 2: the store's log (ledger.c): rolls of every node, where each stands
     * in the log, and what this catalog has read of it */
    "ALTER TABLE rolls ADD COLUMN node TEXT;"
    "ALTER TABLE rolls ADD COLUMN log_seq INTEGER;"
    "ALTER TABLE rolls ADD COLUMN epoch INTEGER;"
    "CREATE UNIQUE INDEX rolls_log_seq ON rolls(log_seq);"
    "ALTER TABLE archived_files ADD COLUMN sha256 BLOB;"
    "ALTER TABLE archived_files ADD COLUMN schema_fingerprint TEXT;"
    "ALTER TABLE archived_files ADD COLUMN codec TEXT;"
    "CREATE TABLE ledger("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  log_pos INTEGER NOT NULL,"
    "  state_id TEXT NOT NULL);"
    "INSERT INTO ledger VALUES(1, 0, lower(hex(randomblob(16))));"
    "CREATE TABLE ledger_nodes("
    "  node TEXT PRIMARY KEY,"
    "  epoch INTEGER NOT NULL);",
    /* 3: schema evolution. A partition's versions (the writer schemas of its
     * uploads and archives, never removed); partitions.schema_id, sync,
     * schema_json and header become the merged schema's layout, vgen counts
     * the changes of the version set. An alias is a schema the partition's
     * data is stored in that is a merge of versions (a roll's archive
     * schema, a served file uploaded again): known, but not merged again. Each archive's writer
     * schema. The converted length of a segment under the partition's merged schema, memoised
     * (conv_schema: the merged schema it was measured for). */
    "CREATE TABLE partition_versions("
    "  partition_id INTEGER NOT NULL REFERENCES partitions(id),"
    "  schema_id INTEGER NOT NULL REFERENCES schemas(id),"
    "  added_at INTEGER NOT NULL,"
    "  alias INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(partition_id, schema_id)) WITHOUT ROWID;"
    "INSERT INTO partition_versions(partition_id, schema_id, added_at)"
    "  SELECT id, schema_id, created_at FROM partitions;"
    "ALTER TABLE partitions ADD COLUMN vgen INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE archived_files ADD COLUMN schema_id INTEGER REFERENCES schemas(id);"
    "UPDATE archived_files SET schema_id = (SELECT p.schema_id FROM partitions p"
    "  WHERE p.table_name = archived_files.table_name"
    "  AND p.period_tag = archived_files.period_tag);"
    "ALTER TABLE buffer_rows ADD COLUMN conv_schema INTEGER;"
    "ALTER TABLE buffer_rows ADD COLUMN conv_length INTEGER;"
    "ALTER TABLE block_indexes ADD COLUMN conv_schema INTEGER;"
    "ALTER TABLE block_indexes ADD COLUMN conv_length INTEGER;"
    "CREATE INDEX schemas_fingerprint ON schemas(fingerprint);"
    "ALTER TABLE archived_files ADD COLUMN versions TEXT;"
    "CREATE TABLE roll_versions("
    "  roll_id TEXT NOT NULL,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  schema_id INTEGER NOT NULL REFERENCES schemas(id),"
    "  PRIMARY KEY(roll_id, table_name, period_tag, schema_id)) WITHOUT ROWID;",
    /* 4: compaction and erasure (compact.c). A rolls row is a roll (kind 0)
     * or a compaction (kind 1, of one partition; void 1: a compaction the
     * log holds but that lost a race and applied nothing). base: a roll's
     * log position at its claim, a compaction's upto. archived_files.ord
     * orders a partition's archives in its dataset files (the log position
     * of the roll, a compaction's upto; 0 before the log); dirty: the
     * archive holds bytes of an erased dataset. erasures: the tombstones of
     * the log (done_at: physically removed, as far as this mount knows);
     * erase_hits: the archives that still hold an erasure's bytes; store_gc:
     * objects this mount deletes from the store (retired by its compactions,
     * after gc_grace, at once when urgent: they hold erased bytes);
     * compactions: this mount's compaction in progress (recovery). */
    "ALTER TABLE rolls ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE rolls ADD COLUMN base INTEGER;"
    "ALTER TABLE rolls ADD COLUMN table_name TEXT;"
    "ALTER TABLE rolls ADD COLUMN period_tag TEXT;"
    "ALTER TABLE rolls ADD COLUMN void INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE archived_files ADD COLUMN ord INTEGER NOT NULL DEFAULT 0;"
    "UPDATE archived_files SET ord = coalesce((SELECT r.log_seq FROM rolls r"
    "  WHERE r.id = archived_files.roll_id), 0);"
    "ALTER TABLE archived_files ADD COLUMN dirty INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX archived_files_part ON archived_files(table_name, period_tag, ord);"
    "CREATE TABLE erasures("
    "  seq INTEGER PRIMARY KEY,"
    "  node TEXT NOT NULL,"
    "  dataset_id TEXT NOT NULL,"
    "  table_name TEXT,"
    "  period_tag TEXT,"
    "  epoch INTEGER NOT NULL,"
    "  erased_at INTEGER NOT NULL,"
    "  committed_at INTEGER NOT NULL,"
    "  done_at INTEGER);"
    "CREATE INDEX erasures_dataset ON erasures(dataset_id);"
    "CREATE TABLE erase_hits("
    "  seq INTEGER NOT NULL,"
    "  file_path TEXT NOT NULL,"
    "  PRIMARY KEY(seq, file_path)) WITHOUT ROWID;"
    "CREATE INDEX erase_hits_path ON erase_hits(file_path);"
    "CREATE TABLE store_gc("
    "  key TEXT PRIMARY KEY,"
    "  retired_at INTEGER NOT NULL,"
    "  urgent INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE compactions("
    "  id TEXT PRIMARY KEY,"
    "  table_name TEXT NOT NULL,"
    "  period_tag TEXT NOT NULL,"
    "  upto INTEGER NOT NULL,"
    "  started_at INTEGER NOT NULL);",
    /* 5: compression off the close path (packer.c). packed = 0: the row's
     * blocks are deflate framed as stored blocks (bfs_codec_frame), to be
     * compressed; 1: in their final form. Rows before this are final. The
     * totals follow a row whose length a packing changes. */
    "ALTER TABLE buffer_rows ADD COLUMN packed INTEGER NOT NULL DEFAULT 1;"
    "CREATE INDEX buffer_rows_unpacked ON buffer_rows(id) WHERE packed = 0;"
    "ALTER TABLE buffer_totals ADD COLUMN unpacked INTEGER NOT NULL DEFAULT 0;"
    "DROP TRIGGER buffer_rows_ins;"
    "DROP TRIGGER buffer_rows_del;"
    "CREATE TRIGGER buffer_rows_ins AFTER INSERT ON buffer_rows BEGIN"
    "  UPDATE buffer_totals SET uploads = uploads + 1, bytes = bytes + NEW.byte_length,"
    "  unpacked = unpacked + (NEW.packed = 0);"
    "  END;"
    "CREATE TRIGGER buffer_rows_del AFTER DELETE ON buffer_rows BEGIN"
    "  UPDATE buffer_totals SET uploads = uploads - 1, bytes = bytes - OLD.byte_length,"
    "  unpacked = unpacked - (OLD.packed = 0);"
    "  END;"
    "CREATE TRIGGER buffer_rows_len AFTER UPDATE OF byte_length, packed ON buffer_rows BEGIN"
    "  UPDATE buffer_totals SET bytes = bytes - OLD.byte_length + NEW.byte_length,"
    "  unpacked = unpacked - (OLD.packed = 0) + (NEW.packed = 0);"
    "  END;",
};
#define SCHEMA_VERSION ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

/* ---- statements (enum wst and enum rst are in catalog_int.h) ---- */

static const char *const WSQL[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT up",
    [W_RELEASE] = "RELEASE up",
    [W_ROLLBACK_TO] = "ROLLBACK TO up",
    [W_PART_LOOKUP] = "SELECT p.schema_id, p.codec, s.canonical, s.fingerprint, p.id, p.vgen"
                      " FROM partitions p"
                      " JOIN schemas s ON s.id = p.schema_id"
                      " WHERE p.table_name = ?1 AND p.period_tag = ?2",
    [W_SCHEMA_FIND] = "SELECT id FROM schemas WHERE canonical = ?1",
    [W_SCHEMA_INS] = "INSERT INTO schemas(canonical, fingerprint, json) VALUES(?1, ?2, ?3)",
    [W_VERSION_FIND] =
        "SELECT 1 FROM partition_versions WHERE partition_id = ?1 AND schema_id = ?2",
    [W_VERSION_INS] = "INSERT OR IGNORE INTO partition_versions(partition_id, schema_id, added_at,"
                      " alias) VALUES(?1, ?2, ?3, ?4)",
    [W_VERSION_FP] = "SELECT 1 FROM partition_versions v JOIN schemas s ON s.id = v.schema_id"
                     " WHERE v.partition_id = ?1 AND s.fingerprint = ?2 LIMIT 1",
    [W_PART_MERGE] = "UPDATE partitions SET schema_id = ?2, sync = ?3, schema_json = ?4,"
                     " header = ?5, header_length = ?6, vgen = vgen + 1 WHERE id = ?1",
    [W_MEMO_HOT] = "UPDATE buffer_rows SET conv_schema = ?2, conv_length = ?3 WHERE id = ?1",
    [W_MEMO_COLD] = "UPDATE block_indexes SET conv_schema = ?2, conv_length = ?3 WHERE id = ?1",
    [W_PART_INS] = "INSERT INTO partitions(table_name, period_tag, schema_id, codec, sync,"
                   " schema_json, header, header_length, created_at)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [W_ROW_INS] = "INSERT INTO buffer_rows(table_name, period_tag, dataset_id, schema_id,"
                  " record_count, byte_length, created_at, packed)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [W_DATA_INS] = "INSERT INTO buffer_data(id, data) VALUES(?1, ?2)",
    [W_PENDING] = "SELECT id FROM rolls WHERE committed_at IS NULL ORDER BY claimed_at, id LIMIT 1",
    [W_UNCLAIMED] = "SELECT (SELECT min(id) FROM buffer_rows), (SELECT max(id) FROM buffer_rows),"
                    " uploads, bytes FROM buffer_totals",
    [W_ROLL_INS] = "INSERT INTO rolls(id, claimed_at, first_row, last_row, row_count, byte_count,"
                   " base) VALUES(?1, ?2, ?3, ?4, ?5, ?6, (SELECT log_pos FROM ledger))",
    /* The versions of each partition the claim ?2..?3 touches. */
    [W_ROLL_VERSIONS] = "INSERT INTO roll_versions(roll_id, table_name, period_tag, schema_id)"
                        " SELECT ?1, p.table_name, p.period_tag, v.schema_id FROM partitions p"
                        " JOIN partition_versions v ON v.partition_id = p.id AND v.alias = 0"
                        " WHERE EXISTS (SELECT 1 FROM buffer_rows b WHERE b.table_name ="
                        " p.table_name AND b.period_tag = p.period_tag AND b.id BETWEEN ?2 AND ?3)",
    [W_ROLL_VERSIONS_DEL] = "DELETE FROM roll_versions WHERE roll_id = ?1",
    [W_ROLL_GET] = "SELECT committed_at, first_row, last_row, log_seq FROM rolls WHERE id = ?1",
    [W_ARCH_INS] = "INSERT INTO archived_files(file_path, table_name, period_tag, size,"
                   " header_length, roll_id, seq, created_at)"
                   " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [W_IDX_INS] = "INSERT INTO block_indexes(dataset_id, table_name, period_tag, file_id,"
                  " start_byte, length, record_count, uploaded_at)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, (SELECT coalesce(max(created_at), ?8)"
                  " FROM buffer_rows WHERE table_name = ?2 AND period_tag = ?3 AND dataset_id = ?1"
                  " AND id BETWEEN ?9 AND ?10))",
    /* Rows of (table, period, dataset, records) on one side only, plus the
     * roll's archives whose index rows do not cover them exactly (header +
     * ranges). Bytes are not compared with the buffer rows': rows the roll
     * converted to its archive's schema have other lengths. */
    [W_ROLL_CHECK] =
        "WITH b AS (SELECT table_name, period_tag, dataset_id,"
        "  sum(record_count) FROM buffer_rows r WHERE id BETWEEN ?2 AND ?3 AND NOT EXISTS"
        "  (SELECT 1 FROM erasures e WHERE e.dataset_id = r.dataset_id AND e.seq > ?4 AND"
        "  (e.table_name IS NULL OR (e.table_name = r.table_name AND e.period_tag = r.period_tag)))"
        "  GROUP BY 1, 2, 3),"
        " c AS (SELECT i.table_name, i.period_tag, i.dataset_id,"
        "  sum(i.record_count) FROM archived_files a"
        "  JOIN block_indexes i ON i.file_id = a.id WHERE a.roll_id = ?1"
        "  GROUP BY 1, 2, 3)"
        " SELECT (SELECT count(*) FROM (SELECT * FROM b EXCEPT SELECT * FROM c)) +"
        " (SELECT count(*) FROM (SELECT * FROM c EXCEPT SELECT * FROM b)) +"
        " (SELECT count(*) FROM archived_files a WHERE a.roll_id = ?1 AND a.dirty = 0 AND a.size -"
        "  a.header_length != (SELECT coalesce(sum(i.length), 0) FROM block_indexes i"
        "  WHERE i.file_id = a.id))",
    /* Blobs whose buffer_rows row a roll commit deleted: every id below the
     * smallest live row (rolls claim whole prefixes; ids are never reused). */
    [W_PURGE] = "DELETE FROM buffer_data WHERE id IN (SELECT id FROM buffer_data WHERE id <"
                " coalesce((SELECT min(id) FROM buffer_rows), 9223372036854775807)"
                " ORDER BY id LIMIT ?1)",
    [W_DEL_ROWS] = "DELETE FROM buffer_rows WHERE id BETWEEN ?1 AND ?2",
    [W_ROLL_DONE] = "UPDATE rolls SET committed_at = ?2 WHERE id = ?1 AND committed_at IS NULL",
    [W_LEDGER_GET] = "SELECT log_pos, substr(state_id, 1, 8) FROM ledger WHERE id = 1",
    [W_LEDGER_SET] = "UPDATE ledger SET log_pos = ?1 WHERE id = 1",
    [W_NODE_EPOCH] = "INSERT INTO ledger_nodes(node, epoch) VALUES(?1, ?2) ON CONFLICT(node)"
                     " DO UPDATE SET epoch = max(epoch, excluded.epoch)",
    [W_ROLL_LOGGED] = "UPDATE rolls SET committed_at = ?2, node = ?3, log_seq = ?4, epoch = ?5"
                      " WHERE id = ?1",
    [W_ROLL_ADD] = "INSERT INTO rolls(id, claimed_at, committed_at, first_row, last_row,"
                   " row_count, byte_count, node, log_seq, epoch, kind, base, table_name,"
                   " period_tag, void) VALUES(?1, ?2, ?3, 0, -1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
                   " ?12, ?13)",
    /* The first erasure after log position ?4 of dataset ?1 in (?2, ?3). */
    [W_ERASED_AFTER] = "SELECT seq FROM erasures WHERE dataset_id = ?1 AND seq > ?4 AND"
                       " (table_name IS NULL OR (table_name = ?2 AND period_tag = ?3))"
                       " ORDER BY seq LIMIT 1",
    [W_ANY_ERASURE] = "SELECT EXISTS (SELECT 1 FROM erasures WHERE seq > ?1)",
    [W_HIT_INS] = "INSERT OR IGNORE INTO erase_hits(seq, file_path) VALUES(?1, ?2)",
    [W_ARCH_DIRTY] = "UPDATE archived_files SET dirty = 1 WHERE id = ?1",
    /* A compaction's retired archive: its row, if live in the partition
     * before the compaction's upto. */
    [W_RETIRE_FIND] = "SELECT id, dirty FROM archived_files WHERE file_path = ?1"
                      " AND table_name = ?2 AND period_tag = ?3 AND ord > 0 AND ord <= ?4",
    [W_RETIRE_IDX] = "DELETE FROM block_indexes WHERE file_id = ?1",
    [W_RETIRE_ARCH] = "DELETE FROM archived_files WHERE id = ?1",
    [W_GC_INS] = "INSERT OR REPLACE INTO store_gc(key, retired_at, urgent) VALUES(?1, ?2, ?3)",
    [W_HITS_DEL] = "DELETE FROM erase_hits WHERE file_path = ?1",
    /* Archives of the partition the compaction at ?4 did not retire. */
    [W_RETIRE_LEFT] = "SELECT count(*) FROM archived_files WHERE table_name = ?1"
                      " AND period_tag = ?2 AND ord > 0 AND ord <= ?3 AND roll_id != ?4",
    [W_ERASE_INS] = "INSERT INTO erasures(seq, node, dataset_id, table_name, period_tag, epoch,"
                    " erased_at, committed_at, done_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    /* The archives holding dataset ?1 in (?2, ?3) (NULL: everywhere). */
    [W_ERASE_HITS] = "INSERT OR IGNORE INTO erase_hits(seq, file_path) SELECT DISTINCT ?4,"
                     " a.file_path FROM block_indexes i JOIN archived_files a ON a.id = i.file_id"
                     " WHERE i.dataset_id = ?1 AND (?2 IS NULL OR (i.table_name = ?2"
                     " AND i.period_tag = ?3))",
    [W_ERASE_DIRTY] = "UPDATE archived_files SET dirty = 1 WHERE id IN (SELECT file_id FROM"
                      " block_indexes WHERE dataset_id = ?1 AND (?2 IS NULL OR (table_name = ?2"
                      " AND period_tag = ?3)))",
    [W_ERASE_IDX] = "DELETE FROM block_indexes WHERE dataset_id = ?1 AND (?2 IS NULL OR"
                    " (table_name = ?2 AND period_tag = ?3))",
    /* Hot rows of the dataset no pending roll claimed (a claimed one is
     * dropped when its roll is applied: its base is before the erasure). */
    [W_ERASE_HOT_DATA] = "DELETE FROM buffer_data WHERE id IN (SELECT r.id FROM buffer_rows r"
                         " WHERE r.dataset_id = ?1 AND (?2 IS NULL OR (r.table_name = ?2"
                         " AND r.period_tag = ?3)) AND NOT EXISTS (SELECT 1 FROM rolls o WHERE"
                         " o.committed_at IS NULL AND r.id BETWEEN o.first_row AND o.last_row))",
    [W_ERASE_HOT_ROWS] = "DELETE FROM buffer_rows WHERE id IN (SELECT r.id FROM buffer_rows r"
                         " WHERE r.dataset_id = ?1 AND (?2 IS NULL OR (r.table_name = ?2"
                         " AND r.period_tag = ?3)) AND NOT EXISTS (SELECT 1 FROM rolls o WHERE"
                         " o.committed_at IS NULL AND r.id BETWEEN o.first_row AND o.last_row))",
    /* Erasures whose bytes are gone from everything this mount knows:
     * no archive holds them, no hot row (a claimed one) is left. */
    [W_ERASE_SETTLE] = "UPDATE erasures SET done_at = ?1 WHERE done_at IS NULL AND NOT EXISTS"
                       " (SELECT 1 FROM erase_hits h WHERE h.seq = erasures.seq) AND NOT EXISTS"
                       " (SELECT 1 FROM buffer_rows r WHERE r.dataset_id = erasures.dataset_id"
                       " AND (erasures.table_name IS NULL OR (r.table_name = erasures.table_name"
                       " AND r.period_tag = erasures.period_tag)) AND r.id <= (SELECT"
                       " coalesce(max(last_row), 0) FROM rolls WHERE committed_at IS NULL))"
                       /* and no rolled blob waits for its purge (it may be one of them) */
                       " AND NOT EXISTS (SELECT 1 FROM buffer_data d WHERE d.id < coalesce("
                       " (SELECT min(id) FROM buffer_rows), 9223372036854775807))"
                       " RETURNING seq, node, dataset_id, table_name, period_tag, erased_at,"
                       " committed_at, done_at",
    [W_ARCH_ADD] =
        "INSERT INTO archived_files(file_path, table_name, period_tag, size,"
        " header_length, roll_id, seq, created_at, sha256, schema_fingerprint, codec,"
        " schema_id, versions, ord) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
        " (SELECT id FROM schemas WHERE fingerprint = ?10 ORDER BY id LIMIT 1), ?12, ?13)",
    [W_IDX_ADD] = "INSERT INTO block_indexes(dataset_id, table_name, period_tag, file_id,"
                  " start_byte, length, record_count, uploaded_at)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    /* A roll committed here before the store's log, adopted by its log entry
     * (bfs_catalog_apply_*, "stamp"): each archive named by the manifest gets
     * what the manifest says of it and stands at the entry's position. */
    [W_ARCH_ADOPT] = "UPDATE archived_files SET sha256 = ?3, schema_fingerprint = ?4, codec = ?5,"
                     " versions = ?6, ord = ?7, created_at = ?8, schema_id = coalesce((SELECT id"
                     " FROM schemas WHERE fingerprint = ?4 ORDER BY id LIMIT 1), schema_id)"
                     " WHERE roll_id = ?1 AND file_path = ?2 AND size = ?9 AND header_length = ?10",
    /* Its archives the manifest did not name. */
    [W_ADOPT_LEFT] = "SELECT count(*) FROM archived_files WHERE roll_id = ?1 AND ord != ?2",
    [W_ROLL_ADOPT] = "UPDATE rolls SET committed_at = ?2, node = ?3, log_seq = ?4, epoch = ?5,"
                     " base = ?6, row_count = ?7, byte_count = ?8 WHERE id = ?1"
                     " AND log_seq IS NULL AND committed_at IS NOT NULL",
    /* ... or by a checkpoint ("replace"): its rows become the checkpoint's. */
    [W_ADOPT_DROP_IDX] = "DELETE FROM block_indexes WHERE file_id IN (SELECT id FROM"
                         " archived_files WHERE roll_id = ?1)",
    [W_ADOPT_DROP_ARCH] = "DELETE FROM archived_files WHERE roll_id = ?1",
    /* An archive ?1 of the entry at ?2 that its index rows do not cover (its
     * writer's rows of an erased dataset were gone): every erasure of its
     * scope before the entry waits for it, as after a checkpoint's load. */
    [W_UNCOVERED_HITS] = "INSERT OR IGNORE INTO erase_hits(seq, file_path) SELECT seq, ?1 FROM"
                         " erasures WHERE seq < ?2 AND (table_name IS NULL OR (table_name = ?3"
                         " AND period_tag = ?4))",
    [W_HITS_PENDING] = "UPDATE erasures SET done_at = NULL WHERE done_at IS NOT NULL AND seq IN"
                       " (SELECT seq FROM erase_hits WHERE file_path = ?1)",
    /* Whether anything of the log was applied: a checkpoint loads only into
     * a catalog where nothing was. */
    [W_LOG_EMPTY] =
        "SELECT log_pos = 0 AND NOT EXISTS (SELECT 1 FROM rolls WHERE log_seq IS NOT NULL)"
        " AND NOT EXISTS (SELECT 1 FROM ledger_nodes) FROM ledger WHERE id = 1",
};

#define HAS_DATA(p)                                                                                \
    "(EXISTS (SELECT 1 FROM buffer_rows b WHERE b.table_name = " p ".table_name"                   \
    " AND b.period_tag = " p ".period_tag) OR EXISTS (SELECT 1 FROM block_indexes c"               \
    " WHERE c.table_name = " p ".table_name AND c.period_tag = " p ".period_tag))"

/* When partition p's file layout last changed by a merge: the newest
 * version's arrival, if it has more than one version (else NULL). */
#define MERGED_AT(p)                                                                               \
    "(SELECT CASE WHEN count(*) > 1 THEN max(v.added_at) END FROM partition_versions v"            \
    " WHERE v.partition_id = " p ".id AND v.alias = 0)"

static const char *const RSQL[R_COUNT] = {
    [R_BEGIN] = "BEGIN",
    [R_COMMIT] = "COMMIT",
    [R_PARTITION] =
        "SELECT p.id, p.schema_id, p.codec, p.sync, p.schema_json, p.header,"
        " s.fingerprint, p.vgen, " MERGED_AT("p") ", s.canonical FROM partitions p"
                                                  " JOIN schemas s ON s.id = p.schema_id"
                                                  " WHERE p.table_name = ?1 AND p.period_tag = ?2",
    [R_COLD] = "SELECT a.id, a.file_path, i.start_byte, i.length, i.record_count, i.uploaded_at,"
               " a.schema_id, i.id, i.conv_schema, i.conv_length FROM block_indexes i JOIN "
               "archived_files a ON a.id = i.file_id"
               " WHERE i.table_name = ?1 AND i.period_tag = ?2 AND i.dataset_id = ?3"
               " ORDER BY a.ord, i.file_id, i.id",
    [R_HOT] = "SELECT id, byte_length, record_count, created_at, schema_id, id, conv_schema,"
              " conv_length, packed FROM buffer_rows"
              " WHERE table_name = ?1 AND period_tag = ?2 AND dataset_id = ?3 ORDER BY id",
    /* A segment's length in the file is its own when it was written in the
     * partition's merged schema (m.id), its memoised converted length when
     * that was measured for the merged schema, else unknown (counted). */
    [R_STAT] = "WITH m AS (SELECT schema_id id, header_length hl, " MERGED_AT(
        "partitions") " ma FROM partitions WHERE table_name = ?1 AND period_tag = ?2)"
                      " SELECT m.hl, c.n, c.len, c.unk, c.t, h.n, h.len, h.unk, h.t, m.ma, h.unp"
                      " FROM m,"
                      " (SELECT count(*) n, coalesce(sum(CASE WHEN a.schema_id = (SELECT id FROM m)"
                      "  THEN i.length WHEN i.conv_schema = (SELECT id FROM m) THEN i.conv_length "
                      "END),"
                      "  0) len, coalesce(sum(a.schema_id IS NOT (SELECT id FROM m) AND"
                      "  i.conv_schema IS NOT (SELECT id FROM m)), 0) unk,"
                      "  max(i.uploaded_at) t FROM block_indexes i JOIN archived_files a"
                      "  ON a.id = i.file_id WHERE i.table_name = ?1 AND i.period_tag = ?2"
                      "  AND i.dataset_id = ?3) c,"
                      " (SELECT count(*) n, coalesce(sum(CASE WHEN schema_id = (SELECT id FROM m)"
                      "  THEN byte_length WHEN conv_schema = (SELECT id FROM m) THEN conv_length "
                      "END),"
                      "  0) len, coalesce(sum(schema_id IS NOT (SELECT id FROM m) AND"
                      "  conv_schema IS NOT (SELECT id FROM m)), 0) unk,"
                      "  max(created_at) t, coalesce(sum(packed = 0), 0) unp"
                      "  FROM buffer_rows WHERE table_name = ?1 AND period_tag = ?2"
                      "  AND dataset_id = ?3) h",
    [R_SCHEMA_JSON] = "SELECT json FROM schemas WHERE id = ?1",
    [R_VERSIONS] = "SELECT s.id, s.json FROM partition_versions v JOIN schemas s"
                   " ON s.id = v.schema_id WHERE v.partition_id = ?1 AND v.alias = 0"
                   " ORDER BY s.id",
    [R_ROLL_VERSIONS] = "SELECT r.schema_id, s.json FROM roll_versions r JOIN schemas s"
                        " ON s.id = r.schema_id WHERE r.roll_id = ?1 AND r.table_name = ?2"
                        " AND r.period_tag = ?3 ORDER BY r.schema_id",
    /* A roll claimed before roll_versions: its rows' schemas. */
    [R_ROLL_ROW_SCHEMAS] = "SELECT DISTINCT b.schema_id, s.json FROM rolls o, buffer_rows b"
                           " JOIN schemas s ON s.id = b.schema_id WHERE o.id = ?1"
                           " AND b.table_name = ?2 AND b.period_tag = ?3"
                           " AND b.id BETWEEN o.first_row AND o.last_row ORDER BY b.schema_id",
    [R_HAS_VERSION] =
        "SELECT 1 FROM partitions p JOIN partition_versions v ON v.partition_id = p.id"
        " JOIN schemas s ON s.id = v.schema_id WHERE p.table_name = ?1"
        " AND p.period_tag = ?2 AND s.fingerprint = ?3 LIMIT 1",
    /* Tables and periods come from partitions (a handful of rows) and are
     * listed when they hold hot or cold data. */
    [R_TABLES] = "SELECT DISTINCT p.table_name FROM partitions p WHERE " HAS_DATA(
        "p") " ORDER BY p.table_name",
    [R_PERIODS] = "SELECT p.period_tag FROM partitions p WHERE p.table_name = ?1 AND " HAS_DATA(
        "p") " ORDER BY p.period_tag",
    [R_DATASETS] = "SELECT dataset_id FROM buffer_rows WHERE table_name = ?1 AND period_tag = ?2"
                   " UNION SELECT dataset_id FROM block_indexes WHERE table_name = ?1"
                   " AND period_tag = ?2 ORDER BY 1",
    [R_TABLE_EXISTS] =
        "SELECT 1 FROM partitions p WHERE p.table_name = ?1 AND " HAS_DATA("p") " LIMIT 1",
    [R_PERIOD_EXISTS] = "SELECT 1 FROM partitions p WHERE p.table_name = ?1 AND p.period_tag = ?2"
                        " AND " HAS_DATA("p"),
    [R_COUNTS] = "SELECT uploads, bytes, (SELECT count(*) FROM archived_files), unpacked"
                 " FROM buffer_totals",
    [R_PENDING] = "SELECT id, byte_count FROM rolls WHERE committed_at IS NULL"
                  " ORDER BY claimed_at, id LIMIT 1",
    [R_ROLL_GET] = "SELECT first_row, last_row, claimed_at, row_count, byte_count,"
                   " coalesce(base, 0) FROM rolls WHERE id = ?1",
    /* A page of the roll's rows (ids ?6 to ?1) after (table, period, dataset,
     * id) = (?2, ?3, ?4, ?5): the rest of that dataset, then the next
     * datasets. (Two queries: SQLite does not seek on a row value that
     * includes the rowid.) */
    [R_ROLL_SAME] = "SELECT id, table_name, period_tag, dataset_id, record_count, byte_length,"
                    " created_at, schema_id"
                    " FROM buffer_rows WHERE table_name = ?2 AND period_tag = ?3"
                    " AND dataset_id = ?4 AND id > ?5 AND id BETWEEN ?6 AND ?1"
                    " ORDER BY id LIMIT ?7",
    [R_ROLL_NEXT] = "SELECT id, table_name, period_tag, dataset_id, record_count, byte_length,"
                    " created_at, schema_id"
                    " FROM buffer_rows INDEXED BY buffer_rows_dataset"
                    " WHERE (table_name, period_tag, dataset_id) > (?2, ?3, ?4)"
                    " AND id BETWEEN ?6 AND ?1"
                    " ORDER BY table_name, period_tag, dataset_id, id LIMIT ?7",
    [R_ARCHIVES] = "SELECT file_path FROM archived_files ORDER BY id",
    [R_LEDGER] = "SELECT log_pos, state_id FROM ledger WHERE id = 1",
    [R_NODE_EPOCH] = "SELECT epoch FROM ledger_nodes WHERE node = ?1",
    [R_ROLL_STATE] = "SELECT committed_at IS NOT NULL, log_seq FROM rolls WHERE id = ?1",
    /* A checkpoint (bfs_catalog_snapshot): the rolls of the log up to ?1 in
     * log order (rolls_log_seq), each roll's archives in seq order (the
     * UNIQUE(roll_id, seq) index), each archive's index rows in id order
     * (block_indexes_file), the nodes. */
    [R_SNAP_ROLLS] = "SELECT id, node, claimed_at, row_count, byte_count, log_seq, epoch,"
                     " committed_at, kind, base, table_name, period_tag FROM rolls"
                     " WHERE log_seq IS NOT NULL AND log_seq <= ?1 AND committed_at IS NOT NULL"
                     " AND void = 0 ORDER BY log_seq",
    [R_SNAP_ERASURES] = "SELECT seq, node, dataset_id, table_name, period_tag, epoch, erased_at,"
                        " committed_at FROM erasures WHERE seq <= ?1 ORDER BY seq",
    [R_SNAP_ARCH] =
        "SELECT id, file_path, table_name, period_tag, size, header_length, sha256,"
        " schema_fingerprint, codec, versions FROM archived_files WHERE roll_id = ?1 ORDER BY seq",
    [R_SNAP_IDX] = "SELECT dataset_id, start_byte, length, record_count, uploaded_at"
                   " FROM block_indexes WHERE file_id = ?1 ORDER BY id",
    [R_SNAP_NODES] = "SELECT node, epoch FROM ledger_nodes ORDER BY node",
    /* Rolls committed here before the store's log (battlefs before issue 11:
     * no log position), in the order of their first archive (their commit
     * order) after ?1 (bfs_catalog_prelog_next). */
    [R_PRELOG_NEXT] = "SELECT id, f FROM (SELECT r.id id, (SELECT min(a.id) FROM archived_files a"
                      " WHERE a.roll_id = r.id) f FROM rolls r WHERE r.committed_at IS NOT NULL"
                      " AND r.log_seq IS NULL AND r.kind = 0) WHERE f > ?1 ORDER BY f LIMIT 1",
    [R_PRELOG_COUNT] = "SELECT count(*) FROM rolls r WHERE r.committed_at IS NOT NULL"
                       " AND r.log_seq IS NULL AND r.kind = 0 AND EXISTS (SELECT 1 FROM"
                       " archived_files a WHERE a.roll_id = r.id)",
    /* A committed roll as its manifest says it (bfs_catalog_roll_walk). */
    [R_WALK_ROLL] = "SELECT claimed_at, committed_at, row_count, (SELECT coalesce(sum(i.length), 0)"
                    " FROM archived_files a JOIN block_indexes i ON i.file_id = a.id"
                    " WHERE a.roll_id = ?1), coalesce(base, 0) FROM rolls WHERE id = ?1"
                    " AND committed_at IS NOT NULL AND kind = 0",
};

static int set_pragmas(sqlite3 *db, int writer)
{
    char sql[256];
    if (writer)
        snprintf(sql, sizeof sql,
                 "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                 " PRAGMA journal_size_limit = %d; PRAGMA secure_delete = ON;",
                 WAL_LIMIT);
    else
        snprintf(sql, sizeof sql, "PRAGMA query_only = ON;");
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static int prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **st, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static void finalize_all(sqlite3_stmt **st, int n)
{
    for (int i = 0; i < n; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
}

/* ---- write transactions ---- */

/* Under wmu, outside a transaction: the writer's foreign keys on or off.
 * SQLITE_OK or SQLite's error. */
static int set_foreign_keys(struct bfs_catalog *cat, int off)
{
    if (!sqlite3_get_autocommit(cat->w))
        return SQLITE_MISUSE; /* SQLite would ignore it */
    cat->w_fk_off = 1;        /* unknown until it succeeded */
    int rc = sqlite3_exec(cat->w, off ? "PRAGMA foreign_keys = OFF" : "PRAGMA foreign_keys = ON",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        cat->w_fk_off = off;
    return rc;
}

/* Under wmu, outside a transaction: the writer's commits fsynced (FULL) or
 * not (NORMAL). SQLITE_OK or SQLite's error. */
static int set_nosync(struct bfs_catalog *cat, int nosync)
{
    if (!sqlite3_get_autocommit(cat->w))
        return SQLITE_MISUSE;
    cat->w_nosync = 1; /* unknown until it succeeded */
    int rc =
        sqlite3_exec(cat->w, nosync ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL",
                     NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        cat->w_nosync = nosync;
    return rc;
}

/* Under wmu, outside a transaction: undo what tx->flags set, release wmu. */
static void wtx_release(struct bfs_catalog *cat, const struct wtx *tx)
{
    if (cat->w_fk_off) {
        int rc = set_foreign_keys(cat, 0);
        if (rc != SQLITE_OK)
            bfs_error("catalog: %s: foreign keys back on: %s", tx->what,
                      rc == SQLITE_MISUSE ? "a transaction is still open" : sqlite3_errmsg(cat->w));
    }
    if (cat->w_nosync) {
        int rc = set_nosync(cat, 0);
        if (rc != SQLITE_OK)
            bfs_error("catalog: %s: synchronous back to FULL: %s", tx->what,
                      rc == SQLITE_MISUSE ? "a transaction is still open" : sqlite3_errmsg(cat->w));
    }
    pthread_mutex_unlock(&cat->wmu);
}

static int wtx_fail(struct wtx *tx, sqlite3 *db, int rc, const char *step)
{
    bfs_err_set(&tx->err, sql_errno(rc), "%s", sqlite3_errmsg(db));
    if (!(tx->flags & WTX_QUIET))
        bfs_error("catalog: %s: %s: %s", tx->what, step, tx->err.msg);
    return tx->err.code;
}

int bfs_cat_wtx_begin(struct bfs_catalog *cat, struct wtx *tx)
{
    bfs_err_clear(&tx->err);
    pthread_mutex_lock(&cat->wmu);
    int off = (tx->flags & WTX_FK_OFF) != 0;
    int nosync = (tx->flags & WTX_NO_SYNC) != 0;
    int rc = SQLITE_OK;
    const char *step = NULL;
    /* each setting also redone after a restore that failed at the last end */
    if (cat->w_fk_off != off && (rc = set_foreign_keys(cat, off)) != SQLITE_OK)
        step = off ? "foreign keys off" : "foreign keys on";
    else if (cat->w_nosync != nosync && (rc = set_nosync(cat, nosync)) != SQLITE_OK)
        step = nosync ? "synchronous NORMAL" : "synchronous FULL";
    else if ((rc = run(cat->ws[W_BEGIN])) != SQLITE_OK)
        step = "begin";
    if (!step)
        return 0;
    int e = wtx_fail(tx, cat->w, rc, step);
    wtx_release(cat, tx);
    return e;
}

int bfs_cat_wtx_end(struct bfs_catalog *cat, struct wtx *tx, int e)
{
    sqlite3 *db = cat->w;
    if (e == 0) {
        int rc = run(cat->ws[W_COMMIT]);
        if (rc != SQLITE_OK)
            e = wtx_fail(tx, db, rc, "commit");
    }
    if (e < 0 && !sqlite3_get_autocommit(db) && run(cat->ws[W_ROLLBACK]) != SQLITE_OK)
        bfs_error("catalog: %s: rollback: %s", tx->what, sqlite3_errmsg(db));
    wtx_release(cat, tx);
    return e;
}

/* The writer's page cache while the log is read (bfs_catalog_bulk): a
 * manifest's index rows go into block_indexes_dataset in dataset order, all
 * over the index, whose pages SQLite's default cache (2 MB) would read again
 * from the file for every manifest. 16 MiB (with 32, SQLite's sort for a
 * CREATE INDEX, which takes as much again, took a rebuild past 64 MiB of
 * RSS), released at the end. */
#define BULK_CACHE_KIB 16384

int bfs_catalog_bulk_indexes(struct bfs_catalog *cat)
{
    struct wtx tx = {.what = "make block_indexes' indexes"};
    int e = bfs_cat_wtx_begin(cat, &tx);
    if (e < 0)
        return e;
    int dropped = cat->idx_dropped;
    if (dropped)
        e = bfs_cat_make_indexes_locked(cat);
    e = bfs_cat_wtx_end(cat, &tx, e);
    if (e == 0 && dropped) {
        pthread_mutex_lock(&cat->wmu);
        cat->idx_dropped = 0;
        pthread_mutex_unlock(&cat->wmu);
    }
    return e;
}

int bfs_catalog_bulk(struct bfs_catalog *cat, int on, int drop_indexes)
{
    pthread_mutex_lock(&cat->wmu);
    cat->bulk = on && drop_indexes;
    pthread_mutex_unlock(&cat->wmu);
    int e = on ? 0 : bfs_catalog_bulk_indexes(cat);
    pthread_mutex_lock(&cat->wmu);
    int rc = SQLITE_OK;
    if (on && cat->w_cache == 0) {
        sqlite3_stmt *st;
        rc = sqlite3_prepare_v2(cat->w, "PRAGMA cache_size", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            int was = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
            sqlite3_finalize(st);
            rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
            char sql[64];
            snprintf(sql, sizeof sql, "PRAGMA cache_size = -%d", BULK_CACHE_KIB);
            if (rc == SQLITE_OK && was != 0 &&
                (rc = sqlite3_exec(cat->w, sql, NULL, NULL, NULL)) == SQLITE_OK)
                cat->w_cache = was;
        }
    } else if (!on && cat->w_cache != 0) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA cache_size = %d", cat->w_cache);
        rc = sqlite3_exec(cat->w, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            cat->w_cache = 0;
        sqlite3_db_release_memory(cat->w);
    }
    if (rc != SQLITE_OK && e == 0)
        e = sql_fail(cat->w, rc, "set the writer's cache size");
    pthread_mutex_unlock(&cat->wmu);
    return e;
}

/* ---- open, migrate, close ---- */

/* In a write transaction: apply the next migration step, if any. 0 with
 * *to = the version it migrates to (0: the schema is current), or -errno. */
static int migrate_step(struct bfs_catalog *cat, int *to)
{
    sqlite3 *db = cat->w;
    sqlite3_stmt *st;
    int version = -1;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            version = sqlite3_column_int(st, 0);
            rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_OK)
        return sql_fail(db, rc, "read the schema version");
    *to = 0;
    if (version == SCHEMA_VERSION)
        return 0;
    if (version > SCHEMA_VERSION || version < 0) {
        bfs_error("catalog %s has schema version %d, but this battlefs knows versions up "
                  "to %d: use a newer battlefs",
                  cat->path, version, SCHEMA_VERSION);
        return -ENOTSUP;
    }
    char set[64];
    snprintf(set, sizeof set, "PRAGMA user_version = %d", version + 1);
    rc = sqlite3_exec(db, MIGRATIONS[version], NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, set, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        char what[64];
        snprintf(what, sizeof what, "migration to schema version %d", version + 1);
        return sql_fail(db, rc, what);
    }
    *to = version + 1;
    return 0;
}

/* Each step in its own transaction, until the schema is current. */
static int migrate(struct bfs_catalog *cat)
{
    for (;;) {
        struct wtx tx = {.what = "migration"};
        int to = 0;
        int e = bfs_cat_wtx_begin(cat, &tx);
        if (e == 0)
            e = bfs_cat_wtx_end(cat, &tx, migrate_step(cat, &to));
        if (e < 0 || to == 0)
            return e;
        bfs_debug("catalog %s: migrated to schema version %d", cat->path, to);
    }
}

static int open_conn(const char *path, int writer, sqlite3 **out)
{
    int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE |
                (writer ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY);
    sqlite3 *db = NULL;
    /* WAL frames gathered and written at once (walbuf.h); NULL: the default VFS */
    int rc = sqlite3_open_v2(path, &db, flags, bfs_walbuf_vfs());
    if (rc == SQLITE_OK)
        rc = sqlite3_extended_result_codes(db, 1);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        rc = set_pragmas(db, writer);
    if (rc != SQLITE_OK) {
        bfs_error("catalog: open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return sql_errno(rc);
    }
    *out = db;
    return 0;
}

static int set_wal(struct bfs_catalog *cat)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(cat->w, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sql_fail(cat->w, rc, "set WAL mode");
    rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    int ok = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return sql_fail(cat->w, rc, "set WAL mode");
    if (!ok) {
        bfs_error("catalog %s: cannot switch to WAL mode", cat->path);
        return -EIO;
    }
    return 0;
}

/* Create the database file if it is missing: mode 0600 (SQLite gives the
 * -wal and -shm files the database's mode), and its directory entry synced
 * (SQLite syncs the directory for the WAL it creates, not for the database). */
static int create_private(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? 0 : -errno;
    int e = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    char *dir = strdup(path);
    if (!dir)
        return -ENOMEM;
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, strlen(dir) + 1, ".");
    else if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    int dfd = e == 0 ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (e == 0 && (dfd < 0 || fsync(dfd) < 0))
        e = -errno;
    if (dfd >= 0)
        close(dfd);
    free(dir);
    return e;
}

/* ---- the checkpointer ---- */

/* The writer connection's WAL hook, called after each commit (under wmu):
 * wake the checkpointer for every CKPT_FRAMES new frames (not after every
 * commit past the mark: a checkpoint ends with an fsync of the database, and
 * a checkpointer chasing each commit syncs the database as often as the WAL);
 * past CKPT_INLINE frames (the checkpointer never caught up with a stream of
 * commits), checkpoint here so the WAL stays bounded: with wmu held no commit
 * lands meanwhile, and the next transaction restarts the WAL from its start. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    struct bfs_catalog *cat = arg;
    atomic_store_explicit(&cat->wal_frames, frames, memory_order_relaxed);
    if (frames >= CKPT_INLINE) {
        atomic_fetch_add_explicit(&cat->wal_inline_ckpts, 1, memory_order_relaxed);
        int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            bfs_warn("catalog: checkpoint of a %d-frame WAL: %s", frames, sqlite3_errmsg(db));
        return SQLITE_OK;
    }
    if (frames < cat->ckpt_mark) { /* the WAL restarted */
        cat->ckpt_mark = 0;
        atomic_fetch_add_explicit(&cat->wal_restarts, 1, memory_order_relaxed);
    }
    if (frames >= cat->ckpt_mark + CKPT_FRAMES && cat->ckpt_started) {
        cat->ckpt_mark = frames;
        pthread_mutex_lock(&cat->cmu);
        if (!cat->ckpt_wanted) {
            cat->ckpt_wanted = 1;
            pthread_cond_signal(&cat->ccv);
        }
        pthread_mutex_unlock(&cat->cmu);
    }
    return SQLITE_OK;
}

/* One passive checkpoint on the checkpointer's connection: SQLite's result,
 * *log the WAL's frames and *done the frames now in the database. */
static int ckpt_pass(struct bfs_catalog *cat, int *log, int *done)
{
    *log = *done = 0;
    int rc = sqlite3_wal_checkpoint_v2(cat->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, log, done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        bfs_warn("catalog: checkpoint: %s", sqlite3_errmsg(cat->ckpt_db));
    return rc;
}

/* A checkpoint that lets the WAL restart. SQLite starts the WAL again from
 * its beginning only when a write transaction begins with every frame copied
 * into the database. Under a stream of commits a pass never ends there
 * (commits land while it copies and syncs), so the WAL grew to CKPT_INLINE
 * frames, where a commit checkpointed 64 MiB holding the writer: a 40 ms
 * stall of every upload twice a second at 16 writers (docs/bench.md). So
 * passes follow each other, each copying what landed during the one before,
 * until at most CKPT_FINISH frames are left (a group commit of 16 uploads
 * is about 150); the last pass runs holding the writer (wmu: no commit
 * lands), copies and syncs those few (1-8 ms), and the next commit restarts
 * the WAL. If the WAL grew while it waited for wmu (a long
 * transaction), it lets go and passes on without it. A reader holding an
 * old snapshot can keep a pass short of the end: it stops, and the next
 * wake-up tries again (CKPT_INLINE stays the bound). */
static void ckpt_run(struct bfs_catalog *cat)
{
    int log, done;
    int rc = ckpt_pass(cat, &log, &done);
    for (int pass = 0; rc == SQLITE_OK && pass < CKPT_PASSES; pass++) {
        log = atomic_load_explicit(&cat->wal_frames, memory_order_relaxed); /* landed meanwhile */
        if (log < done)
            break; /* the WAL restarted */
        /* Also with nothing left to copy: a commit may have begun before
         * the pass ended, and then it goes on appending to the WAL. */
        if (log - done <= CKPT_FINISH) {
            pthread_mutex_lock(&cat->wmu);
            double held = bfs_metrics_now();
            log = atomic_load_explicit(&cat->wal_frames, memory_order_relaxed);
            int finish = log >= done && log - done <= 2 * CKPT_FINISH;
            if (finish)
                rc = ckpt_pass(cat, &log, &done);
            pthread_mutex_unlock(&cat->wmu);
            bfs_hist_observe(&cat->timing.checkpoint_hold, bfs_metrics_now() - held);
            if (finish || log < done)
                break;
        }
        rc = ckpt_pass(cat, &log, &done);
    }
}

static void *ckpt_main(void *arg)
{
    struct bfs_catalog *cat = arg;
    pthread_mutex_lock(&cat->cmu);
    for (;;) {
        while (!cat->ckpt_wanted && !cat->ckpt_stop)
            pthread_cond_wait(&cat->ccv, &cat->cmu);
        if (cat->ckpt_stop)
            break;
        cat->ckpt_wanted = 0;
        pthread_mutex_unlock(&cat->cmu);
        ckpt_run(cat);
        pthread_mutex_lock(&cat->cmu);
        cat->checkpoints++;
    }
    pthread_mutex_unlock(&cat->cmu);
    return NULL;
}

/* Hand checkpoints to the checkpointer thread. Without it (it cannot start),
 * SQLite's own automatic checkpoints in the committing thread stay on. */
static void start_checkpointer(struct bfs_catalog *cat)
{
    if (open_conn(cat->path, 1, &cat->ckpt_db) < 0)
        return;
    if (pthread_create(&cat->ckpt_thread, NULL, ckpt_main, cat) != 0) {
        bfs_warn("catalog: no checkpointer thread; commits checkpoint themselves");
        sqlite3_close(cat->ckpt_db);
        cat->ckpt_db = NULL;
        return;
    }
    cat->ckpt_started = 1;
    sqlite3_wal_hook(cat->w, wal_hook, cat); /* replaces the automatic checkpoints */
}

static void stop_checkpointer(struct bfs_catalog *cat)
{
    if (cat->ckpt_started) {
        pthread_mutex_lock(&cat->cmu);
        cat->ckpt_stop = 1;
        pthread_cond_signal(&cat->ccv);
        pthread_mutex_unlock(&cat->cmu);
        pthread_join(cat->ckpt_thread, NULL);
        cat->ckpt_started = 0;
    }
    if (cat->ckpt_db && sqlite3_close(cat->ckpt_db) != SQLITE_OK)
        bfs_error("catalog: close the checkpointer's connection: %s", sqlite3_errmsg(cat->ckpt_db));
    cat->ckpt_db = NULL;
}

const struct bfs_commit_timing *bfs_catalog_commit_timing(struct bfs_catalog *cat)
{
    return &cat->timing;
}

void bfs_catalog_wal_counts(struct bfs_catalog *cat, uint64_t *restarts, uint64_t *inline_ckpts)
{
    *restarts = atomic_load_explicit(&cat->wal_restarts, memory_order_relaxed);
    *inline_ckpts = atomic_load_explicit(&cat->wal_inline_ckpts, memory_order_relaxed);
}

uint64_t bfs_catalog_checkpoints(struct bfs_catalog *cat)
{
    pthread_mutex_lock(&cat->cmu);
    uint64_t n = cat->checkpoints;
    pthread_mutex_unlock(&cat->cmu);
    return n;
}

int bfs_catalog_open(const char *path, struct bfs_catalog **out)
{
    *out = NULL;
    int rc = create_private(path);
    if (rc < 0) {
        bfs_error("catalog: cannot create %s: %s", path, strerror(-rc));
        return rc;
    }

    struct bfs_catalog *cat = calloc(1, sizeof *cat);
    if (!cat)
        return -ENOMEM;
    cat->path = strdup(path);
    if (!cat->path) {
        free(cat);
        return -ENOMEM;
    }
    pthread_mutex_init(&cat->wmu, NULL);
    pthread_mutex_init(&cat->qmu, NULL);
    pthread_mutex_init(&cat->rmu, NULL);
    pthread_mutex_init(&cat->lmu, NULL);
    pthread_mutex_init(&cat->cmu, NULL);
    pthread_cond_init(&cat->ccv, NULL);
    cat->qtail = &cat->qhead;
    cat->layouts = calloc(LAYOUT_SLOTS, sizeof *cat->layouts);
    if (!cat->layouts) {
        bfs_catalog_close(cat);
        return -ENOMEM;
    }

    rc = open_conn(path, 1, &cat->w);
    if (rc == 0)
        rc = set_wal(cat);
    if (rc == 0) { /* the transactions' own statements: the migrations use them */
        int src = prepare_all(cat->w, WSQL, cat->ws, W_TX_COUNT);
        if (src != SQLITE_OK)
            rc = sql_fail(cat->w, src, "prepare statements");
    }
    if (rc == 0)
        rc = migrate(cat);
    if (rc == 0) { /* a bulk load that a crash cut short may have left them dropped */
        cat->idx_dropped = 1;
        rc = bfs_catalog_bulk_indexes(cat);
    }
    if (rc == 0) {
        int src =
            prepare_all(cat->w, WSQL + W_TX_COUNT, cat->ws + W_TX_COUNT, W_COUNT - W_TX_COUNT);
        if (src != SQLITE_OK)
            rc = sql_fail(cat->w, src, "prepare statements");
    }
    if (rc < 0) {
        bfs_catalog_close(cat);
        return rc;
    }
    start_checkpointer(cat);
    *out = cat;
    return 0;
}

static void rconn_free(struct rconn *c)
{
    finalize_all(c->st, R_COUNT);
    sqlite3_close(c->db);
    free(c);
}

void bfs_catalog_close(struct bfs_catalog *cat)
{
    if (!cat)
        return;
    assert(!cat->leading && !cat->qhead);
    stop_checkpointer(cat);
    while (cat->idle) {
        struct rconn *c = cat->idle;
        cat->idle = c->next;
        rconn_free(c);
    }
    finalize_all(cat->ws, W_COUNT);
    if (cat->w && sqlite3_close(cat->w) != SQLITE_OK)
        bfs_error("catalog: close %s: %s", cat->path, sqlite3_errmsg(cat->w));
    pthread_mutex_destroy(&cat->wmu);
    pthread_mutex_destroy(&cat->qmu);
    pthread_mutex_destroy(&cat->rmu);
    pthread_mutex_destroy(&cat->lmu);
    pthread_mutex_destroy(&cat->cmu);
    pthread_cond_destroy(&cat->ccv);
    free(cat->layouts);
    free(cat->path);
    free(cat);
}

int bfs_catalog_writer_pragma(struct bfs_catalog *cat, const char *name, int64_t *value)
{
    size_t n = strspn(name, "abcdefghijklmnopqrstuvwxyz_");
    if (n == 0 || n > 64 || name[n] != '\0')
        return -EINVAL;
    char sql[80];
    snprintf(sql, sizeof sql, "PRAGMA %s", name);
    pthread_mutex_lock(&cat->wmu);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(cat->w, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int e = 0;
    if (rc == SQLITE_ROW)
        *value = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        e = -ENOENT;
    else
        e = sql_fail(cat->w, rc, sql);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&cat->wmu);
    return e;
}

/* ---- the read pool ---- */

int bfs_cat_racquire(struct bfs_catalog *cat, struct rconn **out)
{
    pthread_mutex_lock(&cat->rmu);
    struct rconn *c = cat->idle;
    if (c) {
        cat->idle = c->next;
        cat->n_idle--;
    }
    pthread_mutex_unlock(&cat->rmu);
    if (c) {
        *out = c;
        return 0;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    int rc = open_conn(cat->path, 0, &c->db);
    if (rc < 0) {
        free(c);
        return rc;
    }
    int src = prepare_all(c->db, RSQL, c->st, R_COUNT);
    if (src != SQLITE_OK) {
        rc = sql_fail(c->db, src, "prepare read statements");
        rconn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void bfs_cat_rdiscard(struct bfs_catalog *cat, struct rconn *c)
{
    (void)cat;
    rconn_free(c);
}

void bfs_cat_rrelease(struct bfs_catalog *cat, struct rconn *c)
{
    if (!sqlite3_get_autocommit(c->db) &&
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK) {
        bfs_error("catalog: end a read: %s", sqlite3_errmsg(c->db));
        rconn_free(c);
        return;
    }
    pthread_mutex_lock(&cat->rmu);
    if (cat->n_idle < POOL_MAX) {
        c->next = cat->idle;
        cat->idle = c;
        cat->n_idle++;
        c = NULL;
    }
    pthread_mutex_unlock(&cat->rmu);
    if (c)
        rconn_free(c);
}
