/* Workflow and job control over the API (cancel, approve, rerun), project
 * settings, and the operators' fleet and queue endpoints (admin socket or
 * an admin token). */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>

static json_t *body_object(http_t *h, h2o_req_t *req)
{
    json_error_t je;
    json_t *b =
        req->entity.len ? json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &je) : json_object();
    if (b == NULL || !json_is_object(b)) {
        http__reply_error(h, req, 400, "the body must be a JSON object%s%s", b ? "" : ": ", b ? "" : je.text);
        json_decref(b);
        return NULL;
    }
    return b;
}

static engine_t *ready(http_t *h, h2o_req_t *req)
{
    engine_t *e = http__engine(h);
    if (e == NULL) http__reply_error(h, req, 503, "the server is starting: try again shortly");
    return e;
}

static void refused(http_t *h, h2o_req_t *req, http__op_t *op, int rc, const char *err)
{
    http__reply_error(h, req, http__status_for(rc), "%s", err);
    http__op_free(op);
}

static bool param(http_t *h, h2o_req_t *req, int i, char *out, size_t n)
{
    if (http__param_str(req, i, out, n)) return true;
    http__reply_error(h, req, 400, "identifier too long");
    return false;
}

/* POST /api/v2/workflow/:id/cancel */
int http__workflow_cancel(http_t *h, h2o_req_t *req)
{
    engine_t *e = ready(h, req);
    char id[PROJ_ID_MAX], err[300];
    if (e == NULL || !param(h, req, 0, id, sizeof id)) return 0;
    http__op_t *op = http__op_new(h, req, 202);
    int rc = engine_cancel_workflow(e, id, http__info(req)->actor, http__op_engine_done, op, err, sizeof err);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

/* POST /api/v2/workflow/:id/approve/:approval_request_id */
int http__workflow_approve(http_t *h, h2o_req_t *req)
{
    engine_t *e = ready(h, req);
    char id[PROJ_ID_MAX], rid[PROJ_ID_MAX], err[300];
    if (e == NULL || !param(h, req, 0, id, sizeof id) || !param(h, req, 1, rid, sizeof rid)) return 0;
    http__op_t *op = http__op_new(h, req, 202);
    int rc = engine_approve(e, id, rid, http__info(req)->actor, http__op_engine_done, op, err, sizeof err);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

/* POST /api/v2/workflow/:id/rerun {from_failed, jobs, enable_ssh, sparse_tree} */
int http__workflow_rerun(http_t *h, h2o_req_t *req)
{
    engine_t *e = ready(h, req);
    char id[PROJ_ID_MAX], err[300];
    if (e == NULL || !param(h, req, 0, id, sizeof id)) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    json_t *ff = json_object_get(b, "from_failed"), *jobs = json_object_get(b, "jobs");
    const char *msg = NULL;
    if ((ff && !json_is_boolean(ff)) || (jobs && !json_is_array(jobs)))
        msg = "from_failed must be a boolean and jobs a list of job ids";
    else if (json_is_true(ff) && json_array_size(jobs))
        msg = "from_failed cannot be combined with jobs";
    else if (json_is_true(json_object_get(b, "enable_ssh")))
        msg = "enable_ssh is not supported by this server";
    if (msg) {
        http__reply_error(h, req, 400, "%s", msg);
        json_decref(b);
        return 0;
    }
    http__op_t *op = http__op_new(h, req, 202);
    int rc =
        engine_rerun(e, id, json_is_true(ff), jobs, http__info(req)->actor, http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

static int cancel_job(http_t *h, h2o_req_t *req, const char *job_id)
{
    engine_t *e = ready(h, req);
    char err[300];
    if (e == NULL) return 0;
    http__op_t *op = http__op_new(h, req, 200);
    int rc = engine_cancel_job(e, job_id, http__info(req)->actor, http__op_engine_done, op, err, sizeof err);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

/* POST /api/v2/jobs/:id/cancel */
int http__job_cancel_by_id(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX];
    return param(h, req, 0, id, sizeof id) ? cancel_job(h, req, id) : 0;
}

/* POST /api/v2/project/:vcs/:org/:repo/job/:number/cancel */
int http__job_cancel(http_t *h, h2o_req_t *req)
{
    char num[32], norm[300], id[PROJ_ID_MAX];
    uint64_t n;
    if (!param(h, req, 3, num, sizeof num)) return 0;
    if (sp_parse_u64(num, &n) != 0 || !http__route_slug(req, norm, sizeof norm)) {
        http__reply_error(h, req, 400, "expected /project/gh/ORG/REPO/job/NUMBER/cancel");
        return 0;
    }
    log_kvtxn_t *t;
    int rc = log_kv_begin(proj_kv(h->opts.proj), false, &t);
    if (rc == 0) {
        rc = proj_job_by_number(t, norm, n, id);
        log_kvtxn_abort(t);
    }
    if (rc != 0) {
        http__reply_error(h, req, 404, "no job %llu in %s", (unsigned long long)n, norm);
        return 0;
    }
    return cancel_job(h, req, id);
}

/* PATCH /api/v2/project/:vcs/:org/:repo/settings
 * {advanced: {autocancel_builds}, spool: {concurrency, retry_infrastructure_fail}} */
int http__project_settings(http_t *h, h2o_req_t *req)
{
    engine_t *e = ready(h, req);
    if (e == NULL) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    json_t *settings = json_object();
    json_t *adv = json_object_get(b, "advanced"), *own = json_object_get(b, "spool");
    if (json_object_get(adv, "autocancel_builds"))
        json_object_set(settings, "autocancel_builds", json_object_get(adv, "autocancel_builds"));
    if (json_is_object(own)) json_object_update(settings, own);
    char slug[300], err[300];
    if (!http__route_slug(req, slug, sizeof slug)) {
        json_decref(settings);
        json_decref(b);
        http__reply_error(h, req, 400, "expected /project/gh/ORG/REPO/settings");
        return 0;
    }
    http__op_t *op = http__op_new(h, req, 200);
    int rc =
        engine_project_settings(e, slug, settings, http__info(req)->actor, http__op_engine_done, op, err, sizeof err);
    json_decref(settings);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

/* ---- operators ---- */

static void reply_doc(http_t *h, h2o_req_t *req, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    sp_buf_t b = {(uint8_t *)text, strlen(text), 0};
    http__reply_json(h, req, 200, &b);
    free(text);
    json_decref(doc);
}

/* GET /admin/nodes */
int http__nodes(http_t *h, h2o_req_t *req)
{
    engine_t *e = ready(h, req);
    json_t *list;
    if (e && engine_nodes(e, &list) == 0) reply_doc(h, req, json_pack("{s:o}", "items", list));
    return 0;
}

static int drain(http_t *h, h2o_req_t *req, bool on)
{
    engine_t *e = ready(h, req);
    char id[128], err[300];
    if (e == NULL || !param(h, req, 0, id, sizeof id)) return 0;
    http__op_t *op = http__op_new(h, req, 200);
    int rc = engine_node_drain(e, id, on, http__info(req)->actor, http__op_engine_done, op, err, sizeof err);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

int http__node_drain(http_t *h, h2o_req_t *req) { return drain(h, req, true); }
int http__node_undrain(http_t *h, h2o_req_t *req) { return drain(h, req, false); }

/* GET /admin/queue[?limit=N] */
int http__queue(http_t *h, h2o_req_t *req)
{
    engine_t *e = ready(h, req);
    if (e == NULL) return 0;
    char lim[16];
    uint64_t limit = 100;
    if (http__query(req, "limit", lim, sizeof lim) && (sp_parse_u64(lim, &limit) != 0 || limit > 100000)) {
        http__reply_error(h, req, 400, "limit: expected 0 to 100000");
        return 0;
    }
    json_t *q;
    if (engine_queue_status(e, (size_t)limit, &q) == 0) reply_doc(h, req, q);
    return 0;
}

/* POST /admin/queue/cancel {oldest: N} */
int http__queue_cancel(http_t *h, h2o_req_t *req)
{
    engine_t *e = ready(h, req);
    if (e == NULL) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    json_t *n = json_object_get(b, "oldest");
    if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 100000) {
        json_decref(b);
        http__reply_error(h, req, 400, "oldest: expected how many of the oldest queued jobs to cancel (1 to 100000)");
        return 0;
    }
    char err[300];
    http__op_t *op = http__op_new(h, req, 200);
    int rc = engine_queue_cancel_oldest(e, (size_t)json_integer_value(n), http__info(req)->actor, http__op_engine_done,
                                        op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

/* POST /admin/queue/promote {job: id} */
int http__queue_promote(http_t *h, h2o_req_t *req)
{
    engine_t *e = ready(h, req);
    if (e == NULL) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    char err[300];
    http__op_t *op = http__op_new(h, req, 200);
    int rc = engine_queue_promote(e, json_string_value(json_object_get(b, "job")), http__info(req)->actor,
                                  http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}
