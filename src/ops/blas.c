/* The BLAS thread setting, in one place (OpenBLAS's own calls). */
#include "dptrain/core.h"

#include <cblas.h>

void dpt_blas_set_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }
int dpt_blas_threads(void) { return openblas_get_num_threads(); }
