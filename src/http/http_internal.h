/* Private to src/http/. */
#ifndef SPOOL_HTTP_INTERNAL_H
#define SPOOL_HTTP_INTERNAL_H

#include "http.h"

#include "../ingest/engine.h"

#include <pthread.h>

#include <h2o.h>

typedef struct http__op http__op_t;

/* Who may call a route:
 *  PUBLIC      anyone (health, webhooks with their own signature check)
 *  ADMIN       the admin unix socket only (the CLI)
 *  USER        a valid API token, or the admin socket
 *  ADMIN_ROLE  a token with the admin role, or the admin socket
 *  AGENT       an agent (or admin) token, or the admin socket (the local fleet) */
typedef enum { HTTP__PUBLIC = 0, HTTP__ADMIN, HTTP__USER, HTTP__ADMIN_ROLE, HTTP__AGENT } http__access_t;

#define HTTP__MAX_PARAMS 8

/* What the dispatcher learned about the request being handled. Valid only
 * during the handler's synchronous call: copy what outlives it. */
typedef struct {
    h2o_iovec_t params[HTTP__MAX_PARAMS]; /* ":name" segments of the route, in order */
    int nparams;
    char role[16];  /* "admin", "user", "agent" or "" (anonymous) */
    char actor[80]; /* "user:<token id>", "cli" ... for the log */
    bool admin_socket;
} http__reqinfo_t;

/* One event loop serving HTTP. Worker 0 runs on the caller's loop and
 * also owns the unix sockets; the others run on their own threads, each
 * with its own loop, h2o context and SO_REUSEPORT listener, so the kernel
 * spreads connections across cores. Nothing here is shared between
 * workers except through the server (http_t) fields marked so. */
typedef struct {
    http_t *srv;
    int index;
    uv_loop_t *loop;
    uv_loop_t own_loop; /* workers > 0 */
    uv_thread_t thread;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t tcp;
    uv_pipe_t pipe_tcp; /* worker 0 when listen is "unix:..." */
    uv_pipe_t admin;    /* worker 0 */
    bool tcp_open, pipe_tcp_open, admin_open;

    log_ack_t *ack;
    uv_async_t views_async; /* the projector applied more events */
    uv_async_t stop_async;  /* workers > 0: drain now */
    http__op_t *waiting;    /* done, waiting for the views to show it */
    void *claims;           /* agents' claims waiting for a task (agent_api.c) */
    void *sse;              /* live output streams (api_read.c) */
    size_t inflight;        /* appends waiting for the log or the views */
    size_t conns;           /* open client connections */

    bool draining, idle_grace, conns_abandoned, drained;
    uv_timer_t drain_timer;
    bool timer_init;
    int closing_handles;

    _Atomic uint64_t status_counts[600];

    http__reqinfo_t cur; /* the request being dispatched (loop thread only) */

    /* mailbox: functions other threads ask this loop to run */
    uv_async_t mail_async;
    pthread_mutex_t mail_mu;
    struct http__mail *mail_head, *mail_tail;
    bool gone; /* handles closed: post nothing more (under mail_mu) */
} http__worker_t;

struct http {
    http_opts_t opts;
    char listen[256];
    char admin_path[256];
    char base_url[256];
    h2o_globalconf_t config;
    int port;
    int nworkers;
    http__worker_t *workers;

    _Atomic uint64_t applied;   /* shared: views applied up to here */
    _Atomic(engine_t *) engine; /* set once the engine is open (http_set_engine) */
    uint64_t ready_at;
    int64_t started_ns;

    /* drain orchestration, on worker 0's loop */
    bool draining;
    bool closed; /* http_close ran; the last handle closed frees h */
    void (*drained_cb)(void *);
    void *drained_arg;
    uv_async_t joined_async; /* a worker thread finished draining */
    _Atomic int workers_running;
};

/* The engine, or NULL while the server starts. */
static inline engine_t *http__engine(http_t *h) { return atomic_load(&h->engine); }

/* The worker serving a request. */
http__worker_t *http__worker_of(h2o_req_t *req);
/* The request's route parameter i (0-based), or an empty iovec. */
h2o_iovec_t http__param(h2o_req_t *req, int i);
/* Copies parameter i into buf (NUL-terminated); false if it does not fit. */
bool http__param_str(h2o_req_t *req, int i, char *buf, size_t n);
const http__reqinfo_t *http__info(h2o_req_t *req);
/* Runs fn(arg) on w's loop thread soon. Any thread may call it. */
void http__post(http__worker_t *w, void (*fn)(void *arg), void *arg);

typedef int (*http__handler_cb)(http_t *h, h2o_req_t *req);

typedef struct {
    const char *method;
    const char *path;
    http__handler_cb handler;
    http__access_t access;
} http__route_t;

extern const http__route_t http__routes[];
extern const size_t http__nroutes;

/* Replies with body (copied) and a Content-Length. */
void http__reply(http_t *h, h2o_req_t *req, int status, const char *ctype, const void *body, size_t len);
/* Replies {"message": msg} with status. */
void http__reply_error(http_t *h, h2o_req_t *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void http__reply_json(http_t *h, h2o_req_t *req, int status, const sp_buf_t *json);

/* A request that changes something, answered once durable and visible
 * in the views (ops.c), or once durable when durable_only is set. */
typedef void (*http__op_reply_cb)(http__op_t *op, h2o_req_t *req);
struct http__op {
    http__op_t *next; /* in the worker's waiting list */
    http__worker_t *w;
    h2o_req_t *req;          /* NULL once the client is gone */
    http__op_t **slot;       /* in req->pool; NULL once detached */
    int status;              /* SP_E* result of the command */
    uint64_t seq;            /* its last event (0: appended nothing) */
    json_t *result;          /* owned */
    int http_status;         /* for success */
    http__op_reply_cb reply; /* optional: builds the reply itself */
    void *ctx;               /* freed with the op */
    bool durable_only;       /* the caller never reads the views (agents) */
};
http__op_t *http__op_new(http_t *h, h2o_req_t *req, int http_status);
void http__op_free(http__op_t *op);
/* engine_done_cb for an op (any thread). */
void http__op_engine_done(void *arg, int status, uint64_t seq, const json_t *result);
int http__status_for(int rc);
/* The normalized project slug ("gh/ORG/REPO") of the route's first three
 * parameters (vcs "gh" or "github"); false when malformed. */
bool http__route_slug(h2o_req_t *req, char *slug, size_t n);

/* Handlers (one per route; see routes.c) */
int http__append(http_t *h, h2o_req_t *req);
int http__token_create(http_t *h, h2o_req_t *req);
int http__token_revoke(http_t *h, h2o_req_t *req);
int http__project_add(http_t *h, h2o_req_t *req);
int http__project_follow(http_t *h, h2o_req_t *req);
int http__project_unfollow(http_t *h, h2o_req_t *req);
int http__project_stop(http_t *h, h2o_req_t *req);
int http__project_resume(http_t *h, h2o_req_t *req);
int http__pipeline_trigger(http_t *h, h2o_req_t *req);
int http__webhook_github(http_t *h, h2o_req_t *req);
int http__agent_register(http_t *h, h2o_req_t *req);
int http__agent_claim(http_t *h, h2o_req_t *req);
int http__agent_events(http_t *h, h2o_req_t *req);
int http__agent_output(http_t *h, h2o_req_t *req);
int http__agent_finish(http_t *h, h2o_req_t *req);
int http__agent_heartbeat(http_t *h, h2o_req_t *req);
int http__workflow_cancel(http_t *h, h2o_req_t *req);
int http__workflow_approve(http_t *h, h2o_req_t *req);
int http__workflow_rerun(http_t *h, h2o_req_t *req);
int http__job_cancel(http_t *h, h2o_req_t *req);
int http__job_cancel_by_id(http_t *h, h2o_req_t *req);
int http__project_settings(http_t *h, h2o_req_t *req);
int http__nodes(http_t *h, h2o_req_t *req);
int http__node_drain(http_t *h, h2o_req_t *req);
int http__node_undrain(http_t *h, h2o_req_t *req);
int http__queue(http_t *h, h2o_req_t *req);
int http__queue_cancel(http_t *h, h2o_req_t *req);
int http__queue_promote(http_t *h, h2o_req_t *req);
/* Answers every waiting agent claim (at drain). */
void http__claims_cancel(http__worker_t *w);
/* Query string value (copied); false when absent or too long. */
bool http__query(h2o_req_t *req, const char *key, char *out, size_t n);
void http__pending_flush(http__worker_t *w);
/* Sends what the views gained to the worker's live output streams. */
void http__sse_flush(http__worker_t *w);
void http__check_drained(http__worker_t *w);
/* Sum of responses with this status over all workers. */
uint64_t http__status_count(http_t *h, int status);

#endif
