/* Internals of dpt_net shared by the network code and the layer types.
 *
 * A layer type is a table of functions (layer_type); each type keeps its own
 * small struct in dpt_layer.priv. Layers see the flat buffers through views
 * (p, g, s) set once the network is built. */
#ifndef DPT_NET_IMPL_H
#define DPT_NET_IMPL_H

#include "dptrain/net.h"

#define DPT_NAME_MAX 64

typedef struct dpt_layer dpt_layer;

typedef struct layer_type {
    const char *name;
    /* Allocate l->priv with defaults. */
    dpt_status (*create)(dpt_layer *l);
    /* Apply one key=value from the spec; unknown key or bad value fails
     * (the caller adds source:line to the message). */
    dpt_status (*set)(dpt_layer *l, const char *key, const char *value);
    /* From l->in, compute l->out and declare learnables and state with
     * net_declare(); fails with a message on impossible shapes. */
    dpt_status (*infer)(dpt_net *net, dpt_layer *l);
    /* Initialise this layer's learnables (l->p) and state (l->s). */
    void (*init)(dpt_layer *l, dpt_rng *rng);
    /* Scratch floats needed for a batch of n. */
    size_t (*work_floats)(const dpt_layer *l, int n);
    dpt_status (*forward)(dpt_net *net, dpt_layer *l, const float *x, float *y, int n,
                          dpt_mode mode);
    /* dx may be NULL when the layer below needs no gradient (the input). */
    dpt_status (*backward)(dpt_net *net, dpt_layer *l, const float *x, const float *y,
                           const float *dy, float *dx, int n);
    /* Spec text of the layer's keys (for dpt_net_spec), appended to buf. */
    void (*describe)(const dpt_layer *l, char *buf, size_t cap);
    /* Running-state update after a TRAIN forward (NULL: layer has no state).
     * pool_pack writes pool_doubles(l) values that are summed over workers
     * (weighted by each worker's observation count); pool_apply receives the
     * sums and the total observation count and updates l->s. */
    size_t (*pool_doubles)(const dpt_layer *l);
    void (*pool_pack)(const dpt_layer *l, int n_local, double *buf);
    void (*pool_apply)(dpt_layer *l, const double *buf, double n_total, int synced);
    void (*free)(dpt_layer *l);
} layer_type;

struct dpt_layer {
    const layer_type *type;
    char name[DPT_NAME_MAX];
    int line;              /* spec line, for messages */
    int in[3], out[3];     /* [C, H, W] per observation */
    void *priv;
    size_t first_learnable, n_learnables; /* entries in the learnables table */
    size_t first_state, n_state;
    float *p, *g, *s;      /* views: this layer's learnables, gradients, state */
};

#define DPT_MAX_PARAMS 256

struct dpt_net {
    char *spec;            /* normalised spec text (owned) */
    char source[256];
    int max_batch;
    int n_classes;         /* fills outputs=classes; 0 when unknown */
    int n_layers;
    dpt_layer *layers;     /* [n_layers] */

    dpt_param_info learn[DPT_MAX_PARAMS];
    size_t n_learn;
    dpt_param_info state_tab[DPT_MAX_PARAMS];
    size_t n_state_tab;
    char *names;           /* storage for table names (owned) */
    size_t names_used, names_cap;

    size_t n_params, n_state;
    float *params, *grads, *state; /* flat buffers (owned) */

    float **acts;          /* acts[i]: output of layer i [max_batch, out] */
    float *gbuf[2];        /* ping-pong gradient buffers */
    float *dout;           /* [max_batch, outputs] loss gradient for callers */
    double *pool;          /* scratch for dpt_net_update_state */
    size_t n_pool;
    float *work;           /* shared scratch */
    size_t work_floats;
    int last_n;            /* observations in the last TRAIN forward */
    dpt_mode last_mode;

    dpt_comm *sync_bn;     /* non-NULL: synchronised batch norm (borrowed) */
    double *prof;          /* non-NULL: seconds per layer added up, forward in
                              [0, n_layers), backward in [n_layers, 2 n_layers)
                              (borrowed; set by bench/step_bench.c) */

    char **meta;           /* key, value, key, value ... from the loaded file (owned) */
    size_t n_meta;
};

/* Append an entry to the learnables (is_state 0) or state table of layer l. */
dpt_status net_declare(dpt_net *net, dpt_layer *l, int is_state, const char *param, int ndim,
                       const int *shape);

/* Helpers for layer set() functions: parse a positive int / float value. */
dpt_status parse_int(const char *key, const char *value, int min, int *out);
dpt_status parse_float(const char *key, const char *value, float *out);

/* Layer types (one file each). */
extern const layer_type dpt_layer_input;
extern const layer_type dpt_layer_conv;
extern const layer_type dpt_layer_batchnorm;
extern const layer_type dpt_layer_relu;
extern const layer_type dpt_layer_fc;
extern const layer_type dpt_layer_softmax;

/* Glorot-uniform fill of w[n] with the given fans (MATLAB's default). */
void glorot_uniform(float *w, size_t n, int fan_in, int fan_out, dpt_rng *rng);

#endif
