/* The writer: sequencing, group commit, failures, growth, full disk. */
#include "test.h"

#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

TEST(log_append_assigns_contiguous_sequences)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (uint64_t i = 1; i <= 50; i++) T_EQ_U64(th_note(log, "x"), i);
    T_EQ_U64(log_head(log), 50);
    log_close(log);
    /* reopen: head and contents survive */
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    T_EQ_U64(log_head(log), 50);
    T_EQ_U64(th_count(log, NULL, 0), 50);
    T_EQ_U64(th_note(log, "y"), 51);
    log_close(log);
}

TEST(log_multi_entry_submission_is_atomic_and_contiguous)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    th_note(log, "first");
    uint8_t body[] = {0x81, 0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e', 0xa1, 'z'};
    log_entry_t es[5];
    for (int i = 0; i < 5; i++)
        es[i] = (log_entry_t){.type = LOG_EV_SYSTEM_NOTE, .actor = "a", .body = {body, sizeof body}};
    uint64_t first;
    T_OK(log_append_wait(log, es, 5, &first));
    T_EQ_U64(first, 2);
    T_EQ_U64(log_head(log), 6);
    log_close(log);
}

TEST(log_append_rejects_bad_entries_and_appends_nothing)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    uint64_t seq;
    log_entry_t bad_type = {.type = 9999, .body = {(const uint8_t *)"\x80", 1}};
    T_RC(SP_EUNKNOWN_TYPE, log_append_wait(log, &bad_type, 1, &seq));
    static uint8_t big[LOG_MAX_BODY + 1];
    log_entry_t too_big = {.type = LOG_EV_SYSTEM_NOTE, .body = {big, sizeof big}};
    T_RC(SP_ETOOBIG, log_append_wait(log, &too_big, 1, &seq));
    char actor[LOG_MAX_FIELD + 2];
    memset(actor, 'a', sizeof actor - 1);
    actor[sizeof actor - 1] = 0;
    log_entry_t long_actor = {.type = LOG_EV_SYSTEM_NOTE, .actor = actor, .body = {(const uint8_t *)"\x80", 1}};
    T_RC(SP_EINVAL, log_append_wait(log, &long_actor, 1, &seq));
    T_RC(SP_EINVAL, log_append_wait(log, NULL, 0, &seq));
    T_EQ_U64(log_head(log), 0);
    log_close(log);
}

TEST(log_second_writer_is_refused)
{
    log_t *a, *b;
    T_OK(log_open(&a, t_path(t, "log"), NULL, NULL, 0));
    char err[300];
    T_RC(SP_ELOCKED, log_open(&b, t_path(t, "log"), NULL, err, sizeof err));
    T_ASSERT(strstr(err, "another process") != NULL);
    /* readers are welcome */
    log_opts_t ro = {.read_only = true};
    T_OK(log_open(&b, t_path(t, "log"), &ro, NULL, 0));
    log_close(b);
    log_close(a);
}

typedef struct {
    log_t *log;
    int n;
    uint64_t *seqs;
    int failures;
} producer_t;

static void *produce(void *arg)
{
    producer_t *p = arg;
    for (int i = 0; i < p->n; i++) {
        p->seqs[i] = th_note(p->log, "concurrent");
        if (p->seqs[i] == 0) p->failures++;
    }
    return NULL;
}

TEST(log_concurrent_producers_are_group_committed)
{
    enum { THREADS = 16, EACH = 200 };
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    pthread_t th[THREADS];
    producer_t ps[THREADS];
    static uint64_t seqs[THREADS][EACH];
    for (int i = 0; i < THREADS; i++) {
        ps[i] = (producer_t){log, EACH, seqs[i], 0};
        pthread_create(&th[i], NULL, produce, &ps[i]);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    static bool seen[THREADS * EACH + 1];
    for (int i = 0; i < THREADS; i++) {
        T_EQ_U64(ps[i].failures, 0);
        for (int j = 0; j < EACH; j++) {
            uint64_t s = seqs[i][j];
            T_ASSERT(s >= 1 && s <= THREADS * EACH && !seen[s]);
            seen[s] = true;
            /* each producer sees its own appends in order */
            if (j) T_ASSERT(s > seqs[i][j - 1]);
        }
    }
    log_stats_t st;
    log_stats(log, &st);
    T_EQ_U64(st.head, THREADS * EACH);
    T_EQ_U64(st.events, THREADS * EACH);
    /* with 16 producers waiting on each other's fsync, batches must form */
    T_ASSERT(st.batches < st.events);
    T_EQ_U64(th_count(log, NULL, 0), THREADS * EACH);
    log_close(log);
}

TEST(log_commit_failure_is_sticky_and_log_stays_readable)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    T_EQ_U64(th_note(log, "before"), 1);
    log_test_fail_commits(log, 1, -EIO);
    uint8_t body[] = {0x80};
    log_entry_t e = {.type = LOG_EV_SYSTEM_NOTE, .body = {body, 1}};
    uint64_t seq = 0;
    T_RC(-EIO, log_append_wait(log, &e, 1, &seq));
    /* sticky: refused even though the injected failure is used up */
    T_RC(SP_EFAILED, log_append_wait(log, &e, 1, &seq));
    log_stats_t st;
    log_stats(log, &st);
    T_ASSERT(st.failed && st.commit_failures == 1);
    char msg[300];
    log_errmsg(log, msg, sizeof msg);
    T_ASSERT(strstr(msg, "commit of 1 events failed") != NULL);
    T_EQ_U64(log_head(log), 1);
    T_EQ_U64(th_count(log, NULL, 0), 1);
    log_close(log);
    /* reopening recovers */
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    T_EQ_U64(th_note(log, "after"), 2);
    log_close(log);
}

TEST(log_map_grows_with_the_log)
{
    log_t *log;
    log_opts_t o = {.initial_map = 256 * 1024};
    T_OK(log_open(&log, t_path(t, "log"), &o, NULL, 0));
    log_stats_t st;
    log_stats(log, &st);
    uint64_t initial = st.map_size;
    /* ~2 MB of events into a 256 KiB map */
    char msg[1001];
    memset(msg, 'm', 1000);
    msg[1000] = 0;
    uint64_t last = 0;
    for (int i = 0; i < 2000; i++) {
        last = th_note(log, msg);
        if (last != (uint64_t)i + 1) {
            char err[300];
            log_errmsg(log, err, sizeof err);
            t_fail(t, __FILE__, __LINE__, "append %d failed: %s", i, err);
            log_close(log);
            return;
        }
    }
    log_stats(log, &st);
    T_ASSERT(st.map_grows > 0);
    T_ASSERT(st.map_size > initial);
    T_EQ_U64(th_count(log, NULL, 0), 2000);
    log_close(log);
}

/* A real full disk: a 2 MiB tmpfs in a private mount namespace. */
static int full_disk_child(const char *dir)
{
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return 77;
    if (mount("tmpfs", dir, "tmpfs", 0, "size=2m") != 0) return 77;
    char logdir[4200];
    snprintf(logdir, sizeof logdir, "%s/log", dir);
    log_t *log;
    if (log_open(&log, logdir, NULL, NULL, 0) != 0) return 10;
    if (th_note(log, "fits") != 1) return 11;
    char msg[4001];
    memset(msg, 'f', 4000);
    msg[4000] = 0;
    int appended = 1;
    for (int i = 0; i < 10000 && th_note(log, msg) != 0; i++) appended++;
    if (appended >= 10000) return 12;
    uint8_t body[] = {0x80};
    log_entry_t e = {.type = LOG_EV_SYSTEM_NOTE, .body = {body, 1}};
    uint64_t seq;
    int rc = log_append_wait(log, &e, 1, &seq);
    if (rc != SP_EFAILED) {
        printf("# after %d appends: rc %d (%s)\n", appended, rc, sp_strerror(rc));
        return 13;
    }
    char msg2[300];
    log_errmsg(log, msg2, sizeof msg2);
    if (strstr(msg2, "storage is full") == NULL) return 14;
    /* every acknowledged event is still readable */
    if (th_count(log, NULL, 0) != appended) return 15;
    log_close(log);
    log_opts_t ro = {.read_only = true};
    if (log_open(&log, logdir, &ro, NULL, 0) != 0) return 16;
    long n = th_count(log, NULL, 0);
    log_close(log);
    umount(dir);
    return n == appended ? 0 : 17;
}

TEST(log_full_disk_fails_append_and_leaves_log_readable)
{
    const char *dir = t_path(t, "small");
    mkdir(dir, 0700);
    pid_t pid = fork();
    if (pid == 0) _exit(full_disk_child(dir));
    int st;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
        t_fail(t, __FILE__, __LINE__, "cannot mount a tmpfs here (needs CAP_SYS_ADMIN)");
        return;
    }
    T_ASSERT(WIFEXITED(st));
    T_EQ_U64(WEXITSTATUS(st), 0);
}

static int alloc_budget = -1;
static void *failing_realloc(void *p, size_t n)
{
    if (alloc_budget == 0) return NULL;
    if (alloc_budget > 0) alloc_budget--;
    return realloc(p, n ? n : 1);
}

TEST(log_allocation_failure_aborts_without_damaging_the_log)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 10; i++) th_note(log, "durable");
    log_close(log);
    /* The child runs out of memory in the middle of appending; by design
     * that aborts. What was acknowledged before must survive intact. */
    pid_t pid = fork();
    if (pid == 0) {
        log_t *l;
        if (log_open(&l, t_path(t, "log"), NULL, NULL, 0) != 0) _exit(3);
        alloc_budget = 5;
        sp_set_realloc_hook(failing_realloc);
        for (int i = 0; i < 100; i++) th_note(l, "doomed");
        _exit(4);
    }
    int st;
    waitpid(pid, &st, 0);
    T_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    long n = th_count(log, NULL, 0);
    T_ASSERT(n >= 10 && n <= 15);
    T_EQ_U64(log_head(log), (uint64_t)n);
    log_close(log);
}

/* ---- async completions on a libuv loop ---- */

typedef struct {
    int done;
    uint64_t seqs[64];
    int status;
    uv_loop_t *loop;
} async_ctx_t;

static void on_done(void *arg, int status, uint64_t first)
{
    async_ctx_t *c = arg;
    c->status |= status;
    c->seqs[c->done++] = first;
}

TEST(log_async_appends_complete_on_the_loop)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    uv_loop_t loop;
    uv_loop_init(&loop);
    log_ack_t *ack;
    T_OK(log_ack_open(&ack, &loop));
    async_ctx_t c = {.loop = &loop};
    uint8_t body[] = {0x80};
    log_entry_t e = {.type = LOG_EV_SYSTEM_NOTE, .body = {body, 1}};
    for (int i = 0; i < 64; i++) T_OK(log_append_async(log, ack, &e, 1, on_done, &c));
    int64_t deadline = sp_mono_ns() + 10000000000LL;
    while (c.done < 64 && sp_mono_ns() < deadline) uv_run(&loop, UV_RUN_ONCE);
    T_EQ_U64(c.done, 64);
    T_EQ_U64(c.status, 0);
    for (int i = 0; i < 64; i++) T_EQ_U64(c.seqs[i], (uint64_t)i + 1); /* FIFO */
    log_ack_close(ack);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    log_close(log);
}

TEST(log_close_commits_what_is_queued)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    uv_loop_t loop;
    uv_loop_init(&loop);
    log_ack_t *ack;
    T_OK(log_ack_open(&ack, &loop));
    async_ctx_t c = {0};
    uint8_t body[] = {0x80};
    log_entry_t e = {.type = LOG_EV_SYSTEM_NOTE, .body = {body, 1}};
    for (int i = 0; i < 32; i++) T_OK(log_append_async(log, ack, &e, 1, on_done, &c));
    log_close(log); /* drains: every queued submission is committed */
    uv_run(&loop, UV_RUN_NOWAIT);
    log_ack_close(ack);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    log_opts_t ro = {.read_only = true};
    T_OK(log_open(&log, t_path(t, "log"), &ro, NULL, 0));
    T_EQ_U64(th_count(log, NULL, 0), 32);
    log_close(log);
}

/* ---- subscribers ---- */

static void on_commit(void *arg, uint64_t head) { atomic_store((_Atomic uint64_t *)arg, head); }

TEST(log_subscribers_are_woken_after_commit)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    _Atomic uint64_t seen = 0;
    log_subscribe(log, on_commit, &seen);
    th_note(log, "a");
    T_EQ_U64(atomic_load(&seen), 1); /* called before the append returns */
    th_note(log, "b");
    T_EQ_U64(atomic_load(&seen), 2);
    log_unsubscribe(log, on_commit, &seen);
    th_note(log, "c");
    T_EQ_U64(atomic_load(&seen), 2);
    log_close(log);
}
