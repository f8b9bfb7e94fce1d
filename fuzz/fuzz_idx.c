/* Fuzz the IDX reader: the input is split in two at its first byte's
 * position (images file, labels file); half the time gzip-compressed as is. */
#include "dptrain/data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 1 || n > 1 << 20)
        return 0;
    size_t cut = 1 + (size_t)data[0] * (n - 1) / 255;
    char ipath[512], lpath[512];
    if (!fuzz_file(data + 1, cut - 1, "images-idx3-ubyte", ipath, sizeof ipath) ||
        !fuzz_file(data + cut, n - cut, "labels-idx1-ubyte", lpath, sizeof lpath))
        return 0;
    dpt_datastore *ds = NULL;
    if (dpt_datastore_open_idx(ipath, lpath, &ds) == DPT_OK) {
        /* Read a few observations at the native size. */
        int h, w, c;
        if (dpt_datastore_n_obs(ds) && dpt_datastore_image_size(ds, 0, &h, &w, &c) == DPT_OK &&
            (size_t)h * w * c <= (1u << 20)) {
            float *px = malloc((size_t)h * w * c * sizeof *px);
            for (size_t i = 0; px && i < dpt_datastore_n_obs(ds) && i < 4; i++)
                (void)dpt_datastore_read(ds, i, c, h, w, px);
            free(px);
        }
        dpt_datastore_free(ds);
    }
    unlink(ipath);
    unlink(lpath);
    return 0;
}
