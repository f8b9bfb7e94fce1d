/* Facts about the machine. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "dptrain/core.h"

#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

int dpt_cpu_count(void)
{
#ifdef __linux__
    /* The CPUs this process may run on, not those the machine has: under
     * taskset, a Slurm or container cpuset, or mpirun's binding, a default
     * of one worker per online CPU would oversubscribe the allowed ones. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return n;
    } /* else more CPUs than a cpu_set_t holds (1024): count them all */
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
