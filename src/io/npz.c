/* npz.c: .npz archives (numpy/lib/npyio.py: np.savez writes a zip with one "<key>.npy" member per array,
 * stored; np.savez_compressed deflates them) on top of libzip and the .npy code of npy.c. */
#include "io/npz.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zip.h>

#include "base/base.h"
#include "io/file.h"

#define NPZ_MAX_KEY 256
#define DEFLATE_MAX_RATIO 1032 /* deflate cannot expand data more than this (RFC 1951 block limits) */

/* ---- reading ---- */

/* A libzip error code as text. */
static const char *zip_code_str(int code) {
    static _Thread_local char msg[256];
    zip_error_t e;
    zip_error_init_with_code(&e, code);
    snprintf(msg, sizeof msg, "%s", zip_error_strerror(&e));
    zip_error_fini(&e);
    return msg;
}

int df_npz_open(df_npz *z, const char *path) {
    memset(z, 0, sizeof *z);
    struct stat st;
    if (stat(path, &st) != 0) return df_error("cannot open '%s': %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return df_error("cannot read '%s': not a regular file", path);
    int code = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &code);
    if (!za) {
        if (code == ZIP_ER_NOZIP || code == ZIP_ER_INCONS)
            return df_error("cannot read '%s': not a zip archive, or a truncated one (libzip: %s); an .npz file "
                            "is what np.savez writes", path, zip_code_str(code));
        return df_error("cannot read '%s': %s", path, zip_code_str(code));
    }
    size_t n = strlen(path);
    z->path = df_malloc(n + 1);
    memcpy(z->path, path, n + 1);
    z->zip = za;
    z->fsize = (size_t)st.st_size;
    return 0;
}

void df_npz_close(df_npz *z) {
    if (z->zip) zip_discard(z->zip);
    df_free(z->path);
    memset(z, 0, sizeof *z);
}

/* The index of the member holding `key` ("key.npy", else "key"), or -1. */
static zip_int64_t locate(const df_npz *z, const char *key) {
    char name[NPZ_MAX_KEY + 8];
    if (strlen(key) > NPZ_MAX_KEY) return -1;
    snprintf(name, sizeof name, "%s.npy", key);
    zip_int64_t i = zip_name_locate(z->zip, name, 0);
    return i >= 0 ? i : zip_name_locate(z->zip, key, 0);
}

int df_npz_has(const df_npz *z, const char *key) { return z->zip && locate(z, key) >= 0; }

/* "mu, sigma, n": the keys the archive holds, for messages. */
static void list_keys(const df_npz *z, char *out, size_t cap) {
    size_t used = 0;
    out[0] = 0;
    zip_int64_t n = zip_get_num_entries(z->zip, 0);
    for (zip_int64_t i = 0; i < n && used + 1 < cap; i++) {
        const char *name = zip_get_name(z->zip, (zip_uint64_t)i, 0);
        if (!name) continue;
        size_t len = strlen(name);
        if (len > 4 && strcmp(name + len - 4, ".npy") == 0) len -= 4;
        int w = snprintf(out + used, cap - used, "%s%.*s", used ? ", " : "", (int)len, name);
        if (w < 0) break;
        used += (size_t)w < cap - used ? (size_t)w : cap - used - 1;
    }
    if (!out[0]) snprintf(out, cap, "nothing");
}

/* The bytes of member `index` into a new df_malloc'd buffer, its size checked against the file's. */
static int read_member(df_npz *z, zip_uint64_t index, unsigned char **buf, size_t *len) {
    *buf = NULL, *len = 0;
    zip_stat_t st;
    if (zip_stat_index(z->zip, index, 0, &st) != 0) return df_error("%s", zip_strerror(z->zip));
    if (!(st.valid & ZIP_STAT_SIZE) || !(st.valid & ZIP_STAT_COMP_SIZE) || !(st.valid & ZIP_STAT_COMP_METHOD))
        return df_error("the zip directory lacks the member's sizes");
    if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE)
        return df_error("compression method %d is not supported (stored or deflated, as np.savez and "
                        "np.savez_compressed write)", (int)st.comp_method);
    uint64_t limit = st.comp_method == ZIP_CM_STORE ? st.comp_size : st.comp_size * DEFLATE_MAX_RATIO + 64;
    if (st.comp_size > z->fsize || st.size > limit)
        return df_error("the zip directory claims %llu bytes (%llu compressed) in a file of %zu bytes",
                        (unsigned long long)st.size, (unsigned long long)st.comp_size, z->fsize);
    zip_file_t *zf = zip_fopen_index(z->zip, index, 0);
    if (!zf) return df_error("%s", zip_strerror(z->zip));
    size_t size = (size_t)st.size, got = 0;
    unsigned char *p = df_malloc(size + 1);
    while (got < size) {
        zip_int64_t r = zip_fread(zf, p + got, size - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    /* one more read reaches the end of the member, where libzip checks its CRC */
    unsigned char extra;
    zip_int64_t tail = got == size ? zip_fread(zf, &extra, 1) : 0;
    int rc = 0;
    if (got != size || tail != 0) {
        zip_error_t *e = zip_file_get_error(zf);
        rc = df_error("%s (read %zu of %zu bytes)", zip_error_code_zip(e) ? zip_error_strerror(e) :
                      got != size ? "unexpected end of data" : "more data than the directory says", got, size);
    }
    zip_fclose(zf);
    if (rc != 0) {
        df_free(p);
        return -1;
    }
    *buf = p, *len = size;
    return 0;
}

int df_npz_get(df_npz *z, const char *key, df_npy *a) {
    memset(a, 0, sizeof *a);
    DF_CHECK(z->zip, "df_npz_get on an archive that is not open");
    zip_int64_t index = locate(z, key);
    if (index < 0) {
        char keys[512];
        list_keys(z, keys, sizeof keys);
        return df_error("'%s': no array '%s' in the archive (it holds: %s)", z->path, key, keys);
    }
    unsigned char *buf;
    size_t len;
    int rc = read_member(z, (zip_uint64_t)index, &buf, &len);
    if (rc == 0) {
        rc = df_npy_parse(buf, len, a);
        df_free(buf);
    }
    return rc == 0 ? 0 : df_error_wrap("'%s': array '%s'", z->path, key);
}

/* ---- writing ---- */

/* Builds the archive in a libzip memory source; on success *out (df_malloc'd) holds its *len bytes. */
static int build_zip(const df_npz_entry *entries, size_t n, unsigned char **bufs, unsigned char **out,
                     size_t *len) {
    zip_error_t err;
    zip_error_init(&err);
    zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &err);
    zip_t *za = src ? zip_open_from_source(src, ZIP_TRUNCATE, &err) : NULL;
    if (!za) {
        int rc = df_error("libzip: %s", zip_error_strerror(&err));
        if (src) zip_source_free(src);
        zip_error_fini(&err);
        return rc;
    }
    zip_source_keep(src); /* it must outlive zip_close, which writes the archive into it */
    for (size_t i = 0; i < n; i++) {
        const df_npz_entry *e = &entries[i];
        char name[NPZ_MAX_KEY + 8];
        size_t nbytes;
        snprintf(name, sizeof name, "%s.npy", e->key);
        df_npy_encode(e->dtype, e->data, e->ndim, e->shape, &bufs[i], &nbytes);
        zip_source_t *s = zip_source_buffer(za, bufs[i], nbytes, 0);
        zip_int64_t idx = s ? zip_file_add(za, name, s, ZIP_FL_ENC_UTF_8) : -1;
        if (idx < 0 || zip_set_file_compression(za, (zip_uint64_t)idx, ZIP_CM_STORE, 0) != 0) {
            int rc = df_error("libzip: adding '%s': %s", name, zip_strerror(za));
            if (s && idx < 0) zip_source_free(s);
            zip_discard(za);
            zip_source_free(src);
            return rc;
        }
    }
    if (zip_close(za) != 0) {
        int rc = df_error("libzip: %s", zip_strerror(za));
        zip_discard(za);
        zip_source_free(src);
        return rc;
    }
    zip_stat_t st;
    int rc = 0;
    if (zip_source_stat(src, &st) != 0 || !(st.valid & ZIP_STAT_SIZE) || zip_source_open(src) != 0) {
        rc = df_error("libzip: cannot read back the archive: %s", zip_error_strerror(zip_source_error(src)));
    } else {
        *len = (size_t)st.size;
        *out = df_malloc(*len ? *len : 1);
        if (zip_source_read(src, *out, st.size) != (zip_int64_t)st.size) {
            rc = df_error("libzip: short read of the archive in memory");
            df_free(*out);
            *out = NULL;
        }
        zip_source_close(src);
    }
    zip_source_free(src);
    return rc;
}

int df_npz_write(const char *path, const df_npz_entry *entries, size_t n) {
    if (n == 0) return df_error("cannot write '%s': an .npz needs at least one array", path);
    for (size_t i = 0; i < n; i++) {
        const char *k = entries[i].key;
        if (!k || !k[0] || strlen(k) > NPZ_MAX_KEY || strchr(k, '/'))
            return df_error("cannot write '%s': array %zu has no valid name (1 to %d characters, no '/')", path,
                            i, NPZ_MAX_KEY);
        if (entries[i].ndim < 0 || entries[i].ndim > DF_NPY_MAX_DIMS)
            return df_error("cannot write '%s': array '%s' has %d dimensions", path, k, entries[i].ndim);
        for (size_t j = 0; j < i; j++)
            if (strcmp(entries[j].key, k) == 0) return df_error("cannot write '%s': two arrays named '%s'", path, k);
    }
    unsigned char **bufs = df_calloc(n, sizeof *bufs), *zipped = NULL;
    size_t len = 0;
    int rc = build_zip(entries, n, bufs, &zipped, &len);
    for (size_t i = 0; i < n; i++) df_free(bufs[i]);
    df_free(bufs);
    if (rc != 0) return df_error_wrap("cannot write '%s'", path);
    rc = df_write_file_atomic(path, zipped, len);
    df_free(zipped);
    return rc;
}
