/* A private podman API service for the docker executor's tests: its own
 * storage (vfs) and run directories inside the test's directory, runc
 * with cgroupfs, the rlimits this machine allows, and a busybox image
 * built here from busybox-static (nothing is pulled). No mocks: the
 * executor talks to the real `podman system service`. */
#ifndef SPOOL_TESTS_AGENT_PODMAN_H
#define SPOOL_TESTS_AGENT_PODMAN_H

#include "test.h"

#include <sys/types.h>

#define TP_IMAGE "localhost/spool-test-busybox:1"

typedef struct {
    char dir[256];    /* short private directory (socket, runroot) */
    char socket[300]; /* the API socket */
    pid_t pid;        /* the service */
    char why[1024];   /* why start failed */
} tp_podman_t;

/* Starts the service and imports TP_IMAGE. false (why says why) when
 * podman or busybox is missing or the service does not come up. */
bool tp_start(t_ctx_t *t, tp_podman_t *pm);
/* Stops the service (SIGTERM, then SIGKILL) and removes its run
 * directory; the storage goes with the test's directory. */
void tp_stop(tp_podman_t *pm);
/* How many containers (running or not) carry the label spool.task=task;
 * -1 if the API does not answer. */
int tp_containers(tp_podman_t *pm, const char *task);

#define NEED_PODMAN(pm)                                                                                                \
    do {                                                                                                               \
        if (!tp_start(t, pm)) {                                                                                        \
            t_fail(t, __FILE__, __LINE__, "podman cannot run here: %s", (pm)->why);                                    \
            tp_stop(pm);                                                                                               \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

#endif
