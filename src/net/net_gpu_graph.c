/* The training step of a GPU network as a CUDA graph: which networks can
 * be captured, the graphs kept per minibatch shape, and the run (see
 * net_gpu_graph.h for what is inside the graph and what is not, and why). */
#include "net/net_gpu_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- host logic (any build) -------------------------------------------------------- */

int net_gpu_graph_env_valid(const char *v)
{
    return v && (!strcmp(v, "0") || !strcmp(v, "1") || !strcmp(v, "off") || !strcmp(v, "on"));
}

int net_gpu_graph_env_off(void)
{
    const char *v = getenv("DPT_CUDA_GRAPH");
    return v && (!strcmp(v, "0") || !strcmp(v, "off"));
}

const char *net_gpu_graph_refusal(const dpt_net *net, char *why, size_t n)
{
    /* Layer types whose CUDA entries launch the same work with the same
     * arguments for every step of one shape (graph_key) and keep no
     * per-step host state: a new type joins the list once that is checked
     * for it. lstm/gru: the lengths are uploaded by dpt_net_set_steps,
     * their presence and the padding side are in the key, the carried
     * state is copied on the device; dropout: the per-step part of its key
     * is read from the device (net_gpu_graph_dropout_key), except with
     * left padding (net_gpu_graph_step_refusal). */
    static const layer_type *const safe[] = {
        &dpt_layer_input,   &dpt_layer_conv,      &dpt_layer_batchnorm,
        &dpt_layer_relu,    &dpt_layer_fc,        &dpt_layer_softmax,
        &dpt_layer_add,     &dpt_layer_concat,    &dpt_layer_maxpool,
        &dpt_layer_avgpool, &dpt_layer_globalavgpool, &dpt_layer_leakyrelu,
        &dpt_layer_sigmoid, &dpt_layer_tanh,  &dpt_layer_seqinput,
        &dpt_layer_lstm,    &dpt_layer_gru,   &dpt_layer_dropout};
    for (int i = 0; i < net->n_layers; i++) {
        const dpt_layer *l = &net->layers[i];
        int ok = 0;
        for (size_t j = 0; j < sizeof safe / sizeof *safe && !ok; j++)
            ok = l->type == safe[j];
        if (ok)
            continue;
        snprintf(why, n, "layer '%s' (%s) is not known to be capturable", l->name,
                 l->type->name);
        return why;
    }
    return NULL;
}

const char *net_gpu_graph_step_refusal(const dpt_net *net)
{
    /* Dropout on left-padded sequences keys each observation from its
     * first valid step: one launch per observation, its offset read from
     * the lengths on the host. */
    if (!(net->pad_left && net->len))
        return NULL;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].type == &dpt_layer_dropout && net->layers[i].seq)
            return "dropout on left-padded sequences";
    return NULL;
}

void net_gpu_graph_dropout_key(const dpt_net *net, uint64_t key[4])
{
    /* dropout_layer_begin's values, in dropout_keyed_kernel's order. */
    key[0] = net->seed;
    key[1] = (uint64_t)net->epoch;
    key[2] = (uint64_t)net->iteration;
    key[3] = (uint64_t)net->obs_offset;
}

static int same_key(graph_key a, graph_key b)
{
    return a.n == b.n && a.steps == b.steps && a.cap_steps == b.cap_steps &&
           a.w_bits == b.w_bits && a.has_len == b.has_len && a.pad_left == b.pad_left &&
           a.update == b.update;
}

graph_key net_gpu_graph_key(const dpt_net *net, int n, float w, int update)
{
    graph_key k = {n, net->steps, net->cap_steps, 0, net->len != NULL, net->pad_left, update};
    memcpy(&k.w_bits, &w, sizeof k.w_bits);
    return k;
}

int gpu_graphs_next(gpu_graphs *G, graph_key k, graph_slot **slot, void **evicted)
{
    *evicted = NULL;
    G->clock++;
    graph_slot *hit = NULL, *victim = &G->slot[0];
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        graph_slot *s = &G->slot[i];
        if (s->warm && same_key(s->key, k))
            hit = s;
        /* A free slot first, else the least recently used. */
        if (victim->warm && (!s->warm || s->used < victim->used))
            victim = s;
    }
    if (hit) {
        hit->used = G->clock;
        *slot = hit;
        return hit->graph ? GRAPH_RUN_REPLAY : GRAPH_RUN_CAPTURE;
    }
    *evicted = victim->graph;
    *victim = (graph_slot){k, 1, NULL, G->clock};
    *slot = victim;
    return GRAPH_RUN_EAGER;
}

/* ---- the device part -------------------------------------------------------------------- */

#ifdef DPT_HAVE_CUDA

#include "ops/cuda/gpu_graph.h"

void net_gpu_graph_clear(gpu_graphs *G)
{
    for (int i = 0; i < GRAPH_SLOTS; i++) {
        gpu_graph_free(G->slot[i].graph);
        G->slot[i] = (graph_slot){{0, 0, 0, 0, 0, 0, 0}, 0, NULL, 0};
    }
}

/* Eager from now on, with the reason noted once. */
static void graphs_off(dpt_net *net, gpu_graphs *G, const char *why)
{
    G->on = 0;
    snprintf(G->why, sizeof G->why, "%.250s", why);
    net_gpu_note(net, "CUDA graph: off: %s\n", G->why);
    net_gpu_graph_clear(G);
}

dpt_status net_gpu_graph_run(dpt_net *net, gpu_graphs *G, int n, float w, double scale,
                             graph_body body)
{
    graph_key k = net_gpu_graph_key(net, n, w, net_gpu_graph_update_code(net));
    graph_slot *slot;
    void *evicted;
    int what = gpu_graphs_next(G, k, &slot, &evicted);
    gpu_graph_free(evicted);
    struct gpu_ctx *ctx = net_gpu_ctx(net);
    dpt_status s;
    /* A graph holds the addresses of the context's workspaces: one made
     * before they were reallocated is captured again. */
    if (what == GRAPH_RUN_REPLAY && gpu_graph_stale(ctx, slot->graph)) {
        gpu_graph_free(slot->graph);
        slot->graph = NULL;
        what = GRAPH_RUN_CAPTURE;
    }
    if (what == GRAPH_RUN_REPLAY) {
        if ((s = gpu_graph_launch(ctx, slot->graph)) == DPT_OK) {
            G->replays++;
            net_gpu_graph_replayed(net, n, scale);
        }
        return s;
    }
    if (what == GRAPH_RUN_CAPTURE) {
        gpu_graph *gr = NULL;
        char body_error[256] = "";
        if ((s = gpu_graph_begin(ctx)) == DPT_OK) {
            dpt_status sb = body(net, n, w, scale);
            if (sb == DPT_OK)
                sb = net_gpu_graph_tail(net);
            if (sb != DPT_OK)
                snprintf(body_error, sizeof body_error, "%s", dpt_last_error());
            s = gpu_graph_end(ctx, sb == DPT_OK, &gr);
            if (s == DPT_OK && sb != DPT_OK)
                s = dpt_fail(sb, "%s", body_error);
        }
        if (s == DPT_OK) {
            slot->graph = gr;
            G->captures++;
            /* Recording ran nothing: the step runs now. */
            if ((s = gpu_graph_launch(ctx, gr)) == DPT_OK)
                net_gpu_graph_replayed(net, n, scale);
            return s;
        }
        /* Not capturable here (or a failure the eager run below reports
         * again, if it is one): eager launches from now on. */
        char why[300];
        snprintf(why, sizeof why, "capture failed: %s", body_error[0] ? body_error
                                                                     : dpt_last_error());
        graphs_off(net, G, why);
    }
    G->eager++;
    s = body(net, n, w, scale);
    return s == DPT_OK ? net_gpu_graph_tail(net) : s;
}

#endif /* DPT_HAVE_CUDA */
