/* Private to src/projections/: documents stored as JSON text in view
 * tables, and event bodies read as jansson trees. */
#ifndef SPOOL_PROJ_DOC_H
#define SPOOL_PROJ_DOC_H

#include "projections.h"

#include <stdlib.h>

/* The event's body as a JSON object (caller decrefs), or NULL when the
 * body is not a map (a record written by a broken producer). */
json_t *proj__body(const log_event_t *ev);
/* Reads the JSON document at key; SP_ENOTFOUND when absent. */
int proj__doc_get(log_kvtxn_t *t, unsigned tbl, sp_slice_t key, json_t **out);
int proj__doc_put(log_kvtxn_t *t, unsigned tbl, sp_slice_t key, const json_t *doc);
/* A write-back cache of documents for one batch of events: a document
 * read again in the batch is not parsed again, and one changed by many
 * events is written once. Only for tables whose keys are strings, and
 * only where every change is a get, a change, then a put: the cache
 * holds the very object put, so a change after the put would be written
 * too. Bounded: past proj_doc_cache_max documents (projections.h) it
 * writes what it has and forgets it. */
typedef struct {
    sp_map_t map; /* "<table>:<key>" -> an entry of doc.c */
} proj__docs_t;
/* Like proj__doc_get: a new reference, from the cache when it is there. */
int proj__docs_get(proj__docs_t *d, log_kvtxn_t *t, unsigned tbl, const char *key, json_t **out);
/* Like proj__doc_put, but the bytes are written at the flush. Keeps a
 * reference to doc. */
int proj__docs_put(proj__docs_t *d, log_kvtxn_t *t, unsigned tbl, const char *key, json_t *doc);
/* Writes every changed document into t and empties the cache. */
int proj__docs_flush(proj__docs_t *d, log_kvtxn_t *t);
/* Empties the cache without writing (the batch was aborted). */
void proj__docs_discard(proj__docs_t *d);
/* The event time as RFC 3339 (UTC, milliseconds). */
json_t *proj__time(int64_t ns);
/* Opens a table of this projection, e.g. proj__table(t, "pipelines.doc"). */
int proj__table(log_kvtxn_t *t, const char *name, unsigned *tbl);
/* String member or "" */
const char *proj__str(const json_t *o, const char *key);

#endif
