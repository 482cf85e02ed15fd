/* dropout.c: inverted dropout whose mask is a pure function of (seed, stream, element index), drawn from
 * the counter-based generator, so backward regenerates it instead of storing it. */
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
