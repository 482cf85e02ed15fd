/* file.c: whole-file reading, atomic (crash-safe) writing, mkdir -p. */
#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = df_malloc(n);
    memcpy(p, s, n);
    return p;
}

/* ---- reading ---- */

int df_read_file(const char *path, unsigned char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return df_error("cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return df_error("cannot stat '%s': %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return df_error("cannot read '%s': it is a directory", path);
    }
    /* The size from fstat is a hint (pipes and /proc files report 0): read until end of file, growing. */
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 65536, n = 0;
    unsigned char *buf = df_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) { /* keep room for the terminating zero byte */
            if (cap > SIZE_MAX / 2) {
                df_free(buf);
                close(fd);
                return df_error("cannot read '%s': file too large", path);
            }
            unsigned char *bigger = df_malloc(cap * 2);
            memcpy(bigger, buf, n);
            df_free(buf);
            buf = bigger;
            cap *= 2;
        }
        size_t want = cap - 1 - n;
        if (want > ((size_t)1 << 30)) want = (size_t)1 << 30; /* read() caps single calls near 2 GB */
        ssize_t got = read(fd, buf + n, want);
        if (got < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            df_free(buf);
            close(fd);
            return df_error("cannot read '%s': %s", path, strerror(e));
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = 0;
    *data = buf;
    *size = n;
    return 0;
}

/* ---- atomic writing ---- */

int df_atomic_open(df_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (!path || !path[0]) return df_error("cannot write a file with an empty path");
    size_t n = strlen(path) + 32;
    char *tmp = df_malloc(n);
    snprintf(tmp, n, "%s.tmp-%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        df_error("cannot create '%s' (temporary file for '%s'): %s", tmp, path, strerror(errno));
        df_free(tmp);
        return -1;
    }
    f->fp = fp;
    f->tmp = tmp;
    f->path = dup_string(path);
    return 0;
}

static void release(df_atomic_file *f) {
    df_free(f->path);
    df_free(f->tmp);
    memset(f, 0, sizeof *f);
}

void df_atomic_abort(df_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp) unlink(f->tmp);
    release(f);
}

/* fsync of the directory holding `path`, so that the rename itself is durable. Filesystems that cannot
 * fsync a directory (EINVAL) are accepted. */
static int sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) {
        dir = dup_string(".");
    } else {
        size_t len = slash == path ? 1 : (size_t)(slash - path);
        dir = df_malloc(len + 1);
        memcpy(dir, path, len);
        dir[len] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        df_error("wrote '%s' but cannot open its directory '%s' to sync it: %s", path, dir, strerror(e));
        df_free(dir);
        return -1;
    }
    int rc = 0;
    if (fsync(fd) != 0 && errno != EINVAL)
        rc = df_error("wrote '%s' but cannot sync its directory '%s': %s", path, dir, strerror(errno));
    close(fd);
    df_free(dir);
    return rc;
}

int df_atomic_commit(df_atomic_file *f) {
    if (!f->fp) return df_error("df_atomic_commit: the file is not open");
    FILE *fp = f->fp;
    f->fp = NULL;
    int bad = ferror(fp);
    int e = bad ? errno : 0;
    if (!bad && fflush(fp) != 0) bad = 1, e = errno;
    if (!bad && fsync(fileno(fp)) != 0) bad = 1, e = errno;
    if (fclose(fp) != 0 && !bad) bad = 1, e = errno;
    if (bad) {
        unlink(f->tmp);
        df_error("cannot write '%s': %s", f->path, e ? strerror(e) : "write error");
        release(f);
        return -1;
    }
    if (rename(f->tmp, f->path) != 0) {
        e = errno;
        unlink(f->tmp);
        df_error("cannot rename '%s' to '%s': %s", f->tmp, f->path, strerror(e));
        release(f);
        return -1;
    }
    int rc = sync_parent_dir(f->path);
    release(f);
    return rc;
}

int df_write_file_atomic(const char *path, const void *data, size_t size) {
    df_atomic_file f;
    if (df_atomic_open(&f, path) != 0) return -1;
    if (size && fwrite(data, 1, size, f.fp) != size) {
        int e = errno;
        df_atomic_abort(&f);
        return df_error("cannot write '%s': %s", path, strerror(e));
    }
    return df_atomic_commit(&f);
}

/* ---- directories ---- */

int df_mkdirs(const char *path) {
    if (!path || !path[0]) return df_error("cannot create a directory with an empty path");
    char *p = dup_string(path);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = 0; /* "a/b/" -> "a/b" */
    /* Create each prefix ending before a '/', then the whole path. */
    for (size_t i = 1; i <= n; i++) {
        if (i < n && p[i] != '/') continue;
        if (i < n && p[i - 1] == '/') continue; /* "a//b" */
        char saved = p[i];
        p[i] = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            df_error("cannot create directory '%s' (for '%s'): %s", p, path, strerror(e));
            df_free(p);
            return -1;
        }
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
            df_error("cannot create directory '%s': '%s' exists and is not a directory", path, p);
            df_free(p);
            return -1;
        }
        p[i] = saved;
    }
    df_free(p);
    return 0;
}
