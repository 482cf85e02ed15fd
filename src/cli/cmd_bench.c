/* cmd_bench.c: `diffuse bench`: throughput of a model's forward (sampling) or training step, and the
 * machine's measured GEMM peak for reference. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "base/base.h"
#include "base/rng.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "diffuse.h"
#include "kernels/kernels.h"
#include "nn/unet.h"
#include "train/train.h"

/* Best-of-reps seconds of fn over the model. */
static double best_time(void (*fn)(void *), void *ctx, int reps, double *median) {
    double t[64], best = 1e30;
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps; r++) {
        double t0 = df_time();
        fn(ctx);
        t[r] = df_time() - t0;
        if (t[r] < best) best = t[r];
    }
    for (int i = 1; i < reps; i++) /* insertion sort for the median */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    *median = t[reps / 2];
    return best;
}

typedef struct {
    df_unet *m;
    size_t B, D;
    float *x, *y, *t, *eps;
    int *ti;
    df_adam adam;
    df_schedule s;
    df_step_work w;
} bench_ctx;

static void run_forward(void *p) {
    bench_ctx *c = p;
    df_unet_forward(c->m, c->y, c->x, c->t, c->B);
}

static void run_train(void *p) {
    bench_ctx *c = p;
    double gn;
    df_train_step(c->m, &c->adam, &c->s, 0, 1.0, 1e-4, c->x, c->ti, c->eps, c->B, &gn, &c->w);
}

static size_t N_gemm = 1024;
static float *gA, *gB, *gC;
static void run_gemm(void *p) {
    (void)p;
    gemm(0, 0, N_gemm, N_gemm, N_gemm, 1.0f, gA, N_gemm, gB, N_gemm, 0.0f, gC, N_gemm);
}

/* The machine's SGEMM peak as diffuse measures it (1024^3, best of 5), in GFLOP/s. */
static double gemm_peak(void) {
    size_t n = N_gemm * N_gemm;
    gA = df_malloc(n * 4), gB = df_malloc(n * 4), gC = df_malloc(n * 4);
    df_rng_uniform(gA, n, 1, 1, 0);
    df_rng_uniform(gB, n, 1, 2, 0);
    run_gemm(NULL);
    double med, t = best_time(run_gemm, NULL, 5, &med);
    df_free(gA), df_free(gB), df_free(gC);
    return 2.0 * (double)N_gemm * N_gemm * N_gemm / t / 1e9;
}

int cmd_bench(int argc, char **argv) {
    const char *precision = "fp32";
    const char *preset = "fmnist-s", *model = NULL;
    int batch = 64, train = 0, threads = 0, reps = 5;
    const df_flag flags[] = {
        {"preset", FL_STRING, "fmnist-s", "model preset", &preset},
        {"model", FL_STRING, NULL, "a model folder instead of a preset", &model},
        {"batch", FL_INT, "64", "images per call", &batch},
        {"train", FL_BOOL, "0", "time a training step (forward, backward, Adam) instead of a forward", &train},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
        {"precision", FL_STRING, "fp32", "fp32, or bf16: BF16 products with FP32 sums (AMX / AVX-512 BF16 where the CPU has them)", &precision},
        {"reps", FL_INT, "5", "timed repetitions (after one warm-up)", &reps},
    };
    const char *pos[1];
    int npos, rc = df_flags_parse(flags, (int)(sizeof flags / sizeof flags[0]), argc, argv,
                                  "usage: diffuse bench [--preset P | --model M] [--batch B] [--train] [--threads N]\n\n"
                                  "Prints images/s, GFLOP/s (convolutions, linears and attention; a training step counts\n"
                                  "3x the forward) and the fraction of this machine's measured GEMM peak.",
                                  pos, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    if (batch < 1 || reps < 1 || threads < 0) {
        fprintf(stderr, "diffuse bench: --batch and --reps must be >= 1\n");
        return 1;
    }
    if (df_set_precision(precision)) {
        fprintf(stderr, "diffuse bench: --precision: %s\n", df_errmsg());
        return 1;
    }
    df_set_threads(threads);
    bench_ctx c = {0};
    if (model) {
        c.m = df_unet_load_folder(model);
    } else {
        df_unet_config cfg;
        if (df_unet_preset(&cfg, preset) == 0) c.m = df_unet_create(&cfg);
    }
    if (!c.m) {
        fprintf(stderr, "diffuse bench: %s\n", df_errmsg());
        return 1;
    }
    df_unet_init_weights(c.m, 1);
    const df_unet_config *cfg = df_unet_cfg(c.m);
    c.B = (size_t)batch, c.D = (size_t)cfg->in_channels * cfg->sample_size * cfg->sample_size;
    c.x = df_malloc(c.B * c.D * 4), c.y = df_malloc(c.B * c.D * 4), c.eps = df_malloc(c.B * c.D * 4);
    c.t = df_malloc(c.B * 4), c.ti = df_malloc(c.B * sizeof(int));
    df_rng_normal(c.x, c.B * c.D, 1, 3, 0);
    df_rng_normal(c.eps, c.B * c.D, 1, 4, 0);
    for (size_t b = 0; b < c.B; b++) c.ti[b] = (int)(b * 997 % 1000), c.t[b] = (float)c.ti[b];
    df_schedule_defaults(&c.s);
    df_schedule_init(&c.s);
    df_adam_config ac = {.lr = 1e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    df_adam_init(&c.adam, df_unet_num_params(c.m), &ac);
    df_unet_cost k = df_unet_costs(cfg);
    if (!train) df_unet_freeze(c.m, 1); /* as the samplers run it: the weights packed once */
    void (*fn)(void *) = train ? run_train : run_forward;
    fn(&c); /* warm-up: plans the graph, touches the memory */
    double med, t = best_time(fn, &c, reps, &med);
    double flops = k.gflops_per_image * (train ? 3 : 1) * (double)c.B;
    double peak = gemm_peak();
    int bf16 = !strcmp(df_precision(), "bf16");
    printf("%s %s batch %d, %d threads, %s micro-kernel, %s\n", model ? model : preset,
           train ? "training step" : "forward", batch, df_threads(), bf16 ? gemm_bf16_isa() : gemm_isa(),
           bf16 ? "BF16 products" : "FP32");
    printf("  %.2f images/s (median %.2f), %.1f GFLOP/s, %.0f%% of the measured GEMM peak (%.0f GFLOP/s)\n",
           (double)c.B / t, (double)c.B / med, flops / t, 100 * flops / t / peak, peak);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const df_graph *g = &c.m->graph;
    double MB = 1024.0 * 1024.0, np = (double)df_unet_num_params(c.m);
    printf("  memory: activations%s %.0f MB, weights%s %.0f MB, kernel scratch %.0f MB; peak RSS %.0f MB\n",
           train ? " and their gradients" : "", g->arena_floats * 4.0 / MB, train ? ", gradients and Adam" : "",
           np * 4.0 * (train ? 4 : 1) / MB, df_scratch_bytes() / MB, ru.ru_maxrss / 1024.0);
    df_free(c.x), df_free(c.y), df_free(c.eps), df_free(c.t), df_free(c.ti);
    df_adam_free(&c.adam);
    df_step_work_free(&c.w);
    df_schedule_free(&c.s);
    df_unet_destroy(c.m);
    return 0;
}
