/*
 * The executor's insides, shared by exec.c (the shell executor and the
 * step machinery both executors use) and exec_docker.c (the steps of a
 * docker executor, in containers), and seen by no one else: the rest of
 * the module treats agent__exec_t as opaque and stays clear of uv.h, whose
 * system headers declare names such as send. Everything here runs on the
 * executor's loop thread.
 */
#ifndef SPOOL_AGENT_EXEC_INTERNAL_H
#define SPOOL_AGENT_EXEC_INTERNAL_H

#include "agent_internal.h"

#include <uv.h>

#define AGENT__READ_BUF (256 * 1024)

typedef enum {
    AGENT__KILL_NONE,
    AGENT__KILL_NO_OUTPUT,
    AGENT__KILL_JOB_TIMEOUT,
    AGENT__KILL_STOP,
    AGENT__KILL_JOB_END
} agent__kill_t;

typedef struct agent__proc agent__proc_t;

struct agent__proc {
    agent__exec_t *x;
    const agent__step_t *st;
    int id;
    bool background, checkout;
    uv_process_t ps;
    uv_pipe_t out[2]; /* stdout, stderr */
    uv_pipe_t info;   /* bwrap --info-fd */
    uv_timer_t flush_t, quiet_t;
    int nopen;
    bool spawned, exited, eof[2], info_open, flush_on, lingering, completed;
    int64_t exit_status;
    int term_signal;
    pid_t inner_pid;
    bool kill_pending;
    char infobuf[512];
    size_t infolen;
    agent__kill_t killed;
    uint64_t t0, last_out;
    int64_t quiet_ms;
    uint32_t seq;
    agent__chunk_t chunk;
    sp_buf_t carry[2];
    /* docker: the step is an exec in the primary container */
    bool docker;
    char *exec_id, *pidf, *killf;
    agent__dk_req_t *req; /* the exec's create, start (its output) or inspect */
    unsigned char hdr[8]; /* the multiplexed stream's frame header */
    size_t hdrn, frame_left;
    int frame_stream, inspect_tries;
    bool dk_kill_sent;
    agent__proc_t *next;
};

/* A step whose output the agent writes itself (0, 99, and steps that
 * fail before a process starts). */
typedef struct {
    agent__exec_t *x;
    int id;
    uint32_t seq;
    int64_t t0;
    agent__chunk_t chunk;
} agent__synth_t;

struct agent__exec {
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t job_t;
    bool job_t_on;
    atomic_int stop_req;
    atomic_bool resume_req;
    agent__exec_opts_t o;
    const agent__task_t *task;
    agent__sink_t sink;
    char *task_dir, *home, *tmp, *meta, *tmp_inner, *wd, *shell_default;
    char *host_shell;  /* the agent's own default shell (checkout runs with it) */
    agent__env_t *env; /* the job's environment as steps see it (without the step's own) */
    size_t nenv, capenv;
    size_t next;
    bool ran, failed, timedout, infra, job_timer_fired, ended, finished, paused;
    agent__stop_t stop;
    agent__status_t status;
    char message[512];
    agent__proc_t *fg;
    agent__proc_t *procs;
    /* The docker executor (docker_on): the containers (primary first),
     * the spin-up in progress and the teardown. */
    bool docker_on, tearing, torn_down, bash_in_image;
    agent__dk_t *dk;
    char **ctr;
    size_t nctr, spin_i;
    int spin_phase;
    agent__dk_req_t *spin_req;
    agent__synth_t *s0; /* step 0 while the containers start */
    char rbuf[AGENT__READ_BUF];
};

/* ---- the shared step machinery (exec.c) ---- */

int64_t agent__wall_ms(void);
/* Go's time.Duration format, as CircleCI prints it: 10m0s, 1.5s, 300ms. */
void agent__fmt_duration(int64_t ms, char *out, size_t n);

/* Cuts freshly read output of stream s (0 stdout, 1 stderr) into lines
 * of p's current chunk; b is borrowed for the call. */
void agent__proc_feed(agent__proc_t *p, int s, const char *b, size_t n);
/* A line the agent itself adds to a step's output. */
void agent__proc_note(agent__proc_t *p, int s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Completes p once it has exited and both its streams have ended: its
 * end goes to the sink, its handles close (p is freed when they have),
 * and the next step starts when p was in the foreground. */
void agent__proc_maybe_complete(agent__proc_t *p);
/* The callback of p->quiet_t: the step's no_output_timeout (and, for the
 * shell executor, the linger and kill waits). */
void agent__proc_on_quiet_timer(uv_timer_t *t);

/* Lines and the end of a step the agent writes itself (begun by exec.c). */
void agent__synth_line(agent__synth_t *s, int stream, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void agent__synth_end(agent__synth_t *s, const char *status, int code);

/* Runs steps until one runs in the foreground, then returns; the end of
 * that step calls it again. */
void agent__exec_advance(agent__exec_t *x);
/* No further step: kills every process left and, once they are gone,
 * tears down (docker) and finishes. */
void agent__exec_end_job(agent__exec_t *x);
/* Decides the job's status and message; once. */
void agent__exec_finish_job(agent__exec_t *x);
/* Step 99: the names of the job's environment variables. */
void agent__exec_env_step(agent__exec_t *x);

/* ---- the docker executor (exec_docker.c) ---- */

/* Step 0 goes on (x->s0) while the containers start; then steps 99,
 * 101... (agent__exec_env_step, agent__exec_advance), or the job ends. */
void agent__dk_spin_begin(agent__exec_t *x);
/* Cancels the spin-up in flight, if any (a stop or the job's timeout). */
void agent__dk_spin_stop(agent__exec_t *x);
/* Starts a run step as an exec in the primary container; cmd, envp, cwd
 * and bash are borrowed for the call. True when the step runs in the
 * foreground (advance waits for it). */
bool agent__dk_start_step(agent__exec_t *x, const agent__step_t *st, char **cmd, char **envp, const char *cwd,
                          const char *bash);
/* Kills a docker step's process group in the container. */
void agent__dk_kill_step(agent__proc_t *p);
/* Removes the next container (services first) or, when none is left,
 * frees the client and finishes the job. */
void agent__dk_teardown_next(agent__exec_t *x);

#endif
