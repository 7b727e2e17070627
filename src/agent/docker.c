/*
 * The client of the Docker Engine API (JSON over HTTP on a unix socket)
 * for the docker executor; Docker and podman's `podman system service`
 * both serve it. Requests run on the executor's libuv loop through hc, so
 * none blocks it, and a streaming answer (the hijacked stream of
 * /exec/{id}/start) arrives in pieces as the container writes, with
 * back-pressure. hc keeps connections to the socket for reuse.
 */
#include "agent_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DK_VERSION  "/v1.41"
#define DK_BODY_MAX (4u << 20) /* a non-streaming answer longer than this is cut */

struct agent__dk {
    hc_t *hc;
};

int agent__dk_new(agent__dk_t **out, struct uv_loop_s *loop, const char *socket)
{
    agent__dk_t *d = sp_xcalloc(1, sizeof *d);
    char *base = sp_xasprintf("unix:%s", socket), err[256];
    int rc = hc_new(&d->hc, loop, base, err, sizeof err);
    free(base);
    if (rc != 0) {
        free(d);
        return rc;
    }
    *out = d;
    return 0;
}

static hc_call_t make_call(const char *method, const char *path, const char *body, const char *header, long timeout_ms,
                           char **hdrs, char **full)
{
    *full = sp_xasprintf(DK_VERSION "%s", path);
    *hdrs = sp_xasprintf("%s%s%s", body ? "Content-Type: application/json\r\n" : "", header ? header : "",
                         header ? "\r\n" : "");
    return (hc_call_t){.method = method,
                       .path = *full,
                       .headers = *hdrs,
                       .body = body,
                       .body_n = body ? strlen(body) : 0,
                       .timeout_ms = timeout_ms,
                       .body_max = DK_BODY_MAX};
}

agent__dk_req_t *agent__dk_call(agent__dk_t *d, const char *method, const char *path, const char *body,
                                const char *header, long timeout_ms, hc_data_cb data, hc_done_cb done, void *arg)
{
    char *hdrs, *full;
    hc_call_t k = make_call(method, path, body, header, timeout_ms, &hdrs, &full);
    k.data = data;
    k.done = done;
    k.arg = arg;
    hc_req_t *r = hc_call(d->hc, &k);
    free(hdrs);
    free(full);
    return r;
}

void agent__dk_free(agent__dk_t *d)
{
    if (d == NULL) return;
    hc_free(d->hc);
    free(d);
}

int agent__dk_sync(const char *socket, const char *method, const char *path, const char *body, long timeout_ms,
                   long *status, sp_buf_t *resp, char *err, size_t errlen)
{
    char *hdrs, *full, *base = sp_xasprintf("unix:%s", socket);
    hc_call_t k = make_call(method, path, body, NULL, timeout_ms, &hdrs, &full);
    int rc = hc_sync(base, &k, status, resp, err, errlen);
    free(hdrs);
    free(full);
    free(base);
    return rc;
}
