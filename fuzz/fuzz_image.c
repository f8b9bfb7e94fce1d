/* Fuzz image decoding as the datastore does it (stb_image through
 * dpt_image_load, with conversion to 1 and 3 channels and a resize). */
#include "dptrain/data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n > 1 << 20)
        return 0;
    char path[512];
    static const char *const ext[] = {"x.png", "x.jpg", "x.bmp", "x.pgm"};
    if (!fuzz_file(data, n, ext[n % 4], path, sizeof path))
        return 0;
    static float out[3 * 28 * 28];
    (void)dpt_image_load(path, 1, 28, 28, out);
    (void)dpt_image_load(path, 3, 7, 9, out);
    unlink(path);
    return 0;
}
