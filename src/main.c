/* spool: one binary, many subcommands. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static const char usage[] = "usage: spool <command> [options]\n"
                            "\n"
                            "Commands:\n"
                            "  serve        run the server (event log, projections, HTTP API)\n"
                            "  log          tail, verify or append to the event log\n"
                            "  config       validate or process a .circleci/config.yml\n"
                            "  agent        run a build agent: claim tasks from a server and run them\n"
                            "  project      add projects, follow them, stop or resume building\n"
                            "  tokens       create and revoke API and agent tokens\n"
                            "  agents       agent tokens (spool agents token create NAME)\n"
                            "  nodes        list agents, drain and undrain them\n"
                            "  queue        show the queues, cancel the oldest jobs, promote a job\n"
                            "  version      print the version\n"
                            "\n"
                            "Run `spool <command> --help` for a command's options.\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return CLI_OK;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("spool %s\n", SP_VERSION);
        return CLI_OK;
    }
    if (strcmp(cmd, "serve") == 0) return cli_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "log") == 0) return cli_log(argc - 1, argv + 1);
    if (strcmp(cmd, "config") == 0) return cli_config(argc - 1, argv + 1);
    if (strcmp(cmd, "agent") == 0) return cli_agent(argc - 1, argv + 1);
    if (strcmp(cmd, "project") == 0) return cli_project(argc - 1, argv + 1);
    if (strcmp(cmd, "tokens") == 0) return cli_tokens(argc - 1, argv + 1);
    if (strcmp(cmd, "queue") == 0) return cli_queue(argc - 1, argv + 1);
    if (strcmp(cmd, "nodes") == 0) return cli_nodes(argc - 1, argv + 1);
    if (strcmp(cmd, "agents") == 0) return cli_agents(argc - 1, argv + 1);
    fprintf(stderr, "spool: unknown command \"%s\"\n%s", cmd, usage);
    return CLI_USAGE;
}
