/* dptrain core: status codes, per-thread error messages, tensors, RNG.
 *
 * Ownership: a dpt_tensor made by dpt_tensor_new owns its storage and is
 * released with dpt_tensor_free; a view (dpt_tensor_view) borrows storage and
 * must not outlive it. dpt_tensor_free(NULL) does nothing.
 * Thread-safety: every function here is safe to call from several threads on
 * distinct objects; the last-error message is per thread. */
#ifndef DPTRAIN_CORE_H
#define DPTRAIN_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DPT_BUILDING_LIBRARY) && defined(__GNUC__)
#define DPT_API __attribute__((visibility("default")))
#else
#define DPT_API
#endif

/* ---- status ------------------------------------------------------------ */

/* Every fallible call returns a dpt_status; DPT_OK (0) is success. */
typedef enum dpt_status {
    DPT_OK = 0,
    DPT_ERR_ARG,      /* a bad argument or option from the caller */
    DPT_ERR_NOMEM,    /* an allocation failed */
    DPT_ERR_IO,       /* a file could not be opened, read or written */
    DPT_ERR_FORMAT,   /* a file or text is malformed (spec, IDX, image, safetensors) */
    DPT_ERR_SHAPE,    /* shapes do not fit together */
    DPT_ERR_COMM,     /* a collective failed or a peer worker failed */
    DPT_ERR_TIMEOUT,  /* a collective waited past its limit */
    DPT_ERR_NUMERIC,  /* a value became NaN or infinite */
    DPT_ERR_UNSUPPORTED, /* a feature this build lacks (MPI, CUDA, ...) */
    DPT_ERR_INTERRUPTED  /* stopped on request (dpt_fit_config.stop) */
} dpt_status;

/* The message of the last failure on this thread ("" if none). The pointer
 * stays valid until the next failing call on the same thread. */
DPT_API const char *dpt_last_error(void);

/* A short fixed name for a status ("I/O error", ...). */
DPT_API const char *dpt_status_str(dpt_status s);

/* Record a failure message for this thread and return `s`, so library code
 * can write `return dpt_fail(DPT_ERR_IO, "%s: cannot open", path);`. */
DPT_API dpt_status dpt_fail(dpt_status s, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clear this thread's last-error message. */
DPT_API void dpt_clear_error(void);

/* ---- memory ------------------------------------------------------------ */

/* 64-byte aligned allocation (zeroed). NULL on failure or when bytes == 0
 * (dpt_free(NULL) is fine). Memory from dpt_alloc is freed by dpt_free. */
DPT_API void *dpt_alloc(size_t bytes);
DPT_API void dpt_free(void *p);

/* ---- tensor ------------------------------------------------------------ */

#define DPT_MAX_DIMS 4

/* A float32 tensor, batch-first (N, C, H, W) row-major, up to 4 dimensions.
 * Storage is 64-byte aligned when owned. */
typedef struct dpt_tensor {
    int ndim;
    int shape[DPT_MAX_DIMS];
    size_t n;      /* number of elements: product of shape[0..ndim) */
    float *data;
    int owns;      /* 1: data freed by dpt_tensor_free */
} dpt_tensor;

/* Allocate a zeroed tensor of the given shape. *out is owned by the caller. */
DPT_API dpt_status dpt_tensor_new(int ndim, const int *shape, dpt_tensor **out);
/* A view over borrowed storage (no allocation of data; the struct itself is
 * returned by value). */
DPT_API dpt_tensor dpt_tensor_view(float *data, int ndim, const int *shape);
DPT_API void dpt_tensor_free(dpt_tensor *t);
/* Elements in `shape[0..ndim)`. */
DPT_API size_t dpt_shape_count(int ndim, const int *shape);

/* ---- BLAS ------------------------------------------------------------ */

/* Threads the BLAS may use per call (process-wide setting of OpenBLAS).
 * Data-parallel runs choose workers × threads <= cores. */
DPT_API void dpt_blas_set_threads(int n);
DPT_API int dpt_blas_threads(void);
/* Number of CPUs this process may run on: its affinity mask (as taskset,
 * Slurm, container cpusets and mpirun's binding set it) where the system
 * has one, else the online CPUs; at most the CPU time a cgroup CPU quota
 * allows (docker --cpus, Kubernetes CPU limits, systemd CPUQuota; cgroup
 * v1 or v2, quota / period rounded up; DPT_CGROUP_ROOT replaces
 * /sys/fs/cgroup). The default worker and thread counts. */
DPT_API int dpt_cpu_count(void);

/* Check the DPT_* environment variables the library reads (DPT_SPIN_US,
 * DPT_COMM_TIMEOUT_MS, DPT_FUSION, DPT_KERNELS, DPT_CGROUP_ROOT,
 * DPT_MAX_NET_MEMORY; unset or empty means the default). DPT_ERR_ARG, naming the variable and the values
 * it accepts, for the first one set to something the library cannot use;
 * the places that read them fall back to the default instead (only
 * DPT_COMM_TIMEOUT_MS also fails dpt_spmd_run, and DPT_MAX_NET_MEMORY
 * building a network), so call this at start to
 * hear about a mistyped value. The dptrain CLI does. */
DPT_API dpt_status dpt_env_check(void);

/* ---- RNG --------------------------------------------------------------- */

/* PCG32 (O'Neill's PCG-XSH-RR 64/32). Same seed and stream, same numbers on
 * every platform. The struct is plain data: copy it to save the stream,
 * copy it back to restore. */
typedef struct dpt_rng {
    uint64_t state;
    uint64_t inc; /* odd: selects the stream */
} dpt_rng;

/* Start generator r at `seed` on stream `stream` (2^63 independent
 * streams; the same pair always gives the same sequence). */
DPT_API void dpt_rng_seed(dpt_rng *r, uint64_t seed, uint64_t stream);
/* The next 32 random bits. */
DPT_API uint32_t dpt_rng_u32(dpt_rng *r);
/* Uniform integer in [0, bound) without modulo bias; bound > 0. */
DPT_API uint32_t dpt_rng_below(dpt_rng *r, uint32_t bound);
/* Uniform float in [0, 1) with 24 random bits. */
DPT_API float dpt_rng_uniform(dpt_rng *r);
/* Standard normal (Box-Muller, float64 internally). */
DPT_API float dpt_rng_normal(dpt_rng *r);
/* Fisher-Yates permutation of idx[0..n) in place. */
DPT_API void dpt_rng_shuffle(dpt_rng *r, uint32_t *idx, size_t n);

/* Counter-based randomness, for draws that must not depend on the number of
 * workers (dropout masks, data augmentation): a value is a pure function of
 * where it is used, so worker j drawing for observation k of the global
 * minibatch gets what one worker on the whole minibatch gets. Reproducible
 * in any language with 64-bit unsigned arithmetic:
 *   mix(z): z += 0x9e3779b97f4a7c15; z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
 *           z = (z ^ (z >> 27)) * 0x94d049bb133111eb; return z ^ (z >> 31)
 *   key  = mix(mix(mix(mix(mix(seed) ^ epoch) ^ iteration) ^ stream) ^ obs)
 *   u(j) = (mix(key ^ j) >> 40) * 2^-24                              */

/* The SplitMix64 finaliser `mix` above. */
DPT_API uint64_t dpt_mix64(uint64_t z);
/* The key of one observation's draws: seed (the network's build seed),
 * epoch, iteration, stream (dropout: the layer's node index; augmentation:
 * 0x61756700), obs (the observation's position in the global minibatch). */
DPT_API uint64_t dpt_rng_key(uint64_t seed, uint64_t epoch, uint64_t iteration, uint64_t stream,
                             uint64_t obs);
/* u(j): the j-th uniform value in [0, 1) of a key, 24 random bits (exact in
 * float). */
DPT_API float dpt_rng_key_uniform(uint64_t key, uint64_t j);

#ifdef __cplusplus
}
#endif
#endif
