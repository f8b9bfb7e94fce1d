/* Memory allocation failures: for each scenario (dpt_net_from_spec,
 * dpt_datastore_open_folder with and without preload, dpt_datastore_open_idx
 * of a gzip file, dpt_st_open, dpt_net_load, dpt_checkpoint_load, dpt_fit on
 * a tiny dataset with 2 workers, checkpoints and a progress callback), the
 * k-th allocation is made to fail, for every k from 1 to the number of
 * allocations the scenario makes (one failure per run; later allocations
 * succeed, as when memory comes back). A crash, or a hang (20 s alarm),
 * ends the test with the scenario and k named. The scenario must
 * return an error status with a message (DPT_ERR_NOMEM, or another error
 * when the failed allocation was inside a C library call, e.g. fopen), leave
 * its output pointer NULL, and free everything it allocated.
 *
 * The allocation functions are wrapped in this executable only: malloc,
 * calloc, realloc, free, aligned_alloc, posix_memalign and memalign are
 * defined here and forward to glibc's __libc_* entry points, which glibc
 * supports (its own internal allocations then come here too). The wrappers
 * count allocations, live blocks, and fail the k-th allocation once armed.
 * Skipped (77) on other C libraries and in sanitizer builds (the
 * sanitizers own malloc there). */
#define _GNU_SOURCE
#include "dptrain/train.h"
#include "core/safetensors.h"
#include "testfs.h"
#include "testutil.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define NO_INTERPOSER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define NO_INTERPOSER 1
#endif
#endif
#if !defined(__GLIBC__)
#define NO_INTERPOSER 1
#endif

#ifndef NO_INTERPOSER
/* ---- the interposer -------------------------------------------------------- */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static atomic_int armed;          /* count (and maybe fail) allocations */
static atomic_long n_allocs;      /* allocations since armed */
static atomic_long fail_at;       /* 0: none; k: the k-th allocation fails */
static atomic_int failed;         /* the k-th allocation happened */
static atomic_long live;          /* blocks allocated minus blocks freed */
static void *_Atomic fail_caller; /* return address of the failed call */

static int fail_now(void *caller)
{
    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return 0;
    long k = atomic_fetch_add(&n_allocs, 1) + 1;
    if (k != atomic_load(&fail_at))
        return 0;
    atomic_store(&fail_caller, caller);
    atomic_store(&failed, 1);
    errno = ENOMEM;
    return 1;
}

static void *counted(void *p)
{
    if (p)
        atomic_fetch_add_explicit(&live, 1, memory_order_relaxed);
    return p;
}

void *malloc(size_t n)
{
    return fail_now(__builtin_return_address(0)) ? NULL : counted(__libc_malloc(n));
}

void *calloc(size_t a, size_t b)
{
    return fail_now(__builtin_return_address(0)) ? NULL : counted(__libc_calloc(a, b));
}

void *realloc(void *p, size_t n)
{
    if (!p)
        return fail_now(__builtin_return_address(0)) ? NULL : counted(__libc_realloc(NULL, n));
    if (n == 0) { /* glibc: frees p */
        atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
        return __libc_realloc(p, 0);
    }
    return fail_now(__builtin_return_address(0)) ? NULL : __libc_realloc(p, n);
}

void free(void *p)
{
    if (p) {
        atomic_fetch_sub_explicit(&live, 1, memory_order_relaxed);
        __libc_free(p);
    }
}

void *aligned_alloc(size_t align, size_t n)
{
    return fail_now(__builtin_return_address(0)) ? NULL : counted(__libc_memalign(align, n));
}

void *memalign(size_t align, size_t n)
{
    return fail_now(__builtin_return_address(0)) ? NULL : counted(__libc_memalign(align, n));
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (fail_now(__builtin_return_address(0)))
        return ENOMEM;
    void *p = counted(__libc_memalign(align, n));
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

static void arm(long k)
{
    atomic_store(&n_allocs, 0);
    atomic_store(&failed, 0);
    atomic_store(&fail_at, k);
    atomic_store(&armed, 1);
}

static void disarm(void) { atomic_store(&armed, 0); }

/* ---- fixtures ------------------------------------------------------------------ */

static char tmp[64];
static char folder[256], idx_images[256], idx_labels[256], model_file[256], ckpt_file[256];
static char fit_model[256], fit_ckpt[256];

static const char tiny_spec[] = "input in size=8x8x1\n"
                                "conv c1 filter=3 filters=2\n"
                                "batchnorm bn1\n"
                                "relu r1\n"
                                "fc fc outputs=classes\n"
                                "softmax sm\n";

/* A gzip IDX pair: 24 images of 8x8, labels 0..2. */
static int write_idx(void)
{
    unsigned char img[16 + 24 * 64], lab[8 + 24];
    unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, 24, 0, 0, 0, 8, 0, 0, 0, 8};
    unsigned char lh[8] = {0, 0, 8, 1, 0, 0, 0, 24};
    memcpy(img, ih, 16);
    memcpy(lab, lh, 8);
    dpt_rng r;
    dpt_rng_seed(&r, 5, 0);
    for (int i = 0; i < 24; i++) {
        lab[8 + i] = (unsigned char)(i % 3);
        for (int p = 0; p < 64; p++)
            img[16 + i * 64 + p] = (unsigned char)(dpt_rng_below(&r, 64) + 60 * (i % 3));
    }
    snprintf(idx_images, sizeof idx_images, "%s/tiny-images-idx3-ubyte.gz", tmp);
    snprintf(idx_labels, sizeof idx_labels, "%s/tiny-labels-idx1-ubyte.gz", tmp);
    gzFile a = gzopen(idx_images, "wb"), b = gzopen(idx_labels, "wb");
    int ok = a && b && gzwrite(a, img, sizeof img) == (int)sizeof img && gzwrite(b, lab, sizeof lab) == (int)sizeof lab;
    if (a)
        ok &= gzclose(a) == Z_OK;
    if (b)
        ok &= gzclose(b) == Z_OK;
    return ok ? 0 : -1;
}

/* Two classes of two real digit images each. */
static int make_folder(void)
{
    char fixture[512];
    tu_fixture("digits400", fixture, sizeof fixture);
    snprintf(folder, sizeof folder, "%s/digits", tmp);
    if (mkdir(folder, 0777) != 0)
        return -1;
    for (int c = 0; c < 2; c++) {
        char dir[600], from[1500], to[1500];
        snprintf(dir, sizeof dir, "%s/%d", folder, c);
        if (mkdir(dir, 0777) != 0)
            return -1;
        char cdir[1100];
        snprintf(cdir, sizeof cdir, "%s/%d", fixture, c);
        DIR *d = opendir(cdir);
        if (!d)
            return -1;
        int n = 0;
        struct dirent *e;
        while (n < 2 && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(from, sizeof from, "%s/%s", cdir, e->d_name);
            snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
            if (tu_copy_file(from, to) != 0) {
                closedir(d);
                return -1;
            }
            n++;
        }
        closedir(d);
    }
    return 0;
}

/* ---- scenarios: each returns the status; *leftover != NULL is an output the
 * call should not have produced on failure (freed by the scenario) ---------- */

typedef dpt_status (*scenario_fn)(int *leftover);

static dpt_status sc_net_from_spec(int *leftover)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_from_spec(dpt_net_default_spec(), "<default spec>", 10, 4, 1, &net);
    *leftover = s != DPT_OK && net != NULL;
    dpt_net_free(net);
    return s;
}

static dpt_status open_folder(int preload, int *leftover)
{
    dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
    o.preload = preload;
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_folder(folder, &o, &ds);
    *leftover = s != DPT_OK && ds != NULL;
    dpt_datastore_free(ds);
    return s;
}

static dpt_status sc_folder(int *leftover) { return open_folder(0, leftover); }
static dpt_status sc_folder_preload(int *leftover) { return open_folder(1, leftover); }

static dpt_status sc_idx_gz(int *leftover)
{
    dpt_datastore *ds = NULL;
    dpt_status s = dpt_datastore_open_idx(idx_images, NULL, &ds);
    *leftover = s != DPT_OK && ds != NULL;
    dpt_datastore_free(ds);
    return s;
}

static dpt_status sc_st_open(int *leftover)
{
    dpt_st *st = NULL;
    dpt_status s = dpt_st_open(model_file, &st);
    *leftover = s != DPT_OK && st != NULL;
    dpt_st_close(st);
    return s;
}

static dpt_status sc_net_load(int *leftover)
{
    dpt_net *net = NULL;
    dpt_status s = dpt_net_load(model_file, 4, &net);
    *leftover = s != DPT_OK && net != NULL;
    dpt_net_free(net);
    return s;
}

/* The net and optimizer are made in setup: only the
 * load's own allocations are swept. */
static dpt_net *ck_net;
static dpt_sgdm *ck_opt;

static dpt_status sc_checkpoint_load(int *leftover)
{
    dpt_checkpoint_info info;
    *leftover = 0;
    return dpt_checkpoint_load(ckpt_file, ck_net, ck_opt, &info);
}

static void no_progress(const dpt_progress *p, void *arg)
{
    (void)p;
    (void)arg;
}

static dpt_datastore *fit_train, *fit_test;

static dpt_status sc_fit(int *leftover)
{
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = tiny_spec;
    cfg.spec_source = "tiny";
    cfg.train = fit_train;
    cfg.test = fit_test;
    cfg.epochs = 1;
    cfg.batch = 8;
    cfg.seed = 3;
    cfg.spmd.backend = DPT_COMM_LOCAL;
    cfg.spmd.n_workers = 2;
    cfg.spmd.timeout_ms = 10000;
    cfg.progress = no_progress;
    cfg.model_out = fit_model;
    cfg.checkpoint_out = fit_ckpt;
    cfg.checkpoint_every = 2;
    dpt_fit_result res;
    *leftover = 0;
    return dpt_fit(&cfg, &res);
}

/* Labels matched by class name (the model's classes in reverse order, and
 * one more). */
static dpt_status sc_match_classes(int *leftover)
{
    int k = dpt_datastore_n_classes(fit_train);
    const char *names[64];
    if (k + 1 > 64)
        return dpt_fail(DPT_ERR_ARG, "too many classes for the scenario");
    for (int i = 0; i < k; i++)
        names[i] = dpt_datastore_class_name(fit_train, k - 1 - i);
    names[k] = "extra";
    dpt_datastore *m = NULL;
    dpt_status s = dpt_datastore_match_classes(fit_train, "train", k + 1, names, &m);
    *leftover = s != DPT_OK && m != NULL;
    dpt_datastore_free(m);
    return s;
}

typedef struct scenario {
    const char *name;
    scenario_fn fn;
} scenario;

static const scenario scenarios[] = {
    {"dpt_net_from_spec (default network)", sc_net_from_spec},
    {"dpt_datastore_open_folder", sc_folder},
    {"dpt_datastore_open_folder (preload)", sc_folder_preload},
    {"dpt_datastore_open_idx (gzip)", sc_idx_gz},
    {"dpt_st_open", sc_st_open},
    {"dpt_net_load", sc_net_load},
    {"dpt_checkpoint_load", sc_checkpoint_load},
    {"dpt_fit (2 workers, checkpoints, progress)", sc_fit},
    {"dpt_datastore_match_classes", sc_match_classes},
};

enum { R_ERROR, R_BAD, R_SWALLOWED, R_ABSORBED, R_NOT_REACHED, N_RESULTS };

/* Where the failed allocation was called from, in words. */
static const char *where(void *addr, char *buf, size_t size)
{
    Dl_info di;
    if (addr && dladdr(addr, &di) && di.dli_sname)
        snprintf(buf, size, "%s+0x%lx in %s", di.dli_sname, (unsigned long)((char *)addr - (char *)di.dli_saddr),
                 di.dli_fname);
    else if (addr && dladdr(addr, &di) && di.dli_fname)
        snprintf(buf, size, "offset 0x%lx in %s", (unsigned long)((char *)addr - (char *)di.dli_fbase),
                 di.dli_fname);
    else
        snprintf(buf, size, "%p", addr);
    return buf;
}

/* A failed allocation that a library below us absorbs by design, so the call
 * rightly succeeds: glibc's stdio buffer (the stream then runs unbuffered),
 * and stb_image's header probe (stbi_info; the decoder that follows
 * allocates again, and a failure there is reported). Anything else that
 * fails without the call failing is a bug. */
static int absorbed_below(void *addr)
{
    Dl_info di;
    if (!addr || !dladdr(addr, &di))
        return 0;
    if (di.dli_sname && strcmp(di.dli_sname, "_IO_file_doallocate") == 0)
        return 1;
    return di.dli_fname && strstr(di.dli_fname, "libstb");
}

/* The scenario and allocation being run, for the fatal-signal handler. */
static const char *volatile cur_name;
static volatile long cur_k;

static void put(const char *s) { (void)!write(2, s, strlen(s)); }

static void on_fatal(int sig)
{
    char num[24];
    int i = (int)sizeof num - 1;
    num[i] = '\0';
    long k = cur_k;
    do
        num[--i] = (char)('0' + k % 10);
    while ((k /= 10) > 0 && i > 0);
    put("FAIL: ");
    put(cur_name ? cur_name : "?");
    put(": allocation ");
    put(num + i);
    put(sig == SIGALRM ? " failed: the call hung for 20 s\n" : " failed: the process crashed\n");
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Run the scenario with its k-th allocation failing and judge the outcome. */
static int run_one(const scenario *sc, long k, long live_delta0, dpt_status *status)
{
    cur_name = sc->name, cur_k = k;
    alarm(20);
    dpt_clear_error();
    long before = atomic_load(&live);
    int leftover = 0;
    arm(k);
    dpt_status s = sc->fn(&leftover);
    disarm();
    alarm(0);
    long delta = atomic_load(&live) - before;
    *status = s;
    if (!atomic_load(&failed))
        return R_NOT_REACHED;
    void *caller = atomic_load(&fail_caller);
    char w[512];
    if (s == DPT_OK) {
        if (absorbed_below(caller))
            return R_ABSORBED;
        fprintf(stderr, "  %s: allocation %ld failed (called from %s) but the call succeeded\n", sc->name, k,
                where(caller, w, sizeof w));
        return R_SWALLOWED;
    }
    int bad = 0;
    if (!dpt_last_error()[0]) {
        fprintf(stderr, "  %s: allocation %ld: status %s without a message\n", sc->name, k, dpt_status_str(s));
        bad = 1;
    }
    if (leftover) {
        fprintf(stderr, "  %s: allocation %ld: failed but returned an object\n", sc->name, k);
        bad = 1;
    }
    if (delta != live_delta0) {
        fprintf(stderr, "  %s: allocation %ld (from %s): %ld blocks not freed (%s)\n", sc->name, k,
                where(caller, w, sizeof w), delta - live_delta0, dpt_last_error());
        bad = 1;
    }
    return bad ? R_BAD : R_ERROR;
}

static void sweep(const scenario *sc)
{
    /* Twice without failures: the first run does one-time initialisations,
     * the second gives the number of allocations and the live-block delta
     * every run must reproduce. */
    int leftover;
    dpt_status s = sc->fn(&leftover);
    long before = atomic_load(&live);
    arm(0);
    s = sc->fn(&leftover);
    disarm();
    long n = atomic_load(&n_allocs), delta0 = atomic_load(&live) - before;
    CHECK_MSG(s == DPT_OK, "%s without failures: %s", sc->name, dpt_last_error());
    CHECK_MSG(delta0 == 0, "%s without failures leaves %ld blocks allocated", sc->name, delta0);
    if (s != DPT_OK)
        return;

    long count[N_RESULTS] = {0}, by_status[16] = {0};
    char example[16][160];
    for (long k = 1; k <= n; k++) {
        dpt_status cs;
        int r = run_one(sc, k, delta0, &cs);
        count[r]++;
        if (r == R_ERROR && cs > 0 && cs < 16 && by_status[cs]++ == 0)
            snprintf(example[cs], sizeof example[cs], "%s", dpt_last_error());
    }
    printf("%s: %ld allocations; the k-th failing gives:\n", sc->name, n);
    for (int i = 1; i < 16; i++)
        if (by_status[i])
            printf("  %-16s %5ld  e.g. \"%s\"\n", dpt_status_str((dpt_status)i), by_status[i], example[i]);
    if (count[R_ABSORBED])
        printf("  %-16s %5ld  (stdio buffer or image header probe; the call rightly succeeds)\n",
               "absorbed below", count[R_ABSORBED]);
    if (count[R_SWALLOWED] || count[R_BAD] || count[R_NOT_REACHED])
        printf("  unreported %ld, without message or leaking %ld, not reached %ld\n", count[R_SWALLOWED],
               count[R_BAD], count[R_NOT_REACHED]);
    CHECK_MSG(count[R_BAD] == 0, "%s: %ld failures without message or with leaks", sc->name, count[R_BAD]);
    CHECK_MSG(count[R_SWALLOWED] == 0, "%s: %ld failed allocations went unreported", sc->name,
              count[R_SWALLOWED]);
    CHECK_MSG(count[R_NOT_REACHED] * 10 <= n, "%s: %ld of %ld allocations not reached", sc->name,
              count[R_NOT_REACHED], n);
}

/* The wrappers see the library's allocations (it is linked statically into
 * this executable) and fail the one they are told to. */
static void self_check(void)
{
    arm(0);
    void *volatile p = dpt_alloc(100);
    disarm();
    CHECK_MSG(p && atomic_load(&n_allocs) == 1, "dpt_alloc not seen by the wrappers (%ld allocations)",
              atomic_load(&n_allocs));
    dpt_free(p);
    arm(1);
    void *volatile q = dpt_alloc(100);
    disarm();
    CHECK_MSG(!q && atomic_load(&failed), "the allocation that should fail did not");
    dpt_free(q);
}

static int setup(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/dpt_alloc_XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    if (make_folder() != 0 || write_idx() != 0)
        return -1;
    snprintf(model_file, sizeof model_file, "%s/model.safetensors", tmp);
    snprintf(ckpt_file, sizeof ckpt_file, "%s/ckpt.safetensors", tmp);
    snprintf(fit_model, sizeof fit_model, "%s/fit-model.safetensors", tmp);
    snprintf(fit_ckpt, sizeof fit_ckpt, "%s/fit-ckpt.safetensors", tmp);
    dpt_net *net = NULL;
    dpt_kv meta[] = {{"classes", "[\"a\",\"b\",\"c\"]"}};
    dpt_checkpoint_info info = {1, 0, 0, 3, 1, 0.0, 0, 0};
    if (dpt_net_from_spec(tiny_spec, "tiny", 3, 4, 1, &net) != DPT_OK ||
        dpt_sgdm_new(dpt_net_n_params(net), 0.01f, 0.9f, 0.0f, &ck_opt) != DPT_OK ||
        dpt_net_save(net, model_file, meta, 1) != DPT_OK ||
        dpt_checkpoint_save(ckpt_file, net, ck_opt, &info, meta, 1) != DPT_OK) {
        dpt_net_free(net);
        return -1;
    }
    ck_net = net;
    dpt_datastore *all = NULL;
    if (dpt_datastore_open_idx(idx_images, NULL, &all) != DPT_OK ||
        dpt_datastore_split_each_label(all, 0.75, 1, &fit_train, &fit_test) != DPT_OK) {
        dpt_datastore_free(all);
        return -1;
    }
    dpt_datastore_free(all);
    return 0;
}

int main(void)
{
    static const int fatal[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        signal(fatal[i], on_fatal);
    /* BLAS threads of their own would allocate outside the sweep's view. */
    dpt_blas_set_threads(1);
    self_check();
    if (setup() != 0) {
        fprintf(stderr, "setup failed: %s\n", dpt_last_error());
        if (tmp[0])
            tu_remove_tree(tmp);
        return 1;
    }
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        sweep(&scenarios[i]);
    dpt_datastore_free(fit_train);
    dpt_datastore_free(fit_test);
    dpt_sgdm_free(ck_opt);
    dpt_net_free(ck_net);
    tu_remove_tree(tmp);
    return tu_exit();
}

#else /* NO_INTERPOSER */

int main(void)
{
    printf("skipped: allocation faults are injected by wrapping glibc's malloc, which this build "
           "(a sanitizer build, or another C library) does not allow\n");
    return TU_SKIP;
}

#endif
