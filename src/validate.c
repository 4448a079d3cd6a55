/* validate.c - the record validator: a schema compiled into flat sequences.
 *
 * A program is a set of sequences of ops, each ending with OP_END. A sequence
 * checks one value of one type: the root type, a union branch, an array item,
 * a map value, or a record that is called (recursive types). Records are
 * inlined into the sequence that contains them, so a record of twenty
 * primitive fields is twenty ops in a row with no call in between; runs of
 * floats, doubles and fixeds merge into one OP_SKIP. Checking a value is one
 * loop over a sequence, with the common case of every op (a one-byte varint,
 * an ASCII string) decided inline and everything rarer out of line.
 *
 * Invariants:
 *   - ops[seq[s]] .. the next OP_END is sequence s, contiguous;
 *   - every sequence index in an op (OP_ARRAY, OP_MAP, OP_CALL, union kids) is
 *     < n_seq and its sequence is complete when compilation returns;
 *   - op.lvl is how many records deep the op sits inside its own sequence, so
 *     a call from it nests lvl + 1 values deeper: depth counts real nesting;
 *   - zero[s]: some value of sequence s encodes in zero bytes (least fixed
 *     point: a sequence of calls only to such sequences, or no ops at all).
 */
#include "battlefs/validate.h"

#include "battlefs/buf.h"
#include "battlefs/varint.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inline records at most this deep into one sequence (deeper ones are called). */
#define MAX_INLINE_LVL 16
/* Ops past which records are called instead of inlined (schemas that use one
 * record type in many places would otherwise grow the program exponentially). */
#define MAX_INLINE_OPS (1u << 16)

enum opcode {
    OP_END,
    OP_VARINT, /* b: ints and longs in a row (at most 64); bit k of a: the kth is an int */
    OP_BOOL,   /* one byte, 0 or 1 */
    OP_SKIP,   /* a: bytes of floats, doubles and fixeds in a row */
    OP_STRING, /* length, then valid UTF-8 */
    OP_BYTES,  /* length, then bytes */
    OP_ENUM,   /* a: number of symbols */
    OP_UNION,  /* a: first kid, b: branches */
    OP_OPT,    /* a union of null (branch b) and one leaf op: sub, with a as its a */
    OP_ARRAY,  /* a: the items' sequence */
    OP_MAP,    /* a: the values' sequence */
    OP_CALL,   /* a: a record's sequence */
};

struct op {
    uint8_t code;
    uint8_t lvl;
    uint8_t sub; /* OP_OPT: the leaf's code */
    uint32_t b;
    uint64_t a;
};

struct bfs_vprog {
    struct op *ops;
    size_t n_ops, cap_ops;
    uint32_t *seq; /* first op of each sequence */
    bool *zero;    /* per sequence, computed once all are compiled */
    size_t n_seq, cap_seq;
    uint32_t *kids; /* union branches' sequences */
    size_t n_kids, cap_kids;
    uint32_t root;
};

/* An op that calls nothing and ends nothing. */
static bool is_leaf(uint8_t code)
{
    return code == OP_VARINT || code == OP_BOOL || code == OP_SKIP || code == OP_STRING ||
           code == OP_BYTES || code == OP_ENUM;
}

/* ------------------------------------------------------------------------ */
/* compilation                                                               */

struct opvec {
    struct op *v;
    size_t n, cap;
};

/* A named type on its way to (or with) a sequence of its own, or a record
 * being inlined right now (seq UINT32_MAX until it needs one). */
struct named {
    avro_schema_t src;
    uint32_t seq;
    bool open; /* being compiled or inlined: a reference to it recurses */
};

struct compiler {
    struct bfs_vprog *p;
    struct named *named;
    size_t n_named, cap_named;
    size_t pending; /* ops in unfinished sequences */
    struct bfs_err *err;
};

static int push(struct compiler *c, struct opvec *v, struct op op)
{
    /* Merge fixed-size runs (the bounds check is then one compare) and runs
     * of varints (one op for the fields of a record of ints). */
    struct op *last = v->n ? &v->v[v->n - 1] : NULL;
    if (last && op.code == OP_SKIP && last->code == OP_SKIP && last->a <= UINT32_MAX &&
        op.a <= UINT32_MAX) {
        last->a += op.a;
        return 0;
    }
    if (last && op.code == OP_VARINT && last->code == OP_VARINT && last->b < 64) {
        last->a |= op.a << last->b;
        last->b++;
        return 0;
    }
    if (bfs_array_reserve(&v->v, &v->cap, v->n + 1, sizeof *v->v) < 0)
        return -ENOMEM;
    v->v[v->n++] = op;
    c->pending++;
    return 0;
}

static struct named *find_named(struct compiler *c, avro_schema_t s)
{
    for (size_t i = 0; i < c->n_named; i++)
        if (c->named[i].src == s)
            return &c->named[i];
    return NULL;
}

static int add_named(struct compiler *c, avro_schema_t s, size_t *idx)
{
    if (bfs_array_reserve(&c->named, &c->cap_named, c->n_named + 1, sizeof *c->named) < 0)
        return -ENOMEM;
    c->named[c->n_named] = (struct named){.src = s, .seq = UINT32_MAX};
    *idx = c->n_named++;
    return 0;
}

static int new_seq(struct bfs_vprog *p, uint32_t *id)
{
    if (p->n_seq >= UINT32_MAX - 1)
        return -ENOMEM;
    if (bfs_array_reserve(&p->seq, &p->cap_seq, p->n_seq + 1, sizeof *p->seq) < 0)
        return -ENOMEM;
    p->seq[p->n_seq] = UINT32_MAX; /* not complete yet */
    *id = (uint32_t)p->n_seq++;
    return 0;
}

static int emit(struct compiler *c, struct opvec *v, avro_schema_t s, unsigned lvl, int depth);

/* s with a named reference resolved; NULL if too deep or missing. */
static avro_schema_t resolve(avro_schema_t s, int depth)
{
    if (depth > BFS_VALIDATE_MAX_DEPTH || !s)
        return NULL;
    return is_avro_link(s) ? avro_schema_link_target(s) : s;
}

/* Compile s into a sequence of its own; *id gets it. A named type gets one
 * sequence, shared by every reference to it. */
static int seq_for(struct compiler *c, avro_schema_t s, int depth, uint32_t *id)
{
    struct bfs_vprog *p = c->p;
    if (!(s = resolve(s, depth)))
        return -EINVAL;
    size_t ni = SIZE_MAX;
    if (is_avro_named_type(s)) {
        struct named *nm = find_named(c, s);
        if (nm && nm->seq != UINT32_MAX) {
            *id = nm->seq;
            return 0;
        }
        if (nm)
            ni = (size_t)(nm - c->named);
        else if (add_named(c, s, &ni) < 0)
            return -ENOMEM;
    }
    uint32_t me;
    int rc = new_seq(p, &me);
    if (rc < 0)
        return rc;
    bool was_open = false;
    if (ni != SIZE_MAX) {
        was_open = c->named[ni].open;
        c->named[ni].seq = me;
        c->named[ni].open = true;
    }
    struct opvec v = {0};
    size_t before = c->pending;
    /* A record's own sequence holds its fields; anything else is one value. */
    if (avro_typeof(s) == AVRO_RECORD) {
        size_t n = avro_schema_record_size(s);
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = emit(c, &v, avro_schema_record_field_get_by_index(s, (int)i), 0, depth + 1);
    } else {
        rc = emit(c, &v, s, 0, depth);
    }
    if (ni != SIZE_MAX)
        c->named[ni].open = was_open;
    if (rc == 0)
        rc = push(c, &v, (struct op){.code = OP_END});
    if (rc == 0 && (p->n_ops > UINT32_MAX - v.n ||
                    bfs_array_reserve(&p->ops, &p->cap_ops, p->n_ops + v.n, sizeof *p->ops) < 0))
        rc = -ENOMEM;
    if (rc == 0) {
        memcpy(p->ops + p->n_ops, v.v, v.n * sizeof *v.v);
        p->seq[me] = (uint32_t)p->n_ops;
        p->n_ops += v.n;
        *id = me;
    }
    c->pending = before;
    free(v.v);
    return rc;
}

/* Append the ops that check one value of s to v; lvl: records around it in v. */
static int emit(struct compiler *c, struct opvec *v, avro_schema_t s, unsigned lvl, int depth)
{
    struct bfs_vprog *p = c->p;
    if (!(s = resolve(s, depth)))
        return -EINVAL;
    struct op op = {.lvl = (uint8_t)lvl};
    int rc;
    uint32_t id;
    switch (avro_typeof(s)) {
    case AVRO_NULL:
        return 0;
    case AVRO_BOOLEAN:
        op.code = OP_BOOL;
        return push(c, v, op);
    case AVRO_INT32:
    case AVRO_INT64:
        op.code = OP_VARINT;
        op.a = avro_typeof(s) == AVRO_INT32;
        op.b = 1;
        return push(c, v, op);
    case AVRO_FLOAT:
    case AVRO_DOUBLE:
        op.code = OP_SKIP;
        op.a = avro_typeof(s) == AVRO_FLOAT ? 4 : 8;
        return push(c, v, op);
    case AVRO_BYTES:
        op.code = OP_BYTES;
        return push(c, v, op);
    case AVRO_STRING:
        op.code = OP_STRING;
        return push(c, v, op);
    case AVRO_ENUM: {
        int n = avro_schema_enum_number_of_symbols(s);
        if (n <= 0)
            return -EINVAL;
        op.code = OP_ENUM;
        op.a = (uint64_t)n;
        return push(c, v, op);
    }
    case AVRO_FIXED: {
        int64_t n = avro_schema_fixed_size(s);
        if (n <= 0) {
            /* avro-c 1.11 cannot decode a fixed of size 0 (its allocator
             * returns NULL for 0 bytes). */
            return bfs_err_set(c->err, -EINVAL, "a fixed of size 0 (avro-c cannot decode it)");
        }
        op.code = OP_SKIP;
        op.a = (uint64_t)n;
        return push(c, v, op);
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
        bool arr = avro_typeof(s) == AVRO_ARRAY;
        avro_schema_t sub = arr ? avro_schema_array_items(s) : avro_schema_map_values(s);
        if ((rc = seq_for(c, sub, depth + 1, &id)) < 0)
            return rc;
        op.code = arr ? OP_ARRAY : OP_MAP;
        op.a = id;
        return push(c, v, op);
    }
    case AVRO_UNION: {
        size_t n = avro_schema_union_size(s);
        if (n == 0 || n > INT_MAX)
            return -EINVAL;
        /* The branches' sequences first (they may add kids of their own). */
        uint32_t *ids = malloc(n * sizeof *ids);
        if (!ids)
            return -ENOMEM;
        rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = seq_for(c, avro_schema_union_branch(s, (int)i), depth + 1, &ids[i]);
        if (rc == 0 &&
            (p->n_kids > UINT32_MAX - n ||
             bfs_array_reserve(&p->kids, &p->cap_kids, p->n_kids + n, sizeof *p->kids) < 0))
            rc = -ENOMEM;
        if (rc == 0) {
            memcpy(p->kids + p->n_kids, ids, n * sizeof *ids);
            op.code = OP_UNION;
            op.a = p->n_kids;
            op.b = (uint32_t)n;
            p->n_kids += n;
            /* null and one leaf (["null","int"]): checked inline. */
            for (uint32_t nb = 0; n == 2 && nb < 2; nb++) {
                if (p->seq[ids[0]] == UINT32_MAX || p->seq[ids[1]] == UINT32_MAX)
                    break; /* a record still being compiled: not a leaf */
                const struct op *nul = p->ops + p->seq[ids[nb]];
                const struct op *val = p->ops + p->seq[ids[1 - nb]];
                if (nul->code == OP_END && val->code != OP_END && val[1].code == OP_END &&
                    is_leaf(val->code) && (val->code != OP_VARINT || val->b == 1)) {
                    op = (struct op){
                        .code = OP_OPT, .lvl = op.lvl, .sub = val->code, .a = val->a, .b = nb};
                    break;
                }
            }
            rc = push(c, v, op);
        }
        free(ids);
        return rc;
    }
    case AVRO_RECORD: {
        size_t n = avro_schema_record_size(s);
        if (n > INT_MAX)
            return -EINVAL;
        struct named *nm = find_named(c, s);
        bool recursive = nm && nm->open;
        if (recursive || lvl >= MAX_INLINE_LVL || p->n_ops + c->pending > MAX_INLINE_OPS) {
            if ((rc = seq_for(c, s, depth, &id)) < 0)
                return rc;
            op.code = OP_CALL;
            op.a = id;
            return push(c, v, op);
        }
        size_t ni;
        if (nm)
            ni = (size_t)(nm - c->named);
        else if ((rc = add_named(c, s, &ni)) < 0)
            return rc;
        c->named[ni].open = true;
        rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = emit(c, v, avro_schema_record_field_get_by_index(s, (int)i), lvl + 1, depth + 1);
        c->named[ni].open = false;
        return rc;
    }
    default:
        return -EINVAL;
    }
}

/* zero[] as the least fixed point: start from "no", set "yes" while some
 * sequence has only calls to "yes" sequences (or nothing at all). */
static int compute_zero(struct bfs_vprog *p)
{
    if (!(p->zero = calloc(p->n_seq, sizeof *p->zero)))
        return -ENOMEM;
    bool changed = true;
    while (changed) {
        changed = false;
        for (size_t s = 0; s < p->n_seq; s++) {
            if (p->zero[s])
                continue;
            bool all = true;
            for (const struct op *op = p->ops + p->seq[s]; op->code != OP_END && all; op++)
                all = op->code == OP_CALL && p->zero[op->a];
            if (all) {
                p->zero[s] = true;
                changed = true;
            }
        }
    }
    return 0;
}

void bfs_vprog_free(struct bfs_vprog *p)
{
    if (!p)
        return;
    free(p->ops);
    free(p->seq);
    free(p->zero);
    free(p->kids);
    free(p);
}

int bfs_vprog_compile(avro_schema_t schema, struct bfs_vprog **out, struct bfs_err *err)
{
    *out = NULL;
    struct bfs_vprog *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    struct compiler c = {.p = p, .err = err};
    int rc = seq_for(&c, schema, 0, &p->root);
    free(c.named);
    if (rc < 0) {
        bfs_vprog_free(p);
        return rc;
    }
#ifndef NDEBUG
    for (size_t s = 0; s < p->n_seq; s++)
        assert(p->seq[s] < p->n_ops);
#endif
    if (compute_zero(p) < 0) {
        bfs_vprog_free(p);
        return -ENOMEM;
    }
    *out = p;
    return 0;
}

bool bfs_vprog_zero(const struct bfs_vprog *p)
{
    return p->zero[p->root];
}

/* ------------------------------------------------------------------------ */
/* checking                                                                  */

struct vstate {
    const struct bfs_vprog *p;
    const uint8_t *d;
    size_t len;
    size_t pos;
    uint64_t *budget;
    struct bfs_err *err;
};

static int fail(struct vstate *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

__attribute__((noinline, cold)) static int fail(struct vstate *v, const char *fmt, ...)
{
    if (v->err) {
        v->err->code = -EINVAL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(v->err->msg, sizeof v->err->msg, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* A varint of more than one byte, or none left: decoded, with errors. */
__attribute__((noinline)) static int long_slow(struct vstate *v, size_t *pos, int64_t *out,
                                               const char *what)
{
    switch (bfs_varint_get_long(v->d, v->len, pos, out)) {
    case BFS_VARINT_OK:
        return 0;
    case BFS_VARINT_TRUNCATED:
        return fail(v, "the block ends inside %s", what);
    default:
        return fail(v, "%s is not a valid varint", what);
    }
}

/* Read a long into out; one-byte values inline. */
#define GET_LONG(v, pos, out, what)                                                                \
    do {                                                                                           \
        if ((pos) < (v)->len && (v)->d[pos] < 0x80) {                                              \
            uint8_t b_ = (v)->d[pos];                                                              \
            (out) = bfs_zigzag_decode(b_);                                                         \
            (pos)++;                                                                               \
        } else if (long_slow((v), &(pos), &(out), (what)) < 0) {                                   \
            return -EINVAL;                                                                        \
        }                                                                                          \
    } while (0)

__attribute__((noinline)) static int varint_slow(struct vstate *v, size_t *pos, bool is_int)
{
    int64_t x;
    if (long_slow(v, pos, &x, is_int ? "an int" : "a long") < 0)
        return -EINVAL;
    if (is_int && (x < INT32_MIN || x > INT32_MAX))
        return fail(v, "an int is out of range");
    return 0;
}

/* Step over one varint, an int (zig-zag int32: at most 5 bytes, the 5th below
 * 0x10) or a long, without decoding it: the end is the first byte with the top
 * bit clear among the next eight. Anything else takes the slow path. */
static inline int skip_varint(struct vstate *v, size_t *pos, bool is_int)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    size_t p = *pos;
    if (v->len - p >= 8) {
        uint64_t w;
        memcpy(&w, v->d + p, 8);
        uint64_t stop = ~w & 0x8080808080808080ull;
        if (stop) {
            unsigned n = (unsigned)__builtin_ctzll(stop) / 8 + 1;
            if (!is_int || n < 5 || (n == 5 && v->d[p + 4] < 0x10)) {
                *pos = p + n;
                return 0;
            }
        }
    } else if (p < v->len && v->d[p] < 0x80) {
        *pos = p + 1;
        return 0;
    }
#endif
    return varint_slow(v, pos, is_int);
}

static bool utf8_check(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII eight bytes at a time. */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* Valid UTF-8. Most strings are ASCII (ids, names): their words are OR-ed
 * without a branch per word, the tail as one more word overlapping the last
 * (or the bytes of a string shorter than a word), and only a string with a
 * byte of 0x80 or more is decoded. */
static inline bool utf8_ok(const uint8_t *s, size_t n)
{
    uint64_t acc = 0, w;
    if (n >= 8) {
        for (size_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&w, s + i, 8);
            acc |= w;
        }
        memcpy(&w, s + n - 8, 8);
        acc |= w;
    } else {
        for (size_t i = 0; i < n; i++)
            acc |= s[i];
    }
    return (acc & 0x8080808080808080ull) == 0 || utf8_check(s, n);
}

/* A length-prefixed value: a string (text) or bytes. */
static inline int lenval(struct vstate *v, size_t *pos, const char *what, bool text)
{
    int64_t n;
    size_t p = *pos;
    GET_LONG(v, p, n, what);
    if (n < 0)
        return fail(v, "%s has a negative length", what);
    if ((uint64_t)n > v->len - p)
        return fail(v, "%s of %" PRId64 " bytes goes beyond the block", what, n);
    if (text && !utf8_ok(v->d + p, (size_t)n))
        return fail(v, "%s is not valid UTF-8", what);
    *pos = p + (size_t)n;
    return 0;
}

/* One leaf op (is_leaf); a: its argument. */
static inline int leaf(struct vstate *v, uint8_t code, uint64_t a, uint32_t b, size_t *pos)
{
    size_t p = *pos;
    int64_t x;
    switch (code) {
    case OP_VARINT:
        for (uint32_t k = 0; k < b; k++)
            if (skip_varint(v, &p, (a >> k) & 1) < 0)
                return -EINVAL;
        break;
    case OP_BOOL:
        if (p >= v->len)
            return fail(v, "the block ends inside a boolean");
        if (v->d[p] > 1)
            return fail(v, "a boolean is %u, not 0 or 1", v->d[p]);
        p++;
        break;
    case OP_SKIP:
        if (a > v->len - p)
            return fail(v, "the block ends inside %" PRIu64 " bytes of floats, doubles or fixeds",
                        a);
        p += (size_t)a;
        break;
    case OP_STRING:
        if (lenval(v, &p, "a string", true) < 0)
            return -EINVAL;
        break;
    case OP_BYTES:
        if (lenval(v, &p, "a bytes value", false) < 0)
            return -EINVAL;
        break;
    case OP_ENUM:
        GET_LONG(v, p, x, "an enum");
        if (x < 0 || (uint64_t)x >= a)
            return fail(v, "enum index %" PRId64 " is not one of the %" PRIu64 " symbols", x, a);
        break;
    default:
        assert(!"not a leaf op");
        return fail(v, "internal error: op %u", code);
    }
    *pos = p;
    return 0;
}

static int run(struct vstate *v, uint32_t s, int depth);
static int blocks(struct vstate *v, const struct op *op, int depth, size_t *pos);

/* A value of sequence s, depth levels deep; a sequence of one op runs
 * without a call. */
static inline int value(struct vstate *v, uint32_t s, int depth, size_t *pos)
{
    const struct op *f = v->p->ops + v->p->seq[s];
    if (f->code == OP_END)
        return 0;
    if (f[1].code == OP_END && is_leaf(f->code))
        return leaf(v, f->code, f->a, f->b, pos);
    if (depth > BFS_VALIDATE_MAX_DEPTH)
        return fail(v, "values nested more than %d levels deep", BFS_VALIDATE_MAX_DEPTH);
    if (f[1].code == OP_END && (f->code == OP_ARRAY || f->code == OP_MAP))
        return blocks(v, f, depth + f->lvl + 1, pos);
    v->pos = *pos;
    if (run(v, s, depth) < 0)
        return -EINVAL;
    *pos = v->pos;
    return 0;
}

/* The blocks of an array or map whose items are sequence op->a. */
static int blocks(struct vstate *v, const struct op *op, int depth, size_t *pos)
{
    if (depth > BFS_VALIDATE_MAX_DEPTH)
        return fail(v, "values nested more than %d levels deep", BFS_VALIDATE_MAX_DEPTH);
    bool map = op->code == OP_MAP;
    const char *what = map ? "a map" : "an array";
    uint32_t item = (uint32_t)op->a;
    bool zero = v->p->zero[item];
    const struct op *f = v->p->ops + v->p->seq[item];
    bool one_varint = !map && f->code == OP_VARINT && f->b == 1 && f[1].code == OP_END;
    size_t p = *pos;
    for (;;) {
        int64_t count, size = -1;
        GET_LONG(v, p, count, "an array or map block count");
        if (count == 0)
            break;
        if (count == INT64_MIN)
            return fail(v, "%s block count is out of range", what);
        if (count < 0) {
            count = -count;
            GET_LONG(v, p, size, "an array or map block size");
            if (size < 0 || (uint64_t)size > v->len - p)
                return fail(v, "%s block size %" PRId64 " is not within the block", what, size);
        }
        if (zero && !map) {
            if ((uint64_t)count > *v->budget)
                return fail(v, "%s of %" PRId64 " empty items is too long", what, count);
            *v->budget -= (uint64_t)count;
        } else if ((uint64_t)count > v->len - p) {
            return fail(v, "%s block of %" PRId64 " items goes beyond the block", what, count);
        }
        size_t start = p;
        if (one_varint) { /* array of int or long */
            bool is_int = f->a & 1;
            for (int64_t i = 0; i < count; i++)
                if (skip_varint(v, &p, is_int) < 0)
                    return -EINVAL;
        } else {
            for (int64_t i = 0; i < count; i++) {
                if (map && lenval(v, &p, "a map key", true) < 0)
                    return -EINVAL;
                if (value(v, item, depth, &p) < 0)
                    return -EINVAL;
            }
        }
        if (size >= 0 && p - start != (uint64_t)size)
            return fail(v, "%s block's size %" PRId64 " does not match its %zu bytes", what, size,
                        p - start);
    }
    *pos = p;
    return 0;
}

/* Check one value of sequence s at v->pos; depth: values around it.
 *
 * Threaded dispatch (GNU C's labels as values, which gcc and clang have):
 * each op's code ends with its own indirect jump to the next op's, so the
 * branch predictor learns the sequences of a schema's fields per op, where
 * one shared `switch` jump was mispredicted at almost every field (perf: a
 * quarter of this function's time on that jump). The compiler makes only
 * codes of enum opcode. */
static int run(struct vstate *v, uint32_t s, int depth)
{
    /* cppcheck reads GNU C's label addresses (&&label) as booleans */
    static const void *const jump[] = {
        // cppcheck-suppress assignBoolToPointer
        [OP_END] = &&op_end,      [OP_VARINT] = &&op_varint, [OP_BOOL] = &&op_leaf,
        [OP_SKIP] = &&op_skip,    [OP_STRING] = &&op_string, [OP_BYTES] = &&op_leaf,
        [OP_ENUM] = &&op_leaf,    [OP_UNION] = &&op_union,   [OP_OPT] = &&op_opt,
        [OP_ARRAY] = &&op_blocks, [OP_MAP] = &&op_blocks,    [OP_CALL] = &&op_call,
    };
#define NEXT goto *jump[(++op)->code]
    const struct bfs_vprog *prog = v->p;
    const struct op *op = prog->ops + prog->seq[s];
    const uint8_t *d = v->d;
    size_t pos = v->pos;
    int64_t x;
    assert(op->code < sizeof jump / sizeof jump[0]);
    goto *jump[op->code];
op_end:
    v->pos = pos;
    return 0;
op_varint:
    if (op->b == 1) {
        if (skip_varint(v, &pos, op->a & 1) < 0)
            return -EINVAL;
        NEXT;
    }
    for (uint32_t k = 0; k < op->b; k++)
        if (skip_varint(v, &pos, (op->a >> k) & 1) < 0)
            return -EINVAL;
    NEXT;
op_skip:
    if (op->a > v->len - pos)
        return leaf(v, op->code, op->a, op->b, &pos);
    pos += (size_t)op->a;
    NEXT;
op_string:
    if (lenval(v, &pos, "a string", true) < 0)
        return -EINVAL;
    NEXT;
op_leaf: /* OP_BOOL, OP_BYTES, OP_ENUM */
    if (leaf(v, op->code, op->a, op->b, &pos) < 0)
        return -EINVAL;
    NEXT;
op_opt:
    /* Branch 0 or 1: one byte, 0 or 2. */
    if (pos < v->len && (d[pos] == 0 || d[pos] == 2)) {
        x = d[pos] >> 1;
        pos++;
    } else {
        GET_LONG(v, pos, x, "a union branch");
        if (x < 0 || x > 1)
            return fail(v, "union branch %" PRId64 " is not one of the 2 branches", x);
    }
    if ((uint32_t)x == op->b)
        NEXT; /* null */
    if (op->sub == OP_VARINT) {
        if (skip_varint(v, &pos, op->a & 1) < 0)
            return -EINVAL;
    } else if (op->sub == OP_STRING) {
        if (lenval(v, &pos, "a string", true) < 0)
            return -EINVAL;
    } else if (leaf(v, op->sub, op->a, 1, &pos) < 0) {
        return -EINVAL;
    }
    NEXT;
op_union:
    GET_LONG(v, pos, x, "a union branch");
    if (x < 0 || x >= (int64_t)op->b)
        return fail(v, "union branch %" PRId64 " is not one of the %u branches", x, op->b);
    if (value(v, prog->kids[op->a + (uint64_t)x], depth + op->lvl + 1, &pos) < 0)
        return -EINVAL;
    NEXT;
op_blocks: /* OP_ARRAY, OP_MAP */
    if (blocks(v, op, depth + op->lvl + 1, &pos) < 0)
        return -EINVAL;
    NEXT;
op_call:
    if (depth + op->lvl + 1 > BFS_VALIDATE_MAX_DEPTH)
        return fail(v, "values nested more than %d levels deep", BFS_VALIDATE_MAX_DEPTH);
    v->pos = pos;
    if (run(v, (uint32_t)op->a, depth + op->lvl + 1) < 0)
        return -EINVAL;
    pos = v->pos;
    NEXT;
#undef NEXT
}

int bfs_vprog_check(const struct bfs_vprog *p, const uint8_t *d, size_t len, size_t *pos,
                    uint64_t *budget, struct bfs_err *err)
{
    struct vstate v = {.p = p, .d = d, .len = len, .pos = *pos, .budget = budget, .err = err};
    if (*pos > len)
        return fail(&v, "position %zu is beyond the block's %zu bytes", *pos, len);
    if (run(&v, p->root, 0) < 0)
        return -EINVAL;
    *pos = v.pos;
    return 0;
}
