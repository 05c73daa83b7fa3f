"""C runtime against the numpy oracle: kernels (random shapes, sparsities, edge cases) and the encoder."""
import numpy as np
import pytest

from runtime.errors import ModelFormatError, NativeError
from runtime.format import load_model, pack_linear, quantize_symmetric, save_model, unpack_linear
from runtime.native import NativeModel, available_kernels, gelu, linear_forward, quantize_rows
from runtime.synthetic import TINY_CONFIG, random_tensors
from runtime.text import NORMALIZATION_VERSION

import np_reference as ref

KERNELS = available_kernels()
#: every kernel the library has; those this CPU lacks are skipped with a reason (never silently dropped)
ALL_KERNELS = ("scalar", "avx2", "avx512vnni", "amx")


def _need(kernel: str) -> None:
    if kernel not in KERNELS:
        pytest.skip(f"this CPU has no {kernel} (kernels here: {', '.join(KERNELS)}); it runs on a CPU that has it")
#: linear layer: int32 accumulation is exact, float epilogue identical up to rounding
LINEAR_RTOL = 1e-6
#: whole model vs the numpy oracle (float32 vs float64 accumulation, approximated exp/erf)
PROB_ATOL = 2e-4


def _sparse_int8(rng, out, inn, sparsity, empty_rows=0):
    w = rng.integers(-127, 128, size=(out, inn)).astype(np.int8)
    blocks = w.reshape(out, inn // 4, 4)
    keep = rng.random((out, inn // 4)) >= sparsity
    blocks *= keep[..., None].astype(np.int8)
    if empty_rows:
        blocks[rng.choice(out, empty_rows, replace=False)] = 0
    return blocks.reshape(out, inn)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
@pytest.mark.parametrize("T,out,inn,sparsity", [(1, 8, 16, 0.5), (16, 32, 64, 0.0), (17, 24, 384, 0.8), (50, 96, 1536, 0.9), (5, 4, 4, 1.0), (33, 40, 128, 0.95)])
def test_linear_kernel_matches_numpy(kernel, T, out, inn, sparsity):
    _need(kernel)
    rng = np.random.default_rng(T * 1000 + out)
    q = _sparse_int8(rng, out, inn, sparsity, empty_rows=min(2, out // 4))
    vals, col, rp = pack_linear(q)
    np.testing.assert_array_equal(unpack_linear(vals, col, rp, q.shape), q)
    scale = rng.uniform(1e-3, 1e-2, out).astype(np.float32)
    bias = rng.normal(0, 1, out).astype(np.float32)
    x = rng.normal(0, 1, (T, inn)).astype(np.float32)
    x[0] = 0  # an all-zero token
    xq, xs = quantize_rows(x)
    rq, rs = ref.quantize_rows(x)
    np.testing.assert_array_equal(xq, rq)
    np.testing.assert_array_equal(xs, rs)
    y = linear_forward(vals, col, rp, scale, bias, q.shape, xq, xs, kernel=kernel, threads=2)
    expect = (xs[:, None].astype(np.float64) * scale[None]) * (xq.astype(np.int64) @ q.astype(np.int64).T) + bias
    np.testing.assert_allclose(y, expect, rtol=LINEAR_RTOL, atol=1e-6)


def test_linear_worst_case_no_saturation():
    # every weight and activation at ±127: pair sums 2·127·127 = 32258 would overflow a u8×s8 route
    for sign in (1, -1):
        q = np.full((8, 1536), 127 * sign, np.int8)
        vals, col, rp = pack_linear(q)
        xq = np.full((16, 1536), 127, np.int8)
        xq[1::2] = -127
        xs = np.ones(16, np.float32)
        for kernel in KERNELS:
            y = linear_forward(vals, col, rp, np.ones(8, np.float32), np.zeros(8, np.float32), q.shape, xq, xs, kernel=kernel)
            np.testing.assert_array_equal(y[0], np.full(8, sign * 127 * 127 * 1536, np.float32))
            np.testing.assert_array_equal(y[1], np.full(8, -sign * 127 * 127 * 1536, np.float32))


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_linear_extreme_blocks_exact(kernel):
    """Blocks at and just past the AVX2 kernel's wide-block threshold (|w0|+|w1| = 128 / 129, ±127 pairs of
    either sign) against activations at the ends of the range: every kernel's integer sum is exact; -128,
    which no symmetric quantisation makes (and the wide blocks could not negate), is refused."""
    _need(kernel)
    rng = np.random.default_rng(11)
    levels = np.array([-127, -126, -65, -64, -63, -1, 0, 1, 63, 64, 65, 126, 127], np.int8)
    for inn in (384, 1536):
        q = rng.choice(levels, (24, inn)).astype(np.int8)
        q[:, 4:8] = [127, 1, -127, -2]  # pair sums 128 and 129
        q[:3, :] = [[127], [-127], [0]]
        vals, col, rp = pack_linear(q)
        xq = rng.choice(np.array([-127, -1, 0, 1, 127], np.int8), (40, inn)).astype(np.int8)
        xq[:4] = [[127], [-127], [0], [1]]
        xs = np.ones(40, np.float32)
        y = linear_forward(vals, col, rp, np.ones(24, np.float32), np.zeros(24, np.float32), q.shape, xq, xs, kernel=kernel)
        np.testing.assert_array_equal(y, (xq.astype(np.int64) @ q.astype(np.int64).T).astype(np.float32), err_msg=f"{kernel} in={inn}")
        xq[5, 7] = -128
        with pytest.raises(NativeError, match="sp_linear_forward"):
            linear_forward(vals, col, rp, np.ones(24, np.float32), np.zeros(24, np.float32), q.shape, xq, xs, kernel=kernel)


@pytest.mark.parametrize("kernel", ALL_KERNELS[1:])
def test_kernels_agree_bitwise(kernel):
    _need(kernel)
    rng = np.random.default_rng(7)
    q = _sparse_int8(rng, 384, 1536, 0.8)
    vals, col, rp = pack_linear(q)
    xq, xs = quantize_rows(rng.normal(0, 1, (45, 1536)).astype(np.float32))
    args = (vals, col, rp, rng.uniform(1e-3, 1e-2, 384).astype(np.float32), rng.normal(0, 1, 384).astype(np.float32), q.shape, xq, xs)
    ref = linear_forward(*args, kernel="scalar")
    # avx2, and avx512vnni (u8 x s8 with a +128 offset)
    np.testing.assert_array_equal(linear_forward(*args, kernel=kernel), ref, err_msg=kernel)


def test_amx_repeated_column():
    """A row holding one block column twice (the C checks allow it; AMX's per-column masks cannot say it): an
    explicit AMX is refused with a status, AUTO takes the next best kernel -- the exact sum either way."""
    rng = np.random.default_rng(3)
    col = np.array([2, 0, 2, 1, 3], np.uint16)  # row 0: column 2 twice
    rp = np.array([0, 3, 5], np.int32)
    vals = rng.integers(-127, 128, (5, 4)).astype(np.int8)
    xq = rng.integers(-127, 128, (3, 16)).astype(np.int8)
    xs = np.ones(3, np.float32)
    args = (vals, col, rp, np.ones(2, np.float32), np.zeros(2, np.float32), (2, 16), xq, xs)
    blocks = xq.reshape(3, 4, 4).astype(np.int64)
    want = np.stack([sum(blocks[:, c] @ vals[b].astype(np.int64) for b, c in zip(range(rp[o], rp[o + 1]), col[rp[o]:rp[o + 1]])) for o in range(2)], 1)
    np.testing.assert_array_equal(linear_forward(*args, kernel="auto"), want.astype(np.float32))
    if "amx" not in KERNELS:
        pytest.skip(f"this CPU has no amx (kernels here: {', '.join(KERNELS)}); AUTO checked above")
    with pytest.raises(NativeError, match="AMX"):
        linear_forward(*args, kernel="amx")


def _tiny_model(tmp_path, sparsity=0.8, seed=0, config=TINY_CONFIG):
    t = random_tensors(config, sparsity=sparsity, seed=seed)
    save_model(tmp_path, t, config=config, labels=["negative", "neutral", "positive"], max_len=config["max_position"], demojize=True, sparsity=sparsity)
    return t


#: head size 8: q, k and v head-major (each head's rows contiguous); head size 12 (not whole 8-row groups
#: of the SIMD epilogue): token-major rows and the reference attention
HEAD_LAYOUTS = {"head-major": TINY_CONFIG, "token-major": {**TINY_CONFIG, "hidden_size": 48, "num_heads": 4}}


@pytest.mark.parametrize("kernel", ALL_KERNELS)
@pytest.mark.parametrize("layout", sorted(HEAD_LAYOUTS))
def test_encoder_matches_numpy_oracle(kernel, layout, tmp_path):
    _need(kernel)
    cfg = HEAD_LAYOUTS[layout]
    t = _tiny_model(tmp_path, config=cfg)
    data = load_model(tmp_path)
    m = NativeModel(data, kernel=kernel)
    rng = np.random.default_rng(1)
    lens = [1, 2, 7, 16, 17, 40, 3]  # length-1 and max-length sequences included
    seqs = [rng.integers(0, cfg["vocab_size"], n) for n in lens]
    probs = m.forward(np.concatenate(seqs), np.array(lens), threads=2)
    expect = ref.forward(t, cfg, seqs)
    np.testing.assert_allclose(probs, expect, atol=PROB_ATOL)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    # batching does not change a sequence's result
    single = m.forward(seqs[3], np.array([lens[3]]), threads=1)
    np.testing.assert_allclose(single[0], probs[3], atol=1e-6)


def test_forward_rejects_bad_inputs(tmp_path):
    _tiny_model(tmp_path)
    m = NativeModel(load_model(tmp_path))
    with pytest.raises(NativeError, match="index out of range"):
        m.forward(np.array([1, 2, TINY_CONFIG["vocab_size"]]), np.array([3]))
    with pytest.raises(NativeError, match="length"):
        m.forward(np.zeros(41, np.int32), np.array([41]))
    with pytest.raises(ValueError):
        m.forward(np.zeros(5, np.int32), np.array([3]))


def test_model_bytes_and_sparsity(tmp_path):
    _tiny_model(tmp_path, sparsity=0.8)
    data = load_model(tmp_path)
    assert data.encoder_sparsity() == pytest.approx(0.8, abs=0.02)
    assert NativeModel(data).bytes > 0


def test_quantize_symmetric_roundtrip():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 8)).astype(np.float32)
    w[2] = 0
    q, s = quantize_symmetric(w)
    assert s[2] == 1 and (q[2] == 0).all() and np.abs(q).max() == 127 and (s > 0).all()
    np.testing.assert_allclose(q * s[:, None], w, atol=s.max() / 2 + 1e-7)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_gelu_approximation_tolerance(kernel):
    """The rational erf (native/ops_impl.h) against float64: GELU within 2.2e-7 * max(|x|, 1), exactly 0
    far left, x far right, NaN kept; every kernel's build bit-identical to the scalar one."""
    _need(kernel)
    from scipy.special import erf

    x = np.concatenate([np.linspace(-12, 12, 1_200_001), [0.0, -0.0, 1e-30, -1e-30, 5.8, -5.8, 100, -100, 3e38, -3e38]]).astype(np.float32)
    y = gelu(x, kernel)
    x64 = x.astype(np.float64)
    expect = 0.5 * x64 * (1 + erf(x64 / np.sqrt(2)))
    assert np.max(np.abs(y - expect) / np.maximum(np.abs(x64), 1)) <= 2.2e-7
    assert (y[x <= -5.8] == 0).all() and (y[x >= 5.8] == x[x >= 5.8]).all()
    assert np.isnan(gelu(np.array([np.nan, 1.0], np.float32), kernel)[0])
    np.testing.assert_array_equal(y.view(np.int32), gelu(x, "scalar").view(np.int32))


@pytest.mark.parametrize("kernel", ALL_KERNELS[1:])
def test_quantize_kernels_identical_near_ties(kernel):
    """The SIMD quantiser multiplies by 1/s and divides only where the product is near a half-integer:
    rows built with values at, and one ulp either side of, k + 0.5 times the row scale must still
    round exactly as x / s does in the scalar reference (where a plain reciprocal differs)."""
    _need(kernel)
    rng = np.random.default_rng(11)
    T, C = 600, 384
    base = (rng.standard_normal((T, C)) * rng.uniform(0.01, 100, (T, 1))).astype(np.float32)
    amax = np.abs(base).max(1).astype(np.float32)
    s = (amax * np.float32(1 / 127)).astype(np.float32)
    ties = ((rng.integers(-127, 127, (T, C)) + 0.5) * s[:, None]).astype(np.float32)
    rows = [base]
    for direction in (None, np.inf, -np.inf):
        r = ties if direction is None else np.nextafter(ties, np.float32(direction))
        r[:, 0] = amax
        rows.append(r.astype(np.float32))
    x = np.concatenate(rows)
    q_ref, s_ref = quantize_rows(x, "scalar")
    q, sc = quantize_rows(x, kernel)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(sc, s_ref)
    r = (np.float32(1) / s_ref).astype(np.float32)
    plain = np.clip(np.rint((x * r[:, None]).astype(np.float32)), -127, 127).astype(np.int8)
    assert (plain != q_ref).sum() > 1000  # the rows do hit the cases a plain reciprocal gets wrong


@pytest.mark.parametrize("kernel", ALL_KERNELS[1:])
def test_quantize_kernels_identical_tiny_rows_and_tails(kernel):
    """Rows whose largest magnitude is tiny (the scale s subnormal or zero: x / s may be huge or infinite, and
    only the reference's clamp keeps it at +-127) and widths that are not whole runs of 32 or 8 values."""
    _need(kernel)
    rng = np.random.default_rng(12)
    for C in (3, 8, 36, 40, 384, 1540):
        rows = []
        for amax in (1e-29, 1e-30, 1e-31, 1e-36, 1.2e-38, 1e-40, 1e-44, 1.4e-45, 3e38):
            r = rng.uniform(-1, 1, (3, C)).astype(np.float32) * np.float32(amax)
            r[:, 0] = np.float32(amax)
            rows.append(r.astype(np.float32))
        x = np.concatenate(rows)
        q_ref, s_ref = quantize_rows(x, "scalar")
        q, sc = quantize_rows(x, kernel)
        np.testing.assert_array_equal(q, q_ref, err_msg=f"C={C}")
        np.testing.assert_array_equal(sc, s_ref, err_msg=f"C={C}")
        assert np.abs(q.astype(np.int32)).max() <= 127


#: hidden 36 (3 heads of 12): rows that are not whole groups of 8 floats (the LayerNorm's and quantiser's tails)
ODD_CONFIG = {**TINY_CONFIG, "hidden_size": 36, "num_heads": 3, "intermediate_size": 44}
#: heads of 16 and 32 (MiniLM's): the attention products in 512-bit registers on AVX-512 CPUs
HEAD16_CONFIG = {**TINY_CONFIG, "hidden_size": 64, "num_heads": 4, "intermediate_size": 96}
HEAD32_CONFIG = {**TINY_CONFIG, "hidden_size": 96, "num_heads": 3, "intermediate_size": 96}
FORWARD_CONFIGS = {"tiny": TINY_CONFIG, "odd-width": ODD_CONFIG, "head16": HEAD16_CONFIG, "head32": HEAD32_CONFIG}


@pytest.mark.parametrize("kernel", ALL_KERNELS[1:])
@pytest.mark.parametrize("config", list(FORWARD_CONFIGS.values()), ids=list(FORWARD_CONFIGS))
def test_whole_forward_identical_across_kernels(kernel, config, tmp_path):
    """The SIMD build of every op is the same arithmetic as the scalar one (FMA only where the scalar code
    calls fmaf, no reassociation)."""
    _need(kernel)
    _tiny_model(tmp_path, config=config)
    data = load_model(tmp_path)
    rng = np.random.default_rng(5)
    lens = np.array([1, 9, 33, 40, 17])
    ids = rng.integers(0, config["vocab_size"], lens.sum())
    a = NativeModel(data, kernel="scalar").forward(ids, lens)
    np.testing.assert_array_equal(NativeModel(data, kernel=kernel).forward(ids, lens), a, err_msg=kernel)


@pytest.mark.parametrize("kernel", ALL_KERNELS[1:])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("config", [TINY_CONFIG, HEAD32_CONFIG], ids=["tiny", "head32"])
def test_fused_batch_forward_identical(kernel, threads, config, tmp_path):
    """A batch big enough for the fused schedule (threads > 1, >= 4 sequences and >= 2 units of 64 tokens per
    thread: each thread runs its own units from one attention to the next, with per-unit scratch sized for the
    widest input) gives exactly the scalar build's probabilities."""
    _need(kernel)
    _tiny_model(tmp_path, config=config)
    data = load_model(tmp_path)
    rng = np.random.default_rng(7)
    lens = np.concatenate([[1, 40, 39, 2], rng.integers(1, 41, 30)])  # 34 sequences, odd tile count
    ids = rng.integers(0, config["vocab_size"], lens.sum())
    assert lens.sum() >= 2 * threads * 64 and len(lens) >= 4 * threads
    ref_probs = NativeModel(data, kernel="scalar").forward(ids, lens)
    got = NativeModel(data, kernel=kernel).forward(ids, lens, threads=threads)
    np.testing.assert_array_equal(got, ref_probs, err_msg=f"{kernel} threads={threads}")


@pytest.mark.parametrize("kernel", ALL_KERNELS[1:])
@pytest.mark.parametrize("config", [TINY_CONFIG, HEAD32_CONFIG, ODD_CONFIG], ids=["tiny", "head32", "odd-width"])
def test_single_sequence_identical_across_threads(kernel, config, tmp_path):
    """Batch 1 (one tile of tokens or less, the threads splitting each linear's rows and the attention's heads)
    gives exactly the scalar build's probabilities at 1, 2 and 3 threads, lengths around the 16-token quarters."""
    _need(kernel)
    _tiny_model(tmp_path, config=config)
    data = load_model(tmp_path)
    ref_m, m = NativeModel(data, kernel="scalar"), NativeModel(data, kernel=kernel)
    rng = np.random.default_rng(11)
    for n in (1, 2, 7, 15, 16, 17, 26, 31, 32, 33, 40):
        ids = rng.integers(0, config["vocab_size"], n)
        want = ref_m.forward(ids, np.array([n]))
        for threads in (1, 2, 3):
            np.testing.assert_array_equal(m.forward(ids, np.array([n]), threads=threads), want, err_msg=f"{kernel} n={n} threads={threads}")


def test_kernel_in_use_is_reported(tmp_path):
    _tiny_model(tmp_path)
    data = load_model(tmp_path)
    for k in KERNELS:
        assert NativeModel(data, kernel=k).isa_name == k
    assert NativeModel(data).isa_name == KERNELS[-1]  # auto: the best this CPU has


def test_test_hooks_reject_bad_arguments():
    """sp_gelu and sp_quantize_rows_kernel (C API test hooks): NULL, empty and unknown-kernel calls get a status."""
    from runtime._native import ffi, lib

    buf = ffi.new("float[4]")
    q = ffi.new("int8_t[4]")
    assert lib.sp_gelu(ffi.NULL, 4, lib.SP_KERNEL_SCALAR, buf) == lib.SP_ERR_ARG
    assert lib.sp_gelu(buf, 0, lib.SP_KERNEL_SCALAR, buf) == lib.SP_ERR_ARG
    assert lib.sp_gelu(buf, 4, 99, buf) == lib.SP_ERR_ARG
    assert lib.sp_quantize_rows_kernel(buf, 1, 4, lib.SP_KERNEL_SCALAR, ffi.NULL, buf) == lib.SP_ERR_ARG
    assert lib.sp_quantize_rows_kernel(buf, 0, 4, lib.SP_KERNEL_SCALAR, q, buf) == lib.SP_ERR_ARG
    assert lib.sp_quantize_rows_kernel(buf, 1, 4, 99, q, buf) == lib.SP_ERR_ARG
