/* npy.h: NumPy .npy arrays (format versions 1.0, 2.0 and 3.0), read and written.
 *
 * Read: little-endian (or byte-sized) u1, i1, u2, i2, i4, u4, i8, u8, f2, f4, f8, and b1 (bool, read as
 * u1); C order only (fortran_order True is an error, as is a big-endian dtype). The header is checked
 * against the file's size before any data is read, so a truncated or lying file is an error naming both
 * sizes, never a read out of bounds; df_npy_parse does the same on bytes in memory. Written: u1, f4 and f8
 * files, written atomically (and any dtype into memory, df_npy_encode), C order, version 1.0 (2.0 when the
 * header needs it), header padded to a multiple of 64 bytes as numpy does.
 * Functions that can fail return 0 on success and -1 after df_error (read df_errmsg()).
 */
#ifndef DF_IO_NPY_H
#define DF_IO_NPY_H

#include <stddef.h>
#include <stdint.h>

#define DF_NPY_MAX_DIMS 8

typedef enum {
    DF_NPY_U1, DF_NPY_I1, DF_NPY_U2, DF_NPY_I2, DF_NPY_U4, DF_NPY_I4, DF_NPY_U8, DF_NPY_I8,
    DF_NPY_F2, DF_NPY_F4, DF_NPY_F8
} df_npy_dtype;

typedef struct {
    df_npy_dtype dtype;
    size_t itemsize;               /* bytes per element */
    int ndim;                      /* 0 for a scalar */
    size_t shape[DF_NPY_MAX_DIMS]; /* shape[0 .. ndim - 1] */
    size_t count;                  /* number of elements, the product of the shape */
    void *data;                    /* count * itemsize bytes, C order, host (little-endian) byte order */
} df_npy;

/* Reads the array in `path` into *a; a->data is df_malloc'd and released by df_npy_free. On failure *a is
 * zeroed and the message names the file and the problem. */
int df_npy_read(const char *path, df_npy *a);

/* Parses a .npy image of `len` bytes at `buf` (e.g. a member of an .npz archive) into *a, with the same
 * checks as df_npy_read; a->data is a df_malloc'd copy. On failure *a is zeroed and the message names the
 * problem (the caller adds where the bytes came from). */
int df_npy_parse(const void *buf, size_t len, df_npy *a);

/* Releases a->data and zeroes *a (a zeroed struct is fine). */
void df_npy_free(df_npy *a);

/* Element i of the array as a double (any dtype). */
double df_npy_get(const df_npy *a, size_t i);

/* The numpy name of a dtype ("uint8", "float32", ...). */
const char *df_npy_dtype_name(df_npy_dtype t);

/* Writes `data` (C order, product of shape[0 .. ndim - 1] elements; ndim 0 to DF_NPY_MAX_DIMS) as
 * '|u1' or '<f4' atomically. */
int df_npy_write_u8(const char *path, const uint8_t *data, int ndim, const size_t *shape);
int df_npy_write_f32(const char *path, const float *data, int ndim, const size_t *shape);
/* The same as '<f8'. */
int df_npy_write_f64(const char *path, const double *data, int ndim, const size_t *shape);

/* The complete .npy image (header and data, exactly what the writers put in a file) of `data` with the given
 * dtype and shape, in a new df_malloc'd buffer *out of *len bytes that the caller frees with df_free. */
void df_npy_encode(df_npy_dtype dtype, const void *data, int ndim, const size_t *shape, unsigned char **out,
                   size_t *len);

#endif
