/* Helpers shared by the subcommands. */
#include "cli.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>

const char *cli_data_dir(const char *flag)
{
    if (flag && *flag) return flag;
    const char *env = getenv("SPOOL_DATA");
    return env && *env ? env : "data";
}

static const char *join(char *buf, size_t n, const char *data, const char *leaf)
{
    snprintf(buf, n, "%s/%s", data, leaf);
    return buf;
}

const char *cli_log_dir(const char *data)
{
    static char buf[4096];
    return join(buf, sizeof buf, data, "log");
}

const char *cli_views_dir(const char *data)
{
    static char buf[4096];
    return join(buf, sizeof buf, data, "views");
}

const char *cli_admin_socket(const char *data)
{
    static char buf[4096];
    return join(buf, sizeof buf, data, "spool.sock");
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    sp_buf_add(arg, p, size * n);
    return size * n;
}

int cli_admin_post(const char *socket_path, const char *path, const char *json, int *status, sp_buf_t *resp, char *err,
                   size_t errlen)
{
    return cli_admin_request(socket_path, "POST", path, json, status, resp, err, errlen);
}

int cli_admin_request(const char *socket_path, const char *method, const char *path, const char *json, int *status,
                      sp_buf_t *resp, char *err, size_t errlen)
{
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(err, errlen, "cannot initialise libcurl");
        return SP_EIO;
    }
    char url[512];
    snprintf(url, sizeof url, "http://localhost%s", path);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (json) curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    CURLcode cc = curl_easy_perform(c);
    int rc = 0;
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "the server's admin socket %s did not answer: %s", socket_path, curl_easy_strerror(cc));
        rc = SP_EIO;
    } else {
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        *status = (int)code;
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return rc;
}
