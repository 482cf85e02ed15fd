/* params_io.c: a parameter table's default initialisation and its safetensors load and save, shared by every
 * model (U-Net, classifier, ...). */
#include "nn/params.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "base/rng.h"
#include "io/safetensors.h"

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

void df_params_init_torch(df_params *ps, uint64_t seed) {
    for (size_t i = 0; i < ps->n; i++) {
        const df_param *p = &ps->p[i];
        float *w = ps->data + p->offset;
        double fan_in = 0;
        if (ends_with(p->name, ".weight") && p->ndim >= 2) {
            fan_in = (double)(p->numel / (size_t)p->shape[0]);
        } else if (ends_with(p->name, ".bias")) { /* the fan-in of the sibling weight, if it is a conv/linear */
            char wname[DF_PARAM_NAME];
            snprintf(wname, sizeof wname, "%.*s.weight", (int)(strlen(p->name) - 5), p->name);
            int wi = df_params_find(ps, wname);
            if (wi >= 0 && ps->p[wi].ndim >= 2) fan_in = (double)(ps->p[wi].numel / (size_t)ps->p[wi].shape[0]);
        }
        if (fan_in > 0) {
            float bound = (float)(1.0 / sqrt(fan_in));
            df_rng_uniform(w, p->numel, seed, df_stream(DF_STREAM_INIT, (uint32_t)i, 0), 0);
            for (size_t k = 0; k < p->numel; k++) w[k] = bound * (2 * w[k] - 1);
        } else { /* norms: weight 1, bias 0 */
            float v = ends_with(p->name, ".weight") ? 1.0f : 0.0f;
            for (size_t k = 0; k < p->numel; k++) w[k] = v;
        }
    }
}

/* Is `tn` (a tensor in the file) one of the table's names or their alternative names? */
static int known_name(const df_params *ps, const char *tn, df_alt_name_fn alt) {
    if (df_params_find(ps, tn) >= 0) return 1;
    for (size_t i = 0; i < ps->n && alt; i++) {
        char buf[DF_PARAM_NAME];
        const char *o = alt(ps->p[i].name, buf, sizeof buf);
        if (o && strcmp(o, tn) == 0) return 1;
    }
    return 0;
}

int df_params_load(df_params *ps, const char *path, df_alt_name_fn alt) {
    st_file f;
    if (st_open(&f, path)) return -1;
    float *tmp = df_malloc(ps->total * sizeof(float));
    size_t used = 0;
    int rc = 0;
    for (size_t i = 0; i < ps->n && rc == 0; i++) {
        const df_param *p = &ps->p[i];
        const char *name = p->name;
        char other[DF_PARAM_NAME];
        if (!st_find(&f, name) && alt && alt(name, other, sizeof other) && st_find(&f, other)) name = other;
        if (!st_find(&f, name)) {
            rc = df_error("%s: tensor '%s' is missing (the model's config expects it; was the file saved from a "
                          "different config?)", path, p->name);
            break;
        }
        rc = st_read_f32(&f, name, tmp + p->offset, p->ndim, p->shape);
        used++;
    }
    if (rc == 0 && used != f.n) {
        for (size_t k = 0; k < f.n && rc == 0; k++)
            if (!known_name(ps, f.tensors[k].name, alt))
                rc = df_error("%s: unexpected tensor '%s' that the model's config does not have (config and weights "
                              "do not match)", path, f.tensors[k].name);
        if (rc == 0) rc = df_error("%s: holds %zu tensors for %zu parameters (two namings of one tensor at once?)",
                                   path, f.n, ps->n);
    }
    if (rc == 0) memcpy(ps->data, tmp, ps->total * sizeof(float));
    df_free(tmp);
    st_close(&f);
    return rc;
}

int df_params_save(const df_params *ps, const char *path) {
    st_entry *e = df_calloc(ps->n, sizeof *e);
    for (size_t i = 0; i < ps->n; i++) {
        e[i].name = ps->p[i].name;
        e[i].dtype = ST_F32;
        e[i].ndim = ps->p[i].ndim;
        memcpy(e[i].shape, ps->p[i].shape, sizeof ps->p[i].shape);
        e[i].data = ps->data + ps->p[i].offset;
    }
    static const char *const meta[] = {"format", "pt"};
    int rc = st_write(path, e, ps->n, meta, 1);
    df_free(e);
    return rc;
}
