/* unet.h: the U-Net's insides, for the library and its tests (the public API is include/diffuse.h). */
#ifndef DF_UNET_H
#define DF_UNET_H

#include "diffuse.h"
#include "nn/graph.h"
#include "nn/params.h"

struct df_unet {
    df_unet_config cfg;
    df_params params;
    df_params buffers; /* BatchNorm running_mean, running_var (SimpleUnet; empty for UNet2DModel): not trained */
    int64_t *counters; /* num_batches_tracked of each norm (buffers.n / 2), +1 per training forward */
    char (*counter_names)[DF_PARAM_NAME];
    df_graph graph; /* the graph for the last (batch, train) asked for; rebuilt when they change */
    int have_graph, x_in, t_in;
    int frozen; /* df_unet_freeze: inference graphs keep their convolutions' weights packed */
    uint64_t dropout_seed, dropout_step; /* copied into the training graph before each pass */
};

/* Builds the graph of m for a batch (train: keep activations for backward) into g; with g == NULL only
 * registers the parameters in m->params. One function defines both, so they cannot drift apart. */
void df_unet_build(df_unet *m, df_graph *g, size_t batch, int train, int *x_in, int *t_in);

/* The SimpleUnet (simple_unet.c): its builder (called by df_unet_build), defaults (the report's 64x64 model),
 * config check, and config.json parse (root: the parsed object) and text (caller frees with free()). */
struct cJSON;
void df_simple_unet_build(df_unet *m, df_graph *g, size_t batch, int train, int *x_in, int *t_in);
void df_simple_unet_defaults(df_unet_config *c);
int df_simple_unet_config_check(const df_unet_config *c);
int df_simple_unet_config_parse(df_unet_config *c, const struct cJSON *root, const char *source);
char *df_simple_unet_config_json(const df_unet_config *c);

/* Old attention parameter names (google/ddpm-* checkpoints) for a current one, or NULL if it has none:
 * "...attentions.0.to_q.weight" -> "...attentions.0.query.weight" (to_k key, to_v value, to_out.0 proj_attn). */
const char *df_unet_old_attention_name(const char *name, char *buf, size_t cap);

#endif
