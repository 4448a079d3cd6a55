/* test_upload.c - every transition of the upload lifecycle (upload.h), without FUSE.
 *
 * Each test plays the sequence of FUSE requests that a real client pattern
 * makes (cp, a shell group, fork, dup, rsync's rename, two writers of one
 * name) and checks what fs.c is told to do at each step. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>

#include "battlefs/upload.h"

#define MAX (1u << 20)

static void write_ok(struct bfs_up *u, struct bfs_up_desc *d, uint64_t end)
{
    enum bfs_up_action act;
    assert_int_equal(bfs_up_write_begin(u, end, MAX, &act), 0);
    assert_int_equal(act, BFS_UP_NONE);
    assert_int_equal(bfs_up_write_end(u, d, end, 0, &act), 0);
    assert_int_equal(act, BFS_UP_NONE);
}

static enum bfs_up_action flush(struct bfs_up *u, struct bfs_up_desc *d, bool by_opener, int *rc)
{
    *rc = 12345;
    enum bfs_up_action a = bfs_up_flush(u, d, by_opener, rc);
    if (a != BFS_UP_NONE)
        assert_int_equal(*rc, 0);
    return a;
}

/* cp: create, write, close (flush + release). Ingested at the flush. */
static void test_cp(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 100);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_INGEST);
    assert_int_equal(u.state, BFS_UP_INGESTING);
    assert_false(u.named);                                 /* it left incoming/ */
    assert_int_equal(bfs_up_ingested(&u, 0), BFS_UP_NONE); /* still open */
    assert_int_equal(u.state, BFS_UP_DONE);
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_FREE);
}

/* A rejected upload: every later flush of any duplicate returns its errno. */
static void test_rejected_result_repeats(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_INGEST);
    assert_int_equal(bfs_up_ingested(&u, -EINVAL), BFS_UP_NONE);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_NONE);
    assert_int_equal(rc, -EINVAL);
    assert_int_equal(flush(&u, &d, false, &rc), BFS_UP_NONE);
    assert_int_equal(rc, -EINVAL);
    enum bfs_up_action act;
    assert_int_equal(bfs_up_write_begin(&u, 20, MAX, &act), -EINVAL);
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_FREE);
}

/* `{ cat p1; cat p2; } > f`: the shell opens, closes its first descriptor
 * before anything is written, each cat (another process) writes and exits,
 * and the shell's last close ingests the whole file. */
static void test_shell_group(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_NONE); /* dup2 + close: nothing written */
    assert_int_equal(rc, 0);
    write_ok(&u, &d, 50);                                     /* cat p1 */
    assert_int_equal(flush(&u, &d, false, &rc), BFS_UP_NONE); /* cat p1 exits */
    assert_int_equal(rc, 0);
    assert_int_equal(u.state, BFS_UP_WRITING);
    write_ok(&u, &d, 120);                                     /* cat p2 */
    assert_int_equal(flush(&u, &d, false, &rc), BFS_UP_NONE);  /* cat p2 exits */
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_INGEST); /* the shell restores fd 1 */
    assert_int_equal(u.size, 120);
    assert_int_equal(bfs_up_ingested(&u, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_FREE);
}

/* fork (subprocess.run while the file is open): the child's exit is no
 * ingest; the parent writes on and its close ingests everything. */
static void test_fork_child_exits_first(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    write_ok(&u, &d, 40);                                     /* the child */
    assert_int_equal(flush(&u, &d, false, &rc), BFS_UP_NONE); /* the child exits */
    enum bfs_up_action act;
    assert_int_equal(bfs_up_write_begin(&u, 60, MAX, &act), 0); /* parent: no EBADF */
    assert_int_equal(bfs_up_write_end(&u, &d, 60, 0, &act), 0);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_INGEST);
    assert_int_equal(u.size, 60);
}

/* The opener closed first and a child holding a copy wrote on: ingested at
 * the release of the last reference, whose result nobody hears. */
static void test_last_release_ingests(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_NONE);  /* nothing written yet */
    write_ok(&u, &d, 30);                                     /* a child writes */
    assert_int_equal(flush(&u, &d, false, &rc), BFS_UP_NONE); /* and exits */
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_INGEST);
    assert_int_equal(bfs_up_ingested(&u, 0), BFS_UP_FREE);
}

/* dup: the first close ingests (its description is still open through the
 * duplicate); a flush of the duplicate meanwhile waits for the result. */
static void test_dup_flush_waits_for_ingest(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_INGEST);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_WAIT);
    assert_int_equal(flush(&u, &d, false, &rc), BFS_UP_WAIT);
    enum bfs_up_action act;
    assert_int_equal(bfs_up_write_begin(&u, 20, MAX, &act), -EBADF);
    /* A release during the ingest does not free it: the ingest holds it. */
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_ingested(&u, -EIO), BFS_UP_FREE);
}

/* Two descriptions joined on one upload (the second open did not
 * truncate): the last one closed by its opener ingests. */
static void test_two_descriptions(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc a, b;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &a, true);
    write_ok(&u, &a, 10);
    bfs_up_open(&u, &b, true);
    assert_int_equal(flush(&u, &a, true, &rc), BFS_UP_NONE); /* b is still writing */
    write_ok(&u, &b, 30);
    /* a's release is still in flight: a flushed by its opener counts as closed */
    assert_int_equal(flush(&u, &b, true, &rc), BFS_UP_INGEST);
    assert_int_equal(bfs_up_ingested(&u, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_release(&u, &a, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_release(&u, &b, 0), BFS_UP_FREE);
}

/* A reader of an upload in progress does not hold its ingest back. */
static void test_reader_does_not_count(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc w, r;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &w, true);
    bfs_up_open(&u, &r, false);
    write_ok(&u, &w, 10);
    assert_int_equal(flush(&u, &r, true, &rc), BFS_UP_NONE);
    assert_int_equal(flush(&u, &w, true, &rc), BFS_UP_INGEST);
    assert_int_equal(bfs_up_ingested(&u, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_release(&u, &w, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_release(&u, &r, 0), BFS_UP_FREE);
}

/* touch: an empty file closed is discarded, not ingested. */
static void test_empty_discarded(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_NONE);
    assert_int_equal(rc, 0);
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_FREE);
    assert_int_equal(u.state, BFS_UP_DISCARDED);
}

/* rsync: a held dot-file written and closed, then renamed to its real name
 * before (or after) the kernel's RELEASE arrives: ingested at the rename. */
static void test_held_rename_before_release(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, true);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_NONE); /* held */
    assert_int_equal(bfs_up_rename(&u, false), BFS_UP_INGEST);
    assert_int_equal(bfs_up_ingested(&u, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_FREE);
}

static void test_held_rename_after_release(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, true);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_NONE);
    assert_int_equal(bfs_up_release(&u, &d, 100), BFS_UP_NONE);
    assert_int_equal(u.state, BFS_UP_HELD);
    assert_false(bfs_up_expired(&u, 100 + 59, 60));
    assert_int_equal(bfs_up_rename(&u, true), BFS_UP_NONE); /* another dot name */
    assert_int_equal(bfs_up_rename(&u, false), BFS_UP_INGEST);
    assert_int_equal(bfs_up_ingested(&u, 0), BFS_UP_FREE);
}

/* A held file renamed while its writer still writes: ingested at that
 * writer's close, not at the rename. */
static void test_held_rename_while_writing(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, true);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    assert_int_equal(bfs_up_rename(&u, false), BFS_UP_NONE);
    write_ok(&u, &d, 20);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_INGEST);
}

/* Close, reopen, rename, write the rest, close: the reopen makes the file
 * active again, so the rename does not ingest half of it. */
static void test_held_reopen_then_rename(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc a, b;
    int rc;
    bfs_up_init(&u, true);
    bfs_up_open(&u, &a, true);
    write_ok(&u, &a, 10);
    assert_int_equal(flush(&u, &a, true, &rc), BFS_UP_NONE);
    bfs_up_open(&u, &b, true); /* before a's release */
    assert_int_equal(bfs_up_release(&u, &a, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_rename(&u, false), BFS_UP_NONE);
    write_ok(&u, &b, 20);
    assert_int_equal(flush(&u, &b, true, &rc), BFS_UP_INGEST);
    assert_int_equal(u.size, 20);
}

/* A held file closed and never renamed expires. */
static void test_held_expires(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    bfs_up_init(&u, true);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    assert_false(bfs_up_expired(&u, 1000, 60)); /* open: never expires */
    assert_int_equal(bfs_up_release(&u, &d, 100), BFS_UP_NONE);
    assert_true(bfs_up_expired(&u, 160, 60));
    assert_int_equal(bfs_up_discard(&u, 0), BFS_UP_FREE);
    assert_int_equal(u.state, BFS_UP_DISCARDED);
}

/* Reopened after its release: HELD -> WRITING, so it does not expire. */
static void test_held_reopened(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    bfs_up_init(&u, true);
    bfs_up_open(&u, &d, true);
    assert_int_equal(bfs_up_release(&u, &d, 100), BFS_UP_NONE);
    assert_int_equal(u.state, BFS_UP_HELD);
    assert_true(bfs_up_joinable(&u));
    bfs_up_open(&u, &d, true);
    assert_int_equal(u.state, BFS_UP_WRITING);
    assert_false(bfs_up_expired(&u, 100000, 60));
}

/* Two writers create or truncate one name: the first upload loses the name
 * but keeps going, and each is ingested at its own close. */
static void test_replaced_while_writing(void **state)
{
    (void)state;
    struct bfs_up a, b;
    struct bfs_up_desc da, db;
    int rc;
    bfs_up_init(&a, false);
    bfs_up_open(&a, &da, true);
    write_ok(&a, &da, 10);
    assert_int_equal(bfs_up_replaced(&a), BFS_UP_NONE);
    assert_false(a.named);
    assert_false(bfs_up_joinable(&a));
    bfs_up_init(&b, false);
    bfs_up_open(&b, &db, true);
    write_ok(&a, &da, 20);
    write_ok(&b, &db, 15);
    assert_int_equal(flush(&a, &da, true, &rc), BFS_UP_INGEST);
    assert_int_equal(flush(&b, &db, true, &rc), BFS_UP_INGEST);
}

/* A held file whose name goes to another upload is discarded: closed at
 * once, open at its release (nothing could ever rename it). */
static void test_replaced_held(void **state)
{
    (void)state;
    struct bfs_up u, v;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, true);
    bfs_up_open(&u, &d, true);
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_NONE);
    assert_int_equal(bfs_up_replaced(&u), BFS_UP_FREE);

    bfs_up_init(&v, true);
    bfs_up_open(&v, &d, true);
    write_ok(&v, &d, 5);
    assert_int_equal(bfs_up_replaced(&v), BFS_UP_NONE);
    assert_int_equal(v.state, BFS_UP_DISCARDED);
    enum bfs_up_action act;
    assert_int_equal(bfs_up_write_begin(&v, 10, MAX, &act), 1); /* taken, dropped */
    assert_int_equal(flush(&v, &d, true, &rc), BFS_UP_NONE);
    assert_int_equal(rc, 0);
    assert_int_equal(bfs_up_release(&v, &d, 0), BFS_UP_FREE);
}

/* unlink while open: like a file unlinked while open, writes and close
 * succeed and nothing is stored. */
static void test_unlink_while_open(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    assert_int_equal(bfs_up_discard(&u, 0), BFS_UP_NONE);
    assert_false(u.named);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_NONE);
    assert_int_equal(rc, 0);
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_FREE);
}

/* Beyond max_upload: refused at the write, and every later write and the
 * close say EFBIG. */
static void test_efbig(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    enum bfs_up_action act;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    write_ok(&u, &d, 10);
    assert_int_equal(bfs_up_write_begin(&u, MAX + 1, MAX, &act), -EFBIG);
    assert_int_equal(act, BFS_UP_REJECT);
    assert_false(u.named);
    assert_int_equal(bfs_up_write_begin(&u, 20, MAX, &act), -EFBIG);
    assert_int_equal(act, BFS_UP_NONE); /* reported once */
    assert_int_equal(bfs_up_write_begin(&u, 0, MAX, &act), -EFBIG);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_NONE);
    assert_int_equal(rc, -EFBIG);
    assert_int_equal(bfs_up_release(&u, &d, 0), BFS_UP_FREE);
}

/* A spool write that failed: the upload is rejected with its errno; a
 * state change while the write ran unlocked wins over its outcome. */
static void test_spool_error_and_race(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    enum bfs_up_action act;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    assert_int_equal(bfs_up_write_begin(&u, 10, MAX, &act), 0);
    assert_int_equal(bfs_up_write_end(&u, &d, 10, -ENOSPC, &act), -ENOSPC);
    assert_int_equal(act, BFS_UP_REJECT);

    struct bfs_up v;
    int rc;
    bfs_up_init(&v, false);
    bfs_up_open(&v, &d, true);
    write_ok(&v, &d, 5);
    assert_int_equal(bfs_up_write_begin(&v, 10, MAX, &act), 0);
    /* meanwhile the close of a duplicate of the descriptor ingested it */
    assert_int_equal(flush(&v, &d, true, &rc), BFS_UP_INGEST);
    assert_int_equal(bfs_up_write_end(&v, &d, 10, 0, &act), -EBADF);
}

/* truncate: changes the size and counts as written. */
static void test_truncate(void **state)
{
    (void)state;
    struct bfs_up u;
    struct bfs_up_desc d;
    enum bfs_up_action act;
    int rc;
    bfs_up_init(&u, false);
    bfs_up_open(&u, &d, true);
    assert_int_equal(bfs_up_write_begin(&u, 100, MAX, &act), 0);
    bfs_up_truncated(&u, 100);
    assert_int_equal(u.size, 100);
    assert_int_equal(flush(&u, &d, true, &rc), BFS_UP_INGEST);
}

static void test_state_names(void **state)
{
    (void)state;
    assert_string_equal(bfs_up_state_name(BFS_UP_HELD), "held");
    assert_string_equal(bfs_up_state_name(BFS_UP_DISCARDED), "discarded");
    assert_string_equal(bfs_up_state_name((enum bfs_up_state)99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cp),
        cmocka_unit_test(test_rejected_result_repeats),
        cmocka_unit_test(test_shell_group),
        cmocka_unit_test(test_fork_child_exits_first),
        cmocka_unit_test(test_last_release_ingests),
        cmocka_unit_test(test_dup_flush_waits_for_ingest),
        cmocka_unit_test(test_two_descriptions),
        cmocka_unit_test(test_reader_does_not_count),
        cmocka_unit_test(test_empty_discarded),
        cmocka_unit_test(test_held_rename_before_release),
        cmocka_unit_test(test_held_rename_after_release),
        cmocka_unit_test(test_held_rename_while_writing),
        cmocka_unit_test(test_held_reopen_then_rename),
        cmocka_unit_test(test_held_expires),
        cmocka_unit_test(test_held_reopened),
        cmocka_unit_test(test_replaced_while_writing),
        cmocka_unit_test(test_replaced_held),
        cmocka_unit_test(test_unlink_while_open),
        cmocka_unit_test(test_efbig),
        cmocka_unit_test(test_spool_error_and_race),
        cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
