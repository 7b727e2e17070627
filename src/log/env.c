/* LMDB environments that grow. See log__env_t in log_internal.h. */
#include "log_internal.h"

#include <errno.h>
#include <sys/stat.h>

#define DEFAULT_MAP   (64u << 20)
#define MAX_GROW_STEP ((size_t)1 << 30)

int log__err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS: return 0;
    case MDB_NOTFOUND: return SP_ENOTFOUND;
    case MDB_KEYEXIST: return SP_EEXIST;
    case MDB_MAP_FULL: return SP_EFULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID: return SP_ECORRUPT;
    case MDB_VERSION_MISMATCH: return SP_EVERSION;
    case ENOSPC:
    case EDQUOT: return SP_EFULL;
    default: return rc > 0 ? -rc : SP_EIO;
    }
}

int log__mkdirs(const char *dir)
{
    char tmp[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof tmp) return SP_EINVAL;
    memcpy(tmp, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST) return -errno;
            tmp[i] = c;
        }
    }
    return 0;
}

int log__env_open(log__env_t *e, const char *dir, unsigned flags, size_t initial_map, unsigned maxdbs, char *err,
                  size_t errlen)
{
    int rc;
    if (!(flags & MDB_RDONLY) && (rc = log__mkdirs(dir)) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", dir, sp_strerror(rc));
        return rc;
    }
    e->map_size = initial_map ? initial_map : DEFAULT_MAP;
    if ((rc = mdb_env_create(&e->env)) != 0) goto fail;
    mdb_env_set_maxdbs(e->env, maxdbs);
    mdb_env_set_maxreaders(e->env, 1024);
    mdb_env_set_mapsize(e->env, e->map_size);
    if ((rc = mdb_env_open(e->env, dir, flags | MDB_NOTLS, 0600)) != 0) {
        mdb_env_close(e->env);
        goto fail;
    }
    /* LMDB keeps the larger of our size and the one recorded in the file. */
    MDB_envinfo info;
    mdb_env_info(e->env, &info);
    e->map_size = info.me_mapsize;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* Prefer the grower: with reader preference a steady stream of
     * readers could starve it while the writer waits for room. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&e->resize, &attr);
    pthread_rwlockattr_destroy(&attr);
    return 0;
fail:
    snprintf(err, errlen, "cannot open LMDB environment %s: %s", dir, mdb_strerror(rc));
    return log__err(rc);
}

void log__env_close(log__env_t *e)
{
    mdb_env_close(e->env);
    pthread_rwlock_destroy(&e->resize);
    e->env = NULL;
}

int log__env_grow(log__env_t *e)
{
    pthread_rwlock_wrlock(&e->resize);
    size_t step = e->map_size < MAX_GROW_STEP ? e->map_size : MAX_GROW_STEP;
    size_t want = e->map_size + step;
    int rc = mdb_env_set_mapsize(e->env, want);
    if (rc == 0) e->map_size = want;
    pthread_rwlock_unlock(&e->resize);
    return log__err(rc);
}

int log__rtxn_begin(log__env_t *e, MDB_txn **out)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        pthread_rwlock_rdlock(&e->resize);
        int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, out);
        if (rc == 0) return 0;
        pthread_rwlock_unlock(&e->resize);
        if (rc != MDB_MAP_RESIZED) return log__err(rc);
        /* Another process grew the map: adopt its size, then retry. */
        pthread_rwlock_wrlock(&e->resize);
        mdb_env_set_mapsize(e->env, 0);
        MDB_envinfo info;
        mdb_env_info(e->env, &info);
        e->map_size = info.me_mapsize;
        pthread_rwlock_unlock(&e->resize);
    }
    return SP_EIO;
}

void log__rtxn_end(log__env_t *e, MDB_txn *t)
{
    mdb_txn_abort(t);
    pthread_rwlock_unlock(&e->resize);
}
