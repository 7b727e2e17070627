/* The Linux sandbox: every step process runs under bubblewrap with
 *
 *   --ro-bind / /            the whole system, read-only
 *   --dev /dev --proc /proc  a minimal /dev and a /proc of its own
 *   --bind TMP /tmp          the task's private /tmp (kept across steps)
 *   --bind TASK TASK         the task directory, writable, at its own path
 *   --ro-bind REPO REPO      for a checkout from a local repository under
 *                            /tmp, that repository, which the private /tmp
 *                            would hide
 *   --unshare-pid            an own PID namespace: when its init dies the
 *                            kernel kills every process in it, which is
 *                            how a step's whole tree is killed
 *   --die-with-parent        ... and the init dies if bwrap does
 *   --new-session            no access to the agent's terminal
 *   --info-fd N              tells us the init's pid, to kill it
 *
 * The network is shared (checkout and package downloads need it). Other
 * platforms have no sandbox here: the probe says so and the agent needs
 * --no-sandbox there (issue 5 brings their executors). */
#include "agent_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void agent__argv_free(char **argv)
{
    if (argv == NULL) return;
    for (char **a = argv; *a; a++) free(*a);
    free(argv);
}

pid_t agent__sandbox_info_pid(const char *json, size_t n)
{
    static const char key[] = "\"child-pid\"";
    const char *end = json + n;
    for (const char *p = json; p + sizeof key - 1 <= end; p++) {
        if (memcmp(p, key, sizeof key - 1) != 0) continue;
        p += sizeof key - 1;
        while (p < end && (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n')) p++;
        long v = 0;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9' && v < 1L << 30) v = v * 10 + (*p++ - '0');
        /* The number is complete only once something follows it. */
        return p > d && p < end && v > 1 ? (pid_t)v : 0;
    }
    return 0;
}

#ifdef __linux__

char **agent__sandbox_argv(const char *bwrap, const char *task_dir, const char *tmp_dir, const char *ro_extra,
                           const char *cwd, char *const *cmd, int info_fd)
{
    size_t ncmd = 0;
    while (cmd[ncmd]) ncmd++;
    char **a = sp_xcalloc(40 + ncmd, sizeof *a);
    size_t i = 0;
#define ARG(s) (a[i++] = sp_xstrdup(s))
    ARG(bwrap);
    ARG("--ro-bind"), ARG("/"), ARG("/");
    ARG("--dev"), ARG("/dev");
    ARG("--proc"), ARG("/proc");
    ARG("--bind"), ARG(tmp_dir), ARG("/tmp");
    ARG("--bind"), ARG(task_dir), ARG(task_dir);
    if (ro_extra != NULL) ARG("--ro-bind"), ARG(ro_extra), ARG(ro_extra);
    ARG("--unshare-pid");
    ARG("--die-with-parent");
    ARG("--new-session");
    if (info_fd >= 0) {
        ARG("--info-fd");
        a[i++] = sp_xasprintf("%d", info_fd);
    }
    ARG("--chdir"), ARG(cwd);
    ARG("--");
    for (size_t k = 0; k < ncmd; k++) ARG(cmd[k]);
#undef ARG
    a[i] = NULL;
    return a;
}

static char *find_on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (path == NULL || *path == 0) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        if (n > 0 && path[0] == '/') {
            char *cand = sp_xasprintf("%.*s/%s", (int)n, path, name);
            if (access(cand, X_OK) == 0) return cand;
            free(cand);
        }
        path += n + (colon ? 1 : 0);
    }
    return NULL;
}

int agent__sandbox_probe(char **out, char *err, size_t errlen)
{
    char *bwrap = find_on_path("bwrap");
    if (bwrap == NULL) {
        snprintf(err, errlen,
                 "bubblewrap (bwrap) is not installed or not on PATH, so steps cannot be sandboxed; install it "
                 "(apt-get install bubblewrap) or pass --no-sandbox to run steps unconfined");
        return SP_EIO;
    }
    /* A trial sandbox like the real ones (without the binds that need a
     * task), so that a kernel without unprivileged user namespaces or a
     * seccomp profile forbidding them is found now, not in every job. */
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "cannot test bubblewrap: pipe: %s", strerror(errno));
        free(bwrap);
        return SP_EIO;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
    char *argv[] = {bwrap,
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--unshare-pid",
                    "--die-with-parent",
                    "--new-session",
                    "--",
                    "/bin/sh",
                    "-c",
                    "exit 0",
                    NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, bwrap, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    char msg[512];
    size_t mn = 0;
    if (rc == 0) {
        ssize_t r;
        while (mn < sizeof msg - 1 && (r = read(pfd[0], msg + mn, sizeof msg - 1 - mn)) != 0) {
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) break;
            mn += (size_t)r;
        }
    }
    close(pfd[0]);
    msg[mn] = 0;
    while (mn > 0 && (msg[mn - 1] == '\n' || msg[mn - 1] == ' ')) msg[--mn] = 0;
    if (rc != 0) {
        snprintf(err, errlen, "cannot run %s: %s; fix it or pass --no-sandbox to run steps unconfined", bwrap,
                 strerror(rc));
        free(bwrap);
        return SP_EIO;
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(err, errlen,
                 "bubblewrap (%s) cannot create a sandbox here (%s); enable unprivileged user namespaces or make "
                 "bwrap setuid, or pass --no-sandbox to run steps unconfined",
                 bwrap, mn ? msg : "it failed without a message");
        free(bwrap);
        return SP_EIO;
    }
    *out = bwrap;
    return 0;
}

#else

char **agent__sandbox_argv(const char *bwrap, const char *task_dir, const char *tmp_dir, const char *ro_extra,
                           const char *cwd, char *const *cmd, int info_fd)
{
    return NULL;
}

int agent__sandbox_probe(char **out, char *err, size_t errlen)
{
    snprintf(err, errlen, "this platform has no step sandbox yet; pass --no-sandbox to run steps unconfined");
    return SP_EIO;
}

#endif
