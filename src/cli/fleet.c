/* spool queue | nodes | agents: the fleet and the queues, through a
 * running server's admin socket. */
#include "cli.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

static const char queue_usage[] =
    "usage: spool queue [--data DIR] [--json] [--limit N]     show queue depths and queued jobs\n"
    "       spool queue cancel --oldest N [--data DIR]       cancel the N oldest queued jobs\n"
    "       spool queue promote JOB_ID [--data DIR]          move a job from its project's usage queue\n"
    "                                                        to the run queue, past the project's limit\n";

static const char nodes_usage[] =
    "usage: spool nodes list [--data DIR] [--json]   agents, status and allocations\n"
    "       spool nodes drain ID|NAME [--data DIR]    finish running tasks, take no new ones\n"
    "       spool nodes undrain ID|NAME [--data DIR]\n";

static const char agents_usage[] =
    "usage: spool agents token create NAME [--data DIR]   a token for `spool agent --token`\n"
    "       spool agents token revoke ID [--data DIR]\n";

typedef struct {
    const char *data;
    bool json;
    uint64_t limit, oldest;
    bool has_oldest;
} args_t;

static int parse(int argc, char **argv, const char *usage, args_t *a)
{
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},  {"json", no_argument, 0, 'j'},
                                         {"limit", required_argument, 0, 'l'}, {"oldest", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},        {0}};
    int c;
    optind = 1;
    a->limit = 50;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->data = optarg; break;
        case 'j': a->json = true; break;
        case 'l':
        case 'o':
            if (sp_parse_u64(optarg, c == 'l' ? &a->limit : &a->oldest) != 0) {
                fprintf(stderr, "spool: --%s: expected a number, got \"%s\"\n", c == 'l' ? "limit" : "oldest", optarg);
                return CLI_USAGE;
            }
            if (c == 'o') a->has_oldest = true;
            break;
        case 'h': fputs(usage, stdout); return CLI_OK;
        default: fputs(usage, stderr); return CLI_USAGE;
        }
    }
    a->data = cli_data_dir(a->data);
    return -1;
}

/* Sends a request; on success *out is the answer (caller decrefs). */
static int call(const char *cmd, const char *data, const char *method, const char *path, json_t *body, json_t **out)
{
    char *json = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    sp_buf_t resp = {0};
    char err[1024];
    int status = 0;
    int rc = cli_admin_request(cli_admin_socket(data), method, path, json, &status, &resp, err, sizeof err);
    free(json);
    if (rc != 0) {
        fprintf(stderr, "spool %s: %s (is `spool serve --data %s` running?)\n", cmd, err, data);
        sp_buf_free(&resp);
        return CLI_FAIL;
    }
    json_t *r = json_loadb((const char *)resp.p, resp.n, 0, NULL);
    sp_buf_free(&resp);
    if (status >= 300 || r == NULL) {
        const char *msg = json_string_value(json_object_get(r, "message"));
        fprintf(stderr, "spool %s: %s\n", cmd, msg ? msg : "unexpected answer from the server");
        json_decref(r);
        return CLI_FAIL;
    }
    *out = r;
    return CLI_OK;
}

static void print_json(json_t *r)
{
    char *t = json_dumps(r, JSON_INDENT(2));
    printf("%s\n", t);
    free(t);
}

static void print_queue(json_t *q)
{
    printf("%-26s %9s\n", "RESOURCE CLASS", "RUN QUEUE");
    size_t i;
    json_t *c;
    json_array_foreach (json_object_get(q, "classes"), i, c)
        printf("%-26s %9lld\n", json_string_value(json_object_get(c, "class")),
               (long long)json_integer_value(json_object_get(c, "run_queue")));
    json_t *projects = json_object_get(q, "projects");
    if (json_array_size(projects)) {
        printf("\n%-30s %11s %7s %6s\n", "PROJECT", "USAGE QUEUE", "ACTIVE", "LIMIT");
        json_array_foreach (projects, i, c)
            printf("%-30s %11lld %7lld %6lld\n", json_string_value(json_object_get(c, "project")),
                   (long long)json_integer_value(json_object_get(c, "usage_queue")),
                   (long long)json_integer_value(json_object_get(c, "active")),
                   (long long)json_integer_value(json_object_get(c, "limit")));
    }
    printf("\n%lld queued; oldest first:\n", (long long)json_integer_value(json_object_get(q, "queued")));
    json_array_foreach (json_object_get(q, "jobs"), i, c) {
        json_t *w = json_object_get(c, "waiting");
        printf("  %s  %s #%lld %s[%lld]  %s queue, %s (waited %lld ms)\n",
               json_string_value(json_object_get(c, "job_id")), json_string_value(json_object_get(c, "project")),
               (long long)json_integer_value(json_object_get(c, "job_number")),
               json_string_value(json_object_get(c, "name")),
               (long long)json_integer_value(json_object_get(c, "index")),
               json_string_value(json_object_get(w, "queue")), json_string_value(json_object_get(w, "reason")),
               (long long)json_integer_value(json_object_get(c, "waited_ms")));
    }
}

int cli_queue(int argc, char **argv)
{
    const char *sub = argc >= 2 && argv[1][0] != '-' ? argv[1] : "show";
    bool has_sub = strcmp(sub, "show") != 0;
    args_t a = {0};
    int rc = parse(argc - has_sub, argv + has_sub, queue_usage, &a);
    if (rc >= 0) return rc;
    int rest = argc - has_sub - optind;
    char **args = argv + has_sub + optind;
    json_t *r;
    if (strcmp(sub, "show") == 0 && rest == 0) {
        char path[64];
        snprintf(path, sizeof path, "/admin/queue?limit=%llu", (unsigned long long)a.limit);
        if ((rc = call("queue", a.data, "GET", path, NULL, &r)) != CLI_OK) return rc;
        a.json ? print_json(r) : print_queue(r);
    } else if (strcmp(sub, "cancel") == 0 && rest == 0 && a.has_oldest) {
        if ((rc = call("queue cancel", a.data, "POST", "/admin/queue/cancel",
                       json_pack("{s:I}", "oldest", (json_int_t)a.oldest), &r)) != CLI_OK)
            return rc;
        printf("canceled %zu jobs\n", json_array_size(json_object_get(r, "canceled")));
    } else if (strcmp(sub, "promote") == 0 && rest == 1) {
        if ((rc = call("queue promote", a.data, "POST", "/admin/queue/promote", json_pack("{s:s}", "job", args[0]),
                       &r)) != CLI_OK)
            return rc;
        print_json(r);
    } else {
        fputs(queue_usage, stderr);
        return CLI_USAGE;
    }
    json_decref(r);
    return CLI_OK;
}

static void print_nodes(json_t *list)
{
    printf("%-36s %-16s %-12s %-5s %-7s %s\n", "ID", "NAME", "STATUS", "DRAIN", "RUNNING", "ALLOCATIONS");
    size_t i;
    json_t *n;
    json_array_foreach (list, i, n) {
        printf("%-36s %-16s %-12s %-5s %3lld/%-3lld ", json_string_value(json_object_get(n, "id")),
               json_string_value(json_object_get(n, "name")), json_string_value(json_object_get(n, "status")),
               json_is_true(json_object_get(n, "drain")) ? "yes" : "no",
               (long long)json_integer_value(json_object_get(n, "running")),
               (long long)json_integer_value(json_object_get(n, "slots")));
        size_t k;
        json_t *al;
        json_array_foreach (json_object_get(n, "allocations"), k, al)
            printf("%s%s#%lld[%lld]", k ? ", " : "", json_string_value(json_object_get(al, "project")),
                   (long long)json_integer_value(json_object_get(al, "job_number")),
                   (long long)json_integer_value(json_object_get(al, "index")));
        printf("\n");
    }
}

int cli_nodes(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            fputs(nodes_usage, stdout);
            return CLI_OK;
        }
        fputs(nodes_usage, stderr);
        return CLI_USAGE;
    }
    const char *sub = argv[1];
    args_t a = {0};
    int rc = parse(argc - 1, argv + 1, nodes_usage, &a);
    if (rc >= 0) return rc;
    int rest = argc - 1 - optind;
    char **args = argv + 1 + optind;
    json_t *r;
    if (strcmp(sub, "list") == 0 && rest == 0) {
        if ((rc = call("nodes list", a.data, "GET", "/admin/nodes", NULL, &r)) != CLI_OK) return rc;
        a.json ? print_json(r) : print_nodes(json_object_get(r, "items"));
    } else if ((strcmp(sub, "drain") == 0 || strcmp(sub, "undrain") == 0) && rest == 1 && strlen(args[0]) < 120 &&
               !strchr(args[0], '/')) {
        char path[200];
        snprintf(path, sizeof path, "/admin/nodes/%s/%s", args[0], sub);
        if ((rc = call(sub, a.data, "POST", path, json_object(), &r)) != CLI_OK) return rc;
        printf("%s %s\n", json_string_value(json_object_get(r, "name")),
               json_is_true(json_object_get(r, "drain")) ? "is draining" : "takes tasks again");
    } else {
        fputs(nodes_usage, stderr);
        return CLI_USAGE;
    }
    json_decref(r);
    return CLI_OK;
}

int cli_agents(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[1], "token") != 0) {
        bool help = argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
        fputs(agents_usage, help ? stdout : stderr);
        return help ? CLI_OK : CLI_USAGE;
    }
    /* spool agents token create NAME -> spool tokens create NAME --role agent */
    if (strcmp(argv[2], "create") == 0) {
        char *v[16];
        int n = 0;
        v[n++] = "tokens";
        v[n++] = "create";
        for (int i = 3; i < argc && n < 13; i++) v[n++] = argv[i];
        v[n++] = "--role";
        v[n++] = "agent";
        v[n] = NULL;
        return cli_tokens(n, v);
    }
    if (strcmp(argv[2], "revoke") == 0) {
        char *v[16];
        int n = 0;
        v[n++] = "tokens";
        v[n++] = "revoke";
        for (int i = 3; i < argc && n < 15; i++) v[n++] = argv[i];
        v[n] = NULL;
        return cli_tokens(n, v);
    }
    fputs(agents_usage, stderr);
    return CLI_USAGE;
}
