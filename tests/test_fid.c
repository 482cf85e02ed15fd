/* test_fid.c: FID's numerical core (src/eval/fid.h) and .npz archives (src/io/npz.h).
 *
 * Against pytorch-fid (tests/ref/fid_ref.py runs its calculate_frechet_distance, scipy.linalg.sqrtm and all):
 * the Frechet distance on random statistics, well-conditioned and rank-deficient. Against mathematics: cases
 * with a closed form (isotropic and diagonal covariances, a rank-1 pair on which sqrtm fails and pytorch-fid
 * retries). Against numpy: the streaming mean and covariance fed in uneven batches, and .npz files both ways
 * (np.savez, np.savez_compressed, float32; C-written files read by np.load). Bad files fail cleanly. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/rng.h"
#include "eval/fid.h"
#include "io/file.h"
#include "io/npy.h"
#include "io/npz.h"
#include "test.h"

#define REF "/usr/bin/python3 tests/ref/fid_ref.py"

/* ---- helpers ---- */

/* n x d features x_j = s_j z_j + (u W)_j / sqrt(K) + m_j + offset: z (n x d) and u (n x K, K = 24) standard
 * normal, W (K x d) normal, scales s_j in [0.2, 2], m standard normal: full rank and correlated. The first
 * `dead` columns are constant (a feature that never fires). */
static float *make_feats(size_t n, size_t d, uint32_t seed, double offset, size_t dead) {
    enum { K = 24 };
    float *z = malloc(n * d * sizeof(float)), *u = malloc(n * K * sizeof(float)), *w = malloc(K * d * sizeof(float));
    float *m = malloc(d * sizeof(float)), *sc = malloc(d * sizeof(float)), *x = malloc(n * d * sizeof(float));
    df_rng_normal(z, n * d, 1, df_stream(DF_STREAM_TEST, seed, 1), 0);
    df_rng_normal(u, n * K, 1, df_stream(DF_STREAM_TEST, seed, 2), 0);
    df_rng_normal(w, K * d, 1, df_stream(DF_STREAM_TEST, seed, 3), 0);
    df_rng_normal(m, d, 1, df_stream(DF_STREAM_TEST, seed, 4), 0);
    df_rng_uniform(sc, d, 1, df_stream(DF_STREAM_TEST, seed, 5), 0);
    for (size_t r = 0; r < n; r++)
        for (size_t j = 0; j < d; j++) {
            double v = 0;
            for (size_t k = 0; k < K; k++) v += (double)u[r * K + k] * w[k * d + j];
            v = (0.2 + 1.8 * sc[j]) * z[r * d + j] + v / sqrt((double)K) + m[j] + offset;
            x[r * d + j] = j < dead ? 0.25f : (float)v;
        }
    free(z), free(u), free(w), free(m), free(sc);
    return x;
}

/* Statistics of n x d features through the accumulator, in one batch. */
static void stats_of(df_fid_stats *s, const float *x, size_t n, size_t d) {
    df_fid_acc acc;
    df_fid_acc_init(&acc, d);
    EXPECT(df_fid_acc_add(&acc, x, n) == 0, "df_fid_acc_add: %s", df_errmsg());
    EXPECT(df_fid_acc_finish(&acc, s) == 0, "df_fid_acc_finish: %s", df_errmsg());
    df_fid_acc_free(&acc);
}

static double trace(const df_fid_stats *s) {
    double t = 0;
    for (size_t j = 0; j < s->dim; j++) t += s->sigma[j * s->dim + j];
    return t;
}

/* ||got - want||_2 / ||want||_2 over n doubles. */
static double rel_err(const double *got, const double *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ---- the Frechet distance ---- */

/* Random statistics against pytorch-fid within 1e-6 relative. The "equal" case compares a file with itself:
 * its FID is 0 up to the cancellation in tr S1 + tr S2 - 2 tr sqrt(S1 S2), so it is held to an absolute
 * bound of 1e-9 (tr S1 + tr S2) instead (a relative error of a value that is round-off is meaningless). */
TEST(fid_distance_vs_pytorch_fid) {
    static const struct {
        const char *name;
        size_t d, n1, n2, dead;
    } cases[] = {
        {"D=8 N=200/200", 8, 200, 200, 0},          {"D=64 N=500/500", 64, 500, 500, 0},
        {"D=256 N=2000/2000", 256, 2000, 2000, 0},  {"D=64 N=40/30 (rank-deficient)", 64, 40, 30, 0},
        {"D=256 N=100/3000 (one rank-deficient)", 256, 100, 3000, 0},
        {"D=256 N=300/60 (rank-deficient)", 256, 300, 60, 0},
        {"D=64 N=500/500, 4 constant features", 64, 500, 500, 4},
        {"D=64 N=40/30, 4 constant features", 64, 40, 30, 4},
        {"D=64 N=500 equal (FID 0)", 64, 500, 0, 0},
    };
    enum { NC = sizeof cases / sizeof cases[0] };
    const char *dir = df_test_tmpdir();
    df_fid_stats a[NC], b[NC];
    char cmd[8192];
    int len = snprintf(cmd, sizeof cmd, REF " fid");
    for (int c = 0; c < NC; c++) {
        float *x = make_feats(cases[c].n1, cases[c].d, 100 + 2 * c, 0, cases[c].dead);
        stats_of(&a[c], x, cases[c].n1, cases[c].d);
        free(x);
        if (cases[c].n2) {
            x = make_feats(cases[c].n2, cases[c].d, 101 + 2 * c, 0, cases[c].dead);
            stats_of(&b[c], x, cases[c].n2, cases[c].d);
            free(x);
        }
        char pa[300], pb[300];
        snprintf(pa, sizeof pa, "%s/fid_a%d.npz", dir, c);
        snprintf(pb, sizeof pb, "%s/fid_b%d.npz", dir, c);
        EXPECT(df_fid_stats_save(pa, &a[c]) == 0, "%s", df_errmsg());
        EXPECT(df_fid_stats_save(pb, cases[c].n2 ? &b[c] : &a[c]) == 0, "%s", df_errmsg());
        len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %s %s", pa, pb);
    }
    char *out = df_test_capture(cmd), *line = out;
    EXPECT(out != NULL, "the oracle failed: %s", cmd);
    for (int c = 0; c < NC && out; c++) {
        double pf, eig, fid;
        int retry, cplx, used = 0;
        if (sscanf(line, " pytorch_fid %lf eigh %lf retry %d complex %d%n", &pf, &eig, &retry, &cplx, &used) != 4) {
            EXPECT(0, "cannot parse the oracle's line %d: %.80s", c, line);
            break;
        }
        line += used;
        const df_fid_stats *sb = cases[c].n2 ? &b[c] : &a[c];
        int rc = df_fid_distance(&a[c], sb, &fid);
        EXPECT(rc == 0, "%s: df_fid_distance: %s", cases[c].name, df_errmsg());
        double err = fabs(fid - pf), eig_err = fabs(fid - eig), tol;
        if (cases[c].n2) {
            err /= fabs(pf), eig_err /= fabs(eig), tol = 1e-6;
        } else {
            double scale = trace(&a[c]) + trace(sb);
            err /= scale, eig_err /= scale, tol = 1e-9;
            EXPECT(fabs(fid) <= tol * scale, "%s: FID %.3g is not ~0", cases[c].name, fid);
        }
        printf("    %-40s fid %-12.10g pytorch-fid %-12.10g %s %.2e (vs eigh %.1e)%s%s  %s\n", cases[c].name, fid,
               pf, cases[c].n2 ? "rel" : "abs/tr", err, eig_err,
               retry ? " retry" : "", cplx ? " complex" : "", err <= tol ? "ok" : "MISMATCH");
        EXPECT(err <= tol, "%s: C %.17g vs pytorch-fid %.17g: error %.3e > %.0e", cases[c].name, fid, pf, err, tol);
    }
    free(out);
    for (int c = 0; c < NC; c++) {
        df_fid_stats_free(&a[c]);
        if (cases[c].n2) df_fid_stats_free(&b[c]);
    }
}

/* Closed forms: isotropic N(m1, a^2 I) vs N(m2, b^2 I) gives |m1 - m2|^2 + D (a - b)^2; diagonal covariances
 * (some variances 0) give sum (sqrt p - sqrt q)^2; the rank-1 pair S1 = x x^T, S2 = y y^T gives
 * |x|^2 + |y|^2 - 2 |x.y| (= 8 below), a case where scipy's sqrtm is not finite and pytorch-fid retries with
 * 1e-6 on the diagonals, which moves its answer by about 1e-6 relative: C must give the exact value. */
TEST(fid_distance_closed_forms) {
    const size_t D = 50;
    df_fid_stats a, b;
    df_fid_stats_init(&a, D);
    df_fid_stats_init(&b, D);
    double want = 0, fid;
    for (size_t j = 0; j < D; j++) {
        b.mu[j] = 0.1 * (double)j, want += b.mu[j] * b.mu[j];
        a.sigma[j * D + j] = 1.5 * 1.5, b.sigma[j * D + j] = 0.7 * 0.7;
    }
    want += (double)D * 0.8 * 0.8;
    EXPECT(df_fid_distance(&a, &b, &fid) == 0, "%s", df_errmsg());
    printf("    isotropic: fid %.15g exact %.15g rel %.1e\n", fid, want, fabs(fid - want) / want);
    EXPECT(fabs(fid - want) <= 1e-12 * want, "isotropic: %.17g vs %.17g", fid, want);

    want = 0;
    for (size_t j = 0; j < D; j++) {
        double p = j % 7 == 0 ? 0 : 0.3 + j, q = j % 5 == 0 ? 0 : 2.0 / (1 + j);
        a.sigma[j * D + j] = p, b.sigma[j * D + j] = q, b.mu[j] = 0;
        want += (sqrt(p) - sqrt(q)) * (sqrt(p) - sqrt(q));
    }
    EXPECT(df_fid_distance(&a, &b, &fid) == 0, "%s", df_errmsg());
    printf("    diagonal, rank-deficient: fid %.15g exact %.15g rel %.1e\n", fid, want, fabs(fid - want) / want);
    EXPECT(fabs(fid - want) <= 1e-12 * want, "diagonal: %.17g vs %.17g", fid, want);
    df_fid_stats_free(&a);
    df_fid_stats_free(&b);

    const double x[4] = {-2, -1, 2, 0}, y[4] = {0, -1, 2, -2};
    df_fid_stats_init(&a, 4);
    df_fid_stats_init(&b, 4);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) a.sigma[i * 4 + j] = x[i] * x[j], b.sigma[i * 4 + j] = y[i] * y[j];
    EXPECT(df_fid_distance(&a, &b, &fid) == 0, "%s", df_errmsg());
    char pa[300], pb[300], cmd[700];
    snprintf(pa, sizeof pa, "%s/rank1_a.npz", df_test_tmpdir());
    snprintf(pb, sizeof pb, "%s/rank1_b.npz", df_test_tmpdir());
    EXPECT(df_fid_stats_save(pa, &a) == 0 && df_fid_stats_save(pb, &b) == 0, "%s", df_errmsg());
    snprintf(cmd, sizeof cmd, REF " fid %s %s", pa, pb);
    char *out = df_test_capture(cmd);
    double pf = NAN, eig;
    int retry = 0, cplx;
    EXPECT(out && sscanf(out, "pytorch_fid %lf eigh %lf retry %d complex %d", &pf, &eig, &retry, &cplx) == 4,
           "the oracle failed: %s", cmd);
    printf("    rank-1 pair: fid %.15g exact 8; pytorch-fid %.15g (rel %.1e, retry %d)\n", fid, pf,
           fabs(pf - 8) / 8, retry);
    EXPECT(fabs(fid - 8) <= 1e-12 * 8, "rank-1 pair: %.17g vs 8", fid);
    EXPECT(retry == 1 && fabs(pf - 8) <= 1e-5 * 8, "pytorch-fid no longer retries here (%d) or is far off (%.17g)",
           retry, pf);
    free(out);
    df_fid_stats_free(&a);
    df_fid_stats_free(&b);
}

TEST(fid_distance_errors) {
    df_fid_stats a, b, c;
    df_fid_stats_init(&a, 6);
    df_fid_stats_init(&b, 6);
    df_fid_stats_init(&c, 7);
    for (int j = 0; j < 6; j++) a.sigma[j * 7] = b.sigma[j * 7] = 1;
    double fid = 0;
    EXPECT(df_fid_distance(&a, &b, &fid) == 0 && fabs(fid) < 1e-12, "identity vs identity: %g %s", fid,
           df_errmsg());
    EXPECT(df_fid_distance(&a, &c, &fid) == -1 && strstr(df_errmsg(), "dimensions") && isnan(fid),
           "a dimension mismatch: %s", df_errmsg());
    b.mu[3] = NAN;
    EXPECT(df_fid_distance(&a, &b, &fid) == -1 && strstr(df_errmsg(), "non-finite"), "a NaN mean: %s",
           df_errmsg());
    b.mu[3] = 0, b.sigma[8] = INFINITY;
    EXPECT(df_fid_distance(&a, &b, &fid) == -1 && strstr(df_errmsg(), "(1, 2)"), "an infinite covariance: %s",
           df_errmsg());
    b.sigma[8] = 0;
    for (int j = 0; j < 6; j++) a.sigma[j * 7] = -1;
    EXPECT(df_fid_distance(&a, &b, &fid) == -1 && strstr(df_errmsg(), "positive semi-definite"),
           "a negative definite covariance: %s", df_errmsg());
    printf("    last message: %s\n", df_errmsg());
    df_fid_stats_free(&a);
    df_fid_stats_free(&b);
    df_fid_stats_free(&c);
}

/* ---- mean and covariance ---- */

/* The accumulator against np.mean / np.cov(rowvar=False), relative L2 (Frobenius) error within 1e-9. The
 * first case sits at an offset of 3e4 with unit-scale spread: a one-pass sum of x x^T without the shift
 * loses about 1e-7 there, so the bound checks the shift. The last case is the largest pytorch-fid-like size
 * this test affords (60,000 x 256); its time is printed. */
TEST(fid_acc_vs_numpy) {
    static const struct {
        size_t n, d;
        double offset;
        int batches[8]; /* sizes up to -1; the remaining rows then go in batches of the last size */
    } cases[] = {
        {2473, 96, 3e4, {3, 0, 700, 1, 255, 256, 257, -1}},
        {5, 300, 0, {2, -1}},
        {60000, 256, 1.0, {1000, -1}},
    };
    const char *dir = df_test_tmpdir();
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t n = cases[c].n, d = cases[c].d;
        float *x = make_feats(n, d, 300 + (uint32_t)c, cases[c].offset, 0);
        df_fid_acc acc;
        df_fid_acc_init(&acc, d);
        double t0 = df_time();
        size_t done = 0, bi = 0, k = 0;
        while (done < n) {
            if (cases[c].batches[bi] >= 0) k = (size_t)cases[c].batches[bi++];
            size_t rows = k < n - done ? k : n - done;
            EXPECT(df_fid_acc_add(&acc, x + done * d, rows) == 0, "%s", df_errmsg());
            done += rows;
        }
        df_fid_stats got, want;
        EXPECT(df_fid_acc_finish(&acc, &got) == 0, "%s", df_errmsg());
        double dt = df_time() - t0;
        df_fid_acc_free(&acc);
        char feats[300], ref[300], cmd[700];
        snprintf(feats, sizeof feats, "%s/feats%zu.npy", dir, c);
        snprintf(ref, sizeof ref, "%s/cov%zu.npz", dir, c);
        EXPECT(df_npy_write_f32(feats, x, 2, (size_t[]){n, d}) == 0, "%s", df_errmsg());
        snprintf(cmd, sizeof cmd, REF " cov %s %s", feats, ref);
        EXPECT(system(cmd) == 0, "the oracle failed: %s", cmd);
        if (df_fid_stats_load(ref, &want) == 0) {
            double emu = rel_err(got.mu, want.mu, d), esig = rel_err(got.sigma, want.sigma, d * d);
            int ok = got.n == n && emu <= 1e-9 && esig <= 1e-9;
            printf("    N=%-6zu D=%-4zu offset %-6g: mu rel %.1e  sigma rel %.1e  (%.2fs)  %s\n", n, d,
                   cases[c].offset, emu, esig, dt, ok ? "ok" : "MISMATCH");
            EXPECT(ok, "N=%zu D=%zu: n %llu, mu %.3e, sigma %.3e", n, d, (unsigned long long)got.n, emu, esig);
            df_fid_stats_free(&want);
        } else {
            EXPECT(0, "cannot load the oracle's %s: %s", ref, df_errmsg());
        }
        df_fid_stats_free(&got);
        remove(feats);
        free(x);
    }
}

TEST(fid_acc_errors) {
    df_fid_acc acc;
    df_fid_stats s;
    df_fid_acc_init(&acc, 3);
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    EXPECT(df_fid_acc_add(&acc, x, 1) == 0, "%s", df_errmsg());
    EXPECT(df_fid_acc_finish(&acc, &s) == -1 && strstr(df_errmsg(), "at least 2") && !s.mu,
           "one row has no covariance: %s", df_errmsg());
    x[5] = NAN;
    EXPECT(df_fid_acc_add(&acc, x, 3) == -1 && strstr(df_errmsg(), "row 1") && strstr(df_errmsg(), "column 2") &&
               acc.n == 1, "a NaN feature: %s (n %llu)", df_errmsg(), (unsigned long long)acc.n);
    x[5] = 6;
    EXPECT(df_fid_acc_add(&acc, x + 3, 2) == 0 && df_fid_acc_finish(&acc, &s) == 0, "%s", df_errmsg());
    /* rows 1,2,3 / 4,5,6 / 7,8,9: means 4,5,6; every covariance entry 9 */
    double e = fabs(s.mu[0] - 4) + fabs(s.mu[2] - 6);
    for (int i = 0; i < 9; i++) e += fabs(s.sigma[i] - 9);
    EXPECT(s.n == 3 && e < 1e-12, "3 rows after a rejected batch: n %llu, error %g", (unsigned long long)s.n, e);
    df_fid_stats_free(&s);
    df_fid_acc_free(&acc);
}

/* ---- statistics files ---- */

#define NPZ_D 37

/* The values of fid_ref.py's known(): mu[i] = i/2 - 1/3, sigma[i, j] = 1/(1 + i + j) + (i == j). */
static double known_mu(size_t i) { return 0.5 * (double)i - 1.0 / 3; }
static double known_sigma(size_t i, size_t j) { return 1.0 / (double)(1 + i + j) + (i == j); }

static char *make_numpy_files(void) {
    static char cmd[512];
    snprintf(cmd, sizeof cmd, REF " make %s %d", df_test_tmpdir(), NPZ_D);
    EXPECT(system(cmd) == 0, "the oracle failed: %s", cmd);
    return cmd;
}

TEST(fid_npz_from_numpy) {
    make_numpy_files();
    static const struct {
        const char *file;
        int f32;
        uint64_t n;
    } files[] = {{"savez.npz", 0, 12345}, {"compressed.npz", 0, 0}, {"f32.npz", 1, 0}};
    for (int f = 0; f < 3; f++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s", df_test_tmpdir(), files[f].file);
        df_fid_stats s;
        if (df_fid_stats_load(path, &s) != 0) {
            EXPECT(0, "%s: %s", files[f].file, df_errmsg());
            continue;
        }
        size_t bad = 0;
        for (size_t i = 0; i < NPZ_D; i++) {
            double m = known_mu(i);
            bad += s.mu[i] != (files[f].f32 ? (double)(float)m : m);
            for (size_t j = 0; j < NPZ_D; j++) {
                double v = known_sigma(i, j);
                bad += s.sigma[i * NPZ_D + j] != (files[f].f32 ? (double)(float)v : v);
            }
        }
        printf("    %-16s D %zu n %llu, %zu values differ\n", files[f].file, s.dim, (unsigned long long)s.n, bad);
        EXPECT(s.dim == NPZ_D && s.n == files[f].n && bad == 0, "%s: dim %zu n %llu, %zu values differ",
               files[f].file, s.dim, (unsigned long long)s.n, bad);
        df_fid_stats_free(&s);
    }
}

TEST(fid_npz_to_numpy) {
    df_fid_stats s, back;
    df_fid_stats_init(&s, NPZ_D);
    s.n = 777;
    for (size_t i = 0; i < NPZ_D; i++) {
        s.mu[i] = known_mu(i);
        for (size_t j = 0; j < NPZ_D; j++) s.sigma[i * NPZ_D + j] = known_sigma(i, j);
    }
    char npz[300], npy[300], cmd[800];
    snprintf(npz, sizeof npz, "%s/c.npz", df_test_tmpdir());
    snprintf(npy, sizeof npy, "%s/c.npy", df_test_tmpdir());
    EXPECT(df_fid_stats_save(npz, &s) == 0, "%s", df_errmsg());
    EXPECT(df_npy_write_f64(npy, s.sigma, 2, (size_t[]){NPZ_D, NPZ_D}) == 0, "%s", df_errmsg());
    snprintf(cmd, sizeof cmd, REF " check %s %s %d", npz, npy, NPZ_D);
    char *out = df_test_capture(cmd);
    EXPECT(out && strcmp(out, "ok\n") == 0, "numpy does not read C's files as written: %s", out ? out : cmd);
    free(out);
    EXPECT(df_fid_stats_load(npz, &back) == 0 && back.n == 777 && back.dim == NPZ_D &&
               memcmp(back.sigma, s.sigma, sizeof(double) * NPZ_D * NPZ_D) == 0 &&
               memcmp(back.mu, s.mu, sizeof(double) * NPZ_D) == 0,
           "C does not read back its own file: %s", df_errmsg());
    df_fid_stats_free(&back);
    df_fid_stats_free(&s);
}

TEST(fid_npz_bad_files) {
    make_numpy_files();
    static const struct {
        const char *file, *want; /* a substring of the message */
    } bad[] = {
        {"missing_sigma.npz", "no array 'sigma' in the archive (it holds: mu)"},
        {"wrong_shape.npz", "'sigma' has shape (37, 38)"},
        {"mu_2d.npz", "'mu' has shape (1, 37)"},
        {"int_sigma.npz", "'sigma' is int64"},
        {"nan.npz", "non-finite value (nan) at flat index 39"},
        {"truncated.npz", "not a zip archive"},
        {"not_zip.npz", "not a zip archive"},
        {"bad_crc.npz", "CRC"},
        {"not_npy.npz", "not a .npy file"},
        {"no_such_file.npz", "No such file"},
    };
    const char *dir = df_test_tmpdir();
    for (size_t f = 0; f < sizeof bad / sizeof bad[0]; f++) {
        char path[300];
        snprintf(path, sizeof path, "%s/%s", dir, bad[f].file);
        df_fid_stats s;
        int rc = df_fid_stats_load(path, &s);
        int ok = rc == -1 && strstr(df_errmsg(), path) && strstr(df_errmsg(), bad[f].want) && !s.mu && !s.sigma;
        const char *msg = strstr(df_errmsg(), bad[f].file);
        printf("    %s\n", rc == 0 ? "(loaded!)" : msg ? msg : df_errmsg());
        EXPECT(ok, "%s: rc %d, message '%s' should name the file and say '%s'", bad[f].file, rc, df_errmsg(),
               bad[f].want);
        if (rc == 0) df_fid_stats_free(&s);
    }
    /* every truncation of a C-written file fails cleanly */
    char whole[300], cut[300];
    snprintf(whole, sizeof whole, "%s/c2.npz", dir);
    snprintf(cut, sizeof cut, "%s/cut.npz", dir);
    df_fid_stats s;
    df_fid_stats_init(&s, NPZ_D);
    EXPECT(df_fid_stats_save(whole, &s) == 0, "%s", df_errmsg());
    df_fid_stats_free(&s);
    unsigned char *bytes = NULL;
    size_t len = 0, tries = 0, failed = 0;
    EXPECT(df_read_file(whole, &bytes, &len) == 0, "%s", df_errmsg());
    for (size_t k = 0; bytes && k < len; k++) {
        if (k % (len / 61 + 1) != 0 && k + 30 < len) continue; /* 61 cuts, and each of the last 30 bytes */
        EXPECT(df_write_file_atomic(cut, bytes, k) == 0, "%s", df_errmsg());
        tries++;
        if (df_fid_stats_load(cut, &s) == -1 && strstr(df_errmsg(), cut)) failed++;
        else df_fid_stats_free(&s);
    }
    printf("    %zu truncations of a %zu-byte file: %zu fail with a message\n", tries, len, failed);
    EXPECT(tries > 90 && failed == tries, "%zu of %zu truncations loaded", tries - failed, tries);
    df_free(bytes);
}
