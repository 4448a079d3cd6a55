/* fuzz_ocf.c - libFuzzer target for the OCF parser and normaliser.
 *
 * The input is an upload: parse its header, validate and normalise its blocks
 * to deflate. Besides "no crash, no leak, no sanitizer report", an accepted
 * input must normalise to a file (layout header + blocks) that is accepted
 * again with the same record count, and normalising that again must give the
 * same bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "battlefs/buf.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"

static void check(int cond, const char *what, const struct bfs_ocf_error *err)
{
    if (!cond) {
        fprintf(stderr, "fuzz_ocf: property violated: %s (%s)\n", what, err ? err->msg : "");
        abort();
    }
}

/* Messages are one non-empty, NUL-terminated line. */
static void check_msg(const struct bfs_ocf_error *err)
{
    size_t n = strnlen(err->msg, sizeof err->msg);
    check(n > 0 && n < sizeof err->msg, "error message set and terminated", NULL);
    check(strchr(err->msg, '\n') == NULL, "error message is one line", err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t sync[16] = {0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xa5};
    struct bfs_ocf_header h;
    struct bfs_ocf_error err;
    int rc = bfs_ocf_parse_header(data, size, &h, &err);
    if (rc != 0) {
        check(rc == -EINVAL || rc == -ENOMEM, "parse_header returns -EINVAL or -ENOMEM", &err);
        check_msg(&err);
        return 0;
    }
    check(h.header_len <= size && h.schema_json != NULL, "header fields", NULL);

    struct bfs_buf out = {0};
    uint64_t records = 0;
    check(bfs_ocf_layout_header(h.schema_json, h.schema_len, BFS_CODEC_DEFLATE, sync, &out) == 0,
          "layout header", NULL);
    rc = bfs_ocf_process(data, size, &h, sync, BFS_CODEC_DEFLATE, &out, &records, &err);
    if (rc != 0) {
        check(rc == -EINVAL || rc == -ENOMEM, "process returns -EINVAL or -ENOMEM", &err);
        check_msg(&err);
    } else {
        /* The normalised file is valid, with the same records. */
        struct bfs_ocf_header h2;
        check(bfs_ocf_parse_header(out.data, out.len, &h2, &err) == 0, "normalised header", &err);
        check(h2.codec == BFS_CODEC_DEFLATE && memcmp(h2.sync, sync, 16) == 0,
              "normalised layout", NULL);
        struct bfs_buf again = {0};
        uint64_t records2 = 0;
        check(bfs_ocf_layout_header(h2.schema_json, h2.schema_len, BFS_CODEC_DEFLATE, sync,
                                    &again) == 0,
              "layout header 2", NULL);
        rc = bfs_ocf_process(out.data, out.len, &h2, sync, BFS_CODEC_DEFLATE, &again, &records2,
                             &err);
        check(rc == 0, "normalised blocks validate", &err);
        check(records2 == records, "same record count", NULL);
        check(again.len == out.len && memcmp(again.data, out.data, out.len) == 0,
              "normalising is idempotent", NULL);
        bfs_buf_free(&again);
        bfs_ocf_header_free(&h2);
    }
    bfs_buf_free(&out);
    bfs_ocf_header_free(&h);
    return 0;
}
