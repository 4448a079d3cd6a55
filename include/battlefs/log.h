/* log.h - the one logging helper of battlefs.
 *
 * Lines go to stderr as "battlefs: <UTC time> LEVEL: message" (or to syslog). The level names are
 * ERROR, WARN, INFO and DEBUG; tests treat any ERROR or WARN line they did not
 * expect as a failure, so use them for things an operator must look at.
 */
#ifndef BATTLEFS_LOG_H
#define BATTLEFS_LOG_H

enum bfs_log_level {
    BFS_LOG_ERROR = 0,
    BFS_LOG_WARN = 1,
    BFS_LOG_INFO = 2,
    BFS_LOG_DEBUG = 3,
};

/* Set the most verbose level that is printed (default BFS_LOG_INFO). */
void bfs_log_set_level(enum bfs_log_level level);
enum bfs_log_level bfs_log_get_level(void);

/* Send lines to syslog (daemon facility) instead of stderr: used when the
 * daemon runs in the background, where stderr is /dev/null. */
void bfs_log_to_syslog(int on);

void bfs_log(enum bfs_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define bfs_error(...) bfs_log(BFS_LOG_ERROR, __VA_ARGS__)
#define bfs_warn(...)  bfs_log(BFS_LOG_WARN, __VA_ARGS__)
#define bfs_info(...)  bfs_log(BFS_LOG_INFO, __VA_ARGS__)
#define bfs_debug(...) bfs_log(BFS_LOG_DEBUG, __VA_ARGS__)

#endif
