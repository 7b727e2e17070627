/*
 * The executor: runs one task's steps on a private libuv loop.
 *
 * Layout of a task directory (removed after the task unless keep_work):
 *
 *   <work>/<task_id>/          the only writable place in the sandbox
 *   <work>/<task_id>/home/     HOME and `~`; ~/project by default
 *   <work>/<task_id>/tmp/      bound on /tmp inside the sandbox; BASH_ENV
 *   <work>/<task_id>/.spool/   scripts the agent writes for steps
 *
 * Steps run one after the other, each in its own sandbox (see sandbox.c)
 * and so in its own PID namespace: a process a step leaves behind dies
 * with the step, and killing a step kills its whole tree. A background
 * step keeps running beside the next steps until it exits or the job
 * ends. Processes started with `&` in one step do not survive into the
 * next (CircleCI's containers would keep them): use `background: true`.
 *
 * Output: stdout and stderr are separate pipes, read into one buffer and
 * cut into lines in place; complete lines go straight into the current
 * chunk (msgpack) without a per-line allocation or system call. A chunk
 * goes to the sink when it reaches chunk_bytes or flush_ms after its
 * first line. A line's time is the loop's cached clock when its newline
 * was read, relative to the start of the step. When the sink reports that
 * it is backed up, reading stops (so the step blocks on a full pipe)
 * until agent__exec_resume; the quiet time of a paused step does not count
 * against its no_output_timeout.
 *
 * Every kill is SIGKILL to a whole tree: the sandbox init's pid (its PID
 * namespace dies with it) or, without a sandbox, the step's process group
 * (UV_PROCESS_DETACHED makes the step a session and group leader). A
 * daemon that leaves its group escapes only when there is no sandbox.
 *
 * This file is the shell executor and the step machinery (output,
 * timeouts, completion, steps 0 and 99) that the docker executor
 * (exec_docker.c) shares; their common state is in exec_internal.h.
 */
#include "exec_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define LINGER_MS        2000        /* after exit, how long a straggler may hold the pipes (no sandbox) */
#define SCRIPT_ARGMAX    (96 * 1024) /* longer commands go through a script file, not argv */
#define KILL_FALLBACK_MS 2000        /* a kill waits this long for bwrap's info before killing bwrap */

const char *agent__status_name(agent__status_t s)
{
    switch (s) {
    case AGENT__SUCCESS: return "success";
    case AGENT__FAILED: return "failed";
    case AGENT__TIMEDOUT: return "timedout";
    case AGENT__CANCELED: return "canceled";
    case AGENT__INFRA_FAIL: return "infrastructure_fail";
    case AGENT__LOST: return NULL;
    }
    return NULL;
}

int64_t agent__wall_ms(void) { return sp_now_ns() / 1000000; }

/* Go's time.Duration format, as CircleCI prints it: 10m0s, 1.5s, 300ms. */
void agent__fmt_duration(int64_t ms, char *out, size_t n)
{
    if (ms < 1000) {
        snprintf(out, n, "%lldms", (long long)ms);
        return;
    }
    int64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
    char sec[32];
    if (frac) {
        snprintf(sec, sizeof sec, "%lld.%03lld", (long long)s, (long long)frac);
        size_t k = strlen(sec);
        while (sec[k - 1] == '0') sec[--k] = 0;
    } else {
        snprintf(sec, sizeof sec, "%lld", (long long)s);
    }
    if (h)
        snprintf(out, n, "%lldh%lldm%ss", (long long)h, (long long)m, sec);
    else if (m)
        snprintf(out, n, "%lldm%ss", (long long)m, sec);
    else
        snprintf(out, n, "%ss", sec);
}

/* ---- environment ------------------------------------------------------ */

static void env_set(agent__env_t **env, size_t *n, size_t *cap, const char *name, const char *value)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*env)[i].name, name) == 0) {
            free((*env)[i].value);
            (*env)[i].value = sp_xstrdup(value);
            return;
        }
    }
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 32;
        *env = sp_xrealloc(*env, *cap * sizeof **env);
    }
    (*env)[*n].name = sp_xstrdup(name);
    (*env)[*n].value = sp_xstrdup(value);
    (*n)++;
}

static void env_free(agent__env_t *env, size_t n)
{
    for (size_t i = 0; i < n; i++) free(env[i].name), free(env[i].value);
    free(env);
}

static const char *const inherit[] = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME"};

/* "NAME=value" strings for one step: the job's environment, then the
 * step's, then extra (name, value, name, value, ..., NULL). With the
 * docker executor the job's environment lacks the agent's PATH and
 * locale (the image has its own); host adds them back for what runs on
 * the agent's side (the checkout). */
static char **envp_for(agent__exec_t *x, const agent__env_t *step_env, size_t nstep, const char *const *extra,
                       bool host)
{
    agent__env_t *e = NULL;
    size_t n = 0, cap = 0;
    if (host && x->docker_on) {
        for (size_t i = 0; i < SP_ARRAY_LEN(inherit); i++) {
            const char *v = getenv(inherit[i]);
            if (v != NULL) env_set(&e, &n, &cap, inherit[i], v);
        }
    }
    for (size_t i = 0; i < x->nenv; i++) env_set(&e, &n, &cap, x->env[i].name, x->env[i].value);
    for (size_t i = 0; i < nstep; i++) env_set(&e, &n, &cap, step_env[i].name, step_env[i].value);
    for (size_t i = 0; extra && extra[i]; i += 2) env_set(&e, &n, &cap, extra[i], extra[i + 1]);
    char **envp = sp_xcalloc(n + 1, sizeof *envp);
    for (size_t i = 0; i < n; i++) envp[i] = sp_xasprintf("%s=%s", e[i].name, e[i].value);
    env_free(e, n);
    return envp;
}

/* ---- paths --------------------------------------------------------------- */

static bool under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/');
}

/* A path as a step sees it: `~` is the task's home, relative paths are
 * relative to base. Caller frees. */
static char *resolve(agent__exec_t *x, const char *base, const char *path)
{
    if (path == NULL || *path == 0) return sp_xstrdup(base);
    if (path[0] == '~' && (path[1] == 0 || path[1] == '/')) return sp_xasprintf("%s%s", x->home, path + 1);
    if (path[0] == '/') return sp_xstrdup(path);
    return sp_xasprintf("%s/%s", base, path);
}

/* Where a path the step sees lives on the host: inside the sandbox /tmp
 * is the task's tmp directory. Caller frees. */
static char *host_path(agent__exec_t *x, const char *inner)
{
    if (x->o.bwrap != NULL && !under(inner, x->task_dir) && under(inner, "/tmp"))
        return sp_xasprintf("%s%s", x->tmp, inner + 4);
    return sp_xstrdup(inner);
}

/* Creates a directory a step will work in; err gets a sentence. */
static int ensure_dir(agent__exec_t *x, const char *inner, char *err, size_t errlen)
{
    char *host = host_path(x, inner);
    struct stat st;
    int rc = 0;
    if (stat(host, &st) == 0 && S_ISDIR(st.st_mode)) {
        free(host);
        return 0;
    }
    if (x->o.bwrap != NULL && !under(host, x->task_dir)) {
        snprintf(err, errlen,
                 "cannot create directory %s: it is outside the task directory, which is the only writable place "
                 "in the sandbox (use a path under ~ or /tmp)",
                 inner);
        rc = SP_EINVAL;
    } else if ((rc = agent__mkdirs(host, 0755)) != 0) {
        snprintf(err, errlen, "cannot create directory %s: %s", inner, sp_strerror(rc));
    }
    free(host);
    return rc;
}

/* Splits a shell setting ("/bin/sh -eo pipefail") into words; single and
 * double quotes group, as in a shell. Caller frees with agent__argv_free. */
char **agent__split_words(const char *s, size_t extra)
{
    size_t cap = 8 + extra, n = 0;
    char **w = sp_xcalloc(cap, sizeof *w);
    sp_buf_t cur = {0};
    bool in = false;
    char q = 0;
    for (const char *p = s;; p++) {
        char c = *p;
        if (c == 0 || (!q && (c == ' ' || c == '\t' || c == '\n'))) {
            if (in) {
                if (n + extra + 2 > cap) w = sp_xrealloc(w, (cap *= 2) * sizeof *w);
                w[n++] = sp_xstrndup(cur.p ? (char *)cur.p : "", cur.n);
                cur.n = 0;
                in = false;
            }
            if (c == 0) break;
            continue;
        }
        in = true;
        if (q && c == q)
            q = 0;
        else if (!q && (c == '\'' || c == '"'))
            q = c;
        else
            sp_buf_add(&cur, &c, 1);
    }
    sp_buf_free(&cur);
    w[n] = NULL;
    return w;
}

static size_t argv_len(char **a)
{
    size_t n = 0;
    while (a[n]) n++;
    return n;
}

/* ---- output ------------------------------------------------------------ */

static void pause_all(agent__exec_t *x);

static void flush(agent__proc_t *p)
{
    agent__exec_t *x = p->x;
    if (p->flush_on) {
        uv_timer_stop(&p->flush_t);
        p->flush_on = false;
    }
    if (agent__chunk_empty(&p->chunk)) return;
    agent__chunk_seal(&p->chunk);
    sp_buf_t b = p->chunk.buf;
    p->chunk.buf = (sp_buf_t){0};
    bool full = x->sink.output(x->sink.arg, p->id, x->task->node_index, p->seq++, &b);
    sp_buf_free(&b);
    agent__chunk_init(&p->chunk);
    sp_buf_reserve(&p->chunk.buf, x->o.chunk_bytes + 1024);
    if (full && !x->paused) pause_all(x);
}

static void on_flush_timer(uv_timer_t *t) { flush(t->data); }

static void add_line(agent__proc_t *p, int s, uint64_t t, const char *b, size_t n)
{
    agent__chunk_add(&p->chunk, t, s, b, n);
    if (p->chunk.buf.n >= p->x->o.chunk_bytes) {
        flush(p);
    } else if (!p->flush_on && p->spawned) {
        uv_timer_start(&p->flush_t, on_flush_timer, (uint64_t)p->x->o.flush_ms, 0);
        p->flush_on = true;
    }
}

/* Where to cut a line of more than AGENT__MAX_LINE bytes: not inside a
 * UTF-8 sequence (unless it is not UTF-8 at all). */
static size_t cut_at(const char *b)
{
    size_t k = AGENT__MAX_LINE;
    while (k > AGENT__MAX_LINE - 4 && ((unsigned char)b[k] & 0xC0) == 0x80) k--;
    return ((unsigned char)b[k] & 0xC0) == 0x80 ? AGENT__MAX_LINE : k;
}

static void emit(agent__proc_t *p, int s, uint64_t t, const char *b, size_t n)
{
    while (n > AGENT__MAX_LINE) {
        size_t k = cut_at(b);
        add_line(p, s, t, b, k);
        b += k, n -= k;
    }
    add_line(p, s, t, b, n);
}

static void trim_carry(agent__proc_t *p, int s, uint64_t t)
{
    sp_buf_t *c = &p->carry[s];
    size_t off = 0;
    while (c->n - off > AGENT__MAX_LINE) {
        size_t k = cut_at((char *)c->p + off);
        add_line(p, s, t, (char *)c->p + off, k);
        off += k;
    }
    if (off) {
        memmove(c->p, c->p + off, c->n - off);
        c->n -= off;
    }
}

/* Cuts freshly read bytes into lines. A line's end may arrive in a later
 * read: the start waits in carry[s]. */
void agent__proc_feed(agent__proc_t *p, int s, const char *b, size_t n)
{
    uint64_t t = uv_now(&p->x->loop) - p->t0;
    const char *end = b + n, *nl;
    sp_buf_t *c = &p->carry[s];
    if (c->n > 0) {
        nl = memchr(b, '\n', n);
        if (nl == NULL) {
            sp_buf_add(c, b, n);
            if (c->n > AGENT__MAX_LINE) trim_carry(p, s, t);
            return;
        }
        sp_buf_add(c, b, (size_t)(nl - b));
        emit(p, s, t, (char *)c->p, c->n);
        c->n = 0;
        b = nl + 1;
    }
    while (b < end && (nl = memchr(b, '\n', (size_t)(end - b))) != NULL) {
        emit(p, s, t, b, (size_t)(nl - b));
        b = nl + 1;
    }
    if (b < end) {
        sp_buf_add(c, b, (size_t)(end - b));
        if (c->n > AGENT__MAX_LINE) trim_carry(p, s, t);
    }
}

/* A line the agent itself adds to a step's output. */
void agent__proc_note(agent__proc_t *p, int s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    uint64_t t = p->spawned ? uv_now(&p->x->loop) - p->t0 : 0;
    emit(p, s, t, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* ---- processes ------------------------------------------------------------ */

static void job_done(agent__exec_t *x);

static void kill_proc(agent__proc_t *p, agent__kill_t why)
{
    if (p->killed == AGENT__KILL_NONE) p->killed = why;
    if (!p->spawned || p->exited) return;
    if (p->docker) {
        agent__dk_kill_step(p);
        return;
    }
    if (p->x->o.bwrap == NULL) {
        kill(-p->ps.pid, SIGKILL);
        return;
    }
    /* Killing the sandbox's init ends its PID namespace; bwrap then exits
     * by itself once the namespace is empty. Killing bwrap instead is not
     * safe while it starts: the init sets its parent-death signal only
     * after clone(), so a bwrap killed before that leaves the init and
     * the step running. A kill that comes before bwrap has told us the
     * init's pid therefore waits for it (on_info_read), and only falls
     * back to killing bwrap after KILL_FALLBACK_MS. */
    if (p->inner_pid > 0) {
        kill(p->inner_pid, SIGKILL);
    } else if (!p->kill_pending) {
        p->kill_pending = true;
        if (!p->lingering) uv_timer_start(&p->quiet_t, agent__proc_on_quiet_timer, KILL_FALLBACK_MS, 0);
    }
}

static void on_proc_closed(uv_handle_t *h)
{
    agent__proc_t *p = h->data;
    if (--p->nopen > 0) return;
    agent__chunk_free(&p->chunk);
    sp_buf_free(&p->carry[0]);
    sp_buf_free(&p->carry[1]);
    free(p->exec_id);
    free(p->pidf);
    free(p->killf);
    free(p);
}

static void close_handle(agent__proc_t *p, uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, on_proc_closed);
}

static void complete(agent__proc_t *p)
{
    agent__exec_t *x = p->x;
    p->completed = true;
    for (int s = 0; s < 2; s++) {
        if (p->carry[s].n > 0) emit(p, s, uv_now(&x->loop) - p->t0, (char *)p->carry[s].p, p->carry[s].n);
        p->carry[s].n = 0;
    }
    const char *status = "success";
    int code = -1;
    char d[32];
    switch (p->killed) {
    case AGENT__KILL_NO_OUTPUT:
        agent__fmt_duration(p->quiet_ms, d, sizeof d);
        agent__proc_note(p, 1, "Too long with no output (exceeded %s): context deadline exceeded", d);
        status = "timedout";
        if (!p->background) x->timedout = x->failed = true;
        break;
    case AGENT__KILL_JOB_TIMEOUT:
        agent__fmt_duration(x->task->job_timeout_ms, d, sizeof d);
        agent__proc_note(p, 1, "Build timed out (exceeded %s)", d);
        status = "timedout";
        break;
    case AGENT__KILL_STOP:
        agent__proc_note(p, 1,
                         x->stop == AGENT__STOP_SHUTDOWN ? "The agent stopped before this step finished" : "Canceled");
        status = "canceled";
        break;
    case AGENT__KILL_JOB_END: break; /* a background step outliving the job is normal */
    case AGENT__KILL_NONE:
        code = p->term_signal ? 128 + p->term_signal : (int)p->exit_status;
        if (code < 0) {
            /* A docker step whose exit code is unknown (it could not
             * start, or the API failed); the reason is in its output. */
            status = "failed";
            if (!p->background) x->failed = true;
        } else if (code != 0) {
            status = "failed";
            agent__proc_note(p, 1, "Exited with code exit status %d", code);
            /* A background step's failure does not fail the job
             * (CircleCI calls such steps insignificant). */
            if (!p->background) x->failed = true;
            if (p->checkout && code == 3) {
                x->infra = true;
                /* Without user information: the URL may carry a token. */
                const char *u = x->task->checkout_url, *scheme = strstr(u, "://");
                const char *at = scheme ? strchr(scheme + 3, '@') : NULL,
                           *slash = scheme ? strchr(scheme + 3, '/') : NULL;
                if (at && (!slash || at < slash))
                    snprintf(x->message, sizeof x->message, "checkout: cannot fetch %.*s%s", (int)(scheme + 3 - u), u,
                             at + 1);
                else
                    snprintf(x->message, sizeof x->message, "checkout: cannot fetch %s", u);
            }
        }
        break;
    }
    flush(p);
    x->sink.step_finished(x->sink.arg, p->id, x->task->node_index, status, code, agent__wall_ms());
    close_handle(p, (uv_handle_t *)&p->flush_t);
    close_handle(p, (uv_handle_t *)&p->quiet_t);
    if (!p->docker) {
        close_handle(p, (uv_handle_t *)&p->out[0]);
        close_handle(p, (uv_handle_t *)&p->out[1]);
        if (p->info_open) close_handle(p, (uv_handle_t *)&p->info);
        close_handle(p, (uv_handle_t *)&p->ps);
    }
    for (agent__proc_t **pp = &x->procs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    if (p == x->fg) {
        x->fg = NULL;
        agent__exec_advance(x);
    } else if (x->ended && x->procs == NULL) {
        job_done(x);
    }
}

void agent__proc_maybe_complete(agent__proc_t *p)
{
    if (!p->completed && p->exited && p->eof[0] && p->eof[1]) complete(p);
}

void agent__proc_on_quiet_timer(uv_timer_t *t)
{
    agent__proc_t *p = t->data;
    if (p->lingering) {
        /* Something that left the step's process group still holds the
         * pipes (only possible without a sandbox): stop waiting for it. */
        for (int s = 0; s < 2; s++) {
            uv_read_stop((uv_stream_t *)&p->out[s]);
            p->eof[s] = true;
        }
        agent__proc_maybe_complete(p);
        return;
    }
    if (p->kill_pending && !p->docker) {
        /* bwrap's whole process group: bwrap may have forked helpers
         * that are not in the sandbox yet. */
        if (!p->exited && p->inner_pid == 0) kill(-p->ps.pid, SIGKILL);
        return;
    }
    uint64_t now = uv_now(&p->x->loop);
    if (p->x->paused) p->last_out = now;
    uint64_t quiet = now - p->last_out;
    if (quiet >= (uint64_t)p->quiet_ms) {
        kill_proc(p, AGENT__KILL_NO_OUTPUT);
        return;
    }
    uv_timer_start(t, agent__proc_on_quiet_timer, (uint64_t)p->quiet_ms - quiet, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    agent__proc_t *p = h->data;
    /* libuv calls alloc, read(2) and the read callback in sequence, so
     * one buffer per executor serves every pipe. */
    *buf = uv_buf_init(p->x->rbuf, AGENT__READ_BUF);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    agent__proc_t *p = st->data;
    int s = st == (uv_stream_t *)&p->out[1];
    if (nread > 0) {
        agent__proc_feed(p, s, buf->base, (size_t)nread);
        p->last_out = uv_now(&p->x->loop);
        return;
    }
    if (nread == 0) return;
    uv_read_stop(st);
    p->eof[s] = true;
    agent__proc_maybe_complete(p);
}

static void on_info_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    agent__proc_t *p = h->data;
    *buf = uv_buf_init(p->infobuf + p->infolen, (unsigned)(sizeof p->infobuf - 1 - p->infolen));
}

static void on_info_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    agent__proc_t *p = st->data;
    if (nread > 0) {
        p->infolen += (size_t)nread;
        p->inner_pid = agent__sandbox_info_pid(p->infobuf, p->infolen);
        if (p->inner_pid > 0 && p->kill_pending && !p->exited) kill(p->inner_pid, SIGKILL);
        if (p->inner_pid > 0 || p->infolen + 1 >= sizeof p->infobuf) uv_read_stop(st);
        return;
    }
    if (nread < 0) {
        /* bwrap closed its info without a pid: it failed before making
         * the sandbox, so bwrap alone is left to kill. */
        uv_read_stop(st);
        if (p->inner_pid == 0 && p->kill_pending && !p->exited) kill(-p->ps.pid, SIGKILL);
    }
}

static void on_proc_exit(uv_process_t *ps, int64_t status, int sig)
{
    agent__proc_t *p = ps->data;
    p->exited = true;
    p->exit_status = status;
    p->term_signal = sig;
    /* Without a sandbox, what the step left in its process group goes
     * now; with one, the PID namespace is already gone. */
    if (p->x->o.bwrap == NULL) kill(-ps->pid, SIGKILL);
    if (p->info_open) uv_read_stop((uv_stream_t *)&p->info);
    if (!(p->eof[0] && p->eof[1])) {
        p->lingering = true;
        uv_timer_start(&p->quiet_t, agent__proc_on_quiet_timer, LINGER_MS, 0);
    }
    agent__proc_maybe_complete(p);
}

static void start_reading(agent__proc_t *p)
{
    for (int s = 0; s < 2; s++)
        if (!p->eof[s]) uv_read_start((uv_stream_t *)&p->out[s], on_alloc, on_read);
}

static void pause_all(agent__exec_t *x)
{
    x->paused = true;
    /* A docker step's output stops in its data callback instead. */
    for (agent__proc_t *p = x->procs; p; p = p->next)
        for (int s = 0; s < 2 && !p->docker; s++)
            if (!p->eof[s]) uv_read_stop((uv_stream_t *)&p->out[s]);
}

static void resume_all(agent__exec_t *x)
{
    if (!x->paused) return;
    x->paused = false;
    uint64_t now = uv_now(&x->loop);
    for (agent__proc_t *p = x->procs; p && !x->paused; p = p->next) {
        p->last_out = now;
        if (!p->docker)
            start_reading(p);
        else if (p->req != NULL)
            hc_resume(p->req); /* may feed output, and pause again, at once */
    }
}

/* ---- steps ----------------------------------------------------------------- */

static void synth_begin(agent__synth_t *s, agent__exec_t *x, int id, const char *name, const char *bash)
{
    *s = (agent__synth_t){.x = x, .id = id, .t0 = sp_mono_ns()};
    agent__chunk_init(&s->chunk);
    x->sink.step_started(x->sink.arg, id, x->task->node_index, name, bash, agent__wall_ms());
}

void agent__synth_line(agent__synth_t *s, int stream, const char *fmt, ...)
{
    char *line;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) < 0) abort();
    va_end(ap);
    agent__chunk_add(&s->chunk, (uint64_t)((sp_mono_ns() - s->t0) / 1000000), stream, line, strlen(line));
    free(line);
}

void agent__synth_end(agent__synth_t *s, const char *status, int code)
{
    agent__exec_t *x = s->x;
    if (!agent__chunk_empty(&s->chunk)) {
        agent__chunk_seal(&s->chunk);
        bool full = x->sink.output(x->sink.arg, s->id, x->task->node_index, s->seq++, &s->chunk.buf);
        if (full && !x->paused) pause_all(x);
    }
    agent__chunk_free(&s->chunk);
    x->sink.step_finished(x->sink.arg, s->id, x->task->node_index, status, code, agent__wall_ms());
}

static void fail_step(agent__exec_t *x, const agent__step_t *st, const char *bash, const char *why)
{
    agent__synth_t s;
    synth_begin(&s, x, st->id, st->name, bash);
    agent__synth_line(&s, 1, "%s", why);
    agent__synth_end(&s, "failed", -1);
    x->failed = true;
}

/* The checkout step as a script, like CircleCI's: clone (or fetch into an
 * existing clone), then check out the exact revision, on the branch if
 * the task names one, detached otherwise. Parameters come in through the
 * environment, never through the script text, and the URL is shown
 * without its user information (it may hold a token). Exit status 3
 * means the remote could not be read: an infrastructure failure. */
static const char checkout_script[] =
    "url=$SPOOL_CHECKOUT_URL rev=$SPOOL_CHECKOUT_REVISION branch=$SPOOL_CHECKOUT_BRANCH\n"
    "tag=$SPOOL_CHECKOUT_TAG dir=$SPOOL_CHECKOUT_DIR share=$SPOOL_CHECKOUT_SHARE\n"
    "unset SPOOL_CHECKOUT_URL SPOOL_CHECKOUT_REVISION SPOOL_CHECKOUT_BRANCH SPOOL_CHECKOUT_TAG SPOOL_CHECKOUT_DIR\n"
    "unset SPOOL_CHECKOUT_SHARE\n"
    "export GIT_TERMINAL_PROMPT=0\n"
    "shown=$(printf '%s' \"$url\" | sed -E 's#^([a-z+]+://)[^/@]*@#\\1#')\n"
    "if [ -e \"$dir/.git\" ]; then\n"
    "  echo \"Fetching into existing repository $dir\"\n"
    "  cd \"$dir\"\n"
    "  git remote set-url origin \"$url\" 2>/dev/null || git remote add origin \"$url\"\n"
    "  git fetch --force --tags origin '+refs/heads/*:refs/remotes/origin/*' || exit 3\n"
    "elif [ -e \"$dir\" ] && [ -n \"$(ls -A \"$dir\")\" ]; then\n"
    "  echo \"Directory ($dir) you are trying to checkout to is not empty and not a git repository\" >&2\n"
    "  exit 1\n"
    "else\n"
    "  echo \"Cloning $shown into $dir\"\n"
    "  git clone --no-checkout \"$url\" \"$dir\" || exit 3\n"
    "  cd \"$dir\"\n"
    "fi\n"
    "git config gc.auto 0\n"
    "if [ -z \"$rev\" ]; then rev=$(git rev-parse \"origin/${branch:-HEAD}\"); fi\n"
    "if ! git cat-file -e \"$rev^{commit}\" 2>/dev/null; then\n"
    "  git fetch --force origin \"$rev\" || { echo \"Revision $rev is not in $shown\" >&2; exit 1; }\n"
    "fi\n"
    "if [ -n \"$branch\" ] && [ -z \"$tag\" ]; then\n"
    "  git checkout --force -B \"$branch\" \"$rev\"\n"
    "else\n"
    "  git -c advice.detachedHead=false checkout --force --detach \"$rev\"\n"
    "fi\n"
    "git --no-pager log --no-color -n 1 --format='HEAD is now at %h %s'\n"
    "if [ -n \"$share\" ]; then chmod -R a+rwX \"$dir\" || true; fi\n";

/* Starts a run or checkout step. Returns true when the step runs in the
 * foreground (advance waits for it), false when it runs in the
 * background or has already failed. */
static bool start_step(agent__exec_t *x, const agent__step_t *st)
{
    bool checkout = strcmp(st->type, "checkout") == 0;
    const agent__task_t *task = x->task;
    char err[1024];
    char *bash = NULL, *cwd = NULL, *script = NULL, *ro_extra = NULL;
    char **cmd = NULL, **argv = NULL, **envp = NULL;
    bool fg = false;

    const char *extra[16] = {0};
    char *codir = NULL;
    if (checkout) {
        if (task->checkout_url == NULL) {
            fail_step(x, st, NULL, "This task has no checkout information (checkout.url)");
            return false;
        }
        codir = resolve(x, x->wd, st->path);
        if (x->docker_on && !under(codir, x->task_dir)) {
            /* The checkout runs on the agent's side, into the task
             * directory that the primary container shares. */
            snprintf(err, sizeof err,
                     "cannot check out into %s: with the docker executor, the checkout must go under the task "
                     "directory %s, which the container shares (use a path under ~)",
                     codir, x->task_dir);
            fail_step(x, st, NULL, err);
            free(codir);
            return false;
        }
        if (ensure_dir(x, codir, err, sizeof err) != 0) {
            fail_step(x, st, NULL, err);
            free(codir);
            return false;
        }
        const char *kv[] = {"SPOOL_CHECKOUT_URL",
                            task->checkout_url,
                            "SPOOL_CHECKOUT_REVISION",
                            task->checkout_revision ? task->checkout_revision : "",
                            "SPOOL_CHECKOUT_BRANCH",
                            task->checkout_branch ? task->checkout_branch : "",
                            "SPOOL_CHECKOUT_TAG",
                            task->checkout_tag ? task->checkout_tag : "",
                            "SPOOL_CHECKOUT_DIR",
                            codir,
                            "SPOOL_CHECKOUT_SHARE",
                            x->docker_on ? "1" : "",
                            NULL};
        memcpy(extra, kv, sizeof kv);
        cwd = sp_xstrdup(x->home);
        /* A local repository (file:// or a path) under /tmp would be
         * hidden by the sandbox's private /tmp: bind it, read-only. */
        const char *u = task->checkout_url;
        const char *local = strncmp(u, "file://", 7) == 0 ? u + 7 : u;
        struct stat rst;
        if (x->o.bwrap != NULL && local[0] == '/' && under(local, "/tmp") && !under(local, x->task_dir) &&
            stat(local, &rst) == 0)
            ro_extra = sp_xstrdup(local);
        cmd = agent__split_words(x->host_shell, 2);
        size_t n = argv_len(cmd);
        cmd[n] = sp_xstrdup("-c");
        cmd[n + 1] = sp_xstrdup(checkout_script);
        cmd[n + 2] = NULL;
    } else {
        cwd = resolve(x, x->wd, st->working_directory);
        /* In a container the step's wrapper creates its directory. */
        if (!x->docker_on && ensure_dir(x, cwd, err, sizeof err) != 0) {
            fail_step(x, st, NULL, err);
            free(cwd);
            return false;
        }
        const char *shell = st->shell ? st->shell : task->shell;
        bool dflt = shell == NULL || *shell == 0;
        if (dflt) shell = x->shell_default;
        bash = sp_xasprintf("#!%s\n%s", shell, st->command);
        cmd = agent__split_words(shell, 2);
        size_t n = argv_len(cmd);
        if (n == 0) {
            snprintf(err, sizeof err, "The step's shell setting is empty");
            fail_step(x, st, bash, err);
            goto out;
        }
        if (dflt && strlen(st->command) <= SCRIPT_ARGMAX) {
            /* CircleCI's default: /bin/bash -eo pipefail -c COMMAND. */
            cmd[n] = sp_xstrdup("-c");
            cmd[n + 1] = sp_xstrdup(st->command);
            cmd[n + 2] = NULL;
        } else {
            /* A shell of the config's choosing (python3, node...) gets the
             * command as a script file, its last argument. */
            script = sp_xasprintf("%s/step-%d.sh", x->meta, st->id);
            FILE *f = fopen(script, "w");
            bool ok = f != NULL && fputs(st->command, f) >= 0;
            if (f != NULL && fclose(f) != 0) ok = false;
            if (!ok) {
                snprintf(err, sizeof err, "cannot write the step's script %s: %s", script, strerror(errno));
                fail_step(x, st, bash, err);
                goto out;
            }
            cmd[n] = sp_xstrdup(script);
            cmd[n + 1] = NULL;
        }
    }
    envp = envp_for(x, st->env, st->nenv, extra, checkout);
    if (x->docker_on && !checkout) {
        fg = agent__dk_start_step(x, st, cmd, envp, cwd, bash);
        goto out;
    }

    agent__proc_t *p = sp_xcalloc(1, sizeof *p);
    p->x = x;
    p->st = st;
    p->id = st->id;
    p->background = st->background;
    p->checkout = checkout;
    p->quiet_ms = st->no_output_timeout_ms;
    agent__chunk_init(&p->chunk);
    sp_buf_reserve(&p->chunk.buf, x->o.chunk_bytes + 1024);
    uv_timer_init(&x->loop, &p->flush_t);
    uv_timer_init(&x->loop, &p->quiet_t);
    uv_pipe_init(&x->loop, &p->out[0], 0);
    uv_pipe_init(&x->loop, &p->out[1], 0);
    p->flush_t.data = p->quiet_t.data = p->out[0].data = p->out[1].data = p->ps.data = p;
    p->nopen = 5;
    uv_stdio_container_t stdio[4] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->out[0]},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->out[1]},
        {.flags = UV_IGNORE},
    };
    uv_process_options_t po = {
        .exit_cb = on_proc_exit, .env = envp, .stdio = stdio, .stdio_count = 3, .flags = UV_PROCESS_DETACHED};
    if (x->o.bwrap != NULL) {
        uv_pipe_init(&x->loop, &p->info, 0);
        p->info.data = p;
        p->info_open = true;
        p->nopen++;
        stdio[3] =
            (uv_stdio_container_t){.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->info};
        po.stdio_count = 4;
        argv = agent__sandbox_argv(x->o.bwrap, x->task_dir, x->tmp, ro_extra, cwd, cmd, 3);
        po.cwd = x->task_dir;
    } else {
        argv = cmd;
        po.cwd = cwd;
    }
    po.file = argv[0];
    po.args = argv;

    x->sink.step_started(x->sink.arg, st->id, task->node_index, st->name, bash, agent__wall_ms());
    uv_update_time(&x->loop);
    p->t0 = p->last_out = uv_now(&x->loop);
    int rc = uv_spawn(&x->loop, &p->ps, &po);
    p->next = x->procs;
    x->procs = p;
    if (rc != 0) {
        agent__proc_note(p, 1, "Cannot start %s: %s", argv[0], uv_strerror(rc));
        p->exited = p->eof[0] = p->eof[1] = true;
        p->exit_status = 127;
        complete(p); /* not the foreground step: the caller goes on */
        goto out;
    }
    p->spawned = true;
#ifdef F_SETPIPE_SZ
    /* Bigger pipes: fewer reads and context switches for chatty steps. */
    for (int s = 0; s < 2; s++) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&p->out[s], &fd) == 0) fcntl(fd, F_SETPIPE_SZ, 1 << 20);
    }
#endif
    if (!x->paused) start_reading(p);
    if (p->info_open) uv_read_start((uv_stream_t *)&p->info, on_info_alloc, on_info_read);
    if (p->quiet_ms > 0) uv_timer_start(&p->quiet_t, agent__proc_on_quiet_timer, (uint64_t)p->quiet_ms, 0);
    if (!p->background) {
        x->fg = p;
        fg = true;
    }
out:
    if (argv != cmd) agent__argv_free(argv);
    agent__argv_free(cmd);
    agent__argv_free(envp);
    free(bash);
    free(cwd);
    free(codir);
    free(script);
    free(ro_extra);
    return fg;
}

static bool should_run(agent__exec_t *x, const agent__step_t *st)
{
    switch (st->when) {
    case AGENT__WHEN_ALWAYS: return true;
    case AGENT__WHEN_ON_FAIL: return x->failed;
    case AGENT__WHEN_ON_SUCCESS: return !x->failed;
    }
    return false;
}

void agent__exec_end_job(agent__exec_t *x)
{
    if (x->ended) return;
    x->ended = true;
    for (agent__proc_t *p = x->procs; p; p = p->next) kill_proc(p, AGENT__KILL_JOB_END);
    if (x->procs == NULL) job_done(x);
}

/* Runs steps until one runs in the foreground, then returns; the end of
 * that step calls it again. */
void agent__exec_advance(agent__exec_t *x)
{
    const agent__task_t *task = x->task;
    while (x->stop == AGENT__STOP_NONE && !x->job_timer_fired && x->next < task->nsteps) {
        const agent__step_t *st = &task->steps[x->next++];
        if (!should_run(x, st)) continue;
        if (strcmp(st->type, "run") == 0 || strcmp(st->type, "checkout") == 0) {
            if (start_step(x, st)) return;
            continue;
        }
        char why[256];
        snprintf(why, sizeof why, "Unsupported step type \"%s\": this agent cannot run it", st->type);
        fail_step(x, st, NULL, why);
    }
    agent__exec_end_job(x);
}

void agent__exec_finish_job(agent__exec_t *x)
{
    if (x->finished) return;
    x->finished = true;
    if (x->job_t_on) {
        uv_timer_stop(&x->job_t);
        x->job_t_on = false;
    }
    char d[32];
    if (x->stop == AGENT__STOP_LOST) {
        x->status = AGENT__LOST;
        snprintf(x->message, sizeof x->message, "the lease was lost");
    } else if (x->stop == AGENT__STOP_SHUTDOWN) {
        x->status = AGENT__INFRA_FAIL;
        snprintf(x->message, sizeof x->message, "the agent stopped before the job finished");
    } else if (x->stop == AGENT__STOP_CANCEL) {
        x->status = AGENT__CANCELED;
        snprintf(x->message, sizeof x->message, "canceled");
    } else if (x->job_timer_fired) {
        x->status = AGENT__TIMEDOUT;
        agent__fmt_duration(x->task->job_timeout_ms, d, sizeof d);
        snprintf(x->message, sizeof x->message, "the job exceeded its time limit of %s", d);
    } else if (x->infra) {
        x->status = AGENT__INFRA_FAIL;
    } else if (x->timedout) {
        x->status = AGENT__TIMEDOUT;
        snprintf(x->message, sizeof x->message, "a step had no output for longer than its no_output_timeout");
    } else if (x->failed) {
        x->status = AGENT__FAILED;
    } else {
        x->status = AGENT__SUCCESS;
    }
}

static void on_job_timer(uv_timer_t *t)
{
    agent__exec_t *x = t->data;
    x->job_t_on = false;
    x->job_timer_fired = true;
    for (agent__proc_t *p = x->procs; p; p = p->next) kill_proc(p, AGENT__KILL_JOB_TIMEOUT);
    agent__dk_spin_stop(x);
}

static void on_wake(uv_async_t *a)
{
    agent__exec_t *x = a->data;
    agent__stop_t why = (agent__stop_t)atomic_load(&x->stop_req);
    if (why != AGENT__STOP_NONE && x->stop == AGENT__STOP_NONE) {
        x->stop = why;
        for (agent__proc_t *p = x->procs; p; p = p->next) kill_proc(p, AGENT__KILL_STOP);
        agent__dk_spin_stop(x);
    }
    if (atomic_exchange(&x->resume_req, false)) resume_all(x);
}

static void job_done(agent__exec_t *x)
{
    if (!x->docker_on || x->torn_down || x->dk == NULL) {
        agent__exec_finish_job(x);
        return;
    }
    if (x->tearing) return;
    x->tearing = true;
    agent__dk_teardown_next(x);
}

/* ---- setup: steps 0 and 99 ------------------------------------------------ */

static int cmp_env(const void *a, const void *b)
{
    return strcmp(((const agent__env_t *)a)->name, ((const agent__env_t *)b)->name);
}

/* Step 0, "Spin up environment": a fresh task directory and the job's
 * environment. False (and the job is an infrastructure failure) when the
 * agent cannot prepare it. */
static bool spin_up(agent__exec_t *x)
{
    const agent__task_t *task = x->task;
    agent__synth_t s;
    synth_begin(&s, x, 0, "Spin up environment", NULL);
    agent__synth_line(&s, 0, "Spool agent %s%s%s", SP_VERSION, x->o.agent_name ? " on " : "",
                      x->o.agent_name ? x->o.agent_name : "");
    agent__synth_line(&s, 0, "Job %s #%lld, task %s", task->job_name, (long long)task->job_number, task->task_id);
    if (x->docker_on)
        agent__synth_line(&s, 0, "Executor: docker, through the Docker Engine API at %s", x->o.docker_socket);
    if (x->o.bwrap != NULL)
        agent__synth_line(&s, 0,
                          "Sandbox: bubblewrap (%s): read-only /, writable task directory, private /tmp, own PID "
                          "namespace",
                          x->o.bwrap);
    else
        agent__synth_line(&s, 0, "Sandbox: none (--no-sandbox): steps can write anywhere the agent can");
    agent__synth_line(&s, 0, "Creating task directory %s", x->task_dir);
    int rc = agent__rmtree(x->task_dir);
    const char *what = x->task_dir;
    if (rc == 0 && (rc = agent__mkdirs(x->task_dir, 0755)) != 0) what = x->task_dir;
    if (rc == 0 && (rc = agent__mkdirs(x->home, 0755)) != 0) what = x->home;
    if (rc == 0 && (rc = agent__mkdirs(x->tmp, 01777)) != 0) what = x->tmp;
    if (rc == 0 && (rc = agent__mkdirs(x->meta, 0700)) != 0) what = x->meta;
    char err[1024];
    if (rc != 0) {
        snprintf(x->message, sizeof x->message, "cannot create %s: %s", what, sp_strerror(rc));
    } else {
        chmod(x->tmp, 01777);
        char *bash_env = sp_xasprintf("%s/.bash_env", x->tmp);
        FILE *f = fopen(bash_env, "a");
        if (f == NULL || fclose(f) != 0) {
            snprintf(x->message, sizeof x->message, "cannot create %s: %s", bash_env, strerror(errno));
            rc = -errno;
        }
        /* The container's user is rarely the agent's: it must be able to
         * write its home, its BASH_ENV, and read the step scripts. */
        if (rc == 0 && x->docker_on) {
            chmod(x->task_dir, 0755);
            chmod(x->home, 0777);
            chmod(x->meta, 0755);
            chmod(bash_env, 0666);
        }
        free(bash_env);
    }
    /* A container's working directory is made by each step's wrapper. */
    if (rc == 0 && !x->docker_on && (rc = ensure_dir(x, x->wd, err, sizeof err)) != 0)
        snprintf(x->message, sizeof x->message, "working_directory: %s", err);
    if (rc != 0) {
        agent__synth_line(&s, 1, "%s", x->message);
        agent__synth_end(&s, "failed", -1);
        return false;
    }
    agent__synth_line(&s, 0, "Working directory %s", x->wd);
    if (x->docker_on) {
        /* Step 0 goes on while the containers start (agent__dk_spin_begin). */
        x->s0 = sp_xmalloc(sizeof s);
        *x->s0 = s;
        return true;
    }
    agent__synth_end(&s, "success", 0);
    agent__exec_env_step(x);
    return true;
}

/* Step 99 lists what a step will see, names only: values may be secrets
 * (contexts, project variables). */
void agent__exec_env_step(agent__exec_t *x)
{
    agent__synth_t s;
    synth_begin(&s, x, 99, "Preparing environment variables", NULL);
    agent__env_t *sorted = sp_xcalloc(x->nenv + 1, sizeof *sorted);
    memcpy(sorted, x->env, x->nenv * sizeof *sorted);
    qsort(sorted, x->nenv, sizeof *sorted, cmp_env);
    agent__synth_line(&s, 0, "Using environment variables:");
    for (size_t i = 0; i < x->nenv; i++) agent__synth_line(&s, 0, "  %s", sorted[i].name);
    free(sorted);
    agent__synth_end(&s, "success", 0);
}

/* ---- the public face -------------------------------------------------------- */

static bool safe_name(const char *s)
{
    if (*s == 0 || *s == '.' || strlen(s) > 128) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.'))
            return false;
    return true;
}

int agent__exec_new(agent__exec_t **out, const agent__exec_opts_t *o, const agent__task_t *task,
                    const agent__sink_t *sink)
{
    if (o->work_dir == NULL || o->work_dir[0] != '/') return SP_EINVAL;
    agent__exec_t *x = sp_xcalloc(1, sizeof *x);
    int rc = uv_loop_init(&x->loop);
    if (rc != 0) {
        free(x);
        return rc;
    }
    x->o = *o;
    if (x->o.chunk_bytes == 0) x->o.chunk_bytes = AGENT__CHUNK_BYTES;
    if (x->o.flush_ms <= 0) x->o.flush_ms = AGENT__FLUSH_MS;
    x->task = task;
    x->sink = *sink;
    uv_async_init(&x->loop, &x->wake, on_wake);
    x->wake.data = x;
    /* The wake handle must not keep the loop alive: the loop ends when
     * the last process and timer of the task are gone. */
    uv_unref((uv_handle_t *)&x->wake);
    uv_timer_init(&x->loop, &x->job_t);
    x->job_t.data = x;

    /* A task id is a directory name here: anything but a plain name
     * (a server bug, or worse) gets a generated one. */
    char uuid[37];
    const char *leaf = task->task_id;
    if (!safe_name(leaf)) {
        sp_uuid4(uuid);
        leaf = uuid;
    }
    x->task_dir = sp_xasprintf("%s/%s", o->work_dir, leaf);
    x->home = sp_xasprintf("%s/home", x->task_dir);
    x->tmp = sp_xasprintf("%s/tmp", x->task_dir);
    x->meta = sp_xasprintf("%s/.spool", x->task_dir);
    x->docker_on =
        o->docker_socket != NULL && task->executor_type != NULL && strcmp(task->executor_type, "docker") == 0;
    /* In a container the task directory is bound at its own path, and
     * its tmp holds BASH_ENV; /tmp is the container's. */
    x->tmp_inner = sp_xstrdup(o->bwrap && !x->docker_on ? "/tmp" : x->tmp);
    x->host_shell = sp_xstrdup(access("/bin/bash", X_OK) == 0 ? "/bin/bash -eo pipefail" : "/bin/sh -eo pipefail");
    /* For a container, decided when it has started (is there a bash?). */
    x->shell_default = sp_xstrdup(x->docker_on ? "/bin/sh -eo pipefail" : x->host_shell);
    if (x->docker_on && (rc = agent__dk_new(&x->dk, &x->loop, o->docker_socket)) != 0) {
        x->docker_on = false;
        sp_error("agent", "cannot start a Docker API client: %s", sp_strerror(rc));
    }
    x->wd = resolve(x, x->home, task->working_directory);

    /* The job's environment: a base from the agent's own (PATH, locale),
     * the task's (complete: built-ins, contexts, project and job
     * variables), then what only the agent knows. */
    for (size_t i = 0; i < SP_ARRAY_LEN(inherit) && !x->docker_on; i++) {
        const char *v = getenv(inherit[i]);
        if (v != NULL) env_set(&x->env, &x->nenv, &x->capenv, inherit[i], v);
    }
    if (getenv("PATH") == NULL && !x->docker_on)
        env_set(&x->env, &x->nenv, &x->capenv, "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    bool has_bash_env = false;
    for (size_t i = 0; i < task->nenv; i++) {
        env_set(&x->env, &x->nenv, &x->capenv, task->env[i].name, task->env[i].value);
        has_bash_env |= strcmp(task->env[i].name, "BASH_ENV") == 0;
    }
    env_set(&x->env, &x->nenv, &x->capenv, "HOME", x->home);
    /* A container has a /tmp of its own. */
    if (!x->docker_on) env_set(&x->env, &x->nenv, &x->capenv, "TMPDIR", x->tmp_inner);
    env_set(&x->env, &x->nenv, &x->capenv, "CIRCLE_WORKING_DIRECTORY", x->wd);
    if (!has_bash_env) {
        /* As on CircleCI, lines appended to $BASH_ENV are sourced by
         * every later bash step. */
        char *be = sp_xasprintf("%s/.bash_env", x->tmp_inner);
        env_set(&x->env, &x->nenv, &x->capenv, "BASH_ENV", be);
        free(be);
    }
    sp_handle_opened();
    *out = x;
    return 0;
}

agent__status_t agent__exec_run(agent__exec_t *x, const char **message)
{
    if (x->ran) {
        if (message) *message = "already ran";
        return AGENT__INFRA_FAIL;
    }
    x->ran = true;
    if (!spin_up(x)) {
        x->finished = true;
        x->status = AGENT__INFRA_FAIL;
        /* A stop that came meanwhile still decides the status. */
        agent__stop_t why = (agent__stop_t)atomic_load(&x->stop_req);
        if (why == AGENT__STOP_LOST) x->status = AGENT__LOST;
    } else {
        uv_timer_start(&x->job_t, on_job_timer, (uint64_t)x->task->job_timeout_ms, 0);
        x->job_t_on = true;
        /* A stop requested before the loop ran is seen here. */
        agent__stop_t why = (agent__stop_t)atomic_load(&x->stop_req);
        if (why != AGENT__STOP_NONE) x->stop = why;
        if (x->docker_on)
            agent__dk_spin_begin(x); /* then steps 99, 101... once the containers run */
        else
            agent__exec_advance(x);
        uv_run(&x->loop, UV_RUN_DEFAULT);
    }
    if (!x->o.keep_work) agent__rmtree(x->task_dir);
    if (message) *message = x->message[0] ? x->message : NULL;
    return x->status;
}

void agent__exec_stop(agent__exec_t *x, agent__stop_t why)
{
    int none = AGENT__STOP_NONE;
    atomic_compare_exchange_strong(&x->stop_req, &none, (int)why);
    uv_async_send(&x->wake);
}

void agent__exec_resume(agent__exec_t *x)
{
    atomic_store(&x->resume_req, true);
    uv_async_send(&x->wake);
}

const char *agent__exec_task_dir(const agent__exec_t *x) { return x->task_dir; }

void agent__exec_free(agent__exec_t *x)
{
    if (x == NULL) return;
    /* A docker client that never reached its teardown (the task
     * directory could not be made) closes here. */
    agent__dk_free(x->dk);
    x->dk = NULL;
    uv_close((uv_handle_t *)&x->wake, NULL);
    uv_close((uv_handle_t *)&x->job_t, NULL);
    uv_run(&x->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&x->loop);
    if (rc != 0) sp_error("agent", "executor loop still has handles at close: %s", uv_strerror(rc));
    env_free(x->env, x->nenv);
    free(x->task_dir);
    free(x->home);
    free(x->tmp);
    free(x->meta);
    free(x->tmp_inner);
    free(x->shell_default);
    free(x->host_shell);
    free(x->s0);
    for (size_t i = 0; i < x->nctr; i++) free(x->ctr[i]);
    free(x->ctr);
    free(x->wd);
    free(x);
    sp_handle_closed();
}
