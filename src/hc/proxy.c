/* Proxy settings from the environment, and host:port parsing. */
#include "hc_internal.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int hc__hostport(const char *s, size_t n, const char *dflt, char **host, char **port)
{
    const char *end = s + n, *colon = NULL, *h = s, *hend;
    if (n > 0 && s[0] == '[') { /* [v6]:port */
        const char *rb = memchr(s, ']', n);
        if (rb == NULL) return SP_EINVAL;
        h = s + 1, hend = rb;
        if (rb + 1 < end) {
            if (rb[1] != ':') return SP_EINVAL;
            colon = rb + 1;
        }
    } else {
        colon = memchr(s, ':', n);
        hend = colon ? colon : end;
    }
    if (hend == h) return SP_EINVAL;
    long p = 0;
    if (colon != NULL) {
        char *e;
        p = strtol(colon + 1, &e, 10);
        if (e != end || p <= 0 || p > 65535) return SP_EINVAL;
    }
    *host = sp_xasprintf("%.*s", (int)(hend - h), h);
    *port = colon ? sp_xasprintf("%ld", p) : sp_xstrdup(dflt);
    return 0;
}

static const char *env2(const char *a, const char *b)
{
    const char *v = getenv(a);
    if ((v == NULL || *v == 0) && b != NULL) v = getenv(b);
    return v && *v ? v : NULL;
}

bool hc__no_proxy_match(const char *list, const char *host)
{
    size_t hl = strlen(host);
    for (const char *p = list; p && *p;) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ", \t");
        const char *e = p;
        p += n;
        if (n == 0) continue;
        if (n == 1 && *e == '*') return true;
        if (*e == '.') e++, n--; /* ".example.com" is "example.com" */
        if (n == hl && strncasecmp(e, host, n) == 0) return true;
        if (hl > n && host[hl - n - 1] == '.' && strncasecmp(e, host + hl - n, n) == 0) return true;
    }
    return false;
}

static int unhex(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* %-decodes n bytes of s into a buffer (user and password in a URL). */
static void add_decoded(sp_buf_t *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = unhex(s[i + 1])) >= 0 && (lo = unhex(s[i + 2])) >= 0) {
            char ch = (char)(hi << 4 | lo);
            sp_buf_add(b, &ch, 1);
            i += 2;
        } else {
            sp_buf_add(b, s + i, 1);
        }
    }
}

static char *basic_auth(const char *user, size_t n)
{
    sp_buf_t raw = {0};
    add_decoded(&raw, user, n);
    size_t cap = 4 * ((raw.n + 2) / 3) + 1;
    unsigned char *b64 = sp_xmalloc(cap);
    EVP_EncodeBlock(b64, raw.p ? raw.p : (const unsigned char *)"", (int)raw.n);
    char *h = sp_xasprintf("Proxy-Authorization: Basic %s\r\n", b64);
    explicit_bzero(b64, cap);
    free(b64);
    if (raw.p) explicit_bzero(raw.p, raw.n);
    sp_buf_free(&raw);
    return h;
}

int hc__proxy_from_env(hc__proxy_t *out, bool tls, const char *host, char *err, size_t errlen)
{
    *out = (hc__proxy_t){0};
    const char *url = tls ? env2("https_proxy", "HTTPS_PROXY") : env2("http_proxy", NULL);
    if (url == NULL) url = env2("all_proxy", "ALL_PROXY");
    if (url == NULL || hc__no_proxy_match(env2("no_proxy", "NO_PROXY"), host)) return 0;
    const char *s = url;
    if (strstr(s, "://") != NULL) {
        if (strncasecmp(s, "http://", 7) != 0) {
            /* Never a password in a message: only the scheme. */
            snprintf(err, errlen, "proxy: only http:// proxies are supported, not %.*s", (int)(strstr(s, "://") - s),
                     s);
            return SP_EINVAL;
        }
        s += 7;
    }
    size_t n = strcspn(s, "/");
    const char *at = memrchr(s, '@', n);
    char *auth = NULL;
    if (at != NULL) {
        auth = basic_auth(s, (size_t)(at - s));
        n -= (size_t)(at + 1 - s);
        s = at + 1;
    }
    if (hc__hostport(s, n, "1080", &out->host, &out->port) != 0) {
        snprintf(err, errlen, "proxy: expected http://[user:password@]host[:port], got \"%.*s\"", (int)n, s);
        free(auth);
        return SP_EINVAL;
    }
    out->auth = auth;
    return 0;
}

void hc__proxy_clear(hc__proxy_t *p)
{
    free(p->host);
    free(p->port);
    if (p->auth) explicit_bzero(p->auth, strlen(p->auth));
    free(p->auth);
    *p = (hc__proxy_t){0};
}
