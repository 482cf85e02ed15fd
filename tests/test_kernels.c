/* test_kernels.c: every fast kernel against its plain reference on random inputs (odd sizes included), and
 * every backward against central finite differences of the scalar L = sum(out * g) for a fixed random g.
 * Also: backward accumulates (twice gives double), the timestep embedding against its formula and torch,
 * dropout's mask statistics and forward/backward consistency, the losses' values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/base/base.h"
#include "../src/kernels/kernels.h"
#include "test.h"

/* ---- helpers ---- */

/* A fresh array of n uniforms in [lo, hi) from seed. */
#include "kernel_checks.h"


/* ---- gemm ---- */

/* One gemm against gemm_ref, with padded leading dimensions (pad > 0 gives lda > K etc.) and C's padding
 * columns set to a sentinel that must survive. beta == 0 starts from a NaN-filled C. */
static void gemm_case(int ta, int tb, size_t M, size_t N, size_t K, float alpha, float beta, size_t pad) {
    size_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    size_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
    float *A = rnd(na, 11, -1, 1), *B = rnd(nb, 12, -1, 1), *C = rnd(nc, 13, -1, 1);
    if (beta == 0)
        for (size_t i = 0; i < nc; i++) C[i] = NAN;
    for (size_t i = 0; i < M; i++)
        for (size_t j = N; j < ldc; j++) C[i * ldc + j] = 12345.0f;
    float *Cref = copy(C, nc);
    gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, Cref, ldc);
    float *got = zeros(M * N), *want = zeros(M * N);
    int pad_ok = 1;
    for (size_t i = 0; i < M; i++) {
        memcpy(got + i * N, C + i * ldc, N * sizeof(float));
        memcpy(want + i * N, Cref + i * ldc, N * sizeof(float));
        for (size_t j = N; j < ldc; j++) pad_ok &= C[i * ldc + j] == 12345.0f;
    }
    char name[128];
    snprintf(name, sizeof name, "gemm tA%d tB%d %zux%zux%zu pad %zu alpha %g beta %g", ta, tb, M, N, K, pad,
             (double)alpha, (double)beta);
    EXPECT_CLOSE(name, got, want, M * N, 1e-5);
    EXPECT(pad_ok, "%s: wrote past N into C's padding", name);
    df_free(A), df_free(B), df_free(C), df_free(Cref), df_free(got), df_free(want);
}

TEST(gemm_matches_ref) {
    static const size_t sizes[][3] = {{1, 1, 1},      {3, 5, 7},      {17, 9, 33},
                                      {64, 128, 256}, {67, 131, 259}, {130, 70, 600}};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                size_t M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
                gemm_case(ta, tb, M, N, K, 1.0f, 0.0f, s % 2 ? 3 : 0);
                gemm_case(ta, tb, M, N, K, 0.75f, 1.0f, 5);
            }
    gemm_case(0, 0, 40, 50, 60, -1.5f, 0.5f, 1);
    gemm_case(1, 1, 0, 5, 7, 1.0f, 0.0f, 0);
    /* K = 0: C = beta C; with beta 0 it must be zeros, not NaN */
    gemm_case(0, 0, 5, 6, 0, 1.0f, 0.0f, 0);
}

/* The columns of C do not depend on N or on the thread count: an edge panel of 1-4 columns (the narrow
 * kernel) and the few-tile splits (each thread a range of row or column panels) give each element the bits the
 * 16-column micro-kernel gives it inside a wider product. This is what keeps an image's bits the same whatever
 * the batch: a Winograd chunk's tiles (N) differ between batch 1 and a full batch. */
TEST(gemm_columns_independent_of_n_and_threads) {
    /* (M, K): K = 300 crosses a depth slice (the second accumulates), M = 128 is 11 row panels: a group of 8
     * and a rest of 3 for the narrow kernel; M = 36 splits by columns, M = 128 at N = 49 by rows */
    static const size_t shapes[][2] = {{128, 300}, {36, 300}};
    int threads = df_threads();
    for (int s = 0; s < 2; s++) {
        size_t M = shapes[s][0], K = shapes[s][1], W = 224; /* the wide product: 14 whole panels */
        float *A = rnd(M * K, 141, -1, 1), *B = rnd(K * W, 142, -1, 1), *C0 = rnd(M * W, 143, -1, 1);
        float *wide = zeros(M * W), *Cn = zeros(M * W);
        for (int beta = 0; beta <= 1; beta++) {
            memcpy(wide, C0, M * W * sizeof(float));
            df_set_threads(1);
            gemm(0, 0, M, W, K, 1.0f, A, K, B, W, (float)beta, wide, W);
            static const size_t ns[] = {49, 50, 51, 52, 196, 17};
            for (size_t q = 0; q < sizeof ns / sizeof ns[0]; q++)
                for (int pass = 0; pass < 2; pass++) {
                    size_t N = ns[q];
                    df_set_threads(pass ? threads : 1);
                    for (size_t i = 0; i < M; i++) memcpy(Cn + i * N, C0 + i * W, N * sizeof(float));
                    gemm(0, 0, M, N, K, 1.0f, A, K, B, W, (float)beta, Cn, N); /* B's first N columns */
                    int same = 1;
                    for (size_t i = 0; i < M; i++) same &= !memcmp(Cn + i * N, wide + i * W, N * sizeof(float));
                    EXPECT(same, "gemm %zux%zux%zu beta %d on %d thread(s): columns differ from the same columns of N = %zu",
                           M, N, K, beta, pass ? threads : 1, W);
                }
        }
        df_set_threads(threads);
        printf("    M %zu, K %zu: N = 49..52, 196, 17 on 1 and %d threads, beta 0 and 1: bitwise the columns of N = %zu\n",
               M, K, threads, W);
        df_free(A), df_free(B), df_free(C0), df_free(wide), df_free(Cn);
    }
}

/* ---- conv2d ---- */

typedef struct {
    size_t B, C_in, H, W, C_out, KH, KW, stride, pad_t, pad_b, pad_l, pad_r;
    int bias;
    const char *what;
} conv_cfg;

static const conv_cfg conv_cfgs[] = {
    {2, 3, 6, 7, 5, 1, 1, 1, 0, 0, 0, 0, 1, "1x1 s1 (pointwise path)"},
    {2, 3, 6, 7, 5, 1, 1, 2, 0, 0, 0, 0, 0, "1x1 s2 (im2col path), no bias"},
    {3, 4, 9, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, "3x3 s1 p1"},
    {2, 4, 8, 8, 3, 3, 3, 2, 1, 1, 1, 1, 0, "3x3 s2 p1, no bias"},
    {2, 3, 8, 6, 4, 4, 4, 2, 1, 1, 1, 1, 1, "4x4 s2 p1"},
    {2, 3, 7, 5, 4, 3, 1, 1, 1, 1, 0, 0, 1, "3x1 s1 pad (1,1,0,0)"},
    {2, 4, 8, 8, 4, 3, 3, 2, 0, 1, 0, 1, 1, "3x3 s2 pad (0,1,0,1)"},
    {2, 2, 7, 9, 3, 2, 3, 1, 1, 0, 2, 1, 1, "2x3 s1 pad (1,0,2,1)"},
    {1, 16, 12, 12, 24, 3, 3, 1, 1, 1, 1, 1, 1, "B=1, 3x3 (parallel gemm, several tiles)"},
    {4, 8, 11, 13, 10, 3, 3, 1, 1, 1, 1, 1, 1, "B=4, 3x3 (images over threads)"},
    {10, 8, 9, 7, 12, 1, 1, 1, 0, 0, 0, 0, 1, "B=10, 1x1 (backward: chunks of images over threads)"},
    {9, 5, 9, 8, 6, 3, 3, 2, 1, 1, 1, 1, 0, "B=9, 3x3 s2 (backward: images through the parallel gemm)"},
};
#define N_CONV_CFGS (sizeof conv_cfgs / sizeof conv_cfgs[0])

static conv2d_dims conv_dims(const conv_cfg *c) {
    return (conv2d_dims){c->B,  c->C_in,   c->H,     c->W,     c->C_out, c->KH,
                         c->KW, c->stride, c->pad_t, c->pad_b, c->pad_l, c->pad_r};
}

typedef struct {
    fd_loss L;
    float *in, *w, *b;
    conv2d_dims d;
} conv_case;

static void conv_case_forward(fd_loss *self) {
    conv_case *c = (conv_case *)self;
    conv2d_forward(c->L.out, c->in, c->w, c->b, &c->d);
}

TEST(conv2d_matches_ref) {
    for (size_t t = 0; t < N_CONV_CFGS; t++) {
        const conv_cfg *c = &conv_cfgs[t];
        conv2d_dims d = conv_dims(c);
        size_t Ho = conv2d_out_h(&d), Wo = conv2d_out_w(&d);
        size_t n_in = d.B * d.C_in * d.H * d.W, n_w = d.C_out * d.C_in * d.KH * d.KW;
        size_t n_out = d.B * d.C_out * Ho * Wo;
        float *in = rnd(n_in, 1, -1, 1), *w = rnd(n_w, 2, -0.5f, 0.5f);
        float *b = c->bias ? rnd(d.C_out, 3, -1, 1) : NULL;
        float *out = rnd(n_out, 4, -1, 1), *out_ref = rnd(n_out, 5, -1, 1);
        char name[160];
        conv2d_forward(out, in, w, b, &d);
        conv2d_forward_ref(out_ref, in, w, b, &d);
        snprintf(name, sizeof name, "conv2d fwd %s", c->what);
        EXPECT_CLOSE(name, out, out_ref, n_out, 1e-5);

        /* backward, fast vs ref, both accumulating onto the same non-zero start */
        float *dout = rnd(n_out, 6, -1, 1);
        float *din = rnd(n_in, 7, -1, 1), *dw = rnd(n_w, 8, -1, 1), *db = rnd(d.C_out, 9, -1, 1);
        float *din_r = copy(din, n_in), *dw_r = copy(dw, n_w), *db_r = copy(db, d.C_out);
        conv2d_backward(din, dw, c->bias ? db : NULL, dout, in, w, &d);
        conv2d_backward_ref(din_r, dw_r, c->bias ? db_r : NULL, dout, in, w, &d);
        snprintf(name, sizeof name, "conv2d din %s", c->what);
        EXPECT_CLOSE(name, din, din_r, n_in, 1e-5);
        snprintf(name, sizeof name, "conv2d dweight %s", c->what);
        EXPECT_CLOSE(name, dw, dw_r, n_w, 1e-5);
        if (c->bias) {
            snprintf(name, sizeof name, "conv2d dbias %s", c->what);
            EXPECT_CLOSE(name, db, db_r, d.C_out, 1e-5);
        }
        /* the input gradient alone (images over threads where there are enough) has the same bits */
        float *din_only = rnd(n_in, 7, -1, 1);
        conv2d_backward(din_only, NULL, NULL, dout, in, w, &d);
        snprintf(name, sizeof name, "conv2d din alone %s", c->what);
        EXPECT_CLOSE(name, din_only, din, n_in, 0);
        df_free(din_only);
        df_free(in), df_free(w), df_free(b), df_free(out), df_free(out_ref), df_free(dout);
        df_free(din), df_free(dw), df_free(db), df_free(din_r), df_free(dw_r), df_free(db_r);
    }
    conv2d_dims d = {1, 1, 5, 5, 1, 3, 3, 2, 0, 1, 0, 1};
    EXPECT(conv2d_out_h(&d) == 2 && conv2d_out_w(&d) == 2, "H_out for 5 + 0 + 1 - 3 / 2 + 1 must be 2");
}

/* Finite differences of the fast forward against the fast backward (in, weight, bias) and the _ref backward
 * (in, weight). */
static void conv_fd(const conv_cfg *c) {
    conv_case cc = {.d = conv_dims(c)};
    conv2d_dims *d = &cc.d;
    size_t Ho = conv2d_out_h(d), Wo = conv2d_out_w(d);
    size_t n_in = d->B * d->C_in * d->H * d->W, n_w = d->C_out * d->C_in * d->KH * d->KW;
    cc.L = (fd_loss){conv_case_forward, zeros(d->B * d->C_out * Ho * Wo), NULL, d->B * d->C_out * Ho * Wo};
    cc.L.g = rnd(cc.L.n_out, 21, -1, 1);
    cc.in = rnd(n_in, 22, -1, 1), cc.w = rnd(n_w, 23, -0.5f, 0.5f);
    cc.b = c->bias ? rnd(d->C_out, 24, -1, 1) : NULL;
    float *din = zeros(n_in), *dw = zeros(n_w), *db = zeros(d->C_out);
    float *din_r = zeros(n_in), *dw_r = zeros(n_w), *db_r = zeros(d->C_out);
    conv2d_backward(din, dw, cc.b ? db : NULL, cc.L.g, cc.in, cc.w, d);
    conv2d_backward_ref(din_r, dw_r, cc.b ? db_r : NULL, cc.L.g, cc.in, cc.w, d);
    char name[160];
    snprintf(name, sizeof name, "conv2d d/din %s", c->what);
    EXPECT_GRAD(name, cc.in, din, n_in, fd_eval, &cc, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
    snprintf(name, sizeof name, "conv2d d/dweight %s", c->what);
    EXPECT_GRAD(name, cc.w, dw, n_w, fd_eval, &cc, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
    snprintf(name, sizeof name, "conv2d_ref d/din %s", c->what);
    EXPECT_GRAD(name, cc.in, din_r, n_in, fd_eval, &cc, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
    snprintf(name, sizeof name, "conv2d_ref d/dweight %s", c->what);
    EXPECT_GRAD(name, cc.w, dw_r, n_w, fd_eval, &cc, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
    if (cc.b) {
        snprintf(name, sizeof name, "conv2d d/dbias %s", c->what);
        EXPECT_GRAD(name, cc.b, db, d->C_out, fd_eval, &cc, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
    }
    df_free(cc.L.out), df_free(cc.L.g), df_free(cc.in), df_free(cc.w), df_free(cc.b);
    df_free(din), df_free(dw), df_free(db), df_free(din_r), df_free(dw_r), df_free(db_r);
}

/* The implicit-GEMM packers (AVX-512 and portable) give exactly im2col's column matrix packed by gemm's plain
 * packer, as B and as B^T, for every convolution shape above, at slice offsets and ragged widths. */
TEST(conv2d_implicit_packers_equal_im2col) {
    int bad = 0, checked = 0;
    for (int portable = 0; portable <= 1; portable++) {
        conv2d_force_portable_packers(portable);
        for (size_t t = 0; t < N_CONV_CFGS + 4; t++) { /* and four with rows of at least 16 outputs: the */
            static const conv2d_dims wide[4] = {{1, 3, 28, 28, 4, 3, 3, 1, 1, 1, 1, 1}, /* third with more */
                                                {1, 2, 20, 19, 3, 5, 5, 1, 2, 2, 2, 2}, /* kernel positions */
                                                {1, 2, 18, 17, 3, 9, 9, 1, 4, 4, 4, 4}, /* than the tables, */
                                                {1, 3, 40, 37, 4, 3, 3, 2, 1, 1, 1, 1}}; /* the last stride 2 */
            conv2d_dims d = t < N_CONV_CFGS ? conv_dims(&conv_cfgs[t]) : wide[t - N_CONV_CFGS];
            const char *what = t < N_CONV_CFGS ? conv_cfgs[t].what : "wide rows";
            size_t Ho = conv2d_out_h(&d), Wo = conv2d_out_w(&d), P = Ho * Wo, K = d.C_in * d.KH * d.KW;
            float *in = rnd(d.C_in * d.H * d.W, 81, -1, 1), *col = zeros(K * P);
            conv2d_im2col(col, in, &d, Ho, Wo);
            for (int tr = 0; tr <= 1; tr++) {
                size_t depth = tr ? P : K, width = tr ? K : P;
                /* a slice from depth/3 and columns from width/4 (not a multiple of 16), to the end */
                size_t p0 = depth / 3, kc = depth - p0, j0 = width / 4, nc = width - j0, panels = (nc + 15) / 16;
                float *got = zeros(panels * 16 * kc), *want = zeros(panels * 16 * kc);
                for (size_t i = 0; i < panels * 16 * kc; i++) got[i] = NAN;
                conv2d_pack_col(got, tr, in, &d, p0, kc, j0, nc);
                gemm_plain_b_ctx pb = {tr, col, P};
                gemm_plain_b(want, p0, kc, j0, nc, &pb);
                checked++;
                if (memcmp(got, want, panels * 16 * kc * sizeof(float)) && bad++ < 5)
                    EXPECT(0, "%s packer%s differs from im2col for %s", portable ? "portable" : "vector",
                           tr ? " (transposed)" : "", what);
                df_free(got), df_free(want);
            }
            df_free(in), df_free(col);
        }
    }
    conv2d_force_portable_packers(0);
    printf("    %d packings equal bit for bit\n", checked - bad);
    EXPECT(bad == 0, "%d of %d packings differ", bad, checked);
}

TEST(conv2d_backward_finite_differences) {
    for (size_t t = 0; t < N_CONV_CFGS; t++)
        if (conv_cfgs[t].C_in * conv_cfgs[t].H * conv_cfgs[t].W <= 256) conv_fd(&conv_cfgs[t]);
}

TEST(conv2d_backward_accumulates) {
    const conv_cfg *c = &conv_cfgs[4];
    conv2d_dims d = conv_dims(c);
    size_t n_in = d.B * d.C_in * d.H * d.W, n_w = d.C_out * d.C_in * d.KH * d.KW;
    size_t n_out = d.B * d.C_out * conv2d_out_h(&d) * conv2d_out_w(&d);
    float *in = rnd(n_in, 31, -1, 1), *w = rnd(n_w, 32, -1, 1), *dout = rnd(n_out, 33, -1, 1);
    float *g1[3] = {zeros(n_in), zeros(n_w), zeros(d.C_out)}, *g2[3] = {zeros(n_in), zeros(n_w), zeros(d.C_out)};
    conv2d_backward(g1[0], g1[1], g1[2], dout, in, w, &d);
    conv2d_backward(g2[0], g2[1], g2[2], dout, in, w, &d);
    conv2d_backward(g2[0], g2[1], g2[2], dout, in, w, &d);
    expect_doubled("conv2d din twice", g1[0], g2[0], n_in);
    expect_doubled("conv2d dweight twice", g1[1], g2[1], n_w);
    expect_doubled("conv2d dbias twice", g1[2], g2[2], d.C_out);
    /* NULL gradients are skipped: only dweight asked for gives the same dweight */
    float *dw_only = zeros(n_w);
    conv2d_backward(NULL, dw_only, NULL, dout, in, w, &d);
    EXPECT_CLOSE("conv2d dweight alone", dw_only, g1[1], n_w, 0);
    for (int i = 0; i < 3; i++) df_free(g1[i]), df_free(g2[i]);
    df_free(in), df_free(w), df_free(dout), df_free(dw_only);
}

/* conv2d_backward_set writes din whatever it held (NaN here): the same as accumulating into zeros, on every
 * path (the configurations above, and Winograd's stride-1 3x3 at 14x14), with dweight and dbias as before. */
TEST(conv2d_backward_set_overwrites) {
    conv_cfg wino = {2, 16, 14, 14, 16, 3, 3, 1, 1, 1, 1, 1, 1, "3x3 s1 p1 16->16 at 14x14 (Winograd)"};
    for (size_t t = 0; t <= N_CONV_CFGS; t++) {
        const conv_cfg *c = t < N_CONV_CFGS ? &conv_cfgs[t] : &wino;
        conv2d_dims d = conv_dims(c);
        size_t n_in = d.B * d.C_in * d.H * d.W, n_w = d.C_out * d.C_in * d.KH * d.KW;
        size_t n_out = d.B * d.C_out * conv2d_out_h(&d) * conv2d_out_w(&d);
        float *in = rnd(n_in, 51, -1, 1), *w = rnd(n_w, 52, -1, 1), *dout = rnd(n_out, 53, -1, 1);
        float *din = zeros(n_in), *dw = zeros(n_w), *db = zeros(d.C_out);
        float *din2 = zeros(n_in), *dw2 = zeros(n_w), *db2 = zeros(d.C_out);
        for (size_t i = 0; i < n_in; i++) din2[i] = NAN;
        conv2d_backward(din, dw, db, dout, in, w, &d);
        conv2d_backward_set(din2, dw2, db2, dout, in, w, &d);
        char name[160];
        snprintf(name, sizeof name, "conv2d_backward_set din, %s", c->what);
        EXPECT_CLOSE(name, din2, din, n_in, 0);
        snprintf(name, sizeof name, "conv2d_backward_set dweight, %s", c->what);
        EXPECT_CLOSE(name, dw2, dw, n_w, 0);
        EXPECT_CLOSE("conv2d_backward_set dbias", db2, db, d.C_out, 0);
        df_free(in), df_free(w), df_free(dout), df_free(din), df_free(dw), df_free(db);
        df_free(din2), df_free(dw2), df_free(db2);
    }
}

/* ---- linear ---- */

typedef struct {
    fd_loss L;
    float *in, *w, *b;
    size_t N, IN, OUT;
} linear_case;

static void linear_case_forward(fd_loss *self) {
    linear_case *c = (linear_case *)self;
    linear_forward(c->L.out, c->in, c->w, c->b, c->N, c->IN, c->OUT);
}

TEST(linear_matches_ref_and_finite_differences) {
    static const size_t sizes[][3] = {{1, 1, 1}, {3, 7, 5}, {16, 33, 70}, {70, 130, 9}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int has_bias = 0; has_bias < 2; has_bias++) {
            size_t N = sizes[s][0], IN = sizes[s][1], OUT = sizes[s][2];
            linear_case c = {.N = N, .IN = IN, .OUT = OUT};
            c.L = (fd_loss){linear_case_forward, zeros(N * OUT), rnd(N * OUT, 41, -1, 1), N * OUT};
            c.in = rnd(N * IN, 42, -1, 1), c.w = rnd(OUT * IN, 43, -0.5f, 0.5f);
            c.b = has_bias ? rnd(OUT, 44, -1, 1) : NULL;
            float *out_ref = zeros(N * OUT);
            char name[128];
            linear_forward(c.L.out, c.in, c.w, c.b, N, IN, OUT);
            linear_forward_ref(out_ref, c.in, c.w, c.b, N, IN, OUT);
            snprintf(name, sizeof name, "linear fwd %zux%zu->%zu bias %d", N, IN, OUT, has_bias);
            EXPECT_CLOSE(name, c.L.out, out_ref, N * OUT, 1e-5);
            float *din = rnd(N * IN, 45, -1, 1), *dw = rnd(OUT * IN, 46, -1, 1), *db = rnd(OUT, 47, -1, 1);
            float *din_r = copy(din, N * IN), *dw_r = copy(dw, OUT * IN), *db_r = copy(db, OUT);
            linear_backward(din, dw, db, c.L.g, c.in, c.w, N, IN, OUT);
            linear_backward_ref(din_r, dw_r, db_r, c.L.g, c.in, c.w, N, IN, OUT);
            EXPECT_CLOSE("linear din vs ref", din, din_r, N * IN, 1e-5);
            EXPECT_CLOSE("linear dweight vs ref", dw, dw_r, OUT * IN, 1e-5);
            EXPECT_CLOSE("linear dbias vs ref", db, db_r, OUT, 1e-5);
            if (s == 1 || s == 2) { /* finite differences on fresh (zero) gradients */
                memset(din, 0, N * IN * sizeof(float)), memset(dw, 0, OUT * IN * sizeof(float));
                memset(db, 0, OUT * sizeof(float));
                linear_backward(din, dw, c.b ? db : NULL, c.L.g, c.in, c.w, N, IN, OUT);
                EXPECT_GRAD("linear d/din", c.in, din, N * IN, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
                EXPECT_GRAD("linear d/dweight", c.w, dw, OUT * IN, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
                if (c.b)
                    EXPECT_GRAD("linear d/dbias", c.b, db, OUT, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
            }
            df_free(c.L.out), df_free(c.L.g), df_free(c.in), df_free(c.w), df_free(c.b), df_free(out_ref);
            df_free(din), df_free(dw), df_free(db), df_free(din_r), df_free(dw_r), df_free(db_r);
        }
}

/* Packed weights (batch-1 sampling) give each image the bits linear_forward gives it inside a batch: shapes
 * with one and two depth slices (IN 300 and 600), a narrow edge (OUT 70) and row panels past 8 (OUT 256). */
TEST(linear_packed_same_bits_as_batched) {
    static const size_t sizes[][2] = {{256, 256}, {300, 70}, {600, 130}};
    for (size_t s = 0; s < 3; s++)
        for (int has_bias = 0; has_bias < 2; has_bias++) {
            size_t N = 5, IN = sizes[s][0], OUT = sizes[s][1];
            float *in = rnd(N * IN, 51, -1, 1), *w = rnd(OUT * IN, 52, -0.5f, 0.5f), *b = rnd(OUT, 53, -1, 1);
            float *batched = zeros(N * OUT), *one = zeros(N * OUT), *want = zeros(N * OUT);
            float *wp = df_malloc(linear_weights_packed_size(IN, OUT) * sizeof(float));
            linear_pack_weights(wp, w, IN, OUT);
            linear_forward(batched, in, w, has_bias ? b : NULL, N, IN, OUT);
            linear_forward_packed(one, in, wp, has_bias ? b : NULL, 1, IN, OUT);              /* image 0 */
            linear_forward_packed(one + OUT, in + IN, wp, has_bias ? b : NULL, N - 1, IN, OUT); /* the rest */
            linear_forward_ref(want, in, w, has_bias ? b : NULL, N, IN, OUT);
            char name[128];
            snprintf(name, sizeof name, "linear packed %zu->%zu bias %d vs batched", IN, OUT, has_bias);
            EXPECT_CLOSE(name, one, batched, N * OUT, 0);
            snprintf(name, sizeof name, "linear packed %zu->%zu bias %d vs ref", IN, OUT, has_bias);
            EXPECT_CLOSE(name, one, want, N * OUT, 1e-5);
            df_free(in), df_free(w), df_free(b), df_free(batched), df_free(one), df_free(want), df_free(wp);
        }
}

/* ---- groupnorm ---- */

typedef struct {
    fd_loss L;
    float *in, *gamma, *beta, *mean, *rstd;
    size_t B, C, HW, G;
} gn_case;

static void gn_case_forward(fd_loss *self) {
    gn_case *c = (gn_case *)self;
    groupnorm_forward(c->L.out, c->mean, c->rstd, c->in, c->gamma, c->beta, c->B, c->C, c->HW, c->G, 1e-5f);
}

TEST(groupnorm_forward_and_finite_differences) {
    static const size_t cfgs[][5] = {/* B, C, HW, G, affine */
                                     {2, 4, 9, 2, 1},
                                     {2, 4, 9, 4, 1},
                                     {2, 6, 5, 1, 1},
                                     {1, 4, 9, 2, 0},
                                     {3, 8, 7, 4, 1}};
    for (size_t t = 0; t < sizeof cfgs / sizeof cfgs[0]; t++) {
        gn_case c = {.B = cfgs[t][0], .C = cfgs[t][1], .HW = cfgs[t][2], .G = cfgs[t][3]};
        size_t n = c.B * c.C * c.HW, cg = c.C / c.G, ng = cg * c.HW;
        c.L = (fd_loss){gn_case_forward, zeros(n), rnd(n, 51, -1, 1), n};
        c.in = rnd(n, 52, -1, 1);
        for (size_t i = 0; i < n; i++) c.in[i] += 0.3f * (float)(i / c.HW % 3); /* unequal channel means */
        c.gamma = cfgs[t][4] ? rnd(c.C, 53, 0.5f, 1.5f) : NULL;
        c.beta = cfgs[t][4] ? rnd(c.C, 54, -1, 1) : NULL;
        c.mean = zeros(c.B * c.G), c.rstd = zeros(c.B * c.G);
        gn_case_forward(&c.L);

        /* forward against the definition in double */
        float *want = zeros(n), *want_mean = zeros(c.B * c.G), *want_rstd = zeros(c.B * c.G);
        for (size_t bg = 0; bg < c.B * c.G; bg++) {
            const float *x = c.in + bg * ng;
            double m = 0, v = 0;
            for (size_t i = 0; i < ng; i++) m += x[i];
            m /= (double)ng;
            for (size_t i = 0; i < ng; i++) v += (x[i] - m) * (x[i] - m);
            v /= (double)ng;
            want_mean[bg] = (float)m, want_rstd[bg] = (float)(1 / sqrt(v + 1e-5));
            for (size_t i = 0; i < ng; i++) {
                size_t ch = bg % c.G * cg + i / c.HW;
                double y = (x[i] - m) / sqrt(v + 1e-5);
                want[bg * ng + i] = (float)(c.gamma ? y * c.gamma[ch] + c.beta[ch] : y);
            }
        }
        char name[128];
        snprintf(name, sizeof name, "groupnorm fwd B%zu C%zu HW%zu G%zu affine %zu", c.B, c.C, c.HW, c.G,
                 cfgs[t][4]);
        EXPECT_CLOSE(name, c.L.out, want, n, 1e-5);
        EXPECT_CLOSE("groupnorm mean", c.mean, want_mean, c.B * c.G, 1e-5);
        EXPECT_CLOSE("groupnorm rstd", c.rstd, want_rstd, c.B * c.G, 1e-5);

        float *din = zeros(n), *dgamma = zeros(c.C), *dbeta = zeros(c.C);
        groupnorm_backward(din, c.gamma ? dgamma : NULL, c.gamma ? dbeta : NULL, c.L.g, c.in, c.mean, c.rstd,
                           c.gamma, c.B, c.C, c.HW, c.G);
        EXPECT_GRAD("groupnorm d/din", c.in, din, n, fd_eval, &c, FD_H_NONLIN, FD_RTOL, FD_ATOL, FD_CHECKS);
        if (c.gamma) {
            EXPECT_GRAD("groupnorm d/dgamma", c.gamma, dgamma, c.C, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL,
                        FD_CHECKS);
            EXPECT_GRAD("groupnorm d/dbeta", c.beta, dbeta, c.C, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
        }
        df_free(c.L.out), df_free(c.L.g), df_free(c.in), df_free(c.gamma), df_free(c.beta), df_free(c.mean);
        df_free(c.rstd), df_free(want), df_free(want_mean), df_free(want_rstd), df_free(din), df_free(dgamma);
        df_free(dbeta);
    }
}

TEST(groupnorm_backward_accumulates) {
    size_t B = 2, C = 6, HW = 10, G = 3, n = B * C * HW;
    float *in = rnd(n, 61, -1, 1), *gamma = rnd(C, 62, 0.5f, 1.5f), *beta = rnd(C, 63, -1, 1);
    float *out = zeros(n), *mean = zeros(B * G), *rstd = zeros(B * G), *dout = rnd(n, 64, -1, 1);
    groupnorm_forward(out, mean, rstd, in, gamma, beta, B, C, HW, G, 1e-5f);
    float *g1[3] = {zeros(n), zeros(C), zeros(C)}, *g2[3] = {zeros(n), zeros(C), zeros(C)};
    groupnorm_backward(g1[0], g1[1], g1[2], dout, in, mean, rstd, gamma, B, C, HW, G);
    groupnorm_backward(g2[0], g2[1], g2[2], dout, in, mean, rstd, gamma, B, C, HW, G);
    groupnorm_backward(g2[0], g2[1], g2[2], dout, in, mean, rstd, gamma, B, C, HW, G);
    expect_doubled("groupnorm din twice", g1[0], g2[0], n);
    expect_doubled("groupnorm dgamma twice", g1[1], g2[1], C);
    expect_doubled("groupnorm dbeta twice", g1[2], g2[2], C);
    for (int i = 0; i < 3; i++) df_free(g1[i]), df_free(g2[i]);
    df_free(in), df_free(gamma), df_free(beta), df_free(out), df_free(mean), df_free(rstd), df_free(dout);
}

/* ---- attention ---- */

/* group norm then SiLU, fused: against the two kernels it replaces, finite differences, accumulation */

static void gns_case_forward(fd_loss *self) {
    gn_case *c = (gn_case *)self;
    groupnorm_silu_forward(c->L.out, c->mean, c->rstd, c->in, c->gamma, c->beta, c->B, c->C, c->HW, c->G, 1e-5f);
}

TEST(groupnorm_silu_matches_groupnorm_then_silu) {
    static const size_t cfgs[][5] = {/* B, C, HW, G, affine */
                                     {2, 4, 9, 2, 1},
                                     {1, 4, 9, 2, 0},
                                     {3, 8, 7, 4, 1},
                                     {2, 64, 200, 32, 1}}; /* large enough to split over threads */
    for (size_t t = 0; t < sizeof cfgs / sizeof cfgs[0]; t++) {
        gn_case c = {.B = cfgs[t][0], .C = cfgs[t][1], .HW = cfgs[t][2], .G = cfgs[t][3]};
        size_t n = c.B * c.C * c.HW, nbg = c.B * c.G;
        c.L = (fd_loss){gns_case_forward, zeros(n), rnd(n, 71, -1, 1), n};
        c.in = rnd(n, 72, -1, 1);
        for (size_t i = 0; i < n; i++) c.in[i] += 0.3f * (float)(i / c.HW % 3);
        c.gamma = cfgs[t][4] ? rnd(c.C, 73, 0.5f, 1.5f) : NULL;
        c.beta = cfgs[t][4] ? rnd(c.C, 74, -1, 1) : NULL;
        c.mean = zeros(nbg), c.rstd = zeros(nbg);
        gns_case_forward(&c.L);

        /* the unfused pair: group norm, SiLU, and their backwards in turn */
        float *y = zeros(n), *z = zeros(n), *mean = zeros(nbg), *rstd = zeros(nbg);
        groupnorm_forward(y, mean, rstd, c.in, c.gamma, c.beta, c.B, c.C, c.HW, c.G, 1e-5f);
        silu_forward(z, y, n);
        char name[128];
        snprintf(name, sizeof name, "groupnorm+silu fwd B%zu C%zu HW%zu G%zu", c.B, c.C, c.HW, c.G);
        EXPECT_CLOSE(name, c.L.out, z, n, 1e-6);
        EXPECT_CLOSE("groupnorm+silu mean", c.mean, mean, nbg, 0);
        EXPECT_CLOSE("groupnorm+silu rstd", c.rstd, rstd, nbg, 0);
        float *again = zeros(n); /* recomputing from the saved statistics gives the forward's values exactly */
        groupnorm_silu_apply(again, c.in, c.mean, c.rstd, c.gamma, c.beta, c.B, c.C, c.HW, c.G);
        EXPECT(memcmp(again, c.L.out, n * sizeof(float)) == 0, "groupnorm_silu_apply differs from the forward");

        float *dy = zeros(n), *want[3] = {zeros(n), zeros(c.C), zeros(c.C)}, *got[3] = {zeros(n), zeros(c.C), zeros(c.C)};
        silu_backward(dy, c.L.g, y, n);
        groupnorm_backward(want[0], c.gamma ? want[1] : NULL, c.gamma ? want[2] : NULL, dy, c.in, mean, rstd, c.gamma,
                           c.B, c.C, c.HW, c.G);
        groupnorm_silu_backward(got[0], c.gamma ? got[1] : NULL, c.gamma ? got[2] : NULL, c.L.g, c.in, c.mean,
                                c.rstd, c.gamma, c.beta, c.B, c.C, c.HW, c.G);
        EXPECT_CLOSE("groupnorm+silu din vs unfused", got[0], want[0], n, 1e-4);
        if (c.gamma) {
            EXPECT_CLOSE("groupnorm+silu dgamma vs unfused", got[1], want[1], c.C, 1e-4);
            EXPECT_CLOSE("groupnorm+silu dbeta vs unfused", got[2], want[2], c.C, 1e-4);
        }
        if (n < 1000) {
            EXPECT_GRAD("groupnorm+silu d/din", c.in, got[0], n, fd_eval, &c, FD_H_NONLIN, FD_RTOL, FD_ATOL,
                        FD_CHECKS);
            if (c.gamma) {
                EXPECT_GRAD("groupnorm+silu d/dgamma", c.gamma, got[1], c.C, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL,
                            FD_CHECKS);
                EXPECT_GRAD("groupnorm+silu d/dbeta", c.beta, got[2], c.C, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL,
                            FD_CHECKS);
            }
        }
        gns_case_forward(&c.L); /* the finite differences left statistics of a perturbed input */
        float *twice[3] = {zeros(n), zeros(c.C), zeros(c.C)};
        for (int r = 0; r < 2; r++)
            groupnorm_silu_backward(twice[0], c.gamma ? twice[1] : NULL, c.gamma ? twice[2] : NULL, c.L.g, c.in,
                                    c.mean, c.rstd, c.gamma, c.beta, c.B, c.C, c.HW, c.G);
        expect_doubled("groupnorm+silu din twice", got[0], twice[0], n);
        expect_doubled("groupnorm+silu dgamma twice", got[1], twice[1], c.C);
        for (int i = 0; i < 3; i++) df_free(want[i]), df_free(got[i]), df_free(twice[i]);
        df_free(c.L.out), df_free(c.L.g), df_free(c.in), df_free(c.gamma), df_free(c.beta), df_free(c.mean);
        df_free(c.rstd), df_free(y), df_free(z), df_free(mean), df_free(rstd), df_free(again), df_free(dy);
    }
}

typedef struct {
    fd_loss L;
    float *q, *k, *v, *probs;
    size_t B, C, T, heads;
} att_case;

static void att_case_forward(fd_loss *self) {
    att_case *c = (att_case *)self;
    attention_forward(c->L.out, c->probs, c->q, c->k, c->v, c->B, c->C, c->T, c->heads);
}

TEST(attention_matches_ref) {
    static const size_t cfgs[][4] = {/* B, C, T, heads */
                                     {2, 4, 9, 1},   {2, 8, 70, 2},   {1, 6, 130, 3},
                                     {1, 8, 200, 1}, {2, 16, 100, 2}, {3, 4, 1, 2},
                                     {1, 8, 300, 1}}; /* T > ATT_WHOLE: row blocks without probs */
    for (size_t t = 0; t < sizeof cfgs / sizeof cfgs[0]; t++) {
        size_t B = cfgs[t][0], C = cfgs[t][1], T = cfgs[t][2], H = cfgs[t][3], n = B * C * T, np = B * H * T * T;
        float *q = rnd(n, 71, -2, 2), *k = rnd(n, 72, -2, 2), *v = rnd(n, 73, -1, 1);
        float *out = rnd(n, 74, -1, 1), *out_np = rnd(n, 75, -1, 1), *out_ref = zeros(n);
        float *p = rnd(np, 76, -1, 1), *p_ref = zeros(np);
        attention_forward(out, p, q, k, v, B, C, T, H);
        attention_forward(out_np, NULL, q, k, v, B, C, T, H);
        attention_forward_ref(out_ref, p_ref, q, k, v, B, C, T, H);
        char name[128];
        snprintf(name, sizeof name, "attention fwd B%zu C%zu T%zu heads %zu", B, C, T, H);
        EXPECT_CLOSE(name, out, out_ref, n, 1e-5);
        EXPECT_CLOSE("attention probs", p, p_ref, np, 1e-5);
        EXPECT_CLOSE("attention fwd, probs NULL == probs saved", out_np, out, n, 0);
        double worst = 0; /* rows of P sum to 1 */
        for (size_t r = 0; r < B * H * T; r++) {
            double s = 0;
            for (size_t j = 0; j < T; j++) s += p[r * T + j];
            worst = fmax(worst, fabs(s - 1));
        }
        EXPECT(worst < 1e-5, "attention: a row of probabilities sums to 1 %+g", worst);
        df_free(q), df_free(k), df_free(v), df_free(out), df_free(out_np), df_free(out_ref), df_free(p);
        df_free(p_ref);
    }
}

TEST(attention_backward_finite_differences) {
    static const size_t cfgs[][4] = {{2, 4, 9, 1}, {1, 4, 67, 2}, {2, 6, 5, 3}}; /* B, C, T, heads */
    for (size_t t = 0; t < sizeof cfgs / sizeof cfgs[0]; t++) {
        att_case c = {.B = cfgs[t][0], .C = cfgs[t][1], .T = cfgs[t][2], .heads = cfgs[t][3]};
        size_t n = c.B * c.C * c.T;
        c.L = (fd_loss){att_case_forward, zeros(n), rnd(n, 81, -1, 1), n};
        c.q = rnd(n, 82, -2, 2), c.k = rnd(n, 83, -2, 2), c.v = rnd(n, 84, -1, 1);
        c.probs = zeros(c.B * c.heads * c.T * c.T);
        att_case_forward(&c.L);
        float *dq = zeros(n), *dk = zeros(n), *dv = zeros(n);
        attention_backward(dq, dk, dv, c.L.g, c.q, c.k, c.v, c.probs, c.B, c.C, c.T, c.heads);
        float *g2[3] = {zeros(n), zeros(n), zeros(n)};
        for (int rep = 0; rep < 2; rep++)
            attention_backward(g2[0], g2[1], g2[2], c.L.g, c.q, c.k, c.v, c.probs, c.B, c.C, c.T, c.heads);
        char name[128];
        snprintf(name, sizeof name, "attention d/dq B%zu C%zu T%zu heads %zu", c.B, c.C, c.T, c.heads);
        EXPECT_GRAD(name, c.q, dq, n, fd_eval, &c, FD_H_NONLIN, FD_RTOL, FD_ATOL, FD_CHECKS);
        EXPECT_GRAD("attention d/dk", c.k, dk, n, fd_eval, &c, FD_H_NONLIN, FD_RTOL, FD_ATOL, FD_CHECKS);
        EXPECT_GRAD("attention d/dv", c.v, dv, n, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
        expect_doubled("attention dq twice", dq, g2[0], n);
        expect_doubled("attention dk twice", dk, g2[1], n);
        expect_doubled("attention dv twice", dv, g2[2], n);
        float *dv_only = zeros(n);
        attention_backward(NULL, NULL, dv_only, c.L.g, c.q, c.k, c.v, c.probs, c.B, c.C, c.T, c.heads);
        EXPECT_CLOSE("attention dv alone", dv_only, dv, n, 0);
        df_free(c.L.out), df_free(c.L.g), df_free(c.q), df_free(c.k), df_free(c.v), df_free(c.probs);
        df_free(dq), df_free(dk), df_free(dv), df_free(dv_only);
        for (int i = 0; i < 3; i++) df_free(g2[i]);
    }
}

/* q, k and v as the thirds of one (B, 3C, T) tensor: the bits of the separate tensors, forward (probabilities
 * saved and not, whole heads and row blocks, images or heads over threads) and backward (accumulating). */
TEST(attention_qkv_equals_separate) {
    static const size_t cfgs[][4] = {{2, 4, 9, 1}, {3, 16, 100, 2}, {1, 8, 300, 1}, {1, 6, 130, 3}}; /* B, C, T, heads */
    for (size_t t = 0; t < sizeof cfgs / sizeof cfgs[0]; t++) {
        size_t B = cfgs[t][0], C = cfgs[t][1], T = cfgs[t][2], H = cfgs[t][3], n = B * C * T, np = B * H * T * T;
        float *qkv = rnd(3 * n, 91, -2, 2), *part[3] = {zeros(n), zeros(n), zeros(n)};
        for (size_t b = 0; b < B; b++)
            for (int j = 0; j < 3; j++) memcpy(part[j] + b * C * T, qkv + (b * 3 + (size_t)j) * C * T, C * T * sizeof(float));
        float *out = zeros(n), *out_qkv = rnd(n, 92, -1, 1), *p = zeros(np), *p_qkv = rnd(np, 93, -1, 1);
        float *out_np = zeros(n), *out_np_qkv = rnd(n, 94, -1, 1);
        attention_forward(out, p, part[0], part[1], part[2], B, C, T, H);
        attention_forward_qkv(out_qkv, p_qkv, qkv, B, C, T, H);
        attention_forward(out_np, NULL, part[0], part[1], part[2], B, C, T, H);
        attention_forward_qkv(out_np_qkv, NULL, qkv, B, C, T, H);
        char name[128];
        snprintf(name, sizeof name, "attention_qkv fwd B%zu C%zu T%zu heads %zu", B, C, T, H);
        EXPECT_CLOSE(name, out_qkv, out, n, 0);
        EXPECT_CLOSE("attention_qkv probs", p_qkv, p, np, 0);
        EXPECT_CLOSE("attention_qkv fwd without probs", out_np_qkv, out_np, n, 0);
        float *dout = rnd(n, 95, -1, 1), *d[3], *dqkv = rnd(3 * n, 96, -1, 1);
        for (int j = 0; j < 3; j++) { /* the same starting values, to check that both accumulate */
            d[j] = zeros(n);
            for (size_t b = 0; b < B; b++)
                memcpy(d[j] + b * C * T, dqkv + (b * 3 + (size_t)j) * C * T, C * T * sizeof(float));
        }
        attention_backward(d[0], d[1], d[2], dout, part[0], part[1], part[2], p, B, C, T, H);
        attention_backward_qkv(dqkv, dout, qkv, p, B, C, T, H);
        for (int j = 0; j < 3; j++) {
            double worst = 0;
            for (size_t b = 0; b < B; b++)
                for (size_t i = 0; i < C * T; i++)
                    worst = fmax(worst, fabs(dqkv[(b * 3 + (size_t)j) * C * T + i] - d[j][b * C * T + i]));
            EXPECT(worst == 0, "attention_qkv backward: %s differs by %g", j == 0 ? "dq" : j == 1 ? "dk" : "dv", worst);
            df_free(part[j]), df_free(d[j]);
        }
        df_free(qkv), df_free(out), df_free(out_qkv), df_free(p), df_free(p_qkv), df_free(out_np), df_free(out_np_qkv);
        df_free(dout), df_free(dqkv);
    }
}

/* ---- activations and elementwise ---- */

typedef struct {
    fd_loss L;
    int op;
    float *a, *b;
    size_t B, C, H, W;
} ew_case;

enum { EW_SILU, EW_RELU, EW_ADD, EW_SCALE, EW_ADD_CHANNEL, EW_UPSAMPLE, EW_CONCAT, EW_COUNT };
static const char *ew_names[EW_COUNT] = {"silu", "relu", "add", "scale", "add_channel", "upsample2x", "concat"};

static void ew_case_forward(fd_loss *self) {
    ew_case *c = (ew_case *)self;
    size_t n = c->B * c->C * c->H * c->W, HW = c->H * c->W;
    switch (c->op) {
    case EW_SILU:
        silu_forward(c->L.out, c->a, n);
        break;
    case EW_RELU:
        relu_forward(c->L.out, c->a, n);
        break;
    case EW_ADD:
        add_forward(c->L.out, c->a, c->b, n);
        break;
    case EW_SCALE:
        scale_forward(c->L.out, c->a, -0.7f, n);
        break;
    case EW_ADD_CHANNEL:
        add_channel_forward(c->L.out, c->a, c->b, c->B, c->C, HW);
        break;
    case EW_UPSAMPLE:
        upsample2x_forward(c->L.out, c->a, c->B, c->C, c->H, c->W);
        break;
    case EW_CONCAT:
        concat_forward(c->L.out, c->a, c->b, c->B, c->C, c->C + 1, HW);
        break;
    }
}

/* Forward values against direct formulas, and the backward of every op against finite differences. */
TEST(elementwise_forward_and_finite_differences) {
    size_t B = 2, C = 3, H = 3, W = 5, HW = H * W, n = B * C * HW;
    for (int op = 0; op < EW_COUNT; op++) {
        ew_case c = {.op = op, .B = B, .C = C, .H = H, .W = W};
        size_t n_out = op == EW_UPSAMPLE ? 4 * n : op == EW_CONCAT ? B * (2 * C + 1) * HW : n;
        size_t n_b = op == EW_ADD_CHANNEL ? B * C : op == EW_CONCAT ? B * (C + 1) * HW : n;
        c.L = (fd_loss){ew_case_forward, zeros(n_out), rnd(n_out, 91, -1, 1), n_out};
        c.a = rnd(n, 92, -3, 3), c.b = rnd(n_b, 93, -1, 1);
        if (op == EW_RELU) /* keep away from the kink by more than the FD step */
            for (size_t i = 0; i < n; i++) c.a[i] += c.a[i] >= 0 ? 0.05f : -0.05f;
        ew_case_forward(&c.L);
        float *want = zeros(n_out), *da = zeros(n), *db = zeros(n_b);
        for (size_t i = 0; i < n; i++) {
            double x = c.a[i];
            size_t bc = i / HW, p = i % HW, bb = bc / C, ch = bc % C;
            switch (op) {
            case EW_SILU:
                want[i] = (float)(x / (1 + exp(-x)));
                break;
            case EW_RELU:
                want[i] = x > 0 ? (float)x : 0;
                break;
            case EW_ADD:
                want[i] = (float)(x + c.b[i]);
                break;
            case EW_SCALE:
                want[i] = (float)(-0.7 * x);
                break;
            case EW_ADD_CHANNEL:
                want[i] = (float)(x + c.b[bc]);
                break;
            case EW_UPSAMPLE:
                for (size_t dy = 0; dy < 2; dy++)
                    for (size_t dx = 0; dx < 2; dx++)
                        want[bc * 4 * HW + (2 * (p / W) + dy) * 2 * W + 2 * (p % W) + dx] = (float)x;
                break;
            case EW_CONCAT:
                want[(bb * (2 * C + 1) + ch) * HW + p] = (float)x;
                break;
            }
        }
        if (op == EW_CONCAT)
            for (size_t i = 0; i < n_b; i++) {
                size_t bb = i / ((C + 1) * HW), r = i % ((C + 1) * HW);
                want[bb * (2 * C + 1) * HW + C * HW + r] = c.b[i];
            }
        float *da1 = NULL, *db1 = NULL;
        for (int rep = 0; rep < 2; rep++) { /* twice: the second must double the first */
            if (rep == 1) da1 = copy(da, n), db1 = copy(db, n_b);
            switch (op) {
            case EW_SILU:
                silu_backward(da, c.L.g, c.a, n);
                break;
            case EW_RELU:
                relu_backward(da, c.L.g, c.a, n);
                break;
            case EW_ADD:
                add_backward(da, db, c.L.g, n);
                break;
            case EW_SCALE:
                scale_backward(da, c.L.g, -0.7f, n);
                break;
            case EW_ADD_CHANNEL:
                add_channel_backward(da, db, c.L.g, B, C, HW);
                break;
            case EW_UPSAMPLE:
                upsample2x_backward(da, c.L.g, B, C, H, W);
                break;
            case EW_CONCAT:
                concat_backward(da, db, c.L.g, B, C, C + 1, HW);
                break;
            }
        }
        char name[96];
        int has_db = op == EW_ADD || op == EW_ADD_CHANNEL || op == EW_CONCAT;
        snprintf(name, sizeof name, "%s backward twice, da", ew_names[op]);
        expect_doubled(name, da1, da, n);
        snprintf(name, sizeof name, "%s backward twice, db", ew_names[op]);
        if (has_db) expect_doubled(name, db1, db, n_b);
        memcpy(da, da1, n * sizeof(float)), memcpy(db, db1, n_b * sizeof(float));
        df_free(da1), df_free(db1);
        snprintf(name, sizeof name, "%s fwd", ew_names[op]);
        EXPECT_CLOSE(name, c.L.out, want, n_out, 1e-6);
        snprintf(name, sizeof name, "%s d/da", ew_names[op]);
        EXPECT_GRAD(name, c.a, da, n, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
        if (has_db) {
            snprintf(name, sizeof name, "%s d/db", ew_names[op]);
            EXPECT_GRAD(name, c.b, db, n_b, fd_eval, &c, FD_H, FD_RTOL, FD_ATOL, FD_CHECKS);
        }
        df_free(c.L.out), df_free(c.L.g), df_free(c.a), df_free(c.b), df_free(want), df_free(da), df_free(db);
    }
    /* in-place forms: out aliasing an input */
    float *a = rnd(n, 94, -1, 1), *b = rnd(n, 95, -1, 1), *want = zeros(n);
    for (size_t i = 0; i < n; i++) want[i] = a[i] + b[i];
    add_forward(a, a, b, n);
    EXPECT_CLOSE("add in place", a, want, n, 0);
    df_free(a), df_free(b), df_free(want);
}

/* add_backward_set and add_channel_backward_set: a gradient that is set comes out as accumulating into zeros
 * would leave it, whatever it held (NaN here), in each combination, with x + x (one tensor twice) too. */
TEST(add_backward_set_overwrites) {
    size_t B = 3, C = 5, HW = 7000, n = B * C * HW; /* past EW_PAR_MIN: over threads */
    float *g = rnd(n, 301, -1, 1), *start = rnd(n, 302, -1, 1);
    for (int set_a = 0; set_a <= 1; set_a++)
        for (int set_b = 0; set_b <= 1; set_b++) {
            float *da = copy(start, n), *db = copy(start, n), *wa = copy(start, n), *wb = copy(start, n);
            if (set_a) memset(wa, 0, n * sizeof(float));
            if (set_b) memset(wb, 0, n * sizeof(float));
            for (size_t i = 0; i < n; i++) {
                if (set_a) da[i] = NAN;
                if (set_b) db[i] = NAN;
            }
            add_backward(wa, wb, g, n);
            add_backward_set(da, set_a, db, set_b, g, n);
            char name[96];
            snprintf(name, sizeof name, "add_backward_set (%d, %d), da", set_a, set_b);
            EXPECT_CLOSE(name, da, wa, n, 0);
            snprintf(name, sizeof name, "add_backward_set (%d, %d), db", set_a, set_b);
            EXPECT_CLOSE(name, db, wb, n, 0);
            df_free(da), df_free(db), df_free(wa), df_free(wb);
        }
    float *dx = zeros(n), *want = zeros(n); /* x + x, its gradient set by the first input: 2 g */
    for (size_t i = 0; i < n; i++) dx[i] = NAN, want[i] = g[i] + g[i];
    add_backward_set(dx, 1, dx, 0, g, n);
    EXPECT_CLOSE("add_backward_set, x + x", dx, want, n, 0);
    float *dm = zeros(n), *dv = rnd(B * C, 303, -1, 1), *wm = zeros(n), *wv = copy(dv, B * C);
    for (size_t i = 0; i < n; i++) dm[i] = NAN;
    add_channel_backward(wm, wv, g, B, C, HW);
    add_channel_backward_set(dm, 1, dv, g, B, C, HW);
    EXPECT_CLOSE("add_channel_backward_set, the map", dm, wm, n, 0);
    EXPECT_CLOSE("add_channel_backward_set, the vector", dv, wv, B * C, 0);
    df_free(g), df_free(start), df_free(dx), df_free(want), df_free(dm), df_free(dv), df_free(wm), df_free(wv);
}

/* ---- timestep embedding ---- */

static const float emb_t[] = {0, 1, 17, 250.5f, 999};
#define EMB_N (sizeof emb_t / sizeof emb_t[0])
static const int emb_cfgs[][3] = {
    {32, 1, 0}, {32, 0, 1}, {33, 1, 1}, {7, 0, 0}, {128, 0, 1}}; /* dim, flip, shift */
#define EMB_CFGS (sizeof emb_cfgs / sizeof emb_cfgs[0])

/* Against the formula in double, within the error that float32 rounding of the exponent, exp and product
 * can cause: |d arg| <= |arg| (2e-7 |exponent| + 3e-7), plus the rounding of sin/cos. */
TEST(timestep_embedding_formula) {
    for (size_t t = 0; t < EMB_CFGS; t++) {
        size_t dim = (size_t)emb_cfgs[t][0], half = dim / 2;
        int flip = emb_cfgs[t][1];
        double shift = emb_cfgs[t][2];
        float *out = rnd(EMB_N * dim, 101, -1, 1);
        timestep_embedding(out, emb_t, EMB_N, dim, flip, (float)shift, 10000);
        double worst = 0;
        int bad = 0;
        for (size_t n = 0; n < EMB_N; n++)
            for (size_t i = 0; i < half; i++) {
                double e = -log(10000.0) * (double)i / ((double)half - shift), arg = emb_t[n] * exp(e);
                double tol = 2e-7 + fabs(arg) * (2e-7 * fabs(e) + 3e-7);
                double s = out[n * dim + (flip ? half : 0) + i], co = out[n * dim + (flip ? 0 : half) + i];
                double err = fmax(fabs(s - sin(arg)), fabs(co - cos(arg)));
                worst = fmax(worst, err / tol);
                bad += err > tol;
            }
        if (dim % 2)
            for (size_t n = 0; n < EMB_N; n++) bad += out[n * dim + dim - 1] != 0;
        printf("    timestep_embedding dim %zu flip %d shift %g: worst error / bound %.2f  %s\n", dim, flip, shift,
               worst, bad ? "MISMATCH" : "ok");
        EXPECT(!bad, "timestep_embedding dim %zu flip %d shift %g: %d values off the formula", dim, flip, shift,
               bad);
        df_free(out);
    }
}

/* Against diffusers' get_timestep_embedding run by Debian's torch (fails when /usr/bin/python3 or torch
 * is missing). The formula is that of diffusers' embeddings.py, restated. */
TEST(timestep_embedding_matches_torch) {
    static const char *script =
        "/usr/bin/python3 -c '\n"
        "import math, torch\n"
        "def gte(t, dim, flip, shift, max_period=10000):\n"
        "    half = dim // 2\n"
        "    e = -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32)\n"
        "    e = e / (half - shift)\n"
        "    emb = torch.exp(e)\n"
        "    emb = t[:, None].float() * emb[None, :]\n"
        "    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)\n"
        "    if flip: emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)\n"
        "    if dim % 2 == 1: emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))\n"
        "    return emb\n"
        "t = torch.tensor([0, 1, 17, 250.5, 999], dtype=torch.float32)\n"
        "for dim, flip, shift in [(32, 1, 0), (32, 0, 1), (33, 1, 1), (7, 0, 0), (128, 0, 1)]:\n"
        "    print(\" \".join(\"%.9g\" % x for x in gte(t, dim, flip, float(shift)).flatten().tolist()))\n"
        "' 2>/dev/null";
    FILE *p = popen(script, "r");
    size_t total = 0;
    for (size_t t = 0; t < EMB_CFGS; t++) total += EMB_N * (size_t)emb_cfgs[t][0];
    float *want = zeros(total);
    size_t got_n = 0;
    if (p) {
        char line[1 << 16];
        while (got_n < total && fgets(line, sizeof line, p)) {
            char *s = line, *end;
            for (double x = strtod(s, &end); end != s && got_n < total; x = strtod(s, &end)) {
                want[got_n++] = (float)x;
                s = end;
            }
        }
        pclose(p);
    }
    if (got_n != total) {
        EXPECT(0, "/usr/bin/python3 with torch gave %zu of %zu values (make deps installs python3-torch)", got_n, total);
        df_free(want);
        return;
    }
    size_t off = 0;
    for (size_t t = 0; t < EMB_CFGS; t++) {
        size_t dim = (size_t)emb_cfgs[t][0], n = EMB_N * dim;
        float *out = zeros(n);
        timestep_embedding(out, emb_t, EMB_N, dim, emb_cfgs[t][1], (float)emb_cfgs[t][2], 10000);
        double maxabs = 0;
        for (size_t i = 0; i < n; i++) maxabs = fmax(maxabs, fabs((double)out[i] - want[off + i]));
        printf("    timestep_embedding vs torch dim %zu flip %d shift %d: max|d| %.2e  %s\n", dim, emb_cfgs[t][1],
               emb_cfgs[t][2], maxabs, maxabs <= 1e-6 ? "ok" : "MISMATCH");
        EXPECT(maxabs <= 1e-6, "timestep_embedding differs from torch by %.3e (dim %zu)", maxabs, dim);
        off += n;
        df_free(out);
    }
    df_free(want);
}

/* ---- dropout ---- */

TEST(dropout_mask_and_backward) {
    size_t n = 100000;
    float p = 0.3f;
    float *in = rnd(n, 111, 0.5f, 1.5f), *out = zeros(n), *din = zeros(n), *ones = zeros(n);
    for (size_t i = 0; i < n; i++) ones[i] = 1;
    dropout_forward(out, in, n, p, 42, 7);
    dropout_backward(din, ones, n, p, 42, 7);
    size_t dropped = 0, bad_scale = 0, bad_mask = 0;
    for (size_t i = 0; i < n; i++) {
        dropped += out[i] == 0;
        if (out[i] != 0 && out[i] != in[i] * (1 / (1 - p))) bad_scale++;
        if ((out[i] != 0) != (din[i] != 0) || (din[i] != 0 && din[i] != 1 / (1 - p))) bad_mask++;
    }
    double frac = (double)dropped / (double)n; /* sd of the fraction: sqrt(p (1-p) / n) = 0.0014 */
    printf("    dropout p %.2f: dropped fraction %.4f\n", (double)p, frac);
    EXPECT(fabs(frac - p) < 0.01, "dropout dropped %.4f of the elements, expected %.2f", frac, (double)p);
    EXPECT(bad_scale == 0, "dropout: %zu kept elements not scaled by 1/(1-p)", bad_scale);
    EXPECT(bad_mask == 0, "dropout: backward mask differs from forward's at %zu elements", bad_mask);

    /* the mask is a pure function of (seed, stream): same again, different for another stream; in place */
    float *again = copy(in, n), *other = zeros(n);
    dropout_forward(again, again, n, p, 42, 7);
    dropout_forward(other, in, n, p, 42, 8);
    EXPECT(memcmp(again, out, n * sizeof(float)) == 0, "dropout is not reproducible (or fails in place)");
    EXPECT(memcmp(other, out, n * sizeof(float)) != 0, "dropout: streams 7 and 8 gave the same mask");

    /* the mask drawn once into bits gives the same values forward (in place too) and backward, at a length
     * that leaves a partial last word */
    size_t n2 = n - 13;
    uint32_t *keep = (uint32_t *)zeros((n2 + 31) / 32);
    float *o2 = zeros(n2), *d2 = zeros(n2), *w2 = zeros(n2);
    dropout_mask(keep, n2, p, 42, 7);
    dropout_apply(o2, in, keep, n2, p);
    EXPECT(memcmp(o2, out, n2 * sizeof(float)) == 0, "dropout_apply differs from dropout_forward");
    memcpy(o2, in, n2 * sizeof(float));
    dropout_apply(o2, o2, keep, n2, p);
    EXPECT(memcmp(o2, out, n2 * sizeof(float)) == 0, "dropout_apply in place differs from dropout_forward");
    dropout_backward_mask(d2, ones, keep, n2, p);
    dropout_backward(w2, ones, n2, p, 42, 7);
    EXPECT(memcmp(d2, w2, n2 * sizeof(float)) == 0, "dropout_backward_mask differs from dropout_backward");
    EXPECT(keep[(n2 - 1) / 32] >> (n2 % 32) == 0, "bits past the end are set");
    df_free(keep), df_free(o2), df_free(d2), df_free(w2);

    /* p == 0: identity forward, plain accumulation backward */
    float *g = rnd(n, 112, -1, 1), *acc = rnd(n, 113, -1, 1), *acc_want = copy(acc, n);
    dropout_forward(out, in, n, 0, 42, 7);
    EXPECT_CLOSE("dropout p=0 forward is a copy", out, in, n, 0);
    dropout_backward(acc, g, n, 0, 42, 7);
    for (size_t i = 0; i < n; i++) acc_want[i] += g[i];
    EXPECT_CLOSE("dropout p=0 backward is +=", acc, acc_want, n, 0);
    df_free(in), df_free(out), df_free(din), df_free(ones), df_free(again), df_free(other), df_free(g);
    df_free(acc), df_free(acc_want);
}

/* ---- losses ---- */

typedef struct {
    int l1;
    float *pred, *target;
    size_t n;
} loss_case;

static double loss_eval(void *ctx) {
    loss_case *c = ctx;
    return 0.5 * (c->l1 ? l1_forward(c->pred, c->target, c->n) : mse_forward(c->pred, c->target, c->n));
}

TEST(losses_values_and_finite_differences) {
    for (int l1 = 0; l1 < 2; l1++) {
        size_t n = 37;
        loss_case c = {.l1 = l1, .n = n, .pred = rnd(n, 121, -1, 1), .target = rnd(n, 122, -1, 1)};
        for (size_t i = 0; i < n; i++) /* keep |pred - target| > FD step for l1's kink */
            if (fabsf(c.pred[i] - c.target[i]) < 0.05f) c.pred[i] += 0.1f;
        double want = 0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)c.pred[i] - c.target[i];
            want += l1 ? fabs(d) : d * d;
        }
        want /= (double)n;
        double got = l1 ? l1_forward(c.pred, c.target, n) : mse_forward(c.pred, c.target, n);
        printf("    %s forward %.9g want %.9g\n", l1 ? "l1" : "mse", got, want);
        EXPECT(fabs(got - want) <= 1e-6 * want, "%s forward %.9g, want %.9g", l1 ? "l1" : "mse", got, want);
        float *dpred = zeros(n);
        if (l1)
            l1_backward(dpred, c.pred, c.target, n, 0.5f);
        else
            mse_backward(dpred, c.pred, c.target, n, 0.5f);
        EXPECT_GRAD(l1 ? "l1 d/dpred (scale 0.5)" : "mse d/dpred (scale 0.5)", c.pred, dpred, n, loss_eval, &c,
                    FD_H, FD_RTOL, 1e-4, FD_CHECKS);
        df_free(c.pred), df_free(c.target), df_free(dpred);
    }
    float a[3] = {1, 2, 3};
    EXPECT(mse_forward(a, a, 3) == 0 && l1_forward(a, a, 3) == 0, "a loss of equal tensors must be 0");
}

/* ---- determinism ---- */

/* Every output element is summed in the same order whatever the thread count: one thread and all threads
 * give bitwise-identical gemm, conv2d (both paths) and attention results. */
TEST(kernels_independent_of_thread_count) {
    size_t M = 150, N = 170, K = 300;
    float *A = rnd(M * K, 131, -1, 1), *Bm = rnd(K * N, 132, -1, 1), *C1 = zeros(M * N), *Cn = zeros(M * N);
    /* B = 1 (parallel gemm), B = 4 (by image), B = 10 and 9 (backward: chunks of images), B = 3 at 8x8 with
     * 32 channels (backward: each thread a range of the weight gradient's columns for the whole batch) */
    static const conv_cfg owned = {3, 32, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1, 1, "B=3, 3x3 at 8x8, 32->32"};
    const conv_cfg *cc[5] = {&conv_cfgs[8], &conv_cfgs[9], &conv_cfgs[10], &conv_cfgs[11], &owned};
    conv2d_dims d[5];
    float *in[5], *w[5], *o1[5], *on[5], *dw1[5], *dwn[5], *dx1[5], *dxn[5];
    for (int c = 0; c < 5; c++) {
        d[c] = conv_dims(cc[c]);
        size_t n_in = d[c].B * d[c].C_in * d[c].H * d[c].W, n_w = d[c].C_out * d[c].C_in * d[c].KH * d[c].KW;
        size_t n_out = d[c].B * d[c].C_out * conv2d_out_h(&d[c]) * conv2d_out_w(&d[c]);
        in[c] = rnd(n_in, 133, -1, 1), w[c] = rnd(n_w, 134, -1, 1), o1[c] = zeros(n_out), on[c] = zeros(n_out);
        dw1[c] = zeros(n_w), dwn[c] = zeros(n_w), dx1[c] = zeros(n_in), dxn[c] = zeros(n_in);
    }
    size_t aB = 2, aC = 16, aT = 100, aH = 2, an = aB * aC * aT, ap = aB * aH * aT * aT;
    float *q = rnd(an, 135, -2, 2), *k = rnd(an, 136, -2, 2), *v = rnd(an, 137, -1, 1);
    float *ao1 = zeros(an), *aon = zeros(an), *p1 = zeros(ap), *pn = zeros(ap), *dq1 = zeros(an), *dqn = zeros(an);
    /* batch 1 by the team: a Winograd convolution (one chunk of tiles) and attention's row blocks */
    conv2d_dims wd = {.B = 1, .C_in = 16, .C_out = 24, .H = 28, .W = 28, .KH = 3, .KW = 3, .stride = 1,
                      .pad_t = 1, .pad_b = 1, .pad_l = 1, .pad_r = 1};
    size_t wn_in = 16 * 28 * 28, wn_out = 24 * 28 * 28, bT = 300, bn = 8 * bT, hT = 196, hn = 8 * hT;
    float *win = rnd(wn_in, 138, -1, 1), *ww = rnd(24 * 16 * 9, 139, -1, 1), *wb = rnd(24, 140, -1, 1);
    float *wo1 = zeros(wn_out), *won = zeros(wn_out), *bo1 = zeros(bn), *bon = zeros(bn);
    float *ho1 = zeros(hn), *hon = zeros(hn);
    /* and at 14x14 (7 tile rows, which do not split evenly over 2 threads): the team on each chunk */
    conv2d_dims td = wd;
    td.H = td.W = 14;
    size_t tn_out = 24 * 14 * 14;
    float *to1 = zeros(tn_out), *ton = zeros(tn_out);
    int threads = df_threads();
    for (int pass = 0; pass < 2; pass++) {
        df_set_threads(pass == 0 ? 1 : threads);
        conv2d_forward(pass ? won : wo1, win, ww, wb, &wd);
        conv2d_forward(pass ? ton : to1, win, ww, wb, &td);
        attention_forward(pass ? bon : bo1, NULL, q, k, v, 1, 8, bT, 1);
        attention_forward(pass ? hon : ho1, NULL, q, k, v, 1, 8, hT, 1);
        gemm(0, 1, M, N, K, 1.0f, A, K, Bm, K, 0.0f, pass ? Cn : C1, N);
        for (int c = 0; c < 5; c++) {
            conv2d_forward(pass ? on[c] : o1[c], in[c], w[c], NULL, &d[c]);
            conv2d_backward(pass ? dxn[c] : dx1[c], pass ? dwn[c] : dw1[c], NULL, o1[c], in[c], w[c], &d[c]);
        }
        attention_forward(pass ? aon : ao1, pass ? pn : p1, q, k, v, aB, aC, aT, aH);
        attention_backward(pass ? dqn : dq1, NULL, NULL, v, q, k, v, p1, aB, aC, aT, aH);
    }
    printf("    %d threads against 1\n", df_threads());
    { /* and the owned-columns path against the definition */
        const conv2d_dims *od = &d[4];
        size_t n_in = od->B * od->C_in * od->H * od->W, n_w = od->C_out * od->C_in * 9;
        float *dwr = zeros(n_w), *dxr = zeros(n_in), *o4 = rnd(od->B * od->C_out * 64, 133, -1, 1);
        float *dwf = zeros(n_w);
        conv2d_backward(NULL, dwf, NULL, o4, in[4], w[4], od);
        conv2d_backward_ref(dxr, dwr, NULL, o4, in[4], w[4], od);
        EXPECT_CLOSE("B=3 3x3 8x8 weight gradient (columns per thread) vs ref", dwf, dwr, n_w, 1e-5);
        df_free(dwr), df_free(dxr), df_free(o4), df_free(dwf);
    }
    EXPECT_CLOSE("gemm, threads vs 1", Cn, C1, M * N, 0);
    for (int c = 0; c < 5; c++) {
        size_t n_in = d[c].B * d[c].C_in * d[c].H * d[c].W, n_w = d[c].C_out * d[c].C_in * d[c].KH * d[c].KW;
        size_t n_out = d[c].B * d[c].C_out * conv2d_out_h(&d[c]) * conv2d_out_w(&d[c]);
        EXPECT_CLOSE(cc[c]->what, on[c], o1[c], n_out, 0);
        EXPECT_CLOSE("conv2d dweight, threads vs 1", dwn[c], dw1[c], n_w, 0);
        EXPECT_CLOSE("conv2d din, threads vs 1", dxn[c], dx1[c], n_in, 0);
        df_free(in[c]), df_free(w[c]), df_free(o1[c]), df_free(on[c]);
        df_free(dw1[c]), df_free(dwn[c]), df_free(dx1[c]), df_free(dxn[c]);
    }
    EXPECT_CLOSE("attention fwd, threads vs 1", aon, ao1, an, 0);
    EXPECT(conv2d_winograd_applies(&wd) && conv2d_winograd_applies(&td), "the batch-1 cases should take the Winograd path");
    EXPECT_CLOSE("Winograd conv2d fwd B=1 28x28 (a chunk of tile rows per thread), threads vs 1", won, wo1, wn_out, 0);
    EXPECT_CLOSE("Winograd conv2d fwd B=1 14x14 (the team on each chunk), threads vs 1", ton, to1, tn_out, 0);
    EXPECT_CLOSE("attention fwd B=1 without probabilities (row blocks), threads vs 1", bon, bo1, bn, 0);
    EXPECT_CLOSE("attention fwd B=1 T=196 without probabilities (whole head), threads vs 1", hon, ho1, hn, 0);
    df_free(win), df_free(ww), df_free(wb), df_free(wo1), df_free(won), df_free(bo1), df_free(bon);
    df_free(ho1), df_free(hon);
    df_free(to1), df_free(ton);
    EXPECT_CLOSE("attention dq, threads vs 1", dqn, dq1, an, 0);
    df_free(A), df_free(Bm), df_free(C1), df_free(Cn), df_free(q), df_free(k), df_free(v), df_free(ao1);
    df_free(aon), df_free(p1), df_free(pn), df_free(dq1), df_free(dqn);
}

/* Every micro-kernel this CPU can run (portable C, AVX2, AVX-512, and in BF16 mode the portable pair kernel,
 * AVX-512 BF16's and AMX's tiles) against the reference, on shapes that cross every block edge (odd depths leave
 * a half pair), so the portable paths stay tested on machines that dispatch to a vector one. In BF16 mode
 * the oracle is the reference over BF16-rounded operands, and the result must differ from FP32 by rounding. */
TEST(gemm_every_isa_matches_ref) {
    static const char *isas[] = {"c", "avx2", "avx512", "amx"};
    static const size_t shapes[][3] = {{1, 1, 1}, {13, 17, 5}, {97, 130, 300}, {12, 16, 256}, {25, 33, 513}};
    const char *orig = gemm_isa();
    for (int q = 0; q < 4; q++) {
        if (gemm_force_isa(isas[q]) != 0) {
            printf("    %s: not supported by this CPU\n", isas[q]);
            continue;
        }
        for (int bf16 = 0; bf16 <= 1; bf16++) {
            gemm_set_bf16(bf16);
            double worst = 0, least_vs_fp32 = 1;
            for (int s = 0; s < 15; s++) /* five shapes, each with (alpha, beta) = (0.7, 0.5), (1, 0), (1, 1) */
                for (int ta = 0; ta <= 1; ta++)
                    for (int tb = 0; tb <= 1; tb++) {
                        size_t M = shapes[s % 5][0], N = shapes[s % 5][1], K = shapes[s % 5][2];
                        float alpha = s < 5 ? 0.7f : 1.0f, beta = s < 5 ? 0.5f : s < 10 ? 0.0f : 1.0f;
                        float *A = df_malloc(M * K * 4), *B = df_malloc(K * N * 4);
                        float *C = df_malloc(M * N * 4), *R = df_malloc(M * N * 4), *F = df_malloc(M * N * 4);
                        df_test_fill(A, M * K, 1 + s, -1, 1);
                        df_test_fill(B, K * N, 2 + s, -1, 1);
                        df_test_fill(C, M * N, 3 + s, -1, 1);
                        memcpy(R, C, M * N * 4), memcpy(F, C, M * N * 4);
                        gemm(ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta, C, N);
                        (bf16 ? gemm_bf16_ref : gemm_ref)(ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta,
                                                          R, N);
                        gemm_ref(ta, tb, M, N, K, alpha, A, ta ? M : K, B, tb ? K : N, beta, F, N);
                        double r = df_rel_err(C, R, M * N), rf = df_rel_err(C, F, M * N);
                        EXPECT(r < 1e-5, "%s%s gemm %zux%zux%zu ta %d tb %d: relative error %.2e", isas[q],
                               bf16 ? " bf16" : "", M, N, K, ta, tb, r);
                        if (r > worst) worst = r;
                        if (K > 1 && rf < least_vs_fp32) least_vs_fp32 = rf;
                        df_free(A), df_free(B), df_free(C), df_free(R), df_free(F);
                    }
            printf("    %s%s: 60 shapes x transposes x scalings agree with the reference (worst %.1e)", isas[q],
                   bf16 ? ", BF16 mode" : "", worst);
            if (bf16) {
                printf(", %s pair kernel, %.1e from FP32 at least", gemm_bf16_isa(), least_vs_fp32);
                EXPECT(least_vs_fp32 > 1e-4, "BF16 mode gives FP32 results (%.1e): no rounding?", least_vs_fp32);
            }
            printf("\n");
        }
        gemm_set_bf16(0);
    }
    gemm_force_isa(orig);
}

/* gemm_prepacked_bias (the bias added as each block is stored) gives bitwise what filling C with the bias and
 * accumulating gives, on every kernel this CPU runs, FP32 and BF16, 1 and all threads, on shapes that take the
 * two-panel, one-panel and narrow edge kernels, two depth slices, and the few-tile splits by rows and columns. */
TEST(gemm_prepacked_bias_same_bits_as_fill) {
    static const char *isas[] = {"c", "avx2", "avx512", "amx"};
    static const size_t shapes[][3] = {{384, 196, 128}, {128, 49, 1152}, {36, 300, 300}, {13, 17, 5}, {64, 52, 576}};
    const char *orig = gemm_isa();
    int threads = df_threads(), cases = 0;
    for (int q = 0; q < 4; q++) {
        if (gemm_force_isa(isas[q]) != 0) continue;
        for (int bf16 = 0; bf16 <= 1; bf16++) {
            gemm_set_bf16(bf16);
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                for (int pass = 0; pass < 2; pass++) {
                    size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                    df_set_threads(pass ? threads : 1);
                    float *A = rnd(M * K, 151 + s, -1, 1), *B = rnd(K * N, 152 + s, -1, 1);
                    float *bias = rnd(M, 153 + s, -1, 1), *ap = df_malloc(gemm_packed_a_size(M, K) * 4);
                    float *C = zeros(M * N), *F = zeros(M * N);
                    gemm_pack_a(ap, 0, A, K, M, K, 0);
                    gemm_plain_b_ctx b = {0, B, N};
                    gemm_prepacked_bias(M, N, K, ap, gemm_plain_b, &b, bias, C, N);
                    for (size_t i = 0; i < M; i++)
                        for (size_t j = 0; j < N; j++) F[i * N + j] = bias[i];
                    gemm_prepacked(M, N, K, 1.0f, ap, gemm_plain_b, &b, 1.0f, F, N);
                    EXPECT(!memcmp(C, F, M * N * 4), "%s%s %zux%zux%zu on %d thread(s): bias added at the store differs from C filled with it",
                           isas[q], bf16 ? " bf16" : "", M, N, K, pass ? threads : 1);
                    cases++;
                    df_free(A), df_free(B), df_free(bias), df_free(ap), df_free(C), df_free(F);
                }
        }
        gemm_set_bf16(0);
    }
    df_set_threads(threads);
    gemm_force_isa(orig);
    printf("    %d cases (kernels x precisions x shapes x 1 and %d threads): bitwise equal\n", cases, threads);
}

/* A packer gemm does not know, so that it packs: gemm_plain_b's copy. */
static void packing_plain_b(float *dst, size_t p0, size_t kc, size_t j0, size_t nc, const void *ctx) {
    gemm_plain_b(dst, p0, kc, j0, nc, ctx);
}

/* A plain B of row stride up to 1024 is read in place by the AVX-512 kernels (not packed): bitwise what packing
 * it gives, with beta 0 and 1 and a bias, on 1 and all threads, for shapes that take every kernel (two panels,
 * one, a masked edge of 5-15 columns, the narrow 1-4), two depth slices, a stride of exactly 16 (one panel)
 * and of 1024, and the few-tile splits by rows and by columns. */
TEST(gemm_b_in_place_same_bits_as_packed) {
    static const size_t shapes[][4] = {{128, 49, 300, 49}, {36, 52, 300, 60}, {64, 196, 128, 196}, {13, 17, 5, 17},
                                       {12, 16, 256, 16},  {25, 9, 513, 9},   {130, 70, 600, 1024}, {384, 1, 64, 1}};
    int threads = df_threads(), cases = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int mode = 0; mode < 3; mode++) /* beta 0, beta 1, bias */
            for (int pass = 0; pass < 2; pass++) {
                size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ldb = shapes[s][3];
                df_set_threads(pass ? threads : 1);
                float *A = rnd(M * K, 161 + s, -1, 1), *B = rnd(K * ldb, 162 + s, -1, 1), *bias = rnd(M, 163, -1, 1);
                float *C = rnd(M * N, 164 + s, -1, 1), *P = copy(C, M * N), *ap = df_malloc(gemm_packed_a_size(M, K) * 4);
                gemm_pack_a(ap, 0, A, K, M, K, 0);
                gemm_plain_b_ctx b = {0, B, ldb};
                if (mode == 2) {
                    gemm_prepacked_bias(M, N, K, ap, gemm_plain_b, &b, bias, C, N);
                    gemm_prepacked_bias(M, N, K, ap, packing_plain_b, &b, bias, P, N);
                } else {
                    gemm_prepacked(M, N, K, 1.0f, ap, gemm_plain_b, &b, (float)mode, C, N);
                    gemm_prepacked(M, N, K, 1.0f, ap, packing_plain_b, &b, (float)mode, P, N);
                }
                EXPECT(!memcmp(C, P, M * N * 4), "%zux%zux%zu (B's stride %zu) %s on %d thread(s): B in place differs from packed",
                       M, N, K, ldb, mode == 2 ? "bias" : mode ? "beta 1" : "beta 0", pass ? threads : 1);
                cases++;
                df_free(A), df_free(B), df_free(bias), df_free(C), df_free(P), df_free(ap);
            }
    df_set_threads(threads);
    printf("    %d cases (%s kernels): bitwise equal\n", cases, gemm_isa());
}

/* With beta 0 and one depth slice (K <= 256), alpha goes to the AVX-512 kernels, which scale the sums as they
 * store them (attention's scores, alpha = 1 / sqrt(dh)): C is bitwise alpha times the alpha-1 product, rounded
 * once, as gemm_write_block gives it; with B in place and packed (a row stride over 1024), every kernel (two
 * panels, one, the narrow edge), 1 and all threads. */
TEST(gemm_alpha_scales_the_sums) {
    static const size_t shapes[][4] = {{196, 196, 128, 196}, {128, 49, 256, 49}, {37, 52, 100, 1100}, {13, 3, 7, 3}};
    int threads = df_threads(), cases = 0;
    const float alpha = 0.08838834764831845f; /* 1 / sqrt(128) */
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int pass = 0; pass < 2; pass++) {
            size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ldb = shapes[s][3];
            df_set_threads(pass ? threads : 1);
            float *A = rnd(M * K, 171 + s, -1, 1), *B = rnd(K * ldb, 172 + s, -1, 1);
            float *C = zeros(M * N), *one = zeros(M * N);
            gemm(0, 0, M, N, K, alpha, A, K, B, ldb, 0.0f, C, N);
            gemm(0, 0, M, N, K, 1.0f, A, K, B, ldb, 0.0f, one, N);
            int same = 1;
            for (size_t i = 0; i < M * N; i++) same &= C[i] == alpha * one[i];
            EXPECT(same, "%zux%zux%zu (B's stride %zu) on %d thread(s): alpha's product is not alpha times the sums",
                   M, N, K, ldb, pass ? threads : 1);
            cases++;
            df_free(A), df_free(B), df_free(C), df_free(one);
        }
    df_set_threads(threads);
    printf("    %d cases (%s kernels): bitwise alpha times the alpha-1 sums\n", cases, gemm_isa());
}

#include "../src/kernels/vmath.h"

/* The vectorisable exp used by SiLU against double-precision exp: within 2 ulp-equivalent (relative 2.4e-7)
 * over [-87, 88], and the clamps behave (no inf, no NaN). */
TEST(vexpf_accuracy) {
    double worst = 0, worst_x = 0;
    for (int i = 0; i <= 2000000; i++) {
        float x = -87.0f + 175.0f * (float)i / 2000000.0f;
        double want = exp((double)x), got = df_vexpf(x), rel = fabs(got - want) / want;
        if (rel > worst) worst = rel, worst_x = x;
    }
    printf("    worst relative error %.2e at x = %.4f\n", worst, worst_x);
    EXPECT(worst < 2.4e-7, "df_vexpf relative error %.3e at %g", worst, worst_x);
    EXPECT(isfinite(df_vexpf(1000.0f)) && df_vexpf(-1000.0f) >= 0 && df_vexpf(-1000.0f) < 1e-37f,
           "clamps: exp(1000) -> %g, exp(-1000) -> %g", df_vexpf(1000.0f), df_vexpf(-1000.0f));
    float big = 1e30f;
    EXPECT(big / (1.0f + df_vexpf(-big)) == big && -big / (1.0f + df_vexpf(big)) <= 0, "silu at +-1e30");
}

/* Winograd F(2x2, 3x3) against the direct reference: even and odd image sizes, batches, channels, bias. */
/* The fused adds of a sampling graph (conv2d_forward_winograd_packed_add) against the convolution and then
 * add_channel_forward or add_forward: the same bits, on the AVX-512 rows (W <= 32) and the portable ones, by
 * chunks (B = 5) and at batch 1 on the team; the output written while res is read from another buffer. */
TEST(conv2d_winograd_fused_adds_same_bits) {
    static const size_t cfg[][4] = {{5, 16, 24, 28}, {1, 16, 16, 28}, {1, 32, 16, 14}, {2, 8, 8, 40}, {1, 8, 12, 33}};
    for (int c = 0; c < 5; c++) {
        conv2d_dims d = {.B = cfg[c][0], .C_in = cfg[c][1], .C_out = cfg[c][2], .H = cfg[c][3], .W = cfg[c][3],
                         .KH = 3, .KW = 3, .stride = 1, .pad_t = 1, .pad_b = 1, .pad_l = 1, .pad_r = 1};
        size_t ni = d.B * d.C_in * d.H * d.W, nw = d.C_out * d.C_in * 9, no = d.B * d.C_out * d.H * d.W;
        float *in = rnd(ni, 141, -1, 1), *w = rnd(nw, 142, -0.3f, 0.3f), *b = rnd(d.C_out, 143, -1, 1);
        float *chan = rnd(d.B * d.C_out, 144, -1, 1), *res = rnd(no, 145, -1, 1);
        float *Up = df_malloc(conv2d_winograd_weights_size(&d) * 4), *conv = zeros(no), *want = zeros(no);
        float *got = zeros(no);
        conv2d_winograd_pack_weights(Up, w, &d);
        conv2d_forward_winograd_packed(conv, in, Up, b, &d);
        char name[96];
        add_channel_forward(want, conv, chan, d.B, d.C_out, d.H * d.W);
        conv2d_forward_winograd_packed_add(got, in, Up, b, &d, chan, NULL);
        snprintf(name, sizeof name, "conv + add_channel fused B%zu %zu->%zu %zux%zu", d.B, d.C_in, d.C_out, d.H, d.W);
        EXPECT_CLOSE(name, got, want, no, 0);
        add_forward(want, res, conv, no);
        conv2d_forward_winograd_packed_add(got, in, Up, b, &d, NULL, res);
        EXPECT_CLOSE("conv + add fused", got, want, no, 0);
        df_free(in), df_free(w), df_free(b), df_free(chan), df_free(res), df_free(Up), df_free(conv);
        df_free(want), df_free(got);
    }
}

/* Winograd F(4x4, 3x3), the inference graphs' forward: against the reference at its own tolerance (its error,
 * printed, is a few times F(2x2, 3x3)'s), the same bits through conv2d_forward_packed and
 * conv2d_forward_winograd4, the fused adds with the bits of the adds run apart, and image by image the same bits
 * in any batch and on any thread count (batch 1 takes the team on each chunk, batch 7 chunks per thread).
 * 28x28 and 32x32 take the AVX-512 rows where the CPU has them, 33x33 and 40x40 the portable ones. */
TEST(conv2d_winograd4_matches_ref) {
    static const size_t cfg[][4] = {{7, 16, 24, 28}, {2, 64, 64, 28}, {7, 9, 13, 29}, {3, 8, 16, 32}, {2, 12, 8, 33},
                                    {2, 16, 16, 40}};
    int threads = df_threads();
    for (int c = 0; c < 6; c++) {
        conv2d_dims d = {.B = cfg[c][0], .C_in = cfg[c][1], .C_out = cfg[c][2], .H = cfg[c][3], .W = cfg[c][3],
                         .KH = 3, .KW = 3, .stride = 1, .pad_t = 1, .pad_b = 1, .pad_l = 1, .pad_r = 1};
        EXPECT(conv2d_winograd4_applies(&d) || gemm_bf16_on(), "config %d should take F(4x4, 3x3)", c);
        size_t ni = d.B * d.C_in * d.H * d.W, nw = d.C_out * d.C_in * 9, no = d.B * d.C_out * d.H * d.W;
        size_t img = d.C_out * d.H * d.W;
        float *in = rnd(ni, 151 + c, -1, 1), *w = rnd(nw, 161 + c, -0.3f, 0.3f), *b = rnd(d.C_out, 171, -1, 1);
        float *chan = rnd(d.B * d.C_out, 181, -1, 1), *res = rnd(no, 191, -1, 1);
        float *Up = df_malloc(conv2d_winograd4_weights_size(&d) * 4), *got = zeros(no), *want = zeros(no);
        float *two = zeros(no), *one = zeros(img);
        conv2d_winograd4_pack_weights(Up, w, &d);
        conv2d_forward_ref(want, in, w, b, &d);
        conv2d_forward_winograd4_packed_add(got, in, Up, b, &d, NULL, NULL);
        char name[96];
        snprintf(name, sizeof name, "winograd F(4x4) B%zu %zu->%zu %zux%zu", d.B, d.C_in, d.C_out, d.H, d.W);
        EXPECT_CLOSE(name, got, want, no, 5e-6); /* measured 0.7 to 1.7e-6; F(2x2, 3x3) 1 to 3e-7 */
        if (conv2d_winograd4_applies(&d)) { /* conv2d_forward_packed on conv2d_pack_weights' weights: the same */
            float *wp = df_malloc(conv2d_weights_packed_size(&d) * 4);
            conv2d_pack_weights(wp, w, &d);
            conv2d_forward_packed(two, in, wp, b, &d);
            EXPECT(!memcmp(two, got, no * 4), "conv2d_forward_packed must take F(4x4, 3x3) for %s", name);
            conv2d_forward_winograd4(two, in, w, b, &d); /* unpacked inference graphs */
            EXPECT(!memcmp(two, got, no * 4), "conv2d_forward_winograd4 differs from the packed weights' %s", name);
            df_free(wp);
        }
        for (int pass = 0; pass < 2; pass++) { /* each image alone, on 1 thread and on all */
            df_set_threads(pass ? threads : 1);
            conv2d_dims d1 = d;
            d1.B = 1;
            for (int k = 0; k < 2; k++) { /* the first image and the last */
                size_t i = k ? d.B - 1 : 0;
                conv2d_forward_winograd4_packed_add(one, in + i * d.C_in * d.H * d.W, Up, b, &d1, NULL, NULL);
                EXPECT(!memcmp(one, got + i * img, img * 4), "%s: image %zu alone on %d threads differs", name, i,
                       pass ? threads : 1);
            }
            if (pass) { /* and the whole batch on 1 thread */
                df_set_threads(1);
                conv2d_forward_winograd4_packed_add(two, in, Up, b, &d, NULL, NULL);
                EXPECT(!memcmp(two, got, no * 4), "%s: the batch on 1 thread differs", name);
            }
        }
        df_set_threads(threads);
        add_channel_forward(want, got, chan, d.B, d.C_out, d.H * d.W);
        conv2d_forward_winograd4_packed_add(two, in, Up, b, &d, chan, NULL);
        EXPECT_CLOSE("  + add_channel fused", two, want, no, 0);
        add_forward(want, res, got, no);
        conv2d_forward_winograd4_packed_add(two, in, Up, b, &d, NULL, res);
        EXPECT_CLOSE("  + add fused", two, want, no, 0);
        df_free(in), df_free(w), df_free(b), df_free(chan), df_free(res), df_free(Up), df_free(got);
        df_free(want), df_free(two), df_free(one);
    }
}

/* The few-channel paths (conv_out; conv_in's weight gradient): 64->1 and 1->64 at 28x28, 16->3 with a 5x3
 * kernel and asymmetric padding, 64->4 on rows of 200 (several blocks of 32 columns), against the definition
 * (forward, input and weight gradients), the packed weights' bits, image 0 the same alone as in the batch, the
 * same bits on one thread; with the AVX-512 rows where the CPU has them, then the portable ones. */
TEST(conv2d_few_channels_matches_ref) {
  for (int portable = 0; portable <= 1; portable++) {
    conv2d_force_portable_packers(portable);
    static const size_t cfg[][9] = {/* B, C_in, C_out, H, W, KH, KW, pad_t/pad_l, pad_b/pad_r */
                                    {6, 64, 1, 28, 28, 3, 3, 1, 1},
                                    {5, 1, 64, 28, 28, 3, 3, 1, 1},
                                    {3, 16, 3, 9, 11, 5, 3, 2, 0},
                                    {2, 64, 4, 3, 200, 3, 3, 1, 1}};
    int threads = df_threads();
    for (int c = 0; c < 4; c++) {
        conv2d_dims d = {.B = cfg[c][0], .C_in = cfg[c][1], .C_out = cfg[c][2], .H = cfg[c][3], .W = cfg[c][4],
                         .KH = cfg[c][5], .KW = cfg[c][6], .stride = 1, .pad_t = cfg[c][7], .pad_b = cfg[c][8],
                         .pad_l = cfg[c][7], .pad_r = cfg[c][8]};
        EXPECT(conv2d_few_channels(&d) == (d.C_out <= CONV_FEW) && conv2d_weight_grad_few_applies(&d),
               "config %d: the wrong few-channel paths", c);
        size_t Ho = conv2d_out_h(&d), Wo = conv2d_out_w(&d), ni = d.B * d.C_in * d.H * d.W;
        size_t nw = d.C_out * d.C_in * d.KH * d.KW, no = d.B * d.C_out * Ho * Wo, img = d.C_out * Ho * Wo;
        float *in = rnd(ni, 201 + c, -1, 1), *w = rnd(nw, 211 + c, -0.3f, 0.3f), *b = rnd(d.C_out, 221, -1, 1);
        float *out = zeros(no), *ref = zeros(no), *packed = zeros(no), *one = zeros(no), *out1 = zeros(no);
        float *wp = df_malloc(conv2d_weights_packed_size(&d) * sizeof(float));
        conv2d_pack_weights(wp, w, &d);
        conv2d_forward(out, in, w, b, &d);
        conv2d_forward_ref(ref, in, w, b, &d);
        conv2d_forward_packed(packed, in, wp, b, &d);
        conv2d_dims d1 = d;
        d1.B = 1;
        conv2d_forward(one, in, w, b, &d1);
        char name[160];
        snprintf(name, sizeof name, "few channels (%s) %zu->%zu at %zux%zu, %zux%zu kernel: fwd vs ref",
                 portable ? "portable" : "this CPU", d.C_in, d.C_out, d.H, d.W, d.KH, d.KW);
        EXPECT_CLOSE(name, out, ref, no, 1e-5);
        EXPECT_CLOSE("few channels: packed weights, same bits", packed, out, no, 0);
        EXPECT_CLOSE("few channels: image 0 alone, same bits", one, out, img, 0);
        float *dout = rnd(no, 231 + c, -1, 1), *din = rnd(ni, 241, -1, 1), *dw = rnd(nw, 251, -1, 1);
        float *din_r = copy(din, ni), *dw_r = copy(dw, nw), *din1 = copy(din, ni), *dw1 = copy(dw, nw);
        conv2d_backward(din, dw, NULL, dout, in, w, &d);
        conv2d_backward_ref(din_r, dw_r, NULL, dout, in, w, &d);
        EXPECT_CLOSE("few channels: din vs ref", din, din_r, ni, 1e-5);
        EXPECT_CLOSE("few channels: dweight vs ref", dw, dw_r, nw, 1e-5);
        df_set_threads(1);
        conv2d_forward(out1, in, w, b, &d);
        conv2d_backward(din1, dw1, NULL, dout, in, w, &d);
        df_set_threads(threads);
        EXPECT_CLOSE("few channels: forward on 1 thread, same bits", out1, out, no, 0);
        EXPECT_CLOSE("few channels: din on 1 thread, same bits", din1, din, ni, 0);
        EXPECT_CLOSE("few channels: dweight on 1 thread, same bits", dw1, dw, nw, 0);
        df_free(in), df_free(w), df_free(b), df_free(out), df_free(ref), df_free(packed), df_free(one), df_free(out1);
        df_free(wp), df_free(dout), df_free(din), df_free(dw), df_free(din_r), df_free(dw_r), df_free(din1);
        df_free(dw1);
    }
  }
  conv2d_force_portable_packers(0);
}

TEST(conv2d_winograd_matches_ref) {
    static const size_t cfg[][5] = {{1, 8, 8, 4, 4},     {2, 16, 24, 7, 7},   {3, 32, 8, 28, 28},
                                    {2, 9, 13, 5, 6},    {1, 64, 64, 14, 14}, {24, 16, 16, 14, 14},
                                    {11, 8, 12, 15, 17}};
    for (int c = 0; c < 7; c++) {
        conv2d_dims d = {.B = cfg[c][0], .C_in = cfg[c][1], .C_out = cfg[c][2], .H = cfg[c][3], .W = cfg[c][4],
                         .KH = 3, .KW = 3, .stride = 1, .pad_t = 1, .pad_b = 1, .pad_l = 1, .pad_r = 1};
        EXPECT(conv2d_winograd_shape(&d), "config %d should be a Winograd shape", c);
        size_t ni = d.B * d.C_in * d.H * d.W, nw = d.C_out * d.C_in * 9, no = d.B * d.C_out * d.H * d.W;
        float *in = df_malloc(ni * 4), *w = df_malloc(nw * 4), *b = df_malloc(d.C_out * 4);
        float *got = df_malloc(no * 4), *want = df_malloc(no * 4), *got2 = df_malloc(no * 4);
        df_test_fill(in, ni, 10 + c, -1, 1);
        df_test_fill(w, nw, 20 + c, -0.3f, 0.3f);
        df_test_fill(b, d.C_out, 30 + c, -1, 1);
        conv2d_forward_winograd(got, in, w, c % 2 ? NULL : b, &d);
        conv2d_forward_ref(want, in, w, c % 2 ? NULL : b, &d);
        conv2d_forward(got2, in, w, c % 2 ? NULL : b, &d);
        char name[96];
        snprintf(name, sizeof name, "winograd B%zu %zu->%zu %zux%zu", d.B, d.C_in, d.C_out, d.H, d.W);
        EXPECT_CLOSE(name, got, want, no, 1e-5);
        if (conv2d_winograd4_applies(&d)) { /* 28x28 and up: F(4x4, 3x3)'s bits */
            float *got4 = df_malloc(no * 4);
            conv2d_forward_winograd4(got4, in, w, c % 2 ? NULL : b, &d);
            EXPECT(!memcmp(got4, got2, no * 4), "conv2d_forward must take the F(4x4, 3x3) path for %s", name);
            df_free(got4);
        } else if (conv2d_winograd_applies(&d))
            EXPECT(!memcmp(got, got2, no * 4), "conv2d_forward must take the Winograd path for %s", name);
        else
            EXPECT_CLOSE("conv2d_forward (direct path) vs reference", got2, want, no, 1e-5);
        /* the input gradient: by Winograd where both directions have the tiles for it, else by col2im */
        conv2d_dims t = d;
        t.C_in = d.C_out, t.C_out = d.C_in;
        float *gout = df_malloc(no * 4), *din = df_calloc(ni, 4), *din_ref = df_calloc(ni, 4);
        df_test_fill(gout, no, 40 + c, -1, 1);
        df_test_fill(din, ni, 50 + c, -1, 1); /* backward accumulates: start both from the same values */
        memcpy(din_ref, din, ni * 4);
        conv2d_backward(din, NULL, NULL, gout, in, w, &d);
        conv2d_backward_ref(din_ref, NULL, NULL, gout, in, w, &d);
        snprintf(name, sizeof name, "  din B%zu %zu->%zu %zux%zu (%s)", d.B, d.C_in, d.C_out, d.H, d.W,
                 conv2d_winograd_applies(&d) && conv2d_winograd_applies(&t) ? "Winograd" : "col2im");
        EXPECT_CLOSE(name, din, din_ref, ni, 1e-5);
        /* the weight gradient by Winograd, accumulated onto what is there, against the reference (and the
         * same bits at 1 thread: each position's GEMM sums the chunks in order) */
        float *dw = df_malloc(nw * 4), *dw_ref = df_malloc(nw * 4), *dw1 = df_malloc(nw * 4);
        df_test_fill(dw, nw, 60 + c, -1, 1);
        memcpy(dw_ref, dw, nw * 4), memcpy(dw1, dw, nw * 4);
        conv2d_weight_grad_winograd(dw, gout, in, &d);
        conv2d_backward_ref(NULL, dw_ref, NULL, gout, in, w, &d);
        snprintf(name, sizeof name, "  dweight B%zu %zu->%zu %zux%zu (Winograd)", d.B, d.C_in, d.C_out, d.H, d.W);
        EXPECT_CLOSE(name, dw, dw_ref, nw, 1e-5);
        int threads = df_threads();
        df_set_threads(1);
        conv2d_weight_grad_winograd(dw1, gout, in, &d);
        df_set_threads(threads);
        EXPECT(!memcmp(dw, dw1, nw * 4), "Winograd dweight differs between %d threads and 1", threads);
        df_free(dw), df_free(dw_ref), df_free(dw1);
        df_free(gout), df_free(din), df_free(din_ref);
        df_free(in), df_free(w), df_free(b), df_free(got), df_free(want), df_free(got2);
    }
    conv2d_dims small = {.B = 1, .C_in = 4, .C_out = 4, .H = 8, .W = 8, .KH = 3, .KW = 3, .stride = 1, .pad_t = 1,
                         .pad_b = 1, .pad_l = 1, .pad_r = 1};
    EXPECT(!conv2d_winograd_shape(&small), "4 channels should stay on the direct path");
    small.C_in = small.C_out = 16, small.stride = 2;
    EXPECT(!conv2d_winograd_shape(&small), "stride 2 should stay on the direct path");
    conv2d_dims big = {.B = 64, .C_in = 64, .C_out = 64, .H = 28, .W = 28, .KH = 3, .KW = 3, .stride = 1, .pad_t = 1,
                       .pad_b = 1, .pad_l = 1, .pad_r = 1};
    EXPECT(conv2d_winograd_applies(&big), "a batch of 64 28x28 images should use Winograd");
}
