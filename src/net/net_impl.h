/* Internals of dpt_net shared by the network code and the layer types.
 *
 * A layer type is a table of functions (layer_type); each type keeps its own
 * small struct in dpt_layer.priv. Layers see the flat buffers through views
 * (p, g, s) set once the network is built. */
#ifndef DPT_NET_IMPL_H
#define DPT_NET_IMPL_H

#include "dptrain/net.h"
#include "dptrain/optim.h"
#include "ops/ops.h"

#define DPT_NAME_MAX 64

typedef struct dpt_layer dpt_layer;

/* A batch norm whose passes over the activations are done by the
 * convolutions next to it (net.c plan_fusion): the batchnorm layer fills
 * `a` (mean, scale, shift in forward; kf, ka, kb in backward), the convs
 * apply it while packing their inputs. */
typedef struct bn_fusion {
    dpt_bn_apply a;  /* arrays point into a buffer owned by the network */
    int out_virtual; /* the conv above normalises on the fly: no output written */
    int dx_virtual;  /* the conv below applies the backward: no input gradient written */
    int into_add;    /* with out_virtual: the add above applies it and takes xg (graph.c) */
    int dx_split;    /* its input is a concat's: dx goes straight to the concat's inputs'
                        gradients, the concat has no backward (graph.c concat_bn) */
    /* With out_virtual, the conv above also adds up the batch norm's
     * backward sums while it writes the gradient: dpt_bn_grad_sums' [2 C]. */
    double *xg;
    /* graph.c plan_stem_pool: the max pool after this batch norm (2x2,
     * stride 2) may leave its dx unwritten, the conv before it (a first
     * layer, with no dx of its own) forming its gradient from the pool's:
     * pool_g and pool_idx, set by the pool's backward for that step
     * (NULL: dx was written as usual). */
    int pool_dy;
    const float *pool_g;
    const unsigned char *pool_idx;
} bn_fusion;

#define DPT_MAX_INPUTS 32   /* inputs of one node (add/concat) */

/* Kinds of state a layer declares (net_declare): learnables (gradients
 * all-reduced); pooled state (batch-norm statistics, combined across
 * workers, identical on all). Carried state (a recurrent layer's hidden
 * state per stream: per worker, never pooled) is not declared here: it
 * lives in the layer's own buffers (layer_rnn.c), outside the state table
 * and model files, reached through the reset/carry_* hooks; checkpoints
 * take it through dpt_net_carry_get/set. DPT_KIND_CARRIED stays for a
 * table entry that is per worker and not hashed; no type uses it now. */
enum { DPT_KIND_LEARN = 0, DPT_KIND_POOLED = 1, DPT_KIND_CARRIED = 2 };

/* What a layer type does with a sequence input (layer_type.seq_mode). */
enum {
    DPT_SEQ_REFUSE = 0,   /* fails at build (conv, batchnorm, pools) */
    DPT_SEQ_PER_STEP = 1, /* runs on n*T rows of [C,1,1]: the executor passes n*T */
    DPT_SEQ_OWN = 2       /* takes n observations and reads net->steps itself
                             (dropout, lstm, gru); its infer sets l->seq */
};

typedef struct layer_type {
    const char *name;
    int min_inputs, max_inputs;  /* input layers 0,0; add 2,DPT_MAX_INPUTS;
                                    concat 1,DPT_MAX_INPUTS; others 1,1 */
    int seq_mode;                /* DPT_SEQ_*: on a sequence input */
    /* Allocate l->priv with defaults. */
    dpt_status (*create)(dpt_layer *l);
    /* Apply one key=value from the spec; unknown key or bad value fails
     * (the caller adds source:line to the message). from= never reaches it. */
    dpt_status (*set)(dpt_layer *l, const char *key, const char *value);
    /* From l->n_in and l->ins[k][3] ([C,H,W] of input k; l->in is a copy
     * of ins[0]) compute l->out[3] and declare tables with net_declare();
     * fails with a message on impossible shapes. */
    dpt_status (*infer)(dpt_net *net, dpt_layer *l);
    /* Initialise this layer's learnables (l->p) and state (l->s). */
    void (*init)(dpt_layer *l, dpt_rng *rng);
    /* Scratch floats needed for a batch of n (net->work, shared). */
    size_t (*work_floats)(const dpt_layer *l, int n);
    /* x[k]: input k, [n, ins[k]] floats; y: [n, out]. */
    dpt_status (*forward)(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                          int n, dpt_mode mode);
    /* dx[k]: gradient for input k, OVERWRITTEN (the executor sums over a
     * node's consumers itself); dx[k] NULL when input k needs none. */
    dpt_status (*backward)(dpt_net *net, dpt_layer *l, const float *const *x,
                           const float *y, const float *dy, float *const *dx, int n);
    /* Spec text of the layer's keys (for dpt_net_spec), appended to buf;
     * keys only: the executor adds from= itself. */
    void (*describe)(const dpt_layer *l, char *buf, size_t cap);
    /* Pooled state (NULL: none). pool_pack writes pool_doubles(l) values
     * that are summed over workers (weighted by each worker's observation
     * count); pool_apply receives the sums and the total observation count
     * and updates l->s. */
    size_t (*pool_doubles)(const dpt_layer *l);
    void (*pool_pack)(const dpt_layer *l, int n_local, double *buf);
    void (*pool_apply)(dpt_layer *l, const double *buf, double n_total, int synced);
    /* Carried state (recurrent layers): reset this layer's carried state
     * (all streams). NULL: none. */
    void (*reset)(dpt_layer *l);
    /* Layer-owned buffers sized by net->max_batch and net->cap_steps
     * (recurrent layers: the forward's saved values, carried state), in
     * floats for the memory bound (keep_floats), and (re)allocated by
     * setup at build and when the steps grow. NULL: none. */
    size_t (*keep_floats)(const dpt_net *net, const dpt_layer *l);
    dpt_status (*setup)(dpt_net *net, dpt_layer *l);
    /* Choose kernels for batches of up to net->max_batch (conv: the
     * algorithm, by measurement or from the plan cache; conv_plan.c).
     * Called once the fusion and the buffers are planned and the memory
     * bound checked (net_plan_kernels), before the scratch is sized; never
     * during a step.
     * plan_info fills a dpt_layer_plan for reports (0: nothing to say).
     * NULL: nothing to choose. */
    dpt_status (*plan)(dpt_net *net, dpt_layer *l);
    int (*plan_info)(const dpt_layer *l, dpt_layer_plan *out);
    /* Carried state per stream slot (floats), and slots [0, n) copied to
     * (get) or from (set) buf, slot i at buf + i*stride. NULL: none. */
    size_t (*carry_floats)(const dpt_layer *l);
    void (*carry_copy)(dpt_layer *l, int n, float *buf, size_t stride, int set);
    /* CUDA entries (NULL: no GPU code for this type). gpu_supports returns
     * NULL when this layer's configuration runs on the GPU, else a short
     * reason ("dilation > 1"). gpu_forward/gpu_backward take device
     * pointers with the same meaning as forward/backward. */
    const char *(*gpu_supports)(const dpt_layer *l);
    dpt_status (*gpu_setup)(dpt_net *net, dpt_layer *l);   /* after the net moved */
    void (*gpu_release)(dpt_layer *l);
    dpt_status (*gpu_forward)(dpt_net *net, dpt_layer *l, const float *const *x, float *y,
                              int n, dpt_mode mode);
    dpt_status (*gpu_backward)(dpt_net *net, dpt_layer *l, const float *const *x,
                               const float *y, const float *dy, float *const *dx, int n);
    void (*free)(dpt_layer *l);
} layer_type;

struct dpt_layer {
    const layer_type *type;
    char name[DPT_NAME_MAX];
    int line;              /* spec line, for messages */
    int index;             /* node index in the spec (0: the input) */
    int n_in;              /* inputs (0 for the input layer) */
    int inputs[DPT_MAX_INPUTS];   /* their node indices, each < index */
    int ins[DPT_MAX_INPUTS][3];   /* [C, H, W] of each input */
    int in[3], out[3];     /* [C, H, W] per observation (per time step when seq) */
    int seq;               /* 1: the output is a sequence, [n][T][out] (T = net->steps) */
    void *priv;
    void *gpu_priv;        /* the GPU entries' own struct (gpu_setup/gpu_release) */
    size_t first_learnable, n_learnables; /* entries in the learnables table */
    size_t first_state, n_state;
    size_t n_learn_values, n_state_values; /* floats in those entries (memory check) */
    float *p, *g, *s;      /* views: this layer's learnables, gradients, state */
    /* Fusion, planned once at build (net.c plan_fusion, on edges whose
     * producer has one consumer; none with the "generic" kernel set): */
    int fused;             /* relu applied by the batchnorm (or add) below it: forward
                              and backward skip it, its output is that layer's */
    int relu_after;        /* batchnorm, add: applies the ReLU above it */
    double *sums_out;      /* conv: also write Σy, Σy² per channel [2 C] of a TRAIN
                              forward here, for the batchnorm above it */
    double *sums_in;       /* batchnorm: those sums, filled by the conv below */
    bn_fusion *bnf;        /* batchnorm: the record it fills for the convs around it */
    bn_fusion *in_bnf;     /* conv: its input is the output of node in_act with in_bnf applied */
    int in_act;            /* (also, graph.c add_pool: an add and the global average pooling
                              it computes name each other here) */
    bn_fusion *out_bnf;    /* conv: its output gradient comes through out_bnf's backward */
};

/* The executor's plan for one node (net.c plan_graph): buffer ids into
 * net->buf (-1: none). Activations: act. Backward: the gradient at the
 * output lives in group grp (several nodes share one group where fusion
 * passes a gradient through); input k's gradient goes to dx_buf[k], and
 * when acc[k] is set dx_buf[k] is a scratch buffer added afterwards into
 * the buffer of group dx_grp[k] (fan-out: a later consumer in reverse
 * order). */
typedef struct node_plan {
    int act;               /* buffer of this node's output; -1: not materialised */
    int grp;               /* gradient group of this node's output; -1: none */
    int skip_bwd;          /* fused relu: no backward of its own */
    int skip_fwd;          /* computed by another node (graph.c add_pool) */
    /* [n_in] each, inside net->plan_ints: */
    int *x_act;            /* buffer read as input k (fusion may redirect) */
    int *dx_buf;           /* -1: no gradient for input k */
    int *acc;
    int *dx_grp;
} node_plan;

struct dpt_net {
    char *spec;            /* normalised spec text (owned) */
    char source[256];
    int max_batch;
    int n_classes;         /* fills outputs=classes and size/outputs=vocab; 0 when unknown */
    /* Sequences (dpt_net_set_steps): steps T of the next forwards, the
     * steps the buffers hold (>= steps; 1 for a non-sequence network), the
     * valid steps of each observation ([len_n], NULL: all T; owned), and
     * where the padding is. stateful: recurrent layers start from and keep
     * their carried state. */
    int steps, cap_steps;
    int *len, len_n, len_cap;
    int pad_left;
    int stateful;
    int n_layers;
    dpt_layer *layers;     /* [n_layers] */

    dpt_param_info *learn;   /* [n_learn] grown as declared (owned) */
    size_t n_learn, cap_learn;
    dpt_param_info *state_tab; /* [n_state_tab] (owned) */
    unsigned char *state_kind; /* [n_state_tab] DPT_KIND_POOLED or _CARRIED (owned) */
    size_t n_state_tab, cap_state_tab;
    char *names;           /* storage for table names (owned) */
    size_t names_used, names_cap;

    size_t n_params, n_state;
    float *params, *grads, *state; /* flat buffers (owned) */

    /* Buffers planned once (plan_graph): n_buf buffers of buf_floats[b]
     * floats; buf[b] the current device's pointers (host: owned, allocated
     * by the device ops). acts[i] = buf[plan[i].act] (NULL: none). */
    int n_buf;
    size_t *buf_floats;
    float **buf;
    node_plan *plan;       /* [n_layers] (owned) */
    int *plan_ints;        /* the plan's per-input arrays (owned) */
    int n_grad_bufs;       /* buffers holding gradients (tests: reuse) */
    int *grp_buf;          /* [n_grp] buffer of each gradient group */
    int n_grp;
    int *n_consumers;      /* [n_layers] layers reading each node (owned) */
    int *sole_consumer;    /* [n_layers] the last of them (inside n_consumers' block) */
    const struct net_dev *dev; /* where the buffers live and layers run */
    float **acts;          /* acts[i]: output of layer i [max_batch, out] (views) */
    float *dout;           /* [max_batch, outputs] loss gradient for callers */
    double *pool;          /* scratch for dpt_net_update_state */
    size_t n_pool;
    float *work;           /* shared scratch */
    size_t work_floats;
    int last_n;            /* observations in the last TRAIN forward */
    dpt_mode last_mode;

    dpt_comm *sync_bn;     /* non-NULL: synchronised batch norm (borrowed) */
    struct net_gpu *gpu;   /* non-NULL: the network runs on a GPU (net_gpu.c) */
    struct exec_saved *host_exec; /* while on a GPU: the CPU executor's plan, buffers
                              and fusion, put back when it leaves (net_gpu.c, owned) */
    double *fuse_sums;     /* storage of the conv -> batchnorm sums (owned) */
    bn_fusion *fuse_bn;    /* batch-norm fusion records (owned) */
    float *fuse_buf;       /* their arrays (owned) */
    double *prof;          /* non-NULL: thread CPU seconds per layer added up, forward in
                              [0, n_layers), backward in [n_layers, 2 n_layers)
                              (borrowed; set by bench/step_bench.c) */

    uint64_t seed;         /* the build seed */
    long epoch, iteration; /* dpt_net_set_iteration (dropout masks) */
    long obs_offset;       /* this worker's first observation in the global
                              minibatch (dpt_net_set_obs_offset) */

    char **meta;           /* key, value, key, value ... from the loaded file (owned) */
    size_t n_meta;
};

/* Append an entry of the given kind (DPT_KIND_*) to the learnables or
 * state table of layer l. A layer declares its learnables, then its state. */
dpt_status net_declare(dpt_net *net, dpt_layer *l, int kind, const char *param, int ndim,
                       const int *shape);

/* ---- the device switch ----------------------------------------------------------
 * Everything the executor (net.c) does to buffers and layers goes through
 * net->dev: buffers are allocated, zeroed, added, copied and moved to and
 * from the host by it, and each layer's forward/backward is called through
 * it. net_dev_cpu uses host memory and the layer types' forward/backward;
 * a GPU device supplies the same operations with device memory and the
 * gpu_forward/gpu_backward entries, re-allocates net->buf for the planned
 * sizes (net->buf_floats) and the executor runs unchanged. */
typedef struct net_dev {
    const char *name;
    dpt_status (*alloc)(dpt_net *net, size_t n_floats, float **out);
    void (*release)(dpt_net *net, float *p);
    void (*zero)(dpt_net *net, float *p, size_t n);
    void (*add)(dpt_net *net, float *dst, const float *src, size_t n);  /* dst += src */
    void (*copy)(dpt_net *net, float *dst, const float *src, size_t n); /* on the device */
    dpt_status (*upload)(dpt_net *net, float *dst, const float *host, size_t n);
    dpt_status (*download)(dpt_net *net, float *host, const float *src, size_t n);
    /* 1 when x[n] (device) holds no NaN or infinity. */
    int (*all_finite)(dpt_net *net, const float *x, size_t n);
    dpt_status (*forward)(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                          dpt_mode mode);
    dpt_status (*backward)(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                           const float *dy, float *const *dx, int n);
} net_dev;

extern const net_dev net_dev_cpu;

/* ---- the graph (graph.c) -----------------------------------------------------------
 * net_check_graph: consumers of every node; an output no one reads (but the
 * last) fails naming it. net_plan: fusion over single-consumer edges and the
 * buffer plan (net->plan, buf_floats, grp_buf); no large allocation.
 * net_alloc_buffers: the planned buffers through net->dev, and acts[].
 * net_free_plan frees all of it. net_replan(net, fusion) plans again with
 * (1) or without (0) the CPU fusion, or as at build (-1): it frees the
 * buffers through the current net->dev and clears every layer's fusion
 * fields; the caller then sets net->dev and calls net_alloc_buffers (a
 * device without the fused kernels plans with 0). */
dpt_status net_check_graph(dpt_net *net);
dpt_status net_plan(dpt_net *net);
/* The layers' kernel choices (layer_type.plan; conv: timed or from the
 * plan cache), once the fusion and buffers are planned; net_replan makes
 * them again. On a built network, grows the scratch a new choice needs. */
dpt_status net_plan_kernels(dpt_net *net);
/* The buffer plan alone, for the fusion fields as they are (net_gpu.c plans
 * a GPU network's buffers with its own fusion: bn+relu only). */
dpt_status net_plan_buffers(dpt_net *net);
dpt_status net_replan(dpt_net *net, int fusion);
void net_plan_floats(const dpt_net *net, double *acts, double *grads);
dpt_status net_alloc_buffers(dpt_net *net);
void net_free_buffers(dpt_net *net);
void net_free_plan(dpt_net *net);
/* For tests: gradient and scratch buffers in the plan; the gradient at node
 * i's output after a backward (NULL where none is kept, or reused since). */
int net_n_grad_buffers(const dpt_net *net);
const float *net_node_grad(const dpt_net *net, int node);

/* Helpers for layer set() functions: parse a positive int / float value. */
/* A spec value: an integer in [min, 10^6] / in [min, max]; n sizes "AxB..."
 * each in [1, max]. Errors say the value, the key and the range. */
/* 1 when `name` may name a layer (see net.c). */
int net_good_name(const char *name);
dpt_status parse_int(const char *key, const char *value, int min, int *out);
dpt_status parse_int_max(const char *key, const char *value, int min, int max, int *out);
dpt_status parse_dims(const char *key, const char *value, int n, int max, int *out);

/* Bounds on a network from a spec or a model file, checked before its
 * buffers are allocated: values in one layer's output per image (the
 * kernels index with int), and bytes for all buffers at the network's
 * minibatch: DPT_MAX_NET_MEMORY (bytes, or with K, M, G, T), default 8 GiB
 * or half the physical memory where that is less. *status (if not NULL)
 * receives an error for a malformed DPT_MAX_NET_MEMORY. */
#define DPT_MAX_LAYER_VALUES (1 << 27)
/* Layers of one network: far above any real one (ResNet-152 has about
 * 500), low enough that parsing a hostile spec stays fast. */
#define DPT_MAX_LAYERS 10000

/* dpt_net_from_spec with a check run after the shapes and tables are known
 * and before any buffer is allocated (net->source names the spec); its
 * error fails the build. */
dpt_status net_from_spec_checked(const char *text, const char *source, int n_classes,
                                 int max_batch, uint64_t seed,
                                 dpt_status (*check)(const dpt_net *net, void *ctx), void *ctx,
                                 dpt_net **out);
double dpt_net_memory_budget(dpt_status *status);
dpt_status parse_float(const char *key, const char *value, float *out);

/* Layer types (one file each). */
extern const layer_type dpt_layer_input;
extern const layer_type dpt_layer_conv;
extern const layer_type dpt_layer_batchnorm;
extern const layer_type dpt_layer_relu;
extern const layer_type dpt_layer_fc;
extern const layer_type dpt_layer_softmax;
extern const layer_type dpt_layer_add;     /* layer_merge.c */
extern const layer_type dpt_layer_concat;
extern const layer_type dpt_layer_maxpool;       /* layer_pool.c */
extern const layer_type dpt_layer_avgpool;
extern const layer_type dpt_layer_globalavgpool;
extern const layer_type dpt_layer_leakyrelu;     /* layer_act.c */
extern const layer_type dpt_layer_sigmoid;
extern const layer_type dpt_layer_tanh;
extern const layer_type dpt_layer_dropout;       /* layer_dropout.c */
extern const layer_type dpt_layer_seqinput;      /* layer_rnn.c */
extern const layer_type dpt_layer_lstm;
extern const layer_type dpt_layer_gru;

/* ---- Layer configuration for the CUDA entries (layer_gpu.c) -----------------
 * Read from each type's own struct by the type's file, so the GPU code
 * never parses describe() text. */
typedef struct conv_geom {
    int kh, kw, stride, pad, dilation, groups, bias;
} conv_geom;
conv_geom conv_layer_geom(const dpt_layer *l);
void bn_layer_conf(const dpt_layer *l, float *epsilon, float *decay);
/* The batch mean and biased variance ([C] float64 each) of the last TRAIN
 * forward, which pool_pack reads: a GPU batch norm's statistics are copied
 * there once per step (net_gpu_stats_pull). */
void bn_layer_batch(dpt_layer *l, double **mean, double **var);
float leaky_layer_alpha(const dpt_layer *l);
/* lstm/gru: units H and output=last (1) or sequence (0). */
void rnn_layer_conf(const dpt_layer *l, int *units, int *last);
/* maxpool/avgpool: the window geometry (n as last set); 1 for max. */
int pool_layer_desc(const dpt_layer *l, dpt_pool2d_desc *d);
/* Dropout's mask arguments (dpt_dropout_apply). dropout_layer_begin does
 * the forward's bookkeeping as the CPU forward (kept for the backward) and
 * returns 1 when this forward drops, 0 when it is the identity (PREDICT,
 * p = 0); dropout_layer_last gives what the last forward used. */
typedef struct dropout_key {
    float p;
    uint64_t seed, epoch, iteration, stream, obs0;
} dropout_key;
int dropout_layer_begin(const dpt_net *net, dpt_layer *l, dpt_mode mode, dropout_key *k);
int dropout_layer_last(const dpt_layer *l, dropout_key *k);

/* The CUDA entries per type (layer_gpu.c). gpu_supports is host code in
 * every build; the others exist only with CUDA, and the tables name them
 * through GPU_ENTRY (NULL without CUDA). */
#ifdef DPT_HAVE_CUDA
#define GPU_ENTRY(f) f
#else
#define GPU_ENTRY(f) NULL
#endif
const char *gpu_supports_always(const dpt_layer *l);
const char *conv_gpu_supports(const dpt_layer *l);
#define GPU_FWD_ARGS dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n, \
                     dpt_mode mode
#define GPU_BWD_ARGS dpt_net *net, dpt_layer *l, const float *const *x, const float *y, \
                     const float *dy, float *const *dx, int n
dpt_status conv_gpu_setup(dpt_net *net, dpt_layer *l);
void conv_gpu_release(dpt_layer *l);
dpt_status conv_gpu_forward(GPU_FWD_ARGS);
dpt_status conv_gpu_backward(GPU_BWD_ARGS);
dpt_status bn_gpu_setup(dpt_net *net, dpt_layer *l);
void bn_gpu_release(dpt_layer *l);
dpt_status bn_gpu_forward(GPU_FWD_ARGS);
dpt_status bn_gpu_backward(GPU_BWD_ARGS);
dpt_status relu_gpu_forward(GPU_FWD_ARGS);
dpt_status relu_gpu_backward(GPU_BWD_ARGS);
dpt_status fc_gpu_forward(GPU_FWD_ARGS);
dpt_status fc_gpu_backward(GPU_BWD_ARGS);
dpt_status softmax_gpu_forward(GPU_FWD_ARGS);
dpt_status softmax_gpu_backward(GPU_BWD_ARGS);
dpt_status add_gpu_forward(GPU_FWD_ARGS);
dpt_status add_gpu_backward(GPU_BWD_ARGS);
dpt_status concat_gpu_forward(GPU_FWD_ARGS);
dpt_status concat_gpu_backward(GPU_BWD_ARGS);
dpt_status leaky_gpu_forward(GPU_FWD_ARGS);
dpt_status leaky_gpu_backward(GPU_BWD_ARGS);
dpt_status sigmoid_gpu_forward(GPU_FWD_ARGS);
dpt_status sigmoid_gpu_backward(GPU_BWD_ARGS);
dpt_status tanh_gpu_forward(GPU_FWD_ARGS);
dpt_status tanh_gpu_backward(GPU_BWD_ARGS);
dpt_status dropout_gpu_forward(GPU_FWD_ARGS);
dpt_status dropout_gpu_backward(GPU_BWD_ARGS);
dpt_status pool_gpu_forward(GPU_FWD_ARGS);
dpt_status pool_gpu_backward(GPU_BWD_ARGS);
dpt_status gap_gpu_forward(GPU_FWD_ARGS);
dpt_status gap_gpu_backward(GPU_BWD_ARGS);

/* ---- A network on a GPU (net_gpu.c) --------------------------------------------
 * Device memory, host mirrors and the device side of the executor and the
 * training step. Without CUDA net->gpu stays NULL and none of these is
 * reached (they exist as stubs). */
struct gpu_ctx;
struct dpt_gpu_comm;
/* For the CUDA entries: the context; whether to time cuDNN algorithms; the
 * device views of l's learnables, gradients and state (NULL: none); a line
 * for dpt_net_gpu_describe; the device all-reduce over comm (made,
 * collectively, on first use); n doubles of the per-step statistics buffer
 * (*dev) that reach host[n] with its one copy to the host per step
 * (net_gpu_stats_pull; consecutive reservations are adjacent). */
struct gpu_ctx *net_gpu_ctx(const dpt_net *net);
int net_gpu_find_algorithms(const dpt_net *net);
void net_gpu_views(const dpt_net *net, const dpt_layer *l, float **p, float **g, float **s);
void net_gpu_note(dpt_net *net, const char *fmt, ...);
dpt_status net_gpu_comm(dpt_net *net, dpt_comm *comm, struct dpt_gpu_comm **out);
dpt_status net_gpu_stats_reserve(dpt_net *net, size_t n, double *host, double **dev);

/* For the executor (net.c, which reaches the device through net->dev): the
 * network's output (device, n observations) to a pinned host copy in *y,
 * checked for non-finite values (naming the first layer that has them);
 * dy [n floats] from the host into the device, *dev pointing at it. */
dpt_status net_gpu_get_output(dpt_net *net, const float *dev, int n, const float **y);
dpt_status net_gpu_put_dy(dpt_net *net, const float *dy, size_t n, const float **dev);
/* After a backward: marks the gradient mirror stale and returns the first
 * failure of the device's void operations (net_dev.add, .zero, .copy)
 * since the last call. */
dpt_status net_gpu_after_backward(dpt_net *net);
dpt_status net_gpu_name_nonfinite(dpt_net *net, int n, const char *otherwise);

/* For the training step: the loss of the n observations (targets t from
 * the host) and its gradient at the logits weighted by w, on the device;
 * the loss (× scale) reaches the host at net_gpu_stats_pull, with the
 * batch-norm statistics in one copy; *dlogits is the device gradient. */
dpt_status net_gpu_loss_xent(dpt_net *net, const float *t, int n, float w, double scale,
                             const float **dlogits);
const float *net_gpu_dlogits(const dpt_net *net);
dpt_status net_gpu_grads_allreduce(dpt_net *net, dpt_comm *comm);
dpt_status net_gpu_stats_pull(dpt_net *net, double *loss);
/* The host state (after pool_apply) queued to the device. */
dpt_status net_gpu_state_push(dpt_net *net);
/* dpt_net_set_steps beyond the capacity of a GPU network: host and device
 * buffers for cap steps (net_grow_steps is the host part, net.c). */
dpt_status net_gpu_grow_steps(dpt_net *net, int cap);
/* net->len to the device (dpt_net_set_steps with lengths, and the move);
 * net_gpu_lengths: the device copy, NULL when net->len is. */
dpt_status net_gpu_put_lengths(dpt_net *net);
const int *net_gpu_lengths(const dpt_net *net);
/* The device copy of dropout's per-step key (seed, epoch, iteration, obs
 * offset) while a graph step runs (net_gpu_graph_step uploads it), else
 * NULL: dropout then passes the values as arguments. */
const uint64_t *net_gpu_dropout_key(const dpt_net *net);
/* Before a training step's forward: on a GPU network with graphs on and
 * one worker (comm NULL or of size 1), the step's graph takes opt's update
 * too (net_optim_step then has nothing left to do for it); else, and on a
 * CPU network, nothing changes. opt is borrowed until net_optim_step. */
void net_step_plan_update(dpt_net *net, dpt_optim *opt, dpt_comm *comm);
dpt_status net_grow_steps(dpt_net *net, int cap);
void net_gpu_pull(dpt_net *net);
void net_gpu_free(dpt_net *net);
/* For tests/test_gpu.c: n floats of device memory to the host; host[n]
 * summed over comm's workers through the device all-reduce (in place). */
dpt_status net_gpu_debug_download(dpt_net *net, const float *dev, float *host, size_t n);
dpt_status net_gpu_debug_allreduce(dpt_net *net, dpt_comm *comm, float *host, size_t n);

/* ---- The training step's device-dependent parts (net_step.c) ------------------
 * train/step.c is one step for both devices; these do its parts where the
 * network lives. */
/* Forward (TRAIN) of x [n, input] and softmax cross-entropy against t [n,
 * outputs] (both host memory): the gradient at the logits weighted by w
 * into the network's own buffer, the mean loss × scale into *loss (on a
 * GPU only at net_pool_state: it comes to the host with the batch-norm
 * statistics; *loss is 0 until then). */
dpt_status net_step_forward_loss(dpt_net *net, const float *x, const float *t, int n, float w,
                                 double scale, double *loss);
/* A sequence output (dpt_net_output_is_sequence): t is [n, T, outputs];
 * a row (time step) whose target is all zero is padding: no loss and a
 * zero gradient. The others add -Σ t·log p × scale to the loss and get
 * the gradient (p - t)·w: the step passes w = scale = 1 / the valid rows
 * of the whole minibatch (net_loss_valid_rows summed over the workers). */
size_t net_loss_valid_rows(const dpt_net *net, const float *t, int n);
/* Backward from that gradient at the logits. */
dpt_status net_step_backward(dpt_net *net);
/* The gradient buffer summed over comm's workers, in place (nothing for
 * one worker). */
dpt_status net_grads_allreduce(dpt_net *net, dpt_comm *comm);
/* The optimizer's update where the network lives (on a GPU its state moves
 * to the device at its first step: dptrain/gpu.h). */
dpt_status net_optim_step(dpt_net *net, dpt_optim *opt);
/* dpt_net_update_state with *loss (NULL: none) summed over the workers in
 * the same float64 all-reduce; a loss still on the device is brought to
 * the host first. A non-finite loss on a GPU fails (naming the first
 * non-finite layer) before the state changes. */
dpt_status net_pool_state(dpt_net *net, dpt_comm *comm, double *loss);

/* Glorot-uniform fill of w[n] with the given fans (MATLAB's default). */
void glorot_uniform(float *w, size_t n, int fan_in, int fan_out, dpt_rng *rng);

#endif
