/*
 * Record layout, version 1 (also in docs/log-format.md).
 *
 * Key:   8-byte big-endian sequence number, from 1, no gaps.
 * Value: a msgpack array of 9 elements:
 *
 *   [0] layout      uint   always 1 for this layout
 *   [1] flags       uint   bit 0: redacted (the body was expired)
 *   [2] type        str    dotted event name, e.g. "job.started"
 *   [3] schema      uint   schema version of the body for this type
 *   [4] time        uint   UTC nanoseconds since the epoch, set at append
 *   [5] actor       str    who caused it ("system", "cli", "user:...")
 *   [6] request_id  str    correlation id ("" when none)
 *   [7] body        bin    msgpack-encoded map                (flags bit 0 clear)
 *                   array  [original_sum uint, redacted_at uint] (flags bit 0 set)
 *   [8] sum         uint   always 9 bytes (0xcf + 8 bytes big-endian):
 *                          XXH3-64, seeded with the sequence number, of
 *                          every value byte before this element.
 *
 * The checksum covers the key through its seed, so a record copied under
 * the wrong key fails verification. A redaction rewrites the body and
 * the checksum but keeps the original checksum inside the tombstone.
 *
 * Records are written through msgpack-c's packer. The envelope is read by
 * the small decoder below instead of msgpack-c's unpacker: it runs for
 * every event of every replay, and reading nine known fields in place
 * needs no allocation, while msgpack_unpack needs a zone per record.
 */
#include "log_internal.h"

#include <xxhash.h>

#define SUM_BYTES     9
#define FLAG_REDACTED 1u
#define MAX_TYPE_NAME 64

static int pack_write(void *data, const char *buf, size_t len)
{
    sp_buf_add(data, buf, len);
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s ? s : "", n);
}

static void put_sum(sp_buf_t *out, size_t start, uint64_t seq)
{
    uint64_t sum = XXH3_64bits_withSeed(out->p + start, out->n - start, seq);
    uint8_t tail[SUM_BYTES] = {0xcf};
    sp_be64_put(tail + 1, sum);
    sp_buf_add(out, tail, sizeof tail);
}

void log_record_encode(sp_buf_t *out, uint64_t seq, const log_entry_t *e, int64_t time_ns)
{
    size_t start = out->n;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, pack_write);
    msgpack_pack_array(&pk, 9);
    msgpack_pack_uint32(&pk, LOG_RECORD_LAYOUT);
    msgpack_pack_uint32(&pk, 0);
    pack_str(&pk, log_type_name(e->type));
    msgpack_pack_uint32(&pk, log_type_schema(e->type));
    msgpack_pack_uint64(&pk, (uint64_t)time_ns);
    pack_str(&pk, e->actor);
    pack_str(&pk, e->request_id);
    msgpack_pack_bin(&pk, e->body.n);
    msgpack_pack_bin_body(&pk, e->body.p, e->body.n);
    put_sum(out, start, seq);
}

/* ---- envelope reader ---- */

typedef struct {
    const uint8_t *p, *end;
} rd_t;

static bool rd_need(rd_t *r, size_t n) { return (size_t)(r->end - r->p) >= n; }

static uint64_t rd_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

static bool rd_uint(rd_t *r, uint64_t *v)
{
    if (!rd_need(r, 1)) return false;
    uint8_t t = *r->p++;
    int n;
    if (t <= 0x7f) {
        *v = t;
        return true;
    }
    switch (t) {
    case 0xcc: n = 1; break;
    case 0xcd: n = 2; break;
    case 0xce: n = 4; break;
    case 0xcf: n = 8; break;
    default: return false;
    }
    if (!rd_need(r, (size_t)n)) return false;
    *v = rd_be(r->p, n);
    r->p += n;
    return true;
}

/* Reads a str (kind 's') or bin (kind 'b') header and body. */
static bool rd_bytes(rd_t *r, char kind, sp_slice_t *out)
{
    if (!rd_need(r, 1)) return false;
    uint8_t t = *r->p++;
    int n;
    uint64_t len;
    if (kind == 's' && t >= 0xa0 && t <= 0xbf) {
        len = t & 0x1f;
        n = 0;
    } else if ((kind == 's' && t == 0xd9) || (kind == 'b' && t == 0xc4)) {
        n = 1;
    } else if ((kind == 's' && t == 0xda) || (kind == 'b' && t == 0xc5)) {
        n = 2;
    } else if ((kind == 's' && t == 0xdb) || (kind == 'b' && t == 0xc6)) {
        n = 4;
    } else {
        return false;
    }
    if (n) {
        if (!rd_need(r, (size_t)n)) return false;
        len = rd_be(r->p, n);
        r->p += n;
    }
    if (!rd_need(r, len)) return false;
    *out = (sp_slice_t){r->p, len};
    r->p += len;
    return true;
}

static bool valid_type_name(sp_slice_t s)
{
    if (s.n == 0 || s.n > MAX_TYPE_NAME) return false;
    for (size_t i = 0; i < s.n; i++) {
        uint8_t c = s.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_')) return false;
    }
    return true;
}

static int corrupt(char *why, size_t whylen, const char *reason)
{
    if (why) snprintf(why, whylen, "%s", reason);
    return SP_ECORRUPT;
}

int log_record_decode(uint64_t seq, sp_slice_t rec, log_event_t *ev, char *why, size_t whylen)
{
    if (rec.n < 1 + SUM_BYTES) return corrupt(why, whylen, "record too short");
    const uint8_t *sum_at = rec.p + rec.n - SUM_BYTES;
    if (sum_at[0] != 0xcf) return corrupt(why, whylen, "checksum field missing (torn record?)");
    uint64_t want = sp_be64_get(sum_at + 1);
    if (XXH3_64bits_withSeed(rec.p, rec.n - SUM_BYTES, seq) != want) return corrupt(why, whylen, "checksum mismatch");

    rd_t r = {rec.p, sum_at};
    log_event_t e = {.seq = seq};
    uint64_t layout, flags, schema, time_ns;
    if (*r.p++ != 0x99) return corrupt(why, whylen, "not a 9-element array");
    if (!rd_uint(&r, &layout)) return corrupt(why, whylen, "bad layout field");
    if (layout != LOG_RECORD_LAYOUT) return corrupt(why, whylen, "unsupported record layout");
    if (!rd_uint(&r, &flags) || (flags & ~(uint64_t)FLAG_REDACTED)) return corrupt(why, whylen, "bad flags");
    if (!rd_bytes(&r, 's', &e.type_name) || !valid_type_name(e.type_name)) return corrupt(why, whylen, "bad type name");
    if (!rd_uint(&r, &schema) || schema == 0 || schema > UINT32_MAX) return corrupt(why, whylen, "bad schema version");
    if (!rd_uint(&r, &time_ns) || time_ns > INT64_MAX) return corrupt(why, whylen, "bad time");
    if (!rd_bytes(&r, 's', &e.actor) || e.actor.n > LOG_MAX_FIELD) return corrupt(why, whylen, "bad actor");
    if (!rd_bytes(&r, 's', &e.request_id) || e.request_id.n > LOG_MAX_FIELD)
        return corrupt(why, whylen, "bad request id");
    if (flags & FLAG_REDACTED) {
        uint64_t redacted_at;
        if (!rd_need(&r, 1) || *r.p++ != 0x92 || !rd_uint(&r, &e.original_sum) || !rd_uint(&r, &redacted_at))
            return corrupt(why, whylen, "bad redaction tombstone");
        e.redacted = true;
        e.body = (sp_slice_t){(const uint8_t *)"", 0};
    } else {
        if (!rd_bytes(&r, 'b', &e.body) || e.body.n > LOG_MAX_BODY) return corrupt(why, whylen, "bad body");
        e.original_sum = want;
    }
    if (r.p != r.end) return corrupt(why, whylen, "trailing bytes before checksum");
    e.schema = (uint32_t)schema;
    e.time_ns = (int64_t)time_ns;
    e.type = log_type_lookup((const char *)e.type_name.p, e.type_name.n);
    *ev = e;
    return 0;
}

int log_record_redact(uint64_t seq, sp_slice_t rec, int64_t now_ns, sp_buf_t *out)
{
    log_event_t ev;
    int rc = log_record_decode(seq, rec, &ev, NULL, 0);
    if (rc != 0) return rc;
    if (ev.redacted) return SP_EEXIST;
    size_t start = out->n;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, pack_write);
    msgpack_pack_array(&pk, 9);
    msgpack_pack_uint32(&pk, LOG_RECORD_LAYOUT);
    msgpack_pack_uint32(&pk, FLAG_REDACTED);
    msgpack_pack_str(&pk, ev.type_name.n);
    msgpack_pack_str_body(&pk, ev.type_name.p, ev.type_name.n);
    msgpack_pack_uint32(&pk, ev.schema);
    msgpack_pack_uint64(&pk, (uint64_t)ev.time_ns);
    msgpack_pack_str(&pk, ev.actor.n);
    msgpack_pack_str_body(&pk, ev.actor.p, ev.actor.n);
    msgpack_pack_str(&pk, ev.request_id.n);
    msgpack_pack_str_body(&pk, ev.request_id.p, ev.request_id.n);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, ev.original_sum);
    msgpack_pack_uint64(&pk, (uint64_t)now_ns);
    put_sum(out, start, seq);
    return 0;
}

/* ---- bodies ---- */

/* Walks msgpack bytes without allocating and checks that the value is
 * complete and that no container claims more elements than bytes remain.
 * msgpack-c sizes its allocations from the claimed counts, so without
 * this a damaged body of a few bytes could ask for gigabytes. */
static bool msgpack_plausible(const uint8_t *p, size_t n)
{
    static const uint8_t fixed[32] = {
        /* 0xc0..0xdf: extra bytes after the type byte for fixed-size types,
         * 0xff for types handled below */
        0, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 4,    8,    1,    2,    4,    8,
        1, 2,    4, 8, 2,    3,    5,    9,    17,   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    };
    const uint8_t *end = p + n;
    uint64_t pending = 1; /* values still to read */
    while (pending > 0) {
        if (p >= end || pending > (uint64_t)(end - p)) return false;
        uint8_t t = *p++;
        pending--;
        uint64_t len = 0, items = 0;
        int w;
        if (t <= 0x7f || t >= 0xe0) continue;
        if (t <= 0x8f) {
            items = (uint64_t)(t & 0x0f) * 2;
        } else if (t <= 0x9f) {
            items = t & 0x0f;
        } else if (t <= 0xbf) {
            len = t & 0x1f;
        } else if (fixed[t - 0xc0] != 0xff) {
            len = fixed[t - 0xc0];
        } else {
            switch (t) {
            case 0xc4:
            case 0xd9: w = 1; break;
            case 0xc5:
            case 0xda:
            case 0xdc:
            case 0xde: w = 2; break;
            case 0xc6:
            case 0xdb:
            case 0xdd:
            case 0xdf: w = 4; break;
            case 0xc7: w = -1; break;
            case 0xc8: w = -2; break;
            case 0xc9: w = -4; break;
            default: return false; /* 0xc1 is never used */
            }
            int bytes = w < 0 ? -w : w;
            if ((size_t)(end - p) < (size_t)bytes) return false;
            uint64_t v = rd_be(p, bytes);
            p += bytes;
            if (t == 0xdc || t == 0xdd)
                items = v;
            else if (t == 0xde || t == 0xdf)
                items = v * 2;
            else
                len = v + (w < 0 ? 1 : 0); /* ext carries a type byte */
        }
        if (len > (uint64_t)(end - p)) return false;
        p += len;
        pending += items;
    }
    return p == end;
}

int log_body_unpack(sp_slice_t body, msgpack_zone *zone, msgpack_object *out)
{
    if (!msgpack_plausible(body.p, body.n)) return SP_ECORRUPT;
    size_t off = 0;
    msgpack_object obj;
    msgpack_unpack_return ret = msgpack_unpack((const char *)body.p, body.n, &off, zone, &obj);
    if (ret != MSGPACK_UNPACK_SUCCESS || off != body.n || obj.type != MSGPACK_OBJECT_MAP) return SP_ECORRUPT;
    *out = obj;
    return 0;
}

const msgpack_object *log_body_get(const msgpack_object *map, const char *key)
{
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

bool log_body_str(const msgpack_object *map, const char *key, sp_slice_t *out)
{
    const msgpack_object *v = log_body_get(map, key);
    if (v == NULL || v->type != MSGPACK_OBJECT_STR) return false;
    *out = (sp_slice_t){(const uint8_t *)v->via.str.ptr, v->via.str.size};
    return true;
}

bool log_body_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
    const msgpack_object *v = log_body_get(map, key);
    if (v == NULL || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return false;
    *out = v->via.u64;
    return true;
}
