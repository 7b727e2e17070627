/*
 * YAML text to our node tree, through libyaml's event parser.
 *
 * We build our own tree rather than use libyaml's document API because
 * the compiler needs the line and column of every value, a type for
 * every scalar (libyaml leaves them all as text), and control over
 * aliases: an alias shares the anchored node, and every node records the
 * size of its subtree counting aliases, so a "billion laughs" document is
 * refused after reading a few hundred bytes instead of being expanded.
 */
#include "config_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <yaml.h>

/* ---- arena ---- */

struct cfg__chunk {
    cfg__chunk_t *next;
    size_t cap;
    max_align_t data[];
};

void *cfg__alloc(cfg__arena_t *a, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    if (a->head == NULL || a->cap - a->used < n) {
        /* Chunks grow with the arena so big configs take few of them. */
        size_t cap = a->total / 4 > 65536 ? a->total / 4 : 65536;
        if (cap > (1u << 20)) cap = 1u << 20;
        if (cap < n) cap = n;
        cfg__chunk_t *c;
        if (a->spare && a->spare->cap >= n) {
            c = a->spare;
            a->spare = c->next;
            cap = c->cap;
            a->total -= cap; /* counted again below */
        } else {
            c = sp_xmalloc(sizeof *c + cap);
        }
        c->next = a->head;
        c->cap = cap;
        a->head = c;
        a->used = 0;
        a->cap = cap;
        a->total += cap;
    }
    void *p = (char *)a->head->data + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *cfg__strndup(cfg__arena_t *a, const char *s, size_t n)
{
    char *p = cfg__alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

static void free_chunks(cfg__chunk_t *c)
{
    while (c) {
        cfg__chunk_t *next = c->next;
        free(c);
        c = next;
    }
}

void cfg__arena_free(cfg__arena_t *a)
{
    free_chunks(a->head);
    free_chunks(a->spare);
    *a = (cfg__arena_t){0};
}

cfg__mark_t cfg__arena_mark(const cfg__arena_t *a) { return (cfg__mark_t){a->head, a->used, a->cap, a->total}; }

void cfg__arena_release(cfg__arena_t *a, cfg__mark_t m)
{
    /* Released chunks are kept for the next job: one job's scratch space
     * is reused by the next instead of going back to the allocator. */
    while (a->head && a->head != m.head) {
        cfg__chunk_t *next = a->head->next;
        a->head->next = a->spare;
        a->spare = a->head;
        a->head = next;
    }
    a->used = m.used;
    a->cap = m.cap;
    a->total = m.total;
}

void cfg__arena_ranges(const cfg__arena_t *a, void (*fn)(void *arg, const char *lo, const char *hi), void *arg)
{
    for (cfg__chunk_t *c = a->head; c; c = c->next) {
        const char *lo = (const char *)c->data;
        fn(arg, lo, lo + (c == a->head ? a->used : c->cap));
    }
}

/* ---- errors ---- */

void cfg__err(cfg__errs_t *e, uint32_t line, uint32_t col, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path == NULL) path = "";
    /* A command used by many jobs would repeat its error once per use. */
    for (size_t i = 0; i < e->nerrors; i++) {
        config_error_t *x = &e->errors[i];
        if ((uint32_t)x->line == line && (uint32_t)x->col == col && strcmp(x->message, msg) == 0 &&
            strcmp(x->path, path) == 0)
            return;
    }
    if (e->nerrors >= CONFIG_MAX_ERRORS) {
        e->more++;
        return;
    }
    if (e->nerrors == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->errors = sp_xrealloc(e->errors, e->cap * sizeof *e->errors);
    }
    e->errors[e->nerrors++] = (config_error_t){
        .file = (char *)e->file,
        .line = (int)line,
        .col = (int)col,
        .path = cfg__strndup(&e->arena, path, strlen(path)),
        .message = cfg__strndup(&e->arena, msg, strlen(msg)),
    };
}

/* ---- scalars ---- */

static bool all_in(const char *s, size_t n, const char *set)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] != '_' && strchr(set, s[i]) == NULL) return false;
    return true;
}

/* YAML 1.1 integers: decimal, 0b binary, 0 octal, 0x hex, '_' allowed. */
static bool parse_int(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (n > 0 && (s[0] == '-' || s[0] == '+')) neg = s[i++] == '-';
    const char *d = s + i;
    size_t dn = n - i;
    if (dn == 0 || d[0] == '_') return false;
    int base = 10;
    if (dn > 2 && d[0] == '0' && d[1] == 'b') {
        base = 2, d += 2, dn -= 2;
        if (!all_in(d, dn, "01")) return false;
    } else if (dn > 2 && d[0] == '0' && d[1] == 'x') {
        base = 16, d += 2, dn -= 2;
        if (!all_in(d, dn, "0123456789abcdefABCDEF")) return false;
    } else if (dn > 1 && d[0] == '0') {
        base = 8, d += 1, dn -= 1;
        if (!all_in(d, dn, "01234567")) return false;
    } else {
        if (!all_in(d, dn, "0123456789")) return false;
    }
    uint64_t v = 0;
    bool digit = false;
    for (size_t k = 0; k < dn; k++) {
        if (d[k] == '_') continue;
        unsigned c = (unsigned char)d[k];
        unsigned dv = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
        if (v > (UINT64_MAX - dv) / (uint64_t)base) return false;
        v = v * (uint64_t)base + dv;
        digit = true;
    }
    if (!digit) return false;
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX) return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* YAML 1.1 floats as snakeyaml reads them: [-+]?(\.[0-9]+|[0-9_]+(\.[0-9_]*)?)([eE][-+]?[0-9]+)?
 * (integers matched first), .inf and .nan. */
static bool parse_float(const char *s, size_t n, double *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (n - i == 4 && s[i] == '.' &&
        (memcmp(s + i, ".inf", 4) == 0 || memcmp(s + i, ".Inf", 4) == 0 || memcmp(s + i, ".INF", 4) == 0)) {
        *out = neg ? -INFINITY : INFINITY;
        return true;
    }
    if (n == 4 && (memcmp(s, ".nan", 4) == 0 || memcmp(s, ".NaN", 4) == 0 || memcmp(s, ".NAN", 4) == 0)) {
        *out = NAN;
        return true;
    }
    char buf[128];
    size_t bn = 0;
    if (neg) buf[bn++] = '-';
    size_t digits = 0;
    if (i < n && s[i] == '.') {
        buf[bn++] = '0';
        buf[bn++] = s[i++];
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (bn >= sizeof buf - 8) return false;
            buf[bn++] = s[i++], digits++;
        }
        if (digits == 0) return false;
    } else {
        if (i >= n || s[i] == '_' || !((s[i] >= '0' && s[i] <= '9'))) return false;
        while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '_')) {
            if (bn >= sizeof buf - 8) return false;
            if (s[i] != '_') buf[bn++] = s[i];
            i++;
        }
        if (i < n && s[i] == '.') {
            buf[bn++] = s[i++];
            while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '_')) {
                if (bn >= sizeof buf - 8) return false;
                if (s[i] != '_') buf[bn++] = s[i];
                i++;
            }
        }
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        buf[bn++] = s[i++];
        if (i < n && (s[i] == '-' || s[i] == '+')) buf[bn++] = s[i++];
        size_t ed = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (bn >= sizeof buf - 2) return false;
            buf[bn++] = s[i++], ed++;
        }
        if (ed == 0) return false;
    }
    if (i != n) return false;
    buf[bn] = 0;
    errno = 0;
    char *end;
    double v = strtod(buf, &end);
    if (*end != 0) return false;
    *out = v;
    return true;
}

static bool is_bool(const char *s, size_t n, bool *out)
{
    static const char *const t[] = {"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"};
    static const char *const f[] = {"no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"};
    for (size_t i = 0; i < SP_ARRAY_LEN(t); i++) {
        if (strlen(t[i]) == n && memcmp(t[i], s, n) == 0) return *out = true, true;
        if (strlen(f[i]) == n && memcmp(f[i], s, n) == 0) return *out = false, true;
    }
    return false;
}

static bool is_null(const char *s, size_t n)
{
    return n == 0 || (n == 1 && s[0] == '~') ||
           (n == 4 && (memcmp(s, "null", 4) == 0 || memcmp(s, "Null", 4) == 0 || memcmp(s, "NULL", 4) == 0));
}

void cfg__resolve_plain(cfg__node_t *node)
{
    const char *s = node->s;
    size_t n = node->n;
    bool b;
    int64_t i;
    double f;
    if (is_null(s, n)) {
        node->kind = CFG_NULL;
    } else if (is_bool(s, n, &b)) {
        node->kind = CFG_BOOL;
        node->b = b;
    } else if (n < 128 && parse_int(s, n, &i)) {
        node->kind = CFG_INT;
        node->i = i;
    } else if (n < 128 && parse_float(s, n, &f)) {
        node->kind = CFG_FLOAT;
        node->f = f;
    }
}

bool cfg__plain_is_special(const char *s, size_t n)
{
    bool b;
    int64_t i;
    double f;
    if (is_null(s, n) || is_bool(s, n, &b)) return true;
    if (n < 128 && (parse_int(s, n, &i) || parse_float(s, n, &f))) return true;
    /* Integers too big for 64 bits still read as numbers elsewhere. */
    if (n > 0 && all_in(s + (s[0] == '-' || s[0] == '+'), n - (s[0] == '-' || s[0] == '+'), "0123456789")) return true;
    if (n == 2 && memcmp(s, "<<", 2) == 0) return true;
    if (n == 1 && s[0] == '=') return true;
    return false;
}

/* ---- helpers ---- */

cfg__pair_t *cfg__get(const cfg__node_t *map, const char *k)
{
    if (map == NULL || map->kind != CFG_MAP) return NULL;
    size_t kn = strlen(k);
    for (uint32_t i = 0; i < map->n; i++)
        if (map->pairs[i].k->n == kn && memcmp(map->pairs[i].k->s, k, kn) == 0) return &map->pairs[i];
    return NULL;
}

const char *cfg__kind_name(const cfg__node_t *n)
{
    switch (n ? n->kind : CFG_NULL) {
    case CFG_NULL: return "null";
    case CFG_BOOL: return "a boolean";
    case CFG_INT: return "an integer";
    case CFG_FLOAT: return "a number";
    case CFG_STR: return "a string";
    case CFG_SEQ: return "a list";
    case CFG_MAP: return "a map";
    }
    return "?";
}

json_t *cfg__to_json(const cfg__node_t *n)
{
    switch (n->kind) {
    case CFG_NULL: return json_null();
    case CFG_BOOL: return json_boolean(n->b);
    case CFG_INT: return json_integer(n->i);
    case CFG_FLOAT:
        /* JSON has no infinities: keep YAML's spelling as text. */
        if (isnan(n->f)) return json_string(".nan");
        if (isinf(n->f)) return json_string(n->f > 0 ? ".inf" : "-.inf");
        return json_real(n->f);
    case CFG_STR: {
        json_t *s = json_stringn_nocheck(n->s, n->n);
        return s ? s : json_string("");
    }
    case CFG_SEQ: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < n->n; i++) json_array_append_new(a, cfg__to_json(n->items[i]));
        return a;
    }
    case CFG_MAP: {
        json_t *o = json_object();
        for (uint32_t i = 0; i < n->n; i++)
            json_object_setn_new_nocheck(o, n->pairs[i].k->s, n->pairs[i].k->n, cfg__to_json(n->pairs[i].v));
        return o;
    }
    }
    return json_null();
}

/* ---- string-keyed hash (anchors, duplicate keys) ---- */

typedef struct {
    const char **keys;
    size_t *klen;
    void **vals;
    size_t cap, n;
} hmap_t;

static uint64_t hash_str(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static void hmap_free(hmap_t *m)
{
    free(m->keys);
    free(m->klen);
    free(m->vals);
    *m = (hmap_t){0};
}

static void **hmap_slot(hmap_t *m, const char *k, size_t kn, bool create);

static void hmap_grow(hmap_t *m)
{
    hmap_t old = *m;
    m->cap = old.cap ? old.cap * 2 : 16;
    m->n = 0;
    m->keys = sp_xcalloc(m->cap, sizeof *m->keys);
    m->klen = sp_xcalloc(m->cap, sizeof *m->klen);
    m->vals = sp_xcalloc(m->cap, sizeof *m->vals);
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i]) *hmap_slot(m, old.keys[i], old.klen[i], true) = old.vals[i];
    hmap_free(&old);
}

static void **hmap_slot(hmap_t *m, const char *k, size_t kn, bool create)
{
    if (create && (m->n + 1) * 2 > m->cap) hmap_grow(m);
    if (m->cap == 0) return NULL;
    size_t i = hash_str(k, kn) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->klen[i] == kn && memcmp(m->keys[i], k, kn) == 0) return &m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    if (!create) return NULL;
    m->keys[i] = k;
    m->klen[i] = kn;
    m->n++;
    return &m->vals[i];
}

/* ---- the builder ---- */

typedef struct {
    cfg__node_t *node; /* the collection being built */
    char *anchor;      /* heap copy, registered when the node is complete */
    cfg__node_t **items;
    cfg__pair_t *pairs;
    size_t n, cap;
    cfg__node_t *key; /* map: a key waiting for its value */
    bool has_merge;   /* map: holds `<<` keys to resolve */
    uint64_t size;    /* subtree size so far */
} frame_t;

typedef struct {
    cfg__arena_t *a;
    cfg__errs_t *errs;
    hmap_t anchors;
    hmap_t strings; /* interned short scalars */
    frame_t *stack;
    size_t depth, cap;
    cfg__node_t *root;
    bool failed;
} builder_t;

static cfg__node_t *mknode(builder_t *b, cfg__kind_t kind, yaml_mark_t m)
{
    cfg__node_t *n = cfg__alloc(b->a, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = (uint32_t)m.line + 1;
    n->col = (uint32_t)m.column + 1;
    n->size = 1;
    return n;
}

static void add_anchor(builder_t *b, const char *name, cfg__node_t *n)
{
    size_t len = strlen(name);
    void **slot = hmap_slot(&b->anchors, name, len, false);
    if (slot == NULL) {
        char *k = cfg__strndup(b->a, name, len);
        slot = hmap_slot(&b->anchors, k, len, true);
    }
    *slot = n;
}

static bool key_eq(const cfg__node_t *a, const cfg__node_t *b) { return a->n == b->n && memcmp(a->s, b->s, a->n) == 0; }

/* Resolves merge keys and duplicate keys of a finished map. YAML's merge
 * rule: the map's own keys win over merged ones, and among several merged
 * maps the first wins. Merged keys take the place of the `<<` entry. A key
 * written twice keeps its first place and its last value, as CircleCI's
 * YAML reader does. */
static void finish_map(builder_t *b, frame_t *f)
{
    cfg__pair_t *out = f->n ? sp_xmalloc(f->n * sizeof *out) : NULL;
    size_t on = 0, ocap = f->n;
    hmap_t seen = {0}, own = {0};
    bool use_hash = f->n > 8 || f->has_merge;
    if (f->has_merge)
        for (size_t i = 0; i < f->n; i++)
            if (f->pairs[i].k != NULL) *hmap_slot(&own, f->pairs[i].k->s, f->pairs[i].k->n, true) = (void *)1;
    for (size_t i = 0; i < f->n; i++) {
        cfg__pair_t p = f->pairs[i];
        if (p.k == NULL) { /* a merge: p.v is a map or a list of maps */
            size_t nm = p.v->kind == CFG_SEQ ? p.v->n : 1;
            for (size_t m = 0; m < nm; m++) {
                const cfg__node_t *src = p.v->kind == CFG_SEQ ? p.v->items[m] : p.v;
                for (uint32_t j = 0; j < src->n; j++) {
                    cfg__pair_t q = src->pairs[j];
                    if (hmap_slot(&own, q.k->s, q.k->n, false) || hmap_slot(&seen, q.k->s, q.k->n, false)) continue;
                    if (on == ocap) {
                        ocap = ocap ? ocap * 2 : 8;
                        out = sp_xrealloc(out, ocap * sizeof *out);
                    }
                    *hmap_slot(&seen, q.k->s, q.k->n, true) = (void *)(on + 1);
                    out[on++] = q;
                    f->size += q.v->size;
                }
            }
            continue;
        }
        size_t at = 0;
        if (use_hash) {
            void **slot = hmap_slot(&seen, p.k->s, p.k->n, false);
            if (slot) at = (size_t)*slot;
        } else {
            for (size_t j = 0; j < on; j++)
                if (key_eq(out[j].k, p.k)) at = j + 1;
        }
        if (at) {
            out[at - 1].v = p.v;
            continue;
        }
        if (on == ocap) {
            ocap = ocap ? ocap * 2 : 8;
            out = sp_xrealloc(out, ocap * sizeof *out);
        }
        if (use_hash) *hmap_slot(&seen, p.k->s, p.k->n, true) = (void *)(on + 1);
        out[on++] = p;
    }
    hmap_free(&seen);
    hmap_free(&own);
    f->node->n = (uint32_t)on;
    f->node->pairs = on ? cfg__alloc(b->a, on * sizeof *out) : NULL;
    if (on) memcpy(f->node->pairs, out, on * sizeof *out);
    free(out);
}

static void fail(builder_t *b, yaml_mark_t m, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(builder_t *b, yaml_mark_t m, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cfg__err(b->errs, (uint32_t)m.line + 1, (uint32_t)m.column + 1, "", "%s", msg);
    b->failed = true;
}

/* Adds a finished node to the collection on top of the stack (or makes it
 * the root). */
static void attach(builder_t *b, cfg__node_t *n, yaml_mark_t m, bool merge_key)
{
    if (b->failed) return;
    if (b->depth == 0) {
        if (b->root == NULL) b->root = n;
        return;
    }
    frame_t *f = &b->stack[b->depth - 1];
    if (n->size > CONFIG_MAX_NODES || f->size + n->size > CONFIG_MAX_NODES) {
        char lim[32];
        snprintf(lim, sizeof lim, "%d", CONFIG_MAX_NODES);
        fail(b, m, "the document expands to more than %s values (aliases of aliases?)", lim);
        return;
    }
    f->size += n->size;
    if (f->node->kind == CFG_SEQ) {
        if (f->n == f->cap) {
            f->cap = f->cap ? f->cap * 2 : 8;
            f->items = sp_xrealloc(f->items, f->cap * sizeof *f->items);
        }
        f->items[f->n++] = n;
        return;
    }
    if (f->key == NULL && !merge_key) {
        /* A key. CircleCI keys are strings; a scalar key of another type
         * keeps its text. A collection as a key has no meaning here. */
        if (n->kind == CFG_SEQ || n->kind == CFG_MAP) {
            fail(b, m, "a map key must be a scalar, not %s", n->kind == CFG_SEQ ? "a list" : "a map");
            return;
        }
        f->key = n;
        return;
    }
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 8;
        f->pairs = sp_xrealloc(f->pairs, f->cap * sizeof *f->pairs);
    }
    if (f->key->n == (uint32_t)-1) { /* the merge marker set in on_scalar */
        bool ok = n->kind == CFG_MAP;
        if (n->kind == CFG_SEQ) {
            ok = true;
            for (uint32_t i = 0; i < n->n; i++) ok = ok && n->items[i]->kind == CFG_MAP;
        }
        if (!ok) {
            fail(b, m, "%s", "the merge key << takes a map or a list of maps");
            return;
        }
        f->pairs[f->n++] = (cfg__pair_t){NULL, n};
        f->has_merge = true;
        f->size -= n->size; /* counted again key by key in finish_map */
    } else {
        f->pairs[f->n++] = (cfg__pair_t){f->key, n};
    }
    f->key = NULL;
}

static void push(builder_t *b, cfg__node_t *n, const yaml_char_t *anchor, yaml_mark_t m)
{
    if (b->depth >= CONFIG_MAX_DEPTH) {
        char lim[32];
        snprintf(lim, sizeof lim, "%d", CONFIG_MAX_DEPTH);
        fail(b, m, "collections nest deeper than %s levels", lim);
        return;
    }
    if (b->depth == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->stack = sp_xrealloc(b->stack, b->cap * sizeof *b->stack);
    }
    b->stack[b->depth++] = (frame_t){.node = n, .anchor = anchor ? sp_xstrdup((const char *)anchor) : NULL, .size = 1};
}

static void pop(builder_t *b, yaml_mark_t m)
{
    frame_t f = b->stack[--b->depth];
    if (f.node->kind == CFG_SEQ) {
        f.node->n = (uint32_t)f.n;
        f.node->items = f.n ? cfg__alloc(b->a, f.n * sizeof *f.items) : NULL;
        if (f.n) memcpy(f.node->items, f.items, f.n * sizeof *f.items);
    } else {
        finish_map(b, &f);
    }
    f.node->size = f.size > UINT32_MAX ? UINT32_MAX : (uint32_t)f.size;
    if (f.anchor) add_anchor(b, f.anchor, f.node);
    free(f.anchor);
    free(f.items);
    free(f.pairs);
    if (f.size > CONFIG_MAX_NODES) {
        char lim[32];
        snprintf(lim, sizeof lim, "%d", CONFIG_MAX_NODES);
        fail(b, m, "the document expands to more than %s values (aliases of aliases?)", lim);
        return;
    }
    attach(b, f.node, m, false);
}

static void on_scalar(builder_t *b, const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    cfg__node_t *n = mknode(b, CFG_STR, ev->start_mark);
    /* Keys and short values repeat ("run", "command", "checkout"):
     * one copy each keeps a big config's tree small. */
    if (len <= 32) {
        void **slot = hmap_slot(&b->strings, v, len, false);
        if (slot == NULL) {
            char *copy = cfg__strndup(b->a, v, len);
            slot = hmap_slot(&b->strings, copy, len, true);
            *slot = copy;
        }
        n->s = *slot;
    } else {
        n->s = cfg__strndup(b->a, v, len);
    }
    n->n = len > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)len;
    const char *tag = (const char *)ev->data.scalar.tag;
    bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    n->quoted = !plain;
    bool is_key = b->depth > 0 && b->stack[b->depth - 1].node->kind == CFG_MAP && b->stack[b->depth - 1].key == NULL;
    if (is_key) {
        /* Keys stay text: CircleCI's keys are names, and `on:` or `1:`
         * must keep their spelling. */
        if (plain && tag == NULL && len == 2 && memcmp(v, "<<", 2) == 0) {
            /* The merge key: remembered as a key whose length is the
             * marker; attach() turns the value into a merge. */
            n->n = (uint32_t)-1;
            b->stack[b->depth - 1].key = n;
            if (ev->data.scalar.anchor) add_anchor(b, (const char *)ev->data.scalar.anchor, n);
            return;
        }
    } else if (tag && strncmp(tag, "tag:yaml.org,2002:", 18) == 0) {
        const char *t = tag + 18;
        if (strcmp(t, "str") != 0) {
            cfg__resolve_plain(n);
            bool want = (strcmp(t, "int") == 0 && n->kind == CFG_INT) ||
                        (strcmp(t, "float") == 0 && (n->kind == CFG_FLOAT || n->kind == CFG_INT)) ||
                        (strcmp(t, "bool") == 0 && n->kind == CFG_BOOL) ||
                        (strcmp(t, "null") == 0 && n->kind == CFG_NULL);
            if (strcmp(t, "float") == 0 && n->kind == CFG_INT) {
                n->kind = CFG_FLOAT;
                n->f = (double)n->i;
            }
            if (!want) {
                fail(b, ev->start_mark, "the value does not fit its tag !!%s", t);
                return;
            }
        }
    } else if (plain && tag == NULL) {
        cfg__resolve_plain(n);
    }
    if (n->kind == CFG_STR && n->n != len) {
        fail(b, ev->start_mark, "%s", "a string longer than 4 GiB");
        return;
    }
    if (ev->data.scalar.anchor) add_anchor(b, (const char *)ev->data.scalar.anchor, n);
    attach(b, n, ev->start_mark, false);
}

static void on_alias(builder_t *b, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    void **slot = hmap_slot(&b->anchors, name, strlen(name), false);
    if (slot == NULL) {
        fail(b, ev->start_mark, "the alias *%.100s has no anchor &%.100s before it", name, name);
        return;
    }
    cfg__node_t *n = *slot;
    frame_t *top = b->depth ? &b->stack[b->depth - 1] : NULL;
    if (n->kind == CFG_STR && n->n == (uint32_t)-1) {
        /* The anchored `<<` key itself. */
        if (top && top->node->kind == CFG_MAP && top->key == NULL) {
            top->key = n;
            return;
        }
        fail(b, ev->start_mark, "the alias *%s stands for the merge key <<, which is not a value here", name);
        return;
    }
    bool is_key = top && top->node->kind == CFG_MAP && top->key == NULL;
    if (is_key && n->kind != CFG_STR) {
        if (n->kind == CFG_SEQ || n->kind == CFG_MAP) {
            fail(b, ev->start_mark, "the alias *%s is a collection and cannot be a map key", name);
            return;
        }
        /* A typed scalar as a key becomes the text of its value. */
        char text[64];
        if (n->kind == CFG_INT)
            snprintf(text, sizeof text, "%lld", (long long)n->i);
        else if (n->kind == CFG_FLOAT)
            snprintf(text, sizeof text, "%.17g", n->f);
        else if (n->kind == CFG_BOOL)
            snprintf(text, sizeof text, "%s", n->b ? "true" : "false");
        else
            text[0] = 0;
        cfg__node_t *k = mknode(b, CFG_STR, ev->start_mark);
        k->n = (uint32_t)strlen(text);
        k->s = cfg__strndup(b->a, text, k->n);
        n = k;
    }
    attach(b, n, ev->start_mark, false);
}

static const char *event_anchor(const yaml_event_t *ev)
{
    if (ev->type == YAML_SEQUENCE_START_EVENT) return (const char *)ev->data.sequence_start.anchor;
    return (const char *)ev->data.mapping_start.anchor;
}

cfg__node_t *cfg__parse(cfg__arena_t *a, const char *src, size_t n, cfg__errs_t *errs)
{
    if (n > CONFIG_MAX_INPUT) {
        cfg__err(errs, 0, 0, "", "the config is larger than %u bytes", CONFIG_MAX_INPUT);
        return NULL;
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        cfg__err(errs, 0, 0, "", "cannot initialise the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)src, n);
    builder_t b = {.a = a, .errs = errs};
    bool done = false, in_doc = false;
    while (!done && !b.failed) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            yaml_mark_t m = p.problem_mark;
            if (p.context)
                cfg__err(errs, (uint32_t)m.line + 1, (uint32_t)m.column + 1, "", "invalid YAML: %s %s", p.problem,
                         p.context);
            else
                cfg__err(errs, (uint32_t)m.line + 1, (uint32_t)m.column + 1, "", "invalid YAML: %s",
                         p.problem ? p.problem : "unknown error");
            b.failed = true;
            break;
        }
        switch (ev.type) {
        case YAML_DOCUMENT_START_EVENT: in_doc = true; break;
        case YAML_DOCUMENT_END_EVENT:
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_SCALAR_EVENT: on_scalar(&b, &ev); break;
        case YAML_ALIAS_EVENT: on_alias(&b, &ev); break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            cfg__node_t *c = mknode(&b, ev.type == YAML_SEQUENCE_START_EVENT ? CFG_SEQ : CFG_MAP, ev.start_mark);
            /* A collection as a map key has no meaning in a config. */
            frame_t *top = b.depth ? &b.stack[b.depth - 1] : NULL;
            if (top && top->node->kind == CFG_MAP && top->key == NULL) {
                fail(&b, ev.start_mark, "%s", "a map key must be a scalar");
                break;
            }
            push(&b, c, (const yaml_char_t *)event_anchor(&ev), ev.start_mark);
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: pop(&b, ev.start_mark); break;
        default: break;
        }
        yaml_event_delete(&ev);
    }
    (void)in_doc;
    for (size_t i = 0; i < b.depth; i++) {
        free(b.stack[i].anchor);
        free(b.stack[i].items);
        free(b.stack[i].pairs);
    }
    free(b.stack);
    hmap_free(&b.anchors);
    hmap_free(&b.strings);
    yaml_parser_delete(&p);
    if (b.failed) return NULL;
    if (b.root == NULL) {
        b.root = cfg__alloc(a, sizeof *b.root);
        b.root->kind = CFG_NULL;
        b.root->line = b.root->col = 1;
        b.root->size = 1;
    }
    return b.root;
}
