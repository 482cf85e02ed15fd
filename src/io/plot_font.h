/* plot_font.h: a small bitmap font for plot.c's labels (internal to src/io). */
#ifndef DF_PLOT_FONT_H
#define DF_PLOT_FONT_H

#define FONT_W 5
#define FONT_H 9
#define FONT_CAP 7

typedef struct {
    char c;
    const char *rows[FONT_H];
} glyph;

/* The glyph for byte c ('?' for anything outside printable ASCII). */
const glyph *glyph_of(unsigned char c);
/* Whether (row, col) of g is inked. */
int glyph_ink(const glyph *g, int row, int col);
/* The first inked column of g and its inked width (a blank glyph: 0 and 2, so a space advances by 3). */
void glyph_extent(const glyph *g, int *first, int *width);

#endif
