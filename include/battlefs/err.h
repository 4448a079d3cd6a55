/* err.h - the one way a failure's reason travels.
 *
 * A function that can fail returns 0 or a negative errno, as everywhere in
 * battlefs. When its caller needs to know more than the errno (what was
 * wrong, in words a user reads), it also takes a struct bfs_err *: on failure
 * the function sets it to the same code and the reason, e.g.
 *     {-EINVAL, "block 3 at byte 5120: sync marker does not match the header"}.
 * The pointer may be NULL: the caller wants the errno only.
 *
 * Who sets it: the module that knows what went wrong (the OCF parser, the
 * validator, the catalog, a store backend, the options parser). A caller that
 * adds context prefixes it (bfs_err_prefix: "put battle/...: HTTP 403 ..."),
 * keeping the code. Who logs it: the module that decides the outcome (ingest:
 * a rejection; the roller: a failed roll; main.c: a refused start), once; the
 * functions that only report a reason do not log it (docs/design.md, "Errors").
 *
 * msg is always NUL-terminated; a longer reason is cut at BFS_ERR_MSG_MAX - 1
 * bytes. An empty msg means "nothing more than the errno".
 */
#ifndef BATTLEFS_ERR_H
#define BATTLEFS_ERR_H

#include <stdarg.h>

/* Room for a reason that names two paths (a symbolic link and its target). */
#define BFS_ERR_MSG_MAX 1024

struct bfs_err {
    int code;                  /* 0, or the negative errno the function returned */
    char msg[BFS_ERR_MSG_MAX]; /* the reason, for people; "" when none was given */
};

/* Set e to code and the formatted reason (fmt NULL: no reason, msg ""), and
 * return code, so a failure reads `return bfs_err_set(err, -EINVAL, "...")`.
 * e may be NULL: then only code is returned. */
int bfs_err_set(struct bfs_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* bfs_err_set with a va_list: for a module's own printf-like failure helper. */
int bfs_err_vset(struct bfs_err *e, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Put "<formatted context>: " in front of e's reason (just the context when
 * the reason is empty); the code is kept. Returns e->code (0 for a NULL e). */
int bfs_err_prefix(struct bfs_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Back to no error: code 0, msg "". NULL is fine. */
void bfs_err_clear(struct bfs_err *e);

#endif
