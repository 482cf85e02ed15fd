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

/* FID of generated images against a reference (diffuse sample --fid, the DDIM table): prepare loads the
 * feature network (net_dir, NULL: the default), checks it takes C x H x W images, and gets the reference
 * statistics of `ref` (see diffuse fid) BEFORE any sampling; report prints the FID of n images x (n, C, H, W)
 * in [-1, 1], taken as the 8-bit pixels they are saved as. Both return 0, or 1 after printing the error. */
typedef struct {
    struct df_classifier_s *net;
    char dir[4096], what[4600];
    size_t C, H, W;
    void *ref; /* df_fid_stats */
} cli_fid;
int cli_fid_prepare(cli_fid *f, const char *ref, const char *net_dir, size_t C, size_t H, size_t W, const char *cmd);
int cli_fid_report(cli_fid *f, const float *x, size_t n, const char *cmd);
void cli_fid_free(cli_fid *f);

#endif
