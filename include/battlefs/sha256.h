/* sha256.h - SHA-256 (FIPS 180-4) through OpenSSL's libcrypto (EVP), used for
 * layout sync markers, S3 payload hashes and cache entry names; and MD5
 * (RFC 1321), only to recognise an object by its ETag (the MD5 of the body of
 * a single-part PUT on S3, and the ETag the file:// store reports). */
#ifndef BATTLEFS_SHA256_H
#define BATTLEFS_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* A streaming hash. init allocates (EVP_MD_CTX); final or discard frees. */
struct bfs_sha256 {
    void *md; /* EVP_MD_CTX *, NULL when not started or finished */
    int err;  /* the first failure of update (negative errno), reported by final */
};

/* 0, -ENOMEM, -EIO (libcrypto has no SHA-256). On failure nothing is held. */
int bfs_sha256_init(struct bfs_sha256 *c);
/* A failure is kept in c and returned by final. */
void bfs_sha256_update(struct bfs_sha256 *c, const void *data, size_t n);
/* The digest: 0 or -EIO (out is then undefined). Frees c's state either way. */
int bfs_sha256_final(struct bfs_sha256 *c, uint8_t out[32]);
/* Free c's state without a digest (no-op on a finished or zeroed c). */
void bfs_sha256_discard(struct bfs_sha256 *c);
/* One shot: 0, -ENOMEM, -EIO. */
int bfs_sha256(const void *data, size_t n, uint8_t out[32]);
/* MD5, streaming, with the same contract as bfs_sha256 (init allocates; final
 * or discard frees; a failure of update is reported by final). init fails
 * with -EIO where libcrypto offers no MD5 (a FIPS-only configuration). */
struct bfs_md5 {
    void *md;
    int err;
};
int bfs_md5_init(struct bfs_md5 *c);
void bfs_md5_update(struct bfs_md5 *c, const void *data, size_t n);
int bfs_md5_final(struct bfs_md5 *c, uint8_t out[16]);
void bfs_md5_discard(struct bfs_md5 *c);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void bfs_hex(const uint8_t *in, size_t n, char *out);

#endif
