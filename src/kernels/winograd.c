/* winograd.c: 3x3, stride-1, padding-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray
 * 2016): 16 multiplies per 2x2 output tile and input channel instead of 36.
 *
 *   U = G g G^T      (weights, per output/input channel pair: 3x3 -> 4x4)
 *   V = B^T d B      (inputs, per 4x4 tile overlapping its neighbours by 2, per input channel)
 *   M[xi] = U[xi] V[xi] for each of the 16 tile positions xi: 16 GEMMs (C_out x C_in) (C_in x tiles)
 *   Y = A^T m A      (per tile: 4x4 -> the 2x2 outputs)
 * with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
 * A^T = [1 1 1 0; 0 1 -1 -1]. The transforms are exact in exact arithmetic; in FP32 the result differs from
 * direct convolution by rounding (relative ~1e-6, tested against conv2d_forward_ref). The tiles of the whole
 * batch go into each GEMM, so the GEMMs are large (N = B * tiles). */
#include <string.h>

#include "base/base.h"
#include "kernels.h"
#include "vmath.h"
#include "winograd_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef WG_TILES
#define WG_TILES 256 /* tiles per chunk */
#endif
#ifndef WG_MIN_TILES
#define WG_MIN_TILES 49 /* tiles per image (14x14 and larger): smaller images go the direct way */
#endif

int conv2d_winograd_shape(const conv2d_dims *d) {
    return d->KH == 3 && d->KW == 3 && d->stride == 1 && d->pad_t == 1 && d->pad_b == 1 && d->pad_l == 1 &&
           d->pad_r == 1 && d->C_in >= 8 && d->C_out >= 8 && d->H >= 4 && d->W >= 4;
}

/* The choice depends on the image size only, never on the batch: each path gives every image the same bits
 * whatever else is in the batch, so image i of a seed stays the same for any --batch (tested). Measured on
 * fmnist-m, 1 thread: at 7x7 (16 tiles) Winograd loses at every batch; from 14x14 it wins from a few
 * images on (batch 16: 42.9 images/s against 37.8 with only 28x28 by Winograd). It costs batch 1 some speed
 * (22.3 against 28 by the direct path, which a batch-dependent choice got, at the price of that invariance). */
int conv2d_winograd_applies(const conv2d_dims *d) {
    if (gemm_bf16_on()) return 0; /* BF16 products: direct GEMMs, whose error is smaller (measured) */
    return conv2d_winograd_shape(d) && ((d->H + 1) / 2) * ((d->W + 1) / 2) >= WG_MIN_TILES;
}

/* U[xi] = (G g G^T)[xi] for weight g = weight[o][i] (3x3), each of the 16 matrices (Co x Ci) written straight
 * into gemm_pack_a's layout at Up + xi * ap: panel q = o / MR holds, for each i, the MR rows' values
 * contiguously (rows past Co are zero). */
static void transform_weights(float *Up, size_t ap, const float *weight, size_t Co, size_t Ci) {
    /* Up (16, packed Co x Ci) <- weight (Co, Ci, 3, 3) */
    enum { MR = GEMM_MR_PUBLIC };
    ptrdiff_t rows = (ptrdiff_t)((Co + MR - 1) / MR * MR);
#pragma omp parallel for schedule(static) if (Co * Ci > 4096)
    for (ptrdiff_t o = 0; o < rows; o++) {
        float *panel = Up + (size_t)o / MR * MR * Ci + (size_t)o % MR;
        for (size_t i = 0; i < Ci; i++) {
            float u[16] = {0};
            if ((size_t)o < Co) {
                const float *g = weight + ((size_t)o * Ci + i) * 9;
                float t[4][3]; /* G g */
                for (int c = 0; c < 3; c++) {
                    t[0][c] = g[c];
                    t[1][c] = 0.5f * (g[c] + g[3 + c] + g[6 + c]);
                    t[2][c] = 0.5f * (g[c] - g[3 + c] + g[6 + c]);
                    t[3][c] = g[6 + c];
                }
                for (int r = 0; r < 4; r++) { /* (G g) G^T */
                    u[r * 4 + 0] = t[r][0];
                    u[r * 4 + 1] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
                    u[r * 4 + 2] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
                    u[r * 4 + 3] = t[r][2];
                }
            }
            for (int xi = 0; xi < 16; xi++) panel[(size_t)xi * ap + i * MR] = u[xi];
        }
    }
}

/* x[j] of a row of W, or 0 outside it (the padding). */
static inline float at(const float *x, ptrdiff_t j, size_t W) { return j >= 0 && j < (ptrdiff_t)W ? x[j] : 0.0f; }

/* The column transform of one input row for every tile of a tile row, for rows of at most 32 pixels: the row
 * split into even and odd pixels (zero past the edges) in two registers, then tile tx (columns 2 tx - 1 ..
 * 2 tx + 2 = O[tx-1], E[tx], O[tx], E[tx+1]) gets h0 = O[tx-1] - O[tx], h1 = E[tx] + O[tx], h2 = O[tx] - E[tx],
 * h3 = E[tx] - E[tx+1]: transform_inputs' values, 16 tiles at a time. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void column_transform32(float *h0, float *h1, float *h2, float *h3,
                                                                  const float *xr, size_t W, size_t tw) {
    __mmask16 m0, m1;
    winograd_row_masks(W, &m0, &m1);
    __m512 lo = _mm512_maskz_loadu_ps(m0, xr), hi = _mm512_maskz_loadu_ps(m1, xr + 16);
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i down = _mm512_set_epi32(14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0); /* lane k <- k-1 */
    const __m512i up = _mm512_set_epi32(15, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);  /* lane k <- k+1 */
    __m512 E = _mm512_permutex2var_ps(lo, ie, hi), O = _mm512_permutex2var_ps(lo, io, hi);
    __m512 Oprev = _mm512_maskz_permutexvar_ps(0xfffe, down, O), Enext = _mm512_maskz_permutexvar_ps(0x7fff, up, E);
    __mmask16 mt = (__mmask16)(tw >= 16 ? 0xffffu : (1u << tw) - 1);
    _mm512_mask_storeu_ps(h0, mt, _mm512_sub_ps(Oprev, O));
    _mm512_mask_storeu_ps(h1, mt, _mm512_add_ps(E, O));
    _mm512_mask_storeu_ps(h2, mt, _mm512_sub_ps(O, E));
    _mm512_mask_storeu_ps(h3, mt, _mm512_sub_ps(E, Enext));
}
/* transform_outgrad's 16 values for every tile of a tile row of at most 16 tiles: the two output-gradient rows
 * r0, r1 (r1 NULL past the image) split into even and odd pixels, then the tile transform lane by lane. */
__attribute__((target("avx512f"))) static void outgrad_row32(float *const m[16], const float *r0, const float *r1,
                                                             size_t W, size_t tw, unsigned rows) {
    __mmask16 m0, m1;
    winograd_row_masks(W, &m0, &m1);
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    __m512 l0 = _mm512_maskz_loadu_ps(m0, r0), h0 = _mm512_maskz_loadu_ps(m1, r0 + 16);
    __m512 a = _mm512_permutex2var_ps(l0, ie, h0), b = _mm512_permutex2var_ps(l0, io, h0);
    __m512 c = _mm512_setzero_ps(), e = _mm512_setzero_ps();
    if (r1) {
        __m512 l1 = _mm512_maskz_loadu_ps(m0, r1), h1 = _mm512_maskz_loadu_ps(m1, r1 + 16);
        c = _mm512_permutex2var_ps(l1, ie, h1), e = _mm512_permutex2var_ps(l1, io, h1);
    }
    __m512 t[4][2] = {{a, b},
                      {_mm512_add_ps(a, c), _mm512_add_ps(b, e)},
                      {_mm512_sub_ps(a, c), _mm512_sub_ps(b, e)},
                      {_mm512_sub_ps(_mm512_setzero_ps(), c), _mm512_sub_ps(_mm512_setzero_ps(), e)}};
    __mmask16 mt = (__mmask16)(tw >= 16 ? 0xffffu : (1u << tw) - 1);
    for (int r = 0; r < 4; r++) {
        if (!(rows >> r & 1)) continue;
        __m512 p = t[r][0], q = t[r][1];
        _mm512_mask_storeu_ps(m[r * 4 + 0], mt, p);
        _mm512_mask_storeu_ps(m[r * 4 + 1], mt, _mm512_add_ps(p, q));
        _mm512_mask_storeu_ps(m[r * 4 + 2], mt, _mm512_sub_ps(p, q));
        _mm512_mask_storeu_ps(m[r * 4 + 3], mt, _mm512_sub_ps(_mm512_setzero_ps(), q));
    }
}

/* transform_outputs' last step for a row of at most 32 outputs: even outputs t0 + t1 + t2 + bias, odd ones
 * t1 - t2 - t3 + bias, interleaved in registers and stored W at a time. */
__attribute__((target("avx512f"))) static void output_row32(float *orow, const float *t0, const float *t1,
                                                            const float *t2, const float *t3, float bv, size_t W,
                                                            size_t tw, const float *cadd, const float *rrow) {
    __mmask16 mt = (__mmask16)(tw >= 16 ? 0xffffu : (1u << tw) - 1);
    __m512 a0 = _mm512_maskz_loadu_ps(mt, t0), a1 = _mm512_maskz_loadu_ps(mt, t1);
    __m512 a2 = _mm512_maskz_loadu_ps(mt, t2), a3 = _mm512_maskz_loadu_ps(mt, t3), b = _mm512_set1_ps(bv);
    __m512 ev = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), a2), b);
    __m512 od = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(a1, a2), a3), b);
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    __m512 v0 = _mm512_permutex2var_ps(ev, lo, od), v1 = _mm512_permutex2var_ps(ev, hi, od);
    winograd_store_row32(orow, v0, v1, W, cadd, rrow); /* then + the channel's addend, + the residual row */
}
#else
static void column_transform32(float *h0, float *h1, float *h2, float *h3, const float *xr, size_t W, size_t tw) {
    (void)h0, (void)h1, (void)h2, (void)h3, (void)xr, (void)W, (void)tw;
}
static void outgrad_row32(float *const m[16], const float *r0, const float *r1, size_t W, size_t tw, unsigned rows) {
    (void)m, (void)r0, (void)r1, (void)W, (void)tw, (void)rows;
}
static void output_row32(float *orow, const float *t0, const float *t1, const float *t2, const float *t3, float bv,
                         size_t W, size_t tw, const float *cadd, const float *rrow) {
    (void)orow, (void)t0, (void)t1, (void)t2, (void)t3, (void)bv, (void)W, (void)tw, (void)cadd, (void)rrow;
}
#endif

/* V[xi][i][b * tiles + t] = (B^T d B)[xi] for the 4x4 input patch d of tile t (rows 2 ty - 1 .. 2 ty + 2,
 * columns 2 tx - 1 .. 2 tx + 2, zero outside the image). Per input channel: the column transform of each
 * tile row's 4 input rows (contiguous in tx, read in place; the edge tiles see the zero padding), then the row transform over all the chunk's tiles at once (long
 * vectors even when the image is only a few tiles wide). */
DF_CLONES static void transform_inputs(float *V, const float *in, const conv2d_dims *d, size_t th, size_t tw,
                                       size_t row0, size_t nrows, float *h, size_t i0, size_t i1, unsigned rows) {
    /* V (16, Ci, nrows * tw) <- tile rows [row0, row0 + nrows) of input channels [i0, i1) of in (B, Ci, H, W),
     * only the positions xi = 4 r + k of the row combinations r in the mask rows (0xf: all); h: 16 N */
    size_t Ci = d->C_in, H = d->H, W = d->W, N = nrows * tw;
    /* the input rows those combinations read: r 0 reads rows 0 and 2, r 1 and 2 rows 1 and 2, r 3 rows 1 and 3 */
    unsigned need = (rows & 1 ? 5u : 0u) | (rows & 6 ? 6u : 0u) | (rows & 8 ? 10u : 0u);
    /* tiles tx in [1, tx1) read columns 2 tx - 1 .. 2 tx + 2 all inside the row */
    size_t tx1 = W >= 3 ? (W - 3) / 2 + 1 : 1;
    if (tx1 > tw) tx1 = tw;
    for (size_t i = i0; i < i1; i++) {
        winograd_prefetch_ahead(in, Ci, H, W, th, 2, row0, nrows, i, i0, i1);
        for (size_t rr = 0; rr < nrows; rr++) {
            size_t b = (row0 + rr) / th, ty = (row0 + rr) % th;
            const float *x = in + (b * Ci + i) * H * W;
            for (int r = 0; r < 4; r++) { /* input row 2 ty - 1 + r, columns 2tx - 1 .. 2tx + 2 of each tile */
                if (!(need >> r & 1)) continue;
                float *h0 = h + (size_t)(r * 4) * N + rr * tw, *h1 = h0 + N, *h2 = h1 + N, *h3 = h2 + N;
                ptrdiff_t y = (ptrdiff_t)(2 * ty) - 1 + r;
                if (y < 0 || y >= (ptrdiff_t)H) { /* a padding row */
                    memset(h0, 0, tw * sizeof(float)), memset(h1, 0, tw * sizeof(float));
                    memset(h2, 0, tw * sizeof(float)), memset(h3, 0, tw * sizeof(float));
                    continue;
                }
                const float *xr = x + (size_t)y * W;
                if (W <= 32 && winograd_have_avx512()) {
                    column_transform32(h0, h1, h2, h3, xr, W, tw);
                    continue;
                }
#pragma omp simd
                for (size_t tx = 1; tx < tx1; tx++) {
                    const float *q = xr + 2 * tx - 1;
                    h0[tx] = q[0] - q[2];
                    h1[tx] = q[1] + q[2];
                    h2[tx] = q[2] - q[1];
                    h3[tx] = q[1] - q[3];
                }
                for (size_t tx = 0; tx < tw; tx = tx == 0 && tx1 > 1 ? tx1 : tx + 1) { /* the edge tiles */
                    ptrdiff_t j = (ptrdiff_t)(2 * tx) - 1;
                    float q0 = at(xr, j, W), q1 = at(xr, j + 1, W), q2 = at(xr, j + 2, W), q3 = at(xr, j + 3, W);
                    h0[tx] = q0 - q2;
                    h1[tx] = q1 + q2;
                    h2[tx] = q2 - q1;
                    h3[tx] = q1 - q3;
                }
            }
        }
        for (int k = 0; k < 4; k++) {
            const float *a0 = h + (size_t)(0 * 4 + k) * N, *a1 = h + (size_t)(1 * 4 + k) * N;
            const float *a2 = h + (size_t)(2 * 4 + k) * N, *a3 = h + (size_t)(3 * 4 + k) * N;
            float *v0 = V + ((size_t)(0 * 4 + k) * Ci + i) * N, *v1 = V + ((size_t)(1 * 4 + k) * Ci + i) * N;
            float *v2 = V + ((size_t)(2 * 4 + k) * Ci + i) * N, *v3 = V + ((size_t)(3 * 4 + k) * Ci + i) * N;
            if (rows == 0xf) {
#pragma omp simd
                for (size_t n = 0; n < N; n++) {
                    v0[n] = a0[n] - a2[n];
                    v1[n] = a1[n] + a2[n];
                    v2[n] = a2[n] - a1[n];
                    v3[n] = a1[n] - a3[n];
                }
                continue;
            }
            if (rows & 1)
                for (size_t n = 0; n < N; n++) v0[n] = a0[n] - a2[n];
            if (rows & 2)
                for (size_t n = 0; n < N; n++) v1[n] = a1[n] + a2[n];
            if (rows & 4)
                for (size_t n = 0; n < N; n++) v2[n] = a2[n] - a1[n];
            if (rows & 8)
                for (size_t n = 0; n < N; n++) v3[n] = a1[n] - a3[n];
        }
    }
}

/* out[b][o] 2x2 block of tile t = A^T m A + bias, m[xi] = M[xi][o][b * tiles + t]; outputs past the image
 * edge (odd sizes) are dropped. Per output channel: A^T m over all the chunk's tiles at once, then each tile
 * row's two output rows. Then, as the graph's next op would, + chan[b * Co + o] (per image and channel) and
 * + res (B, Co, H, W) element by element, either NULL: each output is first rounded as the convolution's,
 * then summed with the addend, so the bits are those of the two ops run apart. */
DF_CLONES static void transform_outputs(float *out, const float *M, const float *bias, const conv2d_dims *d,
                                        size_t th, size_t tw, size_t row0, size_t nrows, float *buf, size_t o0,
                                        size_t o1, const float *chan, const float *res) {
    /* tile rows [row0, row0 + nrows) of output channels [o0, o1) of out (B, Co, H, W) <- M (16, Co, nrows * tw),
     * + chan, + res; buf: 8 N */
    size_t Co = d->C_out, H = d->H, W = d->W, N = nrows * tw;
    float *s = buf; /* s[r][c][n] = A^T m */
    for (size_t o = o0; o < o1; o++) {
        float bv = bias ? bias[o] : 0.0f;
        for (int c = 0; c < 4; c++) { /* A^T m, column c of the 4x4 */
            const float *m0 = M + ((size_t)(0 * 4 + c) * Co + o) * N, *m1 = M + ((size_t)(1 * 4 + c) * Co + o) * N;
            const float *m2 = M + ((size_t)(2 * 4 + c) * Co + o) * N, *m3 = M + ((size_t)(3 * 4 + c) * Co + o) * N;
            float *s0 = s + (size_t)c * N, *s1 = s + (size_t)(4 + c) * N;
#pragma omp simd
            for (size_t n = 0; n < N; n++) {
                s0[n] = m0[n] + m1[n] + m2[n];
                s1[n] = m1[n] - m2[n] - m3[n];
            }
        }
        for (size_t rr = 0; rr < nrows; rr++) {
            size_t b = (row0 + rr) / th, ty = (row0 + rr) % th;
            float *y = out + (b * Co + o) * H * W;
            for (int r = 0; r < 2; r++) { /* (A^T m) A: two outputs per tile and row */
                const float *t0 = s + (size_t)(r * 4 + 0) * N + rr * tw, *t1 = s + (size_t)(r * 4 + 1) * N + rr * tw;
                const float *t2 = s + (size_t)(r * 4 + 2) * N + rr * tw, *t3 = s + (size_t)(r * 4 + 3) * N + rr * tw;
                size_t yy = 2 * ty + (size_t)r, full = W / 2; /* tiles with both outputs inside the row */
                if (yy >= H) continue;
                float *orow = y + yy * W;
                const float *ca = chan ? chan + b * Co + o : NULL;
                const float *ra = res ? res + ((b * Co + o) * H + yy) * W : NULL;
                if (W <= 32 && winograd_have_avx512()) {
                    output_row32(orow, t0, t1, t2, t3, bv, W, tw, ca, ra);
                } else {
#pragma omp simd
                    for (size_t tx = 0; tx < full; tx++) {
                        orow[2 * tx] = t0[tx] + t1[tx] + t2[tx] + bv;
                        orow[2 * tx + 1] = t1[tx] - t2[tx] - t3[tx] + bv;
                    }
                    if (W % 2) orow[2 * full] = t0[full] + t1[full] + t2[full] + bv;
                    winograd_add_row(orow, ca, ra, W);
                }
            }
        }
    }
}

size_t conv2d_winograd_weights_size(const conv2d_dims *d) { return 16 * gemm_packed_a_size(d->C_out, d->C_in); }

void conv2d_winograd_pack_weights(float *Up, const float *weight, const conv2d_dims *d) {
    /* Up (16, packed Co x Ci) <- U = G g G^T of weight (Co, Ci, 3, 3), with the BF16 copies in BF16 mode */
    size_t Ci = d->C_in, Co = d->C_out, ap = gemm_packed_a_size(Co, Ci);
    transform_weights(Up, ap, weight, Co, Ci);
    for (int xi = 0; xi < 16; xi++) gemm_pack_a_bf16(Up + (size_t)xi * ap, Co, Ci);
}

/* conv2d_forward_winograd_packed when there are fewer chunks than threads (a batch of one image): the team
 * does each chunk together, splitting the input transform by input channel, the 16 GEMMs by position and the
 * output transform by output channel. Every value is computed as the chunk-per-thread loop computes it. */
static void forward_chunks_by_team(float *out, const float *in, const float *Up, const float *bias,
                                   const conv2d_dims *d, size_t per, size_t chunks, const float *chan,
                                   const float *res) {
    size_t Ci = d->C_in, Co = d->C_out, th = (d->H + 1) / 2, tw = (d->W + 1) / 2, rows = d->B * th, N = per * tw;
    float *V = df_scratch(WG_SLOT_V, 16 * Ci * N), *M = df_scratch(WG_SLOT_M, 16 * Co * N); /* shared */
#pragma omp parallel
    {
        float *buf = df_scratch(WG_SLOT_BUF, 16 * N);
        for (size_t c = 0; c < chunks; c++) {
            size_t row0 = c * per, nr = rows - row0 < per ? rows - row0 : per, n = nr * tw;
#pragma omp for schedule(static)
            for (ptrdiff_t i = 0; i < (ptrdiff_t)Ci; i++)
                transform_inputs(V, in, d, th, tw, row0, nr, buf, (size_t)i, (size_t)i + 1, 0xf);
#pragma omp for schedule(static)
            for (int xi = 0; xi < 16; xi++) winograd_position_gemm(M, V, Up, xi, Co, Ci, n);
#pragma omp for schedule(static)
            for (ptrdiff_t o = 0; o < (ptrdiff_t)Co; o++)
                transform_outputs(out, M, bias, d, th, tw, row0, nr, buf, (size_t)o, (size_t)o + 1, chan, res);
        }
    }
}

void conv2d_forward_winograd_packed(float *out, const float *in, const float *Up, const float *bias,
                                    const conv2d_dims *d) {
    conv2d_forward_winograd_packed_add(out, in, Up, bias, d, NULL, NULL);
}

void conv2d_forward_winograd_packed_add(float *out, const float *in, const float *Up, const float *bias,
                                        const conv2d_dims *d, const float *chan, const float *res) {
    /* out (B, Co, H, W) = conv3x3(in (B, Ci, H, W), U packed by conv2d_winograd_pack_weights, pad 1) + bias,
     * then + chan (B, Co) per channel and + res (B, Co, H, W) */
    DF_CHECK(conv2d_winograd_shape(d), "conv2d_forward_winograd: not a 3x3 stride-1 padding-1 convolution");
    size_t Ci = d->C_in, Co = d->C_out, th = (d->H + 1) / 2, tw = (d->W + 1) / 2, rows = d->B * th, per, chunks;
    if (winograd_chunks(rows, tw, WG_TILES, &per, &chunks)) {
        forward_chunks_by_team(out, in, Up, bias, d, per, chunks, chan, res);
        return;
    }
#pragma omp parallel
    {
        size_t N = per * tw;
        float *V = df_scratch(WG_SLOT_V, 16 * Ci * N), *M = df_scratch(WG_SLOT_M, 16 * Co * N);
        float *buf = df_scratch(WG_SLOT_BUF, 16 * N); /* the larger of the two transforms' (16 N and 8 N) */
#pragma omp for schedule(dynamic, 1)
        for (ptrdiff_t c = 0; c < (ptrdiff_t)chunks; c++) {
            size_t row0 = (size_t)c * per, nr = rows - row0 < per ? rows - row0 : per, n = nr * tw;
            transform_inputs(V, in, d, th, tw, row0, nr, buf, 0, Ci, 0xf);
            for (int xi = 0; xi < 16; xi++) winograd_position_gemm(M, V, Up, xi, Co, Ci, n);
            transform_outputs(out, M, bias, d, th, tw, row0, nr, buf, 0, Co, chan, res);
        }
    }
}

void conv2d_forward_winograd(float *out, const float *in, const float *weight, const float *bias,
                             const conv2d_dims *d) {
    /* out (B, Co, H, W) = conv3x3(in (B, Ci, H, W), weight (Co, Ci, 3, 3), pad 1) + bias */
    DF_CHECK(conv2d_winograd_shape(d), "conv2d_forward_winograd: not a 3x3 stride-1 padding-1 convolution");
    /* U = G g G^T, its 16 matrices packed once (as gemm_pack_a would) for the GEMMs of every chunk */
    float *Up = df_scratch(WG_SLOT_U, conv2d_winograd_weights_size(d));
    conv2d_winograd_pack_weights(Up, weight, d);
    conv2d_forward_winograd_packed(out, in, Up, bias, d);
}

/* ---- the weight gradient ----
 * With U = G g G^T and, per tile, M = U . V (per position) and Y = A^T M A, the gradient of a loss L is
 *   dU[xi] = sum over tiles of dM[xi] V[xi],  dM = A dY A^T  (each tile's 2x2 output gradient -> 4x4),
 *   dg = G^T dU G                              (4x4 -> 3x3),
 * so dU[xi] (C_out x C_in) is a GEMM over the tiles for each of the 16 positions: 2.25x fewer multiplies
 * than the direct weight gradient, as in the forward. */

/* dM[xi][o][n] = (A dY A^T)[xi] of tile n of tile rows [row0, row0 + nrows), output channels [o0, o1); outputs
 * past the image edge (odd sizes) count as 0. Row r of A dY is (a, b), (a + c, b + d), (a - c, b - d), (-c, -d)
 * for dY = [a b; c d]; then each row (p, q) becomes (p, p + q, p - q, -q). */
DF_CLONES static void transform_outgrad(float *dM, const float *dout, const conv2d_dims *d, size_t th, size_t tw,
                                        size_t row0, size_t nrows, size_t o0, size_t o1, unsigned rows) {
    /* dM (16, Co, nrows * tw) <- tile rows of dout (B, Co, H, W), only the positions xi = 4 r + k of the rows r
     * in the mask rows (0xf: all) */
    size_t Co = d->C_out, H = d->H, W = d->W, N = nrows * tw, full = W / 2;
    for (size_t o = o0; o < o1; o++) {
        winograd_prefetch_ahead(dout, Co, H, W, th, 2, row0, nrows, o, o0, o1);
        for (size_t rr = 0; rr < nrows; rr++) {
            size_t b = (row0 + rr) / th, ty = (row0 + rr) % th, y0 = 2 * ty;
            const float *g = dout + (b * Co + o) * H * W;
            const float *r0 = g + y0 * W, *r1 = y0 + 1 < H ? r0 + W : NULL;
            float *m[16];
            for (int x = 0; x < 16; x++) m[x] = dM + ((size_t)x * Co + o) * N + rr * tw;
            if (W <= 32 && winograd_have_avx512()) {
                outgrad_row32(m, r0, r1, W, tw, rows);
                continue;
            }
            for (size_t tx = 0; tx < tw; tx++) {
                size_t x0 = 2 * tx;
                float a = r0[x0], bb = tx < full ? r0[x0 + 1] : 0.0f;
                float c = r1 ? r1[x0] : 0.0f, e = r1 && tx < full ? r1[x0 + 1] : 0.0f;
                float t[4][2] = {{a, bb}, {a + c, bb + e}, {a - c, bb - e}, {-c, -e}};
                for (int r = 0; r < 4; r++) {
                    if (!(rows >> r & 1)) continue;
                    float p = t[r][0], q = t[r][1];
                    m[r * 4 + 0][tx] = p;
                    m[r * 4 + 1][tx] = p + q;
                    m[r * 4 + 2][tx] = p - q;
                    m[r * 4 + 3][tx] = -q;
                }
            }
        }
    }
}

/* Tiles per chunk of the weight gradient: as many as keep the chunk's V and dM (16 (C_in + C_out) floats a
 * tile) within WG_DW_BYTES. Measured (conv2d_weight_grad_winograd alone, fmnist-m's shapes at batch 64, 1 and
 * 2 threads, chunks of 128 to 1024 tiles): 64->64 at 28x28 is fastest from 512 tiles on (13.8 ms on 2 threads,
 * 15.7 at 256), 128->128 at 14x14 at 192-256 (9.8 ms, 12.7 at 1024): both about 4 MB. */
#ifndef WG_DW_BYTES
#define WG_DW_BYTES ((size_t)4 << 20)
#endif
#define WG_DW_MIN_TILES 128 /* the GEMMs' depth: not shallower than this */

void conv2d_weight_grad_winograd(float *dweight, const float *dout, const float *in, const conv2d_dims *d) {
    /* dweight (Co, Ci, 3, 3) += the gradient of conv3x3(in (B, Ci, H, W), pad 1) given dout (B, Co, H, W) */
    DF_CHECK(conv2d_winograd_shape(d), "conv2d_weight_grad_winograd: not a 3x3 stride-1 padding-1 convolution");
    size_t Ci = d->C_in, Co = d->C_out, th = (d->H + 1) / 2, tw = (d->W + 1) / 2, rows_total = d->B * th;
    size_t tiles = WG_DW_BYTES / (16 * sizeof(float) * (Ci + Co));
    if (tiles < WG_DW_MIN_TILES) tiles = WG_DW_MIN_TILES;
    size_t per = tiles / tw ? tiles / tw : 1, chunks = (rows_total + per - 1) / per, Nmax = per * tw;
    float *dU = df_scratch(WG_SLOT_U, 16 * Co * Ci);
    memset(dU, 0, 16 * Co * Ci * sizeof(float));
    /* Each thread owns a range of the 16 positions for the whole batch: it transforms every chunk, but only
     * the row combinations its positions need (r = xi / 4), and sums its dU[xi] over the chunks in order. Its
     * V and dM never leave its cache, and there is no barrier per chunk; every dU[xi] gets the same sums
     * whatever the thread count (the same bits as the team on each chunk, which split the transforms by channel
     * and the GEMMs by position, and read half of V and dM from the other core). Batch 64, 2 threads, caches
     * flushed, team -> owned: 128->128 at 14x14 17.8 -> 15.1 and 16.3 -> 15.2 ms, 64->64 at 28x28 unchanged
     * (23.8 -> 23.4, 22.8 -> 22.7). */
#pragma omp parallel
    {
        size_t T = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        int x0 = (int)(16 * t / T), x1 = (int)(16 * (t + 1) / T);
        unsigned rows = 0;
        for (int xi = x0; xi < x1; xi++) rows |= 1u << (xi / 4);
        float *V = df_scratch(WG_SLOT_V, 16 * Ci * Nmax), *dM = df_scratch(WG_SLOT_M, 16 * Co * Nmax);
        float *buf = df_scratch(WG_SLOT_BUF, 16 * Nmax);
        for (size_t c = 0; c < chunks && x0 < x1; c++) {
            size_t row0 = c * per, nr = rows_total - row0 < per ? rows_total - row0 : per, n = nr * tw;
            transform_inputs(V, in, d, th, tw, row0, nr, buf, 0, Ci, rows);
            transform_outgrad(dM, dout, d, th, tw, row0, nr, 0, Co, rows);
            for (int xi = x0; xi < x1; xi++) /* dU[xi] (Co, Ci) += dM[xi] (Co, n) V[xi]^T (n, Ci) */
                gemm(0, 1, Co, Ci, n, 1.0f, dM + (size_t)xi * Co * n, n, V + (size_t)xi * Ci * n, n, 1.0f,
                     dU + (size_t)xi * Co * Ci, Ci);
        }
    }
    /* dg = G^T dU G per (o, i): rows then columns, each (u0, u1, u2, u3) -> (u0 + (u1 + u2) / 2, (u1 - u2) / 2,
     * (u1 + u2) / 2 + u3) */
    ptrdiff_t pairs = (ptrdiff_t)(Co * Ci);
#pragma omp parallel for schedule(static) if (pairs > 4096)
    for (ptrdiff_t oi = 0; oi < pairs; oi++) {
        float u[16], t[3][4];
        for (int x = 0; x < 16; x++) u[x] = dU[(size_t)x * Co * Ci + (size_t)oi];
        for (int k = 0; k < 4; k++) {
            float u0 = u[k], u1 = u[4 + k], u2 = u[8 + k], u3 = u[12 + k];
            t[0][k] = u0 + 0.5f * (u1 + u2);
            t[1][k] = 0.5f * (u1 - u2);
            t[2][k] = 0.5f * (u1 + u2) + u3;
        }
        float *g = dweight + (size_t)oi * 9;
        for (int r = 0; r < 3; r++) {
            g[r * 3 + 0] += t[r][0] + 0.5f * (t[r][1] + t[r][2]);
            g[r * 3 + 1] += 0.5f * (t[r][1] - t[r][2]);
            g[r * 3 + 2] += 0.5f * (t[r][1] + t[r][2]) + t[r][3];
        }
    }
}
