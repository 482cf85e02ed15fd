/* conv2d_few.c: stride-1 convolutions with at most CONV_FEW output channels (the U-Net's conv_out, 64 or 128
 * channels to 1 or 3), and the weight gradient also of those with at most CONV_FEW input channels (conv_in),
 * directly: each output row is the sum of C_in KH KW shifted rows of the zero-padded input times one weight
 * each, vectorised along the row (32 columns in two AVX-512 registers, or plain loops). As a GEMM the forward
 * was a product of C_out <= 4 rows of a 12-row micro-kernel, and the weight gradients of C_out <= 4 rows or
 * of C_in KH KW <= 36 columns. conv_in's forward stays a GEMM (of depth C_in KH KW), which was faster: its 64
 * output channels each reuse the same few input rows, and the GEMM keeps them in registers.
 *
 * Work goes in units of one image's rows [y0, y1): the unit first copies the input rows it reads into a
 * zero-padded block (df_scratch), then sums. Each output row is summed in one fixed order (bias, then input
 * channel, kernel row, kernel column) by one thread, so an image gets the same bits in any batch and on any
 * thread count. The weight gradient sums each tap over an image's rows in registers (32 column lanes), adds
 * the lanes, and sums the images of each chunk of CONV_FEW_CHUNK in order into a partial; the partials are
 * added in chunk order.
 */
#include "conv2d_internal.h"

#include <string.h>

#include "base/base.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define FEW_SLOT 1       /* each thread's padded input block */
#define FEW_SLOT_PART 8  /* the weight gradient's partial sum per chunk of images */
#define CONV_FEW_CHUNK 4 /* images per partial sum of the weight gradient */

static int stride1_not_pointwise(const conv2d_dims *d) {
    return d->stride == 1 && !(d->KH == 1 && d->KW == 1 && !d->pad_t && !d->pad_b && !d->pad_l && !d->pad_r);
}

int conv2d_few_channels(const conv2d_dims *d) { return stride1_not_pointwise(d) && d->C_out <= CONV_FEW; }

int conv2d_weight_grad_few_applies(const conv2d_dims *d) {
    return stride1_not_pointwise(d) && (d->C_in <= CONV_FEW || d->C_out <= CONV_FEW);
}

/* The padded input of output rows [y0, y1) of image b: P[c][r][x] = in[b][c][y0 + r - pad_t][x - pad_l] (0
 * outside the image), r < y1 - y0 + KH - 1, x < Wp = Wo + KW - 1. */
static void pad_rows(float *P, const float *in, const conv2d_dims *d, size_t b, size_t y0, size_t y1, size_t Wp) {
    size_t R = y1 - y0 + d->KH - 1;
    size_t x0 = d->pad_l < Wp ? d->pad_l : Wp, x1 = d->pad_l + d->W < Wp ? d->pad_l + d->W : Wp;
    for (size_t c = 0; c < d->C_in; c++)
        for (size_t r = 0; r < R; r++) {
            float *dst = P + (c * R + r) * Wp;
            ptrdiff_t iy = (ptrdiff_t)(y0 + r) - (ptrdiff_t)d->pad_t;
            if (iy < 0 || iy >= (ptrdiff_t)d->H) {
                memset(dst, 0, Wp * sizeof(float));
                continue;
            }
            const float *src = in + ((b * d->C_in + c) * d->H + (size_t)iy) * d->W;
            memset(dst, 0, x0 * sizeof(float));
            memcpy(dst + x0, src, (x1 - x0) * sizeof(float));
            memset(dst + x1, 0, (Wp - x1) * sizeof(float));
        }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FEW_AVX512 1

/* The masks of columns [x0, x0 + 32) of a row of Wo. */
__attribute__((target("avx512f"))) static inline void masks32(size_t Wo, size_t x0, __mmask16 *m0, __mmask16 *m1) {
    size_t n = Wo - x0;
    *m0 = (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1);
    *m1 = (__mmask16)(n <= 16 ? 0 : n >= 32 ? 0xffffu : (1u << (n - 16)) - 1);
}

/* Output rows [y0, y1) of image b from its padded block P (R rows a channel), all output channels. */
__attribute__((target("avx512f"))) static void forward_rows_avx512(float *out, const float *P, const float *w,
                                                                   const float *bias, const conv2d_dims *d,
                                                                   size_t Ho, size_t Wo, size_t b, size_t y0,
                                                                   size_t y1) {
    size_t Ci = d->C_in, KH = d->KH, KW = d->KW, Wp = Wo + KW - 1, R = y1 - y0 + KH - 1, taps = Ci * KH * KW;
    for (size_t y = y0; y < y1; y++)
        for (size_t x0 = 0; x0 < Wo; x0 += 32) {
            __mmask16 m0, m1;
            masks32(Wo, x0, &m0, &m1);
            for (size_t o = 0; o < d->C_out; o++) {
                __m512 a0 = _mm512_set1_ps(bias ? bias[o] : 0.0f), a1 = a0;
                const float *wo = w + o * taps;
                for (size_t c = 0; c < Ci; c++)
                    for (size_t i = 0; i < KH; i++) {
                        const float *s = P + (c * R + (y - y0) + i) * Wp + x0, *wk = wo + (c * KH + i) * KW;
                        for (size_t j = 0; j < KW; j++) {
                            __m512 wv = _mm512_set1_ps(wk[j]);
                            a0 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m0, s + j), a0);
                            a1 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m1, s + j + 16), a1);
                        }
                    }
                float *orow = out + ((b * d->C_out + o) * Ho + y) * Wo + x0;
                _mm512_mask_storeu_ps(orow, m0, a0);
                _mm512_mask_storeu_ps(orow + 16, m1, a1);
            }
        }
}

/* The sum over rows y < Ho and columns x < Wo of g[y Wo + x] p[y Wp + x]: each row in 32 column lanes, then
 * the lanes. */
__attribute__((target("avx512f"))) static float tap_sum_avx512(const float *g, const float *p, size_t Ho, size_t Wo,
                                                               size_t Wp) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    for (size_t x0 = 0; x0 < Wo; x0 += 32) {
        __mmask16 m0, m1;
        masks32(Wo, x0, &m0, &m1);
        const float *s = p + x0, *gy = g + x0;
        for (size_t y = 0; y < Ho; y++, s += Wp, gy += Wo) {
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, gy), _mm512_maskz_loadu_ps(m0, s), a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, gy + 16), _mm512_maskz_loadu_ps(m1, s + 16), a1);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}
#endif

/* forward_rows_avx512 in plain loops (one row of sums in acc). */
DF_CLONES static void forward_rows(float *out, const float *P, const float *w, const float *bias,
                                   const conv2d_dims *d, size_t Ho, size_t Wo, size_t b, size_t y0, size_t y1,
                                   float *acc) {
    size_t Ci = d->C_in, KH = d->KH, KW = d->KW, Wp = Wo + KW - 1, R = y1 - y0 + KH - 1, taps = Ci * KH * KW;
    for (size_t y = y0; y < y1; y++)
        for (size_t o = 0; o < d->C_out; o++) {
            float bv = bias ? bias[o] : 0.0f;
            for (size_t x = 0; x < Wo; x++) acc[x] = bv;
            const float *wo = w + o * taps;
            for (size_t c = 0; c < Ci; c++)
                for (size_t i = 0; i < KH; i++)
                    for (size_t j = 0; j < KW; j++) {
                        float wv = wo[(c * KH + i) * KW + j];
                        const float *s = P + (c * R + (y - y0) + i) * Wp + j;
#pragma omp simd
                        for (size_t x = 0; x < Wo; x++) acc[x] += wv * s[x];
                    }
            memcpy(out + ((b * d->C_out + o) * Ho + y) * Wo, acc, Wo * sizeof(float));
        }
}

/* tap_sum_avx512 in plain loops. */
DF_CLONES static float tap_sum(const float *g, const float *p, size_t Ho, size_t Wo, size_t Wp) {
    float s = 0.0f;
    for (size_t y = 0; y < Ho; y++) {
        const float *py = p + y * Wp, *gy = g + y * Wo;
#pragma omp simd reduction(+ : s)
        for (size_t x = 0; x < Wo; x++) s += gy[x] * py[x];
    }
    return s;
}

/* g[t] += the sum over rows y and columns x of dout[b][o][y][x] P[c][y + i][x + j], for each tap t = (o, c, i, j)
 * of image b (P: its padded input, all rows). */
static void weight_grad_image(float *g, const float *dout, const float *P, const conv2d_dims *d, size_t Ho, size_t Wo,
                              size_t b) {
    size_t Ci = d->C_in, KH = d->KH, KW = d->KW, Wp = Wo + KW - 1, R = Ho + KH - 1;
    int avx512 = conv2d_use_avx512();
    for (size_t o = 0; o < d->C_out; o++) {
        const float *go = dout + (b * d->C_out + o) * Ho * Wo;
        for (size_t c = 0; c < Ci; c++)
            for (size_t i = 0; i < KH; i++)
                for (size_t j = 0; j < KW; j++) {
                    const float *p = P + (c * R + i) * Wp + j;
#ifdef FEW_AVX512
                    if (avx512) {
                        g[((o * Ci + c) * KH + i) * KW + j] += tap_sum_avx512(go, p, Ho, Wo, Wp);
                        continue;
                    }
#endif
                    g[((o * Ci + c) * KH + i) * KW + j] += tap_sum(go, p, Ho, Wo, Wp);
                }
    }
    (void)avx512;
}

void conv2d_forward_few(float *out, const float *in, const float *weight, const float *bias, const conv2d_dims *d) {
    /* out (B, C_out, Ho, Wo) = conv(in (B, C_in, H, W), weight (C_out, C_in, KH, KW)) + bias, stride 1 */
    DF_CHECK(conv2d_few_channels(d), "conv2d_forward_few: not a stride-1 convolution with at most %d output channels",
             CONV_FEW);
    size_t Ho = conv2d_out_h(d), Wo = conv2d_out_w(d), Wp = Wo + d->KW - 1, threads = 1;
#ifdef _OPENMP
    threads = omp_in_parallel() ? 1 : (size_t)omp_get_max_threads();
#endif
    /* units: whole images when there are enough of them for the threads, else each image's rows in as many
     * ranges as threads (batch 1) */
    size_t per = d->B >= threads ? 1 : threads < Ho ? threads : Ho;
    ptrdiff_t units = (ptrdiff_t)(d->B * per);
    double macs = (double)d->B * (double)(Ho * Wo) * (double)(d->C_out * d->C_in * d->KH * d->KW);
    DF_PARALLEL_FOR_IF(units > 1 && macs > (double)(1 << 18), "omp parallel for schedule(dynamic, 1)",
                       for (ptrdiff_t u = 0; u < units; u++) {
                           size_t b = (size_t)u / per, k = (size_t)u % per, y0 = Ho * k / per, y1 = Ho * (k + 1) / per;
                           float *P = df_scratch(FEW_SLOT, d->C_in * (y1 - y0 + d->KH - 1) * Wp + Wo + 16);
                           pad_rows(P, in, d, b, y0, y1, Wp);
#ifdef FEW_AVX512
                           if (conv2d_use_avx512()) {
                               forward_rows_avx512(out, P, weight, bias, d, Ho, Wo, b, y0, y1);
                               continue;
                           }
#endif
                           forward_rows(out, P, weight, bias, d, Ho, Wo, b, y0, y1,
                                        P + d->C_in * (y1 - y0 + d->KH - 1) * Wp);
                       });
}

void conv2d_weight_grad_few(float *dweight, const float *dout, const float *in, const conv2d_dims *d) {
    /* dweight (C_out, C_in, KH, KW) += the gradient of conv2d_forward_few given dout (B, C_out, Ho, Wo) */
    DF_CHECK(conv2d_weight_grad_few_applies(d), "conv2d_weight_grad_few: not a stride-1 convolution with few channels");
    size_t Ho = conv2d_out_h(d), Wo = conv2d_out_w(d), Wp = Wo + d->KW - 1, nw = d->C_out * d->C_in * d->KH * d->KW;
    size_t nchunk = (d->B + CONV_FEW_CHUNK - 1) / CONV_FEW_CHUNK;
    float *part = df_scratch(FEW_SLOT_PART, nchunk * nw);
    ptrdiff_t n = (ptrdiff_t)nchunk;
    DF_PARALLEL_FOR_IF(n > 1, "omp parallel for schedule(dynamic, 1)", for (ptrdiff_t k = 0; k < n; k++) {
        float *g = part + (size_t)k * nw, *P = df_scratch(FEW_SLOT, d->C_in * (Ho + d->KH - 1) * Wp);
        memset(g, 0, nw * sizeof(float));
        size_t b0 = (size_t)k * CONV_FEW_CHUNK, b1 = b0 + CONV_FEW_CHUNK < d->B ? b0 + CONV_FEW_CHUNK : d->B;
        for (size_t b = b0; b < b1; b++) {
            pad_rows(P, in, d, b, 0, Ho, Wp);
            weight_grad_image(g, dout, P, d, Ho, Wo, b);
        }
    });
    for (size_t t = 0; t < nw; t++) {
        float s = dweight[t];
        for (size_t k = 0; k < nchunk; k++) s += part[k * nw + t];
        dweight[t] = s;
    }
}
