/* Runs every file of the fuzzers' seed corpora (tools/fuzz/corpus/, which
 * also keeps each input that once crashed, named regress-*) through the
 * fuzz targets, so what the fuzzers found stays fixed. */
#include "test.h"

#include <dirent.h>
#include <stdlib.h>

#define LLVMFuzzerTestOneInput fuzz_record_one
#include "../../tools/fuzz/record.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_ingest_one
#include "../../tools/fuzz/ingest.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_config_one
#include "../../tools/fuzz/config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_hc_one
#include "../../tools/fuzz/hc.c"
#undef LLVMFuzzerTestOneInput

/* The corpus sits beside this source file's tree. */
static void corpus_dir(char *out, size_t n, const char *target)
{
    snprintf(out, n, "%s", __FILE__);
    char *cut = strstr(out, "/tests/fuzz/");
    if (cut) *cut = 0;
    size_t len = strlen(out);
    snprintf(out + len, n - len, "/tools/fuzz/corpus/%s", target);
}

static int run_corpus(t_ctx_t *t, const char *target, int (*one)(const uint8_t *, size_t))
{
    char dir[4096];
    corpus_dir(dir, sizeof dir, target);
    DIR *d = opendir(dir);
    if (d == NULL) {
        t_fail(t, __FILE__, __LINE__, "no corpus at %s", dir);
        return 0;
    }
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (f == NULL) continue;
        sp_buf_t b = {0};
        char chunk[4096];
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) sp_buf_add(&b, chunk, got);
        fclose(f);
        one(b.p ? b.p : (const uint8_t *)"", b.n);
        sp_buf_free(&b);
        files++;
    }
    closedir(d);
    return files;
}

TEST(fuzz_corpus_hc) { T_ASSERT(run_corpus(t, "hc", fuzz_hc_one) >= 7); }
TEST(fuzz_corpus_record) { T_ASSERT(run_corpus(t, "record", fuzz_record_one) >= 3); }

TEST(fuzz_corpus_ingest) { T_ASSERT(run_corpus(t, "ingest", fuzz_ingest_one) >= 6); }

/* Seeds and every input fuzz-config once crashed on (regress-*). */
TEST(fuzz_corpus_config) { T_ASSERT(run_corpus(t, "config", fuzz_config_one) >= 6); }

TEST(log_body_unpack_rejects_impossible_sizes)
{
    /* map32 claiming 1.6 billion entries in 12 bytes (found by fuzz-ingest) */
    static const uint8_t huge[] = {0x82, 0xa1, 0x61, 0xc0, 0xa1, 0x62, 0xdf, 0x61, 0xc0, 0xa1, 0xff, 0xc3};
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object o;
    T_RC(SP_ECORRUPT, log_body_unpack((sp_slice_t){huge, sizeof huge}, &z, &o));
    static const uint8_t ok[] = {0x81, 0xa1, 0x61, 0x92, 0xc0, 0xc3};
    T_OK(log_body_unpack((sp_slice_t){ok, sizeof ok}, &z, &o));
    static const uint8_t trailing[] = {0x80, 0x00};
    T_RC(SP_ECORRUPT, log_body_unpack((sp_slice_t){trailing, sizeof trailing}, &z, &o));
    msgpack_zone_destroy(&z);
}
