/* linear.c: the fully connected layer of torch.nn.Linear, out = in weight^T + bias, with weight (OUT, IN).
 * The fast versions are three gemm calls; the _ref versions are direct loops accumulating in double. */
#include "kernels.h"

#include <string.h>

#include "base/base.h"

/* ---- reference ---- */

/* linear_forward_ref: out[n,o] = bias[o] + sum_i in[n,i] weight[o,i]. Overwrites out. */
void linear_forward_ref(float *out, const float *in, const float *weight, const float *bias, size_t N, size_t IN,
                        size_t OUT) {
    /* out (N, OUT) = in (N, IN) weight^T (IN, OUT) + bias (OUT) */
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < OUT; o++) {
            double s = bias ? bias[o] : 0;
            for (size_t i = 0; i < IN; i++) s += (double)in[n * IN + i] * weight[o * IN + i];
            out[n * OUT + o] = (float)s;
        }
}

/* linear_backward_ref: din[n,i] += sum_o dout[n,o] weight[o,i]; dweight[o,i] += sum_n dout[n,o] in[n,i];
 * dbias[o] += sum_n dout[n,o]. NULL gradients are skipped. */
void linear_backward_ref(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                         const float *weight, size_t N, size_t IN, size_t OUT) {
    /* din (N, IN), dweight (OUT, IN), dbias (OUT) += from dout (N, OUT) */
    if (din)
        for (size_t n = 0; n < N; n++)
            for (size_t i = 0; i < IN; i++) {
                double s = 0;
                for (size_t o = 0; o < OUT; o++) s += (double)dout[n * OUT + o] * weight[o * IN + i];
                din[n * IN + i] += (float)s;
            }
    if (dweight)
        for (size_t o = 0; o < OUT; o++)
            for (size_t i = 0; i < IN; i++) {
                double s = 0;
                for (size_t n = 0; n < N; n++) s += (double)dout[n * OUT + o] * in[n * IN + i];
                dweight[o * IN + i] += (float)s;
            }
    if (dbias)
        for (size_t o = 0; o < OUT; o++) {
            double s = 0;
            for (size_t n = 0; n < N; n++) s += dout[n * OUT + o];
            dbias[o] += (float)s;
        }
}

/* ---- fast ---- */

/* linear_forward: as linear_forward_ref; out is first filled with the bias rows, then gemm adds in W^T. */
void linear_forward(float *out, const float *in, const float *weight, const float *bias, size_t N, size_t IN,
                    size_t OUT) {
    /* out (N, OUT) = in (N, IN) weight^T (IN, OUT) + bias (OUT) */
    if (bias)
        for (size_t n = 0; n < N; n++)
            for (size_t o = 0; o < OUT; o++) out[n * OUT + o] = bias[o];
    gemm(0, 1, N, OUT, IN, 1.0f, in, IN, weight, IN, bias ? 1.0f : 0.0f, out, OUT);
}

/* The weights as linear_forward_packed multiplies them: gemm_pack_a's panels of OUT rows over IN. */
size_t linear_weights_packed_size(size_t IN, size_t OUT) { return gemm_packed_a_size(OUT, IN); }

void linear_pack_weights(float *wp, const float *weight, size_t IN, size_t OUT) {
    gemm_pack_a(wp, 0, weight, IN, OUT, IN, OUT * IN > (1 << 16));
}

/* linear_forward_packed: linear_forward with the weights packed once (FP32), image by image: out_n (OUT) =
 * weight in_n, a product with one column (gemm's narrow edge kernel) instead of packing W^T on every call.
 * The same bits as linear_forward: each output gets fma(in[i], weight[o][i], acc) over i in the same order
 * and depth slices, whichever operand gemm calls A. For a few images (batch 1 sampling); a batch is faster as
 * one linear_forward. */
void linear_forward_packed(float *out, const float *in, const float *wp, const float *bias, size_t N, size_t IN,
                           size_t OUT) {
    /* out (N, OUT) = in (N, IN) weight^T + bias, weight packed by linear_pack_weights */
    for (size_t n = 0; n < N; n++) {
        float *o = out + n * OUT;
        if (bias) memcpy(o, bias, OUT * sizeof(float));
        gemm_plain_b_ctx b = {0, in + n * IN, 1};
        gemm_prepacked(OUT, 1, IN, 1.0f, wp, gemm_plain_b, &b, bias ? 1.0f : 0.0f, o, 1);
    }
}

/* linear_backward: as linear_backward_ref, through gemm with beta = 1 (accumulating). */
void linear_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                     const float *weight, size_t N, size_t IN, size_t OUT) {
    /* din (N, IN) += dout (N, OUT) weight (OUT, IN); dweight (OUT, IN) += dout^T (OUT, N) in (N, IN) */
    if (din) gemm(0, 0, N, IN, OUT, 1.0f, dout, OUT, weight, IN, 1.0f, din, IN);
    if (dweight) gemm(1, 0, OUT, IN, N, 1.0f, dout, OUT, in, IN, 1.0f, dweight, IN);
    if (dbias)
        for (size_t o = 0; o < OUT; o++) {
            double s = 0;
            for (size_t n = 0; n < N; n++) s += dout[n * OUT + o];
            dbias[o] += (float)s;
        }
}
