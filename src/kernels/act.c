/* act.c: pointwise activations, silu(x) = x * sigmoid(x) and relu(x) = max(x, 0). Forward overwrites out
 * (which may alias in); backward takes the forward input and accumulates into din. */
#include "base/base.h"
#include "kernels.h"

#include <math.h>

#include "vmath.h"

/* Element counts above this split over threads. */
#define ACT_PAR_MIN ((size_t)1 << 16)

/* ---- silu ---- */

/* Chunks of this many elements are the unit of work (vectorised, per ISA). */
#define ACT_CHUNK ((size_t)4096)

DF_CLONES static void silu_chunk(float *out, const float *in, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = in[i] / (1.0f + df_vexpf(-in[i]));
}

DF_CLONES static void silu_backward_chunk(float *restrict din, const float *restrict dout, const float *restrict in,
                                          size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + df_vexpf(-in[i]));
        din[i] += dout[i] * s * (1.0f + in[i] * (1.0f - s));
    }
}

/* silu_forward: out[i] = in[i] / (1 + exp(-in[i])). out may alias in only exactly (chunks are disjoint). */
void silu_forward(float *out, const float *in, size_t n) {
    /* out (n) = silu(in (n)) */
    ptrdiff_t chunks = (ptrdiff_t)((n + ACT_CHUNK - 1) / ACT_CHUNK);
    DF_PARALLEL_FOR_IF(n > ACT_PAR_MIN, "omp parallel for schedule(static)",
                       for (ptrdiff_t c = 0; c < chunks; c++) {
                           size_t i = (size_t)c * ACT_CHUNK, m = n - i < ACT_CHUNK ? n - i : ACT_CHUNK;
                           silu_chunk(out + i, in + i, m);
                       });
}

/* silu_backward: d silu / dx = s (1 + x (1 - s)) with s = sigmoid(x); din[i] += dout[i] * that. */
void silu_backward(float *din, const float *dout, const float *in, size_t n) {
    /* din (n) += dout (n) * silu'(in (n)) */
    ptrdiff_t chunks = (ptrdiff_t)((n + ACT_CHUNK - 1) / ACT_CHUNK);
#pragma omp parallel for schedule(static) if (n > ACT_PAR_MIN)
    for (ptrdiff_t c = 0; c < chunks; c++) {
        size_t i = (size_t)c * ACT_CHUNK, m = n - i < ACT_CHUNK ? n - i : ACT_CHUNK;
        silu_backward_chunk(din + i, dout + i, in + i, m);
    }
}

/* ---- relu ---- */

/* relu_forward: out[i] = max(in[i], 0). */
void relu_forward(float *out, const float *in, size_t n) {
    /* out (n) = relu(in (n)) */
#pragma omp parallel for simd schedule(static) if (n > ACT_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0 ? in[i] : 0.0f;
}

/* relu_backward: din[i] += dout[i] where in[i] > 0 (the gradient at 0 is 0, as torch). */
void relu_backward(float *din, const float *dout, const float *in, size_t n) {
    /* din (n) += dout (n) * [in (n) > 0] */
#pragma omp parallel for simd schedule(static) if (n > ACT_PAR_MIN)
    for (size_t i = 0; i < n; i++) din[i] += in[i] > 0 ? dout[i] : 0.0f;
}
