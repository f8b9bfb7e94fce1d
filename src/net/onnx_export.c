/* ONNX export: a network as an ONNX model (standard operators, opset 13
 * to 17), written with protobuf-c from the C that protoc-c generates out
 * of onnx.proto at build time (CMakeLists.txt, DPT_WITH_ONNX).
 *
 * Tensors inside the graph take one of three forms, tracked per layer:
 *   [N, C, H, W] (rank 4: images, what conv, batchnorm and the pools take),
 *   [N, K]       (rank 2: fc and softmax outputs, lstm/gru output=last),
 *   [N, T, F]    (rank 3: a sequence, observation major as dptrain lays it).
 * A layer that needs another form than its input has gets a Reshape or a
 * Flatten in between (dptrain flattens in NCHW order, as ONNX does), so
 * the exported graph computes exactly what dpt_net_forward computes in
 * PREDICT mode. Recurrent layers run time major in ONNX: a Transpose
 * around them. Every buffer the message points at lives in one arena
 * (struct ox) freed at the end. */
#include "net/net_impl.h"

#ifndef DPT_HAVE_ONNX

dpt_status dpt_net_export_onnx(const dpt_net *net, const char *path, int opset,
                               const dpt_kv *meta, size_t n_meta)
{
    (void)net, (void)opset, (void)meta, (void)n_meta;
    return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: this dptrain was built without ONNX support "
                    "(protoc-c, libprotobuf-c or onnx.proto were not found when it was "
                    "configured: install protobuf-c-compiler, libprotobuf-c-dev and "
                    "python3-onnx, and configure again)", path ? path : "ONNX export");
}

#else

#include "core/tmpfile.h"
#include "onnx.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* IR version 8 is what opsets 13 to 17 came with (onnx 1.8 to 1.12). */
#define ONNX_IR_VERSION 8
/* A protobuf message is at most 2 GiB; larger models would need ONNX's
 * external data, which this exporter does not write. */
#define ONNX_MAX_BYTES 2147483647.0

typedef struct ox {
    const dpt_net *net;
    void **blocks;              /* every allocation below (owned) */
    size_t n_blocks, cap_blocks;
    int oom;                    /* sticky: an allocation failed */
    Onnx__NodeProto **nodes;    /* grown with realloc (owned, not in blocks) */
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    const char **val;           /* [n_layers] the value holding layer i's output */
    int *rank;                  /* [n_layers] 2, 3 or 4 (see the top) */
    const char **v4, **v2;      /* [n_layers] cached [N,C,H,W] / [N,K] forms */
    const char *axes0, *axes1;  /* Squeeze axes constants, made on first use */
} ox;

static void *ox_alloc(ox *x, size_t n)
{
    if (x->oom)
        return NULL;
    if (x->n_blocks == x->cap_blocks) {
        size_t cap = x->cap_blocks ? 2 * x->cap_blocks : 256;
        void **b = realloc(x->blocks, cap * sizeof *b);
        if (!b) {
            x->oom = 1;
            return NULL;
        }
        x->blocks = b, x->cap_blocks = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        x->oom = 1;
        return NULL;
    }
    x->blocks[x->n_blocks++] = p;
    return p;
}

static char *ox_str(ox *x, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static char *ox_str(ox *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n < 0 ? NULL : ox_alloc(x, (size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Append p to a realloc-grown pointer array. */
static void push(ox *x, void ***arr, size_t *n, size_t *cap, void *p)
{
    if (x->oom || !p)
        return;
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        void **a = realloc(*arr, c * sizeof *a);
        if (!a) {
            x->oom = 1;
            return;
        }
        *arr = a, *cap = c;
    }
    (*arr)[(*n)++] = p;
}

/* ---- nodes and attributes ------------------------------------------------------ */

/* A node named `name` of type op with n_in inputs and n_out outputs (value
 * names), appended to the graph. NULL when out of memory (x->oom set). */
static Onnx__NodeProto *node(ox *x, const char *op, const char *name, int n_in,
                             const char *const *in, int n_out, const char *const *out)
{
    Onnx__NodeProto *nd = ox_alloc(x, sizeof *nd);
    char **ins = ox_alloc(x, (size_t)n_in * sizeof *ins);
    char **outs = ox_alloc(x, (size_t)n_out * sizeof *outs);
    if (!nd || !ins || !outs || !name)
        return NULL;
    onnx__node_proto__init(nd);
    for (int k = 0; k < n_in; k++)
        if (!(ins[k] = (char *)in[k]))
            return x->oom = 1, NULL;
    for (int k = 0; k < n_out; k++)
        if (!(outs[k] = (char *)out[k]))
            return x->oom = 1, NULL;
    nd->op_type = (char *)op;
    nd->name = (char *)name;
    nd->n_input = (size_t)n_in, nd->input = ins;
    nd->n_output = (size_t)n_out, nd->output = outs;
    push(x, (void ***)&x->nodes, &x->n_nodes, &x->cap_nodes, nd);
    return x->oom ? NULL : nd;
}

/* A one-input, one-output node named after its output. */
static Onnx__NodeProto *node1(ox *x, const char *op, const char *in, const char *out)
{
    return node(x, op, out, 1, &in, 1, &out);
}

static Onnx__AttributeProto *attr(ox *x, Onnx__NodeProto *nd, const char *name,
                                  Onnx__AttributeProto__AttributeType type)
{
    if (!nd)
        return NULL;
    Onnx__AttributeProto *a = ox_alloc(x, sizeof *a);
    Onnx__AttributeProto **list = ox_alloc(x, (nd->n_attribute + 1) * sizeof *list);
    if (!a || !list)
        return NULL;
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1, a->type = type;
    if (nd->n_attribute)
        memcpy(list, nd->attribute, nd->n_attribute * sizeof *list);
    list[nd->n_attribute++] = a;
    nd->attribute = list;
    return a;
}

static void attr_int(ox *x, Onnx__NodeProto *nd, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = attr(x, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a)
        a->has_i = 1, a->i = v;
}

static void attr_float(ox *x, Onnx__NodeProto *nd, const char *name, float v)
{
    Onnx__AttributeProto *a = attr(x, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a)
        a->has_f = 1, a->f = v;
}

static void attr_ints(ox *x, Onnx__NodeProto *nd, const char *name, int n, const int64_t *v)
{
    Onnx__AttributeProto *a = attr(x, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *c = ox_alloc(x, (size_t)n * sizeof *c);
    if (!a || !c)
        return;
    memcpy(c, v, (size_t)n * sizeof *c);
    a->n_ints = (size_t)n, a->ints = c;
}

/* ---- initializers ------------------------------------------------------------------ */

/* A tensor of data_type with dims[ndim], its n elements of `size` bytes
 * each written little-endian into raw_data (ONNX's byte order, whatever
 * the host's). */
static const char *init_raw(ox *x, const char *name, int32_t type, int ndim,
                            const int64_t *dims, const void *data, size_t n, size_t size)
{
    Onnx__TensorProto *t = ox_alloc(x, sizeof *t);
    int64_t *d = ox_alloc(x, (size_t)ndim * sizeof *d);
    uint8_t *raw = ox_alloc(x, n * size);
    if (!t || !d || !raw || !name)
        return NULL;
    onnx__tensor_proto__init(t);
    memcpy(d, dims, (size_t)ndim * sizeof *d);
    const uint8_t *src = data;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        if (size == 4) {
            uint32_t u;
            memcpy(&u, src + 4 * i, 4);
            v = u;
        } else {
            memcpy(&v, src + 8 * i, 8);
        }
        for (size_t b = 0; b < size; b++)
            raw[i * size + b] = (uint8_t)(v >> (8 * b));
    }
    t->name = (char *)name;
    t->n_dims = (size_t)ndim, t->dims = d;
    t->has_data_type = 1, t->data_type = type;
    t->has_raw_data = 1, t->raw_data.len = n * size, t->raw_data.data = raw;
    push(x, (void ***)&x->inits, &x->n_inits, &x->cap_inits, t);
    return x->oom ? NULL : name;
}

static const char *init_f32(ox *x, const char *name, int ndim, const int64_t *dims,
                            const float *data)
{
    size_t n = 1;
    for (int k = 0; k < ndim; k++)
        n *= (size_t)dims[k];
    return init_raw(x, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndim, dims, data, n, 4);
}

static const char *init_i64(ox *x, const char *name, int n, const int64_t *v)
{
    int64_t dim = n;
    return init_raw(x, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, &dim, v, (size_t)n, 8);
}

/* The float values of learnable or state entry "<layer>/<param>" (NULL
 * when the layer has none) and its shape. */
static const float *param(const ox *x, const dpt_layer *l, const char *p, int state,
                          int64_t dims[DPT_MAX_DIMS], int *ndim)
{
    char full[DPT_NAME_MAX + 32];
    snprintf(full, sizeof full, "%s/%s", l->name, p);
    long i = state ? dpt_net_find_state(x->net, full) : dpt_net_find_learnable(x->net, full);
    if (i < 0)
        return NULL;
    const dpt_param_info *e = state ? dpt_net_state_info(x->net, (size_t)i)
                                    : dpt_net_learnable(x->net, (size_t)i);
    for (int k = 0; k < e->ndim; k++)
        dims[k] = e->shape[k];
    *ndim = e->ndim;
    return (state ? x->net->state : x->net->params) + e->offset;
}

/* The entry as an initializer of the same name ("conv1/Weights"); NULL when
 * missing (with a message) or out of memory. */
static const char *param_init(ox *x, const dpt_layer *l, const char *p, int state)
{
    int64_t dims[DPT_MAX_DIMS];
    int ndim = 0;
    const float *v = param(x, l, p, state, dims, &ndim);
    if (!v) {
        dpt_fail(DPT_ERR_ARG, "layer '%s': no %s/%s in the network", l->name, l->name, p);
        return NULL;
    }
    return init_f32(x, ox_str(x, "%s/%s", l->name, p), ndim, dims, v);
}

/* ---- forms of a layer's output ----------------------------------------------------- */

/* Layer i's output as [N, C, H, W]. */
static const char *as4d(ox *x, int i)
{
    if (x->rank[i] == 4 || x->v4[i])
        return x->rank[i] == 4 ? x->val[i] : x->v4[i];
    const dpt_layer *l = &x->net->layers[i];
    int64_t shape[4] = {-1, l->out[0], l->out[1], l->out[2]};
    const char *s = init_i64(x, ox_str(x, "%s/nchw_shape", l->name), 4, shape);
    const char *out = ox_str(x, "%s/nchw", l->name), *in[2] = {x->val[i], s};
    if (node(x, "Reshape", out, 2, in, 1, &out))
        x->v4[i] = out;
    return x->v4[i];
}

/* Layer i's output as [N, K] (an image flattened in NCHW order). */
static const char *as2d(ox *x, int i)
{
    if (x->rank[i] == 2 || x->v2[i])
        return x->rank[i] == 2 ? x->val[i] : x->v2[i];
    const char *out = ox_str(x, "%s/flat", x->net->layers[i].name);
    Onnx__NodeProto *nd = node1(x, "Flatten", x->val[i], out);
    attr_int(x, nd, "axis", 1);
    if (nd)
        x->v2[i] = out;
    return x->v2[i];
}

static const char *squeeze_axes(ox *x, int axis)
{
    const char **c = axis ? &x->axes1 : &x->axes0;
    int64_t v = axis;
    if (!*c)
        *c = init_i64(x, axis ? "const/axes1" : "const/axes0", 1, &v);
    return *c;
}

/* ---- layers ---------------------------------------------------------------------------- */

static dpt_status unsupported(const dpt_layer *l, const char *why)
{
    return dpt_fail(DPT_ERR_UNSUPPORTED, "layer '%s' (%s): %s", l->name, l->type->name, why);
}

static dpt_status emit_conv(ox *x, const dpt_layer *l, const char *out)
{
    conv_geom g = conv_layer_geom(l);
    const char *in[3] = {as4d(x, l->inputs[0]), param_init(x, l, "Weights", 0), NULL};
    if (!in[1] && !x->oom)
        return DPT_ERR_ARG;
    if (g.bias && !(in[2] = param_init(x, l, "Bias", 0)) && !x->oom)
        return DPT_ERR_ARG;
    Onnx__NodeProto *nd = node(x, "Conv", out, g.bias ? 3 : 2, in, 1, &out);
    int64_t k[2] = {g.kh, g.kw}, s[2] = {g.stride, g.stride}, d[2] = {g.dilation, g.dilation};
    int64_t p[4] = {g.pad, g.pad, g.pad, g.pad};
    attr_ints(x, nd, "kernel_shape", 2, k);
    attr_ints(x, nd, "strides", 2, s);
    attr_ints(x, nd, "pads", 4, p);
    attr_ints(x, nd, "dilations", 2, d);
    attr_int(x, nd, "group", g.groups);
    return DPT_OK;
}

static dpt_status emit_batchnorm(ox *x, const dpt_layer *l, const char *out)
{
    float eps, decay;
    bn_layer_conf(l, &eps, &decay);
    const char *in[5] = {as4d(x, l->inputs[0]), param_init(x, l, "Scale", 0),
                         param_init(x, l, "Offset", 0), param_init(x, l, "TrainedMean", 1),
                         param_init(x, l, "TrainedVariance", 1)};
    for (int k = 1; k < 5; k++)
        if (!in[k] && !x->oom)
            return DPT_ERR_ARG;
    /* Inference form: the running statistics, as PREDICT uses them. */
    Onnx__NodeProto *nd = node(x, "BatchNormalization", out, 5, in, 1, &out);
    attr_float(x, nd, "epsilon", eps);
    return DPT_OK;
}

static dpt_status emit_pool(ox *x, const dpt_layer *l, const char *out)
{
    dpt_pool2d_desc d;
    int is_max = pool_layer_desc(l, &d);
    Onnx__NodeProto *nd = node1(x, is_max ? "MaxPool" : "AveragePool",
                                as4d(x, l->inputs[0]), out);
    int64_t k[2] = {d.kh, d.kw}, s[2] = {d.sh, d.sw}, p[4] = {d.ph, d.pw, d.ph, d.pw};
    attr_ints(x, nd, "kernel_shape", 2, k);
    attr_ints(x, nd, "strides", 2, s);
    attr_ints(x, nd, "pads", 4, p);
    /* dptrain divides every window by its full size, padding included. */
    if (!is_max)
        attr_int(x, nd, "count_include_pad", 1);
    return DPT_OK;
}

static dpt_status emit_fc(ox *x, const dpt_layer *l, const char *out, int *rank)
{
    int64_t dims[DPT_MAX_DIMS];
    int ndim = 0;
    const float *w = param(x, l, "Weights", 0, dims, &ndim);
    if (!w || ndim != 2)
        return dpt_fail(DPT_ERR_ARG, "layer '%s': no 2-D %s/Weights", l->name, l->name);
    char bias_name[DPT_NAME_MAX + 8];
    snprintf(bias_name, sizeof bias_name, "%s/Bias", l->name);
    int has_bias = dpt_net_find_learnable(x->net, bias_name) >= 0;
    const char *b = has_bias ? param_init(x, l, "Bias", 0) : NULL;
    int src = l->inputs[0];
    if (x->rank[src] == 3) {
        /* Per time step on [N, T, F]: MatMul broadcasts over N and T. */
        size_t no = (size_t)dims[0], ni = (size_t)dims[1];
        float *wt = ox_alloc(x, no * ni * sizeof *wt);
        if (!wt)
            return DPT_OK; /* x->oom reports it */
        for (size_t o = 0; o < no; o++)
            for (size_t i = 0; i < ni; i++)
                wt[i * no + o] = w[o * ni + i];
        int64_t td[2] = {dims[1], dims[0]};
        const char *in[2] = {x->val[src], init_f32(x, ox_str(x, "%s/WeightsT", l->name), 2,
                                                   td, wt)};
        const char *mm = has_bias ? ox_str(x, "%s/matmul", l->name) : out;
        node(x, "MatMul", mm, 2, in, 1, &mm);
        if (has_bias) {
            const char *ab[2] = {mm, b};
            node(x, "Add", out, 2, ab, 1, &out);
        }
        *rank = 3;
        return DPT_OK;
    }
    const char *in[3] = {as2d(x, src), init_f32(x, ox_str(x, "%s/Weights", l->name), 2, dims,
                                                w), b};
    Onnx__NodeProto *nd = node(x, "Gemm", out, has_bias ? 3 : 2, in, 1, &out);
    attr_int(x, nd, "transB", 1);
    *rank = 2;
    return DPT_OK;
}

/* ONNX's gate order from dptrain's (PyTorch's): ONNX gate k is dptrain
 * gate map[k]. LSTM: dptrain i, f, g, o; ONNX i, o, f, c. GRU: dptrain r,
 * z, n; ONNX z, r, h. */
static const int lstm_map[4] = {0, 3, 1, 2};
static const int gru_map[3] = {1, 0, 2};

static void reorder(float *dst, const float *src, int gates, const int *map, size_t block)
{
    for (int k = 0; k < gates; k++)
        memcpy(dst + (size_t)k * block, src + (size_t)map[k] * block, block * sizeof *dst);
}

static dpt_status emit_rnn(ox *x, const dpt_layer *l, const char *out, int *rank)
{
    int lstm = l->type == &dpt_layer_lstm, units, last;
    rnn_layer_conf(l, &units, &last);
    const int gates = lstm ? 4 : 3, *map = lstm ? lstm_map : gru_map;
    const size_t h = (size_t)units, f = (size_t)l->in[0], gh = gates * h;
    int64_t d[DPT_MAX_DIMS];
    int nd_ = 0;
    const float *wi = param(x, l, "InputWeights", 0, d, &nd_);
    const float *wh = param(x, l, "RecurrentWeights", 0, d, &nd_);
    const float *bi = param(x, l, "InputBias", 0, d, &nd_);
    const float *bh = param(x, l, "RecurrentBias", 0, d, &nd_);
    if (!wi || !wh || !bi || !bh)
        return dpt_fail(DPT_ERR_ARG, "layer '%s': weights missing", l->name);
    float *W = ox_alloc(x, gh * f * sizeof *W), *R = ox_alloc(x, gh * h * sizeof *R);
    float *B = ox_alloc(x, 2 * gh * sizeof *B);
    if (!W || !R || !B)
        return DPT_OK;
    reorder(W, wi, gates, map, h * f);
    reorder(R, wh, gates, map, h * h);
    reorder(B, bi, gates, map, h);
    reorder(B + gh, bh, gates, map, h);
    int64_t wd[3] = {1, (int64_t)gh, (int64_t)f}, rd[3] = {1, (int64_t)gh, (int64_t)h};
    int64_t bd[2] = {1, 2 * (int64_t)gh};
    const char *W_ = init_f32(x, ox_str(x, "%s/W", l->name), 3, wd, W);
    const char *R_ = init_f32(x, ox_str(x, "%s/R", l->name), 3, rd, R);
    const char *B_ = init_f32(x, ox_str(x, "%s/B", l->name), 2, bd, B);

    /* [N, T, F] -> [T, N, F]: ONNX's recurrent ops run time major. */
    const char *xt = ox_str(x, "%s/x_tnf", l->name);
    int64_t perm[3] = {1, 0, 2};
    attr_ints(x, node1(x, "Transpose", x->val[l->inputs[0]], xt), "perm", 3, perm);
    const char *in[4] = {xt, W_, R_, B_};
    const char *y = ox_str(x, "%s/y", l->name), *yh = ox_str(x, "%s/y_h", l->name);
    const char *outs[2] = {y, yh};
    Onnx__NodeProto *nd = node(x, lstm ? "LSTM" : "GRU", ox_str(x, "%s/rnn", l->name), 4, in,
                               2, outs);
    attr_int(x, nd, "hidden_size", units);
    /* PyTorch's GRU (dptrain's) applies the reset gate after the
     * recurrent product: n = tanh(W_in x + b_in + r (W_hn h + b_hn)). */
    if (!lstm)
        attr_int(x, nd, "linear_before_reset", 1);
    if (last) {
        /* Y_h [1, N, H] -> [N, H]: the state after the last step. */
        const char *sq[2] = {yh, squeeze_axes(x, 0)};
        node(x, "Squeeze", out, 2, sq, 1, &out);
        *rank = 2;
        return DPT_OK;
    }
    /* Y [T, 1, N, H] -> [T, N, H] -> [N, T, H]. */
    const char *ys = ox_str(x, "%s/y_tnh", l->name), *sq[2] = {y, squeeze_axes(x, 1)};
    node(x, "Squeeze", ys, 2, sq, 1, &ys);
    attr_ints(x, node1(x, "Transpose", ys, out), "perm", 3, perm);
    *rank = 3;
    return DPT_OK;
}

/* add and concat: inputs brought to one form (images if any input is one). */
static dpt_status emit_merge(ox *x, const dpt_layer *l, const char *out, int *rank)
{
    int r = x->rank[l->inputs[0]];
    for (int k = 0; k < l->n_in; k++) {
        int rk = x->rank[l->inputs[k]];
        if ((rk == 3) != (r == 3))
            return unsupported(l, "mixes sequence and non-sequence inputs");
        if (rk == 4)
            r = 4;
    }
    const char **in = ox_alloc(x, (size_t)l->n_in * sizeof *in);
    if (!in)
        return DPT_OK;
    for (int k = 0; k < l->n_in; k++)
        in[k] = r == 4 ? as4d(x, l->inputs[k]) : x->val[l->inputs[k]];
    int concat = l->type == &dpt_layer_concat;
    Onnx__NodeProto *nd = node(x, concat ? "Concat" : "Sum", out, l->n_in, in, 1, &out);
    if (concat)
        attr_int(x, nd, "axis", r == 3 ? 2 : 1);
    *rank = r;
    return DPT_OK;
}

/* The ONNX nodes of layer i (i > 0) into value `out`; *rank its form. */
static dpt_status emit_layer(ox *x, int i, const char *out, int *rank)
{
    const dpt_layer *l = &x->net->layers[i];
    const layer_type *t = l->type;
    const int src = l->n_in ? l->inputs[0] : 0;
    *rank = x->rank[src];
    if (t == &dpt_layer_conv || t == &dpt_layer_batchnorm || t == &dpt_layer_maxpool ||
        t == &dpt_layer_avgpool || t == &dpt_layer_globalavgpool) {
        if (x->rank[src] == 3) /* the builder refuses it; never trust it here */
            return unsupported(l, "on a sequence");
        *rank = 4;
        if (t == &dpt_layer_conv)
            return emit_conv(x, l, out);
        if (t == &dpt_layer_batchnorm)
            return emit_batchnorm(x, l, out);
        if (t == &dpt_layer_globalavgpool) {
            node1(x, "GlobalAveragePool", as4d(x, src), out);
            return DPT_OK;
        }
        return emit_pool(x, l, out);
    }
    if (t == &dpt_layer_relu || t == &dpt_layer_sigmoid || t == &dpt_layer_tanh) {
        node1(x, t == &dpt_layer_relu ? "Relu" : t == &dpt_layer_sigmoid ? "Sigmoid" : "Tanh",
              x->val[src], out);
        return DPT_OK;
    }
    if (t == &dpt_layer_leakyrelu) {
        attr_float(x, node1(x, "LeakyRelu", x->val[src], out), "alpha", leaky_layer_alpha(l));
        return DPT_OK;
    }
    if (t == &dpt_layer_dropout) { /* the identity in prediction */
        node1(x, "Identity", x->val[src], out);
        return DPT_OK;
    }
    if (t == &dpt_layer_softmax) {
        /* Over the K outputs of each observation (of each time step). */
        const char *in = x->rank[src] == 3 ? x->val[src] : as2d(x, src);
        attr_int(x, node1(x, "Softmax", in, out), "axis", -1);
        *rank = x->rank[src] == 3 ? 3 : 2;
        return DPT_OK;
    }
    if (t == &dpt_layer_fc)
        return emit_fc(x, l, out, rank);
    if (t == &dpt_layer_add || t == &dpt_layer_concat)
        return emit_merge(x, l, out, rank);
    if (t == &dpt_layer_lstm || t == &dpt_layer_gru) {
        if (x->rank[src] != 3)
            return unsupported(l, "needs a sequence input");
        return emit_rnn(x, l, out, rank);
    }
    return unsupported(l, "no ONNX form for this layer type in dptrain's exporter");
}

/* ---- graph inputs and outputs ---------------------------------------------------------- */

/* A float tensor value of rank `ndim`: dims[k] >= 0 fixed, -1 the batch
 * ("N"), -2 the time steps ("T"). */
static Onnx__ValueInfoProto *value_info(ox *x, const char *name, int ndim, const int64_t *dims)
{
    Onnx__ValueInfoProto *v = ox_alloc(x, sizeof *v);
    Onnx__TypeProto *tp = ox_alloc(x, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = ox_alloc(x, sizeof *tt);
    Onnx__TensorShapeProto *sh = ox_alloc(x, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dd = ox_alloc(x, (size_t)ndim * sizeof *dd);
    if (!v || !tp || !tt || !sh || !dd || !name)
        return NULL;
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (int k = 0; k < ndim; k++) {
        Onnx__TensorShapeProto__Dimension *d = ox_alloc(x, sizeof *d);
        if (!d)
            return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[k] >= 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[k];
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = dims[k] == -1 ? "N" : "T";
        }
        dd[k] = d;
    }
    sh->n_dim = (size_t)ndim, sh->dim = dd;
    tt->has_elem_type = 1, tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, tp->tensor_type = tt;
    v->name = (char *)name, v->type = tp;
    return v;
}

static Onnx__StringStringEntryProto *kv(ox *x, const char *key, const char *value)
{
    Onnx__StringStringEntryProto *e = ox_alloc(x, sizeof *e);
    if (!e || !key || !value)
        return NULL;
    onnx__string_string_entry_proto__init(e);
    e->key = (char *)key, e->value = (char *)value;
    return e;
}

/* ---- the file -------------------------------------------------------------------------- */

/* buf[n] to path through a temporary file beside it, synced, then renamed
 * over it: a reader sees the old file or the new one. */
static dpt_status write_atomic(const char *path, const uint8_t *buf, size_t n)
{
    size_t cap = strlen(path) + 48;
    char *tmp = malloc(cap), *dir = strdup(path);
    dpt_status s = DPT_OK;
    int fd = -1, tmp_exists = 0;
    if (!tmp || !dir) {
        s = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    fd = dpt_tmpfile_create(path, tmp, cap);
    if (fd < 0) {
        s = dpt_fail(DPT_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                     strerror(errno));
        goto done;
    }
    tmp_exists = 1;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            s = dpt_fail(DPT_ERR_IO, "%s: write failed: %s", path,
                         w < 0 ? strerror(errno) : "no progress");
            goto done;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        s = dpt_fail(DPT_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        s = dpt_fail(DPT_ERR_IO, "%s: cannot rename the temporary file over it: %s", path,
                     strerror(errno));
        goto done;
    }
    tmp_exists = 0;
    /* The rename made durable; a folder that cannot be synced (EINVAL) is
     * safe anyway. */
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL)
            s = dpt_fail(DPT_ERR_IO, "%s: cannot sync its folder: %s", path, strerror(errno));
        close(dfd);
    }
done:
    if (fd >= 0)
        close(fd);
    if (tmp_exists)
        unlink(tmp);
    free(tmp);
    free(dir);
    return s;
}

static const char *input_doc(ox *x, int seq, const int *chw)
{
    if (seq)
        return ox_str(x, "float32 [N, T, %d]: N sequences of T time steps, %d features per "
                      "step (one line of a .csv sequence file); every sequence of a batch has "
                      "all T steps (no padding)", chw[0], chw[0]);
    return ox_str(x, "float32 [N, %d, %d, %d] (NCHW): pixel values scaled to [0, 1] "
                  "(8-bit value / 255), %s, resized to %dx%d (height x width) bilinearly as "
                  "dptrain does; no mean or deviation normalisation", chw[0], chw[1], chw[2],
                  chw[0] == 1 ? "one grey channel (colour converted with stb_image's "
                  "luminance (77 R + 150 G + 29 B) / 256)" : "channels R, G, B",
                  chw[1], chw[2]);
}

dpt_status dpt_net_export_onnx(const dpt_net *net, const char *path, int opset,
                               const dpt_kv *meta, size_t n_meta)
{
    if (!net || !path)
        return dpt_fail(DPT_ERR_ARG, "dpt_net_export_onnx: %s is NULL", net ? "path" : "net");
    if (opset < 13 || opset > 17)
        return dpt_fail(DPT_ERR_ARG, "%s: opset %d not supported (13 to 17)", path, opset);
    for (size_t k = 0; k < n_meta; k++) {
        if (!meta[k].key || !meta[k].value || !meta[k].key[0])
            return dpt_fail(DPT_ERR_ARG, "%s: metadata entry %zu has no key or value", path, k);
        if (!strncmp(meta[k].key, "dptrain.", 8))
            return dpt_fail(DPT_ERR_ARG, "%s: metadata key '%s' is reserved (dptrain.*)",
                            path, meta[k].key);
        for (size_t j = 0; j < k; j++)
            if (!strcmp(meta[j].key, meta[k].key))
                return dpt_fail(DPT_ERR_ARG, "%s: metadata key '%s' given twice", path,
                                meta[k].key);
    }
    const int n = net->n_layers, last = n - 1;
    ox x = {.net = net};
    dpt_status s = DPT_OK;
    uint8_t *buf = NULL;
    x.val = calloc((size_t)n, sizeof *x.val);
    x.v4 = calloc((size_t)n, sizeof *x.v4);
    x.v2 = calloc((size_t)n, sizeof *x.v2);
    x.rank = calloc((size_t)n, sizeof *x.rank);
    if (!x.val || !x.v4 || !x.v2 || !x.rank)
        goto oom;

    const int seq = dpt_net_is_sequence(net);
    int chw[3];
    dpt_net_input_shape(net, chw);
    x.val[0] = net->layers[0].name;
    x.rank[0] = seq ? 3 : 4;
    for (int i = 1; i < n && s == DPT_OK && !x.oom; i++) {
        const dpt_layer *l = &net->layers[i];
        s = emit_layer(&x, i, l->name, &x.rank[i]);
        x.val[i] = l->name;
    }
    if (s != DPT_OK)
        goto done;
    if (x.oom)
        goto oom;
    /* dptrain's output is [n, outputs] (NCHW flattened) or [n, T, outputs]. */
    const char *out_name = net->layers[last].name;
    if (x.rank[last] == 4) {
        const char *nchw = ox_str(&x, "%s/nchw", out_name);
        Onnx__NodeProto *prod = x.n_nodes ? x.nodes[x.n_nodes - 1] : NULL;
        if (!nchw)
            goto oom;
        if (!prod || prod->n_output < 1 || strcmp(prod->output[0], out_name)) {
            s = unsupported(&net->layers[last], "its node is not the graph's last one");
            goto done;
        }
        prod->output[0] = prod->name = (char *)nchw; /* node names are unique too */
        attr_int(&x, node1(&x, "Flatten", nchw, out_name), "axis", 1);
    }
    int k_out = dpt_net_n_outputs(net);
    int64_t in_dims[4] = {-1, chw[0], chw[1], chw[2]}, seq_in[3] = {-1, -2, chw[0]};
    int64_t out2[2] = {-1, k_out}, out3[3] = {-1, -2, k_out};
    Onnx__ValueInfoProto *gin = seq ? value_info(&x, x.val[0], 3, seq_in)
                                    : value_info(&x, x.val[0], 4, in_dims);
    Onnx__ValueInfoProto *gout = x.rank[last] == 3 ? value_info(&x, out_name, 3, out3)
                                                   : value_info(&x, out_name, 2, out2);
    Onnx__ValueInfoProto **gins = ox_alloc(&x, sizeof *gins), **gouts = ox_alloc(&x, sizeof *gouts);
    Onnx__GraphProto *g = ox_alloc(&x, sizeof *g);
    Onnx__ModelProto *m = ox_alloc(&x, sizeof *m);
    Onnx__OperatorSetIdProto *os = ox_alloc(&x, sizeof *os);
    Onnx__OperatorSetIdProto **oss = ox_alloc(&x, sizeof *oss);
    if (x.oom || !gin || !gout)
        goto oom;
    gin->doc_string = (char *)input_doc(&x, seq, chw);
    gout->doc_string = x.rank[last] == 3
                               ? ox_str(&x, "float32 [N, T, %d]: the network's output at every "
                                        "time step", k_out)
                               : ox_str(&x, "float32 [N, %d]: the network's output (class "
                                        "probabilities after a softmax, in the order of "
                                        "metadata 'classes')", k_out);
    gins[0] = gin, gouts[0] = gout;
    onnx__graph_proto__init(g);
    g->name = "dptrain";
    g->n_node = x.n_nodes, g->node = x.nodes;
    g->n_initializer = x.n_inits, g->initializer = x.inits;
    g->n_input = 1, g->input = gins;
    g->n_output = 1, g->output = gouts;

    /* Metadata: the caller's, then what a deployment needs to feed the
     * model as dptrain does. */
    const char *classes = dpt_net_meta(net, "classes");
    int have_classes = 0;
    for (size_t k = 0; k < n_meta; k++)
        have_classes |= !strcmp(meta[k].key, "classes");
    size_t n_props = n_meta + 6;
    Onnx__StringStringEntryProto **props = ox_alloc(&x, n_props * sizeof *props);
    if (!props)
        goto oom;
    size_t np = 0;
    for (size_t k = 0; k < n_meta; k++)
        props[np++] = kv(&x, meta[k].key, meta[k].value);
    if (classes && !have_classes)
        props[np++] = kv(&x, "classes", classes);
    props[np++] = kv(&x, "dptrain.input", gin->doc_string);
    props[np++] = kv(&x, "dptrain.input_layout", seq ? "NTF" : "NCHW");
    props[np++] = kv(&x, "dptrain.input_scale", seq ? "1" : "0.00392156862745098 (1/255)");
    props[np++] = kv(&x, "dptrain.output", gout->doc_string);
    props[np++] = kv(&x, "dptrain.spec", dpt_net_spec(net));
    for (size_t k = 0; k < np; k++)
        if (!props[k])
            goto oom;

    onnx__operator_set_id_proto__init(os);
    os->domain = "";
    os->has_version = 1, os->version = opset;
    oss[0] = os;
    onnx__model_proto__init(m);
    m->has_ir_version = 1, m->ir_version = ONNX_IR_VERSION;
    m->n_opset_import = 1, m->opset_import = oss;
    m->producer_name = "dptrain";
    m->producer_version = "0.1.0";
    m->doc_string = "A dptrain network exported for inference (batch norm with its running "
                    "statistics, dropout as the identity). Input and output: see metadata "
                    "dptrain.input and dptrain.output.";
    m->graph = g;
    m->n_metadata_props = np, m->metadata_props = props;

    size_t bytes = onnx__model_proto__get_packed_size(m);
    if ((double)bytes > ONNX_MAX_BYTES) {
        s = dpt_fail(DPT_ERR_UNSUPPORTED, "%s: the model takes %zu bytes, over the 2 GiB a "
                     "protobuf message may hold (ONNX external data is not written)", path,
                     bytes);
        goto done;
    }
    buf = malloc(bytes ? bytes : 1);
    if (!buf)
        goto oom;
    if (onnx__model_proto__pack(m, buf) != bytes) {
        s = dpt_fail(DPT_ERR_IO, "%s: protobuf packing gave an unexpected size", path);
        goto done;
    }
    s = write_atomic(path, buf, bytes);
    goto done;
oom:
    s = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory building the ONNX model", path);
done:
    free(buf);
    for (size_t k = 0; k < x.n_blocks; k++)
        free(x.blocks[k]);
    free(x.blocks);
    free(x.nodes);
    free(x.inits);
    free(x.val);
    free(x.v4);
    free(x.v2);
    free(x.rank);
    return s;
}

#endif
