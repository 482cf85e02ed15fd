/* unet.h: the U-Net's insides, for the library and its tests (the public API is include/diffuse.h). */
#ifndef DF_UNET_H
#define DF_UNET_H

#include "diffuse.h"
#include "nn/graph.h"
#include "nn/params.h"

struct df_unet {
    df_unet_config cfg;
    df_params params;
    df_graph graph; /* the graph for the last (batch, train) asked for; rebuilt when they change */
    int have_graph, x_in, t_in;
    uint64_t dropout_seed, dropout_step; /* copied into the training graph before each pass */
};

/* Builds the graph of m for a batch (train: keep activations for backward) into g; with g == NULL only
 * registers the parameters in m->params. One function defines both, so they cannot drift apart. */
void df_unet_build(df_unet *m, df_graph *g, size_t batch, int train, int *x_in, int *t_in);

/* Old attention parameter names (google/ddpm-* checkpoints) for a current one, or NULL if it has none:
 * "...attentions.0.to_q.weight" -> "...attentions.0.query.weight" (to_k key, to_v value, to_out.0 proj_attn). */
const char *df_unet_old_attention_name(const char *name, char *buf, size_t cap);

#endif
