/* The TASK document of docs/agent-protocol.md, parsed into agent__task_t.
 * The server is trusted to send what the protocol says, but a task that
 * does not parse must still be finished cleanly, so every field is checked
 * and a bad one gives a sentence naming it. */
#include "agent_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    char *err;
    size_t errlen;
} ctx_t;

static int bad(ctx_t *c, const char *field, const char *want)
{
    snprintf(c->err, c->errlen, "task field \"%s\": expected %s", field, want);
    return SP_EINVAL;
}

/* An optional string: NULL when absent or null. */
static int opt_str(ctx_t *c, json_t *o, const char *key, const char *field, char **out)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_string(v)) return bad(c, field, "a string");
    *out = sp_xstrndup(json_string_value(v), json_string_length(v));
    return 0;
}

static int req_str(ctx_t *c, json_t *o, const char *key, const char *field, char **out)
{
    int rc = opt_str(c, o, key, field, out);
    if (rc == 0 && *out == NULL) return bad(c, field, "a string");
    return rc;
}

/* Seconds (possibly fractional) as milliseconds; def when absent/null. */
static int opt_secs(ctx_t *c, json_t *o, const char *key, const char *field, int64_t def, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1e9)
        return bad(c, field, "a number of seconds");
    *out = (int64_t)(json_number_value(v) * 1000.0 + 0.5);
    return 0;
}

static int parse_env(ctx_t *c, json_t *o, const char *field, agent__env_t **out, size_t *nout)
{
    if (o == NULL || json_is_null(o)) return 0;
    if (!json_is_object(o)) return bad(c, field, "an object of strings");
    size_t n = json_object_size(o), i = 0;
    agent__env_t *env = sp_xcalloc(n ? n : 1, sizeof *env);
    const char *k;
    json_t *v;
    json_object_foreach (o, k, v) {
        char *val;
        bool nul = false;
        if (json_is_string(v)) {
            val = sp_xstrndup(json_string_value(v), json_string_length(v));
            nul = strlen(val) != json_string_length(v);
        } else if (json_is_integer(v))
            val = sp_xasprintf("%lld", (long long)json_integer_value(v));
        else if (json_is_boolean(v))
            val = sp_xstrdup(json_is_true(v) ? "true" : "false");
        else if (json_is_real(v))
            val = sp_xasprintf("%.17g", json_real_value(v)); /* e.g. an image's environment: {PI: 3.14} */
        else {
            for (size_t j = 0; j < i; j++) free(env[j].name), free(env[j].value);
            free(env);
            return bad(c, field, "an object of strings");
        }
        /* An environment entry cannot hold '=' in its name or a NUL. */
        if (*k == 0 || strchr(k, '=') != NULL || nul) {
            free(val);
            continue;
        }
        env[i].name = sp_xstrdup(k);
        env[i].value = val;
        i++;
    }
    *out = env;
    *nout = i;
    return 0;
}

static void free_env(agent__env_t *env, size_t n)
{
    for (size_t i = 0; i < n; i++) free(env[i].name), free(env[i].value);
    free(env);
}

static int parse_step(ctx_t *c, json_t *o, agent__step_t *s)
{
    if (!json_is_object(o)) return bad(c, "steps[]", "an object");
    json_t *id = json_object_get(o, "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > 1000000)
        return bad(c, "steps[].id", "an integer");
    s->id = (int)json_integer_value(id);
    int rc;
    if ((rc = req_str(c, o, "type", "steps[].type", &s->type)) != 0) return rc;
    if ((rc = opt_str(c, o, "name", "steps[].name", &s->name)) != 0) return rc;
    if (s->name == NULL) s->name = sp_xstrdup(s->type);
    if ((rc = opt_str(c, o, "command", "steps[].command", &s->command)) != 0) return rc;
    if ((rc = opt_str(c, o, "shell", "steps[].shell", &s->shell)) != 0) return rc;
    if ((rc = opt_str(c, o, "working_directory", "steps[].working_directory", &s->working_directory)) != 0) return rc;
    if ((rc = opt_str(c, o, "path", "steps[].path", &s->path)) != 0) return rc;
    if ((rc = parse_env(c, json_object_get(o, "environment"), "steps[].environment", &s->env, &s->nenv)) != 0)
        return rc;
    json_t *bg = json_object_get(o, "background");
    if (bg != NULL && !json_is_null(bg) && !json_is_boolean(bg)) return bad(c, "steps[].background", "a boolean");
    s->background = json_is_true(bg);
    json_t *when = json_object_get(o, "when");
    s->when = AGENT__WHEN_ON_SUCCESS;
    if (when != NULL && !json_is_null(when)) {
        const char *w = json_string_value(when);
        if (w == NULL) return bad(c, "steps[].when", "on_success, on_fail or always");
        if (strcmp(w, "on_fail") == 0)
            s->when = AGENT__WHEN_ON_FAIL;
        else if (strcmp(w, "always") == 0)
            s->when = AGENT__WHEN_ALWAYS;
        else if (strcmp(w, "on_success") != 0)
            return bad(c, "steps[].when", "on_success, on_fail or always");
    }
    if ((rc = opt_secs(c, o, "no_output_timeout_s", "steps[].no_output_timeout_s", AGENT__DEFAULT_NO_OUTPUT,
                       &s->no_output_timeout_ms)) != 0)
        return rc;
    if (strcmp(s->type, "run") == 0 && s->command == NULL) return bad(c, "steps[].command", "a string for a run step");
    return 0;
}

static void free_step(agent__step_t *s)
{
    free(s->type);
    free(s->name);
    free(s->command);
    free(s->shell);
    free(s->working_directory);
    free(s->path);
    free_env(s->env, s->nenv);
}

static void free_image(agent__image_t *im)
{
    free(im->image);
    free(im->name);
    free(im->user);
    agent__argv_free(im->entrypoint);
    agent__argv_free(im->command);
    free_env(im->env, im->nenv);
    free(im->auth_user);
    free(im->auth_pass);
}

/* entrypoint and command: a list of strings, or one string split into
 * words as a shell would. */
static int opt_words(ctx_t *c, json_t *o, const char *key, const char *field, char ***out)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        *out = agent__split_words(json_string_value(v), 0);
        return 0;
    }
    if (!json_is_array(v)) return bad(c, field, "a string or a list of strings");
    char **w = sp_xcalloc(json_array_size(v) + 1, sizeof *w);
    size_t i;
    json_t *e;
    json_array_foreach (v, i, e) {
        if (!json_is_string(e)) {
            agent__argv_free(w);
            return bad(c, field, "a string or a list of strings");
        }
        w[i] = sp_xstrdup(json_string_value(e));
    }
    *out = w;
    return 0;
}

static int parse_image(ctx_t *c, json_t *o, agent__image_t *im)
{
    int rc;
    if (!json_is_object(o)) return bad(c, "executor.images[]", "an object");
    if ((rc = req_str(c, o, "image", "executor.images[].image", &im->image)) != 0) return rc;
    if ((rc = opt_str(c, o, "name", "executor.images[].name", &im->name)) != 0) return rc;
    if ((rc = opt_str(c, o, "user", "executor.images[].user", &im->user)) != 0) return rc;
    if ((rc = opt_words(c, o, "entrypoint", "executor.images[].entrypoint", &im->entrypoint)) != 0) return rc;
    if ((rc = opt_words(c, o, "command", "executor.images[].command", &im->command)) != 0) return rc;
    if ((rc = parse_env(c, json_object_get(o, "environment"), "executor.images[].environment", &im->env, &im->nenv)) !=
        0)
        return rc;
    json_t *auth = json_object_get(o, "auth");
    if (auth != NULL && !json_is_null(auth)) {
        if (!json_is_object(auth)) return bad(c, "executor.images[].auth", "an object");
        if ((rc = opt_str(c, auth, "username", "executor.images[].auth.username", &im->auth_user)) != 0) return rc;
        if ((rc = opt_str(c, auth, "password", "executor.images[].auth.password", &im->auth_pass)) != 0) return rc;
    }
    return 0;
}

/* executor: {type, image, images: [{image, name, entrypoint, command,
 * user, environment, auth}], resource_class}. images is the config's
 * docker list; a server that sends only image gets a primary alone. */
static int parse_executor(ctx_t *c, json_t *o, agent__task_t *t)
{
    if (o == NULL || json_is_null(o)) return 0;
    if (!json_is_object(o)) return bad(c, "executor", "an object");
    int rc;
    if ((rc = opt_str(c, o, "type", "executor.type", &t->executor_type)) != 0) return rc;
    json_t *images = json_object_get(o, "images");
    if (images != NULL && !json_is_null(images)) {
        if (!json_is_array(images)) return bad(c, "executor.images", "an array");
        t->images = sp_xcalloc(json_array_size(images) + 1, sizeof *t->images);
        size_t i;
        json_t *im;
        json_array_foreach (images, i, im) {
            t->nimages = i + 1;
            if ((rc = parse_image(c, im, &t->images[i])) != 0) return rc;
        }
    }
    if (t->nimages == 0) {
        char *image = NULL;
        if ((rc = opt_str(c, o, "image", "executor.image", &image)) != 0) return rc;
        if (image != NULL) {
            free(t->images);
            t->images = sp_xcalloc(1, sizeof *t->images);
            t->images[0].image = image;
            t->nimages = 1;
        }
    }
    return 0;
}

void agent__task_free(agent__task_t *t)
{
    if (t == NULL) return;
    free(t->executor_type);
    for (size_t i = 0; i < t->nimages; i++) free_image(&t->images[i]);
    free(t->images);
    free(t->task_id);
    free(t->lease);
    free(t->job_name);
    free(t->checkout_url);
    free(t->checkout_revision);
    free(t->checkout_branch);
    free(t->checkout_tag);
    free(t->working_directory);
    free(t->shell);
    free_env(t->env, t->nenv);
    for (size_t i = 0; i < t->nsteps; i++) free_step(&t->steps[i]);
    free(t->steps);
    free(t);
}

static int parse(ctx_t *c, json_t *o, agent__task_t *t)
{
    int rc;
    if (!json_is_object(o)) return bad(c, "task", "an object");
    if ((rc = req_str(c, o, "task_id", "task_id", &t->task_id)) != 0) return rc;
    if ((rc = req_str(c, o, "lease", "lease", &t->lease)) != 0) return rc;
    if ((rc = opt_str(c, o, "job_name", "job_name", &t->job_name)) != 0) return rc;
    if (t->job_name == NULL) t->job_name = sp_xstrdup("build");
    json_t *num = json_object_get(o, "job_number");
    t->job_number = json_is_integer(num) ? json_integer_value(num) : 0;
    json_t *co = json_object_get(o, "checkout");
    if (co != NULL && !json_is_null(co)) {
        if (!json_is_object(co)) return bad(c, "checkout", "an object");
        if ((rc = opt_str(c, co, "url", "checkout.url", &t->checkout_url)) != 0) return rc;
        if ((rc = opt_str(c, co, "revision", "checkout.revision", &t->checkout_revision)) != 0) return rc;
        if ((rc = opt_str(c, co, "branch", "checkout.branch", &t->checkout_branch)) != 0) return rc;
        if ((rc = opt_str(c, co, "tag", "checkout.tag", &t->checkout_tag)) != 0) return rc;
    }
    if ((rc = opt_str(c, o, "working_directory", "working_directory", &t->working_directory)) != 0) return rc;
    if (t->working_directory == NULL || *t->working_directory == 0) {
        free(t->working_directory);
        t->working_directory = sp_xstrdup("~/project");
    }
    if ((rc = opt_str(c, o, "shell", "shell", &t->shell)) != 0) return rc;
    if ((rc = parse_env(c, json_object_get(o, "environment"), "environment", &t->env, &t->nenv)) != 0) return rc;
    json_t *ni = json_object_get(o, "node_index");
    t->node_index = json_is_integer(ni) && json_integer_value(ni) >= 0 ? (int)json_integer_value(ni) : 0;
    json_t *limits = json_object_get(o, "limits");
    if (limits != NULL && !json_is_null(limits) && !json_is_object(limits)) return bad(c, "limits", "an object");
    if ((rc = opt_secs(c, limits, "job_timeout_s", "limits.job_timeout_s", AGENT__DEFAULT_JOB_LIMIT,
                       &t->job_timeout_ms)) != 0)
        return rc;
    if (t->job_timeout_ms <= 0) t->job_timeout_ms = AGENT__DEFAULT_JOB_LIMIT;
    if ((rc = parse_executor(c, json_object_get(o, "executor"), t)) != 0) return rc;
    json_t *steps = json_object_get(o, "steps");
    if (!json_is_array(steps)) return bad(c, "steps", "an array");
    t->steps = sp_xcalloc(json_array_size(steps) + 1, sizeof *t->steps);
    size_t i;
    json_t *s;
    json_array_foreach (steps, i, s) {
        t->nsteps = i + 1; /* so that a half-parsed step is freed too */
        if ((rc = parse_step(c, s, &t->steps[i])) != 0) return rc;
    }
    return 0;
}

int agent__task_parse(const char *json, size_t n, agent__task_t **out, char *err, size_t errlen)
{
    ctx_t c = {err, errlen};
    json_error_t je;
    json_t *o = json_loadb(json, n, JSON_REJECT_DUPLICATES, &je);
    if (o == NULL) {
        snprintf(err, errlen, "task is not JSON: %s (line %d)", je.text, je.line);
        return SP_EINVAL;
    }
    agent__task_t *t = sp_xcalloc(1, sizeof *t);
    int rc = parse(&c, o, t);
    json_decref(o);
    if (rc != 0) {
        agent__task_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
