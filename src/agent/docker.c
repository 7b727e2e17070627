/*
 * A small asynchronous client of the Docker Engine API (JSON over HTTP on
 * a unix socket), for the docker executor. Docker and podman's
 * `podman system service` both serve it.
 *
 * It runs on the executor's private libuv loop through libcurl's multi
 * socket API: curl tells us which sockets to watch (uv_poll) and when to
 * call it back (uv_timer), so a request never blocks the loop, and a
 * streaming answer (the hijacked stream of /exec/{id}/start) arrives in
 * pieces as the container writes. Each request has its own easy handle;
 * the multi handle keeps connections to the socket for reuse.
 *
 * Ownership: a request belongs to the client from agent__dk_call until
 * its done callback has returned (the client frees it then). The client
 * is freed in two steps: agent__dk_free cancels what is in flight and
 * closes its uv handles; the memory goes when the last close callback
 * has run, so the loop must run once more (agent__exec_free does).
 */
#include "agent_internal.h"

#include <assert.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#define DK_BASE        "http://docker/v1.41"
#define DK_CONNECT_MS  10000L
#define DK_BODY_MAX    (4u << 20) /* a non-streaming answer longer than this is cut */
#define DK_SYNC_BUFMAX (1u << 20)

typedef struct poll poll_t;

struct agent__dk_req {
    agent__dk_t *d;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body;
    sp_buf_t resp;
    agent__dk_data_cb data;
    agent__dk_done_cb done;
    void *arg;
    bool paused;
    char err[CURL_ERROR_SIZE];
    agent__dk_req_t *next;
};

struct poll {
    uv_poll_t h;
    agent__dk_t *d;
    curl_socket_t fd;
    poll_t *next;
};

struct agent__dk {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char *socket;
    agent__dk_req_t *reqs;
    poll_t *polls;
    int nopen; /* uv handles not yet closed (the timer and the polls) */
    bool closing;
};

static void dk_release(agent__dk_t *d)
{
    if (--d->nopen > 0) return;
    free(d->socket);
    free(d);
    sp_handle_closed();
}

static void on_poll_closed(uv_handle_t *h)
{
    poll_t *p = h->data;
    agent__dk_t *d = p->d;
    free(p);
    dk_release(d);
}

static void on_timer_closed(uv_handle_t *h) { dk_release(h->data); }

static void poll_drop(agent__dk_t *d, poll_t *p)
{
    for (poll_t **pp = &d->polls; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    uv_poll_stop(&p->h);
    uv_close((uv_handle_t *)&p->h, on_poll_closed);
}

static void req_free(agent__dk_req_t *r)
{
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r->body);
    sp_buf_free(&r->resp);
    free(r);
}

static void req_unlink(agent__dk_t *d, agent__dk_req_t *r)
{
    for (agent__dk_req_t **pp = &d->reqs; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
}

/* Finished transfers: their done callbacks run here, outside curl's own
 * callbacks, so they may start new requests. */
static void check_done(agent__dk_t *d)
{
    CURLMsg *m;
    int left;
    /* A done callback may free the client (the teardown's last one
     * does): then nothing more is read from it. */
    while (!d->closing && (m = curl_multi_info_read(d->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) continue;
        agent__dk_req_t *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode cc = m->data.result;
        curl_multi_remove_handle(d->multi, r->easy);
        req_unlink(d, r);
        long status = 0;
        int rc = 0;
        if (cc == CURLE_OK) {
            curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        } else if (cc == CURLE_OPERATION_TIMEDOUT) {
            rc = SP_ETIMEDOUT;
            snprintf(r->err, sizeof r->err, "the Docker API did not answer in time");
        } else {
            rc = SP_EIO;
            if (r->err[0] == 0) snprintf(r->err, sizeof r->err, "%s", curl_easy_strerror(cc));
        }
        r->done(r->arg, rc, status, &r->resp, r->err);
        req_free(r);
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    poll_t *p = h->data;
    agent__dk_t *d = p->d;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(d->multi, p->fd, flags, &running);
    check_done(d);
}

static void on_timer(uv_timer_t *t)
{
    agent__dk_t *d = t->data;
    int running;
    curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(d);
}

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    agent__dk_t *d = userp;
    poll_t *p = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (p != NULL) {
            curl_multi_assign(d->multi, s, NULL);
            poll_drop(d, p);
        }
        return 0;
    }
    if (p == NULL) {
        p = sp_xcalloc(1, sizeof *p);
        p->d = d;
        p->fd = s;
        if (uv_poll_init_socket(d->loop, &p->h, s) != 0) {
            free(p);
            return -1;
        }
        p->h.data = p;
        p->next = d->polls;
        d->polls = p;
        d->nopen++;
        curl_multi_assign(d->multi, s, p);
    }
    int ev = ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
    uv_poll_start(&p->h, ev, on_poll);
    return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    agent__dk_t *d = userp;
    if (d->closing) return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&d->timer);
    else
        uv_timer_start(&d->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

int agent__dk_new(agent__dk_t **out, struct uv_loop_s *loop, const char *socket)
{
    agent__dk_t *d = sp_xcalloc(1, sizeof *d);
    d->loop = loop;
    d->multi = curl_multi_init();
    if (d->multi == NULL) {
        free(d);
        return SP_EIO;
    }
    d->socket = sp_xstrdup(socket);
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->nopen = 1;
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
    sp_handle_opened();
    *out = d;
    return 0;
}

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
    agent__dk_req_t *r = arg;
    size_t len = size * n;
    if (r->data != NULL) {
        if (!r->data(r->arg, p, len)) {
            r->paused = true;
            return CURL_WRITEFUNC_PAUSE;
        }
        return len;
    }
    if (r->resp.n < DK_BODY_MAX) sp_buf_add(&r->resp, p, len < DK_BODY_MAX - r->resp.n ? len : DK_BODY_MAX - r->resp.n);
    return len;
}

static void setup_easy(CURL *e, const char *socket, const char *method, const char *url, const char *body,
                       struct curl_slist *hdrs, long timeout_ms, char *errbuf)
{
    curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, socket);
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? strlen(body) : 0));
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, DK_CONNECT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "spool-agent/" SP_VERSION);
}

static struct curl_slist *make_headers(const char *body, const char *header)
{
    struct curl_slist *h = NULL;
    if (body != NULL) h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    if (header != NULL) h = curl_slist_append(h, header);
    return h;
}

agent__dk_req_t *agent__dk_call(agent__dk_t *d, const char *method, const char *path, const char *body,
                                const char *header, long timeout_ms, agent__dk_data_cb data, agent__dk_done_cb done,
                                void *arg)
{
    assert(!d->closing); /* no request after agent__dk_free */
    agent__dk_req_t *r = sp_xcalloc(1, sizeof *r);
    r->d = d;
    r->data = data;
    r->done = done;
    r->arg = arg;
    r->easy = curl_easy_init();
    if (r->easy == NULL) abort(); /* only out of memory gets here */
    r->body = body ? sp_xstrdup(body) : NULL;
    r->hdrs = make_headers(body, header);
    char *url = sp_xasprintf(DK_BASE "%s", path);
    setup_easy(r->easy, d->socket, method, url, r->body, r->hdrs, timeout_ms, r->err);
    free(url);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, (char *)r);
    r->next = d->reqs;
    d->reqs = r;
    curl_multi_add_handle(d->multi, r->easy);
    return r;
}

void agent__dk_resume(agent__dk_req_t *r)
{
    if (!r->paused) return;
    r->paused = false;
    /* May deliver the held bytes at once, through the data callback. */
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
}

void agent__dk_cancel(agent__dk_req_t *r)
{
    agent__dk_t *d = r->d;
    curl_multi_remove_handle(d->multi, r->easy);
    req_unlink(d, r);
    r->done(r->arg, SP_ECLOSED, 0, &r->resp, "canceled");
    req_free(r);
}

void agent__dk_free(agent__dk_t *d)
{
    if (d == NULL) return;
    d->closing = true;
    while (d->reqs) agent__dk_cancel(d->reqs);
    curl_multi_cleanup(d->multi);
    d->multi = NULL;
    while (d->polls) poll_drop(d, d->polls);
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}

char *agent__dk_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *r = sp_xstrdup(e ? e : "");
    curl_free(e);
    return r;
}

static size_t on_sync_write(char *p, size_t size, size_t n, void *arg)
{
    sp_buf_t *b = arg;
    size_t len = size * n;
    if (b->n < DK_SYNC_BUFMAX) sp_buf_add(b, p, len < DK_SYNC_BUFMAX - b->n ? len : DK_SYNC_BUFMAX - b->n);
    return len;
}

int agent__dk_sync(const char *socket, const char *method, const char *path, const char *body, long timeout_ms,
                   long *status, sp_buf_t *resp, char *err, size_t errlen)
{
    CURL *e = curl_easy_init();
    if (e == NULL) {
        snprintf(err, errlen, "cannot initialise libcurl");
        return SP_EIO;
    }
    char cerr[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = make_headers(body, NULL);
    char *url = sp_xasprintf(DK_BASE "%s", path);
    setup_easy(e, socket, method, url, body, hdrs, timeout_ms, cerr);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_sync_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, resp);
    CURLcode cc = curl_easy_perform(e);
    int rc = 0;
    if (cc == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    } else {
        snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(cc));
        rc = cc == CURLE_OPERATION_TIMEDOUT ? SP_ETIMEDOUT : SP_EIO;
    }
    free(url);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(e);
    return rc;
}
