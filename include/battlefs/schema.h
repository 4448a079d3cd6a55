/* schema.h - Avro Parsing Canonical Form and fingerprints (Avro 1.11 spec). */
#ifndef BATTLEFS_SCHEMA_H
#define BATTLEFS_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/err.h"

/* Parsing Canonical Form of the schema JSON text json[0..len).
 * *out is malloc'd and NUL-terminated; *out_len its length.
 * Returns 0, -EINVAL (not a schema) or -ENOMEM, with err (may be NULL) saying
 * what is wrong. */
int bfs_schema_canonical(const char *json, size_t len, char **out, size_t *out_len,
                         struct bfs_err *err);

/* CRC-64-AVRO (Rabin) fingerprint of a canonical form, as in the spec. */
uint64_t bfs_schema_rabin(const char *canon, size_t len);

/* The layout sync marker: first 16 bytes of SHA-256 of the canonical form.
 * 0, or -ENOMEM when SHA-256 (libcrypto) cannot allocate its context (sync
 * is then left unset and must not be used). */
int bfs_schema_sync(const char *canon, size_t len, uint8_t sync[16]);

#endif
