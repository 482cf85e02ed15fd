/* file.h: whole-file reading, atomic (crash-safe) writing, mkdir -p.
 *
 * Every function that can fail returns 0 on success and -1 after recording a message with df_error (read it
 * with df_errmsg()); the message names the path and the system's reason (strerror).
 *
 * Atomic writing: the bytes go to a temporary file beside the target (path + ".tmp-<pid>"), which is flushed,
 * fsync'ed, closed and renamed over the target, after which the directory is fsync'ed. A crash at any point
 * leaves either the old target or the complete new one, never a torn file.
 */
#ifndef DF_IO_FILE_H
#define DF_IO_FILE_H

#include <stddef.h>
#include <stdio.h>

/* Reads the whole file at `path` into a new df_malloc'd buffer. On success *data holds *size bytes followed
 * by one extra zero byte (so text can be parsed in place); the caller frees it with df_free. On failure
 * *data is NULL and *size is 0. */
int df_read_file(const char *path, unsigned char **data, size_t *size);

/* An atomic file being written: write to `fp` with the stdio functions, then commit or abort. */
typedef struct {
    FILE *fp;   /* the open temporary file */
    char *path; /* the target path (owned) */
    char *tmp;  /* the temporary path (owned) */
} df_atomic_file;

/* Creates the temporary file for `path` and fills *f. On failure *f is zeroed (abort on it is a no-op). */
int df_atomic_open(df_atomic_file *f, const char *path);

/* Finishes the write: checks that no stdio write failed, fflush, fsync, fclose, rename over the target, fsync
 * of the directory. On any failure the temporary file is removed, the target is left as it was (unless only
 * the final directory fsync failed) and -1 is returned. Either way *f is released and zeroed. */
int df_atomic_commit(df_atomic_file *f);

/* Abandons the write: closes and removes the temporary file; the target is untouched. *f is released and
 * zeroed, so calling it again (or on a zeroed struct) does nothing. */
void df_atomic_abort(df_atomic_file *f);

/* Writes `size` bytes from `data` to `path` atomically (as above). */
int df_write_file_atomic(const char *path, const void *data, size_t size);

/* Creates directory `path` and any missing parents (mode 0777 before umask), like mkdir -p. An existing
 * directory is fine; an existing non-directory is an error. */
int df_mkdirs(const char *path);

#endif
