/* spool log tail | verify | append */
#include "cli.h"

#include "../ingest/ingest.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <unistd.h>

static const char log_usage[] = "usage: spool log <command> [options]\n"
                                "\n"
                                "Commands:\n"
                                "  tail [--from SEQ] [--follow] [--json]   print events\n"
                                "  verify                                   check contiguity, decoding and checksums\n"
                                "  append TYPE JSON                         append one event (validated)\n"
                                "\n"
                                "Every command takes --data DIR (default $SPOOL_DATA, else ./data) and --help.\n";

static const char tail_usage[] = "usage: spool log tail [--data DIR] [--from SEQ] [--follow] [--json]\n"
                                 "\n"
                                 "Prints events from sequence SEQ (default 1), one per line.\n"
                                 "  --follow  keep waiting for new events (until interrupted)\n"
                                 "  --json    one JSON object per line\n";

static const char verify_usage[] = "usage: spool log verify [--data DIR]\n"
                                   "\n"
                                   "Reads every record: sequences must be contiguous from 1, every record must\n"
                                   "decode and its checksum match. Reports the first bad sequence; exit 1 then.\n";

static const char append_usage[] = "usage: spool log append [--data DIR] TYPE JSON\n"
                                   "\n"
                                   "Validates JSON as the body of an event of TYPE and appends it. Goes through\n"
                                   "the running server's admin socket when a server holds the log; writes the\n"
                                   "log directly otherwise. Prints the sequence number once it is durable.\n";

/* Parses --data, --help and the command's own flags. Returns -1 to go
 * on, or an exit code. */
typedef struct {
    const char *data;
    const char *from;
    bool follow, json;
} log_args_t;

static int parse(int argc, char **argv, const char *usage, bool tail_flags, log_args_t *a)
{
    static const struct option tail_opts[] = {{"data", required_argument, 0, 'd'}, {"from", required_argument, 0, 'f'},
                                              {"follow", no_argument, 0, 'F'},     {"json", no_argument, 0, 'j'},
                                              {"help", no_argument, 0, 'h'},       {0}};
    static const struct option plain_opts[] = {{"data", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", tail_flags ? tail_opts : plain_opts, NULL)) != -1) {
        switch (c) {
        case 'd': a->data = optarg; break;
        case 'f': a->from = optarg; break;
        case 'F': a->follow = true; break;
        case 'j': a->json = true; break;
        case 'h': fputs(usage, stdout); return CLI_OK;
        default: fputs(usage, stderr); return CLI_USAGE;
        }
    }
    a->data = cli_data_dir(a->data);
    return -1;
}

/* ---- tail ---- */

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) { interrupted = 1; }

static void print_event(const log_event_t *ev, bool json)
{
    sp_buf_t b = {0};
    char ts[40];
    sp_format_time(ev->time_ns, ts, sizeof ts);
    if (json) {
        sp_buf_printf(&b, "{\"seq\":%llu,\"time\":\"%s\",\"time_ns\":%lld,\"type\":", (unsigned long long)ev->seq, ts,
                      (long long)ev->time_ns);
        sp_buf_add_json_str(&b, (const char *)ev->type_name.p, ev->type_name.n);
        sp_buf_printf(&b, ",\"schema\":%u,\"actor\":", ev->schema);
        sp_buf_add_json_str(&b, (const char *)ev->actor.p, ev->actor.n);
        sp_buf_addstr(&b, ",\"request_id\":");
        sp_buf_add_json_str(&b, (const char *)ev->request_id.p, ev->request_id.n);
        sp_buf_printf(&b, ",\"redacted\":%s,\"body\":", ev->redacted ? "true" : "false");
        if (ingest_body_to_json(ev->body, &b) != 0) sp_buf_addstr(&b, "null");
        sp_buf_addstr(&b, "}\n");
    } else {
        sp_buf_printf(&b, "%llu %s %.*s actor=%.*s ", (unsigned long long)ev->seq, ts, (int)ev->type_name.n,
                      (const char *)ev->type_name.p, (int)ev->actor.n, (const char *)ev->actor.p);
        if (ev->redacted)
            sp_buf_addstr(&b, "(redacted)");
        else if (ingest_body_to_json(ev->body, &b) != 0)
            sp_buf_addstr(&b, "(undecodable body)");
        sp_buf_addstr(&b, "\n");
    }
    fwrite(b.p, 1, b.n, stdout);
    sp_buf_free(&b);
}

/* Prints everything from *next on; returns 0 at the end of the log. */
static int tail_once(log_t *log, uint64_t *next, bool json)
{
    log_reader_t *r;
    int rc = log_reader_open(log, &r);
    if (rc != 0) {
        fprintf(stderr, "spool log tail: cannot read the log: %s\n", sp_strerror(rc));
        return rc;
    }
    log_reader_seek(r, *next);
    log_event_t ev;
    while (!interrupted && (rc = log_reader_next(r, &ev)) == 0) {
        print_event(&ev, json);
        *next = ev.seq + 1;
    }
    if (rc == SP_ECORRUPT || rc == SP_EGAP) fprintf(stderr, "spool log tail: %s\n", log_reader_why(r));
    log_reader_close(r);
    fflush(stdout);
    return rc == SP_ENOTFOUND ? 0 : rc;
}

static int cmd_tail(int argc, char **argv)
{
    log_args_t a = {0};
    int rc = parse(argc, argv, tail_usage, true, &a);
    if (rc >= 0) return rc;
    if (optind != argc) {
        fprintf(stderr, "spool log tail: unexpected argument \"%s\"\n%s", argv[optind], tail_usage);
        return CLI_USAGE;
    }
    uint64_t next = 1;
    if (a.from && (sp_parse_u64(a.from, &next) != 0 || next == 0)) {
        fprintf(stderr, "spool log tail: --from: expected a sequence number >= 1, got \"%s\"\n", a.from);
        return CLI_USAGE;
    }
    char err[1024];
    log_t *log;
    log_opts_t o = {.read_only = true};
    if ((rc = log_open(&log, cli_log_dir(a.data), &o, err, sizeof err)) != 0) {
        fprintf(stderr, "spool log tail: %s\n", err);
        return CLI_FAIL;
    }
    int ino = -1;
    if (a.follow) {
        signal(SIGINT, on_sigint);
        signal(SIGTERM, on_sigint);
        /* Every commit writes data.mdb; its modification wakes us. */
        char path[4200];
        snprintf(path, sizeof path, "%s/data.mdb", cli_log_dir(a.data));
        ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (ino >= 0) inotify_add_watch(ino, path, IN_MODIFY);
    }
    for (;;) {
        if ((rc = tail_once(log, &next, a.json)) != 0 || !a.follow || interrupted) break;
        struct pollfd pfd = {.fd = ino, .events = POLLIN};
        /* The timeout is a safety net should a notification be missed. */
        if (poll(&pfd, ino >= 0 ? 1 : 0, 1000) > 0) {
            char buf[4096];
            while (read(ino, buf, sizeof buf) > 0) {
            }
        }
    }
    if (ino >= 0) close(ino);
    log_close(log);
    return rc == 0 ? CLI_OK : CLI_FAIL;
}

/* ---- verify ---- */

static int cmd_verify(int argc, char **argv)
{
    log_args_t a = {0};
    int rc = parse(argc, argv, verify_usage, false, &a);
    if (rc >= 0) return rc;
    if (optind != argc) {
        fprintf(stderr, "spool log verify: unexpected argument \"%s\"\n%s", argv[optind], verify_usage);
        return CLI_USAGE;
    }
    char err[1024];
    log_t *log;
    log_opts_t o = {.read_only = true};
    if ((rc = log_open(&log, cli_log_dir(a.data), &o, err, sizeof err)) != 0) {
        fprintf(stderr, "spool log verify: %s\n", err);
        return CLI_FAIL;
    }
    log_reader_t *r;
    if ((rc = log_reader_open(log, &r)) != 0) {
        fprintf(stderr, "spool log verify: cannot read the log: %s\n", sp_strerror(rc));
        log_close(log);
        return CLI_FAIL;
    }
    log_reader_seek(r, 1);
    log_event_t ev;
    uint64_t count = 0, redacted = 0, unknown = 0;
    while ((rc = log_reader_next(r, &ev)) == 0) {
        count++;
        redacted += ev.redacted;
        unknown += ev.type == LOG_EV_UNKNOWN;
    }
    if (rc == SP_ENOTFOUND) {
        printf("ok: %llu events, sequences 1..%llu contiguous, every record decodes and matches its checksum"
               " (%llu redacted, %llu of types unknown to this version)\n",
               (unsigned long long)count, (unsigned long long)count, (unsigned long long)redacted,
               (unsigned long long)unknown);
        rc = 0;
    } else {
        fprintf(stderr, "spool log verify: FAILED at %s (%llu good records before it)\n", log_reader_why(r),
                (unsigned long long)count);
    }
    log_reader_close(r);
    log_close(log);
    return rc == 0 ? CLI_OK : CLI_FAIL;
}

/* ---- append ---- */

static int append_via_server(const char *data, const char *type, const char *json)
{
    /* Re-wrap as the admin API's request; the server validates again. */
    sp_buf_t req = {0}, resp = {0};
    sp_buf_addstr(&req, "{\"type\":");
    sp_buf_add_json_str(&req, type, strlen(type));
    sp_buf_addstr(&req, ",\"body\":");
    sp_buf_addstr(&req, json);
    sp_buf_addstr(&req, "}");
    sp_buf_add(&req, "", 1);
    char err[1024];
    int status = 0;
    int rc = cli_admin_post(cli_admin_socket(data), "/admin/log/append", (const char *)req.p, &status, &resp, err,
                            sizeof err);
    sp_buf_free(&req);
    if (rc != 0) {
        fprintf(stderr, "spool log append: %s\n", err);
        sp_buf_free(&resp);
        return CLI_FAIL;
    }
    if (status != 201) {
        fprintf(stderr, "spool log append: server answered %d: %.*s\n", status, (int)resp.n, (const char *)resp.p);
        sp_buf_free(&resp);
        return CLI_FAIL;
    }
    printf("%.*s\n", (int)resp.n, (const char *)resp.p);
    sp_buf_free(&resp);
    return CLI_OK;
}

static int cmd_append(int argc, char **argv)
{
    log_args_t a = {0};
    int rc = parse(argc, argv, append_usage, false, &a);
    if (rc >= 0) return rc;
    if (argc - optind != 2) {
        fprintf(stderr, "spool log append: expected TYPE and JSON\n%s", append_usage);
        return CLI_USAGE;
    }
    const char *type = argv[optind], *json = argv[optind + 1];
    char err[1024];
    sp_buf_t body = {0};
    int t;
    if ((rc = ingest_event_json(type, json, strlen(json), &t, &body, err, sizeof err)) != 0) {
        fprintf(stderr, "spool log append: %s\n", err);
        sp_buf_free(&body);
        return CLI_FAIL;
    }
    log_t *log;
    rc = log_open(&log, cli_log_dir(a.data), NULL, err, sizeof err);
    if (rc == SP_ELOCKED) {
        sp_buf_free(&body);
        return append_via_server(a.data, type, json);
    }
    if (rc != 0) {
        fprintf(stderr, "spool log append: %s\n", err);
        sp_buf_free(&body);
        return CLI_FAIL;
    }
    log_entry_t e = {.type = t, .actor = "cli", .body = sp_buf_slice(&body)};
    char rid[37];
    sp_uuid4(rid);
    e.request_id = rid;
    uint64_t seq = 0;
    rc = log_append_wait(log, &e, 1, &seq);
    sp_buf_free(&body);
    if (rc != 0) {
        log_errmsg(log, err, sizeof err);
        fprintf(stderr, "spool log append: %s%s%s\n", sp_strerror(rc), err[0] ? ": " : "", err);
        log_close(log);
        return CLI_FAIL;
    }
    log_close(log);
    printf("{\"sequence\":%llu}\n", (unsigned long long)seq);
    return CLI_OK;
}

int cli_log(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(log_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "tail") == 0) return cmd_tail(argc - 1, argv + 1);
    if (strcmp(argv[1], "verify") == 0) return cmd_verify(argc - 1, argv + 1);
    if (strcmp(argv[1], "append") == 0) return cmd_append(argc - 1, argv + 1);
    fprintf(stderr, "spool log: unknown command \"%s\"\n%s", argv[1], log_usage);
    return CLI_USAGE;
}
