/* train.h: DDPM training (Algorithm 1) of a U-Net on a dataset, into a run folder, with EMA, checkpoints,
 * exact resume, progress, metrics and sample grids.
 *
 * Everything random is a function of (seed, step): the timesteps and noise of step k, the dropout masks of
 * step k, the data order of epoch e. So N steps, stop, resume, N more give bitwise the weights of 2N steps. */
#ifndef DF_TRAIN_H
#define DF_TRAIN_H

#include <stdint.h>

#include "diffuse.h"
#include "diffusion/schedule.h"
#include "nn/optim.h"

typedef struct {
    /* data */
    const char *data, *data_dir;
    int resolution, channels, flip;
    /* model and objective */
    df_unet_config unet;
    df_schedule sched; /* settings; betas computed by df_train */
    int loss_l1;
    /* optimisation */
    df_adam_config adam;
    int warmup;
    double grad_clip, ema_decay, ema_power, ema_inv_gamma;
    int batch;
    int64_t steps; /* 0: from epochs */
    double epochs;
    uint64_t seed;
    /* the run */
    const char *out;
    int save_every, sample_every, n_samples, log_every, resume;
    const char *args_json;            /* the settings, stored in the run and compared on resume */
    const char *const *volatile_keys; /* settings that may change on resume (NULL-terminated) */
    int quiet;                        /* no progress bar (tests) */
} df_train_opts;

typedef struct {
    int64_t steps_done;
    double final_loss, images_per_s, seconds;
} df_train_result;

/* ---- one step ---- */
/* Scratch for df_train_step, grown as needed; zero-initialise, free with df_step_work_free. */
typedef struct {
    float *xt, *target, *dout, *tf;
    size_t cap;
} df_step_work;
void df_step_work_free(df_step_work *w);

/* One optimizer step of DDPM Algorithm 1 on given data x0 (B, D), integer timesteps t (B) and noise eps (B, D):
 * x_t, the target of the schedule's prediction type, the loss (MSE or L1, mean over all elements), backward,
 * gradient clipping at grad_clip, and an Adam step at lr. Returns the loss; if the loss or the gradient norm
 * is not finite, the weights are left untouched and the non-finite value is returned. */
float df_train_step(df_unet *m, df_adam *adam, const df_schedule *s, int loss_l1, double grad_clip, double lr,
                    const float *x0, const int *t, const float *eps, size_t B, double *grad_norm, df_step_work *w);

/* Runs training to o->steps. 0 on success; -1 with df_errmsg() on bad input, a non-finite loss (the last
 * good checkpoint stays), or an interruption (SIGINT/SIGTERM: the run is checkpointed first). */
int df_train(const df_train_opts *o, df_train_result *r);

#endif
