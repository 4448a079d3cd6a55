/* names.h - the name rules of the tree. */
#ifndef BATTLEFS_NAMES_H
#define BATTLEFS_NAMES_H

#include <stddef.h>

#define BFS_NAME_MAX 128

/* A table, period or dataset name: [A-Za-z0-9_.-]{1,128}, not starting with '.'.
 * n is the length (the name need not be NUL-terminated). 1 if valid, else 0. */
int bfs_name_valid(const char *s, size_t n);

/* A node name (-o node): 1 to BFS_NODE_MAX of [A-Za-z0-9_-]. 1 if s is one
 * (NUL-terminated), else 0. */
#define BFS_NODE_MAX 64
int bfs_node_valid(const char *s);
/* 1 if c may be in a node name ([A-Za-z0-9_-]), else 0. */
int bfs_node_char(char c);

/* Reserved table names: "incoming" (the drop box) and "_battlefs" (the
 * store's prefix for battlefs' own objects). 1 if reserved, else 0. */
int bfs_table_reserved(const char *s, size_t n);

/* Copy src to dst (cap bytes, NUL-terminated, cut if needed) with every
 * control byte (below 0x20, and 0x7f) written as \xNN: names and metadata
 * of uploads reach the log and .battlefs/errors, which terminals display.
 * Returns the length written. */
size_t bfs_escape_ctl(char *dst, size_t cap, const char *src);

/* The index of name in names[0..n) (the names of an enum's values, as the
 * fault steps of -o fault), or -1 (name NULL or not there). */
int bfs_name_index(const char *const *names, unsigned n, const char *name);

/* Today's UTC date as YYYY-MM-DD into out[11]. */
void bfs_utc_date(char out[11]);
/* Now as an ISO-8601 UTC timestamp "YYYY-MM-DDTHH:MM:SSZ" into out[21]. */
void bfs_utc_timestamp(char out[21]);

#endif
