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
    e_job_t **queued;
    size_t nqueued;
    int rc;
} load_ctx_t;

static void load_job(load_ctx_t *c, e_wf_t *wf, int i, const json_t *doc)
{
    e_job_t *j = &wf->jobs[i];
    j->wf = wf;
    snprintf(j->id, sizeof j->id, "%s", json_string_value(json_object_get(doc, "id")) ?: "");
    j->name = sp_xstrdup(json_string_value(json_object_get(doc, "name")) ?: "");
    j->approval = strcmp(json_string_value(json_object_get(doc, "type")) ?: "", "approval") == 0;
    j->def = j->approval ? NULL : str_or_null(doc, "_job");
    j->number = json_integer_value(json_object_get(doc, "_number"));
    j->status = NULL;
    const char *st = json_string_value(json_object_get(doc, "status")) ?: "blocked";
    static const char *known[] = {"success",  "failed",  "timedout", "infrastructure_fail",
                                  "canceled", "not_run", "blocked",  "queued",
                                  "running",  "on_hold"};
    for (size_t k = 0; k < SP_ARRAY_LEN(known); k++)
        if (strcmp(known[k], st) == 0) j->status = known[k];
    if (j->status == NULL) j->status = "blocked";
    sp_map_set(&c->e->jobs, j->id, j);
    if (strcmp(j->status, "queued") == 0) {
        c->queued = sp_xrealloc(c->queued, (c->nqueued + 1) * sizeof *c->queued);
        c->queued[c->nqueued++] = j;
    } else if (strcmp(j->status, "running") == 0) {
        /* The agent may still be working (a remote agent outlives a
         * server restart): it gets a full lease to report again before
         * the job is failed as an infrastructure failure. */
        snprintf(j->task_id, sizeof j->task_id, "%s", json_string_value(json_object_get(doc, "_task")) ?: "");
        snprintf(j->agent_id, sizeof j->agent_id, "%s", json_string_value(json_object_get(doc, "_agent_id")) ?: "");
        if (hex_to_bytes(json_string_value(json_object_get(doc, "_lease_hash")), j->lease_hash, 32) != 0)
            memset(j->lease_hash, 0, 32);
        j->deadline_ns = sp_mono_ns() + c->e->o.lease_timeout_ms * 1000000;
        if (j->task_id[0]) sp_map_set(&c->e->tasks, j->task_id, j);
    }
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
    int64_t x = (*(e_job_t *const *)a)->number, y = (*(e_job_t *const *)b)->number;
    return x < y ? -1 : x > y;
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
    /* The run queue is FIFO: jobs were queued in job-number order within
     * a project, which is the best order the views keep. */
    if (c.nqueued) qsort(c.queued, c.nqueued, sizeof *c.queued, by_number);
    for (size_t i = 0; i < c.nqueued; i++) {
        e_job_t *j = c.queued[i];
        j->qprev = e->qtail;
        if (e->qtail)
            e->qtail->qnext = j;
        else
            e->qhead = j;
        e->qtail = j;
        j->in_queue = true;
    }
    free(c.queued);
    if (sp_map_len(&e->wfs) || sp_map_len(&e->pipes))
        sp_info("engine", "resumed %zu running workflows, %zu queued jobs, %zu running tasks", sp_map_len(&e->wfs),
                c.nqueued, sp_map_len(&e->tasks));
    return 0;
}
