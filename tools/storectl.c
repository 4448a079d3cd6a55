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
 *   battlefs-store [-o ...] [-v] fsck [--deep] [--state DIR] STORE-URL
 *                         check the store against its index (the store's log, or the
 *                         catalog of state directory DIR): one line per problem, a
 *                         summary line; exit 0 clean, 1 problems found, 2 usage
 *   battlefs-store [-o ...] [-v] ls [--state DIR] STORE-URL [TABLE[/PERIOD]]
 *                         the partitions of the index: datasets, archives, bytes, records
 *   battlefs-store [-o ...] [-v] du STORE-URL
 *                         bytes and objects of the store per partition, table and
 *                         kind of battlefs object (one listing)
 *   (fsck, ls and du may also follow STORE-URL, as the other commands do.)
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
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "battlefs/catalog.h"
#include "battlefs/fsck.h"
#include "battlefs/fsutil.h"
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
               "  fsck [--deep] [--state DIR]\n"
               "                     check every archive and index row against the store's log\n"
               "                     (or DIR/catalog.db); exit 0 clean, 1 problems, 2 usage\n"
               "  ls [--state DIR] [TABLE[/PERIOD]]\n"
               "                     partitions: datasets, archives, bytes, records\n"
               "  du                 bytes and objects per partition, table and battlefs object\n"
               "fsck, ls and du may also come first: battlefs-store fsck STORE-URL.\n"
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

/* ---- fsck, ls, du: the store and its index ---- */

static int is_index_command(const char *s)
{
    return strcmp(s, "fsck") == 0 || strcmp(s, "ls") == 0 || strcmp(s, "du") == 0;
}

static int match_any(const char *name)
{
    (void)name;
    return 1;
}

/* The index of store st: DIR/catalog.db with --state DIR, else rebuilt from the
 * store into *scratch (a new directory under $TMPDIR, removed by
 * scratch_remove). 0, 1 (reported: a failure), with *status raised to 1 when
 * the store's log could not be read to its end (a problem of the store). */
static int open_index(struct bfs_store *st, const char *state, char **scratch,
                      struct bfs_catalog **cat, int *log_problem, struct bfs_err *err)
{
    *cat = NULL;
    *scratch = NULL;
    *log_problem = 0;
    if (state) {
        char *db = bfs_path_join(state, "catalog.db");
        struct stat sb;
        int rc = !db ? -ENOMEM : stat(db, &sb) < 0 ? -errno : bfs_catalog_open(db, cat);
        if (rc < 0)
            fprintf(stderr, "battlefs-store: %s: %s\n", db ? db : state, strerror(-rc));
        free(db);
        return rc < 0;
    }
    const char *tmp = getenv("TMPDIR");
    if (asprintf(scratch, "%s/battlefs-index-XXXXXX", tmp && tmp[0] ? tmp : "/tmp") < 0) {
        *scratch = NULL;
        return fail("fsck", "(scratch directory)", -ENOMEM, NULL);
    }
    if (!mkdtemp(*scratch)) {
        int rc = -errno;
        fprintf(stderr, "battlefs-store: cannot make %s: %s\n", *scratch, strerror(-rc));
        free(*scratch);
        *scratch = NULL;
        return 1;
    }
    int rc = bfs_fsck_load_store(st, *scratch, cat, err);
    if (rc < 0 && !*cat) {
        fprintf(stderr, "battlefs-store: %s\n", err->msg[0] ? err->msg : strerror(-rc));
        return 1;
    }
    *log_problem = rc < 0;
    return 0;
}

static void scratch_remove(char *scratch)
{
    if (!scratch)
        return;
    char *work = bfs_path_join(scratch, "work");
    if (work) {
        bfs_remove_files(work, match_any);
        rmdir(work);
    }
    bfs_remove_files(scratch, match_any);
    if (rmdir(scratch) < 0)
        fprintf(stderr, "battlefs-store: cannot remove %s: %s\n", scratch, strerror(errno));
    free(work);
    free(scratch);
}

static void print_problem(void *arg, const char *line)
{
    (void)arg;
    printf("%s\n", line);
}

static int print_partition(void *arg, const struct bfs_fsck_partition *p)
{
    (void)arg;
    char name[512];
    snprintf(name, sizeof name, "%s/%s", p->table, p->period);
    return printf("%-40s %10" PRIu64 " %10" PRIu64 " %16" PRIu64 " %12" PRIu64 "\n", name,
                  p->datasets, p->archives, p->bytes, p->records) < 0
               ? -EIO
               : 0;
}

/* du: "table/period", "table", "_battlefs/<kind>", "_battlefs" and "(other)"
 * -> [bytes, objects]. */
static void du_add(json_t *by, const char *path, uint64_t size)
{
    json_t *e = json_object_get(by, path);
    if (!e) {
        e = json_pack("[I, I]", (json_int_t)0, (json_int_t)0);
        if (!e || json_object_set_new(by, path, e) < 0)
            return;
    }
    json_array_set_new(e, 0,
                       json_integer(json_integer_value(json_array_get(e, 0)) + (json_int_t)size));
    json_array_set_new(e, 1, json_integer(json_integer_value(json_array_get(e, 1)) + 1));
}

static int du_key(void *ctx, const char *key, uint64_t size)
{
    json_t *by = ctx;
    const char *s1 = strchr(key, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    char part[BFS_STORE_KEY_MAX + 1];
    if (!s2) {
        du_add(by, "(other)", size); /* battlefs puts nothing there */
    } else {
        snprintf(part, sizeof part, "%.*s", (int)(s2 - key), key);
        du_add(by, part, size); /* <table>/<period>, _battlefs/<kind> */
        snprintf(part, sizeof part, "%.*s", (int)(s1 - key), key);
        du_add(by, part, size); /* <table>, _battlefs */
    }
    du_add(by, "total", size);
    return 0;
}

static int cmp_path(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int tx = strcmp(x, "total") == 0, ty = strcmp(y, "total") == 0;
    return tx != ty ? tx - ty : strcmp(x, y); /* total last */
}

static int cmd_du(struct bfs_store *st)
{
    json_t *by = json_pack("{s:[I, I]}", "total", (json_int_t)0, (json_int_t)0);
    struct bfs_err err;
    int rc = by ? bfs_store_list(st, "", du_key, by, &err) : -ENOMEM;
    if (rc < 0) {
        json_decref(by);
        return fail("du", "(list)", rc, by ? &err : NULL);
    }
    size_t n = json_object_size(by), i = 0;
    const char **keys = calloc(n, sizeof *keys);
    if (!keys) {
        json_decref(by);
        return fail("du", "(sort)", -ENOMEM, NULL);
    }
    const char *k;
    json_t *e;
    json_object_foreach(by, k, e) keys[i++] = k;
    qsort(keys, n, sizeof *keys, cmp_path);
    for (i = 0; i < n; i++) {
        e = json_object_get(by, keys[i]);
        printf("%" PRIu64 "\t%" PRIu64 "\t%s\n", (uint64_t)json_integer_value(json_array_get(e, 0)),
               (uint64_t)json_integer_value(json_array_get(e, 1)), keys[i]);
    }
    free(keys);
    json_decref(by);
    return 0;
}

/* fsck, ls, du: args are what follows the command (STORE-URL among them when
 * url is NULL). The exit status. */
static int index_command(const char *cmd, const char *url, char **args, int nargs,
                         const struct bfs_store_opts *opts)
{
    const char *state = NULL, *pos[2] = {url, NULL};
    int npos = url ? 1 : 0, deep = 0;
    for (int i = 0; i < nargs; i++) {
        const char *a = args[i];
        if (strcmp(a, "--deep") == 0 && strcmp(cmd, "fsck") == 0) {
            deep = 1;
        } else if (strcmp(a, "--state") == 0 && strcmp(cmd, "du") != 0 && i + 1 < nargs) {
            state = args[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "battlefs-store: unknown option \"%s\" of %s\n", a, cmd);
            usage(stderr);
            return 2;
        } else if (npos < (strcmp(cmd, "ls") == 0 ? 2 : 1)) {
            pos[npos++] = a;
        } else {
            fprintf(stderr, "battlefs-store: bad command line for \"%s\"\n", cmd);
            usage(stderr);
            return 2;
        }
    }
    if (npos < 1) {
        fprintf(stderr, "battlefs-store: %s needs a STORE-URL\n", cmd);
        usage(stderr);
        return 2;
    }
    char table[BFS_STORE_KEY_MAX + 1] = "", *period = NULL;
    if (pos[1]) {
        snprintf(table, sizeof table, "%s", pos[1]);
        if ((period = strchr(table, '/')) != NULL)
            *period++ = '\0';
    }
    struct bfs_store *st = NULL;
    struct bfs_err err = {0};
    int rc = bfs_store_open(pos[0], opts, NULL, &st, &err);
    if (rc < 0) {
        fprintf(stderr, "battlefs-store: cannot open %s: %s\n", pos[0],
                err.msg[0] ? err.msg : strerror(-rc));
        return 1;
    }
    if (strcmp(cmd, "du") == 0) {
        int status = cmd_du(st);
        bfs_store_close(st);
        return status;
    }
    /* what the ledger says while it reads the log is not fsck's business */
    if (bfs_log_get_level() < BFS_LOG_DEBUG)
        bfs_log_set_level(BFS_LOG_ERROR);
    char *scratch = NULL;
    struct bfs_catalog *cat = NULL;
    int log_problem = 0;
    int status = open_index(st, state, &scratch, &cat, &log_problem, &err);
    if (status == 0 && strcmp(cmd, "ls") == 0) {
        if (log_problem)
            fprintf(stderr,
                    "battlefs-store: the store's log could not be read to its end: %s (%s)\n",
                    err.msg, strerror(-err.code));
        printf("%-40s %10s %10s %16s %12s\n", "PARTITION", "DATASETS", "ARCHIVES", "BYTES",
               "RECORDS");
        rc = bfs_fsck_partitions(cat, pos[1] ? table : NULL, period, print_partition, NULL);
        if (rc < 0)
            status = fail("ls", "(index)", rc, NULL);
        else if (log_problem)
            status = 1;
    } else if (status == 0) {
        uint64_t problems = 0;
        if (log_problem) {
            printf("store log: %s (%s)\n", err.msg, strerror(-err.code));
            problems++;
        }
        const struct bfs_fsck_opts o = {
            .deep = deep, .progress = isatty(2), .source = state ? "catalog" : "manifest"};
        struct bfs_fsck_counts c;
        rc = bfs_fsck_check(cat, st, &o, print_problem, NULL, &c, &err);
        if (rc < 0) {
            fprintf(stderr, "battlefs-store: fsck: %s\n", err.msg);
            status = 1;
        } else {
            problems += c.problems;
            printf("fsck: %" PRIu64 " archives, %" PRIu64 " index rows, %" PRIu64 " problem%s\n",
                   c.archives, c.index_rows, problems, problems == 1 ? "" : "s");
            status = problems ? 1 : 0;
        }
    }
    bfs_catalog_close(cat);
    scratch_remove(scratch);
    bfs_store_close(st);
    return status;
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
    if (optind < argc && is_index_command(argv[optind]))
        return index_command(argv[optind], NULL, argv + optind + 1, argc - optind - 1, &opts);
    if (argc - optind < 2) {
        usage(stderr);
        return 2;
    }
    const char *url = argv[optind];
    const char *cmd = argv[optind + 1];
    char **args = argv + optind + 2;
    int nargs = argc - optind - 2;
    if (is_index_command(cmd))
        return index_command(cmd, url, args, nargs, &opts);
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
