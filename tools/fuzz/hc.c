/* libFuzzer target: the HTTP client (hc) reading an answer.
 *
 * Input: one mode byte, then the bytes a server writes back before it
 * closes the connection. Mode bit 0: stream the body to a data callback
 * (bits 1-2 pick how often it refuses bytes, which pauses the client
 * until a resume from the loop); bit 3: a HEAD request. The server is a
 * unix socket on the same libuv loop. Nothing may crash, leak or hang
 * (the request has a deadline); done runs exactly once. */
#include "hc/hc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
    uv_loop_t loop;
    uv_pipe_t listener, peer;
    uv_write_t w;
    uv_timer_t resume;
    const uint8_t *resp;
    size_t resp_n;
    hc_req_t *req;
    int done, refuse_every, calls;
    size_t streamed;
} fz_t;

static void on_peer_written(uv_write_t *w, int status)
{
    fz_t *f = w->data;
    uv_close((uv_handle_t *)&f->peer, NULL); /* the end of an until-close answer */
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
}

static void on_request(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {} /* the request is not checked here */

static void on_connection(uv_stream_t *l, int status)
{
    fz_t *f = l->data;
    if (status != 0 || f->peer.loop != NULL) return; /* one connection: a retry gets none */
    uv_pipe_init(&f->loop, &f->peer, 0);
    if (uv_accept(l, (uv_stream_t *)&f->peer) != 0) return;
    uv_read_start((uv_stream_t *)&f->peer, on_alloc, on_request);
    uv_buf_t b = uv_buf_init((char *)f->resp, (unsigned)f->resp_n);
    f->w.data = f;
    uv_write(&f->w, (uv_stream_t *)&f->peer, &b, 1, on_peer_written);
}

static void on_resume(uv_timer_t *t)
{
    fz_t *f = t->data;
    if (!f->done) hc_resume(f->req);
}

static bool on_data(void *arg, const char *p, size_t n)
{
    fz_t *f = arg;
    if (f->refuse_every && ++f->calls % f->refuse_every == 0) {
        uv_timer_start(&f->resume, on_resume, 1, 0); /* 0 would starve the loop's other timers */
        return false;
    }
    f->streamed += n;
    return true;
}

static void on_done(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    fz_t *f = arg;
    if (f->done++ || (rc == 0 && body->n > f->resp_n) || err == NULL) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static char path[108];
    if (path[0] == 0) snprintf(path, sizeof path, "/tmp/spool-fuzz-hc-%d.sock", (int)getpid());
    if (n < 1) return 0;
    fz_t *f = calloc(1, sizeof *f);
    f->resp = data + 1;
    f->resp_n = n - 1;
    static const int every[4] = {0, 2, 3, 5}; /* never 1: some bytes must get through */
    f->refuse_every = every[(data[0] >> 1) & 3];
    uv_loop_init(&f->loop);
    uv_pipe_init(&f->loop, &f->listener, 0);
    f->listener.data = f;
    unlink(path);
    if (uv_pipe_bind(&f->listener, path) != 0 || uv_listen((uv_stream_t *)&f->listener, 4, on_connection) != 0) abort();
    uv_timer_init(&f->loop, &f->resume);
    f->resume.data = f;
    hc_t *c;
    char err[256], base[128];
    snprintf(base, sizeof base, "unix:%s", path);
    if (hc_new(&c, &f->loop, base, err, sizeof err) != 0) abort();
    hc_call_t k = {.method = data[0] & 8 ? "HEAD" : "GET",
                   .path = "/",
                   .timeout_ms = 2000,
                   .data = data[0] & 1 ? on_data : NULL,
                   .done = on_done,
                   .arg = f};
    f->req = hc_call(c, &k);
    while (!f->done) uv_run(&f->loop, UV_RUN_ONCE);
    hc_free(c);
    uv_close((uv_handle_t *)&f->listener, NULL);
    uv_close((uv_handle_t *)&f->resume, NULL);
    if (f->peer.loop != NULL && !uv_is_closing((uv_handle_t *)&f->peer)) uv_close((uv_handle_t *)&f->peer, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&f->loop) != 0) __builtin_trap(); /* a handle left open */
    free(f);
    return 0;
}
