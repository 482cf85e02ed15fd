/* safetensors.h: reading and writing the safetensors format (huggingface/safetensors).
 *
 * Layout: 8 bytes N (u64, little-endian), N bytes of UTF-8 JSON, then the data section. The JSON is an object
 * mapping each tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (byte offsets
 * relative to the start of the data section, end exclusive), plus an optional "__metadata__" object of
 * string -> string. Tensors are stored row-major (C order), little-endian. Our writer pads the JSON with
 * spaces so the data section starts 8-byte aligned, as the reference implementation does.
 *
 * Errors follow base.h: functions return 0 or -1 after df_error; every message names the file and, where it
 * applies, the tensor.
 */
#ifndef DF_IO_SAFETENSORS_H
#define DF_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

struct cJSON;

/* ---- dtypes ---- */

enum {
    ST_BOOL,
    ST_U8,
    ST_I8,
    ST_F8_E5M2,
    ST_F8_E4M3,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_F64,
    ST_I64,
    ST_U64,
    ST_NDTYPES
};

#define ST_MAX_DIMS 8

/* The dtype's name as written in the header ("F32", "BF16", ...), or "?" for an unknown value. */
const char *st_dtype_name(int dtype);
/* Bytes per element of the dtype, or 0 for an unknown value. */
size_t st_dtype_size(int dtype);
/* The dtype whose header name is `name`, or -1 if none is. */
int st_dtype_from_name(const char *name);

/* ---- reading ---- */

typedef struct {
    char *name;                   /* points into the st_file's parsed header; valid until st_close */
    int dtype;                    /* ST_F32, ... */
    int ndim;                     /* 0 (a scalar) .. ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS];   /* shape[0..ndim-1], the rest 0 */
    size_t numel;                 /* product of the shape (1 for a scalar) */
    size_t begin, end;            /* byte range in the data section; end - begin == numel * dtype size */
} st_tensor;

typedef struct {
    char *path;                /* the name used in error messages (owned) */
    unsigned char *buf;        /* the whole file (owned) */
    size_t size;               /* bytes in buf */
    size_t data_start;         /* 8 + header length: where the data section starts in buf */
    size_t n;                  /* number of tensors */
    st_tensor *tensors;        /* n tensors, in the order of their data (by begin offset) */
    size_t *by_name;           /* indices into tensors, sorted by name (for st_find) */
    struct cJSON *header;      /* the parsed header (owned) */
    struct cJSON *metadata;    /* its "__metadata__" object, or NULL */
} st_file;

/* Reads the safetensors file at `path` whole into memory and validates it completely: the length prefix, the
 * JSON, each tensor's dtype, shape and data_offsets (inside the file, sized exactly for the dtype and shape,
 * no two overlapping), names unique, metadata string -> string. Returns 0 and fills *f (release it with
 * st_close), or -1 with a message naming the file, the tensor and what was wrong; then *f is zeroed, and
 * st_close on it is harmless. Never reads out of bounds, whatever the bytes. */
int st_open(st_file *f, const char *path);

/* As st_open, from `size` bytes at `data` (copied); `name` stands for the file in messages. */
int st_open_memory(st_file *f, const char *name, const void *data, size_t size);

/* Releases everything st_open allocated and zeroes *f. Tensor names and metadata strings die with it. */
void st_close(st_file *f);

/* The tensor called `name`, or NULL (no error is recorded). */
const st_tensor *st_find(const st_file *f, const char *name);

/* Reads tensor `name` as float32 into `out` (numel floats, caller-owned). The tensor must exist and have
 * exactly the shape shape[0..ndim-1]; otherwise -1 with a message naming the file, the tensor and both
 * shapes. ndim = -1 skips the shape check (the caller must then have checked numel, e.g. with st_find).
 * F32 is copied, F16 and BF16 are widened exactly; other dtypes are an error. */
int st_read_f32(const st_file *f, const char *name, float *out, int ndim, const int64_t *shape);

/* The raw little-endian bytes of tensor t (t->end - t->begin of them), valid until st_close. The pointer is
 * only as aligned as the file makes it: copy with memcpy rather than casting to a wider type. */
const void *st_data(const st_file *f, const st_tensor *t);

/* The metadata value stored under `key`, or NULL if the file has no such key. */
const char *st_metadata(const st_file *f, const char *key);

/* ---- writing ---- */

typedef struct {
    const char *name;
    int dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* numel * st_dtype_size(dtype) bytes, little-endian (may be NULL if that is 0) */
} st_entry;

/* An F32 entry for `data` with shape shape[0..ndim-1] (a convenience for building st_entry arrays). */
st_entry st_entry_f32(const char *name, const float *data, int ndim, const int64_t *shape);

/* Writes n tensors to `path` atomically (temporary file, fsync, rename): the header holds "__metadata__"
 * (if n_kv > 0) and then the tensors in the given order, stored contiguously in that order, with the header
 * padded by spaces to an 8-byte boundary. metadata_kv holds n_kv pairs as key0, value0, key1, value1, ...
 * (diffusers writes {"format": "pt"}). Names must be unique and not "__metadata__"; keys unique. Returns 0,
 * or -1 with a message (then the target is untouched). */
int st_write(const char *path, const st_entry *entries, size_t n, const char *const *metadata_kv, size_t n_kv);

/* ---- conversions ---- */

/* IEEE half <-> float: exact widening (subnormals, infinities, NaN payloads kept); narrowing rounds to
 * nearest even, overflows to infinity, keeps NaN a (quiet) NaN. */
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float f);
/* bfloat16 <-> float: widening is exact; narrowing rounds to nearest even and keeps NaN a (quiet) NaN. */
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);

#endif
