/* Facts about the machine. */
#include "dptrain/core.h"

#include <unistd.h>

int dpt_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
