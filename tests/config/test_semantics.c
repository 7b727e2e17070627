/* Filters, the plan, cron lines, durations and the error catalogue of
 * the issue: each error names file, line, column and key path. */
#include "helpers.h"

static json_t *J(const char *s)
{
    json_error_t e;
    return json_loads(s, 0, &e);
}

TEST(config_filter_semantics)
{
    json_t *f = J("{\"branches\": {\"only\": [\"main\", \"/release-.*/\"], \"ignore\": \"release-bad\"}}");
    T_ASSERT(config_filter_allows(f, "main", NULL));
    T_ASSERT(config_filter_allows(f, "release-1", NULL));
    T_ASSERT(!config_filter_allows(f, "release-bad", NULL)); /* only first, then ignore */
    T_ASSERT(!config_filter_allows(f, "xrelease-1", NULL));  /* the regex matches the whole name */
    T_ASSERT(!config_filter_allows(f, "mainline", NULL));
    T_ASSERT(!config_filter_allows(f, NULL, "v1")); /* no tags filter: never for a tag */
    json_decref(f);
    T_ASSERT(config_filter_allows(NULL, "any", NULL));
    T_ASSERT(!config_filter_allows(NULL, NULL, "v1"));
    f = J("{\"tags\": {\"only\": \"/^v\\\\d+\\\\.\\\\d+$/\", \"ignore\": [\"v0.0\"]}}");
    T_ASSERT(config_filter_allows(f, "feature", NULL)); /* a tags filter alone keeps every branch */
    T_ASSERT(config_filter_allows(f, NULL, "v1.2"));
    T_ASSERT(!config_filter_allows(f, NULL, "v1.2-rc"));
    T_ASSERT(!config_filter_allows(f, NULL, "v0.0"));
    json_decref(f);
    f = J("{\"branches\": {\"ignore\": \"/.*/\"}, \"tags\": {\"ignore\": \"/wip.*/\"}}");
    T_ASSERT(!config_filter_allows(f, "main", NULL));
    T_ASSERT(config_filter_allows(f, NULL, "v1")); /* tags: {ignore} admits the others */
    T_ASSERT(!config_filter_allows(f, NULL, "wip-1"));
    json_decref(f);
    T_ASSERT(config_regex_whole("a(b|c)+", "abcb"));
    T_ASSERT(!config_regex_whole("(", "("));
    T_ASSERT(
        !config_regex_whole("(a+)+$", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab")); /* bounded */
}

static const char *plan_cfg = "version: 2.1\n"
                              "jobs:\n"
                              "  build: {docker: [{image: a}], steps: [checkout]}\n"
                              "  test: {docker: [{image: a}], steps: [checkout]}\n"
                              "  deploy: {docker: [{image: a}], steps: [checkout]}\n"
                              "workflows:\n"
                              "  main:\n"
                              "    jobs:\n"
                              "      - build:\n"
                              "          filters: {branches: {ignore: docs}, tags: {only: /.*/}}\n"
                              "      - test:\n"
                              "          requires: [build]\n"
                              "          filters: {branches: {only: [main, docs]}}\n"
                              "      - hold:\n"
                              "          type: approval\n"
                              "          requires: [build]\n"
                              "          filters: {tags: {only: /v.*/}}\n"
                              "      - deploy:\n"
                              "          requires: [test, hold]\n"
                              "          context: [aws, slack]\n"
                              "          filters: {tags: {only: /v.*/}}\n"
                              "  nightly:\n"
                              "    triggers:\n"
                              "      - schedule: {cron: '0 0 * * *', filters: {branches: {only: main}}}\n"
                              "    jobs: [build]\n";

static void plan_text(const json_t *processed, const config_plan_opts_t *o, sp_buf_t *b)
{
    config_plan_t *p;
    if (config_plan(processed, o, &p) != 0) return;
    for (size_t i = 0; i < p->nworkflows; i++) {
        sp_buf_printf(b, "%s:", p->workflows[i].name);
        for (size_t j = 0; j < p->workflows[i].njobs; j++) {
            config_plan_job_t *x = &p->workflows[i].jobs[j];
            sp_buf_printf(b, " %s%s(", x->name, x->approval ? "[approval]" : "");
            for (size_t k = 0; k < x->nrequires; k++) sp_buf_printf(b, "%s%s", k ? "," : "", x->requires[k]);
            sp_buf_addstr(b, ")");
            for (size_t k = 0; k < x->ncontexts; k++) sp_buf_printf(b, "%s%s", k ? "," : "@", x->contexts[k]);
        }
        sp_buf_addstr(b, ";");
    }
    sp_buf_add(b, "", 1);
    config_plan_free(p);
}

TEST(config_plan_branches_tags_and_schedules)
{
    config_result_t *r = th_compile(plan_cfg, NULL);
    T_ASSERT(r && r->valid);
    struct {
        config_plan_opts_t o;
        const char *want;
    } cases[] = {
        /* main: hold and deploy have only tag filters, so every branch runs them */
        {{.branch = "main"}, "main: build() test(build) hold[approval](build) deploy(test,hold)@aws,slack;"},
        /* docs: build is filtered out, so requirements on it are dropped */
        {{.branch = "docs"}, "main: test() hold[approval]() deploy(test,hold)@aws,slack;"},
        {{.branch = "feature"}, "main: build() hold[approval](build) deploy(hold)@aws,slack;"},
        /* a tag: test has no tag filter, so deploy (which requires it) does not run either */
        {{.tag = "v1.0"}, "main: build() hold[approval](build);"},
        {{.tag = "nightly-1"}, "main: build();"},
        {{.branch = "main", .scheduled = true, .workflow = "nightly"}, "nightly: build();"},
        {{.branch = "dev", .scheduled = true, .workflow = "nightly"}, ""},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        sp_buf_t b = {0};
        plan_text(r->processed, &cases[i].o, &b);
        if (strcmp((const char *)b.p, cases[i].want) != 0)
            t_fail(t, __FILE__, __LINE__, "case %zu: got \"%s\", want \"%s\"", i, (const char *)b.p, cases[i].want);
        sp_buf_free(&b);
    }
    config_result_free(r);
    json_t *bad = J("[]");
    config_plan_t *p;
    config_plan_opts_t o = {0};
    T_RC(SP_EINVAL, config_plan(bad, &o, &p));
    json_decref(bad);
}

TEST(config_durations)
{
    struct {
        const char *s;
        int64_t ms;
    } ok[] = {{"20m", 1200000}, {"1.25h", 4500000}, {"5s", 5000},  {"1h30m", 5400000},
              {"10m", 600000},  {"0.5s", 500},      {"250ms", 250}};
    for (size_t i = 0; i < SP_ARRAY_LEN(ok); i++) {
        int64_t ms = -1;
        T_OK(config_parse_duration(ok[i].s, &ms));
        T_EQ_U64(ms, ok[i].ms);
    }
    const char *bad[] = {"", "10", "m", "-5m", "5 m", "5d", "1e3s", "abc", "5m5"};
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        int64_t ms = 7;
        T_RC(SP_EINVAL, config_parse_duration(bad[i], &ms));
        T_EQ_U64(ms, 7);
    }
}

TEST(config_cron_lines)
{
    const char *ok[] = {"0 0 * * *",     "*/15 * * * *", "0 9-17 * * MON-FRI", "0,30 1,2 1-31/2 JAN,jul *",
                        "59 23 31 12 6", "0 0 * * 7",    "5 4 * * sun"};
    for (size_t i = 0; i < SP_ARRAY_LEN(ok); i++) {
        char err[200] = "";
        if (config_cron_check(ok[i], err, sizeof err) != 0) t_fail(t, __FILE__, __LINE__, "%s: %s", ok[i], err);
    }
    struct {
        const char *line, *why;
    } bad[] = {
        {"* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"},
        {"60 * * * *", "minute: 60 is out of range 0-59"},
        {"* 24 * * *", "hour: 24 is out of range 0-23"},
        {"* * 0 * *", "day of month: 0 is out of range 1-31"},
        {"* * * 13 *", "month: 13 is out of range 1-12"},
        {"* * * FOO *", "month: \"FOO\" is not a month (1-12 or JAN-DEC)"},
        {"* * * * 9", "day of week: 9 is out of range 0-6"},
        {"5-1 * * * *", "minute: the range 5-1 goes backwards"},
        {"*/0 * * * *", "minute: the step after / must be a number from 1 to 59"},
        {"1,,2 * * * *", "minute: empty list item"},
        {"@daily", "minute: \"@daily\" is not a number"},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        char err[200] = "";
        T_RC(SP_EINVAL, config_cron_check(bad[i].line, err, sizeof err));
        T_EQ_STR(err, bad[i].why);
    }
}

/* The errors the issue lists, each with file:line:col, key path and what
 * was expected. */
TEST(config_error_catalogue)
{
    /* unknown key */
    T_ERRORS("version: 2.1\n"
             "jobs:\n"
             "  build:\n"
             "    docker: [{image: a}]\n"
             "    stepz: [checkout]\n"
             "    steps: [checkout]\n"
             "workflows: {w: {jobs: [build]}}\n",
             NULL,
             "config.yml:5:5: jobs.build.stepz: unknown key \"stepz\" in a job (expected one of: docker, machine, "
             "macos, executor, steps, parallelism, resource_class, environment, working_directory, shell, "
             "parameters, description, type, plan_name, key, retention, circleci_ip_ranges, branches)\n");
    /* wrong type, deep in a step */
    T_ERRORS("version: 2.1\n"
             "jobs:\n"
             "  build:\n"
             "    docker: [{image: a}]\n"
             "    steps:\n"
             "      - checkout\n"
             "      - run: make\n"
             "      - run:\n"
             "          command: [make, test]\n"
             "workflows: {w: {jobs: [build]}}\n",
             NULL, "config.yml:9:20: jobs.build.steps[2].run.command: expected a string, got a list\n");
    /* missing required keys */
    T_ERRORS("version: 2.1\n"
             "jobs:\n"
             "  build:\n"
             "    docker: [{name: db}]\n"
             "    steps:\n"
             "      - save_cache: {key: k}\n"
             "      - restore_cache: {name: r}\n"
             "workflows: {w: {jobs: [build]}}\n",
             NULL,
             "config.yml:4:14: jobs.build.docker[0]: a docker image needs image\n"
             "config.yml:6:21: jobs.build.steps[0].save_cache: save_cache needs paths\n"
             "config.yml:7:24: jobs.build.steps[1].restore_cache: restore_cache needs key or keys\n");
    T_ERRORS("version: 2.1\njobs:\n  build: {steps: [checkout]}\nworkflows: {w: {jobs: [build]}}\n", NULL,
             "config.yml:3:3: jobs.build: job build needs an executor: docker, machine, macos or executor\n");
    /* unknown job in requires, and a cycle */
    T_ERRORS("version: 2.1\n"
             "jobs:\n"
             "  a: {docker: [{image: a}], steps: [checkout]}\n"
             "workflows:\n"
             "  w:\n"
             "    jobs:\n"
             "      - a: {requires: [ghost]}\n",
             NULL,
             "config.yml:7:24: workflows.w.jobs[0].a.requires[0]: workflow w: requires \"ghost\", which is not a job "
             "of this "
             "workflow\n");
    T_ERRORS("version: 2.1\n"
             "jobs:\n"
             "  a: {docker: [{image: a}], steps: [checkout]}\n"
             "workflows:\n"
             "  w:\n"
             "    jobs:\n"
             "      - a: {name: x, requires: [z]}\n"
             "      - a: {name: y, requires: [x]}\n"
             "      - a: {name: z, requires: [y]}\n",
             NULL,
             "config.yml:8:32: workflows.w.jobs[1].a.requires: workflow w: requires forms a cycle: x -> z -> y -> x\n");
    /* an invalid cron line */
    T_ERRORS("version: 2\n"
             "jobs:\n"
             "  a: {docker: [{image: a}], steps: [checkout]}\n"
             "workflows:\n"
             "  version: 2\n"
             "  nightly:\n"
             "    triggers:\n"
             "      - schedule: {cron: '0 25 * * *', filters: {branches: {only: main}}}\n"
             "    jobs: [a]\n",
             NULL,
             "config.yml:8:26: workflows.nightly.triggers[0].schedule.cron: invalid cron line \"0 25 * * *\": hour: "
             "25 is out of range 0-23\n");
    /* an invalid regex in a filter, and an invalid duration */
    T_ERRORS("version: 2\n"
             "jobs:\n"
             "  a:\n"
             "    docker: [{image: a}]\n"
             "    steps: [{run: {command: x, no_output_timeout: 10 minutes}}]\n"
             "workflows:\n"
             "  version: 2\n"
             "  w:\n"
             "    jobs:\n"
             "      - a: {filters: {branches: {only: /(/}}}\n",
             NULL,
             "config.yml:5:51: jobs.a.steps[0].run.no_output_timeout: expected a duration such as 20m, 1.25h or 5s, "
             "got \"10 minutes\"\n"
             "config.yml:10:40: workflows.w.jobs[0].a.filters.branches.only: invalid regular expression /(/: missing "
             "closing parenthesis at offset 1\n");
    /* the message for a step whose arguments are indented wrongly */
    T_ERRORS("version: 2.1\n"
             "jobs:\n"
             "  a:\n"
             "    docker: [{image: a}]\n"
             "    steps:\n"
             "      - run:\n"
             "        name: x\n"
             "        command: y\n"
             "workflows: {w: {jobs: [a]}}\n",
             NULL,
             "config.yml:6:9: jobs.a.steps[0]: a step is a map with exactly one key, its type; found 3 keys (run, "
             "name, command): is the indentation of its arguments off?\n");
}

TEST(config_errors_are_all_reported_and_capped)
{
    sp_buf_t b = {0};
    sp_buf_addstr(&b, "version: 2.1\njobs:\n  a:\n    docker: [{image: a}]\n    steps:\n");
    for (int i = 0; i < 150; i++) sp_buf_printf(&b, "      - nope%d\n", i);
    sp_buf_addstr(&b, "workflows: {w: {jobs: [a]}}\n");
    sp_buf_add(&b, "", 1);
    config_result_t *r = th_compile((const char *)b.p, NULL);
    T_ASSERT(r && !r->valid);
    T_EQ_U64(r->nerrors, CONFIG_MAX_ERRORS);
    T_EQ_U64(r->more_errors, 50);
    config_result_free(r);
    sp_buf_free(&b);
}
