/* Writes over the API: tokens (admin socket), projects, pipeline
 * triggers. Each validates its input here and hands a command to the
 * engine; the answer comes once the result is durable and visible. */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>

static json_t *body_object(http_t *h, h2o_req_t *req)
{
    json_error_t je;
    json_t *b =
        req->entity.len ? json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &je) : json_object();
    if (b == NULL) {
        http__reply_error(h, req, 400, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(b)) {
        json_decref(b);
        http__reply_error(h, req, 400, "the body must be a JSON object");
        return NULL;
    }
    return b;
}

static bool engine_ready(http_t *h, h2o_req_t *req)
{
    if (http__engine(h)) return true;
    http__reply_error(h, req, 503, "the server is starting: try again shortly");
    return false;
}

/* Reports a command the engine refused at once. */
static void refused(http_t *h, h2o_req_t *req, http__op_t *op, int rc, const char *err)
{
    http__reply_error(h, req, http__status_for(rc), "%s", err);
    http__op_free(op);
}

static const char *str(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* POST /admin/tokens {name, role} */
int http__token_create(http_t *h, h2o_req_t *req)
{
    if (!engine_ready(h, req)) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    char err[300];
    http__op_t *op = http__op_new(h, req, 201);
    int rc = engine_token_create(http__engine(h), str(b, "name") ?: "", str(b, "role") ?: "user",
                                 http__info(req)->actor, http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

/* POST /admin/tokens/:id/revoke */
int http__token_revoke(http_t *h, h2o_req_t *req)
{
    if (!engine_ready(h, req)) return 0;
    char id[PROJ_ID_MAX], err[300];
    if (!http__param_str(req, 0, id, sizeof id)) {
        http__reply_error(h, req, 400, "token id too long");
        return 0;
    }
    http__op_t *op = http__op_new(h, req, 200);
    int rc =
        engine_token_revoke(http__engine(h), id, http__info(req)->actor, http__op_engine_done, op, err, sizeof err);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

/* POST /api/v2/project {slug, vcs_url, webhook_secret, git_token, default_branch} */
int http__project_add(http_t *h, h2o_req_t *req)
{
    if (!engine_ready(h, req)) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    char err[300];
    http__op_t *op = http__op_new(h, req, 201);
    int rc = engine_project_add(http__engine(h), str(b, "slug"), str(b, "vcs_url"), str(b, "webhook_secret"),
                                str(b, "git_token"), str(b, "default_branch"), http__info(req)->actor,
                                http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

static int project_action(http_t *h, h2o_req_t *req, const char *what)
{
    if (!engine_ready(h, req)) return 0;
    char slug[300], err[300];
    if (!http__route_slug(req, slug, sizeof slug)) {
        http__reply_error(h, req, 400, "expected /project/gh/ORG/REPO/...");
        return 0;
    }
    http__op_t *op = http__op_new(h, req, 200);
    int rc = engine_project_set(http__engine(h), slug, what, http__info(req)->actor, http__op_engine_done, op, err,
                                sizeof err);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

int http__project_follow(http_t *h, h2o_req_t *req) { return project_action(h, req, "follow"); }
int http__project_unfollow(http_t *h, h2o_req_t *req) { return project_action(h, req, "unfollow"); }
int http__project_stop(http_t *h, h2o_req_t *req) { return project_action(h, req, "stop"); }
int http__project_resume(http_t *h, h2o_req_t *req) { return project_action(h, req, "resume"); }

/* The answer to a trigger: CircleCI's {id, state, number, created_at}. */
static void trigger_reply(http__op_t *op, h2o_req_t *req)
{
    json_t *r = json_pack("{s:O, s:O, s:O, s:O}", "id", json_object_get(op->result, "id"), "state",
                          json_object_get(op->result, "state"), "number", json_object_get(op->result, "number"),
                          "created_at", json_object_get(op->result, "created_at"));
    char *text = json_dumps(r ? r : json_object(), JSON_COMPACT);
    sp_buf_t b = {(uint8_t *)text, strlen(text), 0};
    http__reply_json(op->w->srv, req, 201, &b);
    free(text);
    json_decref(r);
}

/* POST /api/v2/project/:vcs/:org/:repo/pipeline {branch, tag, parameters} */
int http__pipeline_trigger(http_t *h, h2o_req_t *req)
{
    if (!engine_ready(h, req)) return 0;
    char slug[300], err[300];
    if (!http__route_slug(req, slug, sizeof slug)) {
        http__reply_error(h, req, 400, "expected /project/gh/ORG/REPO/...");
        return 0;
    }
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    const char *known[] = {"branch", "tag", "parameters"};
    const char *k;
    json_t *v;
    json_object_foreach (b, k, v) {
        bool ok = false;
        for (size_t i = 0; i < SP_ARRAY_LEN(known); i++) ok |= strcmp(k, known[i]) == 0;
        if (!ok) {
            http__reply_error(h, req, 400, "%s: unknown field (expected branch, tag, parameters)", k);
            json_decref(b);
            return 0;
        }
    }
    const char *branch = str(b, "branch"), *tag = str(b, "tag");
    engine_trigger_t t = {.slug = slug,
                          .trigger_type = "api",
                          .actor = http__info(req)->actor,
                          .branch = branch,
                          .tag = tag,
                          .parameters = json_object_get(b, "parameters")};
    if (branch == NULL && tag == NULL) {
        /* CircleCI builds the project's default branch. */
        log_kvtxn_t *txn;
        json_t *doc = NULL;
        char norm[300];
        if (engine_slug_normalize(slug, norm, sizeof norm) == 0 &&
            log_kv_begin(proj_kv(h->opts.proj), false, &txn) == 0) {
            proj_project_get(txn, norm, &doc);
            log_kvtxn_abort(txn);
        }
        static char fallback[] = "main";
        const char *def = json_string_value(json_object_get(json_object_get(doc, "vcs_info"), "default_branch"));
        snprintf(err, sizeof err, "%s", def && *def ? def : fallback);
        t.branch = err;
        json_decref(doc);
    }
    char branch_buf[300];
    if (t.branch == err) {
        snprintf(branch_buf, sizeof branch_buf, "%s", err);
        t.branch = branch_buf;
    }
    http__op_t *op = http__op_new(h, req, 201);
    op->reply = trigger_reply;
    int rc = engine_trigger(http__engine(h), &t, http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}
