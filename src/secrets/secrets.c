/* AES-256-GCM sealing with a key file; see secrets.h. */
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_BYTES   32
#define NONCE_BYTES 12
#define TAG_BYTES   16
#define PREFIX      "v1:"

struct secrets {
    uint8_t key[KEY_BYTES];
};

static int read_key(const char *path, uint8_t key[KEY_BYTES], char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat st;
    ssize_t got = fstat(fd, &st) == 0 ? read(fd, key, KEY_BYTES) : -1;
    close(fd);
    if (got != KEY_BYTES) {
        snprintf(err, errlen, "%s: expected a key of %d bytes", path, KEY_BYTES);
        return SP_ECORRUPT;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "%s: the key file must be readable by its owner only (mode 0600)", path);
        return SP_EINVAL;
    }
    return 0;
}

static int create_key(const char *path, uint8_t key[KEY_BYTES], char *err, size_t errlen)
{
    sp_random_bytes(key, KEY_BYTES);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, key, KEY_BYTES) != KEY_BYTES || fsync(fd) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(e));
        return -e;
    }
    close(fd);
    /* link(2) refuses to replace: if another process created the key
     * meanwhile, keep theirs. */
    if (link(tmp, path) != 0 && errno != EEXIST) {
        int e = errno;
        unlink(tmp);
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(e));
        return -e;
    }
    unlink(tmp);
    return read_key(path, key, err, errlen);
}

int secrets_open(secrets_t **out, const char *dir, char *errbuf, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(errbuf, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -errno;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/secret.key", dir);
    secrets_t *s = sp_xcalloc(1, sizeof *s);
    int rc = read_key(path, s->key, errbuf, errlen);
    if (rc == -ENOENT) rc = create_key(path, s->key, errbuf, errlen);
    if (rc != 0) {
        OPENSSL_cleanse(s, sizeof *s);
        free(s);
        if (rc < 0 && rc > -4096 && errbuf[0] == 0) snprintf(errbuf, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    sp_handle_opened();
    *out = s;
    return 0;
}

void secrets_close(secrets_t *s)
{
    if (s == NULL) return;
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
    sp_handle_closed();
}

/* One AES-256-GCM pass. enc: plain -> cipher (tag written), else cipher
 * -> plain (tag checked). Returns 0 or SP_ECORRUPT. */
static int gcm(const secrets_t *s, bool enc, const uint8_t *nonce, const char *aad, const uint8_t *in, size_t n,
               uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, ok = c != NULL;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc);
    ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_BYTES, NULL);
    ok = ok && EVP_CipherInit_ex(c, NULL, NULL, s->key, nonce, enc);
    ok = ok && EVP_CipherUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad));
    ok = ok && EVP_CipherUpdate(c, out, &len, in, (int)n);
    if (ok && !enc) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag);
    ok = ok && EVP_CipherFinal_ex(c, out + len, &len);
    if (ok && enc) ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, tag);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : SP_ECORRUPT;
}

int secrets_seal(secrets_t *s, const void *plain, size_t n, const char *aad, sp_buf_t *out)
{
    if (n > (1u << 20)) return SP_ETOOBIG;
    size_t raw_n = NONCE_BYTES + n + TAG_BYTES;
    uint8_t *raw = sp_xmalloc(raw_n);
    sp_random_bytes(raw, NONCE_BYTES);
    int rc = gcm(s, true, raw, aad, plain, n, raw + NONCE_BYTES, raw + NONCE_BYTES + n);
    if (rc == 0) {
        sp_buf_addstr(out, PREFIX);
        sp_buf_reserve(out, 4 * ((raw_n + 2) / 3) + 1);
        out->n += (size_t)EVP_EncodeBlock(out->p + out->n, raw, (int)raw_n);
        out->p[out->n] = 0;
    }
    OPENSSL_cleanse(raw, raw_n);
    free(raw);
    return rc;
}

int secrets_unseal(secrets_t *s, const char *sealed, const char *aad, sp_buf_t *out)
{
    size_t plen = strlen(PREFIX), n = strlen(sealed);
    if (n < plen || memcmp(sealed, PREFIX, plen) != 0 || (n - plen) % 4 != 0 || n - plen > (2u << 20))
        return SP_ECORRUPT;
    const char *b64 = sealed + plen;
    size_t b64n = n - plen;
    uint8_t *raw = sp_xmalloc(b64n / 4 * 3 + 1);
    int raw_n = EVP_DecodeBlock(raw, (const uint8_t *)b64, (int)b64n);
    /* EVP_DecodeBlock counts padding as data: drop it. */
    if (raw_n > 0 && b64n >= 1 && b64[b64n - 1] == '=') raw_n--;
    if (raw_n > 0 && b64n >= 2 && b64[b64n - 2] == '=') raw_n--;
    int rc = SP_ECORRUPT;
    if (raw_n >= NONCE_BYTES + TAG_BYTES) {
        size_t cn = (size_t)raw_n - NONCE_BYTES - TAG_BYTES;
        sp_buf_reserve(out, cn + 1);
        rc = gcm(s, false, raw, aad, raw + NONCE_BYTES, cn, out->p + out->n, raw + NONCE_BYTES + cn);
        if (rc == 0) {
            out->n += cn;
            out->p[out->n] = 0;
        } else {
            OPENSSL_cleanse(out->p + out->n, cn);
        }
    }
    free(raw);
    return rc;
}
