/* The DNNL convolution algorithm (conv_dnnl.h): oneDNN primitives, cached
 * per shape.
 *
 * Each shape gets three passes: forward (with bias), backward weights and
 * backward data. A pass is one convolution primitive plus, for each operand
 * whose layout the primitive chose differently from dptrain's plain NCHW /
 * OIHW, a reorder primitive into or out of a buffer in the caller's work.
 * Two ways to pick layouts: "plain" forces NCHW/OIHW on the primitive (no
 * reorders; oneDNN then mostly runs its GEMM-based convolution), "any" lets
 * it choose blocked layouts (nChw16c, OIhw16i16o...) and pays the reorders
 * on every call, weights included, because the optimizer owns the weights
 * in OIHW. DPT_DNNL_LAYOUT=plain|any forces one; by default each shape
 * takes the layout that bench/RESULTS-dnnl.md measured faster (below).
 *
 * Threads: Debian's oneDNN runs on OpenMP. Each call sets the calling
 * thread's OpenMP thread count to 1 for the duration of the call (the
 * setting is per thread, so other workers and the caller's own setting are
 * untouched), and primitives are also created under it, so oneDNN plans
 * for one thread: every worker computes on its own core, and the
 * reductions (weight gradients) run in one fixed order, the same bits every
 * run. The bias gradient is summed here in float64 in the GEMM path's
 * order, so it is the reference's bits exactly.
 *
 * The scratchpad is user-managed (carved from work), so executing one
 * primitive from several threads at once needs no allocation and no lock;
 * memory objects and the stream are made per call (cheap on the CPU). */
#include "ops/conv_dnnl.h"

#ifndef DPT_HAVE_DNNL

int dpt_conv_dnnl_supports(const dpt_conv2d_desc *d)
{
    (void)d;
    return 0;
}
size_t dpt_conv_dnnl_work_floats(const dpt_conv2d_desc *d)
{
    (void)d;
    return 0;
}
void dpt_conv_dnnl_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *b, float *y, float *work, double *sum,
                           double *sumsq)
{
    (void)d, (void)x, (void)xa, (void)w, (void)b, (void)y, (void)work, (void)sum, (void)sumsq;
}
void dpt_conv_dnnl_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *dy, const dpt_bn_apply *dya,
                            const float *y, float *dx, float *dw, float *db, float *work,
                            double *xg)
{
    (void)d, (void)x, (void)xa, (void)w, (void)dy, (void)dya, (void)y, (void)dx, (void)dw;
    (void)db, (void)work, (void)xg;
}
int dpt_conv_dnnl_set_layout(const char *name)
{
    (void)name;
    return -1;
}
void dpt_conv_dnnl_release(void) {}
unsigned long long dpt_conv_dnnl_locks(const dpt_conv2d_desc *d, int *refs)
{
    (void)d;
    if (refs)
        *refs = -1;
    return 0;
}

#else

#include <assert.h>
#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { LAYOUT_PLAIN = 0, LAYOUT_ANY = 1, LAYOUT_AUTO = 2 };
enum { ALIGN = 64 };                 /* bytes, each buffer carved from work */
enum { CACHE_MAX = 128 };            /* shapes kept; least recently used go first */
enum { IO_MAX = 4 };

/* One operand of a pass: as the caller holds it and as the primitive
 * wants it; when they differ, a reorder through a buffer in work. */
typedef struct xfer {
    int arg;                 /* DNNL_ARG_* */
    int out;                 /* written by the primitive: reorder after */
    dnnl_memory_desc_t user; /* plain layout */
    dnnl_memory_desc_t prim; /* the primitive's layout */
    dnnl_primitive_t reorder; /* NULL: the primitive reads/writes user memory */
    size_t off;              /* bytes into the pass's work */
} xfer;

typedef struct pass {
    dnnl_primitive_t prim;
    xfer io[IO_MAX];
    int n_io;
    dnnl_memory_desc_t scratch; /* its scratchpad, at scratch_off */
    size_t scratch_off, scratch_bytes;
    size_t bytes; /* work the pass uses */
} pass;

enum { P_FWD, P_BWD_W, P_BWD_D, P_COUNT };

typedef struct entry {
    int key[12];     /* the desc's shape fields, batch size included; the layout asked */
    int layout;      /* LAYOUT_PLAIN or LAYOUT_ANY */
    int ok;          /* all passes created with a non-reference implementation */
    atomic_int refs; /* calls using it now: not evicted while > 0. Raised
                      * only under the lock, lowered without it (put) */
    unsigned long long used; /* cache clock at the last lookup */
    pass p[P_COUNT];
    int share_dy;    /* backward data reads backward weights' reordered dy */
    size_t work_floats;
} entry;

static struct {
    pthread_mutex_t lock;
    dnnl_engine_t eng;
    int engine_failed;
    int layout; /* DPT_DNNL_LAYOUT, read once */
    int atexit_done;
    entry *e[CACHE_MAX];
    int n;
    unsigned long long clock;
    unsigned long long locks; /* times the lock was taken (test hook) */
    atomic_uint gen; /* moved on by release and set_layout: see kept */
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void lock(void)
{
    pthread_mutex_lock(&cache.lock);
    cache.locks++;
}

/* ---- one thread per call -------------------------------------------------- */

/* oneDNN (OpenMP build) plans and runs on omp_get_max_threads() threads of
 * the calling thread's setting; make that 1 for the call. */
static int single_thread_enter(void)
{
    int prev = omp_get_max_threads();
    if (prev != 1)
        omp_set_num_threads(1);
    return prev;
}

static void single_thread_leave(int prev)
{
    if (prev != 1)
        omp_set_num_threads(prev);
}

/* ---- building an entry ---------------------------------------------------- */

static void shape_key(const dpt_conv2d_desc *d, int layout, int key[12])
{
    key[0] = d->n, key[1] = d->c_in, key[2] = d->h, key[3] = d->w;
    key[4] = d->c_out, key[5] = d->kh, key[6] = d->kw, key[7] = d->stride;
    key[8] = d->pad, key[9] = d->dilation > 1 ? d->dilation : 1;
    key[10] = d->groups > 1 ? d->groups : 1;
    key[11] = layout;
}

static size_t round_up(size_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

static int md_plain(dnnl_memory_desc_t *md, int nd, const dnnl_dims_t dims, dnnl_format_tag_t t)
{
    return dnnl_memory_desc_init_by_tag(md, nd, dims, dnnl_f32, t) == dnnl_success ? 0 : -1;
}

/* Operand `arg` of pass p: user layout u, the primitive's from its desc. */
static int add_io(pass *p, const_dnnl_primitive_desc_t pd, dnnl_query_t q, int idx, int arg,
                  int out, const dnnl_memory_desc_t *u, dnnl_engine_t eng)
{
    xfer *x = &p->io[p->n_io++];
    const dnnl_memory_desc_t *pm = dnnl_primitive_desc_query_md(pd, q, idx);
    if (!pm)
        return -1;
    x->arg = arg, x->out = out, x->user = *u, x->prim = *pm, x->reorder = NULL, x->off = 0;
    if (dnnl_memory_desc_equal(&x->user, &x->prim))
        return 0;
    dnnl_primitive_desc_t rpd = NULL;
    const dnnl_memory_desc_t *from = out ? &x->prim : &x->user, *to = out ? &x->user : &x->prim;
    if (dnnl_reorder_primitive_desc_create(&rpd, from, eng, to, eng, NULL) != dnnl_success)
        return -1;
    dnnl_status_t st = dnnl_primitive_create(&x->reorder, rpd);
    dnnl_primitive_desc_destroy(rpd);
    if (st != dnnl_success) {
        x->reorder = NULL;
        return -1;
    }
    x->off = p->bytes;
    p->bytes += round_up(dnnl_memory_desc_get_size(&x->prim));
    return 0;
}

/* The primitive from pd, its scratchpad; 0 when pd is not a reference
 * (slow, naive-loop) implementation. */
static int finish_pass(pass *p, const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success ||
        !impl || strstr(impl, "ref"))
        return -1;
    const dnnl_memory_desc_t *sm = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (sm) {
        p->scratch = *sm;
        p->scratch_bytes = dnnl_memory_desc_get_size(sm);
        p->scratch_off = p->bytes;
        p->bytes += round_up(p->scratch_bytes);
    }
    if (dnnl_primitive_create(&p->prim, pd) != dnnl_success) {
        p->prim = NULL;
        return -1;
    }
    return 0;
}

static void entry_free(entry *e)
{
    if (!e)
        return;
    for (int k = 0; k < P_COUNT; k++) {
        if (e->p[k].prim)
            dnnl_primitive_destroy(e->p[k].prim);
        for (int i = 0; i < e->p[k].n_io; i++)
            if (e->p[k].io[i].reorder)
                dnnl_primitive_destroy(e->p[k].io[i].reorder);
    }
    free(e);
}

/* Builds the three passes with the given layout policy; e->ok = 0 when any
 * of them fails or would be a reference implementation. */
static void entry_build(entry *e, dnnl_engine_t eng, int layout)
{
    const int *k = e->key;
    const int n = k[0], ci = k[1], h = k[2], w = k[3], co = k[4], kh = k[5], kw = k[6];
    const int s = k[7], pad = k[8], dil = k[9], g = k[10];
    const int oh = (h + 2 * pad - (dil * (kh - 1) + 1)) / s + 1;
    const int ow = (w + 2 * pad - (dil * (kw - 1) + 1)) / s + 1;
    dnnl_dims_t xd = {n, ci, h, w}, yd = {n, co, oh, ow}, bd = {co};
    dnnl_dims_t wd = {co, ci / g, kh, kw}, wgd = {g, co / g, ci / g, kh, kw};
    dnnl_dims_t strides = {s, s}, dils = {dil - 1, dil - 1}, pads = {pad, pad};
    dnnl_memory_desc_t ux, uy, uw, ub, ax, ay, aw;
    const int wn = g > 1 ? 5 : 4;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fpd = NULL, wpd = NULL, dpd = NULL;
    dnnl_convolution_desc_t cd;
    e->ok = 0;
    e->layout = layout;

    if (md_plain(&ux, 4, xd, dnnl_nchw) || md_plain(&uy, 4, yd, dnnl_nchw) ||
        md_plain(&uw, wn, g > 1 ? wgd : wd, g > 1 ? dnnl_goihw : dnnl_oihw) ||
        md_plain(&ub, 1, bd, dnnl_a))
        return;
    ax = ux, ay = uy, aw = uw;
    if (layout == LAYOUT_ANY &&
        (md_plain(&ax, 4, xd, dnnl_format_tag_any) || md_plain(&ay, 4, yd, dnnl_format_tag_any) ||
         md_plain(&aw, wn, g > 1 ? wgd : wd, dnnl_format_tag_any)))
        return;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return;
    if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success)
        goto done;

    /* forward */
    if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training,
                                                   dnnl_convolution_direct, &ax, &aw, &ub, &ay,
                                                   strides, dils, pads, pads) != dnnl_success ||
        dnnl_primitive_desc_create(&fpd, &cd, attr, eng, NULL) != dnnl_success)
        goto done;
    pass *p = &e->p[P_FWD];
    if (add_io(p, fpd, dnnl_query_src_md, 0, DNNL_ARG_SRC, 0, &ux, eng) ||
        add_io(p, fpd, dnnl_query_weights_md, 0, DNNL_ARG_WEIGHTS, 0, &uw, eng) ||
        add_io(p, fpd, dnnl_query_weights_md, 1, DNNL_ARG_BIAS, 0, &ub, eng) ||
        add_io(p, fpd, dnnl_query_dst_md, 0, DNNL_ARG_DST, 1, &uy, eng) || finish_pass(p, fpd))
        goto done;

    /* backward weights (its bias gradient is computed here, in float64) */
    if (dnnl_dilated_convolution_backward_weights_desc_init(
            &cd, dnnl_convolution_direct, &ax, &aw, NULL, &ay, strides, dils, pads, pads) !=
            dnnl_success ||
        dnnl_primitive_desc_create(&wpd, &cd, attr, eng, fpd) != dnnl_success)
        goto done;
    p = &e->p[P_BWD_W];
    /* diff_dst first in both backward passes: at offset 0 of each, so when
     * both want the same layout, backward data reuses the reordered copy */
    if (add_io(p, wpd, dnnl_query_diff_dst_md, 0, DNNL_ARG_DIFF_DST, 0, &uy, eng) ||
        add_io(p, wpd, dnnl_query_src_md, 0, DNNL_ARG_SRC, 0, &ux, eng) ||
        add_io(p, wpd, dnnl_query_diff_weights_md, 0, DNNL_ARG_DIFF_WEIGHTS, 1, &uw, eng) ||
        finish_pass(p, wpd))
        goto done;

    /* backward data */
    if (dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &ax, &aw,
                                                         &ay, strides, dils, pads, pads) !=
            dnnl_success ||
        dnnl_primitive_desc_create(&dpd, &cd, attr, eng, fpd) != dnnl_success)
        goto done;
    p = &e->p[P_BWD_D];
    if (add_io(p, dpd, dnnl_query_diff_dst_md, 0, DNNL_ARG_DIFF_DST, 0, &uy, eng) ||
        add_io(p, dpd, dnnl_query_weights_md, 0, DNNL_ARG_WEIGHTS, 0, &uw, eng) ||
        add_io(p, dpd, dnnl_query_diff_src_md, 0, DNNL_ARG_DIFF_SRC, 1, &ux, eng) ||
        finish_pass(p, dpd))
        goto done;

    e->share_dy = e->p[P_BWD_W].io[0].reorder && e->p[P_BWD_D].io[0].reorder &&
                  dnnl_memory_desc_equal(&e->p[P_BWD_W].io[0].prim, &e->p[P_BWD_D].io[0].prim);

    size_t most = 0;
    for (int i = 0; i < P_COUNT; i++)
        most = e->p[i].bytes > most ? e->p[i].bytes : most;
    /* + a zero bias for calls without one, + slack to align work's start */
    most += round_up((size_t)co * sizeof(float)) + ALIGN;
    e->work_floats = (most + sizeof(float) - 1) / sizeof(float);
    e->ok = 1;
done:
    dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_desc_destroy(wpd);
    dnnl_primitive_desc_destroy(dpd);
    dnnl_primitive_attr_destroy(attr);
}

/* Layout when not forced, from bench/RESULTS-dnnl.md (the suite's shapes,
 * batch 128): oneDNN's blocked kernels win by 1.3-3x wherever a filter has
 * taps and the input has channels to block (3x3 of 3+ channels, strided,
 * grouped, depthwise), reorders and all; 1x1 filters are GEMMs either way
 * and a one- or two-channel input has nothing to block, so there the plain
 * layout's GEMM convolution is as fast or faster without the reorders. */
static int auto_layout(const int *k)
{
    const int ci = k[1], kh = k[5], kw = k[6], g = k[10];
    if (kh == 1 && kw == 1 && g == 1)
        return LAYOUT_PLAIN;
    if (g == 1 && ci <= 2)
        return LAYOUT_PLAIN;
    return LAYOUT_ANY;
}

static void run_pass(const pass *p, void *const *ptr, char *base, int ready0);
static char *aligned(float *work);

/* Runs every pass once on zeros. oneDNN 2.6 finishes some kernels (its
 * blocked reorders most of all: 10-60 ms each) on their first execution,
 * not at creation; done here, that cost lands where the rest of creation
 * does, outside the first training step and outside the planner's timing
 * (which would otherwise drop dnnl after its warm-up run). Skipped when
 * the buffers cannot be had: then the first call pays. */
static void entry_warm(entry *e)
{
    const int *k = e->key;
    const int oh = (k[2] + 2 * k[8] - (k[9] * (k[5] - 1) + 1)) / k[7] + 1;
    const int ow = (k[3] + 2 * k[8] - (k[9] * (k[6] - 1) + 1)) / k[7] + 1;
    const size_t nx = (size_t)k[0] * k[1] * k[2] * k[3], ny = (size_t)k[0] * k[4] * oh * ow;
    const size_t nw = (size_t)k[4] * (k[1] / k[10]) * k[5] * k[6];
    const size_t total = 2 * nx + 2 * ny + 2 * nw + (size_t)k[4] + e->work_floats;
    float *buf = calloc(total, sizeof *buf);
    if (!buf)
        return;
    float *x = buf, *dx = x + nx, *y = dx + nx, *dy = y + ny, *w = dy + ny, *dw = w + nw;
    float *b = dw + nw, *work = b + k[4];
    char *base = aligned(work);
    void *pf[IO_MAX] = {x, w, b, y}, *pw[IO_MAX] = {dy, x, dw}, *pd[IO_MAX] = {dy, w, dx};
    run_pass(&e->p[P_FWD], pf, base, 0);
    run_pass(&e->p[P_BWD_W], pw, base, 0);
    run_pass(&e->p[P_BWD_D], pd, base, 0);
    free(buf);
}

static entry *entry_new(const int key[12], dnnl_engine_t eng)
{
    const int want = key[11] == LAYOUT_AUTO ? auto_layout(key) : key[11];
    entry *e = NULL;
    int prev = single_thread_enter();
    /* a shape one layout cannot run (no non-reference kernel) may run in
     * the other; a forced layout is kept as asked */
    for (int t = 0; t < (key[11] == LAYOUT_AUTO ? 2 : 1); t++) {
        entry_free(e);
        e = calloc(1, sizeof *e);
        if (!e)
            break;
        memcpy(e->key, key, sizeof e->key);
        entry_build(e, eng, t == 0 ? want : LAYOUT_PLAIN + LAYOUT_ANY - want);
        if (e->ok) {
            entry_warm(e);
            break;
        }
    }
    single_thread_leave(prev);
    return e;
}

/* ---- the cache ------------------------------------------------------------ */

void dpt_conv_dnnl_release(void)
{
    lock();
    for (int i = 0; i < cache.n; i++)
        entry_free(cache.e[i]);
    cache.n = 0;
    if (cache.eng)
        dnnl_engine_destroy(cache.eng);
    cache.eng = NULL;
    cache.engine_failed = 0;
    atomic_fetch_add(&cache.gen, 1); /* entries kept by threads are gone */
    pthread_mutex_unlock(&cache.lock);
}

static void release_at_exit(void) { dpt_conv_dnnl_release(); }

static int layout_of(const char *v)
{
    if (!v || strcmp(v, "auto") == 0)
        return LAYOUT_AUTO;
    if (strcmp(v, "plain") == 0)
        return LAYOUT_PLAIN;
    if (strcmp(v, "any") == 0)
        return LAYOUT_ANY;
    return -1;
}


/* Under the lock: the engine, made on first use. */
static dnnl_engine_t engine_locked(void)
{
    if (!cache.eng && !cache.engine_failed) {
        /* unknown values read as auto: a tuning knob, not a contract */
        int l = layout_of(getenv("DPT_DNNL_LAYOUT"));
        cache.layout = l < 0 ? LAYOUT_AUTO : l;
        if (dnnl_engine_create(&cache.eng, dnnl_cpu, 0) != dnnl_success) {
            cache.eng = NULL;
            cache.engine_failed = 1;
        }
        if (!cache.atexit_done && atexit(release_at_exit) == 0)
            cache.atexit_done = 1;
    }
    return cache.eng;
}

int dpt_conv_dnnl_set_layout(const char *name)
{
    int l = layout_of(name);
    if (l < 0)
        return -1;
    lock();
    engine_locked(); /* reads the environment once: this call overrides it */
    cache.layout = l;
    atomic_fetch_add(&cache.gen, 1); /* a desc may map to another entry now */
    pthread_mutex_unlock(&cache.lock);
    return 0;
}

static entry *find_locked(const int key[12])
{
    for (int i = 0; i < cache.n; i++)
        if (memcmp(cache.e[i]->key, key, sizeof cache.e[i]->key) == 0)
            return cache.e[i];
    return NULL;
}

/* The entry for d, referenced (release with put()); NULL when oneDNN is
 * unusable or out of memory. Created outside the lock (it JIT-compiles)
 * and inserted unless another thread got there first. */
static entry *get(const dpt_conv2d_desc *d)
{
    int key[12];
    lock();
    dnnl_engine_t eng = engine_locked();
    shape_key(d, cache.layout, key);
    entry *e = eng ? find_locked(key) : NULL;
    if (e) {
        atomic_fetch_add(&e->refs, 1);
        e->used = ++cache.clock;
    }
    pthread_mutex_unlock(&cache.lock);
    if (e || !eng)
        return e;

    entry *fresh = entry_new(key, eng);
    if (!fresh)
        return NULL;
    lock();
    e = find_locked(key);
    if (e) {
        entry_free(fresh);
    } else {
        if (cache.n == CACHE_MAX) { /* evict the least recently used idle one */
            int victim = -1;
            for (int i = 0; i < cache.n; i++)
                if (atomic_load(&cache.e[i]->refs) == 0 &&
                    (victim < 0 || cache.e[i]->used < cache.e[victim]->used))
                    victim = i;
            if (victim >= 0) {
                entry_free(cache.e[victim]);
                cache.e[victim] = cache.e[--cache.n];
            }
        }
        if (cache.n < CACHE_MAX) {
            cache.e[cache.n++] = fresh;
            e = fresh;
        } else { /* every one in use: the caller owns this one (refs < 0) */
            atomic_store(&fresh->refs, -1);
            pthread_mutex_unlock(&cache.lock);
            return fresh;
        }
    }
    atomic_fetch_add(&e->refs, 1);
    e->used = ++cache.clock;
    pthread_mutex_unlock(&cache.lock);
    return e;
}

/* No lock: eviction (under the lock) only takes an entry at 0, and only
 * get (under the lock) raises it from there. */
static void put(entry *e)
{
    if (atomic_load(&e->refs) < 0) {
        entry_free(e);
        return;
    }
    atomic_fetch_sub(&e->refs, 1);
}

/* ---- the entry supports() looked up, for the call after it ---------------- *
 * dpt_conv2d_forward_ex / backward_ex ask supports() (to resolve the
 * algorithm), then call forward/backward with the same desc on the same
 * thread. supports() keeps its referenced entry here and that call takes
 * it: one locked lookup per call instead of two. A kept entry no call
 * takes is let go by the thread's next supports or call, or at its exit
 * (kept_key's destructor); one kept before a release or set_layout (gen
 * moved on) is dropped unread. Caller-owned entries (refs < 0) are never
 * kept. */
static _Thread_local struct {
    entry *e;
    unsigned gen;
    int key[11]; /* shape_key's, the layout left out (gen covers it) */
    int hooked;  /* kept_key set for this thread */
} kept;

static pthread_key_t kept_key;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;
static int kept_key_ok;

static void kept_drop(void)
{
    entry *e = kept.e;
    kept.e = NULL;
    if (e && kept.gen == atomic_load(&cache.gen))
        put(e);
}

static void kept_at_exit(void *unused)
{
    (void)unused;
    kept_drop();
}

static void kept_key_make(void) { kept_key_ok = pthread_key_create(&kept_key, kept_at_exit) == 0; }

static void keep(const dpt_conv2d_desc *d, entry *e)
{
    if (!kept.hooked) {
        pthread_once(&kept_once, kept_key_make);
        /* without the exit hook a dying thread would pin the entry */
        if (!kept_key_ok || pthread_setspecific(kept_key, &kept) != 0) {
            put(e);
            return;
        }
        kept.hooked = 1;
    }
    int key[12];
    shape_key(d, 0, key);
    memcpy(kept.key, key, sizeof kept.key);
    kept.gen = atomic_load(&cache.gen);
    kept.e = e;
}

/* The kept entry when it is d's (still kept), else NULL. */
static entry *kept_for(const dpt_conv2d_desc *d)
{
    if (!kept.e)
        return NULL;
    int key[12];
    shape_key(d, 0, key);
    if (kept.gen != atomic_load(&cache.gen) || memcmp(key, kept.key, sizeof kept.key) != 0)
        return NULL;
    return kept.e;
}

/* The entry for d, referenced (release with put()): the kept one when it
 * is d's, else looked up. */
static entry *take(const dpt_conv2d_desc *d)
{
    entry *e = kept_for(d);
    if (e) {
        kept.e = NULL;
        return e;
    }
    kept_drop();
    return get(d);
}

unsigned long long dpt_conv_dnnl_locks(const dpt_conv2d_desc *d, int *refs)
{
    pthread_mutex_lock(&cache.lock); /* not counted */
    unsigned long long n = cache.locks;
    if (d && refs) {
        int key[12];
        shape_key(d, cache.layout, key);
        entry *e = find_locked(key);
        *refs = e ? atomic_load(&e->refs) : -1;
    }
    pthread_mutex_unlock(&cache.lock);
    return n;
}

/* ---- running a pass ------------------------------------------------------- */

static dnnl_memory_t mem(const dnnl_memory_desc_t *md, void *ptr)
{
    dnnl_memory_t m = NULL;
    if (dnnl_memory_create(&m, md, cache.eng, ptr) != dnnl_success)
        return NULL;
    return m;
}

static int run2(dnnl_primitive_t r, dnnl_stream_t st, dnnl_memory_t from, dnnl_memory_t to)
{
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    return dnnl_primitive_execute(r, st, 2, a) == dnnl_success ? 0 : -1;
}

/* Runs pass p with ptr[i] the caller's memory of p->io[i], buffers from
 * base (aligned); io[0] already reordered in place when ready0. A failure
 * here is a bug or an exhausted machine; the contract has no error return,
 * so it asserts. */
static void run_pass(const pass *p, void *const *ptr, char *base, int ready0)
{
    dnnl_memory_t user[IO_MAX] = {0}, prim[IO_MAX] = {0}, scratch = NULL;
    dnnl_exec_arg_t args[IO_MAX + 1];
    dnnl_stream_t st = NULL;
    int fail = dnnl_stream_create(&st, cache.eng, dnnl_stream_default_flags) != dnnl_success;
    int na = 0;
    for (int i = 0; !fail && i < p->n_io; i++) {
        const xfer *x = &p->io[i];
        user[i] = mem(&x->user, ptr[i]);
        prim[i] = x->reorder ? mem(&x->prim, base + x->off) : NULL;
        fail |= !user[i] || (x->reorder && !prim[i]);
        if (!fail && x->reorder && !x->out && !(i == 0 && ready0))
            fail |= run2(x->reorder, st, user[i], prim[i]);
        args[na].arg = x->arg;
        args[na++].memory = x->reorder ? prim[i] : user[i];
    }
    if (!fail && p->scratch_bytes) {
        scratch = mem(&p->scratch, base + p->scratch_off);
        fail |= !scratch;
        args[na].arg = DNNL_ARG_SCRATCHPAD;
        args[na++].memory = scratch;
    }
    if (!fail)
        fail |= dnnl_primitive_execute(p->prim, st, na, args) != dnnl_success;
    for (int i = 0; !fail && i < p->n_io; i++)
        if (p->io[i].reorder && p->io[i].out)
            fail |= run2(p->io[i].reorder, st, prim[i], user[i]);
    if (!fail && st)
        fail |= dnnl_stream_wait(st) != dnnl_success;
    for (int i = 0; i < p->n_io; i++) {
        dnnl_memory_destroy(user[i]);
        dnnl_memory_destroy(prim[i]);
    }
    dnnl_memory_destroy(scratch);
    dnnl_stream_destroy(st);
    assert(!fail && "oneDNN convolution failed");
    (void)fail;
}

static char *aligned(float *work)
{
    uintptr_t a = (uintptr_t)work;
    return (char *)work + ((ALIGN - a % ALIGN) % ALIGN);
}

/* ---- the algorithm -------------------------------------------------------- */

int dpt_conv_dnnl_supports(const dpt_conv2d_desc *d)
{
    /* "generic" is the portable reference path (C and the BLAS) the tests
     * compare against: oneDNN's JIT kernels are CPU-specific code, like the
     * direct kernels, so they step aside there too. */
    if (strcmp(dpt_ops_kernels(), "generic") == 0)
        return 0;
    kept_drop();
    entry *e = get(d);
    if (!e)
        return 0;
    int ok = e->ok;
    if (ok && atomic_load(&e->refs) > 0)
        keep(d, e);
    else
        put(e);
    return ok;
}

size_t dpt_conv_dnnl_work_floats(const dpt_conv2d_desc *d)
{
    /* conv2d.c asks it during a call too (where its copies start) */
    const entry *k = kept_for(d);
    if (k)
        return k->ok ? k->work_floats : 0;
    entry *e = get(d);
    if (!e)
        return 0;
    size_t f = e->ok ? e->work_floats : 0;
    put(e);
    return f;
}

void dpt_conv_dnnl_forward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                           const float *w, const float *b, float *y, float *work, double *sum,
                           double *sumsq)
{
    assert(!xa && !sum && !sumsq);
    (void)xa, (void)sum, (void)sumsq;
    entry *e = take(d);
    assert(e && e->ok);
    char *base = aligned(work);
    const pass *p = &e->p[P_FWD];
    if (!b) { /* the primitive has a bias: give it zeros */
        float *z = (float *)(void *)(base + p->bytes);
        memset(z, 0, (size_t)d->c_out * sizeof *z);
        b = z;
    }
    void *ptr[IO_MAX] = {(void *)x, (void *)w, (void *)b, y};
    int prev = single_thread_enter();
    run_pass(p, ptr, base, 0);
    single_thread_leave(prev);
    put(e);
}

void dpt_conv_dnnl_backward(const dpt_conv2d_desc *d, const float *x, const dpt_bn_apply *xa,
                            const float *w, const float *dy, const dpt_bn_apply *dya,
                            const float *y, float *dx, float *dw, float *db, float *work,
                            double *xg)
{
    assert(!xa && !dya && !xg);
    (void)xa, (void)dya, (void)y, (void)xg;
    entry *e = take(d);
    assert(e && e->ok);
    char *base = aligned(work);
    int prev = single_thread_enter();
    void *pw[IO_MAX] = {(void *)dy, (void *)x, dw};
    run_pass(&e->p[P_BWD_W], pw, base, 0);
    if (dx) {
        void *pd[IO_MAX] = {(void *)dy, (void *)w, dx};
        run_pass(&e->p[P_BWD_D], pd, base, e->share_dy);
    }
    single_thread_leave(prev);
    put(e);
    if (db) {
        /* Σ over images then pixels in float64, in the GEMM path's order:
         * its bits exactly. */
        const int P = d->out_h * d->out_w;
        const size_t y_img = (size_t)d->c_out * P;
        for (int co = 0; co < d->c_out; co++) {
            double s = 0.0;
            for (int i = 0; i < d->n; i++) {
                const float *r = dy + i * y_img + (size_t)co * P;
                for (int q = 0; q < P; q++)
                    s += r[q];
            }
            db[co] = (float)s;
        }
    }
}

#endif
