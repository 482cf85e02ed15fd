/* fid.h: the numerical core of the Frechet Inception Distance (Heusel et al. 2017) and pytorch-fid's
 * statistics files.
 *
 * Features (N rows of D floats from a fixed network) are summarised by their mean mu and covariance sigma
 * (N - 1 in the denominator, as np.cov(rowvar=False)), accumulated batch by batch in double precision. The
 * distance between two summaries is
 *     FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)),
 * with tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i(S_1^(1/2) S_2 S_1^(1/2))): a symmetric positive semi-definite
 * eigenproblem (LAPACK dsyevd), where pytorch-fid takes scipy.linalg.sqrtm of the non-symmetric S_1 S_2. Both
 * give the same number on well-conditioned inputs; this form stays real and finite on singular ones (fewer
 * samples than dimensions), where sqrtm needs pytorch-fid's retry with 1e-6 added to the diagonals.
 * Statistics files are .npz archives with float64 `mu` (D,) and `sigma` (D, D), as pytorch-fid reads them
 * (np.load(path)['mu'], ['sigma']) and `np.savez(path, mu=mu, sigma=sigma)` writes them, plus an int64 `n`.
 *
 * BLAS and LAPACK calls run on df_threads() threads (OpenBLAS's pool is set to that before each call), so
 * they never add to the OpenMP threads already busy. Functions that can fail return 0 on success and -1
 * after df_error (read df_errmsg()).
 */
#ifndef DF_EVAL_FID_H
#define DF_EVAL_FID_H

#include <stddef.h>
#include <stdint.h>

/* The Gaussian summary of a set of features. */
typedef struct {
    size_t dim;    /* D */
    uint64_t n;    /* the number of feature rows it summarises (0: unknown, e.g. a file without `n`) */
    double *mu;    /* D: the mean */
    double *sigma; /* D x D, row-major: the covariance, N - 1 in the denominator */
} df_fid_stats;

/* Allocates zeroed mu and sigma of dimension dim >= 1 (n = 0). Release with df_fid_stats_free. */
void df_fid_stats_init(df_fid_stats *s, size_t dim);
/* Releases the arrays and zeroes *s (a zeroed struct is fine). */
void df_fid_stats_free(df_fid_stats *s);

/* A streaming accumulator of mean and covariance. Rows are shifted by the first batch's mean before they
 * are summed (sum of (x - c) and of (x - c)(x - c)^T, in double), so a large common offset costs no
 * precision; the cross products are a BLAS rank-k update (dsyrk) over blocks of rows. */
typedef struct {
    size_t dim;     /* D */
    uint64_t n;     /* rows added so far */
    double *shift;  /* D: c, the first batch's mean */
    double *sum;    /* D: sum of (x - c) */
    double *cross;  /* D x D: sum of (x - c)(x - c)^T, upper triangle (column-major) */
    double *block;  /* DF_FID_BLOCK x D scratch: rows converted to double and shifted */
} df_fid_acc;

#define DF_FID_BLOCK 256 /* rows per rank-k update */

/* Starts an empty accumulator for rows of dim >= 1 features. Release with df_fid_acc_free. */
void df_fid_acc_init(df_fid_acc *acc, size_t dim);
/* Adds `rows` feature rows (rows x dim floats, row-major). A non-finite feature is an error naming its row
 * and column, and then nothing of this batch is added. */
int df_fid_acc_add(df_fid_acc *acc, const float *feat, size_t rows);
/* The mean and covariance of all rows added so far into *out, which it initialises (release it with
 * df_fid_stats_free; on failure *out is zeroed). Needs at least 2 rows. The accumulator is unchanged, so
 * more rows may be added and finish called again. */
int df_fid_acc_finish(const df_fid_acc *acc, df_fid_stats *out);
/* Releases the accumulator and zeroes *acc. */
void df_fid_acc_free(df_fid_acc *acc);

/* The Frechet distance between a and b into *fid. Errors: different dimensions, a non-finite mean or
 * covariance, a covariance with an eigenvalue below -1e-3 times its largest (not positive semi-definite:
 * smaller negative eigenvalues are round-off and count as 0), a LAPACK failure. Each covariance is used
 * symmetrised, (S + S^T) / 2. Cost: two D x D eigendecompositions and two D x D x D products. */
int df_fid_distance(const df_fid_stats *a, const df_fid_stats *b, double *fid);

/* Writes s to `path` as an uncompressed .npz (atomically): `mu` float64 (D,), `sigma` float64 (D, D) and
 * `n` int64 (). pytorch-fid and np.load read it. */
int df_fid_stats_save(const char *path, const df_fid_stats *s);
/* Reads statistics from an .npz with `mu` (D,) and `sigma` (D, D), float32 or float64 (as pytorch-fid saves
 * them), and `n` if present (else s->n = 0), into *s, which it initialises (release with df_fid_stats_free;
 * on failure *s is zeroed). A missing key, a wrong shape or dtype, a non-finite value, or a file that is
 * not a readable .npz is an error naming the file and the problem. */
int df_fid_stats_load(const char *path, df_fid_stats *s);

#endif
