/* loader.c: the batch loader. Its order is a pure function of (seed, epoch, position), see dataset.h, so
 * saving (epoch, pos) is enough to resume exactly. */
#include <string.h>

#include "base/base.h"
#include "base/rng.h"
#include "data/dataset.h"

/* ---- the permutation of one epoch ---- */

static void shuffle(uint32_t *perm, size_t n, uint64_t seed, uint64_t epoch) {
    uint64_t stream = df_stream(DF_STREAM_SHUFFLE, (uint32_t)epoch, 0);
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        /* j uniform in [0, i]: the high 64 bits of a 64 x 64-bit product (Lemire), no modulo bias to speak of */
        uint64_t r = df_rng_u64(seed, stream, i);
        size_t j = (size_t)(((unsigned __int128)r * (uint64_t)(i + 1)) >> 64);
        uint32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
}

/* ---- the loader ---- */

void df_loader_init(df_loader *l, const df_dataset *d, uint64_t seed, int flip) {
    DF_CHECK(d && d->n > 0 && d->n <= UINT32_MAX, "df_loader_init: the dataset must hold 1 .. 2^32-1 images");
    memset(l, 0, sizeof *l);
    l->d = d, l->seed = seed, l->flip = flip;
    l->perm = df_malloc(d->n * sizeof *l->perm);
    shuffle(l->perm, d->n, seed, 0);
}

void df_loader_seek(df_loader *l, uint64_t epoch, uint64_t pos) {
    uint64_t n = l->d->n;
    epoch += pos / n, pos %= n;
    if (epoch != l->epoch) shuffle(l->perm, n, l->seed, epoch);
    l->epoch = epoch, l->pos = pos;
}

void df_loader_next_labeled(df_loader *l, float *x, int *y, size_t B) {
    const df_dataset *d = l->d;
    size_t c = d->c, h = d->h, w = d->w, per = c * h * w;
    DF_CHECK(!y || d->labels, "labels asked of a dataset without them");
    for (size_t b = 0; b < B; b++) {
        if (y) y[b] = d->labels[l->perm[l->pos]];
        const uint8_t *src = d->pixels + (size_t)l->perm[l->pos] * per;
        float *dst = x + b * per;
        uint64_t flip_stream = df_stream(DF_STREAM_FLIP, (uint32_t)l->epoch, 0);
        int mirror = l->flip && df_rng_uniform1(l->seed, flip_stream, l->pos) < 0.5f;
        for (size_t ch = 0; ch < c; ch++)
            for (size_t y = 0; y < h; y++) {
                const uint8_t *row = src + (ch * h + y) * w;
                float *out = dst + (ch * h + y) * w;
                if (mirror)
                    for (size_t i = 0; i < w; i++) out[i] = (float)row[w - 1 - i] / 127.5f - 1.0f;
                else
                    for (size_t i = 0; i < w; i++) out[i] = (float)row[i] / 127.5f - 1.0f;
            }
        if (++l->pos == d->n) {
            l->epoch++, l->pos = 0;
            shuffle(l->perm, d->n, l->seed, l->epoch);
        }
    }
}

void df_loader_next(df_loader *l, float *x, size_t B) { df_loader_next_labeled(l, x, NULL, B); }

void df_loader_free(df_loader *l) {
    df_free(l->perm);
    memset(l, 0, sizeof *l);
}
