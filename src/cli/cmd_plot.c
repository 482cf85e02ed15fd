/* cmd_plot.c: `diffuse plot RUN`: draws RUN/metrics.csv as a loss curve (training does this at every
 * checkpoint; this redraws it on demand, e.g. while a run is going). */
#include <stdio.h>

#include "base/base.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "io/plot.h"

int cmd_plot(int argc, char **argv) {
    const char *out = NULL, *title = "training loss";
    const df_flag flags[] = {
        {"out", FL_STRING, NULL, "the PNG to write (default: RUN/loss.png)", &out},
        {"title", FL_STRING, "training loss", "the chart's title", &title},
    };
    const char *pos[1];
    int npos, rc = df_flags_parse(flags, 2, argc, argv, "usage: diffuse plot RUN [--out loss.png]\n\n"
                                                        "Draws RUN/metrics.csv (loss against step, log scale, raw and smoothed).",
                                  pos, 1, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    if (npos != 1) {
        fprintf(stderr, "diffuse plot: give the run folder (diffuse plot RUN)\n");
        return 1;
    }
    char csv[4096], png[4096];
    snprintf(csv, sizeof csv, "%s/metrics.csv", pos[0]);
    snprintf(png, sizeof png, "%s/loss.png", pos[0]);
    if (df_plot_metrics_csv(csv, out ? out : png, title)) {
        fprintf(stderr, "diffuse plot: %s\n", df_errmsg());
        return 1;
    }
    printf("%s\n", out ? out : png);
    return 0;
}
