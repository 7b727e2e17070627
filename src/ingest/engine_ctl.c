/* Workflow control (cancel, approve, rerun), project settings, and the
 * queue as operators see it (depths, why a job waits, cancel, promote). */
#include "engine_internal.h"

#include "../config/config.h"

#include <stdio.h>
#include <stdlib.h>

static int fail(engine_t *e, int rc, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(engine_t *e, int rc, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

static int finish(engine_t *e, e_batch_t *b)
{
    bool empty = b->n == 0;
    int rc = empty ? 0 : e__submit(b);
    pthread_mutex_unlock(&e->mu);
    if (empty) e__finish_empty(b);
    return rc;
}

static bool ended(const char *s)
{
    return !(strcmp(s, "blocked") == 0 || strcmp(s, "queued") == 0 || strcmp(s, "running") == 0 ||
             strcmp(s, "on_hold") == 0);
}

/* ---- cancel ---- */

int engine_cancel_workflow(engine_t *e, const char *wf_id, const char *actor, engine_done_cb cb, void *arg, char *err,
                           size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    e_wf_t *wf = wf_id ? sp_map_get(&e->wfs, wf_id) : NULL;
    if (wf == NULL) return fail(e, SP_ENOTFOUND, err, errlen, "no running workflow %s", wf_id ? wf_id : "");
    e__wf_cancel(e, &b, wf, actor);
    e__dispatch(e, &b);
    b.result = json_pack("{s:s}", "message", "Accepted.");
    return finish(e, &b);
}

int engine_cancel_job(engine_t *e, const char *job_id, const char *actor, engine_done_cb cb, void *arg, char *err,
                      size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    e_job_t *j = job_id ? sp_map_get(&e->jobs, job_id) : NULL;
    if (j == NULL || ended(j->status)) return fail(e, SP_ENOTFOUND, err, errlen, "job %s is not running", job_id);
    bool running = false;
    for (int i = 0; i < j->ntasks; i++) running |= strcmp(j->tasks[i].status, "running") == 0;
    if (running) {
        j->cancel = true;
        e__emit(&b, LOG_EV_JOB_CANCEL_REQUESTED, json_pack("{s:s, s:s}", "id", j->id, "by", actor ? actor : ""));
        for (int i = 0; i < j->ntasks; i++)
            if (j->tasks[i].where != Q_NONE) e__task_end(e, &b, &j->tasks[i], "canceled", NULL);
    } else {
        e__job_end(e, &b, j, "canceled", NULL, actor);
    }
    e__dispatch(e, &b);
    b.result = json_pack("{s:s}", "message", "Accepted.");
    return finish(e, &b);
}

/* ---- approve ---- */

int engine_approve(engine_t *e, const char *wf_id, const char *request_id, const char *actor, engine_done_cb cb,
                   void *arg, char *err, size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    e_wf_t *wf = wf_id ? sp_map_get(&e->wfs, wf_id) : NULL;
    if (wf == NULL) return fail(e, SP_ENOTFOUND, err, errlen, "no running workflow %s", wf_id ? wf_id : "");
    e_job_t *j = request_id ? sp_map_get(&e->jobs, request_id) : NULL;
    if (j == NULL || j->wf != wf || !j->approval)
        return fail(e, SP_ENOTFOUND, err, errlen, "no approval request %s in workflow %s", request_id, wf_id);
    if (strcmp(j->status, "on_hold") != 0)
        return fail(e, SP_EINVAL, err, errlen, "approval job %s is %s, not on hold", j->name, j->status);
    e__job_end(e, &b, j, "success", NULL, actor);
    e__dispatch(e, &b);
    b.result = json_pack("{s:s}", "message", "Accepted.");
    return finish(e, &b);
}

/* ---- rerun ---- */

/* Loads a finished workflow's jobs from the views: name, status, job
 * definition, requirement names. */
static json_t *finished_workflow(engine_t *e, const char *wf_id, json_t **pipeline)
{
    log_kvtxn_t *t;
    if (log_kv_begin(proj_kv(e->o.proj), false, &t) != 0) return NULL;
    json_t *wf = NULL, *out = NULL;
    if (proj_workflow_get(t, wf_id, &wf) == 0 &&
        proj_pipeline_get(t, json_string_value(json_object_get(wf, "pipeline_id")) ?: "", pipeline) == 0) {
        out = json_pack("{s:O, s:[]}", "workflow", wf, "jobs");
        size_t i;
        json_t *jid;
        json_array_foreach (json_object_get(wf, "_jobs"), i, jid) {
            json_t *job;
            if (proj_job_get(t, json_string_value(jid), &job) == 0)
                json_array_append_new(json_object_get(out, "jobs"), job);
        }
    }
    json_decref(wf);
    log_kvtxn_abort(t);
    return out;
}

int engine_rerun(engine_t *e, const char *wf_id, bool from_failed, const json_t *job_ids, const char *actor,
                 engine_done_cb cb, void *arg, char *err, size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    if (wf_id && sp_map_get(&e->wfs, wf_id))
        return fail(e, SP_EINVAL, err, errlen, "workflow %s is still running: cancel it or wait for it to end", wf_id);
    json_t *pipeline = NULL;
    json_t *old = wf_id ? finished_workflow(e, wf_id, &pipeline) : NULL;
    if (old == NULL) {
        json_decref(pipeline);
        return fail(e, SP_ENOTFOUND, err, errlen, "no workflow %s", wf_id ? wf_id : "");
    }
    json_t *w = json_object_get(old, "workflow");
    e_pipe_t *p = e__pipe_load(e, json_string_value(json_object_get(w, "pipeline_id")));
    json_decref(pipeline);
    if (p == NULL || p->processed == NULL) {
        json_decref(old);
        return fail(e, SP_ENOTFOUND, err, errlen, "the pipeline of workflow %s has no config", wf_id);
    }
    /* Which jobs run again: all; with from_failed, every job that did not
     * succeed (the failed ones and their dependents, which were not run);
     * with job ids, only those jobs. */
    json_t *keep = json_object(); /* job name -> true: succeeded before and is not rerun */
    size_t i;
    json_t *job;
    json_array_foreach (json_object_get(old, "jobs"), i, job) {
        const char *name = json_string_value(json_object_get(job, "name"));
        bool ok = strcmp(json_string_value(json_object_get(job, "status")) ?: "", "success") == 0;
        bool named = false;
        size_t k;
        json_t *id;
        json_array_foreach ((json_t *)job_ids, k, id)
            named |= strcmp(json_string_value(id) ?: "", json_string_value(json_object_get(job, "id")) ?: "") == 0;
        if ((from_failed && ok) || (job_ids && json_array_size(job_ids) && !named))
            json_object_set_new(keep, name, json_true());
    }
    int rc = e__rerun_workflow(e, &b, p, json_string_value(json_object_get(w, "name")), wf_id, keep, err, errlen);
    json_decref(keep);
    json_decref(old);
    if (rc != 0) {
        pthread_mutex_unlock(&e->mu);
        b.cb = NULL;
        e__finish_empty(&b);
        return rc;
    }
    e__dispatch(e, &b);
    return finish(e, &b);
}

/* ---- project settings ---- */

int engine_project_settings(engine_t *e, const char *slug_in, const json_t *settings, const char *actor,
                            engine_done_cb cb, void *arg, char *err, size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    char slug[300];
    pthread_mutex_lock(&e->mu);
    if (engine_slug_normalize(slug_in, slug, sizeof slug) != 0)
        return fail(e, SP_EINVAL, err, errlen, "project: expected gh/ORG/REPO");
    json_t *lim = json_object_get(settings, "concurrency"),
           *retry = json_object_get(settings, "retry_infrastructure_fail"),
           *ac = json_object_get(settings, "autocancel_builds");
    if ((lim && (!json_is_integer(lim) || json_integer_value(lim) < 0 || json_integer_value(lim) > 100000)) ||
        (retry && !json_is_boolean(retry)) || (ac && !json_is_boolean(ac)))
        return fail(e, SP_EINVAL, err, errlen,
                    "settings: concurrency (integer >= 0, 0: no limit), retry_infrastructure_fail and "
                    "autocancel_builds (booleans)");
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)settings, k, v) {
        if (strcmp(k, "concurrency") && strcmp(k, "retry_infrastructure_fail") && strcmp(k, "autocancel_builds"))
            return fail(e, SP_EINVAL, err, errlen, "settings.%s: unknown setting", k);
    }
    log_kvtxn_t *t;
    json_t *doc = NULL;
    if (log_kv_begin(proj_kv(e->o.proj), false, &t) == 0) {
        proj_project_get(t, slug, &doc);
        log_kvtxn_abort(t);
    }
    if (doc == NULL) return fail(e, SP_ENOTFOUND, err, errlen, "project %s not found", slug);
    json_decref(doc);
    e_proj_t *p = e__project(e, slug);
    if (lim) p->limit = json_integer_value(lim);
    if (retry) p->retry = json_is_true(retry);
    if (ac) p->autocancel = json_is_true(ac);
    json_t *body = json_pack("{s:s}", "slug", slug);
    json_object_update(body, (json_t *)settings);
    e__emit(&b, LOG_EV_PROJECT_SETTINGS_CHANGED, body);
    /* A raised limit lets waiting tasks through at once. */
    e__promote(e, p);
    e__dispatch(e, &b);
    b.result = json_pack("{s:I, s:b, s:b}", "concurrency", (json_int_t)p->limit, "retry_infrastructure_fail", p->retry,
                         "autocancel_builds", p->autocancel);
    return finish(e, &b);
}

/* ---- the queue ---- */

/* Why a task waits, for the API and `spool queue`. */
static json_t *waiting_reason(engine_t *e, e_task_t *t)
{
    e_proj_t *p = e__project(e, t->job->wf->p->slug);
    e_class_t *c = t->job->cls;
    if (t->where == Q_USAGE) {
        size_t ahead = 0;
        for (e_task_t *x = p->uhead; x && x != t; x = x->qnext) ahead++;
        return json_pack("{s:s, s:s, s:I, s:I, s:I}", "queue", "usage", "reason", "project concurrency limit", "limit",
                         (json_int_t)p->limit, "active", (json_int_t)p->active, "ahead", (json_int_t)ahead);
    }
    size_t ahead = 0;
    for (e_pq_t *q = c->ring; q; q = q->next == c->ring ? NULL : q->next)
        for (e_task_t *x = q->head; x; x = x->qnext)
            if (x->enq < t->enq) ahead++;
    bool labelled = false, any = false, undrained = false;
    size_t i = 0;
    void *v;
    int64_t now = sp_mono_ns();
    while (sp_map_next(&e->agents, &i, NULL, &v)) {
        e_agent_t *a = v;
        if (now - a->last_seen_ns > e->o.lease_timeout_ms * 1000000 || !e__agent_has_label(a, c->os)) continue;
        labelled = true;
        if (!e__agent_could_fit(a, c)) continue;
        any = true;
        undrained |= !a->drain;
    }
    char why[160];
    if (!labelled)
        snprintf(why, sizeof why, "no connected agent is labelled %s", c->os);
    else if (!any)
        snprintf(why, sizeof why, "no connected agent is big enough for this resource class (%g CPUs, %lld MB)", c->cpu,
                 (long long)c->ram_mb);
    else
        snprintf(why, sizeof why, "%s",
                 !undrained ? "every agent that fits is draining"
                 : ahead    ? "waiting behind other jobs of this resource class"
                            : "waiting for a free slot on an agent that fits");
    const char *reason = why;
    json_t *r =
        json_pack("{s:s, s:s, s:s, s:I, s:f, s:I, s:s}", "queue", "run", "reason", reason, "resource_class", c->key,
                  "ahead", (json_int_t)ahead, "cpu", c->cpu, "ram_mb", (json_int_t)c->ram_mb, "os", c->os);
    return r;
}

int engine_job_waiting(engine_t *e, const char *job_id, json_t **out)
{
    pthread_mutex_lock(&e->mu);
    e_job_t *j = job_id ? sp_map_get(&e->jobs, job_id) : NULL;
    json_t *r = NULL;
    for (int i = 0; j && i < j->ntasks && r == NULL; i++)
        if (j->tasks[i].where != Q_NONE) r = waiting_reason(e, &j->tasks[i]);
    pthread_mutex_unlock(&e->mu);
    if (r == NULL) return SP_ENOTFOUND;
    *out = r;
    return 0;
}

static json_t *task_row(engine_t *e, e_task_t *t)
{
    json_t *row =
        json_pack("{s:s, s:I, s:s, s:s, s:i, s:s, s:I}", "job_id", t->job->id, "job_number", (json_int_t)t->job->number,
                  "name", t->job->name, "project", t->job->wf->p->slug, "index", t->index, "resource_class",
                  t->job->cls->key, "waited_ms", (json_int_t)((sp_mono_ns() - t->enq_ns) / 1000000));
    json_object_set_new(row, "waiting", waiting_reason(e, t));
    return row;
}

/* Every queued task, oldest first. */
static int by_enq(const void *a, const void *b)
{
    uint64_t x = (*(e_task_t *const *)a)->enq, y = (*(e_task_t *const *)b)->enq;
    return x < y ? -1 : x > y;
}

static size_t queued_tasks(engine_t *e, e_task_t ***out)
{
    size_t n = 0, cap = 64;
    e_task_t **v = sp_xmalloc(cap * sizeof *v);
    size_t i = 0;
    void *cv;
    while (sp_map_next(&e->classes, &i, NULL, &cv))
        for (e_pq_t *q = ((e_class_t *)cv)->ring; q; q = q->next == ((e_class_t *)cv)->ring ? NULL : q->next)
            for (e_task_t *t = q->head; t; t = t->qnext) {
                if (n == cap) v = sp_xrealloc(v, (cap *= 2) * sizeof *v);
                v[n++] = t;
            }
    i = 0;
    while (sp_map_next(&e->projects, &i, NULL, &cv))
        for (e_task_t *t = ((e_proj_t *)cv)->uhead; t; t = t->qnext) {
            if (n == cap) v = sp_xrealloc(v, (cap *= 2) * sizeof *v);
            v[n++] = t;
        }
    /* each queue is in enqueue order; sort them together */
    qsort(v, n, sizeof *v, by_enq);
    *out = v;
    return n;
}

int engine_queue_status(engine_t *e, size_t limit, json_t **out)
{
    pthread_mutex_lock(&e->mu);
    json_t *classes = json_array();
    size_t i = 0;
    void *v;
    while (sp_map_next(&e->classes, &i, NULL, &v)) {
        e_class_t *c = v;
        json_array_append_new(classes,
                              json_pack("{s:s, s:s, s:s, s:f, s:I, s:s, s:I}", "class", c->key, "executor", c->executor,
                                        "name", c->name, "cpu", c->cpu, "ram_mb", (json_int_t)c->ram_mb, "os", c->os,
                                        "run_queue", (json_int_t)c->depth));
    }
    json_t *projects = json_array();
    i = 0;
    while (sp_map_next(&e->projects, &i, NULL, &v)) {
        e_proj_t *p = v;
        if (p->usage_depth == 0 && p->active == 0) continue;
        json_array_append_new(projects, json_pack("{s:s, s:I, s:I, s:I}", "project", p->slug, "usage_queue",
                                                  (json_int_t)p->usage_depth, "active", (json_int_t)p->active, "limit",
                                                  (json_int_t)p->limit));
    }
    e_task_t **tasks;
    size_t n = queued_tasks(e, &tasks);
    json_t *rows = json_array();
    for (size_t k = 0; k < n && k < limit; k++) json_array_append_new(rows, task_row(e, tasks[k]));
    free(tasks);
    double lat = e->queue_latency_n ? e->queue_latency_sum_s / (double)e->queue_latency_n : 0;
    *out = json_pack("{s:o, s:o, s:I, s:o, s:f}", "classes", classes, "projects", projects, "queued", (json_int_t)n,
                     "jobs", rows, "mean_queue_latency_s", lat);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

int engine_queue_cancel_oldest(engine_t *e, size_t n, const char *actor, engine_done_cb cb, void *arg, char *err,
                               size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    e_task_t **tasks;
    size_t total = queued_tasks(e, &tasks);
    json_t *canceled = json_array();
    /* Whole jobs are canceled: a job's other tasks go with it. */
    for (size_t k = 0; k < total && json_array_size(canceled) < n; k++) {
        e_job_t *j = tasks[k]->job;
        if (ended(j->status) || sp_map_get(&e->jobs, j->id) != j) continue;
        bool seen = false;
        size_t x;
        json_t *id;
        json_array_foreach (canceled, x, id) seen |= strcmp(json_string_value(id), j->id) == 0;
        if (seen) continue;
        json_array_append_new(canceled, json_string(j->id));
    }
    free(tasks);
    size_t x;
    json_t *id;
    json_array_foreach (canceled, x, id) {
        e_job_t *j = sp_map_get(&e->jobs, json_string_value(id));
        if (j == NULL || ended(j->status)) continue;
        bool running = false;
        for (int i = 0; i < j->ntasks; i++) running |= strcmp(j->tasks[i].status, "running") == 0;
        if (running) {
            j->cancel = true;
            e__emit(&b, LOG_EV_JOB_CANCEL_REQUESTED, json_pack("{s:s, s:s}", "id", j->id, "by", actor ? actor : ""));
            for (int i = 0; i < j->ntasks; i++)
                if (j->tasks[i].where != Q_NONE) e__task_end(e, &b, &j->tasks[i], "canceled", NULL);
        } else {
            e__job_end(e, &b, j, "canceled", "canceled from the queue", actor);
        }
    }
    b.result = json_pack("{s:o}", "canceled", canceled);
    e__dispatch(e, &b);
    return finish(e, &b);
}

int engine_queue_promote(engine_t *e, const char *job_id, const char *actor, engine_done_cb cb, void *arg, char *err,
                         size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    e_job_t *j = job_id ? sp_map_get(&e->jobs, job_id) : NULL;
    if (j == NULL) return fail(e, SP_ENOTFOUND, err, errlen, "job %s is not waiting", job_id ? job_id : "");
    int moved = 0;
    for (int i = 0; i < j->ntasks; i++)
        if (e__task_force_run(e, &j->tasks[i])) moved++;
    if (moved == 0) return fail(e, SP_EINVAL, err, errlen, "job %s is not in the usage queue", j->name);
    e__dispatch(e, &b);
    b.result = json_pack("{s:s, s:i}", "job_id", j->id, "promoted", moved);
    return finish(e, &b);
}
