/* Opening and closing the log, readers, subscribers, statistics. */
#include "log_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#define META_LAYOUT_KEY "layout"

void log__set_err(log_t *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&log->errmu);
    vsnprintf(log->errmsg, sizeof log->errmsg, fmt, ap);
    pthread_mutex_unlock(&log->errmu);
    va_end(ap);
}

void log_errmsg(log_t *log, char *buf, size_t n)
{
    pthread_mutex_lock(&log->errmu);
    snprintf(buf, n, "%s", log->errmsg);
    pthread_mutex_unlock(&log->errmu);
}

/* Only one process may write a log: LMDB would serialize two writers,
 * but each would keep its own idea of the head and of its subscribers. */
static int take_writer_lock(log_t *log, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/writer.lock", log->dir);
    log->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (log->lock_fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -errno;
    }
    if (flock(log->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(log->lock_fd);
        log->lock_fd = -1;
        if (e == EWOULDBLOCK) {
            snprintf(err, errlen, "the log in %s is open for writing by another process (is spool serve running?)",
                     log->dir);
            return SP_ELOCKED;
        }
        snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

/* Opens the tables, checks the layout version and reads the head. */
static int open_tables(log_t *log, char *err, size_t errlen)
{
    bool ro = log->opts.read_only;
    MDB_txn *txn;
    int rc = mdb_txn_begin(log->env.env, NULL, ro ? MDB_RDONLY : 0, &txn);
    if (rc != 0) goto fail;
    unsigned flags = ro ? 0 : MDB_CREATE;
    if ((rc = mdb_dbi_open(txn, "events", flags, &log->events)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", flags, &log->meta)) != 0) {
        mdb_txn_abort(txn);
        goto fail;
    }
    MDB_val k = {strlen(META_LAYOUT_KEY), META_LAYOUT_KEY}, v;
    rc = mdb_get(txn, log->meta, &k, &v);
    if (rc == MDB_NOTFOUND && !ro) {
        char layout[] = {'0' + LOG_RECORD_LAYOUT};
        v = (MDB_val){1, layout};
        rc = mdb_put(txn, log->meta, &k, &v, 0);
    } else if (rc == 0 && (v.mv_size != 1 || *(char *)v.mv_data != '0' + LOG_RECORD_LAYOUT)) {
        mdb_txn_abort(txn);
        snprintf(err, errlen, "log in %s has layout %.*s; this spool reads layout %d", log->dir, (int)v.mv_size,
                 (char *)v.mv_data, LOG_RECORD_LAYOUT);
        return SP_EVERSION;
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        goto fail;
    }
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, log->events, &cur)) != 0) {
        mdb_txn_abort(txn);
        goto fail;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (rc == 0 && k.mv_size == 8)
        atomic_store(&log->head, sp_be64_get(k.mv_data));
    else if (rc == 0) {
        mdb_txn_abort(txn);
        snprintf(err, errlen, "log in %s: last key has %zu bytes, not 8", log->dir, k.mv_size);
        return SP_ECORRUPT;
    } else if (rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        goto fail;
    }
    /* Committing (also a read-only txn) keeps the table handles open. */
    if ((rc = mdb_txn_commit(txn)) != 0) goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot open log tables in %s: %s", log->dir, mdb_strerror(rc));
    return log__err(rc);
}

int log_open(log_t **out, const char *dir, const log_opts_t *opts, char *errbuf, size_t errlen)
{
    char scratch[16];
    if (errbuf == NULL) {
        errbuf = scratch;
        errlen = sizeof scratch;
    }
    if (strlen(dir) >= sizeof(((log_t *)0)->dir)) {
        snprintf(errbuf, errlen, "path too long");
        return SP_EINVAL;
    }
    log_t *log = sp_xcalloc(1, sizeof *log);
    snprintf(log->dir, sizeof log->dir, "%s", dir);
    if (opts) log->opts = *opts;
    log->lock_fd = -1;
    pthread_mutex_init(&log->errmu, NULL);
    pthread_mutex_init(&log->mu, NULL);
    pthread_cond_init(&log->cond, NULL);
    pthread_mutex_init(&log->submu, NULL);
    pthread_mutex_init(&log->statmu, NULL);

    int rc;
    bool ro = log->opts.read_only;
    if (ro && access(dir, F_OK) != 0) {
        snprintf(errbuf, errlen, "no log at %s", dir);
        rc = SP_ENOTFOUND;
        goto err;
    }
    if (!ro && (rc = log__mkdirs(dir)) != 0) {
        snprintf(errbuf, errlen, "cannot create %s: %s", dir, sp_strerror(rc));
        goto err;
    }
    if (!ro && (rc = take_writer_lock(log, errbuf, errlen)) != 0) goto err;
    if ((rc = log__env_open(&log->env, dir, ro ? MDB_RDONLY : 0, log->opts.initial_map, 4, errbuf, errlen)) != 0)
        goto err_lock;
    if ((rc = open_tables(log, errbuf, errlen)) != 0) goto err_env;
    if (!ro && !log->opts.no_writer && (rc = log__writer_start(log)) != 0) {
        snprintf(errbuf, errlen, "cannot start the writer thread: %s", sp_strerror(rc));
        goto err_env;
    }
    log->stats.map_size = log->env.map_size;
    sp_handle_opened();
    *out = log;
    return 0;
err_env:
    log__env_close(&log->env);
err_lock:
    if (log->lock_fd >= 0) close(log->lock_fd);
err:
    pthread_mutex_destroy(&log->errmu);
    pthread_mutex_destroy(&log->mu);
    pthread_cond_destroy(&log->cond);
    pthread_mutex_destroy(&log->submu);
    pthread_mutex_destroy(&log->statmu);
    free(log);
    return rc;
}

void log_close(log_t *log)
{
    if (log == NULL) return;
    log__writer_stop(log);
    log__env_close(&log->env);
    if (log->lock_fd >= 0) close(log->lock_fd);
    pthread_mutex_destroy(&log->errmu);
    pthread_mutex_destroy(&log->mu);
    pthread_cond_destroy(&log->cond);
    pthread_mutex_destroy(&log->submu);
    pthread_mutex_destroy(&log->statmu);
    sp_buf_free(&log->enc);
    free(log->subs);
    free(log);
    sp_handle_closed();
}

uint64_t log_head(log_t *log) { return atomic_load(&log->head); }

/* ---- readers ---- */

struct log_reader {
    log_t *log;
    MDB_txn *txn;
    MDB_cursor *cur;
    uint64_t expect;
    bool positioned;
    char why[200];
};

int log_reader_open(log_t *log, log_reader_t **out)
{
    log_reader_t *r = sp_xcalloc(1, sizeof *r);
    r->log = log;
    int rc = log__rtxn_begin(&log->env, &r->txn);
    if (rc != 0) goto err;
    if ((rc = mdb_cursor_open(r->txn, log->events, &r->cur)) != 0) {
        rc = log__err(rc);
        goto err_txn;
    }
    r->expect = 1;
    sp_handle_opened();
    *out = r;
    return 0;
err_txn:
    log__rtxn_end(&log->env, r->txn);
err:
    free(r);
    return rc;
}

void log_reader_close(log_reader_t *r)
{
    if (r == NULL) return;
    mdb_cursor_close(r->cur);
    log__rtxn_end(&r->log->env, r->txn);
    free(r);
    sp_handle_closed();
}

uint64_t log_reader_head(log_reader_t *r)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t head = 0;
    if (mdb_cursor_open(r->txn, r->log->events, &c) != 0) return 0;
    if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) head = sp_be64_get(k.mv_data);
    mdb_cursor_close(c);
    return head;
}

static int decode(log_reader_t *r, uint64_t seq, MDB_val *v, log_event_t *ev)
{
    char why[120];
    int rc = log_record_decode(seq, (sp_slice_t){v->mv_data, v->mv_size}, ev, why, sizeof why);
    if (rc != 0) snprintf(r->why, sizeof r->why, "sequence %llu: %s", (unsigned long long)seq, why);
    return rc;
}

int log_reader_get(log_reader_t *r, uint64_t seq, log_event_t *ev)
{
    uint8_t kb[8];
    sp_be64_put(kb, seq);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(r->txn, r->log->events, &k, &v);
    if (rc != 0) return log__err(rc);
    return decode(r, seq, &v, ev);
}

int log_reader_seek(log_reader_t *r, uint64_t from)
{
    r->expect = from ? from : 1;
    r->positioned = false;
    return 0;
}

int log_reader_next_raw(log_reader_t *r, uint64_t *seq, sp_slice_t *rec)
{
    uint8_t kb[8];
    MDB_val k, v;
    int rc;
    if (!r->positioned) {
        sp_be64_put(kb, r->expect);
        k = (MDB_val){8, kb};
        rc = mdb_cursor_get(r->cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(r->cur, &k, &v, MDB_NEXT);
    }
    if (rc != 0) return log__err(rc);
    r->positioned = true;
    if (k.mv_size != 8) {
        snprintf(r->why, sizeof r->why, "after sequence %llu: key of %zu bytes, not 8",
                 (unsigned long long)(r->expect - 1), k.mv_size);
        return SP_ECORRUPT;
    }
    uint64_t got = sp_be64_get(k.mv_data);
    if (got != r->expect) {
        snprintf(r->why, sizeof r->why, "sequence %llu is missing (the next record is %llu)",
                 (unsigned long long)r->expect, (unsigned long long)got);
        return SP_EGAP;
    }
    r->expect++;
    *seq = got;
    *rec = (sp_slice_t){v.mv_data, v.mv_size};
    return 0;
}

int log_reader_next(log_reader_t *r, log_event_t *ev)
{
    uint64_t seq;
    sp_slice_t rec;
    int rc = log_reader_next_raw(r, &seq, &rec);
    if (rc != 0) return rc;
    MDB_val v = {rec.n, (void *)rec.p};
    return decode(r, seq, &v, ev);
}

const char *log_reader_why(log_reader_t *r) { return r->why; }

/* ---- subscribers ---- */

int log_subscribe(log_t *log, log_notify_cb cb, void *arg)
{
    pthread_mutex_lock(&log->submu);
    log->subs = sp_xrealloc(log->subs, (log->nsubs + 1) * sizeof *log->subs);
    log->subs[log->nsubs++] = (log__sub_t){cb, arg};
    pthread_mutex_unlock(&log->submu);
    return 0;
}

void log_unsubscribe(log_t *log, log_notify_cb cb, void *arg)
{
    pthread_mutex_lock(&log->submu);
    for (size_t i = 0; i < log->nsubs; i++) {
        if (log->subs[i].cb == cb && log->subs[i].arg == arg) {
            log->subs[i] = log->subs[--log->nsubs];
            break;
        }
    }
    pthread_mutex_unlock(&log->submu);
}

/* ---- stats ---- */

void log_stats(log_t *log, log_stats_t *out)
{
    pthread_mutex_lock(&log->statmu);
    *out = log->stats;
    pthread_mutex_unlock(&log->statmu);
    out->head = log_head(log);
    pthread_rwlock_rdlock(&log->env.resize);
    out->map_size = log->env.map_size;
    pthread_rwlock_unlock(&log->env.resize);
}

int log_test_put_raw(log_t *log, uint64_t seq, sp_slice_t rec)
{
    if (log->thread_started || log->opts.read_only) return SP_EINVAL;
    uint8_t kb[8];
    sp_be64_put(kb, seq);
    MDB_txn *txn;
    int rc = mdb_txn_begin(log->env.env, NULL, 0, &txn);
    if (rc != 0) return log__err(rc);
    MDB_val k = {8, kb}, v = {rec.n, (void *)rec.p};
    if ((rc = mdb_put(txn, log->events, &k, &v, 0)) != 0) {
        mdb_txn_abort(txn);
        return log__err(rc);
    }
    if ((rc = mdb_txn_commit(txn)) != 0) return log__err(rc);
    if (seq > log_head(log)) atomic_store(&log->head, seq);
    return 0;
}
