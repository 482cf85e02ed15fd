/* cmd_invert.c: the deterministic DDIM ODE both ways: `diffuse encode` (images -> x_T), `diffuse decode`
 * (x_T -> images, with the reconstruction error against the originals) and `diffuse interpolate`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/sampling.h"
#include "data/dataset.h"
#include "io/images_out.h"
#include "io/npy.h"

#define BAD(cmd, ...) (fprintf(stderr, "diffuse %s: ", cmd), fprintf(stderr, __VA_ARGS__), fprintf(stderr, "\n"), 1)

/* Loads the first n images (0: all) of a dataset spec at the model's size, as floats in [-1, 1]. */
static float *load_images(const char *spec, const char *data_dir, const cli_model *m, size_t *n, const char *cmd) {
    df_dataset d = {0};
    if (df_dataset_load(&d, spec, data_dir, (int)m->H, (int)m->C) ||
        df_dataset_check_model(&d, (int)m->C, (int)m->H)) {
        fprintf(stderr, "diffuse %s: %s\n", cmd, df_errmsg());
        df_dataset_free(&d);
        return NULL;
    }
    if (*n == 0 || *n > d.n) *n = d.n;
    float *x = df_malloc(*n * m->D * sizeof(float));
    for (size_t i = 0; i < *n * m->D; i++) x[i] = d.pixels[i] / 127.5f - 1.0f;
    df_dataset_free(&d);
    return x;
}

/* The decreasing sequence for S steps, or NULL (error printed). */
static int *sequence(const cli_model *m, int steps, const char *spacing, int *S, const char *cmd) {
    df_spacing sp;
    int *taus = df_malloc((size_t)(m->sched.T + 2) * sizeof(int));
    if (df_spacing_parse(&sp, spacing) ||
        (*S = df_timesteps(taus, m->sched.T + 2, steps, m->sched.T, sp, m->sched.steps_offset)) < 0) {
        fprintf(stderr, "diffuse %s: %s\n", cmd, df_errmsg());
        df_free(taus);
        return NULL;
    }
    return taus;
}

/* Runs N images through the model in batches with a progress bar: deterministic DDIM decoding, or (invert)
 * DDIM inversion. */
static void ode_all(float *x, size_t N, const cli_model *m, const int *taus, int S, int clip, int batch, int invert,
                    const char *label) {
    cli_steps_progress prog;
    size_t nb = (N + (size_t)batch - 1) / (size_t)batch;
    cli_progress_start(&prog, label, (uint64_t)nb * (uint64_t)S, (double)(N < (size_t)batch ? N : (size_t)batch) / S);
    df_sampler s = {.kind = DF_SAMPLER_DDIM, .eta = 0, .clip = clip, .taus = taus, .S = S,
                    .on_step = cli_progress_step, .step_ctx = &prog};
    for (size_t b0 = 0; b0 < N; b0 += (size_t)batch) {
        size_t B = N - b0 < (size_t)batch ? N - b0 : (size_t)batch;
        if (invert)
            df_ddim_invert(x + b0 * m->D, B, m->D, &m->sched, taus, S, cli_unet_fn, m->unet, cli_progress_step, &prog);
        else
            df_sample(x + b0 * m->D, B, m->D, &m->sched, &s, b0, cli_unet_fn, m->unet);
    }
    cli_progress_end(&prog);
}

int cmd_encode(int argc, char **argv) {
    const char *precision = "fp32";
    const char *model = NULL, *images = NULL, *data_dir = NULL, *out = NULL, *spacing = "leading";
    int steps = 50, n = 100, batch = 16, threads = 0;
    const df_flag flags[] = {
        {"model", FL_STRING, NULL, "the model folder (required)", &model},
        {"images", FL_STRING, NULL, "the images: a dataset name, image folder, IDX, CIFAR or .npy (required)", &images},
        {"data-dir", FL_STRING, NULL, "folder of the fashion-mnist / mnist IDX files", &data_dir},
        {"n", FL_INT, "100", "encode the first N images (0: all)", &n},
        {"steps", FL_INT, "50", "ODE steps S", &steps},
        {"spacing", FL_STRING, "leading", "timesteps: uniform, quad, leading, trailing, linspace", &spacing},
        {"batch", FL_INT, "16", "images per model call", &batch},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
        {"precision", FL_STRING, "fp32", "fp32, or bf16: BF16 products with FP32 sums (AMX / AVX-512 BF16 where the CPU has them)", &precision},
        {"out", FL_STRING, NULL, "latents z.npy (float32, N x C x H x W) (required)", &out},
    };
    const char *pos[1];
    int npos, rc = df_flags_parse(flags, (int)(sizeof flags / sizeof flags[0]), argc, argv,
                                  "usage: diffuse encode --model M --images D --steps S --out z.npy\n\n"
                                  "DDIM inversion: runs the deterministic DDIM ODE from the images x_0 to x_T.",
                                  pos, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    if (!model || !images || !out) return BAD("encode", "--model, --images and --out are required");
    size_t ol = strlen(out);
    if (ol < 4 || strcmp(out + ol - 4, ".npy")) return BAD("encode", "--out must be a .npy file, got '%s'", out);
    if (n < 0 || batch < 1 || steps < 1 || threads < 0) return BAD("encode", "--n >= 0, --batch >= 1, --steps >= 1");
    if (df_set_precision(precision)) return BAD("encode", "--precision: %s", df_errmsg());
    df_set_threads(threads);
    cli_model m;
    if (cli_load_model(&m, model, "encode")) return 1;
    size_t N = (size_t)n;
    int S;
    float *x = load_images(images, data_dir, &m, &N, "encode");
    int *taus = x ? sequence(&m, steps, spacing, &S, "encode") : NULL;
    if (!x || !taus) {
        df_free(x), df_free(taus);
        cli_free_model(&m);
        return 1;
    }
    ode_all(x, N, &m, taus, S, 0, batch, 1, "encode");
    size_t shape[4] = {N, m.C, m.H, m.W};
    if (df_npy_write_f32(out, x, 4, shape)) {
        fprintf(stderr, "diffuse encode: %s\n", df_errmsg());
        rc = 1;
    } else {
        printf("encoded %zu images with %d DDIM steps: %s\n", N, S, out);
    }
    df_free(x), df_free(taus);
    cli_free_model(&m);
    return rc;
}

int cmd_decode(int argc, char **argv) {
    const char *precision = "fp32";
    const char *model = NULL, *latents = NULL, *out = NULL, *spacing = "leading", *ref = NULL, *data_dir = NULL;
    const char *clip = "false";
    int steps = 50, batch = 16, threads = 0;
    const df_flag flags[] = {
        {"model", FL_STRING, NULL, "the model folder (required)", &model},
        {"latents", FL_STRING, NULL, "latents z.npy from encode (float32, N x C x H x W) (required)", &latents},
        {"steps", FL_INT, "50", "ODE steps S", &steps},
        {"spacing", FL_STRING, "leading", "timesteps: uniform, quad, leading, trailing, linspace", &spacing},
        {"clip-sample", FL_STRING, "false", "clip predicted x0: auto (the scheduler's), true, false", &clip},
        {"reference", FL_STRING, NULL, "the original images: print the reconstruction error against them", &ref},
        {"data-dir", FL_STRING, NULL, "folder of the fashion-mnist / mnist IDX files", &data_dir},
        {"batch", FL_INT, "16", "images per model call", &batch},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
        {"precision", FL_STRING, "fp32", "fp32, or bf16: BF16 products with FP32 sums (AMX / AVX-512 BF16 where the CPU has them)", &precision},
        {"out", FL_STRING, NULL, "grid.png, DIR/ or x.npy (required)", &out},
    };
    const char *pos[1];
    int npos, rc = df_flags_parse(flags, (int)(sizeof flags / sizeof flags[0]), argc, argv,
                                  "usage: diffuse decode --model M --latents z.npy --steps S --out OUT [--reference D]\n\n"
                                  "Runs deterministic DDIM from the latents x_T down to images. With --reference, prints\n"
                                  "the per-dimension mean squared error against the originals, in [0, 1] (the DDIM paper's "
                                  "Table 2).",
                                  pos, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    if (!model || !latents || !out) return BAD("decode", "--model, --latents and --out are required");
    if (df_check_images_path(out)) return BAD("decode", "%s", df_errmsg());
    if (batch < 1 || steps < 1 || threads < 0) return BAD("decode", "--batch >= 1, --steps >= 1");
    if (df_set_precision(precision)) return BAD("decode", "--precision: %s", df_errmsg());
    df_set_threads(threads);
    cli_model m;
    if (cli_load_model(&m, model, "decode")) return 1;
    int do_clip;
    df_npy z = {0};
    if (cli_clip(clip, m.sched.clip_sample, &do_clip)) rc = BAD("decode", "%s", df_errmsg());
    else if (df_npy_read(latents, &z)) rc = BAD("decode", "%s", df_errmsg());
    else if (z.dtype != DF_NPY_F4 || z.ndim != 4 || z.shape[1] != m.C || z.shape[2] != m.H || z.shape[3] != m.W)
        rc = BAD("decode", "%s must be float32 N x %zu x %zu x %zu for this model (from diffuse encode)", latents, m.C,
                 m.H, m.W);
    int S = 0, *taus = rc ? NULL : sequence(&m, steps, spacing, &S, "decode");
    if (!rc && !taus) rc = 1;
    size_t N = rc ? 0 : z.shape[0];
    float *x = NULL, *orig = NULL;
    if (!rc && ref) {
        size_t nr = N;
        orig = load_images(ref, data_dir, &m, &nr, "decode");
        if (!orig) rc = 1;
        else if (nr < N) rc = BAD("decode", "--reference has %zu images for %zu latents", nr, N);
    }
    if (!rc) {
        x = df_malloc(N * m.D * sizeof(float));
        memcpy(x, z.data, N * m.D * sizeof(float));
        ode_all(x, N, &m, taus, S, do_clip, batch, 0, "decode");
        if (df_write_images(out, x, N, m.C, m.H, m.W, 0)) rc = BAD("decode", "%s", df_errmsg());
        else printf("decoded %zu latents with %d DDIM steps: %s\n", N, S, out);
    }
    if (!rc && orig) { /* per-dimension MSE with images in [0, 1] */
        double se = 0;
        for (size_t i = 0; i < N * m.D; i++) {
            double a = fmin(fmax((x[i] + 1) / 2, 0), 1), b = (orig[i] + 1) / 2;
            se += (a - b) * (a - b);
        }
        printf("reconstruction error: %.6f (per-dimension mean squared error in [0, 1], %zu images, S = %d)\n",
               se / (double)(N * m.D), N, S);
    }
    df_free(x), df_free(orig), df_free(taus);
    df_npy_free(&z);
    cli_free_model(&m);
    return rc;
}

int cmd_interpolate(int argc, char **argv) {
    const char *precision = "fp32";
    const char *model = NULL, *out = NULL, *spacing = "leading", *clip = "auto";
    int seed_a = 0, seed_b = 1, frames = 11, steps = 50, batch = 16, threads = 0;
    const df_flag flags[] = {
        {"model", FL_STRING, NULL, "the model folder (required)", &model},
        {"seed-a", FL_INT, "0", "seed of the first noise", &seed_a},
        {"seed-b", FL_INT, "1", "seed of the second noise", &seed_b},
        {"frames", FL_INT, "11", "interpolation frames, ends included", &frames},
        {"steps", FL_INT, "50", "DDIM steps S", &steps},
        {"spacing", FL_STRING, "leading", "timesteps: uniform, quad, leading, trailing, linspace", &spacing},
        {"clip-sample", FL_STRING, "auto", "clip predicted x0: auto (the scheduler's), true, false", &clip},
        {"batch", FL_INT, "16", "images per model call", &batch},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
        {"precision", FL_STRING, "fp32", "fp32, or bf16: BF16 products with FP32 sums (AMX / AVX-512 BF16 where the CPU has them)", &precision},
        {"out", FL_STRING, NULL, "strip.png (one row), DIR/ or x.npy (required)", &out},
    };
    const char *pos[1];
    int npos, rc = df_flags_parse(flags, (int)(sizeof flags / sizeof flags[0]), argc, argv,
                                  "usage: diffuse interpolate --model M --seed-a A --seed-b B --frames 11 --out strip.png\n\n"
                                  "Decodes (deterministic DDIM) spherical interpolations between the x_T noises of two "
                                  "seeds\n(image 0 of each seed, as diffuse sample draws them).",
                                  pos, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    if (!model || !out) return BAD("interpolate", "--model and --out are required");
    if (df_check_images_path(out)) return BAD("interpolate", "%s", df_errmsg());
    if (frames < 2 || frames > 1000) return BAD("interpolate", "--frames must be in 2..1000, got %d", frames);
    if (seed_a < 0 || seed_b < 0 || batch < 1 || steps < 1 || threads < 0)
        return BAD("interpolate", "seeds >= 0, --batch >= 1, --steps >= 1");
    if (df_set_precision(precision)) return BAD("interpolate", "--precision: %s", df_errmsg());
    df_set_threads(threads);
    cli_model m;
    if (cli_load_model(&m, model, "interpolate")) return 1;
    int do_clip, S = 0, *taus = NULL;
    if (cli_clip(clip, m.sched.clip_sample, &do_clip)) rc = BAD("interpolate", "%s", df_errmsg());
    else if (!(taus = sequence(&m, steps, spacing, &S, "interpolate"))) rc = 1;
    if (!rc) {
        size_t N = (size_t)frames, D = m.D;
        float *za = df_malloc(D * sizeof(float)), *zb = df_malloc(D * sizeof(float));
        float *x = df_malloc(N * D * sizeof(float));
        df_initial_noise(za, 1, D, (uint64_t)seed_a, 0);
        df_initial_noise(zb, 1, D, (uint64_t)seed_b, 0);
        for (size_t k = 0; k < N; k++) df_slerp(x + k * D, za, zb, D, (double)k / (double)(N - 1));
        ode_all(x, N, &m, taus, S, do_clip, batch, 0, "interpolate");
        if (df_write_images(out, x, N, m.C, m.H, m.W, N)) rc = BAD("interpolate", "%s", df_errmsg());
        else printf("%d frames from seed %d to seed %d (DDIM, %d steps): %s\n", frames, seed_a, seed_b, S, out);
        df_free(za), df_free(zb), df_free(x);
    }
    df_free(taus);
    cli_free_model(&m);
    return rc;
}
