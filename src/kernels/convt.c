/* convt.c: 2-D transposed convolution (torch.nn.ConvTranspose2d) with any kernel size, stride and symmetric
 * zero padding (output_padding 0, dilation 1, groups 1), forward and backward, NCHW activations and weights
 * (C_in, C_out, KH, KW) as torch stores them.
 *
 * out[b,o,y*s + i - pad, x*s + j - pad] += weight[c,o,i,j] in[b,c,y,x] (positions outside the output are
 * dropped), plus bias[o]. It is the adjoint of a Conv2d from (C_out, H_out, W_out) to (C_in, H, W) with the
 * same kernel, stride and padding, so the fast versions reuse the convolution lowering the other way round:
 *   forward, per image: col (C_out*KH*KW, H*W) = weight^T in_b, then out_b = bias + col2im(col);
 *   backward, per image: col = im2col(dout_b) (C_out*KH*KW, H*W), then din_b += weight col and
 *   dweight += in_b col^T (one im2col serves both), dbias += sums of dout.
 * A 1x1, stride-1, unpadded one needs no col2im/im2col: the image is its own column matrix.
 * Scratch: the column matrix in df_scratch slot 0 (per thread), the packed weights in slot 1; gemm itself
 * uses slots 2 and 3. The _ref versions are direct loops over the definition, accumulating in double.
 */
#include "kernels.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/base.h"

#define CONVT_SLOT_COL 0
#define CONVT_SLOT_WPACK 1

/* ---- shapes ---- */

size_t convt2d_out_h(const convt2d_dims *d) {
    DF_CHECK(d->stride > 0 && d->H > 0 && (d->H - 1) * d->stride + d->KH > 2 * d->pad,
             "convt2d: output height (%zu - 1) * %zu - 2 * %zu + %zu is not positive", d->H, d->stride, d->pad,
             d->KH);
    return (d->H - 1) * d->stride + d->KH - 2 * d->pad;
}

size_t convt2d_out_w(const convt2d_dims *d) {
    DF_CHECK(d->stride > 0 && d->W > 0 && (d->W - 1) * d->stride + d->KW > 2 * d->pad,
             "convt2d: output width (%zu - 1) * %zu - 2 * %zu + %zu is not positive", d->W, d->stride, d->pad,
             d->KW);
    return (d->W - 1) * d->stride + d->KW - 2 * d->pad;
}

/* ---- reference ---- */

/* The input position y that output row oy reads through tap i (oy = y*s + i - pad), or -1 if none. */
static ptrdiff_t tap_src(size_t oy, size_t i, size_t s, size_t pad, size_t H) {
    size_t t = oy + pad;
    if (t < i || (t - i) % s) return -1;
    size_t y = (t - i) / s;
    return y < H ? (ptrdiff_t)y : -1;
}

/* convt2d_forward_ref: out[b,o,oy,ox] = bias[o] + sum over (c, i, j) with oy = y*s + i - pad, ox = x*s + j - pad
 * of weight[c,o,i,j] in[b,c,y,x], in double. Overwrites out. */
void convt2d_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                         const convt2d_dims *d) {
    /* out (B, C_out, Ho, Wo) = convT(in (B, C_in, H, W), weight (C_in, C_out, KH, KW)) + bias (C_out) */
    size_t Ho = convt2d_out_h(d), Wo = convt2d_out_w(d), s = d->stride;
    for (size_t b = 0; b < d->B; b++)
        for (size_t o = 0; o < d->C_out; o++)
            for (size_t oy = 0; oy < Ho; oy++)
                for (size_t ox = 0; ox < Wo; ox++) {
                    double acc = bias ? bias[o] : 0;
                    for (size_t c = 0; c < d->C_in; c++)
                        for (size_t i = 0; i < d->KH; i++) {
                            ptrdiff_t y = tap_src(oy, i, s, d->pad, d->H);
                            if (y < 0) continue;
                            for (size_t j = 0; j < d->KW; j++) {
                                ptrdiff_t x = tap_src(ox, j, s, d->pad, d->W);
                                if (x < 0) continue;
                                acc += (double)weight[((c * d->C_out + o) * d->KH + i) * d->KW + j] *
                                       in[((b * d->C_in + c) * d->H + (size_t)y) * d->W + (size_t)x];
                            }
                        }
                    out[((b * d->C_out + o) * Ho + oy) * Wo + ox] = (float)acc;
                }
}

/* The output position y*s + i - pad, or -1 if it falls outside [0, Ho). */
static ptrdiff_t tap_dst(size_t y, size_t i, size_t s, size_t pad, size_t Ho) {
    size_t t = y * s + i;
    return t >= pad && t - pad < Ho ? (ptrdiff_t)(t - pad) : -1;
}

/* convt2d_backward_ref: the three gradients of convt2d_forward_ref, each element a sum in double:
 *   din[b,c,y,x] += sum_{o,i,j} weight[c,o,i,j] dout[b,o,y*s+i-pad,x*s+j-pad],
 *   dweight[c,o,i,j] += sum_{b,y,x} in[b,c,y,x] dout[b,o,y*s+i-pad,x*s+j-pad],   dbias[o] += sum dout[b,o,..].
 * Taps landing outside the output contribute nothing. NULL gradients are skipped. */
void convt2d_backward_ref(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                          const float *weight, const convt2d_dims *d) {
    /* din (B, C_in, H, W), dweight (C_in, C_out, KH, KW), dbias (C_out) += from dout (B, C_out, Ho, Wo) */
    size_t Ho = convt2d_out_h(d), Wo = convt2d_out_w(d), s = d->stride;
    if (dbias)
        for (size_t o = 0; o < d->C_out; o++) {
            double acc = 0;
            for (size_t b = 0; b < d->B; b++)
                for (size_t p = 0; p < Ho * Wo; p++) acc += dout[(b * d->C_out + o) * Ho * Wo + p];
            dbias[o] += (float)acc;
        }
    if (din)
        for (size_t b = 0; b < d->B; b++)
            for (size_t c = 0; c < d->C_in; c++)
                for (size_t y = 0; y < d->H; y++)
                    for (size_t x = 0; x < d->W; x++) {
                        double acc = 0;
                        for (size_t o = 0; o < d->C_out; o++)
                            for (size_t i = 0; i < d->KH; i++) {
                                ptrdiff_t oy = tap_dst(y, i, s, d->pad, Ho);
                                if (oy < 0) continue;
                                for (size_t j = 0; j < d->KW; j++) {
                                    ptrdiff_t ox = tap_dst(x, j, s, d->pad, Wo);
                                    if (ox < 0) continue;
                                    acc += (double)weight[((c * d->C_out + o) * d->KH + i) * d->KW + j] *
                                           dout[((b * d->C_out + o) * Ho + (size_t)oy) * Wo + (size_t)ox];
                                }
                            }
                        din[((b * d->C_in + c) * d->H + y) * d->W + x] += (float)acc;
                    }
    if (dweight)
        for (size_t c = 0; c < d->C_in; c++)
            for (size_t o = 0; o < d->C_out; o++)
                for (size_t i = 0; i < d->KH; i++)
                    for (size_t j = 0; j < d->KW; j++) {
                        double acc = 0;
                        for (size_t b = 0; b < d->B; b++)
                            for (size_t y = 0; y < d->H; y++) {
                                ptrdiff_t oy = tap_dst(y, i, s, d->pad, Ho);
                                if (oy < 0) continue;
                                for (size_t x = 0; x < d->W; x++) {
                                    ptrdiff_t ox = tap_dst(x, j, s, d->pad, Wo);
                                    if (ox < 0) continue;
                                    acc += (double)in[((b * d->C_in + c) * d->H + y) * d->W + x] *
                                           dout[((b * d->C_out + o) * Ho + (size_t)oy) * Wo + (size_t)ox];
                                }
                            }
                        dweight[((c * d->C_out + o) * d->KH + i) * d->KW + j] += (float)acc;
                    }
}

/* ---- col2im / im2col ---- */

/* The convolution whose im2col and col2im a transposed convolution shares: its input is the transposed one's
 * output (C_out, Ho, Wo), and its output grid the transposed one's input (H, W). */
static conv2d_dims as_conv(const convt2d_dims *d, size_t Ho, size_t Wo) {
    conv2d_dims c = {.B = 1, .C_in = d->C_out, .H = Ho, .W = Wo, .C_out = d->C_in, .KH = d->KH, .KW = d->KW,
                     .stride = d->stride, .pad_t = d->pad, .pad_b = d->pad, .pad_l = d->pad, .pad_r = d->pad};
    return c;
}

/* out (C_out, Ho, Wo) += col2im(col (C_out*KH*KW, H*W)) for one image. */
static void col2im_add(float *out, const float *col, const convt2d_dims *d, size_t Ho, size_t Wo) {
    conv2d_dims c = as_conv(d, Ho, Wo);
    conv2d_col2im_add(out, col, &c, d->H, d->W);
}

/* col (C_out*KH*KW, H*W) = im2col(g (C_out, Ho, Wo)) for one image: the adjoint of col2im_add. */
static void im2col(float *col, const float *g, const convt2d_dims *d, size_t Ho, size_t Wo) {
    conv2d_dims c = as_conv(d, Ho, Wo);
    conv2d_im2col(col, g, &c, d->H, d->W);
}

static int convt_is_pointwise(const convt2d_dims *d) {
    return d->KH == 1 && d->KW == 1 && d->stride == 1 && d->pad == 0;
}

/* ---- forward ---- */

/* One image: out_b = bias + col2im(weight^T in_b), weight^T (C_out*KH*KW, C_in) packed once in wpacked. */
static void convt_forward_image(float *out, const float *in, const float *wpacked, const float *bias,
                                const convt2d_dims *d, size_t Ho, size_t Wo) {
    /* out (C_out, Ho, Wo) <- in (C_in, H, W) */
    size_t M = d->C_out * d->KH * d->KW, P = d->H * d->W, Po = Ho * Wo;
    for (size_t o = 0; o < d->C_out; o++) {
        float v = bias ? bias[o] : 0.0f;
        for (size_t p = 0; p < Po; p++) out[o * Po + p] = v;
    }
    gemm_plain_b_ctx b = {0, in, P};
    if (convt_is_pointwise(d)) { /* out (C_out, P) += weight^T in */
        gemm_prepacked(M, P, d->C_in, 1.0f, wpacked, gemm_plain_b, &b, 1.0f, out, P);
        return;
    }
    float *col = df_scratch(CONVT_SLOT_COL, M * P);
    gemm_prepacked(M, P, d->C_in, 1.0f, wpacked, gemm_plain_b, &b, 0.0f, col, P);
    col2im_add(out, col, d, Ho, Wo);
}

/* convt2d_forward: same result as convt2d_forward_ref (to FP32 rounding). The transposed weights are packed
 * once; with at least as many images as threads each thread takes whole images (its own column scratch),
 * otherwise images go one at a time through the parallel gemm and col2im. Overwrites out. */
void convt2d_forward(float *out, const float *in, const float *weight, const float *bias, const convt2d_dims *d) {
    /* out (B, C_out, Ho, Wo) = convT(in (B, C_in, H, W), weight (C_in, C_out, KH, KW)) + bias (C_out) */
    size_t Ho = convt2d_out_h(d), Wo = convt2d_out_w(d), M = d->C_out * d->KH * d->KW;
    size_t in_sz = d->C_in * d->H * d->W, out_sz = d->C_out * Ho * Wo;
    ptrdiff_t B = (ptrdiff_t)d->B;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_in_parallel() ? 1 : omp_get_max_threads();
#endif
    double macs = (double)d->B * (double)M * (double)in_sz;
    int by_image = threads > 1 && B >= threads && macs > (double)(1 << 18);
    float *wp = df_scratch(CONVT_SLOT_WPACK, gemm_packed_a_size(M, d->C_in));
    gemm_pack_a(wp, 1, weight, M, M, d->C_in, !by_image);
    if (by_image) { /* a region only for a team (kernels.h) */
#pragma omp parallel for schedule(dynamic, 1)
        for (ptrdiff_t b = 0; b < B; b++)
            convt_forward_image(out + (size_t)b * out_sz, in + (size_t)b * in_sz, wp, bias, d, Ho, Wo);
    } else {
        for (ptrdiff_t b = 0; b < B; b++)
            convt_forward_image(out + (size_t)b * out_sz, in + (size_t)b * in_sz, wp, bias, d, Ho, Wo);
    }
}

/* ---- backward ---- */

/* convt2d_backward: same gradients as convt2d_backward_ref (to FP32 rounding), accumulated (+=); NULL
 * gradients skipped. Images go one at a time (so dweight sums in a fixed order); each gemm is parallel. */
void convt2d_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                      const float *weight, const convt2d_dims *d) {
    /* din (B, C_in, H, W), dweight (C_in, C_out, KH, KW), dbias (C_out) += from dout (B, C_out, Ho, Wo) */
    size_t Ho = convt2d_out_h(d), Wo = convt2d_out_w(d), M = d->C_out * d->KH * d->KW, P = d->H * d->W;
    size_t in_sz = d->C_in * P, out_sz = d->C_out * Ho * Wo, Po = Ho * Wo;
    if (dbias) {
        ptrdiff_t C_out = (ptrdiff_t)d->C_out;
#pragma omp parallel for schedule(static) if (d->B * out_sz > (1 << 16))
        for (ptrdiff_t o = 0; o < C_out; o++) {
            double acc = 0;
            for (size_t b = 0; b < d->B; b++) {
                const float *g = dout + b * out_sz + (size_t)o * Po;
                float part = 0; /* one image's plane in float, the planes in double */
#pragma omp simd reduction(+ : part)
                for (size_t p = 0; p < Po; p++) part += g[p];
                acc += part;
            }
            dbias[o] += (float)acc;
        }
    }
    if (!din && !dweight) return;
    float *wp = NULL; /* weight (C_in, M), packed once for every image's din */
    if (din) {
        wp = df_scratch(CONVT_SLOT_WPACK, gemm_packed_a_size(d->C_in, M));
        gemm_pack_a(wp, 0, weight, M, d->C_in, M, 1);
    }
    for (size_t b = 0; b < d->B; b++) {
        const float *col = dout + b * out_sz; /* (M, P) */
        if (!convt_is_pointwise(d)) {
            float *buf = df_scratch(CONVT_SLOT_COL, M * P);
            im2col(buf, dout + b * out_sz, d, Ho, Wo);
            col = buf;
        }
        if (din) { /* din_b (C_in, P) += weight (C_in, M) col (M, P) */
            gemm_plain_b_ctx gb = {0, col, P};
            gemm_prepacked(d->C_in, P, M, 1.0f, wp, gemm_plain_b, &gb, 1.0f, din + b * in_sz, P);
        }
        if (dweight) /* dweight (C_in, M) += in_b (C_in, P) col^T (P, M) */
            gemm(0, 1, d->C_in, M, P, 1.0f, in + b * in_sz, P, col, P, 1.0f, dweight, M);
    }
}
