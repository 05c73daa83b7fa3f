import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression.model import LINEAR_NAMES, BertClassifier
from compression.prune import ones_masks
from compression.weights import load_base_config, load_base_params, load_tokenizer

#: Flax port vs transformers' PyTorch BertModel on the same weights (issue requirement).
HIDDEN_ATOL = 1e-4


@pytest.fixture(scope="module")
def base():
    cfg = load_base_config()
    return cfg, BertClassifier(cfg), load_base_params(cfg)


def test_matches_pytorch_reference(base, fixtures):
    cfg, model, params = base
    ref = np.load(fixtures / "bert_reference.npz")
    _, hidden = model.apply({"params": params}, ref["input_ids"], ref["attention_mask"], return_hidden=True)
    valid = ref["attention_mask"].astype(bool)
    diff = np.abs(np.asarray(hidden) - ref["hidden"])[valid]
    assert diff.max() <= HIDDEN_ATOL, diff.max()


def test_tokenizer_matches_reference(fixtures):
    # the fixture's ids came from the same tokenizer files through transformers + torch
    ref = np.load(fixtures / "bert_reference.npz")
    tok = load_tokenizer()
    sentences = [
        "I love this new phone, the battery lasts forever!",
        "worst customer service ever. never again",
        "The meeting is at 3pm on Tuesday.",
        "ok",
    ]
    enc = tok(sentences, padding=True, return_tensors="np")
    np.testing.assert_array_equal(enc["input_ids"], ref["input_ids"])


def test_padding_does_not_change_outputs(base):
    cfg, model, params = base
    tok = load_tokenizer()
    a = tok(["short one"], return_tensors="np")
    b = tok(["short one", "a much longer sentence that forces padding of the first row"], padding=True, return_tensors="np")
    la = model.apply({"params": params}, a["input_ids"], a["attention_mask"])
    lb = model.apply({"params": params}, b["input_ids"], b["attention_mask"])
    np.testing.assert_allclose(np.asarray(la[0]), np.asarray(lb[0]), atol=1e-5)


def test_masks_hook_zeroes_weights(base):
    cfg, model, params = base
    x = jnp.array([[101, 7592, 2088, 102]])
    m = jnp.ones_like(x)
    ones = ones_masks(params)
    zeros = ones_masks(params, 0.0)
    assert set(ones["layer_0"]) == set(LINEAR_NAMES)
    l_none = model.apply({"params": params}, x, m)
    l_ones = model.apply({"params": params}, x, m, masks=ones)
    l_zero = model.apply({"params": params}, x, m, masks=zeros)
    np.testing.assert_allclose(np.asarray(l_none), np.asarray(l_ones), atol=1e-6)
    assert np.abs(np.asarray(l_zero) - np.asarray(l_none)).max() > 1e-3
    # a zeroed weight gets no gradient through the mask
    def loss(p):
        return model.apply({"params": p}, x, m, masks=zeros).sum()

    g = jax.grad(loss)(params)
    assert float(jnp.abs(g["layer_0"]["query"]["weight"]).max()) == 0.0


def test_dropout_is_active_only_in_training(base):
    cfg, model, params = base
    x = jnp.array([[101, 7592, 2088, 102]])
    m = jnp.ones_like(x)
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    t1 = model.apply({"params": params}, x, m, deterministic=False, rngs={"dropout": k1})
    t2 = model.apply({"params": params}, x, m, deterministic=False, rngs={"dropout": k2})
    assert np.abs(np.asarray(t1) - np.asarray(t2)).max() > 1e-4
