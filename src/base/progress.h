/* progress.h: a progress bar for long work. On a terminal: one line redrawn in place (done/total, percent,
 * a caller-supplied status such as the smoothed loss, rate, elapsed and ETA). Otherwise (a log file, CI):
 * a plain line every `every_s` seconds and at the end. */
#ifndef DF_PROGRESS_H
#define DF_PROGRESS_H

#include <stdint.h>

typedef struct {
    char label[32], unit[16];
    uint64_t total, first; /* first: where this run started (resume) */
    double t0, last;
    double every_s;
    int tty, drawn;
} df_progress;

/* units is what rate counts ("img" gives img/s); per_item converts done items to units (e.g. batch size). */
void df_progress_init(df_progress *p, const char *label, uint64_t total, uint64_t first, const char *unit);
/* Redraws if due; `units_done` is the count of units since the start of this run (for the rate). */
void df_progress_update(df_progress *p, uint64_t done, double units_done, const char *status);
/* Final line, always printed. */
void df_progress_end(df_progress *p, uint64_t done, double units_done, const char *status);
/* "1h02m", "3m05s", "12s" */
const char *df_fmt_duration(char *buf, int cap, double s);

#endif
