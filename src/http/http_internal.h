/* Private to src/http/. */
#ifndef SPOOL_HTTP_INTERNAL_H
#define SPOOL_HTTP_INTERNAL_H

#include "http.h"

#include <h2o.h>

typedef struct http__pending http__pending_t;

struct http {
    http_opts_t opts;
    char listen[256];
    char admin_path[256];
    h2o_globalconf_t config;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    uv_tcp_t tcp;
    uv_pipe_t pipe_tcp; /* when listen is "unix:..." */
    uv_pipe_t admin;
    bool tcp_open, pipe_tcp_open, admin_open;
    int port;

    log_ack_t *ack;
    uv_async_t views_async; /* the projector applied more events */
    _Atomic uint64_t applied;
    http__pending_t *waiting; /* appended, waiting for the views */
    size_t inflight;          /* appends waiting for the log or the views */
    size_t conns;             /* open client connections */

    bool draining, idle_grace, conns_abandoned;
    void (*drained_cb)(void *);
    void *drained_arg;
    uv_timer_t drain_timer;

    uint64_t ready_at;
    int64_t started_ns;
    uint64_t status_counts[600];
};

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
void http__pending_flush(http_t *h);
void http__check_drained(http_t *h);

#endif
