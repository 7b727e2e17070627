/* spool serve: the server. */
#include "cli.h"

#include "../agent/agent.h"
#include "../http/http.h"
#include "../reactors/reactors.h"

#include <getopt.h>
#include <jansson.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static const char serve_usage[] =
    "usage: spool serve [options]\n"
    "\n"
    "Starts the server: the event log, the projections, the engine, the HTTP\n"
    "front-end and a local fleet of build agents.\n"
    "\n"
    "  --data DIR          data directory (default $SPOOL_DATA, else ./data)\n"
    "  --listen ADDR:PORT  HTTP listen address (default $SPOOL_LISTEN, else\n"
    "                      127.0.0.1:8080); \"unix:PATH\" for a unix socket\n"
    "  --http-threads N    event loops serving HTTP (default $SPOOL_HTTP_THREADS,\n"
    "                      else one per CPU)\n"
    "  --slots N           local agent slots: jobs run at once on this machine\n"
    "                      (default $SPOOL_SLOTS, else 2; 0: no local agents)\n"
    "  --no-sandbox        run local jobs without bubblewrap ($SPOOL_NO_SANDBOX=1)\n"
    "  --lease-timeout MS  an agent silent this long loses its task, which fails\n"
    "                      as infrastructure_fail (default $SPOOL_LEASE_TIMEOUT_MS,\n"
    "                      else 30000)\n"
    "  --job-timeout S     the longest a job may run (default $SPOOL_JOB_TIMEOUT_S,\n"
    "                      else 18000: 5 hours)\n"
    "  --base-url URL      how users reach this server, for links (default\n"
    "                      $SPOOL_BASE_URL, else http://LISTEN)\n"
    "  --config FILE       a JSON file with any of: listen, base_url, slots,\n"
    "                      http_threads, lease_timeout_ms, job_timeout_s,\n"
    "                      project_concurrency, resource_classes ({\"docker\":\n"
    "                      {\"small\": {\"cpu\": 2, \"ram_mb\": 4096}, ...}, \"machine\":\n"
    "                      {...}, \"macos\": {...}}; default $SPOOL_CONFIG);\n"
    "                      environment variables override it, flags override both\n"
    "  -h, --help          show this help\n"
    "\n"
    "SIGTERM or SIGINT: stop the local agents (their jobs end as\n"
    "infrastructure_fail), stop accepting, finish requests in flight, commit\n"
    "the batch in flight, close the log and exit 0.\n";

typedef struct {
    const char *data, *listen, *base_url;
    uint64_t threads, slots, lease_ms, job_s, project_concurrency;
    bool no_sandbox;
    json_t *config; /* the --config file, owned */
} serve_opts_t;

typedef struct {
    serve_opts_t o;
    uv_loop_t *loop;
    log_t *log;
    proj_t *proj;
    secrets_t *secrets;
    http_t *http;
    engine_t *engine;
    reactor_config_t *reactor;
    agent_pool_t *pool;
    uv_signal_t sigterm, sigint;
    uv_async_t caught_up;
    uv_timer_t tick;
    uv_work_t pool_stop;
    uint64_t start_head;
    _Atomic bool caught_up_sent;
    bool stopping;
} server_t;

static void on_drained(void *arg)
{
    server_t *s = arg;
    uv_stop(s->loop);
}

static void pool_stop_work(uv_work_t *w)
{
    server_t *s = w->data;
    agent_pool_stop(s->pool);
}

/* The local agents have stopped (their last reports went through the
 * still-open admin socket): now stop serving. */
static void pool_stopped(uv_work_t *w, int status)
{
    server_t *s = w->data;
    s->pool = NULL;
    http_drain(s->http, on_drained, s);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    server_t *s = sig->data;
    if (s->stopping) return;
    s->stopping = true;
    sp_info("serve", "received %s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_timer_stop(&s->tick);
    if (s->pool) {
        agent_pool_drain(s->pool, true);
        s->pool_stop.data = s;
        uv_queue_work(s->loop, &s->pool_stop, pool_stop_work, pool_stopped);
        return;
    }
    http_drain(s->http, on_drained, s);
}

static void on_tick(uv_timer_t *t)
{
    server_t *s = t->data;
    engine_tick(s->engine);
}

static void on_applied(void *arg, uint64_t applied)
{
    server_t *s = arg;
    if (applied >= s->start_head && !atomic_exchange(&s->caught_up_sent, true)) uv_async_send(&s->caught_up);
}

/* The views show everything logged before the start: the engine can be
 * built from them, and with it everything that acts. */
static void on_caught_up(uv_async_t *a)
{
    server_t *s = a->data;
    uv_close((uv_handle_t *)a, NULL);
    if (s->stopping) return;
    char err[1024];
    engine_opts_t eo = {.log = s->log,
                        .proj = s->proj,
                        .secrets = s->secrets,
                        .lease_timeout_ms = (int64_t)s->o.lease_ms,
                        .job_timeout_s = (int64_t)s->o.job_s,
                        .base_url = s->o.base_url,
                        .resource_classes = json_object_get(s->o.config, "resource_classes"),
                        .project_concurrency = (int64_t)s->o.project_concurrency};
    if (engine_open(&s->engine, &eo, err, sizeof err) != 0) {
        sp_error("serve", "cannot start the engine: %s", err);
        return;
    }
    http_set_engine(s->http, s->engine);
    char mirrors[4200];
    snprintf(mirrors, sizeof mirrors, "%s/mirrors", s->o.data);
    reactor_config_opts_t ro = {
        .log = s->log, .proj = s->proj, .engine = s->engine, .secrets = s->secrets, .mirrors_dir = mirrors};
    if (reactor_config_open(&s->reactor, &ro, err, sizeof err) != 0) sp_error("serve", "%s", err);
    uv_timer_start(&s->tick, on_tick, 1000, 1000);
    if (s->o.slots > 0) {
        char server[4200], work[4200];
        snprintf(server, sizeof server, "unix:%s", cli_admin_socket(s->o.data));
        snprintf(work, sizeof work, "%s/work", s->o.data);
        agent_opts_t ao = {.server = server,
                           .token = "local",
                           .name = "local",
                           .slots = (int)s->o.slots,
                           .work_dir = work,
                           .no_sandbox = s->o.no_sandbox};
        if (agent_pool_start(&ao, &s->pool, err, sizeof err) != 0)
            sp_error("serve", "cannot start the local agents: %s", err);
    }
    sp_info("serve", "ready: engine running, %llu local agent slots", (unsigned long long)(s->pool ? s->o.slots : 0));
}

/* Reads every record once, so a damaged log stops the server at start
 * instead of being skipped or served half-read. */
static int verify_log(log_t *log, char *msg, size_t n)
{
    log_reader_t *r;
    int rc = log_reader_open(log, &r);
    if (rc != 0) {
        snprintf(msg, n, "cannot read the log: %s", sp_strerror(rc));
        return rc;
    }
    log_reader_seek(r, 1);
    log_event_t ev;
    while ((rc = log_reader_next(r, &ev)) == 0) {
    }
    if (rc == SP_ENOTFOUND) rc = 0;
    if (rc != 0) snprintf(msg, n, "%s", log_reader_why(r));
    log_reader_close(r);
    return rc;
}

static int env_u64(const char *name, uint64_t def, uint64_t *out)
{
    const char *v = getenv(name);
    *out = def;
    return v && *v ? sp_parse_u64(v, out) : 0;
}

/* The number under key in the config file, or def. */
static uint64_t conf_u64(const json_t *conf, const char *key, uint64_t def)
{
    const json_t *v = json_object_get(conf, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : def;
}

/* Reads the --config file (or $SPOOL_CONFIG), checking its keys. */
static int load_config(int argc, char **argv, json_t **out)
{
    const char *path = getenv("SPOOL_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
    }
    *out = NULL;
    if (path == NULL || *path == 0) return -1;
    json_error_t je;
    json_t *c = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (c == NULL || !json_is_object(c)) {
        fprintf(stderr, "spool serve: %s:%d:%d: %s\n", path, je.line, je.column,
                c ? "expected a JSON object" : je.text);
        json_decref(c);
        return CLI_FAIL;
    }
    static const char *known[] = {"listen",
                                  "base_url",
                                  "slots",
                                  "http_threads",
                                  "lease_timeout_ms",
                                  "job_timeout_s",
                                  "project_concurrency",
                                  "resource_classes",
                                  "data"};
    const char *k;
    json_t *v;
    json_object_foreach (c, k, v) {
        bool ok = false;
        for (size_t i = 0; i < SP_ARRAY_LEN(known); i++) ok |= strcmp(k, known[i]) == 0;
        if (!ok) {
            fprintf(stderr, "spool serve: %s: unknown setting \"%s\"\n", path, k);
            json_decref(c);
            return CLI_FAIL;
        }
    }
    json_t *rc = json_object_get(c, "resource_classes");
    json_t *classes;
    const char *exec;
    json_object_foreach (rc, exec, classes) {
        const char *name;
        json_t *cls;
        json_object_foreach (classes, name, cls) {
            if (!json_is_number(json_object_get(cls, "cpu")) || !json_is_integer(json_object_get(cls, "ram_mb"))) {
                fprintf(stderr, "spool serve: %s: resource_classes.%s.%s: expected {\"cpu\": N, \"ram_mb\": N}\n", path,
                        exec, name);
                json_decref(c);
                return CLI_FAIL;
            }
        }
    }
    *out = c;
    return -1;
}

static int parse_opts(int argc, char **argv, serve_opts_t *o)
{
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                         {"listen", required_argument, 0, 'l'},
                                         {"http-threads", required_argument, 0, 't'},
                                         {"slots", required_argument, 0, 's'},
                                         {"no-sandbox", no_argument, 0, 'n'},
                                         {"lease-timeout", required_argument, 0, 'L'},
                                         {"job-timeout", required_argument, 0, 'J'},
                                         {"base-url", required_argument, 0, 'b'},
                                         {"config", required_argument, 0, 'C'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    json_t *conf;
    int crc = load_config(argc, argv, &conf);
    if (crc >= 0) return crc;
    *o = (serve_opts_t){.config = conf,
                        .listen = getenv("SPOOL_LISTEN") ?: json_string_value(json_object_get(conf, "listen")),
                        .base_url = getenv("SPOOL_BASE_URL") ?: json_string_value(json_object_get(conf, "base_url")),
                        .data = json_string_value(json_object_get(conf, "data"))};
    o->no_sandbox = getenv("SPOOL_NO_SANDBOX") && strcmp(getenv("SPOOL_NO_SANDBOX"), "1") == 0;
    if (env_u64("SPOOL_HTTP_THREADS", conf_u64(conf, "http_threads", uv_available_parallelism()), &o->threads) ||
        env_u64("SPOOL_SLOTS", conf_u64(conf, "slots", 2), &o->slots) ||
        env_u64("SPOOL_LEASE_TIMEOUT_MS", conf_u64(conf, "lease_timeout_ms", 30000), &o->lease_ms) ||
        env_u64("SPOOL_JOB_TIMEOUT_S", conf_u64(conf, "job_timeout_s", 18000), &o->job_s) ||
        env_u64("SPOOL_PROJECT_CONCURRENCY", conf_u64(conf, "project_concurrency", 0), &o->project_concurrency)) {
        fprintf(stderr, "spool serve: an SPOOL_* variable is not a number\n");
        return CLI_USAGE;
    }
    const char *num_flag = NULL;
    uint64_t *num_out = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': o->data = optarg; break;
        case 'l': o->listen = optarg; break;
        case 'b': o->base_url = optarg; break;
        case 'C': break; /* read by load_config */
        case 'n': o->no_sandbox = true; break;
        case 't': num_flag = "--http-threads", num_out = &o->threads; break;
        case 's': num_flag = "--slots", num_out = &o->slots; break;
        case 'L': num_flag = "--lease-timeout", num_out = &o->lease_ms; break;
        case 'J': num_flag = "--job-timeout", num_out = &o->job_s; break;
        case 'h': fputs(serve_usage, stdout); return CLI_OK;
        default: fputs(serve_usage, stderr); return CLI_USAGE;
        }
        if (num_out && sp_parse_u64(optarg, num_out) != 0) {
            fprintf(stderr, "spool serve: %s: expected a number, got \"%s\"\n", num_flag, optarg);
            return CLI_USAGE;
        }
        num_out = NULL;
    }
    if (optind != argc) {
        fprintf(stderr, "spool serve: unexpected argument \"%s\"\n%s", argv[optind], serve_usage);
        return CLI_USAGE;
    }
    if (o->threads < 1 || o->threads > 64 || o->slots > 256 || o->lease_ms < 100 || o->job_s < 1) {
        fprintf(stderr, "spool serve: --http-threads 1..64, --slots 0..256, --lease-timeout >= 100, "
                        "--job-timeout >= 1\n");
        return CLI_USAGE;
    }
    o->data = cli_data_dir(o->data);
    if (o->listen == NULL || *o->listen == 0) o->listen = "127.0.0.1:8080";
    return -1;
}

int cli_serve(int argc, char **argv)
{
    server_t s = {0};
    int rc = parse_opts(argc, argv, &s.o);
    if (rc >= 0) return rc;
    char base_url[300];
    const char *configured_base_url = s.o.base_url;
    if (s.o.base_url == NULL) {
        snprintf(base_url, sizeof base_url, "http://%s", s.o.listen);
        s.o.base_url = base_url;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Each request allocates and frees a few pages (h2o pools, LMDB read
     * transactions); by default glibc returns them to the kernel and
     * faults them in again every time. Keep them: +28% on /status. A
     * small top pad keeps large allocations (LMDB's 2 MiB dirty lists)
     * in lazily touched mmaps instead of the heap: -4 MB idle RSS. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 1 << 20);

    char err[1024], keys[4200];
    if ((rc = log_open(&s.log, cli_log_dir(s.o.data), NULL, err, sizeof err)) != 0) {
        fprintf(stderr, "spool serve: %s\n", err);
        return CLI_FAIL;
    }
    if (verify_log(s.log, err, sizeof err) != 0) {
        fprintf(stderr, "spool serve: refusing to start: the log in %s is damaged at %s (run `spool log verify`)\n",
                cli_log_dir(s.o.data), err);
        log_close(s.log);
        return CLI_FAIL;
    }
    snprintf(keys, sizeof keys, "%s/keys", s.o.data);
    if ((rc = secrets_open(&s.secrets, keys, err, sizeof err)) != 0 ||
        (rc = proj_open(&s.proj, s.log, cli_views_dir(s.o.data), proj_all, proj_all_count, err, sizeof err)) != 0) {
        fprintf(stderr, "spool serve: %s\n", err);
        secrets_close(s.secrets);
        log_close(s.log);
        return CLI_FAIL;
    }
    s.loop = uv_default_loop();
    http_opts_t ho = {.loop = s.loop,
                      .log = s.log,
                      .proj = s.proj,
                      .listen = s.o.listen,
                      .admin_socket = cli_admin_socket(s.o.data),
                      .threads = (int)s.o.threads,
                      .base_url = configured_base_url};
    if ((rc = http_open(&s.http, &ho, err, sizeof err)) != 0) {
        fprintf(stderr, "spool serve: %s\n", err);
        proj_close(s.proj);
        secrets_close(s.secrets);
        log_close(s.log);
        return CLI_FAIL;
    }
    uv_signal_init(s.loop, &s.sigterm);
    uv_signal_init(s.loop, &s.sigint);
    s.sigterm.data = s.sigint.data = &s;
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    uv_timer_init(s.loop, &s.tick);
    s.tick.data = &s;
    uv_async_init(s.loop, &s.caught_up, on_caught_up);
    s.caught_up.data = &s;
    s.start_head = log_head(s.log);
    proj_subscribe(s.proj, on_applied, &s);
    if ((rc = proj_start(s.proj)) != 0) {
        fprintf(stderr, "spool serve: cannot start the projector: %s\n", sp_strerror(rc));
        return CLI_FAIL;
    }
    on_applied(&s, proj_applied(s.proj));
    sp_info("serve", "listening on %s%s (data %s, log head %llu)", strncmp(s.o.listen, "unix:", 5) ? "http://" : "",
            s.o.listen, s.o.data, (unsigned long long)s.start_head);

    uv_run(s.loop, UV_RUN_DEFAULT);

    /* Drained: no request is in flight. Stop what acts, then the
     * projector; let the writer commit what it holds and close LMDB. The
     * front-end is not torn down: the process exits, and h2o keeps no
     * durable state. */
    reactor_config_close(s.reactor);
    proj_unsubscribe(s.proj, on_applied, &s);
    http_set_engine(s.http, NULL);
    engine_close(s.engine);
    proj_close(s.proj);
    log_close(s.log);
    secrets_close(s.secrets);
    json_decref(s.o.config);
    sp_info("serve", "stopped cleanly");
    return CLI_OK;
}
