/* libFuzzer target: outside input through ingest. The first byte picks
 * the entry point; the rest is the JSON text. Accepted bodies must
 * convert back to JSON. */
#include "ingest/ingest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 1) return 0;
    const char *json = (const char *)data + 1;
    size_t len = n - 1;
    sp_buf_t body = {0}, out = {0};
    int type;
    char err[256];
    int rc = (data[0] & 1) ? ingest_append_request(json, len, &type, &body, err, sizeof err)
                           : ingest_event_json(data[0] & 2 ? "system.mark" : "system.note", json, len, &type, &body,
                                               err, sizeof err);
    if (rc == 0 && ingest_body_to_json(sp_buf_slice(&body), &out) != 0) __builtin_trap();
    if (rc != 0 && body.n != 0) __builtin_trap(); /* nothing produced on error */
    /* Arbitrary bytes as a msgpack body must never crash the converter. */
    sp_buf_t junk = {0};
    (void)ingest_body_to_json((sp_slice_t){data, n}, &junk);
    sp_buf_free(&junk);
    sp_buf_free(&body);
    sp_buf_free(&out);
    return 0;
}
