/* sha256.h - SHA-256 (FIPS 180-4), used for layout sync markers and S3 payload hashes. */
#ifndef BATTLEFS_SHA256_H
#define BATTLEFS_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct bfs_sha256 {
    uint32_t h[8];
    uint64_t total;
    uint8_t block[64];
    size_t used;
};

void bfs_sha256_init(struct bfs_sha256 *c);
void bfs_sha256_update(struct bfs_sha256 *c, const void *data, size_t n);
void bfs_sha256_final(struct bfs_sha256 *c, uint8_t out[32]);
void bfs_sha256(const void *data, size_t n, uint8_t out[32]);
/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void bfs_hex(const uint8_t *in, size_t n, char *out);

#endif
