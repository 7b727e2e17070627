/* The route table and the handlers of the operational endpoints. */
#include "http_internal.h"

#include <stdio.h>

static int h_health(http_t *h, h2o_req_t *req);
static int h_ready(http_t *h, h2o_req_t *req);
static int h_status(http_t *h, h2o_req_t *req);
static int h_metrics(http_t *h, h2o_req_t *req);
static int h_views_dump(http_t *h, h2o_req_t *req);
int http__compile_config(http_t *h, h2o_req_t *req); /* compile.c */
/* api_read.c: reads in CircleCI's shapes, output, live output */
int http__api_project_get(http_t *h, h2o_req_t *req);
int http__api_projects(http_t *h, h2o_req_t *req);
int http__api_pipelines(http_t *h, h2o_req_t *req);
int http__api_pipeline(http_t *h, h2o_req_t *req);
int http__api_pipeline_by_number(http_t *h, h2o_req_t *req);
int http__api_pipeline_config(http_t *h, h2o_req_t *req);
int http__api_pipeline_workflows(http_t *h, h2o_req_t *req);
int http__api_workflow(http_t *h, h2o_req_t *req);
int http__api_workflow_jobs(http_t *h, h2o_req_t *req);
int http__api_job(http_t *h, h2o_req_t *req);
int http__api_job_stream(http_t *h, h2o_req_t *req);
int http__api_v11_build(http_t *h, h2o_req_t *req);
int http__api_v11_output(http_t *h, h2o_req_t *req);
int http__api_raw_output(http_t *h, h2o_req_t *req);
int http__api_raw_error(http_t *h, h2o_req_t *req);
/* ui.c: the web UI */
int http__ui_page(http_t *h, h2o_req_t *req);
int http__ui_asset(http_t *h, h2o_req_t *req);
int http__ui_build_redirect(http_t *h, h2o_req_t *req);

const http__route_t http__routes[] = {
    {"GET", "/health-check", h_health, HTTP__PUBLIC},
    {"GET", "/healthcheck", h_health, HTTP__PUBLIC},
    {"GET", "/ready", h_ready, HTTP__PUBLIC},
    {"GET", "/status", h_status, HTTP__PUBLIC},
    {"GET", "/metrics", h_metrics, HTTP__PUBLIC},
    {"POST", "/admin/log/append", http__append, HTTP__ADMIN},
    {"GET", "/admin/views/dump", h_views_dump, HTTP__ADMIN},
    {"POST", "/api/v2/compile-config-with-defaults", http__compile_config, HTTP__PUBLIC},
    {"POST", "/admin/tokens", http__token_create, HTTP__ADMIN},
    {"POST", "/admin/tokens/:id/revoke", http__token_revoke, HTTP__ADMIN},
    {"POST", "/api/v2/project", http__project_add, HTTP__ADMIN_ROLE},
    {"POST", "/api/v2/project/:vcs/:org/:repo/pipeline", http__pipeline_trigger, HTTP__USER},
    {"POST", "/api/v2/project/:vcs/:org/:repo/stop-building", http__project_stop, HTTP__ADMIN_ROLE},
    {"POST", "/api/v2/project/:vcs/:org/:repo/resume-building", http__project_resume, HTTP__ADMIN_ROLE},
    {"POST", "/api/v1.1/project/:vcs/:org/:repo/follow", http__project_follow, HTTP__USER},
    {"POST", "/api/v1.1/project/:vcs/:org/:repo/unfollow", http__project_unfollow, HTTP__USER},
    {"POST", "/webhooks/github", http__webhook_github, HTTP__PUBLIC},
    {"POST", "/api/v2/workflow/:id/cancel", http__workflow_cancel, HTTP__USER},
    {"POST", "/api/v2/workflow/:id/approve/:approval_request_id", http__workflow_approve, HTTP__USER},
    {"POST", "/api/v2/workflow/:id/rerun", http__workflow_rerun, HTTP__USER},
    {"POST", "/api/v2/project/:vcs/:org/:repo/job/:number/cancel", http__job_cancel, HTTP__USER},
    {"POST", "/api/v2/jobs/:id/cancel", http__job_cancel_by_id, HTTP__USER},
    {"PATCH", "/api/v2/project/:vcs/:org/:repo/settings", http__project_settings, HTTP__ADMIN_ROLE},
    {"GET", "/admin/nodes", http__nodes, HTTP__ADMIN},
    {"POST", "/admin/nodes/:id/drain", http__node_drain, HTTP__ADMIN},
    {"POST", "/admin/nodes/:id/undrain", http__node_undrain, HTTP__ADMIN},
    {"GET", "/admin/queue", http__queue, HTTP__ADMIN},
    {"POST", "/admin/queue/cancel", http__queue_cancel, HTTP__ADMIN},
    {"POST", "/admin/queue/promote", http__queue_promote, HTTP__ADMIN},
    {"POST", "/api/agent/v1/register", http__agent_register, HTTP__AGENT},
    {"POST", "/api/agent/v1/claim", http__agent_claim, HTTP__AGENT},
    {"POST", "/api/agent/v1/heartbeat", http__agent_heartbeat, HTTP__AGENT},
    {"POST", "/api/agent/v1/tasks/:id/events", http__agent_events, HTTP__AGENT},
    {"POST", "/api/agent/v1/tasks/:id/output", http__agent_output, HTTP__AGENT},
    {"POST", "/api/agent/v1/tasks/:id/finish", http__agent_finish, HTTP__AGENT},
    /* reads (api_read.c) */
    {"GET", "/api/v2/project/:vcs/:org/:repo", http__api_project_get, HTTP__USER},
    {"GET", "/api/v1.1/projects", http__api_projects, HTTP__USER},
    {"GET", "/api/v2/project/:vcs/:org/:repo/pipeline", http__api_pipelines, HTTP__USER},
    {"GET", "/api/v2/project/:vcs/:org/:repo/pipeline/:number", http__api_pipeline_by_number, HTTP__USER},
    {"GET", "/api/v2/pipeline/:id", http__api_pipeline, HTTP__USER},
    {"GET", "/api/v2/pipeline/:id/config", http__api_pipeline_config, HTTP__USER},
    {"GET", "/api/v2/pipeline/:id/workflow", http__api_pipeline_workflows, HTTP__USER},
    {"GET", "/api/v2/workflow/:id", http__api_workflow, HTTP__USER},
    {"GET", "/api/v2/workflow/:id/job", http__api_workflow_jobs, HTTP__USER},
    {"GET", "/api/v2/project/:vcs/:org/:repo/job/:number", http__api_job, HTTP__USER},
    {"GET", "/api/v2/project/:vcs/:org/:repo/job/:number/output/stream", http__api_job_stream, HTTP__USER},
    {"GET", "/api/v1.1/project/:vcs/:org/:repo/:num", http__api_v11_build, HTTP__USER},
    {"GET", "/api/v1.1/project/:vcs/:org/:repo/:num/output/:step/:index", http__api_v11_output, HTTP__USER},
    {"GET", "/api/private/output/raw/:vcs/:org/:repo/:num/output/:index/:step", http__api_raw_output, HTTP__USER},
    {"GET", "/api/private/output/raw/:vcs/:org/:repo/:num/error/:index/:step", http__api_raw_error, HTTP__USER},
    /* the web UI (ui.c): pages and assets are public, their data needs a token */
    {"GET", "/", http__ui_page, HTTP__PUBLIC},
    {"GET", "/ui", http__ui_page, HTTP__PUBLIC},
    {"GET", "/ui/gh/:org/:repo", http__ui_page, HTTP__PUBLIC},
    {"GET", "/ui/gh/:org/:repo/jobs/:number", http__ui_page, HTTP__PUBLIC},
    {"GET", "/ui/assets/:name", http__ui_asset, HTTP__PUBLIC},
    {"GET", "/gh/:org/:repo/:number", http__ui_build_redirect, HTTP__PUBLIC},
};
const size_t http__nroutes = SP_ARRAY_LEN(http__routes);

/* Why the server cannot do its job, or NULL when it can. */
static const char *unhealthy(http_t *h, char *buf, size_t n)
{
    log_stats_t st;
    log_stats(h->opts.log, &st);
    if (st.failed) {
        char msg[300];
        log_errmsg(h->opts.log, msg, sizeof msg);
        snprintf(buf, n, "event log writer failed: %s", msg);
        return buf;
    }
    char msg[300];
    if (proj_failed(h->opts.proj, msg, sizeof msg)) {
        snprintf(buf, n, "projections stopped: %s", msg);
        return buf;
    }
    return NULL;
}

static int h_health(http_t *h, h2o_req_t *req)
{
    char why[700];
    if (unhealthy(h, why, sizeof why)) {
        http__reply_error(h, req, 503, "%s", why);
        return 0;
    }
    static const char ok[] = "{\"status\":\"ok\"}";
    http__reply(h, req, 200, "application/json; charset=utf-8", ok, sizeof ok - 1);
    return 0;
}

static bool is_ready(http_t *h)
{
    return atomic_load(&h->applied) >= h->ready_at && !proj_failed(h->opts.proj, NULL, 0) && !h->draining;
}

static int h_ready(http_t *h, h2o_req_t *req)
{
    char why[700];
    if (unhealthy(h, why, sizeof why)) {
        http__reply_error(h, req, 503, "%s", why);
    } else if (!is_ready(h)) {
        http__reply_error(h, req, 503, "views are catching up: applied %llu of %llu events",
                          (unsigned long long)proj_applied(h->opts.proj), (unsigned long long)log_head(h->opts.log));
    } else {
        static const char ok[] = "{\"status\":\"ready\"}";
        http__reply(h, req, 200, "application/json; charset=utf-8", ok, sizeof ok - 1);
    }
    return 0;
}

/* ---- /status ---- */

typedef struct {
    sp_buf_t *b;
    bool first;
    char day[11];
    uint64_t day_total;
} count_ctx_t;

static void add_count(void *arg, sp_slice_t key, uint64_t n)
{
    count_ctx_t *c = arg;
    if (!c->first) sp_buf_add(c->b, ",", 1);
    c->first = false;
    sp_buf_add_json_str(c->b, (const char *)key.p, key.n);
    sp_buf_printf(c->b, ":%llu", (unsigned long long)n);
}

static void flush_day(count_ctx_t *c)
{
    if (c->day[0] == 0) return;
    add_count(c, (sp_slice_t){(const uint8_t *)c->day, 10}, c->day_total);
}

/* Keys are "YYYY-MM-DD|type" in order: sum runs of equal days. */
static void add_day(void *arg, sp_slice_t key, uint64_t n)
{
    count_ctx_t *c = arg;
    if (key.n < 11) return;
    if (memcmp(c->day, key.p, 10) != 0) {
        flush_day(c);
        memcpy(c->day, key.p, 10);
        c->day[10] = 0;
        c->day_total = 0;
    }
    c->day_total += n;
}

static void status_counts(http_t *h, sp_buf_t *b)
{
    log_kvtxn_t *t;
    if (log_kv_begin(proj_kv(h->opts.proj), false, &t) != 0) return;
    count_ctx_t c = {.b = b, .first = true};
    sp_buf_addstr(b, ",\"events_by_type\":{");
    proj_counts_by_type(t, add_count, &c);
    sp_buf_addstr(b, "},\"events_by_day\":{");
    char from[11];
    proj_day_of(sp_now_ns() - 6 * 86400000000000LL, from); /* the last 7 days */
    c.first = true;
    proj_counts_by_day(t, from, add_day, &c);
    flush_day(&c);
    sp_buf_addstr(b, "}");
    log_kvtxn_abort(t);
}

static int h_status(http_t *h, h2o_req_t *req)
{
    sp_buf_t b = {0};
    uint64_t head = log_head(h->opts.log);
    sp_buf_printf(&b, "{\"version\":\"%s\",\"head_sequence\":%llu,\"ready\":%s,\"uptime_seconds\":%.3f", SP_VERSION,
                  (unsigned long long)head, is_ready(h) ? "true" : "false",
                  (double)(sp_mono_ns() - h->started_ns) / 1e9);
    sp_buf_addstr(&b, ",\"projections\":[");
    for (size_t i = 0; i < proj_count(h->opts.proj); i++) {
        proj_info_t pi;
        proj_info(h->opts.proj, i, &pi);
        sp_buf_printf(&b, "%s{\"name\":\"%s\",\"version\":%u,\"checkpoint\":%llu,\"lag\":%llu}", i ? "," : "", pi.name,
                      pi.version, (unsigned long long)pi.checkpoint,
                      (unsigned long long)(head > pi.checkpoint ? head - pi.checkpoint : 0));
    }
    sp_buf_addstr(&b, "]");
    status_counts(h, &b);
    char why[700];
    if (unhealthy(h, why, sizeof why)) {
        sp_buf_addstr(&b, ",\"error\":");
        sp_buf_add_json_str(&b, why, strlen(why));
    }
    sp_buf_addstr(&b, "}");
    http__reply_json(h, req, 200, &b);
    sp_buf_free(&b);
    return 0;
}

/* ---- /metrics (Prometheus text format 0.0.4) ---- */

static void metric_head(sp_buf_t *b, const char *name, const char *type, const char *help)
{
    sp_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void add_type_metric(void *arg, sp_slice_t key, uint64_t n)
{
    /* Type names are [a-z0-9._], safe inside a label value. */
    sp_buf_printf(arg, "spool_log_events_by_type_total{type=\"%.*s\"} %llu\n", (int)key.n, (const char *)key.p,
                  (unsigned long long)n);
}

static int h_metrics(http_t *h, h2o_req_t *req)
{
    sp_buf_t b = {0};
    metric_head(&b, "spool_http_requests_total", "counter", "HTTP requests answered, by status code.");
    for (int s = 100; s < 600; s++) {
        uint64_t n = http__status_count(h, s);
        if (n) sp_buf_printf(&b, "spool_http_requests_total{code=\"%d\"} %llu\n", s, (unsigned long long)n);
    }
    log_stats_t st;
    log_stats(h->opts.log, &st);
    metric_head(&b, "spool_log_head_sequence", "gauge", "Highest durable sequence number of the event log.");
    sp_buf_printf(&b, "spool_log_head_sequence %llu\n", (unsigned long long)st.head);
    metric_head(&b, "spool_log_batches_total", "counter", "Write transactions (group commits) since start.");
    sp_buf_printf(&b, "spool_log_batches_total %llu\n", (unsigned long long)st.batches);
    metric_head(&b, "spool_log_appended_events_total", "counter", "Events appended since start.");
    sp_buf_printf(&b, "spool_log_appended_events_total %llu\n", (unsigned long long)st.events);
    metric_head(&b, "spool_log_commit_failures_total", "counter", "Failed log commits since start.");
    sp_buf_printf(&b, "spool_log_commit_failures_total %llu\n", (unsigned long long)st.commit_failures);
    metric_head(&b, "spool_log_map_size_bytes", "gauge", "Current LMDB map size of the event log.");
    sp_buf_printf(&b, "spool_log_map_size_bytes %llu\n", (unsigned long long)st.map_size);
    metric_head(&b, "spool_log_commit_duration_seconds", "histogram", "Time to write and fsync one batch.");
    uint64_t cum = 0;
    for (int i = 0; i < LOG_LATENCY_BUCKETS; i++) {
        cum += st.latency_buckets[i];
        sp_buf_printf(&b, "spool_log_commit_duration_seconds_bucket{le=\"%g\"} %llu\n", log_latency_bounds_s[i],
                      (unsigned long long)cum);
    }
    cum += st.latency_buckets[LOG_LATENCY_BUCKETS];
    sp_buf_printf(&b, "spool_log_commit_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    sp_buf_printf(&b, "spool_log_commit_duration_seconds_sum %.9f\n", st.latency_sum_s);
    sp_buf_printf(&b, "spool_log_commit_duration_seconds_count %llu\n", (unsigned long long)cum);

    metric_head(&b, "spool_projection_checkpoint", "gauge", "Last sequence applied by each projection.");
    for (size_t i = 0; i < proj_count(h->opts.proj); i++) {
        proj_info_t pi;
        proj_info(h->opts.proj, i, &pi);
        sp_buf_printf(&b, "spool_projection_checkpoint{projection=\"%s\"} %llu\n", pi.name,
                      (unsigned long long)pi.checkpoint);
    }
    metric_head(&b, "spool_projection_lag_events", "gauge", "Events in the log not yet applied, by projection.");
    for (size_t i = 0; i < proj_count(h->opts.proj); i++) {
        proj_info_t pi;
        proj_info(h->opts.proj, i, &pi);
        sp_buf_printf(&b, "spool_projection_lag_events{projection=\"%s\"} %llu\n", pi.name,
                      (unsigned long long)(st.head > pi.checkpoint ? st.head - pi.checkpoint : 0));
    }
    metric_head(&b, "spool_log_events_by_type_total", "counter", "Events in the log, by type (counts projection).");
    log_kvtxn_t *t;
    if (log_kv_begin(proj_kv(h->opts.proj), false, &t) == 0) {
        proj_counts_by_type(t, add_type_metric, &b);
        log_kvtxn_abort(t);
    }
    engine_t *e = http__engine(h);
    if (e) engine_metrics(e, &b);
    metric_head(&b, "spool_ready", "gauge", "1 when the views have caught up and the server is healthy.");
    sp_buf_printf(&b, "spool_ready %d\n", is_ready(h) ? 1 : 0);
    http__reply(h, req, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.n);
    sp_buf_free(&b);
    return 0;
}

/* Every view table as text, for operators and for the test that proves a
 * rebuild from the log gives identical views. */
static int h_views_dump(http_t *h, h2o_req_t *req)
{
    sp_buf_t b = {0};
    int rc = proj_dump(h->opts.proj, &b);
    if (rc != 0)
        http__reply_error(h, req, 500, "cannot dump the views: %s", sp_strerror(rc));
    else
        http__reply(h, req, 200, "text/plain; charset=utf-8", b.p, b.n);
    sp_buf_free(&b);
    return 0;
}
