/* embed.c: the sinusoidal timestep embedding of diffusers (embeddings.get_timestep_embedding). */
#include "kernels.h"

#include <math.h>

#include "base/base.h"

/* ---- torch's float32 exp ---- */

/* exp(d) exactly as PyTorch computes it on CPU for float32 tensors: SLEEF's expf_u10 (Cody-Waite reduction
 * by ln 2, a degree-6 polynomial, fused multiply-adds), which is within 1 ulp but not correctly rounded.
 * It differs from glibc's expf in about 1 frequency in 10, and a 1-ulp change of a frequency moves
 * sin(t f) by up to 6e-5 at t = 999; reproducing it makes the embedding agree with torch to the rounding of
 * sin and cos (~1e-7). fmaf is exact with or without an FMA instruction. */
static float torch_expf(float d) {
    /* scalar -> scalar */
    float qf = rintf(d * 1.442695040888963407359924681001892137426645954152985934135449406931f);
    float s = fmaf(qf, -0.693145751953125f, d); /* d - q ln2, ln2 split in two parts */
    s = fmaf(qf, -1.428606765330187045e-06f, s);
    float u = 0.000198527617612853646278381f;
    u = fmaf(u, s, 0.00139304355252534151077271f);
    u = fmaf(u, s, 0.00833336077630519866943359f);
    u = fmaf(u, s, 0.0416664853692054748535156f);
    u = fmaf(u, s, 0.166666671633720397949219f);
    u = fmaf(u, s, 0.5f);
    u = 1.0f + fmaf(s * s, u, s);
    if (d < -104.0f) return 0.0f;
    if (d > 100.0f) return INFINITY;
    return ldexpf(u, (int)qf);
}

/* ---- embedding ---- */

/* timestep_embedding: out[n] = [sin(t[n] f_0..f_{half-1}), cos(t[n] f_0..f_{half-1})] with
 * f_i = exp(-ln(max_period) * i / (half - freq_shift)), half = dim / 2; [cos, sin] when flip_sin_to_cos;
 * a last zero column when dim is odd. Each step is rounded to float32 in torch's order (exponent, division,
 * exp, product) and exp is torch's own (above), so the result matches torch to the rounding of sin/cos.
 * Overwrites out (N, dim). */
void timestep_embedding(float *out, const float *t, size_t N, size_t dim, int flip_sin_to_cos, float freq_shift,
                        float max_period) {
    /* out (N, dim) <- t (N) */
    size_t half = dim / 2;
    DF_CHECK(half == 0 || (double)half != (double)freq_shift,
             "timestep_embedding: half dim %zu equals freq_shift (division by zero)", half);
    float neg_log = (float)(-log((double)max_period));        /* -math.log(max_period) as a float32 scalar */
    float denom = (float)((double)half - (double)freq_shift); /* half_dim - downscale_freq_shift */
    size_t sin_off = flip_sin_to_cos ? half : 0, cos_off = flip_sin_to_cos ? 0 : half;
    for (size_t i = 0; i < half; i++) {
        float e = neg_log * (float)i; /* exponent = -log(max_period) * arange(half) */
        e = e / denom;                /* exponent / (half_dim - downscale_freq_shift) */
        float f = torch_expf(e);
        for (size_t n = 0; n < N; n++) {
            float a = t[n] * f;
            out[n * dim + sin_off + i] = sinf(a);
            out[n * dim + cos_off + i] = cosf(a);
        }
    }
    if (dim % 2)
        for (size_t n = 0; n < N; n++) out[n * dim + dim - 1] = 0;
}

/* sinusoidal_embedding: out[n] = [sin(t[n] f_0..f_{half-1}), cos(t[n] f_0..f_{half-1})] with
 * f_i = exp(i * c), c = -(ln(10000) / (half - 1)) computed in double and rounded to float32 once, as
 * torch.arange(half) * -c promotes it; then i * c in float32, torch's exp, and t * f. Overwrites out (N, dim). */
void sinusoidal_embedding(float *out, const float *t, size_t N, size_t dim) {
    /* out (N, dim) <- t (N) */
    size_t half = dim / 2;
    DF_CHECK(dim % 2 == 0 && half >= 2, "sinusoidal_embedding: dim %zu must be even and at least 4", dim);
    float c = (float)(-(log(10000.0) / (double)(half - 1)));
    for (size_t i = 0; i < half; i++) {
        float f = torch_expf((float)i * c);
        for (size_t n = 0; n < N; n++) {
            float a = t[n] * f;
            out[n * dim + i] = sinf(a);
            out[n * dim + half + i] = cosf(a);
        }
    }
}
