/* Reading PyTorch reference fixtures (safetensors files written by
 * tests/fixtures/make_*_fixtures.py) in the C tests: tensor "<case>/<name>"
 * as `want` floats, in a buffer the caller frees (zeros, after a failed
 * check, when the fixture lacks it, so the test goes on and reports). */
#ifndef DPT_TEST_ST_FIXTURE_H
#define DPT_TEST_ST_FIXTURE_H

#include "core/safetensors.h"
#include "testutil.h"

static inline float *fixture_load(const dpt_st *st, const char *cs, const char *name, size_t want)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    const dpt_st_tensor *t = dpt_st_get(st, key);
    CHECK_MSG(t != NULL, "fixture lacks %s", key);
    float *p = calloc(want ? want : 1, sizeof *p);
    if (!t)
        return p;
    dpt_status s = dpt_st_read_f32(st, key, p, want);
    CHECK_MSG(s == DPT_OK, "%s: %s", key, dpt_last_error());
    return p;
}

#endif
