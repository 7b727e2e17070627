/* The HTTP front-end in-process, for the tests of tests/http: log and
 * views in the test's directory, the server on its own loop thread, and
 * requests over loopback TCP or the admin unix socket through libcurl. */
#ifndef SPOOL_TESTS_HTTP_SERVER_H
#define SPOOL_TESTS_HTTP_SERVER_H

#include "test.h"

#include "http/http.h"

#include <jansson.h>
#include <pthread.h>
#include <semaphore.h>

typedef struct {
    uv_loop_t loop;
    uv_async_t stop;
    http_t *http;
    log_t *log;
    proj_t *proj;
    pthread_t th;
    sem_t ready;
    int open_rc, close_rc;
    int threads; /* event loops serving TCP */
    char sock[4200];
    char err[300];
} tsrv_t;

/* Opens log and views in the test's directory and starts the server with
 * `threads` TCP loops (the projector only when start_projector). Returns
 * http_open's result (its message in s->err). */
int tsrv_start(t_ctx_t *t, tsrv_t *s, bool start_projector, int threads);
/* Drains and closes the server, then the views and the log. */
void tsrv_stop(tsrv_t *s);

typedef struct {
    long status;
    sp_buf_t body; /* NUL-terminated past n */
    char ctype[128];
    json_t *json; /* left NULL here; the API tests parse the body into it */
} tresp_t;

/* One request; admin sends it over the admin socket, else TCP. body NULL
 * sends none. SP_EIO when the transfer failed. */
int tsrv_request(tsrv_t *s, const char *method, const char *path, const char *body, bool admin, tresp_t *r);

#endif
