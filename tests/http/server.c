/* See server.h. */
#include "server.h"

#include <curl/curl.h>
#include <signal.h>

static void on_drained(void *arg) { uv_stop(&((tsrv_t *)arg)->loop); }

static void on_stop(uv_async_t *a)
{
    tsrv_t *s = a->data;
    uv_close((uv_handle_t *)a, NULL);
    http_drain(s->http, on_drained, s);
}

static void *srv_main(void *arg)
{
    tsrv_t *s = arg;
    uv_loop_init(&s->loop);
    http_opts_t o = {.loop = &s->loop,
                     .log = s->log,
                     .proj = s->proj,
                     .listen = "127.0.0.1:0",
                     .admin_socket = s->sock,
                     .threads = s->threads};
    s->open_rc = http_open(&s->http, &o, s->err, sizeof s->err);
    uv_async_init(&s->loop, &s->stop, on_stop);
    s->stop.data = s;
    sem_post(&s->ready);
    if (s->open_rc != 0) {
        uv_close((uv_handle_t *)&s->stop, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
        return NULL;
    }
    uv_run(&s->loop, UV_RUN_DEFAULT);
    http_close(s->http);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    s->close_rc = uv_loop_close(&s->loop);
    return NULL;
}

int tsrv_start(t_ctx_t *t, tsrv_t *s, bool start_projector, int threads)
{
    /* as `spool serve` does: a client that hung up is an error code on
     * write, not a signal */
    signal(SIGPIPE, SIG_IGN);
    memset(s, 0, sizeof *s);
    s->threads = threads;
    snprintf(s->sock, sizeof s->sock, "%s", t_path(t, "spool.sock"));
    int rc = log_open(&s->log, t_path(t, "log"), NULL, NULL, 0);
    if (rc == 0) rc = proj_open(&s->proj, s->log, t_path(t, "views"), proj_all, proj_all_count, NULL, 0);
    if (rc == 0 && start_projector) rc = proj_start(s->proj);
    if (rc != 0) return rc;
    sem_init(&s->ready, 0, 0);
    pthread_create(&s->th, NULL, srv_main, s);
    sem_wait(&s->ready);
    return s->open_rc;
}

void tsrv_stop(tsrv_t *s)
{
    if (s->open_rc == 0) uv_async_send(&s->stop);
    pthread_join(s->th, NULL);
    sem_destroy(&s->ready);
    proj_close(s->proj);
    log_close(s->log);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    sp_buf_add(arg, p, size * n);
    return size * n;
}

int tsrv_request(tsrv_t *s, const char *method, const char *path, const char *body, bool admin, tresp_t *r)
{
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", http_port(s->http), path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (admin) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, s->sock);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        if (ct) snprintf(r->ctype, sizeof r->ctype, "%s", ct);
    }
    curl_easy_cleanup(c);
    sp_buf_add(&r->body, "", 1);
    r->body.n--;
    return cc == CURLE_OK ? 0 : SP_EIO;
}
