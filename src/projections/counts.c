/*
 * counts: events per type and per UTC day. Used by /status and /metrics,
 * and the projection that proves the framework end to end.
 *
 * Tables:
 *   counts.type  key: type name            value: u64 big-endian count
 *   counts.day   key: "YYYY-MM-DD|type"    value: u64 big-endian count
 *
 * apply only adds to an in-memory delta table; flush folds the deltas
 * into LMDB once per batch. A replay thus does two LMDB writes per
 * distinct key per batch instead of two per event.
 */
#include "projections.h"

#include <stdio.h>

#define DELTA_SLOTS 512
#define KEY_MAX     96

typedef struct {
    char key[KEY_MAX];
    uint8_t keylen;
    bool day;
    uint64_t delta;
} delta_t;

typedef struct {
    delta_t slots[DELTA_SLOTS];
    size_t used;
} counts_state_t;

/* Civil date from days since 1970-01-01 (Howard Hinnant's algorithm):
 * pure arithmetic, so replays never depend on the host's time zone. */
void proj_day_of(int64_t ns, char *out)
{
    int64_t z = ns / 86400000000000LL;
    if (ns < 0 && ns % 86400000000000LL) z--;
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
    snprintf(out, 11, "%04d-%02d-%02d", (int)(y % 10000), (int)m, (int)d);
}

static int flush_counts(void *state, log_kvtxn_t *t)
{
    counts_state_t *st = state;
    if (st->used == 0) return 0;
    unsigned tbl_type, tbl_day;
    int rc;
    if ((rc = log_kvtxn_table(t, "counts.type", &tbl_type)) != 0) return rc;
    if ((rc = log_kvtxn_table(t, "counts.day", &tbl_day)) != 0) return rc;
    for (size_t i = 0; i < DELTA_SLOTS; i++) {
        delta_t *d = &st->slots[i];
        if (d->keylen == 0) continue;
        sp_slice_t key = {(const uint8_t *)d->key, d->keylen}, old;
        unsigned tbl = d->day ? tbl_day : tbl_type;
        uint64_t n = d->delta;
        rc = log_kvtxn_get(t, tbl, key, &old);
        if (rc == 0 && old.n == 8)
            n += sp_be64_get(old.p);
        else if (rc != 0 && rc != SP_ENOTFOUND)
            return rc;
        uint8_t v[8];
        sp_be64_put(v, n);
        if ((rc = log_kvtxn_put(t, tbl, key, (sp_slice_t){v, 8})) != 0) return rc;
        d->keylen = 0;
    }
    st->used = 0;
    return 0;
}

static int add(counts_state_t *st, log_kvtxn_t *t, bool day, const char *key, size_t n)
{
    uint32_t h = 2166136261u ^ (uint32_t)day;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)key[i]) * 16777619u;
    for (uint32_t i = h % DELTA_SLOTS;; i = (i + 1) % DELTA_SLOTS) {
        delta_t *d = &st->slots[i];
        if (d->keylen == n && d->day == day && memcmp(d->key, key, n) == 0) {
            d->delta++;
            return 0;
        }
        if (d->keylen == 0) {
            /* Keep the table at most half full so probes stay short. */
            if (st->used >= DELTA_SLOTS / 2) {
                int rc = flush_counts(st, t);
                return rc ? rc : add(st, t, day, key, n);
            }
            memcpy(d->key, key, n);
            d->keylen = (uint8_t)n;
            d->day = day;
            d->delta = 1;
            st->used++;
            return 0;
        }
    }
}

static int apply_counts(void *state, log_kvtxn_t *t, const log_event_t *ev)
{
    counts_state_t *st = state;
    char key[KEY_MAX];
    size_t tn = ev->type_name.n; /* at most 64 bytes, checked by decode */
    int rc = add(st, t, false, (const char *)ev->type_name.p, tn);
    if (rc != 0) return rc;
    proj_day_of(ev->time_ns, key);
    key[10] = '|';
    memcpy(key + 11, ev->type_name.p, tn);
    return add(st, t, true, key, 11 + tn);
}

static const char *const tables[] = {"counts.type", "counts.day", NULL};

const proj_ops_t proj_counts_ops = {
    .name = "counts",
    .version = 1,
    .state_size = sizeof(counts_state_t),
    .apply = apply_counts,
    .flush = flush_counts,
    .tables = tables,
};

static int each(log_kvtxn_t *t, const char *table, const char *from, proj_count_cb cb, void *arg)
{
    unsigned tbl;
    int rc = log_kvtxn_table(t, table, &tbl);
    if (rc == SP_ENOTFOUND) return 0;
    if (rc != 0) return rc;
    log_kvcur_t *c;
    if ((rc = log_kvcur_open(t, tbl, &c)) != 0) return rc;
    sp_slice_t k, v;
    for (rc = log_kvcur_seek(c, from ? SP_SLICE_STR(from) : (sp_slice_t){0}, &k, &v); rc == 0;
         rc = log_kvcur_next(c, &k, &v))
        if (v.n == 8) cb(arg, k, sp_be64_get(v.p));
    log_kvcur_close(c);
    return rc == SP_ENOTFOUND ? 0 : rc;
}

int proj_counts_by_type(log_kvtxn_t *t, proj_count_cb cb, void *arg) { return each(t, "counts.type", NULL, cb, arg); }

int proj_counts_by_day(log_kvtxn_t *t, const char *from, proj_count_cb cb, void *arg)
{
    return each(t, "counts.day", from, cb, arg);
}
