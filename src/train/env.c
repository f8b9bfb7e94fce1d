/* dpt_env_check: every DPT_* environment variable the library reads,
 * validated in one place (the readers, deep in comm/, net/, ops/ and core/,
 * fall back to their defaults on a value they cannot use; this is how a
 * program hears about it). Lives in train/, the top layer, because it asks
 * ops/ which kernels this CPU runs. */
#include "net/net_gpu_graph.h" /* net_gpu_graph_env_valid */
#include "net/net_impl.h" /* dpt_net_memory_budget */
#include "ops/ops.h"

#include "dptrain/core.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Unset and empty are the same: the default. */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* A decimal integer in [lo, hi], nothing else (no sign for lo >= 0). */
static int int_in(const char *v, long lo, long hi)
{
    if (lo >= 0 && (*v < '0' || *v > '9'))
        return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    return !errno && end != v && !*end && x >= lo && x <= hi;
}

static dpt_status check_kernels(void)
{
    const char *v = env("DPT_KERNELS");
    if (!v || !strcmp(v, "auto"))
        return DPT_OK;
    static const char *const all[] = {"generic", "avx2", "avx512"};
    char here[64] = "auto";
    int known = 0;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        if (!strcmp(v, all[i]))
            known = 1;
        if (dpt_ops_kernels_supported(all[i])) {
            strcat(here, ", ");
            strcat(here, all[i]);
        }
    }
    if (!known)
        return dpt_fail(DPT_ERR_ARG, "DPT_KERNELS: '%.64s' is not a kernel set (auto, generic, avx2, avx512)", v);
    if (!dpt_ops_kernels_supported(v))
        return dpt_fail(DPT_ERR_ARG, "DPT_KERNELS: '%s' kernels do not run on this CPU (here: %s)", v, here);
    return DPT_OK;
}

dpt_status dpt_env_check(void)
{
    const char *v;
    if ((v = env("DPT_SPIN_US")) && !int_in(v, 0, 1000000))
        return dpt_fail(DPT_ERR_ARG,
                        "DPT_SPIN_US: '%.64s' is not a number of microseconds from 0 to 1000000", v);
    if ((v = env("DPT_COMM_TIMEOUT_MS")) && !int_in(v, 0, LONG_MAX))
        return dpt_fail(DPT_ERR_ARG,
                        "DPT_COMM_TIMEOUT_MS: '%.64s' is not a number of milliseconds (0 waits forever)", v);
    if ((v = env("DPT_CUDA_GRAPH")) && !net_gpu_graph_env_valid(v))
        return dpt_fail(DPT_ERR_ARG, "DPT_CUDA_GRAPH: '%.64s' is not 0 or off (eager launches), 1 or "
                        "on (CUDA graphs where the network allows, the default)", v);
    if ((v = env("DPT_FUSION")) && strcmp(v, "0") && strcmp(v, "1"))
        return dpt_fail(DPT_ERR_ARG, "DPT_FUSION: '%.64s' is not 0 (off) or 1 (on, the default)", v);
    if ((v = env("DPT_FUSION_BLK")) && strcmp(v, "0") && strcmp(v, "1"))
        return dpt_fail(DPT_ERR_ARG, "DPT_FUSION_BLK: '%.64s' is not 0 (the residual blocks' fusions "
                        "off) or 1 (on, the default)", v);
    if ((v = env("DPT_CGROUP_ROOT"))) {
        struct stat st;
        if (v[0] != '/')
            return dpt_fail(DPT_ERR_ARG, "DPT_CGROUP_ROOT: '%.200s' is not an absolute path to a folder", v);
        if (stat(v, &st) != 0)
            return dpt_fail(DPT_ERR_ARG, "DPT_CGROUP_ROOT: %.200s: %s (want the folder where cgroupfs is mounted)",
                            v, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return dpt_fail(DPT_ERR_ARG, "DPT_CGROUP_ROOT: %.200s is not a folder (want the folder where "
                                         "cgroupfs is mounted)", v);
    }
    if ((v = env("DPT_CONV_ALGO")) && strcmp(v, "auto") && strcmp(v, "heuristic") &&
        strcmp(v, "measure") && (strlen(v) > 16 || dpt_conv_algo_by_name(v) <= DPT_CONV_ALGO_AUTO))
        return dpt_fail(DPT_ERR_ARG, "DPT_CONV_ALGO: '%.40s' is not an algorithm (auto, heuristic, "
                        "measure, gemm, direct, batched, depthwise, dnnl, pointwise, hwc, wino, "
                        "wino4, wino_s2)", v);
    if ((v = env("DPT_DNNL_LAYOUT")) && strcmp(v, "auto") && strcmp(v, "plain") && strcmp(v, "any"))
        return dpt_fail(DPT_ERR_ARG, "DPT_DNNL_LAYOUT: '%.40s' is not a layout (auto, plain, any)", v);
    if ((v = env("DPT_PLAN_CACHE")) && strlen(v) > 4000)
        return dpt_fail(DPT_ERR_ARG, "DPT_PLAN_CACHE: a path of %zu bytes (at most 4000)", strlen(v));
    dpt_status s = DPT_OK;
    dpt_net_memory_budget(&s); /* DPT_MAX_NET_MEMORY: its reader fails too */
    if (s != DPT_OK)
        return s;
    return check_kernels();
}
