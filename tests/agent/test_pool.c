/* The agent as a whole (agent_pool_*): real HTTP over a unix socket with
 * the agent's hc client to the fake server of fake_server.c, real tasks in a real
 * sandbox. Waits are bounded by the server's condition variable with a
 * deadline. */
#include "fake_server.h"

#include <stdlib.h>
#include <unistd.h>

#define WAIT_MS 30000

typedef struct {
    fs_t *fs;
    agent_pool_t *pool;
    char server[4200];
} env_t;

static bool start(t_ctx_t *t, env_t *e, agent_opts_t *o, int heartbeat_ms)
{
    snprintf(e->server, sizeof e->server, "unix:%s", t_path(t, "srv.sock"));
    e->fs = fs_start(e->server + 5, "tok", heartbeat_ms);
    if (e->fs == NULL) return false;
    if (o->server == NULL) o->server = e->server;
    if (o->token == NULL) o->token = "tok";
    o->work_dir = t_path(t, "work");
    o->name = "test-agent";
    if (o->claim_wait_ms == 0) o->claim_wait_ms = 500;
    char err[512];
    int rc = agent_pool_start(o, &e->pool, err, sizeof err);
    if (rc != 0) {
        printf("# agent_pool_start: %s\n", err);
        fs_stop(e->fs);
        return false;
    }
    return true;
}

static void stop(env_t *e)
{
    agent_pool_stop(e->pool);
    fs_stop(e->fs);
}

static char *task_json(const char *id, const char *steps)
{
    return sp_xasprintf("{\"task_id\":\"%s\",\"lease\":\"lease-%s\",\"job_id\":\"j\",\"job_number\":1,"
                        "\"job_name\":\"build\",\"project\":{\"slug\":\"gh/acme/app\"},"
                        "\"environment\":{\"CI\":\"true\"},\"working_directory\":\"~/project\",\"shell\":null,"
                        "\"parallelism\":1,\"node_index\":0,\"limits\":{\"job_timeout_s\":60},\"steps\":[%s]}",
                        id, id, steps);
}

static bool has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

TEST(agent_pool_runs_a_task_end_to_end)
{
    env_t e;
    agent_opts_t o = {0};
    T_ASSERT(start(t, &e, &o, 5000));
    char *s1 = ta_step(101, "echo hello; echo oops >&2; seq 1 50000 | sed 's/^/line /'", NULL);
    char *s2 = ta_step(102, "exit 0", "\"name\":\"second\"");
    char *steps = sp_xasprintf("%s,%s", s1, s2);
    char *tj = task_json("t1", steps);
    fs_add_task(e.fs, tj);
    T_ASSERT(fs_wait_finishes(e.fs, 1, WAIT_MS));
    fs_finish_t f = fs_finish(e.fs, 0);
    T_EQ_STR(f.task_id, "t1");
    T_EQ_STR(f.status, "success");
    char *ev = fs_events(e.fs);
    T_EQ_STR(ev, "start 0 Spin up environment\nfinish 0 success 0\n"
                 "start 99 Preparing environment variables\nfinish 99 success 0\n"
                 "start 101 step 101\nfinish 101 success 0\nstart 102 second\nfinish 102 success 0\n");
    free(ev);
    char *err = fs_output(e.fs, 101, 1);
    T_EQ_STR(err, "oops");
    free(err);
    char *out = fs_output(e.fs, 101, 0);
    T_ASSERT(strncmp(out, "hello\nline 1\nline 2\n", 20) == 0);
    T_ASSERT(has(out, "\nline 50000"));
    size_t nl = 0;
    for (const char *c = out; *c; c++) nl += *c == '\n';
    T_EQ_U64(nl, 50000); /* "hello" and 50000 lines */
    free(out);
    T_EQ_U64(fs_count(e.fs, "register"), 1);
    T_EQ_U64(fs_count(e.fs, "bad_auth"), 0);
    T_EQ_U64(fs_count(e.fs, "bad_lease"), 0);
    T_EQ_U64(fs_count(e.fs, "bad_chunk"), 0);
    agent_pool_stats_t st;
    agent_pool_stats(e.pool, &st);
    T_ASSERT(st.registered);
    T_EQ_STR(st.agent_id, "agent-1");
    T_EQ_U64(st.claimed, 1);
    stop(&e);
    /* The task directory is gone. */
    T_ASSERT(access(t_path(t, "work/t1"), F_OK) != 0);
    free(tj), free(steps), free(s1), free(s2);
}

TEST(agent_pool_runs_slots_in_parallel)
{
    env_t e;
    agent_opts_t o = {.slots = 2, .no_sandbox = true};
    T_ASSERT(start(t, &e, &o, 5000));
    /* Each task waits for the other's file: only parallel slots finish. */
    char cmd[2][1200];
    for (int i = 0; i < 2; i++)
        snprintf(cmd[i], sizeof cmd[i],
                 "touch %s/ready-%d; timeout 20 bash -c 'until [ -e %s/ready-%d ]; do sleep 0.01; done' && echo met",
                 t->dir, i, t->dir, 1 - i);
    for (int i = 0; i < 2; i++) {
        char id[8];
        snprintf(id, sizeof id, "p%d", i);
        char *s = ta_step(101, cmd[i], NULL);
        char *tj = task_json(id, s);
        fs_add_task(e.fs, tj);
        free(tj), free(s);
    }
    T_ASSERT(fs_wait_finishes(e.fs, 2, WAIT_MS));
    T_EQ_STR(fs_finish(e.fs, 0).status, "success");
    T_EQ_STR(fs_finish(e.fs, 1).status, "success");
    char *o0 = fs_output(e.fs, 101, 0), *o1 = fs_output(e.fs, 1101, 0);
    T_EQ_STR(o0, "met");
    T_EQ_STR(o1, "met");
    free(o0), free(o1);
    stop(&e);
}

TEST(agent_pool_cancel_from_heartbeat_kills_the_tree)
{
    env_t e;
    agent_opts_t o = {0};
    T_ASSERT(start(t, &e, &o, 100));
    const char *m = ta_marker();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "sleep %s & echo started; wait", m);
    char *s1 = ta_step(101, cmd, NULL);
    char *tj = task_json("c1", s1);
    fs_add_task(e.fs, tj);
    T_ASSERT(fs_wait_event(e.fs, "start 101", WAIT_MS));
    fs_cancel(e.fs, "c1", false, true);
    T_ASSERT(fs_wait_finishes(e.fs, 1, WAIT_MS));
    T_EQ_STR(fs_finish(e.fs, 0).status, "canceled");
    T_ASSERT(fs_wait_event(e.fs, "finish 101 canceled -1", WAIT_MS));
    T_ASSERT(!ta_alive(m));
    T_ASSERT(fs_count(e.fs, "heartbeat") >= 1);
    stop(&e);
    free(tj), free(s1);
}

TEST(agent_pool_cancel_in_events_answer)
{
    env_t e;
    agent_opts_t o = {0};
    T_ASSERT(start(t, &e, &o, 5000));
    char *s1 = ta_step(101, "sleep 1000", NULL);
    char *tj = task_json("c2", s1);
    fs_cancel(e.fs, "c2", true, false);
    fs_add_task(e.fs, tj);
    T_ASSERT(fs_wait_finishes(e.fs, 1, WAIT_MS));
    T_EQ_STR(fs_finish(e.fs, 0).status, "canceled");
    stop(&e);
    free(tj), free(s1);
}

TEST(agent_pool_lease_lost_kills_and_drops)
{
    env_t e;
    agent_opts_t o = {.grace_ms = 60000};
    T_ASSERT(start(t, &e, &o, 5000));
    const char *m = ta_marker();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "sleep %s & echo started; wait", m);
    char *s1 = ta_step(101, cmd, NULL);
    char *tj = task_json("l1", s1);
    fs_add_task(e.fs, tj);
    T_ASSERT(fs_wait_event(e.fs, "start 101", WAIT_MS));
    fs_conflict(e.fs, "l1");
    /* The next request (the output chunk of "started") gets 409 and the
     * task dies; a drain with a long grace returns when it is gone. */
    agent_pool_drain(e.pool, false);
    T_OK(agent_pool_wait(e.pool));
    agent_pool_stats_t st;
    agent_pool_stats(e.pool, &st);
    T_EQ_U64(st.lost, 1);
    T_EQ_U64(st.running, 0);
    T_ASSERT(!ta_alive(m));
    T_EQ_U64(fs_wait_finishes(e.fs, 1, 0), false); /* no finish for a lost lease */
    stop(&e);
    free(tj), free(s1);
}

TEST(agent_pool_stop_fails_running_task_as_infrastructure)
{
    env_t e;
    agent_opts_t o = {0};
    T_ASSERT(start(t, &e, &o, 5000));
    const char *m = ta_marker();
    char cmd[256];
    snprintf(cmd, sizeof cmd, "sleep %s", m);
    char *s1 = ta_step(101, cmd, NULL);
    char *tj = task_json("s1", s1);
    fs_add_task(e.fs, tj);
    T_ASSERT(fs_wait_event(e.fs, "start 101", WAIT_MS));
    int64_t t0 = sp_mono_ns();
    agent_pool_stop(e.pool);
    int64_t took_ms = (sp_mono_ns() - t0) / 1000000;
    T_ASSERT(took_ms < 10000);
    T_ASSERT(fs_wait_finishes(e.fs, 1, 0));
    fs_finish_t f = fs_finish(e.fs, 0);
    T_EQ_STR(f.status, "infrastructure_fail");
    T_ASSERT(has(f.message, "agent stopped"));
    T_ASSERT(fs_wait_event(e.fs, "finish 101 canceled -1", 0));
    T_ASSERT(!ta_alive(m));
    fs_stop(e.fs);
    free(tj), free(s1);
}

TEST(agent_pool_drain_lets_running_task_finish)
{
    env_t e;
    agent_opts_t o = {.grace_ms = 30000};
    T_ASSERT(start(t, &e, &o, 5000));
    char *s1 = ta_step(101, "sleep 0.5; echo done", NULL);
    char *tj = task_json("d1", s1);
    fs_add_task(e.fs, tj);
    T_ASSERT(fs_wait_event(e.fs, "start 101", WAIT_MS));
    agent_pool_drain(e.pool, false);
    T_OK(agent_pool_wait(e.pool));
    T_ASSERT(fs_wait_finishes(e.fs, 1, 0));
    T_EQ_STR(fs_finish(e.fs, 0).status, "success");
    T_ASSERT(fs_wait_event(e.fs, "finish 101 success 0", 0));
    stop(&e);
    free(tj), free(s1);
}

TEST(agent_pool_drain_grace_expires)
{
    env_t e;
    agent_opts_t o = {.grace_ms = 300};
    T_ASSERT(start(t, &e, &o, 5000));
    char *s1 = ta_step(101, "sleep 1000", NULL);
    char *tj = task_json("g1", s1);
    fs_add_task(e.fs, tj);
    T_ASSERT(fs_wait_event(e.fs, "start 101", WAIT_MS));
    agent_pool_drain(e.pool, false);
    T_OK(agent_pool_wait(e.pool));
    T_ASSERT(fs_wait_finishes(e.fs, 1, 0));
    T_EQ_STR(fs_finish(e.fs, 0).status, "infrastructure_fail");
    stop(&e);
    free(tj), free(s1);
}

TEST(agent_pool_retries_transient_output_errors)
{
    env_t e;
    agent_opts_t o = {0};
    T_ASSERT(start(t, &e, &o, 5000));
    fs_fail_outputs(e.fs, 3);
    char *s1 = ta_step(101, "seq 1 1000", NULL);
    char *tj = task_json("r1", s1);
    fs_add_task(e.fs, tj);
    T_ASSERT(fs_wait_finishes(e.fs, 1, WAIT_MS));
    T_EQ_STR(fs_finish(e.fs, 0).status, "success");
    char *out = fs_output(e.fs, 101, 0);
    T_ASSERT(strncmp(out, "1\n2\n3\n", 6) == 0);
    T_ASSERT(has(out, "\n999\n1000") && strlen(out) == 3892);
    free(out);
    stop(&e);
    free(tj), free(s1);
}

TEST(agent_pool_refused_token_is_fatal)
{
    env_t e;
    agent_opts_t o = {.token = "wrong"};
    T_ASSERT(start(t, &e, &o, 5000));
    T_RC(SP_EINVAL, agent_pool_wait(e.pool));
    T_ASSERT(has(agent_pool_error(e.pool), "refused"));
    T_ASSERT(has(agent_pool_error(e.pool), "bad agent token"));
    stop(&e);
}

TEST(agent_pool_waits_for_a_server_that_is_not_up_yet)
{
    char server[4200];
    snprintf(server, sizeof server, "unix:%s", t_path(t, "later.sock"));
    agent_opts_t o = {.server = server, .token = "tok", .work_dir = t_path(t, "work"), .claim_wait_ms = 500};
    agent_pool_t *p;
    char err[512];
    T_OK(agent_pool_start(&o, &p, err, sizeof err));
    fs_t *fs = fs_start(server + 5, "tok", 5000);
    T_ASSERT(fs != NULL);
    char *s1 = ta_step(101, "echo late", NULL);
    char *tj = task_json("w1", s1);
    fs_add_task(fs, tj);
    T_ASSERT(fs_wait_finishes(fs, 1, WAIT_MS));
    T_EQ_STR(fs_finish(fs, 0).status, "success");
    agent_pool_stop(p);
    fs_stop(fs);
    free(tj), free(s1);
}

TEST(agent_pool_bad_task_is_finished_as_infrastructure)
{
    env_t e;
    agent_opts_t o = {0};
    T_ASSERT(start(t, &e, &o, 5000));
    fs_add_task(e.fs, "{\"task_id\":\"b1\",\"lease\":\"lease-b1\",\"steps\":\"not a list\"}");
    T_ASSERT(fs_wait_finishes(e.fs, 1, WAIT_MS));
    fs_finish_t f = fs_finish(e.fs, 0);
    T_EQ_STR(f.status, "infrastructure_fail");
    T_ASSERT(has(f.message, "steps"));
    stop(&e);
}

TEST(agent_pool_start_refuses_bad_options)
{
    char err[512];
    agent_pool_t *p = NULL;
    agent_opts_t o = {.token = "x", .work_dir = t_path(t, "w")};
    T_RC(SP_EINVAL, agent_pool_start(&o, &p, err, sizeof err));
    T_ASSERT(has(err, "server"));
    o.server = "ftp://x";
    T_RC(SP_EINVAL, agent_pool_start(&o, &p, err, sizeof err));
    T_ASSERT(has(err, "expected http://host:port"));
    o.server = "http://127.0.0.1:1";
    o.token = NULL;
    T_RC(SP_EINVAL, agent_pool_start(&o, &p, err, sizeof err));
    T_ASSERT(has(err, "token"));
    o.token = "x";
    o.slots = AGENT_MAX_SLOTS + 1;
    T_RC(SP_EINVAL, agent_pool_start(&o, &p, err, sizeof err));
    T_ASSERT(p == NULL);
    /* Without bwrap on PATH the agent refuses unless --no-sandbox. */
    o.slots = 1;
    setenv("PATH", "/nonexistent", 1);
    T_RC(SP_EIO, agent_pool_start(&o, &p, err, sizeof err));
    T_ASSERT(has(err, "--no-sandbox"));
    o.no_sandbox = true;
    T_OK(agent_pool_start(&o, &p, err, sizeof err));
    agent_pool_stop(p);
}

TEST(agent_pool_once_runs_one_task_then_stops)
{
    env_t e;
    agent_opts_t o = {.once = true};
    T_ASSERT(start(t, &e, &o, 5000));
    char *s1 = ta_step(101, "echo once", NULL);
    char *a = task_json("o1", s1), *b = task_json("o2", s1);
    fs_add_task(e.fs, a);
    fs_add_task(e.fs, b);
    T_OK(agent_pool_wait(e.pool));
    T_ASSERT(fs_wait_finishes(e.fs, 1, 0));
    fs_finish_t f = fs_finish(e.fs, 0);
    T_EQ_STR(f.task_id, "o1");
    T_EQ_STR(f.status, "success");
    agent_pool_stats_t st;
    agent_pool_stats(e.pool, &st);
    T_EQ_U64(st.claimed, 1);
    stop(&e);
    free(a), free(b), free(s1);
}
