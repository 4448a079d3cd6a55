/* reader.h - the bytes of <table>/<period>/<dataset>.avro (hot + cold). */
#ifndef BATTLEFS_READER_H
#define BATTLEFS_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct bfs_ctx;
struct bfs_reader;

/* Snapshot the dataset's view. 0, -ENOENT, -errno. */
int bfs_reader_open(struct bfs_ctx *ctx, const char *table, const char *period, const char *dataset,
                    struct bfs_reader **out);
/* The size of the current view: the size at open, or larger once a read
 * past it has found that the file grew. */
uint64_t bfs_reader_size(struct bfs_reader *r);
/* Read up to size bytes at off; returns bytes read (short only at EOF) or -errno. */
ssize_t bfs_reader_read(struct bfs_reader *r, char *buf, size_t size, uint64_t off);
void bfs_reader_close(struct bfs_reader *r);

#endif
