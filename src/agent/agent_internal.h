/*
 * Internals of the agent module, shared by its files, its unit tests and
 * its benchmark. Nothing outside src/agent/, tests/agent/ and
 * tools/bench/ includes this.
 *
 *   task.c         the TASK document of the protocol, parsed into structs
 *   chunk.c        output chunks: msgpack lines, zstd frames
 *   exec.c         the executor: runs a task's steps on a private libuv
 *                  loop; the shell executor and the step machinery
 *   exec_docker.c  the docker executor: containers, steps as execs in them
 *                  (the two share exec_internal.h, which nobody else sees)
 *   sandbox.c      bubblewrap: probing, argv, killing a sandbox (Linux only)
 *   docker.c       the Docker Engine API client on hc (docker executor)
 *   fsutil.c       mkdir -p, rm -rf
 *   http.c         the blocking client of the server (abortable, one per thread)
 *   report.c       the uploader thread of one task: events, output, finish
 *   pool.c         the agent itself: register, claim, heartbeat, shutdown
 */
#ifndef SPOOL_AGENT_INTERNAL_H
#define SPOOL_AGENT_INTERNAL_H

#include "agent.h"
#include "../hc/hc.h"

#include <sys/types.h>

#define AGENT__CHUNK_BYTES       (256 * 1024) /* flush an output chunk at this many msgpack bytes */
#define AGENT__FLUSH_MS          100          /* ... or this long after its first line */
#define AGENT__MAX_LINE          (64 * 1024)  /* longer lines are cut (at a UTF-8 boundary) */
#define AGENT__DEFAULT_NO_OUTPUT (600 * 1000) /* ms; CircleCI's 10 minutes */
#define AGENT__DEFAULT_JOB_LIMIT (18000 * 1000LL)

/* ---- the task (task.c) ------------------------------------------------ */

typedef struct {
    char *name, *value;
} agent__env_t;

typedef enum { AGENT__WHEN_ON_SUCCESS, AGENT__WHEN_ON_FAIL, AGENT__WHEN_ALWAYS } agent__when_t;

typedef struct {
    int id;                  /* 101, 102, ... */
    char *type, *name;       /* never NULL */
    char *command;           /* run */
    char *shell;             /* run; NULL: the job's shell or the default */
    char *working_directory; /* run; NULL: the job's */
    char *path;              /* checkout; NULL: the job's working directory */
    agent__env_t *env;
    size_t nenv;
    bool background;
    agent__when_t when;
    int64_t no_output_timeout_ms; /* 0: none */
} agent__step_t;

/* One image of a docker executor (the config's docker list). The first
 * is the primary container, where steps run; the others are services. */
typedef struct {
    char *image;                  /* never NULL */
    char *name, *user;            /* may be NULL */
    char **entrypoint, **command; /* NULL-terminated words; NULL when absent */
    agent__env_t *env;
    size_t nenv;
    char *auth_user, *auth_pass; /* may be NULL */
} agent__image_t;

typedef struct {
    char *task_id, *lease; /* never NULL */
    char *job_name;        /* never NULL */
    int64_t job_number;
    char *checkout_url, *checkout_revision, *checkout_branch, *checkout_tag; /* may be NULL */
    char *working_directory;                                                 /* never NULL ("~/project" by default) */
    char *shell;                                                             /* NULL: /bin/bash -eo pipefail */
    agent__env_t *env;
    size_t nenv;
    int node_index;
    int64_t job_timeout_ms;
    agent__step_t *steps;
    size_t nsteps;
    char *executor_type;    /* "docker", "machine", ...; NULL when absent */
    agent__image_t *images; /* executor.images, else executor.image alone */
    size_t nimages;
} agent__task_t;

/* Parses a TASK object (the value of "task" in a claim answer). Every
 * string is copied; free with agent__task_free. SP_EINVAL with a reason in
 * err when a required field is missing or has the wrong type. */
int agent__task_parse(const char *json, size_t n, agent__task_t **out, char *err, size_t errlen);
void agent__task_free(agent__task_t *t);

/* ---- output chunks (chunk.c) -------------------------------------------
 * A chunk is a msgpack array of [t_ms, stream, text] lines. It is built in
 * place: the array header is written as array32 with a zero count, and
 * agent__chunk_seal patches the count, so lines are appended without
 * knowing how many will come (non-minimal headers are valid msgpack). */
typedef struct {
    sp_buf_t buf;
    uint32_t nlines;
} agent__chunk_t;

void agent__chunk_init(agent__chunk_t *c);
void agent__chunk_add(agent__chunk_t *c, uint64_t t_ms, int stream, const char *text, size_t n);
/* Patches the header; the chunk is then a complete msgpack document. */
void agent__chunk_seal(agent__chunk_t *c);
static inline bool agent__chunk_empty(const agent__chunk_t *c) { return c->nlines == 0; }
void agent__chunk_free(agent__chunk_t *c);

/* Compresses src into dst (replacing its content) as one zstd frame.
 * cctx is a ZSTD_CCtx * (void * keeps zstd.h out of this header). */
int agent__zstd_compress(void *cctx, int level, const void *src, size_t n, sp_buf_t *dst);

/* Decodes a compressed chunk and calls cb for every line in order; a
 * non-zero return from cb stops and is returned. SP_ECORRUPT when the
 * frame or the msgpack is not a valid chunk. Used by the tests (the
 * server has its own decoder in ingest). */
typedef int (*agent__line_cb)(void *arg, uint64_t t_ms, int stream, const char *text, size_t n);
int agent__chunk_decode(const void *z, size_t zn, agent__line_cb cb, void *arg);

/* Splits a shell setting ("/bin/sh -eo pipefail") into words; single and
 * double quotes group, as in a shell. The array has room for `extra`
 * more words. Caller frees with agent__argv_free. (exec.c) */
char **agent__split_words(const char *s, size_t extra);

/* ---- filesystem (fsutil.c) --------------------------------------------- */
int agent__mkdirs(const char *path, mode_t mode); /* mkdir -p; 0 if it exists */
/* rm -rf, also through directories a job made read-only. 0 if absent. */
int agent__rmtree(const char *path);

/* ---- sandbox (sandbox.c) ----------------------------------------------- */

/* Finds bwrap on PATH and runs a trial sandbox. On success *path is its
 * absolute path (caller frees with free). SP_EIO with a reason in err when
 * there is no bwrap, the platform has none, or the trial fails. */
int agent__sandbox_probe(char **path, char *err, size_t errlen);

/* argv for running cmd inside a sandbox: read-only /, a writable task
 * directory, tmp_dir bound on /tmp, own PID namespace, new session, dies
 * with its parent, network shared, bwrap writing its info (the sandbox
 * init's pid) on info_fd. ro_extra (may be NULL) is one more existing
 * path bound read-only at its own path after /tmp, for what the private
 * /tmp would hide. Caller frees with agent__argv_free. */
char **agent__sandbox_argv(const char *bwrap, const char *task_dir, const char *tmp_dir, const char *ro_extra,
                           const char *cwd, char *const *cmd, int info_fd);
void agent__argv_free(char **argv);
/* Reads "child-pid" from bwrap's info JSON; 0 if not (yet) there. */
pid_t agent__sandbox_info_pid(const char *json, size_t n);

/* ---- sinks and the executor (exec.c) ----------------------------------- */

/* Where an executor's results go. Called on the executor's thread, in
 * order: for every step, step_started, its output chunks (seq 0, 1, ...),
 * step_finished. Steps of background processes interleave with others. */
typedef struct {
    void *arg;
    void (*step_started)(void *arg, int step, int index, const char *name, const char *bash_command, int64_t at_ms);
    /* Takes the sealed chunk's buffer (and leaves *chunk empty). Returns
     * true when the consumer is backed up: the executor then stops reading
     * output until agent__exec_resume is called. */
    bool (*output)(void *arg, int step, int index, uint32_t seq, sp_buf_t *chunk);
    /* exit_code < 0: none (killed, not a process, ...). */
    void (*step_finished)(void *arg, int step, int index, const char *status, int exit_code, int64_t at_ms);
} agent__sink_t;

typedef struct {
    const char *work_dir; /* parent of the task directory; borrowed */
    const char *bwrap;    /* absolute path of bwrap; NULL: no sandbox */
    /* The Docker Engine API socket; NULL: tasks with a docker executor
     * run with the shell executor like any other. Borrowed. */
    const char *docker_socket;
    const char *agent_name; /* for step 0; may be NULL */
    bool keep_work;
    size_t chunk_bytes; /* 0: AGENT__CHUNK_BYTES */
    int flush_ms;       /* 0: AGENT__FLUSH_MS */
} agent__exec_opts_t;

typedef enum {
    AGENT__STOP_NONE,
    AGENT__STOP_CANCEL,   /* the server canceled the job: finish canceled */
    AGENT__STOP_LOST,     /* the lease is gone: drop everything */
    AGENT__STOP_SHUTDOWN, /* the agent stops: finish infrastructure_fail */
} agent__stop_t;

typedef enum {
    AGENT__SUCCESS,
    AGENT__FAILED,
    AGENT__TIMEDOUT,
    AGENT__CANCELED,
    AGENT__INFRA_FAIL,
    AGENT__LOST,
} agent__status_t;

/* The protocol's name of a finish status ("success", ...); LOST has none. */
const char *agent__status_name(agent__status_t s);

typedef struct agent__exec agent__exec_t;

/* Prepares a run of task (borrowed until agent__exec_free) with results
 * going to sink (copied). Paths in o are borrowed until free too. */
int agent__exec_new(agent__exec_t **out, const agent__exec_opts_t *o, const agent__task_t *task,
                    const agent__sink_t *sink);
/* Runs the task on a private loop in the calling thread: step 0, step 99,
 * the task's steps. Returns when every process of the task is gone and
 * every result has gone to the sink. *message (may be NULL) is a reason
 * for the status, borrowed until free. Call once. */
agent__status_t agent__exec_run(agent__exec_t *x, const char **message);
/* Any thread, any time between new and free: kills every process of the
 * task (its whole tree) and runs no further step. The first reason wins. */
void agent__exec_stop(agent__exec_t *x, agent__stop_t why);
/* Any thread: the sink has caught up; read output again. */
void agent__exec_resume(agent__exec_t *x);
/* The task directory (valid after new). */
const char *agent__exec_task_dir(const agent__exec_t *x);
void agent__exec_free(agent__exec_t *x);

/* ---- the Docker Engine API (docker.c) ----------------------------------
 * Requests run on a libuv loop (the executor's) and never block it. Paths
 * start with '/' and get the API version prefix. Every callback runs on
 * the loop's thread. */

typedef struct agent__dk agent__dk_t;
/* A request: valid until its done callback has returned. Stop one with
 * hc_cancel, go on after a refused data callback with hc_resume. */
typedef hc_req_t agent__dk_req_t;

struct uv_loop_s;
int agent__dk_new(agent__dk_t **out, struct uv_loop_s *loop, const char *socket);
/* Starts a request. body (JSON, may be NULL) and header (one extra
 * "Name: value" line, may be NULL) are copied. timeout_ms 0: none. With
 * data, the body streams to it; without, it is collected (up to 4 MiB)
 * for done. */
agent__dk_req_t *agent__dk_call(agent__dk_t *d, const char *method, const char *path, const char *body,
                                const char *header, long timeout_ms, hc_data_cb data, hc_done_cb done, void *arg);
/* Cancels what is in flight and closes the client; the loop must run
 * again for its handles to close (the memory goes then). */
void agent__dk_free(agent__dk_t *d);
/* A blocking request, for the pool's checks at start (no loop there). */
int agent__dk_sync(const char *socket, const char *method, const char *path, const char *body, long timeout_ms,
                   long *status, sp_buf_t *resp, char *err, size_t errlen);

/* ---- HTTP (http.c) ------------------------------------------------------ */

typedef struct agent__http agent__http_t;

/* A client for one thread. server as in agent_opts_t. */
int agent__http_new(agent__http_t **out, const char *server, const char *token, char *err, size_t errlen);
/* POSTs body (may be NULL with n 0) to path (starting with '/', query
 * included). On 0, *status is the HTTP status and resp holds the body
 * (appended). SP_EIO: no answer (err says why); SP_ETIMEDOUT; SP_ECLOSED:
 * aborted. Only the owning thread calls this. */
int agent__http_post(agent__http_t *h, const char *path, const char *ctype, const void *body, size_t n, long timeout_ms,
                     long *status, sp_buf_t *resp, char *err, size_t errlen);
/* Any thread: makes the request in flight, and every later one, return
 * SP_ECLOSED at once. */
void agent__http_abort(agent__http_t *h);
void agent__http_free(agent__http_t *h);

/* ---- the uploader of one task (report.c) ------------------------------- */

typedef int (*agent__post_cb)(void *arg, const char *path, const char *ctype, const void *body, size_t n, long *status,
                              sp_buf_t *resp);

typedef struct {
    const char *task_id, *lease; /* copied */
    int zstd_level;              /* 0: 3 */
    agent__post_cb post;         /* runs on the reporter's thread */
    void *post_arg;
    int64_t retry_budget_ms; /* per request, for transient errors; 0: 60 s */
    /* Called on the reporter's thread: the server canceled the job, or
     * the lease is lost (409, or the server unreachable past the retry
     * budget). */
    void (*on_stop)(void *arg, agent__stop_t why);
    /* Called on the reporter's thread when the queue drained after output
     * returned true. */
    void (*on_resume)(void *arg);
    void *cb_arg;
} agent__report_opts_t;

typedef struct agent__report agent__report_t;

int agent__report_new(agent__report_t **out, const agent__report_opts_t *o);
/* A sink feeding this reporter (the executor's thread calls it). */
agent__sink_t agent__report_sink(agent__report_t *r);
/* Queues the finish (unless the lease was lost) and waits until the
 * reporter thread has sent everything or given up, then joins it. */
void agent__report_finish(agent__report_t *r, agent__status_t status, const char *message);
/* Any thread: no more retries, no more backoff (the agent is stopping). */
void agent__report_hurry(agent__report_t *r);
bool agent__report_lost(agent__report_t *r);
void agent__report_free(agent__report_t *r);

#endif
