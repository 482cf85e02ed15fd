/* unet_config.c: diffusers UNet2DModel config.json (parse, check, write) and the presets. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/base.h"
#include "diffuse.h"
#include "nn/unet.h"

/* ---- the field table ---- */

typedef enum { F_INT, F_FLOAT, F_BOOL, F_INT_OR_NULL } ftype;

/* Scalar fields diffuse implements, with diffusers' UNet2DModel defaults. */
static const struct {
    const char *name;
    ftype type;
    size_t offset;
    double def;
} scalar_fields[] = {
    {"sample_size", F_INT, offsetof(df_unet_config, sample_size), 0},
    {"in_channels", F_INT, offsetof(df_unet_config, in_channels), 3},
    {"out_channels", F_INT, offsetof(df_unet_config, out_channels), 3},
    {"layers_per_block", F_INT, offsetof(df_unet_config, layers_per_block), 2},
    {"norm_num_groups", F_INT, offsetof(df_unet_config, norm_num_groups), 32},
    {"norm_eps", F_FLOAT, offsetof(df_unet_config, norm_eps), 1e-5},
    {"dropout", F_FLOAT, offsetof(df_unet_config, dropout), 0.0},
    {"freq_shift", F_FLOAT, offsetof(df_unet_config, freq_shift), 0},
    {"flip_sin_to_cos", F_BOOL, offsetof(df_unet_config, flip_sin_to_cos), 1},
    {"downsample_padding", F_INT, offsetof(df_unet_config, downsample_padding), 1},
    {"attention_head_dim", F_INT_OR_NULL, offsetof(df_unet_config, attention_head_dim), 8},
    {"mid_block_scale_factor", F_FLOAT, offsetof(df_unet_config, mid_block_scale_factor), 1},
    {"add_attention", F_BOOL, offsetof(df_unet_config, add_attention), 1},
    {"time_embedding_dim", F_INT_OR_NULL, offsetof(df_unet_config, time_embedding_dim), 0},
};

/* Fields whose only implemented value is diffusers' default: anything else is refused by name. */
static const struct {
    const char *name, *value; /* value as JSON text: "\"silu\"", "false", "null" */
} fixed_fields[] = {
    {"act_fn", "\"silu\""},
    {"time_embedding_type", "\"positional\""},
    {"resnet_time_scale_shift", "\"default\""},
    {"center_input_sample", "false"},
    {"class_embed_type", "null"},
    {"num_class_embeds", "null"},
    {"downsample_type", "\"conv\""},
    {"upsample_type", "\"conv\""},
    {"attn_norm_num_groups", "null"},
};

/* Accepted and ignored: only used by the fourier time embedding, which is refused above. */
static const char *const ignored_fields[] = {"num_train_timesteps"};

static int *int_field(df_unet_config *c, size_t off) { return (int *)((char *)c + off); }
static float *float_field(df_unet_config *c, size_t off) { return (float *)((char *)c + off); }

static void set_defaults(df_unet_config *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < sizeof scalar_fields / sizeof scalar_fields[0]; i++) {
        if (scalar_fields[i].type == F_FLOAT)
            *float_field(c, scalar_fields[i].offset) = (float)scalar_fields[i].def;
        else
            *int_field(c, scalar_fields[i].offset) = (int)scalar_fields[i].def;
    }
    static const int boc[] = {224, 448, 672, 896};
    c->levels = 4;
    for (int i = 0; i < 4; i++) c->block_out_channels[i] = boc[i];
    c->down_attn[0] = 0, c->down_attn[1] = c->down_attn[2] = c->down_attn[3] = 1;
    c->up_attn[0] = c->up_attn[1] = c->up_attn[2] = 1, c->up_attn[3] = 0;
}

static int parse_block_types(int *attn, int *count, const cJSON *arr, const char *field, const char *source,
                             const char *plain, const char *with_attn) {
    if (!cJSON_IsArray(arr)) return df_error("%s: '%s' must be a list of block type names", source, field);
    int n = cJSON_GetArraySize(arr);
    if (n < 1 || n > DF_MAX_LEVELS)
        return df_error("%s: '%s' has %d entries; diffuse supports 1 to %d", source, field, n, DF_MAX_LEVELS);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(arr, i);
        if (cJSON_IsString(e) && strcmp(e->valuestring, plain) == 0)
            attn[i] = 0;
        else if (cJSON_IsString(e) && strcmp(e->valuestring, with_attn) == 0)
            attn[i] = 1;
        else
            return df_error("%s: %s[%d] = %s is not supported (diffuse implements %s and %s)", source, field, i,
                            cJSON_IsString(e) ? e->valuestring : "(not a string)", plain, with_attn);
    }
    *count = n;
    return 0;
}

int df_unet_config_parse(df_unet_config *c, const char *json, const char *source) {
    set_defaults(c);
    cJSON *root = cJSON_Parse(json);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return df_error("%s: not a JSON object (parse error near '%.20s')", source,
                        cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "?");
    }
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(root, "_class_name");
    if (cJSON_IsString(cls) && strcmp(cls->valuestring, "SimpleUnet") == 0) {
        int rc = df_simple_unet_config_parse(c, root, source);
        cJSON_Delete(root);
        return rc;
    }
    int rc = 0, n_down = c->levels, n_up = c->levels; /* the defaults' lengths */
    for (const cJSON *f = root->child; f && rc == 0; f = f->next) {
        const char *key = f->string;
        size_t i;
        if (key[0] == '_') {
            if (strcmp(key, "_class_name") == 0 && (!cJSON_IsString(f) || strcmp(f->valuestring, "UNet2DModel")))
                rc = df_error("%s: _class_name is %s; diffuse implements UNet2DModel and SimpleUnet", source,
                              cJSON_IsString(f) ? f->valuestring : "not a string");
            continue;
        }
        for (i = 0; i < sizeof scalar_fields / sizeof scalar_fields[0]; i++)
            if (strcmp(key, scalar_fields[i].name) == 0) break;
        if (i < sizeof scalar_fields / sizeof scalar_fields[0]) {
            ftype t = scalar_fields[i].type;
            if (t == F_INT_OR_NULL && cJSON_IsNull(f)) {
                *int_field(c, scalar_fields[i].offset) = 0;
            } else if (t == F_BOOL) {
                if (!cJSON_IsBool(f)) rc = df_error("%s: '%s' must be true or false", source, key);
                else *int_field(c, scalar_fields[i].offset) = cJSON_IsTrue(f);
            } else if (!cJSON_IsNumber(f)) {
                rc = df_error("%s: '%s' must be a number", source, key);
            } else if (t == F_FLOAT) {
                *float_field(c, scalar_fields[i].offset) = (float)f->valuedouble;
            } else if (f->valuedouble != floor(f->valuedouble) || f->valuedouble < 0 || f->valuedouble > 1e6) {
                rc = df_error("%s: '%s' must be a non-negative integer, found %g", source, key, f->valuedouble);
            } else {
                *int_field(c, scalar_fields[i].offset) = f->valueint;
            }
            continue;
        }
        if (strcmp(key, "block_out_channels") == 0) {
            int n = cJSON_IsArray(f) ? cJSON_GetArraySize(f) : -1;
            if (n < 1 || n > DF_MAX_LEVELS) {
                rc = df_error("%s: block_out_channels must be a list of 1 to %d channel counts", source, DF_MAX_LEVELS);
                continue;
            }
            c->levels = n;
            for (int k = 0; k < n && rc == 0; k++) {
                const cJSON *e = cJSON_GetArrayItem(f, k);
                if (!cJSON_IsNumber(e) || e->valueint < 1 || e->valuedouble != e->valueint)
                    rc = df_error("%s: block_out_channels[%d] must be a positive integer", source, k);
                else
                    c->block_out_channels[k] = e->valueint;
            }
            continue;
        }
        if (strcmp(key, "down_block_types") == 0) {
            rc = parse_block_types(c->down_attn, &n_down, f, key, source, "DownBlock2D", "AttnDownBlock2D");
            continue;
        }
        if (strcmp(key, "up_block_types") == 0) {
            rc = parse_block_types(c->up_attn, &n_up, f, key, source, "UpBlock2D", "AttnUpBlock2D");
            continue;
        }
        if (strcmp(key, "mid_block_type") == 0) {
            if (!cJSON_IsString(f) || strcmp(f->valuestring, "UNetMidBlock2D") != 0)
                rc = df_error("%s: mid_block_type must be UNetMidBlock2D", source);
            continue;
        }
        for (i = 0; i < sizeof fixed_fields / sizeof fixed_fields[0]; i++)
            if (strcmp(key, fixed_fields[i].name) == 0) break;
        if (i < sizeof fixed_fields / sizeof fixed_fields[0]) {
            char *text = cJSON_PrintUnformatted(f);
            if (strcmp(text, fixed_fields[i].value) != 0)
                rc = df_error("%s: %s = %s is not supported (diffuse implements %s = %s)", source, key, text, key,
                              fixed_fields[i].value);
            free(text);
            continue;
        }
        for (i = 0; i < sizeof ignored_fields / sizeof ignored_fields[0]; i++)
            if (strcmp(key, ignored_fields[i]) == 0) break;
        if (i < sizeof ignored_fields / sizeof ignored_fields[0]) continue;
        rc = df_error("%s: config field '%s' is not supported by diffuse's UNet2DModel", source, key);
    }
    cJSON_Delete(root);
    if (rc) return rc;
    if (n_down != c->levels)
        return df_error("%s: down_block_types has %d entries but block_out_channels has %d", source, n_down, c->levels);
    if (n_up != c->levels)
        return df_error("%s: up_block_types has %d entries but block_out_channels has %d", source, n_up, c->levels);
    if (df_unet_config_check(c)) return df_error_wrap("%s", source);
    return 0;
}

int df_unet_config_check(const df_unet_config *c) {
    if (c->arch == DF_ARCH_SIMPLE_UNET) return df_simple_unet_config_check(c);
    if (c->arch != DF_ARCH_UNET2D) return df_error("unknown architecture %d", (int)c->arch);
    if (c->sample_size < 1) return df_error("sample_size must be set to the image size (found %d)", c->sample_size);
    if (c->in_channels < 1 || c->out_channels < 1) return df_error("in_channels and out_channels must be positive");
    if (c->layers_per_block < 1) return df_error("layers_per_block must be at least 1");
    if (c->levels < 1 || c->levels > DF_MAX_LEVELS) return df_error("block_out_channels: 1 to %d levels", DF_MAX_LEVELS);
    int div = 1 << (c->levels - 1);
    if (c->sample_size % div)
        return df_error("sample_size %d is not divisible by %d, which %d levels of 2x downsampling need",
                        c->sample_size, div, c->levels);
    if (c->norm_num_groups < 1) return df_error("norm_num_groups must be positive");
    for (int i = 0; i < c->levels; i++) {
        int ch = c->block_out_channels[i];
        if (ch % c->norm_num_groups)
            return df_error("block_out_channels[%d] = %d is not divisible by norm_num_groups = %d", i, ch,
                            c->norm_num_groups);
        if (c->attention_head_dim && ch % c->attention_head_dim && (c->down_attn[i] || c->up_attn[c->levels - 1 - i]))
            return df_error("block_out_channels[%d] = %d is not divisible by attention_head_dim = %d", i, ch,
                            c->attention_head_dim);
    }
    if (!(c->norm_eps > 0)) return df_error("norm_eps must be positive");
    if (!(c->dropout >= 0 && c->dropout < 1)) return df_error("dropout must be in [0, 1), found %g", c->dropout);
    if (c->downsample_padding < 0 || c->downsample_padding > 1)
        return df_error("downsample_padding must be 0 or 1, found %d", c->downsample_padding);
    if (!(c->mid_block_scale_factor > 0)) return df_error("mid_block_scale_factor must be positive");
    if (c->time_embedding_dim < 0) return df_error("time_embedding_dim must be positive");
    return 0;
}

/* ---- writing ---- */

char *df_unet_config_json(const df_unet_config *c) {
    if (c->arch == DF_ARCH_SIMPLE_UNET) return df_simple_unet_config_json(c);
    cJSON *o = cJSON_CreateObject();
    const char *down[DF_MAX_LEVELS], *up[DF_MAX_LEVELS];
    for (int i = 0; i < c->levels; i++) {
        down[i] = c->down_attn[i] ? "AttnDownBlock2D" : "DownBlock2D";
        up[i] = c->up_attn[i] ? "AttnUpBlock2D" : "UpBlock2D";
    }
    /* keys in sorted order, as diffusers writes them */
    cJSON_AddStringToObject(o, "_class_name", "UNet2DModel");
    cJSON_AddStringToObject(o, "_diffusers_version", "0.25.0");
    cJSON_AddStringToObject(o, "act_fn", "silu");
    cJSON_AddBoolToObject(o, "add_attention", c->add_attention);
    if (c->attention_head_dim) cJSON_AddNumberToObject(o, "attention_head_dim", c->attention_head_dim);
    else cJSON_AddNullToObject(o, "attention_head_dim");
    cJSON_AddNullToObject(o, "attn_norm_num_groups");
    cJSON_AddItemToObject(o, "block_out_channels", cJSON_CreateIntArray(c->block_out_channels, c->levels));
    cJSON_AddBoolToObject(o, "center_input_sample", 0);
    cJSON_AddNullToObject(o, "class_embed_type");
    cJSON_AddItemToObject(o, "down_block_types", cJSON_CreateStringArray(down, c->levels));
    cJSON_AddNumberToObject(o, "downsample_padding", c->downsample_padding);
    cJSON_AddStringToObject(o, "downsample_type", "conv");
    cJSON_AddNumberToObject(o, "dropout", c->dropout);
    cJSON_AddBoolToObject(o, "flip_sin_to_cos", c->flip_sin_to_cos);
    cJSON_AddNumberToObject(o, "freq_shift", c->freq_shift);
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(o, "layers_per_block", c->layers_per_block);
    cJSON_AddNumberToObject(o, "mid_block_scale_factor", c->mid_block_scale_factor);
    cJSON_AddNumberToObject(o, "norm_eps", c->norm_eps);
    cJSON_AddNumberToObject(o, "norm_num_groups", c->norm_num_groups);
    cJSON_AddNullToObject(o, "num_class_embeds");
    cJSON_AddNullToObject(o, "num_train_timesteps");
    cJSON_AddNumberToObject(o, "out_channels", c->out_channels);
    cJSON_AddStringToObject(o, "resnet_time_scale_shift", "default");
    cJSON_AddNumberToObject(o, "sample_size", c->sample_size);
    if (c->time_embedding_dim) cJSON_AddNumberToObject(o, "time_embedding_dim", c->time_embedding_dim);
    else cJSON_AddNullToObject(o, "time_embedding_dim");
    cJSON_AddStringToObject(o, "time_embedding_type", "positional");
    cJSON_AddItemToObject(o, "up_block_types", cJSON_CreateStringArray(up, c->levels));
    cJSON_AddStringToObject(o, "upsample_type", "conv");
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

/* ---- presets ---- */

typedef struct {
    const char *name, *about;
    int sample_size, in_channels, levels, boc[DF_MAX_LEVELS], attn_level, groups, downsample_padding, flip;
    float eps, freq_shift, dropout;
    df_arch arch; /* DF_ARCH_SIMPLE_UNET uses name, about, sample_size, in_channels, levels and boc */
} preset;

/* attn_level: the level (index into block_out_channels) whose down and matching up block have attention. */
static const preset presets[] = {
    {"fmnist-s", "28x28x1, channels 32,64,64, attention at 14x14 (1.6M parameters)", 28, 1, 3, {32, 64, 64}, 1, 8,
     1, 1, 1e-5f, 0, 0.0f, DF_ARCH_UNET2D},
    {"fmnist-m", "28x28x1, channels 64,128,128, attention at 14x14 (6.5M parameters)", 28, 1, 3, {64, 128, 128}, 1,
     32, 1, 1, 1e-5f, 0, 0.1f, DF_ARCH_UNET2D},
    {"cifar10-ddpm", "google/ddpm-cifar10-32: 32x32x3, channels 128,256,256,256, attention at 16x16 (35.7M parameters)", 32, 3,
     4, {128, 256, 256, 256}, 1, 32, 0, 0, 1e-6f, 1, 0.0f, DF_ARCH_UNET2D},
    {"celeba64-ddim", "the DDIM paper's CelebA 64x64 model: ch 128, mult 1,2,2,2,4, attention at 16x16 (78.7M parameters)", 64, 3, 5,
     {128, 256, 256, 256, 512}, 2, 32, 0, 0, 1e-6f, 1, 0.1f, DF_ARCH_UNET2D},
    {"tiny", "16x16x1, channels 16,32, attention at 8x8: for tests", 16, 1, 2, {16, 32}, 1, 8, 1, 1, 1e-5f, 0, 0.0f,
     DF_ARCH_UNET2D},
    {"simple-unet", "the DDIM reproduction report's SimpleUnet: 64x64x3, channels 64,128,256,512,1024, BatchNorm, "
     "no attention (62.4M parameters)", 64, 3, 5, {64, 128, 256, 512, 1024}, 0, 0, 0, 0, 1e-5f, 0, 0.0f,
     DF_ARCH_SIMPLE_UNET},
};

const char *const df_preset_names[] = {"fmnist-s", "fmnist-m", "cifar10-ddpm", "celeba64-ddim", "tiny", "simple-unet",
                                       NULL};

static const preset *find_preset(const char *name) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].name, name) == 0) return &presets[i];
    return NULL;
}

const char *df_preset_about(const char *name) {
    const preset *p = find_preset(name);
    return p ? p->about : NULL;
}

int df_unet_preset(df_unet_config *c, const char *name) {
    const preset *p = find_preset(name);
    if (!p) {
        char list[256] = "";
        for (int i = 0; df_preset_names[i]; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", df_preset_names[i]);
        return df_error("unknown preset '%s' (presets: %s)", name, list);
    }
    if (p->arch == DF_ARCH_SIMPLE_UNET) {
        df_simple_unet_defaults(c);
        c->sample_size = p->sample_size;
        c->in_channels = c->out_channels = p->in_channels;
        c->levels = p->levels;
        memcpy(c->block_out_channels, p->boc, sizeof p->boc);
        return df_unet_config_check(c);
    }
    set_defaults(c);
    c->sample_size = p->sample_size;
    c->in_channels = c->out_channels = p->in_channels;
    c->levels = p->levels;
    for (int i = 0; i < p->levels; i++) {
        c->block_out_channels[i] = p->boc[i];
        c->down_attn[i] = i == p->attn_level;
        c->up_attn[i] = i == p->levels - 1 - p->attn_level;
    }
    c->layers_per_block = 2;
    c->norm_num_groups = p->groups;
    c->norm_eps = p->eps;
    c->downsample_padding = p->downsample_padding;
    c->flip_sin_to_cos = p->flip;
    c->freq_shift = p->freq_shift;
    c->dropout = p->dropout;
    c->attention_head_dim = 0;
    return df_unet_config_check(c);
}
