/* Private to the engine (src/ingest/engine*.c). */
#ifndef SPOOL_ENGINE_INTERNAL_H
#define SPOOL_ENGINE_INTERNAL_H

#include "engine.h"
#include "ingest.h"

#include <pthread.h>

#define E_ID 37 /* a UUID and its NUL */

#define E_LATENCY_BUCKETS 12
extern const double e__latency_bounds_s[E_LATENCY_BUCKETS];

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

/* A resource class: what a task needs and where it may run. The key is
 * "<executor>:<name>", e.g. "docker:medium", "machine:windows.medium". */
typedef struct e_pq e_pq_t;
typedef struct {
    char key[96];
    char *name, *executor;
    double cpu;
    int64_t ram_mb;
    const char *os; /* the agent label it needs: "linux", "macos", "windows" */
    e_pq_t *ring;   /* per-project FIFOs with waiting tasks, served round-robin */
    size_t depth;
} e_class_t;

typedef struct e_task e_task_t;

/* A project as the engine sees it: counters, settings, usage queue. */
typedef struct {
    char *slug;
    uint64_t pipeline, job; /* last numbers given */
    int64_t limit;          /* tasks running or in the run queue at most; 0: no limit */
    bool retry;             /* retry a task once when its agent is lost */
    bool autocancel;        /* cancel superseded pipelines on non-default branches */
    char *default_branch;
    int64_t active;          /* tasks in the run queue or running */
    e_task_t *uhead, *utail; /* the usage queue: over the limit, waiting */
    size_t usage_depth;
} e_proj_t;

/* Per (class, project): a FIFO of tasks. */
struct e_pq {
    e_proj_t *proj;
    e_task_t *head, *tail;
    e_pq_t *next; /* in the class's ring */
};

enum { Q_NONE, Q_USAGE, Q_RUN };

/* One node of a job (parallelism N gives N tasks). */
struct e_task {
    e_job_t *job;
    int index;
    const char *status; /* blocked, queued, running, success, failed, timedout, infrastructure_fail, canceled */
    int where;          /* Q_NONE, Q_USAGE, Q_RUN */
    e_task_t *qprev, *qnext;
    uint64_t enq;   /* enqueue order (FIFO across queues) */
    int64_t enq_ns; /* when it became runnable (monotonic) */
    char task_id[E_ID];
    uint8_t lease_hash[32];
    char agent_id[E_ID];
    int64_t deadline_ns;
    int retries;
    char excluded[E_ID]; /* an agent that lost it once */
    sp_map_t out_seq;    /* "step:index" -> next expected chunk seq */
};

struct e_job {
    char id[E_ID];
    char *name; /* name in the workflow */
    char *def;  /* key in processed.jobs; NULL for approval jobs */
    bool approval;
    int64_t number;
    const char *status; /* blocked, queued, on_hold, running, success, failed, not_run, canceled, ... */
    e_wf_t *wf;
    int *deps; /* indexes into wf->jobs of the jobs this one requires */
    int ndeps;
    e_class_t *cls; /* NULL for approval jobs */
    e_task_t *tasks;
    int ntasks;
    bool cancel; /* cancel requested while running */
};

struct e_wf {
    char id[E_ID];
    char *name;
    e_pipe_t *p;
    e_job_t *jobs;
    int njobs;
    bool canceled;
    char *canceled_by;
};

typedef struct {
    char id[E_ID];
    char *name;
    json_t *labels;
    int slots;
    double cpus; /* advertised (0: the agent does not count resources) */
    int64_t ram_mb;
    bool reserve; /* keep 2 CPUs and 4 GB for the agent itself, as the guide says */
    double used_cpu;
    int64_t used_mb;
    int running;
    bool drain;
    bool claimed_once;
    int64_t last_seen_ns;
    int64_t registered_ns;
} e_agent_t;

struct engine_claim {
    engine_claim_t *next, *prev;
    char agent_id[E_ID];
    engine_claim_cb cb;
    void *arg;
    bool waiting; /* in the waiters list */
    json_t *task; /* set when assigned */
};

struct engine {
    pthread_mutex_t mu;
    engine_opts_t o;
    char base_url[256];
    sp_map_t projects;    /* slug -> e_proj_t */
    sp_map_t classes;     /* key -> e_class_t */
    sp_map_t pipes;       /* id -> e_pipe_t (pending config or with live workflows) */
    sp_map_t wfs;         /* id -> e_wf_t (running) */
    sp_map_t jobs;        /* id -> e_job_t (of running workflows) */
    sp_map_t tasks;       /* task id -> e_job_t (running) */
    sp_map_t agents;      /* id -> e_agent_t */
    sp_map_t deliveries;  /* recent GitHub deliveries -> "" */
    char **delivery_ring; /* bounds `deliveries` */
    size_t delivery_next;
    uint64_t enq_next;
    engine_claim_t *claims_head, *claims_tail;
    /* statistics for /metrics: run-queue latency (queued to started) as a
     * histogram, and the scheduler's own time spent placing tasks */
    double queue_latency_sum_s;
    uint64_t queue_latency_n;
    uint64_t queue_latency_buckets[E_LATENCY_BUCKETS + 1];
    uint64_t placements;
    int64_t sched_ns;
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
/* The project's state (loaded from the views on first use). */
e_proj_t *e__project(engine_t *e, const char *slug);
/* Makes a job runnable: its tasks enter the usage or run queue (an
 * approval job goes on hold). */
void e__job_queue(engine_t *e, e_batch_t *b, e_job_t *j);
void e__task_unqueue(engine_t *e, e_task_t *t);
/* Puts a task in its project's usage queue or its class's run queue. */
void e__task_enqueue(engine_t *e, e_task_t *t);
/* Gives queued tasks to waiting claims. */
void e__dispatch(engine_t *e, e_batch_t *b);
/* Records the end of one task; when the job's last task ends, the job
 * ends and what follows in its workflow is decided. */
void e__task_end(engine_t *e, e_batch_t *b, e_task_t *t, const char *status, const char *message);
/* Ends a job that never ran (canceled while waiting, approval decided). */
void e__job_end(engine_t *e, e_batch_t *b, e_job_t *j, const char *status, const char *message, const char *by);
/* Cancels every job of a workflow that has not ended. */
void e__wf_cancel(engine_t *e, e_batch_t *b, e_wf_t *wf, const char *by);
/* The resource class of a job definition, or NULL (and why in err). */
e_class_t *e__class_of(engine_t *e, const json_t *def, char *err, size_t errlen);
/* Fills exec with {type, resource_class} as the job asked for them. */
void e__executor_of(const json_t *def, json_t *exec);
void e__classes_init(engine_t *e, const json_t *conf);
void e__classes_free(engine_t *e);
void e__wf_free(engine_t *e, e_wf_t *wf);
void e__pipe_release(engine_t *e, e_pipe_t *p);
void e__pipe_free(e_pipe_t *p);
json_t *e__task_doc(engine_t *e, e_task_t *t, const char *lease);
/* After jobs of wf changed: not_run, newly runnable jobs, the end. */
void e__wf_progress(engine_t *e, e_batch_t *b, e_wf_t *wf);
/* Moves a project's usage queue into the run queue while under its limit. */
void e__promote(engine_t *e, e_proj_t *p);
/* Moves a task from the usage queue to the run queue despite the limit. */
bool e__task_force_run(engine_t *e, e_task_t *t);
bool e__agent_has_label(const e_agent_t *a, const char *label);
bool e__agent_could_fit(const e_agent_t *a, const e_class_t *c);
/* A pipeline in memory, loaded from the views if needed. */
e_pipe_t *e__pipe_load(engine_t *e, const char *id);
int e__rerun_workflow(engine_t *e, e_batch_t *b, e_pipe_t *p, const char *name, const char *old_id, const json_t *keep,
                      char *err, size_t errlen);
void e__job_free(engine_t *e, e_job_t *j);
void e__lease_hash(const char *lease, uint8_t out[32]);
int e__load(engine_t *e, char *err, size_t errlen);

#endif
