/* kernels.h: the numerical kernels of diffuse, on flat float arrays in PyTorch layouts.
 *
 * Conventions (llm.c style):
 *   - x_forward(out, ..., in, ..., sizes): outputs first, then inputs, then sizes.
 *   - x_backward(din, ..., dout, saved..., sizes): ACCUMULATES (+=) into every gradient it writes.
 *     A gradient pointer that is NULL is not wanted and is skipped.
 *   - Activations are NCHW (B, C, H, W); conv weights OIHW; linear weights (OUT, IN) as torch.nn.Linear.
 *   - Every kernel has a plain reference version (suffix _ref) kept for tests; the unsuffixed version is the
 *     one the model uses and may be faster, and must agree with the reference.
 *   - Sizes are size_t; no kernel allocates except through df_scratch(). Scratch slots (per thread): gemm 2, 3
 *     and 9; conv2d 1 (packed weights in forward, column gradients in backward), 4 (packed transposed
 *     weights), 6 and 7 (the input gradient as a convolution: rotated weights, its result), 8 (a 1x1
 *     backward's partial weight gradients) and Winograd's 0, 1, 4, 5 inside; transposed convolution 0 and 1;
 *     attention 0; group norm 1; group norm + SiLU 0 and 1. A kernel only calls others whose slots it does
 *     not hold.
 *   - Threads: one level. A kernel whose loop calls other parallel kernels (a convolution over images calls
 *     gemm) opens its region only when it runs as a team, never as `parallel if (0)`: the inner kernel's
 *     region inside such an inactive one is a nested team, which libgomp starts and ends with a new thread
 *     every call (fmnist-m's forward at batch 1 on 2 threads: 115 threads a pass, 4.6 images/s for 50).
 */
#ifndef DF_KERNELS_H
#define DF_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---- GEMM ---- */
/* C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major. op(A) = A (lda >= K) or A^T when transA
 * (A stored K x M, lda >= M); likewise B. beta == 0 never reads C (C may hold NaN). */
void gemm(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
          const float *B, size_t ldb, float beta, float *C, size_t ldc);
void gemm_ref(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
              const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* GEMM with B supplied by a packer instead of a matrix (for convolutions that pack straight from the image).
 * packb(dst, p0, kc, j0, nc, ctx) must write rows [p0, p0 + kc) and columns [j0, j0 + nc) of B into dst as
 * panels of GEMM_NR = 16 columns: panel c (columns j0 + 16c ..) holds, for each k, its 16 values contiguously
 * (dst[c * 16 * kc + k * 16 + j]); columns past nc are zero. */
#define GEMM_NR_PUBLIC 16
#define GEMM_MR_PUBLIC 12 /* rows of a packed A panel (gemm_pack_a): panel q holds rows 12q .. 12q + 11 */
typedef void (*gemm_pack_b_fn)(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx);
void gemm_packed_b(int transA, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   gemm_pack_b_fn packb, const void *ctx, float beta, float *C, size_t ldc);
/* A packed once and reused across calls (a convolution's weights across the images of a batch):
 * gemm_pack_a writes op(A) (M x K) into ap (gemm_packed_a_size(M, K) floats); gemm_prepacked multiplies. In
 * BF16 mode the packing includes A's BF16 copy; code that writes the FP32 panels itself (Winograd's weight
 * transform) calls gemm_pack_a_bf16 after. Do not change the precision between packing and multiplying. */
size_t gemm_packed_a_size(size_t M, size_t K);
void gemm_pack_a(float *ap, int transA, const float *A, size_t lda, size_t M, size_t K, int parallel);
void gemm_pack_a_bf16(float *ap, size_t M, size_t K);
void gemm_prepacked(size_t M, size_t N, size_t K, float alpha, const float *ap, gemm_pack_b_fn packb,
                    const void *ctx, float beta, float *C, size_t ldc);
/* C = A B + bias[i] on row i (M values): the bits of C filled with the bias, then gemm_prepacked with beta 1,
 * but the bias is added as each block is stored (one pass over C, by the thread that computes it). bias NULL:
 * gemm_prepacked with alpha 1, beta 0. */
void gemm_prepacked_bias(size_t M, size_t N, size_t K, const float *ap, gemm_pack_b_fn packb, const void *ctx,
                         const float *bias, float *C, size_t ldc);
/* The packer for a plain row-major B (ctx: a gemm_plain_b_ctx). */
typedef struct {
    int transB;
    const float *B;
    size_t ldb;
} gemm_plain_b_ctx;
void gemm_plain_b(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx);

/* The micro-kernel in use: "avx512", "avx2" or "c" (portable). It is picked for the CPU at the first gemm;
 * gemm_force_isa (or the environment variable DIFFUSE_ISA) forces one, for tests and benchmarks; it returns
 * -1 if this CPU cannot run it. */
const char *gemm_isa(void);
int gemm_force_isa(const char *isa);
/* BF16 mode for every gemm that follows, process-wide (diffuse's --precision bf16): products of operands
 * rounded to BF16, accumulated in FP32. Returns the previous setting. gemm_bf16_isa: "avx512_bf16" where the
 * CPU multiplies BF16 pairs itself, else "c" (the same arithmetic, portable and slow). */
int gemm_set_bf16(int on);
int gemm_bf16_on(void);
const char *gemm_bf16_isa(void);
/* gemm_ref with both operands rounded to BF16 first (the oracle of BF16 mode) */
void gemm_bf16_ref(int transA, int transB, size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                   const float *B, size_t ldb, float beta, float *C, size_t ldc);

/* ---- 2-D convolution ---- */
/* Any kernel size, any stride, asymmetric zero padding (top, bottom, left, right), optional bias.
 * H_out = (H + pad_t + pad_b - KH) / stride + 1, W_out likewise. */
typedef struct {
    size_t B, C_in, H, W, C_out, KH, KW;
    size_t stride, pad_t, pad_b, pad_l, pad_r;
} conv2d_dims;
size_t conv2d_out_h(const conv2d_dims *d);
size_t conv2d_out_w(const conv2d_dims *d);
/* One image's im2col, col[(c*KH + i)*KW + j][y*Wo + x] = in[c][y*s + i - pad_t][x*s + j - pad_l] (0 in the
 * padding), and its adjoint col2im_add (din += ...), for an output grid of Ho x Wo. The convolutions use them,
 * and the transposed convolution, whose forward is a col2im and whose backward an im2col. */
void conv2d_im2col(float *col, const float *in, const conv2d_dims *d, size_t Ho, size_t Wo);
void conv2d_col2im_add(float *din, const float *col, const conv2d_dims *d, size_t Ho, size_t Wo);
/* Implicit GEMM: columns [j0, j0 + nc) and depth [p0, p0 + kc) of one image's column matrix (transposed: of its
 * transpose) packed straight into GEMM panels (gemm_pack_b_fn's layout), as the convolutions do; for tests. The
 * AVX-512 packers (and conv2d_few.c's AVX-512 rows) are used where the CPU has them, unless
 * conv2d_force_portable_packers(1). */
void conv2d_pack_col(float *dst, int transposed, const float *in, const conv2d_dims *d, size_t p0, size_t kc,
                     size_t j0, size_t nc);
void conv2d_force_portable_packers(int on);
/* out (B, C_out, H_out, W_out); in (B, C_in, H, W); weight (C_out, C_in, KH, KW); bias (C_out) or NULL. */
void conv2d_forward(float *out, const float *in, const float *weight, const float *bias, const conv2d_dims *d);
/* The same with the weights packed once (conv2d_pack_weights into conv2d_weights_packed_size floats) and reused
 * while they do not change (sampling): bit for bit conv2d_forward's result, for the same dims and precision. */
size_t conv2d_weights_packed_size(const conv2d_dims *d);
void conv2d_pack_weights(float *wp, const float *weight, const conv2d_dims *d);
void conv2d_forward_packed(float *out, const float *in, const float *wp, const float *bias, const conv2d_dims *d);
/* The same where conv2d_winograd_applies, then out += chan (B, C_out) per image and channel and out += res (like
 * out), either NULL, in the transform's last pass: the bits of add_channel_forward / add_forward after it. */
void conv2d_forward_packed_add(float *out, const float *in, const float *wp, const float *bias,
                               const conv2d_dims *d, const float *chan, const float *res);
void conv2d_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                     const float *weight, const conv2d_dims *d);
/* The same, but din = the input gradient (not +=), whatever din held: for the first gradient into a tensor,
 * without zeroing it first (a 3x3 stride-1 convolution writes it straight from its transposed convolution). */
void conv2d_backward_set(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                         const float *weight, const conv2d_dims *d);
void conv2d_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                        const conv2d_dims *d);
void conv2d_backward_ref(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                         const float *weight, const conv2d_dims *d);

/* Stride-1 convolutions (not 1x1) with at most CONV_FEW output channels (a U-Net's conv_out) go directly, row
 * by row (conv2d_few.c), in conv2d_forward and conv2d_forward_packed (whose "packed" weights are then a plain
 * copy); conv2d_backward makes the weight gradient so (conv2d_weight_grad_few, +=) for those and for those
 * with at most CONV_FEW input channels (conv_in). */
#define CONV_FEW 4
int conv2d_few_channels(const conv2d_dims *d);
int conv2d_weight_grad_few_applies(const conv2d_dims *d);
void conv2d_forward_few(float *out, const float *in, const float *weight, const float *bias, const conv2d_dims *d);
void conv2d_weight_grad_few(float *dweight, const float *dout, const float *in, const conv2d_dims *d);

/* Winograd F(2x2, 3x3) for 3x3, stride-1, padding-1 convolutions (at least 8 channels in and out, 4x4
 * images): 2.25x fewer multiplies, the same result to FP32 rounding. conv2d_winograd_shape: it can run;
 * conv2d_winograd_applies: conv2d_forward uses it (images of at least 14x14, whatever the batch, so that
 * an image gets the same bits in any batch), except in BF16 mode (direct GEMMs are more accurate there);
 * conv2d_forward_winograd runs it directly (for tests). */
int conv2d_winograd_shape(const conv2d_dims *d);
int conv2d_winograd_applies(const conv2d_dims *d);
void conv2d_forward_winograd(float *out, const float *in, const float *weight, const float *bias,
                             const conv2d_dims *d);
size_t conv2d_winograd_weights_size(const conv2d_dims *d);
void conv2d_winograd_pack_weights(float *Up, const float *weight, const conv2d_dims *d);
void conv2d_forward_winograd_packed(float *out, const float *in, const float *Up, const float *bias,
                                    const conv2d_dims *d);
/* The same, then out += chan[b, o] per image and channel (chan (B, C_out)) and out += res element by element
 * (res like out), either NULL: the bits of add_channel_forward or add_forward run after it, without their
 * pass over memory (sampling graphs fuse a convolution with the add that alone reads it). out may alias
 * neither in, chan nor res. */
void conv2d_forward_winograd_packed_add(float *out, const float *in, const float *Up, const float *bias,
                                        const conv2d_dims *d, const float *chan, const float *res);
/* Winograd F(4x4, 3x3) (winograd4.c): 36 multiplies per 4x4 tile and input channel, 1.78x fewer than F(2x2,
 * 3x3), with a few times its rounding error; a forward. conv2d_winograd4_applies: conv2d_forward uses it (images
 * of at least 28x28, not in BF16 mode), and so do the weights packed by conv2d_pack_weights, training's forwards
 * and the input gradient (the forward convolution of the rotated weights); the weight gradient stays F(2x2,
 * 3x3)'s (conv2d_weight_grad_winograd). The rest of the API as F(2x2, 3x3)'s above. */
int conv2d_winograd4_applies(const conv2d_dims *d);
void conv2d_forward_winograd4(float *out, const float *in, const float *weight, const float *bias,
                              const conv2d_dims *d);
size_t conv2d_winograd4_weights_size(const conv2d_dims *d);
void conv2d_winograd4_pack_weights(float *Up, const float *weight, const conv2d_dims *d);
void conv2d_forward_winograd4_packed_add(float *out, const float *in, const float *Up, const float *bias,
                                         const conv2d_dims *d, const float *chan, const float *res);
/* dweight (C_out, C_in, 3, 3) += the weight gradient of that convolution, by the same transforms (16 GEMMs of
 * C_out x C_in over the batch's tiles); conv2d_backward uses it where conv2d_winograd_applies. */
void conv2d_weight_grad_winograd(float *dweight, const float *dout, const float *in, const conv2d_dims *d);

/* ---- linear ---- */
/* out (N, OUT) = in (N, IN) @ weight^T + bias; weight (OUT, IN); bias (OUT) or NULL. */
void linear_forward(float *out, const float *in, const float *weight, const float *bias, size_t N, size_t IN,
                    size_t OUT);
void linear_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                     const float *weight, size_t N, size_t IN, size_t OUT);
/* linear_forward with the weights packed once by linear_pack_weights (FP32 mode): the same bits, image by
 * image as a product with one column; for batches of one or two. */
size_t linear_weights_packed_size(size_t IN, size_t OUT);
void linear_pack_weights(float *wp, const float *weight, size_t IN, size_t OUT);
void linear_forward_packed(float *out, const float *in, const float *wp, const float *bias, size_t N, size_t IN,
                           size_t OUT);
void linear_forward_ref(float *out, const float *in, const float *weight, const float *bias, size_t N,
                        size_t IN, size_t OUT);
void linear_backward_ref(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                         const float *weight, size_t N, size_t IN, size_t OUT);

/* ---- group normalisation ---- */
/* in/out (B, C, HW); G groups of C/G channels; gamma, beta (C) or NULL (not affine).
 * Saves mean and rstd (B, G) for backward. Biased variance, as torch. */
void groupnorm_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                       const float *beta, size_t B, size_t C, size_t HW, size_t G, float eps);
void groupnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                        const float *mean, const float *rstd, const float *gamma, size_t B, size_t C, size_t HW,
                        size_t G);
/* silu(group norm), fused: the group norm's output is never stored. forward saves mean and rstd as
 * groupnorm_forward; apply recomputes the output from them (the same values, bit for bit); backward recomputes
 * the group norm's output from in and the saved statistics. Scratch slots 0 (per thread) and 1. */
void groupnorm_silu_forward(float *out, float *mean, float *rstd, const float *in, const float *gamma,
                            const float *beta, size_t B, size_t C, size_t HW, size_t G, float eps);
void groupnorm_silu_apply(float *out, const float *in, const float *mean, const float *rstd, const float *gamma,
                          const float *beta, size_t B, size_t C, size_t HW, size_t G);
void groupnorm_silu_backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                             const float *mean, const float *rstd, const float *gamma, const float *beta, size_t B,
                             size_t C, size_t HW, size_t G);

/* ---- activations ---- */
/* silu(x) = x * sigmoid(x); relu(x) = max(x, 0). Backward takes the forward input. */
void silu_forward(float *out, const float *in, size_t n);
void silu_backward(float *din, const float *dout, const float *in, size_t n);
void relu_forward(float *out, const float *in, size_t n);
void relu_backward(float *din, const float *dout, const float *in, size_t n);

/* ---- elementwise and shape ops ---- */
/* out = a + b (out may alias a or b). Backward: da += dout, db += dout. */
void add_forward(float *out, const float *a, const float *b, size_t n);
void add_backward(float *da, float *db, const float *dout, size_t n);
/* The same with da = dout where set_a, db = dout where set_b (the first gradients into tensors: no zeroing
 * first), in one pass; da may be db only without set_b. */
void add_backward_set(float *da, int set_a, float *db, int set_b, const float *dout, size_t n);
/* out = in * s. Backward: din += s * dout. */
void scale_forward(float *out, const float *in, float s, size_t n);
void scale_backward(float *din, const float *dout, float s, size_t n);
/* out (B, C, HW) = in + bias[b, c] broadcast over HW (the time embedding added to a feature map).
 * Backward: din += dout; dbias[b, c] += sum over HW of dout. */
void add_channel_forward(float *out, const float *in, const float *bias, size_t B, size_t C, size_t HW);
void add_channel_backward(float *din, float *dbias, const float *dout, size_t B, size_t C, size_t HW);
/* The same with din = dout where set (dbias still +=). */
void add_channel_backward_set(float *din, int set, float *dbias, const float *dout, size_t B, size_t C, size_t HW);
/* Nearest-neighbour 2x upsampling: in (B, C, H, W) -> out (B, C, 2H, 2W). */
void upsample2x_forward(float *out, const float *in, size_t B, size_t C, size_t H, size_t W);
void upsample2x_backward(float *din, const float *dout, size_t B, size_t C, size_t H, size_t W);
/* Channel concatenation: a (B, Ca, HW), b (B, Cb, HW) -> out (B, Ca + Cb, HW). */
void concat_forward(float *out, const float *a, const float *b, size_t B, size_t Ca, size_t Cb, size_t HW);
void concat_backward(float *da, float *db, const float *dout, size_t B, size_t Ca, size_t Cb, size_t HW);

/* ---- attention ---- */
/* Multi-head scaled dot-product self-attention over the T = H*W positions of a feature map, channels
 * first: q, k, v, out are (B, C, T) with C = heads * dh, head h owning channels [h*dh, (h+1)*dh).
 *   P[b,h,i,j] = softmax_j( sum_c q[b,c,i] k[b,c,j] / sqrt(dh) ),  out[b,c,i] = sum_j P[b,h,i,j] v[b,c,j].
 * probs (B, heads, T, T) is saved for backward; it may be NULL in forward (inference), which then works
 * row by row in scratch memory. The DDPM U-Net's attention block is group norm, three 1x1 projections,
 * this, an output projection and a residual add (composed in nn/). */
void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v, size_t B,
                       size_t C, size_t T, size_t heads);
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                        const float *v, const float *probs, size_t B, size_t C, size_t T, size_t heads);
void attention_forward_ref(float *out, float *probs, const float *q, const float *k, const float *v, size_t B,
                           size_t C, size_t T, size_t heads);
/* The same with q, k and v the three thirds of each image of one (B, 3 C, T) tensor qkv (the fused to_q, to_k,
 * to_v projection's output: rows [0, C) q, [C, 2C) k, [2C, 3C) v), and dqkv (B, 3 C, T) likewise; the bits of
 * attention_forward and attention_backward on the thirds copied apart. */
void attention_forward_qkv(float *out, float *probs, const float *qkv, size_t B, size_t C, size_t T, size_t heads);
void attention_backward_qkv(float *dqkv, const float *dout, const float *qkv, const float *probs, size_t B, size_t C,
                            size_t T, size_t heads);

/* ---- timestep embedding ---- */
/* diffusers' get_timestep_embedding: half = dim/2, freq_i = exp(-ln(max_period) * i / (half - freq_shift)),
 * emb = [sin(t freq), cos(t freq)], or [cos, sin] when flip_sin_to_cos; a zero column pads an odd dim.
 * out (N, dim); t (N) (float timesteps). No backward: timesteps are not differentiated. */
void timestep_embedding(float *out, const float *t, size_t N, size_t dim, int flip_sin_to_cos,
                        float freq_shift, float max_period);
/* The SinusoidalPositionEmbeddings of the DDIM reproduction report's SimpleUnet: half = dim/2 (>= 2, dim even),
 * f_i = exp(i * -(ln(10000) / (half - 1))), emb = [sin(t f), cos(t f)]. Mathematically timestep_embedding with
 * flip 0 and freq_shift 1, but rounded as that module computes it (i times one float32 constant, where
 * diffusers multiplies by -ln(10000) and then divides), which moves 8 of the 16 frequencies of dim 32 by one
 * ulp. out (N, dim); t (N). */
void sinusoidal_embedding(float *out, const float *t, size_t N, size_t dim);

/* ---- dropout ---- */
/* Inverted dropout with a counter-based mask: element i is dropped when uniform(seed, stream, i) < p, else
 * scaled by 1 / (1 - p). Backward regenerates the same mask from (seed, stream): nothing is stored. */
void dropout_forward(float *out, const float *in, size_t n, float p, uint64_t seed, uint64_t stream);
void dropout_backward(float *din, const float *dout, size_t n, float p, uint64_t seed, uint64_t stream);
/* The same mask drawn once into bits (keep: ceil(n / 32) words, bit i % 32 of word i / 32 = element i kept),
 * then applied and differentiated from them: the values of dropout_forward / dropout_backward. */
void dropout_mask(uint32_t *keep, size_t n, float p, uint64_t seed, uint64_t stream);
void dropout_apply(float *out, const float *in, const uint32_t *keep, size_t n, float p);
void dropout_backward_mask(float *din, const float *dout, const uint32_t *keep, size_t n, float p);

/* ---- losses ---- */
/* Mean over n elements: mse = mean((pred - target)^2), l1 = mean(|pred - target|). Computed in double.
 * Backward: dpred += scale * d(loss)/d(pred) (scale is the upstream gradient, 1 for a plain loss). */
float mse_forward(const float *pred, const float *target, size_t n);
void mse_backward(float *dpred, const float *pred, const float *target, size_t n, float scale);
float l1_forward(const float *pred, const float *target, size_t n);
void l1_backward(float *dpred, const float *pred, const float *target, size_t n, float scale);
/* Softmax cross-entropy over N rows of K logits with integer labels: the mean of -log softmax(z)[label].
 * Forward writes the softmax to probs (N, K) when not NULL; backward reads it:
 * dlogits += scale * (probs - onehot(label)) / N. */
float xent_forward(float *probs, const float *logits, const int *labels, size_t N, size_t K);
void xent_backward(float *dlogits, const float *probs, const int *labels, size_t N, size_t K, float scale);

/* ---- batch norm ---- */
/* torch.nn.BatchNorm2d: in/out (B, C, HW), each channel normalised over its B * HW values; gamma, beta (C) or
 * NULL (not affine). Training forward uses the batch mean and biased variance, saves mean and
 * rstd = 1/sqrt(var + eps) (C) for backward, and updates running_mean, running_var (C) in place as torch,
 * run = (1 - momentum) run + momentum stat, running_var taking the unbiased variance var * n / (n - 1);
 * either running pointer NULL skips its update. Needs B * HW > 1. Eval forward uses the running statistics.
 * Backward is that of the training forward (mean, rstd as saved); it accumulates like every backward. */
void batchnorm_forward(float *out, float *mean, float *rstd, float *running_mean, float *running_var,
                       const float *in, const float *gamma, const float *beta, size_t B, size_t C, size_t HW,
                       float momentum, float eps);
void batchnorm_forward_eval(float *out, const float *in, const float *running_mean, const float *running_var,
                            const float *gamma, const float *beta, size_t B, size_t C, size_t HW, float eps);
void batchnorm_backward(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                        const float *mean, const float *rstd, const float *gamma, size_t B, size_t C, size_t HW);
void batchnorm_forward_ref(float *out, float *mean, float *rstd, float *running_mean, float *running_var,
                           const float *in, const float *gamma, const float *beta, size_t B, size_t C, size_t HW,
                           float momentum, float eps);
void batchnorm_forward_eval_ref(float *out, const float *in, const float *running_mean, const float *running_var,
                                const float *gamma, const float *beta, size_t B, size_t C, size_t HW, float eps);
void batchnorm_backward_ref(float *din, float *dgamma, float *dbeta, const float *dout, const float *in,
                            const float *mean, const float *rstd, const float *gamma, size_t B, size_t C,
                            size_t HW);

/* ---- transposed convolution ---- */
/* torch.nn.ConvTranspose2d with symmetric zero padding (output_padding 0, dilation 1, groups 1):
 * out[b,o,y*stride + i - pad, x*stride + j - pad] += weight[c,o,i,j] in[b,c,y,x], plus bias[o].
 * H_out = (H - 1) * stride - 2 * pad + KH, W_out likewise. Scratch slots 0 (columns) and 1 (packed weights);
 * it calls gemm (2, 3), never conv2d. */
typedef struct {
    size_t B, C_in, H, W, C_out, KH, KW;
    size_t stride, pad;
} convt2d_dims;
size_t convt2d_out_h(const convt2d_dims *d);
size_t convt2d_out_w(const convt2d_dims *d);
/* out (B, C_out, H_out, W_out) (overwritten); in (B, C_in, H, W); weight (C_in, C_out, KH, KW) as torch stores
 * it; bias (C_out) or NULL. Backward accumulates din (B, C_in, H, W), dweight, dbias; NULL ones skipped. */
void convt2d_forward(float *out, const float *in, const float *weight, const float *bias, const convt2d_dims *d);
void convt2d_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                      const float *weight, const convt2d_dims *d);
void convt2d_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                         const convt2d_dims *d);
void convt2d_backward_ref(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                          const float *weight, const convt2d_dims *d);

#endif
