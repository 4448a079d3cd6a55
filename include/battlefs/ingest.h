/* ingest.h - validate, normalise and durably commit one spooled upload. */
#ifndef BATTLEFS_INGEST_H
#define BATTLEFS_INGEST_H

#include <stddef.h>

struct bfs_ctx;

/* Identity from the path; NULL fields come from the OCF metadata
 * (battlefs.table, battlefs.period, battlefs.dataset) or, for the period, today
 * (UTC). */
struct bfs_identity {
    const char *table;
    const char *period;
    const char *dataset;
};

/* Ingest the spooled file at fd (its whole content). what names it in
 * messages ("incoming/battle/2025-12-18/u1.avro"). On failure the reason is
 * logged, added to .battlefs/errors and counted; nothing is stored.
 * Returns 0, -EINVAL (bad OCF or name), -EFBIG, -ENOSPC or -EIO. */
int bfs_ingest(struct bfs_ctx *ctx, int fd, const struct bfs_identity *id, const char *what);

/* Record a rejection that happened before ingest (bad name, EFBIG at write):
 * log, .battlefs/errors and uploads_rejected. */
void bfs_ingest_reject(struct bfs_ctx *ctx, const char *what, const char *reason);

#endif
