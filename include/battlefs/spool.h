/* spool.h - the bytes of the uploads in incoming/, and the memory they take.
 *
 * An upload being written is held in memory while the mount's bound allows
 * it, and spilled to a file in <state>/spool past it (docs/design.md,
 * "incoming/" and "Ingest"). The bound, -o upload_memory (M bytes), covers:
 *   - the bytes of uploads being written held in memory: at most M/2 in all
 *     and min(1 MiB, M/2) for one upload; an upload that would go past
 *     either is spilled (its bytes so far written to its spool file, the
 *     memory given back) and written on there. A write never waits.
 *   - the working memory of each ingest (bfs_spool_view): its normalised
 *     copy (estimated as the upload's size) and, for a spilled upload, the
 *     copy read back. An ingest waits until its charge fits in the other
 *     half, M/2 for all ingests; one ingest may go past it when no other
 *     holds a charge, so a single large upload still goes through.
 * Ingests wait only for other ingests, which wait for nothing of this
 * module's: no deadlock. M = 0: every upload is spooled to a file and
 * ingests are not bounded (the behaviour before the bound).
 *
 * Locks: the spool's lock (accounting; leaf) and each file's lock (its
 * bytes), held across a write, read or truncate of the file, and from
 * bfs_spool_view to bfs_spool_unview (the ingest runs under it, so a write
 * racing an ingest through a duplicate descriptor waits and cannot move the
 * bytes being read). File lock -> spool lock; never the other way.
 */
#ifndef BATTLEFS_SPOOL_H
#define BATTLEFS_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct bfs_spool;
struct bfs_spool_file;
struct bfs_stats;

/* The spool of a mount: dir is <state>/spool, emptied here (uploads a
 * previous daemon never closed were never acknowledged); mem_max is -o
 * upload_memory; named: spill to <dir>/<n>.upload files, not O_TMPFILE (test
 * builds' -o fault=spool:named, and file systems without O_TMPFILE). stats
 * (may be NULL) gets spool_memory_bytes, spool_memory_peak, uploads_spilled
 * and ingest_memory_waits. 0 or -errno. */
int bfs_spool_open(const char *dir, uint64_t mem_max, bool named, struct bfs_stats *stats,
                   struct bfs_spool **out);
/* Every file must have been freed. */
void bfs_spool_close(struct bfs_spool *sp);

/* A new empty upload, in memory (or spooled at once when mem_max is 0). 0 or -errno. */
int bfs_spool_file_new(struct bfs_spool *sp, struct bfs_spool_file **out);
/* Its memory given back, its spool file closed (and unlinked when named). */
void bfs_spool_file_free(struct bfs_spool_file *f);

/* pwrite(2) and pread(2) of the upload's bytes: the count or -errno. */
ssize_t bfs_spool_write(struct bfs_spool_file *f, const void *buf, size_t n, uint64_t off);
ssize_t bfs_spool_read(struct bfs_spool_file *f, void *buf, size_t n, uint64_t off);
/* ftruncate(2), fsync(2) (0 for bytes in memory). 0 or -errno. */
int bfs_spool_truncate(struct bfs_spool_file *f, uint64_t size);
int bfs_spool_sync(struct bfs_spool_file *f, bool datasync);
/* Whether f was spilled to a file (tests, stats). */
bool bfs_spool_spilled(struct bfs_spool_file *f);

/* The upload's bytes for its ingest: *data (len bytes) stays valid, and f
 * locked, until bfs_spool_unview. Bytes in memory are lent as they are; a
 * spilled upload is read (mapped past 1 MiB). Charges the ingest's working
 * memory against the bound first, waiting for it if need be. 0 or -errno
 * (nothing to unview). */
int bfs_spool_view(struct bfs_spool_file *f, const uint8_t **data, size_t *len);
void bfs_spool_unview(struct bfs_spool_file *f);

#endif
