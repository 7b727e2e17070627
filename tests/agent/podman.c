#include "podman.h"

#include "agent/agent_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bool write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

bool tp_start(t_ctx_t *t, tp_podman_t *pm)
{
    memset(pm, 0, sizeof *pm);
    pm->pid = -1;
    /* Unix socket paths and conmon's sockets under the runroot must stay
     * short: these go in a short directory of their own. */
    snprintf(pm->dir, sizeof pm->dir, "/tmp/sptp-XXXXXX");
    if (mkdtemp(pm->dir) == NULL) {
        snprintf(pm->why, sizeof pm->why, "mkdtemp: %s", strerror(errno));
        pm->dir[0] = 0;
        return false;
    }
    snprintf(pm->socket, sizeof pm->socket, "%s/api.sock", pm->dir);
    char *home = sp_xstrdup(t_path(t, "podman"));
    mkdir(home, 0700);
    char *conf = sp_xasprintf("%s/containers.conf", home), *sconf = sp_xasprintf("%s/storage.conf", home);
    /* runc: crun refuses the hybrid cgroup layout of this machine. The
     * rlimits: the default (nofile 1048576) cannot be set here. */
    char *ctext = sp_xasprintf("[containers]\n"
                               "default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n"
                               "[engine]\n"
                               "runtime = \"runc\"\n"
                               "cgroup_manager = \"cgroupfs\"\n"
                               "events_logger = \"file\"\n"
                               "tmp_dir = \"%s/tmp\"\n"
                               "volume_path = \"%s/volumes\"\n"
                               "static_dir = \"%s/libpod\"\n",
                               pm->dir, home, home);
    char *stext =
        sp_xasprintf("[storage]\ndriver = \"vfs\"\nrunroot = \"%s/run\"\ngraphroot = \"%s/graph\"\n", pm->dir, home);
    bool ok = write_file(conf, ctext) && write_file(sconf, stext);
    free(ctext);
    free(stext);
    if (!ok) {
        snprintf(pm->why, sizeof pm->why, "cannot write %s", conf);
        goto out;
    }
    setenv("CONTAINERS_CONF", conf, 1);
    setenv("CONTAINERS_STORAGE_CONF", sconf, 1);

    /* The image: busybox-static with a link for every applet. */
    char *cmd =
        sp_xasprintf("set -e; command -v podman >/dev/null || { echo 'podman is not installed'; exit 1; }\n"
                     "bb=$(command -v busybox) || { echo 'busybox is not installed'; exit 1; }\n"
                     "r='%s/rootfs'; mkdir -p \"$r/bin\" \"$r/etc\" \"$r/root\" \"$r/tmp\"; chmod 1777 \"$r/tmp\"\n"
                     "cp \"$bb\" \"$r/bin/busybox\"\n"
                     "for a in $(\"$bb\" --list); do [ \"$a\" = busybox ] || ln -sf busybox \"$r/bin/$a\"; done\n"
                     "printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/:/bin/sh\\n' "
                     ">\"$r/etc/passwd\"\n"
                     "printf 'root:x:0:\\nnogroup:x:65534:\\n' >\"$r/etc/group\"\n"
                     "tar -C \"$r\" -cf '%s/busybox.tar' .\n"
                     "podman import -q '%s/busybox.tar' " TP_IMAGE " >/dev/null\n",
                     home, home, home);
    char *log = sp_xasprintf("%s/setup.log", home);
    char *full = sp_xasprintf("(%s) >'%s' 2>&1", cmd, log);
    int st = system(full);
    free(cmd);
    free(full);
    if (st != 0) {
        FILE *f = fopen(log, "r");
        size_t n = f ? fread(pm->why, 1, sizeof pm->why - 1, f) : 0;
        pm->why[n] = 0;
        if (f) fclose(f);
        if (n == 0) snprintf(pm->why, sizeof pm->why, "building the test image failed (status %d)", st);
        free(log);
        goto out;
    }
    free(log);

    char *slog = sp_xasprintf("%s/service.log", home);
    char *uri = sp_xasprintf("unix://%s", pm->socket);
    pid_t pid = fork();
    if (pid == 0) {
        /* The service must not outlive a test that is killed. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int fd = open(slog, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        execlp("podman", "podman", "system", "service", "--time=0", uri, (char *)NULL);
        _exit(127);
    }
    free(uri);
    pm->pid = pid;
    ok = false;
    for (int i = 0; i < 300 && !ok; i++) {
        sp_buf_t b = {0};
        long status = 0;
        char err[256];
        ok = access(pm->socket, F_OK) == 0 &&
             agent__dk_sync(pm->socket, "GET", "/_ping", NULL, 2000, &status, &b, err, sizeof err) == 0 &&
             status == 200;
        sp_buf_free(&b);
        if (!ok) sleep_ms(50);
    }
    if (!ok) snprintf(pm->why, sizeof pm->why, "podman system service did not answer within 15 s (see %s)", slog);
    free(slog);
out:
    free(home);
    free(conf);
    free(sconf);
    return ok;
}

void tp_stop(tp_podman_t *pm)
{
    if (pm->pid > 0) {
        /* Whatever a failed test left: running containers would keep
         * mounts under the test's directory. */
        sp_buf_t b = {0};
        long status = 0;
        char err[256];
        if (agent__dk_sync(pm->socket, "GET", "/containers/json?all=true", NULL, 10000, &status, &b, err, sizeof err) ==
                0 &&
            status == 200) {
            json_t *o = json_loadb((const char *)b.p, b.n, 0, NULL);
            size_t i;
            json_t *c;
            json_array_foreach (o, i, c) {
                const char *id = json_string_value(json_object_get(c, "Id"));
                if (id == NULL) continue;
                char *path = sp_xasprintf("/containers/%s?force=true", id);
                sp_buf_t r = {0};
                agent__dk_sync(pm->socket, "DELETE", path, NULL, 30000, &status, &r, err, sizeof err);
                sp_buf_free(&r);
                free(path);
            }
            json_decref(o);
        }
        sp_buf_free(&b);
        kill(pm->pid, SIGTERM);
        int st;
        bool gone = false;
        for (int i = 0; i < 100 && !gone; i++) {
            gone = waitpid(pm->pid, &st, WNOHANG) == pm->pid;
            if (!gone) sleep_ms(50);
        }
        if (!gone) {
            kill(pm->pid, SIGKILL);
            waitpid(pm->pid, &st, 0);
        }
        pm->pid = -1;
    }
    if (pm->dir[0]) {
        /* podman leaves a conmon per exec session for 5 minutes after
         * it ends (exit-delay 300, whatever containers.conf says in 4.3);
         * those of this service, found by its private run directory in
         * their arguments, go now. */
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
            char path[300], args[8192];
            snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
            FILE *f = fopen(path, "r");
            if (f == NULL) continue;
            size_t n = fread(args, 1, sizeof args - 1, f);
            fclose(f);
            for (size_t i = 0; i < n; i++)
                if (args[i] == 0) args[i] = ' ';
            args[n] = 0;
            if (strncmp(args, "/usr/bin/conmon ", 16) == 0 && strstr(args, pm->dir) != NULL)
                kill((pid_t)atoi(e->d_name), SIGKILL);
        }
        if (d != NULL) closedir(d);
        agent__rmtree(pm->dir);
        pm->dir[0] = 0;
    }
}

int tp_containers(tp_podman_t *pm, const char *task)
{
    char *filter = sp_xasprintf("{\"label\":[\"spool.task=%s\"]}", task);
    char *esc = hc_escape(filter);
    char *path = sp_xasprintf("/containers/json?all=true&filters=%s", esc);
    sp_buf_t b = {0};
    long status = 0;
    char err[256];
    int n = -1;
    if (agent__dk_sync(pm->socket, "GET", path, NULL, 10000, &status, &b, err, sizeof err) == 0 && status == 200) {
        json_t *o = json_loadb((const char *)b.p, b.n, 0, NULL);
        if (json_is_array(o)) n = (int)json_array_size(o);
        json_decref(o);
    }
    sp_buf_free(&b);
    free(path);
    free(esc);
    free(filter);
    return n;
}
