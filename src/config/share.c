/*
 * Sharing of equal values in the processed tree (hash-consing).
 *
 * A processed config repeats itself: the same step is written in many
 * jobs, a matrix makes jobs that differ in a few values, every job gets
 * the executor's working_directory. Each repetition used to be its own
 * jansson tree, and jansson values are large (an object with one key
 * takes some 300 bytes), so the processed tree was most of the memory of
 * a compilation. Here each value is kept once and shared by reference
 * count. Strings and steps are looked up before they are made (most of
 * them are there already, and making and freeing them again costs more
 * than the lookup); other values are made, then swapped for their equal.
 *
 * "Equal" means that it prints the same: same type, same text, same keys
 * in the same order (json_equal ignores key order, so it is not used).
 * Values are shared bottom-up, so two containers are equal when their
 * keys are and their children are the same pointers: neither hashing nor
 * comparing a container walks its subtree.
 *
 * Shared values are never modified: the compiler copies a shared value
 * before changing it (see merge_key), and the table's own reference
 * makes every value in it shared.
 */
#include "compile_internal.h"

#include <stdlib.h>

/* ---- hashing ---- */

#define MUL 0x9E3779B97F4A7C15ULL

static uint64_t mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * MUL;
    return h ^ (h >> 32);
}

/* Eight bytes at a time: the strings are the bulk of what is hashed. */
static uint64_t hash_bytes(uint64_t h, const char *s, size_t n)
{
    uint64_t w;
    h = mix(h, n);
    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&w, s, 8);
        h = mix(h, w);
    }
    /* The tail byte by byte: a short memcpy into w stalls the load. */
    w = 0;
    for (size_t i = 0; i < n; i++) w |= (uint64_t)(unsigned char)s[i] << (8 * i);
    return mix(h, w);
}

/* MurmurHash3's finalizer: every bit moves every bit of the result, of
 * which the table uses the low ones. Never 0, which marks an empty slot. */
static uint32_t finish(uint64_t h)
{
    h = (h ^ (h >> 33)) * 0xFF51AFD7ED558CCDULL;
    h = (h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return (uint32_t)h ? (uint32_t)h : 1;
}

static json_t *intern(cc_t *cc, json_t *v);

/* The hash of v: of its text, or of its keys and its children's
 * addresses. With cc, each child is first replaced by its shared equal,
 * in the same pass. cc_share_str and cc_share_obj hash the same way. */
static uint32_t hash_of(cc_t *cc, json_t *v)
{
    uint64_t h = mix(0, (uint64_t)json_typeof(v));
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
            json_t *x = json_object_iter_value(it), *s = cc ? intern(cc, x) : x;
            if (s != x) json_object_iter_set_new(v, it, json_incref(s));
            h = hash_bytes(h, json_object_iter_key(it), json_object_iter_key_len(it));
            h = mix(h, (uintptr_t)s);
        }
        break;
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *x = json_array_get(v, i), *s = cc ? intern(cc, x) : x;
            if (s != x) json_array_set_new(v, i, json_incref(s));
            h = mix(h, (uintptr_t)s);
        }
        break;
    case JSON_STRING: h = hash_bytes(h, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: h = mix(h, (uint64_t)json_integer_value(v)); break;
    case JSON_REAL: {
        double d = json_real_value(v);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        h = mix(h, bits);
        break;
    }
    default: break;
    }
    return finish(h);
}

/* ---- equality, given shared children ---- */

typedef struct {
    const char *s;
    size_t n;
} text_t;

typedef struct {
    const char *const *keys;
    json_t *const *vals;
    size_t n;
} pairs_t;

static bool same_text(json_t *a, const void *want)
{
    const text_t *t = want;
    return json_is_string(a) && json_string_length(a) == t->n && memcmp(json_string_value(a), t->s, t->n) == 0;
}

static bool same_pairs(json_t *a, const void *want)
{
    const pairs_t *p = want;
    if (!json_is_object(a) || json_object_size(a) != p->n) return false;
    void *it = json_object_iter(a);
    for (size_t i = 0; i < p->n; i++, it = json_object_iter_next(a, it)) {
        size_t n = strlen(p->keys[i]);
        if (json_object_iter_key_len(it) != n || memcmp(json_object_iter_key(it), p->keys[i], n) != 0 ||
            json_object_iter_value(it) != p->vals[i])
            return false;
    }
    return true;
}

static bool same_object(json_t *a, json_t *b)
{
    if (json_object_size(a) != json_object_size(b)) return false;
    void *i = json_object_iter(a), *j = json_object_iter(b);
    for (; i && j; i = json_object_iter_next(a, i), j = json_object_iter_next(b, j)) {
        size_t n = json_object_iter_key_len(i);
        if (n != json_object_iter_key_len(j) || memcmp(json_object_iter_key(i), json_object_iter_key(j), n) != 0 ||
            json_object_iter_value(i) != json_object_iter_value(j))
            return false;
    }
    return i == NULL && j == NULL;
}

/* Whether a prints the same as the value want. */
static bool same_value(json_t *a, const void *want)
{
    json_t *b = (json_t *)want;
    if (json_typeof(a) != json_typeof(b)) return false;
    switch (json_typeof(a)) {
    case JSON_OBJECT: return same_object(a, b);
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (json_array_get(a, i) != json_array_get(b, i)) return false;
        return true;
    case JSON_STRING: return same_text(a, &(text_t){json_string_value(b), json_string_length(b)});
    case JSON_INTEGER: return json_integer_value(a) == json_integer_value(b);
    case JSON_REAL: {
        double x = json_real_value(a), y = json_real_value(b);
        return memcmp(&x, &y, sizeof x) == 0; /* -0.0 prints apart from 0.0 */
    }
    default: return true;
    }
}

/* ---- the table ---- */

static void grow(cc_t *cc)
{
    json_t **ov = cc->svals;
    uint32_t *oh = cc->shash;
    size_t oc = cc->scap;
    cc->scap = oc ? oc * 2 : 1024;
    cc->svals = sp_xcalloc(cc->scap, sizeof *cc->svals);
    cc->shash = sp_xcalloc(cc->scap, sizeof *cc->shash);
    for (size_t i = 0; i < oc; i++) {
        if (oh[i] == 0) continue;
        size_t j = oh[i] & (cc->scap - 1);
        while (cc->shash[j]) j = (j + 1) & (cc->scap - 1);
        cc->svals[j] = ov[i];
        cc->shash[j] = oh[i];
    }
    free(ov);
    free(oh);
}

/* The slot of the value equal to want, or the empty slot where it goes.
 * Probing reads only the hashes until one matches. The table has room
 * for one more value. */
static size_t find(cc_t *cc, uint32_t h, bool (*same)(json_t *, const void *), const void *want)
{
    if ((cc->sn + 1) * 2 > cc->scap) grow(cc);
    size_t i = h & (cc->scap - 1);
    while (cc->shash[i] && (cc->shash[i] != h || !same(cc->svals[i], want))) i = (i + 1) & (cc->scap - 1);
    return i;
}

static json_t *put(cc_t *cc, size_t i, uint32_t h, json_t *v)
{
    cc->svals[i] = json_incref(v);
    cc->shash[i] = h;
    cc->sn++;
    return v;
}

/* The shared value equal to v (both borrowed): v itself when it is new,
 * which adds it to the table, or the equal one seen before. */
static json_t *intern(cc_t *cc, json_t *v)
{
    if (json_is_true(v) || json_is_false(v) || json_is_null(v)) return v; /* jansson's singletons */
    /* The table holds a reference to each of its values, so a value with
     * one reference is not in it. One that is has a shared subtree. */
    if (v->refcount > 1 && cc->scap && cc->svals[find(cc, hash_of(NULL, v), same_value, v)] == v) return v;
    uint32_t h = hash_of(cc, v);
    size_t i = find(cc, h, same_value, v);
    return cc->shash[i] ? cc->svals[i] : put(cc, i, h, v);
}

/* ---- the compiler's side ---- */

json_t *cc_share(cc_t *cc, json_t *v)
{
    if (v == NULL) return NULL;
    json_t *s = intern(cc, v);
    if (s != v) {
        json_incref(s);
        json_decref(v);
    }
    return s;
}

json_t *cc_share_str(cc_t *cc, const char *s, size_t n)
{
    uint32_t h = finish(hash_bytes(mix(0, JSON_STRING), s, n));
    size_t i = find(cc, h, same_text, &(text_t){s, n});
    if (cc->shash[i]) return json_incref(cc->svals[i]);
    json_t *v = json_stringn_nocheck(s, n);
    return v ? put(cc, i, h, v) : NULL;
}

json_t *cc_share_obj(cc_t *cc, const char *const *keys, json_t **vals, size_t n)
{
    uint64_t h = mix(0, JSON_OBJECT);
    for (size_t k = 0; k < n; k++) {
        h = hash_bytes(h, keys[k], strlen(keys[k]));
        h = mix(h, (uintptr_t)vals[k]);
    }
    uint32_t h32 = finish(h);
    size_t i = find(cc, h32, same_pairs, &(pairs_t){keys, vals, n});
    if (cc->shash[i]) {
        for (size_t k = 0; k < n; k++) json_decref(vals[k]);
        return json_incref(cc->svals[i]);
    }
    json_t *o = json_object();
    for (size_t k = 0; k < n; k++) json_object_set_new_nocheck(o, keys[k], vals[k]);
    return put(cc, i, h32, o);
}

void cc_share_free(cc_t *cc)
{
    for (size_t i = 0; i < cc->scap; i++) json_decref(cc->svals[i]);
    free(cc->svals);
    free(cc->shash);
    cc->svals = NULL;
    cc->shash = NULL;
    cc->scap = cc->sn = 0;
}
