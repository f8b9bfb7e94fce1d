/* The stand-ins of cmake/fallback.cmake (src/compat/: cJSON, stb_image for
 * PGM/PPM, CBLAS), tested in every build, linked with nothing of dptrain:
 * values, refusals of hostile input, and, where the machine has the real
 * libcjson, the same printed text and the same accepted documents as it. */
#include "cJSON.h"
#include "cblas.h"
#include "stb_image.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(c)                                                           \
    do {                                                                   \
        if (!(c)) {                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static int printed_is(const cJSON *j, const char *want)
{
    char *t = cJSON_PrintUnformatted(j);
    int ok = t && !strcmp(t, want);
    if (!ok)
        fprintf(stderr, "printed %s, want %s\n", t ? t : "(null)", want);
    cJSON_free(t);
    return ok;
}

static int parses(const char *text, int strict)
{
    cJSON *j = cJSON_ParseWithOpts(text, NULL, strict);
    cJSON_Delete(j);
    return j != NULL;
}

/* Documents printed and parsed by both implementations. */
static const char *const docs[] = {
    "{\"a\":[1,2.5,-3,0.1,1e300,-0.000125,10000000000,2147483647,-2147483648,0.333]}",
    "{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}",
    "[\"x\\\"y\\\\z\\n\\t\\u0001\",true,false,null,{},[]]",
    "{\"__metadata__\":{\"k\":\"v\",\"name\":\"conv1/Weights\"}}",
    "[3.141592653589793,1e-7,123456.789,1.7976931348623157e308]",
    "\"\\u00e9\\ud83d\\ude00/\"",
};

static void test_json(void)
{
    cJSON *r = cJSON_ParseWithOpts(docs[1], NULL, 1);
    CHECK(cJSON_IsObject(r));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(r, "dtype");
    CHECK(cJSON_IsString(dt) && !strcmp(dt->valuestring, "F32"));
    CHECK(cJSON_GetObjectItemCaseSensitive(r, "DTYPE") == NULL);
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(r, "shape");
    CHECK(cJSON_IsArray(sh) && cJSON_GetArraySize(sh) == 2);
    CHECK(cJSON_IsNumber(cJSON_GetArrayItem(sh, 1)) && cJSON_GetArrayItem(sh, 1)->valuedouble == 3);
    CHECK(cJSON_GetArrayItem(sh, 2) == NULL && cJSON_GetArrayItem(sh, -1) == NULL);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, r) n += e->string != NULL;
    CHECK(n == 3 && cJSON_GetArraySize(r) == 3);
    CHECK(printed_is(r, docs[1]));
    cJSON_Delete(r);

    /* Escapes decode to UTF-8 (a surrogate pair to 4 bytes). */
    r = cJSON_Parse(docs[5]);
    CHECK(r && !strcmp(r->valuestring, "\xc3\xa9\xf0\x9f\x98\x80/"));
    cJSON_Delete(r);

    /* Numbers spelled as cJSON does. */
    cJSON *a = cJSON_CreateArray();
    double nums[] = {0.1, 1.0 / 3, 1e10, -7, NAN, INFINITY, 0.5, 1e-300, -0.0};
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++)
        CHECK(cJSON_AddItemToArray(a, cJSON_CreateNumber(nums[i])));
    CHECK(cJSON_AddItemToArray(a, cJSON_CreateRaw("18446744073709551615")));
    CHECK(printed_is(a, "[0.1,0.33333333333333331,10000000000,-7,null,null,0.5,1e-300,0,"
                        "18446744073709551615]"));
    cJSON_Delete(a);

    cJSON *o = cJSON_CreateObject();
    CHECK(cJSON_AddNumberToObject(o, "n", 3) && cJSON_AddStringToObject(o, "s", "a\"\x1f") &&
          cJSON_AddBoolToObject(o, "t", 1) && cJSON_AddArrayToObject(o, "a") &&
          cJSON_AddObjectToObject(o, "o"));
    CHECK(cJSON_AddItemToObject(o, "x", cJSON_CreateString("y")));
    CHECK(!cJSON_AddItemToObject(o, "z", NULL) && !cJSON_AddItemToArray(NULL, NULL));
    CHECK(printed_is(o, "{\"n\":3,\"s\":\"a\\\"\\u001f\",\"t\":true,\"a\":[],\"o\":{},\"x\":\"y\"}"));
    cJSON_Delete(o);

    /* Hostile or malformed text is refused, never read past its end. */
    const char *bad[] = {"", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-", "1e", "+1",
                         ".5", "[1", "\"abc", "\"a\\\"", "\"\\u0000\"", "\"\\ud800\"",
                         "\"\\udc00x\"", "\"\\uZZZZ\"", "\"\\q\"", "\"a\nb\"", "tru", "nul",
                         "{1:2}", "[1 2]", "\"\\", "{\"a\":}", "[\"\\ud83d\\u0041\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (parses(bad[i], 1)) {
            fprintf(stderr, "accepted bad JSON: %s\n", bad[i]);
            failures++;
        }
    CHECK(parses("[1] x", 0) && !parses("[1] x", 1) && parses(" [1] \n", 1));
    const char *end = NULL;
    r = cJSON_ParseWithOpts("[1]  x", &end, 0);
    CHECK(r && end && *end == ' ');
    cJSON_Delete(r);

    /* Nesting: 1000 levels parse, 1001 do not (cJSON's limit). */
    char deep[2 * 1001 + 1];
    for (int d = 1000; d <= 1001; d++) {
        memset(deep, '[', (size_t)d);
        memset(deep + d, ']', (size_t)d);
        deep[2 * d] = '\0';
        CHECK(parses(deep, 1) == (d == 1000));
    }

    /* The real cJSON, where installed: same text for the same documents,
     * and it accepts what the stand-in accepts. */
    void *lib = dlopen("libcjson.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("libcjson.so.1 not here: no comparison with cJSON\n");
        return;
    }
    cJSON *(*parse)(const char *) = (cJSON * (*)(const char *)) dlsym(lib, "cJSON_Parse");
    char *(*print)(const cJSON *) = (char *(*)(const cJSON *))dlsym(lib, "cJSON_PrintUnformatted");
    void (*del)(cJSON *) = (void (*)(cJSON *))dlsym(lib, "cJSON_Delete");
    void (*fr)(void *) = (void (*)(void *))dlsym(lib, "cJSON_free");
    CHECK(parse && print && del && fr);
    if (parse && print && del && fr) {
        for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
            cJSON *theirs = parse(docs[i]), *ours = cJSON_Parse(docs[i]);
            char *t1 = theirs ? print(theirs) : NULL, *t2 = ours ? cJSON_PrintUnformatted(ours) : NULL;
            if (!t1 || !t2 || strcmp(t1, t2)) {
                fprintf(stderr, "cJSON printed %s, the stand-in %s\n", t1 ? t1 : "(null)",
                        t2 ? t2 : "(null)");
                failures++;
            }
            fr(t1), cJSON_free(t2), del(theirs), cJSON_Delete(ours);
        }
        printf("compared with libcjson.so.1: %zu documents\n", sizeof docs / sizeof *docs);
    }
    dlclose(lib);
}

static FILE *file_with(const char *bytes, size_t n)
{
    FILE *f = tmpfile();
    if (f) {
        fwrite(bytes, 1, n, f);
        rewind(f);
    }
    return f;
}

static void test_pnm(void)
{
    /* A 3x2 PGM with a comment, and a 1x2 PPM. */
    const char pgm[] = "P5 # comment\n3 2\n255\n\x01\x02\x03\x04\x05\xff";
    FILE *f = file_with(pgm, sizeof pgm - 1);
    int w = 0, h = 0, c = 0;
    CHECK(f && stbi_info_from_file(f, &w, &h, &c) && w == 3 && h == 2 && c == 1);
    CHECK(ftell(f) == 0); /* info leaves the file where it was */
    stbi_uc *p = stbi_load_from_file(f, &w, &h, &c, 0);
    CHECK(p && w == 3 && h == 2 && c == 1 && p[0] == 1 && p[5] == 0xff);
    stbi_image_free(p);
    fclose(f);

    const char ppm[] = "P6\n1 2\n200\n\x0a\x0b\x0c\x0d\x0e\x0f";
    f = file_with(ppm, sizeof ppm - 1);
    p = f ? stbi_load_from_file(f, &w, &h, &c, 0) : NULL;
    CHECK(p && w == 1 && h == 2 && c == 3 && p[0] == 10 && p[5] == 15);
    stbi_image_free(p);
    fclose(f);

    const char *const bad[] = {
        "\x89PNG\r\n\x1a\n",          /* PNG: needs the real stb */
        "P5\n3 2\n255\n\x01\x02",     /* truncated samples */
        "P5\n3 2\n65535\n",           /* 16-bit */
        "P5\n99999999 99999999\n255\n", /* dimensions past the bound */
        "P5\n0 2\n255\n",             /* empty */
        "P5\n3x2\n255\n",             /* no whitespace after a number */
        "P2\n1 1\n255\n1",            /* ASCII PGM */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        f = file_with(bad[i], strlen(bad[i]));
        p = f ? stbi_load_from_file(f, &w, &h, &c, 0) : NULL;
        if (p || !stbi_failure_reason()) {
            fprintf(stderr, "PNM stand-in accepted bad input %zu\n", i);
            failures++;
        }
        stbi_image_free(p);
        fclose(f);
    }
    f = file_with(bad[0], strlen(bad[0]));
    CHECK(!stbi_info_from_file(f, &w, &h, &c) && strstr(stbi_failure_reason(), "stb_image"));
    fclose(f);
}

/* op(X)[r][c] of a row-major matrix X with leading dimension ld. */
static float at(const float *X, int t, int ld, int r, int c)
{
    return t ? X[(size_t)c * ld + r] : X[(size_t)r * ld + c];
}

static void test_cblas(void)
{
    enum { M = 5, N = 7, K = 6, LD = 9 };
    float A[LD * LD], B[LD * LD], C[LD * LD], C0[LD * LD];
    for (int i = 0; i < LD * LD; i++) {
        A[i] = (float)((i * 7) % 11) - 5.0f;
        B[i] = (float)((i * 5) % 13) * 0.25f - 1.5f;
        C0[i] = (float)(i % 3);
    }
    for (int order = 0; order < 2; order++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int bi = 0; bi < 2; bi++) {
                    float beta = bi ? 0.5f : 0.0f;
                    memcpy(C, C0, sizeof C);
                    if (!bi)
                        for (int i = 0; i < LD * LD; i++)
                            C[i] = NAN; /* beta 0: C is only written */
                    cblas_sgemm(order ? CblasColMajor : CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                                tb ? CblasTrans : CblasNoTrans, M, N, K, 2.0f, A, LD, B, LD, beta, C,
                                LD);
                    double worst = 0;
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) {
                            /* Column-major: element (i, j) of X sits at X[j*ld + i],
                             * which is row-major X transposed. */
                            double s = 0;
                            for (int p = 0; p < K; p++)
                                s += order ? (double)at(A, !ta, LD, i, p) * at(B, !tb, LD, p, j)
                                           : (double)at(A, ta, LD, i, p) * at(B, tb, LD, p, j);
                            size_t ci = order ? (size_t)j * LD + i : (size_t)i * LD + j;
                            double want = 2.0 * s + (bi ? 0.5 * C0[ci] : 0.0);
                            worst = fmax(worst, fabs(C[ci] - want));
                        }
                    if (!(worst < 1e-4)) {
                        fprintf(stderr, "cblas_sgemm order %d ta %d tb %d beta %g: error %g\n",
                                order, ta, tb, beta, worst);
                        failures++;
                    }
                }
    float x[3] = {1, 2, 3}, y[2] = {4, -1}, G[6] = {0};
    cblas_sger(CblasRowMajor, 3, 2, 0.5f, x, 1, y, 1, G, 2);
    CHECK(G[0] == 2 && G[1] == -0.5f && G[4] == 6 && G[5] == -1.5f);
    openblas_set_num_threads(4);
    CHECK(openblas_get_num_threads() == 4);
}

int main(void)
{
    test_json();
    test_pnm();
    test_cblas();
    if (failures) {
        fprintf(stderr, "test_compat: %d failures\n", failures);
        return 1;
    }
    printf("test_compat: stand-ins for cJSON, stb_image (PGM/PPM) and CBLAS passed\n");
    return 0;
}
