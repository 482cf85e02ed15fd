/* sampling.c: shared pieces of sample / encode / decode / interpolate. */
#include "cli/sampling.h"

#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "io/run.h"

int cli_load_model(cli_model *m, const char *folder, const char *cmd) {
    memset(m, 0, sizeof *m);
    m->unet = df_unet_load_folder(folder);
    if (!m->unet) {
        fprintf(stderr, "diffuse %s: %s\n", cmd, df_errmsg());
        return -1;
    }
    if (df_run_load_schedule(folder, &m->sched, 1)) {
        fprintf(stderr, "diffuse %s: %s\n", cmd, df_errmsg());
        df_unet_destroy(m->unet);
        return -1;
    }
    const df_unet_config *c = df_unet_cfg(m->unet);
    m->C = (size_t)c->in_channels, m->H = m->W = (size_t)c->sample_size;
    m->D = m->C * m->H * m->W;
    return 0;
}

void cli_free_model(cli_model *m) {
    df_unet_destroy(m->unet);
    df_schedule_free(&m->sched);
}

void cli_unet_fn(void *ctx, float *out, const float *x, const float *t, size_t B) {
    df_unet_forward((df_unet *)ctx, out, x, t, B);
}

void cli_progress_start(cli_steps_progress *p, const char *label, uint64_t total_evals, double images_per_eval) {
    df_progress_init(&p->bar, label, total_evals, 0, "img");
    p->done = 0;
    p->images_per_eval = images_per_eval;
}

void cli_progress_step(void *ctx, int i, int S) {
    cli_steps_progress *p = ctx;
    (void)i, (void)S;
    p->done++;
    char status[48];
    snprintf(status, sizeof status, "step %d/%d", i, S);
    df_progress_update(&p->bar, p->done, (double)p->done * p->images_per_eval, status);
}

void cli_progress_end(cli_steps_progress *p) {
    df_progress_end(&p->bar, p->done, (double)p->done * p->images_per_eval, "done");
}

int cli_clip(const char *v, int sched_default, int *out) {
    if (!strcmp(v, "auto")) *out = sched_default;
    else if (!strcmp(v, "true") || !strcmp(v, "1")) *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0")) *out = 0;
    else return df_error("--clip-sample must be auto, true or false, got '%s'", v);
    return 0;
}
