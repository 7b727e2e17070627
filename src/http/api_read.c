/*
 * Reads over the API, in CircleCI's shapes: pipelines, workflows and
 * jobs (API v2), the build object with its steps and the step output
 * (API v1.1 and the private raw-output paths), projects, and a live
 * stream of a job's output as Server-Sent Events (our own).
 *
 * Every handler reads the views in one read transaction, builds the
 * answer from copies and replies. The view documents carry fields of our
 * own whose names start with "_": they never leave this file.
 *
 * Step output lives in the log (job.output events, one zstd chunk each);
 * the views index it by (job, step, index, chunk seq). Output is read
 * with a log reader and decoded by engine_chunk_decode.
 */
#include "http_internal.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#define PAGE_SIZE        20
#define SSE_BUDGET       (256u << 10) /* bytes built before they are handed to the client */
#define SSE_TICK_MS      100          /* how soon a draining server ends its streams */
#define SSE_KEEPALIVE_NS (15 * 1000000000LL)

/* ---- small helpers ---- */

static bool begin(http_t *h, h2o_req_t *req, log_kvtxn_t **t)
{
    int rc = log_kv_begin(proj_kv(h->opts.proj), false, t);
    if (rc != 0) http__reply_error(h, req, 503, "cannot read the views: %s", sp_strerror(rc));
    return rc == 0;
}

/* Replies doc as JSON (doc is consumed). */
static void reply_doc(http_t *h, h2o_req_t *req, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (text == NULL) {
        http__reply_error(h, req, 500, "cannot encode the answer");
    } else {
        sp_buf_t b = {(uint8_t *)text, strlen(text), 0};
        http__reply_json(h, req, status, &b);
    }
    free(text);
    json_decref(doc);
}

/* Removes the top-level fields of our own ("_..."): the public shape. */
static json_t *strip_private(json_t *doc)
{
    for (void *it = json_object_iter(doc), *next; it; it = next) {
        const char *k = json_object_iter_key(it);
        next = json_object_iter_next(doc, it);
        if (k[0] == '_') json_object_del(doc, k);
    }
    return doc;
}

static json_t *field(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return v ? json_incref(v) : json_null();
}

static const char *str_of(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Route parameter i as an id (uuid-like: letters, digits, '-'). */
static bool param_id(h2o_req_t *req, int i, char id[PROJ_ID_MAX])
{
    h2o_iovec_t v = http__param(req, i);
    if (v.len == 0 || v.len >= PROJ_ID_MAX) return false;
    for (size_t k = 0; k < v.len; k++)
        if (!isalnum((unsigned char)v.base[k]) && v.base[k] != '-') return false;
    memcpy(id, v.base, v.len);
    id[v.len] = 0;
    return true;
}

/* Route parameter i as a positive integer. */
static bool param_num(h2o_req_t *req, int i, uint64_t *out)
{
    char buf[24];
    return http__param_str(req, i, buf, sizeof buf) && sp_parse_u64(buf, out) == 0 && *out > 0 && *out < (1ull << 53);
}

bool http__route_slug(h2o_req_t *req, char *slug, size_t n)
{
    h2o_iovec_t vcs = http__param(req, 0), org = http__param(req, 1), repo = http__param(req, 2);
    char raw[400];
    if ((size_t)snprintf(raw, sizeof raw, "%.*s/%.*s/%.*s", (int)vcs.len, vcs.base, (int)org.len, org.base,
                         (int)repo.len, repo.base) >= sizeof raw)
        return false;
    return engine_slug_normalize(raw, slug, n) == 0;
}

static int hexval(int c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

/* Value of key in the query string, percent-decoded ('+' is a space).
 * Returns 1 when present, 0 when absent, -1 when malformed or longer
 * than n - 1 bytes. */
static int query_param(h2o_req_t *req, const char *key, char *out, size_t n)
{
    if (req->query_at == SIZE_MAX) return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t kn = strlen(key);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) >= kn + 1 && memcmp(q, key, kn) == 0 && q[kn] == '=') {
            size_t o = 0;
            for (const char *p = q + kn + 1; p < stop; p++) {
                int c = (unsigned char)*p;
                if (c == '%') {
                    if (stop - p < 3 || !isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) return -1;
                    c = hexval((unsigned char)p[1]) * 16 + hexval((unsigned char)p[2]);
                    p += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                if (c == 0 || o + 1 >= n) return -1;
                out[o++] = (char)c;
            }
            out[o] = 0;
            return 1;
        }
        q = stop + 1;
    }
    return 0;
}

/* The server's address for absolute URLs: the configured base URL
 * (--base-url), else the Host header ("localhost" when it looks odd). */
static void base_url(h2o_req_t *req, char *out, size_t n)
{
    const char *conf = http__worker_of(req)->srv->opts.base_url;
    if (conf && *conf) {
        snprintf(out, n, "%s", conf);
        return;
    }
    h2o_iovec_t a = req->authority;
    bool ok = a.len > 0 && a.len < 200;
    for (size_t i = 0; ok && i < a.len; i++) {
        unsigned char c = (unsigned char)a.base[i];
        ok = isalnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_';
    }
    const char *scheme = req->scheme && req->scheme == &H2O_URL_SCHEME_HTTPS ? "https" : "http";
    if (ok)
        snprintf(out, n, "%s://%.*s", scheme, (int)a.len, a.base);
    else
        snprintf(out, n, "%s://localhost", scheme);
}

/* ---- page tokens ----
 * Opaque to clients: base64url of "<kind>1:<position>", where kind names
 * the list (so a token of one list is refused by another) and position
 * is where the next page starts (a pipeline number to go below, or an
 * offset). */

static void token_make(char kind, uint64_t pos, char *out, size_t n)
{
    char raw[40];
    int rn = snprintf(raw, sizeof raw, "%c1:%llu", kind, (unsigned long long)pos);
    unsigned char enc[64];
    int en = EVP_EncodeBlock(enc, (const unsigned char *)raw, rn);
    while (en > 0 && enc[en - 1] == '=') en--;
    for (int i = 0; i < en; i++) enc[i] = enc[i] == '+' ? '-' : enc[i] == '/' ? '_' : enc[i];
    snprintf(out, n, "%.*s", en, (const char *)enc);
}

/* Reads the page-token parameter. Returns false (having replied 400)
 * when it is present but not a token of this list; *pos stays 0 when
 * absent. */
static bool page_token(http_t *h, h2o_req_t *req, char kind, uint64_t *pos)
{
    char tok[64];
    *pos = 0;
    int q = query_param(req, "page-token", tok, sizeof tok);
    if (q == 0 || (q == 1 && tok[0] == 0)) return true;
    size_t n = q == 1 ? strlen(tok) : 0;
    bool ok = q == 1 && n >= 4 && n <= 40;
    unsigned char b64[48], raw[48];
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)tok[i];
        ok = isalnum(c) || c == '-' || c == '_';
        b64[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    if (ok) {
        while (n % 4) b64[n++] = '=';
        int rn = EVP_DecodeBlock(raw, b64, (int)n);
        ok = rn > 3;
        if (ok) {
            while (rn > 0 && b64[n - 1] == '=' && raw[rn - 1] == 0) rn--, n--;
            raw[rn] = 0;
            ok = raw[0] == (unsigned char)kind && raw[1] == '1' && raw[2] == ':' &&
                 sp_parse_u64((const char *)raw + 3, pos) == 0;
        }
    }
    if (!ok) {
        *pos = 0;
        http__reply_error(h, req, 400, "page-token: not a page token of this list");
    }
    return ok;
}

static json_t *paged(json_t *items, bool more, char kind, uint64_t next)
{
    char tok[64];
    if (more) token_make(kind, next, tok, sizeof tok);
    return json_pack("{s:o, s:o}", "items", items, "next_page_token", more ? json_string(tok) : json_null());
}

/* ---- projects ---- */

/* Loads the project of the route (parameters 0-2) into *doc, or replies
 * 404 and returns false. */
static bool route_project(http_t *h, h2o_req_t *req, log_kvtxn_t *t, char *slug, size_t n, json_t **doc)
{
    if (http__route_slug(req, slug, n) && proj_project_get(t, slug, doc) == 0) return true;
    h2o_iovec_t vcs = http__param(req, 0), org = http__param(req, 1), repo = http__param(req, 2);
    http__reply_error(h, req, 404, "project not found: %.*s/%.*s/%.*s", (int)vcs.len, vcs.base, (int)org.len, org.base,
                      (int)repo.len, repo.base);
    return false;
}

/* GET /api/v2/project/:vcs/:org/:repo: CircleCI's Project. */
int http__api_project_get(http_t *h, h2o_req_t *req)
{
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    char slug[300];
    json_t *doc;
    if (route_project(h, req, t, slug, sizeof slug, &doc)) {
        json_object_del(doc, "created_at");
        reply_doc(h, req, 200, strip_private(doc));
    }
    log_kvtxn_abort(t);
    return 0;
}

static bool add_v11_project(void *arg, const json_t *p)
{
    const char *slug = str_of(p, "slug");
    const char *org = slug + 3, *repo = strchr(org, '/');
    if (strncmp(slug, "gh/", 3) != 0 || repo == NULL) return true;
    json_t *vcs = json_object_get(p, "vcs_info");
    json_array_append_new(arg,
                          json_pack("{s:s, s:s%, s:s, s:s, s:s, s:o, s:b, s:s}", "slug", slug, "username", org,
                                    (size_t)(repo - org), "reponame", repo + 1, "vcs_type", "github", "vcs_url",
                                    str_of(vcs, "vcs_url"), "default_branch", field(vcs, "default_branch"), "building",
                                    !json_is_false(json_object_get(p, "_building")), "id", str_of(p, "id")));
    return true;
}

/* GET /api/v1.1/projects: every project, in v1.1's shape (the web UI's
 * project list). */
int http__api_projects(http_t *h, h2o_req_t *req)
{
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *list = json_array();
    int rc = proj_projects_each(t, add_v11_project, list);
    log_kvtxn_abort(t);
    if (rc != 0) {
        json_decref(list);
        http__reply_error(h, req, 503, "cannot read the projects: %s", sp_strerror(rc));
        return 0;
    }
    reply_doc(h, req, 200, list);
    return 0;
}

/* ---- pipelines ---- */

typedef struct {
    json_t *items;
    const char *branch; /* NULL: every branch */
    bool more;
    uint64_t last;
} pipes_ctx_t;

static bool add_pipeline(void *arg, const json_t *doc)
{
    pipes_ctx_t *c = arg;
    if (c->branch && strcmp(str_of(json_object_get(doc, "vcs"), "branch"), c->branch) != 0) return true;
    if (json_array_size(c->items) == PAGE_SIZE) {
        c->more = true;
        return false;
    }
    json_array_append_new(c->items, strip_private(json_deep_copy(doc)));
    c->last = (uint64_t)json_integer_value(json_object_get(doc, "number"));
    return true;
}

/* GET /api/v2/project/:vcs/:org/:repo/pipeline?branch=&page-token= */
int http__api_pipelines(http_t *h, h2o_req_t *req)
{
    char branch[300];
    int bq = query_param(req, "branch", branch, sizeof branch);
    if (bq < 0) {
        http__reply_error(h, req, 400, "branch: malformed or too long");
        return 0;
    }
    uint64_t before;
    if (!page_token(h, req, 'p', &before)) return 0;
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    char slug[300];
    json_t *project;
    if (!route_project(h, req, t, slug, sizeof slug, &project)) {
        log_kvtxn_abort(t);
        return 0;
    }
    json_decref(project);
    pipes_ctx_t c = {.items = json_array(), .branch = bq == 1 ? branch : NULL};
    int rc = proj_pipelines_list(t, slug, before, add_pipeline, &c);
    log_kvtxn_abort(t);
    if (rc != 0) {
        json_decref(c.items);
        http__reply_error(h, req, 503, "cannot read the pipelines: %s", sp_strerror(rc));
        return 0;
    }
    reply_doc(h, req, 200, paged(c.items, c.more, 'p', c.last));
    return 0;
}

static void reply_pipeline(http_t *h, h2o_req_t *req, log_kvtxn_t *t, const char *id)
{
    json_t *doc;
    if (proj_pipeline_get(t, id, &doc) == 0)
        reply_doc(h, req, 200, strip_private(doc));
    else
        http__reply_error(h, req, 404, "pipeline not found: %s", id);
}

/* GET /api/v2/pipeline/:id */
int http__api_pipeline(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX];
    if (!param_id(req, 0, id)) {
        http__reply_error(h, req, 404, "pipeline not found");
        return 0;
    }
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    reply_pipeline(h, req, t, id);
    log_kvtxn_abort(t);
    return 0;
}

/* GET /api/v2/project/:vcs/:org/:repo/pipeline/:number */
int http__api_pipeline_by_number(http_t *h, h2o_req_t *req)
{
    uint64_t num;
    if (!param_num(req, 3, &num)) {
        http__reply_error(h, req, 400, "pipeline number: expected a positive integer");
        return 0;
    }
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    char slug[300], id[PROJ_ID_MAX];
    json_t *project;
    if (route_project(h, req, t, slug, sizeof slug, &project)) {
        json_decref(project);
        if (proj_pipeline_by_number(t, slug, num, id) == 0)
            reply_pipeline(h, req, t, id);
        else
            http__reply_error(h, req, 404, "pipeline not found: %s number %llu", slug, (unsigned long long)num);
    }
    log_kvtxn_abort(t);
    return 0;
}

/* GET /api/v2/pipeline/:id/config */
int http__api_pipeline_config(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX];
    if (!param_id(req, 0, id)) {
        http__reply_error(h, req, 404, "pipeline not found");
        return 0;
    }
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *cfg, *p;
    if (proj_pipeline_config(t, id, &cfg) == 0) {
        reply_doc(h, req, 200,
                  json_pack("{s:O, s:O, s:s, s:s}", "source", json_object_get(cfg, "source"), "compiled",
                            json_object_get(cfg, "compiled"), "setup-config", "", "compiled-setup-config", ""));
        json_decref(cfg);
    } else if (proj_pipeline_get(t, id, &p) == 0) {
        http__reply_error(h, req, 404, "the pipeline has no config (state %s)", str_of(p, "state"));
        json_decref(p);
    } else {
        http__reply_error(h, req, 404, "pipeline not found: %s", id);
    }
    log_kvtxn_abort(t);
    return 0;
}

/* ---- workflows ---- */

typedef struct {
    json_t *items;
    uint64_t skip, seen;
    bool more;
} offset_ctx_t;

/* Keeps items [skip, skip + PAGE_SIZE); notes whether more follow. */
static bool offset_take(offset_ctx_t *c)
{
    uint64_t i = c->seen++;
    if (i < c->skip) return false;
    if (json_array_size(c->items) == PAGE_SIZE) {
        c->more = true;
        return false;
    }
    return true;
}

static bool add_workflow(void *arg, const json_t *doc)
{
    offset_ctx_t *c = arg;
    if (offset_take(c)) json_array_append_new(c->items, strip_private(json_deep_copy(doc)));
    return !c->more;
}

/* GET /api/v2/pipeline/:id/workflow */
int http__api_pipeline_workflows(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX];
    if (!param_id(req, 0, id)) {
        http__reply_error(h, req, 404, "pipeline not found");
        return 0;
    }
    offset_ctx_t c = {0};
    if (!page_token(h, req, 'w', &c.skip)) return 0;
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *p;
    if (proj_pipeline_get(t, id, &p) != 0) {
        log_kvtxn_abort(t);
        http__reply_error(h, req, 404, "pipeline not found: %s", id);
        return 0;
    }
    json_decref(p);
    c.items = json_array();
    int rc = proj_workflows_of(t, id, add_workflow, &c);
    log_kvtxn_abort(t);
    if (rc != 0) {
        json_decref(c.items);
        http__reply_error(h, req, 503, "cannot read the workflows: %s", sp_strerror(rc));
        return 0;
    }
    reply_doc(h, req, 200, paged(c.items, c.more, 'w', c.skip + PAGE_SIZE));
    return 0;
}

/* GET /api/v2/workflow/:id */
int http__api_workflow(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX];
    if (!param_id(req, 0, id)) {
        http__reply_error(h, req, 404, "workflow not found");
        return 0;
    }
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *doc;
    if (proj_workflow_get(t, id, &doc) == 0)
        reply_doc(h, req, 200, strip_private(doc));
    else
        http__reply_error(h, req, 404, "workflow not found: %s", id);
    log_kvtxn_abort(t);
    return 0;
}

/* A job of a workflow in the shape of GET /workflow/{id}/job. */
static json_t *job_item(const json_t *job)
{
    bool approval = strcmp(str_of(job, "type"), "approval") == 0;
    json_t *it = json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id", field(job, "id"), "name", field(job, "name"), "type",
        field(job, "type"), "status", field(job, "status"), "project_slug", field(job, "project_slug"), "started_at",
        field(job, "started_at"), "stopped_at", field(job, "stopped_at"), "dependencies",
        json_is_array(json_object_get(job, "dependencies")) ? field(job, "dependencies") : json_array());
    if (approval)
        json_object_set_new(it, "approval_request_id", field(job, "approval_request_id"));
    else
        json_object_set_new(it, "job_number", field(job, "job_number"));
    const char *who[] = {"approved_by", "canceled_by"};
    for (size_t i = 0; i < 2; i++)
        if (json_is_string(json_object_get(job, who[i]))) json_object_set_new(it, who[i], field(job, who[i]));
    return it;
}

/* GET /api/v2/workflow/:id/job */
int http__api_workflow_jobs(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX];
    if (!param_id(req, 0, id)) {
        http__reply_error(h, req, 404, "workflow not found");
        return 0;
    }
    offset_ctx_t c = {0};
    if (!page_token(h, req, 'j', &c.skip)) return 0;
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *wf;
    if (proj_workflow_get(t, id, &wf) != 0) {
        log_kvtxn_abort(t);
        http__reply_error(h, req, 404, "workflow not found: %s", id);
        return 0;
    }
    c.items = json_array();
    size_t i;
    json_t *jid;
    json_array_foreach (json_object_get(wf, "_jobs"), i, jid) {
        json_t *job;
        if (!json_is_string(jid) || proj_job_get(t, json_string_value(jid), &job) != 0) continue;
        if (offset_take(&c)) json_array_append_new(c.items, job_item(job));
        json_decref(job);
        if (c.more) break;
    }
    json_decref(wf);
    log_kvtxn_abort(t);
    reply_doc(h, req, 200, paged(c.items, c.more, 'j', c.skip + PAGE_SIZE));
    return 0;
}

/* ---- jobs ---- */

static bool status_final(const char *s)
{
    static const char *open[] = {"blocked", "queued", "running", "on_hold", "not_running"};
    for (size_t i = 0; i < SP_ARRAY_LEN(open); i++)
        if (strcmp(s, open[i]) == 0) return false;
    return *s != 0;
}

/* Loads the job of the route (slug parameters 0-2, number at parameter
 * numarg) with its project, or replies and returns false. */
static bool route_job(http_t *h, h2o_req_t *req, log_kvtxn_t *t, int numarg, json_t **project, json_t **job)
{
    uint64_t num;
    char slug[300], id[PROJ_ID_MAX];
    if (!param_num(req, numarg, &num)) {
        h2o_iovec_t v = http__param(req, numarg);
        http__reply_error(h, req, 404, "job not found: %.*s", (int)v.len, v.base);
        return false;
    }
    if (!route_project(h, req, t, slug, sizeof slug, project)) return false;
    if (proj_job_by_number(t, slug, num, id) != 0 || proj_job_get(t, id, job) != 0) {
        json_decref(*project);
        http__reply_error(h, req, 404, "job not found: %s number %llu", slug, (unsigned long long)num);
        return false;
    }
    return true;
}

/* CircleCI's Job details. */
static json_t *job_details(h2o_req_t *req, const json_t *project, const json_t *job)
{
    char base[300], url[800];
    base_url(req, base, sizeof base);
    const char *slug = str_of(job, "project_slug");
    json_int_t number = json_integer_value(json_object_get(job, "_number"));
    snprintf(url, sizeof url, "%s/ui/%s/jobs/%lld", base, slug, (long long)number);
    json_int_t par = json_integer_value(json_object_get(job, "_parallelism"));
    if (par < 1) par = 1;
    json_t *runs = json_array();
    for (json_int_t i = 0; i < par; i++)
        json_array_append_new(runs, json_pack("{s:I, s:O}", "index", i, "status", json_object_get(job, "status")));
    json_t *exec = json_object_get(job, "_executor");
    json_t *contexts = json_array();
    size_t i;
    json_t *cx;
    json_array_foreach (json_object_get(job, "_contexts"), i, cx) {
        const char *name = json_is_string(cx) ? json_string_value(cx) : str_of(cx, "name");
        json_array_append_new(contexts, json_pack("{s:s}", "name", name));
    }
    /* Warnings gathered while it ran (a node retried on another agent),
     * then the reason it ended, if it failed for one. */
    json_t *messages = json_is_array(json_object_get(job, "_messages"))
                           ? json_deep_copy(json_object_get(job, "_messages"))
                           : json_array();
    const char *msg = str_of(job, "_message");
    if (*msg)
        json_array_append_new(
            messages, json_pack("{s:s, s:s, s:s}", "type", "error", "message", msg, "reason", str_of(job, "status")));
    const char *vcs_url = str_of(json_object_get(project, "vcs_info"), "vcs_url");
    return json_pack(
        "{s:I, s:o, s:o, s:s, s:{s:o, s:s, s:o, s:s}, s:{s:o}, s:{s:o}, s:{s:o, s:o}, s:I, s:o, "
        "s:{s:s, s:s}, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
        "number", number, "name", field(job, "name"), "status", field(job, "status"), "web_url", url, "project", "id",
        field(project, "id"), "slug", slug, "name", field(project, "name"), "external_url", vcs_url, "organization",
        "name", field(project, "organization_name"), "pipeline", "id", field(job, "pipeline_id"), "latest_workflow",
        "id", field(job, "workflow_id"), "name", field(job, "workflow_name"), "parallelism", par, "parallel_runs", runs,
        "executor", "resource_class", json_string_value(json_object_get(exec, "resource_class")) ?: "medium", "type",
        json_string_value(json_object_get(exec, "type")) ?: "docker", "contexts", contexts, "messages", messages,
        "created_at", field(job, "created_at"), "queued_at", field(job, "queued_at"), "started_at",
        field(job, "started_at"), "stopped_at", field(job, "stopped_at"), "duration", field(job, "duration"));
}

/* GET /api/v2/project/:vcs/:org/:repo/job/:number */
int http__api_job(http_t *h, h2o_req_t *req)
{
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *project, *job;
    if (route_job(h, req, t, 3, &project, &job)) {
        json_t *d = job_details(req, project, job);
        /* Spool's addition: why a queued job waits (which queue, how many
         * ahead, whether an agent fits, the project's limit). */
        json_t *why = NULL;
        engine_t *e = http__engine(h);
        if (e && engine_job_waiting(e, json_string_value(json_object_get(job, "id")) ?: "", &why) == 0)
            json_object_set_new(d, "queue", why);
        reply_doc(h, req, 200, d);
        json_decref(project);
        json_decref(job);
    }
    log_kvtxn_abort(t);
    return 0;
}

/* ---- output ---- */

typedef struct {
    log_reader_t *r;
    int64_t t0;
    json_t *out; /* entries appended here */
    int chunks, redacted, bad;
} out_ctx_t;

/* Decodes one stored chunk into entries. */
static int chunk_entries(log_reader_t *r, uint64_t log_seq, int64_t t0, json_t *out, bool *redacted)
{
    log_event_t ev;
    int rc = log_reader_get(r, log_seq, &ev);
    if (rc != 0) return rc;
    *redacted = ev.redacted;
    if (ev.redacted) return 0;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    rc = log_body_unpack(ev.body, &zone, &o);
    const msgpack_object *d = rc == 0 ? log_body_get(&o, "data") : NULL;
    if (rc == 0 && d && d->type == MSGPACK_OBJECT_BIN)
        rc = engine_chunk_decode((sp_slice_t){(const uint8_t *)d->via.bin.ptr, d->via.bin.size}, t0, out);
    else if (rc == 0 && d && d->type == MSGPACK_OBJECT_STR)
        rc = engine_chunk_decode((sp_slice_t){(const uint8_t *)d->via.str.ptr, d->via.str.size}, t0, out);
    else if (rc == 0)
        rc = SP_ECORRUPT;
    msgpack_zone_destroy(&zone);
    return rc;
}

static bool add_chunk(void *arg, const proj_chunk_t *ch)
{
    out_ctx_t *c = arg;
    bool redacted = false;
    c->chunks++;
    if (chunk_entries(c->r, ch->log_seq, c->t0, c->out, &redacted) != 0) c->bad++;
    c->redacted += redacted;
    return true;
}

typedef struct {
    uint32_t step, index;
    json_t *doc; /* the step's document, when found */
} find_step_t;

static bool find_step(void *arg, const json_t *doc)
{
    find_step_t *f = arg;
    if ((uint32_t)json_integer_value(json_object_get(doc, "step")) != f->step ||
        (uint32_t)json_integer_value(json_object_get(doc, "index")) != f->index)
        return true;
    f->doc = json_incref((json_t *)doc);
    return false;
}

/* Reads every entry of one step into *out ([{type, time, message}]), or
 * replies and returns false. */
static bool step_output(http_t *h, h2o_req_t *req, log_kvtxn_t *t, const json_t *job, int stepi, int indexi,
                        json_t **out)
{
    char id[PROJ_ID_MAX];
    snprintf(id, sizeof id, "%s", str_of(job, "id"));
    find_step_t f = {(uint32_t)stepi, (uint32_t)indexi, NULL};
    proj_steps_each(t, id, find_step, &f);
    if (f.doc == NULL) {
        http__reply_error(h, req, 404, "job %lld has no step %d (index %d)",
                          (long long)json_integer_value(json_object_get(job, "_number")), stepi, indexi);
        return false;
    }
    out_ctx_t c = {.t0 = json_integer_value(json_object_get(f.doc, "_started_ns")), .out = json_array()};
    json_decref(f.doc);
    int rc = log_reader_open(h->opts.log, &c.r);
    if (rc == 0) {
        rc = proj_output_each(t, id, stepi, indexi, 0, add_chunk, &c);
        log_reader_close(c.r);
    }
    if (rc == 0 && c.chunks > 0 && c.redacted == c.chunks) {
        json_decref(c.out);
        http__reply_error(h, req, 410, "this step's output has expired");
        return false;
    }
    if (rc != 0) {
        json_decref(c.out);
        http__reply_error(h, req, 503, "cannot read the output: %s", sp_strerror(rc));
        return false;
    }
    *out = c.out;
    return true;
}

static bool param_small(h2o_req_t *req, int i, int *out)
{
    char buf[12];
    uint64_t v;
    if (!http__param_str(req, i, buf, sizeof buf) || sp_parse_u64(buf, &v) != 0 || v > 100000) return false;
    *out = (int)v;
    return true;
}

/* GET /api/v1.1/project/:vcs/:org/:repo/:num/output/:step/:index */
int http__api_v11_output(http_t *h, h2o_req_t *req)
{
    int step, index;
    if (!param_small(req, 4, &step) || !param_small(req, 5, &index)) {
        http__reply_error(h, req, 400, "step and index: expected small non-negative integers");
        return 0;
    }
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *project, *job, *out;
    if (route_job(h, req, t, 3, &project, &job)) {
        if (step_output(h, req, t, job, step, index, &out)) reply_doc(h, req, 200, out);
        json_decref(project);
        json_decref(job);
    }
    log_kvtxn_abort(t);
    return 0;
}

/* The private raw output: one stream's text as bytes, 204 when empty. */
static int raw_output(http_t *h, h2o_req_t *req, const char *type)
{
    int step, index;
    if (!param_small(req, 4, &index) || !param_small(req, 5, &step)) {
        http__reply_error(h, req, 400, "task index and step: expected small non-negative integers");
        return 0;
    }
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *project, *job, *out;
    if (route_job(h, req, t, 3, &project, &job)) {
        if (step_output(h, req, t, job, step, index, &out)) {
            sp_buf_t b = {0};
            size_t i;
            json_t *e;
            json_array_foreach (out, i, e) {
                if (strcmp(str_of(e, "type"), type) == 0)
                    sp_buf_add(&b, json_string_value(json_object_get(e, "message")),
                               json_string_length(json_object_get(e, "message")));
            }
            if (b.n == 0)
                http__reply(h, req, 204, "application/octet-stream", "", 0);
            else
                http__reply(h, req, 200, "application/octet-stream", b.p, b.n);
            sp_buf_free(&b);
            json_decref(out);
        }
        json_decref(project);
        json_decref(job);
    }
    log_kvtxn_abort(t);
    return 0;
}

/* GET /api/private/output/raw/:vcs/:org/:repo/:num/output/:index/:step */
int http__api_raw_output(http_t *h, h2o_req_t *req) { return raw_output(h, req, "out"); }
/* GET /api/private/output/raw/:vcs/:org/:repo/:num/error/:index/:step */
int http__api_raw_error(http_t *h, h2o_req_t *req) { return raw_output(h, req, "err"); }

/* ---- the v1.1 build object ---- */

typedef struct {
    json_t *steps; /* [{name, actions}] */
    const char *base, *slug, *task;
    json_int_t number, parallelism;
} build_ctx_t;

static json_t *action_of(build_ctx_t *c, const json_t *doc)
{
    const char *status = str_of(doc, "status");
    bool ended = strcmp(status, "running") != 0;
    json_int_t step = json_integer_value(json_object_get(doc, "step")),
               index = json_integer_value(json_object_get(doc, "index"));
    char alloc[160];
    snprintf(alloc, sizeof alloc, "%s-%lld-build", c->task, (long long)index);
    bool background = json_is_true(json_object_get(doc, "background"));
    json_t *a =
        json_pack("{s:I, s:I, s:o, s:o, s:s, s:o, s:b, s:b, s:b, s:b, s:o, s:o, s:o, s:b, s:b, s:b, s:b, "
                  "s:s, s:s, s:b, s:[]}",
                  "index", index, "step", step, "name", field(doc, "name"), "bash_command", field(doc, "bash_command"),
                  "status", status, "exit_code", field(doc, "exit_code"), "failed", strcmp(status, "failed") == 0,
                  "canceled", strcmp(status, "canceled") == 0, "timedout", strcmp(status, "timedout") == 0,
                  "infrastructure_fail", strcmp(status, "infrastructure_fail") == 0, "start_time",
                  field(doc, "start_time"), "end_time", field(doc, "end_time"), "run_time_millis",
                  field(doc, "run_time_millis"), "background", background, "insignificant", background, "parallel",
                  c->parallelism > 1, "has_output", json_integer_value(json_object_get(doc, "_lines")) > 0, "type",
                  "test", "allocation_id", alloc, "truncated", false, "messages");
    if (ended) {
        char url[900];
        snprintf(url, sizeof url, "%s/api/v1.1/project/%s/%lld/output/%lld/%lld", c->base, c->slug,
                 (long long)c->number, (long long)step, (long long)index);
        json_object_set_new(a, "output_url", json_string(url));
    }
    return a;
}

static bool add_build_step(void *arg, const json_t *doc)
{
    build_ctx_t *c = arg;
    json_int_t step = json_integer_value(json_object_get(doc, "step"));
    json_t *last = json_array_get(c->steps, json_array_size(c->steps) - 1);
    json_t *actions = json_object_get(last, "actions");
    if (last == NULL || json_integer_value(json_object_get(json_array_get(actions, 0), "step")) != step) {
        last = json_pack("{s:O, s:[]}", "name", json_object_get(doc, "name"), "actions");
        json_array_append_new(c->steps, last);
        actions = json_object_get(last, "actions");
    }
    json_array_append_new(actions, action_of(c, doc));
    return true;
}

static const char *v11_lifecycle(const char *s)
{
    if (strcmp(s, "queued") == 0 || strcmp(s, "running") == 0 || strcmp(s, "not_run") == 0) return s;
    if (strcmp(s, "blocked") == 0 || strcmp(s, "on_hold") == 0 || strcmp(s, "not_running") == 0) return "not_running";
    return "finished";
}

static const char *v11_status(const char *s)
{
    if (strcmp(s, "blocked") == 0 || strcmp(s, "on_hold") == 0) return "not_running";
    if (strcmp(s, "terminated-unknown") == 0 || strcmp(s, "unauthorized") == 0) return "failed";
    return s;
}

static const char *v11_why(const char *trigger)
{
    if (strcmp(trigger, "webhook") == 0) return "github";
    if (strcmp(trigger, "scheduled_pipeline") == 0) return "scheduled";
    return trigger;
}

/* GET /api/v1.1/project/:vcs/:org/:repo/:num: the build object with its
 * steps. */
int http__api_v11_build(http_t *h, h2o_req_t *req)
{
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *project, *job;
    if (!route_job(h, req, t, 3, &project, &job)) {
        log_kvtxn_abort(t);
        return 0;
    }
    json_t *pipe = NULL;
    if (proj_pipeline_get(t, str_of(job, "pipeline_id"), &pipe) != 0) pipe = json_object();
    json_t *vcs = json_object_get(pipe, "vcs"), *commit = json_object_get(vcs, "commit");
    char base[300], url[800];
    base_url(req, base, sizeof base);
    const char *slug = str_of(job, "project_slug");
    json_int_t number = json_integer_value(json_object_get(job, "_number"));
    snprintf(url, sizeof url, "%s/%s/%lld", base, slug, (long long)number);
    const char *status = str_of(job, "status");
    json_int_t par = json_integer_value(json_object_get(job, "_parallelism"));
    build_ctx_t c = {.steps = json_array(),
                     .base = base,
                     .slug = slug,
                     .task = str_of(job, "_task"),
                     .number = number,
                     .parallelism = par < 1 ? 1 : par};
    proj_steps_each(t, str_of(job, "id"), add_build_step, &c);
    bool final = status_final(status);
    const char *outcome = NULL;
    if (final && strcmp(status, "not_run") != 0) outcome = v11_status(status);
    json_t *messages = json_array();
    size_t mi;
    json_t *m;
    json_array_foreach (json_object_get(job, "_messages"), mi, m)
        json_array_append_new(messages, json_pack("{s:O, s:O}", "type", json_object_get(m, "type"), "message",
                                                  json_object_get(m, "message")));
    if (*str_of(job, "_message"))
        json_array_append_new(messages, json_pack("{s:s, s:s}", "type", "error", "message", str_of(job, "_message")));
    json_t *exec = json_object_get(job, "_executor");
    json_t *b = json_pack(
        "{s:I, s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:s, s:o, s:s, s:b, "
        "s:b, s:b, s:b, s:I, s:s, s:{s:o, s:o, s:o, s:o, s:o, s:o, s:{}}, s:o, s:o, s:o}",
        "build_num", number, "build_url", url, "vcs_url", field(json_object_get(project, "vcs_info"), "vcs_url"),
        "vcs_type", "github", "username", field(project, "organization_name"), "reponame", field(project, "name"),
        "branch", field(vcs, "branch"), "vcs_revision", field(vcs, "revision"), "vcs_tag", field(vcs, "tag"), "subject",
        field(commit, "subject"), "body", field(commit, "body"), "why",
        v11_why(str_of(json_object_get(pipe, "trigger"), "type")), "queued_at", field(job, "queued_at"),
        "usage_queued_at", field(job, "queued_at"), "start_time", field(job, "started_at"), "stop_time",
        field(job, "stopped_at"), "build_time_millis", field(job, "duration"), "lifecycle", v11_lifecycle(status),
        "outcome", outcome ? json_string(outcome) : json_null(), "status", v11_status(status), "failed",
        strcmp(status, "failed") == 0, "canceled", strcmp(status, "canceled") == 0, "timedout",
        strcmp(status, "timedout") == 0, "infrastructure_fail", strcmp(status, "infrastructure_fail") == 0, "parallel",
        c.parallelism, "platform", "2.0", "workflows", "workflow_id", field(job, "workflow_id"), "workflow_name",
        field(job, "workflow_name"), "job_id", field(job, "id"), "job_name", field(job, "name"), "workspace_id",
        field(job, "workflow_id"), "upstream_job_ids",
        json_is_array(json_object_get(job, "dependencies")) ? field(job, "dependencies") : json_array(),
        "upstream_concurrency_map", "messages", messages, "steps", c.steps, "fail_reason",
        *str_of(job, "_message") ? field(job, "_message") : json_null());
    if (b) {
        json_object_set_new(b, "job_name", field(job, "name"));
        json_object_set_new(b, "has_artifacts", json_false());
        json_object_set_new(b, "ssh_disabled", json_true());
        json_object_set_new(b, "retry_of", json_null());
        json_object_set_new(b, "picard",
                            json_pack("{s:O, s:{s:s}}", "executor", json_object_get(exec, "type") ?: json_null(),
                                      "resource_class", "class", str_of(exec, "resource_class")));
        json_object_set_new(
            b, "user",
            json_pack("{s:O, s:s, s:b}", "login",
                      json_object_get(json_object_get(json_object_get(pipe, "trigger"), "actor"), "login")
                          ?: json_null(),
                      "vcs_type", "github", "is_user", true));
    }
    reply_doc(h, req, 200, b);
    json_decref(pipe);
    json_decref(project);
    json_decref(job);
    log_kvtxn_abort(t);
    return 0;
}

/* ---- live output: Server-Sent Events ----
 *
 * GET /api/v2/project/:vcs/:org/:repo/job/:number/output/stream
 *
 * On connect the stream sends what the views hold, step by step in
 * (step, index) order: an `event: step` when a step is first seen, its
 * chunks as `event: output` ({step, index, seq, lines}), and an `event:
 * step` again when its final status is known and every chunk of it was
 * sent. It remembers, per (step, index), the next chunk to send; each
 * time the views move on (the worker's views notification) it sends only
 * what came after. Once the job's status is final in the views and
 * everything was sent, `event: end` closes the stream. A chunk reaches
 * the views before its step's end and before the job's end (log order),
 * so nothing is missed and nothing is sent twice.
 *
 * Memory stays bounded: at most about SSE_BUDGET bytes are built before
 * they are handed to h2o, and nothing more is built until h2o asks for
 * more (the generator's proceed), so a slow client slows reading, not
 * memory (the request pool, which only grows, holds nothing per send).
 * A slot in the request pool frees the stream when h2o disposes of the
 * request, whether the job ended or the client went away. A draining
 * server ends its streams without `end` within SSE_TICK_MS; clients
 * join again elsewhere (or later) and skip the chunks they have. */

typedef struct {
    uint32_t step, index, next_seq;
    char status[24]; /* last status sent */
} sse_step_t;

typedef struct sse {
    h2o_generator_t gen; /* first: h2o hands it back to proceed/stop */
    http_t *h;
    http__worker_t *w;
    h2o_req_t *req; /* NULL once h2o disposed of the request */
    struct sse *next, *prev;
    char job_id[PROJ_ID_MAX];
    sse_step_t *steps;
    size_t nsteps, capsteps;
    sp_buf_t buf; /* being built */
    sp_buf_t out; /* handed to h2o_send, untouched until proceed */
    bool sending, final_sent;
    int64_t last_send_ns;
} sse_t;

/* A worker's streams (w->sse), with one timer for keep-alives and for
 * ending the streams promptly when the server drains. It exists while
 * the worker has streams. */
typedef struct {
    uv_timer_t timer;
    sse_t *head;
} sse_list_t;

static void sse_tick(uv_timer_t *tm);

static void sse_list_add(sse_t *s)
{
    sse_list_t *l = s->w->sse;
    if (l == NULL) {
        l = sp_xcalloc(1, sizeof *l);
        uv_timer_init(s->w->loop, &l->timer);
        l->timer.data = s->w;
        uv_timer_start(&l->timer, sse_tick, SSE_TICK_MS, SSE_TICK_MS);
        uv_unref((uv_handle_t *)&l->timer); /* streams never keep a loop alive */
        s->w->sse = l;
    }
    s->next = l->head;
    s->prev = NULL;
    if (l->head) l->head->prev = s;
    l->head = s;
}

static void sse_list_free(uv_handle_t *t) { free(sp_container_of((uv_timer_t *)t, sse_list_t, timer)); }

static void sse_list_del(sse_t *s)
{
    sse_list_t *l = s->w->sse;
    if (s->prev)
        s->prev->next = s->next;
    else
        l->head = s->next;
    if (s->next) s->next->prev = s->prev;
    s->next = s->prev = NULL;
    if (l->head == NULL) {
        s->w->sse = NULL;
        uv_timer_stop(&l->timer);
        uv_close((uv_handle_t *)&l->timer, sse_list_free);
    }
}

/* h2o disposes of the request (the job ended and everything was sent,
 * or the client went away): the stream ends here. By then no write of
 * s->out is pending (it completed, or the socket is closed). */
static void sse_slot_dispose(void *p)
{
    sse_t *s = *(sse_t **)p;
    sse_list_del(s);
    sp_buf_free(&s->buf);
    sp_buf_free(&s->out);
    free(s->steps);
    free(s);
}

static void sse_send(sse_t *s, bool final)
{
    sp_buf_t tmp = s->out;
    s->out = s->buf;
    s->buf = tmp;
    s->buf.n = 0;
    s->sending = true;
    s->final_sent = final;
    s->last_send_ns = sp_mono_ns();
    h2o_iovec_t v = h2o_iovec_init(s->out.p, s->out.n);
    /* h2o may dispose of the request inside h2o_send (an error), which
     * frees s: nothing touches s after this call. */
    h2o_send(s->req, &v, v.len ? 1 : 0, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void sse_event(sp_buf_t *b, const char *name, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (text == NULL) return;
    sp_buf_addstr(b, "event: ");
    sp_buf_addstr(b, name);
    sp_buf_addstr(b, "\ndata: ");
    sp_buf_addstr(b, text);
    sp_buf_addstr(b, "\n\n");
    free(text);
}

static sse_step_t *sse_cursor(sse_t *s, uint32_t step, uint32_t index)
{
    for (size_t i = 0; i < s->nsteps; i++)
        if (s->steps[i].step == step && s->steps[i].index == index) return &s->steps[i];
    if (s->nsteps == s->capsteps) {
        s->capsteps = s->capsteps ? s->capsteps * 2 : 16;
        s->steps = sp_xrealloc(s->steps, s->capsteps * sizeof *s->steps);
    }
    sse_step_t *c = &s->steps[s->nsteps++];
    *c = (sse_step_t){.step = step, .index = index};
    return c;
}

typedef struct {
    sse_t *s;
    log_kvtxn_t *t;
    log_reader_t *r;
    sse_step_t *cur;
    int64_t t0;
    bool over; /* the budget is spent: stop and continue on proceed */
    int rc;
} fill_ctx_t;

static bool sse_chunk(void *arg, const proj_chunk_t *ch)
{
    fill_ctx_t *c = arg;
    if (c->s->buf.n >= SSE_BUDGET) {
        c->over = true;
        return false;
    }
    json_t *lines = json_array();
    bool redacted = false;
    int rc = chunk_entries(c->r, ch->log_seq, c->t0, lines, &redacted);
    if (rc != 0 && rc != SP_ECORRUPT) { /* a read error: try again on the next notification */
        json_decref(lines);
        c->rc = rc;
        return false;
    }
    /* A chunk that cannot be decoded is skipped, with a marker, rather
     * than blocking the stream forever. */
    sse_event(&c->s->buf, "output",
              json_pack("{s:i, s:i, s:i, s:o, s:b}", "step", (int)ch->step, "index", (int)ch->index, "seq",
                        (int)ch->seq, "lines", lines, "expired", redacted || rc == SP_ECORRUPT));
    c->cur->next_seq = ch->seq + 1;
    return true;
}

static json_t *public_step(const json_t *doc) { return strip_private(json_deep_copy(doc)); }

static bool sse_step(void *arg, const json_t *doc)
{
    fill_ctx_t *c = arg;
    sse_t *s = c->s;
    uint32_t step = (uint32_t)json_integer_value(json_object_get(doc, "step")),
             index = (uint32_t)json_integer_value(json_object_get(doc, "index"));
    const char *status = str_of(doc, "status");
    c->cur = sse_cursor(s, step, index);
    if (c->cur->status[0] == 0) {
        /* First sight: announced with its status, which is already
         * final for a client joining after the step ended. */
        sse_event(&s->buf, "step", public_step(doc));
        snprintf(c->cur->status, sizeof c->cur->status, "%s", status);
    }
    c->t0 = json_integer_value(json_object_get(doc, "_started_ns"));
    int rc = proj_output_each(c->t, s->job_id, (int)step, (int)index, c->cur->next_seq, sse_chunk, c);
    if (rc != 0 && c->rc == 0) c->rc = rc;
    if (c->over || c->rc != 0) return false;
    if (strcmp(c->cur->status, status) != 0) {
        sse_event(&s->buf, "step", public_step(doc));
        snprintf(c->cur->status, sizeof c->cur->status, "%s", status);
    }
    return true;
}

/* Builds what the client has not seen yet; *end when the job is over
 * and everything was built. */
static void sse_collect(sse_t *s, bool *end)
{
    log_kvtxn_t *t;
    *end = false;
    if (log_kv_begin(proj_kv(s->h->opts.proj), false, &t) != 0) return;
    json_t *job;
    if (proj_job_get(t, s->job_id, &job) != 0) { /* gone (views rebuilt under us?): end */
        log_kvtxn_abort(t);
        sse_event(&s->buf, "end", json_pack("{s:s}", "status", "unknown"));
        *end = true;
        return;
    }
    fill_ctx_t c = {.s = s, .t = t};
    int rc = log_reader_open(s->h->opts.log, &c.r);
    if (rc == 0) {
        rc = proj_steps_each(t, s->job_id, sse_step, &c);
        log_reader_close(c.r);
    }
    if (rc == 0 && c.rc == 0 && !c.over && status_final(str_of(job, "status"))) {
        sse_event(&s->buf, "end",
                  json_pack("{s:O, s:O, s:O}", "status", json_object_get(job, "status"), "stopped_at",
                            json_object_get(job, "stopped_at") ?: json_null(), "duration",
                            json_object_get(job, "duration") ?: json_null()));
        *end = true;
    }
    json_decref(job);
    log_kvtxn_abort(t);
}

static void sse_fill(sse_t *s)
{
    if (s->req == NULL || s->sending || s->final_sent) return;
    bool end = false;
    if (s->w->draining) {
        /* No `end`: the client sees the stream close and reconnects. */
        end = true;
    } else {
        sse_collect(s, &end);
    }
    if (s->buf.n == 0 && !end) return;
    sse_send(s, end);
}

static void sse_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    sse_t *s = (sse_t *)g;
    s->sending = false;
    sse_fill(s);
}

static void sse_stop(h2o_generator_t *g, h2o_req_t *req)
{
    /* The client went away; the request pool's slot frees the stream. */
    ((sse_t *)g)->sending = true;
}

static void sse_tick(uv_timer_t *tm)
{
    http__worker_t *w = tm->data;
    int64_t now = sp_mono_ns();
    for (sse_t *s = ((sse_list_t *)w->sse)->head, *next; s; s = next) {
        next = s->next;
        if (s->sending || s->final_sent) continue;
        if (w->draining) {
            sse_fill(s);
        } else if (now - s->last_send_ns >= SSE_KEEPALIVE_NS) {
            sp_buf_addstr(&s->buf, ": keep-alive\n\n");
            sse_send(s, false);
        }
    }
}

void http__sse_flush(http__worker_t *w)
{
    if (w->sse == NULL) return;
    for (sse_t *s = ((sse_list_t *)w->sse)->head, *next; s; s = next) {
        next = s->next;
        sse_fill(s);
    }
}

int http__api_job_stream(http_t *h, h2o_req_t *req)
{
    log_kvtxn_t *t;
    if (!begin(h, req, &t)) return 0;
    json_t *project, *job;
    bool found = route_job(h, req, t, 3, &project, &job);
    log_kvtxn_abort(t);
    if (!found) return 0;
    http__worker_t *w = http__worker_of(req);
    sse_t *s = sp_xcalloc(1, sizeof *s);
    s->h = h;
    s->w = w;
    s->req = req;
    s->gen.proceed = sse_proceed;
    s->gen.stop = sse_stop;
    snprintf(s->job_id, sizeof s->job_id, "%s", str_of(job, "id"));
    json_decref(project);
    json_decref(job);
    sse_t **slot = h2o_mem_alloc_shared(&req->pool, sizeof *slot, sse_slot_dispose);
    *slot = s;
    sse_list_add(s);

    atomic_fetch_add_explicit(&w->status_counts[200], 1, memory_order_relaxed);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL, H2O_STRLIT("no"));
    h2o_start_response(req, &s->gen);
    bool end = false;
    sse_collect(s, &end);
    if (s->buf.n == 0) sp_buf_addstr(&s->buf, ": waiting for output\n\n"); /* the headers go out now */
    sse_send(s, end);
    return 0;
}
