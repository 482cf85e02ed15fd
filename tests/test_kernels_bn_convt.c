/* test_kernels_bn_convt.c: batch normalisation and transposed convolution.
 *   - fast against _ref (forward, backward, eval, running statistics) over several shapes, odd ones included;
 *   - every backward (input, gamma/weight, beta/bias) against central finite differences of L = sum(out * g),
 *     with the step sizes and tolerances of tests/test_kernels.c;
 *   - backward accumulates (twice gives double) and skips NULL gradients;
 *   - running statistics and eval mode against values worked out by hand;
 *   - convt2d forward against conv2d's input gradient (its adjoint, an independent code path);
 *   - against PyTorch (tests/ref/bn_convt_ref.py run by /usr/bin/python3): F.batch_norm in training mode with
 *     running statistics and in eval mode, F.conv_transpose2d, and their autograd gradients, rel. error 1e-5. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/npy.h"
#include "kernels/kernels.h"
#include "test.h"

/* ---- helpers ---- */

#include "kernel_checks.h"

/* ---- batch norm ---- */

typedef struct {
    fd_loss L;
    float *in, *gamma, *beta, *mean, *rstd;
    size_t B, C, HW;
    int ref;
} bn_case;

static void bn_case_forward(fd_loss *self) {
    bn_case *c = (bn_case *)self;
    (c->ref ? batchnorm_forward_ref : batchnorm_forward)(c->L.out, c->mean, c->rstd, NULL, NULL, c->in, c->gamma,
                                                         c->beta, c->B, c->C, c->HW, 0.1f, 1e-5f);
}

/* B, C, HW, affine: odd sizes, one image, one pixel, and one big enough for the threaded path */
static const size_t bn_cfgs[][4] = {{2, 3, 5, 1}, {1, 4, 7, 1}, {3, 5, 1, 1}, {2, 3, 6, 0}, {4, 8, 33, 0},
                                    {8, 16, 257, 1}, {2, 6, 64, 1}};
#define N_BN_CFGS (sizeof bn_cfgs / sizeof bn_cfgs[0])

TEST(batchnorm_matches_ref) {
    for (size_t t = 0; t < N_BN_CFGS; t++) {
        size_t B = bn_cfgs[t][0], C = bn_cfgs[t][1], HW = bn_cfgs[t][2], n = B * C * HW;
        int affine = (int)bn_cfgs[t][3];
        float *in = rnd(n, 101, -1, 1);
        for (size_t i = 0; i < n; i++) in[i] = in[i] * (1 + (float)(i / HW % C)) + 0.5f * (float)(i / HW % C);
        float *gamma = affine ? rnd(C, 102, 0.5f, 1.5f) : NULL, *beta = affine ? rnd(C, 103, -1, 1) : NULL;
        float *rm = rnd(C, 104, -1, 1), *rv = rnd(C, 105, 0.5f, 2), *rm_r = copy(rm, C), *rv_r = copy(rv, C);
        float *out = zeros(n), *out_r = zeros(n), *mean = zeros(C), *rstd = zeros(C), *mean_r = zeros(C);
        float *rstd_r = zeros(C);
        batchnorm_forward(out, mean, rstd, rm, rv, in, gamma, beta, B, C, HW, 0.1f, 1e-5f);
        batchnorm_forward_ref(out_r, mean_r, rstd_r, rm_r, rv_r, in, gamma, beta, B, C, HW, 0.1f, 1e-5f);
        char name[160];
        snprintf(name, sizeof name, "batchnorm fwd B%zu C%zu HW%zu affine %d", B, C, HW, affine);
        EXPECT_CLOSE(name, out, out_r, n, 1e-5);
        EXPECT_CLOSE("batchnorm mean", mean, mean_r, C, 1e-5);
        EXPECT_CLOSE("batchnorm rstd", rstd, rstd_r, C, 1e-5);
        EXPECT_CLOSE("batchnorm running_mean", rm, rm_r, C, 1e-5);
        EXPECT_CLOSE("batchnorm running_var", rv, rv_r, C, 1e-5);

        batchnorm_forward_eval(out, in, rm, rv, gamma, beta, B, C, HW, 1e-5f);
        batchnorm_forward_eval_ref(out_r, in, rm, rv, gamma, beta, B, C, HW, 1e-5f);
        EXPECT_CLOSE("batchnorm eval fwd", out, out_r, n, 1e-5);

        /* backward, fast vs ref, both accumulating onto the same non-zero start */
        float *dout = rnd(n, 106, -1, 1), *din = rnd(n, 107, -1, 1), *dg = rnd(C, 108, -1, 1);
        float *db = rnd(C, 109, -1, 1), *din_r = copy(din, n), *dg_r = copy(dg, C), *db_r = copy(db, C);
        batchnorm_backward(din, affine ? dg : NULL, affine ? db : NULL, dout, in, mean, rstd, gamma, B, C, HW);
        batchnorm_backward_ref(din_r, affine ? dg_r : NULL, affine ? db_r : NULL, dout, in, mean, rstd, gamma, B,
                               C, HW);
        snprintf(name, sizeof name, "batchnorm din B%zu C%zu HW%zu", B, C, HW);
        EXPECT_CLOSE(name, din, din_r, n, 1e-5);
        if (affine) {
            EXPECT_CLOSE("batchnorm dgamma", dg, dg_r, C, 1e-5);
            EXPECT_CLOSE("batchnorm dbeta", db, db_r, C, 1e-5);
        }
        df_free(in), df_free(gamma), df_free(beta), df_free(rm), df_free(rv), df_free(rm_r), df_free(rv_r);
        df_free(out), df_free(out_r), df_free(mean), df_free(rstd), df_free(mean_r), df_free(rstd_r);
        df_free(dout), df_free(din), df_free(dg), df_free(db), df_free(din_r), df_free(dg_r), df_free(db_r);
    }
}

TEST(batchnorm_backward_finite_differences) {
    for (size_t t = 0; t < N_BN_CFGS; t++) {
        if (bn_cfgs[t][0] * bn_cfgs[t][1] * bn_cfgs[t][2] > 300) continue;
        for (int ref = 0; ref < 2; ref++) {
            bn_case c = {.B = bn_cfgs[t][0], .C = bn_cfgs[t][1], .HW = bn_cfgs[t][2], .ref = ref};
            size_t n = c.B * c.C * c.HW;
            c.L = (fd_loss){bn_case_forward, zeros(n), rnd(n, 111, -1, 1), n};
            c.in = rnd(n, 112, -1, 1);
            for (size_t i = 0; i < n; i++) c.in[i] += 0.3f * (float)(i / c.HW % 3); /* unequal channel means */
            c.gamma = bn_cfgs[t][3] ? rnd(c.C, 113, 0.5f, 1.5f) : NULL;
            c.beta = bn_cfgs[t][3] ? rnd(c.C, 114, -1, 1) : NULL;
            c.mean = zeros(c.C), c.rstd = zeros(c.C);
            bn_case_forward(&c.L);
            float *din = zeros(n), *dgamma = zeros(c.C), *dbeta = zeros(c.C);
            (ref ? batchnorm_backward_ref : batchnorm_backward)(din, c.gamma ? dgamma : NULL,
                                                                c.gamma ? dbeta : NULL, c.L.g, c.in, c.mean,
                                                                c.rstd, c.gamma, c.B, c.C, c.HW);
            const char *k = ref ? "batchnorm_ref" : "batchnorm";
            char name[160];
            snprintf(name, sizeof name, "%s d/din B%zu C%zu HW%zu", k, c.B, c.C, c.HW);
            EXPECT_GRAD(name, c.in, din, n, fd_eval, &c, FD_H_NONLIN, FD_RTOL, FD_ATOL, FD_CHECKS);
            if (c.gamma) {
                snprintf(name, sizeof name, "%s d/dgamma", k);
                EXPECT_GRAD(name, c.gamma, dgamma, c.C, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
                snprintf(name, sizeof name, "%s d/dbeta", k);
                EXPECT_GRAD(name, c.beta, dbeta, c.C, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
            }
            df_free(c.L.out), df_free(c.L.g), df_free(c.in), df_free(c.gamma), df_free(c.beta);
            df_free(c.mean), df_free(c.rstd), df_free(din), df_free(dgamma), df_free(dbeta);
        }
    }
}

/* Two channels of B = 2 images of HW = 2 pixels, eps 0:
 *   channel 0 holds {1, 2, 3, 4}: mean 2.5, biased var 1.25, unbiased 5/3;
 *   channel 1 holds {-2, 0, 2, 8}: mean 2, squared deviations 16 + 4 + 0 + 36 = 56, var 14, unbiased 56/3.
 * With momentum 0.1 from running (0, 1) and (1, 2): mean 0.9*0 + 0.1*2.5 = 0.25, 0.9*1 + 0.1*2 = 1.1;
 * var 0.9*1 + 0.1*5/3 = 16/15, 0.9*2 + 0.1*56/3 = 1.8 + 28/15 = 55/15. */
TEST(batchnorm_running_stats_and_eval_by_hand) {
    const size_t B = 2, C = 2, HW = 2;
    const float in[8] = {1, 2, -2, 0, 3, 4, 2, 8}; /* (b, c, p) */
    const float gamma[2] = {2, -1}, beta[2] = {0.5f, 3};
    for (int ref = 0; ref < 2; ref++) {
        float rm[2] = {0, 1}, rv[2] = {1, 2}, out[8], mean[2], rstd[2];
        (ref ? batchnorm_forward_ref : batchnorm_forward)(out, mean, rstd, rm, rv, in, gamma, beta, B, C, HW, 0.1f,
                                                          0.0f);
        const char *k = ref ? "batchnorm_ref" : "batchnorm";
        const float want_mean[2] = {2.5f, 2}, want_rstd[2] = {(float)(1 / sqrt(1.25)), (float)(1 / sqrt(14.0))};
        const float want_rm[2] = {0.25f, 1.1f}, want_rv[2] = {16.0f / 15, 55.0f / 15};
        double r0 = 1 / sqrt(1.25), r1 = 1 / sqrt(14.0);
        const float want_out[8] = {(float)(2 * -1.5 * r0 + 0.5), (float)(2 * -0.5 * r0 + 0.5),
                                   (float)(-1 * -4 * r1 + 3),    (float)(-1 * -2 * r1 + 3),
                                   (float)(2 * 0.5 * r0 + 0.5),  (float)(2 * 1.5 * r0 + 0.5),
                                   3.0f,                         (float)(-1 * 6 * r1 + 3)};
        char name[96];
        snprintf(name, sizeof name, "%s training out by hand", k);
        EXPECT_CLOSE(name, out, want_out, 8, 1e-6);
        snprintf(name, sizeof name, "%s saved mean, rstd by hand", k);
        EXPECT_CLOSE(name, mean, want_mean, 2, 1e-7);
        EXPECT_CLOSE(name, rstd, want_rstd, 2, 1e-6);
        snprintf(name, sizeof name, "%s running_mean (momentum 0.1)", k);
        EXPECT_CLOSE(name, rm, want_rm, 2, 1e-6);
        snprintf(name, sizeof name, "%s running_var (unbiased, momentum 0.1)", k);
        EXPECT_CLOSE(name, rv, want_rv, 2, 1e-6);

        /* a second step moves them again: momentum 1 replaces them by the batch statistics */
        float rm2[2] = {7, 7}, rv2[2] = {7, 7};
        (ref ? batchnorm_forward_ref : batchnorm_forward)(out, mean, rstd, rm2, rv2, in, gamma, beta, B, C, HW,
                                                          1.0f, 0.0f);
        const float want_rv2[2] = {5.0f / 3, 56.0f / 3};
        EXPECT_CLOSE("momentum 1: running_mean = batch mean", rm2, want_mean, 2, 1e-7);
        EXPECT_CLOSE("momentum 1: running_var = unbiased batch var", rv2, want_rv2, 2, 1e-6);
        /* NULL running statistics: same output, nothing else touched */
        float out2[8];
        (ref ? batchnorm_forward_ref : batchnorm_forward)(out2, mean, rstd, NULL, NULL, in, gamma, beta, B, C, HW,
                                                          0.1f, 0.0f);
        EXPECT_CLOSE("no running update: same output", out2, want_out, 8, 1e-6);

        /* eval with running (1, -2) and (4, 0.25), eps 0: 2 (x - 1) / 2 + 0.5 and -(x + 2) / 0.5 + 3 */
        const float erm[2] = {1, -2}, erv[2] = {4, 0.25f};
        const float want_eval[8] = {0.5f, 1.5f, 3, -1, 2.5f, 3.5f, -5, -17};
        (ref ? batchnorm_forward_eval_ref : batchnorm_forward_eval)(out, in, erm, erv, gamma, beta, B, C, HW, 0);
        snprintf(name, sizeof name, "%s eval out by hand", k);
        EXPECT_CLOSE(name, out, want_eval, 8, 1e-7);
        /* eps is used: var 4 - 1e-3 with eps 1e-3 gives the same */
        const float erv_eps[2] = {4 - 1e-3f, 0.25f - 1e-3f};
        (ref ? batchnorm_forward_eval_ref : batchnorm_forward_eval)(out, in, erm, erv_eps, gamma, beta, B, C, HW,
                                                                    1e-3f);
        EXPECT_CLOSE("eval with eps by hand", out, want_eval, 8, 1e-6);
    }
}

TEST(batchnorm_backward_accumulates) {
    size_t B = 3, C = 4, HW = 10, n = B * C * HW;
    float *in = rnd(n, 121, -1, 1), *gamma = rnd(C, 122, 0.5f, 1.5f), *beta = rnd(C, 123, -1, 1);
    float *out = zeros(n), *mean = zeros(C), *rstd = zeros(C), *dout = rnd(n, 124, -1, 1);
    batchnorm_forward(out, mean, rstd, NULL, NULL, in, gamma, beta, B, C, HW, 0.1f, 1e-5f);
    float *g1[3] = {zeros(n), zeros(C), zeros(C)}, *g2[3] = {zeros(n), zeros(C), zeros(C)};
    batchnorm_backward(g1[0], g1[1], g1[2], dout, in, mean, rstd, gamma, B, C, HW);
    batchnorm_backward(g2[0], g2[1], g2[2], dout, in, mean, rstd, gamma, B, C, HW);
    batchnorm_backward(g2[0], g2[1], g2[2], dout, in, mean, rstd, gamma, B, C, HW);
    expect_doubled("batchnorm din twice", g1[0], g2[0], n);
    expect_doubled("batchnorm dgamma twice", g1[1], g2[1], C);
    expect_doubled("batchnorm dbeta twice", g1[2], g2[2], C);
    float *din_only = zeros(n);
    batchnorm_backward(din_only, NULL, NULL, dout, in, mean, rstd, gamma, B, C, HW);
    EXPECT_CLOSE("batchnorm din alone", din_only, g1[0], n, 0);
    for (int i = 0; i < 3; i++) df_free(g1[i]), df_free(g2[i]);
    df_free(in), df_free(gamma), df_free(beta), df_free(out), df_free(mean), df_free(rstd), df_free(dout);
    df_free(din_only);
}

/* ---- transposed convolution ---- */

typedef struct {
    size_t B, C_in, H, W, C_out, KH, KW, stride, pad;
    int bias;
    const char *what;
} convt_cfg;

static const convt_cfg convt_cfgs[] = {
    {2, 3, 5, 7, 4, 4, 4, 2, 1, 1, "4x4 s2 p1 (upsampler), odd 5x7"},
    {3, 16, 9, 11, 8, 4, 4, 2, 1, 1, "4x4 s2 p1, 16->8, 9x11"},
    {2, 4, 6, 5, 3, 3, 3, 1, 1, 1, "3x3 s1 p1"},
    {2, 3, 5, 5, 2, 3, 3, 2, 1, 0, "3x3 s2 p1, no bias"},
    {1, 2, 4, 3, 3, 3, 3, 2, 0, 1, "3x3 s2 p0"},
    {2, 5, 3, 4, 6, 1, 1, 1, 0, 1, "1x1 s1 p0 (pointwise)"},
    {2, 3, 5, 4, 2, 1, 1, 2, 1, 1, "1x1 s2 p1 (drops border taps)"},
    {1, 2, 4, 3, 3, 3, 2, 2, 0, 1, "3x2 s2 p0"},
    {2, 3, 1, 1, 2, 4, 4, 2, 1, 1, "4x4 s2 p1 on 1x1"},
    {4, 32, 8, 8, 24, 3, 3, 1, 1, 1, "3x3 s1 p1, 32->24, 8x8"},
};
#define N_CONVT_CFGS (sizeof convt_cfgs / sizeof convt_cfgs[0])

static convt2d_dims convt_dims(const convt_cfg *c) {
    return (convt2d_dims){c->B, c->C_in, c->H, c->W, c->C_out, c->KH, c->KW, c->stride, c->pad};
}

typedef struct {
    fd_loss L;
    float *in, *w, *b;
    convt2d_dims d;
} convt_case;

static void convt_case_forward(fd_loss *self) {
    convt_case *c = (convt_case *)self;
    convt2d_forward(c->L.out, c->in, c->w, c->b, &c->d);
}

TEST(convt2d_out_size) {
    convt2d_dims d = {8, 64, 32, 32, 64, 4, 4, 2, 1};
    EXPECT(convt2d_out_h(&d) == 64 && convt2d_out_w(&d) == 64, "4x4 s2 p1 on 32x32 must give 64x64, got %zux%zu",
           convt2d_out_h(&d), convt2d_out_w(&d));
    convt2d_dims e = {1, 1, 5, 3, 1, 3, 2, 3, 1};
    EXPECT(convt2d_out_h(&e) == 13 && convt2d_out_w(&e) == 6, "(5-1)*3-2+3 = 13, (3-1)*3-2+2 = 6, got %zux%zu",
           convt2d_out_h(&e), convt2d_out_w(&e));
}

TEST(convt2d_matches_ref) {
    for (size_t t = 0; t < N_CONVT_CFGS; t++) {
        const convt_cfg *c = &convt_cfgs[t];
        convt2d_dims d = convt_dims(c);
        size_t Ho = convt2d_out_h(&d), Wo = convt2d_out_w(&d);
        size_t n_in = d.B * d.C_in * d.H * d.W, n_w = d.C_in * d.C_out * d.KH * d.KW, n_out = d.B * d.C_out * Ho * Wo;
        float *in = rnd(n_in, 201, -1, 1), *w = rnd(n_w, 202, -0.5f, 0.5f);
        float *b = c->bias ? rnd(d.C_out, 203, -1, 1) : NULL;
        float *out = rnd(n_out, 204, -1, 1), *out_r = rnd(n_out, 205, -1, 1);
        char name[160];
        convt2d_forward(out, in, w, b, &d);
        convt2d_forward_ref(out_r, in, w, b, &d);
        snprintf(name, sizeof name, "convt2d fwd %s", c->what);
        EXPECT_CLOSE(name, out, out_r, n_out, 1e-5);

        /* the adjoint: convT forward = conv2d's input gradient (weight read as OIHW with O = C_in, I = C_out) */
        conv2d_dims cd = {d.B, d.C_out, Ho, Wo, d.C_in, d.KH, d.KW, d.stride, d.pad, d.pad, d.pad, d.pad};
        float *adj = zeros(n_out);
        conv2d_backward_ref(adj, NULL, NULL, in, NULL, w, &cd);
        for (size_t i = 0; b && i < n_out; i++) adj[i] += b[i / (Ho * Wo) % d.C_out];
        snprintf(name, sizeof name, "convt2d fwd vs conv2d adjoint %s", c->what);
        EXPECT_CLOSE(name, out, adj, n_out, 1e-5);

        float *dout = rnd(n_out, 206, -1, 1);
        float *din = rnd(n_in, 207, -1, 1), *dw = rnd(n_w, 208, -1, 1), *db = rnd(d.C_out, 209, -1, 1);
        float *din_r = copy(din, n_in), *dw_r = copy(dw, n_w), *db_r = copy(db, d.C_out);
        convt2d_backward(din, dw, b ? db : NULL, dout, in, w, &d);
        convt2d_backward_ref(din_r, dw_r, b ? db_r : NULL, dout, in, w, &d);
        snprintf(name, sizeof name, "convt2d din %s", c->what);
        EXPECT_CLOSE(name, din, din_r, n_in, 1e-5);
        snprintf(name, sizeof name, "convt2d dweight %s", c->what);
        EXPECT_CLOSE(name, dw, dw_r, n_w, 1e-5);
        if (b) {
            snprintf(name, sizeof name, "convt2d dbias %s", c->what);
            EXPECT_CLOSE(name, db, db_r, d.C_out, 1e-5);
        }
        df_free(in), df_free(w), df_free(b), df_free(out), df_free(out_r), df_free(adj), df_free(dout);
        df_free(din), df_free(dw), df_free(db), df_free(din_r), df_free(dw_r), df_free(db_r);
    }
}

/* Finite differences of the fast forward against the fast and the _ref backward. */
TEST(convt2d_backward_finite_differences) {
    for (size_t t = 0; t < N_CONVT_CFGS; t++) {
        const convt_cfg *c = &convt_cfgs[t];
        if (c->C_in * c->H * c->W > 256) continue;
        convt_case cc = {.d = convt_dims(c)};
        convt2d_dims *d = &cc.d;
        size_t n_out = d->B * d->C_out * convt2d_out_h(d) * convt2d_out_w(d);
        size_t n_in = d->B * d->C_in * d->H * d->W, n_w = d->C_in * d->C_out * d->KH * d->KW;
        cc.L = (fd_loss){convt_case_forward, zeros(n_out), rnd(n_out, 211, -1, 1), n_out};
        cc.in = rnd(n_in, 212, -1, 1), cc.w = rnd(n_w, 213, -0.5f, 0.5f);
        cc.b = c->bias ? rnd(d->C_out, 214, -1, 1) : NULL;
        for (int ref = 0; ref < 2; ref++) {
            float *din = zeros(n_in), *dw = zeros(n_w), *db = zeros(d->C_out);
            (ref ? convt2d_backward_ref : convt2d_backward)(din, dw, cc.b ? db : NULL, cc.L.g, cc.in, cc.w, d);
            const char *k = ref ? "convt2d_ref" : "convt2d";
            char name[160];
            snprintf(name, sizeof name, "%s d/din %s", k, c->what);
            EXPECT_GRAD(name, cc.in, din, n_in, fd_eval, &cc, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
            snprintf(name, sizeof name, "%s d/dweight %s", k, c->what);
            EXPECT_GRAD(name, cc.w, dw, n_w, fd_eval, &cc, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
            if (cc.b) {
                snprintf(name, sizeof name, "%s d/dbias %s", k, c->what);
                EXPECT_GRAD(name, cc.b, db, d->C_out, fd_eval, &cc, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
            }
            df_free(din), df_free(dw), df_free(db);
        }
        df_free(cc.L.out), df_free(cc.L.g), df_free(cc.in), df_free(cc.w), df_free(cc.b);
    }
}

TEST(convt2d_backward_accumulates) {
    convt2d_dims d = convt_dims(&convt_cfgs[0]);
    size_t n_in = d.B * d.C_in * d.H * d.W, n_w = d.C_in * d.C_out * d.KH * d.KW;
    size_t n_out = d.B * d.C_out * convt2d_out_h(&d) * convt2d_out_w(&d);
    float *in = rnd(n_in, 221, -1, 1), *w = rnd(n_w, 222, -1, 1), *dout = rnd(n_out, 223, -1, 1);
    float *g1[3] = {zeros(n_in), zeros(n_w), zeros(d.C_out)}, *g2[3] = {zeros(n_in), zeros(n_w), zeros(d.C_out)};
    convt2d_backward(g1[0], g1[1], g1[2], dout, in, w, &d);
    convt2d_backward(g2[0], g2[1], g2[2], dout, in, w, &d);
    convt2d_backward(g2[0], g2[1], g2[2], dout, in, w, &d);
    expect_doubled("convt2d din twice", g1[0], g2[0], n_in);
    expect_doubled("convt2d dweight twice", g1[1], g2[1], n_w);
    expect_doubled("convt2d dbias twice", g1[2], g2[2], d.C_out);
    float *dw_only = zeros(n_w), *din_only = zeros(n_in);
    convt2d_backward(NULL, dw_only, NULL, dout, in, w, &d);
    convt2d_backward(din_only, NULL, NULL, dout, in, w, &d);
    EXPECT_CLOSE("convt2d dweight alone", dw_only, g1[1], n_w, 0);
    EXPECT_CLOSE("convt2d din alone", din_only, g1[0], n_in, 0);
    for (int i = 0; i < 3; i++) df_free(g1[i]), df_free(g2[i]);
    df_free(in), df_free(w), df_free(dout), df_free(dw_only), df_free(din_only);
}

/* ---- against PyTorch ---- */

static void npy_put(const char *dir, const char *cs, const char *what, const float *x, int ndim, const size_t *shape) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s_%s.npy", dir, cs, what);
    EXPECT(df_npy_write_f32(path, x, ndim, shape) == 0, "write %s: %s", path, df_errmsg());
}

/* torch's tensor CASE_what (n floats), or NULL after a test failure */
static float *npy_get(const char *dir, const char *cs, const char *what, size_t n) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s_%s.npy", dir, cs, what);
    df_npy a;
    if (df_npy_read(path, &a) != 0) {
        EXPECT(0, "torch output missing: %s", df_errmsg());
        return NULL;
    }
    float *x = NULL;
    if (a.dtype == DF_NPY_F4 && a.count == n) x = copy(a.data, n);
    else EXPECT(0, "%s: want %zu float32 values, found %zu of %s", path, n, a.count, df_npy_dtype_name(a.dtype));
    df_npy_free(&a);
    return x;
}

/* Compares got (fast) and got_r (_ref) with torch's CASE_what. */
static void vs_torch(const char *dir, const char *cs, const char *what, const float *got, const float *got_r,
                     size_t n) {
    float *want = npy_get(dir, cs, what, n);
    if (!want) return;
    char name[128];
    snprintf(name, sizeof name, "%s %s vs torch", cs, what);
    EXPECT_CLOSE(name, got, want, n, 1e-5);
    snprintf(name, sizeof name, "%s %s (_ref) vs torch", cs, what);
    EXPECT_CLOSE(name, got_r, want, n, 1e-5);
    df_free(want);
}

static const size_t bn_torch[][6] = {{2, 3, 4, 5, 10, 50000}, {4, 8, 7, 9, 300, 1000}}; /* B C H W mom*1e3 eps*1e10 */

static void bn_torch_write(const char *dir, size_t k) {
    const size_t *s = bn_torch[k];
    size_t n = s[0] * s[1] * s[2] * s[3], C = s[1], cshape[1] = {C}, two[1] = {2};
    char cs[16];
    snprintf(cs, sizeof cs, "bn%zu", k);
    float *x = rnd(n, 301 + (unsigned)k, -2, 3), *gamma = rnd(C, 311, 0.5f, 1.5f), *beta = rnd(C, 312, -1, 1);
    float *rm = rnd(C, 313, -1, 1), *rv = rnd(C, 314, 0.5f, 2), *g = rnd(n, 315, -1, 1);
    float cfg[2] = {(float)s[4] * 1e-3f, (float)s[5] * 1e-10f};
    npy_put(dir, cs, "x", x, 4, s), npy_put(dir, cs, "g", g, 4, s);
    npy_put(dir, cs, "gamma", gamma, 1, cshape), npy_put(dir, cs, "beta", beta, 1, cshape);
    npy_put(dir, cs, "rm", rm, 1, cshape), npy_put(dir, cs, "rv", rv, 1, cshape), npy_put(dir, cs, "cfg", cfg, 1, two);
    df_free(x), df_free(gamma), df_free(beta), df_free(rm), df_free(rv), df_free(g);
}

static void bn_torch_check(const char *dir, size_t k) {
    const size_t *s = bn_torch[k];
    size_t B = s[0], C = s[1], HW = s[2] * s[3], n = B * C * HW;
    float mom = (float)s[4] * 1e-3f, eps = (float)s[5] * 1e-10f;
    char cs[16];
    snprintf(cs, sizeof cs, "bn%zu", k);
    float *x = rnd(n, 301 + (unsigned)k, -2, 3), *gamma = rnd(C, 311, 0.5f, 1.5f), *beta = rnd(C, 312, -1, 1);
    float *rm = rnd(C, 313, -1, 1), *rv = rnd(C, 314, 0.5f, 2), *g = rnd(n, 315, -1, 1);
    float *rm_r = copy(rm, C), *rv_r = copy(rv, C), *out = zeros(n), *out_r = zeros(n);
    float *mean = zeros(C), *rstd = zeros(C), *mean_r = zeros(C), *rstd_r = zeros(C);
    batchnorm_forward(out, mean, rstd, rm, rv, x, gamma, beta, B, C, HW, mom, eps);
    batchnorm_forward_ref(out_r, mean_r, rstd_r, rm_r, rv_r, x, gamma, beta, B, C, HW, mom, eps);
    vs_torch(dir, cs, "out", out, out_r, n);
    vs_torch(dir, cs, "mean", mean, mean_r, C);
    vs_torch(dir, cs, "rstd", rstd, rstd_r, C);
    vs_torch(dir, cs, "rm_new", rm, rm_r, C);
    vs_torch(dir, cs, "rv_new", rv, rv_r, C);
    float *ev = zeros(n), *ev_r = zeros(n);
    batchnorm_forward_eval(ev, x, rm, rv, gamma, beta, B, C, HW, eps);
    batchnorm_forward_eval_ref(ev_r, x, rm_r, rv_r, gamma, beta, B, C, HW, eps);
    vs_torch(dir, cs, "eval", ev, ev_r, n);
    float *dx = zeros(n), *dg = zeros(C), *db = zeros(C), *dx_r = zeros(n), *dg_r = zeros(C), *db_r = zeros(C);
    batchnorm_backward(dx, dg, db, g, x, mean, rstd, gamma, B, C, HW);
    batchnorm_backward_ref(dx_r, dg_r, db_r, g, x, mean_r, rstd_r, gamma, B, C, HW);
    vs_torch(dir, cs, "dx", dx, dx_r, n);
    vs_torch(dir, cs, "dgamma", dg, dg_r, C);
    vs_torch(dir, cs, "dbeta", db, db_r, C);
    df_free(x), df_free(gamma), df_free(beta), df_free(rm), df_free(rv), df_free(g), df_free(rm_r), df_free(rv_r);
    df_free(out), df_free(out_r), df_free(mean), df_free(rstd), df_free(mean_r), df_free(rstd_r), df_free(ev);
    df_free(ev_r), df_free(dx), df_free(dg), df_free(db), df_free(dx_r), df_free(dg_r), df_free(db_r);
}

/* convt_cfgs sent to torch: every kernel/stride/padding kind above */
static const size_t ct_torch[] = {0, 2, 3, 4, 5, 6, 7, 8};
#define N_CT_TORCH (sizeof ct_torch / sizeof ct_torch[0])

static void ct_torch_io(const char *dir, size_t k, int write) {
    const convt_cfg *c = &convt_cfgs[ct_torch[k]];
    convt2d_dims d = convt_dims(c);
    size_t Ho = convt2d_out_h(&d), Wo = convt2d_out_w(&d);
    size_t xs[4] = {d.B, d.C_in, d.H, d.W}, ws[4] = {d.C_in, d.C_out, d.KH, d.KW}, gs[4] = {d.B, d.C_out, Ho, Wo};
    size_t n_in = d.B * d.C_in * d.H * d.W, n_w = d.C_in * d.C_out * d.KH * d.KW, n_out = d.B * d.C_out * Ho * Wo;
    size_t bs[1] = {d.C_out}, two[1] = {2};
    char cs[16];
    snprintf(cs, sizeof cs, "ct%zu", k);
    float *x = rnd(n_in, 401 + (unsigned)k, -1, 1), *w = rnd(n_w, 411, -0.5f, 0.5f), *g = rnd(n_out, 412, -1, 1);
    float *b = c->bias ? rnd(d.C_out, 413, -1, 1) : NULL;
    if (write) {
        float cfg[2] = {(float)d.stride, (float)d.pad};
        npy_put(dir, cs, "x", x, 4, xs), npy_put(dir, cs, "w", w, 4, ws), npy_put(dir, cs, "g", g, 4, gs);
        npy_put(dir, cs, "cfg", cfg, 1, two);
        if (b) npy_put(dir, cs, "b", b, 1, bs);
    } else {
        float *out = zeros(n_out), *out_r = zeros(n_out), *dx = zeros(n_in), *dx_r = zeros(n_in);
        float *dw = zeros(n_w), *dw_r = zeros(n_w), *db = zeros(d.C_out), *db_r = zeros(d.C_out);
        convt2d_forward(out, x, w, b, &d);
        convt2d_forward_ref(out_r, x, w, b, &d);
        convt2d_backward(dx, dw, b ? db : NULL, g, x, w, &d);
        convt2d_backward_ref(dx_r, dw_r, b ? db_r : NULL, g, x, w, &d);
        printf("    %s: %s\n", cs, c->what);
        vs_torch(dir, cs, "out", out, out_r, n_out);
        vs_torch(dir, cs, "dx", dx, dx_r, n_in);
        vs_torch(dir, cs, "dw", dw, dw_r, n_w);
        if (b) vs_torch(dir, cs, "db", db, db_r, d.C_out);
        df_free(out), df_free(out_r), df_free(dx), df_free(dx_r), df_free(dw), df_free(dw_r), df_free(db);
        df_free(db_r);
    }
    df_free(x), df_free(w), df_free(g), df_free(b);
}

/* Fails when /usr/bin/python3 or its torch is missing (make deps installs python3-torch). */
TEST(batchnorm_convt2d_match_torch) {
    char dir[600], cmd[2048];
    snprintf(dir, sizeof dir, "%s/bn_convt", df_test_tmpdir());
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    EXPECT(system(cmd) == 0, "cannot create %s", dir);
    int len = snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/ref/bn_convt_ref.py' '%s'", df_test_root(), dir);
    for (size_t k = 0; k < sizeof bn_torch / sizeof bn_torch[0]; k++) {
        bn_torch_write(dir, k);
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " bn%zu", k);
    }
    for (size_t k = 0; k < N_CT_TORCH; k++) {
        ct_torch_io(dir, k, 1);
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " ct%zu", k);
    }
    int rc = system(cmd);
    EXPECT(rc == 0, "the PyTorch reference failed (%s); is python3-torch installed? (make deps)", cmd);
    if (rc != 0) return;
    for (size_t k = 0; k < sizeof bn_torch / sizeof bn_torch[0]; k++) bn_torch_check(dir, k);
    for (size_t k = 0; k < N_CT_TORCH; k++) ct_torch_io(dir, k, 0);
}
