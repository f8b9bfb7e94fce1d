/* The CPU emulation of bf16 products (net_bf16emu.h): a net_dev that is
 * the CPU's except around conv and fc layers, where it rounds the
 * operands into scratch copies, swaps the layer's weights for a rounded
 * copy while the CPU kernel runs, and rounds what cuDNN would write in
 * bf16. Slow (a copy per operand per call, allocated per call): it
 * exists to measure accuracy, not speed. */
#include "net/net_bf16emu.h"
#include "net/net_impl.h"

#include <string.h>

float net_bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) {
        if (u & 0x007fffffu)
            u |= 0x00400000u; /* a NaN stays a (quiet) NaN */
    } else {
        u += 0x7fffu + ((u >> 16) & 1u); /* nearest, ties to even; may carry to inf */
    }
    u &= 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void round_into(float *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = net_bf16_round(src[i]);
}

static size_t count3(const int *chw) { return (size_t)chw[0] * chw[1] * chw[2]; }

/* 1 conv, 2 fc, 0 any other type. */
static int kind(const dpt_layer *l)
{
    return !strcmp(l->type->name, "conv") ? 1 : !strcmp(l->type->name, "fc") ? 2 : 0;
}

/* Weights (not the bias) at the start of l->p. */
static size_t n_weights(const dpt_layer *l)
{
    if (kind(l) == 2)
        return count3(l->in) * (size_t)l->out[0];
    conv_geom g = conv_layer_geom(l);
    return (size_t)l->out[0] * (l->in[0] / g.groups) * g.kh * g.kw;
}

/* Rounded copies of the input (rows of l->in), an output-side operand
 * (rows of l->out, or none) and the learnables (weights rounded, bias as
 * it is), in one allocation. */
typedef struct emu_ops {
    float *mem, *x, *o, *p;
} emu_ops;

static dpt_status ops_make(const dpt_layer *l, const float *x, const float *o, int n, emu_ops *e)
{
    size_t nx = (size_t)n * count3(l->in), no = o ? (size_t)n * count3(l->out) : 0;
    size_t np = l->n_learn_values, nw = n_weights(l);
    e->mem = dpt_alloc((nx + no + np + 1) * sizeof(float));
    if (!e->mem)
        return dpt_fail(DPT_ERR_NOMEM, "out of memory");
    e->x = e->mem, e->o = e->x + nx, e->p = e->o + no;
    round_into(e->x, x, nx);
    if (o)
        round_into(e->o, o, no);
    round_into(e->p, l->p, nw);
    memcpy(e->p + nw, l->p + nw, (np - nw) * sizeof(float));
    return DPT_OK;
}

static dpt_status emu_forward(dpt_net *net, dpt_layer *l, const float *const *x, float *y, int n,
                              dpt_mode mode)
{
    int k = kind(l);
    if (!k)
        return net_dev_cpu.forward(net, l, x, y, n, mode);
    emu_ops e;
    dpt_status s = ops_make(l, x[0], NULL, n, &e);
    if (s != DPT_OK)
        return s;
    const float *xr[1] = {e.x};
    float *p = l->p;
    l->p = e.p; /* the layer reads its weights through l->p */
    s = net_dev_cpu.forward(net, l, xr, y, n, mode);
    l->p = p;
    dpt_free(e.mem);
    if (s == DPT_OK && k == 1)
        round_into(y, y, (size_t)n * count3(l->out));
    return s;
}

static dpt_status emu_backward(dpt_net *net, dpt_layer *l, const float *const *x, const float *y,
                               const float *dy, float *const *dx, int n)
{
    int k = kind(l);
    if (!k)
        return net_dev_cpu.backward(net, l, x, y, dy, dx, n);
    emu_ops e;
    dpt_status s = ops_make(l, x[0], dy, n, &e);
    if (s != DPT_OK)
        return s;
    const float *xr[1] = {e.x};
    float *p = l->p;
    l->p = e.p;
    s = net_dev_cpu.backward(net, l, xr, y, e.o, dx, n);
    l->p = p;
    dpt_free(e.mem);
    if (s == DPT_OK && k == 1) {
        round_into(l->g, l->g, n_weights(l));
        if (dx[0])
            round_into(dx[0], dx[0], (size_t)n * count3(l->in));
    }
    return s;
}

/* The CPU's entries for everything else (net_dev_cpu's are static in
 * net.c: called through its table). */
static dpt_status emu_alloc(dpt_net *net, size_t n, float **out) { return net_dev_cpu.alloc(net, n, out); }
static void emu_release(dpt_net *net, float *p) { net_dev_cpu.release(net, p); }
static void emu_zero(dpt_net *net, float *p, size_t n) { net_dev_cpu.zero(net, p, n); }
static void emu_add(dpt_net *net, float *d, const float *s, size_t n) { net_dev_cpu.add(net, d, s, n); }
static void emu_copy(dpt_net *net, float *d, const float *s, size_t n) { net_dev_cpu.copy(net, d, s, n); }
static dpt_status emu_upload(dpt_net *net, float *d, const float *h, size_t n)
{
    return net_dev_cpu.upload(net, d, h, n);
}
static dpt_status emu_download(dpt_net *net, float *h, const float *s, size_t n)
{
    return net_dev_cpu.download(net, h, s, n);
}
static int emu_all_finite(dpt_net *net, const float *x, size_t n)
{
    return net_dev_cpu.all_finite(net, x, n);
}

static const net_dev emu_dev = {
    .name = "cpu (bf16 products emulated)", .alloc = emu_alloc, .release = emu_release,
    .zero = emu_zero, .add = emu_add, .copy = emu_copy, .upload = emu_upload,
    .download = emu_download, .all_finite = emu_all_finite, .forward = emu_forward,
    .backward = emu_backward,
};

dpt_status net_emulate_bf16(dpt_net *net)
{
    if (net->gpu || net->dev != &net_dev_cpu)
        return dpt_fail(DPT_ERR_UNSUPPORTED, "%s: the bf16 emulation runs on a CPU network only",
                        net->source);
    for (int i = 1; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        if (kind(l) && (l->in_bnf || l->out_bnf || l->sums_out))
            return dpt_fail(DPT_ERR_UNSUPPORTED, "%s:%d: layer '%s' is fused with a batch norm: "
                            "build the network with DPT_FUSION=0 to emulate bf16",
                            net->source, l->line, l->name);
        if (kind(l) && l->seq)
            return dpt_fail(DPT_ERR_UNSUPPORTED, "%s:%d: layer '%s': no bf16 emulation on sequences",
                            net->source, l->line, l->name);
    }
    net->dev = &emu_dev;
    return DPT_OK;
}
