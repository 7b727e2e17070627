/*
 * bench-log: the storage benchmarks of issue 2, all in one run.
 *
 *   1. raw LMDB put+commit (the baseline) at batch sizes 1, 64 and 4096
 *   2. log_append_wait from 1, 8 and 64 producer threads
 *   3. replay of a 2,000,000-event log through every projection
 *
 * The machine is shared and its disk's fsync latency comes in bursts, so
 * a figure taken over a few seconds can be off by a factor of ten while
 * the one taken next to it is not. Each spool figure is therefore measured
 * in rounds interleaved with its raw LMDB baseline (a slice of spool, then
 * a slice of raw LMDB, repeated) and the targets are ratios of the sums.
 * Every loop is bounded both in count and in time.
 *
 * Usage: bench-log [--quick] [--dir DIR] [--only LIST]
 *   --quick   small counts and short slices (a smoke run)
 *   --dir     parent of the scratch directory (default $TMPDIR, else /tmp);
 *             it must be on the filesystem the spool log would live on
 *   --only    a subset, e.g. "64" or "replay", to profile one figure
 *
 * Lines starting with "target" are the verdicts; tools/bench/run collects
 * them into its summary.
 *
 * The baseline uses lmdb.h directly, which STYLE.md otherwise keeps
 * inside src/log: the point of item 1 is to measure LMDB without Spool.
 */
#include "ingest/ingest.h"
#include "log/log.h"
#include "projections/projections.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define VALUE_BYTES   100
#define MAP_BYTES     ((size_t)4 << 30) /* sparse: only written pages use disk */
#define BUILD_CHUNK   4096              /* entries per submission when building the replay log */
#define MAX_PRODUCERS 64
#define NS_PER_S      1e9

/* Counts and time budgets. A slice stops at whichever bound comes first. */
typedef struct {
    int rounds;         /* spool/raw slice pairs per comparison */
    double slice_s;     /* length of one slice */
    size_t max_samples; /* commits or acknowledgements kept per side */
    size_t big_commits; /* commits of the batch-4096 row */
    uint64_t replay_events;
} limits_t;

static const limits_t full_limits = {6, 1.0, 1000000, 500, 2000000};
static const limits_t quick_limits = {2, 0.25, 100000, 20, 50000};

/* Throughput and latency accumulated over the slices of one side. */
typedef struct {
    int64_t *lat; /* per commit (raw) or per acknowledgement (spool), ns */
    size_t n, cap;
    uint64_t events;
    int64_t elapsed_ns;
    uint64_t batches; /* commits (raw) or writer batches (spool) */
} acc_t;

static void acc_init(acc_t *a, size_t cap) { *a = (acc_t){.lat = sp_xcalloc(cap, sizeof(int64_t)), .cap = cap}; }

static void acc_free(acc_t *a) { free(a->lat); }

static double acc_rate(const acc_t *a)
{
    return a->elapsed_ns > 0 ? (double)a->events * NS_PER_S / (double)a->elapsed_ns : 0;
}

static double acc_batch(const acc_t *a) { return a->batches ? (double)a->events / (double)a->batches : 0; }

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile in ms. Sorts the samples. */
static double acc_pct_ms(acc_t *a, double p)
{
    if (a->n == 0) return NAN;
    qsort(a->lat, a->n, sizeof *a->lat, cmp_i64);
    size_t rank = (size_t)ceil(p / 100.0 * (double)a->n);
    return (double)a->lat[rank ? rank - 1 : 0] / 1e6;
}

/* ---- small helpers ---- */

static int64_t deadline_after(double s) { return sp_mono_ns() + (int64_t)(s * NS_PER_S); }

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* Prints one verdict line in the format tools/bench/run greps for. */
static void target(const char *name, double got, const char *op, double want, const char *unit)
{
    bool met = strcmp(op, ">=") == 0 ? got >= want : got <= want;
    printf("target  %-50s %8.2f%s %s %.2f%s  %s\n", name, got, unit, op, want, unit, met ? "MET" : "MISSED");
}

/* ---- 1. raw LMDB ----
 * A fresh environment per comparison, default durability (one fsync per
 * commit), MDB_APPEND with 8-byte big-endian keys in the main table: the
 * access pattern of Spool's writer, minus Spool. */

typedef struct {
    char dir[4200];
    MDB_env *env;
    uint64_t seq;
    uint8_t value[VALUE_BYTES];
} raw_t;

static int raw_open(raw_t *r, const char *root, const char *name)
{
    snprintf(r->dir, sizeof r->dir, "%s/raw-%s", root, name);
    r->seq = 0;
    memset(r->value, 'v', sizeof r->value);
    int rc = mkdir(r->dir, 0700) != 0 ? errno : 0;
    if (rc == 0) rc = mdb_env_create(&r->env);
    if (rc == 0) {
        mdb_env_set_mapsize(r->env, MAP_BYTES);
        /* MDB_NOTLS matches the flags of Spool's log environment. */
        if ((rc = mdb_env_open(r->env, r->dir, MDB_NOTLS, 0600)) != 0) mdb_env_close(r->env);
    }
    if (rc != 0) fprintf(stderr, "bench-log: cannot open LMDB in %s: %s\n", r->dir, mdb_strerror(rc));
    return rc == 0 ? 0 : SP_EIO;
}

static void raw_close(raw_t *r)
{
    mdb_env_close(r->env);
    rm_tree(r->dir); /* keep the disk footprint small between comparisons */
}

/* One write transaction holding `batch` puts, then a durable commit. */
static int raw_commit(raw_t *r, size_t batch)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc = mdb_txn_begin(r->env, NULL, 0, &txn);
    if (rc != 0) return rc;
    if ((rc = mdb_dbi_open(txn, NULL, 0, &dbi)) != 0) goto abort;
    for (size_t i = 0; i < batch; i++) {
        uint8_t kb[8];
        sp_be64_put(kb, ++r->seq);
        MDB_val k = {sizeof kb, kb}, v = {VALUE_BYTES, r->value};
        if ((rc = mdb_put(txn, dbi, &k, &v, MDB_APPEND)) != 0) goto abort;
    }
    return mdb_txn_commit(txn);
abort:
    mdb_txn_abort(txn);
    return rc;
}

/* Commits batches for one slice (or until max commits or a full acc). */
static int raw_slice(raw_t *r, size_t batch, double slice_s, size_t max, acc_t *acc)
{
    int rc = 0;
    int64_t deadline = deadline_after(slice_s), start = sp_mono_ns();
    for (size_t i = 0; i < max && acc->n < acc->cap && rc == 0 && sp_mono_ns() < deadline; i++) {
        int64_t t0 = sp_mono_ns();
        rc = raw_commit(r, batch);
        acc->lat[acc->n++] = sp_mono_ns() - t0;
        acc->events += batch;
        acc->batches++;
    }
    acc->elapsed_ns += sp_mono_ns() - start;
    if (rc != 0) fprintf(stderr, "bench-log: raw commit failed: %s\n", mdb_strerror(rc));
    return rc == 0 ? 0 : SP_EIO;
}

/* ---- 2. appends through the writer ---- */

typedef struct {
    log_t *log;
    const log_entry_t *entry;
    int64_t *lat;
    size_t max;
    atomic_size_t claimed, done;
    int64_t deadline;
    pthread_barrier_t start;
    atomic_int err;
} app_shared_t;

/* One producer: append one event, wait for its acknowledgement, repeat. */
static void *producer_main(void *arg)
{
    app_shared_t *s = arg;
    pthread_barrier_wait(&s->start);
    while (atomic_fetch_add(&s->claimed, 1) < s->max && sp_mono_ns() < s->deadline) {
        int64_t t0 = sp_mono_ns();
        int rc = log_append_wait(s->log, s->entry, 1, NULL);
        int64_t t1 = sp_mono_ns();
        if (rc != 0) {
            atomic_store(&s->err, rc);
            break;
        }
        /* done never passes claimed, so the slot is inside the array. */
        s->lat[atomic_fetch_add(&s->done, 1)] = t1 - t0;
    }
    return NULL;
}

/* Starts the producers together, waits for them, returns the elapsed ns. */
static int64_t run_producers(app_shared_t *s, int producers)
{
    pthread_t th[MAX_PRODUCERS];
    pthread_barrier_init(&s->start, NULL, (unsigned)producers + 1);
    for (int i = 0; i < producers; i++) pthread_create(&th[i], NULL, producer_main, s);
    pthread_barrier_wait(&s->start);
    int64_t t0 = sp_mono_ns();
    for (int i = 0; i < producers; i++) pthread_join(th[i], NULL);
    int64_t elapsed = sp_mono_ns() - t0;
    pthread_barrier_destroy(&s->start);
    return elapsed;
}

/* One slice of `producers` threads appending; the batches the writer
 * formed are read from log_stats. */
static int app_slice(log_t *log, const log_entry_t *e, int producers, double slice_s, acc_t *acc)
{
    app_shared_t s = {.log = log, .entry = e, .lat = acc->lat + acc->n, .max = acc->cap - acc->n};
    atomic_init(&s.claimed, 0);
    atomic_init(&s.done, 0);
    atomic_init(&s.err, 0);
    log_stats_t before, after;
    log_stats(log, &before);
    s.deadline = deadline_after(slice_s);
    acc->elapsed_ns += run_producers(&s, producers);
    log_stats(log, &after);
    size_t done = atomic_load(&s.done);
    acc->n += done;
    acc->events += done;
    acc->batches += after.batches - before.batches;
    int rc = atomic_load(&s.err);
    if (rc != 0) fprintf(stderr, "bench-log: append failed: %s\n", sp_strerror(rc));
    return rc;
}

/* ---- 1+2 interleaved ---- */

typedef struct {
    int producers;
    size_t raw_batch; /* 0: the batch the writer formed in the slice before */
    acc_t app, raw;
} cmp_t;

static int open_log(const char *root, int producers, log_t **log, char *dir, size_t n)
{
    char err[512];
    snprintf(dir, n, "%s/append-%d", root, producers);
    /* The same pre-sized map as the baseline: growing it is a rare event
     * that would otherwise land inside one slice. */
    log_opts_t opts = {.initial_map = MAP_BYTES};
    int rc = log_open(log, dir, &opts, err, sizeof err);
    if (rc != 0) fprintf(stderr, "bench-log: %s\n", err);
    return rc;
}

/* Rounds of a spool slice then a raw slice, so bursts of disk latency
 * fall on both sides alike. */
static int compare(const char *root, const log_entry_t *e, const limits_t *lim, cmp_t *c)
{
    char dir[4200], name[32];
    log_t *log;
    raw_t raw;
    snprintf(name, sizeof name, "vs-%d", c->producers);
    int rc = open_log(root, c->producers, &log, dir, sizeof dir);
    if (rc != 0) return rc;
    if ((rc = raw_open(&raw, root, name)) != 0) goto out_log;
    for (int r = 0; r < lim->rounds && rc == 0; r++) {
        uint64_t events = c->app.events, batches = c->app.batches;
        if ((rc = app_slice(log, e, c->producers, lim->slice_s, &c->app)) != 0) break;
        size_t batch = c->raw_batch;
        if (batch == 0 && c->app.batches > batches)
            batch = (size_t)lround((double)(c->app.events - events) / (double)(c->app.batches - batches));
        rc = raw_slice(&raw, batch ? batch : 1, lim->slice_s, SIZE_MAX, &c->raw);
    }
    raw_close(&raw);
out_log:
    log_close(log);
    rm_tree(dir);
    return rc;
}

/* The batch-4096 row has no spool counterpart: measured alone. */
static int big_batch(const char *root, const limits_t *lim, acc_t *acc)
{
    raw_t raw;
    int rc = raw_open(&raw, root, "4096");
    if (rc != 0) return rc;
    rc = raw_slice(&raw, 4096, lim->slice_s * 2, lim->big_commits, acc);
    raw_close(&raw);
    return rc;
}

static void raw_row(const char *batch, const char *with, acc_t *a)
{
    printf("   %7s %8zu %10llu %14.0f %9.3f ms %9.3f ms  %s\n", batch, a->n, (unsigned long long)a->events, acc_rate(a),
           acc_pct_ms(a, 50), acc_pct_ms(a, 99), with);
}

static void app_row(acc_t *a, int producers)
{
    printf("   %9d %10llu %14.0f %9.3f ms %9.3f ms %10.1f\n", producers, (unsigned long long)a->events, acc_rate(a),
           acc_pct_ms(a, 50), acc_pct_ms(a, 99), acc_batch(a));
}

/* What to run (--only): the three comparisons, then the rest. */
enum { RUN_P1 = 1, RUN_P8 = 2, RUN_P64 = 4, RUN_BIG = 8, RUN_REPLAY = 16, RUN_ALL = 31 };

static void print_storage(cmp_t *c, acc_t *big, const limits_t *lim, unsigned parts, size_t record_bytes)
{
    printf("\n   each spool row ran in %d rounds of %.2f s interleaved with %.2f s of its raw LMDB row\n", lim->rounds,
           lim->slice_s, lim->slice_s);
    printf("\n1. raw LMDB put+commit: %d-byte values, MDB_APPEND, 8-byte BE keys, fsync per commit\n", VALUE_BYTES);
    printf("   %7s %8s %10s %14s %12s %12s  %s\n", "batch", "commits", "events", "events/s", "commit p50", "commit p99",
           "interleaved with");
    char b[32], with[48];
    for (int i = 0; i < 3; i++) {
        if (!(parts & (1u << i))) continue;
        if (c[i].raw_batch)
            snprintf(b, sizeof b, "%zu", c[i].raw_batch);
        else
            snprintf(b, sizeof b, "~%.1f", acc_batch(&c[i].raw));
        snprintf(with, sizeof with, "%d producer(s)", c[i].producers);
        raw_row(b, with, &c[i].raw);
    }
    if (parts & RUN_BIG) raw_row("4096", "(alone)", big);
    printf("\n2. spool log_append_wait: 1 event per call (%zu-byte record), each producer waits for its ack\n",
           record_bytes);
    printf("   %9s %10s %14s %12s %12s %10s\n", "producers", "events", "events/s", "ack p50", "ack p99", "avg batch");
    for (int i = 0; i < 3; i++)
        if (parts & (1u << i)) app_row(&c[i].app, c[i].producers);
    fflush(stdout);
}

/* ---- the event appended by items 2 and 3 ---- */

/* A system.note whose msgpack body is VALUE_BYTES long, built through
 * ingest like any event from outside. The message grows until the body
 * reaches the size; msgpack length prefixes make this take two rounds. */
static int make_body(sp_buf_t *body)
{
    char json[VALUE_BYTES + 64], msg[VALUE_BYTES + 1], err[256];
    size_t len = 0;
    int type;
    for (int round = 0; round < 8; round++) {
        memset(msg, 'm', len);
        msg[len] = 0;
        int jn = snprintf(json, sizeof json, "{\"message\":\"%s\"}", msg);
        body->n = 0;
        int rc = ingest_event_json("system.note", json, (size_t)jn, &type, body, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "bench-log: ingest refused the body: %s\n", err);
            return rc;
        }
        if (body->n >= VALUE_BYTES) return 0;
        len += VALUE_BYTES - body->n;
    }
    return SP_EINVAL;
}

static size_t record_size(const log_entry_t *e)
{
    sp_buf_t rec = {0};
    log_record_encode(&rec, 1, e, sp_now_ns());
    size_t n = rec.n;
    sp_buf_free(&rec);
    return n;
}

/* ---- 3. replay ---- */

/* Appends n events in submissions of BUILD_CHUNK entries. Not timed. */
static int build_log(log_t *log, const log_entry_t *entry, uint64_t n)
{
    log_entry_t *chunk = sp_xcalloc(BUILD_CHUNK, sizeof *chunk);
    for (size_t i = 0; i < BUILD_CHUNK; i++) chunk[i] = *entry;
    int rc = 0;
    for (uint64_t left = n; left > 0 && rc == 0;) {
        size_t k = left < BUILD_CHUNK ? (size_t)left : BUILD_CHUNK;
        rc = log_append_wait(log, chunk, k, NULL);
        left -= k;
    }
    free(chunk);
    return rc;
}

/* Reads and decodes every event without projections: tells decoding
 * apart from applying when replay is slow. */
static int scan_log(log_t *log, uint64_t *count)
{
    log_reader_t *r;
    int rc = log_reader_open(log, &r);
    if (rc != 0) return rc;
    log_reader_seek(r, 1);
    log_event_t ev;
    uint64_t n = 0;
    while ((rc = log_reader_next(r, &ev)) == 0) n++;
    log_reader_close(r);
    *count = n;
    return rc == SP_ENOTFOUND ? 0 : rc;
}

/* Times proj_open on an empty views folder plus proj_catch_up. */
static int time_replay(log_t *log, const char *views, int64_t *elapsed, uint64_t *applied)
{
    char err[512];
    proj_t *p;
    int64_t t0 = sp_mono_ns();
    int rc = proj_open(&p, log, views, proj_all, proj_all_count, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "bench-log: %s\n", err);
        return rc;
    }
    rc = proj_catch_up(p);
    *elapsed = sp_mono_ns() - t0;
    *applied = proj_applied(p);
    proj_close(p);
    return rc;
}

typedef struct {
    uint64_t events, scanned, applied;
    int64_t build_ns, scan_ns, replay_ns;
} replay_t;

static void replay_report(const replay_t *r)
{
    printf("\n3. replay through every projection (%zu: ", proj_all_count);
    for (size_t i = 0; i < proj_all_count; i++) printf("%s%s", i ? ", " : "", proj_all[i]->name);
    printf("), warm page cache\n");
    printf("   %-40s %12llu events in %7.3f s\n", "build (4096 per submission, not a target)",
           (unsigned long long)r->events, (double)r->build_ns / NS_PER_S);
    printf("   %-40s %12.0f events/s (%.3f s)\n", "log scan, decode only (no projections)",
           (double)r->events * NS_PER_S / (double)r->scan_ns, (double)r->scan_ns / NS_PER_S);
    printf("   %-40s %12.0f events/s (%.3f s)\n", "proj_open (empty views) + proj_catch_up",
           (double)r->events * NS_PER_S / (double)r->replay_ns, (double)r->replay_ns / NS_PER_S);
    fflush(stdout);
}

/* Builds the log, scans it, replays it; checks every event was seen. */
static int replay_steps(log_t *log, const log_entry_t *e, const char *views, replay_t *r)
{
    int64_t t0 = sp_mono_ns();
    int rc = build_log(log, e, r->events);
    int64_t t1 = sp_mono_ns();
    if (rc == 0) rc = scan_log(log, &r->scanned);
    r->build_ns = t1 - t0;
    r->scan_ns = sp_mono_ns() - t1;
    if (rc == 0) rc = time_replay(log, views, &r->replay_ns, &r->applied);
    if (rc == 0 && (r->scanned != r->events || r->applied != r->events)) {
        fprintf(stderr, "bench-log: replay saw %llu (scan) and %llu (projections) of %llu events\n",
                (unsigned long long)r->scanned, (unsigned long long)r->applied, (unsigned long long)r->events);
        rc = SP_ECORRUPT;
    }
    if (rc != 0) fprintf(stderr, "bench-log: replay failed: %s\n", sp_strerror(rc));
    return rc;
}

static int replay_run(const char *root, const log_entry_t *e, uint64_t events, double *rate)
{
    char dir[4200], views[4200], err[512];
    snprintf(dir, sizeof dir, "%s/replay-log", root);
    snprintf(views, sizeof views, "%s/replay-views", root);
    /* A map big enough for the whole log skips the grow-and-retry cycles
     * while building; the build is not what is measured. */
    log_opts_t opts = {.initial_map = (size_t)(events * 256 + (64u << 20))};
    log_t *log;
    int rc = log_open(&log, dir, &opts, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "bench-log: %s\n", err);
        return rc;
    }
    replay_t r = {.events = events};
    if ((rc = replay_steps(log, e, views, &r)) == 0) {
        replay_report(&r);
        *rate = (double)events * NS_PER_S / (double)r.replay_ns;
    }
    log_close(log);
    rm_tree(dir);
    rm_tree(views);
    return rc;
}

/* ---- the whole run ---- */

typedef struct {
    const char *root;
    const limits_t *lim;
    unsigned parts;
    bool quick;
} run_cfg_t;

static void print_targets(cmp_t *c, double replay_rate, const run_cfg_t *cfg)
{
    char name[64];
    printf("\ntargets (ratios within this run%s)\n", cfg->quick ? "; --quick: counts too small to judge" : "");
    if (cfg->parts & RUN_P1) {
        target("appends 1 producer / raw batch 1 (events/s)", acc_rate(&c[0].app) / acc_rate(&c[0].raw), ">=", 0.5,
               "x");
    }
    if (cfg->parts & RUN_P8) {
        snprintf(name, sizeof name, "appends 8 producers / raw batch ~%.1f (events/s)", acc_batch(&c[1].raw));
        target(name, acc_rate(&c[1].app) / acc_rate(&c[1].raw), ">=", 0.5, "x");
    }
    if (cfg->parts & RUN_P64) {
        target("appends 64 producers / raw batch 64 (events/s)", acc_rate(&c[2].app) / acc_rate(&c[2].raw), ">=", 0.5,
               "x");
    }
    if (cfg->parts & RUN_P1) {
        target("ack p50 1 producer / raw commit p50 batch 1", acc_pct_ms(&c[0].app, 50) / acc_pct_ms(&c[0].raw, 50),
               "<=", 1.5, "x");
    }
    if (cfg->parts & RUN_REPLAY) target("replay events/s (millions)", replay_rate / 1e6, ">=", 2.0, "M");
}

static int run_storage(const run_cfg_t *cfg, const log_entry_t *e, cmp_t *c, acc_t *big)
{
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        if (cfg->parts & (1u << i)) rc = compare(cfg->root, e, cfg->lim, &c[i]);
    if (rc == 0 && (cfg->parts & RUN_BIG)) rc = big_batch(cfg->root, cfg->lim, big);
    if (rc == 0 && (cfg->parts & (RUN_P1 | RUN_P8 | RUN_P64 | RUN_BIG)))
        print_storage(c, big, cfg->lim, cfg->parts, record_size(e));
    return rc;
}

static int run_all(const run_cfg_t *cfg)
{
    cmp_t c[3] = {{.producers = 1, .raw_batch = 1}, {.producers = 8}, {.producers = 64, .raw_batch = 64}};
    acc_t big;
    double replay_rate = 0;
    sp_buf_t body = {0};
    int rc = make_body(&body);
    log_entry_t e = {.type = LOG_EV_SYSTEM_NOTE, .actor = "bench", .body = sp_buf_slice(&body)};
    acc_init(&big, cfg->lim->big_commits);
    for (int i = 0; i < 3; i++) {
        acc_init(&c[i].app, cfg->lim->max_samples);
        acc_init(&c[i].raw, cfg->lim->max_samples);
    }
    if (rc == 0) rc = run_storage(cfg, &e, c, &big);
    if (rc == 0 && (cfg->parts & RUN_REPLAY)) rc = replay_run(cfg->root, &e, cfg->lim->replay_events, &replay_rate);
    if (rc == 0) print_targets(c, replay_rate, cfg);
    for (int i = 0; i < 3; i++) {
        acc_free(&c[i].app);
        acc_free(&c[i].raw);
    }
    acc_free(&big);
    sp_buf_free(&body);
    return rc;
}

/* Parses --only's comma-separated list into RUN_* bits; 0 if invalid. */
static unsigned parse_only(const char *list)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"1", RUN_P1}, {"8", RUN_P8}, {"64", RUN_P64}, {"4096", RUN_BIG}, {"replay", RUN_REPLAY}};
    unsigned parts = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < SP_ARRAY_LEN(names) && strcmp(names[i].name, tok) != 0) i++;
        if (i == SP_ARRAY_LEN(names)) return 0;
        parts |= names[i].bit;
    }
    return parts;
}

static const char usage[] = "usage: bench-log [--quick] [--dir DIR] [--only LIST]\n"
                            "  --quick      small counts and short slices (a smoke run)\n"
                            "  --dir DIR    parent of the scratch directory (default $TMPDIR, else /tmp)\n"
                            "  --only LIST  run only these parts, comma-separated: 1, 8, 64 (the producer\n"
                            "               counts with their raw baselines), 4096, replay; for profiling\n";

/* Fills cfg from the command line; returns -1 to go on, else an exit status. */
static int parse_args(int argc, char **argv, run_cfg_t *cfg)
{
    static const struct option opts[] = {{"quick", no_argument, 0, 'q'},
                                         {"dir", required_argument, 0, 'd'},
                                         {"only", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    int c;
    while ((c = getopt_long(argc, argv, "qd:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'q': cfg->quick = true; break;
        case 'd': cfg->root = optarg; break;
        case 'o':
            if ((cfg->parts = parse_only(optarg)) == 0) {
                fprintf(stderr, "bench-log: --only: unknown part in \"%s\"\n%s", optarg, usage);
                return 2;
            }
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind != argc) {
        fputs(usage, stderr);
        return 2;
    }
    cfg->lim = cfg->quick ? &quick_limits : &full_limits;
    return -1;
}

int main(int argc, char **argv)
{
    run_cfg_t cfg = {.root = getenv("TMPDIR"), .parts = RUN_ALL};
    int status = parse_args(argc, argv, &cfg);
    if (status >= 0) return status;
    const char *parent = cfg.root && *cfg.root ? cfg.root : "/tmp";
    char root[4096];
    snprintf(root, sizeof root, "%s/spool-bench-log-XXXXXX", parent);
    if (mkdtemp(root) == NULL) {
        fprintf(stderr, "bench-log: cannot create a scratch directory in %s: %s\n", parent, strerror(errno));
        return 1;
    }
    cfg.root = root;
    printf("bench-log (%s run), scratch directory %s\n", cfg.quick ? "quick" : "full", root);
    fflush(stdout);
    int rc = run_all(&cfg);
    rm_tree(root);
    return rc == 0 ? 0 : 1;
}
