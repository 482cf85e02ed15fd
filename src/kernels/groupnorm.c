/* groupnorm.c: group normalisation (torch.nn.GroupNorm) over (B, C, HW) activations.
 *
 * Group g of image b holds channels [g*C/G, (g+1)*C/G) and all their HW pixels, n = C/G * HW values.
 * mean and the biased variance are computed per group in double (two passes); forward saves mean and
 * rstd = 1/sqrt(var + eps) as floats, and backward uses exactly those saved values.
 */
#include "kernels.h"

#include "vmath.h"

#include <math.h>

#include "base/base.h"

/* ---- forward ---- */

/* ---- per-channel pieces (vectorised: float sums within a channel, channels combined in double) ---- */

DF_CLONES static float ch_sum(const float *x, size_t n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

DF_CLONES static float ch_sumsq(const float *x, size_t n, float m) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return s;
}

DF_CLONES static void ch_norm(float *y, const float *x, size_t n, float m, float r, float ga, float be) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] = (x[i] - m) * r * ga + be;
}

/* sum of g and of g * xhat over a channel */
DF_CLONES static void ch_dots(const float *g, const float *x, size_t n, float m, float r, float *sg, float *sgx) {
    float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (size_t i = 0; i < n; i++) {
        a += g[i];
        b += g[i] * ((x[i] - m) * r);
    }
    *sg = a, *sgx = b;
}

DF_CLONES static void ch_dx(float *dx, const float *g, const float *x, size_t n, float m, float r, float ga,
                            float m1, float m2) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) dx[i] += r * (g[i] * ga - m1 - ((x[i] - m) * r) * m2);
}

/* y = silu((x - m) * r * ga + be) over a channel */
DF_CLONES static void ch_norm_silu(float *y, const float *x, size_t n, float m, float r, float ga, float be) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float t = (x[i] - m) * r * ga + be;
        y[i] = t / (1.0f + df_vexpf(-t));
    }
}

/* mean and rstd of one group of cg channels of HW values (two passes, channels combined in double) */
static void group_stats(float *mean, float *rstd, const float *x, size_t cg, size_t HW, float eps) {
    size_t n = cg * HW;
    double s = 0, ss = 0;
    for (size_t c = 0; c < cg; c++) s += ch_sum(x + c * HW, HW);
    double m = s / (double)n;
    for (size_t c = 0; c < cg; c++) ss += ch_sumsq(x + c * HW, HW, (float)m);
    *mean = (float)m;
    *rstd = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
}

/* One group bg (image bg / G) of normalise. */
static void normalise_group(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                            const float *beta, size_t G, size_t cg, size_t HW, float eps, int silu, size_t bg) {
    size_t n = cg * HW, c0 = (bg % G) * cg;
    const float *x = in + bg * n;
    float *y = out + bg * n;
    if (eps >= 0) group_stats(&mean[bg], &rstd[bg], x, cg, HW, eps);
    for (size_t c = 0; c < cg; c++)
        (silu ? ch_norm_silu : ch_norm)(y + c * HW, x + c * HW, HW, mean[bg], rstd[bg], gamma ? gamma[c0 + c] : 1.0f,
                                        beta ? beta[c0 + c] : 0.0f);
}

/* Group norm, then SiLU when silu; with eps >= 0 the statistics are computed (and written to mean, rstd),
 * else read from them. */
/* Values above which the forward splits its groups over threads. At batch 1 the input was written by the
 * previous convolution's threads (by output channel, the same halves a static split of groups takes), so one
 * thread reading all of it waits on the other core's cache: 128 x 14 x 14 (25088) on 2 threads went 0.13 ->
 * 0.09 ms (with SiLU) and 0.11 -> 0.07 in parallel; 128 x 7 x 7 (6272) gained nothing (0.11 -> 0.12). */
#ifndef GN_PARALLEL_MIN
#define GN_PARALLEL_MIN (1 << 14)
#endif

static void normalise(float *out, float *mean, float *rstd, const float *in, const float *gamma, const float *beta,
                      size_t B, size_t C, size_t HW, size_t G, float eps, int silu) {
    DF_CHECK(G > 0 && C % G == 0, "groupnorm: %zu channels do not split into %zu groups", C, G);
    ptrdiff_t groups = (ptrdiff_t)(B * G);
    DF_PARALLEL_FOR_IF(B * C * HW > GN_PARALLEL_MIN, "omp parallel for schedule(static)",
                       for (ptrdiff_t bg = 0; bg < groups; bg++)
                           normalise_group(out, mean, rstd, in, gamma, beta, G, C / G, HW, eps, silu, (size_t)bg););
}

/* groupnorm_forward: out = (in - mean) * rstd * gamma[c] + beta[c] (gamma, beta NULL: 1 and 0).
 * Writes out, mean (B, G), rstd (B, G). C must be a multiple of G. */
void groupnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                       const float *beta, size_t B, size_t C, size_t HW, size_t G, float eps) {
    /* out (B, C, HW) = norm(in (B, C, HW)) over (B, G) groups; mean, rstd (B, G) */
    DF_CHECK(eps >= 0, "groupnorm: eps %g < 0", (double)eps);
    normalise(out, mean, rstd, in, gamma, beta, B, C, HW, G, eps, 0);
}

/* ---- backward ---- */

/* dgamma[c], dbeta[c] += the per-image sums part[b][c] = (sum dout * xhat, sum dout), added in image order. */
static void param_grads(float *dgamma, float *dbeta, const float *part, size_t B, size_t C) {
    for (size_t c = 0; c < C && (dgamma || dbeta); c++) {
        double sg = 0, sb = 0;
        for (size_t b = 0; b < B; b++) sg += part[2 * (b * C + c)], sb += part[2 * (b * C + c) + 1];
        if (dgamma) dgamma[c] += (float)sg;
        if (dbeta) dbeta[c] += (float)sb;
    }
}

/* groupnorm_backward: with xhat = (in - mean) * rstd and dxhat = dout * gamma[c], per group of n values
 *   din   += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
 *   dgamma[c] += sum over b, pixels of dout * xhat,   dbeta[c] += sum over b, pixels of dout.
 * gamma NULL means 1 (and then dgamma, dbeta are normally NULL too). NULL gradients are skipped. */
void groupnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                        const float *mean, const float *rstd, const float *gamma, size_t B, size_t C, size_t HW,
                        size_t G) {
    /* din (B, C, HW), dgamma (C), dbeta (C) += from dout (B, C, HW), saved mean, rstd (B, G) */
    DF_CHECK(G > 0 && C % G == 0, "groupnorm: %zu channels do not split into %zu groups", C, G);
    size_t cg = C / G, n = cg * HW;
    float *part = df_scratch(1, 2 * B * C); /* per image and channel: sum dout * xhat, sum dout */
    ptrdiff_t groups = (ptrdiff_t)(B * G);
    /* one pass over the data for both: each channel's sums serve dgamma and dbeta (added in image order
     * below) and the group's din */
#pragma omp parallel for schedule(static) if (B * C * HW > (1 << 15))
    for (ptrdiff_t bg = 0; bg < groups; bg++) {
        const float *x = in + (size_t)bg * n, *g = dout + (size_t)bg * n;
        float m = mean[bg], r = rstd[bg];
        size_t c0 = ((size_t)bg % G) * cg, b = (size_t)bg / G;
        double s1 = 0, s2 = 0; /* sum dxhat, sum dxhat * xhat, dxhat = dout * gamma */
        for (size_t c = 0; c < cg; c++) {
            float ga = gamma ? gamma[c0 + c] : 1.0f, a, gx;
            ch_dots(g + c * HW, x + c * HW, HW, m, r, &a, &gx);
            part[2 * (b * C + c0 + c)] = gx, part[2 * (b * C + c0 + c) + 1] = a;
            s1 += (double)ga * a, s2 += (double)ga * gx;
        }
        if (!din) continue;
        float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
        for (size_t c = 0; c < cg; c++)
            ch_dx(din + (size_t)bg * n + c * HW, g + c * HW, x + c * HW, HW, m, r, gamma ? gamma[c0 + c] : 1.0f,
                  m1, m2);
    }
    param_grads(dgamma, dbeta, part, B, C);
}

/* ---- group norm then SiLU, fused ---- */

/* Over a channel: gs = dout * silu'(t) with t the group norm's output recomputed from x, and the sums of gs
 * and of gs * xhat. */
DF_CLONES static void ch_silu_grad(float *gs, const float *g, const float *x, size_t n, float m, float r, float ga,
                                   float be, float *sg, float *sgx) {
    float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (size_t i = 0; i < n; i++) {
        float xh = (x[i] - m) * r, t = xh * ga + be;
        float s = 1.0f / (1.0f + df_vexpf(-t));
        float d = g[i] * s * (1.0f + t * (1.0f - s));
        gs[i] = d;
        a += d;
        b += d * xh;
    }
    *sg = a, *sgx = b;
}

void groupnorm_silu_apply(float *out, const float *in, const float *mean, const float *rstd, const float *gamma,
                          const float *beta, size_t B, size_t C, size_t HW, size_t G) {
    /* out (B, C, HW) = silu(norm(in)) with the saved mean, rstd (B, G) */
    normalise(out, (float *)mean, (float *)rstd, in, gamma, beta, B, C, HW, G, -1.0f, 1); /* read only */
}

void groupnorm_silu_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                            const float *beta, size_t B, size_t C, size_t HW, size_t G, float eps) {
    /* out (B, C, HW) = silu(norm(in (B, C, HW))); mean, rstd (B, G) */
    DF_CHECK(eps >= 0, "groupnorm: eps %g < 0", (double)eps);
    normalise(out, mean, rstd, in, gamma, beta, B, C, HW, G, eps, 1);
}

void groupnorm_silu_backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                             const float *mean, const float *rstd, const float *gamma, const float *beta, size_t B,
                             size_t C, size_t HW, size_t G) {
    /* din (B, C, HW), dgamma (C), dbeta (C) += from dout (B, C, HW) of silu(norm(in)), saved mean, rstd (B, G) */
    DF_CHECK(G > 0 && C % G == 0, "groupnorm: %zu channels do not split into %zu groups", C, G);
    size_t cg = C / G, n = cg * HW;
    float *part = df_scratch(1, 2 * B * C); /* per image and channel: sum gs * xhat, sum gs */
    ptrdiff_t groups = (ptrdiff_t)(B * G);
#pragma omp parallel for schedule(static) if (B * C * HW > (1 << 15))
    for (ptrdiff_t bg = 0; bg < groups; bg++) {
        const float *x = in + (size_t)bg * n, *g = dout + (size_t)bg * n;
        float *gs = df_scratch(0, n);
        float m = mean[bg], r = rstd[bg];
        size_t c0 = ((size_t)bg % G) * cg, b = (size_t)bg / G;
        double s1 = 0, s2 = 0; /* sum dxhat, sum dxhat * xhat, dxhat = gs * gamma */
        for (size_t c = 0; c < cg; c++) {
            float ga = gamma ? gamma[c0 + c] : 1.0f, a, gx;
            ch_silu_grad(gs + c * HW, g + c * HW, x + c * HW, HW, m, r, ga, beta ? beta[c0 + c] : 0.0f, &a, &gx);
            part[2 * (b * C + c0 + c)] = gx, part[2 * (b * C + c0 + c) + 1] = a;
            s1 += (double)ga * a, s2 += (double)ga * gx;
        }
        if (!din) continue;
        float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
        for (size_t c = 0; c < cg; c++)
            ch_dx(din + (size_t)bg * n + c * HW, gs + c * HW, x + c * HW, HW, m, r, gamma ? gamma[c0 + c] : 1.0f,
                  m1, m2);
    }
    param_grads(dgamma, dbeta, part, B, C);
}
