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

    def grad_fn(p, mk, b):  # gradients of the masked model: zero where a weight is pruned
        return {lk: {n: {"weight": rng.normal(size=np.shape(v["weight"])).astype(np.float32) * 0.1 * np.asarray(mk[lk][n])} for n, v in lp.items()} for lk, lp in p.items()}

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


def _seeded_grads(p, mk, b):
    """Deterministic masked gradients: batch ``b`` always gives the same tree."""
    rng = np.random.default_rng(1000 + b)
    return {lk: {n: {"weight": rng.normal(size=np.shape(v["weight"])) * np.asarray(mk[lk][n])} for n, v in sorted(lp.items())} for lk, lp in sorted(p.items())}


def test_obs_prune_step_equals_a_brute_force_solve():
    """prune_step (method "obs", 4-blocks) against a direct computation on each Fisher block:
    F = λI + (1/m) Σ g gᵀ inverted with numpy, saliency ρ_Q = ½ w_Qᵀ ((F⁻¹)_QQ)⁻¹ w_Q, global
    selection of the lowest ρ, and δw = −Σ_Q F⁻¹ E_Qᵀ ((F⁻¹)_QQ)⁻¹ w_Q summed over the groups pruned in
    the same block (oBERT's simultaneous pruning). Run from a half-pruned state, so the masks matter,
    and checked to include blocks where two groups are pruned together. A sign-flipped or unmasked
    update fails it."""
    from compression.obs import from_grouped, to_grouped
    from compression.prune import matrix_keys

    params = _tiny_params(seed=5, C=8, F=16, L=1)
    group, q, B, m, damp = (1, 4), 4, 8, 24, 1e-2
    kw = dict(method="obs", group_shape=group, grad_fn=_seeded_grads, num_grads=m, damp=damp, block_size=B, chunk=5)
    p1, m1, _ = prune_step(params, ones_masks(params), 0.25, batches=iter(range(10**6)), **kw)
    p2, m2, _ = prune_step(p1, m1, 0.5, batches=iter(range(10**6)), **kw)

    keys = matrix_keys(p1)
    grads = [_seeded_grads(p1, m1, b) for b in range(m)]
    ws, finvs, sal, already = [], [], [], []
    for lk, n in keys:
        w = to_grouped(np.asarray(p1[lk][n]["weight"], np.float64), group)
        G = np.stack([to_grouped(np.asarray(g[lk][n]["weight"], np.float64), group) for g in grads])
        blocks = []
        for s0 in range(0, w.size, B):
            Gb = G[:, s0 : s0 + B]
            blocks.append(np.linalg.inv(damp * np.eye(B) + Gb.T @ Gb / m))
        ws.append(w)
        finvs.append(blocks)
        rho = []
        for gi in range(w.size // q):
            fb, off = blocks[gi * q // B], gi * q % B
            wq = w[gi * q : gi * q + q]
            rho.append(0.5 * wq @ np.linalg.solve(fb[off : off + q, off : off + q], wq))
        sal.append(np.array(rho))
        already.append(to_grouped(np.asarray(m1[lk][n]), group).reshape(-1, q).max(1) == 0)
    total = sum(len(r) for r in sal)
    n_new = int(round(0.5 * total)) - int(sum(a.sum() for a in already))
    cand = sorted((r, i, gi) for i, (rr, a) in enumerate(zip(sal, already)) for gi, r in enumerate(rr) if not a[gi])
    new = [np.zeros_like(a) for a in already]
    for _, i, gi in cand[:n_new]:
        new[i][gi] = True
    pairs = 0
    for i, (lk, n) in enumerate(keys):
        w = ws[i].copy()
        for bi, fb in enumerate(finvs[i]):
            groups = [gi for gi in range(bi * B // q, (bi + 1) * B // q) if new[i][gi]]
            pairs += len(groups) == 2
            for gi in groups:
                off = gi * q % B
                z = np.linalg.solve(fb[off : off + q, off : off + q], ws[i][gi * q : gi * q + q])
                w[bi * B : (bi + 1) * B] -= fb[:, off : off + q] @ z
        pruned = np.repeat(already[i] | new[i], q)
        w[pruned] = 0.0
        expect = from_grouped(w, p1[lk][n]["weight"].shape, group)
        np.testing.assert_allclose(p2[lk][n]["weight"], expect, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(m2[lk][n], from_grouped((~pruned).astype(np.float32), expect.shape, group))
    assert pairs >= 1  # some Fisher block had both of its groups pruned in this step
