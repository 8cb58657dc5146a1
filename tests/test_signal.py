import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from jax.test_util import check_grads

from bleedjax import signal

CASES = [(4096, 2048, "hamming", 11025), (512, 128, "hann", 3000), (256, 100, "hann", 2001), (64, 48, "hamming", 640)]


@pytest.mark.parametrize("n_fft,hop,window_name,samples", CASES)
def test_stft_matches_scipy(n_fft, hop, window_name, samples):
    x = np.random.default_rng(0).standard_normal((2, 3, samples)).astype(np.float32)
    ours = np.asarray(signal.stft(x, n_fft=n_fft, hop=hop, window_name=window_name))
    _, _, theirs = scipy.signal.stft(x.astype(np.float64), window=window_name, nperseg=n_fft, noverlap=n_fft - hop)
    assert ours.shape == theirs.shape == (2, 3, n_fft // 2 + 1, signal.num_frames(samples, n_fft, hop))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.parametrize("n_fft,hop,window_name,samples", CASES)
def test_round_trip_is_perfect(n_fft, hop, window_name, samples):
    x = np.random.default_rng(1).standard_normal((3, samples)).astype(np.float32)
    spec = signal.stft(x, n_fft=n_fft, hop=hop, window_name=window_name)
    y = np.asarray(signal.istft(spec, length=samples, n_fft=n_fft, hop=hop, window_name=window_name))
    assert np.linalg.norm(y - x) / np.linalg.norm(x) < 1e-6


def test_float64_under_x64_keeps_float64_precision():
    """With ``jax_enable_x64`` (e.g. for gradient checks) a float64 signal keeps float64 precision
    (the window was cast to float32: 1e-8 from SciPy, round trip 1e-7); float32 stays float32."""
    x = np.random.default_rng(3).standard_normal((2, 500))
    with jax.enable_x64(True):
        spec = signal.stft(jnp.asarray(x), n_fft=64, hop=16)
        back = signal.istft(spec, length=500, n_fft=64, hop=16)
        assert spec.dtype == jnp.complex128 and back.dtype == jnp.float64
        assert signal.stft(jnp.asarray(x, jnp.float32), n_fft=64, hop=16).dtype == jnp.complex64
    _, _, theirs = scipy.signal.stft(x, window="hann", nperseg=64, noverlap=48)
    np.testing.assert_allclose(np.asarray(spec), theirs, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.asarray(back), x, rtol=0, atol=1e-13)


def test_istft_matches_scipy():
    x = np.random.default_rng(2).standard_normal(3000)
    _, _, spec = scipy.signal.stft(x, window="hann", nperseg=512, noverlap=384)
    _, theirs = scipy.signal.istft(spec, window="hann", nperseg=512, noverlap=384)
    ours = signal.istft(jnp.asarray(spec, jnp.complex64), length=3000, n_fft=512, hop=128, window_name="hann")
    np.testing.assert_allclose(np.asarray(ours), theirs[:3000], atol=1e-5)


def test_sinusoid_scaling():
    n = np.arange(8192)
    x = 0.8 * np.cos(2 * np.pi * 64 * n / 1024).astype(np.float32)
    spec = np.abs(np.asarray(signal.stft(x, n_fft=1024, hop=256)))
    assert abs(spec[64, 8] - 0.4) < 1e-3


def test_gradients():
    x = jnp.asarray(np.random.default_rng(3).standard_normal(300), jnp.float32)

    def power(v):
        return jnp.sum(jnp.abs(signal.stft(v, n_fft=64, hop=16)) ** 2)

    def round_trip(v):
        return signal.istft(signal.stft(v, n_fft=64, hop=32, window_name="hamming"), length=300, n_fft=64, hop=32,
                            window_name="hamming")

    check_grads(power, (x,), order=1, modes=("fwd", "rev"), atol=2e-2, rtol=2e-2)
    check_grads(round_trip, (x,), order=1, modes=("fwd", "rev"), atol=2e-2, rtol=2e-2)
    jac = jax.jacrev(round_trip)(x[:300])
    np.testing.assert_allclose(np.asarray(jac), np.eye(300), atol=1e-5)


def test_bad_sizes_and_windows():
    with pytest.raises(ValueError, match="hop"):
        signal.stft(jnp.zeros(100), n_fft=64, hop=128)
    with pytest.raises((ValueError, TypeError), match="window"):
        signal.stft(jnp.zeros(100), n_fft=64, hop=32, window_name="kaiser")
    with pytest.raises(ValueError, match="bins"):
        signal.istft(jnp.zeros((10, 5), jnp.complex64), length=100, n_fft=64, hop=32)
    spec = signal.stft(jnp.ones(500), n_fft=64, hop=32)
    with pytest.raises(ValueError, match="too few frames"):
        signal.istft(spec, length=2000, n_fft=64, hop=32)


def test_masked_istft_of_a_padded_signal_equals_the_unpadded_one():
    """With hop < n_fft / 2 the padded STFT's extra frames overlap the signal's end; after a
    nonlinear gain only the frame mask makes the first ``length`` samples agree."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal(1000), jnp.float32)
    transform = {"n_fft": 256, "hop": 64}

    def gained(spec):
        return spec * jnp.abs(spec) / (1.0 + jnp.abs(spec))

    alone = signal.istft(gained(signal.stft(x, **transform)), length=1000, **transform)
    padded = signal.stft(jnp.pad(x, (0, 700)), **transform)
    found = signal.istft(gained(padded), length=1700, valid_length=1000, **transform)
    np.testing.assert_allclose(np.asarray(found[:1000]), np.asarray(alone), atol=1e-6)
    # The padding is silent: the last real frames' window tails reach past the end, and dividing
    # by their tiny weights there once gave samples hundreds of times the signal's peak.
    np.testing.assert_array_equal(np.asarray(found[1000:]), 0.0)
    unmasked = signal.istft(gained(padded), length=1700, **transform)
    assert np.abs(np.asarray(unmasked[:1000]) - np.asarray(alone)).max() > 1e-3
