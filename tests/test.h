/* test.h: the C test harness. A test is a function declared with TEST(name) in any file under tests/; it
 * registers itself. EXPECT* record failures (with file, line and a message) and the test goes on; a test
 * passes when nothing failed. The runner prints one line per test and, last, "N passed, N failed". */
#ifndef DF_TEST_H
#define DF_TEST_H

#include <stddef.h>
#include <stdio.h>

typedef void (*df_test_fn)(void);
void df_test_register(const char *name, const char *file, df_test_fn fn);
void df_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                                                           \
    static void test_##name(void);                                                                           \
    __attribute__((constructor)) static void register_##name(void) {                                         \
        df_test_register(#name, __FILE__, test_##name);                                                      \
    }                                                                                                        \
    static void test_##name(void)

#define EXPECT(cond, ...)                                                                                    \
    do {                                                                                                     \
        if (!(cond)) df_test_fail(__FILE__, __LINE__, __VA_ARGS__);                                          \
    } while (0)

/* Compares two tensors: relative error ||got - want||_2 / ||want||_2 (computed in double) must be at most
 * rtol. Prints the name, the relative error, the largest absolute difference and, on failure, the first
 * differing values. Returns 1 if it passed. */
int df_expect_close_at(const char *file, int line, const char *name, const float *got, const float *want,
                       size_t n, double rtol);
#define EXPECT_CLOSE(name, got, want, n, rtol) df_expect_close_at(__FILE__, __LINE__, name, got, want, n, rtol)

/* Relative L2 error between two arrays (0 when both are zero). */
double df_rel_err(const float *got, const float *want, size_t n);

/* Central finite-difference check of an analytic gradient. f(ctx) evaluates the scalar loss at the
 * current contents of x (n floats). grad holds the analytic d f / d x. Checks up to max_checks coordinates
 * (all if n is smaller, else evenly spread), each with step h: |fd - grad| <= atol + rtol * |grad|.
 * Prints the name and the worst relative mismatch. Returns 1 if it passed. */
typedef double (*df_fd_fn)(void *ctx);
int df_expect_grad_at(const char *file, int line, const char *name, float *x, const float *grad, size_t n,
                      df_fd_fn f, void *ctx, double h, double rtol, double atol, size_t max_checks);
#define EXPECT_GRAD(name, x, grad, n, f, ctx, h, rtol, atol, max_checks)                                    \
    df_expect_grad_at(__FILE__, __LINE__, name, x, grad, n, f, ctx, h, rtol, atol, max_checks)

/* A deterministic random fill for tests: uniform in [lo, hi) from (seed, stream). */
void df_test_fill(float *x, size_t n, unsigned seed, float lo, float hi);

/* The repository root: the directory the tests run from (make test runs them there). */
const char *df_test_root(void);

/* Writes text to path (a failed write is a test failure). */
void df_test_write_text(const char *path, const char *text);

/* A fresh temporary directory for this test (created), e.g. /tmp/diffuse-test-XXXXXX. */
const char *df_test_tmpdir(void);

/* Runs the built binary (build/diffuse ARGS) in df_test_tmpdir(); returns its exit status (as pclose), with
 * its standard output and error in out (cap bytes, NUL-terminated). */
int df_test_diffuse(char *out, size_t cap, const char *args);

/* The whole standard output of a shell command (malloc'd, NUL-terminated; free()), or NULL if it could not
 * run or exited non-zero. */
char *df_test_capture(const char *cmd);

#endif
