/*
 * The compiler's top: version, pipeline parameters, inline orbs and the
 * tables of jobs, commands and executors, then workflows (matrix
 * expansion, requires, cycles) and jobs (executor merged in, steps
 * expanded). Steps, parameters and substitution are in steps.c.
 *
 * Order, as CircleCI documents it: pipeline parameters are resolved and
 * type-checked first; orbs are read; then each workflow job invocation
 * expands its job with its arguments, which expands the job's executor
 * and the commands its steps invoke. A 2.1 config's output keeps only
 * the jobs its workflows invoke (parameterized jobs have no meaning
 * without arguments); a 2.0 config keeps every job.
 */
#include "compile_internal.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- element tables ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void table_free(cc_table_t *t)
{
    free(t->v);
    free(t->slots);
    *t = (cc_table_t){0};
}

static int32_t *table_slot(cc_table_t *t, const char *name)
{
    size_t i = hash_str(name) & (t->nslots - 1);
    while (t->slots[i] >= 0 && strcmp(t->v[t->slots[i]].name, name) != 0) i = (i + 1) & (t->nslots - 1);
    return &t->slots[i];
}

static void table_add(cc_table_t *t, const cc_elem_t *e)
{
    if ((t->n + 1) * 2 > t->nslots) {
        free(t->slots);
        t->nslots = t->nslots ? t->nslots * 2 : 32;
        t->slots = sp_xmalloc(t->nslots * sizeof *t->slots);
        for (size_t i = 0; i < t->nslots; i++) t->slots[i] = -1;
        for (size_t i = 0; i < t->n; i++) *table_slot(t, t->v[i].name) = (int32_t)i;
    }
    int32_t *slot = table_slot(t, e->name);
    if (*slot >= 0) { /* a later definition (e.g. an inline orb's) does not replace the first */
        return;
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->v = sp_xrealloc(t->v, t->cap * sizeof *t->v);
    }
    t->v[t->n] = *e;
    *slot = (int32_t)t->n++;
}

static cc_elem_t *table_get(cc_table_t *t, const char *name)
{
    if (t->nslots == 0) return NULL;
    int32_t i = *table_slot(t, name);
    return i >= 0 ? &t->v[i] : NULL;
}

/* The concatenation of up to four strings (NULL ends the list early), in
 * the arena: names have no length limit, so no fixed buffer can hold them. */
static char *arena_cat(cfg__arena_t *a, const char *s1, const char *s2, const char *s3, const char *s4)
{
    const char *parts[] = {s1, s2, s3, s4};
    size_t n = 0, len[4] = {0};
    for (int i = 0; i < 4 && parts[i]; i++) n += len[i] = strlen(parts[i]);
    char *out = cfg__alloc(a, n + 1), *w = out;
    for (int i = 0; i < 4 && parts[i]; i++) w = (char *)memcpy(w, parts[i], len[i]) + len[i];
    *w = 0;
    return out;
}

cc_elem_t *cc_lookup(cc_table_t *t, const char *prefix, const char *name)
{
    if (prefix && *prefix) {
        size_t pn = strlen(prefix), nn = strlen(name);
        char *full = sp_xmalloc(pn + nn + 1);
        memcpy(full, prefix, pn);
        memcpy(full + pn, name, nn + 1);
        cc_elem_t *e = table_get(t, full);
        free(full);
        if (e) return e;
    }
    return table_get(t, name);
}

/* ---- filters ---- */

static bool check_filter_values(cc_t *cc, const cfg__node_t *v)
{
    if (!cc_want_str_list(cc, v, true)) return false;
    bool ok = true;
    uint32_t n = v->kind == CFG_SEQ ? v->n : 1;
    for (uint32_t i = 0; i < n; i++) {
        const cfg__node_t *x = v->kind == CFG_SEQ ? v->items[i] : v;
        if (x->kind != CFG_STR || x->n < 2 || x->s[0] != '/' || x->s[x->n - 1] != '/') continue;
        char *pat = sp_xstrndup(x->s + 1, x->n - 2), err[256];
        if (!cfg__regex_ok(pat, err, sizeof err)) {
            size_t m = v->kind == CFG_SEQ ? cc_push_idx(&cc->path, i) : cc->path.n;
            cc_err(cc, x, "invalid regular expression %s: %s", x->s, err);
            cc_pop(&cc->path, m);
            ok = false;
        }
        free(pat);
    }
    return ok;
}

static bool check_filters(cc_t *cc, const cfg__node_t *f, bool tags_ok)
{
    static const char *const keys[] = {"branches", "tags", NULL};
    static const char *const bkeys[] = {"branches", NULL};
    static const char *const oi[] = {"only", "ignore", NULL};
    if (!cc_want(cc, f, CFG_MAP, "a map of filters (branches, tags)")) return false;
    bool ok = cc_known_keys(cc, f, tags_ok ? keys : bkeys, "filters");
    for (uint32_t i = 0; i < f->n; i++) {
        const cfg__pair_t *p = &f->pairs[i];
        size_t m = cc_push_key(&cc->path, p->k->s);
        if (p->v->kind == CFG_NULL) {
        } else if (!cc_want(cc, p->v, CFG_MAP, "a map with only and/or ignore")) {
            ok = false;
        } else {
            ok &= cc_known_keys(cc, p->v, oi, p->k->s);
            for (uint32_t j = 0; j < p->v->n; j++) {
                size_t m2 = cc_push_key(&cc->path, p->v->pairs[j].k->s);
                ok &= check_filter_values(cc, p->v->pairs[j].v);
                cc_pop(&cc->path, m2);
            }
        }
        cc_pop(&cc->path, m);
    }
    return ok;
}

/* ---- executors and jobs ---- */

static const char *const exec_keys[] = {
    "docker",     "machine",     "macos", "resource_class", "shell", "working_directory", "environment",
    "parameters", "description", NULL};

static bool is_exec_key(const char *k)
{
    return strcmp(k, "docker") == 0 || strcmp(k, "machine") == 0 || strcmp(k, "macos") == 0;
}

static json_t *docker_image(cc_t *cc, const cfg__node_t *d)
{
    static const char *const keys[] = {"image",       "name", "entrypoint", "command", "user",
                                       "environment", "auth", "aws_auth",   NULL};
    static const char *const auth_keys[] = {"username", "password", NULL};
    static const char *const aws_keys[] = {"aws_access_key_id", "aws_secret_access_key", "oidc_role_arn", NULL};
    if (!cc_want(cc, d, CFG_MAP, "an image: {image, name, entrypoint, command, user, environment, auth}")) return NULL;
    bool ok = cc_known_keys(cc, d, keys, "a docker image");
    json_t *o = json_object();
    for (uint32_t i = 0; i < d->n; i++) {
        const cfg__pair_t *p = &d->pairs[i];
        const char *k = p->k->s;
        size_t m = cc_push_key(&cc->path, k);
        if (strcmp(k, "environment") == 0) {
            json_object_set_new(o, k, cc_env(cc, p->v));
        } else if (strcmp(k, "entrypoint") == 0 || strcmp(k, "command") == 0) {
            if (cc_want_str_list(cc, p->v, true))
                json_object_set_new(o, k, cc_json(cc, p->v));
            else
                ok = false;
        } else if (strcmp(k, "auth") == 0 || strcmp(k, "aws_auth") == 0) {
            bool aws = k[0] == 'a' && k[1] == 'w';
            if (!cc_want(cc, p->v, CFG_MAP,
                         aws ? "{aws_access_key_id, aws_secret_access_key} or {oidc_role_arn}"
                             : "{username, password}")) {
                ok = false;
            } else {
                ok &= cc_known_keys(cc, p->v, aws ? aws_keys : auth_keys, k);
                bool oidc = aws && cfg__get(p->v, "oidc_role_arn");
                const char *const *need = aws ? (oidc ? aws_keys + 2 : aws_keys) : auth_keys;
                for (size_t j = 0; need[j] && (!aws || oidc || j < 2); j++)
                    if (!cfg__get(p->v, need[j])) {
                        cc_err(cc, p->v, "%s needs %s", k, need[j]);
                        ok = false;
                    }
                json_object_set_new(o, k, cc_json(cc, p->v));
            }
        } else if (strcmp(k, "image") == 0 && p->v->kind != CFG_STR) {
            cc_err(cc, p->v, "expected an image name (a string), got %s", cfg__kind_name(p->v));
            ok = false;
        } else {
            json_object_set_new(o, k, cc_json(cc, p->v));
        }
        cc_pop(&cc->path, m);
    }
    if (!cfg__get(d, "image")) {
        cc_err(cc, d, "a docker image needs image");
        ok = false;
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Checks and converts one executor-related key (shared by jobs and
 * executors). Returns NULL after an error. */
static json_t *docker_list(cc_t *cc, const cfg__node_t *v);
static json_t *exec_value_plain(cc_t *cc, const char *k, const cfg__node_t *v);

static json_t *exec_value(cc_t *cc, const char *k, const cfg__node_t *v)
{
    if (strcmp(k, "docker") == 0) return cc_cached(cc, v, 2, docker_list);
    return exec_value_plain(cc, k, v);
}

static json_t *docker_list(cc_t *cc, const cfg__node_t *v)
{
    {
        if (!cc_want(cc, v, CFG_SEQ, "a list of images")) return NULL;
        if (v->n == 0) {
            cc_err(cc, v, "docker needs at least one image");
            return NULL;
        }
        json_t *a = json_array();
        bool ok = true;
        for (uint32_t i = 0; i < v->n; i++) {
            size_t m = cc_push_idx(&cc->path, i);
            json_t *img = docker_image(cc, v->items[i]);
            cc_pop(&cc->path, m);
            if (img)
                json_array_append_new(a, img);
            else
                ok = false;
        }
        if (!ok) {
            json_decref(a);
            return NULL;
        }
        return a;
    }
}

static json_t *exec_value_plain(cc_t *cc, const char *k, const cfg__node_t *v)
{
    if (strcmp(k, "machine") == 0) {
        static const char *const keys[] = {"enabled", "image", "docker_layer_caching", "resource_class", "shell", NULL};
        if (v->kind == CFG_BOOL || v->kind == CFG_STR) return cc_json(cc, v);
        if (v->kind != CFG_MAP) {
            cc_err(cc, v, "expected true or {image, docker_layer_caching}, got %s", cfg__kind_name(v));
            return NULL;
        }
        if (!cc_known_keys(cc, v, keys, "machine")) return NULL;
        cfg__pair_t *dlc = cfg__get(v, "docker_layer_caching");
        if (dlc && dlc->v->kind != CFG_BOOL) {
            size_t m = cc_push_key(&cc->path, "docker_layer_caching");
            cc_err(cc, dlc->v, "expected true or false, got %s", cfg__kind_name(dlc->v));
            cc_pop(&cc->path, m);
            return NULL;
        }
        return cc_json(cc, v);
    }
    if (strcmp(k, "macos") == 0) {
        static const char *const keys[] = {"xcode", "resource_class", "shell", NULL};
        if (!cc_want(cc, v, CFG_MAP, "{xcode}")) return NULL;
        if (!cc_known_keys(cc, v, keys, "macos")) return NULL;
        cfg__pair_t *x = cfg__get(v, "xcode");
        if (x == NULL || (x->v->kind != CFG_STR && x->v->kind != CFG_INT && x->v->kind != CFG_FLOAT)) {
            cc_err(cc, x ? x->v : v, "macos needs xcode: a version such as \"14.2.0\"");
            return NULL;
        }
        json_t *o = json_object();
        for (uint32_t i = 0; i < v->n; i++) {
            char buf[64];
            const char *s;
            size_t n;
            if (cc_scalar_text(v->pairs[i].v, buf, sizeof buf, &s, &n))
                json_object_set_new(o, v->pairs[i].k->s, cc_share_str(cc, s, n));
        }
        return o;
    }
    if (strcmp(k, "environment") == 0) return cc_env(cc, v);
    if (strcmp(k, "shell") == 0) {
        if (v->kind == CFG_SEQ && cc_want_str_list(cc, v, false)) return cc_json(cc, v);
        if (v->kind == CFG_STR) return cc_json(cc, v);
        if (v->kind != CFG_SEQ) cc_err(cc, v, "expected a shell command line, got %s", cfg__kind_name(v));
        return NULL;
    }
    if (strcmp(k, "resource_class") == 0 || strcmp(k, "working_directory") == 0) {
        char buf[64];
        const char *s;
        size_t n;
        if (v->kind != CFG_SEQ && v->kind != CFG_MAP && v->kind != CFG_NULL &&
            cc_scalar_text(v, buf, sizeof buf, &s, &n))
            return cc_share_str(cc, s, n);
        cc_err(cc, v, "expected a string, got %s", cfg__kind_name(v));
        return NULL;
    }
    return cc_json(cc, v);
}

/* Sets k in o; environments merge (the new value wins on a clash), a new
 * executor type replaces another. v is shared with other jobs (see
 * share.c); steps are shared one by one as they are made. */
static void merge_key(cc_t *cc, json_t *o, const char *k, json_t *v)
{
    v = cc_share(cc, v);
    if (strcmp(k, "environment") == 0) {
        json_t *old = json_object_get(o, k);
        if (old && json_is_object(old) && json_is_object(v)) {
            if (old->refcount > 1) { /* shared with other jobs: change a copy */
                old = json_copy(old);
                json_object_set_new(o, k, old);
            }
            json_object_update(old, v);
            json_decref(v);
            return;
        }
    }
    if (is_exec_key(k)) {
        static const char *const ex[] = {"docker", "machine", "macos"};
        for (size_t i = 0; i < 3; i++)
            if (strcmp(ex[i], k) != 0) json_object_del(o, ex[i]);
    }
    json_object_set_new(o, k, v);
}

/* Expands `executor: name` or `executor: {name, args...}` into out. */
static bool apply_executor(cc_t *cc, const cfg__node_t *ref, const char *prefix, json_t *out)
{
    const cfg__node_t *name = ref;
    if (ref->kind == CFG_MAP) {
        cfg__pair_t *np = cfg__get(ref, "name");
        if (np == NULL || np->v->kind != CFG_STR) {
            cc_err(cc, ref, "executor: {name: <executor>, <arguments>} needs name");
            return false;
        }
        name = np->v;
    } else if (ref->kind != CFG_STR) {
        cc_err(cc, ref, "expected an executor name or {name, <arguments>}, got %s", cfg__kind_name(ref));
        return false;
    }
    cc_elem_t *e = cc_lookup(&cc->executors, prefix, name->s);
    if (e == NULL) {
        cc_err(cc, name, "unknown executor \"%s\"", name->s);
        return false;
    }
    if (e->path[0] == 0) return false; /* a broken definition, reported where it is */
    char what[300];
    snprintf(what, sizeof what, "executor %s", e->name);
    static const char *const ignore[] = {"name", NULL};
    cfg__pair_t *dp = cfg__get(e->def, "parameters");
    cfg__node_t *params = cc_bind(cc, dp ? dp->v : NULL, ref->kind == CFG_MAP ? ref : NULL, ref, what, ignore);
    if (params == NULL) return false;
    cc_path_t saved = cc->path;
    snprintf(cc->path.s, sizeof cc->path.s, "%s", e->path);
    cc->path.n = strlen(cc->path.s);
    cc_scope_t sc = {.params = params, .what = what};
    cfg__node_t *body = cc_subst(cc, e->def, &sc, "parameters");
    bool ok = cc_known_keys(cc, body, exec_keys, "an executor");
    for (uint32_t i = 0; i < body->n && ok; i++) {
        const char *k = body->pairs[i].k->s;
        if (strcmp(k, "description") == 0) continue;
        size_t m = cc_push_key(&cc->path, k);
        json_t *v = exec_value(cc, k, body->pairs[i].v);
        cc_pop(&cc->path, m);
        if (v)
            merge_key(cc, out, k, v);
        else
            ok = false;
    }
    cc->path = saved;
    return ok;
}

static const char *const job_keys21[] = {"docker",
                                         "machine",
                                         "macos",
                                         "executor",
                                         "steps",
                                         "parallelism",
                                         "resource_class",
                                         "environment",
                                         "working_directory",
                                         "shell",
                                         "parameters",
                                         "description",
                                         "type",
                                         "plan_name",
                                         "key",
                                         "retention",
                                         "circleci_ip_ranges",
                                         "branches",
                                         NULL};
static const char *const job_keys20[] = {
    "docker", "machine", "macos",     "steps", "parallelism", "resource_class",     "environment", "working_directory",
    "shell",  "type",    "plan_name", "key",   "retention",   "circleci_ip_ranges", "branches",    NULL};

static const char *const invocation_keys[] = {"name",         "requires",      "context",   "filters",
                                              "type",         "matrix",        "pre-steps", "post-steps",
                                              "serial-group", "override-with", NULL};

/* Compiles one job. args are the invocation's arguments (2.1), pre and
 * post its pre-steps/post-steps; all may be NULL. */
static json_t *compile_job(cc_t *cc, const cc_elem_t *job, const cfg__node_t *args, const cfg__node_t *at,
                           const cfg__node_t *pre, const cfg__node_t *post)
{
    char what[300];
    snprintf(what, sizeof what, "job %s", job->name);
    cfg__node_t *params = NULL;
    if (cc->version == 21) {
        cfg__pair_t *dp = cfg__get(job->def, "parameters");
        params = cc_bind(cc, dp ? dp->v : NULL, args, at, what, invocation_keys);
        if (params == NULL) return NULL;
    }
    json_t *out = json_object();
    json_t *steps = json_array();
    bool ok = true;
    if (pre) {
        size_t m = cc_push_key(&cc->path, "pre-steps");
        cc_steps(cc, pre, "", steps);
        cc_pop(&cc->path, m);
    }
    cc_path_t saved = cc->path;
    snprintf(cc->path.s, sizeof cc->path.s, "%s", job->path);
    cc->path.n = strlen(cc->path.s);
    cc_scope_t sc = {.params = params, .what = what};
    cfg__node_t *body = cc_subst(cc, job->def, &sc, "parameters");
    ok &= cc_known_keys(cc, body, cc->version == 21 ? job_keys21 : job_keys20, "a job");
    cfg__pair_t *ex = cfg__get(body, "executor");
    if (ex) {
        size_t m = cc_push_key(&cc->path, "executor");
        ok &= apply_executor(cc, ex->v, job->prefix, out);
        cc_pop(&cc->path, m);
    }
    int nexec = 0;
    for (uint32_t i = 0; i < body->n && !cc->stop; i++) {
        const char *k = body->pairs[i].k->s;
        const cfg__node_t *v = body->pairs[i].v;
        size_t m = cc_push_key(&cc->path, k);
        json_t *j = NULL;
        if (strcmp(k, "executor") == 0 || strcmp(k, "parameters") == 0 || strcmp(k, "description") == 0) {
        } else if (strcmp(k, "steps") == 0) {
            if (v->kind != CFG_SEQ) {
                cc_err(cc, v, "expected a list of steps, got %s", cfg__kind_name(v));
                ok = false;
            } else {
                cc_steps(cc, v, job->prefix, steps);
            }
        } else if (strcmp(k, "parallelism") == 0) {
            int64_t p = -1;
            if (v->kind == CFG_INT)
                p = v->i;
            else if (v->kind == CFG_STR && v->n > 0 && v->n < 10 && strspn(v->s, "0123456789") == v->n)
                p = atoll(v->s);
            if (p < 1) {
                cc_err(cc, v, "parallelism is a whole number of at least 1");
                ok = false;
            } else {
                j = json_integer(p);
            }
        } else if (is_exec_key(k) || strcmp(k, "environment") == 0 || strcmp(k, "shell") == 0 ||
                   strcmp(k, "resource_class") == 0 || strcmp(k, "working_directory") == 0) {
            j = exec_value(cc, k, v);
            if (j == NULL) ok = false;
            if (is_exec_key(k)) nexec++;
        } else if (strcmp(k, "branches") == 0) {
            static const char *const oi[] = {"only", "ignore", NULL};
            if (cc_want(cc, v, CFG_MAP, "a map with only and/or ignore") && cc_known_keys(cc, v, oi, "branches")) {
                for (uint32_t b = 0; b < v->n; b++) {
                    size_t m2 = cc_push_key(&cc->path, v->pairs[b].k->s);
                    ok &= check_filter_values(cc, v->pairs[b].v);
                    cc_pop(&cc->path, m2);
                }
                j = cc_json(cc, v);
            } else {
                ok = false;
            }
        } else if (strcmp(k, "type") == 0) {
            static const char *const types[] = {"build", "release", "lock", "unlock", "approval", "no-op"};
            bool known = false;
            for (size_t t = 0; t < SP_ARRAY_LEN(types) && v->kind == CFG_STR; t++) known |= strcmp(types[t], v->s) == 0;
            if (!known) {
                cc_err(cc, v, "a job's type is build, release, lock, unlock, approval or no-op");
                ok = false;
            } else {
                j = cc_json(cc, v);
            }
        } else if (strcmp(k, "circleci_ip_ranges") == 0) {
            if (cc_want(cc, v, CFG_BOOL, "true or false")) j = cc_json(cc, v);
        } else if (strcmp(k, "retention") == 0) {
            static const char *const rk[] = {"caches", NULL};
            if (cc_want(cc, v, CFG_MAP, "{caches: <days>d}") && cc_known_keys(cc, v, rk, "retention"))
                j = cc_json(cc, v);
            else
                ok = false;
        } else if (strcmp(k, "plan_name") == 0 || strcmp(k, "key") == 0) {
            if (cc_want(cc, v, CFG_STR, NULL))
                j = cc_json(cc, v);
            else
                ok = false;
        }
        if (j) merge_key(cc, out, k, j);
        cc_pop(&cc->path, m);
    }
    (void)nexec;
    if (post) {
        cc->path = saved;
        size_t m = cc_push_key(&cc->path, "post-steps");
        cc_steps(cc, post, "", steps);
        cc_pop(&cc->path, m);
    }
    cc->path = saved;
    /* Steps go after the executor keys and settings, as CircleCI prints. */
    json_object_set_new(out, "steps", steps);
    cfg__pair_t *tp = cfg__get(body, "type");
    bool build = tp == NULL || (tp->v->kind == CFG_STR && strcmp(tp->v->s, "build") == 0);
    if (build && ok) {
        int kinds =
            !!json_object_get(out, "docker") + !!json_object_get(out, "machine") + !!json_object_get(out, "macos");
        snprintf(cc->path.s, sizeof cc->path.s, "%s", job->path);
        cc->path.n = strlen(cc->path.s);
        if (kinds == 0) {
            cc_err(cc, job->key, "job %s needs an executor: docker, machine, macos%s", job->name,
                   cc->version == 21 ? " or executor" : "");
            ok = false;
        }
        if (!cfg__get(body, "steps")) {
            cc_err(cc, job->key, "job %s needs steps", job->name);
            ok = false;
        }
        cc->path = saved;
    }
    if (!ok || cc->stop) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* ---- element registration ---- */

static void register_elems(cc_t *cc, const cfg__node_t *map, const char *section, const char *prefix,
                           const char *path_prefix, cc_table_t *t)
{
    if (map->kind == CFG_NULL) return;
    size_t m = cc_push_key(&cc->path, section);
    if (!cc_want(cc, map, CFG_MAP, NULL)) {
        cc_pop(&cc->path, m);
        return;
    }
    for (uint32_t i = 0; i < map->n; i++) {
        const cfg__pair_t *p = &map->pairs[i];
        size_t m2 = cc_push_key(&cc->path, p->k->s);
        cc_elem_t e = {.key = p->k, .def = p->v, .prefix = prefix};
        e.name = arena_cat(cc->a, prefix, p->k->s, NULL, NULL);
        char *sec = arena_cat(cc->a, path_prefix, section, ".", NULL);
        e.path = arena_cat(cc->a, sec, p->k->s, NULL, NULL);
        bool ok = true;
        if (strcmp(section, "commands") == 0 && p->v->kind == CFG_SEQ) {
            /* `name: [steps]` is a command without parameters. */
            cfg__node_t *d = cfg__alloc(cc->a, sizeof *d);
            *d = (cfg__node_t){.kind = CFG_MAP, .line = p->v->line, .col = p->v->col, .size = p->v->size + 1, .n = 1};
            d->pairs = cfg__alloc(cc->a, sizeof *d->pairs);
            d->pairs[0] = (cfg__pair_t){cc_str(cc, p->v, "steps", 5), p->v};
            e.def = d;
        } else if (!cc_want(cc, p->v, CFG_MAP, NULL)) {
            ok = false;
        }
        if (ok) {
            cfg__pair_t *dp = cfg__get(e.def, "parameters");
            if (dp) {
                size_t m3 = cc_push_key(&cc->path, "parameters");
                if (cc->version != 21) {
                    cc_err(cc, dp->k, "parameters need version 2.1");
                    ok = false;
                } else {
                    ok &= cc_check_decls(cc, dp->v, false);
                }
                cc_pop(&cc->path, m3);
            }
            if (strcmp(section, "commands") == 0) {
                static const char *const ck[] = {"steps", "parameters", "description", NULL};
                ok &= cc_known_keys(cc, e.def, ck, "a command");
                cfg__pair_t *sp = cfg__get(e.def, "steps");
                if (sp == NULL) {
                    cc_err(cc, p->k, "command %s needs steps", e.name);
                    ok = false;
                }
            } else if (strcmp(section, "executors") == 0) {
                ok &= cc_known_keys(cc, e.def, exec_keys, "an executor");
            }
        }
        /* A broken definition is still registered so that its uses do not
         * add "unknown" errors; its errors are reported here once. */
        if (!ok) {
            cfg__node_t *empty = cfg__alloc(cc->a, sizeof *empty);
            *empty = (cfg__node_t){.kind = CFG_MAP, .line = p->v->line, .col = p->v->col, .size = 1};
            e.def = empty;
            e.path = "";
        }
        table_add(t, &e);
        cc_pop(&cc->path, m2);
    }
    cc_pop(&cc->path, m);
}

static void read_orbs(cc_t *cc, const cfg__node_t *orbs, const char *prefix, const char *path_prefix, int depth)
{
    if (orbs->kind == CFG_NULL) return;
    size_t m = cc_push_key(&cc->path, "orbs");
    if (!cc_want(cc, orbs, CFG_MAP, "a map of orbs")) {
        cc_pop(&cc->path, m);
        return;
    }
    for (uint32_t i = 0; i < orbs->n; i++) {
        const cfg__pair_t *p = &orbs->pairs[i];
        size_t m2 = cc_push_key(&cc->path, p->k->s);
        /* Pipeline parameters may choose an orb's version; an inline orb's
         * body is substituted where its elements are used. */
        cfg__node_t *v = p->v->kind == CFG_STR ? cc_subst(cc, p->v, NULL, NULL) : p->v;
        if (v->kind == CFG_STR) {
            cc_err(cc, v,
                   "orb \"%s\" (%s) comes from the orb registry, which Spool does not have; define the orb inline "
                   "under orbs:",
                   p->k->s, v->s);
        } else if (v->kind != CFG_MAP) {
            cc_err(cc, v, "an orb is a reference such as ns/name@1.2.3 or an inline orb (a map), got %s",
                   cfg__kind_name(v));
        } else if (depth >= 8) {
            cc_err(cc, v, "inline orbs nest too deep");
        } else {
            static const char *const keys[] = {"version",   "description", "display",  "orbs", "commands",
                                               "executors", "jobs",        "examples", NULL};
            cc_known_keys(cc, p->v, keys, "an inline orb");
            const char *apre = arena_cat(cc->a, prefix, p->k->s, "/", NULL);
            const char *path = arena_cat(cc->a, path_prefix, "orbs.", p->k->s, ".");
            cc_path_t saved = cc->path;
            cc_pop(&cc->path, m); /* element paths are absolute */
            snprintf(cc->path.s, sizeof cc->path.s, "%sorbs.%s", path_prefix, p->k->s);
            cc->path.n = strlen(cc->path.s);
            cfg__pair_t *x;
            if ((x = cfg__get(p->v, "orbs"))) read_orbs(cc, x->v, apre, path, depth + 1);
            if ((x = cfg__get(p->v, "commands"))) register_elems(cc, x->v, "commands", apre, path, &cc->commands);
            if ((x = cfg__get(p->v, "executors"))) register_elems(cc, x->v, "executors", apre, path, &cc->executors);
            if ((x = cfg__get(p->v, "jobs"))) register_elems(cc, x->v, "jobs", apre, path, &cc->jobs);
            cc->path = saved;
        }
        cc_pop(&cc->path, m2);
    }
    cc_pop(&cc->path, m);
}

/* ---- pipeline parameters ---- */

static cfg__node_t *json_to_node(cc_t *cc, json_t *j)
{
    cfg__node_t *n = cfg__alloc(cc->a, sizeof *n);
    n->size = 1;
    switch (json_typeof(j)) {
    case JSON_STRING: return cc_str(cc, NULL, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: n->kind = CFG_INT, n->i = json_integer_value(j); break;
    case JSON_REAL: n->kind = CFG_FLOAT, n->f = json_real_value(j); break;
    case JSON_TRUE:
    case JSON_FALSE: n->kind = CFG_BOOL, n->b = json_is_true(j); break;
    case JSON_NULL: n->kind = CFG_NULL; break;
    default: n->kind = CFG_MAP; break; /* refused by the caller */
    }
    return n;
}

static void pipeline_params(cc_t *cc, const cfg__node_t *root)
{
    cfg__pair_t *dp = cfg__get(root, "parameters");
    const cfg__node_t *decls = dp ? dp->v : NULL;
    bool decls_ok = true;
    if (decls) {
        size_t m = cc_push_key(&cc->path, "parameters");
        /* Pipeline parameter defaults may not use other pipeline parameters. */
        cfg__node_t *saved = cc->pipeline_params;
        cc->pipeline_params = NULL;
        decls_ok = cc_check_decls(cc, decls, true);
        cc->pipeline_params = saved;
        cc_pop(&cc->path, m);
        if (decls->kind != CFG_MAP) decls = NULL;
    }
    json_t *given = (json_t *)cc->in->parameters, *parsed = NULL;
    if (given == NULL && cc->in->parameters_json && *cc->in->parameters_json) {
        json_error_t je;
        parsed = json_loads(cc->in->parameters_json, JSON_REJECT_DUPLICATES, &je);
        if (parsed == NULL)
            cfg__err(cc->errs, 0, 0, "", "pipeline parameters: invalid JSON at line %d column %d: %s", je.line,
                     je.column, je.text);
        given = parsed;
    }
    if (given && !json_is_object(given)) {
        cfg__err(cc->errs, 0, 0, "", "pipeline parameters: expected a JSON object of name: value");
        given = NULL; /* go on with the defaults */
    }
    /* Arguments as a map node, so that cc_bind checks them like any other. */
    cfg__node_t *args = NULL;
    if (given && json_object_size(given) > 0) {
        args = cfg__alloc(cc->a, sizeof *args);
        args->kind = CFG_MAP;
        args->size = 1;
        args->pairs = cfg__alloc(cc->a, json_object_size(given) * sizeof *args->pairs);
        const char *k;
        json_t *v;
        json_object_foreach (given, k, v) {
            if (json_is_object(v) || json_is_array(v)) {
                cfg__err(cc->errs, 0, 0, "", "pipeline parameter \"%s\": a value is a string, integer or boolean", k);
                decls_ok = false;
                continue;
            }
            args->pairs[args->n++] = (cfg__pair_t){cc_str(cc, NULL, k, strlen(k)), json_to_node(cc, v)};
        }
    }
    json_decref(parsed);
    if (!decls_ok) return;
    cc_path_t saved = cc->path;
    cc->path = (cc_path_t){.s = "parameters", .n = 10};
    cfg__node_t *bound = cc_bind(cc, decls, args, dp ? dp->k : root, "the pipeline", NULL);
    cc->path = saved;
    if (bound == NULL && decls) {
        /* Reported; go on with the defaults so that one bad argument does
         * not also make every use of the parameters an error. */
        bound = cfg__alloc(cc->a, sizeof *bound);
        *bound = (cfg__node_t){.kind = CFG_MAP, .size = 1};
        bound->pairs = cfg__alloc(cc->a, (decls->n + 1) * sizeof *bound->pairs);
        for (uint32_t i = 0; i < decls->n; i++) {
            cfg__pair_t *d = cfg__get(decls->pairs[i].v, "default");
            bound->pairs[bound->n++] = (cfg__pair_t){decls->pairs[i].k, d ? d->v : decls->pairs[i].v};
        }
    }
    cc->pipeline_params = bound;
}

/* ---- workflows ---- */

typedef struct {
    const char *name;  /* final name in the workflow */
    const char *alias; /* matrix alias, or NULL */
    const char *ref;   /* the job it invokes (for paths) */
    const cfg__node_t *pos;
    const cfg__node_t *requires;
    json_t *entry; /* the attributes ({} when none); requires set later */
    size_t item;   /* index in the jobs list (for paths) */
    int mark;      /* cycle search */
} wjob_t;

typedef struct {
    wjob_t *v;
    size_t n, cap;
} wjobs_t;

static cfg__node_t *map_with(cc_t *cc, const cfg__node_t *base, const cfg__node_t *extra)
{
    /* base's pairs, then extra's (extra wins on a clash) */
    uint32_t nb = base && base->kind == CFG_MAP ? base->n : 0, ne = extra ? extra->n : 0;
    cfg__node_t *r = cfg__alloc(cc->a, sizeof *r);
    *r = (cfg__node_t){.kind = CFG_MAP, .size = 1};
    if (base) r->line = base->line, r->col = base->col;
    r->pairs = cfg__alloc(cc->a, (nb + ne + 1) * sizeof *r->pairs);
    for (uint32_t i = 0; i < nb; i++)
        if (!extra || !cfg__get(extra, base->pairs[i].k->s)) r->pairs[r->n++] = base->pairs[i];
    for (uint32_t i = 0; i < ne; i++) r->pairs[r->n++] = extra->pairs[i];
    for (uint32_t i = 0; i < r->n; i++) r->size += r->pairs[i].v->size;
    return r;
}

static int cmp_pair_key(const void *a, const void *b)
{
    return strcmp(((const cfg__pair_t *)a)->k->s, ((const cfg__pair_t *)b)->k->s);
}

/* The combinations of a matrix (after exclude), each a map param -> value,
 * in the order of the parameter names sorted, the first varying slowest. */
static cfg__node_t **matrix_combos(cc_t *cc, const cfg__node_t *mx, size_t *count)
{
    *count = 0;
    static const char *const keys[] = {"parameters", "exclude", "alias", NULL};
    if (!cc_want(cc, mx, CFG_MAP, "{parameters, exclude, alias}") || !cc_known_keys(cc, mx, keys, "matrix"))
        return NULL;
    cfg__pair_t *pp = cfg__get(mx, "parameters");
    if (pp == NULL || pp->v->kind != CFG_MAP || pp->v->n == 0) {
        cc_err(cc, pp ? pp->v : mx, "matrix needs parameters: a map of parameter name to a list of values");
        return NULL;
    }
    uint32_t np = pp->v->n;
    cfg__pair_t *ps = cfg__alloc(cc->a, np * sizeof *ps);
    memcpy(ps, pp->v->pairs, np * sizeof *ps);
    qsort(ps, np, sizeof *ps, cmp_pair_key);
    size_t total = 1;
    size_t m = cc_push_key(&cc->path, "parameters");
    for (uint32_t i = 0; i < np; i++) {
        if (ps[i].v->kind != CFG_SEQ || ps[i].v->n == 0) {
            size_t m2 = cc_push_key(&cc->path, ps[i].k->s);
            cc_err(cc, ps[i].v, "a matrix parameter takes a list of values, got %s", cfg__kind_name(ps[i].v));
            cc_pop(&cc->path, m2);
            cc_pop(&cc->path, m);
            return NULL;
        }
        total *= ps[i].v->n;
        if (total > CONFIG_MAX_MATRIX) {
            cc_err(cc, pp->v, "the matrix makes more than %d jobs", CONFIG_MAX_MATRIX);
            cc_pop(&cc->path, m);
            return NULL;
        }
    }
    cc_pop(&cc->path, m);
    cfg__pair_t *ex = cfg__get(mx, "exclude");
    if (ex && ex->v->kind != CFG_SEQ && ex->v->kind != CFG_NULL) {
        size_t m2 = cc_push_key(&cc->path, "exclude");
        cc_err(cc, ex->v, "exclude takes a list of parameter maps, got %s", cfg__kind_name(ex->v));
        cc_pop(&cc->path, m2);
        return NULL;
    }
    cfg__node_t **out = cfg__alloc(cc->a, total * sizeof *out);
    for (size_t c = 0; c < total; c++) {
        cfg__node_t *combo = cfg__alloc(cc->a, sizeof *combo);
        *combo = (cfg__node_t){.kind = CFG_MAP, .line = mx->line, .col = mx->col, .size = 1, .n = np};
        combo->pairs = cfg__alloc(cc->a, np * sizeof *combo->pairs);
        size_t rest = c;
        for (uint32_t i = np; i-- > 0;) {
            uint32_t nv = ps[i].v->n;
            combo->pairs[i] = (cfg__pair_t){ps[i].k, ps[i].v->items[rest % nv]};
            rest /= nv;
            combo->size += combo->pairs[i].v->size;
        }
        bool excluded = false;
        for (uint32_t e = 0; ex && ex->v->kind == CFG_SEQ && e < ex->v->n && !excluded; e++) {
            const cfg__node_t *x = ex->v->items[e];
            if (x->kind != CFG_MAP) continue;
            bool all = x->n > 0;
            for (uint32_t k = 0; k < x->n && all; k++) {
                cfg__pair_t *cp = cfg__get(combo, x->pairs[k].k->s);
                all = cp && cc_values_equal(cp->v, x->pairs[k].v);
            }
            excluded = all;
        }
        if (!excluded) out[(*count)++] = combo;
    }
    return out;
}

static void wjobs_add(wjobs_t *w, const wjob_t *j)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 16;
        w->v = sp_xrealloc(w->v, w->cap * sizeof *w->v);
    }
    w->v[w->n++] = *j;
}

/* Copies the invocation attributes that stay in the processed workflow. */
static json_t *invocation_entry(cc_t *cc, const cfg__node_t *v, bool *ok)
{
    json_t *e = json_object();
    if (v == NULL || v->kind != CFG_MAP) return e;
    for (uint32_t i = 0; i < v->n; i++) {
        const char *k = v->pairs[i].k->s;
        const cfg__node_t *x = v->pairs[i].v;
        size_t m = cc_push_key(&cc->path, k);
        if (strcmp(k, "context") == 0) {
            if (cc_want_str_list(cc, x, true))
                json_object_set_new(e, k, cc_json(cc, x));
            else
                *ok = false;
        } else if (strcmp(k, "filters") == 0) {
            if (check_filters(cc, x, true))
                json_object_set_new(e, k, cc_json(cc, x));
            else
                *ok = false;
        } else if (strcmp(k, "type") == 0 || strcmp(k, "serial-group") == 0) {
            if (cc_want(cc, x, CFG_STR, NULL))
                json_object_set_new(e, k, cc_json(cc, x));
            else
                *ok = false;
        } else if (strcmp(k, "override-with") == 0) {
            json_object_set_new(e, k, cc_json(cc, x));
        }
        cc_pop(&cc->path, m);
    }
    return e;
}

/* Adds a compiled 2.1 job under its invocation name. */
static bool put_job(cc_t *cc, json_t *jobs, const char *name, json_t *job, const cfg__node_t *at)
{
    json_t *old = json_object_get(jobs, name);
    if (old && !json_equal(old, job)) {
        cc_err(cc, at,
               "job name \"%s\" is used by two invocations that differ (arguments, pre-steps or post-steps); give "
               "one of them another name:",
               name);
        json_decref(job);
        return false;
    }
    if (old)
        json_decref(job);
    else
        json_object_set_new(jobs, name, job);
    return true;
}

static bool find_cycle(cc_t *cc, wjobs_t *w, size_t i, int32_t **edges, size_t *nedges, size_t *stack, size_t depth,
                       const char *wf)
{
    w->v[i].mark = 1;
    stack[depth] = i;
    for (size_t e = 0; e < nedges[i]; e++) {
        size_t j = (size_t)edges[i][e];
        if (w->v[j].mark == 1) {
            char msg[600];
            size_t ln = 0;
            size_t from = depth;
            while (from > 0 && stack[from] != j) from--;
            for (size_t k = from; k <= depth && ln < sizeof msg - 80; k++)
                ln += (size_t)snprintf(msg + ln, sizeof msg - ln, "%s -> ", w->v[stack[k]].name);
            snprintf(msg + ln, sizeof msg - ln, "%s", w->v[j].name);
            size_t m = cc_push_idx(&cc->path, w->v[i].item);
            cc_push_key(&cc->path, w->v[i].ref);
            cc_push_key(&cc->path, "requires");
            cc_err(cc, w->v[i].requires ? w->v[i].requires : w->v[i].pos, "workflow %s: requires forms a cycle: %s", wf,
                   msg);
            cc_pop(&cc->path, m);
            return true;
        }
        if (w->v[j].mark == 0 && find_cycle(cc, w, j, edges, nedges, stack, depth + 1, wf)) return true;
    }
    w->v[i].mark = 2;
    return false;
}

/* Resolves requires (names and matrix aliases), reports unknown names and
 * cycles, and sets each entry's requires. */
static bool resolve_requires(cc_t *cc, wjobs_t *w, const char *wf)
{
    bool ok = true;
    cc_table_t names = {0};
    for (size_t i = 0; i < w->n; i++) {
        cc_elem_t e = {.name = w->v[i].name};
        if (table_get(&names, e.name)) {
            size_t m = cc_push_idx(&cc->path, w->v[i].item);
            cc_push_key(&cc->path, w->v[i].ref);
            cc_err(cc, w->v[i].pos,
                   "workflow %s has two jobs named \"%s\" (after matrix expansion); give one "
                   "another name:",
                   wf, e.name);
            cc_pop(&cc->path, m);
            ok = false;
            continue;
        }
        e.def = (cfg__node_t *)(uintptr_t)(i + 1); /* the index, stored in a pointer field */
        table_add(&names, &e);
    }
    int32_t **edges = sp_xcalloc(w->n, sizeof *edges);
    size_t *nedges = sp_xcalloc(w->n, sizeof *nedges);
    size_t base = cc->path.n;
    for (size_t i = 0; i < w->n && ok; i++) {
        const cfg__node_t *rq = w->v[i].requires;
        if (rq == NULL) continue;
        cc_pop(&cc->path, base);
        cc_push_idx(&cc->path, w->v[i].item);
        cc_push_key(&cc->path, w->v[i].ref);
        cc_push_key(&cc->path, "requires");
        json_t *out = json_array();
        uint32_t nr = rq->kind == CFG_SEQ ? rq->n : 1;
        for (uint32_t r = 0; r < nr; r++) {
            const cfg__node_t *x = rq->kind == CFG_SEQ ? rq->items[r] : rq;
            const cfg__node_t *status = NULL;
            const cfg__node_t *nm = x;
            if (x->kind == CFG_MAP && x->n == 1) { /* {job: status or [statuses]} */
                nm = x->pairs[0].k;
                status = x->pairs[0].v;
            }
            char buf[64];
            const char *s;
            size_t sl;
            if (nm->kind == CFG_MAP || nm->kind == CFG_SEQ || !cc_scalar_text(nm, buf, sizeof buf, &s, &sl)) {
                cc_err(cc, x, "requires takes job names, got %s", cfg__kind_name(x));
                ok = false;
                continue;
            }
            char *name = sp_xstrndup(s, sl);
            cc_elem_t *hit = table_get(&names, name);
            size_t nmatch = 0;
            for (size_t j = 0; j < w->n; j++) {
                bool match =
                    hit ? (size_t)(uintptr_t)hit->def - 1 == j : (w->v[j].alias && strcmp(w->v[j].alias, name) == 0);
                if (!match) continue;
                nmatch++;
                nedges[i]++;
                edges[i] = sp_xrealloc(edges[i], nedges[i] * sizeof **edges);
                edges[i][nedges[i] - 1] = (int32_t)j;
                if (status) {
                    json_t *o = json_object();
                    json_object_set_new(o, w->v[j].name, cc_json(cc, status));
                    json_array_append_new(out, o);
                } else {
                    json_array_append_new(out, json_string(w->v[j].name));
                }
            }
            if (nmatch == 0) {
                size_t m = cc_push_idx(&cc->path, r);
                cc_err(cc, x, "workflow %s: requires \"%s\", which is not a job of this workflow", wf, name);
                cc_pop(&cc->path, m);
                ok = false;
            }
            free(name);
        }
        json_object_set_new(w->v[i].entry, "requires", out);
    }
    cc_pop(&cc->path, base);
    if (ok) {
        size_t *stack = sp_xcalloc(w->n + 1, sizeof *stack);
        for (size_t i = 0; i < w->n && ok; i++)
            if (w->v[i].mark == 0 && find_cycle(cc, w, i, edges, nedges, stack, 0, wf)) ok = false;
        free(stack);
    }
    for (size_t i = 0; i < w->n; i++) free(edges[i]);
    free(edges);
    free(nedges);
    table_free(&names);
    return ok;
}

static json_t *compile_triggers(cc_t *cc, const cfg__node_t *t)
{
    if (!cc_want(cc, t, CFG_SEQ, "a list of triggers")) return NULL;
    bool ok = true;
    for (uint32_t i = 0; i < t->n; i++) {
        const cfg__node_t *x = t->items[i];
        size_t m = cc_push_idx(&cc->path, i);
        static const char *const tk[] = {"schedule", NULL};
        static const char *const sk[] = {"cron", "filters", NULL};
        cfg__pair_t *sp;
        if (!cc_want(cc, x, CFG_MAP, "{schedule: {cron, filters}}") || !cc_known_keys(cc, x, tk, "a trigger")) {
            ok = false;
        } else if ((sp = cfg__get(x, "schedule")) == NULL) {
            cc_err(cc, x, "a trigger needs schedule");
            ok = false;
        } else {
            size_t m2 = cc_push_key(&cc->path, "schedule");
            if (!cc_want(cc, sp->v, CFG_MAP, "{cron, filters}") || !cc_known_keys(cc, sp->v, sk, "schedule")) {
                ok = false;
            } else {
                cfg__pair_t *cp = cfg__get(sp->v, "cron"), *fp = cfg__get(sp->v, "filters");
                if (cp == NULL || cp->v->kind != CFG_STR) {
                    cc_err(cc, cp ? cp->v : sp->v, "schedule needs cron: a cron line such as \"0 3 * * *\"");
                    ok = false;
                } else {
                    char err[300];
                    if (config_cron_check(cp->v->s, err, sizeof err) != 0) {
                        size_t m3 = cc_push_key(&cc->path, "cron");
                        cc_err(cc, cp->v, "invalid cron line \"%s\": %s", cp->v->s, err);
                        cc_pop(&cc->path, m3);
                        ok = false;
                    }
                }
                if (fp) {
                    size_t m3 = cc_push_key(&cc->path, "filters");
                    ok &= check_filters(cc, fp->v, false);
                    cc_pop(&cc->path, m3);
                }
            }
            cc_pop(&cc->path, m2);
        }
        cc_pop(&cc->path, m);
    }
    return ok ? cc_json(cc, t) : NULL;
}

static const char *const inv_keys20[] = {"requires",     "context",       "filters", "type",
                                         "serial-group", "override-with", NULL};

/* One item of a workflow's jobs list: adds its job(s) to w, and compiles
 * them into jobs (2.1). */
static bool workflow_item(cc_t *cc, const cfg__node_t *item, size_t idx, wjobs_t *w, json_t *jobs)
{
    const cfg__node_t *refn = item, *val = NULL;
    if (item->kind == CFG_MAP) {
        if (item->n != 1) {
            cc_err(cc, item, "a workflow job is a job name or {<job>: {requires, filters, ...}}, found %u keys",
                   item->n);
            return false;
        }
        refn = item->pairs[0].k;
        val = item->pairs[0].v;
        if (val->kind != CFG_MAP && val->kind != CFG_NULL) {
            size_t m = cc_push_key(&cc->path, refn->s);
            cc_err(cc, val, "expected a map of job settings and arguments, got %s", cfg__kind_name(val));
            cc_pop(&cc->path, m);
            return false;
        }
        if (val->kind == CFG_NULL) val = NULL;
    } else if (item->kind != CFG_STR) {
        cc_err(cc, item, "a workflow job is a job name or {<job>: {...}}, got %s", cfg__kind_name(item));
        return false;
    }
    const char *ref = refn->s;
    size_t m = cc_push_key(&cc->path, ref);
    bool ok = true;
    if (cc->version == 20 && val) ok &= cc_known_keys(cc, val, inv_keys20, "a 2.0 workflow job");
    /* The matrix, then one invocation per combination (or one). */
    size_t ncombo = 1;
    cfg__node_t **combos = NULL;
    const char *alias = NULL;
    cfg__pair_t *mp = val && cc->version == 21 ? cfg__get(val, "matrix") : NULL;
    if (mp) {
        size_t m2 = cc_push_key(&cc->path, "matrix");
        cfg__node_t *mx = cc_subst(cc, mp->v, NULL, NULL);
        combos = matrix_combos(cc, mx, &ncombo);
        cfg__pair_t *ap = mx->kind == CFG_MAP ? cfg__get(mx, "alias") : NULL;
        alias = ap && ap->v->kind == CFG_STR ? ap->v->s : ref;
        cc_pop(&cc->path, m2);
        if (combos == NULL) {
            cc_pop(&cc->path, m);
            return false;
        }
    }
    for (size_t c = 0; c < ncombo && !cc->stop; c++) {
        cfg__node_t *combo = combos ? combos[c] : NULL;
        cc_scope_t sc = {.matrix = combo};
        cfg__node_t *v = val ? cc_subst(cc, (cfg__node_t *)val, &sc, "matrix") : NULL;
        char namebuf[1024];
        const char *name = ref;
        cfg__pair_t *np = v && cc->version == 21 ? cfg__get(v, "name") : NULL;
        if (np) {
            char buf[64];
            const char *s;
            size_t sl;
            if (np->v->kind == CFG_MAP || np->v->kind == CFG_SEQ || !cc_scalar_text(np->v, buf, sizeof buf, &s, &sl)) {
                cc_err(cc, np->v, "a job's name is a string, got %s", cfg__kind_name(np->v));
                ok = false;
                continue;
            }
            if (sl >= sizeof namebuf) {
                cc_err(cc, np->v, "a job's name is longer than %zu characters", sizeof namebuf - 1);
                ok = false;
                continue;
            }
            snprintf(namebuf, sizeof namebuf, "%.*s", (int)sl, s);
            name = namebuf;
        } else if (combo) {
            /* CircleCI's name-a-b naming, refused rather than cut when long. */
            sp_buf_t nb = {0};
            sp_buf_addstr(&nb, ref);
            for (uint32_t k = 0; k < combo->n; k++) {
                char buf[64];
                const char *s;
                size_t sl;
                if (!cc_scalar_text(combo->pairs[k].v, buf, sizeof buf, &s, &sl)) {
                    s = "?";
                    sl = 1;
                }
                sp_buf_printf(&nb, "-%.*s", (int)sl, s);
            }
            bool fits = nb.n < sizeof namebuf;
            if (fits) snprintf(namebuf, sizeof namebuf, "%.*s", (int)nb.n, (const char *)nb.p);
            sp_buf_free(&nb);
            if (!fits) {
                cc_err(cc, item, "a matrix job's name (%s-...) is longer than %zu characters", ref, sizeof namebuf - 1);
                ok = false;
                continue;
            }
            name = namebuf;
        }
        if (name[0] == 0) {
            cc_err(cc, item, "a job's name cannot be empty");
            ok = false;
            continue;
        }
        bool inv_ok = true;
        json_t *entry = invocation_entry(cc, v, &inv_ok);
        ok &= inv_ok;
        cfg__pair_t *tp = v ? cfg__get(v, "type") : NULL;
        bool approval = tp && tp->v->kind == CFG_STR && strcmp(tp->v->s, "approval") == 0;
        cfg__pair_t *rp = v ? cfg__get(v, "requires") : NULL;
        if (rp && rp->v->kind != CFG_SEQ && rp->v->kind != CFG_NULL) {
            size_t m2 = cc_push_key(&cc->path, "requires");
            cc_err(cc, rp->v, "requires takes a list of job names, got %s", cfg__kind_name(rp->v));
            cc_pop(&cc->path, m2);
            ok = false;
            rp = NULL;
        }
        wjob_t wj = {.name = cfg__strndup(cc->a, name, strlen(name)),
                     .alias = alias,
                     .ref = ref,
                     .pos = refn,
                     .requires = rp && rp->v->kind == CFG_SEQ ? rp->v : NULL,
                     .entry = entry,
                     .item = idx};
        if (!approval) {
            cc_elem_t *job = cc_lookup(&cc->jobs, "", ref);
            if (job == NULL) {
                cc_err(cc, refn, "unknown job \"%s\": it is not under jobs:%s", ref,
                       cc->version == 21 ? " (nor in an inline orb)" : "");
                ok = false;
            } else if (cc->version == 21 && job->path[0]) {
                cfg__node_t *args = combo ? map_with(cc, v, combo) : v;
                cfg__pair_t *pre = v ? cfg__get(v, "pre-steps") : NULL, *post = v ? cfg__get(v, "post-steps") : NULL;
                /* The job's substituted copies are scratch: its JSON is all that stays. */
                cfg__mark_t mark = cfg__arena_mark(cc->a);
                json_t *j = compile_job(cc, job, args, refn, pre ? pre->v : NULL, post ? post->v : NULL);
                cfg__arena_release(cc->a, mark);
                if (j == NULL || !put_job(cc, jobs, wj.name, j, refn)) ok = false;
            } else if (cc->version == 21) {
                ok = false; /* its definition is broken and was reported */
            }
        }
        wjobs_add(w, &wj);
    }
    cc_pop(&cc->path, m);
    return ok;
}

static void compile_workflows(cc_t *cc, const cfg__node_t *wfs, json_t *jobs, json_t *out)
{
    size_t m = cc_push_key(&cc->path, "workflows");
    if (!cc_want(cc, wfs, CFG_MAP, "a map of workflows")) {
        cc_pop(&cc->path, m);
        return;
    }
    bool have_version = false;
    for (uint32_t i = 0; i < wfs->n && !cc->stop; i++) {
        const cfg__pair_t *p = &wfs->pairs[i];
        const char *wf = p->k->s;
        if (strcmp(wf, "version") == 0) {
            have_version = true;
            if (p->v->kind != CFG_INT && p->v->kind != CFG_FLOAT && p->v->kind != CFG_STR) {
                size_t m2 = cc_push_key(&cc->path, "version");
                cc_err(cc, p->v, "workflows' version is 2");
                cc_pop(&cc->path, m2);
            }
            continue;
        }
        size_t m2 = cc_push_key(&cc->path, wf);
        const cfg__node_t *w = p->v;
        static const char *const keys21[] = {"jobs", "triggers", "when", "unless", "max_auto_reruns", NULL};
        static const char *const keys20[] = {"jobs", "triggers", "max_auto_reruns", NULL};
        if (!cc_want(cc, w, CFG_MAP, "a workflow: {jobs, triggers}")) {
            cc_pop(&cc->path, m2);
            continue;
        }
        cc_known_keys(cc, w, cc->version == 21 ? keys21 : keys20, "a workflow");
        if (cc->version == 21) {
            cfg__node_t *wsub = cc_subst(cc, (cfg__node_t *)w, NULL, "jobs");
            cfg__pair_t *wp = cfg__get(wsub, "when"), *up = cfg__get(wsub, "unless");
            bool run = true, lok = true;
            if (wp && up) {
                cc_err(cc, up->k, "a workflow takes when or unless, not both");
                lok = false;
            }
            if (wp) {
                size_t m3 = cc_push_key(&cc->path, "when");
                run = cc_logic(cc, wp->v, 0, &lok);
                cc_pop(&cc->path, m3);
            } else if (up) {
                size_t m3 = cc_push_key(&cc->path, "unless");
                run = !cc_logic(cc, up->v, 0, &lok);
                cc_pop(&cc->path, m3);
            }
            if (!lok || !run) {
                cc_pop(&cc->path, m2);
                continue;
            }
        }
        cfg__pair_t *jp = cfg__get(w, "jobs");
        json_t *wout = json_object();
        wjobs_t wj = {0};
        bool ok = true;
        if (jp == NULL || jp->v->kind != CFG_SEQ || jp->v->n == 0) {
            cc_err(cc, jp ? jp->v : p->k, "workflow %s needs jobs: a list of at least one job", wf);
            ok = false;
        } else {
            size_t m3 = cc_push_key(&cc->path, "jobs");
            for (uint32_t j = 0; j < jp->v->n && !cc->stop; j++) {
                size_t m4 = cc_push_idx(&cc->path, j);
                ok &= workflow_item(cc, jp->v->items[j], j, &wj, jobs);
                cc_pop(&cc->path, m4);
            }
            if (ok) {
                size_t m4 = cc->path.n;
                ok &= resolve_requires(cc, &wj, wf);
                cc_pop(&cc->path, m4);
            }
            cc_pop(&cc->path, m3);
        }
        json_t *list = json_array();
        for (size_t j = 0; j < wj.n; j++) {
            if (json_object_size(wj.v[j].entry) == 0) {
                json_array_append_new(list, json_string(wj.v[j].name));
                json_decref(wj.v[j].entry);
            } else {
                json_t *o = json_object();
                json_object_set_new(o, wj.v[j].name, wj.v[j].entry);
                json_array_append_new(list, o);
            }
        }
        free(wj.v);
        json_object_set_new(wout, "jobs", list);
        cfg__pair_t *tp = cfg__get(w, "triggers");
        if (tp) {
            size_t m3 = cc_push_key(&cc->path, "triggers");
            cfg__node_t *t = cc_subst(cc, tp->v, NULL, NULL);
            json_t *tj = compile_triggers(cc, t);
            if (tj)
                json_object_set_new(wout, "triggers", tj);
            else
                ok = false;
            cc_pop(&cc->path, m3);
        }
        cfg__pair_t *ap = cfg__get(w, "max_auto_reruns");
        if (ap) json_object_set_new(wout, "max_auto_reruns", cc_json(cc, ap->v));
        json_object_set_new(out, wf, wout);
        cc_pop(&cc->path, m2);
    }
    if (cc->version == 20 && !have_version) cc_err(cc, wfs, "a version 2.0 config needs workflows: version: 2");
    json_object_set_new(out, "version", json_integer(2));
    cc_pop(&cc->path, m);
}

/* ---- the top ---- */

static int read_version(cc_t *cc, const cfg__node_t *root)
{
    cfg__pair_t *vp = cfg__get(root, "version");
    if (vp == NULL) {
        cc_err(cc, root, "the config needs version: 2, 2.0 or 2.1");
        return 0;
    }
    const cfg__node_t *v = vp->v;
    int ver = 0;
    if (v->kind == CFG_INT && v->i == 2) ver = 20;
    if (v->kind == CFG_FLOAT && v->f == 2.0) ver = 20;
    if (v->kind == CFG_FLOAT && v->f == 2.1) ver = 21;
    if (v->kind == CFG_STR && (strcmp(v->s, "2") == 0 || strcmp(v->s, "2.0") == 0)) ver = 20;
    if (v->kind == CFG_STR && strcmp(v->s, "2.1") == 0) ver = 21;
    if (ver == 0) {
        char buf[64];
        const char *s = "?";
        size_t n = 1;
        cc_scalar_text(v, buf, sizeof buf, &s, &n);
        cc->path = (cc_path_t){.s = "version", .n = 7};
        cc_err(cc, v, "unsupported version %.*s: Spool runs versions 2, 2.0 and 2.1", (int)(n < 40 ? n : 40), s);
        cc->path = (cc_path_t){0};
    }
    return ver;
}

static json_t *compile_root(cc_t *cc, const cfg__node_t *root)
{
    if (root->kind == CFG_NULL) {
        cc_err(cc, root, "the config is empty");
        return NULL;
    }
    if (root->kind != CFG_MAP) {
        cc_err(cc, root, "the config is a map (version, jobs, workflows), got %s", cfg__kind_name(root));
        return NULL;
    }
    cc->version = read_version(cc, root);
    if (cc->version == 0) return NULL;
    if (cc->version == 20) {
        static const char *const only21[] = {"orbs", "commands", "executors", "parameters"};
        for (size_t i = 0; i < SP_ARRAY_LEN(only21); i++) {
            cfg__pair_t *p = cfg__get(root, only21[i]);
            if (p) {
                cc->path = (cc_path_t){0};
                cc_push_key(&cc->path, only21[i]);
                cc_err(cc, p->k, "%s needs version 2.1", only21[i]);
                cc->path = (cc_path_t){0};
            }
        }
    } else {
        pipeline_params(cc, root);
        cfg__pair_t *op = cfg__get(root, "orbs");
        if (op) read_orbs(cc, op->v, "", "", 0);
        cfg__pair_t *x;
        if ((x = cfg__get(root, "commands"))) register_elems(cc, x->v, "commands", "", "", &cc->commands);
        if ((x = cfg__get(root, "executors"))) register_elems(cc, x->v, "executors", "", "", &cc->executors);
    }
    cfg__pair_t *jp = cfg__get(root, "jobs");
    if (jp) register_elems(cc, jp->v, "jobs", "", "", &cc->jobs);
    cc_mark_stable(cc);
    /* Inline orbs' jobs were added first; top-level ones keep their names. */
    json_t *out = json_object();
    json_object_set_new(out, "version", json_integer(2));
    json_t *jobs = json_object();
    json_object_set_new(out, "jobs", jobs);
    if (cc->version == 20) {
        for (size_t i = 0; i < cc->jobs.n && !cc->stop; i++) {
            cc_elem_t *e = &cc->jobs.v[i];
            if (e->path[0] == 0) continue; /* broken, reported */
            cfg__mark_t mark = cfg__arena_mark(cc->a);
            json_t *j = compile_job(cc, e, NULL, e->key, NULL, NULL);
            cfg__arena_release(cc->a, mark);
            if (j) json_object_set_new(jobs, e->name, j);
        }
    }
    json_t *wout = json_object();
    cfg__pair_t *wp = cfg__get(root, "workflows");
    if (wp) {
        compile_workflows(cc, wp->v, jobs, wout);
    } else {
        /* No workflows: one workflow running the job called build. */
        cc_elem_t *b = cc_lookup(&cc->jobs, "", "build");
        if (b == NULL) {
            cc->path = (cc_path_t){.s = "jobs", .n = 4};
            cc_err(cc, jp ? jp->k : root, "a config without workflows runs the job named build, and there is none");
            cc->path = (cc_path_t){0};
        } else if (cc->version == 21 && b->path[0]) {
            json_t *j = compile_job(cc, b, NULL, b->key, NULL, NULL);
            if (j) json_object_set_new(jobs, "build", j);
        }
        json_t *w = json_object(), *list = json_array();
        /* A 2.0 job's `branches` applies only here, as the workflow's filter. */
        json_t *br = json_object_get(json_object_get(jobs, "build"), "branches");
        if (br) {
            json_t *f = json_object(), *e = json_object(), *o = json_object();
            json_object_set(f, "branches", br);
            json_object_set_new(e, "filters", f);
            json_object_set_new(o, "build", e);
            json_array_append_new(list, o);
        } else {
            json_array_append_new(list, json_string("build"));
        }
        json_object_set_new(w, "jobs", list);
        json_object_set_new(wout, "workflow", w);
        json_object_set_new(wout, "version", json_integer(2));
    }
    json_object_set_new(out, "workflows", wout);
    return out;
}

int config_compile(const char *src, size_t n, const char *filename, const config_input_t *in, config_result_t **out)
{
    if (src == NULL || out == NULL) return SP_EINVAL;
    config_result_t *r = sp_xcalloc(1, sizeof *r);
    cfg__errs_t *errs = sp_xcalloc(1, sizeof *errs);
    r->_priv = errs;
    errs->file = cfg__strndup(&errs->arena, filename ? filename : ".circleci/config.yml",
                              strlen(filename ? filename : ".circleci/config.yml"));
    r->source = sp_xstrndup(src, n);
    r->source_len = n;
    static const config_input_t no_input;
    cfg__arena_t arena = {0};
    cc_t *cc = sp_xcalloc(1, sizeof *cc);
    cc->a = &arena;
    cc->errs = errs;
    cc->in = in ? in : &no_input;
    cfg__node_t *root = cfg__parse(&arena, src, n, errs);
    json_t *processed = root ? compile_root(cc, root) : NULL;
    r->version = cc->version;
    cc_cache_free(cc);
    cc_share_free(cc);
    table_free(&cc->jobs);
    table_free(&cc->commands);
    table_free(&cc->executors);
    free(cc);
    cfg__arena_free(&arena);
    r->errors = errs->errors;
    r->nerrors = errs->nerrors;
    r->more_errors = errs->more;
    r->valid = processed != NULL && errs->nerrors == 0;
    if (r->valid)
        r->processed = processed;
    else
        json_decref(processed);
    *out = r;
    return 0;
}

void config_result_free(config_result_t *r)
{
    if (r == NULL) return;
    cfg__errs_t *errs = r->_priv;
    if (errs) {
        cfg__arena_free(&errs->arena);
        free(errs);
    }
    free(r->errors);
    free(r->source);
    json_decref(r->processed);
    free(r);
}

void config_error_format(const config_error_t *e, sp_buf_t *out)
{
    if (e->line > 0)
        sp_buf_printf(out, "%s:%d:%d: ", e->file, e->line, e->col);
    else
        sp_buf_printf(out, "%s: ", e->file);
    if (e->path && e->path[0]) sp_buf_printf(out, "%s: ", e->path);
    sp_buf_addstr(out, e->message);
}
