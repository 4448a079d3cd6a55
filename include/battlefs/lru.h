/* lru.h - a small thread-safe cache of the most recently used items.
 *
 * Items are reference-counted by their owner's type (ref, unref); the cache
 * holds one reference per slot and hands out new ones. A lookup scans the
 * slots (a cache of a few dozen entries: compiled schemas, conversions), so
 * match should be cheap. Used by ocf.c (compiled schemas) and evolve.c
 * (compiled conversions).
 */
#ifndef BATTLEFS_LRU_H
#define BATTLEFS_LRU_H

#include <stdbool.h>
#include <stddef.h>

struct bfs_lru_type {
    bool (*match)(const void *item, const void *key); /* item is the one for key */
    void (*ref)(void *item);
    void (*unref)(void *item);
};

struct bfs_lru;

/* 0, -EINVAL (no slots) or -ENOMEM. type must outlive the cache. */
int bfs_lru_new(size_t slots, const struct bfs_lru_type *type, struct bfs_lru **out);
/* Drops the cache's references. NULL is fine. */
void bfs_lru_free(struct bfs_lru *l);
/* A new reference to the item that matches key, now the most recently used;
 * NULL if none. */
void *bfs_lru_find(struct bfs_lru *l, const void *key);
/* Keep a reference to item in the least recently used slot (its item's
 * reference dropped). */
void bfs_lru_add(struct bfs_lru *l, void *item);

#endif
