/*
 * base: errors, allocation, byte slices and buffers, clock, structured
 * logging. The only module every other one may include; it depends on
 * nothing but libc.
 *
 * Thread safety: everything here may be called from any thread. The
 * allocation and clock hooks are set once, before threads start (tests).
 */
#ifndef SPOOL_BASE_H
#define SPOOL_BASE_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SP_VERSION "0.1.0"

/* ---- errors ------------------------------------------------------------
 * Fallible functions return 0 or a negative code: one of SP_E* below or a
 * negated errno. The table is the single source of names and messages. */
#define SP_ERRORS(X)                                                                                                   \
    X(SP_ENOTFOUND, -1000, "not found")                                                                                \
    X(SP_EEXIST, -1001, "already exists")                                                                              \
    X(SP_EINVAL, -1002, "invalid argument")                                                                            \
    X(SP_ECORRUPT, -1003, "corrupt record")                                                                            \
    X(SP_EFULL, -1004, "storage is full")                                                                              \
    X(SP_EFAILED, -1005, "writer has failed; reopen the log")                                                          \
    X(SP_ECLOSED, -1006, "closed")                                                                                     \
    X(SP_ETOOBIG, -1007, "too large")                                                                                  \
    X(SP_EUNKNOWN_TYPE, -1008, "unknown event type")                                                                   \
    X(SP_EVERSION, -1009, "unsupported version")                                                                       \
    X(SP_ELOCKED, -1010, "locked by another process")                                                                  \
    X(SP_EIO, -1011, "input/output error")                                                                             \
    X(SP_ETIMEDOUT, -1012, "timed out")                                                                                \
    X(SP_EGAP, -1013, "sequence gap")

enum {
#define SP__ENUM(name, value, msg) name = value,
    SP_ERRORS(SP__ENUM)
#undef SP__ENUM
};

/* Message for a code from the table or a negated errno. Never NULL. */
const char *sp_strerror(int code);

/* ---- allocation --------------------------------------------------------
 * Out of memory aborts. Tests may swap the hook to inject failures: a hook
 * returning NULL makes sp_x* abort, which the test harness observes. */
typedef void *(*sp_realloc_hook_cb)(void *p, size_t n);
void sp_set_realloc_hook(sp_realloc_hook_cb hook); /* NULL restores realloc */
void *sp_xmalloc(size_t n);
void *sp_xcalloc(size_t count, size_t n);
void *sp_xrealloc(void *p, size_t n);
char *sp_xstrdup(const char *s);
char *sp_xstrndup(const char *s, size_t n);
char *sp_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Handle accounting: every _open/_new increments, every _close/_free
 * decrements. The test runner fails a test that leaves it non-zero. */
extern atomic_long sp_handles_live;
static inline void sp_handle_opened(void) { atomic_fetch_add(&sp_handles_live, 1); }
static inline void sp_handle_closed(void) { atomic_fetch_sub(&sp_handles_live, 1); }

/* ---- slices and buffers ------------------------------------------------ */
typedef struct {
    const uint8_t *p;
    size_t n;
} sp_slice_t;

#define SP_SLICE_STR(s) ((sp_slice_t){(const uint8_t *)(s), strlen(s)})
#define SP_SLICE_LIT(s) ((sp_slice_t){(const uint8_t *)(s), sizeof(s) - 1})
bool sp_slice_eq_str(sp_slice_t s, const char *str);

/* A growable byte buffer. Owned; free with sp_buf_free. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} sp_buf_t;

void sp_buf_reserve(sp_buf_t *b, size_t extra);
void sp_buf_add(sp_buf_t *b, const void *p, size_t n);
void sp_buf_addstr(sp_buf_t *b, const char *s);
void sp_buf_printf(sp_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sp_buf_add_json_str(sp_buf_t *b, const char *s, size_t n); /* quoted, escaped */
/* Appends s, replacing every invalid UTF-8 sequence by U+FFFD. */
void sp_buf_add_utf8(sp_buf_t *b, const char *s, size_t n);
void sp_buf_free(sp_buf_t *b);
static inline sp_slice_t sp_buf_slice(const sp_buf_t *b) { return (sp_slice_t){b->p, b->n}; }

/* ---- clock --------------------------------------------------------------
 * Wall time (UTC ns since the epoch) and monotonic time. Tests inject a
 * wall clock to make event times deterministic. */
typedef int64_t (*sp_clock_cb)(void);
void sp_set_wall_clock(sp_clock_cb cb); /* NULL restores the real clock */
int64_t sp_now_ns(void);
int64_t sp_mono_ns(void);
/* Formats ns since the epoch as RFC 3339 UTC with milliseconds into out
 * (at least 32 bytes). */
void sp_format_time(int64_t ns, char *out, size_t n);

/* ---- randomness --------------------------------------------------------
 * From the kernel (getrandom). Tests inject a generator for determinism. */
typedef void (*sp_random_cb)(void *buf, size_t n);
void sp_set_random(sp_random_cb cb); /* NULL restores getrandom */
void sp_random_bytes(void *buf, size_t n);
/* A random (version 4) UUID in its 36-character text form plus NUL. */
void sp_uuid4(char out[37]);

/* ---- structured logs ----------------------------------------------------
 * One JSON object per line on stderr: ts, level, mod, msg. */
typedef enum { SP_LOG_DEBUG, SP_LOG_INFO, SP_LOG_WARN, SP_LOG_ERROR } sp_log_level_t;
void sp_log_set_level(sp_log_level_t level);
void sp_log(sp_log_level_t level, const char *mod, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define sp_info(mod, ...)  sp_log(SP_LOG_INFO, mod, __VA_ARGS__)
#define sp_warn(mod, ...)  sp_log(SP_LOG_WARN, mod, __VA_ARGS__)
#define sp_error(mod, ...) sp_log(SP_LOG_ERROR, mod, __VA_ARGS__)

/* ---- string map ---------------------------------------------------------
 * Keys are copied; values are borrowed pointers. Open addressing with
 * tombstones; grows at 1/2 load. Not thread-safe. */
typedef struct {
    struct sp_map_slot *slots;
    size_t cap, used, live;
} sp_map_t;
void *sp_map_get(const sp_map_t *m, const char *key);
/* Sets key (replacing an existing value). */
void sp_map_set(sp_map_t *m, const char *key, void *val);
/* Removes key; returns its value or NULL. */
void *sp_map_del(sp_map_t *m, const char *key);
size_t sp_map_len(const sp_map_t *m);
/* Iteration: i from 0 while sp_map_next returns true. */
bool sp_map_next(const sp_map_t *m, size_t *i, const char **key, void **val);
void sp_map_free(sp_map_t *m);

/* ---- misc ---------------------------------------------------------------- */
#define SP_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define sp_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Constant-time comparison of two byte strings (length is not secret). */
bool sp_ct_equal(const void *a, size_t an, const void *b, size_t bn);

/* Parses a decimal unsigned 64-bit integer, whole string. */
int sp_parse_u64(const char *s, uint64_t *out);

static inline void sp_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}
static inline uint64_t sp_be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}
static inline uint32_t sp_be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
