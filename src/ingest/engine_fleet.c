/* Agents: registration, claims, task reports, heartbeats, lost leases,
 * node status and drain; and the queue views for operators. */
#include "engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>

#define HEARTBEAT_MS     5000
#define MAX_CHUNK_RAW    (8u << 20) /* decompressed bytes of one output chunk */
#define MAX_CHUNK_STORED (2u << 20) /* compressed bytes of one output chunk */

static int fail(engine_t *e, int rc, char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
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

static bool has_os_label(const json_t *labels)
{
    size_t i;
    json_t *l;
    json_array_foreach ((json_t *)labels, i, l) {
        const char *s = json_string_value(l);
        if (s && (strcmp(s, "linux") == 0 || strcmp(s, "macos") == 0 || strcmp(s, "windows") == 0)) return true;
    }
    return false;
}

static const char *agent_status(engine_t *e, const e_agent_t *a, int64_t now)
{
    if (now - a->last_seen_ns > e->o.lease_timeout_ms * 1000000) return "down";
    return a->claimed_once ? "ready" : "initializing";
}

int engine_agent_register(engine_t *e, const json_t *info, engine_done_cb cb, void *arg, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(info, "name"));
    json_t *slots = json_object_get(info, "slots"), *labels = json_object_get(info, "labels");
    json_t *cpus = json_object_get(info, "cpus"), *mem = json_object_get(info, "memory_mb");
    if (name == NULL || strlen(name) == 0 || strlen(name) > 100) {
        snprintf(err, errlen, "name: expected 1 to 100 characters");
        return SP_EINVAL;
    }
    if (!json_is_integer(slots) || json_integer_value(slots) < 1 || json_integer_value(slots) > 1024) {
        snprintf(err, errlen, "slots: expected an integer from 1 to 1024");
        return SP_EINVAL;
    }
    if (labels && !json_is_array(labels)) {
        snprintf(err, errlen, "labels: expected a list of strings");
        return SP_EINVAL;
    }
    if ((cpus && !json_is_null(cpus) && !json_is_number(cpus)) ||
        (mem && !json_is_null(mem) && !json_is_integer(mem))) {
        snprintf(err, errlen, "cpus and memory_mb: expected numbers");
        return SP_EINVAL;
    }
    e_batch_t b;
    e__batch_init(&b, e, "agent", cb, arg);
    e_agent_t *a = sp_xcalloc(1, sizeof *a);
    e__uuid(a->id);
    a->name = sp_xstrdup(name);
    a->slots = (int)json_integer_value(slots);
    a->labels = labels ? json_deep_copy(labels) : json_array();
    if (!has_os_label(a->labels)) json_array_append_new(a->labels, json_string("linux"));
    /* An agent that says "resources": false counts slots only (the local
     * fleet: the server machine decides its own load). */
    bool counted = !json_is_false(json_object_get(info, "resources"));
    a->cpus = counted && json_is_number(cpus) ? json_number_value(cpus) : 0;
    a->ram_mb = counted && json_is_integer(mem) ? json_integer_value(mem) : 0;
    a->reserve = counted && !json_is_false(json_object_get(info, "reserve"));
    a->last_seen_ns = a->registered_ns = sp_mono_ns();
    json_t *body = json_pack("{s:s, s:s, s:I, s:O, s:O, s:O, s:b}", "id", a->id, "name", name, "slots",
                             json_integer_value(slots), "labels", a->labels, "cpus", cpus ? cpus : json_null(),
                             "memory_mb", mem ? mem : json_null(), "resources", counted);
    pthread_mutex_lock(&e->mu);
    sp_map_set(&e->agents, a->id, a);
    e__emit(&b, LOG_EV_AGENT_REGISTERED, body);
    json_t *fits = json_array();
    size_t i = 0;
    void *v;
    while (sp_map_next(&e->classes, &i, NULL, &v))
        if (e__agent_could_fit(a, v)) json_array_append_new(fits, json_string(((e_class_t *)v)->key));
    if (json_array_size(fits) == 0)
        sp_warn("engine",
                "agent %s (%s) fits no resource class once 2 CPUs and 4096 MB are kept for it: it will get "
                "no tasks",
                a->name, a->id);
    /* Three heartbeats fit in a lease, so one lost packet loses nothing. */
    int heartbeat = (int)(e->o.lease_timeout_ms / 3 < HEARTBEAT_MS ? e->o.lease_timeout_ms / 3 : HEARTBEAT_MS);
    if (heartbeat < 100) heartbeat = 100;
    b.result = json_pack("{s:s, s:i, s:I, s:o}", "agent_id", a->id, "heartbeat_ms", heartbeat, "lease_timeout_ms",
                         (json_int_t)e->o.lease_timeout_ms, "resource_classes", fits);
    return finish(e, &b);
}

int engine_claim(engine_t *e, const char *agent_id, engine_claim_cb cb, void *arg, engine_claim_t **out, char *err,
                 size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, "system", NULL, NULL);
    pthread_mutex_lock(&e->mu);
    e_agent_t *a = agent_id ? sp_map_get(&e->agents, agent_id) : NULL;
    if (a == NULL) return fail(e, SP_ENOTFOUND, err, errlen, "unknown agent: register first");
    a->last_seen_ns = sp_mono_ns();
    a->claimed_once = true;
    engine_claim_t *c = sp_xcalloc(1, sizeof *c);
    snprintf(c->agent_id, sizeof c->agent_id, "%s", agent_id);
    c->cb = cb;
    c->arg = arg;
    c->prev = e->claims_tail;
    if (e->claims_tail)
        e->claims_tail->next = c;
    else
        e->claims_head = c;
    e->claims_tail = c;
    c->waiting = true;
    *out = c;
    e__dispatch(e, &b);
    return finish(e, &b);
}

bool engine_claim_cancel(engine_t *e, engine_claim_t *c)
{
    pthread_mutex_lock(&e->mu);
    bool waiting = c->waiting;
    if (waiting) {
        if (c->prev)
            c->prev->next = c->next;
        else
            e->claims_head = c->next;
        if (c->next)
            c->next->prev = c->prev;
        else
            e->claims_tail = c->prev;
        c->waiting = false;
    }
    pthread_mutex_unlock(&e->mu);
    if (waiting) {
        c->cb(c->arg, NULL);
        free(c);
    }
    return waiting;
}

/* The task whose lease matches, or NULL; a match renews the lease. */
static e_task_t *task_of(engine_t *e, const char *task_id, const char *lease)
{
    e_task_t *t = task_id ? sp_map_get(&e->tasks, task_id) : NULL;
    if (t == NULL || lease == NULL) return NULL;
    uint8_t h[32];
    e__lease_hash(lease, h);
    if (!sp_ct_equal(h, 32, t->lease_hash, 32)) return NULL;
    int64_t now = sp_mono_ns();
    t->deadline_ns = now + e->o.lease_timeout_ms * 1000000;
    e_agent_t *a = sp_map_get(&e->agents, t->agent_id);
    if (a) a->last_seen_ns = now;
    return t;
}

static const char *lost = "the task's lease is no longer valid (it was given up or finished)";

static bool step_status_ok(const char *s)
{
    return s && (strcmp(s, "success") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "timedout") == 0 ||
                 strcmp(s, "canceled") == 0);
}

/* Validates one protocol event and turns it into a log event. The step
 * index is the task's node index, whatever the agent says. */
static int task_event(e_batch_t *b, e_task_t *t, const json_t *ev, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *step = json_object_get(ev, "step");
    if (!json_is_integer(step) || json_integer_value(step) < 0 || json_integer_value(step) > 100000) {
        snprintf(err, errlen, "events: step must be a small non-negative integer");
        return SP_EINVAL;
    }
    if (type && strcmp(type, "step_started") == 0) {
        const char *name = json_string_value(json_object_get(ev, "name"));
        json_t *bash = json_object_get(ev, "bash_command");
        if (name == NULL || strlen(name) > 1000 || (bash && !json_is_null(bash) && !json_is_string(bash))) {
            snprintf(err, errlen, "step_started: expected a name and an optional bash_command");
            return SP_EINVAL;
        }
        e__emit(b, LOG_EV_JOB_STEP_STARTED,
                json_pack("{s:s, s:O, s:i, s:s, s:O, s:b}", "id", t->job->id, "step", step, "index", t->index, "name",
                          name, "bash_command", bash ? bash : json_null(), "background",
                          json_is_true(json_object_get(ev, "background"))));
        return 0;
    }
    if (type && strcmp(type, "step_finished") == 0) {
        const char *status = json_string_value(json_object_get(ev, "status"));
        json_t *code = json_object_get(ev, "exit_code");
        if (!step_status_ok(status) || (code && !json_is_null(code) && !json_is_integer(code))) {
            snprintf(err, errlen,
                     "step_finished: expected a status (success, failed, timedout, canceled) and an "
                     "integer exit_code");
            return SP_EINVAL;
        }
        e__emit(b, LOG_EV_JOB_STEP_FINISHED,
                json_pack("{s:s, s:O, s:i, s:s, s:O}", "id", t->job->id, "step", step, "index", t->index, "status",
                          status, "exit_code", code ? code : json_null()));
        return 0;
    }
    snprintf(err, errlen, "events: unknown event type \"%s\"", type ? type : "");
    return SP_EINVAL;
}

int engine_task_events(engine_t *e, const char *task_id, const char *lease, const json_t *events, engine_done_cb cb,
                       void *arg, char *err, size_t errlen)
{
    if (!json_is_array(events) || json_array_size(events) > 1000) {
        snprintf(err, errlen, "events: expected a list of at most 1000 events");
        return SP_EINVAL;
    }
    e_batch_t b;
    e__batch_init(&b, e, "agent", cb, arg);
    pthread_mutex_lock(&e->mu);
    e_task_t *t = task_of(e, task_id, lease);
    if (t == NULL) return fail(e, SP_ECLOSED, err, errlen, lost);
    size_t i;
    json_t *ev;
    json_array_foreach ((json_t *)events, i, ev) {
        int rc = task_event(&b, t, ev, err, errlen);
        if (rc != 0) {
            pthread_mutex_unlock(&e->mu);
            b.cb = NULL;
            e__finish_empty(&b);
            return rc;
        }
    }
    b.result = json_pack("{s:b}", "cancel", t->job->cancel);
    return finish(e, &b);
}

/* Counts the lines of a chunk and checks it decodes. */
static int chunk_check(sp_slice_t z, uint64_t *lines, uint64_t *bytes, char *err, size_t errlen)
{
    unsigned long long raw = ZSTD_getFrameContentSize(z.p, z.n);
    if (raw == ZSTD_CONTENTSIZE_ERROR || raw > MAX_CHUNK_RAW) {
        snprintf(err, errlen, "output: expected one zstd frame of at most %u bytes decompressed", MAX_CHUNK_RAW);
        return SP_EINVAL;
    }
    size_t cap = raw == ZSTD_CONTENTSIZE_UNKNOWN ? MAX_CHUNK_RAW : (size_t)raw;
    uint8_t *buf = sp_xmalloc(cap ? cap : 1);
    size_t n = ZSTD_decompress(buf, cap, z.p, z.n);
    int rc = 0;
    if (ZSTD_isError(n)) {
        snprintf(err, errlen, "output: bad zstd data: %s", ZSTD_getErrorName(n));
        rc = SP_EINVAL;
    } else {
        msgpack_zone zone;
        msgpack_zone_init(&zone, 4096);
        msgpack_object o;
        size_t off = 0;
        if (msgpack_unpack((const char *)buf, n, &off, &zone, &o) != MSGPACK_UNPACK_SUCCESS || off != n ||
            o.type != MSGPACK_OBJECT_ARRAY) {
            snprintf(err, errlen, "output: expected a msgpack array of [t_ms, stream, text]");
            rc = SP_EINVAL;
        } else {
            uint64_t total = 0;
            for (uint32_t i = 0; i < o.via.array.size && rc == 0; i++) {
                const msgpack_object *l = &o.via.array.ptr[i];
                if (l->type != MSGPACK_OBJECT_ARRAY || l->via.array.size != 3 ||
                    l->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                    l->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || l->via.array.ptr[1].via.u64 > 1 ||
                    l->via.array.ptr[2].type != MSGPACK_OBJECT_STR) {
                    snprintf(err, errlen, "output: line %u is not [t_ms, stream (0 or 1), text]", i);
                    rc = SP_EINVAL;
                }
                total += rc == 0 ? l->via.array.ptr[2].via.str.size : 0;
            }
            *lines = o.via.array.size;
            *bytes = total;
        }
        msgpack_zone_destroy(&zone);
    }
    free(buf);
    return rc;
}

int engine_task_output(engine_t *e, const char *task_id, const char *lease, int step, int index, uint32_t seq,
                       sp_slice_t chunk, engine_done_cb cb, void *arg, char *err, size_t errlen)
{
    if (step < 0 || step > 100000 || index < 0 || index > 1000) {
        snprintf(err, errlen, "step and index must be small non-negative integers");
        return SP_EINVAL;
    }
    if (chunk.n == 0 || chunk.n > MAX_CHUNK_STORED) {
        snprintf(err, errlen, "output: a chunk must hold 1 to %u compressed bytes", MAX_CHUNK_STORED);
        return SP_EINVAL;
    }
    uint64_t lines, bytes;
    /* Decoding happens outside the lock: it is the costly part. */
    int rc = chunk_check(chunk, &lines, &bytes, err, errlen);
    if (rc != 0) return rc;
    e_batch_t b;
    e__batch_init(&b, e, "agent", cb, arg);
    pthread_mutex_lock(&e->mu);
    e_task_t *t = task_of(e, task_id, lease);
    if (t == NULL) return fail(e, SP_ECLOSED, err, errlen, lost);
    char key[32];
    snprintf(key, sizeof key, "%d", step);
    uintptr_t next = (uintptr_t)sp_map_get(&t->out_seq, key);
    if (seq < next) { /* a retried upload that already arrived */
        b.result = json_pack("{s:b}", "cancel", t->job->cancel);
        return finish(e, &b);
    }
    if (seq > next) {
        snprintf(err, errlen, "output: chunk %u of step %d arrived before chunk %lu", seq, step, (unsigned long)next);
        pthread_mutex_unlock(&e->mu);
        return SP_EINVAL;
    }
    sp_map_set(&t->out_seq, key, (void *)(next + 1));
    sp_buf_t body = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &body, ingest_pack_write);
    msgpack_pack_map(&pk, 7);
    static const char *keys[] = {"id", "step", "index", "seq", "lines", "bytes", "data"};
    uint64_t vals[] = {0, (uint64_t)step, (uint64_t)t->index, seq, lines, bytes};
    for (int i = 0; i < 7; i++) {
        msgpack_pack_str(&pk, strlen(keys[i]));
        msgpack_pack_str_body(&pk, keys[i], strlen(keys[i]));
        if (i == 0) {
            msgpack_pack_str(&pk, strlen(t->job->id));
            msgpack_pack_str_body(&pk, t->job->id, strlen(t->job->id));
        } else if (i == 6) {
            msgpack_pack_bin(&pk, chunk.n);
            msgpack_pack_bin_body(&pk, chunk.p, chunk.n);
        } else {
            msgpack_pack_uint64(&pk, vals[i]);
        }
    }
    e__emit_raw(&b, LOG_EV_JOB_OUTPUT, &body);
    b.result = json_pack("{s:b}", "cancel", t->job->cancel);
    return finish(e, &b);
}

int engine_task_finish(engine_t *e, const char *task_id, const char *lease, const char *status, const char *message,
                       engine_done_cb cb, void *arg, char *err, size_t errlen)
{
    static const char *allowed[] = {"success", "failed", "timedout", "canceled", "infrastructure_fail"};
    bool ok = false;
    for (size_t i = 0; status && i < SP_ARRAY_LEN(allowed); i++) ok |= strcmp(allowed[i], status) == 0;
    if (!ok) {
        snprintf(err, errlen, "status: expected success, failed, timedout, canceled or infrastructure_fail");
        return SP_EINVAL;
    }
    if (message && strlen(message) > 4096) {
        snprintf(err, errlen, "message: at most 4096 characters");
        return SP_EINVAL;
    }
    e_batch_t b;
    e__batch_init(&b, e, "agent", cb, arg);
    pthread_mutex_lock(&e->mu);
    e_task_t *t = task_of(e, task_id, lease);
    if (t == NULL) return fail(e, SP_ECLOSED, err, errlen, lost);
    /* A job canceled while it ran ends canceled, whatever the agent saw. */
    e__task_end(e, &b, t, t->job->cancel ? "canceled" : status, message);
    e__dispatch(e, &b);
    b.result = json_pack("{s:s}", "message", "finished");
    return finish(e, &b);
}

int engine_heartbeat(engine_t *e, const char *agent_id, const json_t *running, engine_done_cb cb, void *arg, char *err,
                     size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, "agent", cb, arg);
    pthread_mutex_lock(&e->mu);
    e_agent_t *a = agent_id ? sp_map_get(&e->agents, agent_id) : NULL;
    if (a == NULL) return fail(e, SP_ENOTFOUND, err, errlen, "unknown agent: register first");
    int64_t now = sp_mono_ns();
    a->last_seen_ns = now;
    a->claimed_once = true;
    json_t *cancel = json_array();
    size_t i;
    json_t *tj;
    json_array_foreach ((json_t *)running, i, tj) {
        const char *tid = json_string_value(tj);
        e_task_t *t = tid ? sp_map_get(&e->tasks, tid) : NULL;
        if (t && strcmp(t->agent_id, agent_id) == 0) {
            t->deadline_ns = now + e->o.lease_timeout_ms * 1000000;
            if (t->job->cancel) json_array_append_new(cancel, json_string(tid));
        } else if (tid) {
            json_array_append_new(cancel, json_string(tid)); /* not its own any more: stop it */
        }
    }
    b.result = json_pack("{s:o}", "cancel", cancel);
    return finish(e, &b);
}

/* A task whose agent went silent: retried once elsewhere when the
 * project allows it, else failed as an infrastructure failure. */
static void task_lost(engine_t *e, e_batch_t *b, e_task_t *t, const char *msg)
{
    e_proj_t *p = e__project(e, t->job->wf->p->slug);
    if (p->retry && t->retries == 0 && !t->job->cancel) {
        char agent[E_ID];
        snprintf(agent, sizeof agent, "%s", t->agent_id);
        e_agent_t *a = sp_map_get(&e->agents, t->agent_id);
        if (a) {
            a->running--;
            if (a->cpus > 0) a->used_cpu -= t->job->cls->cpu, a->used_mb -= t->job->cls->ram_mb;
        }
        p->active--;
        sp_map_del(&e->tasks, t->task_id);
        t->task_id[0] = 0;
        t->retries++;
        sp_map_free(&t->out_seq); /* the next attempt numbers its chunks from 0 */
        snprintf(t->excluded, sizeof t->excluded, "%s", agent);
        e__emit(
            b, LOG_EV_JOB_TASK_REQUEUED,
            json_pack("{s:s, s:i, s:s, s:s}", "id", t->job->id, "index", t->index, "reason", msg, "agent_id", agent));
        e__task_enqueue(e, t);
        return;
    }
    /* Canceled while its agent was gone: nobody needs it any more. */
    e__task_end(e, b, t, t->job->cancel ? "canceled" : "infrastructure_fail", msg);
}

void engine_tick(engine_t *e)
{
    e_batch_t b;
    e__batch_init(&b, e, "system", NULL, NULL);
    pthread_mutex_lock(&e->mu);
    int64_t now = sp_mono_ns();
    size_t i = 0, n = 0;
    void *v;
    e_task_t **expired = sp_xcalloc(sp_map_len(&e->tasks) + 1, sizeof *expired);
    while (sp_map_next(&e->tasks, &i, NULL, &v))
        if (((e_task_t *)v)->deadline_ns < now) expired[n++] = v;
    char msg[160];
    snprintf(msg, sizeof msg, "the agent running this job stopped reporting for %g s",
             (double)e->o.lease_timeout_ms / 1000);
    for (size_t k = 0; k < n; k++) task_lost(e, &b, expired[k], msg);
    free(expired);
    e__dispatch(e, &b);
    finish(e, &b);
}

/* ---- nodes ---- */

int engine_nodes(engine_t *e, json_t **out)
{
    json_t *list = json_array();
    pthread_mutex_lock(&e->mu);
    int64_t now = sp_mono_ns();
    size_t i = 0;
    void *v;
    while (sp_map_next(&e->agents, &i, NULL, &v)) {
        e_agent_t *a = v;
        json_t *allocs = json_array();
        size_t k = 0;
        void *tv;
        while (sp_map_next(&e->tasks, &k, NULL, &tv)) {
            e_task_t *t = tv;
            if (strcmp(t->agent_id, a->id) != 0) continue;
            json_array_append_new(allocs, json_pack("{s:s, s:s, s:I, s:s, s:i, s:s}", "task_id", t->task_id, "job_id",
                                                    t->job->id, "job_number", (json_int_t)t->job->number, "project",
                                                    t->job->wf->p->slug, "index", t->index, "resource_class",
                                                    t->job->cls->key));
        }
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:b, s:O, s:i, s:i, s:f, s:I, s:b, s:f, s:I, s:o, s:I}",
                                              "id", a->id, "name", a->name, "status", agent_status(e, a, now), "drain",
                                              a->drain, "labels", a->labels, "slots", a->slots, "running", a->running,
                                              "cpus", a->cpus, "memory_mb", (json_int_t)a->ram_mb, "counts_resources",
                                              a->cpus > 0, "used_cpus", a->used_cpu, "used_memory_mb",
                                              (json_int_t)a->used_mb, "allocations", allocs, "last_seen_ms_ago",
                                              (json_int_t)((now - a->last_seen_ns) / 1000000)));
    }
    pthread_mutex_unlock(&e->mu);
    *out = list;
    return 0;
}

int engine_node_drain(engine_t *e, const char *agent_id, bool drain, const char *actor, engine_done_cb cb, void *arg,
                      char *err, size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, actor, cb, arg);
    pthread_mutex_lock(&e->mu);
    e_agent_t *a = NULL;
    size_t i = 0;
    void *v;
    /* By id, or by name when it is unique. */
    a = agent_id ? sp_map_get(&e->agents, agent_id) : NULL;
    while (a == NULL && agent_id && sp_map_next(&e->agents, &i, NULL, &v))
        if (strcmp(((e_agent_t *)v)->name, agent_id) == 0) a = v;
    if (a == NULL) return fail(e, SP_ENOTFOUND, err, errlen, "no such node");
    a->drain = drain;
    e__emit(&b, LOG_EV_AGENT_DRAINED,
            json_pack("{s:s, s:b, s:s}", "id", a->id, "drain", drain, "by", actor ? actor : ""));
    if (!drain) e__dispatch(e, &b);
    b.result = json_pack("{s:s, s:s, s:b}", "id", a->id, "name", a->name, "drain", drain);
    return finish(e, &b);
}

/* ---- /metrics ---- */

static void metric_head(sp_buf_t *b, const char *name, const char *type, const char *help)
{
    sp_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void engine_metrics(engine_t *e, sp_buf_t *b)
{
    pthread_mutex_lock(&e->mu);
    metric_head(b, "spool_run_queue_depth", "gauge", "Tasks waiting in the run queue, by resource class.");
    size_t i = 0;
    void *v;
    while (sp_map_next(&e->classes, &i, NULL, &v)) {
        e_class_t *c = v;
        sp_buf_printf(b, "spool_run_queue_depth{resource_class=\"%s\"} %zu\n", c->key, c->depth);
    }
    size_t usage = 0;
    int64_t running = 0;
    i = 0;
    while (sp_map_next(&e->projects, &i, NULL, &v)) {
        usage += ((e_proj_t *)v)->usage_depth;
        running += ((e_proj_t *)v)->active;
    }
    metric_head(b, "spool_usage_queue_depth", "gauge", "Tasks held back by their project's concurrency limit.");
    sp_buf_printf(b, "spool_usage_queue_depth %zu\n", usage);
    metric_head(b, "spool_tasks_running", "gauge", "Tasks running on agents.");
    sp_buf_printf(b, "spool_tasks_running %lld\n", (long long)running);
    size_t counts[4] = {0}; /* initializing, ready, down, draining */
    int64_t now = sp_mono_ns();
    i = 0;
    while (sp_map_next(&e->agents, &i, NULL, &v)) {
        e_agent_t *a = v;
        const char *st = agent_status(e, a, now);
        counts[strcmp(st, "down") == 0 ? 2 : a->drain ? 3 : strcmp(st, "ready") == 0 ? 1 : 0]++;
    }
    static const char *names[] = {"initializing", "ready", "down", "draining"};
    metric_head(b, "spool_agents", "gauge", "Registered agents by status (draining: up, taking no new tasks).");
    for (int k = 0; k < 4; k++) sp_buf_printf(b, "spool_agents{status=\"%s\"} %zu\n", names[k], counts[k]);
    metric_head(b, "spool_run_queue_latency_seconds", "histogram",
                "From queued to started (given to an agent), per task.");
    uint64_t cum = 0;
    for (int k = 0; k < E_LATENCY_BUCKETS; k++) {
        cum += e->queue_latency_buckets[k];
        sp_buf_printf(b, "spool_run_queue_latency_seconds_bucket{le=\"%g\"} %llu\n", e__latency_bounds_s[k],
                      (unsigned long long)cum);
    }
    cum += e->queue_latency_buckets[E_LATENCY_BUCKETS];
    sp_buf_printf(b, "spool_run_queue_latency_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    sp_buf_printf(b, "spool_run_queue_latency_seconds_sum %.9f\n", e->queue_latency_sum_s);
    sp_buf_printf(b, "spool_run_queue_latency_seconds_count %llu\n", (unsigned long long)cum);
    metric_head(b, "spool_scheduler_placements_total", "counter", "Tasks given to agents since start.");
    sp_buf_printf(b, "spool_scheduler_placements_total %llu\n", (unsigned long long)e->placements);
    metric_head(b, "spool_scheduler_seconds_total", "counter",
                "Time the scheduler spent choosing and handing out tasks (not the log append).");
    sp_buf_printf(b, "spool_scheduler_seconds_total %.9f\n", (double)e->sched_ns / 1e9);
    pthread_mutex_unlock(&e->mu);
}
