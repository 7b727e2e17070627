/*
 * The uploader of one task: a thread that sends, in order, what the
 * executor produced: step events (consecutive ones batched into one
 * request), output chunks (compressed here, off the executor's thread)
 * and at last the finish.
 *
 * Transient failures (no answer, 5xx, 429) are retried with exponential
 * backoff (100 ms doubling up to 5 s) for at most retry_budget_ms per
 * request; output chunks carry their seq, so a retry the server already
 * stored is acknowledged and ignored. Past the budget the server is
 * taken to be gone: its lease will lapse anyway, so the task is stopped
 * as LOST and nothing more is sent. 409 is the server saying the lease is
 * lost (404, an unknown task, too): the same. Other 4xx answers drop that
 * one request (logged): they
 * will not get better by repeating them.
 *
 * Backpressure: the queue holds at most HIGH_BYTES of output; past it the
 * sink tells the executor to stop reading, and the thread calls on_resume
 * when the queue is back under LOW_BYTES.
 */
#include "agent_internal.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <zstd.h>

#define HIGH_BYTES  (4u << 20)
#define LOW_BYTES   (2u << 20)
#define BACKOFF_MIN 100
#define BACKOFF_MAX 5000

typedef enum { IT_EVENT, IT_OUTPUT } kind_t;

typedef struct item {
    kind_t kind;
    int step, index;
    uint32_t seq;
    sp_buf_t data; /* event JSON, or a sealed msgpack chunk */
    struct item *next;
} item_t;

struct agent__report {
    agent__report_opts_t o;
    char *task_id, *lease, *esc_id, *esc_lease;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item_t *head, **tail;
    size_t bytes;
    bool paused, finishing, hurry, lost, cancel_sent;
    agent__status_t fin_status;
    char *fin_msg;
    pthread_t th;
    bool started;
    ZSTD_CCtx *cctx;
    sp_buf_t z;
};

static int64_t mono_ms(void) { return sp_mono_ns() / 1000000; }

static void free_item(item_t *it)
{
    sp_buf_free(&it->data);
    free(it);
}

/* Called with mu held. */
static void drop_all(agent__report_t *r)
{
    while (r->head) {
        item_t *it = r->head;
        r->head = it->next;
        free_item(it);
    }
    r->tail = &r->head;
    r->bytes = 0;
}

static void enqueue(agent__report_t *r, item_t *it)
{
    pthread_mutex_lock(&r->mu);
    if (r->lost) {
        pthread_mutex_unlock(&r->mu);
        free_item(it);
        return;
    }
    it->next = NULL;
    *r->tail = it;
    r->tail = &it->next;
    if (it->kind == IT_OUTPUT) r->bytes += it->data.n;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---- the sink the executor calls -------------------------------------- */

static void sink_started(void *arg, int step, int index, const char *name, const char *bash, int64_t at_ms)
{
    item_t *it = sp_xcalloc(1, sizeof *it);
    it->kind = IT_EVENT;
    sp_buf_printf(&it->data, "{\"type\":\"step_started\",\"step\":%d,\"index\":%d,\"name\":", step, index);
    sp_buf_add_json_str(&it->data, name, strlen(name));
    sp_buf_addstr(&it->data, ",\"bash_command\":");
    if (bash)
        sp_buf_add_json_str(&it->data, bash, strlen(bash));
    else
        sp_buf_addstr(&it->data, "null");
    sp_buf_printf(&it->data, ",\"at_ms\":%lld}", (long long)at_ms);
    enqueue(arg, it);
}

static void sink_finished(void *arg, int step, int index, const char *status, int code, int64_t at_ms)
{
    item_t *it = sp_xcalloc(1, sizeof *it);
    it->kind = IT_EVENT;
    sp_buf_printf(&it->data, "{\"type\":\"step_finished\",\"step\":%d,\"index\":%d,\"status\":\"%s\",", step, index,
                  status);
    if (code >= 0)
        sp_buf_printf(&it->data, "\"exit_code\":%d", code);
    else
        sp_buf_addstr(&it->data, "\"exit_code\":null");
    sp_buf_printf(&it->data, ",\"at_ms\":%lld}", (long long)at_ms);
    enqueue(arg, it);
}

static bool sink_output(void *arg, int step, int index, uint32_t seq, sp_buf_t *chunk)
{
    agent__report_t *r = arg;
    item_t *it = sp_xcalloc(1, sizeof *it);
    it->kind = IT_OUTPUT;
    it->step = step;
    it->index = index;
    it->seq = seq;
    it->data = *chunk;
    *chunk = (sp_buf_t){0};
    enqueue(r, it);
    pthread_mutex_lock(&r->mu);
    if (!r->lost && r->bytes > HIGH_BYTES) r->paused = true;
    bool full = r->paused;
    pthread_mutex_unlock(&r->mu);
    return full;
}

agent__sink_t agent__report_sink(agent__report_t *r)
{
    return (agent__sink_t){
        .arg = r, .step_started = sink_started, .output = sink_output, .step_finished = sink_finished};
}

/* ---- the thread --------------------------------------------------------- */

static void mark_lost(agent__report_t *r, const char *why)
{
    pthread_mutex_lock(&r->mu);
    bool first = !r->lost;
    r->lost = true;
    bool resume = r->paused;
    r->paused = false;
    drop_all(r);
    pthread_mutex_unlock(&r->mu);
    if (!first) return;
    sp_warn("agent", "task %s: %s; stopping it and dropping its results", r->task_id, why);
    if (r->o.on_stop) r->o.on_stop(r->o.cb_arg, AGENT__STOP_LOST);
    if (resume && r->o.on_resume) r->o.on_resume(r->o.cb_arg);
}

static void check_cancel(agent__report_t *r, const sp_buf_t *resp)
{
    if (resp->n == 0 || r->cancel_sent) return;
    json_t *o = json_loadb((const char *)resp->p, resp->n, 0, NULL);
    if (o != NULL && json_is_true(json_object_get(o, "cancel"))) {
        r->cancel_sent = true;
        sp_info("agent", "task %s: canceled by the server", r->task_id);
        if (r->o.on_stop) r->o.on_stop(r->o.cb_arg, AGENT__STOP_CANCEL);
    }
    json_decref(o);
}

typedef enum { SENT, REJECTED, GONE, CONFLICT } outcome_t;

/* One request with retries; resp holds the answer's body. */
static outcome_t send(agent__report_t *r, const char *path, const char *ctype, const void *body, size_t n,
                      sp_buf_t *resp)
{
    int64_t budget = r->o.retry_budget_ms > 0 ? r->o.retry_budget_ms : 60000;
    int64_t deadline = mono_ms() + budget, backoff = BACKOFF_MIN;
    for (;;) {
        long status = 0;
        resp->n = 0;
        int rc = r->o.post(r->o.post_arg, path, ctype, body, n, &status, resp);
        /* 409: the lease is gone; 404: the server does not know the task
         * at all. Either way nothing this task sends will be taken. */
        if (rc == 0 && (status == 409 || status == 404)) return CONFLICT;
        if (rc == 0 && status >= 200 && status < 300) return SENT;
        if (rc == 0 && status >= 400 && status < 500 && status != 429) {
            sp_warn("agent", "task %s: the server rejected %s with %ld: %.*s", r->task_id, path, status,
                    (int)(resp->n > 300 ? 300 : resp->n), resp->n ? (const char *)resp->p : "");
            return REJECTED;
        }
        if (rc == SP_ECLOSED) return GONE;
        /* Transient: wait out the backoff (enqueues wake the condition
         * too, so wait for the time itself), unless told to hurry. */
        int64_t until = mono_ms() + backoff;
        if (until > deadline) return GONE;
        pthread_mutex_lock(&r->mu);
        while (!r->hurry && mono_ms() < until) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t ns = ts.tv_nsec + (until - mono_ms()) * 1000000;
            ts.tv_sec += ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
        bool hurry = r->hurry;
        pthread_mutex_unlock(&r->mu);
        if (hurry) return GONE;
        backoff = backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : backoff * 2;
    }
}

static void send_events(agent__report_t *r, sp_buf_t *events, sp_buf_t *resp)
{
    sp_buf_t body = {0};
    sp_buf_addstr(&body, "{\"lease\":");
    sp_buf_add_json_str(&body, r->lease, strlen(r->lease));
    sp_buf_addstr(&body, ",\"events\":[");
    sp_buf_add(&body, events->p, events->n);
    sp_buf_addstr(&body, "]}");
    char *path = sp_xasprintf("/api/agent/v1/tasks/%s/events", r->esc_id);
    outcome_t oc = send(r, path, "application/json", body.p, body.n, resp);
    if (oc == SENT) check_cancel(r, resp);
    if (oc == CONFLICT)
        mark_lost(r, "the server refused step events: the lease is lost (409) or the task unknown (404)");
    if (oc == GONE) mark_lost(r, "the server did not take step events");
    free(path);
    sp_buf_free(&body);
}

static void send_output(agent__report_t *r, item_t *it, sp_buf_t *resp)
{
    if (agent__zstd_compress(r->cctx, r->o.zstd_level, it->data.p, it->data.n, &r->z) != 0) {
        sp_error("agent", "task %s: cannot compress an output chunk; dropped", r->task_id);
        return;
    }
    char *path = sp_xasprintf("/api/agent/v1/tasks/%s/output?lease=%s&step=%d&index=%d&seq=%u", r->esc_id, r->esc_lease,
                              it->step, it->index, it->seq);
    outcome_t oc = send(r, path, "application/zstd", r->z.p, r->z.n, resp);
    if (oc == SENT) check_cancel(r, resp);
    if (oc == CONFLICT) mark_lost(r, "the server refused output: the lease is lost (409) or the task unknown (404)");
    if (oc == GONE) mark_lost(r, "the server did not take output");
    free(path);
}

static void send_finish(agent__report_t *r, sp_buf_t *resp)
{
    sp_buf_t body = {0};
    sp_buf_addstr(&body, "{\"lease\":");
    sp_buf_add_json_str(&body, r->lease, strlen(r->lease));
    sp_buf_printf(&body, ",\"status\":\"%s\",\"message\":", agent__status_name(r->fin_status));
    if (r->fin_msg)
        sp_buf_add_json_str(&body, r->fin_msg, strlen(r->fin_msg));
    else
        sp_buf_addstr(&body, "null");
    sp_buf_addstr(&body, "}");
    char *path = sp_xasprintf("/api/agent/v1/tasks/%s/finish", r->esc_id);
    outcome_t oc = send(r, path, "application/json", body.p, body.n, resp);
    if (oc == SENT)
        sp_info("agent", "task %s: finished %s", r->task_id, agent__status_name(r->fin_status));
    else if (oc == CONFLICT)
        sp_warn("agent",
                "task %s: the server refused the finish: the lease was lost (409) or the task is unknown (404)",
                r->task_id);
    else if (oc == GONE)
        sp_error("agent", "task %s: could not send its finish (%s); the server will fail it when its lease lapses",
                 r->task_id, agent__status_name(r->fin_status));
    free(path);
    sp_buf_free(&body);
}

static void *report_main(void *arg)
{
    agent__report_t *r = arg;
    sp_buf_t events = {0}, resp = {0};
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->head == NULL && !r->finishing) pthread_cond_wait(&r->cv, &r->mu);
        if (r->head == NULL) break;
        item_t *it = r->head;
        if (it->kind == IT_EVENT) {
            /* Every event waiting goes in one request. */
            events.n = 0;
            while (r->head && r->head->kind == IT_EVENT) {
                item_t *e = r->head;
                r->head = e->next;
                if (events.n) sp_buf_add(&events, ",", 1);
                sp_buf_add(&events, e->data.p, e->data.n);
                free_item(e);
            }
            if (r->head == NULL) r->tail = &r->head;
            pthread_mutex_unlock(&r->mu);
            send_events(r, &events, &resp);
        } else {
            r->head = it->next;
            if (r->head == NULL) r->tail = &r->head;
            pthread_mutex_unlock(&r->mu);
            send_output(r, it, &resp);
            pthread_mutex_lock(&r->mu);
            r->bytes = r->bytes >= it->data.n ? r->bytes - it->data.n : 0;
            pthread_mutex_unlock(&r->mu);
            free_item(it);
        }
        pthread_mutex_lock(&r->mu);
        if (r->paused && r->bytes <= LOW_BYTES) {
            r->paused = false;
            pthread_mutex_unlock(&r->mu);
            if (r->o.on_resume) r->o.on_resume(r->o.cb_arg);
            pthread_mutex_lock(&r->mu);
        }
    }
    bool lost = r->lost;
    pthread_mutex_unlock(&r->mu);
    if (!lost) send_finish(r, &resp);
    sp_buf_free(&events);
    sp_buf_free(&resp);
    return NULL;
}

/* ---- the public face ------------------------------------------------------ */

int agent__report_new(agent__report_t **out, const agent__report_opts_t *o)
{
    if (o->task_id == NULL || o->lease == NULL || o->post == NULL) return SP_EINVAL;
    agent__report_t *r = sp_xcalloc(1, sizeof *r);
    r->o = *o;
    if (r->o.zstd_level == 0) r->o.zstd_level = 3;
    r->task_id = sp_xstrdup(o->task_id);
    r->lease = sp_xstrdup(o->lease);
    r->esc_id = hc_escape(o->task_id);
    r->esc_lease = hc_escape(o->lease);
    r->tail = &r->head;
    r->cctx = ZSTD_createCCtx();
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = r->cctx ? pthread_create(&r->th, NULL, report_main, r) : ENOMEM;
    if (rc != 0) {
        if (r->cctx) ZSTD_freeCCtx(r->cctx);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r->task_id), free(r->lease), free(r->esc_id), free(r->esc_lease);
        free(r);
        return -rc;
    }
    r->started = true;
    sp_handle_opened();
    *out = r;
    return 0;
}

void agent__report_finish(agent__report_t *r, agent__status_t status, const char *message)
{
    pthread_mutex_lock(&r->mu);
    if (!r->finishing) {
        r->finishing = true;
        r->fin_status = status;
        if (status == AGENT__LOST) r->lost = true;
        r->fin_msg = message ? sp_xstrdup(message) : NULL;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
    if (r->started) {
        pthread_join(r->th, NULL);
        r->started = false;
    }
}

void agent__report_hurry(agent__report_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->hurry = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

bool agent__report_lost(agent__report_t *r)
{
    pthread_mutex_lock(&r->mu);
    bool lost = r->lost;
    pthread_mutex_unlock(&r->mu);
    return lost;
}

void agent__report_free(agent__report_t *r)
{
    if (r == NULL) return;
    if (r->started) agent__report_finish(r, AGENT__LOST, NULL);
    drop_all(r);
    ZSTD_freeCCtx(r->cctx);
    sp_buf_free(&r->z);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->task_id);
    free(r->lease);
    free(r->esc_id);
    free(r->esc_lease);
    free(r->fin_msg);
    free(r);
    sp_handle_closed();
}
