/* test_progress.c - progress.h: the throttle and the text of a report; its
 * publication in .battlefs/stats ("progress"), also by a roll while it runs. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "battlefs/catalog.h"
#include "battlefs/progress.h"
#include "battlefs/roller.h"
#include "battlefs/stats.h"
#include "testenv.h"

/* At most one report every `every` seconds, none before `every` seconds. */
static void test_throttle(void **state)
{
    (void)state;
    struct bfs_progress p;
    bfs_progress_begin(&p, "roll r1", BFS_PROGRESS_BYTES, NULL, 512u << 20, 5.0, 100.0);
    assert_int_equal(bfs_progress_update(&p, 1u << 20, 101.0), 0);
    assert_int_equal(bfs_progress_update(&p, 2u << 20, 104.9), 0);
    assert_int_equal(bfs_progress_update(&p, 120u << 20, 105.0), 1);
    assert_int_equal(bfs_progress_update(&p, 121u << 20, 106.0), 0);
    assert_int_equal(bfs_progress_update(&p, 200u << 20, 109.9), 0);
    assert_int_equal(bfs_progress_update(&p, 256u << 20, 110.0), 1);
    assert_int_equal(p.done, 256u << 20);
    /* a million updates within one period: no report */
    int reports = 0;
    for (unsigned i = 0; i < 1000000; i++)
        reports += bfs_progress_update(&p, (256u << 20) + i, 110.0 + 4.9 * i / 1000000);
    assert_int_equal(reports, 0);
}

static void test_text(void **state)
{
    (void)state;
    struct bfs_progress p;
    char t[160];
    bfs_progress_begin(&p, "roll r1", BFS_PROGRESS_BYTES, NULL, 512u << 20, 5.0, 100.0);
    bfs_progress_update(&p, 256u << 20, 110.0);
    bfs_progress_text(&p, 110.0, t, sizeof t);
    assert_string_equal(t, "roll r1: 256.0 MiB of 512.0 MiB (50%), 25.6 MiB/s, 10 s");
    bfs_progress_begin(&p, "refresh", BFS_PROGRESS_ITEMS, "log entries", 0, 2.0, 0.0);
    bfs_progress_update(&p, 1200, 2.0);
    bfs_progress_text(&p, 4.0, t, sizeof t);
    assert_string_equal(t, "refresh: 1200 log entries, 300/s, 4 s");
    bfs_progress_begin(&p, "fsck", BFS_PROGRESS_ITEMS, "archives", 40, 1.0, 0.0);
    p.done = 10;
    bfs_progress_text(&p, 5.0, t, sizeof t);
    assert_string_equal(t, "fsck: 10 of 40 archives (25%), 2/s, 5 s");
    /* at the start: no rate yet, and a cut line stays a C string */
    bfs_progress_begin(&p, "x", BFS_PROGRESS_ITEMS, NULL, 0, 1.0, 7.0);
    bfs_progress_text(&p, 7.0, t, sizeof t);
    assert_string_equal(t, "x: 0 items, 0/s, 0 s");
    bfs_progress_text(&p, 7.0, t, 4);
    assert_string_equal(t, "x: ");
}

static void stats_json(struct bfs_stats *s, char *out, size_t cap)
{
    struct bfs_buf b = {0};
    const struct bfs_catalog_counts c = {0};
    assert_int_equal(bfs_stats_json(s, &c, &b), 0);
    assert_int_equal(bfs_buf_append(&b, "", 1), 0);
    snprintf(out, cap, "%s", (char *)b.data);
    bfs_buf_free(&b);
}

/* start/report/end publish the work in the stats' "progress" list. */
static void test_stats(void **state)
{
    (void)state;
    struct bfs_stats s;
    bfs_stats_init(&s);
    char j[2048];
    stats_json(&s, j, sizeof j);
    assert_non_null(strstr(j, ", \"progress\": []}\n"));
    struct bfs_progress roll, ref;
    bfs_progress_start(&roll, &s, BFS_WORK_ROLL, "roll r1: build", BFS_PROGRESS_BYTES, NULL, 900);
    bfs_progress_report(&roll, 300);
    stats_json(&s, j, sizeof j);
    assert_non_null(strstr(j, ", \"progress\": [{\"what\": \"roll r1: build\", \"unit\": "
                              "\"bytes\", \"done\": 300, \"total\": 900}]}\n"));
    bfs_progress_start(&ref, &s, BFS_WORK_REFRESH, "refresh: \"log\"", BFS_PROGRESS_ITEMS,
                       "log entries", 0);
    bfs_progress_report(&ref, 7);
    stats_json(&s, j, sizeof j);
    assert_non_null(strstr(j,
                           "\"progress\": [{\"what\": \"roll r1: build\", \"unit\": \"bytes\", "
                           "\"done\": 300, \"total\": 900}, {\"what\": \"refresh: \\\"log\\\"\", "
                           "\"unit\": \"log entries\", \"done\": 7, \"total\": 0}]}"));
    bfs_progress_end(&roll);
    bfs_progress_end(&roll); /* twice: nothing more */
    stats_json(&s, j, sizeof j);
    assert_null(strstr(j, "roll r1"));
    assert_non_null(strstr(j, "\"done\": 7"));
    bfs_progress_end(&ref);
    stats_json(&s, j, sizeof j);
    assert_non_null(strstr(j, ", \"progress\": []}\n"));
    bfs_stats_destroy(&s);
}

/* A roll publishes its build while it runs: seen from its first put. */
struct seen {
    struct tenv *e;
    char json[2048];
    int n;
    int archives_only; /* only at a request for an archive (not "_battlefs/...") */
};

/* The store's hook (on_put, on_get): the stats at the first request. */
static void capture(void *arg, const char *key)
{
    struct seen *s = arg;
    if (s->n || (s->archives_only && strncmp(key, "_battlefs/", 10) == 0))
        return;
    s->n = 1;
    stats_json(&s->e->stats, s->json, sizeof s->json);
}

static void test_roll_publishes_its_progress(void **state)
{
    (void)state;
    struct tenv *e = tenv_new(0);
    tenv_upload(e, "battle", "2025-12-18", "a", 300, 1);
    tenv_upload(e, "battle", "2025-12-18", "b", 200, 2);
    struct seen s = {.e = e, .archives_only = 1};
    e->ms->on_put = capture;
    e->ms->on_put_arg = &s;
    assert_int_equal(bfs_roll_once(&e->roll), 0);
    e->ms->on_put = NULL;
    print_message("%s", s.json);
    assert_non_null(strstr(s.json, "\"progress\": [{\"what\": \"roll "));
    assert_non_null(strstr(s.json, ": build\", \"unit\": \"bytes\", \"done\": 500, "
                                   "\"total\": 500}]"));
    char j[2048];
    stats_json(&e->stats, j, sizeof j);
    assert_non_null(strstr(j, ", \"progress\": []}\n"));
    tenv_free(e);
}

/* Reading the store's log publishes it too (seen from the first ranged GET
 * of a new mount's refresh: the header of a partition's first archive). */
static void test_refresh_publishes_its_progress(void **state)
{
    (void)state;
    struct tenv *a = tenv_new(0);
    for (unsigned i = 0; i < 3; i++) {
        tenv_upload(a, "battle", "2025-12-18", "a", 100, i);
        assert_int_equal(bfs_roll_once(&a->roll), 0);
    }
    const struct tenv_opts ro = {.ms = a->ms, .node = "r", .read_only = 1};
    struct tenv *r = tenv_new_opts(&ro);
    struct seen s = {.e = r};
    a->ms->on_get = capture;
    a->ms->on_get_arg = &s;
    tenv_refresh(r);
    a->ms->on_get = NULL;
    print_message("%s", s.json);
    assert_non_null(strstr(s.json, "\"progress\": [{\"what\": \"refresh: read the store's log\", "
                                   "\"unit\": \"log entries\", \"done\": 0, \"total\": 0}]"));
    char j[2048];
    stats_json(&r->stats, j, sizeof j);
    assert_non_null(strstr(j, ", \"progress\": []}\n"));
    assert_int_equal(tenv_log_pos(r), 3);
    tenv_free(r);
    tenv_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_throttle),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_roll_publishes_its_progress),
        cmocka_unit_test(test_refresh_publishes_its_progress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
