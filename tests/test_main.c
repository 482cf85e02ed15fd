/* test_main.c: runs the registered tests (all, or those whose name contains an argument). */
#include "test.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/base/base.h"
#include "../src/base/rng.h"

typedef struct {
    const char *name, *file;
    df_test_fn fn;
} test_entry;

static test_entry tests[512];
static int ntests, cur_failures;
static char tmpdir[256];

void df_test_register(const char *name, const char *file, df_test_fn fn) {
    if (ntests >= (int)(sizeof tests / sizeof tests[0])) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    tests[ntests++] = (test_entry){name, file, fn};
}

void df_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stdout, "    FAILED %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fprintf(stdout, "\n");
    cur_failures++;
}

double df_rel_err(const float *got, const float *want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

int df_expect_close_at(const char *file, int line, const char *name, const float *got, const float *want,
                       size_t n, double rtol) {
    double rel = df_rel_err(got, want, n), maxabs = 0;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = 0;
        double d = fabs((double)got[i] - want[i]);
        if (d > maxabs) maxabs = d;
    }
    int ok = finite && rel <= rtol;
    printf("    %-52s rel %.2e  max|d| %.2e  %s\n", name, rel, maxabs, ok ? "ok" : "MISMATCH");
    if (!ok) {
        int shown = 0;
        for (size_t i = 0; i < n && shown < 5; i++) {
            double d = fabs((double)got[i] - want[i]);
            if (!isfinite(got[i]) || d > rtol * (fabs(want[i]) + 1e-6)) {
                printf("      [%zu] got %.8g want %.8g\n", i, got[i], want[i]);
                shown++;
            }
        }
        df_test_fail(file, line, "%s: relative error %.3e exceeds %.1e", name, rel, rtol);
    }
    return ok;
}

int df_expect_grad_at(const char *file, int line, const char *name, float *x, const float *grad, size_t n,
                      df_fd_fn f, void *ctx, double h, double rtol, double atol, size_t max_checks) {
    size_t checks = n < max_checks ? n : max_checks;
    double worst = 0;
    int bad = 0;
    for (size_t c = 0; c < checks; c++) {
        size_t i = checks == n ? c : (size_t)((double)c * (double)(n - 1) / (double)(checks - 1) + 0.5);
        float old = x[i];
        x[i] = (float)(old + h);
        double fp = f(ctx);
        x[i] = (float)(old - h);
        double fm = f(ctx);
        x[i] = old;
        double fd = (fp - fm) / (2 * h), an = grad[i];
        double err = fabs(fd - an), lim = atol + rtol * fabs(an);
        double rel = err / (fabs(an) + atol);
        if (rel > worst) worst = rel;
        if (err > lim || !isfinite(an)) {
            if (bad < 3) printf("      %s[%zu]: analytic %.6g finite-diff %.6g\n", name, i, an, fd);
            bad++;
        }
    }
    printf("    %-52s fd checks %zu  worst rel %.2e  %s\n", name, checks, worst, bad ? "MISMATCH" : "ok");
    if (bad) df_test_fail(file, line, "%s: %d of %zu gradient entries disagree with finite differences", name, bad,
                          checks);
    return !bad;
}

void df_test_fill(float *x, size_t n, unsigned seed, float lo, float hi) {
    df_rng_uniform(x, n, seed, 0x7e57, 0);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * x[i];
}

const char *df_test_root(void) {
    static char root[4096];
    if (!root[0] && !getcwd(root, sizeof root)) snprintf(root, sizeof root, ".");
    return root;
}

void df_test_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0) df_test_fail(__FILE__, __LINE__, "cannot write %s", path);
    if (f) fclose(f);
}

int df_test_diffuse(char *out, size_t cap, const char *args) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "cd %s && %s/build/diffuse %s 2>&1", df_test_tmpdir(), df_test_root(), args);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, cap - 1, p) : 0;
    out[n] = 0;
    return p ? pclose(p) : -1;
}

char *df_test_capture(const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (cap - n < 4096) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    if (pclose(p) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

const char *df_test_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/diffuse-test-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return tmpdir;
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    double t_all = df_time();
    for (int i = 0; i < ntests; i++) {
        int run = argc < 2;
        for (int a = 1; a < argc; a++)
            if (strstr(tests[i].name, argv[a])) run = 1;
        if (!run) continue;
        printf("%s (%s)\n", tests[i].name, tests[i].file);
        fflush(stdout);
        cur_failures = 0;
        double t0 = df_time();
        tests[i].fn();
        double dt = df_time() - t0;
        if (cur_failures) {
            printf("  FAIL %s (%.2fs)\n", tests[i].name, dt);
            failed++;
        } else {
            printf("  pass %s (%.2fs)\n", tests[i].name, dt);
            passed++;
        }
        fflush(stdout);
    }
    if (tmpdir[0] && !getenv("DF_KEEP_TMP")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    printf("total %.1fs\n", df_time() - t_all);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
