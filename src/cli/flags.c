/* flags.c: table-driven flag parsing with strict number checks. */
#include "cli/flags.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int set_value(const df_flag *f, const char *v) {
    char *end;
    errno = 0;
    switch (f->type) {
    case FL_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < INT_MIN || x > INT_MAX) {
            fprintf(stderr, "diffuse: --%s expects an integer, got '%s'\n", f->name, v);
            return -1;
        }
        *(int *)f->ptr = (int)x;
    } break;
    case FL_FLOAT: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x)) {
            fprintf(stderr, "diffuse: --%s expects a number, got '%s'\n", f->name, v);
            return -1;
        }
        *(double *)f->ptr = x;
    } break;
    case FL_STRING: *(const char **)f->ptr = v; break;
    case FL_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")) *(int *)f->ptr = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no")) *(int *)f->ptr = 0;
        else {
            fprintf(stderr, "diffuse: --%s expects true or false, got '%s'\n", f->name, v);
            return -1;
        }
        break;
    }
    return 0;
}

void df_flags_help(const df_flag *flags, int nflags, const char *usage) {
    printf("%s\n\nflags:\n", usage);
    for (int i = 0; i < nflags; i++) {
        const df_flag *f = &flags[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s", f->name,
                 f->type == FL_BOOL ? "" : f->type == FL_STRING ? " S" : f->type == FL_INT ? " N" : " X");
        printf("  %-24s %s", left, f->help);
        if (f->def) printf(" (default: %s)", f->def);
        printf("\n");
    }
    printf("  %-24s %s\n", "--help", "print this help");
}

int df_flags_parse(const df_flag *flags, int nflags, int argc, char **argv, const char *usage, const char **pos,
                   int max_pos, int *npos) {
    for (int i = 0; i < nflags; i++)
        if (flags[i].def && set_value(&flags[i], flags[i].def)) return -1;
    *npos = 0;
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == 0) {
            if (*npos >= max_pos) {
                fprintf(stderr, "diffuse: unexpected argument '%s' (see --help)\n", arg);
                return -1;
            }
            pos[(*npos)++] = arg;
            continue;
        }
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            df_flags_help(flags, nflags, usage);
            return 1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int negate = 0, found = -1;
        for (int i = 0; i < nflags && found < 0; i++)
            if (strlen(flags[i].name) == len && !strncmp(flags[i].name, name, len)) found = i;
        if (found < 0 && len > 3 && !strncmp(name, "no-", 3))
            for (int i = 0; i < nflags && found < 0; i++)
                if (flags[i].type == FL_BOOL && strlen(flags[i].name) == len - 3 && !strncmp(flags[i].name, name + 3, len - 3))
                    found = i, negate = 1;
        if (found < 0) {
            fprintf(stderr, "diffuse: unknown flag --%.*s (see --help)\n", (int)len, name);
            return -1;
        }
        const df_flag *f = &flags[found];
        if (f->type == FL_BOOL && !eq) {
            *(int *)f->ptr = !negate;
            continue;
        }
        const char *v = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
        if (!v) {
            fprintf(stderr, "diffuse: --%s needs a value (see --help)\n", f->name);
            return -1;
        }
        if (set_value(f, v)) return -1;
    }
    return 0;
}
