/* The engine's core: batches, tokens, projects, triggers and config
 * results. Agents and tasks are in engine_run.c, recovery in
 * engine_load.c. */
#include "engine_internal.h"

#include "../config/config.h"

#include <ctype.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>

#define DELIVERY_MEMORY 4096

/* ---- batches ---- */

void e__batch_init(e_batch_t *b, engine_t *e, const char *actor, engine_done_cb cb, void *arg)
{
    *b = (e_batch_t){.e = e, .actor = actor, .cb = cb, .arg = arg};
}

static void batch_grow(e_batch_t *b)
{
    if (b->n < b->cap) return;
    b->cap = b->cap ? b->cap * 2 : 8;
    b->entries = sp_xrealloc(b->entries, b->cap * sizeof *b->entries);
    b->bodies = sp_xrealloc(b->bodies, b->cap * sizeof *b->bodies);
}

void e__emit_raw(e_batch_t *b, int type, sp_buf_t *body)
{
    batch_grow(b);
    b->bodies[b->n] = *body;
    *body = (sp_buf_t){0};
    b->entries[b->n] = (log_entry_t){.type = type, .actor = b->actor};
    b->n++;
}

void e__emit(e_batch_t *b, int type, json_t *body)
{
    sp_buf_t buf = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, ingest_pack_write);
    ingest_pack_json(&pk, body);
    json_decref(body);
    e__emit_raw(b, type, &buf);
}

static void batch_free(e_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) sp_buf_free(&b->bodies[i]);
    free(b->bodies);
    free(b->entries);
    free(b->notify);
    json_decref(b->result);
}

static void on_durable(void *arg, int status, uint64_t first_seq)
{
    e_batch_t *b = arg;
    uint64_t last = status == 0 ? first_seq + b->n - 1 : 0;
    if (status != 0) {
        sp_error("engine", "appending %zu events failed: %s", b->n, sp_strerror(status));
        pthread_mutex_lock(&b->e->mu);
        b->e->failed = true;
        pthread_mutex_unlock(&b->e->mu);
    }
    /* A claim hears of its task only once the assignment is durable. */
    for (size_t i = 0; i < b->nnotify; i++) {
        engine_claim_t *c = b->notify[i];
        c->cb(c->arg, status == 0 ? c->task : NULL);
        json_decref(c->task);
        free(c);
    }
    if (b->cb) b->cb(b->arg, status, last, b->result);
    batch_free(b);
    free(b);
}

int e__submit(e_batch_t *b)
{
    if (b->n == 0) return 0;
    for (size_t i = 0; i < b->n; i++) b->entries[i].body = sp_buf_slice(&b->bodies[i]);
    e_batch_t *heap = sp_xmalloc(sizeof *heap);
    *heap = *b;
    int rc = log_append_cb(b->e->o.log, heap->entries, heap->n, on_durable, heap);
    if (rc != 0) {
        free(heap);
        sp_error("engine", "cannot append: %s", sp_strerror(rc));
        b->e->failed = true;
        return rc;
    }
    *b = (e_batch_t){0};
    return 0;
}

void e__finish_empty(e_batch_t *b)
{
    if (b->cb) b->cb(b->arg, 0, 0, b->result);
    batch_free(b);
}

/* Ends a command: submits what was decided; if nothing was, completes it
 * at once (after unlocking, as the callback may not run under e->mu). */
static int finish(engine_t *e, e_batch_t *b)
{
    bool empty = b->n == 0;
    int rc = empty ? 0 : e__submit(b);
    pthread_mutex_unlock(&e->mu);
    if (empty) e__finish_empty(b);
    if (rc != 0) batch_free(b);
    return rc;
}

static int fail(engine_t *e, e_batch_t *b, int rc, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int fail(engine_t *e, e_batch_t *b, int rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&e->mu);
    batch_free(b);
    return rc;
}

void e__uuid(char out[E_ID]) { sp_uuid4(out); }

/* ---- open / close ---- */

static void engine_free(engine_t *e);

int engine_open(engine_t **out, const engine_opts_t *o, char *errbuf, size_t errlen)
{
    engine_t *e = sp_xcalloc(1, sizeof *e);
    e->o = *o;
    if (e->o.lease_timeout_ms <= 0) e->o.lease_timeout_ms = 30000;
    if (e->o.job_timeout_s <= 0) e->o.job_timeout_s = 5 * 3600;
    snprintf(e->base_url, sizeof e->base_url, "%s", o->base_url ? o->base_url : "http://127.0.0.1:8080");
    e->o.base_url = e->base_url;
    e->delivery_ring = sp_xcalloc(DELIVERY_MEMORY, sizeof *e->delivery_ring);
    pthread_mutex_init(&e->mu, NULL);
    e__classes_init(e, o->resource_classes);
    int rc = e__load(e, errbuf, errlen);
    if (rc != 0) {
        engine_free(e);
        return rc;
    }
    sp_handle_opened();
    *out = e;
    return 0;
}

void engine_close(engine_t *e)
{
    if (e == NULL) return;
    engine_free(e);
    sp_handle_closed();
}

static void engine_free(engine_t *e)
{
    pthread_mutex_lock(&e->mu);
    engine_claim_t *c = e->claims_head;
    e->claims_head = e->claims_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    while (c) {
        engine_claim_t *next = c->next;
        c->cb(c->arg, NULL);
        free(c);
        c = next;
    }
    size_t i = 0;
    void *v;
    while (sp_map_next(&e->wfs, &i, NULL, &v)) e__wf_free(e, v);
    i = 0;
    while (sp_map_next(&e->pipes, &i, NULL, &v)) e__pipe_free(v);
    i = 0;
    while (sp_map_next(&e->projects, &i, NULL, &v)) {
        e_proj_t *pr = v;
        free(pr->slug);
        free(pr->default_branch);
        free(pr);
    }
    i = 0;
    while (sp_map_next(&e->agents, &i, NULL, &v)) {
        e_agent_t *a = v;
        free(a->name);
        json_decref(a->labels);
        free(a);
    }
    e__classes_free(e);
    sp_map_free(&e->wfs);
    sp_map_free(&e->pipes);
    sp_map_free(&e->jobs);
    sp_map_free(&e->tasks);
    sp_map_free(&e->projects);
    sp_map_free(&e->agents);
    sp_map_free(&e->deliveries);
    for (size_t k = 0; k < DELIVERY_MEMORY; k++) free(e->delivery_ring[k]);
    free(e->delivery_ring);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* ---- tokens ---- */

static void sha256_hex(const char *s, char out[65])
{
    uint8_t d[32];
    SHA256((const uint8_t *)s, strlen(s), d);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static bool valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20) return false;
    return true;
}

int engine_token_create(engine_t *e, const char *name, const char *role, const char *actor, engine_done_cb cb,
                        void *arg, char *err, size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    if (!valid_name(name, 100)) return fail(e, &b, SP_EINVAL, err, errlen, "name: expected 1 to 100 characters");
    if (strcmp(role, "admin") != 0 && strcmp(role, "user") != 0 && strcmp(role, "agent") != 0)
        return fail(e, &b, SP_EINVAL, err, errlen, "role: expected \"admin\", \"user\" or \"agent\"");
    uint8_t raw[24];
    sp_random_bytes(raw, sizeof raw);
    char token[64] = "spl_", hash[65], id[E_ID];
    for (size_t i = 0; i < sizeof raw; i++) snprintf(token + 4 + 2 * i, 3, "%02x", raw[i]);
    sha256_hex(token, hash);
    e__uuid(id);
    /* Only the hash goes to the log: the token itself is shown once. */
    e__emit(&b, LOG_EV_TOKEN_CREATED,
            json_pack("{s:s, s:s, s:s, s:s}", "id", id, "name", name, "role", role, "hash", hash));
    b.result = json_pack("{s:s, s:s, s:s, s:s}", "id", id, "name", name, "role", role, "token", token);
    return finish(e, &b);
}

int engine_token_revoke(engine_t *e, const char *id, const char *actor, engine_done_cb cb, void *arg, char *err,
                        size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    if (!valid_name(id, 64)) return fail(e, &b, SP_EINVAL, err, errlen, "id: expected a token id");
    e__emit(&b, LOG_EV_TOKEN_REVOKED, json_pack("{s:s}", "id", id));
    b.result = json_pack("{s:s}", "message", "revoked");
    return finish(e, &b);
}

int engine_token_check(engine_t *e, const char *token, char role[16], char id[PROJ_ID_MAX])
{
    if (token == NULL || strlen(token) > 200) return SP_ENOTFOUND;
    /* Looking up the SHA-256 of the token leaks nothing usable through
     * timing: an attacker cannot steer the hash's bytes. */
    char hash[65];
    sha256_hex(token, hash);
    log_kvtxn_t *t;
    int rc = log_kv_begin(proj_kv(e->o.proj), false, &t);
    if (rc != 0) return rc;
    json_t *doc;
    rc = proj_token_lookup(t, hash, &doc);
    log_kvtxn_abort(t);
    if (rc != 0) return SP_ENOTFOUND;
    if (json_is_true(json_object_get(doc, "revoked"))) {
        json_decref(doc);
        return SP_ENOTFOUND; /* role and id stay untouched: nothing to trust */
    }
    snprintf(role, 16, "%s", json_string_value(json_object_get(doc, "role")) ?: "user");
    snprintf(id, PROJ_ID_MAX, "%s", json_string_value(json_object_get(doc, "id")) ?: "");
    json_decref(doc);
    return 0;
}

/* ---- projects ---- */

static bool slug_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 100) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') return false;
    return !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.');
}

int engine_slug_normalize(const char *in, char *out, size_t n)
{
    const char *rest;
    if (strncmp(in, "gh/", 3) == 0)
        rest = in + 3;
    else if (strncmp(in, "github/", 7) == 0)
        rest = in + 7;
    else
        return SP_EINVAL;
    const char *slash = strchr(rest, '/');
    if (slash == NULL || !slug_part_ok(rest, (size_t)(slash - rest)) || !slug_part_ok(slash + 1, strlen(slash + 1)))
        return SP_EINVAL;
    if ((size_t)snprintf(out, n, "gh/%s", rest) >= n) return SP_EINVAL;
    return 0;
}

static int project_doc(engine_t *e, const char *slug, json_t **out)
{
    log_kvtxn_t *t;
    int rc = log_kv_begin(proj_kv(e->o.proj), false, &t);
    if (rc != 0) return rc;
    rc = proj_project_get(t, slug, out);
    log_kvtxn_abort(t);
    return rc;
}

static bool url_ok(const char *url)
{
    return (strncmp(url, "file://", 7) == 0 || strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0 ||
            strncmp(url, "git://", 6) == 0 || strncmp(url, "ssh://", 6) == 0) &&
           valid_name(url, 1000);
}

/* Seals value for slug's field into body[field]. */
static int seal_into(engine_t *e, json_t *body, const char *slug, const char *field, const char *value)
{
    char aad[300];
    snprintf(aad, sizeof aad, "project:%s:%s", slug, field);
    sp_buf_t sealed = {0};
    int rc = secrets_seal(e->o.secrets, value, strlen(value), aad, &sealed);
    if (rc == 0) json_object_set_new(body, field, json_string((char *)sealed.p));
    sp_buf_free(&sealed);
    return rc;
}

int engine_project_add(engine_t *e, const char *slug_in, const char *url, const char *secret, const char *git_token,
                       const char *default_branch, const char *actor, engine_done_cb cb, void *arg, char *err,
                       size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    char slug[256];
    pthread_mutex_lock(&e->mu);
    if (slug_in == NULL || engine_slug_normalize(slug_in, slug, sizeof slug) != 0)
        return fail(e, &b, SP_EINVAL, err, errlen, "slug: expected gh/ORG/REPO, got \"%s\"", slug_in ? slug_in : "");
    if (url == NULL || !url_ok(url))
        return fail(e, &b, SP_EINVAL, err, errlen,
                    "url: expected a git URL (file://, https://, http://, git://, ssh://)");
    if (secret && (strlen(secret) == 0 || strlen(secret) > 256))
        return fail(e, &b, SP_EINVAL, err, errlen, "webhook secret: expected 1 to 256 characters");
    if (git_token && (strlen(git_token) == 0 || strlen(git_token) > 1024))
        return fail(e, &b, SP_EINVAL, err, errlen, "git token: expected 1 to 1024 characters");
    const char *branch = default_branch && *default_branch ? default_branch : "main";
    json_t *existing;
    if (project_doc(e, slug, &existing) == 0) {
        json_decref(existing);
        return fail(e, &b, SP_EEXIST, err, errlen, "project %s already exists", slug);
    }
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "slug", slug, "vcs", "github", "url", url,
                             "default_branch", branch, "org", "", "repo", "", "org_slug", "", "org_id", "");
    char id[E_ID], org_id[E_ID];
    e__uuid(id);
    e__uuid(org_id);
    const char *org = slug + 3, *repo = strchr(org, '/') + 1;
    json_object_set_new(body, "id", json_string(id));
    json_object_set_new(body, "org", json_stringn(org, (size_t)(repo - 1 - org)));
    json_object_set_new(body, "repo", json_string(repo));
    json_object_set_new(body, "org_slug", json_stringn(slug, (size_t)(repo - 1 - slug)));
    json_object_set_new(body, "org_id", json_string(org_id));
    if ((secret && seal_into(e, body, slug, "webhook_secret", secret) != 0) ||
        (git_token && seal_into(e, body, slug, "git_token", git_token) != 0)) {
        json_decref(body);
        return fail(e, &b, SP_EIO, err, errlen, "cannot encrypt the project's secrets");
    }
    b.result = json_pack("{s:s, s:s, s:s, s:s}", "id", id, "slug", slug, "name", repo, "vcs_url", url);
    e__emit(&b, LOG_EV_PROJECT_ADDED, body);
    return finish(e, &b);
}

int engine_project_set(engine_t *e, const char *slug_in, const char *what, const char *actor, engine_done_cb cb,
                       void *arg, char *err, size_t errlen)
{
    static const struct {
        const char *what;
        int type;
    } kinds[] = {{"follow", LOG_EV_PROJECT_FOLLOWED},
                 {"unfollow", LOG_EV_PROJECT_UNFOLLOWED},
                 {"stop", LOG_EV_PROJECT_BUILDING_STOPPED},
                 {"resume", LOG_EV_PROJECT_BUILDING_RESUMED}};
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    char slug[256];
    pthread_mutex_lock(&e->mu);
    if (engine_slug_normalize(slug_in, slug, sizeof slug) != 0)
        return fail(e, &b, SP_EINVAL, err, errlen, "slug: expected gh/ORG/REPO, got \"%s\"", slug_in);
    json_t *doc;
    if (project_doc(e, slug, &doc) != 0) return fail(e, &b, SP_ENOTFOUND, err, errlen, "project %s not found", slug);
    json_decref(doc);
    for (size_t i = 0; i < SP_ARRAY_LEN(kinds); i++) {
        if (strcmp(kinds[i].what, what) != 0) continue;
        e__emit(&b, kinds[i].type, json_pack("{s:s, s:s}", "slug", slug, "user", actor ? actor : ""));
        b.result = json_pack("{s:s}", "message", "ok");
        return finish(e, &b);
    }
    return fail(e, &b, SP_EINVAL, err, errlen, "unknown project action \"%s\"", what);
}

int engine_project_secret(engine_t *e, const char *slug, sp_buf_t *secret)
{
    json_t *doc;
    int rc = project_doc(e, slug, &doc);
    if (rc != 0) return rc;
    const char *sealed = json_string_value(json_object_get(doc, "_secret"));
    if (sealed) {
        char aad[300];
        snprintf(aad, sizeof aad, "project:%s:webhook_secret", slug);
        rc = secrets_unseal(e->o.secrets, sealed, aad, secret);
    }
    json_decref(doc);
    return rc;
}

/* ---- triggers ---- */

static bool seen_delivery(engine_t *e, const char *delivery)
{
    if (sp_map_get(&e->deliveries, delivery)) return true;
    log_kvtxn_t *t;
    bool seen = false;
    char id[PROJ_ID_MAX];
    if (log_kv_begin(proj_kv(e->o.proj), false, &t) == 0) {
        seen = proj_pipeline_by_delivery(t, delivery, id) == 0;
        log_kvtxn_abort(t);
    }
    return seen;
}

/* Remembers recent deliveries until the views surely show them. */
static void remember_delivery(engine_t *e, const char *delivery)
{
    char **slot = &e->delivery_ring[e->delivery_next++ % DELIVERY_MEMORY];
    if (*slot) {
        sp_map_del(&e->deliveries, *slot);
        free(*slot);
    }
    *slot = sp_xstrdup(delivery);
    sp_map_set(&e->deliveries, delivery, *slot);
}

static bool hex40(const char *s)
{
    if (strlen(s) != 40) return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s)) return false;
    return true;
}

static int check_parameters(const json_t *params, char *err, size_t errlen)
{
    if (params == NULL || json_is_null(params)) return 0;
    if (!json_is_object(params) || json_object_size(params) > 100) {
        snprintf(err, errlen, "parameters: expected an object of at most 100 entries");
        return SP_EINVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)params, k, v) {
        if (strlen(k) > 128) {
            snprintf(err, errlen, "parameters: key \"%.40s...\" is longer than 128 characters", k);
            return SP_EINVAL;
        }
        if (!(json_is_string(v) || json_is_integer(v) || json_is_boolean(v)) ||
            (json_is_string(v) && json_string_length(v) > 512)) {
            snprintf(err, errlen, "parameters.%s: expected a string (at most 512 characters), integer or boolean", k);
            return SP_EINVAL;
        }
    }
    return 0;
}

static char *dup_or_null(const char *s) { return s && *s ? sp_xstrdup(s) : NULL; }

int engine_trigger(engine_t *e, const engine_trigger_t *tr, engine_done_cb cb, void *arg, char *err, size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, tr->actor, cb, arg);
    char slug[256];
    pthread_mutex_lock(&e->mu);
    if (e->failed) return fail(e, &b, SP_EFAILED, err, errlen, "the event log refuses writes; see /health-check");
    if (engine_slug_normalize(tr->slug, slug, sizeof slug) != 0)
        return fail(e, &b, SP_EINVAL, err, errlen, "project: expected gh/ORG/REPO");
    bool has_branch = tr->branch && *tr->branch, has_tag = tr->tag && *tr->tag;
    if (has_branch == has_tag) return fail(e, &b, SP_EINVAL, err, errlen, "give exactly one of branch and tag");
    if ((has_branch && !valid_name(tr->branch, 255)) || (has_tag && !valid_name(tr->tag, 255)))
        return fail(e, &b, SP_EINVAL, err, errlen, "branch or tag: expected 1 to 255 characters");
    if (tr->revision && *tr->revision && !hex40(tr->revision))
        return fail(e, &b, SP_EINVAL, err, errlen, "revision: expected a 40-character commit SHA");
    int rc = check_parameters(tr->parameters, err, errlen);
    if (rc != 0) return fail(e, &b, rc, err, errlen, "%s", err);
    json_t *proj;
    if (project_doc(e, slug, &proj) != 0) return fail(e, &b, SP_ENOTFOUND, err, errlen, "project %s not found", slug);
    bool building = !json_is_false(json_object_get(proj, "_building"));
    char *url = sp_xstrdup(json_string_value(json_object_get(json_object_get(proj, "vcs_info"), "vcs_url")) ?: "");
    char *org = sp_xstrdup(json_string_value(json_object_get(proj, "organization_name")) ?: "");
    char *repo = sp_xstrdup(json_string_value(json_object_get(proj, "name")) ?: "");
    json_decref(proj);
    if (!building) {
        free(url), free(org), free(repo);
        return fail(e, &b, SP_EINVAL, err, errlen, "building is stopped for project %s", slug);
    }
    if (tr->delivery && *tr->delivery && seen_delivery(e, tr->delivery)) {
        free(url), free(org), free(repo);
        b.result = json_pack("{s:b, s:s}", "duplicate", 1, "message", "delivery already processed");
        return finish(e, &b);
    }
    e_proj_t *c = e__project(e, slug);
    e_pipe_t *p = sp_xcalloc(1, sizeof *p);
    e__uuid(p->id);
    p->number = (int64_t)++c->pipeline;
    p->slug = sp_xstrdup(slug);
    p->url = url;
    p->org = org;
    p->repo = repo;
    p->branch = has_branch ? sp_xstrdup(tr->branch) : NULL;
    p->tag = has_tag ? sp_xstrdup(tr->tag) : NULL;
    snprintf(p->revision, sizeof p->revision, "%s", tr->revision ? tr->revision : "");
    p->subject = dup_or_null(tr->subject);
    p->body = dup_or_null(tr->body);
    p->config_pending = true;
    sp_map_set(&e->pipes, p->id, p);

    json_t *body = json_pack(
        "{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", p->id, "number", (json_int_t)p->number, "slug", slug,
        "trigger_type", tr->trigger_type ? tr->trigger_type : "api", "actor", tr->actor ? tr->actor : "", "revision",
        p->revision, "subject", tr->subject ?: "", "body", tr->body ?: "", "url", p->url);
    if (p->branch) json_object_set_new(body, "branch", json_string(p->branch));
    if (p->tag) json_object_set_new(body, "tag", json_string(p->tag));
    if (tr->delivery && *tr->delivery) {
        json_object_set_new(body, "delivery", json_string(tr->delivery));
        remember_delivery(e, tr->delivery);
    }
    json_object_set_new(body, "parameters", tr->parameters ? json_deep_copy(tr->parameters) : json_object());
    e__emit(&b, LOG_EV_PIPELINE_CREATED, body);
    char now[40];
    sp_format_time(sp_now_ns(), now, sizeof now);
    b.result = json_pack("{s:s, s:s, s:I, s:s, s:b}", "id", p->id, "state", "pending", "number", (json_int_t)p->number,
                         "created_at", now, "duplicate", 0);
    return finish(e, &b);
}

/* ---- config results ---- */

void e__pipe_free(e_pipe_t *p)
{
    free(p->slug), free(p->org), free(p->repo), free(p->url), free(p->branch), free(p->tag), free(p->subject),
        free(p->body);
    json_decref(p->processed);
    free(p);
}

/* Forgets a pipeline once nothing about it can change any more. */
static void pipe_maybe_free(engine_t *e, e_pipe_t *p)
{
    if (p->live_workflows > 0 || p->config_pending) return;
    sp_map_del(&e->pipes, p->id);
    e__pipe_free(p);
}

void e__pipe_release(engine_t *e, e_pipe_t *p)
{
    p->live_workflows--;
    pipe_maybe_free(e, p);
}

#define MAX_PARALLELISM 256

/* Creates a workflow of the planned jobs. On a rerun, jobs named in keep
 * succeeded in the earlier workflow and are recorded as succeeded at once;
 * the others run again. Jobs without requirements are queued. */
static void build_workflow(engine_t *e, e_batch_t *b, e_pipe_t *p, const config_plan_workflow_t *pw, int index,
                           const char *rerun_of, const json_t *keep, char *out_id)
{
    e_proj_t *proj = e__project(e, p->slug);
    e_wf_t *wf = sp_xcalloc(1, sizeof *wf);
    e__uuid(wf->id);
    if (out_id) memcpy(out_id, wf->id, E_ID);
    wf->name = sp_xstrdup(pw->name);
    wf->p = p;
    wf->njobs = (int)pw->njobs;
    wf->jobs = sp_xcalloc(pw->njobs ? pw->njobs : 1, sizeof *wf->jobs);
    p->live_workflows++;
    json_t *jobs = json_array(), *bad = json_object();
    for (size_t i = 0; i < pw->njobs; i++) {
        const config_plan_job_t *pj = &pw->jobs[i];
        e_job_t *j = &wf->jobs[i];
        e__uuid(j->id);
        j->name = sp_xstrdup(pj->name);
        j->def = pj->job ? sp_xstrdup(pj->job) : NULL;
        j->approval = pj->approval;
        j->number = pj->approval ? 0 : (int64_t)++proj->job;
        j->status = "blocked";
        j->wf = wf;
        json_t *def = j->def ? json_object_get(json_object_get(p->processed, "jobs"), j->def) : NULL;
        char why[300] = "";
        if (!j->approval) {
            j->cls = e__class_of(e, def, why, sizeof why);
            if (j->cls == NULL) json_object_set_new(bad, j->id, json_string(why));
        }
        json_t *par = json_object_get(def, "parallelism");
        j->ntasks = j->approval ? 0 : json_is_integer(par) ? (int)json_integer_value(par) : 1;
        if (j->ntasks < (j->approval ? 0 : 1)) j->ntasks = 1;
        if (j->ntasks > MAX_PARALLELISM) j->ntasks = MAX_PARALLELISM;
        j->tasks = sp_xcalloc((size_t)(j->ntasks ? j->ntasks : 1), sizeof *j->tasks);
        for (int k = 0; k < j->ntasks; k++) {
            j->tasks[k].job = j;
            j->tasks[k].index = k;
            j->tasks[k].status = "blocked";
        }
        sp_map_set(&e->jobs, j->id, j);
    }
    for (size_t i = 0; i < pw->njobs; i++) {
        const config_plan_job_t *pj = &pw->jobs[i];
        e_job_t *j = &wf->jobs[i];
        j->deps = sp_xcalloc(pj->nrequires ? pj->nrequires : 1, sizeof *j->deps);
        json_t *req = json_array();
        for (size_t r = 0; r < pj->nrequires; r++)
            for (size_t k = 0; k < pw->njobs; k++)
                if (strcmp(pw->jobs[k].name, pj->requires[r]) == 0) {
                    j->deps[j->ndeps++] = (int)k;
                    json_array_append_new(req, json_string(wf->jobs[k].id));
                }
        json_t *exec = json_object();
        if (!j->approval) e__executor_of(json_object_get(json_object_get(p->processed, "jobs"), j->def), exec);
        json_t *contexts = json_array();
        for (size_t k = 0; k < pj->ncontexts; k++) json_array_append_new(contexts, json_string(pj->contexts[k]));
        json_array_append_new(jobs, json_pack("{s:s, s:s, s:s, s:I, s:s, s:o, s:o, s:i, s:o}", "id", j->id, "name",
                                              j->name, "type", j->approval ? "approval" : "build", "number",
                                              (json_int_t)j->number, "job", j->def ?: "", "requires", req, "executor",
                                              exec, "parallelism", j->ntasks, "contexts", contexts));
    }
    sp_map_set(&e->wfs, wf->id, wf);
    json_t *body = json_pack("{s:s, s:s, s:s, s:i, s:o, s:s}", "id", wf->id, "pipeline_id", p->id, "name", wf->name,
                             "index", index, "jobs", jobs, "started_by", b->actor ? b->actor : "");
    if (rerun_of) json_object_set_new(body, "rerun_of", json_string(rerun_of));
    e__emit(b, LOG_EV_WORKFLOW_CREATED, body);
    for (int i = 0; i < wf->njobs; i++) {
        e_job_t *j = &wf->jobs[i];
        const char *why = json_string_value(json_object_get(bad, j->id));
        if (why) {
            j->status = "failed";
            e__emit(b, LOG_EV_JOB_FINISHED,
                    json_pack("{s:s, s:s, s:s}", "id", j->id, "status", "failed", "message", why));
        } else if (keep && json_is_true(json_object_get(keep, j->name))) {
            j->status = "success";
            for (int k = 0; k < j->ntasks; k++) j->tasks[k].status = "success";
            char msg[200];
            snprintf(msg, sizeof msg, "succeeded in workflow %s: not run again", rerun_of);
            e__emit(b, LOG_EV_JOB_FINISHED,
                    json_pack("{s:s, s:s, s:s}", "id", j->id, "status", "success", "message", msg));
        }
    }
    json_decref(bad);
    e__wf_progress(e, b, wf);
}

/* Cancels the running workflows of older pipelines on the same branch. */
static void autocancel(engine_t *e, e_batch_t *b, e_pipe_t *p)
{
    e_proj_t *proj = e__project(e, p->slug);
    if (!proj->autocancel || p->branch == NULL || strcmp(p->branch, proj->default_branch) == 0) return;
    size_t n = sp_map_len(&e->wfs), k = 0, i = 0;
    e_wf_t **olds = sp_xcalloc(n + 1, sizeof *olds);
    void *v;
    while (sp_map_next(&e->wfs, &i, NULL, &v)) {
        e_wf_t *wf = v;
        if (wf->p != p && strcmp(wf->p->slug, p->slug) == 0 && wf->p->branch && strcmp(wf->p->branch, p->branch) == 0 &&
            wf->p->number < p->number)
            olds[k++] = wf;
    }
    char by[100];
    snprintf(by, sizeof by, "autocancel: superseded by pipeline %lld", (long long)p->number);
    for (size_t x = 0; x < k; x++) e__wf_cancel(e, b, olds[x], by);
    free(olds);
}

int e__rerun_workflow(engine_t *e, e_batch_t *b, e_pipe_t *p, const char *name, const char *old_id, const json_t *keep,
                      char *err, size_t errlen)
{
    config_plan_t *plan = NULL;
    config_plan_opts_t po = {.branch = p->branch, .tag = p->tag};
    if (config_plan(p->processed, &po, &plan) != 0) {
        snprintf(err, errlen, "the pipeline's config has no usable workflows");
        return SP_EINVAL;
    }
    int rc = SP_ENOTFOUND;
    for (size_t i = 0; i < plan->nworkflows; i++) {
        if (strcmp(plan->workflows[i].name, name) != 0) continue;
        p->live_workflows++; /* held while it is built */
        char id[E_ID];
        build_workflow(e, b, p, &plan->workflows[i], (int)i, old_id, keep, id);
        b->result = json_pack("{s:s}", "workflow_id", id);
        rc = 0;
        e__pipe_release(e, p);
        break;
    }
    if (rc != 0) snprintf(err, errlen, "workflow %s is not in the pipeline's config any more", name);
    config_plan_free(plan);
    return rc;
}

int engine_config_result(engine_t *e, const engine_config_t *cr, engine_done_cb cb, void *arg, char *err, size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, "system", cb, arg);
    pthread_mutex_lock(&e->mu);
    e_pipe_t *p = sp_map_get(&e->pipes, cr->pipeline_id);
    if (p == NULL || !p->config_pending)
        return fail(e, &b, SP_EEXIST, err, errlen, "pipeline %s is not waiting for its config", cr->pipeline_id);
    p->config_pending = false;
    if (cr->revision && *cr->revision) snprintf(p->revision, sizeof p->revision, "%s", cr->revision);
    if (!p->subject && cr->subject) p->subject = dup_or_null(cr->subject);
    if (!p->body && cr->body) p->body = dup_or_null(cr->body);
    if (cr->error_type) {
        e__emit(&b, LOG_EV_PIPELINE_ERRORED,
                json_pack("{s:s, s:s, s:[{s:s, s:s}]}", "id", p->id, "revision", p->revision, "errors", "type",
                          cr->error_type, "message", cr->error_message ? cr->error_message : ""));
        pipe_maybe_free(e, p);
        return finish(e, &b);
    }
    char *text = json_dumps(cr->processed, JSON_COMPACT | JSON_SORT_KEYS);
    e__emit(&b, LOG_EV_PIPELINE_CONFIG_FETCHED,
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", p->id, "revision", p->revision, "subject",
                      p->subject ?: "", "body", p->body ?: "", "source", cr->source ? cr->source : "", "compiled",
                      cr->compiled_yaml ? cr->compiled_yaml : "", "processed", text ? text : "{}"));
    free(text);
    /* The processed tree is read-only and shares equal values inside:
     * taking a reference (not a deep copy) keeps it small. */
    p->processed = json_incref((json_t *)cr->processed);
    config_plan_t *plan = NULL;
    config_plan_opts_t po = {.branch = p->branch, .tag = p->tag};
    if (config_plan(p->processed, &po, &plan) != 0) {
        e__emit(&b, LOG_EV_PIPELINE_ERRORED,
                json_pack("{s:s, s:[{s:s, s:s}]}", "id", p->id, "errors", "type", "config", "message",
                          "the processed config has no usable workflows"));
    } else {
        /* A workflow whose every job a filter excluded is not created, as
         * on CircleCI. */
        p->live_workflows++; /* held while its workflows are built */
        for (size_t i = 0; i < plan->nworkflows; i++)
            if (plan->workflows[i].njobs > 0) build_workflow(e, &b, p, &plan->workflows[i], (int)i, NULL, NULL, NULL);
        config_plan_free(plan);
        autocancel(e, &b, p);
        p->live_workflows--;
    }
    pipe_maybe_free(e, p);
    e__dispatch(e, &b);
    return finish(e, &b);
}

void engine_pending_configs(engine_t *e, void (*cb)(void *arg, const char *pipeline_id), void *arg)
{
    pthread_mutex_lock(&e->mu);
    size_t n = sp_map_len(&e->pipes), k = 0, i = 0;
    char(*ids)[E_ID] = sp_xcalloc(n ? n : 1, E_ID);
    void *v;
    while (sp_map_next(&e->pipes, &i, NULL, &v))
        if (((e_pipe_t *)v)->config_pending) memcpy(ids[k++], ((e_pipe_t *)v)->id, E_ID);
    pthread_mutex_unlock(&e->mu);
    for (size_t j = 0; j < k; j++) cb(arg, ids[j]);
    free(ids);
}
