/* cmd_classifier.c: `diffuse classifier`: trains the FID feature network (a small CNN, src/eval/classifier.h)
 * on a labelled dataset and writes its folder; with --eval, measures a folder's accuracy. */
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "cli/commands.h"
#include "cli/flags.h"
#include "eval/classifier.h"

#define BAD(...) (fprintf(stderr, "diffuse classifier: " __VA_ARGS__), fprintf(stderr, "\n"), 1)

static const char USAGE[] =
    "usage: diffuse classifier [--data fashion-mnist] [--out models/fid-fashion-mnist] [--epochs 6]\n"
    "       diffuse classifier --eval DIR [--test-data fashion-mnist-test]\n\n"
    "Trains the small CNN whose penultimate features (256) `diffuse fid` uses for 28x28 grey images, by\n"
    "softmax cross-entropy with AdamW (cosine learning rate), and reports its test accuracy after every epoch.\n"
    "Writes DIR/config.json and DIR/model.safetensors. The shipped models/fid-fashion-mnist was made by\n"
    "`diffuse classifier` with the defaults.";

int cmd_classifier(int argc, char **argv) {
    const char *data = "fashion-mnist", *test_data = NULL, *data_dir = NULL, *out = NULL, *eval = NULL;
    int epochs = 6, batch = 128, seed = 0, threads = 0, flip = 1;
    double lr = 2e-3, wd = 5e-4;
    const df_flag flags[] = {
        {"data", FL_STRING, "fashion-mnist", "labelled training set: fashion-mnist or mnist", &data},
        {"test-data", FL_STRING, NULL, "labelled test set (default: DATA-test)", &test_data},
        {"data-dir", FL_STRING, NULL, "folder holding the IDX files (default: the Debian package's)", &data_dir},
        {"out", FL_STRING, NULL, "folder to write (default: models/fid-DATA)", &out},
        {"eval", FL_STRING, NULL, "only measure this classifier folder's accuracy on the test set", &eval},
        {"epochs", FL_INT, "6", "passes over the training set", &epochs},
        {"batch", FL_INT, "128", "images per step", &batch},
        {"lr", FL_FLOAT, "2e-3", "peak learning rate (cosine decay to 0)", &lr},
        {"weight-decay", FL_FLOAT, "5e-4", "AdamW's decoupled weight decay", &wd},
        {"flip", FL_BOOL, "1", "random horizontal flips (--flip 0: none)", &flip},
        {"seed", FL_INT, "0", "initialisation, shuffling and flips", &seed},
        {"threads", FL_INT, "0", "threads (0: OMP_NUM_THREADS if set, else all cores)", &threads},
    };
    int npos, rc = df_flags_parse(flags, sizeof flags / sizeof flags[0], argc, argv, USAGE, NULL, 0, &npos);
    if (rc) return rc < 0 ? 1 : 0;
    if (epochs < 1 || batch < 1 || !(lr > 0) || wd < 0 || seed < 0 || threads < 0)
        return BAD("--epochs and --batch must be >= 1, --lr > 0, --weight-decay, --seed and --threads >= 0");
    df_set_threads(threads);
    char test_name[256], out_dir[512];
    snprintf(test_name, sizeof test_name, "%s-test", data);
    if (!test_data) test_data = test_name;
    snprintf(out_dir, sizeof out_dir, "models/fid-%s", data);
    if (!out) out = out_dir;

    df_dataset train = {0}, test = {0};
    if (df_dataset_load(&test, test_data, data_dir, 0, 0)) return BAD("%s", df_errmsg());
    if (!test.labels) {
        df_dataset_free(&test);
        return BAD("%s has no labels (the named IDX datasets fashion-mnist[-test] and mnist[-test] have)",
                   test_data);
    }
    if (eval) {
        df_classifier *m = df_classifier_load(eval);
        if (!m) {
            df_dataset_free(&test);
            return BAD("%s", df_errmsg());
        }
        double acc = df_classifier_accuracy(m, &test);
        printf("%s: accuracy %.2f%% on %s (%zu images)\n", eval, 100 * acc, test_data, test.n);
        df_classifier_free(m);
        df_dataset_free(&test);
        return 0;
    }
    if (df_dataset_load(&train, data, data_dir, 0, 0)) {
        df_dataset_free(&test);
        return BAD("%s", df_errmsg());
    }
    df_clf_config c = df_clf_default_config((int)train.c, (int)train.h, 10);
    df_classifier *m = train.h == train.w ? df_classifier_create(&c, (uint64_t)seed) : NULL;
    if (!m) rc = BAD("%s", train.h == train.w ? df_errmsg() : "the images must be square");
    df_clf_train_opts o = {.epochs = epochs, .batch = (size_t)batch, .lr = lr, .weight_decay = wd,
                           .seed = (uint64_t)seed, .flip = flip};
    if (rc == 0) {
        printf("training the FID classifier on %s (%zu images), testing on %s (%zu): %d epochs of %d\n", data,
               train.n, test_data, test.n, epochs, batch);
        if (df_classifier_train(m, &train, &test, data, &o) || df_classifier_save(m, out))
            rc = BAD("%s", df_errmsg());
        else
            printf("test accuracy %.2f%%; wrote %s\n", 100 * m->cfg.test_accuracy, out);
    }
    df_classifier_free(m);
    df_dataset_free(&train);
    df_dataset_free(&test);
    return rc;
}
