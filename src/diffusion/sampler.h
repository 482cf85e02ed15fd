/* sampler.h: samplers as pure functions of (model callback, x, schedule). A sampler never looks inside the
 * network: it calls `model` for the raw output at (x, t) and converts it by the schedule's prediction type.
 *
 * Randomness is per sample: sample i's initial noise and per-step noise come from streams keyed by (seed,
 * i, step), so image i of seed k is the same whatever the batch size or thread count.
 *
 * Timesteps: a sampler runs over a decreasing sequence taus[0] > taus[1] > ... > taus[S-1] (>= 0); the step
 * at taus[i] goes to taus[i+1], looked up in the sequence (never computed as t - T/S); the last step goes to
 * "t = -1", whose abar is 1 (DDPM; DDIM with set_alpha_to_one) or abar_0 (DDIM without). */
#ifndef DF_SAMPLER_H
#define DF_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion/schedule.h"

/* out (B, D) = the network's raw output at x (B, D), timesteps t (B). */
typedef void (*df_model_fn)(void *ctx, float *out, const float *x, const float *t, size_t B);

/* ---- timestep sequences ---- */

typedef enum { DF_SPACING_UNIFORM, DF_SPACING_QUAD, DF_SPACING_LEADING, DF_SPACING_TRAILING, DF_SPACING_LINSPACE } df_spacing;
int df_spacing_parse(df_spacing *sp, const char *name);
const char *df_spacing_name(df_spacing sp);
/* Writes the DEcreasing sequence for S requested steps of T into taus (capacity cap) and returns its length
 * (or -1 with df_error if S is out of range). The rules:
 *   uniform  (the DDIM code): skip = T / S (integer), range(0, T, skip)  (may hold a few more than S)
 *   quad     (the DDIM code): int(linspace(0, sqrt(0.8 T), S)^2)        (small values may repeat)
 *   leading  (diffusers): arange(S) * (T / S) + steps_offset
 *   trailing (diffusers): round(arange(T, 0, -T / S)) - 1
 *   linspace (diffusers): round(linspace(0, T - 1, S)) */
int df_timesteps(int *taus, int cap, int S, int T, df_spacing sp, int steps_offset);

/* ---- one step (the unit the tests compare with diffusers' formulas) ---- */

/* x0 and eps from the model output by prediction type, for x at noise level abar a. */
void df_pred_x0_eps(float *x0, float *eps, const float *out, const float *x, double a, df_prediction p, size_t n);
/* x0 post-processing as the schedule says: Imagen's dynamic thresholding (per sample of D values) if
 * s->thresholding, else clipping to +-clip_sample_range if clip (the caller passes s->clip_sample or an
 * override). */
void df_process_x0(float *x0, size_t B, size_t D, const df_schedule *s, int clip);

/* abar of a timestep in a sequence step: t >= 0 -> abar[t]; t < 0 -> final (1 or abar_0, see above). */
double df_abar_at(const df_schedule *s, int t, int final_is_one);

/* DDPM ancestral step (Ho et al. Algorithm 2, diffusers DDPMScheduler.step): x_prev (B, D) from x at t,
 * the model output, and standard normal noise z (ignored when t_prev < 0). Variance fixed_small (posterior
 * beta~) or fixed_large (beta) per s->variance_fixed_large, with beta = 1 - abar_t / abar_prev so a respaced
 * sequence works. If x0_out is not NULL it receives the predicted (processed) x0. */
void df_ddpm_step(float *x_prev, float *x0_out, const float *x, const float *model_out, int t, int t_prev,
                  const float *z, size_t B, size_t D, const df_schedule *s, int clip);

/* DDIM step (Song et al. eq. 12, diffusers DDIMScheduler.step with use_clipped_model_output = False):
 *   x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z,
 *   sigma = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev).
 * z may be NULL when eta == 0. */
void df_ddim_step(float *x_prev, float *x0_out, const float *x, const float *model_out, int t, int t_prev,
                  double eta, const float *z, size_t B, size_t D, const df_schedule *s, int clip);

/* ---- whole chains ---- */

typedef enum { DF_SAMPLER_DDPM, DF_SAMPLER_DDIM } df_sampler_kind;

typedef struct {
    df_sampler_kind kind;
    double eta;      /* DDIM */
    int sigma_hat;   /* DDIM paper's sigma-hat: an ancestral step with the respaced beta as variance */
    int clip;        /* x0 clipping (default: the schedule's clip_sample) */
    const int *taus; /* decreasing sequence */
    int S;
    uint64_t seed;
    /* Trajectory (optional): after step i, if record[i] >= 0, x is copied to traj + record[i] * B * D and the
     * predicted x0 to traj_x0 + record[i] * B * D (either buffer may be NULL). */
    const int *record;
    float *traj, *traj_x0;
    void (*on_step)(void *ctx, int i, int S); /* after each step (i = 1..S), may be NULL */
    void *step_ctx;
} df_sampler;

/* x (B, D) = initial noise for samples first_index .. first_index + B - 1 of seed. */
void df_initial_noise(float *x, size_t B, size_t D, uint64_t seed, uint64_t first_index);

/* Runs the chain: x holds x_T on entry (usually df_initial_noise) and x_0 on return. Sample b of the batch
 * is sample first_index + b of the seed (its step noise comes from its own stream). */
void df_sample(float *x, size_t B, size_t D, const df_schedule *s, const df_sampler *sp, uint64_t first_index,
               df_model_fn model, void *ctx);

/* ---- the deterministic ODE both ways ---- */

/* Inversion (DDIM encode): runs deterministic DDIM (eta = 0, no clipping) backwards from x = x_0 to x = x_T over
 * the INcreasing order of the decreasing sequence taus: from abar = 1 to taus[S-1], then up to taus[0], each step
 * using the model at its destination timestep. */
void df_ddim_invert(float *x, size_t B, size_t D, const df_schedule *s, const int *taus, int S, df_model_fn model,
                    void *ctx, void (*on_step)(void *ctx, int i, int S), void *step_ctx);

/* Spherical interpolation of two noises: out = sin((1 - w) th) / sin th * a + sin(w th) / sin th * b, th the angle
 * between a and b (linear when they are nearly parallel). */
void df_slerp(float *out, const float *a, const float *b, size_t D, double w);


#endif
