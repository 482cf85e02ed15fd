/* optim.c: Adam/AdamW, clipping, warm-up, EMA. */
#include "nn/optim.h"

#include <math.h>
#include <string.h>

#include "base/base.h"

void df_adam_init(df_adam *a, size_t n, const df_adam_config *c) {
    memset(a, 0, sizeof *a);
    a->c = *c;
    a->n = n;
    a->m = df_calloc(n, sizeof(float));
    a->v = df_calloc(n, sizeof(float));
}

void df_adam_free(df_adam *a) {
    df_free(a->m);
    df_free(a->v);
    memset(a, 0, sizeof *a);
}

void df_adam_step(df_adam *a, float *w, const float *g, double lr) {
    /* w, g, m, v: (n) */
    a->step++;
    const float b1 = (float)a->c.beta1, b2 = (float)a->c.beta2, eps = (float)a->c.eps, wd = (float)a->c.weight_decay;
    const double bc1 = 1 - pow(a->c.beta1, (double)a->step), bc2 = 1 - pow(a->c.beta2, (double)a->step);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2), decay = (float)(1 - lr * a->c.weight_decay);
    float *m = a->m, *v = a->v;
    const int decoupled = a->c.decoupled;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < a->n; i++) {
        float gi = g[i];
        if (decoupled) w[i] *= decay;
        else if (wd != 0) gi += wd * w[i];
        m[i] = m[i] * b1 + (1 - b1) * gi; /* torch: lerp_(grad, 1 - beta1) */
        v[i] = v[i] * b2 + (1 - b2) * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        w[i] -= step_size * (m[i] / denom);
    }
}

/* Sum of squares of one block, in double, eight running sums (vectorised; a fixed order). */
DF_CLONES static double sumsq_block(const float *g, size_t n) {
    double s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
#pragma omp simd
        for (int l = 0; l < 8; l++) s[l] += (double)g[i + l] * g[i + l];
    for (; i < n; i++) s[0] += (double)g[i] * g[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* The norm from blocks of 2^16 values summed in order: the same bits at any thread count. */
double df_grad_norm(const float *g, size_t n) {
    enum { BLOCK = 1 << 16 };
    ptrdiff_t blocks = (ptrdiff_t)((n + BLOCK - 1) / BLOCK);
    double *part = df_malloc((size_t)(blocks ? blocks : 1) * sizeof(double)), s = 0;
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (ptrdiff_t b = 0; b < blocks; b++) {
        size_t i = (size_t)b * BLOCK;
        part[b] = sumsq_block(g + i, n - i < BLOCK ? n - i : BLOCK);
    }
    for (ptrdiff_t b = 0; b < blocks; b++) s += part[b];
    df_free(part);
    return sqrt(s);
}

double df_clip_grad_norm(float *g, size_t n, double max_norm) {
    double norm = df_grad_norm(g, n);
    if (max_norm > 0 && norm > max_norm && isfinite(norm)) {
        float coef = (float)(max_norm / (norm + 1e-6));
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
        for (size_t i = 0; i < n; i++) g[i] *= coef;
    }
    return norm;
}

double df_warmup_lr(double lr, uint64_t step, uint64_t warmup) {
    return step < warmup ? lr * (double)step / (double)warmup : lr;
}

double df_ema_decay(uint64_t k, double max_decay, double inv_gamma, double power) {
    if (k <= 1) return 0;
    double d = 1 - pow(1 + (double)(k - 1) / inv_gamma, -power);
    return d < max_decay ? d : max_decay;
}

void df_ema_update(float *ema, const float *w, size_t n, double decay) {
    const float one_minus = (float)(1 - decay);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) ema[i] -= one_minus * (ema[i] - w[i]);
}
