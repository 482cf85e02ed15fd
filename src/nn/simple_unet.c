/* simple_unet.c: the DDIM reproduction report's SimpleUnet (a second architecture of df_unet): its builder,
 * which names the parameters and the BatchNorm buffers as the PyTorch module's state dict does and records
 * the graph, and its config.json ("_class_name": "SimpleUnet").
 *
 * The network, after the report's PyTorch code (class SimpleUnet / Block / SinusoidalPositionEmbeddings):
 *   t -> time_mlp = [SinusoidalPositionEmbeddings(E), Linear(E, E) as time_mlp.1, ReLU]
 *   x -> conv0 (3x3) -> downs.0 .. downs.(L-2) -> ups.0 .. ups.(L-2) -> output (1x1)
 *   Block(in, out): h = bnorm1(relu(conv1(x))); h = h + relu(time_mlp(t)) over the image;
 *                   h = bnorm2(relu(conv2(h))); return transform(h)
 *   down: conv1 Conv2d(in, out, 3, pad 1), transform Conv2d(out, out, 4, stride 2, pad 1);
 *   up:   the input is cat(previous output, the matching down block's output), conv1 Conv2d(2 in, out, 3, pad 1),
 *         transform ConvTranspose2d(out, out, 4, stride 2, pad 1).
 * The channels are down_channels = block_out_channels[0..L-1] and their reverse on the way up.
 */
#include "nn/unet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/base.h"

#define BN_MOMENTUM 0.1f /* torch.nn.BatchNorm2d's default, as the report uses it */

/* ---- builder ---- */

typedef struct {
    df_unet *m;
    df_graph *g; /* NULL: register parameters and buffers only */
    int temb;    /* relu(time_mlp.1(embedding)), the input of every block's time_mlp */
} builder;

/* A Conv2d named prefix, k x k, symmetric padding. */
static int conv(builder *b, int x, const char *prefix, int cin, int cout, int k, int stride, int pad) {
    df_params *ps = &b->m->params;
    int w = df_params_addf(ps, 4, cout, cin, k, k, "%s.weight", prefix), bias = df_params_addf(ps, 1, cout, 0, 0, 0, "%s.bias", prefix);
    size_t p = (size_t)pad;
    return b->g ? g_conv(b->g, x, w, bias, (size_t)stride, p, p, p, p) : -1;
}

/* A ConvTranspose2d named prefix: weight (cin, cout, k, k) as torch stores it. */
static int convt(builder *b, int x, const char *prefix, int cin, int cout, int k, int stride, int pad) {
    df_params *ps = &b->m->params;
    int w = df_params_addf(ps, 4, cin, cout, k, k, "%s.weight", prefix), bias = df_params_addf(ps, 1, cout, 0, 0, 0, "%s.bias", prefix);
    return b->g ? g_convt(b->g, x, w, bias, (size_t)stride, (size_t)pad) : -1;
}

static int linear(builder *b, int x, const char *prefix, int cin, int cout) {
    df_params *ps = &b->m->params;
    int w = df_params_addf(ps, 2, cout, cin, 0, 0, "%s.weight", prefix), bias = df_params_addf(ps, 1, cout, 0, 0, 0, "%s.bias", prefix);
    return b->g ? g_linear(b->g, x, w, bias) : -1;
}

/* A BatchNorm2d named prefix: weight and bias are parameters, running_mean and running_var buffers (its
 * num_batches_tracked is the model's counter, see unet.c). */
static int bnorm(builder *b, int x, const char *prefix, int ch) {
    df_params *ps = &b->m->params, *bs = &b->m->buffers;
    int w = df_params_addf(ps, 1, ch, 0, 0, 0, "%s.weight", prefix), bias = df_params_addf(ps, 1, ch, 0, 0, 0, "%s.bias", prefix);
    int rm = df_params_addf(bs, 1, ch, 0, 0, 0, "%s.running_mean", prefix), rv = df_params_addf(bs, 1, ch, 0, 0, 0, "%s.running_var", prefix);
    return b->g ? g_batchnorm(b->g, x, w, bias, rm, rv, BN_MOMENTUM, b->m->cfg.norm_eps) : -1;
}

static int relu(builder *b, int x) { return b->g ? g_relu(b->g, x) : -1; }

/* Block(cin, cout, up) named prefix (downs.i or ups.i); for an up block x already holds the concatenation. */
static int block(builder *b, int x, const char *prefix, int cin, int cout, int up) {
    char n[DF_PARAM_NAME];
    int E = b->m->cfg.time_embedding_dim;
#define SUB(s) (snprintf(n, sizeof n, "%s.%s", prefix, s), n)
    int tp = linear(b, b->temb, SUB("time_mlp"), E, cout);
    tp = relu(b, tp);
    int h = conv(b, x, SUB("conv1"), up ? 2 * cin : cin, cout, 3, 1, 1);
    h = bnorm(b, relu(b, h), SUB("bnorm1"), cout);
    if (b->g) h = g_add_channel(b->g, h, tp);
    h = conv(b, h, SUB("conv2"), cout, cout, 3, 1, 1);
    h = bnorm(b, relu(b, h), SUB("bnorm2"), cout);
    if (up) h = convt(b, h, SUB("transform"), cout, cout, 4, 2, 1);
    else h = conv(b, h, SUB("transform"), cout, cout, 4, 2, 1);
#undef SUB
    return h;
}

void df_simple_unet_build(df_unet *m, df_graph *g, size_t batch, int train, int *x_in, int *t_in) {
    const df_unet_config *c = &m->cfg;
    const int L = c->levels, *ch = c->block_out_channels, S = c->sample_size, E = c->time_embedding_dim;
    builder bd = {.m = m, .g = g, .temb = -1}, *b = &bd;
    char n[DF_PARAM_NAME];
    int x = -1, t = -1;
    (void)train; /* the graph's mode decides batch statistics (training) or running ones (inference) */
    if (g) {
        g->buffers = &m->buffers;
        x = g_input(g, batch, (size_t)c->in_channels, (size_t)S, (size_t)S);
        t = g_input(g, batch, 1, 1, 1);
        bd.temb = g_sinusoidal_embed(g, t, (size_t)E);
    }
    bd.temb = linear(b, bd.temb, "time_mlp.1", E, E);
    bd.temb = relu(b, bd.temb);
    int h = conv(b, x, "conv0", c->in_channels, ch[0], 3, 1, 1);
    int res[DF_MAX_LEVELS];
    for (int i = 0; i < L - 1; i++) {
        snprintf(n, sizeof n, "downs.%d", i);
        h = res[i] = block(b, h, n, ch[i], ch[i + 1], 0);
    }
    for (int i = 0; i < L - 1; i++) { /* torch.cat((x, residual_inputs.pop()), dim=1) */
        if (g) h = g_concat(g, h, res[L - 2 - i]);
        snprintf(n, sizeof n, "ups.%d", i);
        h = block(b, h, n, ch[L - 1 - i], ch[L - 2 - i], 1);
    }
    h = conv(b, h, "output", ch[0], c->out_channels, 1, 1, 0);
    if (x_in) *x_in = x;
    if (t_in) *t_in = t;
    (void)h;
}

/* ---- config ---- */

void df_simple_unet_defaults(df_unet_config *c) {
    static const int down[] = {64, 128, 256, 512, 1024};
    memset(c, 0, sizeof *c);
    c->arch = DF_ARCH_SIMPLE_UNET;
    c->sample_size = 64;
    c->in_channels = c->out_channels = 3;
    c->levels = 5;
    memcpy(c->block_out_channels, down, sizeof down);
    c->time_embedding_dim = 32;
    c->norm_eps = 1e-5f;
}

int df_simple_unet_config_check(const df_unet_config *c) {
    if (c->sample_size < 1) return df_error("sample_size must be set to the image size (found %d)", c->sample_size);
    if (c->in_channels < 1 || c->out_channels < 1) return df_error("in_channels and out_channels must be positive");
    if (c->levels < 2 || c->levels > DF_MAX_LEVELS)
        return df_error("down_channels: 2 to %d entries (one block between two of them)", DF_MAX_LEVELS);
    for (int i = 0; i < c->levels; i++)
        if (c->block_out_channels[i] < 1) return df_error("down_channels[%d] must be positive", i);
    int div = 1 << (c->levels - 1);
    if (c->sample_size % div)
        return df_error("sample_size %d is not divisible by %d, which %d down blocks need", c->sample_size, div,
                        c->levels - 1);
    if (c->time_embedding_dim < 4 || c->time_embedding_dim % 2)
        return df_error("time_emb_dim must be even and at least 4, found %d", c->time_embedding_dim);
    if (!(c->norm_eps > 0)) return df_error("norm_eps must be positive");
    return 0;
}

/* Reads a list of channel counts into ch (at most DF_MAX_LEVELS); returns its length or -1. */
static int channel_list(int *ch, const cJSON *f, const char *source) {
    int n = cJSON_IsArray(f) ? cJSON_GetArraySize(f) : -1;
    if (n < 1 || n > DF_MAX_LEVELS)
        return df_error("%s: '%s' must be a list of 1 to %d channel counts", source, f->string, DF_MAX_LEVELS);
    for (int k = 0; k < n; k++) {
        const cJSON *e = cJSON_GetArrayItem(f, k);
        if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > 1e6 || e->valuedouble != floor(e->valuedouble))
            return df_error("%s: %s[%d] must be a positive integer", source, f->string, k);
        ch[k] = e->valueint;
    }
    return n;
}

int df_simple_unet_config_parse(df_unet_config *c, const cJSON *root, const char *source) {
    static const struct {
        const char *name;
        size_t offset;
    } ints[] = {{"sample_size", offsetof(df_unet_config, sample_size)},
                {"in_channels", offsetof(df_unet_config, in_channels)},
                {"out_channels", offsetof(df_unet_config, out_channels)},
                {"time_emb_dim", offsetof(df_unet_config, time_embedding_dim)}};
    df_simple_unet_defaults(c);
    c->sample_size = 0; /* required */
    int up[DF_MAX_LEVELS], nup = -1;
    for (const cJSON *f = root->child; f; f = f->next) {
        const char *key = f->string;
        size_t i;
        if (key[0] == '_') continue; /* _class_name (checked by the caller), _diffusers_version, ... */
        for (i = 0; i < sizeof ints / sizeof ints[0]; i++)
            if (strcmp(key, ints[i].name) == 0) break;
        if (i < sizeof ints / sizeof ints[0]) {
            if (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble) || f->valuedouble < 0 ||
                f->valuedouble > 1e6)
                return df_error("%s: '%s' must be a non-negative integer", source, key);
            *(int *)((char *)c + ints[i].offset) = f->valueint;
        } else if (strcmp(key, "norm_eps") == 0) {
            if (!cJSON_IsNumber(f)) return df_error("%s: 'norm_eps' must be a number", source);
            c->norm_eps = (float)f->valuedouble;
        } else if (strcmp(key, "down_channels") == 0) {
            if ((c->levels = channel_list(c->block_out_channels, f, source)) < 0) return -1;
        } else if (strcmp(key, "up_channels") == 0) {
            if ((nup = channel_list(up, f, source)) < 0) return -1;
        } else {
            return df_error("%s: config field '%s' is not one of SimpleUnet's (sample_size, in_channels, "
                            "out_channels, down_channels, up_channels, time_emb_dim, norm_eps)", source, key);
        }
    }
    for (int k = 0; k < nup; k++) /* the blocks' concatenations need the reverse of down_channels */
        if (nup != c->levels || up[k] != c->block_out_channels[c->levels - 1 - k])
            return df_error("%s: up_channels must be down_channels reversed", source);
    if (df_simple_unet_config_check(c)) return df_error_wrap("%s", source);
    return 0;
}

char *df_simple_unet_config_json(const df_unet_config *c) {
    cJSON *o = cJSON_CreateObject();
    int up[DF_MAX_LEVELS];
    for (int i = 0; i < c->levels; i++) up[i] = c->block_out_channels[c->levels - 1 - i];
    cJSON_AddStringToObject(o, "_class_name", "SimpleUnet");
    cJSON_AddItemToObject(o, "down_channels", cJSON_CreateIntArray(c->block_out_channels, c->levels));
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(o, "norm_eps", c->norm_eps);
    cJSON_AddNumberToObject(o, "out_channels", c->out_channels);
    cJSON_AddNumberToObject(o, "sample_size", c->sample_size);
    cJSON_AddNumberToObject(o, "time_emb_dim", c->time_embedding_dim);
    cJSON_AddItemToObject(o, "up_channels", cJSON_CreateIntArray(up, c->levels));
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}
