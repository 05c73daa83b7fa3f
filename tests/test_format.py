"""Hostile model files raise ModelFormatError (never a crash)."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from runtime.errors import ModelFormatError
from runtime.format import FORMAT, load_model, save_model, tensor_checksum
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
    """Tensors written past save_model's checks, with a matching checksum: what load_model's own
    checks (not the checksum) must catch."""
    p = _write(tmp_path)
    from safetensors import safe_open

    with safe_open(str(p), "np") as f:
        meta = dict(f.metadata())
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    meta["checksum"] = tensor_checksum(tensors)
    save_file(tensors, str(p), metadata=meta)
    return p


def test_valid_roundtrip(tmp_path):
    d = load_model(_write(tmp_path))
    assert d.meta["format"] == FORMAT and d.config == TINY_CONFIG and d.meta["max_len"] == 32


@pytest.mark.parametrize(
    "over, match",
    [
        ({"format": "something-else"}, "format"),
        ({"format_version": "3"}, "version"),
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


# ------------------------------------------------------------------ hostile-streams issue: the model contract
def _rechecksummed(tmp_path, **meta_over):
    """Metadata changed after saving, checksum still valid (the tensors are untouched)."""
    return _write(tmp_path, **meta_over)


@pytest.mark.parametrize(
    "labels",
    [["negative", "positive"], ["very negative", "negative", "neutral", "positive", "very positive"], ["neg", "neu", "pos"], ["negative", "negative", "positive"]],
)
def test_labels_other_than_the_three_are_refused(tmp_path, labels):
    cfg = {**TINY_CONFIG, "num_labels": len(labels)}
    t = random_tensors(cfg, 0.8)
    with pytest.raises(ModelFormatError, match="exactly negative, neutral, positive"):
        save_model(tmp_path, t, config=cfg, labels=labels, max_len=32, demojize=True, sparsity=0.8)
    p = _write(tmp_path / "ok")  # also when written past save_model
    with pytest.raises(ModelFormatError, match="labels"):
        load_model(_rechecksummed(tmp_path / "ok", labels=json.dumps(labels)))


def test_labels_in_another_order_map_by_name(tmp_path):
    """A model whose classifier rows are (positive, neutral, negative) scores the same as the same
    model written in our order: the Scorer maps by name (it used to store it inverted)."""
    from runtime.scorer import Scorer
    from runtime.format import TOKENIZER_FILES
    from compression.weights import base_model_dir
    import shutil

    cfg = {**TINY_CONFIG, "vocab_size": 30522}
    t = random_tensors(cfg, 0.8, std=0.5)
    rev = dict(t)
    rev["classifier.weight"] = t["classifier.weight"][::-1].copy()
    rev["classifier.bias"] = t["classifier.bias"][::-1].copy()
    dirs = {}
    for name, tens, labels in (("ours", t, ["negative", "neutral", "positive"]), ("reversed", rev, ["positive", "neutral", "negative"])):
        d = tmp_path / name
        d.mkdir()
        save_model(d, tens, config=cfg, labels=labels, max_len=32, demojize=True, sparsity=0.8)
        for f in TOKENIZER_FILES:
            shutil.copy2(base_model_dir() / f, d / f)
        dirs[name] = d
    texts = ["I love this apple!", "terrible service", "the bus is at 5"]
    la, pa = Scorer(dirs["ours"], threads=1).score(texts)
    lb, pb = Scorer(dirs["reversed"], threads=1).score(texts)
    assert Scorer(dirs["reversed"]).labels == ("negative", "neutral", "positive")
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(la, lb)
    assert not np.allclose(pa, pa[:, ::-1])  # the test can tell the two orders apart


@pytest.mark.parametrize("seed", range(5))
def test_bit_flips_in_tensor_data_are_refused(tmp_path, seed):
    p = _write(tmp_path)
    raw = bytearray(p.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    rng = np.random.default_rng(seed)
    pos = int(rng.integers(header, len(raw)))
    raw[pos] ^= 1 << int(rng.integers(0, 8))
    p.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match="checksum"):
        load_model(p)


@pytest.mark.parametrize(
    "name, fn, match",
    [
        ("pooler.weight", lambda a: np.full_like(a, 3e38), "beyond any trained model"),
        ("layer_0.query.bias", lambda a: np.full_like(a, -5e5), "beyond any trained model"),
        ("layer_0.key.scale", lambda a: np.full_like(a, 1e-40), "denormal"),
        ("embeddings.word.scale", lambda a: np.full_like(a, 1e-39), "denormal"),
    ],
)
def test_absurd_values_are_refused(tmp_path, name, fn, match):
    with pytest.raises(ModelFormatError, match=match):
        load_model(_raw_save(tmp_path, _mutate(name, fn)))


@pytest.mark.parametrize(
    "over, match",
    [
        ({"max_len": "2"}, "max_len"),
        ({"max_len": "7"}, "max_len"),
        ({"config": json.dumps({**TINY_CONFIG, "layer_norm_eps": 0.9})}, "layer_norm_eps"),
        ({"config": json.dumps({**TINY_CONFIG, "layer_norm_eps": True})}, "layer_norm_eps"),
        ({"config": "[" * 100_000 + "]" * 100_000}, "malformed"),
        ({"labels": "[" * 100_000}, "malformed"),
        ({"checksum": None}, "missing"),
        ({"checksum": "md5:abc"}, "sha256"),
        ({"checksum": "sha256:" + "0" * 64}, "checksum"),
    ],
)
def test_bad_metadata_values(tmp_path, over, match):
    with pytest.raises(ModelFormatError, match=match):
        load_model(_rechecksummed(tmp_path, **over))


def test_v1_file_loads_with_a_warning(tmp_path):
    from runtime.errors import ModelFormatWarning

    p = _write(tmp_path, format_version="1", checksum=None)
    with pytest.warns(ModelFormatWarning, match="no checksum"):
        d = load_model(p)
    assert d.meta["format_version"] == 1


def test_shipped_models_carry_a_checksum():
    from pathlib import Path

    shipped = sorted(Path(__file__).resolve().parents[1].glob("models/sparsepulse-*/model.safetensors"))
    assert shipped
    for p in shipped:
        assert load_model(p).meta["format_version"] == 2, p
