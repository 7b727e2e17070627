/* The config reactor: mirrors, config at a revision, compile, report. */
#include "reactors.h"

#include "../config/config.h"

#include <errno.h>
#include <git2.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define CONFIG_PATH ".circleci/config.yml"

static pthread_once_t git_once = PTHREAD_ONCE_INIT;
static void git_init(void) { git_libgit2_init(); }

static int git_fail(char *err, size_t errlen, const char *what)
{
    const git_error *e = git_error_last();
    snprintf(err, errlen, "%s: %s", what, e && e->message ? e->message : "unknown error");
    return SP_EIO;
}

static int credentials(git_credential **out, const char *url, const char *user, unsigned int allowed, void *payload)
{
    const char *token = payload;
    if (token == NULL || !(allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT)) return GIT_PASSTHROUGH;
    return git_credential_userpass_plaintext_new(out, "x-access-token", token);
}

/* The mirror of url: a bare repository named after the URL's hash. */
static int open_mirror(const char *dir, const char *url, git_repository **repo, git_remote **remote, char *err,
                       size_t errlen)
{
    uint8_t d[32];
    SHA256((const uint8_t *)url, strlen(url), d);
    char path[4200];
    int n = snprintf(path, sizeof path, "%s/", dir);
    for (int i = 0; i < 12; i++) n += snprintf(path + n, sizeof path - (size_t)n, "%02x", d[i]);
    snprintf(path + n, sizeof path - (size_t)n, ".git");
    mkdir(dir, 0700);
    if (git_repository_open_bare(repo, path) == 0) {
        if (git_remote_lookup(remote, *repo, "origin") == 0) return 0;
        git_repository_free(*repo);
        return git_fail(err, errlen, "mirror has no origin");
    }
    if (git_repository_init(repo, path, 1) != 0) return git_fail(err, errlen, "cannot create the mirror");
    if (git_remote_create_with_fetchspec(remote, *repo, "origin", url, "+refs/heads/*:refs/heads/*") != 0) {
        git_repository_free(*repo);
        return git_fail(err, errlen, "cannot set the mirror's remote");
    }
    return 0;
}

static int fetch(git_remote *remote, const char *token, char *err, size_t errlen)
{
    git_fetch_options fo;
    git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
    fo.callbacks.credentials = credentials;
    fo.callbacks.payload = (void *)token;
    fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_ALL;
    fo.prune = GIT_FETCH_PRUNE;
    char *specs[] = {"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"};
    git_strarray refspecs = {specs, 2};
    if (git_remote_fetch(remote, &refspecs, &fo, NULL) != 0) return git_fail(err, errlen, "cannot fetch");
    return 0;
}

static int find_commit(git_repository *repo, const char *branch, const char *tag, const char *revision,
                       git_commit **out, char *err, size_t errlen)
{
    git_object *obj = NULL;
    int rc;
    if (revision && *revision) {
        git_oid oid;
        if (git_oid_fromstr(&oid, revision) != 0) {
            snprintf(err, errlen, "revision %s is not a commit id", revision);
            return SP_EINVAL;
        }
        rc = git_commit_lookup(out, repo, &oid);
        if (rc != 0) snprintf(err, errlen, "commit %s is not in the repository", revision);
        return rc == 0 ? 0 : SP_EIO;
    }
    char ref[600];
    snprintf(ref, sizeof ref, branch ? "refs/heads/%s" : "refs/tags/%s", branch ? branch : tag ? tag : "");
    if (git_revparse_single(&obj, repo, ref) != 0) {
        snprintf(err, errlen, "%s %s does not exist in the repository", branch ? "branch" : "tag",
                 branch ? branch
                 : tag  ? tag
                        : "");
        return SP_EIO;
    }
    git_object *peeled = NULL;
    rc = git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT);
    git_object_free(obj);
    if (rc != 0) return git_fail(err, errlen, "cannot resolve the commit");
    *out = (git_commit *)peeled;
    return 0;
}

int reactor_config_fetch(const char *dir, const char *url, const char *token, const char *branch, const char *tag,
                         const char *revision, char **source, char revision_out[41], char **subject, char **body,
                         char *err, size_t errlen)
{
    pthread_once(&git_once, git_init);
    git_repository *repo;
    git_remote *remote;
    int rc = open_mirror(dir, url, &repo, &remote, err, errlen);
    if (rc != 0) return rc;
    git_commit *commit = NULL;
    /* A revision already in the mirror needs no network. */
    if (!(revision && *revision && find_commit(repo, NULL, NULL, revision, &commit, err, errlen) == 0)) {
        rc = fetch(remote, token, err, errlen);
        if (rc == 0) rc = find_commit(repo, branch, tag, revision, &commit, err, errlen);
    }
    git_tree *tree = NULL;
    git_tree_entry *entry = NULL;
    git_blob *blob = NULL;
    if (rc == 0 && git_commit_tree(&tree, commit) != 0) rc = git_fail(err, errlen, "cannot read the commit's tree");
    if (rc == 0 && git_tree_entry_bypath(&entry, tree, CONFIG_PATH) != 0) {
        snprintf(err, errlen, "%s: not found at commit %.12s", CONFIG_PATH, git_oid_tostr_s(git_commit_id(commit)));
        rc = SP_ENOTFOUND;
    }
    if (rc == 0 && git_blob_lookup(&blob, repo, git_tree_entry_id(entry)) != 0) {
        snprintf(err, errlen, "%s: not a file at commit %.12s", CONFIG_PATH, git_oid_tostr_s(git_commit_id(commit)));
        rc = SP_ENOTFOUND;
    }
    if (rc == 0) {
        *source = sp_xstrndup(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
        git_oid_tostr(revision_out, 41, git_commit_id(commit));
        const char *msg = git_commit_message(commit) ?: "";
        const char *nl = strchr(msg, '\n');
        *subject = sp_xstrndup(msg, nl ? (size_t)(nl - msg) : strlen(msg));
        *body = sp_xstrdup(nl ? nl + 1 + strspn(nl + 1, "\n") : "");
    }
    git_blob_free(blob);
    git_tree_entry_free(entry);
    git_tree_free(tree);
    git_commit_free(commit);
    git_remote_free(remote);
    git_repository_free(repo);
    return rc;
}

/* ---- the reactor thread ---- */

typedef struct job {
    struct job *next;
    char id[PROJ_ID_MAX];
} job_t;

struct reactor_config {
    reactor_config_opts_t o;
    char mirrors[4096];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    job_t *head, *tail;
    uint64_t seen;     /* last log sequence scanned for new pipelines */
    uint64_t log_head; /* latest head the log told us about */
    bool stopping;
};

static void enqueue(void *arg, const char *id)
{
    reactor_config_t *r = arg;
    job_t *j = sp_xcalloc(1, sizeof *j);
    snprintf(j->id, sizeof j->id, "%s", id);
    if (r->tail)
        r->tail->next = j;
    else
        r->head = j;
    r->tail = j;
}

static void on_commit(void *arg, uint64_t head)
{
    reactor_config_t *r = arg;
    pthread_mutex_lock(&r->mu);
    r->log_head = head;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

/* Finds pipeline.created events after r->seen. */
static void scan(reactor_config_t *r, uint64_t upto)
{
    log_reader_t *rd;
    if (log_reader_open(r->o.log, &rd) != 0) return;
    log_reader_seek(rd, r->seen + 1);
    log_event_t ev;
    while (r->seen < upto && log_reader_next(rd, &ev) == 0) {
        r->seen = ev.seq;
        if (ev.type != LOG_EV_PIPELINE_CREATED) continue;
        msgpack_zone zone;
        msgpack_zone_init(&zone, 1024);
        msgpack_object o;
        sp_slice_t id;
        if (log_body_unpack(ev.body, &zone, &o) == 0 && log_body_str(&o, "id", &id) && id.n < PROJ_ID_MAX) {
            char s[PROJ_ID_MAX];
            snprintf(s, sizeof s, "%.*s", (int)id.n, (const char *)id.p);
            pthread_mutex_lock(&r->mu);
            enqueue(r, s);
            pthread_mutex_unlock(&r->mu);
        }
        msgpack_zone_destroy(&zone);
    }
    log_reader_close(rd);
}

static void on_reported(void *arg, int status, uint64_t seq, const json_t *result) {}

static void report(reactor_config_t *r, engine_config_t *c)
{
    char err[300];
    int rc = engine_config_result(r->o.engine, c, on_reported, NULL, err, sizeof err);
    if (rc != 0 && rc != SP_EEXIST) sp_warn("config", "pipeline %s: %s", c->pipeline_id, err);
}

static char *env_str(const json_t *o, const char *path1, const char *path2)
{
    const json_t *v = json_object_get(json_object_get(o, path1), path2);
    return json_is_string(v) ? (char *)json_string_value(v) : NULL;
}

/* Fetches, compiles and reports one pipeline's config. */
static void process(reactor_config_t *r, const char *id)
{
    log_kvtxn_t *t;
    json_t *doc = NULL, *proj = NULL;
    if (log_kv_begin(proj_kv(r->o.proj), false, &t) != 0) return;
    int found = proj_pipeline_get(t, id, &doc);
    if (found == 0) proj_project_get(t, json_string_value(json_object_get(doc, "project_slug")) ?: "", &proj);
    log_kvtxn_abort(t);
    if (found != 0) return;
    const char *state = json_string_value(json_object_get(doc, "state"));
    if (state == NULL || strcmp(state, "pending") != 0) { /* already done (seen twice) */
        json_decref(doc);
        json_decref(proj);
        return;
    }
    const char *url = env_str(doc, "vcs", "origin_repository_url") ?: "";
    const char *branch = env_str(doc, "vcs", "branch"), *tag = env_str(doc, "vcs", "tag");
    const char *rev = env_str(doc, "vcs", "revision");
    sp_buf_t token = {0};
    const char *sealed = json_string_value(json_object_get(proj, "_git_token"));
    if (sealed) {
        char aad[300];
        snprintf(aad, sizeof aad, "project:%s:git_token", json_string_value(json_object_get(proj, "slug")) ?: "");
        secrets_unseal(r->o.secrets, sealed, aad, &token);
    }
    char *source = NULL, *subject = NULL, *body = NULL, revision[41] = "", err[1024];
    int rc = reactor_config_fetch(r->mirrors, url, token.n ? (char *)token.p : NULL, branch, tag, rev, &source,
                                  revision, &subject, &body, err, sizeof err);
    sp_buf_free(&token);
    engine_config_t c = {.pipeline_id = id, .revision = revision, .subject = subject, .body = body, .source = source};
    if (rc != 0) {
        c.error_type = rc == SP_ENOTFOUND ? "config" : "config-fetch";
        c.error_message = err;
        report(r, &c);
    } else {
        config_input_t in = {.parameters = json_object_get(doc, "trigger_parameters"),
                             .id = id,
                             .number = json_integer_value(json_object_get(doc, "number")),
                             .git_url = url,
                             .vcs_type = "github",
                             .branch = branch,
                             .tag = tag,
                             .revision = revision,
                             .trigger = json_string_value(json_object_get(json_object_get(doc, "trigger"), "type"))};
        config_result_t *cr = NULL;
        config_compile(source, strlen(source), CONFIG_PATH, &in, &cr);
        sp_buf_t yaml = {0}, errors = {0};
        if (cr && cr->valid && config_emit_yaml(cr, &yaml) == 0) {
            sp_buf_add(&yaml, "", 1);
            c.compiled_yaml = (const char *)yaml.p;
            c.processed = cr->processed;
        } else {
            for (size_t i = 0; cr && i < cr->nerrors; i++) {
                if (i) sp_buf_addstr(&errors, "\n");
                config_error_format(&cr->errors[i], &errors);
            }
            if (cr == NULL || cr->nerrors == 0) sp_buf_addstr(&errors, "the config could not be compiled");
            sp_buf_add(&errors, "", 1);
            c.error_type = "config";
            c.error_message = (const char *)errors.p;
        }
        report(r, &c);
        sp_buf_free(&yaml);
        sp_buf_free(&errors);
        config_result_free(cr);
    }
    free(source);
    free(subject);
    free(body);
    json_decref(doc);
    json_decref(proj);
}

static void *reactor_main(void *arg)
{
    reactor_config_t *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->stopping && r->head == NULL && r->seen >= r->log_head) pthread_cond_wait(&r->cond, &r->mu);
        if (r->stopping) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        uint64_t upto = r->log_head;
        job_t *j = r->head;
        if (j) {
            r->head = j->next;
            if (r->head == NULL) r->tail = NULL;
        }
        pthread_mutex_unlock(&r->mu);
        if (j == NULL) {
            scan(r, upto);
            continue;
        }
        /* The views must show the pipeline before it can be read. */
        if (proj_wait(r->o.proj, r->seen, 30000000000LL) == 0) process(r, j->id);
        free(j);
    }
    return NULL;
}

int reactor_config_open(reactor_config_t **out, const reactor_config_opts_t *o, char *errbuf, size_t errlen)
{
    reactor_config_t *r = sp_xcalloc(1, sizeof *r);
    r->o = *o;
    snprintf(r->mirrors, sizeof r->mirrors, "%s", o->mirrors_dir);
    r->o.mirrors_dir = r->mirrors;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cond, NULL);
    /* Pipelines logged before now and still waiting are found through the
     * engine; from here on, through the log. */
    r->seen = r->log_head = log_head(o->log);
    engine_pending_configs(o->engine, enqueue, r);
    log_subscribe(o->log, on_commit, r);
    int rc = pthread_create(&r->thread, NULL, reactor_main, r);
    if (rc != 0) {
        log_unsubscribe(o->log, on_commit, r);
        snprintf(errbuf, errlen, "cannot start the config reactor: %s", strerror(rc));
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cond);
        for (job_t *j = r->head; j;) {
            job_t *n = j->next;
            free(j);
            j = n;
        }
        free(r);
        return -rc;
    }
    sp_handle_opened();
    *out = r;
    return 0;
}

void reactor_config_close(reactor_config_t *r)
{
    if (r == NULL) return;
    log_unsubscribe(r->o.log, on_commit, r);
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    for (job_t *j = r->head; j;) {
        job_t *n = j->next;
        free(j);
        j = n;
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cond);
    free(r);
    sp_handle_closed();
}
