/*
 * agent: `spool agent` and the local fleet of `spool serve`. An agent
 * registers with the server, long-polls for tasks, runs each task's steps
 * in a fresh work directory (on Linux inside a bubblewrap sandbox), streams
 * step events and output to the server, sends heartbeats and finishes the
 * task. The wire contract is docs/agent-protocol.md; how an operator runs
 * it is docs/agent.md.
 *
 * A pool is one registered agent with `slots` task slots. It runs on its
 * own threads: one claims tasks, one sends heartbeats, and every running
 * task has one thread running its steps on a private libuv loop plus one
 * uploading its events and output. The same code serves `spool agent` (the
 * CLI starts a pool and waits for it) and `spool serve` (which starts a
 * pool that talks to itself over the admin socket).
 *
 * Thread safety: every function here may be called from any thread, but
 * agent_pool_stop must be called exactly once and last.
 */
#ifndef SPOOL_AGENT_H
#define SPOOL_AGENT_H

#include "../base/base.h"

typedef struct {
    /* "http://host:port", "https://host:port" (an optional path prefix is
     * kept) or "unix:/path/to/socket". Copied. Required. */
    const char *server;
    /* The agent token sent as "Authorization: Bearer". Copied. Required. */
    const char *token;
    /* Name shown in the fleet; NULL means the host name. Copied. */
    const char *name;
    /* Comma-separated labels advertised at registration, e.g. "gpu,big";
     * the OS and CPU ("linux", "x86_64") are always added. Copied. */
    const char *labels;
    /* Tasks run at once; 0 means 1. At most AGENT_MAX_SLOTS. */
    int slots;
    /* CPUs and memory (MB) advertised at registration; 0 means what the
     * machine has. The server keeps 2 CPUs and 4 GB of them for the agent
     * itself and places tasks only where their resource class fits in the
     * rest. */
    int cpus;
    int64_t memory_mb;
    /* Parent of the per-task work directories; created if missing. Copied.
     * Required. */
    const char *work_dir;
    /* Keep each task's directory after the task instead of removing it. */
    bool keep_work;
    /* Run steps without a sandbox. Without it, a pool refuses to start
     * where bubblewrap cannot build a sandbox (and everywhere but Linux). */
    bool no_sandbox;
    /* zstd level for output chunks; 0 means 3. */
    int zstd_level;
    /* After agent_pool_drain(p, false): how long running tasks may go on
     * before they are killed and finished as infrastructure_fail. 0 means
     * 60 s; negative means 0 (kill at once). */
    int grace_ms;
    /* Long-poll length sent as claim?wait_ms=; 0 means 30 s. */
    int claim_wait_ms;
    /* Run exactly one task, then drain (`spool agent --once`). */
    bool once;
    /* Path of a Docker Engine API socket (Docker's, or podman's `podman
     * system service`). With it the agent advertises the label "docker"
     * and runs tasks whose executor is docker in containers; without it
     * they run with the shell executor like any other. Start fails when
     * the API does not answer there. Copied. */
    const char *docker_socket;
} agent_opts_t;

#define AGENT_MAX_SLOTS 256

typedef struct agent_pool agent_pool_t;

/* Checks the options, finds and tests the sandbox, creates the work
 * directory and starts the pool's threads. Registration and everything
 * after it happen on those threads: a server that does not answer yet is
 * retried with backoff, so start does not wait for the server. On failure
 * *out is untouched and err holds a sentence for the operator (e.g. that
 * bubblewrap is missing and --no-sandbox would run steps unconfined).
 * Errors: SP_EINVAL (options), a negated errno (work directory), SP_EIO
 * (sandbox unusable). */
int agent_pool_start(const agent_opts_t *o, agent_pool_t **out, char *err, size_t errlen);

/* Stops claiming tasks. With now false, running tasks go on for up to
 * grace_ms and are then killed; with now true they are killed at once.
 * A killed task is finished as infrastructure_fail ("the agent stopped"),
 * which the server may retry. Returns at once; may be called again with
 * now true to cut the grace short (a second SIGTERM). */
void agent_pool_drain(agent_pool_t *p, bool now);

/* Blocks until the pool has stopped: drained and every task finished, or
 * a fatal error (the server refused the token). Returns 0 or the error;
 * agent_pool_error tells why (borrowed until agent_pool_stop). */
int agent_pool_wait(agent_pool_t *p);
const char *agent_pool_error(agent_pool_t *p);

/* Counters for tests and status pages; a consistent snapshot. */
typedef struct {
    bool registered;
    char agent_id[64];
    int running;       /* tasks running now */
    uint64_t claimed;  /* tasks claimed since start */
    uint64_t finished; /* tasks finished (a finish was sent or given up) */
    uint64_t lost;     /* tasks dropped because their lease was lost */
} agent_pool_stats_t;
void agent_pool_stats(agent_pool_t *p, agent_pool_stats_t *out);

/* Drains with now = true, waits, joins every thread, removes nothing but
 * the task directories (unless keep_work) and frees the pool. Bounded:
 * killed tasks send their last events and finish with one attempt each. */
void agent_pool_stop(agent_pool_t *p);

#endif
