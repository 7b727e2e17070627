/*
 * The single writer. Producers queue submissions; one thread takes
 * everything waiting (up to max_batch events), writes it in one LMDB
 * transaction, commits (one fsync), and only then completes each
 * submission. While it commits, new submissions queue up and form the
 * next batch: that is the group commit.
 *
 * After a failed commit the writer stays failed and refuses new work:
 * the log on disk is still the last good commit, and a reopen is the
 * only way to learn whether the disk has recovered.
 */
#include "log_internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DEFAULT_MAX_BATCH 8192
#define MAX_GROW_RETRIES  16

const double log_latency_bounds_s[LOG_LATENCY_BUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
};

/* A blocking submitter. The writer sets done, bumps log->donegen and
 * wakes every blocked submitter with one futex call per batch: with many
 * producers, a condition variable per waiter cost the writer half its
 * time in wake-ups, and a shared one made the woken threads fight over
 * its mutex. A futex word needs no mutex. */
struct log__waiter {
    atomic_bool done;
};

static void futex_wait(_Atomic uint32_t *word, uint32_t seen)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

struct log_ack {
    uv_async_t async;
    pthread_mutex_t mu;
    log__req_t *done_head, *done_tail;
    atomic_int refs; /* the uv handle holds one; each request in flight one */
    bool closed;
};

/* ---- submission ---- */

static int req_new(const log_entry_t *entries, size_t n, log__req_t **out)
{
    if (n == 0) return SP_EINVAL;
    size_t size = sizeof(log__req_t) + n * sizeof(log_entry_t);
    for (size_t i = 0; i < n; i++) {
        const log_entry_t *e = &entries[i];
        if (log_type_name(e->type) == NULL) return SP_EUNKNOWN_TYPE;
        size_t an = e->actor ? strlen(e->actor) : 0, rn = e->request_id ? strlen(e->request_id) : 0;
        if (an > LOG_MAX_FIELD || rn > LOG_MAX_FIELD) return SP_EINVAL;
        if (e->body.n > LOG_MAX_BODY) return SP_ETOOBIG;
        size += an + rn + 2 + e->body.n;
    }
    log__req_t *req = sp_xcalloc(1, size);
    req->n = n;
    req->entries = (log_entry_t *)(req + 1);
    char *p = (char *)(req->entries + n);
    for (size_t i = 0; i < n; i++) {
        const log_entry_t *e = &entries[i];
        log_entry_t *c = &req->entries[i];
        c->type = e->type;
        const char *src[2] = {e->actor ? e->actor : "", e->request_id ? e->request_id : ""};
        const char **dst[2] = {&c->actor, &c->request_id};
        for (int k = 0; k < 2; k++) {
            size_t len = strlen(src[k]);
            memcpy(p, src[k], len + 1);
            *dst[k] = p;
            p += len + 1;
        }
        if (e->body.n) memcpy(p, e->body.p, e->body.n);
        c->body = (sp_slice_t){(const uint8_t *)p, e->body.n};
        p += e->body.n;
    }
    *out = req;
    return 0;
}

static int enqueue(log_t *log, log__req_t *req)
{
    pthread_mutex_lock(&log->mu);
    int rc = 0;
    if (!log->thread_started || log->stopping)
        rc = SP_ECLOSED;
    else if (log->failed)
        rc = SP_EFAILED;
    if (rc == 0) {
        if (log->queue_tail)
            log->queue_tail->next = req;
        else
            log->queue_head = req;
        log->queue_tail = req;
        log->queued_entries += req->n;
        pthread_cond_signal(&log->cond);
    }
    pthread_mutex_unlock(&log->mu);
    return rc;
}

int log_append_wait(log_t *log, const log_entry_t *entries, size_t n, uint64_t *first_seq)
{
    log__req_t *req;
    int rc = req_new(entries, n, &req);
    if (rc != 0) return rc;
    struct log__waiter w;
    atomic_init(&w.done, false);
    req->waiter = &w;
    if ((rc = enqueue(log, req)) == 0) {
        for (;;) {
            uint32_t gen = atomic_load(&log->donegen);
            if (atomic_load(&w.done)) break;
            /* Returns at once if donegen moved on since we read it. */
            futex_wait(&log->donegen, gen);
        }
        rc = req->status;
        if (rc == 0 && first_seq) *first_seq = req->first_seq;
    }
    free(req);
    return rc;
}

/* ---- ack queues ---- */

static void ack_unref(log_ack_t *ack)
{
    if (atomic_fetch_sub(&ack->refs, 1) == 1) {
        pthread_mutex_destroy(&ack->mu);
        free(ack);
        sp_handle_closed();
    }
}

static void ack_deliver(log_ack_t *ack)
{
    pthread_mutex_lock(&ack->mu);
    log__req_t *req = ack->done_head;
    ack->done_head = ack->done_tail = NULL;
    pthread_mutex_unlock(&ack->mu);
    while (req) {
        log__req_t *next = req->next;
        req->cb(req->arg, req->status, req->first_seq);
        free(req);
        ack_unref(ack);
        req = next;
    }
}

static void ack_async_cb(uv_async_t *h) { ack_deliver(sp_container_of(h, log_ack_t, async)); }

int log_ack_open(log_ack_t **out, uv_loop_t *loop)
{
    log_ack_t *ack = sp_xcalloc(1, sizeof *ack);
    int rc = uv_async_init(loop, &ack->async, ack_async_cb);
    if (rc != 0) {
        free(ack);
        return rc;
    }
    pthread_mutex_init(&ack->mu, NULL);
    atomic_init(&ack->refs, 1);
    sp_handle_opened();
    *out = ack;
    return 0;
}

static void ack_close_cb(uv_handle_t *h) { ack_unref(sp_container_of(h, log_ack_t, async)); }

void log_ack_close(log_ack_t *ack)
{
    /* Completed submissions still get their callback; those still in the
     * writer are dropped when they complete, as their owner is gone. */
    ack_deliver(ack);
    pthread_mutex_lock(&ack->mu);
    ack->closed = true;
    pthread_mutex_unlock(&ack->mu);
    uv_close((uv_handle_t *)&ack->async, ack_close_cb);
}

int log_append_async(log_t *log, log_ack_t *ack, const log_entry_t *entries, size_t n, log_done_cb cb, void *arg)
{
    log__req_t *req;
    int rc = req_new(entries, n, &req);
    if (rc != 0) return rc;
    req->ack = ack;
    req->cb = cb;
    req->arg = arg;
    atomic_fetch_add(&ack->refs, 1);
    if ((rc = enqueue(log, req)) != 0) {
        atomic_fetch_sub(&ack->refs, 1);
        free(req);
    }
    return rc;
}

int log_append_cb(log_t *log, const log_entry_t *entries, size_t n, log_done_cb cb, void *arg)
{
    log__req_t *req;
    int rc = req_new(entries, n, &req);
    if (rc != 0) return rc;
    req->cb = cb;
    req->arg = arg;
    if ((rc = enqueue(log, req)) != 0) free(req);
    return rc;
}

void log__req_complete(log__req_t *req)
{
    if (req->ack == NULL && req->waiter == NULL) {
        req->cb(req->arg, req->status, req->first_seq);
        free(req);
        return;
    }
    if (req->waiter) {
        atomic_store(&req->waiter->done, true); /* woken by complete_all */
        return;
    }
    log_ack_t *ack = req->ack;
    req->next = NULL;
    pthread_mutex_lock(&ack->mu);
    if (ack->closed) {
        pthread_mutex_unlock(&ack->mu);
        free(req);
        ack_unref(ack);
        return;
    }
    if (ack->done_tail)
        ack->done_tail->next = req;
    else
        ack->done_head = req;
    ack->done_tail = req;
    uv_async_send(&ack->async);
    pthread_mutex_unlock(&ack->mu);
}

/* ---- the writer thread ---- */

static void record_latency(log_t *log, int64_t ns, size_t events)
{
    double s = (double)ns / 1e9;
    int b = 0;
    while (b < LOG_LATENCY_BUCKETS && s > log_latency_bounds_s[b]) b++;
    pthread_mutex_lock(&log->statmu);
    log->stats.latency_buckets[b]++;
    log->stats.latency_sum_s += s;
    log->stats.batches++;
    log->stats.events += events;
    pthread_mutex_unlock(&log->statmu);
}

/* Writes every entry of the batch with MDB_APPEND. */
static int write_batch(log_t *log, MDB_txn *txn, log__req_t *batch, int64_t time_ns)
{
    uint64_t seq = atomic_load(&log->head);
    for (log__req_t *req = batch; req; req = req->next) {
        req->first_seq = seq + 1;
        for (size_t i = 0; i < req->n; i++) {
            seq++;
            uint8_t kb[8];
            sp_be64_put(kb, seq);
            log->enc.n = 0;
            log_record_encode(&log->enc, seq, &req->entries[i], time_ns);
            MDB_val k = {8, kb}, v = {log->enc.n, log->enc.p};
            int rc = mdb_put(txn, log->events, &k, &v, MDB_APPEND);
            if (rc != 0) return rc;
        }
    }
    return 0;
}

/* Commits one batch; returns 0 or an SP_E* code. Grows the map and
 * retries when LMDB reports it full. */
static int commit_batch(log_t *log, log__req_t *batch, size_t events, int inject, uint64_t *new_head)
{
    int64_t now = sp_now_ns();
    /* Event times never go backwards, even if the wall clock does. */
    int64_t time_ns = now > log->last_time_ns ? now : log->last_time_ns;
    for (int attempt = 0;; attempt++) {
        int64_t t0 = sp_mono_ns();
        MDB_txn *txn;
        int rc = mdb_txn_begin(log->env.env, NULL, 0, &txn);
        if (rc == 0) {
            rc = write_batch(log, txn, batch, time_ns);
            if (rc == 0 && inject) rc = inject;
            if (rc == 0)
                rc = mdb_txn_commit(txn);
            else
                mdb_txn_abort(txn);
        }
        if (rc == MDB_MAP_FULL && attempt < MAX_GROW_RETRIES) {
            int grc = log__env_grow(&log->env);
            if (grc != 0) return grc;
            pthread_mutex_lock(&log->statmu);
            log->stats.map_grows++;
            pthread_mutex_unlock(&log->statmu);
            continue;
        }
        if (rc != 0) {
            rc = rc < 0 ? rc : log__err(rc);
            log__set_err(log, "commit of %zu events failed: %s", events, sp_strerror(rc));
            return rc;
        }
        record_latency(log, sp_mono_ns() - t0, events);
        log->last_time_ns = time_ns;
        *new_head = atomic_load(&log->head) + events;
        return 0;
    }
}

static void notify(log_t *log, uint64_t head)
{
    pthread_mutex_lock(&log->submu);
    for (size_t i = 0; i < log->nsubs; i++) log->subs[i].cb(log->subs[i].arg, head);
    pthread_mutex_unlock(&log->submu);
}

/* Takes whole submissions up to max_batch events (at least one). */
static log__req_t *take_batch(log_t *log, size_t *events)
{
    size_t max = log->opts.max_batch ? log->opts.max_batch : DEFAULT_MAX_BATCH;
    log__req_t *head = log->queue_head, *last = head;
    size_t n = head->n;
    while (last->next && n + last->next->n <= max) {
        last = last->next;
        n += last->n;
    }
    log->queue_head = last->next;
    if (log->queue_head == NULL) log->queue_tail = NULL;
    last->next = NULL;
    log->queued_entries -= n;
    *events = n;
    return head;
}

static void complete_all(log_t *log, log__req_t *batch, int status)
{
    bool waiters = false;
    while (batch) {
        log__req_t *next = batch->next;
        batch->status = status;
        waiters |= batch->waiter != NULL;
        log__req_complete(batch);
        batch = next;
    }
    /* Flags are set before donegen moves; a waiter reads donegen before
     * its flag, so it either sees the flag or sleeps on a stale word and
     * returns at once. No wake-up is lost. */
    if (waiters) {
        atomic_fetch_add(&log->donegen, 1);
        futex_wake_all(&log->donegen);
    }
}

static void *writer_main(void *arg)
{
    log_t *log = arg;
    for (;;) {
        pthread_mutex_lock(&log->mu);
        while (log->queue_head == NULL && !log->stopping) pthread_cond_wait(&log->cond, &log->mu);
        if (log->queue_head == NULL) {
            pthread_mutex_unlock(&log->mu);
            break;
        }
        size_t events;
        log__req_t *batch = take_batch(log, &events);
        int failed = log->failed, inject = 0;
        if (log->test_fail_n > 0) {
            log->test_fail_n--;
            inject = log->test_fail_code;
        }
        pthread_mutex_unlock(&log->mu);

        if (failed) {
            complete_all(log, batch, SP_EFAILED);
            continue;
        }
        uint64_t head = 0;
        int rc = commit_batch(log, batch, events, inject, &head);
        if (rc != 0) {
            pthread_mutex_lock(&log->mu);
            log->failed = rc;
            pthread_mutex_unlock(&log->mu);
            pthread_mutex_lock(&log->statmu);
            log->stats.commit_failures++;
            log->stats.failed = true;
            pthread_mutex_unlock(&log->statmu);
            sp_error("log", "writer failed: %s; appends are refused until the log is reopened", sp_strerror(rc));
            complete_all(log, batch, rc);
            continue;
        }
        atomic_store(&log->head, head);
        /* Subscribers hear of the commit before any submitter returns, so
         * an append that returned has always woken the projector. */
        notify(log, head);
        complete_all(log, batch, 0);
    }
    return NULL;
}

int log__writer_start(log_t *log)
{
    pthread_mutex_lock(&log->mu);
    log->thread_started = true;
    pthread_mutex_unlock(&log->mu);
    int rc = pthread_create(&log->thread, NULL, writer_main, log);
    if (rc != 0) {
        log->thread_started = false;
        return -rc;
    }
    return 0;
}

void log__writer_stop(log_t *log)
{
    if (!log->thread_started) return;
    pthread_mutex_lock(&log->mu);
    log->stopping = true;
    pthread_cond_signal(&log->cond);
    pthread_mutex_unlock(&log->mu);
    pthread_join(log->thread, NULL);
    log->thread_started = false;
}

void log_test_fail_commits(log_t *log, int n, int code)
{
    pthread_mutex_lock(&log->mu);
    log->test_fail_n = n;
    log->test_fail_code = code;
    pthread_mutex_unlock(&log->mu);
}
