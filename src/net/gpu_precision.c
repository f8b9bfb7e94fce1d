/* --precision's names (include/dptrain/gpu.h, dpt_precision): in every
 * build, so the CLI and the bindings parse and refuse the same way with
 * or without CUDA. */
#include "dptrain/gpu.h"

#include <string.h>

static const char *const names[] = {"fp32", "tf32", "bf16"};

dpt_status dpt_precision_parse(const char *name, dpt_precision *out)
{
    for (int i = 0; name && i < (int)(sizeof names / sizeof *names); i++)
        if (!strcmp(name, names[i])) {
            *out = (dpt_precision)i;
            return DPT_OK;
        }
    /* Bounded: a hostile argument is cut, never copied whole. */
    return dpt_fail(DPT_ERR_ARG, "unknown precision '%.64s' (fp32, tf32, bf16)",
                    name ? name : "(null)");
}

const char *dpt_precision_name(dpt_precision p)
{
    return (int)p >= 0 && (int)p < (int)(sizeof names / sizeof *names) ? names[p] : "?";
}
