/*
 * ingest: the one validation point between the outside world and the
 * log. Everything that becomes an event body passes through here first;
 * bad input gets a clear message and nothing is appended.
 *
 * Threads: every function is pure and may run on any thread.
 */
#ifndef SPOOL_INGEST_H
#define SPOOL_INGEST_H

#include "../log/log.h"

#include <jansson.h>

/* Validates a JSON object as the body of event type `type_name` and
 * encodes it as msgpack into body (appended). On success *type is the
 * type id. On failure returns SP_EINVAL or SP_EUNKNOWN_TYPE with a
 * message in err naming the line and column or the field. */
int ingest_event_json(const char *type_name, const char *json, size_t json_len, int *type, sp_buf_t *body, char *err,
                      size_t errlen);

/* Parses a request to append: {"type": "...", "body": {...}}. Same
 * contract as ingest_event_json. */
int ingest_append_request(const char *json, size_t json_len, int *type, sp_buf_t *body, char *err, size_t errlen);

/* Packs a JSON value as msgpack (for event bodies built in code). */
void ingest_pack_json(msgpack_packer *pk, const json_t *v);
/* msgpack_packer write callback appending to an sp_buf_t. */
int ingest_pack_write(void *data, const char *buf, size_t len);

/* Writes a msgpack body as JSON text (appended). */
int ingest_body_to_json(sp_slice_t body, sp_buf_t *out);

#endif
