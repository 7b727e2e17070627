/* The agent's blocking client of the server, one per thread. Each owns a
 * private libuv loop with an hc client on it (which keeps the connection
 * to the server between requests) and runs that loop only while a
 * request is in flight. Another thread can cut a request short (a long
 * poll, when the agent stops) through a uv_async. */
#include "agent_internal.h"

#include "../hc/hc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct agent__http {
    uv_loop_t loop;
    uv_async_t wake;
    hc_t *hc;
    char *server; /* for messages */
    char *auth;   /* "Authorization: Bearer ...\r\n" */
    hc_req_t *cur;
    atomic_bool aborted;
};

static void on_wake(uv_async_t *a)
{
    agent__http_t *h = sp_container_of(a, agent__http_t, wake);
    if (atomic_load(&h->aborted) && h->cur != NULL) hc_cancel(h->cur);
}

int agent__http_new(agent__http_t **out, const char *server, const char *token, char *err, size_t errlen)
{
    if (server == NULL || token == NULL) {
        snprintf(err, errlen, "no server or token");
        return SP_EINVAL;
    }
    agent__http_t *h = sp_xcalloc(1, sizeof *h);
    if (uv_loop_init(&h->loop) != 0) {
        snprintf(err, errlen, "cannot create an event loop");
        free(h);
        return SP_EIO;
    }
    char why[256];
    int rc = hc_new(&h->hc, &h->loop, server, why, sizeof why);
    if (rc != 0) {
        snprintf(err, errlen, "server %s", why);
        uv_loop_close(&h->loop);
        free(h);
        return rc;
    }
    uv_async_init(&h->loop, &h->wake, on_wake);
    h->server = sp_xstrdup(server);
    h->auth = sp_xasprintf("Authorization: Bearer %s\r\n", token);
    sp_handle_opened();
    *out = h;
    return 0;
}

void agent__http_free(agent__http_t *h)
{
    if (h == NULL) return;
    hc_free(h->hc);
    uv_close((uv_handle_t *)&h->wake, NULL);
    uv_run(&h->loop, UV_RUN_DEFAULT); /* the close callbacks */
    uv_loop_close(&h->loop);
    explicit_bzero(h->auth, strlen(h->auth));
    free(h->auth);
    free(h->server);
    free(h);
    sp_handle_closed();
}

void agent__http_abort(agent__http_t *h)
{
    atomic_store(&h->aborted, true);
    uv_async_send(&h->wake);
}

typedef struct {
    bool done;
    int rc;
    long status;
    sp_buf_t *resp;
    char *err;
    size_t errlen;
} post_t;

static void on_done(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    post_t *p = arg;
    p->done = true;
    p->rc = rc;
    p->status = status;
    if (rc == 0)
        sp_buf_add(p->resp, body->p, body->n);
    else
        snprintf(p->err, p->errlen, "%s", err);
}

int agent__http_post(agent__http_t *h, const char *path, const char *ctype, const void *body, size_t n, long timeout_ms,
                     long *status, sp_buf_t *resp, char *err, size_t errlen)
{
    if (atomic_load(&h->aborted)) {
        snprintf(err, errlen, "aborted");
        return SP_ECLOSED;
    }
    char why[256] = "";
    post_t p = {.resp = resp, .err = why, .errlen = sizeof why};
    char *hdrs = sp_xasprintf("%sContent-Type: %s\r\n", h->auth, ctype ? ctype : "application/json");
    hc_call_t k = {.method = "POST",
                   .path = path,
                   .headers = hdrs,
                   .body = body,
                   .body_n = n,
                   .timeout_ms = timeout_ms,
                   .done = on_done,
                   .arg = &p};
    hc_req_t *r = hc_call(h->hc, &k);
    explicit_bzero(hdrs, strlen(hdrs));
    free(hdrs);
    if (!p.done) h->cur = r;
    /* An abort sent before the request started is seen here. */
    if (!p.done && atomic_load(&h->aborted)) hc_cancel(r);
    while (!p.done) uv_run(&h->loop, UV_RUN_ONCE);
    h->cur = NULL;
    if (p.rc == 0) {
        *status = p.status;
    } else if (p.rc == SP_ECLOSED) {
        snprintf(err, errlen, "aborted");
    } else {
        snprintf(err, errlen, "%s%s: %s", h->server, path, why);
    }
    return p.rc;
}
