/* graph_exec.c: running a planned graph forward and backward, one kernel call per op. */
#include <string.h>

#include "base/base.h"
#include "base/rng.h"
#include "kernels/kernels.h"
#include "nn/graph.h"


static conv2d_dims conv_dims(const df_graph *g, const df_op *op) {
    const df_tensor *x = &g->t[op->in[0]];
    const df_param *w = &g->params->p[op->w];
    conv2d_dims d = {.B = x->n, .C_in = x->c, .H = x->h, .W = x->w, .C_out = g->t[op->out].c, /* all stacked */
                     .KH = w->ndim == 4 ? (size_t)w->shape[2] : 1, .KW = w->ndim == 4 ? (size_t)w->shape[3] : 1,
                     .stride = op->stride, .pad_t = op->pad[0], .pad_b = op->pad[1], .pad_l = op->pad[2],
                     .pad_r = op->pad[3]};
    return d;
}

static convt2d_dims convt_dims(const df_graph *g, const df_op *op) {
    const df_tensor *x = &g->t[op->in[0]];
    const df_param *w = &g->params->p[op->w];
    convt2d_dims d = {.B = x->n, .C_in = x->c, .H = x->h, .W = x->w, .C_out = (size_t)w->shape[1],
                      .KH = (size_t)w->shape[2], .KW = (size_t)w->shape[3], .stride = op->stride, .pad = op->pad[0]};
    return d;
}

static float *bufdata(const df_graph *g, int i) { return df_param_data(g->buffers, i); }

static const float *pdata(const df_graph *g, int i) { return i >= 0 ? df_param_data(g->params, i) : NULL; }
static float *pgrad(const df_graph *g, int i) { return i >= 0 ? df_param_grad(g->params, i) : NULL; }

/* A stacked convolution (g_conv_stacked): its parameters' ids, w first. Returns how many. */
static int stack_ids(const df_op *op, int *w, int *b) {
    int n = 1;
    w[0] = op->w, b[0] = op->b;
    for (int i = 0; i < 2 && op->w_more[i] >= 0; i++, n++) w[n] = op->w_more[i], b[n] = op->b_more[i];
    return n;
}

/* Its weights one after another (as one convolution's with all the output channels) at g->stack (unless
 * !weights: the forward of packed weights needs only the biases; then NULL is returned), and its biases after
 * them (*bias; NULL without); with dw and db, their gradients after those (*dw, *db; the current values, which
 * backward adds to, then stack_put). */
static const float *stack_get(df_graph *g, const df_op *op, int weights, const float **bias, float **dw,
                              float **db) {
    int w[3], b[3], n = stack_ids(op, w, b);
    size_t nw = g->params->p[op->w].numel, nb = g->t[op->out].c / (size_t)n;
    float *sw = g->stack, *sb = sw + n * nw, *gw = sb + n * nb, *gb = gw + n * nw;
    for (int i = 0; i < n; i++) {
        if (weights) memcpy(sw + i * nw, pdata(g, w[i]), nw * sizeof(float));
        if (b[i] >= 0) memcpy(sb + i * nb, pdata(g, b[i]), nb * sizeof(float));
        if (dw && pgrad(g, w[i])) memcpy(gw + i * nw, pgrad(g, w[i]), nw * sizeof(float));
        if (db && b[i] >= 0 && pgrad(g, b[i])) memcpy(gb + i * nb, pgrad(g, b[i]), nb * sizeof(float));
    }
    *bias = b[0] >= 0 ? sb : NULL;
    if (dw) *dw = pgrad(g, w[0]) ? gw : NULL;
    if (db) *db = b[0] >= 0 && pgrad(g, b[0]) ? gb : NULL;
    return weights ? sw : NULL;
}

/* Back into the parameters' gradients: what backward added to stack_get's copies. */
static void stack_put(df_graph *g, const df_op *op, const float *dw, const float *db) {
    int w[3], b[3], n = stack_ids(op, w, b);
    size_t nw = g->params->p[op->w].numel, nb = g->t[op->out].c / (size_t)n;
    for (int i = 0; i < n; i++) {
        if (dw) memcpy(pgrad(g, w[i]), dw + i * nw, nw * sizeof(float));
        if (db) memcpy(pgrad(g, b[i]), db + i * nb, nb * sizeof(float));
    }
}

static uint64_t dropout_stream(const df_graph *g, int op_index) {
    return df_stream(DF_STREAM_DROPOUT, (uint32_t)g->ops[op_index].seq, (uint32_t)g->dropout_step);
}

/* ---- forward ---- */

void df_graph_unpack_weights(df_graph *g) {
    if (!g->packed) return;
    for (int i = 0; i < g->nops; i++) df_free(g->packed[i]);
    df_free(g->packed);
    g->packed = NULL;
}

void df_graph_pack_weights(df_graph *g) {
    DF_CHECK(!g->train, "weights packed for a training graph");
    df_graph_unpack_weights(g);
    g->packed = df_calloc((size_t)g->nops, sizeof *g->packed);
    g->packed_bf16 = gemm_bf16_on();
    for (int i = 0; i < g->nops; i++) {
        const df_op *op = &g->ops[i];
        if (op->kind == OP_LINEAR && !g->packed_bf16) { /* for batch 1; BF16 keeps the batched path's bits */
            size_t IN = g->t[op->in[0]].numel / g->t[op->in[0]].n, OUT = g->t[op->out].c;
            g->packed[i] = df_malloc(linear_weights_packed_size(IN, OUT) * sizeof(float));
            linear_pack_weights(g->packed[i], pdata(g, op->w), IN, OUT);
        }
        if (op->kind != OP_CONV2D) continue;
        conv2d_dims d = conv_dims(g, op);
        const float *bias, *w = op->w_more[0] >= 0 ? stack_get(g, op, 1, &bias, NULL, NULL) : pdata(g, op->w);
        g->packed[i] = df_malloc(conv2d_weights_packed_size(&d) * sizeof(float));
        conv2d_pack_weights(g->packed[i], w, &d);
    }
}

static int overlap(const df_tensor *p, const df_tensor *q) {
    return p->data < q->data + q->numel && q->data < p->data + p->numel;
}

/* In a sampling graph with packed weights, a Winograd convolution and the add after it (df_graph_conv_add_pair)
 * run as one (conv2d_forward_packed_add): the add's output written straight from the transform, with
 * the same bits. Returns 1 when op i + 1 was done so. */
static int conv_add_fused(df_graph *g, int i, const conv2d_dims *d) {
    if (g->train || !g->packed || !g->packed[i] || !conv2d_winograd_applies(d) || !df_graph_conv_add_pair(g, i))
        return 0;
    const df_op *op = &g->ops[i], *nx = &g->ops[i + 1];
    int other = nx->in[0] == op->out ? nx->in[1] : nx->in[0];
    const df_tensor *y = &g->t[nx->out], *a = &g->t[op->in[0]], *o = &g->t[other];
    if (overlap(y, a) || overlap(y, o)) return 0; /* df_graph_plan keeps them apart; checked all the same */
    conv2d_forward_packed_add(y->data, a->data, g->packed[i], pdata(g, op->b), d,
                              nx->kind == OP_ADD_CHANNEL ? o->data : NULL, nx->kind == OP_ADD ? o->data : NULL);
    return 1;
}

void df_graph_forward(df_graph *g) {
    if (g->packed && g->packed_bf16 != gemm_bf16_on()) df_graph_pack_weights(g); /* packed for another precision */
    for (int i = 0; i < g->nops; i++) {
        double t0 = g->op_seconds ? df_time() : 0;
        const df_op *op = &g->ops[i];
        df_tensor *y = &g->t[op->out];
        const df_tensor *a = &g->t[op->in[0]];
        const df_tensor *b = op->in[1] >= 0 ? &g->t[op->in[1]] : NULL;
        switch (op->kind) {
        case OP_CONV2D: {
            conv2d_dims d = conv_dims(g, op);
            const float *w = pdata(g, op->w), *bias = pdata(g, op->b);
            int packed = g->packed && g->packed[i];
            if (op->w_more[0] >= 0) /* stacked: the parameters side by side (packed: only the biases) */
                w = stack_get(g, op, !packed, &bias, NULL, NULL);
            else if (conv_add_fused(g, i, &d)) {
                if (g->op_seconds) g->op_seconds[i] += df_time() - t0;
                i++; /* the add is done: its time is the convolution's */
                continue;
            }
            if (packed)
                conv2d_forward_packed(y->data, a->data, g->packed[i], bias, &d);
            else
                conv2d_forward(y->data, a->data, w, bias, &d);
        } break;
        case OP_LINEAR:
            if (g->packed && g->packed[i] && a->n <= 2)
                linear_forward_packed(y->data, a->data, g->packed[i], pdata(g, op->b), a->n, a->numel / a->n, y->c);
            else
                linear_forward(y->data, a->data, pdata(g, op->w), pdata(g, op->b), a->n, a->numel / a->n, y->c);
            break;
        case OP_GROUPNORM: {
            float *mean = g->t[op->aux].data, *rstd = mean + a->n * op->groups;
            groupnorm_forward(y->data, mean, rstd, a->data, pdata(g, op->w), pdata(g, op->b), a->n, a->c,
                              a->h * a->w, op->groups, op->eps);
        } break;
        case OP_GN_SILU: {
            float *mean = g->t[op->aux].data, *rstd = mean + a->n * op->groups;
            groupnorm_silu_forward(y->data, mean, rstd, a->data, pdata(g, op->w), pdata(g, op->b), a->n, a->c,
                                   a->h * a->w, op->groups, op->eps);
        } break;
        case OP_SILU: silu_forward(y->data, a->data, a->numel); break;
        case OP_RELU: relu_forward(y->data, a->data, a->numel); break;
        case OP_ADD: add_forward(y->data, a->data, b->data, a->numel); break;
        case OP_SCALE: scale_forward(y->data, a->data, op->s, a->numel); break;
        case OP_ADD_CHANNEL: add_channel_forward(y->data, a->data, b->data, a->n, a->c, a->h * a->w); break;
        case OP_UPSAMPLE2X: upsample2x_forward(y->data, a->data, a->n, a->c, a->h, a->w); break;
        case OP_CONCAT: concat_forward(y->data, a->data, b->data, a->n, a->c, b->c, a->h * a->w); break;
        case OP_ATTENTION:
            if (!b) /* q, k and v as one tensor (g_attention_qkv) */
                attention_forward_qkv(y->data, op->aux >= 0 ? g->t[op->aux].data : NULL, a->data, a->n, y->c,
                                      a->h * a->w, op->heads);
            else
                attention_forward(y->data, op->aux >= 0 ? g->t[op->aux].data : NULL, a->data, b->data,
                                  g->t[op->in[2]].data, a->n, a->c, a->h * a->w, op->heads);
            break;
        case OP_TIMESTEP_EMBED: timestep_embedding(y->data, a->data, a->n, y->c, op->flip, op->s, 10000.0f); break;
        case OP_DROPOUT:
            if (g->train) {
                uint32_t *keep = (uint32_t *)g->t[op->aux].data;
                dropout_mask(keep, a->numel, op->s, g->dropout_seed, dropout_stream(g, i));
                dropout_apply(y->data, a->data, keep, a->numel, op->s);
            } else
                memcpy(y->data, a->data, a->numel * sizeof(float));
            break;
        case OP_BATCHNORM:
            if (g->train) {
                float *mean = g->t[op->aux].data, *rstd = mean + a->c;
                batchnorm_forward(y->data, mean, rstd, bufdata(g, op->rmean), bufdata(g, op->rvar), a->data,
                                  pdata(g, op->w), pdata(g, op->b), a->n, a->c, a->h * a->w, op->s, op->eps);
            } else {
                batchnorm_forward_eval(y->data, a->data, bufdata(g, op->rmean), bufdata(g, op->rvar),
                                       pdata(g, op->w), pdata(g, op->b), a->n, a->c, a->h * a->w, op->eps);
            }
            break;
        case OP_CONVT: {
            convt2d_dims d = convt_dims(g, op);
            convt2d_forward(y->data, a->data, pdata(g, op->w), pdata(g, op->b), &d);
        } break;
        case OP_SINUSOIDAL_EMBED: sinusoidal_embedding(y->data, a->data, a->n, y->c); break;
        }
        if (g->op_seconds) g->op_seconds[i] += df_time() - t0;
    }
}

/* ---- backward ---- */

/* Writes tensor id's forward values again into its rdata: the fused group norm + SiLU at the root from its
 * input and saved statistics, then each dropout on the way, in place (graph.h). */
static void rematerialize(df_graph *g, int id) {
    int drops[64], nd = 0, t = id;
    while (g->ops[g->t[t].producer].kind == OP_DROPOUT) {
        DF_CHECK(nd < 64, "recomputed chain too long");
        drops[nd++] = g->t[t].producer;
        t = g->ops[g->t[t].producer].in[0];
    }
    const df_op *op = &g->ops[g->t[t].producer];
    DF_CHECK(op->kind == OP_GN_SILU, "recompute: tensor %d is not a fused group norm's output", id);
    const df_tensor *a = &g->t[op->in[0]];
    const float *mean = g->t[op->aux].data, *rstd = mean + a->n * op->groups;
    float *out = g->t[id].rdata;
    groupnorm_silu_apply(out, a->data, mean, rstd, pdata(g, op->w), pdata(g, op->b), a->n, a->c, a->h * a->w,
                         op->groups);
    while (nd--) {
        const df_op *dop = &g->ops[drops[nd]];
        dropout_apply(out, out, (const uint32_t *)g->t[dop->aux].data, a->numel, dop->s);
    }
}

/* memset over threads, for large tensors */
static void zero(float *x, size_t n) {
    ptrdiff_t chunks = (ptrdiff_t)((n + 16383) / 16384);
#pragma omp parallel for schedule(static) if (n > (1 << 18))
    for (ptrdiff_t c = 0; c < chunks; c++) {
        size_t i = (size_t)c * 16384;
        memset(x + i, 0, (n - i < 16384 ? n - i : 16384) * sizeof(float));
    }
}

/* The values backward reads: the recomputed copy where there is one. */
static const float *bdata(const df_tensor *t) { return t->recompute ? t->rdata : t->data; }

void df_graph_backward(df_graph *g, const float *dout) {
    DF_CHECK(g->train, "backward on an inference graph");
    memcpy(g->t[g->output].grad, dout, g->t[g->output].numel * sizeof(float));
    for (int i = g->nops - 1; i >= 0; i--) {
        double t0 = g->op_seconds ? df_time() : 0;
        const df_op *op = &g->ops[i];
        int needed = op->w >= 0 || op->b >= 0; /* a gradient to make: a parameter's or an input's */
        for (int k = 0; k < 3; k++) needed |= op->in[k] >= 0 && g->t[op->in[k]].has_grad;
        if (!needed) continue; /* (as an op on a graph input: the kernels take no NULL gradient there) */
        /* a gradient this op is the first to accumulate into starts at zero, except where the op writes it
         * whole (bit k of set for input k): a convolution's input gradient (conv2d_backward_set), an add's
         * (add_backward_set; x + x only once) and add_channel's map */
        int set = 0;
        for (int k = 0; k < 2; k++) {
            int first = op->in[k] >= 0 && g->t[op->in[k]].has_grad && g->t[op->in[k]].last_use == i;
            int writes = k == 0 ? op->kind == OP_CONV2D || op->kind == OP_ADD || op->kind == OP_ADD_CHANNEL
                                : op->kind == OP_ADD && op->in[1] != op->in[0];
            if (first && writes) set |= 1 << k;
        }
        for (int k = 0; k < 3; k++) {
            df_tensor *in = op->in[k] >= 0 ? &g->t[op->in[k]] : NULL;
            if (in && in->has_grad && in->last_use == i && !(set >> k & 1)) zero(in->grad, in->numel);
        }
        for (int k = 0; k < 3; k++) /* inputs recomputed for the first backward that reads them */
            if (op->in[k] >= 0 && g->t[op->in[k]].recompute && g->t[op->in[k]].rfirst == i &&
                (k == 0 || op->in[k] != op->in[k - 1]))
                rematerialize(g, op->in[k]);
        const df_tensor *y = &g->t[op->out];
        const df_tensor *a = &g->t[op->in[0]];
        const df_tensor *b = op->in[1] >= 0 ? &g->t[op->in[1]] : NULL;
        const float *dy = y->grad;
        const float *ad = bdata(a), *bd = b ? bdata(b) : NULL;
        switch (op->kind) {
        case OP_CONV2D: {
            conv2d_dims d = conv_dims(g, op);
            const float *w = pdata(g, op->w), *bias;
            float *dw = pgrad(g, op->w), *db = pgrad(g, op->b);
            if (op->w_more[0] >= 0) w = stack_get(g, op, 1, &bias, &dw, &db); /* stacked: gradients side by side */
            (set & 1 ? conv2d_backward_set : conv2d_backward)(a->grad, dw, db, dy, ad, w, &d);
            if (op->w_more[0] >= 0) stack_put(g, op, dw, db); /* and back */
        } break;
        case OP_LINEAR:
            linear_backward(a->grad, pgrad(g, op->w), pgrad(g, op->b), dy, ad, pdata(g, op->w), a->n,
                            a->numel / a->n, y->c);
            break;
        case OP_GROUPNORM: {
            const float *mean = g->t[op->aux].data, *rstd = mean + a->n * op->groups;
            groupnorm_backward(a->grad, pgrad(g, op->w), pgrad(g, op->b), dy, ad, mean, rstd, pdata(g, op->w),
                               a->n, a->c, a->h * a->w, op->groups);
        } break;
        case OP_GN_SILU: {
            const float *mean = g->t[op->aux].data, *rstd = mean + a->n * op->groups;
            groupnorm_silu_backward(a->grad, pgrad(g, op->w), pgrad(g, op->b), dy, ad, mean, rstd, pdata(g, op->w),
                                    pdata(g, op->b), a->n, a->c, a->h * a->w, op->groups);
        } break;
        case OP_SILU: silu_backward(a->grad, dy, ad, a->numel); break;
        case OP_RELU: relu_backward(a->grad, dy, ad, a->numel); break;
        case OP_ADD: add_backward_set(a->grad, set & 1, b->grad, set >> 1 & 1, dy, a->numel); break;
        case OP_SCALE: scale_backward(a->grad, dy, op->s, a->numel); break;
        case OP_ADD_CHANNEL: add_channel_backward_set(a->grad, set & 1, b->grad, dy, a->n, a->c, a->h * a->w); break;
        case OP_UPSAMPLE2X: upsample2x_backward(a->grad, dy, a->n, a->c, a->h, a->w); break;
        case OP_CONCAT: concat_backward(a->grad, b->grad, dy, a->n, a->c, b->c, a->h * a->w); break;
        case OP_ATTENTION: {
            if (!b) {
                attention_backward_qkv(a->grad, dy, ad, g->t[op->aux].data, a->n, y->c, a->h * a->w, op->heads);
                break;
            }
            const df_tensor *v = &g->t[op->in[2]];
            attention_backward(a->grad, b->grad, v->grad, dy, ad, bd, bdata(v), g->t[op->aux].data, a->n,
                               a->c, a->h * a->w, op->heads);
        } break;
        case OP_TIMESTEP_EMBED: break; /* timesteps are not differentiated */
        case OP_DROPOUT:
            dropout_backward_mask(a->grad, dy, (const uint32_t *)g->t[op->aux].data, a->numel, op->s);
            break;
        case OP_BATCHNORM: {
            const float *mean = g->t[op->aux].data, *rstd = mean + a->c;
            batchnorm_backward(a->grad, pgrad(g, op->w), pgrad(g, op->b), dy, ad, mean, rstd, pdata(g, op->w),
                               a->n, a->c, a->h * a->w);
        } break;
        case OP_CONVT: {
            convt2d_dims d = convt_dims(g, op);
            convt2d_backward(a->grad, pgrad(g, op->w), pgrad(g, op->b), dy, ad, pdata(g, op->w), &d);
        } break;
        case OP_SINUSOIDAL_EMBED: break; /* timesteps are not differentiated */
        }
        if (g->op_seconds) g->op_seconds[g->nops + i] += df_time() - t0;
    }
}

/* ---- cost ---- */

double df_graph_flops(const df_graph *g) {
    double f = 0;
    for (int i = 0; i < g->nops; i++) {
        const df_op *op = &g->ops[i];
        const df_tensor *y = &g->t[op->out], *a = &g->t[op->in[0]];
        if (op->kind == OP_CONV2D) {
            const df_param *w = &g->params->p[op->w];
            f += 2.0 * (double)y->numel * (double)(w->numel / (size_t)w->shape[0]);
        } else if (op->kind == OP_CONVT) {
            const df_param *w = &g->params->p[op->w];
            f += 2.0 * (double)a->numel * (double)(w->numel / (size_t)w->shape[0]);
        } else if (op->kind == OP_LINEAR) {
            f += 2.0 * (double)y->numel * (double)(a->numel / a->n);
        } else if (op->kind == OP_ATTENTION) {
            double T = (double)(a->h * a->w);
            f += 4.0 * (double)a->n * T * T * (double)y->c; /* y's channels: a may be q, k and v as one */
        }
    }
    return f;
}
