/* The projection framework: checkpoints, catch-up, versioning, rebuild;
 * and the counts projection. */
#include "test.h"

#include "../log/helpers.h"
#include "projections/projections.h"

#include <ftw.h>

/* A test projection that stores, per event, its sequence -> type name,
 * and counts how often apply ran (to prove what was replayed). */
static int applied_calls;

static int apply_seen(void *state, log_kvtxn_t *t, const log_event_t *ev)
{
    unsigned tbl;
    int rc = log_kvtxn_table(t, "seen.events", &tbl);
    if (rc != 0) return rc;
    uint8_t k[8];
    sp_be64_put(k, ev->seq);
    applied_calls++;
    return log_kvtxn_put(t, tbl, (sp_slice_t){k, 8}, ev->type_name);
}

static const char *const seen_tables[] = {"seen.events", NULL};
static proj_ops_t seen_v1 = {.name = "seen", .version = 1, .apply = apply_seen, .tables = seen_tables};
static proj_ops_t seen_v2 = {.name = "seen", .version = 2, .apply = apply_seen, .tables = seen_tables};

static long count_table(proj_t *p, const char *name)
{
    log_kvtxn_t *t;
    if (log_kv_begin(proj_kv(p), false, &t) != 0) return -1;
    unsigned tbl;
    long n = 0;
    if (log_kvtxn_table(t, name, &tbl) == 0) {
        log_kvcur_t *c;
        sp_slice_t k, v;
        if (log_kvcur_open(t, tbl, &c) == 0) {
            for (int rc = log_kvcur_seek(c, (sp_slice_t){0}, &k, &v); rc == 0; rc = log_kvcur_next(c, &k, &v)) n++;
            log_kvcur_close(c);
        }
    }
    log_kvtxn_abort(t);
    return n;
}

TEST(proj_catch_up_applies_each_event_once_and_checkpoints)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 100; i++) th_note(log, "e");
    const proj_ops_t *ops[] = {&seen_v1};
    proj_t *p;
    applied_calls = 0;
    T_OK(proj_open(&p, log, t_path(t, "views"), ops, 1, NULL, 0));
    proj_info_t info;
    proj_info(p, 0, &info);
    T_ASSERT(info.rebuilt);
    T_OK(proj_catch_up(p));
    T_EQ_U64(proj_applied(p), 100);
    T_EQ_U64(applied_calls, 100);
    T_EQ_U64(count_table(p, "seen.events"), 100);
    proj_close(p);
    /* reopening resumes from the checkpoint: only new events are applied */
    for (int i = 0; i < 20; i++) th_note(log, "e");
    applied_calls = 0;
    T_OK(proj_open(&p, log, t_path(t, "views"), ops, 1, NULL, 0));
    proj_info(p, 0, &info);
    T_ASSERT(!info.rebuilt);
    T_EQ_U64(info.checkpoint, 100);
    T_OK(proj_catch_up(p));
    T_EQ_U64(applied_calls, 20);
    T_EQ_U64(count_table(p, "seen.events"), 120);
    proj_close(p);
    log_close(log);
}

TEST(proj_version_change_rebuilds_from_zero)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 30; i++) th_note(log, "e");
    proj_t *p;
    const proj_ops_t *v1[] = {&seen_v1}, *v2[] = {&seen_v2};
    T_OK(proj_open(&p, log, t_path(t, "views"), v1, 1, NULL, 0));
    T_OK(proj_catch_up(p));
    proj_close(p);
    applied_calls = 0;
    T_OK(proj_open(&p, log, t_path(t, "views"), v2, 1, NULL, 0));
    proj_info_t info;
    proj_info(p, 0, &info);
    T_ASSERT(info.rebuilt);
    T_EQ_U64(info.checkpoint, 0);
    T_EQ_U64(count_table(p, "seen.events"), 0); /* emptied before replay */
    T_OK(proj_catch_up(p));
    T_EQ_U64(applied_calls, 30);
    T_EQ_U64(count_table(p, "seen.events"), 30);
    proj_close(p);
    log_close(log);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) { return remove(path); }

TEST(proj_deleting_views_rebuilds_identical_state)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 500; i++) th_note(log, i % 3 ? "a" : "b");
    const proj_ops_t *ops[] = {&proj_counts_ops, &seen_v1};
    proj_t *p;
    T_OK(proj_open(&p, log, t_path(t, "views"), ops, 2, NULL, 0));
    T_OK(proj_catch_up(p));
    sp_buf_t before = {0}, after = {0};
    T_OK(proj_dump(p, &before));
    proj_close(p);
    nftw(t_path(t, "views"), rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    T_OK(proj_open(&p, log, t_path(t, "views"), ops, 2, NULL, 0));
    T_OK(proj_catch_up(p));
    T_OK(proj_dump(p, &after));
    T_ASSERT(before.n > 0);
    T_EQ_U64(before.n, after.n);
    T_ASSERT(memcmp(before.p, after.p, before.n) == 0);
    sp_buf_free(&before);
    sp_buf_free(&after);
    proj_close(p);
    log_close(log);
}

typedef struct {
    char keys[8][80];
    uint64_t counts[8];
    int n;
} collected_t;

static void collect(void *arg, sp_slice_t key, uint64_t n)
{
    collected_t *c = arg;
    if (c->n >= 8) return;
    snprintf(c->keys[c->n], sizeof c->keys[0], "%.*s", (int)key.n, (const char *)key.p);
    c->counts[c->n++] = n;
}

static int64_t fake_now = 1700000000000000000LL; /* 2023-11-14 */
static int64_t fake_clock(void) { return fake_now; }

TEST(proj_counts_by_type_and_day)
{
    sp_set_wall_clock(fake_clock);
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 3; i++) th_note(log, "x");
    fake_now += 86400000000000LL; /* next day */
    th_note(log, "y");
    uint8_t body[] = {0x81, 0xa5, 'l', 'a', 'b', 'e', 'l', 0xa1, 'z'};
    log_entry_t e = {.type = LOG_EV_SYSTEM_MARK, .body = {body, sizeof body}};
    T_OK(log_append_wait(log, &e, 1, NULL));
    const proj_ops_t *ops[] = {&proj_counts_ops};
    proj_t *p;
    T_OK(proj_open(&p, log, t_path(t, "views"), ops, 1, NULL, 0));
    T_OK(proj_start(p));
    T_OK(proj_wait(p, 5, 10000000000LL));
    log_kvtxn_t *txn;
    T_OK(log_kv_begin(proj_kv(p), false, &txn));
    collected_t types = {0}, days = {0};
    T_OK(proj_counts_by_type(txn, collect, &types));
    T_OK(proj_counts_by_day(txn, "2023-11-15", collect, &days));
    log_kvtxn_abort(txn);
    T_EQ_U64(types.n, 2);
    T_EQ_STR(types.keys[0], "system.mark");
    T_EQ_U64(types.counts[0], 1);
    T_EQ_STR(types.keys[1], "system.note");
    T_EQ_U64(types.counts[1], 4);
    T_EQ_U64(days.n, 2); /* only the second day */
    T_EQ_STR(days.keys[0], "2023-11-15|system.mark");
    T_EQ_STR(days.keys[1], "2023-11-15|system.note");
    T_EQ_U64(days.counts[1], 1);
    /* the running projector follows new appends */
    th_note(log, "z");
    T_OK(proj_wait(p, 6, 10000000000LL));
    proj_close(p);
    log_close(log);
    sp_set_wall_clock(NULL);
}

TEST(proj_day_of_is_civil_utc)
{
    char d[11];
    proj_day_of(0, d);
    T_EQ_STR(d, "1970-01-01");
    proj_day_of(951782400LL * 1000000000LL, d); /* 2000-02-29 00:00 UTC */
    T_EQ_STR(d, "2000-02-29");
    proj_day_of(4102444799LL * 1000000000LL, d); /* 2099-12-31 23:59:59 */
    T_EQ_STR(d, "2099-12-31");
}

static int apply_fail_on_7(void *state, log_kvtxn_t *t, const log_event_t *ev) { return ev->seq == 7 ? SP_EINVAL : 0; }

TEST(proj_apply_failure_stops_and_names_the_sequence)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 10; i++) th_note(log, "e");
    proj_ops_t bad = {.name = "bad", .version = 1, .apply = apply_fail_on_7};
    const proj_ops_t *ops[] = {&bad};
    proj_t *p;
    T_OK(proj_open(&p, log, t_path(t, "views"), ops, 1, NULL, 0));
    T_RC(SP_EINVAL, proj_catch_up(p));
    char msg[300];
    T_RC(SP_EINVAL, proj_failed(p, msg, sizeof msg));
    T_ASSERT(strstr(msg, "sequence 7") != NULL);
    /* nothing of the failed batch was committed */
    proj_info_t info;
    proj_info(p, 0, &info);
    T_EQ_U64(info.checkpoint, 0);
    T_RC(SP_EINVAL, proj_wait(p, 10, 1000000000LL));
    proj_close(p);
    log_close(log);
}

TEST(proj_long_replay_spans_batches)
{
    /* More events than one views transaction holds (16384). */
    enum { N = 40000 };
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    uint8_t body[] = {0x80};
    static log_entry_t es[1000];
    for (int i = 0; i < 1000; i++) es[i] = (log_entry_t){.type = LOG_EV_SYSTEM_NOTE, .body = {body, 1}};
    for (int i = 0; i < N / 1000; i++) T_OK(log_append_wait(log, es, 1000, NULL));
    const proj_ops_t *ops[] = {&seen_v1, &proj_counts_ops};
    proj_t *p;
    T_OK(proj_open(&p, log, t_path(t, "views"), ops, 2, NULL, 0));
    applied_calls = 0;
    T_OK(proj_catch_up(p));
    T_EQ_U64(applied_calls, N);
    T_EQ_U64(count_table(p, "seen.events"), N);
    proj_close(p);
    log_close(log);
}

TEST(log_kv_map_grows_when_full)
{
    log_kv_t *kv;
    T_OK(log_kv_open(&kv, t_path(t, "kv"), 64 * 1024, NULL, 0));
    int grows = 0;
    uint8_t val[200];
    memset(val, 'v', sizeof val);
    for (uint64_t i = 0; i < 5000; i++) {
        log_kvtxn_t *txn;
        T_OK(log_kv_begin(kv, true, &txn));
        unsigned tbl;
        T_OK(log_kvtxn_table(txn, "t.rows", &tbl));
        uint8_t k[8];
        sp_be64_put(k, i);
        int rc = log_kvtxn_put(txn, tbl, (sp_slice_t){k, 8}, (sp_slice_t){val, sizeof val});
        if (rc == SP_EFULL) {
            log_kvtxn_abort(txn);
            T_OK(log_kv_grow(kv));
            grows++;
            i--;
            continue;
        }
        T_OK(rc);
        rc = log_kvtxn_commit(txn);
        if (rc == SP_EFULL) { /* grown by commit; redo */
            grows++;
            i--;
            continue;
        }
        T_OK(rc);
    }
    T_ASSERT(grows > 0);
    log_kv_close(kv);
}
