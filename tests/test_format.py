"""Hostile model files raise ModelFormatError (never a crash)."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from runtime.errors import ModelFormatError
from runtime.format import FORMAT, load_model, save_model
from runtime.native import NativeModel
from runtime.synthetic import TINY_CONFIG, random_tensors

LABELS = ["negative", "neutral", "positive"]


def _write(tmp_path, tensors=None, **meta_over):
    t = tensors if tensors is not None else random_tensors(TINY_CONFIG, 0.8)
    p = save_model(tmp_path, t, config=TINY_CONFIG, labels=LABELS, max_len=32, demojize=True, sparsity=0.8)
    if meta_over:
        from safetensors import safe_open

        with safe_open(str(p), "np") as f:
            meta = dict(f.metadata())
            tens = {k: f.get_tensor(k) for k in f.keys()}
        meta.update(meta_over)
        save_file(tens, str(p), metadata={k: v for k, v in meta.items() if v is not None})
    return p


def _raw_save(tmp_path, tensors):
    p = _write(tmp_path)
    from safetensors import safe_open

    with safe_open(str(p), "np") as f:
        meta = dict(f.metadata())
    save_file(tensors, str(p), metadata=meta)
    return p


def test_valid_roundtrip(tmp_path):
    d = load_model(_write(tmp_path))
    assert d.meta["format"] == FORMAT and d.config == TINY_CONFIG and d.meta["max_len"] == 32


@pytest.mark.parametrize(
    "over, match",
    [
        ({"format": "something-else"}, "format"),
        ({"format_version": "2"}, "version"),
        ({"config": "{not json"}, "malformed"),
        ({"config": json.dumps({**TINY_CONFIG, "hidden_size": -4})}, "hidden_size"),
        ({"config": json.dumps({**TINY_CONFIG, "vocab_size": 10**12})}, "vocab_size"),
        ({"labels": json.dumps(["a", "b"])}, "labels"),
        ({"max_len": "100000"}, "max_len"),
        ({"normalization": "tweet-norm/999"}, "normalisation"),
        ({"quantization": json.dumps({"weights": "int4"})}, "quantisation"),
        ({"sparsity": json.dumps({"block_shape": [4, 1]})}, "block_shape"),
        ({"labels": None}, "missing"),
    ],
)
def test_bad_metadata(tmp_path, over, match):
    with pytest.raises(ModelFormatError, match=match):
        load_model(_write(tmp_path, **over))


def _mutate(name, fn):
    t = random_tensors(TINY_CONFIG, 0.8)
    t[name] = fn(t[name])
    return t


@pytest.mark.parametrize(
    "name, fn, match",
    [
        ("layer_0.query.col_idx", lambda a: np.full_like(a, 60000), "col_idx out of range"),
        ("layer_0.query.row_ptr", lambda a: a[::-1].copy(), "row_ptr"),
        ("layer_1.ffn_out.scale", lambda a: np.where(np.arange(a.size) == 3, np.nan, a).astype(np.float32), "NaN"),
        ("layer_0.key.scale", lambda a: -a, "negative"),
        ("layer_0.attn_out.scale", lambda a: np.zeros_like(a), "zero"),
        ("embeddings.word.scale", lambda a: np.zeros_like(a), "zero"),
        ("layer_0.value.values", lambda a: np.full_like(a, -128), "-128"),
        ("layer_0.ffn_in.values", lambda a: a[:-1], "do not match"),
        ("embeddings.position", lambda a: a[:, :-1], "shape"),
        ("pooler.weight", lambda a: a.astype(np.float64), "dtype"),
        ("embeddings.word.scale", lambda a: np.full_like(a, np.inf), "NaN or infinite"),
    ],
)
def test_bad_tensors(tmp_path, name, fn, match):
    with pytest.raises(ModelFormatError, match=match):
        load_model(_raw_save(tmp_path, _mutate(name, fn)))


def test_missing_and_extra_tensors(tmp_path):
    t = random_tensors(TINY_CONFIG, 0.8)
    del t["classifier.bias"]
    with pytest.raises(ModelFormatError, match="missing"):
        load_model(_raw_save(tmp_path, t))


@pytest.mark.parametrize("cut", [0, 7, 100, 5000, -10])
def test_truncated_or_garbage_file(tmp_path, cut):
    p = _write(tmp_path)
    raw = p.read_bytes()
    p.write_bytes(raw[:cut] if cut >= 0 else raw[:cut])
    with pytest.raises(ModelFormatError):
        load_model(p)


def test_header_claims_absurd_size(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelFormatError):
        load_model(p)


def test_c_rechecks_what_it_depends_on(tmp_path):
    # bypass the Python validation: C must still refuse an out-of-range block index
    d = load_model(_write(tmp_path))
    d.tensors["layer_0.query.col_idx"] = np.full_like(d.tensors["layer_0.query.col_idx"], 9999)
    from runtime.errors import NativeError

    with pytest.raises(NativeError, match="index out of range"):
        NativeModel(d)
