/* ingest.h - validate, normalise and durably commit one upload. */
#ifndef BATTLEFS_INGEST_H
#define BATTLEFS_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "battlefs/ocf.h"

struct bfs_catalog;
struct bfs_conv_cache;
struct bfs_errors;
struct bfs_ocf_schema_cache;
struct bfs_packer;
struct bfs_stats;

/* What an ingest uses; filled once by main.c (or a test). The modules are
 * borrowed. */
struct bfs_ingest_deps {
    struct bfs_catalog *cat;
    struct bfs_ocf_schema_cache *schemas; /* compiled upload schemas (NULL: none cached) */
    struct bfs_stats *stats;              /* uploads_ingested, uploads_rejected */
    struct bfs_errors *errors;            /* a line per rejection */
    uint64_t max_upload;                  /* larger uploads fail with EFBIG */
    enum bfs_codec codec;                 /* the codec of a new partition (-o codec) */
    int deflate_level;                    /* 1..9: blocks compressed to deflate at ingest */
    /* Compiled conversions of uploads of another version than their
     * partition's merged schema (evolve.h; NULL: each compiled when needed). */
    struct bfs_conv_cache *convs;
    /* Compression off the close path (packer.h): when set, an upload to a
     * deflate partition that is not deflate already is stored framed as
     * stored deflate blocks and packed later. NULL: compressed at close. */
    struct bfs_packer *packer;
};

/* Identity from the path; NULL fields come from the OCF metadata
 * (battlefs.table, battlefs.period, battlefs.dataset) or, for the period, today
 * (UTC). */
struct bfs_identity {
    const char *table;
    const char *period;
    const char *dataset;
};

/* Ingest one upload, its len bytes at buf (spool.h's view). what names it in
 * messages ("incoming/battle/2025-12-18/u1.avro"). On failure the reason is
 * logged, added to .battlefs/errors and counted; nothing is stored.
 * Returns 0, -EINVAL (bad OCF or name), -EFBIG, -ENOSPC or -EIO. */
int bfs_ingest(const struct bfs_ingest_deps *deps, const uint8_t *buf, size_t len,
               const struct bfs_identity *id, const char *what);

/* Record a rejection that happened before ingest (bad name, EFBIG at write):
 * log, .battlefs/errors and uploads_rejected. */
void bfs_ingest_reject(const struct bfs_ingest_deps *deps, const char *what, const char *reason);

#endif
