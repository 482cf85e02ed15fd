/* sampler.h: samplers as pure functions of (model callback, x, schedule). A sampler never looks inside the
 * network: it calls `model` for the raw output at (x, t) and converts it by the schedule's prediction type.
 *
 * Randomness is per sample: sample i's initial noise and per-step noise come from streams keyed by (seed,
 * i, step), so image i of seed k is the same whatever the batch size or thread count. */
#ifndef DF_SAMPLER_H
#define DF_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion/schedule.h"


/* out (B, D) = the network's raw output at x (B, D), timesteps t (B). */
typedef void (*df_model_fn)(void *ctx, float *out, const float *x, const float *t, size_t B);
/* Called after each of S steps (i = 1..S); may be NULL. */
typedef void (*df_step_fn)(void *ctx, int i, int S);

/* x (B, D) = initial noise for samples first_index .. first_index + B - 1 of seed. */
void df_initial_noise(float *x, size_t B, size_t D, uint64_t seed, uint64_t first_index);

/* diffusers' "leading" spacing: S timesteps (arange(S) * (T / S) + steps_offset), returned DEcreasing. */
void df_timesteps_leading(int *taus, int S, int T, int offset);

/* x0 and eps from the model output by prediction type (x at timestep t with abar a). */
void df_pred_x0_eps(float *x0, float *eps, const float *out, const float *x, double a, df_prediction p, size_t n);

/* DDIM (eq. 12 of Song et al.) over the decreasing timesteps taus[0..S-1]: x holds x_T on entry and x_0 on
 * return. eta = 0 is deterministic. The previous timestep is the next entry of taus (the final one uses
 * abar = 1 if set_alpha_to_one, else abar_0). x0 is clipped as the schedule says. */
void df_ddim_sample(float *x, size_t B, size_t D, const df_schedule *s, const int *taus, int S, double eta,
                    uint64_t seed, uint64_t first_index, df_model_fn model, void *ctx, df_step_fn on_step,
                    void *step_ctx);

#endif
