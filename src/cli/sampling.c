/* sampling.c: shared pieces of sample / encode / decode / interpolate. */
#include "cli/sampling.h"

#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "eval/fid_features.h"
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
    df_unet_freeze(m->unet, 1); /* the sampling commands never change the weights */
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

int cli_fid_prepare(cli_fid *f, const char *ref, const char *net_dir, size_t C, size_t H, size_t W, const char *cmd) {
    memset(f, 0, sizeof *f);
    f->C = C, f->H = H, f->W = W;
    if (net_dir) snprintf(f->dir, sizeof f->dir, "%s", net_dir);
    else if (df_fid_default_features(f->dir, sizeof f->dir)) return fprintf(stderr, "diffuse %s: %s\n", cmd, df_errmsg()), 1;
    df_classifier *net = df_classifier_load(f->dir);
    if (!net) return fprintf(stderr, "diffuse %s: %s\n", cmd, df_errmsg()), 1;
    f->net = (struct df_classifier_s *)net;
    const df_clf_config *c = &net->cfg;
    if ((int)C != c->in_channels || (int)H != c->resolution || (int)W != c->resolution) {
        fprintf(stderr, "diffuse %s: --fid: the model makes %zux%zux%zu images; the FID feature network in %s takes "
                "%dx%dx%d\n", cmd, H, W, C, f->dir, c->resolution, c->resolution, c->in_channels);
        cli_fid_free(f);
        return 1;
    }
    f->ref = df_calloc(1, sizeof(df_fid_stats));
    if (df_fid_stats_source(net, f->dir, ref, NULL, f->ref, f->what, sizeof f->what)) {
        fprintf(stderr, "diffuse %s: --fid %s: %s\n", cmd, ref, df_errmsg());
        cli_fid_free(f);
        return 1;
    }
    return 0;
}

int cli_fid_report(cli_fid *f, const float *x, size_t n, const char *cmd) {
    df_classifier *net = (df_classifier *)f->net;
    size_t per = f->C * f->H * f->W;
    float *q = df_malloc(n * per * sizeof(float));
    for (size_t i = 0; i < n * per; i++) { /* what an 8-bit file holds: round((x + 1) * 127.5), clamped */
        float v = (x[i] + 1.0f) * 127.5f;
        v = v < 0 ? 0 : v > 255 ? 255 : v;
        q[i] = (float)(int)(v + 0.5f) / 127.5f - 1.0f;
    }
    df_fid_stats a = {0};
    double fid = 0;
    int rc = df_fid_stats_images(net, q, n, f->C, f->H, f->W, "fid features", &a);
    if (rc == 0) rc = df_fid_distance(&a, f->ref, &fid);
    if (rc) fprintf(stderr, "diffuse %s: FID: %s\n", cmd, df_errmsg());
    else printf("FID %.6g: %zu samples against %s; features %s (%d)\n", fid, n, f->what, f->dir, net->cfg.hidden);
    df_fid_stats_free(&a);
    df_free(q);
    return rc ? 1 : 0;
}

void cli_fid_free(cli_fid *f) {
    df_classifier_free((df_classifier *)f->net);
    if (f->ref) df_fid_stats_free(f->ref);
    df_free(f->ref);
    memset(f, 0, sizeof *f);
}
