"""Cross-track features for the t-UNet (beyond Rajesh R & Rajan, WASPAA 2023 [1]).

The paper's encoder sees every microphone on its own and summarises it over time, so its head can
learn the average bleed matrix of the training data but cannot tell how much of track ``j`` a
given recording's microphone ``i`` holds. These features give it that: for every ordered pair
``(i, j)``, the distribution of the level ratio

    r_ij(f, t) = 10 · log10(P_i(f, t) / P_j(f, t))  dB,    P = |STFT(X)|²,

over the STFT bins where microphone ``j`` dominates. With linear bleed ``X = Λ S`` and sparse
sources, a bin where source ``j`` dominates holds ``Λ_ij S_j`` in microphone ``i`` and
``Λ_jj S_j`` in microphone ``j``, so ``r_ij`` sits at ``20 · log10(Λ_ij / Λ_jj)`` there and the
histogram peaks at the bleed level (the idea behind DUET's amplitude-ratio histograms, Rickard &
Yilmaz 2002 [2]); bins where source ``i`` plays as well only push ``r_ij`` up. Frames of 93 ms
(``n_fft`` 2048 at 22.05 kHz) make the ratio insensitive to bleed delays of a few milliseconds.

Every bin's vote is weighted by ``w_j = P_j · (P_j / Σ_k P_k)^γ`` (loud and dominated by ``j``),
for each dominance exponent ``γ`` in :data:`DOMINANCE_EXPONENTS`; votes go by linear interpolation
into :data:`HISTOGRAM_RANGE_DB` cut into ``histogram_bins`` bins, separately for every band of
STFT bins when Λ is frequency dependent, and every histogram is normalised to sum to 1 (all
zeros for a silent microphone ``j``).

References:
    [1] Rajesh R, P. Rajan, "Neural networks for interference reduction in multi-track
        recordings", IEEE WASPAA 2023.
    [2] S. Rickard, Ö. Yilmaz, "On the approximate W-disjoint orthogonality of speech",
        IEEE ICASSP 2002.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax._types import Array, Float, Int

HISTOGRAM_RANGE_DB = (-60.0, 12.0)
DOMINANCE_EXPONENTS = (1.0, 4.0)
RELATIVE_FLOOR = 1e-10
FRAME_STRIDE = 2
PAIRS_PER_STEP = 16
"""Pairs whose votes are scattered at once: the votes of every pair of ``J`` tracks at once would
take memory in ``J²`` (about 1 GB per 4 s block at 16 tracks)."""


def features_per_pair(histogram_bins: int, bands: int) -> int:
    """Length of the feature vector of one pair: ``bands · exponents · histogram_bins``."""
    return bands * len(DOMINANCE_EXPONENTS) * histogram_bins


def histogram_one(
    ratio_db: Float[Array, " values"],
    weights: Float[Array, "values exponents"],
    segment: Int[Array, " values"],
    *,
    histogram_bins: int,
    bands: int,
) -> Float[Array, "{bands} exponents {histogram_bins}"]:
    """Weighted histograms of ``ratio_db`` by linear interpolation between bin centres, one per
    band (``segment`` is every value's band) and weight column, each normalised to sum to 1
    (zeros when empty). All weight columns share one scatter of the votes."""
    low, high = HISTOGRAM_RANGE_DB
    position = jnp.clip((ratio_db - low) / (high - low) * (histogram_bins - 1), 0.0, histogram_bins - 1.0)
    below = jnp.minimum(jnp.floor(position), histogram_bins - 2).astype(jnp.int32)
    upper = (position - below)[:, None]
    ids = jnp.concatenate([segment * histogram_bins + below, segment * histogram_bins + below + 1])
    votes = jnp.concatenate([weights * (1.0 - upper), weights * upper])
    counts = jax.ops.segment_sum(votes, ids, num_segments=bands * histogram_bins)
    counts = jnp.moveaxis(counts.reshape(bands, histogram_bins, -1), -1, 1)
    return counts / jnp.maximum(jnp.sum(counts, axis=-1, keepdims=True), 1e-30)


def level_at_zero_db(histogram_bins: int) -> np.ndarray:
    """``(histogram_bins,)`` the interpolation weights of a 0 dB ratio (a microphone against
    itself): the histogram of every diagonal pair that has any weight."""
    low, high = HISTOGRAM_RANGE_DB
    position = (0.0 - low) / (high - low) * (histogram_bins - 1)
    return np.maximum(0.0, 1.0 - np.abs(position - np.arange(histogram_bins))).astype(np.float32)


def pair_histograms(
    power: Float[Array, "tracks freq frames"],
    band_index: Int[Array, " freq"],
    *,
    histogram_bins: int,
    bands: int,
) -> Float[Array, "tracks tracks features"]:
    """The level-ratio histograms of every ordered pair of microphones of one example (module
    docstring), over every ``FRAME_STRIDE``-th frame (the histograms are statistics of the whole
    example; fewer frames make the scatter of the votes, their cost, proportionally cheaper), and
    ``PAIRS_PER_STEP`` pairs at a time (so memory grows with ``J``, not ``J²``).

    Args:
        power: ``(J, F, T)`` STFT power of the microphones.
        band_index: ``(F,)`` band of every STFT bin (all zeros for one band).
        histogram_bins: bins per histogram.
        bands: number of bands.

    Returns:
        ``(J, J, bands · exponents · histogram_bins)``: entry ``[i, j]`` describes how loud
        microphone ``i`` is where microphone ``j`` dominates. The diagonal (a ratio of 0 dB
        everywhere) is :func:`level_at_zero_db` in every band where microphone ``j`` has weight.
    """
    tracks = power.shape[0]
    power = jax.lax.stop_gradient(power)[:, :, ::FRAME_STRIDE]
    frames = power.shape[2]
    flat = power.reshape(tracks, -1)
    floor = RELATIVE_FLOOR * jnp.mean(flat) + 1e-30
    level_db = 10.0 * jnp.log10(flat + floor)
    share = flat / (jnp.sum(flat, axis=0, keepdims=True) + floor)
    weights = jnp.stack([flat * share**exponent for exponent in DOMINANCE_EXPONENTS], axis=-1)
    segment = jnp.repeat(band_index, frames)
    rows, columns = np.nonzero(~np.eye(tracks, dtype=bool))

    def one(pair):
        row, column = pair
        ratio = level_db[row] - level_db[column]
        return histogram_one(ratio, weights[column], segment, histogram_bins=histogram_bins, bands=bands)

    off_diagonal = jax.lax.map(one, (jnp.asarray(rows), jnp.asarray(columns)), batch_size=PAIRS_PER_STEP)
    band_weight = jnp.einsum(
        "jfte,fs->jse", weights.reshape(tracks, -1, frames, weights.shape[-1]), jax.nn.one_hot(band_index, bands)
    )
    diagonal = (band_weight > 0)[..., None] * jnp.asarray(level_at_zero_db(histogram_bins))[None, None, None]
    histograms = jnp.zeros((tracks, tracks, *diagonal.shape[1:]), flat.dtype)
    histograms = histograms.at[rows, columns].set(off_diagonal)
    histograms = histograms.at[np.arange(tracks), np.arange(tracks)].set(diagonal)
    return histograms.reshape(tracks, tracks, -1)


def band_index_of(bands: int, n_fft: int) -> np.ndarray:
    """``(n_fft // 2 + 1,)`` band of every bin, the bands of :func:`bleedjax.models.inference.
    band_edges_hz` (the model's own rate, so in bins rather than hertz)."""
    from bleedjax.models import inference

    return inference.band_of_bin(bands, n_fft=n_fft, sample_rate=1.0, model_n_fft=n_fft, model_rate=1.0)
