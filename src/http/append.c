/*
 * POST /admin/log/append on the admin socket: validate through ingest,
 * append through the writer, and answer only once the batch is durable
 * and the views have applied it (read your writes).
 *
 * The request may be gone (client closed) by the time the log answers.
 * A slot in the request's memory pool points at our pending record;
 * h2o clears the pool when the request dies, and the slot's dispose
 * callback then detaches the record so we never touch a dead request.
 */
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>

struct http__pending {
    http__pending_t *next;
    http__worker_t *w;
    h2o_req_t *req;         /* NULL once the client is gone */
    http__pending_t **slot; /* in req->pool; NULL once detached */
    uint64_t seq;
};

static void slot_dispose(void *ptr)
{
    http__pending_t **slot = ptr;
    if (*slot) {
        (*slot)->req = NULL;
        (*slot)->slot = NULL;
    }
}

static void pending_free(http__pending_t *p)
{
    if (p->slot) *p->slot = NULL;
    http__worker_t *w = p->w;
    free(p);
    w->inflight--;
    http__check_drained(w);
}

static void reply_done(http__pending_t *p)
{
    if (p->req) {
        sp_buf_t b = {0};
        sp_buf_printf(&b, "{\"sequence\":%llu}", (unsigned long long)p->seq);
        http__reply_json(p->w->srv, p->req, 201, &b);
        sp_buf_free(&b);
    }
    pending_free(p);
}

void http__pending_flush(http__worker_t *w)
{
    http_t *h = w->srv;
    uint64_t applied = atomic_load(&h->applied);
    char msg[300];
    int failed = proj_failed(h->opts.proj, msg, sizeof msg);
    http__pending_t **pp = &w->waiting;
    while (*pp) {
        http__pending_t *p = *pp;
        if (p->seq <= applied) {
            *pp = p->next;
            reply_done(p);
        } else if (failed) {
            /* Durable, but the views will not show it: say so. */
            *pp = p->next;
            if (p->req)
                http__reply_error(h, p->req, 500, "appended as sequence %llu, but projections stopped: %s",
                                  (unsigned long long)p->seq, msg);
            pending_free(p);
        } else {
            pp = &p->next;
        }
    }
}

static int status_for(int rc)
{
    switch (rc) {
    case SP_EFULL: return 507;
    case SP_EINVAL:
    case SP_ETOOBIG:
    case SP_EUNKNOWN_TYPE: return 400;
    default: return 503;
    }
}

static void on_appended(void *arg, int status, uint64_t first_seq)
{
    http__pending_t *p = arg;
    http__worker_t *w = p->w;
    http_t *h = w->srv;
    if (status != 0) {
        if (p->req) {
            char msg[300];
            log_errmsg(h->opts.log, msg, sizeof msg);
            http__reply_error(h, p->req, status_for(status), "append failed: %s%s%s", sp_strerror(status),
                              msg[0] ? ": " : "", msg);
        }
        pending_free(p);
        return;
    }
    p->seq = first_seq;
    p->next = w->waiting;
    w->waiting = p;
    http__pending_flush(w);
}

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
    http__worker_t *w = http__worker_of(req);
    http__pending_t *p = sp_xcalloc(1, sizeof *p);
    p->w = w;
    p->req = req;
    p->slot = h2o_mem_alloc_shared(&req->pool, sizeof *p->slot, slot_dispose);
    *p->slot = p;
    char rid[37];
    sp_uuid4(rid);
    log_entry_t e = {.type = type, .actor = "cli", .request_id = rid, .body = sp_buf_slice(&body)};
    rc = log_append_async(h->opts.log, w->ack, &e, 1, on_appended, p);
    sp_buf_free(&body);
    if (rc != 0) {
        *p->slot = NULL;
        free(p);
        http__reply_error(h, req, status_for(rc), "append refused: %s", sp_strerror(rc));
        return 0;
    }
    w->inflight++;
    return 0;
}
