/* ocf.c - Avro Object Container Files: parse, validate, normalise, write headers.
 *
 * Every length in the input is checked against the bytes that exist before it
 * is used. Records are checked by the validator (validate.c), which walks the
 * binary encoding with the schema compiled into a program (bounds, varint
 * lengths, union and enum indexes, UTF-8, nesting depth, element budgets).
 * With BFS_OCF_CROSSCHECK (tests, fuzzer) avro-c (avro_value_read) also decodes
 * exactly the bytes the validator measured. avro-c 1.11 allocates a string's or
 * a fixed's length before it checks that the bytes exist and loops over array
 * counts without a bound, so it must only ever see data the validator accepted.
 *
 * A compiled schema (struct bfs_ocf_schema: avro-c's parse, the Parsing
 * Canonical Form, the layout sync marker and the validator's program) is
 * immutable once built and reference-counted; a bfs_ocf_schema_cache keeps the
 * most recently used ones, so uploads of a known schema skip that work.
 */
#include "battlefs/ocf.h"

#include "battlefs/lru.h"
#include "battlefs/schema.h"
#include "battlefs/validate.h"
#include "battlefs/varint.h"

#include <assert.h>
#include <avro.h>
#include <stdatomic.h>
#include <errno.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <limits.h>
#include <snappy-c.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const uint8_t magic[4] = {'O', 'b', 'j', 1};

/* Most metadata entries accepted in a header. */
#define MAX_META 1024
/* The smallest possible block: count, size (one byte each), sync. */
#define MIN_BLOCK 18

/* ------------------------------------------------------------------------ */
/* errors                                                                    */

/* A printable, bounded copy of untrusted bytes for a message. */
static const char *printable(const uint8_t *s, size_t n, char *tmp, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (o + 4 >= cap) {
            memcpy(tmp + o, "...", 3);
            o += 3;
            break;
        }
        tmp[o++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'') ? (char)s[i] : '?';
    }
    tmp[o] = '\0';
    return tmp;
}

/* ------------------------------------------------------------------------ */
/* codecs                                                                    */

/* ------------------------------------------------------------------------ */
/* header                                                                    */

const struct bfs_ocf_meta *bfs_ocf_meta_get(const struct bfs_ocf_header *h, const char *key)
{
    for (size_t i = 0; i < h->n_meta; i++)
        if (strcmp(h->meta[i].key, key) == 0)
            return &h->meta[i];
    return NULL;
}

void bfs_ocf_header_free(struct bfs_ocf_header *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n_meta; i++) {
        free(h->meta[i].key);
        free(h->meta[i].val);
    }
    free(h->meta);
    free(h->schema_json);
    bfs_ocf_schema_unref(h->compiled);
    memset(h, 0, sizeof *h);
}

/* Read a length-prefixed byte string into a new NUL-terminated buffer. */
static int get_bytes(const uint8_t *buf, size_t len, size_t *pos, uint8_t **out, size_t *n,
                     struct bfs_err *err)
{
    int64_t l;
    int rc = bfs_varint_get_long(buf, len, pos, &l);
    if (rc == BFS_VARINT_TRUNCATED)
        return bfs_err_set(err, -EINVAL, "truncated header");
    if (rc != BFS_VARINT_OK || l < 0)
        return bfs_err_set(err, -EINVAL, "bad header: a metadata length is not a valid length");
    if ((uint64_t)l > len - *pos)
        return bfs_err_set(err, -EINVAL, "truncated header");
    if (*pos + (size_t)l > BFS_OCF_MAX_HEADER) {
        return bfs_err_set(err, -EFBIG, "header (metadata and schema) larger than %u KiB",
                           BFS_OCF_MAX_HEADER >> 10);
    }
    uint8_t *p = malloc((size_t)l + 1);
    if (!p)
        return bfs_err_set(err, -ENOMEM, "out of memory");
    memcpy(p, buf + *pos, (size_t)l);
    p[l] = '\0';
    *pos += (size_t)l;
    *out = p;
    *n = (size_t)l;
    return 0;
}

static int parse_meta(const uint8_t *buf, size_t len, size_t *pos, struct bfs_ocf_header *h,
                      struct bfs_err *err)
{
    size_t cap = 0;
    for (;;) {
        int64_t count;
        int rc = bfs_varint_get_long(buf, len, pos, &count);
        if (rc == BFS_VARINT_TRUNCATED)
            return bfs_err_set(err, -EINVAL, "truncated header");
        if (rc != BFS_VARINT_OK || count == INT64_MIN)
            return bfs_err_set(err, -EINVAL, "bad header: metadata count is not a valid long");
        if (count == 0)
            return 0;
        if (count < 0) {
            /* A negative count is followed by the block's size in bytes. */
            int64_t size;
            count = -count;
            rc = bfs_varint_get_long(buf, len, pos, &size);
            if (rc == BFS_VARINT_TRUNCATED)
                return bfs_err_set(err, -EINVAL, "truncated header");
            if (rc != BFS_VARINT_OK || size < 0) {
                return bfs_err_set(err, -EINVAL,
                                   "bad header: metadata block size is not a valid size");
            }
        }
        /* Each entry takes at least two bytes (two zero lengths). */
        if ((uint64_t)count > (len - *pos) / 2)
            return bfs_err_set(err, -EINVAL, "truncated header");
        if ((uint64_t)count > MAX_META - h->n_meta)
            return bfs_err_set(err, -EINVAL, "bad header: more than %d metadata entries", MAX_META);
        if (h->n_meta + (size_t)count > cap) {
            size_t ncap = h->n_meta + (size_t)count;
            struct bfs_ocf_meta *m = realloc(h->meta, ncap * sizeof *m);
            if (!m)
                return bfs_err_set(err, -ENOMEM, "out of memory");
            h->meta = m;
            cap = ncap;
        }
        for (int64_t i = 0; i < count; i++) {
            struct bfs_ocf_meta *m = &h->meta[h->n_meta];
            uint8_t *key;
            size_t klen;
            rc = get_bytes(buf, len, pos, &key, &klen, err);
            if (rc < 0)
                return rc;
            m->key = (char *)key;
            m->val = NULL;
            m->val_len = 0;
            h->n_meta++;
            char tmp[64];
            if (memchr(key, '\0', klen)) {
                return bfs_err_set(err, -EINVAL,
                                   "bad header: metadata key '%s' contains a NUL byte",
                                   printable(key, klen, tmp, sizeof tmp));
            }
            for (size_t k = 0; k + 1 < h->n_meta; k++) {
                if (strcmp(h->meta[k].key, m->key) == 0) {
                    return bfs_err_set(err, -EINVAL, "bad header: metadata key '%s' appears twice",
                                       printable(key, klen, tmp, sizeof tmp));
                }
            }
            rc = get_bytes(buf, len, pos, &m->val, &m->val_len, err);
            if (rc < 0)
                return rc;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* processing                                                                */

/* ------------------------------------------------------------------------ */
/* compiled schemas and their cache                                          */

struct bfs_ocf_schema {
    atomic_int refs;
    char *json; /* the writer schema as uploaded (the cache's key) */
    size_t json_len;
    char *canon; /* Parsing Canonical Form */
    size_t canon_len;
    uint64_t fingerprint; /* CRC-64-AVRO of canon */
    uint8_t sync[16];
    avro_schema_t schema;   /* avro-c's parse */
    struct bfs_vprog *prog; /* the validator's program */
};

void bfs_ocf_schema_unref(struct bfs_ocf_schema *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    bfs_vprog_free(s->prog);
    if (s->schema)
        avro_schema_decref(s->schema);
    free(s->canon);
    free(s->json);
    free(s);
}

static struct bfs_ocf_schema *schema_ref(struct bfs_ocf_schema *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

int bfs_ocf_schema_new(const char *json, size_t len, struct bfs_ocf_schema **out,
                       struct bfs_err *err)
{
    *out = NULL;
    struct bfs_ocf_schema *s = calloc(1, sizeof *s);
    if (!s || !(s->json = malloc(len + 1))) {
        free(s);
        return bfs_err_set(err, -ENOMEM, "out of memory");
    }
    atomic_init(&s->refs, 1);
    memcpy(s->json, json, len);
    s->json[len] = '\0';
    s->json_len = len;
    /* Strict first (valid names, no duplicate definitions, ...), then avro-c
     * must parse it too, then the validator must know every type. */
    int rc = bfs_schema_canonical(json, len, &s->canon, &s->canon_len, err);
    if (rc == -ENOMEM) {
        bfs_err_set(err, rc, "out of memory");
    } else if (rc < 0) {
        rc = bfs_err_set(err, -EINVAL, "schema does not parse: %s", err ? err->msg : "");
    } else if (avro_schema_from_json_length(json, len, &s->schema) != 0 || !s->schema) {
        s->schema = NULL;
        rc = bfs_err_set(err, -EINVAL, "schema does not parse (avro-c)");
    } else {
        bfs_err_clear(err);
        rc = bfs_vprog_compile(s->schema, &s->prog, err);
        if (rc == -ENOMEM)
            bfs_err_set(err, rc, "out of memory");
        else if (rc < 0)
            rc = bfs_err_set(err, -EINVAL, "schema is not supported: %s",
                             err && err->msg[0] ? err->msg : "a type this module does not know");
    }
    if (rc < 0) {
        bfs_ocf_schema_unref(s);
        return rc;
    }
    rc = bfs_schema_sync(s->canon, s->canon_len, s->sync);
    if (rc < 0) {
        bfs_err_set(err, rc, "SHA-256 of the schema: %s", strerror(-rc));
        bfs_ocf_schema_unref(s);
        return rc;
    }
    s->fingerprint = bfs_schema_rabin(s->canon, s->canon_len);
    *out = s;
    return 0;
}

const char *bfs_ocf_schema_canonical(const struct bfs_ocf_schema *s, size_t *len)
{
    *len = s->canon_len;
    return s->canon;
}

const uint8_t *bfs_ocf_schema_sync(const struct bfs_ocf_schema *s)
{
    return s->sync;
}

uint64_t bfs_ocf_schema_fingerprint(const struct bfs_ocf_schema *s)
{
    return s->fingerprint;
}

/* The cache: the lru (lru.h) of compiled schemas, keyed by their JSON. */
struct bfs_ocf_schema_cache {
    struct bfs_lru *lru;
};

struct schema_key {
    const char *json;
    size_t len;
};

static bool schema_match(const void *item, const void *key)
{
    const struct bfs_ocf_schema *s = item;
    const struct schema_key *k = key;
    return s->json_len == k->len && memcmp(s->json, k->json, k->len) == 0;
}

static void schema_ref_item(void *item)
{
    schema_ref(item);
}

static void schema_unref_item(void *item)
{
    bfs_ocf_schema_unref(item);
}

static const struct bfs_lru_type schema_lru = {schema_match, schema_ref_item, schema_unref_item};

int bfs_ocf_schema_cache_new(size_t n, struct bfs_ocf_schema_cache **out)
{
    struct bfs_ocf_schema_cache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    int rc = bfs_lru_new(n, &schema_lru, &c->lru);
    if (rc < 0) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void bfs_ocf_schema_cache_free(struct bfs_ocf_schema_cache *c)
{
    if (!c)
        return;
    bfs_lru_free(c->lru);
    free(c);
}

int bfs_ocf_schema_get(struct bfs_ocf_schema_cache *c, const char *json, size_t len,
                       struct bfs_ocf_schema **out, struct bfs_err *err)
{
    if (!c)
        return bfs_ocf_schema_new(json, len, out, err);
    struct schema_key key = {json, len};
    if ((*out = bfs_lru_find(c->lru, &key)))
        return 0;
    /* Compiled outside the lock; a schema that does not compile is not kept
     * (a hostile upload cannot fill the cache with failures). */
    int rc = bfs_ocf_schema_new(json, len, out, err);
    if (rc == 0)
        bfs_lru_add(c->lru, *out);
    return rc;
}

struct proc {
    const struct bfs_ocf_header *h;
    struct bfs_err *err;
    const struct bfs_ocf_schema *cs;
    avro_value_iface_t *iface;
    avro_value_t value;
    bool have_value;
    avro_reader_t reader;
    bool crosscheck; /* also decode every record with avro-c */
    uint64_t budget;
    uint64_t total;     /* decompressed bytes so far */
    uint64_t max_plain; /* bound on total (the caller's, at most BFS_OCF_MAX_TOTAL) */
    struct bfs_buf dec; /* decompressed block (scratch: its len stays 0) */
    struct bfs_buf cmp; /* recompressed block (scratch) */
    struct libdeflate_compressor *def; /* at p->level, made at the first block to deflate */
    int level;                         /* deflate level of recompressed blocks */
    int stored;                        /* deflate: framed stored (BFS_OCF_DEFLATE_STORED) */
    /* the block being processed, for messages */
    uint64_t block;
    size_t at;
};

static int perr(struct proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "block N at byte X: ..." */
static int perr(struct proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bfs_err_vset(p->err, -EINVAL, fmt, ap);
    va_end(ap);
    bfs_err_prefix(p->err, "block %" PRIu64 " at byte %zu", p->block, p->at);
    return -EINVAL;
}

/* The blocks decompress to more than the caller allows: EFBIG, not EINVAL. */
static int toobig(struct proc *p)
{
    return bfs_err_set(p->err, -EFBIG, "the records decompress to more than %" PRIu64 " bytes",
                       p->max_plain);
}

/* Largest decompressed size the next block may have; *caller: the bound is the
 * caller's total (EFBIG), not BFS_OCF_MAX_BLOCK (EINVAL). */
static size_t block_limit(const struct proc *p, bool *caller)
{
    uint64_t left = p->max_plain - p->total;
    *caller = left < BFS_OCF_MAX_BLOCK;
    return *caller ? (size_t)left : (size_t)BFS_OCF_MAX_BLOCK;
}

static int nomem(struct proc *p)
{
    return bfs_err_set(p->err, -ENOMEM, "out of memory");
}

static void proc_free(struct proc *p)
{
    if (p->have_value)
        avro_value_decref(&p->value);
    if (p->iface)
        avro_value_iface_decref(p->iface);
    if (p->reader)
        avro_reader_free(p->reader);
    libdeflate_free_compressor(p->def);
    bfs_buf_free(&p->dec);
    bfs_buf_free(&p->cmp);
}

/* Use the compiled schema cs; with decode, also set up avro-c's generic
 * reader for the cross-check. Error messages without a block. */
static int proc_init(struct proc *p, const struct bfs_ocf_schema *cs, bool decode)
{
    static const char zero = 0;
    p->cs = cs;
    p->budget = BFS_OCF_MAX_EMPTY;
    p->crosscheck = decode;
    if (!decode)
        return 0;
    p->iface = avro_generic_class_from_schema(cs->schema);
    if (!p->iface)
        return bfs_err_set(p->err, -EINVAL, "schema is not supported by avro-c");
    if (avro_generic_value_new(p->iface, &p->value) != 0)
        return nomem(p);
    p->have_value = true;
    p->reader = avro_reader_memory(&zero, 0);
    if (!p->reader)
        return nomem(p);
    return 0;
}

/* Inflate raw deflate src[0..n) into out->data (from its start) up to limit
 * bytes; *outlen the size. */
static int inflate_data(const uint8_t *src, size_t n, size_t limit, struct bfs_buf *out,
                        size_t *outlen, struct bfs_err *err)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK)
        return bfs_err_set(err, -ENOMEM, "out of memory");
    size_t cap = n < (SIZE_MAX / 4) ? 4 * n : limit;
    if (cap < 65536)
        cap = 65536;
    if (cap > limit)
        cap = limit;
    int rc = 0;
    if (bfs_buf_reserve_exact(out, cap) < 0)
        rc = bfs_err_set(err, -ENOMEM, "out of memory");
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)n;
    z.next_out = out->data;
    z.avail_out = (uInt)cap;
    uint8_t probe;
    bool probing = false;
    while (rc == 0) {
        int zr = inflate(&z, Z_NO_FLUSH);
        if (probing && z.avail_out == 0) {
            rc = bfs_err_set(err, -EFBIG, "block decompresses to more than %zu bytes", limit);
            break;
        }
        if (zr == Z_STREAM_END)
            break;
        if (zr == Z_MEM_ERROR) {
            rc = bfs_err_set(err, -ENOMEM, "out of memory");
        } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = bfs_err_set(err, -EINVAL, "deflate data is corrupt");
        } else if (z.avail_out > 0) {
            /* Room left but no end: the input ran out. */
            if (zr == Z_BUF_ERROR || z.avail_in == 0)
                rc = bfs_err_set(err, -EINVAL, "deflate data ends before its end marker");
        } else if (cap == limit) {
            /* Full: the stream may still end without more output. */
            probing = true;
            z.next_out = &probe;
            z.avail_out = 1;
        } else {
            size_t used = cap;
            cap = cap > limit / 2 ? limit : cap * 2;
            if (bfs_buf_reserve_exact(out, cap) < 0) {
                rc = bfs_err_set(err, -ENOMEM, "out of memory");
            } else {
                z.next_out = out->data + used;
                z.avail_out = (uInt)(cap - used);
            }
        }
    }
    /* Bytes after the end of the deflate stream are ignored, as other readers
     * do (python3-avro writes three: the rest of a zlib trailer). */
    *outlen = (size_t)z.total_out;
    inflateEnd(&z);
    return rc;
}

static int unsnappy_data(const uint8_t *src, size_t n, size_t limit, struct bfs_buf *out,
                         size_t *outlen, struct bfs_err *err)
{
    if (n < 4)
        return bfs_err_set(err, -EINVAL, "snappy block is shorter than its CRC32");
    size_t clen = n - 4, ulen;
    if (snappy_uncompressed_length((const char *)src, clen, &ulen) != SNAPPY_OK)
        return bfs_err_set(err, -EINVAL, "snappy data is corrupt");
    if (ulen > limit)
        return bfs_err_set(err, -EFBIG, "block decompresses to more than %zu bytes", limit);
    /* Validate before allocating what the stream claims. */
    if (snappy_validate_compressed_buffer((const char *)src, clen) != SNAPPY_OK)
        return bfs_err_set(err, -EINVAL, "snappy data is corrupt");
    if (bfs_buf_reserve_exact(out, ulen ? ulen : 1) < 0)
        return bfs_err_set(err, -ENOMEM, "out of memory");
    size_t got = ulen;
    if (snappy_uncompress((const char *)src, clen, (char *)out->data, &got) != SNAPPY_OK ||
        got != ulen)
        return bfs_err_set(err, -EINVAL, "snappy data is corrupt");
    uint32_t want = (uint32_t)src[clen] << 24 | (uint32_t)src[clen + 1] << 16 |
                    (uint32_t)src[clen + 2] << 8 | (uint32_t)src[clen + 3];
    uint32_t crc = (uint32_t)crc32(0L, out->data, (uInt)ulen);
    if (crc != want)
        return bfs_err_set(err, -EINVAL, "snappy CRC32 does not match the data");
    *outlen = ulen;
    return 0;
}

int bfs_ocf_block_decompress(enum bfs_codec codec, const uint8_t *src, size_t n, size_t limit,
                             struct bfs_buf *scratch, const uint8_t **plain, size_t *plain_len,
                             struct bfs_err *err)
{
    int rc;
    if (n > BFS_OCF_MAX_COMPRESSED || limit > BFS_OCF_MAX_BLOCK)
        return bfs_err_set(err, -EINVAL, "block is larger than %u MiB", BFS_OCF_MAX_BLOCK >> 20);
    switch (codec) {
    case BFS_CODEC_NULL:
        if (n > limit)
            return bfs_err_set(err, -EFBIG, "block decompresses to more than %zu bytes", limit);
        *plain = src;
        *plain_len = n;
        return 0;
    case BFS_CODEC_DEFLATE:
        rc = inflate_data(src, n, limit, scratch, plain_len, err);
        break;
    case BFS_CODEC_SNAPPY:
        rc = unsnappy_data(src, n, limit, scratch, plain_len, err);
        break;
    default:
        return bfs_err_set(err, -EINVAL, "unknown codec %d", (int)codec);
    }
    if (rc == 0)
        *plain = scratch->data;
    return rc;
}

/* Compress data[0..n) with codec into p->cmp (or point at data for null). */
static int compress_block(struct proc *p, enum bfs_codec codec, const uint8_t *data, size_t n,
                          const uint8_t **out, size_t *outlen)
{
    switch (codec) {
    case BFS_CODEC_NULL:
        *out = data;
        *outlen = n;
        return 0;
    case BFS_CODEC_DEFLATE: {
        if (p->stored) {
            size_t fn = bfs_codec_framed_size(codec, n);
            if (bfs_buf_reserve_exact(&p->cmp, fn) < 0)
                return nomem(p);
            *out = p->cmp.data;
            *outlen = bfs_codec_frame(codec, data, n, p->cmp.data);
            return 0;
        }
        /* libdeflate (whole-buffer): 2-4x faster than zlib's deflate at the
         * same level on these records, for about the same size. */
        if (!p->def && !(p->def = libdeflate_alloc_compressor(p->level)))
            return nomem(p);
        size_t bound = libdeflate_deflate_compress_bound(p->def, n);
        if (bfs_buf_reserve_exact(&p->cmp, bound) < 0)
            return nomem(p);
        size_t clen = libdeflate_deflate_compress(p->def, data, n, p->cmp.data, bound);
        if (clen == 0)
            return perr(p, "deflate compression failed");
        *out = p->cmp.data;
        *outlen = clen;
        return 0;
    }
    case BFS_CODEC_SNAPPY: {
        size_t bound = snappy_max_compressed_length(n) + 4;
        if (bfs_buf_reserve_exact(&p->cmp, bound) < 0)
            return nomem(p);
        size_t clen = bound - 4;
        if (snappy_compress((const char *)data, n, (char *)p->cmp.data, &clen) != SNAPPY_OK)
            return perr(p, "snappy compression failed");
        uint32_t crc = (uint32_t)crc32(0L, data, (uInt)n);
        p->cmp.data[clen] = (uint8_t)(crc >> 24);
        p->cmp.data[clen + 1] = (uint8_t)(crc >> 16);
        p->cmp.data[clen + 2] = (uint8_t)(crc >> 8);
        p->cmp.data[clen + 3] = (uint8_t)crc;
        *out = p->cmp.data;
        *outlen = clen + 4;
        return 0;
    }
    }
    return perr(p, "unknown codec");
}

/* Validate and decode `count` records in data[0..n). */
static int decode_records(struct proc *p, const uint8_t *data, size_t n, int64_t count)
{
    if (bfs_vprog_zero(p->cs->prog)) {
        if ((uint64_t)count > p->budget)
            return perr(p, "record count %" PRId64 " is too large for records of no bytes", count);
        p->budget -= (uint64_t)count;
    } else if ((uint64_t)count > n) {
        return perr(p, "record count %" PRId64 " is more than the block's %zu bytes can hold",
                    count, n);
    }
    /* Cross-check: avro-c reads the records that the validator accepted, one
     * after the other from the same bytes, and must end where it ended. */
    if (p->crosscheck)
        avro_reader_memory_set_source(p->reader, (const char *)data, (int64_t)n);
    size_t pos = 0;
    struct bfs_err why;
    for (int64_t r = 1; r <= count; r++) {
        if (bfs_vprog_check(p->cs->prog, data, n, &pos, &p->budget, &why) < 0)
            return perr(p, "record %" PRId64 " does not decode against the schema (%s)", r,
                        why.msg);
        if (p->crosscheck && avro_value_read(p->reader, &p->value) != 0)
            return perr(p, "record %" PRId64 " does not decode against the schema (avro-c)", r);
    }
    if (pos != n)
        return perr(p, "%zu bytes left after the block's %" PRId64 " records", n - pos, count);
    uint8_t extra;
    if (p->crosscheck && count > 0 && avro_read(p->reader, &extra, 1) == 0)
        return perr(p, "the block's records do not decode against the schema (avro-c reads "
                       "fewer bytes)");
    return 0;
}

static int emit_block(struct proc *p, struct bfs_buf *out, int64_t count, const uint8_t *raw,
                      size_t raw_len, const uint8_t *plain, size_t plain_len, enum bfs_codec codec,
                      const uint8_t sync[16])
{
    const uint8_t *data = NULL;
    size_t n = 0;
    int rc;
    if (count == 0)
        return 0; /* an empty block carries nothing: dropped */
    if (codec == p->h->codec) {
        data = raw;
        n = raw_len;
    } else if ((rc = compress_block(p, codec, plain, plain_len, &data, &n)) < 0) {
        return rc;
    }
    if (bfs_buf_put_long(out, count) < 0 || bfs_buf_put_long(out, (int64_t)n) < 0 ||
        bfs_buf_append(out, data, n) < 0 || bfs_buf_append(out, sync, 16) < 0)
        return nomem(p);
    return 0;
}

static int process(struct proc *p, const uint8_t *buf, size_t len, const uint8_t sync[16],
                   enum bfs_codec codec, struct bfs_buf *out, uint64_t *records)
{
    const struct bfs_ocf_header *h = p->h;
    size_t pos = h->header_len;
    uint64_t total_records = 0;
    int rc;
    while (pos < len) {
        p->block++;
        p->at = pos;
        if (len - pos < MIN_BLOCK)
            return bfs_err_set(p->err, -EINVAL, "%zu bytes after the last block", len - pos);
        int64_t count, size;
        rc = bfs_varint_get_long(buf, len, &pos, &count);
        if (rc != BFS_VARINT_OK)
            return perr(p, "record count is not a valid long");
        if (count < 0)
            return perr(p, "negative record count %" PRId64, count);
        rc = bfs_varint_get_long(buf, len, &pos, &size);
        if (rc != BFS_VARINT_OK)
            return perr(p, "block size is not a valid long");
        if (size < 0)
            return perr(p, "negative block size %" PRId64, size);
        if ((uint64_t)size > len - pos || len - pos - (size_t)size < 16)
            return perr(p,
                        "truncated block: its %" PRId64 " bytes and sync marker go beyond "
                        "the end of the file (%zu bytes left)",
                        size, len - pos);
        const uint8_t *raw = buf + pos;
        size_t raw_len = (size_t)size;
        if (memcmp(raw + raw_len, h->sync, 16) != 0)
            return perr(p, "sync marker does not match the header");
        if (raw_len > (h->codec == BFS_CODEC_NULL ? (size_t)BFS_OCF_MAX_BLOCK
                                                  : (size_t)BFS_OCF_MAX_COMPRESSED))
            return perr(p, "block is larger than %u MiB", BFS_OCF_MAX_BLOCK >> 20);

        const uint8_t *plain = raw;
        size_t plain_len = raw_len;
        if (h->codec != BFS_CODEC_NULL) {
            bool caller;
            size_t limit = block_limit(p, &caller);
            rc = bfs_ocf_block_decompress(h->codec, raw, raw_len, limit, &p->dec, &plain,
                                          &plain_len, p->err);
            if (rc == -EFBIG && caller)
                return toobig(p);
            if (rc == -EFBIG)
                return perr(p, "block decompresses to more than %u MiB", BFS_OCF_MAX_BLOCK >> 20);
            if (rc == -EINVAL)
                return bfs_err_prefix(p->err, "block %" PRIu64 " at byte %zu", p->block, p->at);
            if (rc < 0)
                return rc;
        }
        if (plain_len > p->max_plain - p->total)
            return toobig(p);
        p->total += plain_len;
        if ((rc = decode_records(p, plain, plain_len, count)) < 0)
            return rc;
        if (out &&
            (rc = emit_block(p, out, count, raw, raw_len, plain, plain_len, codec, sync)) < 0)
            return rc;
        total_records += (uint64_t)count;
        pos += raw_len + 16;
    }
    if (records)
        *records = total_records;
    return 0;
}

int bfs_ocf_process(const uint8_t *buf, size_t len, const struct bfs_ocf_header *h,
                    const uint8_t sync[16], enum bfs_codec codec, struct bfs_buf *out,
                    uint64_t *records, unsigned flags, uint64_t max_plain, struct bfs_err *err)
{
    struct proc p = {.h = h, .err = err, .level = (int)((flags >> 4) & 0xfu)};
    p.max_plain = max_plain && max_plain < BFS_OCF_MAX_TOTAL ? max_plain : BFS_OCF_MAX_TOTAL;
    if (records)
        *records = 0;
    bfs_err_clear(err);
    if (p.level == 0)
        p.level = 6;
    p.stored = (flags & BFS_OCF_DEFLATE_STORED) != 0;
    if (p.level > 9 ||
        (flags & ~(BFS_OCF_CROSSCHECK | BFS_OCF_DEFLATE_LEVEL(0xf) | BFS_OCF_DEFLATE_STORED)))
        return bfs_err_set(err, -EINVAL, "bad flags %#x (deflate level %d)", flags, p.level);
    if (codec != BFS_CODEC_NULL && codec != BFS_CODEC_DEFLATE && codec != BFS_CODEC_SNAPPY)
        return bfs_err_set(err, -EINVAL, "unknown target codec %d", (int)codec);
    if (h->header_len > len || !h->schema_json)
        return bfs_err_set(err, -EINVAL, "truncated header");
    struct bfs_ocf_schema *own = NULL;
    const struct bfs_ocf_schema *cs = h->compiled;
    int rc = 0;
    if (!cs) { /* a header not from bfs_ocf_parse_header */
        rc = bfs_ocf_schema_new(h->schema_json, h->schema_len, &own, err);
        cs = own;
    }
    if (rc == 0)
        rc = proc_init(&p, cs, (flags & BFS_OCF_CROSSCHECK) != 0);
    if (rc == 0)
        rc = process(&p, buf, len, sync, codec, out, records);
    proc_free(&p);
    bfs_ocf_schema_unref(own);
    return rc;
}

int bfs_ocf_parse_header(const uint8_t *buf, size_t len, struct bfs_ocf_header *h,
                         struct bfs_err *err)
{
    return bfs_ocf_parse_header_cached(buf, len, NULL, h, err);
}

int bfs_ocf_parse_header_cached(const uint8_t *buf, size_t len, struct bfs_ocf_schema_cache *cache,
                                struct bfs_ocf_header *h, struct bfs_err *err)
{
    memset(h, 0, sizeof *h);
    bfs_err_clear(err);
    if (len < sizeof magic) {
        return bfs_err_set(err, -EINVAL, "%s",
                           len == 0 || memcmp(buf, magic, len) == 0
                               ? "truncated header"
                               : "not an Avro object container file (bad magic)");
    }
    if (memcmp(buf, magic, sizeof magic) != 0)
        return bfs_err_set(err, -EINVAL, "not an Avro object container file (bad magic)");
    size_t pos = sizeof magic;
    int rc = parse_meta(buf, len, &pos, h, err);
    if (rc == 0 && len - pos < 16)
        rc = bfs_err_set(err, -EINVAL, "truncated header");
    if (rc < 0) {
        bfs_ocf_header_free(h);
        return rc;
    }
    memcpy(h->sync, buf + pos, 16);
    h->header_len = pos + 16;

    char tmp[48];
    const struct bfs_ocf_meta *codec = bfs_ocf_meta_get(h, "avro.codec");
    const struct bfs_ocf_meta *schema = bfs_ocf_meta_get(h, "avro.schema");
    h->codec = BFS_CODEC_NULL;
    if (codec && bfs_codec_parse((const char *)codec->val, codec->val_len, &h->codec) < 0)
        rc = bfs_err_set(err, -EINVAL, "codec '%s' is not supported (null, deflate, snappy)",
                         printable(codec->val, codec->val_len, tmp, sizeof tmp));
    else if (!schema)
        rc = bfs_err_set(err, -EINVAL, "header has no avro.schema");
    if (rc < 0) {
        bfs_ocf_header_free(h);
        return rc;
    }

    /* The schema must be one this module can canonicalise (strict: valid names,
     * no duplicate definitions, ...), that avro-c parses, and that the
     * validator can compile. */
    rc = bfs_ocf_schema_get(cache, (const char *)schema->val, schema->val_len, &h->compiled, err);
    if (rc == 0) {
        h->schema_json = malloc(schema->val_len + 1);
        if (!h->schema_json) {
            rc = bfs_err_set(err, -ENOMEM, "out of memory");
        } else {
            memcpy(h->schema_json, schema->val, schema->val_len + 1);
            h->schema_len = schema->val_len;
        }
    }
    if (rc < 0)
        bfs_ocf_header_free(h);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* layout header                                                             */

static int put_bytes(struct bfs_buf *out, const void *p, size_t n)
{
    int rc = bfs_buf_put_long(out, (int64_t)n);
    if (rc == 0)
        rc = bfs_buf_append(out, p, n);
    return rc;
}

int bfs_ocf_layout_header(const char *schema_json, size_t schema_len, enum bfs_codec codec,
                          const uint8_t sync[16], struct bfs_buf *out)
{
    size_t mark = out->len;
    if (codec != BFS_CODEC_NULL && codec != BFS_CODEC_DEFLATE && codec != BFS_CODEC_SNAPPY)
        return -EINVAL;
    const char *name = bfs_codec_name(codec);
    int rc = bfs_buf_append(out, magic, sizeof magic);
    /* one map block of two entries, keys in sorted order */
    if (rc == 0)
        rc = bfs_buf_put_long(out, 2);
    if (rc == 0)
        rc = put_bytes(out, "avro.codec", 10);
    if (rc == 0)
        rc = put_bytes(out, name, strlen(name));
    if (rc == 0)
        rc = put_bytes(out, "avro.schema", 11);
    if (rc == 0)
        rc = put_bytes(out, schema_json, schema_len);
    if (rc == 0)
        rc = bfs_buf_put_long(out, 0);
    if (rc == 0)
        rc = bfs_buf_append(out, sync, 16);
    if (rc < 0)
        out->len = mark;
    return rc;
}
