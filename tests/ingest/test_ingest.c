/* Validation of event bodies: clear messages, nothing half-accepted. */
#include "test.h"

#include "ingest/ingest.h"

static int try_event(const char *type_name, const char *json, char *err, size_t n)
{
    sp_buf_t body = {0};
    int type;
    int rc = ingest_event_json(type_name, json, strlen(json), &type, &body, err, n);
    if (rc != 0 && body.n != 0) rc = 12345; /* nothing may be produced on error */
    sp_buf_free(&body);
    return rc;
}

TEST(ingest_accepts_valid_bodies_and_round_trips)
{
    sp_buf_t body = {0}, json = {0};
    int type;
    char err[300];
    const char *in = "{\"label\":\"deploy\",\"detail\":{\"n\":-3,\"ok\":true,\"xs\":[1,2.5,null]}}";
    T_OK(ingest_event_json("system.mark", in, strlen(in), &type, &body, err, sizeof err));
    T_EQ_U64(type, LOG_EV_SYSTEM_MARK);
    T_OK(ingest_body_to_json(sp_buf_slice(&body), &json));
    sp_buf_add(&json, "", 1);
    T_EQ_STR((char *)json.p, "{\"label\":\"deploy\",\"detail\":{\"n\":-3,\"ok\":true,\"xs\":[1,2.5,null]}}");
    sp_buf_free(&body);
    sp_buf_free(&json);
}

TEST(ingest_rejects_with_clear_messages)
{
    char err[300];
    T_RC(SP_EUNKNOWN_TYPE, try_event("no.such", "{}", err, sizeof err));
    T_EQ_STR(err, "unknown event type \"no.such\"");
    T_RC(SP_EINVAL, try_event("system.note", "{\"message\": \"x\",\n \"oops\"}", err, sizeof err));
    T_ASSERT(strstr(err, "invalid JSON at line 2") != NULL);
    T_RC(SP_EINVAL, try_event("system.note", "{}", err, sizeof err));
    T_EQ_STR(err, "body.message: required field is missing");
    T_RC(SP_EINVAL, try_event("system.note", "{\"message\":1}", err, sizeof err));
    T_EQ_STR(err, "body.message: expected a string");
    T_RC(SP_EINVAL, try_event("system.note", "{\"message\":\"x\",\"extra\":1}", err, sizeof err));
    T_EQ_STR(err, "body.extra: unknown field");
    T_RC(SP_EINVAL, try_event("system.note", "[1]", err, sizeof err));
    T_EQ_STR(err, "body must be a JSON object");
    T_RC(SP_EINVAL, try_event("system.note", "{\"message\":\"a\",\"message\":\"b\"}", err, sizeof err));
    T_ASSERT(strstr(err, "duplicate") != NULL);
}

TEST(ingest_append_request_shape)
{
    sp_buf_t body = {0};
    int type;
    char err[300];
    const char *ok = "{\"type\":\"system.note\",\"body\":{\"message\":\"hi\"}}";
    T_OK(ingest_append_request(ok, strlen(ok), &type, &body, err, sizeof err));
    sp_buf_free(&body);
    const char *bad[] = {"{\"body\":{}}", "{\"type\":\"system.note\"}", "{\"type\":1,\"body\":{}}",
                         "{\"type\":\"system.note\",\"body\":{\"message\":\"hi\"},\"x\":1}", "nope"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        int rc = ingest_append_request(bad[i], strlen(bad[i]), &type, &body, err, sizeof err);
        T_ASSERT(rc != 0 && body.n == 0 && err[0]);
    }
}

TEST(ingest_rejects_bodies_nested_too_deep)
{
    char err[300];
    sp_buf_t deep = {0};
    sp_buf_addstr(&deep, "{\"label\":\"x\",\"detail\":");
    for (int i = 0; i < 40; i++) sp_buf_addstr(&deep, "{\"a\":");
    sp_buf_addstr(&deep, "1");
    for (int i = 0; i < 40; i++) sp_buf_addstr(&deep, "}");
    sp_buf_addstr(&deep, "}");
    sp_buf_add(&deep, "", 1);
    T_RC(SP_EINVAL, try_event("system.mark", (const char *)deep.p, err, sizeof err));
    T_EQ_STR(err, "body nests objects and arrays deeper than 16 levels");
    sp_buf_free(&deep);
    /* 15 levels of detail (16 with the body itself) are fine and read back */
    sp_buf_t ok = {0}, body = {0}, json = {0};
    sp_buf_addstr(&ok, "{\"label\":\"x\",\"detail\":");
    for (int i = 0; i < 14; i++) sp_buf_addstr(&ok, "{\"a\":");
    sp_buf_addstr(&ok, "[1]");
    for (int i = 0; i < 14; i++) sp_buf_addstr(&ok, "}");
    sp_buf_addstr(&ok, "}");
    int type;
    T_OK(ingest_event_json("system.mark", (const char *)ok.p, ok.n, &type, &body, err, sizeof err));
    T_OK(ingest_body_to_json(sp_buf_slice(&body), &json));
    T_EQ_U64(json.n, ok.n);
    sp_buf_free(&ok);
    sp_buf_free(&body);
    sp_buf_free(&json);
}
