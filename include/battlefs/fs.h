/* fs.h - the FUSE operations: path routing over incoming/, the data tree and .battlefs/. */
#ifndef BATTLEFS_FS_H
#define BATTLEFS_FS_H

struct bfs_ctx;
struct fuse_operations;

/* The operations table (fuse_new's private data must be the struct bfs_ctx). */
const struct fuse_operations *bfs_fs_operations(void);

/* Create the in-memory state of incoming/ (ctx->fs) and empty the spool
 * directory of uploads a previous daemon never closed. 0 or -errno. */
int bfs_fs_init(struct bfs_ctx *ctx);
void bfs_fs_destroy(struct bfs_ctx *ctx);

#endif
