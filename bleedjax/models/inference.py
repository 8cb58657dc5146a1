"""From an interference matrix to cleaned tracks: ``Ŝ = pinv(Λ̂) X`` ([1] Sec. 3.2), per band of
STFT bins for a frequency-dependent Λ̂, or a soft mask from Λ̂ in the power domain
(:func:`wiener_spectrogram`), which bleed delays do not disturb.

Microphones mix the sources linearly, ``X = Λ S`` ([1] Eq. 1, ``X``: ``(J, T)`` microphone signals,
``S``: ``(J, T)`` sources), so with the exact Λ the pseudo-inverse returns the sources exactly. For
a frequency-dependent Λ̂ ``(bands, J, J)`` every STFT bin ``f`` of band ``b(f)`` is demixed with
``pinv(Λ̂_b)`` and the result is inverted with :func:`bleedjax.signal.istft`.

Bands (:func:`band_edges_hz`) are contiguous and logarithmically spaced from the model's first STFT
bin to its Nyquist frequency, so they are defined in hertz: a session at another sample rate (or
STFT size) uses the band that contains each of its bins' frequencies, with bins above the model's
Nyquist frequency in the top band.

References:
    [1] Rajesh R, P. Rajan, "Neural networks for interference reduction in multi-track
        recordings", IEEE WASPAA 2023.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import signal
from bleedjax._types import Array, Complex, Float, Int

WIENER_ITERATIONS = 10


def band_edges_hz(bands: int, *, n_fft: int, sample_rate: float) -> np.ndarray:
    """``(bands + 1,)`` band edges in hertz: bin 0 to the first edge in band 0, then logarithmic
    spacing over the bins of an ``n_fft`` STFT at ``sample_rate`` (at least one bin per band)."""
    bins = n_fft // 2 + 1
    if not 1 <= bands <= bins - 1:
        raise ValueError(f"frequency_bands must be in [1, {bins - 1}] for n_fft={n_fft}, got {bands}")
    edges = np.round(np.geomspace(1, bins, bands + 1)).astype(int)
    edges[0] = 0
    for k in range(1, bands + 1):
        edges[k] = max(edges[k], edges[k - 1] + 1)
    overflow = edges[-1] - bins
    if overflow > 0:
        edges[-(overflow + 1) :] = np.arange(bins - overflow, bins + 1)
    return edges * (sample_rate / n_fft)


def band_of_bin(bands: int, *, n_fft: int, sample_rate: float, model_n_fft: int, model_rate: float) -> np.ndarray:
    """``(n_fft // 2 + 1,)`` band index of every bin of an ``n_fft`` STFT at ``sample_rate``, for
    the bands of a model trained with ``model_n_fft`` at ``model_rate`` (:func:`band_edges_hz`)."""
    edges = band_edges_hz(bands, n_fft=model_n_fft, sample_rate=model_rate)
    frequencies = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    return np.clip(np.searchsorted(edges, frequencies, side="right") - 1, 0, bands - 1)


def pinv_each(
    matrices: Float[Array, "*batch rows cols"], *, hermitian: bool = False
) -> Float[Array, "*batch cols rows"]:
    """``jnp.linalg.pinv`` of every matrix, one at a time (``lax.map``; differentiable).

    Call it outside ``vmap``: batched LAPACK kernels on CPU split the batch over XLA's thread
    pool from inside a pool thread (``jax::ParallelBatchMap``), which was seen to deadlock on a
    loaded 2-core machine; one small matrix at a time costs nothing here.
    """
    lead = matrices.shape[:-2]
    flat = matrices.reshape(-1, *matrices.shape[-2:])
    inverses = jax.lax.map(lambda m: jnp.linalg.pinv(m, hermitian=hermitian), flat)
    return inverses.reshape(*lead, matrices.shape[-1], matrices.shape[-2])


def demix(mics: Float[Array, "tracks samples"], unmixing: Float[Array, "tracks tracks"]) -> Float[Array, "tracks samples"]:
    """``Ŝ = pinv(Λ̂) X`` ([1] Sec. 3.2) for one session, given ``unmixing = pinv(Λ̂)``
    (:func:`pinv_each`)."""
    return jnp.matmul(unmixing, mics, precision=jax.lax.Precision.HIGHEST)


def demix_spectrogram(
    spectrogram: Complex[Array, "tracks bins frames"],
    unmixing: Float[Array, "bands tracks tracks"],
    band_index: Int[Array, " bins"],
) -> Complex[Array, "tracks bins frames"]:
    """Every bin ``f`` of ``X`` demixed with ``unmixing[b(f)] = pinv(Λ̂_{b(f)})``."""
    per_bin = unmixing[band_index]
    return jnp.einsum("fij,jft->ift", per_bin.astype(spectrogram.dtype), spectrogram)


def demix_bands(
    mics: Float[Array, "tracks samples"],
    unmixing: Float[Array, "bands tracks tracks"],
    band_index: Int[Array, " bins"],
    *,
    n_fft: int,
    hop: int,
    length: Int[Array, ""] | None = None,
) -> Float[Array, "tracks samples"]:
    """``Ŝ = pinv(Λ̂_b) X`` per band of STFT bins (Hann, ``n_fft``/``hop``), then the iSTFT (of the
    frames of the first ``length`` samples, for a padded session); ``unmixing`` holds
    ``pinv(Λ̂_b)`` (:func:`pinv_each`)."""
    spectrogram = signal.stft(mics, n_fft=n_fft, hop=hop)
    cleaned = demix_spectrogram(spectrogram, unmixing, band_index)
    return signal.istft(cleaned, length=mics.shape[-1], n_fft=n_fft, hop=hop, valid_length=length)


def wiener_spectrogram(
    spectrogram: Complex[Array, "tracks bins frames"],
    lam: Float[Array, "bins tracks tracks"],
    *,
    iterations: int = WIENER_ITERATIONS,
    mean_power: Float[Array, ""] | float | None = None,
) -> Complex[Array, "tracks bins frames"]:
    """Every microphone's own source, ``G_i X_i``, by a soft mask from Λ̂ in the power domain
    (beyond [1], whose ``pinv(Λ̂) X`` cannot undo bleed that arrives late).

    The microphones' powers are modelled as ``V_i = Σ_j A_ij P_j`` with ``A = Λ̂²`` (bin by bin;
    the variance model of KAMIR, Prätzlich et al., ICASSP 2015, Eq. 2), which does not depend on
    delays shorter than a frame. The source powers ``P`` start at ``|X_j|² / A_jj`` and take
    ``iterations`` multiplicative updates of the KL divergence between ``|X|²`` and ``V``
    (Lee & Seung 2001, non-increasing cost), ``P ← P · Aᵀ(|X|² / V) / Aᵀ1``; the Wiener gain of
    microphone ``i`` is ``G_i = A_ii P_i / V_i``.

    Args:
        spectrogram: ``(J, F, T)`` STFT of the microphones.
        lam: ``(F, J, J)`` Λ̂ of every bin.
        iterations: multiplicative updates of ``P``.
        mean_power: the mean of ``|X|²`` over the whole recording, which sets the floor that
            keeps silent bins finite (by default that of ``spectrogram``; a block of a longer
            recording passes the whole one's, so that blocks equal the whole).

    Returns:
        ``(J, F, T)`` the masked STFT (the images of every microphone's own source).
    """
    power = jnp.abs(spectrogram) ** 2
    tiny = 1e-12 * (jnp.mean(power) if mean_power is None else mean_power) + 1e-30
    gains = lam**2
    own = jnp.diagonal(gains, axis1=1, axis2=2).T[:, :, None]
    model = lambda p: jnp.einsum("fij,jft->ift", gains, p) + tiny
    normaliser = jnp.sum(gains, axis=1).T[:, :, None] + tiny

    def update(p, _):
        ratio = power / model(p)
        return p * jnp.einsum("fij,ift->jft", gains, ratio) / normaliser, None

    sources, _ = jax.lax.scan(update, power / (own + tiny), None, length=iterations)
    return own * sources / model(sources) * spectrogram


def wiener_bands(
    mics: Float[Array, "tracks samples"],
    lam: Float[Array, "bands tracks tracks"],
    band_index: Int[Array, " bins"],
    *,
    n_fft: int,
    hop: int,
    length: Int[Array, ""] | None = None,
) -> Float[Array, "tracks samples"]:
    """:func:`wiener_spectrogram` with ``Λ̂_{b(f)}`` for every bin ``f``, then the iSTFT (of the
    frames of the first ``length`` samples, for a padded session)."""
    spectrogram = signal.stft(mics, n_fft=n_fft, hop=hop)
    cleaned = wiener_spectrogram(spectrogram, lam[band_index])
    return signal.istft(cleaned, length=mics.shape[-1], n_fft=n_fft, hop=hop, valid_length=length)


def resample(x: Float[Array, "*batch samples"], num: int) -> Float[Array, "*batch {num}"]:
    """Band-limited resampling to ``num`` samples by zero-padding or truncating the spectrum,
    exactly as ``scipy.signal.resample`` does for real input (including its Nyquist handling)."""
    samples = x.shape[-1]
    if num == samples:
        return x
    shortest = min(num, samples)
    spectrum = jnp.fft.rfft(x, axis=-1)[..., : shortest // 2 + 1]
    if shortest % 2 == 0:
        factor = 2.0 if num < samples else 0.5
        spectrum = spectrum.at[..., -1].multiply(factor)
    return jnp.fft.irfft(spectrum, n=num, axis=-1) * (num / samples)
