/* scatter.h: scatter plots of 2-D point sets as PNG files: one figure, a row of square panels sharing one
 * fixed axis range (so panels compare at a glance), each with a title, a light grid at "nice" ticks and
 * numeric tick labels; drawn with plot.c's primitives and font, written atomically with df_png_write.
 *
 * Points are small anti-aliased translucent discs, so dense regions read darker. Functions that can fail
 * return 0 on success and -1 after df_error (read df_errmsg()).
 */
#ifndef DF_IO_SCATTER_H
#define DF_IO_SCATTER_H

#include <stddef.h>

/* The colour of points without their own (r, g, b). */
#define DF_SCATTER_RGB {20, 70, 150}
/* Panel sides df_scatter_png accepts, in pixels; and the most panels in one figure. */
#define DF_SCATTER_MIN_SIDE 64
#define DF_SCATTER_MAX_SIDE 1000
#define DF_SCATTER_MAX_PANELS 32

/* One panel: n points as interleaved (x, y) floats. rgb (may be NULL: all DF_SCATTER_RGB) gives each point
 * its colour, 3 bytes a point. title (may be NULL) is drawn above the panel. The figure only reads them. */
typedef struct {
    const float *xy;
    size_t n;
    const unsigned char *rgb;
    const char *title;
} df_scatter_panel;

/* Draws npanels panels left to right, each a square plot area of side x side pixels showing [-lim, lim] on
 * both axes, and writes the figure to path as an RGB PNG, atomically. title (may be NULL) is drawn above the
 * row. Points outside the range, or not finite, are left out. Text is drawn at 2x for side >= 180.
 * Errors: a NULL path, npanels not in 1..DF_SCATTER_MAX_PANELS, side out of range, lim not positive and
 * finite, a panel with n > 0 and no points, or a failed write. */
int df_scatter_png(const char *path, const df_scatter_panel *panels, size_t npanels, double lim, int side,
                   const char *title);

/* rgb (3 n bytes) = a colour for each point from its direction around the origin (a hue wheel: east red,
 * then yellow, green, blue, magenta going anticlockwise), darker near the origin. Colouring points by where
 * they end up (or start) lets a figure show which noise went where. */
void df_scatter_hue(unsigned char *rgb, const float *xy, size_t n);

#endif
