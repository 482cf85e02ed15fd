/* conv2d.c: 2-D convolution (cross-correlation, as torch.nn.Conv2d) with any kernel size, stride and
 * asymmetric zero padding, forward and backward, NCHW activations and OIHW weights.
 *
 * The fast versions lower each image to a GEMM: im2col writes the (C_in*KH*KW, H_out*W_out) column matrix
 * of one image into df_scratch slot 0, and out_b (C_out, HWo) = weight (C_out, C_in*KH*KW) * col. A 1x1,
 * stride-1, unpadded convolution uses the image itself as the column matrix. Backward computes, per image,
 * dweight += dout_b col^T and dcol = weight^T dout_b (slot 1), then col2im adds dcol into din.
 * The _ref versions are direct loops over the definition, accumulating in double. The packers that fill GEMM
 * panels straight from the image (implicit GEMM, used by the forward and the weight gradient instead of im2col)
 * are in conv2d_pack.c.
 */
#include "conv2d_internal.h"

#include "base/base.h"
#include "vmath.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
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

/* Channel c of conv2d_col2im_add. */
static void col2im_channel(float *din, const float *col, const conv2d_dims *d, size_t Ho, size_t Wo, size_t c) {
    for (size_t i = 0; i < d->KH; i++)
        for (size_t j = 0; j < d->KW; j++) {
            const float *src = col + ((c * d->KH + i) * d->KW + j) * Ho * Wo;
            float *dst = din + c * d->H * d->W;
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

/* The adjoint of im2col: din[c][y*s + i - pad_t][x*s + j - pad_l] += col[(c*KH + i)*KW + j][y*Wo + x].
 * Threads split the input channels, whose pixels are disjoint. */
void conv2d_col2im_add(float *din, const float *col, const conv2d_dims *d, size_t Ho, size_t Wo) {
    /* din (C_in, H, W) += col2im(col (C_in*KH*KW, Ho*Wo)) */
    ptrdiff_t C = (ptrdiff_t)d->C_in;
    DF_PARALLEL_FOR_IF((size_t)C * d->KH * d->KW * Ho * Wo > (1 << 16), "omp parallel for schedule(static)",
                       for (ptrdiff_t c = 0; c < C; c++) col2im_channel(din, col, d, Ho, Wo, (size_t)c););
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
    gemm_plain_b_ctx b = {0, in, P};
    col_ctx cc = {in, d, Ho, Wo};
    int pw = conv_is_pointwise(d); /* the image is its own column matrix */
    /* the bias (or none) added as the blocks are stored: the bits of out filled with it and accumulated */
    gemm_prepacked_bias(d->C_out, P, K, wpacked, pw ? gemm_plain_b : conv2d_col_packer(0), pw ? (const void *)&b : &cc,
                        bias, out, P);
}

/* The weights as conv2d_forward_packed multiplies them: Winograd F(4x4, 3x3)'s or F(2x2, 3x3)'s transformed
 * matrices, or packed for the GEMM (with their BF16 copy in BF16 mode). */
size_t conv2d_weights_packed_size(const conv2d_dims *d) {
    if (conv2d_few_channels(d)) return d->C_out * d->C_in * d->KH * d->KW; /* as they are */
    if (conv2d_winograd4_applies(d)) return conv2d_winograd4_weights_size(d);
    if (conv2d_winograd_applies(d)) return conv2d_winograd_weights_size(d);
    return gemm_packed_a_size(d->C_out, d->C_in * d->KH * d->KW);
}

void conv2d_pack_weights(float *wp, const float *weight, const conv2d_dims *d) {
    size_t K = d->C_in * d->KH * d->KW;
    if (conv2d_few_channels(d))
        memcpy(wp, weight, d->C_out * K * sizeof(float));
    else if (conv2d_winograd4_applies(d))
        conv2d_winograd4_pack_weights(wp, weight, d);
    else if (conv2d_winograd_applies(d))
        conv2d_winograd_pack_weights(wp, weight, d);
    else
        gemm_pack_a(wp, 0, weight, K, d->C_out, K, d->C_out * K > (1 << 16));
}

/* conv2d_forward_packed: conv2d_forward with the weights packed by conv2d_pack_weights (for the same dims and
 * precision), by F(4x4, 3x3) where conv2d_winograd4_applies. With at least as many images as threads, each
 * thread convolves whole images (serial gemm); otherwise images go one at a time through the parallel gemm.
 * Either way every output is summed in the same order. Overwrites out. */
void conv2d_forward_packed(float *out, const float *in, const float *wp, const float *bias, const conv2d_dims *d) {
    /* out (B, C_out, Ho, Wo) = conv(in (B, C_in, H, W), packed weights) + bias (C_out) */
    if (conv2d_few_channels(d)) {
        conv2d_forward_few(out, in, wp, bias, d);
        return;
    }
    if (conv2d_winograd_applies(d)) {
        conv2d_forward_packed_add(out, in, wp, bias, d, NULL, NULL);
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

/* conv2d_forward_packed, then + chan (B, C_out) per channel and + res like out, in the Winograd transform's
 * last pass (where conv2d_winograd_applies: conv2d_forward_winograd_packed_add's bits). */
void conv2d_forward_packed_add(float *out, const float *in, const float *wp, const float *bias,
                               const conv2d_dims *d, const float *chan, const float *res) {
    DF_CHECK(conv2d_winograd_applies(d), "conv2d_forward_packed_add: not a Winograd convolution");
    DF_CHECK(!omp_in_parallel(), "conv2d_forward_packed_add: Winograd weights inside a parallel region");
    if (conv2d_winograd4_applies(d))
        conv2d_forward_winograd4_packed_add(out, in, wp, bias, d, chan, res);
    else
        conv2d_forward_winograd_packed_add(out, in, wp, bias, d, chan, res);
}

/* conv2d_forward: same result as conv2d_forward_ref; the weights are packed (or transformed) for this call. */
void conv2d_forward(float *out, const float *in, const float *weight, const float *bias, const conv2d_dims *d) {
    /* out (B, C_out, Ho, Wo) = conv(in (B, C_in, H, W), weight (C_out, C_in, KH, KW)) + bias (C_out) */
    if (conv2d_few_channels(d)) {
        conv2d_forward_few(out, in, weight, bias, d);
        return;
    }
    if (conv2d_winograd4_applies(d) && !omp_in_parallel()) { /* 28x28 and up: F(4x4, 3x3) */
        conv2d_forward_winograd4(out, in, weight, bias, d);
        return;
    }
    if (conv2d_winograd_applies(d) && !omp_in_parallel()) { /* 14x14 and up: F(2x2, 3x3) */
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
            gemm_packed_b(0, d->C_out, K, P, 1.0f, g, P, conv2d_col_packer(1), &cc, beta, dweight, K);
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

/* conv2d_backward: same gradients as conv2d_backward_ref, accumulated (+=); NULL gradients skipped. With
 * din_set (conv2d_backward_set), din is written (=), whatever it held: by the stride-1 path straight from the
 * transposed convolution, elsewhere zeroed first. Sums are in an order fixed by the batch alone (see the team
 * path below), not by the thread count. */
static void backward(float *din, int din_set, float *dweight, float *dbias, const float *dout, const float *in,
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
                acc += df_sum16(g, P); /* one image's plane in float lanes, the planes in double */
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
        if (din_set) { /* the gradient as the convolution writes it: no pass to add it */
            conv2d_forward(din, dout, wr, NULL, &t);
        } else {
            conv2d_forward(g, dout, wr, NULL, &t);
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
            for (size_t k = 0; k < n; k++) din[k] += g[k];
        }
        din = NULL; /* done; the loop below makes dweight */
    }
    if (din && din_set) { /* the other paths accumulate */
        ptrdiff_t n = (ptrdiff_t)(d->B * in_sz);
        DF_PARALLEL_FOR_IF(n > (1 << 18), "omp parallel for simd schedule(static)",
                           for (ptrdiff_t k = 0; k < n; k++) din[k] = 0.0f;);
    }
    if (dweight && conv2d_weight_grad_few_applies(d)) { /* conv_in and conv_out: directly (conv2d_few.c) */
        conv2d_weight_grad_few(dweight, dout, in, d);
        dweight = NULL;
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
                    col_range cr = {conv2d_col_packer(1), &cc, k0};
                    gemm_packed_b(0, d->C_out, k1 - k0, P, 1.0f, g, P, pack_range, &cr, 1.0f, dweight + k0, K);
                }
            }
        }
        dweight = NULL;
        if (!din) return;
    }
    if (!dweight && din && !omp_in_parallel() && omp_get_max_threads() > 1 && d->B >= (size_t)omp_get_max_threads()) {
        /* Input gradients alone (stride 2): each thread takes whole images, its own dcol and col2im, where a
         * parallel gemm and a parallel col2im per image opened two regions an image and moved dcol between the
         * cores. The same values. */
        ptrdiff_t B = (ptrdiff_t)d->B;
#pragma omp parallel for schedule(dynamic, 1)
        for (ptrdiff_t b = 0; b < B; b++)
            backward_image(din + (size_t)b * in_sz, NULL, 0, dout + (size_t)b * out_sz, in + (size_t)b * in_sz, wtp, d,
                           Ho, Wo);
        return;
    }
    for (size_t b = 0; b < d->B; b++)
        backward_image(din ? din + b * in_sz : NULL, dweight, 0, dout + b * out_sz, in + b * in_sz, wtp, d, Ho, Wo);
}

void conv2d_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                     const float *weight, const conv2d_dims *d) {
    backward(din, 0, dweight, dbias, dout, in, weight, d);
}

void conv2d_backward_set(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                         const float *weight, const conv2d_dims *d) {
    backward(din, 1, dweight, dbias, dout, in, weight, d);
}
