/*
 * The agent: registration, the claim loop, heartbeats, one thread per
 * running task, and shutdown.
 *
 * Threads:
 *   control    registers, then long-polls claim while a slot is free;
 *              starts a task thread per task; at drain, waits for the
 *              tasks (at most grace_ms), kills what is left, joins all
 *   heartbeat  every heartbeat_ms while tasks run: the running task ids;
 *              routes the server's cancel list to the tasks
 *   task       parses the task, runs the executor on its own loop, then
 *              the finish; with its reporter thread (report.c)
 *
 * Shutdown (SIGTERM for `spool agent`, agent_pool_stop for serve): stop
 * claiming at once (the long poll is aborted), let running tasks go on
 * for grace_ms, then kill them; a killed task reports its last events
 * and finishes as infrastructure_fail with one attempt per request, so
 * a server that is gone cannot hold the shutdown. infrastructure_fail,
 * not canceled: nobody canceled the job, and the server may retry it.
 *
 * Locking: one mutex (mu) guards the pool's state and every task's exec
 * and rep pointers; a task clears them under mu before freeing, so other
 * threads may call agent__exec_stop and agent__report_hurry under mu.
 * Lock order: mu, then a reporter's own lock.
 */
#include "agent_internal.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define REQUEST_TIMEOUT_MS 30000
#define BACKOFF_MAX_MS     30000

typedef struct task task_t;

struct task {
    agent_pool_t *pool;
    char *json; /* the TASK object */
    char *id, *lease;
    agent__exec_t *exec;  /* under mu; set while the executor may be stopped */
    agent__report_t *rep; /* under mu */
    agent__http_t *http;  /* the reporter's */
    pthread_t th;
    bool done;
    bool refused; /* claimed while the agent was draining: not run */
    task_t *next;
};

struct agent_pool {
    char *server, *token, *name, *labels, *work_dir, *bwrap, *docker_socket;
    int slots, zstd_level, grace_ms, claim_wait_ms, cpus;
    int64_t memory_mb;
    bool keep_work, once;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; broadcast on every state change */
    bool draining, killing, done, hb_stop, registered;
    int64_t drain_deadline; /* mono ms */
    int rc;
    char err[512];
    char agent_id[64];
    int heartbeat_ms, lease_timeout_ms;
    task_t *tasks;
    int nrunning;
    uint64_t claimed, finished, lost;
    agent__http_t *ctl, *hb;
    pthread_t ctl_th, hb_th;
    bool hb_started;
};

static int64_t mono_ms(void) { return sp_mono_ns() / 1000000; }

/* Waits on cv until the monotonic time `until` (ms) at the latest. */
static void wait_until(agent_pool_t *p, int64_t until)
{
    if (until == INT64_MAX) {
        pthread_cond_wait(&p->cv, &p->mu);
        return;
    }
    int64_t now = mono_ms();
    if (now >= until) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (until - now) * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

/* Called with mu held. */
static void kill_all_locked(agent_pool_t *p)
{
    for (task_t *t = p->tasks; t; t = t->next) {
        if (t->exec) agent__exec_stop(t->exec, AGENT__STOP_SHUTDOWN);
        if (t->rep) agent__report_hurry(t->rep);
    }
}

/* Called with mu held. */
static void drain_locked(agent_pool_t *p, bool now, int64_t grace_ms)
{
    int64_t deadline = grace_ms == INT64_MAX ? INT64_MAX : mono_ms() + grace_ms;
    if (!p->draining || deadline < p->drain_deadline) p->drain_deadline = deadline;
    p->draining = true;
    if (now && !p->killing) {
        p->killing = true;
        kill_all_locked(p);
    }
    pthread_cond_broadcast(&p->cv);
}

/* ---- requests ---------------------------------------------------------- */

/* POSTs JSON on the control or heartbeat client; *o gets the answer's
 * JSON (NULL if none or not JSON). Returns the status, or < 0 when the
 * server did not answer (err says why). */
static long post_json(agent__http_t *h, const char *path, const sp_buf_t *body, long timeout_ms, json_t **o, char *err,
                      size_t errlen)
{
    sp_buf_t resp = {0};
    long status = 0;
    *o = NULL;
    int rc = agent__http_post(h, path, "application/json", body->p, body->n, timeout_ms, &status, &resp, err, errlen);
    if (rc != 0) {
        sp_buf_free(&resp);
        return rc;
    }
    if (resp.n > 0) *o = json_loadb((const char *)resp.p, resp.n, 0, NULL);
    if (status >= 400) {
        json_t *m = *o ? json_object_get(*o, "message") : NULL;
        snprintf(err, errlen, "%s answered %ld: %.*s", path, status, m ? 300 : (int)(resp.n > 300 ? 300 : resp.n),
                 m && json_is_string(m) ? json_string_value(m)
                 : resp.n               ? (const char *)resp.p
                                        : "");
    }
    sp_buf_free(&resp);
    return status;
}

static void add_labels(agent_pool_t *p, sp_buf_t *b)
{
    uv_utsname_t u;
    char os[65] = "unknown", arch[65] = "unknown";
    if (uv_os_uname(&u) == 0) {
        snprintf(os, sizeof os, "%s", u.sysname);
        snprintf(arch, sizeof arch, "%s", u.machine);
        for (char *c = os; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    }
    sp_buf_addstr(b, "[");
    sp_buf_add_json_str(b, os, strlen(os));
    sp_buf_addstr(b, ",");
    sp_buf_add_json_str(b, arch, strlen(arch));
    bool docker_dup = false;
    const char *s = p->labels ? p->labels : "";
    while (*s) {
        while (*s == ',' || *s == ' ') s++;
        const char *e = s;
        while (*e && *e != ',') e++;
        size_t n = (size_t)(e - s);
        while (n > 0 && s[n - 1] == ' ') n--;
        bool is_docker = p->docker_socket != NULL && n == 6 && memcmp(s, "docker", 6) == 0;
        bool dup = (n == strlen(os) && memcmp(s, os, n) == 0) || (n == strlen(arch) && memcmp(s, arch, n) == 0) ||
                   (is_docker && docker_dup);
        docker_dup |= is_docker;
        if (n > 0 && !dup) {
            sp_buf_addstr(b, ",");
            sp_buf_add_json_str(b, s, n);
        }
        s = e;
    }
    if (p->docker_socket != NULL && !docker_dup) sp_buf_addstr(b, ",\"docker\"");
    sp_buf_addstr(b, "]");
}

/* The server answers which resource classes fit this agent: none means
 * it will never get a task, which an operator should hear about. */
static void warn_if_useless(const json_t *classes)
{
    if (!json_is_array(classes) || json_array_size(classes) > 0) return;
    sp_warn("agent", "no resource class fits this agent once the server keeps 2 CPUs and 4096 MB for it: it will "
                     "get no tasks (give a bigger --cpus/--memory-mb to overcommit this machine)");
}

/* 0 registered, 1 try again later, < 0 fatal (err set). */
static int do_register(agent_pool_t *p, char *err, size_t errlen)
{
    /* The machine as it is: the server takes the guide's reserve (2 CPUs
     * and 4 GB for the agent itself) out of it. */
    long cpus = p->cpus > 0 ? p->cpus : (long)uv_available_parallelism();
    uint64_t mem = p->memory_mb > 0 ? (uint64_t)p->memory_mb : uv_get_total_memory() >> 20;
    sp_buf_t b = {0};
    sp_buf_addstr(&b, "{\"name\":");
    sp_buf_add_json_str(&b, p->name, strlen(p->name));
    sp_buf_addstr(&b, ",\"version\":\"" SP_VERSION "\",\"labels\":");
    add_labels(p, &b);
    sp_buf_printf(&b, ",\"cpus\":%ld,\"memory_mb\":%llu,\"slots\":%d}", cpus, (unsigned long long)mem, p->slots);
    json_t *o;
    long st = post_json(p->ctl, "/api/agent/v1/register", &b, REQUEST_TIMEOUT_MS, &o, err, errlen);
    sp_buf_free(&b);
    int rc = 1;
    if (st == 200 || st == 201) {
        json_t *id = json_object_get(o, "agent_id");
        if (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) >= sizeof p->agent_id) {
            snprintf(err, errlen, "register: the answer has no agent_id");
        } else {
            json_t *hb = json_object_get(o, "heartbeat_ms"), *lt = json_object_get(o, "lease_timeout_ms");
            pthread_mutex_lock(&p->mu);
            snprintf(p->agent_id, sizeof p->agent_id, "%s", json_string_value(id));
            p->heartbeat_ms = json_is_integer(hb) && json_integer_value(hb) >= 100 ? (int)json_integer_value(hb) : 5000;
            p->lease_timeout_ms = json_is_integer(lt) ? (int)json_integer_value(lt) : 30000;
            p->registered = true;
            pthread_mutex_unlock(&p->mu);
            sp_info("agent", "registered with %s as %s (agent %s, %d slot(s), %ld CPUs, %llu MB, heartbeat %d ms)",
                    p->server, p->name, p->agent_id, p->slots, cpus, (unsigned long long)mem, p->heartbeat_ms);
            warn_if_useless(json_object_get(o, "resource_classes"));
            rc = 0;
        }
    } else if (st == 401 || st == 403) {
        rc = SP_EINVAL;
    } else if (st == SP_ECLOSED) {
        rc = 1;
    } else if (st >= 400 && st < 500 && st != 404 && st != 429) {
        rc = SP_EINVAL;
    }
    json_decref(o);
    return rc;
}

/* ---- tasks -------------------------------------------------------------- */

static int task_post(void *arg, const char *path, const char *ctype, const void *body, size_t n, long *status,
                     sp_buf_t *resp)
{
    task_t *t = arg;
    char err[512];
    int rc = agent__http_post(t->http, path, ctype, body, n, REQUEST_TIMEOUT_MS, status, resp, err, sizeof err);
    if (rc != 0 && rc != SP_ECLOSED) sp_warn("agent", "task %s: %s", t->id, err);
    if (rc == 0 && *status >= 500) sp_warn("agent", "task %s: %s answered %ld", t->id, path, *status);
    return rc;
}

static void task_on_stop(void *arg, agent__stop_t why)
{
    task_t *t = arg;
    pthread_mutex_lock(&t->pool->mu);
    if (t->exec) agent__exec_stop(t->exec, why);
    pthread_mutex_unlock(&t->pool->mu);
}

static void task_on_resume(void *arg)
{
    task_t *t = arg;
    pthread_mutex_lock(&t->pool->mu);
    if (t->exec) agent__exec_resume(t->exec);
    pthread_mutex_unlock(&t->pool->mu);
}

static void *task_main(void *arg)
{
    task_t *t = arg;
    agent_pool_t *p = t->pool;
    char err[512];
    agent__task_t *spec = NULL;
    agent__exec_t *x = NULL;
    agent__report_t *rep = NULL;
    int rc = agent__task_parse(t->json, strlen(t->json), &spec, err, sizeof err);
    int hrc = agent__http_new(&t->http, p->server, p->token, err + 256, sizeof err - 256);
    agent__report_opts_t ro = {.task_id = t->id,
                               .lease = t->lease,
                               .zstd_level = p->zstd_level,
                               .post = task_post,
                               .post_arg = t,
                               .on_stop = task_on_stop,
                               .on_resume = task_on_resume,
                               .cb_arg = t};
    if (hrc != 0 || agent__report_new(&rep, &ro) != 0) {
        /* Only memory or thread exhaustion gets here: the server fails
         * the task when its lease lapses. */
        sp_error("agent", "task %s: cannot start its uploader", t->id);
        goto out;
    }
    if (rc != 0) {
        sp_error("agent", "task %s: %s", t->id, err);
        agent__report_finish(rep, AGENT__INFRA_FAIL, err);
        goto out;
    }
    agent__exec_opts_t xo = {.work_dir = p->work_dir,
                             .bwrap = p->bwrap,
                             .docker_socket = p->docker_socket,
                             .agent_name = p->name,
                             .keep_work = p->keep_work};
    agent__sink_t sink = agent__report_sink(rep);
    if ((rc = agent__exec_new(&x, &xo, spec, &sink)) != 0) {
        snprintf(err, sizeof err, "cannot prepare the executor: %s", sp_strerror(rc));
        agent__report_finish(rep, AGENT__INFRA_FAIL, err);
        goto out;
    }
    pthread_mutex_lock(&p->mu);
    t->exec = x;
    t->rep = rep;
    /* A task that came while the agent drained is not started; one that
     * was running when the kill came (before t->exec was set) is killed. */
    if (t->refused || p->killing) agent__exec_stop(x, AGENT__STOP_SHUTDOWN);
    if (p->killing) agent__report_hurry(rep);
    pthread_mutex_unlock(&p->mu);
    sp_info("agent", "task %s: running job %s #%lld", t->id, spec->job_name, (long long)spec->job_number);
    const char *msg = NULL;
    agent__status_t st = agent__exec_run(x, &msg);
    agent__report_finish(rep, st, msg);
    pthread_mutex_lock(&p->mu);
    t->exec = NULL;
    pthread_mutex_unlock(&p->mu);
out:
    agent__exec_free(x);
    pthread_mutex_lock(&p->mu);
    t->rep = NULL;
    if (rep && agent__report_lost(rep))
        p->lost++;
    else
        p->finished++;
    pthread_mutex_unlock(&p->mu);
    agent__report_free(rep);
    agent__task_free(spec);
    agent__http_free(t->http);
    t->http = NULL;
    pthread_mutex_lock(&p->mu);
    t->done = true;
    p->nrunning--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Joins and frees finished tasks. Control thread only. */
static void reap(agent_pool_t *p)
{
    for (;;) {
        pthread_mutex_lock(&p->mu);
        task_t *t = NULL;
        for (task_t **pp = &p->tasks; *pp; pp = &(*pp)->next) {
            if ((*pp)->done) {
                t = *pp;
                *pp = t->next;
                break;
            }
        }
        pthread_mutex_unlock(&p->mu);
        if (t == NULL) return;
        pthread_join(t->th, NULL);
        free(t->json);
        free(t->id);
        free(t->lease);
        free(t);
    }
}

/* Takes a claimed TASK (borrowed). */
static void start_task(agent_pool_t *p, json_t *task)
{
    json_t *id = json_object_get(task, "task_id"), *lease = json_object_get(task, "lease");
    if (!json_is_string(id) || !json_is_string(lease)) {
        sp_error("agent", "claim: the task has no task_id or lease; ignored");
        return;
    }
    task_t *t = sp_xcalloc(1, sizeof *t);
    t->pool = p;
    t->id = sp_xstrdup(json_string_value(id));
    t->lease = sp_xstrdup(json_string_value(lease));
    t->json = json_dumps(task, JSON_COMPACT);
    if (t->json == NULL) t->json = sp_xstrdup("{}");
    pthread_mutex_lock(&p->mu);
    t->refused = p->draining;
    t->next = p->tasks;
    p->tasks = t;
    p->nrunning++;
    p->claimed++;
    int rc = pthread_create(&t->th, NULL, task_main, t);
    if (rc != 0) {
        p->tasks = t->next;
        p->nrunning--;
        pthread_mutex_unlock(&p->mu);
        sp_error("agent", "task %s: cannot start a thread: %s", t->id, strerror(rc));
        free(t->json), free(t->id), free(t->lease), free(t);
        return;
    }
    pthread_mutex_unlock(&p->mu);
}

/* ---- threads ------------------------------------------------------------- */

static void backoff_wait(agent_pool_t *p, int64_t ms)
{
    int64_t until = mono_ms() + ms;
    pthread_mutex_lock(&p->mu);
    while (!p->draining && mono_ms() < until) wait_until(p, until);
    pthread_mutex_unlock(&p->mu);
}

static void fatal(agent_pool_t *p, int rc, const char *msg)
{
    sp_error("agent", "%s", msg);
    pthread_mutex_lock(&p->mu);
    if (p->rc == 0) {
        p->rc = rc;
        snprintf(p->err, sizeof p->err, "%s", msg);
    }
    drain_locked(p, false, p->grace_ms);
    pthread_mutex_unlock(&p->mu);
}

static bool draining(agent_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    bool d = p->draining;
    pthread_mutex_unlock(&p->mu);
    return d;
}

static void claim_loop(agent_pool_t *p)
{
    char err[512];
    int64_t backoff = 0;
    while (!draining(p)) {
        reap(p);
        if (!p->registered) {
            int rc = do_register(p, err, sizeof err);
            if (rc < 0) {
                char msg[700];
                snprintf(msg, sizeof msg, "the server refused to register this agent: %s", err);
                fatal(p, rc, msg);
                return;
            }
            if (rc > 0) {
                backoff = backoff ? (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2) : 500;
                if (!draining(p))
                    sp_warn("agent", "cannot register yet (%s); again in %lld ms", err, (long long)backoff);
                backoff_wait(p, backoff);
                continue;
            }
            backoff = 0;
        }
        pthread_mutex_lock(&p->mu);
        while (p->nrunning >= p->slots && !p->draining) pthread_cond_wait(&p->cv, &p->mu);
        int free_slots = p->slots - p->nrunning;
        bool stop = p->draining;
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        sp_buf_t b = {0};
        sp_buf_addstr(&b, "{\"agent_id\":");
        sp_buf_add_json_str(&b, p->agent_id, strlen(p->agent_id));
        sp_buf_printf(&b, ",\"free_slots\":%d}", free_slots);
        char path[96];
        snprintf(path, sizeof path, "/api/agent/v1/claim?wait_ms=%d", p->claim_wait_ms);
        json_t *o;
        long st = post_json(p->ctl, path, &b, p->claim_wait_ms + REQUEST_TIMEOUT_MS, &o, err, sizeof err);
        sp_buf_free(&b);
        if (st == 200) {
            backoff = 0;
            json_t *task = json_object_get(o, "task");
            if (json_is_object(task)) {
                start_task(p, task);
                if (p->once) {
                    pthread_mutex_lock(&p->mu);
                    drain_locked(p, false, INT64_MAX);
                    pthread_mutex_unlock(&p->mu);
                }
            } else {
                sp_warn("agent", "claim answered 200 without a task");
            }
        } else if (st == 204) {
            backoff = 0;
        } else if (st == 404) {
            /* The server does not know this agent (any more): register
             * again as a new one. */
            sp_warn("agent", "the server does not know agent %s; registering again", p->agent_id);
            pthread_mutex_lock(&p->mu);
            p->registered = false;
            pthread_mutex_unlock(&p->mu);
        } else if (st == 401 || st == 403) {
            json_decref(o);
            char msg[700];
            snprintf(msg, sizeof msg, "the server refused this agent's token: %s", err);
            fatal(p, SP_EINVAL, msg);
            return;
        } else if (st != SP_ECLOSED) {
            backoff = backoff ? (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2) : 500;
            sp_warn("agent", "claim failed (%s); again in %lld ms", err, (long long)backoff);
            backoff_wait(p, backoff);
        }
        json_decref(o);
    }
}

static void *ctl_main(void *arg)
{
    agent_pool_t *p = arg;
    claim_loop(p);

    /* Draining: the running tasks get until the deadline, then die. */
    pthread_mutex_lock(&p->mu);
    if (p->nrunning > 0 && !p->killing) sp_info("agent", "draining: waiting for %d running task(s)", p->nrunning);
    while (p->nrunning > 0 && !p->killing) {
        if (p->drain_deadline != INT64_MAX && mono_ms() >= p->drain_deadline) {
            sp_warn("agent", "grace period over: killing %d running task(s)", p->nrunning);
            p->killing = true;
            kill_all_locked(p);
            break;
        }
        wait_until(p, p->drain_deadline);
    }
    while (p->nrunning > 0) pthread_cond_wait(&p->cv, &p->mu);
    p->hb_stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    reap(p);
    agent__http_abort(p->hb);
    if (p->hb_started) pthread_join(p->hb_th, NULL);
    p->hb_started = false;
    pthread_mutex_lock(&p->mu);
    p->done = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void *hb_main(void *arg)
{
    agent_pool_t *p = arg;
    char err[512];
    pthread_mutex_lock(&p->mu);
    while (!p->hb_stop) {
        int64_t until = mono_ms() + (p->heartbeat_ms > 0 ? p->heartbeat_ms : 5000);
        while (!p->hb_stop && mono_ms() < until) wait_until(p, until);
        if (p->hb_stop) break;
        sp_buf_t b = {0};
        sp_buf_addstr(&b, "{\"agent_id\":");
        sp_buf_add_json_str(&b, p->agent_id, strlen(p->agent_id));
        sp_buf_addstr(&b, ",\"running\":[");
        int n = 0;
        for (task_t *t = p->tasks; t; t = t->next) {
            if (t->done) continue;
            if (n++) sp_buf_addstr(&b, ",");
            sp_buf_add_json_str(&b, t->id, strlen(t->id));
        }
        sp_buf_addstr(&b, "]}");
        if (n == 0 || !p->registered) {
            sp_buf_free(&b);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        json_t *o;
        long st = post_json(p->hb, "/api/agent/v1/heartbeat", &b, REQUEST_TIMEOUT_MS, &o, err, sizeof err);
        sp_buf_free(&b);
        if (st != 200 && st != SP_ECLOSED) sp_warn("agent", "heartbeat failed: %s", err);
        pthread_mutex_lock(&p->mu);
        json_t *cancel = json_object_get(o, "cancel");
        size_t i;
        json_t *v;
        json_array_foreach (cancel, i, v) {
            if (!json_is_string(v)) continue;
            for (task_t *t = p->tasks; t; t = t->next) {
                if (strcmp(t->id, json_string_value(v)) != 0 || t->exec == NULL) continue;
                sp_info("agent", "task %s: canceled by the server (heartbeat)", t->id);
                agent__exec_stop(t->exec, AGENT__STOP_CANCEL);
            }
        }
        json_decref(o);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- the Docker API at start ------------------------------------------------ */

/* The Docker API must answer at the socket. Containers that an earlier
 * agent process with this work directory left behind (it was killed
 * before its teardown, e.g. SIGKILL or power loss) are removed: they
 * carry the label spool.work_dir, and no other agent uses this work
 * directory. */
static int docker_check(const char *sock, const char *work_dir, char *err, size_t errlen)
{
    char why[512];
    sp_buf_t b = {0};
    long st = 0;
    int rc = agent__dk_sync(sock, "GET", "/version", NULL, 10000, &st, &b, why, sizeof why);
    if (rc == 0 && st != 200) snprintf(why, sizeof why, "GET /version answered %ld", st), rc = SP_EIO;
    sp_buf_free(&b);
    if (rc != 0) {
        snprintf(err, errlen,
                 "the Docker API does not answer at %s (%s); start Docker or `podman system service`, or run the "
                 "agent without --docker-socket",
                 sock, why);
        return SP_EIO;
    }
    char *filter = sp_xasprintf("{\"label\":[\"spool.work_dir=%s\"]}", work_dir);
    char *esc = hc_escape(filter);
    char *path = sp_xasprintf("/containers/json?all=true&filters=%s", esc);
    json_t *list = NULL;
    /* A primary goes only after its services (they use its network
     * namespace), and the list comes in no set order: a few passes. */
    for (int pass = 0; pass < 4; pass++) {
        sp_buf_free(&b);
        json_decref(list);
        rc = agent__dk_sync(sock, "GET", path, NULL, 10000, &st, &b, why, sizeof why);
        list = rc == 0 && st == 200 ? json_loadb((const char *)b.p, b.n, 0, NULL) : NULL;
        if (json_array_size(list) == 0) break;
        size_t i;
        json_t *c;
        json_array_foreach (list, i, c) {
            json_t *id = json_object_get(c, "Id");
            if (!json_is_string(id)) continue;
            char *del = sp_xasprintf("/containers/%s?force=true&v=true", json_string_value(id));
            sp_buf_t r = {0};
            if (agent__dk_sync(sock, "DELETE", del, NULL, 30000, &st, &r, why, sizeof why) == 0 &&
                (st == 204 || st == 200))
                sp_warn("agent", "removed container %.12s, left behind by an earlier agent in %s",
                        json_string_value(id), work_dir);
            sp_buf_free(&r);
            free(del);
        }
    }
    json_decref(list);
    sp_buf_free(&b);
    free(path);
    free(esc);
    free(filter);
    return 0;
}

/* ---- the public face -------------------------------------------------------- */

static void pool_free(agent_pool_t *p)
{
    agent__http_free(p->ctl);
    agent__http_free(p->hb);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->server), free(p->token), free(p->name), free(p->labels), free(p->work_dir), free(p->bwrap);
    free(p->docker_socket);
    free(p);
}

int agent_pool_start(const agent_opts_t *o, agent_pool_t **out, char *err, size_t errlen)
{
    if (o->server == NULL || *o->server == 0) {
        snprintf(err, errlen, "no server URL (--server)");
        return SP_EINVAL;
    }
    if (o->token == NULL || *o->token == 0) {
        snprintf(err, errlen, "no agent token (--token or $SPOOL_AGENT_TOKEN)");
        return SP_EINVAL;
    }
    if (o->work_dir == NULL || *o->work_dir == 0) {
        snprintf(err, errlen, "no work directory (--work-dir)");
        return SP_EINVAL;
    }
    if (o->slots < 0 || o->slots > AGENT_MAX_SLOTS) {
        snprintf(err, errlen, "slots: expected 1..%d, got %d", AGENT_MAX_SLOTS, o->slots);
        return SP_EINVAL;
    }
    if (o->zstd_level < 0 || o->zstd_level > 19) {
        snprintf(err, errlen, "zstd level: expected 1..19, got %d", o->zstd_level);
        return SP_EINVAL;
    }
    int rc = agent__mkdirs(o->work_dir, 0755);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create the work directory %s: %s", o->work_dir, sp_strerror(rc));
        return rc;
    }
    char *abs = realpath(o->work_dir, NULL);
    if (abs == NULL) {
        rc = -errno;
        snprintf(err, errlen, "work directory %s: %s", o->work_dir, strerror(errno));
        return rc;
    }
    char *bwrap = NULL;
    if (!o->no_sandbox && (rc = agent__sandbox_probe(&bwrap, err, errlen)) != 0) {
        free(abs);
        return rc;
    }
    if (o->docker_socket != NULL && *o->docker_socket != 0 &&
        (rc = docker_check(o->docker_socket, abs, err, errlen)) != 0) {
        free(bwrap);
        free(abs);
        return rc;
    }
    agent_pool_t *p = sp_xcalloc(1, sizeof *p);
    p->docker_socket = o->docker_socket && *o->docker_socket ? sp_xstrdup(o->docker_socket) : NULL;
    p->server = sp_xstrdup(o->server);
    p->token = sp_xstrdup(o->token);
    char host[256] = "agent";
    size_t hn = sizeof host;
    if (o->name == NULL || *o->name == 0) uv_os_gethostname(host, &hn);
    p->name = sp_xstrdup(o->name && *o->name ? o->name : host);
    p->labels = o->labels ? sp_xstrdup(o->labels) : NULL;
    p->work_dir = abs;
    p->bwrap = bwrap;
    p->slots = o->slots > 0 ? o->slots : 1;
    p->cpus = o->cpus;
    p->memory_mb = o->memory_mb;
    p->zstd_level = o->zstd_level > 0 ? o->zstd_level : 3;
    p->grace_ms = o->grace_ms == 0 ? 60000 : (o->grace_ms < 0 ? 0 : o->grace_ms);
    p->claim_wait_ms = o->claim_wait_ms > 0 ? o->claim_wait_ms : 30000;
    p->keep_work = o->keep_work;
    p->once = o->once;
    p->heartbeat_ms = 5000;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if ((rc = agent__http_new(&p->ctl, p->server, p->token, err, errlen)) != 0 ||
        (rc = agent__http_new(&p->hb, p->server, p->token, err, errlen)) != 0) {
        pool_free(p);
        return rc;
    }
    if ((rc = pthread_create(&p->hb_th, NULL, hb_main, p)) != 0) {
        snprintf(err, errlen, "cannot start a thread: %s", strerror(rc));
        pool_free(p);
        return -rc;
    }
    p->hb_started = true;
    if ((rc = pthread_create(&p->ctl_th, NULL, ctl_main, p)) != 0) {
        snprintf(err, errlen, "cannot start a thread: %s", strerror(rc));
        pthread_mutex_lock(&p->mu);
        p->hb_stop = true;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->hb_th, NULL);
        pool_free(p);
        return -rc;
    }
    if (!p->bwrap)
        sp_warn("agent", "running without a sandbox (--no-sandbox): steps can write anywhere this process can");
    sp_handle_opened();
    *out = p;
    return 0;
}

void agent_pool_drain(agent_pool_t *p, bool now)
{
    pthread_mutex_lock(&p->mu);
    drain_locked(p, now, p->grace_ms);
    pthread_mutex_unlock(&p->mu);
    /* Cut the long poll short; the control client is not used again. */
    agent__http_abort(p->ctl);
}

int agent_pool_wait(agent_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    while (!p->done) pthread_cond_wait(&p->cv, &p->mu);
    int rc = p->rc;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

const char *agent_pool_error(agent_pool_t *p) { return p->err[0] ? p->err : NULL; }

void agent_pool_stats(agent_pool_t *p, agent_pool_stats_t *out)
{
    pthread_mutex_lock(&p->mu);
    *out = (agent_pool_stats_t){.registered = p->registered,
                                .running = p->nrunning,
                                .claimed = p->claimed,
                                .finished = p->finished,
                                .lost = p->lost};
    snprintf(out->agent_id, sizeof out->agent_id, "%s", p->agent_id);
    pthread_mutex_unlock(&p->mu);
}

void agent_pool_stop(agent_pool_t *p)
{
    if (p == NULL) return;
    agent_pool_drain(p, true);
    agent_pool_wait(p);
    pthread_join(p->ctl_th, NULL);
    pool_free(p);
    sp_handle_closed();
}
