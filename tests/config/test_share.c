/* Equal values of the processed tree are kept once (src/config/share.c):
 * shared where they print the same, apart where they do not, and never
 * changed through another job. */
#include "helpers.h"

static json_t *step_of(const config_result_t *r, const char *job, size_t i)
{
    json_t *jobs = json_object_get(r->processed, "jobs");
    return json_array_get(json_object_get(json_object_get(jobs, job), "steps"), i);
}

TEST(config_share_equal_steps_are_one_value)
{
    config_result_t *r = th_compile("version: 2.1\n"
                                    "jobs:\n"
                                    "  a:\n"
                                    "    docker: [{image: img}]\n"
                                    "    steps:\n"
                                    "      - run: {name: build, command: make}\n"
                                    "      - save_cache: {key: v1, paths: [out]}\n"
                                    "  b:\n"
                                    "    docker: [{image: img}]\n"
                                    "    steps:\n"
                                    "      - run: {name: build, command: make}\n"
                                    "      - save_cache: {key: v1, paths: [out]}\n"
                                    "workflows:\n"
                                    "  w: {jobs: [a, b]}\n",
                                    NULL);
    T_ASSERT(r != NULL && r->valid);
    bool shared = step_of(r, "a", 0) == step_of(r, "b", 0) && step_of(r, "a", 1) == step_of(r, "b", 1);
    config_result_free(r);
    T_ASSERT(shared);
}

TEST(config_share_keeps_apart_what_prints_apart)
{
    /* json_equal would take these for equal: key order and -0.0. */
    T_PROCESS("version: 2.1\n"
              "jobs:\n"
              "  a:\n"
              "    docker: [{image: img, user: 0.0}]\n"
              "    steps:\n"
              "      - run: {command: make, name: build, shell: bash}\n"
              "  b:\n"
              "    docker: [{image: img, user: -0.0}]\n"
              "    steps:\n"
              "      - run: {command: make, shell: bash, name: build}\n"
              "workflows:\n"
              "  w: {jobs: [a, b]}\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  a:\n"
              "    docker:\n"
              "    - image: img\n"
              "      user: 0.0\n"
              "    steps:\n"
              "    - run:\n"
              "        command: make\n"
              "        name: build\n"
              "        shell: bash\n"
              "  b:\n"
              "    docker:\n"
              "    - image: img\n"
              "      user: -0.0\n"
              "    steps:\n"
              "    - run:\n"
              "        command: make\n"
              "        shell: bash\n"
              "        name: build\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - a\n"
              "    - b\n"
              "  version: 2\n");
}

TEST(config_share_a_merged_environment_stays_in_its_job)
{
    /* Job a merges its environment into the executor's, which job b
     * shares: the merge works on a copy. */
    T_PROCESS("version: 2.1\n"
              "executors:\n"
              "  e:\n"
              "    docker: [{image: img}]\n"
              "    environment: {E: e}\n"
              "jobs:\n"
              "  a:\n"
              "    executor: e\n"
              "    environment: {X: a}\n"
              "    steps: [checkout]\n"
              "  b:\n"
              "    executor: e\n"
              "    steps: [checkout]\n"
              "workflows:\n"
              "  w: {jobs: [a, b]}\n",
              NULL,
              "version: 2\n"
              "jobs:\n"
              "  a:\n"
              "    docker:\n"
              "    - image: img\n"
              "    environment:\n"
              "      E: e\n"
              "      X: a\n"
              "    steps:\n"
              "    - checkout\n"
              "  b:\n"
              "    docker:\n"
              "    - image: img\n"
              "    environment:\n"
              "      E: e\n"
              "    steps:\n"
              "    - checkout\n"
              "workflows:\n"
              "  w:\n"
              "    jobs:\n"
              "    - a\n"
              "    - b\n"
              "  version: 2\n");
}
