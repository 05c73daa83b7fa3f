import dataclasses

import jax
import numpy as np
import pytest

from compression.prune import apply_masks, cubic_sparsity, mask_sparsity, ones_masks, prune_step, pruning_steps, select_global


def test_cubic_schedule_known_values():
    assert cubic_sparsity(0, 0.3, 0.9, 10, 110) == 0.0  # before start
    assert cubic_sparsity(10, 0.3, 0.9, 10, 110) == pytest.approx(0.3)
    assert cubic_sparsity(60, 0.3, 0.9, 10, 110) == pytest.approx(0.9 - 0.6 * 0.125)  # (1 - 1/2)^3
    assert cubic_sparsity(110, 0.3, 0.9, 10, 110) == pytest.approx(0.9)
    assert cubic_sparsity(500, 0.3, 0.9, 10, 110) == pytest.approx(0.9)
    assert pruning_steps(0, 10, 4) == [0, 4, 8, 10]
    assert pruning_steps(0, 8, 4) == [0, 4, 8]
    assert pruning_steps(0, 2092, 697) == [0, 697, 1394, 2092]  # 2091 is merged into the end, no empty event
    assert pruning_steps(0, 1395, 465) == [0, 465, 930, 1395]
    assert pruning_steps(0, 1, 4) == [0, 1]


def test_global_selection_counts_and_keeps_old():
    scores = [np.array([5.0, 1.0, 3.0]), np.array([0.5, 4.0])]
    already = [np.array([False, False, False]), np.array([True, False])]
    new = select_global(scores, already, 3)
    assert new[0].tolist() == [False, True, True] and new[1].tolist() == [False, False]
    assert sum(x.sum() for x in select_global(scores, already, 1)) == 0  # already at target


def _tiny_params(seed=0, C=8, F=16, L=2):
    rng = np.random.default_rng(seed)
    p = {}
    for i in range(L):
        p[f"layer_{i}"] = {n: {"weight": rng.normal(size=(F if n == "ffn_in" else C, F if n == "ffn_out" else C)).astype(np.float32), "bias": np.zeros(1)} for n in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")}
    return p


@pytest.mark.parametrize("method", ["magnitude", "obs"])
@pytest.mark.parametrize("group", [(1, 1), (1, 4)])
def test_prune_step_reaches_target_and_keeps_old_zeros(method, group):
    params = _tiny_params()
    masks = ones_masks(params)
    rng = np.random.default_rng(1)

    def grad_fn(p, mk, b):
        return jax.tree_util.tree_map(lambda w: rng.normal(size=np.shape(w)).astype(np.float32) * 0.1, p)

    kw = dict(method=method, group_shape=group, grad_fn=grad_fn, batches=iter(range(10**6)), num_grads=16, damp=1e-4, block_size=8, chunk=4)
    p1, m1, r1 = prune_step(params, masks, 0.5, **kw)
    assert r1.sparsity == pytest.approx(0.5, abs=0.01)
    p2, m2, r2 = prune_step(p1, m1, 0.75, **kw)
    assert r2.sparsity == pytest.approx(0.75, abs=0.01)
    for lk in m1:
        for n in m1[lk]:
            assert (m2[lk][n][m1[lk][n] == 0] == 0).all()  # already-pruned stay pruned
            assert (p2[lk][n]["weight"][m2[lk][n] == 0] == 0).all()  # and exactly zero
            if group == (1, 4):
                g = m2[lk][n].reshape(m2[lk][n].shape[0], -1, 4)
                assert ((g.min(-1) == g.max(-1))).all()  # whole 4-blocks
    if method == "magnitude":  # no update of the remaining weights
        for lk in m1:
            for n in m1[lk]:
                keep = m2[lk][n] == 1
                np.testing.assert_array_equal(p2[lk][n]["weight"][keep], params[lk][n]["weight"][keep])


def test_apply_masks_and_sparsity():
    params = _tiny_params()
    masks = ones_masks(params)
    masks["layer_0"]["query"][:] = 0
    out = apply_masks(params, masks)
    assert (out["layer_0"]["query"]["weight"] == 0).all()
    assert mask_sparsity(masks) == pytest.approx(64 / (2 * (4 * 64 + 2 * 128)))
