/* plot.h: line charts as PNG files, drawn without any plotting library (the loss curve of a training run).
 *
 * A chart has a white background, a framed plot area with a light grey grid at "nice" tick values (1-2-5
 * steps, or decades with 2x and 5x minor ticks on a log axis), numeric tick labels, a title, axis labels and
 * a legend. Lines are anti-aliased and clipped to the plot area. Text uses a small built-in bitmap font
 * (printable ASCII), drawn at 2x for charts at least 800 x 400 pixels.
 *
 * Functions that can fail return 0 on success and -1 after df_error (read df_errmsg()).
 */
#ifndef DF_IO_PLOT_H
#define DF_IO_PLOT_H

#include <stddef.h>

/* The smallest and largest chart side df_plot_png accepts, in pixels. */
#define DF_PLOT_MIN_SIDE 200
#define DF_PLOT_MAX_SIDE 4000
/* The colours of df_plot_metrics_csv's lines (r, g, b). */
#define DF_PLOT_RAW_RGB {160, 196, 232}
#define DF_PLOT_SMOOTH_RGB {20, 70, 150}
/* The most ticks one axis has. */
#define DF_PLOT_MAX_TICKS 64

/* One line of a chart: n points (x[i], y[i]) joined in order. A point whose x or y is not finite (or whose y
 * is <= 0 on a log axis) is skipped and breaks the line there. label (may be NULL: no legend entry) names the
 * series in the legend; rgb is its colour. The chart only reads the arrays. */
typedef struct {
    const double *x, *y;
    size_t n;
    const char *label;
    unsigned char rgb[3];
} df_series;

/* Draws `nseries` series as a line chart of width x height pixels (each DF_PLOT_MIN_SIDE..DF_PLOT_MAX_SIDE)
 * and writes it to `path` as an RGB PNG, atomically. log_y != 0 makes the y axis logarithmic. title, xlabel
 * and ylabel may be NULL (nothing drawn). The axis ranges cover the finite points of all series; with no
 * such point (no series, empty or all-NaN series) the axes are drawn over a default range. The legend sits
 * in the top right corner of the plot area, or in another corner where it would cover fewer data pixels;
 * series without a label get no entry, and a legend too big for the plot area is left out.
 * Errors: a NULL path, sizes out of range, series == NULL with nseries > 0, a series with n > 0 and a NULL
 * x or y, or a failed write. */
int df_plot_png(const char *path, const df_series *series, size_t nseries, const char *title, const char *xlabel,
                const char *ylabel, int log_y, int width, int height);

/* Reads a diffuse training metrics.csv (header "step,loss,..." - the columns are found by name - then one row
 * per logged step) and draws the loss against the step on a log y axis into a 1000 x 600 PNG at `png_path`:
 * the raw loss as a thin light blue line (DF_PLOT_RAW_RGB) and a thicker dark blue smoothed loss
 * (DF_PLOT_SMOOTH_RGB): an exponential moving average with a time constant of 1/50 of the rows (at least one
 * row), bias-corrected (the start is not pulled towards zero) and run forwards then backwards, so it does not
 * trail a falling loss. title may be NULL. A last line without a newline (a row still being written) is ignored. Errors: the file is missing
 * or unreadable, has no step or loss column, a malformed row (the message names the line), no rows. */
int df_plot_metrics_csv(const char *csv_path, const char *png_path, const char *title);

/* ---- axes (exposed for tests) ---- */

/* An axis: its limits and ticks. Ticks are increasing and lie within [lo, hi]. A major tick gets a longer
 * tick mark and a darker grid line; a labelled tick gets a number. */
typedef struct {
    double lo, hi;   /* the data values at the two ends of the axis */
    int log;         /* 1: logarithmic (lo > 0) */
    double step;     /* linear: the tick spacing (1, 2 or 5 times a power of ten); log: 0 */
    size_t n;        /* the number of ticks */
    double tick[DF_PLOT_MAX_TICKS];
    unsigned char major[DF_PLOT_MAX_TICKS], labelled[DF_PLOT_MAX_TICKS];
} df_plot_axis;

/* The 1-2-5 step (1, 2 or 5 times a power of ten) nearest (on a log scale) to span / target; span > 0 and
 * finite, target >= 1. */
double df_plot_nice_step(double span, int target);

/* A linear axis over the data range [dmin, dmax], about `target` ticks (clamped to 2..20): the range is
 * widened by `pad` times its span on each side (0 for none), then each end moves out to the next multiple of
 * the step if that adds at most 5% of the span, else stays (so the data fill the axis). A single value v
 * becomes v +- 10% (+-1 for 0); non-finite or reversed input, or values beyond +-1e300, give 0..1. All ticks
 * are major and labelled. */
void df_plot_axis_linear(df_plot_axis *a, double dmin, double dmax, int target, double pad);

/* A log axis over the data range [dmin, dmax] (both > 0): lo and hi are the nearest 1-2-5 values
 * (m * 10^k, m in {1, 2, 5}) at or outside the data. Ticks at the decades (major) and, when the axis spans
 * at most 8 decades, at 2x and 5x (minor). Decades are labelled; minor ticks are labelled too when fewer than
 * three decades lie on the axis. Many decades: every k-th decade is ticked so that at most ~target are.
 * Input that is not positive and finite gives 0.01..1. */
void df_plot_axis_log(df_plot_axis *a, double dmin, double dmax, int target);

/* Formats tick value v compactly into buf (cap bytes, always terminated), with as many decimals as the step
 * needs and no trailing zeros: 0, 500, 1k, 1.5k, 12.5k, 2M, 0.05, 0.1, -0.5, 2e-5. Values within step * 1e-6
 * of zero print as "0". step > 0 (a log tick passes its own value). */
void df_plot_tick_label(char *buf, size_t cap, double v, double step);

/* ---- drawing primitives (for other figures drawn into an RGB buffer px of w x h pixels) ---- */

/* The width in pixels of text s in the built-in font, one font pixel drawn as scale x scale pixels. */
int df_plot_text_width(const char *s, int scale);
/* Draws text s with the top left of its first glyph cell at (x, y); what falls outside the image is clipped.
 * A line is FONT_H * scale pixels tall, capitals FONT_CAP * scale (io/plot_font.h). */
void df_plot_text(unsigned char *px, int w, int h, int x, int y, const char *s, int scale, const unsigned char rgb[3]);
/* Fills the rectangle [x0, x1] x [y0, y1] (inclusive, clipped) with colour rgb. */
void df_plot_fill_rect(unsigned char *px, int w, int h, int x0, int y0, int x1, int y1, const unsigned char rgb[3]);

#endif
