/* libFuzzer target: the config compiler. The input is a config.yml (the
 * first line may be "#params {...}" to pass pipeline parameters). Beyond
 * "never crash, never hang": a valid config's processed YAML must itself
 * compile, as version 2, to the same processed config, so the emitter and
 * the compiler agree on every value they write. */
#include "config/config.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    const char *src = (const char *)data;
    char *params = NULL;
    if (n > 8 && memcmp(src, "#params ", 8) == 0) {
        const char *nl = memchr(src, '\n', n);
        size_t len = nl ? (size_t)(nl - src) - 8 : n - 8;
        params = sp_xstrndup(src + 8, len);
    }
    config_input_t in = {.parameters_json = params,
                         .id = "00000000-0000-0000-0000-000000000001",
                         .number = 7,
                         .branch = "main",
                         .revision = "abc123"};
    config_result_t *r;
    if (config_compile(src, n, "fuzz.yml", &in, &r) != 0) __builtin_trap();
    if (r->valid) {
        sp_buf_t y = {0}, f = {0};
        if (config_emit_yaml(r, &y) != 0) __builtin_trap();
        config_result_t *r2;
        if (config_compile((const char *)y.p, y.n, "processed.yml", NULL, &r2) != 0) __builtin_trap();
        if (!r2->valid) {
            for (size_t i = 0; i < r2->nerrors; i++) {
                config_error_format(&r2->errors[i], &f);
                sp_buf_addstr(&f, "\n");
            }
            fprintf(stderr, "processed config does not compile:\n%.*s\n---\n%.*s", (int)f.n, (const char *)f.p,
                    (int)y.n, (const char *)y.p);
            __builtin_trap();
        }
        if (!json_equal(r->processed, r2->processed)) {
            char *a = json_dumps(r->processed, JSON_SORT_KEYS), *b = json_dumps(r2->processed, JSON_SORT_KEYS);
            fprintf(stderr, "processed config changes when compiled again:\n%s\n%s\n", a, b);
            __builtin_trap();
        }
        config_result_free(r2);
        sp_buf_free(&y);
        sp_buf_free(&f);
        /* The plan must read whatever the compiler wrote. */
        config_plan_t *p;
        config_plan_opts_t o = {.branch = "main"};
        if (config_plan(r->processed, &o, &p) != 0) __builtin_trap();
        config_plan_free(p);
        o = (config_plan_opts_t){.tag = "v1.0.0"};
        if (config_plan(r->processed, &o, &p) != 0) __builtin_trap();
        config_plan_free(p);
    } else if (r->nerrors == 0) {
        __builtin_trap(); /* invalid without a reason */
    }
    config_result_free(r);
    free(params);
    return 0;
}
