"""The coherent fraction (how much a convolutive filter of one track explains of another) and the
gate that it sets on the differentiable model's residual stage."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from bleedjax import coherence, signal
from bleedjax.methods import differentiable
from tests.test_bleed_fit import SETTINGS, delayed_mixture


def brute_force_fraction(spectra: np.ndarray, lags: int, mask: np.ndarray) -> np.ndarray:
    """Per bin, least squares of ``Y_i`` on the current and ``lags`` previous frames of ``Y_j``,
    over the frames where ``mask`` is 1."""
    spectra = spectra * mask
    num, bins, frames = spectra.shape
    real = mask > 0
    out = np.zeros((num, num))
    for i in range(num):
        energy = np.sum(np.abs(spectra[i]) ** 2)
        for j in range(num):
            if i == j:
                continue
            explained = 0.0
            for f in range(bins):
                design = np.stack([np.concatenate([np.zeros(k), spectra[j, f, : frames - k]]) for k in range(lags + 1)], -1)
                weights, *_ = np.linalg.lstsq(design[real], spectra[i, f][real], rcond=None)
                explained += np.sum(np.abs(design[real] @ weights) ** 2)
            out[i, j] = explained / energy - (lags + 1) / mask.sum()
    return out


@pytest.mark.parametrize("chunk_bytes", [coherence.CHUNK_BYTES, 2 * 3 * 40 * 3 * 8])
def test_coherent_fraction_equals_per_bin_least_squares(chunk_bytes):
    """Whole, and in chunks of 2 bins (the last one padded)."""
    rng = np.random.default_rng(0)
    spectra = rng.standard_normal((3, 9, 40)) + 1j * rng.standard_normal((3, 9, 40))
    spectra[1] += 0.7 * np.roll(spectra[0], 1, axis=-1)
    mask = (np.arange(40) < 33).astype(np.float64)
    found = coherence.coherent_fraction(
        jnp.asarray(spectra, jnp.complex64), lags=2, mask=jnp.asarray(mask, jnp.float32), chunk_bytes=chunk_bytes
    )
    np.testing.assert_allclose(np.asarray(found), brute_force_fraction(spectra, 2, mask), atol=2e-4)


def test_padded_frames_change_nothing():
    """The frames after a batched session's end hold no target, and their lagged regressors (the
    session's last frames) must not enter the filters either."""
    rng = np.random.default_rng(1)
    spectra = rng.standard_normal((2, 5, 30)) + 1j * rng.standard_normal((2, 5, 30))
    spectra[1] += 0.5 * np.roll(spectra[0], 1, axis=-1)
    alone = coherence.coherent_fraction(jnp.asarray(spectra, jnp.complex64), lags=3)
    padded = np.pad(spectra, ((0, 0), (0, 0), (0, 6)))
    mask = (np.arange(36) < 30).astype(np.float32)
    found = coherence.coherent_fraction(jnp.asarray(padded, jnp.complex64), lags=3, mask=jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(found), np.asarray(alone), atol=1e-6)


def reverberant_pair(seed: int, samples: int = 32000) -> np.ndarray:
    """Two independent noises; track 1 also holds track 0 through a 150 ms exponentially decaying
    noise response (reverberant bleed, longer than a frame)."""
    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((2, samples))
    tail = rng.standard_normal(2400) * np.exp(-np.arange(2400) / 500.0)
    bleed = scipy.signal.fftconvolve(sources[0], tail / np.linalg.norm(tail))[:samples]
    return np.stack([sources[0], sources[1] + 0.5 * bleed]).astype(np.float32)


def test_independent_tracks_are_not_coherent_and_reverberant_bleed_is():
    tracks = reverberant_pair(0)
    found = np.asarray(coherence.coherent_fraction(signal.stft(jnp.asarray(tracks), n_fft=1024, hop=256), lags=3))
    # 0.25 of track 1's energy is bleed; most of it is a 4-frame filter of track 0
    assert 0.12 < found[1, 0] < 0.25, found
    clean = np.random.default_rng(2).standard_normal(tracks.shape).astype(np.float32)
    unrelated = np.asarray(coherence.coherent_fraction(signal.stft(jnp.asarray(clean), n_fft=1024, hop=256), lags=3))
    assert np.all(np.abs(unrelated) < 0.03), unrelated


def test_gate_is_a_clipped_ramp_of_the_weaker_direction():
    fraction = jnp.asarray([[0.0, 0.05, 0.3], [0.14, 0.0, 0.5], [0.9, 0.14, 0.0]])
    expected = [[0.0, 0.0, 1.0], [0.0, 0.0, 0.5], [1.0, 0.5, 0.0]]
    np.testing.assert_allclose(np.asarray(coherence.gate(fraction, 0.08, 0.2)), expected, atol=1e-6)


def test_gate_stays_shut_for_a_faint_copy_in_the_other_direction():
    """Output 1 holds source 0 at −30 dB (an inversion's residue) and output 0 nothing of source 1.
    Where source 1 is quiet (below 2 kHz) that copy explains output 0, so ``E_01`` is large; the
    residual stage would then subtract output 1 from output 0, which holds none of it. ``E_10``
    stays at chance and the gate shut. With the copy at 0 dB (bleed: a quarter of output 1's
    energy), ``E_10`` is that quarter and the gate opens."""
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((2, 32000))
    low = scipy.signal.sosfilt(scipy.signal.butter(8, 2000, "low", fs=16000, output="sos"), noise[0])
    high = scipy.signal.sosfilt(scipy.signal.butter(8, 2000, "high", fs=16000, output="sos"), noise[1])
    for copy, shut in ((10 ** (-30 / 20), True), (1.0, False)):
        tracks = jnp.asarray(np.stack([low, high + copy * low]), jnp.float32)
        found = np.asarray(coherence.coherent_fraction(signal.stft(tracks, n_fft=1024, hop=256), lags=3))
        weights = np.asarray(coherence.gate(jnp.asarray(found), 0.08, 0.2))
        assert found[0, 1] > 0.5, found
        if shut:
            assert found[1, 0] < 0.01, found
            np.testing.assert_array_equal(weights, 0.0)
        else:
            assert found[1, 0] > 0.2, found
            np.testing.assert_array_equal(weights, [[0.0, 1.0], [1.0, 0.0]])


# About 30 s of two 8 s fits: the gate's behaviour stays in the default run through the unit tests above.
@pytest.mark.heavy
def test_gate_keeps_the_inversion_where_it_removed_the_bleed():
    """Delayed linear bleed: the inversion removes it, the outputs are no longer coherent, and the
    gated residual stage subtracts nothing. Ungated, it subtracts λ = 0.25 (its box) for every pair
    and the outputs' relative error grows from 0.005 to 0.31–0.37."""
    mics, sources, _ = delayed_mixture(seconds=8.0)
    settings = dataclasses.replace(SETTINGS, residual="spectral-subtraction")
    gated = differentiable.reduce_session(jnp.asarray(mics), settings)
    inverted = differentiable.reduce_session(jnp.asarray(mics), SETTINGS)
    off = ~np.eye(3, dtype=bool)
    assert np.all(np.asarray(gated.coherence)[off] < settings.residual_gate_low), gated.coherence
    np.testing.assert_array_equal(np.asarray(gated.residual_lambda), 0.0)
    np.testing.assert_allclose(np.asarray(gated.cleaned), np.asarray(inverted.cleaned), atol=1e-5)
    error = np.linalg.norm(np.asarray(gated.cleaned) - sources, axis=-1) / np.linalg.norm(sources, axis=-1)
    assert np.all(error < 0.05), error
