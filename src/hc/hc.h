/*
 * hc: a small HTTP/1.1 client on a libuv loop.
 *
 * The agent talks to the server through it (the local fleet over the
 * admin unix socket, remote agents over http or https), the docker
 * executor talks to the Docker Engine API with it, and the CLI reaches
 * the admin socket with hc_sync.
 *
 * It is built from what the server already loads: h2o's sockets (libuv
 * streams, OpenSSL for https with peer and host name checks) and
 * http_parser for the answers. libcurl did this job before; linking it
 * cost every process about 3 MB of resident memory (GnuTLS, Kerberos,
 * LDAP and RTMP came with it) and 1.5 MB more once initialised.
 *
 * One hc_t serves one base address and keeps a few idle connections
 * open for reuse. A request is answered through its done callback, once,
 * on the loop; a streaming answer may go to a data callback as it comes,
 * with back-pressure (return false to pause, hc_resume to go on).
 * Not thread-safe: use an hc_t only on its loop's thread.
 */
#ifndef SPOOL_HC_H
#define SPOOL_HC_H

#include "../base/base.h"

#include <stdbool.h>
#include <stddef.h>

struct uv_loop_s;

typedef struct hc hc_t;
typedef struct hc_req hc_req_t;

/* The answer's bytes as they arrive. Return false to refuse them for
 * now: reading stops, and the same bytes come again after hc_resume. */
typedef bool (*hc_data_cb)(void *arg, const char *p, size_t n);

/* The end of a request, called once. rc is 0 when an answer came (any
 * status), SP_ETIMEDOUT, SP_ECLOSED (canceled) or SP_EIO with err set.
 * body holds the answer when there is no data callback; borrowed until
 * the callback returns. The callback may start requests or free the
 * client. */
typedef void (*hc_done_cb)(void *arg, int rc, long status, const sp_buf_t *body, const char *err);

typedef struct {
    const char *method;  /* "GET", "POST", "DELETE", "HEAD", ...; copied */
    const char *path;    /* after the base's own path, e.g. "/agent/v1/claim"; copied */
    const char *headers; /* extra header lines, each ending "\r\n", or NULL; copied */
    const void *body;    /* copied; NULL with body_n 0 sends none */
    size_t body_n;
    long timeout_ms; /* for the whole request; 0 waits for ever */
    size_t body_max; /* buffered answers are cut to this (0: 64 MiB) */
    hc_data_cb data; /* NULL: the answer is buffered for done */
    hc_done_cb done; /* required */
    void *arg;
} hc_call_t;

/* base: "http://host[:port][/path]", "https://host[:port][/path]" or
 * "unix:/path/to/socket" (requests then name host "localhost"). */
int hc_new(hc_t **out, struct uv_loop_s *loop, const char *base, char *err, size_t errlen);

/* Cancels what is in flight (done callbacks run with SP_ECLOSED) and
 * closes the connections; the memory goes once the loop has run their
 * close callbacks. */
void hc_free(hc_t *c);

/* Starts a request. The handle is valid until its done callback has
 * returned. */
hc_req_t *hc_call(hc_t *c, const hc_call_t *call);

/* Feeds the refused bytes again and reads on. No-op unless paused. */
void hc_resume(hc_req_t *r);

/* Ends a request now: its done callback runs before this returns. */
void hc_cancel(hc_req_t *r);

/* One request on a private loop, blocking the caller. status and resp
 * are filled when 0 is returned. */
int hc_sync(const char *base, const hc_call_t *call, long *status, sp_buf_t *resp, char *err, size_t errlen);

/* Percent-encodes everything but RFC 3986's unreserved characters.
 * Caller frees. */
char *hc_escape(const char *s);

#endif
