/* The dptrain command-line tool: one file per command. Each command parses
 * its own long options and returns the process exit code (0 success, 1 any
 * error). Errors are printed as "dptrain: <file or option>: <problem>". */
#ifndef DPT_CLI_H
#define DPT_CLI_H

#include "dptrain/core.h"
#include "dptrain/data.h"
#include "dptrain/net.h"

#include <stddef.h>
#include <stdint.h>

int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_predict(int argc, char **argv);
int cli_info(int argc, char **argv);
int cli_launch(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_export(int argc, char **argv);

/* Print "dptrain: <message>" on stderr and return 1. */
int cli_error(const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* Print this thread's library error and return 1. */
int cli_lib_error(void);

/* Parse numbers from option values; on error print which option and fail. */
int cli_int(const char *opt, const char *value, long min, long max, long *out);
int cli_double(const char *opt, const char *value, double *out);
/* A byte count, as DPT_MAX_NET_MEMORY takes it: a decimal number (no sign,
 * space, hex, inf or nan), optionally followed by one of K, M, G, T (or k,
 * m, g, t: powers of 1024), nothing else; at most about 4.6e18. On error
 * print "<what>: '<value>' is not a size ..." and fail. */
int cli_bytes(const char *what, const char *value, uint64_t *out);

/* Text from outside (file and class names, metadata) made safe to print:
 * control characters, invalid UTF-8 and invisible characters as \xNN
 * (core/text.h). cli_clean returns buf. cli_cell prints s in a column of
 * `width` characters (UTF-8 counted by character, never cut in the middle),
 * right-aligned or (left != 0) left-aligned. */
const char *cli_clean(char *buf, size_t size, const char *s);
void cli_cell(const char *s, int width, int left);

/* A language model's vocabulary from its metadata (cmd_generate.c): the
 * model must say "task": "language_model" and carry "vocab", a JSON array of
 * code points, one per output, strictly increasing; its network must take
 * and give a sequence of that many features. Any other file, or metadata a
 * hostile file could bend, prints "dptrain: <path>: ..." naming what is
 * wrong (cmd names the command in the message) and returns 1; *out (owned
 * by the caller, dpt_text_free) on success. */
int cli_model_vocab(const dpt_net *net, const char *path, const char *cmd, dpt_text **out);
/* The model's "seq_len" metadata (64 when absent), 1 to 65536; prints and
 * returns 1 when malformed. */
int cli_model_seq_len(const dpt_net *net, const char *path, long *out);
/* Write code point cp (a Unicode scalar value) as UTF-8 into s (room for 4
 * bytes); returns the bytes written. */
size_t cli_utf8_put(char *s, uint32_t cp);

#endif
