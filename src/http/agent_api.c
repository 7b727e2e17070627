/* The server side of the agent protocol (docs/agent-protocol.md). */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>

#define CLAIM_WAIT_MAX_MS     60000
#define CLAIM_WAIT_DEFAULT_MS 30000

static json_t *body_object(http_t *h, h2o_req_t *req)
{
    json_error_t je;
    json_t *b = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &je);
    if (b == NULL || !json_is_object(b)) {
        http__reply_error(h, req, 400, "the body must be a JSON object%s%s", b ? "" : ": ", b ? "" : je.text);
        json_decref(b);
        return NULL;
    }
    return b;
}

/* Value of key in the query string (copied into out), or false. */
static bool query(h2o_req_t *req, const char *key, char *out, size_t n)
{
    if (req->query_at == SIZE_MAX) return false;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t kn = strlen(key);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) > kn && memcmp(q, key, kn) == 0 && q[kn] == '=') {
            size_t vn = (size_t)(stop - q - kn - 1);
            if (vn >= n) return false;
            memcpy(out, q + kn + 1, vn);
            out[vn] = 0;
            return true;
        }
        q = stop + 1;
    }
    return false;
}

bool http__query(h2o_req_t *req, const char *key, char *out, size_t n) { return query(req, key, out, n); }

static bool ready(http_t *h, h2o_req_t *req)
{
    if (http__engine(h)) return true;
    http__reply_error(h, req, 503, "the server is starting: try again shortly");
    return false;
}

int http__agent_register(http_t *h, h2o_req_t *req)
{
    if (!ready(h, req)) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    /* Agents on the admin socket are the server's own local fleet: the
     * machine's load is the server's business, so they count slots only. */
    if (http__info(req)->admin_socket && json_object_get(b, "resources") == NULL)
        json_object_set_new(b, "resources", json_false());
    char err[300];
    http__op_t *op = http__op_new(h, req, 201);
    op->durable_only = true; /* agents read nothing back from the views */
    int rc = engine_agent_register(http__engine(h), b, http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) {
        http__reply_error(h, req, http__status_for(rc), "%s", err);
        http__op_free(op);
    }
    return 0;
}

/* ---- claims (long poll) ---- */

typedef struct claim_wait {
    uv_timer_t timer;
    http__op_t *op;
    engine_claim_t *claim;
    json_t *task; /* set by the engine's callback */
    bool answered;
    struct claim_wait *next; /* the worker's open claims */
} claim_wait_t;

static void free_wait(uv_handle_t *t) { free(t->data); }

static void unlist(claim_wait_t *cw)
{
    claim_wait_t **pp = (claim_wait_t **)&cw->op->w->claims;
    while (*pp && *pp != cw) pp = &(*pp)->next;
    if (*pp) *pp = cw->next;
}

/* On the loop: the engine gave a task, or the claim was withdrawn. */
static void claim_answered(void *arg)
{
    claim_wait_t *cw = arg;
    http__op_t *op = cw->op;
    unlist(cw);
    if (op->req) {
        if (cw->task) {
            json_t *r = json_pack("{s:O}", "task", cw->task);
            char *text = json_dumps(r, JSON_COMPACT);
            sp_buf_t b = {(uint8_t *)text, strlen(text), 0};
            http__reply_json(op->w->srv, op->req, 200, &b);
            free(text);
            json_decref(r);
        } else {
            http__reply(op->w->srv, op->req, 204, "application/json; charset=utf-8", "", 0);
        }
    }
    json_decref(cw->task);
    http__op_free(op);
    uv_timer_stop(&cw->timer);
    cw->timer.data = cw;
    uv_close((uv_handle_t *)&cw->timer, free_wait);
}

/* Any thread: the engine's answer to the claim. */
static void on_claim(void *arg, const json_t *task)
{
    claim_wait_t *cw = arg;
    cw->task = task ? json_deep_copy(task) : NULL;
    http__post(cw->op->w, claim_answered, cw);
}

static void on_claim_timeout(uv_timer_t *t)
{
    claim_wait_t *cw = sp_container_of(t, claim_wait_t, timer);
    /* If the claim was already given a task, its answer is on its way. */
    engine_claim_cancel(http__engine(cw->op->w->srv), cw->claim);
}

/* Drain: answer every waiting claim at once. */
void http__claims_cancel(http__worker_t *w)
{
    for (claim_wait_t *cw = w->claims; cw; cw = cw->next) uv_timer_start(&cw->timer, on_claim_timeout, 0, 0);
}

int http__agent_claim(http_t *h, h2o_req_t *req)
{
    if (!ready(h, req)) return 0;
    if (h->draining) {
        http__reply_error(h, req, 503, "server is shutting down");
        return 0;
    }
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    char wait_s[32], err[300];
    uint64_t wait_ms = CLAIM_WAIT_DEFAULT_MS;
    if (query(req, "wait_ms", wait_s, sizeof wait_s) &&
        (sp_parse_u64(wait_s, &wait_ms) != 0 || wait_ms > CLAIM_WAIT_MAX_MS)) {
        json_decref(b);
        http__reply_error(h, req, 400, "wait_ms: expected 0 to %d", CLAIM_WAIT_MAX_MS);
        return 0;
    }
    const char *agent = json_string_value(json_object_get(b, "agent_id"));
    http__op_t *op = http__op_new(h, req, 200);
    op->durable_only = true; /* agents read nothing back from the views */
    claim_wait_t *cw = sp_xcalloc(1, sizeof *cw);
    cw->op = op;
    uv_timer_init(op->w->loop, &cw->timer);
    int rc = engine_claim(http__engine(h), agent, on_claim, cw, &cw->claim, err, sizeof err);
    json_decref(b);
    if (rc != 0) {
        http__reply_error(h, req, http__status_for(rc), "%s", err);
        http__op_free(op);
        cw->timer.data = cw;
        uv_close((uv_handle_t *)&cw->timer, free_wait);
        return 0;
    }
    cw->next = op->w->claims;
    op->w->claims = cw;
    uv_timer_start(&cw->timer, on_claim_timeout, wait_ms, 0);
    return 0;
}

/* ---- task reports ---- */

static bool task_id(http_t *h, h2o_req_t *req, char id[PROJ_ID_MAX])
{
    if (http__param_str(req, 0, id, PROJ_ID_MAX)) return true;
    http__reply_error(h, req, 400, "task id too long");
    return false;
}

static void refused(http_t *h, h2o_req_t *req, http__op_t *op, int rc, const char *err)
{
    http__reply_error(h, req, http__status_for(rc), "%s", err);
    http__op_free(op);
}

int http__agent_events(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX], err[300];
    if (!ready(h, req) || !task_id(h, req, id)) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    http__op_t *op = http__op_new(h, req, 200);
    op->durable_only = true; /* agents read nothing back from the views */
    int rc = engine_task_events(http__engine(h), id, json_string_value(json_object_get(b, "lease")),
                                json_object_get(b, "events"), http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

int http__agent_output(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX], err[300], lease[128], step_s[16], index_s[16], seq_s[16];
    if (!ready(h, req) || !task_id(h, req, id)) return 0;
    uint64_t step, index, seq;
    if (!query(req, "lease", lease, sizeof lease) || !query(req, "step", step_s, sizeof step_s) ||
        !query(req, "index", index_s, sizeof index_s) || !query(req, "seq", seq_s, sizeof seq_s) ||
        sp_parse_u64(step_s, &step) || sp_parse_u64(index_s, &index) || sp_parse_u64(seq_s, &seq) || step > 100000 ||
        index > 1000 || seq > UINT32_MAX) {
        http__reply_error(h, req, 400, "expected query parameters lease, step, index and seq");
        return 0;
    }
    http__op_t *op = http__op_new(h, req, 200);
    op->durable_only = true; /* agents read nothing back from the views */
    int rc = engine_task_output(http__engine(h), id, lease, (int)step, (int)index, (uint32_t)seq,
                                (sp_slice_t){(const uint8_t *)req->entity.base, req->entity.len}, http__op_engine_done,
                                op, err, sizeof err);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

int http__agent_finish(http_t *h, h2o_req_t *req)
{
    char id[PROJ_ID_MAX], err[300];
    if (!ready(h, req) || !task_id(h, req, id)) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    http__op_t *op = http__op_new(h, req, 200);
    op->durable_only = true; /* agents read nothing back from the views */
    int rc =
        engine_task_finish(http__engine(h), id, json_string_value(json_object_get(b, "lease")),
                           json_string_value(json_object_get(b, "status")),
                           json_string_value(json_object_get(b, "message")), http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}

int http__agent_heartbeat(http_t *h, h2o_req_t *req)
{
    char err[300];
    if (!ready(h, req)) return 0;
    json_t *b = body_object(h, req);
    if (b == NULL) return 0;
    json_t *running = json_object_get(b, "running");
    if (running && !json_is_array(running)) {
        json_decref(b);
        http__reply_error(h, req, 400, "running: expected a list of task ids");
        return 0;
    }
    http__op_t *op = http__op_new(h, req, 200);
    op->durable_only = true; /* agents read nothing back from the views */
    int rc = engine_heartbeat(http__engine(h), json_string_value(json_object_get(b, "agent_id")),
                              running ? running : json_array(), http__op_engine_done, op, err, sizeof err);
    json_decref(b);
    if (rc != 0) refused(h, req, op, rc, err);
    return 0;
}
