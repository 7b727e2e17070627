/*
 * Runs every registered test (or those named on the command line, by
 * exact name or prefix), each in a forked child with its own temporary
 * directory and a time limit. Prints TAP and ends with a summary line
 * "N passed, M failed". Exit status 0 only if all passed.
 */
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_TESTS    1024
#define TIME_LIMIT_S 120

static struct {
    const char *name;
    t_fn fn;
} tests[MAX_TESTS];
static size_t ntests;

void t_register(const char *name, t_fn fn)
{
    if (ntests < MAX_TESTS) tests[ntests++] = (typeof(tests[0])){name, fn};
}

void t_fail(t_ctx_t *t, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "# %s:%d: ", file, line);
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    fflush(stdout);
    va_end(ap);
    t->failed++;
}

const char *t_path(t_ctx_t *t, const char *leaf)
{
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", t->dir, leaf);
    return b;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) { return remove(path); }

static int cmp_tests(const void *a, const void *b)
{
    return strcmp(((const typeof(tests[0]) *)a)->name, ((const typeof(tests[0]) *)b)->name);
}

static bool selected(const char *name, int argc, char **argv)
{
    if (argc < 2) return true;
    for (int i = 1; i < argc; i++)
        if (strncmp(name, argv[i], strlen(argv[i])) == 0) return true;
    return false;
}

static int run_child(size_t i, const char *dir)
{
    alarm(TIME_LIMIT_S);
    t_ctx_t t = {.dir = dir};
    tests[i].fn(&t);
    long live = atomic_load(&sp_handles_live);
    if (live != 0) t_fail(&t, __FILE__, __LINE__, "%ld handle(s) leaked (opened but not closed)", live);
    fflush(stdout);
    return t.failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        qsort(tests, ntests, sizeof tests[0], cmp_tests);
        for (size_t i = 0; i < ntests; i++) printf("%s\n", tests[i].name);
        return 0;
    }
    qsort(tests, ntests, sizeof tests[0], cmp_tests);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    size_t total = 0;
    for (size_t i = 0; i < ntests; i++) total += selected(tests[i].name, argc, argv);
    printf("TAP version 13\n1..%zu\n", total);
    fflush(stdout);
    int passed = 0, failed = 0, n = 0;
    for (size_t i = 0; i < ntests; i++) {
        if (!selected(tests[i].name, argc, argv)) continue;
        n++;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/spool-test-XXXXXX", tmp);
        if (mkdtemp(dir) == NULL) {
            printf("not ok %d - %s\n# mkdtemp: %s\n", n, tests[i].name, strerror(errno));
            failed++;
            continue;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) _exit(run_child(i, dir));
        int st = 0;
        waitpid(pid, &st, 0);
        bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!ok && WIFSIGNALED(st))
            printf("# killed by signal %d%s\n", WTERMSIG(st), WTERMSIG(st) == SIGALRM ? " (time limit)" : "");
        else if (!ok && WEXITSTATUS(st) != 1)
            printf("# exited with status %d (sanitizer report above?)\n", WEXITSTATUS(st));
        printf("%s %d - %s\n", ok ? "ok" : "not ok", n, tests[i].name);
        fflush(stdout);
        ok ? passed++ : failed++;
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
