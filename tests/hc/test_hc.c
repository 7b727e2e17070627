/* The HTTP client (hc): real sockets to a scripted server thread that
 * writes raw HTTP/1.1 answers, so each case (kept-alive reuse, a server
 * that dropped an idle connection, chunked and until-close bodies,
 * back-pressure, timeouts, TLS checks) is exact. */
#include "hc/hc.h"
#include "hc/hc_internal.h"
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

/* ---- the scripted server -------------------------------------------- */

typedef struct srv srv_t;
/* Serves one accepted connection (index k from 0). */
typedef void (*srv_conn_fn)(srv_t *s, int fd, SSL *ssl, int k);

struct srv {
    int lfd;
    srv_conn_fn fn;
    SSL_CTX *tls; /* NULL: plain */
    int nconns;   /* connections to accept, then the thread ends */
    int nreqs;    /* requests read, over all connections */
    pthread_t th;
    char path[108];
    int port;
    char last[4096]; /* the latest request's head, as received */
    SSL_CTX *tunnel; /* serve_connect: TLS inside the CONNECT tunnel */
};

static ssize_t srv_recv(int fd, SSL *ssl, char *b, size_t n) { return ssl ? SSL_read(ssl, b, (int)n) : read(fd, b, n); }

static void srv_send(int fd, SSL *ssl, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = ssl ? SSL_write(ssl, b, (int)n) : write(fd, b, n);
        if (w <= 0) return;
        b += w, n -= (size_t)w;
    }
}

static void srv_sends(int fd, SSL *ssl, const char *s) { srv_send(fd, ssl, s, strlen(s)); }

/* Reads one request (headers and a Content-Length body). False at EOF. */
static bool srv_read_request(srv_t *s, int fd, SSL *ssl)
{
    char buf[65536];
    size_t n = 0;
    for (;;) {
        ssize_t r = srv_recv(fd, ssl, buf + n, sizeof buf - 1 - n);
        if (r <= 0) return false;
        n += (size_t)r;
        buf[n] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL) continue;
        const char *cl = strcasestr(buf, "\r\nContent-Length: ");
        size_t want = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 18, NULL, 10) : 0);
        if (n >= want) {
            snprintf(s->last, sizeof s->last, "%.*s", (int)(end + 4 - buf), buf);
            __atomic_add_fetch(&s->nreqs, 1, __ATOMIC_SEQ_CST);
            return true;
        }
    }
}

static void *srv_main(void *arg)
{
    srv_t *s = arg;
    for (int k = 0; k < s->nconns; k++) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) break;
        SSL *ssl = NULL;
        if (s->tls) {
            ssl = SSL_new(s->tls);
            SSL_set_fd(ssl, fd);
            if (SSL_accept(ssl) != 1) {
                SSL_free(ssl);
                close(fd);
                continue; /* the client refused our certificate */
            }
        }
        s->fn(s, fd, ssl, k);
        if (ssl) {
            SSL_shutdown(ssl);
            SSL_free(ssl);
        }
        close(fd);
    }
    return NULL;
}

static void srv_start_unix(srv_t *s, t_ctx_t *t, srv_conn_fn fn, int nconns)
{
    s->fn = fn;
    s->nconns = nconns;
    snprintf(s->path, sizeof s->path, "%s", t_path(t, "s.sock"));
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", s->path);
    s->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->lfd, 8) != 0) abort();
    pthread_create(&s->th, NULL, srv_main, s);
}

static void srv_start_tcp(srv_t *s, srv_conn_fn fn, int nconns, SSL_CTX *tls)
{
    s->fn = fn;
    s->nconns = nconns;
    s->tls = tls;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->lfd, 8) != 0) abort();
    getsockname(s->lfd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    pthread_create(&s->th, NULL, srv_main, s);
}

static void srv_stop(srv_t *s)
{
    shutdown(s->lfd, SHUT_RDWR); /* ends a pending accept */
    pthread_join(s->th, NULL);
    close(s->lfd);
}

/* ---- the client side -------------------------------------------------- */

typedef struct {
    bool done;
    int rc;
    long status;
    sp_buf_t body;
    char err[256];
} result_t;

static void on_done(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    result_t *r = arg;
    r->done = true;
    r->rc = rc;
    r->status = status;
    sp_buf_add(&r->body, body->p, body->n);
    snprintf(r->err, sizeof r->err, "%s", err);
}

/* Runs the loop until r is done (bounded by the call's own timeout). */
static void run_until(uv_loop_t *loop, result_t *r)
{
    while (!r->done) uv_run(loop, UV_RUN_ONCE);
}

static hc_req_t *get(hc_t *c, const char *path, long timeout_ms, result_t *r)
{
    hc_call_t k = {.method = "GET", .path = path, .timeout_ms = timeout_ms, .done = on_done, .arg = r};
    return hc_call(c, &k);
}

/* A fresh loop and a client of the scripted server's unix socket. */
static hc_t *client_of(uv_loop_t *loop, const srv_t *s)
{
    uv_loop_init(loop);
    hc_t *c;
    char err[256], base[200];
    snprintf(base, sizeof base, "unix:%s", s->path);
    return hc_new(&c, loop, base, err, sizeof err) == 0 ? c : NULL;
}

static void close_all(uv_loop_t *loop, hc_t *c)
{
    hc_free(c);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

/* ---- kept-alive connections -------------------------------------------- */

static void serve_keepalive(srv_t *s, int fd, SSL *ssl, int k)
{
    if (k == 0) {
        /* Answers one request, then reads the next and drops the
         * connection without answering, as a server whose keep-alive
         * timer fired at that moment would. */
        if (!srv_read_request(s, fd, ssl)) return;
        srv_sends(fd, ssl, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst");
        srv_read_request(s, fd, ssl);
        return;
    }
    if (!srv_read_request(s, fd, ssl)) return;
    srv_sends(fd, ssl, "HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\nsecond");
}

TEST(hc_reuses_a_connection_and_retries_when_the_server_dropped_it)
{
    srv_t s = {0};
    srv_start_unix(&s, t, serve_keepalive, 2);
    uv_loop_t loop;
    hc_t *c = client_of(&loop, &s);
    T_ASSERT(c != NULL);
    result_t a = {0}, b = {0};
    get(c, "/a", 10000, &a);
    run_until(&loop, &a);
    T_EQ_U64(a.rc, 0);
    T_EQ_U64(a.status, 200);
    T_ASSERT(a.body.n == 5 && memcmp(a.body.p, "first", 5) == 0);
    get(c, "/b", 10000, &b);
    run_until(&loop, &b);
    T_EQ_U64(b.rc, 0);
    T_EQ_U64(b.status, 201);
    T_ASSERT(b.body.n == 6 && memcmp(b.body.p, "second", 6) == 0);
    close_all(&loop, c);
    srv_stop(&s);
    T_EQ_U64(s.nreqs, 3); /* /a, /b on the dropped connection, /b again */
    sp_buf_free(&a.body);
    sp_buf_free(&b.body);
}

/* ---- bodies ------------------------------------------------------------ */

static void serve_bodies(srv_t *s, int fd, SSL *ssl, int k)
{
    if (!srv_read_request(s, fd, ssl)) return;
    srv_sends(fd, ssl, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    if (!srv_read_request(s, fd, ssl)) return;
    srv_sends(fd, ssl, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    if (!srv_read_request(s, fd, ssl)) return;
    srv_sends(fd, ssl, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end");
}

TEST(hc_reads_chunked_empty_and_until_close_bodies)
{
    srv_t s = {0};
    srv_start_unix(&s, t, serve_bodies, 1);
    uv_loop_t loop;
    hc_t *c = client_of(&loop, &s);
    T_ASSERT(c != NULL);
    result_t r[3] = {0};
    for (int i = 0; i < 3; i++) {
        get(c, "/x", 10000, &r[i]);
        run_until(&loop, &r[i]);
        T_EQ_U64(r[i].rc, 0);
    }
    T_ASSERT(r[0].status == 200 && r[0].body.n == 7 && memcmp(r[0].body.p, "abcdefg", 7) == 0);
    T_ASSERT(r[1].status == 404 && r[1].body.n == 0);
    T_ASSERT(r[2].status == 200 && r[2].body.n == 13 && memcmp(r[2].body.p, "until the end", 13) == 0);
    close_all(&loop, c);
    srv_stop(&s);
    T_EQ_U64(s.nreqs, 3); /* all on one connection */
    for (int i = 0; i < 3; i++) sp_buf_free(&r[i].body);
}

/* ---- back-pressure ------------------------------------------------------ */

#define BIG (3u << 20)

static void serve_big(srv_t *s, int fd, SSL *ssl, int k)
{
    if (!srv_read_request(s, fd, ssl)) return;
    /* First an answer that ends when the connection closes, then (on the
     * second connection) one with a length, whose end the parser finds
     * while the client is paused. */
    if (k == 0)
        srv_sends(fd, ssl, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    else
        srv_sends(fd, ssl, "HTTP/1.1 200 OK\r\nContent-Length: 3145728\r\n\r\n");
    char *b = malloc(BIG);
    for (size_t i = 0; i < BIG; i++) b[i] = (char)(i * 7 + i / 251);
    srv_send(fd, ssl, b, BIG);
    free(b);
    if (k == 1) srv_read_request(s, fd, ssl); /* until the client closes */
}

typedef struct {
    result_t r; /* first: on_done takes the same arg */
    hc_req_t *req;
    uv_timer_t resume;
    size_t got, calls, refused;
    bool bad, closed;
} stream_t;

static void on_resume_closed(uv_handle_t *h) { ((stream_t *)h->data)->closed = true; }

static void on_resume(uv_timer_t *tm)
{
    stream_t *st = tm->data;
    if (!st->r.done) hc_resume(st->req);
}

static bool on_data(void *arg, const char *p, size_t n)
{
    stream_t *st = arg;
    /* Refuse every other delivery, resuming from a timer, so the client
     * must hold bytes, stop reading and see the end of the stream while
     * paused. */
    if (st->calls++ % 2 == 0) {
        st->refused++;
        uv_timer_start(&st->resume, on_resume, 1, 0);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        size_t k = st->got + i;
        if (p[i] != (char)(k * 7 + k / 251)) st->bad = true;
    }
    st->got += n;
    return true;
}

static void stream_once(t_ctx_t *t, hc_t *c, uv_loop_t *loop)
{
    stream_t st = {0};
    uv_timer_init(loop, &st.resume);
    st.resume.data = &st;
    hc_call_t k = {.method = "POST", .path = "/stream", .data = on_data, .done = on_done, .arg = &st};
    st.req = hc_call(c, &k);
    run_until(loop, &st.r);
    uv_close((uv_handle_t *)&st.resume, on_resume_closed);
    while (!st.closed) uv_run(loop, UV_RUN_ONCE); /* st is on this stack frame */
    sp_buf_free(&st.r.body);
    T_EQ_U64(st.r.rc, 0);
    T_EQ_U64(st.r.status, 200);
    T_EQ_U64(st.got, BIG);
    T_ASSERT(!st.bad);
    T_ASSERT(st.refused >= 2);
}

TEST(hc_back_pressure_keeps_every_byte_up_to_the_end)
{
    srv_t s = {0};
    srv_start_unix(&s, t, serve_big, 2);
    uv_loop_t loop;
    hc_t *c = client_of(&loop, &s);
    T_ASSERT(c != NULL);
    stream_once(t, c, &loop); /* ends at the close */
    if (t->failed) return;
    stream_once(t, c, &loop); /* ends at its length */
    close_all(&loop, c);
    srv_stop(&s);
    T_EQ_U64(s.nreqs, 2);
}

/* ---- deadlines and cancel ----------------------------------------------- */

static void serve_silent(srv_t *s, int fd, SSL *ssl, int k)
{
    srv_read_request(s, fd, ssl);
    char b[16];
    while (srv_recv(fd, ssl, b, sizeof b) > 0) {
    } /* until the client goes */
}

TEST(hc_times_out_and_cancels)
{
    srv_t s = {0};
    srv_start_unix(&s, t, serve_silent, 2);
    uv_loop_t loop;
    hc_t *c = client_of(&loop, &s);
    T_ASSERT(c != NULL);
    result_t a = {0}, b = {0};
    uint64_t t0 = uv_hrtime();
    get(c, "/slow", 150, &a);
    run_until(&loop, &a);
    T_EQ_U64(a.rc, (uint64_t)SP_ETIMEDOUT);
    T_ASSERT(uv_hrtime() - t0 >= 140u * 1000000u);
    hc_req_t *r = get(c, "/slow", 0, &b);
    while (s.nreqs < 2) uv_run(&loop, UV_RUN_NOWAIT); /* the server has it */
    hc_cancel(r);
    T_ASSERT(b.done); /* at once */
    T_EQ_U64(b.rc, (uint64_t)SP_ECLOSED);
    close_all(&loop, c);
    srv_stop(&s);
    sp_buf_free(&a.body);
    sp_buf_free(&b.body);
}

TEST(hc_refuses_bad_bases_and_reports_a_refused_connection)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    hc_t *c;
    char err[256];
    T_RC(SP_EINVAL, hc_new(&c, &loop, "ftp://x", err, sizeof err));
    T_RC(SP_EINVAL, hc_new(&c, &loop, "http://host:99999", err, sizeof err));
    T_RC(SP_EINVAL, hc_new(&c, &loop, "unix:", err, sizeof err));
    T_RC(SP_EINVAL, hc_new(&c, &loop, "http://[::1", err, sizeof err));
    T_OK(hc_new(&c, &loop, "unix:/nonexistent/spool.sock", err, sizeof err));
    result_t a = {0};
    get(c, "/", 5000, &a);
    run_until(&loop, &a);
    T_EQ_U64(a.rc, (uint64_t)SP_EIO);
    T_ASSERT(strstr(a.err, "cannot connect") != NULL);
    close_all(&loop, c);
    /* A name that does not resolve: the failure comes from the loop, not
     * from inside hc_call. */
    uv_loop_init(&loop);
    T_OK(hc_new(&c, &loop, "http://no-such-host.invalid:8080/prefix/", err, sizeof err));
    result_t b = {0};
    get(c, "/", 5000, &b);
    T_ASSERT(!b.done);
    run_until(&loop, &b);
    T_EQ_U64(b.rc, (uint64_t)SP_EIO);
    T_ASSERT(strstr(b.err, "cannot resolve no-such-host.invalid") != NULL);
    close_all(&loop, c);
    sp_buf_free(&b.body);
    /* Canceled while the name is being looked up: done runs at once, the
     * lookup's own end is absorbed, and nothing leaks. */
    uv_loop_init(&loop);
    T_OK(hc_new(&c, &loop, "http://no-such-host.invalid:8080/", err, sizeof err));
    result_t d = {0};
    hc_cancel(get(c, "/", 5000, &d));
    T_ASSERT(d.done && d.rc == SP_ECLOSED);
    close_all(&loop, c);
    sp_buf_free(&d.body);
    char *e = hc_escape("a b/c~é");
    T_EQ_STR(e, "a%20b%2Fc~%C3%A9");
    free(e);
    sp_buf_free(&a.body);
}

/* ---- TLS ---------------------------------------------------------------- */

static void serve_tls(srv_t *s, int fd, SSL *ssl, int k)
{
    if (!srv_read_request(s, fd, ssl)) return;
    srv_sends(fd, ssl, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure");
}

/* A CA and a certificate for "localhost" only, made with the openssl
 * command. */
static bool make_certs(t_ctx_t *t)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
             "-subj /CN=spool-test-ca >/dev/null 2>&1 && "
             "openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost >/dev/null 2>&1 && "
             "printf 'subjectAltName=DNS:localhost\\n' > ext && "
             "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 "
             "-extfile ext >/dev/null 2>&1",
             t->dir);
    return system(cmd) == 0;
}

static result_t tls_get(const char *base)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    hc_t *c;
    char err[256];
    result_t r = {0};
    if (hc_new(&c, &loop, base, err, sizeof err) != 0) {
        r.rc = -1;
        return r;
    }
    get(c, "/", 10000, &r);
    run_until(&loop, &r);
    close_all(&loop, c);
    return r;
}

TEST(hc_https_checks_the_certificate_and_the_host_name)
{
    T_ASSERT(make_certs(t));
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    T_ASSERT(SSL_CTX_use_certificate_file(ctx, t_path(t, "srv.pem"), SSL_FILETYPE_PEM) == 1);
    T_ASSERT(SSL_CTX_use_PrivateKey_file(ctx, t_path(t, "srv.key"), SSL_FILETYPE_PEM) == 1);
    srv_t s = {0};
    srv_start_tcp(&s, serve_tls, 3, ctx);
    char base[200];
    /* Trusted CA, matching name: the answer comes. */
    setenv("SSL_CERT_FILE", t_path(t, "ca.pem"), 1);
    snprintf(base, sizeof base, "https://localhost:%d", s.port);
    result_t ok = tls_get(base);
    T_EQ_U64(ok.rc, 0);
    T_ASSERT(ok.status == 200 && ok.body.n == 6 && memcmp(ok.body.p, "secure", 6) == 0);
    /* Trusted CA, but the certificate does not name 127.0.0.1. */
    snprintf(base, sizeof base, "https://127.0.0.1:%d", s.port);
    result_t name = tls_get(base);
    T_EQ_U64(name.rc, (uint64_t)SP_EIO);
    /* A certificate from a CA we do not trust. */
    setenv("SSL_CERT_FILE", "/dev/null", 1);
    setenv("SSL_CERT_DIR", t->dir, 1); /* no hashed CA links there */
    snprintf(base, sizeof base, "https://localhost:%d", s.port);
    result_t untrusted = tls_get(base);
    T_EQ_U64(untrusted.rc, (uint64_t)SP_EIO);
    srv_stop(&s);
    SSL_CTX_free(ctx);
    T_EQ_U64(s.nreqs, 1); /* only the trusted, matching one sent its request */
    sp_buf_free(&ok.body);
    sp_buf_free(&name.body);
    sp_buf_free(&untrusted.body);
}

/* ---- proxies ------------------------------------------------------------- */

static void serve_proxy_http(srv_t *s, int fd, SSL *ssl, int k)
{
    if (!srv_read_request(s, fd, ssl)) return;
    srv_sends(fd, ssl, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nvia-proxy");
}

TEST(hc_goes_through_an_http_proxy_named_in_the_environment)
{
    srv_t s = {0};
    srv_start_tcp(&s, serve_proxy_http, 1, NULL);
    char proxy[128];
    snprintf(proxy, sizeof proxy, "http://us%%40er:p%%3Ass@127.0.0.1:%d/", s.port);
    setenv("http_proxy", proxy, 1);
    setenv("https_proxy", "http://127.0.0.1:1", 1); /* not for http */
    result_t a = {0};
    {
        uv_loop_t loop;
        uv_loop_init(&loop);
        hc_t *c;
        char err[256];
        T_OK(hc_new(&c, &loop, "http://ci.example.invalid:8080/prefix/", err, sizeof err));
        get(c, "/x?y=1", 10000, &a);
        run_until(&loop, &a);
        close_all(&loop, c);
    }
    srv_stop(&s);
    T_EQ_U64(a.rc, 0);
    T_ASSERT(a.body.n == 9 && memcmp(a.body.p, "via-proxy", 9) == 0);
    T_ASSERT(strncmp(s.last, "GET http://ci.example.invalid:8080/prefix/x?y=1 HTTP/1.1\r\n", 57) == 0);
    T_ASSERT(strstr(s.last, "\r\nHost: ci.example.invalid:8080\r\n") != NULL);
    T_ASSERT(strstr(s.last, "\r\nProxy-Authorization: Basic dXNAZXI6cDpzcw==\r\n") != NULL); /* us@er:p:ss */
    /* no_proxy: the same request goes direct, and the name does not resolve. */
    setenv("NO_PROXY", "localhost, .example.invalid", 1);
    result_t b = {0};
    uv_loop_t loop;
    uv_loop_init(&loop);
    hc_t *c;
    char err[256];
    T_OK(hc_new(&c, &loop, "http://ci.example.invalid:8080/", err, sizeof err));
    get(c, "/", 5000, &b);
    run_until(&loop, &b);
    close_all(&loop, c);
    T_EQ_U64(b.rc, (uint64_t)SP_EIO);
    T_ASSERT(strstr(b.err, "cannot resolve ci.example.invalid") != NULL);
    sp_buf_free(&a.body);
    sp_buf_free(&b.body);
}

static void serve_connect(srv_t *s, int fd, SSL *unused, int k)
{
    if (!srv_read_request(s, fd, NULL)) return;
    if (k == 1) {
        srv_sends(fd, NULL, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    srv_sends(fd, NULL, "HTTP/1.1 200 Connection established\r\n\r\n");
    SSL *ssl = SSL_new(s->tunnel);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) serve_tls(s, fd, ssl, k);
    SSL_shutdown(ssl);
    SSL_free(ssl);
}

TEST(hc_tunnels_https_through_a_proxy)
{
    T_ASSERT(make_certs(t));
    srv_t s = {0};
    s.tunnel = SSL_CTX_new(TLS_server_method());
    T_ASSERT(SSL_CTX_use_certificate_file(s.tunnel, t_path(t, "srv.pem"), SSL_FILETYPE_PEM) == 1);
    T_ASSERT(SSL_CTX_use_PrivateKey_file(s.tunnel, t_path(t, "srv.key"), SSL_FILETYPE_PEM) == 1);
    srv_start_tcp(&s, serve_connect, 2, NULL);
    char proxy[128];
    snprintf(proxy, sizeof proxy, "127.0.0.1:%d", s.port); /* no scheme: http */
    setenv("HTTPS_PROXY", proxy, 1);
    setenv("SSL_CERT_FILE", t_path(t, "ca.pem"), 1);
    result_t ok = tls_get("https://localhost:4443");
    char inner_head[4096];
    snprintf(inner_head, sizeof inner_head, "%s", s.last);
    result_t refused = tls_get("https://localhost:4443");
    srv_stop(&s);
    SSL_CTX_free(s.tunnel);
    T_EQ_U64(ok.rc, 0);
    T_ASSERT(ok.status == 200 && ok.body.n == 6 && memcmp(ok.body.p, "secure", 6) == 0);
    T_ASSERT(strncmp(inner_head, "GET / HTTP/1.1\r\n", 16) == 0); /* the last request came through the tunnel */
    T_EQ_U64(refused.rc, (uint64_t)SP_EIO);
    T_ASSERT(strstr(refused.err, "refused the tunnel to localhost:4443 (HTTP 403)") != NULL);
    T_ASSERT(strncmp(s.last, "CONNECT localhost:4443 HTTP/1.1\r\nHost: localhost:4443\r\n", 52) == 0);
    sp_buf_free(&ok.body);
    sp_buf_free(&refused.body);
}

TEST(hc_proxy_settings_are_checked_and_never_echo_a_password)
{
    T_ASSERT(hc__no_proxy_match("*", "anything"));
    T_ASSERT(hc__no_proxy_match("a.com, .example.org", "ci.example.org"));
    T_ASSERT(hc__no_proxy_match("example.org", "EXAMPLE.org"));
    T_ASSERT(!hc__no_proxy_match("example.org", "badexample.org"));
    T_ASSERT(!hc__no_proxy_match("", "example.org"));
    T_ASSERT(!hc__no_proxy_match(NULL, "example.org"));
    setenv("https_proxy", "socks5://user:secret@proxy:1080", 1);
    uv_loop_t loop;
    uv_loop_init(&loop);
    hc_t *c;
    char err[256];
    T_RC(SP_EINVAL, hc_new(&c, &loop, "https://server.example", err, sizeof err));
    T_ASSERT(strstr(err, "socks5") != NULL && strstr(err, "secret") == NULL);
    setenv("https_proxy", "http://proxy:notaport", 1);
    T_RC(SP_EINVAL, hc_new(&c, &loop, "https://server.example", err, sizeof err));
    /* A unix socket never goes through a proxy. */
    T_OK(hc_new(&c, &loop, "unix:/nonexistent.sock", err, sizeof err));
    close_all(&loop, c);
}
