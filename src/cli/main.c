/* main.c: the diffuse binary: dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

#define DIFFUSE_VERSION "0.1.0"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *about;
} commands[] = {
    {"train", cmd_train, "train a DDPM U-Net on images into a run folder (diffusers pipeline)"},
    {"sample", cmd_sample, "sample images with DDPM (1000 steps) or DDIM (10-50 steps)"},
    {"encode", cmd_encode, "DDIM inversion: images to latents x_T (deterministic ODE)"},
    {"decode", cmd_decode, "latents x_T back to images; with --reference, the reconstruction error"},
    {"interpolate", cmd_interpolate, "decode spherical interpolations between two seeds' noises"},
    {"fid", cmd_fid, "FID between image folders, .npy arrays, datasets or statistics files"},
    {"classifier", cmd_classifier, "train the FID feature network (a small CNN) on a labelled dataset"},
    {"plot", cmd_plot, "draw a run's loss curve (RUN/metrics.csv) as a PNG"},
    {"bench", cmd_bench, "throughput of a model's forward or training step, and the GEMM peak"},
    {"toy", cmd_toy, "train a small MLP diffusion model on 2-D toy points; figures and a distance"},
    {"info", cmd_info, "parameters, forward GFLOPs and memory of a preset, config or model folder"},
};

static void usage(void) {
    printf("diffuse %s: denoising diffusion models (DDPM, DDIM) in C\n\nusage: diffuse COMMAND [flags]\n\ncommands:\n",
           DIFFUSE_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        printf("  %-12s %s\n", commands[i].name, commands[i].about);
    printf("\n'diffuse COMMAND --help' lists a command's flags and their defaults.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage();
        return argc < 2 ? 1 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("diffuse %s\n", DIFFUSE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "diffuse: unknown command '%s' (run 'diffuse --help' for the list)\n", argv[1]);
    return 1;
}
