/* commands.h: the subcommands of the diffuse binary (one file each). Each takes the arguments after its
 * name and returns the process exit status. */
#ifndef DF_COMMANDS_H
#define DF_COMMANDS_H

int cmd_info(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_decode(int argc, char **argv);
int cmd_interpolate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_toy(int argc, char **argv);
int cmd_classifier(int argc, char **argv);
int cmd_fid(int argc, char **argv);

#endif
