/* Private: text from outside (file names, class names, spec lines, decoder
 * messages) made safe to show to a person. Used by the CLI and by the
 * library where it prints (the MPI abort line). */
#ifndef DPT_CORE_TEXT_H
#define DPT_CORE_TEXT_H

#include <stddef.h>

/* Copy in[0..in_len) (in_len (size_t)-1: up to the NUL) to out (out_size
 * bytes, always NUL-terminated when out_size > 0), escaping what a terminal
 * would act on or not show: control characters (C0, DEL, C1), bytes that are
 * not valid UTF-8, the byte-order mark, zero-width and bidirectional
 * formatting characters. Each such byte becomes \xNN. Valid UTF-8
 * sequences are copied whole, never cut. At most max_cols characters
 * (a \xNN escape counts 4) are written; 0 means no limit besides out_size.
 * Returns the characters written (terminal columns, counting every
 * character as one). */
size_t dpt_text_clean(char *out, size_t out_size, const char *in, size_t in_len, size_t max_cols);

#endif
