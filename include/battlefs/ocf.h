/* ocf.h - Avro Object Container File parsing, validation, normalisation and headers.
 *
 * All functions work on an in-memory (usually mmap'd) image of a file. Nothing
 * trusts a length field: every size is checked against the bytes that exist and
 * against BFS_OCF_MAX_BLOCK before anything is allocated.
 *
 * A failure's reason comes in a struct bfs_err (err.h; the pointer may be
 * NULL) with the code returned, e.g. {-EINVAL, "block 3 at byte 5120: sync
 * marker does not match the header"}: the text of a rejection.
 */
#ifndef BATTLEFS_OCF_H
#define BATTLEFS_OCF_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/codec.h"
#include "battlefs/err.h"

/* Largest decompressed block accepted (a zip bomb stops here). */
#define BFS_OCF_MAX_BLOCK (64u * 1024 * 1024)
/* Largest compressed block (the size field of a block in a deflate or snappy
 * file) accepted: a little over BFS_OCF_MAX_BLOCK, as stored deflate blocks and
 * snappy literals add a few bytes. */
#define BFS_OCF_MAX_COMPRESSED (BFS_OCF_MAX_BLOCK + 1024u * 1024)
/* Largest sum of the decompressed sizes of a file's blocks (callers pass a
 * smaller one: ingest passes max_upload). */
#define BFS_OCF_MAX_TOTAL (1024u * 1024 * 1024)
/* Largest header (magic, metadata with the schema, sync) accepted: 350 times
 * the largest FUSOU schema (2,990 bytes). A larger one is refused (EFBIG)
 * before anything of it is copied. */
#define BFS_OCF_MAX_HEADER (1024u * 1024)
/* Most values that encode in zero bytes (records of a schema like "null",
 * items of an array of null) accepted in one file: bounds the work a few
 * bytes can ask for. Every other value takes at least one byte. */
#define BFS_OCF_MAX_EMPTY (1u << 20)

struct bfs_ocf_meta {
    char *key;    /* NUL-terminated */
    uint8_t *val; /* NUL-terminated for convenience; val_len excludes the NUL */
    size_t val_len;
};

struct bfs_ocf_schema;
struct bfs_ocf_schema_cache;

struct bfs_ocf_header {
    char *schema_json; /* the avro.schema value, NUL-terminated */
    size_t schema_len;
    struct bfs_ocf_schema *compiled; /* the schema, compiled (a reference) */
    enum bfs_codec codec;
    uint8_t sync[16];
    size_t header_len; /* bytes up to and including the sync marker */
    size_t n_meta;
    struct bfs_ocf_meta *meta;
};

/* Look a metadata key up; NULL if absent. */
const struct bfs_ocf_meta *bfs_ocf_meta_get(const struct bfs_ocf_header *h, const char *key);
void bfs_ocf_header_free(struct bfs_ocf_header *h);

/* Parse the header of buf[0..len): magic, metadata map, avro.schema (present;
 * parses with avro-c), avro.codec (absent = null; null/deflate/snappy), sync.
 * Returns 0, -EINVAL (err set) or -ENOMEM. h is valid only on success. */
int bfs_ocf_parse_header(const uint8_t *buf, size_t len, struct bfs_ocf_header *h,
                         struct bfs_err *err);

/* Like bfs_ocf_parse_header, taking the compiled schema from cache (NULL: no
 * cache) when the same schema JSON was seen before. */
int bfs_ocf_parse_header_cached(const uint8_t *buf, size_t len, struct bfs_ocf_schema_cache *cache,
                                struct bfs_ocf_header *h, struct bfs_err *err);

/* A writer schema compiled for validation: avro-c's parse, the Parsing
 * Canonical Form, its fingerprint (bfs_schema_rabin), the layout sync marker
 * (bfs_schema_sync) and the validator's program. Immutable and reference-counted: safe to share
 * between threads. 0, -EINVAL (err: "schema does not parse: ...", "schema does not parse (avro-c)",
 * "schema is not supported: ...") or -ENOMEM. */
int bfs_ocf_schema_new(const char *json, size_t len, struct bfs_ocf_schema **out,
                       struct bfs_err *err);
void bfs_ocf_schema_unref(struct bfs_ocf_schema *s); /* NULL is fine */
const char *bfs_ocf_schema_canonical(const struct bfs_ocf_schema *s, size_t *len);
const uint8_t *bfs_ocf_schema_sync(const struct bfs_ocf_schema *s);
uint64_t bfs_ocf_schema_fingerprint(const struct bfs_ocf_schema *s);

/* The most recently used compiled schemas, keyed by their exact JSON bytes;
 * thread-safe. Schemas that fail to compile are not kept. */
struct bfs_ocf_schema_cache;
int bfs_ocf_schema_cache_new(size_t slots, struct bfs_ocf_schema_cache **out);
void bfs_ocf_schema_cache_free(struct bfs_ocf_schema_cache *c);
/* A reference to the compiled json (from the cache, or compiled and added;
 * c NULL: compiled). Errors as bfs_ocf_schema_new. */
int bfs_ocf_schema_get(struct bfs_ocf_schema_cache *c, const char *json, size_t len,
                       struct bfs_ocf_schema **out, struct bfs_err *err);

/* Validate every block after the header and, if out != NULL, append the
 * blocks normalised to the layout (sync marker `sync`, codec `codec`) to out:
 * count, size, data, sync per block, no header. Checks: count >= 0, size
 * within the file, sync equal to the header's, nothing after the last block,
 * every record decodes against h->schema_json (battlefs' own compiled
 * validator) and the records consume the block exactly. With flags
 * BFS_OCF_CROSSCHECK, every record is also decoded with avro-c, which must
 * accept it and end at the same byte (a differential check for tests and the
 * fuzzer; it doubles the cost). *records gets the total record count.
 * Blocks of count 0 are validated but left out of `out`. A block whose codec
 * equals `codec` is copied as it is (bytes after the end of a deflate stream
 * included: other readers ignore them); others are recompressed (deflate:
 * raw, level 6 or BFS_OCF_DEFLATE_LEVEL(n) in flags; snappy: with its CRC32). Limits:
 * BFS_OCF_MAX_BLOCK per block, max_plain decompressed bytes per file (0 or beyond:
 * BFS_OCF_MAX_TOTAL), BFS_OCF_MAX_EMPTY zero-byte values per file, values nested at most 256
 * deep; strings must be valid UTF-8 and booleans 0/1. Errors read "block N at byte X: ..." (N
 * from 1, X the block's offset) or "K bytes after the last block". Returns 0, -EINVAL (err set),
 * -EFBIG (the records decompress to more than max_plain: a decompression bomb; err set) or
 * -ENOMEM. On error out may hold partial data. */
int bfs_ocf_process(const uint8_t *buf, size_t len, const struct bfs_ocf_header *h,
                    const uint8_t sync[16], enum bfs_codec codec, struct bfs_buf *out,
                    uint64_t *records, unsigned flags, uint64_t max_plain, struct bfs_err *err);
#define BFS_OCF_CROSSCHECK       1u
#define BFS_OCF_DEFLATE_LEVEL(n) (((unsigned)(n)&0xfu) << 4) /* n = 1..9; 0: level 6 */
/* Blocks recompressed to deflate are framed as stored deflate blocks
 * (bfs_codec_frame) instead of compressed: a valid deflate stream at the cost
 * of a copy, compressed later (packer.h). Blocks already deflate are copied. */
#define BFS_OCF_DEFLATE_STORED 0x100u

/* Decompress one block's data src[0..n) written in codec: null gives *plain =
 * src; deflate (raw; bytes after the end of the stream are ignored, as other
 * readers do) and snappy (with its big-endian CRC32, checked) decompress into
 * scratch from its start (scratch->len is left as it was) and *plain points
 * there. At most limit (<= BFS_OCF_MAX_BLOCK) bytes; n at most
 * BFS_OCF_MAX_COMPRESSED. 0; -EFBIG: the data decompresses to more than limit
 * bytes; -EINVAL: corrupt data ("deflate data is corrupt", ...); -ENOMEM; err
 * (may be NULL) says which, without a block position. */
int bfs_ocf_block_decompress(enum bfs_codec codec, const uint8_t *src, size_t n, size_t limit,
                             struct bfs_buf *scratch, const uint8_t **plain, size_t *plain_len,
                             struct bfs_err *err);

/* Append a layout header to out: magic, metadata map {avro.codec, avro.schema}
 * (keys sorted), sync. Deterministic: the same inputs give the same bytes. */
int bfs_ocf_layout_header(const char *schema_json, size_t schema_len, enum bfs_codec codec,
                          const uint8_t sync[16], struct bfs_buf *out);

#endif
