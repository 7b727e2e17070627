/*
 * The unit test harness. Every test is a function registered with TEST();
 * the runner (tests/runner.c) runs each in its own child process with its
 * own temporary directory, fails it on a failed assertion, a crash, a
 * timeout, a sanitizer report or a leaked handle, and prints TAP.
 */
#ifndef SPOOL_TEST_H
#define SPOOL_TEST_H

#include "base/base.h"

#include <stdio.h>

typedef struct {
    const char *dir; /* this test's temporary directory */
    int failed;
} t_ctx_t;

typedef void (*t_fn)(t_ctx_t *t);
void t_register(const char *name, t_fn fn);
void t_fail(t_ctx_t *t, const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* A path inside the test's directory (static buffer, rotating 8 slots). */
const char *t_path(t_ctx_t *t, const char *leaf);

#define TEST(name)                                                                                                     \
    static void test_##name(t_ctx_t *t);                                                                               \
    __attribute__((constructor)) static void register_##name(void) { t_register(#name, test_##name); }                 \
    static void test_##name(t_ctx_t *t)

#define T_ASSERT(cond)                                                                                                 \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            t_fail(t, __FILE__, __LINE__, "assertion failed: %s", #cond);                                              \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

#define T_EQ_U64(a, b)                                                                                                 \
    do {                                                                                                               \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);                                 \
        if (a_ != b_) {                                                                                                \
            t_fail(t, __FILE__, __LINE__, "%s == %s: %llu != %llu", #a, #b, a_, b_);                                   \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

#define T_EQ_STR(a, b)                                                                                                 \
    do {                                                                                                               \
        const char *a_ = (a), *b_ = (b);                                                                               \
        if (strcmp(a_, b_) != 0) {                                                                                     \
            t_fail(t, __FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, a_, b_);                               \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

/* Expects an int-returning call to give `want` (0 or an SP_E* code). */
#define T_RC(want, expr)                                                                                               \
    do {                                                                                                               \
        int w_ = (want), r_ = (expr);                                                                                  \
        if (r_ != w_) {                                                                                                \
            t_fail(t, __FILE__, __LINE__, "%s: got %d (%s), want %d (%s)", #expr, r_, sp_strerror(r_), w_,             \
                   sp_strerror(w_));                                                                                   \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)
#define T_OK(expr) T_RC(0, expr)

#endif
