/* log.c - the logging helper: one line per message to stderr. */
#include "battlefs/log.h"

#include "battlefs/names.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static atomic_int log_level = BFS_LOG_INFO;
static atomic_int log_syslog = 0;

void bfs_log_to_syslog(int on)
{
    if (on)
        openlog("battlefs", LOG_PID, LOG_DAEMON);
    atomic_store(&log_syslog, on);
}

void bfs_log_set_level(enum bfs_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum bfs_log_level bfs_log_get_level(void)
{
    return (enum bfs_log_level)atomic_load(&log_level);
}

void bfs_log(enum bfs_log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if ((int)level > atomic_load(&log_level))
        return;
    char raw[2048], msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    /* One message on one line, and no terminal escapes from an upload's
     * name or metadata, whatever it contains. */
    bfs_escape_ctl(msg, sizeof msg, raw);
    if (atomic_load(&log_syslog)) {
        static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
        syslog(prio[level], "%s: %s", names[level], msg);
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line: stdio locks the stream, so lines never interleave. */
    fprintf(stderr, "battlefs: %s.%03ldZ %s: %s\n", when, ts.tv_nsec / 1000000L, names[level], msg);
}
