"""Accuracy of an estimated bleed matrix against the true mixing matrix.

Conventions: ``mics = A @ sources`` with the true ``J × J`` mixing matrix ``A`` (ones on the
diagonal), and the estimated bleed matrix ``λ`` (zero diagonal; ``λ_ij`` is how much of track
``j`` is subtracted from track ``i``), so the cleaned tracks are ``(I − λ) @ mics``. Perfect
removal needs ``(I − λ) A`` diagonal, i.e. ``I − λ`` equal to ``A⁻¹`` with each row scaled to a
unit diagonal.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bleedjax._types import Array, Float


def _pearson(x: Float[Array, " n"], y: Float[Array, " n"]) -> Float[Array, ""]:
    x = x - jnp.mean(x)
    y = y - jnp.mean(y)
    return jnp.sum(x * y) / jnp.sqrt(jnp.sum(x * x) * jnp.sum(y * y))


def table3_correlation(
    mixing_matrix: Float[Array, "tracks tracks"],
    lam: Float[Array, "tracks tracks"],
    *,
    off_diagonal_only: bool = False,
) -> Float[Array, ""]:
    """Pearson correlation between the entries of ``A⁻¹`` and ``I − λ``.

    The bleed-matrix accuracy measure of Seipel & Lerch (AES 2018, "Multi-track crosstalk
    reduction", Table 3): all ``J²`` entries are flattened and correlated. The diagonal of
    ``I − λ`` is always 1, which inflates the value; ``off_diagonal_only=True`` correlates only
    the ``J² − J`` off-diagonal entries (stricter; not the paper's number).

    Args:
        mixing_matrix: true ``A`` ``(tracks, tracks)``, ``mics = A @ sources``.
        lam: estimated bleed matrix ``λ`` ``(tracks, tracks)`` with zero diagonal.
        off_diagonal_only: correlate only the off-diagonal entries.

    Returns:
        scalar in ``[-1, 1]``; NaN when either set of entries is constant.
    """
    _check_square_pair(mixing_matrix, lam, "mixing_matrix", "lam")
    tracks = mixing_matrix.shape[0]
    inverse = jnp.linalg.inv(mixing_matrix)
    unmix = jnp.eye(tracks, dtype=lam.dtype) - lam
    if off_diagonal_only:
        keep = ~np.eye(tracks, dtype=bool)
        return _pearson(inverse[keep], unmix[keep])
    return _pearson(inverse.reshape(-1), unmix.reshape(-1))


def frobenius_distance(
    estimated: Float[Array, "rows cols"],
    true: Float[Array, "rows cols"],
    *,
    relative: bool = False,
) -> Float[Array, ""]:
    """Frobenius norm ``||E − T||_F`` of the error of a matrix estimate.

    Args:
        estimated: estimate ``E`` ``(rows, cols)``, e.g. a bleed matrix λ.
        true: ground truth ``T`` of the same shape.
        relative: divide by ``||T||_F`` (NaN-free only for a non-zero ``T``).

    Returns:
        scalar distance.
    """
    if estimated.ndim != 2 or estimated.shape != true.shape:
        raise ValueError(f"need two matrices of one shape, got estimated {estimated.shape} and true {true.shape}")
    distance = jnp.linalg.norm(estimated - true)
    if relative:
        return distance / jnp.linalg.norm(true)
    return distance


def _check_square_pair(first, second, first_name: str, second_name: str) -> None:
    if first.ndim != 2 or first.shape[0] != first.shape[1] or first.shape != second.shape:
        raise ValueError(f"need two square matrices of one shape, got {first_name} {first.shape} and "
                         f"{second_name} {second.shape}")
