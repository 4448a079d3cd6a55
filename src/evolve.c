/* evolve.c - schema evolution: merged schemas and block conversion (evolve.h).
 *
 * Schemas (JSON texts, checked by bfs_schema_canonical first) are parsed with
 * jansson into a small tree: types in an array (struct ty, by index), named
 * types in another (struct def, by index, found by full name). The merge folds
 * the versions into the first one's tree (adding types and fields to it) and
 * writes the result with jansson. Strings (names, symbols) are borrowed from
 * the jansson trees a tree keeps (struct sch's keep), which live as long as it.
 *
 * A conversion is compiled, as the validator's program is (validate.c), into
 * flat sequences of ops: one for the writer's record, one per union branch,
 * array item, map value and called record. Running a sequence reads the
 * writer's bytes and appends the merged schema's bytes; every read is bounded
 * by the block, every count by the bytes left (or a budget of zero-byte
 * values), every nesting by BFS_VALIDATE_MAX_DEPTH.
 */
#include "battlefs/evolve.h"

#include "battlefs/lru.h"
#include "battlefs/ocf.h"
#include "battlefs/schema.h"
#include "battlefs/validate.h"
#include "battlefs/varint.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest nesting of types walked (schema.c accepts 200). */
#define MAX_TYPE_DEPTH 256

/* ------------------------------------------------------------------------ */
/* schema trees                                                              */

enum kind {
    K_NULL,
    K_BOOLEAN,
    K_INT,
    K_LONG,
    K_FLOAT,
    K_DOUBLE,
    K_BYTES,
    K_STRING,
    K_RECORD,
    K_ENUM,
    K_FIXED,
    K_ARRAY,
    K_MAP,
    K_UNION,
};

static const char *const kind_name[] = {"null",   "boolean", "int",    "long",   "float",
                                        "double", "bytes",   "string", "record", "enum",
                                        "fixed",  "array",   "map",    "union"};

static bool is_named(enum kind k)
{
    return k == K_RECORD || k == K_ENUM || k == K_FIXED;
}

struct ty {
    enum kind k;
    json_t *extra; /* kept attributes (a reference), or NULL */
    uint32_t sub;  /* ARRAY: items, MAP: values (types); RECORD, ENUM, FIXED: the def */
    uint32_t *br;  /* UNION: the branches (types) */
    size_t nbr, capbr;
};

struct fld {
    const char *name;
    uint32_t ty;
    json_t *extra;
    bool nulldef; /* "default": null */
};

struct def {
    const char *full; /* full name */
    enum kind k;
    json_t *extra;
    struct fld *f; /* RECORD */
    size_t nf, capf;
    const char **sym; /* ENUM */
    size_t nsym, capsym;
    json_int_t size; /* FIXED */
};

struct sch {
    struct ty *t;
    size_t nt, capt;
    struct def *d;
    size_t nd, capd;
    json_t *names; /* full name -> def index */
    json_t *keep;  /* the JSON trees and strings whose text is borrowed */
    uint32_t root;
};

static void sch_free(struct sch *s)
{
    for (size_t i = 0; i < s->nt; i++) {
        json_decref(s->t[i].extra);
        free(s->t[i].br);
    }
    for (size_t i = 0; i < s->nd; i++) {
        json_decref(s->d[i].extra);
        for (size_t k = 0; k < s->d[i].nf; k++)
            json_decref(s->d[i].f[k].extra);
        free(s->d[i].f);
        free(s->d[i].sym);
    }
    free(s->t);
    free(s->d);
    json_decref(s->names);
    json_decref(s->keep);
    memset(s, 0, sizeof *s);
}

static int nomem(struct bfs_err *err)
{
    return bfs_err_set(err, -ENOMEM, "out of memory");
}

static int new_ty(struct sch *s, enum kind k, json_t *extra, uint32_t *id)
{
    if (s->nt >= UINT32_MAX || bfs_array_reserve(&s->t, &s->capt, s->nt + 1, sizeof *s->t) < 0)
        return -ENOMEM;
    s->t[s->nt] = (struct ty){.k = k, .extra = json_incref(extra)};
    *id = (uint32_t)s->nt++;
    return 0;
}

static int add_branch(struct sch *s, uint32_t u, uint32_t b)
{
    struct ty *t = &s->t[u];
    if (bfs_array_reserve(&t->br, &t->capbr, t->nbr + 1, sizeof *t->br) < 0)
        return -ENOMEM;
    t->br[t->nbr++] = b;
    return 0;
}

static int new_def(struct sch *s, const char *full, enum kind k, json_t *extra, uint32_t *id)
{
    if (s->nd >= UINT32_MAX || bfs_array_reserve(&s->d, &s->capd, s->nd + 1, sizeof *s->d) < 0)
        return -ENOMEM;
    json_t *ix = json_integer((json_int_t)s->nd);
    if (!ix || json_object_set_new(s->names, full, ix) < 0)
        return -ENOMEM;
    s->d[s->nd] = (struct def){.full = full, .k = k, .extra = json_incref(extra)};
    *id = (uint32_t)s->nd++;
    return 0;
}

static int add_field(struct def *d, struct fld f)
{
    if (bfs_array_reserve(&d->f, &d->capf, d->nf + 1, sizeof *d->f) < 0)
        return -ENOMEM;
    d->f[d->nf++] = f;
    return 0;
}

static int add_symbol(struct def *d, const char *sym)
{
    if (bfs_array_reserve(&d->sym, &d->capsym, d->nsym + 1, sizeof *d->sym) < 0)
        return -ENOMEM;
    d->sym[d->nsym++] = sym;
    return 0;
}

/* A string the tree keeps (its text lives as long as s). */
static const char *keep_str(struct sch *s, json_t *str)
{
    if (!str || json_array_append_new(s->keep, str) < 0)
        return NULL;
    return json_string_value(str);
}

static long def_of(const struct sch *s, const char *full)
{
    json_t *ix = json_object_get(s->names, full);
    return ix ? (long)json_integer_value(ix) : -1;
}

static int primitive_kind(const char *name, enum kind *k)
{
    for (int i = K_NULL; i <= K_STRING; i++) {
        if (strcmp(name, kind_name[i]) == 0) {
            *k = (enum kind)i;
            return 0;
        }
    }
    return -1;
}

/* The attributes of obj except those in skip (NULL-terminated) and "doc": a
 * new object, or NULL when none are left (*rc -ENOMEM on failure). */
static json_t *extras(json_t *obj, const char *const *skip, int *rc)
{
    json_t *x = NULL;
    const char *key;
    json_t *val;
    for (void *it1 = json_object_iter(obj);
         it1 && ((key = json_object_iter_key(it1)), (val = json_object_iter_value(it1)));
         it1 = json_object_iter_next(obj, it1)) {
        bool drop = strcmp(key, "doc") == 0;
        for (const char *const *s = skip; *s && !drop; s++)
            drop = strcmp(key, *s) == 0;
        if (drop)
            continue;
        if ((!x && !(x = json_object())) || json_object_set(x, key, val) < 0) {
            *rc = -ENOMEM;
            break;
        }
    }
    return x;
}

struct parser {
    struct sch *s;
    struct bfs_err *err;
};

static int parse_ty(struct parser *p, json_t *j, const char *ns, int depth, uint32_t *id);

/* The namespace of a full name, kept by the tree. */
static const char *ns_of(struct sch *s, const char *full)
{
    const char *dot = strrchr(full, '.');
    return dot ? keep_str(s, json_stringn(full, (size_t)(dot - full))) : "";
}

static int parse_named(struct parser *p, json_t *j, enum kind k, const char *ns, int depth,
                       uint32_t *id)
{
    static const char *const skip[] = {"type",    "name", "namespace", "fields",
                                       "symbols", "size", NULL};
    struct sch *s = p->s;
    const char *name = json_string_value(json_object_get(j, "name"));
    json_t *jns = json_object_get(j, "namespace");
    const char *space = json_is_string(jns) ? json_string_value(jns) : ns;
    if (!name)
        return bfs_err_set(p->err, -EINVAL, "a %s without a name", kind_name[k]);
    json_t *fs =
        strchr(name, '.') || !space[0] ? json_string(name) : json_sprintf("%s.%s", space, name);
    const char *full = keep_str(s, fs);
    const char *inner = full ? ns_of(s, full) : NULL;
    if (!inner)
        return nomem(p->err);
    if (def_of(s, full) >= 0)
        return bfs_err_set(p->err, -EINVAL, "type %s is defined twice", full);
    int rc = 0;
    json_t *x = extras(j, skip, &rc);
    uint32_t di;
    if (rc == 0)
        rc = new_def(s, full, k, x, &di);
    json_decref(x);
    if (rc == 0)
        rc = new_ty(s, k, NULL, id);
    if (rc < 0)
        return nomem(p->err);
    s->t[*id].sub = di;
    if (k == K_FIXED) {
        json_t *size = json_object_get(j, "size");
        json_int_t n = json_is_integer(size) ? json_integer_value(size) : -1;
        if (json_is_string(size))
            n = strtoll(json_string_value(size), NULL, 10);
        if (n < 0)
            return bfs_err_set(p->err, -EINVAL, "fixed %s without a valid size", full);
        s->d[di].size = n;
    } else if (k == K_ENUM) {
        json_t *syms = json_object_get(j, "symbols");
        size_t i;
        json_t *sym;
        for (i = 0; i < json_array_size(syms) && (sym = json_array_get(syms, i)); i++) {
            if (!json_is_string(sym))
                return bfs_err_set(p->err, -EINVAL, "enum %s: a symbol is not a string", full);
            if (add_symbol(&s->d[di], json_string_value(sym)) < 0)
                return nomem(p->err);
        }
    } else {
        static const char *const fskip[] = {"name", "type", "default", NULL};
        json_t *fields = json_object_get(j, "fields");
        size_t i;
        json_t *f;
        for (i = 0; i < json_array_size(fields) && (f = json_array_get(fields, i)); i++) {
            const char *fname = json_string_value(json_object_get(f, "name"));
            json_t *ft = json_object_get(f, "type");
            if (!fname || !ft)
                return bfs_err_set(p->err, -EINVAL, "record %s: a field without name or type",
                                   full);
            uint32_t fty;
            if ((rc = parse_ty(p, ft, inner, depth + 1, &fty)) < 0)
                return rc;
            json_t *dflt = json_object_get(f, "default");
            struct fld fl = {.name = fname, .ty = fty, .nulldef = dflt && json_is_null(dflt)};
            fl.extra = extras(f, fskip, &rc);
            if (rc < 0 || add_field(&s->d[di], fl) < 0) {
                json_decref(fl.extra);
                return nomem(p->err);
            }
        }
    }
    return 0;
}

/* A reference to a named type: the enclosing namespace first, then as it is. */
static int parse_ref(struct parser *p, const char *name, const char *ns, uint32_t *id)
{
    struct sch *s = p->s;
    long di = -1;
    if (!strchr(name, '.') && ns[0]) {
        json_t *full = json_sprintf("%s.%s", ns, name);
        if (!full)
            return nomem(p->err);
        di = def_of(s, json_string_value(full));
        json_decref(full);
    }
    if (di < 0)
        di = def_of(s, name);
    if (di < 0)
        return bfs_err_set(p->err, -EINVAL, "unknown type %s", name);
    if (new_ty(s, s->d[di].k, NULL, id) < 0)
        return nomem(p->err);
    s->t[*id].sub = (uint32_t)di;
    return 0;
}

static int parse_ty(struct parser *p, json_t *j, const char *ns, int depth, uint32_t *id)
{
    struct sch *s = p->s;
    enum kind k;
    int rc = 0;
    if (depth > MAX_TYPE_DEPTH)
        return bfs_err_set(p->err, -EINVAL, "schema nested more than %d levels deep",
                           MAX_TYPE_DEPTH);
    if (json_is_string(j)) {
        if (primitive_kind(json_string_value(j), &k) == 0)
            return new_ty(s, k, NULL, id) < 0 ? nomem(p->err) : 0;
        return parse_ref(p, json_string_value(j), ns, id);
    }
    if (json_is_array(j)) {
        if (new_ty(s, K_UNION, NULL, id) < 0)
            return nomem(p->err);
        size_t i;
        json_t *b;
        for (i = 0; i < json_array_size(j) && (b = json_array_get(j, i)); i++) {
            uint32_t bt;
            if ((rc = parse_ty(p, b, ns, depth + 1, &bt)) < 0)
                return rc;
            if (s->t[bt].k == K_UNION)
                return bfs_err_set(p->err, -EINVAL, "a union directly inside a union");
            if (add_branch(s, *id, bt) < 0)
                return nomem(p->err);
        }
        return 0;
    }
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type)
        return bfs_err_set(p->err, -EINVAL, "a schema object without a string \"type\"");
    if (primitive_kind(type, &k) == 0) {
        static const char *const skip[] = {"type", NULL};
        json_t *x = extras(j, skip, &rc);
        if (rc == 0)
            rc = new_ty(s, k, x, id);
        json_decref(x);
        return rc < 0 ? nomem(p->err) : 0;
    }
    if (strcmp(type, "record") == 0)
        return parse_named(p, j, K_RECORD, ns, depth, id);
    if (strcmp(type, "enum") == 0)
        return parse_named(p, j, K_ENUM, ns, depth, id);
    if (strcmp(type, "fixed") == 0)
        return parse_named(p, j, K_FIXED, ns, depth, id);
    bool arr = strcmp(type, "array") == 0;
    if (arr || strcmp(type, "map") == 0) {
        static const char *const askip[] = {"type", "items", NULL};
        static const char *const mskip[] = {"type", "values", NULL};
        json_t *x = extras(j, arr ? askip : mskip, &rc);
        if (rc == 0)
            rc = new_ty(s, arr ? K_ARRAY : K_MAP, x, id);
        json_decref(x);
        if (rc < 0)
            return nomem(p->err);
        uint32_t sub;
        json_t *jsub = json_object_get(j, arr ? "items" : "values");
        if (!jsub)
            return bfs_err_set(p->err, -EINVAL, "%s without %s", type, arr ? "items" : "values");
        if ((rc = parse_ty(p, jsub, ns, depth + 1, &sub)) < 0)
            return rc;
        s->t[*id].sub = sub;
        return 0;
    }
    return parse_ref(p, type, ns, id);
}

/* Parse the schema json[0..len) (checked by bfs_schema_canonical before). */
static int sch_parse(const char *json, size_t len, struct sch *s, struct bfs_err *err)
{
    memset(s, 0, sizeof *s);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    s->names = json_object();
    s->keep = json_array();
    if (!root || !s->names || !s->keep || json_array_append_new(s->keep, root) < 0) {
        if (!root && json_error_code(&jerr) != json_error_out_of_memory) {
            sch_free(s);
            return bfs_err_set(err, -EINVAL, "schema is not JSON: %s", jerr.text);
        }
        sch_free(s);
        return nomem(err);
    }
    struct parser p = {.s = s, .err = err};
    int rc = parse_ty(&p, root, "", 0, &s->root);
    if (rc < 0)
        sch_free(s);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* merging                                                                   */

/* Where a type is, for messages: a record and one of its fields. */
struct where {
    const char *rec;
    const char *fld; /* NULL: the record itself */
};

struct mstep {
    struct sch *a;       /* the fold so far, added to */
    const struct sch *b; /* the next version */
    json_t *memo;        /* full names of b's named types merged in this step */
    struct bfs_err *err;
};

static int merge_ty(struct mstep *m, uint32_t at, uint32_t bt, struct where w, int depth,
                    uint32_t *out);
static int imp_ty(struct mstep *m, uint32_t bt, struct where w, int depth, uint32_t *out);

static int where_fail(struct bfs_err *err, struct where w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int where_fail(struct bfs_err *err, struct where w, const char *fmt, ...)
{
    char what[BFS_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (w.fld)
        return bfs_err_set(err, -EINVAL, "field %s.%s: %s", w.rec, w.fld, what);
    return bfs_err_set(err, -EINVAL, "record %s: %s", w.rec, what);
}

/* "int", "record Foo": a type for messages (tmp holds it). */
static const char *describe(const struct sch *s, uint32_t t, char *tmp, size_t n)
{
    const struct ty *ty = &s->t[t];
    if (is_named(ty->k))
        snprintf(tmp, n, "%s %s", kind_name[ty->k], s->d[ty->sub].full);
    else
        snprintf(tmp, n, "%s", kind_name[ty->k]);
    return tmp;
}

static int no_merge(struct mstep *m, struct where w, uint32_t at, uint32_t bt)
{
    char x[300], y[300];
    return where_fail(m->err, w, "%s and %s do not merge", describe(m->a, at, x, sizeof x),
                      describe(m->b, bt, y, sizeof y));
}

/* Whether a value of kind from resolves to kind to by promotion. */
static bool promotes(enum kind from, enum kind to)
{
    switch (from) {
    case K_INT:
        return to == K_LONG || to == K_FLOAT || to == K_DOUBLE;
    case K_LONG:
        return to == K_FLOAT || to == K_DOUBLE;
    case K_FLOAT:
        return to == K_DOUBLE;
    case K_STRING:
        return to == K_BYTES;
    default:
        return false;
    }
}

/* Whether two non-union types are the same union branch: the same primitive,
 * named types of one full name, two arrays, two maps. */
static bool same_branch(const struct sch *a, uint32_t at, const struct sch *b, uint32_t bt)
{
    const struct ty *x = &a->t[at], *y = &b->t[bt];
    if (x->k != y->k)
        return false;
    return !is_named(x->k) || strcmp(a->d[x->sub].full, b->d[y->sub].full) == 0;
}

static int merge_record(struct mstep *m, uint32_t ad, uint32_t bd, int depth);

/* b's named type bd in a: merged into a's type of that name, or copied. */
static int visit_named(struct mstep *m, uint32_t bd, struct where w, int depth, uint32_t *out)
{
    struct sch *a = m->a;
    const struct def *b = &m->b->d[bd];
    long ad = def_of(a, b->full);
    if (ad >= 0 && a->d[ad].k != b->k) {
        return where_fail(m->err, w, "%s and %s do not merge", kind_name[a->d[ad].k],
                          kind_name[b->k]);
    }
    bool seen = json_object_get(m->memo, b->full) != NULL;
    if (!seen && json_object_set_new(m->memo, b->full, json_true()) < 0)
        return nomem(m->err);
    if (ad >= 0) {
        *out = (uint32_t)ad;
        if (seen)
            return 0;
        if (b->k == K_RECORD)
            return merge_record(m, (uint32_t)ad, bd, depth + 1);
        if (b->k == K_FIXED && a->d[ad].size != b->size) {
            return where_fail(m->err, w,
                              "fixed %s of sizes %" JSON_INTEGER_FORMAT " and %" JSON_INTEGER_FORMAT
                              " do not merge",
                              b->full, a->d[ad].size, b->size);
        }
        if (b->k == K_ENUM) {
            json_t *syms = json_object();
            int rc = syms ? 0 : -ENOMEM;
            for (size_t i = 0; i < a->d[ad].nsym && rc == 0; i++)
                rc = json_object_set_new(syms, a->d[ad].sym[i], json_true());
            for (size_t i = 0; i < b->nsym && rc == 0; i++)
                if (!json_object_get(syms, b->sym[i]))
                    rc = add_symbol(&a->d[ad], b->sym[i]);
            json_decref(syms);
            if (rc < 0)
                return nomem(m->err);
        }
        return 0;
    }
    uint32_t nd;
    if (new_def(a, b->full, b->k, b->extra, &nd) < 0)
        return nomem(m->err);
    *out = nd;
    struct def *d = &a->d[nd];
    d->size = b->size;
    for (size_t i = 0; i < b->nsym; i++)
        if (add_symbol(d, b->sym[i]) < 0)
            return nomem(m->err);
    for (size_t i = 0; i < b->nf; i++) {
        uint32_t t;
        int rc = imp_ty(m, b->f[i].ty, (struct where){b->full, b->f[i].name}, depth + 1, &t);
        if (rc < 0)
            return rc;
        struct fld f = b->f[i];
        f.ty = t;
        json_incref(f.extra);
        if (add_field(&a->d[nd], f) < 0) {
            json_decref(f.extra);
            return nomem(m->err);
        }
    }
    return 0;
}

/* A copy of b's type bt in a. */
static int imp_ty(struct mstep *m, uint32_t bt, struct where w, int depth, uint32_t *out)
{
    const struct ty *y = &m->b->t[bt];
    if (depth > MAX_TYPE_DEPTH)
        return where_fail(m->err, w, "nested more than %d levels deep", MAX_TYPE_DEPTH);
    uint32_t id, sub = 0;
    int rc = 0;
    if (is_named(y->k))
        rc = visit_named(m, y->sub, w, depth, &sub);
    else if (y->k == K_ARRAY || y->k == K_MAP)
        rc = imp_ty(m, y->sub, w, depth + 1, &sub);
    if (rc < 0)
        return rc;
    if (new_ty(m->a, y->k, y->extra, &id) < 0)
        return nomem(m->err);
    m->a->t[id].sub = sub;
    for (size_t i = 0; i < y->nbr; i++) {
        uint32_t b;
        if ((rc = imp_ty(m, y->br[i], w, depth + 1, &b)) < 0)
            return rc;
        if (add_branch(m->a, id, b) < 0)
            return nomem(m->err);
    }
    *out = id;
    return 0;
}

static int merge_union(struct mstep *m, uint32_t at, uint32_t bt, struct where w, int depth,
                       uint32_t *out)
{
    struct sch *a = m->a;
    const struct sch *b = m->b;
    uint32_t u = at;
    if (a->t[at].k != K_UNION) {
        if (new_ty(a, K_UNION, NULL, &u) < 0 || add_branch(a, u, at) < 0)
            return nomem(m->err);
    }
    const struct ty *y = &b->t[bt];
    size_t n = y->k == K_UNION ? y->nbr : 1;
    for (size_t j = 0; j < n; j++) {
        uint32_t bb = y->k == K_UNION ? y->br[j] : bt;
        size_t i = 0;
        while (i < a->t[u].nbr && !same_branch(a, a->t[u].br[i], b, bb))
            i++;
        uint32_t r;
        int rc = i < a->t[u].nbr ? merge_ty(m, a->t[u].br[i], bb, w, depth + 1, &r)
                                 : imp_ty(m, bb, w, depth + 1, &r);
        if (rc < 0)
            return rc;
        if (i < a->t[u].nbr)
            a->t[u].br[i] = r;
        else if (add_branch(a, u, r) < 0)
            return nomem(m->err);
    }
    *out = u;
    return 0;
}

static int merge_ty(struct mstep *m, uint32_t at, uint32_t bt, struct where w, int depth,
                    uint32_t *out)
{
    struct sch *a = m->a;
    const struct sch *b = m->b;
    if (depth > MAX_TYPE_DEPTH)
        return where_fail(m->err, w, "nested more than %d levels deep", MAX_TYPE_DEPTH);
    enum kind ka = a->t[at].k, kb = b->t[bt].k;
    *out = at;
    if (ka == K_UNION || kb == K_UNION)
        return merge_union(m, at, bt, w, depth, out);
    if (ka == kb && (ka == K_ARRAY || ka == K_MAP)) {
        uint32_t sub;
        int rc = merge_ty(m, a->t[at].sub, b->t[bt].sub, w, depth + 1, &sub);
        if (rc == 0)
            a->t[at].sub = sub;
        return rc;
    }
    if (ka == kb && is_named(ka)) {
        if (!same_branch(a, at, b, bt))
            return no_merge(m, w, at, bt);
        uint32_t d;
        return visit_named(m, b->t[bt].sub, w, depth, &d);
    }
    if (ka == kb || promotes(kb, ka))
        return 0;
    if (promotes(ka, kb)) {
        /* The wider type, with its own attributes. */
        json_decref(a->t[at].extra);
        a->t[at].k = kb;
        a->t[at].extra = json_incref(b->t[bt].extra);
        return 0;
    }
    return no_merge(m, w, at, bt);
}

/* Record bd of b into record ad of a: fields matched by name, fields new in
 * b inserted after their nearest preceding field of b that a has. */
static int merge_record(struct mstep *m, uint32_t ad, uint32_t bd, int depth)
{
    struct sch *a = m->a;
    const struct def *b = &m->b->d[bd];
    size_t na = a->d[ad].nf, nb = b->nf;
    json_t *bix = json_object();
    json_t *aix = json_object();
    long *bpos = malloc((na + 1) * sizeof *bpos);
    struct fld *nf = malloc((na + nb + 1) * sizeof *nf);
    long *src = malloc((na + nb + 1) * sizeof *src); /* b's field, or -1 for a's */
    int rc = bix && aix && bpos && nf && src ? 0 : -ENOMEM;
    for (size_t j = 0; j < nb && rc == 0; j++)
        rc = json_object_set_new(bix, b->f[j].name, json_integer((json_int_t)j));
    for (size_t i = 0; i < na && rc == 0; i++)
        rc = json_object_set_new(aix, a->d[ad].f[i].name, json_true());
    if (rc < 0)
        rc = nomem(m->err);
    /* The fields a has: types merged, or nullable when b lacks them. */
    for (size_t i = 0; i < na && rc == 0; i++) {
        json_t *jx = json_object_get(bix, a->d[ad].f[i].name);
        bpos[i] = jx ? (long)json_integer_value(jx) : -1;
        struct where w = {a->d[ad].full, a->d[ad].f[i].name};
        uint32_t t;
        if (bpos[i] < 0) {
            a->d[ad].f[i].nulldef = true;
        } else if ((rc = merge_ty(m, a->d[ad].f[i].ty, b->f[bpos[i]].ty, w, depth + 1, &t)) == 0) {
            a->d[ad].f[i].ty = t;
            a->d[ad].f[i].nulldef |= b->f[bpos[i]].nulldef;
        }
    }
    /* The new order: b's new fields before the first b field a has, then each
     * field of a followed by the new fields that follow it in b. */
    size_t n = 0;
    for (size_t i = 0; i <= na && rc == 0; i++) {
        size_t j = 0;
        if (i > 0) {
            src[n] = -1;
            nf[n++] = a->d[ad].f[i - 1];
            if (bpos[i - 1] < 0)
                continue;
            j = (size_t)bpos[i - 1] + 1;
        }
        for (; j < nb && !json_object_get(aix, b->f[j].name) && rc == 0; j++) {
            struct fld f = b->f[j];
            rc = imp_ty(m, f.ty, (struct where){b->full, f.name}, depth + 1, &f.ty);
            f.nulldef = true;
            src[n] = (long)j;
            nf[n++] = f;
        }
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) /* the new fields' own references */
            if (src[i] >= 0)
                json_incref(nf[i].extra);
        free(a->d[ad].f);
        a->d[ad].f = nf;
        a->d[ad].nf = n;
        a->d[ad].capf = na + nb + 1;
        nf = NULL;
    }
    free(nf);
    free(src);
    free(bpos);
    json_decref(aix);
    json_decref(bix);
    return rc;
}

/* A field with "default": null: "null" its type's first branch. */
static int make_nullable(struct sch *s, struct fld *f)
{
    struct ty *t = &s->t[f->ty];
    if (t->k == K_NULL)
        return 0;
    if (t->k == K_UNION) {
        size_t i = 0;
        while (i < t->nbr && s->t[t->br[i]].k != K_NULL)
            i++;
        if (i == t->nbr) {
            uint32_t nul;
            if (new_ty(s, K_NULL, NULL, &nul) < 0 || add_branch(s, f->ty, nul) < 0)
                return -ENOMEM;
            t = &s->t[f->ty];
        }
        uint32_t nul = t->br[i];
        memmove(t->br + 1, t->br, i * sizeof *t->br);
        t->br[0] = nul;
        return 0;
    }
    uint32_t u, nul;
    if (new_ty(s, K_UNION, NULL, &u) < 0 || new_ty(s, K_NULL, NULL, &nul) < 0 ||
        add_branch(s, u, nul) < 0 || add_branch(s, u, f->ty) < 0)
        return -ENOMEM;
    f->ty = u;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* writing a merged schema                                                   */

static json_t *emit_ty(const struct sch *s, uint32_t t, const char *ns, json_t *defined, int depth);

/* obj with the kept attributes added; NULL (obj freed) on failure. */
static json_t *with_extra(json_t *obj, json_t *extra)
{
    if (obj && extra && json_object_update(obj, extra) < 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

static json_t *emit_def(const struct sch *s, uint32_t di, const char *ns, json_t *defined,
                        int depth)
{
    const struct def *d = &s->d[di];
    if (json_object_get(defined, d->full))
        return json_string(d->full);
    if (json_object_set_new(defined, d->full, json_true()) < 0)
        return NULL;
    const char *dot = strrchr(d->full, '.');
    size_t nslen = dot ? (size_t)(dot - d->full) : 0;
    json_t *o = json_object();
    json_t *space = json_stringn(d->full, nslen);
    int rc = o && space ? 0 : -1;
    if (rc == 0)
        rc = json_object_set_new(o, "type", json_string(kind_name[d->k]));
    if (rc == 0)
        rc = json_object_set_new(o, "name", json_string(dot ? dot + 1 : d->full));
    if (rc == 0 && strcmp(json_string_value(space), ns) != 0)
        rc = json_object_set(o, "namespace", space);
    if (rc == 0 && d->k == K_FIXED)
        rc = json_object_set_new(o, "size", json_integer(d->size));
    if (rc == 0 && d->k == K_ENUM) {
        json_t *syms = json_array();
        rc = syms ? json_object_set_new(o, "symbols", syms) : -1;
        for (size_t i = 0; i < d->nsym && rc == 0; i++)
            rc = json_array_append_new(syms, json_string(d->sym[i]));
    }
    if (rc == 0 && d->k == K_RECORD) {
        json_t *fields = json_array();
        rc = fields ? json_object_set_new(o, "fields", fields) : -1;
        for (size_t i = 0; i < d->nf && rc == 0; i++) {
            json_t *f = with_extra(json_object(), d->f[i].extra);
            rc = f ? json_array_append_new(fields, f) : -1;
            if (rc == 0)
                rc = json_object_set_new(f, "name", json_string(d->f[i].name));
            if (rc == 0)
                rc = json_object_set_new(
                    f, "type",
                    emit_ty(s, d->f[i].ty, json_string_value(space), defined, depth + 1));
            if (rc == 0 && d->f[i].nulldef)
                rc = json_object_set_new(f, "default", json_null());
        }
    }
    json_decref(space);
    if (rc < 0) {
        json_decref(o);
        return NULL;
    }
    return with_extra(o, d->extra);
}

static json_t *emit_ty(const struct sch *s, uint32_t t, const char *ns, json_t *defined, int depth)
{
    const struct ty *ty = &s->t[t];
    if (depth > 2 * MAX_TYPE_DEPTH)
        return NULL;
    if (is_named(ty->k))
        return emit_def(s, ty->sub, ns, defined, depth);
    if (ty->k == K_UNION) {
        json_t *u = json_array();
        for (size_t i = 0; u && i < ty->nbr; i++) {
            if (json_array_append_new(u, emit_ty(s, ty->br[i], ns, defined, depth + 1)) < 0) {
                json_decref(u);
                return NULL;
            }
        }
        return u;
    }
    if (ty->k != K_ARRAY && ty->k != K_MAP && !ty->extra)
        return json_string(kind_name[ty->k]);
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "type", json_string(kind_name[ty->k])) < 0 ||
        ((ty->k == K_ARRAY || ty->k == K_MAP) &&
         json_object_set_new(o, ty->k == K_ARRAY ? "items" : "values",
                             emit_ty(s, ty->sub, ns, defined, depth + 1)) < 0)) {
        json_decref(o);
        return NULL;
    }
    return with_extra(o, ty->extra);
}

/* ------------------------------------------------------------------------ */
/* bfs_schema_merge                                                          */

struct version {
    const char *json;
    size_t len;
    char *canon;
    size_t canon_len;
    uint64_t fp;
};

static int version_cmp(const void *x, const void *y)
{
    const struct version *a = x, *b = y;
    if (a->fp != b->fp)
        return a->fp < b->fp ? -1 : 1;
    int c = strcmp(a->canon, b->canon);
    if (c)
        return c;
    size_t n = a->len < b->len ? a->len : b->len;
    c = memcmp(a->json, b->json, n);
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static int copy_out(const char *s, size_t n, char **out, size_t *out_len, struct bfs_err *err)
{
    if (!(*out = malloc(n + 1)))
        return nomem(err);
    memcpy(*out, s, n);
    (*out)[n] = '\0';
    *out_len = n;
    return 0;
}

/* Fold the distinct versions v[0..n) (n >= 2) and write the result. */
static int fold(struct version *v, size_t n, char **out, size_t *out_len, struct bfs_err *err)
{
    struct sch *s = calloc(n, sizeof *s);
    if (!s)
        return nomem(err);
    size_t parsed = 0;
    int rc = 0;
    for (; parsed < n && rc == 0; parsed++) {
        if ((rc = sch_parse(v[parsed].json, v[parsed].len, &s[parsed], err)) < 0)
            break; /* freed */
        if (s[parsed].t[s[parsed].root].k != K_RECORD)
            rc = bfs_err_set(err, -EINVAL, "a schema's top level is a %s, not a record",
                             kind_name[s[parsed].t[s[parsed].root].k]);
    }
    const char *name0 = rc == 0 ? s[0].d[s[0].t[s[0].root].sub].full : NULL;
    for (size_t i = 1; i < n && rc == 0; i++) {
        const char *name = s[i].d[s[i].t[s[i].root].sub].full;
        if (strcmp(name0, name) != 0)
            rc = bfs_err_set(err, -EINVAL, "record names differ: %s and %s", name0, name);
    }
    for (size_t i = 1; i < n && rc == 0; i++) {
        struct mstep m = {.a = &s[0], .b = &s[i], .memo = json_object(), .err = err};
        uint32_t d;
        rc = m.memo ? visit_named(&m, s[i].t[s[i].root].sub, (struct where){name0, NULL}, 0, &d)
                    : nomem(err);
        json_decref(m.memo);
    }
    for (size_t di = 0; rc == 0 && di < s[0].nd; di++)
        for (size_t i = 0; rc == 0 && i < s[0].d[di].nf; i++)
            if (s[0].d[di].f[i].nulldef && make_nullable(&s[0], &s[0].d[di].f[i]) < 0)
                rc = nomem(err);
    json_t *defined = rc == 0 ? json_object() : NULL;
    json_t *root = defined ? emit_ty(&s[0], s[0].root, "", defined, 0) : NULL;
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (rc == 0 && !text)
        rc = nomem(err);
    json_decref(root);
    json_decref(defined);
    for (size_t i = 0; i < parsed; i++)
        sch_free(&s[i]);
    free(s);
    if (rc < 0)
        return rc;
    /* What was written must be a schema (a check of this module). */
    char *canon;
    size_t canon_len;
    rc = bfs_schema_canonical(text, strlen(text), &canon, &canon_len, err);
    if (rc == 0) {
        free(canon);
        *out = text;
        *out_len = strlen(text);
        return 0;
    }
    free(text);
    return rc == -ENOMEM ? rc : bfs_err_prefix(err, "the merged schema is not valid");
}

int bfs_schema_merge(const char *const *json, const size_t *len, size_t n, char **out,
                     size_t *out_len, struct bfs_err *err)
{
    *out = NULL;
    *out_len = 0;
    bfs_err_clear(err);
    if (n == 0)
        return bfs_err_set(err, -EINVAL, "no schemas to merge");
    struct version *v = calloc(n, sizeof *v);
    if (!v)
        return nomem(err);
    int rc = 0;
    size_t done = 0;
    for (; done < n && rc == 0; done++) {
        v[done].json = json[done];
        v[done].len = len[done];
        rc = bfs_schema_canonical(json[done], len[done], &v[done].canon, &v[done].canon_len, err);
        if (rc == -EINVAL)
            bfs_err_prefix(err, "schema %zu", done + 1);
        else if (rc == 0)
            v[done].fp = bfs_schema_rabin(v[done].canon, v[done].canon_len);
    }
    size_t distinct = 0;
    if (rc == 0) {
        qsort(v, n, sizeof *v, version_cmp);
        for (size_t i = 0; i < n; i++) {
            if (distinct && strcmp(v[distinct - 1].canon, v[i].canon) == 0)
                continue;
            struct version t = v[distinct];
            v[distinct++] = v[i];
            v[i] = t;
        }
        if (distinct == 1)
            rc = copy_out(json[0], len[0], out, out_len, err);
        else
            rc = fold(v, distinct, out, out_len, err);
    }
    for (size_t i = 0; i < n; i++)
        free(v[i].canon);
    free(v);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* conversion programs                                                       */

enum copcode {
    C_END,
    C_VARINT,  /* a: ints or longs in a row, copied */
    C_COPY,    /* a: bytes copied (booleans, floats, doubles, fixed) */
    C_LEN,     /* a string or bytes, copied */
    C_I2F,     /* an int or long written as a float */
    C_I2D,     /* an int or long written as a double */
    C_F2D,     /* a float written as a double */
    C_PUT,     /* n bytes of put written (a union index, nulls of missing fields) */
    C_UNION,   /* b branches: maps[a + index] */
    C_ENUM,    /* b symbols: maps[a + index] */
    C_ARRAY,   /* a: the items' sequence */
    C_MAP,     /* a: the values' sequence */
    C_CALL,    /* a: a record's sequence */
    C_REORDER, /* a: reorders[a] */
};

struct cop {
    uint8_t code;
    uint8_t n;
    uint8_t put[10];
    uint32_t b;
    uint64_t a;
};

/* A writer's index (union branch, enum symbol) read: what to write, and the
 * value's sequence (unions). n 0: nothing written. */
struct cmap {
    uint8_t n;
    uint8_t idx[10];
    uint32_t seq;
};

/* A record whose fields the merged schema orders differently: each writer
 * field converted by its own sequence (wseq[first_w ..]), then the merged
 * fields written from those spans (mfield[first_m ..]: the writer's field, or
 * -1 and the null index bytes). */
struct reorder {
    uint32_t nw, first_w, nm, first_m;
};

struct mfield {
    int32_t w;
    uint8_t n;
    uint8_t idx[10];
};

struct bfs_conv {
    atomic_int refs;
    enum bfs_codec codec;
    uint8_t msync[16];
    bool identity; /* the same canonical form: records are copied */
    struct cop *ops;
    size_t nops, capops;
    uint32_t *seq;
    size_t nseq, capseq;
    struct cmap *maps;
    size_t nmaps, capmaps;
    struct reorder *ro;
    size_t nro, capro;
    uint32_t *wseq;
    size_t nwseq, capwseq;
    struct mfield *mf;
    size_t nmf, capmf;
    uint32_t root;
    /* the cache's key */
    char *wjson, *mjson;
    size_t wlen, mlen;
};

struct opvec {
    struct cop *v;
    size_t n, cap;
};

struct pairseq {
    uint32_t wd, md, seq;
};

struct compiler {
    struct bfs_conv *c;
    const struct sch *w, *m;
    struct pairseq *rec; /* records compiled (or being compiled) */
    size_t nrec, caprec;
    struct bfs_err *err;
};

/* The zig-zag varint of v into b (at most 10 bytes); its length. */
static uint8_t zz(int64_t v, uint8_t *b)
{
    uint64_t z = ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
    uint8_t n = 0;
    do {
        b[n] = (uint8_t)((z & 0x7f) | (z > 0x7f ? 0x80 : 0));
        z >>= 7;
        n++;
    } while (z);
    return n;
}

static int push(struct opvec *v, struct cop op)
{
    struct cop *last = v->n ? &v->v[v->n - 1] : NULL;
    if (last && last->code == op.code && (op.code == C_VARINT || op.code == C_COPY) &&
        last->a < UINT32_MAX && op.a < UINT32_MAX) {
        last->a += op.a;
        return 0;
    }
    if (last && last->code == C_PUT && op.code == C_PUT &&
        last->n + op.n <= (int)sizeof last->put) {
        memcpy(last->put + last->n, op.put, op.n);
        last->n += op.n;
        return 0;
    }
    if (bfs_array_reserve(&v->v, &v->cap, v->n + 1, sizeof *v->v) < 0)
        return -ENOMEM;
    v->v[v->n++] = op;
    return 0;
}

static int new_seq(struct bfs_conv *c, uint32_t *id)
{
    if (c->nseq >= UINT32_MAX || bfs_array_reserve(&c->seq, &c->capseq, c->nseq + 1, 4) < 0)
        return -ENOMEM;
    c->seq[c->nseq] = UINT32_MAX;
    *id = (uint32_t)c->nseq++;
    return 0;
}

/* v (ended) as sequence id. */
static int commit_seq(struct bfs_conv *c, struct opvec *v, uint32_t id)
{
    if (push(v, (struct cop){.code = C_END}) < 0 || c->nops > UINT32_MAX - v->n ||
        bfs_array_reserve(&c->ops, &c->capops, c->nops + v->n, sizeof *c->ops) < 0)
        return -ENOMEM;
    memcpy(c->ops + c->nops, v->v, v->n * sizeof *v->v);
    c->seq[id] = (uint32_t)c->nops;
    c->nops += v->n;
    return 0;
}

static int compile_value(struct compiler *cc, struct opvec *v, uint32_t wt, uint32_t mt,
                         struct where w, int depth);

static int seq_for(struct compiler *cc, uint32_t wt, uint32_t mt, struct where w, int depth,
                   uint32_t *id)
{
    struct opvec v = {0};
    int rc = new_seq(cc->c, id);
    if (rc == 0)
        rc = compile_value(cc, &v, wt, mt, w, depth);
    if (rc == 0 && commit_seq(cc->c, &v, *id) < 0)
        rc = -ENOMEM;
    free(v.v);
    return rc == -ENOMEM ? nomem(cc->err) : rc;
}

static int no_resolve(struct compiler *cc, struct where w, uint32_t wt, uint32_t mt)
{
    char x[300], y[300];
    return where_fail(cc->err, w, "the writer's %s does not resolve to %s",
                      describe(cc->w, wt, x, sizeof x), describe(cc->m, mt, y, sizeof y));
}

/* The merged union mu's branch for the writer's non-union type wt: the same
 * type first, then the first it promotes to; -1 if none. */
static long pick_branch(const struct compiler *cc, uint32_t wt, uint32_t mu)
{
    const struct ty *u = &cc->m->t[mu];
    for (size_t i = 0; i < u->nbr; i++)
        if (same_branch(cc->m, u->br[i], cc->w, wt))
            return (long)i;
    for (size_t i = 0; i < u->nbr; i++)
        if (promotes(cc->w->t[wt].k, cc->m->t[u->br[i]].k))
            return (long)i;
    return -1;
}

static int add_maps(struct compiler *cc, const struct cmap *m, size_t n, uint64_t *first)
{
    struct bfs_conv *c = cc->c;
    if (n && bfs_array_reserve(&c->maps, &c->capmaps, c->nmaps + n, sizeof *c->maps) < 0)
        return nomem(cc->err);
    memcpy(c->maps + c->nmaps, m, n * sizeof *m);
    *first = c->nmaps;
    c->nmaps += n;
    return 0;
}

static int compile_union(struct compiler *cc, struct opvec *v, uint32_t wt, uint32_t mt,
                         struct where w, int depth)
{
    const struct ty *wu = &cc->w->t[wt];
    bool munion = cc->m->t[mt].k == K_UNION;
    size_t n = wu->nbr;
    struct cmap *maps = calloc(n ? n : 1, sizeof *maps);
    if (!maps)
        return nomem(cc->err);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint32_t target = mt;
        if (munion) {
            long mi = pick_branch(cc, cc->w->t[wt].br[i], mt);
            if (mi < 0) {
                rc = no_resolve(cc, w, cc->w->t[wt].br[i], mt);
                break;
            }
            maps[i].n = zz(mi, maps[i].idx);
            target = cc->m->t[mt].br[mi];
        }
        rc = seq_for(cc, cc->w->t[wt].br[i], target, w, depth + 1, &maps[i].seq);
    }
    struct cop op = {.code = C_UNION, .b = (uint32_t)n};
    if (rc == 0)
        rc = add_maps(cc, maps, n, &op.a);
    free(maps);
    if (rc == 0 && push(v, op) < 0)
        rc = nomem(cc->err);
    return rc;
}

static int compile_record(struct compiler *cc, uint32_t wd, uint32_t md, int depth, uint32_t *id);

static int compile_enum(struct compiler *cc, struct opvec *v, uint32_t wd, uint32_t md,
                        struct where w)
{
    const struct def *we = &cc->w->d[wd], *me = &cc->m->d[md];
    struct cmap *maps = calloc(we->nsym ? we->nsym : 1, sizeof *maps);
    json_t *ix = json_object();
    int rc = maps && ix ? 0 : -ENOMEM;
    for (size_t i = 0; i < me->nsym && rc == 0; i++)
        rc = json_object_set_new(ix, me->sym[i], json_integer((json_int_t)i));
    if (rc < 0)
        rc = nomem(cc->err);
    for (size_t i = 0; i < we->nsym && rc == 0; i++) {
        json_t *j = json_object_get(ix, we->sym[i]);
        if (!j)
            rc = where_fail(cc->err, w, "enum symbol %s is not in the merged enum %s", we->sym[i],
                            me->full);
        else
            maps[i].n = zz(json_integer_value(j), maps[i].idx);
    }
    struct cop op = {.code = C_ENUM, .b = (uint32_t)we->nsym};
    if (rc == 0)
        rc = add_maps(cc, maps, we->nsym, &op.a);
    if (rc == 0 && push(v, op) < 0)
        rc = nomem(cc->err);
    json_decref(ix);
    free(maps);
    return rc;
}

static int compile_value(struct compiler *cc, struct opvec *v, uint32_t wt, uint32_t mt,
                         struct where w, int depth)
{
    const struct ty *x = &cc->w->t[wt], *y = &cc->m->t[mt];
    struct cop op = {0};
    if (depth > MAX_TYPE_DEPTH)
        return where_fail(cc->err, w, "nested more than %d levels deep", MAX_TYPE_DEPTH);
    if (x->k == K_UNION)
        return compile_union(cc, v, wt, mt, w, depth);
    if (y->k == K_UNION) {
        long mi = pick_branch(cc, wt, mt);
        if (mi < 0)
            return no_resolve(cc, w, wt, mt);
        op.code = C_PUT;
        op.n = zz(mi, op.put);
        if (push(v, op) < 0)
            return nomem(cc->err);
        return compile_value(cc, v, wt, y->br[mi], w, depth + 1);
    }
    if (x->k == y->k || promotes(x->k, y->k)) {
        switch (y->k) {
        case K_NULL:
            return 0;
        case K_BOOLEAN:
            op = (struct cop){.code = C_COPY, .a = 1};
            break;
        case K_INT:
        case K_LONG:
            op = (struct cop){.code = C_VARINT, .a = 1};
            break;
        case K_FLOAT:
            op = (struct cop){.code = x->k == K_FLOAT ? C_COPY : C_I2F, .a = 4};
            break;
        case K_DOUBLE:
            op = (struct cop){.code = x->k == K_DOUBLE  ? C_COPY
                                      : x->k == K_FLOAT ? C_F2D
                                                        : C_I2D,
                              .a = 8};
            break;
        case K_BYTES:
        case K_STRING:
            op.code = C_LEN;
            break;
        case K_ARRAY:
        case K_MAP: {
            uint32_t id;
            int rc = seq_for(cc, x->sub, y->sub, w, depth + 1, &id);
            if (rc < 0)
                return rc;
            op = (struct cop){.code = y->k == K_ARRAY ? C_ARRAY : C_MAP, .a = id};
            break;
        }
        case K_RECORD:
        case K_ENUM:
        case K_FIXED: {
            const struct def *wd = &cc->w->d[x->sub], *md = &cc->m->d[y->sub];
            if (strcmp(wd->full, md->full) != 0)
                return no_resolve(cc, w, wt, mt);
            if (y->k == K_ENUM)
                return compile_enum(cc, v, x->sub, y->sub, w);
            if (y->k == K_FIXED) {
                if (wd->size != md->size)
                    return no_resolve(cc, w, wt, mt);
                op = (struct cop){.code = C_COPY, .a = (uint64_t)md->size};
                if (md->size == 0)
                    return 0;
                break;
            }
            uint32_t id = 0;
            int rc = compile_record(cc, x->sub, y->sub, depth + 1, &id);
            if (rc < 0)
                return rc;
            op = (struct cop){.code = C_CALL, .a = id};
            break;
        }
        default:
            return no_resolve(cc, w, wt, mt);
        }
        return push(v, op) < 0 ? nomem(cc->err) : 0;
    }
    if ((x->k == K_BYTES && y->k == K_STRING))
        return push(v, (struct cop){.code = C_LEN}) < 0 ? nomem(cc->err) : 0;
    return no_resolve(cc, w, wt, mt);
}

/* The bytes that write a merged field the writer lacks: its null branch. */
static int null_of(struct compiler *cc, const struct def *md, size_t i, uint8_t *idx, uint8_t *n)
{
    const struct ty *t = &cc->m->t[md->f[i].ty];
    *n = 0;
    if (t->k == K_NULL)
        return 0;
    for (size_t k = 0; t->k == K_UNION && k < t->nbr; k++) {
        if (cc->m->t[t->br[k]].k == K_NULL) {
            *n = zz((int64_t)k, idx);
            return 0;
        }
    }
    return where_fail(cc->err, (struct where){md->full, md->f[i].name},
                      "the writer lacks it and it is not nullable");
}

static int compile_reorder(struct compiler *cc, struct opvec *v, uint32_t wd, uint32_t md,
                           const long *wof, const long *mof, int depth)
{
    struct bfs_conv *c = cc->c;
    const struct def *wr = &cc->w->d[wd], *mr = &cc->m->d[md];
    struct reorder r = {.nw = (uint32_t)wr->nf, .nm = (uint32_t)mr->nf};
    uint32_t *ws = calloc(wr->nf ? wr->nf : 1, sizeof *ws);
    if (!ws)
        return nomem(cc->err);
    int rc = 0;
    for (size_t i = 0; i < wr->nf && rc == 0; i++)
        rc = seq_for(cc, wr->f[i].ty, mr->f[mof[i]].ty,
                     (struct where){mr->full, mr->f[mof[i]].name}, depth + 1, &ws[i]);
    if (rc == 0 &&
        (bfs_array_reserve(&c->wseq, &c->capwseq, c->nwseq + wr->nf + 1, sizeof *c->wseq) < 0 ||
         bfs_array_reserve(&c->mf, &c->capmf, c->nmf + mr->nf + 1, sizeof *c->mf) < 0 ||
         bfs_array_reserve(&c->ro, &c->capro, c->nro + 1, sizeof *c->ro) < 0))
        rc = nomem(cc->err);
    if (rc == 0) {
        r.first_w = (uint32_t)c->nwseq;
        memcpy(c->wseq + c->nwseq, ws, wr->nf * sizeof *ws);
        c->nwseq += wr->nf;
        r.first_m = (uint32_t)c->nmf;
        for (size_t i = 0; i < mr->nf && rc == 0; i++) {
            struct mfield f = {.w = (int32_t)wof[i]};
            if (wof[i] < 0)
                rc = null_of(cc, mr, i, f.idx, &f.n);
            c->mf[c->nmf++] = f;
        }
    }
    if (rc == 0) {
        c->ro[c->nro] = r;
        rc = push(v, (struct cop){.code = C_REORDER, .a = c->nro++}) < 0 ? nomem(cc->err) : 0;
    }
    free(ws);
    return rc;
}

/* The sequence of writer record wd as merged record md (one per pair). */
static int compile_record(struct compiler *cc, uint32_t wd, uint32_t md, int depth, uint32_t *id)
{
    for (size_t i = 0; i < cc->nrec; i++) {
        if (cc->rec[i].wd == wd && cc->rec[i].md == md) {
            *id = cc->rec[i].seq;
            return 0;
        }
    }
    if (new_seq(cc->c, id) < 0 ||
        bfs_array_reserve(&cc->rec, &cc->caprec, cc->nrec + 1, sizeof *cc->rec) < 0)
        return nomem(cc->err);
    cc->rec[cc->nrec++] = (struct pairseq){wd, md, *id};
    const struct def *wr = &cc->w->d[wd], *mr = &cc->m->d[md];
    json_t *ix = json_object();
    long *wof = malloc((mr->nf + 1) * sizeof *wof); /* merged field -> writer's */
    long *mof = malloc((wr->nf + 1) * sizeof *mof); /* writer's field -> merged */
    int rc = ix && wof && mof ? 0 : -ENOMEM;
    for (size_t i = 0; i < mr->nf && rc == 0; i++)
        rc = json_object_set_new(ix, mr->f[i].name, json_integer((json_int_t)i));
    rc = rc < 0 ? nomem(cc->err) : 0;
    for (size_t i = 0; wof && i < mr->nf; i++)
        wof[i] = -1;
    bool ordered = true;
    long last = -1;
    for (size_t i = 0; i < wr->nf && rc == 0; i++) {
        json_t *j = json_object_get(ix, wr->f[i].name);
        if (!j) {
            rc = where_fail(cc->err, (struct where){wr->full, wr->f[i].name},
                            "not in the merged record %s", mr->full);
            break;
        }
        mof[i] = (long)json_integer_value(j);
        wof[mof[i]] = (long)i;
        ordered = ordered && mof[i] > last;
        last = mof[i];
    }
    struct opvec v = {0};
    if (rc == 0 && !ordered) {
        rc = compile_reorder(cc, &v, wd, md, wof, mof, depth);
    } else {
        for (size_t i = 0; i < mr->nf && rc == 0; i++) {
            struct where w = {mr->full, mr->f[i].name};
            if (wof[i] >= 0) {
                rc = compile_value(cc, &v, wr->f[wof[i]].ty, mr->f[i].ty, w, depth + 1);
            } else {
                struct cop op = {.code = C_PUT};
                rc = null_of(cc, mr, i, op.put, &op.n);
                if (rc == 0 && op.n && push(&v, op) < 0)
                    rc = nomem(cc->err);
            }
        }
    }
    if (rc == 0 && commit_seq(cc->c, &v, *id) < 0)
        rc = nomem(cc->err);
    free(v.v);
    free(wof);
    free(mof);
    json_decref(ix);
    return rc;
}

static void conv_release(struct bfs_conv *c)
{
    free(c->ops);
    free(c->seq);
    free(c->maps);
    free(c->ro);
    free(c->wseq);
    free(c->mf);
    free(c->wjson);
    free(c->mjson);
    free(c);
}

void bfs_conv_unref(struct bfs_conv *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        conv_release(c);
}

void bfs_conv_free(struct bfs_conv *c)
{
    bfs_conv_unref(c);
}

static char *dup_text(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

int bfs_conv_new(const char *wjson, size_t wlen, const char *mjson, size_t mlen,
                 enum bfs_codec codec, const uint8_t msync[16], struct bfs_conv **out,
                 struct bfs_err *err)
{
    *out = NULL;
    bfs_err_clear(err);
    if (!bfs_codec_valid(codec))
        return bfs_err_set(err, -EINVAL, "unknown codec %d", (int)codec);
    struct bfs_conv *c = calloc(1, sizeof *c);
    if (!c || !(c->wjson = dup_text(wjson, wlen)) || !(c->mjson = dup_text(mjson, mlen))) {
        if (c)
            conv_release(c);
        return nomem(err);
    }
    atomic_init(&c->refs, 1);
    c->codec = codec;
    memcpy(c->msync, msync, 16);
    c->wlen = wlen;
    c->mlen = mlen;
    char *wc = NULL, *mc = NULL;
    size_t wcl, mcl;
    int rc = bfs_schema_canonical(wjson, wlen, &wc, &wcl, err);
    if (rc == -EINVAL)
        bfs_err_prefix(err, "the writer's schema");
    if (rc == 0 && (rc = bfs_schema_canonical(mjson, mlen, &mc, &mcl, err)) == -EINVAL)
        bfs_err_prefix(err, "the merged schema");
    if (rc == 0 && wcl == mcl && memcmp(wc, mc, wcl) == 0)
        c->identity = true;
    free(wc);
    free(mc);
    if (rc == 0 && !c->identity) {
        struct sch ws, ms;
        rc = sch_parse(wjson, wlen, &ws, err);
        if (rc == 0) {
            if ((rc = sch_parse(mjson, mlen, &ms, err)) < 0)
                sch_free(&ws);
        }
        if (rc == 0) {
            struct compiler cc = {.c = c, .w = &ws, .m = &ms, .err = err};
            struct opvec v = {0};
            if (new_seq(c, &c->root) < 0)
                rc = nomem(err);
            const struct ty *wr = &ws.t[ws.root];
            struct where w = {wr->k == K_RECORD ? ws.d[wr->sub].full : kind_name[wr->k], NULL};
            if (rc == 0)
                rc = compile_value(&cc, &v, ws.root, ms.root, w, 0);
            if (rc == 0 && commit_seq(c, &v, c->root) < 0)
                rc = nomem(err);
            free(v.v);
            free(cc.rec);
            sch_free(&ws);
            sch_free(&ms);
        }
    }
    if (rc < 0) {
        conv_release(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* running a conversion                                                      */

/* Output is written lazily: what the merged schema encodes as the writer did
 * (most values) is not copied value by value; d[mark..pos) is the input still
 * to be copied as it is, flushed before anything else is written. */
struct run {
    const struct bfs_conv *c;
    const uint8_t *d;
    size_t len;
    size_t pos;
    size_t mark; /* input from here on is output as it is, up to what replaces it */
    struct bfs_buf *out;
    uint64_t budget; /* zero-byte values still allowed */
    struct bfs_err *err;
};

static int rfail(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

__attribute__((noinline, cold)) static int rfail(struct run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bfs_err_vset(r->err, -EINVAL, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static inline int room(struct run *r, size_t n)
{
    if (r->out->cap - r->out->len >= n)
        return 0;
    return bfs_buf_reserve(r->out, n) < 0 ? bfs_err_set(r->err, -ENOMEM, "out of memory") : 0;
}

static inline int put(struct run *r, const void *p, size_t n)
{
    int rc = room(r, n);
    if (rc == 0) {
        memcpy(r->out->data + r->out->len, p, n);
        r->out->len += n;
    }
    return rc;
}

static inline int get_long(struct run *r, int64_t *v, const char *what)
{
    int rc = bfs_varint_get_long(r->d, r->len, &r->pos, v);
    if (rc == BFS_VARINT_OK)
        return 0;
    return rfail(r, rc == BFS_VARINT_TRUNCATED ? "the data ends inside %s" : "%s is not a varint",
                 what);
}

/* Output the input up to p (from mark), then continue from end. */
static inline int flush_to(struct run *r, size_t p, size_t end)
{
    int rc = p > r->mark ? put(r, r->d + r->mark, p - r->mark) : 0;
    r->mark = end;
    return rc;
}

__attribute__((noinline)) static int replace(struct run *r, size_t p, const uint8_t *b, size_t n)
{
    int rc = flush_to(r, p, r->pos);
    return rc ? rc : put(r, b, n);
}

/* The value read at d[p..pos) is written as b[0..n): kept when the same
 * (the bytes are a varint or two: compared inline). */
static inline int keep_or_put(struct run *r, size_t p, const uint8_t *b, size_t n)
{
    if (n == r->pos - p) {
        size_t i = 0;
        while (i < n && r->d[p + i] == b[i])
            i++;
        if (i == n)
            return 0;
    }
    return replace(r, p, b, n);
}

/* Copy k varints. */
static inline int copy_varints(struct run *r, uint64_t k)
{
    size_t p = r->pos;
    for (uint64_t i = 0; i < k; i++) {
        size_t e = p, lim = r->len - p < BFS_VARINT_MAX ? r->len : p + BFS_VARINT_MAX;
        while (e < lim && (r->d[e] & 0x80))
            e++;
        if (e >= lim)
            return rfail(r, "%s",
                         lim == r->len ? "the data ends inside an int or long"
                                       : "an int or long is not a varint");
        p = e + 1;
    }
    r->pos = p;
    return 0;
}

/* Copy a length-prefixed value. */
static inline int copy_len(struct run *r)
{
    int64_t n = 0;
    if (get_long(r, &n, "a length") < 0)
        return -EINVAL;
    if (n < 0 || (uint64_t)n > r->len - r->pos)
        return rfail(r, "a string or bytes of %" PRId64 " bytes goes beyond the data", n);
    r->pos += (size_t)n;
    return 0;
}

static void le32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

/* One leaf op (C_VARINT .. C_PUT): reads and writes no nested value. */
static inline int leaf(struct run *r, const struct cop *op)
{
    int64_t x = 0;
    uint8_t b[8];
    size_t p0 = r->pos;
    switch (op->code) {
    case C_VARINT:
        if (op->a == 1 && r->pos < r->len && r->d[r->pos] < 0x80) {
            r->pos++;
            return 0;
        }
        return copy_varints(r, op->a);
    case C_COPY:
        if (op->a > r->len - r->pos)
            return rfail(r, "the data ends inside %" PRIu64 " bytes of fixed size", op->a);
        r->pos += (size_t)op->a;
        return 0;
    case C_LEN:
        return copy_len(r);
    case C_I2F:
    case C_I2D:
        if (get_long(r, &x, "an int or long") < 0)
            return -EINVAL;
        if (flush_to(r, p0, r->pos) < 0)
            return -ENOMEM;
        if (op->code == C_I2F) {
            float f = (float)x;
            uint32_t u;
            memcpy(&u, &f, 4);
            le32(b, u);
            return put(r, b, 4);
        } else {
            double d = (double)x;
            uint64_t u;
            memcpy(&u, &d, 8);
            le32(b, (uint32_t)u);
            le32(b + 4, (uint32_t)(u >> 32));
            return put(r, b, 8);
        }
    case C_F2D: {
        if (r->len - r->pos < 4)
            return rfail(r, "the data ends inside a float");
        const uint8_t *p = r->d + r->pos;
        uint32_t u =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &u, 4);
        double d = f;
        uint64_t w;
        memcpy(&w, &d, 8);
        le32(b, (uint32_t)w);
        le32(b + 4, (uint32_t)(w >> 32));
        r->pos += 4;
        if (flush_to(r, p0, r->pos) < 0)
            return -ENOMEM;
        return put(r, b, 8);
    }
    case C_PUT:
        if (flush_to(r, p0, p0) < 0)
            return -ENOMEM;
        return put(r, op->put, op->n);
    default:
        return rfail(r, "internal error: op %u", op->code);
    }
}

static int run_ops(struct run *r, const struct cop *op, int depth);

/* One value of sequence s: a sequence of one leaf op without a call. */
static inline int value(struct run *r, uint32_t s, int depth)
{
    const struct cop *f = r->c->ops + r->c->seq[s];
    if (f->code == C_END)
        return 0;
    if (f->code <= C_PUT && f[1].code == C_END)
        return leaf(r, f);
    if (depth > BFS_VALIDATE_MAX_DEPTH)
        return rfail(r, "values nested more than %d levels deep", BFS_VALIDATE_MAX_DEPTH);
    return run_ops(r, f, depth);
}

/* The items of an array or map; item: their sequence. */
static int run_blocks(struct run *r, uint32_t item, bool map, int depth)
{
    if (depth > BFS_VALIDATE_MAX_DEPTH)
        return rfail(r, "values nested more than %d levels deep", BFS_VALIDATE_MAX_DEPTH);
    uint8_t b[10];
    for (;;) {
        int64_t count = 0, size = 0;
        size_t p0 = r->pos;
        if (get_long(r, &count, "an array or map count") < 0)
            return -EINVAL;
        if (count == 0) /* the end (as one byte) */
            return keep_or_put(r, p0, b, zz(0, b));
        if (count == INT64_MIN)
            return rfail(r, "an array or map count is out of range");
        if (count < 0) {
            count = -count;
            if (get_long(r, &size, "an array or map block size") < 0)
                return -EINVAL;
            if (size < 0 || (uint64_t)size > r->len - r->pos)
                return rfail(r, "an array or map block size %" PRId64 " is beyond the data", size);
        }
        if ((uint64_t)count > r->len - r->pos) {
            if ((uint64_t)count > r->budget)
                return rfail(r, "an array or map of %" PRId64 " items is too long", count);
            r->budget -= (uint64_t)count;
        }
        int rc = keep_or_put(r, p0, b, zz(count, b));
        for (int64_t i = 0; i < count && rc == 0; i++) {
            if (map && (rc = copy_len(r)) < 0)
                break;
            rc = value(r, item, depth);
        }
        if (rc < 0)
            return rc;
    }
}

/* A union branch or enum symbol: its index mapped. */
static inline int run_map(struct run *r, const struct cop *op, int depth, bool branch)
{
    int64_t x = 0;
    size_t p0 = r->pos;
    if (r->pos < r->len && r->d[r->pos] < 0x80)
        x = bfs_zigzag_decode(r->d[r->pos++]);
    else if (get_long(r, &x, branch ? "a union index" : "an enum index") < 0)
        return -EINVAL;
    if (x < 0 || (uint64_t)x >= op->b)
        return rfail(r, "%s %" PRId64 " is not one of %u", branch ? "union index" : "enum index", x,
                     op->b);
    const struct cmap *m = &r->c->maps[op->a + (uint64_t)x];
    if (keep_or_put(r, p0, m->idx, m->n) < 0)
        return -ENOMEM;
    return branch ? value(r, m->seq, depth + 1) : 0;
}

static int run_reorder(struct run *r, const struct reorder *ro, int depth)
{
    struct bfs_buf *out = r->out;
    size_t small[33];
    size_t *off = ro->nw < 33 ? small : malloc((ro->nw + 1) * sizeof *off);
    if (!off)
        return bfs_err_set(r->err, -ENOMEM, "out of memory");
    /* Each writer's field converted, its output measured (flushed). */
    int rc = flush_to(r, r->pos, r->pos);
    size_t start = out->len;
    for (uint32_t i = 0; i < ro->nw && rc == 0; i++) {
        off[i] = out->len - start;
        rc = value(r, r->c->wseq[ro->first_w + i], depth + 1);
        if (rc == 0)
            rc = flush_to(r, r->pos, r->pos);
    }
    off[ro->nw] = out->len - start;
    size_t mid = out->len;
    for (uint32_t i = 0; i < ro->nm && rc == 0; i++) {
        const struct mfield *f = &r->c->mf[ro->first_m + i];
        if (f->w < 0) {
            rc = put(r, f->idx, f->n);
            continue;
        }
        size_t n = off[f->w + 1] - off[f->w];
        if ((rc = room(r, n)) == 0) {
            memcpy(out->data + out->len, out->data + start + off[f->w], n);
            out->len += n;
        }
    }
    if (off != small)
        free(off);
    if (rc == 0) {
        memmove(out->data + start, out->data + mid, out->len - mid);
        out->len = start + (out->len - mid);
    }
    return rc;
}

/* The ops from op to its sequence's end; depth: values around them. */
static int run_ops(struct run *r, const struct cop *op, int depth)
{
    const struct bfs_conv *c = r->c;
    int rc = 0;
    for (; rc == 0; op++) {
        if (op->code <= C_PUT) {
            if (op->code == C_END)
                return 0;
            rc = leaf(r, op);
            continue;
        }
        switch (op->code) {
        case C_UNION:
        case C_ENUM:
            rc = run_map(r, op, depth, op->code == C_UNION);
            break;
        case C_ARRAY:
        case C_MAP:
            rc = run_blocks(r, (uint32_t)op->a, op->code == C_MAP, depth + 1);
            break;
        case C_CALL:
            if (depth + 1 > BFS_VALIDATE_MAX_DEPTH)
                return rfail(r, "values nested more than %d levels deep", BFS_VALIDATE_MAX_DEPTH);
            rc = run_ops(r, c->ops + c->seq[op->a], depth + 1);
            break;
        case C_REORDER:
            rc = run_reorder(r, &c->ro[op->a], depth);
            break;
        default:
            return rfail(r, "internal error: op %u", op->code);
        }
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* blocks                                                                    */

int bfs_ocf_block_span(const uint8_t *in, size_t len, size_t *block_len)
{
    size_t pos = 0;
    int64_t v[2];
    for (int i = 0; i < 2; i++) {
        int rc = bfs_varint_get_long(in, len, &pos, &v[i]);
        if (rc == BFS_VARINT_TRUNCATED)
            return -EAGAIN;
        if (rc != BFS_VARINT_OK || v[i] < 0)
            return -EINVAL;
    }
    if ((uint64_t)v[1] > BFS_OCF_MAX_COMPRESSED)
        return -EINVAL;
    *block_len = pos + (size_t)v[1] + 16;
    return 0;
}

/* The records at out->data[start..start+n): framed as a block (count, size,
 * data in codec, sync) in their place. */
static int frame(const struct bfs_conv *c, struct bfs_buf *out, size_t start, int64_t count,
                 struct bfs_err *err)
{
    size_t n = out->len - start;
    size_t dn = bfs_codec_framed_size(c->codec, n);
    if (bfs_buf_reserve(out, 20 + dn + 16) < 0)
        return nomem(err);
    const uint8_t *src = out->data + start;
    uint8_t *p = out->data + out->len, *q = p;
    q += zz(count, q);
    q += zz((int64_t)dn, q);
    q += bfs_codec_frame(c->codec, src, n, q);
    memcpy(q, c->msync, 16);
    q += 16;
    memmove(out->data + start, p, (size_t)(q - p));
    out->len = start + (size_t)(q - p);
    return 0;
}

int bfs_conv_block(const struct bfs_conv *c, const uint8_t *in, size_t len, struct bfs_buf *out,
                   struct bfs_buf *scratch, struct bfs_err *err)
{
    bfs_err_clear(err);
    size_t pos = 0;
    int64_t count, size;
    if (bfs_varint_get_long(in, len, &pos, &count) != BFS_VARINT_OK || count < 0)
        return bfs_err_set(err, -EINVAL, "the block's record count is not a valid count");
    if (bfs_varint_get_long(in, len, &pos, &size) != BFS_VARINT_OK || size < 0)
        return bfs_err_set(err, -EINVAL, "the block's size is not a valid size");
    if ((uint64_t)size > len - pos || len - pos - (size_t)size != 16)
        return bfs_err_set(err, -EINVAL,
                           "the block's %" PRId64 " bytes and sync marker are not its %zu bytes",
                           size, len);
    const uint8_t *plain;
    size_t plen;
    int rc = bfs_ocf_block_decompress(c->codec, in + pos, (size_t)size, BFS_OCF_MAX_BLOCK, scratch,
                                      &plain, &plen, err);
    if (rc == -EFBIG)
        return bfs_err_set(err, -EINVAL, "block decompresses to more than %u MiB",
                           BFS_OCF_MAX_BLOCK >> 20);
    if (rc < 0)
        return rc;
    struct run r = {
        .c = c, .d = plain, .len = plen, .out = out, .budget = BFS_OCF_MAX_EMPTY, .err = err};
    size_t start = out->len;
    if ((uint64_t)count > plen) {
        if ((uint64_t)count > r.budget)
            return bfs_err_set(err, -EINVAL,
                               "record count %" PRId64 " is too large for the block's %zu bytes",
                               count, plen);
        r.budget -= (uint64_t)count;
    }
    if (c->identity)
        r.pos = plen;
    for (int64_t i = 0; i < count && rc == 0 && !c->identity; i++) {
        if ((rc = run_ops(&r, c->ops + c->seq[c->root], 0)) == -EINVAL)
            bfs_err_prefix(err, "record %" PRId64, i + 1);
    }
    if (rc == 0 && r.pos != plen)
        rc = bfs_err_set(err, -EINVAL, "%zu bytes left after the block's %" PRId64 " records",
                         plen - r.pos, count);
    if (rc == 0)
        rc = flush_to(&r, r.pos, r.pos);
    if (rc == 0)
        rc = frame(c, out, start, count, err);
    if (rc < 0)
        out->len = start;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the cache                                                                 */

/* The cache: the lru (lru.h) of convs, keyed by what made them. */
struct bfs_conv_cache {
    struct bfs_lru *lru;
};

struct conv_key {
    const char *wjson, *mjson;
    size_t wlen, mlen;
    enum bfs_codec codec;
    const uint8_t *msync;
};

static bool conv_match(const void *item, const void *key)
{
    const struct bfs_conv *v = item;
    const struct conv_key *k = key;
    return v->codec == k->codec && v->wlen == k->wlen && v->mlen == k->mlen &&
           memcmp(v->msync, k->msync, 16) == 0 && memcmp(v->wjson, k->wjson, k->wlen) == 0 &&
           memcmp(v->mjson, k->mjson, k->mlen) == 0;
}

static void conv_ref(void *item)
{
    struct bfs_conv *v = item;
    atomic_fetch_add(&v->refs, 1);
}

static void conv_unref(void *item)
{
    bfs_conv_unref(item);
}

static const struct bfs_lru_type conv_lru = {conv_match, conv_ref, conv_unref};

int bfs_conv_cache_new(size_t slots, struct bfs_conv_cache **out)
{
    *out = NULL;
    struct bfs_conv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    int rc = bfs_lru_new(slots, &conv_lru, &c->lru);
    if (rc < 0) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void bfs_conv_cache_free(struct bfs_conv_cache *c)
{
    if (!c)
        return;
    bfs_lru_free(c->lru);
    free(c);
}

int bfs_conv_get(struct bfs_conv_cache *c, const char *wjson, size_t wlen, const char *mjson,
                 size_t mlen, enum bfs_codec codec, const uint8_t msync[16], struct bfs_conv **out,
                 struct bfs_err *err)
{
    if (!c)
        return bfs_conv_new(wjson, wlen, mjson, mlen, codec, msync, out, err);
    struct conv_key key = {wjson, mjson, wlen, mlen, codec, msync};
    if ((*out = bfs_lru_find(c->lru, &key)))
        return 0;
    /* Compiled outside the lock; failures are not kept. */
    int rc = bfs_conv_new(wjson, wlen, mjson, mlen, codec, msync, out, err);
    if (rc == 0)
        bfs_lru_add(c->lru, *out);
    return rc;
}
