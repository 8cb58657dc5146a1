"""A differentiable linear bleed model: gains and fractional delays from sources to microphones.

``mics[i] = sum_j gains[i, j] * delay(sources[j], delays[i, j])``

Delays are applied as exact band-limited fractional delays (a linear phase ramp in the DFT of
the zero-padded signal, i.e. ideal sinc interpolation; Laakso et al. 1996, "Splitting the unit
delay", Sec. 3.1), so the model is smooth in both gains and delays and ``jax.grad`` flows to
either.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax._types import Array, Float


def _fft_length(samples: int, max_delay: int) -> int:
    n = samples + max_delay
    return 1 << (n - 1).bit_length()


def _phase_ramps(delays: Float[Array, "*d"], fft_length: int):
    """``exp(-2 pi i f d / N)`` for every delay, ``(*d, fft_length // 2 + 1)``."""
    freqs = jnp.arange(fft_length // 2 + 1, dtype=jnp.float32) / fft_length
    freqs = freqs.reshape((1,) * delays.ndim + freqs.shape)
    return jnp.exp(-2j * jnp.pi * freqs * delays[..., None])


@functools.partial(jax.jit, static_argnames=("max_delay",))
def fractional_delay(
    x: Float[Array, " samples"], delay: Float[Array, ""], *, max_delay: int
) -> Float[Array, " samples"]:
    """Delays one signal by a (fractional, non-negative) number of samples.

    Args:
        x: ``(samples,)`` signal.
        delay: delay in samples, ``0 <= delay <= max_delay``.
        max_delay: the largest delay the call must support (zero padding against wrap-around).

    Returns:
        ``(samples,)`` delayed signal, truncated to the input length.
    """
    return bleed(x[None], jnp.ones((1, 1)), delay[None, None], max_delay=max_delay)[0]


@functools.partial(jax.jit, static_argnames=("max_delay",))
def bleed(
    sources: Float[Array, "sources samples"],
    gains: Float[Array, "mics sources"],
    delays: Float[Array, "mics sources"],
    *,
    max_delay: int,
) -> Float[Array, "mics samples"]:
    """Microphone signals from sources through gains and fractional delays (in samples).

    Args:
        sources: ``(J, samples)`` dry source signals.
        gains: ``(I, J)`` amplitude of source ``j`` at microphone ``i``.
        delays: ``(I, J)`` delay of source ``j`` at microphone ``i`` in samples, in
            ``[0, max_delay]``.
        max_delay: static bound on the delays, in samples (sets the zero padding).

    Returns:
        ``(I, samples)`` microphone signals.
    """
    samples = sources.shape[-1]
    n = _fft_length(samples, max_delay + 1)
    spectra = jnp.fft.rfft(sources, n=n, axis=-1)
    transfer = gains[..., None] * _phase_ramps(delays, n)
    mics = jnp.einsum("ijf,jf->if", transfer, spectra)
    return jnp.fft.irfft(mics, n=n, axis=-1)[..., :samples]


def max_delay_samples(delays: np.ndarray) -> int:
    """Static padding bound for :func:`bleed` from concrete delays (in samples)."""
    return int(np.ceil(float(np.max(delays, initial=0.0)))) + 1
