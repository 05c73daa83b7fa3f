import itertools

import numpy as np
import pytest

from compression.obs import (
    fisher_inverse_init,
    from_grouped,
    obs_update,
    saliency,
    to_grouped,
    woodbury_rank1,
    woodbury_update,
)

#: float64 Woodbury vs direct inverse
WOODBURY_RTOL = 1e-9


def _direct_inverse(G, damp, B):
    m, d = G.shape
    out = []
    for s in range(0, d, B):
        g = G[:, s : s + B]
        out.append(np.linalg.inv(damp * np.eye(B) + g.T @ g / m))
    return np.stack(out)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_woodbury_equals_direct_inverse(k):
    rng = np.random.default_rng(0)
    m, d, B, damp = 24, 48, 8, 1e-2
    G = rng.normal(size=(m, d)) * 0.3
    direct = _direct_inverse(G, damp, B)
    seq = fisher_inverse_init(d, B, damp)
    for g in G:
        seq = woodbury_rank1(seq, g, m)
    np.testing.assert_allclose(np.asarray(seq), direct, rtol=WOODBURY_RTOL, atol=1e-9 * np.abs(direct).max())
    blk = fisher_inverse_init(d, B, damp)
    for s in range(0, m, k):
        blk = woodbury_update(blk, G[s : s + k], m)
    np.testing.assert_allclose(np.asarray(blk), direct, rtol=WOODBURY_RTOL, atol=1e-9 * np.abs(direct).max())


def test_grouped_layout_roundtrip_and_contiguity():
    w = np.arange(8 * 12).reshape(8, 12)
    for gs in [(1, 1), (1, 4), (4, 1), (2, 2)]:
        flat = to_grouped(w, gs)
        np.testing.assert_array_equal(from_grouped(flat, w.shape, gs), w)
    g = to_grouped(w, (1, 4)).reshape(-1, 4)
    np.testing.assert_array_equal(g[0], [0, 1, 2, 3])  # 4 consecutive inputs of row 0
    g = to_grouped(w, (4, 1)).reshape(-1, 4)
    np.testing.assert_array_equal(g[0], [0, 12, 24, 36])  # 4 rows of column 0
    with pytest.raises(ValueError):
        to_grouped(np.zeros((6, 10)), (1, 4))


def _quadratic(d, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    H = A @ A.T / d + 0.5 * np.eye(d)  # known Hessian
    return H, rng.normal(size=d)


@pytest.mark.parametrize("q", [1, 4])
def test_obs_reaches_constrained_optimum_on_quadratic(q):
    # L(w) = ½ (w − w*)ᵀ H (w − w*), at its minimum w*. Prune group Q (w_Q = 0):
    # closed form: min over the rest of L s.t. w_Q = 0; loss increase = ½ w_Qᵀ ((H⁻¹)_QQ)⁻¹ w_Q = ρ_Q.
    d = 8
    H, w_star = _quadratic(d, seed=q)
    finv = np.linalg.inv(H)[None]  # one Fisher block holding the exact inverse Hessian
    rho = saliency(w_star, finv, q)
    Qi = 1  # prune the second group
    sel = np.zeros(d // q, bool)
    sel[Qi] = True
    w_new = obs_update(w_star, finv, sel, q)
    Q = np.arange(Qi * q, (Qi + 1) * q)
    R = np.setdiff1d(np.arange(d), Q)
    # closed form: w_R = w*_R + H_RR⁻¹ H_RQ w*_Q  (stationarity of L in w_R with w_Q = 0)
    w_cf = np.zeros(d)
    w_cf[R] = w_star[R] + np.linalg.solve(H[np.ix_(R, R)], H[np.ix_(R, Q)] @ w_star[Q])
    np.testing.assert_allclose(w_new, w_cf, atol=1e-10)
    assert (w_new[Q] == 0).all()
    loss = 0.5 * (w_new - w_star) @ H @ (w_new - w_star)
    np.testing.assert_allclose(loss, rho[Qi], rtol=1e-10)


def test_block_saliency_equals_brute_force():
    rng = np.random.default_rng(3)
    B, q, nb = 8, 4, 3
    mats = []
    for _ in range(nb):
        A = rng.normal(size=(B, B))
        mats.append(A @ A.T + np.eye(B))
    finv = np.stack(mats)
    w = rng.normal(size=nb * B)
    rho = saliency(w, finv, q)
    for n, g in itertools.product(range(nb), range(B // q)):
        idx = slice(g * q, (g + 1) * q)
        wq = w[n * B : (n + 1) * B][idx]
        brute = 0.5 * wq @ np.linalg.inv(finv[n][idx, idx]) @ wq
        np.testing.assert_allclose(rho[n * (B // q) + g], brute, rtol=1e-10)
    # unstructured special case
    rho1 = saliency(w, finv, 1)
    diag = np.concatenate([np.diag(f) for f in finv])
    np.testing.assert_allclose(rho1, w**2 / (2 * diag), rtol=1e-12)
