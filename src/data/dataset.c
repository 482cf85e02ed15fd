/* dataset.c: df_dataset_load (named datasets, and telling a path's format), resizing a loaded dataset to
 * what was asked, and the check against a model's input shape. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "base/base.h"
#include "data/dataset.h"
#include "io/image.h"

/* ---- named datasets ---- */

static const struct {
    const char *name, *dir, *file;
} presets[] = {
    {"fashion-mnist", DF_FASHION_MNIST_DIR, "train-images-idx3-ubyte"},
    {"fashion-mnist-test", DF_FASHION_MNIST_DIR, "t10k-images-idx3-ubyte"},
    {"mnist", DF_MNIST_DIR, "train-images-idx3-ubyte"},
    {"mnist-test", DF_MNIST_DIR, "t10k-images-idx3-ubyte"},
};
#define NPRESETS (sizeof presets / sizeof presets[0])

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds dir/file[.gz], or the variant spelled file.idx3-ubyte (as some mirrors name it); 1 if found. */
static int find_idx(char *out, size_t cap, const char *dir, const char *file) {
    char alt[64];
    snprintf(alt, sizeof alt, "%s", file);
    char *dash = strstr(alt, "-idx");
    if (dash) *dash = '.';
    const char *names[2] = {file, alt};
    for (int k = 0; k < 4; k++) {
        snprintf(out, cap, "%s/%s%s", dir, names[k / 2], k % 2 ? "" : ".gz");
        if (is_file(out)) return 1;
    }
    return 0;
}

static int load_preset(df_dataset *d, size_t k, const char *data_dir) {
    const char *dir = data_dir && data_dir[0] ? data_dir : presets[k].dir, *file = presets[k].file;
    char path[4200];
    if (!find_idx(path, sizeof path, dir, file)) {
        if (strncmp(presets[k].name, "fashion", 7) == 0 && dir == presets[k].dir)
            return df_error("%s: no %s[.gz] in '%s'; install Debian's dataset-fashion-mnist package (sudo apt-get "
                            "install dataset-fashion-mnist) or pass --data-dir with the folder holding %s[.gz]",
                            presets[k].name, file, dir, file);
        return df_error("%s: no %s[.gz] in '%s'; download it and pass --data-dir with the folder holding %s[.gz]",
                        presets[k].name, file, dir, file);
    }
    if (df_dataset_load_idx(d, path) != 0) return df_error_wrap("%s", presets[k].name);
    char lfile[64], *at;
    snprintf(lfile, sizeof lfile, "%s", file);
    if ((at = strstr(lfile, "images-idx3"))) memcpy(at, "labels-idx1", 11);
    if (find_idx(path, sizeof path, dir, lfile) && df_dataset_load_idx_labels(d, path) != 0) {
        df_dataset_free(d);
        return df_error_wrap("%s", presets[k].name);
    }
    snprintf(d->source, sizeof d->source, "%s", presets[k].name);
    return 0;
}

/* ---- telling a path's format ---- */

static int load_file(df_dataset *d, const char *path) {
    unsigned char head[8] = {0};
    FILE *fp = fopen(path, "rb");
    size_t got = fp ? fread(head, 1, sizeof head, fp) : 0;
    if (fp) fclose(fp);
    if (got >= 6 && memcmp(head, "\x93NUMPY", 6) == 0) return df_dataset_load_npy(d, path);
    if ((got >= 4 && memcmp(head, "\x89PNG", 4) == 0) || (got >= 3 && head[0] == 0xff && head[1] == 0xd8))
        return df_error("'%s' is a single image; pass the folder that holds the images", path);
    if (got >= 2 && head[0] == 0x1f && head[1] == 0x8b) {
        unsigned char inner[6] = {0};
        gzFile gz = gzopen(path, "rb");
        int n = gz ? gzread(gz, inner, sizeof inner) : 0;
        if (gz) gzclose(gz);
        if (n == 6 && memcmp(inner, "\x93NUMPY", 6) == 0)
            return df_error("'%s' is a gzip-compressed .npy file; decompress it first (gunzip)", path);
        return df_dataset_load_idx(d, path);
    }
    if (got >= 2 && head[0] == 0 && head[1] == 0) return df_dataset_load_idx(d, path);
    struct stat st;
    const char *dot = strrchr(path, '.');
    if ((dot && strcmp(dot, ".bin") == 0) || (stat(path, &st) == 0 && st.st_size > 0 && st.st_size % 3073 == 0))
        return df_dataset_load_cifar(d, path);
    return df_error("cannot tell the format of '%s': expected an IDX image file (gzip or raw), a .npy array, a "
                    "CIFAR-10 binary batch (.bin), or a folder of PNG/JPEG images", path);
}

static int load_dir(df_dataset *d, const char *dir, int resolution, int channels) {
    char path[4200];
    snprintf(path, sizeof path, "%s/data_batch_1.bin", dir);
    int cifar = is_file(path);
    snprintf(path, sizeof path, "%s/cifar-10-batches-bin/data_batch_1.bin", dir);
    if (cifar || is_file(path)) return df_dataset_load_cifar(d, dir);
    if (find_idx(path, sizeof path, dir, "train-images-idx3-ubyte")) return df_dataset_load_idx(d, path);
    return df_dataset_load_folder(d, dir, resolution, channels);
}

/* ---- loading ---- */

int df_dataset_load(df_dataset *d, const char *spec, const char *data_dir, int resolution, int channels) {
    memset(d, 0, sizeof *d);
    if (!spec || !spec[0]) return df_error("no dataset given");
    if (resolution < 0 || resolution > 4096)
        return df_error("resolution must be 0 (the data's own) or 1..4096, not %d", resolution);
    if (channels != 0 && channels != 1 && channels != 3)
        return df_error("channels must be 1 or 3 (or 0 for the data's own), not %d", channels);
    int rc = -2;
    for (size_t k = 0; k < NPRESETS; k++)
        if (strcmp(spec, presets[k].name) == 0) rc = load_preset(d, k, data_dir);
    if (rc == -2) {
        struct stat st;
        if (stat(spec, &st) != 0)
            return df_error("no dataset '%s': there is no such file or folder, and it is not one of "
                            "fashion-mnist, fashion-mnist-test, mnist, mnist-test", spec);
        rc = S_ISDIR(st.st_mode) ? load_dir(d, spec, resolution, channels) : load_file(d, spec);
    }
    if (rc != 0) {
        df_dataset_free(d);
        return -1;
    }
    if (d->n > UINT32_MAX) {
        df_dataset_free(d);
        return df_error("'%s' holds %zu images; at most %u are supported", spec, d->n, UINT32_MAX);
    }
    df_dataset_conform(d, resolution, channels);
    return 0;
}

void df_dataset_free(df_dataset *d) {
    df_free(d->pixels);
    df_free(d->labels);
    memset(d, 0, sizeof *d);
}

/* ---- resizing a loaded dataset ---- */

void df_dataset_conform(df_dataset *d, int resolution, int channels) {
    size_t n = d->n, c = d->c, h = d->h, w = d->w, C = channels > 0 ? (size_t)channels : c;
    size_t res = resolution > 0 ? (size_t)resolution : 0;
    if ((!res || (h == res && w == res)) && C == c) return;
    if (!res && h == w) res = h;
    DF_CHECK((c == 1 || c == 3) && (C == 1 || C == 3), "df_dataset_conform: channels %zu -> %zu", c, C);
    if (!res) { /* non-square images, channels only */
        uint8_t *out = df_malloc(n * C * h * w);
        size_t hw = h * w;
        for (size_t i = 0; i < n; i++) {
            const uint8_t *src = d->pixels + i * c * hw;
            uint8_t *dst = out + i * C * hw;
            for (size_t p = 0; p < hw; p++) {
                if (C == 3) {
                    dst[p] = dst[hw + p] = dst[2 * hw + p] = src[p];
                } else {
                    float v = 0.299f * src[p] + 0.587f * src[hw + p] + 0.114f * src[2 * hw + p];
                    dst[p] = (uint8_t)(v + 0.5f);
                }
            }
        }
        df_free(d->pixels);
        d->pixels = out, d->c = C;
        return;
    }
    size_t in_per = c * h * w, out_per = C * res * res;
    uint8_t *out = df_malloc(n * out_per);
#pragma omp parallel
    {
        uint8_t *hwc = df_malloc(in_per), *hwc_out = df_malloc(out_per);
#pragma omp for schedule(static)
        for (size_t i = 0; i < n; i++) {
            const uint8_t *src = d->pixels + i * in_per;
            for (size_t p = 0; p < h * w; p++)
                for (size_t ch = 0; ch < c; ch++) hwc[p * c + ch] = src[ch * h * w + p];
            df_image_resize_crop(hwc_out, res, C, hwc, w, h, c);
            uint8_t *dst = out + i * out_per;
            for (size_t p = 0; p < res * res; p++)
                for (size_t ch = 0; ch < C; ch++) dst[ch * res * res + p] = hwc_out[p * C + ch];
        }
        df_free(hwc);
        df_free(hwc_out);
    }
    df_free(d->pixels);
    d->pixels = out, d->c = C, d->h = d->w = res;
}

/* ---- checking against a model ---- */

int df_dataset_check_model(const df_dataset *d, int model_channels, int model_resolution) {
    if (d->c == (size_t)model_channels && d->h == (size_t)model_resolution && d->w == (size_t)model_resolution)
        return 0;
    return df_error("the model expects %dx%dx%d images but %s has %zux%zux%zu; pass --resolution/--channels or "
                    "choose another preset", model_resolution, model_resolution, model_channels, d->source, d->h,
                    d->w, d->c);
}
