/* flags.h: one table drives a command's flags: parsing (with defaults), checking, and --help. */
#ifndef DF_FLAGS_H
#define DF_FLAGS_H

typedef enum { FL_INT, FL_FLOAT, FL_STRING, FL_BOOL } df_flag_type;

typedef struct {
    const char *name; /* without the leading "--" */
    df_flag_type type;
    const char *def;  /* default as text (NULL: no default; strings stay NULL unless given) */
    const char *help;
    void *ptr;        /* int*, double*, const char** or int* (bool) */
} df_flag;

/* Parses argv[first..] against the table. Positional arguments are collected into pos (up to max_pos).
 * Returns 0 on success, 1 if --help was printed, -1 on error (message printed, naming the flag). */
int df_flags_parse(const df_flag *flags, int nflags, int argc, char **argv, const char *usage, const char **pos,
                   int max_pos, int *npos);
void df_flags_help(const df_flag *flags, int nflags, const char *usage);

#endif
