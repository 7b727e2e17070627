/* Helpers shared by the subcommands. */
#include "cli.h"

#include "../hc/hc.h"

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

int cli_admin_post(const char *socket_path, const char *path, const char *json, int *status, sp_buf_t *resp, char *err,
                   size_t errlen)
{
    return cli_admin_request(socket_path, "POST", path, json, status, resp, err, errlen);
}

int cli_admin_request(const char *socket_path, const char *method, const char *path, const char *json, int *status,
                      sp_buf_t *resp, char *err, size_t errlen)
{
    char *base = sp_xasprintf("unix:%s", socket_path), why[256] = "";
    hc_call_t k = {.method = method,
                   .path = path,
                   .headers = "Content-Type: application/json\r\n",
                   .body = json,
                   .body_n = json ? strlen(json) : 0,
                   .timeout_ms = 60000};
    long code = 0;
    int rc = hc_sync(base, &k, &code, resp, why, sizeof why);
    free(base);
    if (rc != 0) {
        snprintf(err, errlen, "the server's admin socket %s did not answer: %s", socket_path, why);
        return SP_EIO;
    }
    *status = (int)code;
    return 0;
}
