/* attention.c: multi-head scaled dot-product self-attention over channels-first (B, C, T) tensors.
 *
 * Per image b and head h, with Q, K, V the (dh, T) row-major slices of q, k, v (dh = C / heads, row stride T):
 *   S = Q^T K / sqrt(dh) (T, T),  P = softmax over each row of S,  O = V P^T (dh, T).
 * The fast versions do this with gemm. Without saved probabilities, heads with T > ATT_WHOLE go in blocks of
 * ATT_ROWS query rows, so that only ATT_ROWS x T floats of scratch (df_scratch slot 0) are needed instead of
 * T x T; smaller heads take their T x T scores in that slot at once. Images and heads are split
 * over threads when there are enough of them; otherwise each gemm is parallel.
 */
#include "kernels.h"

#include <math.h>

#include "base/base.h"
#include "vmath.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define ATT_ROWS 64 /* query rows per block when probabilities are not stored */
#define ATT_WHOLE 256 /* up to this T, a head without stored probabilities still takes all T x T scores at once */
#define ATT_SLOT 0

/* 1 / sqrt(dh) rounded to float, as torch's scale = dh ** -0.5. */
static float att_scale(size_t dh) { return (float)(1.0 / sqrt((double)dh)); }

/* Threads a kernel called here may use: 1 inside a parallel region. */
static int team_size(void) {
#ifdef _OPENMP
    return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
    return 1;
#endif
}

/* Whether to split the B * heads (image, head) pairs over threads rather than inside each gemm: when there
 * are at least as many pairs as threads and enough work (about 2 dh T^2 multiply-adds per pair). */
static int att_outer_parallel(size_t pairs, size_t dh, size_t T) {
    int t = team_size();
    return t > 1 && pairs >= (size_t)t && 2.0 * (double)pairs * (double)dh * (double)T * (double)T > (1 << 18);
}

/* ---- reference ---- */

/* attention_forward_ref: the definition, one query row at a time, scores and softmax in double (a row of T
 * doubles in df_scratch slot 0). Writes out and, when not NULL, probs. */
void attention_forward_ref(float *out, float *probs, const float *q, const float *k, const float *v, size_t B,
                           size_t C, size_t T, size_t heads) {
    /* out (B, C, T) = attention(q, k, v (B, C, T)); probs (B, heads, T, T) */
    DF_CHECK(heads > 0 && C % heads == 0, "attention: %zu channels do not split into %zu heads", C, heads);
    size_t dh = C / heads;
    double scale = 1.0 / sqrt((double)dh);
    double *p = (double *)df_scratch(ATT_SLOT, 2 * T);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < heads; h++) {
            size_t base = (b * C + h * dh) * T;
            for (size_t i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0;
                for (size_t j = 0; j < T; j++) {
                    double s = 0;
                    for (size_t c = 0; c < dh; c++) s += (double)q[base + c * T + i] * k[base + c * T + j];
                    p[j] = s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (size_t j = 0; j < T; j++) sum += p[j] = exp(p[j] - mx);
                for (size_t j = 0; j < T; j++) p[j] /= sum;
                if (probs)
                    for (size_t j = 0; j < T; j++) probs[((b * heads + h) * T + i) * T + j] = (float)p[j];
                for (size_t c = 0; c < dh; c++) {
                    double o = 0;
                    for (size_t j = 0; j < T; j++) o += p[j] * v[base + c * T + j];
                    out[base + c * T + i] = (float)o;
                }
            }
        }
}

/* ---- forward ---- */

/* In place over rows x T scores: each row becomes softmax(row) (max subtracted before exp). */
DF_CLONES static void softmax_row(float *x, size_t T) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (size_t j = 0; j < T; j++) mx = x[j] > mx ? x[j] : mx;
    float sum = 0; /* in float lanes: T terms in (0, 1], one of them 1 */
#pragma omp simd reduction(+ : sum)
    for (size_t j = 0; j < T; j++) {
        float e = df_vexpf(x[j] - mx); /* vectorised exp (vmath.h, 8e-8 relative) */
        x[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (size_t j = 0; j < T; j++) x[j] *= inv;
}

static void softmax_rows(float *s, size_t rows, size_t T) {
    /* s (rows, T) = softmax(s) along T */
    DF_PARALLEL_FOR_IF(rows * T > (1 << 15), "omp parallel for schedule(static)",
                       for (size_t r = 0; r < rows; r++) softmax_row(s + r * T, T););
}

/* Query rows [i0, i0 + ATT_ROWS) of one (image, head) without saving probabilities: o[:, rows] from the
 * rows' scores in the calling thread's scratch block. */
static void row_block_forward(float *o, const float *qh, const float *kh, const float *vh, size_t dh, size_t T,
                              size_t i0) {
    float scale = att_scale(dh);
    float *p = df_scratch(ATT_SLOT, (size_t)ATT_ROWS * T);
    size_t r = T - i0 < ATT_ROWS ? T - i0 : ATT_ROWS;
    gemm(1, 0, r, T, dh, scale, qh + i0, T, kh, T, 0.0f, p, T); /* p (r, T) = scores of rows i0.. */
    softmax_rows(p, r, T);
    gemm(0, 1, dh, r, T, 1.0f, vh, T, p, T, 0.0f, o + i0, T); /* o[:, i0:i0+r] = vh p^T */
}

/* One (image, head): all of P at once into p_all (probs, or scratch when T <= ATT_WHOLE), else row blocks
 * through scratch. Each gemm packs its operands once per call, so whole heads pack q, k and v once instead of
 * once per block (at T = 196, dh = 128 the packing was a quarter of the time). */
static void attention_head_forward(float *o, float *p_all, const float *qh, const float *kh, const float *vh,
                                   size_t dh, size_t T) {
    /* o (dh, T) = vh (dh, T) softmax(qh^T kh * scale)^T */
    float scale = att_scale(dh);
    if (!p_all && T <= ATT_WHOLE) p_all = df_scratch(ATT_SLOT, T * T);
    if (p_all) {
        gemm(1, 0, T, T, dh, scale, qh, T, kh, T, 0.0f, p_all, T);
        softmax_rows(p_all, T, T);
        gemm(0, 1, dh, T, T, 1.0f, vh, T, p_all, T, 0.0f, o, T);
        return;
    }
    for (size_t i0 = 0; i0 < T; i0 += ATT_ROWS) row_block_forward(o, qh, kh, vh, dh, T, i0);
}

/* Where head h of image b starts in q, k and v, whose images are ld floats apart (C T, or 3 C T when they are
 * one tensor's thirds: attention_forward_qkv), for pair bh = b heads + h; out's is bh dh T. */
static size_t in_off(size_t bh, size_t heads, size_t dh, size_t T, size_t ld) {
    return bh / heads * ld + bh % heads * dh * T;
}

/* One (image, head) pair of attention_forward: the loop body, run by a team or not. */
static void head_forward(float *out, float *probs, const float *q, const float *k, const float *v, size_t bh,
                         size_t heads, size_t dh, size_t T, size_t ld) {
    size_t off = bh * dh * T, io = in_off(bh, heads, dh, T, ld); /* out's (b*C + h*dh) * T, and the inputs' */
    attention_head_forward(out + off, probs ? probs + bh * T * T : NULL, q + io, k + io, v + io, dh, T);
}

/* attention_forward: same result as attention_forward_ref (see kernels.h). With probs it stores the full
 * (B, heads, T, T) probabilities; with probs NULL it needs only ATT_ROWS x T floats of scratch per thread
 * (T x T up to T = ATT_WHOLE).
 * Both paths give bitwise-identical out. */
static void forward(float *out, float *probs, const float *q, const float *k, const float *v, size_t B, size_t C,
                    size_t T, size_t heads, size_t ld) {
    /* out (B, C, T) = attention(q, k, v (B, C, T), images ld floats apart); probs (B, heads, T, T) or NULL */
    DF_CHECK(heads > 0 && C % heads == 0, "attention: %zu channels do not split into %zu heads", C, heads);
    size_t dh = C / heads, pairs = B * heads;
    if (att_outer_parallel(pairs, dh, T)) { /* a region only for a team (kernels.h) */
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t bh = 0; bh < pairs; bh++)
            head_forward(out, probs, q, k, v, bh, heads, dh, T, ld);
    } else if (!probs && T > ATT_WHOLE && team_size() > 1) {
        /* fewer pairs than threads (sampling a batch of one): the team splits each pair's row blocks */
        ptrdiff_t blocks = (ptrdiff_t)((T + ATT_ROWS - 1) / ATT_ROWS);
        for (size_t bh = 0; bh < pairs; bh++) {
            size_t off = bh * dh * T, io = in_off(bh, heads, dh, T, ld);
#pragma omp parallel for schedule(dynamic, 1)
            for (ptrdiff_t ib = 0; ib < blocks; ib++)
                row_block_forward(out + off, q + io, k + io, v + io, dh, T, (size_t)ib * ATT_ROWS);
        }
    } else {
        for (size_t bh = 0; bh < pairs; bh++) head_forward(out, probs, q, k, v, bh, heads, dh, T, ld);
    }
}

void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v, size_t B,
                       size_t C, size_t T, size_t heads) {
    forward(out, probs, q, k, v, B, C, T, heads, C * T);
}

void attention_forward_qkv(float *out, float *probs, const float *qkv, size_t B, size_t C, size_t T, size_t heads) {
    forward(out, probs, qkv, qkv + C * T, qkv + 2 * C * T, B, C, T, heads, 3 * C * T);
}

/* ---- backward ---- */

/* One (image, head), in blocks of query rows, with P the saved probabilities:
 *   dV += dO P;  dP = dO^T V;  dS = P * (dP - rowsum(P * dP)) * scale;  dQ += K dS^T;  dK += Q dS. */
static void attention_head_backward(float *dqh, float *dkh, float *dvh, const float *doh, const float *qh,
                                    const float *kh, const float *vh, const float *p_all, size_t dh, size_t T) {
    /* dqh, dkh, dvh (dh, T) += from doh (dh, T) and p_all (T, T) */
    float scale = att_scale(dh);
    for (size_t i0 = 0; i0 < T; i0 += ATT_ROWS) {
        size_t r = T - i0 < ATT_ROWS ? T - i0 : ATT_ROWS;
        const float *p = p_all + i0 * T;
        if (dvh) gemm(0, 0, dh, T, r, 1.0f, doh + i0, T, p, T, 1.0f, dvh, T);
        if (!dqh && !dkh) continue;
        float *ds = df_scratch(ATT_SLOT, (size_t)ATT_ROWS * T);
        gemm(1, 0, r, T, dh, 1.0f, doh + i0, T, vh, T, 0.0f, ds, T); /* dP (r, T) */
        for (size_t i = 0; i < r; i++) {
            const float *pi = p + i * T;
            float *d = ds + i * T;
            double dot = 0;
            for (size_t j = 0; j < T; j++) dot += (double)pi[j] * d[j];
            float dotf = (float)dot;
            for (size_t j = 0; j < T; j++) d[j] = pi[j] * (d[j] - dotf) * scale;
        }
        if (dqh) gemm(0, 1, dh, r, T, 1.0f, kh, T, ds, T, 1.0f, dqh + i0, T);
        if (dkh) gemm(0, 0, dh, T, r, 1.0f, qh + i0, T, ds, T, 1.0f, dkh, T);
    }
}

/* One (image, head) pair of attention_backward. */
static void head_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                          const float *v, const float *probs, size_t bh, size_t heads, size_t dh, size_t T,
                          size_t ld) {
    size_t off = bh * dh * T, io = in_off(bh, heads, dh, T, ld);
    attention_head_backward(dq ? dq + io : NULL, dk ? dk + io : NULL, dv ? dv + io : NULL, dout + off, q + io,
                            k + io, v + io, probs + bh * T * T, dh, T);
}

/* attention_backward: gradients of attention_forward given the probs it saved; accumulates into dq, dk, dv
 * (NULL ones skipped). Needs ATT_ROWS x T floats of scratch per thread. */
static void backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                     const float *v, const float *probs, size_t B, size_t C, size_t T, size_t heads, size_t ld) {
    /* dq, dk, dv (B, C, T, images ld floats apart) += from dout (B, C, T), probs (B, heads, T, T) */
    DF_CHECK(heads > 0 && C % heads == 0, "attention: %zu channels do not split into %zu heads", C, heads);
    DF_CHECK(probs != NULL, "attention_backward needs the probabilities saved by attention_forward");
    size_t dh = C / heads, pairs = B * heads;
    if (att_outer_parallel(pairs, dh, T)) { /* a region only for a team (kernels.h) */
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t bh = 0; bh < pairs; bh++) head_backward(dq, dk, dv, dout, q, k, v, probs, bh, heads, dh, T, ld);
    } else {
        for (size_t bh = 0; bh < pairs; bh++) head_backward(dq, dk, dv, dout, q, k, v, probs, bh, heads, dh, T, ld);
    }
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                        const float *v, const float *probs, size_t B, size_t C, size_t T, size_t heads) {
    backward(dq, dk, dv, dout, q, k, v, probs, B, C, T, heads, C * T);
}

void attention_backward_qkv(float *dqkv, const float *dout, const float *qkv, const float *probs, size_t B, size_t C,
                            size_t T, size_t heads) {
    size_t CT = C * T;
    backward(dqkv, dqkv ? dqkv + CT : NULL, dqkv ? dqkv + 2 * CT : NULL, dout, qkv, qkv + CT, qkv + 2 * CT, probs, B, C,
             T, heads, 3 * CT);
}
