/* Workers, listeners, request dispatch, replies, and orderly shutdown. */
#include "http_internal.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY (8u << 20)
#define DRAIN_GRACE_MS   10000
#define IDLE_GRACE_MS    1000
#define MAX_WORKERS      64

static const char *reason_of(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
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

http__worker_t *http__worker_of(h2o_req_t *req) { return sp_container_of(req->conn->ctx, http__worker_t, ctx); }

uint64_t http__status_count(http_t *h, int status)
{
    uint64_t n = 0;
    for (int i = 0; i < h->nworkers; i++)
        n += atomic_load_explicit(&h->workers[i].status_counts[status], memory_order_relaxed);
    return n;
}

void http__reply(http_t *h, h2o_req_t *req, int status, const char *ctype, const void *body, size_t len)
{
    static h2o_generator_t generator = {NULL, NULL};
    if (status >= 100 && status < 600)
        atomic_fetch_add_explicit(&http__worker_of(req)->status_counts[status], 1, memory_order_relaxed);
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

static int hexval(unsigned char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

/* A path is usable when it is plain: every percent-escape is valid and
 * nothing, raw or escaped, is a control character. */
static bool path_ok(h2o_iovec_t p)
{
    for (size_t i = 0; i < p.len; i++) {
        unsigned char c = (unsigned char)p.base[i];
        if (c == '%') {
            if (i + 2 >= p.len || !isxdigit((unsigned char)p.base[i + 1]) || !isxdigit((unsigned char)p.base[i + 2]))
                return false;
            c = (unsigned char)(hexval((unsigned char)p.base[i + 1]) * 16 + hexval((unsigned char)p.base[i + 2]));
            i += 2;
        }
        if (c < 0x20 || c == 0x7f) return false;
    }
    return true;
}

/* Matches a path against a route pattern, segment by segment; a segment
 * ":name" matches any non-empty segment and is captured. */
static bool route_match(const char *pattern, h2o_iovec_t path, http__reqinfo_t *info)
{
    const char *p = pattern, *s = path.base, *end = path.base + path.len;
    info->nparams = 0;
    while (*p && s < end) {
        if (*p != '/' || *s != '/') return false;
        p++, s++;
        const char *pe = strchr(p, '/'), *se = memchr(s, '/', (size_t)(end - s));
        size_t pn = pe ? (size_t)(pe - p) : strlen(p), sn = se ? (size_t)(se - s) : (size_t)(end - s);
        if (*p == ':') {
            if (sn == 0 || info->nparams == HTTP__MAX_PARAMS) return false;
            info->params[info->nparams++] = h2o_iovec_init(s, sn);
        } else if (pn != sn || memcmp(p, s, sn) != 0) {
            return false;
        }
        p += pn, s += sn;
    }
    return *p == 0 && s == end;
}

h2o_iovec_t http__param(h2o_req_t *req, int i)
{
    const http__reqinfo_t *info = http__info(req);
    return i < info->nparams ? info->params[i] : h2o_iovec_init("", 0);
}

bool http__param_str(h2o_req_t *req, int i, char *buf, size_t n)
{
    h2o_iovec_t v = http__param(req, i);
    if (v.len >= n) return false;
    memcpy(buf, v.base, v.len);
    buf[v.len] = 0;
    return true;
}

const http__reqinfo_t *http__info(h2o_req_t *req) { return &http__worker_of(req)->cur; }

/* The API token of a request: Circle-Token, Authorization: Bearer, or
 * HTTP basic with the token as the user name (CircleCI's forms). */
static bool request_token(h2o_req_t *req, char *out, size_t n)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("circle-token"), -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (v.len == 0 || v.len >= n) return false;
        memcpy(out, v.base, v.len);
        out[v.len] = 0;
        return true;
    }
    i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i < 0) return false;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len > 7 && strncasecmp(v.base, "Bearer ", 7) == 0 && v.len - 7 < n) {
        memcpy(out, v.base + 7, v.len - 7);
        out[v.len - 7] = 0;
        return true;
    }
    if (v.len > 6 && v.len < 600 && strncasecmp(v.base, "Basic ", 6) == 0 && (v.len - 6) % 4 == 0) {
        uint8_t dec[600];
        int dn = EVP_DecodeBlock(dec, (const uint8_t *)v.base + 6, (int)(v.len - 6));
        if (dn <= 0) return false;
        char *colon = memchr(dec, ':', (size_t)dn);
        size_t user = colon ? (size_t)(colon - (char *)dec) : (size_t)dn;
        if (user == 0 || user >= n) return false;
        memcpy(out, dec, user);
        out[user] = 0;
        return true;
    }
    return false;
}

/* Fills info's role and actor; answers and returns false when the route
 * is not for this caller. */
static bool authorize(http_t *h, h2o_req_t *req, http__access_t access, http__reqinfo_t *info)
{
    info->admin_socket = on_admin_socket(req);
    info->role[0] = info->actor[0] = 0;
    if (info->admin_socket) {
        snprintf(info->role, sizeof info->role, "admin");
        snprintf(info->actor, sizeof info->actor, "cli");
        return true;
    }
    if (access == HTTP__PUBLIC) return true;
    char token[256], id[PROJ_ID_MAX], role[16];
    if (http__engine(h) && request_token(req, token, sizeof token) &&
        engine_token_check(http__engine(h), token, role, id) == 0) {
        snprintf(info->role, sizeof info->role, "%s", role);
        snprintf(info->actor, sizeof info->actor, "%s:%s", info->role, id);
    }
    OPENSSL_cleanse(token, sizeof token);
    if (info->role[0] == 0) {
        http__reply_error(h, req, 401, "a valid API token is required (Circle-Token header)");
        return false;
    }
    bool ok = access == HTTP__USER         ? strcmp(info->role, "agent") != 0
              : access == HTTP__ADMIN_ROLE ? strcmp(info->role, "admin") == 0
              : access == HTTP__AGENT      ? strcmp(info->role, "agent") == 0 || strcmp(info->role, "admin") == 0
                                           : false;
    if (!ok) http__reply_error(h, req, 403, "this token's role (%s) may not do this", info->role);
    return ok;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    http_t *h = *(http_t **)(self + 1);
    http__worker_t *w = http__worker_of(req);
    h2o_iovec_t path = req->path_normalized;
    if (!path_ok(req->path)) {
        http__reply_error(h, req, 400, "malformed request path");
        return 0;
    }
    bool path_found = false;
    bool admin_socket = on_admin_socket(req);
    for (size_t i = 0; i < http__nroutes; i++) {
        const http__route_t *r = &http__routes[i];
        if (!route_match(r->path, path, &w->cur)) continue;
        if (r->access == HTTP__ADMIN && !admin_socket) continue;
        path_found = true;
        bool head_ok =
            strcmp(r->method, "GET") == 0 && h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
        if (!head_ok && !h2o_memis(req->method.base, req->method.len, r->method, strlen(r->method))) continue;
        if (!authorize(h, req, r->access, &w->cur)) return 0;
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

/* ---- mailbox ---- */

struct http__mail {
    struct http__mail *next;
    void (*fn)(void *);
    void *arg;
};

void http__post(http__worker_t *w, void (*fn)(void *arg), void *arg)
{
    struct http__mail *m = sp_xmalloc(sizeof *m);
    *m = (struct http__mail){NULL, fn, arg};
    pthread_mutex_lock(&w->mail_mu);
    if (w->gone) {
        /* The worker's loop is shutting down: nobody waits for this. */
        pthread_mutex_unlock(&w->mail_mu);
        free(m);
        return;
    }
    if (w->mail_tail)
        w->mail_tail->next = m;
    else
        w->mail_head = m;
    w->mail_tail = m;
    uv_async_send(&w->mail_async);
    pthread_mutex_unlock(&w->mail_mu);
}

static void on_mail(uv_async_t *a)
{
    http__worker_t *w = sp_container_of(a, http__worker_t, mail_async);
    pthread_mutex_lock(&w->mail_mu);
    struct http__mail *m = w->mail_head;
    w->mail_head = w->mail_tail = NULL;
    pthread_mutex_unlock(&w->mail_mu);
    while (m) {
        struct http__mail *next = m->next;
        m->fn(m->arg);
        free(m);
        m = next;
    }
}

/* ---- connections ---- */

/* A client connection's uv handle, with a way back to its worker so the
 * worker can count open connections (h2o owns the handle's data field). */
typedef struct {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    http__worker_t *w;
} conn_t;

static void on_conn_closed(uv_handle_t *handle)
{
    conn_t *c = (conn_t *)handle;
    http__worker_t *w = c->w;
    free(c);
    w->conns--;
    http__check_drained(w);
}

static void accept_conn(http__worker_t *w, uv_stream_t *listener, bool is_pipe)
{
    conn_t *c = sp_xcalloc(1, sizeof *c);
    c->w = w;
    if (is_pipe) {
        uv_pipe_init(listener->loop, &c->u.pipe, 0);
    } else {
        uv_tcp_init(listener->loop, &c->u.tcp);
        uv_tcp_nodelay(&c->u.tcp, 1);
    }
    w->conns++;
    uv_stream_t *conn = (uv_stream_t *)&c->u;
    if (uv_accept(listener, conn) != 0) {
        uv_close((uv_handle_t *)conn, on_conn_closed);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create(conn, on_conn_closed);
    h2o_accept(&w->accept_ctx, sock);
}

static void on_tcp_conn(uv_stream_t *l, int status)
{
    if (status == 0) accept_conn(sp_container_of((uv_tcp_t *)l, http__worker_t, tcp), l, false);
}

static void on_pipe_conn(uv_stream_t *l, int status)
{
    if (status == 0) accept_conn(sp_container_of((uv_pipe_t *)l, http__worker_t, pipe_tcp), l, true);
}

static void on_admin_conn(uv_stream_t *l, int status)
{
    if (status == 0) accept_conn(sp_container_of((uv_pipe_t *)l, http__worker_t, admin), l, true);
}

/* ---- listeners ---- */

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

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

/* Binds worker w's TCP listener. Worker 0 binds first (possibly to port
 * 0); the others bind to the port it got. SO_REUSEPORT lets the kernel
 * balance connections over the workers' sockets. */
static int listen_tcp(http__worker_t *w, struct sockaddr_storage *ss, char *err, size_t errlen)
{
    http_t *h = w->srv;
    int rc = uv_tcp_init_ex(w->loop, &w->tcp, ss->ss_family);
    if (rc != 0) goto fail;
    w->tcp_open = true;
    uv_os_fd_t fd;
    int one = 1;
    if (h->nworkers > 1 && uv_fileno((uv_handle_t *)&w->tcp, &fd) == 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (w->index > 0) set_port(ss, h->port);
    if ((rc = uv_tcp_bind(&w->tcp, (struct sockaddr *)ss, 0)) != 0) goto fail;
    if ((rc = uv_listen((uv_stream_t *)&w->tcp, 1024, on_tcp_conn)) != 0) goto fail;
    if (w->index == 0) {
        struct sockaddr_storage bound;
        int blen = sizeof bound;
        uv_tcp_getsockname(&w->tcp, (struct sockaddr *)&bound, &blen);
        h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    }
    return 0;
fail:
    snprintf(err, errlen, "cannot listen on %s: %s", h->listen, uv_strerror(rc));
    return rc;
}

/* ---- views notifications ---- */

static void on_views_applied(void *arg, uint64_t applied)
{
    http_t *h = arg;
    atomic_store(&h->applied, applied);
    /* A worker that has shut down has closed its handles; its mail lock
     * guards the flag that says so. */
    for (int i = 0; i < h->nworkers; i++) {
        http__worker_t *w = &h->workers[i];
        pthread_mutex_lock(&w->mail_mu);
        if (!w->gone) uv_async_send(&w->views_async);
        pthread_mutex_unlock(&w->mail_mu);
    }
}

static void on_views_async(uv_async_t *a)
{
    http__worker_t *w = sp_container_of(a, http__worker_t, views_async);
    http__pending_flush(w);
    http__sse_flush(w);
}

/* ---- draining ---- */

static void stop_listening(http__worker_t *w)
{
    http_t *h = w->srv;
    if (w->tcp_open) uv_close((uv_handle_t *)&w->tcp, NULL);
    if (w->pipe_tcp_open) {
        uv_close((uv_handle_t *)&w->pipe_tcp, NULL);
        unlink(h->listen + 5);
    }
    if (w->admin_open) {
        uv_close((uv_handle_t *)&w->admin, NULL);
        unlink(h->admin_path);
    }
    w->tcp_open = w->pipe_tcp_open = w->admin_open = false;
}

static void check_all_drained(http_t *h)
{
    if (!h->draining || h->drained_cb == NULL || !h->workers[0].drained) return;
    if (atomic_load(&h->workers_running) > 0) return;
    void (*cb)(void *) = h->drained_cb;
    h->drained_cb = NULL;
    cb(h->drained_arg);
}

static void on_drain_timeout(uv_timer_t *t)
{
    http__worker_t *w = sp_container_of(t, http__worker_t, drain_timer);
    if (w->inflight)
        sp_warn("http", "%zu requests still in flight after %d ms; stopping anyway", w->inflight, DRAIN_GRACE_MS);
    w->inflight = 0;
    w->conns_abandoned = true;
    http__check_drained(w);
}

/* Requests in flight get DRAIN_GRACE_MS to finish. Idle keep-alive
 * connections are not waited for long: once nothing is in flight they
 * get IDLE_GRACE_MS to close, then the worker stops anyway. */
void http__check_drained(http__worker_t *w)
{
    if (!w->draining || w->drained || w->inflight > 0) return;
    if (w->conns > 0 && !w->conns_abandoned) {
        if (!w->idle_grace) {
            w->idle_grace = true;
            uv_timer_start(&w->drain_timer, on_drain_timeout, IDLE_GRACE_MS, 0);
        }
        return;
    }
    w->drained = true;
    uv_timer_stop(&w->drain_timer);
    if (w->index == 0)
        check_all_drained(w->srv);
    else
        uv_stop(w->loop); /* the worker thread tears down and reports */
}

static void worker_drain(http__worker_t *w)
{
    stop_listening(w);
    http__claims_cancel(w);
    /* Busy connections close after their response. */
    h2o_context_request_shutdown(&w->ctx);
    w->draining = true;
    uv_timer_start(&w->drain_timer, on_drain_timeout, DRAIN_GRACE_MS, 0);
    http__check_drained(w);
}

static void on_stop_async(uv_async_t *a) { worker_drain(sp_container_of(a, http__worker_t, stop_async)); }

static void on_joined_async(uv_async_t *a) { check_all_drained(sp_container_of(a, http_t, joined_async)); }

void http_drain(http_t *h, void (*cb)(void *arg), void *arg)
{
    h->draining = true;
    h->drained_cb = cb;
    h->drained_arg = arg;
    for (int i = 1; i < h->nworkers; i++) uv_async_send(&h->workers[i].stop_async);
    worker_drain(&h->workers[0]);
}

/* ---- worker set-up and teardown ---- */

static int worker_init(http_t *h, int index, char *err, size_t errlen)
{
    http__worker_t *w = &h->workers[index];
    w->srv = h;
    w->index = index;
    if (index == 0) {
        w->loop = h->opts.loop;
    } else {
        w->loop = &w->own_loop;
        uv_loop_init(w->loop);
        uv_async_init(w->loop, &w->stop_async, on_stop_async);
    }
    h2o_context_init(&w->ctx, w->loop, &h->config);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = h->config.hosts;
    uv_timer_init(w->loop, &w->drain_timer);
    w->timer_init = true;
    uv_async_init(w->loop, &w->views_async, on_views_async);
    uv_async_init(w->loop, &w->mail_async, on_mail);
    pthread_mutex_init(&w->mail_mu, NULL);
    int rc = log_ack_open(&w->ack, w->loop);
    if (rc != 0) snprintf(err, errlen, "cannot create completion queue: %s", uv_strerror(rc));
    return rc;
}

static void free_server(http_t *h)
{
    for (int i = 0; i < h->nworkers; i++) pthread_mutex_destroy(&h->workers[i].mail_mu);
    free(h->workers);
    free(h);
}

static void on_worker_handle_closed(uv_handle_t *handle)
{
    http__worker_t *w = handle->data;
    /* Worker 0's handles close on the caller's loop after http_close
     * returned; the last one frees the server, unless a connection was
     * abandoned at shutdown: its close would still reach its worker, so
     * the memory is left to the exiting process. */
    if (--w->closing_handles > 0 || w->index != 0 || !w->srv->closed) return;
    for (int i = 0; i < w->srv->nworkers; i++)
        if (w->srv->workers[i].conns > 0) return;
    free_server(w->srv);
}

static void close_own(http__worker_t *w, uv_handle_t *handle)
{
    handle->data = w;
    w->closing_handles++;
    uv_close(handle, on_worker_handle_closed);
}

/* Releases a worker's loop resources; its loop must run afterwards for
 * the closes to complete. h2o asserts that no connection holds a timeout
 * at dispose time; with connections abandoned at shutdown, the process
 * is exiting and the context is left alone. */
static void worker_teardown(http__worker_t *w)
{
    pthread_mutex_lock(&w->mail_mu);
    w->gone = true;
    pthread_mutex_unlock(&w->mail_mu);
    stop_listening(w);
    if (w->ack) log_ack_close(w->ack);
    w->ack = NULL;
    if (w->conns == 0) {
        h2o_timeout_entry_t *g = &w->ctx.http2._graceful_shutdown_timeout;
        if (h2o_timeout_is_linked(g)) h2o_timeout_unlink(g);
        h2o_context_dispose(&w->ctx);
    }
    if (w->timer_init) close_own(w, (uv_handle_t *)&w->drain_timer);
    close_own(w, (uv_handle_t *)&w->views_async);
    /* Mail still queued belongs to requests that are gone. */
    on_mail(&w->mail_async);
    close_own(w, (uv_handle_t *)&w->mail_async);
    if (w->index > 0) close_own(w, (uv_handle_t *)&w->stop_async);
}

static void worker_main(void *arg)
{
    http__worker_t *w = arg;
    http_t *h = w->srv;
    uv_run(w->loop, UV_RUN_DEFAULT);
    worker_teardown(w);
    while (w->closing_handles > 0) uv_run(w->loop, UV_RUN_ONCE);
    uv_run(w->loop, UV_RUN_NOWAIT);
    if (uv_loop_close(w->loop) != 0) sp_warn("http", "worker %d: loop closed with handles open", w->index);
    atomic_fetch_sub(&h->workers_running, 1);
    uv_async_send(&h->joined_async);
}

static void teardown(http_t *h, int started);

int http_open(http_t **out, const http_opts_t *opts, char *errbuf, size_t errlen)
{
    http_t *h = sp_xcalloc(1, sizeof *h);
    h->opts = *opts;
    snprintf(h->listen, sizeof h->listen, "%s", opts->listen ? opts->listen : "127.0.0.1:8080");
    h->opts.listen = h->listen;
    snprintf(h->base_url, sizeof h->base_url, "%s", opts->base_url ? opts->base_url : "");
    h->opts.base_url = h->base_url[0] ? h->base_url : NULL;
    bool unix_listen = strncmp(h->listen, "unix:", 5) == 0;
    h->nworkers = opts->threads < 1 || unix_listen ? 1 : opts->threads > MAX_WORKERS ? MAX_WORKERS : opts->threads;
    if (opts->admin_socket) {
        if (strlen(opts->admin_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(errbuf, errlen, "admin socket path too long: %s", opts->admin_socket);
            free(h);
            return SP_EINVAL;
        }
        snprintf(h->admin_path, sizeof h->admin_path, "%s", opts->admin_socket);
    }
    struct sockaddr_storage ss;
    if (!unix_listen && parse_addr(h->listen, &ss) != 0) {
        snprintf(errbuf, errlen, "bad listen address \"%s\": expected ADDR:PORT", h->listen);
        free(h);
        return SP_EINVAL;
    }
    h->started_ns = sp_mono_ns();
    atomic_store(&h->engine, opts->engine);
    /* Ready once the views reflect everything logged before we started. */
    h->ready_at = log_head(opts->log);

    h2o_config_init(&h->config);
    h->config.max_request_entity_size = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
    h2o_hostconf_t *host = h2o_config_register_host(&h->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler) + sizeof(http_t *));
    handler->on_req = on_req;
    *(http_t **)(handler + 1) = h;

    h->workers = sp_xcalloc((size_t)h->nworkers, sizeof *h->workers);
    uv_async_init(opts->loop, &h->joined_async, on_joined_async);
    int rc = 0, inited = 0;
    for (; rc == 0 && inited < h->nworkers; inited++) rc = worker_init(h, inited, errbuf, errlen);
    proj_subscribe(opts->proj, on_views_applied, h);
    atomic_store(&h->applied, proj_applied(opts->proj)); /* after subscribing: no update is lost */

    http__worker_t *w0 = &h->workers[0];
    if (rc == 0 && unix_listen) {
        rc = listen_pipe(opts->loop, &w0->pipe_tcp, h->listen + 5, on_pipe_conn, errbuf, errlen);
        w0->pipe_tcp_open = rc == 0;
    }
    for (int i = 0; rc == 0 && !unix_listen && i < h->nworkers; i++)
        rc = listen_tcp(&h->workers[i], &ss, errbuf, errlen);
    if (rc == 0 && h->admin_path[0]) {
        rc = listen_pipe(opts->loop, &w0->admin, h->admin_path, on_admin_conn, errbuf, errlen);
        w0->admin_open = rc == 0;
    }
    int started = 0;
    for (int i = 1; rc == 0 && i < h->nworkers; i++, started++) {
        atomic_fetch_add(&h->workers_running, 1);
        if ((rc = uv_thread_create(&h->workers[i].thread, worker_main, &h->workers[i])) != 0) {
            atomic_fetch_sub(&h->workers_running, 1);
            snprintf(errbuf, errlen, "cannot start HTTP worker thread: %s", uv_strerror(rc));
        }
    }
    if (rc != 0) {
        h->nworkers = inited;
        teardown(h, started);
        return rc;
    }
    sp_handle_opened();
    *out = h;
    return 0;
}

int http_port(http_t *h) { return h->port; }

void http_set_engine(http_t *h, struct engine *e) { atomic_store(&h->engine, e); }

/* Stops the worker threads (draining them if nobody did), releases
 * worker 0 and frees h once its handles have closed. */
static void teardown(http_t *h, int started)
{
    proj_unsubscribe(h->opts.proj, on_views_applied, h);
    for (int i = 1; i <= started; i++) {
        http__worker_t *w = &h->workers[i];
        /* A drained worker's thread has ended and its handles are gone. */
        if (!h->draining) uv_async_send(&w->stop_async);
        uv_thread_join(&w->thread);
    }
    for (int i = started + 1; i < h->nworkers; i++) {
        /* never started: release its loop here */
        http__worker_t *w = &h->workers[i];
        worker_teardown(w);
        uv_run(w->loop, UV_RUN_DEFAULT);
        uv_loop_close(w->loop);
    }
    http__worker_t *w0 = &h->workers[0];
    worker_teardown(w0);
    h2o_config_dispose(&h->config);
    h->closed = true;
    close_own(w0, (uv_handle_t *)&h->joined_async);
}

void http_close(http_t *h)
{
    if (h == NULL) return;
    teardown(h, h->nworkers - 1);
    sp_handle_closed();
}
