/* sampler.c: DDIM sampling over a timestep sub-sequence. */
#include "diffusion/sampler.h"

#include <math.h>
#include <string.h>

#include "base/base.h"
#include "base/rng.h"

void df_initial_noise(float *x, size_t B, size_t D, uint64_t seed, uint64_t first_index) {
    for (size_t b = 0; b < B; b++)
        df_rng_normal(x + b * D, D, seed, df_stream(DF_STREAM_XT, (uint32_t)(first_index + b), 0), 0);
}

void df_timesteps_leading(int *taus, int S, int T, int offset) {
    int ratio = T / S;
    for (int i = 0; i < S; i++) taus[i] = (S - 1 - i) * ratio + offset;
}

void df_pred_x0_eps(float *x0, float *eps, const float *out, const float *x, double a, df_prediction p, size_t n) {
    const float sa = (float)sqrt(a), sb = (float)sqrt(1 - a);
    for (size_t i = 0; i < n; i++) {
        float o = out[i], xi = x[i];
        if (p == DF_PRED_EPSILON) x0[i] = (xi - sb * o) / sa, eps[i] = o;
        else if (p == DF_PRED_SAMPLE) x0[i] = o, eps[i] = (xi - sa * o) / sb;
        else x0[i] = sa * xi - sb * o, eps[i] = sa * o + sb * xi;
    }
}

void df_ddim_sample(float *x, size_t B, size_t D, const df_schedule *s, const int *taus, int S, double eta,
                    uint64_t seed, uint64_t first_index, df_model_fn model, void *ctx, df_step_fn on_step,
                    void *step_ctx) {
    size_t n = B * D;
    float *out = df_malloc(n * sizeof(float)), *x0 = df_malloc(n * sizeof(float)), *eps = df_malloc(n * sizeof(float));
    float *t = df_malloc(B * sizeof(float)), *z = df_malloc(D * sizeof(float));
    for (int i = 0; i < S; i++) {
        int ti = taus[i];
        double a = s->abar[ti], ap = i + 1 < S ? s->abar[taus[i + 1]] : (s->set_alpha_to_one ? 1.0 : s->abar[0]);
        for (size_t b = 0; b < B; b++) t[b] = (float)ti;
        model(ctx, out, x, t, B);
        df_pred_x0_eps(x0, eps, out, x, a, s->prediction, n);
        if (s->clip_sample) {
            float r = (float)s->clip_sample_range;
            for (size_t k = 0; k < n; k++) x0[k] = x0[k] < -r ? -r : x0[k] > r ? r : x0[k];
        }
        double var = (1 - ap) / (1 - a) * (1 - a / ap), sd = eta * sqrt(var > 0 ? var : 0);
        float ca = (float)sqrt(ap), cd = (float)sqrt(fmax(1 - ap - sd * sd, 0.0));
        for (size_t b = 0; b < B; b++) {
            float *xb = x + b * D;
            const float *x0b = x0 + b * D, *eb = eps + b * D;
            if (sd > 0) df_rng_normal(z, D, seed, df_stream(DF_STREAM_STEP, (uint32_t)(first_index + b), (uint32_t)i), 0);
            for (size_t k = 0; k < D; k++) xb[k] = ca * x0b[k] + cd * eb[k] + (sd > 0 ? (float)sd * z[k] : 0.0f);
        }
        if (on_step) on_step(step_ctx, i + 1, S);
    }
    df_free(out), df_free(x0), df_free(eps), df_free(t), df_free(z);
}
