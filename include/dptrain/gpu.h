/* dptrain GPUs: which CUDA devices this build can use, and networks that
 * run on one (MATLAB's canUseGPU, gpuDeviceCount and gpuDevice).
 *
 * A network is built on the CPU as always and then moved with
 * dpt_net_to_gpu: its flat buffers (learnables, gradients, batch-norm
 * state) and activations get device copies, and from then on
 * dpt_net_forward, dpt_net_backward, dpt_net_update_state, dpt_train_step
 * and dpt_train_aggregate run on that GPU (the same executor and training
 * step as on the CPU, calling each layer type's CUDA entries):
 * convolutions through cuDNN, the fully connected layer through cuBLAS,
 * the other layer types that have CUDA entries, cross-entropy and the
 * optimizer's update as dptrain's own CUDA kernels. A network with a layer
 * that has no GPU code cannot move (dpt_net_gpu_supported). Inputs
 * (x, targets, dy) still come from host memory: they are copied through a
 * pinned staging ring on a copy stream. Per training step the host sees
 * only the loss and the batch-norm statistics (one small copy); the
 * gradient all-reduce uses NCCL when every worker has its own GPU, else it
 * is staged through pinned host memory and the communicator's all-reduce.
 * The step's forward, loss and backward run as one CUDA graph per
 * minibatch shape where the network allows it (dpt_gpu_options.cuda_graph;
 * docs/gpu.md): replayed, the same bits as launching each kernel.
 *
 * Host mirrors: after dpt_net_to_gpu the network's host buffers are a
 * mirror of the device's. dpt_net_params, dpt_net_grads, dpt_net_state and
 * dpt_net_hash refresh a stale mirror (a synchronous copy, once per change)
 * before they return. Functions that read the tables directly
 * (dpt_net_save, dpt_checkpoint_save, dpt_net_read_learnable, ...) see the
 * mirror as of the last refresh: call dpt_net_sync_to_host first. Writes
 * into the host buffers (dpt_net_write_learnable, dpt_net_load_into,
 * dpt_checkpoint_load, a broadcast into dpt_net_params) reach the device
 * only with dpt_net_sync_to_device, which copies the whole host copy: sync
 * to the host first unless all of it was written. The running batch-norm
 * state is
 * updated on the host and copied to the device each step, so its mirror is
 * never stale.
 *
 * Optimizer: the state of the optimizer given to dpt_train_step,
 * dpt_train_step_optim, dpt_net_sgdm_step or dpt_net_optim_step (the
 * dpt_sgdm's velocity; a dpt_optim's buffers) moves to the device at its
 * first step with this network and stays there; dpt_net_sync_to_host (and
 * dpt_net_to_cpu) copies it back into the optimizer's buffers
 * (opt->velocity, dpt_optim_buffer), so the optimizer must still be alive
 * then, and the next step takes it from the host again. The update
 * (SGDM, Adam, gradient clipping) runs on the device. Before freeing an
 * optimizer that is still in use with a GPU network, call
 * dpt_net_sync_to_host (a new optimizer could get the freed one's address
 * and be taken for it); an optimizer passed after another simply replaces
 * it (the other's device velocity is dropped, its host copy untouched).
 *
 * Exactness: TF32 is off unless asked for (cuBLAS CUBLAS_DEFAULT_MATH,
 * cuDNN CUDNN_FMA_MATH), cuDNN algorithms are chosen among the
 * deterministic ones, and the reductions are deterministic, so a GPU run
 * repeats bit for bit on the same device. GPU and CPU results agree to
 * float32 rounding (tests/test_gpu.c reports the relative errors), not
 * bit for bit: sums are added in another order.
 *
 * Data-parallel runs: one worker per GPU (dpt_gpu_for_worker picks it);
 * every worker's network must be on a GPU, none on the CPU.
 *
 * Builds without CUDA keep every function: dpt_gpu_count returns 0 and
 * dpt_net_to_gpu fails with DPT_ERR_UNSUPPORTED.
 *
 * Ownership: the device memory belongs to the network (dpt_net_free
 * releases it). Thread-safety: as for networks, one thread at a time per
 * network; different networks (workers) may use the same GPU from
 * different threads. */
#ifndef DPTRAIN_GPU_H
#define DPTRAIN_GPU_H

#include "dptrain/comm.h"
#include "dptrain/core.h"
#include "dptrain/net.h"
#include "dptrain/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- devices ---------------------------------------------------------------- */

/* 1 when this build has the CUDA backend (the toolkit and cuDNN were
 * found at build time), else 0. */
DPT_API int dpt_gpu_have_cuda(void);
/* 1 when this build has NCCL for the gradient all-reduce between GPUs. */
DPT_API int dpt_gpu_have_nccl(void);

/* Number of GPUs this process can train on: 0 without CUDA in the build,
 * without a driver or without a device, else the CUDA devices 0..count-1
 * (as CUDA_VISIBLE_DEVICES shows them) that this build has code for
 * (compute capability 9.0 and newer with the default architectures).
 * MATLAB's canUseGPU is dpt_gpu_count() > 0. */
DPT_API int dpt_gpu_count(void);

/* What `dptrain info` lists for a device. */
typedef struct dpt_gpu_info {
    char name[128];            /* "NVIDIA H100 80GB HBM3" */
    size_t memory_bytes;       /* total device memory */
    int cc_major, cc_minor;    /* compute capability */
    int multiprocessors;
} dpt_gpu_info;

/* Describe device `device` (0..dpt_gpu_count()-1). DPT_ERR_UNSUPPORTED
 * without CUDA, DPT_ERR_ARG for a device out of range. */
DPT_API dpt_status dpt_gpu_query(int device, dpt_gpu_info *out);
/* The device's name into buf[n] (always terminated when n > 0). Fails as
 * dpt_gpu_query. */
DPT_API dpt_status dpt_gpu_name(int device, char *buf, size_t n);

/* The GPU a data-parallel worker should use: local backend (threads of
 * one process) rank mod count; MPI the process's rank on its node (from
 * the launcher's environment: OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID,
 * MV2_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID; else the rank) mod count.
 * -1 when there is no usable GPU. comm may be NULL (one worker: 0). */
DPT_API int dpt_gpu_for_worker(const dpt_comm *comm);

/* ---- networks on a GPU -------------------------------------------------------- */

/* How gradients (and synchronised batch-norm sums) are added up across
 * workers whose networks are on GPUs. */
typedef enum dpt_gpu_reduce {
    DPT_GPU_REDUCE_AUTO = 0,  /* NCCL when built with it and every worker has its
                                 own GPU, else staged */
    DPT_GPU_REDUCE_NCCL = 1,  /* NCCL or fail */
    DPT_GPU_REDUCE_STAGED = 2 /* device -> pinned host -> the communicator's
                                 all-reduce -> device (the CPU path's sums) */
} dpt_gpu_reduce;

/* The arithmetic of a GPU network's convolution and fully connected
 * products (`dptrain train --precision`). Everything else (activations
 * between layers, batch norm and its float64 statistics, the loss, the
 * gradients and the master learnables the optimizer updates) is float32
 * in every mode. CPU networks compute in DPT_PRECISION_FP32 only. */
typedef enum dpt_precision {
    DPT_PRECISION_FP32 = 0, /* full float32 products (default; also no TF32) */
    DPT_PRECISION_TF32 = 1, /* TF32 tensor-core products (cuDNN default/tensor-op
                               math, cuBLAS CUBLAS_TF32_TENSOR_OP_MATH): float32
                               in and out, 10-bit mantissas in the products */
    DPT_PRECISION_BF16 = 2  /* convolution and fc operands (x, w, dy) rounded to
                               bfloat16 (nearest even) and multiplied on tensor
                               cores with float32 accumulation; the fc's results
                               stay float32, cuDNN rounds a convolution's y, dx
                               and dw to bfloat16 before they are widened to
                               float32 again. No loss scaling (BF16 has float32's
                               range). */
} dpt_precision;

/* "fp32", "tf32", "bf16" into *out: DPT_OK, else DPT_ERR_ARG with a message
 * listing the names. Any build. */
DPT_API dpt_status dpt_precision_parse(const char *name, dpt_precision *out);
/* The name of p ("fp32", ...), "?" for a value out of range. */
DPT_API const char *dpt_precision_name(dpt_precision p);

typedef struct dpt_gpu_options {
    int version;              /* DPT_GPU_OPTIONS_VERSION */
    int device;               /* CUDA device index, 0 */
    int allow_tf32;           /* 1: let cuBLAS and cuDNN use TF32 tensor cores
                                 (faster, about 1e-3 relative error); 0 (default):
                                 full float32 */
    int find_algorithms;      /* 1: time cuDNN's convolution algorithms at set-up
                                 (cudnnFind*: fastest, but the choice, and so the
                                 bits, may differ between runs); 0 (default):
                                 cuDNN's heuristics, the same choice every run */
    dpt_gpu_reduce reduce;    /* DPT_GPU_REDUCE_AUTO */
    int fuse_bn_relu;         /* 1 (default): a ReLU right after a batch norm is
                                 computed inside it (one pass less each way; the
                                 batch norm's own output is then not kept) */
    /* ---- version 2 (a version-1 struct ends here and gets the defaults) */
    dpt_precision precision;  /* DPT_PRECISION_FP32; TF32 also when allow_tf32 */
    int cuda_graph;           /* 1 (default): dpt_train_step's forward, loss and
                                 backward run as one CUDA graph per minibatch shape
                                 (captured at the shape's second step, replayed
                                 after: the same bits as launching each kernel),
                                 where the network allows it, else eagerly with the
                                 reason in dpt_net_gpu_describe; 0, or the
                                 environment's DPT_CUDA_GRAPH=0: eager launches */
} dpt_gpu_options;

#define DPT_GPU_OPTIONS_VERSION 2
#define DPT_GPU_OPTIONS_INIT                                                                \
    {DPT_GPU_OPTIONS_VERSION, 0, 0, 0, DPT_GPU_REDUCE_AUTO, 1, DPT_PRECISION_FP32, 1}

/* DPT_OK when every layer of net has GPU code for its configuration (each
 * layer type's CUDA entries and their supports check), else
 * DPT_ERR_UNSUPPORTED with a message naming the first layer that has none:
 * "<spec>:<line>: layer '<name>' (<type>) has no GPU code[ for this
 * configuration: <why>]". Reads the layer table only, so it answers in any
 * build, with or without CUDA or a device; dpt_net_to_gpu fails the same
 * way, and `dptrain train --device auto` trains on CPU workers instead. */
DPT_API dpt_status dpt_net_gpu_supported(const dpt_net *net);

/* Move net to GPU `device` with the default options (see
 * dpt_net_to_gpu_opts). */
DPT_API dpt_status dpt_net_to_gpu(dpt_net *net, int device);
/* Move net to the GPU opt->device: allocate device buffers for the
 * learnables, gradients, state and activations of max_batch observations,
 * copy the learnables and state there, and choose each convolution's cuDNN
 * algorithms. Not collective (the device all-reduce is set up at the first
 * collective step). A network already on a GPU is moved back first (its
 * values synchronised). DPT_ERR_UNSUPPORTED without CUDA, for a device
 * this build cannot use, or for a layer type or key the GPU code lacks
 * (the message names it); DPT_ERR_NOMEM when the device is full. On
 * failure the network stays on the CPU, unchanged. */
DPT_API dpt_status dpt_net_to_gpu_opts(dpt_net *net, const dpt_gpu_options *opt);
/* Bring net back to the CPU: copy learnables, gradients and the bound
 * optimizer's velocity to the host and release the device buffers. Does
 * nothing for a CPU network. */
DPT_API dpt_status dpt_net_to_cpu(dpt_net *net);
/* The CUDA device the network runs on, or -1 for the CPU. */
DPT_API int dpt_net_device(const dpt_net *net);
/* Copy learnables, gradients and the bound optimizer's velocity from the
 * device into the host buffers (dpt_net_params, dpt_net_grads,
 * opt->velocity) and unbind the optimizer (the next step uploads its
 * velocity again). Needed before reading the tables directly (saving a
 * model or checkpoint). Does nothing for a CPU network. */
DPT_API dpt_status dpt_net_sync_to_host(dpt_net *net);
/* Copy the host buffers (learnables, state) to the device after writing
 * into them; the next step takes the optimizer's velocity from
 * opt->velocity too. Does nothing for a CPU network. */
DPT_API dpt_status dpt_net_sync_to_device(dpt_net *net);
/* One SGDM update of the network's learnables from its gradients where the
 * network lives: on the GPU (the velocity moves to the device, see above)
 * or, for a CPU network, dpt_sgdm_step. For custom loops that call
 * dpt_net_backward and dpt_train_aggregate themselves. */
DPT_API dpt_status dpt_net_sgdm_step(dpt_net *net, dpt_sgdm *opt);
/* dpt_net_sgdm_step for any optimizer of the dpt_optim interface (SGDM,
 * Adam, with clipping): its state buffers move to the device at its first
 * step, as the velocity above, and come back with dpt_net_sync_to_host. */
DPT_API dpt_status dpt_net_optim_step(dpt_net *net, dpt_optim *opt);
/* A text for logs: device, options, the cuDNN algorithms chosen per
 * convolution and how gradients are reduced. "cpu" for a CPU network.
 * Valid until the network changes device or is freed. */
DPT_API const char *dpt_net_gpu_describe(const dpt_net *net);

#ifdef __cplusplus
}
#endif
#endif
