#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <zstd.h>

void ta_cap_init(ta_cap_t *c)
{
    memset(c, 0, sizeof *c);
    c->cctx = ZSTD_createCCtx();
}

void ta_cap_free(ta_cap_t *c)
{
    for (size_t i = 0; i < c->nlines; i++) free(c->lines[i].text);
    free(c->lines);
    for (size_t i = 0; i < SP_ARRAY_LEN(c->bash); i++) free(c->bash[i]);
    sp_buf_free(&c->events);
    ZSTD_freeCCtx(c->cctx);
    memset(c, 0, sizeof *c);
}

static void cap_started(void *arg, int step, int index, const char *name, const char *bash, int64_t at_ms)
{
    ta_cap_t *c = arg;
    sp_buf_printf(&c->events, "start %d %s\n", step, name);
    free(c->bash[step & 255]);
    c->bash[step & 255] = bash ? sp_xstrdup(bash) : NULL;
    if (c->on_started) c->on_started(c->hook_arg, step);
}

static void cap_finished(void *arg, int step, int index, const char *status, int code, int64_t at_ms)
{
    ta_cap_t *c = arg;
    sp_buf_printf(&c->events, "finish %d %s %d\n", step, status, code);
}

typedef struct {
    ta_cap_t *c;
    int step;
} dec_t;

static int on_line(void *arg, uint64_t t_ms, int stream, const char *text, size_t n)
{
    dec_t *d = arg;
    ta_cap_t *c = d->c;
    if (c->nlines == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 256;
        c->lines = sp_xrealloc(c->lines, c->cap * sizeof *c->lines);
    }
    c->lines[c->nlines++] = (ta_line_t){d->step, stream, t_ms, sp_xstrndup(text, n), n};
    return 0;
}

static bool cap_output(void *arg, int step, int index, uint32_t seq, sp_buf_t *chunk)
{
    ta_cap_t *c = arg;
    if (seq != c->next_seq[step & 1023]) c->bad_seq++;
    c->next_seq[step & 1023] = seq + 1;
    c->chunks++;
    sp_buf_t z = {0};
    dec_t d = {c, step};
    if (agent__zstd_compress(c->cctx, 3, chunk->p, chunk->n, &z) != 0 ||
        agent__chunk_decode(z.p, z.n, on_line, &d) != 0)
        c->bad_chunk++;
    sp_buf_free(&z);
    sp_buf_free(chunk);
    return c->on_chunk ? c->on_chunk(c->hook_arg, step) : false;
}

agent__sink_t ta_cap_sink(ta_cap_t *c)
{
    return (agent__sink_t){.arg = c, .step_started = cap_started, .output = cap_output, .step_finished = cap_finished};
}

char *ta_output(const ta_cap_t *c, int step, int stream)
{
    sp_buf_t b = {0};
    bool first = true;
    for (size_t i = 0; i < c->nlines; i++) {
        const ta_line_t *l = &c->lines[i];
        if (l->step != step || (stream >= 0 && l->stream != stream)) continue;
        if (!first) sp_buf_add(&b, "\n", 1);
        sp_buf_add(&b, l->text, l->n);
        first = false;
    }
    sp_buf_add(&b, "", 1);
    return (char *)b.p;
}

size_t ta_count(const ta_cap_t *c, int step)
{
    size_t n = 0;
    for (size_t i = 0; i < c->nlines; i++) n += c->lines[i].step == step;
    return n;
}

const char *ta_bwrap(void)
{
    static char *path;
    static bool probed;
    if (!probed) {
        char err[512];
        probed = true;
        if (agent__sandbox_probe(&path, err, sizeof err) != 0) path = NULL;
    }
    return path;
}

int ta_run(t_ctx_t *t, const char *json, bool sandbox, bool keep_work, ta_cap_t *c, agent__status_t *status, char *msg,
           size_t msglen)
{
    char err[512];
    agent__task_t *task;
    int rc = agent__task_parse(json, strlen(json), &task, err, sizeof err);
    if (rc != 0) {
        if (msg) snprintf(msg, msglen, "%s", err);
        return rc;
    }
    agent__exec_opts_t o = {.work_dir = t_path(t, "work"),
                            .bwrap = sandbox ? ta_bwrap() : NULL,
                            .agent_name = "test",
                            .keep_work = keep_work};
    agent__sink_t sink = ta_cap_sink(c);
    agent__exec_t *x;
    if ((rc = agent__exec_new(&x, &o, task, &sink)) != 0) {
        agent__task_free(task);
        return rc;
    }
    c->x = x;
    const char *m = NULL;
    *status = agent__exec_run(x, &m);
    if (msg) snprintf(msg, msglen, "%s", m ? m : "");
    c->x = NULL;
    agent__exec_free(x);
    agent__task_free(task);
    return 0;
}

char *ta_task(const char *env, const char *extra, const char *steps)
{
    return sp_xasprintf("{\"task_id\":\"task-1\",\"lease\":\"lease-1\",\"job_id\":\"j\",\"job_number\":7,"
                        "\"job_name\":\"build\",\"environment\":%s,%s%s\"steps\":[%s]}",
                        env ? env : "{\"CI\":\"true\"}", extra ? extra : "", extra ? "," : "", steps);
}

char *ta_step(int id, const char *command, const char *extra)
{
    sp_buf_t b = {0};
    sp_buf_printf(&b, "{\"id\":%d,\"type\":\"run\",\"command\":", id);
    sp_buf_add_json_str(&b, command, strlen(command));
    if (extra) sp_buf_printf(&b, ",%s", extra);
    if (extra == NULL || strstr(extra, "\"name\"") == NULL) sp_buf_printf(&b, ",\"name\":\"step %d\"", id);
    sp_buf_add(&b, "}", 2);
    return (char *)b.p;
}

bool ta_alive(const char *marker)
{
    DIR *d = opendir("/proc");
    if (d == NULL) return false;
    struct dirent *e;
    bool found = false;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300], buf[4096];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue; /* zombies and kernel threads have none */
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == 0) buf[i] = ' ';
        buf[n] = 0;
        found = strstr(buf, marker) != NULL;
    }
    closedir(d);
    return found;
}

const char *ta_marker(void)
{
    static char m[64];
    snprintf(m, sizeof m, "1000.%d%d", (int)getpid(), (int)(sp_mono_ns() % 1000));
    return m;
}
