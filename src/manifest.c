/* manifest.c - write and read roll manifests and checkpoints (manifest.h;
 * docs/format.md, "Manifests" and "Checkpoints").
 *
 * A manifest is an OCF file of the schema below, written with the layout rule
 * of every battlefs file (bfs_ocf_layout_header: the header is a function of
 * the schema and codec, the sync marker the first 16 bytes of the SHA-256 of
 * the schema's canonical form), codec deflate, a block every ENTRIES_PER_BLOCK
 * entries. Reading streams the file a block at a time through one buffer.
 * A checkpoint is the same file with more kinds of entries: one writer and
 * one reader serve both, checking the order each allows.
 */
#include "battlefs/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/buf.h"
#include "battlefs/fsutil.h"
#include "battlefs/names.h"
#include "battlefs/schema.h"
#include "battlefs/sha256.h"
#include "battlefs/store.h"
#include "battlefs/varint.h"

/* The manifest's schema, of a version (its namespace) whose Roll record ends
 * with ROLL_TAIL and Archive record with ARCHIVE_TAIL (more fields, each after
 * a comma), and whose entry union ends with MORE (more branches, likewise). */
#define MANIFEST_SCHEMA(NAMESPACE, ROLL_TAIL, ARCHIVE_TAIL, MORE)                                  \
    "{\"type\":\"record\",\"name\":\"ManifestEntry\",\"namespace\":\"" NAMESPACE "\","             \
    "\"fields\":[{\"name\":\"entry\",\"type\":["                                                   \
    "{\"type\":\"record\",\"name\":\"Roll\",\"fields\":["                                          \
    "{\"name\":\"node\",\"type\":\"string\"},{\"name\":\"roll_id\",\"type\":\"string\"},"          \
    "{\"name\":\"rows\",\"type\":\"long\"},{\"name\":\"bytes\",\"type\":\"long\"},"                \
    "{\"name\":\"claimed_at\",\"type\":\"long\"}" ROLL_TAIL "]},"                                  \
    "{\"type\":\"record\",\"name\":\"Archive\",\"fields\":["                                       \
    "{\"name\":\"key\",\"type\":\"string\"},{\"name\":\"table\",\"type\":\"string\"},"             \
    "{\"name\":\"period\",\"type\":\"string\"},{\"name\":\"size\",\"type\":\"long\"},"             \
    "{\"name\":\"header_length\",\"type\":\"long\"},"                                              \
    "{\"name\":\"sha256\",\"type\":{\"type\":\"fixed\",\"name\":\"SHA256\",\"size\":32}},"         \
    "{\"name\":\"schema_fingerprint\",\"type\":\"string\"},{\"name\":\"codec\",\"type\":"          \
    "\"string\"}" ARCHIVE_TAIL "]},"                                                               \
    "{\"type\":\"record\",\"name\":\"Index\",\"fields\":["                                         \
    "{\"name\":\"dataset\",\"type\":\"string\"},{\"name\":\"start\",\"type\":\"long\"},"           \
    "{\"name\":\"length\",\"type\":\"long\"},{\"name\":\"records\",\"type\":\"long\"},"            \
    "{\"name\":\"uploaded_at\",\"type\":\"long\"}]},"                                              \
    "{\"type\":\"record\",\"name\":\"Commit\",\"fields\":["                                        \
    "{\"name\":\"seq\",\"type\":\"long\"},{\"name\":\"epoch\",\"type\":\"long\"},"                 \
    "{\"name\":\"committed_at\",\"type\":\"long\"}]},"                                             \
    "{\"type\":\"record\",\"name\":\"Node\",\"fields\":["                                          \
    "{\"name\":\"node\",\"type\":\"string\"},{\"name\":\"epoch\",\"type\":\"long\"}]}" MORE "]}]}"

#define VERSIONS_FIELD ",{\"name\":\"versions\",\"type\":{\"type\":\"array\",\"items\":\"string\"}}"
#define BASE_FIELD     ",{\"name\":\"base\",\"type\":\"long\"}"
#define V3_BRANCHES                                                                                \
    ",{\"type\":\"record\",\"name\":\"Compact\",\"fields\":["                                      \
    "{\"name\":\"node\",\"type\":\"string\"},{\"name\":\"compact_id\",\"type\":\"string\"},"       \
    "{\"name\":\"table\",\"type\":\"string\"},{\"name\":\"period\",\"type\":\"string\"},"          \
    "{\"name\":\"upto\",\"type\":\"long\"},{\"name\":\"bytes\",\"type\":\"long\"},"                \
    "{\"name\":\"retired\",\"type\":\"long\"}]},"                                                  \
    "{\"type\":\"record\",\"name\":\"Retire\",\"fields\":[{\"name\":\"key\",\"type\":\"string\"}]" \
    "},"                                                                                           \
    "{\"type\":\"record\",\"name\":\"Erase\",\"fields\":["                                         \
    "{\"name\":\"node\",\"type\":\"string\"},{\"name\":\"dataset\",\"type\":\"string\"},"          \
    "{\"name\":\"table\",\"type\":[\"null\",\"string\"]},{\"name\":\"period\",\"type\":"           \
    "[\"null\",\"string\"]},{\"name\":\"erased_at\",\"type\":\"long\"}]}"

const char bfs_manifest_schema[] =
    MANIFEST_SCHEMA("battlefs.manifest.v3", BASE_FIELD, VERSIONS_FIELD, V3_BRANCHES);

/* Version 2 (read only): no Roll.base, no Compact, Retire or Erase. */
const char bfs_manifest_schema_v2[] =
    MANIFEST_SCHEMA("battlefs.manifest.v2", "", VERSIONS_FIELD, "");

/* Version 1 (read only): an Archive without its versions. */
const char bfs_manifest_schema_v1[] = MANIFEST_SCHEMA("battlefs.manifest.v1", "", "", "");

enum {
    E_ROLL = 0,
    E_ARCHIVE = 1,
    E_INDEX = 2,
    E_COMMIT = 3,
    E_NODE = 4,
    E_COMPACT = 5,
    E_RETIRE = 6,
    E_ERASE = 7
};

#define ENTRIES_PER_BLOCK 4096
#define DEFLATE_LEVEL     6
#define STR_MAX           1024                /* longest string field */
#define BLOCK_MAX         (16u * 1024 * 1024) /* largest block, compressed or not */
#define NODE_MAX          64                  /* longest node name */
#define ROLL_ID_MAX       128                 /* longest roll id */

/* ---- the layout of a manifest --------------------------------------------- */

static int manifest_header(const char *schema, struct bfs_buf *out, uint8_t sync[16])
{
    char *canon = NULL;
    size_t clen;
    int rc = bfs_schema_canonical(schema, strlen(schema), &canon, &clen, NULL);
    if (rc == 0)
        rc = bfs_schema_sync(canon, clen, sync);
    free(canon);
    if (rc == 0)
        rc = bfs_ocf_layout_header(schema, strlen(schema), BFS_CODEC_DEFLATE, sync, out);
    return rc;
}

/* ---- writing ---------------------------------------------------------------- */

struct bfs_manifest_writer {
    int fd;
    char *path;
    uint8_t sync[16];
    struct bfs_buf block; /* encoded entries of the block being filled */
    struct bfs_buf out;   /* scratch: a block as written */
    int64_t entries;      /* in block */
    struct bfs_sha256 sha;
    uint64_t size;
    struct libdeflate_compressor *def;
    /* the current archive, to check its index rows */
    bool have_archive;
    uint64_t arch_size, arch_header;
    /* what may come next */
    bool ckpt;                    /* a checkpoint (bfs_checkpoint_create) */
    bool in_roll;                 /* archives may follow: a manifest, a checkpoint after a roll */
    int64_t retire_left;          /* a compaction's Retire entries still to come */
    bool nodes;                   /* a checkpoint's Node entries began */
    int64_t last_seq;             /* a checkpoint's last Commit seq (0: none yet) */
    char last_node[NODE_MAX + 1]; /* a checkpoint's last Node entry */
    uint64_t total;               /* entries written */
};

static int put_str(struct bfs_buf *b, const char *s)
{
    size_t n = strlen(s);
    int rc = bfs_buf_put_long(b, (int64_t)n);
    return rc ? rc : bfs_buf_append(b, s, n);
}

static int write_all(struct bfs_manifest_writer *w, const void *p, size_t n)
{
    int rc = bfs_write_all(w->fd, p, n);
    if (rc < 0)
        return rc;
    bfs_sha256_update(&w->sha, p, n);
    w->size += n;
    return 0;
}

static int flush_block(struct bfs_manifest_writer *w)
{
    if (w->entries == 0)
        return 0;
    size_t bound = libdeflate_deflate_compress_bound(w->def, w->block.len);
    bfs_buf_reset(&w->out);
    int rc = bfs_buf_put_long(&w->out, w->entries);
    size_t head = w->out.len;
    if (rc == 0)
        rc = bfs_buf_reserve(&w->out, 10 + bound + 16);
    if (rc < 0)
        return rc;
    /* The data after room for the size varint, then moved into place. */
    uint8_t *data = w->out.data + head + 10;
    size_t clen = libdeflate_deflate_compress(w->def, w->block.data, w->block.len, data, bound);
    if (clen == 0)
        return -EIO;
    struct bfs_buf sz = {0};
    if ((rc = bfs_buf_put_long(&sz, (int64_t)clen)) < 0)
        return rc;
    memcpy(w->out.data + head, sz.data, sz.len);
    memmove(w->out.data + head + sz.len, data, clen);
    w->out.len = head + sz.len + clen;
    bfs_buf_free(&sz);
    if ((rc = bfs_buf_append(&w->out, w->sync, 16)) < 0)
        return rc;
    rc = write_all(w, w->out.data, w->out.len);
    bfs_buf_reset(&w->block);
    w->entries = 0;
    return rc;
}

static int end_entry(struct bfs_manifest_writer *w)
{
    w->total++;
    return ++w->entries >= ENTRIES_PER_BLOCK ? flush_block(w) : 0;
}

static bool printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] == 0x7f)
            return false;
    return true;
}

static bool fingerprint_valid(const char *s)
{
    if (strlen(s) != 16)
        return false;
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

void bfs_manifest_abort(struct bfs_manifest_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (w->path)
        unlink(w->path);
    bfs_sha256_discard(&w->sha);
    libdeflate_free_compressor(w->def);
    bfs_buf_free(&w->block);
    bfs_buf_free(&w->out);
    free(w->path);
    free(w);
}

static bool roll_valid(const struct bfs_manifest_roll *r)
{
    return bfs_node_valid(r->node) && printable(r->roll_id, ROLL_ID_MAX) && r->rows >= 1 &&
           r->bytes >= 0 && r->claimed_at >= 0 && r->base >= 0;
}

static bool compact_valid(const struct bfs_manifest_compact *c)
{
    return bfs_node_valid(c->node) && printable(c->compact_id, ROLL_ID_MAX) &&
           bfs_name_valid(c->table, strlen(c->table)) &&
           bfs_name_valid(c->period, strlen(c->period)) && c->upto >= 1 && c->bytes >= 0 &&
           c->retired >= 0;
}

static bool erase_valid(const struct bfs_manifest_erase *e)
{
    return bfs_node_valid(e->node) && bfs_name_valid(e->dataset, strlen(e->dataset)) &&
           (e->table == NULL) == (e->period == NULL) &&
           (!e->table || (bfs_name_valid(e->table, strlen(e->table)) &&
                          bfs_name_valid(e->period, strlen(e->period)))) &&
           e->erased_at >= 0;
}

/* A writer of a new file at path (created, must not exist) holding the
 * header. 0 or -errno. */
static int writer_open(const char *path, struct bfs_manifest_writer **out)
{
    *out = NULL;
    struct bfs_manifest_writer *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->fd = -1;
    int rc = bfs_sha256_init(&w->sha);
    if (rc < 0) {
        free(w);
        return rc;
    }
    if (!(w->path = strdup(path)) || !(w->def = libdeflate_alloc_compressor(DEFLATE_LEVEL))) {
        rc = -ENOMEM;
        goto fail;
    }
    w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        rc = -errno;
        free(w->path);
        w->path = NULL; /* not ours: do not remove it */
        goto fail;
    }
    struct bfs_buf h = {0};
    rc = manifest_header(bfs_manifest_schema, &h, w->sync);
    if (rc == 0)
        rc = write_all(w, h.data, h.len);
    bfs_buf_free(&h);
    if (rc < 0)
        goto fail;
    *out = w;
    return 0;
fail:
    bfs_manifest_abort(w);
    return rc;
}

/* The Roll entry of a valid roll; a new roll has no archive yet. */
static int put_roll(struct bfs_manifest_writer *w, const struct bfs_manifest_roll *roll)
{
    struct bfs_buf *b = &w->block;
    int rc = bfs_buf_put_long(b, E_ROLL);
    if (rc == 0)
        rc = put_str(b, roll->node);
    if (rc == 0)
        rc = put_str(b, roll->roll_id);
    if (rc == 0)
        rc = bfs_buf_put_long(b, roll->rows);
    if (rc == 0)
        rc = bfs_buf_put_long(b, roll->bytes);
    if (rc == 0)
        rc = bfs_buf_put_long(b, roll->claimed_at);
    if (rc == 0)
        rc = bfs_buf_put_long(b, roll->base);
    if (rc == 0)
        rc = end_entry(w);
    w->have_archive = false;
    w->in_roll = rc == 0;
    w->retire_left = 0;
    return rc;
}

/* The Compact entry of a valid compaction. */
static int put_compact(struct bfs_manifest_writer *w, const struct bfs_manifest_compact *c)
{
    struct bfs_buf *b = &w->block;
    int rc = bfs_buf_put_long(b, E_COMPACT);
    if (rc == 0)
        rc = put_str(b, c->node);
    if (rc == 0)
        rc = put_str(b, c->compact_id);
    if (rc == 0)
        rc = put_str(b, c->table);
    if (rc == 0)
        rc = put_str(b, c->period);
    if (rc == 0)
        rc = bfs_buf_put_long(b, c->upto);
    if (rc == 0)
        rc = bfs_buf_put_long(b, c->bytes);
    if (rc == 0)
        rc = bfs_buf_put_long(b, c->retired);
    if (rc == 0)
        rc = end_entry(w);
    w->have_archive = false;
    w->in_roll = rc == 0;
    w->retire_left = c->retired;
    return rc;
}

/* A Commit entry (checkpoints). */
static int put_commit(struct bfs_manifest_writer *w, int64_t seq, int64_t epoch,
                      int64_t committed_at)
{
    struct bfs_buf *b = &w->block;
    int rc = bfs_buf_put_long(b, E_COMMIT);
    if (rc == 0)
        rc = bfs_buf_put_long(b, seq);
    if (rc == 0)
        rc = bfs_buf_put_long(b, epoch);
    if (rc == 0)
        rc = bfs_buf_put_long(b, committed_at);
    if (rc == 0)
        rc = end_entry(w);
    if (rc == 0)
        w->last_seq = seq;
    return rc;
}

/* An optional string: the union ["null", "string"]. */
static int put_opt_str(struct bfs_buf *b, const char *s)
{
    if (!s)
        return bfs_buf_put_long(b, 0);
    int rc = bfs_buf_put_long(b, 1);
    return rc ? rc : put_str(b, s);
}

int bfs_manifest_create(const char *path, const struct bfs_manifest_roll *roll,
                        struct bfs_manifest_writer **out)
{
    *out = NULL;
    if (!roll_valid(roll))
        return -EINVAL;
    struct bfs_manifest_writer *w;
    int rc = writer_open(path, &w);
    if (rc < 0)
        return rc;
    if ((rc = put_roll(w, roll)) < 0) {
        bfs_manifest_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

int bfs_manifest_create_compact(const char *path, const struct bfs_manifest_compact *c,
                                struct bfs_manifest_writer **out)
{
    *out = NULL;
    if (!compact_valid(c))
        return -EINVAL;
    struct bfs_manifest_writer *w;
    int rc = writer_open(path, &w);
    if (rc < 0)
        return rc;
    if ((rc = put_compact(w, c)) < 0) {
        bfs_manifest_abort(w);
        return rc;
    }
    *out = w;
    return 0;
}

int bfs_manifest_add_retire(struct bfs_manifest_writer *w, const char *key)
{
    if (w->ckpt || w->retire_left <= 0 || bfs_store_key_check(key) < 0 || strlen(key) > STR_MAX)
        return -EINVAL;
    struct bfs_buf *b = &w->block;
    int rc = bfs_buf_put_long(b, E_RETIRE);
    if (rc == 0)
        rc = put_str(b, key);
    if (rc == 0)
        rc = end_entry(w);
    if (rc == 0)
        w->retire_left--;
    return rc;
}

int bfs_checkpoint_add_compact(struct bfs_manifest_writer *w, const struct bfs_manifest_compact *c,
                               int64_t seq, int64_t epoch, int64_t committed_at)
{
    if (!w->ckpt || w->nodes || !compact_valid(c) || c->retired != 0 || seq < 1 ||
        seq <= w->last_seq || epoch < 0 || committed_at < 0)
        return -EINVAL;
    int rc = put_compact(w, c);
    return rc ? rc : put_commit(w, seq, epoch, committed_at);
}

int bfs_checkpoint_add_erase(struct bfs_manifest_writer *w, const struct bfs_manifest_erase *e,
                             int64_t seq, int64_t epoch, int64_t committed_at)
{
    if (!w->ckpt || w->nodes || !erase_valid(e) || seq < 1 || seq <= w->last_seq || epoch < 0 ||
        committed_at < 0)
        return -EINVAL;
    struct bfs_buf *b = &w->block;
    int rc = bfs_buf_put_long(b, E_ERASE);
    if (rc == 0)
        rc = put_str(b, e->node);
    if (rc == 0)
        rc = put_str(b, e->dataset);
    if (rc == 0)
        rc = put_opt_str(b, e->table);
    if (rc == 0)
        rc = put_opt_str(b, e->period);
    if (rc == 0)
        rc = bfs_buf_put_long(b, e->erased_at);
    if (rc == 0)
        rc = end_entry(w);
    w->have_archive = false;
    w->in_roll = false; /* no archive follows an erasure */
    w->retire_left = 0;
    return rc ? rc : put_commit(w, seq, epoch, committed_at);
}

int bfs_checkpoint_create(const char *path, struct bfs_manifest_writer **out)
{
    int rc = writer_open(path, out);
    if (rc == 0)
        (*out)->ckpt = true;
    return rc;
}

int bfs_checkpoint_add_roll(struct bfs_manifest_writer *w, const struct bfs_manifest_roll *r,
                            int64_t seq, int64_t epoch, int64_t committed_at)
{
    if (!w->ckpt || w->nodes || !roll_valid(r) || seq < 1 || seq <= w->last_seq || epoch < 0 ||
        committed_at < 0)
        return -EINVAL;
    int rc = put_roll(w, r);
    return rc ? rc : put_commit(w, seq, epoch, committed_at);
}

int bfs_checkpoint_add_node(struct bfs_manifest_writer *w, const char *node, int64_t epoch)
{
    if (!w->ckpt || !bfs_node_valid(node) || epoch < 0 ||
        (w->nodes && strcmp(node, w->last_node) <= 0))
        return -EINVAL;
    struct bfs_buf *b = &w->block;
    int rc = bfs_buf_put_long(b, E_NODE);
    if (rc == 0)
        rc = put_str(b, node);
    if (rc == 0)
        rc = bfs_buf_put_long(b, epoch);
    if (rc == 0)
        rc = end_entry(w);
    if (rc < 0)
        return rc;
    w->nodes = true;
    w->in_roll = false;
    w->have_archive = false;
    snprintf(w->last_node, sizeof w->last_node, "%s", node);
    return 0;
}

static bool fits_i64(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX;
}

int bfs_manifest_add_archive(struct bfs_manifest_writer *w, const struct bfs_manifest_archive *a)
{
    const char *codec = bfs_codec_name(a->codec);
    bool codec_ok =
        a->codec == BFS_CODEC_NULL || a->codec == BFS_CODEC_DEFLATE || a->codec == BFS_CODEC_SNAPPY;
    if (!w->in_roll || w->retire_left > 0 || bfs_store_key_check(a->key) < 0 ||
        strlen(a->key) > STR_MAX || !codec_ok || !bfs_name_valid(a->table, strlen(a->table)) ||
        !bfs_name_valid(a->period, strlen(a->period)) || !fits_i64(a->size) ||
        a->header_length > a->size || !fingerprint_valid(a->schema_fingerprint) ||
        a->n_versions > BFS_MANIFEST_VERSIONS_MAX)
        return -EINVAL;
    for (size_t i = 0; i < a->n_versions; i++)
        if (!fingerprint_valid(a->versions[i]))
            return -EINVAL;
    struct bfs_buf *b = &w->block;
    int rc = bfs_buf_put_long(b, E_ARCHIVE);
    if (rc == 0)
        rc = put_str(b, a->key);
    if (rc == 0)
        rc = put_str(b, a->table);
    if (rc == 0)
        rc = put_str(b, a->period);
    if (rc == 0)
        rc = bfs_buf_put_long(b, (int64_t)a->size);
    if (rc == 0)
        rc = bfs_buf_put_long(b, (int64_t)a->header_length);
    if (rc == 0)
        rc = bfs_buf_append(b, a->sha256, 32);
    if (rc == 0)
        rc = put_str(b, a->schema_fingerprint);
    if (rc == 0)
        rc = put_str(b, codec);
    /* versions: one array block, then its end */
    if (rc == 0 && a->n_versions > 0)
        rc = bfs_buf_put_long(b, (int64_t)a->n_versions);
    for (size_t i = 0; rc == 0 && i < a->n_versions; i++)
        rc = put_str(b, a->versions[i]);
    if (rc == 0)
        rc = bfs_buf_put_long(b, 0);
    if (rc < 0)
        return rc;
    w->have_archive = true;
    w->arch_size = a->size;
    w->arch_header = a->header_length;
    return end_entry(w);
}

int bfs_manifest_add_index(struct bfs_manifest_writer *w, const struct bfs_manifest_index *x)
{
    if (!w->have_archive || !bfs_name_valid(x->dataset, strlen(x->dataset)) ||
        x->start < w->arch_header || x->length > w->arch_size - x->start || !fits_i64(x->records) ||
        x->uploaded_at < 0)
        return -EINVAL;
    struct bfs_buf *b = &w->block;
    int rc = bfs_buf_put_long(b, E_INDEX);
    if (rc == 0)
        rc = put_str(b, x->dataset);
    if (rc == 0)
        rc = bfs_buf_put_long(b, (int64_t)x->start);
    if (rc == 0)
        rc = bfs_buf_put_long(b, (int64_t)x->length);
    if (rc == 0)
        rc = bfs_buf_put_long(b, (int64_t)x->records);
    if (rc == 0)
        rc = bfs_buf_put_long(b, x->uploaded_at);
    return rc < 0 ? rc : end_entry(w);
}

int bfs_manifest_finish(struct bfs_manifest_writer *w, uint8_t sha256[32], uint64_t *size)
{
    /* an empty checkpoint: nothing to read; a compaction short of Retire entries */
    int rc = w->total == 0 || w->retire_left > 0 ? -EINVAL : flush_block(w);
    if (rc == 0 && close(w->fd) < 0)
        rc = -errno;
    w->fd = -1;
    if (rc == 0)
        rc = bfs_sha256_final(&w->sha, sha256);
    if (rc < 0) {
        bfs_manifest_abort(w);
        return rc;
    }
    *size = w->size;
    free(w->path);
    w->path = NULL; /* finished: keep the file */
    bfs_manifest_abort(w);
    return 0;
}

/* ---- reading ---------------------------------------------------------------- */

struct reader {
    int fd;
    struct bfs_buf buf; /* unread bytes are [pos, len) */
    size_t pos;
    uint64_t off; /* file offset of buf.data[0] */
    bool eof;
    struct bfs_err *err;
};

static int rerr(struct reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int rerr(struct reader *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bfs_err_vset(r->err, -EINVAL, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* At least n unread bytes, unless the file ends first. 0 or -errno. */
static int fill(struct reader *r, size_t n)
{
    if (r->buf.len - r->pos >= n || r->eof)
        return 0;
    if (r->pos > 0) { /* keep only the unread bytes */
        memmove(r->buf.data, r->buf.data + r->pos, r->buf.len - r->pos);
        r->off += r->pos;
        r->buf.len -= r->pos;
        r->pos = 0;
    }
    while (r->buf.len < n && !r->eof) {
        size_t want = n - r->buf.len < 65536 ? 65536 : n - r->buf.len;
        if (bfs_buf_reserve(&r->buf, want) < 0)
            return -ENOMEM;
        ssize_t k = read(r->fd, r->buf.data + r->buf.len, want);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            r->eof = true;
        r->buf.len += (size_t)k;
    }
    return 0;
}

/* A varint long from the stream. */
static int get_long(struct reader *r, int64_t *v, const char *what)
{
    int rc = fill(r, BFS_VARINT_MAX);
    if (rc < 0)
        return rc;
    rc = bfs_varint_get_long(r->buf.data, r->buf.len, &r->pos, v);
    if (rc == BFS_VARINT_TRUNCATED)
        return rerr(r, "byte %" PRIu64 ": the file ends inside %s", r->off + r->pos, what);
    if (rc != BFS_VARINT_OK)
        return rerr(r, "byte %" PRIu64 ": %s is not a valid long", r->off + r->pos, what);
    return 0;
}

/* Decoding the entries of one decompressed block. */
struct dec {
    const uint8_t *p;
    size_t len, pos;
    struct reader *r;
    uint64_t block;
    int64_t entry;
};

static int derr(struct dec *d, const char *what)
{
    return rerr(d->r, "block %" PRIu64 ", entry %" PRId64 ": %s", d->block, d->entry, what);
}

static int dlong(struct dec *d, int64_t *v, const char *what)
{
    if (bfs_varint_get_long(d->p, d->len, &d->pos, v) != BFS_VARINT_OK)
        return derr(d, what);
    return 0;
}

static int dulong(struct dec *d, uint64_t *v, const char *what)
{
    int64_t x;
    if (dlong(d, &x, what) < 0 || x < 0)
        return derr(d, what);
    *v = (uint64_t)x;
    return 0;
}

/* A string into out[STR_MAX + 1]. */
static int dstr(struct dec *d, char *out, const char *what)
{
    int64_t n;
    if (dlong(d, &n, what) < 0 || n < 0 || n > STR_MAX || (uint64_t)n > d->len - d->pos)
        return derr(d, what);
    memcpy(out, d->p + d->pos, (size_t)n);
    out[n] = '\0';
    d->pos += (size_t)n;
    if (memchr(out, '\0', (size_t)n))
        return derr(d, what);
    return 0;
}

/* An Archive's versions (an array of fingerprints) into s->versions. */
struct rstate;
static int dversions(struct dec *d, struct rstate *s, struct bfs_manifest_archive *x);

/* What a read has seen, and whom it tells. */
struct rstate {
    bool ckpt;   /* reading a checkpoint */
    int version; /* 1: Archive entries have no versions; 1, 2: no Roll.base, no
                  * Compact, Retire or Erase entries */
    char versions[BFS_MANIFEST_VERSIONS_MAX][17]; /* the current Archive's */
    int (*on_archive)(void *ctx, const struct bfs_manifest_archive *a);
    int (*on_index)(void *ctx, const struct bfs_manifest_index *x);
    const struct bfs_manifest_visitor *mv;   /* a manifest's visitor */
    const struct bfs_checkpoint_visitor *cv; /* a checkpoint's */
    void *ctx;
    bool have_roll, have_archive;
    uint64_t arch_size, arch_header;
    /* a checkpoint: its Roll entry waiting for its Commit entry, the last
     * seq, the Node entries */
    bool want_commit, nodes;
    int pending; /* the kind of entry waiting for its Commit entry */
    struct bfs_manifest_roll roll;
    char roll_node[NODE_MAX + 1], roll_id[ROLL_ID_MAX + 1];
    struct bfs_manifest_compact compact;
    struct bfs_manifest_erase erase;
    char c_table[STR_MAX + 1], c_period[STR_MAX + 1], e_dataset[STR_MAX + 1];
    int64_t retire_left; /* a compaction's Retire entries still to come */
    bool any;            /* an entry was read */
    int64_t last_seq;
    char last_node[NODE_MAX + 1];
};

static int dversions(struct dec *d, struct rstate *s, struct bfs_manifest_archive *x)
{
    char v[STR_MAX + 1];
    size_t n = 0;
    for (;;) {
        int64_t count;
        if (dlong(d, &count, "versions") < 0)
            return -EINVAL;
        if (count == 0)
            break;
        if (count < 0) { /* a block with its byte size */
            int64_t bytes;
            if (dlong(d, &bytes, "versions") < 0)
                return -EINVAL;
            count = -count;
        }
        if ((uint64_t)count > BFS_MANIFEST_VERSIONS_MAX - n)
            return derr(d, "an Archive entry with too many versions");
        for (int64_t i = 0; i < count; i++) {
            if (dstr(d, v, "versions") < 0)
                return -EINVAL;
            if (!fingerprint_valid(v))
                return derr(d, "an Archive entry with a bad version");
            memcpy(s->versions[n++], v, 17);
        }
    }
    x->versions = (const char(*)[17])s->versions;
    x->n_versions = n;
    return 0;
}

/* src (checked to fit) into dst of cap bytes. */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* An optional string (["null", "string"]) into out: *set 0 for null. */
static int dopt_str(struct dec *d, char *out, bool *set, const char *what)
{
    int64_t branch;
    if (dlong(d, &branch, what) < 0 || (branch != 0 && branch != 1))
        return derr(d, what);
    *set = branch == 1;
    return *set ? dstr(d, out, what) : 0;
}

/* The entries of version 3: Compact (first in a compaction's manifest; with
 * its Commit in a checkpoint), Retire (right after its Compact, in a
 * manifest), Erase (checkpoints only, with its Commit). */
static int decode_v3(struct dec *d, struct rstate *s, int64_t kind)
{
    char a[STR_MAX + 1], b[STR_MAX + 1];
    if (kind == E_RETIRE) {
        if (dstr(d, a, "key") < 0)
            return -EINVAL;
        if (s->retire_left <= 0)
            return derr(d, "a Retire entry that does not follow its Compact entry");
        if (bfs_store_key_check(a) < 0)
            return derr(d, "a Retire entry with a bad key");
        s->retire_left--;
        return s->mv && s->mv->retire ? s->mv->retire(s->ctx, a) : 0;
    }
    if (s->nodes)
        return derr(d, "a Compact or Erase entry after a Node entry");
    if (kind == E_COMPACT) {
        struct bfs_manifest_compact c = {
            .node = a, .compact_id = b, .table = s->c_table, .period = s->c_period};
        if (dstr(d, a, "node") < 0 || dstr(d, b, "compact_id") < 0 ||
            dstr(d, s->c_table, "table") < 0 || dstr(d, s->c_period, "period") < 0 ||
            dlong(d, &c.upto, "upto") < 0 || dlong(d, &c.bytes, "bytes") < 0 ||
            dlong(d, &c.retired, "retired") < 0)
            return -EINVAL;
        if (!s->ckpt && (s->have_roll || d->entry != 0 || d->block != 1))
            return derr(d, "a Compact entry that is not the first entry");
        if (!compact_valid(&c) || (s->ckpt && c.retired != 0))
            return derr(d, "a Compact entry with a bad field");
        s->have_roll = true;
        s->have_archive = false;
        if (!s->ckpt) {
            s->retire_left = c.retired;
            return s->mv->compact ? s->mv->compact(s->ctx, &c) : 0;
        }
        copy_str(s->roll_node, sizeof s->roll_node, a);
        copy_str(s->roll_id, sizeof s->roll_id, b);
        s->compact = c;
        s->compact.node = s->roll_node;
        s->compact.compact_id = s->roll_id;
        s->want_commit = true;
        s->pending = E_COMPACT;
        return 0;
    }
    /* E_ERASE */
    char t[STR_MAX + 1], p[STR_MAX + 1];
    bool has_t, has_p;
    struct bfs_manifest_erase e = {.node = a, .dataset = b};
    if (dstr(d, a, "node") < 0 || dstr(d, b, "dataset") < 0 ||
        dopt_str(d, t, &has_t, "table") < 0 || dopt_str(d, p, &has_p, "period") < 0 ||
        dlong(d, &e.erased_at, "erased_at") < 0)
        return -EINVAL;
    if (!s->ckpt)
        return derr(d, "an Erase entry in a manifest");
    e.table = has_t ? t : NULL;
    e.period = has_p ? p : NULL;
    if (!erase_valid(&e))
        return derr(d, "an Erase entry with a bad field");
    copy_str(s->roll_node, sizeof s->roll_node, a);
    copy_str(s->e_dataset, sizeof s->e_dataset, b);
    copy_str(s->c_table, sizeof s->c_table, has_t ? t : "");
    copy_str(s->c_period, sizeof s->c_period, has_p ? p : "");
    s->erase = e;
    s->erase.node = s->roll_node;
    s->erase.dataset = s->e_dataset;
    s->erase.table = has_t ? s->c_table : NULL;
    s->erase.period = has_p ? s->c_period : NULL;
    s->have_roll = false; /* no archive follows an erasure */
    s->have_archive = false;
    s->want_commit = true;
    s->pending = E_ERASE;
    return 0;
}

static int decode_entry(struct dec *d, struct rstate *s)
{
    char a[STR_MAX + 1], b[STR_MAX + 1], c[STR_MAX + 1], e[STR_MAX + 1];
    int64_t kind;
    if (dlong(d, &kind, "entry kind") < 0)
        return -EINVAL;
    s->any = true;
    if (s->want_commit && kind != E_COMMIT)
        return derr(d, "a Roll, Compact or Erase entry not followed by its Commit entry");
    if (kind >= E_COMPACT && s->version < 3)
        return derr(d, "an unknown entry kind");
    if (s->retire_left > 0 && kind != E_RETIRE)
        return derr(d, "fewer Retire entries than the Compact entry says");
    if (kind == E_COMPACT || kind == E_RETIRE || kind == E_ERASE)
        return decode_v3(d, s, kind);
    if (kind == E_ROLL) {
        struct bfs_manifest_roll r = {.node = a, .roll_id = b, .base = INT64_MAX};
        if (dstr(d, a, "node") < 0 || dstr(d, b, "roll_id") < 0 || dlong(d, &r.rows, "rows") < 0 ||
            dlong(d, &r.bytes, "bytes") < 0 || dlong(d, &r.claimed_at, "claimed_at") < 0 ||
            (s->version >= 3 && dlong(d, &r.base, "base") < 0))
            return -EINVAL;
        if (!s->ckpt && (s->have_roll || d->entry != 0 || d->block != 1))
            return derr(d, "a Roll entry that is not the first entry");
        if (s->nodes)
            return derr(d, "a Roll entry after a Node entry");
        if (!roll_valid(&r))
            return derr(d, "a Roll entry with a bad field");
        s->have_roll = true;
        s->have_archive = false;
        if (!s->ckpt)
            return s->mv->roll ? s->mv->roll(s->ctx, &r) : 0;
        /* A checkpoint's roll is told with its Commit entry. */
        snprintf(s->roll_node, sizeof s->roll_node, "%s", a);
        snprintf(s->roll_id, sizeof s->roll_id, "%s", b);
        s->roll = r;
        s->roll.node = s->roll_node;
        s->roll.roll_id = s->roll_id;
        s->want_commit = true;
        s->pending = E_ROLL;
        return 0;
    }
    if (kind == E_COMMIT) {
        int64_t seq, epoch, at;
        if (dlong(d, &seq, "seq") < 0 || dlong(d, &epoch, "epoch") < 0 ||
            dlong(d, &at, "committed_at") < 0)
            return -EINVAL;
        if (!s->ckpt)
            return derr(d, "a Commit entry in a manifest");
        if (!s->want_commit)
            return derr(d, "a Commit entry that does not follow a Roll entry");
        if (seq < 1 || epoch < 0 || at < 0)
            return derr(d, "a Commit entry with a bad field");
        if (seq <= s->last_seq)
            return derr(d, "a Commit entry whose seq is not above the one before");
        s->want_commit = false;
        s->last_seq = seq;
        if (s->pending == E_COMPACT)
            return s->cv->compact ? s->cv->compact(s->ctx, &s->compact, seq, epoch, at) : 0;
        if (s->pending == E_ERASE)
            return s->cv->erase ? s->cv->erase(s->ctx, &s->erase, seq, epoch, at) : 0;
        return s->cv->roll ? s->cv->roll(s->ctx, &s->roll, seq, epoch, at) : 0;
    }
    if (kind == E_NODE) {
        int64_t epoch;
        if (dstr(d, a, "node") < 0 || dlong(d, &epoch, "epoch") < 0)
            return -EINVAL;
        if (!s->ckpt)
            return derr(d, "a Node entry in a manifest");
        if (!bfs_node_valid(a) || epoch < 0)
            return derr(d, "a Node entry with a bad field");
        if (s->nodes && strcmp(a, s->last_node) <= 0)
            return derr(d, "Node entries not in increasing order of names");
        s->nodes = true;
        s->have_archive = false;
        snprintf(s->last_node, sizeof s->last_node, "%s", a);
        return s->cv->node ? s->cv->node(s->ctx, a, epoch) : 0;
    }
    if (kind != E_ARCHIVE && kind != E_INDEX)
        return derr(d, "an unknown entry kind");
    if (!s->have_roll)
        return derr(d, s->ckpt ? "an Archive or Index entry before any Roll or Compact entry"
                               : "the first entry is not a Roll or Compact entry");
    if (s->nodes)
        return derr(d, "an Archive or Index entry after a Node entry");
    if (kind == E_ARCHIVE) {
        struct bfs_manifest_archive x = {
            .key = a, .table = b, .period = c, .schema_fingerprint = e};
        char codec[STR_MAX + 1];
        if (dstr(d, a, "key") < 0 || dstr(d, b, "table") < 0 || dstr(d, c, "period") < 0 ||
            dulong(d, &x.size, "size") < 0 || dulong(d, &x.header_length, "header_length") < 0)
            return -EINVAL;
        if (d->len - d->pos < 32)
            return derr(d, "sha256");
        memcpy(x.sha256, d->p + d->pos, 32);
        d->pos += 32;
        if (dstr(d, e, "schema_fingerprint") < 0 || dstr(d, codec, "codec") < 0)
            return -EINVAL;
        if (s->version >= 2 && dversions(d, s, &x) < 0)
            return -EINVAL;
        if (bfs_store_key_check(a) < 0 || !bfs_name_valid(b, strlen(b)) ||
            !bfs_name_valid(c, strlen(c)) || x.header_length > x.size || !fingerprint_valid(e) ||
            bfs_codec_parse(codec, strlen(codec), &x.codec) < 0)
            return derr(d, "an Archive entry with a bad field");
        s->have_archive = true;
        s->arch_size = x.size;
        s->arch_header = x.header_length;
        return s->on_archive ? s->on_archive(s->ctx, &x) : 0;
    }
    struct bfs_manifest_index x = {.dataset = a};
    if (dstr(d, a, "dataset") < 0 || dulong(d, &x.start, "start") < 0 ||
        dulong(d, &x.length, "length") < 0 || dulong(d, &x.records, "records") < 0 ||
        dlong(d, &x.uploaded_at, "uploaded_at") < 0)
        return -EINVAL;
    if (!s->have_archive)
        return derr(d, s->ckpt ? "an Index entry before any Archive entry of its roll"
                               : "an Index entry before any Archive entry");
    if (!bfs_name_valid(a, strlen(a)) || x.start < s->arch_header ||
        x.length > s->arch_size - x.start || x.uploaded_at < 0)
        return derr(d, "an Index entry with a bad field or outside its archive");
    return s->on_index ? s->on_index(s->ctx, &x) : 0;
}

/* Inflate block src (n bytes, raw deflate) into out: 0, -EINVAL (corrupt),
 * -EFBIG (more than BLOCK_MAX), -ENOMEM. libdeflate inflates a whole block
 * at once (about twice zlib's speed): out grows until the block fits. */
static int inflate_all(struct libdeflate_decompressor *dec, const uint8_t *src, size_t n,
                       struct bfs_buf *out)
{
    bfs_buf_reset(out);
    size_t cap = out->cap > 0 ? out->cap : (n < BLOCK_MAX / 8 ? 8 * n : BLOCK_MAX);
    if (cap < 65536)
        cap = 65536;
    for (;;) {
        if (cap > BLOCK_MAX)
            cap = BLOCK_MAX;
        if (bfs_buf_reserve_exact(out, cap) < 0)
            return -ENOMEM;
        size_t got = 0;
        enum libdeflate_result r =
            libdeflate_deflate_decompress(dec, src, n, out->data, out->cap, &got);
        if (r == LIBDEFLATE_SUCCESS) {
            out->len = got;
            return 0;
        }
        if (r != LIBDEFLATE_INSUFFICIENT_SPACE)
            return -EINVAL;
        if (out->cap >= BLOCK_MAX)
            return -EFBIG;
        cap = 2 * out->cap;
    }
}

static int read_entries(int fd, struct rstate *s, struct bfs_err *err)
{
    struct reader r = {.fd = fd, .err = err};
    bfs_err_clear(err);
    struct bfs_buf want = {0}, plain = {0};
    uint8_t sync[16];
    struct libdeflate_decompressor *dec = libdeflate_alloc_decompressor();
    if (!dec)
        return -ENOMEM;
    int rc = manifest_header(bfs_manifest_schema, &want, sync);
    if (rc < 0)
        goto out;
    /* The header is exactly the layout's: magic, schema, codec, sync (of
     * this version, or of version 1). */
    if ((rc = fill(&r, want.len)) < 0)
        goto out;
    s->version = 3;
    static const char *const older[] = {bfs_manifest_schema_v2, bfs_manifest_schema_v1};
    for (int i = 0; i < 2 && (r.buf.len < want.len || memcmp(r.buf.data, want.data, want.len));
         i++) {
        bfs_buf_free(&want);
        if ((rc = manifest_header(older[i], &want, sync)) < 0 || (rc = fill(&r, want.len)) < 0)
            goto out;
        s->version = 2 - i;
    }
    if (r.buf.len < want.len || memcmp(r.buf.data, want.data, want.len) != 0) {
        rc = rerr(&r, "not a battlefs %s (version 1 to %s): its header differs",
                  s->ckpt ? "checkpoint" : "manifest", BFS_MANIFEST_VERSION);
        goto out;
    }
    r.pos = want.len;
    for (uint64_t block = 1;; block++) {
        if ((rc = fill(&r, 1)) < 0)
            goto out;
        if (r.pos == r.buf.len)
            break; /* the end of the file, between blocks */
        int64_t count, size;
        if ((rc = get_long(&r, &count, "a block's entry count")) < 0 ||
            (rc = get_long(&r, &size, "a block's size")) < 0)
            goto out;
        if (count < 1 || count > ENTRIES_PER_BLOCK || size < 1 || size > BLOCK_MAX) {
            rc = rerr(&r, "block %" PRIu64 ": bad count %" PRId64 " or size %" PRId64, block, count,
                      size);
            goto out;
        }
        if ((rc = fill(&r, (size_t)size + 16)) < 0)
            goto out;
        if (r.buf.len - r.pos < (size_t)size + 16) {
            rc = rerr(&r, "block %" PRIu64 ": the file ends inside it", block);
            goto out;
        }
        const uint8_t *data = r.buf.data + r.pos;
        if (memcmp(data + size, sync, 16) != 0) {
            rc = rerr(&r, "block %" PRIu64 ": sync marker does not match the header", block);
            goto out;
        }
        rc = inflate_all(dec, data, (size_t)size, &plain);
        r.pos += (size_t)size + 16;
        if (rc < 0) {
            if (rc == -EINVAL || rc == -EFBIG)
                rc = rerr(&r, "block %" PRIu64 ": deflate data is corrupt or too large", block);
            goto out;
        }
        struct dec d = {.p = plain.data, .len = plain.len, .r = &r, .block = block};
        for (d.entry = 0; d.entry < count; d.entry++)
            if ((rc = decode_entry(&d, s)) != 0)
                goto out;
        if (d.pos != d.len) {
            rc =
                rerr(&r, "block %" PRIu64 ": %zu bytes after its last entry", block, d.len - d.pos);
            goto out;
        }
    }
    if (s->want_commit)
        rc =
            rerr(&r, "the file ends after a Roll, Compact or Erase entry without its Commit entry");
    else if (s->retire_left > 0)
        rc = rerr(&r, "the file ends before the Compact entry's Retire entries");
    else if (!s->any)
        rc = rerr(&r, "no entries");
out:
    if (rc < 0 && err && err->code == 0)
        bfs_err_set(err, rc, NULL); /* an I/O error or out of memory: the errno says it all */
    bfs_buf_free(&want);
    bfs_buf_free(&plain);
    bfs_buf_free(&r.buf);
    libdeflate_free_decompressor(dec);
    return rc;
}

int bfs_manifest_read(int fd, const struct bfs_manifest_visitor *v, struct bfs_err *err)
{
    struct rstate s = {.mv = v, .on_archive = v->archive, .on_index = v->index, .ctx = v->ctx};
    return read_entries(fd, &s, err);
}

int bfs_checkpoint_read(int fd, const struct bfs_checkpoint_visitor *v, struct bfs_err *err)
{
    struct rstate s = {
        .ckpt = true, .cv = v, .on_archive = v->archive, .on_index = v->index, .ctx = v->ctx};
    return read_entries(fd, &s, err);
}
