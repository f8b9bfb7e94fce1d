/* Sequence-folder datastore: root/<class>/<file>.csv, one time step per
 * line, F comma-separated numbers per line.
 *
 * The files are hostile (DESIGN.md invariant 6): each is opened with
 * dpt_file_open_regular, every size is checked against the DPT_SEQ_MAX_*
 * bounds before anything is allocated for it, and every field must parse
 * as a finite float. Everything is read into one buffer at open, so reads
 * are copies and thread-safe. */
#include "data/data_internal.h"
#include "core/file.h"
#include "core/text.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct dpt_seqstore {
    size_t n;           /* observations */
    int f;              /* features per time step */
    int n_classes;
    char **classes;     /* [n_classes] */
    char **paths;       /* [n] root/class/file.csv */
    int *labels;        /* [n] */
    size_t *len;        /* [n] time steps kept */
    size_t *off;        /* [n] first float of observation i in data */
    float *data;        /* [sum len * f] */
    size_t max_len;
};

/* Sorted strlist in dir (without those starting with '.'); with want_dirs,
 * only sub-folders, else only strlist ending in .csv. */
static dpt_status list(const char *dir, int want_dirs, strlist *out)
{
    strlist all = {0};
    dpt_status st = data_list_dir(dir, &all);
    for (size_t i = 0; !st && i < all.n; i++) {
        const char *name = all.v[i];
        if (want_dirs) {
            char *p = data_join_path(dir, name, &st);
            struct stat sb;
            int is_dir = p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
            free(p);
            if (st || !is_dir)
                continue;
        } else {
            size_t l = strlen(name);
            if (l < 5 || strcasecmp(name + l - 4, ".csv") != 0)
                continue;
        }
        st = strlist_push(out, all.v[i]);
        all.v[i] = NULL; /* now out's (or freed by the failed push) */
    }
    strlist_free(&all);
    return st;
}

/* Read the whole regular file path (size bytes, known to be within bounds)
 * into a NUL-terminated buffer. */
static dpt_status slurp(const char *path, long long bound, char **buf, size_t *n_out)
{
    int fd;
    long long size;
    dpt_status st = dpt_file_open_regular(path, &fd, &size);
    if (st)
        return st;
    if (size > bound) {
        close(fd);
        return dpt_fail(DPT_ERR_FORMAT, "%s: file of %lld bytes is larger than the %lld allowed",
                        path, size, bound);
    }
    char *b = malloc((size_t)size + 1);
    if (!b) {
        close(fd);
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory reading %lld bytes", path, size);
    }
    size_t got = 0;
    while (got < (size_t)size) {
        ssize_t r = read(fd, b + got, (size_t)size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            st = r < 0 ? dpt_fail(DPT_ERR_IO, "%s: cannot read: %s", path, strerror(errno))
                       : dpt_fail(DPT_ERR_IO, "%s: file shrank while being read", path);
            close(fd);
            free(b);
            return st;
        }
        got += (size_t)r;
    }
    close(fd);
    b[got] = 0;
    *buf = b;
    *n_out = got;
    return DPT_OK;
}

/* A line ends at '\n' (a '\r' before it is dropped). */
typedef struct line_iter {
    const char *p, *end;
} line_iter;

static int next_line(line_iter *it, const char **s, size_t *len)
{
    if (it->p >= it->end)
        return 0;
    const char *nl = memchr(it->p, '\n', (size_t)(it->end - it->p));
    const char *e = nl ? nl : it->end;
    *s = it->p;
    *len = (size_t)(e - it->p);
    if (*len && (*s)[*len - 1] == '\r')
        (*len)--;
    it->p = nl ? nl + 1 : it->end;
    return 1;
}

static int width_of(const char *s, size_t len)
{
    int w = 1;
    for (size_t i = 0; i < len; i++)
        w += s[i] == ',';
    return w;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Parse one field s[0..len) as a finite float. */
static dpt_status parse_field(const char *path, size_t line, int col, const char *s, size_t len,
                              float *out)
{
    while (len && is_blank(*s))
        s++, len--;
    while (len && is_blank(s[len - 1]))
        len--;
    char tmp[64];
    int ok = len > 0 && len < sizeof tmp;
    if (ok) {
        memcpy(tmp, s, len);
        tmp[len] = 0;
        /* strtod also takes hex, "inf" and "nan": only plain decimals here. */
        for (size_t i = 0; i < len && ok; i++)
            ok = strchr("0123456789+-.eE", tmp[i]) != NULL;
    }
    if (ok) {
        char *end;
        errno = 0;
        double v = strtod(tmp, &end);
        ok = *end == 0 && end != tmp && isfinite(v) && fabs(v) <= 3.4e38;
        if (ok)
            *out = (float)v;
    }
    if (!ok) {
        char shown[128];
        if (len == 0)
            return dpt_fail(DPT_ERR_FORMAT, "%s: line %zu: field %d is empty, not a number", path,
                            line, col);
        dpt_text_clean(shown, sizeof shown, s, len, 40);
        return dpt_fail(DPT_ERR_FORMAT, "%s: line %zu: field %d \"%s\" is not a finite number",
                        path, line, col, shown);
    }
    return DPT_OK;
}

/* Validate the text of one file: counts its rows and their width, without
 * allocating. */
static dpt_status scan_file(const char *path, const char *buf, size_t n, size_t *rows, int *width)
{
    line_iter it = {buf, buf + n};
    const char *s;
    size_t len, line = 0;
    int w0 = 0;
    while (next_line(&it, &s, &len)) {
        line++;
        if (len > DPT_SEQ_MAX_LINE_BYTES)
            return dpt_fail(DPT_ERR_FORMAT, "%s: line %zu: %zu bytes, more than the %d allowed",
                            path, line, len, DPT_SEQ_MAX_LINE_BYTES);
        if (line > DPT_SEQ_MAX_STEPS)
            return dpt_fail(DPT_ERR_FORMAT, "%s: more than %d lines (time steps)", path,
                            DPT_SEQ_MAX_STEPS);
        size_t k = 0;
        while (k < len && is_blank(s[k]))
            k++;
        if (k == len)
            return dpt_fail(DPT_ERR_FORMAT, "%s: line %zu: empty line", path, line);
        int w = width_of(s, len);
        if (line == 1)
            w0 = w;
        else if (w != w0)
            return dpt_fail(DPT_ERR_FORMAT,
                            "%s: line %zu: %d values, but line 1 has %d (rows of different widths)",
                            path, line, w, w0);
    }
    if (line == 0)
        return dpt_fail(DPT_ERR_FORMAT, "%s: empty file (no time steps)", path);
    *rows = line;
    *width = w0;
    return DPT_OK;
}

/* Parse the first `keep` rows (already scanned) into out [keep, w]; every
 * row's fields are still checked. */
static dpt_status parse_file(const char *path, const char *buf, size_t n, size_t keep, int w,
                             float *out)
{
    line_iter it = {buf, buf + n};
    const char *s;
    size_t len, line = 0;
    float dummy;
    while (next_line(&it, &s, &len)) {
        line++;
        float *row = line <= keep ? out + (line - 1) * (size_t)w : NULL;
        size_t a = 0;
        for (int c = 0; c < w; c++) {
            size_t b = a;
            while (b < len && s[b] != ',')
                b++;
            dpt_status st = parse_field(path, line, c + 1, s + a, b - a, row ? row + c : &dummy);
            if (st)
                return st;
            a = b + 1;
        }
    }
    return DPT_OK;
}

void dpt_seqstore_free(dpt_seqstore *s)
{
    if (!s)
        return;
    for (int k = 0; k < s->n_classes; k++)
        free(s->classes[k]);
    for (size_t i = 0; i < s->n; i++)
        free(s->paths[i]);
    free(s->classes);
    free(s->paths);
    free(s->labels);
    free(s->len);
    free(s->off);
    free(s->data);
    free(s);
}

/* A copy of the observations of s marked `which` in pick[n], with all of
 * s's classes. */
static dpt_status seq_subset(const dpt_seqstore *s, const unsigned char *pick, int which,
                             dpt_seqstore **out)
{
    dpt_status st = DPT_OK;
    dpt_seqstore *d = calloc(1, sizeof *d);
    size_t n = 0, floats = 0;
    for (size_t i = 0; i < s->n; i++)
        if (pick[i] == which)
            n++, floats += s->len[i] * (size_t)s->f;
    if (!d)
        return dpt_fail(DPT_ERR_NOMEM, "split: out of memory");
    d->f = s->f;
    d->classes = calloc((size_t)s->n_classes, sizeof *d->classes);
    d->paths = calloc(n ? n : 1, sizeof *d->paths);
    d->labels = malloc((n ? n : 1) * sizeof *d->labels);
    d->len = malloc((n ? n : 1) * sizeof *d->len);
    d->off = malloc((n ? n : 1) * sizeof *d->off);
    d->data = malloc((floats ? floats : 1) * sizeof *d->data);
    if (!d->classes || !d->paths || !d->labels || !d->len || !d->off || !d->data)
        goto nomem;
    for (; d->n_classes < s->n_classes; d->n_classes++)
        if (!(d->classes[d->n_classes] = strdup(s->classes[d->n_classes])))
            goto nomem;
    size_t at = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (pick[i] != which)
            continue;
        size_t m = s->len[i] * (size_t)s->f;
        if (!(d->paths[d->n] = strdup(s->paths[i])))
            goto nomem;
        d->labels[d->n] = s->labels[i];
        d->len[d->n] = s->len[i];
        d->off[d->n] = at;
        memcpy(d->data + at, s->data + s->off[i], m * sizeof *d->data);
        at += m;
        if (s->len[i] > d->max_len)
            d->max_len = s->len[i];
        d->n++;
    }
    *out = d;
    return st;
nomem:
    dpt_seqstore_free(d);
    return dpt_fail(DPT_ERR_NOMEM, "split: out of memory");
}

dpt_status dpt_seqstore_split_each_label(const dpt_seqstore *s, double fraction, uint64_t seed,
                                         dpt_seqstore **first, dpt_seqstore **second)
{
    if (!s || !first || !second)
        return dpt_fail(DPT_ERR_ARG, "dpt_seqstore_split_each_label: NULL argument");
    *first = *second = NULL;
    if (!(fraction >= 0.0 && fraction <= 1.0))
        return dpt_fail(DPT_ERR_ARG, "split_each_label: fraction %g is outside [0, 1]", fraction);
    uint32_t *pos = malloc((s->n ? s->n : 1) * sizeof *pos);
    unsigned char *pick = calloc(s->n ? s->n : 1, 1); /* 1: goes to first */
    dpt_status st = DPT_OK;
    if (!pos || !pick) {
        st = dpt_fail(DPT_ERR_NOMEM, "split: out of memory");
        goto done;
    }
    for (int k = 0; k < s->n_classes; k++) {
        size_t m = 0;
        for (size_t i = 0; i < s->n; i++)
            if (s->labels[i] == k)
                pos[m++] = (uint32_t)i;
        if (!m)
            continue;
        dpt_rng r;
        dpt_rng_seed(&r, seed, (uint64_t)k);
        dpt_rng_shuffle(&r, pos, m);
        size_t take = (size_t)llround(fraction * (double)m);
        for (size_t j = 0; j < take && j < m; j++)
            pick[pos[j]] = 1;
    }
    if ((st = seq_subset(s, pick, 1, first)) == DPT_OK &&
        (st = seq_subset(s, pick, 0, second)) != DPT_OK) {
        dpt_seqstore_free(*first);
        *first = NULL;
    }
done:
    free(pos);
    free(pick);
    return st;
}

dpt_status dpt_seqstore_open(const char *root, const dpt_seq_options *opt, dpt_seqstore **out)
{
    dpt_seq_options o = DPT_SEQ_OPTIONS_INIT;
    if (!out || !root)
        return dpt_fail(DPT_ERR_ARG, "dpt_seqstore_open: NULL argument");
    *out = NULL;
    if (opt) {
        if (opt->version != DPT_SEQ_OPTIONS_VERSION)
            return dpt_fail(DPT_ERR_ARG, "dpt_seqstore_open: options version %d, expected %d",
                            opt->version, DPT_SEQ_OPTIONS_VERSION);
        if (opt->max_length < 0)
            return dpt_fail(DPT_ERR_ARG, "dpt_seqstore_open: max_length %ld is negative",
                            opt->max_length);
        o = *opt;
    }
    dpt_status st = DPT_OK;
    strlist cls = {0}, files = {0};
    int *file_class = NULL;
    char *buf = NULL;
    dpt_seqstore *s = calloc(1, sizeof *s);
    if (!s)
        return dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", root);

    if ((st = list(root, 1, &cls)))
        goto done;
    if (cls.n == 0) {
        st = dpt_fail(DPT_ERR_FORMAT, "%s: no class sub-folders", root);
        goto done;
    }
    if (cls.n > 1000000) {
        st = dpt_fail(DPT_ERR_FORMAT, "%s: %zu class folders, too many", root, cls.n);
        goto done;
    }
    /* Every file's path and class, then sizes, before reading any. */
    for (size_t k = 0; k < cls.n && !st; k++) {
        char *dir = data_join_path(root, cls.v[k], &st);
        if (!dir)
            break;
        strlist fn = {0};
        if (!(st = list(dir, 0, &fn)) && fn.n == 0)
            st = dpt_fail(DPT_ERR_FORMAT, "%s: class folder without .csv files", dir);
        for (size_t j = 0; j < fn.n && !st; j++) {
            char *p = data_join_path(dir, fn.v[j], &st);
            if (p && !(st = strlist_push(&files, p))) {
                int *fc = realloc(file_class, files.n * sizeof *fc);
                if (!fc)
                    st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", root);
                else
                    (file_class = fc)[files.n - 1] = (int)k;
            }
        }
        strlist_free(&fn);
        free(dir);
    }
    if (st)
        goto done;
    long long total = 0;
    for (size_t i = 0; i < files.n; i++) {
        struct stat sb;
        /* stat may follow a link; the real check is at open. */
        if (stat(files.v[i], &sb) == 0 && S_ISREG(sb.st_mode))
            total += sb.st_size;
        if (total > DPT_SEQ_MAX_TOTAL_BYTES) {
            st = dpt_fail(DPT_ERR_FORMAT, "%s: the .csv files hold more than the %lld bytes allowed",
                          root, (long long)DPT_SEQ_MAX_TOTAL_BYTES);
            goto done;
        }
    }
    s->n = files.n;
    s->labels = malloc(s->n * sizeof *s->labels);
    s->len = malloc(s->n * sizeof *s->len);
    s->off = malloc(s->n * sizeof *s->off);
    if (!s->labels || !s->len || !s->off) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", root);
        goto done;
    }
    /* One pass to validate and size each file, a second to parse: the data
     * buffer is allocated once, after every file passed its checks. */
    size_t total_floats = 0, total_read = 0;
    for (size_t i = 0; i < s->n; i++) {
        size_t n, rows;
        int w;
        if ((st = slurp(files.v[i], DPT_SEQ_MAX_FILE_BYTES, &buf, &n)))
            goto done;
        /* Again, as read: a file may have grown since it was listed. */
        total_read += n;
        if (total_read > (size_t)DPT_SEQ_MAX_TOTAL_BYTES) {
            st = dpt_fail(DPT_ERR_FORMAT, "%s: the .csv files hold more than the %lld bytes allowed",
                          root, (long long)DPT_SEQ_MAX_TOTAL_BYTES);
            goto done;
        }
        st = scan_file(files.v[i], buf, n, &rows, &w);
        free(buf);
        buf = NULL;
        if (st)
            goto done;
        if (i == 0)
            s->f = w;
        else if (w != s->f) {
            st = dpt_fail(DPT_ERR_FORMAT,
                          "%s: %d features per time step, but the first file %s has %d "
                          "(every file must have the same)",
                          files.v[i], w, files.v[0], s->f);
            goto done;
        }
        size_t keep = o.max_length > 0 && rows > (size_t)o.max_length ? (size_t)o.max_length : rows;
        s->len[i] = keep;
        s->off[i] = total_floats;
        s->labels[i] = file_class[i];
        total_floats += keep * (size_t)w;
        if (total_floats > (size_t)DPT_SEQ_MAX_VALUES) {
            st = dpt_fail(DPT_ERR_FORMAT, "%s: more than the %lld numbers allowed (at %s)", root,
                          (long long)DPT_SEQ_MAX_VALUES, files.v[i]);
            goto done;
        }
        if (keep > s->max_len)
            s->max_len = keep;
    }
    s->data = malloc((total_floats ? total_floats : 1) * sizeof *s->data);
    if (!s->data) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for %zu values", root, total_floats);
        goto done;
    }
    for (size_t i = 0; i < s->n; i++) {
        size_t n, rows;
        int w;
        if ((st = slurp(files.v[i], DPT_SEQ_MAX_FILE_BYTES, &buf, &n)))
            goto done;
        /* Scanned again: the file may have changed since the first pass. */
        st = scan_file(files.v[i], buf, n, &rows, &w);
        if (!st && (w != s->f || rows < s->len[i]))
            st = dpt_fail(DPT_ERR_IO, "%s: file changed while being read", files.v[i]);
        if (!st)
            st = parse_file(files.v[i], buf, n, s->len[i], w, s->data + s->off[i]);
        free(buf);
        buf = NULL;
        if (st)
            goto done;
    }
    s->paths = files.v;
    files = (strlist){0};
    s->classes = cls.v;
    s->n_classes = (int)cls.n;
    cls = (strlist){0};
done:
    free(buf);
    free(file_class);
    strlist_free(&files);
    strlist_free(&cls);
    if (st) {
        s->n = 0; /* paths and classes not yet owned */
        dpt_seqstore_free(s);
        return st;
    }
    *out = s;
    return DPT_OK;
}

size_t dpt_seqstore_n_obs(const dpt_seqstore *s)
{
    return s->n;
}

int dpt_seqstore_n_features(const dpt_seqstore *s)
{
    return s->f;
}

int dpt_seqstore_n_classes(const dpt_seqstore *s)
{
    return s->n_classes;
}

const char *dpt_seqstore_class_name(const dpt_seqstore *s, int k)
{
    return s->classes[k];
}

int dpt_seqstore_label(const dpt_seqstore *s, size_t i)
{
    return s->labels[i];
}

const char *dpt_seqstore_file(const dpt_seqstore *s, size_t i)
{
    return s->paths[i];
}

size_t dpt_seqstore_length(const dpt_seqstore *s, size_t i)
{
    return s->len[i];
}

size_t dpt_seqstore_max_length(const dpt_seqstore *s)
{
    return s->max_len;
}

dpt_status dpt_seqstore_read(const dpt_seqstore *s, size_t i, float *out)
{
    if (!s || !out || i >= s->n)
        return dpt_fail(DPT_ERR_ARG, "dpt_seqstore_read: observation %zu out of range (%zu)", i,
                        s ? s->n : 0);
    memcpy(out, s->data + s->off[i], s->len[i] * (size_t)s->f * sizeof *out);
    return DPT_OK;
}

dpt_status dpt_seq_load(const char *path, long max_length, size_t *n_steps, int *n_features,
                        float **x)
{
    if (!path || !n_steps || !n_features || !x)
        return dpt_fail(DPT_ERR_ARG, "dpt_seq_load: NULL argument");
    if (max_length < 0)
        return dpt_fail(DPT_ERR_ARG, "dpt_seq_load: max_length %ld is negative", max_length);
    *x = NULL;
    char *buf;
    size_t n, rows;
    int w;
    dpt_status st = slurp(path, DPT_SEQ_MAX_FILE_BYTES, &buf, &n);
    if (st)
        return st;
    if ((st = scan_file(path, buf, n, &rows, &w)))
        goto done;
    size_t keep = max_length > 0 && rows > (size_t)max_length ? (size_t)max_length : rows;
    /* rows * w is bounded by the file's bytes (a value takes at least one
     * byte and a comma), so this cannot overflow; the cap matches a folder's. */
    if (keep * (size_t)w > (size_t)DPT_SEQ_MAX_VALUES) {
        st = dpt_fail(DPT_ERR_FORMAT, "%s: more than the %lld numbers allowed", path,
                      (long long)DPT_SEQ_MAX_VALUES);
        goto done;
    }
    float *out = malloc(keep * (size_t)w * sizeof *out);
    if (!out) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory for %zu values", path, keep * (size_t)w);
        goto done;
    }
    if ((st = parse_file(path, buf, n, keep, w, out))) {
        free(out);
        goto done;
    }
    *x = out;
    *n_steps = keep;
    *n_features = w;
done:
    free(buf);
    return st;
}

dpt_status dpt_seqstore_match_classes(dpt_seqstore *s, const char *what, int n_classes,
                                      const char *const *names)
{
    if (!s || n_classes < 1 || !names)
        return dpt_fail(DPT_ERR_ARG, "dpt_seqstore_match_classes: bad argument");
    if (!what)
        what = "sequence data";
    int *map = malloc((size_t)s->n_classes * sizeof *map);
    char **copy = calloc((size_t)n_classes, sizeof *copy);
    dpt_status st = DPT_OK;
    if (!map || !copy) {
        st = dpt_fail(DPT_ERR_NOMEM, "%s: out of memory", what);
        goto done;
    }
    for (int k = 0; k < s->n_classes; k++) {
        map[k] = -1;
        for (int j = 0; j < n_classes && map[k] < 0; j++)
            if (names[j] && !strcmp(names[j], s->classes[k]))
                map[k] = j;
    }
    /* Only a class that has observations must be known (a class folder
     * always has some, but keep the rule of the image datastores). */
    for (size_t i = 0; i < s->n; i++)
        if (map[s->labels[i]] < 0) {
            char shown[256];
            dpt_text_clean(shown, sizeof shown, s->classes[s->labels[i]], (size_t)-1, 64);
            st = dpt_fail(DPT_ERR_FORMAT, "%s: class '%s' is not one of the %d classes the model "
                          "knows", what, shown, n_classes);
            goto done;
        }
    for (int j = 0; j < n_classes; j++)
        if (!(copy[j] = data_strdup(names[j] ? names[j] : "", &st)))
            goto done;
    for (size_t i = 0; i < s->n; i++)
        s->labels[i] = map[s->labels[i]];
    for (int k = 0; k < s->n_classes; k++)
        free(s->classes[k]);
    free(s->classes);
    s->classes = copy;
    s->n_classes = n_classes;
    copy = NULL;
done:
    if (copy)
        for (int j = 0; j < n_classes; j++)
            free(copy[j]);
    free(copy);
    free(map);
    return st;
}
