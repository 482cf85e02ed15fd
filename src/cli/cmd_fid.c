/* cmd_fid.c: `diffuse fid A [B]`: the Frechet distance between two image sources in the feature space of
 * the FID classifier (src/eval/fid_features.h), and statistics files for pytorch-fid. */
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "eval/fid_features.h"

#define BAD(...) (fprintf(stderr, "diffuse fid: " __VA_ARGS__), fprintf(stderr, "\n"), 1)

static const char USAGE[] =
    "usage: diffuse fid A B [--features DIR] [--save-stats FILE]\n"
    "       diffuse fid A --save-stats FILE\n\n"
    "Frechet distance (FID) between image sources A and B over the penultimate features (256) of a small CNN\n"
    "trained on Fashion-MNIST by `diffuse classifier` (models/fid-fashion-mnist, shipped), for 28x28 grey\n"
    "images. A source is an image folder, a .npy array (N,H,W[,C]), a dataset name (fashion-mnist,\n"
    "fashion-mnist-test, mnist, mnist-test) or a statistics file (.npz with pytorch-fid's keys mu and sigma).\n"
    "Statistics of named datasets are cached beside the network (the training set's ship with it).\n"
    "Example: diffuse fid samples.npy fashion-mnist";

int cmd_fid(int argc, char **argv) {
    const char *features = NULL, *save = NULL, *data_dir = NULL;
    int threads = 0;
    const df_flag flags[] = {
        {"features", FL_STRING, NULL, "the feature network's folder (default: models/fid-fashion-mnist)", &features},
        {"save-stats", FL_STRING, NULL, "write A's statistics (mu, sigma) to this .npz", &save},
        {"data-dir", FL_STRING, NULL, "folder holding the named datasets' IDX files", &data_dir},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
    };
    const char *pos[2];
    int npos, rc = df_flags_parse(flags, sizeof flags / sizeof flags[0], argc, argv, USAGE, pos, 2, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    if (npos == 0 || (npos == 1 && !save))
        return BAD("give two sources (diffuse fid A B), or one with --save-stats FILE");
    if (save && (strlen(save) < 5 || strcmp(save + strlen(save) - 4, ".npz")))
        return BAD("--save-stats %s: the file must end in .npz (pytorch-fid's format)", save);
    if (threads < 0) return BAD("--threads must be >= 0");
    df_set_threads(threads);
    char dir[4096];
    if (features) snprintf(dir, sizeof dir, "%s", features);
    else if (df_fid_default_features(dir, sizeof dir)) return BAD("%s", df_errmsg());
    df_classifier *net = df_classifier_load(dir);
    if (!net) return BAD("%s", df_errmsg());
    df_fid_stats st[2] = {{0}, {0}};
    char what[2][4600];
    for (int i = 0; i < npos && rc == 0; i++)
        if (df_fid_stats_source(net, dir, pos[i], data_dir, &st[i], what[i], sizeof what[i]))
            rc = BAD("%s: %s", pos[i], df_errmsg());
    if (rc == 0 && save) {
        if (df_fid_stats_save(save, &st[0])) rc = BAD("%s", df_errmsg());
        else printf("statistics of %s: %s\n", what[0], save);
    }
    if (rc == 0 && npos == 2) {
        double fid;
        if (df_fid_distance(&st[0], &st[1], &fid)) {
            rc = BAD("%s", df_errmsg());
        } else {
            printf("A: %s\nB: %s\nfeatures: %s fc1 (%d, after ReLU), trained on %s", what[0], what[1], dir,
                   net->cfg.hidden, net->cfg.trained_on);
            if (net->cfg.test_accuracy >= 0) printf(" (test accuracy %.2f%%)", 100 * net->cfg.test_accuracy);
            printf("\nFID %.6g\n", fid);
        }
    }
    df_fid_stats_free(&st[0]), df_fid_stats_free(&st[1]);
    df_classifier_free(net);
    return rc;
}
