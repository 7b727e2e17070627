/*
 * reactors: side effects driven by the log. They run outside the writer
 * and the HTTP loops, learn of new events from log notifications, and
 * report back through the engine as commands. They must be idempotent:
 * after a crash they may see an event again (the engine refuses a second
 * result for the same pipeline).
 *
 * The config reactor: for each new pipeline, keeps a mirror of the
 * project's repository (libgit2), reads .circleci/config.yml at the
 * pushed revision, compiles it, and reports the result or the error
 * (CircleCI's types "config" and "config-fetch").
 *
 * Threads: open/close on one thread; the reactor runs its own.
 */
#ifndef SPOOL_REACTORS_H
#define SPOOL_REACTORS_H

#include "../ingest/engine.h"

typedef struct reactor_config reactor_config_t;

typedef struct {
    log_t *log;
    proj_t *proj;
    engine_t *engine;
    secrets_t *secrets;
    const char *mirrors_dir; /* <data>/mirrors */
} reactor_config_opts_t;

int reactor_config_open(reactor_config_t **out, const reactor_config_opts_t *o, char *errbuf, size_t errlen);
/* Stops after the fetch in progress. */
void reactor_config_close(reactor_config_t *r);

/* Reads .circleci/config.yml of url at revision (or at the head of
 * branch/tag when revision is NULL or empty) through a mirror in dir.
 * On success *source is the file (caller frees), revision_out the commit
 * and subject/body its message (caller frees). On failure returns
 * SP_ENOTFOUND (no such file: a "config" error) or another code (a
 * "config-fetch" error) with the reason in err. Exposed for tests. */
int reactor_config_fetch(const char *dir, const char *url, const char *token, const char *branch, const char *tag,
                         const char *revision, char **source, char revision_out[41], char **subject, char **body,
                         char *err, size_t errlen);

#endif
