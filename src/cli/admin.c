/* Operator commands that talk to a running server over its admin socket:
 * spool project ..., spool tokens ... */
#include "cli.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

static const char project_usage[] =
    "usage: spool project <command> [--data DIR] ...\n"
    "\n"
    "  add ORG/REPO --url GIT_URL [--webhook-secret S] [--git-token T] [--default-branch B]\n"
    "                        add a project (GitHub slug gh/ORG/REPO); GIT_URL is where the\n"
    "                        server fetches (file://, https://); the secret checks webhooks;\n"
    "                        the token fetches private repositories over https\n"
    "  follow ORG/REPO       follow a project\n"
    "  unfollow ORG/REPO     stop following it\n"
    "  stop ORG/REPO         stop building it (webhooks and triggers start nothing)\n"
    "  resume ORG/REPO       build it again\n"
    "\n"
    "The server must be running: these go through its admin socket.\n"
    "Secrets may also come from $SPOOL_WEBHOOK_SECRET and $SPOOL_GIT_TOKEN, which keeps\n"
    "them out of the process list.\n";

static const char tokens_usage[] = "usage: spool tokens <command> [--data DIR] ...\n"
                                   "\n"
                                   "  create NAME [--role admin|user|agent]   create an API token (printed once)\n"
                                   "  revoke ID                               revoke a token\n"
                                   "\n"
                                   "The server must be running: these go through its admin socket.\n";

/* Posts to the admin socket and prints the answer; exit code by status. */
static int post(const char *cmd, const char *data, const char *path, json_t *body)
{
    char *json = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    sp_buf_t resp = {0};
    char err[1024];
    int status = 0;
    int rc = cli_admin_post(cli_admin_socket(data), path, json, &status, &resp, err, sizeof err);
    free(json);
    if (rc != 0) {
        fprintf(stderr, "spool %s: %s (is `spool serve --data %s` running?)\n", cmd, err, data);
        sp_buf_free(&resp);
        return CLI_FAIL;
    }
    sp_buf_add(&resp, "", 1);
    json_t *r = json_loads((const char *)resp.p, 0, NULL);
    const char *msg = json_string_value(json_object_get(r, "message"));
    if (status >= 300) {
        fprintf(stderr, "spool %s: %s\n", cmd, msg ? msg : (const char *)resp.p);
        rc = CLI_FAIL;
    } else {
        printf("%s\n", (const char *)resp.p);
        rc = CLI_OK;
    }
    json_decref(r);
    sp_buf_free(&resp);
    return rc;
}

static bool slug_arg(const char *cmd, const char *in, char *out, size_t n)
{
    /* ORG/REPO, or a full slug gh/ORG/REPO */
    const char *slash = strchr(in, '/');
    if (slash == NULL || slash == in || slash[1] == 0) {
        fprintf(stderr, "spool %s: expected ORG/REPO, got \"%s\"\n", cmd, in);
        return false;
    }
    if (strncmp(in, "gh/", 3) == 0 || strncmp(in, "github/", 7) == 0)
        snprintf(out, n, "%s", in);
    else
        snprintf(out, n, "gh/%s", in);
    return true;
}

int cli_project(int argc, char **argv)
{
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                         {"url", required_argument, 0, 'u'},
                                         {"webhook-secret", required_argument, 0, 's'},
                                         {"git-token", required_argument, 0, 't'},
                                         {"default-branch", required_argument, 0, 'b'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(project_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    const char *sub = argv[1], *data = NULL, *url = NULL, *branch = NULL;
    const char *secret = getenv("SPOOL_WEBHOOK_SECRET"), *token = getenv("SPOOL_GIT_TOKEN");
    int c;
    optind = 1;
    while ((c = getopt_long(argc - 1, argv + 1, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'u': url = optarg; break;
        case 's': secret = optarg; break;
        case 't': token = optarg; break;
        case 'b': branch = optarg; break;
        case 'h': fputs(project_usage, stdout); return CLI_OK;
        default: fputs(project_usage, stderr); return CLI_USAGE;
        }
    }
    data = cli_data_dir(data);
    if (argc - 1 - optind != 1) {
        fprintf(stderr, "spool project %s: expected one ORG/REPO\n%s", sub, project_usage);
        return CLI_USAGE;
    }
    char slug[300];
    if (!slug_arg("project", argv[1 + optind], slug, sizeof slug)) return CLI_USAGE;
    if (strcmp(sub, "add") == 0) {
        if (url == NULL) {
            fprintf(stderr, "spool project add: --url GIT_URL is required\n");
            return CLI_USAGE;
        }
        json_t *body = json_pack("{s:s, s:s}", "slug", slug, "vcs_url", url);
        if (secret && *secret) json_object_set_new(body, "webhook_secret", json_string(secret));
        if (token && *token) json_object_set_new(body, "git_token", json_string(token));
        if (branch) json_object_set_new(body, "default_branch", json_string(branch));
        return post("project add", data, "/api/v2/project", body);
    }
    static const struct {
        const char *sub, *fmt;
    } actions[] = {{"follow", "/api/v1.1/project/%s/follow"},
                   {"unfollow", "/api/v1.1/project/%s/unfollow"},
                   {"stop", "/api/v2/project/%s/stop-building"},
                   {"resume", "/api/v2/project/%s/resume-building"}};
    for (size_t i = 0; i < SP_ARRAY_LEN(actions); i++) {
        if (strcmp(sub, actions[i].sub) != 0) continue;
        char path[400];
        snprintf(path, sizeof path, actions[i].fmt, slug);
        char cmd[64];
        snprintf(cmd, sizeof cmd, "project %s", sub);
        return post(cmd, data, path, json_object());
    }
    fprintf(stderr, "spool project: unknown command \"%s\"\n%s", sub, project_usage);
    return CLI_USAGE;
}

int cli_tokens(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, 0, 'd'}, {"role", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0}};
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(tokens_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    const char *sub = argv[1], *data = NULL, *role = "user";
    int c;
    optind = 1;
    while ((c = getopt_long(argc - 1, argv + 1, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'r': role = optarg; break;
        case 'h': fputs(tokens_usage, stdout); return CLI_OK;
        default: fputs(tokens_usage, stderr); return CLI_USAGE;
        }
    }
    data = cli_data_dir(data);
    if (argc - 1 - optind != 1) {
        fprintf(stderr, "spool tokens %s: expected one argument\n%s", sub, tokens_usage);
        return CLI_USAGE;
    }
    const char *arg = argv[1 + optind];
    if (strcmp(sub, "create") == 0)
        return post("tokens create", data, "/admin/tokens", json_pack("{s:s, s:s}", "name", arg, "role", role));
    if (strcmp(sub, "revoke") == 0) {
        char path[300];
        if (strlen(arg) > 64 || strchr(arg, '/')) {
            fprintf(stderr, "spool tokens revoke: not a token id: %s\n", arg);
            return CLI_USAGE;
        }
        snprintf(path, sizeof path, "/admin/tokens/%s/revoke", arg);
        return post("tokens revoke", data, path, json_object());
    }
    fprintf(stderr, "spool tokens: unknown command \"%s\"\n%s", sub, tokens_usage);
    return CLI_USAGE;
}
