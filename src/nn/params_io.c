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

/* Is `tn` (a tensor in the file) one of the tables' names, their alternative names, or an int64 name? */
static int known_name(df_params *const *tables, size_t ntables, const char (*i64_names)[DF_PARAM_NAME], size_t n_i64,
                      const char *tn, df_alt_name_fn alt) {
    for (size_t k = 0; k < n_i64; k++)
        if (strcmp(i64_names[k], tn) == 0) return 1;
    for (size_t t = 0; t < ntables; t++) {
        const df_params *ps = tables[t];
        if (df_params_find(ps, tn) >= 0) return 1;
        for (size_t i = 0; i < ps->n && alt; i++) {
            char buf[DF_PARAM_NAME];
            const char *o = alt(ps->p[i].name, buf, sizeof buf);
            if (o && strcmp(o, tn) == 0) return 1;
        }
    }
    return 0;
}

/* Reads every tensor of table ps into tmp (ps->total floats); counts them in *used. */
static int read_table(const st_file *f, const df_params *ps, float *tmp, df_alt_name_fn alt, const char *path,
                      size_t *used) {
    for (size_t i = 0; i < ps->n; i++) {
        const df_param *p = &ps->p[i];
        const char *name = p->name;
        char other[DF_PARAM_NAME];
        if (!st_find(f, name) && alt && alt(name, other, sizeof other) && st_find(f, other)) name = other;
        if (!st_find(f, name))
            return df_error("%s: tensor '%s' is missing (the model's config expects it; was the file saved from a "
                            "different config?)", path, p->name);
        if (st_read_f32(f, name, tmp + p->offset, p->ndim, p->shape)) return -1;
        (*used)++;
    }
    return 0;
}

int df_params_load_tables(df_params *const *tables, size_t ntables, const char (*i64_names)[DF_PARAM_NAME],
                          int64_t *i64, size_t n_i64, const char *path, df_alt_name_fn alt) {
    st_file f;
    if (st_open(&f, path)) return -1;
    float **tmp = df_calloc(ntables, sizeof *tmp);
    int64_t *itmp = df_calloc(n_i64 ? n_i64 : 1, sizeof *itmp);
    size_t used = 0, want = n_i64;
    int rc = 0;
    for (size_t t = 0; t < ntables && rc == 0; t++) {
        tmp[t] = df_malloc((tables[t]->total ? tables[t]->total : 1) * sizeof(float));
        rc = read_table(&f, tables[t], tmp[t], alt, path, &used);
        want += tables[t]->n;
    }
    for (size_t k = 0; k < n_i64 && rc == 0; k++) { /* torch saves a counter as an I64 scalar (shape []) */
        const st_tensor *t = st_find(&f, i64_names[k]);
        if (!t)
            rc = df_error("%s: tensor '%s' is missing (the model's config expects it)", path, i64_names[k]);
        else if (t->dtype != ST_I64 || t->numel != 1)
            rc = df_error("%s: tensor '%s' must be one I64 value (as torch saves it), found %s with %zu values", path,
                          i64_names[k], st_dtype_name(t->dtype), t->numel);
        else
            memcpy(&itmp[k], st_data(&f, t), sizeof(int64_t)), used++;
    }
    if (rc == 0 && used != f.n) {
        for (size_t k = 0; k < f.n && rc == 0; k++)
            if (!known_name(tables, ntables, i64_names, n_i64, f.tensors[k].name, alt))
                rc = df_error("%s: unexpected tensor '%s' that the model's config does not have (config and weights "
                              "do not match)", path, f.tensors[k].name);
        if (rc == 0) rc = df_error("%s: holds %zu tensors for %zu (two namings of one tensor at once?)", path, f.n,
                                   want);
    }
    for (size_t t = 0; t < ntables; t++) {
        if (rc == 0) memcpy(tables[t]->data, tmp[t], tables[t]->total * sizeof(float));
        df_free(tmp[t]);
    }
    if (rc == 0 && n_i64) memcpy(i64, itmp, n_i64 * sizeof *i64);
    df_free(tmp);
    df_free(itmp);
    st_close(&f);
    return rc;
}

int df_params_load(df_params *ps, const char *path, df_alt_name_fn alt) {
    return df_params_load_tables(&ps, 1, NULL, NULL, 0, path, alt);
}

int df_params_save_tables(const df_params *const *tables, size_t ntables, const char (*i64_names)[DF_PARAM_NAME],
                          const int64_t *i64, size_t n_i64, const char *path) {
    size_t n = n_i64;
    for (size_t t = 0; t < ntables; t++) n += tables[t]->n;
    st_entry *e = df_calloc(n ? n : 1, sizeof *e);
    size_t k = 0;
    for (size_t t = 0; t < ntables; t++)
        for (size_t i = 0; i < tables[t]->n; i++, k++) {
            const df_param *p = &tables[t]->p[i];
            e[k] = st_entry_f32(p->name, tables[t]->data + p->offset, p->ndim, p->shape);
        }
    for (size_t i = 0; i < n_i64; i++, k++)
        e[k] = (st_entry){.name = i64_names[i], .dtype = ST_I64, .ndim = 0, .data = &i64[i]};
    static const char *const meta[] = {"format", "pt"};
    int rc = st_write(path, e, n, meta, 1);
    df_free(e);
    return rc;
}

int df_params_save(const df_params *ps, const char *path) {
    return df_params_save_tables(&ps, 1, NULL, NULL, 0, path);
}
