/* Helpers for the agent tests: a sink that records what an executor
 * reports (decoding every chunk through the real zstd + msgpack path),
 * task JSON builders, and process checks. */
#ifndef SPOOL_TESTS_AGENT_HELPERS_H
#define SPOOL_TESTS_AGENT_HELPERS_H

#include "test.h"

#include "agent/agent_internal.h"

typedef struct {
    int step, stream;
    uint64_t t_ms;
    char *text;
    size_t n;
} ta_line_t;

typedef struct {
    sp_buf_t events;  /* one line per event: "start 101 NAME" / "finish 101 failed 3" */
    char *bash[256];  /* bash_command by step id (ids above 255 are folded) */
    ta_line_t *lines; /* every output line, in arrival order */
    size_t nlines, cap;
    uint32_t next_seq[1024]; /* expected seq per step id */
    int bad_seq, bad_chunk, chunks;
    void *cctx;
    /* Optional hook called after every chunk (on the executor's thread);
     * returns what the sink returns (true: pause). */
    bool (*on_chunk)(void *arg, int step);
    /* Optional hook called after every step_started. */
    void (*on_started)(void *arg, int step);
    void *hook_arg;
    agent__exec_t *x; /* set by ta_run while it runs */
} ta_cap_t;

void ta_cap_init(ta_cap_t *c);
void ta_cap_free(ta_cap_t *c);
agent__sink_t ta_cap_sink(ta_cap_t *c);

/* Joins the text of a step's lines of one stream (-1: both) with '\n'.
 * Caller frees. */
char *ta_output(const ta_cap_t *c, int step, int stream);
/* Number of lines of a step. */
size_t ta_count(const ta_cap_t *c, int step);

/* The bwrap path if the sandbox works here (probed once), else NULL. */
const char *ta_bwrap(void);

/* Runs a task given as JSON with the executor. work dir: <t->dir>/work.
 * status out; message copied into msg (may be NULL). Returns 0, or the
 * parse/new error. */
int ta_run(t_ctx_t *t, const char *json, bool sandbox, bool keep_work, ta_cap_t *c, agent__status_t *status, char *msg,
           size_t msglen);

/* A task JSON: id "task-1", the given environment object (or NULL),
 * extra top-level members (or NULL, e.g. "\"limits\":{...}"), steps. */
char *ta_task(const char *env, const char *extra, const char *steps);
/* One run step as JSON: command escaped, extra members appended. */
char *ta_step(int id, const char *command, const char *extra);

/* True when a live (non-zombie) process has marker in its command line. */
bool ta_alive(const char *marker);
/* A marker unique to this test process, e.g. "1000.12345" for `sleep`. */
const char *ta_marker(void);

#endif
