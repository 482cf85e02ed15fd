/* idx.c: IDX image files (the MNIST / Fashion-MNIST format), gzip-compressed or raw.
 *
 * Layout (big-endian): magic 00 00 08 03 (unsigned bytes, 3 dimensions), then N, rows, cols as uint32,
 * then N * rows * cols pixel bytes, row-major. zlib's gzread reads uncompressed files unchanged. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "base/base.h"
#include "data/dataset.h"

static size_t be32(const unsigned char *p) {
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | (size_t)p[3];
}

/* Reads up to `want` bytes; returns how many were read, or -1 with a df_error on a zlib error. */
static long long gz_read_all(gzFile gz, unsigned char *dst, size_t want, const char *path) {
    size_t got = 0;
    while (got < want) {
        size_t chunk = want - got > (1u << 30) ? (1u << 30) : want - got;
        int r = gzread(gz, dst + got, (unsigned)chunk);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            return df_error("cannot read '%s': %s", path, zerr == Z_ERRNO ? strerror(errno) : msg);
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

/* ---- loading ---- */

int df_dataset_load_idx(df_dataset *d, const char *path) {
    memset(d, 0, sizeof *d);
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) return df_error("cannot open '%s': %s", path, errno ? strerror(errno) : "out of memory");
    gzbuffer(gz, 1u << 18);
    unsigned char hd[16];
    long long got = gz_read_all(gz, hd, sizeof hd, path);
    int rc = 0;
    if (got < 0) {
        rc = -1;
    } else if (got < 4 || hd[0] != 0 || hd[1] != 0) {
        rc = df_error("'%s' is not an IDX file (IDX image files start with the bytes 00 00 08 03)", path);
    } else if (hd[2] != 0x08) {
        rc = df_error("'%s' is an IDX file of element type 0x%02x; images must be unsigned bytes (0x08)", path,
                      hd[2]);
    } else if (hd[3] != 3) {
        rc = df_error("'%s' is an IDX file with %d dimension%s; images have 3 (N, rows, cols)%s", path, hd[3],
                      hd[3] == 1 ? "" : "s", hd[3] == 1 ? " (is it a labels file?)" : "");
    } else if (got < 16) {
        rc = df_error("'%s' is truncated: the IDX header needs 16 bytes, the file has %lld", path, got);
    }
    size_t n = rc ? 0 : be32(hd + 4), rows = rc ? 0 : be32(hd + 8), cols = rc ? 0 : be32(hd + 12);
    if (rc == 0 && (n == 0 || rows == 0 || cols == 0))
        rc = df_error("'%s' holds no images (its header says %zu x %zu x %zu)", path, n, rows, cols);
    if (rc == 0 && (rows > 65536 || cols > 65536))
        rc = df_error("'%s': images of %zu x %zu pixels are implausible; is the file corrupt?", path, rows, cols);
    if (rc != 0) {
        gzclose(gz);
        return -1;
    }
    /* Grow the buffer as data arrives, so that a corrupt header cannot ask for a huge allocation. */
    size_t want = n * rows * cols, cap = want < ((size_t)1 << 28) ? want : ((size_t)1 << 28), have = 0;
    unsigned char *buf = df_malloc(cap);
    for (;;) {
        got = gz_read_all(gz, buf + have, cap - have, path);
        if (got < 0) break;
        have += (size_t)got;
        if (have < cap || cap == want) break;
        size_t bigger = cap * 2 < want ? cap * 2 : want;
        unsigned char *nb = df_malloc(bigger);
        memcpy(nb, buf, have);
        df_free(buf);
        buf = nb, cap = bigger;
    }
    gzclose(gz);
    if (got < 0) {
        df_free(buf);
        return -1;
    }
    if (have < want) {
        df_free(buf);
        return df_error("'%s' is truncated: its header promises %zu images of %zux%zu (%zu bytes) but only %zu "
                        "bytes of pixels follow", path, n, rows, cols, want, have);
    }
    d->n = n, d->c = 1, d->h = rows, d->w = cols, d->pixels = buf;
    snprintf(d->source, sizeof d->source, "%s", path);
    return 0;
}

int df_dataset_load_idx_labels(df_dataset *d, const char *path) {
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) return df_error("cannot open '%s': %s", path, errno ? strerror(errno) : "out of memory");
    unsigned char hd[8];
    long long got = gz_read_all(gz, hd, sizeof hd, path);
    int rc = got < 0 ? -1 : 0;
    if (rc == 0 && (got < 8 || hd[0] != 0 || hd[1] != 0 || hd[2] != 0x08 || hd[3] != 1))
        rc = df_error("'%s' is not an IDX labels file (those start with the bytes 00 00 08 01 and a count)", path);
    if (rc == 0 && be32(hd + 4) != d->n)
        rc = df_error("'%s' holds %zu labels for %zu images; the two files do not belong together", path,
                      be32(hd + 4), d->n);
    uint8_t *labels = rc ? NULL : df_malloc(d->n);
    if (rc == 0) {
        got = gz_read_all(gz, labels, d->n, path);
        if (got >= 0 && (size_t)got < d->n)
            df_error("'%s' is truncated: %zu labels promised, %lld present", path, d->n, got);
        if (got < 0 || (size_t)got < d->n) rc = -1;
    }
    gzclose(gz);
    if (rc) {
        df_free(labels);
        return -1;
    }
    df_free(d->labels);
    d->labels = labels;
    return 0;
}
