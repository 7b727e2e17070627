/*
 * The processed config as YAML, through libyaml's emitter, in the shape
 * `circleci config process` prints: block style, lists not indented under
 * their key, no line folding. A string that a YAML 1.1 reader would take
 * for another type ("yes", "1.0", "null", "") is quoted so that the text
 * reads back as the same values.
 */
#include "config_internal.h"

#include <math.h>
#include <stdio.h>
#include <yaml.h>

static int on_write(void *data, unsigned char *buf, size_t n)
{
    sp_buf_add(data, buf, n);
    return 1;
}

/* The shortest text that reads back as the same double, always with a
 * '.' or an exponent so that it stays a float. */
static void format_real(double v, char *out, size_t n)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v) break;
    }
    if (strpbrk(out, ".eEn") == NULL) {
        size_t l = strlen(out);
        if (l + 3 < n) memcpy(out + l, ".0", 3);
    }
}

static int emit_scalar(yaml_emitter_t *e, const char *s, size_t n, bool plain_ok, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)n, plain_ok, 1, style)) return -1;
    return yaml_emitter_emit(e, &ev) ? 0 : -1;
}

static int emit_value(yaml_emitter_t *e, const json_t *v)
{
    yaml_event_t ev;
    char buf[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)) return -1;
        if (!yaml_emitter_emit(e, &ev)) return -1;
        const char *k;
        json_t *x;
        json_object_foreach ((json_t *)v, k, x) {
            size_t kn = strlen(k);
            if (emit_scalar(e, k, kn, !cfg__plain_is_special(k, kn), YAML_ANY_SCALAR_STYLE) != 0) return -1;
            if (emit_value(e, x) != 0) return -1;
        }
        if (!yaml_mapping_end_event_initialize(&ev)) return -1;
        return yaml_emitter_emit(e, &ev) ? 0 : -1;
    }
    case JSON_ARRAY: {
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE)) return -1;
        if (!yaml_emitter_emit(e, &ev)) return -1;
        size_t i;
        json_t *x;
        json_array_foreach (v, i, x)
            if (emit_value(e, x) != 0) return -1;
        if (!yaml_sequence_end_event_initialize(&ev)) return -1;
        return yaml_emitter_emit(e, &ev) ? 0 : -1;
    }
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        bool special = cfg__plain_is_special(s, n);
        yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
        if (memchr(s, '\n', n) != NULL)
            style = YAML_LITERAL_SCALAR_STYLE;
        else if (special)
            style = YAML_SINGLE_QUOTED_SCALAR_STYLE;
        return emit_scalar(e, s, n, !special, style);
    }
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        return emit_scalar(e, buf, strlen(buf), true, YAML_PLAIN_SCALAR_STYLE);
    case JSON_REAL:
        format_real(json_real_value(v), buf, sizeof buf);
        return emit_scalar(e, buf, strlen(buf), true, YAML_PLAIN_SCALAR_STYLE);
    case JSON_TRUE: return emit_scalar(e, "true", 4, true, YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE: return emit_scalar(e, "false", 5, true, YAML_PLAIN_SCALAR_STYLE);
    case JSON_NULL: return emit_scalar(e, "null", 4, true, YAML_PLAIN_SCALAR_STYLE);
    }
    return -1;
}

int config_emit_yaml(const config_result_t *r, sp_buf_t *out)
{
    if (r == NULL || !r->valid || r->processed == NULL) return SP_EINVAL;
    yaml_emitter_t e;
    if (!yaml_emitter_initialize(&e)) return SP_EIO;
    yaml_emitter_set_output(&e, on_write, out);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_indent(&e, 2);
    yaml_event_t ev;
    int rc = 0;
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || !yaml_emitter_emit(&e, &ev)) rc = SP_EIO;
    if (rc == 0 && (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || !yaml_emitter_emit(&e, &ev)))
        rc = SP_EIO;
    if (rc == 0 && emit_value(&e, r->processed) != 0) rc = SP_EIO;
    if (rc == 0 && (!yaml_document_end_event_initialize(&ev, 1) || !yaml_emitter_emit(&e, &ev))) rc = SP_EIO;
    if (rc == 0 && (!yaml_stream_end_event_initialize(&ev) || !yaml_emitter_emit(&e, &ev))) rc = SP_EIO;
    if (rc == 0 && !yaml_emitter_flush(&e)) rc = SP_EIO;
    yaml_emitter_delete(&e);
    return rc;
}
