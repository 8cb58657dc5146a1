"""The power-domain soft mask from Λ̂ (bleedjax.models.inference.wiener_spectrogram) and the
``demix`` choice of the t-UNet's inference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from bleedjax import models
from bleedjax.models import inference

RATE = 22050


def band_noise(low, high, seed, samples=RATE):
    noise = np.random.default_rng(seed).standard_normal(samples + 2000)
    sos = scipy.signal.butter(8, [low, high], btype="bandpass", fs=RATE, output="sos")
    filtered = scipy.signal.sosfilt(sos, noise)[2000:]
    return (filtered / np.sqrt(np.mean(filtered**2))).astype(np.float32)


def delayed_bleed(delay):
    """Two sources in disjoint bands; each microphone hears the other source 10 dB down,
    ``delay`` samples late."""
    sources = np.stack([band_noise(100, 1500, 0), band_noise(3000, 7000, 1)])
    lam = np.array([[1.0, 0.3], [0.3, 1.0]], np.float32)
    late = np.roll(sources, delay, axis=-1)
    mics = sources + lam[0, 1] * late[::-1]
    return mics, sources, lam


def error_db(estimate, reference):
    trim = slice(2048, -2048)
    residual = np.sum((estimate[:, trim] - reference[:, trim]) ** 2, axis=-1)
    return 10 * np.log10(residual / np.sum(reference[:, trim] ** 2, axis=-1))


@pytest.mark.parametrize("delay", [0, 110])
def test_wiener_recovers_disjoint_sources_with_and_without_delay(delay):
    mics, sources, lam = delayed_bleed(delay)
    cleaned = models.demix_batch(jnp.asarray(mics)[None], jnp.asarray(lam)[None], n_fft=2048, hop=512,
                                 demix="wiener")[0]
    assert np.all(error_db(np.asarray(cleaned), sources) < -20), error_db(np.asarray(cleaned), sources)
    microphones = error_db(mics, sources)
    assert np.all(microphones > -11)


def test_pinv_cannot_undo_delayed_bleed_but_wiener_can():
    """5 ms late bleed: the paper's pinv(Λ) X with the true Λ leaves more error than the
    microphones had; the soft mask removes it."""
    mics, sources, lam = delayed_bleed(110)
    batch, lam_batch = jnp.asarray(mics)[None], jnp.asarray(lam)[None]
    pinv = np.asarray(models.demix_batch(batch, lam_batch, n_fft=2048, hop=512, demix="pinv")[0])
    wiener = np.asarray(models.demix_batch(batch, lam_batch, n_fft=2048, hop=512, demix="wiener")[0])
    scaled = pinv * np.diag(lam)[:, None]
    assert np.all(error_db(scaled, sources) > error_db(mics, sources) - 1.0)
    assert np.all(error_db(wiener, sources) < error_db(mics, sources) - 15.0)


def test_wiener_gains_lie_in_zero_one_and_a_silent_track_stays_silent():
    key_x, key_l = jax.random.split(jax.random.key(0))
    spectrogram = jax.random.normal(key_x, (3, 33, 20)) + 1j * jax.random.normal(key_x, (3, 33, 20))
    spectrogram = spectrogram.at[2].set(0.0)
    lam = jnp.broadcast_to(jnp.eye(3) + 0.3 * jax.random.uniform(key_l, (3, 3)), (33, 3, 3))
    for iterations in (0, 1, 10):
        masked = inference.wiener_spectrogram(spectrogram, lam, iterations=iterations)
        assert bool(jnp.all(jnp.isfinite(masked))) and not bool(jnp.any(masked[2]))
        gains = np.asarray(jnp.abs(masked[:2]) / jnp.abs(spectrogram[:2]))
        assert np.all(gains >= 0) and np.all(gains <= 1 + 1e-5)


def test_unknown_demix_is_an_error():
    with pytest.raises(ValueError, match="demix must be one of"):
        models.demix_batch(jnp.ones((1, 2, 4096)), jnp.eye(2)[None], n_fft=256, hop=64, demix="nope")
