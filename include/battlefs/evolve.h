/* evolve.h - schema evolution: one partition, several writer schemas.
 *
 * A partition (table, period) may hold uploads written with several versions
 * of a record schema. The dataset file is then one Avro OCF whose schema is
 * the merge of every version, with every block converted to it:
 *
 *   bfs_schema_merge   the merged schema (JSON text) of a set of versions;
 *   bfs_conv_new       a version's blocks -> the merged schema, compiled once;
 *   bfs_conv_block     one block converted (decompress, transcode, frame).
 *
 * The merge, field by field (records match fields by name):
 *   - field order: the fold's, each field new in a version inserted right
 *     after its nearest preceding field (in that version) already in the
 *     result, or at the start;
 *   - a field some versions lack becomes nullable, "null" the first branch,
 *     with "default": null; a field that has "default": null in any version
 *     does too. Every other default is dropped (readers of the file use the
 *     file's own schema and need none);
 *   - types: identical stay; int+long -> long, int|long+float -> float,
 *     int|long|float+double -> double, string+bytes -> bytes; unions take the
 *     union of their branches (a branch matches by primitive type, by full
 *     name for records, enums and fixed, by kind for array and map; the
 *     matched branches merge, the others are appended; a non-union is a union
 *     of one branch); arrays merge items, maps values, records fields, enums
 *     append new symbols; fixed needs the same size. Anything else is refused
 *     (-EINVAL, "field OwnShip.karyoku: int and string do not merge");
 *   - attributes outside the canonical form (logicalType, aliases, ...) come
 *     from the first version of the fold that has the type; "doc" is dropped.
 *     A named type is defined once, at its first use, and referenced by full
 *     name after that. The JSON text is compact with its keys sorted.
 *
 * Everything here is pure: no I/O, no logging, no global state. A conv is
 * immutable once made (threads may share it) and reference-counted.
 */
#ifndef BATTLEFS_EVOLVE_H
#define BATTLEFS_EVOLVE_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/buf.h"
#include "battlefs/codec.h"
#include "battlefs/err.h"

/* Merge n writer schemas (JSON texts) into the merged schema.
 * Order-independent: the result depends only on the set of distinct Parsing
 * Canonical Forms (bfs_schema_canonical), folded in ascending order of their
 * CRC-64-AVRO fingerprint (bfs_schema_rabin); duplicates dropped (of texts
 * with one canonical form, the smallest text in byte order is the one used).
 * With one distinct version, *out is a byte-identical copy of json[0] (the
 * fast path: nothing changes for single-version partitions). Otherwise *out
 * is JSON text that battlefs generates, deterministic (same set -> same
 * bytes), compact (no whitespace), that avro-c parses. *out malloc'd,
 * NUL-terminated. 0, -EINVAL (err names the field: "field Battle.karyoku: int
 * and string do not merge"), -ENOMEM. */
int bfs_schema_merge(const char *const *json, const size_t *len, size_t n, char **out,
                     size_t *out_len, struct bfs_err *err);

struct bfs_conv; /* immutable once made: threads may share it */

/* Compile the conversion of blocks written with writer schema wjson into the
 * merged schema mjson (a merge that includes wjson). Blocks come in codec
 * `codec` with any sync marker and leave in the same codec with sync `msync`.
 * Writer fields resolve to merged fields by name; a merged field the writer
 * lacks must be nullable (it is written as null). 0, -EINVAL (err: wjson does
 * not resolve to mjson, with the field), -ENOMEM. */
int bfs_conv_new(const char *wjson, size_t wlen, const char *mjson, size_t mlen,
                 enum bfs_codec codec, const uint8_t msync[16], struct bfs_conv **out,
                 struct bfs_err *err);
/* Drop a reference (the one bfs_conv_new or bfs_conv_get gave). NULL is fine. */
void bfs_conv_free(struct bfs_conv *c);

/* The length of the OCF block at in[0..len) (count varint, size varint, data,
 * 16-byte sync): 0 with *block_len, -EAGAIN if len is too short to tell
 * (fewer than the two varints; callers read more and retry), -EINVAL (a
 * negative count or size, a varint that is not one, or a size larger than
 * BFS_OCF_MAX_COMPRESSED, the largest block bfs_ocf_process accepts). */
int bfs_ocf_block_span(const uint8_t *in, size_t len, size_t *block_len);

/* Convert the one whole block in[0..len) (len = its block_len): decompress,
 * transcode each record, append the converted block (count, size, data,
 * msync) to out. scratch is the caller's reusable buffer (one per thread; its
 * len is left 0). 0, -EINVAL (err: corrupt data, "record 3: ..."), -ENOMEM;
 * on error out is as it was. Output is deterministic and independent of
 * library versions: null codec = raw; deflate = raw deflate made only of
 * stored (BTYPE=00) blocks of at most 65535 bytes, the last with BFINAL set
 * (an empty input is one empty final stored block); snappy = a snappy stream
 * of literal elements of at most 65536 bytes followed by the big-endian CRC32
 * (zlib crc32) of the uncompressed bytes, as the Avro spec's snappy codec. */
int bfs_conv_block(const struct bfs_conv *c, const uint8_t *in, size_t len, struct bfs_buf *out,
                   struct bfs_buf *scratch, struct bfs_err *err);

/* A small thread-safe cache of compiled convs, keyed by (wjson, mjson, codec,
 * msync), least recently used out. */
struct bfs_conv_cache;
/* 0, -EINVAL (slots 0) or -ENOMEM. */
int bfs_conv_cache_new(size_t slots, struct bfs_conv_cache **out);
void bfs_conv_cache_free(struct bfs_conv_cache *c); /* NULL is fine */
/* A reference to the conv of those arguments, from the cache or compiled
 * (and kept; c NULL: only compiled). Errors as bfs_conv_new (failures are not
 * kept). Give it back with bfs_conv_unref. */
int bfs_conv_get(struct bfs_conv_cache *c, const char *wjson, size_t wlen, const char *mjson,
                 size_t mlen, enum bfs_codec codec, const uint8_t msync[16], struct bfs_conv **out,
                 struct bfs_err *err);
void bfs_conv_unref(struct bfs_conv *c); /* the same as bfs_conv_free */

#endif
