/* images_out.c: grid, folder or .npy output for generated images. */
#include "io/images_out.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "io/file.h"
#include "io/image.h"
#include "io/npy.h"

typedef enum { OUT_GRID, OUT_NPY, OUT_DIR, OUT_UNKNOWN } out_kind;

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static out_kind kind_of(const char *path) {
    struct stat st;
    if (path[0] && path[strlen(path) - 1] == '/') return OUT_DIR;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return OUT_DIR;
    if (ends_with(path, ".png")) return OUT_GRID;
    if (ends_with(path, ".npy")) return OUT_NPY;
    return OUT_UNKNOWN;
}

int df_check_images_path(const char *path) {
    out_kind k = kind_of(path);
    if (k == OUT_UNKNOWN)
        return df_error("--out %s: end it in .png (a grid), .npy (an array) or / (a folder of PNGs)", path);
    if (k == OUT_DIR) return 0; /* created when written */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return 0;
    *slash = 0;
    struct stat st;
    if (dir[0] && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        return df_error("--out %s: the folder %s does not exist", path, dir);
    return 0;
}

int df_write_images(const char *path, const float *x, size_t n, size_t c, size_t h, size_t w, size_t cols) {
    return df_write_images_from(path, x, n, c, h, w, cols, 0);
}

int df_write_images_from(const char *path, const float *x, size_t n, size_t c, size_t h, size_t w, size_t cols,
                         size_t first) {
    if (df_check_images_path(path)) return -1;
    out_kind k = kind_of(path);
    if (k == OUT_GRID) return df_write_grid(path, x, n, c, h, w, cols);
    size_t plane = h * w, per = c * plane;
    uint8_t *u = df_malloc(n * per);
    for (size_t i = 0; i < n; i++) { /* NCHW floats -> NHWC bytes */
        uint8_t *dst = u + i * per;
        for (size_t ch = 0; ch < c; ch++) {
            uint8_t tmp[1];
            for (size_t p = 0; p < plane; p++) {
                df_float_to_u8(tmp, x + i * per + ch * plane + p, 1);
                dst[p * c + ch] = tmp[0];
            }
        }
    }
    int rc = 0;
    if (k == OUT_NPY) {
        size_t shape[4] = {n, h, w, c};
        rc = df_npy_write_u8(path, u, c == 1 ? 3 : 4, shape);
    } else {
        if (df_mkdirs(path)) rc = -1;
        for (size_t i = 0; i < n && rc == 0; i++) {
            char file[4200];
            snprintf(file, sizeof file, "%s%s%06zu.png", path, path[strlen(path) - 1] == '/' ? "" : "/", first + i);
            rc = df_png_write(file, u + i * per, w, h, c);
        }
    }
    df_free(u);
    return rc;
}
