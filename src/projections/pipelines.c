/*
 * pipelines: pipelines, workflows, jobs, steps and the index of step
 * output, in CircleCI's API v2 shapes (plus fields of our own starting
 * with "_").
 *
 * Tables (keys; values are JSON documents unless said otherwise):
 *   pipelines.pipeline    id
 *   pipelines.config      pipeline id -> {source, compiled, processed}
 *   pipelines.by_project  slug NUL ~number(8, big-endian): newest first -> id
 *   pipelines.by_number   slug NUL number(8)                          -> id
 *   pipelines.by_delivery GitHub delivery id                          -> pipeline id
 *   pipelines.counters    slug -> {pipeline, job}: the last numbers given
 *   pipelines.workflow    id
 *   pipelines.wf_of       pipeline id, ordinal(4): creation order     -> workflow id
 *   pipelines.active      workflow id -> "" while the workflow runs
 *   pipelines.pending     pipeline id -> "" until its config is fetched (or fails)
 *   pipelines.job         id
 *   pipelines.job_number  slug NUL number(8)                          -> job id
 *   pipelines.step        job id, step(4), index(4)
 *   pipelines.output      job id, step(4), index(4), seq(4) -> log sequence(8) lines(4) bytes(4)
 *
 * Workflow status while it runs is derived here from its jobs (running,
 * failing, on_hold); its final status comes from workflow.finished.
 */
#include "doc.h"

#include <stdio.h>

#define ID_MAX 64

static void key_slug_num(sp_buf_t *k, const char *slug, uint64_t n)
{
    uint8_t b[8];
    sp_be64_put(b, n);
    sp_buf_add(k, slug, strlen(slug) + 1);
    sp_buf_add(k, b, 8);
}

static void key_id_u32s(sp_buf_t *k, const char *id, const uint32_t *v, int nv)
{
    sp_buf_add(k, id, strlen(id));
    for (int i = 0; i < nv; i++) {
        uint8_t b[4] = {(uint8_t)(v[i] >> 24), (uint8_t)(v[i] >> 16), (uint8_t)(v[i] >> 8), (uint8_t)v[i]};
        sp_buf_add(k, b, 4);
    }
}

typedef struct {
    log_kvtxn_t *t;
    proj__docs_t *docs; /* pipeline, workflow, job and counters documents */
    const log_event_t *ev;
    const json_t *b;
    unsigned pipeline, config, by_project, by_number, by_delivery, counters, workflow, wf_of, active, job, job_number,
        step, output, pending;
} ctx_t;

static const char *const names[] = {"pipelines.pipeline",  "pipelines.config",      "pipelines.by_project",
                                    "pipelines.by_number", "pipelines.by_delivery", "pipelines.counters",
                                    "pipelines.workflow",  "pipelines.wf_of",       "pipelines.active",
                                    "pipelines.job",       "pipelines.job_number",  "pipelines.step",
                                    "pipelines.output",    "pipelines.pending",     NULL};

static int open_tables(ctx_t *c)
{
    unsigned *slots[] = {&c->pipeline,   &c->config,   &c->by_project, &c->by_number, &c->by_delivery,
                         &c->counters,   &c->workflow, &c->wf_of,      &c->active,    &c->job,
                         &c->job_number, &c->step,     &c->output,     &c->pending};
    _Static_assert(SP_ARRAY_LEN(slots) == SP_ARRAY_LEN(names) - 1, "a table name per slot");
    for (size_t i = 0; i < SP_ARRAY_LEN(slots); i++) {
        int rc = proj__table(c->t, names[i], slots[i]);
        if (rc != 0) return rc;
    }
    return 0;
}

static int put_id(ctx_t *c, unsigned tbl, sp_slice_t key, const char *id)
{
    return log_kvtxn_put(c->t, tbl, key, SP_SLICE_STR(id));
}

/* Raises the project's last pipeline or job number to n. */
static int bump_counter(ctx_t *c, const char *slug, const char *which, json_int_t n)
{
    json_t *doc = NULL;
    if (proj__docs_get(c->docs, c->t, c->counters, slug, &doc) != 0)
        doc = json_pack("{s:i, s:i}", "pipeline", 0, "job", 0);
    if (json_integer_value(json_object_get(doc, which)) < n) json_object_set_new(doc, which, json_integer(n));
    int rc = proj__docs_put(c->docs, c->t, c->counters, slug, doc);
    json_decref(doc);
    return rc;
}

/* ---- pipelines ---- */

static json_t *opt_str(const json_t *b, const char *key)
{
    const json_t *v = json_object_get(b, key);
    return json_is_string(v) ? json_incref((json_t *)v) : json_null();
}

static int pipeline_created(ctx_t *c)
{
    const json_t *b = c->b;
    const char *id = proj__str(b, "id"), *slug = proj__str(b, "slug");
    json_int_t number = json_integer_value(json_object_get(b, "number"));
    json_t *vcs =
        json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}}", "provider_name", "GitHub", "origin_repository_url",
                  proj__str(b, "url"), "target_repository_url", proj__str(b, "url"), "revision",
                  proj__str(b, "revision"), "commit", "subject", proj__str(b, "subject"), "body", proj__str(b, "body"));
    if (json_is_string(json_object_get(b, "branch"))) json_object_set_new(vcs, "branch", opt_str(b, "branch"));
    if (json_is_string(json_object_get(b, "tag"))) json_object_set_new(vcs, "tag", opt_str(b, "tag"));
    json_t *params = json_object_get(b, "parameters");
    json_t *doc = json_pack("{s:s, s:I, s:s, s:s, s:o, s:o, s:[], s:{s:s, s:o, s:{s:s, s:s}}, s:O, s:o, s:o}", "id", id,
                            "number", number, "project_slug", slug, "state", "pending", "created_at",
                            proj__time(c->ev->time_ns), "updated_at", proj__time(c->ev->time_ns), "errors", "trigger",
                            "type", proj__str(b, "trigger_type"), "received_at", proj__time(c->ev->time_ns), "actor",
                            "login", proj__str(b, "actor"), "avatar_url", "", "trigger_parameters",
                            params ? params : json_object(), "vcs", vcs, "_delivery", opt_str(b, "delivery"));
    if (doc == NULL) return SP_EINVAL;
    int rc = proj__docs_put(c->docs, c->t, c->pipeline, id, doc);
    json_decref(doc);
    sp_buf_t k = {0};
    key_slug_num(&k, slug, ~(uint64_t)number);
    if (rc == 0) rc = put_id(c, c->by_project, sp_buf_slice(&k), id);
    k.n = 0;
    key_slug_num(&k, slug, (uint64_t)number);
    if (rc == 0) rc = put_id(c, c->by_number, sp_buf_slice(&k), id);
    sp_buf_free(&k);
    const char *delivery = proj__str(b, "delivery");
    if (rc == 0 && *delivery) rc = put_id(c, c->by_delivery, SP_SLICE_STR(delivery), id);
    if (rc == 0) rc = bump_counter(c, slug, "pipeline", number);
    if (rc == 0) rc = log_kvtxn_put(c->t, c->pending, SP_SLICE_STR(id), SP_SLICE_LIT(""));
    return rc;
}

/* Loads the pipeline document, applies fn, stores it. */
static int pipeline_update(ctx_t *c, const char *id, void (*fn)(ctx_t *c, json_t *doc))
{
    json_t *doc;
    if (proj__docs_get(c->docs, c->t, c->pipeline, id, &doc) != 0) return 0;
    fn(c, doc);
    json_object_set_new(doc, "updated_at", proj__time(c->ev->time_ns));
    int rc = proj__docs_put(c->docs, c->t, c->pipeline, id, doc);
    json_decref(doc);
    return rc;
}

/* The fetch may have resolved the revision and the commit message. */
static void set_vcs(ctx_t *c, json_t *doc)
{
    json_t *vcs = json_object_get(doc, "vcs");
    const char *rev = proj__str(c->b, "revision");
    if (*rev) json_object_set_new(vcs, "revision", json_string(rev));
    json_t *commit = json_object_get(vcs, "commit");
    if (*proj__str(c->b, "subject") && !*proj__str(commit, "subject"))
        json_object_set_new(commit, "subject", json_string(proj__str(c->b, "subject")));
    if (*proj__str(c->b, "body") && !*proj__str(commit, "body"))
        json_object_set_new(commit, "body", json_string(proj__str(c->b, "body")));
}

static void set_created(ctx_t *c, json_t *doc)
{
    json_object_set_new(doc, "state", json_string("created"));
    set_vcs(c, doc);
}

static void set_errored(ctx_t *c, json_t *doc)
{
    json_object_set_new(doc, "state", json_string("errored"));
    set_vcs(c, doc);
    json_t *errs = json_object_get(c->b, "errors");
    json_object_set_new(doc, "errors", json_is_array(errs) ? json_deep_copy(errs) : json_array());
}

static int config_fetched(ctx_t *c)
{
    const char *id = proj__str(c->b, "id");
    json_t *cfg = json_pack("{s:s, s:s, s:s}", "source", proj__str(c->b, "source"), "compiled",
                            proj__str(c->b, "compiled"), "processed", proj__str(c->b, "processed"));
    int rc = proj__doc_put(c->t, c->config, SP_SLICE_STR(id), cfg);
    json_decref(cfg);
    if (rc == 0) rc = log_kvtxn_del(c->t, c->pending, SP_SLICE_STR(id));
    return rc ? rc : pipeline_update(c, id, set_created);
}

static int pipeline_errored(ctx_t *c)
{
    const char *id = proj__str(c->b, "id");
    int rc = log_kvtxn_del(c->t, c->pending, SP_SLICE_STR(id));
    return rc ? rc : pipeline_update(c, id, set_errored);
}

/* ---- workflows and jobs ---- */

static bool is_failure(const char *s)
{
    return strcmp(s, "failed") == 0 || strcmp(s, "timedout") == 0 || strcmp(s, "infrastructure_fail") == 0;
}

static bool is_active(const char *s)
{
    /* "blocked" jobs do not count: a workflow whose only open jobs wait
     * behind an approval is on hold, as CircleCI reports it. */
    return strcmp(s, "running") == 0 || strcmp(s, "queued") == 0;
}

/* Recomputes a running workflow's status from its jobs. */
static int refresh_workflow(ctx_t *c, const char *wf_id)
{
    json_t *wf;
    if (proj__docs_get(c->docs, c->t, c->workflow, wf_id, &wf) != 0) return 0;
    if (!json_is_null(json_object_get(wf, "stopped_at"))) {
        json_decref(wf);
        return 0;
    }
    bool failing = false, active = false, on_hold = false;
    size_t i;
    json_t *jid;
    json_array_foreach (json_object_get(wf, "_jobs"), i, jid) {
        json_t *job;
        if (proj__docs_get(c->docs, c->t, c->job, json_string_value(jid), &job) != 0) continue;
        const char *st = proj__str(job, "status");
        failing |= is_failure(st);
        active |= is_active(st);
        on_hold |= strcmp(st, "on_hold") == 0;
        json_decref(job);
    }
    const char *status = failing ? "failing" : (on_hold && !active) ? "on_hold" : "running";
    json_object_set_new(wf, "status", json_string(status));
    int rc = proj__docs_put(c->docs, c->t, c->workflow, wf_id, wf);
    json_decref(wf);
    return rc;
}

static int workflow_created(ctx_t *c)
{
    const json_t *b = c->b;
    const char *id = proj__str(b, "id"), *pid = proj__str(b, "pipeline_id");
    json_t *p;
    if (proj__docs_get(c->docs, c->t, c->pipeline, pid, &p) != 0) return 0;
    const char *slug = proj__str(p, "project_slug");
    json_t *wf =
        json_pack("{s:s, s:s, s:s, s:O, s:s, s:s, s:s, s:o, s:n, s:[], s:I}", "id", id, "name", proj__str(b, "name"),
                  "pipeline_id", pid, "pipeline_number", json_object_get(p, "number"), "project_slug", slug, "status",
                  "running", "started_by", proj__str(b, "started_by"), "created_at", proj__time(c->ev->time_ns),
                  "stopped_at", "_jobs", "_index", json_integer_value(json_object_get(b, "index")));
    json_t *jobs = json_object_get(wf, "_jobs");
    if (*proj__str(b, "rerun_of")) json_object_set_new(wf, "_rerun_of", json_string(proj__str(b, "rerun_of")));
    size_t i;
    json_t *j;
    int rc = 0;
    json_array_foreach (json_object_get(b, "jobs"), i, j) {
        const char *jid = proj__str(j, "id");
        bool approval = strcmp(proj__str(j, "type"), "approval") == 0;
        json_int_t number = json_integer_value(json_object_get(j, "number"));
        json_array_append_new(jobs, json_string(jid));
        json_t *doc = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:O, s:o, s:o, s:n, s:n, s:n, s:s, s:O, s:O, s:O, s:I}", "id",
            jid, "name", proj__str(j, "name"), "type", approval ? "approval" : "build", "status", "blocked",
            "project_slug", slug, "workflow_id", id, "workflow_name", proj__str(b, "name"), "pipeline_id",
            json_object_get(p, "id"), "pipeline_number", json_object_get(p, "number"), "dependencies",
            json_deep_copy(json_object_get(j, "requires")), "created_at", proj__time(c->ev->time_ns), "queued_at",
            "started_at", "stopped_at", "_job", proj__str(j, "job"), "_executor",
            json_object_get(j, "executor") ? json_object_get(j, "executor") : json_null(), "_parallelism",
            json_object_get(j, "parallelism") ? json_object_get(j, "parallelism") : json_null(), "_contexts",
            json_object_get(j, "contexts") ? json_object_get(j, "contexts") : json_null(), "_number", number);
        if (doc == NULL) {
            rc = SP_EINVAL;
            break;
        }
        if (approval)
            json_object_set_new(doc, "approval_request_id", json_string(jid));
        else
            json_object_set_new(doc, "job_number", json_integer(number));
        rc = proj__docs_put(c->docs, c->t, c->job, jid, doc);
        json_decref(doc);
        if (rc == 0 && !approval) {
            sp_buf_t k = {0};
            key_slug_num(&k, slug, (uint64_t)number);
            rc = put_id(c, c->job_number, sp_buf_slice(&k), jid);
            sp_buf_free(&k);
            if (rc == 0) rc = bump_counter(c, slug, "job", number);
        }
        if (rc != 0) break;
    }
    if (rc == 0) rc = proj__docs_put(c->docs, c->t, c->workflow, id, wf);
    if (rc == 0) {
        /* Reruns share their original's index in the config, so the key is
         * the pipeline's own count of workflows. */
        uint32_t ord = (uint32_t)json_integer_value(json_object_get(p, "_workflows"));
        json_object_set_new(p, "_workflows", json_integer(ord + 1));
        rc = proj__docs_put(c->docs, c->t, c->pipeline, pid, p);
    }
    if (rc == 0) {
        sp_buf_t k = {0};
        uint32_t idx = (uint32_t)json_integer_value(json_object_get(p, "_workflows")) - 1;
        key_id_u32s(&k, pid, &idx, 1);
        rc = put_id(c, c->wf_of, sp_buf_slice(&k), id);
        sp_buf_free(&k);
    }
    if (rc == 0) rc = log_kvtxn_put(c->t, c->active, SP_SLICE_STR(id), SP_SLICE_LIT(""));
    json_decref(wf);
    json_decref(p);
    return rc;
}

static int workflow_finished(ctx_t *c)
{
    const char *id = proj__str(c->b, "id");
    json_t *wf;
    if (proj__docs_get(c->docs, c->t, c->workflow, id, &wf) != 0) return 0;
    json_object_set_new(wf, "status", json_string(proj__str(c->b, "status")));
    json_object_set_new(wf, "stopped_at", proj__time(c->ev->time_ns));
    if (*proj__str(c->b, "canceled_by"))
        json_object_set_new(wf, "canceled_by", json_string(proj__str(c->b, "canceled_by")));
    int rc = proj__docs_put(c->docs, c->t, c->workflow, id, wf);
    json_decref(wf);
    return rc ? rc : log_kvtxn_del(c->t, c->active, SP_SLICE_STR(id));
}

/* Loads a job, applies fn, stores it and, when the job's status changed,
 * refreshes its workflow (which reads every job of the workflow: most
 * events, such as one node of a parallel job finishing, change nothing
 * there). */
static int job_update(ctx_t *c, void (*fn)(ctx_t *c, json_t *job))
{
    const char *id = proj__str(c->b, "id");
    json_t *job;
    if (proj__docs_get(c->docs, c->t, c->job, id, &job) != 0) return 0;
    char before[32];
    snprintf(before, sizeof before, "%s", proj__str(job, "status"));
    fn(c, job);
    int rc = proj__docs_put(c->docs, c->t, c->job, id, job);
    char wf[ID_MAX];
    snprintf(wf, sizeof wf, "%s", proj__str(job, "workflow_id"));
    bool changed = strcmp(before, proj__str(job, "status")) != 0;
    json_decref(job);
    return rc || !changed ? rc : refresh_workflow(c, wf);
}

/* parallel_runs[index], created on demand (one entry per node). */
static json_t *run_of(json_t *job, json_int_t index)
{
    json_t *runs = json_object_get(job, "parallel_runs");
    if (!json_is_array(runs)) {
        runs = json_array();
        json_object_set_new(job, "parallel_runs", runs);
    }
    while ((json_int_t)json_array_size(runs) <= index && index < 1024)
        json_array_append_new(runs,
                              json_pack("{s:I, s:s}", "index", (json_int_t)json_array_size(runs), "status", "blocked"));
    return json_array_get(runs, (size_t)index);
}

static void set_runs(json_t *job, const char *status)
{
    json_int_t n = json_integer_value(json_object_get(job, "_parallelism"));
    for (json_int_t i = 0; i < (n > 0 ? n : 1); i++) json_object_set_new(run_of(job, i), "status", json_string(status));
}

static void job_queued(ctx_t *c, json_t *job)
{
    bool approval = strcmp(proj__str(job, "type"), "approval") == 0;
    json_object_set_new(job, "status", json_string(approval ? "on_hold" : "queued"));
    json_object_set_new(job, "queued_at", proj__time(c->ev->time_ns));
    if (!approval) set_runs(job, "queued");
}

/* The per-node task details the engine needs after a restart. */
static json_t *task_slot(json_t *job, json_int_t index)
{
    json_t *tasks = json_object_get(job, "_tasks");
    if (!json_is_object(tasks)) {
        tasks = json_object();
        json_object_set_new(job, "_tasks", tasks);
    }
    char key[24];
    snprintf(key, sizeof key, "%lld", (long long)index);
    json_t *slot = json_object_get(tasks, key);
    if (slot == NULL) {
        slot = json_object();
        json_object_set_new(tasks, key, slot);
    }
    return slot;
}

static void job_started(ctx_t *c, json_t *job)
{
    json_int_t index = json_integer_value(json_object_get(c->b, "index"));
    if (strcmp(proj__str(job, "status"), "running") != 0) {
        json_object_set_new(job, "status", json_string("running"));
        if (json_is_null(json_object_get(job, "started_at")) || !json_object_get(job, "started_at")) {
            json_object_set_new(job, "started_at", proj__time(c->ev->time_ns));
            json_object_set_new(job, "_started_ns", json_integer(c->ev->time_ns));
        }
    }
    json_object_set_new(run_of(job, index), "status", json_string("running"));
    json_t *slot = task_slot(job, index);
    json_object_set_new(slot, "task_id", opt_str(c->b, "task_id"));
    json_object_set_new(slot, "lease_hash", opt_str(c->b, "lease_hash"));
    json_object_set_new(slot, "agent_id", opt_str(c->b, "agent_id"));
    json_object_set_new(job, "_agent", opt_str(c->b, "agent_name"));
}

static void task_finished(ctx_t *c, json_t *job)
{
    json_int_t index = json_integer_value(json_object_get(c->b, "index"));
    json_object_set_new(run_of(job, index), "status", json_string(proj__str(c->b, "status")));
    json_t *slot = task_slot(job, index);
    json_object_del(slot, "task_id");
    json_object_del(slot, "lease_hash");
}

static void task_requeued(ctx_t *c, json_t *job)
{
    json_int_t index = json_integer_value(json_object_get(c->b, "index"));
    json_object_set_new(run_of(job, index), "status", json_string("queued"));
    json_t *slot = task_slot(job, index);
    json_object_del(slot, "task_id");
    json_object_del(slot, "lease_hash");
    json_object_set_new(slot, "retries", json_integer(json_integer_value(json_object_get(slot, "retries")) + 1));
    json_object_set_new(slot, "excluded", opt_str(c->b, "agent_id"));
    json_t *msgs = json_object_get(job, "_messages");
    if (!json_is_array(msgs)) json_object_set_new(job, "_messages", msgs = json_array());
    json_array_append_new(msgs, json_pack("{s:s, s:s, s:s}", "type", "warning", "message", proj__str(c->b, "reason"),
                                          "reason", "retried on another agent"));
}

static void cancel_requested(ctx_t *c, json_t *job)
{
    json_object_set_new(job, "_cancel", json_true());
    if (*proj__str(c->b, "by")) json_object_set_new(job, "canceled_by", json_string(proj__str(c->b, "by")));
}

static void job_finished(ctx_t *c, json_t *job)
{
    const char *status = proj__str(c->b, "status");
    json_object_set_new(job, "status", json_string(status));
    json_object_set_new(job, "stopped_at", proj__time(c->ev->time_ns));
    json_int_t started = json_integer_value(json_object_get(job, "_started_ns"));
    json_object_set_new(job, "duration", started ? json_integer((c->ev->time_ns - started) / 1000000) : json_null());
    const char *msg = proj__str(c->b, "message");
    if (*msg) json_object_set_new(job, "_message", json_string(msg));
    if (*proj__str(c->b, "approved_by"))
        json_object_set_new(job, "approved_by", json_string(proj__str(c->b, "approved_by")));
    if (*proj__str(c->b, "canceled_by"))
        json_object_set_new(job, "canceled_by", json_string(proj__str(c->b, "canceled_by")));
    /* Nodes that never started end with the job (canceled, approval). */
    json_t *runs = json_object_get(job, "parallel_runs");
    size_t i;
    json_t *r;
    json_array_foreach (runs, i, r) {
        const char *rs = proj__str(r, "status");
        if (strcmp(rs, "blocked") == 0 || strcmp(rs, "queued") == 0)
            json_object_set_new(r, "status", json_string(status));
    }
    json_object_del(job, "_tasks");
}

/* Steps left running when their job ended (a lost agent) end with it. */
static int close_steps(ctx_t *c)
{
    const char *id = proj__str(c->b, "id");
    log_kvcur_t *cur;
    int rc = log_kvcur_open(c->t, c->step, &cur);
    if (rc != 0) return rc;
    sp_slice_t k, v;
    size_t idn = strlen(id), n = 0;
    sp_buf_t keys = {0};
    for (rc = log_kvcur_seek(cur, SP_SLICE_STR(id), &k, &v); rc == 0; rc = log_kvcur_next(cur, &k, &v)) {
        if (k.n != idn + 8 || memcmp(k.p, id, idn) != 0) break;
        if (memmem(v.p, v.n, "\"status\":\"running\"", 18) == NULL) continue;
        sp_buf_add(&keys, k.p, k.n);
        n++;
    }
    log_kvcur_close(cur);
    for (size_t i = 0; i < n; i++) {
        sp_slice_t key = {keys.p + i * (idn + 8), idn + 8};
        json_t *doc;
        if (proj__doc_get(c->t, c->step, key, &doc) != 0) continue;
        json_object_set_new(doc, "status", json_string(proj__str(c->b, "status")));
        json_object_set_new(doc, "end_time", proj__time(c->ev->time_ns));
        json_int_t started = json_integer_value(json_object_get(doc, "_started_ns"));
        json_object_set_new(doc, "run_time_millis", json_integer((c->ev->time_ns - started) / 1000000));
        rc = proj__doc_put(c->t, c->step, key, doc);
        json_decref(doc);
        if (rc != 0) break;
    }
    sp_buf_free(&keys);
    return rc == SP_ENOTFOUND ? 0 : rc;
}

static void job_not_run(ctx_t *c, json_t *job)
{
    json_object_set_new(job, "status", json_string("not_run"));
    json_object_set_new(job, "stopped_at", proj__time(c->ev->time_ns));
}

/* ---- steps and output ---- */

static void step_key(ctx_t *c, sp_buf_t *k, int extra, uint32_t seq)
{
    uint32_t v[3] = {(uint32_t)json_integer_value(json_object_get(c->b, "step")),
                     (uint32_t)json_integer_value(json_object_get(c->b, "index")), seq};
    key_id_u32s(k, proj__str(c->b, "id"), v, 2 + extra);
}

static int step_started(ctx_t *c)
{
    sp_buf_t k = {0};
    step_key(c, &k, 0, 0);
    json_t *doc = json_pack(
        "{s:O, s:O, s:s, s:s, s:o, s:n, s:n, s:n, s:O, s:O, s:i, s:i, s:i}", "step", json_object_get(c->b, "step"),
        "index", json_object_get(c->b, "index"), "name", proj__str(c->b, "name"), "status", "running", "start_time",
        proj__time(c->ev->time_ns), "end_time", "exit_code", "run_time_millis", "bash_command",
        json_object_get(c->b, "bash_command") ? json_object_get(c->b, "bash_command") : json_null(), "background",
        json_object_get(c->b, "background") ? json_object_get(c->b, "background") : json_false(), "_started_ns",
        (json_int_t)0, "_lines", 0, "_bytes", 0);
    json_object_set_new(doc, "_started_ns", json_integer(c->ev->time_ns));
    int rc = proj__doc_put(c->t, c->step, sp_buf_slice(&k), doc);
    json_decref(doc);
    sp_buf_free(&k);
    return rc;
}

static int step_finished(ctx_t *c)
{
    sp_buf_t k = {0};
    step_key(c, &k, 0, 0);
    json_t *doc;
    int rc = 0;
    if (proj__doc_get(c->t, c->step, sp_buf_slice(&k), &doc) == 0) {
        json_object_set_new(doc, "status", json_string(proj__str(c->b, "status")));
        json_object_set_new(doc, "end_time", proj__time(c->ev->time_ns));
        json_t *ec = json_object_get(c->b, "exit_code");
        json_object_set_new(doc, "exit_code", json_is_integer(ec) ? json_incref(ec) : json_null());
        json_int_t started = json_integer_value(json_object_get(doc, "_started_ns"));
        json_object_set_new(doc, "run_time_millis", json_integer((c->ev->time_ns - started) / 1000000));
        rc = proj__doc_put(c->t, c->step, sp_buf_slice(&k), doc);
        json_decref(doc);
    }
    sp_buf_free(&k);
    return rc;
}

/* job.output carries the compressed chunk; only its counters matter
 * here, so its body is read with msgpack directly instead of copying the
 * data into a JSON tree. */
static int output(log_kvtxn_t *t, const log_event_t *ev)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 512);
    msgpack_object o;
    uint64_t step, index, seq, lines, bytes;
    sp_slice_t id;
    int rc = log_body_unpack(ev->body, &zone, &o);
    if (rc == 0 && !(log_body_str(&o, "id", &id) && id.n < ID_MAX && log_body_u64(&o, "step", &step) &&
                     log_body_u64(&o, "index", &index) && log_body_u64(&o, "seq", &seq) &&
                     log_body_u64(&o, "lines", &lines) && log_body_u64(&o, "bytes", &bytes)))
        rc = SP_ECORRUPT;
    char jid[ID_MAX];
    if (rc == 0) snprintf(jid, sizeof jid, "%.*s", (int)id.n, (const char *)id.p);
    msgpack_zone_destroy(&zone);
    if (rc != 0) return rc;
    unsigned out_tbl, step_tbl;
    if ((rc = proj__table(t, "pipelines.output", &out_tbl)) || (rc = proj__table(t, "pipelines.step", &step_tbl)))
        return rc;
    sp_buf_t k = {0};
    uint32_t v3[3] = {(uint32_t)step, (uint32_t)index, (uint32_t)seq};
    key_id_u32s(&k, jid, v3, 3);
    uint8_t v[16];
    sp_be64_put(v, ev->seq);
    for (int i = 0; i < 4; i++) v[8 + i] = (uint8_t)(lines >> (24 - 8 * i));
    for (int i = 0; i < 4; i++) v[12 + i] = (uint8_t)(bytes >> (24 - 8 * i));
    rc = log_kvtxn_put(t, out_tbl, sp_buf_slice(&k), (sp_slice_t){v, sizeof v});
    k.n = 0;
    key_id_u32s(&k, jid, v3, 2);
    json_t *doc;
    if (rc == 0 && proj__doc_get(t, step_tbl, sp_buf_slice(&k), &doc) == 0) {
        json_object_set_new(doc, "_lines",
                            json_integer(json_integer_value(json_object_get(doc, "_lines")) + (json_int_t)lines));
        json_object_set_new(doc, "_bytes",
                            json_integer(json_integer_value(json_object_get(doc, "_bytes")) + (json_int_t)bytes));
        rc = proj__doc_put(t, step_tbl, sp_buf_slice(&k), doc);
        json_decref(doc);
    }
    sp_buf_free(&k);
    return rc;
}

/* A requeued node runs again from the start: the steps and the output
 * index of the lost attempt go (its chunks stay in the log), so the new
 * attempt's steps and chunks (numbered from 0 again) are the ones shown. */
static int drop_attempt(ctx_t *c)
{
    const char *jid = proj__str(c->b, "id");
    uint32_t index = (uint32_t)json_integer_value(json_object_get(c->b, "index"));
    unsigned tables[2] = {c->step, c->output};
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        sp_buf_t dead = {0}; /* keys to delete, each prefixed by its length */
        log_kvcur_t *cur;
        if ((rc = log_kvcur_open(c->t, tables[i], &cur)) != 0) break;
        size_t idlen = strlen(jid);
        sp_slice_t k, v;
        int r;
        for (r = log_kvcur_seek(cur, SP_SLICE_STR(jid), &k, &v); r == 0; r = log_kvcur_next(cur, &k, &v)) {
            if (k.n < idlen + 8 || memcmp(k.p, jid, idlen) != 0) break;
            if (sp_be32_get(k.p + idlen + 4) != index) continue;
            uint32_t n = (uint32_t)k.n;
            sp_buf_add(&dead, &n, sizeof n);
            sp_buf_add(&dead, k.p, k.n);
        }
        log_kvcur_close(cur);
        if (r != 0 && r != SP_ENOTFOUND) rc = r;
        for (size_t off = 0; rc == 0 && off < dead.n;) {
            uint32_t n;
            memcpy(&n, dead.p + off, sizeof n);
            rc = log_kvtxn_del(c->t, tables[i], (sp_slice_t){dead.p + off + sizeof n, n});
            off += sizeof n + n;
        }
        sp_buf_free(&dead);
    }
    return rc;
}

static bool handled(int type)
{
    switch (type) {
    case LOG_EV_PIPELINE_CREATED:
    case LOG_EV_PIPELINE_CONFIG_FETCHED:
    case LOG_EV_PIPELINE_ERRORED:
    case LOG_EV_WORKFLOW_CREATED:
    case LOG_EV_WORKFLOW_FINISHED:
    case LOG_EV_JOB_QUEUED:
    case LOG_EV_JOB_STARTED:
    case LOG_EV_JOB_STEP_STARTED:
    case LOG_EV_JOB_STEP_FINISHED:
    case LOG_EV_JOB_FINISHED:
    case LOG_EV_JOB_TASK_FINISHED:
    case LOG_EV_JOB_TASK_REQUEUED:
    case LOG_EV_JOB_CANCEL_REQUESTED:
    case LOG_EV_JOB_NOT_RUN: return true;
    default: return false;
    }
}

static int apply_pipelines(void *state, log_kvtxn_t *t, const log_event_t *ev)
{
    if (ev->type == LOG_EV_JOB_OUTPUT) return output(t, ev);
    if (!handled(ev->type)) return 0;
    json_t *b = proj__body(ev);
    if (b == NULL) return SP_ECORRUPT;
    ctx_t c = {.t = t, .docs = state, .ev = ev, .b = b};
    int rc = open_tables(&c);
    if (rc == 0) {
        switch (ev->type) {
        case LOG_EV_PIPELINE_CREATED: rc = pipeline_created(&c); break;
        case LOG_EV_PIPELINE_CONFIG_FETCHED: rc = config_fetched(&c); break;
        case LOG_EV_PIPELINE_ERRORED: rc = pipeline_errored(&c); break;
        case LOG_EV_WORKFLOW_CREATED: rc = workflow_created(&c); break;
        case LOG_EV_WORKFLOW_FINISHED: rc = workflow_finished(&c); break;
        case LOG_EV_JOB_QUEUED: rc = job_update(&c, job_queued); break;
        case LOG_EV_JOB_STARTED: rc = job_update(&c, job_started); break;
        case LOG_EV_JOB_FINISHED:
            rc = job_update(&c, job_finished);
            if (rc == 0) rc = close_steps(&c);
            break;
        case LOG_EV_JOB_NOT_RUN: rc = job_update(&c, job_not_run); break;
        case LOG_EV_JOB_TASK_FINISHED: rc = job_update(&c, task_finished); break;
        case LOG_EV_JOB_TASK_REQUEUED:
            rc = job_update(&c, task_requeued);
            if (rc == 0) rc = drop_attempt(&c);
            break;
        case LOG_EV_JOB_CANCEL_REQUESTED: rc = job_update(&c, cancel_requested); break;
        case LOG_EV_JOB_STEP_STARTED: rc = step_started(&c); break;
        case LOG_EV_JOB_STEP_FINISHED: rc = step_finished(&c); break;
        default: break;
        }
    }
    json_decref(b);
    return rc;
}

static int flush_pipelines(void *state, log_kvtxn_t *t) { return proj__docs_flush(state, t); }
static void discard_pipelines(void *state) { proj__docs_discard(state); }

const proj_ops_t proj_pipelines_ops = {.name = "pipelines",
                                       .version = 3,
                                       .state_size = sizeof(proj__docs_t),
                                       .apply = apply_pipelines,
                                       .flush = flush_pipelines,
                                       .discard = discard_pipelines,
                                       .tables = names};
