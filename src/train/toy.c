/* toy.c: 2-D toy datasets, the MLP denoiser, its training loop, and the sliced Wasserstein-2 distance. */
#include "train/toy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/rng.h"

/* ---- datasets ---- */

static const char *const toy_names[DF_TOY_COUNT] = {"swissroll", "moons", "8gaussians", "checkerboard"};

int df_toy_data_parse(df_toy_data *d, const char *name) {
    for (int i = 0; i < DF_TOY_COUNT; i++)
        if (name && !strcmp(name, toy_names[i])) {
            *d = (df_toy_data)i;
            return 0;
        }
    return df_error("unknown dataset '%s' (the toy datasets are %s)", name ? name : "(none)", DF_TOY_NAMES);
}

const char *df_toy_data_name(df_toy_data d) { return d >= 0 && d < DF_TOY_COUNT ? toy_names[d] : "?"; }

/* Two standard normals from two uniforms in (0, 1) (Box-Muller). */
static void box_muller(double u1, double u2, double *n1, double *n2) {
    double r = sqrt(-2 * log(u1)), a = 2 * M_PI * u2;
    *n1 = r * cos(a), *n2 = r * sin(a);
}

/* One point from four uniforms in (0, 1). */
static void toy_point(float *p, df_toy_data d, const float u[4]) {
    double x = 0, y = 0, n1, n2;
    switch (d) {
    case DF_TOY_SWISSROLL: { /* sklearn make_swiss_roll: t = 1.5 pi (1 + 2 u), (t cos t, [height], t sin t) */
        double t = 1.5 * M_PI * (1 + 2 * (double)u[0]);
        box_muller(u[1], u[2], &n1, &n2);
        x = (t * cos(t) + 0.5 * n1) / 7, y = (t * sin(t) + 0.5 * n2) / 7;
    } break;
    case DF_TOY_MOONS: { /* sklearn make_moons, centred and scaled */
        double th = M_PI * (double)u[1];
        box_muller(u[2], u[3], &n1, &n2);
        if (u[0] < 0.5f) x = cos(th), y = sin(th);
        else x = 1 - cos(th), y = 0.5 - sin(th);
        x = 1.5 * (x + 0.05 * n1 - 0.5), y = 1.5 * (y + 0.05 * n2 - 0.25);
    } break;
    case DF_TOY_8GAUSSIANS: {
        int k = (int)(u[0] * 8);
        if (k > 7) k = 7;
        box_muller(u[1], u[2], &n1, &n2);
        x = 2 * cos(k * M_PI / 4) + 0.15 * n1, y = 2 * sin(k * M_PI / 4) + 0.15 * n2;
    } break;
    case DF_TOY_CHECKERBOARD: { /* column i in 0..3 uniform, then a row j of the right parity */
        double fx = 4 * (double)u[0];
        int i = (int)fx < 4 ? (int)fx : 3, j = 2 * (u[1] < 0.5f) + (i & 1);
        x = fx - 2, y = j + (double)u[2] - 2;
    } break;
    default: DF_CHECK(0, "toy dataset %d", (int)d);
    }
    p[0] = (float)x, p[1] = (float)y;
}

void df_toy_points(float *xy, size_t n, df_toy_data d, uint64_t seed, uint32_t split, uint64_t first) {
    /* xy (n, 2); point i takes uniforms 4 (first + i) .. + 3 of the (split, dataset) stream */
    uint64_t stream = df_stream(DF_STREAM_TOY_DATA, split, (uint32_t)d);
    float u[4 * 256];
    for (size_t i0 = 0; i0 < n; i0 += 256) {
        size_t m = n - i0 < 256 ? n - i0 : 256;
        df_rng_uniform(u, 4 * m, seed, stream, 4 * (first + i0));
        for (size_t i = 0; i < m; i++) toy_point(xy + 2 * (i0 + i), d, u + 4 * i);
    }
}

/* ---- distances and the Gaussian baseline ---- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The squared Wasserstein-2 distance between the empirical distributions of sorted a (na) and b (nb): the
 * integral over u in (0, 1) of (Qa(u) - Qb(u))^2, Q the step quantile functions, over their merged steps. */
static double w2_sorted(const double *a, size_t na, const double *b, size_t nb) {
    double s = 0, u = 0;
    size_t i = 0, j = 0;
    while (i < na && j < nb) {
        /* a[i] covers u in [i/na, (i+1)/na), b[j] covers [j/nb, (j+1)/nb) */
        double ea = (double)(i + 1) / na, eb = (double)(j + 1) / nb, e = ea < eb ? ea : eb, d = a[i] - b[j];
        s += (e - u) * d * d;
        u = e;
        if ((i + 1) * nb <= (j + 1) * na) i++; /* ea <= eb, compared exactly */
        else j++;
    }
    return s;
}

double df_sliced_w2(const float *a, size_t na, const float *b, size_t nb, int nproj, uint64_t seed) {
    DF_CHECK(na > 0 && nb > 0 && nproj > 0, "sliced W2 of %zu and %zu points over %d directions", na, nb, nproj);
    double *pa = df_malloc(na * sizeof(double)), *pb = df_malloc(nb * sizeof(double)), sum = 0;
    double turn = df_rng_uniform1(seed, df_stream(DF_STREAM_TOY_PROJ, 0, 0), 0);
    for (int k = 0; k < nproj; k++) {
        double phi = M_PI * (k + turn) / nproj, c = cos(phi), s = sin(phi);
        for (size_t i = 0; i < na; i++) pa[i] = c * a[2 * i] + s * a[2 * i + 1];
        for (size_t i = 0; i < nb; i++) pb[i] = c * b[2 * i] + s * b[2 * i + 1];
        qsort(pa, na, sizeof *pa, cmp_double);
        qsort(pb, nb, sizeof *pb, cmp_double);
        sum += w2_sorted(pa, na, pb, nb);
    }
    df_free(pa), df_free(pb);
    return sqrt(sum / nproj);
}

void df_gaussian_fit(double mean[2], double cov[4], const float *xy, size_t n) {
    double m0 = 0, m1 = 0, c00 = 0, c01 = 0, c11 = 0;
    for (size_t i = 0; i < n; i++) m0 += xy[2 * i], m1 += xy[2 * i + 1];
    m0 /= n ? (double)n : 1, m1 /= n ? (double)n : 1;
    for (size_t i = 0; i < n; i++) {
        double dx = xy[2 * i] - m0, dy = xy[2 * i + 1] - m1;
        c00 += dx * dx, c01 += dx * dy, c11 += dy * dy;
    }
    double inv = n ? 1.0 / (double)n : 0;
    mean[0] = m0, mean[1] = m1;
    cov[0] = c00 * inv, cov[1] = cov[2] = c01 * inv, cov[3] = c11 * inv;
}

void df_gaussian_points(float *xy, size_t n, const double mean[2], const double cov[4], uint64_t seed,
                        uint64_t first) {
    /* cov = L L^T, L = [[l00, 0], [l10, l11]] */
    double l00 = sqrt(fmax(cov[0], 0)), l10 = l00 > 0 ? cov[2] / l00 : 0, l11 = sqrt(fmax(cov[3] - l10 * l10, 0));
    float z[512];
    for (size_t i0 = 0; i0 < n; i0 += 256) {
        size_t m = n - i0 < 256 ? n - i0 : 256;
        df_rng_normal(z, 2 * m, seed, df_stream(DF_STREAM_TOY_FIT, 0, 0), 2 * (first + i0));
        for (size_t i = 0; i < m; i++) {
            float *p = xy + 2 * (i0 + i);
            p[0] = (float)(mean[0] + l00 * z[2 * i]);
            p[1] = (float)(mean[1] + l10 * z[2 * i] + l11 * z[2 * i + 1]);
        }
    }
}

/* ---- the MLP ---- */

void df_toy_mlp_defaults(df_toy_mlp_config *c) {
    c->hidden = 128, c->depth = 3, c->temb_dim = 32;
}

/* A linear layer named `prefix` (prefix.weight (out, in), prefix.bias (out)) in ps; applied to x if g. */
static int linear(df_params *ps, df_graph *g, int x, const char *prefix, int in, int out) {
    int w = df_params_addf(ps, 2, out, in, 0, 0, "%s.weight", prefix);
    int b = df_params_addf(ps, 1, out, 0, 0, 0, "%s.bias", prefix);
    return g ? g_linear(g, x, w, b) : -1;
}

/* The builder: registers the parameters in ps and, if g, records the forward graph for batch B (its input
 * tensor ids in *xi and *ti). See toy.h for the network. */
static void build(const df_toy_mlp_config *c, df_params *ps, df_graph *g, size_t B, int *xi, int *ti) {
    int x = -1, t = -1, h = -1, e = -1;
    if (g) {
        x = g_input(g, B, 2, 1, 1);
        t = g_input(g, B, 1, 1, 1);
        e = g_timestep_embed(g, t, (size_t)c->temb_dim, 1, 0.0f);
        h = g_concat(g, x, e);
    }
    h = linear(ps, g, h, "input", 2 + c->temb_dim, c->hidden);
    if (g) h = g_silu(g, h);
    for (int i = 0; i < c->depth; i++) {
        char n[DF_PARAM_NAME];
        snprintf(n, sizeof n, "blocks.%d", i);
        int r = linear(ps, g, g ? g_concat(g, h, e) : -1, n, c->hidden + c->temb_dim, c->hidden);
        if (g) h = g_add(g, h, g_silu(g, r));
    }
    linear(ps, g, h, "output", c->hidden, 2);
    if (xi) *xi = x;
    if (ti) *ti = t;
}

int df_toy_mlp_init(df_toy_mlp *m, const df_toy_mlp_config *c, uint64_t seed) {
    memset(m, 0, sizeof *m);
    if (c->hidden < 1 || c->hidden > 4096 || c->depth < 0 || c->depth > 64 || c->temb_dim < 2 ||
        c->temb_dim > 1024 || c->temb_dim % 2)
        return df_error("toy MLP: hidden %d (1..4096), depth %d (0..64), temb_dim %d (even, 2..1024)", c->hidden,
                        c->depth, c->temb_dim);
    m->cfg = *c;
    build(c, &m->params, NULL, 0, NULL, NULL);
    build(c, &m->ema, NULL, 0, NULL, NULL);
    df_params_alloc(&m->params);
    df_params_alloc(&m->ema);
    df_params_alloc_grad(&m->params);
    df_params *ps = &m->params;
    df_params_init_torch(ps, seed); /* torch.nn.Linear's: uniform in +-1/sqrt(fan_in) */
    memcpy(m->ema.data, ps->data, ps->total * sizeof(float));
    return 0;
}

void df_toy_mlp_free(df_toy_mlp *m) {
    if (m->have_train) df_graph_free(&m->train);
    if (m->have_infer) df_graph_free(&m->infer);
    df_params_free(&m->params);
    df_params_free(&m->ema);
    memset(m, 0, sizeof *m);
}

/* The graph of batch B on ps (training or inference), built or rebuilt as needed. */
static df_graph *graph_for(df_toy_mlp *m, size_t B, int train) {
    df_graph *g = train ? &m->train : &m->infer;
    int *have = train ? &m->have_train : &m->have_infer;
    if (*have && g->batch == B) return g;
    if (*have) df_graph_free(g);
    df_graph_init(g, train ? &m->params : &m->ema, B, train);
    build(&m->cfg, train ? &m->params : &m->ema, g, B, train ? &m->x_train : &m->x_infer,
          train ? &m->t_train : &m->t_infer);
    df_graph_plan(g);
    *have = 1;
    return g;
}

void df_toy_mlp_fn(void *ctx, float *out, const float *x, const float *t, size_t B) {
    df_toy_mlp *m = ctx;
    df_graph *g = graph_for(m, B, 0);
    memcpy(g->t[m->x_infer].data, x, 2 * B * sizeof(float));
    memcpy(g->t[m->t_infer].data, t, B * sizeof(float));
    int threads = df_threads(); /* one thread: see df_toy_train */
    if (threads > 1) df_set_threads(1);
    df_graph_forward(g);
    if (threads > 1) df_set_threads(threads);
    memcpy(out, g->t[g->output].data, 2 * B * sizeof(float));
}

/* ---- training ---- */

void df_toy_train_defaults(df_toy_train_config *c) {
    c->data = DF_TOY_SWISSROLL;
    c->steps = 6000, c->batch = 256;
    c->lr = 4e-3, c->ema_max_decay = 0.995;
    c->seed = 0;
}

double df_toy_train(df_toy_mlp *m, const df_schedule *s, const df_toy_train_config *c,
                    void (*on_step)(void *ctx, int step, double loss), void *ctx) {
    DF_CHECK(c->steps > 0 && c->batch > 0, "toy training: %d steps of batch %d", c->steps, c->batch);
    DF_CHECK(s->prediction == DF_PRED_EPSILON, "toy training predicts epsilon");
    size_t B = (size_t)c->batch, P = m->params.total;
    float *x0 = df_malloc(2 * B * sizeof(float)), *eps = df_malloc(2 * B * sizeof(float));
    float *dout = df_malloc(2 * B * sizeof(float));
    int *t = df_malloc(B * sizeof(int));
    df_adam_config ac = {.lr = c->lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    df_adam adam;
    df_adam_init(&adam, P, &ac);
    df_graph *g = graph_for(m, B, 1);
    float *xt = g->t[m->x_train].data, *tf = g->t[m->t_train].data;
    /* The MLP's products are too small to share: on two threads every op's parallel region costs more than
     * it saves (and with the other core busy, far more), so the toy runs on one. */
    int threads = df_threads();
    if (threads > 1) df_set_threads(1);
    double tail = 0;
    int ntail = 0;
    for (int k = 0; k < c->steps; k++) {
        df_toy_points(x0, B, c->data, c->seed, DF_TOY_TRAIN, (uint64_t)k * B);
        for (size_t b = 0; b < B; b++) {
            t[b] = (int)(df_rng_u64(c->seed, df_stream(DF_STREAM_T, 0, (uint32_t)k), b) % (uint64_t)s->T);
            tf[b] = (float)t[b];
        }
        df_rng_normal(eps, 2 * B, c->seed, df_stream(DF_STREAM_EPS, 0, (uint32_t)k), 0);
        df_q_sample(xt, x0, eps, t, s, B, 2);
        df_graph_forward(g);
        const float *out = g->t[g->output].data;
        double loss = 0;
        for (size_t i = 0; i < 2 * B; i++) {
            float d = out[i] - eps[i];
            loss += (double)d * d;
            dout[i] = d / (float)B; /* d/d out of mean((out - eps)^2) over 2 B values */
        }
        loss /= (double)(2 * B);
        if (!isfinite(loss)) {
            tail = NAN, ntail = 1;
            break;
        }
        df_params_zero_grad(&m->params);
        df_graph_backward(g, dout);
        df_adam_step(&adam, m->params.data, m->params.grad, df_warmup_lr(c->lr, (uint64_t)k, 100));
        df_ema_update(m->ema.data, m->params.data, P, df_ema_decay((uint64_t)k + 1, c->ema_max_decay, 1.0, 0.75));
        if (k >= c->steps - 100) tail += loss, ntail++;
        if (on_step) on_step(ctx, k + 1, loss);
    }
    if (threads > 1) df_set_threads(threads);
    df_adam_free(&adam);
    df_free(x0), df_free(eps), df_free(dout), df_free(t);
    return tail / ntail;
}
