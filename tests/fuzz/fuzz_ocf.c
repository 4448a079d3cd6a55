/* fuzz_ocf.c - libFuzzer target for the OCF parser and normaliser.
 *
 * An input starting with 'O' (as every OCF file does) is an upload: parse its
 * header, validate and normalise its blocks to deflate. Besides "no crash, no
 * leak, no sanitizer report", an accepted input must normalise to a file
 * (layout header + blocks) that is accepted again with the same record count,
 * and normalising that again must give the same bytes.
 *
 * Any other input describes blocks for a known schema, so that record decoding
 * is reached past the header and the codecs' checksums:
 *   byte 0: schema (index into `schemas`), byte 1: codec (low 2 bits),
 *   then blocks: [count byte][length byte][length bytes of block data]...
 * The target builds the OCF file (layout header, blocks compressed with the
 * codec) and checks it like an upload.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <snappy-c.h>
#include <zlib.h>

#include "battlefs/buf.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"

static void check(int cond, const char *what, const struct bfs_err *err)
{
    if (!cond) {
        fprintf(stderr, "fuzz_ocf: property violated: %s (%s)\n", what, err ? err->msg : "");
        abort();
    }
}

/* Messages are one non-empty, NUL-terminated line, with the code returned. */
static void check_msg(const struct bfs_err *err, int rc)
{
    check(err->code == rc, "the error's code is the one returned", err);
    size_t n = strnlen(err->msg, sizeof err->msg);
    check(n > 0 && n < sizeof err->msg, "error message set and terminated", NULL);
    check(strchr(err->msg, '\n') == NULL, "error message is one line", err);
}

/* FUZZ_OCF_VERBOSE=1 in the environment prints each input's outcome. */
static int verbose;

static int upload(const uint8_t *data, size_t size)
{
    static const uint8_t sync[16] = {0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xa5};
    struct bfs_ocf_header h;
    struct bfs_err err;
    int rc = bfs_ocf_parse_header(data, size, &h, &err);
    if (verbose)
        fprintf(stderr, "fuzz_ocf: header: %d %s\n", rc, rc ? err.msg : "");
    if (rc != 0) {
        check(rc == -EINVAL || rc == -ENOMEM, "parse_header returns -EINVAL or -ENOMEM", &err);
        check_msg(&err, rc);
        return 0;
    }
    check(h.header_len <= size && h.schema_json != NULL, "header fields", NULL);

    struct bfs_buf out = {0};
    uint64_t records = 0;
    check(bfs_ocf_layout_header(h.schema_json, h.schema_len, BFS_CODEC_DEFLATE, sync, &out) == 0,
          "layout header", NULL);
    rc = bfs_ocf_process(data, size, &h, sync, BFS_CODEC_DEFLATE, &out, &records,
                         BFS_OCF_CROSSCHECK, 0, &err);
    if (verbose)
        fprintf(stderr, "fuzz_ocf: process: %d %s (%llu records)\n", rc, rc ? err.msg : "",
                (unsigned long long)records);
    if (rc != 0) {
        check(rc == -EINVAL || rc == -ENOMEM, "process returns -EINVAL or -ENOMEM", &err);
        check_msg(&err, rc);
        /* The pre-decoder is at least as strict as avro-c: what it accepts,
         * avro-c decodes, to the same end. */
        check(strstr(err.msg, "(avro-c") == NULL, "pre-decoder and avro-c agree", &err);
    } else {
        /* The normalised file is valid, with the same records. */
        struct bfs_ocf_header h2;
        check(bfs_ocf_parse_header(out.data, out.len, &h2, &err) == 0, "normalised header", &err);
        check(h2.codec == BFS_CODEC_DEFLATE && memcmp(h2.sync, sync, 16) == 0, "normalised layout",
              NULL);
        struct bfs_buf again = {0};
        uint64_t records2 = 0;
        check(bfs_ocf_layout_header(h2.schema_json, h2.schema_len, BFS_CODEC_DEFLATE, sync,
                                    &again) == 0,
              "layout header 2", NULL);
        rc = bfs_ocf_process(out.data, out.len, &h2, sync, BFS_CODEC_DEFLATE, &again, &records2,
                             BFS_OCF_CROSSCHECK, 0, &err);
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

static const char *const schemas[] = {
    "{\"type\":\"record\",\"name\":\"Rich\",\"namespace\":\"f\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"long\"},{\"name\":\"s\",\"type\":\"string\"},"
    "{\"name\":\"ok\",\"type\":\"boolean\"},"
    "{\"name\":\"hp\",\"type\":{\"type\":\"array\",\"items\":\"int\"}},"
    "{\"name\":\"tags\",\"type\":{\"type\":\"map\",\"values\":\"string\"}},"
    "{\"name\":\"rank\",\"type\":{\"type\":\"enum\",\"name\":\"R\",\"symbols\":[\"S\",\"A\"]}},"
    "{\"name\":\"d\",\"type\":{\"type\":\"fixed\",\"name\":\"D\",\"size\":4}},"
    "{\"name\":\"x\",\"type\":\"double\"},{\"name\":\"y\",\"type\":\"float\"},"
    "{\"name\":\"b\",\"type\":\"bytes\"},{\"name\":\"n\",\"type\":\"null\"},"
    "{\"name\":\"o\",\"type\":[\"null\",\"int\",\"string\",\"D\"]},"
    "{\"name\":\"g\",\"type\":{\"type\":\"array\",\"items\":{\"type\":\"array\","
    "\"items\":\"R\"}}}]}",
    "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"v\",\"type\":"
    "{\"type\":\"map\",\"values\":\"double\"}},{\"name\":\"next\",\"type\":[\"null\",\"L\"]}]}",
    "\"null\"",
    "{\"type\":\"array\",\"items\":\"null\"}",
    "[\"null\",\"string\",{\"type\":\"array\",\"items\":\"long\"},{\"type\":\"map\",\"values\":"
    "{\"type\":\"fixed\",\"name\":\"F1\",\"size\":1}}]",
    "{\"type\":\"record\",\"name\":\"E\",\"fields\":[{\"name\":\"a\",\"type\":\"null\"},"
    "{\"name\":\"z\",\"type\":{\"type\":\"record\",\"name\":\"Z\",\"fields\":[]}}]}",
    "{\"type\":\"record\",\"name\":\"EnvInfo\",\"fields\":[{\"name\":\"version\",\"type\":"
    "\"string\"},{\"name\":\"uuid\",\"type\":{\"type\":\"string\",\"logicalType\":\"uuid\"}},"
    "{\"name\":\"user_env_unique\",\"type\":\"string\"},{\"name\":\"timestamp\",\"type\":"
    "\"long\"}]}",
    "{\"type\":\"array\",\"items\":{\"type\":\"array\",\"items\":{\"type\":\"map\","
    "\"values\":[\"boolean\",\"bytes\"]}}}",
    /* FUSOU-shaped: runs of ints and longs, unions of null and a value both
     * ways round, arrays of ints, a record inlined and one called. */
    "{\"type\":\"record\",\"name\":\"C\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
    "{\"name\":\"b\",\"type\":\"long\"},{\"name\":\"c\",\"type\":\"int\"},"
    "{\"name\":\"o\",\"type\":[\"null\",\"int\"]},{\"name\":\"p\",\"type\":[\"string\","
    "\"null\"]},{\"name\":\"q\",\"type\":[\"null\",{\"type\":\"enum\",\"name\":\"Q\","
    "\"symbols\":[\"A\",\"B\",\"C\"]}]},{\"name\":\"xs\",\"type\":{\"type\":\"array\","
    "\"items\":\"int\"}},{\"name\":\"ys\",\"type\":[\"null\",{\"type\":\"array\","
    "\"items\":[\"null\",\"long\"]}]},{\"name\":\"in\",\"type\":{\"type\":\"record\","
    "\"name\":\"In\",\"fields\":[{\"name\":\"f\",\"type\":\"float\"},{\"name\":\"g\","
    "\"type\":\"double\"},{\"name\":\"t\",\"type\":\"boolean\"},{\"name\":\"r\","
    "\"type\":[\"null\",\"In\"]}]}},{\"name\":\"z\",\"type\":\"long\"}]}",
};

static int block_data(struct bfs_buf *f, int codec, const uint8_t *p, size_t n)
{
    uint8_t tmp[600];
    size_t len = 0;
    if (codec == 0) {
        return bfs_buf_put_long(f, (int64_t)n) || bfs_buf_append(f, p, n);
    } else if (codec == 1) {
        uLongf cap = sizeof tmp;
        z_stream z;
        memset(&z, 0, sizeof z);
        if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        z.next_in = (Bytef *)p;
        z.avail_in = (uInt)n;
        z.next_out = tmp;
        z.avail_out = (uInt)cap;
        int zr = deflate(&z, Z_FINISH);
        len = z.total_out;
        deflateEnd(&z);
        if (zr != Z_STREAM_END)
            return -1;
    } else {
        len = sizeof tmp - 4;
        if (snappy_compress((const char *)p, n, (char *)tmp, &len) != SNAPPY_OK)
            return -1;
        uint32_t crc = (uint32_t)crc32(0, p, (uInt)n);
        for (int i = 0; i < 4; i++)
            tmp[len + (size_t)i] = (uint8_t)(crc >> (24 - 8 * i));
        len += 4;
    }
    return bfs_buf_put_long(f, (int64_t)len) || bfs_buf_append(f, tmp, len);
}

static void structured(const uint8_t *data, size_t size)
{
    static const uint8_t sync[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6};
    if (size < 2)
        return;
    const char *schema = schemas[data[0] % (sizeof schemas / sizeof schemas[0])];
    int codec = data[1] & 3;
    if (codec == 3)
        codec = 0;
    struct bfs_buf f = {0};
    check(bfs_ocf_layout_header(schema, strlen(schema), (enum bfs_codec)codec, sync, &f) == 0,
          "layout header", NULL);
    size_t pos = 2;
    while (pos + 2 <= size) {
        size_t count = data[pos], n = data[pos + 1];
        pos += 2;
        if (n > size - pos)
            n = size - pos;
        if (bfs_buf_put_long(&f, (int64_t)count) || block_data(&f, codec, data + pos, n) ||
            bfs_buf_append(&f, sync, 16))
            abort();
        pos += n;
    }
    upload(f.data, f.len);
    bfs_buf_free(&f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    verbose = getenv("FUZZ_OCF_VERBOSE") != NULL;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && data[0] == 'O')
        return upload(data, size);
    structured(data, size);
    return 0;
}
