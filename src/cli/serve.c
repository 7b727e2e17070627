/* spool serve: the server. */
#include "cli.h"

#include "../http/http.h"

#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static const char serve_usage[] = "usage: spool serve [--data DIR] [--listen ADDR:PORT] [--http-threads N]\n"
                                  "\n"
                                  "Starts the server: the event log, the projections and the HTTP front-end.\n"
                                  "\n"
                                  "  --data DIR          data directory (default $SPOOL_DATA, else ./data)\n"
                                  "  --listen ADDR:PORT  HTTP listen address (default $SPOOL_LISTEN, else\n"
                                  "                      127.0.0.1:8080); \"unix:PATH\" for a unix socket\n"
                                  "  --http-threads N    event loops serving HTTP (default $SPOOL_HTTP_THREADS,\n"
                                  "                      else one per CPU)\n"
                                  "  -h, --help          show this help\n"
                                  "\n"
                                  "SIGTERM or SIGINT stop accepting, finish requests in flight, commit the\n"
                                  "batch in flight, close the log and exit 0.\n";

typedef struct {
    uv_loop_t *loop;
    http_t *http;
    uv_signal_t sigterm, sigint;
    bool stopping;
} server_t;

static void on_drained(void *arg)
{
    server_t *s = arg;
    uv_stop(s->loop);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    server_t *s = sig->data;
    if (s->stopping) return;
    s->stopping = true;
    sp_info("serve", "received %s: draining", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    http_drain(s->http, on_drained, s);
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

int cli_serve(int argc, char **argv)
{
    static const struct option opts[] = {{"data", required_argument, 0, 'd'},
                                         {"listen", required_argument, 0, 'l'},
                                         {"http-threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *data = NULL, *listen = getenv("SPOOL_LISTEN"), *threads_arg = getenv("SPOOL_HTTP_THREADS");
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'l': listen = optarg; break;
        case 't': threads_arg = optarg; break;
        case 'h': fputs(serve_usage, stdout); return CLI_OK;
        default: fputs(serve_usage, stderr); return CLI_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "spool serve: unexpected argument \"%s\"\n%s", argv[optind], serve_usage);
        return CLI_USAGE;
    }
    uint64_t threads = (uint64_t)uv_available_parallelism();
    if (threads_arg && *threads_arg && (sp_parse_u64(threads_arg, &threads) != 0 || threads < 1 || threads > 64)) {
        fprintf(stderr, "spool serve: --http-threads: expected 1..64, got \"%s\"\n", threads_arg);
        return CLI_USAGE;
    }
    data = cli_data_dir(data);
    if (listen == NULL || *listen == 0) listen = "127.0.0.1:8080";
    signal(SIGPIPE, SIG_IGN);
    /* Each request allocates and frees a few pages (h2o pools, LMDB read
     * transactions); by default glibc returns them to the kernel and
     * faults them in again every time. Keep them: +28% on /status. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);

    char err[1024];
    log_t *log;
    int rc = log_open(&log, cli_log_dir(data), NULL, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "spool serve: %s\n", err);
        return CLI_FAIL;
    }
    if (verify_log(log, err, sizeof err) != 0) {
        fprintf(stderr, "spool serve: refusing to start: the log in %s is damaged at %s (run `spool log verify`)\n",
                cli_log_dir(data), err);
        log_close(log);
        return CLI_FAIL;
    }
    proj_t *proj;
    if ((rc = proj_open(&proj, log, cli_views_dir(data), proj_all, proj_all_count, err, sizeof err)) != 0) {
        fprintf(stderr, "spool serve: %s\n", err);
        log_close(log);
        return CLI_FAIL;
    }
    server_t s = {.loop = uv_default_loop()};
    http_opts_t ho = {
        .loop = s.loop, .log = log, .proj = proj, .listen = listen, .admin_socket = cli_admin_socket(data)};
    if ((rc = http_open(&s.http, &ho, err, sizeof err)) != 0) {
        fprintf(stderr, "spool serve: %s\n", err);
        proj_close(proj);
        log_close(log);
        return CLI_FAIL;
    }
    if ((rc = proj_start(proj)) != 0) {
        fprintf(stderr, "spool serve: cannot start the projector: %s\n", sp_strerror(rc));
        return CLI_FAIL;
    }
    uv_signal_init(s.loop, &s.sigterm);
    uv_signal_init(s.loop, &s.sigint);
    s.sigterm.data = s.sigint.data = &s;
    uv_signal_start(&s.sigterm, on_signal, SIGTERM);
    uv_signal_start(&s.sigint, on_signal, SIGINT);
    sp_info("serve", "listening on %s%s (data %s, log head %llu)", strncmp(listen, "unix:", 5) ? "http://" : "", listen,
            data, (unsigned long long)log_head(log));

    uv_run(s.loop, UV_RUN_DEFAULT);

    /* Drained: no request is in flight. Stop the projector, let the
     * writer commit what it holds and close LMDB. The front-end is not
     * torn down: the process exits, and h2o keeps no durable state. */
    proj_close(proj);
    log_close(log);
    sp_info("serve", "stopped cleanly");
    return CLI_OK;
}
