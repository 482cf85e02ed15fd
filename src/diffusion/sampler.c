/* sampler.c: timestep sequences, DDPM and DDIM steps and chains, DDIM inversion, slerp. */
#include "diffusion/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/rng.h"

/* ---- timestep sequences ---- */

static const char *const spacing_names[] = {"uniform", "quad", "leading", "trailing", "linspace"};

int df_spacing_parse(df_spacing *sp, const char *name) {
    for (int i = 0; i < 5; i++)
        if (!strcmp(name, spacing_names[i])) return *sp = (df_spacing)i, 0;
    return df_error("unknown timestep spacing '%s' (uniform, quad, leading, trailing, linspace)", name);
}

const char *df_spacing_name(df_spacing sp) { return spacing_names[sp]; }

int df_timesteps(int *taus, int cap, int S, int T, df_spacing sp, int steps_offset) {
    if (S < 1 || S > T) return df_error("the number of steps must be in 1..%d, got %d", T, S);
    if (T > 100000) return df_error("too many training timesteps (%d)", T);
    int n = 0, *asc = df_malloc((size_t)(T + 2) * sizeof(int));
    switch (sp) {
    case DF_SPACING_UNIFORM: {
        int skip = T / S;
        for (int t = 0; t < T; t += skip) asc[n++] = t;
    } break;
    case DF_SPACING_QUAD: {
        double top = sqrt((double)T * 0.8), step = S > 1 ? top / (S - 1) : 0; /* as np.linspace computes it */
        for (int i = 0; i < S; i++) {
            double v = i == S - 1 && S > 1 ? top : i * step;
            asc[n++] = (int)(v * v);
        }
    } break;
    case DF_SPACING_LEADING: {
        int ratio = T / S;
        for (int i = 0; i < S; i++) asc[n++] = i * ratio + steps_offset;
    } break;
    case DF_SPACING_TRAILING: { /* np.round(np.arange(T, 0, -T/S)) - 1, ascending */
        double ratio = (double)T / S;
        int m = (int)ceil((0.0 - T) / -ratio); /* the length numpy gives np.arange(T, 0, -ratio) */
        double d = ((double)T - ratio) - (double)T; /* np.arange's element i is start + i * ((start + step) - start) */
        for (int i = m - 1; i >= 0; i--) asc[n++] = (int)nearbyint((double)T + i * d) - 1;
    } break;
    case DF_SPACING_LINSPACE:
        for (int i = 0; i < S; i++) asc[n++] = (int)nearbyint(S > 1 ? (double)(T - 1) * i / (S - 1) : 0);
        break;
    }
    int rc = n;
    if (n > cap) rc = df_error("timestep sequence of %d entries exceeds capacity %d", n, cap);
    for (int i = 0; i < n && rc >= 0; i++) {
        int t = asc[n - 1 - i];
        if (t < 0 || t >= T) rc = df_error("timestep %d outside 0..%d (steps_offset %d?)", t, T - 1, steps_offset);
        else taus[i] = t;
    }
    df_free(asc);
    return rc;
}


/* ---- one step ---- */

void df_pred_x0_eps(float *x0, float *eps, const float *out, const float *x, double a, df_prediction p, size_t n) {
    const float sa = (float)sqrt(a), sb = (float)sqrt(1 - a);
    for (size_t i = 0; i < n; i++) {
        float o = out[i], xi = x[i];
        if (p == DF_PRED_EPSILON) x0[i] = (xi - sb * o) / sa, eps[i] = o;
        else if (p == DF_PRED_SAMPLE) x0[i] = o, eps[i] = (xi - sa * o) / sb;
        else x0[i] = sa * xi - sb * o, eps[i] = sa * o + sb * xi;
    }
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void df_process_x0(float *x0, size_t B, size_t D, const df_schedule *s, int clip) {
    if (s->thresholding) { /* Imagen: s = quantile(|x0|, ratio) clamped to [1, max]; x0 = clamp(x0, -s, s) / s */
        float *v = df_malloc(D * sizeof(float));
        for (size_t b = 0; b < B; b++) {
            float *xb = x0 + b * D;
            for (size_t i = 0; i < D; i++) v[i] = fabsf(xb[i]);
            qsort(v, D, sizeof(float), cmp_float);
            double pos = s->dynamic_thresholding_ratio * (double)(D - 1), lo = floor(pos);
            size_t k = (size_t)lo;
            double q = k + 1 < D ? v[k] + (pos - lo) * (v[k + 1] - v[k]) : v[k];
            float th = (float)fmin(fmax(q, 1.0), s->sample_max_value);
            for (size_t i = 0; i < D; i++) xb[i] = fminf(fmaxf(xb[i], -th), th) / th;
        }
        df_free(v);
    } else if (clip) {
        float r = (float)s->clip_sample_range;
        for (size_t i = 0; i < B * D; i++) x0[i] = fminf(fmaxf(x0[i], -r), r);
    }
}

double df_abar_at(const df_schedule *s, int t, int final_is_one) {
    if (t >= 0) return s->abar[t];
    return final_is_one ? 1.0 : s->abar[0];
}

void df_ddpm_step(float *x_prev, float *x0_out, const float *x, const float *model_out, int t, int t_prev,
                  const float *z, size_t B, size_t D, const df_schedule *s, int clip) {
    /* x_prev (B, D) = mean(x, x0) + std z */
    size_t n = B * D;
    double a = s->abar[t], ap = df_abar_at(s, t_prev, 1);
    double alpha = a / ap, beta = 1 - alpha; /* the (respaced) step's alpha and beta */
    float *x0 = df_malloc(n * sizeof(float)), *eps = df_malloc(n * sizeof(float));
    df_pred_x0_eps(x0, eps, model_out, x, a, s->prediction, n);
    df_process_x0(x0, B, D, s, clip);
    const float c0 = (float)(sqrt(ap) * beta / (1 - a)), c1 = (float)(sqrt(alpha) * (1 - ap) / (1 - a));
    double var = s->variance_fixed_large ? beta : fmax((1 - ap) / (1 - a) * beta, 1e-20);
    const float sd = (float)sqrt(var);
    for (size_t i = 0; i < n; i++) x_prev[i] = c0 * x0[i] + c1 * x[i] + (t > 0 && t_prev >= 0 && z ? sd * z[i] : 0.0f);
    if (x0_out) memcpy(x0_out, x0, n * sizeof(float));
    df_free(x0), df_free(eps);
}

void df_ddim_step(float *x_prev, float *x0_out, const float *x, const float *model_out, int t, int t_prev,
                  double eta, const float *z, size_t B, size_t D, const df_schedule *s, int clip) {
    /* x_prev (B, D) = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z */
    size_t n = B * D;
    double a = s->abar[t], ap = df_abar_at(s, t_prev, s->set_alpha_to_one);
    float *x0 = df_malloc(n * sizeof(float)), *eps = df_malloc(n * sizeof(float));
    df_pred_x0_eps(x0, eps, model_out, x, a, s->prediction, n);
    df_process_x0(x0, B, D, s, clip);
    double var = (1 - ap) / (1 - a) * (1 - a / ap), sd = eta * sqrt(fmax(var, 0));
    const float ca = (float)sqrt(ap), cd = (float)sqrt(fmax(1 - ap - sd * sd, 0)), fs = (float)sd;
    for (size_t i = 0; i < n; i++) x_prev[i] = ca * x0[i] + cd * eps[i] + (sd > 0 && z ? fs * z[i] : 0.0f);
    if (x0_out) memcpy(x0_out, x0, n * sizeof(float));
    df_free(x0), df_free(eps);
}

/* ---- chains ---- */

void df_initial_noise(float *x, size_t B, size_t D, uint64_t seed, uint64_t first_index) {
    for (size_t b = 0; b < B; b++)
        df_rng_normal(x + b * D, D, seed, df_stream(DF_STREAM_XT, (uint32_t)(first_index + b), 0), 0);
}

void df_sample(float *x, size_t B, size_t D, const df_schedule *s, const df_sampler *sp, uint64_t first_index,
               df_model_fn model, void *ctx) {
    size_t n = B * D;
    float *out = df_malloc(n * sizeof(float)), *z = df_malloc(n * sizeof(float));
    float *x0 = df_malloc(n * sizeof(float)), *t = df_malloc(B * sizeof(float));
    int noisy = sp->kind == DF_SAMPLER_DDPM || sp->sigma_hat || sp->eta > 0;
    for (int i = 0; i < sp->S; i++) {
        int ti = sp->taus[i], tp = i + 1 < sp->S ? sp->taus[i + 1] : -1;
        for (size_t b = 0; b < B; b++) t[b] = (float)ti;
        model(ctx, out, x, t, B);
        if (noisy) /* every step draws its own noise (the last DDIM step has sigma > 0 without set_alpha_to_one) */
            for (size_t b = 0; b < B; b++)
                df_rng_normal(z + b * D, D, sp->seed, df_stream(DF_STREAM_STEP, (uint32_t)(first_index + b), (uint32_t)i), 0);
        if (sp->kind == DF_SAMPLER_DDPM) {
            df_ddpm_step(x, x0, x, out, ti, tp, z, B, D, s, sp->clip);
        } else if (sp->sigma_hat) { /* the respaced ancestral step with variance beta-hat = 1 - a / a_prev */
            df_schedule large = *s;
            large.variance_fixed_large = 1;
            df_ddpm_step(x, x0, x, out, ti, tp, z, B, D, &large, sp->clip);
        } else {
            df_ddim_step(x, x0, x, out, ti, tp, sp->eta, noisy ? z : NULL, B, D, s, sp->clip);
        }
        if (sp->record && sp->record[i] >= 0) {
            if (sp->traj) memcpy(sp->traj + (size_t)sp->record[i] * n, x, n * sizeof(float));
            if (sp->traj_x0) memcpy(sp->traj_x0 + (size_t)sp->record[i] * n, x0, n * sizeof(float));
        }
        if (sp->on_step) sp->on_step(sp->step_ctx, i + 1, sp->S);
    }
    df_free(out), df_free(z), df_free(x0), df_free(t);
}

void df_ddim_invert(float *x, size_t B, size_t D, const df_schedule *s, const int *taus, int S, df_model_fn model,
                    void *ctx, void (*on_step)(void *ctx, int i, int S), void *step_ctx) {
    size_t n = B * D;
    float *out = df_malloc(n * sizeof(float)), *x0 = df_malloc(n * sizeof(float)), *eps = df_malloc(n * sizeof(float));
    float *t = df_malloc(B * sizeof(float));
    double a_cur = 1.0;
    for (int i = S - 1; i >= 0; i--) { /* upwards: taus[S-1] first */
        int tn = taus[i];
        double a_next = s->abar[tn];
        for (size_t b = 0; b < B; b++) t[b] = (float)tn;
        model(ctx, out, x, t, B);
        /* eps from the model at its destination timestep; x0 from the current point */
        df_pred_x0_eps(x0, eps, out, x, a_next, s->prediction, n);
        const float ic = (float)(1 / sqrt(a_cur)), sc = (float)sqrt(1 - a_cur);
        const float na = (float)sqrt(a_next), nb = (float)sqrt(1 - a_next);
        for (size_t k = 0; k < n; k++) {
            float x0k = (x[k] - sc * eps[k]) * ic;
            x[k] = na * x0k + nb * eps[k];
        }
        a_cur = a_next;
        if (on_step) on_step(step_ctx, S - i, S);
    }
    df_free(out), df_free(x0), df_free(eps), df_free(t);
}

void df_slerp(float *out, const float *a, const float *b, size_t D, double w) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < D; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    double c = ab / sqrt(aa * bb + 1e-300), th = acos(fmax(-1.0, fmin(1.0, c)));
    double wa, wb;
    if (fabs(sin(th)) < 1e-6) wa = 1 - w, wb = w; /* nearly parallel: linear */
    else wa = sin((1 - w) * th) / sin(th), wb = sin(w * th) / sin(th);
    for (size_t i = 0; i < D; i++) out[i] = (float)(wa * a[i] + wb * b[i]);
}
