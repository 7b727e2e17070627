/* Record encoding and decoding: round trips, checksums, torn records,
 * redaction. */
#include "test.h"

#include "log/log.h"

static void encode_note(sp_buf_t *out, uint64_t seq, const char *msg)
{
    /* body {"message": msg} in msgpack */
    uint8_t body[300];
    size_t n = strlen(msg);
    body[0] = 0x81;
    body[1] = 0xa7;
    memcpy(body + 2, "message", 7);
    body[9] = 0xd9;
    body[10] = (uint8_t)n;
    memcpy(body + 11, msg, n);
    log_entry_t e = {.type = LOG_EV_SYSTEM_NOTE, .actor = "tester", .request_id = "req-1", .body = {body, 11 + n}};
    log_record_encode(out, seq, &e, 1700000000000000000LL);
}

TEST(log_record_roundtrip)
{
    sp_buf_t b = {0};
    encode_note(&b, 42, "hello");
    log_event_t ev;
    char why[100];
    T_OK(log_record_decode(42, sp_buf_slice(&b), &ev, why, sizeof why));
    T_EQ_U64(ev.seq, 42);
    T_EQ_U64(ev.type, LOG_EV_SYSTEM_NOTE);
    T_ASSERT(sp_slice_eq_str(ev.type_name, "system.note"));
    T_EQ_U64(ev.schema, 1);
    T_EQ_U64(ev.time_ns, 1700000000000000000LL);
    T_ASSERT(sp_slice_eq_str(ev.actor, "tester"));
    T_ASSERT(sp_slice_eq_str(ev.request_id, "req-1"));
    T_ASSERT(!ev.redacted);
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object o;
    T_OK(log_body_unpack(ev.body, &z, &o));
    sp_slice_t m;
    T_ASSERT(log_body_str(&o, "message", &m) && sp_slice_eq_str(m, "hello"));
    T_ASSERT(log_body_get(&o, "absent") == NULL);
    msgpack_zone_destroy(&z);
    sp_buf_free(&b);
}

TEST(log_record_checksum_binds_sequence)
{
    sp_buf_t b = {0};
    encode_note(&b, 7, "x");
    log_event_t ev;
    char why[100];
    T_RC(SP_ECORRUPT, log_record_decode(8, sp_buf_slice(&b), &ev, why, sizeof why));
    T_EQ_STR(why, "checksum mismatch");
    sp_buf_free(&b);
}

TEST(log_record_every_flipped_byte_is_detected)
{
    sp_buf_t b = {0};
    encode_note(&b, 3, "some message body");
    for (size_t i = 0; i < b.n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.p[i] ^= (uint8_t)(1u << bit);
            log_event_t ev;
            int rc = log_record_decode(3, sp_buf_slice(&b), &ev, NULL, 0);
            b.p[i] ^= (uint8_t)(1u << bit);
            if (rc != SP_ECORRUPT) {
                t_fail(t, __FILE__, __LINE__, "flip of byte %zu bit %d not detected (rc %d)", i, bit, rc);
                sp_buf_free(&b);
                return;
            }
        }
    }
    sp_buf_free(&b);
}

TEST(log_record_torn_record_is_detected)
{
    sp_buf_t b = {0};
    encode_note(&b, 1, "torn");
    for (size_t n = 0; n < b.n; n++) {
        log_event_t ev;
        char why[100];
        int rc = log_record_decode(1, (sp_slice_t){b.p, n}, &ev, why, sizeof why);
        if (rc != SP_ECORRUPT) {
            t_fail(t, __FILE__, __LINE__, "record cut to %zu of %zu bytes decoded (rc %d)", n, b.n, rc);
            break;
        }
    }
    sp_buf_free(&b);
}

TEST(log_record_redaction_keeps_identity)
{
    sp_buf_t b = {0}, r = {0};
    encode_note(&b, 9, "secret output");
    log_event_t orig, red;
    T_OK(log_record_decode(9, sp_buf_slice(&b), &orig, NULL, 0));
    T_OK(log_record_redact(9, sp_buf_slice(&b), 1800000000000000000LL, &r));
    T_OK(log_record_decode(9, sp_buf_slice(&r), &red, NULL, 0));
    T_ASSERT(red.redacted);
    T_EQ_U64(red.body.n, 0);
    T_EQ_U64(red.type, orig.type);
    T_EQ_U64(red.time_ns, orig.time_ns);
    T_EQ_U64(red.original_sum, orig.original_sum);
    T_ASSERT(memmem(r.p, r.n, "secret", 6) == NULL);
    sp_buf_t again = {0};
    T_RC(SP_EEXIST, log_record_redact(9, sp_buf_slice(&r), 0, &again));
    /* a tombstone is checksummed too */
    r.p[r.n / 2] ^= 1;
    T_RC(SP_ECORRUPT, log_record_decode(9, sp_buf_slice(&r), &red, NULL, 0));
    sp_buf_free(&b);
    sp_buf_free(&r);
    sp_buf_free(&again);
}

TEST(log_record_unknown_type_name_decodes_as_unknown)
{
    /* A record written by a newer spool with a type this one lacks must
     * decode (projections skip it) rather than fail verification. */
    sp_buf_t b = {0};
    encode_note(&b, 5, "x");
    size_t at = (size_t)((uint8_t *)memmem(b.p, b.n, "system.note", 11) - b.p);
    memcpy(b.p + at, "system.nope", 11);
    log_event_t ev;
    T_RC(SP_ECORRUPT, log_record_decode(5, sp_buf_slice(&b), &ev, NULL, 0)); /* checksum now wrong */
    sp_buf_free(&b);
    T_EQ_U64(log_type_lookup("system.nope", 11), LOG_EV_UNKNOWN);
    T_EQ_U64(log_type_lookup("system.note", 11), LOG_EV_SYSTEM_NOTE);
    T_EQ_U64(log_type_lookup("system.not", 10), LOG_EV_UNKNOWN);
}
