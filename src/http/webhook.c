/*
 * POST /webhooks/github: GitHub's webhook deliveries (push of a branch or
 * a tag, delete, ping, pull_request opened/synchronize/reopened).
 *
 * Checks, in order: the X-GitHub-Event header, a JSON body naming a
 * repository (400 otherwise), a known project (404), the
 * X-Hub-Signature-256 HMAC with the project's secret, compared in
 * constant time (401 when missing or wrong). None of these failures
 * appends anything; nor do ping, delete, a branch deletion, or events and
 * actions that start no build. A delivery id seen before creates no
 * second pipeline.
 */
#include "http_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>

static bool header(h2o_req_t *req, const char *name, char *out, size_t n)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    if (i < 0) return false;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len >= n) return false;
    memcpy(out, v.base, v.len);
    out[v.len] = 0;
    return true;
}

/* "sha256=<hex>" of HMAC-SHA256(body, secret), compared in constant time. */
static bool signature_ok(h2o_req_t *req, const sp_buf_t *secret)
{
    char sig[128];
    if (!header(req, "x-hub-signature-256", sig, sizeof sig) || strncmp(sig, "sha256=", 7) != 0) return false;
    uint8_t mac[32];
    unsigned macn = 0;
    HMAC(EVP_sha256(), secret->p, (int)secret->n, (const uint8_t *)req->entity.base, req->entity.len, mac, &macn);
    char want[65];
    for (int i = 0; i < 32; i++) snprintf(want + 2 * i, 3, "%02x", mac[i]);
    /* Hex digits from GitHub are lower case; compare lower-cased. */
    char got[65] = {0};
    size_t gn = strlen(sig + 7);
    for (size_t i = 0; i < gn && i < 64; i++) got[i] = (char)(sig[7 + i] | (sig[7 + i] >= 'A' ? 0x20 : 0));
    bool ok = gn == 64 && sp_ct_equal(got, 64, want, 64);
    OPENSSL_cleanse(mac, sizeof mac);
    return ok;
}

static void reply_msg(http_t *h, h2o_req_t *req, int status, const char *msg)
{
    sp_buf_t b = {0};
    sp_buf_addstr(&b, "{\"message\":");
    sp_buf_add_json_str(&b, msg, strlen(msg));
    sp_buf_addstr(&b, "}");
    http__reply_json(h, req, status, &b);
    sp_buf_free(&b);
}

static const char *jstr(const json_t *o, const char *path)
{
    /* "a.b.c" lookup */
    char key[64];
    const json_t *cur = o;
    while (cur && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof key) return NULL;
        memcpy(key, path, n);
        key[n] = 0;
        cur = json_object_get(cur, key);
        path += n + (dot ? 1 : 0);
    }
    return json_is_string(cur) ? json_string_value(cur) : NULL;
}

/* Splits a commit message into subject (first line) and body. */
static void split_message(const char *msg, char **subject, const char **body)
{
    const char *nl = msg ? strchr(msg, '\n') : NULL;
    *subject = msg ? sp_xstrndup(msg, nl ? (size_t)(nl - msg) : strlen(msg)) : NULL;
    *body = nl ? nl + 1 + strspn(nl + 1, "\n") : "";
}

static void webhook_reply(http__op_t *op, h2o_req_t *req)
{
    json_t *r = json_is_true(json_object_get(op->result, "duplicate"))
                    ? json_pack("{s:s}", "message", "delivery already processed: nothing to do")
                    : json_pack("{s:s, s:O, s:O}", "message", "pipeline created", "id",
                                json_object_get(op->result, "id"), "number", json_object_get(op->result, "number"));
    char *text = json_dumps(r, JSON_COMPACT);
    sp_buf_t b = {(uint8_t *)text, strlen(text), 0};
    http__reply_json(op->w->srv, req, json_is_true(json_object_get(op->result, "duplicate")) ? 200 : 201, &b);
    free(text);
    json_decref(r);
}

/* What a push or pull_request asks to build; false when nothing. */
static bool build_request(const char *event, json_t *b, engine_trigger_t *t, const char **why)
{
    if (strcmp(event, "push") == 0) {
        const char *ref = jstr(b, "ref"), *after = jstr(b, "after");
        if (ref == NULL) {
            *why = "push: the payload has no ref";
            return false;
        }
        if (json_is_true(json_object_get(b, "deleted")) || (after && strspn(after, "0") == strlen(after))) {
            *why = "a deletion starts nothing";
            return false;
        }
        if (strncmp(ref, "refs/heads/", 11) == 0)
            t->branch = ref + 11;
        else if (strncmp(ref, "refs/tags/", 10) == 0)
            t->tag = ref + 10;
        else {
            *why = "push of a ref that is neither a branch nor a tag: nothing to build";
            return false;
        }
        t->revision = jstr(b, "head_commit.id") ?: after;
        t->actor = jstr(b, "pusher.name") ?: jstr(b, "sender.login");
        return true;
    }
    if (strcmp(event, "pull_request") == 0) {
        const char *action = jstr(b, "action");
        if (!action ||
            !(strcmp(action, "opened") == 0 || strcmp(action, "synchronize") == 0 || strcmp(action, "reopened") == 0)) {
            *why = "this pull_request action starts nothing";
            return false;
        }
        t->branch = jstr(b, "pull_request.head.ref");
        t->revision = jstr(b, "pull_request.head.sha");
        t->actor = jstr(b, "sender.login");
        if (t->branch == NULL || t->revision == NULL) {
            *why = "pull_request: the payload has no head ref and sha";
            return false;
        }
        return true;
    }
    *why = "this event starts nothing";
    return false;
}

int http__webhook_github(http_t *h, h2o_req_t *req)
{
    char event[64], delivery[128];
    if (!header(req, "x-github-event", event, sizeof event)) {
        http__reply_error(h, req, 400, "missing X-GitHub-Event header");
        return 0;
    }
    if (!header(req, "x-github-delivery", delivery, sizeof delivery)) delivery[0] = 0;
    json_error_t je;
    json_t *b = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &je);
    if (b == NULL || !json_is_object(b)) {
        http__reply_error(h, req, 400, "malformed payload: %s", b ? "not a JSON object" : je.text);
        json_decref(b);
        return 0;
    }
    const char *full = jstr(b, "repository.full_name");
    char slug[300];
    if (full == NULL || (size_t)snprintf(slug, sizeof slug, "gh/%s", full) >= sizeof slug) {
        http__reply_error(h, req, 400, "malformed payload: no repository.full_name");
        json_decref(b);
        return 0;
    }
    if (http__engine(h) == NULL) {
        http__reply_error(h, req, 503, "the server is starting: GitHub will redeliver");
        json_decref(b);
        return 0;
    }
    sp_buf_t secret = {0};
    char norm[300];
    int rc = engine_slug_normalize(slug, norm, sizeof norm) == 0 ? engine_project_secret(http__engine(h), norm, &secret)
                                                                 : SP_ENOTFOUND;
    if (rc == SP_ENOTFOUND) {
        http__reply_error(h, req, 404, "no project for repository %s", full);
    } else if (rc != 0 || secret.n == 0) {
        http__reply_error(h, req, 401, "project %s has no usable webhook secret", norm);
        rc = -1;
    } else if (!signature_ok(req, &secret)) {
        http__reply_error(h, req, 401, "missing or wrong X-Hub-Signature-256");
        rc = -1;
    }
    if (secret.p) OPENSSL_cleanse(secret.p, secret.cap);
    sp_buf_free(&secret);
    if (rc != 0) {
        json_decref(b);
        return 0;
    }
    if (strcmp(event, "ping") == 0) {
        reply_msg(h, req, 200, "pong");
        json_decref(b);
        return 0;
    }
    engine_trigger_t t = {.slug = norm, .trigger_type = "webhook", .delivery = delivery};
    const char *why = NULL;
    if (!build_request(event, b, &t, &why)) {
        reply_msg(h, req, 200, why);
        json_decref(b);
        return 0;
    }
    char *subject = NULL;
    split_message(jstr(b, "head_commit.message") ?: jstr(b, "pull_request.title"), &subject, &t.body);
    t.subject = subject;
    char err[300];
    http__op_t *op = http__op_new(h, req, 201);
    op->reply = webhook_reply;
    rc = engine_trigger(http__engine(h), &t, http__op_engine_done, op, err, sizeof err);
    if (rc != 0) {
        http__reply_error(h, req, rc == SP_EINVAL && strstr(err, "stopped") ? 200 : http__status_for(rc), "%s", err);
        http__op_free(op);
    }
    free(subject);
    json_decref(b);
    return 0;
}
