/* sampling.h: what the sampling commands share: loading a model folder with its schedule, running a chain
 * over many images in batches with a progress bar. */
#ifndef DF_CLI_SAMPLING_H
#define DF_CLI_SAMPLING_H

#include <stddef.h>

#include "base/progress.h"
#include "diffuse.h"
#include "diffusion/sampler.h"

typedef struct {
    df_unet *unet;
    df_schedule sched;
    size_t C, H, W, D;
} cli_model;

/* Loads FOLDER's U-Net and scheduler config (diffusers' defaults if the folder has none). Prints the error. */
int cli_load_model(cli_model *m, const char *folder, const char *cmd);
void cli_free_model(cli_model *m);
/* df_model_fn over df_unet_forward. */
void cli_unet_fn(void *ctx, float *out, const float *x, const float *t, size_t B);

/* A progress bar over `total` model evaluations of `per_eval_images` images each. */
typedef struct {
    df_progress bar;
    uint64_t done;
    double images_per_eval;
} cli_steps_progress;
void cli_progress_start(cli_steps_progress *p, const char *label, uint64_t total_evals, double images_per_eval);
void cli_progress_step(void *ctx, int i, int S);
void cli_progress_end(cli_steps_progress *p);

/* Parses --clip-sample auto|true|false into the effective setting (auto: the scheduler's). */
int cli_clip(const char *v, int sched_default, int *out);

#endif
