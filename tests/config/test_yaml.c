/* YAML input as real configs use it, and the processed YAML output. */
#include "helpers.h"

TEST(config_yaml_anchors_aliases_and_merge_keys)
{
    /* A merge: the map's own keys win; among merged maps the first wins. */
    T_PROCESS("version: 2\n"
              "base: &base\n"
              "  docker: [{image: alpine}]\n"
              "  working_directory: /base\n"
              "  resource_class: small\n"
              "extra: &extra\n"
              "  resource_class: large\n"
              "  parallelism: 3\n"
              "steps: &steps\n"
              "  - checkout\n"
              "jobs:\n"
              "  build:\n"
              "    <<: [*base, *extra]\n"
              "    working_directory: /own\n"
              "    steps: *steps\n"
              "  test:\n"
              "    <<: *base\n"
              "    steps: *steps\n"
              "workflows:\n"
              "  version: 2\n"
              "  w:\n"
              "    jobs: [build, test]\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker:\n"
              "    - image: alpine\n"
              "    resource_class: small\n"
              "    parallelism: 3\n"
              "    working_directory: /own\n"
              "    steps:\n"
              "    - checkout\n"
              "  test:\n"
              "    docker:\n"
              "    - image: alpine\n"
              "    working_directory: /base\n"
              "    resource_class: small\n"
              "    steps:\n"
              "    - checkout\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - build\n"
              "    - test\n"
              "  version: 2\n");
}

TEST(config_yaml_block_scalars_quoted_keys_and_yaml11_types)
{
    T_PROCESS("version: 2.0\n"
              "jobs:\n"
              "  \"build\":\n"
              "    docker: [{image: alpine}]\n"
              "    environment:\n"
              "      'QUOTED KEY': x\n"
              "      YES_BOOL: yes\n"
              "      OFF_BOOL: off\n"
              "      OCTAL: 010\n"
              "      HEX: 0x1F\n"
              "      FLOAT: 3.10\n"
              "      STR: \"3.10\"\n"
              "      EMPTY: \"\"\n"
              "      NULL_VALUE: ~\n"
              "    steps:\n"
              "      - run:\n"
              "          name: literal\n"
              "          command: |\n"
              "            echo one\n"
              "            echo two\n"
              "      - run:\n"
              "          command: >-\n"
              "            folded\n"
              "            line\n"
              "workflows:\n"
              "  version: 2\n"
              "  w: {jobs: [build]}\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker:\n"
              "    - image: alpine\n"
              "    environment:\n"
              "      QUOTED KEY: x\n"
              "      YES_BOOL: 'true'\n"
              "      OFF_BOOL: 'false'\n"
              "      OCTAL: '8'\n"
              "      HEX: '31'\n"
              "      FLOAT: '3.1'\n"
              "      STR: '3.10'\n"
              "      EMPTY: ''\n"
              "      NULL_VALUE: ''\n"
              "    steps:\n"
              "    - run:\n"
              "        command: |\n"
              "          echo one\n"
              "          echo two\n"
              "        name: literal\n"
              "    - run:\n"
              "        command: folded line\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - build\n"
              "  version: 2\n");
}

TEST(config_yaml_versions)
{
    const char *ok[] = {"version: 2\n",     "version: 2.0\n", "version: \"2\"\n",
                        "version: '2.0'\n", "version: 2.1\n", "version: \"2.1\"\n"};
    for (size_t i = 0; i < SP_ARRAY_LEN(ok); i++) {
        char y[512];
        snprintf(y, sizeof y, "%sjobs:\n  build:\n    docker: [{image: a}]\n    steps: [checkout]\n", ok[i]);
        config_result_t *r = th_compile(y, NULL);
        T_ASSERT(r != NULL);
        if (!r->valid) {
            char *e = th_errors(r);
            t_fail(t, __FILE__, __LINE__, "%s: %s", ok[i], e);
            free(e);
        }
        T_EQ_U64(r->version, strstr(ok[i], "2.1") ? 21 : 20);
        config_result_free(r);
    }
    T_ERRORS("version: 3\njobs: {}\n", NULL,
             "config.yml:1:10: version: unsupported version 3: Spool runs versions 2, 2.0 and 2.1\n");
    T_ERRORS("jobs: {}\n", NULL, "config.yml:1:1: the config needs version: 2, 2.0 or 2.1\n");
    T_ERRORS("", NULL, "config.yml:1:1: the config is empty\n");
    T_ERRORS("- a\n", NULL, "config.yml:1:1: the config is a map (version, jobs, workflows), got a list\n");
}

TEST(config_yaml_syntax_errors_name_line_and_column)
{
    T_ERRORS("version: 2.1\njobs:\n  build:\n    steps: [checkout\n", NULL,
             "config.yml:5:1: invalid YAML: did not find expected ',' or ']' while parsing a flow sequence\n");
    T_ERRORS("version: 2.1\nx: *nope\n", NULL, "config.yml:2:4: the alias *nope has no anchor &nope before it\n");
    T_ERRORS("version: 2.1\n? [a, b]\n: c\n", NULL, "config.yml:2:3: a map key must be a scalar\n");
    T_ERRORS("version: 2.1\nx:\n  <<: 3\n", NULL, "config.yml:3:7: the merge key << takes a map or a list of maps\n");
}

TEST(config_yaml_alias_bomb_is_refused_quickly)
{
    /* "Billion laughs": 10 levels of 10 aliases = 10^10 nodes. */
    sp_buf_t b = {0};
    sp_buf_addstr(&b, "version: 2.1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 10; i++) {
        sp_buf_printf(&b, "a%d: &a%d [", i, i);
        for (int j = 0; j < 10; j++) sp_buf_printf(&b, "%s*a%d", j ? ", " : "", i - 1);
        sp_buf_addstr(&b, "]\n");
    }
    sp_buf_add(&b, "", 1);
    int64_t t0 = sp_mono_ns();
    char *e = th_fail((const char *)b.p, NULL);
    T_ASSERT(e != NULL);
    T_ASSERT(strstr(e, "the document expands to more than 1000000 values (aliases of aliases?)") != NULL);
    T_ASSERT(sp_mono_ns() - t0 < 5000000000LL); /* a bound, not a benchmark */
    free(e);
    sp_buf_free(&b);
}

TEST(config_yaml_deep_nesting_is_refused)
{
    sp_buf_t b = {0};
    sp_buf_addstr(&b, "version: 2.1\nx: ");
    for (int i = 0; i < 300; i++) sp_buf_addstr(&b, "[");
    for (int i = 0; i < 300; i++) sp_buf_addstr(&b, "]");
    sp_buf_add(&b, "\n", 2);
    char *e = th_fail((const char *)b.p, NULL);
    T_ASSERT(e != NULL);
    T_ASSERT(strstr(e, "collections nest deeper than 256 levels") != NULL);
    free(e);
    sp_buf_free(&b);
}

TEST(config_emit_quotes_what_would_read_as_another_type)
{
    T_PROCESS("version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker: [{image: alpine}]\n"
              "    steps:\n"
              "      - run: {name: 'yes', command: '1'}\n"
              "      - run: {name: 'null', command: '0x10'}\n"
              "      - run: {name: '', command: '- item'}\n"
              "      - run: {name: 'a: b', command: '#!/bin/sh'}\n"
              "workflows: {version: 2, w: {jobs: [build]}}\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker:\n"
              "    - image: alpine\n"
              "    steps:\n"
              "    - run:\n"
              "        command: '1'\n"
              "        name: 'yes'\n"
              "    - run:\n"
              "        command: '0x10'\n"
              "        name: 'null'\n"
              "    - run:\n"
              "        command: '- item'\n"
              "        name: ''\n"
              "    - run:\n"
              "        command: '#!/bin/sh'\n"
              "        name: 'a: b'\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - build\n"
              "  version: 2\n");
}
