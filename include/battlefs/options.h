/* options.h - command-line options of the mount. */
#ifndef BATTLEFS_OPTIONS_H
#define BATTLEFS_OPTIONS_H

#include <stdint.h>

/* Parse a byte size with an optional K, M or G suffix (powers of 1024).
 * 0 or -EINVAL (not a number, overflow, trailing garbage). */
int bfs_parse_size(const char *s, uint64_t *out);

#endif
