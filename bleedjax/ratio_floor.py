"""The ratio floor: a data-driven upper bound on every bleed gain between two microphones.

Where only source ``j`` sounds in a time-frequency point, microphone ``i`` holds nothing but ``j``'s
bleed, so ``|X_i| / |X_j|`` is the bleed gain there; everywhere else the ratio is mostly larger. A
low energy-weighted quantile of the ratio over many points is therefore close to the gain from
above. Spectral subtraction's preset ``floor`` caps λ by it
(:mod:`bleedjax.methods.spectral_subtraction`) and KAMIR's ``bound_quantile`` caps Λ by its square
(:mod:`bleedjax.methods.kamir`). Neither paper has it; it is bleedjax's own.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bleedjax._types import Array, Float

BISECTION_STEPS = 24
LOG_RATIO_RANGE = 16.0


def ratio_floor_bound(
    points: Float[Array, "tracks points"], quantile: float, loudest_only: bool = False
) -> Float[Array, "tracks tracks"]:
    """The ratio floor ``u_ij``: the ``quantile`` of ``X_i / X_j`` over the points, each weighted
    by ``X_j²``.

    Where source ``j`` is the only one sounding in a bin, ``X_i / X_j = a_ij`` exactly; where
    source ``i`` (or any other) sounds too, the ratio is mostly larger. A low energy-weighted
    quantile of the ratio therefore sits near the bleed gain even where the two sources' spectra
    are correlated, which is what biases least-squares and divergence fits of the gain upwards at
    weak bleed (two violins at −18 dB: spectral subtraction's λ 2.1× the truth, KAMIR's K4 1.66×).
    Points of zero weight (silence, a batch's padding) do not count, so the bound of a padded
    session equals the unpadded one's. Found by :data:`BISECTION_STEPS` bisection steps on the log
    ratio in ``[−LOG_RATIO_RANGE, LOG_RATIO_RANGE]``, one O(J² P) pass each, without sorting. A
    silent track ``j`` gets ``u_ij = ∞`` (no bound).

    With ``loudest_only``, a point counts for ``u_ij`` only where ``X_j`` is the loudest of all
    tracks. Where another source ``m`` plays alone, ``X_i / X_j = a_im / a_jm``, which at strong
    bleed can be far below ``a_ij`` while ``X_j`` (``j``'s bleed of ``m``) still weighs much; but
    there ``X_m`` is louder than ``X_j``. Where ``j`` plays alone its own microphone is the loudest.
    (Measured on 1 s of six real PHENICX stems at −6 dB: ``u / a`` down to 0.14 without, 0.68–1.0
    with; README "KAMIR: the ratio floor".)

    Args:
        points: ``(J, P)`` magnitudes at the same ``P`` time-frequency points of every track.
        quantile: in ``(0, 1)``.
        loudest_only: weigh only the points where track ``j`` is the loudest.

    Returns:
        ``(J, J)`` bound, row ``i`` for target ``i`` (the diagonal is 1).
    """
    logs = jnp.log(jnp.maximum(points, jnp.finfo(jnp.float32).tiny))
    weights = points**2
    if loudest_only:
        weights = jnp.where(points >= jnp.max(points, axis=0, keepdims=True), weights, 0.0)
    total = jnp.sum(weights, axis=1)
    ratios = logs[:, None, :] - logs[None, :, :]

    def step(_, bracket):
        low, high = bracket
        middle = 0.5 * (low + high)
        below = jnp.sum(jnp.where(ratios <= middle[:, :, None], weights[None], 0.0), axis=-1)
        enough = below >= quantile * total[None, :]
        return jnp.where(enough, low, middle), jnp.where(enough, middle, high)

    num_tracks = points.shape[0]
    start = (
        jnp.full((num_tracks, num_tracks), -LOG_RATIO_RANGE),
        jnp.full((num_tracks, num_tracks), LOG_RATIO_RANGE),
    )
    _, high = jax.lax.fori_loop(0, BISECTION_STEPS, step, start)
    return jnp.where(total[None, :] > 0, jnp.exp(high), jnp.inf)
