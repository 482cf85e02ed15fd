/* npz.h: NumPy .npz archives (a zip of .npy members, one per named array), read and written with libzip.
 *
 * Read: members stored (np.savez) or deflated (np.savez_compressed), zip64 or not; an array named "mu" is the
 * member "mu.npy" (or, failing that, "mu"), as np.load sees it. Every member is checked before it is used:
 * its size against the file's (a deflated member can expand at most 1032-fold), its CRC, and then the .npy
 * checks of df_npy_parse; a truncated file, a file that is not a zip, a missing key or a corrupt member is an
 * error naming the file and the problem, never a crash or a read out of bounds.
 * Written: every member stored uncompressed, as np.savez does, the whole archive built in memory and then
 * written atomically (df_write_file_atomic: a temporary file, fsync, rename).
 * Functions that can fail return 0 on success and -1 after df_error (read df_errmsg()).
 */
#ifndef DF_IO_NPZ_H
#define DF_IO_NPZ_H

#include <stddef.h>

#include "io/npy.h"

/* An open archive. */
typedef struct {
    char *path;   /* the file's path (owned), for messages */
    void *zip;    /* the libzip archive (zip_t *) */
    size_t fsize; /* the file's size in bytes */
} df_npz;

/* Opens the archive at `path` for reading and fills *z. On failure *z is zeroed. */
int df_npz_open(df_npz *z, const char *path);

/* 1 if the archive holds an array named `key`, else 0. */
int df_npz_has(const df_npz *z, const char *key);

/* Reads the array named `key` into *a (a->data is df_malloc'd; release it with df_npy_free). On failure *a
 * is zeroed and the message names the file, the key and the problem (for a missing key it lists the keys
 * the archive does hold). */
int df_npz_get(df_npz *z, const char *key, df_npy *a);

/* Closes the archive and zeroes *z (a zeroed struct is fine). */
void df_npz_close(df_npz *z);

/* One array to write: `data` holds the product of shape[0 .. ndim - 1] elements of `dtype`, C order. */
typedef struct {
    const char *key; /* the array's name; the member is key + ".npy" */
    df_npy_dtype dtype;
    int ndim; /* 0 (a scalar) to DF_NPY_MAX_DIMS */
    size_t shape[DF_NPY_MAX_DIMS];
    const void *data;
} df_npz_entry;

/* Writes the n >= 1 arrays of `entries` (distinct, non-empty keys) to `path` as an uncompressed .npz,
 * atomically. np.load(path) then gives each key with its dtype, shape and values. */
int df_npz_write(const char *path, const df_npz_entry *entries, size_t n);

#endif
