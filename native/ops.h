/* FP32 operations of the encoder: exp / erf approximations, LayerNorm, GELU, softmax, attention.
 * Written as plain loops that vectorise; compiled twice (ops_impl.h): a baseline build (the
 * reference) and an AVX2+FMA build (SP_AVX2), selected at run time with the linear kernels. */
#ifndef SP_OPS_H
#define SP_OPS_H
#include "sp_internal.h"

/* Tolerances of the approximations (tested against libm in tests/test_native.py). */
#define SP_EXP_REL_TOL 2e-7f
#define SP_ERF_ABS_TOL 2e-7f

#define SP_OPS_SUFFIX _ref
#define SP_OPS_ATTR
#include "ops_impl.h"
#undef SP_OPS_SUFFIX
#undef SP_OPS_ATTR

#if SP_X86
#define SP_OPS_SUFFIX _avx2
#define SP_OPS_ATTR SP_AVX2
#include "ops_impl.h"
#undef SP_OPS_SUFFIX
#undef SP_OPS_ATTR
#endif

#endif
