/*
 * The HTTP/1.1 client of hc.h.
 *
 * A request owns a uv timer (its deadline, and a zero-delay kick after a
 * resume) and, while it runs, one connection. A connection is a libuv
 * stream (tcp or unix pipe); once connected it is wrapped in an h2o
 * socket, which gives buffered reads with read_start/read_stop (our
 * back-pressure) and TLS. The answer goes through http_parser.
 *
 * Lifetimes: a connection is freed in the close callback of its stream,
 * a request in the close callback of its timer. The client counts both
 * (nopen) and is freed after hc_free once the count reaches zero.
 */
#include "hc_internal.h"

#include <h2o/socket.h>
#include <http_parser.h>
#include <netdb.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define HC_BODY_MAX  ((size_t)64 << 20)
#define HC_IDLE_MAX  4 /* idle connections kept for reuse */
#define HC_USERAGENT "spool/" SP_VERSION

typedef struct conn conn_t;
typedef struct resolve resolve_t;

struct hc {
    uv_loop_t *loop;
    char *host;        /* for Host: and TLS; "localhost" for a unix socket */
    char *port;        /* decimal, or NULL for a unix socket */
    char *prefix;      /* the base's path, without a trailing slash */
    char *socket;      /* unix socket path, or NULL */
    SSL_CTX *ssl;      /* https only */
    char *authority;   /* host[:port] as Host: gives it (brackets for IPv6, no default port) */
    char *hostport;    /* host:port always, for CONNECT */
    hc__proxy_t proxy; /* an HTTP proxy from the environment, or none */
    conn_t *idle;
    int nidle;
    int nopen; /* requests and connections not yet freed */
    bool closing;
    hc_req_t *reqs;
};

struct conn {
    hc_t *c;
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    uv_connect_t creq;
    h2o_socket_t *sock;            /* once connected */
    hc_req_t *req;                 /* NULL when idle or abandoned */
    struct addrinfo *ai_list, *ai; /* tcp: the addresses, and the one tried */
    conn_t *next;                  /* in the idle list */
    http_parser tp;                /* the proxy's answer to CONNECT */
    char *connect_req;             /* that request, while it is written */
    bool tunneled;
};

struct hc_req {
    hc_t *c;
    hc_call_t call;
    char *head; /* request line and headers */
    void *body;
    conn_t *conn;
    resolve_t *resolving; /* a name lookup in flight */
    uv_timer_t timer;
    uint64_t deadline; /* loop ms, 0 for none */
    http_parser parser;
    sp_buf_t resp;
    sp_buf_t hold; /* body bytes the data callback refused */
    bool reused;   /* on a kept-alive connection: a close before any answer is retried once */
    bool is_head;  /* a HEAD request: the answer has no body */
    bool got_bytes, complete, paused, kick, failing, finished;
    const char *eof; /* set when the stream has ended (h2o's static reason) */
    hc_req_t *next;
    char err[256];
};

static void req_conn_failed(hc_req_t *r, const char *why);
static void req_send(hc_req_t *r, conn_t *k);
static void conn_open(hc_req_t *r, struct addrinfo *list, struct addrinfo *ai);
static void req_fail_soon(hc_req_t *r);
static void resolve_start(hc_req_t *r);
static void on_handshake(h2o_socket_t *sock, const char *err);

/* ---- client lifetime ------------------------------------------------ */

static void client_clear(hc_t *c)
{
    if (c->ssl) SSL_CTX_free(c->ssl);
    free(c->host);
    free(c->port);
    free(c->authority);
    free(c->hostport);
    free(c->prefix);
    free(c->socket);
    hc__proxy_clear(&c->proxy);
}

static void client_release(hc_t *c)
{
    if (--c->nopen > 0 || !c->closing) return;
    client_clear(c);
    free(c);
    sp_handle_closed();
}

/* ---- connections ---------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *k = sp_container_of(h, conn_t, u.h);
    hc_t *c = k->c;
    if (k->ai_list) uv_freeaddrinfo(k->ai_list);
    if (k->connect_req) explicit_bzero(k->connect_req, strlen(k->connect_req)); /* may hold proxy credentials */
    free(k->connect_req);
    free(k);
    client_release(c);
}

static void conn_close(conn_t *k)
{
    k->req = NULL;
    if (k->sock != NULL) {
        k->sock->data = NULL;
        h2o_socket_close(k->sock); /* closes the stream, then on_conn_closed */
        k->sock = NULL;
    } else if (!uv_is_closing(&k->u.h)) {
        uv_close(&k->u.h, on_conn_closed); /* a pending connect ends with UV_ECANCELED first */
    }
}

static void idle_remove(hc_t *c, conn_t *k)
{
    for (conn_t **pp = &c->idle; *pp; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            c->nidle--;
            return;
        }
    }
}

/* An idle connection that becomes readable was closed by the server (or
 * sent bytes nobody asked for): either way it cannot be reused. */
static void on_idle_read(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    if (k == NULL) return;
    idle_remove(k->c, k);
    conn_close(k);
}

static void conn_park(conn_t *k)
{
    hc_t *c = k->c;
    k->req = NULL;
    if (c->closing || c->nidle >= HC_IDLE_MAX || k->sock->input->size != 0) {
        conn_close(k);
        return;
    }
    k->next = c->idle;
    c->idle = k;
    c->nidle++;
    h2o_socket_read_start(k->sock, on_idle_read);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    if (k == NULL) return;
    if (err != NULL) {
        hc_req_t *r = k->req;
        conn_close(k);
        if (r) {
            snprintf(r->err, sizeof r->err, "TLS with %s failed: %s", k->c->host, err);
            req_conn_failed(r, NULL);
        }
        return;
    }
    if (k->req) req_send(k->req, k);
}

/* ---- https through an HTTP proxy: CONNECT, then TLS in the tunnel ---- */

static void tunnel_fail(conn_t *k, const char *why)
{
    hc_req_t *r = k->req;
    hc_t *c = k->c;
    conn_close(k);
    if (r == NULL) return;
    snprintf(r->err, sizeof r->err, "proxy %s:%s: %s", c->proxy.host, c->proxy.port, why);
    req_conn_failed(r, NULL);
}

static int on_tunnel_headers(http_parser *p) { return 1; /* an answer to CONNECT has no body */ }

static int on_tunnel_complete(http_parser *p)
{
    conn_t *k = p->data;
    k->tunneled = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings tunnel_settings = {.on_headers_complete = on_tunnel_headers,
                                                     .on_message_complete = on_tunnel_complete};

static void on_tunnel_read(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    if (k == NULL || k->req == NULL) return;
    size_t n = http_parser_execute(&k->tp, &tunnel_settings, sock->input->bytes, sock->input->size);
    enum http_errno e = HTTP_PARSER_ERRNO(&k->tp);
    h2o_buffer_consume(&sock->input, n);
    char why[128];
    if (e != HPE_OK && e != HPE_PAUSED) {
        tunnel_fail(k, http_errno_description(e));
    } else if (!k->tunneled) {
        if (err != NULL) tunnel_fail(k, "closed the connection before answering CONNECT");
    } else if (k->tp.status_code / 100 != 2) {
        snprintf(why, sizeof why, "refused the tunnel to %s (HTTP %d)", k->c->hostport, k->tp.status_code);
        tunnel_fail(k, why);
    } else if (sock->input->size != 0) {
        tunnel_fail(k, "sent bytes before the TLS handshake");
    } else {
        h2o_socket_read_stop(sock);
        h2o_socket_ssl_handshake(sock, k->c->ssl, k->c->host, on_handshake);
    }
}

static void on_tunnel_written(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    if (k != NULL && k->req != NULL && err != NULL) tunnel_fail(k, err);
}

static void tunnel_start(conn_t *k)
{
    hc_t *c = k->c;
    k->connect_req = sp_xasprintf("CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " HC_USERAGENT "\r\n%s\r\n",
                                  c->hostport, c->hostport, c->proxy.auth ? c->proxy.auth : "");
    http_parser_init(&k->tp, HTTP_RESPONSE);
    k->tp.data = k;
    h2o_iovec_t b = h2o_iovec_init(k->connect_req, strlen(k->connect_req));
    h2o_socket_write(k->sock, &b, 1, on_tunnel_written);
    h2o_socket_read_start(k->sock, on_tunnel_read);
}

static void on_connected(uv_connect_t *cr, int status)
{
    conn_t *k = cr->data;
    if (status == UV_ECANCELED || k->req == NULL) return; /* closing already */
    hc_req_t *r = k->req;
    if (status != 0) {
        struct addrinfo *list = k->ai_list, *next = k->ai ? k->ai->ai_next : NULL;
        if (next != NULL) {
            k->ai_list = NULL; /* handed to the next attempt */
            conn_close(k);
            conn_open(r, list, next);
            return;
        }
        snprintf(r->err, sizeof r->err, "cannot connect: %s", uv_strerror(status));
        conn_close(k);
        req_conn_failed(r, NULL);
        return;
    }
    if (k->ai_list) {
        uv_freeaddrinfo(k->ai_list);
        k->ai_list = k->ai = NULL;
    }
    k->sock = h2o_uv_socket_create(&k->u.s, on_conn_closed);
    k->sock->data = k;
    if (k->c->ssl != NULL) {
        if (k->c->proxy.host != NULL)
            tunnel_start(k);
        else
            h2o_socket_ssl_handshake(k->sock, k->c->ssl, k->c->host, on_handshake);
        return;
    }
    req_send(r, k);
}

/* ---- name resolution (libuv's thread pool) -------------------------- */

struct resolve {
    uv_getaddrinfo_t g;
    hc_t *c;
    hc_req_t *r; /* NULL once the request has ended */
};

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    resolve_t *rs = sp_container_of(g, resolve_t, g);
    hc_t *c = rs->c;
    hc_req_t *r = rs->r;
    free(rs);
    if (r == NULL) {
        if (res) uv_freeaddrinfo(res);
    } else if (status != 0) {
        r->resolving = NULL;
        snprintf(r->err, sizeof r->err, "cannot resolve %s%s: %s", c->proxy.host ? "the proxy " : "",
                 c->proxy.host ? c->proxy.host : c->host, uv_strerror(status));
        req_conn_failed(r, NULL);
    } else {
        r->resolving = NULL;
        conn_open(r, res, res);
    }
    client_release(c);
}

static void resolve_start(hc_req_t *r)
{
    hc_t *c = r->c;
    resolve_t *rs = sp_xcalloc(1, sizeof *rs);
    rs->c = c;
    rs->r = r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    const char *host = c->proxy.host ? c->proxy.host : c->host, *port = c->proxy.host ? c->proxy.port : c->port;
    int rc = uv_getaddrinfo(c->loop, &rs->g, on_resolved, host, port, &hints);
    if (rc != 0) {
        free(rs);
        snprintf(r->err, sizeof r->err, "cannot resolve %s: %s", host, uv_strerror(rc));
        req_fail_soon(r);
        return;
    }
    c->nopen++; /* the client outlives the lookup */
    r->resolving = rs;
}

/* Opens a connection for r. A tcp connection tries the resolved
 * addresses in turn (localhost may be ::1 first). */
static void conn_open(hc_req_t *r, struct addrinfo *list, struct addrinfo *ai)
{
    hc_t *c = r->c;
    if (c->socket == NULL && list == NULL) {
        resolve_start(r);
        return;
    }
    conn_t *k = sp_xcalloc(1, sizeof *k);
    k->c = c;
    k->req = r;
    k->creq.data = k;
    c->nopen++;
    r->conn = k;
    if (c->socket != NULL) {
        uv_pipe_init(c->loop, &k->u.pipe, 0);
        uv_pipe_connect(&k->creq, &k->u.pipe, c->socket, on_connected);
        return;
    }
    k->ai_list = list;
    k->ai = ai;
    uv_tcp_init(c->loop, &k->u.tcp);
    int rc = uv_tcp_connect(&k->creq, &k->u.tcp, ai->ai_addr, on_connected);
    if (rc != 0) {
        snprintf(r->err, sizeof r->err, "cannot connect: %s", uv_strerror(rc));
        conn_close(k);
        r->conn = NULL;
        req_fail_soon(r);
        return;
    }
    uv_tcp_nodelay(&k->u.tcp, 1);
}

/* ---- requests ------------------------------------------------------- */

static void on_req_closed(uv_handle_t *h)
{
    hc_req_t *r = sp_container_of(h, hc_req_t, timer);
    hc_t *c = r->c;
    explicit_bzero(r->head, strlen(r->head)); /* it may hold a token */
    free(r->head);
    free(r->body);
    sp_buf_free(&r->resp);
    sp_buf_free(&r->hold);
    free(r);
    client_release(c);
}

static void req_unlink(hc_req_t *r)
{
    for (hc_req_t **pp = &r->c->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            return;
        }
    }
}

/* Ends r once: detaches it, gives or closes its connection, calls done,
 * then frees it through its timer's close. */
static void req_finish(hc_req_t *r, int rc, const char *err)
{
    if (r->finished) return;
    r->finished = true;
    req_unlink(r);
    uv_timer_stop(&r->timer);
    if (r->resolving != NULL) {
        r->resolving->r = NULL; /* its callback frees it; a queued lookup is dropped */
        uv_cancel((uv_req_t *)&r->resolving->g);
        r->resolving = NULL;
    }
    conn_t *k = r->conn;
    r->conn = NULL;
    if (k != NULL) {
        /* Kept for reuse only when clean: an answer that came before the
         * whole request was sent leaves a write in flight. */
        if (rc == 0 && k->sock != NULL && http_should_keep_alive(&r->parser) && !h2o_socket_is_writing(k->sock))
            conn_park(k);
        else
            conn_close(k);
    }
    long status = rc == 0 ? (long)r->parser.status_code : 0;
    r->call.done(r->call.arg, rc, status, &r->resp, err ? err : "");
    uv_close((uv_handle_t *)&r->timer, on_req_closed);
}

static void on_timer(uv_timer_t *t);

/* A failure found while starting: done runs from the loop, never inside
 * hc_call. */
static void req_fail_soon(hc_req_t *r)
{
    r->failing = true;
    uv_timer_start(&r->timer, on_timer, 0, 0);
}

static void req_conn_failed(hc_req_t *r, const char *why)
{
    r->conn = NULL;
    if (why != NULL) snprintf(r->err, sizeof r->err, "%s", why);
    req_finish(r, SP_EIO, r->err);
}

static int on_headers_complete(http_parser *p)
{
    hc_req_t *r = p->data;
    return r->is_head ? 1 : 0; /* 1: no body follows */
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    hc_req_t *r = p->data;
    if (r->call.data == NULL) {
        size_t max = r->call.body_max ? r->call.body_max : HC_BODY_MAX;
        if (r->resp.n < max) sp_buf_add(&r->resp, at, n < max - r->resp.n ? n : max - r->resp.n);
        return 0;
    }
    /* Refused bytes, and what the parser finds after them in the bytes
     * already read, wait in hold; reading stops until hc_resume. */
    if (r->paused || !r->call.data(r->call.arg, at, n)) {
        sp_buf_add(&r->hold, at, n);
        r->paused = true;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    hc_req_t *r = p->data;
    /* 1xx answers come before the real one. */
    if (p->status_code >= 100 && p->status_code < 200) return 0;
    r->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void on_read(h2o_socket_t *sock, const char *err);

static void req_retry(hc_req_t *r)
{
    conn_t *k = r->conn;
    r->conn = NULL;
    conn_close(k);
    r->reused = false;
    r->eof = NULL;
    http_parser_init(&r->parser, HTTP_RESPONSE);
    r->parser.data = r;
    conn_open(r, NULL, NULL);
}

/* Parses what the socket holds, then either finishes r, waits paused,
 * or reads on. */
static void req_progress(hc_req_t *r)
{
    h2o_socket_t *sock = r->conn->sock;
    while (sock->input->size > 0 && !r->complete) {
        size_t n = http_parser_execute(&r->parser, &parser_settings, sock->input->bytes, sock->input->size);
        enum http_errno e = HTTP_PARSER_ERRNO(&r->parser);
        h2o_buffer_consume(&sock->input, n);
        if ((e != HPE_OK && e != HPE_PAUSED) || (e == HPE_OK && n == 0) || r->parser.upgrade) {
            snprintf(r->err, sizeof r->err, "bad answer: %s",
                     e != HPE_OK && e != HPE_PAUSED ? http_errno_description(e) : "an upgrade was not asked for");
            req_finish(r, SP_EIO, r->err);
            return;
        }
    }
    if (r->paused) {
        h2o_socket_read_stop(sock);
        return;
    }
    if (r->complete) {
        req_finish(r, 0, NULL);
        return;
    }
    if (r->eof == NULL) {
        if (!h2o_socket_is_reading(sock)) h2o_socket_read_start(sock, on_read);
        return;
    }
    if (!r->got_bytes && r->reused) {
        req_retry(r); /* the server had closed the kept-alive connection */
        return;
    }
    /* The end of the stream ends an answer that has no length. */
    http_parser_execute(&r->parser, &parser_settings, NULL, 0);
    if (r->complete) {
        req_finish(r, 0, NULL);
        return;
    }
    snprintf(r->err, sizeof r->err, "the connection closed before the answer ended (%s)", r->eof);
    req_finish(r, SP_EIO, r->err);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    if (k == NULL || k->req == NULL) return;
    hc_req_t *r = k->req;
    if (sock->input->size > 0) r->got_bytes = true;
    if (err != NULL) {
        r->eof = err;
        h2o_socket_read_stop(sock);
    }
    req_progress(r);
}

static void on_written(h2o_socket_t *sock, const char *err)
{
    conn_t *k = sock->data;
    if (k == NULL || k->req == NULL || err == NULL) return;
    hc_req_t *r = k->req;
    if (r->reused && !r->got_bytes) {
        req_retry(r);
        return;
    }
    snprintf(r->err, sizeof r->err, "cannot send the request: %s", err);
    req_finish(r, SP_EIO, r->err);
}

static void req_send(hc_req_t *r, conn_t *k)
{
    r->conn = k;
    k->req = r;
    h2o_iovec_t bufs[2] = {h2o_iovec_init(r->head, strlen(r->head)), h2o_iovec_init(r->body, r->call.body_n)};
    h2o_socket_write(k->sock, bufs, r->call.body_n ? 2 : 1, on_written);
    req_progress(r); /* starts reading */
}

static void req_start(hc_req_t *r)
{
    hc_t *c = r->c;
    conn_t *k = c->idle;
    if (k != NULL) {
        c->idle = k->next;
        c->nidle--;
        h2o_socket_read_stop(k->sock);
        r->reused = true;
        req_send(r, k);
        return;
    }
    conn_open(r, NULL, NULL);
}

static void on_timer(uv_timer_t *t)
{
    hc_req_t *r = sp_container_of(t, hc_req_t, timer);
    if (r->failing) {
        req_finish(r, SP_EIO, r->err);
        return;
    }
    if (r->kick) {
        /* After a resume: parse what the socket already holds, then read. */
        r->kick = false;
        uint64_t now = uv_now(r->c->loop);
        if (r->deadline) uv_timer_start(&r->timer, on_timer, r->deadline > now ? r->deadline - now : 0, 0);
        if (r->conn != NULL && r->conn->sock != NULL) req_progress(r);
        return;
    }
    snprintf(r->err, sizeof r->err, "no answer within %ld ms", r->call.timeout_ms);
    req_finish(r, SP_ETIMEDOUT, r->err);
}

static char *make_head(hc_t *c, const hc_call_t *call)
{
    sp_buf_t b = {0};
    /* Through a proxy, plain http names the whole URL (absolute form). */
    bool absolute = c->proxy.host != NULL && c->ssl == NULL;
    sp_buf_printf(&b, "%s %s%s%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " HC_USERAGENT "\r\n", call->method,
                  absolute ? "http://" : "", absolute ? c->authority : "", c->prefix, call->path, c->authority);
    if (absolute && c->proxy.auth) sp_buf_addstr(&b, c->proxy.auth);
    if (call->headers) sp_buf_addstr(&b, call->headers);
    bool bodyless = strcmp(call->method, "GET") == 0 || strcmp(call->method, "HEAD") == 0;
    if (call->body_n > 0 || !bodyless) sp_buf_printf(&b, "Content-Length: %zu\r\n", call->body_n);
    sp_buf_addstr(&b, "\r\n");
    sp_buf_add(&b, "", 1);
    return (char *)b.p;
}

hc_req_t *hc_call(hc_t *c, const hc_call_t *call)
{
    hc_req_t *r = sp_xcalloc(1, sizeof *r);
    r->c = c;
    r->call = *call;
    r->head = make_head(c, call);
    r->is_head = strcmp(call->method, "HEAD") == 0;
    r->call.method = r->call.path = r->call.headers = NULL; /* copied into head */
    if (call->body_n) {
        r->body = sp_xmalloc(call->body_n);
        memcpy(r->body, call->body, call->body_n);
    }
    r->call.body = NULL;
    http_parser_init(&r->parser, HTTP_RESPONSE);
    r->parser.data = r;
    uv_timer_init(c->loop, &r->timer);
    c->nopen++;
    r->next = c->reqs;
    c->reqs = r;
    if (call->timeout_ms > 0) {
        r->deadline = uv_now(c->loop) + (uint64_t)call->timeout_ms;
        uv_timer_start(&r->timer, on_timer, (uint64_t)call->timeout_ms, 0);
    }
    req_start(r);
    return r;
}

void hc_resume(hc_req_t *r)
{
    if (!r->paused || r->finished) return;
    if (r->hold.n > 0) {
        if (!r->call.data(r->call.arg, (const char *)r->hold.p, r->hold.n)) return; /* still full */
        r->hold.n = 0;
    }
    r->paused = false;
    /* The rest is parsed on the next loop turn, not inside the caller. */
    r->kick = true;
    uv_timer_start(&r->timer, on_timer, 0, 0);
}

void hc_cancel(hc_req_t *r) { req_finish(r, SP_ECLOSED, "canceled"); }

/* ---- the client ----------------------------------------------------- */

static int parse_base(hc_t *c, const char *base, char *err, size_t errlen)
{
    if (strncmp(base, "unix:", 5) == 0) {
        if (base[5] == 0) {
            snprintf(err, errlen, "\"%s\": expected unix:/path/to/socket", base);
            return SP_EINVAL;
        }
        c->socket = sp_xstrdup(base + 5);
        c->host = sp_xstrdup("localhost");
        c->authority = sp_xstrdup("localhost");
        c->prefix = sp_xstrdup("");
        return 0;
    }
    bool tls = strncmp(base, "https://", 8) == 0;
    if (!tls && strncmp(base, "http://", 7) != 0) {
        snprintf(err, errlen, "\"%s\": expected http://host:port, https://host:port or unix:/path", base);
        return SP_EINVAL;
    }
    const char *h = base + (tls ? 8 : 7), *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hc__hostport(h, hl, tls ? "443" : "80", &c->host, &c->port) != 0) {
        snprintf(err, errlen, "\"%s\": expected http[s]://host[:port][/path]", base);
        return SP_EINVAL;
    }
    bool v6 = strchr(c->host, ':') != NULL, dflt = strcmp(c->port, tls ? "443" : "80") == 0;
    c->hostport = sp_xasprintf(v6 ? "[%s]:%s" : "%s:%s", c->host, c->port);
    c->authority = dflt ? sp_xasprintf(v6 ? "[%s]" : "%s", c->host) : sp_xstrdup(c->hostport);
    int rc = hc__proxy_from_env(&c->proxy, tls, c->host, err, errlen);
    if (rc != 0) return rc;
    c->prefix = sp_xstrdup(slash ? slash : "");
    for (size_t n = strlen(c->prefix); n > 0 && c->prefix[n - 1] == '/';) c->prefix[--n] = 0;
    if (tls) {
        c->ssl = SSL_CTX_new(TLS_client_method());
        if (c->ssl == NULL) {
            snprintf(err, errlen, "cannot set up TLS");
            return SP_EIO;
        }
        SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION);
        SSL_CTX_set_default_verify_paths(c->ssl); /* honours SSL_CERT_FILE and SSL_CERT_DIR */
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
        /* OpenSSL checks the name (or address) the certificate is for;
         * h2o does not for an address. */
        X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(c->ssl);
        if (X509_VERIFY_PARAM_set1_ip_asc(vp, c->host) != 1) X509_VERIFY_PARAM_set1_host(vp, c->host, 0);
    }
    return 0;
}

int hc_new(hc_t **out, struct uv_loop_s *loop, const char *base, char *err, size_t errlen)
{
    hc_t *c = sp_xcalloc(1, sizeof *c);
    c->loop = loop;
    int rc = parse_base(c, base, err, errlen);
    if (rc != 0) {
        client_clear(c);
        free(c);
        return rc;
    }
    c->nopen = 1; /* the client's own reference, dropped by hc_free */
    sp_handle_opened();
    *out = c;
    return 0;
}

void hc_free(hc_t *c)
{
    if (c == NULL) return;
    c->closing = true;
    while (c->reqs) hc_cancel(c->reqs);
    while (c->idle) {
        conn_t *k = c->idle;
        c->idle = k->next;
        c->nidle--;
        conn_close(k);
    }
    client_release(c);
}

/* ---- one blocking request ------------------------------------------- */

typedef struct {
    bool done;
    int rc;
    long status;
    sp_buf_t *resp;
    char *err;
    size_t errlen;
} sync_t;

static void on_sync_done(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    sync_t *s = arg;
    s->done = true;
    s->rc = rc;
    s->status = status;
    if (rc == 0)
        sp_buf_add(s->resp, body->p, body->n);
    else
        snprintf(s->err, s->errlen, "%s", err);
}

int hc_sync(const char *base, const hc_call_t *call, long *status, sp_buf_t *resp, char *err, size_t errlen)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) {
        snprintf(err, errlen, "cannot create an event loop");
        return SP_EIO;
    }
    hc_t *c;
    int rc = hc_new(&c, &loop, base, err, errlen);
    if (rc == 0) {
        sync_t s = {.resp = resp, .err = err, .errlen = errlen};
        hc_call_t k = *call;
        k.data = NULL;
        k.done = on_sync_done;
        k.arg = &s;
        hc_call(c, &k);
        while (!s.done) uv_run(&loop, UV_RUN_ONCE);
        hc_free(c);
        rc = s.rc;
        if (rc == 0) *status = s.status;
    }
    uv_run(&loop, UV_RUN_DEFAULT); /* the close callbacks */
    uv_loop_close(&loop);
    return rc;
}

char *hc_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    sp_buf_t b = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-._~", *p)) {
            sp_buf_add(&b, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            sp_buf_add(&b, e, 3);
        }
    }
    sp_buf_add(&b, "", 1);
    return (char *)b.p;
}
