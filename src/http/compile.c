/*
 * POST /api/v2/compile-config-with-defaults, as CircleCI answers it, so
 * that CircleCI's own command-line tool (`circleci config validate` and
 * `config process`) can check configs against Spool.
 *
 * Request: {config_yaml, options: {owner_id, pipeline_values: {...},
 * pipeline_parameters: {...}}}. pipeline_values keys are "pipeline.id",
 * "pipeline.git.branch" ... (older CLIs send them without "pipeline.").
 * Response 200: {valid, source-yaml, output-yaml, errors: [{message}]}.
 *
 * The compiler runs on the loop thread: it is CPU-bound and takes a few
 * milliseconds for a large config (see tools/bench/bench_config.c).
 */
#include "http_internal.h"

#include "../config/config.h"

#include <stdlib.h>

static const char *value_str(const json_t *values, const char *name, char *buf, size_t n)
{
    char key[128];
    snprintf(key, sizeof key, "pipeline.%s", name);
    const json_t *v = json_object_get(values, key);
    if (v == NULL) v = json_object_get(values, name);
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    return NULL;
}

int http__compile_config(http_t *h, h2o_req_t *req)
{
    json_error_t je;
    json_t *body = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &je);
    const json_t *yaml = json_object_get(body, "config_yaml");
    if (body == NULL || !json_is_object(body)) {
        http__reply_error(h, req, 400, "the body is not a JSON object: %s", body ? "" : je.text);
        json_decref(body);
        return 0;
    }
    if (!json_is_string(yaml)) {
        http__reply_error(h, req, 400, "config_yaml: expected the config as a string");
        json_decref(body);
        return 0;
    }
    const json_t *opts = json_object_get(body, "options");
    const json_t *values = json_object_get(opts, "pipeline_values");
    const json_t *params = json_object_get(opts, "pipeline_parameters");
    if (params && !json_is_object(params) && !json_is_null(params)) {
        http__reply_error(h, req, 400, "options.pipeline_parameters: expected an object");
        json_decref(body);
        return 0;
    }
    char b[9][32]; /* one per value: numbers are formatted into them */
    config_input_t in = {
        .parameters = json_is_object(params) ? params : NULL,
        .id = value_str(values, "id", b[0], sizeof b[0]),
        .git_url = value_str(values, "project.git_url", b[1], sizeof b[1]),
        .vcs_type = value_str(values, "project.type", b[2], sizeof b[2]),
        .branch = value_str(values, "git.branch", b[3], sizeof b[3]),
        .tag = value_str(values, "git.tag", b[4], sizeof b[4]),
        .revision = value_str(values, "git.revision", b[5], sizeof b[5]),
        .base_rev = value_str(values, "git.base_revision", b[6], sizeof b[6]),
        .trigger = value_str(values, "trigger_source", b[7], sizeof b[7]),
    };
    const char *num = value_str(values, "number", b[8], sizeof b[8]);
    if (num) in.number = strtoll(num, NULL, 10);
    config_result_t *r;
    int rc = config_compile(json_string_value(yaml), json_string_length(yaml), "config.yml", &in, &r);
    if (rc != 0) {
        http__reply_error(h, req, 500, "cannot compile: %s", sp_strerror(rc));
        json_decref(body);
        return 0;
    }
    json_t *resp = json_object();
    json_object_set_new(resp, "valid", json_boolean(r->valid));
    json_object_set_new(resp, "source-yaml", json_stringn(r->source, r->source_len));
    sp_buf_t y = {0};
    if (r->valid && config_emit_yaml(r, &y) == 0)
        json_object_set_new(resp, "output-yaml", json_stringn((const char *)y.p, y.n));
    else
        json_object_set_new(resp, "output-yaml", json_string(""));
    sp_buf_free(&y);
    json_t *errs = json_array();
    for (size_t i = 0; i < r->nerrors; i++) {
        sp_buf_t m = {0};
        config_error_format(&r->errors[i], &m);
        json_t *e = json_object();
        json_object_set_new(e, "message", json_stringn((const char *)m.p, m.n));
        json_array_append_new(errs, e);
        sp_buf_free(&m);
    }
    json_object_set_new(resp, "errors", errs);
    config_result_free(r);
    char *text = json_dumps(resp, JSON_COMPACT);
    sp_buf_t out = {0};
    sp_buf_addstr(&out, text ? text : "{}");
    http__reply_json(h, req, 200, &out);
    sp_buf_free(&out);
    free(text);
    json_decref(resp);
    json_decref(body);
    return 0;
}
