/* dropout.c: inverted dropout whose mask is a pure function of (seed, stream, element index), drawn from
 * the counter-based generator: backward can regenerate it (dropout_forward / dropout_backward) or read it
 * from a bit mask drawn once (dropout_mask, then dropout_apply / dropout_backward_mask: the same values). */
#include "kernels.h"

#include "base/base.h"
#include "base/rng.h"

#define DROP_CHUNK 1024 /* uniforms drawn per block (on the stack) */

/* dropout_forward: out[i] = 0 when uniform(seed, stream, i) < p, else in[i] / (1 - p). p == 0 copies in;
 * out may alias in. */
void dropout_forward(float *out, const float *in, size_t n, float p, uint64_t seed, uint64_t stream) {
    /* out (n) = mask (n) * in (n) / (1 - p) */
    DF_CHECK(p >= 0 && p <= 1, "dropout: probability %g outside [0, 1]", (double)p);
    if (p == 0) {
        for (size_t i = 0; i < n; i++) out[i] = in[i];
        return;
    }
    float keep_scale = p < 1 ? 1.0f / (1.0f - p) : 0.0f;
#pragma omp parallel for schedule(static) if (n > 4 * DROP_CHUNK)
    for (size_t c0 = 0; c0 < n; c0 += DROP_CHUNK) {
        float u[DROP_CHUNK];
        size_t m = n - c0 < DROP_CHUNK ? n - c0 : DROP_CHUNK;
        df_rng_uniform(u, m, seed, stream, c0);
        for (size_t i = 0; i < m; i++) out[c0 + i] = u[i] < p ? 0.0f : in[c0 + i] * keep_scale;
    }
}

/* dropout_backward: din[i] += dout[i] / (1 - p) where element i was kept in forward (same seed, stream). */
void dropout_backward(float *din, const float *dout, size_t n, float p, uint64_t seed, uint64_t stream) {
    /* din (n) += mask (n) * dout (n) / (1 - p) */
    DF_CHECK(p >= 0 && p <= 1, "dropout: probability %g outside [0, 1]", (double)p);
    if (p == 0) {
        for (size_t i = 0; i < n; i++) din[i] += dout[i];
        return;
    }
    float keep_scale = p < 1 ? 1.0f / (1.0f - p) : 0.0f;
#pragma omp parallel for schedule(static) if (n > 4 * DROP_CHUNK)
    for (size_t c0 = 0; c0 < n; c0 += DROP_CHUNK) {
        float u[DROP_CHUNK];
        size_t m = n - c0 < DROP_CHUNK ? n - c0 : DROP_CHUNK;
        df_rng_uniform(u, m, seed, stream, c0);
        for (size_t i = 0; i < m; i++)
            if (u[i] >= p) din[c0 + i] += dout[c0 + i] * keep_scale;
    }
}

/* dropout_mask: bit i % 32 of keep[i / 32] = element i is kept (uniform(seed, stream, i) >= p); the last
 * word's unused bits are 0. */
void dropout_mask(uint32_t *keep, size_t n, float p, uint64_t seed, uint64_t stream) {
    /* keep (ceil(n / 32)) <- mask (n) */
    DF_CHECK(p >= 0 && p <= 1, "dropout: probability %g outside [0, 1]", (double)p);
    ptrdiff_t chunks = (ptrdiff_t)((n + DROP_CHUNK - 1) / DROP_CHUNK);
    DF_PARALLEL_FOR_IF(n > 4 * DROP_CHUNK, "omp parallel for schedule(static)", for (ptrdiff_t c = 0; c < chunks; c++) {
        size_t c0 = (size_t)c * DROP_CHUNK, m = n - c0 < DROP_CHUNK ? n - c0 : DROP_CHUNK;
        df_rng_keep_bits(keep + c0 / 32, m, p, seed, stream, c0); /* uniform >= p, from the raw words */
    });
}

/* One word's 32 elements (m <= 32 of them): out[b] = bit b ? in[b] * scale : 0, or din[b] += dout[b] * scale. */
DF_CLONES static void apply_word(float *out, const float *in, uint32_t bits, size_t m, float scale) {
#pragma omp simd
    for (size_t b = 0; b < m; b++) out[b] = (bits >> b & 1u) ? in[b] * scale : 0.0f;
}

DF_CLONES static void backward_word(float *din, const float *dout, uint32_t bits, size_t m, float scale) {
#pragma omp simd
    for (size_t b = 0; b < m; b++) din[b] += (bits >> b & 1u) ? dout[b] * scale : 0.0f;
}

/* dropout_apply: out[i] = kept ? in[i] / (1 - p) : 0 (dropout_forward's values); out may alias in. */
void dropout_apply(float *out, const float *in, const uint32_t *keep, size_t n, float p) {
    /* out (n) = mask (n) * in (n) / (1 - p) */
    float keep_scale = p < 1 ? 1.0f / (1.0f - p) : 0.0f;
    ptrdiff_t words = (ptrdiff_t)((n + 31) / 32);
#pragma omp parallel for schedule(static) if (n > 4 * DROP_CHUNK)
    for (ptrdiff_t w = 0; w < words; w++) {
        size_t i = (size_t)w * 32;
        apply_word(out + i, in + i, keep[w], n - i < 32 ? n - i : 32, keep_scale);
    }
}

/* dropout_backward_mask: din[i] += dout[i] / (1 - p) where kept (dropout_backward's values). */
void dropout_backward_mask(float *din, const float *dout, const uint32_t *keep, size_t n, float p) {
    /* din (n) += mask (n) * dout (n) / (1 - p) */
    float keep_scale = p < 1 ? 1.0f / (1.0f - p) : 0.0f;
    ptrdiff_t words = (ptrdiff_t)((n + 31) / 32);
#pragma omp parallel for schedule(static) if (n > 4 * DROP_CHUNK)
    for (ptrdiff_t w = 0; w < words; w++) {
        size_t i = (size_t)w * 32;
        backward_word(din + i, dout + i, keep[w], n - i < 32 ? n - i : 32, keep_scale);
    }
}
