/* Shared between hc.c and proxy.c; nobody else sees it. */
#ifndef SPOOL_HC_INTERNAL_H
#define SPOOL_HC_INTERNAL_H

#include "hc.h"

/* Splits "host[:port]" or "[v6]:port" (n bytes of s) into malloc'ed
 * strings; the port defaults to dflt. SP_EINVAL when malformed. */
int hc__hostport(const char *s, size_t n, const char *dflt, char **host, char **port);

/* The HTTP proxy to reach host with, from the environment as curl reads
 * it: https_proxy/HTTPS_PROXY for https, http_proxy for http (never
 * HTTP_PROXY, which a CGI request can set), else all_proxy/ALL_PROXY;
 * no_proxy/NO_PROXY lists hosts and domains to reach directly ("*" for
 * all). Only http:// proxies, with optional user:password. */
typedef struct {
    char *host, *port; /* NULL: no proxy */
    char *auth;        /* "Proxy-Authorization: Basic ...\r\n", or NULL */
} hc__proxy_t;
int hc__proxy_from_env(hc__proxy_t *out, bool tls, const char *host, char *err, size_t errlen);
void hc__proxy_clear(hc__proxy_t *p);
/* True when the no_proxy list names host (exactly, or as a domain it is
 * under). */
bool hc__no_proxy_match(const char *list, const char *host);

#endif
