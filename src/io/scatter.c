/* scatter.c: a row of scatter-plot panels drawn into an RGB buffer with plot.c's primitives.
 *
 * Pixel (i, j) covers [i, i + 1) x [j, j + 1), as in plot.c. A point at continuous position (px, py) is a
 * disc of radius r: a pixel's coverage is r + 0.5 minus the distance from its centre (clamped to [0, 1]),
 * times the point's opacity, blended over what is there. */
#include "io/scatter.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "io/image.h"
#include "io/plot.h"
#include "io/plot_font.h"

static const unsigned char INK[3] = {34, 34, 34}, FRAME[3] = {90, 90, 90},
                           GRID[3] = {226, 226, 226}, POINT[3] = DF_SCATTER_RGB;

/* The canvas: w x h RGB pixels. */
typedef struct {
    unsigned char *px;
    int w, h;
} image;

/* Blends rgb over pixel (x, y) with opacity a, if it lies in the clip box [cx0, cx1] x [cy0, cy1]. */
static void blend_in(image *im, int x, int y, const unsigned char rgb[3], double a, const int clip[4]) {
    if (x < clip[0] || x > clip[2] || y < clip[1] || y > clip[3] || a <= 0) return;
    unsigned char *p = im->px + ((size_t)y * (size_t)im->w + (size_t)x) * 3;
    if (a > 1) a = 1;
    for (int c = 0; c < 3; c++) p[c] = (unsigned char)lround(p[c] + (rgb[c] - p[c]) * a);
}

/* A translucent anti-aliased disc of radius r at continuous (cx, cy), clipped to the box. */
static void disc(image *im, double cx, double cy, double r, double alpha, const unsigned char rgb[3],
                 const int clip[4]) {
    int x0 = (int)floor(cx - r - 1), x1 = (int)ceil(cx + r + 1), y0 = (int)floor(cy - r - 1), y1 = (int)ceil(cy + r + 1);
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            double dx = x + 0.5 - cx, dy = y + 0.5 - cy, cov = r + 0.5 - sqrt(dx * dx + dy * dy);
            if (cov > 0) blend_in(im, x, y, rgb, alpha * (cov > 1 ? 1 : cov), clip);
        }
}

/* One panel with its plot area's top left corner at (x0, y0). */
static void draw_panel(image *im, const df_scatter_panel *p, const df_plot_axis *ax, double lim, int side, int x0,
                       int y0, int scale, int y_labels) {
    int x1 = x0 + side - 1, y1 = y0 + side - 1, tick = 4 * scale, gap = 3 * scale;
    int inner[4] = {x0 + 1, y0 + 1, x1 - 1, y1 - 1};
    double per = side / (2 * lim);
    /* grid */
    for (size_t i = 0; i < ax->n; i++) {
        int q = (int)floor((ax->tick[i] + lim) * per);
        if (q <= 0 || q >= side - 1) continue;
        df_plot_fill_rect(im->px, im->w, im->h, x0 + q, y0 + 1, x0 + q, y1 - 1, GRID);
        df_plot_fill_rect(im->px, im->w, im->h, x0 + 1, y1 - q, x1 - 1, y1 - q, GRID);
    }
    /* points: the radius and opacity shrink as the panel fills */
    double r = 1.1 * side / 200.0 + 0.4, alpha = p->n > 4000 ? 0.35 : p->n > 1000 ? 0.5 : 0.7;
    for (size_t i = 0; i < p->n; i++) {
        double x = p->xy[2 * i], y = p->xy[2 * i + 1];
        if (!isfinite(x) || !isfinite(y) || fabs(x) > lim || fabs(y) > lim) continue;
        disc(im, x0 + (x + lim) * per, y0 + (lim - y) * per, r, alpha, p->rgb ? p->rgb + 3 * i : POINT, inner);
    }
    /* frame, ticks, labels, title */
    df_plot_fill_rect(im->px, im->w, im->h, x0, y0, x1, y0, FRAME);
    df_plot_fill_rect(im->px, im->w, im->h, x0, y1, x1, y1, FRAME);
    df_plot_fill_rect(im->px, im->w, im->h, x0, y0, x0, y1, FRAME);
    df_plot_fill_rect(im->px, im->w, im->h, x1, y0, x1, y1, FRAME);
    for (size_t i = 0; i < ax->n; i++) {
        int q = (int)floor((ax->tick[i] + lim) * per);
        if (q < 0) q = 0;
        if (q > side - 1) q = side - 1;
        char lab[32];
        df_plot_tick_label(lab, sizeof lab, ax->tick[i], ax->step);
        int tw = df_plot_text_width(lab, scale);
        df_plot_fill_rect(im->px, im->w, im->h, x0 + q, y1 + 1, x0 + q, y1 + tick, FRAME);
        df_plot_text(im->px, im->w, im->h, x0 + q - tw / 2, y1 + tick + gap, lab, scale, INK);
        if (!y_labels) continue;
        df_plot_fill_rect(im->px, im->w, im->h, x0 - tick, y1 - q, x0 - 1, y1 - q, FRAME);
        df_plot_text(im->px, im->w, im->h, x0 - tick - gap - tw, y1 - q - FONT_CAP * scale / 2, lab, scale, INK);
    }
    if (p->title && p->title[0]) {
        int tw = df_plot_text_width(p->title, scale);
        df_plot_text(im->px, im->w, im->h, x0 + side / 2 - tw / 2, y0 - gap - FONT_H * scale, p->title, scale, INK);
    }
}

int df_scatter_png(const char *path, const df_scatter_panel *panels, size_t npanels, double lim, int side,
                   const char *title) {
    if (!path) return df_error("scatter plot: no output path");
    if (npanels < 1 || npanels > DF_SCATTER_MAX_PANELS)
        return df_error("scatter plot %s: %zu panels (1..%d)", path, npanels, DF_SCATTER_MAX_PANELS);
    if (side < DF_SCATTER_MIN_SIDE || side > DF_SCATTER_MAX_SIDE)
        return df_error("scatter plot %s: panel side %d is out of range (%d..%d pixels)", path, side,
                        DF_SCATTER_MIN_SIDE, DF_SCATTER_MAX_SIDE);
    if (!(lim > 0) || !isfinite(lim)) return df_error("scatter plot %s: axis half-range %g must be positive", path, lim);
    for (size_t k = 0; k < npanels; k++)
        if (panels[k].n > 0 && !panels[k].xy)
            return df_error("scatter plot %s: panel %zu has %zu points but no array", path, k, panels[k].n);

    int scale = side >= 180 ? 2 : 1, pad = 10 * scale, tick = 4 * scale, gap = 3 * scale;
    int line = FONT_H * scale, has_title = title && title[0];
    df_plot_axis ax;
    df_plot_axis_linear(&ax, -lim, lim, side / (40 * scale) < 3 ? 3 : side / (40 * scale), 0);
    ax.lo = -lim, ax.hi = lim; /* the range is fixed: ticks outside it are dropped */
    size_t nt = 0;
    for (size_t i = 0; i < ax.n; i++)
        if (ax.tick[i] >= -lim - 1e-9 && ax.tick[i] <= lim + 1e-9) ax.tick[nt++] = ax.tick[i];
    ax.n = nt;
    int ylw = 0;
    for (size_t i = 0; i < ax.n; i++) {
        char lab[32];
        df_plot_tick_label(lab, sizeof lab, ax.tick[i], ax.step);
        int w = df_plot_text_width(lab, scale);
        if (w > ylw) ylw = w;
    }
    int left = pad + ylw + gap + tick, between = 6 * scale + ylw / 2;
    int top = pad + (has_title ? line + pad : 0) + line + gap;
    int W = left + (int)npanels * side + ((int)npanels - 1) * between + pad + ylw / 2;
    int H = top + side + tick + gap + line + pad;
    image im = {df_malloc((size_t)W * (size_t)H * 3), W, H};
    memset(im.px, 255, (size_t)W * (size_t)H * 3);
    for (size_t k = 0; k < npanels; k++)
        draw_panel(&im, &panels[k], &ax, lim, side, left + (int)k * (side + between), top, scale, k == 0);
    if (has_title) {
        int tw = df_plot_text_width(title, scale);
        int x = (left + W - pad) / 2 - tw / 2;
        if (x < pad) x = pad;
        df_plot_text(im.px, W, H, x, pad, title, scale, INK);
        df_plot_text(im.px, W, H, x + 1, pad, title, scale, INK); /* bold */
    }
    int rc = df_png_write(path, im.px, (size_t)W, (size_t)H, 3);
    df_free(im.px);
    return rc;
}

void df_scatter_hue(unsigned char *rgb, const float *xy, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = xy[2 * i], y = xy[2 * i + 1], r = sqrt(x * x + y * y);
        double h = isfinite(r) && r > 0 ? (atan2(y, x) / (2 * M_PI) + 1) * 6 : 0; /* 0..12, sector = h mod 6 */
        double v = 0.55 + 0.35 * (isfinite(r) ? fmin(r / 1.5, 1) : 1), s = 0.8, f = fmod(h, 6);
        int sec = (int)f;
        double fr = f - sec, p = v * (1 - s), q = v * (1 - s * fr), t = v * (1 - s * (1 - fr)), c[3];
        switch (sec) {
        case 0: c[0] = v, c[1] = t, c[2] = p; break;
        case 1: c[0] = q, c[1] = v, c[2] = p; break;
        case 2: c[0] = p, c[1] = v, c[2] = t; break;
        case 3: c[0] = p, c[1] = q, c[2] = v; break;
        case 4: c[0] = t, c[1] = p, c[2] = v; break;
        default: c[0] = v, c[1] = p, c[2] = q; break;
        }
        for (int k = 0; k < 3; k++) rgb[3 * i + k] = (unsigned char)lround(255 * c[k]);
    }
}
