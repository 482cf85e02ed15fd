/* plot.c: line charts drawn into an RGB buffer and written with df_png_write.
 *
 * Pixel (i, j) covers [i, i + 1) x [j, j + 1); its centre is (i + 0.5, j + 0.5). Data map to these
 * continuous coordinates, lines are drawn by coverage (the distance from a pixel centre to the segment), so
 * they are anti-aliased, and each series first goes to a coverage mask (the maximum over its segments) that
 * is then blended once: a polyline of thousands of short segments keeps soft edges instead of saturating. */
#include "io/plot.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/file.h"
#include "io/image.h"

/* ---- font (plot_font.c) ---- */

#include "io/plot_font.h"

/* ---- canvas ---- */

typedef struct {
    unsigned char *px; /* w * h * 3, RGB */
    int w, h;
} canvas;

/* Blends colour rgb over pixel (x, y) with opacity a in [0, 1]; outside the canvas does nothing. */
static void blend(canvas *cv, int x, int y, const unsigned char rgb[3], double a) {
    if (x < 0 || y < 0 || x >= cv->w || y >= cv->h || a <= 0) return;
    unsigned char *p = cv->px + ((size_t)y * (size_t)cv->w + (size_t)x) * 3;
    if (a > 1) a = 1;
    for (int c = 0; c < 3; c++) p[c] = (unsigned char)lround(p[c] + (rgb[c] - p[c]) * a);
}

static void fill_rect(canvas *cv, int x0, int y0, int x1, int y1, const unsigned char rgb[3]) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) blend(cv, x, y, rgb, 1);
}

static void stroke_rect(canvas *cv, int x0, int y0, int x1, int y1, const unsigned char rgb[3]) {
    fill_rect(cv, x0, y0, x1, y0, rgb);
    fill_rect(cv, x0, y1, x1, y1, rgb);
    fill_rect(cv, x0, y0, x0, y1, rgb);
    fill_rect(cv, x1, y0, x1, y1, rgb);
}

/* The width in pixels of text s at scale `scale` (one font pixel = scale x scale pixels). */
static int text_width(const char *s, int scale) {
    int w = 0;
    for (; *s; s++) {
        int first, width;
        glyph_extent(glyph_of((unsigned char)*s), &first, &width);
        w += (width + 1) * scale;
    }
    return w > 0 ? w - scale : 0;
}

/* Draws text s with the top left of its first glyph cell at (x, y). up != 0 turns it 90 degrees
 * anticlockwise (reading upwards): (x, y) is then the bottom left of the turned text, whose glyph tops face
 * left. */
static void draw_text(canvas *cv, int x, int y, const char *s, int scale, const unsigned char rgb[3], int up) {
    int u0 = 0; /* along the text */
    for (; *s; s++) {
        const glyph *g = glyph_of((unsigned char)*s);
        int first, width;
        glyph_extent(g, &first, &width);
        for (int r = 0; r < FONT_H; r++)
            for (int c = 0; c < width; c++) {
                if (!glyph_ink(g, r, first + c)) continue;
                for (int dy = 0; dy < scale; dy++)
                    for (int dx = 0; dx < scale; dx++) {
                        int u = u0 + c * scale + dx, v = r * scale + dy;
                        if (up) blend(cv, x + v, y - 1 - u, rgb, 1);
                        else blend(cv, x + u, y + v, rgb, 1);
                    }
            }
        u0 += (width + 1) * scale;
    }
}

/* ---- anti-aliased lines ---- */

/* A coverage mask over the plot area [x0, x1] x [y0, y1] (pixels, inclusive). */
typedef struct {
    unsigned char *m;
    int x0, y0, x1, y1, w;
} mask;

/* Liang-Barsky: clips the segment (ax, ay)-(bx, by) to the rectangle; 0 if nothing is left. */
static int clip_segment(double *ax, double *ay, double *bx, double *by, double xmin, double ymin, double xmax,
                        double ymax) {
    double dx = *bx - *ax, dy = *by - *ay, t0 = 0, t1 = 1;
    double p[4] = {-dx, dx, -dy, dy}, q[4] = {*ax - xmin, xmax - *ax, *ay - ymin, ymax - *ay};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return 0;
            continue;
        }
        double t = q[i] / p[i];
        if (p[i] < 0) {
            if (t > t1) return 0;
            if (t > t0) t0 = t;
        } else {
            if (t < t0) return 0;
            if (t < t1) t1 = t;
        }
    }
    double x0 = *ax + t0 * dx, y0 = *ay + t0 * dy;
    *bx = *ax + t1 * dx, *by = *ay + t1 * dy;
    *ax = x0, *ay = y0;
    return 1;
}

/* Adds the segment (ax, ay)-(bx, by) (continuous coordinates), `lw` pixels wide with round ends, to the mask:
 * a pixel's coverage is 1 inside, 0 beyond half a pixel outside, linear in between; the mask keeps the
 * maximum. Parts outside the mask are clipped (the ends are clipped beyond the border, so no cap shows). */
static void mask_segment(mask *mk, double ax, double ay, double bx, double by, double lw) {
    double r = lw / 2 + 0.5;
    if (!clip_segment(&ax, &ay, &bx, &by, mk->x0 - r - 1, mk->y0 - r - 1, mk->x1 + 1 + r + 1, mk->y1 + 1 + r + 1))
        return;
    int xa = (int)floor(fmin(ax, bx) - r), xb = (int)ceil(fmax(ax, bx) + r);
    int ya = (int)floor(fmin(ay, by) - r), yb = (int)ceil(fmax(ay, by) + r);
    if (xa < mk->x0) xa = mk->x0;
    if (ya < mk->y0) ya = mk->y0;
    if (xb > mk->x1) xb = mk->x1;
    if (yb > mk->y1) yb = mk->y1;
    double dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
    for (int y = ya; y <= yb; y++)
        for (int x = xa; x <= xb; x++) {
            double px = x + 0.5 - ax, py = y + 0.5 - ay;
            double t = len2 > 0 ? (px * dx + py * dy) / len2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double ex = px - t * dx, ey = py - t * dy;
            double cov = lw / 2 + 0.5 - sqrt(ex * ex + ey * ey);
            if (cov <= 0) continue;
            unsigned char v = (unsigned char)lround((cov > 1 ? 1 : cov) * 255);
            unsigned char *m = mk->m + (size_t)(y - mk->y0) * (size_t)mk->w + (size_t)(x - mk->x0);
            if (v > *m) *m = v;
        }
}

/* ---- axes ---- */

double df_plot_nice_step(double span, int target) {
    if (!(span > 0) || !isfinite(span)) return 1;
    if (target < 1) target = 1;
    double raw = span / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    /* boundaries at the geometric means: sqrt(2), sqrt(10), sqrt(50) */
    double m = f < 1.4142 ? 1 : f < 3.1623 ? 2 : f < 7.0711 ? 5 : 10;
    return m * mag;
}

void df_plot_axis_linear(df_plot_axis *a, double dmin, double dmax, int target, double pad) {
    memset(a, 0, sizeof *a);
    if (target < 2) target = 2;
    if (target > 20) target = 20;
    if (!isfinite(dmin) || !isfinite(dmax) || dmin > dmax || fmax(fabs(dmin), fabs(dmax)) > 1e300)
        dmin = 0, dmax = 1;
    double mid = dmin / 2 + dmax / 2;
    if (dmax - dmin <= fmax(1e-12 * fmax(fabs(dmin), fabs(dmax)), 1e-280)) { /* one value (or as good as) */
        if (fabs(mid) < 1e-270) mid = 0;
        double d = mid == 0 ? 1 : fabs(mid) * 0.1;
        dmin = mid - d, dmax = mid + d;
    }
    double span = dmax - dmin, lo = dmin - pad * span, hi = dmax + pad * span;
    if (!isfinite(lo) || !isfinite(hi)) lo = dmin, hi = dmax;
    double step = df_plot_nice_step(hi - lo, target);
    double flo = floor(lo / step) * step, chi = ceil(hi / step) * step;
    if (lo - flo <= 0.05 * span) lo = flo;
    if (chi - hi <= 0.05 * span) hi = chi;
    a->lo = lo, a->hi = hi, a->step = step;
    double k0 = ceil(lo / step - 1e-9), k1 = floor(hi / step + 1e-9);
    for (double k = k0; k <= k1 && a->n < DF_PLOT_MAX_TICKS; k++) {
        double v = k * step;
        if (fabs(v) < step * 1e-6) v = 0;
        a->tick[a->n] = v < lo ? lo : v > hi ? hi : v;
        a->major[a->n] = a->labelled[a->n] = 1;
        a->n++;
    }
}

/* The largest 1-2-5 value m * 10^k at most v (down) or the smallest at least v (up); v > 0. */
static double snap125(double v, int up) {
    static const double m[3] = {1, 2, 5};
    double k = floor(log10(v)), best = up ? INFINITY : 0;
    for (int dk = -1; dk <= 1; dk++)
        for (int i = 0; i < 3; i++) {
            double c = m[i] * pow(10, k + dk);
            if (up && c >= v * (1 - 1e-9) && c < best) best = c;
            if (!up && c <= v * (1 + 1e-9) && c > best) best = c;
        }
    return best;
}

void df_plot_axis_log(df_plot_axis *a, double dmin, double dmax, int target) {
    memset(a, 0, sizeof *a);
    a->log = 1;
    if (target < 2) target = 2;
    if (!(dmin > 0) || !(dmax >= dmin) || !isfinite(dmax) || dmax > 1e300 || dmin < 1e-300) dmin = 0.01, dmax = 1;
    double lo = snap125(dmin, 0), hi = snap125(dmax, 1);
    if (hi <= lo) lo = snap125(lo * 0.99, 0), hi = snap125(hi * 1.01, 1);
    a->lo = lo, a->hi = hi;
    int k0 = (int)floor(log10(lo) + 1e-9), k1 = (int)floor(log10(hi) + 1e-9);
    int decades = k1 - k0, stride = 1, minors = decades <= 8;
    if (decades + 1 > target) stride = (decades + target) / target;
    int ndec = 0; /* decades on the axis */
    for (int k = k0; k <= k1; k++)
        if (pow(10, k) >= lo * (1 - 1e-9) && pow(10, k) <= hi * (1 + 1e-9)) ndec++;
    static const double m[3] = {1, 2, 5};
    for (int k = k0; k <= k1; k++)
        for (int i = 0; i < 3 && a->n < DF_PLOT_MAX_TICKS; i++) {
            if (i > 0 && !minors) break;
            if (i == 0 && stride > 1 && (k - k0) % stride) continue;
            double v = m[i] * pow(10, k);
            if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
            a->tick[a->n] = v < lo ? lo : v > hi ? hi : v;
            a->major[a->n] = i == 0;
            a->labelled[a->n] = i == 0 || ndec < 3;
            a->n++;
        }
}

void df_plot_tick_label(char *buf, size_t cap, double v, double step) {
    if (cap == 0) return;
    if (!(step > 0) || !isfinite(step)) step = fabs(v) > 0 ? fabs(v) : 1;
    if (!isfinite(v)) {
        snprintf(buf, cap, "%s", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        return;
    }
    if (fabs(v) < step * 1e-6) {
        snprintf(buf, cap, "0");
        return;
    }
    static const struct {
        double at;
        const char *suffix;
    } units[] = {{1e9, "G"}, {1e6, "M"}, {1e3, "k"}};
    double div = 1;
    const char *suffix = "";
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (fabs(v) >= units[i].at && step >= units[i].at / 10) {
            div = units[i].at, suffix = units[i].suffix;
            break;
        }
    double a = fabs(v) / div, s = step / div;
    if (a >= 1e15 || a < 1e-3) { /* scientific: as many mantissa digits as the step needs */
        int digits = (int)floor(log10(a)) - (int)floor(log10(s) + 1e-9);
        if (digits < 0) digits = 0;
        if (digits > 6) digits = 6;
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*e", digits, v / div);
        char *e = strchr(tmp, 'e'), mant[64];
        snprintf(mant, sizeof mant, "%.*s", (int)(e - tmp), tmp);
        if (strchr(mant, '.')) { /* trailing zeros of the mantissa */
            size_t n = strlen(mant);
            while (n > 0 && mant[n - 1] == '0') mant[--n] = 0;
            if (n > 0 && mant[n - 1] == '.') mant[--n] = 0;
        }
        long ex = strtol(e + 1, NULL, 10);
        snprintf(buf, cap, "%se%ld%s", mant, ex, suffix);
        return;
    }
    int dec = 0; /* the decimals that make the step a whole number */
    while (dec < 12 && fabs(s * pow(10, dec) - round(s * pow(10, dec))) > 1e-6 * s * pow(10, dec)) dec++;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*f", dec, v / div);
    if (dec > 0) {
        size_t n = strlen(tmp);
        while (tmp[n - 1] == '0') tmp[--n] = 0;
        if (tmp[n - 1] == '.') tmp[--n] = 0;
    }
    if (strcmp(tmp, "-0") == 0) snprintf(tmp, sizeof tmp, "0");
    snprintf(buf, cap, "%s%s", tmp, suffix);
}

/* ---- the chart ---- */

static const unsigned char WHITE[3] = {255, 255, 255}, INK[3] = {34, 34, 34}, FRAME[3] = {90, 90, 90},
                           GRID_MAJOR[3] = {222, 222, 222}, GRID_MINOR[3] = {240, 240, 240},
                           LEGEND_EDGE[3] = {200, 200, 200};

/* The plot area [x0, x1] x [y0, y1] (pixels, inclusive, the frame on its border) and the axes. */
typedef struct {
    int x0, y0, x1, y1;
    df_plot_axis ax, ay;
} frame;

/* The continuous pixel coordinate of data value v on an axis spanning pixels p0..p1 (p1 < p0 for y);
 * NAN when v cannot be shown (not finite, <= 0 on a log axis). */
static double to_px(const df_plot_axis *a, double v, int p0, int p1) {
    if (!isfinite(v) || (a->log && v <= 0)) return NAN;
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    double p = p0 + 0.5 + t * (p1 - p0);
    if (!isfinite(p)) return NAN;
    return p < -1e9 ? -1e9 : p > 1e9 ? 1e9 : p;
}

/* The pixel row or column of tick i (-1, off the canvas, if it cannot be shown). */
static int tick_px(const df_plot_axis *a, size_t i, int p0, int p1) {
    double p = to_px(a, a->tick[i], p0, p1);
    return isnan(p) || p < 0 ? -1 : (int)floor(p);
}

/* The finite range of the series (y > 0 when log_y); 0 when there is no such point. */
static int data_range(const df_series *s, size_t ns, int log_y, double *xmin, double *xmax, double *ymin,
                      double *ymax) {
    int any = 0;
    *xmin = *ymin = INFINITY, *xmax = *ymax = -INFINITY;
    for (size_t k = 0; k < ns; k++)
        for (size_t i = 0; i < s[k].n; i++) {
            double x = s[k].x[i], y = s[k].y[i];
            if (!isfinite(x) || !isfinite(y) || (log_y && y <= 0)) continue;
            any = 1;
            *xmin = fmin(*xmin, x), *xmax = fmax(*xmax, x);
            *ymin = fmin(*ymin, y), *ymax = fmax(*ymax, y);
        }
    return any;
}

/* Formats the labels of axis a into lab (DF_PLOT_MAX_TICKS x 32) and returns the widest, in pixels. */
static int tick_labels(const df_plot_axis *a, char lab[][32], int scale) {
    int wmax = 0;
    for (size_t i = 0; i < a->n; i++) {
        df_plot_tick_label(lab[i], 32, a->tick[i], a->log ? a->tick[i] : a->step);
        int w = text_width(lab[i], scale);
        if (a->labelled[i] && w > wmax) wmax = w;
    }
    return wmax;
}

/* Draws series s into the coverage mask mk (the plot area inside the frame), then blends the mask onto the
 * canvas in the series' colour and marks the pixels it covers in `used` (the plot area including the frame,
 * row-major) for placing the legend. */
static void draw_series(canvas *cv, const frame *f, const df_series *s, double lw, mask *mk, unsigned char *used) {
    memset(mk->m, 0, (size_t)mk->w * (size_t)(mk->y1 - mk->y0 + 1));
    size_t uw = (size_t)(f->x1 - f->x0 + 1);
    double px = NAN, py = NAN;
    for (size_t i = 0; i < s->n; i++) {
        double x = to_px(&f->ax, s->x[i], f->x0, f->x1), y = to_px(&f->ay, s->y[i], f->y1, f->y0);
        if (isnan(x) || isnan(y)) {
            px = py = NAN; /* a gap */
            continue;
        }
        int next_ok = i + 1 < s->n && !isnan(to_px(&f->ax, s->x[i + 1], f->x0, f->x1)) &&
                      !isnan(to_px(&f->ay, s->y[i + 1], f->y1, f->y0));
        if (!isnan(px)) mask_segment(mk, px, py, x, y, lw);
        else if (!next_ok) mask_segment(mk, x, y, x, y, lw); /* an isolated point: a dot */
        px = x, py = y;
    }
    for (int y = mk->y0; y <= mk->y1; y++)
        for (int x = mk->x0; x <= mk->x1; x++) {
            unsigned char m = mk->m[(size_t)(y - mk->y0) * (size_t)mk->w + (size_t)(x - mk->x0)];
            if (!m) continue;
            blend(cv, x, y, s->rgb, m / 255.0);
            used[(size_t)(y - f->y0) * uw + (size_t)(x - f->x0)] = 1;
        }
}

/* Draws the legend in the corner of the plot area where it covers the fewest data pixels (top right wins
 * ties, then top left, bottom right, bottom left). */
static void draw_legend(canvas *cv, const frame *f, const df_series *s, size_t ns, const double *lw,
                        const unsigned char *used, int scale) {
    int pad = 6 * scale, swatch = 14 * scale, row = (FONT_H + 4) * scale, tw = 0, rows = 0;
    for (size_t k = 0; k < ns; k++)
        if (s[k].label && s[k].label[0]) {
            int w = text_width(s[k].label, scale);
            if (w > tw) tw = w;
            rows++;
        }
    if (!rows) return;
    int bw = pad + swatch + 4 * scale + tw + pad, bh = pad + rows * row - 4 * scale + pad;
    int aw = f->x1 - f->x0 - 1, ah = f->y1 - f->y0 - 1, m = 8 * scale;
    if (bw + 2 * m > aw || bh + 2 * m > ah) return; /* no room */
    int cx[4] = {f->x1 - m - bw, f->x0 + m, f->x1 - m - bw, f->x0 + m};
    int cy[4] = {f->y0 + m, f->y0 + m, f->y1 - m - bh, f->y1 - m - bh};
    int best = 0;
    long best_cover = -1;
    int mw = f->x1 - f->x0 + 1;
    for (int c = 0; c < 4; c++) {
        long cover = 0;
        for (int y = cy[c]; y < cy[c] + bh; y++)
            for (int x = cx[c]; x < cx[c] + bw; x++)
                cover += used[(size_t)(y - f->y0) * (size_t)mw + (size_t)(x - f->x0)];
        if (best_cover < 0 || cover < best_cover) best = c, best_cover = cover;
    }
    int x0 = cx[best], y0 = cy[best];
    fill_rect(cv, x0, y0, x0 + bw - 1, y0 + bh - 1, WHITE);
    stroke_rect(cv, x0, y0, x0 + bw - 1, y0 + bh - 1, LEGEND_EDGE);
    mask mk = {df_calloc((size_t)swatch * (size_t)(row + 1), 1), x0 + pad, 0, x0 + pad + swatch - 1, 0, swatch};
    int r = 0;
    for (size_t k = 0; k < ns; k++) {
        if (!s[k].label || !s[k].label[0]) continue;
        int ty = y0 + pad + r * row, mid = ty + FONT_CAP * scale / 2;
        mk.y0 = mid - row / 2, mk.y1 = mk.y0 + row;
        memset(mk.m, 0, (size_t)swatch * (size_t)(row + 1));
        mask_segment(&mk, mk.x0 + 1, mid + 0.5, mk.x1, mid + 0.5, lw[k] < 2 * scale ? 2 * scale : lw[k]);
        for (int y = mk.y0; y <= mk.y1; y++)
            for (int x = mk.x0; x <= mk.x1; x++)
                blend(cv, x, y, s[k].rgb, mk.m[(size_t)(y - mk.y0) * (size_t)swatch + (size_t)(x - mk.x0)] / 255.0);
        draw_text(cv, x0 + pad + swatch + 4 * scale, ty, s[k].label, scale, INK, 0);
        r++;
    }
    df_free(mk.m);
}

/* The whole chart; lw[k] is series k's line width in pixels. */
static int plot(const char *path, const df_series *s, size_t ns, const double *lw, const char *title,
                const char *xlabel, const char *ylabel, int log_y, int W, int H) {
    int scale = W >= 800 && H >= 400 ? 2 : 1;
    int pad = 8 * scale, tick = 5 * scale, gap = 3 * scale, text_h = FONT_CAP * scale, line_h = FONT_H * scale;
    int has_title = title && title[0], has_xl = xlabel && xlabel[0], has_yl = ylabel && ylabel[0];
    frame f;
    f.y0 = pad + (has_title ? line_h + pad : 0) + text_h / 2;
    f.y1 = H - 1 - (pad + (has_xl ? line_h + pad : 0) + text_h + gap + tick);

    double xmin, xmax, ymin, ymax;
    if (!data_range(s, ns, log_y, &xmin, &xmax, &ymin, &ymax)) {
        xmin = 0, xmax = 1;
        ymin = log_y ? 0.01 : 0, ymax = 1;
    }
    /* y: about one tick per 4.5 label heights */
    int ty = (f.y1 - f.y0) / (text_h * 9 / 2);
    if (log_y) df_plot_axis_log(&f.ay, ymin, ymax, ty);
    else df_plot_axis_linear(&f.ay, ymin, ymax, ty, 0.04);
    char ylab[DF_PLOT_MAX_TICKS][32], xlab[DF_PLOT_MAX_TICKS][32];
    int ylw = tick_labels(&f.ay, ylab, scale);
    f.x0 = pad + (has_yl ? line_h + pad : 0) + ylw + gap + tick;

    /* x: as many ticks as fit with their labels at least four characters apart */
    int xw = 0;
    for (int tx = 10;; tx--) {
        df_plot_axis_linear(&f.ax, xmin, xmax, tx, 0);
        xw = tick_labels(&f.ax, xlab, scale);
        f.x1 = W - 1 - (xw / 2 > pad * 2 ? xw / 2 + pad : pad * 2);
        double per = (f.x1 - f.x0) * f.ax.step / (f.ax.hi - f.ax.lo);
        if (tx <= 2 || per >= xw + 4 * FONT_W * scale) break;
    }
    if (f.x1 - f.x0 < 20 || f.y1 - f.y0 < 20)
        return df_error("plot %s: %d x %d pixels leave no room for the plot area", path, W, H);

    canvas cv = {df_malloc((size_t)W * (size_t)H * 3), W, H};
    memset(cv.px, 255, (size_t)W * (size_t)H * 3);

    /* grid (minor lines first, so major ones stay on top) */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < f.ax.n; i++) {
            if (f.ax.major[i] != pass) continue;
            int x = tick_px(&f.ax, i, f.x0, f.x1);
            fill_rect(&cv, x, f.y0, x, f.y1, pass ? GRID_MAJOR : GRID_MINOR);
        }
        for (size_t i = 0; i < f.ay.n; i++) {
            if (f.ay.major[i] != pass) continue;
            int y = tick_px(&f.ay, i, f.y1, f.y0);
            fill_rect(&cv, f.x0, y, f.x1, y, pass ? GRID_MAJOR : GRID_MINOR);
        }
    }

    /* series */
    int mw = f.x1 - f.x0 + 1, mh = f.y1 - f.y0 + 1;
    mask mk = {df_malloc((size_t)mw * (size_t)mh), f.x0 + 1, f.y0 + 1, f.x1 - 1, f.y1 - 1, mw - 2};
    unsigned char *used = df_calloc((size_t)mw * (size_t)mh, 1);
    for (size_t k = 0; k < ns; k++) draw_series(&cv, &f, &s[k], lw[k], &mk, used);
    df_free(mk.m);

    /* frame, ticks and their labels */
    stroke_rect(&cv, f.x0, f.y0, f.x1, f.y1, FRAME);
    for (size_t i = 0; i < f.ax.n; i++) {
        int x = tick_px(&f.ax, i, f.x0, f.x1), len = f.ax.major[i] ? tick : tick / 2;
        if (x < 0) continue;
        fill_rect(&cv, x, f.y1 + 1, x + (scale > 1), f.y1 + len, FRAME);
        if (!f.ax.labelled[i]) continue;
        int w = text_width(xlab[i], scale);
        draw_text(&cv, x - w / 2, f.y1 + tick + gap, xlab[i], scale, INK, 0);
    }
    for (size_t i = 0; i < f.ay.n; i++) {
        int y = tick_px(&f.ay, i, f.y1, f.y0), len = f.ay.major[i] ? tick : tick / 2;
        if (y < 0) continue;
        fill_rect(&cv, f.x0 - len, y - (scale > 1), f.x0 - 1, y, FRAME);
        if (!f.ay.labelled[i]) continue;
        int w = text_width(ylab[i], scale);
        draw_text(&cv, f.x0 - tick - gap - w, y - text_h / 2, ylab[i], scale, INK, 0);
    }

    /* legend, titles */
    draw_legend(&cv, &f, s, ns, lw, used, scale);
    df_free(used);
    if (has_title) {
        int w = text_width(title, scale);
        int x = (f.x0 + f.x1) / 2 - w / 2;
        if (x + w > W - pad) x = W - pad - w;
        if (x < pad) x = pad;
        draw_text(&cv, x, pad, title, scale, INK, 0);
        draw_text(&cv, x + 1, pad, title, scale, INK, 0); /* bold */
    }
    if (has_xl) {
        int w = text_width(xlabel, scale);
        draw_text(&cv, (f.x0 + f.x1) / 2 - w / 2, H - pad - line_h, xlabel, scale, INK, 0);
    }
    if (has_yl) {
        int w = text_width(ylabel, scale);
        draw_text(&cv, pad, (f.y0 + f.y1) / 2 + w / 2, ylabel, scale, INK, 1);
    }

    int rc = df_png_write(path, cv.px, (size_t)W, (size_t)H, 3);
    df_free(cv.px);
    return rc;
}

int df_plot_png(const char *path, const df_series *series, size_t nseries, const char *title, const char *xlabel,
                const char *ylabel, int log_y, int width, int height) {
    if (!path) return df_error("plot: no output path");
    if (width < DF_PLOT_MIN_SIDE || width > DF_PLOT_MAX_SIDE || height < DF_PLOT_MIN_SIDE ||
        height > DF_PLOT_MAX_SIDE)
        return df_error("plot %s: size %d x %d is out of range (each side %d..%d pixels)", path, width, height,
                        DF_PLOT_MIN_SIDE, DF_PLOT_MAX_SIDE);
    if (nseries > 0 && !series) return df_error("plot %s: %zu series but no series array", path, nseries);
    for (size_t k = 0; k < nseries; k++)
        if (series[k].n > 0 && (!series[k].x || !series[k].y))
            return df_error("plot %s: series %zu (%s) has %zu points but a NULL x or y array", path, k,
                            series[k].label ? series[k].label : "unnamed", series[k].n);
    double *lw = df_malloc((nseries + 1) * sizeof(double));
    for (size_t k = 0; k < nseries; k++) lw[k] = width >= 800 && height >= 400 ? 2.5 : 1.8;
    int rc = plot(path, series, nseries, lw, title, xlabel, ylabel, log_y, width, height);
    df_free(lw);
    return rc;
}

/* ---- metrics.csv ---- */

/* The index of column `name` in the comma-separated header line [line, end), or -1. */
static int column_of(const char *line, const char *end, const char *name) {
    size_t n = strlen(name);
    int col = 0;
    for (const char *f = line, *q = line;; q++) {
        if (q < end && *q != ',') continue;
        const char *a = f, *b = q; /* the field, trimmed */
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if ((size_t)(b - a) == n && memcmp(a, name, n) == 0) return col;
        if (q == end) return -1;
        col++, f = q + 1;
    }
}

/* Parses field `col` of the row [line, end) as a number ("nan" and "inf" are numbers); 0 or -1. */
static int field(const char *line, const char *end, int col, double *out) {
    for (int c = 0; c < col; c++) {
        const char *comma = memchr(line, ',', (size_t)(end - line));
        if (!comma) return -1;
        line = comma + 1;
    }
    char *stop;
    *out = strtod(line, &stop);
    if (stop == line) return -1;
    while (stop < end && (*stop == ' ' || *stop == '\t' || *stop == '\r')) stop++;
    return stop == end || *stop == ',' ? 0 : -1;
}

/* out = y smoothed by a bias-corrected exponential moving average with time constant tau rows, run forwards
 * and then backwards over the result (zero phase: a causal EMA would trail a falling loss by ~tau rows and
 * draw the early curve above the data). Non-finite values are skipped (and bridged); if all are, out is NAN. */
static void smooth_ema(double *out, const double *y, size_t n, double tau) {
    double alpha = 1 - exp(-1 / tau), m = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(y[i])) m = (1 - alpha) * m + alpha * y[i], w = (1 - alpha) * w + alpha;
        out[i] = w > 0 ? m / w : NAN;
    }
    m = w = 0;
    for (size_t i = n; i-- > 0;) {
        if (isfinite(out[i])) m = (1 - alpha) * m + alpha * out[i], w = (1 - alpha) * w + alpha;
        out[i] = w > 0 ? m / w : NAN;
    }
}

int df_plot_metrics_csv(const char *csv_path, const char *png_path, const char *title) {
    if (!csv_path || !png_path) return df_error("plot metrics: NULL path");
    unsigned char *data;
    size_t size;
    if (df_read_file(csv_path, &data, &size)) return df_error_wrap("plot metrics");
    const char *p = (const char *)data, *end = p + size;
    const char *nl = memchr(p, '\n', size);
    const char *hend = nl ? nl : end;
    int cstep = column_of(p, hend, "step"), closs = column_of(p, hend, "loss");
    if (cstep < 0 || closs < 0) {
        df_free(data);
        return df_error("%s: not a metrics file: the first line must name the columns step and loss "
                        "(like \"step,loss,lr,grad_norm,images_per_s\")", csv_path);
    }
    size_t cap = 1024, n = 0;
    double *x = df_malloc(cap * sizeof(double)), *y = df_malloc(cap * sizeof(double));
    int lineno = 1, rc = 0;
    for (p = nl ? nl + 1 : end; p < end; p = nl + 1) {
        lineno++;
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break; /* a row still being written */
        const char *e = nl;
        if (e > p && e[-1] == '\r') e--;
        const char *q = p;
        while (q < e && isspace((unsigned char)*q)) q++;
        if (q == e) continue; /* a blank line */
        double sv, lv;
        if (field(p, e, cstep, &sv) || field(p, e, closs, &lv)) {
            rc = df_error("%s line %d: expected numbers in the step and loss columns, found \"%.*s\"", csv_path,
                          lineno, (int)(e - p > 60 ? 60 : e - p), p);
            break;
        }
        if (n == cap) {
            double *x2 = df_malloc(2 * cap * sizeof(double)), *y2 = df_malloc(2 * cap * sizeof(double));
            memcpy(x2, x, n * sizeof(double)), memcpy(y2, y, n * sizeof(double));
            df_free(x), df_free(y);
            x = x2, y = y2, cap *= 2;
        }
        x[n] = sv, y[n] = lv, n++;
    }
    df_free(data);
    if (rc == 0 && n == 0)
        rc = df_error("%s: no rows to plot (only a header; has training logged a step yet?)", csv_path);
    if (rc == 0) {
        double *ema = df_malloc(n * sizeof(double));
        smooth_ema(ema, y, n, n / 50.0 < 1 ? 1 : n / 50.0);
        df_series s[2] = {{x, y, n, "loss", DF_PLOT_RAW_RGB}, {x, ema, n, "smoothed (EMA)", DF_PLOT_SMOOTH_RGB}};
        double lw[2] = {1.2, 3.0};
        rc = plot(png_path, s, 2, lw, title, "step", "loss (MSE)", 1, 1000, 600);
        df_free(ema);
    }
    df_free(x);
    df_free(y);
    return rc;
}

/* ---- drawing primitives for other figures (scatter.c) ---- */

int df_plot_text_width(const char *s, int scale) { return text_width(s, scale); }

void df_plot_text(unsigned char *px, int w, int h, int x, int y, const char *s, int scale, const unsigned char rgb[3]) {
    canvas cv = {px, w, h};
    draw_text(&cv, x, y, s, scale, rgb, 0);
}

void df_plot_fill_rect(unsigned char *px, int w, int h, int x0, int y0, int x1, int y1, const unsigned char rgb[3]) {
    canvas cv = {px, w, h};
    fill_rect(&cv, x0, y0, x1, y1, rgb);
}
