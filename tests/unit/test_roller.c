/* test_roller.c - the roll protocol without a mount: a real catalog, an
 * in-memory store, the roller's deps (struct bfs_roll_deps) and its fault hook.
 *
 * Every roll is checked against a model (testenv.c, model_roll): the archives'
 * keys and bytes (layout header + the datasets' blocks), archived_files and
 * block_indexes, and every dataset read back through its segments. A crash is
 * a fault hook that stops the roll at one step, leaving what a crash there
 * leaves; recovery must then give the same keys and bytes as an
 * uninterrupted roll, each upload in exactly one archive. The commit goes
 * through the store's log (a ledger of node "t" on the same store): the
 * manifest, then the log entry, then the local commit; check_roll checks all
 * three. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "battlefs/catalog.h"
#include "battlefs/ledger.h"
#include "battlefs/roller.h"
#include "testenv.h"

/* ---- a fault hook that records the steps and can stop the roll at one ---- */

#define MAX_SEEN 256

struct hook {
    pthread_mutex_t lock;
    char roll_id[BFS_ROLL_ID_MAX]; /* the last roll's */
    enum bfs_roll_step seen[MAX_SEEN];
    size_t n_seen;
    int fail_at; /* a step, or -1 */
    int rc;      /* what the hook returns there */
};

static int hook_fn(void *arg, enum bfs_roll_step step, const char *roll_id)
{
    struct hook *h = arg;
    pthread_mutex_lock(&h->lock);
    snprintf(h->roll_id, sizeof h->roll_id, "%s", roll_id);
    if (h->n_seen < MAX_SEEN)
        h->seen[h->n_seen] = step;
    h->n_seen++;
    int rc = (int)step == h->fail_at ? h->rc : 0;
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static void hook_init(struct hook *h, struct tenv *e, int fail_at, int rc)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->lock, NULL);
    h->fail_at = fail_at;
    h->rc = rc;
    e->roll.fault = hook_fn;
    e->roll.fault_arg = h;
}

static void hook_done(struct hook *h, struct tenv *e)
{
    e->roll.fault = NULL;
    e->roll.fault_arg = NULL;
    pthread_mutex_destroy(&h->lock);
}

/* ---- uploads ---- */

#define P1 "2025-12-18"
#define P2 "2025-12-19"

/* Several tables, periods and datasets, committed interleaved (the roll
 * orders them by table, period, dataset, row id). Sizes force splits at
 * SPLIT_MAX bytes in battle/P1. */
static const struct {
    const char *table, *period, *dataset;
    size_t len;
} PLAN[] = {
    {"battle", P1, "u1", 300},
    {"own_ship", P1, "u1", 200},
    {"battle", P1, "u2", 120},
    {"battle", P2, "u1", 260},
    {"battle", P1, "u1", 410},
    {"cells", P1, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 150},
    {"own_ship", P1, "u0", 90},
    {"battle", P1, "u3", 530},
    {"battle", P1, "u2", 80},
    {"fusou.battle", P1, "u1", 1700}, /* alone: larger than SPLIT_MAX */
    {"battle", P1, "u0", 64},
    {"own_ship", P1, "u1", 33},
    {"battle", P2, "u1", 1},
};
#define N_PLAN    (sizeof PLAN / sizeof PLAN[0])
#define SPLIT_MAX 700

static void populate(struct tenv *e, unsigned seed)
{
    for (size_t i = 0; i < N_PLAN; i++)
        tenv_upload(e, PLAN[i].table, PLAN[i].period, PLAN[i].dataset, PLAN[i].len, seed + i);
}

static uint64_t buffer_uploads(struct tenv *e)
{
    struct bfs_catalog_counts c;
    assert_int_equal(bfs_catalog_counts(e->cat, &c), 0);
    return c.buffer_uploads;
}

static void purge_all(struct tenv *e)
{
    int n;
    while ((n = bfs_catalog_purge(e->cat, 16)) > 0)
        ;
    assert_int_equal(n, 0);
    assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM buffer_data"),
                     tenv_sql_int(e, "SELECT count(*) FROM buffer_rows"));
}

/* Objects in the store outside "_battlefs/": archives. */
static size_t data_objects(struct tenv *e)
{
    return e->ms->n - memstore_count(e->ms, BFS_LEDGER_PREFIX);
}

static char *roll_error(struct tenv *e)
{
    pthread_mutex_lock(&e->stats.lock);
    char *s = e->stats.has_roll_error ? strdup(e->stats.last_roll_error) : NULL;
    pthread_mutex_unlock(&e->stats.lock);
    return s;
}

/* ---- tests ---- */

/* One roll of several tables, periods and datasets: the archives, their keys
 * and bytes, the index rows; every dataset reads the same before and after,
 * and after the rolled blobs are purged. */
static void test_roll_layout(void **state)
{
    (void)state;
    struct tenv *e = tenv_new(1); /* put_wants_sha256: every digest is checked */
    populate(e, 1);
    check_datasets(e, e->n_up);
    struct hook h;
    hook_init(&h, e, -1, 0);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    assert_int_equal(e->stats.rolls, 1);
    assert_int_equal(buffer_uploads(e), 0);

    struct mroll m;
    model_roll(e, h.roll_id, 0, e->n_up - 1, e->roll.archive_max_bytes, &m);
    /* one archive per (table, period): battle/P1, battle/P2, cells, fusou.battle, own_ship */
    assert_int_equal(m.n, 5);
    assert_string_equal(m.a[0].table, "battle");
    assert_int_equal(m.a[0].n_idx, 4); /* u0, u1, u2, u3 */
    check_roll(e, h.roll_id, &m, 0);
    /* each archive and the manifest offered to the store to keep */
    assert_int_equal(e->ms->linked, m.n + 1);
    /* the store: the archives, one schema, the manifest, one log entry, the lease */
    assert_int_equal(e->ms->data_puts, m.n);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "schemas/"), 1);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "manifests/t/"), 1);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "log/"), 1);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "nodes/t/lease"), 1);
    assert_int_equal(e->ms->n, m.n + 4);
    assert_int_equal(e->ms->puts, m.n + 4);
    assert_int_equal(e->ms->refused, 0);
    assert_int_equal(tenv_log_pos(e), 1);
    assert_int_equal(e->stats.log_position, 1);
    assert_int_equal(e->stats.manifests_loaded, 1);
    /* the roll id: "<node>-<claim time>-<state id, 8>-<first row>" */
    char sid[BFS_STATE_ID_MAX], want[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_ledger_state(e->cat, NULL, sid), 0);
    snprintf(want, sizeof want, "t-%.16s-%.8s-1", h.roll_id + 2, sid);
    assert_string_equal(h.roll_id, want);
    check_datasets(e, e->n_up);
    purge_all(e);
    check_datasets(e, e->n_up);

    /* Nothing to roll: 0, nothing changes. */
    unsigned puts = e->ms->puts;
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    assert_int_equal(e->stats.rolls, 1);
    assert_int_equal(e->ms->puts, puts);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "log/"), 1);
    model_free(&m);
    hook_done(&h, e);
    tenv_free(e);
}

/* Archives of many copy chunks (1 MiB each, a ring of 4 between the build and
 * the hash thread): rows larger than a chunk and rows across chunk
 * boundaries, archives that wrap the ring several times and one that ends
 * exactly at a chunk boundary; every archive's digest in the manifest (and,
 * for a store that wants it, handed to the put) is the SHA-256 of its bytes. */
static void test_roll_many_chunks(void **state)
{
    (void)state;
    for (int wants = 0; wants <= 1; wants++) {
        struct tenv *e = tenv_new(wants);
        e->roll.archive_max_bytes = 6u << 20;
        struct bfs_buf hdr = {0};
        tenv_upload(e, "battle", P1, "u0", 1000, 1);
        tenv_header(e, "battle", P1, &hdr);
        /* battle/P1: 1000 + 2.5 MiB + 7 x 333,333 + ... bytes, split at 6 MiB */
        tenv_upload(e, "battle", P1, "u1", (5u << 19), 2);
        for (unsigned i = 0; i < 7; i++)
            tenv_upload(e, "battle", P1, i % 2 ? "u2" : "u3", 333333, 3 + i);
        tenv_upload(e, "battle", P1, "u4", (3u << 20) + 17, 10);
        /* own_ship/P1: exactly two chunks, header included */
        tenv_upload(e, "own_ship", P1, "u0", 100, 11);
        struct bfs_buf ohdr = {0};
        tenv_header(e, "own_ship", P1, &ohdr);
        tenv_upload(e, "own_ship", P1, "u1", (2u << 20) - ohdr.len - 100, 12);
        /* battle/P2: one row of 9 MiB, alone (larger than archive_max_bytes) */
        tenv_upload(e, "battle", P2, "u1", 9u << 20, 13);
        struct hook h;
        hook_init(&h, e, -1, 0);
        assert_int_equal(bfs_roll_once(&e->roll), 0);
        struct mroll m;
        model_roll(e, h.roll_id, 0, e->n_up - 1, e->roll.archive_max_bytes, &m);
        assert_true(m.n >= 4);
        check_roll(e, h.roll_id, &m, 0);
        check_datasets(e, e->n_up);
        model_free(&m);
        bfs_buf_free(&hdr);
        bfs_buf_free(&ohdr);
        hook_done(&h, e);
        tenv_free(e);
    }
}

/* archive_max_bytes splits a group before the row that would pass it (a row
 * is never split: a larger one is alone); a second roll adds its own archives. */
static void test_roll_split(void **state)
{
    (void)state;
    struct tenv *e = tenv_new(0);
    e->roll.archive_max_bytes = SPLIT_MAX;
    populate(e, 7);
    struct hook h;
    hook_init(&h, e, -1, 0);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    char first_id[BFS_ROLL_ID_MAX];
    snprintf(first_id, sizeof first_id, "%s", h.roll_id);
    struct mroll m;
    model_roll(e, first_id, 0, e->n_up - 1, SPLIT_MAX, &m);
    check_roll(e, first_id, &m, 0);
    size_t battle_p1 = 0;
    for (size_t i = 0; i < m.n; i++) {
        const struct march *a = &m.a[i];
        uint64_t rows_bytes = a->bytes.len - a->header_length;
        if (strcmp(a->table, "battle") == 0 && strcmp(a->period, P1) == 0) {
            char want[256];
            snprintf(want, sizeof want, "battle/" P1 "/%s-%zu.avro", first_id, battle_p1++);
            assert_string_equal(a->key, want);
        }
        if (a->bytes.len > SPLIT_MAX) /* only a single row passes the bound */
            assert_true(a->n_idx == 1 && rows_bytes == 1700);
    }
    assert_true(battle_p1 >= 3);
    check_datasets(e, e->n_up);

    /* More uploads, a second roll: its archives are added, the first's stay. */
    size_t before = e->n_up;
    tenv_upload(e, "battle", P1, "u1", 700, 99);
    tenv_upload(e, "battle", P1, "u9", 20, 98);
    tenv_upload(e, "own_ship", P2, "u1", 40, 97);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    assert_string_not_equal(h.roll_id, first_id);
    struct mroll m2;
    model_roll(e, h.roll_id, before, e->n_up - 1, SPLIT_MAX, &m2);
    check_roll(e, h.roll_id, &m2, m.n);
    check_datasets(e, e->n_up);
    /* and hot uploads after the rolls read behind the cold segments */
    tenv_upload(e, "battle", P1, "u1", 10, 96);
    check_datasets(e, e->n_up);
    model_free(&m);
    model_free(&m2);
    hook_done(&h, e);
    tenv_free(e);

    /* An archive of exactly archive_max_bytes is kept whole; one byte more splits. */
    e = tenv_new(0);
    hook_init(&h, e, -1, 0);
    tenv_upload(e, "edge", P1, "d1", 100, 1);
    tenv_upload(e, "edge", P1, "d2", 100, 2);
    tenv_upload(e, "edge", P1, "d3", 1, 3);
    struct bfs_buf hdr = {0};
    tenv_header(e, "edge", P1, &hdr);
    e->roll.archive_max_bytes = hdr.len + 200;
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    model_roll(e, h.roll_id, 0, 2, e->roll.archive_max_bytes, &m);
    assert_int_equal(m.n, 2);
    assert_int_equal(m.a[0].bytes.len, hdr.len + 200);
    assert_int_equal(m.a[0].n_idx, 2);
    check_roll(e, h.roll_id, &m, 0);
    model_free(&m);
    bfs_buf_free(&hdr);
    hook_done(&h, e);
    tenv_free(e);
}

/* The hook sees the steps in protocol order (hold_puts: every put after the
 * build), with one PUT per archive and MID_UPLOAD after the first. */
static void test_fault_points_in_order(void **state)
{
    (void)state;
    struct tenv *e = tenv_new(1);
    e->roll.archive_max_bytes = SPLIT_MAX;
    e->roll.hold_puts = 1;
    populate(e, 3);
    struct hook h;
    hook_init(&h, e, -1, 0);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    struct mroll m;
    model_roll(e, h.roll_id, 0, e->n_up - 1, SPLIT_MAX, &m);
    check_roll(e, h.roll_id, &m, 0);
    enum bfs_roll_step want[MAX_SEEN];
    size_t n = 0;
    want[n++] = BFS_ROLL_AFTER_CLAIM;
    want[n++] = BFS_ROLL_MID_BUILD;
    want[n++] = BFS_ROLL_AFTER_BUILD;
    want[n++] = BFS_ROLL_PUT;
    want[n++] = BFS_ROLL_MID_UPLOAD;
    for (size_t i = 1; i < m.n; i++)
        want[n++] = BFS_ROLL_PUT;
    want[n++] = BFS_ROLL_AFTER_UPLOAD;
    want[n++] = BFS_ROLL_BEFORE_COMMIT;
    want[n++] = BFS_ROLL_AFTER_MANIFEST;
    want[n++] = BFS_ROLL_AFTER_LOG;
    want[n++] = BFS_ROLL_AFTER_COMMIT;
    assert_int_equal(h.n_seen, n);
    for (size_t i = 0; i < n; i++)
        if (h.seen[i] != want[i])
            fail_msg("step %zu: %s, want %s", i, bfs_roll_step_name(h.seen[i]),
                     bfs_roll_step_name(want[i]));
    /* the names are -o fault='s */
    for (int s = 0; s < BFS_ROLL_STEPS; s++) {
        enum bfs_roll_step back;
        assert_int_equal(bfs_roll_step_parse(bfs_roll_step_name((enum bfs_roll_step)s), &back), 0);
        assert_int_equal(back, s);
    }
    assert_string_equal(bfs_roll_step_name(BFS_ROLL_PUT), "put-fail");
    assert_string_equal(bfs_roll_step_name(BFS_ROLL_AFTER_MANIFEST), "after-manifest");
    assert_string_equal(bfs_roll_step_name(BFS_ROLL_AFTER_LOG), "after-log");
    assert_null(bfs_roll_step_name((enum bfs_roll_step)BFS_ROLL_STEPS));
    enum bfs_roll_step x;
    assert_int_equal(bfs_roll_step_parse("mid-roll", &x), -EINVAL);
    model_free(&m);
    hook_done(&h, e);
    tenv_free(e);
}

/* Puts of keys starting with prefix (NULL: every put) fail with rc. */
static void fail_puts(struct tenv *e, int rc, const char *prefix)
{
    pthread_mutex_lock(&e->ms->lock);
    e->ms->put_rc = rc;
    e->ms->put_rc_prefix = prefix;
    pthread_mutex_unlock(&e->ms->lock);
}

/* The roll fails with rc, its error (in the stats) containing each of the
 * NULL-terminated strings; the claim (id) and the buffer stay and read, the
 * work directory is empty, nothing is committed. */
static void expect_failed_roll(struct tenv *e, int rc, const char *id, size_t claimed, ...)
{
    assert_int_equal(bfs_roll_once(&e->roll), rc);
    char pending[BFS_ROLL_ID_MAX];
    assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), 0);
    if (id)
        assert_string_equal(pending, id);
    assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM buffer_logs WHERE roll_id IS NOT NULL"),
                     claimed);
    assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM archived_files"), 0);
    assert_int_equal(tenv_log_pos(e), 0);
    assert_int_equal(tenv_work_files(e, NULL, 0), 0);
    assert_int_equal(e->stats.rolls, 0);
    char *why = roll_error(e);
    assert_non_null(why);
    assert_non_null(strstr(why, pending));
    va_list ap;
    va_start(ap, claimed);
    const char *want;
    while ((want = va_arg(ap, const char *)) != NULL)
        if (!strstr(why, want))
            fail_msg("the roll error lacks \"%s\": %s", want, why);
    va_end(ap);
    free(why);
    check_datasets(e, e->n_up);
}

/* A store whose put fails: the roll fails and says why, the claim and the
 * buffer stay (and read), the work directory is emptied; the retried roll
 * finishes the same roll; an upload made meanwhile waits for the next one.
 * The put-fail hook (what -o fault=put-fail does) fails the same way. So do
 * failed puts of the schema, the manifest and the log entry: nothing is
 * committed without its log entry. */
static void test_put_fails(void **state)
{
    (void)state;
    struct tenv *e = tenv_new(1);
    e->roll.archive_max_bytes = SPLIT_MAX;
    populate(e, 11);
    size_t n = e->n_up;
    struct hook h;
    hook_init(&h, e, -1, 0);
    fail_puts(e, -EIO, "battle/");
    expect_failed_roll(e, -EIO, NULL, n, ": put battle/", "Input/output error", (const char *)NULL);
    char id[BFS_ROLL_ID_MAX];
    snprintf(id, sizeof id, "%s", h.roll_id);
    assert_int_equal(buffer_uploads(e), n);
    assert_int_equal(data_objects(e), 0);
    assert_int_equal(e->errors.count, 1);

    /* Still failing: the same roll is tried again, nothing is claimed anew.
     * What the store says of the failure reaches the roll's error. */
    tenv_upload(e, "battle", P1, "u1", 55, 200);
    e->ms->put_msg = "HTTP 503 SlowDown (5 attempts, 2.0 s)";
    expect_failed_roll(e, -EIO, id, n, ": put battle/",
                       ".avro: HTTP 503 SlowDown (5 attempts, 2.0 s): Input/output error",
                       (const char *)NULL);
    e->ms->put_msg = NULL;

    /* The fault hook's put-fail: the same failure, named. */
    fail_puts(e, 0, NULL);
    h.fail_at = BFS_ROLL_PUT;
    h.rc = -EIO;
    expect_failed_roll(e, -EIO, id, n, "(fault put-fail): Input/output error", (const char *)NULL);
    assert_int_equal(data_objects(e), 0);
    h.fail_at = -1;

    /* The manifest's put fails: every archive is in the store, but no
     * manifest, no log entry. */
    fail_puts(e, -EIO, BFS_LEDGER_PREFIX "manifests/");
    expect_failed_roll(e, -EIO, id, n, ": put " BFS_LEDGER_PREFIX "manifests/t/",
                       (const char *)NULL);
    struct mroll m;
    model_roll(e, id, 0, n - 1, SPLIT_MAX, &m);
    assert_int_equal(data_objects(e), m.n);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "manifests/"), 0);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "log/"), 0);

    /* The log entry's put fails: the manifest is there, the roll is not
     * committed (in the store or here). */
    fail_puts(e, -EIO, BFS_LEDGER_PREFIX "log/");
    expect_failed_roll(e, -EIO, id, n, "commit: ", "put " BFS_LEDGER_PREFIX "log/",
                       (const char *)NULL);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "manifests/"), 1);
    assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "log/"), 0);

    /* The store works again: the pending roll completes, exactly its rows;
     * what was put before is found there (create-only, the same bytes). */
    fail_puts(e, 0, NULL);
    unsigned refused = e->ms->refused;
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    assert_null(roll_error(e));
    assert_int_equal(e->stats.rolls, 1);
    assert_int_equal(e->ms->refused, refused);
    check_roll(e, id, &m, 0);
    assert_int_equal(buffer_uploads(e), 1);
    check_datasets(e, e->n_up);
    /* and the next roll takes the upload made meanwhile */
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    assert_string_not_equal(h.roll_id, id);
    struct mroll m2;
    model_roll(e, h.roll_id, n, n, SPLIT_MAX, &m2);
    check_roll(e, h.roll_id, &m2, m.n);
    assert_int_equal(buffer_uploads(e), 0);
    check_datasets(e, e->n_up);
    assert_int_equal(tenv_log_pos(e), 2);
    model_free(&m);
    model_free(&m2);
    hook_done(&h, e);
    tenv_free(e);

    /* Every put fails: the first to fail is the schema's, before any archive. */
    e = tenv_new(0);
    populate(e, 12);
    hook_init(&h, e, -1, 0);
    fail_puts(e, -EIO, NULL);
    expect_failed_roll(e, -EIO, NULL, e->n_up, "schema " BFS_LEDGER_PREFIX "schemas/",
                       "Input/output error", (const char *)NULL);
    fail_puts(e, 0, NULL);
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    model_roll(e, h.roll_id, 0, e->n_up - 1, e->roll.archive_max_bytes, &m);
    check_roll(e, h.roll_id, &m, 0);
    model_free(&m);
    hook_done(&h, e);
    tenv_free(e);
}

/* The archives and schemas of the uninterrupted roll base (roll base_id)
 * and of e (roll id): the same keys but for the roll id, the same bytes.
 * (Manifests, log entries and leases name the roll, the node's epoch, the
 * time: check_roll checks them against the model.) */
static void same_as_uninterrupted(struct tenv *e, const char *id, struct tenv *base,
                                  const char *base_id)
{
    size_t n = 0;
    for (size_t i = 0; i < base->ms->n; i++) {
        const struct memobj *b = &base->ms->obj[i];
        if (strncmp(b->key, BFS_LEDGER_PREFIX, strlen(BFS_LEDGER_PREFIX)) == 0 &&
            strncmp(b->key, BFS_LEDGER_PREFIX "schemas/", strlen(BFS_LEDGER_PREFIX "schemas/")))
            continue;
        n++;
        const char *at = strstr(b->key, base_id);
        char key[512];
        if (at)
            snprintf(key, sizeof key, "%.*s%s%s", (int)(at - b->key), b->key, id,
                     at + strlen(base_id));
        else
            snprintf(key, sizeof key, "%s", b->key); /* a schema */
        const struct memobj *o = memstore_find(e->ms, key);
        if (!o)
            fail_msg("recovery made no %s (the uninterrupted roll made %s)", key, b->key);
        assert_int_equal(o->len, b->len);
        assert_memory_equal(o->data, b->data, b->len);
    }
    assert_int_equal(data_objects(e) + memstore_count(e->ms, BFS_LEDGER_PREFIX "schemas/"), n);
}

/* A crash at each step of the protocol: the hook stops the roll there; the
 * state is what a crash leaves (claimed rows, partial or whole archive files
 * in the work directory, objects put, the manifest put, the log entry put, or
 * the local commit done); after a restart (the catalog and the ledger opened
 * again, the lease not released: the new mount takes it over and fences the
 * old epoch before it commits) recovery finishes the roll: every upload in
 * exactly one archive, index rows once, the keys and bytes of an
 * uninterrupted roll, one log entry; and the mount goes on rolling. */
static void test_crash_at_each_step(void **state)
{
    (void)state;
    static const enum bfs_roll_step steps[] = {
        BFS_ROLL_AFTER_CLAIM,    BFS_ROLL_MID_BUILD,    BFS_ROLL_AFTER_BUILD,
        BFS_ROLL_MID_UPLOAD,     BFS_ROLL_AFTER_UPLOAD, BFS_ROLL_BEFORE_COMMIT,
        BFS_ROLL_AFTER_MANIFEST, BFS_ROLL_AFTER_LOG,    BFS_ROLL_AFTER_COMMIT,
    };
    /* the uninterrupted roll of the same uploads */
    struct tenv *base = tenv_new(1);
    base->roll.archive_max_bytes = SPLIT_MAX;
    populate(base, 21);
    struct hook bh;
    hook_init(&bh, base, -1, 0);
    assert_int_equal(bfs_roll_once(&base->roll), 0);
    struct mroll bm;
    model_roll(base, bh.roll_id, 0, base->n_up - 1, SPLIT_MAX, &bm);
    check_roll(base, bh.roll_id, &bm, 0);
    assert_true(bm.n >= 6);

    for (size_t si = 0; si < sizeof steps / sizeof steps[0]; si++) {
        enum bfs_roll_step step = steps[si];
        const char *name = bfs_roll_step_name(step);
        struct tenv *e = tenv_new(1);
        e->roll.archive_max_bytes = SPLIT_MAX;
        /* after-build: "all built, nothing put", as -o fault=after-build */
        e->roll.hold_puts = step == BFS_ROLL_AFTER_BUILD;
        populate(e, 21);
        size_t n = e->n_up;
        struct hook h;
        hook_init(&h, e, (int)step, -ECANCELED);
        assert_int_equal(bfs_roll_once(&e->roll), -ECANCELED);
        char id[BFS_ROLL_ID_MAX];
        snprintf(id, sizeof id, "%s", h.roll_id);
        char *why = roll_error(e);
        assert_non_null(why);
        if (!strstr(why, name))
            fail_msg("%s: the roll error does not name the step: %s", name, why);
        free(why);
        struct mroll m;
        model_roll(e, id, 0, n - 1, SPLIT_MAX, &m);
        assert_int_equal(m.n, bm.n);
        char mkey[256], mfile[BFS_ROLL_ID_MAX + 32];
        assert_int_equal(bfs_ledger_manifest_key("t", id, mkey, sizeof mkey), 0);
        snprintf(mfile, sizeof mfile, "%s-manifest.avro", id);

        /* what the crash left */
        char pending[BFS_ROLL_ID_MAX];
        int committed = step == BFS_ROLL_AFTER_COMMIT;
        int logged = committed || step == BFS_ROLL_AFTER_LOG;
        int manifest = logged || step == BFS_ROLL_AFTER_MANIFEST;
        assert_int_equal(bfs_catalog_roll_pending(e->cat, pending, NULL), committed ? -ENOENT : 0);
        if (!committed) {
            assert_string_equal(pending, id);
            assert_int_equal(
                tenv_sql_int(e, "SELECT count(*) FROM buffer_logs WHERE roll_id IS NOT NULL"), n);
            assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM archived_files"), 0);
            assert_int_equal(buffer_uploads(e), n);
            assert_int_equal(tenv_log_pos(e), 0);
        } else {
            assert_int_equal(tenv_sql_int(e, "SELECT count(*) FROM archived_files"), m.n);
            assert_int_equal(buffer_uploads(e), 0);
            assert_int_equal(tenv_log_pos(e), 1);
        }
        assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "manifests/"), manifest);
        assert_int_equal(memstore_count(e->ms, BFS_LEDGER_PREFIX "log/"), logged);
        assert_int_equal(tlog_count_roll(e->ms, id, NULL), logged);
        char files[64][128];
        size_t nf = tenv_work_files(e, files, 64);
        /* The roll's index spool (its index rows until the manifest is
         * written) stays as a crash leaves it: only under the roll's name. */
        char spool[160];
        snprintf(spool, sizeof spool, "%s-index.spool", id);
        for (size_t i = 0; i < nf && nf <= 64;) {
            const char *dot = strrchr(files[i], '.');
            if (dot && strcmp(dot, ".spool") == 0) {
                assert_string_equal(files[i], spool);
                memmove(files[i], files[i + 1], (nf - i - 1) * sizeof files[0]);
                nf--;
            } else {
                i++;
            }
        }
        struct bfs_buf b = {0};
        char path[512];
        switch (step) {
        case BFS_ROLL_AFTER_CLAIM:
            assert_int_equal(data_objects(e), 0);
            assert_int_equal(nf, 0);
            break;
        case BFS_ROLL_MID_BUILD: {
            /* one partial archive: the header and the first row */
            assert_int_equal(data_objects(e), 0);
            assert_int_equal(nf, 1);
            char want[256];
            snprintf(want, sizeof want, "%s-0.avro", id);
            assert_string_equal(files[0], want);
            snprintf(path, sizeof path, "%s/%s", e->work, files[0]);
            read_whole(path, &b);
            size_t first = m.a[0].idx[0].start; /* battle/P1/u0: one row */
            assert_int_equal(b.len, first + m.a[0].idx[0].length);
            assert_true(b.len < m.a[0].bytes.len);
            assert_memory_equal(b.data, m.a[0].bytes.data, b.len);
            break;
        }
        case BFS_ROLL_AFTER_BUILD:
        case BFS_ROLL_MID_UPLOAD:
            /* whole archives not put yet; after-build: all of them, mid-upload:
             * the first is put (and its file removed), the build may have
             * written more */
            assert_int_equal(data_objects(e), step == BFS_ROLL_MID_UPLOAD);
            if (step == BFS_ROLL_AFTER_BUILD)
                assert_int_equal(nf, m.n);
            else
                assert_true(nf < m.n);
            for (size_t i = 0; i < nf; i++) {
                size_t k = m.n;
                for (size_t j = step == BFS_ROLL_MID_UPLOAD; j < m.n; j++) {
                    char want[256];
                    snprintf(want, sizeof want, "%s-%zu.avro", id, j);
                    if (strcmp(files[i], want) == 0)
                        k = j;
                }
                if (k == m.n)
                    fail_msg("%s: unexpected work file %s", name, files[i]);
                snprintf(path, sizeof path, "%s/%s", e->work, files[i]);
                read_whole(path, &b);
                assert_int_equal(b.len, m.a[k].bytes.len);
                assert_memory_equal(b.data, m.a[k].bytes.data, b.len);
            }
            if (step == BFS_ROLL_MID_UPLOAD) {
                const struct memobj *o = memstore_find(e->ms, m.a[0].key);
                assert_non_null(o);
                assert_int_equal(o->len, m.a[0].bytes.len);
                assert_memory_equal(o->data, m.a[0].bytes.data, o->len);
            }
            break;
        case BFS_ROLL_AFTER_UPLOAD:
        case BFS_ROLL_BEFORE_COMMIT:
            /* every archive put, no manifest yet */
            assert_int_equal(data_objects(e), m.n);
            assert_int_equal(nf, 0);
            break;
        default:
            /* every archive put and the manifest (and the log entry, and the
             * local commit); its local copy is left, as a crash leaves it */
            assert_int_equal(data_objects(e), m.n);
            assert_int_equal(nf, 1);
            assert_string_equal(files[0], mfile);
            snprintf(path, sizeof path, "%s/%s", e->work, files[0]);
            read_whole(path, &b);
            const struct memobj *o = memstore_find(e->ms, mkey);
            assert_non_null(o);
            assert_int_equal(o->len, b.len);
            assert_memory_equal(o->data, b.data, b.len);
            break;
        }
        bfs_buf_free(&b);

        /* restart after a crash: the catalog and the ledger opened again, the
         * lease not released; no fault; recovery */
        hook_done(&h, e);
        tenv_crash_reopen(e);
        unsigned puts_before = e->ms->puts;
        assert_int_equal(bfs_roller_recover(&e->roll), 0);
        /* A roll in the log is committed when the lease is taken again (its
         * fence reads the log), before recovery: not a roll of this run. */
        assert_int_equal(e->stats.rolls, logged ? 0 : 1);
        if (logged) /* committed by reading the log: nothing put again */
            assert_int_equal(e->ms->puts, puts_before);
        check_roll(e, id, &m, 0);
        assert_int_equal(buffer_uploads(e), 0);
        check_datasets(e, n);
        purge_all(e);
        check_datasets(e, n);
        same_as_uninterrupted(e, id, base, bh.roll_id);
        /* The log: the roll once, and the fence the restarted mount puts when
         * it takes its unreleased lease back (epoch 2): after the roll if the
         * crashed mount had logged it, else before the recovered roll. */
        struct tlog *t;
        size_t n_log = tlog_read(e->ms, &t);
        assert_int_equal(n_log, 2);
        assert_int_equal(tlog_count_roll(e->ms, id, NULL), 1);
        assert_int_equal(tlog_count_fences(e->ms), 1);
        if (logged) {
            assert_string_equal(t[0].roll_id, id);
            assert_int_equal(t[0].epoch, 1);
            assert_true(t[1].fence);
            assert_int_equal(t[1].epoch, 2);
        } else {
            assert_true(t[0].fence);
            assert_string_equal(t[0].node, "t");
            assert_int_equal(t[0].epoch, 2);
            assert_string_equal(t[1].roll_id, id);
            assert_int_equal(t[1].epoch, 2);
        }
        free(t);
        assert_int_equal(tenv_log_pos(e), n_log);
        int64_t epoch = 0;
        assert_int_equal(bfs_catalog_node_epoch(e->cat, "t", &epoch), 0);
        assert_int_equal(epoch, 2);

        /* and rolls go on */
        tenv_upload(e, "battle", P1, "u1", 77, 300);
        hook_init(&h, e, -1, 0);
        assert_int_equal(bfs_roll_once(&e->roll), 0);
        assert_string_not_equal(h.roll_id, id);
        struct mroll m2;
        model_roll(e, h.roll_id, n, n, SPLIT_MAX, &m2);
        check_roll(e, h.roll_id, &m2, m.n);
        check_datasets(e, e->n_up);
        assert_int_equal(tlog_count_fences(e->ms), 1);
        assert_int_equal(tenv_log_pos(e), 3);
        assert_int_equal(tlog_count_roll(e->ms, h.roll_id, NULL), 1);
        hook_done(&h, e);
        model_free(&m2);
        model_free(&m);
        tenv_free(e);
    }
    model_free(&bm);
    hook_done(&bh, base);
    tenv_free(base);
}

/* Recovery with no pending roll empties the work directory of what an
 * interrupted roll left (archives, its manifest, a log entry or lease being
 * put) and leaves other files. */
static void test_recover_cleans_work_dir(void **state)
{
    (void)state;
    struct tenv *e = tenv_new(0);
    static const char *const left[] = {
        "20251218T130000Z-1-0.avro",
        "t-20251218T130000Z-0123abcd-1-0.avro",
        "t-20251218T130000Z-0123abcd-1-manifest.avro",
        "t-20251218T130000Z-0123abcd-1-index.spool",
    };
    char path[256];
    for (size_t i = 0; i < sizeof left / sizeof left[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", e->work, left[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "x", 1), 1);
        close(fd);
    }
    /* not the roll's: any other file, and the ledger's puts in progress */
    const char *keep[] = {"notes.txt", "ledger-1234.tmp"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", e->work, keep[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        assert_true(fd >= 0);
        close(fd);
    }
    assert_int_equal(bfs_roller_recover(&e->roll), 0);
    char files[8][128];
    assert_int_equal(tenv_work_files(e, files, 8), 2);
    for (size_t i = 0; i < 2; i++)
        assert_true(strcmp(files[i], keep[0]) == 0 || strcmp(files[i], keep[1]) == 0);
    assert_int_equal(e->stats.rolls, 0);
    tenv_free(e);
}

/* The roll thread on its deps: on-demand rolls, a failing store, stop. */
static void test_roller_thread(void **state)
{
    (void)state;
    struct tenv *e = tenv_new(1);
    populate(e, 31);
    struct hook h;
    hook_init(&h, e, -1, 0);
    struct bfs_roller *r;
    assert_int_equal(bfs_roller_start(&e->roll, &r), 0);
    assert_int_equal(bfs_roller_roll_now(r), 0);
    struct mroll m;
    model_roll(e, h.roll_id, 0, e->n_up - 1, e->roll.archive_max_bytes, &m);
    check_roll(e, h.roll_id, &m, 0);
    tenv_upload(e, "battle", P1, "u1", 10, 400);
    bfs_roller_notify(r);
    pthread_mutex_lock(&e->ms->lock);
    e->ms->put_rc = -EIO;
    pthread_mutex_unlock(&e->ms->lock);
    assert_int_equal(bfs_roller_roll_now(r), -EIO);
    bfs_roller_stop(r);
    assert_int_equal(buffer_uploads(e), 1);
    check_datasets(e, e->n_up);
    model_free(&m);
    hook_done(&h, e);
    tenv_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roll_layout),
        cmocka_unit_test(test_roll_split),
        cmocka_unit_test(test_roll_many_chunks),
        cmocka_unit_test(test_fault_points_in_order),
        cmocka_unit_test(test_put_fails),
        cmocka_unit_test(test_crash_at_each_step),
        cmocka_unit_test(test_recover_cleans_work_dir),
        cmocka_unit_test(test_roller_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
