/*
 * cli: the `spool` subcommands. Like main.c, this module sits on top and
 * may use every other one. Each command parses its own flags, prints
 * errors as "spool <cmd>: <reason>" on stderr and returns the exit
 * code: 0 success, 1 failure, 2 usage error.
 */
#ifndef SPOOL_CLI_H
#define SPOOL_CLI_H

#include "../base/base.h"

int cli_serve(int argc, char **argv);
int cli_log(int argc, char **argv);
int cli_config(int argc, char **argv);
int cli_agent(int argc, char **argv);
int cli_project(int argc, char **argv);
int cli_tokens(int argc, char **argv);
int cli_queue(int argc, char **argv);
int cli_nodes(int argc, char **argv);
int cli_agents(int argc, char **argv);

/* Shared helpers */
#define CLI_OK    0
#define CLI_FAIL  1
#define CLI_USAGE 2

/* The data directory: --data, else $SPOOL_DATA, else ./data. */
const char *cli_data_dir(const char *flag);
/* Paths inside the data directory; returned strings are static buffers
 * owned by the cli (valid until the next call of the same function). */
const char *cli_log_dir(const char *data);
const char *cli_views_dir(const char *data);
const char *cli_admin_socket(const char *data);

/* POSTs a JSON body to a running server's admin socket. On return
 * *status is the HTTP status and resp holds the body (caller frees with
 * sp_buf_free). Returns 0, or an error if the socket did not answer. */
int cli_admin_post(const char *socket_path, const char *path, const char *json, int *status, sp_buf_t *resp, char *err,
                   size_t errlen);
/* The same with any method; json may be NULL (no body). */
int cli_admin_request(const char *socket_path, const char *method, const char *path, const char *json, int *status,
                      sp_buf_t *resp, char *err, size_t errlen);

#endif
