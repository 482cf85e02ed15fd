/* fid.c: feature statistics (streaming mean and covariance), the Frechet distance between two Gaussians, and
 * pytorch-fid's .npz statistics files. All arithmetic in double; BLAS for the O(N D^2) and O(D^3) products,
 * LAPACK (dsyevd) for the symmetric eigenproblems. */
#define _GNU_SOURCE /* RTLD_DEFAULT */
#include "eval/fid.h"

#include <cblas.h>
#include <dlfcn.h>
#include <limits.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "io/npz.h"

/* ---- threads ---- */

/* OpenBLAS (Debian's preferred libblas/liblapack provider) keeps its own pthread pool, sized at load time from
 * OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS, else all cores. Before each BLAS/LAPACK call its size is set to
 * df_threads(), the thread count the rest of the program runs on, so the two pools never oversubscribe the
 * cores. The symbol is looked up at run time: with reference BLAS/LAPACK there is nothing to set. */
static void blas_threads(void) {
    static void (*set)(int);
    static int looked;
    if (!looked) {
        *(void **)&set = dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
        looked = 1;
    }
    if (set) set(df_threads());
}

/* ---- statistics ---- */

void df_fid_stats_init(df_fid_stats *s, size_t dim) {
    DF_CHECK(dim >= 1 && dim <= SIZE_MAX / sizeof(double) / dim, "df_fid_stats_init: dimension %zu", dim);
    s->dim = dim;
    s->n = 0;
    s->mu = df_calloc(dim, sizeof(double));
    s->sigma = df_calloc(dim * dim, sizeof(double));
}

void df_fid_stats_free(df_fid_stats *s) {
    df_free(s->mu);
    df_free(s->sigma);
    memset(s, 0, sizeof *s);
}

void df_fid_acc_init(df_fid_acc *acc, size_t dim) {
    DF_CHECK(dim >= 1 && dim <= INT_MAX && dim <= SIZE_MAX / sizeof(double) / dim, "df_fid_acc_init: dimension %zu",
             dim);
    acc->dim = dim;
    acc->n = 0;
    acc->shift = df_calloc(dim, sizeof(double));
    acc->sum = df_calloc(dim, sizeof(double));
    acc->cross = df_calloc(dim * dim, sizeof(double));
    acc->block = df_malloc((size_t)DF_FID_BLOCK * dim * sizeof(double));
}

void df_fid_acc_free(df_fid_acc *acc) {
    df_free(acc->shift);
    df_free(acc->sum);
    df_free(acc->cross);
    df_free(acc->block);
    memset(acc, 0, sizeof *acc);
}

int df_fid_acc_add(df_fid_acc *acc, const float *feat, size_t rows) {
    /* feat: [rows, D] */
    const size_t D = acc->dim;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < D; j++)
            if (!isfinite(feat[r * D + j]))
                return df_error("feature row %zu (of this batch of %zu), column %zu is %g: the feature network "
                                "produced a non-finite value", r, rows, j, (double)feat[r * D + j]);
    if (rows == 0) return 0;
    if (acc->n == 0) { /* the shift: this first batch's mean */
        for (size_t j = 0; j < D; j++) acc->shift[j] = 0;
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < D; j++) acc->shift[j] += feat[r * D + j];
        for (size_t j = 0; j < D; j++) acc->shift[j] /= (double)rows;
    }
    blas_threads();
    for (size_t r0 = 0; r0 < rows; r0 += DF_FID_BLOCK) {
        size_t k = rows - r0 < DF_FID_BLOCK ? rows - r0 : DF_FID_BLOCK;
        for (size_t r = 0; r < k; r++) {
            const float *x = feat + (r0 + r) * D;
            double *y = acc->block + r * D;
            for (size_t j = 0; j < D; j++) {
                y[j] = (double)x[j] - acc->shift[j];
                acc->sum[j] += y[j];
            }
        }
        /* cross += Y Y^T, Y the D x k column-major matrix whose columns are the shifted rows */
        cblas_dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, (int)D, (int)k, 1.0, acc->block, (int)D, 1.0,
                    acc->cross, (int)D);
    }
    acc->n += rows;
    return 0;
}

int df_fid_acc_finish(const df_fid_acc *acc, df_fid_stats *out) {
    memset(out, 0, sizeof *out);
    if (acc->n < 2)
        return df_error("the covariance of %llu feature rows is undefined: at least 2 are needed",
                        (unsigned long long)acc->n);
    const size_t D = acc->dim;
    const double n = (double)acc->n;
    df_fid_stats_init(out, D);
    out->n = acc->n;
    double *m = df_malloc(D * sizeof(double)); /* mean of the shifted rows */
    for (size_t j = 0; j < D; j++) {
        m[j] = acc->sum[j] / n;
        out->mu[j] = acc->shift[j] + m[j];
    }
    /* sigma = (sum (x - c)(x - c)^T - n m m^T) / (n - 1); cross holds (i, j), i <= j, at [j * D + i] */
    for (size_t i = 0; i < D; i++)
        for (size_t j = i; j < D; j++) {
            double v = (acc->cross[j * D + i] - n * m[i] * m[j]) / (n - 1);
            out->sigma[i * D + j] = out->sigma[j * D + i] = v;
        }
    df_free(m);
    return 0;
}

/* ---- the Frechet distance ---- */

static int check_finite(const df_fid_stats *s, const char *which) {
    for (size_t j = 0; j < s->dim; j++)
        if (!isfinite(s->mu[j])) return df_error("the %s statistics' mean has a non-finite entry at %zu", which, j);
    for (size_t i = 0; i < s->dim * s->dim; i++)
        if (!isfinite(s->sigma[i]))
            return df_error("the %s statistics' covariance has a non-finite entry at (%zu, %zu)", which,
                            i / s->dim, i % s->dim);
    return 0;
}

/* Eigenvalues w (ascending) of the symmetric D x D matrix a; with vectors, a's columns (column-major)
 * become the eigenvectors. */
static int sym_eig(double *a, double *w, size_t D, int vectors, const char *what) {
    lapack_int info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, vectors ? 'V' : 'N', 'U', (lapack_int)D, a,
                                     (lapack_int)D, w);
    if (info != 0)
        return df_error("LAPACK dsyevd failed on %s (info %d: %s)", what, (int)info,
                        info < 0 ? "bad argument" : "the eigenvalues did not converge");
    return 0;
}

/* An error unless every eigenvalue w[0 .. D-1] (ascending) is >= -1e-3 times the largest. */
static int check_psd(const double *w, size_t D, const char *what) {
    double top = w[D - 1] > 0 ? w[D - 1] : 0;
    if (w[0] < -1e-3 * top || (top == 0 && w[0] < 0))
        return df_error("%s is not positive semi-definite (eigenvalues from %.6g to %.6g): not a covariance "
                        "matrix", what, w[0], w[D - 1]);
    return 0;
}

/* out = (s + s^T) / 2 */
static void symmetrise(double *out, const double *s, size_t D) {
    for (size_t i = 0; i < D; i++)
        for (size_t j = i; j < D; j++) out[i * D + j] = out[j * D + i] = 0.5 * (s[i * D + j] + s[j * D + i]);
}

int df_fid_distance(const df_fid_stats *a, const df_fid_stats *b, double *fid) {
    *fid = NAN;
    DF_CHECK(a->dim <= INT_MAX, "df_fid_distance: dimension %zu", a->dim);
    if (a->dim != b->dim)
        return df_error("the statistics have different dimensions (%zu and %zu): features from different "
                        "networks or layers", a->dim, b->dim);
    if (check_finite(a, "first") != 0 || check_finite(b, "second") != 0) return -1;
    const size_t D = a->dim;
    double diff2 = 0, tr1 = 0, tr2 = 0;
    for (size_t j = 0; j < D; j++) {
        double d = a->mu[j] - b->mu[j];
        diff2 += d * d;
        tr1 += a->sigma[j * D + j];
        tr2 += b->sigma[j * D + j];
    }
    double *v = df_malloc(D * D * sizeof(double)), *s2 = df_malloc(D * D * sizeof(double));
    double *t = df_malloc(D * D * sizeof(double)), *w = df_malloc(D * sizeof(double));
    symmetrise(v, a->sigma, D);
    symmetrise(s2, b->sigma, D);
    blas_threads();
    /* S1 = V W V^T, so S1^(1/2) S2 S1^(1/2) = V (C^T S2 C) V^T with C = V W^(1/2): the same eigenvalues as
     * M = C^T S2 C, which is symmetric positive semi-definite. */
    int rc = sym_eig(v, w, D, 1, "the first covariance");
    if (rc == 0) rc = check_psd(w, D, "the first covariance");
    if (rc == 0) {
        for (size_t j = 0; j < D; j++) { /* C: column j of V times sqrt(w_j), round-off negatives as 0 */
            double r = w[j] > 0 ? sqrt(w[j]) : 0;
            for (size_t i = 0; i < D; i++) v[j * D + i] *= r;
        }
        cblas_dsymm(CblasColMajor, CblasLeft, CblasUpper, (int)D, (int)D, 1.0, s2, (int)D, v, (int)D, 0.0, t,
                    (int)D); /* T = S2 C */
        cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, (int)D, (int)D, (int)D, 1.0, v, (int)D, t, (int)D,
                    0.0, s2, (int)D); /* M = C^T T, into s2's memory */
        symmetrise(t, s2, D);
        rc = sym_eig(t, w, D, 0, "S1^(1/2) S2 S1^(1/2)");
    }
    if (rc == 0) rc = check_psd(w, D, "the second covariance (seen through S1^(1/2) S2 S1^(1/2))");
    if (rc == 0) {
        double tr_sqrt = 0;
        for (size_t j = 0; j < D; j++) tr_sqrt += w[j] > 0 ? sqrt(w[j]) : 0;
        *fid = diff2 + tr1 + tr2 - 2 * tr_sqrt;
    }
    df_free(v);
    df_free(s2);
    df_free(t);
    df_free(w);
    return rc;
}

/* ---- statistics files ---- */

int df_fid_stats_save(const char *path, const df_fid_stats *s) {
    int64_t n = (int64_t)s->n;
    df_npz_entry e[3] = {
        {.key = "mu", .dtype = DF_NPY_F8, .ndim = 1, .shape = {s->dim}, .data = s->mu},
        {.key = "sigma", .dtype = DF_NPY_F8, .ndim = 2, .shape = {s->dim, s->dim}, .data = s->sigma},
        {.key = "n", .dtype = DF_NPY_I8, .ndim = 0, .data = &n},
    };
    return df_npz_write(path, e, 3);
}

/* A float32 or float64 array as doubles into out, every value finite. */
static int to_double(const df_npy *a, double *out, const char *key) {
    if (a->dtype != DF_NPY_F4 && a->dtype != DF_NPY_F8)
        return df_error("'%s' is %s; float32 or float64 expected", key, df_npy_dtype_name(a->dtype));
    for (size_t i = 0; i < a->count; i++) {
        out[i] = df_npy_get(a, i);
        if (!isfinite(out[i])) return df_error("'%s' has a non-finite value (%g) at flat index %zu", key, out[i], i);
    }
    return 0;
}

/* "(3, 4)", "(5,)", "()": a shape as numpy prints it. */
static const char *shape_str(const df_npy *a, char *buf, size_t cap) {
    size_t used = (size_t)snprintf(buf, cap, "(");
    for (int d = 0; d < a->ndim && used < cap; d++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%zu", d ? ", " : "", a->shape[d]);
    if (used < cap) snprintf(buf + used, cap - used, "%s)", a->ndim == 1 ? "," : "");
    return buf;
}

static int load_stats(df_npz *z, df_fid_stats *s) {
    df_npy mu, sigma, n;
    if (df_npz_get(z, "mu", &mu) != 0) return -1;
    if (df_npz_get(z, "sigma", &sigma) != 0) {
        df_npy_free(&mu);
        return -1;
    }
    char shape[160];
    int rc = 0;
    if (mu.ndim != 1 || mu.shape[0] == 0) {
        rc = df_error("'%s': 'mu' has shape %s; a vector (D,) with D >= 1 expected", z->path,
                      shape_str(&mu, shape, sizeof shape));
    } else if (sigma.ndim != 2 || sigma.shape[0] != mu.shape[0] || sigma.shape[1] != mu.shape[0]) {
        rc = df_error("'%s': 'sigma' has shape %s; (%zu, %zu) expected to match 'mu' %s", z->path,
                      shape_str(&sigma, shape, sizeof shape), mu.shape[0], mu.shape[0],
                      shape_str(&mu, shape + 80, sizeof shape - 80));
    } else {
        df_fid_stats_init(s, mu.shape[0]);
        rc = to_double(&mu, s->mu, "mu");
        if (rc == 0) rc = to_double(&sigma, s->sigma, "sigma");
        if (rc != 0) df_error_wrap("'%s'", z->path);
    }
    df_npy_free(&mu);
    df_npy_free(&sigma);
    if (rc == 0 && df_npz_has(z, "n")) {
        if (df_npz_get(z, "n", &n) != 0) return -1;
        int integer = n.dtype != DF_NPY_F2 && n.dtype != DF_NPY_F4 && n.dtype != DF_NPY_F8;
        double v = n.count == 1 ? df_npy_get(&n, 0) : -1;
        if (!integer || v < 0) rc = df_error("'%s': 'n' is not one non-negative integer", z->path);
        else s->n = (uint64_t)v;
        df_npy_free(&n);
    }
    return rc;
}

int df_fid_stats_load(const char *path, df_fid_stats *s) {
    memset(s, 0, sizeof *s);
    df_npz z;
    if (df_npz_open(&z, path) != 0) return -1;
    int rc = load_stats(&z, s);
    df_npz_close(&z);
    if (rc != 0) df_fid_stats_free(s);
    return rc;
}
