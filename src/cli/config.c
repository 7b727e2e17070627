/* spool config validate | process */
#include "cli.h"

#include "../config/config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static const char config_usage[] = "usage: spool config <command> [options] [FILE]\n"
                                   "\n"
                                   "Commands:\n"
                                   "  validate [FILE]   check a .circleci/config.yml; prints \"valid\" or every error\n"
                                   "  process [FILE]    print the processed (2.0) config as YAML\n"
                                   "\n"
                                   "FILE defaults to .circleci/config.yml. Both take --pipeline-parameters JSON\n"
                                   "and --help. Exit status: 0 valid, 1 invalid (or unreadable), 2 usage error.\n";

static const char validate_usage[] = "usage: spool config validate [--pipeline-parameters JSON] [FILE]\n"
                                     "\n"
                                     "Compiles FILE (default .circleci/config.yml) as CircleCI would and prints\n"
                                     "\"valid\", or every error as FILE:LINE:COLUMN: KEY.PATH: what was expected.\n"
                                     "  --pipeline-parameters JSON  values of the config's pipeline parameters,\n"
                                     "                              a JSON object (or @PATH of a file holding one)\n"
                                     "Exit status: 0 valid, 1 invalid, 2 usage error.\n";

static const char process_usage[] = "usage: spool config process [--pipeline-parameters JSON] [FILE]\n"
                                    "\n"
                                    "Compiles FILE (default .circleci/config.yml) and prints the processed config:\n"
                                    "plain 2.0 YAML with every job expanded and every parameter substituted, as\n"
                                    "`circleci config process` does. Errors go to stderr as for validate.\n"
                                    "  --pipeline-parameters JSON  values of the config's pipeline parameters,\n"
                                    "                              a JSON object (or @PATH of a file holding one)\n"
                                    "Exit status: 0 valid, 1 invalid, 2 usage error.\n";

static int read_file(const char *path, sp_buf_t *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return -errno;
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        sp_buf_add(out, chunk, got);
        if (out->n > CONFIG_MAX_INPUT) break;
    }
    int rc = ferror(f) ? SP_EIO : 0;
    fclose(f);
    return rc;
}

static int run(int argc, char **argv, bool process)
{
    static const struct option opts[] = {
        {"pipeline-parameters", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'}, {0}};
    const char *cmd = process ? "process" : "validate";
    const char *usage = process ? process_usage : validate_usage;
    const char *params = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': params = optarg; break;
        case 'h': fputs(usage, stdout); return CLI_OK;
        default: fputs(usage, stderr); return CLI_USAGE;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "spool config %s: expected one FILE, got %d arguments\n%s", cmd, argc - optind, usage);
        return CLI_USAGE;
    }
    const char *path = optind < argc ? argv[optind] : ".circleci/config.yml";
    sp_buf_t params_file = {0};
    if (params && params[0] == '@') {
        int rc = read_file(params + 1, &params_file);
        if (rc != 0) {
            fprintf(stderr, "spool config %s: --pipeline-parameters: cannot read %s: %s\n", cmd, params + 1,
                    sp_strerror(rc));
            sp_buf_free(&params_file);
            return CLI_USAGE;
        }
        sp_buf_add(&params_file, "", 1);
        params = (const char *)params_file.p;
    }
    sp_buf_t src = {0};
    int rc = read_file(path, &src);
    if (rc != 0) {
        fprintf(stderr, "spool config %s: cannot read %s: %s\n", cmd, path, sp_strerror(rc));
        sp_buf_free(&src);
        sp_buf_free(&params_file);
        return CLI_FAIL;
    }
    config_input_t in = {.parameters_json = params};
    config_result_t *r;
    rc = config_compile(src.p ? (const char *)src.p : "", src.n, path, &in, &r);
    sp_buf_free(&src);
    sp_buf_free(&params_file);
    if (rc != 0) {
        fprintf(stderr, "spool config %s: %s\n", cmd, sp_strerror(rc));
        return CLI_FAIL;
    }
    int status = CLI_OK;
    if (!r->valid) {
        sp_buf_t b = {0};
        for (size_t i = 0; i < r->nerrors; i++) {
            config_error_format(&r->errors[i], &b);
            sp_buf_addstr(&b, "\n");
        }
        if (r->more_errors) sp_buf_printf(&b, "... and %zu more errors\n", r->more_errors);
        fwrite(b.p, 1, b.n, stderr);
        sp_buf_free(&b);
        fprintf(stderr, "%s: invalid (%zu error%s)\n", path, r->nerrors + r->more_errors,
                r->nerrors + r->more_errors == 1 ? "" : "s");
        status = CLI_FAIL;
    } else if (process) {
        sp_buf_t y = {0};
        if (config_emit_yaml(r, &y) != 0) {
            fprintf(stderr, "spool config process: cannot write YAML\n");
            status = CLI_FAIL;
        } else {
            fwrite(y.p, 1, y.n, stdout);
        }
        sp_buf_free(&y);
    } else {
        printf("valid\n");
    }
    config_result_free(r);
    return status;
}

int cli_config(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(config_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "validate") == 0) return run(argc - 1, argv + 1, false);
    if (strcmp(argv[1], "process") == 0) return run(argc - 1, argv + 1, true);
    fprintf(stderr, "spool config: unknown command \"%s\"\n%s", argv[1], config_usage);
    return CLI_USAGE;
}
