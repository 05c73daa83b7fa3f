"""Typed layer over the cffi binding ``runtime._native`` (which exposes only ``ffi, lib``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import NativeError, SparsePulseError
from .format import LINEAR_NAMES, ModelData, linear_shape

__all__ = ["KERNELS", "NativeModel", "cpu_has_avx2", "gelu", "linear_forward", "quantize_rows"]

try:
    from ._native import ffi, lib
except ImportError as e:  # pragma: no cover - only without a build
    raise SparsePulseError(
        "the native library runtime._native is not built: run `pip install -e .` (or `make test`), "
        f"which compiles native/ through cffi ({e})"
    ) from e

KERNELS = {"auto": lib.SP_KERNEL_AUTO, "scalar": lib.SP_KERNEL_SCALAR, "avx2": lib.SP_KERNEL_AVX2, "avx512vnni": lib.SP_KERNEL_AVX512_VNNI, "amx": lib.SP_KERNEL_AMX}


def _check(status: int, where: str) -> None:
    if status != lib.SP_OK:
        raise NativeError(status, ffi.string(lib.sp_status_message(status)).decode(), where)


def cpu_has_avx2() -> bool:
    return bool(lib.sp_cpu_has_avx2())


def cpu_has_avx512_vnni() -> bool:
    return bool(lib.sp_cpu_has_avx512_vnni())


def cpu_has_amx() -> bool:
    """AMX int8 tiles usable: the CPU has them, the OS saves their state and granted it to this process."""
    return bool(lib.sp_cpu_has_amx())


def available_kernels() -> list[str]:
    """The explicit kernels this CPU runs, reference first ("auto" picks the last)."""
    return ["scalar"] + (["avx2"] if cpu_has_avx2() else []) + (["avx512vnni"] if cpu_has_avx512_vnni() else []) + (["amx"] if cpu_has_amx() else [])


def _kernel(kernel: str) -> int:
    try:
        return KERNELS[kernel]
    except KeyError:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}") from None


def _ptr(ctype: str, a: np.ndarray, keep: list):
    a = np.ascontiguousarray(a)
    keep.append(a)
    return ffi.cast(ctype, ffi.from_buffer(a))


def _linear_struct(t: dict[str, np.ndarray], prefix: str, out: int, inn: int, keep: list):
    s = ffi.new("sp_linear *")
    keep.append(s)
    setattr(s, "out", out)
    setattr(s, "in", inn)
    vals = t[prefix + ".values"]
    s.nnz_blocks = vals.shape[0]
    s.row_ptr = _ptr("const int32_t *", t[prefix + ".row_ptr"].astype(np.int32, copy=False), keep)
    s.col_idx = _ptr("const uint16_t *", t[prefix + ".col_idx"].astype(np.uint16, copy=False), keep) if vals.shape[0] else ffi.NULL
    s.values = _ptr("const int8_t *", vals.astype(np.int8, copy=False), keep) if vals.shape[0] else ffi.NULL
    s.scale = _ptr("const float *", t[prefix + ".scale"].astype(np.float32, copy=False), keep)
    s.bias = _ptr("const float *", t[prefix + ".bias"].astype(np.float32, copy=False), keep)
    return s


class NativeModel:
    """A C model handle built from validated :class:`ModelData`; freed with the object.

    ``forward`` may be called from several threads at once and releases the GIL: the first caller
    uses the workspace cached in the C handle (kept between calls), concurrent callers allocate their
    own for the call.
    """

    def __init__(self, data: ModelData, kernel: str = "auto"):
        c = data.config
        t = data.tensors
        keep: list = []
        cfg = ffi.new("sp_config *")
        cfg.vocab_size, cfg.hidden, cfg.num_layers = c["vocab_size"], c["hidden_size"], c["num_layers"]
        cfg.num_heads, cfg.intermediate, cfg.max_position = c["num_heads"], c["intermediate_size"], c["max_position"]
        cfg.type_vocab_size, cfg.num_labels, cfg.layer_norm_eps = c["type_vocab_size"], c["num_labels"], c["layer_norm_eps"]
        layers = ffi.new("sp_layer[]", c["num_layers"])
        C, I = c["hidden_size"], c["intermediate_size"]
        for i in range(c["num_layers"]):
            for n in LINEAR_NAMES:
                out, inn = linear_shape(n, C, I)
                setattr(layers[i], n, _linear_struct(t, f"layer_{i}.{n}", out, inn, keep)[0])
            layers[i].attn_ln_gamma = _ptr("const float *", t[f"layer_{i}.attn_ln.gamma"], keep)
            layers[i].attn_ln_beta = _ptr("const float *", t[f"layer_{i}.attn_ln.beta"], keep)
            layers[i].ffn_ln_gamma = _ptr("const float *", t[f"layer_{i}.ffn_ln.gamma"], keep)
            layers[i].ffn_ln_beta = _ptr("const float *", t[f"layer_{i}.ffn_ln.beta"], keep)
        w = ffi.new("sp_weights *")
        w.word = _ptr("const int8_t *", t["embeddings.word.values"], keep)
        w.word_scale = _ptr("const float *", t["embeddings.word.scale"], keep)
        w.position = _ptr("const float *", t["embeddings.position"], keep)
        w.token_type = _ptr("const float *", t["embeddings.token_type"], keep)
        w.emb_ln_gamma = _ptr("const float *", t["embeddings.ln.gamma"], keep)
        w.emb_ln_beta = _ptr("const float *", t["embeddings.ln.beta"], keep)
        w.layers = layers
        w.pooler_w = _ptr("const float *", t["pooler.weight"], keep)
        w.pooler_b = _ptr("const float *", t["pooler.bias"], keep)
        w.classifier_w = _ptr("const float *", t["classifier.weight"], keep)
        w.classifier_b = _ptr("const float *", t["classifier.bias"], keep)
        out = ffi.new("sp_model **")
        _check(lib.sp_model_create(cfg, w, _kernel(kernel), out), "sp_model_create")
        self._handle = ffi.gc(out[0], lib.sp_model_free)
        self.config = dict(c)
        self.num_labels = c["num_labels"]
        self.max_position = c["max_position"]
        self.kernel = kernel

    @property
    def bytes(self) -> int:
        return int(lib.sp_model_bytes(self._handle))

    @property
    def isa_name(self) -> str:
        """The kernel in use ("auto" resolved): scalar, avx2, avx512vnni or amx."""
        k = int(lib.sp_model_kernel(self._handle))
        return next(name for name, v in KERNELS.items() if v == k and name != "auto")

    def forward(self, ids: np.ndarray, lengths: np.ndarray, threads: int = 0, timings: np.ndarray | None = None) -> np.ndarray:
        """ids: (sum(lengths),) int32 concatenated sequences; lengths: (n,) int32 -> probs (n, K) float32."""
        ids = np.ascontiguousarray(ids, np.int32)
        lengths = np.ascontiguousarray(lengths, np.int32)
        if ids.ndim != 1 or lengths.ndim != 1 or lengths.size == 0 or int(lengths.sum()) != ids.size:
            raise ValueError("ids must be the concatenation of sequences whose lengths are given")
        probs = np.empty((lengths.size, self.num_labels), np.float32)
        tm = ffi.NULL
        if timings is not None:
            if timings.shape != (5,) or timings.dtype != np.float64 or not timings.flags.c_contiguous:
                raise ValueError("timings must be a contiguous float64 array of shape (5,): linear, attention, row-wise, other, total")
            tm = ffi.cast("double *", ffi.from_buffer(timings))
        _check(
            lib.sp_forward(
                self._handle,
                ffi.cast("const int32_t *", ffi.from_buffer(ids)),
                ffi.cast("const int32_t *", ffi.from_buffer(lengths)),
                lengths.size,
                int(threads),
                ffi.cast("float *", ffi.from_buffer(probs)),
                tm,
            ),
            "sp_forward",
        )
        return probs


def quantize_rows(x: np.ndarray, kernel: str = "scalar") -> tuple[np.ndarray, np.ndarray]:
    """C per-token quantisation of ``x (T, C)`` -> (int8 (T, C), scales (T,)), with a kernel's implementation."""
    x = np.ascontiguousarray(x, np.float32)
    q = np.empty(x.shape, np.int8)
    s = np.empty(x.shape[0], np.float32)
    _check(
        lib.sp_quantize_rows_kernel(ffi.cast("const float *", ffi.from_buffer(x)), x.shape[0], x.shape[1], _kernel(kernel), ffi.cast("int8_t *", ffi.from_buffer(q)), ffi.cast("float *", ffi.from_buffer(s))),
        "sp_quantize_rows_kernel",
    )
    return q, s


def gelu(x: np.ndarray, kernel: str = "scalar") -> np.ndarray:
    """The encoder's GELU (its erf approximation) in C on float32 values, with a kernel's build of the float ops."""
    x = np.ascontiguousarray(x, np.float32)
    y = np.empty_like(x)
    _check(lib.sp_gelu(ffi.cast("const float *", ffi.from_buffer(x)), x.size, _kernel(kernel), ffi.cast("float *", ffi.from_buffer(y))), "sp_gelu")
    return y


def linear_forward(values, col_idx, row_ptr, scale, bias, shape: Sequence[int], xq: np.ndarray, xs: np.ndarray, kernel: str = "auto", threads: int = 0) -> np.ndarray:
    """One packed sparse INT8 linear layer in C (tests and benchmarks)."""
    keep: list = []
    t = {"l.values": np.asarray(values, np.int8).reshape(-1, 4), "l.col_idx": col_idx, "l.row_ptr": row_ptr, "l.scale": scale, "l.bias": bias}
    s = _linear_struct(t, "l", int(shape[0]), int(shape[1]), keep)
    xq = np.ascontiguousarray(xq, np.int8)
    xs = np.ascontiguousarray(xs, np.float32)
    y = np.empty((xq.shape[0], int(shape[0])), np.float32)
    _check(lib.sp_linear_forward(s, ffi.cast("const int8_t *", ffi.from_buffer(xq)), ffi.cast("const float *", ffi.from_buffer(xs)), xq.shape[0], _kernel(kernel), int(threads), ffi.cast("float *", ffi.from_buffer(y))), "sp_linear_forward")
    return y
