/*
 * The 2.1 machinery below jobs: `<< ... >>` substitution, parameters,
 * logic statements, and steps (commands inlined, when/unless resolved,
 * built-in steps checked and normalized).
 */
#include "compile_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- paths and errors ---- */

/* Paths are pushed for every value substitution visits, so these avoid
 * printf. A path that would not fit is cut (only messages use it). */
static void path_add(cc_path_t *p, const char *s, size_t n)
{
    if (n > sizeof p->s - 1 - p->n) n = sizeof p->s - 1 - p->n;
    memcpy(p->s + p->n, s, n);
    p->n += n;
    p->s[p->n] = 0;
}

size_t cc_push_key(cc_path_t *p, const char *k)
{
    size_t mark = p->n;
    if (p->n) path_add(p, ".", 1);
    path_add(p, k, strlen(k));
    return mark;
}

size_t cc_push_idx(cc_path_t *p, size_t i)
{
    size_t mark = p->n;
    char buf[24];
    size_t n = sizeof buf;
    buf[--n] = ']';
    do buf[--n] = (char)('0' + i % 10);
    while ((i /= 10) > 0);
    buf[--n] = '[';
    path_add(p, buf + n, sizeof buf - n);
    return mark;
}

void cc_err(cc_t *cc, const cfg__node_t *at, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cfg__err(cc->errs, at ? at->line : 0, at ? at->col : 0, cc->path.s, "%s", msg);
}

bool cc_spend(cc_t *cc, const cfg__node_t *at, size_t n)
{
    if (cc->stop) return false;
    cc->budget += n;
    if (cc->budget <= CONFIG_MAX_OUTPUT) return true;
    cc->stop = true;
    cc_err(cc, at, "the config expands to more than %d values (commands or matrices multiplying each other?)",
           CONFIG_MAX_OUTPUT);
    return false;
}

/* ---- small helpers ---- */

cfg__node_t *cc_str(cc_t *cc, const cfg__node_t *pos, const char *s, size_t n)
{
    cfg__node_t *r = cfg__alloc(cc->a, sizeof *r);
    r->kind = CFG_STR;
    r->line = pos ? pos->line : 0;
    r->col = pos ? pos->col : 0;
    r->size = 1;
    r->n = (uint32_t)n;
    r->s = cfg__strndup(cc->a, s, n);
    return r;
}

bool cc_scalar_text(const cfg__node_t *n, char *buf, size_t bufn, const char **s, size_t *len)
{
    switch (n->kind) {
    case CFG_STR: *s = n->s, *len = n->n; return true;
    case CFG_NULL: *s = "", *len = 0; return true;
    case CFG_BOOL: *s = n->b ? "true" : "false", *len = strlen(*s); return true;
    case CFG_INT: snprintf(buf, bufn, "%lld", (long long)n->i); break;
    case CFG_FLOAT:
        if (isnan(n->f))
            snprintf(buf, bufn, ".nan");
        else if (isinf(n->f))
            snprintf(buf, bufn, "%s", n->f > 0 ? ".inf" : "-.inf");
        else
            for (int prec = 1; prec <= 17; prec++) {
                snprintf(buf, bufn, "%.*g", prec, n->f);
                if (strtod(buf, NULL) == n->f) break;
            }
        break;
    default: return false;
    }
    *s = buf, *len = strlen(buf);
    return true;
}

bool cc_values_equal(const cfg__node_t *a, const cfg__node_t *b)
{
    if (a == b) return true;
    if ((a->kind == CFG_INT || a->kind == CFG_FLOAT) && (b->kind == CFG_INT || b->kind == CFG_FLOAT)) {
        double x = a->kind == CFG_INT ? (double)a->i : a->f, y = b->kind == CFG_INT ? (double)b->i : b->f;
        return x == y;
    }
    if (a->kind != b->kind || a->n != b->n) return false;
    switch (a->kind) {
    case CFG_NULL: return true;
    case CFG_BOOL: return a->b == b->b;
    case CFG_STR: return memcmp(a->s, b->s, a->n) == 0;
    case CFG_SEQ:
        for (uint32_t i = 0; i < a->n; i++)
            if (!cc_values_equal(a->items[i], b->items[i])) return false;
        return true;
    case CFG_MAP:
        for (uint32_t i = 0; i < a->n; i++) {
            cfg__pair_t *p = cfg__get(b, a->pairs[i].k->s);
            if (p == NULL || !cc_values_equal(a->pairs[i].v, p->v)) return false;
        }
        return true;
    }
    return false;
}

json_t *cc_json(cc_t *cc, const cfg__node_t *n)
{
    if (!cc_spend(cc, n, n->size)) return json_null();
    return cfg__to_json(n);
}

bool cc_want(cc_t *cc, const cfg__node_t *v, int kind, const char *what)
{
    if (v->kind == kind) return true;
    static const char *names[] = {"null", "a boolean", "an integer", "a number", "a string", "a list", "a map"};
    cc_err(cc, v, "expected %s, got %s", what ? what : names[kind], cfg__kind_name(v));
    return false;
}

bool cc_want_str_list(cc_t *cc, const cfg__node_t *v, bool allow_single)
{
    if (allow_single && v->kind == CFG_STR) return true;
    if (v->kind != CFG_SEQ) {
        cc_err(cc, v, "expected %s, got %s", allow_single ? "a string or a list of strings" : "a list of strings",
               cfg__kind_name(v));
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; i < v->n; i++) {
        const cfg__node_t *x = v->items[i];
        if (x->kind == CFG_STR || x->kind == CFG_INT || x->kind == CFG_FLOAT || x->kind == CFG_BOOL) continue;
        size_t m = cc_push_idx(&cc->path, i);
        cc_err(cc, x, "expected a string, got %s", cfg__kind_name(x));
        cc_pop(&cc->path, m);
        ok = false;
    }
    return ok;
}

bool cc_known_keys(cc_t *cc, const cfg__node_t *map, const char *const *keys, const char *what)
{
    bool ok = true;
    for (uint32_t i = 0; i < map->n; i++) {
        const char *k = map->pairs[i].k->s;
        bool known = false;
        for (size_t j = 0; keys[j] && !known; j++) known = strcmp(keys[j], k) == 0;
        if (known) continue;
        char list[400];
        size_t ln = 0;
        list[0] = 0;
        for (size_t j = 0; keys[j] && ln < sizeof list - 40; j++)
            ln += (size_t)snprintf(list + ln, sizeof list - ln, "%s%s", j ? ", " : "", keys[j]);
        size_t m = cc_push_key(&cc->path, k);
        cc_err(cc, map->pairs[i].k, "unknown key \"%s\" in %s (expected one of: %s)", k, what, list);
        cc_pop(&cc->path, m);
        ok = false;
    }
    return ok;
}

/* ---- the cache of expansions of stable nodes (see cc_t.stable) ---- */

static bool is_stable(const cc_t *cc, const void *p);
static json_t *cache_get(const cc_t *cc, const void *k);
static void cache_put(cc_t *cc, const void *k, json_t *v);

json_t *cc_cached(cc_t *cc, const cfg__node_t *n, int kind, json_t *(*fn)(cc_t *, const cfg__node_t *))
{
    /* One node may be converted in several ways (aliases): the key is
     * the node's address plus the kind, inside the node's own bytes. */
    const char *key = (const char *)n + kind;
    bool stable = is_stable(cc, n);
    json_t *hit = stable ? cache_get(cc, key) : NULL;
    if (hit) {
        cc_spend(cc, n, n->size);
        return json_incref(hit);
    }
    json_t *v = cc_share(cc, fn(cc, n));
    if (stable && v && !cc->stop) cache_put(cc, key, json_incref(v));
    return v;
}

/* ---- substitution ---- */

typedef struct {
    const char *name;
    int kind; /* CFG_STR or CFG_INT or CFG_BOOL */
} pv_t;

static bool pipeline_value(cc_t *cc, const char *name, size_t n, const cfg__node_t *pos, cfg__node_t **out)
{
    const config_input_t *in = cc->in;
    const char *s = NULL;
#define PV(lit, val)                                                                                                   \
    if (n == sizeof(lit) - 1 && memcmp(name, lit, n) == 0) {                                                           \
        s = (val);                                                                                                     \
        goto found;                                                                                                    \
    }
    PV("id", in->id);
    PV("project.git_url", in->git_url);
    PV("project.type", in->vcs_type);
    PV("git.tag", in->tag);
    PV("git.branch", in->branch);
    PV("git.revision", in->revision);
    PV("git.base_revision", in->base_rev);
    PV("trigger_source", in->trigger);
    PV("schedule.name", in->sched_name);
    PV("schedule.id", in->sched_id);
    PV("name", NULL);
#undef PV
    if (n == 6 && memcmp(name, "number", 6) == 0) {
        cfg__node_t *r = cfg__alloc(cc->a, sizeof *r);
        *r = (cfg__node_t){.kind = CFG_INT, .line = pos->line, .col = pos->col, .size = 1, .i = in->number};
        *out = r;
        return true;
    }
    if (n == 8 && memcmp(name, "in_setup", 8) == 0) {
        cfg__node_t *r = cfg__alloc(cc->a, sizeof *r);
        *r = (cfg__node_t){.kind = CFG_BOOL, .line = pos->line, .col = pos->col, .size = 1, .b = false};
        *out = r;
        return true;
    }
    if (n > 19 && memcmp(name, "trigger_parameters.", 19) == 0) goto found;
    return false;
found:
    *out = cc_str(cc, pos, s ? s : "", s ? strlen(s) : 0);
    return true;
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

/* Parses "<< name >>" at s (which starts with "<<"). Sets the name and
 * returns the length of the whole expression, or 0 if it is not one. */
static size_t parse_expr(const char *s, size_t n, const char **name, size_t *nlen)
{
    size_t i = 2;
    while (i < n && s[i] == ' ') i++;
    size_t start = i;
    while (i < n && is_name_char(s[i])) i++;
    if (i == start) return 0;
    *name = s + start;
    *nlen = i - start;
    while (i < n && s[i] == ' ') i++;
    if (i + 1 < n && s[i] == '>' && s[i + 1] == '>') return i + 2;
    return 0;
}

/* The value an expression names; NULL after an error; *literal when the
 * expression is not ours (e.g. a shell heredoc) and stays as text. */
static cfg__node_t *lookup_expr(cc_t *cc, const char *name, size_t n, const cfg__node_t *pos, const cc_scope_t *sc,
                                bool *literal)
{
    *literal = false;
    char nm[256];
    snprintf(nm, sizeof nm, "%.*s", (int)(n < 200 ? n : 200), name);
    if (n > 11 && memcmp(name, "parameters.", 11) == 0) {
        cfg__pair_t *p = sc && sc->params ? cfg__get(sc->params, nm + 11) : NULL;
        if (p) return p->v;
        if (sc && sc->what)
            cc_err(cc, pos, "<< %s >>: %s has no parameter \"%s\"", nm, sc->what, nm + 11);
        else
            cc_err(cc, pos, "<< %s >>: there are no parameters here", nm);
        return NULL;
    }
    if (n > 20 && memcmp(name, "pipeline.parameters.", 20) == 0) {
        cfg__pair_t *p = cc->pipeline_params ? cfg__get(cc->pipeline_params, nm + 20) : NULL;
        if (p) return p->v;
        cc_err(cc, pos, "<< %s >>: no pipeline parameter \"%s\" is declared", nm, nm + 20);
        return NULL;
    }
    if (n > 9 && memcmp(name, "pipeline.", 9) == 0) {
        cfg__node_t *v;
        if (pipeline_value(cc, name + 9, n - 9, pos, &v)) return v;
        cc_err(cc, pos, "<< %s >>: unknown pipeline value", nm);
        return NULL;
    }
    if (n > 7 && memcmp(name, "matrix.", 7) == 0) {
        cfg__pair_t *p = sc && sc->matrix ? cfg__get(sc->matrix, nm + 7) : NULL;
        if (p) return p->v;
        if (sc && sc->matrix)
            cc_err(cc, pos, "<< %s >>: the matrix has no parameter \"%s\"", nm, nm + 7);
        else
            cc_err(cc, pos, "<< %s >>: only a workflow job with a matrix can use matrix values", nm);
        return NULL;
    }
    *literal = true;
    return NULL;
}

static cfg__node_t *subst_str(cc_t *cc, cfg__node_t *n, const cc_scope_t *sc, bool whole_ok)
{
    const char *s = n->s;
    size_t len = n->n;
    if (memchr(s, '<', len) == NULL) return n;
    /* The whole value is one expression: the value keeps its type (an
     * integer, a boolean, a list of steps...). */
    size_t b = 0, e = len;
    while (b < e && s[b] == ' ') b++;
    while (e > b && s[e - 1] == ' ') e--;
    if (whole_ok && e - b > 4 && s[b] == '<' && s[b + 1] == '<') {
        const char *name;
        size_t nl;
        if (parse_expr(s + b, e - b, &name, &nl) == e - b) {
            bool literal;
            cfg__node_t *v = lookup_expr(cc, name, nl, n, sc, &literal);
            if (!literal) return v ? v : n;
        }
    }
    sp_buf_t out = {0};
    bool changed = false;
    size_t i = 0;
    while (i < len) {
        const char *lt = memchr(s + i, '<', len - i);
        if (lt == NULL) {
            sp_buf_add(&out, s + i, len - i);
            break;
        }
        size_t at = (size_t)(lt - s);
        if (at + 1 >= len || s[at + 1] != '<') {
            sp_buf_add(&out, s + i, at + 1 - i);
            i = at + 1;
            continue;
        }
        /* `\<<` is a literal `<<` (CircleCI's escape). */
        if (at > i && s[at - 1] == '\\') {
            sp_buf_add(&out, s + i, at - 1 - i);
            sp_buf_add(&out, "<<", 2);
            i = at + 2;
            changed = true;
            continue;
        }
        sp_buf_add(&out, s + i, at - i);
        const char *name;
        size_t nl;
        size_t el = parse_expr(s + at, len - at, &name, &nl);
        if (el == 0) {
            sp_buf_add(&out, "<<", 2);
            i = at + 2;
            continue;
        }
        bool literal;
        cfg__node_t *v = lookup_expr(cc, name, nl, n, sc, &literal);
        if (literal || v == NULL) {
            sp_buf_add(&out, s + at, el);
            i = at + el;
            continue;
        }
        char buf[64];
        const char *t;
        size_t tl;
        if (!cc_scalar_text(v, buf, sizeof buf, &t, &tl)) {
            cc_err(cc, n, "<< %.*s >> is %s and cannot be part of a string", (int)nl, name, cfg__kind_name(v));
            sp_buf_add(&out, s + at, el);
        } else {
            sp_buf_add(&out, t, tl);
            changed = true;
        }
        i = at + el;
    }
    if (!changed) {
        sp_buf_free(&out);
        return n;
    }
    cfg__node_t *r = cc_str(cc, n, out.p ? (const char *)out.p : "", out.n);
    r->quoted = n->quoted;
    sp_buf_free(&out);
    return r;
}

static cfg__node_t *subst(cc_t *cc, cfg__node_t *n, const cc_scope_t *sc, const char *skip)
{
    if (!cc_spend(cc, n, 1)) return n;
    switch (n->kind) {
    case CFG_STR: return subst_str(cc, n, sc, true);
    case CFG_SEQ: {
        cfg__node_t **items = NULL;
        uint64_t size = 1;
        for (uint32_t i = 0; i < n->n; i++) {
            size_t m = cc_push_idx(&cc->path, i);
            cfg__node_t *x = subst(cc, n->items[i], sc, NULL);
            cc_pop(&cc->path, m);
            if (x != n->items[i] && items == NULL) {
                items = cfg__alloc(cc->a, n->n * sizeof *items);
                memcpy(items, n->items, i * sizeof *items);
            }
            if (items) items[i] = x;
            size += x->size;
            if (cc->stop) return n;
        }
        if (items == NULL) return n;
        cfg__node_t *r = cfg__alloc(cc->a, sizeof *r);
        *r = *n;
        r->items = items;
        r->size = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
        return r;
    }
    case CFG_MAP: {
        /* Copy on first change: most subtrees have nothing to substitute. */
        cfg__pair_t *pairs = NULL;
        uint32_t np = 0;
        uint64_t size = 1;
        for (uint32_t i = 0; i < n->n; i++) {
            cfg__pair_t p = n->pairs[i];
            bool drop = skip && strcmp(p.k->s, skip) == 0;
            size_t m = cc_push_key(&cc->path, p.k->s);
            cfg__node_t *k = drop ? p.k : subst_str(cc, p.k, sc, false);
            cfg__node_t *v = drop ? p.v : subst(cc, p.v, sc, NULL);
            cc_pop(&cc->path, m);
            if (cc->stop) return n;
            if ((drop || k != p.k || v != p.v) && pairs == NULL) {
                pairs = cfg__alloc(cc->a, n->n * sizeof *pairs);
                memcpy(pairs, n->pairs, np * sizeof *pairs);
            }
            if (drop) continue;
            if (pairs) pairs[np] = (cfg__pair_t){k, v};
            np++;
            size += v->size;
        }
        if (pairs == NULL) return n;
        cfg__node_t *r = cfg__alloc(cc->a, sizeof *r);
        *r = *n;
        r->pairs = pairs;
        r->n = np;
        r->size = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
        return r;
    }
    default: return n;
    }
}

cfg__node_t *cc_subst(cc_t *cc, cfg__node_t *n, const cc_scope_t *sc, const char *skip)
{
    if (cc->version != 21) return n;
    return subst(cc, n, sc, skip);
}

/* ---- parameters ---- */

static const char *const param_types[] = {"string",   "boolean", "integer",      "enum",
                                          "executor", "steps",   "env_var_name", NULL};

static bool env_name_ok(const char *s, size_t n)
{
    if (n == 0 || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_'))
            return false;
    return true;
}

bool cc_check_value(cc_t *cc, const cfg__node_t *decl, const char *name, const cfg__node_t *v, const cfg__node_t *at,
                    const char *what)
{
    cfg__pair_t *tp = cfg__get(decl, "type");
    if (tp == NULL || tp->v->kind != CFG_STR) return false;
    const char *t = tp->v->s;
    const char *want = NULL;
    if (at == NULL || at->line == 0) at = v;
    /* what == NULL: checking a declaration's own default. */
    char subject[400];
    if (what)
        snprintf(subject, sizeof subject, "parameter \"%s\" of %s", name, what);
    else
        snprintf(subject, sizeof subject, "the default of parameter \"%s\"", name);
    if (strcmp(t, "string") == 0) {
        if (v->kind != CFG_STR && v->kind != CFG_NULL) want = "a string";
    } else if (strcmp(t, "boolean") == 0) {
        if (v->kind != CFG_BOOL) want = "a boolean";
    } else if (strcmp(t, "integer") == 0) {
        if (v->kind != CFG_INT) want = "an integer";
    } else if (strcmp(t, "executor") == 0) {
        if (v->kind != CFG_STR && v->kind != CFG_MAP) want = "an executor name or {name: ..., <arguments>}";
    } else if (strcmp(t, "steps") == 0) {
        if (v->kind != CFG_SEQ && v->kind != CFG_NULL) want = "a list of steps";
    } else if (strcmp(t, "env_var_name") == 0) {
        if (v->kind != CFG_STR) {
            want = "an environment variable name";
        } else if (!env_name_ok(v->s, v->n)) {
            cc_err(cc, at, "%s must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got \"%s\"", subject,
                   v->s);
            return false;
        }
    } else if (strcmp(t, "enum") == 0) {
        cfg__pair_t *ep = cfg__get(decl, "enum");
        char buf[64];
        const char *s;
        size_t n;
        if (!cc_scalar_text(v, buf, sizeof buf, &s, &n) || v->kind == CFG_NULL) {
            want = "one of the enum values";
        } else if (ep && ep->v->kind == CFG_SEQ) {
            bool found = false;
            for (uint32_t i = 0; i < ep->v->n && !found; i++) {
                char b2[64];
                const char *s2;
                size_t n2;
                if (cc_scalar_text(ep->v->items[i], b2, sizeof b2, &s2, &n2)) found = n2 == n && memcmp(s, s2, n) == 0;
            }
            if (!found) {
                char list[300];
                size_t ln = 0;
                list[0] = 0;
                for (uint32_t i = 0; i < ep->v->n && ln < sizeof list - 40; i++) {
                    char b2[64];
                    const char *s2;
                    size_t n2;
                    if (cc_scalar_text(ep->v->items[i], b2, sizeof b2, &s2, &n2))
                        ln += (size_t)snprintf(list + ln, sizeof list - ln, "%s\"%.*s\"", i ? ", " : "",
                                               (int)(n2 < 60 ? n2 : 60), s2);
                }
                cc_err(cc, at, "%s must be one of %s, got \"%.*s\"", subject, list, (int)(n < 200 ? n : 200), s);
                return false;
            }
        }
    }
    if (want) {
        cc_err(cc, at, "%s expects %s, got %s", subject, want, cfg__kind_name(v));
        return false;
    }
    return true;
}

bool cc_check_decls(cc_t *cc, const cfg__node_t *decls, bool pipeline)
{
    if (decls->kind == CFG_NULL) return true;
    if (!cc_want(cc, decls, CFG_MAP, "a map of parameter declarations")) return false;
    static const char *const keys[] = {"type", "default", "description", "enum", NULL};
    bool ok = true;
    for (uint32_t i = 0; i < decls->n; i++) {
        cfg__pair_t *p = &decls->pairs[i];
        size_t m = cc_push_key(&cc->path, p->k->s);
        if (!cc_want(cc, p->v, CFG_MAP, "a parameter declaration {type, default, description}")) {
            ok = false;
            cc_pop(&cc->path, m);
            continue;
        }
        ok &= cc_known_keys(cc, p->v, keys, "a parameter declaration");
        cfg__pair_t *tp = cfg__get(p->v, "type");
        if (tp == NULL) {
            cc_err(cc, p->k, "parameter \"%s\" needs a type", p->k->s);
            ok = false;
            cc_pop(&cc->path, m);
            continue;
        }
        size_t m2 = cc_push_key(&cc->path, "type");
        bool known = false;
        int ntypes = pipeline ? 4 : 7;
        for (int j = 0; j < ntypes && tp->v->kind == CFG_STR; j++) known |= strcmp(tp->v->s, param_types[j]) == 0;
        if (!known) {
            cc_err(cc, tp->v, "%s",
                   pipeline ? "a pipeline parameter's type is string, boolean, integer or enum"
                            : "a parameter's type is string, boolean, integer, enum, executor, "
                              "steps or env_var_name");
            ok = false;
        }
        cc_pop(&cc->path, m2);
        if (known && strcmp(tp->v->s, "enum") == 0) {
            cfg__pair_t *ep = cfg__get(p->v, "enum");
            if (ep == NULL || ep->v->kind != CFG_SEQ || ep->v->n == 0) {
                cc_err(cc, ep ? ep->v : p->k, "an enum parameter needs enum: a list of allowed values");
                ok = false;
                known = false;
            } else {
                size_t m3 = cc_push_key(&cc->path, "enum");
                ok &= known = cc_want_str_list(cc, ep->v, false);
                cc_pop(&cc->path, m3);
            }
        }
        cfg__pair_t *dp = cfg__get(p->v, "default");
        if (known && dp) {
            size_t m3 = cc_push_key(&cc->path, "default");
            /* A default may use pipeline values; check it as it will be used. */
            cfg__node_t *dv = cc_subst(cc, dp->v, NULL, NULL);
            ok &= cc_check_value(cc, p->v, p->k->s, dv, dp->v, NULL);
            cc_pop(&cc->path, m3);
        }
        cc_pop(&cc->path, m);
    }
    return ok;
}

cfg__node_t *cc_bind(cc_t *cc, const cfg__node_t *decls, const cfg__node_t *args, const cfg__node_t *at,
                     const char *what, const char *const *ignore)
{
    bool ok = true;
    if (decls && decls->kind != CFG_MAP) decls = NULL;
    if (args && args->kind == CFG_MAP) {
        for (uint32_t i = 0; i < args->n; i++) {
            const char *k = args->pairs[i].k->s;
            bool skip = false;
            for (size_t j = 0; ignore && ignore[j] && !skip; j++) skip = strcmp(ignore[j], k) == 0;
            if (skip || (decls && cfg__get(decls, k))) continue;
            char list[300];
            size_t ln = 0;
            list[0] = 0;
            for (uint32_t j = 0; decls && j < decls->n && ln < sizeof list - 40; j++)
                ln += (size_t)snprintf(list + ln, sizeof list - ln, "%s%s", j ? ", " : "", decls->pairs[j].k->s);
            size_t m = cc_push_key(&cc->path, k);
            cc_err(cc, args->pairs[i].k, "%s has no parameter \"%s\" (%s%s)", what, k,
                   ln ? "its parameters: " : "it takes no parameters", list);
            cc_pop(&cc->path, m);
            ok = false;
        }
    }
    cfg__node_t *r = cfg__alloc(cc->a, sizeof *r);
    r->kind = CFG_MAP;
    r->line = at ? at->line : 0;
    r->col = at ? at->col : 0;
    r->size = 1;
    uint32_t nd = decls ? decls->n : 0;
    r->pairs = nd ? cfg__alloc(cc->a, nd * sizeof *r->pairs) : NULL;
    for (uint32_t i = 0; i < nd; i++) {
        cfg__pair_t *d = &decls->pairs[i];
        if (d->v->kind != CFG_MAP) continue;
        cfg__pair_t *ap = args && args->kind == CFG_MAP ? cfg__get(args, d->k->s) : NULL;
        cfg__node_t *v;
        const cfg__node_t *vat;
        if (ap) {
            v = ap->v;
            vat = ap->v;
        } else {
            cfg__pair_t *dp = cfg__get(d->v, "default");
            if (dp == NULL) {
                cc_err(cc, at, "%s needs a value for parameter \"%s\" (it has no default)", what, d->k->s);
                ok = false;
                continue;
            }
            v = cc_subst(cc, dp->v, NULL, NULL);
            vat = dp->v;
        }
        if (!cc_check_value(cc, d->v, d->k->s, v, vat, what)) {
            ok = false;
            continue;
        }
        cfg__pair_t *tp = cfg__get(d->v, "type");
        if (v->kind == CFG_NULL && tp && tp->v->kind == CFG_STR) {
            if (strcmp(tp->v->s, "string") == 0) v = cc_str(cc, v, "", 0);
            if (strcmp(tp->v->s, "steps") == 0) {
                cfg__node_t *e = cfg__alloc(cc->a, sizeof *e);
                *e = (cfg__node_t){.kind = CFG_SEQ, .line = v->line, .col = v->col, .size = 1};
                v = e;
            }
        }
        r->pairs[r->n++] = (cfg__pair_t){d->k, v};
        r->size += v->size;
    }
    return ok ? r : NULL;
}

/* ---- logic statements ---- */

static bool truthy_value(const cfg__node_t *n)
{
    switch (n->kind) {
    case CFG_NULL: return false;
    case CFG_BOOL: return n->b;
    case CFG_INT: return n->i != 0;
    case CFG_FLOAT: return n->f != 0 && !isnan(n->f);
    case CFG_STR: return n->n > 0;
    default: return n->n > 0;
    }
}

bool cc_logic(cc_t *cc, const cfg__node_t *n, int depth, bool *ok)
{
    if (depth > CONFIG_MAX_LOGIC_DEPTH) {
        cc_err(cc, n, "logic statements nest deeper than %d levels", CONFIG_MAX_LOGIC_DEPTH);
        *ok = false;
        return false;
    }
    if (!cc_spend(cc, n, 1)) {
        *ok = false;
        return false;
    }
    if (n->kind != CFG_MAP || n->n != 1) return truthy_value(n);
    const char *op = n->pairs[0].k->s;
    const cfg__node_t *arg = n->pairs[0].v;
    size_t m = cc_push_key(&cc->path, op);
    bool r = false;
    if (strcmp(op, "and") == 0 || strcmp(op, "or") == 0 || strcmp(op, "equal") == 0) {
        if (arg->kind != CFG_SEQ) {
            cc_err(cc, arg, "%s takes a list, got %s", op, cfg__kind_name(arg));
            *ok = false;
        } else if (arg->n == 0) {
            r = false; /* an operator without arguments is false */
        } else if (op[0] == 'a') {
            r = true;
            for (uint32_t i = 0; i < arg->n; i++) {
                size_t m2 = cc_push_idx(&cc->path, i);
                r = cc_logic(cc, arg->items[i], depth + 1, ok) && r;
                cc_pop(&cc->path, m2);
            }
        } else if (op[0] == 'o') {
            for (uint32_t i = 0; i < arg->n; i++) {
                size_t m2 = cc_push_idx(&cc->path, i);
                r = cc_logic(cc, arg->items[i], depth + 1, ok) || r;
                cc_pop(&cc->path, m2);
            }
        } else {
            r = true;
            for (uint32_t i = 1; i < arg->n; i++) r = r && cc_values_equal(arg->items[0], arg->items[i]);
        }
    } else if (strcmp(op, "not") == 0) {
        r = !cc_logic(cc, arg, depth + 1, ok);
    } else if (strcmp(op, "matches") == 0) {
        static const char *const keys[] = {"pattern", "value", NULL};
        cfg__pair_t *pp = cfg__get(arg, "pattern"), *vp = cfg__get(arg, "value");
        if (arg->kind != CFG_MAP) {
            cc_err(cc, arg, "matches takes {pattern, value}, got %s", cfg__kind_name(arg));
            *ok = false;
        } else if (!cc_known_keys(cc, arg, keys, "matches")) {
            *ok = false;
        } else if (pp == NULL || vp == NULL) {
            cc_err(cc, arg, "matches needs both pattern and value");
            *ok = false;
        } else {
            char b1[64], b2[64];
            const char *ps, *vs;
            size_t pn, vn;
            if (!cc_scalar_text(pp->v, b1, sizeof b1, &ps, &pn) || !cc_scalar_text(vp->v, b2, sizeof b2, &vs, &vn)) {
                cc_err(cc, arg, "matches: pattern and value must be strings");
                *ok = false;
            } else {
                char *pz = sp_xstrndup(ps, pn), *vz = sp_xstrndup(vs, vn);
                r = config_regex_whole(pz, vz);
                free(pz);
                free(vz);
            }
        }
    } else {
        r = truthy_value(n); /* a map that is not an operator */
    }
    cc_pop(&cc->path, m);
    return r;
}

/* ---- environment ---- */

static void env_set(cc_t *cc, json_t *o, const cfg__node_t *k, const cfg__node_t *v)
{
    char buf[64];
    const char *s;
    size_t n;
    if (!cc_scalar_text(v, buf, sizeof buf, &s, &n)) {
        size_t m = cc_push_key(&cc->path, k->s);
        cc_err(cc, v, "an environment variable's value is a string, got %s", cfg__kind_name(v));
        cc_pop(&cc->path, m);
        return;
    }
    json_object_setn_new_nocheck(o, k->s, k->n, cc_share_str(cc, s, n));
}

static void env_assign(cc_t *cc, json_t *o, const cfg__node_t *item)
{
    const char *eq = memchr(item->s, '=', item->n);
    if (eq == NULL || eq == item->s) {
        cc_err(cc, item, "expected NAME=value, got \"%s\"", item->s);
        return;
    }
    size_t kl = (size_t)(eq - item->s);
    json_object_setn_new_nocheck(o, item->s, kl, cc_share_str(cc, eq + 1, item->n - kl - 1));
}

static json_t *env_build(cc_t *cc, const cfg__node_t *v)
{
    json_t *o = json_object();
    if (!cc_spend(cc, v, v->size)) return o;
    switch (v->kind) {
    case CFG_NULL: break;
    case CFG_MAP:
        for (uint32_t i = 0; i < v->n; i++) env_set(cc, o, v->pairs[i].k, v->pairs[i].v);
        break;
    case CFG_STR:
        if (v->n) env_assign(cc, o, v);
        break;
    case CFG_SEQ:
        for (uint32_t i = 0; i < v->n; i++) {
            const cfg__node_t *x = v->items[i];
            size_t m = cc_push_idx(&cc->path, i);
            if (x->kind == CFG_STR)
                env_assign(cc, o, x);
            else if (x->kind == CFG_MAP)
                for (uint32_t j = 0; j < x->n; j++) env_set(cc, o, x->pairs[j].k, x->pairs[j].v);
            else
                cc_err(cc, x, "expected NAME=value or {NAME: value}, got %s", cfg__kind_name(x));
            cc_pop(&cc->path, m);
        }
        break;
    default: cc_err(cc, v, "expected a map of environment variables, got %s", cfg__kind_name(v)); break;
    }
    return o;
}

json_t *cc_env(cc_t *cc, const cfg__node_t *v) { return cc_cached(cc, v, 1, env_build); }

/* ---- built-in steps ---- */

typedef enum { K_STR, K_BOOL, K_INT, K_STRLIST, K_ENV, K_DURATION, K_WHEN, K_SCALAR } ktype_t;

typedef struct {
    const char *key;
    ktype_t t;
    bool required;
} kspec_t;

typedef struct {
    const char *name;
    const kspec_t *keys;
    bool bare_ok; /* may be written as a bare name */
} builtin_t;

static const kspec_t run_keys[] = {{"command", K_STR, true},
                                   {"name", K_STR, false},
                                   {"shell", K_STR, false},
                                   {"environment", K_ENV, false},
                                   {"background", K_BOOL, false},
                                   {"working_directory", K_STR, false},
                                   {"no_output_timeout", K_DURATION, false},
                                   {"when", K_WHEN, false},
                                   {"max_auto_reruns", K_INT, false},
                                   {"auto_rerun_delay", K_STR, false},
                                   {0}};
static const kspec_t checkout_keys[] = {
    {"path", K_STR, false}, {"method", K_STR, false}, {"depth", K_INT, false}, {"name", K_STR, false}, {0}};
static const kspec_t srd_keys[] = {
    {"docker_layer_caching", K_BOOL, false}, {"version", K_SCALAR, false}, {"name", K_STR, false}, {0}};
static const kspec_t save_cache_keys[] = {
    {"paths", K_STRLIST, true}, {"key", K_STR, true}, {"name", K_STR, false}, {"when", K_WHEN, false}, {0}};
static const kspec_t restore_cache_keys[] = {
    {"key", K_STR, false}, {"keys", K_STRLIST, false}, {"name", K_STR, false}, {0}};
static const kspec_t store_artifacts_keys[] = {
    {"path", K_STR, true}, {"destination", K_STR, false}, {"name", K_STR, false}, {0}};
static const kspec_t store_test_results_keys[] = {{"path", K_STR, true}, {"name", K_STR, false}, {0}};
static const kspec_t persist_keys[] = {{"root", K_STR, true}, {"paths", K_STRLIST, true}, {"name", K_STR, false}, {0}};
static const kspec_t attach_keys[] = {{"at", K_STR, true}, {"name", K_STR, false}, {0}};
static const kspec_t ssh_keys[] = {{"fingerprints", K_STRLIST, false}, {"name", K_STR, false}, {0}};

static const builtin_t builtins[] = {
    {"run", run_keys, false},
    {"deploy", run_keys, false},
    {"checkout", checkout_keys, true},
    {"setup_remote_docker", srd_keys, true},
    {"save_cache", save_cache_keys, false},
    {"restore_cache", restore_cache_keys, false},
    {"store_artifacts", store_artifacts_keys, false},
    {"store_test_results", store_test_results_keys, false},
    {"persist_to_workspace", persist_keys, false},
    {"attach_workspace", attach_keys, false},
    {"add_ssh_keys", ssh_keys, true},
};

static const builtin_t *find_builtin(const char *name)
{
    for (size_t i = 0; i < SP_ARRAY_LEN(builtins); i++)
        if (strcmp(builtins[i].name, name) == 0) return &builtins[i];
    return NULL;
}

static json_t *scalar_json(cc_t *cc, const cfg__node_t *v)
{
    char buf[64];
    const char *s;
    size_t n;
    cc_scalar_text(v, buf, sizeof buf, &s, &n);
    return cc_share_str(cc, s, n);
}

static bool is_scalar(const cfg__node_t *v)
{
    return v->kind == CFG_STR || v->kind == CFG_INT || v->kind == CFG_FLOAT || v->kind == CFG_BOOL;
}

/* Checks and converts one key's value (shared); NULL after an error. */
static json_t *key_value(cc_t *cc, const kspec_t *k, const cfg__node_t *v)
{
    switch (k->t) {
    case K_STR:
    case K_SCALAR:
        /* A number or boolean where text is expected is taken as its text,
         * as CircleCI's reader does for e.g. `name: 2`. */
        if (is_scalar(v)) return scalar_json(cc, v);
        cc_err(cc, v, "expected a string, got %s", cfg__kind_name(v));
        return NULL;
    case K_BOOL:
        if (v->kind == CFG_BOOL) return json_boolean(v->b);
        if (v->kind == CFG_STR && (strcmp(v->s, "true") == 0 || strcmp(v->s, "false") == 0))
            return json_boolean(v->s[0] == 't');
        cc_err(cc, v, "expected true or false, got %s", cfg__kind_name(v));
        return NULL;
    case K_INT:
        if (v->kind == CFG_INT) return cc_share(cc, json_integer(v->i));
        cc_err(cc, v, "expected an integer, got %s", cfg__kind_name(v));
        return NULL;
    case K_STRLIST: {
        if (v->kind == CFG_STR) { /* a single path is a list of one */
            json_t *a = json_array();
            json_array_append_new(a, scalar_json(cc, v));
            return cc_share(cc, a);
        }
        if (!cc_want_str_list(cc, v, false)) return NULL;
        json_t *a = json_array();
        for (uint32_t i = 0; i < v->n; i++) json_array_append_new(a, scalar_json(cc, v->items[i]));
        return cc_share(cc, a);
    }
    case K_ENV: return cc_env(cc, v);
    case K_DURATION: {
        char buf[64];
        const char *s;
        size_t n;
        int64_t ms;
        if (!is_scalar(v) || !cc_scalar_text(v, buf, sizeof buf, &s, &n)) {
            cc_err(cc, v, "expected a duration such as 20m, 1.25h or 5s, got %s", cfg__kind_name(v));
            return NULL;
        }
        char *z = sp_xstrndup(s, n);
        int rc = config_parse_duration(z, &ms);
        free(z);
        if (rc != 0) {
            cc_err(cc, v, "expected a duration such as 20m, 1.25h or 5s, got \"%.*s\"", (int)(n < 100 ? n : 100), s);
            return NULL;
        }
        return cc_share_str(cc, s, n);
    }
    case K_WHEN:
        if (v->kind == CFG_STR &&
            (strcmp(v->s, "always") == 0 || strcmp(v->s, "on_success") == 0 || strcmp(v->s, "on_fail") == 0))
            return cc_share_str(cc, v->s, v->n);
        cc_err(cc, v, "expected always, on_success or on_fail, got %s%s%s%s", cfg__kind_name(v),
               v->kind == CFG_STR ? " \"" : "", v->kind == CFG_STR ? v->s : "", v->kind == CFG_STR ? "\"" : "");
        return NULL;
    }
    return NULL;
}

/* Checks a built-in step's map of arguments and converts it into keys
 * and shared values: command first, as CircleCI prints it, the rest in
 * config order. Returns how many, or -1 after an error. */
static int step_args(cc_t *cc, const builtin_t *b, const cfg__node_t *v, const char **keys, json_t **vals)
{
    const char *names[16];
    size_t nk = 0;
    for (const kspec_t *k = b->keys; k->key; k++) names[nk++] = k->key;
    names[nk] = NULL;
    bool ok = cc_known_keys(cc, v, names, b->name);
    int n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < v->n; i++) {
            const cfg__pair_t *p = &v->pairs[i];
            bool is_cmd = strcmp(p->k->s, "command") == 0;
            if ((pass == 0) != is_cmd) continue;
            const kspec_t *k = b->keys;
            while (k->key && strcmp(k->key, p->k->s) != 0) k++;
            if (k->key == NULL) continue;
            if (p->v->kind == CFG_NULL && !k->required) continue;
            size_t m = cc_push_key(&cc->path, k->key);
            json_t *j = key_value(cc, k, p->v);
            cc_pop(&cc->path, m);
            if (j) {
                keys[n] = k->key;
                vals[n++] = j;
            } else {
                ok = false;
            }
        }
    for (const kspec_t *k = b->keys; k->key; k++) {
        cfg__pair_t *p = cfg__get(v, k->key);
        if (k->required && (p == NULL || p->v->kind == CFG_NULL)) {
            cc_err(cc, v, "%s needs %s", b->name, k->key);
            ok = false;
        }
    }
    if (b->keys == restore_cache_keys && !cfg__get(v, "key") && !cfg__get(v, "keys")) {
        cc_err(cc, v, "restore_cache needs key or keys");
        ok = false;
    }
    if (!ok)
        while (n > 0) json_decref(vals[--n]);
    return ok ? n : -1;
}

/* A built-in step with arguments (or its short forms). */
static void builtin_step(cc_t *cc, const builtin_t *b, const cfg__node_t *key, const cfg__node_t *v, json_t *out)
{
    size_t m = cc_push_key(&cc->path, b->name);
    if (v->kind == CFG_NULL || (v->kind == CFG_STR && strcmp(v->s, b->name) == 0 && b->bare_ok)) {
        if (b->bare_ok) {
            json_array_append_new(out, cc_share_str(cc, b->name, strlen(b->name)));
        } else {
            cc_err(cc, key, "%s needs %s", b->name, b->keys == run_keys ? "a command" : "its arguments (a map)");
        }
        cc_pop(&cc->path, m);
        return;
    }
    const char *keys[16];
    json_t *vals[16];
    int n = -1;
    if (b->keys == run_keys && v->kind != CFG_MAP) {
        /* `run: <command>`: the command is also the step's name. */
        if (is_scalar(v)) {
            keys[0] = "command";
            vals[0] = scalar_json(cc, v);
            n = 1;
        } else {
            cc_err(cc, v, "expected a command (a string) or a map with command, got %s", cfg__kind_name(v));
        }
    } else if (v->kind != CFG_MAP) {
        cc_err(cc, v, "%s takes a map of arguments, got %s", b->name, cfg__kind_name(v));
    } else {
        n = step_args(cc, b, v, keys, vals);
    }
    if (n >= 0) {
        /* Most steps of a big config were made before (see share.c). */
        json_t *args = cc_share_obj(cc, keys, vals, (size_t)n);
        json_array_append_new(out, cc_share_obj(cc, &b->name, &args, 1));
    }
    cc_pop(&cc->path, m);
}

static void invoke(cc_t *cc, const cc_elem_t *cmd, const cfg__node_t *args, const cfg__node_t *at, json_t *out)
{
    if (cmd->path[0] == 0) return; /* a broken definition, reported where it is */
    for (int i = 0; i < cc->ncalls; i++)
        if (cc->calls[i] == cmd) {
            cc_err(cc, at, "command %s invokes itself (through %s)", cmd->name, cc->calls[cc->ncalls - 1]->name);
            return;
        }
    if (cc->ncalls >= CONFIG_MAX_CALL_DEPTH) {
        cc_err(cc, at, "commands invoke each other more than %d levels deep", CONFIG_MAX_CALL_DEPTH);
        return;
    }
    if (args && args->kind != CFG_MAP && args->kind != CFG_NULL) {
        cc_err(cc, args, "the arguments of command %s are a map, got %s", cmd->name, cfg__kind_name(args));
        return;
    }
    char what[300];
    snprintf(what, sizeof what, "command %s", cmd->name);
    cfg__pair_t *dp = cfg__get(cmd->def, "parameters");
    cfg__node_t *params = cc_bind(cc, dp ? dp->v : NULL, args, at, what, NULL);
    if (params == NULL) return;
    cfg__pair_t *sp = cfg__get(cmd->def, "steps");
    if (sp == NULL) return; /* reported where the command is defined */
    cc_path_t saved = cc->path;
    snprintf(cc->path.s, sizeof cc->path.s, "%s.steps", cmd->path);
    cc->path.n = strlen(cc->path.s);
    cc_scope_t sc = {.params = params, .what = what};
    cfg__node_t *steps = cc_subst(cc, sp->v, &sc, NULL);
    cc->calls[cc->ncalls++] = cmd;
    cc_steps(cc, steps, cmd->prefix, out);
    cc->ncalls--;
    cc->path = saved;
}

static void conditional(cc_t *cc, const char *kw, const cfg__node_t *v, const char *prefix, json_t *out)
{
    size_t m = cc_push_key(&cc->path, kw);
    static const char *const keys[] = {"condition", "steps", NULL};
    if (v->kind != CFG_MAP) {
        cc_err(cc, v, "%s takes {condition, steps}, got %s", kw, cfg__kind_name(v));
    } else if (cc_known_keys(cc, v, keys, kw)) {
        cfg__pair_t *c = cfg__get(v, "condition"), *s = cfg__get(v, "steps");
        if (c == NULL || s == NULL) {
            cc_err(cc, v, "%s needs both condition and steps", kw);
        } else {
            bool ok = true;
            size_t m2 = cc_push_key(&cc->path, "condition");
            bool r = cc_logic(cc, c->v, 0, &ok);
            cc_pop(&cc->path, m2);
            if (ok && r == (kw[0] == 'w')) {
                m2 = cc_push_key(&cc->path, "steps");
                cc_steps(cc, s->v, prefix, out);
                cc_pop(&cc->path, m2);
            }
        }
    }
    cc_pop(&cc->path, m);
}

static void one_step(cc_t *cc, const cfg__node_t *n, const char *prefix, json_t *out)
{
    bool v21 = cc->version == 21;
    if (n->kind == CFG_STR) {
        cc_elem_t *cmd = v21 ? cc_lookup(&cc->commands, prefix, n->s) : NULL;
        if (cmd) {
            invoke(cc, cmd, NULL, n, out);
            return;
        }
        const builtin_t *b = find_builtin(n->s);
        if (b) {
            builtin_step(cc, b, n, n, out);
            return;
        }
        cc_err(cc, n, "unknown step \"%s\": not a built-in step%s", n->s, v21 ? " or a command" : "");
        return;
    }
    if (n->kind != CFG_MAP) {
        cc_err(cc, n, "a step is a name or a map, got %s", cfg__kind_name(n));
        return;
    }
    if (n->n != 1) {
        char list[200];
        size_t ln = 0;
        list[0] = 0;
        for (uint32_t i = 0; i < n->n && ln < sizeof list - 40; i++)
            ln += (size_t)snprintf(list + ln, sizeof list - ln, "%s%s", i ? ", " : "", n->pairs[i].k->s);
        cc_err(cc, n, "a step is a map with exactly one key, its type; found %u keys (%s)%s", n->n, list,
               n->n > 1 ? ": is the indentation of its arguments off?" : "");
        return;
    }
    const cfg__node_t *k = n->pairs[0].k, *v = n->pairs[0].v;
    if (v21 && (strcmp(k->s, "when") == 0 || strcmp(k->s, "unless") == 0)) {
        conditional(cc, k->s, v, prefix, out);
        return;
    }
    cc_elem_t *cmd = v21 ? cc_lookup(&cc->commands, prefix, k->s) : NULL;
    if (cmd) {
        size_t m = cc_push_key(&cc->path, k->s);
        invoke(cc, cmd, v, k, out);
        cc_pop(&cc->path, m);
        return;
    }
    const builtin_t *b = find_builtin(k->s);
    if (b) {
        builtin_step(cc, b, k, v, out);
        return;
    }
    if (!v21 && (strcmp(k->s, "when") == 0 || strcmp(k->s, "unless") == 0)) {
        cc_err(cc, k, "%s steps need version 2.1", k->s);
        return;
    }
    cc_err(cc, k, "unknown step \"%s\": not a built-in step%s", k->s, v21 ? " or a command" : "");
}

static void add_range(void *arg, const char *lo, const char *hi)
{
    cc_t *cc = arg;
    if (cc->nstable < SP_ARRAY_LEN(cc->stable)) {
        cc->stable[cc->nstable].lo = lo;
        cc->stable[cc->nstable++].hi = hi;
    }
}

void cc_mark_stable(cc_t *cc)
{
    cc->nstable = 0;
    cfg__arena_ranges(cc->a, add_range, cc);
}

static bool is_stable(const cc_t *cc, const void *p)
{
    for (size_t i = 0; i < cc->nstable; i++)
        if ((const char *)p >= cc->stable[i].lo && (const char *)p < cc->stable[i].hi) return true;
    return false;
}

static size_t cache_slot(const cc_t *cc, const void *k)
{
    size_t i = (size_t)(((uintptr_t)k >> 3) * 0x9E3779B97F4A7C15ULL) & (cc->ccap - 1);
    while (cc->ckeys[i] && cc->ckeys[i] != k) i = (i + 1) & (cc->ccap - 1);
    return i;
}

static json_t *cache_get(const cc_t *cc, const void *k)
{
    if (cc->ccap == 0) return NULL;
    size_t i = cache_slot(cc, k);
    return cc->ckeys[i] ? cc->cvals[i] : NULL;
}

static void cache_put(cc_t *cc, const void *k, json_t *v)
{
    if ((cc->cn + 1) * 2 > cc->ccap) {
        const void **ok = cc->ckeys;
        json_t **ov = cc->cvals;
        size_t oc = cc->ccap;
        cc->ccap = oc ? oc * 2 : 256;
        cc->ckeys = sp_xcalloc(cc->ccap, sizeof *cc->ckeys);
        cc->cvals = sp_xcalloc(cc->ccap, sizeof *cc->cvals);
        for (size_t i = 0; i < oc; i++)
            if (ok[i]) {
                size_t j = cache_slot(cc, ok[i]);
                cc->ckeys[j] = ok[i];
                cc->cvals[j] = ov[i];
            }
        free(ok);
        free(ov);
    }
    size_t i = cache_slot(cc, k);
    cc->ckeys[i] = k;
    cc->cvals[i] = v;
    cc->cn++;
}

void cc_cache_free(cc_t *cc)
{
    for (size_t i = 0; i < cc->ccap; i++)
        if (cc->ckeys[i]) json_decref(cc->cvals[i]);
    free(cc->ckeys);
    free(cc->cvals);
    cc->ckeys = NULL;
    cc->cvals = NULL;
    cc->ccap = cc->cn = 0;
}

/* One item of a steps list, through the cache when it can be. */
static void step_item(cc_t *cc, const cfg__node_t *n, const char *prefix, json_t *out)
{
    bool stable = is_stable(cc, n);
    json_t *hit = stable ? cache_get(cc, n) : NULL;
    if (hit) {
        /* Shared, but still counted: commands multiplying each other
         * must meet the budget with or without the cache. */
        if (!cc_spend(cc, n, json_array_size(hit))) return;
        size_t i;
        json_t *x;
        json_array_foreach (hit, i, x) json_array_append(out, x);
        return;
    }
    size_t before = json_array_size(out);
    if (n->kind == CFG_SEQ)
        cc_steps(cc, n, prefix, out);
    else if (n->kind == CFG_NULL)
        cc_err(cc, n, "a step cannot be empty");
    else
        one_step(cc, n, prefix, out);
    if (stable && !cc->stop) {
        json_t *arr = json_array();
        for (size_t i = before; i < json_array_size(out); i++) json_array_append(arr, json_array_get(out, i));
        cache_put(cc, n, arr);
    }
}

void cc_steps(cc_t *cc, const cfg__node_t *steps, const char *prefix, json_t *out)
{
    if (cc->stop) return;
    if (steps->kind != CFG_SEQ) {
        one_step(cc, steps, prefix, out);
        return;
    }
    for (uint32_t i = 0; i < steps->n && !cc->stop; i++) {
        if (!cc_spend(cc, steps->items[i], 1)) return;
        size_t m = cc_push_idx(&cc->path, i);
        /* A list inside steps (a steps parameter) is spliced in. */
        step_item(cc, steps->items[i], prefix, out);
        cc_pop(&cc->path, m);
    }
}
