/* A small HTTP client over libcurl for the agent's threads. Each thread
 * owns one client (a curl easy handle inside a private multi handle, so
 * the connection to the server is kept between requests). Requests run
 * through curl_multi_poll rather than curl_easy_perform so that another
 * thread can cut a long poll short with curl_multi_wakeup when the agent
 * stops. */
#include "agent_internal.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>

struct agent__http {
    CURLM *multi;
    CURL *easy;
    char *base;   /* "http://host:port[/prefix]" without a trailing slash */
    char *socket; /* unix socket path, or NULL */
    struct curl_slist *auth;
    atomic_bool aborted;
    char curl_err[CURL_ERROR_SIZE];
};

int agent__http_new(agent__http_t **out, const char *server, const char *token, char *err, size_t errlen)
{
    if (server == NULL || token == NULL) {
        snprintf(err, errlen, "no server or token");
        return SP_EINVAL;
    }
    char *base, *sock = NULL;
    if (strncmp(server, "unix:", 5) == 0) {
        if (server[5] == 0) {
            snprintf(err, errlen, "server \"%s\": expected unix:/path/to/socket", server);
            return SP_EINVAL;
        }
        sock = sp_xstrdup(server + 5);
        base = sp_xstrdup("http://localhost");
    } else if (strncmp(server, "http://", 7) == 0 || strncmp(server, "https://", 8) == 0) {
        base = sp_xstrdup(server);
        size_t n = strlen(base);
        while (n > 0 && base[n - 1] == '/') base[--n] = 0;
    } else {
        snprintf(err, errlen, "server \"%s\": expected http://host:port, https://host:port or unix:/path", server);
        return SP_EINVAL;
    }
    agent__http_t *h = sp_xcalloc(1, sizeof *h);
    h->base = base;
    h->socket = sock;
    h->multi = curl_multi_init();
    h->easy = curl_easy_init();
    if (h->multi == NULL || h->easy == NULL) {
        snprintf(err, errlen, "cannot initialise libcurl");
        if (h->multi) curl_multi_cleanup(h->multi);
        if (h->easy) curl_easy_cleanup(h->easy);
        free(base);
        free(sock);
        free(h);
        return SP_EIO;
    }
    char *hdr = sp_xasprintf("Authorization: Bearer %s", token);
    h->auth = curl_slist_append(NULL, hdr);
    free(hdr);
    /* libcurl's own "Expect: 100-continue" would add a round trip to
     * every output upload above 1 KiB. */
    h->auth = curl_slist_append(h->auth, "Expect:");
    sp_handle_opened();
    *out = h;
    return 0;
}

void agent__http_free(agent__http_t *h)
{
    if (h == NULL) return;
    curl_easy_cleanup(h->easy);
    curl_multi_cleanup(h->multi);
    curl_slist_free_all(h->auth);
    free(h->base);
    free(h->socket);
    free(h);
    sp_handle_closed();
}

void agent__http_abort(agent__http_t *h)
{
    atomic_store(&h->aborted, true);
    curl_multi_wakeup(h->multi);
}

char *agent__http_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *r = sp_xstrdup(e ? e : "");
    curl_free(e);
    return r;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    sp_buf_add(arg, p, size * n);
    return size * n;
}

int agent__http_post(agent__http_t *h, const char *path, const char *ctype, const void *body, size_t n, long timeout_ms,
                     long *status, sp_buf_t *resp, char *err, size_t errlen)
{
    if (atomic_load(&h->aborted)) {
        snprintf(err, errlen, "aborted");
        return SP_ECLOSED;
    }
    char *url = sp_xasprintf("%s%s", h->base, path);
    char *ct = sp_xasprintf("Content-Type: %s", ctype ? ctype : "application/json");
    struct curl_slist *hdrs = NULL;
    for (struct curl_slist *s = h->auth; s; s = s->next) hdrs = curl_slist_append(hdrs, s->data);
    hdrs = curl_slist_append(hdrs, ct);
    CURL *e = h->easy;
    curl_easy_reset(e);
    if (h->socket) curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, h->socket);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->curl_err);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "spool-agent/" SP_VERSION);
    h->curl_err[0] = 0;
    curl_multi_add_handle(h->multi, e);
    int rc = 0, running = 1;
    while (running) {
        if (atomic_load(&h->aborted)) {
            rc = SP_ECLOSED;
            break;
        }
        CURLMcode mc = curl_multi_perform(h->multi, &running);
        if (mc != CURLM_OK) {
            snprintf(err, errlen, "%s", curl_multi_strerror(mc));
            rc = SP_EIO;
            break;
        }
        if (running) curl_multi_poll(h->multi, NULL, 0, 1000, NULL);
    }
    if (rc == 0) {
        CURLcode cc = CURLE_OK;
        int left;
        CURLMsg *m;
        while ((m = curl_multi_info_read(h->multi, &left)) != NULL)
            if (m->msg == CURLMSG_DONE) cc = m->data.result;
        if (cc == CURLE_OPERATION_TIMEDOUT) {
            snprintf(err, errlen, "%s: timed out", url);
            rc = SP_ETIMEDOUT;
        } else if (cc != CURLE_OK) {
            snprintf(err, errlen, "%s: %s", url, h->curl_err[0] ? h->curl_err : curl_easy_strerror(cc));
            rc = SP_EIO;
        } else {
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
        }
    } else if (rc == SP_ECLOSED) {
        snprintf(err, errlen, "aborted");
    }
    curl_multi_remove_handle(h->multi, e);
    curl_slist_free_all(hdrs);
    free(ct);
    free(url);
    return rc;
}
