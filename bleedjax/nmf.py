"""Non-negative matrix factorisation with β-divergence multiplicative updates.

One non-negative matrix ``V`` (e.g. a ``(bins, frames)`` magnitude spectrogram) is approximated
by ``Λ = W H`` with ``W`` ``(bins, components)`` and ``H`` ``(components, frames)``, minimising

    C(W, H) = Σ_{f,t} m_t d_β(V_ft | Λ_ft) + α Σ_{k,t} m_t H_kt,

the β-divergence [1] (``β = 2`` half the squared Euclidean distance, ``β = 1`` Kullback–Leibler,
``β = 0`` Itakura–Saito) plus an optional L1 penalty ``α`` (``sparsity``) on the activations,
with optional frame weights ``m_t`` (0 for the zero padding of a batched spectrogram). The
multiplicative updates of [1] Sec. 4 / [2] Eqs. (12)–(13),

    W ← W ⊙ ( (m ⊙ V ⊙ Λ^(β−2)) Hᵀ / ((m ⊙ Λ^(β−1)) Hᵀ) )^γ(β)
    H ← H ⊙ ( Wᵀ (m ⊙ V ⊙ Λ^(β−2)) / (Wᵀ (m ⊙ Λ^(β−1)) + α m) )^γ(β),

with ``γ(β) = 1 / (2 − β)`` for ``β < 1`` and 1 for ``1 ≤ β ≤ 2`` ([1] Sec. 4.1), never increase
``C``. ``W`` is updated first, then ``H``, as in ``sklearn.decomposition.NMF(solver='mu')``
(which the tests compare against). Semi-supervised NMF ([3], e.g. a dictionary learned from
examples of an interference) keeps the first ``fixed`` columns of ``W`` as given and updates only
the rest. Everything runs on one matrix as a ``lax.scan`` over iterations; vmap at the call site
over spectrograms.

References:
    [1] C. Févotte, J. Idier, "Algorithms for nonnegative matrix factorization with the
        β-divergence", Neural Computation 23(9), 2011.
    [2] D. D. Lee, H. S. Seung, "Algorithms for non-negative matrix factorization", NIPS 2001.
    [3] P. Smaragdis, B. Raj, M. Shashanka, "Supervised and semi-supervised separation of sounds
        from single-channel mixtures", ICA 2007.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bleedjax._types import Array, Float, PRNGKeyArray

EPS = 1.1920929e-07
"""Floor for ``Λ`` and the denominators (float32 machine epsilon, as scikit-learn's ``EPSILON``);
spectrograms are scaled to a peak of 1 by the callers, so this is about −140 dB."""

BETAS = (0.0, 1.0, 2.0)


class Factorisation(NamedTuple):
    """Result of :func:`nmf`.

    Attributes:
        W: ``(bins, components)`` dictionary; the first ``fixed`` columns as given.
        H: ``(components, frames)`` activations.
        cost: ``(iterations + 1,)`` the cost ``C`` before and after every iteration (zeros when
            not asked for).
    """

    W: Float[Array, "bins components"]
    H: Float[Array, "components frames"]
    cost: Float[Array, " steps"]


def _check_beta(beta: float) -> None:
    if float(beta) not in BETAS:
        raise ValueError(f"beta must be 0 (Itakura-Saito), 1 (Kullback-Leibler) or 2 (Euclidean), got {beta}")


def _gamma(beta: float) -> float:
    return 1.0 / (2.0 - beta) if beta < 1 else 1.0


def beta_divergence(
    V: Float[Array, "bins frames"],
    V_hat: Float[Array, "bins frames"],
    beta: float,
    weights: Float[Array, " frames"] | None = None,
) -> Float[Array, ""]:
    """``Σ m_t d_β(V | V̂)`` ([1] Eq. (4)); ``β = 2`` is half the squared Euclidean distance.

    ``V̂`` is floored at :data:`EPS` for ``β < 2`` (and ``V`` in the logarithms), as the updates do.
    """
    _check_beta(beta)
    if beta == 2:
        elements = 0.5 * (V - V_hat) ** 2
    else:
        V_hat = jnp.maximum(V_hat, EPS)
        ratio = V / V_hat
        if beta == 1:
            elements = jnp.where(V > 0, V * jnp.log(jnp.maximum(ratio, EPS)), 0.0) - V + V_hat
        else:
            elements = ratio - jnp.log(jnp.maximum(ratio, EPS)) - 1.0
    if weights is not None:
        elements = elements * weights[None, :]
    return jnp.sum(elements)


def _ratios(V, Lam, beta, weights):
    """``m ⊙ V ⊙ Λ^(β−2)`` and ``m ⊙ Λ^(β−1)`` (products instead of powers for β ∈ {0, 1, 2});
    for β = 1 the second is ``m`` broadcast over bins, returned as ``None`` so that the callers
    replace its matrix product by a sum (as scikit-learn does)."""
    if beta == 2:
        num, den = V, Lam
    else:
        Lam = jnp.maximum(Lam, EPS)
        if beta == 1:
            num, den = V / Lam, None
        else:
            inverse = 1.0 / Lam
            num, den = V * inverse * inverse, inverse
    if weights is not None:
        num = num * weights[None, :]
        den = None if den is None else den * weights[None, :]
    return num, den


def _frame_weights(weights, frames: int):
    return jnp.ones(frames) if weights is None else weights


def _matmul(a, b):
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def W_sums(
    V: Float[Array, "bins frames"],
    W: Float[Array, "bins components"],
    H: Float[Array, "components frames"],
    *,
    beta: float,
    fixed: int = 0,
    weights: Float[Array, " frames"] | None = None,
) -> tuple[Float[Array, "bins free"], Float[Array, "_ free"]]:
    """The numerator and denominator of the ``W`` update ([1] Sec. 4), sums over frames: the
    sums of column blocks of ``V`` (with their ``H``) add up to those of the whole ``V``."""
    num, den = _ratios(V, _matmul(W, H), beta, weights)
    H_free = H[fixed:]
    if den is None:
        weighted = jnp.sum(H_free * _frame_weights(weights, V.shape[1])[None, :], axis=1)[None, :]
    else:
        weighted = _matmul(den, H_free.T)
    return _matmul(num, H_free.T), weighted


def apply_W_sums(
    W: Float[Array, "bins components"],
    numerator: Float[Array, "bins free"],
    denominator: Float[Array, "_ free"],
    *,
    beta: float,
    fixed: int = 0,
) -> Float[Array, "bins components"]:
    """``W`` with its free columns multiplied by ``(numerator / denominator)^γ(β)``."""
    delta = numerator / jnp.maximum(denominator, EPS)
    delta = delta ** _gamma(beta) if beta < 1 else delta
    return jnp.concatenate([W[:, :fixed], W[:, fixed:] * delta], axis=1)


def update_W(
    V: Float[Array, "bins frames"],
    W: Float[Array, "bins components"],
    H: Float[Array, "components frames"],
    *,
    beta: float,
    fixed: int = 0,
    weights: Float[Array, " frames"] | None = None,
) -> Float[Array, "bins components"]:
    """One multiplicative update of the free columns ``W[:, fixed:]`` ([1] Sec. 4)."""
    numerator, denominator = W_sums(V, W, H, beta=beta, fixed=fixed, weights=weights)
    return apply_W_sums(W, numerator, denominator, beta=beta, fixed=fixed)


def update_H(
    V: Float[Array, "bins frames"],
    W: Float[Array, "bins components"],
    H: Float[Array, "components frames"],
    *,
    beta: float,
    sparsity: float | Float[Array, ""] = 0.0,
    weights: Float[Array, " frames"] | None = None,
) -> Float[Array, "components frames"]:
    """One multiplicative update of ``H`` with the L1 penalty ``sparsity`` ([1] Sec. 4)."""
    num, den = _ratios(V, _matmul(W, H), beta, weights)
    penalty = sparsity if weights is None else sparsity * weights[None, :]
    if den is None:
        weighted = jnp.sum(W, axis=0)[:, None] * _frame_weights(weights, V.shape[1])[None, :]
    else:
        weighted = _matmul(W.T, den)
    delta = _matmul(W.T, num) / jnp.maximum(weighted + penalty, EPS)
    delta = delta ** _gamma(beta) if beta < 1 else delta
    return H * delta


def cost(
    V: Float[Array, "bins frames"],
    W: Float[Array, "bins components"],
    H: Float[Array, "components frames"],
    *,
    beta: float,
    sparsity: float | Float[Array, ""] = 0.0,
    weights: Float[Array, " frames"] | None = None,
) -> Float[Array, ""]:
    """The objective ``C(W, H)`` of the module docstring."""
    activations = H if weights is None else H * weights[None, :]
    return beta_divergence(V, _matmul(W, H), beta, weights) + sparsity * jnp.sum(activations)


@functools.partial(
    jax.jit, static_argnames=("beta", "iterations", "fixed", "update_dictionary", "track_cost")
)
def nmf(
    V: Float[Array, "bins frames"],
    W: Float[Array, "bins components"],
    H: Float[Array, "components frames"],
    *,
    beta: float = 1.0,
    iterations: int = 100,
    sparsity: float | Float[Array, ""] = 0.0,
    fixed: int = 0,
    update_dictionary: bool = True,
    weights: Float[Array, " frames"] | None = None,
    track_cost: bool = False,
) -> Factorisation:
    """Multiplicative-update NMF of one matrix from the initial ``W``, ``H`` (module docstring).

    Args:
        V: ``(bins, frames)`` non-negative matrix (``V > 0`` everywhere for ``β = 0``).
        W: ``(bins, components)`` initial dictionary; its first ``fixed`` columns stay as given.
        H: ``(components, frames)`` initial activations (positive).
        beta: 2 (Euclidean), 1 (Kullback–Leibler) or 0 (Itakura–Saito).
        iterations: number of (W, H) updates, a ``lax.scan``.
        sparsity: L1 weight ``α`` on ``H``.
        fixed: the number of leading dictionary columns that are kept (semi-supervised NMF [3]).
        update_dictionary: ``False`` updates ``H`` only (all of ``W`` fixed).
        weights: optional ``(frames,)`` frame weights ``m`` (0 for padding frames).
        track_cost: also return the cost after every iteration (one more pass per iteration).

    Returns:
        :class:`Factorisation`.
    """
    _check_beta(beta)
    if not 0 <= fixed <= W.shape[1]:
        raise ValueError(f"fixed={fixed} columns, but the dictionary has {W.shape[1]}")
    if W.shape[1] != H.shape[0]:
        raise ValueError(f"W has {W.shape[1]} components but H has {H.shape[0]}")
    objective = functools.partial(cost, beta=beta, sparsity=sparsity, weights=weights)

    def step(carry, _):
        W, H = carry
        if update_dictionary and fixed < W.shape[1]:
            W = update_W(V, W, H, beta=beta, fixed=fixed, weights=weights)
        H = update_H(V, W, H, beta=beta, sparsity=sparsity, weights=weights)
        return (W, H), (objective(V, W, H) if track_cost else jnp.zeros(()))

    (W_out, H_out), costs = jax.lax.scan(step, (W, H), None, length=iterations)
    first = objective(V, W, H) if track_cost else jnp.zeros(())
    return Factorisation(W_out, H_out, jnp.concatenate([first[None], costs]))


def random_init(
    V: Float[Array, "bins frames"], components: int, *, key: PRNGKeyArray
) -> tuple[Float[Array, "bins {components}"], Float[Array, "{components} frames"]]:
    """Random positive ``W`` and ``H`` scaled to the data, as scikit-learn's ``init='random'``:
    ``sqrt(mean(V) / components) |N(0, 1)|``, drawn deterministically from ``key``."""
    return random_init_from_mean(jnp.mean(V), V.shape, components, key=key)


def random_init_from_mean(
    mean: Float[Array, ""] | float, shape: tuple[int, int], components: int, *, key: PRNGKeyArray
) -> tuple[Float[Array, "bins {components}"], Float[Array, "{components} frames"]]:
    """:func:`random_init` of a ``shape = (bins, frames)`` matrix known only by its ``mean``
    (e.g. a spectrogram that is streamed, never in memory whole)."""
    scale = jnp.sqrt(jnp.maximum(mean, EPS) / components)
    key_w, key_h = jax.random.split(key)
    W = scale * jnp.abs(jax.random.normal(key_w, (shape[0], components)))
    H = scale * jnp.abs(jax.random.normal(key_h, (components, shape[1])))
    return W + EPS, H + EPS


def normalise_columns(
    W: Float[Array, "bins components"], H: Float[Array, "components frames"]
) -> tuple[Float[Array, "bins components"], Float[Array, "components frames"]]:
    """Scales every column of ``W`` to unit sum and the matching row of ``H`` inversely, which
    leaves ``W H`` unchanged."""
    norms = jnp.maximum(jnp.sum(W, axis=0), EPS)
    return W / norms[None, :], H * norms[:, None]
