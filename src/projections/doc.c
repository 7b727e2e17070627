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
