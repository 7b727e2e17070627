/*
 * The projector: reads the log from the lowest checkpoint, applies each
 * event to every projection that has not seen it, and commits the views
 * and the checkpoints together, one transaction per batch.
 *
 * Checkpoints live in the table "_proj": key = projection name, value =
 * version (4 bytes, big-endian) followed by the sequence (8 bytes).
 */
#include "projections.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define CKPT_TABLE "_proj"
#define BATCH      16384

typedef struct {
    const proj_ops_t *ops;
    void *state;
    uint64_t ckpt;
    bool rebuilt;
} slot_t;

typedef struct {
    proj_notify_cb cb;
    void *arg;
} sub_t;

struct proj {
    log_t *log;
    log_kv_t *kv;
    slot_t *slots;
    size_t n;
    unsigned ckpt_tbl;

    pthread_mutex_t mu;
    pthread_cond_t cond; /* signalled on new log head, on apply, on stop */
    uint64_t log_head;   /* latest head the log told us about */
    uint64_t applied;    /* min checkpoint */
    int failed;
    char failmsg[300];
    bool stopping;
    pthread_t thread;
    bool started;
    sub_t subs[8];
    size_t nsubs;
};

static void ckpt_encode(uint8_t out[12], uint32_t version, uint64_t seq)
{
    for (int i = 0; i < 4; i++) out[i] = (uint8_t)(version >> (24 - 8 * i));
    sp_be64_put(out + 4, seq);
}

static int ckpt_write(proj_t *p, log_kvtxn_t *t, slot_t *s, uint64_t seq)
{
    uint8_t v[12];
    ckpt_encode(v, s->ops->version, seq);
    return log_kvtxn_put(t, p->ckpt_tbl, SP_SLICE_STR(s->ops->name), (sp_slice_t){v, sizeof v});
}

static uint64_t min_ckpt(proj_t *p)
{
    uint64_t m = UINT64_MAX;
    for (size_t i = 0; i < p->n; i++)
        if (p->slots[i].ckpt < m) m = p->slots[i].ckpt;
    return p->n ? m : log_head(p->log);
}

/* Reads each checkpoint; empties projections that are new or whose
 * version changed, so they rebuild from the start. */
static int load_checkpoints(proj_t *p, char *err, size_t errlen)
{
    log_kvtxn_t *t;
    int rc = log_kv_begin(p->kv, true, &t);
    if (rc != 0) goto fail;
    if ((rc = log_kvtxn_table(t, CKPT_TABLE, &p->ckpt_tbl)) != 0) goto fail_txn;
    for (size_t i = 0; i < p->n; i++) {
        unsigned tbl;
        for (const char *const *name = p->slots[i].ops->tables; name && *name; name++)
            if ((rc = log_kvtxn_table(t, *name, &tbl)) != 0) goto fail_txn;
    }
    for (size_t i = 0; i < p->n; i++) {
        slot_t *s = &p->slots[i];
        sp_slice_t v;
        rc = log_kvtxn_get(t, p->ckpt_tbl, SP_SLICE_STR(s->ops->name), &v);
        if (rc == 0 && v.n == 12) {
            uint32_t version = ((uint32_t)v.p[0] << 24) | ((uint32_t)v.p[1] << 16) | ((uint32_t)v.p[2] << 8) | v.p[3];
            if (version == s->ops->version) {
                s->ckpt = sp_be64_get(v.p + 4);
                continue;
            }
            sp_info("proj", "projection %s changed from version %u to %u: rebuilding", s->ops->name, version,
                    s->ops->version);
        } else if (rc != 0 && rc != SP_ENOTFOUND) {
            goto fail_txn;
        }
        char prefix[80];
        snprintf(prefix, sizeof prefix, "%s.", s->ops->name);
        if ((rc = log_kvtxn_clear_prefix(t, prefix)) != 0) goto fail_txn;
        if ((rc = ckpt_write(p, t, s, 0)) != 0) goto fail_txn;
        s->ckpt = 0;
        s->rebuilt = true;
    }
    if ((rc = log_kvtxn_commit(t)) != 0) goto fail;
    return 0;
fail_txn:
    log_kvtxn_abort(t);
fail:
    snprintf(err, errlen, "cannot load projection checkpoints: %s", sp_strerror(rc));
    return rc;
}

int proj_open(proj_t **out, log_t *log, const char *dir, const proj_ops_t *const *ops, size_t n, char *errbuf,
              size_t errlen)
{
    char scratch[16];
    if (errbuf == NULL) {
        errbuf = scratch;
        errlen = sizeof scratch;
    }
    proj_t *p = sp_xcalloc(1, sizeof *p);
    p->log = log;
    p->n = n;
    p->slots = sp_xcalloc(n ? n : 1, sizeof *p->slots);
    for (size_t i = 0; i < n; i++) {
        p->slots[i].ops = ops[i];
        p->slots[i].state = sp_xcalloc(1, ops[i]->state_size ? ops[i]->state_size : 1);
    }
    int rc = log_kv_open(&p->kv, dir, 0, errbuf, errlen);
    if (rc == 0 && (rc = load_checkpoints(p, errbuf, errlen)) != 0) log_kv_close(p->kv);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) free(p->slots[i].state);
        free(p->slots);
        free(p);
        return rc;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->applied = min_ckpt(p);
    p->log_head = log_head(log);
    sp_handle_opened();
    *out = p;
    return 0;
}

static void reset_states(proj_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->slots[i].ops->discard) p->slots[i].ops->discard(p->slots[i].state);
        memset(p->slots[i].state, 0, p->slots[i].ops->state_size);
    }
}

/* Applies up to BATCH events after the lowest checkpoint in one views
 * transaction. Sets *done when nothing was left. */
static int apply_batch(proj_t *p, bool *done)
{
    uint64_t from = min_ckpt(p) + 1;
    log_reader_t *r;
    int rc = log_reader_open(p->log, &r);
    if (rc != 0) return rc;
    log_kvtxn_t *t;
    if ((rc = log_kv_begin(p->kv, true, &t)) != 0) {
        log_reader_close(r);
        return rc;
    }
    log_reader_seek(r, from);
    uint64_t last = 0;
    log_event_t ev;
    size_t count = 0;
    while (count < BATCH && (rc = log_reader_next(r, &ev)) == 0) {
        for (size_t i = 0; i < p->n && rc == 0; i++) {
            slot_t *s = &p->slots[i];
            if (s->ckpt < ev.seq) rc = s->ops->apply(s->state, t, &ev);
        }
        if (rc != 0) {
            snprintf(p->failmsg, sizeof p->failmsg, "applying sequence %llu failed: %s", (unsigned long long)ev.seq,
                     sp_strerror(rc));
            break;
        }
        last = ev.seq;
        count++;
    }
    if (rc == SP_ECORRUPT || rc == SP_EGAP) snprintf(p->failmsg, sizeof p->failmsg, "%s", log_reader_why(r));
    log_reader_close(r);
    if (rc == SP_ENOTFOUND) rc = 0;
    for (size_t i = 0; rc == 0 && last && i < p->n; i++) {
        slot_t *s = &p->slots[i];
        if (s->ckpt >= last) continue;
        if (s->ops->flush) rc = s->ops->flush(s->state, t);
        if (rc == 0) rc = ckpt_write(p, t, s, last);
    }
    if (rc != 0 || last == 0) {
        log_kvtxn_abort(t);
        /* Buffered deltas belong to the aborted batch. */
        reset_states(p);
        if (rc == SP_EFULL) {
            /* The views map is full: grow it and redo the batch. */
            p->failmsg[0] = 0;
            *done = false;
            return log_kv_grow(p->kv);
        }
        *done = rc == 0;
        return rc;
    }
    if ((rc = log_kvtxn_commit(t)) != 0) {
        reset_states(p);
        *done = false;
        return rc == SP_EFULL ? 0 : rc; /* the map grew: redo the batch */
    }
    *done = count < BATCH;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n; i++)
        if (p->slots[i].ckpt < last) p->slots[i].ckpt = last;
    p->applied = min_ckpt(p);
    uint64_t applied = p->applied;
    pthread_cond_broadcast(&p->cond);
    for (size_t i = 0; i < p->nsubs; i++) p->subs[i].cb(p->subs[i].arg, applied);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static void set_failed(proj_t *p, int rc)
{
    pthread_mutex_lock(&p->mu);
    p->failed = rc;
    if (p->failmsg[0] == 0) snprintf(p->failmsg, sizeof p->failmsg, "%s", sp_strerror(rc));
    pthread_cond_broadcast(&p->cond);
    for (size_t i = 0; i < p->nsubs; i++) p->subs[i].cb(p->subs[i].arg, p->applied);
    pthread_mutex_unlock(&p->mu);
    sp_error("proj", "projector stopped: %s", p->failmsg);
}

int proj_catch_up(proj_t *p)
{
    bool done = false;
    int rc = 0;
    while (!done && (rc = apply_batch(p, &done)) == 0) {
    }
    if (rc != 0) set_failed(p, rc);
    return rc;
}

static void on_log_commit(void *arg, uint64_t head)
{
    proj_t *p = arg;
    pthread_mutex_lock(&p->mu);
    p->log_head = head;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

static void *projector_main(void *arg)
{
    proj_t *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stopping && p->applied >= p->log_head) pthread_cond_wait(&p->cond, &p->mu);
        bool stop = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (stop) break;
        if (proj_catch_up(p) != 0) break;
    }
    return NULL;
}

int proj_start(proj_t *p)
{
    log_subscribe(p->log, on_log_commit, p);
    pthread_mutex_lock(&p->mu);
    p->log_head = log_head(p->log);
    pthread_mutex_unlock(&p->mu);
    int rc = pthread_create(&p->thread, NULL, projector_main, p);
    if (rc != 0) {
        log_unsubscribe(p->log, on_log_commit, p);
        return -rc;
    }
    p->started = true;
    return 0;
}

void proj_close(proj_t *p)
{
    if (p == NULL) return;
    if (p->started) {
        log_unsubscribe(p->log, on_log_commit, p);
        pthread_mutex_lock(&p->mu);
        p->stopping = true;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
    }
    log_kv_close(p->kv);
    for (size_t i = 0; i < p->n; i++) free(p->slots[i].state);
    free(p->slots);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cond);
    free(p);
    sp_handle_closed();
}

uint64_t proj_applied(proj_t *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t a = p->applied;
    pthread_mutex_unlock(&p->mu);
    return a;
}

int proj_failed(proj_t *p, char *msg, size_t n)
{
    pthread_mutex_lock(&p->mu);
    int rc = p->failed;
    if (msg) snprintf(msg, n, "%s", rc ? p->failmsg : "");
    pthread_mutex_unlock(&p->mu);
    return rc;
}

size_t proj_count(proj_t *p) { return p->n; }

void proj_info(proj_t *p, size_t i, proj_info_t *out)
{
    pthread_mutex_lock(&p->mu);
    *out = (proj_info_t){p->slots[i].ops->name, p->slots[i].ops->version, p->slots[i].ckpt, p->slots[i].rebuilt};
    pthread_mutex_unlock(&p->mu);
}

log_kv_t *proj_kv(proj_t *p) { return p->kv; }

int proj_wait(proj_t *p, uint64_t seq, int64_t timeout_ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t deadline = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + timeout_ns;
    ts.tv_sec = deadline / 1000000000;
    ts.tv_nsec = deadline % 1000000000;
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    while (p->applied < seq && !p->failed && rc == 0) rc = pthread_cond_timedwait(&p->cond, &p->mu, &ts);
    int out = p->applied >= seq ? 0 : p->failed ? p->failed : SP_ETIMEDOUT;
    pthread_mutex_unlock(&p->mu);
    return out;
}

void proj_subscribe(proj_t *p, proj_notify_cb cb, void *arg)
{
    pthread_mutex_lock(&p->mu);
    if (p->nsubs < SP_ARRAY_LEN(p->subs)) p->subs[p->nsubs++] = (sub_t){cb, arg};
    pthread_mutex_unlock(&p->mu);
}

void proj_unsubscribe(proj_t *p, proj_notify_cb cb, void *arg)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nsubs; i++) {
        if (p->subs[i].cb == cb && p->subs[i].arg == arg) {
            p->subs[i] = p->subs[--p->nsubs];
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

int proj_dump(proj_t *p, sp_buf_t *out)
{
    log_kvtxn_t *t;
    int rc = log_kv_begin(p->kv, false, &t);
    if (rc != 0) return rc;
    static const char *const skip[] = {CKPT_TABLE, NULL};
    rc = log_kvtxn_dump(t, skip, out);
    log_kvtxn_abort(t);
    return rc;
}

const proj_ops_t *const proj_all[] = {&proj_counts_ops, &proj_registry_ops, &proj_pipelines_ops};
const size_t proj_all_count = SP_ARRAY_LEN(proj_all);
