/* roller.h - the background roll of the hot buffer into store archives. */
#ifndef BATTLEFS_ROLLER_H
#define BATTLEFS_ROLLER_H

struct bfs_ctx;
struct bfs_roller;

/* Complete an unfinished roll left by a crash (same rows, bytes, keys).
 * Called at mount before bfs_roller_start. 0 or -errno. */
int bfs_roller_recover(struct bfs_ctx *ctx);

/* Start the roll thread (interval, roll_bytes and on-demand rolls). */
int bfs_roller_start(struct bfs_ctx *ctx, struct bfs_roller **out);
/* Tell the roller the buffer grew (checks roll_bytes). */
void bfs_roller_notify(struct bfs_roller *r);
/* Roll now and wait until it has committed. 0 (also when the buffer was
 * empty) or -EIO (reason logged, in .battlefs/errors and last_roll_error). */
int bfs_roller_roll_now(struct bfs_roller *r);
void bfs_roller_stop(struct bfs_roller *r);

/* One roll, synchronously, in the calling thread (used by the thread and tests). */
int bfs_roll_once(struct bfs_ctx *ctx);

#endif
