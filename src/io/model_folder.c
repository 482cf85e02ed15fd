/* model_folder.c: loading a U-Net from a diffusers folder (a pipeline folder with unet/, or a UNet2DModel
 * folder itself). */
#include <stdio.h>
#include <sys/stat.h>

#include "base/base.h"
#include "diffuse.h"
#include "io/file.h"

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

df_unet *df_unet_load_folder(const char *folder) {
    char cfg[4096], weights[4096], bin[4096];
    snprintf(cfg, sizeof cfg, "%s/unet/config.json", folder);
    const char *sub = "/unet";
    if (!is_file(cfg)) {
        snprintf(cfg, sizeof cfg, "%s/config.json", folder);
        sub = "";
        if (!is_file(cfg)) {
            df_error("%s is not a diffusers model folder: neither %s/unet/config.json nor %s/config.json exists",
                     folder, folder, folder);
            return NULL;
        }
    }
    snprintf(weights, sizeof weights, "%s%s/diffusion_pytorch_model.safetensors", folder, sub);
    snprintf(bin, sizeof bin, "%s%s/diffusion_pytorch_model.bin", folder, sub);
    if (!is_file(weights)) {
        if (is_file(bin))
            df_error("%s holds PyTorch pickle weights, which diffuse does not read: re-save them in Python with "
                     "model.save_pretrained(folder, safe_serialization=True) to get %s", bin, weights);
        else
            df_error("%s: no weights file %s", folder, weights);
        return NULL;
    }
    unsigned char *text;
    size_t size;
    if (df_read_file(cfg, &text, &size)) return NULL;
    df_unet_config c;
    int rc = df_unet_config_parse(&c, (const char *)text, cfg);
    df_free(text);
    if (rc) return NULL;
    df_unet *m = df_unet_create(&c);
    if (!m) return NULL;
    if (df_unet_load(m, weights)) {
        df_unet_destroy(m);
        return NULL;
    }
    return m;
}
