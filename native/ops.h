/* FP32 operations of the encoder: exp / erf approximations, LayerNorm, GELU, softmax, attention.
 * Written as plain loops; compiled twice (ops_impl.h): a baseline build (the reference) and an
 * AVX2+FMA build (SP_AVX2), selected at run time with the linear kernels. GELU and attention,
 * which the compiler cannot vectorise (exp / erf), are written by hand for AVX2 (ops_avx2.h). */
#ifndef SP_OPS_H
#define SP_OPS_H
#include "sp_internal.h"

/* Tolerances of the approximations (tested against float64 references in tests/test_native.py). */
#define SP_EXP_REL_TOL 2e-7f
#define SP_ERF_ABS_TOL 3.5e-7f

/* The lanes of an 8-lane sum combined pairwise, ((0+1)+(2+3))+((4+5)+(6+7)): the order every
 * sp_sum8-order sum ends with (ops_impl.h, and the hand-written LayerNorm in kernels.h). */
static inline float sp_lanes8(const float a[8]) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

#define SP_OPS_SUFFIX _ref
#define SP_OPS_ATTR
#include "ops_impl.h"
#undef SP_OPS_SUFFIX
#undef SP_OPS_ATTR

#if SP_X86
#define SP_OPS_SUFFIX _avx2
#define SP_OPS_ATTR SP_AVX2
#define SP_OPS_HAND_VECTORISED
#include "ops_impl.h"
#undef SP_OPS_HAND_VECTORISED
#undef SP_OPS_SUFFIX
#undef SP_OPS_ATTR
#include "ops_avx2.h"
#endif

#endif
