/* Listeners, request dispatch, replies, and orderly shutdown. */
#include "http_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY (8u << 20)
#define DRAIN_GRACE_MS   10000
#define IDLE_GRACE_MS    1000

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
    }
}

void http__reply(http_t *h, h2o_req_t *req, int status, const char *ctype, const void *body, size_t len)
{
    static h2o_generator_t generator = {NULL, NULL};
    if (status >= 100 && status < 600) h->status_counts[status]++;
    req->res.status = status;
    req->res.reason = reason_of(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL,
                          H2O_STRLIT("nosniff"));
    h2o_iovec_t buf = h2o_strdup(&req->pool, body, len);
    h2o_start_response(req, &generator);
    if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

void http__reply_json(http_t *h, h2o_req_t *req, int status, const sp_buf_t *json)
{
    http__reply(h, req, status, "application/json; charset=utf-8", json->p, json->n);
}

void http__reply_error(http_t *h, h2o_req_t *req, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sp_buf_t b = {0};
    sp_buf_addstr(&b, "{\"message\":");
    sp_buf_add_json_str(&b, msg, strlen(msg));
    sp_buf_addstr(&b, "}");
    http__reply_json(h, req, status, &b);
    sp_buf_free(&b);
}

static bool on_admin_socket(h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t n = req->conn->callbacks->get_sockname(req->conn, (struct sockaddr *)&ss);
    return n > 0 && ss.ss_family == AF_UNIX;
}

/* A path is usable when it is plain: no percent-escapes that decode to
 * control characters and no invalid escapes. */
static bool path_ok(h2o_iovec_t p)
{
    for (size_t i = 0; i < p.len; i++) {
        unsigned char c = (unsigned char)p.base[i];
        if (c < 0x20 || c == 0x7f) return false;
        if (c == '%') {
            if (i + 2 >= p.len || !isxdigit((unsigned char)p.base[i + 1]) || !isxdigit((unsigned char)p.base[i + 2]))
                return false;
        }
    }
    return true;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    http_t *h = *(http_t **)(self + 1);
    h2o_iovec_t path = req->path_normalized;
    if (!path_ok(req->path)) {
        http__reply_error(h, req, 400, "malformed request path");
        return 0;
    }
    bool path_found = false;
    for (size_t i = 0; i < http__nroutes; i++) {
        const http__route_t *r = &http__routes[i];
        if (!h2o_memis(path.base, path.len, r->path, strlen(r->path))) continue;
        if (r->access == HTTP__ADMIN && !on_admin_socket(req)) continue;
        path_found = true;
        bool head_ok =
            strcmp(r->method, "GET") == 0 && h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
        if (!head_ok && !h2o_memis(req->method.base, req->method.len, r->method, strlen(r->method))) continue;
        return r->handler(h, req);
    }
    if (path_found) {
        http__reply_error(h, req, 405, "method %.*s is not allowed on %.*s", (int)req->method.len, req->method.base,
                          (int)path.len, path.base);
        return 0;
    }
    http__reply_error(h, req, 404, "no such path: %.*s", (int)path.len, path.base);
    return 0;
}

/* ---- listeners ---- */

/* A client connection's uv handle, with a way back to the server so the
 * server can count open connections (h2o owns the handle's data field). */
typedef struct {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    http_t *h;
} conn_t;

static void on_conn_closed(uv_handle_t *handle)
{
    conn_t *c = (conn_t *)handle;
    http_t *h = c->h;
    free(c);
    h->conns--;
    http__check_drained(h);
}

static void accept_conn(http_t *h, uv_stream_t *listener, bool is_pipe)
{
    conn_t *c = sp_xcalloc(1, sizeof *c);
    c->h = h;
    if (is_pipe) {
        uv_pipe_init(listener->loop, &c->u.pipe, 0);
    } else {
        uv_tcp_init(listener->loop, &c->u.tcp);
        uv_tcp_nodelay(&c->u.tcp, 1);
    }
    h->conns++;
    uv_stream_t *conn = (uv_stream_t *)&c->u;
    if (uv_accept(listener, conn) != 0) {
        uv_close((uv_handle_t *)conn, on_conn_closed);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create(conn, on_conn_closed);
    h2o_accept(&h->accept_ctx, sock);
}

static void on_tcp_conn(uv_stream_t *listener, int status)
{
    if (status != 0) return;
    accept_conn(sp_container_of((uv_tcp_t *)listener, http_t, tcp), listener, false);
}

static void on_pipe_conn(uv_stream_t *listener, int status)
{
    if (status != 0) return;
    accept_conn(sp_container_of((uv_pipe_t *)listener, http_t, pipe_tcp), listener, true);
}

static void on_admin_conn(uv_stream_t *listener, int status)
{
    if (status != 0) return;
    accept_conn(sp_container_of((uv_pipe_t *)listener, http_t, admin), listener, true);
}

static int listen_pipe(uv_loop_t *loop, uv_pipe_t *p, const char *path, uv_connection_cb cb, char *err, size_t errlen)
{
    int rc = uv_pipe_init(loop, p, 0);
    if (rc != 0) goto fail;
    /* A stale socket file from a crashed server would make bind fail;
     * the log's writer lock already proved no other server is live. */
    unlink(path);
    mode_t old = umask(0077);
    rc = uv_pipe_bind(p, path);
    umask(old);
    if (rc == 0) rc = uv_listen((uv_stream_t *)p, 128, cb);
    if (rc != 0) {
        uv_close((uv_handle_t *)p, NULL);
        goto fail;
    }
    chmod(path, 0600);
    return 0;
fail:
    snprintf(err, errlen, "cannot listen on %s: %s", path, uv_strerror(rc));
    return rc;
}

static int parse_addr(const char *listen, struct sockaddr_storage *ss)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || colon == listen) return UV_EINVAL;
    uint64_t port;
    if (sp_parse_u64(colon + 1, &port) != 0 || port > 65535) return UV_EINVAL;
    size_t hn = (size_t)(colon - listen);
    if (listen[0] == '[' && colon[-1] == ']') {
        if (hn - 2 >= sizeof host) return UV_EINVAL;
        memcpy(host, listen + 1, hn - 2);
        host[hn - 2] = 0;
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
    }
    if (hn >= sizeof host) return UV_EINVAL;
    memcpy(host, listen, hn);
    host[hn] = 0;
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
}

static int listen_tcp(http_t *h, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int rc = parse_addr(h->listen, &ss);
    if (rc != 0) {
        snprintf(err, errlen, "bad listen address \"%s\": expected ADDR:PORT", h->listen);
        return SP_EINVAL;
    }
    uv_tcp_init(h->opts.loop, &h->tcp);
    h->tcp_open = true;
    if ((rc = uv_tcp_bind(&h->tcp, (struct sockaddr *)&ss, 0)) == 0)
        rc = uv_listen((uv_stream_t *)&h->tcp, 1024, on_tcp_conn);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", h->listen, uv_strerror(rc));
        return rc;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&h->tcp, (struct sockaddr *)&bound, &blen);
    h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

/* ---- views notifications ---- */

static void on_views_applied(void *arg, uint64_t applied)
{
    http_t *h = arg;
    atomic_store(&h->applied, applied);
    uv_async_send(&h->views_async);
}

static void on_views_async(uv_async_t *a)
{
    http_t *h = sp_container_of(a, http_t, views_async);
    http__pending_flush(h);
}

static void teardown(http_t *h);

int http_open(http_t **out, const http_opts_t *opts, char *errbuf, size_t errlen)
{
    http_t *h = sp_xcalloc(1, sizeof *h);
    h->opts = *opts;
    snprintf(h->listen, sizeof h->listen, "%s", opts->listen ? opts->listen : "127.0.0.1:8080");
    h->opts.listen = h->listen;
    if (opts->admin_socket) {
        if (strlen(opts->admin_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(errbuf, errlen, "admin socket path too long: %s", opts->admin_socket);
            free(h);
            return SP_EINVAL;
        }
        snprintf(h->admin_path, sizeof h->admin_path, "%s", opts->admin_socket);
    }
    h->started_ns = sp_mono_ns();
    /* Ready once the views reflect everything logged before we started. */
    h->ready_at = log_head(opts->log);

    h2o_config_init(&h->config);
    h->config.max_request_entity_size = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
    h2o_hostconf_t *host = h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler) + sizeof(http_t *));
    handler->on_req = on_req;
    *(http_t **)(handler + 1) = h;
    h2o_context_init(&h->ctx, opts->loop, &h->config);
    h->accept_ctx.ctx = &h->ctx;
    h->accept_ctx.hosts = h->config.hosts;

    int rc = log_ack_open(&h->ack, opts->loop);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot create completion queue: %s", uv_strerror(rc));
        goto fail_ctx;
    }
    uv_async_init(opts->loop, &h->views_async, on_views_async);
    proj_subscribe(opts->proj, on_views_applied, h);
    atomic_store(&h->applied, proj_applied(opts->proj)); /* after subscribing: no update is lost */

    if (strncmp(h->listen, "unix:", 5) == 0) {
        rc = listen_pipe(opts->loop, &h->pipe_tcp, h->listen + 5, on_pipe_conn, errbuf, errlen);
        h->pipe_tcp_open = rc == 0;
    } else {
        rc = listen_tcp(h, errbuf, errlen);
    }
    if (rc == 0 && h->admin_path[0]) {
        rc = listen_pipe(opts->loop, &h->admin, h->admin_path, on_admin_conn, errbuf, errlen);
        h->admin_open = rc == 0;
    }
    if (rc != 0) {
        teardown(h);
        return rc;
    }
    sp_handle_opened();
    *out = h;
    return 0;
fail_ctx:
    h2o_context_dispose(&h->ctx);
    h2o_config_dispose(&h->config);
    free(h);
    return rc;
}

int http_port(http_t *h) { return h->port; }

static void stop_listening(http_t *h)
{
    if (h->tcp_open) uv_close((uv_handle_t *)&h->tcp, NULL);
    if (h->pipe_tcp_open) {
        uv_close((uv_handle_t *)&h->pipe_tcp, NULL);
        unlink(h->listen + 5);
    }
    if (h->admin_open) {
        uv_close((uv_handle_t *)&h->admin, NULL);
        unlink(h->admin_path);
    }
    h->tcp_open = h->pipe_tcp_open = h->admin_open = false;
}

static void on_drain_timeout(uv_timer_t *t)
{
    http_t *h = sp_container_of(t, http_t, drain_timer);
    if (h->inflight)
        sp_warn("http", "%zu requests still in flight after %d ms; stopping anyway", h->inflight, DRAIN_GRACE_MS);
    h->inflight = 0;
    h->conns_abandoned = true;
    http__check_drained(h);
}

/* Requests in flight get DRAIN_GRACE_MS to finish. Idle keep-alive
 * connections are not waited for long: once nothing is in flight they
 * get IDLE_GRACE_MS to close, then the server stops anyway. */
void http__check_drained(http_t *h)
{
    if (!h->draining || h->drained_cb == NULL || h->inflight > 0) return;
    if (h->conns > 0 && !h->conns_abandoned) {
        if (!h->idle_grace) {
            h->idle_grace = true;
            uv_timer_start(&h->drain_timer, on_drain_timeout, IDLE_GRACE_MS, 0);
        }
        return;
    }
    void (*cb)(void *) = h->drained_cb;
    h->drained_cb = NULL;
    uv_timer_stop(&h->drain_timer);
    cb(h->drained_arg);
}

void http_drain(http_t *h, void (*cb)(void *arg), void *arg)
{
    stop_listening(h);
    /* Busy connections close after their response. */
    h2o_context_request_shutdown(&h->ctx);
    h->draining = true;
    h->drained_cb = cb;
    h->drained_arg = arg;
    uv_timer_init(h->opts.loop, &h->drain_timer);
    uv_timer_start(&h->drain_timer, on_drain_timeout, DRAIN_GRACE_MS, 0);
    http__check_drained(h);
}

static void on_handle_closed(uv_handle_t *handle)
{
    http_t *h = handle->data;
    if (--h->inflight == 0) free(h);
}

static void teardown(http_t *h)
{
    proj_unsubscribe(h->opts.proj, on_views_applied, h);
    stop_listening(h);
    log_ack_close(h->ack);
    /* h2o asserts that no connection holds a timeout at dispose time;
     * with connections abandoned at shutdown, the process is exiting and
     * leaves the context alone. */
    if (h->conns == 0) {
        h2o_timeout_entry_t *g = &h->ctx.http2._graceful_shutdown_timeout;
        if (h2o_timeout_is_linked(g)) h2o_timeout_unlink(g);
        h2o_context_dispose(&h->ctx);
        h2o_config_dispose(&h->config);
    }
    /* Free h once its own uv handles have finished closing. */
    h->inflight = 1;
    h->views_async.data = h;
    uv_close((uv_handle_t *)&h->views_async, on_handle_closed);
    if (h->draining) {
        h->inflight++;
        h->drain_timer.data = h;
        uv_close((uv_handle_t *)&h->drain_timer, on_handle_closed);
    }
}

void http_close(http_t *h)
{
    if (h == NULL) return;
    teardown(h);
    sp_handle_closed();
}
