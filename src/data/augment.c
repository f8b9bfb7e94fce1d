/* Random affine augmentation of training images (MATLAB imageDataAugmenter):
 * the description, its parser, and the per-observation transform. The
 * draws come from a counter-based key (core.h), never from a stream that
 * advances, so a transform depends only on where the observation is used. */
#include "dptrain/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Range limits: generous for images, small enough that no coordinate
 * computed from them overflows or turns into NaN. */
#define MAX_ABS_VALUE 1e6
#define MIN_SCALE 1e-3
#define MAX_SCALE 1e3

/* ---- the description ------------------------------------------------------ */

static int is_range(const double r[2], double v) { return r[0] == v && r[1] == v; }

int dpt_augment_is_identity(const dpt_augment *a)
{
    return !a || (!a->reflect_x && !a->reflect_y && is_range(a->rotate, 0) &&
                  is_range(a->scale, 1) && is_range(a->scale_x, 1) && is_range(a->scale_y, 1) &&
                  is_range(a->shear_x, 0) && is_range(a->shear_y, 0) &&
                  is_range(a->translate_x, 0) && is_range(a->translate_y, 0));
}

/* Why range r of kind `what` is not allowed, or NULL. */
static const char *range_problem(const double r[2], int scale, int shear)
{
    if (!(isfinite(r[0]) && isfinite(r[1])))
        return "is not finite";
    if (r[0] > r[1])
        return "has MIN > MAX";
    if (scale && !(r[0] >= MIN_SCALE && r[1] <= MAX_SCALE))
        return "must be within [0.001, 1000]";
    if (shear && !(r[0] > -90 && r[1] < 90))
        return "must be within (-90, 90) degrees";
    if (fabs(r[0]) > MAX_ABS_VALUE || fabs(r[1]) > MAX_ABS_VALUE)
        return "must be within [-1e6, 1e6]";
    return NULL;
}

dpt_status dpt_augment_check(const dpt_augment *a)
{
    if (!a)
        return dpt_fail(DPT_ERR_ARG, "augmentation: NULL description");
    if (a->version != DPT_AUGMENT_VERSION)
        return dpt_fail(DPT_ERR_ARG, "augmentation: description version %d (this library knows %d)",
                        a->version, DPT_AUGMENT_VERSION);
    const struct {
        const char *name;
        const double *r;
        int scale, shear;
    } f[] = {{"rotate", a->rotate, 0, 0},         {"scale", a->scale, 1, 0},
             {"scale_x", a->scale_x, 1, 0},       {"scale_y", a->scale_y, 1, 0},
             {"shear_x", a->shear_x, 0, 1},       {"shear_y", a->shear_y, 0, 1},
             {"translate_x", a->translate_x, 0, 0}, {"translate_y", a->translate_y, 0, 0}};
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) {
        const char *why = range_problem(f[i].r, f[i].scale, f[i].shear);
        if (why)
            return dpt_fail(DPT_ERR_ARG, "augmentation: %s range [%g, %g] %s", f[i].name, f[i].r[0],
                            f[i].r[1], why);
    }
    return DPT_OK;
}

/* ---- the parser ------------------------------------------------------------- */

/* A number filling text[0..len) exactly. */
static int parse_number(const char *text, size_t len, double *v)
{
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return 0;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *end;
    *v = strtod(buf, &end);
    return *end == '\0' && isfinite(*v);
}

/* value text "A" or "MIN:MAX" into r; symmetric: "A" means -A:A (A >= 0),
 * else "A" is refused (scales need a range). Returns NULL or the problem. */
static const char *parse_range(const char *v, size_t len, int symmetric, double r[2])
{
    const char *colon = memchr(v, ':', len);
    if (!colon) {
        double x;
        if (!symmetric)
            return "needs a range MIN:MAX";
        if (!parse_number(v, len, &x))
            return "is not a number";
        if (x < 0)
            return "a single value A means -A:A and must not be negative";
        r[0] = -x, r[1] = x;
        return NULL;
    }
    size_t n0 = (size_t)(colon - v);
    if (!parse_number(v, n0, &r[0]) || !parse_number(colon + 1, len - n0 - 1, &r[1]))
        return "is not a number or MIN:MAX";
    if (r[0] > r[1])
        return "has MIN > MAX";
    return NULL;
}

enum { K_REFLECT_X, K_REFLECT_Y, K_ROTATE, K_SCALE, K_SCALE_X, K_SCALE_Y, K_SHEAR_X, K_SHEAR_Y,
       K_TRANSLATE, K_TRANSLATE_X, K_TRANSLATE_Y, K_N };

static const struct {
    const char *name;
    int kind;
    int has_value, symmetric, scale, shear;
    const char *form;
} items[] = {
    {"reflect", K_REFLECT_X, 0, 0, 0, 0, "reflect"},
    {"reflect-x", K_REFLECT_X, 0, 0, 0, 0, "reflect-x"},
    {"reflect-y", K_REFLECT_Y, 0, 0, 0, 0, "reflect-y"},
    {"rotate", K_ROTATE, 1, 1, 0, 0, "rotate=DEGREES or rotate=MIN:MAX"},
    {"scale", K_SCALE, 1, 0, 1, 0, "scale=MIN:MAX"},
    {"scale-x", K_SCALE_X, 1, 0, 1, 0, "scale-x=MIN:MAX"},
    {"scale-y", K_SCALE_Y, 1, 0, 1, 0, "scale-y=MIN:MAX"},
    {"shear-x", K_SHEAR_X, 1, 1, 0, 1, "shear-x=DEGREES or shear-x=MIN:MAX"},
    {"shear-y", K_SHEAR_Y, 1, 1, 0, 1, "shear-y=DEGREES or shear-y=MIN:MAX"},
    {"translate", K_TRANSLATE, 1, 1, 0, 0, "translate=PIXELS or translate=MIN:MAX"},
    {"translate-x", K_TRANSLATE_X, 1, 1, 0, 0, "translate-x=PIXELS or translate-x=MIN:MAX"},
    {"translate-y", K_TRANSLATE_Y, 1, 1, 0, 0, "translate-y=PIXELS or translate-y=MIN:MAX"},
};

dpt_status dpt_augment_parse(const char *text, dpt_augment *out)
{
    if (!(text && out))
        return dpt_fail(DPT_ERR_ARG, "dpt_augment_parse: NULL argument");
    dpt_augment a = DPT_AUGMENT_INIT;
    if (!text[0] || !strcmp(text, "none")) {
        *out = a;
        return DPT_OK;
    }
    int seen[K_N] = {0};
    const char *p = text;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        /* "reflect, rotate=10" (a space after the comma) means the same. */
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        int ilen = len > 200 ? 200 : (int)len; /* how much of an item a message shows */
        if (!len)
            return dpt_fail(DPT_ERR_ARG, "augmentation '%.200s': an empty item (two commas, or a "
                            "comma at an end)", text);
        const char *eq = memchr(p, '=', len);
        size_t nlen = eq ? (size_t)(eq - p) : len;
        size_t k = 0;
        while (k < sizeof items / sizeof *items &&
               !(strlen(items[k].name) == nlen && !strncmp(items[k].name, p, nlen)))
            k++;
        if (k == sizeof items / sizeof *items)
            return dpt_fail(DPT_ERR_ARG, "augmentation item '%.*s': unknown (reflect, reflect-x, "
                            "reflect-y, rotate=, scale=, scale-x=, scale-y=, shear-x=, shear-y=, "
                            "translate=, translate-x=, translate-y=)", ilen, p);
        int kind = items[k].kind;
        if (items[k].has_value != (eq != NULL))
            return dpt_fail(DPT_ERR_ARG, "augmentation item '%.*s': %s (write %s)", ilen, p,
                            eq ? "takes no value" : "needs a value", items[k].form);
        /* translate sets both axes: it collides with either. */
        int clash = seen[kind] ||
                    (kind == K_TRANSLATE && (seen[K_TRANSLATE_X] || seen[K_TRANSLATE_Y])) ||
                    ((kind == K_TRANSLATE_X || kind == K_TRANSLATE_Y) && seen[K_TRANSLATE]) ||
                    (kind == K_SCALE && (seen[K_SCALE_X] || seen[K_SCALE_Y])) ||
                    ((kind == K_SCALE_X || kind == K_SCALE_Y) && seen[K_SCALE]);
        if (clash)
            return dpt_fail(DPT_ERR_ARG, "augmentation item '%.*s': given twice or together with "
                            "another item for the same axis", ilen, p);
        seen[kind] = 1;
        double r[2] = {0, 0};
        if (eq) {
            const char *why = parse_range(eq + 1, len - nlen - 1, items[k].symmetric, r);
            if (!why)
                why = range_problem(r, items[k].scale, items[k].shear);
            if (why)
                return dpt_fail(DPT_ERR_ARG, "augmentation item '%.*s': the value %s (write %s)",
                                ilen, p, why, items[k].form);
        }
        switch (kind) {
        case K_REFLECT_X: a.reflect_x = 1; break;
        case K_REFLECT_Y: a.reflect_y = 1; break;
        case K_ROTATE: memcpy(a.rotate, r, sizeof r); break;
        case K_SCALE: memcpy(a.scale, r, sizeof r); break;
        case K_SCALE_X: memcpy(a.scale_x, r, sizeof r); break;
        case K_SCALE_Y: memcpy(a.scale_y, r, sizeof r); break;
        case K_SHEAR_X: memcpy(a.shear_x, r, sizeof r); break;
        case K_SHEAR_Y: memcpy(a.shear_y, r, sizeof r); break;
        case K_TRANSLATE:
            memcpy(a.translate_x, r, sizeof r);
            memcpy(a.translate_y, r, sizeof r);
            break;
        case K_TRANSLATE_X: memcpy(a.translate_x, r, sizeof r); break;
        case K_TRANSLATE_Y: memcpy(a.translate_y, r, sizeof r); break;
        }
        if (!end)
            break;
        p = end + 1;
    }
    *out = a;
    return DPT_OK;
}

/* ---- the transform ------------------------------------------------------------ */

/* sin and cos of degrees, exact at multiples of 90 (as MATLAB's sind/cosd),
 * so a quarter turn moves pixels without blending them. */
static void sincos_deg(double deg, double *s, double *c)
{
    double r = fmod(deg, 360.0);
    if (r < 0)
        r += 360.0;
    if (r == 0 || r == 90 || r == 180 || r == 270) {
        static const double sv[4] = {0, 1, 0, -1}, cv[4] = {1, 0, -1, 0};
        int q = (int)(r / 90);
        *s = sv[q], *c = cv[q];
        return;
    }
    double t = r * (3.14159265358979323846 / 180.0);
    *s = sin(t), *c = cos(t);
}

static double tan_deg(double deg) { return deg == 0 ? 0 : tan(deg * (3.14159265358979323846 / 180.0)); }

/* The value of range r at uniform u; exactly r[0] when the range is one value. */
static double at(const double r[2], double u) { return r[0] == r[1] ? r[0] : r[0] + (r[1] - r[0]) * u; }

/* m = a * m (2x2, row-major). */
static void left_mul(const double a[4], double m[4])
{
    double r[4] = {a[0] * m[0] + a[1] * m[2], a[0] * m[1] + a[1] * m[3],
                   a[2] * m[0] + a[3] * m[2], a[2] * m[1] + a[3] * m[3]};
    memcpy(m, r, sizeof r);
}

void dpt_augment_image(const dpt_augment *a, uint64_t key, const float *in, float *out, int c,
                       int h, int w)
{
    size_t hw = (size_t)h * (size_t)w;
    double u[10];
    for (int j = 0; j < 10; j++)
        u[j] = dpt_rng_key_uniform(key, (uint64_t)j);
    double fx = a->reflect_x && u[0] < 0.5 ? -1 : 1, fy = a->reflect_y && u[1] < 0.5 ? -1 : 1;
    double sn, cs;
    sincos_deg(at(a->rotate, u[2]), &sn, &cs);
    double s = at(a->scale, u[3]), sx = s * at(a->scale_x, u[4]), sy = s * at(a->scale_y, u[5]);
    double ta = tan_deg(at(a->shear_x, u[6])), tb = tan_deg(at(a->shear_y, u[7]));
    double tx = at(a->translate_x, u[8]), ty = at(a->translate_y, u[9]);
    /* Forward q = c + R S Hx Hy F (p - c) + t; sampling needs its inverse
     * F Hy^-1 Hx^-1 S^-1 R^-1, built right to left. Identity factors leave
     * the values exact. */
    double m[4] = {cs, -sn, sn, cs};
    const double s_inv[4] = {1 / sx, 0, 0, 1 / sy}, hx_inv[4] = {1, -ta, 0, 1},
                 hy_inv[4] = {1, 0, -tb, 1}, f[4] = {fx, 0, 0, fy};
    left_mul(s_inv, m);
    left_mul(hx_inv, m);
    left_mul(hy_inv, m);
    left_mul(f, m);
    if (m[0] == 1 && m[1] == 0 && m[2] == 0 && m[3] == 1 && tx == 0 && ty == 0) {
        memcpy(out, in, (size_t)c * hw * sizeof *out);
        return;
    }
    double cx = 0.5 * (w - 1), cy = 0.5 * (h - 1);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double dx = x - cx - tx, dy = y - cy - ty;
            double px = m[0] * dx + m[1] * dy + cx, py = m[2] * dx + m[3] * dy + cy;
            size_t o = (size_t)y * (size_t)w + (size_t)x;
            /* All four neighbours outside (and NaN-safe): the fill value. */
            if (!(px > -1 && px < w && py > -1 && py < h)) {
                for (int k = 0; k < c; k++)
                    out[(size_t)k * hw + o] = 0.0f;
                continue;
            }
            int x0 = (int)floor(px), y0 = (int)floor(py);
            float wx = (float)(px - x0), wy = (float)(py - y0);
            int in_x0 = x0 >= 0, in_x1 = x0 + 1 < w, in_y0 = y0 >= 0, in_y1 = y0 + 1 < h;
            for (int k = 0; k < c; k++) {
                const float *pl = in + (size_t)k * hw;
                float v00 = in_y0 && in_x0 ? pl[(size_t)y0 * w + x0] : 0.0f;
                float v01 = in_y0 && in_x1 ? pl[(size_t)y0 * w + x0 + 1] : 0.0f;
                float v10 = in_y1 && in_x0 ? pl[(size_t)(y0 + 1) * w + x0] : 0.0f;
                float v11 = in_y1 && in_x1 ? pl[(size_t)(y0 + 1) * w + x0 + 1] : 0.0f;
                float top = (1.0f - wx) * v00 + wx * v01, bottom = (1.0f - wx) * v10 + wx * v11;
                out[(size_t)k * hw + o] = (1.0f - wy) * top + wy * bottom;
            }
        }
    }
}
