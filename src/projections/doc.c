/* JSON documents in view tables; msgpack bodies as jansson trees. */
#include "doc.h"

static json_t *from_msgpack(const msgpack_object *o, int depth)
{
    if (depth > 32) return json_null();
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: return json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return json_stringn_nocheck(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, from_msgpack(&o->via.array.ptr[i], depth + 1));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) continue;
            char key[256];
            size_t n = kv->key.via.str.size < sizeof key - 1 ? kv->key.via.str.size : sizeof key - 1;
            memcpy(key, kv->key.via.str.ptr, n);
            key[n] = 0;
            json_object_set_new_nocheck(m, key, from_msgpack(&kv->val, depth + 1));
        }
        return m;
    }
    default: return json_null();
    }
}

json_t *proj__body(const log_event_t *ev)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    json_t *out = NULL;
    if (log_body_unpack(ev->body, &zone, &o) == 0) out = from_msgpack(&o, 0);
    msgpack_zone_destroy(&zone);
    return out;
}

int proj__doc_get(log_kvtxn_t *t, unsigned tbl, sp_slice_t key, json_t **out)
{
    sp_slice_t v;
    int rc = log_kvtxn_get(t, tbl, key, &v);
    if (rc != 0) return rc;
    json_t *doc = json_loadb((const char *)v.p, v.n, JSON_ALLOW_NUL, NULL);
    if (doc == NULL) return SP_ECORRUPT;
    *out = doc;
    return 0;
}

int proj__doc_put(log_kvtxn_t *t, unsigned tbl, sp_slice_t key, const json_t *doc)
{
    /* Sorted keys: the same state always gives the same bytes, so a view
     * rebuilt from the log compares equal byte for byte. */
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL) return SP_EINVAL;
    int rc = log_kvtxn_put(t, tbl, key, SP_SLICE_STR(text));
    free(text);
    return rc;
}

json_t *proj__time(int64_t ns)
{
    char s[40];
    sp_format_time(ns, s, sizeof s);
    return json_string(s);
}

int proj__table(log_kvtxn_t *t, const char *name, unsigned *tbl) { return log_kvtxn_table(t, name, tbl); }

const char *proj__str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* ---- the per-batch document cache ---- */

size_t proj_doc_cache_max = 4096;

typedef struct {
    json_t *doc;
    unsigned tbl;
    bool dirty;
    char key[]; /* the document's own key */
} cached_t;

static char *cache_key(unsigned tbl, const char *key) { return sp_xasprintf("%u:%s", tbl, key); }

static void cached_free(cached_t *e)
{
    json_decref(e->doc);
    free(e);
}

int proj__docs_get(proj__docs_t *d, log_kvtxn_t *t, unsigned tbl, const char *key, json_t **out)
{
    char *k = cache_key(tbl, key);
    cached_t *e = sp_map_get(&d->map, k);
    if (e != NULL) {
        free(k);
        *out = json_incref(e->doc);
        return 0;
    }
    json_t *doc = NULL;
    int rc = proj__doc_get(t, tbl, SP_SLICE_STR(key), &doc);
    if (rc == 0 && sp_map_len(&d->map) >= proj_doc_cache_max && (rc = proj__docs_flush(d, t)) != 0) json_decref(doc);
    if (rc != 0) {
        free(k);
        return rc;
    }
    size_t kn = strlen(key);
    e = sp_xmalloc(sizeof *e + kn + 1);
    *e = (cached_t){.doc = json_incref(doc), .tbl = tbl};
    memcpy(e->key, key, kn + 1);
    sp_map_set(&d->map, k, e);
    free(k);
    *out = doc;
    return 0;
}

int proj__docs_put(proj__docs_t *d, log_kvtxn_t *t, unsigned tbl, const char *key, json_t *doc)
{
    char *k = cache_key(tbl, key);
    cached_t *e = sp_map_get(&d->map, k);
    if (e == NULL) {
        int rc = sp_map_len(&d->map) >= proj_doc_cache_max ? proj__docs_flush(d, t) : 0;
        if (rc != 0) {
            free(k);
            return rc;
        }
        size_t kn = strlen(key);
        e = sp_xmalloc(sizeof *e + kn + 1);
        *e = (cached_t){.tbl = tbl};
        memcpy(e->key, key, kn + 1);
        sp_map_set(&d->map, k, e);
    } else {
        json_decref(e->doc);
    }
    free(k);
    e->doc = json_incref(doc);
    e->dirty = true;
    return 0;
}

int proj__docs_flush(proj__docs_t *d, log_kvtxn_t *t)
{
    size_t i = 0;
    const char *k;
    void *v;
    int rc = 0;
    while (rc == 0 && sp_map_next(&d->map, &i, &k, &v)) {
        cached_t *e = v;
        if (e->dirty) rc = proj__doc_put(t, e->tbl, SP_SLICE_STR(e->key), e->doc);
    }
    proj__docs_discard(d);
    return rc;
}

void proj__docs_discard(proj__docs_t *d)
{
    size_t i = 0;
    const char *k;
    void *v;
    while (sp_map_next(&d->map, &i, &k, &v)) cached_free(v);
    sp_map_free(&d->map);
    d->map = (sp_map_t){0};
}
