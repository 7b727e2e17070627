/* Rebuilding the engine's memory from the views at start. */
#include "engine_internal.h"

#include <stdio.h>
#include <stdlib.h>

static int hex_to_bytes(const char *hex, uint8_t *out, size_t n)
{
    if (hex == NULL || strlen(hex) != 2 * n) return SP_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return SP_EINVAL;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static char *str_or_null(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s && *s ? sp_xstrdup(s) : NULL;
}

/* The pipeline of a workflow or a pending config, loaded once. */
static e_pipe_t *load_pipe(engine_t *e, log_kvtxn_t *t, const char *id);

e_pipe_t *e__pipe_load(engine_t *e, const char *id)
{
    e_pipe_t *p = id ? sp_map_get(&e->pipes, id) : NULL;
    if (p || id == NULL) return p;
    log_kvtxn_t *t;
    if (log_kv_begin(proj_kv(e->o.proj), false, &t) != 0) return NULL;
    p = load_pipe(e, t, id);
    log_kvtxn_abort(t);
    return p;
}

static e_pipe_t *load_pipe(engine_t *e, log_kvtxn_t *t, const char *id)
{
    e_pipe_t *p = sp_map_get(&e->pipes, id);
    if (p) return p;
    json_t *doc;
    if (proj_pipeline_get(t, id, &doc) != 0) return NULL;
    p = sp_xcalloc(1, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", id);
    p->number = json_integer_value(json_object_get(doc, "number"));
    p->slug = sp_xstrdup(json_string_value(json_object_get(doc, "project_slug")) ?: "");
    json_t *vcs = json_object_get(doc, "vcs");
    p->url = sp_xstrdup(json_string_value(json_object_get(vcs, "origin_repository_url")) ?: "");
    p->branch = str_or_null(vcs, "branch");
    p->tag = str_or_null(vcs, "tag");
    snprintf(p->revision, sizeof p->revision, "%s", json_string_value(json_object_get(vcs, "revision")) ?: "");
    p->subject = str_or_null(json_object_get(vcs, "commit"), "subject");
    p->body = str_or_null(json_object_get(vcs, "commit"), "body");
    p->config_pending = strcmp(json_string_value(json_object_get(doc, "state")) ?: "", "pending") == 0;
    json_decref(doc);
    const char *org = p->slug[0] ? p->slug + 3 : "", *slash = strchr(org, '/');
    p->org = slash ? sp_xstrndup(org, (size_t)(slash - org)) : sp_xstrdup("");
    p->repo = sp_xstrdup(slash ? slash + 1 : "");
    json_t *cfg;
    if (proj_pipeline_config(t, id, &cfg) == 0) {
        p->processed = json_loads(json_string_value(json_object_get(cfg, "processed")) ?: "{}", 0, NULL);
        json_decref(cfg);
    }
    sp_map_set(&e->pipes, p->id, p);
    return p;
}

typedef struct {
    engine_t *e;
    log_kvtxn_t *t;
    e_task_t **queued;
    size_t nqueued;
    int rc;
} load_ctx_t;

static const char *known_status(const char *st)
{
    static const char *known[] = {"success",  "failed",  "timedout", "infrastructure_fail",
                                  "canceled", "not_run", "blocked",  "queued",
                                  "running",  "on_hold"};
    for (size_t k = 0; k < SP_ARRAY_LEN(known); k++)
        if (st && strcmp(known[k], st) == 0) return known[k];
    return "blocked";
}

/* A running task: the agent may still be working (a remote agent outlives
 * a server restart), so it gets a full lease to report again before the
 * task is failed as an infrastructure failure. */
static void load_running(load_ctx_t *c, e_task_t *t, const json_t *slot)
{
    snprintf(t->task_id, sizeof t->task_id, "%s", json_string_value(json_object_get(slot, "task_id")) ?: "");
    snprintf(t->agent_id, sizeof t->agent_id, "%s", json_string_value(json_object_get(slot, "agent_id")) ?: "");
    if (hex_to_bytes(json_string_value(json_object_get(slot, "lease_hash")), t->lease_hash, 32) != 0)
        memset(t->lease_hash, 0, 32);
    t->deadline_ns = sp_mono_ns() + c->e->o.lease_timeout_ms * 1000000;
    if (t->task_id[0]) {
        sp_map_set(&c->e->tasks, t->task_id, t);
        e__project(c->e, t->job->wf->p->slug)->active++;
    }
}

static void load_job(load_ctx_t *c, e_wf_t *wf, int i, const json_t *doc)
{
    e_job_t *j = &wf->jobs[i];
    j->wf = wf;
    snprintf(j->id, sizeof j->id, "%s", json_string_value(json_object_get(doc, "id")) ?: "");
    j->name = sp_xstrdup(json_string_value(json_object_get(doc, "name")) ?: "");
    j->approval = strcmp(json_string_value(json_object_get(doc, "type")) ?: "", "approval") == 0;
    j->def = j->approval ? NULL : str_or_null(doc, "_job");
    j->number = json_integer_value(json_object_get(doc, "_number"));
    j->status = known_status(json_string_value(json_object_get(doc, "status")));
    j->cancel = json_is_true(json_object_get(doc, "_cancel"));
    char why[300];
    json_t *def = j->def ? json_object_get(json_object_get(wf->p->processed, "jobs"), j->def) : NULL;
    j->cls = j->approval ? NULL : e__class_of(c->e, def, why, sizeof why);
    json_int_t n = json_integer_value(json_object_get(doc, "_parallelism"));
    j->ntasks = j->approval ? 0 : n > 0 ? (int)n : 1;
    j->tasks = sp_xcalloc((size_t)(j->ntasks ? j->ntasks : 1), sizeof *j->tasks);
    json_t *runs = json_object_get(doc, "parallel_runs"), *slots = json_object_get(doc, "_tasks");
    for (int k = 0; k < j->ntasks; k++) {
        e_task_t *t = &j->tasks[k];
        t->job = j;
        t->index = k;
        t->status = known_status(json_string_value(json_object_get(json_array_get(runs, (size_t)k), "status")));
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        json_t *slot = json_object_get(slots, key);
        t->retries = (int)json_integer_value(json_object_get(slot, "retries"));
        snprintf(t->excluded, sizeof t->excluded, "%s", json_string_value(json_object_get(slot, "excluded")) ?: "");
        if (j->cls == NULL) continue; /* its class is gone: the job cannot run (it ended as failed) */
        if (strcmp(t->status, "queued") == 0) {
            c->queued = sp_xrealloc(c->queued, (c->nqueued + 1) * sizeof *c->queued);
            c->queued[c->nqueued++] = t;
        } else if (strcmp(t->status, "running") == 0) {
            load_running(c, t, slot);
        }
    }
    sp_map_set(&c->e->jobs, j->id, j);
}

static bool load_workflow(void *arg, const json_t *doc)
{
    load_ctx_t *c = arg;
    const char *pid = json_string_value(json_object_get(doc, "pipeline_id"));
    e_pipe_t *p = pid ? load_pipe(c->e, c->t, pid) : NULL;
    if (p == NULL) return true;
    json_t *ids = json_object_get(doc, "_jobs");
    e_wf_t *wf = sp_xcalloc(1, sizeof *wf);
    snprintf(wf->id, sizeof wf->id, "%s", json_string_value(json_object_get(doc, "id")) ?: "");
    wf->name = sp_xstrdup(json_string_value(json_object_get(doc, "name")) ?: "");
    wf->p = p;
    wf->njobs = (int)json_array_size(ids);
    wf->jobs = sp_xcalloc(wf->njobs ? (size_t)wf->njobs : 1, sizeof *wf->jobs);
    p->live_workflows++;
    json_t **docs = sp_xcalloc(wf->njobs ? (size_t)wf->njobs : 1, sizeof *docs);
    for (int i = 0; i < wf->njobs; i++) {
        if (proj_job_get(c->t, json_string_value(json_array_get(ids, (size_t)i)), &docs[i]) != 0)
            docs[i] = json_object();
        load_job(c, wf, i, docs[i]);
    }
    /* Requirements name job ids: map them to indexes in this workflow. */
    for (int i = 0; i < wf->njobs; i++) {
        json_t *deps = json_object_get(docs[i], "dependencies");
        e_job_t *j = &wf->jobs[i];
        j->deps = sp_xcalloc(json_array_size(deps) + 1, sizeof *j->deps);
        for (size_t d = 0; d < json_array_size(deps); d++)
            for (int k = 0; k < wf->njobs; k++)
                if (strcmp(wf->jobs[k].id, json_string_value(json_array_get(deps, d)) ?: "") == 0)
                    j->deps[j->ndeps++] = k;
        json_decref(docs[i]);
    }
    free(docs);
    sp_map_set(&c->e->wfs, wf->id, wf);
    return true;
}

static void load_pending(void *arg, const char *id)
{
    load_ctx_t *c = arg;
    load_pipe(c->e, c->t, id);
}

static int by_number(const void *a, const void *b)
{
    const e_task_t *x = *(e_task_t *const *)a, *y = *(e_task_t *const *)b;
    if (x->job->number != y->job->number) return x->job->number < y->job->number ? -1 : 1;
    return x->index - y->index;
}

int e__load(engine_t *e, char *err, size_t errlen)
{
    log_kvtxn_t *t;
    int rc = log_kv_begin(proj_kv(e->o.proj), false, &t);
    if (rc != 0) {
        snprintf(err, errlen, "cannot read the views: %s", sp_strerror(rc));
        return rc;
    }
    load_ctx_t c = {.e = e, .t = t};
    rc = proj_active_workflows(t, load_workflow, &c);
    if (rc == 0) rc = proj_pending_pipelines(t, load_pending, &c);
    log_kvtxn_abort(t);
    if (rc != 0) {
        free(c.queued);
        snprintf(err, errlen, "cannot load running workflows: %s", sp_strerror(rc));
        return rc;
    }
    /* The queues are FIFO: tasks were queued in job-number order within a
     * project, which is the best order the views keep. Running tasks were
     * counted first, so the usage queue sees each project's limit. */
    if (c.nqueued) qsort(c.queued, c.nqueued, sizeof *c.queued, by_number);
    for (size_t i = 0; i < c.nqueued; i++) e__task_enqueue(e, c.queued[i]);
    free(c.queued);
    if (sp_map_len(&e->wfs) || sp_map_len(&e->pipes))
        sp_info("engine", "resumed %zu running workflows, %zu queued jobs, %zu running tasks", sp_map_len(&e->wfs),
                c.nqueued, sp_map_len(&e->tasks));
    return 0;
}
