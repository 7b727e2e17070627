/* Private to src/log/: shared by record.c, env.c, writer.c, log.c, kv.c. */
#ifndef SPOOL_LOG_INTERNAL_H
#define SPOOL_LOG_INTERNAL_H

#include "log.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>

/* An LMDB environment that can grow its map while other threads read.
 * Read transactions hold `resize` shared; growing holds it exclusively,
 * because LMDB forbids mdb_env_set_mapsize while this process has any
 * transaction open. */
typedef struct {
    MDB_env *env;
    pthread_rwlock_t resize;
    size_t map_size;
} log__env_t;

int log__env_open(log__env_t *e, const char *dir, unsigned flags, size_t initial_map, unsigned maxdbs, char *err,
                  size_t errlen);
void log__env_close(log__env_t *e);
/* Grows the map; the caller has no transaction open. */
int log__env_grow(log__env_t *e);
int log__rtxn_begin(log__env_t *e, MDB_txn **out);
void log__rtxn_end(log__env_t *e, MDB_txn *t);
/* Converts an LMDB return code to an SP_E* code. */
int log__err(int mdb_rc);
int log__mkdirs(const char *dir);

/* One submission waiting for the writer. Allocated as one block holding
 * the entries, their strings and bodies. */
typedef struct log__req log__req_t;
struct log__req {
    log__req_t *next;
    size_t n;
    log_entry_t *entries;
    int status;
    uint64_t first_seq;
    /* completion: either a blocking waiter or an ack queue */
    struct log__waiter *waiter;
    log_ack_t *ack;
    log_done_cb cb;
    void *arg;
};

typedef struct log__sub {
    log_notify_cb cb;
    void *arg;
} log__sub_t;

struct log {
    log__env_t env;
    MDB_dbi events, meta;
    char dir[4096];
    log_opts_t opts;
    int lock_fd;

    pthread_mutex_t errmu;
    char errmsg[512];

    _Atomic uint64_t head;

    /* writer */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    _Atomic uint32_t donegen; /* futex word: bumped after each batch */
    log__req_t *queue_head, *queue_tail;
    size_t queued_entries;
    bool stopping;
    int failed; /* sticky commit failure, 0 if healthy */
    int64_t last_time_ns;
    sp_buf_t enc;
    int test_fail_n, test_fail_code;

    /* subscribers */
    pthread_mutex_t submu;
    log__sub_t *subs;
    size_t nsubs;

    /* stats */
    pthread_mutex_t statmu;
    log_stats_t stats;
};

void log__set_err(log_t *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log__writer_start(log_t *log);
void log__writer_stop(log_t *log);
void log__req_complete(log__req_t *req);

#endif
