/* Learning-rate schedules (dptrain/optim.h): parsed from text, evaluated
 * from the position in training alone, so every worker and a resumed run
 * compute the same rate for the same iteration. */
#include "dptrain/optim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEXT 256

static const double pi = 3.14159265358979323846; /* M_PI is not C11 */

/* A finite number in [lo, hi] (open at lo when lo_open), all of v. */
static int number(const char *v, double lo, int lo_open, double hi, double *out)
{
    if (!*v)
        return -1;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || !isfinite(x) || x < lo || (lo_open && x == lo) || x > hi)
        return -1;
    *out = x;
    return 0;
}

static dpt_status set_key(dpt_lr_schedule *s, const char *text, char *item, unsigned *seen)
{
    char *eq = strchr(item, '=');
    if (!eq || eq == item)
        return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': '%s' is not KEY=VALUE", text, item);
    *eq = '\0';
    const char *key = item, *val = eq + 1;
    double x;
    unsigned bit;
    if (!strcmp(key, "every") && s->kind == DPT_LR_PIECEWISE) {
        bit = 1;
        if (number(val, 1, 0, 1e6, &x) || x != floor(x))
            return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': 'every=%s': need a whole number of "
                            "epochs in [1, 1000000]", text, val);
        s->every = (int)x;
    } else if (!strcmp(key, "drop") && s->kind == DPT_LR_PIECEWISE) {
        bit = 2;
        if (number(val, 0, 1, 1, &x))
            return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': 'drop=%s': need a factor in (0, 1]",
                            text, val);
        s->drop = x;
    } else if (!strcmp(key, "min") && s->kind == DPT_LR_COSINE) {
        bit = 4;
        if (number(val, 0, 0, 1e6, &x))
            return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': 'min=%s': need a learning rate >= 0",
                            text, val);
        s->min_lr = x;
    } else if (!strcmp(key, "warmup")) {
        bit = 8;
        if (number(val, 0, 0, 1e6, &x))
            return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': 'warmup=%s': need a number of epochs "
                            "in [0, 1000000]", text, val);
        s->warmup = x;
    } else {
        static const char *const names[] = {"constant", "piecewise", "cosine"};
        static const char *const keys[] = {"warmup", "every, drop, warmup", "min, warmup"};
        return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': unknown key '%s' for %s (keys: %s)", text,
                        key, names[s->kind], keys[s->kind]);
    }
    if (*seen & bit)
        return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': '%s' given twice", text, key);
    *seen |= bit;
    return DPT_OK;
}

dpt_status dpt_lr_schedule_parse(const char *text, dpt_lr_schedule *out)
{
    dpt_lr_schedule s = DPT_LR_SCHEDULE_INIT;
    if (!text || !*text) {
        *out = s;
        return DPT_OK;
    }
    if (strlen(text) >= MAX_TEXT)
        return dpt_fail(DPT_ERR_ARG, "lr schedule '%.40s...': longer than %d characters", text,
                        MAX_TEXT - 1);
    char buf[MAX_TEXT];
    snprintf(buf, sizeof buf, "%s", text);
    /* Items between commas. The first may be NAME or NAME:KEY=VALUE, every
     * later one is KEY=VALUE. */
    char *items[MAX_TEXT]; /* one more than the commas text can hold */
    int n = 0;
    for (char *p = buf;; p++) {
        items[n++] = p;
        if (!(p = strchr(p, ',')))
            break;
        *p = '\0';
    }
    int first = 0;
    char *colon = strchr(items[0], ':');
    if (colon || !strchr(items[0], '=')) {
        if (colon)
            *colon = '\0';
        const char *name = items[0];
        if (!strcmp(name, "constant"))
            s.kind = DPT_LR_CONSTANT;
        else if (!strcmp(name, "piecewise"))
            s.kind = DPT_LR_PIECEWISE;
        else if (!strcmp(name, "cosine"))
            s.kind = DPT_LR_COSINE;
        else
            return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': unknown schedule '%s' (constant, "
                            "piecewise, cosine)", text, name);
        if (colon)
            items[0] = colon + 1;
        else
            first = 1;
    }
    unsigned seen = 0;
    for (int i = first; i < n; i++) {
        if (!*items[i])
            return dpt_fail(DPT_ERR_ARG, "lr schedule '%s': an empty item (KEY=VALUE expected)",
                            text);
        dpt_status st = set_key(&s, text, items[i], &seen);
        if (st != DPT_OK)
            return st;
    }
    *out = s;
    return DPT_OK;
}

void dpt_lr_schedule_format(const dpt_lr_schedule *s, char *buf, size_t cap)
{
    int k;
    switch (s->kind) {
    case DPT_LR_PIECEWISE:
        k = snprintf(buf, cap, "piecewise:every=%d,drop=%.17g", s->every, s->drop);
        break;
    case DPT_LR_COSINE:
        k = snprintf(buf, cap, "cosine:min=%.17g", s->min_lr);
        break;
    default:
        k = snprintf(buf, cap, "constant");
        break;
    }
    if (s->warmup > 0 && k >= 0 && (size_t)k < cap)
        snprintf(buf + k, cap - (size_t)k, ",warmup=%.17g", s->warmup);
}

double dpt_lr_at(const dpt_lr_schedule *s, double base_lr, int epoch, long it, long per_epoch,
                 int epochs)
{
    if (per_epoch < 1)
        per_epoch = 1;
    if (epochs < 1)
        epochs = 1;
    /* t: iterations before this one over the run. */
    double t = (double)(epoch - 1) * (double)per_epoch + (double)it;
    double lr = base_lr;
    switch (s->kind) {
    case DPT_LR_PIECEWISE:
        lr = base_lr * pow(s->drop, (double)((epoch - 1) / (s->every > 0 ? s->every : 1)));
        break;
    case DPT_LR_COSINE: {
        double total = (double)epochs * (double)per_epoch;
        double f = t < total ? t / total : 1.0;
        lr = s->min_lr + (base_lr - s->min_lr) * (1.0 + cos(pi * f)) / 2.0;
        break;
    }
    default:
        break;
    }
    if (s->warmup > 0) {
        double w = ceil(s->warmup * (double)per_epoch);
        if (t + 1 < w)
            lr *= (t + 1) / w;
    }
    return lr;
}
