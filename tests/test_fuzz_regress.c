/* Replays every seed input and every input the fuzzers ever found a problem
 * with (fuzz/corpus/<target>/, fuzz/regress/<target>/) through the same
 * entry points the fuzzers use, so a fixed crash stays fixed. Run under
 * ASan/UBSan in CI. The CLI target is replayed by tests/test_fuzz_cli.sh. */
#include <dirent.h>
#include <time.h>

#define LLVMFuzzerTestOneInput fuzz_spec
#include "../fuzz/fuzz_spec.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_idx
#include "../fuzz/fuzz_idx.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_safetensors
#include "../fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_image
#include "../fuzz/fuzz_image.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_checkpoint
#include "../fuzz/fuzz_checkpoint.c"
#undef LLVMFuzzerTestOneInput

#include "testutil.h"

typedef int (*entry)(const uint8_t *, size_t);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int replay_dir(const char *dir, entry fn)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        static uint8_t buf[4 << 20];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        double t0 = now_s();
        fn(buf, len); /* a crash or sanitizer report fails the test */
        double dt = now_s() - t0;
        /* The fuzzers time out at 10 s; a regression of a slow input (one
         * that takes minutes) shows here. Inputs take well under a second
         * in a Release build: 15 s leaves room for a slow, loaded machine
         * and a sanitizer build. */
        CHECK_MSG(dt < 15.0, "%s took %.1f s", path, dt);
        n++;
    }
    closedir(d);
    return n;
}

int main(void)
{
    static const struct { const char *name; entry fn; } targets[] = {
        {"spec", fuzz_spec}, {"idx", fuzz_idx}, {"safetensors", fuzz_safetensors}, {"image", fuzz_image},
        {"checkpoint", fuzz_checkpoint},
    };
    const char *root = getenv("DPT_SOURCE_DIR");
    char dir[1024];
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        int n = 0;
        snprintf(dir, sizeof dir, "%s/fuzz/corpus/%s", root ? root : ".", targets[i].name);
        n += replay_dir(dir, targets[i].fn);
        snprintf(dir, sizeof dir, "%s/fuzz/regress/%s", root ? root : ".", targets[i].name);
        n += replay_dir(dir, targets[i].fn);
        printf("fuzz_%s: replayed %d inputs\n", targets[i].name, n);
        CHECK_MSG(n > 0, "no inputs for fuzz_%s under %s", targets[i].name, dir);
    }
    return tu_exit();
}
