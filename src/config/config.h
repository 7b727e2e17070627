/*
 * config: the `.circleci/config.yml` compiler. Turns a config of version
 * 2, 2.0 or 2.1 into CircleCI's "2.0 processed config": every job
 * expanded (commands inlined, executors merged into the job, parameters
 * substituted, matrix jobs generated, `when`/`unless` steps resolved),
 * 2.1-only constructs gone. The pipeline engine runs that form; `spool
 * config validate|process` and POST /api/v2/compile-config-with-defaults
 * print it.
 *
 * Also here, so that nothing else re-implements CircleCI's semantics:
 * branch/tag filters, the per-branch plan of workflows and jobs, cron
 * lines of scheduled triggers and `no_output_timeout` durations.
 *
 * Depends on base, libyaml (parsing and emitting), jansson (the output
 * tree) and PCRE2 (the /regex/ filters and `matches`).
 *
 * Threads: every function is pure (no global state) and may run on any
 * thread; a result or plan is used by one thread at a time.
 */
#ifndef SPOOL_CONFIG_H
#define SPOOL_CONFIG_H

#include "../base/base.h"

#include <jansson.h>

/* ---- limits ---------------------------------------------------------------
 * Bounds that keep hostile input from exhausting memory or time. Each is
 * far above what a real config needs; crossing one is a config error. */
#define CONFIG_MAX_INPUT       (16u << 20) /* bytes of YAML */
#define CONFIG_MAX_NODES       1000000     /* YAML nodes after expanding aliases */
#define CONFIG_MAX_OUTPUT      4000000     /* values produced while compiling */
#define CONFIG_MAX_DEPTH       256         /* nesting of YAML collections */
#define CONFIG_MAX_CALL_DEPTH  64          /* commands invoking commands */
#define CONFIG_MAX_MATRIX      1024        /* jobs generated from one matrix */
#define CONFIG_MAX_ERRORS      100         /* errors reported; the rest are counted */
#define CONFIG_MAX_LOGIC_DEPTH 100         /* nesting of and/or/not (CircleCI's own limit) */

/* ---- input ----------------------------------------------------------------- */

/* Pipeline values for `<< pipeline.* >>`. Every pointer is borrowed for
 * the duration of config_compile. A NULL string substitutes as "". */
typedef struct {
    /* Pipeline parameters: a JSON object (borrowed), or JSON text. If both
     * are set the object wins. Values are strings, integers or booleans. */
    const json_t *parameters;
    const char *parameters_json;

    const char *id;         /* pipeline.id (a UUID) */
    int64_t number;         /* pipeline.number */
    const char *git_url;    /* pipeline.project.git_url */
    const char *vcs_type;   /* pipeline.project.type, e.g. "github" */
    const char *branch;     /* pipeline.git.branch */
    const char *tag;        /* pipeline.git.tag */
    const char *revision;   /* pipeline.git.revision */
    const char *base_rev;   /* pipeline.git.base_revision */
    const char *trigger;    /* pipeline.trigger_source, e.g. "webhook" */
    const char *sched_name; /* pipeline.schedule.name */
    const char *sched_id;   /* pipeline.schedule.id */
} config_input_t;

/* ---- result ---------------------------------------------------------------- */

typedef struct {
    char *file;    /* the filename given to config_compile */
    int line, col; /* 1-based; 0 when the error has no place (e.g. --pipeline-parameters) */
    char *path;    /* key path such as "jobs.build.steps[2].run.command"; "" at the top */
    char *message; /* what was expected, in a sentence without a final period */
} config_error_t;

typedef struct {
    bool valid;
    int version; /* 20 (version 2 or 2.0) or 21; 0 when not even that was readable */

    /* Every error, in source order of discovery, at most CONFIG_MAX_ERRORS;
     * more_errors counts those left out. */
    config_error_t *errors;
    size_t nerrors, more_errors;

    /* The processed config (valid only; NULL otherwise), owned by the
     * result. Read-only: equal values in it (the same step in many jobs)
     * are one jansson value referenced from each place, so a caller that
     * changes it changes a json_deep_copy. Shape:
     *   { "version": 2,
     *     "jobs": { "<name>": { docker|machine|macos, resource_class,
     *                           parallelism, environment (object of
     *                           strings), working_directory, shell,
     *                           steps: [ "checkout" | {"<step>": {...}} ],
     *                           ... } },
     *     "workflows": { "version": 2,
     *                    "<wf>": { "jobs": [ "<job>" | {"<job>": {requires,
     *                               context, filters, type, ...}} ],
     *                              "triggers": [...] } } }
     * Steps are normalized: `run: cmd` becomes {"run": {"command": cmd}}, a
     * bare "checkout", "setup_remote_docker" or "add_ssh_keys" stays a
     * string, `deploy` stays `deploy` (a `run` that the engine runs on
     * node 0 only). 2.0 configs keep every job; 2.1 configs keep the jobs
     * their workflows invoke, under the invocation's final name. */
    json_t *processed;

    /* The source text as given (owned, NUL-terminated). */
    char *source;
    size_t source_len;

    void *_priv; /* owns the errors' strings */
} config_result_t;

/* Compiles src (n bytes, need not be NUL-terminated). filename names the
 * file in errors (NULL: ".circleci/config.yml"); in may be NULL.
 *
 * Returns 0 and a result in *out whenever it could compile, whether the
 * config is valid or not (see (*out)->valid and ->errors). Returns
 * SP_EINVAL only for NULL src/out. Caller frees with config_result_free. */
int config_compile(const char *src, size_t n, const char *filename, const config_input_t *in, config_result_t **out);
void config_result_free(config_result_t *r);

/* The processed config as YAML (appended to out), as `circleci config
 * process` prints it. SP_EINVAL when r is not valid. */
int config_emit_yaml(const config_result_t *r, sp_buf_t *out);

/* Appends "file:line:col: path: message" (no newline) to out. */
void config_error_format(const config_error_t *e, sp_buf_t *out);

/* ---- filters and the plan ----------------------------------------------------
 * CircleCI's rules, exactly (see ../shared/reference/circleci/NOTES.md §4):
 *  - `filters.branches` / `filters.tags` each take `only` and `ignore`, a
 *    string or a list. A value written /.../ is a regular expression that
 *    must match the whole name; anything else is compared exactly.
 *  - A branch build: no `branches` filter means every branch; `only` is
 *    checked before `ignore`.
 *  - A tag build runs a job only if the job has a `tags` filter that
 *    admits the tag; the branch filter does not apply to tags.
 * branch or tag may be NULL; when both are given the tag decides. filters
 * may be NULL (no filters). */
bool config_filter_allows(const json_t *filters, const char *branch, const char *tag);

/* One job of a planned workflow. Strings are owned by the plan. */
typedef struct {
    const char *name;      /* the job's name in the workflow (after matrix expansion) */
    const char *job;       /* its key in processed["jobs"]; NULL for an approval job */
    bool approval;         /* type: approval (waits on the API / UI) */
    const char **requires; /* upstream job names that run in this plan */
    size_t nrequires;
    const char **contexts; /* context names, in config order (none: empty) */
    size_t ncontexts;
} config_plan_job_t;

typedef struct {
    const char *name;
    config_plan_job_t *jobs; /* in config order */
    size_t njobs;
} config_plan_workflow_t;

typedef struct {
    config_plan_workflow_t *workflows; /* in config order */
    size_t nworkflows;
    void *_arena;
} config_plan_t;

typedef struct {
    const char *branch; /* the pushed branch, or NULL */
    const char *tag;    /* the pushed tag, or NULL */
    /* false: a push or API trigger, which runs the workflows without
     * `triggers`. true: the cron tick of `workflow`, which runs that
     * workflow if its schedule filter admits branch. */
    bool scheduled;
    const char *workflow;
} config_plan_opts_t;

/* Lists what runs for a push of branch or tag. Jobs a filter excludes are
 * left out. For a branch, a requirement on an excluded job is dropped
 * (it does not block). For a tag, a job whose requirement is excluded is
 * excluded too, which is why tag builds need tag filters on the whole
 * chain. processed is config_result_t.processed (borrowed). Returns 0 or
 * SP_EINVAL for a tree that is not a processed config. Caller frees with
 * config_plan_free. */
int config_plan(const json_t *processed, const config_plan_opts_t *o, config_plan_t **out);
void config_plan_free(config_plan_t *p);

/* ---- helpers ------------------------------------------------------------------- */

/* Parses a duration such as "20m", "1.25h", "5s" or "1h30m" into
 * milliseconds. SP_EINVAL (out untouched) when it is not one. */
int config_parse_duration(const char *s, int64_t *ms);

/* Checks a cron line of a scheduled trigger: five fields (minute, hour,
 * day of month, month, day of week) of `*`, numbers, ranges `a-b`, lists
 * `a,b`, steps `x/n`, and month (JAN-DEC) or day (SUN-SAT) names. Returns
 * 0, or SP_EINVAL with the reason in err. */
int config_cron_check(const char *line, char *err, size_t errlen);

/* Whether value matches pattern as a whole (PCRE2, Java-like syntax).
 * An invalid pattern matches nothing. */
bool config_regex_whole(const char *pattern, const char *value);

#endif
