/*
 * Requests that change something: they go to the engine (or the log) and
 * are answered only once their events are durable and the views have
 * applied them (read your writes).
 *
 * The engine completes on the log writer thread; the completion is
 * posted to the request's worker loop. The request may be gone by then
 * (client closed): a slot in the request's memory pool points at the op;
 * h2o clears the pool when the request dies, and the slot's dispose
 * callback detaches the op so it never touches a dead request.
 */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>

static void slot_dispose(void *ptr)
{
    http__op_t **slot = ptr;
    if (*slot) {
        (*slot)->req = NULL;
        (*slot)->slot = NULL;
    }
}

http__op_t *http__op_new(http_t *h, h2o_req_t *req, int http_status)
{
    http__worker_t *w = http__worker_of(req);
    http__op_t *op = sp_xcalloc(1, sizeof *op);
    op->w = w;
    op->req = req;
    op->http_status = http_status;
    op->slot = h2o_mem_alloc_shared(&req->pool, sizeof *op->slot, slot_dispose);
    *op->slot = op;
    w->inflight++;
    return op;
}

void http__op_free(http__op_t *op)
{
    if (op->slot) *op->slot = NULL;
    http__worker_t *w = op->w;
    json_decref(op->result);
    free(op->ctx);
    free(op);
    w->inflight--;
    http__check_drained(w);
}

static int status_for(int rc)
{
    switch (rc) {
    case SP_EFULL: return 507;
    case SP_EINVAL:
    case SP_ETOOBIG:
    case SP_EUNKNOWN_TYPE: return 400;
    case SP_ENOTFOUND: return 404;
    case SP_EEXIST: return 409;
    case SP_ECLOSED: return 409;
    default: return 503;
    }
}

int http__status_for(int rc) { return status_for(rc); }

static void finish(http__op_t *op)
{
    if (op->req) {
        if (op->reply) {
            op->reply(op, op->req);
        } else {
            char *text = json_dumps(op->result ? op->result : json_object(), JSON_COMPACT);
            sp_buf_t b = {(uint8_t *)text, text ? strlen(text) : 0, 0};
            http__reply_json(op->w->srv, op->req, op->http_status, &b);
            free(text);
        }
    }
    http__op_free(op);
}

void http__pending_flush(http__worker_t *w)
{
    http_t *h = w->srv;
    uint64_t applied = atomic_load(&h->applied);
    char msg[300];
    int failed = proj_failed(h->opts.proj, msg, sizeof msg);
    http__op_t **pp = &w->waiting;
    while (*pp) {
        http__op_t *op = *pp;
        if (op->seq <= applied) {
            *pp = op->next;
            finish(op);
        } else if (failed) {
            /* Durable, but the views will not show it: say so. */
            *pp = op->next;
            if (op->req)
                http__reply_error(h, op->req, 500, "done as sequence %llu, but projections stopped: %s",
                                  (unsigned long long)op->seq, msg);
            http__op_free(op);
        } else {
            pp = &op->next;
        }
    }
}

/* On the worker's loop: the engine (or log) has answered. */
static void on_loop(void *arg)
{
    http__op_t *op = arg;
    http__worker_t *w = op->w;
    http_t *h = w->srv;
    if (op->status != 0) {
        if (op->req) {
            char msg[300];
            log_errmsg(h->opts.log, msg, sizeof msg);
            http__reply_error(h, op->req, status_for(op->status), "failed: %s%s%s", sp_strerror(op->status),
                              msg[0] ? ": " : "", msg);
        }
        http__op_free(op);
        return;
    }
    if (op->seq == 0 || op->durable_only || op->seq <= atomic_load(&h->applied)) {
        finish(op);
        return;
    }
    op->next = w->waiting;
    w->waiting = op;
    http__pending_flush(w);
}

void http__op_engine_done(void *arg, int status, uint64_t seq, const json_t *result)
{
    http__op_t *op = arg;
    op->status = status;
    op->seq = seq;
    op->result = result ? json_deep_copy(result) : NULL;
    http__post(op->w, on_loop, op);
}

static void log_done(void *arg, int status, uint64_t first_seq)
{
    http__op_t *op = arg;
    op->status = status;
    op->seq = first_seq;
    op->result = json_pack("{s:I}", "sequence", (json_int_t)first_seq);
    http__post(op->w, on_loop, op);
}

/* POST /admin/log/append on the admin socket. */
int http__append(http_t *h, h2o_req_t *req)
{
    if (h->draining) {
        http__reply_error(h, req, 503, "server is shutting down");
        return 0;
    }
    char err[512];
    sp_buf_t body = {0};
    int type;
    int rc =
        ingest_append_request(req->entity.base ? req->entity.base : "", req->entity.len, &type, &body, err, sizeof err);
    if (rc != 0) {
        http__reply_error(h, req, status_for(rc), "%s", err);
        sp_buf_free(&body);
        return 0;
    }
    http__op_t *op = http__op_new(h, req, 201);
    char rid[37];
    sp_uuid4(rid);
    log_entry_t e = {.type = type, .actor = "cli", .request_id = rid, .body = sp_buf_slice(&body)};
    rc = log_append_cb(h->opts.log, &e, 1, log_done, op);
    sp_buf_free(&body);
    if (rc != 0) {
        http__reply_error(h, req, status_for(rc), "append refused: %s", sp_strerror(rc));
        http__op_free(op);
    }
    return 0;
}
