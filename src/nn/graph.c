/* graph.c: building a graph of kernel calls and planning its memory. Execution is in graph_exec.c. */
#include "nn/graph.h"

#include <string.h>

#include "base/base.h"

void df_graph_init(df_graph *g, df_params *params, size_t batch, int train) {
    memset(g, 0, sizeof *g);
    g->params = params;
    g->batch = batch;
    g->train = train;
    g->output = -1;
}

void df_graph_free(df_graph *g) {
    df_graph_unpack_weights(g);
    df_free(g->t);
    df_free(g->ops);
    df_free(g->arena);
    df_free(g->stack);
    df_free(g->op_seconds);
    memset(g, 0, sizeof *g);
}

/* ---- tensors and ops ---- */

/* Makes room for one more element in an array of `size`-byte elements holding n of cap (doubling). */
static void *grow(void *arr, int n, int *cap, size_t size) {
    if (n < *cap) return arr;
    int nc = *cap ? 2 * *cap : 256;
    void *na = df_malloc((size_t)nc * size);
    if (n) memcpy(na, arr, (size_t)n * size);
    df_free(arr);
    *cap = nc;
    return na;
}

static int new_tensor(df_graph *g, size_t n, size_t c, size_t h, size_t w, int is_aux) {
    g->t = grow(g->t, g->nt, &g->cap_t, sizeof *g->t);
    df_tensor *t = &g->t[g->nt];
    memset(t, 0, sizeof *t);
    t->n = n, t->c = c, t->h = h, t->w = w;
    t->numel = n * c * h * w;
    t->producer = g->nops; /* the op about to be added; g_input resets it */
    t->last_use = -1;
    t->is_aux = is_aux;
    return g->nt++;
}

static df_op *new_op(df_graph *g, df_opkind kind, int in0, int in1, int in2) {
    g->ops = grow(g->ops, g->nops, &g->cap_ops, sizeof *g->ops);
    df_op *op = &g->ops[g->nops];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->in[0] = in0, op->in[1] = in1, op->in[2] = in2;
    op->out = op->aux = op->w = op->b = op->rmean = op->rvar = -1;
    op->w_more[0] = op->w_more[1] = op->b_more[0] = op->b_more[1] = -1;
    for (int i = 0; i < 3; i++) DF_CHECK(op->in[i] < g->nt, "op input %d is not a tensor yet", op->in[i]);
    return op;
}

/* Adds the op's output tensor, finishing the op; returns the tensor id. */
static int finish(df_graph *g, df_op *op, size_t n, size_t c, size_t h, size_t w) {
    op->out = new_tensor(g, n, c, h, w, 0);
    g->nops++;
    g->output = op->out;
    return op->out;
}

static const df_param *param(const df_graph *g, int i) {
    DF_CHECK(i >= 0 && (size_t)i < g->params->n, "parameter id %d", i);
    return &g->params->p[i];
}

/* ---- builders ---- */

int g_input(df_graph *g, size_t n, size_t c, size_t h, size_t w) {
    int id = new_tensor(g, n, c, h, w, 0);
    g->t[id].producer = -1;
    return id;
}

int g_conv(df_graph *g, int x, int w, int b, size_t stride, size_t pt, size_t pb, size_t pl, size_t pr) {
    const df_tensor *tx = &g->t[x];
    const df_param *pw = param(g, w);
    size_t kh = pw->ndim == 4 ? (size_t)pw->shape[2] : 1, kw = pw->ndim == 4 ? (size_t)pw->shape[3] : 1;
    DF_CHECK((size_t)pw->shape[1] == tx->c, "conv %s expects %lld input channels, got %zu", pw->name,
             (long long)pw->shape[1], tx->c);
    DF_CHECK(b < 0 || param(g, b)->numel == (size_t)pw->shape[0], "conv bias size");
    DF_CHECK(tx->h + pt + pb >= kh && tx->w + pl + pr >= kw && stride >= 1, "conv %s: input too small", pw->name);
    df_op *op = new_op(g, OP_CONV2D, x, -1, -1);
    op->w = w, op->b = b, op->stride = stride;
    op->pad[0] = pt, op->pad[1] = pb, op->pad[2] = pl, op->pad[3] = pr;
    size_t ho = (tx->h + pt + pb - kh) / stride + 1, wo = (tx->w + pl + pr - kw) / stride + 1;
    return finish(g, op, tx->n, (size_t)pw->shape[0], ho, wo);
}

int g_conv_stacked(df_graph *g, int x, const int *w, const int *b, int n, size_t stride, size_t pt, size_t pb,
                   size_t pl, size_t pr) {
    DF_CHECK(n >= 2 && n <= 3, "conv_stacked: %d convolutions (2 or 3)", n);
    const df_param *p0 = param(g, w[0]);
    for (int i = 1; i < n; i++) {
        const df_param *pi = param(g, w[i]);
        DF_CHECK(pi->ndim == p0->ndim && memcmp(pi->shape, p0->shape, sizeof(int64_t) * (size_t)p0->ndim) == 0,
                 "conv_stacked: %s and %s differ in shape", p0->name, pi->name);
        DF_CHECK((b[i] < 0) == (b[0] < 0), "conv_stacked: biases for some of the convolutions only");
    }
    int out = g_conv(g, x, w[0], b[0], stride, pt, pb, pl, pr);
    df_op *op = &g->ops[g->nops - 1];
    for (int i = 1; i < n; i++) op->w_more[i - 1] = w[i], op->b_more[i - 1] = b[i];
    df_tensor *y = &g->t[out];
    y->c *= (size_t)n;
    y->numel *= (size_t)n;
    return out;
}

int g_linear(df_graph *g, int x, int w, int b) {
    const df_tensor *tx = &g->t[x];
    const df_param *pw = param(g, w);
    DF_CHECK(pw->ndim == 2 && (size_t)pw->shape[1] == tx->c * tx->h * tx->w, "linear %s input size", pw->name);
    df_op *op = new_op(g, OP_LINEAR, x, -1, -1);
    op->w = w, op->b = b;
    return finish(g, op, tx->n, (size_t)pw->shape[0], 1, 1);
}

static int groupnorm(df_graph *g, df_opkind kind, int x, int gamma, int beta, size_t groups, float eps) {
    df_tensor tx = g->t[x];
    DF_CHECK(groups >= 1 && tx.c % groups == 0, "group norm: %zu channels do not split into %zu groups", tx.c,
             groups);
    df_op *op = new_op(g, kind, x, -1, -1);
    op->w = gamma, op->b = beta, op->groups = groups, op->eps = eps;
    op->aux = new_tensor(g, 2, tx.n, groups, 1, 1); /* mean then rstd, (B, G) each */
    return finish(g, op, tx.n, tx.c, tx.h, tx.w);
}

int g_groupnorm(df_graph *g, int x, int gamma, int beta, size_t groups, float eps) {
    return groupnorm(g, OP_GROUPNORM, x, gamma, beta, groups, eps);
}

int g_groupnorm_silu(df_graph *g, int x, int gamma, int beta, size_t groups, float eps) {
    return groupnorm(g, OP_GN_SILU, x, gamma, beta, groups, eps);
}

static int unary(df_graph *g, df_opkind kind, int x) {
    df_tensor tx = g->t[x];
    df_op *op = new_op(g, kind, x, -1, -1);
    return finish(g, op, tx.n, tx.c, tx.h, tx.w);
}

int g_silu(df_graph *g, int x) { return unary(g, OP_SILU, x); }
int g_relu(df_graph *g, int x) { return unary(g, OP_RELU, x); }
int g_upsample2x(df_graph *g, int x) {
    df_tensor tx = g->t[x];
    df_op *op = new_op(g, OP_UPSAMPLE2X, x, -1, -1);
    return finish(g, op, tx.n, tx.c, 2 * tx.h, 2 * tx.w);
}

int g_scale(df_graph *g, int x, float s) {
    int out = unary(g, OP_SCALE, x);
    g->ops[g->nops - 1].s = s;
    return out;
}

int g_dropout(df_graph *g, int x, float p) {
    DF_CHECK(p >= 0 && p < 1, "dropout probability %g", p);
    int out = unary(g, OP_DROPOUT, x), seq = 0;
    df_op *op = &g->ops[g->nops - 1];
    for (int i = 0; i < g->nops - 1; i++) seq += g->ops[i].kind == OP_DROPOUT;
    op->s = p, op->seq = seq;
    if (g->train) { /* the kept elements' bits (made after the op is finished: its producer is set here) */
        op->aux = new_tensor(g, 1, (g->t[x].numel + 31) / 32, 1, 1, 1);
        g->t[op->aux].producer = g->nops - 1;
    }
    return out;
}

int g_add(df_graph *g, int a, int b) {
    df_tensor ta = g->t[a], tb = g->t[b];
    DF_CHECK(ta.n == tb.n && ta.c == tb.c && ta.h == tb.h && ta.w == tb.w, "add: shapes differ");
    df_op *op = new_op(g, OP_ADD, a, b, -1);
    return finish(g, op, ta.n, ta.c, ta.h, ta.w);
}

int g_add_channel(df_graph *g, int x, int v) {
    df_tensor tx = g->t[x], tv = g->t[v];
    DF_CHECK(tv.n == tx.n && tv.c == tx.c && tv.h * tv.w == 1, "add_channel: vector (%zu, %zu) for map (%zu, %zu)",
             tv.n, tv.c, tx.n, tx.c);
    df_op *op = new_op(g, OP_ADD_CHANNEL, x, v, -1);
    return finish(g, op, tx.n, tx.c, tx.h, tx.w);
}

int g_concat(df_graph *g, int a, int b) {
    df_tensor ta = g->t[a], tb = g->t[b];
    DF_CHECK(ta.n == tb.n && ta.h == tb.h && ta.w == tb.w, "concat: (%zu, %zux%zu) with (%zu, %zux%zu)", ta.n, ta.h,
             ta.w, tb.n, tb.h, tb.w);
    df_op *op = new_op(g, OP_CONCAT, a, b, -1);
    return finish(g, op, ta.n, ta.c + tb.c, ta.h, ta.w);
}

int g_attention(df_graph *g, int q, int k, int v, size_t heads) {
    df_tensor tq = g->t[q];
    DF_CHECK(heads >= 1 && tq.c % heads == 0, "attention: %zu channels, %zu heads", tq.c, heads);
    df_op *op = new_op(g, OP_ATTENTION, q, k, v);
    op->heads = heads;
    size_t T = tq.h * tq.w;
    if (g->train) op->aux = new_tensor(g, tq.n, heads, T, T, 1);
    return finish(g, op, tq.n, tq.c, tq.h, tq.w);
}

int g_attention_qkv(df_graph *g, int qkv, size_t heads) {
    df_tensor t = g->t[qkv];
    DF_CHECK(t.c % 3 == 0, "attention_qkv: %zu channels are not q, k and v", t.c);
    size_t C = t.c / 3;
    DF_CHECK(heads >= 1 && C % heads == 0, "attention: %zu channels, %zu heads", C, heads);
    df_op *op = new_op(g, OP_ATTENTION, qkv, -1, -1);
    op->heads = heads;
    size_t T = t.h * t.w;
    if (g->train) op->aux = new_tensor(g, t.n, heads, T, T, 1);
    return finish(g, op, t.n, C, t.h, t.w);
}

int g_timestep_embed(df_graph *g, int t, size_t dim, int flip_sin_to_cos, float freq_shift) {
    df_tensor tt = g->t[t];
    DF_CHECK(tt.c * tt.h * tt.w == 1, "timestep embedding takes one timestep per sample");
    df_op *op = new_op(g, OP_TIMESTEP_EMBED, t, -1, -1);
    op->flip = flip_sin_to_cos, op->s = freq_shift;
    return finish(g, op, tt.n, dim, 1, 1);
}

int g_sinusoidal_embed(df_graph *g, int t, size_t dim) {
    df_tensor tt = g->t[t];
    DF_CHECK(tt.c * tt.h * tt.w == 1, "sinusoidal embedding takes one timestep per sample");
    DF_CHECK(dim % 2 == 0 && dim >= 4, "sinusoidal embedding: dim %zu must be even and at least 4", dim);
    df_op *op = new_op(g, OP_SINUSOIDAL_EMBED, t, -1, -1);
    return finish(g, op, tt.n, dim, 1, 1);
}

int g_batchnorm(df_graph *g, int x, int gamma, int beta, int rmean, int rvar, float momentum, float eps) {
    df_tensor tx = g->t[x];
    DF_CHECK(g->buffers, "batch norm needs the graph's buffer table (g->buffers)");
    DF_CHECK(rmean >= 0 && (size_t)rmean < g->buffers->n && g->buffers->p[rmean].numel == tx.c && rvar >= 0 &&
                 (size_t)rvar < g->buffers->n && g->buffers->p[rvar].numel == tx.c,
             "batch norm: running statistics %d, %d for %zu channels", rmean, rvar, tx.c);
    DF_CHECK(gamma < 0 || param(g, gamma)->numel == tx.c, "batch norm: gamma size");
    DF_CHECK(beta < 0 || param(g, beta)->numel == tx.c, "batch norm: beta size");
    df_op *op = new_op(g, OP_BATCHNORM, x, -1, -1);
    op->w = gamma, op->b = beta, op->rmean = rmean, op->rvar = rvar, op->s = momentum, op->eps = eps;
    if (g->train) op->aux = new_tensor(g, 2, tx.c, 1, 1, 1); /* mean then rstd, (C) each */
    return finish(g, op, tx.n, tx.c, tx.h, tx.w);
}

int g_convt(df_graph *g, int x, int w, int b, size_t stride, size_t pad) {
    const df_tensor *tx = &g->t[x];
    const df_param *pw = param(g, w);
    DF_CHECK(pw->ndim == 4 && (size_t)pw->shape[0] == tx->c, "transposed conv %s expects %lld input channels, got %zu",
             pw->name, (long long)pw->shape[0], tx->c);
    DF_CHECK(b < 0 || param(g, b)->numel == (size_t)pw->shape[1], "transposed conv bias size");
    size_t kh = (size_t)pw->shape[2], kw = (size_t)pw->shape[3];
    DF_CHECK(stride >= 1 && (tx->h - 1) * stride + kh > 2 * pad && (tx->w - 1) * stride + kw > 2 * pad,
             "transposed conv %s: empty output", pw->name);
    df_op *op = new_op(g, OP_CONVT, x, -1, -1);
    op->w = w, op->b = b, op->stride = stride, op->pad[0] = op->pad[1] = op->pad[2] = op->pad[3] = pad;
    return finish(g, op, tx->n, (size_t)pw->shape[1], (tx->h - 1) * stride + kh - 2 * pad,
                  (tx->w - 1) * stride + kw - 2 * pad);
}

/* ---- memory plan ---- */

/* Something to place in the arena: `size` floats live from time `start` through time `end`, its offset
 * written to *off. */
typedef struct {
    int start, end;
    size_t size, *off;
} span;

typedef struct {
    size_t off, size;
    int id;
} block;

/* Places `size` floats for span id at the lowest offset that fits between the live blocks (kept sorted by
 * offset), records the block, raises *top to its end, and returns the offset. */
static size_t place(block *live, int *nlive, size_t size, int id, size_t *top) {
    size_t off = 0;
    int at = 0;
    for (int i = 0; i < *nlive; i++) {
        if (live[i].off >= off + size) break;
        if (live[i].off + live[i].size > off) off = live[i].off + live[i].size;
    }
    while (at < *nlive && live[at].off <= off) at++;
    memmove(live + at + 1, live + at, (size_t)(*nlive - at) * sizeof *live);
    live[at] = (block){off, size, id};
    (*nlive)++;
    if (off + size > *top) *top = off + size;
    return off;
}

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; } /* 64-byte alignment per tensor */

/* First-fit over time: at each time from t0 to t1, the spans that start then are placed (in order), then
 * those that end then are freed, so what a step writes never overlaps what it reads. Returns the arena
 * size in floats. */
static size_t plan_spans(span *s, int ns, int t0, int t1) {
    block *live = df_malloc((size_t)(ns + 1) * sizeof *live);
    int nlive = 0;
    size_t top = 0;
    for (int t = t0; t <= t1; t++) {
        for (int i = 0; i < ns; i++)
            if (s[i].start == t) *s[i].off = place(live, &nlive, round16(s[i].size), i, &top);
        for (int j = 0; j < nlive;) {
            if (s[live[j].id].end <= t) {
                memmove(live + j, live + j + 1, (size_t)(nlive - j - 1) * sizeof *live);
                nlive--;
            } else {
                j++;
            }
        }
    }
    df_free(live);
    return top;
}

/* Whether the backward of an op of this kind reads its inputs' values. */
static int backward_reads_inputs(df_opkind k) {
    return k == OP_CONV2D || k == OP_LINEAR || k == OP_GROUPNORM || k == OP_GN_SILU || k == OP_SILU ||
           k == OP_RELU || k == OP_ATTENTION || k == OP_BATCHNORM || k == OP_CONVT;
}

/* Training: one timeline, forward op i at time i and its backward at time 2n - 1 - i (see graph.h). */
static size_t plan_training(df_graph *g) {
    int n = g->nops, end_of_pass = 2 * n - 1;
#define BWD(i) (2 * n - 1 - (i))
    span *s = df_malloc((size_t)(3 * g->nt + 1) * sizeof *s);
    int ns = 0;
    for (int i = 0; i < g->nt; i++) { /* which tensors backward recomputes: fused norms, and dropouts of them */
        df_tensor *t = &g->t[i];
        int p = t->producer;
        t->recompute = !g->keep_all && p >= 0 && i != g->output && !t->is_aux &&
                       (g->ops[p].kind == OP_GN_SILU || (g->ops[p].kind == OP_DROPOUT && g->t[g->ops[p].in[0]].recompute));
        t->rfirst = -1;
    }
    for (int i = 0; i < g->nt; i++) {
        df_tensor *t = &g->t[i];
        int p = t->producer, end;
        if (t->is_aux)
            end = BWD(p);
        else if (p < 0 || i == g->output)
            end = end_of_pass;
        else
            end = t->last_use < 0 ? p : t->last_use;
        int rlast = n; /* the recomputed copy lives from the backward of rfirst to that of rlast */
        for (int r = 0; r < n; r++) {
            const df_op *op = &g->ops[r];
            int reads = (op->in[0] == i || op->in[1] == i || op->in[2] == i) && backward_reads_inputs(op->kind);
            if (!reads) continue;
            if (!t->recompute) {
                if (BWD(r) > end) end = BWD(r);
            } else {
                if (r > t->rfirst) t->rfirst = r;
                if (r < rlast) rlast = r;
            }
        }
        if (g->keep_all) end = end_of_pass;
        s[ns++] = (span){g->keep_all ? -1 : p, end, t->numel, &t->offset};
        if (t->recompute && t->rfirst >= 0) s[ns++] = (span){BWD(t->rfirst), BWD(rlast), t->numel, &t->roffset};
        t->has_grad = !t->is_aux && p >= 0 && t->last_use >= 0;
        if (t->has_grad)
            s[ns++] = g->keep_all ? (span){-1, end_of_pass, t->numel, &t->goffset}
                                  : (span){BWD(t->last_use), BWD(p), t->numel, &t->goffset};
    }
#undef BWD
    size_t top = plan_spans(s, ns, -1, end_of_pass);
    df_free(s);
    return top;
}

void df_graph_plan(df_graph *g) {
    DF_CHECK(!g->arena, "graph planned twice");
    for (int i = 0; i < g->nops; i++) {
        const df_op *op = &g->ops[i];
        for (int k = 0; k < 3; k++)
            if (op->in[k] >= 0) g->t[op->in[k]].last_use = i;
        if (op->aux >= 0) g->t[op->aux].last_use = i;
    }
    g->t[g->output].last_use = g->nops;
    for (int i = 0; i < g->nt; i++)
        if (g->t[i].producer < 0) g->t[i].last_use = g->nops; /* inputs stay for the whole pass */

    if (g->train) {
        g->arena_floats = plan_training(g);
    } else { /* each tensor from its producer through its last reader */
        span *s = df_malloc((size_t)(g->nt + 1) * sizeof *s);
        for (int i = 0; i < g->nt; i++) s[i] = (span){g->t[i].producer, g->t[i].last_use, g->t[i].numel, &g->t[i].offset};
        /* A convolution that the forward may run together with the add after it still reads its input while the
         * add's output is written: the input lives through the add. */
        for (int i = 0; i + 1 < g->nops; i++) {
            int x = g->ops[i].in[0];
            if (df_graph_conv_add_pair(g, i) && s[x].end < i + 1) s[x].end = i + 1;
        }
        g->arena_floats = plan_spans(s, g->nt, -1, g->nops);
        df_free(s);
    }
    for (int i = 0; i < g->nops; i++) { /* stacked convolutions: weights and biases, then their gradients */
        const df_op *op = &g->ops[i];
        if (op->kind != OP_CONV2D || op->w_more[0] < 0) continue;
        size_t n = op->w_more[1] >= 0 ? 3 : 2, need = 2 * n * (param(g, op->w)->numel + g->t[op->out].c / n);
        if (need > g->stack_floats) g->stack_floats = need;
    }
    if (g->stack_floats) g->stack = df_malloc(g->stack_floats * sizeof(float));
    g->arena = df_calloc(g->arena_floats, sizeof(float));
    for (int i = 0; i < g->nt; i++) {
        df_tensor *t = &g->t[i];
        t->data = g->arena + t->offset;
        t->grad = t->has_grad ? g->arena + t->goffset : NULL;
        t->rdata = t->recompute && t->rfirst >= 0 ? g->arena + t->roffset : NULL;
    }
}

size_t df_graph_bytes(const df_graph *g) { return g->arena_floats * sizeof(float); }

int df_graph_conv_add_pair(const df_graph *g, int i) {
    if (i + 1 >= g->nops || g->ops[i].kind != OP_CONV2D) return 0;
    const df_op *nx = &g->ops[i + 1];
    int c = g->ops[i].out, first = nx->in[0] == c, second = nx->in[1] == c;
    if (g->t[c].last_use != i + 1 || first == second) return 0; /* read by another op, or twice (or not) here */
    return nx->kind == OP_ADD || (nx->kind == OP_ADD_CHANNEL && first); /* add_channel: the map, then the vector */
}
