"""compression export -> runtime: the C encoder reproduces the JAX INT8 simulation (quantize=True)."""
import jax
import numpy as np
import pytest

from compression.export import export_runtime_model
from compression.model import BertClassifier, BertConfig, fake_quant_rows
from compression.prune import ones_masks
from runtime.format import load_model
from runtime.native import NativeModel

#: C (float32, approximated exp/erf) vs JAX with the same integer accumulation
PROB_ATOL = 2e-4


def test_fake_quant_matches_runtime_quantisation():
    from runtime.format import quantize_symmetric

    rng = np.random.default_rng(0)
    w = rng.normal(size=(2000, 16)).astype(np.float32)  # many rows: catches an inexact scale division
    w[1] = 0
    q, s = quantize_symmetric(w)
    np.testing.assert_array_equal(np.asarray(fake_quant_rows(w)), (q * s[:, None]).astype(np.float32))
    g = jax.grad(lambda x: fake_quant_rows(x).sum())(w)
    np.testing.assert_array_equal(np.asarray(g), np.ones_like(w))  # straight-through


def test_c_reproduces_jax_quantised_model(tmp_path):
    cfg = BertConfig(vocab_size=200, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position=48)
    model = BertClassifier(cfg)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32), np.ones((1, 8), np.int32))["params"]
    params = jax.tree_util.tree_map(lambda a: np.asarray(a) * 10 if np.ndim(a) == 2 else np.asarray(a), dict(params))
    masks = ones_masks(params)
    rng = np.random.default_rng(1)
    for lk in masks:
        for n in masks[lk]:
            m = masks[lk][n].reshape(masks[lk][n].shape[0], -1, 4)
            m *= (rng.random(m.shape[:2]) > 0.7)[..., None]
    export_runtime_model(params, cfg, tmp_path, max_len=48, demojize=True, masks=masks)
    data = load_model(tmp_path)
    assert data.encoder_sparsity() == pytest.approx(0.7, abs=0.05)
    native = NativeModel(data)
    qmodel = BertClassifier(cfg, quantize=True, exact_int=True)
    lens = [1, 5, 12, 48, 30]
    seqs = [rng.integers(0, 200, n).astype(np.int32) for n in lens]
    probs_c = native.forward(np.concatenate(seqs), np.array(lens))
    for s, pc in zip(seqs, probs_c):
        logits = qmodel.apply({"params": params}, s[None], np.ones((1, len(s)), np.int32), masks=masks)
        pj = np.asarray(jax.nn.softmax(logits[0]))
        np.testing.assert_allclose(pc, pj, atol=PROB_ATOL)


def test_ulp_perturbation_and_noise_floor(tmp_path):
    from compression.runtime_eval import noise_floor, ulp_perturbed

    cfg = BertConfig(vocab_size=200, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position=48)
    params = BertClassifier(cfg).init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32), np.ones((1, 8), np.int32))["params"]
    export_runtime_model(jax.tree_util.tree_map(np.asarray, dict(params)), cfg, tmp_path, max_len=48, demojize=True)
    data = load_model(tmp_path)
    before = {k: v.copy() for k, v in data.tensors.items()}
    up, down = ulp_perturbed(data, 1), ulp_perturbed(data, -1)
    gammas = [k for k in data.tensors if k.endswith("ln.gamma")]
    assert len(gammas) == 1 + 2 * cfg.num_layers
    for k in data.tensors:
        np.testing.assert_array_equal(data.tensors[k], before[k])  # the original is untouched
        if k in gammas:
            assert (up.tensors[k] > data.tensors[k]).all() and (down.tensors[k] < data.tensors[k]).all()
            np.testing.assert_array_equal(np.nextafter(down.tensors[k], np.float32(np.inf)), data.tensors[k])
        else:
            assert up.tensors[k] is data.tensors[k]
    rng = np.random.default_rng(3)
    ids = [rng.integers(0, 200, n).astype(np.int32) for n in (3, 17, 40)]
    probs = np.concatenate([NativeModel(data).forward(x, np.array([len(x)])) for x in ids])
    nf = noise_floor(data, ids, probs)
    assert 0.0 <= nf["max_abs_dprob"] < 0.05 and nf["p999_abs_dprob"] <= nf["max_abs_dprob"] and 0.0 <= nf["agreement"] <= 1.0
