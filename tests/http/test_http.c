/* The HTTP front-end in-process: a server on its own loop thread, real
 * HTTP over loopback TCP and the admin unix socket through libcurl. */
#include "test.h"

#include "../log/helpers.h"

#include "server.h"

#include <jansson.h>

#define BODY(r) ((const char *)(r).body.p)

TEST(http_health_and_errors_are_json)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    tresp_t r;
    T_OK(tsrv_request(&s, "GET", "/health-check", NULL, false, &r));
    T_EQ_U64(r.status, 200);
    T_EQ_STR(BODY(r), "{\"status\":\"ok\"}");
    T_ASSERT(strstr(r.ctype, "application/json") != NULL);
    sp_buf_free(&r.body);
    T_OK(tsrv_request(&s, "GET", "/healthcheck", NULL, false, &r));
    T_EQ_U64(r.status, 200);
    sp_buf_free(&r.body);
    T_OK(tsrv_request(&s, "GET", "/no/such/thing", NULL, false, &r));
    T_EQ_U64(r.status, 404);
    T_EQ_STR(BODY(r), "{\"message\":\"no such path: /no/such/thing\"}");
    sp_buf_free(&r.body);
    T_OK(tsrv_request(&s, "DELETE", "/status", NULL, false, &r));
    T_EQ_U64(r.status, 405);
    T_ASSERT(strstr(BODY(r), "\"message\"") != NULL);
    sp_buf_free(&r.body);
    /* admin routes do not exist on TCP */
    T_OK(tsrv_request(&s, "POST", "/admin/log/append", "{}", false, &r));
    T_EQ_U64(r.status, 404);
    sp_buf_free(&r.body);
    tsrv_stop(&s);
    T_EQ_U64(s.close_rc, 0); /* every handle closed */
}

TEST(http_append_on_admin_socket_reads_its_writes)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    tresp_t r;
    T_OK(tsrv_request(&s, "POST", "/admin/log/append", "{\"type\":\"system.note\",\"body\":{\"message\":\"hi\"}}", true,
                      &r));
    T_EQ_U64(r.status, 201);
    T_EQ_STR(BODY(r), "{\"sequence\":1}");
    sp_buf_free(&r.body);
    /* the views already show it: no waiting */
    T_OK(tsrv_request(&s, "GET", "/status", NULL, false, &r));
    T_EQ_U64(r.status, 200);
    T_ASSERT(strstr(BODY(r), "\"head_sequence\":1,") != NULL);
    T_ASSERT(strstr(BODY(r), "{\"name\":\"counts\",\"version\":1,\"checkpoint\":1,\"lag\":0}") != NULL);
    T_ASSERT(strstr(BODY(r), "\"events_by_type\":{\"system.note\":1}") != NULL);
    sp_buf_free(&r.body);
    tsrv_stop(&s);
}

TEST(http_bad_append_is_400_and_appends_nothing)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    const char *bad[] = {"{not json", "{\"type\":\"nope\",\"body\":{}}", "{\"type\":\"system.note\",\"body\":{}}", ""};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        tresp_t r;
        T_OK(tsrv_request(&s, "POST", "/admin/log/append", bad[i], true, &r));
        T_EQ_U64(r.status, 400);
        T_ASSERT(strncmp(BODY(r), "{\"message\":\"", 12) == 0);
        sp_buf_free(&r.body);
    }
    T_EQ_U64(log_head(s.log), 0);
    tsrv_stop(&s);
}

TEST(http_metrics_are_prometheus_text)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    tresp_t r;
    T_OK(tsrv_request(&s, "POST", "/admin/log/append", "{\"type\":\"system.note\",\"body\":{\"message\":\"m\"}}", true,
                      &r));
    sp_buf_free(&r.body);
    T_OK(tsrv_request(&s, "GET", "/nope", NULL, false, &r));
    sp_buf_free(&r.body);
    T_OK(tsrv_request(&s, "GET", "/metrics", NULL, false, &r));
    T_EQ_U64(r.status, 200);
    T_ASSERT(strstr(r.ctype, "text/plain; version=0.0.4") != NULL);
    const char *want[] = {
        "spool_http_requests_total{code=\"201\"} 1\n",
        "spool_http_requests_total{code=\"404\"} 1\n",
        "spool_log_head_sequence 1\n",
        "spool_log_batches_total 1\n",
        "# TYPE spool_log_commit_duration_seconds histogram\n",
        "spool_log_commit_duration_seconds_bucket{le=\"+Inf\"} 1\n",
        "spool_log_commit_duration_seconds_count 1\n",
        "spool_projection_checkpoint{projection=\"counts\"} 1\n",
        "spool_projection_lag_events{projection=\"counts\"} 0\n",
        "spool_log_events_by_type_total{type=\"system.note\"} 1\n",
        "spool_ready 1\n",
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(want); i++)
        if (strstr(BODY(r), want[i]) == NULL) t_fail(t, __FILE__, __LINE__, "metrics lack: %s", want[i]);
    sp_buf_free(&r.body);
    tsrv_stop(&s);
}

TEST(http_ready_waits_for_views_to_catch_up)
{
    log_t *log;
    T_OK(log_open(&log, t_path(t, "log"), NULL, NULL, 0));
    for (int i = 0; i < 100; i++) th_note(log, "before start");
    log_close(log);
    tsrv_t s;
    T_OK(tsrv_start(t, &s, false, 1)); /* projector not started yet */
    tresp_t r;
    T_OK(tsrv_request(&s, "GET", "/ready", NULL, false, &r));
    T_EQ_U64(r.status, 503);
    T_ASSERT(strstr(BODY(r), "views are catching up: applied 0 of 100 events") != NULL);
    sp_buf_free(&r.body);
    T_OK(proj_start(s.proj));
    int64_t deadline = sp_mono_ns() + 20000000000LL;
    long status = 0;
    while (status != 200 && sp_mono_ns() < deadline) {
        T_OK(tsrv_request(&s, "GET", "/ready", NULL, false, &r));
        status = r.status;
        sp_buf_free(&r.body);
        if (status != 200) T_OK(proj_wait(s.proj, 100, 1000000000LL));
    }
    T_EQ_U64(status, 200);
    tsrv_stop(&s);
}

TEST(http_views_dump_on_admin_socket)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    tresp_t r;
    T_OK(tsrv_request(&s, "POST", "/admin/log/append", "{\"type\":\"system.note\",\"body\":{\"message\":\"d\"}}", true,
                      &r));
    sp_buf_free(&r.body);
    T_OK(tsrv_request(&s, "GET", "/admin/views/dump", NULL, true, &r));
    T_EQ_U64(r.status, 200);
    /* counts.type row: "system.note" -> 1 */
    T_ASSERT(strstr(BODY(r), "counts.type\t73797374656d2e6e6f7465\t0000000000000001\n") != NULL);
    sp_buf_free(&r.body);
    T_OK(tsrv_request(&s, "GET", "/admin/views/dump", NULL, false, &r));
    T_EQ_U64(r.status, 404);
    sp_buf_free(&r.body);
    tsrv_stop(&s);
}

TEST(http_several_workers_share_the_port)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 3));
    enum { N = 60 };
    for (int i = 0; i < N; i++) {
        tresp_t r;
        T_OK(tsrv_request(&s, "GET", "/healthcheck", NULL, false, &r));
        T_EQ_U64(r.status, 200);
        sp_buf_free(&r.body);
    }
    /* appends on the admin socket (worker 0) are seen by every worker */
    tresp_t r;
    T_OK(tsrv_request(&s, "POST", "/admin/log/append", "{\"type\":\"system.note\",\"body\":{\"message\":\"w\"}}", true,
                      &r));
    T_EQ_U64(r.status, 201);
    sp_buf_free(&r.body);
    T_OK(tsrv_request(&s, "GET", "/metrics", NULL, false, &r));
    char want[64];
    snprintf(want, sizeof want, "spool_http_requests_total{code=\"200\"} %d\n", N);
    T_ASSERT(strstr(BODY(r), want) != NULL);
    sp_buf_free(&r.body);
    tsrv_stop(&s);
    T_EQ_U64(s.close_rc, 0);
}

/* CircleCI's CLI validates configs through this endpoint (issue 4). */
TEST(http_compile_config_with_defaults)
{
    tsrv_t s;
    T_OK(tsrv_start(t, &s, true, 1));
    tresp_t r;
    const char *ok = "{\"config_yaml\": \"version: 2.1\\nparameters:\\n  p: {type: string, default: d}\\njobs:\\n  "
                     "build:\\n    docker: [{image: a}]\\n    steps: [run: echo << pipeline.parameters.p >> << "
                     "pipeline.git.branch >> << pipeline.number >>]\\n\", \"options\": {\"owner_id\": \"o\", "
                     "\"pipeline_values\": {\"pipeline.git.branch\": \"dev\", \"pipeline.number\": 7}, "
                     "\"pipeline_parameters\": {\"p\": \"given\"}}}";
    T_OK(tsrv_request(&s, "POST", "/api/v2/compile-config-with-defaults", ok, false, &r));
    T_EQ_U64(r.status, 200);
    json_error_t je;
    json_t *j = json_loads(BODY(r), 0, &je);
    T_ASSERT(j != NULL);
    T_ASSERT(json_is_true(json_object_get(j, "valid")));
    T_ASSERT(strstr(json_string_value(json_object_get(j, "output-yaml")), "command: echo given dev 7\n") != NULL);
    T_ASSERT(strncmp(json_string_value(json_object_get(j, "source-yaml")), "version: 2.1\n", 13) == 0);
    T_EQ_U64(json_array_size(json_object_get(j, "errors")), 0);
    json_decref(j);
    sp_buf_free(&r.body);

    const char *bad = "{\"config_yaml\": \"version: 2.1\\njobs:\\n  build:\\n    docker: [{image: a}]\\n    steps: "
                      "[nope]\\n\"}";
    T_OK(tsrv_request(&s, "POST", "/api/v2/compile-config-with-defaults", bad, false, &r));
    T_EQ_U64(r.status, 200);
    j = json_loads(BODY(r), 0, &je);
    T_ASSERT(j != NULL);
    T_ASSERT(json_is_false(json_object_get(j, "valid")));
    T_EQ_STR(json_string_value(json_object_get(j, "output-yaml")), "");
    T_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(j, "errors"), 0), "message")),
             "config.yml:5:13: jobs.build.steps[0]: unknown step \"nope\": not a built-in step or a command");
    json_decref(j);
    sp_buf_free(&r.body);

    T_OK(tsrv_request(&s, "POST", "/api/v2/compile-config-with-defaults", "{\"options\": {}}", false, &r));
    T_EQ_U64(r.status, 400);
    T_EQ_STR(BODY(r), "{\"message\":\"config_yaml: expected the config as a string\"}");
    sp_buf_free(&r.body);
    tsrv_stop(&s);
}
