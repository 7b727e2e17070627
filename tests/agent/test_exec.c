/* The executor for real: bash steps in a real bubblewrap sandbox inside
 * the test's directory, real git, real process trees. Each wait is
 * bounded by the executor's own timeouts (no_output_timeout, the job
 * limit) or by `timeout` in the step. */
#include "helpers.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define NEED_SANDBOX()                                                                                                 \
    do {                                                                                                               \
        if (ta_bwrap() == NULL) {                                                                                      \
            t_fail(t, __FILE__, __LINE__, "bubblewrap cannot build a sandbox on this machine");                        \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

static bool has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* Runs steps (JSON) with the default environment; the result in st. */
#define RUN_STEPS(steps, extra, sandbox, cap, st)                                                                      \
    do {                                                                                                               \
        char *json_ = ta_task(NULL, extra, steps);                                                                     \
        int rc_ = ta_run(t, json_, sandbox, false, cap, st, NULL, 0);                                                  \
        free(json_);                                                                                                   \
        T_OK(rc_);                                                                                                     \
    } while (0)

TEST(agent_exec_output_lines_streams_and_events)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101, "echo out1; echo err1 >&2; echo out2; printf 'last without newline'", NULL);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    RUN_STEPS(s1, NULL, true, &c, &st);
    free(s1);
    T_EQ_U64(st, AGENT__SUCCESS);
    T_EQ_U64(c.bad_seq, 0);
    T_EQ_U64(c.bad_chunk, 0);
    T_EQ_STR((char *)c.events.p, "start 0 Spin up environment\nfinish 0 success 0\n"
                                 "start 99 Preparing environment variables\nfinish 99 success 0\n"
                                 "start 101 step 101\nfinish 101 success 0\n");
    char *out = ta_output(&c, 101, 0), *err = ta_output(&c, 101, 1);
    T_EQ_STR(out, "out1\nout2\nlast without newline");
    T_EQ_STR(err, "err1");
    free(out);
    free(err);
    T_EQ_STR(c.bash[101], "#!/bin/bash -eo pipefail\necho out1; echo err1 >&2; echo out2; printf 'last without "
                          "newline'");
    T_ASSERT(c.bash[0] == NULL);
    char *spin = ta_output(&c, 0, -1);
    T_ASSERT(has(spin, "Sandbox: bubblewrap"));
    free(spin);
    ta_cap_free(&c);
}

TEST(agent_exec_time_offsets)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101, "echo a; sleep 0.3; echo b >&2; sleep 0.3; echo c", NULL);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    RUN_STEPS(s1, NULL, true, &c, &st);
    free(s1);
    T_EQ_U64(st, AGENT__SUCCESS);
    T_EQ_U64(ta_count(&c, 101), 3);
    uint64_t ta = 0, tb = 0, tc = 0;
    for (size_t i = 0; i < c.nlines; i++) {
        if (c.lines[i].step != 101) continue;
        if (strcmp(c.lines[i].text, "a") == 0) ta = c.lines[i].t_ms;
        if (strcmp(c.lines[i].text, "b") == 0) {
            tb = c.lines[i].t_ms;
            T_EQ_U64(c.lines[i].stream, 1);
        }
        if (strcmp(c.lines[i].text, "c") == 0) tc = c.lines[i].t_ms;
    }
    T_ASSERT(tb >= ta + 250 && tc >= tb + 250);
    T_ASSERT(tc < 10000);
    /* Three lines 300 ms apart cannot share a chunk flushed every 100 ms. */
    T_ASSERT(c.chunks >= 3);
    ta_cap_free(&c);
}

TEST(agent_exec_exit_code_and_when)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101, "echo before; exit 3", NULL);
    char *s2 = ta_step(102, "echo never", NULL);
    char *s3 = ta_step(103, "echo on-fail", "\"when\":\"on_fail\"");
    char *s4 = ta_step(104, "echo always", "\"when\":\"always\"");
    char *steps = sp_xasprintf("%s,%s,%s,%s", s1, s2, s3, s4);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    RUN_STEPS(steps, NULL, true, &c, &st);
    T_EQ_U64(st, AGENT__FAILED);
    T_ASSERT(has((char *)c.events.p, "finish 101 failed 3\n"));
    T_ASSERT(!has((char *)c.events.p, "start 102"));
    T_ASSERT(has((char *)c.events.p, "finish 103 success 0\n"));
    T_ASSERT(has((char *)c.events.p, "finish 104 success 0\n"));
    char *err = ta_output(&c, 101, 1);
    T_EQ_STR(err, "Exited with code exit status 3");
    free(err);
    ta_cap_free(&c);
    free(steps);

    /* A job that succeeds skips its on_fail steps. */
    steps = sp_xasprintf("%s,%s", s2, s3);
    ta_cap_init(&c);
    RUN_STEPS(steps, NULL, true, &c, &st);
    T_EQ_U64(st, AGENT__SUCCESS);
    T_ASSERT(has((char *)c.events.p, "finish 102 success 0\n"));
    T_ASSERT(!has((char *)c.events.p, "start 103"));
    ta_cap_free(&c);
    free(steps);
    free(s1), free(s2), free(s3), free(s4);
}

TEST(agent_exec_background_step_runs_beside_and_dies_at_job_end)
{
    NEED_SANDBOX();
    const char *m = ta_marker();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "echo bg-start; touch ~/ready; exec sleep %s", m);
    char *s1 = ta_step(101, cmd, "\"background\":true,\"name\":\"server\"");
    char *s2 = ta_step(102, "timeout 20 bash -c 'until [ -e ~/ready ]; do sleep 0.01; done'; echo fg", NULL);
    char *steps = sp_xasprintf("%s,%s", s1, s2);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    RUN_STEPS(steps, NULL, true, &c, &st);
    T_EQ_U64(st, AGENT__SUCCESS);
    T_ASSERT(has((char *)c.events.p, "start 101 server\nstart 102 step 102\nfinish 102 success 0\n"));
    T_ASSERT(has((char *)c.events.p, "finish 101 success -1\n"));
    char *bg = ta_output(&c, 101, 0);
    T_EQ_STR(bg, "bg-start");
    free(bg);
    T_ASSERT(!ta_alive(m));
    ta_cap_free(&c);
    free(steps), free(s1), free(s2);
}

/* A step that starts a grandchild and then goes quiet; the executor must
 * kill the whole tree. */
static void no_output_timeout_case(t_ctx_t *t, bool sandbox)
{
    const char *m = ta_marker();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "sleep %s & echo started; wait", m);
    char *s1 = ta_step(101, cmd, "\"no_output_timeout_s\":0.5");
    char *s2 = ta_step(102, "echo cleanup", "\"when\":\"always\"");
    char *steps = sp_xasprintf("%s,%s", s1, s2);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    RUN_STEPS(steps, NULL, sandbox, &c, &st);
    T_EQ_U64(st, AGENT__TIMEDOUT);
    T_ASSERT(has((char *)c.events.p, "finish 101 timedout -1\n"));
    T_ASSERT(has((char *)c.events.p, "finish 102 success 0\n"));
    char *out = ta_output(&c, 101, -1);
    T_ASSERT(has(out, "started\nToo long with no output (exceeded 500ms)"));
    free(out);
    T_ASSERT(!ta_alive(m));
    ta_cap_free(&c);
    free(steps), free(s1), free(s2);
}

TEST(agent_exec_no_output_timeout_kills_tree_sandbox)
{
    NEED_SANDBOX();
    no_output_timeout_case(t, true);
}

TEST(agent_exec_no_output_timeout_kills_tree_no_sandbox) { no_output_timeout_case(t, false); }

TEST(agent_exec_job_timeout_kills_everything)
{
    NEED_SANDBOX();
    const char *m = ta_marker();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "sleep %s & sleep %s; echo never", m, m);
    char *s1 = ta_step(101, "echo first", NULL);
    char *s2 = ta_step(102, cmd, NULL);
    char *s3 = ta_step(103, "echo after", "\"when\":\"always\"");
    char *steps = sp_xasprintf("%s,%s,%s", s1, s2, s3);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    char *json = ta_task(NULL, "\"limits\":{\"job_timeout_s\":1}", steps);
    char msg[256];
    T_OK(ta_run(t, json, true, false, &c, &st, msg, sizeof msg));
    free(json);
    T_EQ_U64(st, AGENT__TIMEDOUT);
    T_ASSERT(has(msg, "time limit of 1s"));
    T_ASSERT(has((char *)c.events.p, "finish 101 success 0\n"));
    T_ASSERT(has((char *)c.events.p, "finish 102 timedout -1\n"));
    T_ASSERT(!has((char *)c.events.p, "start 103")); /* nothing runs after the job limit */
    T_ASSERT(!ta_alive(m));
    ta_cap_free(&c);
    free(steps), free(s1), free(s2), free(s3);
}

TEST(agent_exec_sandbox_confines_writes)
{
    NEED_SANDBOX();
    char outside[256];
    snprintf(outside, sizeof outside, "/var/tmp/spool-sandbox-escape-%d", (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "touch ~/in-home && echo home-ok; touch /tmp/in-tmp && echo tmp-ok; "
             "touch %s 2>/dev/null && echo ESCAPED || echo outside-refused; "
             "touch /etc/spool-escape 2>/dev/null && echo ESCAPED || echo etc-refused; "
             "touch %s/outside-task 2>/dev/null; echo done",
             outside, t->dir);
    char *s1 = ta_step(101, cmd, NULL);
    char *json = ta_task(NULL, NULL, s1);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(ta_run(t, json, true, true, &c, &st, NULL, 0));
    free(json), free(s1);
    T_EQ_U64(st, AGENT__SUCCESS);
    char *out = ta_output(&c, 101, 0);
    T_EQ_STR(out, "home-ok\ntmp-ok\noutside-refused\netc-refused\ndone");
    free(out);
    T_ASSERT(access(outside, F_OK) != 0);
    T_ASSERT(access("/etc/spool-escape", F_OK) != 0);
    /* The test's directory is under /tmp: the step saw its private /tmp
     * there, never the real one. */
    T_ASSERT(access(t_path(t, "outside-task"), F_OK) != 0);
    /* The sandbox's /tmp is the task's own tmp directory. */
    T_ASSERT(access(t_path(t, "work/task-1/tmp/in-tmp"), F_OK) == 0);
    T_ASSERT(access(t_path(t, "work/task-1/home/in-home"), F_OK) == 0);
    ta_cap_free(&c);
}

TEST(agent_exec_work_dir_removed_unless_kept)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101, "echo x > ~/file; mkdir -p ~/ro/sub; touch ~/ro/sub/f; chmod -R a-w ~/ro", NULL);
    char *json = ta_task(NULL, NULL, s1);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(ta_run(t, json, true, false, &c, &st, NULL, 0));
    T_EQ_U64(st, AGENT__SUCCESS);
    T_ASSERT(access(t_path(t, "work/task-1"), F_OK) != 0);
    T_ASSERT(access(t_path(t, "work"), F_OK) == 0);
    ta_cap_free(&c);
    free(json), free(s1);
}

TEST(agent_exec_environment_and_working_directory)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101,
                       "echo \"FOO=$FOO CI=$CI\"; echo \"WD=$CIRCLE_WORKING_DIRECTORY\"; echo \"PWD=$(pwd)\"; "
                       "echo \"HOME=$HOME\"; echo 'export FROM_BASH_ENV=yes' >> \"$BASH_ENV\"",
                       "\"environment\":{\"FOO\":\"from-step\"}");
    char *s2 = ta_step(102, "echo \"FOO=$FOO BE=$FROM_BASH_ENV\"; pwd", "\"working_directory\":\"sub/dir\"");
    char *s3 = ta_step(103, "pwd", "\"working_directory\":\"~/elsewhere\"");
    char *steps = sp_xasprintf("%s,%s,%s", s1, s2, s3);
    char *json = ta_task("{\"CI\":\"true\",\"FOO\":\"from-job\",\"SECRET_TOKEN\":\"s3cr3t-value\"}", NULL, steps);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(ta_run(t, json, true, false, &c, &st, NULL, 0));
    T_EQ_U64(st, AGENT__SUCCESS);
    char home[4200], want[9000];
    snprintf(home, sizeof home, "%s/work/task-1/home", t->dir);
    char *o1 = ta_output(&c, 101, 0);
    snprintf(want, sizeof want, "FOO=from-step CI=true\nWD=%s/project\nPWD=%s/project\nHOME=%s", home, home, home);
    T_EQ_STR(o1, want);
    char *o2 = ta_output(&c, 102, 0);
    snprintf(want, sizeof want, "FOO=from-job BE=yes\n%s/project/sub/dir", home);
    T_EQ_STR(o2, want);
    char *o3 = ta_output(&c, 103, 0);
    snprintf(want, sizeof want, "%s/elsewhere", home);
    T_EQ_STR(o3, want);
    /* Step 99 names the variables and never shows a value. */
    char *o99 = ta_output(&c, 99, -1);
    T_ASSERT(has(o99, "  SECRET_TOKEN\n"));
    T_ASSERT(has(o99, "  CIRCLE_WORKING_DIRECTORY\n"));
    T_ASSERT(!has(o99, "s3cr3t-value"));
    free(o1), free(o2), free(o3), free(o99);
    ta_cap_free(&c);
    free(json), free(steps), free(s1), free(s2), free(s3);
}

TEST(agent_exec_unicode_long_lines_and_crlf)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101,
                       "printf 'h\\xc3\\xa9llo w\\xc3\\xb6rld \\xe2\\x9c\\x93 \\xf0\\x9f\\x98\\x80\\n'; "
                       "head -c 200000 /dev/zero | tr '\\0' x; echo; "
                       "python3 -c 'import sys; sys.stdout.write(\"\\u00e9\" * 100001)'; echo; "
                       "printf 'crlf\\r\\n'; printf '\\n'; printf 'tail'",
                       NULL);
    char *json = ta_task(NULL, NULL, s1);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(ta_run(t, json, true, false, &c, &st, NULL, 0));
    T_EQ_U64(st, AGENT__SUCCESS);
    T_EQ_U64(c.bad_chunk, 0);
    size_t x_total = 0, e_total = 0, k = 0;
    const char *texts[64];
    size_t lens[64];
    for (size_t i = 0; i < c.nlines && k < 64; i++)
        if (c.lines[i].step == 101) texts[k] = c.lines[i].text, lens[k++] = c.lines[i].n;
    T_EQ_STR(texts[0], "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80");
    size_t i = 1;
    for (; i < k && lens[i] > 0 && texts[i][0] == 'x'; i++) {
        T_ASSERT(lens[i] <= AGENT__MAX_LINE);
        x_total += lens[i];
    }
    T_EQ_U64(x_total, 200000);
    for (; i < k && lens[i] > 0 && (unsigned char)texts[i][0] == 0xc3; i++) {
        T_ASSERT(lens[i] <= AGENT__MAX_LINE);
        T_ASSERT(lens[i] % 2 == 0); /* never cut inside a character */
        e_total += lens[i];
    }
    T_EQ_U64(e_total, 200002);
    T_ASSERT(i + 3 == k);
    T_EQ_STR(texts[i], "crlf\r");
    T_EQ_U64(lens[i + 1], 0);
    T_EQ_STR(texts[i + 2], "tail");
    ta_cap_free(&c);
    free(json), free(s1);
}

TEST(agent_exec_unknown_step_type_fails_clearly)
{
    NEED_SANDBOX();
    char *s2 = ta_step(102, "echo still-runs", "\"when\":\"always\"");
    char *steps = sp_xasprintf("{\"id\":101,\"type\":\"save_cache\",\"name\":\"Saving cache\"},%s", s2);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    RUN_STEPS(steps, NULL, true, &c, &st);
    T_EQ_U64(st, AGENT__FAILED);
    T_ASSERT(has((char *)c.events.p, "start 101 Saving cache\nfinish 101 failed -1\n"));
    char *err = ta_output(&c, 101, 1);
    T_ASSERT(has(err, "Unsupported step type \"save_cache\""));
    free(err);
    T_ASSERT(has((char *)c.events.p, "finish 102 success 0\n"));
    ta_cap_free(&c);
    free(steps), free(s2);
}

TEST(agent_exec_custom_shell_gets_a_script)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101, "echo \"shell $0\"; set -o | grep -c 'errexit *on'", "\"shell\":\"/bin/sh -e\"");
    char *s2 = ta_step(102, "import sys; print('py', sys.version_info[0])", "\"shell\":\"python3\"");
    char *steps = sp_xasprintf("%s,%s", s1, s2);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    RUN_STEPS(steps, NULL, true, &c, &st);
    T_EQ_U64(st, AGENT__SUCCESS);
    T_EQ_STR(c.bash[101], "#!/bin/sh -e\necho \"shell $0\"; set -o | grep -c 'errexit *on'");
    char *o1 = ta_output(&c, 101, 0), *o2 = ta_output(&c, 102, 0);
    T_ASSERT(has(o1, "/.spool/step-101.sh\n1"));
    T_EQ_STR(o2, "py 3");
    free(o1), free(o2);
    ta_cap_free(&c);
    free(steps), free(s1), free(s2);
}

/* Stops the task once its step has printed something. */
static bool cancel_on_output(void *arg, int step)
{
    ta_cap_t *c = arg;
    if (step == 101) agent__exec_stop(c->x, AGENT__STOP_CANCEL);
    return false;
}

TEST(agent_exec_cancel_kills_tree)
{
    NEED_SANDBOX();
    const char *m = ta_marker();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "sleep %s & echo started; wait", m);
    char *s1 = ta_step(101, cmd, NULL);
    char *s2 = ta_step(102, "echo after", "\"when\":\"always\"");
    char *steps = sp_xasprintf("%s,%s", s1, s2);
    ta_cap_t c;
    ta_cap_init(&c);
    c.on_chunk = cancel_on_output;
    c.hook_arg = &c;
    agent__status_t st;
    RUN_STEPS(steps, NULL, true, &c, &st);
    T_EQ_U64(st, AGENT__CANCELED);
    T_ASSERT(has((char *)c.events.p, "finish 101 canceled -1\n"));
    T_ASSERT(!has((char *)c.events.p, "start 102"));
    T_ASSERT(!ta_alive(m));
    ta_cap_free(&c);
    free(steps), free(s1), free(s2);
}

/* A stop that lands while bwrap is still building the sandbox (the
 * step_started event comes just before the spawn) must not orphan it:
 * bwrap's init sets its parent-death signal only after clone(). */
static void cancel_on_start(void *arg, int step)
{
    ta_cap_t *c = arg;
    if (step == 101) agent__exec_stop(c->x, AGENT__STOP_CANCEL);
}

TEST(agent_exec_cancel_while_sandbox_starts_leaves_no_orphan)
{
    NEED_SANDBOX();
    for (int round = 0; round < 5; round++) {
        const char *m = ta_marker();
        char cmd[256];
        snprintf(cmd, sizeof cmd, "sleep %s", m);
        char *s1 = ta_step(101, cmd, NULL);
        ta_cap_t c;
        ta_cap_init(&c);
        c.on_started = cancel_on_start;
        c.hook_arg = &c;
        agent__status_t st;
        RUN_STEPS(s1, NULL, true, &c, &st);
        T_EQ_U64(st, AGENT__CANCELED);
        T_ASSERT(has((char *)c.events.p, "finish 101 canceled -1\n"));
        T_ASSERT(!ta_alive(m));
        ta_cap_free(&c);
        free(s1);
    }
}

/* Backpressure: the sink says "full" on every other chunk and a helper
 * thread resumes the executor; every line must still arrive, in order. */
typedef struct {
    ta_cap_t *c;
    sem_t full, quit;
    atomic_int pauses;
    pthread_t th;
} bp_t;

static bool bp_chunk(void *arg, int step)
{
    bp_t *b = arg;
    if (step != 101 || b->c->chunks % 2) return false;
    atomic_fetch_add(&b->pauses, 1);
    sem_post(&b->full);
    return true;
}

static void *bp_main(void *arg)
{
    bp_t *b = arg;
    for (;;) {
        sem_wait(&b->full);
        if (sem_trywait(&b->quit) == 0) return NULL;
        agent__exec_resume(b->c->x);
    }
}

TEST(agent_exec_backpressure_pauses_and_resumes)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101, "seq 1 200000", NULL);
    ta_cap_t c;
    ta_cap_init(&c);
    bp_t b = {.c = &c};
    sem_init(&b.full, 0, 0);
    sem_init(&b.quit, 0, 0);
    pthread_create(&b.th, NULL, bp_main, &b);
    c.on_chunk = bp_chunk;
    c.hook_arg = &b;
    agent__status_t st;
    char *json = ta_task(NULL, NULL, s1);
    int rc = ta_run(t, json, true, false, &c, &st, NULL, 0);
    sem_post(&b.quit);
    sem_post(&b.full);
    pthread_join(b.th, NULL);
    T_OK(rc);
    T_EQ_U64(st, AGENT__SUCCESS);
    T_ASSERT(atomic_load(&b.pauses) > 0);
    T_EQ_U64(ta_count(&c, 101), 200000);
    size_t want = 1;
    for (size_t i = 0; i < c.nlines; i++) {
        if (c.lines[i].step != 101) continue;
        char num[16];
        snprintf(num, sizeof num, "%zu", want++);
        T_EQ_STR(c.lines[i].text, num);
    }
    T_EQ_U64(c.bad_seq, 0);
    ta_cap_free(&c);
    free(json), free(s1);
}

/* ---- checkout ---------------------------------------------------------- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char *cmd;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&cmd, fmt, ap) < 0) abort();
    va_end(ap);
    int rc = system(cmd);
    free(cmd);
    return rc;
}

static char *read_cmd(const char *cmd)
{
    FILE *f = popen(cmd, "r");
    char buf[256] = "";
    if (f == NULL || fgets(buf, sizeof buf, f) == NULL) buf[0] = 0;
    if (f) pclose(f);
    buf[strcspn(buf, "\n")] = 0;
    return sp_xstrdup(buf);
}

/* The repository lives in the test's directory, under /tmp, which the
 * sandbox replaces with the task's private /tmp: the checkout step binds
 * a local repository there read-only. */
static void checkout_case(t_ctx_t *t, const char *repo)
{
    T_OK(sh("set -e; git init -q -b main %s; cd %s; git config user.email t@example.com; git config user.name T; "
            "echo one > a.txt; git add a.txt; git commit -q -m first; echo two > a.txt; git commit -q -am second",
            repo, repo));
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "git -C %s rev-parse HEAD~1", repo);
    char *old = read_cmd(cmd);
    T_ASSERT(strlen(old) == 40);

    for (int detached = 0; detached < 2; detached++) {
        char extra[1500];
        snprintf(extra, sizeof extra, "\"checkout\":{\"url\":\"file://%s\",\"revision\":\"%s\",\"branch\":%s}", repo,
                 old, detached ? "null" : "\"main\"");
        char *s2 =
            ta_step(102, "cat a.txt; git rev-parse HEAD; git rev-parse --abbrev-ref HEAD; git status --short", NULL);
        char *steps = sp_xasprintf("{\"id\":101,\"type\":\"checkout\",\"name\":\"Checkout code\"},%s", s2);
        char *json = ta_task(NULL, extra, steps);
        ta_cap_t c;
        ta_cap_init(&c);
        agent__status_t st;
        T_OK(ta_run(t, json, true, false, &c, &st, NULL, 0));
        T_EQ_U64(st, AGENT__SUCCESS);
        T_ASSERT(has((char *)c.events.p, "start 101 Checkout code\nfinish 101 success 0\n"));
        char *o = ta_output(&c, 102, 0), want[200];
        snprintf(want, sizeof want, "one\n%s\n%s", old, detached ? "HEAD" : "main");
        T_EQ_STR(o, want);
        T_ASSERT(c.bash[101] == NULL);
        free(o);
        ta_cap_free(&c);
        free(json), free(steps), free(s2);
    }

    /* A revision the repository does not have fails the step (and so
     * the job); an unreachable repository is an infrastructure failure. */
    char extra[1500];
    snprintf(extra, sizeof extra, "\"checkout\":{\"url\":\"file://%s\",\"revision\":\"%s\",\"branch\":\"main\"}", repo,
             "0123456789012345678901234567890123456789");
    char *json = ta_task(NULL, extra, "{\"id\":101,\"type\":\"checkout\"}");
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(ta_run(t, json, true, false, &c, &st, NULL, 0));
    T_EQ_U64(st, AGENT__FAILED);
    free(json);
    ta_cap_free(&c);
    snprintf(extra, sizeof extra, "\"checkout\":{\"url\":\"file://%s-missing\",\"revision\":\"%s\"}", repo, old);
    json = ta_task(NULL, extra, "{\"id\":101,\"type\":\"checkout\"}");
    ta_cap_init(&c);
    char msg[256];
    T_OK(ta_run(t, json, true, false, &c, &st, msg, sizeof msg));
    T_EQ_U64(st, AGENT__INFRA_FAIL);
    T_ASSERT(has(msg, "checkout: cannot fetch"));
    free(json);
    ta_cap_free(&c);

    /* A token in the URL never reaches the output or the message. */
    snprintf(extra, sizeof extra,
             "\"checkout\":{\"url\":\"https://x-token:s3cr3t@127.0.0.1:1/app.git\","
             "\"revision\":\"%s\"}",
             old);
    json = ta_task(NULL, extra, "{\"id\":101,\"type\":\"checkout\"}");
    ta_cap_init(&c);
    T_OK(ta_run(t, json, true, false, &c, &st, msg, sizeof msg));
    T_EQ_U64(st, AGENT__INFRA_FAIL);
    T_EQ_STR(msg, "checkout: cannot fetch https://127.0.0.1:1/app.git");
    char *all = ta_output(&c, 101, -1);
    T_ASSERT(has(all, "Cloning https://127.0.0.1:1/app.git into"));
    T_ASSERT(!has(all, "s3cr3t"));
    free(all);
    free(json);
    ta_cap_free(&c);
    free(old);
}

TEST(agent_exec_checkout_real_git_revision)
{
    NEED_SANDBOX();
    char repo[4200]; /* t_path's buffers rotate: keep a copy */
    snprintf(repo, sizeof repo, "%s", t_path(t, "repos/app"));
    checkout_case(t, repo);
}

/* ---- chunks and task documents ------------------------------------------- */

typedef struct {
    int n;
    uint64_t t[8];
    int s[8];
    char text[8][300];
} dec_lines_t;

static int collect(void *arg, uint64_t t_ms, int stream, const char *text, size_t n)
{
    dec_lines_t *d = arg;
    if (d->n >= 8 || n >= 300) return SP_ETOOBIG;
    d->t[d->n] = t_ms;
    d->s[d->n] = stream;
    memcpy(d->text[d->n], text, n);
    d->text[d->n][n] = 0;
    d->n++;
    return 0;
}

TEST(agent_chunk_roundtrip_zstd_msgpack)
{
    agent__chunk_t ch = {0};
    agent__chunk_init(&ch);
    T_ASSERT(agent__chunk_empty(&ch));
    agent__chunk_add(&ch, 0, 0, "first", 5);
    agent__chunk_add(&ch, 7, 1, "", 0);
    agent__chunk_add(&ch, 70000, 0, "h\xc3\xa9llo \xf0\x9f\x98\x80", 11);
    agent__chunk_add(&ch, (uint64_t)1 << 40, 1, "big t", 5);
    agent__chunk_seal(&ch);
    void *cctx = ZSTD_createCCtx();
    sp_buf_t z = {0};
    T_OK(agent__zstd_compress(cctx, 3, ch.buf.p, ch.buf.n, &z));
    dec_lines_t d = {0};
    T_OK(agent__chunk_decode(z.p, z.n, collect, &d));
    T_EQ_U64(d.n, 4);
    T_EQ_STR(d.text[0], "first");
    T_EQ_U64(d.t[1], 7);
    T_EQ_U64(d.s[1], 1);
    T_EQ_STR(d.text[1], "");
    T_EQ_STR(d.text[2], "h\xc3\xa9llo \xf0\x9f\x98\x80");
    T_EQ_U64(d.t[2], 70000);
    T_EQ_U64(d.t[3], (uint64_t)1 << 40);
    /* Damaged frames and non-chunks are refused, not half-read. */
    z.p[z.n / 2] ^= 0xff;
    d.n = 0;
    T_ASSERT(agent__chunk_decode(z.p, z.n, collect, &d) != 0);
    T_RC(SP_ECORRUPT, agent__chunk_decode("junk", 4, collect, &d));
    static const uint8_t not_lines[] = {0x91, 0x01}; /* [1] */
    T_OK(agent__zstd_compress(cctx, 3, not_lines, sizeof not_lines, &z));
    T_RC(SP_ECORRUPT, agent__chunk_decode(z.p, z.n, collect, &d));
    ZSTD_freeCCtx(cctx);
    sp_buf_free(&z);
    agent__chunk_free(&ch);
}

TEST(agent_task_parse_fields_and_errors)
{
    const char *json = "{\"task_id\":\"t\",\"lease\":\"l\",\"job_name\":\"build\",\"working_directory\":null,"
                       "\"environment\":{\"A\":\"1\",\"N\":5,\"B\":true},\"limits\":{\"job_timeout_s\":2.5},"
                       "\"node_index\":2,\"steps\":[{\"id\":101,\"type\":\"run\",\"command\":\"true\","
                       "\"when\":\"always\",\"no_output_timeout_s\":null,\"background\":false}]}";
    agent__task_t *tk;
    char err[256];
    T_OK(agent__task_parse(json, strlen(json), &tk, err, sizeof err));
    T_EQ_STR(tk->working_directory, "~/project");
    T_EQ_U64(tk->job_timeout_ms, 2500);
    T_EQ_U64(tk->node_index, 2);
    T_EQ_U64(tk->nenv, 3);
    T_EQ_STR(tk->env[1].value, "5");
    T_EQ_STR(tk->env[2].value, "true");
    T_EQ_U64(tk->nsteps, 1);
    T_EQ_U64(tk->steps[0].when, AGENT__WHEN_ALWAYS);
    T_EQ_U64(tk->steps[0].no_output_timeout_ms, AGENT__DEFAULT_NO_OUTPUT);
    T_EQ_STR(tk->steps[0].name, "run");
    agent__task_free(tk);

    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"lease\":\"l\",\"steps\":[]}", "\"task_id\""},
        {"{\"task_id\":\"t\",\"lease\":\"l\"}", "\"steps\""},
        {"{\"task_id\":\"t\",\"lease\":\"l\",\"steps\":[{\"id\":1,\"type\":\"run\"}]}", "steps[].command"},
        {"{\"task_id\":\"t\",\"lease\":\"l\",\"steps\":[{\"id\":1,\"type\":\"run\",\"command\":\"x\",\"when\":\"x\"}]}",
         "steps[].when"},
        {"{\"task_id\":\"t\",\"lease\":\"l\",\"environment\":[],\"steps\":[]}", "\"environment\""},
        {"{\"task_id\":\"t\",\"lease\":\"l\",\"limits\":{\"job_timeout_s\":\"5\"},\"steps\":[]}", "job_timeout_s"},
        {"not json", "not JSON"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        tk = NULL;
        T_RC(SP_EINVAL, agent__task_parse(bad[i].json, strlen(bad[i].json), &tk, err, sizeof err));
        T_ASSERT(tk == NULL);
        if (!has(err, bad[i].want)) t_fail(t, __FILE__, __LINE__, "case %zu: \"%s\" lacks %s", i, err, bad[i].want);
    }
}

TEST(agent_sandbox_probe_refuses_without_bwrap)
{
    setenv("PATH", "/nonexistent", 1);
    char *path = NULL, err[512];
    T_RC(SP_EIO, agent__sandbox_probe(&path, err, sizeof err));
    T_ASSERT(path == NULL);
    T_ASSERT(has(err, "bubblewrap"));
    T_ASSERT(has(err, "--no-sandbox"));
}

TEST(agent_exec_setup_failure_is_infrastructure)
{
    NEED_SANDBOX();
    /* The work directory's parent is a file: no task directory. */
    FILE *f = fopen(t_path(t, "work"), "w");
    T_ASSERT(f != NULL);
    fclose(f);
    char *s1 = ta_step(101, "echo never", NULL);
    char *json = ta_task(NULL, NULL, s1);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    char msg[512];
    T_OK(ta_run(t, json, true, false, &c, &st, msg, sizeof msg));
    T_EQ_U64(st, AGENT__INFRA_FAIL);
    T_ASSERT(has(msg, "cannot create"));
    T_ASSERT(has((char *)c.events.p, "finish 0 failed -1\n"));
    T_ASSERT(!has((char *)c.events.p, "start 101"));
    ta_cap_free(&c);
    free(json), free(s1);
}

TEST(agent_exec_working_directory_outside_task_is_refused)
{
    NEED_SANDBOX();
    char *s1 = ta_step(101, "pwd", "\"working_directory\":\"/opt/spool-not-here\"");
    char *json = ta_task(NULL, NULL, s1);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(ta_run(t, json, true, false, &c, &st, NULL, 0));
    T_EQ_U64(st, AGENT__FAILED);
    char *err = ta_output(&c, 101, 1);
    T_ASSERT(has(err, "outside the task directory"));
    free(err);
    ta_cap_free(&c);
    free(json), free(s1);
}
