/* test_plot.c: line charts (PNG size, series colours, line gaps), metrics.csv plots, refused input, and the
 * axis arithmetic (1-2-5 steps, log decades, compact tick labels). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../src/base/base.h"
#include "../src/io/image.h"
#include "../src/io/plot.h"
#include "test.h"

/* ---- helpers ---- */

/* Reads the PNG at path, checks its size, and returns its pixels (NULL on failure, recorded). */
static uint8_t *read_png(const char *path, size_t want_w, size_t want_h) {
    uint8_t *px;
    size_t w, h, c;
    if (df_image_read(path, &px, &w, &h, &c)) {
        EXPECT(0, "reading %s: %s", path, df_errmsg());
        return NULL;
    }
    EXPECT(w == want_w && h == want_h && c == 3, "%s is %zu x %zu x %zu, want %zu x %zu x 3", path, w, h, c,
           want_w, want_h);
    if (w != want_w || h != want_h || c != 3) {
        df_free(px);
        return NULL;
    }
    return px;
}

/* The number of pixels of exactly colour rgb; cols (may be NULL, w entries) counts them per column. */
static size_t count_rgb(const uint8_t *px, size_t w, size_t h, const unsigned char rgb[3], size_t *cols) {
    size_t n = 0;
    if (cols) memset(cols, 0, w * sizeof *cols);
    for (size_t y = 0; y < h; y++)
        for (size_t x = 0; x < w; x++) {
            const uint8_t *p = px + (y * w + x) * 3;
            if (p[0] == rgb[0] && p[1] == rgb[1] && p[2] == rgb[2]) {
                n++;
                if (cols) cols[x]++;
            }
        }
    return n;
}

/* ---- charts ---- */

TEST(plot_two_series_with_gap) {
    enum { N = 400, W = 900, H = 500 };
    double x[N], a[N], b[N];
    for (int i = 0; i < N; i++) {
        x[i] = i * 25.0; /* steps 0 .. 9975 */
        a[i] = i >= 160 && i < 240 ? NAN : 0.3 + 0.1 * sin(i * 0.05);
        b[i] = 1.0 / (1 + i * 0.02);
    }
    df_series s[2] = {{x, a, N, "with a gap", {220, 30, 30}}, {x, b, N, "decay", {30, 60, 200}}};
    char path[512];
    snprintf(path, sizeof path, "%s/two.png", df_test_tmpdir());
    EXPECT(df_plot_png(path, s, 2, "two series", "step", "value", 0, W, H) == 0, "plot: %s", df_errmsg());
    uint8_t *px = read_png(path, W, H);
    if (!px) return;
    size_t cols[W];
    size_t nb = count_rgb(px, W, H, s[1].rgb, NULL), na = count_rgb(px, W, H, s[0].rgb, cols);
    EXPECT(na > 300 && nb > 300, "series colours: %zu red and %zu blue pixels, want > 300 each", na, nb);
    /* the NaN run (a fifth of the x range) leaves a run of columns without red inside the red line's extent
     * (the legend's red swatch sits at the right, beyond the gap) */
    size_t first = W, last = 0, run = 0, longest = 0;
    for (size_t c = 0; c < W; c++)
        if (cols[c]) first = c < first ? c : first, last = c;
    for (size_t c = first; c <= last && first < W; c++) {
        run = cols[c] ? 0 : run + 1;
        if (run > longest) longest = run;
    }
    EXPECT(longest > (last - first) / 8, "the NaN gap should break the red line: longest gap %zu of %zu columns",
           longest, last - first);
    /* white background in the corner, something drawn (frame, text) */
    EXPECT(px[0] == 255 && px[1] == 255 && px[2] == 255, "background should be white");
    df_free(px);

    /* the same on a log axis, small (1x text) */
    snprintf(path, sizeof path, "%s/two_log.png", df_test_tmpdir());
    EXPECT(df_plot_png(path, s, 2, NULL, NULL, NULL, 1, 300, 200) == 0, "log plot: %s", df_errmsg());
    px = read_png(path, 300, 200);
    if (px) {
        EXPECT(count_rgb(px, 300, 200, s[1].rgb, NULL) > 50, "blue line on the small log chart");
        df_free(px);
    }
}

TEST(plot_empty_and_nan_series_still_draw_axes) {
    double x[3] = {1, 2, 3}, y[3] = {NAN, NAN, NAN}, neg[3] = {-1, 0, -2};
    df_series s[2] = {{x, y, 3, "all nan", {200, 0, 0}}, {NULL, NULL, 0, "empty", {0, 0, 200}}};
    df_series sn[1] = {{x, neg, 3, "not positive", {200, 0, 0}}};
    const unsigned char frame_rgb[3] = {90, 90, 90};
    char path[512];
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/empty%d.png", df_test_tmpdir(), k);
        int rc = k == 0   ? df_plot_png(path, NULL, 0, "nothing", "x", "y", 0, 640, 480)
                 : k == 1 ? df_plot_png(path, s, 2, "all NaN", "x", "y", 0, 640, 480)
                 : k == 2 ? df_plot_png(path, s, 2, "all NaN, log", "x", "y", 1, 640, 480)
                          : df_plot_png(path, sn, 1, "no positive y, log", "x", "y", 1, 640, 480);
        EXPECT(rc == 0, "case %d: %s", k, df_errmsg());
        uint8_t *px = read_png(path, 640, 480);
        if (!px) continue;
        EXPECT(count_rgb(px, 640, 480, frame_rgb, NULL) > 1000, "case %d: the frame should be drawn", k);
        EXPECT(k == 0 || count_rgb(px, 640, 480, s[0].rgb, NULL) > 0, "case %d: the legend should be drawn", k);
        df_free(px);
    }
}

TEST(plot_metrics_csv) {
    char csv[512], png[512];
    snprintf(csv, sizeof csv, "%s/metrics.csv", df_test_tmpdir());
    snprintf(png, sizeof png, "%s/loss.png", df_test_tmpdir());
    FILE *f = fopen(csv, "w");
    EXPECT(f != NULL, "cannot create %s", csv);
    if (!f) return;
    fprintf(f, "step,loss,lr,grad_norm,images_per_s\r\n");
    for (int i = 1; i <= 600; i++) {
        double loss = 0.04 + 0.8 * exp(-i / 60.0) + 0.01 * sin(i * 1.7);
        fprintf(f, "%d,%.6f,%.6g,%.5f,%.2f\r\n", i * 10, loss, 1e-4, 0.5, 900.0);
        if (i == 300) fprintf(f, "\n"); /* a blank line is skipped */
    }
    fprintf(f, "6010,0.0"); /* a row still being written is ignored */
    fclose(f);
    EXPECT(df_plot_metrics_csv(csv, png, "test run") == 0, "plot metrics: %s", df_errmsg());
    uint8_t *px = read_png(png, 1000, 600);
    if (!px) return;
    const unsigned char raw[3] = DF_PLOT_RAW_RGB, smooth[3] = DF_PLOT_SMOOTH_RGB;
    size_t nr = count_rgb(px, 1000, 600, raw, NULL), ns = count_rgb(px, 1000, 600, smooth, NULL);
    EXPECT(nr > 500 && ns > 1000, "raw and smoothed loss lines: %zu and %zu pixels", nr, ns);
    df_free(px);

    /* columns in another order, found by name */
    df_test_write_text(csv, "loss,step\n0.5,1\n0.25,2\n0.2,3\n");
    EXPECT(df_plot_metrics_csv(csv, png, NULL) == 0, "reordered columns: %s", df_errmsg());
}

TEST(plot_refuses_bad_input) {
    char csv[512], png[512];
    snprintf(png, sizeof png, "%s/refused.png", df_test_tmpdir());
    snprintf(csv, sizeof csv, "%s/no-such-metrics.csv", df_test_tmpdir());
    EXPECT(df_plot_metrics_csv(csv, png, "t") == -1 && strstr(df_errmsg(), "no-such-metrics.csv"),
           "a missing CSV must be refused, naming it: %s", df_errmsg());

    snprintf(csv, sizeof csv, "%s/empty.csv", df_test_tmpdir());
    df_test_write_text(csv, "");
    EXPECT(df_plot_metrics_csv(csv, png, "t") == -1, "an empty CSV must be refused");
    df_test_write_text(csv, "step,loss,lr,grad_norm,images_per_s\n");
    EXPECT(df_plot_metrics_csv(csv, png, "t") == -1 && strstr(df_errmsg(), "no rows"),
           "a header-only CSV must be refused: %s", df_errmsg());
    df_test_write_text(csv, "step,lr\n1,0.1\n");
    EXPECT(df_plot_metrics_csv(csv, png, "t") == -1 && strstr(df_errmsg(), "loss"),
           "a CSV without a loss column must be refused: %s", df_errmsg());
    df_test_write_text(csv, "step,loss\n1,0.5\n2,zero\n3,0.4\n");
    EXPECT(df_plot_metrics_csv(csv, png, "t") == -1 && strstr(df_errmsg(), "line 3"),
           "a malformed row must be refused, naming its line: %s", df_errmsg());

    double x[2] = {0, 1}, y[2] = {1, 2};
    df_series s = {x, y, 2, "s", {0, 0, 0}}, nox = {NULL, y, 2, "s", {0, 0, 0}};
    EXPECT(df_plot_png(png, &s, 1, "t", "x", "y", 0, 100, 400) == -1, "width 100 must be refused");
    EXPECT(df_plot_png(png, &s, 1, "t", "x", "y", 0, 800, 5000) == -1, "height 5000 must be refused");
    EXPECT(df_plot_png(png, &s, 1, "t", "x", "y", 0, -800, 600) == -1, "a negative width must be refused");
    EXPECT(df_plot_png(png, &nox, 1, "t", "x", "y", 0, 800, 600) == -1, "a NULL x array must be refused");
    EXPECT(df_plot_png(png, NULL, 1, "t", "x", "y", 0, 800, 600) == -1, "NULL series must be refused");
    EXPECT(df_plot_png(NULL, &s, 1, "t", "x", "y", 0, 800, 600) == -1, "a NULL path must be refused");
    snprintf(png, sizeof png, "%s/no-such-dir/plot.png", df_test_tmpdir());
    EXPECT(df_plot_png(png, &s, 1, "t", "x", "y", 0, 800, 600) == -1, "an unwritable path must be refused");
}

/* ---- axes ---- */

/* 1 if v is 1, 2 or 5 times a power of ten. */
static int is_125(double v) {
    double m = v / pow(10, floor(log10(v) + 1e-9));
    return fabs(m - 1) < 1e-9 || fabs(m - 2) < 1e-9 || fabs(m - 5) < 1e-9;
}

TEST(plot_nice_ticks) {
    EXPECT(fabs(df_plot_nice_step(12345, 7) - 2000) < 1e-9, "12345 / 7 -> 2000, got %g",
           df_plot_nice_step(12345, 7));
    EXPECT(fabs(df_plot_nice_step(1, 10) - 0.1) < 1e-12, "1 / 10 -> 0.1");
    EXPECT(fabs(df_plot_nice_step(0.3, 5) - 0.05) < 1e-12, "0.3 / 5 -> 0.05");
    EXPECT(fabs(df_plot_nice_step(1, 3) - 0.5) < 1e-12, "1 / 3 -> 0.5");
    EXPECT(fabs(df_plot_nice_step(30000, 7) - 5000) < 1e-9, "30000 / 7 -> 5000");

    df_plot_axis a;
    df_plot_axis_linear(&a, 0, 12345, 7, 0);
    EXPECT(a.step == 2000 && a.n == 7 && a.lo == 0 && a.hi == 12345, "0..12345: step %g, %zu ticks, %g..%g",
           a.step, a.n, a.lo, a.hi);
    for (size_t i = 0; i < a.n; i++) EXPECT(a.tick[i] == 2000.0 * i, "tick %zu = %g", i, a.tick[i]);
    /* an end within 5% of a tick moves out to it */
    df_plot_axis_linear(&a, 10, 2990, 7, 0);
    EXPECT(a.lo == 0 && a.hi == 3000 && a.step == 500, "10..2990 -> 0..3000 by 500, got %g..%g by %g", a.lo, a.hi,
           a.step);
    /* one value, zero, non-finite */
    df_plot_axis_linear(&a, 5, 5, 5, 0);
    EXPECT(a.lo < 5 && a.hi > 5 && a.n >= 2, "a single value gets a range around it: %g..%g", a.lo, a.hi);
    df_plot_axis_linear(&a, 0, 0, 5, 0);
    EXPECT(a.lo <= -1 && a.hi >= 1, "0 gets -1..1, got %g..%g", a.lo, a.hi);
    df_plot_axis_linear(&a, NAN, 3, 5, 0);
    EXPECT(a.lo == 0 && a.hi == 1, "NaN gets 0..1, got %g..%g", a.lo, a.hi);
    df_plot_axis_linear(&a, -1e308, 1e308, 5, 0);
    EXPECT(a.lo == 0 && a.hi == 1, "an overflowing span gets 0..1, got %g..%g", a.lo, a.hi);

    /* properties over many ranges */
    double r = 0.123;
    for (int t = 0; t < 500; t++) {
        r = fmod(r * 9301 + 0.4927, 1.0);
        double lo = (r - 0.5) * pow(10, (t % 13) - 6), span = (0.01 + fmod(r * 77, 1.0)) * pow(10, (t % 11) - 5);
        int target = 4 + t % 7;
        df_plot_axis_linear(&a, lo, lo + span, target, t % 2 ? 0.04 : 0);
        int ok = is_125(a.step) && a.lo <= lo && a.hi >= lo + span && a.n >= 3 &&
                 a.n <= (size_t)(1.5 * target + 2);
        for (size_t i = 0; ok && i < a.n; i++) {
            double k = a.tick[i] / a.step;
            ok = a.tick[i] >= a.lo && a.tick[i] <= a.hi &&
                 fabs(a.tick[i] - round(k) * a.step) <= 1e-12 * fabs(a.tick[i]) + 1e-9 * a.step &&
                 (i == 0 || a.tick[i] > a.tick[i - 1]);
        }
        EXPECT(ok, "range %.6g + %.6g, target %d: step %g, %zu ticks over %g..%g", lo, span, target, a.step, a.n,
               a.lo, a.hi);
        if (!ok) break;
    }
}

TEST(plot_log_ticks) {
    df_plot_axis a;
    /* a typical loss: three decades on the axis -> decades labelled, 2x and 5x minor and unlabelled */
    df_plot_axis_log(&a, 0.0183, 1.02, 8);
    static const double want[] = {0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2};
    EXPECT(a.log && fabs(a.lo - 0.01) < 1e-12 && fabs(a.hi - 2) < 1e-12 && a.n == 8, "0.0183..1.02: %g..%g, %zu ticks",
           a.lo, a.hi, a.n);
    for (size_t i = 0; i < a.n && i < 8; i++) {
        int decade = i % 3 == 0;
        EXPECT(fabs(a.tick[i] - want[i]) < 1e-9 * want[i] && a.major[i] == decade && a.labelled[i] == decade,
               "tick %zu: %g (major %d, labelled %d), want %g", i, a.tick[i], a.major[i], a.labelled[i], want[i]);
    }
    /* within about a decade: the minor ticks are labelled too */
    df_plot_axis_log(&a, 0.03, 0.4, 8);
    EXPECT(fabs(a.lo - 0.02) < 1e-12 && fabs(a.hi - 0.5) < 1e-12 && a.n == 5, "0.03..0.4: %g..%g, %zu ticks", a.lo,
           a.hi, a.n);
    for (size_t i = 0; i < a.n; i++) EXPECT(a.labelled[i], "tick %g should be labelled", a.tick[i]);
    /* twenty decades: no minor ticks, every k-th decade */
    df_plot_axis_log(&a, 1e-10, 1e10, 8);
    EXPECT(a.n >= 4 && a.n <= 11, "1e-10..1e10: %zu ticks", a.n);
    for (size_t i = 0; i < a.n; i++) EXPECT(a.major[i], "tick %g should be a decade", a.tick[i]);
    /* one value; bad input */
    df_plot_axis_log(&a, 0.05, 0.05, 8);
    EXPECT(a.lo < 0.05 && a.hi > 0.05, "a single value gets a range around it: %g..%g", a.lo, a.hi);
    df_plot_axis_log(&a, -1, 1, 8);
    EXPECT(fabs(a.lo - 0.01) < 1e-12 && fabs(a.hi - 1) < 1e-12, "a non-positive range gets 0.01..1");
}

TEST(plot_tick_labels) {
    static const struct {
        double v, step;
        const char *want;
    } cases[] = {
        {0, 500, "0"},       {500, 500, "500"},   {1000, 500, "1k"},   {1500, 500, "1.5k"},    {10000, 2000, "10k"},
        {12500, 2500, "12.5k"}, {3e6, 1e6, "3M"}, {0.05, 0.05, "0.05"}, {0.1, 0.05, "0.1"},     {0.01, 0.01, "0.01"},
        {1, 1, "1"},         {-0.5, 0.5, "-0.5"}, {2e-5, 2e-5, "2e-5"}, {1e-17, 0.1, "0"},      {1002, 2, "1002"},
        {0.1 + 0.2, 0.1, "0.3"}, {-1e-17, 0.1, "0"}, {250, 50, "250"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32];
        df_plot_tick_label(buf, sizeof buf, cases[i].v, cases[i].step);
        EXPECT(strcmp(buf, cases[i].want) == 0, "label(%g, step %g) = \"%s\", want \"%s\"", cases[i].v, cases[i].step,
               buf, cases[i].want);
    }
}
