/* walbuf.h - an SQLite VFS that gathers consecutive writes into one system call.
 *
 * SQLite writes each WAL frame with two pwrite(2) calls (its 24-byte header,
 * then the page), so a commit of an upload (about 15 frames) is about 30
 * system calls, each a partial-page write into the page cache; a checkpoint
 * writes the database a page a call. This VFS wraps the default one: files
 * opened as a WAL or a main database gather consecutive writes in a buffer
 * and write them at once (124 KiB at most: the unix VFS writes no more in
 * one call). The buffer is written before any other operation on that file
 * (a read, a sync, a truncate, its size, a file control, a lock or unlock, a
 * shared-memory lock or barrier, a close), so SQLite and every lock holder see
 * the file as it was written, and before every xSync, so what SQLite syncs is
 * on disk: durable at the same points as before. It needs what the catalog
 * does: synchronous=FULL on every connection that writes, so that a commit
 * and a checkpoint sync before they publish (in the WAL index) what they
 * wrote. Journals and temporary files are the default VFS's own.
 * docs/design.md, "Group commit".
 */
#ifndef BATTLEFS_WALBUF_H
#define BATTLEFS_WALBUF_H

/* Register the VFS (once; thread-safe) and return its name for
 * sqlite3_open_v2, or NULL if it could not be registered (then use the
 * default VFS). */
const char *bfs_walbuf_vfs(void);

#endif
