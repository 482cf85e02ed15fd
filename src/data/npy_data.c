/* npy_data.c: a dataset from a .npy array of images.
 *
 * Accepted layouts: (N, H, W) gray; (N, H, W, C) with C = 1, 3 or 4 (alpha dropped); (N, C, H, W) with
 * C = 1 or 3 when the last axis is not a channel count. Values: uint8 (or any integer type) in 0..255 as
 * they are; floats in [-1, 1] mapped to round((x + 1) * 127.5), with up to 0.01 of slack for rounding (then
 * clamped); anything else is refused with the offending value. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "data/dataset.h"
#include "io/npy.h"

/* ---- value conversion ---- */

static int is_float(df_npy_dtype t) { return t == DF_NPY_F2 || t == DF_NPY_F4 || t == DF_NPY_F8; }

/* Element i of the array as a pixel byte, or -1 (after df_error) if it is out of range. */
static int to_byte(const df_npy *a, size_t i, const char *path, uint8_t *out) {
    if (a->dtype == DF_NPY_U1) {
        *out = ((const uint8_t *)a->data)[i];
        return 0;
    }
    double v = df_npy_get(a, i);
    if (is_float(a->dtype)) {
        if (!(v >= -1.01 && v <= 1.01))
            return df_error("'%s': float images must be in [-1, 1], but element %zu is %g; map [0, 1] data with "
                            "x * 2 - 1, or save uint8 0..255", path, i, v);
        double p = floor((v + 1.0) * 127.5 + 0.5);
        *out = (uint8_t)(p < 0 ? 0 : p > 255 ? 255 : p);
        return 0;
    }
    if (v < 0 || v > 255)
        return df_error("'%s': integer images must be in 0..255, but element %zu is %.0f", path, i, v);
    *out = (uint8_t)v;
    return 0;
}

/* ---- loading ---- */

int df_dataset_load_npy(df_dataset *d, const char *path) {
    memset(d, 0, sizeof *d);
    df_npy a;
    if (df_npy_read(path, &a) != 0) return -1;
    size_t n = 0, c = 0, h = 0, w = 0, cin = 0;
    int nhwc = 1;
    if (a.ndim == 3) {
        n = a.shape[0], h = a.shape[1], w = a.shape[2], c = cin = 1;
    } else if (a.ndim == 4 && (a.shape[3] == 1 || a.shape[3] == 3 || a.shape[3] == 4)) {
        n = a.shape[0], h = a.shape[1], w = a.shape[2], cin = a.shape[3], c = cin == 4 ? 3 : cin;
    } else if (a.ndim == 4 && (a.shape[1] == 1 || a.shape[1] == 3)) {
        n = a.shape[0], c = cin = a.shape[1], h = a.shape[2], w = a.shape[3], nhwc = 0;
    } else {
        char shape[128] = "";
        for (int k = 0, len = 0; k < a.ndim && len < 100; k++)
            len += snprintf(shape + len, sizeof shape - (size_t)len, k ? ", %zu" : "%zu", a.shape[k]);
        df_npy_free(&a);
        return df_error("'%s' has shape (%s); images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or "
                        "3", path, shape);
    }
    if (n == 0 || h == 0 || w == 0) {
        df_npy_free(&a);
        return df_error("'%s' holds no images (shape with a zero)", path);
    }
    uint8_t *pix = df_malloc(n * c * h * w);
    for (size_t i = 0; i < n; i++)
        for (size_t ch = 0; ch < c; ch++)
            for (size_t y = 0; y < h; y++)
                for (size_t x = 0; x < w; x++) {
                    size_t src = nhwc ? ((i * h + y) * w + x) * cin + ch : ((i * c + ch) * h + y) * w + x;
                    if (to_byte(&a, src, path, &pix[((i * c + ch) * h + y) * w + x]) != 0) {
                        df_free(pix);
                        df_npy_free(&a);
                        return -1;
                    }
                }
    df_npy_free(&a);
    d->n = n, d->c = c, d->h = h, d->w = w, d->pixels = pix;
    snprintf(d->source, sizeof d->source, "%s", path);
    return 0;
}
