/*
 * projections: pure folds of the log into views.
 *
 * A projection has a name, a code version and an apply function that
 * reads one event and writes its own tables (named "<name>.<table>") in
 * the views transaction it is given. No clock, no I/O, no randomness:
 * replaying the log gives the same views. Each projection's checkpoint
 * (the last sequence it applied, with its version) is committed in the
 * same transaction as its state. On open, a projection whose stored
 * version differs from its code version is emptied and rebuilt from
 * sequence 1; a missing views folder rebuilds everything.
 *
 * Threads: proj_open/proj_close on one thread. The projector thread
 * (proj_start) is the only writer of the views. Readers may open read
 * transactions on proj_kv() from any thread.
 */
#ifndef SPOOL_PROJECTIONS_H
#define SPOOL_PROJECTIONS_H

#include "../log/log.h"

#include <jansson.h>

typedef struct {
    const char *name;  /* [a-z0-9_]+, also the prefix of its tables */
    uint32_t version;  /* bump on any change of layout or meaning */
    size_t state_size; /* zeroed scratch state kept across batches */
    /* Applies one event. Unknown types must be skipped (return 0). */
    int (*apply)(void *state, log_kvtxn_t *t, const log_event_t *ev);
    /* Optional: writes what apply buffered, before the batch commits. */
    int (*flush)(void *state, log_kvtxn_t *t);
    /* Optional: drops what apply buffered when the batch is aborted
     * (before the state is zeroed). */
    void (*discard)(void *state);
    /* Every table it uses ("<name>.<table>"), NULL-terminated. They are
     * created when the projection opens: readers cannot see tables made
     * later (see log_kvtxn_table). */
    const char *const *tables;
} proj_ops_t;

typedef struct proj proj_t;

typedef struct {
    const char *name;
    uint32_t version;
    uint64_t checkpoint;
    bool rebuilt; /* emptied at open (new, version change, or no views) */
} proj_info_t;

/* The projections this build ships, in apply order. */
extern const proj_ops_t *const proj_all[];
extern const size_t proj_all_count;

/* Opens the views in dir for the given projections. ops must outlive p. */
int proj_open(proj_t **out, log_t *log, const char *dir, const proj_ops_t *const *ops, size_t n, char *errbuf,
              size_t errlen);
void proj_close(proj_t *p); /* stops the projector thread first */

/* Applies everything up to the log head on the calling thread. */
int proj_catch_up(proj_t *p);
/* Starts the projector thread, which follows the log from now on. */
int proj_start(proj_t *p);

/* Lowest checkpoint of all projections: every view reflects the log up
 * to here. */
uint64_t proj_applied(proj_t *p);
/* Error that stopped the projector (0 while healthy), with a message. */
int proj_failed(proj_t *p, char *msg, size_t n);
size_t proj_count(proj_t *p);
void proj_info(proj_t *p, size_t i, proj_info_t *out);
log_kv_t *proj_kv(proj_t *p);

/* Waits until proj_applied >= seq or the timeout passes (SP_ETIMEDOUT)
 * or the projector fails. Blocking: not for the event loop. */
int proj_wait(proj_t *p, uint64_t seq, int64_t timeout_ns);

/* cb runs on the projector thread after every views commit with the new
 * applied sequence. Quick and non-blocking, like log_notify_cb. */
typedef void (*proj_notify_cb)(void *arg, uint64_t applied);
void proj_subscribe(proj_t *p, proj_notify_cb cb, void *arg);
void proj_unsubscribe(proj_t *p, proj_notify_cb cb, void *arg);

/* Dumps every table of the views as text lines "<table>\t<hex key>\t<hex
 * value>" in key order, checkpoints excluded (they hold versions, not
 * state). Used to prove a rebuild gives identical views. */
int proj_dump(proj_t *p, sp_buf_t *out);
/* How many documents a projection keeps parsed during one batch before
 * it writes them out (4096; tests lower it to exercise those writes). */
extern size_t proj_doc_cache_max;

/* ---- the counts projection: events per type and per UTC day ---- */
extern const proj_ops_t proj_counts_ops;
typedef void (*proj_count_cb)(void *arg, sp_slice_t key, uint64_t count);
/* Calls cb for every type (key: type name) in name order. */
int proj_counts_by_type(log_kvtxn_t *t, proj_count_cb cb, void *arg);
/* Calls cb for every (day, type) pair from day `from` ("YYYY-MM-DD")
 * on; key is "YYYY-MM-DD|type". */
int proj_counts_by_day(log_kvtxn_t *t, const char *from, proj_count_cb cb, void *arg);
/* "YYYY-MM-DD" (UTC) for a time in ns since the epoch; out >= 11 bytes. */
void proj_day_of(int64_t ns, char *out);

/* ---- registry: API tokens and projects ---- */
extern const proj_ops_t proj_registry_ops;
/* Called per document; return false to stop. doc is borrowed for the call. */
typedef bool (*proj_doc_cb)(void *arg, const json_t *doc);
/* Token by the hex SHA-256 of its value: {id, name, role, revoked}. */
int proj_token_lookup(log_kvtxn_t *t, const char *hash_hex, json_t **out);
/* Project document by slug (CircleCI's Project shape plus _secret,
 * _building, _followers). Caller decrefs. SP_ENOTFOUND when unknown. */
int proj_project_get(log_kvtxn_t *t, const char *slug, json_t **out);
int proj_projects_each(log_kvtxn_t *t, proj_doc_cb cb, void *arg);

/* ---- pipelines, workflows, jobs, steps, output ----
 * Documents have CircleCI's API v2 shapes (Pipeline, Workflow, workflow
 * job item / job details) plus fields of ours starting with "_". Getters
 * return SP_ENOTFOUND for unknown ids; the caller decrefs *out. */
extern const proj_ops_t proj_pipelines_ops;
#define PROJ_ID_MAX 64
int proj_pipeline_get(log_kvtxn_t *t, const char *id, json_t **out);
/* {source, compiled, processed}: YAML source, processed YAML, processed JSON text */
int proj_pipeline_config(log_kvtxn_t *t, const char *id, json_t **out);
int proj_pipeline_by_number(log_kvtxn_t *t, const char *slug, uint64_t number, char id[PROJ_ID_MAX]);
int proj_pipeline_by_delivery(log_kvtxn_t *t, const char *delivery, char id[PROJ_ID_MAX]);
/* Last pipeline and job numbers given in a project (0 when none). */
int proj_counters(log_kvtxn_t *t, const char *slug, uint64_t *pipeline, uint64_t *job);
/* A project's pipelines, newest first, starting below number `before`
 * (0: from the newest). */
int proj_pipelines_list(log_kvtxn_t *t, const char *slug, uint64_t before, proj_doc_cb cb, void *arg);
int proj_workflow_get(log_kvtxn_t *t, const char *id, json_t **out);
/* A pipeline's workflows in creation order. */
int proj_workflows_of(log_kvtxn_t *t, const char *pipeline_id, proj_doc_cb cb, void *arg);
/* Pipelines whose config is not fetched yet. */
int proj_pending_pipelines(log_kvtxn_t *t, void (*cb)(void *arg, const char *id), void *arg);
/* Workflows that have not finished. */
int proj_active_workflows(log_kvtxn_t *t, proj_doc_cb cb, void *arg);
int proj_job_get(log_kvtxn_t *t, const char *id, json_t **out);
int proj_job_by_number(log_kvtxn_t *t, const char *slug, uint64_t number, char id[PROJ_ID_MAX]);
/* A job's steps ordered by step id then parallel index:
 * {step, index, name, status, start_time, end_time, exit_code,
 *  run_time_millis, bash_command, background, _lines, _bytes}. */
int proj_steps_each(log_kvtxn_t *t, const char *job_id, proj_doc_cb cb, void *arg);

/* One stored chunk of step output: the job.output event at log_seq. */
typedef struct {
    uint32_t step, index, seq;
    uint64_t log_seq;
    uint32_t lines, bytes;
} proj_chunk_t;
typedef bool (*proj_chunk_cb)(void *arg, const proj_chunk_t *c);
/* Chunks of a job in (step, index, seq) order; step < 0: every step;
 * index < 0: every index of step; with both given, chunks seq >= from. */
int proj_output_each(log_kvtxn_t *t, const char *job_id, int step, int index, uint32_t from, proj_chunk_cb cb,
                     void *arg);

#endif
