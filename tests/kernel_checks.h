/* kernel_checks.h: what the kernel tests share: random and zero buffers, the finite-difference loss
 * L = sum(out * g), its step sizes and tolerances, and the check that backward accumulates. */
#ifndef DF_KERNEL_CHECKS_H
#define DF_KERNEL_CHECKS_H

#include <string.h>

#include "base/base.h"
#include "test.h"

static inline float *rnd(size_t n, unsigned seed, float lo, float hi) {
    float *x = df_malloc((n ? n : 1) * sizeof(float));
    df_test_fill(x, n, seed, lo, hi);
    return x;
}

static inline float *zeros(size_t n) { return df_calloc(n ? n : 1, sizeof(float)); }

static inline float *copy(const float *x, size_t n) {
    float *y = df_malloc((n ? n : 1) * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

static inline double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* The finite-difference loss L = sum(out * g): a test case embeds this first and sets forward to a function
 * that recomputes out from the case's current inputs. */
typedef struct fd_loss {
    void (*forward)(struct fd_loss *self);
    float *out, *g;
    size_t n_out;
} fd_loss;

static inline double fd_eval(void *ctx) {
    fd_loss *l = ctx;
    l->forward(l);
    return dot(l->out, l->g, l->n_out);
}

/* FD settings: step (smaller for inputs the output depends on non-linearly), relative and absolute tolerance,
 * coordinates checked per tensor. Measured FD errors of the correct kernels are ~1e-6 absolute, so these pass
 * with a margin of over 20x, while a wrong term in a formula gives errors of order the gradient itself. */
#define FD_H 1e-2
#define FD_H_NONLIN 5e-3
#define FD_RTOL 1e-2
#define FD_ATOL 1e-3
#define FD_CHECKS 48

/* Checks that grad2 (after two identical backward calls) is twice grad1 (after one). */
static inline void expect_doubled(const char *name, const float *grad1, const float *grad2, size_t n) {
    float *want = copy(grad1, n);
    for (size_t i = 0; i < n; i++) want[i] *= 2;
    EXPECT_CLOSE(name, grad2, want, n, 1e-6);
    df_free(want);
}

#endif
