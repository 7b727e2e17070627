/* The TASK document given to an agent (docs/agent-protocol.md), and the
 * decoding of stored output chunks. */
#include "engine_internal.h"

#include "../config/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>

#define DEFAULT_NO_OUTPUT_S 600

static void setenv_str(json_t *env, const char *k, const char *v)
{
    if (v) json_object_set_new(env, k, json_string(v));
}

/* CircleCI's built-in variables, then the job's own environment (which
 * wins, as on CircleCI). */
static json_t *environment(engine_t *e, e_task_t *t, const json_t *def)
{
    e_job_t *j = t->job;
    e_wf_t *wf = j->wf;
    e_pipe_t *p = wf->p;
    json_t *env = json_object();
    char num[32], url[600];
    snprintf(num, sizeof num, "%lld", (long long)j->number);
    snprintf(url, sizeof url, "%s/%s/%lld", e->o.base_url, p->slug, (long long)j->number);
    setenv_str(env, "CI", "true");
    setenv_str(env, "CIRCLECI", "true");
    setenv_str(env, "CIRCLE_BRANCH", p->branch);
    setenv_str(env, "CIRCLE_TAG", p->tag);
    setenv_str(env, "CIRCLE_SHA1", p->revision);
    setenv_str(env, "CIRCLE_BUILD_NUM", num);
    setenv_str(env, "CIRCLE_BUILD_URL", url);
    setenv_str(env, "CIRCLE_JOB", j->name);
    setenv_str(env, "CIRCLE_WORKFLOW_ID", wf->id);
    setenv_str(env, "CIRCLE_WORKFLOW_JOB_ID", j->id);
    setenv_str(env, "CIRCLE_PIPELINE_ID", p->id);
    setenv_str(env, "CIRCLE_PROJECT_USERNAME", p->org);
    setenv_str(env, "CIRCLE_PROJECT_REPONAME", p->repo);
    setenv_str(env, "CIRCLE_REPOSITORY_URL", p->url);
    char idx[16], total[16];
    snprintf(idx, sizeof idx, "%d", t->index);
    snprintf(total, sizeof total, "%d", j->ntasks);
    setenv_str(env, "CIRCLE_NODE_INDEX", idx);
    setenv_str(env, "CIRCLE_NODE_TOTAL", total);
    const json_t *primary = json_array_get(json_object_get(def, "docker"), 0);
    const json_t *maps[] = {json_object_get(primary, "environment"), json_object_get(def, "environment")};
    for (size_t m = 0; m < SP_ARRAY_LEN(maps); m++) {
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)maps[m], k, v) {
            if (json_is_string(v))
                json_object_set(env, k, v);
            else if (json_is_integer(v) || json_is_real(v) || json_is_boolean(v)) {
                char *text = json_dumps(v, JSON_ENCODE_ANY);
                json_object_set_new(env, k, json_string(text ? text : ""));
                free(text);
            }
        }
    }
    return env;
}

static json_t *executor(const json_t *def)
{
    const json_t *docker = json_object_get(def, "docker"), *machine = json_object_get(def, "machine"),
                 *macos = json_object_get(def, "macos");
    const char *rc = json_string_value(json_object_get(def, "resource_class")) ?: "medium";
    if (docker) {
        /* Every image with what the docker executor needs: the first is
         * the primary container, the others are services on localhost. */
        json_t *images = json_array();
        static const char *fields[] = {"image", "name", "entrypoint", "command", "user", "environment", "auth"};
        size_t i;
        json_t *img;
        json_array_foreach ((json_t *)docker, i, img) {
            json_t *o = json_object();
            for (size_t f = 0; f < SP_ARRAY_LEN(fields); f++)
                if (json_object_get(img, fields[f])) json_object_set(o, fields[f], json_object_get(img, fields[f]));
            json_array_append_new(images, o);
        }
        return json_pack("{s:s, s:s, s:s, s:o}", "type", "docker", "image",
                         json_string_value(json_object_get(json_array_get(docker, 0), "image")) ?: "", "resource_class",
                         rc, "images", images);
    }
    if (macos)
        return json_pack("{s:s, s:s, s:s}", "type", "macos", "xcode",
                         json_string_value(json_object_get(macos, "xcode")) ?: "", "resource_class", rc);
    const char *image = json_is_object(machine) ? json_string_value(json_object_get(machine, "image")) : NULL;
    return json_pack("{s:s, s:s, s:s}", "type", "machine", "image", image ?: "default", "resource_class", rc);
}

static json_t *opt(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return v ? json_incref(v) : json_null();
}

static json_t *run_step(int id, const json_t *run)
{
    const char *cmd = json_string_value(json_object_get(run, "command")) ?: "";
    const char *name = json_string_value(json_object_get(run, "name"));
    int64_t ms = DEFAULT_NO_OUTPUT_S * 1000;
    const char *not = json_string_value(json_object_get(run, "no_output_timeout"));
    if (not ) config_parse_duration(not, &ms);
    json_t *env = json_object_get(run, "environment");
    return json_pack("{s:i, s:s, s:s, s:s, s:o, s:O, s:o, s:b, s:s, s:I}", "id", id, "type", "run", "name",
                     name ? name : cmd, "command", cmd, "shell", opt(run, "shell"), "environment",
                     json_is_object(env) ? env : json_object(), "working_directory", opt(run, "working_directory"),
                     "background", json_is_true(json_object_get(run, "background")), "when",
                     json_string_value(json_object_get(run, "when")) ?: "on_success", "no_output_timeout_s",
                     (json_int_t)(ms / 1000 > 0 ? ms / 1000 : 1));
}

/* One config step in the agent's form. Kinds the agent does not run yet
 * pass through with their parameters, and the agent fails them with a
 * clear message. */
static json_t *step(int id, const json_t *s)
{
    if (json_is_string(s)) {
        const char *kind = json_string_value(s);
        if (strcmp(kind, "checkout") == 0)
            return json_pack("{s:i, s:s, s:s, s:n}", "id", id, "type", "checkout", "name", "Checkout code", "path");
        return json_pack("{s:i, s:s, s:s, s:{}}", "id", id, "type", kind, "name", kind, "params");
    }
    const char *kind = json_object_iter_key(json_object_iter((json_t *)s));
    json_t *params = json_object_iter_value(json_object_iter((json_t *)s));
    if (kind == NULL) return json_pack("{s:i, s:s, s:s}", "id", id, "type", "unknown", "name", "unknown");
    if (strcmp(kind, "run") == 0 || strcmp(kind, "deploy") == 0) return run_step(id, params);
    if (strcmp(kind, "checkout") == 0)
        return json_pack("{s:i, s:s, s:s, s:o}", "id", id, "type", "checkout", "name", "Checkout code", "path",
                         opt(params, "path"));
    return json_pack("{s:i, s:s, s:s, s:O}", "id", id, "type", kind, "name",
                     json_string_value(json_object_get(params, "name")) ?: kind, "params", params);
}

json_t *e__task_doc(engine_t *e, e_task_t *t, const char *lease)
{
    e_job_t *j = t->job;
    e_wf_t *wf = j->wf;
    e_pipe_t *p = wf->p;
    const json_t *def = json_object_get(json_object_get(p->processed, "jobs"), j->def ? j->def : "");
    json_t *steps = json_array();
    size_t i;
    json_t *s;
    json_array_foreach (json_object_get(def, "steps"), i, s) json_array_append_new(steps, step(101 + (int)i, s));
    const char *wd = json_string_value(json_object_get(def, "working_directory"));
    json_t *task = json_pack(
        "{s:s, s:s, s:s, s:I, s:s, s:{s:s, s:s, s:s}, s:{s:s, s:I}, s:{s:s, s:s}, s:{s:s, s:s, s:o, s:o}, s:o, s:s, "
        "s:o, s:o, s:i, s:i, s:{s:I}, s:o}",
        "task_id", t->task_id, "lease", lease, "job_id", j->id, "job_number", (json_int_t)j->number, "job_name",
        j->name, "project", "slug", p->slug, "org", p->org, "repo", p->repo, "pipeline", "id", p->id, "number",
        (json_int_t)p->number, "workflow", "id", wf->id, "name", wf->name, "checkout", "url", p->url, "revision",
        p->revision, "branch", p->branch ? json_string(p->branch) : json_null(), "tag",
        p->tag ? json_string(p->tag) : json_null(), "executor", executor(def), "working_directory",
        wd ? wd : "~/project", "shell", opt(def, "shell"), "environment", environment(e, t, def), "parallelism",
        j->ntasks, "node_index", t->index, "limits", "job_timeout_s", (json_int_t)e->o.job_timeout_s, "steps", steps);
    return task;
}

/* ---- output chunks ---- */

int engine_chunk_decode(sp_slice_t z, int64_t t0_ns, json_t *out)
{
    unsigned long long raw = ZSTD_getFrameContentSize(z.p, z.n);
    if (raw == ZSTD_CONTENTSIZE_ERROR || raw == ZSTD_CONTENTSIZE_UNKNOWN || raw > (64u << 20)) return SP_ECORRUPT;
    uint8_t *buf = sp_xmalloc(raw ? raw : 1);
    size_t n = ZSTD_decompress(buf, raw, z.p, z.n);
    int rc = ZSTD_isError(n) ? SP_ECORRUPT : 0;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object o;
    size_t off = 0;
    if (rc == 0 && (msgpack_unpack((const char *)buf, n, &off, &zone, &o) != MSGPACK_UNPACK_SUCCESS ||
                    o.type != MSGPACK_OBJECT_ARRAY))
        rc = SP_ECORRUPT;
    /* Consecutive lines of one stream become one entry, as CircleCI's
     * output files hold chunks of text rather than single lines. */
    sp_buf_t text = {0};
    int cur = -1;
    int64_t cur_t = 0;
    for (uint32_t i = 0; rc == 0 && i <= o.via.array.size; i++) {
        const msgpack_object *l = i < o.via.array.size ? o.via.array.ptr[i].via.array.ptr : NULL;
        int stream = l ? (int)l[1].via.u64 : -2;
        if (cur >= 0 && stream != cur) {
            char ts[40];
            sp_format_time(t0_ns + cur_t * 1000000, ts, sizeof ts);
            json_array_append_new(out, json_pack("{s:s, s:s, s:s%}", "type", cur ? "err" : "out", "time", ts, "message",
                                                 (const char *)text.p, text.n));
            text.n = 0;
        }
        if (l == NULL) break;
        if (text.n == 0) cur_t = (int64_t)l[0].via.u64;
        cur = stream;
        /* Output is bytes; JSON needs UTF-8: invalid sequences become U+FFFD. */
        sp_buf_add_utf8(&text, l[2].via.str.ptr, l[2].via.str.size);
        sp_buf_add(&text, "\n", 1);
    }
    sp_buf_free(&text);
    msgpack_zone_destroy(&zone);
    free(buf);
    return rc;
}
