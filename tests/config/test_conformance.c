/*
 * The conformance set: tests/config/conformance/NN-*.yml compile to
 * exactly NN-*.expected.yml, tests/config/invalid/NN-*.yml fail with
 * exactly the lines of NN-*.expected.txt, and the valid configs together
 * use every key of CircleCI's config schemas (copies in schema/).
 *
 * SPOOL_UPDATE_EXPECTED=1 rewrites the expected files from the current
 * output (then review the diff).
 */
#include "helpers.h"

#include "config/config_internal.h"

#include <dirent.h>

static void here(char *out, size_t n, const char *leaf)
{
    snprintf(out, n, "%s", __FILE__);
    char *slash = strrchr(out, '/');
    if (slash) *slash = 0;
    size_t len = strlen(out);
    snprintf(out + len, n - len, "/%s", leaf);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    sp_buf_t b = {0};
    char chunk[8192];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) sp_buf_add(&b, chunk, got);
    fclose(f);
    sp_buf_add(&b, "", 1);
    if (len) *len = b.n - 1;
    return (char *)b.p;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The .yml files of a directory that are inputs (not expected outputs). */
static size_t inputs(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    char **v = NULL;
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".yml") != 0 || strstr(e->d_name, ".expected.")) continue;
        v = sp_xrealloc(v, (n + 1) * sizeof *v);
        v[n++] = sp_xstrdup(e->d_name);
    }
    if (d) closedir(d);
    qsort(v, n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(s, f);
        fclose(f);
    }
}

TEST(config_conformance_processed_output)
{
    char dir[4096];
    here(dir, sizeof dir, "conformance");
    char **names;
    size_t n = inputs(dir, &names);
    T_ASSERT(n >= 5);
    bool update = getenv("SPOOL_UPDATE_EXPECTED") != NULL;
    for (size_t i = 0; i < n; i++) {
        char path[4400], want_path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(want_path, sizeof want_path, "%s/%.*s.expected.yml", dir, (int)strlen(names[i]) - 4, names[i]);
        size_t len;
        char *src = slurp(path, &len);
        config_result_t *r = NULL;
        T_OK(config_compile(src, len, names[i], &th_cfg_input, &r));
        if (!r->valid) {
            char *e = th_errors(r);
            t_fail(t, __FILE__, __LINE__, "%s is invalid:\n%s", names[i], e);
            free(e);
        } else {
            sp_buf_t y = {0};
            T_OK(config_emit_yaml(r, &y));
            sp_buf_add(&y, "", 1);
            char *want = slurp(want_path, NULL);
            if (update)
                write_file(want_path, (const char *)y.p);
            else if (want == NULL || strcmp(want, (const char *)y.p) != 0)
                t_fail(t, __FILE__, __LINE__, "%s: processed config differs from %s:\n%s", names[i], want_path,
                       (const char *)y.p);
            free(want);
            sp_buf_free(&y);
        }
        config_result_free(r);
        free(src);
        free(names[i]);
    }
    free(names);
}

TEST(config_conformance_invalid_configs)
{
    char dir[4096];
    here(dir, sizeof dir, "invalid");
    char **names;
    size_t n = inputs(dir, &names);
    T_ASSERT(n >= 5);
    bool update = getenv("SPOOL_UPDATE_EXPECTED") != NULL;
    for (size_t i = 0; i < n; i++) {
        char path[4400], want_path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(want_path, sizeof want_path, "%s/%.*s.expected.txt", dir, (int)strlen(names[i]) - 4, names[i]);
        size_t len;
        char *src = slurp(path, &len);
        config_result_t *r = NULL;
        T_OK(config_compile(src, len, names[i], &th_cfg_input, &r));
        char *got = r->valid ? sp_xstrdup("(valid)\n") : th_errors(r);
        char *want = slurp(want_path, NULL);
        if (update)
            write_file(want_path, got);
        else if (want == NULL || strcmp(want, got) != 0)
            t_fail(t, __FILE__, __LINE__, "%s: errors differ.\n--- want\n%s--- got\n%s", names[i],
                   want ? want : "(missing)\n", got);
        free(want);
        free(got);
        config_result_free(r);
        free(src);
        free(names[i]);
    }
    free(names);
}

/* ---- schema coverage ---- */

typedef struct {
    char **v;
    size_t n;
} strs_t;

static void strs_add(strs_t *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0) return;
    s->v = sp_xrealloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n++] = sp_xstrdup(x);
}

static void strs_free(strs_t *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
}

/* Key paths of a schema, as ".jobs.*.docker[].image": "*" for any key of a
 * map of named things, "[]" for any item of a list. Orbs repeat the
 * top-level grammar and step lists recurse; both are cut (the key names
 * are checked separately, below). */
static void schema_paths(const json_t *root, const json_t *node, char *path, size_t len, int depth, strs_t *out,
                         strs_t *names)
{
    if (!json_is_object(node) || depth > 40) return;
    const json_t *ref = json_object_get(node, "$ref");
    if (json_is_string(ref)) {
        const char *r = json_string_value(ref);
        /* #/definitions/x: follow once per path (recursion ends at a repeat) */
        if (strncmp(r, "#/definitions/", 14) != 0) return;
        if (strstr(path, "steps[].when") || strstr(path, "steps[].unless") || strstr(path, "condition.") ||
            strstr(path, ".when.") || strstr(path, ".unless.") || strstr(path, "environment[]"))
            return;
        schema_paths(root, json_object_get(json_object_get(root, "definitions"), r + 14), path, len, depth + 1, out,
                     names);
        return;
    }
    const char *k;
    json_t *v;
    json_t *props = json_object_get(node, "properties");
    json_object_foreach (props, k, v) {
        if (!json_is_object(v)) continue;
        strs_add(names, k);
        int w = snprintf(path + len, 1024 - len, ".%s", k);
        if (w <= 0 || len + (size_t)w >= 1000) continue;
        if (!(len == 0 && strcmp(k, "orbs") == 0)) {
            if (!strstr(path, "parameters.*.default")) strs_add(out, path);
            schema_paths(root, v, path, len + (size_t)w, depth + 1, out, names);
        } else {
            strs_add(out, path);
        }
        path[len] = 0;
    }
    json_t *add = json_object_get(node, "additionalProperties");
    if (json_is_object(add)) {
        snprintf(path + len, 1024 - len, ".*");
        schema_paths(root, add, path, len + 2, depth + 1, out, names);
        path[len] = 0;
    }
    json_t *items = json_object_get(node, "items");
    if (json_is_object(items)) {
        snprintf(path + len, 1024 - len, "[]");
        schema_paths(root, items, path, len + 2, depth + 1, out, names);
        path[len] = 0;
    }
    static const char *const subs[] = {"anyOf", "oneOf", "allOf"};
    for (size_t i = 0; i < 3; i++) {
        size_t j;
        json_t *x;
        json_array_foreach (json_object_get(node, subs[i]), j, x)
            schema_paths(root, x, path, len, depth + 1, out, names);
    }
    static const char *const conds[] = {"if", "then", "else"};
    for (size_t i = 0; i < 3; i++)
        schema_paths(root, json_object_get(node, conds[i]), path, len, depth + 1, out, names);
}

/* Whether some value in the tree matches the path pattern p. */
static bool tree_has(const cfg__node_t *n, const char *p)
{
    if (*p == 0) return true;
    if (p[0] == '[' && p[1] == ']') {
        if (n->kind != CFG_SEQ) return false;
        for (uint32_t i = 0; i < n->n; i++)
            if (tree_has(n->items[i], p + 2)) return true;
        return false;
    }
    if (p[0] != '.' || n->kind != CFG_MAP) return false;
    const char *seg = p + 1;
    size_t sl = strcspn(seg, ".[");
    for (uint32_t i = 0; i < n->n; i++) {
        bool match = (sl == 1 && seg[0] == '*') || (n->pairs[i].k->n == sl && memcmp(n->pairs[i].k->s, seg, sl) == 0);
        if (match && tree_has(n->pairs[i].v, seg + sl)) return true;
    }
    return false;
}

static void tree_keys(const cfg__node_t *n, strs_t *out, int depth)
{
    if (depth > 64) return;
    if (n->kind == CFG_MAP)
        for (uint32_t i = 0; i < n->n; i++) {
            strs_add(out, n->pairs[i].k->s);
            tree_keys(n->pairs[i].v, out, depth + 1);
        }
    if (n->kind == CFG_SEQ)
        for (uint32_t i = 0; i < n->n; i++) tree_keys(n->items[i], out, depth + 1);
}

TEST(config_conformance_uses_every_schema_key)
{
    char dir[4096], path[4400];
    here(dir, sizeof dir, "conformance");
    char **names;
    size_t n = inputs(dir, &names);
    cfg__arena_t a = {0};
    cfg__errs_t errs = {.file = "x"};
    const cfg__node_t **trees = sp_xcalloc(n, sizeof *trees);
    strs_t used = {0};
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t len;
        char *src = slurp(path, &len);
        trees[i] = cfg__parse(&a, src, len, &errs);
        free(src);
        T_ASSERT(trees[i] != NULL);
        tree_keys(trees[i], &used, 0);
    }
    static const char *const schemas[] = {"schema/circleci-config.schema.json",
                                          "schema/circleci-config.schemastore-2021.schema.json"};
    size_t checked = 0;
    for (size_t s = 0; s < SP_ARRAY_LEN(schemas); s++) {
        here(path, sizeof path, schemas[s]);
        json_error_t je;
        json_t *schema = json_load_file(path, 0, &je);
        T_ASSERT(schema != NULL);
        strs_t paths = {0}, keys = {0};
        char buf[1024] = "";
        schema_paths(schema, schema, buf, 0, 0, &paths, &keys);
        for (size_t i = 0; i < paths.n; i++) {
            bool found = false;
            for (size_t j = 0; j < n && !found; j++) found = tree_has(trees[j], paths.v[i]);
            if (!found) t_fail(t, __FILE__, __LINE__, "%s: no conformance config uses %s", schemas[s], paths.v[i]);
        }
        for (size_t i = 0; i < keys.n; i++) {
            bool found = false;
            for (size_t j = 0; j < used.n && !found; j++) found = strcmp(used.v[j], keys.v[i]) == 0;
            if (!found)
                t_fail(t, __FILE__, __LINE__, "%s: no conformance config uses the key %s", schemas[s], keys.v[i]);
        }
        checked += paths.n;
        strs_free(&paths);
        strs_free(&keys);
        json_decref(schema);
    }
    printf("# %zu schema key paths checked\n", checked);
    T_ASSERT(checked > 300);
    strs_free(&used);
    free(trees);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(errs.errors);
    cfg__arena_free(&errs.arena);
    cfg__arena_free(&a);
}
