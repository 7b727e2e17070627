/* The engine's run side: resource classes, the usage and run queues,
 * agents and their claims, tasks and leases, and what a job's end decides
 * for its workflow. */
#include "engine_internal.h"

#include "../config/config.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>

#define MAX_CHUNK_RAW    (8u << 20) /* decompressed bytes of one output chunk */
#define MAX_CHUNK_STORED (2u << 20) /* compressed bytes of one output chunk */
#define RESERVED_CPUS    2.0        /* the guide: each machine keeps two vCPUs */
#define RESERVED_MB      4096       /* and 4 GB for coordinating builds */

/* ---- resource classes ---- */

/* The operations guide's defaults (resource-definitions.edn); the guide
 * has no macOS classes, so those are CircleCI's names for its M1 hosts. */
static const struct {
    const char *executor, *name;
    double cpu;
    int64_t ram_mb;
} default_classes[] = {
    {"docker", "small", 2, 4096},
    {"docker", "medium", 4, 8192},
    {"docker", "massive", 7, 28000},
    {"machine", "medium", 2, 4096},
    {"machine", "large", 4, 16384},
    {"machine", "windows.medium", 2, 8192},
    {"macos", "medium", 4, 8192},
    {"macos", "large", 8, 16384},
    {"macos", "macos.m1.medium.gen1", 4, 6144},
    {"macos", "macos.m1.large.gen1", 8, 12288},
};

static void add_class(engine_t *e, const char *executor, const char *name, double cpu, int64_t ram_mb)
{
    e_class_t *c = sp_xcalloc(1, sizeof *c);
    snprintf(c->key, sizeof c->key, "%s:%s", executor, name);
    c->name = sp_xstrdup(name);
    c->executor = sp_xstrdup(executor);
    c->cpu = cpu;
    c->ram_mb = ram_mb;
    c->os = strcmp(executor, "macos") == 0 ? "macos" : strncmp(name, "windows.", 8) == 0 ? "windows" : "linux";
    e_class_t *old = sp_map_get(&e->classes, c->key);
    if (old) {
        free(old->name), free(old->executor), free(old);
    }
    sp_map_set(&e->classes, c->key, c);
}

void e__classes_init(engine_t *e, const json_t *conf)
{
    if (conf == NULL || json_object_size(conf) == 0) {
        for (size_t i = 0; i < SP_ARRAY_LEN(default_classes); i++)
            add_class(e, default_classes[i].executor, default_classes[i].name, default_classes[i].cpu,
                      default_classes[i].ram_mb);
        return;
    }
    const char *exec, *name;
    json_t *classes, *c;
    json_object_foreach ((json_t *)conf, exec, classes) {
        json_object_foreach (classes, name, c) {
            json_t *cpu = json_object_get(c, "cpu"), *ram = json_object_get(c, "ram_mb");
            add_class(e, exec, name, json_is_number(cpu) ? json_number_value(cpu) : 1,
                      json_is_integer(ram) ? json_integer_value(ram) : 1024);
        }
    }
}

void e__classes_free(engine_t *e)
{
    size_t i = 0;
    void *v;
    while (sp_map_next(&e->classes, &i, NULL, &v)) {
        e_class_t *c = v;
        for (e_pq_t *q = c->ring, *n; q; q = n) {
            n = q->next == c->ring ? NULL : q->next;
            free(q);
        }
        free(c->name), free(c->executor), free(c);
    }
    sp_map_free(&e->classes);
}

static const char *executor_type(const json_t *def)
{
    return json_object_get(def, "docker") ? "docker" : json_object_get(def, "macos") ? "macos" : "machine";
}

void e__executor_of(const json_t *def, json_t *exec)
{
    const char *rc = json_string_value(json_object_get(def, "resource_class"));
    json_object_set_new(exec, "type", json_string(executor_type(def)));
    json_object_set_new(exec, "resource_class", json_string(rc && *rc ? rc : "medium"));
}

e_class_t *e__class_of(engine_t *e, const json_t *def, char *err, size_t errlen)
{
    const char *exec = executor_type(def);
    const char *rc = json_string_value(json_object_get(def, "resource_class"));
    char key[200];
    snprintf(key, sizeof key, "%s:%s", exec, rc && *rc ? rc : "medium");
    e_class_t *c = sp_map_get(&e->classes, key);
    if (c == NULL) {
        sp_buf_t known = {0};
        size_t i = 0;
        void *v;
        while (sp_map_next(&e->classes, &i, NULL, &v))
            if (strcmp(((e_class_t *)v)->executor, exec) == 0)
                sp_buf_printf(&known, "%s%s", known.n ? ", " : "", ((e_class_t *)v)->name);
        sp_buf_add(&known, "", 1);
        snprintf(err, errlen, "resource class \"%s\" is not defined for the %s executor (this server has: %s)",
                 rc ? rc : "medium", exec, known.p ? (char *)known.p : "none");
        sp_buf_free(&known);
    }
    return c;
}

/* ---- projects ---- */

e_proj_t *e__project(engine_t *e, const char *slug)
{
    e_proj_t *p = sp_map_get(&e->projects, slug);
    if (p) return p;
    p = sp_xcalloc(1, sizeof *p);
    p->slug = sp_xstrdup(slug);
    p->limit = e->o.project_concurrency;
    log_kvtxn_t *t;
    if (log_kv_begin(proj_kv(e->o.proj), false, &t) == 0) {
        proj_counters(t, slug, &p->pipeline, &p->job);
        json_t *doc = NULL;
        if (proj_project_get(t, slug, &doc) == 0) {
            json_t *st = json_object_get(doc, "_settings");
            json_t *lim = json_object_get(st, "concurrency");
            if (json_is_integer(lim)) p->limit = json_integer_value(lim);
            p->retry = json_is_true(json_object_get(st, "retry_infrastructure_fail"));
            p->autocancel = json_is_true(json_object_get(json_object_get(doc, "advanced"), "autocancel_builds"));
            const char *def = json_string_value(json_object_get(json_object_get(doc, "vcs_info"), "default_branch"));
            p->default_branch = sp_xstrdup(def && *def ? def : "main");
            json_decref(doc);
        }
        log_kvtxn_abort(t);
    }
    if (p->default_branch == NULL) p->default_branch = sp_xstrdup("main");
    sp_map_set(&e->projects, slug, p);
    return p;
}

/* ---- queues ---- */

static void list_unlink(e_task_t **head, e_task_t **tail, e_task_t *t)
{
    if (t->qprev)
        t->qprev->qnext = t->qnext;
    else
        *head = t->qnext;
    if (t->qnext)
        t->qnext->qprev = t->qprev;
    else
        *tail = t->qprev;
    t->qprev = t->qnext = NULL;
}

static void list_push(e_task_t **head, e_task_t **tail, e_task_t *t)
{
    t->qprev = *tail;
    t->qnext = NULL;
    if (*tail)
        (*tail)->qnext = t;
    else
        *head = t;
    *tail = t;
}

static e_proj_t *task_project(engine_t *e, e_task_t *t) { return e__project(e, t->job->wf->p->slug); }

/* The class's FIFO for the task's project, created on demand. */
static e_pq_t *pq_of(e_class_t *c, e_proj_t *p, bool create)
{
    e_pq_t *q = c->ring;
    if (q) do {
            if (q->proj == p) return q;
            q = q->next;
        } while (q != c->ring);
    if (!create) return NULL;
    q = sp_xcalloc(1, sizeof *q);
    q->proj = p;
    if (c->ring) {
        q->next = c->ring->next;
        c->ring->next = q;
    } else {
        q->next = q;
        c->ring = q;
    }
    return q;
}

static void pq_remove_if_empty(e_class_t *c, e_pq_t *q)
{
    if (q->head) return;
    if (q->next == q) {
        c->ring = NULL;
    } else {
        e_pq_t *prev = q;
        while (prev->next != q) prev = prev->next;
        prev->next = q->next;
        if (c->ring == q) c->ring = q->next;
    }
    free(q);
}

static void run_enqueue(engine_t *e, e_task_t *t, e_proj_t *p)
{
    e_class_t *c = t->job->cls;
    e_pq_t *q = pq_of(c, p, true);
    list_push(&q->head, &q->tail, t);
    c->depth++;
    t->where = Q_RUN;
    p->active++;
}

void e__task_enqueue(engine_t *e, e_task_t *t)
{
    e_proj_t *p = task_project(e, t);
    t->status = "queued";
    t->enq = ++e->enq_next;
    t->enq_ns = sp_mono_ns();
    if (p->limit > 0 && p->active >= p->limit) {
        list_push(&p->uhead, &p->utail, t);
        p->usage_depth++;
        t->where = Q_USAGE;
        return;
    }
    run_enqueue(e, t, p);
}

void e__task_unqueue(engine_t *e, e_task_t *t)
{
    e_proj_t *p = task_project(e, t);
    if (t->where == Q_USAGE) {
        list_unlink(&p->uhead, &p->utail, t);
        p->usage_depth--;
    } else if (t->where == Q_RUN) {
        e_class_t *c = t->job->cls;
        e_pq_t *q = pq_of(c, p, false);
        list_unlink(&q->head, &q->tail, t);
        pq_remove_if_empty(c, q);
        c->depth--;
        p->active--;
    }
    t->where = Q_NONE;
}

/* Moves waiting tasks of a project from its usage queue to the run queue
 * while it is under its limit. */
void e__promote(engine_t *e, e_proj_t *p)
{
    while (p->uhead && (p->limit <= 0 || p->active < p->limit)) {
        e_task_t *t = p->uhead;
        list_unlink(&p->uhead, &p->utail, t);
        p->usage_depth--;
        run_enqueue(e, t, p);
    }
}

bool e__task_force_run(engine_t *e, e_task_t *t)
{
    if (t->where != Q_USAGE) return false;
    e_proj_t *p = task_project(e, t);
    list_unlink(&p->uhead, &p->utail, t);
    p->usage_depth--;
    run_enqueue(e, t, p);
    return true;
}

void e__job_queue(engine_t *e, e_batch_t *b, e_job_t *j)
{
    j->status = j->approval ? "on_hold" : "queued";
    e__emit(b, LOG_EV_JOB_QUEUED, json_pack("{s:s}", "id", j->id));
    for (int i = 0; !j->approval && i < j->ntasks; i++) e__task_enqueue(e, &j->tasks[i]);
}

/* ---- placement ---- */

static double agent_free_cpu(const e_agent_t *a) { return a->cpus - (a->reserve ? RESERVED_CPUS : 0) - a->used_cpu; }

static int64_t agent_free_mb(const e_agent_t *a) { return a->ram_mb - (a->reserve ? RESERVED_MB : 0) - a->used_mb; }

bool e__agent_has_label(const e_agent_t *a, const char *label)
{
    size_t i;
    json_t *l;
    json_array_foreach (a->labels, i, l)
        if (json_is_string(l) && strcmp(json_string_value(l), label) == 0) return true;
    return false;
}

/* Whether the class could ever run on the agent (ignoring what runs now). */
bool e__agent_could_fit(const e_agent_t *a, const e_class_t *c)
{
    if (!e__agent_has_label(a, c->os)) return false;
    if (a->cpus <= 0) return true; /* the agent counts slots only */
    return a->cpus - (a->reserve ? RESERVED_CPUS : 0) >= c->cpu &&
           a->ram_mb - (a->reserve ? RESERVED_MB : 0) >= c->ram_mb;
}

static bool fits_now(const e_agent_t *a, const e_class_t *c)
{
    if (a->drain || a->running >= a->slots || !e__agent_could_fit(a, c)) return false;
    return a->cpus <= 0 || (agent_free_cpu(a) >= c->cpu && agent_free_mb(a) >= c->ram_mb);
}

static void claim_unlink(engine_t *e, engine_claim_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        e->claims_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        e->claims_tail = c->prev;
    c->next = c->prev = NULL;
    c->waiting = false;
}

void e__lease_hash(const char *lease, uint8_t out[32]) { SHA256((const uint8_t *)lease, strlen(lease), out); }

/* Gives task t to claim c: a fresh lease; the agent's resources count it. */
static void assign(engine_t *e, e_batch_t *b, e_task_t *t, engine_claim_t *c, e_agent_t *a)
{
    e__task_unqueue(e, t);
    task_project(e, t)->active++; /* running counts toward the limit */
    e_job_t *j = t->job;
    char lease[65];
    uint8_t raw[24];
    sp_random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++) snprintf(lease + 2 * i, 3, "%02x", raw[i]);
    e__uuid(t->task_id);
    e__lease_hash(lease, t->lease_hash);
    snprintf(t->agent_id, sizeof t->agent_id, "%s", a->id);
    t->deadline_ns = sp_mono_ns() + e->o.lease_timeout_ms * 1000000;
    t->status = "running";
    a->running++;
    if (a->cpus > 0) {
        a->used_cpu += j->cls->cpu;
        a->used_mb += j->cls->ram_mb;
    }
    double waited = (double)(sp_mono_ns() - t->enq_ns) / 1e9;
    e->queue_latency_sum_s += waited;
    e->queue_latency_n++;
    int bucket = 0;
    while (bucket < E_LATENCY_BUCKETS && waited > e__latency_bounds_s[bucket]) bucket++;
    e->queue_latency_buckets[bucket]++;
    if (strcmp(j->status, "queued") == 0) j->status = "running";
    sp_map_set(&e->tasks, t->task_id, t);
    char hash_hex[65];
    for (int i = 0; i < 32; i++) snprintf(hash_hex + 2 * i, 3, "%02x", t->lease_hash[i]);
    e__emit(b, LOG_EV_JOB_STARTED,
            json_pack("{s:s, s:i, s:s, s:s, s:s, s:s}", "id", j->id, "index", t->index, "task_id", t->task_id,
                      "lease_hash", hash_hex, "agent_id", a->id, "agent_name", a->name));
    c->task = e__task_doc(e, t, lease);
    OPENSSL_cleanse(lease, sizeof lease);
    b->notify = sp_xrealloc(b->notify, (b->nnotify + 1) * sizeof *b->notify);
    b->notify[b->nnotify++] = c;
}

/* The oldest task, among the front tasks of the classes' current
 * projects, that the agent can run now. Within a class projects take
 * turns, so one busy project cannot starve the others. */
static e_task_t *pick_for(engine_t *e, const e_agent_t *a, e_class_t **cls)
{
    e_task_t *best = NULL;
    size_t i = 0;
    void *v;
    while (sp_map_next(&e->classes, &i, NULL, &v)) {
        e_class_t *c = v;
        if (c->ring == NULL || !fits_now(a, c)) continue;
        e_pq_t *q = c->ring;
        e_task_t *t = q->head;
        /* A task this agent lost once goes to another agent if one exists. */
        while (t && strcmp(t->excluded, a->id) == 0) t = t->qnext;
        if (t && (best == NULL || t->enq < best->enq)) {
            best = t;
            *cls = c;
        }
    }
    return best;
}

const double e__latency_bounds_s[E_LATENCY_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.5,    1,     5,    30,    300};

/* Placing is the scheduler's own work: its time (not the log append that
 * makes a placement durable) is measured for /metrics and the benchmark. */
void e__dispatch(engine_t *e, e_batch_t *b)
{
    if (e->claims_head == NULL) return;
    int64_t t0 = sp_mono_ns();
    bool progress = true;
    while (progress && e->claims_head) {
        progress = false;
        /* Best fit: offer work to the waiting agent with the least room
         * left first, which packs tasks onto agents. */
        engine_claim_t *chosen = NULL;
        e_task_t *task = NULL;
        e_class_t *cls = NULL;
        double chosen_room = 0;
        for (engine_claim_t *c = e->claims_head; c; c = c->next) {
            e_agent_t *a = sp_map_get(&e->agents, c->agent_id);
            if (a == NULL) continue;
            e_class_t *k = NULL;
            e_task_t *t = pick_for(e, a, &k);
            if (t == NULL) continue;
            double room = a->cpus > 0 ? agent_free_cpu(a) - k->cpu : (double)(a->slots - a->running) * 1e6;
            if (chosen == NULL || t->enq < task->enq || (t == task && room < chosen_room)) {
                chosen = c, task = t, cls = k, chosen_room = room;
            }
        }
        if (chosen) {
            e_agent_t *a = sp_map_get(&e->agents, chosen->agent_id);
            claim_unlink(e, chosen);
            /* The class's next project gets the next turn. */
            if (cls->ring && cls->ring->head == task) cls->ring = cls->ring->next;
            assign(e, b, task, chosen, a);
            e->placements++;
            progress = true;
        }
    }
    e->sched_ns += sp_mono_ns() - t0;
}

/* ---- the end of tasks, jobs and workflows ---- */

static bool failure(const char *s)
{
    return strcmp(s, "failed") == 0 || strcmp(s, "timedout") == 0 || strcmp(s, "infrastructure_fail") == 0;
}

static bool ended(const char *s)
{
    return !(strcmp(s, "blocked") == 0 || strcmp(s, "queued") == 0 || strcmp(s, "running") == 0 ||
             strcmp(s, "on_hold") == 0);
}

static const char *intern_status(const char *s)
{
    static const char *known[] = {"success",  "failed",  "timedout", "infrastructure_fail",
                                  "canceled", "not_run", "blocked",  "queued",
                                  "running",  "on_hold"};
    for (size_t i = 0; i < SP_ARRAY_LEN(known); i++)
        if (strcmp(known[i], s) == 0) return known[i];
    return "failed";
}

void e__job_free(engine_t *e, e_job_t *j)
{
    for (int i = 0; i < j->ntasks; i++) {
        e_task_t *t = &j->tasks[i];
        e__task_unqueue(e, t);
        if (t->task_id[0]) sp_map_del(&e->tasks, t->task_id);
        sp_map_free(&t->out_seq);
    }
    sp_map_del(&e->jobs, j->id);
    free(j->tasks);
    free(j->name);
    free(j->def);
    free(j->deps);
}

void e__wf_free(engine_t *e, e_wf_t *wf)
{
    for (int i = 0; i < wf->njobs; i++) e__job_free(e, &wf->jobs[i]);
    free(wf->jobs);
    free(wf->name);
    free(wf->canceled_by);
    free(wf);
}

/* Jobs whose requirement ended other than in success will not run. */
static void mark_not_run(engine_t *e, e_batch_t *b, e_wf_t *wf)
{
    bool changed = true;
    while (changed) {
        changed = false;
        for (int i = 0; i < wf->njobs; i++) {
            e_job_t *j = &wf->jobs[i];
            if (strcmp(j->status, "blocked") != 0) continue;
            for (int d = 0; d < j->ndeps; d++) {
                const char *ds = wf->jobs[j->deps[d]].status;
                if (ended(ds) && strcmp(ds, "success") != 0) {
                    j->status = "not_run";
                    e__emit(b, LOG_EV_JOB_NOT_RUN, json_pack("{s:s}", "id", j->id));
                    changed = true;
                    break;
                }
            }
        }
    }
}

static void queue_ready(engine_t *e, e_batch_t *b, e_wf_t *wf)
{
    for (int i = 0; i < wf->njobs; i++) {
        e_job_t *j = &wf->jobs[i];
        if (strcmp(j->status, "blocked") != 0) continue;
        bool ready = true;
        for (int d = 0; d < j->ndeps && ready; d++) ready = strcmp(wf->jobs[j->deps[d]].status, "success") == 0;
        if (ready) e__job_queue(e, b, j);
    }
}

/* Ends the workflow when none of its jobs can change any more. */
static void maybe_finish(engine_t *e, e_batch_t *b, e_wf_t *wf)
{
    bool failed = false, canceled = wf->canceled;
    for (int i = 0; i < wf->njobs; i++) {
        const char *s = wf->jobs[i].status;
        if (!ended(s)) return;
        failed |= failure(s) || strcmp(s, "not_run") == 0;
        canceled |= strcmp(s, "canceled") == 0;
    }
    const char *status = canceled ? "canceled" : failed ? "failed" : "success";
    json_t *body = json_pack("{s:s, s:s}", "id", wf->id, "status", status);
    if (wf->canceled_by) json_object_set_new(body, "canceled_by", json_string(wf->canceled_by));
    e__emit(b, LOG_EV_WORKFLOW_FINISHED, body);
    sp_map_del(&e->wfs, wf->id);
    e_pipe_t *p = wf->p;
    e__wf_free(e, wf);
    e__pipe_release(e, p);
}

/* The job's outcome from its tasks: a failure beats a cancel beats success. */
static const char *job_outcome(const e_job_t *j)
{
    const char *worst = "success";
    for (int i = 0; i < j->ntasks; i++) {
        const char *s = j->tasks[i].status;
        if (strcmp(s, "infrastructure_fail") == 0) return s;
        if (failure(s) && !failure(worst))
            worst = s;
        else if (strcmp(s, "canceled") == 0 && strcmp(worst, "success") == 0)
            worst = s;
    }
    return j->cancel && strcmp(worst, "success") != 0 ? "canceled" : worst;
}

void e__wf_progress(engine_t *e, e_batch_t *b, e_wf_t *wf)
{
    mark_not_run(e, b, wf);
    queue_ready(e, b, wf);
    maybe_finish(e, b, wf);
}

void e__job_end(engine_t *e, e_batch_t *b, e_job_t *j, const char *status, const char *message, const char *by)
{
    for (int i = 0; i < j->ntasks; i++) {
        e_task_t *t = &j->tasks[i];
        if (t->where != Q_NONE) {
            e__task_unqueue(e, t);
            t->status = intern_status(status);
        }
    }
    j->status = intern_status(status);
    json_t *body = json_pack("{s:s, s:s}", "id", j->id, "status", status);
    if (message && *message) json_object_set_new(body, "message", json_string(message));
    if (by && *by)
        json_object_set_new(body, strcmp(status, "success") == 0 ? "approved_by" : "canceled_by", json_string(by));
    e__emit(b, LOG_EV_JOB_FINISHED, body);
    e__wf_progress(e, b, j->wf);
}

/* Frees a running task's agent resources and its project's place. */
static void release(engine_t *e, e_task_t *t)
{
    e_agent_t *a = sp_map_get(&e->agents, t->agent_id);
    if (a) {
        a->running--;
        if (a->cpus > 0) {
            a->used_cpu -= t->job->cls->cpu;
            a->used_mb -= t->job->cls->ram_mb;
        }
    }
    e_proj_t *p = task_project(e, t);
    p->active--;
    sp_map_del(&e->tasks, t->task_id);
    t->task_id[0] = 0;
    e__promote(e, p);
}

void e__task_end(engine_t *e, e_batch_t *b, e_task_t *t, const char *status, const char *message)
{
    e_job_t *j = t->job;
    if (t->task_id[0]) release(e, t);
    e__task_unqueue(e, t);
    t->status = intern_status(status);
    json_t *body = json_pack("{s:s, s:i, s:s}", "id", j->id, "index", t->index, "status", t->status);
    if (message && *message) json_object_set_new(body, "message", json_string(message));
    e__emit(b, LOG_EV_JOB_TASK_FINISHED, body);
    for (int i = 0; i < j->ntasks; i++)
        if (!ended(j->tasks[i].status)) return;
    const char *outcome = job_outcome(j);
    j->status = outcome;
    json_t *fin = json_pack("{s:s, s:s}", "id", j->id, "status", outcome);
    if (message && *message && strcmp(outcome, "success") != 0)
        json_object_set_new(fin, "message", json_string(message));
    e__emit(b, LOG_EV_JOB_FINISHED, fin);
    e__wf_progress(e, b, j->wf);
}

/* Ends one task that never ran (it was queued), without deciding what
 * follows: the caller does. */
static void drop_task(engine_t *e, e_batch_t *b, e_task_t *t, const char *status)
{
    e__task_unqueue(e, t);
    t->status = intern_status(status);
    e__emit(b, LOG_EV_JOB_TASK_FINISHED,
            json_pack("{s:s, s:i, s:s}", "id", t->job->id, "index", t->index, "status", t->status));
}

void e__wf_cancel(engine_t *e, e_batch_t *b, e_wf_t *wf, const char *by)
{
    wf->canceled = true;
    if (by && !wf->canceled_by) wf->canceled_by = sp_xstrdup(by);
    for (int i = 0; i < wf->njobs; i++) {
        e_job_t *j = &wf->jobs[i];
        if (ended(j->status) || j->cancel) continue;
        int running = 0;
        for (int k = 0; k < j->ntasks; k++) {
            if (strcmp(j->tasks[k].status, "running") == 0)
                running++;
            else if (!ended(j->tasks[k].status))
                drop_task(e, b, &j->tasks[k], "canceled");
        }
        if (running) {
            /* The agents learn it from their next report and kill the
             * process trees; the job ends when they finish. */
            j->cancel = true;
            e__emit(b, LOG_EV_JOB_CANCEL_REQUESTED, json_pack("{s:s, s:s}", "id", j->id, "by", by ? by : ""));
            continue;
        }
        j->status = "canceled";
        e__emit(b, LOG_EV_JOB_FINISHED,
                json_pack("{s:s, s:s, s:s}", "id", j->id, "status", "canceled", "canceled_by", by ? by : ""));
    }
    maybe_finish(e, b, wf);
}
