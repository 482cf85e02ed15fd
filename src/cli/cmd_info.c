/* cmd_info.c: `diffuse info`: what a model is and what it costs. */
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "diffuse.h"
#include "io/file.h"

static void print_config(const df_unet_config *c) {
    if (c->arch == DF_ARCH_SIMPLE_UNET) {
        printf("  image        %dx%dx%d -> %d channels\n", c->sample_size, c->sample_size, c->in_channels,
               c->out_channels);
        printf("  channels     ");
        for (int i = 0; i < c->levels; i++) printf("%s%d", i ? "," : "", c->block_out_channels[i]);
        printf(" (%d blocks down, %d up; no attention)\n", c->levels - 1, c->levels - 1);
        printf("  norm         BatchNorm, eps %g, momentum 0.1; time embedding %d\n", c->norm_eps,
               c->time_embedding_dim);
        return;
    }
    printf("  image        %dx%dx%d -> %d channels\n", c->sample_size, c->sample_size, c->in_channels, c->out_channels);
    printf("  channels     ");
    for (int i = 0; i < c->levels; i++) printf("%s%d", i ? "," : "", c->block_out_channels[i]);
    printf(" (%d resnets a level down, %d up)\n", c->layers_per_block, c->layers_per_block + 1);
    printf("  attention    ");
    int any = 0;
    for (int i = 0; i < c->levels; i++)
        if (c->down_attn[i]) printf("%s%dx%d", any++ ? ", " : "", c->sample_size >> i, c->sample_size >> i);
    printf("%smiddle (%dx%d)", any ? ", " : "", c->sample_size >> (c->levels - 1), c->sample_size >> (c->levels - 1));
    if (c->attention_head_dim) printf(", head dim %d\n", c->attention_head_dim);
    else printf(", one head\n");
    printf("  norm         %d groups, eps %g; dropout %g\n", c->norm_num_groups, c->norm_eps, c->dropout);
}

int cmd_info(int argc, char **argv) {
    const char *preset = NULL, *model = NULL, *config = NULL;
    int json = 0;
    const df_flag flags[] = {
        {"preset", FL_STRING, NULL, "a preset: fmnist-s, fmnist-m, cifar10-ddpm, celeba64-ddim, tiny, simple-unet",
         &preset},
        {"model", FL_STRING, NULL, "a run folder or diffusers UNet2DModel / pipeline folder", &model},
        {"config", FL_STRING, NULL, "a diffusers UNet2DModel config.json", &config},
        {"json", FL_BOOL, "0", "print the model's diffusers config.json instead", &json},
    };
    const char *pos[1];
    int npos, rc = df_flags_parse(flags, 4, argc, argv,
                                  "usage: diffuse info (--preset NAME | --model FOLDER | --config FILE)", pos, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    if ((preset != NULL) + (model != NULL) + (config != NULL) != 1) {
        fprintf(stderr, "diffuse info: give exactly one of --preset, --model or --config\n");
        return 1;
    }
    df_unet_config c;
    const char *what = preset ? preset : model ? model : config;
    if (preset) {
        if (df_unet_preset(&c, preset)) goto fail;
    } else if (model) {
        df_unet *m = df_unet_load_folder(model);
        if (!m) goto fail;
        c = *df_unet_cfg(m);
        df_unet_destroy(m);
    } else {
        unsigned char *text;
        size_t size;
        if (df_read_file(config, &text, &size)) goto fail;
        int bad = df_unet_config_parse(&c, (const char *)text, config);
        df_free(text);
        if (bad) goto fail;
    }
    if (json) {
        char *text = df_unet_config_json(&c);
        printf("%s\n", text);
        free(text);
        return 0;
    }
    df_unet_cost k = df_unet_costs(&c);
    printf("%s: %s\n", what, c.arch == DF_ARCH_SIMPLE_UNET ? "SimpleUnet" : "UNet2DModel");
    print_config(&c);
    printf("  parameters   %zu (%.2f M, %.1f MB in FP32)\n", k.params, k.params / 1e6, k.params * 4 / 1e6);
    printf("  forward      %.3f GFLOP per image\n", k.gflops_per_image);
    printf("  training     %.1f MB per image (activations and their gradients) + %.1f MB fixed (weights, "
           "gradients, Adam moments, EMA)\n",
           k.train_bytes_per_image / 1e6, 5.0 * k.params * 4 / 1e6);
    printf("  sampling     %.1f MB per image (live activations only)\n", k.infer_bytes_per_image / 1e6);
    return 0;
fail:
    fprintf(stderr, "diffuse info: %s\n", df_errmsg());
    return 1;
}
