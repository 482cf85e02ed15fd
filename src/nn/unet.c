/* unet.c: the DDPM U-Net as diffusers' UNet2DModel: one builder that names the parameters (state-dict
 * keys, PyTorch shapes) and records the forward graph; weights init, load and save; forward and backward.
 * A config of arch DF_ARCH_SIMPLE_UNET builds the DDIM report's SimpleUnet instead (simple_unet.c); everything
 * else here serves both, plus that model's BatchNorm buffers (running statistics and their counters). */
#include "nn/unet.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "base/rng.h"

/* ---- builder ---- */

typedef struct {
    df_unet *m;
    df_graph *g; /* NULL: register parameters only */
    int train;
    int temb; /* silu(time embedding), shared by every resnet's time_emb_proj */
    size_t temb_dim;
} builder;

/* A convolution's parameters prefix.weight and prefix.bias (their ids into w and bias), added where the
 * parameter order puts them. */
static void conv_params(builder *b, const char *prefix, int cin, int cout, int k, int *w, int *bias) {
    *w = df_params_addf(&b->m->params, 4, cout, cin, k, k, "%s.weight", prefix);
    *bias = df_params_addf(&b->m->params, 1, cout, 0, 0, 0, "%s.bias", prefix);
}

/* A k x k convolution named `prefix`: its parameters, then its op. */
static int conv(builder *b, int x, const char *prefix, int cin, int cout, int k, int stride, int pt, int pb, int pl,
                int pr) {
    int w, bias;
    conv_params(b, prefix, cin, cout, k, &w, &bias);
    return b->g ? g_conv(b->g, x, w, bias, (size_t)stride, (size_t)pt, (size_t)pb, (size_t)pl, (size_t)pr) : -1;
}

static int conv3(builder *b, int x, const char *prefix, int cin, int cout) {
    return conv(b, x, prefix, cin, cout, 3, 1, 1, 1, 1, 1);
}

/* The op of a 3x3 convolution whose parameters conv_params added earlier. */
static int conv3_op(builder *b, int x, int w, int bias) { return b->g ? g_conv(b->g, x, w, bias, 1, 1, 1, 1, 1) : -1; }

/* A linear layer; applied to a feature map it is a 1x1 convolution over channels (attention projections). */
static int linear(builder *b, int x, const char *prefix, int cin, int cout, int on_map) {
    int w = df_params_addf(&b->m->params, 2, cout, cin, 0, 0, "%s.weight", prefix), bias = df_params_addf(&b->m->params, 1, cout, 0, 0, 0, "%s.bias", prefix);
    if (!b->g) return -1;
    return on_map ? g_conv(b->g, x, w, bias, 1, 0, 0, 0, 0) : g_linear(b->g, x, w, bias);
}

/* GroupNorm named `prefix`, followed by SiLU when then_silu (one op: the norm's output is never stored). */
static int groupnorm(builder *b, int x, const char *prefix, int ch, int then_silu) {
    const df_unet_config *c = &b->m->cfg;
    int w = df_params_addf(&b->m->params, 1, ch, 0, 0, 0, "%s.weight", prefix);
    int bias = df_params_addf(&b->m->params, 1, ch, 0, 0, 0, "%s.bias", prefix);
    if (!b->g) return -1;
    return (then_silu ? g_groupnorm_silu : g_groupnorm)(b->g, x, w, bias, (size_t)c->norm_num_groups, c->norm_eps);
}

static int silu(builder *b, int x) { return b->g ? g_silu(b->g, x) : -1; }

/* ResnetBlock2D: norm1, silu, conv1, + time_emb_proj(silu(temb)), norm2, silu, dropout, conv2, + shortcut,
 * / output_scale_factor. The parameters are added in that order; the ops run time_emb_proj before conv1 and
 * the shortcut before conv2, so that each 3x3 convolution comes right before the add that alone reads it
 * (a sampling graph runs the two as one: conv_add_fused in graph_exec.c). */
static int resnet(builder *b, int x, const char *prefix, int cin, int cout, float scale, int dropout) {
    char n[DF_PARAM_NAME];
    const df_unet_config *c = &b->m->cfg;
#define SUB(s) (snprintf(n, sizeof n, "%s.%s", prefix, s), n)
    int h = groupnorm(b, x, SUB("norm1"), cin, 1), w1, b1, w2, b2;
    conv_params(b, SUB("conv1"), cin, cout, 3, &w1, &b1);
    int tp = linear(b, b->temb, SUB("time_emb_proj"), (int)b->temb_dim, cout, 0);
    h = conv3_op(b, h, w1, b1);
    if (b->g) h = g_add_channel(b->g, h, tp);
    h = groupnorm(b, h, SUB("norm2"), cout, 1);
    if (b->g && b->train && dropout && c->dropout > 0) h = g_dropout(b->g, h, c->dropout);
    conv_params(b, SUB("conv2"), cout, cout, 3, &w2, &b2);
    int sc = cin != cout ? conv(b, x, SUB("conv_shortcut"), cin, cout, 1, 1, 0, 0, 0, 0) : x;
    h = conv3_op(b, h, w2, b2);
#undef SUB
    if (!b->g) return -1;
    int out = g_add(b->g, sc, h);
    return scale != 1.0f ? g_scale(b->g, out, 1.0f / scale) : out;
}

/* Attention (diffusers' deprecated attention block): group_norm, to_q/to_k/to_v, softmax attention over the
 * H*W positions, to_out.0, + residual, / rescale_output_factor. */
static int attention(builder *b, int x, const char *prefix, int ch, float scale) {
    char n[DF_PARAM_NAME];
    const df_unet_config *c = &b->m->cfg;
#define SUB(s) (snprintf(n, sizeof n, "%s.%s", prefix, s), n)
    int h = groupnorm(b, x, SUB("group_norm"), ch, 0), w[3], bias[3];
    static const char *const proj[3] = {"to_q", "to_k", "to_v"};
    for (int i = 0; i < 3; i++) { /* q, k and v in one convolution: h read and packed once (g_conv_stacked) */
        w[i] = df_params_addf(&b->m->params, 2, ch, ch, 0, 0, "%s.%s.weight", prefix, proj[i]);
        bias[i] = df_params_addf(&b->m->params, 1, ch, 0, 0, 0, "%s.%s.bias", prefix, proj[i]);
    }
    int heads = c->attention_head_dim ? ch / c->attention_head_dim : 1, a = -1;
    if (b->g) a = g_attention_qkv(b->g, g_conv_stacked(b->g, h, w, bias, 3, 1, 0, 0, 0, 0), (size_t)heads);
    int o = linear(b, a, SUB("to_out.0"), ch, ch, 1);
#undef SUB
    if (!b->g) return -1;
    int out = g_add(b->g, o, x);
    return scale != 1.0f ? g_scale(b->g, out, 1.0f / scale) : out;
}

void df_unet_build(df_unet *m, df_graph *g, size_t batch, int train, int *x_in, int *t_in) {
    if (m->cfg.arch == DF_ARCH_SIMPLE_UNET) {
        df_simple_unet_build(m, g, batch, train, x_in, t_in);
        return;
    }
    const df_unet_config *c = &m->cfg;
    const int L = c->levels, *boc = c->block_out_channels, S = c->sample_size;
    builder bd = {.m = m, .g = g, .train = train}, *b = &bd;
    char n[DF_PARAM_NAME];
    int x = -1, t = -1, temb = -1;
    bd.temb_dim = (size_t)(c->time_embedding_dim ? c->time_embedding_dim : 4 * boc[0]);
    if (g) {
        x = g_input(g, batch, (size_t)c->in_channels, (size_t)S, (size_t)S);
        t = g_input(g, batch, 1, 1, 1);
        temb = g_timestep_embed(g, t, (size_t)boc[0], c->flip_sin_to_cos, c->freq_shift);
    }
    /* time embedding: linear_1, silu, linear_2; each resnet applies silu again before its projection */
    temb = linear(b, temb, "time_embedding.linear_1", boc[0], (int)bd.temb_dim, 0);
    temb = silu(b, temb);
    temb = linear(b, temb, "time_embedding.linear_2", (int)bd.temb_dim, (int)bd.temb_dim, 0);
    bd.temb = silu(b, temb);

    int h = conv3(b, x, "conv_in", c->in_channels, boc[0]);
    int skips[1 + DF_MAX_LEVELS * 16], skip_ch[1 + DF_MAX_LEVELS * 16], nskip = 0;
    DF_CHECK(c->layers_per_block <= 15, "layers_per_block %d", c->layers_per_block);
    skips[nskip] = h, skip_ch[nskip++] = boc[0];

    /* ---- down ---- */
    int ch = boc[0];
    for (int i = 0; i < L; i++) {
        int out = boc[i];
        for (int j = 0; j < c->layers_per_block; j++) {
            snprintf(n, sizeof n, "down_blocks.%d.resnets.%d", i, j);
            h = resnet(b, h, n, j == 0 ? ch : out, out, 1.0f, 1);
            if (c->down_attn[i]) {
                snprintf(n, sizeof n, "down_blocks.%d.attentions.%d", i, j);
                h = attention(b, h, n, out, 1.0f);
            }
            skips[nskip] = h, skip_ch[nskip++] = out;
        }
        if (i < L - 1) { /* Downsample2D; padding 0 means diffusers' asymmetric (0, 1, 0, 1) pad */
            int p = c->downsample_padding;
            snprintf(n, sizeof n, "down_blocks.%d.downsamplers.0.conv", i);
            h = conv(b, h, n, out, out, 3, 2, p, p ? p : 1, p, p ? p : 1);
            skips[nskip] = h, skip_ch[nskip++] = out;
        }
        ch = out;
    }

    /* ---- middle ---- */
    float ms = c->mid_block_scale_factor;
    h = resnet(b, h, "mid_block.resnets.0", boc[L - 1], boc[L - 1], ms, 1);
    if (c->add_attention) h = attention(b, h, "mid_block.attentions.0", boc[L - 1], ms);
    h = resnet(b, h, "mid_block.resnets.1", boc[L - 1], boc[L - 1], ms, 1);

    /* ---- up: layers_per_block + 1 resnets a level, each eating one skip from the end ---- */
    int out = boc[L - 1];
    for (int i = 0; i < L; i++) {
        int prev = out;
        out = boc[L - 1 - i];
        for (int j = 0; j <= c->layers_per_block; j++) {
            int skip = skips[--nskip], sch = skip_ch[nskip];
            int rin = j == 0 ? prev : out;
            if (g) h = g_concat(g, h, skip);
            snprintf(n, sizeof n, "up_blocks.%d.resnets.%d", i, j);
            /* as diffusers' get_up_block, which does not pass dropout on to AttnUpBlock2D */
            h = resnet(b, h, n, rin + sch, out, 1.0f, !c->up_attn[i]);
            if (c->up_attn[i]) {
                snprintf(n, sizeof n, "up_blocks.%d.attentions.%d", i, j);
                h = attention(b, h, n, out, 1.0f);
            }
        }
        if (i < L - 1) {
            if (g) h = g_upsample2x(g, h);
            snprintf(n, sizeof n, "up_blocks.%d.upsamplers.0.conv", i);
            h = conv3(b, h, n, out, out);
        }
    }
    DF_CHECK(nskip == 0, "U-Net skip connections unbalanced (%d left)", nskip);

    /* ---- out ---- */
    h = groupnorm(b, h, "conv_norm_out", boc[0], 1);
    h = conv3(b, h, "conv_out", boc[0], c->out_channels);
    if (x_in) *x_in = x;
    if (t_in) *t_in = t;
    (void)h;
}

/* ---- creation and weights ---- */

/* Fresh running statistics, as a new torch.nn.BatchNorm2d: mean 0, variance 1, no batches seen. */
static void reset_buffers(df_unet *m) {
    for (size_t i = 0; i < m->buffers.n; i++) {
        const df_param *p = &m->buffers.p[i];
        float v = strstr(p->name, ".running_var") ? 1.0f : 0.0f;
        for (size_t k = 0; k < p->numel; k++) m->buffers.data[p->offset + k] = v;
    }
    if (m->counters) memset(m->counters, 0, m->buffers.n / 2 * sizeof *m->counters);
}

df_unet *df_unet_create(const df_unet_config *c) {
    if (df_unet_config_check(c)) return NULL;
    df_unet *m = df_calloc(1, sizeof *m);
    m->cfg = *c;
    df_unet_build(m, NULL, 0, 0, NULL, NULL);
    df_params_alloc(&m->params);
    if (m->buffers.n) { /* one norm per (running_mean, running_var) pair; its counter is named after them */
        df_params_alloc(&m->buffers);
        size_t nc = m->buffers.n / 2;
        m->counters = df_calloc(nc, sizeof *m->counters);
        m->counter_names = df_calloc(nc, sizeof *m->counter_names);
        for (size_t k = 0; k < nc; k++) {
            const char *rm = m->buffers.p[2 * k].name;
            DF_CHECK(strlen(rm) > 13 && !strcmp(rm + strlen(rm) - 13, ".running_mean"), "buffer %s", rm);
            snprintf(m->counter_names[k], DF_PARAM_NAME, "%.*s.num_batches_tracked", (int)(strlen(rm) - 13), rm);
        }
        reset_buffers(m);
    }
    return m;
}

void df_unet_destroy(df_unet *m) {
    if (!m) return;
    if (m->have_graph) df_graph_free(&m->graph);
    df_params_free(&m->params);
    df_params_free(&m->buffers);
    df_free(m->counters);
    df_free(m->counter_names);
    df_free(m);
}

const df_unet_config *df_unet_cfg(const df_unet *m) { return &m->cfg; }
size_t df_unet_num_params(const df_unet *m) { return m->params.total; }
float *df_unet_weights(df_unet *m) { return m->params.data; }
float *df_unet_grads(df_unet *m) {
    df_params_alloc_grad(&m->params);
    return m->params.grad;
}
void df_unet_zero_grads(df_unet *m) {
    df_params_alloc_grad(&m->params);
    df_params_zero_grad(&m->params);
}

void df_unet_init_weights(df_unet *m, uint64_t seed) {
    df_params_init_torch(&m->params, seed);
    reset_buffers(m);
}

size_t df_unet_num_buffers(const df_unet *m) { return m->buffers.total; }
float *df_unet_buffers(df_unet *m) { return m->buffers.data; }
size_t df_unet_num_counters(const df_unet *m) { return m->buffers.n / 2; }
int64_t *df_unet_counters(df_unet *m) { return m->counters; }

void df_unet_copy_buffers(df_unet *dst, const df_unet *src) {
    DF_CHECK(dst->buffers.total == src->buffers.total && dst->buffers.n == src->buffers.n,
             "df_unet_copy_buffers: models of different configs");
    if (!src->buffers.n) return;
    memcpy(dst->buffers.data, src->buffers.data, src->buffers.total * sizeof(float));
    memcpy(dst->counters, src->counters, src->buffers.n / 2 * sizeof *src->counters);
}

const char *df_unet_old_attention_name(const char *name, char *buf, size_t cap) {
    static const char *const map[][2] = {
        {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
    if (!strstr(name, "attentions.")) return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *at = strstr(name, map[i][0]);
        if (at) {
            snprintf(buf, cap, "%.*s%s%s", (int)(at - name), name, map[i][1], at + strlen(map[i][0]));
            return buf;
        }
    }
    return NULL;
}

static const char *old_name(const char *name, char *buf, size_t cap) {
    return df_unet_old_attention_name(name, buf, cap);
}

int df_unet_load(df_unet *m, const char *path) {
    if (!m->buffers.n) return df_params_load(&m->params, path, old_name);
    df_params *tables[2] = {&m->params, &m->buffers};
    return df_params_load_tables(tables, 2, m->counter_names, m->counters, m->buffers.n / 2, path, NULL);
}

int df_unet_save(const df_unet *m, const char *path) {
    if (!m->buffers.n) return df_params_save(&m->params, path);
    const df_params *tables[2] = {&m->params, &m->buffers};
    return df_params_save_tables(tables, 2, (const char(*)[DF_PARAM_NAME])m->counter_names, m->counters,
                                 m->buffers.n / 2, path);
}

/* ---- running ---- */

static df_graph *graph_for(df_unet *m, size_t B, int train) {
    if (m->have_graph && m->graph.batch == B && m->graph.train == train) return &m->graph;
    if (m->have_graph) df_graph_free(&m->graph);
    df_graph_init(&m->graph, &m->params, B, train);
    df_unet_build(m, &m->graph, B, train, &m->x_in, &m->t_in);
    df_graph_plan(&m->graph);
    m->have_graph = 1;
    return &m->graph;
}

static void set_inputs(df_unet *m, df_graph *g, const float *x, const float *t) {
    memcpy(g->t[m->x_in].data, x, g->t[m->x_in].numel * sizeof(float));
    memcpy(g->t[m->t_in].data, t, g->t[m->t_in].numel * sizeof(float));
}

void df_unet_freeze(df_unet *m, int frozen) {
    m->frozen = frozen;
    if (!frozen && m->have_graph) df_graph_unpack_weights(&m->graph);
}

void df_unet_forward(df_unet *m, float *out, const float *x, const float *t, size_t B) {
    df_graph *g = graph_for(m, B, 0);
    if (m->frozen && !g->packed) df_graph_pack_weights(g);
    set_inputs(m, g, x, t);
    df_graph_forward(g);
    memcpy(out, g->t[g->output].data, g->t[g->output].numel * sizeof(float));
}

const float *df_unet_forward_train(df_unet *m, const float *x, const float *t, size_t B) {
    df_graph *g = graph_for(m, B, 1);
    g->dropout_seed = m->dropout_seed, g->dropout_step = m->dropout_step;
    set_inputs(m, g, x, t);
    df_graph_forward(g); /* moves the BatchNorm running statistics, if any */
    for (size_t k = 0; k < m->buffers.n / 2; k++) m->counters[k]++;
    return g->t[g->output].data;
}

void df_unet_set_dropout(df_unet *m, uint64_t seed, uint64_t step) {
    m->dropout_seed = seed, m->dropout_step = step;
}

void df_unet_backward(df_unet *m, const float *dout) {
    DF_CHECK(m->have_graph && m->graph.train, "df_unet_backward without df_unet_forward_train");
    df_params_alloc_grad(&m->params);
    df_graph_backward(&m->graph, dout);
}

df_unet_cost df_unet_costs(const df_unet_config *c) {
    df_unet_cost k = {0};
    df_unet *m = df_unet_create(c);
    if (!m) return k;
    k.params = m->params.total;
    df_graph g;
    for (int train = 0; train <= 1; train++) {
        df_graph_init(&g, &m->params, 1, train);
        df_unet_build(m, &g, 1, train, NULL, NULL);
        df_graph_plan(&g);
        if (train) {
            k.train_bytes_per_image = (double)df_graph_bytes(&g);
        } else {
            k.infer_bytes_per_image = (double)df_graph_bytes(&g);
            k.gflops_per_image = df_graph_flops(&g) / 1e9;
        }
        df_graph_free(&g);
    }
    df_unet_destroy(m);
    return k;
}
