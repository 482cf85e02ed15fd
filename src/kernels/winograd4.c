/* winograd4.c: 3x3, stride-1, padding-1 convolution by Winograd's F(4x4, 3x3) (Lavin & Gray 2016, points 0,
 * 1, -1, 2, -2): 36 multiplies per 4x4 output tile and input channel instead of 144, against F(2x2, 3x3)'s 16
 * per 2x2 tile (winograd.c): 1.78x fewer than that. conv2d_forward uses it at 28x28 and up: sampling, and in
 * training the forward and the input gradient (the forward of the rotated weights); the weight gradient is
 * F(2x2, 3x3)'s (winograd.c).
 *
 *   U = G g G^T      (weights: 3x3 -> 6x6)
 *   V = B^T d B      (the 6x6 input patch of a tile, overlapping its neighbours by 2)
 *   M[xi] = U[xi] V[xi] for each of the 36 positions: 36 GEMMs (C_out x C_in) (C_in x tiles)
 *   Y = A^T m A      (6x6 -> the 4x4 outputs)
 * with
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1],
 *   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
 * Exact in exact arithmetic; in FP32 the transforms' larger coefficients give a few times F(2x2, 3x3)'s
 * rounding error (measured in the tests against conv2d_forward_ref). */
#include <string.h>

#include "base/base.h"
#include "kernels.h"
#include "winograd_internal.h"

#ifndef WG4_TILES
#define WG4_TILES 256 /* tiles per chunk (128 to 256 and 4 to 8 MB by channels measured; 256 as good or better) */
#endif
#ifndef WG4_MIN_TILES
#define WG4_MIN_TILES 49 /* 4x4 tiles per image: 28x28 and larger */
#endif

int conv2d_winograd4_applies(const conv2d_dims *d) {
    if (gemm_bf16_on()) return 0; /* as F(2x2, 3x3): BF16 products take the direct GEMMs */
    return conv2d_winograd_shape(d) && ((d->H + 3) / 4) * ((d->W + 3) / 4) >= WG4_MIN_TILES;
}

size_t conv2d_winograd4_weights_size(const conv2d_dims *d) { return 36 * gemm_packed_a_size(d->C_out, d->C_in); }

/* Up[xi] = (G g G^T)[xi] of each weight g = weight[o][i] (3x3), computed in double and rounded once, written
 * into gemm_pack_a's layout as in winograd.c's transform_weights. */
void conv2d_winograd4_pack_weights(float *Up, const float *weight, const conv2d_dims *d) {
    /* Up (36, packed Co x Ci) <- weight (Co, Ci, 3, 3) */
    enum { MR = GEMM_MR_PUBLIC };
    static const double G[6][3] = {{1.0 / 4, 0, 0},
                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                   {0, 0, 1}};
    size_t Co = d->C_out, Ci = d->C_in, ap = gemm_packed_a_size(Co, Ci);
    ptrdiff_t rows = (ptrdiff_t)((Co + MR - 1) / MR * MR);
#pragma omp parallel for schedule(static) if (Co * Ci > 4096)
    for (ptrdiff_t o = 0; o < rows; o++) {
        float *panel = Up + (size_t)o / MR * MR * Ci + (size_t)o % MR;
        for (size_t i = 0; i < Ci; i++) {
            double u[36] = {0};
            if ((size_t)o < Co) {
                const float *g = weight + ((size_t)o * Ci + i) * 9;
                double t[6][3]; /* G g */
                for (int r = 0; r < 6; r++)
                    for (int c = 0; c < 3; c++) t[r][c] = G[r][0] * g[c] + G[r][1] * g[3 + c] + G[r][2] * g[6 + c];
                for (int r = 0; r < 6; r++) /* (G g) G^T */
                    for (int c = 0; c < 6; c++) u[r * 6 + c] = t[r][0] * G[c][0] + t[r][1] * G[c][1] + t[r][2] * G[c][2];
            }
            for (int xi = 0; xi < 36; xi++) panel[(size_t)xi * ap + i * MR] = (float)u[xi];
        }
    }
}

/* B^T applied to six values a[0..5] spaced s apart, into six outputs spaced t apart: the rows of B^T. */
#define BT6(o, t, a, s)                                                                                            \
    do {                                                                                                           \
        float a0_ = (a)[0], a1_ = (a)[(s)], a2_ = (a)[2 * (s)], a3_ = (a)[3 * (s)], a4_ = (a)[4 * (s)];              \
        float a5_ = (a)[5 * (s)];                                                                                  \
        (o)[0] = 4.0f * a0_ - 5.0f * a2_ + a4_;                                                                    \
        (o)[(t)] = a3_ + a4_ - 4.0f * (a1_ + a2_);                                                                 \
        (o)[2 * (t)] = a4_ - a3_ + 4.0f * (a1_ - a2_);                                                             \
        (o)[3 * (t)] = a4_ - a2_ + 2.0f * (a3_ - a1_);                                                             \
        (o)[4 * (t)] = a4_ - a2_ + 2.0f * (a1_ - a3_);                                                             \
        (o)[5 * (t)] = 4.0f * a1_ - 5.0f * a3_ + a5_;                                                              \
    } while (0)

/* The column transform of one input row for every tile of the row, for rows of at most 32 pixels (8 tiles):
 * the row in two registers (zero past W), each tile's six pixels 4 tx - 1 + j gathered lane by lane (zero at
 * -1 and past 31), then BT6's combinations for all the tiles at once, stored at h[k N]. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void column_transform4_32(float *h, size_t N, const float *xr, size_t W,
                                                                   size_t tw) {
    __mmask16 m0, m1;
    winograd_row_masks(W, &m0, &m1);
    __m512 lo = _mm512_maskz_loadu_ps(m0, xr), hi = _mm512_maskz_loadu_ps(m1, xr + 16);
    __m512 a[6];
    for (int j = 0; j < 6; j++) {
        __m512i idx = _mm512_add_epi32(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 28, 24, 20, 16, 12, 8, 4, 0),
                                       _mm512_set1_epi32(j - 1));
        __mmask16 keep = (__mmask16)(j == 0 ? 0xfe : j == 5 ? 0x7f : 0xff); /* columns -1 and 32 are padding */
        a[j] = _mm512_maskz_permutex2var_ps(keep, lo, _mm512_and_si512(idx, _mm512_set1_epi32(31)), hi);
    }
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
    __m512 o[6];
    o[0] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, a[0]), _mm512_mul_ps(five, a[2])), a[4]);
    o[1] = _mm512_sub_ps(_mm512_add_ps(a[3], a[4]), _mm512_mul_ps(four, _mm512_add_ps(a[1], a[2])));
    o[2] = _mm512_add_ps(_mm512_sub_ps(a[4], a[3]), _mm512_mul_ps(four, _mm512_sub_ps(a[1], a[2])));
    o[3] = _mm512_add_ps(_mm512_sub_ps(a[4], a[2]), _mm512_mul_ps(two, _mm512_sub_ps(a[3], a[1])));
    o[4] = _mm512_add_ps(_mm512_sub_ps(a[4], a[2]), _mm512_mul_ps(two, _mm512_sub_ps(a[1], a[3])));
    o[5] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, a[1]), _mm512_mul_ps(five, a[3])), a[5]);
    __mmask16 mt = (__mmask16)((1u << tw) - 1);
    for (int k = 0; k < 6; k++) _mm512_mask_storeu_ps(h + (size_t)k * N, mt, o[k]);
}

/* The last step of transform_outputs4 for an output row of at most 32 pixels: the four outputs of each tile
 * from t[c N + tx] (c < 6), + bias, interleaved into pixel order in registers, then + *cadd and + rrow (either
 * NULL) and stored W at a time. */
__attribute__((target("avx512f"))) static void output_row4_32(float *orow, const float *t, size_t N, float bv,
                                                              size_t W, size_t tw, const float *cadd,
                                                              const float *rrow) {
    __mmask16 mt = (__mmask16)((1u << tw) - 1);
    __m512 t0 = _mm512_maskz_loadu_ps(mt, t), t1 = _mm512_maskz_loadu_ps(mt, t + N);
    __m512 t2 = _mm512_maskz_loadu_ps(mt, t + 2 * N), t3 = _mm512_maskz_loadu_ps(mt, t + 3 * N);
    __m512 t4 = _mm512_maskz_loadu_ps(mt, t + 4 * N), t5 = _mm512_maskz_loadu_ps(mt, t + 5 * N);
    __m512 p = _mm512_add_ps(t1, t2), q = _mm512_sub_ps(t1, t2), u = _mm512_add_ps(t3, t4), v = _mm512_sub_ps(t3, t4);
    __m512 b = _mm512_set1_ps(bv);
    __m512 y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(t0, p), u), b);
    __m512 y1 = _mm512_add_ps(_mm512_add_ps(q, _mm512_mul_ps(_mm512_set1_ps(2.0f), v)), b);
    __m512 y2 = _mm512_add_ps(_mm512_add_ps(p, _mm512_mul_ps(_mm512_set1_ps(4.0f), u)), b);
    __m512 y3 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(q, _mm512_mul_ps(_mm512_set1_ps(8.0f), v)), t5), b);
    /* pixel 4 tx + c: y0, y1 from lanes tx (a), y2, y3 (b) */
    const __m512i ia = _mm512_set_epi32(0, 0, 19, 3, 0, 0, 18, 2, 0, 0, 17, 1, 0, 0, 16, 0);
    const __m512i ib = _mm512_set_epi32(19, 3, 0, 0, 18, 2, 0, 0, 17, 1, 0, 0, 16, 0, 0, 0);
    const __m512i four = _mm512_set1_epi32(4);
    __m512 v0 = _mm512_mask_blend_ps(0xcccc, _mm512_permutex2var_ps(y0, ia, y1), _mm512_permutex2var_ps(y2, ib, y3));
    __m512 v1 = _mm512_mask_blend_ps(0xcccc, _mm512_permutex2var_ps(y0, _mm512_add_epi32(ia, four), y1),
                                     _mm512_permutex2var_ps(y2, _mm512_add_epi32(ib, four), y3));
    winograd_store_row32(orow, v0, v1, W, cadd, rrow);
}
#else
static void column_transform4_32(float *h, size_t N, const float *xr, size_t W, size_t tw) {
    (void)h, (void)N, (void)xr, (void)W, (void)tw;
}
static void output_row4_32(float *orow, const float *t, size_t N, float bv, size_t W, size_t tw, const float *cadd,
                           const float *rrow) {
    (void)orow, (void)t, (void)N, (void)bv, (void)W, (void)tw, (void)cadd, (void)rrow;
}
#endif

/* V[xi][i][n] = (B^T d B)[xi] for tile n of tile rows [row0, row0 + nrows) (input rows 4 ty - 1 .. 4 ty + 4,
 * columns 4 tx - 1 .. 4 tx + 4, zero outside the image), input channels [i0, i1). Per channel and tile row:
 * each of its six input rows into a zero-padded copy, then the column transform of every tile of the row (the
 * six values h[r][k] of row r), then the row transform over all the chunk's tiles at once. h: 36 N + 4 tw + 8. */
DF_CLONES static void transform_inputs4(float *V, const float *in, const conv2d_dims *d, size_t th, size_t tw,
                                        size_t row0, size_t nrows, float *h, size_t i0, size_t i1) {
    /* V (36, Ci, nrows * tw) <- tile rows of input channels [i0, i1) of in (B, Ci, H, W) */
    size_t Ci = d->C_in, H = d->H, W = d->W, N = nrows * tw;
    float *pad = h + 36 * N; /* one input row: pad[1 + x] = row[x], zero at -1 and past W */
    memset(pad, 0, (4 * tw + 2) * sizeof(float));
    for (size_t i = i0; i < i1; i++) {
        winograd_prefetch_ahead(in, Ci, H, W, th, 4, row0, nrows, i, i0, i1);
        for (size_t rr = 0; rr < nrows; rr++) {
            size_t b = (row0 + rr) / th, ty = (row0 + rr) % th;
            const float *x = in + (b * Ci + i) * H * W;
            for (int r = 0; r < 6; r++) {
                float *hr = h + (size_t)(r * 6) * N + rr * tw;
                ptrdiff_t y = (ptrdiff_t)(4 * ty) - 1 + r;
                if (y < 0 || y >= (ptrdiff_t)H) { /* a padding row */
                    for (int k = 0; k < 6; k++) memset(hr + (size_t)k * N, 0, tw * sizeof(float));
                    continue;
                }
                if (W <= 32 && winograd_have_avx512()) {
                    column_transform4_32(hr, N, x + (size_t)y * W, W, tw);
                    continue;
                }
                memcpy(pad + 1, x + (size_t)y * W, W * sizeof(float));
                for (size_t tx = 0; tx < tw; tx++) BT6(hr + tx, N, pad + 4 * tx, 1);
            }
        }
        for (int k = 0; k < 6; k++) { /* the row transform: V[r * 6 + k] = sum_j B^T[r][j] h[j][k] */
            const float *a0 = h + (size_t)(0 * 6 + k) * N, *a1 = h + (size_t)(1 * 6 + k) * N;
            const float *a2 = h + (size_t)(2 * 6 + k) * N, *a3 = h + (size_t)(3 * 6 + k) * N;
            const float *a4 = h + (size_t)(4 * 6 + k) * N, *a5 = h + (size_t)(5 * 6 + k) * N;
            float *v[6];
            for (int r = 0; r < 6; r++) v[r] = V + ((size_t)(r * 6 + k) * Ci + i) * N;
            float *v0 = v[0], *v1 = v[1], *v2 = v[2], *v3 = v[3], *v4 = v[4], *v5 = v[5];
#pragma omp simd
            for (size_t n = 0; n < N; n++) {
                v0[n] = 4.0f * a0[n] - 5.0f * a2[n] + a4[n];
                v1[n] = a3[n] + a4[n] - 4.0f * (a1[n] + a2[n]);
                v2[n] = a4[n] - a3[n] + 4.0f * (a1[n] - a2[n]);
                v3[n] = a4[n] - a2[n] + 2.0f * (a3[n] - a1[n]);
                v4[n] = a4[n] - a2[n] + 2.0f * (a1[n] - a3[n]);
                v5[n] = 4.0f * a1[n] - 5.0f * a3[n] + a5[n];
            }
        }
    }
}

/* out[b][o] 4x4 block of tile n = A^T m A + bias, m[xi] = M[xi][o][n]; outputs past the image edge are
 * dropped. Per output channel: A^T m over all the chunk's tiles at once (s[r][c], r < 4, c < 6), then each
 * output row's tiles. Then + chan[b * Co + o] and + res element by element (either NULL), each output first
 * rounded as the convolution's, as winograd.c's transform_outputs. buf: 24 N + 4 tw. */
DF_CLONES static void transform_outputs4(float *out, const float *M, const float *bias, const conv2d_dims *d,
                                         size_t th, size_t tw, size_t row0, size_t nrows, float *buf, size_t o0,
                                         size_t o1, const float *chan, const float *res) {
    /* tile rows of output channels [o0, o1) of out (B, Co, H, W) <- M (36, Co, nrows * tw), + chan, + res */
    size_t Co = d->C_out, H = d->H, W = d->W, N = nrows * tw;
    float *s = buf, *row = buf + 24 * N;
    for (size_t o = o0; o < o1; o++) {
        float bv = bias ? bias[o] : 0.0f;
        for (int c = 0; c < 6; c++) { /* A^T m, column c */
            const float *m[6];
            for (int j = 0; j < 6; j++) m[j] = M + ((size_t)(j * 6 + c) * Co + o) * N;
            const float *m0 = m[0], *m1 = m[1], *m2 = m[2], *m3 = m[3], *m4 = m[4], *m5 = m[5];
            float *s0 = s + (size_t)c * N, *s1 = s + (size_t)(6 + c) * N;
            float *s2 = s + (size_t)(12 + c) * N, *s3 = s + (size_t)(18 + c) * N;
#pragma omp simd
            for (size_t n = 0; n < N; n++) {
                float p = m1[n] + m2[n], q = m1[n] - m2[n], u = m3[n] + m4[n], v = m3[n] - m4[n];
                s0[n] = m0[n] + p + u;
                s1[n] = q + 2.0f * v;
                s2[n] = p + 4.0f * u;
                s3[n] = q + 8.0f * v + m5[n];
            }
        }
        for (size_t rr = 0; rr < nrows; rr++) {
            size_t b = (row0 + rr) / th, ty = (row0 + rr) % th;
            float *y = out + (b * Co + o) * H * W;
            for (int r = 0; r < 4; r++) { /* (A^T m) A: four outputs per tile and row */
                size_t yy = 4 * ty + (size_t)r;
                if (yy >= H) break;
                const float *t = s + (size_t)(r * 6) * N + rr * tw;
                float *orow = y + yy * W;
                const float *ca = chan ? chan + b * Co + o : NULL;
                const float *ra = res ? res + ((b * Co + o) * H + yy) * W : NULL;
                if (W <= 32 && winograd_have_avx512()) {
                    output_row4_32(orow, t, N, bv, W, tw, ca, ra);
                    continue;
                }
                for (size_t tx = 0; tx < tw; tx++) {
                    float t0 = t[tx], t1 = t[N + tx], t2 = t[2 * N + tx], t3 = t[3 * N + tx], t4 = t[4 * N + tx];
                    float t5 = t[5 * N + tx];
                    float p = t1 + t2, q = t1 - t2, u = t3 + t4, v = t3 - t4;
                    row[4 * tx + 0] = t0 + p + u + bv;
                    row[4 * tx + 1] = q + 2.0f * v + bv;
                    row[4 * tx + 2] = p + 4.0f * u + bv;
                    row[4 * tx + 3] = q + 8.0f * v + t5 + bv;
                }
                memcpy(orow, row, W * sizeof(float)); /* the last tile's outputs past W dropped */
                winograd_add_row(orow, ca, ra, W);
            }
        }
    }
}

/* The team on each chunk, for fewer chunks than threads (winograd_chunks): the input transform
 * split by input channel, the 36 GEMMs by position, the output transform by output channel; every value as the
 * chunk-per-thread loop computes it. */
static void forward4_chunks_by_team(float *out, const float *in, const float *Up, const float *bias,
                                    const conv2d_dims *d, size_t per, size_t chunks, const float *chan,
                                    const float *res) {
    size_t Ci = d->C_in, Co = d->C_out, th = (d->H + 3) / 4, tw = (d->W + 3) / 4, rows = d->B * th, N = per * tw;
    float *V = df_scratch(WG_SLOT_V, 36 * Ci * N), *M = df_scratch(WG_SLOT_M, 36 * Co * N); /* shared */
#pragma omp parallel
    {
        float *buf = df_scratch(WG_SLOT_BUF, 36 * N + 4 * tw + 8);
        for (size_t c = 0; c < chunks; c++) {
            size_t row0 = c * per, nr = rows - row0 < per ? rows - row0 : per, n = nr * tw;
#pragma omp for schedule(static)
            for (ptrdiff_t i = 0; i < (ptrdiff_t)Ci; i++)
                transform_inputs4(V, in, d, th, tw, row0, nr, buf, (size_t)i, (size_t)i + 1);
#pragma omp for schedule(static)
            for (int xi = 0; xi < 36; xi++) winograd_position_gemm(M, V, Up, xi, Co, Ci, n);
#pragma omp for schedule(static)
            for (ptrdiff_t o = 0; o < (ptrdiff_t)Co; o++)
                transform_outputs4(out, M, bias, d, th, tw, row0, nr, buf, (size_t)o, (size_t)o + 1, chan, res);
        }
    }
}

void conv2d_forward_winograd4_packed_add(float *out, const float *in, const float *Up, const float *bias,
                                         const conv2d_dims *d, const float *chan, const float *res) {
    /* out (B, Co, H, W) = conv3x3(in (B, Ci, H, W), U packed by conv2d_winograd4_pack_weights, pad 1) + bias,
     * then + chan (B, Co) per channel and + res (B, Co, H, W) */
    DF_CHECK(conv2d_winograd_shape(d), "conv2d_forward_winograd4: not a 3x3 stride-1 padding-1 convolution");
    size_t Ci = d->C_in, Co = d->C_out, th = (d->H + 3) / 4, tw = (d->W + 3) / 4, rows = d->B * th, per, chunks;
    if (winograd_chunks(rows, tw, WG4_TILES, &per, &chunks)) { /* a batch of one */
        forward4_chunks_by_team(out, in, Up, bias, d, per, chunks, chan, res);
        return;
    }
#pragma omp parallel
    {
        size_t N = per * tw;
        float *V = df_scratch(WG_SLOT_V, 36 * Ci * N), *M = df_scratch(WG_SLOT_M, 36 * Co * N);
        float *buf = df_scratch(WG_SLOT_BUF, 36 * N + 4 * tw + 8); /* the larger of the transforms' */
#pragma omp for schedule(dynamic, 1)
        for (ptrdiff_t c = 0; c < (ptrdiff_t)chunks; c++) {
            size_t row0 = (size_t)c * per, nr = rows - row0 < per ? rows - row0 : per, n = nr * tw;
            transform_inputs4(V, in, d, th, tw, row0, nr, buf, 0, Ci);
            for (int xi = 0; xi < 36; xi++) winograd_position_gemm(M, V, Up, xi, Co, Ci, n);
            transform_outputs4(out, M, bias, d, th, tw, row0, nr, buf, 0, Co, chan, res);
        }
    }
}

void conv2d_forward_winograd4(float *out, const float *in, const float *weight, const float *bias,
                              const conv2d_dims *d) {
    /* out (B, Co, H, W) = conv3x3(in (B, Ci, H, W), weight (Co, Ci, 3, 3), pad 1) + bias */
    float *Up = df_scratch(WG_SLOT_U, conv2d_winograd4_weights_size(d));
    conv2d_winograd4_pack_weights(Up, weight, d);
    conv2d_forward_winograd4_packed_add(out, in, Up, bias, d, NULL, NULL);
}
