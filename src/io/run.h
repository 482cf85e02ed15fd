/* run.h: a run folder is a diffusers DDPMPipeline folder:
 *   RUN/model_index.json
 *   RUN/unet/config.json, RUN/unet/diffusion_pytorch_model.safetensors   (the EMA weights)
 *   RUN/scheduler/scheduler_config.json
 * with the trainer's state beside it in RUN/trainer/state.safetensors (raw weights, EMA weights, Adam
 * moments, step, data position; the settings in its metadata). Every file is written atomically. */
#ifndef DF_RUN_H
#define DF_RUN_H

#include "diffuse.h"
#include "diffusion/schedule.h"

/* Writes model_index.json, unet/ (config and the weights of m) and scheduler/. */
int df_run_save_pipeline(const char *dir, const df_unet *m, const df_schedule *s);
/* Reads RUN/scheduler/scheduler_config.json (or a defaults schedule if the folder has none and
 * allow_missing). */
int df_run_load_schedule(const char *dir, df_schedule *s, int allow_missing);

#endif
