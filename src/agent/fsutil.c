/* mkdir -p and rm -rf for task directories. */
#include "agent_internal.h"

#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int agent__mkdirs(const char *path, mode_t mode)
{
    struct stat st;
    if (stat(path, &st) == 0) return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    char *p = sp_xstrdup(path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != 0) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, mode) != 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        *s = c;
        if (c == 0) break;
    }
    free(p);
    if (rc == 0 && (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))) rc = -ENOTDIR;
    return rc;
}

/* Jobs make read-only trees (Go's module cache does), which a plain
 * depth-first unlink cannot enter or empty; a first pass gives every
 * directory back its owner's rwx. */
static int chmod_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (flag == FTW_D || flag == FTW_DNR) chmod(path, (sb->st_mode & 07777) | S_IRWXU);
    return 0;
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    int r = (flag == FTW_DP || flag == FTW_D) ? rmdir(path) : unlink(path);
    return r == 0 || errno == ENOENT ? 0 : -errno;
}

int agent__rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode)) return unlink(path) == 0 ? 0 : -errno;
    nftw(path, chmod_cb, 32, FTW_PHYS);
    int rc = nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
    return rc < 0 ? rc : (rc > 0 ? -EIO : 0);
}
