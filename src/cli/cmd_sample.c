/* cmd_sample.c: `diffuse sample`: DDPM or DDIM sampling from a model folder into a grid, folder or .npy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/sampling.h"
#include "io/image.h"
#include "io/images_out.h"
#include "eval/fid_features.h"

static const char usage[] =
    "usage: diffuse sample --model RUN [--sampler ddim|ddpm] [--steps S] [--eta E] [--n N] [--seed K] --out OUT\n\n"
    "Samples N images from a run folder or diffusers UNet2DModel/pipeline folder. DDPM is Ho et al.'s\n"
    "ancestral sampler (variance from the scheduler config); DDIM is Song et al.'s eq. 12 over S of the T\n"
    "steps (eta = 0: deterministic). OUT: grid.png, DIR/ (one PNG per image) or x.npy (uint8).\n"
    "Image i of seed K is the same whatever --batch and --threads are. --fid REF then reports the FID of the\n"
    "N images (as 8-bit pixels) against REF (e.g. fashion-mnist; see diffuse fid --help).";

int cmd_sample(int argc, char **argv) {
    const char *precision = "fp32";
    const char *model = NULL, *sampler = "ddim", *spacing = "leading", *out = NULL, *clip = "auto";
    const char *traj = NULL, *traj_x0 = NULL, *fid_ref = NULL, *fid_net = NULL;
    int steps = 0, n = 16, seed = 0, batch = 16, threads = 0, sigma_hat = 0, traj_n = 8, first = 0;
    double eta = 0;
    const df_flag flags[] = {
        {"model", FL_STRING, NULL, "the model folder (required)", &model},
        {"sampler", FL_STRING, "ddim", "ddim or ddpm", &sampler},
        {"steps", FL_INT, "0", "sampling steps S (0: 50 for DDIM, all T for DDPM)", &steps},
        {"eta", FL_FLOAT, "0", "DDIM eta in [0, 1] (0: deterministic, 1: DDPM-like)", &eta},
        {"sigma-hat", FL_BOOL, "0", "DDIM paper's sigma-hat: ancestral steps with the respaced beta as variance", &sigma_hat},
        {"spacing", FL_STRING, "leading", "timesteps: uniform, quad (DDIM code), leading, trailing, linspace (diffusers)", &spacing},
        {"clip-sample", FL_STRING, "auto", "clip predicted x0 to [-1, 1]: auto (the scheduler config), true, false", &clip},
        {"n", FL_INT, "16", "number of images", &n},
        {"seed", FL_INT, "0", "seed: image i of seed K is fixed", &seed},
        {"first", FL_INT, "0", "make images FIRST .. FIRST+N-1 of the seed (a DIR/ output numbers them so)", &first},
        {"batch", FL_INT, "16", "images per model call (does not change the images)", &batch},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
        {"precision", FL_STRING, "fp32", "fp32, or bf16: BF16 products with FP32 sums (AMX / AVX-512 BF16 where the CPU has them)", &precision},
        {"out", FL_STRING, NULL, "grid.png, DIR/ or x.npy (required unless --fid is given)", &out},
        {"fid", FL_STRING, NULL, "report the FID of the samples against this source (fashion-mnist, stats.npz, ...)", &fid_ref},
        {"fid-features", FL_STRING, NULL, "the FID feature network (default: models/fid-fashion-mnist)", &fid_net},
        {"trajectory", FL_STRING, NULL, "also draw x at 10 evenly spaced steps of the chain (PNG)", &traj},
        {"trajectory-x0", FL_STRING, NULL, "also draw the predicted x0 at those steps (PNG)", &traj_x0},
        {"trajectory-n", FL_INT, "8", "how many samples the trajectory figures show", &traj_n},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]), npos;
    const char *pos[1];
    int rc = df_flags_parse(flags, nflags, argc, argv, usage, pos, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
#define BAD(...) (fprintf(stderr, "diffuse sample: " __VA_ARGS__), fprintf(stderr, "\n"), 1)
    if (!model) return BAD("--model is required (a run folder or diffusers model folder)");
    if (!out && !fid_ref) return BAD("--out is required (grid.png, DIR/ or x.npy), unless --fid is given");
    if (out && df_check_images_path(out)) return BAD("%s", df_errmsg());
    if (traj && df_check_images_path(traj)) return BAD("--trajectory: %s", df_errmsg());
    if (traj_x0 && df_check_images_path(traj_x0)) return BAD("--trajectory-x0: %s", df_errmsg());
    df_sampler_kind kind;
    if (!strcmp(sampler, "ddim")) kind = DF_SAMPLER_DDIM;
    else if (!strcmp(sampler, "ddpm")) kind = DF_SAMPLER_DDPM;
    else return BAD("--sampler must be ddim or ddpm, got '%s'", sampler);
    if (!(eta >= 0 && eta <= 1)) return BAD("--eta must be in [0, 1], got %g", eta);
    if (kind == DF_SAMPLER_DDPM && (eta != 0 || sigma_hat)) return BAD("--eta and --sigma-hat are DDIM options");
    if (n < 1 || n > 1000000) return BAD("--n must be in 1..1000000, got %d", n);
    if (batch < 1) return BAD("--batch must be at least 1, got %d", batch);
    if (seed < 0 || threads < 0 || steps < 0 || first < 0)
        return BAD("--seed, --first, --threads and --steps must be >= 0");
    if (traj_n < 1 || traj_n > 64) return BAD("--trajectory-n must be in 1..64");
    df_spacing sp;
    if (df_spacing_parse(&sp, spacing)) return BAD("--spacing: %s", df_errmsg());
    if (df_set_precision(precision)) return BAD("--precision: %s", df_errmsg());
    df_set_threads(threads);

    cli_model m;
    if (cli_load_model(&m, model, "sample")) return 1;
    int do_clip;
    if (cli_clip(clip, m.sched.clip_sample, &do_clip)) {
        cli_free_model(&m);
        return BAD("%s", df_errmsg());
    }
    int T = m.sched.T;
    if (steps == 0) steps = kind == DF_SAMPLER_DDPM ? T : 50;
    int *taus = df_malloc((size_t)(T + 2) * sizeof(int));
    int S = df_timesteps(taus, T + 2, steps, T, sp, m.sched.steps_offset);
    if (S < 0) {
        df_free(taus);
        cli_free_model(&m);
        return BAD("--steps/--spacing: %s", df_errmsg());
    }
    cli_fid fid;
    if (fid_ref && cli_fid_prepare(&fid, fid_ref, fid_net, m.C, m.H, m.W, "sample")) {
        df_free(taus);
        cli_free_model(&m);
        return 1;
    }

    /* the trajectory: 10 evenly spaced steps of the first batch */
    int *rec = NULL, frames = 10;
    size_t tn = (size_t)(traj_n < n ? traj_n : n);
    if (tn > (size_t)batch) tn = (size_t)batch;
    if (traj || traj_x0) {
        rec = df_malloc((size_t)S * sizeof(int));
        for (int i = 0; i < S; i++) rec[i] = -1;
        if (S < frames) frames = S;
        for (int k = 0; k < frames; k++) rec[frames > 1 ? (int)((double)k * (S - 1) / (frames - 1) + 0.5) : S - 1] = k;
    }

    size_t N = (size_t)n, D = m.D;
    float *x = df_malloc(N * D * sizeof(float));
    cli_steps_progress prog;
    size_t nb = (N + (size_t)batch - 1) / (size_t)batch;
    cli_progress_start(&prog, "sample", (uint64_t)nb * (uint64_t)S, (double)(N < (size_t)batch ? N : (size_t)batch) / S);
    double t0 = df_time();
    for (size_t b0 = 0; b0 < N; b0 += (size_t)batch) {
        size_t B = N - b0 < (size_t)batch ? N - b0 : (size_t)batch;
        df_initial_noise(x + b0 * D, B, D, (uint64_t)seed, (uint64_t)first + b0);
        df_sampler s = {.kind = kind, .eta = eta, .sigma_hat = sigma_hat, .clip = do_clip, .taus = taus, .S = S,
                        .seed = (uint64_t)seed, .on_step = cli_progress_step, .step_ctx = &prog};
        int first_batch = b0 == 0 && rec; /* the trajectories show the first batch's first samples */
        if (first_batch) {
            s.record = rec;
            if (traj) s.traj = df_malloc((size_t)frames * B * D * sizeof(float));
            if (traj_x0) s.traj_x0 = df_malloc((size_t)frames * B * D * sizeof(float));
        }
        df_sample(x + b0 * D, B, D, &m.sched, &s, (uint64_t)first + b0, cli_unet_fn, m.unet);
        if (first_batch) { /* rows: samples, columns: the frames */
            const char *paths[2] = {traj, traj_x0};
            float *bufs[2] = {s.traj, s.traj_x0};
            float *grid = df_malloc((size_t)frames * tn * D * sizeof(float));
            for (int q = 0; q < 2; q++) {
                if (!paths[q]) continue;
                for (size_t j = 0; j < tn; j++)
                    for (int k = 0; k < frames; k++)
                        memcpy(grid + (j * (size_t)frames + (size_t)k) * D, bufs[q] + ((size_t)k * B + j) * D,
                               D * sizeof(float));
                if (df_write_grid(paths[q], grid, tn * (size_t)frames, m.C, m.H, m.W, (size_t)frames)) {
                    fprintf(stderr, "diffuse sample: %s\n", df_errmsg());
                    rc = 1;
                }
            }
            df_free(grid), df_free(s.traj), df_free(s.traj_x0);
        }
    }
    cli_progress_end(&prog);
    double dt = df_time() - t0;
    if (rc == 0 && out && df_write_images_from(out, x, N, m.C, m.H, m.W, 0, (size_t)first)) {
        fprintf(stderr, "diffuse sample: %s\n", df_errmsg());
        rc = 1;
    }
    if (rc == 0) {
        char how[32] = "";
        if (kind == DF_SAMPLER_DDIM) snprintf(how, sizeof how, sigma_hat ? " sigma-hat" : " eta %g", eta);
        printf("%d images, %s %d steps%s, in %.1f s (%.2f images/s): %s\n", n, sampler, S, how, dt, N / dt,
               out ? out : "(not saved)");
        if (traj) printf("trajectory: %s\n", traj);
        if (traj_x0) printf("predicted-x0 trajectory: %s\n", traj_x0);
    }
    if (rc == 0 && fid_ref) rc = cli_fid_report(&fid, x, N, "sample");
    if (fid_ref) cli_fid_free(&fid);
    df_free(x), df_free(taus), df_free(rec);
    cli_free_model(&m);
    return rc;
#undef BAD
}
