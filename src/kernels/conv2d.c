/* conv2d.c: 2-D convolution (cross-correlation, as torch.nn.Conv2d) with any kernel size, stride and
 * asymmetric zero padding, forward and backward, NCHW activations and OIHW weights.
 *
 * The fast versions lower each image to a GEMM: im2col writes the (C_in*KH*KW, H_out*W_out) column matrix
 * of one image into df_scratch slot 0, and out_b (C_out, HWo) = weight (C_out, C_in*KH*KW) * col. A 1x1,
 * stride-1, unpadded convolution uses the image itself as the column matrix. Backward computes, per image,
 * dweight += dout_b col^T and dcol = weight^T dout_b (slot 1), then col2im adds dcol into din.
 * The _ref versions are direct loops over the definition, accumulating in double.
 */
#include "kernels.h"

#include "base/base.h"

#ifdef _OPENMP
#include <omp.h>
#include <string.h>
#endif

#define CONV_SLOT_DCOL 1
#define CONV_SLOT_WPACK 1   /* forward: the packed weights */
#define CONV_SLOT_WTPACK 4  /* backward: the packed transposed weights (gemm itself uses slots 2 and 3) */
#define CONV_SLOT_WROT 6    /* backward by Winograd: the rotated, transposed weights */
#define CONV_SLOT_DINW 7    /* backward by Winograd: the input gradient before it is added */
#define CONV_SLOT_DWPART 8  /* 1x1 backward by chunks of images: the weight gradient's partial sum per chunk */
#define DW_CHUNK 4          /* images per partial sum of the weight gradient */

/* ---- shapes ---- */

size_t conv2d_out_h(const conv2d_dims *d) {
    DF_CHECK(d->stride > 0 && d->H + d->pad_t + d->pad_b >= d->KH,
             "conv2d: kernel height %zu larger than padded input height %zu (or stride 0)", d->KH,
             d->H + d->pad_t + d->pad_b);
    return (d->H + d->pad_t + d->pad_b - d->KH) / d->stride + 1;
}

size_t conv2d_out_w(const conv2d_dims *d) {
    DF_CHECK(d->stride > 0 && d->W + d->pad_l + d->pad_r >= d->KW,
             "conv2d: kernel width %zu larger than padded input width %zu (or stride 0)", d->KW,
             d->W + d->pad_l + d->pad_r);
    return (d->W + d->pad_l + d->pad_r - d->KW) / d->stride + 1;
}

/* ---- reference ---- */

/* conv2d_forward_ref: out[b,o,y,x] = bias[o] + sum_{c,i,j} weight[o,c,i,j] in[b,c,y*s+i-pad_t,x*s+j-pad_l],
 * taps outside the input being zero. Overwrites out. */
void conv2d_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                        const conv2d_dims *d) {
    /* out (B, C_out, Ho, Wo) = conv(in (B, C_in, H, W), weight (C_out, C_in, KH, KW)) + bias (C_out) */
    size_t Ho = conv2d_out_h(d), Wo = conv2d_out_w(d);
    for (size_t b = 0; b < d->B; b++)
        for (size_t o = 0; o < d->C_out; o++)
            for (size_t y = 0; y < Ho; y++)
                for (size_t x = 0; x < Wo; x++) {
                    double s = bias ? bias[o] : 0;
                    for (size_t c = 0; c < d->C_in; c++)
                        for (size_t i = 0; i < d->KH; i++)
                            for (size_t j = 0; j < d->KW; j++) {
                                ptrdiff_t iy = (ptrdiff_t)(y * d->stride + i) - (ptrdiff_t)d->pad_t;
                                ptrdiff_t ix = (ptrdiff_t)(x * d->stride + j) - (ptrdiff_t)d->pad_l;
                                if (iy < 0 || ix < 0 || iy >= (ptrdiff_t)d->H || ix >= (ptrdiff_t)d->W) continue;
                                s += (double)weight[((o * d->C_in + c) * d->KH + i) * d->KW + j] *
                                     in[((b * d->C_in + c) * d->H + (size_t)iy) * d->W + (size_t)ix];
                            }
                    out[((b * d->C_out + o) * Ho + y) * Wo + x] = (float)s;
                }
}

/* conv2d_backward_ref: the three gradients of conv2d_forward_ref, each element a sum in double over
 * everything it touched. din gathers, for each input pixel, the output positions whose window covers it.
 * Accumulates into din, dweight, dbias; NULL ones are skipped. */
void conv2d_backward_ref(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                         const float *weight, const conv2d_dims *d) {
    /* din (B, C_in, H, W), dweight (C_out, C_in, KH, KW), dbias (C_out) += from dout (B, C_out, Ho, Wo) */
    size_t Ho = conv2d_out_h(d), Wo = conv2d_out_w(d), s = d->stride;
    if (dbias)
        for (size_t o = 0; o < d->C_out; o++) {
            double acc = 0;
            for (size_t b = 0; b < d->B; b++)
                for (size_t p = 0; p < Ho * Wo; p++) acc += dout[(b * d->C_out + o) * Ho * Wo + p];
            dbias[o] += (float)acc;
        }
    if (dweight)
        for (size_t o = 0; o < d->C_out; o++)
            for (size_t c = 0; c < d->C_in; c++)
                for (size_t i = 0; i < d->KH; i++)
                    for (size_t j = 0; j < d->KW; j++) {
                        double acc = 0;
                        for (size_t b = 0; b < d->B; b++)
                            for (size_t y = 0; y < Ho; y++)
                                for (size_t x = 0; x < Wo; x++) {
                                    ptrdiff_t iy = (ptrdiff_t)(y * s + i) - (ptrdiff_t)d->pad_t;
                                    ptrdiff_t ix = (ptrdiff_t)(x * s + j) - (ptrdiff_t)d->pad_l;
                                    if (iy < 0 || ix < 0 || iy >= (ptrdiff_t)d->H || ix >= (ptrdiff_t)d->W)
                                        continue;
                                    acc += (double)dout[((b * d->C_out + o) * Ho + y) * Wo + x] *
                                           in[((b * d->C_in + c) * d->H + (size_t)iy) * d->W + (size_t)ix];
                                }
                        dweight[((o * d->C_in + c) * d->KH + i) * d->KW + j] += (float)acc;
                    }
    if (din)
        for (size_t b = 0; b < d->B; b++)
            for (size_t c = 0; c < d->C_in; c++)
                for (size_t iy = 0; iy < d->H; iy++)
                    for (size_t ix = 0; ix < d->W; ix++) {
                        double acc = 0;
                        for (size_t o = 0; o < d->C_out; o++)
                            for (size_t i = 0; i < d->KH; i++)
                                for (size_t j = 0; j < d->KW; j++) {
                                    /* output (y, x) reads it through tap (i, j) if y*s + i == iy + pad_t */
                                    size_t ty = iy + d->pad_t, tx = ix + d->pad_l;
                                    if (ty < i || tx < j || (ty - i) % s || (tx - j) % s) continue;
                                    size_t y = (ty - i) / s, x = (tx - j) / s;
                                    if (y >= Ho || x >= Wo) continue;
                                    acc += (double)weight[((o * d->C_in + c) * d->KH + i) * d->KW + j] *
                                           dout[((b * d->C_out + o) * Ho + y) * Wo + x];
                                }
                        din[((b * d->C_in + c) * d->H + iy) * d->W + ix] += (float)acc;
                    }
}

/* ---- im2col / col2im ---- */

/* The outputs x in [x0, x1) whose input column x * stride + j - pad lies inside [0, W). */
static void valid_range(size_t *x0, size_t *x1, size_t j, size_t pad, size_t stride, size_t W, size_t Wo) {
    size_t lo = j >= pad ? 0 : (pad - j + stride - 1) / stride; /* first x with x*s + j >= pad */
    size_t hi = W + pad > j ? (W + pad - j + stride - 1) / stride : 0; /* first x with x*s + j >= W + pad */
    *x0 = lo < Wo ? lo : Wo;
    *x1 = hi < Wo ? hi : Wo;
    if (*x1 < *x0) *x1 = *x0;
}

/* col[(c*KH + i)*KW + j][y*Wo + x] = in[c][y*s + i - pad_t][x*s + j - pad_l], or 0 in the padding.
 * in is one image (C_in, H, W). Rows are independent; large images split them over threads. */
void conv2d_im2col(float *col, const float *in, const conv2d_dims *d, size_t Ho, size_t Wo) {
    /* col (C_in*KH*KW, Ho*Wo) <- in (C_in, H, W) */
    ptrdiff_t rows = (ptrdiff_t)(d->C_in * d->KH * d->KW);
#pragma omp parallel for schedule(static) if (rows * Ho * Wo > (1 << 16))
    for (ptrdiff_t r = 0; r < rows; r++) {
        size_t c = (size_t)r / (d->KH * d->KW), i = (size_t)r / d->KW % d->KH, j = (size_t)r % d->KW;
        float *dst = col + (size_t)r * Ho * Wo;
        const float *src = in + c * d->H * d->W;
        for (size_t y = 0; y < Ho; y++) {
            ptrdiff_t iy = (ptrdiff_t)(y * d->stride + i) - (ptrdiff_t)d->pad_t;
            float *drow = dst + y * Wo;
            if (iy < 0 || iy >= (ptrdiff_t)d->H) {
                for (size_t x = 0; x < Wo; x++) drow[x] = 0;
                continue;
            }
            const float *srow = src + (size_t)iy * d->W;
            size_t x0, x1; /* outputs [x0, x1) read inside the row; the rest is padding */
            valid_range(&x0, &x1, j, d->pad_l, d->stride, d->W, Wo);
            for (size_t x = 0; x < x0; x++) drow[x] = 0;
            if (d->stride == 1) {
                memcpy(drow + x0, srow + x0 + j - d->pad_l, (x1 - x0) * sizeof(float));
            } else {
                for (size_t x = x0; x < x1; x++) drow[x] = srow[x * d->stride + j - d->pad_l];
            }
            for (size_t x = x1; x < Wo; x++) drow[x] = 0;
        }
    }
}

/* The adjoint of im2col: din[c][y*s + i - pad_t][x*s + j - pad_l] += col[(c*KH + i)*KW + j][y*Wo + x].
 * Threads split the input channels, whose pixels are disjoint. */
void conv2d_col2im_add(float *din, const float *col, const conv2d_dims *d, size_t Ho, size_t Wo) {
    /* din (C_in, H, W) += col2im(col (C_in*KH*KW, Ho*Wo)) */
    ptrdiff_t C = (ptrdiff_t)d->C_in;
#pragma omp parallel for schedule(static) if (C * d->KH * d->KW * Ho * Wo > (1 << 16))
    for (ptrdiff_t c = 0; c < C; c++)
        for (size_t i = 0; i < d->KH; i++)
            for (size_t j = 0; j < d->KW; j++) {
                const float *src = col + (((size_t)c * d->KH + i) * d->KW + j) * Ho * Wo;
                float *dst = din + (size_t)c * d->H * d->W;
                for (size_t y = 0; y < Ho; y++) {
                    ptrdiff_t iy = (ptrdiff_t)(y * d->stride + i) - (ptrdiff_t)d->pad_t;
                    if (iy < 0 || iy >= (ptrdiff_t)d->H) continue;
                    size_t x0, x1;
                    valid_range(&x0, &x1, j, d->pad_l, d->stride, d->W, Wo);
                    float *drow = dst + (size_t)iy * d->W + j - d->pad_l; /* drow[x * stride], x in [x0, x1) */
                    const float *srow = src + y * Wo;
                    if (d->stride == 1)
                        for (size_t x = x0; x < x1; x++) drow[x] += srow[x];
                    else
                        for (size_t x = x0; x < x1; x++) drow[x * d->stride] += srow[x];
                }
            }
}

/* ---- implicit GEMM: the column matrix packed straight into GEMM panels ----
 * Instead of writing im2col's (K, P) matrix and packing it, these packers (gemm_pack_b_fn) fill each panel of
 * 16 columns from the image: pack_col gives B = col (depth K taps, columns P pixels), for the forward;
 * pack_colT gives B = col^T (depth P, columns K), for the weight gradient. Each panel value is a tap of the
 * image or 0 in the padding, exactly im2col's; the AVX-512 versions read 16 at a time: at stride 1 by masked
 * row loads from a table (pack_col_avx512, pack_colT_avx512), otherwise by gathers under a mask. */
typedef struct {
    const float *in; /* one image (C_in, H, W) */
    const conv2d_dims *d;
    size_t Ho, Wo;
} col_ctx;

/* the image value tap k = (c, i, j) reads for output pixel p, or 0 in the padding */
static inline float col_value(const col_ctx *cc, size_t k, size_t p) {
    const conv2d_dims *d = cc->d;
    size_t c = k / (d->KH * d->KW), i = k / d->KW % d->KH, j = k % d->KW, y = p / cc->Wo, x = p % cc->Wo;
    ptrdiff_t iy = (ptrdiff_t)(y * d->stride + i) - (ptrdiff_t)d->pad_t;
    ptrdiff_t ix = (ptrdiff_t)(x * d->stride + j) - (ptrdiff_t)d->pad_l;
    if (iy < 0 || ix < 0 || iy >= (ptrdiff_t)d->H || ix >= (ptrdiff_t)d->W) return 0;
    return cc->in[(c * d->H + (size_t)iy) * d->W + (size_t)ix];
}

/* Portable packers, element by element. */
static void pack_col_c(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    for (size_t c = 0; c < nc; c += 16)
        for (size_t k = 0; k < kc; k++)
            for (size_t l = 0; l < 16; l++)
                dst[c * kc + k * 16 + l] = c + l < nc ? col_value(ctx, p0 + k, j0 + c + l) : 0;
}

static void pack_colT_c(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    for (size_t c = 0; c < nc; c += 16)
        for (size_t k = 0; k < kc; k++)
            for (size_t l = 0; l < 16; l++)
                dst[c * kc + k * 16 + l] = c + l < nc ? col_value(ctx, j0 + c + l, p0 + k) : 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* pack_col, any shape: lanes are 16 pixels (their y * stride, x * stride fixed per panel); each depth row is
 * one tap. */
__attribute__((target("avx512f"))) static void pack_col_any_avx512(float *dst, size_t p0, size_t kc, size_t j0,
                                                               size_t nc, const void *ctx) {
    const col_ctx *cc = ctx;
    const conv2d_dims *d = cc->d;
    const int H = (int)d->H, W = (int)d->W, KH = (int)d->KH, KW = (int)d->KW, s = (int)d->stride;
    for (size_t c = 0; c < nc; c += 16) {
        int ys[16], xs[16];
        for (int l = 0; l < 16; l++) {
            size_t p = j0 + c + (size_t)l;
            ys[l] = (int)(p / cc->Wo) * s, xs[l] = (int)(p % cc->Wo) * s;
        }
        __m512i vy = _mm512_loadu_si512(ys), vx = _mm512_loadu_si512(xs);
        __m512i base = _mm512_add_epi32(_mm512_mullo_epi32(vy, _mm512_set1_epi32(W)), vx);
        __mmask16 lanes = (__mmask16)(nc - c >= 16 ? 0xffffu : (1u << (nc - c)) - 1);
        /* stride 1: the panel's pixels are runs along output rows; each run is one masked load (lanes l of
         * run r read row ry[r] at x = l + sh[r]) */
        int nrun = 0, ry[16], sh[16];
        __mmask16 rm[16];
        for (int l = 0; l < 16; l++) {
            if (l == 0 || ys[l] != ys[l - 1]) ry[nrun] = ys[l], sh[nrun] = xs[l] - l, rm[nrun++] = 0;
            rm[nrun - 1] |= (__mmask16)(1u << l);
        }
        int runs = s == 1;
        int ch = (int)(p0 / (size_t)(KH * KW)), i = (int)(p0 / (size_t)KW % (size_t)KH), j = (int)(p0 % (size_t)KW);
        float *out = dst + c * kc;
        for (size_t k = 0; k < kc; k++) {
            int di = i - (int)d->pad_t, dj = j - (int)d->pad_l;
            __m512i iy = _mm512_add_epi32(vy, _mm512_set1_epi32(di)), ix = _mm512_add_epi32(vx, _mm512_set1_epi32(dj));
            __mmask16 m = lanes & _mm512_cmplt_epu32_mask(iy, _mm512_set1_epi32(H)) &
                          _mm512_cmplt_epu32_mask(ix, _mm512_set1_epi32(W));
            const float *plane = cc->in + (size_t)ch * d->H * d->W;
            __m512 v;
            if (runs) {
                v = _mm512_setzero_ps();
                for (int r = 0; r < nrun; r++)
                    v = _mm512_mask_loadu_ps(v, m & rm[r], plane + (ptrdiff_t)(ry[r] + di) * W + sh[r] + dj);
            } else {
                __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(di * W + dj));
                v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, plane, 4);
            }
            _mm512_storeu_ps(out + k * 16, v);
            if (++j == KW) j = 0, ++i == KH ? (i = 0, ch++) : 0;
        }
    }
}

/* pack_colT, any shape: lanes are 16 taps (channel offset and kernel position fixed per panel); each depth row
 * is one pixel, gathered. */
__attribute__((target("avx512f"))) static void pack_colT_any_avx512(float *dst, size_t p0, size_t kc, size_t j0,
                                                                size_t nc, const void *ctx) {
    const col_ctx *cc = ctx;
    const conv2d_dims *d = cc->d;
    const int H = (int)d->H, W = (int)d->W, KH = (int)d->KH, KW = (int)d->KW, s = (int)d->stride;
    const int Wo = (int)cc->Wo;
    for (size_t c = 0; c < nc; c += 16) {
        int di[16], dj[16], off[16];
        for (int l = 0; l < 16; l++) {
            size_t k = j0 + c + (size_t)l;
            int ch = (int)(k / (size_t)(KH * KW)), i = (int)(k / (size_t)KW % (size_t)KH), j = (int)(k % (size_t)KW);
            di[l] = i - (int)d->pad_t, dj[l] = j - (int)d->pad_l;
            off[l] = c + (size_t)l < nc ? ch * H * W + di[l] * W + dj[l] : 0;
        }
        __m512i vdi = _mm512_loadu_si512(di), vdj = _mm512_loadu_si512(dj), voff = _mm512_loadu_si512(off);
        __mmask16 lanes = (__mmask16)(nc - c >= 16 ? 0xffffu : (1u << (nc - c)) - 1);
        int y = (int)(p0 / (size_t)Wo), x = (int)(p0 % (size_t)Wo);
        float *out = dst + c * kc;
        for (size_t k = 0; k < kc; k++) {
            __m512i iy = _mm512_add_epi32(vdi, _mm512_set1_epi32(y * s));
            __m512i ix = _mm512_add_epi32(vdj, _mm512_set1_epi32(x * s));
            __mmask16 m = lanes & _mm512_cmplt_epu32_mask(iy, _mm512_set1_epi32(H)) &
                          _mm512_cmplt_epu32_mask(ix, _mm512_set1_epi32(W));
            __m512i idx = _mm512_add_epi32(voff, _mm512_set1_epi32(y * s * W + x * s));
            _mm512_storeu_ps(out + k * 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, cc->in, 4));
            if (++x == Wo) x = 0, y++;
        }
    }
}

/* Stride 1 with at most COL_TAPS kernel positions: the packers below work from a table, per kernel position
 * (i, j) and per run of pixels along an output row, of the lanes that read the image (the rest are padding)
 * and the offset lane 0 of the run would read at, so that each panel row is one masked load per run. */
enum { COL_TAPS = 64 };

/* Pixels p0 .. p0 + n - 1 (n <= 16) as runs along output rows: lanes rm[u] of run u read output row ry[u] at
 * x = lane + sh[u]; xs[lane] is the lane's x (0 past n). Returns the number of runs. */
static int pixel_runs(size_t p0, int n, int Wo, int ry[16], int sh[16], __mmask16 rm[16], int xs[16]) {
    int nrun = 0, y = (int)(p0 / (size_t)Wo), x = (int)(p0 % (size_t)Wo);
    for (int l = 0; l < 16; l++) xs[l] = 0;
    for (int l = 0; l < n; l++) {
        if (nrun == 0 || y != ry[nrun - 1]) ry[nrun] = y, sh[nrun] = x - l, rm[nrun++] = 0;
        rm[nrun - 1] |= (__mmask16)(1u << l);
        xs[l] = x;
        if (++x == Wo) x = 0, y++;
    }
    return nrun;
}

/* The table for the runs of pixels p0 .. p0 + n - 1 (pixel_runs): for kernel position t and run u, the lanes
 * mt[t][u] that read the image and the plane offset ot[t][u] of lane 0. Runs from nrun to 1 get no lanes.
 * Returns the number of runs. */
__attribute__((target("avx512f"))) static int run_table(const col_ctx *cc, size_t p0, int n, __mmask16 mt[][16],
                                                        ptrdiff_t ot[][16]) {
    const conv2d_dims *d = cc->d;
    const int H = (int)d->H, W = (int)d->W, KW = (int)d->KW, taps = (int)(d->KH * d->KW);
    int ry[16], sh[16], xs[16];
    __mmask16 rm[16];
    int nrun = pixel_runs(p0, n, (int)cc->Wo, ry, sh, rm, xs);
    __m512i vx = _mm512_loadu_si512(xs);
    for (int t = 0; t < taps; t++) {
        int di = t / KW - (int)d->pad_t, dj = t % KW - (int)d->pad_l;
        __mmask16 mx = _mm512_cmplt_epu32_mask(_mm512_add_epi32(vx, _mm512_set1_epi32(dj)), _mm512_set1_epi32(W));
        for (int u = 0; u < (nrun < 2 ? 2 : nrun); u++) {
            int r = u < nrun ? u : 0;
            mt[t][u] = u < nrun && (unsigned)(ry[r] + di) < (unsigned)H ? mx & rm[r] : 0;
            ot[t][u] = (ptrdiff_t)(ry[r] + di) * W + sh[r] + dj;
        }
    }
    return nrun;
}

/* One tap's 16 lanes from its row of the run table: one masked load per run, zero where no lane reads. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 tap_lanes(const __mmask16 *m, const ptrdiff_t *o,
                                                                  const float *plane, int nrun) {
    __m512 v = _mm512_maskz_loadu_ps(m[0], plane + o[0]);
    if (nrun == 1) return v;
    v = _mm512_mask_loadu_ps(v, m[1], plane + o[1]);
    for (int u = 2; u < nrun; u++) v = _mm512_mask_loadu_ps(v, m[u], plane + o[u]);
    return v;
}

/* The 16 x 16 block r transposed in registers: r[i] lane j becomes r[j] lane i. */
__attribute__((target("avx512f"))) static inline void transpose16x16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++)
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]), t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), e = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c)), r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e)), r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            __m512 a = r[8 * i + j], b = r[8 * i + 4 + j];
            t[8 * i + j] = _mm512_shuffle_f32x4(a, b, 0x88), t[8 * i + 4 + j] = _mm512_shuffle_f32x4(a, b, 0xdd);
        }
    for (int j = 0; j < 8; j++)
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88), r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
}

/* kc panel rows of pack_col from the run table, from kernel position t of plane on. */
__attribute__((target("avx512f"), always_inline)) static inline void col_rows(float *out, size_t kc,
                                                                              __mmask16 mt[][16], ptrdiff_t ot[][16],
                                                                              const float *plane, size_t plane_sz,
                                                                              int t, int taps, int nrun) {
    for (size_t k = 0; k < kc; k++) {
        _mm512_storeu_ps(out + k * 16, tap_lanes(mt[t], ot[t], plane, nrun));
        if (++t == taps) t = 0, plane += plane_sz;
    }
}

/* pack_col at stride 1: per panel (16 pixels) the run table, then per tap one masked load per run. */
__attribute__((target("avx512f"))) static void pack_col_avx512(float *dst, size_t p0, size_t kc, size_t j0,
                                                               size_t nc, const void *ctx) {
    const col_ctx *cc = ctx;
    const conv2d_dims *d = cc->d;
    const int taps = (int)(d->KH * d->KW);
    if (d->stride != 1 || taps > COL_TAPS) {
        pack_col_any_avx512(dst, p0, kc, j0, nc, ctx);
        return;
    }
    const size_t plane_sz = d->H * d->W;
    __mmask16 mt[COL_TAPS][16];
    ptrdiff_t ot[COL_TAPS][16];
    for (size_t c = 0; c < nc; c += 16) {
        int nrun = run_table(cc, j0 + c, nc - c < 16 ? (int)(nc - c) : 16, mt, ot);
        int t = (int)(p0 % (size_t)taps);
        const float *plane = cc->in + p0 / (size_t)taps * plane_sz;
        float *out = dst + c * kc;
        if (nrun == 1) /* the same loop, compiled for one run and for two (most panels) */
            col_rows(out, kc, mt, ot, plane, plane_sz, t, taps, 1);
        else if (nrun == 2)
            col_rows(out, kc, mt, ot, plane, plane_sz, t, taps, 2);
        else
            col_rows(out, kc, mt, ot, plane, plane_sz, t, taps, nrun);
    }
}

/* pack_colT at stride 1: per block of 16 pixels (depth rows) the run table; then for each panel, each of its
 * 16 taps as one masked load per run (the tap's values over the 16 pixels), and the 16 x 16 block transposed
 * into panel rows. No gathers. */
__attribute__((target("avx512f"))) static void pack_colT_avx512(float *dst, size_t p0, size_t kc, size_t j0,
                                                                size_t nc, const void *ctx) {
    const col_ctx *cc = ctx;
    const conv2d_dims *d = cc->d;
    const int taps = (int)(d->KH * d->KW);
    if (d->stride != 1 || taps > COL_TAPS) {
        pack_colT_any_avx512(dst, p0, kc, j0, nc, ctx);
        return;
    }
    const size_t plane_sz = d->H * d->W;
    __mmask16 mt[COL_TAPS][16];
    ptrdiff_t ot[COL_TAPS][16];
    for (size_t k = 0; k < kc; k += 16) {
        int q = kc - k < 16 ? (int)(kc - k) : 16, nrun = run_table(cc, p0 + k, q, mt, ot);
        for (size_t c = 0; c < nc; c += 16) {
            int nl = nc - c < 16 ? (int)(nc - c) : 16, t = (int)((j0 + c) % (size_t)taps);
            const float *plane = cc->in + (j0 + c) / (size_t)taps * plane_sz;
            __m512 r[16];
            for (int l = 0; l < 16; l++) {
                r[l] = l < nl ? tap_lanes(mt[t], ot[t], plane, nrun) : _mm512_setzero_ps();
                if (l < nl && ++t == taps) t = 0, plane += plane_sz;
            }
            transpose16x16(r);
            float *out = dst + c * kc + k * 16;
            for (int b = 0; b < q; b++) _mm512_storeu_ps(out + b * 16, r[b]);
        }
    }
}
#endif

/* The packers for this CPU (and a switch for tests: force the portable ones). */
static int col_portable = 0;
void conv2d_force_portable_packers(int on) { col_portable = on; }

static gemm_pack_b_fn col_packer(int transposed) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (!col_portable && __builtin_cpu_supports("avx512f")) return transposed ? pack_colT_avx512 : pack_col_avx512;
#endif
    return transposed ? pack_colT_c : pack_col_c;
}

void conv2d_pack_col(float *dst, int transposed, const float *in, const conv2d_dims *d, size_t p0, size_t kc,
                     size_t j0, size_t nc) {
    col_ctx cc = {in, d, conv2d_out_h(d), conv2d_out_w(d)};
    col_packer(transposed)(dst, p0, kc, j0, nc, &cc);
}

/* A 1x1, stride-1, unpadded convolution: the image is its own column matrix. */
static int conv_is_pointwise(const conv2d_dims *d) {
    return d->KH == 1 && d->KW == 1 && d->stride == 1 && !d->pad_t && !d->pad_b && !d->pad_l && !d->pad_r;
}

/* ---- forward ---- */

/* One image: out_b (C_out, Ho*Wo) = weight (C_out, K) col (K, Ho*Wo) + bias, K = C_in*KH*KW; the weights come
 * packed (gemm_pack_a) once for the whole batch. */
static void conv_forward_image(float *out, const float *in, const float *wpacked, const float *bias,
                               const conv2d_dims *d, size_t Ho, size_t Wo) {
    /* out (C_out, Ho*Wo) <- in (C_in, H, W) */
    size_t K = d->C_in * d->KH * d->KW, P = Ho * Wo;
    float beta = 0;
    if (bias) {
        for (size_t o = 0; o < d->C_out; o++)
            for (size_t p = 0; p < P; p++) out[o * P + p] = bias[o];
        beta = 1;
    }
    if (conv_is_pointwise(d)) {
        gemm_plain_b_ctx b = {0, in, P};
        gemm_prepacked(d->C_out, P, K, 1.0f, wpacked, gemm_plain_b, &b, beta, out, P);
    } else {
        col_ctx cc = {in, d, Ho, Wo};
        gemm_prepacked(d->C_out, P, K, 1.0f, wpacked, col_packer(0), &cc, beta, out, P);
    }
}

/* The weights as conv2d_forward multiplies them: Winograd's transformed matrices, or packed for the GEMM
 * (with their BF16 copy in BF16 mode). */
size_t conv2d_weights_packed_size(const conv2d_dims *d) {
    if (conv2d_winograd_applies(d)) return conv2d_winograd_weights_size(d);
    return gemm_packed_a_size(d->C_out, d->C_in * d->KH * d->KW);
}

void conv2d_pack_weights(float *wp, const float *weight, const conv2d_dims *d) {
    size_t K = d->C_in * d->KH * d->KW;
    if (conv2d_winograd_applies(d))
        conv2d_winograd_pack_weights(wp, weight, d);
    else
        gemm_pack_a(wp, 0, weight, K, d->C_out, K, d->C_out * K > (1 << 16));
}

/* conv2d_forward_packed: conv2d_forward with the weights packed by conv2d_pack_weights (for the same dims and
 * precision). With at least as many images as threads, each thread convolves whole images (serial gemm);
 * otherwise images go one at a time through the parallel gemm. Either way every output is summed in the same
 * order. Overwrites out. */
void conv2d_forward_packed(float *out, const float *in, const float *wp, const float *bias, const conv2d_dims *d) {
    /* out (B, C_out, Ho, Wo) = conv(in (B, C_in, H, W), packed weights) + bias (C_out) */
    if (conv2d_winograd_applies(d)) {
        DF_CHECK(!omp_in_parallel(), "conv2d_forward_packed: Winograd weights inside a parallel region");
        conv2d_forward_winograd_packed(out, in, wp, bias, d);
        return;
    }
    size_t Ho = conv2d_out_h(d), Wo = conv2d_out_w(d), K = d->C_in * d->KH * d->KW;
    size_t in_sz = d->C_in * d->H * d->W, out_sz = d->C_out * Ho * Wo;
    ptrdiff_t B = (ptrdiff_t)d->B;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_in_parallel() ? 1 : omp_get_max_threads();
#endif
    double macs = (double)d->B * (double)out_sz * (double)K;
    int by_image = threads > 1 && B >= threads && macs > (double)(1 << 18); /* tiny ones stay serial */
    if (by_image) { /* a region only for a team (kernels.h) */
#pragma omp parallel for schedule(dynamic, 1)
        for (ptrdiff_t b = 0; b < B; b++)
            conv_forward_image(out + (size_t)b * out_sz, in + (size_t)b * in_sz, wp, bias, d, Ho, Wo);
    } else {
        for (ptrdiff_t b = 0; b < B; b++)
            conv_forward_image(out + (size_t)b * out_sz, in + (size_t)b * in_sz, wp, bias, d, Ho, Wo);
    }
}

/* conv2d_forward: same result as conv2d_forward_ref; the weights are packed (or transformed) for this call. */
void conv2d_forward(float *out, const float *in, const float *weight, const float *bias, const conv2d_dims *d) {
    /* out (B, C_out, Ho, Wo) = conv(in (B, C_in, H, W), weight (C_out, C_in, KH, KW)) + bias (C_out) */
    if (conv2d_winograd_applies(d) && !omp_in_parallel()) {
        conv2d_forward_winograd(out, in, weight, bias, d);
        return;
    }
    size_t K = d->C_in * d->KH * d->KW;
    float *wp = df_scratch(CONV_SLOT_WPACK, gemm_packed_a_size(d->C_out, K));
    gemm_pack_a(wp, 0, weight, K, d->C_out, K, 0);
    size_t Ho = conv2d_out_h(d), Wo = conv2d_out_w(d), in_sz = d->C_in * d->H * d->W, out_sz = d->C_out * Ho * Wo;
    if (omp_in_parallel()) { /* inside a parallel region: serially, the direct way */
        for (size_t b = 0; b < d->B; b++)
            conv_forward_image(out + b * out_sz, in + b * in_sz, wp, bias, d, Ho, Wo);
        return;
    }
    conv2d_forward_packed(out, in, wp, bias, d); /* the direct path: Winograd does not apply here */
}

/* ---- backward ---- */

/* One image's share of backward by GEMM: dweight (C_out, K) += dout_b (C_out, P) col^T (P, K) (or = when
 * first), din_b += col2im(weight^T dout_b); NULL skips either. wtp: weight^T packed (gemm_pack_a). */
static void backward_image(float *din, float *dweight, int first, const float *g, const float *x,
                           const float *wtp, const conv2d_dims *d, size_t Ho, size_t Wo) {
    size_t P = Ho * Wo, K = d->C_in * d->KH * d->KW;
    float beta = first ? 0.0f : 1.0f;
    if (dweight) {
        if (conv_is_pointwise(d)) {
            gemm(0, 1, d->C_out, K, P, 1.0f, g, P, x, P, beta, dweight, K);
        } else {
            col_ctx cc = {x, d, Ho, Wo};
            gemm_packed_b(0, d->C_out, K, P, 1.0f, g, P, col_packer(1), &cc, beta, dweight, K);
        }
    }
    if (din) { /* dcol (K, P) = weight^T (K, C_out) dout_b (C_out, P), then din_b += col2im(dcol) */
        gemm_plain_b_ctx gb = {0, g, P};
        if (conv_is_pointwise(d)) {
            gemm_prepacked(K, P, d->C_out, 1.0f, wtp, gemm_plain_b, &gb, 1.0f, din, P);
        } else {
            float *dcol = df_scratch(CONV_SLOT_DCOL, K * P);
            gemm_prepacked(K, P, d->C_out, 1.0f, wtp, gemm_plain_b, &gb, 0.0f, dcol, P);
            conv2d_col2im_add(din, dcol, d, Ho, Wo);
        }
    }
}

/* A packer for columns [k0, k0 + N) of another packer's B: what gemm sees as column j is column k0 + j. */
typedef struct {
    gemm_pack_b_fn packb;
    const void *ctx;
    size_t k0;
} col_range;

static void pack_range(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    const col_range *cr = ctx;
    cr->packb(dst, p0, kc, cr->k0 + j0, nc, cr->ctx);
}

/* Images [DW_CHUNK c, DW_CHUNK (c + 1)) of the batch: their input gradients, and their weight gradient's sum
 * into part + c C_out K (when part is not NULL). */
static void backward_chunk(float *din, float *part, size_t c, const float *dout, const float *in, const float *wtp,
                           const conv2d_dims *d, size_t Ho, size_t Wo) {
    size_t in_sz = d->C_in * d->H * d->W, out_sz = d->C_out * Ho * Wo, K = d->C_in * d->KH * d->KW;
    size_t b0 = c * DW_CHUNK, b1 = b0 + DW_CHUNK < d->B ? b0 + DW_CHUNK : d->B;
    for (size_t b = b0; b < b1; b++)
        backward_image(din ? din + b * in_sz : NULL, part ? part + c * d->C_out * K : NULL, b == b0, dout + b * out_sz,
                       in + b * in_sz, wtp, d, Ho, Wo);
}

/* conv2d_backward: same gradients as conv2d_backward_ref, accumulated (+=); NULL gradients skipped.
 * Sums are in an order fixed by the batch alone (see the team path below), not by the thread count. */
void conv2d_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                     const float *weight, const conv2d_dims *d) {
    /* din (B, C_in, H, W), dweight (C_out, C_in, KH, KW), dbias (C_out) += from dout (B, C_out, Ho, Wo) */
    size_t Ho = conv2d_out_h(d), Wo = conv2d_out_w(d), P = Ho * Wo, K = d->C_in * d->KH * d->KW;
    size_t in_sz = d->C_in * d->H * d->W, out_sz = d->C_out * P;
    int pointwise = conv_is_pointwise(d);
    if (dbias) {
        ptrdiff_t C_out = (ptrdiff_t)d->C_out;
#pragma omp parallel for schedule(static) if (d->B * out_sz > (1 << 16))
        for (ptrdiff_t o = 0; o < C_out; o++) {
            double acc = 0;
            for (size_t b = 0; b < d->B; b++) {
                const float *g = dout + b * out_sz + (size_t)o * P;
                float part = 0; /* one image's plane in float, the planes in double */
                for (size_t p = 0; p < P; p++) part += g[p];
                acc += part;
            }
            dbias[o] += (float)acc;
        }
    }
    /* stride 1 (not 1x1): din += conv(dout, the weights rotated by 180 degrees with input and output channels
     * swapped, padding KH-1-pad), the forward convolution of that shape: Winograd or implicit GEMM, no col2im */
    conv2d_dims t = {.B = d->B, .C_in = d->C_out, .H = Ho, .W = Wo, .C_out = d->C_in, .KH = d->KH, .KW = d->KW,
                     .stride = 1, .pad_t = d->KH - 1 - d->pad_t, .pad_b = d->KH - 1 - d->pad_b,
                     .pad_l = d->KW - 1 - d->pad_l, .pad_r = d->KW - 1 - d->pad_r};
    if (din && !pointwise && d->stride == 1 && d->pad_t < d->KH && d->pad_b < d->KH && d->pad_l < d->KW &&
        d->pad_r < d->KW) {
        size_t Ci = d->C_in, Co = d->C_out, n = d->B * in_sz, taps = d->KH * d->KW;
        float *wr = df_scratch(CONV_SLOT_WROT, Ci * Co * taps), *g = df_scratch(CONV_SLOT_DINW, n);
        for (size_t o = 0; o < Co; o++)
            for (size_t i = 0; i < Ci; i++)
                for (size_t k = 0; k < taps; k++) wr[(i * Co + o) * taps + taps - 1 - k] = weight[(o * Ci + i) * taps + k];
        conv2d_forward(g, dout, wr, NULL, &t);
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
        for (size_t k = 0; k < n; k++) din[k] += g[k];
        din = NULL; /* done; the loop below makes dweight */
    }
    if (dweight && conv2d_winograd_applies(d)) { /* 3x3 on images of 14x14 and up: by Winograd */
        conv2d_weight_grad_winograd(dweight, dout, in, d);
        dweight = NULL;
    }
    /* weight^T (K, C_out), packed once for the input gradients of every image */
    float *wtp = NULL;
    if (din) {
        wtp = df_scratch(CONV_SLOT_WTPACK, gemm_packed_a_size(K, d->C_out));
        gemm_pack_a(wtp, 1, weight, K, K, d->C_out, 1);
    }
    /* 1x1 with several chunks of images: the team splits the batch. Each image's input gradient is its own
     * gemm, and the weight gradient is summed per chunk of DW_CHUNK images (a partial each), then the partials
     * in chunk order. Chunks depend on the batch only, so the sums are the same whatever the thread count.
     * Otherwise images go one at a time through the parallel gemm: fmnist-m's 1x1 128->128 at 14x14, batch 64,
     * 2 threads: 4.9 ms against 5.8 that way; but a 3x3 at 7x7 (its weight gradient 9x larger, its depth 4x
     * shallower) took 10.1 ms by chunks against 8.8 (microbenchmarks of conv2d_backward, old and new alternating). */
    size_t nchunk = (d->B + DW_CHUNK - 1) / DW_CHUNK, CK = d->C_out * K;
    if (pointwise && nchunk > 1 && (din || dweight)) {
        float *part = dweight ? df_scratch(CONV_SLOT_DWPART, nchunk * CK) : NULL;
        ptrdiff_t n = (ptrdiff_t)nchunk;
        if (!omp_in_parallel() && omp_get_max_threads() > 1) { /* a region only for a team (kernels.h) */
#pragma omp parallel for schedule(dynamic, 1)
            for (ptrdiff_t c = 0; c < n; c++) backward_chunk(din, part, (size_t)c, dout, in, wtp, d, Ho, Wo);
        } else {
            for (ptrdiff_t c = 0; c < n; c++) backward_chunk(din, part, (size_t)c, dout, in, wtp, d, Ho, Wo);
        }
        if (dweight) {
            ptrdiff_t nck = (ptrdiff_t)CK;
#pragma omp parallel for schedule(static) if (nchunk * CK > (1 << 16))
            for (ptrdiff_t k = 0; k < nck; k++) {
                float acc = dweight[k];
                for (size_t c = 0; c < nchunk; c++) acc += part[c * CK + (size_t)k];
                dweight[k] = acc;
            }
        }
        return;
    }
    if (dweight && d->B > 1 && !omp_in_parallel() && omp_get_max_threads() > 1 && (double)CK * P > 32768.0 * 8) {
        /* The weight gradient image by image, each thread owning one range of its columns (input channel
         * taps) for the whole batch: its part of dweight stays in its own cache, where a parallel gemm per
         * image moved tiles between the cores on every image. Every element gets the same sums in the same
         * (image) order as by the loop below. 3x3 128->128 at 7x7, batch 64, 2 threads, caches flushed
         * before each call: 6.45-6.60 -> 4.53-4.76 ms. */
#pragma omp parallel
        {
            size_t T = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num(), np = (K + 15) / 16;
            size_t k0 = np * t / T * 16, k1 = np * (t + 1) / T * 16 < K ? np * (t + 1) / T * 16 : K;
            for (size_t b = 0; b < d->B && k0 < k1; b++) {
                const float *g = dout + b * out_sz, *x = in + b * in_sz;
                if (pointwise) {
                    gemm(0, 1, d->C_out, k1 - k0, P, 1.0f, g, P, x + k0 * P, P, 1.0f, dweight + k0, K);
                } else {
                    col_ctx cc = {x, d, Ho, Wo};
                    col_range cr = {col_packer(1), &cc, k0};
                    gemm_packed_b(0, d->C_out, k1 - k0, P, 1.0f, g, P, pack_range, &cr, 1.0f, dweight + k0, K);
                }
            }
        }
        dweight = NULL;
        if (!din) return;
    }
    for (size_t b = 0; b < d->B; b++)
        backward_image(din ? din + b * in_sz : NULL, dweight, 0, dout + b * out_sz, in + b * in_sz, wtp, d, Ho, Wo);
}
