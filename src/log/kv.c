/*
 * Key-value stores for projections: a second LMDB environment holding
 * derived data. It is opened with MDB_NOSYNC because every byte in it can
 * be rebuilt from the log; a crash may lose recent view writes, and the
 * checkpoint committed with them rolls back just as far.
 */
#include "log_internal.h"

#include <stdlib.h>

#define MAX_TABLES 128

struct log_kv {
    log__env_t env;
    pthread_mutex_t tblmu;
    struct {
        char name[64];
        MDB_dbi dbi;
    } tables[MAX_TABLES];
    unsigned ntables;
};

struct log_kvtxn {
    log_kv_t *kv;
    MDB_txn *txn;
    bool write;
    /* tables first opened by this write txn; shared once it commits */
    unsigned npending;
    struct {
        char name[64];
        MDB_dbi dbi;
    } pending[64];
};

struct log_kvcur {
    log_kvtxn_t *t;
    MDB_cursor *cur;
};

int log_kv_open(log_kv_t **out, const char *dir, size_t initial_map, char *errbuf, size_t errlen)
{
    log_kv_t *kv = sp_xcalloc(1, sizeof *kv);
    int rc = log__env_open(&kv->env, dir, MDB_NOSYNC, initial_map, MAX_TABLES, errbuf, errlen);
    if (rc != 0) {
        free(kv);
        return rc;
    }
    pthread_mutex_init(&kv->tblmu, NULL);
    sp_handle_opened();
    *out = kv;
    return 0;
}

void log_kv_close(log_kv_t *kv)
{
    if (kv == NULL) return;
    mdb_env_sync(kv->env.env, 1);
    log__env_close(&kv->env);
    pthread_mutex_destroy(&kv->tblmu);
    free(kv);
    sp_handle_closed();
}

static void cache_add(log_kv_t *kv, const char *name, MDB_dbi dbi)
{
    for (unsigned i = 0; i < kv->ntables; i++)
        if (strcmp(kv->tables[i].name, name) == 0) return;
    if (kv->ntables < MAX_TABLES) {
        snprintf(kv->tables[kv->ntables].name, sizeof kv->tables[0].name, "%s", name);
        kv->tables[kv->ntables++].dbi = dbi;
    }
}

int log_kv_grow(log_kv_t *kv) { return log__env_grow(&kv->env); }

int log_kv_begin(log_kv_t *kv, bool write, log_kvtxn_t **out)
{
    log_kvtxn_t *t = sp_xcalloc(1, sizeof *t);
    t->kv = kv;
    t->write = write;
    int rc;
    if (write) {
        /* Writers take the resize lock shared too, so a grow (which needs
         * every transaction of this process closed) waits for them. */
        pthread_rwlock_rdlock(&kv->env.resize);
        rc = mdb_txn_begin(kv->env.env, NULL, 0, &t->txn);
        if (rc != 0) {
            pthread_rwlock_unlock(&kv->env.resize);
            rc = log__err(rc);
        }
    } else {
        rc = log__rtxn_begin(&kv->env, &t->txn);
    }
    if (rc != 0) {
        free(t);
        return rc;
    }
    sp_handle_opened();
    *out = t;
    return 0;
}

static void txn_free(log_kvtxn_t *t)
{
    pthread_rwlock_unlock(&t->kv->env.resize);
    free(t);
    sp_handle_closed();
}

int log_kvtxn_commit(log_kvtxn_t *t)
{
    log_kv_t *kv = t->kv;
    pthread_mutex_lock(&kv->tblmu);
    int rc = mdb_txn_commit(t->txn);
    if (rc == 0)
        for (unsigned i = 0; i < t->npending; i++) cache_add(kv, t->pending[i].name, t->pending[i].dbi);
    pthread_mutex_unlock(&kv->tblmu);
    txn_free(t);
    /* A full map is not an error for derived data: grow it now; the
     * caller replays the batch, which is idempotent by checkpoint. */
    if (rc == MDB_MAP_FULL) {
        int grc = log__env_grow(&kv->env);
        return grc ? grc : SP_EFULL;
    }
    return log__err(rc);
}

void log_kvtxn_abort(log_kvtxn_t *t)
{
    /* Ending a read txn by commit keeps table handles it opened; an
     * abort would close them under other threads' feet. */
    if (t->write) {
        mdb_txn_abort(t->txn);
    } else {
        pthread_mutex_lock(&t->kv->tblmu);
        mdb_txn_commit(t->txn);
        pthread_mutex_unlock(&t->kv->tblmu);
    }
    txn_free(t);
}

/* Table handles come from a cache filled only by committed write
 * transactions. LMDB lets a transaction use a handle only if the handle
 * was opened before the transaction began, and forbids concurrent
 * mdb_dbi_open calls; so read transactions never open tables (a table not
 * in the cache does not exist for them), and projections create their
 * tables when they open, before anyone reads (proj_open). */
int log_kvtxn_table(log_kvtxn_t *t, const char *name, unsigned *tbl)
{
    log_kv_t *kv = t->kv;
    if (strlen(name) >= sizeof kv->tables[0].name) return SP_EINVAL;
    pthread_mutex_lock(&kv->tblmu);
    for (unsigned i = 0; i < kv->ntables; i++) {
        if (strcmp(kv->tables[i].name, name) == 0) {
            *tbl = kv->tables[i].dbi;
            pthread_mutex_unlock(&kv->tblmu);
            return 0;
        }
    }
    for (unsigned i = 0; i < t->npending; i++) {
        if (strcmp(t->pending[i].name, name) == 0) {
            *tbl = t->pending[i].dbi;
            pthread_mutex_unlock(&kv->tblmu);
            return 0;
        }
    }
    int rc = SP_ENOTFOUND;
    MDB_dbi dbi = 0;
    if (t->write && t->npending < SP_ARRAY_LEN(t->pending)) {
        rc = log__err(mdb_dbi_open(t->txn, name, MDB_CREATE, &dbi));
        if (rc == 0) {
            snprintf(t->pending[t->npending].name, sizeof t->pending[0].name, "%s", name);
            t->pending[t->npending++].dbi = dbi;
        }
    } else if (t->write) {
        rc = SP_ETOOBIG; /* raise the pending limit */
    }
    pthread_mutex_unlock(&kv->tblmu);
    if (rc == 0) *tbl = dbi;
    return rc;
}

int log_kvtxn_get(log_kvtxn_t *t, unsigned tbl, sp_slice_t key, sp_slice_t *val)
{
    MDB_val k = {key.n, (void *)key.p}, v;
    int rc = mdb_get(t->txn, tbl, &k, &v);
    if (rc != 0) return log__err(rc);
    *val = (sp_slice_t){v.mv_data, v.mv_size};
    return 0;
}

int log_kvtxn_put(log_kvtxn_t *t, unsigned tbl, sp_slice_t key, sp_slice_t val)
{
    MDB_val k = {key.n, (void *)key.p}, v = {val.n, (void *)val.p};
    return log__err(mdb_put(t->txn, tbl, &k, &v, 0));
}

int log_kvtxn_del(log_kvtxn_t *t, unsigned tbl, sp_slice_t key)
{
    MDB_val k = {key.n, (void *)key.p};
    int rc = mdb_del(t->txn, tbl, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : log__err(rc);
}

int log_kvtxn_clear(log_kvtxn_t *t, unsigned tbl) { return log__err(mdb_drop(t->txn, tbl, 0)); }

/* Collects the names of tables starting with prefix, in order. Named
 * tables are keys of LMDB's main table (handle 1). Names are gathered
 * first because tables must not be opened while a cursor walks it. */
static int list_tables(log_kvtxn_t *t, const char *prefix, char (*names)[64], size_t *count)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t->txn, 1, &c);
    if (rc != 0) return log__err(rc);
    size_t plen = strlen(prefix), n = 0;
    MDB_val k = {plen, (void *)prefix}, v;
    MDB_cursor_op op = plen ? MDB_SET_RANGE : MDB_FIRST;
    for (rc = mdb_cursor_get(c, &k, &v, op); rc == 0 && n < MAX_TABLES; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0) break;
        if (k.mv_size >= sizeof names[0]) continue;
        memcpy(names[n], k.mv_data, k.mv_size);
        names[n++][k.mv_size] = 0;
    }
    mdb_cursor_close(c);
    *count = n;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : log__err(rc);
}

static void add_hex(sp_buf_t *out, sp_slice_t s)
{
    static const char hex[] = "0123456789abcdef";
    sp_buf_reserve(out, s.n * 2);
    for (size_t i = 0; i < s.n; i++) {
        out->p[out->n++] = (uint8_t)hex[s.p[i] >> 4];
        out->p[out->n++] = (uint8_t)hex[s.p[i] & 15];
    }
}

int log_kvtxn_dump(log_kvtxn_t *t, const char *const *skip, sp_buf_t *out)
{
    char names[MAX_TABLES][64];
    size_t n;
    int rc = list_tables(t, "", names, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bool skipped = false;
        for (const char *const *s = skip; s && *s; s++) skipped |= strcmp(*s, names[i]) == 0;
        unsigned tbl;
        if (skipped || (rc = log_kvtxn_table(t, names[i], &tbl)) != 0) continue;
        log_kvcur_t *c;
        if ((rc = log_kvcur_open(t, tbl, &c)) != 0) break;
        sp_slice_t k, v;
        for (rc = log_kvcur_seek(c, (sp_slice_t){0}, &k, &v); rc == 0; rc = log_kvcur_next(c, &k, &v)) {
            sp_buf_printf(out, "%s\t", names[i]);
            add_hex(out, k);
            sp_buf_add(out, "\t", 1);
            add_hex(out, v);
            sp_buf_add(out, "\n", 1);
        }
        log_kvcur_close(c);
        if (rc == SP_ENOTFOUND) rc = 0;
    }
    return rc;
}

int log_kvtxn_clear_prefix(log_kvtxn_t *t, const char *prefix)
{
    char names[MAX_TABLES][64];
    size_t n;
    int rc = list_tables(t, prefix, names, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        unsigned tbl;
        if ((rc = log_kvtxn_table(t, names[i], &tbl)) == 0) rc = log_kvtxn_clear(t, tbl);
    }
    return rc;
}

int log_kvcur_open(log_kvtxn_t *t, unsigned tbl, log_kvcur_t **out)
{
    log_kvcur_t *c = sp_xcalloc(1, sizeof *c);
    c->t = t;
    int rc = mdb_cursor_open(t->txn, tbl, &c->cur);
    if (rc != 0) {
        free(c);
        return log__err(rc);
    }
    sp_handle_opened();
    *out = c;
    return 0;
}

static int cur_get(log_kvcur_t *c, MDB_val *k, MDB_cursor_op op, sp_slice_t *ko, sp_slice_t *vo)
{
    MDB_val v;
    int rc = mdb_cursor_get(c->cur, k, &v, op);
    if (rc != 0) return log__err(rc);
    if (ko) *ko = (sp_slice_t){k->mv_data, k->mv_size};
    if (vo) *vo = (sp_slice_t){v.mv_data, v.mv_size};
    return 0;
}

int log_kvcur_seek(log_kvcur_t *c, sp_slice_t key, sp_slice_t *k, sp_slice_t *v)
{
    MDB_val mk = {key.n, (void *)key.p};
    return cur_get(c, &mk, key.n ? MDB_SET_RANGE : MDB_FIRST, k, v);
}

int log_kvcur_next(log_kvcur_t *c, sp_slice_t *k, sp_slice_t *v)
{
    MDB_val mk;
    return cur_get(c, &mk, MDB_NEXT, k, v);
}

void log_kvcur_close(log_kvcur_t *c)
{
    mdb_cursor_close(c->cur);
    free(c);
    sp_handle_closed();
}
