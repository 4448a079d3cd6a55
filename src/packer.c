/* packer.c - compression off the close path (packer.h).
 *
 * A batch: read each row (whole blob and flag, a read connection), repack
 * it outside every lock, then replace the rows still unpacked in one write
 * transaction (bfs_catalog_pack_commit, not fsynced: a packing lost to a
 * power failure leaves the row stored). The background thread packs only
 * while uploads pause (QUIET_MS), at SCHED_IDLE: Linux runs it only when a
 * core has nothing else to do; it holds the catalog's writer only for its
 * short UPDATEs (a batch is at most PACK_BATCH rows or PACK_BYTES).
 *
 * Locks: `mu` (+ cond `cv`) guards the thread's wake and stop flags; held
 * across no catalog call but bfs_catalog_commit_groups (which takes the
 * catalog's qmu, a leaf: packer mu -> qmu). */
#include "battlefs/packer.h"

#include <errno.h>
#include <libdeflate.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "battlefs/catalog.h"
#include "battlefs/codec.h"
#include "battlefs/log.h"
#include "battlefs/ocf.h"
#include "battlefs/stats.h"
#include "battlefs/varint.h"

#define PACK_BATCH 16                 /* rows per transaction */
#define PACK_BYTES (4u * 1024 * 1024) /* or fewer, past this many packed bytes */
/* The background thread packs only once uploads have paused this long, and
 * stops at the next upload: packing a row rewrites it (SQLite's copy of the
 * blob, its WAL frames, the checkpoint), about twice the CPU of compressing
 * it, and under load that would come out of the uploads' share even at
 * SCHED_IDLE (docs/bench.md). Rows still stored when a roll claims them are
 * packed by the roll; a reader packs those it views. */
#define QUIET_MS 300

struct bfs_packer {
    struct bfs_packer_deps d;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int kicked; /* a kick since the thread last looked (set without mu) */
    int sleeping;      /* the thread waits for work (a kick wakes it), under mu */
    int stop;
    int faulted; /* the first batch's fault points were passed */
    int idle;    /* the thread runs at SCHED_IDLE */
    atomic_uint_fast64_t rows;
};

int bfs_packer_repack(struct libdeflate_compressor *c, const uint8_t *in, size_t n,
                      struct bfs_buf *out, struct bfs_buf *scratch, struct bfs_err *err)
{
    size_t pos = 0;
    while (pos < n) {
        int64_t count, size;
        size_t at = pos;
        if (bfs_varint_get_long(in, n, &pos, &count) != BFS_VARINT_OK ||
            bfs_varint_get_long(in, n, &pos, &size) != BFS_VARINT_OK || count < 0 || size < 0 ||
            (uint64_t)size > n - pos || n - pos - (size_t)size < 16)
            return bfs_err_set(err, -EINVAL, "block at byte %zu is corrupt", at);
        const uint8_t *plain;
        size_t plain_len;
        int rc = bfs_ocf_block_decompress(BFS_CODEC_DEFLATE, in + pos, (size_t)size,
                                          BFS_OCF_MAX_BLOCK, scratch, &plain, &plain_len, err);
        if (rc < 0)
            return rc == -ENOMEM ? rc : bfs_err_prefix(err, "block at byte %zu", at);
        size_t bound = libdeflate_deflate_compress_bound(c, plain_len);
        if (bfs_buf_put_long(out, count) < 0 || bfs_buf_reserve(out, 10 + bound + 16) < 0)
            return -ENOMEM;
        /* The compressed data goes after room for its size's varint, then
         * moves down next to it. */
        uint8_t *dst = out->data + out->len + 10;
        size_t clen = libdeflate_deflate_compress(c, plain, plain_len, dst, bound);
        if (clen == 0)
            return bfs_err_set(err, -EIO, "deflate compression failed");
        size_t before = out->len;
        if (bfs_buf_put_long(out, (int64_t)clen) < 0)
            return -ENOMEM;
        memmove(out->data + out->len, out->data + before + 10, clen);
        out->len += clen;
        pos += (size_t)size;
        if (bfs_buf_append(out, in + pos, 16) < 0)
            return -ENOMEM;
        pos += 16;
    }
    return 0;
}

/* Buffers of one packing thread. */
struct packing {
    struct libdeflate_compressor *c;
    struct bfs_buf row, scratch, out;
    struct bfs_pack_row rows[PACK_BATCH];
    size_t ends[PACK_BATCH];
};

static void packing_free(struct packing *k)
{
    libdeflate_free_compressor(k->c);
    bfs_buf_free(&k->row);
    bfs_buf_free(&k->scratch);
    bfs_buf_free(&k->out);
}

static int fault(struct bfs_packer *p, enum bfs_pack_step step, int background)
{
    if (!background || !p->d.fault || p->faulted)
        return 0;
    return p->d.fault(p->d.fault_arg, step);
}

/* Commit the m rows repacked into k->out. */
static int pack_flush(struct bfs_packer *p, struct packing *k, size_t m, int background)
{
    if (m == 0)
        return 0;
    for (size_t i = 0; i < m; i++) /* out may have moved while it grew */
        k->rows[i].data = k->out.data + k->ends[i];
    int rc = fault(p, BFS_PACK_MID, background);
    size_t applied = 0;
    /* The thread holds the catalog's writer for the commit: at SCHED_IDLE it
     * could be preempted with it held for as long as the cores are busy, and
     * every upload would wait (priority inversion). So the commit runs at
     * SCHED_OTHER when the thread may return to it (root, CAP_SYS_NICE or
     * RLIMIT_NICE: sched(7)); otherwise it stays idle, which only slows it. */
    struct sched_param sp = {0};
    int raised =
        background && p->idle && pthread_setschedparam(pthread_self(), SCHED_OTHER, &sp) == 0;
    if (rc == 0)
        rc = bfs_catalog_pack_commit(p->d.cat, k->rows, m, &applied);
    if (raised)
        pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    if (rc < 0)
        return rc;
    atomic_fetch_add(&p->rows, applied);
    if (p->d.stats)
        bfs_stats_add(p->d.stats, rows_packed, applied);
    rc = fault(p, BFS_PACK_AFTER_COMMIT, background);
    if (background)
        p->faulted = 1;
    bfs_buf_reset(&k->out);
    return rc;
}

/* Pack ids[0..n) (n <= PACK_BATCH): one transaction, or one per PACK_BYTES
 * of packed rows. */
static int pack_batch(struct bfs_packer *p, struct packing *k, const int64_t *ids, size_t n,
                      int background)
{
    if (!k->c && !(k->c = libdeflate_alloc_compressor(p->d.level)))
        return -ENOMEM;
    size_t m = 0;
    bfs_buf_reset(&k->out);
    for (size_t i = 0; i < n; i++) {
        int packed;
        int rc = bfs_catalog_row_data(p->d.cat, ids[i], &k->row, &packed);
        if (rc == -ENOENT)
            continue; /* rolled, or erased */
        if (rc < 0)
            return rc;
        if (packed)
            continue;
        struct bfs_err err = {0};
        size_t start = k->out.len;
        rc = bfs_packer_repack(k->c, k->row.data, k->row.len, &k->out, &k->scratch, &err);
        if (rc < 0) {
            bfs_error("pack of buffer row %lld: %s", (long long)ids[i],
                      err.msg[0] ? err.msg : strerror(-rc));
            return rc == -ENOMEM ? rc : -EIO;
        }
        k->rows[m].id = ids[i];
        k->rows[m].len = k->out.len - start;
        k->ends[m] = start;
        m++;
        if (k->out.len >= PACK_BYTES) {
            if ((rc = pack_flush(p, k, m, background)) < 0)
                return rc;
            m = 0;
        }
    }
    return pack_flush(p, k, m, background);
}

/* Pack ids[0..n) in batches of at most PACK_BATCH rows and about PACK_BYTES. */
static int pack_list(struct bfs_packer *p, struct packing *k, const int64_t *ids, size_t n,
                     int background)
{
    for (size_t i = 0; i < n; i += PACK_BATCH) {
        size_t m = n - i < PACK_BATCH ? n - i : PACK_BATCH;
        int rc = pack_batch(p, k, ids + i, m, background);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int bfs_packer_pack_ids(struct bfs_packer *p, const int64_t *ids, size_t n)
{
    struct packing k = {0};
    int rc = pack_list(p, &k, ids, n, 0);
    packing_free(&k);
    return rc;
}

/* The rows of one page of a range, shared by the threads that pack it: each
 * takes the next PACK_BATCH of them until none are left (or one failed), so
 * a thread whose rows compress faster takes more. */
struct page_work {
    struct bfs_packer *p;
    const int64_t *ids;
    size_t n;
    atomic_size_t next;
    atomic_int rc; /* the first failure */
};

static void *page_main(void *arg)
{
    struct page_work *w = arg;
    struct packing k = {0};
    for (;;) {
        size_t i = atomic_fetch_add(&w->next, PACK_BATCH);
        if (i >= w->n || atomic_load(&w->rc) < 0)
            break;
        size_t m = w->n - i < PACK_BATCH ? w->n - i : PACK_BATCH;
        int rc = pack_batch(w->p, &k, w->ids + i, m, 0);
        if (rc < 0) {
            int none = 0;
            atomic_compare_exchange_strong(&w->rc, &none, rc);
            break;
        }
    }
    packing_free(&k);
    return NULL;
}

#define RANGE_PAGE 512

int bfs_packer_pack_range(struct bfs_packer *p, int64_t first, int64_t last, int threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > 8)
        threads = 8;
    int64_t *ids = malloc(RANGE_PAGE * sizeof *ids);
    if (!ids)
        return -ENOMEM;
    int rc = 0;
    for (;;) {
        size_t n;
        if ((rc = bfs_catalog_unpacked(p->d.cat, first, last, ids, RANGE_PAGE, &n)) < 0 || n == 0)
            break;
        struct page_work w = {.p = p, .ids = ids, .n = n};
        atomic_init(&w.next, 0);
        atomic_init(&w.rc, 0);
        /* threads - 1 more threads (no more than the page's batches need),
         * and the caller's; a thread that cannot start leaves its share to
         * the others */
        pthread_t t[8];
        int started = 0;
        size_t batches = (n + PACK_BATCH - 1) / PACK_BATCH;
        for (int k = 1; k < threads && (size_t)k < batches; k++)
            if (pthread_create(&t[started], NULL, page_main, &w) == 0)
                started++;
        page_main(&w);
        for (int i = 0; i < started; i++)
            pthread_join(t[i], NULL);
        rc = atomic_load(&w.rc);
        if (rc < 0 || n < RANGE_PAGE)
            break;
        first = ids[n - 1] + 1;
    }
    free(ids);
    return rc;
}

/* Under mu: wait until no upload has committed for QUIET_MS (or stop).
 * Returns the upload commits then. */
static uint64_t wait_quiet(struct bfs_packer *p)
{
    for (;;) {
        uint64_t g = bfs_catalog_commit_groups(p->d.cat);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += QUIET_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &ts) == 0) {
        }
        if (p->stop || bfs_catalog_commit_groups(p->d.cat) == g)
            return g;
    }
}

static void *packer_main(void *arg)
{
    struct bfs_packer *p = arg;
    /* Background work: only a core's idle time. Lowering one's own policy
     * needs no privilege (sched(7)). */
    struct sched_param sp = {0};
    int e = pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
    if (e != 0)
        bfs_warn("packer: SCHED_IDLE: %s (packing at normal priority)", strerror(e));
    p->idle = e == 0;
    struct packing k = {0};
    int64_t ids[PACK_BATCH];
    uint64_t quiet_at = UINT64_MAX; /* upload commits when uploads last paused */
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        int hold = p->d.hold;
        atomic_store(&p->kicked, 0);
        if (bfs_catalog_commit_groups(p->d.cat) != quiet_at) {
            quiet_at = wait_quiet(p);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        size_t n = 0;
        int rc =
            hold ? 0 : bfs_catalog_unpacked(p->d.cat, INT64_MIN, INT64_MAX, ids, PACK_BATCH, &n);
        if (rc == 0 && n > 0)
            rc = pack_batch(p, &k, ids, n, 1);
        if (rc < 0)
            bfs_warn("packer: %s (retried)", strerror(-rc));
        pthread_mutex_lock(&p->mu);
        if (rc == 0 && n > 0 && !p->stop)
            continue;    /* more, perhaps */
        p->sleeping = 1; /* before the look: a kick after it signals */
        if (!atomic_load(&p->kicked) && !p->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += rc < 0 ? 5 : 1;
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        p->sleeping = 0;
    }
    pthread_mutex_unlock(&p->mu);
    packing_free(&k);
    return NULL;
}

int bfs_packer_start(const struct bfs_packer_deps *deps, struct bfs_packer **out)
{
    if (deps->level < 1 || deps->level > 12)
        return -EINVAL;
    struct bfs_packer *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->d = *deps;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->rows, 0);
    atomic_init(&p->kicked, 0);
    int e = pthread_create(&p->thread, NULL, packer_main, p);
    if (e != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
        return -e;
    }
    p->started = 1;
    *out = p;
    return 0;
}

void bfs_packer_stop(struct bfs_packer *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (p->started)
        pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

/* Called after every commit of an unpacked row: only the first kick since
 * the thread last looked takes mu, and it wakes the thread only if it sleeps
 * for want of work (not while it waits for uploads to pause). */
void bfs_packer_kick(struct bfs_packer *p)
{
    if (!p || atomic_exchange(&p->kicked, 1))
        return;
    pthread_mutex_lock(&p->mu);
    if (p->sleeping)
        pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

uint64_t bfs_packer_rows(struct bfs_packer *p)
{
    return p ? atomic_load(&p->rows) : 0;
}
