/*
 * The docker executor. With a Docker API socket and a task whose executor
 * is docker, steps run in containers, through the Docker Engine API
 * (docker.c), all on the executor's loop; the step machinery (output,
 * timeouts, completion, steps 0 and 99) is exec.c's, as for the shell
 * executor:
 *
 *   spin-up (step 0)  for each image: inspect it (pull it when missing),
 *                     create and start its container. The first is the
 *                     primary: the task directory is bound at its own
 *                     path, and unless the config gives a command or an
 *                     entrypoint it runs an idle shell (steps run beside
 *                     it, as on CircleCI). The others are services,
 *                     created in the primary's network namespace
 *                     (NetworkMode container:<primary>), so they answer on
 *                     localhost; their names resolve to 127.0.0.1 in the
 *                     primary. Then: is there a /bin/bash (the default
 *                     shell) or only /bin/sh?
 *   a run step        an exec in the primary of a small /bin/sh wrapper
 *                     that writes its pid (the exec is a session and group
 *                     leader) to a file in the task's tmp, makes and
 *                     enters the working directory and execs the step's
 *                     shell. Its output is the exec's multiplexed stream
 *                     (8-byte frame headers: stream, size); then the exit
 *                     code comes from /exec/{id}/json.
 *   killing a step    another exec, as root: touch the step's kill file
 *                     (so a wrapper that has not started yet exits) and
 *                     kill -9 its process group. Processes a step leaves
 *                     behind go on, as in a CircleCI container, until the
 *                     job ends.
 *   teardown          every container is removed (force: killed first),
 *                     services first, whatever the outcome; then the job
 *                     finishes.
 *
 * The checkout step runs on the agent's side, into the shared task
 * directory, as with the shell executor. A failure to get an image or
 * start a container fails step 0 and the job as infrastructure_fail.
 */
#include "exec_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <jansson.h>
#include <uv.h>

#define DK_TIMEOUT_MS      30000L              /* one API call (not a stream, not a pull) */
#define DK_PULL_TIMEOUT_MS (30L * 60L * 1000L) /* a pull; the job's own limit still applies */
#define DK_KILL_WAIT_MS    10000               /* after a kill, how long a step's stream may go on */
#define DK_INSPECT_TRIES   200                 /* 10 ms apart: until the exec is seen to have ended */

enum { SPIN_INSPECT, SPIN_PULL, SPIN_CREATE, SPIN_START, SPIN_PROBE };

/* The primary's process when the config names none: an idle shell that
 * reaps what steps leave behind. */
static const char dk_idle[] = "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait; done";

/* $1 pid file, $2 kill file, $3 working directory, then the command. */
static const char dk_wrapper[] = "echo $$ >\"$1\" 2>/dev/null; [ -e \"$2\" ] && exit 137; d=$3; shift 3; "
                                 "mkdir -p \"$d\" 2>/dev/null; cd \"$d\" || exit 1; exec \"$@\"";

/* $1 kill file, $2 pid file. */
static const char dk_killer[] = "touch \"$1\" 2>/dev/null; pg=$(cat \"$2\" 2>/dev/null); "
                                "[ -n \"$pg\" ] && kill -9 -\"$pg\" 2>/dev/null; exit 0";

/* The API's reason for a failed call: its JSON "message", or what hc
 * said, or the status. */
static const char *dk_why(int rc, long status, const sp_buf_t *body, const char *err, char *buf, size_t n)
{
    if (rc != 0) return err && *err ? err : sp_strerror(rc);
    json_t *o = body->n ? json_loadb((const char *)body->p, body->n, 0, NULL) : NULL;
    json_t *m = json_object_get(o, "message");
    if (json_is_string(m))
        snprintf(buf, n, "%s", json_string_value(m));
    else
        snprintf(buf, n, "the Docker API answered %ld", status);
    json_decref(o);
    return buf;
}

static json_t *dk_words(char *const *w)
{
    json_t *a = json_array();
    for (; w && *w; w++) json_array_append_new(a, json_string(*w));
    return a;
}

/* Docker's X-Registry-Auth: base64url of {"username", "password"}. */
static char *dk_auth_header(const agent__image_t *im)
{
    if (im->auth_user == NULL && im->auth_pass == NULL) return NULL;
    json_t *o = json_pack("{s:s, s:s}", "username", im->auth_user ? im->auth_user : "", "password",
                          im->auth_pass ? im->auth_pass : "");
    char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (js == NULL) return NULL;
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(js);
    sp_buf_t b = {0};
    sp_buf_addstr(&b, "X-Registry-Auth: ");
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)js[i] << 16;
        if (i + 1 < n) v |= (uint32_t)(unsigned char)js[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)js[i + 2];
        char q[4] = {tab[v >> 18 & 63], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        sp_buf_add(&b, q, 4);
    }
    sp_buf_add(&b, "", 1);
    free(js);
    return (char *)b.p;
}

/* An image reference goes into URL paths as it is: only the characters
 * of names, tags and digests are allowed. */
static bool dk_image_ok(const char *s)
{
    if (*s == 0 || strlen(s) > 512 || *s == '/' || *s == '-') return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr("._-/:@", *s)))
            return false;
    return true;
}

/* True when the image names a tag or a digest (else a pull takes all
 * tags: :latest is added). */
static bool dk_has_tag(const char *image)
{
    const char *slash = strrchr(image, '/');
    return strchr(image, '@') != NULL || strchr(slash ? slash : image, ':') != NULL;
}

/* A pull answers 200 and then streams progress objects; a failure is an
 * object with "error" (usually the last). */
static bool dk_pull_error(const sp_buf_t *body, char *buf, size_t n)
{
    const char *p = (const char *)body->p, *end = p + body->n;
    bool bad = false;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        json_t *o = json_loadb(p, (size_t)(e - p), 0, NULL);
        json_t *err = json_object_get(o, "error");
        if (json_is_string(err)) {
            snprintf(buf, n, "%s", json_string_value(err));
            bad = true;
        }
        json_decref(o);
        p = e + (nl != NULL);
    }
    return bad;
}

/* ---- helper execs (kill) ---- */

typedef struct {
    agent__exec_t *x;
} dk_helper_t;

static void on_helper_done(void *arg, int rc, long status, const sp_buf_t *body, const char *err) { free(arg); }

static void on_helper_created(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    dk_helper_t *h = arg;
    json_t *o = rc == 0 && status == 201 ? json_loadb((const char *)body->p, body->n, 0, NULL) : NULL;
    json_t *id = json_object_get(o, "Id");
    if (rc == 0 && json_is_string(id) && h->x->dk != NULL && !h->x->torn_down) {
        char *path = sp_xasprintf("/exec/%s/start", json_string_value(id));
        agent__dk_call(h->x->dk, "POST", path, "{\"Detach\":false,\"Tty\":false}", NULL, DK_TIMEOUT_MS, NULL,
                       on_helper_done, h);
        free(path);
        h = NULL;
    } else if (rc != SP_ECLOSED) {
        char why[256];
        sp_warn("agent", "task %s: cannot kill a step in its container: %s", h->x->task->task_id,
                dk_why(rc, status, body, err, why, sizeof why));
    }
    json_decref(o);
    free(h);
}

/* Runs argv in the primary as root, and forgets it. */
static void dk_helper(agent__exec_t *x, json_t *argv)
{
    json_t *b = json_pack("{s:o, s:s, s:b, s:b, s:b}", "Cmd", argv, "User", "0", "AttachStdout", 1, "AttachStderr", 1,
                          "Tty", 0);
    char *js = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    dk_helper_t *h = sp_xcalloc(1, sizeof *h);
    h->x = x;
    char *path = sp_xasprintf("/containers/%s/exec", x->ctr[0]);
    agent__dk_call(x->dk, "POST", path, js, NULL, DK_TIMEOUT_MS, NULL, on_helper_created, h);
    free(path);
    free(js);
}

/* ---- steps in the primary ---- */

static void dk_proc_end(agent__proc_t *p, int64_t code)
{
    p->req = NULL;
    p->exited = true;
    p->exit_status = code;
    p->eof[0] = p->eof[1] = true;
    uv_timer_stop(&p->quiet_t);
    agent__proc_maybe_complete(p);
}

static void on_exec_inspected(void *arg, int rc, long status, const sp_buf_t *body, const char *err);

static void dk_inspect(agent__proc_t *p)
{
    char *path = sp_xasprintf("/exec/%s/json", p->exec_id);
    p->req = agent__dk_call(p->x->dk, "GET", path, NULL, NULL, DK_TIMEOUT_MS, NULL, on_exec_inspected, p);
    free(path);
}

static void on_inspect_timer(uv_timer_t *t) { dk_inspect(t->data); }

static void on_exec_inspected(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    agent__proc_t *p = arg;
    p->req = NULL;
    json_t *o = rc == 0 && status == 200 ? json_loadb((const char *)body->p, body->n, 0, NULL) : NULL;
    json_t *code = json_object_get(o, "ExitCode");
    bool running = json_is_true(json_object_get(o, "Running"));
    json_int_t c = json_is_integer(code) ? json_integer_value(code) : -1;
    json_decref(o);
    if (rc == 0 && running && ++p->inspect_tries < DK_INSPECT_TRIES && rc != SP_ECLOSED) {
        /* The stream can end a moment before the daemon has seen the
         * process exit. */
        uv_timer_start(&p->quiet_t, on_inspect_timer, 10, 0);
        return;
    }
    if (c < 0 && rc != SP_ECLOSED && p->killed == AGENT__KILL_NONE) {
        char why[256];
        agent__proc_note(p, 1, "Cannot get the step's exit code from the container: %s",
                         rc == 0 && status == 200 ? "none reported" : dk_why(rc, status, body, err, why, sizeof why));
    }
    dk_proc_end(p, c);
}

/* The exec's output: frames of an 8-byte header (stream 1 stdout, 2
 * stderr; three zero bytes; a big-endian size) and the payload. */
static bool dk_on_data(void *arg, const char *b, size_t n)
{
    agent__proc_t *p = arg;
    if (p->x->paused) return false;
    while (n > 0) {
        if (p->frame_left == 0) {
            size_t k = 8 - p->hdrn < n ? 8 - p->hdrn : n;
            memcpy(p->hdr + p->hdrn, b, k);
            p->hdrn += k, b += k, n -= k;
            if (p->hdrn < 8) break;
            p->hdrn = 0;
            p->frame_stream = p->hdr[0] == 2 ? 1 : 0;
            p->frame_left = (size_t)p->hdr[4] << 24 | (size_t)p->hdr[5] << 16 | (size_t)p->hdr[6] << 8 | p->hdr[7];
            continue;
        }
        size_t k = p->frame_left < n ? p->frame_left : n;
        agent__proc_feed(p, p->frame_stream, b, k);
        p->frame_left -= k, b += k, n -= k;
    }
    p->last_out = uv_now(&p->x->loop);
    return true;
}

static void on_exec_stream_done(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    agent__proc_t *p = arg;
    p->req = NULL;
    if (rc == 0 && status == 200) {
        uv_timer_stop(&p->quiet_t);
        dk_inspect(p);
        return;
    }
    if (rc != SP_ECLOSED && p->killed == AGENT__KILL_NONE) {
        char why[256];
        agent__proc_note(p, 1, "Cannot run the step in the container: %s",
                         dk_why(rc, status, body, err, why, sizeof why));
    }
    dk_proc_end(p, -1);
}

static void on_exec_created(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    agent__proc_t *p = arg;
    p->req = NULL;
    json_t *o = rc == 0 && status == 201 ? json_loadb((const char *)body->p, body->n, 0, NULL) : NULL;
    json_t *id = json_object_get(o, "Id");
    if (json_is_string(id)) p->exec_id = sp_xstrdup(json_string_value(id));
    json_decref(o);
    if (p->exec_id == NULL || p->killed != AGENT__KILL_NONE) {
        /* Killed before it started: nothing ran. */
        if (p->exec_id == NULL && rc != SP_ECLOSED && p->killed == AGENT__KILL_NONE) {
            char why[256];
            agent__proc_note(p, 1, "Cannot run the step in the container: %s",
                             dk_why(rc, status, body, err, why, sizeof why));
        }
        dk_proc_end(p, -1);
        return;
    }
    char *path = sp_xasprintf("/exec/%s/start", p->exec_id);
    /* No time limit: no_output_timeout and the job's limit bound it. */
    p->req = agent__dk_call(p->x->dk, "POST", path, "{\"Detach\":false,\"Tty\":false}", NULL, 0, dk_on_data,
                            on_exec_stream_done, p);
    free(path);
}

static void on_kill_wait(uv_timer_t *t)
{
    agent__proc_t *p = t->data;
    /* The kill did not end the stream (a daemon in trouble): stop
     * waiting for it; the teardown removes the container. */
    if (p->req != NULL) hc_cancel(p->req);
}

void agent__dk_kill_step(agent__proc_t *p)
{
    agent__exec_t *x = p->x;
    if (p->dk_kill_sent || p->exec_id == NULL) return; /* no exec yet: on_exec_created sees p->killed */
    p->dk_kill_sent = true;
    json_t *argv = json_pack("[s, s, s, s, s, s]", "/bin/sh", "-c", dk_killer, "spool-kill", p->killf, p->pidf);
    dk_helper(x, argv);
    uv_timer_start(&p->quiet_t, on_kill_wait, DK_KILL_WAIT_MS, 0);
}

bool agent__dk_start_step(agent__exec_t *x, const agent__step_t *st, char **cmd, char **envp, const char *cwd,
                          const char *bash)
{
    agent__proc_t *p = sp_xcalloc(1, sizeof *p);
    p->x = x;
    p->st = st;
    p->id = st->id;
    p->background = st->background;
    p->docker = true;
    p->quiet_ms = st->no_output_timeout_ms;
    agent__chunk_init(&p->chunk);
    sp_buf_reserve(&p->chunk.buf, x->o.chunk_bytes + 1024);
    uv_timer_init(&x->loop, &p->flush_t);
    uv_timer_init(&x->loop, &p->quiet_t);
    p->flush_t.data = p->quiet_t.data = p;
    p->nopen = 2;
    p->pidf = sp_xasprintf("%s/.spool-step-%d.pid", x->tmp, st->id);
    p->killf = sp_xasprintf("%s/.spool-step-%d.kill", x->tmp, st->id);
    unlink(p->pidf);
    unlink(p->killf);

    json_t *argv =
        json_pack("[s, s, s, s, s, s, s]", "/bin/sh", "-c", dk_wrapper, "spool-step", p->pidf, p->killf, cwd);
    for (char **c = cmd; *c; c++) json_array_append_new(argv, json_string(*c));
    json_t *env = json_array();
    for (char **e = envp; *e; e++) {
        json_t *v = json_string(*e);
        if (v != NULL) json_array_append_new(env, v); /* not UTF-8: left out */
    }
    json_t *b = json_pack("{s:o, s:o, s:b, s:b, s:b, s:b}", "Cmd", argv, "Env", env, "AttachStdin", 0, "AttachStdout",
                          1, "AttachStderr", 1, "Tty", 0);
    char *js = json_dumps(b, JSON_COMPACT);
    json_decref(b);

    x->sink.step_started(x->sink.arg, st->id, x->task->node_index, st->name, bash, agent__wall_ms());
    uv_update_time(&x->loop);
    p->t0 = p->last_out = uv_now(&x->loop);
    p->spawned = true;
    p->next = x->procs;
    x->procs = p;
    if (p->quiet_ms > 0) uv_timer_start(&p->quiet_t, agent__proc_on_quiet_timer, (uint64_t)p->quiet_ms, 0);
    char *path = sp_xasprintf("/containers/%s/exec", x->ctr[0]);
    p->req = agent__dk_call(x->dk, "POST", path, js, NULL, DK_TIMEOUT_MS, NULL, on_exec_created, p);
    free(path);
    free(js);
    if (p->background) return false;
    x->fg = p;
    return true;
}

/* ---- spin-up and teardown ---- */

static void dk_spin_next(agent__exec_t *x);

static void dk_spin_close(agent__exec_t *x, const char *status)
{
    agent__synth_end(x->s0, status, status[0] == 's' ? 0 : -1);
    free(x->s0);
    x->s0 = NULL;
}

static void dk_spin_fail(agent__exec_t *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dk_spin_fail(agent__exec_t *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->message, sizeof x->message, fmt, ap);
    va_end(ap);
    agent__synth_line(x->s0, 1, "%s", x->message);
    dk_spin_close(x, "failed");
    x->infra = x->failed = true;
    agent__exec_end_job(x);
}

static void on_spin_done(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    agent__exec_t *x = arg;
    x->spin_req = NULL;
    if (x->stop != AGENT__STOP_NONE || x->job_timer_fired) {
        char d[32];
        agent__fmt_duration(x->task->job_timeout_ms, d, sizeof d);
        if (x->job_timer_fired)
            agent__synth_line(x->s0, 1, "Build timed out (exceeded %s)", d);
        else
            agent__synth_line(
                x->s0, 1, x->stop == AGENT__STOP_SHUTDOWN ? "The agent stopped before this step finished" : "Canceled");
        dk_spin_close(x, x->job_timer_fired ? "timedout" : "canceled");
        agent__exec_end_job(x);
        return;
    }
    const agent__image_t *im = &x->task->images[x->spin_i];
    char why[512];
    switch (x->spin_phase) {
    case SPIN_INSPECT:
        if (rc == 0 && status == 200) {
            x->spin_phase = SPIN_CREATE;
        } else if (rc == 0 && status == 404) {
            agent__synth_line(x->s0, 0, "Pulling image %s", im->image);
            x->spin_phase = SPIN_PULL;
        } else {
            dk_spin_fail(x, "Cannot inspect image %s: %s", im->image, dk_why(rc, status, body, err, why, sizeof why));
            return;
        }
        break;
    case SPIN_PULL:
        if (rc == 0 && status == 200 && !dk_pull_error(body, why, sizeof why)) {
            x->spin_phase = SPIN_CREATE;
        } else {
            if (rc != 0 || status != 200) dk_why(rc, status, body, err, why, sizeof why);
            dk_spin_fail(x, "Cannot find or pull image %s: %s", im->image, why);
            return;
        }
        break;
    case SPIN_CREATE: {
        json_t *o = rc == 0 && status == 201 ? json_loadb((const char *)body->p, body->n, 0, NULL) : NULL;
        json_t *id = json_object_get(o, "Id");
        bool made = json_is_string(id);
        if (made) x->ctr[x->nctr++] = sp_xstrdup(json_string_value(id));
        json_decref(o);
        if (!made) {
            dk_spin_fail(x, "Cannot create a container from image %s: %s", im->image,
                         dk_why(rc, status, body, err, why, sizeof why));
            return;
        }
        x->spin_phase = SPIN_START;
        break;
    }
    case SPIN_START:
        if (rc != 0 || (status != 204 && status != 304)) {
            dk_spin_fail(x, "Cannot start the container of image %s: %s", im->image,
                         dk_why(rc, status, body, err, why, sizeof why));
            return;
        }
        if (x->spin_i == 0)
            agent__synth_line(x->s0, 0, "Started the primary container %.12s (%s)", x->ctr[0], im->image);
        else
            agent__synth_line(x->s0, 0, "Started service container %.12s (%s%s%s) on localhost", x->ctr[x->spin_i],
                              im->image, im->name ? ", " : "", im->name ? im->name : "");
        x->spin_i++;
        x->spin_phase = x->spin_i < x->task->nimages ? SPIN_INSPECT : SPIN_PROBE;
        break;
    case SPIN_PROBE:
        x->bash_in_image = rc == 0 && status == 200;
        free(x->shell_default);
        x->shell_default = sp_xstrdup(x->bash_in_image ? "/bin/bash -eo pipefail" : "/bin/sh -eo pipefail");
        agent__synth_line(x->s0, 0, "Default shell: %s", x->shell_default);
        dk_spin_close(x, "success");
        agent__exec_env_step(x);
        agent__exec_advance(x);
        return;
    }
    dk_spin_next(x);
}

static char *dk_create_body(agent__exec_t *x, size_t i)
{
    const agent__task_t *task = x->task;
    const agent__image_t *im = &task->images[i];
    json_t *b = json_object(), *hc = json_object();
    json_object_set_new(b, "Image", json_string(im->image));
    json_t *env = json_array();
    for (size_t k = 0; k < im->nenv; k++) {
        char *kv = sp_xasprintf("%s=%s", im->env[k].name, im->env[k].value);
        json_t *v = json_string(kv);
        if (v) json_array_append_new(env, v);
        free(kv);
    }
    json_object_set_new(b, "Env", env);
    if (i == 0 && im->entrypoint == NULL && im->command == NULL) {
        /* CircleCI ignores the primary image's entrypoint and command
         * unless the config gives one: steps are what runs there. */
        json_object_set_new(b, "Entrypoint", json_pack("[s]", "/bin/sh"));
        json_object_set_new(b, "Cmd", json_pack("[s, s]", "-c", dk_idle));
    } else {
        if (im->entrypoint) json_object_set_new(b, "Entrypoint", dk_words(im->entrypoint));
        if (im->command) json_object_set_new(b, "Cmd", dk_words(im->command));
    }
    if (im->user) json_object_set_new(b, "User", json_string(im->user));
    json_object_set_new(b, "Labels",
                        json_pack("{s:s, s:s}", "spool.task", task->task_id, "spool.work_dir", x->o.work_dir));
    json_object_set_new(hc, "AutoRemove", json_false());
    if (i == 0) {
        char *bind = sp_xasprintf("%s:%s", x->task_dir, x->task_dir);
        json_object_set_new(hc, "Binds", json_pack("[s]", bind));
        free(bind);
        json_t *hosts = json_array();
        for (size_t k = 1; k < task->nimages; k++) {
            if (task->images[k].name == NULL) continue;
            char *h = sp_xasprintf("%s:127.0.0.1", task->images[k].name);
            json_t *v = json_string(h);
            if (v) json_array_append_new(hosts, v);
            free(h);
        }
        json_object_set_new(hc, "ExtraHosts", hosts);
    } else {
        char *nm = sp_xasprintf("container:%s", x->ctr[0]);
        json_object_set_new(hc, "NetworkMode", json_string(nm));
        free(nm);
    }
    json_object_set_new(b, "HostConfig", hc);
    char *js = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return js;
}

static void dk_spin_next(agent__exec_t *x)
{
    const agent__image_t *im = &x->task->images[x->spin_i];
    char *path = NULL, *body = NULL, *hdr = NULL, *esc = NULL;
    const char *method = "GET";
    long timeout = DK_TIMEOUT_MS;
    switch (x->spin_phase) {
    case SPIN_INSPECT:
        if (!dk_image_ok(im->image)) {
            dk_spin_fail(x, "Invalid image name \"%s\"", im->image);
            return;
        }
        path = sp_xasprintf("/images/%s/json", im->image);
        break;
    case SPIN_PULL:
        esc = hc_escape(im->image);
        path = sp_xasprintf("/images/create?fromImage=%s%s", esc, dk_has_tag(im->image) ? "" : "&tag=latest");
        method = "POST";
        hdr = dk_auth_header(im);
        timeout = DK_PULL_TIMEOUT_MS;
        break;
    case SPIN_CREATE:
        path = sp_xstrdup("/containers/create");
        body = dk_create_body(x, x->spin_i);
        method = "POST";
        break;
    case SPIN_START:
        path = sp_xasprintf("/containers/%s/start", x->ctr[x->spin_i]);
        method = "POST";
        break;
    case SPIN_PROBE:
        path = sp_xasprintf("/containers/%s/archive?path=/bin/bash", x->ctr[0]);
        method = "HEAD";
        break;
    }
    x->spin_req = agent__dk_call(x->dk, method, path, body, hdr, timeout, NULL, on_spin_done, x);
    free(path);
    free(body);
    free(hdr);
    free(esc);
}

void agent__dk_spin_begin(agent__exec_t *x)
{
    if (x->dk == NULL || x->task->nimages == 0) {
        /* dk_spin_fail wants a client for the teardown; none is needed
         * when nothing was created. */
        snprintf(x->message, sizeof x->message, "%s",
                 x->dk == NULL ? "cannot start a Docker API client" : "the task's docker executor names no image");
        agent__synth_line(x->s0, 1, "%s", x->message);
        dk_spin_close(x, "failed");
        x->infra = x->failed = true;
        agent__exec_end_job(x);
        return;
    }
    x->ctr = sp_xcalloc(x->task->nimages, sizeof *x->ctr);
    for (size_t i = 0; i < x->task->nimages; i++)
        agent__synth_line(x->s0, 0, "%s image: %s%s%s", i == 0 ? "Primary" : "Service", x->task->images[i].image,
                          x->task->images[i].name ? " as " : "",
                          x->task->images[i].name ? x->task->images[i].name : "");
    x->spin_phase = SPIN_INSPECT;
    dk_spin_next(x);
}

void agent__dk_spin_stop(agent__exec_t *x)
{
    if (x->spin_req != NULL) hc_cancel(x->spin_req); /* on_spin_done sees why */
}

static void on_removed(void *arg, int rc, long status, const sp_buf_t *body, const char *err)
{
    agent__exec_t *x = arg;
    char *id = x->ctr[--x->nctr];
    if (rc != 0 || (status != 204 && status != 200 && status != 404)) {
        char why[256];
        sp_warn("agent", "task %s: cannot remove container %.12s: %s", x->task->task_id, id,
                dk_why(rc, status, body, err, why, sizeof why));
    }
    free(id);
    agent__dk_teardown_next(x);
}

void agent__dk_teardown_next(agent__exec_t *x)
{
    if (x->nctr == 0) {
        x->torn_down = true;
        agent__dk_free(x->dk);
        x->dk = NULL;
        agent__exec_finish_job(x);
        return;
    }
    /* Services first: they live in the primary's network namespace. */
    char *path = sp_xasprintf("/containers/%s?force=true&v=true", x->ctr[x->nctr - 1]);
    agent__dk_call(x->dk, "DELETE", path, NULL, NULL, DK_TIMEOUT_MS, NULL, on_removed, x);
    free(path);
}
