/* The read API (src/http/api_read.c) in-process: the state is built by
 * appending the events the engine would append (pipeline, workflow, job,
 * step and output events) straight to the log, so every document and
 * time is under the test's control; the server reads the views the
 * projector makes of them. Requests go over the admin socket (no engine:
 * the socket is the caller's credential) and over TCP for the 401s. */
#include "test.h"

#include "server.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <time.h>
#include <zstd.h>

/* A GET; the body parsed into r->json when it is JSON. */
static int req_ex(tsrv_t *s, const char *path, bool admin, tresp_t *r)
{
    int rc = tsrv_request(s, "GET", path, NULL, admin, r);
    r->json = json_loadb((const char *)r->body.p, r->body.n, 0, NULL);
    return rc;
}

/* GET over the admin socket. */
static int get(tsrv_t *s, const char *path, tresp_t *r) { return req_ex(s, path, true, r); }

static void resp_free(tresp_t *r)
{
    sp_buf_free(&r->body);
    json_decref(r->json);
    r->json = NULL;
}

#define BODY(r) ((const char *)(r).body.p)

static const char *jstr(const json_t *o, const char *path)
{
    /* "a.b.c": nested objects */
    char key[64];
    const json_t *v = o;
    while (v && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        snprintf(key, sizeof key, "%.*s", (int)n, path);
        v = json_object_get(v, key);
        path += n + (dot ? 1 : 0);
    }
    return json_is_string(v) ? json_string_value(v) : "";
}

static json_int_t jint(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

/* True when no key of o (top level) starts with '_'. */
static bool public_shape(const json_t *o)
{
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)o, k, v) {
        if (k[0] == '_') return false;
    }
    return true;
}

/* ---- building state: the events the engine would append ---- */

static uint64_t append_json(log_t *log, int type, json_t *body)
{
    sp_buf_t b = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, ingest_pack_write);
    ingest_pack_json(&pk, body);
    json_decref(body);
    log_entry_t e = {.type = type, .actor = "test", .body = sp_buf_slice(&b)};
    uint64_t seq = 0;
    int rc = log_append_wait(log, &e, 1, &seq);
    sp_buf_free(&b);
    return rc == 0 ? seq : 0;
}

/* A job.output chunk: lines "text" on stream 0 unless they start with
 * "!" (stderr). */
static uint64_t append_output(log_t *log, const char *job, int step, int index, int seq, const char *const *lines,
                              int n)
{
    sp_buf_t raw = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &raw, ingest_pack_write);
    msgpack_pack_array(&pk, (size_t)n);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        bool err = lines[i][0] == '!';
        const char *text = lines[i] + err;
        msgpack_pack_array(&pk, 3);
        msgpack_pack_uint64(&pk, (uint64_t)(10 * i));
        msgpack_pack_uint64(&pk, err);
        msgpack_pack_str(&pk, strlen(text));
        msgpack_pack_str_body(&pk, text, strlen(text));
        bytes += strlen(text);
    }
    size_t cap = ZSTD_compressBound(raw.n);
    uint8_t *z = malloc(cap);
    size_t zn = ZSTD_compress(z, cap, raw.p, raw.n, 1);
    sp_buf_t body = {0};
    msgpack_packer_init(&pk, &body, ingest_pack_write);
    msgpack_pack_map(&pk, 7);
    const char *keys[] = {"id", "step", "index", "seq", "lines", "bytes", "data"};
    uint64_t vals[] = {0, (uint64_t)step, (uint64_t)index, (uint64_t)seq, (uint64_t)n, bytes};
    for (int i = 0; i < 7; i++) {
        msgpack_pack_str(&pk, strlen(keys[i]));
        msgpack_pack_str_body(&pk, keys[i], strlen(keys[i]));
        if (i == 0) {
            msgpack_pack_str(&pk, strlen(job));
            msgpack_pack_str_body(&pk, job, strlen(job));
        } else if (i == 6) {
            msgpack_pack_bin(&pk, zn);
            msgpack_pack_bin_body(&pk, z, zn);
        } else {
            msgpack_pack_uint64(&pk, vals[i]);
        }
    }
    log_entry_t e = {.type = LOG_EV_JOB_OUTPUT, .actor = "test", .body = sp_buf_slice(&body)};
    uint64_t s = 0;
    int rc = log_append_wait(log, &e, 1, &s);
    free(z);
    sp_buf_free(&raw);
    sp_buf_free(&body);
    return rc == 0 ? s : 0;
}

#define PROJECT_ID "11111111-1111-4111-8111-111111111111"

static uint64_t add_project(log_t *log)
{
    return append_json(log, LOG_EV_PROJECT_ADDED,
                       json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", PROJECT_ID, "slug",
                                 "gh/acme/app", "repo", "app", "org", "acme", "org_slug", "gh/acme", "org_id",
                                 "22222222-2222-4222-8222-222222222222", "url", "file:///srv/git/app.git",
                                 "default_branch", "main", "webhook_secret", "sealed-secret"));
}

/* Pipeline number n (id "p-<n>") on branch, with its config fetched. */
static uint64_t add_pipeline(log_t *log, int n, const char *branch, bool fetched)
{
    char id[40];
    snprintf(id, sizeof id, "p-%04d", n);
    uint64_t seq = append_json(log, LOG_EV_PIPELINE_CREATED,
                               json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", id, "slug",
                                         "gh/acme/app", "number", n, "url", "file:///srv/git/app.git", "revision",
                                         "0123456789abcdef0123456789abcdef01234567", "subject", "a commit", "body", "",
                                         "branch", branch, "trigger_type", "api", "actor", "user:t1", "delivery", ""));
    if (fetched)
        seq = append_json(log, LOG_EV_PIPELINE_CONFIG_FETCHED,
                          json_pack("{s:s, s:s, s:s, s:s}", "id", id, "source", "version: 2.1\n", "compiled",
                                    "version: 2\n", "processed", "{}"));
    return seq;
}

/* Workflow "w-1" of pipeline p-0001 with a build job (number 1, id
 * "j-build"), an approval job ("j-hold") and a job after it (number 2,
 * "j-deploy"). */
static uint64_t add_workflow(log_t *log)
{
    return append_json(
        log, LOG_EV_WORKFLOW_CREATED,
        json_pack("{s:s, s:s, s:s, s:s, s:i, s:[{s:s, s:s, s:s, s:i, s:[], s:s, s:{s:s, s:s}, s:i, s:[s]}, "
                  "{s:s, s:s, s:s, s:[s], s:s}, {s:s, s:s, s:s, s:i, s:[s], s:s, s:{s:s, s:s}, s:i, s:[]}]}",
                  "id", "w-1", "pipeline_id", "p-0001", "name", "main", "started_by", "system", "index", 0, "jobs",
                  "id", "j-build", "name", "build", "type", "build", "number", 1, "requires", "job", "build",
                  "executor", "type", "docker", "resource_class", "large", "parallelism", 1, "contexts", "org-global",
                  "id", "j-hold", "name", "hold", "type", "approval", "requires", "j-build", "job", "hold", "id",
                  "j-deploy", "name", "deploy", "type", "build", "number", 2, "requires", "j-hold", "job", "deploy",
                  "executor", "type", "machine", "resource_class", "medium", "parallelism", 1, "contexts"));
}

static uint64_t job_event(log_t *log, int type, const char *id)
{
    if (type == LOG_EV_JOB_STARTED)
        return append_json(log, type,
                           json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "task_id", "t-1", "lease_hash", "x",
                                     "agent_id", "a-1", "agent_name", "local"));
    return append_json(log, type, json_pack("{s:s}", "id", id));
}

static uint64_t step_started(log_t *log, const char *job, int step, const char *name, const char *bash)
{
    return append_json(log, LOG_EV_JOB_STEP_STARTED,
                       json_pack("{s:s, s:i, s:i, s:s, s:o, s:b}", "id", job, "step", step, "index", 0, "name", name,
                                 "bash_command", bash ? json_string(bash) : json_null(), "background", 0));
}

static uint64_t step_finished(log_t *log, const char *job, int step, const char *status, int code)
{
    return append_json(log, LOG_EV_JOB_STEP_FINISHED,
                       json_pack("{s:s, s:i, s:i, s:s, s:i}", "id", job, "step", step, "index", 0, "status", status,
                                 "exit_code", code));
}

static uint64_t job_finished(log_t *log, const char *id, const char *status)
{
    return append_json(log, LOG_EV_JOB_FINISHED, json_pack("{s:s, s:s}", "id", id, "status", status));
}

/* The state most tests start from: project, pipeline 1 with workflow
 * w-1, job 1 (j-build) running with steps 0 and 99 done and step 101
 * started. */
static int base_state(tsrv_t *s)
{
    add_project(s->log);
    add_pipeline(s->log, 1, "main", true);
    add_workflow(s->log);
    job_event(s->log, LOG_EV_JOB_QUEUED, "j-build");
    job_event(s->log, LOG_EV_JOB_STARTED, "j-build");
    step_started(s->log, "j-build", 0, "Spin up environment", NULL);
    const char *spin[] = {"Spool agent", "Creating task directory"};
    append_output(s->log, "j-build", 0, 0, 0, spin, 2);
    step_finished(s->log, "j-build", 0, "success", 0);
    step_started(s->log, "j-build", 99, "Preparing environment variables", NULL);
    step_finished(s->log, "j-build", 99, "success", 0);
    uint64_t seq = step_started(s->log, "j-build", 101, "Test", "#!/bin/bash -eo pipefail\nmake test");
    return seq ? proj_wait(s->proj, seq, 20000000000LL) : SP_EIO;
}

static int views_wait(tsrv_t *s, uint64_t seq) { return seq ? proj_wait(s->proj, seq, 20000000000LL) : SP_EIO; }

/* ---- tests ---- */

TEST(api_pipeline_workflow_job_shapes)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    T_OK(base_state(&s));
    tresp_t r;

    T_OK(get(&s, "/api/v2/pipeline/p-0001", &r));
    T_EQ_U64(r.status, 200);
    T_ASSERT(strstr(r.ctype, "application/json") != NULL);
    T_EQ_STR(jstr(r.json, "id"), "p-0001");
    T_EQ_U64(jint(r.json, "number"), 1);
    T_EQ_STR(jstr(r.json, "project_slug"), "gh/acme/app");
    T_EQ_STR(jstr(r.json, "state"), "created");
    T_EQ_STR(jstr(r.json, "vcs.branch"), "main");
    T_EQ_STR(jstr(r.json, "vcs.commit.subject"), "a commit");
    T_EQ_STR(jstr(r.json, "trigger.type"), "api");
    T_ASSERT(json_is_array(json_object_get(r.json, "errors")));
    T_ASSERT(public_shape(r.json));
    resp_free(&r);

    /* by number, with vcs "github" as well as "gh" */
    T_OK(get(&s, "/api/v2/project/github/acme/app/pipeline/1", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_STR(jstr(r.json, "id"), "p-0001");
    resp_free(&r);

    T_OK(get(&s, "/api/v2/pipeline/p-0001/config", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_STR(jstr(r.json, "source"), "version: 2.1\n");
    T_EQ_STR(jstr(r.json, "compiled"), "version: 2\n");
    T_ASSERT(json_is_string(json_object_get(r.json, "setup-config")));
    T_ASSERT(json_is_string(json_object_get(r.json, "compiled-setup-config")));
    T_ASSERT(json_object_get(r.json, "processed") == NULL);
    resp_free(&r);

    T_OK(get(&s, "/api/v2/pipeline/p-0001/workflow", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_U64(json_array_size(json_object_get(r.json, "items")), 1);
    T_ASSERT(json_is_null(json_object_get(r.json, "next_page_token")));
    json_t *wf = json_array_get(json_object_get(r.json, "items"), 0);
    T_EQ_STR(jstr(wf, "id"), "w-1");
    T_EQ_STR(jstr(wf, "name"), "main");
    T_EQ_STR(jstr(wf, "pipeline_id"), "p-0001");
    T_EQ_STR(jstr(wf, "status"), "running");
    T_ASSERT(json_is_null(json_object_get(wf, "stopped_at")));
    T_ASSERT(public_shape(wf));
    resp_free(&r);

    T_OK(get(&s, "/api/v2/workflow/w-1", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_U64(jint(r.json, "pipeline_number"), 1);
    T_ASSERT(public_shape(r.json));
    resp_free(&r);

    T_OK(get(&s, "/api/v2/workflow/w-1/job", &r));
    T_EQ_U64(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    T_EQ_U64(json_array_size(items), 3);
    json_t *b = json_array_get(items, 0), *hold = json_array_get(items, 1), *dep = json_array_get(items, 2);
    T_EQ_STR(jstr(b, "name"), "build");
    T_EQ_STR(jstr(b, "type"), "build");
    T_EQ_STR(jstr(b, "status"), "running");
    T_EQ_U64(jint(b, "job_number"), 1);
    T_EQ_STR(jstr(b, "project_slug"), "gh/acme/app");
    T_ASSERT(json_is_string(json_object_get(b, "started_at")));
    T_ASSERT(json_is_null(json_object_get(b, "stopped_at")));
    T_EQ_U64(json_array_size(json_object_get(b, "dependencies")), 0);
    T_ASSERT(json_object_get(b, "approval_request_id") == NULL);
    T_EQ_STR(jstr(hold, "type"), "approval");
    T_EQ_STR(jstr(hold, "status"), "blocked");
    T_EQ_STR(jstr(hold, "approval_request_id"), "j-hold");
    T_ASSERT(json_object_get(hold, "job_number") == NULL);
    T_ASSERT(json_is_null(json_object_get(hold, "started_at")));
    T_EQ_STR(json_string_value(json_array_get(json_object_get(dep, "dependencies"), 0)), "j-hold");
    for (size_t i = 0; i < 3; i++) T_ASSERT(public_shape(json_array_get(items, i)));
    resp_free(&r);

    T_OK(get(&s, "/api/v2/project/gh/acme/app/job/1", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_U64(jint(r.json, "number"), 1);
    T_EQ_STR(jstr(r.json, "name"), "build");
    T_EQ_STR(jstr(r.json, "status"), "running");
    T_ASSERT(strstr(jstr(r.json, "web_url"), "/ui/gh/acme/app/jobs/1") != NULL);
    T_EQ_STR(jstr(r.json, "project.id"), PROJECT_ID);
    T_EQ_STR(jstr(r.json, "project.slug"), "gh/acme/app");
    T_EQ_STR(jstr(r.json, "project.name"), "app");
    T_EQ_STR(jstr(r.json, "project.external_url"), "file:///srv/git/app.git");
    T_EQ_STR(jstr(r.json, "organization.name"), "acme");
    T_EQ_STR(jstr(r.json, "pipeline.id"), "p-0001");
    T_EQ_STR(jstr(r.json, "latest_workflow.id"), "w-1");
    T_EQ_STR(jstr(r.json, "latest_workflow.name"), "main");
    T_EQ_U64(jint(r.json, "parallelism"), 1);
    T_EQ_STR(jstr(json_array_get(json_object_get(r.json, "parallel_runs"), 0), "status"), "running");
    T_EQ_STR(jstr(r.json, "executor.resource_class"), "large");
    T_EQ_STR(jstr(r.json, "executor.type"), "docker");
    T_EQ_STR(jstr(json_array_get(json_object_get(r.json, "contexts"), 0), "name"), "org-global");
    T_EQ_U64(json_array_size(json_object_get(r.json, "messages")), 0);
    T_ASSERT(json_is_string(json_object_get(r.json, "created_at")));
    T_ASSERT(json_is_string(json_object_get(r.json, "queued_at")));
    T_ASSERT(json_is_string(json_object_get(r.json, "started_at")));
    T_ASSERT(json_is_null(json_object_get(r.json, "stopped_at")));
    T_ASSERT(public_shape(r.json));
    resp_free(&r);

    /* the job ends: stopped_at, duration, workflow status */
    T_OK(views_wait(&s, job_finished(s.log, "j-build", "failed")));
    T_OK(get(&s, "/api/v2/project/gh/acme/app/job/1", &r));
    T_EQ_STR(jstr(r.json, "status"), "failed");
    T_ASSERT(json_is_string(json_object_get(r.json, "stopped_at")));
    T_ASSERT(json_is_integer(json_object_get(r.json, "duration")));
    resp_free(&r);
    T_OK(get(&s, "/api/v2/workflow/w-1", &r));
    T_EQ_STR(jstr(r.json, "status"), "failing");
    resp_free(&r);

    /* the project */
    T_OK(get(&s, "/api/v2/project/gh/acme/app", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_STR(jstr(r.json, "slug"), "gh/acme/app");
    T_EQ_STR(jstr(r.json, "vcs_info.default_branch"), "main");
    T_ASSERT(public_shape(r.json));
    T_ASSERT(strstr(BODY(r), "sealed-secret") == NULL);
    resp_free(&r);
    T_OK(get(&s, "/api/v1.1/projects", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_U64(json_array_size(r.json), 1);
    T_EQ_STR(jstr(json_array_get(r.json, 0), "username"), "acme");
    T_EQ_STR(jstr(json_array_get(r.json, 0), "reponame"), "app");
    T_ASSERT(strstr(BODY(r), "sealed-secret") == NULL);
    resp_free(&r);
    tsrv_stop(&s);
    T_EQ_U64(s.close_rc, 0);
}

TEST(api_unknown_ids_are_404_and_tokens_are_required)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    T_OK(base_state(&s));
    const char *missing[] = {
        "/api/v2/pipeline/nope",
        "/api/v2/pipeline/nope/config",
        "/api/v2/pipeline/nope/workflow",
        "/api/v2/workflow/nope",
        "/api/v2/workflow/nope/job",
        "/api/v2/project/gh/acme/app/pipeline/99",
        "/api/v2/project/gh/acme/nope/pipeline",
        "/api/v2/project/bb/acme/app/pipeline",
        "/api/v2/project/gh/acme/app/job/99",
        "/api/v2/project/gh/acme/app/job/abc",
        "/api/v2/project/gh/acme/app/job/99/output/stream",
        "/api/v2/project/gh/acme/nope",
        "/api/v1.1/project/gh/acme/app/99",
        "/api/v1.1/project/gh/acme/app/1/output/55/0",
        "/api/private/output/raw/gh/acme/app/1/output/0/55",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(missing); i++) {
        tresp_t r;
        T_OK(get(&s, missing[i], &r));
        if (r.status != 404) t_fail(t, __FILE__, __LINE__, "%s: %ld %s", missing[i], r.status, BODY(r));
        T_EQ_U64(r.status, 404);
        T_ASSERT(json_is_string(json_object_get(r.json, "message")));
        resp_free(&r);
    }
    /* a pipeline whose config is not fetched has no config */
    T_OK(views_wait(&s, add_pipeline(s.log, 2, "main", false)));
    tresp_t r;
    T_OK(get(&s, "/api/v2/pipeline/p-0002/config", &r));
    T_EQ_U64(r.status, 404);
    T_ASSERT(strstr(jstr(r.json, "message"), "no config") != NULL);
    resp_free(&r);
    T_OK(get(&s, "/api/v2/project/gh/acme/app/pipeline/0", &r));
    T_EQ_U64(r.status, 400);
    resp_free(&r);
    /* over TCP without a token */
    const char *guarded[] = {"/api/v2/pipeline/p-0001", "/api/v2/project/gh/acme/app/pipeline",
                             "/api/v1.1/project/gh/acme/app/1", "/api/v2/project/gh/acme/app/job/1/output/stream",
                             "/api/v1.1/projects"};
    for (size_t i = 0; i < SP_ARRAY_LEN(guarded); i++) {
        T_OK(req_ex(&s, guarded[i], false, &r));
        T_EQ_U64(r.status, 401);
        T_ASSERT(json_is_string(json_object_get(r.json, "message")));
        resp_free(&r);
    }
    tsrv_stop(&s);
}

TEST(api_pipelines_are_paged_newest_first_and_filtered_by_branch)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    add_project(s.log);
    uint64_t seq = 0;
    for (int n = 1; n <= 45; n++) seq = add_pipeline(s.log, n, n % 3 == 0 ? "feature/x y" : "main", true);
    T_OK(views_wait(&s, seq));
    int seen[46] = {0}, expect = 45, pages = 0;
    char path[512] = "/api/v2/project/gh/acme/app/pipeline";
    for (;;) {
        tresp_t r;
        T_OK(get(&s, path, &r));
        T_EQ_U64(r.status, 200);
        json_t *items = json_object_get(r.json, "items");
        pages++;
        T_ASSERT(json_array_size(items) <= 20);
        size_t i;
        json_t *p;
        json_array_foreach (items, i, p) {
            int n = (int)jint(p, "number");
            T_EQ_U64(n, expect); /* newest first, no gap, no repeat */
            seen[n]++;
            expect--;
            T_ASSERT(public_shape(p));
        }
        const char *tok = json_string_value(json_object_get(r.json, "next_page_token"));
        if (tok == NULL) {
            resp_free(&r);
            break;
        }
        snprintf(path, sizeof path, "/api/v2/project/gh/acme/app/pipeline?page-token=%s", tok);
        resp_free(&r);
    }
    T_EQ_U64(pages, 3);
    T_EQ_U64(expect, 0);

    /* the branch filter (percent-encoded, '+' for a space) */
    tresp_t r;
    T_OK(get(&s, "/api/v2/project/gh/acme/app/pipeline?branch=feature%2Fx+y", &r));
    T_EQ_U64(r.status, 200);
    json_t *items = json_object_get(r.json, "items");
    T_EQ_U64(json_array_size(items), 15);
    T_EQ_U64(jint(json_array_get(items, 0), "number"), 45);
    T_EQ_U64(jint(json_array_get(items, 14), "number"), 3);
    T_ASSERT(json_is_null(json_object_get(r.json, "next_page_token")));
    resp_free(&r);
    T_OK(get(&s, "/api/v2/project/gh/acme/app/pipeline?branch=main", &r));
    items = json_object_get(r.json, "items");
    T_EQ_U64(json_array_size(items), 20);
    const char *tok = json_string_value(json_object_get(r.json, "next_page_token"));
    T_ASSERT(tok != NULL);
    char p2[512];
    snprintf(p2, sizeof p2, "/api/v2/project/gh/acme/app/pipeline?branch=main&page-token=%s", tok);
    resp_free(&r);
    T_OK(get(&s, p2, &r));
    T_EQ_U64(json_array_size(json_object_get(r.json, "items")), 10);
    T_EQ_U64(jint(json_array_get(json_object_get(r.json, "items"), 9), "number"), 1);
    resp_free(&r);

    /* bad tokens: garbage, another list's token, too long */
    const char *bad[] = {"/api/v2/project/gh/acme/app/pipeline?page-token=garbage!",
                         "/api/v2/project/gh/acme/app/pipeline?page-token=dzE6MjA", /* "w1:20" */
                         "/api/v2/project/gh/acme/app/pipeline?page-token=cDE6MjA%3D",
                         "/api/v2/pipeline/p-0001/workflow?page-token=cDE6MjA", /* "p1:20" */
                         ("/api/v2/project/gh/acme/app/pipeline?page-token="
                          "cDE6MjAxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        T_OK(get(&s, bad[i], &r));
        if (r.status != 400 || !strstr(BODY(r), "page-token"))
            t_fail(t, __FILE__, __LINE__, "%s: %ld %s", bad[i], r.status, BODY(r));
        T_EQ_U64(r.status, 400);
        T_ASSERT(strstr(jstr(r.json, "message"), "page-token") != NULL);
        resp_free(&r);
    }
    tsrv_stop(&s);
}

TEST(api_v11_build_steps_and_output)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    T_OK(base_state(&s));
    const char *c0[] = {"\x1b[32mok\x1b[0m 1", "ok 2", "!warning: slow"};
    const char *c1[] = {"ok 3", "!error: boom"};
    append_output(s.log, "j-build", 101, 0, 0, c0, 3);
    T_OK(views_wait(&s, append_output(s.log, "j-build", 101, 0, 1, c1, 2)));

    /* running: step 101 has no output_url yet */
    tresp_t r;
    T_OK(get(&s, "/api/v1.1/project/gh/acme/app/1", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_STR(jstr(r.json, "lifecycle"), "running");
    T_EQ_STR(jstr(r.json, "status"), "running");
    T_ASSERT(json_is_null(json_object_get(r.json, "outcome")));
    json_t *steps = json_object_get(r.json, "steps");
    T_EQ_U64(json_array_size(steps), 3);
    json_t *a101 = json_array_get(json_object_get(json_array_get(steps, 2), "actions"), 0);
    T_EQ_U64(jint(a101, "step"), 101);
    T_EQ_STR(jstr(a101, "status"), "running");
    T_ASSERT(json_object_get(a101, "output_url") == NULL);
    resp_free(&r);

    step_finished(s.log, "j-build", 101, "failed", 2);
    T_OK(views_wait(&s, job_finished(s.log, "j-build", "failed")));
    T_OK(get(&s, "/api/v1.1/project/gh/acme/app/1", &r));
    T_EQ_U64(r.status, 200);
    json_t *b = r.json;
    T_EQ_U64(jint(b, "build_num"), 1);
    T_ASSERT(strstr(jstr(b, "build_url"), "/gh/acme/app/1") != NULL);
    T_EQ_STR(jstr(b, "vcs_url"), "file:///srv/git/app.git");
    T_EQ_STR(jstr(b, "vcs_type"), "github");
    T_EQ_STR(jstr(b, "username"), "acme");
    T_EQ_STR(jstr(b, "reponame"), "app");
    T_EQ_STR(jstr(b, "branch"), "main");
    T_EQ_STR(jstr(b, "vcs_revision"), "0123456789abcdef0123456789abcdef01234567");
    T_ASSERT(json_is_null(json_object_get(b, "vcs_tag")));
    T_EQ_STR(jstr(b, "subject"), "a commit");
    T_EQ_STR(jstr(b, "why"), "api");
    T_EQ_STR(jstr(b, "lifecycle"), "finished");
    T_EQ_STR(jstr(b, "outcome"), "failed");
    T_EQ_STR(jstr(b, "status"), "failed");
    T_ASSERT(json_is_true(json_object_get(b, "failed")));
    T_ASSERT(json_is_false(json_object_get(b, "canceled")));
    T_ASSERT(json_is_false(json_object_get(b, "timedout")));
    T_ASSERT(json_is_false(json_object_get(b, "infrastructure_fail")));
    T_EQ_U64(jint(b, "parallel"), 1);
    T_EQ_STR(jstr(b, "platform"), "2.0");
    T_ASSERT(json_is_string(json_object_get(b, "queued_at")));
    T_ASSERT(json_is_string(json_object_get(b, "start_time")));
    T_ASSERT(json_is_string(json_object_get(b, "stop_time")));
    T_ASSERT(json_is_integer(json_object_get(b, "build_time_millis")));
    T_EQ_STR(jstr(b, "workflows.workflow_id"), "w-1");
    T_EQ_STR(jstr(b, "workflows.workflow_name"), "main");
    T_EQ_STR(jstr(b, "workflows.job_id"), "j-build");
    T_EQ_STR(jstr(b, "workflows.job_name"), "build");
    T_ASSERT(json_is_array(json_object_get(json_object_get(b, "workflows"), "upstream_job_ids")));
    T_ASSERT(json_is_array(json_object_get(b, "messages")));
    steps = json_object_get(b, "steps");
    T_EQ_U64(json_array_size(steps), 3);
    int ids[] = {0, 99, 101};
    const char *names[] = {"Spin up environment", "Preparing environment variables", "Test"};
    for (int i = 0; i < 3; i++) {
        json_t *st = json_array_get(steps, (size_t)i), *a = json_array_get(json_object_get(st, "actions"), 0);
        T_EQ_STR(jstr(st, "name"), names[i]);
        T_EQ_U64(json_array_size(json_object_get(st, "actions")), 1);
        T_EQ_U64(jint(a, "step"), ids[i]);
        T_EQ_U64(jint(a, "index"), 0);
        T_EQ_STR(jstr(a, "name"), names[i]);
        T_EQ_STR(jstr(a, "type"), "test");
        T_ASSERT(json_is_false(json_object_get(a, "truncated")));
        T_ASSERT(json_is_false(json_object_get(a, "parallel")));
        T_ASSERT(json_is_false(json_object_get(a, "background")));
        T_ASSERT(json_is_false(json_object_get(a, "insignificant")));
        T_ASSERT(json_is_string(json_object_get(a, "allocation_id")));
        T_ASSERT(json_is_string(json_object_get(a, "start_time")));
        T_ASSERT(json_is_string(json_object_get(a, "end_time")));
        T_ASSERT(json_is_integer(json_object_get(a, "run_time_millis")));
        char want[128];
        snprintf(want, sizeof want, "/api/v1.1/project/gh/acme/app/1/output/%d/0", ids[i]);
        T_ASSERT(strstr(jstr(a, "output_url"), want) != NULL);
        T_ASSERT(json_is_boolean(json_object_get(a, "has_output")));
    }
    json_t *a = json_array_get(json_object_get(json_array_get(steps, 2), "actions"), 0);
    T_EQ_STR(jstr(a, "status"), "failed");
    T_EQ_U64(jint(a, "exit_code"), 2);
    T_ASSERT(json_is_true(json_object_get(a, "failed")));
    T_ASSERT(json_is_true(json_object_get(a, "has_output")));
    T_EQ_STR(jstr(a, "bash_command"), "#!/bin/bash -eo pipefail\nmake test");
    a = json_array_get(json_object_get(json_array_get(steps, 1), "actions"), 0);
    T_ASSERT(json_is_false(json_object_get(a, "has_output")));
    T_ASSERT(json_is_null(json_object_get(a, "bash_command")));
    resp_free(&r);

    /* the output: every chunk, in order, runs of one stream together */
    T_OK(get(&s, "/api/v1.1/project/gh/acme/app/1/output/101/0", &r));
    T_EQ_U64(r.status, 200);
    T_ASSERT(json_is_array(r.json));
    T_EQ_U64(json_array_size(r.json), 4);
    const char *types[] = {"out", "err", "out", "err"};
    const char *msgs[] = {"\x1b[32mok\x1b[0m 1\nok 2\n", "warning: slow\n", "ok 3\n", "error: boom\n"};
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(r.json, i);
        T_EQ_STR(jstr(e, "type"), types[i]);
        T_EQ_STR(jstr(e, "message"), msgs[i]);
        T_ASSERT(json_is_string(json_object_get(e, "time")));
    }
    resp_free(&r);
    T_OK(get(&s, "/api/v1.1/project/gh/acme/app/1/output/99/0", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_STR(BODY(r), "[]");
    resp_free(&r);

    /* the raw forms: stdout, stderr, 204 when empty */
    T_OK(get(&s, "/api/private/output/raw/gh/acme/app/1/output/0/101", &r));
    T_EQ_U64(r.status, 200);
    T_ASSERT(strstr(r.ctype, "application/octet-stream") != NULL);
    T_EQ_STR(BODY(r), "\x1b[32mok\x1b[0m 1\nok 2\nok 3\n");
    resp_free(&r);
    T_OK(get(&s, "/api/private/output/raw/gh/acme/app/1/error/0/101", &r));
    T_EQ_U64(r.status, 200);
    T_EQ_STR(BODY(r), "warning: slow\nerror: boom\n");
    resp_free(&r);
    T_OK(get(&s, "/api/private/output/raw/gh/acme/app/1/error/0/0", &r));
    T_EQ_U64(r.status, 204);
    resp_free(&r);
    tsrv_stop(&s);
    T_EQ_U64(s.close_rc, 0);
}

/* ---- the live stream ---- */

typedef struct {
    tsrv_t *s;
    char path[256];
    pthread_mutex_t mu;
    sp_buf_t text;
    size_t stop_after; /* >0: the client hangs up after this many bytes */
    bool done;
    long status;
    CURLcode cc;
} stream_t;

static size_t on_stream(char *p, size_t size, size_t n, void *arg)
{
    stream_t *st = arg;
    pthread_mutex_lock(&st->mu);
    sp_buf_add(&st->text, p, size * n);
    bool hang_up = st->stop_after && st->text.n >= st->stop_after;
    pthread_mutex_unlock(&st->mu);
    return hang_up ? 0 : size * n;
}

static void *stream_main(void *arg)
{
    stream_t *st = arg;
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", http_port(st->s->http), st->path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, st->s->sock);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, st);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    st->cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st->status);
    curl_easy_cleanup(c);
    pthread_mutex_lock(&st->mu);
    st->done = true;
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

static pthread_t stream_open(stream_t *st, tsrv_t *s, const char *path, size_t stop_after)
{
    memset(st, 0, sizeof *st);
    st->s = s;
    st->stop_after = stop_after;
    snprintf(st->path, sizeof st->path, "%s", path);
    pthread_mutex_init(&st->mu, NULL);
    pthread_t th;
    pthread_create(&th, NULL, stream_main, st);
    return th;
}

/* Waits (20 s at most) until the stream's text holds needle, or until
 * the stream ended when needle is NULL. */
static bool stream_wait(stream_t *st, const char *needle)
{
    int64_t deadline = sp_mono_ns() + 20000000000LL;
    for (;;) {
        pthread_mutex_lock(&st->mu);
        sp_buf_add(&st->text, "", 1);
        st->text.n--;
        bool ok = needle ? strstr((const char *)st->text.p, needle) != NULL : st->done;
        pthread_mutex_unlock(&st->mu);
        if (ok) return true;
        if (sp_mono_ns() > deadline) return false;
        struct timespec ts = {0, 2000000}; /* a poll interval, not a wait for the event */
        nanosleep(&ts, NULL);
    }
}

static json_t *parse_sse(const char *text)
{
    json_t *out = json_array();
    const char *p = text;
    for (;;) {
        const char *end = strstr(p, "\n\n");
        if (end == NULL) break;
        char name[32] = "message";
        json_t *data = NULL;
        for (const char *l = p; l < end;) {
            const char *nl = memchr(l, '\n', (size_t)(end - l));
            const char *le = nl ? nl : end;
            if (strncmp(l, "event: ", 7) == 0) snprintf(name, sizeof name, "%.*s", (int)(le - l - 7), l + 7);
            if (strncmp(l, "data: ", 6) == 0) data = json_loadb(l + 6, (size_t)(le - l - 6), 0, NULL);
            l = nl ? nl + 1 : end;
        }
        if (data) json_array_append_new(out, json_pack("{s:s, s:o}", "event", name, "data", data));
        p = end + 2;
    }
    return out;
}

/* Every output line of step (index 0) in the order received, as one
 * string of "type:message" pieces. */
static void step_text(json_t *events, int step, sp_buf_t *out)
{
    size_t i;
    json_t *e;
    json_array_foreach (events, i, e) {
        if (strcmp(jstr(e, "event"), "output") != 0) continue;
        json_t *d = json_object_get(e, "data");
        if (jint(d, "step") != step) continue;
        size_t k;
        json_t *l;
        json_array_foreach (json_object_get(d, "lines"), k, l) sp_buf_addstr(out, jstr(l, "message"));
    }
    sp_buf_add(out, "", 1);
    out->n--;
}

TEST(api_stream_joined_mid_job_gets_every_line_once_then_end)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    T_OK(base_state(&s));
    const char *c0[] = {"line 1", "line 2"};
    T_OK(views_wait(&s, append_output(s.log, "j-build", 101, 0, 0, c0, 2)));

    stream_t st;
    pthread_t th = stream_open(&st, &s, "/api/v2/project/gh/acme/app/job/1/output/stream", 0);
    T_ASSERT(stream_wait(&st, "line 2"));
    const char *c1[] = {"line 3"}, *c2[] = {"!line 4", "line 5"};
    append_output(s.log, "j-build", 101, 0, 1, c1, 1);
    T_ASSERT(stream_wait(&st, "line 3"));
    append_output(s.log, "j-build", 101, 0, 2, c2, 2);
    step_finished(s.log, "j-build", 101, "success", 0);
    step_started(s.log, "j-build", 102, "Deploy", "#!/bin/bash -eo pipefail\ndeploy");
    const char *c3[] = {"deployed"};
    append_output(s.log, "j-build", 102, 0, 0, c3, 1);
    step_finished(s.log, "j-build", 102, "success", 0);
    job_finished(s.log, "j-build", "success");
    T_ASSERT(stream_wait(&st, NULL));
    pthread_join(th, NULL);
    T_EQ_U64(st.cc, CURLE_OK);
    T_EQ_U64(st.status, 200);

    json_t *events = parse_sse((const char *)st.text.p);
    sp_buf_t out = {0};
    step_text(events, 101, &out);
    T_EQ_STR((const char *)out.p, "line 1\nline 2\nline 3\nline 4\nline 5\n");
    out.n = 0;
    step_text(events, 0, &out);
    T_EQ_STR((const char *)out.p, "Spool agent\nCreating task directory\n");
    out.n = 0;
    step_text(events, 102, &out);
    T_EQ_STR((const char *)out.p, "deployed\n");
    sp_buf_free(&out);
    /* the order of events: each step announced before its output, its
     * final status after it; end last, once */
    json_t *last = json_array_get(events, json_array_size(events) - 1);
    T_EQ_STR(jstr(last, "event"), "end");
    T_EQ_STR(jstr(json_object_get(last, "data"), "status"), "success");
    int ends = 0, last_step = -1;
    bool step101_done = false;
    size_t i;
    json_t *e;
    json_array_foreach (events, i, e) {
        const char *name = jstr(e, "event");
        json_t *d = json_object_get(e, "data");
        ends += strcmp(name, "end") == 0;
        if (strcmp(name, "step") == 0) {
            T_ASSERT(public_shape(d));
            T_ASSERT(jint(d, "step") >= last_step);
            last_step = (int)jint(d, "step");
            if (jint(d, "step") == 101 && strcmp(jstr(d, "status"), "success") == 0) step101_done = true;
        }
        if (strcmp(name, "output") == 0) {
            T_ASSERT(jint(d, "step") == last_step); /* announced first */
            if (jint(d, "step") == 101) T_ASSERT(!step101_done);
        }
    }
    T_EQ_U64(ends, 1);
    T_ASSERT(step101_done);
    json_decref(events);
    sp_buf_free(&st.text);
    pthread_mutex_destroy(&st.mu);
    tsrv_stop(&s);
    T_EQ_U64(s.close_rc, 0);
}

TEST(api_stream_of_a_finished_job_with_much_output)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    T_OK(base_state(&s));
    /* 12 chunks of ~100 KB: more than one send's budget */
    enum { CHUNKS = 12, LINES = 1000 };
    static char bufs[LINES][128];
    const char *lines[LINES];
    for (int c = 0; c < CHUNKS; c++) {
        for (int l = 0; l < LINES; l++) {
            snprintf(bufs[l], sizeof bufs[l], "chunk %02d line %04d %s", c, l,
                     "................................................................................");
            lines[l] = bufs[l];
        }
        append_output(s.log, "j-build", 101, 0, c, lines, LINES);
    }
    step_finished(s.log, "j-build", 101, "success", 0);
    T_OK(views_wait(&s, job_finished(s.log, "j-build", "success")));
    stream_t st;
    pthread_t th = stream_open(&st, &s, "/api/v2/project/gh/acme/app/job/1/output/stream", 0);
    T_ASSERT(stream_wait(&st, NULL));
    pthread_join(th, NULL);
    T_EQ_U64(st.cc, CURLE_OK);
    json_t *events = parse_sse((const char *)st.text.p);
    sp_buf_t out = {0};
    step_text(events, 101, &out);
    sp_buf_t want = {0};
    for (int c = 0; c < CHUNKS; c++)
        for (int l = 0; l < LINES; l++)
            sp_buf_printf(&want, "chunk %02d line %04d %s\n", c, l,
                          "................................................................................");
    sp_buf_add(&want, "", 1);
    T_ASSERT(out.n == want.n - 1 && memcmp(out.p, want.p, out.n) == 0);
    T_EQ_STR(jstr(json_array_get(events, json_array_size(events) - 1), "event"), "end");
    sp_buf_free(&out);
    sp_buf_free(&want);
    json_decref(events);
    sp_buf_free(&st.text);
    pthread_mutex_destroy(&st.mu);
    tsrv_stop(&s);
    T_EQ_U64(s.close_rc, 0);
}

TEST(api_stream_client_gone_and_server_drain)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    T_OK(base_state(&s));
    /* a client that hangs up after the first bytes */
    stream_t gone;
    pthread_t th1 = stream_open(&gone, &s, "/api/v2/project/gh/acme/app/job/1/output/stream", 1);
    T_ASSERT(stream_wait(&gone, NULL));
    pthread_join(th1, NULL);
    T_EQ_U64(gone.cc, CURLE_WRITE_ERROR);
    /* views move on: the server must not write to the gone stream */
    const char *c0[] = {"after the client left"};
    T_OK(views_wait(&s, append_output(s.log, "j-build", 101, 0, 0, c0, 1)));
    /* a client still connected when the server drains: the stream closes
     * without `end` and every handle is released */
    stream_t open;
    pthread_t th2 = stream_open(&open, &s, "/api/v2/project/gh/acme/app/job/1/output/stream", 0);
    T_ASSERT(stream_wait(&open, "after the client left"));
    tsrv_stop(&s);
    T_ASSERT(stream_wait(&open, NULL));
    pthread_join(th2, NULL);
    T_ASSERT(strstr((const char *)open.text.p, "event: end") == NULL);
    T_EQ_U64(s.close_rc, 0);
    sp_buf_free(&gone.text);
    sp_buf_free(&open.text);
    pthread_mutex_destroy(&gone.mu);
    pthread_mutex_destroy(&open.mu);
}
