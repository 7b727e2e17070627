#include "test.h"

#include "secrets/secrets.h"

#include <sys/stat.h>

TEST(secrets_seal_and_unseal)
{
    secrets_t *s;
    char err[300] = "";
    T_OK(secrets_open(&s, t_path(t, "keys"), err, sizeof err));
    struct stat st;
    T_OK(stat(t_path(t, "keys/secret.key"), &st));
    T_EQ_U64(st.st_mode & 0777, 0600);
    sp_buf_t sealed = {0}, plain = {0};
    T_OK(secrets_seal(s, "hunter2", 7, "project:gh/a/b:webhook_secret", &sealed));
    T_ASSERT(strncmp((char *)sealed.p, "v1:", 3) == 0);
    T_ASSERT(memmem(sealed.p, sealed.n, "hunter2", 7) == NULL);
    T_OK(secrets_unseal(s, (char *)sealed.p, "project:gh/a/b:webhook_secret", &plain));
    T_EQ_U64(plain.n, 7);
    T_EQ_STR((char *)plain.p, "hunter2");
    sp_buf_free(&plain);
    /* another purpose, tampering, garbage: all refused */
    T_RC(SP_ECORRUPT, secrets_unseal(s, (char *)sealed.p, "project:gh/a/c:webhook_secret", &plain));
    sealed.p[10] ^= 1;
    T_RC(SP_ECORRUPT, secrets_unseal(s, (char *)sealed.p, "project:gh/a/b:webhook_secret", &plain));
    T_RC(SP_ECORRUPT, secrets_unseal(s, "v1:!!!!", "x", &plain));
    T_RC(SP_ECORRUPT, secrets_unseal(s, "plain", "x", &plain));
    T_EQ_U64(plain.n, 0);
    sp_buf_free(&sealed);
    secrets_close(s);
    /* the same key is found again */
    T_OK(secrets_open(&s, t_path(t, "keys"), err, sizeof err));
    sp_buf_t a = {0}, b = {0};
    T_OK(secrets_seal(s, "", 0, "e", &a));
    T_OK(secrets_unseal(s, (char *)a.p, "e", &b));
    T_EQ_U64(b.n, 0);
    sp_buf_free(&a);
    sp_buf_free(&b);
    secrets_close(s);
}

TEST(secrets_refuse_a_world_readable_key)
{
    secrets_t *s;
    char err[300] = "";
    T_OK(secrets_open(&s, t_path(t, "keys"), err, sizeof err));
    secrets_close(s);
    chmod(t_path(t, "keys/secret.key"), 0644);
    T_RC(SP_EINVAL, secrets_open(&s, t_path(t, "keys"), err, sizeof err));
    T_ASSERT(strstr(err, "mode 0600") != NULL);
}
