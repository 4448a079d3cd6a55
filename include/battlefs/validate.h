/* validate.h - the record validator.
 *
 * A writer schema compiled into a flat program that checks Avro binary
 * encoding without building values: bounds, varint lengths, int ranges, union
 * and enum indexes, booleans, UTF-8 strings, nesting depth and a budget of
 * zero-byte values. A program is immutable once compiled: threads may share it.
 */
#ifndef BATTLEFS_VALIDATE_H
#define BATTLEFS_VALIDATE_H

#include <avro.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "battlefs/err.h"

/* Deepest nesting of values (records, arrays, maps, unions) in a record. */
#define BFS_VALIDATE_MAX_DEPTH 256

struct bfs_vprog;

/* Compile avro-c's parse of a schema. 0, -EINVAL (err says what is not
 * supported when it can; else its msg is left as it was) or -ENOMEM. */
int bfs_vprog_compile(avro_schema_t schema, struct bfs_vprog **out, struct bfs_err *err);
void bfs_vprog_free(struct bfs_vprog *p); /* NULL is fine */

/* Whether some value of the schema encodes in zero bytes (null, records of
 * such types only). */
bool bfs_vprog_zero(const struct bfs_vprog *p);

/* Check one value at d[*pos..len) and advance *pos past it. *budget is the
 * number of zero-byte array items still allowed; it is decremented. Returns 0,
 * or -EINVAL with err (may be NULL) saying what is wrong ("a string is not
 * valid UTF-8"); *pos is then unspecified. */
int bfs_vprog_check(const struct bfs_vprog *p, const uint8_t *d, size_t len, size_t *pos,
                    uint64_t *budget, struct bfs_err *err);

#endif
