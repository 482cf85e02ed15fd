/* progress.c: progress bar on stderr. */
#include "base/progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"

const char *df_fmt_duration(char *buf, int cap, double s) {
    if (s < 0 || s != s) s = 0;
    long t = s < 3.6e8 ? (long)(s + 0.5) : 360000000L; /* at most 100,000 hours: bounds the digits (-O3 checks) */
    if (t >= 3600) snprintf(buf, (size_t)cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, (size_t)cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, (size_t)cap, "%lds", t);
    return buf;
}

void df_progress_init(df_progress *p, const char *label, uint64_t total, uint64_t first, const char *unit) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total, p->first = first;
    p->t0 = p->last = df_time();
    p->every_s = 30;
    p->tty = isatty(2);
}

static void draw(df_progress *p, uint64_t done, double units, const char *status, int final) {
    double el = df_time() - p->t0, rate = el > 0 ? units / el : 0;
    double frac = p->total ? (double)done / (double)p->total : 1;
    double eta = done > p->first ? el * (double)(p->total - done) / (double)(done - p->first) : 0;
    char e1[16], e2[16];
    df_fmt_duration(e1, sizeof e1, el);
    df_fmt_duration(e2, sizeof e2, eta);
    if (p->tty) {
        char bar[25];
        int fill = (int)(frac * 24 + 0.5);
        for (int i = 0; i < 24; i++) bar[i] = i < fill ? '#' : '.';
        bar[24] = 0;
        fprintf(stderr, "\r\033[K%s [%s] %llu/%llu %3.0f%% | %s | %.1f %s/s | %s < %s", p->label, bar,
                (unsigned long long)done, (unsigned long long)p->total, 100 * frac, status ? status : "", rate,
                p->unit, e1, e2);
        if (final) fprintf(stderr, "\n");
    } else {
        fprintf(stderr, "%s %llu/%llu (%.0f%%) %s | %.1f %s/s | elapsed %s, eta %s\n", p->label,
                (unsigned long long)done, (unsigned long long)p->total, 100 * frac, status ? status : "", rate,
                p->unit, e1, e2);
    }
    fflush(stderr);
    p->drawn = 1;
}

void df_progress_update(df_progress *p, uint64_t done, double units, const char *status) {
    double now = df_time();
    if (now - p->last < (p->tty ? 0.2 : p->every_s)) return;
    p->last = now;
    draw(p, done, units, status, 0);
}

void df_progress_end(df_progress *p, uint64_t done, double units, const char *status) {
    draw(p, done, units, status, 1);
}
