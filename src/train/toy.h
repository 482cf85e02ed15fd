/* toy.h: diffusion on 2-D points: four toy datasets, a small MLP denoiser with a timestep embedding, its
 * training loop (DDPM Algorithm 1, Adam, EMA), sampling through df_sample, and the sliced Wasserstein-2
 * distance that says how close the samples are to held-out data (and to a Gaussian fitted to the data).
 *
 * Everything random is a pure function of (seed, stream, index) (base/rng.h): point i of a dataset split,
 * the timesteps and noise of training step k, the projections of the distance. So a run is reproducible
 * from its seed whatever the batch size of the sampler or the thread count.
 *
 * Points are interleaved (x, y) pairs in float arrays of 2 n values.
 */
#ifndef DF_TOY_H
#define DF_TOY_H

#include <stddef.h>
#include <stdint.h>

#include "diffusion/sampler.h"
#include "diffusion/schedule.h"
#include "nn/graph.h"
#include "nn/optim.h"
#include "nn/params.h"

/* ---- datasets ---- */

typedef enum { DF_TOY_SWISSROLL, DF_TOY_MOONS, DF_TOY_8GAUSSIANS, DF_TOY_CHECKERBOARD, DF_TOY_COUNT } df_toy_data;

/* The dataset names, in enum order, as one comma-separated list for messages. */
#define DF_TOY_NAMES "swissroll, moons, 8gaussians, checkerboard"

/* Splits of a dataset's stream: the points training draws from, and held-out points it never sees. */
enum { DF_TOY_TRAIN = 0, DF_TOY_HELDOUT = 1 };

/* Parses a dataset name; an unknown name is a df_error that lists the valid ones. */
int df_toy_data_parse(df_toy_data *d, const char *name);
const char *df_toy_data_name(df_toy_data d);

/* xy (n points) = points first .. first + n - 1 of `split` of dataset d for seed. Point i is a pure function of
 * (seed, d, split, i). The definitions (each about zero mean and unit scale):
 *   swissroll:   sklearn's make_swiss_roll (t = 1.5 pi (1 + 2u), (t cos t, t sin t), noise 0.5) in the (x, z)
 *                plane, divided by 7 (per-coordinate standard deviation near 1);
 *   moons:       sklearn's make_moons (upper half circle, and the lower one shifted to (1, 0.5)), Gaussian
 *                noise 0.05, centred at (0.5, 0.25) and scaled by 1.5;
 *   8gaussians:  eight equally likely modes at radius 2, angles k pi / 4, standard deviation 0.15 each;
 *   checkerboard: uniform over the 8 unit squares (i, j) of [-2, 2]^2 with i + j even (floor coordinates). */
void df_toy_points(float *xy, size_t n, df_toy_data d, uint64_t seed, uint32_t split, uint64_t first);

/* ---- distances and the Gaussian baseline ---- */

/* Sliced Wasserstein-2 distance between point sets a (na) and b (nb): sqrt of the mean over nproj directions
 * of the squared 1-D Wasserstein-2 distance between the projections (exact for the two empirical
 * distributions, any na and nb, through their quantile functions). The directions are evenly spaced angles
 * k pi / nproj turned by one random angle from seed, so a set against itself gives 0, and b = a shifted by a
 * vector v gives |v| / sqrt(2) exactly (the mean of cos^2 over the directions is 1/2 for nproj >= 2). */
double df_sliced_w2(const float *a, size_t na, const float *b, size_t nb, int nproj, uint64_t seed);

/* The mean (2) and covariance (2 x 2, row-major, divided by n) of n points, accumulated in double. */
void df_gaussian_fit(double mean[2], double cov[4], const float *xy, size_t n);
/* xy (n points) = samples first .. first + n - 1 of N(mean, cov) for seed (through the Cholesky factor; a
 * singular cov is fine). */
void df_gaussian_points(float *xy, size_t n, const double mean[2], const double cov[4], uint64_t seed,
                        uint64_t first);

/* ---- the model: an MLP denoiser ---- */

/* Config: what the user chose. */
typedef struct {
    int hidden;   /* width of the hidden layers */
    int depth;    /* residual blocks after the input layer */
    int temb_dim; /* sinusoidal timestep embedding size (even) */
} df_toy_mlp_config;

/* Defaults: hidden 128, depth 3, temb_dim 32. */
void df_toy_mlp_defaults(df_toy_mlp_config *c);

/* Weights and state. The network, with PyTorch-style names:
 *   e = sinusoid(t, temb_dim)                       (diffusers' embedding, flip_sin_to_cos, shift 0)
 *   h = silu(input(concat(x, e)))                   input: (hidden, 2 + temb_dim)
 *   h = h + silu(blocks.i(concat(h, e)))            blocks.i: (hidden, hidden + temb_dim), i < depth
 *   out = output(h)                                 output: (2, hidden), epsilon prediction
 * `params` holds the trained weights (with gradients), `ema` their exponential moving average in the same
 * layout; inference graphs (sampling) read the EMA weights. */
typedef struct {
    df_toy_mlp_config cfg;
    df_params params, ema;
    df_graph train, infer; /* built on first use, rebuilt when the batch size changes */
    int have_train, have_infer;
    int x_train, t_train, x_infer, t_infer; /* input tensor ids */
} df_toy_mlp;

/* Registers the parameters and initialises them as torch.nn.Linear (uniform +-1/sqrt(fan_in)) from seed;
 * the EMA starts as a copy. A bad config is a df_error (-1). Free with df_toy_mlp_free. */
int df_toy_mlp_init(df_toy_mlp *m, const df_toy_mlp_config *c, uint64_t seed);
void df_toy_mlp_free(df_toy_mlp *m);

/* A df_model_fn on the EMA weights (ctx is the df_toy_mlp): out (B, 2) = network(x (B, 2), t (B)). */
void df_toy_mlp_fn(void *ctx, float *out, const float *x, const float *t, size_t B);

/* ---- training ---- */

typedef struct {
    df_toy_data data;
    int steps, batch;
    double lr;           /* Adam, constant after a 100-step linear warm-up */
    double ema_max_decay; /* diffusers' EMA warm-up form, power 3/4 */
    uint64_t seed;
} df_toy_train_config;

/* Defaults: swissroll, 6000 steps of batch 256, lr 4e-3, EMA decay up to 0.995, seed 0 (about 15 s on one
 * core; swissroll then samples as close to held-out data as a second held-out set is). */
void df_toy_train_defaults(df_toy_train_config *c);

/* Trains m on c->data: step k draws points k B .. k B + B - 1 of the training split, timesteps t ~ U{0..T-1}
 * and noise eps (streams DF_STREAM_T and DF_STREAM_EPS of step k), and takes one Adam step on the MSE between
 * eps and the network's output at x_t (the schedule must predict epsilon); then the EMA is updated. on_step
 * (may be NULL) is called after every step with the step number (1-based) and the loss. Returns the mean loss
 * of the last 100 steps, or NAN if a loss was not finite (training stops there). */
double df_toy_train(df_toy_mlp *m, const df_schedule *s, const df_toy_train_config *c,
                    void (*on_step)(void *ctx, int step, double loss), void *ctx);

#endif
