/*
 * log: the append-only event log, the single source of truth.
 *
 * One LMDB environment under <data>/log. Keys are 8-byte big-endian
 * sequence numbers starting at 1, appended with MDB_APPEND; values are
 * msgpack records (layout in docs/log-format.md and at the top of
 * record.c). A single writer thread owns every write transaction and
 * group-commits whatever is waiting; a submission is acknowledged only
 * after the batch that holds it is durable.
 *
 * The module also gives projections a narrow key-value API over a second
 * LMDB environment (log_kv_*), so no MDB_* type leaves this folder.
 *
 * Threads: log_open/log_close on one thread; everything else from any
 * thread. Readers are MVCC snapshots and never block the writer.
 */
#ifndef SPOOL_LOG_H
#define SPOOL_LOG_H

#include "../base/base.h"

#include <msgpack.h>
#include <uv.h>

/* ---- event types ---------------------------------------------------------
 * The one table of event types: enum id, dotted name, current schema
 * version. A name is never reused; a body change bumps the version. */
#define LOG_EVENT_TYPES(X)                                                                                             \
    X(LOG_EV_SYSTEM_NOTE, "system.note", 1)                                                                            \
    X(LOG_EV_SYSTEM_MARK, "system.mark", 1)                                                                            \
    X(LOG_EV_TOKEN_CREATED, "token.created", 1)                                                                        \
    X(LOG_EV_TOKEN_REVOKED, "token.revoked", 1)                                                                        \
    X(LOG_EV_PROJECT_ADDED, "project.added", 1)                                                                        \
    X(LOG_EV_PROJECT_FOLLOWED, "project.followed", 1)                                                                  \
    X(LOG_EV_PROJECT_UNFOLLOWED, "project.unfollowed", 1)                                                              \
    X(LOG_EV_PROJECT_BUILDING_STOPPED, "project.building_stopped", 1)                                                  \
    X(LOG_EV_PROJECT_BUILDING_RESUMED, "project.building_resumed", 1)                                                  \
    X(LOG_EV_PIPELINE_CREATED, "pipeline.created", 1)                                                                  \
    X(LOG_EV_PIPELINE_CONFIG_FETCHED, "pipeline.config_fetched", 1)                                                    \
    X(LOG_EV_PIPELINE_ERRORED, "pipeline.errored", 1)                                                                  \
    X(LOG_EV_WORKFLOW_CREATED, "workflow.created", 1)                                                                  \
    X(LOG_EV_WORKFLOW_FINISHED, "workflow.finished", 1)                                                                \
    X(LOG_EV_JOB_QUEUED, "job.queued", 1)                                                                              \
    X(LOG_EV_JOB_STARTED, "job.started", 1)                                                                            \
    X(LOG_EV_JOB_STEP_STARTED, "job.step_started", 1)                                                                  \
    X(LOG_EV_JOB_OUTPUT, "job.output", 1)                                                                              \
    X(LOG_EV_JOB_STEP_FINISHED, "job.step_finished", 1)                                                                \
    X(LOG_EV_JOB_FINISHED, "job.finished", 1)                                                                          \
    X(LOG_EV_JOB_NOT_RUN, "job.not_run", 1)                                                                            \
    X(LOG_EV_AGENT_REGISTERED, "agent.registered", 1)                                                                  \
    X(LOG_EV_JOB_TASK_FINISHED, "job.task_finished", 1)                                                                \
    X(LOG_EV_JOB_TASK_REQUEUED, "job.task_requeued", 1)                                                                \
    X(LOG_EV_JOB_CANCEL_REQUESTED, "job.cancel_requested", 1)                                                          \
    X(LOG_EV_AGENT_DRAINED, "agent.drained", 1)                                                                        \
    X(LOG_EV_PROJECT_SETTINGS_CHANGED, "project.settings_changed", 1)

typedef enum {
    LOG_EV_UNKNOWN = 0,
#define LOG__EV_ENUM(id, name, version) id,
    LOG_EVENT_TYPES(LOG__EV_ENUM)
#undef LOG__EV_ENUM
        LOG_EV__COUNT
} log_ev_type_t;

/* Name and current schema version of a type; NULL/0 for unknown ids. */
const char *log_type_name(int type);
uint32_t log_type_schema(int type);
/* Type id for a dotted name, or LOG_EV_UNKNOWN. */
int log_type_lookup(const char *name, size_t n);

/* ---- records ------------------------------------------------------------- */
#define LOG_RECORD_LAYOUT 1
#define LOG_MAX_BODY      (4u << 20) /* bodies larger than this are refused */
#define LOG_MAX_FIELD     256        /* actor and request id */

/* A decoded event. Every slice is borrowed from the record and valid
 * until the reader (or callback) that produced it moves on. */
typedef struct {
    uint64_t seq;
    int type;             /* LOG_EV_* or LOG_EV_UNKNOWN */
    sp_slice_t type_name; /* as stored */
    uint32_t schema;
    int64_t time_ns; /* UTC, set by the writer when the batch is committed */
    sp_slice_t actor;
    sp_slice_t request_id;
    sp_slice_t body; /* msgpack bytes (a map); empty when redacted */
    bool redacted;
    uint64_t original_sum; /* checksum the record had before redaction */
} log_event_t;

/* What a producer submits. Strings and body are copied at submission. */
typedef struct {
    int type;
    const char *actor;      /* e.g. "system", "cli", "user:<id>" */
    const char *request_id; /* may be NULL */
    sp_slice_t body;        /* msgpack map bytes */
} log_entry_t;

/* Encodes a record for sequence seq into out (appended). Exposed for
 * tests and benchmarks; the writer uses it. */
void log_record_encode(sp_buf_t *out, uint64_t seq, const log_entry_t *e, int64_t time_ns);
/* Decodes and verifies a record. ev borrows from rec. Returns
 * SP_ECORRUPT (with a reason in why, if given) on any damage. */
int log_record_decode(uint64_t seq, sp_slice_t rec, log_event_t *ev, char *why, size_t whylen);
/* Rewrites a record as a redaction tombstone: body dropped, original
 * checksum kept, new checksum over the new bytes. */
int log_record_redact(uint64_t seq, sp_slice_t rec, int64_t now_ns, sp_buf_t *out);

/* Body helpers: decode the msgpack body of an event into an object whose
 * strings borrow from the body bytes. The zone is the caller's. */
int log_body_unpack(sp_slice_t body, msgpack_zone *zone, msgpack_object *out);
/* Looks a key up in a msgpack map object; NULL when absent. */
const msgpack_object *log_body_get(const msgpack_object *map, const char *key);
bool log_body_str(const msgpack_object *map, const char *key, sp_slice_t *out);
bool log_body_u64(const msgpack_object *map, const char *key, uint64_t *out);

/* ---- the log ------------------------------------------------------------- */
typedef struct log log_t;

typedef struct {
    size_t initial_map; /* bytes; 0 = 64 MiB. The map grows as needed. */
    size_t max_batch;   /* events per transaction; 0 = 8192 */
    bool read_only;     /* open for reading only (tail, verify) */
    bool no_writer;     /* do not start the writer thread (direct tools) */
} log_opts_t;

/* Opens (creating if needed) the log in dir and starts the writer.
 * On failure *out is untouched and errbuf (if given) says why. */
int log_open(log_t **out, const char *dir, const log_opts_t *opts, char *errbuf, size_t errlen);
/* Stops the writer after the batch in flight, fails what is still queued
 * with SP_ECLOSED, and closes LMDB. */
void log_close(log_t *log);
/* Last error message of this handle (thread-safe copy into buf). */
void log_errmsg(log_t *log, char *buf, size_t n);

/* Highest durable sequence (0 for an empty log). */
uint64_t log_head(log_t *log);

/* ---- appending ------------------------------------------------------------
 * A submission of n entries is committed atomically with contiguous
 * sequence numbers [first, first+n). */
typedef void (*log_done_cb)(void *arg, int status, uint64_t first_seq);

/* Blocking append for CLI and tools: returns after the batch is durable. */
int log_append_wait(log_t *log, const log_entry_t *entries, size_t n, uint64_t *first_seq);

/* Submits and returns at once; cb runs on the writer thread once the
 * batch is durable (or failed). cb must be quick and must not append. If
 * this returns an error, cb never runs. */
int log_append_cb(log_t *log, const log_entry_t *entries, size_t n, log_done_cb cb, void *arg);

/* Completion queue bound to a libuv loop: callbacks of log_append_async
 * run on that loop. Open and close on the loop's thread. */
typedef struct log_ack log_ack_t;
int log_ack_open(log_ack_t **out, uv_loop_t *loop);
void log_ack_close(log_ack_t *ack); /* pending callbacks get SP_ECLOSED */

/* Submits and returns at once. cb runs on ack's loop after the batch is
 * durable (status 0) or failed. If this returns an error, cb never runs. */
int log_append_async(log_t *log, log_ack_t *ack, const log_entry_t *entries, size_t n, log_done_cb cb, void *arg);

/* ---- reading --------------------------------------------------------------
 * A reader is one MVCC snapshot. Keep it short: open, read, close within
 * one callback. Not shared between threads. */
typedef struct log_reader log_reader_t;
int log_reader_open(log_t *log, log_reader_t **out);
void log_reader_close(log_reader_t *r);
uint64_t log_reader_head(log_reader_t *r); /* head as of the snapshot */
/* Gets one event. SP_ENOTFOUND past the head; SP_ECORRUPT names seq. */
int log_reader_get(log_reader_t *r, uint64_t seq, log_event_t *ev);
/* Positions before `from`; next returns from, from+1, ... and then
 * SP_ENOTFOUND at the end. A missing sequence gives SP_EGAP. */
int log_reader_seek(log_reader_t *r, uint64_t from);
int log_reader_next(log_reader_t *r, log_event_t *ev);
/* Raw record bytes (for verify and tools); borrowed like events. */
int log_reader_next_raw(log_reader_t *r, uint64_t *seq, sp_slice_t *rec);
/* Reason for the last SP_ECORRUPT/SP_EGAP of this reader. */
const char *log_reader_why(log_reader_t *r);

/* ---- subscribers ------------------------------------------------------------
 * cb runs on the writer thread after every commit with the new head. It
 * must be quick and non-blocking (signal a condition, uv_async_send). */
typedef void (*log_notify_cb)(void *arg, uint64_t head);
int log_subscribe(log_t *log, log_notify_cb cb, void *arg);
void log_unsubscribe(log_t *log, log_notify_cb cb, void *arg);

/* ---- statistics (for /metrics) ---------------------------------------------- */
#define LOG_LATENCY_BUCKETS 14
extern const double log_latency_bounds_s[LOG_LATENCY_BUCKETS]; /* upper bounds */
typedef struct {
    uint64_t head;
    uint64_t batches;
    uint64_t events;
    uint64_t commit_failures;
    uint64_t map_grows;
    uint64_t map_size;
    /* commit latency histogram: counts per bucket (cumulative is computed
     * by the exporter), total count and sum in seconds */
    uint64_t latency_buckets[LOG_LATENCY_BUCKETS + 1];
    double latency_sum_s;
    bool failed;
} log_stats_t;
void log_stats(log_t *log, log_stats_t *out);

/* ---- test hooks ------------------------------------------------------------- */
/* Makes the next n commits fail with code (a negative SP_E* or -errno,
 * e.g. -EIO), as a failing disk would. For tests only. */
void log_test_fail_commits(log_t *log, int n, int code);
/* Writes raw bytes at seq, bypassing encoding (tests corrupt records with
 * it; the writer must not be running). */
int log_test_put_raw(log_t *log, uint64_t seq, sp_slice_t rec);

/* ---- key-value stores for projections ----------------------------------------
 * A second LMDB environment (the views). Writes are not fsynced: views
 * are derived and rebuilt from the log. */
typedef struct log_kv log_kv_t;
typedef struct log_kvtxn log_kvtxn_t;
typedef struct log_kvcur log_kvcur_t;

int log_kv_open(log_kv_t **out, const char *dir, size_t initial_map, char *errbuf, size_t errlen);
void log_kv_close(log_kv_t *kv);
/* Grows the map (after SP_EFULL); no txn of this process may be open. */
int log_kv_grow(log_kv_t *kv);
/* Begins a transaction. Only one write transaction at a time. */
int log_kv_begin(log_kv_t *kv, bool write, log_kvtxn_t **out);
int log_kvtxn_commit(log_kvtxn_t *t); /* frees t, also on failure */
void log_kvtxn_abort(log_kvtxn_t *t); /* frees t */
/* Opens (creating in write txns) a named table. SP_ENOTFOUND if it does
 * not exist in a read txn. */
int log_kvtxn_table(log_kvtxn_t *t, const char *name, unsigned *tbl);
int log_kvtxn_get(log_kvtxn_t *t, unsigned tbl, sp_slice_t key, sp_slice_t *val); /* val borrowed */
int log_kvtxn_put(log_kvtxn_t *t, unsigned tbl, sp_slice_t key, sp_slice_t val);
int log_kvtxn_del(log_kvtxn_t *t, unsigned tbl, sp_slice_t key); /* SP_ENOTFOUND ok */
int log_kvtxn_clear(log_kvtxn_t *t, unsigned tbl);               /* empties the table */
/* Writes every table except those named in skip (NULL-terminated) as
 * lines "<table>\t<hex key>\t<hex value>\n" in order. */
int log_kvtxn_dump(log_kvtxn_t *t, const char *const *skip, sp_buf_t *out);
/* Empties every table whose name starts with prefix (write txn). */
int log_kvtxn_clear_prefix(log_kvtxn_t *t, const char *prefix);
/* Cursors: seek to the first key >= key (or the first key if key.n==0),
 * then next. Borrowed slices. SP_ENOTFOUND at the end. */
int log_kvcur_open(log_kvtxn_t *t, unsigned tbl, log_kvcur_t **out);
int log_kvcur_seek(log_kvcur_t *c, sp_slice_t key, sp_slice_t *k, sp_slice_t *v);
int log_kvcur_next(log_kvcur_t *c, sp_slice_t *k, sp_slice_t *v);
void log_kvcur_close(log_kvcur_t *c);

#endif
