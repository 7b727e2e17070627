/*
 * bench-docker: what the docker executor adds to a task, against a real
 * Docker Engine API (Docker, or `podman system service`).
 *
 * Each round runs, interleaved, the same one-step task (`true`) with the
 * shell executor (bubblewrap unless --no-sandbox), with the docker
 * executor and one image, and with a primary plus one service container.
 * The executor runs for real; its results go to a sink that drops them.
 * The figure is the wall time of agent__exec_run: task directory, spin
 * up (inspect, create, start, the bash probe), the step (an exec), the
 * teardown (every container removed) and the task directory's removal.
 *
 * Usage: bench-bench_docker --socket PATH --image IMAGE [--rounds N]
 *                           [--no-sandbox] [--dir DIR]
 *
 * The image must exist locally and have /bin/sh (busybox will do). With
 * podman, for instance:
 *   podman import busybox-rootfs.tar localhost/bench:1
 *   podman system service --time=0 unix:///tmp/bench.sock &
 *   zig-out/bin/bench-bench_docker --socket /tmp/bench.sock --image localhost/bench:1
 */
#include "agent/agent_internal.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void n_started(void *arg, int step, int index, const char *name, const char *bash, int64_t at_ms) {}
static bool n_output(void *arg, int step, int index, uint32_t seq, sp_buf_t *chunk) { return false; }
static void n_finished(void *arg, int step, int index, const char *status, int code, int64_t at_ms) {}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs one task; returns its wall time in ms, or -1 if it failed. */
static double run_once(const char *json, const agent__exec_opts_t *o)
{
    char err[512];
    agent__task_t *task;
    if (agent__task_parse(json, strlen(json), &task, err, sizeof err) != 0) {
        fprintf(stderr, "bad task: %s\n", err);
        return -1;
    }
    agent__sink_t sink = {.step_started = n_started, .output = n_output, .step_finished = n_finished};
    agent__exec_t *x;
    if (agent__exec_new(&x, o, task, &sink) != 0) {
        agent__task_free(task);
        return -1;
    }
    int64_t t0 = sp_mono_ns();
    const char *msg = NULL;
    agent__status_t st = agent__exec_run(x, &msg);
    double ms = (double)(sp_mono_ns() - t0) / 1e6;
    if (st != AGENT__SUCCESS) fprintf(stderr, "task failed: %s\n", msg ? msg : agent__status_name(st));
    agent__exec_free(x);
    agent__task_free(task);
    return st == AGENT__SUCCESS ? ms : -1;
}

int main(int argc, char **argv)
{
    const char *sock = NULL, *image = NULL, *dir = NULL;
    int rounds = 10;
    bool no_sandbox = false;
    static const struct option opts[] = {{"socket", required_argument, 0, 's'}, {"image", required_argument, 0, 'i'},
                                         {"rounds", required_argument, 0, 'r'}, {"no-sandbox", no_argument, 0, 'n'},
                                         {"dir", required_argument, 0, 'd'},    {0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': sock = optarg; break;
        case 'i': image = optarg; break;
        case 'r': rounds = atoi(optarg); break;
        case 'n': no_sandbox = true; break;
        case 'd': dir = optarg; break;
        default: return 2;
        }
    }
    if (sock == NULL || image == NULL || rounds < 1) {
        fprintf(stderr, "usage: bench-bench_docker --socket PATH --image IMAGE [--rounds N] [--no-sandbox]\n");
        return 2;
    }
    char tmpl[] = "/tmp/bench-docker-XXXXXX";
    char *work = dir ? (char *)dir : mkdtemp(tmpl);
    if (work == NULL) return 1;
    char *bwrap = NULL, err[512];
    if (!no_sandbox && agent__sandbox_probe(&bwrap, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const char *step = "\"steps\":[{\"id\":101,\"type\":\"run\",\"command\":\"true\"}]}";
    char *shell = sp_xasprintf("{\"task_id\":\"b-shell\",\"lease\":\"l\",%s", step);
    char *one = sp_xasprintf("{\"task_id\":\"b-one\",\"lease\":\"l\",\"executor\":{\"type\":\"docker\",\"images\":"
                             "[{\"image\":\"%s\"}]},%s",
                             image, step);
    char *two = sp_xasprintf("{\"task_id\":\"b-two\",\"lease\":\"l\",\"executor\":{\"type\":\"docker\",\"images\":"
                             "[{\"image\":\"%s\"},{\"image\":\"%s\",\"command\":[\"sleep\",\"1000\"]}]},%s",
                             image, image, step);
    agent__exec_opts_t o = {.work_dir = work, .bwrap = bwrap, .docker_socket = sock};
    double *t[3];
    for (int k = 0; k < 3; k++) t[k] = calloc((size_t)rounds, sizeof(double));
    const char *json[3] = {shell, one, two};
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            t[k][r] = run_once(json[k], &o);
            if (t[k][r] < 0) return 1;
        }
    }
    const char *name[3] = {"shell executor (one step)", "docker, primary only", "docker, primary + service"};
    printf("%d rounds, median / min / max wall time per task (ms)\n", rounds);
    double med[3];
    for (int k = 0; k < 3; k++) {
        qsort(t[k], (size_t)rounds, sizeof(double), cmp_d);
        med[k] = t[k][rounds / 2];
        printf("  %-28s %8.1f %8.1f %8.1f\n", name[k], med[k], t[k][0], t[k][rounds - 1]);
    }
    printf("container overhead per task: %.1f ms (one container), %.1f ms (two)\n", med[1] - med[0], med[2] - med[0]);
    for (int k = 0; k < 3; k++) free(t[k]);
    free(shell), free(one), free(two), free(bwrap);
    if (dir == NULL) rmdir(work);
    return 0;
}
