/* train.c: the training loop. */
#include "train/train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/base.h"
#include "base/progress.h"
#include "base/rng.h"
#include "data/dataset.h"
#include "diffusion/sampler.h"
#include "io/file.h"
#include "io/image.h"
#include "io/plot.h"
#include "io/run.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"

#define DF_PREVIEW_SEED 20201219u

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct {
    const df_train_opts *o;
    df_unet *model, *ema;
    df_adam adam;
    df_schedule sched;
    df_dataset data;
    df_loader loader;
    int64_t step;
} trainer;

/* ---- trainer state ---- */

static int save_state(trainer *tr) {
    char path[4096];
    snprintf(path, sizeof path, "%s/trainer", tr->o->out);
    if (df_mkdirs(path)) return -1;
    snprintf(path, sizeof path, "%s/trainer/state.safetensors", tr->o->out);
    int64_t n = (int64_t)df_unet_num_params(tr->model);
    int64_t counters[3] = {tr->step, (int64_t)tr->loader.epoch, (int64_t)tr->loader.pos};
    int64_t one = 3, nb = (int64_t)df_unet_num_buffers(tr->model), nc = (int64_t)df_unet_num_counters(tr->model);
    st_entry e[7] = {
        st_entry_f32("weights", df_unet_weights(tr->model), 1, &n),
        st_entry_f32("ema", df_unet_weights(tr->ema), 1, &n),
        st_entry_f32("adam.m", tr->adam.m, 1, &n),
        st_entry_f32("adam.v", tr->adam.v, 1, &n),
        {.name = "step_epoch_pos", .dtype = ST_I64, .ndim = 1, .shape = {one}, .data = counters},
        /* BatchNorm running statistics (the EMA model holds a copy of them) and num_batches_tracked */
        st_entry_f32("buffers", df_unet_buffers(tr->model), 1, &nb),
        {.name = "buffer_counters", .dtype = ST_I64, .ndim = 1, .shape = {nc}, .data = df_unet_counters(tr->model)},
    };
    const char *meta[] = {"format", "diffuse-trainer", "args", tr->o->args_json};
    return st_write(path, e, nb ? 7 : 5, meta, 2);
}

/* A saved setting for a message: a number with %g's digits, anything else as it is. */
static const char *readable(char *buf, size_t n, const char *v) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end) return v;
    snprintf(buf, n, "%g", x);
    return buf;
}

/* Compares the saved settings with the current ones; differences (other than volatile keys) are an error
 * that lists them. */
static int compare_args(const char *saved, const char *now, const char *const *volatile_keys, const char *path) {
    cJSON *a = cJSON_Parse(saved ? saved : "{}"), *b = cJSON_Parse(now);
    char diff[1500] = "";
    size_t k = 0;
    for (const cJSON *f = b ? b->child : NULL; f; f = f->next) {
        int skip = 0;
        for (int i = 0; volatile_keys && volatile_keys[i]; i++) skip |= !strcmp(volatile_keys[i], f->string);
        if (skip) continue;
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(a, f->string);
        const char *va = cJSON_IsString(g) ? g->valuestring : "(unset)", *vb = cJSON_IsString(f) ? f->valuestring : "?";
        if (strcmp(va, vb) && k < sizeof diff - 1) {
            char sa[64], sb[64]; /* numbers as a person writes them (they are saved to the last digit) */
            k += (size_t)snprintf(diff + k, sizeof diff - k, "%s--%s %s (the run has %s)", k ? ", " : "", f->string,
                                  readable(sb, sizeof sb, vb), readable(sa, sizeof sa, va));
        }
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    if (k) return df_error("%s was trained with other settings: %s. Resume with the run's settings, or train into "
                           "a new --out", path, diff);
    return 0;
}

static int load_state(trainer *tr, const char *path) {
    st_file f;
    if (st_open(&f, path)) return -1;
    int rc = compare_args(st_metadata(&f, "args"), tr->o->args_json, tr->o->volatile_keys, tr->o->out);
    int64_t n = (int64_t)df_unet_num_params(tr->model), three = 3;
    if (!rc) rc = st_read_f32(&f, "weights", df_unet_weights(tr->model), 1, &n);
    if (!rc) rc = st_read_f32(&f, "ema", df_unet_weights(tr->ema), 1, &n);
    if (!rc) rc = st_read_f32(&f, "adam.m", tr->adam.m, 1, &n);
    if (!rc) rc = st_read_f32(&f, "adam.v", tr->adam.v, 1, &n);
    int64_t nb = (int64_t)df_unet_num_buffers(tr->model), nc = (int64_t)df_unet_num_counters(tr->model);
    if (!rc && nb) {
        rc = st_read_f32(&f, "buffers", df_unet_buffers(tr->model), 1, &nb);
        const st_tensor *bc = st_find(&f, "buffer_counters");
        if (!rc && (!bc || bc->dtype != ST_I64 || bc->ndim != 1 || bc->shape[0] != nc))
            rc = df_error("%s: tensor 'buffer_counters' is missing or not I64 [%lld]", path, (long long)nc);
        if (!rc) memcpy(df_unet_counters(tr->model), st_data(&f, bc), (size_t)nc * sizeof(int64_t));
        if (!rc) df_unet_copy_buffers(tr->ema, tr->model);
    }
    const st_tensor *t = st_find(&f, "step_epoch_pos");
    if (!rc && (!t || t->dtype != ST_I64 || t->ndim != 1 || t->shape[0] != three))
        rc = df_error("%s: tensor 'step_epoch_pos' is missing or not I64 [3]", path);
    if (!rc) {
        int64_t c[3];
        memcpy(c, st_data(&f, t), sizeof c);
        if (c[0] < 0 || c[1] < 0 || c[2] < 0 || (size_t)c[2] > tr->data.n)
            rc = df_error("%s: step/epoch/position %lld/%lld/%lld are impossible", path, (long long)c[0],
                          (long long)c[1], (long long)c[2]);
        else {
            tr->step = c[0];
            tr->adam.step = (uint64_t)c[0];
            df_loader_seek(&tr->loader, (uint64_t)c[1], (uint64_t)c[2]);
        }
    }
    st_close(&f);
    return rc;
}

/* ---- checkpoints, samples, metrics ---- */

/* The EMA pipeline, the trainer state, and a fresh loss curve (RUN/loss.png) from metrics.csv. */
static int checkpoint(trainer *tr, FILE *metrics) {
    if (df_run_save_pipeline(tr->o->out, tr->ema, &tr->sched) || save_state(tr)) return -1;
    char csv[4096], png[4096], title[256];
    fflush(metrics);
    snprintf(csv, sizeof csv, "%s/metrics.csv", tr->o->out);
    snprintf(png, sizeof png, "%s/loss.png", tr->o->out);
    snprintf(title, sizeof title, "training loss, step %lld", (long long)tr->step);
    if (df_plot_metrics_csv(csv, png, title) && !tr->o->quiet) /* a picture is not worth stopping for */
        fprintf(stderr, "diffuse train: warning: no loss curve: %s\n", df_errmsg());
    return 0;
}

static void ema_model_fn(void *ctx, float *out, const float *x, const float *t, size_t B) {
    df_unet_forward((df_unet *)ctx, out, x, t, B);
}

/* A grid of n samples from the EMA weights: deterministic DDIM, 50 steps, a fixed seed. */
static int sample_grid(trainer *tr, const char *path, int n) {
    const df_unet_config *c = df_unet_cfg(tr->ema);
    size_t D = (size_t)c->in_channels * c->sample_size * c->sample_size;
    float *x = df_malloc((size_t)n * D * sizeof(float));
    int taus[64], S = df_timesteps(taus, 64, 50 < tr->sched.T ? 50 : tr->sched.T, tr->sched.T, DF_SPACING_LEADING,
                                   tr->sched.steps_offset);
    if (S < 0) {
        df_free(x);
        return df_error_wrap("sample grid");
    }
    df_initial_noise(x, (size_t)n, D, DF_PREVIEW_SEED, 0);
    df_sampler sp = {.kind = DF_SAMPLER_DDIM, .eta = 0, .clip = tr->sched.clip_sample, .taus = taus, .S = S,
                     .seed = DF_PREVIEW_SEED};
    df_unet_freeze(tr->ema, 1); /* the EMA weights stand still during the grid */
    df_sample(x, (size_t)n, D, &tr->sched, &sp, 0, ema_model_fn, tr->ema);
    df_unet_freeze(tr->ema, 0);
    int rc = df_write_grid(path, x, (size_t)n, (size_t)c->in_channels, (size_t)c->sample_size,
                           (size_t)c->sample_size, 0);
    df_free(x);
    return rc;
}

/* Keeps the rows of metrics.csv up to `step` (a resumed run rewrites what the crashed one logged after its
 * last checkpoint); creates it with a header if absent. */
static FILE *open_metrics(const char *out, int64_t step) {
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.csv", out);
    unsigned char *old = NULL;
    size_t size = 0;
    struct stat st;
    if (stat(path, &st) == 0 && df_read_file(path, &old, &size) == 0) {
        char *keep = df_malloc(size + 1);
        size_t k = 0;
        for (char *line = strtok((char *)old, "\n"); line; line = strtok(NULL, "\n")) {
            long long s;
            if (sscanf(line, "%lld,", &s) == 1 && s > step) continue;
            k += (size_t)sprintf(keep + k, "%s\n", line);
        }
        df_write_file_atomic(path, keep, k);
        df_free(keep);
        df_free(old);
        return fopen(path, "a");
    }
    FILE *f = fopen(path, "w");
    if (f) fprintf(f, "step,loss,lr,grad_norm,images_per_s\n");
    return f;
}

/* ---- one step ---- */

void df_step_work_free(df_step_work *w) {
    df_free(w->xt), df_free(w->target), df_free(w->dout), df_free(w->tf);
    memset(w, 0, sizeof *w);
}

float df_train_step(df_unet *m, df_adam *adam, const df_schedule *s, int loss_l1, double grad_clip, double lr,
                    const float *x0, const int *t, const float *eps, size_t B, double *grad_norm, df_step_work *w) {
    const df_unet_config *c = df_unet_cfg(m);
    size_t D = (size_t)c->in_channels * c->sample_size * c->sample_size, n = B * D, P = df_unet_num_params(m);
    if (w->cap < n) {
        df_step_work_free(w);
        w->xt = df_malloc(n * sizeof(float)), w->target = df_malloc(n * sizeof(float));
        w->dout = df_malloc(n * sizeof(float)), w->tf = df_malloc(B * sizeof(float));
        w->cap = n;
    }
    for (size_t b = 0; b < B; b++) w->tf[b] = (float)t[b];
    df_q_sample(w->xt, x0, eps, t, s, B, D);
    df_target(w->target, x0, eps, t, s, B, D);
    const float *pred = df_unet_forward_train(m, w->xt, w->tf, B);
    memset(w->dout, 0, n * sizeof(float));
    float loss;
    if (loss_l1) {
        loss = l1_forward(pred, w->target, n);
        l1_backward(w->dout, pred, w->target, n, 1.0f);
    } else {
        loss = mse_forward(pred, w->target, n);
        mse_backward(w->dout, pred, w->target, n, 1.0f);
    }
    df_unet_zero_grads(m);
    df_unet_backward(m, w->dout);
    *grad_norm = df_clip_grad_norm(df_unet_grads(m), P, grad_clip);
    if (!isfinite(loss) || !isfinite(*grad_norm)) return isfinite(loss) ? (float)*grad_norm : loss;
    df_adam_step(adam, df_unet_weights(m), df_unet_grads(m), lr);
    return loss;
}

/* ---- the loop ---- */

static size_t available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

int df_train(const df_train_opts *o, df_train_result *r) {
    trainer T = {.o = o}, *tr = &T;
    int rc = -1;
    FILE *metrics = NULL;
    float *x0 = NULL, *eps = NULL;
    df_step_work work = {0};
    int *t = NULL;
    char path[4096];
    memset(r, 0, sizeof *r);

    /* settings, data, model: refuse before any work */
    tr->sched = o->sched;
    tr->sched.betas = tr->sched.abar = NULL;
    if (df_schedule_init(&tr->sched)) return df_error_wrap("diffusion settings");
    if (o->batch < 1) return df_error("--batch must be at least 1, got %d", o->batch);
    if (df_dataset_load(&tr->data, o->data, o->data_dir, o->resolution, o->channels)) return -1;
    if (df_dataset_check_model(&tr->data, o->unet.in_channels, o->unet.sample_size)) goto done;
    if (o->unet.out_channels != o->unet.in_channels) {
        df_error("the model has %d input but %d output channels; diffusion needs them equal", o->unet.in_channels,
                 o->unet.out_channels);
        goto done;
    }
    if (o->unet.arch == DF_ARCH_SIMPLE_UNET) { /* batch statistics need two values per channel */
        int s = o->unet.sample_size >> (o->unet.levels - 1);
        if ((int64_t)o->batch * s * s < 2) {
            df_error("--batch %d: BatchNorm's batch statistics at the model's %dx%d bottom need a batch of at least 2",
                     o->batch, s, s);
            goto done;
        }
    }
    int64_t total = o->steps;
    if (total <= 0) total = (int64_t)ceil(o->epochs * (double)tr->data.n / o->batch);
    if (total <= 0) {
        df_error("nothing to do: give --steps or --epochs");
        goto done;
    }
    tr->model = df_unet_create(&o->unet);
    tr->ema = df_unet_create(&o->unet);
    if (!tr->model || !tr->ema) goto done;
    size_t B = (size_t)o->batch, D = (size_t)o->unet.in_channels * o->unet.sample_size * o->unet.sample_size;
    size_t P = df_unet_num_params(tr->model);

    df_unet_cost cost = df_unet_costs(&o->unet);
    double need = cost.train_bytes_per_image * B + 6.0 * P * 4 + (double)tr->data.n * D + 8.0 * B * D * 4;
    double avail = (double)available_bytes();
    if (!o->quiet)
        fprintf(stderr, "diffuse train: %s, %zu images of %dx%dx%d; model %.2fM parameters, %.3f GFLOP/image\n",
            tr->data.source, tr->data.n, o->unet.sample_size, o->unet.sample_size, o->unet.in_channels, P / 1e6,
            cost.gflops_per_image);
    if (!o->quiet)
        fprintf(stderr, "diffuse train: memory needed %.0f MB at batch %d (%.0f MB available)\n", need / 1e6, o->batch,
                avail / 1e6);
    if (avail > 0 && need > 0.9 * avail) {
        df_error("this run needs about %.0f MB but only %.0f MB are available: lower --batch (each image costs %.1f MB)",
                 need / 1e6, avail / 1e6, cost.train_bytes_per_image / 1e6);
        goto done;
    }

    df_unet_init_weights(tr->model, o->seed);
    memcpy(df_unet_weights(tr->ema), df_unet_weights(tr->model), P * sizeof(float));
    df_adam_init(&tr->adam, P, &o->adam);
    df_loader_init(&tr->loader, &tr->data, o->seed, o->flip);

    /* the run folder: new, or resumed exactly */
    snprintf(path, sizeof path, "%s/trainer/state.safetensors", o->out);
    struct stat st;
    int have_state = stat(path, &st) == 0;
    if (have_state && !o->resume) {
        df_error("%s already holds a run: pass --resume to continue it, or choose another --out", o->out);
        goto done;
    }
    if (!have_state && o->resume) {
        df_error("--resume: %s has no checkpoint (%s)", o->out, path);
        goto done;
    }
    if (df_mkdirs(o->out)) goto done;
    if (have_state) {
        if (load_state(tr, path)) goto done;
        if (!o->quiet) fprintf(stderr, "diffuse train: resumed %s at step %lld\n", o->out, (long long)tr->step);
    }
    snprintf(path, sizeof path, "%s/samples", o->out);
    if (o->sample_every > 0 && df_mkdirs(path)) goto done;
    metrics = open_metrics(o->out, tr->step);
    if (!metrics) {
        df_error("cannot write %s/metrics.csv", o->out);
        goto done;
    }

    x0 = df_malloc(B * D * sizeof(float)), eps = df_malloc(B * D * sizeof(float));
    t = df_malloc(B * sizeof(int));
    interrupted = 0;
    void (*old_int)(int) = signal(SIGINT, on_signal), (*old_term)(int) = signal(SIGTERM, on_signal);

    df_progress bar;
    df_progress_init(&bar, "train", (uint64_t)total, (uint64_t)tr->step, "img");
    double t0 = df_time(), smooth = NAN, log_loss = 0, log_gn = 0, t_log = df_time();
    int log_n = 0;
    int64_t first = tr->step;
    float loss = 0;
    rc = 0;
    while (tr->step < total) {
        int64_t k = tr->step;
        /* DDPM Algorithm 1: x0 ~ data, t ~ U{0..T-1}, eps ~ N(0, I) */
        df_loader_next(&tr->loader, x0, B);
        for (size_t b = 0; b < B; b++)
            t[b] = (int)(df_rng_u64(o->seed, df_stream(DF_STREAM_T, 0, (uint32_t)k), b) % (uint64_t)tr->sched.T);
        df_rng_normal(eps, B * D, o->seed, df_stream(DF_STREAM_EPS, 0, (uint32_t)k), 0);
        df_unet_set_dropout(tr->model, o->seed, (uint64_t)k);
        double gn, lr = df_warmup_lr(o->adam.lr, (uint64_t)k, (uint64_t)o->warmup);
        loss = df_train_step(tr->model, &tr->adam, &tr->sched, o->loss_l1, o->grad_clip, lr, x0, t, eps, B, &gn, &work);
        if (!isfinite(loss) || !isfinite(gn)) {
            df_error("the %s at step %lld is not finite (loss %g, gradient norm %g); stopped without saving, so the "
                     "last good checkpoint in %s stays. Lower --lr or --grad-clip and --resume",
                     isfinite(loss) ? "gradient" : "loss", (long long)k + 1, loss, gn, o->out);
            rc = -1;
            break;
        }
        df_ema_update(df_unet_weights(tr->ema), df_unet_weights(tr->model), P,
                      df_ema_decay((uint64_t)k + 1, o->ema_decay, o->ema_inv_gamma, o->ema_power));
        df_unet_copy_buffers(tr->ema, tr->model); /* running statistics are not averaged: the EMA samples with them */
        tr->step = k + 1;

        smooth = isnan(smooth) ? loss : 0.98 * smooth + 0.02 * loss;
        log_loss += loss, log_gn += gn, log_n++;
        double units = (double)(tr->step - first) * B;
        if (tr->step % o->log_every == 0 || tr->step == total) {
            double now = df_time();
            fprintf(metrics, "%lld,%.6f,%.6g,%.5f,%.2f\n", (long long)tr->step, log_loss / log_n, lr, log_gn / log_n,
                    log_n * B / (now - t_log));
            fflush(metrics);
            log_loss = log_gn = 0, log_n = 0, t_log = now;
        }
        if (!o->quiet) {
            char status[64];
            snprintf(status, sizeof status, "loss %.4f", smooth);
            df_progress_update(&bar, (uint64_t)tr->step, units, status);
        }
        int last = tr->step == total;
        if ((o->save_every > 0 && tr->step % o->save_every == 0) || last || interrupted) {
            if (checkpoint(tr, metrics)) {
                rc = -1;
                break;
            }
        }
        if (o->sample_every > 0 && (tr->step % o->sample_every == 0 || last)) {
            snprintf(path, sizeof path, "%s/samples/step_%07lld.png", o->out, (long long)tr->step);
            if (sample_grid(tr, path, o->n_samples)) {
                rc = -1;
                break;
            }
        }
        if (interrupted) {
            df_error("interrupted at step %lld; the run is saved in %s: continue it with --resume", (long long)tr->step,
                     o->out);
            rc = -1;
            break;
        }
    }
    signal(SIGINT, old_int);
    signal(SIGTERM, old_term);
    r->steps_done = tr->step;
    r->final_loss = smooth;
    r->seconds = df_time() - t0;
    r->images_per_s = (double)(tr->step - first) * B / r->seconds;
    if (!o->quiet) {
        char status[64];
        snprintf(status, sizeof status, "loss %.4f", smooth);
        df_progress_end(&bar, (uint64_t)tr->step, (double)(tr->step - first) * B, status);
    }

done:
    if (metrics) fclose(metrics);
    df_free(x0), df_free(eps), df_free(t);
    df_step_work_free(&work);
    if (tr->adam.m) df_adam_free(&tr->adam);
    if (tr->loader.perm) df_loader_free(&tr->loader);
    df_dataset_free(&tr->data);
    df_unet_destroy(tr->model);
    df_unet_destroy(tr->ema);
    df_schedule_free(&tr->sched);
    return rc;
}
