/* Helpers shared by the config tests. */
#ifndef SPOOL_TESTS_CONFIG_HELPERS_H
#define SPOOL_TESTS_CONFIG_HELPERS_H

#include "test.h"

#include "config/config.h"

#include <stdlib.h>

/* Pipeline values used by every test that does not set its own. */
static const config_input_t th_cfg_input = {
    .id = "00000000-0000-0000-0000-000000000001",
    .number = 42,
    .git_url = "https://github.com/acme/app",
    .vcs_type = "github",
    .branch = "main",
    .revision = "0123abcd",
    .base_rev = "fedc3210",
    .trigger = "webhook",
};

static inline config_result_t *th_compile(const char *yaml, const char *params)
{
    config_input_t in = th_cfg_input;
    in.parameters_json = params;
    config_result_t *r = NULL;
    if (config_compile(yaml, strlen(yaml), "config.yml", &in, &r) != 0) return NULL;
    return r;
}

/* Every error, one per line, as the CLI prints them. Caller frees. */
static inline char *th_errors(const config_result_t *r)
{
    sp_buf_t b = {0};
    for (size_t i = 0; i < r->nerrors; i++) {
        config_error_format(&r->errors[i], &b);
        sp_buf_addstr(&b, "\n");
    }
    sp_buf_add(&b, "", 1);
    return (char *)b.p;
}

/* The processed YAML of a valid config; NULL (and the errors on stdout)
 * for an invalid one. Caller frees. */
static inline char *th_process(const char *yaml, const char *params)
{
    config_result_t *r = th_compile(yaml, params);
    if (r == NULL) return NULL;
    char *out = NULL;
    if (r->valid) {
        sp_buf_t b = {0};
        if (config_emit_yaml(r, &b) == 0) {
            sp_buf_add(&b, "", 1);
            out = (char *)b.p;
        } else {
            sp_buf_free(&b);
        }
    } else {
        char *e = th_errors(r);
        printf("# unexpected errors:\n%s", e);
        free(e);
    }
    config_result_free(r);
    return out;
}

/* The errors of an invalid config (NULL if it compiled). Caller frees. */
static inline char *th_fail(const char *yaml, const char *params)
{
    config_result_t *r = th_compile(yaml, params);
    if (r == NULL) return NULL;
    char *e = r->valid ? NULL : th_errors(r);
    config_result_free(r);
    return e;
}

/* Compares two texts; on a mismatch prints both and fails the test. */
#define T_EQ_TEXT(got, want)                                                                                           \
    do {                                                                                                               \
        const char *g_ = (got), *w_ = (want);                                                                          \
        if (g_ == NULL || strcmp(g_, w_) != 0) {                                                                       \
            t_fail(t, __FILE__, __LINE__, "text differs.\n--- want\n%s--- got\n%s---", w_, g_ ? g_ : "(null)\n");      \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

/* Expects processing yaml to print want. */
#define T_PROCESS(yaml, params, want)                                                                                  \
    do {                                                                                                               \
        char *p_ = th_process((yaml), (params));                                                                       \
        const char *w2_ = (want);                                                                                      \
        if (p_ == NULL || strcmp(p_, w2_) != 0) {                                                                      \
            t_fail(t, __FILE__, __LINE__, "processed config differs.\n--- want\n%s--- got\n%s---", w2_,                \
                   p_ ? p_ : "(null)\n");                                                                              \
            free(p_);                                                                                                  \
            return;                                                                                                    \
        }                                                                                                              \
        free(p_);                                                                                                      \
    } while (0)

/* Expects compiling yaml to fail with exactly these error lines. */
#define T_ERRORS(yaml, params, want)                                                                                   \
    do {                                                                                                               \
        char *e_ = th_fail((yaml), (params));                                                                          \
        const char *w2_ = (want);                                                                                      \
        if (e_ == NULL || strcmp(e_, w2_) != 0) {                                                                      \
            t_fail(t, __FILE__, __LINE__, "errors differ.\n--- want\n%s--- got\n%s---", w2_,                           \
                   e_ ? e_ : "(it compiled)\n");                                                                       \
            free(e_);                                                                                                  \
            return;                                                                                                    \
        }                                                                                                              \
        free(e_);                                                                                                      \
    } while (0)

#endif
