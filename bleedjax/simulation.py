"""Linear bleed simulation after Seipel & Lerch (AES 2018), Sec. 3.1.

The mixing matrix ``A`` maps sources to microphones, ``mics = A @ sources``: ones on the diagonal,
symmetric off-diagonal gains uniform in ``[0, 10^(dB/20)]`` for a maximum crosstalk of ``dB``.
Free-field delays follow from the gains through ``a = 1 / r^2`` with a 1 m reference (so the own
source at 1 m has delay 0), and every track is normalised by the loudest microphone.

References:
    [1] F. Seipel, A. Lerch, "Multi-track crosstalk reduction", AES 144th Convention, 2018.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bleedjax import bleed_model
from bleedjax._types import Array, Float, PRNGKeyArray, Real

SPEED_OF_SOUND = 343.0
PEAK_AFTER_NORMALISATION = 0.9


class SimulatedBleed(NamedTuple):
    """A simulated session.

    Attributes:
        mics: ``(I, samples)`` microphone tracks with bleed.
        references: ``(I, samples)`` what each microphone records without bleed.
        gains: ``(I, J)`` mixing matrix ``A``.
        delays: ``(I, J)`` delays in samples.
    """

    mics: Float[Array, "mics samples"]
    references: Float[Array, "mics samples"]
    gains: Float[Array, "mics sources"]
    delays: Float[Array, "mics sources"]


@functools.partial(jax.jit, static_argnames=("num_tracks",))
def seipel_mixing_matrix(
    *, key: PRNGKeyArray, num_tracks: int, max_crosstalk_db: Real[Array, ""] | float
) -> Float[Array, "{num_tracks} {num_tracks}"]:
    """Symmetric ``(J, J)`` mixing matrix of [1] Sec. 3.1.

    Args:
        key: PRNG key.
        num_tracks: ``J``.
        max_crosstalk_db: maximum crosstalk level, e.g. -6, -12 or -18.

    Returns:
        ``A`` with ``A[i, i] = 1`` and ``A[i, j] = A[j, i] ~ U(0, 10^(dB/20))``.
    """
    upper = 10.0 ** (jnp.asarray(max_crosstalk_db, jnp.float32) / 20.0)
    draws = jax.random.uniform(key, (num_tracks, num_tracks), maxval=upper)
    strict_upper = jnp.triu(draws, k=1)
    return strict_upper + strict_upper.T + jnp.eye(num_tracks)


def free_field_delays(
    gains: Float[Array, "mics sources"],
    *,
    sample_rate: float,
    min_gain: float = 1e-3,
    speed_of_sound: float = SPEED_OF_SOUND,
) -> Float[Array, "mics sources"]:
    """Delays in samples from amplitudes through ``a = 1 / r^2`` with a 1 m reference ([1]).

    ``r = a^(-1/2)`` metres and the delay is ``(r - 1 m) / c``, so unit gains have no delay. Gains
    below ``min_gain`` are treated as ``min_gain`` (a bound on the distance, 31.6 m by default).
    """
    distance = jax.lax.rsqrt(jnp.clip(gains, min_gain, None))
    return jnp.clip(distance - 1.0, 0.0, None) / speed_of_sound * sample_rate


def normalise_by_loudest(
    mics: Float[Array, "mics samples"], references: Float[Array, "mics samples"]
) -> tuple[Float[Array, "mics samples"], Float[Array, "mics samples"]]:
    """Scales mics and references by one factor so the loudest microphone peaks at 0.9 ([1])."""
    peak = jnp.max(jnp.abs(mics))
    scale = jnp.where(peak > 0, PEAK_AFTER_NORMALISATION / jnp.where(peak > 0, peak, 1.0), 1.0)
    return mics * scale, references * scale


def simulate_linear(
    sources: Float[Array, "sources samples"],
    *,
    key: PRNGKeyArray,
    max_crosstalk_db: float,
    sample_rate: float,
    with_delays: bool = True,
) -> SimulatedBleed:
    """Linear bleed with optional free-field delays, normalised by the loudest track ([1] 3.1).

    Args:
        sources: ``(J, samples)`` dry stems; microphone ``i`` is the close microphone of source
            ``i``.
        key: PRNG key for the mixing matrix.
        max_crosstalk_db: maximum crosstalk in dB (-6, -12, -18 in [1]).
        sample_rate: in Hz, to turn distances into sample delays.
        with_delays: apply free-field delays; ``False`` gives the instantaneous mix ``A @ s``.

    Returns:
        :class:`SimulatedBleed`. The references are the sources themselves (unit diagonal, no
        delay), scaled with the mics.
    """
    if sources.ndim != 2:
        raise ValueError(f"need (sources, samples) stems, got shape {sources.shape}")
    num_tracks = sources.shape[0]
    gains = seipel_mixing_matrix(key=key, num_tracks=num_tracks, max_crosstalk_db=max_crosstalk_db)
    if with_delays:
        delays = free_field_delays(gains, sample_rate=sample_rate)
    else:
        delays = jnp.zeros_like(gains)
    max_delay = bleed_model.max_delay_samples(jax.device_get(delays))
    mics = bleed_model.bleed(sources, gains, delays, max_delay=max_delay)
    mics, references = normalise_by_loudest(mics, sources)
    return SimulatedBleed(mics, references, gains, delays)
