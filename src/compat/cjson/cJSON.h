/* The part of cJSON's interface dptrain uses, for a build without libcjson
 * (cmake/fallback.cmake, DPT_FALLBACK=cjson): implemented in
 * src/compat/cjson_own.c with cJSON's meanings (same node struct, type
 * bits, printing of numbers and strings). The parser is strict RFC 8259
 * JSON (cJSON accepts a few more spellings of numbers) and nests at most
 * 1000 deep, as cJSON. Every tree is freed with cJSON_Delete, every
 * printed text with cJSON_free. */
#ifndef DPT_COMPAT_CJSON_H
#define DPT_COMPAT_CJSON_H

#include <stddef.h>

#define cJSON_Invalid (0)
#define cJSON_False (1 << 0)
#define cJSON_True (1 << 1)
#define cJSON_NULL (1 << 2)
#define cJSON_Number (1 << 3)
#define cJSON_String (1 << 4)
#define cJSON_Array (1 << 5)
#define cJSON_Object (1 << 6)
#define cJSON_Raw (1 << 7)

typedef int cJSON_bool;

typedef struct cJSON {
    struct cJSON *next, *prev; /* siblings in an array or object */
    struct cJSON *child;       /* first element or member */
    int type;
    char *valuestring;         /* cJSON_String and cJSON_Raw */
    int valueint;              /* valuedouble saturated to int */
    double valuedouble;
    char *string;              /* the key, for a member of an object */
} cJSON;

cJSON *cJSON_Parse(const char *value);
/* require_null_terminated: only whitespace may follow the value. */
cJSON *cJSON_ParseWithOpts(const char *value, const char **return_parse_end,
                           cJSON_bool require_null_terminated);
char *cJSON_PrintUnformatted(const cJSON *item);
void cJSON_Delete(cJSON *item);
void cJSON_free(void *object);

int cJSON_GetArraySize(const cJSON *array);
cJSON *cJSON_GetArrayItem(const cJSON *array, int index);
cJSON *cJSON_GetObjectItemCaseSensitive(const cJSON *object, const char *string);

cJSON_bool cJSON_IsArray(const cJSON *item);
cJSON_bool cJSON_IsObject(const cJSON *item);
cJSON_bool cJSON_IsNumber(const cJSON *item);
cJSON_bool cJSON_IsString(const cJSON *item);

cJSON *cJSON_CreateObject(void);
cJSON *cJSON_CreateArray(void);
cJSON *cJSON_CreateNumber(double num);
cJSON *cJSON_CreateString(const char *string);
cJSON *cJSON_CreateRaw(const char *raw);

/* The Add functions take ownership of item and return 1, or 0 when item is
 * NULL or memory ran out (then item stays the caller's, as in cJSON). */
cJSON_bool cJSON_AddItemToArray(cJSON *array, cJSON *item);
cJSON_bool cJSON_AddItemToObject(cJSON *object, const char *string, cJSON *item);
/* These return the new member, or NULL. */
cJSON *cJSON_AddNumberToObject(cJSON *object, const char *name, double number);
cJSON *cJSON_AddStringToObject(cJSON *object, const char *name, const char *string);
cJSON *cJSON_AddBoolToObject(cJSON *object, const char *name, cJSON_bool boolean);
cJSON *cJSON_AddArrayToObject(cJSON *object, const char *name);
cJSON *cJSON_AddObjectToObject(cJSON *object, const char *name);

#define cJSON_ArrayForEach(element, array) \
    for (element = (array) ? (array)->child : NULL; element; element = element->next)

#endif
