/* The docker executor for real: a private `podman system service`
 * (tests/agent/podman.c), a busybox image built from busybox-static, and
 * the executor talking to the Docker Engine API it serves. Every test
 * ends by listing the task's containers through the API: none may be
 * left, whatever the outcome. Waits are bounded by the executor's own
 * timeouts (no_output_timeout, the job limit) or by `timeout` loops in
 * the steps. */
#include "helpers.h"
#include "podman.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static bool has(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

static int64_t mono_ms(void) { return sp_mono_ns() / 1000000; }

/* Runs a task (JSON) with the docker executor on pm's socket. */
static int run_docker(t_ctx_t *t, tp_podman_t *pm, const char *json, ta_cap_t *c, agent__status_t *status, char *msg,
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
                            .bwrap = ta_bwrap(),
                            .docker_socket = pm ? pm->socket : NULL,
                            .agent_name = "test"};
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

/* A docker task: executor with images (JSON array), environment, extra
 * top-level members (or NULL), steps. */
static char *docker_task(const char *images, const char *env, const char *extra, const char *steps)
{
    char *ex = sp_xasprintf("\"executor\":{\"type\":\"docker\",\"images\":%s,\"resource_class\":\"medium\"}%s%s",
                            images, extra ? "," : "", extra ? extra : "");
    char *json = ta_task(env, ex, steps);
    free(ex);
    return json;
}

#define PRIMARY "{\"image\":\"" TP_IMAGE "\"}"

/* A service that answers HTTP on 8080 with a page naming it. */
#define SERVICE                                                                                                        \
    "{\"image\":\"" TP_IMAGE "\",\"name\":\"svc\",\"environment\":{\"PAGE\":\"hello from the service\"},"              \
    "\"command\":[\"/bin/sh\",\"-c\",\"mkdir -p /www && echo \\\"$PAGE\\\" >/www/index.html && "                       \
    "exec httpd -f -p 8080 -h /www\"]}"

TEST(agent_docker_primary_and_service_env_exit_codes_streams)
{
    tp_podman_t pm;
    NEED_PODMAN(&pm);
    /* The primary's own environment comes from the config; the job's and
     * the step's come with each step. */
    const char *images = "[{\"image\":\"" TP_IMAGE "\",\"environment\":{\"IMGV\":\"from-image\"}}," SERVICE "]";
    char *s1 = ta_step(101,
                       "echo \"wd=$PWD\"; echo \"home=$HOME\"; echo \"cwd=$CIRCLE_WORKING_DIRECTORY\"; "
                       "echo \"job=$JOBV step=$STEPV img=$IMGV\"; echo to-stderr >&2; echo \"uid=$(id -u)\"",
                       "\"environment\":{\"STEPV\":\"from-step\"}");
    char *s2 =
        ta_step(102,
                "for i in $(seq 100); do wget -qO- http://localhost:8080/ 2>/dev/null && break; sleep 0.1; done; "
                "wget -qO- http://svc:8080/",
                NULL);
    /* Processes a step leaves behind live on in the container. */
    char *s3 = ta_step(103, "sleep 1000 >/dev/null 2>&1 &", NULL);
    char *s4 = ta_step(104, "ps | grep -v grep | grep -c 'sleep 1000'; echo partial; exit 3", NULL);
    char *s5 = ta_step(105, "echo never", NULL);
    char *s6 = ta_step(106, "echo always; echo 'export FROM_ENV=1' >>\"$BASH_ENV\"", "\"when\":\"always\"");
    char *steps = sp_xasprintf("%s,%s,%s,%s,%s,%s", s1, s2, s3, s4, s5, s6);
    char *json = docker_task(images, "{\"CI\":\"true\",\"JOBV\":\"from-job\"}", NULL, steps);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    char msg[512];
    T_OK(run_docker(t, &pm, json, &c, &st, msg, sizeof msg));
    T_EQ_U64(st, AGENT__FAILED);
    T_EQ_U64(c.bad_seq, 0);
    T_EQ_U64(c.bad_chunk, 0);
    T_EQ_STR((char *)c.events.p, "start 0 Spin up environment\nfinish 0 success 0\n"
                                 "start 99 Preparing environment variables\nfinish 99 success 0\n"
                                 "start 101 step 101\nfinish 101 success 0\n"
                                 "start 102 step 102\nfinish 102 success 0\n"
                                 "start 103 step 103\nfinish 103 success 0\n"
                                 "start 104 step 104\nfinish 104 failed 3\n"
                                 "start 106 step 106\nfinish 106 success 0\n");
    const char *task_dir = t_path(t, "work/task-1");
    char want[2048];
    char *o1 = ta_output(&c, 101, 0), *e1 = ta_output(&c, 101, 1);
    snprintf(want, sizeof want,
             "wd=%s/home/project\nhome=%s/home\ncwd=%s/home/project\njob=from-job step=from-step img=from-image\nuid=0",
             task_dir, task_dir, task_dir);
    T_EQ_STR(o1, want);
    T_EQ_STR(e1, "to-stderr");
    /* busybox has no bash: the default shell is /bin/sh -eo pipefail. */
    T_ASSERT(c.bash[101] != NULL && has(c.bash[101], "#!/bin/sh -eo pipefail\necho"));
    char *o2 = ta_output(&c, 102, 0);
    T_EQ_STR(o2, "hello from the service\nhello from the service");
    char *o4 = ta_output(&c, 104, 0), *e4 = ta_output(&c, 104, 1);
    T_EQ_STR(o4, "1\npartial");
    T_EQ_STR(e4, "Exited with code exit status 3");
    char *o6 = ta_output(&c, 106, 0);
    T_EQ_STR(o6, "always");
    char *spin = ta_output(&c, 0, -1);
    T_ASSERT(has(spin, "Executor: docker"));
    T_ASSERT(has(spin, "Started the primary container"));
    T_ASSERT(has(spin, "Started service container"));
    T_ASSERT(has(spin, "Default shell: /bin/sh -eo pipefail"));
    /* Lines carry their time since the step started. */
    for (size_t i = 0; i < c.nlines; i++) T_ASSERT(c.lines[i].t_ms < 60000);
    T_EQ_U64(tp_containers(&pm, "task-1"), 0);
    T_ASSERT(access(task_dir, F_OK) != 0);
    free(o1), free(e1), free(o2), free(o4), free(e4), free(o6), free(spin);
    ta_cap_free(&c);
    free(json), free(steps), free(s1), free(s2), free(s3), free(s4), free(s5), free(s6);
    tp_stop(&pm);
}

TEST(agent_docker_no_output_timeout_kills_the_step_not_the_job)
{
    tp_podman_t pm;
    NEED_PODMAN(&pm);
    char *s1 = ta_step(101, "echo start; sleep 30 & sleep 31", "\"no_output_timeout_s\":1");
    char *s2 = ta_step(102,
                       "if ps | grep -v grep | grep -q 'sleep 3[01]'; then echo alive; else echo gone; fi; "
                       "echo after",
                       "\"when\":\"always\"");
    char *steps = sp_xasprintf("%s,%s", s1, s2);
    char *json = docker_task("[" PRIMARY "]", NULL, NULL, steps);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    int64_t t0 = mono_ms();
    T_OK(run_docker(t, &pm, json, &c, &st, NULL, 0));
    int64_t took = mono_ms() - t0;
    T_EQ_U64(st, AGENT__TIMEDOUT);
    T_ASSERT(took < 20000);
    T_ASSERT(has((char *)c.events.p, "finish 101 timedout -1\n"));
    T_ASSERT(has((char *)c.events.p, "finish 102 success 0\n"));
    char *e1 = ta_output(&c, 101, 1), *o2 = ta_output(&c, 102, 0);
    T_ASSERT(has(e1, "Too long with no output (exceeded 1s): context deadline exceeded"));
    T_EQ_STR(o2, "gone\nafter");
    T_EQ_U64(tp_containers(&pm, "task-1"), 0);
    free(e1), free(o2);
    ta_cap_free(&c);
    free(json), free(steps), free(s1), free(s2);
    tp_stop(&pm);
}

static bool cancel_on_output(void *arg, int step)
{
    ta_cap_t *c = arg;
    if (step == 101) agent__exec_stop(c->x, AGENT__STOP_CANCEL);
    return false;
}

TEST(agent_docker_cancel_stops_and_removes_containers)
{
    tp_podman_t pm;
    NEED_PODMAN(&pm);
    char *s1 = ta_step(101, "echo started; sleep 60", NULL);
    char *s2 = ta_step(102, "echo after", "\"when\":\"always\"");
    char *steps = sp_xasprintf("%s,%s", s1, s2);
    char *json = docker_task("[" PRIMARY "," SERVICE "]", NULL, NULL, steps);
    ta_cap_t c;
    ta_cap_init(&c);
    c.on_chunk = cancel_on_output;
    c.hook_arg = &c;
    agent__status_t st;
    int64_t t0 = mono_ms();
    T_OK(run_docker(t, &pm, json, &c, &st, NULL, 0));
    T_EQ_U64(st, AGENT__CANCELED);
    T_ASSERT(mono_ms() - t0 < 30000);
    T_ASSERT(has((char *)c.events.p, "finish 101 canceled -1\n"));
    T_ASSERT(!has((char *)c.events.p, "start 102"));
    T_EQ_U64(tp_containers(&pm, "task-1"), 0);
    ta_cap_free(&c);
    free(json), free(steps), free(s1), free(s2);
    tp_stop(&pm);
}

/* A stop while the containers start (here: at step 0) cancels the spin-up
 * and still removes what was created. */
static void cancel_on_spin_up(void *arg, int step)
{
    ta_cap_t *c = arg;
    if (step == 0) agent__exec_stop(c->x, AGENT__STOP_SHUTDOWN);
}

TEST(agent_docker_stop_during_spin_up)
{
    tp_podman_t pm;
    NEED_PODMAN(&pm);
    char *s1 = ta_step(101, "echo never", NULL);
    char *json = docker_task("[" PRIMARY "," SERVICE "]", NULL, NULL, s1);
    ta_cap_t c;
    ta_cap_init(&c);
    c.on_started = cancel_on_spin_up;
    c.hook_arg = &c;
    agent__status_t st;
    char msg[512];
    T_OK(run_docker(t, &pm, json, &c, &st, msg, sizeof msg));
    T_EQ_U64(st, AGENT__INFRA_FAIL);
    T_ASSERT(has(msg, "agent stopped"));
    T_ASSERT(has((char *)c.events.p, "finish 0 canceled -1\n"));
    T_ASSERT(!has((char *)c.events.p, "start 101"));
    T_EQ_U64(tp_containers(&pm, "task-1"), 0);
    ta_cap_free(&c);
    free(json), free(s1);
    tp_stop(&pm);
}

TEST(agent_docker_job_timeout)
{
    tp_podman_t pm;
    NEED_PODMAN(&pm);
    char *s1 = ta_step(101, "echo started; sleep 60", NULL);
    char *json = docker_task("[" PRIMARY "]", NULL, "\"limits\":{\"job_timeout_s\":3}", s1);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    char msg[512];
    T_OK(run_docker(t, &pm, json, &c, &st, msg, sizeof msg));
    T_EQ_U64(st, AGENT__TIMEDOUT);
    T_ASSERT(has(msg, "time limit of 3s"));
    T_ASSERT(has((char *)c.events.p, "finish 101 timedout -1\n"));
    T_EQ_U64(tp_containers(&pm, "task-1"), 0);
    ta_cap_free(&c);
    free(json), free(s1);
    tp_stop(&pm);
}

TEST(agent_docker_missing_image_is_an_infrastructure_failure)
{
    tp_podman_t pm;
    NEED_PODMAN(&pm);
    /* The primary exists, the service's image does not (and cannot be
     * pulled: nothing answers on localhost:443). */
    char *s1 = ta_step(101, "echo never", NULL);
    char *json =
        docker_task("[" PRIMARY ",{\"image\":\"localhost/spool-no-such-image:1\",\"name\":\"db\"}]", NULL, NULL, s1);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    char msg[512];
    T_OK(run_docker(t, &pm, json, &c, &st, msg, sizeof msg));
    T_EQ_U64(st, AGENT__INFRA_FAIL);
    T_ASSERT(has(msg, "Cannot find or pull image localhost/spool-no-such-image:1"));
    T_ASSERT(has((char *)c.events.p, "finish 0 failed -1\n"));
    T_ASSERT(!has((char *)c.events.p, "start 101"));
    char *e0 = ta_output(&c, 0, 1);
    T_ASSERT(has(e0, "Cannot find or pull image localhost/spool-no-such-image:1"));
    /* The primary was started before the failure: removed too. */
    T_EQ_U64(tp_containers(&pm, "task-1"), 0);
    free(e0);
    ta_cap_free(&c);
    free(json), free(s1);
    tp_stop(&pm);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd;
    if (vasprintf(&cmd, fmt, ap) < 0) abort();
    va_end(ap);
    char *full = sp_xasprintf("(%s) >/dev/null 2>&1", cmd);
    int st = system(full);
    free(cmd);
    free(full);
    return st == 0 ? 0 : SP_EIO;
}

/* The checkout runs on the agent's side into the task directory, which
 * the primary shares at the same path; executor.image alone (no images
 * list) is a primary without services. */
TEST(agent_docker_checkout_is_seen_in_the_container)
{
    tp_podman_t pm;
    NEED_PODMAN(&pm);
    char repo[4200];
    snprintf(repo, sizeof repo, "%s", t_path(t, "repos/app"));
    T_OK(sh("set -e; git init -q -b main %s; cd %s; git config user.email t@example.com; git config user.name T; "
            "echo one > a.txt; git add a.txt; git commit -q -m first",
            repo, repo));
    char extra[4400];
    snprintf(extra, sizeof extra,
             "\"executor\":{\"type\":\"docker\",\"image\":\"" TP_IMAGE "\"},"
             "\"checkout\":{\"url\":\"file://%s\",\"revision\":null,\"branch\":\"main\"}",
             repo);
    char *s2 = ta_step(102, "cat a.txt; ls -a | grep -c '^.git$'; echo two >b.txt; cat b.txt", NULL);
    char *steps = sp_xasprintf("{\"id\":101,\"type\":\"checkout\",\"name\":\"Checkout code\"},%s", s2);
    char *json = ta_task(NULL, extra, steps);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(run_docker(t, &pm, json, &c, &st, NULL, 0));
    char *o1 = ta_output(&c, 101, -1);
    if (st != AGENT__SUCCESS) t_fail(t, __FILE__, __LINE__, "checkout output: %s", o1);
    T_EQ_U64(st, AGENT__SUCCESS);
    char *o2 = ta_output(&c, 102, 0);
    T_EQ_STR(o2, "one\n1\ntwo");
    T_EQ_U64(tp_containers(&pm, "task-1"), 0);
    free(o1), free(o2);
    ta_cap_free(&c);
    free(json), free(steps), free(s2);
    tp_stop(&pm);
}

/* Without a Docker socket a docker task runs with the shell executor
 * (the local fleet of `spool serve` does this out of the box). */
TEST(agent_docker_task_without_socket_uses_the_shell_executor)
{
    char *s1 = ta_step(101, "echo shell", NULL);
    char *json = docker_task("[" PRIMARY "]", NULL, NULL, s1);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(run_docker(t, NULL, json, &c, &st, NULL, 0));
    T_EQ_U64(st, AGENT__SUCCESS);
    char *o = ta_output(&c, 101, 0), *spin = ta_output(&c, 0, -1);
    T_EQ_STR(o, "shell");
    T_ASSERT(!has(spin, "Executor: docker"));
    free(o), free(spin);
    ta_cap_free(&c);
    free(json), free(s1);
}

TEST(agent_task_parse_docker_images)
{
    const char *json =
        "{\"task_id\":\"t\",\"lease\":\"l\",\"steps\":[],\"executor\":{\"type\":\"docker\",\"image\":\"ignored\","
        "\"images\":[{\"image\":\"cimg/base:stable\",\"user\":\"circleci\"},"
        "{\"image\":\"postgres:16\",\"name\":\"db\",\"entrypoint\":\"docker-entrypoint.sh\","
        "\"command\":\"postgres -c 'fsync=off'\",\"environment\":{\"POSTGRES_PASSWORD\":\"pw\"},"
        "\"auth\":{\"username\":\"u\",\"password\":\"p\"}},"
        "{\"image\":\"redis\",\"command\":[\"redis-server\",\"--port\",\"6380\"]}]}}";
    agent__task_t *task;
    char err[256];
    T_OK(agent__task_parse(json, strlen(json), &task, err, sizeof err));
    T_EQ_STR(task->executor_type, "docker");
    T_EQ_U64(task->nimages, 3);
    T_EQ_STR(task->images[0].image, "cimg/base:stable");
    T_EQ_STR(task->images[0].user, "circleci");
    T_ASSERT(task->images[0].command == NULL && task->images[0].entrypoint == NULL);
    T_EQ_STR(task->images[1].name, "db");
    T_EQ_STR(task->images[1].entrypoint[0], "docker-entrypoint.sh");
    T_ASSERT(task->images[1].entrypoint[1] == NULL);
    T_EQ_STR(task->images[1].command[2], "fsync=off");
    T_EQ_STR(task->images[1].env[0].value, "pw");
    T_EQ_STR(task->images[1].auth_user, "u");
    T_EQ_STR(task->images[2].command[2], "6380");
    agent__task_free(task);

    /* executor.image alone: one primary. */
    const char *j2 = "{\"task_id\":\"t\",\"lease\":\"l\",\"steps\":[],\"executor\":{\"type\":\"docker\",\"image\":"
                     "\"cimg/base:stable\"}}";
    T_OK(agent__task_parse(j2, strlen(j2), &task, err, sizeof err));
    T_EQ_U64(task->nimages, 1);
    T_EQ_STR(task->images[0].image, "cimg/base:stable");
    agent__task_free(task);

    const char *j3 = "{\"task_id\":\"t\",\"lease\":\"l\",\"steps\":[],\"executor\":{\"type\":\"docker\",\"images\":["
                     "{\"name\":\"x\"}]}}";
    T_RC(SP_EINVAL, agent__task_parse(j3, strlen(j3), &task, err, sizeof err));
    T_ASSERT(has(err, "executor.images[].image"));
}

/* An image user that is not root can write its home, its working
 * directory, BASH_ENV and the checkout (made on the agent's side). */
TEST(agent_docker_non_root_user_writes_home_and_checkout)
{
    tp_podman_t pm;
    NEED_PODMAN(&pm);
    char repo[4200];
    snprintf(repo, sizeof repo, "%s", t_path(t, "repos/app"));
    T_OK(sh("set -e; git init -q -b main %s; cd %s; git config user.email t@example.com; git config user.name T; "
            "echo one > a.txt; git add a.txt; git commit -q -m first",
            repo, repo));
    char extra[4400];
    snprintf(extra, sizeof extra,
             "\"executor\":{\"type\":\"docker\",\"images\":[{\"image\":\"" TP_IMAGE "\",\"user\":\"nobody\"}]},"
             "\"checkout\":{\"url\":\"file://%s\",\"revision\":null,\"branch\":\"main\"}",
             repo);
    char *s2 = ta_step(102,
                       "id -u; echo two >a.txt; cat a.txt; mkdir -p ~/cache && echo c >~/cache/f; "
                       "echo 'export FROM_BASH_ENV=1' >>\"$BASH_ENV\"; echo ok",
                       NULL);
    char *s3 = ta_step(103, "pwd", "\"working_directory\":\"sub/dir\"");
    char *steps = sp_xasprintf("{\"id\":101,\"type\":\"checkout\",\"name\":\"Checkout code\"},%s,%s", s2, s3);
    char *json = ta_task(NULL, extra, steps);
    ta_cap_t c;
    ta_cap_init(&c);
    agent__status_t st;
    T_OK(run_docker(t, &pm, json, &c, &st, NULL, 0));
    char *o2 = ta_output(&c, 102, -1), *o3 = ta_output(&c, 103, 0);
    if (st != AGENT__SUCCESS) t_fail(t, __FILE__, __LINE__, "step 102: %s", o2);
    T_EQ_U64(st, AGENT__SUCCESS);
    T_EQ_STR(o2, "65534\ntwo\nok");
    char want[4400];
    snprintf(want, sizeof want, "%s/home/project/sub/dir", t_path(t, "work/task-1"));
    T_EQ_STR(o3, want);
    T_EQ_U64(tp_containers(&pm, "task-1"), 0);
    T_ASSERT(access(t_path(t, "work/task-1"), F_OK) != 0);
    free(o2), free(o3);
    ta_cap_free(&c);
    free(json), free(steps), free(s2), free(s3);
    tp_stop(&pm);
}
