/* batchnorm.c: batch normalisation (torch.nn.BatchNorm2d) over (B, C, HW) activations.
 *
 * Channel c is normalised over all its B * HW values (every image, every pixel), n = B * HW. Training mode
 * computes the mean and the biased variance per channel in double (two passes), saves mean and
 * rstd = 1/sqrt(var + eps) as floats for backward, and (optionally) moves the running statistics towards the
 * batch ones: run = (1 - momentum) run + momentum stat, with the UNBIASED variance var * n / (n - 1) for
 * running_var, as torch. Evaluation mode normalises with the running statistics instead.
 * The fast versions split the channels over OpenMP threads and vectorise each HW-long plane (float sums
 * within a plane, planes combined in double); the _ref versions are plain loops in double.
 */
#include "kernels.h"

#include "vmath.h"

#include <math.h>

#include "base/base.h"

/* work (elements) below which the loops stay on one thread */
#define BN_PARALLEL_MIN (1 << 15)

/* ---- per-plane pieces (vectorised) ---- */

DF_CLONES static float pl_sum(const float *x, size_t n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

DF_CLONES static float pl_sumsq(const float *x, size_t n, float m) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return s;
}

/* y = (x - m) * r * ga + be */
DF_CLONES static void pl_norm(float *y, const float *x, size_t n, float m, float r, float ga, float be) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] = (x[i] - m) * r * ga + be;
}

/* sum of g and of g * xhat over a plane, xhat = (x - m) * r */
DF_CLONES static void pl_dots(const float *g, const float *x, size_t n, float m, float r, float *sg, float *sgx) {
    float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (size_t i = 0; i < n; i++) {
        a += g[i];
        b += g[i] * ((x[i] - m) * r);
    }
    *sg = a, *sgx = b;
}

/* dx += r * (g * ga - m1 - xhat * m2) */
DF_CLONES static void pl_dx(float *dx, const float *g, const float *x, size_t n, float m, float r, float ga,
                            float m1, float m2) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) dx[i] += r * (g[i] * ga - m1 - ((x[i] - m) * r) * m2);
}

/* The running-statistics update of one channel (both versions use it, so they agree exactly). */
static void running_update(float *running_mean, float *running_var, size_t c, double m, double var, size_t n,
                           float momentum) {
    double unbiased = var * (double)n / (double)(n - 1);
    if (running_mean) running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + (double)momentum * m);
    if (running_var) running_var[c] = (float)((1.0 - momentum) * running_var[c] + (double)momentum * unbiased);
}

/* ---- forward ---- */

/* batchnorm_forward: training mode. out = (in - mean[c]) * rstd[c] * gamma[c] + beta[c] (gamma, beta NULL: 1
 * and 0), with the batch statistics of channel c. Writes out, mean (C), rstd (C); updates running_mean and
 * running_var (C) in place unless NULL. B * HW must exceed 1 (torch refuses it too). */
void batchnorm_forward(float *out, float *mean, float *rstd, float *running_mean, float *running_var,
                       const float *in, const float *gamma, const float *beta, size_t B, size_t C, size_t HW,
                       float momentum, float eps) {
    /* out (B, C, HW) = norm(in (B, C, HW)) per channel over (B, HW); mean, rstd, running_* (C) */
    size_t n = B * HW;
    DF_CHECK(n > 1, "batchnorm: training needs more than 1 value per channel, got B %zu x HW %zu", B, HW);
    ptrdiff_t Cs = (ptrdiff_t)C;
#pragma omp parallel for schedule(static) if (B * C * HW > BN_PARALLEL_MIN)
    for (ptrdiff_t c = 0; c < Cs; c++) {
        double s = 0, ss = 0;
        for (size_t b = 0; b < B; b++) s += pl_sum(in + (b * C + (size_t)c) * HW, HW);
        double m = s / (double)n;
        for (size_t b = 0; b < B; b++) ss += pl_sumsq(in + (b * C + (size_t)c) * HW, HW, (float)m);
        double var = ss / (double)n, r = 1.0 / sqrt(var + (double)eps);
        mean[c] = (float)m;
        rstd[c] = (float)r;
        running_update(running_mean, running_var, (size_t)c, m, var, n, momentum);
        float ga = gamma ? gamma[c] : 1.0f, be = beta ? beta[c] : 0.0f;
        for (size_t b = 0; b < B; b++) {
            size_t off = (b * C + (size_t)c) * HW;
            pl_norm(out + off, in + off, HW, (float)m, (float)r, ga, be);
        }
    }
}

/* batchnorm_forward_eval: evaluation mode. out = (in - running_mean[c]) / sqrt(running_var[c] + eps) *
 * gamma[c] + beta[c]; nothing is saved or updated. */
void batchnorm_forward_eval(float *out, const float *in, const float *running_mean, const float *running_var,
                            const float *gamma, const float *beta, size_t B, size_t C, size_t HW, float eps) {
    /* out (B, C, HW) = norm(in (B, C, HW)) with running_mean, running_var (C) */
    ptrdiff_t BC = (ptrdiff_t)(B * C);
#pragma omp parallel for schedule(static) if (B * C * HW > BN_PARALLEL_MIN)
    for (ptrdiff_t bc = 0; bc < BC; bc++) {
        size_t c = (size_t)bc % C;
        float r = (float)(1.0 / sqrt((double)running_var[c] + (double)eps));
        pl_norm(out + (size_t)bc * HW, in + (size_t)bc * HW, HW, running_mean[c], r, gamma ? gamma[c] : 1.0f,
                beta ? beta[c] : 0.0f);
    }
}

/* ---- backward ---- */

/* batchnorm_backward: training mode (the statistics depend on the input). With xhat = (in - mean) * rstd and
 * dxhat = dout * gamma[c], per channel over its n = B * HW values
 *   din   += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
 *   dgamma[c] += sum of dout * xhat,   dbeta[c] += sum of dout.
 * mean, rstd are the ones batchnorm_forward saved. gamma NULL means 1. NULL gradients are skipped. */
void batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                        const float *mean, const float *rstd, const float *gamma, size_t B, size_t C, size_t HW) {
    /* din (B, C, HW), dgamma (C), dbeta (C) += from dout (B, C, HW), saved mean, rstd (C) */
    size_t n = B * HW;
    ptrdiff_t Cs = (ptrdiff_t)C;
#pragma omp parallel for schedule(static) if (B * C * HW > BN_PARALLEL_MIN)
    for (ptrdiff_t c = 0; c < Cs; c++) {
        float m = mean[c], r = rstd[c], ga = gamma ? gamma[c] : 1.0f;
        double sg = 0, sgx = 0; /* sum dout, sum dout * xhat */
        for (size_t b = 0; b < B; b++) {
            size_t off = (b * C + (size_t)c) * HW;
            float a, gx;
            pl_dots(dout + off, in + off, HW, m, r, &a, &gx);
            sg += a, sgx += gx;
        }
        if (dgamma) dgamma[c] += (float)sgx;
        if (dbeta) dbeta[c] += (float)sg;
        if (!din) continue;
        float m1 = (float)((double)ga * sg / (double)n), m2 = (float)((double)ga * sgx / (double)n);
        for (size_t b = 0; b < B; b++) {
            size_t off = (b * C + (size_t)c) * HW;
            pl_dx(din + off, dout + off, in + off, HW, m, r, ga, m1, m2);
        }
    }
}

/* ---- reference ---- */

/* batchnorm_forward_ref: batchnorm_forward as plain loops in double. Same contract. */
void batchnorm_forward_ref(float *out, float *mean, float *rstd, float *running_mean, float *running_var,
                           const float *in, const float *gamma, const float *beta, size_t B, size_t C, size_t HW,
                           float momentum, float eps) {
    /* out (B, C, HW) = norm(in (B, C, HW)) per channel over (B, HW); mean, rstd, running_* (C) */
    size_t n = B * HW;
    DF_CHECK(n > 1, "batchnorm: training needs more than 1 value per channel, got B %zu x HW %zu", B, HW);
    for (size_t c = 0; c < C; c++) {
        double m = 0, var = 0;
        for (size_t b = 0; b < B; b++)
            for (size_t p = 0; p < HW; p++) m += in[(b * C + c) * HW + p];
        m /= (double)n;
        for (size_t b = 0; b < B; b++)
            for (size_t p = 0; p < HW; p++) {
                double d = in[(b * C + c) * HW + p] - m;
                var += d * d;
            }
        var /= (double)n;
        double r = 1.0 / sqrt(var + (double)eps);
        mean[c] = (float)m;
        rstd[c] = (float)r;
        running_update(running_mean, running_var, c, m, var, n, momentum);
        for (size_t b = 0; b < B; b++)
            for (size_t p = 0; p < HW; p++) {
                size_t i = (b * C + c) * HW + p;
                double y = (in[i] - m) * r;
                out[i] = (float)(y * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0));
            }
    }
}

/* batchnorm_forward_eval_ref: batchnorm_forward_eval in double. */
void batchnorm_forward_eval_ref(float *out, const float *in, const float *running_mean, const float *running_var,
                                const float *gamma, const float *beta, size_t B, size_t C, size_t HW, float eps) {
    /* out (B, C, HW) = norm(in (B, C, HW)) with running_mean, running_var (C) */
    for (size_t b = 0; b < B; b++)
        for (size_t c = 0; c < C; c++)
            for (size_t p = 0; p < HW; p++) {
                size_t i = (b * C + c) * HW + p;
                double y = (in[i] - (double)running_mean[c]) / sqrt((double)running_var[c] + (double)eps);
                out[i] = (float)(y * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0));
            }
}

/* batchnorm_backward_ref: batchnorm_backward with every sum in double. Same contract. */
void batchnorm_backward_ref(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                            const float *mean, const float *rstd, const float *gamma, size_t B, size_t C,
                            size_t HW) {
    /* din (B, C, HW), dgamma (C), dbeta (C) += from dout (B, C, HW), saved mean, rstd (C) */
    size_t n = B * HW;
    for (size_t c = 0; c < C; c++) {
        double m = mean[c], r = rstd[c], ga = gamma ? gamma[c] : 1.0;
        double sg = 0, sgx = 0;
        for (size_t b = 0; b < B; b++)
            for (size_t p = 0; p < HW; p++) {
                size_t i = (b * C + c) * HW + p;
                sg += dout[i];
                sgx += dout[i] * (in[i] - m) * r;
            }
        if (dgamma) dgamma[c] += (float)sgx;
        if (dbeta) dbeta[c] += (float)sg;
        if (!din) continue;
        double m1 = ga * sg / (double)n, m2 = ga * sgx / (double)n;
        for (size_t b = 0; b < B; b++)
            for (size_t p = 0; p < HW; p++) {
                size_t i = (b * C + c) * HW + p;
                din[i] += (float)(r * (dout[i] * ga - m1 - (in[i] - m) * r * m2));
            }
    }
}
