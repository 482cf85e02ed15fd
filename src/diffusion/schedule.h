/* schedule.h: the noise schedule and scheduler settings, as diffusers' DDPMScheduler / DDIMScheduler keep
 * them in scheduler/scheduler_config.json.
 *
 * Forward process: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), abar_t = prod_{s<=t} (1 - beta_s),
 * t = 0 .. T-1 (diffusers' zero-based timesteps). */
#ifndef DF_SCHEDULE_H
#define DF_SCHEDULE_H

#include <stddef.h>

typedef enum { DF_PRED_EPSILON, DF_PRED_SAMPLE, DF_PRED_V } df_prediction;

typedef struct {
    int T;                   /* num_train_timesteps */
    char beta_schedule[32];  /* linear, scaled_linear, squaredcos_cap_v2, sigmoid, quad */
    double beta_start, beta_end;
    df_prediction prediction;
    int clip_sample;         /* clip x0 to [-clip_sample_range, clip_sample_range] when sampling */
    double clip_sample_range;
    int variance_fixed_large; /* variance_type fixed_large (beta_t) instead of fixed_small (posterior) */
    int thresholding;        /* Imagen's dynamic thresholding */
    double dynamic_thresholding_ratio, sample_max_value;
    int steps_offset;
    char timestep_spacing[16]; /* leading, trailing, linspace */
    int set_alpha_to_one;     /* DDIM: abar before t = 0 is 1 (else abar_0) */
    double *betas, *abar;     /* T each, computed by df_schedule_init */
} df_schedule;

/* Fills s with diffusers' DDPMScheduler defaults (linear 1e-4..0.02, T = 1000, epsilon, clip, fixed_small). */
void df_schedule_defaults(df_schedule *s);
/* Computes betas and abar from the settings; an unknown schedule or a bad range is an error. */
int df_schedule_init(df_schedule *s);
void df_schedule_free(df_schedule *s);
/* Parses a scheduler_config.json (DDPMScheduler or DDIMScheduler); `trained_betas` lists are honoured. */
int df_schedule_parse(df_schedule *s, const char *json, const char *source);
/* The config as DDPMScheduler.save_config writes it (sorted keys). Caller frees with free(). */
char *df_schedule_json(const df_schedule *s);
const char *df_prediction_name(df_prediction p);
int df_prediction_parse(df_prediction *p, const char *name);

/* ---- the training objective (DDPM Algorithm 1) ---- */
/* x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, per image (B images of D values), t integer timesteps. */
void df_q_sample(float *xt, const float *x0, const float *eps, const int *t, const df_schedule *s, size_t B,
                 size_t D);
/* The regression target for the prediction type: eps, x0, or v = sqrt(abar) eps - sqrt(1 - abar) x0. */
void df_target(float *target, const float *x0, const float *eps, const int *t, const df_schedule *s, size_t B,
               size_t D);

#endif
