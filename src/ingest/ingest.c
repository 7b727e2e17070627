/* Event body validation and JSON <-> msgpack conversion. */
#include "ingest.h"

#include <jansson.h>
#include <stdio.h>

#define INGEST_MAX_DEPTH 16

/* ---- body schemas ----
 * One row per event type that may be appended from outside (CLI, admin
 * API). Types without a schema here cannot be appended from outside:
 * they are produced by Spool's own code only. */
typedef enum { F_STR, F_INT, F_BOOL, F_OBJ } kind_t;

typedef struct {
    const char *name;
    kind_t kind;
    bool required;
    size_t max; /* max string length */
} field_t;

typedef struct {
    int type;
    const field_t *fields;
} schema_t;

static const field_t note_fields[] = {{"message", F_STR, true, 4096}, {NULL, 0, 0, 0}};
static const field_t mark_fields[] = {{"label", F_STR, true, 256}, {"detail", F_OBJ, false, 0}, {NULL, 0, 0, 0}};

static const schema_t schemas[] = {
    {LOG_EV_SYSTEM_NOTE, note_fields},
    {LOG_EV_SYSTEM_MARK, mark_fields},
};

static const schema_t *schema_for(int type)
{
    for (size_t i = 0; i < SP_ARRAY_LEN(schemas); i++)
        if (schemas[i].type == type) return &schemas[i];
    return NULL;
}

static const char *kind_name(kind_t k)
{
    static const char *names[] = {"a string", "an integer", "a boolean", "an object"};
    return names[k];
}

static bool kind_ok(kind_t k, json_t *v)
{
    switch (k) {
    case F_STR: return json_is_string(v);
    case F_INT: return json_is_integer(v);
    case F_BOOL: return json_is_boolean(v);
    case F_OBJ: return json_is_object(v);
    }
    return false;
}

static int validate(const schema_t *s, json_t *obj, char *err, size_t errlen)
{
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "body must be a JSON object");
        return SP_EINVAL;
    }
    const char *key;
    json_t *val;
    json_object_foreach (obj, key, val) {
        const field_t *f = s->fields;
        while (f->name && strcmp(f->name, key) != 0) f++;
        if (f->name == NULL) {
            snprintf(err, errlen, "body.%s: unknown field", key);
            return SP_EINVAL;
        }
        if (!kind_ok(f->kind, val)) {
            snprintf(err, errlen, "body.%s: expected %s", key, kind_name(f->kind));
            return SP_EINVAL;
        }
        if (f->kind == F_STR && json_string_length(val) > f->max) {
            snprintf(err, errlen, "body.%s: longer than %zu bytes", key, f->max);
            return SP_EINVAL;
        }
    }
    for (const field_t *f = s->fields; f->name; f++) {
        if (f->required && json_object_get(obj, f->name) == NULL) {
            snprintf(err, errlen, "body.%s: required field is missing", f->name);
            return SP_EINVAL;
        }
    }
    return 0;
}

/* ---- JSON -> msgpack ---- */

int ingest_pack_write(void *data, const char *buf, size_t len)
{
    sp_buf_add(data, buf, len);
    return 0;
}

void ingest_pack_json(msgpack_packer *pk, const json_t *cv)
{
    json_t *v = (json_t *)cv; /* jansson's iterators take non-const trees */
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(v));
        const char *key;
        json_t *val;
        json_object_foreach (v, key, val) {
            size_t n = strlen(key);
            msgpack_pack_str(pk, n);
            msgpack_pack_str_body(pk, key, n);
            ingest_pack_json(pk, val);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(v));
        size_t i;
        json_t *val;
        json_array_foreach (v, i, val) ingest_pack_json(pk, val);
        break;
    }
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(v));
        msgpack_pack_str_body(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(v)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(v)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

/* Depth of nested objects and arrays (a scalar has depth 0). */
static int json_depth(json_t *v, int limit)
{
    if (limit < 0) return 1;
    int max = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *c;
        json_object_foreach (v, k, c) {
            int d = json_depth(c, limit - 1);
            if (d > max) max = d;
        }
        return max + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *c;
        json_array_foreach (v, i, c) {
            int d = json_depth(c, limit - 1);
            if (d > max) max = d;
        }
        return max + 1;
    }
    return 0;
}

static int encode_body(int type, json_t *obj, sp_buf_t *body, char *err, size_t errlen)
{
    /* msgpack-c unpacks at most 32 levels; stay well inside so every
     * stored body can be read back (found by fuzz-ingest). */
    if (json_depth(obj, INGEST_MAX_DEPTH) > INGEST_MAX_DEPTH) {
        snprintf(err, errlen, "body nests objects and arrays deeper than %d levels", INGEST_MAX_DEPTH);
        return SP_EINVAL;
    }
    const schema_t *s = schema_for(type);
    if (s == NULL) {
        snprintf(err, errlen, "events of type %s are written by spool itself and cannot be appended",
                 log_type_name(type));
        return SP_EINVAL;
    }
    int rc = validate(s, obj, err, errlen);
    if (rc != 0) return rc;
    sp_buf_t tmp = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &tmp, ingest_pack_write);
    ingest_pack_json(&pk, obj);
    if (tmp.n > LOG_MAX_BODY) {
        snprintf(err, errlen, "body is %zu bytes; the limit is %u", tmp.n, LOG_MAX_BODY);
        sp_buf_free(&tmp);
        return SP_ETOOBIG;
    }
    sp_buf_add(body, tmp.p, tmp.n);
    sp_buf_free(&tmp);
    return 0;
}

static json_t *parse(const char *json, size_t n, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(json, n, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) snprintf(err, errlen, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
    return root;
}

static int lookup_type(const char *name, int *type, char *err, size_t errlen)
{
    int t = log_type_lookup(name, strlen(name));
    if (t == LOG_EV_UNKNOWN) {
        snprintf(err, errlen, "unknown event type \"%s\"", name);
        return SP_EUNKNOWN_TYPE;
    }
    *type = t;
    return 0;
}

int ingest_event_json(const char *type_name, const char *json, size_t json_len, int *type, sp_buf_t *body, char *err,
                      size_t errlen)
{
    int t, rc;
    if ((rc = lookup_type(type_name, &t, err, errlen)) != 0) return rc;
    json_t *root = parse(json, json_len, err, errlen);
    if (root == NULL) return SP_EINVAL;
    rc = encode_body(t, root, body, err, errlen);
    json_decref(root);
    if (rc == 0) *type = t;
    return rc;
}

int ingest_append_request(const char *json, size_t json_len, int *type, sp_buf_t *body, char *err, size_t errlen)
{
    json_t *root = parse(json, json_len, err, errlen);
    if (root == NULL) return SP_EINVAL;
    int rc = SP_EINVAL, t = 0;
    json_t *jt = json_object_get(root, "type"), *jb = json_object_get(root, "body");
    if (!json_is_object(root))
        snprintf(err, errlen, "request must be a JSON object");
    else if (!json_is_string(jt))
        snprintf(err, errlen, "type: expected a string");
    else if (jb == NULL)
        snprintf(err, errlen, "body: required field is missing");
    else if (json_object_size(root) != 2)
        snprintf(err, errlen, "only the fields type and body are allowed");
    else if ((rc = lookup_type(json_string_value(jt), &t, err, errlen)) == 0)
        rc = encode_body(t, jb, body, err, errlen);
    json_decref(root);
    if (rc == 0) *type = t;
    return rc;
}

/* ---- msgpack -> JSON ---- */

static int obj_to_json(const msgpack_object *o, sp_buf_t *out, int depth)
{
    if (depth > 64) return SP_EINVAL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: sp_buf_addstr(out, "null"); return 0;
    case MSGPACK_OBJECT_BOOLEAN: sp_buf_addstr(out, o->via.boolean ? "true" : "false"); return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: sp_buf_printf(out, "%llu", (unsigned long long)o->via.u64); return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: sp_buf_printf(out, "%lld", (long long)o->via.i64); return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: sp_buf_printf(out, "%.17g", o->via.f64); return 0;
    case MSGPACK_OBJECT_STR: sp_buf_add_json_str(out, o->via.str.ptr, o->via.str.size); return 0;
    case MSGPACK_OBJECT_BIN: /* e.g. a compressed output chunk: show its size, not its bytes */
        sp_buf_printf(out, "{\"binary_bytes\":%u}", o->via.bin.size);
        return 0;
    case MSGPACK_OBJECT_ARRAY:
        sp_buf_add(out, "[", 1);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) sp_buf_add(out, ",", 1);
            int rc = obj_to_json(&o->via.array.ptr[i], out, depth + 1);
            if (rc) return rc;
        }
        sp_buf_add(out, "]", 1);
        return 0;
    case MSGPACK_OBJECT_MAP:
        sp_buf_add(out, "{", 1);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) return SP_EINVAL;
            if (i) sp_buf_add(out, ",", 1);
            sp_buf_add_json_str(out, kv->key.via.str.ptr, kv->key.via.str.size);
            sp_buf_add(out, ":", 1);
            int rc = obj_to_json(&kv->val, out, depth + 1);
            if (rc) return rc;
        }
        sp_buf_add(out, "}", 1);
        return 0;
    default: return SP_EINVAL;
    }
}

int ingest_body_to_json(sp_slice_t body, sp_buf_t *out)
{
    if (body.n == 0) {
        sp_buf_addstr(out, "null");
        return 0;
    }
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object obj;
    int rc = log_body_unpack(body, &zone, &obj);
    if (rc == 0) rc = obj_to_json(&obj, out, 0);
    msgpack_zone_destroy(&zone);
    return rc;
}
