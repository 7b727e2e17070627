/*
 * CircleCI's run-time semantics that the engine needs from a processed
 * config: branch/tag filters, which workflows and jobs run for a push or
 * a cron tick, cron lines and durations. Written here once so that the
 * engine and the compiler agree.
 */
#include "config_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ---- regular expressions ---- */

/* CircleCI's filters are Java regexes; PCRE2 reads the same syntax for
 * everything a branch pattern uses. Matching is bounded so that a
 * pathological pattern cannot stall the server. */
static pcre2_code *regex_compile(const char *pattern, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                                   &code, &off, NULL);
    if (re == NULL && err) {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, errlen, "%s at offset %zu", (const char *)msg, (size_t)off);
    }
    return re;
}

bool cfg__regex_ok(const char *pattern, char *err, size_t errlen)
{
    pcre2_code *re = regex_compile(pattern, err, errlen);
    pcre2_code_free(re);
    return re != NULL;
}

bool config_regex_whole(const char *pattern, const char *value)
{
    pcre2_code *re = regex_compile(pattern, NULL, 0);
    if (re == NULL) return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(mc, 1000000);
    pcre2_set_depth_limit(mc, 10000);
    int rc = pcre2_match(re, (PCRE2_SPTR)value, strlen(value), 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, mc);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc >= 0;
}

/* ---- filters ---- */

static bool spec_matches(const json_t *spec, const char *name)
{
    size_t n = json_is_array(spec) ? json_array_size(spec) : 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_is_array(spec) ? json_array_get(spec, i) : spec;
        if (!json_is_string(x)) continue;
        const char *s = json_string_value(x);
        size_t len = json_string_length(x);
        if (len >= 2 && s[0] == '/' && s[len - 1] == '/') {
            char *pat = sp_xstrndup(s + 1, len - 2);
            bool m = config_regex_whole(pat, name);
            free(pat);
            if (m) return true;
        } else if (strcmp(s, name) == 0) {
            return true;
        }
    }
    return false;
}

static bool only_ignore(const json_t *f, const char *name)
{
    const json_t *only = json_object_get(f, "only"), *ignore = json_object_get(f, "ignore");
    if (only && !json_is_null(only) && !spec_matches(only, name)) return false;
    if (ignore && !json_is_null(ignore) && spec_matches(ignore, name)) return false;
    return true;
}

bool config_filter_allows(const json_t *filters, const char *branch, const char *tag)
{
    if (tag) {
        const json_t *tags = filters ? json_object_get(filters, "tags") : NULL;
        if (!json_is_object(tags)) return false;
        return only_ignore(tags, tag);
    }
    const json_t *br = filters ? json_object_get(filters, "branches") : NULL;
    if (!json_is_object(br)) return true;
    return only_ignore(br, branch ? branch : "");
}

/* ---- the plan ---- */

static const char *pstr(cfg__arena_t *a, const char *s) { return cfg__strndup(a, s, strlen(s)); }

/* Names an entry of a workflow's jobs list, with its attributes. */
static const char *entry_name(const json_t *e, const json_t **attrs)
{
    *attrs = NULL;
    if (json_is_string(e)) return json_string_value(e);
    if (json_is_object(e) && json_object_size(e) == 1) {
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)e, k, v) {
            *attrs = json_is_object(v) ? v : NULL;
            return k;
        }
    }
    return NULL;
}

static const char *require_name(const json_t *r)
{
    const json_t *attrs;
    return entry_name(r, &attrs);
}

static bool schedule_admits(const json_t *triggers, const char *branch)
{
    size_t i;
    json_t *t;
    json_array_foreach (triggers, i, t) {
        const json_t *s = json_object_get(t, "schedule");
        if (!json_is_object(s)) continue;
        if (config_filter_allows(json_object_get(s, "filters"), branch, NULL)) return true;
    }
    return false;
}

int config_plan(const json_t *processed, const config_plan_opts_t *o, config_plan_t **out)
{
    const json_t *wfs = json_object_get(processed, "workflows");
    if (!json_is_object(wfs) || o == NULL || out == NULL) return SP_EINVAL;
    config_plan_t *p = sp_xcalloc(1, sizeof *p);
    cfg__arena_t *a = sp_xcalloc(1, sizeof *a);
    p->_arena = a;
    p->workflows = cfg__alloc(a, (json_object_size(wfs) + 1) * sizeof *p->workflows);
    const char *wname;
    json_t *wf;
    json_object_foreach ((json_t *)wfs, wname, wf) {
        if (!json_is_object(wf)) continue;
        const json_t *triggers = json_object_get(wf, "triggers");
        bool has_triggers = json_is_array(triggers) && json_array_size(triggers) > 0;
        if (o->scheduled) {
            if (o->workflow == NULL || strcmp(o->workflow, wname) != 0 || !has_triggers ||
                !schedule_admits(triggers, o->branch))
                continue;
        } else if (has_triggers) {
            continue; /* a scheduled workflow does not run on pushes */
        }
        const json_t *jobs = json_object_get(wf, "jobs");
        size_t n = json_array_size(jobs);
        const char *tag = o->scheduled ? NULL : o->tag;
        bool *in = sp_xcalloc(n + 1, sizeof *in);
        const json_t **attrs = sp_xcalloc(n + 1, sizeof *attrs);
        const char **names = sp_xcalloc(n + 1, sizeof *names);
        for (size_t i = 0; i < n; i++) {
            names[i] = entry_name(json_array_get(jobs, i), &attrs[i]);
            in[i] = names[i] &&
                    config_filter_allows(attrs[i] ? json_object_get(attrs[i], "filters") : NULL, o->branch, tag);
        }
        /* For a tag, a job whose upstream does not run does not run
         * either (CircleCI: tag builds need tag filters on the whole
         * chain). Repeat until nothing changes: chains are short. */
        for (bool changed = tag != NULL; changed;) {
            changed = false;
            for (size_t i = 0; i < n; i++) {
                if (!in[i] || attrs[i] == NULL) continue;
                size_t k;
                json_t *r;
                json_array_foreach (json_object_get(attrs[i], "requires"), k, r) {
                    const char *rn = require_name(r);
                    for (size_t j = 0; rn && j < n; j++)
                        if (!in[j] && names[j] && strcmp(names[j], rn) == 0) {
                            in[i] = false;
                            changed = true;
                        }
                }
            }
        }
        config_plan_workflow_t *w = &p->workflows[p->nworkflows++];
        w->name = pstr(a, wname);
        w->jobs = cfg__alloc(a, (n + 1) * sizeof *w->jobs);
        for (size_t i = 0; i < n; i++) {
            if (!in[i]) continue;
            config_plan_job_t *j = &w->jobs[w->njobs++];
            j->name = pstr(a, names[i]);
            const json_t *type = attrs[i] ? json_object_get(attrs[i], "type") : NULL;
            j->approval = json_is_string(type) && strcmp(json_string_value(type), "approval") == 0;
            j->job = j->approval ? NULL : j->name;
            const json_t *req = attrs[i] ? json_object_get(attrs[i], "requires") : NULL;
            j->requires = cfg__alloc(a, (json_array_size(req) + 1) * sizeof *j->requires);
            size_t k;
            json_t *r;
            json_array_foreach (req, k, r) {
                const char *rn = require_name(r);
                for (size_t x = 0; rn && x < n; x++)
                    if (in[x] && names[x] && strcmp(names[x], rn) == 0) {
                        j->requires[j->nrequires++] = pstr(a, rn);
                        break;
                    }
            }
            const json_t *ctx = attrs[i] ? json_object_get(attrs[i], "context") : NULL;
            j->contexts = cfg__alloc(a, (json_array_size(ctx) + 2) * sizeof *j->contexts);
            if (json_is_string(ctx)) j->contexts[j->ncontexts++] = pstr(a, json_string_value(ctx));
            json_array_foreach (ctx, k, r)
                if (json_is_string(r)) j->contexts[j->ncontexts++] = pstr(a, json_string_value(r));
        }
        free(in);
        free(attrs);
        free(names);
    }
    *out = p;
    return 0;
}

void config_plan_free(config_plan_t *p)
{
    if (p == NULL) return;
    cfg__arena_free(p->_arena);
    free(p->_arena);
    free(p);
}

/* ---- durations ---- */

int config_parse_duration(const char *s, int64_t *ms)
{
    if (s == NULL || *s == 0) return SP_EINVAL;
    double total = 0;
    const char *p = s;
    while (*p) {
        if (!isdigit((unsigned char)*p) && *p != '.') return SP_EINVAL;
        char *end;
        double v = strtod(p, &end);
        if (end == p || v < 0) return SP_EINVAL;
        for (const char *q = p; q < end; q++)
            if (!isdigit((unsigned char)*q) && *q != '.') return SP_EINVAL; /* no exponents, signs or hex */
        p = end;
        double unit;
        if (*p == 'h')
            unit = 3600e3;
        else if (*p == 'm' && p[1] == 's')
            unit = 1, p++;
        else if (*p == 'm')
            unit = 60e3;
        else if (*p == 's')
            unit = 1e3;
        else
            return SP_EINVAL;
        p++;
        total += v * unit;
        if (total > 9.2e15) return SP_EINVAL;
    }
    *ms = (int64_t)(total + 0.5);
    return 0;
}

/* ---- cron ---- */

static const char *const months[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                     "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const days[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

typedef struct {
    const char *name;
    int lo, hi;
    const char *const *names; /* names[0] is value lo (months) or 0 (days) */
    int nnames;
} cron_field_t;

static const cron_field_t fields[5] = {
    {"minute", 0, 59, NULL, 0},   {"hour", 0, 23, NULL, 0},       {"day of month", 1, 31, NULL, 0},
    {"month", 1, 12, months, 12}, {"day of week", 0, 7, days, 7},
};

/* Reads a number or a name at *p; advances *p. */
static bool cron_value(const cron_field_t *f, const char **p, const char *end, int *out, char *err, size_t errlen)
{
    const char *s = *p;
    if (s < end && isdigit((unsigned char)*s)) {
        long v = 0;
        while (s < end && isdigit((unsigned char)*s) && v < 10000) v = v * 10 + (*s++ - '0');
        if (s < end && isdigit((unsigned char)*s)) {
            snprintf(err, errlen, "%s: number too large", f->name);
            return false;
        }
        if (v < f->lo || v > f->hi) {
            snprintf(err, errlen, "%s: %ld is out of range %d-%d", f->name, v, f->lo, f->names == days ? 6 : f->hi);
            return false;
        }
        *out = (int)v;
        *p = s;
        return true;
    }
    if (f->names && end - s >= 3) {
        for (int i = 0; i < f->nnames; i++)
            if (strncasecmp(s, f->names[i], 3) == 0) {
                *out = f->names == months ? i + 1 : i;
                *p = s + 3;
                return true;
            }
    }
    snprintf(err, errlen, "%s: \"%.*s\" is not a %s", f->name, (int)(end - s > 20 ? 20 : end - s), s,
             f->names == months ? "month (1-12 or JAN-DEC)"
             : f->names == days ? "day of the week (0-6 or SUN-SAT)"
                                : "number");
    return false;
}

static bool cron_part(const cron_field_t *f, const char *s, const char *end, char *err, size_t errlen)
{
    if (s == end) {
        snprintf(err, errlen, "%s: empty list item", f->name);
        return false;
    }
    const char *p = s;
    int a = f->lo, b = f->hi;
    bool star = *p == '*';
    if (star) {
        p++;
    } else {
        if (!cron_value(f, &p, end, &a, err, errlen)) return false;
        b = a;
        if (p < end && *p == '-') {
            p++;
            if (!cron_value(f, &p, end, &b, err, errlen)) return false;
            if (b < a) {
                snprintf(err, errlen, "%s: the range %.*s goes backwards", f->name, (int)(end - s), s);
                return false;
            }
        }
    }
    if (p < end && *p == '/') {
        p++;
        const char *q = p;
        long step = 0;
        while (q < end && isdigit((unsigned char)*q) && step < 10000) step = step * 10 + (*q++ - '0');
        if (q == p || q != end || step < 1 || step > f->hi) {
            snprintf(err, errlen, "%s: the step after / must be a number from 1 to %d", f->name, f->hi);
            return false;
        }
        p = q;
    }
    if (p != end) {
        snprintf(err, errlen, "%s: unexpected \"%.*s\"", f->name, (int)(end - p > 20 ? 20 : end - p), p);
        return false;
    }
    return true;
}

int config_cron_check(const char *line, char *err, size_t errlen)
{
    char dummy[8];
    if (err == NULL) err = dummy, errlen = sizeof dummy;
    if (line == NULL) {
        snprintf(err, errlen, "empty cron line");
        return SP_EINVAL;
    }
    const char *p = line;
    int nf = 0;
    while (*p) {
        while (*p == ' ' || *p == '\t') p++;
        if (*p == 0) break;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        if (nf >= 5) {
            nf++;
            continue;
        }
        const cron_field_t *f = &fields[nf++];
        const char *q = start;
        while (q <= p) {
            const char *comma = memchr(q, ',', (size_t)(p - q));
            const char *e = comma ? comma : p;
            if (!cron_part(f, q, e, err, errlen)) return SP_EINVAL;
            q = e + 1;
            if (!comma) break;
        }
    }
    if (nf != 5) {
        snprintf(err, errlen, "expected 5 fields (minute hour day-of-month month day-of-week), got %d", nf);
        return SP_EINVAL;
    }
    return 0;
}
