/* safetensors.c: reading (with complete validation) and atomic writing of safetensors files. */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (tensor data is stored little-endian)"
#endif

/* The reference implementation refuses headers above 100 MB; so do we. */
#define ST_MAX_HEADER 100000000ull

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtypes[ST_NDTYPES] = {
    [ST_BOOL] = {"BOOL", 1},     [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},   [ST_F8_E5M2] = {"F8_E5M2", 1},
    [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_I16] = {"I16", 2}, [ST_U16] = {"U16", 2}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},     [ST_I32] = {"I32", 4}, [ST_U32] = {"U32", 4}, [ST_F32] = {"F32", 4},
    [ST_F64] = {"F64", 8},       [ST_I64] = {"I64", 8}, [ST_U64] = {"U64", 8},
};

const char *st_dtype_name(int dtype) { return dtype >= 0 && dtype < ST_NDTYPES ? dtypes[dtype].name : "?"; }

size_t st_dtype_size(int dtype) { return dtype >= 0 && dtype < ST_NDTYPES ? dtypes[dtype].size : 0; }

int st_dtype_from_name(const char *name) {
    for (int d = 0; d < ST_NDTYPES; d++)
        if (strcmp(name, dtypes[d].name) == 0) return d;
    return -1;
}

/* ---- conversions ---- */

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (mant << 13)); /* inf, NaN (payload kept) */
    if (exp == 0) {                                                            /* zero, subnormal: mant * 2^-24 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t st_f32_to_f16(float f) {
    uint32_t x = f32_bits(f), ax = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    if (ax > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff); /* NaN, quiet */
    if (ax >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 (halfway above 65504) rounds to infinity */
    if (ax >= 0x38800000u) {                     /* normal half: rebias, round the 13 dropped bits */
        uint32_t h = ((ax - 0x38000000u) >> 13), rem = ax & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* a carry into the exponent is correct */
        return sign | (uint16_t)h;
    }
    if (ax <= 0x33000000u) return sign; /* <= 2^-25 (half the smallest subnormal) rounds to zero */
    /* subnormal half: value / 2^-24, rounded; the float is normal here (exponent 102..112) */
    uint32_t mant = (ax & 0x7fffff) | 0x800000, shift = 126 - (ax >> 23);
    uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return sign | (uint16_t)h;
}

float st_bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

uint16_t st_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* NaN, quiet */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* ---- reading: validation helpers ---- */

/* A short description of a JSON value for error messages. */
static const char *describe(const cJSON *v, char *buf, size_t n) {
    if (!v) return "nothing";
    if (cJSON_IsNumber(v)) {
        snprintf(buf, n, "%.17g", v->valuedouble);
        return buf;
    }
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "an invalid value";
}

/* A JSON number that is a non-negative integer small enough to be exact in a double (2^53). */
static int get_count(const cJSON *v, size_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d)) return -1;
    *out = (size_t)d;
    return 0;
}

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Parses one tensor entry `v` named `name` into *t; data_size is the size of the data section. */
static int parse_tensor(const char *file, const char *name, const cJSON *v, size_t data_size, st_tensor *t) {
    char num[64], shp[256];
    if (!cJSON_IsObject(v))
        return df_error("%s: tensor '%s' is %s in the header, not an object with dtype, shape and data_offsets",
                        file, name, describe(v, num, sizeof num));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(v, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(v, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(v, "data_offsets");
    if (!dt) return df_error("%s: tensor '%s' has no dtype", file, name);
    if (!cJSON_IsString(dt))
        return df_error("%s: tensor '%s' has dtype %s, not a string such as \"F32\"", file, name,
                        describe(dt, num, sizeof num));
    t->dtype = st_dtype_from_name(dt->valuestring);
    if (t->dtype < 0)
        return df_error("%s: tensor '%s' has unknown dtype \"%.40s\" (expected one of F32, F16, BF16, F64, I64, "
                        "I32, I16, I8, U8, BOOL, ...)",
                        file, name, dt->valuestring);
    if (!cJSON_IsArray(sh)) return df_error("%s: tensor '%s' has no shape array", file, name);
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > ST_MAX_DIMS)
        return df_error("%s: tensor '%s' has %d dimensions; at most %d are supported", file, name, ndim,
                        ST_MAX_DIMS);
    t->ndim = ndim;
    size_t numel = 1;
    int overflow = 0, i = 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        size_t dim;
        if (get_count(d, &dim) != 0)
            return df_error("%s: tensor '%s' has shape entry %d = %s, not a non-negative integer", file, name, i,
                            describe(d, num, sizeof num));
        t->shape[i] = (int64_t)dim;
        if (dim != 0 && numel > SIZE_MAX / dim) overflow = 1;
        else numel *= dim;
    }
    format_shape(shp, sizeof shp, t->ndim, t->shape);
    size_t esize = dtypes[t->dtype].size;
    if (numel == 0) overflow = 0; /* a zero dimension anywhere makes it empty */
    if (overflow || numel > SIZE_MAX / esize)
        return df_error("%s: tensor '%s' has shape %s, whose size overflows", file, name, shp);
    t->numel = numel;
    size_t need = numel * esize;
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return df_error("%s: tensor '%s' has no data_offsets array of two numbers [begin, end]", file, name);
    if (get_count(of->child, &t->begin) != 0 || get_count(of->child->next, &t->end) != 0) {
        char num2[64];
        return df_error("%s: tensor '%s' has data_offsets [%s, %s]; both must be non-negative integers", file,
                        name, describe(of->child, num, sizeof num), describe(of->child->next, num2, sizeof num2));
    }
    if (t->begin > t->end)
        return df_error("%s: tensor '%s' has data_offsets [%zu, %zu] with begin after end", file, name, t->begin,
                        t->end);
    if (t->end - t->begin != need)
        return df_error("%s: tensor '%s' has data_offsets [%zu, %zu] (%zu bytes) but %s shape %s needs %zu bytes",
                        file, name, t->begin, t->end, t->end - t->begin, dtypes[t->dtype].name, shp, need);
    if (t->end > data_size)
        return df_error("%s: tensor '%s' has data_offsets [%zu, %zu] beyond the end of the data section (%zu "
                        "bytes); the file is truncated or corrupt",
                        file, name, t->begin, t->end, data_size);
    return 0;
}

/* Checks the "__metadata__" object: string keys to string values. */
static int check_metadata(const char *file, const cJSON *m) {
    char num[64];
    if (!cJSON_IsObject(m))
        return df_error("%s: __metadata__ is %s, not an object of strings", file, describe(m, num, sizeof num));
    for (const cJSON *kv = m->child; kv; kv = kv->next)
        if (!cJSON_IsString(kv))
            return df_error("%s: __metadata__ entry '%s' is %s, not a string", file, kv->string,
                            describe(kv, num, sizeof num));
    return 0;
}

typedef struct {
    size_t begin, end, idx;
} span_key;

static int cmp_span(const void *a, const void *b) {
    const span_key *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

typedef struct {
    const char *name;
    size_t idx;
} name_key;

static int cmp_name(const void *a, const void *b) {
    const name_key *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->idx < y->idx ? -1 : x->idx > y->idx);
}

/* Validates buf[0..size) and fills *f, taking ownership of buf (df_malloc'd) in all cases. */
static int parse(st_file *f, const char *file, unsigned char *buf, size_t size) {
    memset(f, 0, sizeof *f);
    size_t plen = strlen(file) + 1;
    f->path = df_malloc(plen);
    memcpy(f->path, file, plen);
    f->buf = buf;
    f->size = size;
    char *hdr = NULL;
    span_key *spans = NULL;
    name_key *names = NULL;
    st_tensor *unsorted = NULL;

    if (size < 8) {
        df_error("%s: is truncated or not a safetensors file: it has %zu bytes, fewer than the 8-byte header "
                 "length",
                 file, size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | buf[i];
    if (hlen > size - 8) {
        df_error("%s: is truncated or not a safetensors file: header says %llu bytes but the file has only %zu "
                 "after the 8-byte length",
                 file, (unsigned long long)hlen, size - 8);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER) {
        df_error("%s: header length %llu exceeds the %llu-byte limit; not a safetensors file?", file,
                 (unsigned long long)hlen, ST_MAX_HEADER);
        goto fail;
    }
    if (hlen == 0) {
        df_error("%s: the JSON header is empty (length 0)", file);
        goto fail;
    }
    f->data_start = 8 + (size_t)hlen;
    size_t data_size = size - f->data_start;

    /* Parse a zero-terminated copy, so that the JSON parser cannot look past the header. */
    hdr = df_malloc((size_t)hlen + 1);
    memcpy(hdr, buf + 8, (size_t)hlen);
    hdr[hlen] = 0;
    const char *zero = memchr(hdr, 0, (size_t)hlen);
    if (zero) {
        df_error("%s: the JSON header contains a zero byte at offset %zu; the file is corrupt", file,
                 (size_t)(zero - hdr));
        goto fail;
    }
    const char *end = NULL;
    f->header = cJSON_ParseWithOpts(hdr, &end, 0);
    if (!f->header) {
        size_t at = end && end >= hdr && end <= hdr + hlen ? (size_t)(end - hdr) : 0;
        df_error("%s: the header is not valid JSON (error at byte %zu of %llu, near \"%.24s\")", file, at,
                 (unsigned long long)hlen, hdr + at);
        goto fail;
    }
    for (const char *p = end; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            df_error("%s: the header has bytes after its JSON object (at byte %zu: \"%.24s\")", file,
                     (size_t)(p - hdr), p);
            goto fail;
        }
    if (!cJSON_IsObject(f->header)) {
        char num[64];
        df_error("%s: the header is %s, not a JSON object", file, describe(f->header, num, sizeof num));
        goto fail;
    }

    /* Count the tensors; check the metadata. */
    size_t n = 0;
    for (const cJSON *c = f->header->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (f->metadata) {
                df_error("%s: the header has two __metadata__ entries", file);
                goto fail;
            }
            if (check_metadata(file, c) != 0) goto fail;
            f->metadata = (cJSON *)c;
        } else {
            n++;
        }
    }

    unsorted = df_calloc(n ? n : 1, sizeof *unsorted);
    size_t k = 0;
    for (cJSON *c = f->header->child; c; c = c->next) {
        if (c == f->metadata) continue;
        unsorted[k].name = c->string;
        if (parse_tensor(file, c->string, c, data_size, &unsorted[k]) != 0) goto fail;
        k++;
    }

    /* Order by data offset and refuse overlaps (empty tensors overlap nothing). */
    spans = df_malloc((n ? n : 1) * sizeof *spans);
    for (size_t i = 0; i < n; i++) spans[i] = (span_key){unsorted[i].begin, unsorted[i].end, i};
    qsort(spans, n, sizeof *spans, cmp_span);
    f->tensors = df_malloc((n ? n : 1) * sizeof *f->tensors);
    const st_tensor *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = &unsorted[spans[i].idx];
        f->tensors[i] = *t;
        if (t->begin == t->end) continue;
        if (prev && t->begin < prev->end) {
            df_error("%s: tensors '%s' (bytes [%zu, %zu)) and '%s' (bytes [%zu, %zu)) overlap; the file is corrupt",
                     file, prev->name, prev->begin, prev->end, t->name, t->begin, t->end);
            goto fail;
        }
        prev = t;
    }
    f->n = n;

    /* Index by name and refuse duplicates. */
    names = df_malloc((n ? n : 1) * sizeof *names);
    for (size_t i = 0; i < n; i++) names[i] = (name_key){f->tensors[i].name, i};
    qsort(names, n, sizeof *names, cmp_name);
    f->by_name = df_malloc((n ? n : 1) * sizeof *f->by_name);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(names[i].name, names[i - 1].name) == 0) {
            df_error("%s: tensor '%s' appears twice in the header", file, names[i].name);
            goto fail;
        }
        f->by_name[i] = names[i].idx;
    }

    df_free(hdr);
    df_free(spans);
    df_free(names);
    df_free(unsorted);
    return 0;
fail:
    df_free(hdr);
    df_free(spans);
    df_free(names);
    df_free(unsorted);
    st_close(f);
    return -1;
}

/* ---- reading: public functions ---- */

int st_open(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    unsigned char *buf;
    size_t size;
    if (df_read_file(path, &buf, &size) != 0) return -1;
    return parse(f, path, buf, size);
}

int st_open_memory(st_file *f, const char *name, const void *data, size_t size) {
    unsigned char *buf = df_malloc(size);
    if (size) memcpy(buf, data, size);
    return parse(f, name, buf, size);
}

void st_close(st_file *f) {
    df_free(f->path);
    df_free(f->buf);
    df_free(f->tensors);
    df_free(f->by_name);
    cJSON_Delete(f->header);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const void *st_data(const st_file *f, const st_tensor *t) { return f->buf + f->data_start + t->begin; }

const char *st_metadata(const st_file *f, const char *key) {
    if (!f->metadata) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->metadata, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int st_read_f32(const st_file *f, const char *name, float *out, int ndim, const int64_t *shape) {
    DF_CHECK(ndim >= -1 && ndim <= ST_MAX_DIMS, "st_read_f32: ndim %d out of range", ndim);
    const st_tensor *t = st_find(f, name);
    if (!t) return df_error("%s: tensor '%s' not found (the file has %zu tensors)", f->path, name, f->n);
    if (ndim >= 0) {
        int same = ndim == t->ndim;
        for (int i = 0; same && i < ndim; i++) same = shape[i] == t->shape[i];
        if (!same) {
            char want[256], got[256];
            format_shape(want, sizeof want, ndim, shape);
            format_shape(got, sizeof got, t->ndim, t->shape);
            return df_error("%s: tensor '%s' has shape %s but %s was expected", f->path, name, got, want);
        }
    }
    const unsigned char *src = st_data(f, t);
    switch (t->dtype) {
    case ST_F32:
        if (t->numel) memcpy(out, src, t->numel * 4);
        return 0;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
        }
        return 0;
    default:
        return df_error("%s: tensor '%s' has dtype %s, which is not supported as float32 here (F32, F16, BF16 are)",
                        f->path, name, dtypes[t->dtype].name);
    }
}

/* ---- writing ---- */

st_entry st_entry_f32(const char *name, const float *data, int ndim, const int64_t *shape) {
    DF_CHECK(ndim >= 0 && ndim <= ST_MAX_DIMS, "st_entry_f32: ndim %d out of range", ndim);
    st_entry e = {.name = name, .dtype = ST_F32, .ndim = ndim, .data = data};
    for (int i = 0; i < ndim; i++) e.shape[i] = shape[i];
    return e;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* 1 if the n strings have a duplicate, which is then stored in *dup. */
static int find_duplicate(const char **s, size_t n, const char **dup) {
    qsort(s, n, sizeof *s, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(s[i], s[i - 1]) == 0) {
            *dup = s[i];
            return 1;
        }
    return 0;
}

static cJSON *checked(cJSON *v) {
    DF_CHECK(v, "out of memory building a JSON header");
    return v;
}

static cJSON *raw_count(size_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%zu", v);
    return checked(cJSON_CreateRaw(buf));
}

int st_write(const char *path, const st_entry *entries, size_t n, const char *const *metadata_kv, size_t n_kv) {
    /* Check the entries and compute each tensor's size. */
    size_t *bytes = df_malloc((n ? n : 1) * sizeof *bytes), total = 0;
    const char **names = df_malloc((n + n_kv ? n + n_kv : 1) * sizeof *names), *dup;
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        if (!e->name) {
            df_error("cannot write '%s': entry %zu has no name", path, i);
            goto done;
        }
        if (strcmp(e->name, "__metadata__") == 0) {
            df_error("cannot write '%s': '__metadata__' is reserved and cannot name a tensor", path);
            goto done;
        }
        if (e->dtype < 0 || e->dtype >= ST_NDTYPES) {
            df_error("cannot write '%s': tensor '%s' has invalid dtype %d", path, e->name, e->dtype);
            goto done;
        }
        if (e->ndim < 0 || e->ndim > ST_MAX_DIMS) {
            df_error("cannot write '%s': tensor '%s' has %d dimensions (0..%d allowed)", path, e->name, e->ndim,
                     ST_MAX_DIMS);
            goto done;
        }
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++)
            if (e->shape[d] < 0) {
                df_error("cannot write '%s': tensor '%s' has negative dimension %lld", path, e->name,
                         (long long)e->shape[d]);
                goto done;
            } else if (e->shape[d] == 0) {
                numel = 0;
            }
        for (int d = 0; d < e->ndim && numel; d++) {
            if ((uint64_t)e->shape[d] > SIZE_MAX / numel) {
                df_error("cannot write '%s': tensor '%s' is too large", path, e->name);
                goto done;
            }
            numel *= (size_t)e->shape[d];
        }
        size_t es = dtypes[e->dtype].size;
        if (numel > SIZE_MAX / es || numel * es > SIZE_MAX - total) {
            df_error("cannot write '%s': tensor '%s' is too large", path, e->name);
            goto done;
        }
        bytes[i] = numel * es;
        total += bytes[i];
        if (bytes[i] && !e->data) {
            df_error("cannot write '%s': tensor '%s' has no data", path, e->name);
            goto done;
        }
        names[i] = e->name;
    }
    if (find_duplicate(names, n, &dup)) {
        df_error("cannot write '%s': two tensors are called '%s'", path, dup);
        goto done;
    }
    for (size_t i = 0; i < n_kv; i++) {
        if (!metadata_kv[2 * i] || !metadata_kv[2 * i + 1]) {
            df_error("cannot write '%s': metadata pair %zu has a NULL key or value", path, i);
            goto done;
        }
        names[i] = metadata_kv[2 * i];
    }
    if (find_duplicate(names, n_kv, &dup)) {
        df_error("cannot write '%s': metadata key '%s' appears twice", path, dup);
        goto done;
    }

    /* Build the header: metadata first, then the tensors in order, contiguous. */
    cJSON *root = checked(cJSON_CreateObject());
    if (n_kv) {
        cJSON *m = checked(cJSON_AddObjectToObject(root, "__metadata__"));
        for (size_t i = 0; i < n_kv; i++)
            checked(cJSON_AddStringToObject(m, metadata_kv[2 * i], metadata_kv[2 * i + 1]));
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        cJSON *t = checked(cJSON_AddObjectToObject(root, e->name));
        checked(cJSON_AddStringToObject(t, "dtype", dtypes[e->dtype].name));
        cJSON *shape = checked(cJSON_AddArrayToObject(t, "shape"));
        for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(shape, raw_count((size_t)e->shape[d]));
        cJSON *offs = checked(cJSON_AddArrayToObject(t, "data_offsets"));
        cJSON_AddItemToArray(offs, raw_count(off));
        cJSON_AddItemToArray(offs, raw_count(off + bytes[i]));
        off += bytes[i];
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    DF_CHECK(json, "out of memory printing a JSON header");
    size_t len = strlen(json), padded = (len + 7) & ~(size_t)7;

    /* Write: length, header, padding spaces, data. */
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    df_atomic_file af;
    if (df_atomic_open(&af, path) != 0) {
        cJSON_free(json);
        goto done;
    }
    int ok = fwrite(prefix, 1, 8, af.fp) == 8 && fwrite(json, 1, len, af.fp) == len &&
             fwrite(spaces, 1, padded - len, af.fp) == padded - len;
    cJSON_free(json);
    for (size_t i = 0; ok && i < n; i++)
        if (bytes[i]) ok = fwrite(entries[i].data, 1, bytes[i], af.fp) == bytes[i];
    if (!ok) {
        df_atomic_abort(&af);
        df_error("cannot write '%s': write failed (disk full?)", path);
        goto done;
    }
    rc = df_atomic_commit(&af);
done:
    df_free(bytes);
    df_free(names);
    return rc;
}
