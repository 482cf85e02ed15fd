/* cmd_train.c: `diffuse train`: flags -> df_train_opts -> df_train. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/base.h"
#include "base/progress.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "train/train.h"

static const char usage[] =
    "usage: diffuse train --out RUN [--data fashion-mnist] [--preset fmnist-s | --config unet.json] [flags]\n\n"
    "Trains a DDPM U-Net (Ho et al. 2020, Algorithm 1) and writes RUN as a diffusers DDPMPipeline folder\n"
    "(EMA weights in RUN/unet, the schedule in RUN/scheduler), with checkpoints and trainer state in RUN/trainer,\n"
    "RUN/metrics.csv and sample grids in RUN/samples. --resume continues a run exactly.\n"
    "--data: fashion-mnist, fashion-mnist-test, mnist, an IDX file, an image folder (PNG/JPEG), a CIFAR-10\n"
    "binary folder or .bin, or a .npy array (N,H,W[,C]).";

/* Settings that may change when a run is resumed. */
static const char *const volatile_keys[] = {"steps",      "epochs",   "save-every", "sample-every", "n-samples",
                                            "log-every",  "threads",  "resume",     "out",          "data-dir",
                                            NULL};

static char *args_json(const df_flag *flags, int n) {
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < n; i++) {
        char v[64];
        const df_flag *f = &flags[i];
        if (f->type == FL_INT || f->type == FL_BOOL) snprintf(v, sizeof v, "%d", *(int *)f->ptr);
        else if (f->type == FL_FLOAT) snprintf(v, sizeof v, "%.17g", *(double *)f->ptr);
        else snprintf(v, sizeof v, "%s", *(const char **)f->ptr ? *(const char **)f->ptr : "");
        cJSON_AddStringToObject(o, f->name, v);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Whether arg sets flag `name` (--name, --name=value or --no-name). */
static int names_flag(const char *arg, const char *name) {
    if (strncmp(arg, "--", 2)) return 0;
    arg += 2;
    if (!strncmp(arg, "no-", 3) && !strcmp(arg + 3, name)) return 1;
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == 0 || arg[n] == '=');
}

/* --resume: the settings saved in RUN/trainer/state.safetensors, as arguments for every flag that the command
 * line leaves out (volatile ones aside), put before the user's own; so `--out RUN --resume` alone continues a
 * run. The result has *argc2 entries; NULL, and nothing to add, when the run has no
 * readable state: df_train then says what is missing. The strings live as long as the process. */
static char **saved_args(const char *out, int argc, char **argv, const df_flag *flags, int nflags, int *argc2) {
    char path[4096];
    snprintf(path, sizeof path, "%s/trainer/state.safetensors", out);
    st_file f;
    if (st_open(&f, path)) return NULL;
    cJSON *saved = cJSON_Parse(st_metadata(&f, "args") ? st_metadata(&f, "args") : "{}");
    st_close(&f);
    char **v = df_calloc((size_t)(2 * nflags + argc), sizeof *v);
    int n = 0;
    for (int i = 0; i < nflags; i++) {
        const df_flag *fl = &flags[i];
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(saved, fl->name);
        int given = 0, vol = 0;
        for (int a = 0; a < argc; a++) given |= names_flag(argv[a], fl->name);
        for (int k = 0; volatile_keys[k]; k++) vol |= !strcmp(volatile_keys[k], fl->name);
        if (given || vol || !cJSON_IsString(it) || !*it->valuestring) continue;
        char arg[80];
        if (fl->type == FL_BOOL) {
            snprintf(arg, sizeof arg, "--%s%s", strcmp(it->valuestring, "0") ? "" : "no-", fl->name);
            v[n++] = strdup(arg);
        } else {
            snprintf(arg, sizeof arg, "--%s", fl->name);
            v[n++] = strdup(arg), v[n++] = strdup(it->valuestring);
        }
    }
    cJSON_Delete(saved);
    for (int a = 0; a < argc; a++) v[n++] = strdup(argv[a]);
    *argc2 = n;
    return v;
}

int cmd_train(int argc, char **argv) {
    const char *data = "fashion-mnist", *data_dir = NULL, *out = NULL, *preset = NULL, *config = NULL;
    const char *beta_schedule = "linear", *prediction = "epsilon", *loss = "mse", *optimizer = "adamw";
    const char *precision = "fp32";
    int resolution = 0, channels = 0, flip = 1, timesteps = 1000, batch = 64, steps = 0, seed = 0, threads = 0;
    int warmup = 200, save_every = 500, sample_every = 1000, n_samples = 16, log_every = 10, resume = 0;
    double beta_start = 1e-4, beta_end = 0.02, lr = 2e-4, wd = 0, b1 = 0.9, b2 = 0.999, adam_eps = 1e-8;
    double grad_clip = 1.0, ema_decay = 0.9999, ema_power = 0.75, ema_inv_gamma = 1.0, dropout = -1, epochs = 0;
    const df_flag flags[] = {
        {"data", FL_STRING, "fashion-mnist", "the training images (see above)", &data},
        {"data-dir", FL_STRING, NULL, "folder holding the fashion-mnist / mnist IDX files", &data_dir},
        {"out", FL_STRING, NULL, "the run folder to write (required)", &out},
        {"preset", FL_STRING, NULL, "model preset: fmnist-s (default), fmnist-m, cifar10-ddpm, celeba64-ddim, tiny, "
         "simple-unet", &preset},
        {"config", FL_STRING, NULL, "a UNet2DModel (or SimpleUnet) config.json instead of a preset", &config},
        {"resolution", FL_INT, "0", "resize and centre-crop images to this size (0: the model's)", &resolution},
        {"channels", FL_INT, "0", "1 (grey) or 3 (RGB) (0: the model's)", &channels},
        {"flip", FL_BOOL, "1", "random left-right flips (--no-flip to disable)", &flip},
        {"timesteps", FL_INT, "1000", "diffusion steps T", &timesteps},
        {"beta-schedule", FL_STRING, "linear", "linear, scaled_linear, squaredcos_cap_v2, sigmoid, quad", &beta_schedule},
        {"beta-start", FL_FLOAT, "0.0001", "first beta", &beta_start},
        {"beta-end", FL_FLOAT, "0.02", "last beta", &beta_end},
        {"prediction", FL_STRING, "epsilon", "what the network predicts: epsilon, sample, v_prediction", &prediction},
        {"loss", FL_STRING, "mse", "mse or l1", &loss},
        {"optimizer", FL_STRING, "adamw", "adam (L2 weight decay) or adamw (decoupled)", &optimizer},
        {"lr", FL_FLOAT, "0.0002", "learning rate", &lr},
        {"weight-decay", FL_FLOAT, "0", "weight decay", &wd},
        {"adam-beta1", FL_FLOAT, "0.9", "Adam beta1", &b1},
        {"adam-beta2", FL_FLOAT, "0.999", "Adam beta2", &b2},
        {"adam-eps", FL_FLOAT, "1e-08", "Adam epsilon", &adam_eps},
        {"warmup", FL_INT, "200", "linear learning-rate warm-up steps", &warmup},
        {"grad-clip", FL_FLOAT, "1", "clip the global gradient norm to this (0: off)", &grad_clip},
        {"dropout", FL_FLOAT, "-1", "dropout probability (-1: the model config's)", &dropout},
        {"ema-decay", FL_FLOAT, "0.9999", "largest EMA decay", &ema_decay},
        {"ema-power", FL_FLOAT, "0.75", "EMA warm-up power (decay = 1 - (1 + step/inv_gamma)^-power)", &ema_power},
        {"ema-inv-gamma", FL_FLOAT, "1", "EMA warm-up inv_gamma", &ema_inv_gamma},
        {"batch", FL_INT, "64", "images per step", &batch},
        {"steps", FL_INT, "0", "total optimizer steps (0: use --epochs)", &steps},
        {"epochs", FL_FLOAT, "0", "total epochs over the data, if --steps is 0", &epochs},
        {"seed", FL_INT, "0", "seed of everything random (weights, data order, noise)", &seed},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
        {"precision", FL_STRING, "fp32", "fp32, or bf16: BF16 products with FP32 sums (AMX / AVX-512 BF16 where the CPU has them)", &precision},
        {"save-every", FL_INT, "500", "checkpoint every N steps (and at the end)", &save_every},
        {"sample-every", FL_INT, "1000", "sample grid from the EMA weights every N steps (0: never)", &sample_every},
        {"n-samples", FL_INT, "16", "images in each sample grid", &n_samples},
        {"log-every", FL_INT, "10", "metrics.csv row every N steps", &log_every},
        {"resume", FL_BOOL, "0", "continue the run in --out from its last checkpoint, with the settings it was started with", &resume},
    };
    int nflags = (int)(sizeof flags / sizeof flags[0]), npos;
    const char *pos[1];
    int rc = df_flags_parse(flags, nflags, argc, argv, usage, pos, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    static char **argv2; /* the string flags point into it until the process ends */
    int argc2 = 0;
    if (resume && out && (argv2 = saved_args(out, argc, argv, flags, nflags, &argc2))) {
        /* again, with the run's settings first: the user's own still win (and are checked against them) */
        rc = df_flags_parse(flags, nflags, argc2, argv2, usage, pos, 0, &npos);
        if (rc) return rc < 0 ? 1 : 0;
    }

    /* ---- checks: each names its flag ---- */
#define BAD(...) (fprintf(stderr, "diffuse train: " __VA_ARGS__), fprintf(stderr, "\n"), 1)
    if (!out) return BAD("--out RUN is required (the run folder to write)");
    if (preset && config) return BAD("give --preset or --config, not both");
    if (batch < 1) return BAD("--batch must be at least 1, got %d", batch);
    if (steps < 0 || epochs < 0 || (steps == 0 && epochs == 0)) return BAD("give a positive --steps or --epochs");
    if (!(lr > 0)) return BAD("--lr must be positive, got %g", lr);
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) return BAD("--adam-beta1/--adam-beta2 must be in [0, 1)");
    if (!(adam_eps > 0) || wd < 0) return BAD("--adam-eps must be positive and --weight-decay non-negative");
    if (grad_clip < 0) return BAD("--grad-clip must be >= 0, got %g", grad_clip);
    if (!(ema_decay >= 0 && ema_decay < 1)) return BAD("--ema-decay must be in [0, 1), got %g", ema_decay);
    if (!(ema_power > 0 && ema_inv_gamma > 0)) return BAD("--ema-power and --ema-inv-gamma must be positive");
    if (warmup < 0 || save_every < 0 || sample_every < 0 || log_every < 1 || threads < 0)
        return BAD("--warmup, --save-every, --sample-every, --threads must be >= 0 and --log-every >= 1");
    if (n_samples < 1 || n_samples > 1024) return BAD("--n-samples must be in 1..1024, got %d", n_samples);
    if (dropout != -1 && !(dropout >= 0 && dropout < 1)) return BAD("--dropout must be in [0, 1), got %g", dropout);
    if (strcmp(loss, "mse") && strcmp(loss, "l1")) return BAD("--loss must be mse or l1, got '%s'", loss);
    if (strcmp(optimizer, "adam") && strcmp(optimizer, "adamw"))
        return BAD("--optimizer must be adam or adamw, got '%s'", optimizer);
    if (df_set_precision(precision)) return BAD("--precision: %s", df_errmsg());
    if (seed < 0) return BAD("--seed must be >= 0");

    df_train_opts o = {0};
    if (config) {
        unsigned char *text;
        size_t size;
        if (df_read_file(config, &text, &size)) return BAD("%s", df_errmsg());
        int bad = df_unet_config_parse(&o.unet, (const char *)text, config);
        df_free(text);
        if (bad) return BAD("%s", df_errmsg());
    } else if (df_unet_preset(&o.unet, preset ? preset : "fmnist-s")) {
        return BAD("--preset: %s", df_errmsg());
    }
    if (dropout >= 0) o.unet.dropout = (float)dropout;
    if (resolution && resolution != o.unet.sample_size) return BAD("--resolution %d differs from the model's %d: "
                                                                   "use a config with that sample_size", resolution,
                                                                   o.unet.sample_size);
    if (channels && channels != o.unet.in_channels) return BAD("--channels %d differs from the model's %d", channels,
                                                               o.unet.in_channels);
    df_schedule_defaults(&o.sched);
    o.sched.T = timesteps;
    snprintf(o.sched.beta_schedule, sizeof o.sched.beta_schedule, "%s", beta_schedule);
    o.sched.beta_start = beta_start, o.sched.beta_end = beta_end;
    if (df_prediction_parse(&o.sched.prediction, prediction)) return BAD("--prediction: %s", df_errmsg());
    df_schedule probe = o.sched;
    if (df_schedule_init(&probe)) return BAD("--beta-schedule/--beta-start/--beta-end/--timesteps: %s", df_errmsg());
    df_schedule_free(&probe);
#undef BAD

    o.data = data, o.data_dir = data_dir;
    o.resolution = o.unet.sample_size, o.channels = o.unet.in_channels, o.flip = flip;
    o.loss_l1 = !strcmp(loss, "l1");
    o.adam = (df_adam_config){.lr = lr, .beta1 = b1, .beta2 = b2, .eps = adam_eps, .weight_decay = wd,
                              .decoupled = !strcmp(optimizer, "adamw")};
    o.warmup = warmup, o.grad_clip = grad_clip;
    o.ema_decay = ema_decay, o.ema_power = ema_power, o.ema_inv_gamma = ema_inv_gamma;
    o.batch = batch, o.steps = steps, o.epochs = epochs, o.seed = (uint64_t)seed;
    o.out = out, o.save_every = save_every, o.sample_every = sample_every, o.n_samples = n_samples;
    o.log_every = log_every, o.resume = resume;
    char *args = args_json(flags, nflags);
    o.args_json = args;
    o.volatile_keys = volatile_keys;
    df_set_threads(threads);

    df_train_result r;
    rc = df_train(&o, &r);
    free(args);
    if (rc) {
        fprintf(stderr, "diffuse train: %s\n", df_errmsg());
        return 1;
    }
    char el[16];
    printf("trained %lld steps in %s (%.1f images/s); smoothed loss %.4f\n", (long long)r.steps_done,
           df_fmt_duration(el, sizeof el, r.seconds), r.images_per_s, r.final_loss);
    printf("run folder: %s (diffusers DDPMPipeline: EMA weights in %s/unet)\n", out, out);
    if (sample_every) printf("samples: %s/samples/step_%07lld.png\n", out, (long long)r.steps_done);
    return 0;
}
