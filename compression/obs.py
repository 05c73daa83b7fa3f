"""Second-order (Optimal Brain Surgeon) pruning machinery of oBERT.

Kurtic et al., "The Optimal BERT Surgeon: Scalable and Accurate Second-Order Pruning for Large
Language Models", EMNLP 2022 (arXiv:2203.07259), section 3.

Symbols -> names:
    F       empirical Fisher, F = λI + (1/m) Σᵢ gᵢgᵢᵀ, block-diagonal   -> ``finv`` holds F⁻¹ per block
    λ       dampening                                                 -> ``damp``
    m       number of gradients                                       -> ``num_grads``
    B       Fisher block size (consecutive weights)                   -> ``block_size``
    Q       a pruning group: ``group_shape = (r, c)`` weights of one matrix (r output rows × c inputs);
            (1, 1) is unstructured, (1, 4) the 4-block along the input (dot-product) dimension
    ρ_Q     saliency ½ w_Qᵀ (F⁻¹_QQ)⁻¹ w_Q                            -> :func:`saliency`
    δw      optimal update −F⁻¹ E_Qᵀ (F⁻¹_QQ)⁻¹ w_Q                    -> :func:`obs_update`

Layout: every pruned matrix ``W (out, in)`` is re-ordered by :func:`to_grouped` so that each group
of ``q = r*c`` weights is contiguous; Fisher blocks are ``B`` consecutive weights of that order
(``B`` a multiple of ``q``), so a group never straddles two Fisher blocks. For (1, c) groups the
order is plain row-major.

Complexity for d pruned weights: memory O(d·B) for F⁻¹; the Woodbury accumulation costs
O(d·B·m) flops, done k gradients at a time (rank-k Woodbury, exact) so F⁻¹ is streamed m/k times
instead of m times; saliency and update cost O(d·B) (+ O(d·q²) for the q×q solves).
All Fisher arithmetic is float64 (x64 enabled locally): the recursion accumulates m terms whose
scale spans 1/λ.
"""
from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp


__all__ = [
    "to_grouped",
    "from_grouped",
    "fisher_inverse_init",
    "woodbury_rank1",
    "woodbury_update",
    "saliency",
    "obs_update",
]


def to_grouped(w_oi: np.ndarray, group_shape: tuple[int, int]) -> np.ndarray:
    """Flatten ``W (out, in)`` so that each (r, c) group is contiguous: (out/r, in/c, r, c) order."""
    r, c = group_shape
    o, i = w_oi.shape
    if o % r or i % c:
        raise ValueError(f"matrix {w_oi.shape} is not divisible into {group_shape} groups")
    return w_oi.reshape(o // r, r, i // c, c).transpose(0, 2, 1, 3).reshape(-1)


def from_grouped(flat: np.ndarray, shape: tuple[int, int], group_shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`to_grouped`."""
    r, c = group_shape
    o, i = shape
    return flat.reshape(o // r, i // c, r, c).transpose(0, 2, 1, 3).reshape(o, i)


def fisher_inverse_init(d: int, block_size: int, damp: float) -> jax.Array:
    """F⁻¹₀ = I/λ as ``(d/B, B, B)`` float64 blocks."""
    if d % block_size:
        raise ValueError(f"{d} weights do not split into blocks of {block_size}")
    with jax.enable_x64(True):
        eye = jnp.eye(block_size, dtype=jnp.float64) / damp
        return jnp.broadcast_to(eye, (d // block_size, block_size, block_size)).copy()


def woodbury_rank1(finv_nbb: jax.Array, g_d: jax.Array, num_grads: int) -> jax.Array:
    """One step of the paper's recursion, per block (reference implementation):

        F⁻¹ᵢ = F⁻¹ᵢ₋₁ − (F⁻¹ᵢ₋₁gᵢ)(F⁻¹ᵢ₋₁gᵢ)ᵀ / (m + gᵢᵀF⁻¹ᵢ₋₁gᵢ)
    """
    with jax.enable_x64(True):
        nb, B, _ = finv_nbb.shape
        g_nb = jnp.asarray(g_d, jnp.float64).reshape(nb, B)
        u_nb = jnp.einsum("nij,nj->ni", finv_nbb, g_nb)  # F⁻¹g (F⁻¹ symmetric)
        den_n = num_grads + jnp.einsum("ni,ni->n", g_nb, u_nb)
        return finv_nbb - jnp.einsum("ni,nj->nij", u_nb, u_nb) / den_n[:, None, None]


@jax.jit
def _woodbury_k(finv_nbb, g_knb, m):
    # Rank-k Woodbury for F_new = F + (1/m) GᵀG (G: k rows), per block n:
    #   F_new⁻¹ = F⁻¹ − U (m I_k + G U)⁻¹ Uᵀ,   U = F⁻¹Gᵀ  (B, k)
    # identical to k successive rank-1 steps of the recursion above.
    u_nbk = jnp.einsum("nij,knj->nik", finv_nbb, g_knb)
    k = g_knb.shape[0]
    s_nkk = m * jnp.eye(k, dtype=finv_nbb.dtype) + jnp.einsum("kni,nil->nkl", g_knb, u_nbk)
    s_nkk = 0.5 * (s_nkk + jnp.swapaxes(s_nkk, 1, 2))
    x_nkb = jnp.linalg.solve(s_nkk, jnp.swapaxes(u_nbk, 1, 2))  # (m I + G U)⁻¹ Uᵀ
    finv_nbb = finv_nbb - jnp.einsum("nik,nkj->nij", u_nbk, x_nkb)
    return 0.5 * (finv_nbb + jnp.swapaxes(finv_nbb, 1, 2))


def woodbury_update(finv_nbb: jax.Array, g_kd: np.ndarray, num_grads: int) -> jax.Array:
    """Add k gradients (rows of ``g_kd``) to F⁻¹ at once (exact rank-k Woodbury), float64."""
    with jax.enable_x64(True):
        nb, B, _ = finv_nbb.shape
        g = jnp.asarray(np.asarray(g_kd, np.float64).reshape(-1, nb, B))
        return _woodbury_k(finv_nbb, g, jnp.float64(num_grads))


def _group_blocks(finv_nbb: jax.Array, q: int):
    # diagonal q×q sub-blocks F⁻¹_QQ of every group: (nb, B/q, q, q)
    nb, B, _ = finv_nbb.shape
    f = finv_nbb.reshape(nb, B // q, q, B // q, q)
    idx = jnp.arange(B // q)
    return f[:, idx, :, idx, :].transpose(1, 0, 2, 3)


def saliency(w_d: np.ndarray, finv_nbb: jax.Array, q: int) -> np.ndarray:
    """ρ_Q = ½ w_Qᵀ (F⁻¹_QQ)⁻¹ w_Q for every group of ``q`` consecutive weights -> (d/q,) float64.

    For q = 1 this is the unstructured ρⱼ = wⱼ² / (2 [F⁻¹]ⱼⱼ).
    """
    with jax.enable_x64(True):
        nb, B, _ = finv_nbb.shape
        if B % q:
            raise ValueError(f"block size {B} is not a multiple of the group size {q}")
        w = jnp.asarray(np.asarray(w_d, np.float64).reshape(nb, B // q, q))
        fqq = _group_blocks(finv_nbb, q)
        z = jnp.linalg.solve(fqq, w[..., None])[..., 0]
        return np.asarray(0.5 * jnp.sum(w * z, axis=-1)).reshape(-1)


def obs_update(w_d: np.ndarray, finv_nbb: jax.Array, prune_groups: np.ndarray, q: int) -> np.ndarray:
    """Weights after pruning the groups flagged in ``prune_groups`` ((d/q,) bool) with the OBS update.

    Per group Q:  δw = −F⁻¹ E_Qᵀ (F⁻¹_QQ)⁻¹ w_Q.  The updates of all groups pruned in the same
    Fisher block are summed (each computed as if it were pruned alone, as oBERT does for
    simultaneous pruning); then the pruned weights are set to exactly zero.
    """
    with jax.enable_x64(True):
        nb, B, _ = finv_nbb.shape
        w = jnp.asarray(np.asarray(w_d, np.float64).reshape(nb, B // q, q))
        sel = jnp.asarray(np.asarray(prune_groups, bool).reshape(nb, B // q, 1))
        fqq = _group_blocks(finv_nbb, q)
        z = jnp.where(sel, jnp.linalg.solve(fqq, w[..., None])[..., 0], 0.0)  # (F⁻¹_QQ)⁻¹ w_Q
        dw = -jnp.einsum("nij,nj->ni", finv_nbb, z.reshape(nb, B))  # −F⁻¹ E_Qᵀ (...)
        new = w.reshape(nb, B) + dw
        new = jnp.where(sel.repeat(q, axis=-1).reshape(nb, B), 0.0, new)
        return np.asarray(new).reshape(-1)
