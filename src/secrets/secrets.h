/*
 * secrets: encryption of secret values at rest (AES-256-GCM, OpenSSL).
 *
 * Secrets (webhook secrets, project and context environment variables)
 * are sealed before they become event bodies, so the log never holds
 * them in plain text. The key is 32 random bytes in <data>/keys/secret.key
 * (mode 0600), created on first use. A sealed value is text:
 *
 *   "v1:" base64( nonce[12] || ciphertext || tag[16] )
 *
 * The associated data (aad) names what the value is for (for example
 * "project:gh/acme/app:webhook_secret"), so a sealed value copied to
 * another place fails to open.
 *
 * Threads: a secrets_t may be used from any thread once opened.
 */
#ifndef SPOOL_SECRETS_H
#define SPOOL_SECRETS_H

#include "../base/base.h"

typedef struct secrets secrets_t;

/* Opens (creating if needed) the key in dir. */
int secrets_open(secrets_t **out, const char *dir, char *errbuf, size_t errlen);
void secrets_close(secrets_t *s);

/* Seals n bytes; appends the text form (NUL-terminated) to out. */
int secrets_seal(secrets_t *s, const void *plain, size_t n, const char *aad, sp_buf_t *out);
/* Opens a sealed text; appends the plain bytes (plus a NUL not counted
 * in out->n) to out. SP_ECORRUPT when it was tampered with, sealed for
 * another aad or with another key. */
int secrets_unseal(secrets_t *s, const char *sealed, const char *aad, sp_buf_t *out);

#endif
