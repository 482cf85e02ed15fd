/* fid_features.c: FID statistics of image sources through the classifier (see fid_features.h). */
#include "eval/fid_features.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "base/progress.h"
#include "io/file.h"

#define FEAT_BATCH 256

static int exists(const char *path, int want_dir) {
    struct stat st;
    return stat(path, &st) == 0 && (want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
}

int df_fid_default_features(char *buf, size_t cap) {
    const char *env = getenv("DIFFUSE_FID_FEATURES");
    if (env && env[0]) {
        snprintf(buf, cap, "%s", env);
        if (!exists(buf, 1)) return df_error("DIFFUSE_FID_FEATURES=%s is not a folder", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        char path[PATH_MAX + 64], real[PATH_MAX];
        snprintf(path, sizeof path, "%s/../models/fid-fashion-mnist", exe);
        if (exists(path, 1)) {
            snprintf(buf, cap, "%s", realpath(path, real) ? real : path);
            return 0;
        }
    }
    snprintf(buf, cap, "models/fid-fashion-mnist");
    if (exists(buf, 1)) return 0;
    return df_error("no FID feature network found (looked for models/fid-fashion-mnist beside the binary and in "
                    "the working directory); pass --features DIR, or train one with `diffuse classifier`");
}

/* ---- statistics ---- */

static int check_shape(const df_classifier *net, size_t c, size_t h, size_t w, const char *what) {
    const df_clf_config *k = &net->cfg;
    if ((int)c != k->in_channels || (int)h != k->resolution || (int)w != k->resolution)
        return df_error("%s holds %zux%zux%zu images; the FID feature network (trained on %s) takes %dx%dx%d. "
                        "(FID of other image sizes needs a feature network trained on such images.)",
                        what, h, w, c, k->trained_on[0] ? k->trained_on : "?", k->resolution, k->resolution,
                        k->in_channels);
    return 0;
}

/* Runs batches of images (a callback fills each) through the network into an accumulator. */
typedef void (*fill_fn)(const void *src, float *x, size_t i, size_t b);

static int stats_of(df_classifier *net, const void *src, fill_fn fill, size_t n, const char *label,
                    df_fid_stats *out) {
    memset(out, 0, sizeof *out);
    if (n < 2) return df_error("FID needs at least 2 images, got %zu", n);
    const df_clf_config *k = &net->cfg;
    size_t per = (size_t)k->in_channels * (size_t)k->resolution * (size_t)k->resolution, D = (size_t)k->hidden;
    float *x = df_malloc(FEAT_BATCH * per * sizeof(float)), *f = df_malloc(FEAT_BATCH * D * sizeof(float));
    df_fid_acc acc;
    df_fid_acc_init(&acc, D);
    df_progress bar;
    if (label) df_progress_init(&bar, label, n, 0, "img");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += FEAT_BATCH) {
        size_t b = n - i < FEAT_BATCH ? n - i : FEAT_BATCH;
        fill(src, x, i, b);
        df_classifier_features(net, f, x, b);
        rc = df_fid_acc_add(&acc, f, b);
        if (label) df_progress_update(&bar, i + b, (double)(i + b), "");
    }
    if (label) df_progress_end(&bar, n, (double)n, "");
    if (rc == 0) rc = df_fid_acc_finish(&acc, out);
    df_fid_acc_free(&acc);
    df_free(x), df_free(f);
    return rc;
}

typedef struct {
    const float *x;
    size_t per;
} float_src;

static void fill_floats(const void *src, float *x, size_t i, size_t b) {
    const float_src *s = src;
    memcpy(x, s->x + i * s->per, b * s->per * sizeof(float));
}

static void fill_dataset(const void *src, float *x, size_t i, size_t b) {
    const df_dataset *d = src;
    size_t per = d->c * d->h * d->w;
    const uint8_t *p = d->pixels + i * per;
    for (size_t k = 0; k < b * per; k++) x[k] = (float)p[k] / 127.5f - 1.0f;
}

int df_fid_stats_images(df_classifier *net, const float *x, size_t n, size_t c, size_t h, size_t w,
                        const char *label, df_fid_stats *out) {
    memset(out, 0, sizeof *out);
    if (check_shape(net, c, h, w, "the sample")) return -1;
    const df_clf_config *k = &net->cfg;
    float_src s = {x, (size_t)k->in_channels * (size_t)k->resolution * (size_t)k->resolution};
    return stats_of(net, &s, fill_floats, n, label, out);
}

int df_fid_stats_dataset(df_classifier *net, const df_dataset *d, const char *label, df_fid_stats *out) {
    memset(out, 0, sizeof *out);
    if (check_shape(net, d->c, d->h, d->w, d->source)) return -1;
    return stats_of(net, d, fill_dataset, d->n, label, out);
}

/* ---- sources ---- */

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A fingerprint of the network's weights (FNV-1a over their bytes). */
static uint64_t weights_hash(const df_classifier *net) {
    const unsigned char *p = (const unsigned char *)net->params.data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < net->params.total * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int is_named_dataset(const char *spec) {
    static const char *const names[] = {"fashion-mnist", "fashion-mnist-test", "mnist", "mnist-test"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(spec, names[i])) return !exists(spec, 0) && !exists(spec, 1);
    return 0;
}

int df_fid_stats_source(df_classifier *net, const char *net_dir, const char *spec, const char *data_dir,
                        df_fid_stats *out, char *what, size_t cap) {
    memset(out, 0, sizeof *out);
    if (ends_with(spec, ".npz")) {
        if (df_fid_stats_load(spec, out)) return -1;
        if (out->dim != (size_t)net->cfg.hidden) {
            df_fid_stats_free(out);
            return df_error("%s holds statistics of %zu features; this feature network has %d (were they made "
                            "with another network?)", spec, out->dim, net->cfg.hidden);
        }
        snprintf(what, cap, "%s (statistics of %llu images)", spec, (unsigned long long)out->n);
        return 0;
    }
    char cache[4096] = "";
    int named = is_named_dataset(spec) && net_dir && !(data_dir && data_dir[0]);
    if (named) {
        snprintf(cache, sizeof cache, "%s/stats/%s-%016llx.npz", net_dir, spec, (unsigned long long)weights_hash(net));
        if (exists(cache, 0) && df_fid_stats_load(cache, out) == 0 && out->dim == (size_t)net->cfg.hidden) {
            snprintf(what, cap, "%s (%llu images, cached in %s)", spec, (unsigned long long)out->n, cache);
            return 0;
        }
        df_fid_stats_free(out);
    }
    df_dataset d = {0};
    int folder = exists(spec, 1);
    if (df_dataset_load(&d, spec, data_dir, folder ? net->cfg.resolution : 0, folder ? net->cfg.in_channels : 0))
        return -1;
    char label[48];
    snprintf(label, sizeof label, "features %.30s", spec);
    int rc = df_fid_stats_dataset(net, &d, label, out);
    if (rc == 0) snprintf(what, cap, "%s (%zu images)", spec, d.n);
    df_dataset_free(&d);
    if (rc == 0 && named) { /* a cache that cannot be written is not an error: the numbers are right anyway */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/stats", net_dir);
        if (df_mkdirs(dir) == 0 && df_fid_stats_save(cache, out) == 0)
            snprintf(what + strlen(what), cap - strlen(what), ", cached in %s", cache);
    }
    return rc;
}
