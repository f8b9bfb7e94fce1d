/* Fuzz the network-spec parser and shape inference (dpt_net_from_spec),
 * then one forward and backward pass of what parses. */
#include "dptrain/net.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n > 1 << 16)
        return 0;
    /* Under the fuzzer's 2 GB RSS limit: a valid spec needing more is
     * refused by the network memory check, which is itself under test. */
    setenv("DPT_MAX_NET_MEMORY", "512M", 0);
    char *text = malloc(n + 1);
    if (!text)
        return 0;
    memcpy(text, data, n);
    text[n] = '\0';
    dpt_net *net = NULL;
    /* max_batch 1 keeps a huge but valid network from using all memory. */
    if (dpt_net_from_spec(text, "fuzz.spec", 3, 1, 0, &net) == DPT_OK) {
        /* A spec that parses must also run one forward pass (a sequence
         * network on 3 steps, the last one padding). */
        int chw[3], steps = 1;
        if (dpt_net_is_sequence(net) &&
            dpt_net_set_steps(net, 3, (const int[]){2}, 1, 0) == DPT_OK)
            steps = 3;
        dpt_net_input_shape(net, chw);
        size_t in = (size_t)chw[0] * chw[1] * chw[2] * (size_t)steps;
        float *x = in <= (1u << 20) ? calloc(in, sizeof *x) : NULL;
        const float *y;
        if (x)
            (void)dpt_net_forward(net, x, 1, DPT_MODE_PREDICT, &y);
        /* And one training step's passes: the backward of every layer
         * type (pooling windows, dilated and grouped convs, fan-out and
         * merges) on the shapes the spec makes. */
        size_t out = (size_t)dpt_net_n_outputs(net) *
                     (size_t)(dpt_net_output_is_sequence(net) ? steps : 1);
        float *dy = x && out <= (1u << 20) ? malloc(out * sizeof *dy) : NULL;
        if (dy) {
            for (size_t i = 0; i < out; i++)
                dy[i] = 1.0f / (float)(i + 1);
            if (dpt_net_forward(net, x, 1, DPT_MODE_TRAIN, &y) == DPT_OK)
                (void)dpt_net_backward(net, dy, 0);
        }
        free(dy);
        free(x);
        dpt_net_free(net);
    }
    free(text);
    return 0;
}
