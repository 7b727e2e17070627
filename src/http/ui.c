/*
 * The web UI: one HTML page, a script and a style sheet, compiled into
 * the binary. The page is the same for every UI path; the script reads
 * the path and draws the project list, a project's pipelines or a job
 * with its live output, talking to the API with the token the user
 * pasted (kept in the browser's localStorage).
 *
 * The sources are ui/index.html, ui/app.js and ui/app.css;
 * tools/dev/gen-ui turns them into ui_assets.inc (string literals),
 * which is included here. The end-to-end tests compare what the server
 * serves with ui/, so a stale ui_assets.inc fails them.
 *
 * Every answer carries a Content-Security-Policy that allows scripts,
 * styles and fetches from this origin only: no inline script runs, and
 * output shown in the page cannot load anything.
 */
#include "http_internal.h"

#include <stdio.h>

typedef struct {
    const char *name;
    const char *ctype;
    const char *data;
    size_t len;
} ui_asset_t;

#include "ui_assets.inc" /* static const ui_asset_t ui_assets[] */

static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                          "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

static void serve(http_t *h, h2o_req_t *req, const ui_asset_t *a)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0, NULL, csp,
                          sizeof csp - 1);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-frame-options"), 0, NULL, H2O_STRLIT("DENY"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer"));
    http__reply(h, req, 200, a->ctype, a->data, a->len);
}

static const ui_asset_t *asset(const char *name, size_t n)
{
    for (size_t i = 0; i < SP_ARRAY_LEN(ui_assets); i++)
        if (strlen(ui_assets[i].name) == n && memcmp(ui_assets[i].name, name, n) == 0) return &ui_assets[i];
    return NULL;
}

/* GET /, /ui, /ui/gh/:org/:repo, /ui/gh/:org/:repo/jobs/:number */
int http__ui_page(http_t *h, h2o_req_t *req)
{
    serve(h, req, asset(H2O_STRLIT("index.html")));
    return 0;
}

/* GET /ui/assets/:name */
int http__ui_asset(http_t *h, h2o_req_t *req)
{
    h2o_iovec_t name = http__param(req, 0);
    const ui_asset_t *a = asset(name.base, name.len);
    if (a == NULL || strcmp(a->name, "index.html") == 0) {
        http__reply_error(h, req, 404, "no such asset: %.*s", (int)name.len, name.base);
        return 0;
    }
    serve(h, req, a);
    return 0;
}

/* GET /gh/:org/:repo/:number: CircleCI's build URL (CIRCLE_BUILD_URL,
 * v1.1 build_url) leads to the job's page. */
int http__ui_build_redirect(http_t *h, h2o_req_t *req)
{
    char org[200], repo[200], num[24];
    uint64_t n;
    if (!http__param_str(req, 0, org, sizeof org) || !http__param_str(req, 1, repo, sizeof repo) ||
        !http__param_str(req, 2, num, sizeof num) || sp_parse_u64(num, &n) != 0) {
        http__reply_error(h, req, 404, "no such build");
        return 0;
    }
    char url[600];
    int len = snprintf(url, sizeof url, "/ui/gh/%s/%s/jobs/%llu", org, repo, (unsigned long long)n);
    atomic_fetch_add_explicit(&http__worker_of(req)->status_counts[302], 1, memory_order_relaxed);
    h2o_send_redirect(req, 302, "Found", url, (size_t)len);
    return 0;
}
