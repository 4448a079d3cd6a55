/* test_metrics.c - metrics.h: histograms, the exposition text, -o metrics
 * addresses and binding. (Serving is tested on a real mount:
 * tests/integration/test_metrics.py.) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "battlefs/metrics.h"
#include "battlefs/stats.h"

static char *render(struct bfs_stats *s, const struct bfs_metrics_gauges *g)
{
    struct bfs_buf b = {0};
    assert_int_equal(bfs_metrics_render(s, g, &b), 0);
    assert_int_equal(bfs_buf_append(&b, "", 1), 0);
    return (char *)b.data;
}

static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    fail_msg("no line \"%s\" in:\n%s", line, text);
}

/* Every counter of the stats as _total, the gauges, the info line. */
static void test_render_counters_and_gauges(void **state)
{
    (void)state;
    struct bfs_stats s;
    bfs_stats_init(&s);
    bfs_stats_add(&s, uploads_ingested, 12);
    bfs_stats_add(&s, uploads_rejected, 2);
    bfs_stats_add(&s, rolls, 3);
    bfs_stats_add(&s, store_get_requests, 4);
    bfs_stats_add(&s, store_get_bytes, 4096);
    bfs_stats_add(&s, store_put_requests, 5);
    bfs_stats_add(&s, store_put_bytes, 123456789012ull);
    bfs_stats_add(&s, cache_hits, 6);
    bfs_stats_add(&s, cache_misses, 7);
    bfs_stats_add(&s, manifests_loaded, 8);
    bfs_stats_add(&s, refreshes, 9);
    atomic_store(&s.log_position, 42);
    atomic_store(&s.fenced, 1);
    s.read_only = 0;
    snprintf(s.node, sizeof s.node, "web-1");
    bfs_stats_set_roll_error(&s, "roll x: put y: Input/output error");
    const struct bfs_metrics_gauges g = {
        .buffer_uploads = 10, .buffer_bytes = 2048, .archived_files = 11, .oldest_upload_age = 61};
    char *t = render(&s, &g);
    assert_line(t, "# TYPE battlefs_info gauge");
    assert_line(t, "battlefs_info{node=\"web-1\",version=\"" BFS_VERSION "\"} 1");
    assert_line(t, "# TYPE battlefs_uploads_ingested_total counter");
    assert_line(t, "battlefs_uploads_ingested_total 12");
    assert_line(t, "battlefs_uploads_rejected_total 2");
    assert_line(t, "battlefs_rolls_total 3");
    assert_line(t, "battlefs_store_get_requests_total 4");
    assert_line(t, "battlefs_store_get_bytes_total 4096");
    assert_line(t, "battlefs_store_put_requests_total 5");
    assert_line(t, "battlefs_store_put_bytes_total 123456789012");
    assert_line(t, "battlefs_cache_hits_total 6");
    assert_line(t, "battlefs_cache_misses_total 7");
    assert_line(t, "battlefs_manifests_loaded_total 8");
    assert_line(t, "battlefs_refreshes_total 9");
    assert_line(t, "# TYPE battlefs_buffer_uploads gauge");
    assert_line(t, "battlefs_buffer_uploads 10");
    assert_line(t, "battlefs_buffer_bytes 2048");
    assert_line(t, "battlefs_buffer_oldest_upload_age_seconds 61");
    assert_line(t, "battlefs_archived_files 11");
    assert_line(t, "battlefs_log_position 42");
    assert_line(t, "battlefs_fenced 1");
    assert_line(t, "battlefs_read_only 0");
    assert_line(t, "battlefs_last_roll_failed 1");
    assert_line(t, "battlefs_last_refresh_failed 0");
    /* every line is a comment or "name[{labels}] value", and ends in \n */
    for (char *line = t; *line; line = strchr(line, '\n') + 1) {
        assert_true(strchr(line, '\n') != NULL);
        assert_true(line[0] == '#' || strncmp(line, "battlefs_", 9) == 0);
    }
    free(t);
    bfs_stats_destroy(&s);
}

/* Buckets are cumulative "le" bounds, +Inf equals _count, _sum in seconds. */
static void test_histogram(void **state)
{
    (void)state;
    struct bfs_stats s;
    bfs_stats_init(&s);
    bfs_hist_observe(&s.close_seconds, 0.0001); /* first bucket */
    bfs_hist_observe(&s.close_seconds, 0.001);  /* on a bound: that bucket (le) */
    bfs_hist_observe(&s.close_seconds, 2);      /* 2.5 */
    bfs_hist_observe(&s.close_seconds, 5000);   /* beyond every bound: +Inf */
    bfs_hist_observe(&s.close_seconds, -1);     /* counts as 0 */
    bfs_hist_observe(&s.roll_seconds, 0.3);
    const struct bfs_metrics_gauges g = {0};
    char *t = render(&s, &g);
    assert_line(t, "# TYPE battlefs_upload_close_seconds histogram");
    assert_line(t, "battlefs_upload_close_seconds_bucket{le=\"0.0005\"} 2");
    assert_line(t, "battlefs_upload_close_seconds_bucket{le=\"0.001\"} 3");
    assert_line(t, "battlefs_upload_close_seconds_bucket{le=\"1\"} 3");
    assert_line(t, "battlefs_upload_close_seconds_bucket{le=\"2.5\"} 4");
    assert_line(t, "battlefs_upload_close_seconds_bucket{le=\"1800\"} 4");
    assert_line(t, "battlefs_upload_close_seconds_bucket{le=\"+Inf\"} 5");
    assert_line(t, "battlefs_upload_close_seconds_count 5");
    assert_line(t, "battlefs_upload_close_seconds_sum 5002.001100000");
    assert_line(t, "battlefs_roll_duration_seconds_bucket{le=\"0.25\"} 0");
    assert_line(t, "battlefs_roll_duration_seconds_bucket{le=\"0.5\"} 1");
    assert_line(t, "battlefs_roll_duration_seconds_count 1");
    assert_line(t, "battlefs_store_get_seconds_count 0");
    assert_line(t, "battlefs_store_put_seconds_bucket{le=\"+Inf\"} 0");
    /* the bounds are increasing */
    for (size_t i = 1; i < BFS_HIST_BOUNDS; i++)
        assert_true(bfs_hist_bounds[i] > bfs_hist_bounds[i - 1]);
    free(t);
    bfs_stats_destroy(&s);
}

/* A label value escapes backslash, double quote and newline. */
static void test_label_escaping(void **state)
{
    (void)state;
    struct bfs_stats s;
    bfs_stats_init(&s);
    snprintf(s.node, sizeof s.node, "a\"b\\c\nd");
    const struct bfs_metrics_gauges g = {0};
    char *t = render(&s, &g);
    assert_line(t, "battlefs_info{node=\"a\\\"b\\\\c\\nd\",version=\"" BFS_VERSION "\"} 1");
    free(t);
    bfs_stats_destroy(&s);
}

static void parse_ok(const char *spec, const char *host, unsigned port)
{
    char h[64];
    unsigned p = 0;
    struct bfs_err e;
    assert_int_equal(bfs_metrics_addr_parse(spec, h, sizeof h, &p, &e), 0);
    assert_string_equal(h, host);
    assert_int_equal(p, port);
}

static void parse_bad(const char *spec, const char *msg)
{
    char h[64];
    unsigned p = 0;
    struct bfs_err e;
    assert_int_equal(bfs_metrics_addr_parse(spec, h, sizeof h, &p, &e), -EINVAL);
    if (!strstr(e.msg, msg))
        fail_msg("\"%s\": \"%s\" does not say \"%s\"", spec, e.msg, msg);
}

static void test_addr_parse(void **state)
{
    (void)state;
    parse_ok("9100", "", 9100);
    parse_ok(":9100", "", 9100);
    parse_ok("0.0.0.0:1", "0.0.0.0", 1);
    parse_ok("metrics.example:65535", "metrics.example", 65535);
    parse_ok("[::1]:9100", "::1", 9100);
    parse_ok("[::]:80", "::", 80);
    parse_bad("", "bad -o metrics=");
    parse_bad("host:", "no port");
    parse_bad(":", "no port");
    parse_bad("0", "port 0 is not 1-65535");
    parse_bad(":65536", "port 65536 is not 1-65535");
    parse_bad("h:99999999999999999999", "is not 1-65535");
    parse_bad("h:-1", "is not 1-65535");
    parse_bad("h:80x", "is not 1-65535");
    parse_bad("::1:9100", "an IPv6 address goes in []");
    parse_bad("[::1]9100", "[ADDRESS]:PORT");
    parse_bad("[::1", "[ADDRESS]:PORT");
    char longhost[400];
    memset(longhost, 'h', 300);
    snprintf(longhost + 300, sizeof longhost - 300, ":80");
    parse_bad(longhost, "host name too long");
}

/* bind listens where asked; a port in use and a host that does not
 * resolve fail with the reason. */
static void test_bind(void **state)
{
    (void)state;
    struct bfs_err e;
    int fd = bfs_metrics_bind("127.0.0.1:0", &e); /* port 0 is refused before binding */
    assert_int_equal(fd, -EINVAL);
    /* an ephemeral port, found by binding one */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(probe, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(probe, (struct sockaddr *)&a, &al), 0);
    assert_int_equal(listen(probe, 1), 0);
    char spec[32];
    snprintf(spec, sizeof spec, "%u", ntohs(a.sin_port));
    fd = bfs_metrics_bind(spec, &e);
    assert_int_equal(fd, -EADDRINUSE);
    assert_non_null(strstr(e.msg, "cannot listen on 127.0.0.1 port"));
    assert_non_null(strstr(e.msg, "Address already in use"));
    close(probe);
    fd = bfs_metrics_bind(spec, &e);
    assert_true(fd >= 0);
    close(fd);
    assert_true(bfs_metrics_bind("no-such-host.invalid:9100", &e) < 0);
    assert_non_null(strstr(e.msg, "cannot resolve host no-such-host.invalid"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_counters_and_gauges),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_bind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
