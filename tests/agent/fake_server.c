#include "fake_server.h"

#include <errno.h>
#include <strings.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64

typedef struct {
    char *json, *id, *lease;
} fs_task_t;

struct fs {
    int lfd, wake[2];
    char *token;
    int heartbeat_ms;
    pthread_t accept_th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    struct {
        pthread_t th;
        int fd;
        bool used;
    } conns[MAX_CONNS];
    fs_task_t queue[64];
    int nqueue;
    fs_task_t given[64]; /* claimed tasks, for lease checks */
    int ngiven;
    char cancel_ev[8][64], cancel_hb[8][64], conflict[8][64];
    int ncancel_ev, ncancel_hb, nconflict;
    int fail_outputs;
    sp_buf_t events;
    ta_cap_t lines;
    uint32_t seen_seq[64][256]; /* next expected seq per claimed task and step */
    fs_finish_t finishes[64];
    int nfinishes;
    int n_register, n_claim, n_heartbeat, n_output, n_dup_output, n_bad_auth, n_bad_lease, n_bad_chunk;
};

typedef struct {
    fs_t *s;
    int fd;
} conn_arg_t;

static bool in_list(char (*list)[64], int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], id) == 0) return true;
    return false;
}

typedef struct {
    ta_cap_t *c;
    int step;
} dec_t;

static int store_line(void *arg, uint64_t t_ms, int stream, const char *text, size_t n)
{
    dec_t *d = arg;
    ta_cap_t *c = d->c;
    if (c->nlines == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->lines = sp_xrealloc(c->lines, c->cap * sizeof *c->lines);
    }
    c->lines[c->nlines++] = (ta_line_t){d->step, stream, t_ms, sp_xstrndup(text, n), n};
    return 0;
}

static void reply(int fd, int status, const char *body)
{
    char hdr[256];
    size_t n = body ? strlen(body) : 0;
    int hn = snprintf(hdr, sizeof hdr, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      status, n);
    /* The agent may have hung up (an aborted long poll): no SIGPIPE. */
    if (send(fd, hdr, (size_t)hn, MSG_NOSIGNAL) < 0) return;
    if (n && send(fd, body, n, MSG_NOSIGNAL) < 0) return;
}

static const char *query(const char *path, const char *key, char *out, size_t n)
{
    const char *q = strchr(path, '?');
    size_t kn = strlen(key);
    out[0] = 0;
    while (q) {
        q++;
        if (strncmp(q, key, kn) == 0 && q[kn] == '=') {
            size_t i = 0;
            for (const char *v = q + kn + 1; *v && *v != '&' && i + 1 < n; v++) out[i++] = *v;
            out[i] = 0;
            return out;
        }
        q = strchr(q, '&');
    }
    return NULL;
}

/* Which claimed task this is; -1 if none. Called with mu held. */
static int given_index(fs_t *s, const char *id)
{
    for (int i = 0; i < s->ngiven; i++)
        if (strcmp(s->given[i].id, id) == 0) return i;
    return -1;
}

static void handle(fs_t *s, int fd, const char *path, const char *auth, const char *body, size_t blen)
{
    char want[300];
    snprintf(want, sizeof want, "Bearer %s", s->token);
    pthread_mutex_lock(&s->mu);
    if (auth == NULL || strcmp(auth, want) != 0) {
        s->n_bad_auth++;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        reply(fd, 401, "{\"message\":\"bad agent token\"}");
        return;
    }
    json_t *j = blen ? json_loadb(body, blen, 0, NULL) : NULL;
    int status = 200;
    char *out = NULL;
    char id[128] = "";
    const char *t = NULL;
    if (strncmp(path, "/api/agent/v1/tasks/", 20) == 0) {
        t = path + 20;
        size_t k = strcspn(t, "/");
        snprintf(id, sizeof id, "%.*s", (int)k, t);
        t += k;
    }
    if (strcmp(path, "/api/agent/v1/register") == 0) {
        s->n_register++;
        status = 201;
        out = sp_xasprintf("{\"agent_id\":\"agent-%d\",\"heartbeat_ms\":%d,\"lease_timeout_ms\":30000}", s->n_register,
                           s->heartbeat_ms);
    } else if (strncmp(path, "/api/agent/v1/claim", 19) == 0) {
        s->n_claim++;
        char w[32];
        int wait_ms = query(path, "wait_ms", w, sizeof w) ? atoi(w) : 1000;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        while (s->nqueue == 0 && !s->stopping)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) break;
        if (s->nqueue > 0) {
            fs_task_t tk = s->queue[0];
            memmove(s->queue, s->queue + 1, (size_t)--s->nqueue * sizeof *s->queue);
            out = sp_xasprintf("{\"task\":%s}", tk.json);
            free(tk.json);
            tk.json = NULL;
            if (s->ngiven < 64) s->given[s->ngiven++] = tk;
        } else {
            status = 204;
        }
    } else if (strcmp(path, "/api/agent/v1/heartbeat") == 0) {
        s->n_heartbeat++;
        sp_buf_t b = {0};
        sp_buf_addstr(&b, "{\"cancel\":[");
        json_t *v;
        size_t i;
        int n = 0;
        json_array_foreach (json_object_get(j, "running"), i, v) {
            if (json_is_string(v) && in_list(s->cancel_hb, s->ncancel_hb, json_string_value(v))) {
                if (n++) sp_buf_addstr(&b, ",");
                sp_buf_add_json_str(&b, json_string_value(v), strlen(json_string_value(v)));
            }
        }
        sp_buf_add(&b, "]}", 3);
        out = (char *)b.p;
    } else if (*id && (strcmp(t, "/events") == 0 || strncmp(t, "/output?", 8) == 0 || strcmp(t, "/finish") == 0)) {
        char lease[128] = "";
        if (strncmp(t, "/output?", 8) == 0)
            query(path, "lease", lease, sizeof lease);
        else if (json_is_string(json_object_get(j, "lease")))
            snprintf(lease, sizeof lease, "%s", json_string_value(json_object_get(j, "lease")));
        int gi = given_index(s, id);
        const char *given = gi >= 0 ? s->given[gi].lease : NULL;
        if (in_list(s->conflict, s->nconflict, id)) {
            status = 409;
            out = sp_xstrdup("{\"message\":\"lease lost\"}");
        } else if (given == NULL || strcmp(given, lease) != 0) {
            s->n_bad_lease++;
            status = 409;
            out = sp_xstrdup("{\"message\":\"unknown lease\"}");
        } else if (strcmp(t, "/events") == 0) {
            json_t *e;
            size_t i;
            json_array_foreach (json_object_get(j, "events"), i, e) {
                const char *type = json_string_value(json_object_get(e, "type"));
                int step = (int)json_integer_value(json_object_get(e, "step"));
                if (type && strcmp(type, "step_started") == 0) {
                    sp_buf_printf(&s->events, "start %d %s\n", step, json_string_value(json_object_get(e, "name")));
                } else if (type && strcmp(type, "step_finished") == 0) {
                    json_t *code = json_object_get(e, "exit_code");
                    sp_buf_printf(&s->events, "finish %d %s %d\n", step,
                                  json_string_value(json_object_get(e, "status")),
                                  json_is_integer(code) ? (int)json_integer_value(code) : -1);
                }
            }
            out = sp_xasprintf("{\"cancel\":%s}", in_list(s->cancel_ev, s->ncancel_ev, id) ? "true" : "false");
        } else if (strcmp(t, "/finish") == 0) {
            if (s->nfinishes < 64) {
                fs_finish_t *f = &s->finishes[s->nfinishes++];
                snprintf(f->task_id, sizeof f->task_id, "%s", id);
                snprintf(f->status, sizeof f->status, "%s", json_string_value(json_object_get(j, "status")));
                const char *m = json_string_value(json_object_get(j, "message"));
                snprintf(f->message, sizeof f->message, "%s", m ? m : "");
            }
            out = sp_xstrdup("{}");
        } else if (s->fail_outputs > 0) {
            s->fail_outputs--;
            status = 503;
            out = sp_xstrdup("{\"message\":\"try again\"}");
        } else {
            char v[32];
            int step = query(path, "step", v, sizeof v) ? atoi(v) : -1;
            uint32_t seq = query(path, "seq", v, sizeof v) ? (uint32_t)atol(v) : 0;
            s->n_output++;
            if (seq < s->seen_seq[gi][step & 255]) {
                s->n_dup_output++;
            } else {
                s->seen_seq[gi][step & 255] = seq + 1;
                dec_t d = {&s->lines, gi * 1000 + step};
                if (agent__chunk_decode(body, blen, store_line, &d) != 0) s->n_bad_chunk++;
            }
            out = sp_xasprintf("{\"cancel\":%s}", in_list(s->cancel_ev, s->ncancel_ev, id) ? "true" : "false");
        }
    } else {
        status = 404;
        out = sp_xstrdup("{\"message\":\"no such route\"}");
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    json_decref(j);
    reply(fd, status, out);
    free(out);
}

/* One connection: requests in sequence (keep-alive) until EOF. */
static void *conn_main(void *arg)
{
    conn_arg_t *ca = arg;
    fs_t *s = ca->s;
    int fd = ca->fd;
    free(ca);
    sp_buf_t in = {0};
    char buf[65536];
    for (;;) {
        /* Headers. */
        char *end = NULL;
        while ((end = in.n ? memmem(in.p, in.n, "\r\n\r\n", 4) : NULL) == NULL) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) goto done;
            sp_buf_add(&in, buf, (size_t)r);
        }
        size_t hlen = (size_t)(end - (char *)in.p) + 4;
        char *hdr = sp_xstrndup((char *)in.p, hlen);
        char method[16] = "", path[2048] = "";
        sscanf(hdr, "%15s %2047s", method, path);
        size_t clen = 0;
        char *auth = NULL;
        for (char *line = strstr(hdr, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
            char *l = line + 2;
            if (strncasecmp(l, "Content-Length:", 15) == 0) clen = (size_t)atol(l + 15);
            if (strncasecmp(l, "Authorization:", 14) == 0) {
                char *v = l + 14;
                while (*v == ' ') v++;
                auth = sp_xstrndup(v, strcspn(v, "\r"));
            }
        }
        while (in.n < hlen + clen) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                free(hdr), free(auth);
                goto done;
            }
            sp_buf_add(&in, buf, (size_t)r);
        }
        handle(s, fd, path, auth, (char *)in.p + hlen, clen);
        memmove(in.p, in.p + hlen + clen, in.n - hlen - clen);
        in.n -= hlen + clen;
        free(hdr), free(auth);
    }
done:
    sp_buf_free(&in);
    return NULL;
}

static void *accept_main(void *arg)
{
    fs_t *s = arg;
    for (;;) {
        struct pollfd p[2] = {{s->lfd, POLLIN, 0}, {s->wake[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno == EINTR) continue;
        if (p[1].revents) return NULL;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) continue;
        pthread_mutex_lock(&s->mu);
        int slot = -1;
        for (int i = 0; i < MAX_CONNS && slot < 0; i++)
            if (!s->conns[i].used) slot = i;
        if (slot < 0 || s->stopping) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            continue;
        }
        conn_arg_t *ca = sp_xcalloc(1, sizeof *ca);
        ca->s = s;
        ca->fd = fd;
        s->conns[slot].used = true;
        s->conns[slot].fd = fd;
        pthread_create(&s->conns[slot].th, NULL, conn_main, ca);
        pthread_mutex_unlock(&s->mu);
    }
}

fs_t *fs_start(const char *sock, const char *token, int heartbeat_ms)
{
    fs_t *s = sp_xcalloc(1, sizeof *s);
    s->token = sp_xstrdup(token);
    s->heartbeat_ms = heartbeat_ms;
    s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
    unlink(sock);
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->lfd, 64) != 0 ||
        pipe(s->wake) != 0) {
        if (s->lfd >= 0) close(s->lfd);
        free(s->token);
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_create(&s->accept_th, NULL, accept_main, s);
    return s;
}

void fs_stop(fs_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    for (int i = 0; i < MAX_CONNS; i++)
        if (s->conns[i].used) shutdown(s->conns[i].fd, SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
    if (write(s->wake[1], "x", 1) < 0) abort();
    pthread_join(s->accept_th, NULL);
    for (int i = 0; i < MAX_CONNS; i++) {
        if (!s->conns[i].used) continue;
        pthread_join(s->conns[i].th, NULL);
        close(s->conns[i].fd);
    }
    close(s->lfd);
    close(s->wake[0]);
    close(s->wake[1]);
    for (int i = 0; i < s->nqueue; i++) free(s->queue[i].json), free(s->queue[i].id), free(s->queue[i].lease);
    for (int i = 0; i < s->ngiven; i++) free(s->given[i].json), free(s->given[i].id), free(s->given[i].lease);
    for (size_t i = 0; i < s->lines.nlines; i++) free(s->lines.lines[i].text);
    free(s->lines.lines);
    sp_buf_free(&s->events);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->token);
    free(s);
}

void fs_add_task(fs_t *s, const char *task_json)
{
    json_t *j = json_loads(task_json, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "task_id"));
    const char *lease = json_string_value(json_object_get(j, "lease"));
    pthread_mutex_lock(&s->mu);
    if (s->nqueue < 64)
        s->queue[s->nqueue++] =
            (fs_task_t){sp_xstrdup(task_json), sp_xstrdup(id ? id : ""), sp_xstrdup(lease ? lease : "")};
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    json_decref(j);
}

void fs_cancel(fs_t *s, const char *task_id, bool in_events, bool in_heartbeat)
{
    pthread_mutex_lock(&s->mu);
    if (in_events && s->ncancel_ev < 8) snprintf(s->cancel_ev[s->ncancel_ev++], 64, "%s", task_id);
    if (in_heartbeat && s->ncancel_hb < 8) snprintf(s->cancel_hb[s->ncancel_hb++], 64, "%s", task_id);
    pthread_mutex_unlock(&s->mu);
}

void fs_conflict(fs_t *s, const char *task_id)
{
    pthread_mutex_lock(&s->mu);
    if (s->nconflict < 8) snprintf(s->conflict[s->nconflict++], 64, "%s", task_id);
    pthread_mutex_unlock(&s->mu);
}

void fs_fail_outputs(fs_t *s, int n)
{
    pthread_mutex_lock(&s->mu);
    s->fail_outputs = n;
    pthread_mutex_unlock(&s->mu);
}

static bool wait_for(fs_t *s, bool (*pred)(fs_t *, const void *), const void *arg, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&s->mu);
    bool ok;
    while (!(ok = pred(s, arg)))
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) {
            ok = pred(s, arg);
            break;
        }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static bool has_event(fs_t *s, const void *needle)
{
    return s->events.n && memmem(s->events.p, s->events.n, needle, strlen(needle)) != NULL;
}

static bool has_finishes(fs_t *s, const void *n) { return s->nfinishes >= *(const int *)n; }

bool fs_wait_event(fs_t *s, const char *needle, int timeout_ms) { return wait_for(s, has_event, needle, timeout_ms); }
bool fs_wait_finishes(fs_t *s, int n, int timeout_ms) { return wait_for(s, has_finishes, &n, timeout_ms); }

fs_finish_t fs_finish(fs_t *s, int i)
{
    pthread_mutex_lock(&s->mu);
    fs_finish_t f = i < s->nfinishes ? s->finishes[i] : (fs_finish_t){0};
    pthread_mutex_unlock(&s->mu);
    return f;
}

char *fs_events(fs_t *s)
{
    pthread_mutex_lock(&s->mu);
    char *e = sp_xstrndup(s->events.n ? (char *)s->events.p : "", s->events.n);
    pthread_mutex_unlock(&s->mu);
    return e;
}

char *fs_output(fs_t *s, int step, int stream)
{
    pthread_mutex_lock(&s->mu);
    char *o = ta_output(&s->lines, step, stream);
    pthread_mutex_unlock(&s->mu);
    return o;
}

int fs_count(fs_t *s, const char *what)
{
    pthread_mutex_lock(&s->mu);
    int n = strcmp(what, "register") == 0     ? s->n_register
            : strcmp(what, "claim") == 0      ? s->n_claim
            : strcmp(what, "heartbeat") == 0  ? s->n_heartbeat
            : strcmp(what, "output") == 0     ? s->n_output
            : strcmp(what, "dup_output") == 0 ? s->n_dup_output
            : strcmp(what, "bad_auth") == 0   ? s->n_bad_auth
            : strcmp(what, "bad_lease") == 0  ? s->n_bad_lease
            : strcmp(what, "bad_chunk") == 0  ? s->n_bad_chunk
                                              : -1;
    pthread_mutex_unlock(&s->mu);
    return n;
}
