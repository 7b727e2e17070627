/*
 * engine: the decider. Commands from the outside world (API writes,
 * webhooks, agent reports, reactor results) are checked against the
 * current state and turn into events appended to the log, or into an
 * error that changes nothing.
 *
 * The engine keeps in memory what deciding needs and what the views may
 * not show yet: per-project pipeline and job counters, the workflows
 * that are running with their jobs' states, the run queue, the tasks
 * given to agents with their leases, the agents and their pending
 * claims. It is rebuilt from the views at open (the views must have
 * caught up with the log), and from then on it is the authority: every
 * decision updates it under one mutex and submits its events in the
 * same critical section, so the log order is the decision order.
 *
 * Completion: a command that returns 0 calls its done callback exactly
 * once: on the log writer thread once its events are durable, or on the
 * calling thread before the command returns when it appended nothing
 * (e.g. a redelivered webhook). The callback must be quick (post to a
 * loop, signal a semaphore). `result` is borrowed for the call.
 *
 * Threads: every function may be called from any thread.
 */
#ifndef SPOOL_ENGINE_H
#define SPOOL_ENGINE_H

#include "../projections/projections.h"
#include "../secrets/secrets.h"

#include <jansson.h>

typedef struct engine engine_t;

typedef void (*engine_done_cb)(void *arg, int status, uint64_t seq, const json_t *result);

typedef struct {
    log_t *log;
    proj_t *proj;
    secrets_t *secrets;
    int64_t lease_timeout_ms; /* 0: 30 s */
    int64_t job_timeout_s;    /* 0: 5 hours */
    const char *base_url;     /* for web_url / build_url, e.g. http://127.0.0.1:8080 */
    /* Resource classes: {"docker": {"small": {"cpu": 2, "ram_mb": 4096}, ...},
     * "machine": {...}, "macos": {...}}; NULL: the operations guide's
     * defaults. Borrowed for engine_open. */
    const json_t *resource_classes;
    /* Tasks of one project in the run queue or running at most (0: no
     * limit), unless the project sets its own. */
    int64_t project_concurrency;
} engine_opts_t;

/* Opens the engine on caught-up views. */
int engine_open(engine_t **out, const engine_opts_t *o, char *errbuf, size_t errlen);
void engine_close(engine_t *e);

/* Errors: commands return 0, or SP_EINVAL / SP_ENOTFOUND / SP_EEXIST /
 * ... with a message in err (a sentence for the HTTP `message`). */

/* ---- tokens and projects ---- */
/* role: "admin", "user" or "agent" (an agent token may only run the agent
 * protocol). result: {id, name, role, token} (the only time the token is
 * shown). */
int engine_token_create(engine_t *e, const char *name, const char *role, const char *actor, engine_done_cb cb,
                        void *arg, char *err, size_t errlen);
int engine_token_revoke(engine_t *e, const char *id, const char *actor, engine_done_cb cb, void *arg, char *err,
                        size_t errlen);
/* Checks a token (Circle-Token / Bearer value). SP_ENOTFOUND when unknown
 * or revoked; role receives "admin" or "user" and id the token id. */
int engine_token_check(engine_t *e, const char *token, char role[16], char id[PROJ_ID_MAX]);

/* slug: "gh/ORG/REPO" (also "github/ORG/REPO"); url: the git URL the
 * server fetches from (file://, https://); secret: the webhook secret or
 * NULL; git_token: a token for fetching over https, or NULL (both sealed
 * before they reach the log). result: {id, slug, name, vcs_url}. */
int engine_project_add(engine_t *e, const char *slug, const char *url, const char *secret, const char *git_token,
                       const char *default_branch, const char *actor, engine_done_cb cb, void *arg, char *err,
                       size_t errlen);
/* what: "follow", "unfollow", "stop", "resume" (building) */
int engine_project_set(engine_t *e, const char *slug, const char *what, const char *actor, engine_done_cb cb, void *arg,
                       char *err, size_t errlen);
/* The project's webhook secret in plain text, appended to secret (caller
 * frees); nothing appended when the project has none. SP_ENOTFOUND for an
 * unknown project. */
int engine_project_secret(engine_t *e, const char *slug, sp_buf_t *secret);
/* Normalizes "github/org/repo" or "gh/org/repo" into "gh/org/repo". */
int engine_slug_normalize(const char *in, char *out, size_t n);

/* ---- pipelines ---- */
typedef struct {
    const char *slug;
    const char *trigger_type; /* "webhook" or "api" */
    const char *actor;
    const char *branch; /* exactly one of branch and tag */
    const char *tag;
    const char *revision; /* 40-hex sha; NULL: resolve the branch/tag head when fetching config */
    const char *subject, *body;
    const char *delivery;     /* X-GitHub-Delivery: a redelivery creates nothing */
    const json_t *parameters; /* pipeline parameters (object) or NULL */
} engine_trigger_t;
/* result: {id, state, number, created_at, duplicate: bool} */
int engine_trigger(engine_t *e, const engine_trigger_t *t, engine_done_cb cb, void *arg, char *err, size_t errlen);

/* What the config reactor learned about a pipeline. */
typedef struct {
    const char *pipeline_id;
    const char *revision;       /* resolved commit */
    const char *subject, *body; /* commit message, when the trigger had none */
    const char *source;         /* the YAML as fetched */
    /* On success: */
    const char *compiled_yaml;
    const json_t *processed;
    /* On failure: */
    const char *error_type; /* "config" or "config-fetch" */
    const char *error_message;
} engine_config_t;
int engine_config_result(engine_t *e, const engine_config_t *c, engine_done_cb cb, void *arg, char *err, size_t errlen);

/* Pipelines created but not yet given config (for the reactor after a
 * restart): calls cb with each pipeline id. */
void engine_pending_configs(engine_t *e, void (*cb)(void *arg, const char *pipeline_id), void *arg);

/* ---- agents ---- */
/* info: {name, version, labels[], cpus, memory_mb, slots}. result: {agent_id, heartbeat_ms, lease_timeout_ms} */
int engine_agent_register(engine_t *e, const json_t *info, engine_done_cb cb, void *arg, char *err, size_t errlen);

/* A claim waits for a task. cb runs once: with a task (the TASK document
 * of docs/agent-protocol.md, borrowed) after its job.started event is
 * durable, or with NULL after engine_claim_cancel or engine_close. It
 * runs on the writer thread or on the thread that cancels. */
typedef struct engine_claim engine_claim_t;
typedef void (*engine_claim_cb)(void *arg, const json_t *task);
int engine_claim(engine_t *e, const char *agent_id, engine_claim_cb cb, void *arg, engine_claim_t **out, char *err,
                 size_t errlen);
/* Withdraws a claim that has not been given a task (cb runs with NULL);
 * returns false when a task was already given (cb runs or ran with it). */
bool engine_claim_cancel(engine_t *e, engine_claim_t *c);

/* events: the "events" array of the protocol. result: {cancel: bool}.
 * A lease that is no longer valid gives SP_ECLOSED. */
int engine_task_events(engine_t *e, const char *task_id, const char *lease, const json_t *events, engine_done_cb cb,
                       void *arg, char *err, size_t errlen);
int engine_task_output(engine_t *e, const char *task_id, const char *lease, int step, int index, uint32_t seq,
                       sp_slice_t zstd_chunk, engine_done_cb cb, void *arg, char *err, size_t errlen);
int engine_task_finish(engine_t *e, const char *task_id, const char *lease, const char *status, const char *message,
                       engine_done_cb cb, void *arg, char *err, size_t errlen);
/* result: {cancel: [task ids]} */
int engine_heartbeat(engine_t *e, const char *agent_id, const json_t *running, engine_done_cb cb, void *arg, char *err,
                     size_t errlen);

/* Fails tasks whose lease expired (agent lost) as infrastructure_fail, or
 * retries them once on another agent when the project allows it. Called
 * periodically (serve: every second). */
void engine_tick(engine_t *e);

/* ---- workflow control ---- */
/* result: {message} */
int engine_cancel_workflow(engine_t *e, const char *wf_id, const char *actor, engine_done_cb cb, void *arg, char *err,
                           size_t errlen);
int engine_cancel_job(engine_t *e, const char *job_id, const char *actor, engine_done_cb cb, void *arg, char *err,
                      size_t errlen);
/* approval_request_id is the approval job's id. */
int engine_approve(engine_t *e, const char *wf_id, const char *request_id, const char *actor, engine_done_cb cb,
                   void *arg, char *err, size_t errlen);
/* A new workflow of the same pipeline, linked to the old one (finished).
 * from_failed: jobs that succeeded are not run again; job_ids (array or
 * NULL): only those jobs (and what requires them) run again. result:
 * {workflow_id}. */
int engine_rerun(engine_t *e, const char *wf_id, bool from_failed, const json_t *job_ids, const char *actor,
                 engine_done_cb cb, void *arg, char *err, size_t errlen);
/* settings: {concurrency, retry_infrastructure_fail, autocancel_builds}
 * (any subset). */
int engine_project_settings(engine_t *e, const char *slug, const json_t *settings, const char *actor, engine_done_cb cb,
                            void *arg, char *err, size_t errlen);

/* ---- fleet and queues (operators) ---- */
/* Every agent: {id, name, status (initializing, ready, down), drain,
 * labels, slots, running, cpus, memory_mb, allocations: [...]}. */
int engine_nodes(engine_t *e, json_t **out);
/* agent: its id or its (unique) name. */
int engine_node_drain(engine_t *e, const char *agent, bool drain, const char *actor, engine_done_cb cb, void *arg,
                      char *err, size_t errlen);
/* {classes: [{class, run_queue, ...}], projects: [{project, usage_queue,
 * active, limit}], queued, jobs: [{job_id, ..., waiting: {...}}]} with at
 * most limit jobs, oldest first. */
int engine_queue_status(engine_t *e, size_t limit, json_t **out);
/* Appends the queue, fleet and scheduler metrics in Prometheus text format:
 * spool_run_queue_depth{resource_class}, spool_usage_queue_depth,
 * spool_tasks_running, spool_agents{status},
 * spool_run_queue_latency_seconds (histogram),
 * spool_scheduler_placements_total, spool_scheduler_seconds_total. */
void engine_metrics(engine_t *e, sp_buf_t *b);
/* Why a queued job waits: {queue: usage|run, reason, ...}; SP_ENOTFOUND
 * when it is not queued. */
int engine_job_waiting(engine_t *e, const char *job_id, json_t **out);
int engine_queue_cancel_oldest(engine_t *e, size_t n, const char *actor, engine_done_cb cb, void *arg, char *err,
                               size_t errlen);
/* Moves a job from the usage queue to the run queue (past the limit). */
int engine_queue_promote(engine_t *e, const char *job_id, const char *actor, engine_done_cb cb, void *arg, char *err,
                         size_t errlen);

/* Decodes a chunk of output (zstd-compressed msgpack array of [t_ms,
 * stream, text]) into [{type: "out"|"err", time, message}] entries
 * appended to out; t0_ns is the step's start. */
int engine_chunk_decode(sp_slice_t zstd_chunk, int64_t t0_ns, json_t *out);

#endif
