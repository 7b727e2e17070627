/* Private to src/config/: the compiler's state, shared by compile.c
 * (elements, jobs, workflows) and steps.c (steps, parameters, logic). */
#ifndef SPOOL_CONFIG_COMPILE_INTERNAL_H
#define SPOOL_CONFIG_COMPILE_INTERNAL_H

#include "config_internal.h"

/* A key path under construction ("jobs.build.steps[2]"); segments are
 * pushed and popped as the compiler walks. */
typedef struct {
    char s[768];
    size_t n;
} cc_path_t;

size_t cc_push_key(cc_path_t *p, const char *k);
size_t cc_push_idx(cc_path_t *p, size_t i);
static inline void cc_pop(cc_path_t *p, size_t mark)
{
    p->n = mark;
    p->s[mark] = 0;
}

/* A named element: a job, command or executor, possibly from an inline
 * orb (prefix "orb/"). */
typedef struct {
    const char *name;   /* full name, e.g. "build" or "node/test" */
    const char *prefix; /* "" or the orb's "name/" for lookups from inside */
    const char *path;   /* where it is defined, e.g. "orbs.node.jobs.test" */
    cfg__node_t *def;
    cfg__node_t *key; /* for positions */
} cc_elem_t;

typedef struct {
    cc_elem_t *v;
    size_t n, cap;
    /* open addressing over v by name */
    int32_t *slots;
    size_t nslots;
} cc_table_t;

/* What `<< ... >>` may refer to where a value is substituted. */
typedef struct {
    cfg__node_t *params; /* map of the element's bound parameters, or NULL */
    cfg__node_t *matrix; /* map of the matrix combination, or NULL */
    const char *what;    /* "job build" etc. for messages */
} cc_scope_t;

typedef struct {
    cfg__arena_t *a;
    cfg__errs_t *errs;
    int version; /* 20 or 21 */
    const config_input_t *in;
    cfg__node_t *pipeline_params; /* map name -> value */
    cc_table_t jobs, commands, executors;
    size_t budget; /* values produced or visited; bounded by CONFIG_MAX_OUTPUT */
    bool stop;     /* the budget ran out: unwind */
    /* Steps expanded from a node of the parsed config (not from a
     * substituted copy) depend on nothing but that node: their JSON is
     * kept and shared (reference counted) by every job that expands the
     * node again, e.g. every job of a matrix. */
    struct {
        const char *lo, *hi;
    } stable[64];
    size_t nstable;
    const void **ckeys;
    json_t **cvals;
    size_t ccap, cn;
    /* Every value of the processed tree, once (see share.c). */
    json_t **svals;
    uint32_t *shash;
    size_t scap, sn;
    const cc_elem_t *calls[CONFIG_MAX_CALL_DEPTH];
    int ncalls;
    cc_path_t path;
} cc_t;

/* Marks everything allocated so far as the parsed config (see stable). */
void cc_mark_stable(cc_t *cc);
void cc_cache_free(cc_t *cc);

void cc_err(cc_t *cc, const cfg__node_t *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Counts n produced values; false (and an error once) past the budget. */
bool cc_spend(cc_t *cc, const cfg__node_t *at, size_t n);

cc_elem_t *cc_lookup(cc_table_t *t, const char *prefix, const char *name);

cfg__node_t *cc_str(cc_t *cc, const cfg__node_t *pos, const char *s, size_t n);
/* The text of a scalar as it would be substituted into a string. */
bool cc_scalar_text(const cfg__node_t *n, char *buf, size_t bufn, const char **s, size_t *len);
bool cc_values_equal(const cfg__node_t *a, const cfg__node_t *b);

/* Substitutes `<< parameters.x >>`, `<< pipeline.* >>` and `<< matrix.x >>`
 * in a copy of n (2.1 only; 2.0 configs are returned as they are).
 * skip names a top-level key of n to leave out (e.g. "parameters"). */
cfg__node_t *cc_subst(cc_t *cc, cfg__node_t *n, const cc_scope_t *sc, const char *skip);

/* Binds arguments to declared parameters: the result maps every declared
 * name to its value. ignore lists argument keys that are not parameters
 * (NULL-terminated). Reports errors; returns NULL if any. */
cfg__node_t *cc_bind(cc_t *cc, const cfg__node_t *decls, const cfg__node_t *args, const cfg__node_t *at,
                     const char *what, const char *const *ignore);
/* Checks a `parameters:` declaration map (of a job, command or executor;
 * pipeline = true for top-level pipeline parameters). */
bool cc_check_decls(cc_t *cc, const cfg__node_t *decls, bool pipeline);
/* Checks one value against a declaration; reports at `at`. */
bool cc_check_value(cc_t *cc, const cfg__node_t *decl, const char *name, const cfg__node_t *v, const cfg__node_t *at,
                    const char *what);

/* Evaluates a logic statement (when/unless). *ok is false after an error. */
bool cc_logic(cc_t *cc, const cfg__node_t *n, int depth, bool *ok);

/* Expands a list of steps (or one step) into out (a JSON array): commands
 * inlined, when/unless resolved, built-in steps checked and normalized.
 * prefix is the orb prefix for command lookups. */
void cc_steps(cc_t *cc, const cfg__node_t *steps, const char *prefix, json_t *out);

/* fn(cc, n), or the JSON it gave before for the same node and kind (1..7)
 * when n is part of the parsed config: shared, so never modified. */
json_t *cc_cached(cc_t *cc, const cfg__node_t *n, int kind, json_t *(*fn)(cc_t *, const cfg__node_t *));

/* Takes v and returns an equal value that is shared with the rest of the
 * processed tree (v itself, or v freed and a reference to the equal one).
 * Returns NULL for NULL. The result must not be modified. */
json_t *cc_share(cc_t *cc, json_t *v);
/* json_stringn_nocheck(s, n), shared. */
json_t *cc_share_str(cc_t *cc, const char *s, size_t n);
/* The object of n keys (copied) and values (taken; each already shared),
 * in that order, shared. */
json_t *cc_share_obj(cc_t *cc, const char *const *keys, json_t **vals, size_t n);
void cc_share_free(cc_t *cc);

/* Normalizes an `environment` value into a JSON object of strings
 * (possibly shared: copy before changing it). */
json_t *cc_env(cc_t *cc, const cfg__node_t *v);

/* Checks the keys of a map against a list of allowed keys; reports each
 * unknown key. Returns false if any. */
bool cc_known_keys(cc_t *cc, const cfg__node_t *map, const char *const *keys, const char *what);

/* Type checks that report "expected ..., got ..." at the node and path. */
bool cc_want(cc_t *cc, const cfg__node_t *v, int kind, const char *what);
bool cc_want_str_list(cc_t *cc, const cfg__node_t *v, bool allow_single);
json_t *cc_json(cc_t *cc, const cfg__node_t *n);

#endif
