"""Time delays between microphones by the generalised cross-correlation with phase transform.

GCC-PHAT (Knapp & Carter 1976 [1], Eq. 2 with the PHAT weighting ``1 / |G_ij|``): the cross-power
spectrum of two microphones, summed over STFT frames, is whitened (divided by its magnitude
to the power ``β``: PHAT-β, Donohue et al. 2007 [2]; ``β = 1`` is PHAT), and its inverse DFT peaks at the lag where one microphone hears the other. With ``x_i = s_i + g
D_τ(s_j)`` and ``x_j = s_j + g' D_τ'(s_i)`` the correlation of ``x_i`` against ``x_j`` peaks at
``+τ`` (source ``j`` arriving late at microphone ``i``) and at ``−τ'``, so the delay of ``j``
into ``i`` is the peak among the non-negative lags. The correlation is evaluated on an
``upsample``-times finer grid (zero-padded inverse DFT) and the peak refined by a parabola
through its neighbours. ``β < 1`` keeps some weight on the bins where the pair is loud: full
whitening lets faint bins that the sources share at lag 0 (a common noise floor, e.g. a
synthesiser's) outvote the bleed.

References:
    [1] C. H. Knapp, G. C. Carter, "The generalized correlation method for estimation of time
        delay", IEEE Trans. Acoustics, Speech and Signal Processing 24(4), 1976.
    [2] K. D. Donohue, J. Hannemann, H. G. Dietz, "Performance of phase transform for detecting
        sound sources with microphone arrays in reverberant and noisy environments", Signal
        Processing 87(7), 2007.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bleedjax._types import Array, Complex, Float, Int

EPS = 1e-20


def cross_spectra(spectra: Complex[Array, "tracks bins frames"]) -> Complex[Array, "tracks tracks bins"]:
    """``G_ij(f) = Σ_t X_i(f, t) conj(X_j(f, t))`` for every pair."""
    return jnp.einsum("ift,jft->ijf", spectra, jnp.conj(spectra), precision=jax.lax.Precision.HIGHEST)


def correlation(
    cross: Complex[Array, " bins"], *, upsample: int = 4, beta: float = 0.8
) -> Float[Array, " lags"]:
    """The PHAT-β weighted cross-correlation of one pair on a ``1 / upsample``-sample grid.

    Args:
        cross: ``(n_fft // 2 + 1,)`` cross-power spectrum ``G_ij`` of the pair.
        upsample: evaluation grid of ``1 / upsample`` samples.
        beta: the PHAT-β exponent.

    Returns:
        ``(n_fft · upsample,)`` circular correlation (lag ``k / upsample`` at index ``k``), scaled
        so that a pure delay peaks at 1 ([1] Eq. 2, [2]).
    """
    n_fft = 2 * (cross.shape[-1] - 1)
    magnitude = jnp.abs(cross)
    whitened = cross / (magnitude**beta + EPS)
    whitened = whitened / (jnp.sum(magnitude ** (1.0 - beta)) / cross.shape[-1] + EPS)
    fine = n_fft * upsample
    padded = jnp.zeros(fine // 2 + 1, whitened.dtype).at[: whitened.shape[0]].set(whitened)
    return jnp.fft.irfft(padded, n=fine) * upsample


def _refine(values: Float[Array, " lags"], peak: Int[Array, "*k"], upsample: int, max_delay: int) -> Float[Array, "*k"]:
    left = values[peak - 1]
    centre, right = values[peak], values[peak + 1]
    curvature = left - 2.0 * centre + right
    offset = jnp.where(curvature < 0, 0.5 * (left - right) / jnp.where(curvature < 0, curvature, -1.0), 0.0)
    offset = jnp.clip(offset, -0.5, 0.5)
    return jnp.clip((peak + offset) / upsample, 0.0, float(max_delay))


def _check(cross: Complex[Array, " bins"], max_delay: int) -> None:
    n_fft = 2 * (cross.shape[-1] - 1)
    if not 0 < max_delay < n_fft // 2:
        raise ValueError(f"max_delay must be in (0, n_fft / 2 = {n_fft // 2}), got {max_delay}")


def pair_delay(
    cross: Complex[Array, " bins"], *, max_delay: int, upsample: int = 4, beta: float = 0.8
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Delay in samples of the second signal inside the first, in ``[0, max_delay]``.

    Args:
        cross: ``(n_fft // 2 + 1,)`` cross-power spectrum ``G_ij`` of the pair.
        max_delay: largest lag searched, in samples (``< n_fft / 2``).
        upsample: evaluation grid of ``1 / upsample`` samples.
        beta: the PHAT-β exponent.

    Returns:
        the delay in samples and the height of the correlation peak relative to its value for a
        pure delay (1 for a pure delay, near 0 when the pair shares nothing).
    """
    _check(cross, max_delay)
    values = correlation(cross, upsample=upsample, beta=beta)
    peak = jnp.argmax(values[: max_delay * upsample + 1])
    return _refine(values, peak, upsample, max_delay), values[peak]


def pair_candidates(
    cross: Complex[Array, " bins"], *, max_delay: int, count: int, upsample: int = 4, beta: float = 0.8
) -> tuple[Float[Array, " count"], Float[Array, " count"]]:
    """The ``count`` highest local maxima of the correlation over the lags ``[0, max_delay]``.

    Several peaks compete when the pair shares more than the bleed: sources that play together
    are correlated near lag 0, and a held note repeats its correlation every pitch period.

    Args:
        cross: ``(n_fft // 2 + 1,)`` cross-power spectrum ``G_ij`` of the pair.
        max_delay: largest lag searched, in samples (``< n_fft / 2``).
        count: number of peaks (static).
        upsample: evaluation grid of ``1 / upsample`` samples.
        beta: the PHAT-β exponent.

    Returns:
        ``(count,)`` delays in samples (refined like :func:`pair_delay`, highest peak first; the
        first is :func:`pair_delay`'s) and their heights.
    """
    _check(cross, max_delay)
    values = correlation(cross, upsample=upsample, beta=beta)
    searched = max_delay * upsample + 1
    lags = values[:searched]
    outside = jnp.full(1, -jnp.inf, lags.dtype)
    is_peak = (lags >= jnp.concatenate([outside, lags[:-1]])) & (lags >= jnp.concatenate([lags[1:], outside]))
    heights, peaks = jax.lax.top_k(jnp.where(is_peak, lags, -jnp.inf), count)
    peaks = jnp.where(jnp.isfinite(heights), peaks, peaks[0])
    return _refine(values, peaks, upsample, max_delay), values[peaks]


def delays(
    spectra: Complex[Array, "tracks bins frames"], *, max_delay: int, upsample: int = 4, beta: float = 0.8
) -> tuple[Float[Array, "tracks tracks"], Float[Array, "tracks tracks"]]:
    """GCC-PHAT delays of every track ``j`` into every track ``i`` (zero on the diagonal).

    Args:
        spectra: ``(J, bins, frames)`` STFTs of the microphones (:func:`bleedjax.signal.stft`).
        max_delay: largest delay searched, in samples.
        upsample: sub-sample grid of the search.
        beta: the PHAT-β exponent.

    Returns:
        ``(J, J)`` delays in samples and ``(J, J)`` peak heights.
    """
    cross = cross_spectra(spectra)
    num = cross.shape[0]
    flat = cross.reshape(num * num, -1)
    found, heights = jax.vmap(lambda c: pair_delay(c, max_delay=max_delay, upsample=upsample, beta=beta))(flat)
    off = 1.0 - jnp.eye(num, dtype=jnp.float32)
    return found.reshape(num, num) * off, heights.reshape(num, num) * off
