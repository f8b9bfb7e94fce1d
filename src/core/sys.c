/* Facts about the machine. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "dptrain/core.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

#ifdef __linux__
/* A small file into buf (NUL-terminated, cut at size - 1), with read(2)
 * rather than stdio: no allocation, so dpt_cpu_count cannot fail or be
 * wrong for lack of memory. -1 when it cannot be opened. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* A file's first line as two numbers: "a b" (b optional). 0 when the file
 * is missing or does not start with a number ("max" included). */
static int read_two(const char *path, long long *a, long long *b)
{
    char line[128];
    if (read_small(path, line, sizeof line) < 0)
        return 0;
    return sscanf(line, "%lld %lld", a, b);
}

/* CPUs a CFS quota allows (quota / period, rounded up), or INT_MAX for
 * none or a file that does not parse. */
static int quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return INT_MAX;
    long long n = (quota + period - 1) / period;
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* The tightest quota on the way from dir (a cgroup directory, under root)
 * up to root: a limit set on a parent binds its children too. v2 reads
 * cpu.max ("max 100000" or "150000 100000"); v1 cpu.cfs_quota_us and
 * cpu.cfs_period_us (-1: none). Directories that do not exist are skipped:
 * inside a container the path in /proc/self/cgroup is often the host's,
 * while the container's own cgroup is mounted at the root. */
static int tightest_quota(const char *root, const char *path, int v2)
{
    char dir[PATH_MAX], file[PATH_MAX + 32];
    int best = INT_MAX;
    if (snprintf(dir, sizeof dir, "%s%s", root, path) >= (int)sizeof dir)
        return best;
    size_t floor = strlen(root);
    for (;;) {
        long long a = 0, b = 0;
        int cpus = INT_MAX;
        if (v2) {
            snprintf(file, sizeof file, "%s/cpu.max", dir);
            if (read_two(file, &a, &b) == 2)
                cpus = quota_cpus(a, b);
        } else {
            long long p = 0, unused = 0;
            snprintf(file, sizeof file, "%s/cpu.cfs_quota_us", dir);
            if (read_two(file, &a, &unused) >= 1) {
                snprintf(file, sizeof file, "%s/cpu.cfs_period_us", dir);
                if (read_two(file, &p, &unused) >= 1)
                    cpus = quota_cpus(a, p);
            }
        }
        if (cpus < best)
            best = cpus;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < floor)
            break;
        *slash = '\0';
    }
    return best;
}

/* CPUs the cgroup's CPU quota allows (docker --cpus, Kubernetes limits,
 * systemd CPUQuota), INT_MAX for no quota. Such a limit leaves every CPU
 * in the affinity mask but gives the process only so much CPU time: more
 * workers than that would wait on each other at every all-reduce.
 * DPT_CGROUP_ROOT replaces /sys/fs/cgroup (where cgroupfs is mounted
 * elsewhere, and for the tests). */
static int cgroup_cpus(void)
{
    const char *root = getenv("DPT_CGROUP_ROOT");
    if (!root || !*root)
        root = "/sys/fs/cgroup";
    char buf[4096]; /* /proc/self/cgroup: a line per hierarchy */
    if (read_small("/proc/self/cgroup", buf, sizeof buf) < 0)
        return INT_MAX;
    int best = INT_MAX;
    for (char *line = buf, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0';
        const char *ctrl = c1 + 1, *path = c2 + 1;
        int cpus = INT_MAX;
        char sub[PATH_MAX];
        if (strcmp(line, "0") == 0 && *ctrl == '\0') { /* v2: "0::/path" */
            cpus = tightest_quota(root, path, 1);
        } else { /* v1: "N:cpu,cpuacct:/path", mounted as cpu or cpu,cpuacct */
            char list[256];
            snprintf(list, sizeof list, ",%s,", ctrl);
            if (!strstr(list, ",cpu,"))
                continue;
            const char *mounts[] = {"cpu", "cpu,cpuacct", "cpuacct,cpu"};
            for (size_t i = 0; i < sizeof mounts / sizeof *mounts; i++) {
                if (snprintf(sub, sizeof sub, "%s/%s", root, mounts[i]) >= (int)sizeof sub)
                    continue;
                int n = tightest_quota(sub, path, 0);
                if (n < cpus)
                    cpus = n;
            }
        }
        if (cpus < best)
            best = cpus;
    }
    return best;
}
#endif

int dpt_cpu_count(void)
{
    int n = 0;
#ifdef __linux__
    /* The CPUs this process may run on, not those the machine has: under
     * taskset, a Slurm or container cpuset, or mpirun's binding, a default
     * of one worker per online CPU would oversubscribe the allowed ones. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    /* else more CPUs than a cpu_set_t holds (1024): count them all */
#endif
    if (n < 1) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online < 1 ? 1 : (int)online;
    }
#ifdef __linux__
    int q = cgroup_cpus();
    if (q < n)
        n = q;
#endif
    return n;
}
