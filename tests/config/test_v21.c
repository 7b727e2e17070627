/* Version 2.1: commands, executors, parameters, pipeline values, when and
 * unless, matrix, pre- and post-steps, inline orbs. Written from
 * CircleCI's configuration reference and "reusable config" pages. */
#include "helpers.h"

TEST(config_v21_commands_with_parameters)
{
    T_PROCESS("version: 2.1\n"
              "commands:\n"
              "  sayhello:\n"
              "    description: A very simple command\n"
              "    parameters:\n"
              "      to: {type: string, default: Hello World}\n"
              "    steps:\n"
              "      - run: echo << parameters.to >>\n"
              "  twice:\n"
              "    parameters:\n"
              "      what: {type: string}\n"
              "    steps:\n"
              "      - sayhello: {to: << parameters.what >>}\n"
              "      - sayhello: {to: \"again << parameters.what >>\"}\n"
              "jobs:\n"
              "  build:\n"
              "    docker: [{image: a}]\n"
              "    steps:\n"
              "      - sayhello\n"
              "      - twice: {what: you}\n"
              "workflows:\n"
              "  w: {jobs: [build]}\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: echo Hello World\n"
              "    - run:\n"
              "        command: echo you\n"
              "    - run:\n"
              "        command: echo again you\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - build\n"
              "  version: 2\n");
}

TEST(config_v21_executors_merge_into_the_job)
{
    /* The job's keys win; environments merge and the job wins on a clash. */
    T_PROCESS("version: 2.1\n"
              "executors:\n"
              "  py:\n"
              "    parameters:\n"
              "      tag: {type: string, default: '3.11'}\n"
              "    docker: [{image: 'cimg/python:<< parameters.tag >>'}]\n"
              "    working_directory: /exec\n"
              "    resource_class: small\n"
              "    shell: /bin/sh\n"
              "    environment: {A: exec, B: exec}\n"
              "  vm:\n"
              "    machine: {image: ubuntu-2204:current}\n"
              "jobs:\n"
              "  one:\n"
              "    executor: py\n"
              "    steps: [checkout]\n"
              "  two:\n"
              "    executor: {name: py, tag: '3.8'}\n"
              "    resource_class: large\n"
              "    environment: {B: job, C: job}\n"
              "    steps: [checkout]\n"
              "  three:\n"
              "    executor: vm\n"
              "    steps: [checkout]\n"
              "workflows:\n"
              "  w: {jobs: [one, two, three]}\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  one:\n"
              "    docker:\n"
              "    - image: cimg/python:3.11\n"
              "    working_directory: /exec\n"
              "    resource_class: small\n"
              "    shell: /bin/sh\n"
              "    environment:\n"
              "      A: exec\n"
              "      B: exec\n"
              "    steps:\n"
              "    - checkout\n"
              "  two:\n"
              "    docker:\n"
              "    - image: cimg/python:3.8\n"
              "    working_directory: /exec\n"
              "    resource_class: large\n"
              "    shell: /bin/sh\n"
              "    environment:\n"
              "      A: exec\n"
              "      B: job\n"
              "      C: job\n"
              "    steps:\n"
              "    - checkout\n"
              "  three:\n"
              "    machine:\n"
              "      image: ubuntu-2204:current\n"
              "    steps:\n"
              "    - checkout\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - one\n"
              "    - two\n"
              "    - three\n"
              "  version: 2\n");
}

TEST(config_v21_parameter_types)
{
    T_PROCESS("version: 2.1\n"
              "executors:\n"
              "  e: {docker: [{image: e}]}\n"
              "jobs:\n"
              "  j:\n"
              "    parameters:\n"
              "      s: {type: string, default: text}\n"
              "      b: {type: boolean, default: false}\n"
              "      i: {type: integer, default: 2}\n"
              "      en: {type: enum, enum: [small, large], default: small}\n"
              "      ex: {type: executor, default: e}\n"
              "      st: {type: steps, default: [run: default]}\n"
              "      v: {type: env_var_name, default: TOKEN}\n"
              "    executor: << parameters.ex >>\n"
              "    parallelism: << parameters.i >>\n"
              "    resource_class: << parameters.en >>\n"
              "    steps:\n"
              "      - run: echo << parameters.s >> << parameters.b >> $<< parameters.v >>\n"
              "      - << parameters.st >>\n"
              "      - run:\n"
              "          command: echo bg\n"
              "          background: << parameters.b >>\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "      - j\n"
              "      - j:\n"
              "          name: k\n"
              "          s: other\n"
              "          b: true\n"
              "          i: 5\n"
              "          en: large\n"
              "          ex: {name: e}\n"
              "          st: [checkout, run: more]\n"
              "          v: SECRET\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  j:\n"
              "    docker:\n"
              "    - image: e\n"
              "    parallelism: 2\n"
              "    resource_class: small\n"
              "    steps:\n"
              "    - run:\n"
              "        command: echo text false $TOKEN\n"
              "    - run:\n"
              "        command: default\n"
              "    - run:\n"
              "        command: echo bg\n"
              "        background: false\n"
              "  k:\n"
              "    docker:\n"
              "    - image: e\n"
              "    parallelism: 5\n"
              "    resource_class: large\n"
              "    steps:\n"
              "    - run:\n"
              "        command: echo other true $SECRET\n"
              "    - checkout\n"
              "    - run:\n"
              "        command: more\n"
              "    - run:\n"
              "        command: echo bg\n"
              "        background: true\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - j\n"
              "    - k\n"
              "  version: 2\n");
}

static const char *typed_job = "version: 2.1\n"
                               "jobs:\n"
                               "  j:\n"
                               "    parameters:\n"
                               "      s: {type: string, default: x}\n"
                               "      b: {type: boolean, default: false}\n"
                               "      i: {type: integer, default: 1}\n"
                               "      en: {type: enum, enum: [a, b], default: a}\n"
                               "      st: {type: steps, default: []}\n"
                               "      v: {type: env_var_name, default: X}\n"
                               "      req: {type: string}\n"
                               "    docker: [{image: a}]\n"
                               "    steps: [checkout]\n"
                               "workflows:\n"
                               "  w:\n"
                               "    jobs:\n"
                               "      - j:\n"
                               "          %s\n";

static char *typed(const char *args)
{
    static char buf[2048];
    snprintf(buf, sizeof buf, typed_job, args);
    return buf;
}

TEST(config_v21_parameter_type_errors)
{
    T_ERRORS(typed("{req: r, s: 1}"), NULL,
             "config.yml:18:23: workflows.w.jobs[0].j: parameter \"s\" of job j expects a string, got an integer\n");
    T_ERRORS(typed("{req: r, b: maybe}"), NULL,
             "config.yml:18:23: workflows.w.jobs[0].j: parameter \"b\" of job j expects a boolean, got a string\n");
    T_ERRORS(typed("{req: r, i: '3'}"), NULL,
             "config.yml:18:23: workflows.w.jobs[0].j: parameter \"i\" of job j expects an integer, got a string\n");
    T_ERRORS(typed("{req: r, en: c}"), NULL,
             "config.yml:18:24: workflows.w.jobs[0].j: parameter \"en\" of job j must be one of \"a\", \"b\", got "
             "\"c\"\n");
    T_ERRORS(typed("{req: r, st: checkout}"), NULL,
             "config.yml:18:24: workflows.w.jobs[0].j: parameter \"st\" of job j expects a list of steps, got a "
             "string\n");
    T_ERRORS(typed("{req: r, v: 'not valid'}"), NULL,
             "config.yml:18:23: workflows.w.jobs[0].j: parameter \"v\" of job j must be an environment variable name "
             "([A-Za-z_][A-Za-z0-9_]*), got \"not valid\"\n");
    /* a parameter without a value, and an argument that is no parameter */
    T_ERRORS(typed("{nope: 1}"), NULL,
             "config.yml:18:12: workflows.w.jobs[0].j.nope: job j has no parameter \"nope\" (its parameters: s, b, "
             "i, en, st, v, req)\n"
             "config.yml:17:9: workflows.w.jobs[0].j: job j needs a value for parameter \"req\" (it has no default)\n");
}

TEST(config_v21_unknown_parameter_in_substitution)
{
    T_ERRORS("version: 2.1\n"
             "jobs:\n"
             "  build:\n"
             "    parameters: {a: {type: string, default: x}}\n"
             "    docker: [{image: a}]\n"
             "    steps:\n"
             "      - checkout\n"
             "      - run: echo\n"
             "      - run:\n"
             "          command: echo << parameters.b >>\n"
             "workflows:\n"
             "  w: {jobs: [build]}\n",
             NULL,
             "config.yml:10:20: jobs.build.steps[2].run.command: << parameters.b >>: job build has no parameter "
             "\"b\"\n");
}

TEST(config_v21_pipeline_parameters_and_values)
{
    const char *y = "version: 2.1\n"
                    "parameters:\n"
                    "  image: {type: string, default: alpine}\n"
                    "  n: {type: integer, default: 1}\n"
                    "  go: {type: boolean, default: false}\n"
                    "  env: {type: enum, enum: [dev, prod], default: dev}\n"
                    "jobs:\n"
                    "  build:\n"
                    "    docker: [{image: << pipeline.parameters.image >>}]\n"
                    "    parallelism: << pipeline.parameters.n >>\n"
                    "    steps:\n"
                    "      - run: echo << pipeline.parameters.env >> << pipeline.parameters.go >>\n"
                    "      - run: echo << pipeline.id >> << pipeline.number >> << pipeline.project.git_url >>\n"
                    "      - run: echo << pipeline.project.type >> << pipeline.git.branch >> [<< pipeline.git.tag >>]\n"
                    "      - run: echo << pipeline.git.revision >> << pipeline.git.base_revision >>\n"
                    "      - run: echo << pipeline.trigger_source >>\n"
                    "workflows:\n"
                    "  w: {jobs: [build]}\n";
    T_PROCESS(y, NULL,
              "version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker:\n"
              "    - image: alpine\n"
              "    parallelism: 1\n"
              "    steps:\n"
              "    - run:\n"
              "        command: echo dev false\n"
              "    - run:\n"
              "        command: echo 00000000-0000-0000-0000-000000000001 42 https://github.com/acme/app\n"
              "    - run:\n"
              "        command: echo github main []\n"
              "    - run:\n"
              "        command: echo 0123abcd fedc3210\n"
              "    - run:\n"
              "        command: echo webhook\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - build\n"
              "  version: 2\n");
    char *out = th_process(y, "{\"image\": \"debian\", \"n\": 3, \"go\": true, \"env\": \"prod\"}");
    T_ASSERT(out != NULL);
    T_ASSERT(strstr(out, "- image: debian\n    parallelism: 3\n") != NULL);
    T_ASSERT(strstr(out, "command: echo prod true\n") != NULL);
    free(out);
    T_ERRORS(y, "{\"nope\": 1, \"n\": \"3\"}",
             "config.yml: parameters.nope: the pipeline has no parameter \"nope\" (its parameters: image, n, go, env)\n"
             "config.yml: parameters: parameter \"n\" of the pipeline expects an integer, got a string\n");
    T_ERRORS(y, "{\"env\": \"qa\"}",
             "config.yml: parameters: parameter \"env\" of the pipeline must be one of \"dev\", \"prod\", got "
             "\"qa\"\n");
    T_ERRORS(y, "[1]", "config.yml: pipeline parameters: expected a JSON object of name: value\n");
    T_ERRORS(
        y, "{",
        "config.yml: pipeline parameters: invalid JSON at line 1 column 1: string or '}' expected near end of file\n");
    T_ERRORS("version: 2.1\njobs:\n  build:\n    docker: [{image: a}]\n    steps: [run: << pipeline.nope >>]\n", NULL,
             "config.yml:5:18: jobs.build.steps[0].run: << pipeline.nope >>: unknown pipeline value\n");
}

TEST(config_v21_when_and_unless_steps_with_logic)
{
    T_PROCESS("version: 2.1\n"
              "jobs:\n"
              "  build:\n"
              "    parameters:\n"
              "      on: {type: boolean, default: true}\n"
              "      name: {type: string, default: ''}\n"
              "    docker: [{image: a}]\n"
              "    steps:\n"
              "      - when: {condition: << parameters.on >>, steps: [run: a]}\n"
              "      - unless: {condition: << parameters.on >>, steps: [run: b]}\n"
              "      - when: {condition: << parameters.name >>, steps: [run: c]}\n"
              "      - when:\n"
              "          condition: {and: [true, {not: false}, {or: [0, 1]}]}\n"
              "          steps: [run: d]\n"
              "      - when:\n"
              "          condition: {equal: [main, << pipeline.git.branch >>]}\n"
              "          steps: [run: e]\n"
              "      - when:\n"
              "          condition: {matches: {pattern: '^ma[a-z]+$', value: << pipeline.git.branch >>}}\n"
              "          steps: [run: f]\n"
              "      - when:\n"
              "          condition: {matches: {pattern: 'ai', value: << pipeline.git.branch >>}}\n"
              "          steps: [run: g]\n"
              "      - when: {condition: {and: []}, steps: [run: h]}\n"
              "      - when: {condition: {equal: [1, '1']}, steps: [run: i]}\n"
              "      - when: {condition: {equal: [2, 2.0]}, steps: [run: j]}\n"
              "      - when: {condition: .nan, steps: [run: k]}\n"
              "      - unless: {condition: null, steps: [run: l]}\n"
              "      - when:\n"
              "          condition: true\n"
              "          steps:\n"
              "            run: single step\n"
              "workflows:\n"
              "  w: {jobs: [build]}\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: a\n"
              "    - run:\n"
              "        command: d\n"
              "    - run:\n"
              "        command: e\n"
              "    - run:\n"
              "        command: f\n"
              "    - run:\n"
              "        command: j\n"
              "    - run:\n"
              "        command: l\n"
              "    - run:\n"
              "        command: single step\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - build\n"
              "  version: 2\n");
}

TEST(config_v21_workflow_when_and_unless)
{
    const char *y = "version: 2.1\n"
                    "parameters:\n"
                    "  nightly: {type: boolean, default: false}\n"
                    "jobs:\n"
                    "  build: {docker: [{image: a}], steps: [checkout]}\n"
                    "workflows:\n"
                    "  commit:\n"
                    "    unless: << pipeline.parameters.nightly >>\n"
                    "    jobs: [build]\n"
                    "  nightly:\n"
                    "    when:\n"
                    "      and:\n"
                    "        - << pipeline.parameters.nightly >>\n"
                    "        - {equal: [main, << pipeline.git.branch >>]}\n"
                    "    jobs: [build]\n";
    char *a = th_process(y, NULL), *b = th_process(y, "{\"nightly\": true}");
    T_ASSERT(a && b);
    T_ASSERT(strstr(a, "  commit:\n") && !strstr(a, "  nightly:\n"));
    T_ASSERT(!strstr(b, "  commit:\n") && strstr(b, "  nightly:\n"));
    free(a);
    free(b);
}

TEST(config_v21_matrix_names_exclude_alias_requires)
{
    T_PROCESS("version: 2.1\n"
              "jobs:\n"
              "  build:\n"
              "    parameters:\n"
              "      version: {type: string}\n"
              "      platform: {type: string}\n"
              "    docker: [{image: a}]\n"
              "    steps: [run: build << parameters.platform >> << parameters.version >>]\n"
              "  deploy:\n"
              "    parameters:\n"
              "      platform: {type: string}\n"
              "    docker: [{image: a}]\n"
              "    steps: [run: deploy << parameters.platform >>]\n"
              "workflows:\n"
              "  workflow:\n"
              "    jobs:\n"
              "      - build:\n"
              "          matrix:\n"
              "            parameters:\n"
              "              version: ['0.1', '0.2']\n"
              "              platform: [macos, linux]\n"
              "            exclude:\n"
              "              - {platform: macos, version: '0.2'}\n"
              "      - deploy:\n"
              "          name: deploy-<< matrix.platform >>\n"
              "          matrix:\n"
              "            alias: deploy-all\n"
              "            parameters: {platform: [macos, linux]}\n"
              "          requires: [build-<< matrix.platform >>-0.1]\n"
              "      - build:\n"
              "          name: after\n"
              "          version: '9'\n"
              "          platform: any\n"
              "          requires: [deploy-all, build]\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  build-macos-0.1:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: build macos 0.1\n"
              "  build-linux-0.1:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: build linux 0.1\n"
              "  build-linux-0.2:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: build linux 0.2\n"
              "  deploy-macos:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: deploy macos\n"
              "  deploy-linux:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: deploy linux\n"
              "  after:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: build any 9\n"
              "workflows:\n"
              "  workflow:\n"
              "    jobs:\n"
              "    - build-macos-0.1\n"
              "    - build-linux-0.1\n"
              "    - build-linux-0.2\n"
              "    - deploy-macos:\n"
              "        requires:\n"
              "        - build-macos-0.1\n"
              "    - deploy-linux:\n"
              "        requires:\n"
              "        - build-linux-0.1\n"
              "    - after:\n"
              "        requires:\n"
              "        - deploy-macos\n"
              "        - deploy-linux\n"
              "        - build-macos-0.1\n"
              "        - build-linux-0.1\n"
              "        - build-linux-0.2\n"
              "  version: 2\n");
}

TEST(config_v21_matrix_duplicate_names_are_an_error)
{
    T_ERRORS("version: 2.1\n"
             "jobs:\n"
             "  t:\n"
             "    parameters: {v: {type: integer}}\n"
             "    docker: [{image: a}]\n"
             "    steps: [checkout]\n"
             "workflows:\n"
             "  w:\n"
             "    jobs:\n"
             "      - t:\n"
             "          name: same\n"
             "          matrix: {parameters: {v: [1, 2]}}\n",
             NULL,
             "config.yml:10:9: workflows.w.jobs[0].t: workflow w has two jobs named \"same\" (after matrix expansion); "
             "give one another name:\n");
}

TEST(config_v21_pre_and_post_steps)
{
    T_PROCESS("version: 2.1\n"
              "commands:\n"
              "  hello: {steps: [run: hello]}\n"
              "jobs:\n"
              "  build: {docker: [{image: a}], steps: [run: main]}\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "      - build:\n"
              "          pre-steps: [run: before, hello]\n"
              "          post-steps:\n"
              "            - run: after\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: before\n"
              "    - run:\n"
              "        command: hello\n"
              "    - run:\n"
              "        command: main\n"
              "    - run:\n"
              "        command: after\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - build\n"
              "  version: 2\n");
}

TEST(config_v21_inline_orbs)
{
    T_PROCESS("version: 2.1\n"
              "orbs:\n"
              "  greet:\n"
              "    executors:\n"
              "      default: {docker: [{image: 'greet:1'}]}\n"
              "    commands:\n"
              "      hi:\n"
              "        parameters: {who: {type: string, default: orb}}\n"
              "        steps: [run: hi << parameters.who >>]\n"
              "      twice: {steps: [hi, hi: {who: again}]}\n"
              "    jobs:\n"
              "      say:\n"
              "        executor: default\n"
              "        steps: [twice]\n"
              "jobs:\n"
              "  mine:\n"
              "    executor: greet/default\n"
              "    steps: [greet/hi]\n"
              "workflows:\n"
              "  w:\n"
              "    jobs: [greet/say, mine]\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  greet/say:\n"
              "    docker:\n"
              "    - image: greet:1\n"
              "    steps:\n"
              "    - run:\n"
              "        command: hi orb\n"
              "    - run:\n"
              "        command: hi again\n"
              "  mine:\n"
              "    docker:\n"
              "    - image: greet:1\n"
              "    steps:\n"
              "    - run:\n"
              "        command: hi orb\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - greet/say\n"
              "    - mine\n"
              "  version: 2\n");
}

TEST(config_v21_registry_orbs_are_refused_by_name_and_line)
{
    T_ERRORS("version: 2.1\n"
             "orbs:\n"
             "  node: circleci/node@5.1.0\n"
             "jobs:\n"
             "  build: {docker: [{image: a}], steps: [node/install]}\n"
             "workflows:\n"
             "  w: {jobs: [build]}\n",
             NULL,
             "config.yml:3:9: orbs.node: orb \"node\" (circleci/node@5.1.0) comes from the orb registry, which Spool "
             "does not have; define the orb inline under orbs:\n"
             "config.yml:5:41: jobs.build.steps[0]: unknown step \"node/install\": not a built-in step or a command\n");
}

TEST(config_v21_escapes_and_heredocs)
{
    T_PROCESS("version: 2.1\n"
              "jobs:\n"
              "  build:\n"
              "    docker: [{image: a}]\n"
              "    steps:\n"
              "      - run: |\n"
              "          cat <<EOF > f\n"
              "          x\n"
              "          EOF\n"
              "          echo \\<< parameters.literal >>\n"
              "workflows:\n"
              "  w: {jobs: [build]}\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  build:\n"
              "    docker:\n"
              "    - image: a\n"
              "    steps:\n"
              "    - run:\n"
              "        command: |\n"
              "          cat <<EOF > f\n"
              "          x\n"
              "          EOF\n"
              "          echo << parameters.literal >>\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - build\n"
              "  version: 2\n");
}

TEST(config_v21_command_recursion_and_expansion_bounds)
{
    T_ERRORS("version: 2.1\n"
             "commands:\n"
             "  a: {steps: [b]}\n"
             "  b: {steps: [a]}\n"
             "jobs:\n"
             "  build: {docker: [{image: a}], steps: [a]}\n"
             "workflows:\n"
             "  w: {jobs: [build]}\n",
             NULL, "config.yml:4:15: commands.b.steps[0]: command a invokes itself (through b)\n");
    /* Each command calls the next one 8 times: 8^10 steps. */
    sp_buf_t b = {0};
    sp_buf_addstr(&b, "version: 2.1\ncommands:\n  c0: {steps: [run: x]}\n");
    for (int i = 1; i <= 10; i++) {
        sp_buf_printf(&b, "  c%d: {steps: [", i);
        for (int j = 0; j < 8; j++) sp_buf_printf(&b, "%sc%d", j ? ", " : "", i - 1);
        sp_buf_addstr(&b, "]}\n");
    }
    sp_buf_addstr(&b, "jobs:\n  build: {docker: [{image: a}], steps: [c10]}\nworkflows:\n  w: {jobs: [build]}\n");
    sp_buf_add(&b, "", 1);
    char *e = th_fail((const char *)b.p, NULL);
    T_ASSERT(e != NULL);
    T_ASSERT(strstr(e, "the config expands to more than 4000000 values") != NULL);
    free(e);
    sp_buf_free(&b);
}

/* Names have no fixed limit up to 1,023 characters (found by fuzz-config:
 * names over 599 were cut when registered); beyond it they are refused,
 * not cut. */
TEST(config_v21_long_job_names)
{
    char name[701];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = 0;
    sp_buf_t y = {0};
    sp_buf_printf(&y,
                  "version: 2.1\njobs:\n  %s:\n    docker: [{image: a}]\n    steps: [checkout]\n"
                  "workflows:\n  w:\n    jobs: [%s]\n",
                  name, name);
    sp_buf_add(&y, "", 1);
    config_result_t *r = th_compile((const char *)y.p, NULL);
    T_ASSERT(r != NULL && r->valid);
    config_result_free(r);
    sp_buf_free(&y);

    char long_value[1100];
    memset(long_value, 'v', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = 0;
    sp_buf_printf(&y,
                  "version: 2.1\njobs:\n  b:\n    parameters: {p: {type: string}}\n    docker: [{image: a}]\n"
                  "    steps: [checkout]\n"
                  "workflows:\n  w:\n    jobs:\n      - b:\n          matrix: {parameters: {p: [%s]}}\n"
                  "      - b: {name: '%s', p: x}\n",
                  long_value, long_value);
    sp_buf_add(&y, "", 1);
    r = th_compile((const char *)y.p, NULL);
    T_ASSERT(r != NULL && !r->valid);
    char *e = th_errors(r);
    T_ASSERT(strstr(e, "a matrix job's name (b-...) is longer than 1023 characters") != NULL);
    T_ASSERT(strstr(e, "a job's name is longer than 1023 characters") != NULL);
    free(e);
    config_result_free(r);
    sp_buf_free(&y);
}
