/* cmd_toy.c: `diffuse toy --data NAME`: trains the MLP denoiser of train/toy.h on a 2-D toy dataset, draws the
 * forward and reverse processes, and reports the sliced Wasserstein-2 distance of its samples to held-out
 * points beside that of a Gaussian fitted to the data (and of a second held-out set: the floor that N points
 * allow). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/progress.h"
#include "base/rng.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "io/file.h"
#include "io/scatter.h"
#include "train/toy.h"

static const char usage[] =
    "usage: diffuse toy --data swissroll|moons|8gaussians|checkerboard [--out DIR] [--steps N] [--sampler ddpm|ddim]\n\n"
    "Trains a small MLP denoiser (epsilon prediction, sinusoidal timestep embedding, EMA weights) on 2-D points,\n"
    "then samples N points and prints the sliced Wasserstein-2 distance to N held-out points, beside the same\n"
    "distance for a Gaussian fitted to the data. Writes DIR/forward.png (data at 10 noise levels),\n"
    "DIR/reverse.png (10 steps of sampling, each point coloured by where it ends) and DIR/samples.png\n"
    "(held-out data | samples | fitted Gaussian). Everything is a function of --seed.";

#define FRAMES 10         /* panels of the forward and reverse figures */
#define FIG_POINTS 2000   /* the most points a figure shows */
#define NPROJ 256         /* sliced Wasserstein directions */
#define FIT_POINTS 100000 /* training points the Gaussian baseline is fitted to */

/* ---- progress ---- */

typedef struct {
    df_progress bar;
    double ema; /* smoothed loss */
    int batch;
} train_progress;

static void on_train_step(void *ctx, int step, double loss) {
    train_progress *p = ctx;
    p->ema = step == 1 ? loss : 0.98 * p->ema + 0.02 * loss;
    char status[48];
    snprintf(status, sizeof status, "loss %.4f", p->ema);
    df_progress_update(&p->bar, (uint64_t)step, (double)step * p->batch, status);
}

static void on_sample_step(void *ctx, int i, int S) {
    char status[48];
    snprintf(status, sizeof status, "step %d/%d", i, S);
    df_progress_update(ctx, (uint64_t)i, i, status);
}

/* ---- figures ---- */

/* The forward process: the first n held-out points x0 at FRAMES timesteps evenly spaced over 0..T-1, with
 * one noise draw per point (so each point's path is continuous), coloured by where it starts. */
static int forward_figure(const char *path, const float *x0, size_t n, const df_schedule *s, uint64_t seed,
                          double lim, const char *title) {
    float *eps = df_malloc(2 * n * sizeof(float)), *xt = df_malloc(FRAMES * 2 * n * sizeof(float));
    int *t = df_malloc(n * sizeof(int));
    unsigned char *rgb = df_malloc(3 * n);
    char titles[FRAMES][32];
    df_scatter_panel p[FRAMES];
    df_rng_normal(eps, 2 * n, seed, df_stream(DF_STREAM_TOY_FWD, 0, 0), 0);
    df_scatter_hue(rgb, x0, n);
    for (int k = 0; k < FRAMES; k++) {
        int tk = (int)lround((double)k * (s->T - 1) / (FRAMES - 1));
        for (size_t i = 0; i < n; i++) t[i] = tk;
        df_q_sample(xt + (size_t)k * 2 * n, x0, eps, t, s, n, 2);
        snprintf(titles[k], sizeof titles[k], "t = %d", tk);
        p[k] = (df_scatter_panel){xt + (size_t)k * 2 * n, n, rgb, titles[k]};
    }
    int rc = df_scatter_png(path, p, FRAMES, lim, 200, title);
    df_free(eps), df_free(xt), df_free(t), df_free(rgb);
    return rc;
}

/* ---- the command ---- */

int cmd_toy(int argc, char **argv) {
    const char *data = NULL, *out = NULL, *sampler = "ddpm", *schedule = "linear";
    int steps = 6000, batch = 256, seed = 0, sample_steps = 0, n = 2000, threads = 0, T = 1000;
    double lr = 4e-3;
    const df_flag flags[] = {
        {"data", FL_STRING, NULL, "the dataset: " DF_TOY_NAMES " (required)", &data},
        {"out", FL_STRING, NULL, "the folder for the figures (default: runs/toy-DATA)", &out},
        {"steps", FL_INT, "6000", "training steps", &steps},
        {"batch", FL_INT, "256", "points per training step", &batch},
        {"lr", FL_FLOAT, "4e-3", "Adam learning rate (after a 100-step linear warm-up)", &lr},
        {"seed", FL_INT, "0", "seed of everything random: data, initialisation, noise, projections", &seed},
        {"schedule", FL_STRING, "linear", "beta schedule: linear (1e-4..0.02) or cosine", &schedule},
        {"timesteps", FL_INT, "1000", "diffusion timesteps T", &T},
        {"sampler", FL_STRING, "ddpm", "ddpm (ancestral) or ddim (eta 0, deterministic)", &sampler},
        {"sample-steps", FL_INT, "0", "sampling steps (0: all T for DDPM, 50 for DDIM)", &sample_steps},
        {"n", FL_INT, "2000", "points to sample (and held-out points to compare with)", &n},
        {"threads", FL_INT, "0", "threads for the figures (the MLP itself always runs on one: it is too small to share)", &threads},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]), npos;
    const char *pos[1];
    int rc = df_flags_parse(flags, nflags, argc, argv, usage, pos, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
#define BAD(...) (fprintf(stderr, "diffuse toy: " __VA_ARGS__), fprintf(stderr, "\n"), 1)
    df_toy_data d;
    if (!data) return BAD("--data is required (one of %s)", DF_TOY_NAMES);
    if (df_toy_data_parse(&d, data)) return BAD("--data: %s", df_errmsg());
    if (steps < 1) return BAD("--steps must be at least 1, got %d", steps);
    if (batch < 1 || batch > 1000000) return BAD("--batch must be in 1..1000000, got %d", batch);
    if (!(lr > 0 && lr < 1)) return BAD("--lr must be in (0, 1), got %g", lr);
    if (seed < 0) return BAD("--seed must be >= 0, got %d", seed);
    if (T < 2 || T > 100000) return BAD("--timesteps must be in 2..100000, got %d", T);
    if (n < 2 || n > 100000) return BAD("--n must be in 2..100000, got %d", n);
    if (threads < 0) return BAD("--threads must be >= 0, got %d", threads);
    df_sampler_kind kind;
    if (!strcmp(sampler, "ddpm")) kind = DF_SAMPLER_DDPM;
    else if (!strcmp(sampler, "ddim")) kind = DF_SAMPLER_DDIM;
    else return BAD("--sampler must be ddpm or ddim, got '%s'", sampler);
    if (sample_steps == 0) sample_steps = kind == DF_SAMPLER_DDPM ? T : (T < 50 ? T : 50);
    if (sample_steps < 1 || sample_steps > T) return BAD("--sample-steps must be in 1..T (%d), got %d", T, sample_steps);
    if (strcmp(schedule, "linear") && strcmp(schedule, "cosine"))
        return BAD("--schedule must be linear or cosine, got '%s'", schedule);
    char dir[4096];
    if (out) snprintf(dir, sizeof dir, "%s", out);
    else snprintf(dir, sizeof dir, "runs/toy-%s", data);
    if (df_mkdirs(dir)) return BAD("--out: %s", df_errmsg());
    df_set_threads(threads);

    /* ---- the schedule and the model ---- */
    df_schedule s;
    df_schedule_defaults(&s);
    /* predicted x0 clipped to +-4 (the data lie within +-3): harmless, and it keeps DDIM's first step stable on
     * the cosine schedule, whose last abar is ~1e-9 (beta capped at 0.999), where x0 = (x - ...) / sqrt(abar) */
    s.T = T, s.clip_sample = 1, s.clip_sample_range = 4.0;
    snprintf(s.beta_schedule, sizeof s.beta_schedule, "%s", strcmp(schedule, "cosine") ? "linear" : "squaredcos_cap_v2");
    snprintf(s.timestep_spacing, sizeof s.timestep_spacing, "trailing");
    if (df_schedule_init(&s)) return BAD("schedule: %s", df_errmsg());
    df_toy_mlp_config mc;
    df_toy_mlp_defaults(&mc);
    df_toy_mlp m;
    if (df_toy_mlp_init(&m, &mc, (uint64_t)seed)) {
        df_schedule_free(&s);
        return BAD("%s", df_errmsg());
    }
    df_toy_train_config tc;
    df_toy_train_defaults(&tc);
    tc.data = d, tc.steps = steps, tc.batch = batch, tc.lr = lr, tc.seed = (uint64_t)seed;

    /* ---- training ---- */
    printf("%s: MLP %d x %d (%zu parameters), %s schedule T = %d, %d steps of batch %d\n", data, mc.hidden,
           mc.depth, m.params.total, schedule, T, steps, batch);
    fflush(stdout);
    train_progress tp = {.batch = batch};
    df_progress_init(&tp.bar, "train", (uint64_t)steps, 0, "pt");
    double t0 = df_time(), final_loss = df_toy_train(&m, &s, &tc, on_train_step, &tp);
    char status[48];
    snprintf(status, sizeof status, "loss %.4f", final_loss);
    df_progress_end(&tp.bar, (uint64_t)steps, (double)steps * batch, status);
    double train_s = df_time() - t0;
    if (!isfinite(final_loss)) {
        df_toy_mlp_free(&m), df_schedule_free(&s);
        return BAD("the loss is not finite (try a smaller --lr)");
    }

    /* ---- sampling, recording FRAMES - 1 states after evenly spaced steps ---- */
    size_t N = (size_t)n, fn = N < FIG_POINTS ? N : FIG_POINTS;
    int *taus = df_malloc((size_t)(T + 2) * sizeof(int));
    int S = df_timesteps(taus, T + 2, sample_steps, T, DF_SPACING_TRAILING, 0);
    DF_CHECK(S >= 1, "timesteps: %s", df_errmsg());
    int F = S + 1 < FRAMES ? S + 1 : FRAMES, *rec = df_malloc((size_t)S * sizeof(int)), at[FRAMES];
    for (int i = 0; i < S; i++) rec[i] = -1;
    for (int k = 1; k < F; k++) {
        at[k] = (int)lround((double)k * S / (F - 1)) - 1;
        rec[at[k]] = k - 1;
    }
    float *x = df_malloc(2 * N * sizeof(float)), *traj = df_malloc((size_t)F * 2 * N * sizeof(float));
    df_initial_noise(x, N, 2, (uint64_t)seed, 0);
    memcpy(traj, x, 2 * N * sizeof(float)); /* frame 0: the noise; frames 1..F-1 after the recorded steps */
    df_progress sbar;
    df_progress_init(&sbar, "sample", (uint64_t)S, 0, "step");
    df_sampler sp = {.kind = kind, .clip = s.clip_sample, .taus = taus, .S = S, .seed = (uint64_t)seed, .record = rec,
                     .traj = traj + 2 * N, .on_step = on_sample_step, .step_ctx = &sbar};
    t0 = df_time();
    df_sample(x, N, 2, &s, &sp, 0, df_toy_mlp_fn, &m);
    df_progress_end(&sbar, (uint64_t)S, S, "done");
    double sample_s = df_time() - t0;

    /* ---- distances ---- */
    float *held = df_malloc(2 * N * sizeof(float)), *held2 = df_malloc(2 * N * sizeof(float));
    float *gauss = df_malloc(2 * N * sizeof(float)), *fit = df_malloc(2 * (size_t)FIT_POINTS * sizeof(float));
    df_toy_points(held, N, d, (uint64_t)seed, DF_TOY_HELDOUT, 0);
    df_toy_points(held2, N, d, (uint64_t)seed, DF_TOY_HELDOUT, N);
    df_toy_points(fit, FIT_POINTS, d, (uint64_t)seed, DF_TOY_TRAIN, 0);
    double mean[2], cov[4];
    df_gaussian_fit(mean, cov, fit, FIT_POINTS);
    df_gaussian_points(gauss, N, mean, cov, (uint64_t)seed, 0);
    double sw_model = df_sliced_w2(x, N, held, N, NPROJ, (uint64_t)seed);
    double sw_gauss = df_sliced_w2(gauss, N, held, N, NPROJ, (uint64_t)seed);
    double sw_floor = df_sliced_w2(held2, N, held, N, NPROJ, (uint64_t)seed);

    /* ---- figures: one axis range for all, covering the data and most of the noise ---- */
    double lim = 3.5;
    for (size_t i = 0; i < 2 * N; i++)
        if (fabs(held[i]) * 1.1 > lim) lim = fabs(held[i]) * 1.1;
    char path[4200], title[200];
    snprintf(path, sizeof path, "%s/forward.png", dir);
    snprintf(title, sizeof title, "forward process q(x_t | x_0): %s, %zu held-out points, coloured by x_0", data, fn);
    rc = forward_figure(path, held, fn, &s, (uint64_t)seed, lim, title);

    unsigned char *rgb = df_malloc(3 * fn);
    df_scatter_hue(rgb, x, fn); /* each sample coloured by where it ends */
    float *frames = df_malloc((size_t)F * 2 * fn * sizeof(float));
    df_scatter_panel p[FRAMES];
    char titles[FRAMES][32];
    for (int k = 0; k < F; k++) {
        memcpy(frames + (size_t)k * 2 * fn, traj + (size_t)k * 2 * N, 2 * fn * sizeof(float));
        int tk = k == 0 ? taus[0] : at[k] + 1 < S ? taus[at[k] + 1] : 0; /* x's timestep after the step */
        snprintf(titles[k], sizeof titles[k], k == F - 1 ? "sample" : "t = %d", tk);
        p[k] = (df_scatter_panel){frames + (size_t)k * 2 * fn, fn, rgb, titles[k]};
    }
    snprintf(path, sizeof path, "%s/reverse.png", dir);
    snprintf(title, sizeof title, "reverse process (%s, %d steps): %zu samples, coloured by where they end",
             sampler, S, fn);
    if (rc == 0) rc = df_scatter_png(path, p, (size_t)F, lim, 200, title);

    char t1[64], t2[64], t3[64];
    snprintf(t1, sizeof t1, "held-out data");
    snprintf(t2, sizeof t2, "model: SW2 %.3f", sw_model);
    snprintf(t3, sizeof t3, "Gaussian: SW2 %.3f", sw_gauss);
    df_scatter_panel cmp[3] = {{held, fn, NULL, t1}, {x, fn, NULL, t2}, {gauss, fn, NULL, t3}};
    snprintf(path, sizeof path, "%s/samples.png", dir);
    snprintf(title, sizeof title, "%s: sliced W2 to %zu held-out points", data, N);
    if (rc == 0) rc = df_scatter_png(path, cmp, 3, lim, 300, title);
    if (rc) fprintf(stderr, "diffuse toy: %s\n", df_errmsg());

    if (rc == 0) {
        printf("trained in %.1f s (final loss %.4f); sampled %zu points (%s, %d steps) in %.1f s\n", train_s,
               final_loss, N, sampler, S, sample_s);
        printf("sliced Wasserstein-2: model %.3f, fitted Gaussian %.3f, second held-out set %.3f (%zu points each)\n",
               sw_model, sw_gauss, sw_floor, N);
        printf("figures: %s/forward.png %s/reverse.png %s/samples.png\n", dir, dir, dir);
    }
    df_free(taus), df_free(rec), df_free(x), df_free(traj), df_free(held), df_free(held2), df_free(gauss);
    df_free(fit), df_free(rgb), df_free(frames);
    df_toy_mlp_free(&m);
    df_schedule_free(&s);
    return rc ? 1 : 0;
#undef BAD
}
