/* conv2d_internal.h: what conv2d.c (forward and backward) shares with conv2d_pack.c, the implicit-GEMM
 * packers. Not part of kernels.h. */
#ifndef DF_CONV2D_INTERNAL_H
#define DF_CONV2D_INTERNAL_H

#include "kernels.h"

/* What a column packer reads: one image (C_in, H, W) of a convolution with output Ho x Wo. */
typedef struct {
    const float *in; /* one image (C_in, H, W) */
    const conv2d_dims *d;
    size_t Ho, Wo;
} col_ctx;

/* The packer of the column matrix (transposed 0: B = col, depth K taps, columns P pixels, for the forward;
 * 1: B = col^T, for the weight gradient) for this CPU, as a gemm_pack_b_fn over a col_ctx. */
gemm_pack_b_fn conv2d_col_packer(int transposed);

/* Whether the convolutions' AVX-512 code runs: the CPU has it and conv2d_force_portable_packers(1) is not on. */
int conv2d_use_avx512(void);

#endif
