/* spool agent: a build machine's agent. */
#include "cli.h"

#include "../agent/agent.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static const char agent_usage[] =
    "usage: spool agent --server URL --token TOKEN [options]\n"
    "\n"
    "Registers with a Spool server, claims tasks and runs their steps.\n"
    "\n"
    "  --server URL      http://host:port, https://host:port or unix:/path/to/socket\n"
    "                    (default $SPOOL_SERVER)\n"
    "  --token TOKEN     agent token (default $SPOOL_AGENT_TOKEN; prefer the variable:\n"
    "                    arguments are visible to every user of the machine)\n"
    "  --name NAME       name shown in the fleet (default: the host name)\n"
    "  --slots N         tasks run at once (default 1)\n"
    "  --cpus N          CPUs advertised (default: this machine's); the server keeps 2\n"
    "                    for the agent and places jobs whose resource class fits the rest\n"
    "  --memory-mb N     memory advertised in MB (default: this machine's; 4096 kept)\n"
    "  --work-dir DIR    where task directories are made (default $SPOOL_AGENT_WORK,\n"
    "                    else ./spool-work)\n"
    "  --labels a,b      labels advertised besides the OS and CPU (e.g. linux,x86_64)\n"
    "  --keep-work       keep each task's directory after the task\n"
    "  --no-sandbox      run steps without bubblewrap: they can then write anywhere\n"
    "                    this process can (the agent refuses to start without a\n"
    "                    working sandbox otherwise)\n"
    "  --docker-socket PATH  run jobs with a docker executor in containers, through\n"
    "                    the Docker Engine API at this unix socket (Docker's, or\n"
    "                    podman's `podman system service`); adds the label docker\n"
    "                    (default $SPOOL_DOCKER_SOCKET)\n"
    "  --grace SECONDS   on SIGTERM, how long running tasks may go on (default 60)\n"
    "  --zstd-level N    compression level of output chunks, 1..19 (default 3)\n"
    "  --once            run one task, then exit\n"
    "  -h, --help        show this help\n"
    "\n"
    "SIGTERM or SIGINT: stop claiming; running tasks go on for the grace period,\n"
    "then they are killed and finished as infrastructure_fail (the server may\n"
    "retry them). A second signal kills them at once. Exit status 0 after a\n"
    "clean stop, 1 when the server refused the agent.\n";

typedef struct {
    agent_pool_t *pool;
    sigset_t set;
} sigctx_t;

/* Signals are blocked in every thread and taken here, one at a time, so
 * that handling them may lock and call into the pool. SIGUSR1 is how the
 * main thread ends this thread. */
static void *signal_main(void *arg)
{
    sigctx_t *c = arg;
    int n = 0;
    for (;;) {
        int sig;
        if (sigwait(&c->set, &sig) != 0) continue;
        if (sig == SIGUSR1) return NULL;
        n++;
        sp_info("agent", "received %s: %s", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                n == 1 ? "draining (running tasks may finish within the grace period)" : "killing running tasks");
        agent_pool_drain(c->pool, n > 1);
    }
}

int cli_agent(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, 0, 's'},   {"token", required_argument, 0, 't'},
        {"name", required_argument, 0, 'n'},     {"slots", required_argument, 0, 'S'},
        {"work-dir", required_argument, 0, 'w'}, {"labels", required_argument, 0, 'l'},
        {"keep-work", no_argument, 0, 'k'},      {"no-sandbox", no_argument, 0, 'N'},
        {"grace", required_argument, 0, 'g'},    {"zstd-level", required_argument, 0, 'z'},
        {"once", no_argument, 0, 'o'},           {"docker-socket", required_argument, 0, 'D'},
        {"cpus", required_argument, 0, 'C'},     {"memory-mb", required_argument, 0, 'M'},
        {"help", no_argument, 0, 'h'},           {0}};
    agent_opts_t o = {
        .server = getenv("SPOOL_SERVER"),
        .token = getenv("SPOOL_AGENT_TOKEN"),
        .work_dir = getenv("SPOOL_AGENT_WORK"),
        .docker_socket = getenv("SPOOL_DOCKER_SOCKET"),
    };
    uint64_t v;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': o.server = optarg; break;
        case 't': o.token = optarg; break;
        case 'n': o.name = optarg; break;
        case 'w': o.work_dir = optarg; break;
        case 'l': o.labels = optarg; break;
        case 'k': o.keep_work = true; break;
        case 'N': o.no_sandbox = true; break;
        case 'o': o.once = true; break;
        case 'D': o.docker_socket = optarg; break;
        case 'S':
            if (sp_parse_u64(optarg, &v) != 0 || v < 1 || v > AGENT_MAX_SLOTS) {
                fprintf(stderr, "spool agent: --slots: expected 1..%d, got \"%s\"\n", AGENT_MAX_SLOTS, optarg);
                return CLI_USAGE;
            }
            o.slots = (int)v;
            break;
        case 'C':
            if (sp_parse_u64(optarg, &v) != 0 || v < 1 || v > 4096) {
                fprintf(stderr, "spool agent: --cpus: expected 1..4096, got \"%s\"\n", optarg);
                return CLI_USAGE;
            }
            o.cpus = (int)v;
            break;
        case 'M':
            if (sp_parse_u64(optarg, &v) != 0 || v < 1 || v > (1ull << 32)) {
                fprintf(stderr, "spool agent: --memory-mb: expected 1..4294967296, got \"%s\"\n", optarg);
                return CLI_USAGE;
            }
            o.memory_mb = (int64_t)v;
            break;
        case 'g':
            if (sp_parse_u64(optarg, &v) != 0 || v > 86400) {
                fprintf(stderr, "spool agent: --grace: expected seconds 0..86400, got \"%s\"\n", optarg);
                return CLI_USAGE;
            }
            o.grace_ms = v == 0 ? -1 : (int)(v * 1000);
            break;
        case 'z':
            if (sp_parse_u64(optarg, &v) != 0 || v < 1 || v > 19) {
                fprintf(stderr, "spool agent: --zstd-level: expected 1..19, got \"%s\"\n", optarg);
                return CLI_USAGE;
            }
            o.zstd_level = (int)v;
            break;
        case 'h': fputs(agent_usage, stdout); return CLI_OK;
        default: fputs(agent_usage, stderr); return CLI_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "spool agent: unexpected argument \"%s\"\n%s", argv[optind], agent_usage);
        return CLI_USAGE;
    }
    if (o.server == NULL || *o.server == 0) {
        fprintf(stderr, "spool agent: --server is required (or $SPOOL_SERVER)\n%s", agent_usage);
        return CLI_USAGE;
    }
    if (o.token == NULL || *o.token == 0) {
        fprintf(stderr, "spool agent: --token is required (or $SPOOL_AGENT_TOKEN)\n%s", agent_usage);
        return CLI_USAGE;
    }
    if (o.work_dir == NULL || *o.work_dir == 0) o.work_dir = "spool-work";
    signal(SIGPIPE, SIG_IGN);

    /* Block the signals before any thread exists, so that every thread
     * inherits the mask and only signal_main receives them. (Step
     * processes start with an empty mask: libuv resets it.) */
    sigctx_t sc;
    sigemptyset(&sc.set);
    sigaddset(&sc.set, SIGTERM);
    sigaddset(&sc.set, SIGINT);
    sigaddset(&sc.set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sc.set, NULL);

    char err[1024];
    int rc = agent_pool_start(&o, &sc.pool, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "spool agent: %s\n", err);
        return CLI_FAIL;
    }
    pthread_t sig_th;
    if (pthread_create(&sig_th, NULL, signal_main, &sc) != 0) {
        fprintf(stderr, "spool agent: cannot start the signal thread\n");
        agent_pool_stop(sc.pool);
        return CLI_FAIL;
    }
    rc = agent_pool_wait(sc.pool);
    if (rc != 0) fprintf(stderr, "spool agent: %s\n", agent_pool_error(sc.pool));
    pthread_kill(sig_th, SIGUSR1);
    pthread_join(sig_th, NULL);
    agent_pool_stop(sc.pool);
    sp_info("agent", "stopped");
    return rc == 0 ? CLI_OK : CLI_FAIL;
}
