/* Reads of the pipelines projection (see pipelines.c for the tables). */
#include "doc.h"

#include <stdio.h>

static int doc_at(log_kvtxn_t *t, const char *table, sp_slice_t key, json_t **out)
{
    unsigned tbl;
    int rc = log_kvtxn_table(t, table, &tbl);
    return rc ? rc : proj__doc_get(t, tbl, key, out);
}

static int id_at(log_kvtxn_t *t, const char *table, sp_slice_t key, char id[PROJ_ID_MAX])
{
    unsigned tbl;
    sp_slice_t v;
    int rc = log_kvtxn_table(t, table, &tbl);
    if (rc == 0) rc = log_kvtxn_get(t, tbl, key, &v);
    if (rc != 0) return rc;
    if (v.n >= PROJ_ID_MAX) return SP_ECORRUPT;
    memcpy(id, v.p, v.n);
    id[v.n] = 0;
    return 0;
}

static void slug_num_key(sp_buf_t *k, const char *slug, uint64_t n)
{
    uint8_t b[8];
    sp_be64_put(b, n);
    sp_buf_add(k, slug, strlen(slug) + 1);
    sp_buf_add(k, b, 8);
}

int proj_pipeline_get(log_kvtxn_t *t, const char *id, json_t **out)
{
    return doc_at(t, "pipelines.pipeline", SP_SLICE_STR(id), out);
}

int proj_pipeline_config(log_kvtxn_t *t, const char *id, json_t **out)
{
    return doc_at(t, "pipelines.config", SP_SLICE_STR(id), out);
}

int proj_pipeline_by_number(log_kvtxn_t *t, const char *slug, uint64_t number, char id[PROJ_ID_MAX])
{
    sp_buf_t k = {0};
    slug_num_key(&k, slug, number);
    int rc = id_at(t, "pipelines.by_number", sp_buf_slice(&k), id);
    sp_buf_free(&k);
    return rc;
}

int proj_pipeline_by_delivery(log_kvtxn_t *t, const char *delivery, char id[PROJ_ID_MAX])
{
    return id_at(t, "pipelines.by_delivery", SP_SLICE_STR(delivery), id);
}

int proj_counters(log_kvtxn_t *t, const char *slug, uint64_t *pipeline, uint64_t *job)
{
    json_t *doc;
    int rc = doc_at(t, "pipelines.counters", SP_SLICE_STR(slug), &doc);
    if (rc == SP_ENOTFOUND) {
        *pipeline = *job = 0;
        return 0;
    }
    if (rc != 0) return rc;
    *pipeline = (uint64_t)json_integer_value(json_object_get(doc, "pipeline"));
    *job = (uint64_t)json_integer_value(json_object_get(doc, "job"));
    json_decref(doc);
    return 0;
}

int proj_pipelines_list(log_kvtxn_t *t, const char *slug, uint64_t before, proj_doc_cb cb, void *arg)
{
    unsigned tbl, docs;
    int rc = log_kvtxn_table(t, "pipelines.by_project", &tbl);
    if (rc == 0) rc = log_kvtxn_table(t, "pipelines.pipeline", &docs);
    if (rc == SP_ENOTFOUND) return 0;
    if (rc != 0) return rc;
    sp_buf_t k = {0};
    slug_num_key(&k, slug, before ? ~(before - 1) : 0);
    size_t prefix = strlen(slug) + 1;
    log_kvcur_t *c;
    if ((rc = log_kvcur_open(t, tbl, &c)) != 0) {
        sp_buf_free(&k);
        return rc;
    }
    sp_slice_t key, v;
    for (rc = log_kvcur_seek(c, sp_buf_slice(&k), &key, &v); rc == 0; rc = log_kvcur_next(c, &key, &v)) {
        if (key.n != prefix + 8 || memcmp(key.p, k.p, prefix) != 0) break;
        json_t *doc;
        if (proj__doc_get(t, docs, v, &doc) != 0) continue;
        bool go_on = cb(arg, doc);
        json_decref(doc);
        if (!go_on) break;
    }
    log_kvcur_close(c);
    sp_buf_free(&k);
    return rc == SP_ENOTFOUND ? 0 : rc;
}

int proj_workflow_get(log_kvtxn_t *t, const char *id, json_t **out)
{
    return doc_at(t, "pipelines.workflow", SP_SLICE_STR(id), out);
}

/* Calls cb with the value of every key starting with prefix. */
static int each_with_prefix(log_kvtxn_t *t, const char *table, sp_slice_t prefix,
                            bool (*cb)(void *, sp_slice_t k, sp_slice_t v), void *arg)
{
    unsigned tbl;
    int rc = log_kvtxn_table(t, table, &tbl);
    if (rc == SP_ENOTFOUND) return 0;
    if (rc != 0) return rc;
    log_kvcur_t *c;
    if ((rc = log_kvcur_open(t, tbl, &c)) != 0) return rc;
    sp_slice_t k, v;
    for (rc = log_kvcur_seek(c, prefix, &k, &v); rc == 0; rc = log_kvcur_next(c, &k, &v)) {
        if (k.n < prefix.n || (prefix.n && memcmp(k.p, prefix.p, prefix.n) != 0)) break;
        if (!cb(arg, k, v)) break;
    }
    log_kvcur_close(c);
    return rc == SP_ENOTFOUND ? 0 : rc;
}

typedef struct {
    log_kvtxn_t *t;
    unsigned docs;
    proj_doc_cb cb;
    void *arg;
} by_id_ctx_t;

static bool doc_of_value(void *arg, sp_slice_t k, sp_slice_t v)
{
    by_id_ctx_t *c = arg;
    json_t *doc;
    if (proj__doc_get(c->t, c->docs, v, &doc) != 0) return true;
    bool go_on = c->cb(c->arg, doc);
    json_decref(doc);
    return go_on;
}

static bool doc_of_key(void *arg, sp_slice_t k, sp_slice_t v)
{
    by_id_ctx_t *c = arg;
    json_t *doc;
    if (proj__doc_get(c->t, c->docs, k, &doc) != 0) return true;
    bool go_on = c->cb(c->arg, doc);
    json_decref(doc);
    return go_on;
}

int proj_workflows_of(log_kvtxn_t *t, const char *pipeline_id, proj_doc_cb cb, void *arg)
{
    by_id_ctx_t c = {t, 0, cb, arg};
    int rc = log_kvtxn_table(t, "pipelines.workflow", &c.docs);
    if (rc == SP_ENOTFOUND) return 0;
    return rc ? rc : each_with_prefix(t, "pipelines.wf_of", SP_SLICE_STR(pipeline_id), doc_of_value, &c);
}

int proj_active_workflows(log_kvtxn_t *t, proj_doc_cb cb, void *arg)
{
    by_id_ctx_t c = {t, 0, cb, arg};
    int rc = log_kvtxn_table(t, "pipelines.workflow", &c.docs);
    if (rc == SP_ENOTFOUND) return 0;
    return rc ? rc : each_with_prefix(t, "pipelines.active", (sp_slice_t){0}, doc_of_key, &c);
}

int proj_job_get(log_kvtxn_t *t, const char *id, json_t **out)
{
    return doc_at(t, "pipelines.job", SP_SLICE_STR(id), out);
}

int proj_job_by_number(log_kvtxn_t *t, const char *slug, uint64_t number, char id[PROJ_ID_MAX])
{
    sp_buf_t k = {0};
    slug_num_key(&k, slug, number);
    int rc = id_at(t, "pipelines.job_number", sp_buf_slice(&k), id);
    sp_buf_free(&k);
    return rc;
}

typedef struct {
    proj_doc_cb cb;
    void *arg;
} steps_ctx_t;

static bool step_doc(void *arg, sp_slice_t k, sp_slice_t v)
{
    steps_ctx_t *c = arg;
    json_t *doc = json_loadb((const char *)v.p, v.n, 0, NULL);
    if (doc == NULL) return true;
    bool go_on = c->cb(c->arg, doc);
    json_decref(doc);
    return go_on;
}

int proj_steps_each(log_kvtxn_t *t, const char *job_id, proj_doc_cb cb, void *arg)
{
    steps_ctx_t c = {cb, arg};
    return each_with_prefix(t, "pipelines.step", SP_SLICE_STR(job_id), step_doc, &c);
}

typedef struct {
    size_t idlen;
    uint32_t from;
    proj_chunk_cb cb;
    void *arg;
} chunks_ctx_t;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool chunk(void *arg, sp_slice_t k, sp_slice_t v)
{
    chunks_ctx_t *c = arg;
    if (k.n != c->idlen + 12 || v.n != 16) return true;
    proj_chunk_t ch = {.step = be32(k.p + c->idlen),
                       .index = be32(k.p + c->idlen + 4),
                       .seq = be32(k.p + c->idlen + 8),
                       .log_seq = sp_be64_get(v.p),
                       .lines = be32(v.p + 8),
                       .bytes = be32(v.p + 12)};
    return ch.seq < c->from || c->cb(c->arg, &ch);
}

int proj_output_each(log_kvtxn_t *t, const char *job_id, int step, int index, uint32_t from, proj_chunk_cb cb,
                     void *arg)
{
    sp_buf_t k = {0};
    sp_buf_addstr(&k, job_id);
    size_t idlen = k.n;
    if (step >= 0) {
        uint32_t v[3] = {(uint32_t)step, (uint32_t)(index < 0 ? 0 : index), from};
        for (int i = 0; i < (index < 0 ? 1 : 2); i++) {
            uint8_t b[4] = {(uint8_t)(v[i] >> 24), (uint8_t)(v[i] >> 16), (uint8_t)(v[i] >> 8), (uint8_t)v[i]};
            sp_buf_add(&k, b, 4);
        }
    }
    chunks_ctx_t c = {idlen, index < 0 ? 0 : from, cb, arg};
    int rc = each_with_prefix(t, "pipelines.output", sp_buf_slice(&k), chunk, &c);
    sp_buf_free(&k);
    return rc;
}

typedef struct {
    void (*cb)(void *, const char *);
    void *arg;
} ids_ctx_t;

static bool id_key(void *arg, sp_slice_t k, sp_slice_t v)
{
    ids_ctx_t *c = arg;
    char id[PROJ_ID_MAX];
    if (k.n >= sizeof id) return true;
    memcpy(id, k.p, k.n);
    id[k.n] = 0;
    c->cb(c->arg, id);
    return true;
}

int proj_pending_pipelines(log_kvtxn_t *t, void (*cb)(void *arg, const char *id), void *arg)
{
    ids_ctx_t c = {cb, arg};
    return each_with_prefix(t, "pipelines.pending", (sp_slice_t){0}, id_key, &c);
}
