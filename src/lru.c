/* lru.c - a small thread-safe cache of the most recently used items (lru.h). */
#include "battlefs/lru.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

struct lru_slot {
    void *item;
    uint64_t used; /* tick of the last hit; 0 = empty */
};

struct bfs_lru {
    const struct bfs_lru_type *type;
    pthread_mutex_t mu; /* guards everything below */
    struct lru_slot *slot;
    size_t n;
    uint64_t tick;
};

int bfs_lru_new(size_t slots, const struct bfs_lru_type *type, struct bfs_lru **out)
{
    *out = NULL;
    if (slots == 0)
        return -EINVAL;
    struct bfs_lru *l = calloc(1, sizeof *l);
    if (!l || !(l->slot = calloc(slots, sizeof *l->slot))) {
        free(l);
        return -ENOMEM;
    }
    l->type = type;
    l->n = slots;
    pthread_mutex_init(&l->mu, NULL);
    *out = l;
    return 0;
}

void bfs_lru_free(struct bfs_lru *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        if (l->slot[i].item)
            l->type->unref(l->slot[i].item);
    pthread_mutex_destroy(&l->mu);
    free(l->slot);
    free(l);
}

void *bfs_lru_find(struct bfs_lru *l, const void *key)
{
    void *found = NULL;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->n && !found; i++) {
        if (l->slot[i].item && l->type->match(l->slot[i].item, key)) {
            l->slot[i].used = ++l->tick;
            found = l->slot[i].item;
            l->type->ref(found);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return found;
}

void bfs_lru_add(struct bfs_lru *l, void *item)
{
    pthread_mutex_lock(&l->mu);
    size_t victim = 0;
    for (size_t i = 1; i < l->n; i++)
        if (l->slot[i].used < l->slot[victim].used)
            victim = i;
    if (l->slot[victim].item)
        l->type->unref(l->slot[victim].item);
    l->type->ref(item);
    l->slot[victim].item = item;
    l->slot[victim].used = ++l->tick;
    pthread_mutex_unlock(&l->mu);
}
