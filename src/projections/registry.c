/*
 * registry: API tokens and projects.
 *
 * Tables:
 *   registry.token     key: SHA-256 of the token (hex)  value: {id, name, role, revoked, created_at}
 *   registry.token_id  key: token id                    value: the hash
 *   registry.project   key: slug ("gh/org/repo")       value: project document (below)
 *   registry.project_id key: project id                 value: slug
 *
 * A project document has CircleCI's Project shape (id, slug, name,
 * organization_name, organization_slug, organization_id, vcs_info) plus
 * fields of our own that start with "_": _secret (the sealed webhook
 * secret), _git_token (the sealed token for https fetches), _building
 * (false after "stop building"), _followers.
 */
#include "doc.h"

static int put_str(log_kvtxn_t *t, const char *table, const char *key, const char *val)
{
    unsigned tbl;
    int rc = proj__table(t, table, &tbl);
    return rc ? rc : log_kvtxn_put(t, tbl, SP_SLICE_STR(key), SP_SLICE_STR(val));
}

static int token_created(log_kvtxn_t *t, const json_t *b, const log_event_t *ev)
{
    unsigned tbl;
    int rc = proj__table(t, "registry.token", &tbl);
    if (rc != 0) return rc;
    json_t *doc = json_pack("{s:s, s:s, s:s, s:b, s:o}", "id", proj__str(b, "id"), "name", proj__str(b, "name"), "role",
                            proj__str(b, "role"), "revoked", 0, "created_at", proj__time(ev->time_ns));
    rc = proj__doc_put(t, tbl, SP_SLICE_STR(proj__str(b, "hash")), doc);
    json_decref(doc);
    return rc ? rc : put_str(t, "registry.token_id", proj__str(b, "id"), proj__str(b, "hash"));
}

static int token_revoked(log_kvtxn_t *t, const json_t *b)
{
    unsigned ids, tbl;
    int rc;
    if ((rc = proj__table(t, "registry.token_id", &ids)) || (rc = proj__table(t, "registry.token", &tbl))) return rc;
    sp_slice_t hash;
    if (log_kvtxn_get(t, ids, SP_SLICE_STR(proj__str(b, "id")), &hash) != 0) return 0;
    char h[130];
    snprintf(h, sizeof h, "%.*s", (int)hash.n, (const char *)hash.p);
    json_t *doc;
    if (proj__doc_get(t, tbl, SP_SLICE_STR(h), &doc) != 0) return 0;
    json_object_set_new(doc, "revoked", json_true());
    rc = proj__doc_put(t, tbl, SP_SLICE_STR(h), doc);
    json_decref(doc);
    return rc;
}

static int project_added(log_kvtxn_t *t, const json_t *b, const log_event_t *ev)
{
    unsigned tbl;
    int rc = proj__table(t, "registry.project", &tbl);
    if (rc != 0) return rc;
    const char *slug = proj__str(b, "slug");
    json_t *doc = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s}, s:o, s:b, s:[], s:o}", "id", proj__str(b, "id"), "slug",
        slug, "name", proj__str(b, "repo"), "organization_name", proj__str(b, "org"), "organization_slug",
        proj__str(b, "org_slug"), "organization_id", proj__str(b, "org_id"), "vcs_info", "vcs_url", proj__str(b, "url"),
        "provider", "GitHub", "default_branch", proj__str(b, "default_branch"), "_secret",
        json_incref(json_object_get(b, "webhook_secret") ? json_object_get(b, "webhook_secret") : json_null()),
        "_building", 1, "_followers", "created_at", proj__time(ev->time_ns));
    if (doc == NULL) return SP_EINVAL;
    json_t *tok = json_object_get(b, "git_token");
    if (json_is_string(tok)) json_object_set(doc, "_git_token", tok);
    rc = proj__doc_put(t, tbl, SP_SLICE_STR(slug), doc);
    json_decref(doc);
    return rc ? rc : put_str(t, "registry.project_id", proj__str(b, "id"), slug);
}

/* Applies fn to the project named by the body's slug. */
static int project_update(log_kvtxn_t *t, const json_t *b, void (*fn)(json_t *doc, const json_t *b))
{
    unsigned tbl;
    int rc = proj__table(t, "registry.project", &tbl);
    if (rc != 0) return rc;
    const char *slug = proj__str(b, "slug");
    json_t *doc;
    if (proj__doc_get(t, tbl, SP_SLICE_STR(slug), &doc) != 0) return 0;
    fn(doc, b);
    rc = proj__doc_put(t, tbl, SP_SLICE_STR(slug), doc);
    json_decref(doc);
    return rc;
}

static void set_building(json_t *doc, const json_t *b) { json_object_set_new(doc, "_building", json_true()); }
static void set_stopped(json_t *doc, const json_t *b) { json_object_set_new(doc, "_building", json_false()); }

/* Spool's own settings under _settings; autocancel_builds also in
 * CircleCI's "advanced" settings shape. */
static void set_settings(json_t *doc, const json_t *b)
{
    json_t *st = json_object_get(doc, "_settings");
    if (!json_is_object(st)) json_object_set_new(doc, "_settings", st = json_object());
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)b, k, v) {
        if (strcmp(k, "slug") == 0) continue;
        json_object_set(st, k, v);
        if (strcmp(k, "autocancel_builds") == 0) {
            json_t *adv = json_object_get(doc, "advanced");
            if (!json_is_object(adv)) json_object_set_new(doc, "advanced", adv = json_object());
            json_object_set(adv, k, v);
        }
    }
}

static void add_follower(json_t *doc, const json_t *b)
{
    json_t *f = json_object_get(doc, "_followers");
    const char *who = proj__str(b, "user");
    size_t i;
    json_t *v;
    json_array_foreach (f, i, v)
        if (strcmp(json_string_value(v), who) == 0) return;
    json_array_append_new(f, json_string(who));
}

static void remove_follower(json_t *doc, const json_t *b)
{
    json_t *f = json_object_get(doc, "_followers");
    const char *who = proj__str(b, "user");
    for (size_t i = 0; i < json_array_size(f); i++)
        if (strcmp(json_string_value(json_array_get(f, i)), who) == 0) json_array_remove(f, i--);
}

static int apply_registry(void *state, log_kvtxn_t *t, const log_event_t *ev)
{
    switch (ev->type) {
    case LOG_EV_TOKEN_CREATED:
    case LOG_EV_TOKEN_REVOKED:
    case LOG_EV_PROJECT_ADDED:
    case LOG_EV_PROJECT_FOLLOWED:
    case LOG_EV_PROJECT_UNFOLLOWED:
    case LOG_EV_PROJECT_BUILDING_STOPPED:
    case LOG_EV_PROJECT_BUILDING_RESUMED:
    case LOG_EV_PROJECT_SETTINGS_CHANGED: break;
    default: return 0;
    }
    json_t *b = proj__body(ev);
    if (b == NULL) return SP_ECORRUPT;
    int rc = 0;
    switch (ev->type) {
    case LOG_EV_TOKEN_CREATED: rc = token_created(t, b, ev); break;
    case LOG_EV_TOKEN_REVOKED: rc = token_revoked(t, b); break;
    case LOG_EV_PROJECT_ADDED: rc = project_added(t, b, ev); break;
    case LOG_EV_PROJECT_FOLLOWED: rc = project_update(t, b, add_follower); break;
    case LOG_EV_PROJECT_UNFOLLOWED: rc = project_update(t, b, remove_follower); break;
    case LOG_EV_PROJECT_BUILDING_STOPPED: rc = project_update(t, b, set_stopped); break;
    case LOG_EV_PROJECT_BUILDING_RESUMED: rc = project_update(t, b, set_building); break;
    case LOG_EV_PROJECT_SETTINGS_CHANGED: rc = project_update(t, b, set_settings); break;
    default: break;
    }
    json_decref(b);
    return rc;
}

static const char *const tables[] = {"registry.token", "registry.token_id", "registry.project", "registry.project_id",
                                     NULL};

const proj_ops_t proj_registry_ops = {.name = "registry", .version = 2, .apply = apply_registry, .tables = tables};

/* ---- reads ---- */

static int get_doc(log_kvtxn_t *t, const char *table, const char *key, json_t **out)
{
    unsigned tbl;
    int rc = log_kvtxn_table(t, table, &tbl);
    return rc ? rc : proj__doc_get(t, tbl, SP_SLICE_STR(key), out);
}

int proj_token_lookup(log_kvtxn_t *t, const char *hash_hex, json_t **out)
{
    return get_doc(t, "registry.token", hash_hex, out);
}

int proj_project_get(log_kvtxn_t *t, const char *slug, json_t **out)
{
    return get_doc(t, "registry.project", slug, out);
}

int proj_projects_each(log_kvtxn_t *t, proj_doc_cb cb, void *arg)
{
    unsigned tbl;
    int rc = log_kvtxn_table(t, "registry.project", &tbl);
    if (rc == SP_ENOTFOUND) return 0;
    if (rc != 0) return rc;
    log_kvcur_t *c;
    if ((rc = log_kvcur_open(t, tbl, &c)) != 0) return rc;
    sp_slice_t k, v;
    for (rc = log_kvcur_seek(c, (sp_slice_t){0}, &k, &v); rc == 0; rc = log_kvcur_next(c, &k, &v)) {
        json_t *doc = json_loadb((const char *)v.p, v.n, 0, NULL);
        if (doc == NULL) continue;
        bool go_on = cb(arg, doc);
        json_decref(doc);
        if (!go_on) break;
    }
    log_kvcur_close(c);
    return rc == SP_ENOTFOUND ? 0 : rc;
}
