/* folder.c: a dataset from a folder of PNG/JPEG images, searched recursively.
 *
 * The files are listed (by extension), sorted by path so the order never depends on the file system,
 * decoded in parallel (OpenMP) straight into their slots, and the slots of files that failed are squeezed
 * out afterwards. The first failure is decoded once more, alone, to report its message. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/base.h"
#include "data/dataset.h"
#include "io/image.h"

/* ---- listing ---- */

typedef struct {
    char **v;
    size_t n, cap;
} pathlist;

static void push(pathlist *l, const char *path) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        char **bigger = df_malloc(l->cap * sizeof *bigger);
        if (l->n) memcpy(bigger, l->v, l->n * sizeof *bigger);
        df_free(l->v);
        l->v = bigger;
    }
    size_t len = strlen(path) + 1;
    l->v[l->n] = df_malloc(len);
    memcpy(l->v[l->n++], path, len);
}

static void free_list(pathlist *l) {
    for (size_t i = 0; i < l->n; i++) df_free(l->v[i]);
    df_free(l->v);
    memset(l, 0, sizeof *l);
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

static int walk(pathlist *l, const char *dir, int depth) {
    DIR *dp = opendir(dir);
    if (!dp) return df_error("cannot open folder '%s': %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.') continue; /* ".", "..", hidden files such as macOS's "._x.png" */
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *path = df_malloc(len);
        snprintf(path, len, "%s/%s", dir, e->d_name);
        struct stat st, lst;
        if (stat(path, &st) == 0 && lstat(path, &lst) == 0) {
            if (S_ISDIR(st.st_mode) && !S_ISLNK(lst.st_mode)) {
                if (depth >= 64) rc = df_error("folders nested more than 64 deep under '%s'", dir);
                else rc = walk(l, path, depth + 1);
            } else if (S_ISREG(st.st_mode) && has_image_ext(e->d_name)) {
                push(l, path);
            }
        }
        df_free(path);
    }
    closedir(dp);
    return rc;
}

static int cmp_path(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ---- loading ---- */

/* Decodes file `path` into `out` (C x res x res, planar); 0 on success. */
static int load_one(uint8_t *out, const char *path, size_t res, size_t C) {
    uint8_t *img;
    size_t w, h, c;
    if (df_image_read(path, &img, &w, &h, &c) != 0) return -1;
    uint8_t *hwc = df_malloc(res * res * C);
    df_image_resize_crop(hwc, res, C, img, w, h, c);
    for (size_t p = 0; p < res * res; p++)
        for (size_t ch = 0; ch < C; ch++) out[ch * res * res + p] = hwc[p * C + ch];
    df_free(hwc);
    df_free(img);
    return 0;
}

int df_dataset_load_folder(df_dataset *d, const char *dir, int resolution, int channels) {
    memset(d, 0, sizeof *d);
    if (channels != 0 && channels != 1 && channels != 3)
        return df_error("channels must be 1 or 3 (0 for the default, 3), not %d", channels);
    pathlist files = {0};
    if (walk(&files, dir, 0) != 0) {
        free_list(&files);
        return -1;
    }
    if (files.n == 0) {
        free_list(&files);
        return df_error("no images in '%s': searched it and its subfolders for .png, .jpg and .jpeg files and "
                        "found none", dir);
    }
    if (resolution <= 0) {
        free_list(&files);
        return df_error("'%s' is a folder of images, which can have any size: pass --resolution (e.g. 32 or 64) "
                        "to resize and centre-crop them", dir);
    }
    qsort(files.v, files.n, sizeof *files.v, cmp_path);
    size_t res = (size_t)resolution, C = channels ? (size_t)channels : 3, per = C * res * res, n = files.n;
    uint8_t *pix = df_malloc(n * per);
    unsigned char *ok = df_calloc(n, 1);
#pragma omp parallel for schedule(dynamic, 8)
    for (size_t i = 0; i < n; i++) ok[i] = load_one(pix + i * per, files.v[i], res, C) == 0;
    size_t good = 0, first_bad = n;
    for (size_t i = 0; i < n; i++) {
        if (!ok[i]) {
            if (first_bad == n) first_bad = i;
            continue;
        }
        if (good != i) memmove(pix + good * per, pix + i * per, per);
        good++;
    }
    df_free(ok);
    if (first_bad < n) { /* the message of the first failure, decoded again on this thread */
        uint8_t *img;
        size_t w, h, c;
        if (df_image_read(files.v[first_bad], &img, &w, &h, &c) == 0) df_free(img);
    }
    if (good == 0) {
        df_error_wrap("no usable images in '%s': none of its %zu .png/.jpg/.jpeg files could be read; the first",
                      dir, n);
        df_free(pix);
        free_list(&files);
        return -1;
    }
    if (good < n) {
        fprintf(stderr, "diffuse: warning: skipped %zu of %zu image files under '%s' that could not be read; the "
                "first: %s\n", n - good, n, dir, df_errmsg());
        uint8_t *smaller = df_malloc(good * per);
        memcpy(smaller, pix, good * per);
        df_free(pix);
        pix = smaller;
    }
    free_list(&files);
    d->n = good, d->c = C, d->h = d->w = res, d->pixels = pix, d->skipped = n - good;
    snprintf(d->source, sizeof d->source, "%s", dir);
    return 0;
}
