/* Reading: get, iterate, gaps, corrupt and torn records named by sequence. */
#include "test.h"

#include "helpers.h"

TEST(log_reader_get_and_iterate)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 10; i++) th_note(log, "n");
    log_reader_t *r;
    T_OK(log_reader_open(log, &r));
    T_EQ_U64(log_reader_head(r), 10);
    log_event_t ev;
    T_OK(log_reader_get(r, 7, &ev));
    T_EQ_U64(ev.seq, 7);
    T_RC(SP_ENOTFOUND, log_reader_get(r, 11, &ev));
    log_reader_seek(r, 4);
    uint64_t want = 4;
    int rc;
    while ((rc = log_reader_next(r, &ev)) == 0) T_EQ_U64(ev.seq, want++);
    T_RC(SP_ENOTFOUND, rc);
    T_EQ_U64(want, 11);
    log_reader_close(r);
    log_close(log);
}

TEST(log_reader_snapshot_is_isolated_from_later_appends)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    th_note(log, "one");
    log_reader_t *r;
    T_OK(log_reader_open(log, &r));
    th_note(log, "two");
    T_EQ_U64(log_reader_head(r), 1);
    log_reader_close(r);
    log_close(log);
}

/* Opens without the writer so a test can plant raw bytes. */
static int open_raw(t_ctx_t *t, log_t **log)
{
    log_opts_t o = {.no_writer = true};
    return log_open(log, t_path(t, "log"), &o, NULL, 0);
}

TEST(log_reader_names_the_corrupt_sequence)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 5; i++) th_note(log, "fine");
    log_close(log);
    T_OK(open_raw(t, &log));
    log_reader_t *r;
    T_OK(log_reader_open(log, &r));
    log_event_t ev;
    T_OK(log_reader_get(r, 3, &ev));
    /* copy record 3, flip one byte in its body, write it back */
    sp_buf_t rec = {0};
    log_reader_seek(r, 3);
    uint64_t seq;
    sp_slice_t raw;
    T_OK(log_reader_next_raw(r, &seq, &raw));
    sp_buf_add(&rec, raw.p, raw.n);
    log_reader_close(r);
    rec.p[rec.n - 12] ^= 0x20;
    T_OK(log_test_put_raw(log, 3, sp_buf_slice(&rec)));
    char why[300];
    T_RC(SP_ECORRUPT, (int)th_count(log, why, sizeof why));
    T_ASSERT(strstr(why, "sequence 3: checksum mismatch") != NULL);
    sp_buf_free(&rec);
    log_close(log);
}

TEST(log_reader_names_a_torn_tail)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 4; i++) th_note(log, "fine");
    log_close(log);
    T_OK(open_raw(t, &log));
    /* a tail record cut short, as a torn write would leave it */
    sp_buf_t b = {0};
    uint8_t body[] = {0x80};
    log_entry_t e = {.type = LOG_EV_SYSTEM_NOTE, .body = {body, 1}};
    log_record_encode(&b, 5, &e, 1);
    T_OK(log_test_put_raw(log, 5, (sp_slice_t){b.p, b.n - 4}));
    char why[300];
    T_RC(SP_ECORRUPT, (int)th_count(log, why, sizeof why));
    T_ASSERT(strstr(why, "sequence 5:") != NULL);
    sp_buf_free(&b);
    log_close(log);
}

TEST(log_reader_detects_a_gap)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 3; i++) th_note(log, "fine");
    log_close(log);
    T_OK(open_raw(t, &log));
    sp_buf_t b = {0};
    uint8_t body[] = {0x80};
    log_entry_t e = {.type = LOG_EV_SYSTEM_NOTE, .body = {body, 1}};
    log_record_encode(&b, 6, &e, 1);
    T_OK(log_test_put_raw(log, 6, sp_buf_slice(&b)));
    char why[300];
    T_RC(SP_EGAP, (int)th_count(log, why, sizeof why));
    T_ASSERT(strstr(why, "sequence 4 is missing (the next record is 6)") != NULL);
    sp_buf_free(&b);
    log_close(log);
}

TEST(log_read_only_open_of_missing_log_fails_clearly)
{
    log_t *log;
    log_opts_t ro = {.read_only = true};
    char err[300];
    T_RC(SP_ENOTFOUND, log_open(&log, t_path(t, "nothing"), &ro, err, sizeof err));
    T_ASSERT(strstr(err, "no log at") != NULL);
}
