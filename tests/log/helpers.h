/* Helpers shared by the log and projection tests. */
#ifndef SPOOL_TEST_LOG_HELPERS_H
#define SPOOL_TEST_LOG_HELPERS_H

#include "ingest/ingest.h"
#include "log/log.h"

#include <stdlib.h>

/* Appends one system.note with the given message; returns its seq or 0. */
static inline uint64_t th_note(log_t *log, const char *msg)
{
    char *json = sp_xasprintf("{\"message\":\"%s\"}", msg);
    sp_buf_t body = {0};
    int type;
    char err[200];
    int vrc = ingest_event_json("system.note", json, strlen(json), &type, &body, err, sizeof err);
    free(json);
    if (vrc != 0) return 0;
    log_entry_t e = {.type = type, .actor = "test", .body = sp_buf_slice(&body)};
    uint64_t seq = 0;
    int rc = log_append_wait(log, &e, 1, &seq);
    sp_buf_free(&body);
    return rc == 0 ? seq : 0;
}

/* Reads the whole log; returns the number of events, or a negative code
 * (and the reader's reason in why). */
static inline long th_count(log_t *log, char *why, size_t n)
{
    log_reader_t *r;
    int rc = log_reader_open(log, &r);
    if (rc != 0) return rc;
    log_reader_seek(r, 1);
    log_event_t ev;
    long count = 0;
    while ((rc = log_reader_next(r, &ev)) == 0) count++;
    if (why) snprintf(why, n, "%s", log_reader_why(r));
    log_reader_close(r);
    return rc == SP_ENOTFOUND ? count : rc;
}

#endif
