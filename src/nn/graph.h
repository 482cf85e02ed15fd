/* graph.h: a static graph of kernel calls, built once per (model, batch, mode), with a memory plan.
 *
 * A model is written as a builder (see unet.c) that calls g_conv, g_groupnorm, ... in forward order. The
 * builder both names the model's parameters and records the ops; df_graph_plan then lays every tensor out
 * in one arena, first-fit by lifetime:
 *   - inference graphs: a tensor lives from the op that writes it to the last op that reads it, so sampling
 *     stores nothing it does not need;
 *   - training graphs run on one timeline, the forward ops then their backwards in reverse. An activation
 *     lives until its last reader's forward, or until the backward of the first reader that needs it there
 *     (a convolution's input, a norm's, an activation function's...), a saved statistic until its producer's
 *     backward, a gradient from its last reader's backward to its producer's; activations and gradients share
 *     the arena, so gradients reuse the memory of activations backward is done with. The output of a fused
 *     group norm + SiLU (and a dropout of it) is not kept for backward at all: the backward that needs it
 *     recomputes it from the norm's input and saved statistics, bit for bit, into a short-lived copy.
 * Nothing is allocated per step: forward and backward only walk the op list.
 */
#ifndef DF_GRAPH_H
#define DF_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"

typedef enum {
    OP_CONV2D,
    OP_LINEAR,
    OP_GROUPNORM,
    OP_GN_SILU, /* group norm then SiLU, fused */
    OP_SILU,
    OP_RELU,
    OP_ADD,
    OP_SCALE,
    OP_ADD_CHANNEL,
    OP_UPSAMPLE2X,
    OP_CONCAT,
    OP_ATTENTION,
    OP_TIMESTEP_EMBED,
    OP_DROPOUT,
    OP_BATCHNORM,
    OP_CONVT,
    OP_SINUSOIDAL_EMBED,
} df_opkind;

typedef struct {
    size_t n, c, h, w; /* NCHW; a batch of vectors is (n, c, 1, 1) */
    size_t numel;
    float *data, *grad; /* set by df_graph_plan; grad is NULL for inputs and saved statistics */
    int producer;       /* op index, -1 for a graph input */
    int last_use;       /* last op reading it; nops for the graph output */
    int is_aux;         /* saved statistics (not an activation: no gradient) */
    int has_grad;       /* training graphs: the tensor has a gradient buffer */
    int recompute;      /* training graphs: backward recomputes it into rdata (before op rfirst's backward) */
    int rfirst;
    float *rdata;
    size_t offset, goffset, roffset; /* of data, grad and rdata in the arena */
} df_tensor;

typedef struct {
    df_opkind kind;
    int in[3], out, aux; /* tensor ids, -1 for none */
    int w, b;            /* parameter ids, -1 for none */
    int w_more[2], b_more[2]; /* conv: the weights and biases of up to two more convolutions of the same input
                               * (g_conv_stacked), -1 for none */
    size_t stride, pad[4]; /* conv: top, bottom, left, right; transposed conv: four equal */
    size_t groups;       /* group norm */
    float eps;           /* group norm, batch norm */
    size_t heads;        /* attention */
    float s;             /* scale factor; dropout probability; timestep-embedding freq_shift; batch-norm momentum */
    int flip;            /* timestep embedding: flip_sin_to_cos */
    int rmean, rvar;     /* batch norm: running mean and variance, ids in the graph's buffer table */
    int seq;             /* dropout: how many dropouts come before it (its random stream, whatever ops fuse) */
} df_op;

typedef struct {
    df_params *params; /* not owned */
    df_params *buffers; /* not owned: running statistics that training forwards update (batch norm), or NULL */
    int train;
    int keep_all; /* training graphs, set before planning: no sharing and no recomputation (for tests) */
    size_t batch;
    df_tensor *t;
    int nt, cap_t;
    df_op *ops;
    int nops, cap_ops;
    int output;
    float *arena;
    size_t arena_floats;
    float **packed;  /* inference graphs: each convolution's weights packed once (df_graph_pack_weights), or NULL */
    float *stack;    /* a stacked convolution's weights and biases side by side, then their gradients */
    size_t stack_floats;
    int packed_bf16; /* the precision they were packed for */
    uint64_t dropout_seed, dropout_step; /* the training loop sets these each step */
    double *op_seconds; /* when set (2 * nops): each op's forward [i] and backward [nops + i] time, summed */
} df_graph;

void df_graph_init(df_graph *g, df_params *params, size_t batch, int train);
void df_graph_free(df_graph *g);

/* ---- builders: each returns the id of its output tensor ---- */
int g_input(df_graph *g, size_t n, size_t c, size_t h, size_t w);
/* Kernel size and channels come from the weight's shape (O, I, KH, KW), or (O, I) for a 1x1 projection. */
int g_conv(df_graph *g, int x, int w, int b, size_t stride, size_t pt, size_t pb, size_t pl, size_t pr);
int g_linear(df_graph *g, int x, int w, int b);
/* n (2 or 3) convolutions of x with weights w[i] and biases b[i] (all -1 or none), all of one shape, as one:
 * their outputs one after another along the channels (attention's to_q, to_k and to_v: one GEMM that reads x
 * once and packs each of its column panels once for all three). */
int g_conv_stacked(df_graph *g, int x, const int *w, const int *b, int n, size_t stride, size_t pt, size_t pb,
                   size_t pl, size_t pr);
int g_groupnorm(df_graph *g, int x, int gamma, int beta, size_t groups, float eps);
/* silu(group norm(x)) as one op (the DDPM U-Net's norm1/norm2/conv_norm_out and their SiLU) */
int g_groupnorm_silu(df_graph *g, int x, int gamma, int beta, size_t groups, float eps);
int g_silu(df_graph *g, int x);
int g_relu(df_graph *g, int x);
int g_add(df_graph *g, int a, int b);
int g_scale(df_graph *g, int x, float s);
int g_add_channel(df_graph *g, int x, int v);
int g_upsample2x(df_graph *g, int x);
int g_concat(df_graph *g, int a, int b);
int g_attention(df_graph *g, int q, int k, int v, size_t heads);
/* The same over the three thirds of qkv's channels (a g_conv_stacked of to_q, to_k, to_v): in[1], in[2] -1. */
int g_attention_qkv(df_graph *g, int qkv, size_t heads);
int g_timestep_embed(df_graph *g, int t, size_t dim, int flip_sin_to_cos, float freq_shift);
int g_dropout(df_graph *g, int x, float p);
/* Batch norm (torch.nn.BatchNorm2d) with gamma, beta (parameter ids) and running mean and variance (ids in
 * g->buffers, which the builder sets). Training graphs normalise with the batch statistics, save mean and rstd
 * (an aux tensor) for backward and move the running statistics by `momentum` in every forward; inference
 * graphs normalise with the running statistics. */
int g_batchnorm(df_graph *g, int x, int gamma, int beta, int rmean, int rvar, float momentum, float eps);
/* Transposed convolution (torch.nn.ConvTranspose2d, symmetric padding, output_padding 0); the weight's shape
 * is (C_in, C_out, KH, KW) as torch stores it. */
int g_convt(df_graph *g, int x, int w, int b, size_t stride, size_t pad);
/* The DDIM report's SinusoidalPositionEmbeddings of (n, 1) timesteps (kernels.h: sinusoidal_embedding). */
int g_sinusoidal_embed(df_graph *g, int t, size_t dim);

/* Lays out memory (see above) and allocates the arenas. Call once after building. */
void df_graph_plan(df_graph *g);
/* Inference graphs: packs every convolution's weights now, and forwards reuse them until df_graph_unpack_weights
 * (the caller promises the weights do not change in between: sampling). A change of precision repacks. */
void df_graph_pack_weights(df_graph *g);
void df_graph_unpack_weights(df_graph *g);
/* Runs the ops in order; inputs must have been written to their tensors' data. */
void df_graph_forward(df_graph *g);
/* Whether op i is a convolution whose output only op i + 1 reads, that op adding it to another tensor (an add,
 * or an add_channel of it): a pair that the forward of a sampling graph may run as one (its plan keeps the
 * convolution's input alive through op i + 1 for that). Needs last_use, set by df_graph_plan. */
int df_graph_conv_add_pair(const df_graph *g, int i);
/* Training graphs only: dout is the gradient of the loss w.r.t. the output tensor. Zeroes the activation
 * gradients, then ACCUMULATES parameter gradients into params->grad (the caller zeroes those). */
void df_graph_backward(df_graph *g, const float *dout);

/* FLOPs of one forward pass (2 per multiply-add of convolutions, linears and attention products). */
double df_graph_flops(const df_graph *g);
/* Bytes of the arena (activations, and in training graphs their gradients). */
size_t df_graph_bytes(const df_graph *g);

#endif
