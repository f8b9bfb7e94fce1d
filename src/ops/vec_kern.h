/* The batch-norm passes (bn_kern.h) and fc kernels (fc_kern.h) of one
 * instruction set, and their tables for kernels.c: included by vec_avx512.c
 * and vec_avx2.c after they define VN, VT, VI, KN(f), FC_IMG and FC_DW_VEC
 * (see bn_kern.h and fc_kern.h), inside their target pragmas. The tables
 * are named KN(dpt_bn_isa) and KN(dpt_fc_isa) (vec_isa.h). */
#include "ops/bn_kern.h"
#include "ops/fc_kern.h"

const bn_isa KN(dpt_bn_isa) = {
    .sums = KN(plane_sums),
    .normalize = KN(plane_normalize),
    .backward_sums = KN(plane_backward_sums),
    .backward_dx = KN(plane_backward_dx),
    .add_bn = KN(plane_add_bn),
    .add_bn_bwd = KN(plane_add_bn_bwd),
};

const fc_isa KN(dpt_fc_isa) = {
    .step = FC_DW_VEC * VN,
    .forward = KN(fc_forward),
    .backward_dx = KN(fc_backward_dx),
    .backward_dw = KN(fc_backward_dw),
    .backward_bn = KN(fc_backward_bn),
};
