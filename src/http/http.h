/*
 * http: the h2o front-end on a libuv loop. Serves the health and status
 * endpoints, Prometheus metrics, and (on the admin socket only) the
 * operator API that the CLI uses while a server runs.
 *
 * Listeners: TCP at opts.listen, served by opts.threads event loops (the
 * caller's loop plus threads of our own, each with an SO_REUSEPORT
 * socket), and a unix socket at opts.admin_socket (mode 0600) on the
 * caller's loop. Routes marked admin answer only on the unix socket,
 * whose file permissions are its access check.
 *
 * Threads: http_* functions are called on opts.loop's thread only.
 */
#ifndef SPOOL_HTTP_H
#define SPOOL_HTTP_H

#include "../ingest/ingest.h"
#include "../projections/projections.h"

#include <uv.h>

typedef struct http http_t;

typedef struct {
    uv_loop_t *loop;
    log_t *log;
    proj_t *proj;
    const char *listen;       /* "127.0.0.1:8080", "[::1]:8080" or "unix:/path" */
    const char *admin_socket; /* path, or NULL for none */
    size_t max_body;          /* request body limit; 0 = 8 MiB */
    int threads;              /* event loops serving TCP; 0 = 1 */
    struct engine *engine;    /* the decider; NULL: write APIs answer 503 */
    const char *base_url;     /* how users reach the server, for links; NULL: the Host header */
} http_opts_t;

int http_open(http_t **out, const http_opts_t *opts, char *errbuf, size_t errlen);
/* Gives the front-end its engine once the views have caught up; until
 * then, routes that change something answer 503. Any thread. */
void http_set_engine(http_t *h, struct engine *e);
/* Address actually bound (useful with port 0). */
int http_port(http_t *h);
/* Stops accepting; cb runs on the loop once requests in flight are done
 * (or after a grace period). */
void http_drain(http_t *h, void (*cb)(void *arg), void *arg);
/* Releases everything; run the loop afterwards so handles finish closing. */
void http_close(http_t *h);

#endif
