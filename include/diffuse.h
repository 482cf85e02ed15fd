/* diffuse.h: the public interface of libdiffuse.
 *
 * A U-Net is described by a df_unet_config (the fields of a diffusers UNet2DModel config.json that diffuse
 * implements), created with df_unet_create, and fed batches of images x (B, C, H, W) in [-1, 1] space with
 * one (float) timestep per image. All functions that can fail on user input return 0 on success and -1 on
 * failure, with the reason in df_errmsg(). Memory returned by a df_* call is owned by the callee unless a
 * comment says otherwise.
 */
#ifndef DIFFUSE_H
#define DIFFUSE_H

#include <stddef.h>
#include <stdint.h>

#define DF_MAX_LEVELS 8

/* ---- errors ---- */
const char *df_errmsg(void);
void df_set_threads(int n);
/* Arithmetic of the network's convolutions, linears and attention, process-wide: "fp32" (the default) or
 * "bf16" (operands rounded to BF16, FP32 accumulation; weights, optimizer and everything else stay FP32),
 * by Intel AMX or AVX-512 BF16 where the CPU has them, else a portable (slow) path. 0, or -1 with
 * df_errmsg() for another name. */
int df_set_precision(const char *name);
const char *df_precision(void);

/* ---- U-Net configuration (diffusers UNet2DModel, or the DDIM report's SimpleUnet) ---- */
typedef enum {
    DF_ARCH_UNET2D = 0,  /* diffusers' UNet2DModel: every field below */
    DF_ARCH_SIMPLE_UNET, /* the DDIM reproduction report's SimpleUnet (config.json "_class_name": "SimpleUnet"):
                          * sample_size, in_channels, out_channels, block_out_channels as its down_channels
                          * (levels = len(down_channels), levels - 1 down and as many up blocks),
                          * time_embedding_dim as its time_emb_dim, norm_eps (BatchNorm's); the rest is unused */
} df_arch;

typedef struct {
    df_arch arch;
    int sample_size, in_channels, out_channels;
    int levels; /* len(block_out_channels) */
    int block_out_channels[DF_MAX_LEVELS];
    int down_attn[DF_MAX_LEVELS]; /* 1: AttnDownBlock2D, 0: DownBlock2D */
    int up_attn[DF_MAX_LEVELS];   /* 1: AttnUpBlock2D, 0: UpBlock2D */
    int layers_per_block;
    int norm_num_groups;
    float norm_eps;
    float dropout;
    float freq_shift;
    int flip_sin_to_cos;
    int downsample_padding;
    int attention_head_dim; /* 0: null, one head spanning all channels (the DDPM attention) */
    float mid_block_scale_factor;
    int add_attention;      /* the mid block's attention */
    int time_embedding_dim; /* 0: 4 * block_out_channels[0] */
} df_unet_config;

/* Parses a UNet2DModel config.json text. `source` names the file in error messages. Missing fields take
 * diffusers' defaults; a field or value diffuse does not implement is an error that names it. */
int df_unet_config_parse(df_unet_config *c, const char *json, const char *source);
/* The config as diffusers writes it (sorted keys, 2-space indent). Caller frees with free(). */
char *df_unet_config_json(const df_unet_config *c);
/* Checks the config's internal consistency (channels divisible by groups, resolution by 2^(levels-1)...). */
int df_unet_config_check(const df_unet_config *c);
/* Fills c with a named preset (fmnist-s, fmnist-m, cifar10-ddpm, celeba64-ddim, tiny, simple-unet). */
int df_unet_preset(df_unet_config *c, const char *name);
/* The preset names, NULL-terminated, and a one-line description of each. */
extern const char *const df_preset_names[];
const char *df_preset_about(const char *name);

/* ---- the model ---- */
typedef struct df_unet df_unet;

/* Creates a model with zeroed parameters (checks the config first). NULL on error. */
df_unet *df_unet_create(const df_unet_config *c);
void df_unet_destroy(df_unet *m);
const df_unet_config *df_unet_cfg(const df_unet *m);
size_t df_unet_num_params(const df_unet *m);
/* PyTorch's default initialisation (uniform +-1/sqrt(fan_in) for conv and linear weights and biases, ones
 * and zeros for group and batch norm, fresh running statistics: mean 0, variance 1, no batches), from the
 * counter-based RNG: the same seed gives the same weights. */
void df_unet_init_weights(df_unet *m, uint64_t seed);
/* Loads every parameter (and buffer) from a safetensors file (diffusers names; the old query/key/value/proj_attn
 * names of google/ddpm-* checkpoints are accepted). A missing, misshapen or unexpected tensor is an error. */
int df_unet_load(df_unet *m, const char *path);
/* Saves every parameter (and buffer), F32 (counters I64), under the current state-dict names, atomically. */
int df_unet_save(const df_unet *m, const char *path);

/* Buffers: state that is not a parameter, the BatchNorm running means and variances of a SimpleUnet (none in
 * a UNet2DModel). Training forwards update them; gradients, the optimizer, clipping and EMA never see them.
 * They are saved and loaded with the weights under their state-dict names (with num_batches_tracked, one
 * int64 counter per norm). df_unet_buffers: df_unet_num_buffers floats (NULL if none); df_unet_counters:
 * df_unet_num_counters counters. df_unet_copy_buffers copies both from src to dst (same config), e.g. into the
 * EMA model, which samples with the trained model's running statistics. */
size_t df_unet_num_buffers(const df_unet *m);
float *df_unet_buffers(df_unet *m);
size_t df_unet_num_counters(const df_unet *m);
int64_t *df_unet_counters(df_unet *m);
void df_unet_copy_buffers(df_unet *dst, const df_unet *src);

/* Inference: out (B, out_channels, S, S) = unet(x (B, in_channels, S, S), t (B)). Stores no activations
 * beyond what the pass needs at once. */
void df_unet_forward(df_unet *m, float *out, const float *x, const float *t, size_t B);
/* A promise that m's weights stay as they are until df_unet_freeze(m, 0): inference forwards meanwhile reuse
 * the convolutions' weights packed (or Winograd-transformed) once instead of per call, with the same results
 * bit for bit. The samplers of the command line use it; training must not (its weights change every step). */
void df_unet_freeze(df_unet *m, int frozen);
/* Training: a forward pass that keeps what backward needs; returns the output (valid until the next call). */
const float *df_unet_forward_train(df_unet *m, const float *x, const float *t, size_t B);
/* Dropout masks of the next training pass come from (seed, step) (counter-based: backward regenerates them). */
void df_unet_set_dropout(df_unet *m, uint64_t seed, uint64_t step);
/* Backward of the last df_unet_forward_train; ACCUMULATES into the gradients (df_unet_grads). */
void df_unet_backward(df_unet *m, const float *dout);
/* The flat parameter and gradient arrays (df_unet_num_params floats each; grads allocated on first use). */
float *df_unet_weights(df_unet *m);
float *df_unet_grads(df_unet *m);
void df_unet_zero_grads(df_unet *m);

/* Costs: forward FLOPs per image, activation bytes per image for training (values and gradients) and for
 * inference. */
typedef struct {
    size_t params;
    double gflops_per_image;
    double train_bytes_per_image, infer_bytes_per_image;
} df_unet_cost;
df_unet_cost df_unet_costs(const df_unet_config *c);

/* Loads a model from a diffusers folder: FOLDER/unet/{config.json, diffusion_pytorch_model.safetensors}
 * (a pipeline folder) or FOLDER/{config.json, ...} (a UNet2DModel folder). NULL on error. */
df_unet *df_unet_load_folder(const char *folder);

#endif
