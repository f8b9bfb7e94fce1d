/* A stand-in for cJSON (cmake/fallback.cmake): the subset in cjson/cJSON.h,
 * for a machine without libcjson. Parsing reads text from outside (model
 * and checkpoint headers): strict grammar, nesting bounded, every length
 * taken from the text itself, never past its terminating NUL. */
#include "cJSON.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NESTING_LIMIT 1000

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

static cJSON *new_item(int type)
{
    cJSON *j = calloc(1, sizeof *j);
    if (j)
        j->type = type;
    return j;
}

void cJSON_free(void *object) { free(object); }

void cJSON_Delete(cJSON *item)
{
    while (item) {
        cJSON *next = item->next;
        cJSON_Delete(item->child);
        free(item->valuestring);
        free(item->string);
        free(item);
        item = next;
    }
}

/* ---- parsing -------------------------------------------------------------- */

typedef struct {
    const char *p;
    int depth;
} parser;

static void skip_ws(parser *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
        ps->p++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return 0; /* also stops at the NUL: s[i] is never read past it */
    }
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string at ps->p (on the opening quote): a new NUL-terminated copy with
 * escapes decoded, or NULL. The decoded text is never longer than the
 * quoted one (an escape of 6 or 12 characters gives at most 4 bytes). */
static char *parse_string(parser *ps)
{
    const char *s = ps->p + 1, *e = s;
    while (*e && *e != '"') {
        if ((unsigned char)*e < 0x20)
            return NULL;
        if (*e == '\\') {
            if (!e[1])
                return NULL;
            e++;
        }
        e++;
    }
    if (*e != '"')
        return NULL;
    char *out = malloc((size_t)(e - s) + 1), *o = out;
    if (!out)
        return NULL;
    while (s < e) {
        if (*s != '\\') {
            *o++ = *s++;
            continue;
        }
        s++;
        switch (*s++) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (s + 4 > e || !hex4(s, &cp))
                goto bad;
            s += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                goto bad; /* a lone low surrogate */
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (s + 6 > e || s[0] != '\\' || s[1] != 'u' || !hex4(s + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    goto bad;
                s += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0)
                goto bad; /* would end the C string early */
            o += put_utf8(o, cp);
            break;
        }
        default:
            goto bad;
        }
    }
    *o = '\0';
    ps->p = e + 1;
    return out;
bad:
    free(out);
    return NULL;
}

/* RFC 8259 number grammar, then strtod on the checked span. */
static int parse_number(parser *ps, cJSON *item)
{
    const char *s = ps->p, *q = s;
    if (*q == '-')
        q++;
    if (*q == '0')
        q++;
    else if (*q >= '1' && *q <= '9')
        while (*q >= '0' && *q <= '9')
            q++;
    else
        return 0;
    if (*q == '.') {
        q++;
        if (*q < '0' || *q > '9')
            return 0;
        while (*q >= '0' && *q <= '9')
            q++;
    }
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-')
            q++;
        if (*q < '0' || *q > '9')
            return 0;
        while (*q >= '0' && *q <= '9')
            q++;
    }
    char buf[64], *end = NULL, *num = buf;
    size_t n = (size_t)(q - s);
    if (n >= sizeof buf && !(num = malloc(n + 1)))
        return 0;
    memcpy(num, s, n);
    num[n] = '\0';
    double d = strtod(num, &end);
    int ok = end == num + n;
    if (num != buf)
        free(num);
    if (!ok)
        return 0;
    item->valuedouble = d;
    item->valueint = d >= INT_MAX ? INT_MAX : d <= (double)INT_MIN ? INT_MIN : (int)d;
    ps->p = q;
    return 1;
}

static cJSON *parse_value(parser *ps);

/* Elements of an array or members of an object, ps->p on '[' or '{'. */
static int parse_children(parser *ps, cJSON *item, char close)
{
    if (++ps->depth > NESTING_LIMIT)
        return 0;
    ps->p++;
    skip_ws(ps);
    if (*ps->p == close) {
        ps->p++;
        ps->depth--;
        return 1;
    }
    cJSON *last = NULL;
    for (;;) {
        char *key = NULL;
        if (close == '}') {
            skip_ws(ps);
            if (*ps->p != '"' || !(key = parse_string(ps)))
                return 0;
            skip_ws(ps);
            if (*ps->p != ':') {
                free(key);
                return 0;
            }
            ps->p++;
        }
        cJSON *child = parse_value(ps);
        if (!child) {
            free(key);
            return 0;
        }
        child->string = key;
        if (last)
            last->next = child, child->prev = last;
        else
            item->child = child;
        last = child;
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p != close)
            return 0;
        ps->p++;
        ps->depth--;
        return 1;
    }
}

static cJSON *parse_value(parser *ps)
{
    skip_ws(ps);
    const char *p = ps->p;
    cJSON *item = NULL;
    if (!strncmp(p, "null", 4)) {
        if ((item = new_item(cJSON_NULL)))
            ps->p += 4;
    } else if (!strncmp(p, "true", 4)) {
        if ((item = new_item(cJSON_True))) {
            item->valueint = 1;
            ps->p += 4;
        }
    } else if (!strncmp(p, "false", 5)) {
        if ((item = new_item(cJSON_False)))
            ps->p += 5;
    } else if (*p == '"') {
        if ((item = new_item(cJSON_String)) && !(item->valuestring = parse_string(ps)))
            goto fail;
    } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
        if ((item = new_item(cJSON_Number)) && !parse_number(ps, item))
            goto fail;
    } else if (*p == '[' || *p == '{') {
        if ((item = new_item(*p == '[' ? cJSON_Array : cJSON_Object)) &&
            !parse_children(ps, item, *p == '[' ? ']' : '}'))
            goto fail;
    }
    return item;
fail:
    cJSON_Delete(item);
    return NULL;
}

cJSON *cJSON_ParseWithOpts(const char *value, const char **return_parse_end,
                           cJSON_bool require_null_terminated)
{
    if (!value)
        return NULL;
    parser ps = {value, 0};
    cJSON *root = parse_value(&ps);
    if (root && require_null_terminated) {
        skip_ws(&ps);
        if (*ps.p) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (return_parse_end)
        *return_parse_end = ps.p;
    return root;
}

cJSON *cJSON_Parse(const char *value) { return cJSON_ParseWithOpts(value, NULL, 0); }

/* ---- printing ------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} out_buf;

static void put(out_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->oom = 1;
            return;
        }
        b->buf = nb, b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

/* cJSON's spelling: NaN and infinities as null, whole numbers in int range
 * as integers, else 15 significant digits when they read back exactly,
 * else 17. */
static void put_number(out_buf *b, const cJSON *item)
{
    char num[32];
    double d = item->valuedouble;
    if (isnan(d) || isinf(d)) {
        snprintf(num, sizeof num, "null");
    } else if (d == (double)item->valueint) {
        snprintf(num, sizeof num, "%d", item->valueint);
    } else {
        snprintf(num, sizeof num, "%1.15g", d);
        /* cJSON's read-back test is relative (and so lets DBL_MAX print
         * as a 15-digit text that reads back as infinity): the same. */
        double back = strtod(num, NULL);
        if (!(fabs(back - d) <= fmax(fabs(back), fabs(d)) * DBL_EPSILON))
            snprintf(num, sizeof num, "%1.17g", d);
    }
    put(b, num, strlen(num));
}

static void put_string(out_buf *b, const char *s)
{
    put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        char esc[8];
        const char *e = NULL;
        switch (*p) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                e = esc;
            }
        }
        if (e)
            put(b, e, strlen(e));
        else
            put(b, (const char *)p, 1);
    }
    put(b, "\"", 1);
}

static int put_value(out_buf *b, const cJSON *item, int depth)
{
    if (depth > NESTING_LIMIT)
        return 0;
    switch (item->type & 0xFF) {
    case cJSON_NULL: put(b, "null", 4); break;
    case cJSON_False: put(b, "false", 5); break;
    case cJSON_True: put(b, "true", 4); break;
    case cJSON_Number: put_number(b, item); break;
    case cJSON_String: put_string(b, item->valuestring); break;
    case cJSON_Raw:
        if (!item->valuestring)
            return 0;
        put(b, item->valuestring, strlen(item->valuestring));
        break;
    case cJSON_Array:
    case cJSON_Object: {
        int obj = (item->type & 0xFF) == cJSON_Object;
        put(b, obj ? "{" : "[", 1);
        for (const cJSON *c = item->child; c; c = c->next) {
            if (obj) {
                put_string(b, c->string);
                put(b, ":", 1);
            }
            if (!put_value(b, c, depth + 1))
                return 0;
            if (c->next)
                put(b, ",", 1);
        }
        put(b, obj ? "}" : "]", 1);
        break;
    }
    default:
        return 0;
    }
    return 1;
}

char *cJSON_PrintUnformatted(const cJSON *item)
{
    if (!item)
        return NULL;
    out_buf b = {0};
    if (!put_value(&b, item, 0) || b.oom) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

/* ---- access and building -------------------------------------------------- */

int cJSON_GetArraySize(const cJSON *array)
{
    int n = 0;
    for (const cJSON *c = array ? array->child : NULL; c && n < INT_MAX; c = c->next)
        n++;
    return n;
}

cJSON *cJSON_GetArrayItem(const cJSON *array, int index)
{
    if (!array || index < 0)
        return NULL;
    cJSON *c = array->child;
    while (c && index-- > 0)
        c = c->next;
    return c;
}

cJSON *cJSON_GetObjectItemCaseSensitive(const cJSON *object, const char *string)
{
    if (!object || !string)
        return NULL;
    for (cJSON *c = object->child; c; c = c->next)
        if (c->string && !strcmp(c->string, string))
            return c;
    return NULL;
}

static int is_type(const cJSON *item, int type) { return item && (item->type & 0xFF) == type; }
cJSON_bool cJSON_IsArray(const cJSON *item) { return is_type(item, cJSON_Array); }
cJSON_bool cJSON_IsObject(const cJSON *item) { return is_type(item, cJSON_Object); }
cJSON_bool cJSON_IsNumber(const cJSON *item) { return is_type(item, cJSON_Number); }
cJSON_bool cJSON_IsString(const cJSON *item) { return is_type(item, cJSON_String); }

cJSON *cJSON_CreateObject(void) { return new_item(cJSON_Object); }
cJSON *cJSON_CreateArray(void) { return new_item(cJSON_Array); }

cJSON *cJSON_CreateNumber(double num)
{
    cJSON *j = new_item(cJSON_Number);
    if (j) {
        j->valuedouble = num;
        j->valueint = num >= INT_MAX ? INT_MAX : num <= (double)INT_MIN ? INT_MIN : (int)num;
    }
    return j;
}

static cJSON *create_text(int type, const char *s)
{
    cJSON *j = s ? new_item(type) : NULL;
    if (j && !(j->valuestring = dup_str(s))) {
        free(j);
        return NULL;
    }
    return j;
}

cJSON *cJSON_CreateString(const char *string) { return create_text(cJSON_String, string); }
cJSON *cJSON_CreateRaw(const char *raw) { return create_text(cJSON_Raw, raw); }

cJSON_bool cJSON_AddItemToArray(cJSON *array, cJSON *item)
{
    if (!array || !item || array == item)
        return 0;
    cJSON *c = array->child;
    if (!c) {
        array->child = item;
    } else {
        while (c->next)
            c = c->next;
        c->next = item, item->prev = c;
    }
    return 1;
}

cJSON_bool cJSON_AddItemToObject(cJSON *object, const char *string, cJSON *item)
{
    if (!object || !string || !item)
        return 0;
    char *key = dup_str(string);
    if (!key)
        return 0;
    free(item->string);
    item->string = key;
    return cJSON_AddItemToArray(object, item);
}

/* Creates nothing when object or name is missing; frees the new member
 * when it cannot be added. */
static cJSON *add_new(cJSON *object, const char *name, cJSON *item)
{
    if (item && cJSON_AddItemToObject(object, name, item))
        return item;
    cJSON_Delete(item);
    return NULL;
}

cJSON *cJSON_AddNumberToObject(cJSON *object, const char *name, double number)
{
    return add_new(object, name, cJSON_CreateNumber(number));
}
cJSON *cJSON_AddStringToObject(cJSON *object, const char *name, const char *string)
{
    return add_new(object, name, cJSON_CreateString(string));
}
cJSON *cJSON_AddBoolToObject(cJSON *object, const char *name, cJSON_bool boolean)
{
    cJSON *j = new_item(boolean ? cJSON_True : cJSON_False);
    if (j)
        j->valueint = boolean ? 1 : 0;
    return add_new(object, name, j);
}
cJSON *cJSON_AddArrayToObject(cJSON *object, const char *name)
{
    return add_new(object, name, cJSON_CreateArray());
}
cJSON *cJSON_AddObjectToObject(cJSON *object, const char *name)
{
    return add_new(object, name, cJSON_CreateObject());
}
