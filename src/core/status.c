/* Per-thread last-error message. */
#include "dptrain/core.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_msg[1024];

const char *dpt_last_error(void) { return last_msg; }

void dpt_clear_error(void) { last_msg[0] = '\0'; }

dpt_status dpt_fail(dpt_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    return s;
}

const char *dpt_status_str(dpt_status s)
{
    switch (s) {
    case DPT_OK: return "success";
    case DPT_ERR_ARG: return "invalid argument";
    case DPT_ERR_NOMEM: return "out of memory";
    case DPT_ERR_IO: return "I/O error";
    case DPT_ERR_FORMAT: return "malformed input";
    case DPT_ERR_SHAPE: return "shape mismatch";
    case DPT_ERR_COMM: return "communication failure";
    case DPT_ERR_TIMEOUT: return "collective timed out";
    case DPT_ERR_NUMERIC: return "non-finite value";
    case DPT_ERR_UNSUPPORTED: return "not supported by this build";
    case DPT_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}
