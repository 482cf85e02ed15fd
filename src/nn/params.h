/* params.h: a named parameter table. Every parameter of a model lives in ONE allocation (data), its gradient
 * in another (grad), addressed by offsets; names and shapes are PyTorch's state-dict keys and layouts, so
 * loading, saving and comparing are string matches. */
#ifndef DF_PARAMS_H
#define DF_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define DF_PARAM_NAME 128

typedef struct {
    char name[DF_PARAM_NAME];
    int ndim;
    int64_t shape[4];
    size_t numel, offset; /* offset in floats into data / grad */
} df_param;

typedef struct {
    df_param *p;
    size_t n, cap;
    size_t total; /* floats */
    float *data;  /* total floats, NULL until df_params_alloc */
    float *grad;  /* total floats, NULL until df_params_alloc_grad */
} df_params;

/* Registers a parameter and returns its index. While the table is not yet allocated, a new name is added;
 * once allocated, the name must exist with the same shape (a DF_CHECK), so one builder function can both
 * define a model's table and, later, wire a graph to it. Unused trailing dims are 0. */
int df_params_add(df_params *ps, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
/* df_params_add with the name formatted printf-style (builders name parameters "%s.weight" and the like). */
int df_params_addf(df_params *ps, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
/* Allocates data (zeroed). */
void df_params_alloc(df_params *ps);
/* Allocates grad (zeroed); idempotent. */
void df_params_alloc_grad(df_params *ps);
void df_params_zero_grad(df_params *ps);
/* Index of a name, or -1. */
int df_params_find(const df_params *ps, const char *name);
static inline float *df_param_data(const df_params *ps, int i) { return ps->data + ps->p[i].offset; }
static inline float *df_param_grad(const df_params *ps, int i) { return ps->grad ? ps->grad + ps->p[i].offset : NULL; }
/* "[a, b, c]" into buf. */
const char *df_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
void df_params_free(df_params *ps);

/* ---- initialisation, load, save (params_io.c) ---- */

/* PyTorch's default initialisation for every parameter: a conv or linear `.weight` (ndim >= 2) and its sibling
 * `.bias` are uniform in +-1/sqrt(fan_in) (fan_in = numel / shape[0]); any other `.weight` (norms) is 1 and
 * any other tensor 0. Parameter i draws from stream (DF_STREAM_INIT, i) of seed. */
void df_params_init_torch(df_params *ps, uint64_t seed);

/* An alternative name a file may use for a parameter (e.g. old attention names); NULL if none. */
typedef const char *(*df_alt_name_fn)(const char *name, char *buf, size_t cap);
/* Loads every parameter from a safetensors file (F32, F16 or BF16, shapes checked) by name, or by alt's name
 * (alt may be NULL). A missing, extra or misshapen tensor is an error naming it; the table is unchanged then. */
int df_params_load(df_params *ps, const char *path, df_alt_name_fn alt);
/* Writes the table as F32 safetensors under its names (atomically), with metadata {"format": "pt"}. */
int df_params_save(const df_params *ps, const char *path);

/* The same for a model whose state dict spans several tables (parameters, then buffers such as BatchNorm's
 * running statistics) and int64 scalars (num_batches_tracked, I64 of shape [] as torch saves them): every name
 * of every table and every i64_names[k] must be in the file and nothing else; on error nothing changes. */
int df_params_load_tables(df_params *const *tables, size_t ntables, const char (*i64_names)[DF_PARAM_NAME],
                          int64_t *i64, size_t n_i64, const char *path, df_alt_name_fn alt);
int df_params_save_tables(const df_params *const *tables, size_t ntables, const char (*i64_names)[DF_PARAM_NAME],
                          const int64_t *i64, size_t n_i64, const char *path);

#endif
