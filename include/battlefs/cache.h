/* cache.h - size-bounded LRU cache of store ranges in <state>/cache. */
#ifndef BATTLEFS_CACHE_H
#define BATTLEFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

struct bfs_cache;
struct bfs_stats;
struct bfs_store;

/* Open the cache directory (created 0700 with missing parents). Entry and
 * temporary files a previous mount left are removed (entries are never trusted
 * across mounts; other files are left alone). max_bytes bounds the total size
 * of kept entries (0 = keep nothing). 0 or -errno. */
int bfs_cache_open(const char *dir, uint64_t max_bytes, struct bfs_stats *stats,
                   struct bfs_cache **out);
void bfs_cache_close(struct bfs_cache *c);

/* The unit [unit_off, unit_off+unit_len) of key is the cache's entry: on a
 * miss exactly that range is fetched with one get_range and kept (evicting
 * least recently used entries beyond max_bytes); on a hit no store I/O happens.
 * Copies [want_off, want_off+want_len), which lies inside the unit, to buf.
 * Callers must always cut the same units for the same bytes (a unit is
 * identified by key, unit_off and unit_len exactly).
 * Readers that miss the same unit at the same time share one fetch. A unit
 * larger than max_bytes is served but not kept; a failure to write an entry
 * (cache disk full) is logged once and the read still succeeds.
 * Counts cache_misses (units fetched) and cache_hits (reads served without a
 * fetch of their own). Thread-safe. 0, -EINVAL (want outside the unit, empty
 * unit), -ENOMEM, or the store's error (nothing is kept then). */
int bfs_cache_read(struct bfs_cache *c, struct bfs_store *st, const char *key, uint64_t unit_off,
                   uint64_t unit_len, uint64_t want_off, uint64_t want_len, void *buf);

/* Remove every entry of key (an archive retired by a compaction, or holding
 * erased bytes): its file is unlinked now. A fetch in flight is not
 * stopped, but what it brings is for its readers only if key is dropped
 * again after it (callers drop after the catalog stopped pointing at key).
 * Returns the number of entries removed. */
size_t bfs_cache_drop(struct bfs_cache *c, const char *key);

/* Bound the reads that wait for the store at once (fetching a unit, or
 * waiting for another reader's fetch of it) to n; a miss beyond fails at once
 * with -EIO (and a WARN line, at most one a second). Each waiting read holds
 * one of the FUSE loop's worker threads: the bound keeps the others for
 * uploads, stats and hot reads when the store hangs. 0: no bound (the default). */
void bfs_cache_set_waiting_max(struct bfs_cache *c, unsigned n);

#endif
