/* A stand-in for the server side of docs/agent-protocol.md, for testing
 * the agent's client before (and besides) the real `spool serve`: plain
 * HTTP/1.1 over a unix socket, a thread per connection, keep-alive,
 * everything it receives recorded. It checks the bearer token, decodes
 * output chunks with the real decoder, and ignores a repeated output seq
 * as the server must. Scripted behaviour: tasks to hand out, cancel
 * flags, 409s, transient 503s. */
#ifndef SPOOL_TESTS_AGENT_FAKE_SERVER_H
#define SPOOL_TESTS_AGENT_FAKE_SERVER_H

#include "helpers.h"

typedef struct fs fs_t;

typedef struct {
    char task_id[64], status[32], message[256];
} fs_finish_t;

/* Listens on sock (a path) and accepts token. NULL on failure. */
fs_t *fs_start(const char *sock, const char *token, int heartbeat_ms);
void fs_stop(fs_t *s);

/* Queues a TASK object (JSON text, copied) for the next claim. */
void fs_add_task(fs_t *s, const char *task_json);
/* Answers with cancel for this task id: in events/output answers, in
 * heartbeat answers, or both. */
void fs_cancel(fs_t *s, const char *task_id, bool in_events, bool in_heartbeat);
/* Answers 409 to every events/output/finish request of this task. */
void fs_conflict(fs_t *s, const char *task_id);
/* Answers 503 to the next n output uploads. */
void fs_fail_outputs(fs_t *s, int n);

/* Waits (at most timeout_ms) until the log of received step events
 * contains needle ("finish 101 success 0"); true if it did. */
bool fs_wait_event(fs_t *s, const char *needle, int timeout_ms);
/* Waits until n finishes were received; copies the i-th into out. */
bool fs_wait_finishes(fs_t *s, int n, int timeout_ms);
fs_finish_t fs_finish(fs_t *s, int i);

/* Snapshot accessors (copies; caller frees strings). */
char *fs_events(fs_t *s); /* "start 101 NAME\nfinish 101 success 0\n..." over all tasks */
/* Output lines joined with '\n'; key is n * 1000 + step for the n-th
 * claimed task (0-based). */
char *fs_output(fs_t *s, int key, int stream);
/* "register", "claim", "heartbeat", "output", "dup_output", "bad_auth", "bad_lease", "bad_chunk" */
int fs_count(fs_t *s, const char *what);

#endif
