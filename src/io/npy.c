/* npy.c: the .npy format (numpy/lib/format.py): magic "\x93NUMPY", version (major, minor), header length
 * (2 bytes little-endian in 1.0, 4 in 2.0 and 3.0), a Python dict literal
 * "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" padded with spaces and ended by '\n', then
 * the raw data. */
#include "io/npy.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "io/file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c reads and writes little-endian data in place: a big-endian host needs byte swapping here"
#endif

#define NPY_MAX_HEADER (1u << 20)

static const struct {
    const char *code, *name; /* "f4", "float32" */
    df_npy_dtype type;
    size_t size;
} dtypes[] = {
    {"u1", "uint8", DF_NPY_U1, 1},   {"i1", "int8", DF_NPY_I1, 1},     {"b1", "uint8", DF_NPY_U1, 1},
    {"u2", "uint16", DF_NPY_U2, 2},  {"i2", "int16", DF_NPY_I2, 2},    {"u4", "uint32", DF_NPY_U4, 4},
    {"i4", "int32", DF_NPY_I4, 4},   {"u8", "uint64", DF_NPY_U8, 8},   {"i8", "int64", DF_NPY_I8, 8},
    {"f2", "float16", DF_NPY_F2, 2}, {"f4", "float32", DF_NPY_F4, 4}, {"f8", "float64", DF_NPY_F8, 8},
};
#define NDTYPES (sizeof dtypes / sizeof dtypes[0])

const char *df_npy_dtype_name(df_npy_dtype t) {
    for (size_t i = 0; i < NDTYPES; i++)
        if (dtypes[i].type == t) return dtypes[i].name;
    return "unknown";
}

/* ---- header parsing ---- */

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int eat(cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted string ('...' or "...") into out (cap bytes); 0 if there is none or it does not fit. */
static int parse_string(cursor *c, char *out, size_t cap) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (n + 1 >= cap) return 0;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return 0;
    c->p++;
    out[n] = 0;
    return 1;
}

/* A shape tuple "(3, 4)", "(5,)" or "()" (Python 2 files may write "3L"). */
static int parse_shape(cursor *c, df_npy *a) {
    if (!eat(c, '(')) return df_error("'shape' is not a tuple");
    a->ndim = 0;
    for (;;) {
        if (eat(c, ')')) return 0;
        skip_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return df_error("'shape' holds a non-integer");
        if (a->ndim == DF_NPY_MAX_DIMS) return df_error("more than %d dimensions", DF_NPY_MAX_DIMS);
        errno = 0;
        char *after;
        unsigned long long v = strtoull(c->p, &after, 10);
        if (errno || after > c->end || v > (unsigned long long)SIZE_MAX) return df_error("'shape' value too large");
        c->p = after;
        if (c->p < c->end && *c->p == 'L') c->p++;
        a->shape[a->ndim++] = (size_t)v;
        if (!eat(c, ',')) {
            if (eat(c, ')')) return 0;
            return df_error("'shape' is not a tuple of integers");
        }
    }
}

static int parse_descr(const char *descr, df_npy *a) {
    char order = descr[0];
    if (order != '<' && order != '>' && order != '|' && order != '=')
        return df_error("dtype '%s' is not supported (expected e.g. '<f4' or '|u1')", descr);
    for (size_t i = 0; i < NDTYPES; i++) {
        if (strcmp(descr + 1, dtypes[i].code) != 0) continue;
        if (order == '>' && dtypes[i].size > 1)
            return df_error("dtype '%s' is big-endian; save the array little-endian (arr.astype('<%s'))", descr,
                            dtypes[i].code);
        a->dtype = dtypes[i].type, a->itemsize = dtypes[i].size;
        return 0;
    }
    return df_error("dtype '%s' is not supported (u1, i1, b1, u2, i2, u4, i4, u8, i8, f2, f4, f8)", descr);
}

/* Parses the dict literal into a's dtype and shape. */
static int parse_header(const char *text, size_t len, df_npy *a) {
    cursor c = {text, text + len};
    int have_descr = 0, have_order = 0, have_shape = 0;
    if (!eat(&c, '{')) return df_error("the header is not a dict literal");
    while (!eat(&c, '}')) {
        char key[32], descr[32];
        if (!parse_string(&c, key, sizeof key) || !eat(&c, ':')) return df_error("malformed header dict");
        if (strcmp(key, "descr") == 0) {
            if (!parse_string(&c, descr, sizeof descr))
                return df_error("'descr' is not a simple dtype string (structured arrays are not supported)");
            if (parse_descr(descr, a) != 0) return -1;
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            skip_ws(&c);
            if ((size_t)(c.end - c.p) >= 5 && memcmp(c.p, "False", 5) == 0) {
                c.p += 5;
            } else if ((size_t)(c.end - c.p) >= 4 && memcmp(c.p, "True", 4) == 0) {
                return df_error("the array is in Fortran order; save it with np.ascontiguousarray first");
            } else {
                return df_error("'fortran_order' is neither True nor False");
            }
            have_order = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (parse_shape(&c, a) != 0) return -1;
            have_shape = 1;
        } else {
            return df_error("unexpected key '%s' in the header", key);
        }
        if (!eat(&c, ',')) {
            if (!eat(&c, '}')) return df_error("malformed header dict");
            break;
        }
    }
    skip_ws(&c);
    if (c.p != c.end) return df_error("unexpected text after the header dict");
    if (!have_descr || !have_order || !have_shape)
        return df_error("the header lacks '%s'", !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    return 0;
}

/* ---- reading ---- */

/* The signature, version and header length from the first bytes of a .npy image: `pre` holds
 * min(total, 12) bytes of an image of `total` bytes. Sets *prefix (bytes before the header text) and *hlen
 * (the header text's length), checked against total. */
static int parse_preamble(const unsigned char *pre, size_t total, size_t *prefix, size_t *hlen) {
    if (total < 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return df_error("not a .npy file (no \\x93NUMPY signature)");
    int major = pre[6];
    if (major == 1) {
        *hlen = (size_t)pre[8] | (size_t)pre[9] << 8, *prefix = 10;
    } else if (major == 2 || major == 3) {
        if (total < 12) return df_error("truncated header");
        *hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24, *prefix = 12;
    } else {
        return df_error("format version %d.%d is not supported (1.0, 2.0, 3.0)", major, pre[7]);
    }
    if (*hlen > NPY_MAX_HEADER) return df_error("header length %zu is implausible", *hlen);
    if (*prefix + *hlen > total)
        return df_error("truncated: the header needs %zu bytes but the file has %zu", *prefix + *hlen, total);
    return 0;
}

/* Sets a->count from the parsed shape and checks that `have` bytes of data hold it; *bytes is its size. */
static int check_count(df_npy *a, size_t have, size_t *bytes) {
    size_t count = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] && count > SIZE_MAX / a->shape[d]) return df_error("the shape overflows");
        count *= a->shape[d];
    }
    if (count > SIZE_MAX / a->itemsize) return df_error("the shape overflows");
    *bytes = count * a->itemsize;
    if (have < *bytes)
        return df_error("truncated: the header promises %zu elements of %s (%zu bytes) but only %zu bytes follow "
                        "it", count, df_npy_dtype_name(a->dtype), *bytes, have);
    a->count = count;
    return 0;
}

static int read_npy(FILE *fp, df_npy *a) {
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) return df_error("cannot stat: %s", strerror(errno));
    size_t fsize = (size_t)st.st_size, prefix = 0, hlen = 0, bytes;
    unsigned char pre[12];
    size_t npre = fsize < sizeof pre ? fsize : sizeof pre;
    if (fread(pre, 1, npre, fp) != npre) return df_error("read error: %s", strerror(errno));
    if (parse_preamble(pre, fsize, &prefix, &hlen) != 0) return -1;
    char *text = df_malloc(hlen + 1);
    int rc = fseek(fp, (long)prefix, SEEK_SET) == 0 && fread(text, 1, hlen, fp) == hlen
                 ? parse_header(text, hlen, a)
                 : df_error("cannot read the header");
    df_free(text);
    if (rc != 0 || check_count(a, fsize - prefix - hlen, &bytes) != 0) return -1;
    a->data = df_malloc(bytes);
    if (bytes && fread(a->data, 1, bytes, fp) != bytes) return df_error("read error: %s", strerror(errno));
    return 0;
}

int df_npy_parse(const void *buf, size_t len, df_npy *a) {
    memset(a, 0, sizeof *a);
    const unsigned char *p = buf;
    size_t prefix = 0, hlen = 0, bytes;
    if (parse_preamble(p, len, &prefix, &hlen) != 0 || parse_header((const char *)p + prefix, hlen, a) != 0 ||
        check_count(a, len - prefix - hlen, &bytes) != 0) {
        memset(a, 0, sizeof *a);
        return -1;
    }
    a->data = df_malloc(bytes);
    if (bytes) memcpy(a->data, p + prefix + hlen, bytes);
    return 0;
}

int df_npy_read(const char *path, df_npy *a) {
    memset(a, 0, sizeof *a);
    FILE *fp = fopen(path, "rb");
    if (!fp) return df_error("cannot open '%s': %s", path, strerror(errno));
    int rc = read_npy(fp, a);
    fclose(fp);
    if (rc != 0) {
        df_npy_free(a);
        return df_error_wrap("cannot read '%s'", path);
    }
    return 0;
}

void df_npy_free(df_npy *a) {
    df_free(a->data);
    memset(a, 0, sizeof *a);
}

static float half_to_float(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

double df_npy_get(const df_npy *a, size_t i) {
    const unsigned char *p = (const unsigned char *)a->data + i * a->itemsize;
    union {
        int8_t i1; uint16_t u2; int16_t i2; uint32_t u4; int32_t i4; uint64_t u8; int64_t i8; float f4; double f8;
    } v;
    memcpy(&v, p, a->itemsize);
    switch (a->dtype) {
    case DF_NPY_U1: return p[0];
    case DF_NPY_I1: return v.i1;
    case DF_NPY_U2: return v.u2;
    case DF_NPY_I2: return v.i2;
    case DF_NPY_U4: return v.u4;
    case DF_NPY_I4: return v.i4;
    case DF_NPY_U8: return (double)v.u8;
    case DF_NPY_I8: return (double)v.i8;
    case DF_NPY_F2: return half_to_float(v.u2);
    case DF_NPY_F4: return v.f4;
    case DF_NPY_F8: return v.f8;
    }
    return 0;
}

/* ---- writing ---- */

/* The .npy preamble and header for (descr, shape) into head (room for 12 + 576 bytes): version 1.0 (2.0 if
 * the header needs it), padded with spaces so that the data starts at a multiple of 64 bytes, ended by '\n'.
 * Returns the number of bytes; *count is the number of elements. */
static size_t build_header(unsigned char *head, const char *descr, int ndim, const size_t *shape, size_t *count) {
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    *count = 1;
    for (int d = 0; d < ndim; d++) {
        n += snprintf(dict + n, sizeof dict - (size_t)n, d ? ", %zu" : "%zu", shape[d]);
        *count *= shape[d];
    }
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    size_t prefix = 10, hlen = (size_t)n + 1;
    hlen += (64 - (prefix + hlen) % 64) % 64;
    if (hlen > 65535) { /* never with <= 8 dimensions, but this is the rule */
        prefix = 12, hlen = (size_t)n + 1;
        hlen += (64 - (prefix + hlen) % 64) % 64;
    }
    memcpy(head, "\x93NUMPY", 6);
    head[6] = prefix == 10 ? 1 : 2, head[7] = 0;
    for (size_t i = 0; i < prefix - 8; i++) head[8 + i] = (unsigned char)(hlen >> (8 * i));
    memset(head + prefix, ' ', hlen);
    memcpy(head + prefix, dict, (size_t)n);
    head[prefix + hlen - 1] = '\n';
    return prefix + hlen;
}

/* The descr string ("<f8", "|u1") of a dtype into out[4]; its item size. */
static size_t dtype_descr(df_npy_dtype t, char out[4]) {
    for (size_t i = 0; i < NDTYPES; i++)
        if (dtypes[i].type == t) {
            snprintf(out, 4, "%c%s", dtypes[i].size == 1 ? '|' : '<', dtypes[i].code);
            return dtypes[i].size;
        }
    DF_CHECK(0, "unknown npy dtype %d", (int)t);
}

static int write_npy(const char *path, const char *descr, size_t itemsize, const void *data, int ndim,
                     const size_t *shape) {
    if (ndim < 0 || ndim > DF_NPY_MAX_DIMS) return df_error("cannot write '%s': %d dimensions", path, ndim);
    unsigned char head[12 + 576];
    size_t count, nhead = build_header(head, descr, ndim, shape, &count);
    df_atomic_file f;
    if (df_atomic_open(&f, path) != 0) return -1;
    fwrite(head, 1, nhead, f.fp);
    if (count) fwrite(data, itemsize, count, f.fp);
    return df_atomic_commit(&f);
}

int df_npy_write_u8(const char *path, const uint8_t *data, int ndim, const size_t *shape) {
    return write_npy(path, "|u1", 1, data, ndim, shape);
}

int df_npy_write_f32(const char *path, const float *data, int ndim, const size_t *shape) {
    return write_npy(path, "<f4", 4, data, ndim, shape);
}

int df_npy_write_f64(const char *path, const double *data, int ndim, const size_t *shape) {
    return write_npy(path, "<f8", 8, data, ndim, shape);
}

void df_npy_encode(df_npy_dtype dtype, const void *data, int ndim, const size_t *shape, unsigned char **out,
                   size_t *len) {
    DF_CHECK(ndim >= 0 && ndim <= DF_NPY_MAX_DIMS, "df_npy_encode: %d dimensions", ndim);
    char descr[4];
    size_t itemsize = dtype_descr(dtype, descr), count;
    unsigned char head[12 + 576];
    size_t nhead = build_header(head, descr, ndim, shape, &count);
    *len = nhead + count * itemsize;
    *out = df_malloc(*len);
    memcpy(*out, head, nhead);
    if (count) memcpy(*out + nhead, data, count * itemsize);
}
