/* ingest.c - validate, normalise and commit one upload.
 *
 * The upload's bytes (spool.h lends them: in memory, or read from its spool
 * file) have their header parsed, their identity resolved (path first, then
 * the battlefs.* metadata, then today's date for a missing period), every
 * block validated and normalised to the partition's layout in one pass, and
 * the result committed through the catalog's group commit. Nothing is stored
 * unless everything succeeded.
 */
#include "battlefs/ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "battlefs/catalog.h"
#include "battlefs/err.h"
#include "battlefs/errors.h"
#include "battlefs/evolve.h"
#include "battlefs/layout.h"
#include "battlefs/log.h"
#include "battlefs/names.h"
#include "battlefs/ocf.h"
#include "battlefs/packer.h"
#include "battlefs/schema.h"
#include "battlefs/stats.h"

void bfs_ingest_reject(const struct bfs_ingest_deps *deps, const char *what, const char *reason)
{
    bfs_warn("rejected %s: %s", what, reason);
    bfs_stats_add(deps->stats, uploads_rejected, 1);
    if (bfs_errors_add(deps->errors, what, reason) < 0)
        bfs_error("out of memory recording a rejection of %s", what);
}

/* Resolve one identity field: the path's value, else the metadata key. */
static int resolve_field(const struct bfs_ocf_header *h, const char *from_path, const char *key,
                         char out[BFS_NAME_MAX + 1], struct bfs_err *err)
{
    const char *v = from_path;
    size_t n = v ? strlen(v) : 0;
    if (!v) {
        const struct bfs_ocf_meta *m = bfs_ocf_meta_get(h, key);
        if (!m)
            return bfs_err_set(err, -EINVAL,
                               "no %s: name the file <table>/<period>/<dataset>.avro or set "
                               "the header metadata key %s",
                               key + strlen("battlefs."), key);
        v = (const char *)m->val;
        n = m->val_len;
    }
    if (strcmp(key, "battlefs.table") == 0 && bfs_table_reserved(v, n))
        return bfs_err_set(err, -EINVAL, "table name '%.*s' is reserved for battlefs", (int)n, v);
    if (!bfs_name_valid(v, n))
        return bfs_err_set(err, -EINVAL,
                           "bad %s name '%.*s' (allowed: [A-Za-z0-9_.-]{1,128}, not "
                           "starting with '.')",
                           key + strlen("battlefs."), (int)(n > 160 ? 160 : n), v);
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

static int errno_of_commit(int rc)
{
    return rc == -EINVAL || rc == -ENOSPC ? rc : -EIO;
}

/* The upload's schema is not the merged schema of existing partition
 * (table, period): 0 if it is one of its versions, 1 with *lay (the layout
 * it makes) if it is new and merges, -EINVAL (err: why it does not merge),
 * -ENOENT (no partition after all), -errno. */
static int version_layout(const struct bfs_ingest_deps *deps, const char *table, const char *period,
                          const struct bfs_ocf_header *h, enum bfs_codec codec,
                          struct bfs_layout *lay, struct bfs_err *err)
{
    char fp[17];
    snprintf(fp, sizeof fp, "%016" PRIx64, bfs_ocf_schema_fingerprint(h->compiled));
    int rc = bfs_catalog_partition_has_version(deps->cat, table, period, fp);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    struct bfs_versions vers;
    rc = bfs_catalog_partition_versions(deps->cat, table, period, &vers);
    if (rc < 0)
        return rc;
    rc = bfs_layout_merge(&vers, h->schema_json, h->schema_len, codec, lay, err);
    bfs_versions_free(&vers);
    if (rc == -EINVAL)
        bfs_err_prefix(err, "schema %s does not merge with the versions stored for %s/%s", fp,
                       table, period);
    return rc < 0 ? rc : 1;
}

/* The partition's current merged schema, the one the upload is stored in:
 * p filled (the caller frees it; *t borrows its texts). 0, -ENOENT, -errno. */
static int merged_target(const struct bfs_ingest_deps *deps, const char *table, const char *period,
                         struct bfs_partition *p, struct bfs_merged *t)
{
    int rc = bfs_catalog_partition_get(deps->cat, table, period, p);
    if (rc < 0)
        return rc;
    *t = (struct bfs_merged){.json = p->schema_json,
                             .len = p->schema_len,
                             .canonical = p->canonical,
                             .canonical_len = p->canonical_len,
                             .fingerprint = bfs_schema_rabin(p->canonical, p->canonical_len)};
    memcpy(t->sync, p->sync, 16);
    return 0;
}

/* Buffers of an upload's conversion. */
struct conv_bufs {
    struct bfs_buf raw, image, scratch;
};

/* Validate the upload (h) and store it in the target schema: its blocks
 * decompressed, each converted (evolve.h), written after the target's
 * null-codec layout header, and that file normalised to the partition's
 * codec as any upload is (validated again, in the target schema). */
static int convert_upload(const struct bfs_ingest_deps *deps, const uint8_t *buf, size_t len,
                          const struct bfs_ocf_header *h, const struct bfs_merged *t,
                          enum bfs_codec codec, struct conv_bufs *b, struct bfs_buf *out,
                          uint64_t *records, struct bfs_err *err)
{
    bfs_buf_reset(&b->raw);
    bfs_buf_reset(&b->image);
    int rc = bfs_ocf_process(buf, len, h, bfs_ocf_schema_sync(h->compiled), BFS_CODEC_NULL, &b->raw,
                             records, 0, deps->max_upload, err);
    if (rc < 0)
        return rc;
    struct bfs_conv *conv;
    rc = bfs_conv_get(deps->convs, h->schema_json, h->schema_len, t->json, t->len, BFS_CODEC_NULL,
                      t->sync, &conv, err);
    if (rc < 0)
        return rc == -ENOMEM ? rc : bfs_err_set(err, -EIO, "conversion: %s", err->msg);
    rc = bfs_ocf_layout_header(t->json, t->len, BFS_CODEC_NULL, t->sync, &b->image);
    size_t off = 0;
    while (rc == 0 && off < b->raw.len) {
        size_t span;
        rc = bfs_ocf_block_span(b->raw.data + off, b->raw.len - off, &span);
        if (rc == 0 && span > b->raw.len - off)
            rc = -EINVAL;
        if (rc == 0)
            rc = bfs_conv_block(conv, b->raw.data + off, span, &b->image, &b->scratch, err);
        off += span;
    }
    bfs_conv_unref(conv);
    if (rc < 0)
        return rc == -ENOMEM ? rc : bfs_err_set(err, -EIO, "conversion: %s", err->msg);
    struct bfs_ocf_header th;
    rc = bfs_ocf_parse_header_cached(b->image.data, b->image.len, deps->schemas, &th, err);
    if (rc < 0)
        return rc == -ENOMEM ? rc : bfs_err_set(err, -EIO, "merged schema: %s", err->msg);
    uint64_t n = 0;
    rc = bfs_ocf_process(b->image.data, b->image.len, &th, t->sync, codec, out, &n,
                         BFS_OCF_DEFLATE_LEVEL(deps->deflate_level) |
                             (deps->packer ? BFS_OCF_DEFLATE_STORED : 0),
                         0, err);
    bfs_ocf_header_free(&th);
    if (rc == 0 && n != *records)
        rc = bfs_err_set(err, -EIO, "conversion: %llu records of %llu", (unsigned long long)n,
                         (unsigned long long)*records);
    else if (rc < 0 && rc != -ENOMEM)
        rc = bfs_err_set(err, -EIO, "converted upload: %s", err->msg);
    return rc;
}

int bfs_ingest(const struct bfs_ingest_deps *deps, const uint8_t *buf, size_t len,
               const struct bfs_identity *id, const char *what)
{
    /* Why the upload is rejected: the text of its log line and .battlefs/errors
     * line, and the errno returned. */
    struct bfs_err err = {0};
    if (len == 0) {
        bfs_ingest_reject(deps, what, "empty file: not an Avro object container file");
        return -EINVAL;
    }
    if ((uint64_t)len > deps->max_upload) {
        bfs_err_set(&err, -EFBIG, "upload larger than max_upload (%llu bytes)",
                    (unsigned long long)deps->max_upload);
        bfs_ingest_reject(deps, what, err.msg);
        return err.code;
    }
    int rc;
    struct bfs_ocf_header h;
    struct bfs_buf out = {0};
    struct bfs_buf hdr = {0}; /* a new partition's layout header */
    const char *canon = NULL;
    size_t canon_len = 0;
    char table[BFS_NAME_MAX + 1], period[BFS_NAME_MAX + 1], dataset[BFS_NAME_MAX + 1];
    int have_header = 0;
    struct bfs_layout lay; /* the layout the upload's schema makes when it is new */
    int have_lay = 0;
    struct bfs_partition part; /* the partition, when its merged schema is the target */
    int have_part = 0;
    struct conv_bufs conv = {0};
    rc = bfs_ocf_parse_header_cached(buf, len, deps->schemas, &h, &err);
    if (rc < 0)
        goto reject;
    have_header = 1;
    rc = resolve_field(&h, id->table, "battlefs.table", table, &err);
    if (rc == 0)
        rc = resolve_field(&h, id->dataset, "battlefs.dataset", dataset, &err);
    if (rc == 0) {
        if (id->period || bfs_ocf_meta_get(&h, "battlefs.period")) {
            rc = resolve_field(&h, id->period, "battlefs.period", period, &err);
        } else {
            bfs_utc_date(period);
        }
    }
    if (rc < 0)
        goto reject;
    /* The normalised blocks are about the upload's size (null codec): one
     * allocation instead of a doubling series. */
    if (bfs_buf_reserve(&out, len) < 0) {
        rc = bfs_err_set(&err, -EIO, "out of memory for the upload");
        goto reject;
    }
    canon = bfs_ocf_schema_canonical(h.compiled, &canon_len);
    const uint8_t *sync = bfs_ocf_schema_sync(h.compiled);

    int slow = 0; /* the cached layout was stale: ask the catalog */
    for (int attempt = 0;; attempt++) {
        uint8_t psync[16];
        enum bfs_codec codec = deps->codec;
        const struct bfs_merged *merged = NULL;
        if (have_lay) {
            bfs_layout_free(&lay);
            have_lay = 0;
        }
        if (have_part) {
            bfs_partition_free(&part);
            have_part = 0;
        }
        /* the schema the upload is stored in, if not its own */
        const struct bfs_merged *stored = NULL;
        struct bfs_merged target;
        rc = bfs_catalog_partition_layout(deps->cat, table, period, psync, &codec);
        if (rc == 0 && (slow || memcmp(psync, sync, sizeof psync) != 0)) {
            /* Not the partition's merged schema: a version of it already, or
             * a new version that must merge with the others. Either way it is
             * stored converted to the merged schema (below). */
            rc = version_layout(deps, table, period, &h, codec, &lay, &err);
            if (rc == 1) {
                have_lay = 1;
                merged = stored = &lay.m;
                rc = 0;
            } else if (rc == 0) {
                rc = merged_target(deps, table, period, &part, &target);
                have_part = rc == 0;
                stored = have_part ? &target : NULL;
            }
            if (rc == -EINVAL)
                goto reject;
        }
        if (rc < 0 && rc != -ENOENT) {
            rc = bfs_err_set(&err, -EIO, "catalog: %s", err.msg[0] ? err.msg : strerror(-rc));
            goto reject;
        }
        int new_partition = rc == -ENOENT;
        uint64_t records = 0;
        bfs_buf_reset(&out);
        /* A decompression bomb stops at max_upload bytes of records (EFBIG). */
        /* Deflate partitions: blocks not deflate already are framed stored
         * and compressed after the commit (packer.h). */
        int deferred =
            deps->packer && codec == BFS_CODEC_DEFLATE && (stored || h.codec != BFS_CODEC_DEFLATE);
        if (stored)
            rc = convert_upload(deps, buf, len, &h, stored, codec, &conv, &out, &records, &err);
        else
            rc = bfs_ocf_process(buf, len, &h, sync, codec, &out, &records,
                                 BFS_OCF_DEFLATE_LEVEL(deps->deflate_level) |
                                     (deferred ? BFS_OCF_DEFLATE_STORED : 0),
                                 deps->max_upload, &err);
        if (rc == -EFBIG) {
            bfs_err_set(&err, rc, "%s (max_upload)", err.msg);
            goto reject;
        }
        if (rc < 0) {
            if (rc != -EINVAL) /* -ENOMEM: nothing said beyond the errno */
                rc = bfs_err_set(&err, -EIO, "%s", strerror(-rc));
            goto reject;
        }
        /* The catalog stores the layout as given: the header only when the
         * partition is new (rare: the layout is cached once it exists). */
        bfs_buf_reset(&hdr);
        if (new_partition &&
            (rc = bfs_ocf_layout_header(h.schema_json, h.schema_len, codec, sync, &hdr)) < 0) {
            rc = bfs_err_set(&err, -EIO, "layout header for %s/%s: %s", table, period,
                             strerror(-rc));
            goto reject;
        }
        struct bfs_upload up = {
            .table = table,
            .period = period,
            .dataset = dataset,
            .schema_json = h.schema_json,
            .schema_len = h.schema_len,
            .canonical = canon,
            .canonical_len = canon_len,
            .fingerprint = bfs_ocf_schema_fingerprint(h.compiled),
            .codec = codec,
            .header = new_partition ? hdr.data : NULL,
            .header_len = new_partition ? hdr.len : 0,
            .merged = merged,
            .stored = stored,
            .data = out.data,
            .len = out.len,
            .records = records,
            .deferred = deferred,
        };
        memcpy(up.sync, sync, sizeof up.sync);
        rc = bfs_catalog_commit_upload(deps->cat, &up, &err);
        if (rc == -EAGAIN && attempt < 3) {
            /* The partition appeared meanwhile with another codec, or its
             * versions changed since they were read. */
            bfs_catalog_layout_forget(deps->cat, table, period);
            slow = 1;
            continue;
        }
        if (rc == 0 && merged)
            bfs_catalog_layout_forget(deps->cat, table, period);
        if (rc == 0 && deferred)
            bfs_packer_kick(deps->packer);
        if (rc < 0) {
            rc = bfs_err_set(&err, errno_of_commit(rc), "%s", err.msg[0] ? err.msg : strerror(-rc));
            goto reject;
        }
        bfs_debug("ingested %s as %s/%s/%s.avro: %llu records, %zu bytes", what, table, period,
                  dataset, (unsigned long long)records, out.len);
        break;
    }
    bfs_stats_add(deps->stats, uploads_ingested, 1);
    goto out;
reject:
    bfs_ingest_reject(deps, what, err.msg);
out:
    bfs_buf_free(&out);
    bfs_buf_free(&hdr);
    if (have_lay)
        bfs_layout_free(&lay);
    if (have_part)
        bfs_partition_free(&part);
    bfs_buf_free(&conv.raw);
    bfs_buf_free(&conv.image);
    bfs_buf_free(&conv.scratch);
    if (have_header)
        bfs_ocf_header_free(&h);
    return rc;
}
