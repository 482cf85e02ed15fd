/* schedule.c: beta schedules (diffusers' definitions), scheduler_config.json, and the training objective. */
#include "diffusion/schedule.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/base.h"

void df_schedule_defaults(df_schedule *s) {
    memset(s, 0, sizeof *s);
    s->T = 1000;
    snprintf(s->beta_schedule, sizeof s->beta_schedule, "linear");
    s->beta_start = 1e-4, s->beta_end = 0.02;
    s->prediction = DF_PRED_EPSILON;
    s->clip_sample = 1, s->clip_sample_range = 1.0;
    s->dynamic_thresholding_ratio = 0.995, s->sample_max_value = 1.0;
    snprintf(s->timestep_spacing, sizeof s->timestep_spacing, "leading");
    s->set_alpha_to_one = 1;
}

/* alpha_bar(t) of the cosine schedule (Nichol & Dhariwal), s = 0.008. */
static double cosine_abar(double t) { return pow(cos((t + 0.008) / 1.008 * M_PI / 2), 2); }

int df_schedule_init(df_schedule *s) {
    int T = s->T;
    if (T < 1 || T > 100000) return df_error("num_train_timesteps must be in 1..100000, found %d", T);
    if (!s->betas) { /* not given as trained_betas */
        if (!(s->beta_start > 0 && s->beta_end >= s->beta_start && s->beta_end < 1))
            return df_error("beta range must satisfy 0 < beta_start <= beta_end < 1, found %g..%g", s->beta_start,
                            s->beta_end);
        double *b = df_malloc((size_t)T * sizeof(double));
        const char *k = s->beta_schedule;
        for (int i = 0; i < T; i++) {
            double f = T > 1 ? (double)i / (T - 1) : 0;
            if (!strcmp(k, "linear")) { /* torch.linspace in float32, as diffusers */
                b[i] = (float)(s->beta_start + f * (s->beta_end - s->beta_start));
            } else if (!strcmp(k, "scaled_linear")) {
                double r = sqrt(s->beta_start) + f * (sqrt(s->beta_end) - sqrt(s->beta_start));
                b[i] = (float)((float)r * (float)r);
            } else if (!strcmp(k, "quad")) { /* the DDIM code: float64 linspace of square roots, squared */
                double r = sqrt(s->beta_start) + f * (sqrt(s->beta_end) - sqrt(s->beta_start));
                b[i] = r * r;
            } else if (!strcmp(k, "squaredcos_cap_v2")) {
                double v = 1 - cosine_abar((double)(i + 1) / T) / cosine_abar((double)i / T);
                b[i] = (float)(v < 0.999 ? v : 0.999);
            } else if (!strcmp(k, "sigmoid")) {
                double x = -6 + 12 * f;
                b[i] = (float)(1 / (1 + exp(-x)) * (s->beta_end - s->beta_start) + s->beta_start);
            } else {
                df_free(b);
                return df_error("unknown beta schedule '%s' (linear, scaled_linear, squaredcos_cap_v2, sigmoid, quad)",
                                k);
            }
        }
        s->betas = b;
    }
    df_free(s->abar);
    s->abar = df_malloc((size_t)T * sizeof(double));
    /* as torch: alphas = 1 - betas in float32, cumprod accumulated in double, each product stored as float32 */
    double p = 1;
    for (int i = 0; i < T; i++) {
        if (!(s->betas[i] > 0 && s->betas[i] < 1))
            return df_error("beta[%d] = %g is outside (0, 1)", i, s->betas[i]);
        p *= (double)(1.0f - (float)s->betas[i]);
        s->abar[i] = (double)(float)p;
    }
    return 0;
}

void df_schedule_free(df_schedule *s) {
    df_free(s->betas);
    df_free(s->abar);
    s->betas = s->abar = NULL;
}

static const char *const pred_names[] = {"epsilon", "sample", "v_prediction"};

const char *df_prediction_name(df_prediction p) { return pred_names[p]; }

int df_prediction_parse(df_prediction *p, const char *name) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, pred_names[i])) return *p = (df_prediction)i, 0;
    return df_error("unknown prediction type '%s' (epsilon, sample, v_prediction)", name);
}

/* ---- scheduler_config.json ---- */

int df_schedule_parse(df_schedule *s, const char *json, const char *source) {
    df_schedule_defaults(s);
    cJSON *o = cJSON_Parse(json);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return df_error("%s: not a JSON object", source);
    }
    int rc = 0;
    const cJSON *f;
#define NUM(key, dst)                                                                                        \
    if ((f = cJSON_GetObjectItemCaseSensitive(o, key)) && !cJSON_IsNull(f)) {                                \
        if (!cJSON_IsNumber(f)) rc = df_error("%s: '%s' must be a number", source, key);                     \
        else dst = f->valuedouble;                                                                           \
    }
#define BOOL(key, dst)                                                                                       \
    if ((f = cJSON_GetObjectItemCaseSensitive(o, key)) && !cJSON_IsNull(f)) {                                \
        if (!cJSON_IsBool(f)) rc = df_error("%s: '%s' must be true or false", source, key);                  \
        else dst = cJSON_IsTrue(f);                                                                          \
    }
#define STR(key, dst)                                                                                        \
    if ((f = cJSON_GetObjectItemCaseSensitive(o, key)) && !cJSON_IsNull(f)) {                                \
        if (!cJSON_IsString(f) || strlen(f->valuestring) >= sizeof dst)                                     \
            rc = df_error("%s: '%s' must be a short string", source, key);                                    \
        else snprintf(dst, sizeof dst, "%s", f->valuestring);                                                \
    }
    double T = s->T, offset = 0;
    char pred[32] = "epsilon", var[32] = "fixed_small";
    NUM("num_train_timesteps", T);
    NUM("beta_start", s->beta_start);
    NUM("beta_end", s->beta_end);
    STR("beta_schedule", s->beta_schedule);
    STR("prediction_type", pred);
    STR("variance_type", var);
    BOOL("clip_sample", s->clip_sample);
    NUM("clip_sample_range", s->clip_sample_range);
    BOOL("thresholding", s->thresholding);
    NUM("dynamic_thresholding_ratio", s->dynamic_thresholding_ratio);
    NUM("sample_max_value", s->sample_max_value);
    NUM("steps_offset", offset);
    STR("timestep_spacing", s->timestep_spacing);
    BOOL("set_alpha_to_one", s->set_alpha_to_one);
    if ((f = cJSON_GetObjectItemCaseSensitive(o, "rescale_betas_zero_snr")) && cJSON_IsTrue(f))
        rc = df_error("%s: rescale_betas_zero_snr = true is not supported", source);
    s->T = (int)T;
    s->steps_offset = (int)offset;
    if (rc == 0 && df_prediction_parse(&s->prediction, pred)) rc = df_error_wrap("%s", source);
    if (rc == 0) {
        if (!strcmp(var, "fixed_small")) s->variance_fixed_large = 0;
        else if (!strcmp(var, "fixed_large")) s->variance_fixed_large = 1;
        else rc = df_error("%s: variance_type '%s' is not supported (fixed_small, fixed_large)", source, var);
    }
    if (rc == 0 && (f = cJSON_GetObjectItemCaseSensitive(o, "trained_betas")) && cJSON_IsArray(f)) {
        if (cJSON_GetArraySize(f) != s->T) {
            rc = df_error("%s: trained_betas has %d entries for %d timesteps", source, cJSON_GetArraySize(f), s->T);
        } else {
            s->betas = df_malloc((size_t)s->T * sizeof(double));
            int i = 0;
            for (const cJSON *e = f->child; e; e = e->next) s->betas[i++] = cJSON_IsNumber(e) ? e->valuedouble : -1;
        }
    }
#undef NUM
#undef BOOL
#undef STR
    cJSON_Delete(o);
    if (rc == 0 && df_schedule_init(s)) rc = df_error_wrap("%s", source);
    return rc;
}

char *df_schedule_json(const df_schedule *s) {
    cJSON *o = cJSON_CreateObject();
    int quad = !strcmp(s->beta_schedule, "quad"); /* diffusers has no "quad": write its betas out */
    cJSON_AddStringToObject(o, "_class_name", "DDPMScheduler");
    cJSON_AddStringToObject(o, "_diffusers_version", "0.25.0");
    cJSON_AddNumberToObject(o, "beta_end", s->beta_end);
    cJSON_AddStringToObject(o, "beta_schedule", quad ? "scaled_linear" : s->beta_schedule);
    cJSON_AddNumberToObject(o, "beta_start", s->beta_start);
    cJSON_AddBoolToObject(o, "clip_sample", s->clip_sample);
    cJSON_AddNumberToObject(o, "clip_sample_range", s->clip_sample_range);
    cJSON_AddNumberToObject(o, "dynamic_thresholding_ratio", s->dynamic_thresholding_ratio);
    cJSON_AddNumberToObject(o, "num_train_timesteps", s->T);
    cJSON_AddStringToObject(o, "prediction_type", df_prediction_name(s->prediction));
    cJSON_AddBoolToObject(o, "rescale_betas_zero_snr", 0);
    cJSON_AddNumberToObject(o, "sample_max_value", s->sample_max_value);
    cJSON_AddNumberToObject(o, "steps_offset", s->steps_offset);
    cJSON_AddBoolToObject(o, "thresholding", s->thresholding);
    cJSON_AddStringToObject(o, "timestep_spacing", s->timestep_spacing);
    if (quad && s->betas) cJSON_AddItemToObject(o, "trained_betas", cJSON_CreateDoubleArray(s->betas, s->T));
    else cJSON_AddNullToObject(o, "trained_betas");
    cJSON_AddStringToObject(o, "variance_type", s->variance_fixed_large ? "fixed_large" : "fixed_small");
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    return text;
}

/* ---- the training objective ---- */

void df_q_sample(float *xt, const float *x0, const float *eps, const int *t, const df_schedule *s, size_t B,
                 size_t D) {
    for (size_t b = 0; b < B; b++) {
        float ca = (float)sqrt(s->abar[t[b]]), cb = (float)sqrt(1 - s->abar[t[b]]);
        for (size_t i = 0; i < D; i++) xt[b * D + i] = ca * x0[b * D + i] + cb * eps[b * D + i];
    }
}

void df_target(float *target, const float *x0, const float *eps, const int *t, const df_schedule *s, size_t B,
               size_t D) {
    for (size_t b = 0; b < B; b++) {
        float ca = (float)sqrt(s->abar[t[b]]), cb = (float)sqrt(1 - s->abar[t[b]]);
        for (size_t i = 0; i < D; i++) {
            size_t k = b * D + i;
            target[k] = s->prediction == DF_PRED_EPSILON ? eps[k]
                        : s->prediction == DF_PRED_SAMPLE ? x0[k]
                                                          : ca * eps[k] - cb * x0[k];
        }
    }
}
