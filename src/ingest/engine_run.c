/* The engine's run side: the run queue, agents and their claims, tasks
 * and leases, and what a job's end decides for its workflow. */
#include "engine_internal.h"

#include "../config/config.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>

#define HEARTBEAT_MS     5000
#define MAX_CHUNK_RAW    (8u << 20) /* decompressed bytes of one output chunk */
#define MAX_CHUNK_STORED (2u << 20) /* compressed bytes of one output chunk */

/* ---- run queue ---- */

void e__job_queue(engine_t *e, e_batch_t *b, e_job_t *j)
{
    j->status = j->approval ? "on_hold" : "queued";
    e__emit(b, LOG_EV_JOB_QUEUED, json_pack("{s:s}", "id", j->id));
    if (j->approval) return;
    j->qprev = e->qtail;
    j->qnext = NULL;
    if (e->qtail)
        e->qtail->qnext = j;
    else
        e->qhead = j;
    e->qtail = j;
    j->in_queue = true;
}

void e__job_unqueue(engine_t *e, e_job_t *j)
{
    if (!j->in_queue) return;
    if (j->qprev)
        j->qprev->qnext = j->qnext;
    else
        e->qhead = j->qnext;
    if (j->qnext)
        j->qnext->qprev = j->qprev;
    else
        e->qtail = j->qprev;
    j->qprev = j->qnext = NULL;
    j->in_queue = false;
}

void e__lease_hash(const char *lease, uint8_t out[32]) { SHA256((const uint8_t *)lease, strlen(lease), out); }

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

/* Gives job j to claim c: a task with a fresh lease. */
static void assign(engine_t *e, e_batch_t *b, e_job_t *j, engine_claim_t *c)
{
    e__job_unqueue(e, j);
    e_agent_t *a = sp_map_get(&e->agents, c->agent_id);
    char lease[65];
    uint8_t raw[24];
    sp_random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++) snprintf(lease + 2 * i, 3, "%02x", raw[i]);
    e__uuid(j->task_id);
    e__lease_hash(lease, j->lease_hash);
    snprintf(j->agent_id, sizeof j->agent_id, "%s", c->agent_id);
    j->deadline_ns = sp_mono_ns() + e->o.lease_timeout_ms * 1000000;
    j->status = "running";
    j->cancel = false;
    sp_map_set(&e->tasks, j->task_id, j);
    char hash_hex[65];
    for (int i = 0; i < 32; i++) snprintf(hash_hex + 2 * i, 3, "%02x", j->lease_hash[i]);
    e__emit(b, LOG_EV_JOB_STARTED,
            json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", j->id, "task_id", j->task_id, "lease_hash", hash_hex,
                      "agent_id", c->agent_id, "agent_name", a ? a->name : ""));
    c->task = e__task_doc(e, j, lease);
    OPENSSL_cleanse(lease, sizeof lease);
    b->notify = sp_xrealloc(b->notify, (b->nnotify + 1) * sizeof *b->notify);
    b->notify[b->nnotify++] = c;
}

void e__dispatch(engine_t *e, e_batch_t *b)
{
    while (e->qhead && e->claims_head) {
        engine_claim_t *c = e->claims_head;
        claim_unlink(e, c);
        assign(e, b, e->qhead, c);
    }
}

/* ---- the end of a job ---- */

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
    return NULL;
}

void e__wf_free(engine_t *e, e_wf_t *wf)
{
    for (int i = 0; i < wf->njobs; i++) {
        e_job_t *j = &wf->jobs[i];
        e__job_unqueue(e, j);
        if (j->task_id[0]) sp_map_del(&e->tasks, j->task_id);
        sp_map_del(&e->jobs, j->id);
        free(j->name);
        free(j->def);
        free(j->deps);
        sp_map_free(&j->out_seq);
    }
    free(wf->jobs);
    free(wf->name);
    free(wf);
}

/* A job whose requirement can no longer succeed will not run, nor will
 * anything that requires it. */
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
    bool failed = false, canceled = false;
    for (int i = 0; i < wf->njobs; i++) {
        const char *s = wf->jobs[i].status;
        if (!ended(s)) return;
        failed |= failure(s) || strcmp(s, "not_run") == 0;
        canceled |= strcmp(s, "canceled") == 0;
    }
    const char *status = canceled ? "canceled" : failed ? "failed" : "success";
    e__emit(b, LOG_EV_WORKFLOW_FINISHED, json_pack("{s:s, s:s}", "id", wf->id, "status", status));
    sp_map_del(&e->wfs, wf->id);
    e_pipe_t *p = wf->p;
    e__wf_free(e, wf);
    e__pipe_release(e, p);
}

void e__job_end(engine_t *e, e_batch_t *b, e_job_t *j, const char *status, const char *message)
{
    e__job_unqueue(e, j);
    if (j->task_id[0]) {
        sp_map_del(&e->tasks, j->task_id);
        j->task_id[0] = 0;
    }
    j->status = intern_status(status);
    json_t *body = json_pack("{s:s, s:s}", "id", j->id, "status", status);
    if (message && *message) json_object_set_new(body, "message", json_string(message));
    e__emit(b, LOG_EV_JOB_FINISHED, body);
    e_wf_t *wf = j->wf;
    mark_not_run(e, b, wf);
    queue_ready(e, b, wf);
    maybe_finish(e, b, wf);
}

/* ---- agents ---- */

static int fail(engine_t *e, e_batch_t *b, int rc, char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    pthread_mutex_unlock(&e->mu);
    (void)b;
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

int engine_agent_register(engine_t *e, const json_t *info, engine_done_cb cb, void *arg, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(info, "name"));
    json_t *slots = json_object_get(info, "slots"), *labels = json_object_get(info, "labels");
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
    e_batch_t b;
    e__batch_init(&b, e, "agent", cb, arg);
    e_agent_t *a = sp_xcalloc(1, sizeof *a);
    e__uuid(a->id);
    a->name = sp_xstrdup(name);
    a->slots = (int)json_integer_value(slots);
    a->last_seen_ns = sp_mono_ns();
    json_t *body =
        json_pack("{s:s, s:s, s:I, s:O, s:O, s:O}", "id", a->id, "name", name, "slots", json_integer_value(slots),
                  "labels", labels ? labels : json_array(), "cpus", json_object_get(info, "cpus") ?: json_null(),
                  "memory_mb", json_object_get(info, "memory_mb") ?: json_null());
    pthread_mutex_lock(&e->mu);
    sp_map_set(&e->agents, a->id, a);
    e__emit(&b, LOG_EV_AGENT_REGISTERED, body);
    b.result = json_pack("{s:s, s:i, s:I}", "agent_id", a->id, "heartbeat_ms", HEARTBEAT_MS, "lease_timeout_ms",
                         (json_int_t)e->o.lease_timeout_ms);
    return finish(e, &b);
}

int engine_claim(engine_t *e, const char *agent_id, engine_claim_cb cb, void *arg, engine_claim_t **out, char *err,
                 size_t errlen)
{
    e_batch_t b;
    e__batch_init(&b, e, "system", NULL, NULL);
    pthread_mutex_lock(&e->mu);
    e_agent_t *a = agent_id ? sp_map_get(&e->agents, agent_id) : NULL;
    if (a == NULL) return fail(e, &b, SP_ENOTFOUND, err, errlen, "unknown agent: register first");
    a->last_seen_ns = sp_mono_ns();
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
    int rc = finish(e, &b);
    return rc;
}

bool engine_claim_cancel(engine_t *e, engine_claim_t *c)
{
    pthread_mutex_lock(&e->mu);
    bool waiting = c->waiting;
    if (waiting) claim_unlink(e, c);
    pthread_mutex_unlock(&e->mu);
    if (waiting) {
        c->cb(c->arg, NULL);
        free(c);
    }
    return waiting;
}

/* The job of a task whose lease matches, or NULL. */
static e_job_t *task_job(engine_t *e, const char *task_id, const char *lease)
{
    e_job_t *j = task_id ? sp_map_get(&e->tasks, task_id) : NULL;
    if (j == NULL || lease == NULL) return NULL;
    uint8_t h[32];
    e__lease_hash(lease, h);
    if (!sp_ct_equal(h, 32, j->lease_hash, 32)) return NULL;
    j->deadline_ns = sp_mono_ns() + e->o.lease_timeout_ms * 1000000;
    e_agent_t *a = sp_map_get(&e->agents, j->agent_id);
    if (a) a->last_seen_ns = sp_mono_ns();
    return j;
}

static const char *lost = "the task's lease is no longer valid (it was given up or finished)";

static bool step_status_ok(const char *s)
{
    return s && (strcmp(s, "success") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "timedout") == 0 ||
                 strcmp(s, "canceled") == 0);
}

/* Validates one protocol event and turns it into a log event. */
static int task_event(e_batch_t *b, e_job_t *j, const json_t *ev, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *step = json_object_get(ev, "step"), *index = json_object_get(ev, "index");
    if (!json_is_integer(step) || json_integer_value(step) < 0 || json_integer_value(step) > 100000 ||
        !json_is_integer(index) || json_integer_value(index) < 0 || json_integer_value(index) > 1000) {
        snprintf(err, errlen, "events: step and index must be small non-negative integers");
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
                json_pack("{s:s, s:O, s:O, s:s, s:O, s:b}", "id", j->id, "step", step, "index", index, "name", name,
                          "bash_command", bash ? bash : json_null(), "background",
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
                json_pack("{s:s, s:O, s:O, s:s, s:O}", "id", j->id, "step", step, "index", index, "status", status,
                          "exit_code", code ? code : json_null()));
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
    e_job_t *j = task_job(e, task_id, lease);
    if (j == NULL) return fail(e, &b, SP_ECLOSED, err, errlen, lost);
    size_t i;
    json_t *ev;
    json_array_foreach ((json_t *)events, i, ev) {
        int rc = task_event(&b, j, ev, err, errlen);
        if (rc != 0) {
            pthread_mutex_unlock(&e->mu);
            e_batch_t empty = b;
            empty.cb = NULL;
            e__finish_empty(&empty);
            return rc;
        }
    }
    b.result = json_pack("{s:b}", "cancel", j->cancel);
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
    e_job_t *j = task_job(e, task_id, lease);
    if (j == NULL) return fail(e, &b, SP_ECLOSED, err, errlen, lost);
    char key[32];
    snprintf(key, sizeof key, "%d:%d", step, index);
    uintptr_t next = (uintptr_t)sp_map_get(&j->out_seq, key);
    if (seq < next) { /* a retried upload that already arrived */
        b.result = json_pack("{s:b}", "cancel", j->cancel);
        return finish(e, &b);
    }
    if (seq > next) {
        snprintf(err, errlen, "output: chunk %u of step %d arrived before chunk %lu", seq, step, (unsigned long)next);
        pthread_mutex_unlock(&e->mu);
        return SP_EINVAL;
    }
    sp_map_set(&j->out_seq, key, (void *)(next + 1));
    sp_buf_t body = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &body, ingest_pack_write);
    msgpack_pack_map(&pk, 7);
    static const char *keys[] = {"id", "step", "index", "seq", "lines", "bytes", "data"};
    uint64_t vals[] = {0, (uint64_t)step, (uint64_t)index, seq, lines, bytes};
    for (int i = 0; i < 7; i++) {
        msgpack_pack_str(&pk, strlen(keys[i]));
        msgpack_pack_str_body(&pk, keys[i], strlen(keys[i]));
        if (i == 0) {
            msgpack_pack_str(&pk, strlen(j->id));
            msgpack_pack_str_body(&pk, j->id, strlen(j->id));
        } else if (i == 6) {
            msgpack_pack_bin(&pk, chunk.n);
            msgpack_pack_bin_body(&pk, chunk.p, chunk.n);
        } else {
            msgpack_pack_uint64(&pk, vals[i]);
        }
    }
    e__emit_raw(&b, LOG_EV_JOB_OUTPUT, &body);
    b.result = json_pack("{s:b}", "cancel", j->cancel);
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
    e_job_t *j = task_job(e, task_id, lease);
    if (j == NULL) return fail(e, &b, SP_ECLOSED, err, errlen, lost);
    /* A job canceled while running ends canceled, whatever the agent saw. */
    e__job_end(e, &b, j, j->cancel ? "canceled" : status, message);
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
    if (a == NULL) return fail(e, &b, SP_ENOTFOUND, err, errlen, "unknown agent: register first");
    int64_t now = sp_mono_ns();
    a->last_seen_ns = now;
    json_t *cancel = json_array();
    size_t i;
    json_t *t;
    json_array_foreach ((json_t *)running, i, t) {
        const char *tid = json_string_value(t);
        e_job_t *j = tid ? sp_map_get(&e->tasks, tid) : NULL;
        if (j && strcmp(j->agent_id, agent_id) == 0) {
            j->deadline_ns = now + e->o.lease_timeout_ms * 1000000;
            if (j->cancel) json_array_append_new(cancel, json_string(tid));
        } else if (tid) {
            json_array_append_new(cancel, json_string(tid)); /* not ours any more: stop it */
        }
    }
    b.result = json_pack("{s:o}", "cancel", cancel);
    return finish(e, &b);
}

void engine_tick(engine_t *e)
{
    e_batch_t b;
    e__batch_init(&b, e, "system", NULL, NULL);
    pthread_mutex_lock(&e->mu);
    int64_t now = sp_mono_ns();
    size_t i = 0, n = 0;
    void *v;
    e_job_t **expired = sp_xcalloc(sp_map_len(&e->tasks) + 1, sizeof *expired);
    while (sp_map_next(&e->tasks, &i, NULL, &v))
        if (((e_job_t *)v)->deadline_ns < now) expired[n++] = v;
    char msg[160];
    snprintf(msg, sizeof msg, "the agent running this job stopped reporting for %lld s",
             (long long)(e->o.lease_timeout_ms / 1000));
    for (size_t k = 0; k < n; k++) e__job_end(e, &b, expired[k], "infrastructure_fail", msg);
    free(expired);
    if (n) e__dispatch(e, &b);
    finish(e, &b);
}
