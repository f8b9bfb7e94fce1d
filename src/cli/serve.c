/* The live dashboard (serve.h): libmicrohttpd with its own polling thread.
 *
 * The store: records in one array under a mutex, appended by the progress
 * callback's thread. It is bounded: when full, every other ordinary record
 * of the older half is dropped (end-of-epoch rows are kept), so a long run
 * keeps its whole curve at a coarser step. Each record has a number (its
 * rank among the records received, from 1); an event stream's cursor is the
 * last number it sent, so thinning never confuses a stream.
 *
 * Event streams: a response whose content comes from a callback. When the
 * stream has caught up, the callback puts its connection on the waiting
 * list and suspends it (MHD_suspend_connection) under the store's lock;
 * serve_record resumes the waiting connections under the same lock, so no
 * wake-up is lost and nothing polls. A client that stops reading only fills
 * its own socket buffer: MHD calls the callback when the socket can take
 * more, and each connection holds at most one event of STREAM_BATCH
 * records. */
#include "cli/serve.h"
#include "cli/cli.h"

#ifdef DPT_HAVE_MHD

#include <arpa/inet.h>
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The page, generated from src/cli/dashboard.html by CMake. */
extern const char dpt_dashboard_html[];
extern const size_t dpt_dashboard_html_len;

#define MAX_RECORDS 65536   /* kept in memory; thinned beyond (DPT_SERVE_MAX_RECORDS
                               lowers it, for the tests) */
#define STREAM_BATCH 512    /* records per event */
#define MAX_CONNECTIONS 64  /* browsers, scripts: plenty, and bounded */
#define SETTINGS_MAX 65536  /* bytes of the settings JSON */
#define SOCKET_SNDBUF 65536 /* bytes a connection's socket may hold unsent */
#define DRAIN_S 1.0         /* at the end, how long the streams get to send it */

typedef struct rec {
    unsigned long long id; /* 1-based number among the records received */
    int epoch, end_of_epoch;
    long iteration;
    double loss, elapsed_s, images_per_s, lr, test_accuracy, test_bpc;
} rec;

typedef struct stream stream;

struct serve {
    pthread_mutex_t mu;
    pthread_cond_t drained;          /* n_streams fell (serve_stop waits on it) */
    struct MHD_Daemon *daemon;
    int fd;                          /* our listening socket, handed to MHD */
    char url[320];
    /* under mu: */
    rec *recs;                       /* [max_records] */
    size_t n, max_records;
    unsigned long long received;     /* records so far (the last id) */
    int epochs;
    long per_epoch, first_iteration; /* first_iteration: of this run (resume) */
    int n_wait;
    double wait[DPT_PROGRESS_MAX_WAIT]; /* as of the latest record */
    char state[16];                  /* running, finished, failed, interrupted */
    char message[512];
    char *settings;                  /* JSON object text */
    int closing;                     /* serve_stop: end every stream */
    int n_streams;                   /* event streams open */
    stream *waiting;                 /* suspended streams (linked by next_wait) */
};

struct stream {
    serve *s;
    struct MHD_Connection *conn;
    unsigned long long cursor;       /* last record id sent */
    int sent_settings, sent_end, is_waiting;
    stream *next_wait;
    char *buf;                       /* the event being written: buf[off..len) */
    size_t len, off, cap;
};

int serve_available(void)
{
    return 1;
}

/* ---- small text helpers ------------------------------------------------- */

/* Append printf output to the stream's buffer, growing it (the event's size
 * is bounded by STREAM_BATCH and SETTINGS_MAX). */
static int buf_printf(stream *k, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int buf_printf(stream *k, const char *fmt, ...)
{
    if (!k->buf) {
        if (!(k->buf = malloc(4096)))
            return -1;
        k->cap = 4096, k->len = 0;
    }
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(k->buf + k->len, k->cap - k->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if ((size_t)n < k->cap - k->len) {
            k->len += (size_t)n;
            return 0;
        }
        size_t cap = 2 * k->cap + (size_t)n;
        char *b = realloc(k->buf, cap);
        if (!b)
            return -1;
        k->buf = b, k->cap = cap;
    }
}

/* A number for JSON: NaN and infinities (no JSON) as null. */
static const char *num(char *b, size_t cap, double v)
{
    if (isfinite(v))
        snprintf(b, cap, "%.9g", v);
    else
        snprintf(b, cap, "null");
    return b;
}

/* ---- the store ---------------------------------------------------------- */

/* Make room (under mu): drop every other ordinary record of the older
 * half, end-of-epoch records kept; failing that (an older half of epochs
 * with one ordinary record at most), its ordinary records; failing that,
 * every other record of it. */
static void thin(serve *s)
{
    size_t half = s->n / 2;
    for (int pass = 0; pass < 3; pass++) {
        size_t w = 0, ordinary = 0;
        for (size_t i = 0; i < s->n; i++) {
            const rec *r = &s->recs[i];
            int keep = i >= half || (pass == 0   ? r->end_of_epoch || ordinary++ % 2 == 0
                                     : pass == 1 ? r->end_of_epoch
                                                 : i % 2 == 0);
            if (keep)
                s->recs[w++] = *r;
        }
        if (w < s->n) {
            s->n = w;
            return;
        }
    }
}

/* Wake every suspended stream (under mu). */
static void wake_all(serve *s)
{
    for (stream *k = s->waiting; k; k = k->next_wait) {
        k->is_waiting = 0;
        MHD_resume_connection(k->conn);
    }
    s->waiting = NULL;
}

void serve_record(serve *s, const dpt_progress *p)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->n == s->max_records)
        thin(s);
    rec *r = &s->recs[s->n++];
    r->id = ++s->received;
    r->epoch = p->epoch, r->end_of_epoch = p->end_of_epoch;
    r->iteration = p->iteration;
    r->loss = p->loss, r->elapsed_s = p->elapsed_s, r->images_per_s = p->images_per_s;
    r->lr = p->lr, r->test_accuracy = p->test_accuracy, r->test_bpc = p->test_bpc;
    if (s->received == 1)
        s->first_iteration = p->iteration - 1;
    s->epochs = p->epochs, s->per_epoch = p->iterations_per_epoch;
    s->n_wait = p->n_comm_wait < 0 ? 0
                : p->n_comm_wait > DPT_PROGRESS_MAX_WAIT ? DPT_PROGRESS_MAX_WAIT : p->n_comm_wait;
    memcpy(s->wait, p->comm_wait_s, (size_t)s->n_wait * sizeof *s->wait);
    wake_all(s);
    pthread_mutex_unlock(&s->mu);
}

void serve_set_settings(serve *s, const char *json)
{
    if (!s || !json || strlen(json) > SETTINGS_MAX)
        return;
    char *copy = strdup(json);
    if (!copy)
        return;
    pthread_mutex_lock(&s->mu);
    free(s->settings);
    s->settings = copy;
    pthread_mutex_unlock(&s->mu);
}

void serve_finish(serve *s, const char *state, const char *message)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    snprintf(s->state, sizeof s->state, "%s", state);
    snprintf(s->message, sizeof s->message, "%s", message ? message : "");
    wake_all(s);
    pthread_mutex_unlock(&s->mu);
}

/* The first stored record with an id above `after` (under mu). */
static size_t first_after(const serve *s, unsigned long long after)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->recs[mid].id <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The status object both the events and /progress.json carry (under mu). */
static int status_json(stream *k, const serve *s)
{
    char b[8][40];
    const rec *last = s->n ? &s->recs[s->n - 1] : NULL;
    int bad = buf_printf(k, "{\"state\":\"%s\",\"message\":", s->state);
    /* the message is ours (a library error), but may quote a file name */
    cJSON *m = cJSON_CreateString(s->message);
    char *msg = m ? cJSON_PrintUnformatted(m) : NULL;
    bad |= buf_printf(k, "%s", msg ? msg : "\"\"");
    cJSON_free(msg);
    cJSON_Delete(m);
    bad |= buf_printf(k, ",\"epochs\":%d,\"iterations_per_epoch\":%ld,\"first_iteration\":%ld,"
                         "\"records\":%llu",
                      s->epochs, s->per_epoch, s->first_iteration, s->received);
    if (last)
        bad |= buf_printf(k, ",\"epoch\":%d,\"iteration\":%ld,\"elapsed_s\":%s,\"images_per_s\":%s",
                          last->epoch, last->iteration, num(b[0], 40, last->elapsed_s),
                          num(b[1], 40, last->images_per_s));
    bad |= buf_printf(k, ",\"comm_wait_s\":[");
    for (int w = 0; w < s->n_wait; w++)
        bad |= buf_printf(k, "%s%s", w ? "," : "", num(b[2], 40, s->wait[w]));
    return bad | buf_printf(k, "]}");
}

/* One record as a JSON array: [id, epoch, iteration, loss, test_accuracy,
 * images_per_s, elapsed_s, lr, end_of_epoch, test_bpc] (the page's order;
 * arrays keep an event of STREAM_BATCH records small). */
static int rec_json(stream *k, const rec *r)
{
    char b[7][40];
    return buf_printf(k, "[%llu,%d,%ld,%s,%s,%s,%s,%s,%d,%s]", r->id, r->epoch, r->iteration,
                      num(b[0], 40, r->loss), num(b[1], 40, r->test_accuracy),
                      num(b[2], 40, r->images_per_s), num(b[3], 40, r->elapsed_s), num(b[4], 40, r->lr),
                      r->end_of_epoch, num(b[5], 40, r->test_bpc));
}

/* The next event(s) of a stream into its buffer (under mu): the settings
 * first, then the records after the cursor, then, once the run has ended
 * and the stream caught up, an "end" event. 0: nothing to send now; -1:
 * out of memory (the stream ends). */
static int next_events(stream *k)
{
    serve *s = k->s;
    int bad = 0;
    k->len = k->off = 0;
    if (!k->sent_settings) {
        bad |= buf_printf(k, "retry: 2000\nevent: settings\ndata: %s\n\n", s->settings ? s->settings : "{}");
        k->sent_settings = 1;
    }
    size_t i = first_after(s, k->cursor);
    if (i < s->n) {
        size_t end = i + STREAM_BATCH < s->n ? i + STREAM_BATCH : s->n;
        bad |= buf_printf(k, "id: %llu\ndata: {\"records\":[", s->recs[end - 1].id);
        for (size_t j = i; j < end; j++) {
            if (j > i)
                bad |= buf_printf(k, ",");
            bad |= rec_json(k, &s->recs[j]);
        }
        bad |= buf_printf(k, "],\"status\":");
        bad |= status_json(k, s);
        bad |= buf_printf(k, "}\n\n");
        k->cursor = s->recs[end - 1].id;
    } else if (strcmp(s->state, "running") != 0 && !k->sent_end) {
        bad |= buf_printf(k, "event: end\ndata: ");
        bad |= status_json(k, s);
        bad |= buf_printf(k, "\n\n");
        k->sent_end = 1;
    }
    if (bad) {
        k->len = 0;
        return -1;
    }
    return k->len > 0;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    stream *k = cls;
    serve *s = k->s;
    if (k->off == k->len) {
        pthread_mutex_lock(&s->mu);
        int more = next_events(k);
        if (more < 0) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!more) {
            if (k->sent_end || s->closing) {
                pthread_mutex_unlock(&s->mu);
                return MHD_CONTENT_READER_END_OF_STREAM;
            }
            /* Caught up: wait for serve_record, suspended (no polling). */
            k->is_waiting = 1;
            k->next_wait = s->waiting;
            s->waiting = k;
            MHD_suspend_connection(k->conn);
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        pthread_mutex_unlock(&s->mu);
    }
    size_t n = k->len - k->off < max ? k->len - k->off : max;
    memcpy(out, k->buf + k->off, n);
    k->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    stream *k = cls;
    serve *s = k->s;
    pthread_mutex_lock(&s->mu);
    if (k->is_waiting) /* closed while suspended: the server stopping */
        for (stream **p = &s->waiting; *p; p = &(*p)->next_wait)
            if (*p == k) {
                *p = k->next_wait;
                break;
            }
    s->n_streams--;
    pthread_cond_broadcast(&s->drained);
    pthread_mutex_unlock(&s->mu);
    free(k->buf);
    free(k);
}

/* ---- the requests -------------------------------------------------------- */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned code, const char *type,
                                 const char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mode);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ok;
}

/* GET /progress.json: copy under the lock, build outside it. */
static enum MHD_Result progress_json(serve *s, struct MHD_Connection *c)
{
    stream tmp = {0};
    tmp.s = s;
    pthread_mutex_lock(&s->mu);
    size_t n = s->n;
    rec *copy = n ? malloc(n * sizeof *copy) : NULL;
    if (copy)
        memcpy(copy, s->recs, n * sizeof *copy);
    char *settings = strdup(s->settings ? s->settings : "{}");
    int bad = status_json(&tmp, s);
    pthread_mutex_unlock(&s->mu);
    cJSON *root = cJSON_CreateObject(), *recs = cJSON_AddArrayToObject(root, "records");
    cJSON *set = settings ? cJSON_Parse(settings) : NULL, *st = bad ? NULL : cJSON_Parse(tmp.buf);
    cJSON_AddItemToObject(root, "settings", set ? set : cJSON_CreateObject());
    cJSON_AddItemToObject(root, "status", st ? st : cJSON_CreateObject());
    for (size_t i = 0; copy && recs && i < n; i++) {
        const rec *r = &copy[i];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(recs, o);
        cJSON_AddNumberToObject(o, "epoch", r->epoch);
        cJSON_AddNumberToObject(o, "iteration", (double)r->iteration);
        /* cJSON prints NaN as null */
        cJSON_AddNumberToObject(o, "loss", r->loss);
        cJSON_AddNumberToObject(o, "test_accuracy", r->test_accuracy);
        cJSON_AddNumberToObject(o, "test_bpc", r->test_bpc);
        cJSON_AddNumberToObject(o, "images_per_s", r->images_per_s);
        cJSON_AddNumberToObject(o, "elapsed_s", r->elapsed_s);
        cJSON_AddNumberToObject(o, "lr", r->lr);
        cJSON_AddBoolToObject(o, "end_of_epoch", r->end_of_epoch);
    }
    char *text = root && recs && (copy || !n) ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    free(copy);
    free(settings);
    free(tmp.buf);
    if (!text)
        return send_text(c, 500, "text/plain", "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_COPY);
    cJSON_free(text);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

/* GET /events: a stream starting after Last-Event-ID (a browser's reconnect). */
static enum MHD_Result events(serve *s, struct MHD_Connection *c)
{
    stream *k = calloc(1, sizeof *k);
    if (!k)
        return MHD_NO;
    k->s = s, k->conn = c;
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (last) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(last, &end, 10);
        if (errno == 0 && end != last && *end == '\0' && last[0] != '-')
            k->cursor = v, k->sent_settings = 0; /* settings again: cheap, and the page may be new */
    }
    k->cap = 4096;
    k->buf = malloc(k->cap);
    struct MHD_Response *r =
        k->buf ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, k, stream_free)
               : NULL;
    if (!r) {
        free(k->buf);
        free(k);
        return MHD_NO;
    }
    pthread_mutex_lock(&s->mu);
    s->n_streams++;
    pthread_mutex_unlock(&s->mu);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* stream_free runs when the connection is done with it */
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    (void)version, (void)upload;
    serve *s = cls;
    /* The first call for a request only announces it (MHD's protocol). */
    if (*req_cls == NULL) {
        *req_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) /* no uploads: drop the body */
        return MHD_NO;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return send_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "GET only\n", 9,
                         MHD_RESPMEM_PERSISTENT);
    if (!strcmp(url, "/") || !strcmp(url, "/index.html"))
        return send_text(c, MHD_HTTP_OK, "text/html; charset=utf-8", dpt_dashboard_html,
                         dpt_dashboard_html_len, MHD_RESPMEM_PERSISTENT);
    if (!strcmp(url, "/progress.json"))
        return progress_json(s, c);
    if (!strcmp(url, "/events"))
        return events(s, c);
    return send_text(c, MHD_HTTP_NOT_FOUND, "text/plain", "not found\n", 10, MHD_RESPMEM_PERSISTENT);
}

/* ---- start and stop ------------------------------------------------------- */

int serve_parse(const char *text, char *host, size_t cap, int *port)
{
    char clean[96];
    const char *colon = strrchr(text, ':'), *p = text;
    size_t hl = 0;
    const char *h = "127.0.0.1";
    if (text[0] == '[') { /* [IPv6]:PORT */
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return cli_error("--serve: '%s' is not [HOST:]PORT (an IPv6 address as [::1]:PORT)",
                             cli_clean(clean, sizeof clean, text));
        h = text + 1, hl = (size_t)(close - text - 1), p = close + 2;
    } else if (colon) {
        h = text, hl = (size_t)(colon - text), p = colon + 1;
        if (memchr(text, ':', hl))
            return cli_error("--serve: '%s': write an IPv6 address in brackets, as [::1]:PORT",
                             cli_clean(clean, sizeof clean, text));
    } else {
        hl = strlen(h);
    }
    if (hl == 0 || hl >= cap)
        return cli_error("--serve: '%s': %s", cli_clean(clean, sizeof clean, text),
                         hl ? "host name too long" : "empty host");
    memcpy(host, h, hl), host[hl] = '\0';
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (*p < '0' || *p > '9' || *end || errno || v < 0 || v > 65535)
        return cli_error("--serve: '%s': the port must be a number from 0 to 65535 (0: any free port)",
                         cli_clean(clean, sizeof clean, text));
    *port = (int)v;
    return 0;
}

static int is_loopback(const struct sockaddr *a)
{
    if (a->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->sa_family == AF_INET6) {
        const struct in6_addr *x = &((const struct sockaddr_in6 *)a)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(x) ||
               (IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127);
    }
    return 0;
}

static void free_serve(serve *s)
{
    if (s->fd >= 0)
        close(s->fd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->drained);
    free(s->recs);
    free(s->settings);
    free(s);
}

serve *serve_start(const char *host, int port)
{
    char clean[96], portstr[8];
    cli_clean(clean, sizeof clean, host);
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        cli_error("--serve %s: cannot resolve the host: %s", clean, gai_strerror(gai));
        return NULL;
    }
    size_t max_records = MAX_RECORDS;
    const char *env = getenv("DPT_SERVE_MAX_RECORDS");
    if (env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (end != env && !*end && v >= 16 && v <= MAX_RECORDS)
            max_records = (size_t)v;
        else
            fprintf(stderr, "dptrain: warning: DPT_SERVE_MAX_RECORDS '%.32s' is not 16 to %d; using %d\n",
                    env, MAX_RECORDS, MAX_RECORDS);
    }
    serve *s = calloc(1, sizeof *s);
    if (!s || !(s->recs = malloc(max_records * sizeof *s->recs))) {
        free(s);
        freeaddrinfo(ai);
        cli_error("out of memory");
        return NULL;
    }
    s->fd = -1, s->max_records = max_records;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->drained, NULL);
    snprintf(s->state, sizeof s->state, "running");
    /* Our own socket: bind's reason (in use, not permitted) can be told. */
    int err = 0, family = AF_INET;
    for (struct addrinfo *a = ai; a && s->fd < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        int one = 1;
        /* The accepted sockets inherit the send buffer: a client that stops
         * reading holds at most this much kernel memory (no autotuning). */
        int sndbuf = SOCKET_SNDBUF;
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            err = errno;
            if (fd >= 0)
                close(fd);
            continue;
        }
        s->fd = fd, family = a->ai_family;
        if (!is_loopback(a->ai_addr))
            fprintf(stderr, "dptrain: warning: --serve %s is not a loopback address: anyone who can "
                            "reach this machine can read the dashboard (no authentication)\n", clean);
    }
    freeaddrinfo(ai);
    if (s->fd < 0) {
        cli_error("--serve %s:%d: cannot listen: %s", clean, port, strerror(err ? err : EADDRNOTAVAIL));
        free_serve(s);
        return NULL;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    int real_port = port;
    if (getsockname(s->fd, (struct sockaddr *)&bound, &bl) == 0)
        real_port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    char addr[INET6_ADDRSTRLEN] = "127.0.0.1";
    if (bound.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&bound)->sin6_addr, addr, sizeof addr);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&bound)->sin_addr, addr, sizeof addr);
    /* A wildcard address is no URL: say where it answers locally. */
    const char *shown = !strcmp(addr, "0.0.0.0") ? "127.0.0.1" : !strcmp(addr, "::") ? "::1" : addr;
    snprintf(s->url, sizeof s->url, family == AF_INET6 ? "http://[%s]:%d/" : "http://%s:%d/", shown,
             real_port);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME |
                     (family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                                 MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->fd,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0, MHD_OPTION_END);
    if (!s->daemon) {
        cli_error("--serve %s:%d: the HTTP server (libmicrohttpd) did not start", clean, port);
        free_serve(s);
        return NULL;
    }
    s->fd = -1; /* MHD's now: MHD_stop_daemon closes it */
    return s;
}

const char *serve_url(const serve *s)
{
    return s ? s->url : "";
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void serve_stop(serve *s, double linger_s, volatile sig_atomic_t *stop)
{
    if (!s)
        return;
    /* Linger: the page shows the final state while someone looks. */
    double until = mono_s() + linger_s;
    while (linger_s > 0 && !(stop && *stop) && mono_s() < until) {
        struct timespec t = {0, 100 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    /* The open streams send the final state and end (a stalled one is
     * given DRAIN_S, then closed): browsers show how the run ended. */
    pthread_mutex_lock(&s->mu);
    s->closing = 1;
    wake_all(s);
    struct timespec until_ts;
    clock_gettime(CLOCK_REALTIME, &until_ts);
    until_ts.tv_nsec += (long)(DRAIN_S * 1e9);
    until_ts.tv_sec += until_ts.tv_nsec / 1000000000L, until_ts.tv_nsec %= 1000000000L;
    while (s->n_streams > 0 && pthread_cond_timedwait(&s->drained, &s->mu, &until_ts) == 0)
        ;
    pthread_mutex_unlock(&s->mu);
    MHD_stop_daemon(s->daemon); /* closes the connections; frees every stream */
    free_serve(s);
}

#else /* built without libmicrohttpd */

int serve_available(void)
{
    return 0;
}

int serve_parse(const char *text, char *host, size_t cap, int *port)
{
    (void)text, (void)host, (void)cap, (void)port;
    return cli_error("--serve: this dptrain was built without libmicrohttpd (install "
                     "libmicrohttpd-dev and rebuild with -DDPT_WITH_SERVE=ON)");
}

serve *serve_start(const char *host, int port)
{
    (void)host, (void)port;
    return NULL;
}

const char *serve_url(const serve *s)
{
    (void)s;
    return "";
}

void serve_set_settings(serve *s, const char *json)
{
    (void)s, (void)json;
}

void serve_record(serve *s, const dpt_progress *p)
{
    (void)s, (void)p;
}

void serve_finish(serve *s, const char *state, const char *message)
{
    (void)s, (void)state, (void)message;
}

void serve_stop(serve *s, double linger_s, volatile sig_atomic_t *stop)
{
    (void)s, (void)linger_s, (void)stop;
}

#endif
