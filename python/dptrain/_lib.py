"""The C library behind the package: cffi in ABI mode (no compiler needed).

The declarations below are copied from include/dptrain/*.h (structures
field for field, enums as int: their values are small). libdptrain.so is
found, in this order, at $DPTRAIN_LIBRARY (only there when set), in
$DPTRAIN_BUILD_DIR, in the build tree beside this package
(<repo>/build/libdptrain.so), beside an installed package
(<prefix>/share/dptrain/python -> <prefix>/lib*/libdptrain.so.0), and
where the dynamic loader finds libdptrain.so.0.
"""
import ctypes.util
import os

from cffi import FFI

CDEF = r"""
typedef int dpt_status;
const char *dpt_last_error(void);
const char *dpt_status_str(dpt_status s);
void dpt_clear_error(void);
void dpt_blas_set_threads(int n);
int dpt_blas_threads(void);
int dpt_cpu_count(void);
dpt_status dpt_env_check(void);

/* data.h */
typedef struct dpt_datastore dpt_datastore;
typedef struct dpt_folder_options {
    int version; int skip_corrupt; int preload; uint64_t cache_budget_bytes;
} dpt_folder_options;
dpt_status dpt_datastore_open_folder(const char *root, const dpt_folder_options *opt,
                                     dpt_datastore **out);
dpt_status dpt_datastore_open_idx_classes(const char *images_path, const char *labels_path,
                                          int n_classes, dpt_datastore **out);
dpt_status dpt_datastore_from_memory(const uint8_t *pixels, size_t n, int h, int w, int c,
                                     const int32_t *labels, int n_classes,
                                     const char *const *class_names, const char *name,
                                     dpt_datastore **out);
void dpt_datastore_free(dpt_datastore *ds);
int dpt_datastore_kind_of(const dpt_datastore *ds);
size_t dpt_datastore_n_obs(const dpt_datastore *ds);
int dpt_datastore_n_classes(const dpt_datastore *ds);
const char *dpt_datastore_class_name(const dpt_datastore *ds, int k);
int dpt_datastore_label(const dpt_datastore *ds, size_t i);
const char *dpt_datastore_file(const dpt_datastore *ds, size_t i);
dpt_status dpt_datastore_image_size(const dpt_datastore *ds, size_t i, int *h, int *w, int *c);
dpt_status dpt_datastore_subset(const dpt_datastore *ds, const size_t *idx, size_t n,
                                dpt_datastore **out);
dpt_status dpt_datastore_match_classes(const dpt_datastore *ds, const char *what, int n_classes,
                                       const char *const *names, dpt_datastore **out);
dpt_status dpt_datastore_split_each_label(const dpt_datastore *ds, double fraction, uint64_t seed,
                                          dpt_datastore **first, dpt_datastore **second);
dpt_status dpt_datastore_shuffle(const dpt_datastore *ds, uint64_t seed, dpt_datastore **out);
dpt_status dpt_datastore_partition(const dpt_datastore *ds, int n, int i, dpt_datastore **out);
dpt_status dpt_datastore_read(const dpt_datastore *ds, size_t i, int c, int h, int w, float *out);
dpt_status dpt_image_load(const char *path, int c, int h, int w, float *out);

/* comm.h, optim.h */
typedef struct dpt_comm dpt_comm;
typedef struct dpt_spmd_config {
    int version; int backend; int n_workers; long timeout_ms;
} dpt_spmd_config;
typedef struct dpt_optim dpt_optim;
typedef struct dpt_optim_opts {
    int version; float lr; float momentum; double beta1, beta2; float eps; float weight_decay;
    int decoupled; double clip_norm;
} dpt_optim_opts;
typedef struct dpt_lr_schedule {
    int kind; int every; double drop; double min_lr; double warmup;
} dpt_lr_schedule;
dpt_status dpt_optim_kind_parse(const char *name, int *kind);
float dpt_optim_default_lr(int kind);
dpt_status dpt_optim_new(int kind, size_t n, const dpt_optim_opts *opts, dpt_optim **out);
void dpt_optim_free(dpt_optim *o);
const char *dpt_optim_name(const dpt_optim *o);
size_t dpt_optim_n(const dpt_optim *o);
void dpt_optim_step(dpt_optim *o, float *params, float *grads);
void dpt_optim_set_lr(dpt_optim *o, float lr);
float dpt_optim_get_lr(const dpt_optim *o);
long dpt_optim_step_count(const dpt_optim *o);
dpt_status dpt_lr_schedule_parse(const char *text, dpt_lr_schedule *s);
double dpt_lr_at(const dpt_lr_schedule *s, double base_lr, int epoch, long it, long per_epoch,
                 int epochs);

/* net.h */
typedef struct dpt_net dpt_net;
typedef struct dpt_param_info {
    const char *name; const char *layer; const char *param; int ndim; int shape[4];
    size_t offset; size_t n;
} dpt_param_info;
typedef struct dpt_kv { const char *key; const char *value; } dpt_kv;
const char *dpt_net_default_spec(void);
dpt_status dpt_net_from_spec(const char *text, const char *source, int n_classes, int max_batch,
                             uint64_t seed, dpt_net **out);
void dpt_net_free(dpt_net *net);
const char *dpt_net_spec(const dpt_net *net);
int dpt_net_max_batch(const dpt_net *net);
int dpt_net_n_layers(const dpt_net *net);
const char *dpt_net_layer_name(const dpt_net *net, int i);
const char *dpt_net_layer_type(const dpt_net *net, int i);
void dpt_net_input_shape(const dpt_net *net, int chw[3]);
int dpt_net_n_outputs(const dpt_net *net);
int dpt_net_is_sequence(const dpt_net *net);
size_t dpt_net_n_learnables(const dpt_net *net);
const dpt_param_info *dpt_net_learnable(const dpt_net *net, size_t i);
size_t dpt_net_n_state(const dpt_net *net);
const dpt_param_info *dpt_net_state_info(const dpt_net *net, size_t i);
size_t dpt_net_n_params(const dpt_net *net);
float *dpt_net_params(dpt_net *net);
float *dpt_net_grads(dpt_net *net);
size_t dpt_net_n_state_floats(const dpt_net *net);
float *dpt_net_state(dpt_net *net);
dpt_status dpt_net_forward(dpt_net *net, const float *x, int n, int mode, const float **y);
dpt_status dpt_net_backward(dpt_net *net, const float *dy, int dy_is_logits);
dpt_status dpt_net_update_state(dpt_net *net, dpt_comm *comm);
float *dpt_net_output_grad(dpt_net *net);
uint64_t dpt_net_hash(const dpt_net *net);
void dpt_net_set_iteration(dpt_net *net, long epoch, long iteration);
dpt_status dpt_net_save(const dpt_net *net, const char *path, const dpt_kv *meta, size_t n_meta);
dpt_status dpt_net_load(const char *path, int max_batch, dpt_net **out);
const char *dpt_net_meta(const dpt_net *net, const char *key);

/* loss.h */
dpt_status dpt_loss_softmax_xent(const float *probs, const float *targets, int n, int k,
                                 double weight, double *loss, float *dlogits);
dpt_status dpt_loss_mse(const float *y, const float *targets, int n, int k, double weight,
                        double *loss, float *dy);

/* train.h */
dpt_status dpt_train_step_optim(dpt_net *net, dpt_optim *opt, dpt_comm *comm, const float *x,
                                const float *t, int n_local, double *loss, int *n_total);
void dpt_batch_shares(int batch, int n_workers, int *share);
dpt_status dpt_evaluate(dpt_net *net, const dpt_datastore *ds, double *accuracy, size_t *confusion);

typedef struct dpt_progress {
    int epoch, epochs; long iteration; long iterations_per_epoch; double loss; double elapsed_s;
    double images_per_s; double lr; double test_accuracy; int end_of_epoch; int worker;
    long n_coalesced; double test_bpc;
    int n_comm_wait; double comm_wait_s[64];  /* DPT_PROGRESS_MAX_WAIT */
} dpt_progress;
typedef struct dpt_progress_queue dpt_progress_queue;
void dpt_progress_send(dpt_progress_queue *q, const dpt_progress *p);
size_t dpt_progress_coalesced(const dpt_progress_queue *q);
void dpt_progress_queue_free(dpt_progress_queue *q);
dpt_status dpt_progress_queue_new_polled(size_t capacity, dpt_progress_queue **out);
int dpt_progress_queue_poll(dpt_progress_queue *q, dpt_progress *out, long timeout_ms);
void dpt_progress_forward(const dpt_progress *p, void *queue);

typedef struct dpt_parallel dpt_parallel;
dpt_status dpt_parallel_new(const char *spec, const char *source, int n_classes, int max_batch,
                            uint64_t seed, int n_workers, int kind, const dpt_optim_opts *opts,
                            int sync_bn, dpt_parallel **out);
void dpt_parallel_free(dpt_parallel *p);
int dpt_parallel_n_workers(const dpt_parallel *p);
dpt_net *dpt_parallel_net(dpt_parallel *p, int worker);
dpt_optim *dpt_parallel_optim(dpt_parallel *p, int worker);
void dpt_parallel_set_lr(dpt_parallel *p, float lr);
dpt_status dpt_parallel_step(dpt_parallel *p, const float *x, const float *t, int n, long epoch,
                             long iteration, double *loss);

typedef struct dpt_fit_config {
    int version; const char *spec; const char *spec_source;
    const dpt_datastore *train; const dpt_datastore *test;
    int epochs; int batch; float lr, momentum, weight_decay; uint64_t seed;
    dpt_spmd_config spmd; int sync_bn; int prefetch; int eval_every_epoch;
    void (*progress)(const dpt_progress *p, void *arg); void *progress_arg;
    const char *model_out; const char *const *class_names; const char *checkpoint_out;
    long checkpoint_every; const char *resume; int use_gpu;
    volatile int *stop;
    void *on_start; void *on_start_arg;
    int optimizer; double beta1, beta2; float epsilon; int decoupled;
    dpt_lr_schedule lr_schedule; double clip_norm; const void *augment;
    const void *seq_train; const void *seq_test; const void *text_train; const void *text_test;
    int seq_len; int pad_left;
    int precision; int cuda_graph;
} dpt_fit_config;
typedef struct dpt_fit_result {
    double final_loss; double test_accuracy; long iterations; double train_seconds;
    int n_workers; int epoch; long start_iteration; long checkpoint_iteration; double test_bpc;
} dpt_fit_result;
dpt_status dpt_fit(const dpt_fit_config *cfg, dpt_fit_result *result);
"""

# Versions and defaults of the structures above (the headers' *_INIT).
FIT_CONFIG_VERSION = 4
FOLDER_OPTIONS_VERSION = 2
SPMD_CONFIG_VERSION = 1
OPTIM_OPTS_VERSION = 1
PRELOAD_AUTO = 2
COMM_LOCAL = 1
MODE_PREDICT, MODE_TRAIN = 0, 1

ffi = FFI()
ffi.cdef(CDEF)

STATUS_NAMES = {
    1: "ArgumentError", 2: "MemoryError", 3: "IOError", 4: "FormatError", 5: "ShapeError",
    6: "CommError", 7: "TimeoutError", 8: "NumericError", 9: "UnsupportedError",
    10: "InterruptedError",
}


class DptrainError(Exception):
    """A failure reported by libdptrain: `status` is the dpt_status code,
    `message` the library's message (dpt_last_error) naming the file,
    option or layer concerned."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _candidates():
    env = os.environ.get("DPTRAIN_LIBRARY")
    if env:
        return [env]  # an explicit choice: no fallback that could hide a mistake
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    out = []
    build = os.environ.get("DPTRAIN_BUILD_DIR")
    if build:
        out.append(os.path.join(build, "libdptrain.so"))
    out.append(os.path.join(repo, "build", "libdptrain.so"))
    # installed: <prefix>/share/dptrain/python/dptrain, the library in <prefix>/lib*
    prefix = os.path.dirname(os.path.dirname(repo))
    for libdir in ("lib", "lib64", os.path.join("lib", "x86_64-linux-gnu"),
                   os.path.join("lib", "aarch64-linux-gnu")):
        out.append(os.path.join(prefix, libdir, "libdptrain.so.0"))
    found = ctypes.util.find_library("dptrain")
    out.append(found or "libdptrain.so.0")
    return out


def _open():
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            errors.append("%s: not found" % path)
            continue
        try:
            return ffi.dlopen(path), path
        except OSError as e:
            errors.append("%s: %s" % (path, e))
    raise ImportError("dptrain: cannot load libdptrain.so (set DPTRAIN_LIBRARY): " +
                      "; ".join(errors))


lib, library_path = _open()


def error_message():
    return ffi.string(lib.dpt_last_error()).decode("utf-8", "replace")


def check(status):
    """Raise DptrainError with the library's message for a failing status."""
    if status != 0:
        msg = error_message() or ffi.string(lib.dpt_status_str(status)).decode()
        lib.dpt_clear_error()
        raise DptrainError(status, msg)


def text(p):
    return None if p == ffi.NULL else ffi.string(p).decode("utf-8", "replace")


class Owned:
    """One C object owned by a Python object: close() frees it (subclasses
    define close and set self._ptr), as do `with` and garbage collection;
    ptr is the live handle. _what names the object in the error."""

    _what = "object"

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def ptr(self):
        if self._ptr is None:
            raise ValueError(self._what + " is closed")
        return self._ptr
