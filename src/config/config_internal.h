/* Private to src/config/: the node tree, its arena and the error list. */
#ifndef SPOOL_CONFIG_INTERNAL_H
#define SPOOL_CONFIG_INTERNAL_H

#include "config.h"

/* ---- arena ------------------------------------------------------------------
 * Every node and string of one compilation lives in one arena, freed at
 * once: the compiler copies and rewrites subtrees freely and never frees
 * a single one. */
typedef struct cfg__chunk cfg__chunk_t;
typedef struct {
    cfg__chunk_t *head;
    size_t used, cap;    /* of head */
    size_t total;        /* bytes taken from the allocator */
    cfg__chunk_t *spare; /* released chunks, reused before new ones */
} cfg__arena_t;

void *cfg__alloc(cfg__arena_t *a, size_t n); /* zeroed, 8-byte aligned */
char *cfg__strndup(cfg__arena_t *a, const char *s, size_t n);
void cfg__arena_free(cfg__arena_t *a);
/* Everything allocated after a mark is freed by the release: scratch
 * space for work whose results are copied out (e.g. one job's JSON). */
typedef struct {
    cfg__chunk_t *head;
    size_t used, cap, total;
} cfg__mark_t;
cfg__mark_t cfg__arena_mark(const cfg__arena_t *a);
/* Calls fn for each chunk's used bytes [lo, hi). */
void cfg__arena_ranges(const cfg__arena_t *a, void (*fn)(void *arg, const char *lo, const char *hi), void *arg);
void cfg__arena_release(cfg__arena_t *a, cfg__mark_t m);

/* ---- nodes ------------------------------------------------------------------
 * A YAML value with the place it came from. Scalars are resolved to their
 * YAML 1.1 type when parsed (CircleCI reads configs with a YAML 1.1
 * parser: yes/no/on/off are booleans, 0x1f an integer). Values the
 * compiler produces (substitutions) carry the place of the text that
 * produced them. Aliases share the anchored node: the tree is a DAG and
 * is never modified after parsing. */
typedef enum { CFG_NULL, CFG_BOOL, CFG_INT, CFG_FLOAT, CFG_STR, CFG_SEQ, CFG_MAP } cfg__kind_t;

typedef struct cfg__node cfg__node_t;
typedef struct {
    cfg__node_t *k; /* always a CFG_STR */
    cfg__node_t *v;
} cfg__pair_t;

struct cfg__node {
    uint8_t kind;
    uint8_t quoted; /* a scalar written in quotes or as a block scalar */
    uint32_t line, col;
    uint32_t n;    /* string length, items or pairs */
    uint32_t size; /* nodes in this subtree counting aliases (saturates) */
    union {
        bool b;
        int64_t i;
        double f;
        const char *s; /* NUL-terminated; may contain NULs only before n */
        cfg__node_t **items;
        cfg__pair_t *pairs;
    };
};

/* ---- errors ------------------------------------------------------------------ */
typedef struct {
    cfg__arena_t arena;
    const char *file;
    config_error_t *errors;
    size_t nerrors, cap, more;
} cfg__errs_t;

void cfg__err(cfg__errs_t *e, uint32_t line, uint32_t col, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parses YAML text into a tree in arena a. Returns the document's root (a
 * CFG_NULL node for an empty document), or NULL after reporting errors.
 * Only the first document of a stream is read. */
cfg__node_t *cfg__parse(cfg__arena_t *a, const char *src, size_t n, cfg__errs_t *errs);

/* Resolves a plain scalar's text to its YAML 1.1 type. */
void cfg__resolve_plain(cfg__node_t *node);

/* The pair with key k in a map, or NULL. */
cfg__pair_t *cfg__get(const cfg__node_t *map, const char *k);
const char *cfg__kind_name(const cfg__node_t *n);

/* Whether a regular expression compiles; the reason in err if not. */
bool cfg__regex_ok(const char *pattern, char *err, size_t errlen);

/* JSON value of a tree (no positions). */
json_t *cfg__to_json(const cfg__node_t *n);

/* Whether a YAML 1.1 reader would take the plain text s as something
 * other than a string (so the emitter must quote it). */
bool cfg__plain_is_special(const char *s, size_t n);

#endif
