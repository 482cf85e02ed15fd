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
    double *t = df_malloc((size_t)reps * sizeof *t), best = 1e30;
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
    df_free(t);
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

/* --profile: the graph's ops grouped by kind and shape, most time first. */
typedef struct {
    char name[64];
    double fwd, bwd;
    int count;
} prof_row;

static void op_name(char *s, size_t n, const df_graph *g, const df_op *op) {
    static const char *kinds[] = {
        [OP_CONV2D] = "conv", [OP_LINEAR] = "linear", [OP_GROUPNORM] = "group norm",
        [OP_GN_SILU] = "group norm + SiLU", [OP_SILU] = "SiLU", [OP_RELU] = "ReLU", [OP_ADD] = "add",
        [OP_SCALE] = "scale", [OP_ADD_CHANNEL] = "add per channel", [OP_UPSAMPLE2X] = "upsample 2x",
        [OP_CONCAT] = "concat", [OP_ATTENTION] = "attention", [OP_TIMESTEP_EMBED] = "timestep embedding",
        [OP_DROPOUT] = "dropout", [OP_BATCHNORM] = "batch norm", [OP_CONVT] = "transposed conv",
        [OP_SINUSOIDAL_EMBED] = "sinusoidal embedding"};
    const df_tensor *x = &g->t[op->in[0]], *y = &g->t[op->out];
    if (op->kind == OP_CONV2D || op->kind == OP_CONVT) {
        const df_param *w = &g->params->p[op->w];
        size_t k = w->ndim == 4 ? (size_t)w->shape[2] : 1;
        snprintf(s, n, "%s %zux%zu %zu->%zu at %zux%zu%s", kinds[op->kind], k, k, x->c, y->c, x->h, x->w,
                 op->stride > 1 ? " stride 2" : "");
    } else /* attention: its output's channels (its input may be q, k and v as one tensor) */
        snprintf(s, n, "%s %zux%zux%zu", kinds[op->kind], op->kind == OP_ATTENTION ? y->c : x->c, x->h, x->w);
}

static int by_time(const void *a, const void *b) {
    double ta = ((const prof_row *)a)->fwd + ((const prof_row *)a)->bwd;
    double tb = ((const prof_row *)b)->fwd + ((const prof_row *)b)->bwd;
    return (ta < tb) - (ta > tb);
}

/* Prints each kind and shape's milliseconds per call of fn (forward, backward), summed over its ops. */
static void print_profile(const df_graph *g, int calls, double step_seconds, int train) {
    prof_row *rows = df_calloc((size_t)g->nops, sizeof *rows);
    int nr = 0;
    double sum = 0;
    for (int i = 0; i < g->nops; i++) {
        char name[64];
        op_name(name, sizeof name, g, &g->ops[i]);
        int r = 0;
        while (r < nr && strcmp(rows[r].name, name)) r++;
        if (r == nr) memcpy(rows[nr++].name, name, sizeof name);
        rows[r].fwd += g->op_seconds[i] / calls, rows[r].bwd += g->op_seconds[g->nops + i] / calls;
        rows[r].count++;
        sum += (g->op_seconds[i] + g->op_seconds[g->nops + i]) / calls;
    }
    qsort(rows, (size_t)nr, sizeof *rows, by_time);
    printf("\n  where the time goes (ms per %s, mean of %d; ops grouped by kind and shape):\n",
           train ? "step" : "forward", calls);
    printf("  %-44s %5s %9s %9s %6s\n", "op", "count", "forward", train ? "backward" : "", "share");
    for (int r = 0; r < nr; r++) {
        double t = rows[r].fwd + rows[r].bwd;
        if (t < 0.002 * step_seconds) continue;
        if (train)
            printf("  %-44s %5d %9.2f %9.2f %5.1f%%\n", rows[r].name, rows[r].count, 1e3 * rows[r].fwd,
                   1e3 * rows[r].bwd, 100 * t / step_seconds);
        else
            printf("  %-44s %5d %9.2f %9s %5.1f%%\n", rows[r].name, rows[r].count, 1e3 * rows[r].fwd, "",
                   100 * t / step_seconds);
    }
    printf("  %-44s %5s %9.2f %9s %5.1f%%\n", train ? "outside the graph (noise, loss, Adam)" : "outside the graph",
           "", 1e3 * (step_seconds - sum), "", 100 * (step_seconds - sum) / step_seconds);
    df_free(rows);
}

int cmd_bench(int argc, char **argv) {
    const char *precision = "fp32";
    const char *preset = "fmnist-s", *model = NULL;
    int batch = 64, train = 0, threads = 0, reps = 5, profile = 0;
    const df_flag flags[] = {
        {"preset", FL_STRING, "fmnist-s", "model preset", &preset},
        {"model", FL_STRING, NULL, "a model folder instead of a preset", &model},
        {"batch", FL_INT, "64", "images per call", &batch},
        {"train", FL_BOOL, "0", "time a training step (forward, backward, Adam) instead of a forward", &train},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
        {"precision", FL_STRING, "fp32", "fp32, or bf16: BF16 products with FP32 sums (AMX / AVX-512 BF16 where the CPU has them)", &precision},
        {"reps", FL_INT, "5", "timed repetitions (after one warm-up)", &reps},
        {"profile", FL_BOOL, "0", "then time every op of the graph over the same repetitions and print where the time goes", &profile},
    };
    const char *pos[1];
    int npos, rc = df_flags_parse(flags, (int)(sizeof flags / sizeof flags[0]), argc, argv,
                                  "usage: diffuse bench [--preset P | --model M] [--batch B] [--train] [--threads N] [--profile]\n\n"
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
    if (train) df_adam_init(&c.adam, df_unet_num_params(c.m), &ac); /* a forward's peak RSS without Adam's moments */
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
    if (profile) { /* a separate pass: timing each op costs a little, and the figures above stay clean */
        df_graph *pg = &c.m->graph;
        pg->op_seconds = df_calloc(2 * (size_t)pg->nops, sizeof(double));
        double t0 = df_time();
        for (int r = 0; r < reps; r++) fn(&c);
        print_profile(pg, reps, (df_time() - t0) / reps, train);
    }
    df_free(c.x), df_free(c.y), df_free(c.eps), df_free(c.t), df_free(c.ti);
    df_adam_free(&c.adam);
    df_step_work_free(&c.w);
    df_schedule_free(&c.s);
    df_unet_destroy(c.m);
    return 0;
}
