/* Private to src/http/. */
#ifndef SPOOL_HTTP_INTERNAL_H
#define SPOOL_HTTP_INTERNAL_H

#include "http.h"

#include <h2o.h>

typedef struct http__pending http__pending_t;

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
    uv_async_t views_async;   /* the projector applied more events */
    uv_async_t stop_async;    /* workers > 0: drain now */
    http__pending_t *waiting; /* appended, waiting for the views */
    size_t inflight;          /* appends waiting for the log or the views */
    size_t conns;             /* open client connections */

    bool draining, idle_grace, conns_abandoned, drained;
    uv_timer_t drain_timer;
    bool timer_init;
    int closing_handles;

    _Atomic uint64_t status_counts[600];
} http__worker_t;

struct http {
    http_opts_t opts;
    char listen[256];
    char admin_path[256];
    h2o_globalconf_t config;
    int port;
    int nworkers;
    http__worker_t *workers;

    _Atomic uint64_t applied; /* shared: views applied up to here */
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

/* The worker serving a request. */
http__worker_t *http__worker_of(h2o_req_t *req);

typedef enum { HTTP__PUBLIC = 0, HTTP__ADMIN = 1 } http__access_t;

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

/* Admin append: starts the append; replies later. */
int http__append(http_t *h, h2o_req_t *req);
void http__pending_flush(http__worker_t *w);
void http__check_drained(http__worker_t *w);
/* Sum of responses with this status over all workers. */
uint64_t http__status_count(http_t *h, int status);

#endif
