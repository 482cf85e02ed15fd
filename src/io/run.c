/* run.c: writing and reading diffusers pipeline folders. */
#include "io/run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "io/file.h"

static int write_text(const char *path, char *text) {
    if (!text) return df_error("%s: out of memory formatting JSON", path);
    size_t n = strlen(text);
    text[n] = 0;
    int rc = df_write_file_atomic(path, text, n);
    free(text);
    return rc;
}

int df_run_save_pipeline(const char *dir, const df_unet *m, const df_schedule *s) {
    char path[4096];
    snprintf(path, sizeof path, "%s/unet", dir);
    if (df_mkdirs(path)) return -1;
    snprintf(path, sizeof path, "%s/scheduler", dir);
    if (df_mkdirs(path)) return -1;
    /* a SimpleUnet is no diffusers class: the index names it as the report's module (library "diffuse") */
    int simple = df_unet_cfg(m)->arch == DF_ARCH_SIMPLE_UNET;
    char index[512];
    int len = snprintf(index, sizeof index,
                       "{\n  \"_class_name\": \"DDPMPipeline\",\n  \"_diffusers_version\": \"0.25.0\",\n"
                       "  \"scheduler\": [\n    \"diffusers\",\n    \"DDPMScheduler\"\n  ],\n"
                       "  \"unet\": [\n    \"%s\",\n    \"%s\"\n  ]\n}\n",
                       simple ? "diffuse" : "diffusers", simple ? "SimpleUnet" : "UNet2DModel");
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    if (df_unet_save(m, path)) return -1;
    snprintf(path, sizeof path, "%s/unet/config.json", dir);
    if (write_text(path, df_unet_config_json(df_unet_cfg(m)))) return -1;
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    if (write_text(path, df_schedule_json(s))) return -1;
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    return df_write_file_atomic(path, index, (size_t)len);
}

int df_run_load_schedule(const char *dir, df_schedule *s, int allow_missing) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    if (stat(path, &st) != 0) {
        if (!allow_missing) return df_error("%s: no scheduler config", path);
        df_schedule_defaults(s);
        return df_schedule_init(s);
    }
    unsigned char *text;
    size_t size;
    if (df_read_file(path, &text, &size)) return -1;
    int rc = df_schedule_parse(s, (const char *)text, path);
    df_free(text);
    return rc;
}
