"""A composable, differentiable bleed model: gains, fractional delays and colouration.

For microphone ``i`` and source ``j`` the model has a gain ``g_ij``, a delay ``τ_ij`` in samples
and optional per-band amplitude multipliers ``c_ij(b)`` (colouration, linear in log-frequency
between band centres). Together they form the transfer function

    A_ij(f) = g_ij · c_ij(f) · exp(−2πi f τ_ij),        f in cycles per sample,

and the microphones are ``X_i(f) = Σ_j A_ij(f) S_j(f)``. The parameters live in one pytree,
:class:`BleedParams`; every function here is pure and differentiable in all of them, so a fit is
``jax.grad`` of a cost of :func:`apply` or :func:`apply_stft`, and a batch of sessions is a
``jax.vmap`` over the pytree.

* :func:`apply` works on whole signals (exact band-limited fractional delays: a linear phase ramp
  in the DFT of the zero-padded signal, i.e. ideal sinc interpolation; Laakso et al. 1996 [1],
  Sec. 3.1).
* :func:`apply_stft` works frame by frame on spectrograms in :mod:`bleedjax.signal`'s layout.
  A delay is then a phase ramp per bin, and only the fraction ``ρ_w(τ)`` of the delayed frame
  that overlaps the undelayed one is predictable from the same frame: ``ρ_w(τ) = Σ_n w(n)
  w(n − τ) / Σ_n w(n)²``, the normalised window autocorrelation (exact for white signals), which
  multiplies the transfer function ([2], the multiplicative transfer function approximation).
* :func:`bleed` (gains and delays, no colouration) is the special case that the simulation uses.

References:
    [1] T. I. Laakso, V. Välimäki, M. Karjalainen, U. K. Laine, "Splitting the unit delay",
        IEEE Signal Processing Magazine 13(1), 1996.
    [2] Y. Avargel, I. Cohen, "On multiplicative transfer function approximation in the
        short-time Fourier transform domain", IEEE Signal Processing Letters 14(5), 2007.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import signal
from bleedjax._types import Array, Complex, Float

LOWEST_BAND = 2.0**-9
"""Centre of the lowest colouration band in cycles per sample (86 Hz at 44.1 kHz); the highest
is at Nyquist, and the centres in between are spaced evenly in log-frequency."""


class BleedParams(NamedTuple):
    """Parameters of the bleed model of one session (a pytree; add leading axes to batch).

    Attributes:
        gains: ``(I, J)`` amplitude of source ``j`` at microphone ``i``.
        delays: ``(I, J)`` delay of source ``j`` at microphone ``i`` in samples.
        colour: ``(I, J, B)`` amplitude multipliers at ``B`` band centres (all ones: no
            colouration; ``B = 1``: a flat multiplier).
    """

    gains: Float[Array, "mics sources"]
    delays: Float[Array, "mics sources"]
    colour: Float[Array, "mics sources bands"]


def flat(gains: Float[Array, "mics sources"], delays: Float[Array, "mics sources"], bands: int = 1) -> BleedParams:
    """Parameters without colouration (``colour`` all ones with ``bands`` bands)."""
    gains = jnp.asarray(gains, jnp.float32)
    return BleedParams(gains, jnp.asarray(delays, jnp.float32), jnp.ones((*gains.shape, bands), jnp.float32))


def band_centres(bands: int) -> np.ndarray:
    """``(B,)`` band centres in cycles per sample, log-spaced from :data:`LOWEST_BAND` to 0.5."""
    return np.geomspace(LOWEST_BAND, 0.5, bands).astype(np.float32) if bands > 1 else np.full(1, 0.5, np.float32)


def colour_response(
    colour: Float[Array, "*pairs bands"], frequencies: Float[Array, " freqs"]
) -> Float[Array, "*pairs freqs"]:
    """Per-band multipliers interpolated linearly in log-frequency (constant outside the centres)."""
    bands = colour.shape[-1]
    if bands == 1:
        return jnp.broadcast_to(colour, (*colour.shape[:-1], frequencies.shape[0]))
    where = jnp.log2(jnp.clip(frequencies, LOWEST_BAND, 0.5))
    centres = jnp.log2(jnp.asarray(band_centres(bands)))
    interpolate = lambda values: jnp.interp(where, centres, values)
    flat_colour = colour.reshape(-1, bands)
    return jax.vmap(interpolate)(flat_colour).reshape(*colour.shape[:-1], frequencies.shape[0])


def transfer(params: BleedParams, frequencies: Float[Array, " freqs"]) -> Complex[Array, "mics sources freqs"]:
    """``A_ij(f) = g_ij c_ij(f) exp(−2πi f τ_ij)`` for ``frequencies`` in cycles per sample."""
    magnitude = params.gains[..., None] * colour_response(params.colour, frequencies)
    phase = -2.0 * jnp.pi * frequencies[None, None, :] * params.delays[..., None]
    return magnitude * jnp.exp(1j * phase)


def _fft_length(samples: int, max_delay: int) -> int:
    n = samples + max_delay
    return 1 << (n - 1).bit_length()


@functools.partial(jax.jit, static_argnames=("max_delay",))
def apply(
    params: BleedParams, sources: Float[Array, "sources samples"], *, max_delay: int
) -> Float[Array, "mics samples"]:
    """Microphone signals from whole source signals through the model (exact fractional delays).

    Args:
        params: the model.
        sources: ``(J, samples)`` source signals.
        max_delay: static bound on the delays in samples (sets the zero padding that keeps the
            circular convolution from wrapping around). Delays are clipped to ``[0, max_delay]``:
            outside, the FFT's circular shift would wrap the end of a source onto its start.

    Returns:
        ``(I, samples)`` microphone signals.
    """
    check_params(params, sources.shape[0], max_delay)
    params = params._replace(delays=jnp.clip(params.delays, 0.0, float(max_delay)))
    samples = sources.shape[-1]
    n = _fft_length(samples, max_delay + 1)
    spectra = jnp.fft.rfft(sources, n=n, axis=-1)
    frequencies = jnp.arange(n // 2 + 1, dtype=jnp.float32) / n
    mics = jnp.einsum("ijf,jf->if", transfer(params, frequencies), spectra, precision=jax.lax.Precision.HIGHEST)
    return jnp.fft.irfft(mics, n=n, axis=-1)[..., :samples]


def check_params(params: BleedParams, sources: int, max_delay: int) -> None:
    """Raises ``ValueError`` unless ``params`` holds ``(I, J)`` gains and delays and ``(I, J,
    bands)`` colouration for ``J = sources``, and ``max_delay`` is a non-negative integer (shapes
    only: it works on traced values)."""
    gains = params.gains.shape
    if params.gains.ndim != 2 or gains[1] != sources:
        raise ValueError(f"gains must be (mics, sources) = (I, {sources}), got shape {gains}")
    if params.delays.shape != gains:
        raise ValueError(f"delays must have the gains' shape {gains}, got {params.delays.shape}")
    if params.colour.ndim != 3 or params.colour.shape[:2] != gains:
        raise ValueError(f"colour must be (mics, sources, bands) = {gains + ('bands',)}, got {params.colour.shape}")
    if not isinstance(max_delay, int | np.integer) or max_delay < 0:
        raise ValueError(f"max_delay must be a non-negative integer (samples), got {max_delay!r}")


SERIES_TAIL = 1e-9


@functools.lru_cache(maxsize=16)
def _window_series(window_name: str, n_fft: int) -> np.ndarray:
    """The cosine-series coefficients of :func:`window_correlation`, truncated (float32)."""
    win = signal.window(window_name, n_fft).astype(np.float64)
    power = np.abs(np.fft.rfft(win, 2 * n_fft)) ** 2
    weights = np.full(n_fft + 1, 2.0)
    weights[[0, -1]] = 1.0
    coefficients = weights * power / np.sum(weights * power)
    tail = np.cumsum(coefficients[::-1])[::-1]  # tail[k] = Σ_{m ≥ k} coefficients[m]
    negligible = np.flatnonzero(tail <= SERIES_TAIL)
    terms = max(1, int(negligible[0])) if negligible.size else n_fft + 1
    # float32 subnormals (far sidelobes) would slow every evaluation ~10x on CPU
    kept = coefficients[:terms]
    return np.where(kept < 1e-30, 0.0, kept).astype(np.float32)


def window_correlation(
    delays: Float[Array, "*d"], *, n_fft: int, window_name: signal.WindowName = "hann"
) -> Float[Array, "*d"]:
    """``ρ_w(τ) = Σ_n w(n) w(n − τ) / Σ_n w(n)²`` for fractional ``τ`` (0 beyond ``n_fft``).

    Computed as the cosine series of the window's energy spectrum (zero-padded to ``2 n_fft`` so
    the correlation does not wrap), which interpolates the autocorrelation band-limitedly. The
    series stops where the remaining coefficients sum to at most :data:`SERIES_TAIL` of ρ_w(0)
    = 1, which bounds the error of ρ_w and far under float32's resolution: 54 of 4097 terms for a
    Hann window of 4096, whose sidelobes fall as k⁻³ (a Hamming window's fall as k⁻¹ and keep
    nearly all). The fit evaluates this series at every step, so its length is the fit's cost.
    """
    coefficients = _window_series(window_name, n_fft)
    terms = coefficients.shape[0]
    k = jnp.arange(terms, dtype=jnp.float32).reshape((1,) * delays.ndim + (terms,))
    angles = jnp.pi * k * delays[..., None] / n_fft
    inside = jnp.abs(delays) < n_fft
    coefficients = coefficients.reshape((1,) * delays.ndim + coefficients.shape)
    return jnp.where(inside, jnp.sum(coefficients * jnp.cos(angles), axis=-1), 0.0)


def stft_transfer(
    params: BleedParams, *, n_fft: int, window_name: signal.WindowName = "hann"
) -> Complex[Array, "mics sources bins"]:
    """The transfer function of :func:`apply_stft`: :func:`transfer` at the STFT bins times
    ``ρ_w(τ_ij)``."""
    frequencies = jnp.arange(n_fft // 2 + 1, dtype=jnp.float32) / n_fft
    overlap = window_correlation(params.delays, n_fft=n_fft, window_name=window_name)
    return transfer(params, frequencies) * overlap[..., None]


def apply_stft(
    params: BleedParams,
    spectra: Complex[Array, "sources bins frames"],
    *,
    n_fft: int,
    window_name: signal.WindowName = "hann",
) -> Complex[Array, "mics bins frames"]:
    """Microphone spectrograms from source spectrograms, frame by frame (module docstring).

    Args:
        params: the model.
        spectra: ``(J, n_fft // 2 + 1, frames)`` from :func:`bleedjax.signal.stft`.
        n_fft, window_name: of that STFT.

    Returns:
        ``(I, bins, frames)``: the part of each microphone's STFT that the same frames of the
        sources predict.
    """
    transfer_matrix = stft_transfer(params, n_fft=n_fft, window_name=window_name)
    return jnp.einsum("ijf,jft->ift", transfer_matrix, spectra, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("max_delay",))
def fractional_delay(
    x: Float[Array, " samples"], delay: Float[Array, ""], *, max_delay: int
) -> Float[Array, " samples"]:
    """Delays one signal by a (fractional, non-negative) number of samples.

    Args:
        x: ``(samples,)`` signal.
        delay: delay in samples, ``0 <= delay <= max_delay`` (clipped to it).
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
    """Microphone signals from sources through gains and fractional delays (in samples):
    :func:`apply` without colouration.

    Args:
        sources: ``(J, samples)`` dry source signals.
        gains: ``(I, J)`` amplitude of source ``j`` at microphone ``i``.
        delays: ``(I, J)`` delay of source ``j`` at microphone ``i`` in samples, in
            ``[0, max_delay]`` (clipped to it, :func:`apply`).
        max_delay: static bound on the delays, in samples (sets the zero padding).

    Returns:
        ``(I, samples)`` microphone signals.
    """
    return apply(BleedParams(gains, delays, jnp.ones((*gains.shape, 1), gains.dtype)), sources, max_delay=max_delay)


def max_delay_samples(delays: np.ndarray) -> int:
    """Static padding bound for :func:`bleed` from concrete delays (in samples)."""
    return int(np.ceil(float(np.max(delays, initial=0.0)))) + 1
