/* storectl.c - battlefs-store: one store operation from the command line.
 *
 *   battlefs-store [-o endpoint=URL,region=NAME,timeout=SECONDS] [-v] STORE-URL COMMAND ...
 *     put [--if-none-match | --if-match ETAG] KEY FILE
 *                         upload FILE under KEY; --if-none-match: only if KEY does not
 *                         exist (or already holds exactly these bytes); --if-match: only
 *                         if KEY's ETag is ETAG. A conditional put prints the new ETag.
 *     get KEY OFF LEN     write LEN bytes at OFF of KEY to stdout (one ranged GET)
 *     cat KEY             write the whole of KEY (at most 64 MiB) to stdout
 *     head KEY            print "SIZE<TAB>ETAG"
 *     list [--start-after KEY] [--max-keys N] [PREFIX]
 *                         print "KEY<TAB>SIZE" for every key starting with PREFIX; with
 *                         either option in ascending bytewise order, only the keys
 *                         after KEY, at most N of them (bfs_store_list_after)
 *     del KEY             delete KEY
 *
 * S3 credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 * AWS_SESSION_TOKEN only. Exit status: 0 done, 1 the operation failed, 2 usage,
 * 3 the condition of a put failed (the key holds other bytes; another ETag;
 * no such key for --if-match): nothing was written.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "battlefs/log.h"
#include "battlefs/store.h"

#define MAX_GET_LEN (1ull << 30)

static void usage(FILE *f)
{
    fprintf(f, "usage: battlefs-store [-o endpoint=URL,region=NAME,timeout=SECONDS] [-v] STORE-URL "
               "COMMAND ...\n"
               "  STORE-URL   file:///abs/dir or s3://bucket[/prefix]\n"
               "  put [--if-none-match | --if-match ETAG] KEY FILE\n"
               "                     upload FILE under KEY; --if-none-match: only if KEY does\n"
               "                     not exist (or already holds exactly these bytes);\n"
               "                     --if-match: only if KEY's ETag is ETAG; prints the new ETag\n"
               "  get KEY OFF LEN    write LEN bytes at byte OFF of KEY to stdout\n"
               "  cat KEY            write the whole of KEY (at most 64 MiB) to stdout\n"
               "  head KEY           print SIZE<TAB>ETAG of KEY\n"
               "  list [--start-after KEY] [--max-keys N] [PREFIX]\n"
               "                     print KEY<TAB>SIZE for every key starting with PREFIX;\n"
               "                     with an option: in ascending bytewise order, only keys\n"
               "                     sorting after KEY, at most N (1..4294967295) of them\n"
               "  del KEY            delete KEY\n"
               "S3 credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.\n"
               "Exit status: 0 done, 1 failed, 2 usage, 3 the condition of a put failed.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s[0] || s[0] == '-')
        return -EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Parse "k=v,k=v" into opts; the strings point into arg (modified). */
static int parse_o(char *arg, struct bfs_store_opts *opts)
{
    char *save = NULL;
    for (char *tok = strtok_r(arg, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            fprintf(stderr, "battlefs-store: option \"%s\" needs a value\n", tok);
            return -EINVAL;
        }
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(tok, "endpoint") == 0) {
            opts->endpoint = v;
        } else if (strcmp(tok, "region") == 0) {
            opts->region = v;
        } else if (strcmp(tok, "timeout") == 0) {
            uint64_t t;
            if (parse_u64(v, &t) < 0 || t == 0 || t > 86400) {
                fprintf(stderr, "battlefs-store: timeout must be 1..86400 seconds\n");
                return -EINVAL;
            }
            opts->timeout_s = (unsigned)t;
        } else {
            fprintf(stderr, "battlefs-store: unknown option \"%s\"\n", tok);
            return -EINVAL;
        }
    }
    return 0;
}

/* The options of list, anywhere among its arguments ("--" ends them):
 * --start-after KEY and --max-keys N. The other arguments are moved to the
 * front of args and counted in *nargs. 0, or -EINVAL after a message. */
static int list_options(char **args, int *nargs, const char **start_after, unsigned *max_keys)
{
    int n = 0, options = 1;
    for (int i = 0; i < *nargs; i++) {
        const char *a = args[i];
        if (!options || strncmp(a, "--", 2) != 0) {
            args[n++] = args[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options = 0;
            continue;
        }
        int sa = strcmp(a, "--start-after") == 0;
        if (!sa && strcmp(a, "--max-keys") != 0) {
            fprintf(stderr, "battlefs-store: unknown option \"%s\" of list\n", a);
            return -EINVAL;
        }
        if (i + 1 == *nargs) {
            fprintf(stderr, "battlefs-store: %s needs a value\n", a);
            return -EINVAL;
        }
        const char *v = args[++i];
        uint64_t m = 0;
        if (sa && bfs_store_prefix_check(v) < 0) {
            fprintf(stderr,
                    "battlefs-store: --start-after \"%s\" is not a key or key prefix (at most %u "
                    "bytes, no control characters, no leading '/', no empty, \".\" or \"..\" "
                    "component)\n",
                    v, BFS_STORE_KEY_MAX);
            return -EINVAL;
        }
        if (!sa && (parse_u64(v, &m) < 0 || m == 0 || m > UINT_MAX)) {
            fprintf(stderr, "battlefs-store: --max-keys must be 1..%u\n", UINT_MAX);
            return -EINVAL;
        }
        if (sa)
            *start_after = v;
        else
            *max_keys = (unsigned)m;
    }
    *nargs = n;
    return 0;
}

static int print_key(void *ctx, const char *key, uint64_t size)
{
    (void)ctx;
    if (printf("%s\t%" PRIu64 "\n", key, size) < 0)
        return -EIO;
    return 0;
}

/* Report a failure: rc, and what the store said about it (e: NULL, nothing). */
static int fail(const char *what, const char *arg, int rc, const struct bfs_err *e)
{
    const char *detail = e ? e->msg : "";
    fprintf(stderr, "battlefs-store: %s %s: %s%s%s\n", what, arg, strerror(-rc),
            detail[0] ? ": " : "", detail);
    return 1;
}

/* A conditional put: 0 done, 1 failed, 3 the condition failed. */
static int put_cond(struct bfs_store *st, const char *key, const char *path, enum bfs_put_cond cond,
                    const char *if_match)
{
    char etag[BFS_STORE_ETAG_MAX] = "";
    const struct bfs_put_src src = {
        .path = path, .cond = cond, .if_match = if_match, .etag_out = etag};
    struct bfs_err err;
    int rc = bfs_store_put_src(st, key, &src, &err);
    if (rc == 0) {
        printf("%s\n", etag);
        return 0;
    }
    const char *why = NULL;
    if (rc == -EEXIST && cond == BFS_PUT_CREATE)
        why = "the key exists and holds other bytes: not overwritten";
    else if (rc == -ESTALE && cond == BFS_PUT_MATCH)
        why = "the object's ETag is not the one given (it changed): not overwritten";
    else if (rc == -ENOENT && cond == BFS_PUT_MATCH)
        why = "no such key: nothing written";
    if (!why)
        return fail("put", key, rc, &err);
    fprintf(stderr, "battlefs-store: put %s: %s%s%s\n", key, why, err.msg[0] ? " - " : "", err.msg);
    return 3;
}

int main(int argc, char **argv)
{
    struct bfs_store_opts opts = {0};
    int opt;
    while ((opt = getopt(argc, argv, "+o:vh")) != -1) {
        switch (opt) {
        case 'o':
            if (parse_o(optarg, &opts) < 0)
                return 2;
            break;
        case 'v':
            bfs_log_set_level(BFS_LOG_DEBUG);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind < 2) {
        usage(stderr);
        return 2;
    }
    const char *url = argv[optind];
    const char *cmd = argv[optind + 1];
    char **args = argv + optind + 2;
    int nargs = argc - optind - 2;
    enum bfs_put_cond cond = BFS_PUT_ALWAYS;
    const char *if_match = NULL;
    if (strcmp(cmd, "put") == 0 && nargs >= 1 && strcmp(args[0], "--if-none-match") == 0) {
        cond = BFS_PUT_CREATE;
        args++;
        nargs--;
    } else if (strcmp(cmd, "put") == 0 && nargs >= 2 && strcmp(args[0], "--if-match") == 0) {
        cond = BFS_PUT_MATCH;
        if_match = args[1];
        args += 2;
        nargs -= 2;
        if (bfs_store_etag_check(if_match) < 0) {
            fprintf(stderr, "battlefs-store: \"%s\" is not an ETag (printable, no quotes)\n",
                    if_match);
            return 2;
        }
    }
    const char *start_after = NULL;
    unsigned max_keys = 0;
    if (strcmp(cmd, "list") == 0 && list_options(args, &nargs, &start_after, &max_keys) < 0) {
        usage(stderr);
        return 2;
    }
    int want = strcmp(cmd, "put") == 0    ? 2
               : strcmp(cmd, "get") == 0  ? 3
               : strcmp(cmd, "cat") == 0  ? 1
               : strcmp(cmd, "head") == 0 ? 1
               : strcmp(cmd, "del") == 0  ? 1
               : strcmp(cmd, "list") == 0 ? -1
                                          : -2;
    if (want == -2 || (want >= 0 && nargs != want) || (want == -1 && nargs > 1)) {
        fprintf(stderr, "battlefs-store: bad command line for \"%s\"\n", cmd);
        usage(stderr);
        return 2;
    }
    uint64_t off = 0, len = 0;
    if (strcmp(cmd, "get") == 0) {
        if (parse_u64(args[1], &off) < 0 || parse_u64(args[2], &len) < 0) {
            fprintf(stderr, "battlefs-store: OFF and LEN must be non-negative integers\n");
            return 2;
        }
        if (len > MAX_GET_LEN) {
            fprintf(stderr, "battlefs-store: LEN is limited to %llu bytes\n", MAX_GET_LEN);
            return 2;
        }
    }

    struct bfs_store *st = NULL;
    struct bfs_err err = {0};
    int rc = bfs_store_open(url, &opts, NULL, &st, &err);
    if (rc < 0) {
        fprintf(stderr, "battlefs-store: cannot open %s: %s\n", url,
                err.msg[0] ? err.msg : strerror(-rc));
        return 1;
    }
    int status = 0;
    if (strcmp(cmd, "put") == 0 && cond != BFS_PUT_ALWAYS) {
        status = put_cond(st, args[0], args[1], cond, if_match);
    } else if (strcmp(cmd, "put") == 0) {
        rc = bfs_store_put(st, args[0], args[1], &err);
        if (rc < 0)
            status = fail("put", args[0], rc, &err);
    } else if (strcmp(cmd, "head") == 0) {
        struct bfs_store_head h;
        rc = bfs_store_head(st, args[0], &h, &err);
        if (rc < 0)
            status = fail("head", args[0], rc, &err);
        else
            printf("%" PRIu64 "\t%s\n", h.size, h.etag);
    } else if (strcmp(cmd, "cat") == 0) {
        void *data = NULL;
        size_t n = 0;
        rc = bfs_store_get(st, args[0], BFS_STORE_GET_MAX, &data, &n, NULL, &err);
        if (rc < 0)
            status = fail("cat", args[0], rc, &err);
        else if (n && fwrite(data, 1, n, stdout) != n)
            status = fail("cat", "(writing stdout)", -EIO, NULL);
        free(data);
    } else if (strcmp(cmd, "get") == 0) {
        void *buf = malloc(len ? (size_t)len : 1);
        if (!buf) {
            status = fail("get", args[0], -ENOMEM, NULL);
        } else {
            rc = bfs_store_get_range(st, args[0], off, len, buf, &err);
            if (rc < 0)
                status = fail("get", args[0], rc, &err);
            else if (len && fwrite(buf, 1, (size_t)len, stdout) != (size_t)len)
                status = fail("get", "(writing stdout)", -EIO, NULL);
            free(buf);
        }
    } else if (strcmp(cmd, "list") == 0) {
        const char *prefix = nargs ? args[0] : "";
        if (start_after || max_keys)
            rc = bfs_store_list_after(st, prefix, start_after, max_keys, print_key, NULL, &err);
        else
            rc = bfs_store_list(st, prefix, print_key, NULL, &err);
        if (rc < 0)
            status = fail("list", prefix[0] ? prefix : "(all)", rc, &err);
    } else {
        rc = bfs_store_del(st, args[0], &err);
        if (rc < 0)
            status = fail("del", args[0], rc, &err);
    }
    bfs_store_close(st);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "battlefs-store: writing stdout: %s\n", strerror(errno));
        status = 1;
    }
    return status;
}
