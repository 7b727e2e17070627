/* The engine end to end in-process: real log, real views, real config
 * compiler; agents are simulated by calling the engine as the HTTP layer
 * would. */
#include "test.h"

#include "config/config.h"
#include "ingest/engine.h"
#include "ingest/ingest.h"

#include <ftw.h>
#include <semaphore.h>
#include <stdio.h>
#include <zstd.h>

typedef struct {
    sem_t sem;
    int status;
    uint64_t seq;
    json_t *result;
} sync_t;

static void on_done(void *arg, int status, uint64_t seq, const json_t *result)
{
    sync_t *s = arg;
    s->status = status;
    s->seq = seq;
    s->result = result ? json_deep_copy(result) : NULL;
    sem_post(&s->sem);
}

typedef struct {
    log_t *log;
    proj_t *proj;
    secrets_t *sec;
    engine_t *e;
} env_t;

static int env_open(t_ctx_t *t, env_t *v, int64_t lease_ms)
{
    int rc = log_open(&v->log, t_path(t, "log"), NULL, NULL, 0);
    if (rc == 0) rc = proj_open(&v->proj, v->log, t_path(t, "views"), proj_all, proj_all_count, NULL, 0);
    if (rc == 0) rc = proj_catch_up(v->proj);
    if (rc == 0) rc = proj_start(v->proj);
    char err[300];
    if (rc == 0) rc = secrets_open(&v->sec, t_path(t, "keys"), err, sizeof err);
    engine_opts_t o = {.log = v->log, .proj = v->proj, .secrets = v->sec, .lease_timeout_ms = lease_ms};
    if (rc == 0) rc = engine_open(&v->e, &o, err, sizeof err);
    return rc;
}

static void env_close(env_t *v)
{
    engine_close(v->e);
    secrets_close(v->sec);
    proj_close(v->proj);
    log_close(v->log);
}

/* Waits for a command's completion and for the views to show it. */
static int wait_done(env_t *v, sync_t *s)
{
    sem_wait(&s->sem);
    if (s->status != 0 || s->seq == 0) return s->status;
    int rc = proj_wait(v->proj, s->seq, 10000000000LL);
    char msg[300];
    if (rc != 0 && proj_failed(v->proj, msg, sizeof msg)) printf("# projector: %s\n", msg);
    return rc;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) { return remove(path); }

/* Opens the views (rebuilding them from the log when they are gone),
 * catches up and dumps them. */
static int dump_views(t_ctx_t *t, sp_buf_t *out)
{
    log_t *log;
    proj_t *p;
    int rc = log_open(&log, t_path(t, "log"), NULL, NULL, 0);
    if (rc != 0) return rc;
    if ((rc = proj_open(&p, log, t_path(t, "views"), proj_all, proj_all_count, NULL, 0)) == 0) {
        if ((rc = proj_catch_up(p)) == 0) rc = proj_dump(p, out);
        proj_close(p);
    }
    log_close(log);
    return rc;
}

#define SYNC(s)                                                                                                        \
    sync_t s = {.status = -1};                                                                                         \
    sem_init(&s.sem, 0, 0)

static json_t *doc_of(env_t *v, int (*get)(log_kvtxn_t *, const char *, json_t **), const char *id)
{
    log_kvtxn_t *t;
    json_t *d = NULL;
    if (log_kv_begin(proj_kv(v->proj), false, &t) == 0) {
        get(t, id, &d);
        log_kvtxn_abort(t);
    }
    return d;
}

static const char *CONFIG = "version: 2.1\n"
                            "jobs:\n"
                            "  build:\n"
                            "    docker: [{image: cimg/base:stable}]\n"
                            "    environment: {GREETING: hello}\n"
                            "    steps:\n"
                            "      - checkout\n"
                            "      - run: echo $GREETING\n"
                            "  test:\n"
                            "    machine: true\n"
                            "    steps:\n"
                            "      - run: {name: Unit, command: make test, no_output_timeout: 2m}\n"
                            "  deploy:\n"
                            "    docker: [{image: cimg/base:stable}]\n"
                            "    steps: [{run: ./deploy}]\n"
                            "workflows:\n"
                            "  main:\n"
                            "    jobs:\n"
                            "      - build\n"
                            "      - test: {requires: [build]}\n"
                            "      - deploy: {requires: [test], filters: {branches: {only: release}}}\n";

typedef struct {
    sem_t sem;
    json_t *task;
} claim_t;

static void on_claim(void *arg, const json_t *task)
{
    claim_t *c = arg;
    c->task = task ? json_deep_copy(task) : NULL;
    sem_post(&c->sem);
}

static sp_buf_t chunk_of(const char *const *lines, int n)
{
    sp_buf_t mp = {0}, z = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &mp, ingest_pack_write);
    msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint32(&pk, (uint32_t)i * 10);
        msgpack_pack_uint32(&pk, (uint32_t)(i % 2));
        msgpack_pack_str(&pk, strlen(lines[i]));
        msgpack_pack_str_body(&pk, lines[i], strlen(lines[i]));
    }
    sp_buf_reserve(&z, ZSTD_compressBound(mp.n));
    z.n = ZSTD_compress(z.p, z.cap, mp.p, mp.n, 3);
    sp_buf_free(&mp);
    return z;
}

TEST(engine_pipeline_from_trigger_to_finished_workflow)
{
    env_t v = {0};
    T_OK(env_open(t, &v, 30000));
    char err[300];
    /* a project with a webhook secret, sealed in the log */
    SYNC(s1);
    T_OK(engine_project_add(v.e, "github/acme/app", "file:///nowhere/app.git", "s3cret", NULL, "main", "test", on_done,
                            &s1, err, sizeof err));
    T_OK(wait_done(&v, &s1));
    sp_buf_t secret = {0};
    T_OK(engine_project_secret(v.e, "gh/acme/app", &secret));
    T_EQ_STR((char *)secret.p, "s3cret");
    sp_buf_free(&secret);
    json_decref(s1.result);
    SYNC(s2);
    T_RC(SP_EEXIST,
         engine_project_add(v.e, "gh/acme/app", "file:///x", NULL, NULL, NULL, "test", on_done, &s2, err, sizeof err));
    T_RC(SP_EINVAL,
         engine_project_add(v.e, "gh/acme", "file:///x", NULL, NULL, NULL, "test", on_done, &s2, err, sizeof err));

    /* a push */
    engine_trigger_t tr = {.slug = "gh/acme/app",
                           .trigger_type = "webhook",
                           .actor = "alice",
                           .branch = "main",
                           .revision = "0123456789abcdef0123456789abcdef01234567",
                           .subject = "Fix",
                           .delivery = "d-1"};
    SYNC(s3);
    T_OK(engine_trigger(v.e, &tr, on_done, &s3, err, sizeof err));
    T_OK(wait_done(&v, &s3));
    char pid[64];
    snprintf(pid, sizeof pid, "%s", json_string_value(json_object_get(s3.result, "id")));
    T_EQ_U64(json_integer_value(json_object_get(s3.result, "number")), 1);
    json_decref(s3.result);
    /* a redelivery appends nothing */
    uint64_t head = log_head(v.log);
    SYNC(s4);
    T_OK(engine_trigger(v.e, &tr, on_done, &s4, err, sizeof err));
    T_OK(wait_done(&v, &s4));
    T_ASSERT(json_is_true(json_object_get(s4.result, "duplicate")));
    T_EQ_U64(log_head(v.log), head);
    json_decref(s4.result);

    /* the config arrives */
    config_result_t *cr;
    T_OK(config_compile(CONFIG, strlen(CONFIG), NULL, NULL, &cr));
    T_ASSERT(cr->valid);
    engine_config_t cfg = {.pipeline_id = pid, .source = CONFIG, .compiled_yaml = "x", .processed = cr->processed};
    SYNC(s5);
    T_OK(engine_config_result(v.e, &cfg, on_done, &s5, err, sizeof err));
    T_OK(wait_done(&v, &s5));
    T_RC(SP_EEXIST, engine_config_result(v.e, &cfg, on_done, &s5, err, sizeof err)); /* only once */
    config_result_free(cr);
    json_t *p = doc_of(&v, proj_pipeline_get, pid);
    T_EQ_STR(json_string_value(json_object_get(p, "state")), "created");
    json_decref(p);

    /* an agent takes build */
    SYNC(s6);
    json_t *info = json_pack("{s:s, s:i}", "name", "a1", "slots", 2);
    T_OK(engine_agent_register(v.e, info, on_done, &s6, err, sizeof err));
    json_decref(info);
    T_OK(wait_done(&v, &s6));
    char agent[64];
    snprintf(agent, sizeof agent, "%s", json_string_value(json_object_get(s6.result, "agent_id")));
    json_decref(s6.result);
    claim_t c = {0};
    sem_init(&c.sem, 0, 0);
    engine_claim_t *ch;
    T_OK(engine_claim(v.e, agent, on_claim, &c, &ch, err, sizeof err));
    sem_wait(&c.sem);
    T_ASSERT(c.task != NULL);
    T_EQ_STR(json_string_value(json_object_get(c.task, "job_name")), "build");
    json_t *env = json_object_get(c.task, "environment");
    T_EQ_STR(json_string_value(json_object_get(env, "GREETING")), "hello");
    T_EQ_STR(json_string_value(json_object_get(env, "CIRCLE_BRANCH")), "main");
    T_EQ_STR(json_string_value(json_object_get(env, "CIRCLE_PROJECT_REPONAME")), "app");
    T_EQ_STR(json_string_value(json_object_get(env, "CIRCLE_BUILD_NUM")), "1");
    json_t *steps = json_object_get(c.task, "steps");
    T_EQ_U64(json_array_size(steps), 2);
    T_EQ_STR(json_string_value(json_object_get(json_array_get(steps, 0), "type")), "checkout");
    T_EQ_U64(json_integer_value(json_object_get(json_array_get(steps, 1), "id")), 102);
    char task[64], lease[80], job[64];
    snprintf(task, sizeof task, "%s", json_string_value(json_object_get(c.task, "task_id")));
    snprintf(lease, sizeof lease, "%s", json_string_value(json_object_get(c.task, "lease")));
    snprintf(job, sizeof job, "%s", json_string_value(json_object_get(c.task, "job_id")));
    json_decref(c.task);

    json_t *evs = json_pack("[{s:s, s:i, s:i, s:s}, {s:s, s:i, s:i, s:s, s:i}]", "type", "step_started", "step", 102,
                            "index", 0, "name", "echo", "type", "step_finished", "step", 102, "index", 0, "status",
                            "success", "exit_code", 0);
    SYNC(s7);
    T_RC(SP_ECLOSED, engine_task_events(v.e, task, "wrong-lease", evs, on_done, &s7, err, sizeof err));
    T_OK(engine_task_events(v.e, task, lease, evs, on_done, &s7, err, sizeof err));
    T_OK(wait_done(&v, &s7));
    json_decref(s7.result);
    json_decref(evs);
    const char *lines[] = {"hello", "oops"};
    sp_buf_t z = chunk_of(lines, 2);
    SYNC(s8);
    T_OK(engine_task_output(v.e, task, lease, 102, 0, 0, sp_buf_slice(&z), on_done, &s8, err, sizeof err));
    T_OK(wait_done(&v, &s8));
    json_decref(s8.result);
    T_RC(SP_EINVAL, engine_task_output(v.e, task, lease, 102, 0, 5, sp_buf_slice(&z), on_done, &s8, err, sizeof err));
    T_RC(SP_EINVAL, engine_task_output(v.e, task, lease, 102, 0, 1, (sp_slice_t){(const uint8_t *)"junk", 4}, on_done,
                                       &s8, err, sizeof err));
    sp_buf_free(&z);
    SYNC(s9);
    T_OK(engine_task_finish(v.e, task, lease, "success", NULL, on_done, &s9, err, sizeof err));
    T_OK(wait_done(&v, &s9));
    json_decref(s9.result);
    T_RC(SP_ECLOSED, engine_task_finish(v.e, task, lease, "success", NULL, on_done, &s9, err, sizeof err));

    /* test runs next, fails; deploy was filtered out (branch main) */
    T_OK(engine_claim(v.e, agent, on_claim, &c, &ch, err, sizeof err));
    sem_wait(&c.sem);
    T_EQ_STR(json_string_value(json_object_get(c.task, "job_name")), "test");
    T_EQ_U64(
        json_integer_value(json_object_get(json_array_get(json_object_get(c.task, "steps"), 0), "no_output_timeout_s")),
        120);
    snprintf(task, sizeof task, "%s", json_string_value(json_object_get(c.task, "task_id")));
    snprintf(lease, sizeof lease, "%s", json_string_value(json_object_get(c.task, "lease")));
    json_decref(c.task);
    SYNC(s10);
    T_OK(engine_task_finish(v.e, task, lease, "failed", "exit 2", on_done, &s10, err, sizeof err));
    T_OK(wait_done(&v, &s10));
    json_decref(s10.result);

    json_t *j = doc_of(&v, proj_job_get, job);
    T_EQ_STR(json_string_value(json_object_get(j, "status")), "success");
    char wf[64];
    snprintf(wf, sizeof wf, "%s", json_string_value(json_object_get(j, "workflow_id")));
    json_decref(j);
    json_t *w = doc_of(&v, proj_workflow_get, wf);
    T_EQ_STR(json_string_value(json_object_get(w, "status")), "failed");
    T_EQ_U64(json_array_size(json_object_get(w, "_jobs")), 2);
    T_ASSERT(!json_is_null(json_object_get(w, "stopped_at")));
    json_decref(w);
    /* a claim with nothing queued waits, and can be withdrawn */
    c.task = (json_t *)1;
    T_OK(engine_claim(v.e, agent, on_claim, &c, &ch, err, sizeof err));
    T_ASSERT(engine_claim_cancel(v.e, ch));
    sem_wait(&c.sem);
    T_ASSERT(c.task == NULL);
    sem_destroy(&c.sem);
    env_close(&v);
    /* The views the projector built as the events came equal a rebuild
     * from the log in one batch whose document cache writes out and
     * forgets after every 2 documents. */
    sp_buf_t live = {0}, rebuilt = {0};
    T_OK(dump_views(t, &live));
    nftw(t_path(t, "views"), rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    proj_doc_cache_max = 2;
    T_OK(dump_views(t, &rebuilt));
    proj_doc_cache_max = 4096;
    T_ASSERT(live.n > 0 && live.n == rebuilt.n && memcmp(live.p, rebuilt.p, live.n) == 0);
    T_ASSERT(memmem(live.p, live.n, "pipelines.job", 13) != NULL);
    sp_buf_free(&live);
    sp_buf_free(&rebuilt);
}

TEST(engine_lost_agent_fails_the_job_and_restart_resumes_state)
{
    env_t v = {0};
    T_OK(env_open(t, &v, 50));
    char err[300];
    SYNC(s1);
    T_OK(engine_project_add(v.e, "gh/acme/app", "file:///x", NULL, NULL, NULL, "t", on_done, &s1, err, sizeof err));
    T_OK(wait_done(&v, &s1));
    json_decref(s1.result);
    engine_trigger_t tr = {.slug = "gh/acme/app",
                           .trigger_type = "api",
                           .branch = "main",
                           .revision = "0123456789abcdef0123456789abcdef01234567"};
    SYNC(s2);
    T_OK(engine_trigger(v.e, &tr, on_done, &s2, err, sizeof err));
    T_OK(wait_done(&v, &s2));
    char pid[64];
    snprintf(pid, sizeof pid, "%s", json_string_value(json_object_get(s2.result, "id")));
    json_decref(s2.result);
    /* restart before the config arrives: the pipeline is still pending */
    engine_close(v.e);
    engine_opts_t o = {.log = v.log, .proj = v.proj, .secrets = v.sec, .lease_timeout_ms = 50};
    T_OK(engine_open(&v.e, &o, err, sizeof err));
    config_result_t *cr;
    T_OK(config_compile(CONFIG, strlen(CONFIG), NULL, NULL, &cr));
    engine_config_t cfg = {.pipeline_id = pid, .source = CONFIG, .compiled_yaml = "x", .processed = cr->processed};
    SYNC(s3);
    T_OK(engine_config_result(v.e, &cfg, on_done, &s3, err, sizeof err));
    T_OK(wait_done(&v, &s3));
    config_result_free(cr);
    SYNC(s4);
    json_t *info = json_pack("{s:s, s:i}", "name", "a1", "slots", 1);
    T_OK(engine_agent_register(v.e, info, on_done, &s4, err, sizeof err));
    json_decref(info);
    T_OK(wait_done(&v, &s4));
    char agent[64];
    snprintf(agent, sizeof agent, "%s", json_string_value(json_object_get(s4.result, "agent_id")));
    json_decref(s4.result);
    claim_t c = {0};
    sem_init(&c.sem, 0, 0);
    engine_claim_t *ch;
    T_OK(engine_claim(v.e, agent, on_claim, &c, &ch, err, sizeof err));
    sem_wait(&c.sem);
    char job[64];
    snprintf(job, sizeof job, "%s", json_string_value(json_object_get(c.task, "job_id")));
    json_decref(c.task);
    /* restart with the job running: it is still running, with a lease */
    uint64_t before = log_head(v.log);
    T_OK(proj_wait(v.proj, before, 10000000000LL));
    engine_close(v.e);
    T_OK(engine_open(&v.e, &o, err, sizeof err));
    /* the agent never reports: the lease expires and the job fails */
    int64_t deadline = sp_mono_ns() + 10000000000LL;
    json_t *j = NULL;
    while (sp_mono_ns() < deadline) {
        engine_tick(v.e);
        T_OK(proj_wait(v.proj, log_head(v.log), 10000000000LL));
        json_decref(j);
        j = doc_of(&v, proj_job_get, job);
        if (strcmp(json_string_value(json_object_get(j, "status")), "running") != 0) break;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL); /* polling interval for the lease clock */
    }
    T_EQ_STR(json_string_value(json_object_get(j, "status")), "infrastructure_fail");
    T_ASSERT(strstr(json_string_value(json_object_get(j, "_message")), "stopped reporting") != NULL);
    json_decref(j);
    sem_destroy(&c.sem);
    env_close(&v);
}
