/* base: see base.h. Everything here is small and dependency-free on
 * purpose: it is linked into the server, the CLI, tests and tools. */
#include "base.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

atomic_long sp_handles_live;

#ifdef SPOOL_SANITIZE
/* Start AddressSanitizer before any library constructor runs, as clang's
 * driver does by linking asan_preinit. Otherwise ASan initializes lazily
 * inside the first malloc, which can happen while glibc holds its locale
 * lock; ASan's start-up then corrupts that lock and the process hangs in
 * freelocale at exit. */
extern void __asan_init(void);
__attribute__((section(".preinit_array"), used)) static void (*const asan_preinit)(void) = __asan_init;
#endif

const char *sp_strerror(int code)
{
    switch (code) {
    case 0: return "success";
#define SP__CASE(name, value, msg)                                                                                     \
    case name: return msg;
        SP_ERRORS(SP__CASE)
#undef SP__CASE
    default: break;
    }
    if (code < 0 && code > -4096) return strerror(-code);
    return "unknown error";
}

/* ---- allocation ---- */

static sp_realloc_hook_cb realloc_hook;

void sp_set_realloc_hook(sp_realloc_hook_cb hook) { realloc_hook = hook; }

static void *xrealloc_raw(void *p, size_t n)
{
    void *r = realloc_hook ? realloc_hook(p, n) : realloc(p, n ? n : 1);
    if (r == NULL) {
        fprintf(stderr, "spool: out of memory (%zu bytes)\n", n);
        abort();
    }
    return r;
}

void *sp_xmalloc(size_t n) { return xrealloc_raw(NULL, n); }
void *sp_xrealloc(void *p, size_t n) { return xrealloc_raw(p, n); }

void *sp_xcalloc(size_t count, size_t n)
{
    if (n && count > SIZE_MAX / n) {
        fprintf(stderr, "spool: allocation overflow\n");
        abort();
    }
    void *p = xrealloc_raw(NULL, count * n);
    memset(p, 0, count * n);
    return p;
}

char *sp_xstrndup(const char *s, size_t n)
{
    char *p = sp_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *sp_xstrdup(const char *s) { return sp_xstrndup(s, strlen(s)); }

char *sp_xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = sp_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* ---- slices and buffers ---- */

bool sp_slice_eq_str(sp_slice_t s, const char *str)
{
    size_t n = strlen(str);
    return s.n == n && (n == 0 || memcmp(s.p, str, n) == 0);
}

void sp_buf_reserve(sp_buf_t *b, size_t extra)
{
    if (b->cap - b->n >= extra) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n < extra) cap *= 2;
    b->p = sp_xrealloc(b->p, cap);
    b->cap = cap;
}

void sp_buf_add(sp_buf_t *b, const void *p, size_t n)
{
    if (n == 0) return;
    sp_buf_reserve(b, n);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

void sp_buf_addstr(sp_buf_t *b, const char *s) { sp_buf_add(b, s, strlen(s)); }

void sp_buf_printf(sp_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    sp_buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

void sp_buf_add_json_str(sp_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sp_buf_reserve(b, n + 2);
    b->p[b->n++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sp_buf_add(b, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            sp_buf_add(b, esc, 6);
        } else {
            sp_buf_add(b, &c, 1);
        }
    }
    sp_buf_add(b, "\"", 1);
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF), or 0. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t min, cp;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0)
        len = 2, min = 0x80, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0)
        len = 3, min = 0x800, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0)
        len = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

void sp_buf_add_utf8(sp_buf_t *b, const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t len = utf8_len(p + i, n - i);
        if (len) {
            i += len;
            continue;
        }
        sp_buf_add(b, p + run, i - run);
        sp_buf_add(b, "\xef\xbf\xbd", 3);
        run = ++i;
    }
    sp_buf_add(b, p + run, n - run);
}

void sp_buf_free(sp_buf_t *b)
{
    free(b->p);
    *b = (sp_buf_t){0};
}

/* ---- clock ---- */

static sp_clock_cb wall_clock;

void sp_set_wall_clock(sp_clock_cb cb) { wall_clock = cb; }

int64_t sp_now_ns(void)
{
    if (wall_clock) return wall_clock();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t sp_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sp_format_time(int64_t ns, char *out, size_t n)
{
    time_t secs = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char day[24];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03dZ", day, (int)((ns / 1000000) % 1000));
}

/* ---- randomness ---- */

static sp_random_cb random_hook;

void sp_set_random(sp_random_cb cb) { random_hook = cb; }

void sp_random_bytes(void *buf, size_t n)
{
    if (random_hook) {
        random_hook(buf, n);
        return;
    }
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "spool: getrandom failed: %s\n", strerror(errno));
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

void sp_uuid4(char out[37])
{
    uint8_t b[16];
    sp_random_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* ---- structured logs ---- */

static sp_log_level_t log_level = SP_LOG_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void sp_log_set_level(sp_log_level_t level) { log_level = level; }

void sp_log(sp_log_level_t level, const char *mod, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_level) return;
    char msg[2048], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sp_format_time(sp_now_ns(), ts, sizeof ts);
    sp_buf_t b = {0};
    sp_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":", ts, names[level]);
    sp_buf_add_json_str(&b, mod, strlen(mod));
    sp_buf_addstr(&b, ",\"msg\":");
    sp_buf_add_json_str(&b, msg, strlen(msg));
    sp_buf_addstr(&b, "}\n");
    /* One write per line so lines from threads never interleave. */
    pthread_mutex_lock(&log_mu);
    fwrite(b.p, 1, b.n, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_mu);
    sp_buf_free(&b);
}

/* ---- misc ---- */

bool sp_ct_equal(const void *a, size_t an, const void *b, size_t bn)
{
    if (an != bn) return false;
    const volatile uint8_t *x = a, *y = b;
    uint8_t d = 0;
    for (size_t i = 0; i < an; i++) d |= (uint8_t)(x[i] ^ y[i]);
    return d == 0;
}

int sp_parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') return SP_EINVAL;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return SP_EINVAL;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return SP_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* ---- string map ---- */

struct sp_map_slot {
    char *key; /* NULL: empty; TOMBSTONE: deleted */
    void *val;
    uint64_t hash;
};

static char tombstone_key;
#define TOMBSTONE (&tombstone_key)

static uint64_t map_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static struct sp_map_slot *map_find(const sp_map_t *m, const char *key, uint64_t h)
{
    if (m->cap == 0) return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct sp_map_slot *s = &m->slots[i];
        if (s->key == NULL) return NULL;
        if (s->key != TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0) return s;
    }
}

static void map_grow(sp_map_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    while (m->live * 2 >= cap) cap *= 2;
    struct sp_map_slot *old = m->slots;
    size_t oldcap = m->cap;
    m->slots = sp_xcalloc(cap, sizeof *m->slots);
    m->cap = cap;
    m->used = m->live = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].key == NULL || old[i].key == TOMBSTONE) continue;
        size_t j = old[i].hash & (cap - 1);
        while (m->slots[j].key) j = (j + 1) & (cap - 1);
        m->slots[j] = old[i];
        m->used++;
        m->live++;
    }
    free(old);
}

void *sp_map_get(const sp_map_t *m, const char *key)
{
    struct sp_map_slot *s = map_find(m, key, map_hash(key));
    return s ? s->val : NULL;
}

void sp_map_set(sp_map_t *m, const char *key, void *val)
{
    uint64_t h = map_hash(key);
    struct sp_map_slot *s = map_find(m, key, h);
    if (s) {
        s->val = val;
        return;
    }
    if ((m->used + 1) * 2 > m->cap) map_grow(m);
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != TOMBSTONE) i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == NULL) m->used++;
    m->slots[i] = (struct sp_map_slot){sp_xstrdup(key), val, h};
    m->live++;
}

void *sp_map_del(sp_map_t *m, const char *key)
{
    struct sp_map_slot *s = map_find(m, key, map_hash(key));
    if (s == NULL) return NULL;
    void *v = s->val;
    free(s->key);
    s->key = TOMBSTONE;
    s->val = NULL;
    m->live--;
    return v;
}

size_t sp_map_len(const sp_map_t *m) { return m->live; }

bool sp_map_next(const sp_map_t *m, size_t *i, const char **key, void **val)
{
    for (; *i < m->cap; (*i)++) {
        struct sp_map_slot *s = &m->slots[*i];
        if (s->key == NULL || s->key == TOMBSTONE) continue;
        if (key) *key = s->key;
        if (val) *val = s->val;
        (*i)++;
        return true;
    }
    return false;
}

void sp_map_free(sp_map_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMBSTONE) free(m->slots[i].key);
    free(m->slots);
    *m = (sp_map_t){0};
}
