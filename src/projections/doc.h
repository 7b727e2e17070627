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
/* The event time as RFC 3339 (UTC, milliseconds). */
json_t *proj__time(int64_t ns);
/* Opens a table of this projection, e.g. proj__table(t, "pipelines.doc"). */
int proj__table(log_kvtxn_t *t, const char *name, unsigned *tbl);
/* String member or "" */
const char *proj__str(const json_t *o, const char *key);

#endif
