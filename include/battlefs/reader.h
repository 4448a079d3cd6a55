/* reader.h - the bytes of <table>/<period>/<dataset>.avro (hot + cold). */
#ifndef BATTLEFS_READER_H
#define BATTLEFS_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct bfs_cache;
struct bfs_catalog;
struct bfs_conv_cache;
struct bfs_reader;
struct bfs_store;

/* What a reader uses; filled once by main.c (or a test), copied by
 * bfs_reader_open. The modules are borrowed: they must outlive the reader. */
struct bfs_reader_deps {
    struct bfs_catalog *cat;
    struct bfs_store *store;
    struct bfs_cache *cache; /* NULL: cold ranges are read from the store directly */
    uint64_t read_chunk;     /* cold segments are read in units of at most this (> 0) */
    /* Compiled conversions of segments written in another schema version
     * than their partition's merged schema (evolve.h); NULL: each is
     * compiled when needed. */
    struct bfs_conv_cache *convs;
    /* Read the store's log now (bfs_ledger_refresh): called once when an
     * archive a fresh view names is missing from the store (a compaction
     * this mount has not read retired and deleted it). NULL: none. */
    int (*refresh)(void *arg);
    void *refresh_arg;
    /* Pack hot rows ids[0..n) now (bfs_packer_pack_ids): called before a
     * view that holds rows not packed yet is used, so no view ever holds
     * bytes that a packing would change. NULL: views take rows as they are. */
    int (*pack)(void *arg, const int64_t *ids, size_t n);
    void *pack_arg;
};

/* Snapshot the dataset's view. Segments written in another version than the
 * partition's merged schema are served converted (evolve.h); a converted
 * length not known yet is measured here (reading the segment) and memoised
 * in the catalog. 0, -ENOENT, -EINVAL (read_chunk 0), -errno. */
int bfs_reader_open(const struct bfs_reader_deps *deps, const char *table, const char *period,
                    const char *dataset, struct bfs_reader **out);
/* The size of the current view: the size at open, or larger once a read
 * past it has found that the file grew. */
uint64_t bfs_reader_size(struct bfs_reader *r);
/* Read up to size bytes at off; returns bytes read (short only at EOF) or -errno. */
ssize_t bfs_reader_read(struct bfs_reader *r, char *buf, size_t size, uint64_t off);
void bfs_reader_close(struct bfs_reader *r);

/* Size and mtime of the dataset file (getattr): the catalog's answer, or,
 * when a converted length is not known yet, a view's (measured and
 * memoised). 0, -ENOENT, -errno. */
int bfs_reader_stat(const struct bfs_reader_deps *deps, const char *table, const char *period,
                    const char *dataset, uint64_t *size, int64_t *mtime);

#endif
