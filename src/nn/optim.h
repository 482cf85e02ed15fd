/* optim.h: Adam / AdamW (PyTorch's formulas, FP32), gradient clipping by global norm, learning-rate warm-up,
 * and the EMA of the weights (diffusers' EMAModel with its warm-up form). One loop over all parameters: they
 * live in one flat array (df_params). */
#ifndef DF_OPTIM_H
#define DF_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled; /* 1: AdamW (w -= lr * wd * w before the step); 0: Adam (g += wd * w) */
} df_adam_config;

typedef struct {
    df_adam_config c;
    size_t n;
    float *m, *v;  /* first and second moments, n each */
    uint64_t step; /* number of steps taken */
} df_adam;

void df_adam_init(df_adam *a, size_t n, const df_adam_config *c);
void df_adam_free(df_adam *a);
/* One step on w with gradient g at learning rate lr, exactly as torch.optim.Adam/AdamW (single-tensor). */
void df_adam_step(df_adam *a, float *w, const float *g, double lr);

/* The global L2 norm of g (accumulated in double, fixed order). */
double df_grad_norm(const float *g, size_t n);
/* torch.nn.utils.clip_grad_norm_: if norm > max_norm, g *= max_norm / (norm + 1e-6). Returns the norm before
 * clipping. max_norm <= 0 disables clipping. */
double df_clip_grad_norm(float *g, size_t n, double max_norm);
/* Linear warm-up as diffusers' constant_with_warmup: lr * step / warmup while step < warmup, then lr
 * (step counts from 0 at the first optimizer step). */
double df_warmup_lr(double lr, uint64_t step, uint64_t warmup);

/* EMA decay at optimization step k (1-based, as EMAModel.step): 0 for k = 1 (a copy), then
 * min(max_decay, 1 - (1 + (k - 1) / inv_gamma)^(-power)). */
double df_ema_decay(uint64_t k, double max_decay, double inv_gamma, double power);
/* ema -= (1 - decay) * (ema - w). */
void df_ema_update(float *ema, const float *w, size_t n, double decay);

#endif
