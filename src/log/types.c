/* The event type table (LOG_EVENT_TYPES in log.h) and name lookup.
 * Lookup runs once per event in every replay, so names are hashed into a
 * small open-addressing table built on first use. */
#include "log_internal.h"

static const struct {
    const char *name;
    uint32_t schema;
} types[LOG_EV__COUNT] = {[LOG_EV_UNKNOWN] = {NULL, 0},
#define LOG__EV_ROW(id, nm, version) [id] = {nm, version},
                          LOG_EVENT_TYPES(LOG__EV_ROW)
#undef LOG__EV_ROW
};

#define SLOTS 1024 /* power of two, well above 2x the number of types */
static uint16_t slots[SLOTS];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static uint32_t hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static void build(void)
{
    _Static_assert(LOG_EV__COUNT < SLOTS / 2, "grow SLOTS");
    for (int t = 1; t < LOG_EV__COUNT; t++) {
        uint32_t i = hash(types[t].name, strlen(types[t].name)) & (SLOTS - 1);
        while (slots[i]) i = (i + 1) & (SLOTS - 1);
        slots[i] = (uint16_t)t;
    }
}

const char *log_type_name(int type) { return type > 0 && type < LOG_EV__COUNT ? types[type].name : NULL; }

uint32_t log_type_schema(int type) { return type > 0 && type < LOG_EV__COUNT ? types[type].schema : 0; }

int log_type_lookup(const char *name, size_t n)
{
    pthread_once(&once, build);
    for (uint32_t i = hash(name, n) & (SLOTS - 1); slots[i]; i = (i + 1) & (SLOTS - 1)) {
        const char *cand = types[slots[i]].name;
        if (strlen(cand) == n && memcmp(cand, name, n) == 0) return slots[i];
    }
    return LOG_EV_UNKNOWN;
}
