/* dptrain train: the MATLAB example's job from the command line. */
#include "cli/cli.h"
#include "cli/outdir.h"
#include "cli/report.h"
#include "cli/serve.h"
#include "core/safetensors.h"
#include "dptrain/gpu.h"
#include "dptrain/train.h"
#include "train/train_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <strings.h>
#include <unistd.h>

static const char help[] =
    "usage: dptrain train --data PATH [options]\n"
    "\n"
    "Train a network data-parallel and report test accuracy (or, for a language\n"
    "model, held-out bits per character).\n"
    "\n"
    "data:\n"
    "  --data PATH         image folder (one sub-folder per class), IDX images file,\n"
    "                      sequence folder (class sub-folders of .csv files, one time\n"
    "                      step per line: a sequence classifier) or UTF-8 text file\n"
    "                      (a character language model, the last 10% held out)\n"
    "  --labels FILE       IDX labels file (default: found beside the images file)\n"
    "  --test PATH         held-out data (image or sequence folder, or IDX; classes\n"
    "                      matched to --data's by name, any subset of them; for a\n"
    "                      text, a text file within its vocabulary); default: split\n"
    "                      --data\n"
    "  --test-labels FILE  IDX labels for --test (default: found beside it)\n"
    "  --split FRACTION    training fraction per label when no --test (default 0.9);\n"
    "                      for a text, the fraction trained on (at least 0.5), the\n"
    "                      rest held out\n"
    "  --seq-len T         language model: characters per stream and iteration\n"
    "                      (truncated backpropagation through time; default 64)\n"
    "  --sequence-padding left|right\n"
    "                      sequence folder: where each minibatch pads its shorter\n"
    "                      sequences to its longest (default right; masked either way)\n"
    "  --max-length T      sequence folder: keep the first T time steps of each file\n"
    "                      (default 0: all)\n"
    "  --skip-corrupt      skip images that fail to decode, with a warning naming each\n"
    "                      (the first 10, then a count; default: error). Found before\n"
    "                      training in every --cache mode (with none, by decoding every\n"
    "                      image once without keeping it)\n"
    "  --cache MODE        image folders: auto | memory | none (default auto). memory\n"
    "                      decodes every image once, before training, and keeps it;\n"
    "                      none streams: background threads decode each minibatch from\n"
    "                      the files, a few minibatches in memory whatever the folder's\n"
    "                      size (same batches, same model); without --skip-corrupt an\n"
    "                      image that fails to decode then stops training when its\n"
    "                      minibatch is reached (exit 1, naming it). auto: memory when\n"
    "                      the decoded images (estimated from a sample of headers) fit\n"
    "                      DPT_MAX_CACHE_MEMORY bytes (K, M, G, T suffixes; default half\n"
    "                      the physical memory, or of a cgroup memory limit, shared by\n"
    "                      the MPI ranks on one machine), else none.\n"
    "                      One line says which mode and why\n"
    "  --augment LIST      random transforms of each training image, like MATLAB's\n"
    "                      imageDataAugmenter (default: none; test data never): a comma-\n"
    "                      separated list of reflect (= reflect-x), reflect-y,\n"
    "                      rotate=A or rotate=MIN:MAX (degrees), scale=MIN:MAX,\n"
    "                      scale-x=MIN:MAX, scale-y=MIN:MAX, shear-x=A|MIN:MAX,\n"
    "                      shear-y=A|MIN:MAX (degrees), translate=T or translate=MIN:MAX\n"
    "                      (pixels of the network input), translate-x=, translate-y=;\n"
    "                      a single A or T means -A:A. One transform per image, drawn\n"
    "                      from --seed and the image's place in the run, so any worker\n"
    "                      count draws the same; e.g. reflect,translate=3,rotate=10,\n"
    "                      scale=0.9:1.1\n"
    "network and optimiser:\n"
    "  --net SPEC          network spec file (default: the MATLAB example's network,\n"
    "                      classes taken from the data; see dptrain info --spec; for\n"
    "                      a text: sequenceinput size=vocab, lstm units=256, fc\n"
    "                      outputs=vocab, softmax; for a sequence folder:\n"
    "                      sequenceinput size=F, lstm units=100 output=last, fc\n"
    "                      outputs=classes, softmax)\n"
    "  --epochs N          epochs (default 20)\n"
    "  --batch N           minibatch size over all workers (default 128); for a\n"
    "                      language model the number of parallel text streams\n"
    "  --optimizer NAME    sgdm | adam | adamw (default sgdm; adamw: Adam with the\n"
    "                      weight decay decoupled from the gradient, PyTorch's AdamW)\n"
    "  --lr X              base learning rate (default 0.01 for sgdm, 0.001 for adam\n"
    "                      and adamw); also --learn-rate X\n"
    "  --lr-schedule S     the rate per iteration (default constant):\n"
    "                        piecewise[:every=E,drop=F]  x F every E epochs\n"
    "                                                    (default every=10,drop=0.1)\n"
    "                        cosine[:min=X]              down to X (default 0) over\n"
    "                                                    the --epochs, per iteration\n"
    "                      and after any of them ,warmup=W: linear warm-up over\n"
    "                      the first W epochs (e.g. cosine,warmup=2 or warmup=1)\n"
    "  --momentum X        SGD momentum (default 0.9; sgdm)\n"
    "  --beta1 X           Adam's first-moment decay (default 0.9)\n"
    "  --beta2 X           Adam's second-moment decay (default 0.999)\n"
    "  --epsilon X         Adam's epsilon (default 1e-8)\n"
    "  --weight-decay X    L2 regularisation factor (default 0)\n"
    "  --clip-norm X       clip the global L2 norm of the aggregated gradient to X\n"
    "                      before each update (default 0: off)\n"
    "  --seed N            seed of initialisation, split, shuffles and augmentation\n"
    "                      (default 0)\n"
    "parallel:\n"
    "  --device NAME       auto | cpu | gpu (default auto: GPUs when this build has CUDA\n"
    "                      and a device is found, one worker per GPU, else CPU workers;\n"
    "                      --workers N with more workers than GPUs means CPU workers, and\n"
    "                      so does a layer without GPU code, with a notice; gpu refuses\n"
    "                      such a layer, naming it)\n"
    "  --precision NAME    fp32 | tf32 | bf16: the products of convolutions and fc\n"
    "                      layers on GPUs (default fp32; tf32: tensor-core TF32; bf16:\n"
    "                      bfloat16 operands, float32 accumulation, float32 weights,\n"
    "                      batch norm and loss). CPU workers compute in fp32 only\n"
    "  --cuda-graph on|off on GPUs, each step's forward, loss and backward as one CUDA\n"
    "                      graph per minibatch shape where the network allows it\n"
    "                      (default on; off: kernels launched one by one, as with\n"
    "                      DPT_CUDA_GRAPH=0). No effect on CPU workers\n"
    "  --batch-per-worker  on GPUs, keep --batch as the global minibatch (default: the\n"
    "                      MATLAB example's rule, --batch per GPU, so B x GPUs in all)\n"
    "  --workers N         CPU workers (default: the CPUs this process may run on, as\n"
    "                      taskset, a cpuset or a cgroup CPU quota allows; 1 under\n"
    "                      MPI, where each rank is one worker)\n"
    "  --backend NAME      auto | local | mpi (default auto: mpi when started by mpirun)\n"
    "  --threads N         BLAS threads per worker (default: those CPUs / workers, or\n"
    "                      under MPI / ranks on this machine; at least 1)\n"
    "  --sync-bn           synchronise batch-norm statistics across workers\n"
    "  --no-prefetch       decode batches in the training thread\n"
    "output (in --out):\n"
    "  --out DIR           output folder (default: out): model.safetensors, metrics.csv,\n"
    "                      loss.svg and loss.png (redrawn during training); it holds\n"
    "                      one run: a folder in use by a run is refused, and so is one\n"
    "                      with an earlier run's files unless --overwrite or --resume\n"
    "                      DIR/checkpoint.safetensors (that run goes on)\n"
    "  --overwrite         replace an earlier run's files in --out (removed only once\n"
    "                      every input has been checked)\n"
    "  --eval-every-epoch  test accuracy after every epoch (in metrics.csv and the plot;\n"
    "                      a language model's held-out bits per character always are)\n"
    "  --checkpoint-every K  write checkpoint.safetensors every K iterations (default 0:\n"
    "                      none; when K > 0 one is also written at the end)\n"
    "  --resume FILE       continue from a checkpoint up to --epochs in total (same\n"
    "                      --seed and data; same --batch unless at an epoch boundary)\n"
    "  --print-every K     when stdout is not a terminal, a line every K iterations\n"
    "                      (default 0: one line per epoch)\n"
    "  --quiet             print only the final result\n"
    "  --serve [HOST:]PORT serve a live dashboard while training: loss and test\n"
    "                      accuracy against iteration, speed, ETA, settings, workers\n"
    "                      and their time waiting in collectives (GET / in a browser;\n"
    "                      GET /progress.json, GET /events for scripts). HOST defaults\n"
    "                      to 127.0.0.1 (another address is reachable from other\n"
    "                      machines, without authentication: a warning says so); PORT\n"
    "                      0 picks a free port. The URL is printed on stderr as\n"
    "                      \"dashboard: URL\" before training starts (docs/dashboard.md)\n"
    "  --serve-linger S    keep serving S seconds after training ends (default 0;\n"
    "                      SIGINT ends it sooner)\n"
    "  -h, --help          this help\n"
    "\n"
    "SIGINT or SIGTERM stops training at the next iteration boundary, saying where\n"
    "the last checkpoint is (exit 1); a second one ends dptrain at once.\n";

/* --skip-corrupt names what it skipped: this many files, then a count. */
#define SKIP_WARNINGS 10

/* --cache: where an image folder's decoded pixels live. */
enum { CACHE_AUTO, CACHE_MEMORY, CACHE_NONE };

/* The auto budget without DPT_MAX_CACHE_MEMORY: half the physical memory,
 * or of a cgroup v2 memory limit when that is lower (a container's). */
static uint64_t default_cache_budget(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    uint64_t mem = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : (uint64_t)1 << 30;
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
    if (f) {
        unsigned long long lim;
        if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && lim < mem)
            mem = lim;
        fclose(f);
    }
    return mem / 2;
}

/* A byte count for people: "12.3 MiB" (powers of 1024, as the budget's
 * suffixes). */
static const char *human_bytes(char *buf, size_t size, uint64_t b)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4)
        v /= 1024, u++;
    if (u == 0)
        snprintf(buf, size, "%llu bytes", (unsigned long long)b);
    else
        snprintf(buf, size, "%.1f %s", v, units[u]);
    return buf;
}

/* The line that says where the training images live and why. */
static void cache_line(char *buf, size_t size, const dpt_datastore *ds, int cache, uint64_t budget,
                       const char *budget_from, int prefetch)
{
    char have[32], lim[32], how[160];
    int exact = 0;
    uint64_t bytes = dpt_datastore_decoded_bytes(ds, &exact);
    if (dpt_datastore_kind_of(ds) != DPT_DATASTORE_FOLDER) {
        snprintf(buf, size, "data cache: memory (IDX files are read whole; %s)",
                 human_bytes(have, sizeof have, bytes));
        return;
    }
    int threads = dpt_mbq_auto_threads();
    if (prefetch)
        snprintf(how, sizeof how, "streaming with %d decode thread%s per worker, at most %d minibatches "
                 "in memory per worker", threads, threads == 1 ? "" : "s", threads + 1);
    else
        snprintf(how, sizeof how, "streaming, decoded in the training thread (--no-prefetch)");
    human_bytes(have, sizeof have, bytes);
    human_bytes(lim, sizeof lim, budget);
    if (cache == CACHE_MEMORY)
        snprintf(buf, size, "data cache: memory (--cache memory): %s of decoded images", have);
    else if (cache == CACHE_NONE)
        snprintf(buf, size, "data cache: none (--cache none): %s", how);
    else if (dpt_datastore_is_preloaded(ds))
        snprintf(buf, size, "data cache: memory (auto): %s of decoded images fit the budget of %s (%s)",
                 have, lim, budget_from);
    else
        snprintf(buf, size, "data cache: none (auto): the decoded images, about %s, would not fit the "
                 "budget of %s (%s); %s", have, lim, budget_from, how);
}

/* Open a dataset: a directory is an image folder, a file is IDX. With
 * skip_corrupt, warn (when `warn`) about each file skipped. An image
 * folder is kept in memory or streamed by `cache` (CACHE_AUTO: within
 * `budget` bytes). */
static dpt_status open_data(const char *path, const char *labels, int skip_corrupt, int warn,
                            int cache, uint64_t budget, dpt_datastore **out)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return dpt_fail(DPT_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        dpt_folder_options o = DPT_FOLDER_OPTIONS_INIT;
        o.skip_corrupt = skip_corrupt;
        /* memory: decode once, not every epoch */
        o.preload = cache == CACHE_MEMORY ? 1 : cache == CACHE_NONE ? 0 : DPT_PRELOAD_AUTO;
        o.cache_budget_bytes = budget;
        dpt_status s = dpt_datastore_open_folder(path, &o, out);
        size_t n = s == DPT_OK ? dpt_datastore_n_corrupt(*out) : 0;
        for (size_t k = 0; warn && k < n && k < SKIP_WARNINGS; k++)
            cli_error("%s: %s; skipped (--skip-corrupt)", dpt_datastore_corrupt_file(*out, k),
                      dpt_datastore_corrupt_reason(*out, k));
        if (warn && n > SKIP_WARNINGS)
            cli_error("%s: %zu more unreadable images skipped (--skip-corrupt), %zu in all", path,
                      n - SKIP_WARNINGS, n);
        return s;
    }
    return dpt_datastore_open_idx(path, labels, out);
}

/* Rank and size from the MPI launcher's environment (before MPI starts), so
 * only rank 0 prints (the library's worker 0 writes the files). */
static int launcher_env(const char *const *vars, size_t n, int fallback)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = getenv(vars[i]);
        if (v)
            return atoi(v);
    }
    return fallback;
}

static int launcher_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"};
    return launcher_env(vars, sizeof vars / sizeof *vars, 0);
}

static int launcher_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"};
    return launcher_env(vars, sizeof vars / sizeof *vars, 1);
}

/* Ranks the launcher put on this machine: they share its CPUs as local
 * worker threads do, so each gets the same BLAS thread count a local
 * worker would (OpenBLAS rounds some shapes differently with another
 * thread count: mpirun and local threads then give the same bits). */
static int launcher_local_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                                       "SLURM_NTASKS_PER_NODE"};
    int n = launcher_env(vars, sizeof vars / sizeof *vars, 1);
    return n >= 1 && n <= 1 << 20 ? n : 1; /* the environment is not ours to trust */
}

/* The stop request of dpt_fit_config.stop: the signal's number. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    /* A second signal while stopping ends the process at once (temporary
     * files are only renamed once complete, so no final file is torn). */
    if (stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
}

static void catch_stop_signals(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART; /* the workers' reads and writes go on */
    sigemptyset(&sa.sa_mask);
    /* A signal the parent set to be ignored (nohup; SIGINT in a shell's
     * background job) stays ignored. */
    static const int sigs[] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++)
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
            sigaction(sigs[i], &sa, NULL);
}

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return cli_error("--out %s: cannot create folder: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cli_error("--out %s: not a folder", dir);
    if (access(dir, W_OK) != 0)
        return cli_error("--out %s: folder not writable", dir);
    return 0;
}

/* --resume continues a model whose output k is the checkpoint's class k:
 * the training data must have the same class names in the same order, or
 * training would go on with every label meaning another class. A file that
 * does not open or fails its checksum (which covers the metadata read here)
 * is left to dpt_fit to report. Returns 0 or 1 (printed). */
static int check_resume_classes(const char *resume, const char *data, int k,
                                const char *const *names)
{
    dpt_st *st = NULL;
    dpt_checkpoint_info info;
    if (dpt_checkpoint_read_info(resume, &info) != DPT_OK || dpt_st_open(resume, &st) != DPT_OK) {
        dpt_clear_error();
        return 0;
    }
    int rc = 0;
    const char *text = dpt_st_meta(st, "classes");
    cJSON *arr = text ? cJSON_Parse(text) : NULL;
    if (text) {
        int same = cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == k;
        for (int i = 0; same && i < k; i++) {
            const cJSON *c = cJSON_GetArrayItem(arr, i);
            same = cJSON_IsString(c) && strcmp(c->valuestring, names[i]) == 0;
        }
        if (!same) {
            char have[160] = "";
            size_t len = 0;
            for (int i = 0; i < k && len < sizeof have - 1; i++)
                len += (size_t)snprintf(have + len, sizeof have - len, "%s\"%s\"", i ? "," : "",
                                        names[i]);
            rc = cli_error("--resume %s: the checkpoint's classes are %.160s%s, but --data %s has [%s]%s; "
                           "resume with the data it was trained on", resume, text,
                           strlen(text) > 160 ? "..." : "", data, have, len >= sizeof have - 1 ? "..." : "");
        }
    }
    cJSON_Delete(arr);
    dpt_st_close(st);
    return rc;
}

/* --resume of a language model goes on with the vocabulary it was trained
 * on: output j must stand for the same character. Returns 0 or 1 (printed);
 * a file that does not open is left to dpt_fit. */
static int check_resume_vocab(const char *resume, const char *data, const dpt_text *train)
{
    dpt_st *st = NULL;
    dpt_checkpoint_info info;
    if (dpt_checkpoint_read_info(resume, &info) != DPT_OK || dpt_st_open(resume, &st) != DPT_OK) {
        dpt_clear_error();
        return 0;
    }
    int rc = 0, n = dpt_text_n_vocab(train);
    const char *text = dpt_st_meta(st, "vocab");
    cJSON *arr = text ? cJSON_Parse(text) : NULL;
    int same = cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == n;
    for (int i = 0; same && i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(arr, i);
        same = cJSON_IsNumber(c) && c->valuedouble == (double)dpt_text_vocab(train)[i];
    }
    if (!same)
        rc = cli_error("--resume %s: %s; resume with the text it was trained on", resume,
                       text ? "the checkpoint's vocabulary differs from --data's" :
                              "not a language model's checkpoint (no vocabulary)");
    (void)data;
    cJSON_Delete(arr);
    dpt_st_close(st);
    return rc;
}

enum { DATA_IMAGES, DATA_SEQUENCES, DATA_TEXT };

/* A folder with a .csv file in one of its (non-hidden) sub-folders. */
static int is_sequence_folder(const char *dir)
{
    DIR *d = opendir(dir);
    int found = 0;
    struct dirent *e;
    while (d && !found && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        DIR *c = opendir(sub);
        struct dirent *f;
        while (c && !found && (f = readdir(c))) {
            size_t l = strlen(f->d_name);
            found = f->d_name[0] != '.' && l > 4 && strcasecmp(f->d_name + l - 4, ".csv") == 0;
        }
        if (c)
            closedir(c);
    }
    if (d)
        closedir(d);
    return found;
}

/* What --data holds: a folder whose class folders hold .csv files is a
 * sequence folder, any other folder images; a regular file is an IDX file
 * when it starts as one (a zero byte: IDX's magic, which no text has) or
 * as gzip does (0x1f 0x8b, no UTF-8 text either), when --labels is given,
 * or when its name says so (ends in .gz or -ubyte, as MNIST's files do, so
 * a damaged one is reported by the IDX reader), and otherwise text. A path
 * that is neither is left to the image reader to report. */
static int data_kind(const char *path, const char *labels)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return DATA_IMAGES;
    if (S_ISDIR(st.st_mode))
        return is_sequence_folder(path) ? DATA_SEQUENCES : DATA_IMAGES;
    size_t l = strlen(path);
    if (!S_ISREG(st.st_mode) || labels || (l > 3 && !strcasecmp(path + l - 3, ".gz")) ||
        (l > 6 && !strcmp(path + l - 6, "-ubyte")))
        return DATA_IMAGES;
    unsigned char head[2] = {1, 1};
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(head, 1, 2, f) : 0;
    if (f)
        fclose(f);
    if ((n >= 1 && head[0] == 0) || (n == 2 && head[0] == 0x1f && head[1] == 0x8b))
        return DATA_IMAGES;
    return DATA_TEXT;
}

/* The one line an interrupted run prints: where it stopped and where the
 * last checkpoint is. */
static void print_interrupted(const dpt_fit_result *res, const char *ckpt_path, const char *resume)
{
    char where[96], ckpt[4200 + 64];
    const char *sig = stop_signal == SIGINT ? "SIGINT" : stop_signal == SIGTERM ? "SIGTERM" : "a signal";
    if (res->iterations > res->start_iteration)
        snprintf(where, sizeof where, "at epoch %d, iteration %ld", res->epoch, res->iterations);
    else
        snprintf(where, sizeof where, "before the first iteration");
    if (res->checkpoint_iteration >= 0)
        snprintf(ckpt, sizeof ckpt, "last checkpoint: %s (iteration %ld)", ckpt_path,
                 res->checkpoint_iteration);
    else if (resume)
        snprintf(ckpt, sizeof ckpt, "last checkpoint: %s (iteration %ld, where this run resumed)", resume,
                 res->start_iteration);
    else
        snprintf(ckpt, sizeof ckpt, "no checkpoint was written");
    cli_error("interrupted by %s %s; %s", sig, where, ckpt);
}

/* The progress callback with --serve: the dashboard's store, then the
 * report (terminal line, metrics.csv, plots), on the queue's client thread. */
typedef struct train_sink {
    report *rep;
    serve *srv;
} train_sink;

static void sink_progress(const dpt_progress *p, void *arg)
{
    train_sink *t = arg;
    serve_record(t->srv, p);
    report_progress(p, t->rep);
}

static int shown_workers_of(int under_mpi, int n_workers)
{
    return under_mpi ? launcher_size() : n_workers;
}

/* A float setting as it was written (0.01, not 0.00999999977648258). */
static double shown(double x)
{
    char b[32];
    snprintf(b, sizeof b, "%.7g", x);
    return strtod(b, NULL);
}

/* The run's settings for the dashboard, as a JSON object. */
static void serve_settings(serve *srv, const dpt_fit_config *cfg, int kind, const char *data,
                           const char *test, const char *net_path, const char *optim_name,
                           const char *sched_text, const char *augment_text, const char *cache_opt,
                           const char *device_notice, int n_gpus, int workers, const char *backend,
                           int threads, int cpus, const char *out_dir, int k, size_t n_train,
                           size_t n_test)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return;
    static const char *const kinds[] = {"images", "sequences", "characters"};
    cJSON_AddStringToObject(o, "unit", kinds[kind]);
    cJSON_AddStringToObject(o, "data", data);
    cJSON_AddStringToObject(o, "test", test ? test : "split from --data");
    cJSON_AddNumberToObject(o, "train_observations", (double)n_train);
    cJSON_AddNumberToObject(o, "test_observations", (double)n_test);
    cJSON_AddNumberToObject(o, kind == DATA_TEXT ? "vocabulary" : "classes", k);
    cJSON_AddStringToObject(o, "net", net_path ? net_path : "default");
    cJSON_AddNumberToObject(o, "epochs", cfg->epochs);
    cJSON_AddNumberToObject(o, "batch", cfg->batch);
    cJSON_AddStringToObject(o, "optimizer", optim_name);
    cJSON_AddNumberToObject(o, "lr", shown(cfg->lr));
    if (cfg->optimizer == DPT_OPTIM_SGDM)
        cJSON_AddNumberToObject(o, "momentum", shown(cfg->momentum));
    else
        cJSON_AddNumberToObject(o, "beta1", cfg->beta1), cJSON_AddNumberToObject(o, "beta2", cfg->beta2);
    cJSON_AddNumberToObject(o, "weight_decay", shown(cfg->weight_decay));
    cJSON_AddStringToObject(o, "lr_schedule", sched_text ? sched_text : "constant");
    cJSON_AddNumberToObject(o, "clip_norm", cfg->clip_norm);
    cJSON_AddNumberToObject(o, "seed", (double)cfg->seed);
    if (augment_text)
        cJSON_AddStringToObject(o, "augment", augment_text);
    if (cache_opt)
        cJSON_AddStringToObject(o, "cache", cache_opt);
    if (kind == DATA_TEXT)
        cJSON_AddNumberToObject(o, "seq_len", cfg->seq_len);
    cJSON_AddBoolToObject(o, "eval_every_epoch", cfg->eval_every_epoch);
    cJSON_AddStringToObject(o, "resume", cfg->resume ? cfg->resume : "no");
    cJSON_AddStringToObject(o, "out", out_dir);
    cJSON_AddNumberToObject(o, "workers", workers);
    char dev[64];
    if (n_gpus)
        snprintf(dev, sizeof dev, "%d GPU%s (one worker each)", n_gpus, n_gpus == 1 ? "" : "s");
    else
        snprintf(dev, sizeof dev, "CPU (%d worker thread%s)", workers, workers == 1 ? "" : "s");
    cJSON_AddStringToObject(o, "device", device_notice[0] ? device_notice : dev);
    if (device_notice[0])
        cJSON_AddStringToObject(o, "devices", dev);
    cJSON_AddStringToObject(o, "precision", dpt_precision_name((dpt_precision)cfg->precision));
    cJSON_AddStringToObject(o, "backend", backend);
    cJSON_AddNumberToObject(o, "threads", threads);
    cJSON_AddNumberToObject(o, "cpus", cpus);
    cJSON_AddBoolToObject(o, "sync_bn", cfg->sync_bn);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text)
        serve_set_settings(srv, text);
    cJSON_free(text);
}

int cli_train(int argc, char **argv)
{
    enum { O_LABELS = 256, O_TEST, O_TEST_LABELS, O_SPLIT, O_SKIP, O_NET, O_EPOCHS, O_BATCH, O_LR,
           O_MOM, O_WD, O_SEED, O_WORKERS, O_BACKEND, O_THREADS, O_SYNC, O_NOPF, O_OUT, O_EVAL,
           O_QUIET, O_DATA, O_CKPT, O_RESUME, O_PRINT, O_DEVICE, O_BPW, O_OVERWRITE,
           O_OPTIM, O_SCHED, O_CLIP, O_BETA1, O_BETA2, O_EPS, O_AUGMENT, O_SEQLEN, O_PAD,
           O_MAXLEN, O_CACHE, O_SERVE, O_LINGER, O_PRECISION, O_CUDA_GRAPH };
    static const struct option opts[] = {
        {"data", required_argument, 0, O_DATA},       {"labels", required_argument, 0, O_LABELS},
        {"test", required_argument, 0, O_TEST},       {"test-labels", required_argument, 0, O_TEST_LABELS},
        {"split", required_argument, 0, O_SPLIT},     {"skip-corrupt", no_argument, 0, O_SKIP},
        {"net", required_argument, 0, O_NET},         {"epochs", required_argument, 0, O_EPOCHS},
        {"batch", required_argument, 0, O_BATCH},     {"lr", required_argument, 0, O_LR},
        {"momentum", required_argument, 0, O_MOM},    {"weight-decay", required_argument, 0, O_WD},
        {"seed", required_argument, 0, O_SEED},       {"workers", required_argument, 0, O_WORKERS},
        {"backend", required_argument, 0, O_BACKEND}, {"threads", required_argument, 0, O_THREADS},
        {"sync-bn", no_argument, 0, O_SYNC},          {"no-prefetch", no_argument, 0, O_NOPF},
        {"out", required_argument, 0, O_OUT},         {"eval-every-epoch", no_argument, 0, O_EVAL},
        {"quiet", no_argument, 0, O_QUIET},           {"help", no_argument, 0, 'h'},
        {"checkpoint-every", required_argument, 0, O_CKPT}, {"resume", required_argument, 0, O_RESUME},
        {"print-every", required_argument, 0, O_PRINT},
        {"device", required_argument, 0, O_DEVICE},   {"batch-per-worker", no_argument, 0, O_BPW},
        {"overwrite", no_argument, 0, O_OVERWRITE},
        {"optimizer", required_argument, 0, O_OPTIM}, {"learn-rate", required_argument, 0, O_LR},
        {"lr-schedule", required_argument, 0, O_SCHED}, {"clip-norm", required_argument, 0, O_CLIP},
        {"beta1", required_argument, 0, O_BETA1},     {"beta2", required_argument, 0, O_BETA2},
        {"epsilon", required_argument, 0, O_EPS},
        {"augment", required_argument, 0, O_AUGMENT},
        {"seq-len", required_argument, 0, O_SEQLEN},
        {"sequence-padding", required_argument, 0, O_PAD},
        {"max-length", required_argument, 0, O_MAXLEN},
        {"cache", required_argument, 0, O_CACHE},
        {"serve", required_argument, 0, O_SERVE},
        {"serve-linger", required_argument, 0, O_LINGER},
        {"precision", required_argument, 0, O_PRECISION},
        {"cuda-graph", required_argument, 0, O_CUDA_GRAPH},
        {0, 0, 0, 0},
    };
    const char *data = NULL, *labels = NULL, *test = NULL, *test_labels = NULL, *net_path = NULL;
    const char *out_dir = "out", *backend_name = "auto", *resume = NULL;
    long ckpt_every = 0, print_every = 0;
    const char *device = "auto";
    dpt_precision precision = DPT_PRECISION_FP32;
    int cuda_graph = 1;
    int batch_per_worker = 0, overwrite = 0;
    double split = 0.9, lr = 0.0, momentum = 0.9, wd = 0.0;
    int lr_unset = 1; /* then the optimizer's default */
    const char *optim_name = "sgdm", *sched_text = NULL, *momentum_opt = NULL, *adam_opt = NULL;
    double clip_norm = 0.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    dpt_augment augment = DPT_AUGMENT_INIT;
    const char *augment_text = NULL;
    long epochs = 20, batch = 128, seed = 0, workers = 0, threads = 0;
    int skip_corrupt = 0, sync_bn = 0, prefetch = 1, eval_epoch = 0, quiet = 0;
    long seq_len = 64, max_length = 0;
    int pad_left = 0;
    int cache = CACHE_AUTO;
    const char *serve_opt = NULL; /* --serve [HOST:]PORT */
    char serve_host[256] = "";
    int serve_port = 0;
    long serve_linger = 0;
    const char *cache_opt = NULL; /* --cache given */
    const char *seq_opt = NULL, *folder_opt = NULL; /* a flag given for text / sequence folders */
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case O_DATA: data = optarg; break;
        case O_LABELS: labels = optarg; break;
        case O_TEST: test = optarg; break;
        case O_TEST_LABELS: test_labels = optarg; break;
        case O_SPLIT: bad = cli_double("--split", optarg, &split); break;
        case O_SEQLEN:
            bad = cli_int("--seq-len", optarg, 1, 65536, &seq_len), seq_opt = "--seq-len";
            break;
        case O_MAXLEN:
            bad = cli_int("--max-length", optarg, 0, DPT_SEQ_MAX_STEPS, &max_length);
            folder_opt = "--max-length";
            break;
        case O_PAD:
            folder_opt = "--sequence-padding";
            if (!strcmp(optarg, "left") || !strcmp(optarg, "right")) {
                pad_left = optarg[0] == 'l';
            } else {
                char clean[64];
                return cli_error("--sequence-padding: '%s' is not left or right",
                                 cli_clean(clean, sizeof clean, optarg));
            }
            break;
        case O_SKIP: skip_corrupt = 1; break;
        case O_CACHE:
            cache_opt = optarg;
            if (!strcmp(optarg, "auto") || !strcmp(optarg, "memory") || !strcmp(optarg, "none")) {
                cache = optarg[0] == 'a' ? CACHE_AUTO : optarg[0] == 'm' ? CACHE_MEMORY : CACHE_NONE;
            } else {
                char clean[64];
                return cli_error("--cache: '%s' is not auto, memory or none",
                                 cli_clean(clean, sizeof clean, optarg));
            }
            break;
        case O_NET: net_path = optarg; break;
        case O_EPOCHS: bad = cli_int("--epochs", optarg, 1, 1000000, &epochs); break;
        case O_BATCH: bad = cli_int("--batch", optarg, 1, 1 << 20, &batch); break;
        case O_LR: bad = cli_double("--lr", optarg, &lr), lr_unset = 0; break;
        case O_MOM: bad = cli_double("--momentum", optarg, &momentum), momentum_opt = "--momentum"; break;
        case O_OPTIM: optim_name = optarg; break;
        case O_SCHED: sched_text = optarg; break;
        case O_CLIP: bad = cli_double("--clip-norm", optarg, &clip_norm); break;
        case O_BETA1: bad = cli_double("--beta1", optarg, &beta1), adam_opt = "--beta1"; break;
        case O_BETA2: bad = cli_double("--beta2", optarg, &beta2), adam_opt = "--beta2"; break;
        case O_EPS: bad = cli_double("--epsilon", optarg, &eps), adam_opt = "--epsilon"; break;
        case O_WD: bad = cli_double("--weight-decay", optarg, &wd); break;
        case O_SEED: bad = cli_int("--seed", optarg, 0, 0x7fffffffL, &seed); break;
        case O_WORKERS: bad = cli_int("--workers", optarg, 1, 4096, &workers); break;
        case O_BACKEND: backend_name = optarg; break;
        case O_THREADS: bad = cli_int("--threads", optarg, 1, 4096, &threads); break;
        case O_SYNC: sync_bn = 1; break;
        case O_NOPF: prefetch = 0; break;
        case O_OUT: out_dir = optarg; break;
        case O_EVAL: eval_epoch = 1; break;
        case O_QUIET: quiet = 1; break;
        case O_CKPT: bad = cli_int("--checkpoint-every", optarg, 0, 1L << 40, &ckpt_every); break;
        case O_RESUME: resume = optarg; break;
        case O_PRINT: bad = cli_int("--print-every", optarg, 0, 1L << 40, &print_every); break;
        case O_DEVICE: device = optarg; break;
        case O_PRECISION:
            if (dpt_precision_parse(optarg, &precision) != DPT_OK)
                return cli_error("--precision: %s", dpt_last_error());
            break;
        case O_CUDA_GRAPH:
            if (strcmp(optarg, "on") == 0)
                cuda_graph = 1;
            else if (strcmp(optarg, "off") == 0)
                cuda_graph = 0;
            else
                return cli_error("--cuda-graph: '%.40s' is not on or off", optarg);
            break;
        case O_BPW: batch_per_worker = 1; break;
        case O_OVERWRITE: overwrite = 1; break;
        case O_SERVE:
            if (serve_parse(optarg, serve_host, sizeof serve_host, &serve_port))
                return 1;
            serve_opt = optarg;
            break;
        case O_LINGER: bad = cli_int("--serve-linger", optarg, 0, 86400, &serve_linger); break;
        case O_AUGMENT:
            if (dpt_augment_parse(optarg, &augment) != DPT_OK)
                return cli_error("--augment: %s", dpt_last_error());
            augment_text = optarg;
            break;
        case 'h': fputs(help, stdout); return 0;
        default:
            return cli_error("train: unknown or incomplete option '%s' (see dptrain train --help)",
                             argv[optind - 1]);
        }
        if (bad)
            return 1;
    }
    if (optind < argc)
        return cli_error("train: unexpected argument '%s'", argv[optind]);
    if (!data)
        return cli_error("train: --data PATH is required (see dptrain train --help)");
    if (!(split > 0 && split < 1))
        return cli_error("--split: %g is not between 0 and 1", split);
    const int kind = data_kind(data, labels);
    if (kind != DATA_TEXT && seq_opt)
        return cli_error("%s: applies to a text --data (a language model)", seq_opt);
    if (kind != DATA_SEQUENCES && folder_opt)
        return cli_error("%s: applies to a sequence folder --data (class folders of .csv files)",
                         folder_opt);
    if (kind != DATA_IMAGES && augment_text)
        return cli_error("--augment: applies to images, not sequence data");
    if (kind != DATA_IMAGES && cache_opt)
        return cli_error("--cache: applies to images, not sequence data");
    /* The budget is read whatever the mode, so a bad value never waits
     * for a folder that happens to need it. */
    uint64_t cache_budget = 0;
    const char *budget_from = "half the physical memory";
    const char *budget_env = getenv("DPT_MAX_CACHE_MEMORY");
    if (budget_env && *budget_env) { /* empty is unset, as for every DPT_* variable */
        if (cli_bytes("DPT_MAX_CACHE_MEMORY", budget_env, &cache_budget))
            return 1;
        budget_from = "DPT_MAX_CACHE_MEMORY";
    } else {
        cache_budget = default_cache_budget();
        /* MPI ranks on one machine each keep their own copy: share it. */
        static const char *const local[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                                            "SLURM_NTASKS_PER_NODE"};
        int ranks = launcher_env(local, sizeof local / sizeof *local, 1);
        if (ranks > 1) {
            cache_budget /= (uint64_t)ranks;
            budget_from = "half the physical memory, shared by the MPI ranks on this machine";
        }
    }
    if (kind == DATA_TEXT && split < 0.5)
        return cli_error("--split: %g would hold out more than half of the text", split);
    /* adamw is Adam with decoupled weight decay: the same kind and state. */
    int decoupled = !strcmp(optim_name, "adamw");
    dpt_optim_kind optim_kind;
    if (dpt_optim_kind_parse(decoupled ? "adam" : optim_name, &optim_kind) != DPT_OK)
        return cli_error("--optimizer: unknown optimizer '%s' (sgdm, adam, adamw)", optim_name);
    if (optim_kind == DPT_OPTIM_SGDM && adam_opt)
        return cli_error("%s: applies to --optimizer adam or adamw, not sgdm", adam_opt);
    if (optim_kind != DPT_OPTIM_SGDM && momentum_opt)
        return cli_error("--momentum: applies to --optimizer sgdm, not %s", optim_name);
    if (lr_unset)
        lr = dpt_optim_default_lr(optim_kind);
    if (!(lr > 0))
        return cli_error("--lr: %g must be positive", lr);
    if (!(beta1 >= 0 && beta1 < 1))
        return cli_error("--beta1: %g must be in [0, 1)", beta1);
    if (!(beta2 >= 0 && beta2 < 1))
        return cli_error("--beta2: %g must be in [0, 1)", beta2);
    if (!(eps > 0))
        return cli_error("--epsilon: %g must be positive", eps);
    if (!(clip_norm >= 0))
        return cli_error("--clip-norm: %g must not be negative (0: off)", clip_norm);
    /* The step takes these as float: a value that rounds to 0 or to
     * infinity there (--lr 1e300 would train into NaN, --lr 1e-50 would
     * become 0, which the library reads as "the default") is refused. */
    if (!((float)lr > 0 && isfinite((float)lr)))
        return cli_error("--lr: %g is outside a float's range (about 1e-38 to 3e38)", lr);
    if (!((float)eps > 0 && isfinite((float)eps)))
        return cli_error("--epsilon: %g is outside a float's range (about 1e-38 to 3e38)", eps);
    if (!isfinite((float)wd))
        return cli_error("--weight-decay: %g is outside a float's range (at most about 3e38)", wd);
    dpt_lr_schedule schedule;
    if (dpt_lr_schedule_parse(sched_text, &schedule) != DPT_OK)
        return cli_error("--lr-schedule: %s", dpt_last_error());
    if (!(momentum >= 0 && momentum < 1))
        return cli_error("--momentum: %g must be in [0, 1)", momentum);
    if (!(wd >= 0))
        return cli_error("--weight-decay: %g must not be negative", wd);
    /* MATLAB's canUseGPU: GPUs when the build and the machine have them,
     * and every layer of the network has GPU code (auto falls back to CPU
     * workers with a notice, gpu refuses naming the layer). */
    int n_gpus = strcmp(device, "cpu") ? dpt_gpu_count() : 0;
    dpt_net *gpu_probe = NULL;
    if (n_gpus > 0 && net_path && dpt_net_from_spec_file(net_path, 2, 1, 0, &gpu_probe) != DPT_OK)
        gpu_probe = NULL; /* a bad spec is reported below, against the data's classes */
    /* Sequence data without --net: the default recurrent network decides. */
    if (n_gpus > 0 && !net_path && kind != DATA_IMAGES &&
        dpt_net_from_spec(dpt_net_default_lm_spec(), "<default>", 2, 1, 0, &gpu_probe) != DPT_OK)
        gpu_probe = NULL;
    char device_notice[768];
    int use_gpu = dpt_train_pick_device(device, n_gpus, workers, gpu_probe, device_notice,
                                        sizeof device_notice);
    dpt_net_free(gpu_probe);
    if (use_gpu < 0)
        return cli_error("%s", dpt_last_error());
    /* tf32 and bf16 are GPU arithmetic: never a silent fp32 run. */
    if (!use_gpu && precision != DPT_PRECISION_FP32)
        return cli_error("--precision %s: CPU workers compute in fp32 only (%s)",
                         dpt_precision_name(precision),
                         device_notice[0]       ? device_notice
                         : !strcmp(device, "cpu") ? "--device cpu"
                         : n_gpus < 1           ? (dpt_gpu_have_cuda() ? "no GPU found"
                                                                       : "this dptrain has no CUDA")
                                                : "more --workers than GPUs");
    if (!use_gpu)
        n_gpus = 0;
    dpt_comm_backend backend;
    if (dpt_comm_backend_parse(backend_name, &backend) != DPT_OK)
        return cli_error("--backend: unknown backend '%s' (auto, local, mpi)", backend_name);
    int under_mpi = backend == DPT_COMM_MPI || (backend == DPT_COMM_AUTO && dpt_comm_launched_by_mpi());
    if (under_mpi && !dpt_comm_have_mpi())
        return cli_error("--backend mpi: this dptrain was built without MPI support "
                         "(install libopenmpi-dev and rebuild)");
    if (under_mpi && workers > 1)
        return cli_error("--workers: under MPI each rank is one worker; use mpirun -np N");
    const int cpus = dpt_cpu_count(); /* reads the affinity mask and cgroup files */
    int n_workers = under_mpi ? 1 : (workers ? (int)workers : use_gpu ? n_gpus : cpus);
    if (use_gpu && !under_mpi && n_workers > n_gpus)
        return cli_error("--workers %d: only %d GPU%s (one worker per GPU)", n_workers, n_gpus,
                         n_gpus == 1 ? "" : "s");
    /* The MATLAB example grows the minibatch with the number of GPUs. */
    if (use_gpu && !batch_per_worker)
        batch = dpt_batch_global((int)batch, under_mpi ? launcher_size() : n_workers, 1);
    if (batch < n_workers && !under_mpi)
        return cli_error("--batch %ld is smaller than the %d workers", batch, n_workers);
    const int sharers = under_mpi ? launcher_local_size() : n_workers;
    const int blas_threads = threads ? (int)threads : (cpus / sharers > 0 ? cpus / sharers : 1);
    dpt_blas_set_threads(blas_threads);
    /* The dashboard is up while the data loads; only the rank that
     * reports serves it. */
    serve *srv = NULL;
    const char *srv_state = NULL; /* how the run ended, for the page */
    if (serve_opt && (!under_mpi || launcher_rank() == 0)) {
        if (!(srv = serve_start(serve_host, serve_port)))
            return 1;
        fprintf(stderr, "dashboard: %s\n", serve_url(srv));
        fflush(stderr);
    }

    int rc = 1;
    outdir od = {out_dir, -1, 0};
    char *spec = NULL;
    dpt_datastore *all = NULL, *train = NULL, *testds = NULL;
    dpt_seqstore *seq_all = NULL, *seq_train = NULL, *seq_test = NULL;
    dpt_text *text_train = NULL, *text_test = NULL;
    const char **class_names = NULL;
    const int warn = !under_mpi || launcher_rank() == 0; /* one copy of each warning */
    char cache_note[512] = ""; /* --cache: which mode and why */
    int k = 0; /* classes, or the vocabulary's size */
    if (kind == DATA_TEXT) {
        /* The vocabulary is the training text's; a --test file must stay
         * within it (a missing character is named). */
        dpt_text_options to = DPT_TEXT_OPTIONS_INIT;
        to.heldout = test ? 0.0 : 1.0 - split;
        if (dpt_text_open(data, &to, &text_train, test ? NULL : &text_test) != DPT_OK)
            goto fail;
        if (test) {
            dpt_text_options vo = DPT_TEXT_OPTIONS_INIT;
            vo.vocab = text_train;
            if (dpt_text_open(test, &vo, &text_test, NULL) != DPT_OK)
                goto fail;
        }
        k = dpt_text_n_vocab(text_train);
    } else if (kind == DATA_SEQUENCES) {
        dpt_seq_options so = DPT_SEQ_OPTIONS_INIT;
        so.max_length = max_length;
        if (dpt_seqstore_open(data, &so, &seq_all) != DPT_OK)
            goto fail;
        if (test) {
            if (dpt_seqstore_open(test, &so, &seq_test) != DPT_OK)
                goto fail;
            seq_train = seq_all, seq_all = NULL;
            /* Labels by class name, as for image folders: the test folder
             * may hold some of the classes, in any order. */
            int kt = dpt_seqstore_n_classes(seq_train);
            const char **names = calloc((size_t)kt, sizeof *names);
            if (!names)
                goto fail_nomem;
            for (int i = 0; i < kt; i++)
                names[i] = dpt_seqstore_class_name(seq_train, i);
            dpt_status ms = dpt_seqstore_match_classes(seq_test, test, kt, names);
            free(names);
            if (ms != DPT_OK)
                goto fail;
        } else if (dpt_seqstore_split_each_label(seq_all, split, (uint64_t)seed, &seq_train,
                                                 &seq_test) != DPT_OK) {
            goto fail;
        }
        k = dpt_seqstore_n_classes(seq_train);
    } else if (open_data(data, labels, skip_corrupt, warn, cache, cache_budget, &all) != DPT_OK) {
        goto fail;
    }
    if (kind == DATA_IMAGES)
        cache_line(cache_note, sizeof cache_note, all, cache, cache_budget, budget_from, prefetch);
    if (kind != DATA_IMAGES) {
        /* checked below with the network */
    } else if (test) {
        /* The test folder gets what the training data left of the budget. */
        int exact;
        uint64_t used = dpt_datastore_is_preloaded(all) ? dpt_datastore_decoded_bytes(all, &exact) : 0;
        if (open_data(test, test_labels, skip_corrupt, warn, cache,
                      cache_budget > used ? cache_budget - used : 0, &testds) != DPT_OK)
            goto fail;
        train = all, all = NULL;
    } else if (dpt_datastore_split_each_label(all, split, (uint64_t)seed, &train, &testds) != DPT_OK) {
        goto fail;
    }
    if (kind == DATA_IMAGES)
        k = dpt_datastore_n_classes(train);
    if (kind == DATA_IMAGES && test) {
        /* Labels by class name, not by position: a test folder with only
         * some of the classes (or IDX labels up to a smaller number) must
         * count its "cat" images as the training data's "cat". */
        int kt = dpt_datastore_n_classes(train);
        const char **names = calloc((size_t)kt, sizeof *names);
        dpt_datastore *matched = NULL;
        if (!names)
            goto fail_nomem;
        for (int i = 0; i < kt; i++)
            names[i] = dpt_datastore_class_name(train, i);
        dpt_status ms = dpt_datastore_match_classes(testds, test, kt, names, &matched);
        free(names);
        if (ms != DPT_OK)
            goto fail;
        dpt_datastore_free(testds);
        testds = matched;
    }
    if (net_path) {
        /* Read and validate the spec up front so a bad file fails fast. */
        dpt_net *probe = NULL;
        if (dpt_net_from_spec_file(net_path, k, 1, 0, &probe) != DPT_OK)
            goto fail;
        spec = strdup(dpt_net_spec(probe));
        dpt_net_free(probe);
        if (!spec)
            goto fail;
    }
    if (kind != DATA_TEXT) {
        class_names = calloc((size_t)k + 1, sizeof *class_names);
        if (!class_names)
            goto fail_nomem;
        for (int i = 0; i < k; i++)
            class_names[i] = kind == DATA_IMAGES ? dpt_datastore_class_name(train, i)
                                                 : dpt_seqstore_class_name(seq_train, i);
    }
    if (resume && kind != DATA_TEXT && check_resume_classes(resume, data, k, class_names))
        goto done;
    if (resume && kind == DATA_TEXT && check_resume_vocab(resume, data, text_train))
        goto done;
    if (make_dir(out_dir))
        goto done;
    int rank0 = !under_mpi || launcher_rank() == 0;
    /* Only the rank that writes the files holds the folder. When it refuses,
     * it exits 1 before MPI starts, and mpirun ends the other ranks. */
    if (rank0 && (outdir_lock(&od) || outdir_check(&od, resume, overwrite)))
        goto done;
    char model_path[4096], ckpt_path[4096];
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", out_dir);
    snprintf(ckpt_path, sizeof ckpt_path, "%s/checkpoint.safetensors", out_dir);
    if (!rank0)
        quiet = 1;

    static report rep; /* large; lives for the call */
    memset(&rep, 0, sizeof rep);
    /* Under mpirun a rank's stdout is a pseudo-terminal even when the job's
     * output goes to a file: plain lines there. */
    rep.quiet = quiet, rep.tty = !under_mpi && isatty(STDOUT_FILENO), rep.resume = resume != NULL;
    rep.print_every = print_every;
    rep.kind = kind == DATA_TEXT ? REPORT_TEXT : kind == DATA_SEQUENCES ? REPORT_SEQUENCES
                                                                        : REPORT_IMAGES;
    rep.stop = &stop_signal;
    snprintf(rep.csv_path, sizeof rep.csv_path, "%s/metrics.csv", out_dir);
    snprintf(rep.svg_path, sizeof rep.svg_path, "%s/loss.svg", out_dir);
    snprintf(rep.png_path, sizeof rep.png_path, "%s/loss.png", out_dir);
    dpt_fit_config cfg = DPT_FIT_CONFIG_INIT;
    cfg.spec = spec;
    cfg.spec_source = net_path;
    cfg.train = train;
    cfg.test = testds;
    cfg.epochs = (int)epochs;
    cfg.batch = (int)batch;
    cfg.lr = (float)lr, cfg.momentum = (float)momentum, cfg.weight_decay = (float)wd;
    cfg.optimizer = optim_kind, cfg.decoupled = decoupled;
    cfg.beta1 = beta1, cfg.beta2 = beta2, cfg.epsilon = (float)eps;
    cfg.lr_schedule = schedule, cfg.clip_norm = clip_norm;
    cfg.seed = (uint64_t)seed;
    cfg.spmd.backend = backend;
    cfg.spmd.n_workers = n_workers;
    cfg.sync_bn = sync_bn;
    cfg.prefetch = prefetch;
    cfg.eval_every_epoch = eval_epoch;
    cfg.progress = report_progress;
    cfg.progress_arg = &rep;
    train_sink sink = {&rep, srv};
    cfg.precision = (int)precision; /* before serve_settings, which shows it */
    cfg.cuda_graph = cuda_graph;
    if (srv) { /* the dashboard is one more consumer of the records */
        cfg.progress = sink_progress;
        cfg.progress_arg = &sink;
        serve_settings(srv, &cfg, kind, data, test, net_path, optim_name, sched_text, augment_text,
                       cache_opt, device_notice, use_gpu ? n_gpus : 0, shown_workers_of(under_mpi, n_workers),
                       backend_name, blas_threads, cpus, out_dir, k,
                       kind == DATA_TEXT ? dpt_text_n_chars(text_train)
                       : kind == DATA_SEQUENCES ? dpt_seqstore_n_obs(seq_train) : dpt_datastore_n_obs(train),
                       kind == DATA_TEXT ? (text_test ? dpt_text_n_chars(text_test) : 0)
                       : kind == DATA_SEQUENCES ? dpt_seqstore_n_obs(seq_test) : dpt_datastore_n_obs(testds));
    }
    cfg.model_out = model_path;
    cfg.class_names = class_names;
    cfg.checkpoint_out = ckpt_every > 0 ? ckpt_path : NULL;
    cfg.checkpoint_every = ckpt_every;
    cfg.resume = resume;
    cfg.use_gpu = use_gpu;
    cfg.stop = &stop_signal;
    cfg.augment = dpt_augment_is_identity(&augment) ? NULL : &augment;
    cfg.seq_train = seq_train, cfg.seq_test = seq_test;
    cfg.text_train = text_train, cfg.text_test = text_test;
    cfg.seq_len = (int)seq_len, cfg.pad_left = pad_left;
    cfg.on_start = outdir_clear; /* worker 0 runs in rank 0's process */
    cfg.on_start_arg = &od;
    catch_stop_signals();
    if (!quiet && use_gpu)
        printf("device: %d GPU%s (one worker per GPU), %s products\n", n_gpus,
               n_gpus == 1 ? "" : "s", dpt_precision_name(precision));
    if (!quiet && device_notice[0])
        printf("%s\n", device_notice);
    const int shown_workers = under_mpi ? launcher_size() : n_workers;
    if (!quiet && kind == DATA_TEXT)
        printf("training a language model on %zu characters (vocabulary of %d), %zu held out; "
               "%d worker%s, %ld streams of %ld characters per iteration, %ld epochs\n",
               dpt_text_n_chars(text_train), k, text_test ? dpt_text_n_chars(text_test) : 0,
               shown_workers, shown_workers == 1 ? "" : "s", batch, seq_len, epochs);
    else if (!quiet && kind == DATA_SEQUENCES)
        printf("training on %zu sequences (%d classes, %d features), testing on %zu; %d worker%s, "
               "minibatch %ld, %ld epochs\n", dpt_seqstore_n_obs(seq_train), k,
               dpt_seqstore_n_features(seq_train), dpt_seqstore_n_obs(seq_test), shown_workers,
               shown_workers == 1 ? "" : "s", batch, epochs);
    else if (!quiet)
        printf("training on %zu images (%d classes), testing on %zu; %d worker%s, minibatch %ld, "
               "%ld epochs\n", dpt_datastore_n_obs(train), k, dpt_datastore_n_obs(testds),
               shown_workers, shown_workers == 1 ? "" : "s", batch, epochs);
    if (!quiet && cache_note[0])
        printf("%s\n", cache_note);
    if (!quiet && cfg.augment) {
        char clean[1024];
        printf("augmenting the training images: %s\n", cli_clean(clean, sizeof clean, augment_text));
    }
    fflush(stdout); /* before training starts, also into a pipe */
    dpt_fit_result res;
    dpt_status fs = dpt_fit(&cfg, &res);
    report_finish(&rep);
    if (srv) {
        srv_state = fs == DPT_OK && !rep.io_error ? "finished" : fs == DPT_ERR_INTERRUPTED ? "interrupted" : "failed";
        serve_finish(srv, srv_state, fs == DPT_OK ? (rep.io_error ? rep.io_msg : NULL) : dpt_last_error());
    }
    if (fs == DPT_ERR_INTERRUPTED) {
        if (rank0)
            print_interrupted(&res, ckpt_path, resume);
        goto done;
    }
    if (fs != DPT_OK)
        goto fail;
    if (rep.io_error) {
        /* The run's record is incomplete: a failure, whatever the model. */
        cli_error("%s (training itself finished: model in %s)", rep.io_msg, model_path);
        goto done;
    }
    if (res.n_workers > 0) { /* worker 0's process reports */
        if (kind == DATA_TEXT && text_test)
            printf("held-out bits per character: %.4f (perplexity %.3f, %zu characters)\n",
                   res.test_bpc, pow(2.0, res.test_bpc), dpt_text_n_chars(text_test));
        else if (kind == DATA_SEQUENCES)
            printf("test accuracy: %.4f (%zu sequences)\n", res.test_accuracy,
                   dpt_seqstore_n_obs(seq_test));
        else if (kind == DATA_IMAGES)
            printf("test accuracy: %.4f (%zu images)\n", res.test_accuracy,
                   dpt_datastore_n_obs(testds));
        if (!quiet)
            printf("trained %ld iterations in %.1f s; model saved to %s\n", res.iterations,
                   res.train_seconds, model_path);
    }
    rc = 0;
    goto done;
fail_nomem:
    cli_error("out of memory");
    goto done;
fail:
    rc = cli_lib_error();
done:
    if (srv && !srv_state)
        serve_finish(srv, "failed", rc ? "training did not start (see dptrain's output)" : NULL);
    if (srv && serve_linger > 0 && !stop_signal) {
        fprintf(stderr, "dashboard: serving %s for %ld s more (SIGINT ends it)\n", serve_url(srv), serve_linger);
        fflush(stderr);
        catch_stop_signals();
    }
    serve_stop(srv, (double)serve_linger, &stop_signal);
    outdir_unlock(&od);
    free(class_names);
    free(spec);
    dpt_datastore_free(all);
    dpt_datastore_free(train);
    dpt_datastore_free(testds);
    dpt_seqstore_free(seq_all);
    dpt_seqstore_free(seq_train);
    dpt_seqstore_free(seq_test);
    dpt_text_free(text_train);
    dpt_text_free(text_test);
    return rc;
}
