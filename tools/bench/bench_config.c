/*
 * bench-config: the config compiler benchmarks of issue 4.
 *
 *   1. a 2.1 config of about 3,000 lines: 40 jobs, 10 commands, a matrix
 *      of 24, heavy parameter use (target: under 20 ms)
 *   2. a 1 MB config of the same shape with more jobs (target: under 100 ms)
 *
 * Each config is generated in memory, compiled once to check it is
 * valid, then compiled N times: the best and the median time are
 * reported. Peak memory is measured in a forked child per config: the
 * child's peak RSS after one compile minus its peak RSS before it
 * (getrusage), against the target of 20 times the input size.
 *
 * Usage: bench-config [--quick]   (--quick: fewer rounds)
 * Lines starting with "target" are the verdicts.
 */
#include "config/config.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* A config with `jobs` jobs (each ~70 lines) and 10 commands. */
static void gen(sp_buf_t *b, int jobs)
{
    sp_buf_addstr(b, "version: 2.1\n"
                     "parameters:\n"
                     "  deploy: {type: boolean, default: false}\n"
                     "  region: {type: enum, enum: [eu, us, ap], default: eu}\n"
                     "  image-tag: {type: string, default: \"2024.01\"}\n"
                     "  shards: {type: integer, default: 4}\n"
                     "executors:\n");
    for (int e = 0; e < 3; e++)
        sp_buf_printf(b,
                      "  exec%d:\n"
                      "    parameters:\n"
                      "      tag: {type: string, default: << pipeline.parameters.image-tag >>}\n"
                      "      size: {type: enum, enum: [small, medium, large], default: medium}\n"
                      "    docker:\n"
                      "      - image: cimg/base:<< parameters.tag >>\n"
                      "        environment: {REGION: << pipeline.parameters.region >>}\n"
                      "      - image: postgres:15\n"
                      "        name: db%d\n"
                      "    resource_class: << parameters.size >>\n"
                      "    working_directory: ~/project\n"
                      "    environment:\n"
                      "      EXECUTOR: exec%d\n",
                      e, e, e);
    sp_buf_addstr(b, "commands:\n");
    for (int c = 0; c < 10; c++) {
        sp_buf_printf(b,
                      "  cmd%d:\n"
                      "    description: command number %d\n"
                      "    parameters:\n"
                      "      target: {type: string, default: all}\n"
                      "      verbose: {type: boolean, default: false}\n"
                      "      retries: {type: integer, default: 2}\n"
                      "      extra: {type: steps, default: []}\n"
                      "    steps:\n"
                      "      - run:\n"
                      "          name: make << parameters.target >> (%d)\n"
                      "          command: |\n"
                      "            for i in $(seq << parameters.retries >>); do\n"
                      "              make << parameters.target >> && break\n"
                      "            done\n"
                      "          no_output_timeout: 20m\n"
                      "      - when:\n"
                      "          condition: << parameters.verbose >>\n"
                      "          steps:\n"
                      "            - run: echo verbose << parameters.target >>\n"
                      "      - << parameters.extra >>\n"
                      "      - save_cache:\n"
                      "          key: v1-cmd%d-{{ checksum \"go.sum\" }}-<< parameters.target >>\n"
                      "          paths: [~/.cache/cmd%d]\n"
                      "      - restore_cache:\n"
                      "          keys: [\"v1-cmd%d-{{ .Branch }}\", v1-cmd%d-]\n",
                      c, c, c, c, c, c, c);
        /* Commands call commands, one level (cmd1..cmd9 call cmd0). */
        if (c > 0) sp_buf_addstr(b, "      - cmd0: {target: nested-<< parameters.target >>}\n");
    }
    sp_buf_addstr(b, "jobs:\n");
    for (int j = 0; j < jobs; j++) {
        sp_buf_printf(b,
                      "  job%d:\n"
                      "    parameters:\n"
                      "      os: {type: string, default: linux}\n"
                      "      version: {type: string, default: \"1.0\"}\n"
                      "      arch: {type: enum, enum: [amd64, arm64], default: amd64}\n"
                      "      run-extra: {type: boolean, default: true}\n"
                      "      size: {type: enum, enum: [small, medium, large], default: medium}\n"
                      "    executor: {name: exec%d, size: << parameters.size >>}\n"
                      "    parallelism: << pipeline.parameters.shards >>\n"
                      "    environment:\n"
                      "      JOB: job%d\n"
                      "      OS: << parameters.os >>\n"
                      "      VERSION: << parameters.version >>\n"
                      "    steps:\n"
                      "      - checkout\n"
                      "      - attach_workspace: {at: /tmp/ws}\n"
                      "      - cmd%d:\n"
                      "          target: build-<< parameters.os >>-<< parameters.arch >>\n"
                      "          verbose: << parameters.run-extra >>\n"
                      "          extra:\n"
                      "            - run: echo extra for job%d << parameters.version >>\n"
                      "      - cmd%d: {target: test, retries: 3}\n"
                      "      - run:\n"
                      "          name: report << parameters.os >> << parameters.version >>\n"
                      "          command: ./report.sh << pipeline.git.branch >> << pipeline.number >>\n"
                      "          environment: {ARCH: << parameters.arch >>}\n"
                      "      - unless:\n"
                      "          condition: << pipeline.parameters.deploy >>\n"
                      "          steps:\n"
                      "            - run: echo not deploying job%d\n"
                      "      - store_test_results: {path: test-results/job%d}\n"
                      "      - store_artifacts: {path: out/job%d, destination: job%d}\n"
                      "      - persist_to_workspace: {root: ., paths: [out/job%d]}\n"
                      "      - run:\n"
                      "          name: lint << parameters.os >>\n"
                      "          command: |\n"
                      "            make lint OS=<< parameters.os >> ARCH=<< parameters.arch >>\n"
                      "            make vet VERSION=<< parameters.version >>\n"
                      "          working_directory: ~/project/job%d\n"
                      "          when: always\n"
                      "      - when:\n"
                      "          condition:\n"
                      "            and:\n"
                      "              - << parameters.run-extra >>\n"
                      "              - equal: [main, << pipeline.git.branch >>]\n"
                      "              - not: << pipeline.parameters.deploy >>\n"
                      "          steps:\n"
                      "            - cmd%d: {target: extra-<< parameters.version >>}\n"
                      "            - run: echo << parameters.os >>/<< parameters.arch >>/<< parameters.version >>\n"
                      "      - run:\n"
                      "          name: package job%d\n"
                      "          command: |\n"
                      "            tar czf job%d-<< parameters.os >>.tgz out/job%d\n"
                      "            sha256sum job%d-<< parameters.os >>.tgz > job%d.sha256\n"
                      "          environment:\n"
                      "            PKG_OS: << parameters.os >>\n"
                      "            PKG_ARCH: << parameters.arch >>\n"
                      "            PKG_VERSION: << parameters.version >>\n"
                      "      - store_artifacts:\n"
                      "          path: job%d-<< parameters.os >>.tgz\n"
                      "          destination: packages/job%d\n"
                      "      - save_cache:\n"
                      "          key: v1-job%d-{{ .Revision }}\n"
                      "          paths: [out/job%d]\n",
                      j, j % 3, j, j % 10, j, (j + 3) % 10, j, j, j, j, j, j, (j + 5) % 10, j, j, j, j, j, j, j, j, j);
    }
    sp_buf_addstr(b, "workflows:\n  main:\n    jobs:\n");
    /* a matrix of 24 (4 x 3 x 2) */
    sp_buf_addstr(b, "      - job0:\n"
                     "          matrix:\n"
                     "            parameters:\n"
                     "              os: [linux, macos, windows, bsd]\n"
                     "              version: [\"1.0\", \"2.0\", \"3.0\"]\n"
                     "              arch: [amd64, arm64]\n");
    for (int j = 1; j < jobs; j++) {
        sp_buf_printf(b,
                      "      - job%d:\n"
                      "          os: linux-<< pipeline.parameters.region >>\n"
                      "          requires: [%s%d]\n"
                      "          context: [ctx%d]\n"
                      "          filters: {branches: {ignore: [/wip-.*/]}}\n",
                      j, j == 1 ? "job" : "job", j == 1 ? 0 : j - 1, j % 4);
    }
}

static int cmp_ns(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static const config_input_t input = {.id = "00000000-0000-0000-0000-000000000001",
                                     .number = 1234,
                                     .branch = "main",
                                     .revision = "0123456789abcdef",
                                     .git_url = "https://github.com/acme/app",
                                     .vcs_type = "github"};

static long peak_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t fl = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0) v = atol(line + fl);
    if (f) fclose(f);
    return v;
}

/* Peak memory of one compile, in bytes, measured in a child: free heap is
 * given back to the kernel first (so that the compile cannot reuse pages
 * that are already counted), the kernel's peak-RSS mark is reset, and the
 * peak after the compile is compared with the RSS before it. */
static long peak_bytes(const sp_buf_t *src)
{
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < src->n; i += 4096) sum += src->p[i];
        malloc_trim(0);
        FILE *cr = fopen("/proc/self/clear_refs", "w");
        if (cr) {
            fputs("5", cr);
            fclose(cr);
        }
        long before = status_kb("VmRSS:");
        config_result_t *r;
        config_compile((const char *)src->p, src->n, "bench.yml", &input, &r);
        long after = status_kb("VmHWM:");
        if (cr == NULL) after = peak_kb(); /* no reset available: an upper bound */
        config_result_free(r);
        long d = (after - before) * 1024;
        ssize_t w = write(fds[1], &d, sizeof d);
        (void)w;
        _exit(0);
    }
    close(fds[1]);
    long d = -1;
    ssize_t got = read(fds[0], &d, sizeof d);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return got == (ssize_t)sizeof d ? d : -1;
}

static int bench(const char *name, int jobs_or_bytes, bool by_size, int rounds, double target_ms)
{
    sp_buf_t src = {0};
    int jobs = jobs_or_bytes;
    if (by_size) {
        /* Grow the job count until the text reaches the size. */
        for (jobs = 40;; jobs += 20) {
            src.n = 0;
            gen(&src, jobs);
            if (src.n >= (size_t)jobs_or_bytes) break;
        }
    } else {
        gen(&src, jobs);
    }
    size_t lines = 0;
    for (size_t i = 0; i < src.n; i++) lines += src.p[i] == '\n';
    config_result_t *r;
    if (config_compile((const char *)src.p, src.n, "bench.yml", &input, &r) != 0 || !r->valid) {
        fprintf(stderr, "bench-config: the generated config is invalid\n");
        for (size_t i = 0; r && i < r->nerrors && i < 5; i++) {
            sp_buf_t e = {0};
            config_error_format(&r->errors[i], &e);
            fprintf(stderr, "  %.*s\n", (int)e.n, (const char *)e.p);
            sp_buf_free(&e);
        }
        config_result_free(r);
        sp_buf_free(&src);
        return 1;
    }
    size_t njobs = json_object_size(json_object_get(r->processed, "jobs"));
    sp_buf_t y = {0};
    config_emit_yaml(r, &y);
    config_result_free(r);
    int64_t *ns = sp_xcalloc((size_t)rounds, sizeof *ns);
    for (int i = 0; i < rounds; i++) {
        int64_t t0 = sp_mono_ns();
        config_compile((const char *)src.p, src.n, "bench.yml", &input, &r);
        ns[i] = sp_mono_ns() - t0;
        config_result_free(r);
    }
    qsort(ns, (size_t)rounds, sizeof *ns, cmp_ns);
    double best = (double)ns[0] / 1e6, median = (double)ns[rounds / 2] / 1e6;
    long peak = peak_bytes(&src);
    printf("%s: %zu bytes, %zu lines, %d jobs defined, %zu jobs after expansion, processed YAML %zu bytes\n", name,
           src.n, lines, jobs, njobs, y.n);
    printf("  compile: best %.2f ms, median %.2f ms over %d rounds\n", best, median, rounds);
    printf("  peak memory of one compile: %.1f MB = %.1fx the input\n", (double)peak / 1e6,
           (double)peak / (double)src.n);
    printf("target  %-50s %8.2f ms <= %.0f ms  %s\n", name, median, target_ms, median <= target_ms ? "MET" : "MISSED");
    printf("target  %-50s %8.2fx <= 20x  %s\n", "peak memory / input size", (double)peak / (double)src.n,
           (double)peak <= 20.0 * (double)src.n ? "MET" : "MISSED");
    free(ns);
    sp_buf_free(&y);
    sp_buf_free(&src);
    return 0;
}

int main(int argc, char **argv)
{
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    if (argc > 1 && !quick) {
        fprintf(stderr, "usage: bench-config [--quick]\n");
        return 2;
    }
    int rounds = quick ? 5 : 50;
    int rc = bench("3,000-line 2.1 config (40 jobs, 10 commands, matrix 24)", 40, false, rounds, 20);
    rc |= bench("1 MB 2.1 config", 1 << 20, true, quick ? 3 : 20, 100);
    return rc;
}
