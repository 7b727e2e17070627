#include "test.h"

TEST(base_strerror_covers_table_and_errno)
{
    T_EQ_STR(sp_strerror(SP_ECORRUPT), "corrupt record");
    T_EQ_STR(sp_strerror(0), "success");
    T_EQ_STR(sp_strerror(-2), "No such file or directory");
}

TEST(base_buf_and_json_escape)
{
    sp_buf_t b = {0};
    sp_buf_add_json_str(&b, "a\"b\\c\n\x01", 7);
    sp_buf_add(&b, "", 1);
    T_EQ_STR((char *)b.p, "\"a\\\"b\\\\c\\u000a\\u0001\"");
    sp_buf_free(&b);
    for (int i = 0; i < 1000; i++) sp_buf_printf(&b, "%d,", i);
    T_ASSERT(b.n > 3000 && b.cap >= b.n);
    sp_buf_free(&b);
}

TEST(base_ct_equal)
{
    T_ASSERT(sp_ct_equal("abc", 3, "abc", 3));
    T_ASSERT(!sp_ct_equal("abc", 3, "abd", 3));
    T_ASSERT(!sp_ct_equal("abc", 3, "abcd", 4));
}

TEST(base_parse_u64)
{
    uint64_t v;
    T_OK(sp_parse_u64("18446744073709551615", &v));
    T_EQ_U64(v, UINT64_MAX);
    T_RC(SP_EINVAL, sp_parse_u64("18446744073709551616", &v));
    T_RC(SP_EINVAL, sp_parse_u64("", &v));
    T_RC(SP_EINVAL, sp_parse_u64("12x", &v));
    T_RC(SP_EINVAL, sp_parse_u64("-1", &v));
}

static void fixed_random(void *buf, size_t n) { memset(buf, 0xab, n); }

TEST(base_uuid4_format_and_injected_rng)
{
    char u[37];
    sp_set_random(fixed_random);
    sp_uuid4(u);
    sp_set_random(NULL);
    T_EQ_STR(u, "abababab-abab-4bab-abab-abababababab");
    char a[37], b[37];
    sp_uuid4(a);
    sp_uuid4(b);
    T_ASSERT(strcmp(a, b) != 0);
    T_ASSERT(strlen(a) == 36 && a[14] == '4');
}

TEST(base_format_time)
{
    char s[40];
    sp_format_time(1700000000123456789LL, s, sizeof s);
    T_EQ_STR(s, "2023-11-14T22:13:20.123Z");
}

TEST(base_map_set_get_del_iterate)
{
    sp_map_t m = {0};
    char keys[500][16];
    for (int i = 0; i < 500; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        sp_map_set(&m, keys[i], keys[i]);
    }
    T_EQ_U64(sp_map_len(&m), 500);
    for (int i = 0; i < 500; i += 2) T_ASSERT(sp_map_del(&m, keys[i]) == keys[i]);
    T_EQ_U64(sp_map_len(&m), 250);
    for (int i = 0; i < 500; i++) T_ASSERT(sp_map_get(&m, keys[i]) == (i % 2 ? keys[i] : NULL));
    sp_map_set(&m, "k1", NULL);
    T_ASSERT(sp_map_get(&m, "k1") == NULL && sp_map_len(&m) == 250);
    size_t it = 0, n = 0;
    const char *k;
    while (sp_map_next(&m, &it, &k, NULL)) n++;
    T_EQ_U64(n, 250);
    for (int i = 0; i < 500; i += 2) sp_map_set(&m, keys[i], keys[i]); /* reuses tombstones */
    T_EQ_U64(sp_map_len(&m), 500);
    sp_map_free(&m);
}

TEST(base_utf8_replaces_invalid_sequences)
{
    sp_buf_t b = {0};
    static const char in[] = "ok\n\xff\xfe bad \xc3\xa9 \xe2\x82 \xed\xa0\x80!";
    sp_buf_add_utf8(&b, in, sizeof in - 1);
    sp_buf_add(&b, "", 1);
    T_EQ_STR((char *)b.p, "ok\n\xef\xbf\xbd\xef\xbf\xbd bad \xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd "
                          "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!");
    sp_buf_free(&b);
}
