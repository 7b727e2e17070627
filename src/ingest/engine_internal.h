/* Private to the engine (src/ingest/engine*.c). */
#ifndef SPOOL_ENGINE_INTERNAL_H
#define SPOOL_ENGINE_INTERNAL_H

#include "engine.h"
#include "ingest.h"

#include <pthread.h>

#define E_ID 37 /* a UUID and its NUL */

typedef struct e_pipe e_pipe_t;
typedef struct e_wf e_wf_t;
typedef struct e_job e_job_t;

struct e_pipe {
    char id[E_ID];
    int64_t number;
    char *slug, *org, *repo, *url;
    char *branch, *tag; /* NULL when absent */
    char revision[48];
    char *subject, *body;
    json_t *processed; /* the processed config, once fetched */
    bool config_pending;
    int live_workflows; /* the pipeline is forgotten when this drops to 0 */
};

struct e_job {
    char id[E_ID];
    char *name; /* name in the workflow */
    char *def;  /* key in processed.jobs; NULL for approval jobs */
    bool approval;
    int64_t number;
    const char *status; /* static string: blocked, queued, on_hold, running, success, ... */
    e_wf_t *wf;
    int *deps; /* indexes into wf->jobs of the jobs this one requires */
    int ndeps;
    /* run queue */
    e_job_t *qprev, *qnext;
    bool in_queue;
    /* task */
    char task_id[E_ID];
    uint8_t lease_hash[32];
    char agent_id[E_ID];
    int64_t deadline_ns;
    bool cancel;
    sp_map_t out_seq; /* "step:index" -> next expected chunk seq (as uintptr) */
};

struct e_wf {
    char id[E_ID];
    char *name;
    e_pipe_t *p;
    e_job_t *jobs;
    int njobs;
    bool done;
};

typedef struct {
    char id[E_ID];
    char *name;
    int slots;
    int64_t last_seen_ns;
} e_agent_t;

struct engine_claim {
    engine_claim_t *next, *prev;
    char agent_id[E_ID];
    engine_claim_cb cb;
    void *arg;
    bool waiting; /* in the waiters list */
    json_t *task; /* set when assigned */
};

typedef struct {
    uint64_t pipeline, job;
} e_counter_t;

struct engine {
    pthread_mutex_t mu;
    engine_opts_t o;
    char base_url[256];
    sp_map_t counters;    /* slug -> e_counter_t */
    sp_map_t pipes;       /* id -> e_pipe_t (pending config or with live workflows) */
    sp_map_t wfs;         /* id -> e_wf_t (running) */
    sp_map_t jobs;        /* id -> e_job_t (of running workflows) */
    sp_map_t tasks;       /* task id -> e_job_t (running) */
    sp_map_t agents;      /* id -> e_agent_t */
    sp_map_t deliveries;  /* recent GitHub deliveries -> "" */
    char **delivery_ring; /* bounds `deliveries` */
    size_t delivery_next;
    e_job_t *qhead, *qtail;
    engine_claim_t *claims_head, *claims_tail;
    bool failed; /* an append failed: state may be ahead of the log */
};

/* A batch of events decided together, appended as one submission. */
typedef struct {
    engine_t *e;
    log_entry_t *entries;
    sp_buf_t *bodies;
    size_t n, cap;
    const char *actor;
    json_t *result;
    engine_done_cb cb;
    void *arg;
    engine_claim_t **notify; /* claims given a task in this batch */
    size_t nnotify;
} e_batch_t;

void e__batch_init(e_batch_t *b, engine_t *e, const char *actor, engine_done_cb cb, void *arg);
/* Adds an event whose body is a JSON object (stolen). */
void e__emit(e_batch_t *b, int type, json_t *body);
/* Adds an event whose msgpack body is given. */
void e__emit_raw(e_batch_t *b, int type, sp_buf_t *body);
/* Submits (under e->mu). On success the batch is owned by the log
 * completion; on failure it is released and cb is not called. With no
 * events, cb runs after the caller unlocks: see e__finish. */
int e__submit(e_batch_t *b);
/* For batches with no events: runs cb (call without e->mu) and frees. */
void e__finish_empty(e_batch_t *b);

void e__uuid(char out[E_ID]);
void e__job_queue(engine_t *e, e_batch_t *b, e_job_t *j);
void e__job_unqueue(engine_t *e, e_job_t *j);
/* Gives queued jobs to waiting claims. */
void e__dispatch(engine_t *e, e_batch_t *b);
/* Records a job's end and decides what follows in its workflow. */
void e__job_end(engine_t *e, e_batch_t *b, e_job_t *j, const char *status, const char *message);
void e__wf_free(engine_t *e, e_wf_t *wf);
void e__pipe_release(engine_t *e, e_pipe_t *p);
void e__pipe_free(e_pipe_t *p);
json_t *e__task_doc(engine_t *e, e_job_t *j, const char *lease);
void e__lease_hash(const char *lease, uint8_t out[32]);
int e__load(engine_t *e, char *err, size_t errlen);

#endif
