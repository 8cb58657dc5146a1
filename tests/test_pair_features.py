"""Cross-track level-ratio histograms and the t-UNet's per-pair head (bleedjax.models.pair_features)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from bleedjax.configs import tunet as tunet_config
from flax import nnx

from bleedjax import sessions, signal
from bleedjax.methods import neural
from bleedjax.models import pair_features, tunet

QUARTET = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "audio" / "string_quartet"
BINS = 37
pair_histograms = jax.jit(pair_features.pair_histograms, static_argnames=("histogram_bins", "bands"))
"""As the models run it: one compiled program (op by op, each test compiled 80-110 small ones)."""


def numpy_histograms(ratio, weights, segment, bins, bands):
    """Linear-interpolation histogram of one weight column, one value at a time."""
    low, high = pair_features.HISTOGRAM_RANGE_DB
    counts = np.zeros((bands, bins))
    for r, w, s in zip(ratio, weights, segment, strict=True):
        position = min(max((r - low) / (high - low) * (bins - 1), 0.0), bins - 1.0)
        below = min(int(np.floor(position)), bins - 2)
        counts[s, below] += w * (1 - (position - below))
        counts[s, below + 1] += w * (position - below)
    totals = counts.sum(axis=1, keepdims=True)
    return np.where(totals > 0, counts / np.maximum(totals, 1e-30), 0.0)


def test_histogram_matches_a_numpy_loop():
    rng = np.random.default_rng(0)
    ratio = rng.uniform(-80, 30, 500).astype(np.float32)
    weights = rng.exponential(size=(500, 2)).astype(np.float32)
    segment = rng.integers(0, 2, 500).astype(np.int32)
    segment[segment == 1] = 2
    got = pair_features.histogram_one(jnp.asarray(ratio), jnp.asarray(weights), jnp.asarray(segment),
                                      histogram_bins=9, bands=3)
    assert got.shape == (3, 2, 9)
    for column in range(2):
        expected = numpy_histograms(ratio, weights[:, column], segment, 9, 3)
        np.testing.assert_allclose(got[:, column], expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got).sum(axis=-1), [[1, 1], [0, 0], [1, 1]], atol=1e-6)


def test_diagonal_is_the_histogram_of_a_zero_ratio_and_empty_for_a_silent_track():
    power = jax.random.uniform(jax.random.key(0), (3, 65, 10)) ** 4
    power = power.at[2].set(0.0)
    band_index = jnp.asarray(np.repeat([0, 1], [40, 25]), jnp.int32)
    got = np.asarray(pair_histograms(power, band_index, histogram_bins=9, bands=2)).reshape(3, 3, 2, 2, 9)
    strided = power[:, :, :: pair_features.FRAME_STRIDE].reshape(3, -1)
    segment = jnp.repeat(band_index, strided.shape[1] // 65)
    for track in range(2):
        weights = jnp.stack([strided[track]] * 2, axis=-1)
        direct = pair_features.histogram_one(jnp.zeros_like(strided[track]), weights, segment, histogram_bins=9, bands=2)
        np.testing.assert_allclose(got[track, track], direct, atol=1e-6)
    assert not got[2, 2].any() and not got[:, 2].any()


def test_every_pair_of_many_tracks_gets_its_own_histogram():
    """7 tracks: 42 ordered pairs, scattered ``PAIRS_PER_STEP`` at a time, each equal to its
    pair's histogram of ``r_ij`` weighted by microphone ``j``'s dominance."""
    tracks = 7
    assert tracks * (tracks - 1) > 2 * pair_features.PAIRS_PER_STEP
    power = jax.random.uniform(jax.random.key(1), (tracks, 65, 10)) ** 4
    band_index = jnp.asarray(np.repeat([0, 1], [40, 25]), jnp.int32)
    got = np.asarray(pair_histograms(power, band_index, histogram_bins=9, bands=2))
    got = got.reshape(tracks, tracks, 2, 2, 9)
    strided = np.asarray(power[:, :, :: pair_features.FRAME_STRIDE].reshape(tracks, -1), np.float64)
    segment = jnp.repeat(band_index, strided.shape[1] // 65)
    floor = pair_features.RELATIVE_FLOOR * strided.mean() + 1e-30
    level_db = 10 * np.log10(strided + floor)
    share = strided / (strided.sum(axis=0) + floor)
    rows, columns = np.nonzero(~np.eye(tracks, dtype=bool))
    weights = np.stack([strided * share**e for e in pair_features.DOMINANCE_EXPONENTS], axis=-1)
    one = lambda ratio, weight: pair_features.histogram_one(ratio, weight, segment, histogram_bins=9, bands=2)
    direct = jax.jit(jax.vmap(one))(jnp.asarray(level_db[rows] - level_db[columns], jnp.float32),
                                    jnp.asarray(weights[columns], jnp.float32))
    np.testing.assert_allclose(got[rows, columns], direct, atol=1e-5)


def test_histograms_peak_at_the_bleed_level_of_a_real_quartet():
    """Two violins, viola and cello (similar instruments): where microphone j dominates, the
    ratio of microphone i to j is the bleed level 20·log10(Λ_ij / Λ_jj)."""
    names = ("violin1", "violin2", "viola", "cello")
    sources = np.stack([sf.read(QUARTET / f"{n}.flac", dtype="float32")[0][: 4 * 22050] for n in names])
    matrix = np.array([[1, .1, .02, 0], [.05, .9, .2, .01], [0, 0, 1, .3], [.1, .1, .1, .8]], np.float32)
    power = jnp.abs(signal.stft(jnp.asarray(matrix @ sources), n_fft=2048, hop=512)) ** 2
    histograms = pair_histograms(power, jnp.zeros(1025, jnp.int32), histogram_bins=BINS, bands=1)
    centres = np.linspace(*pair_features.HISTOGRAM_RANGE_DB, BINS)
    strongest = np.asarray(histograms).reshape(4, 4, len(pair_features.DOMINANCE_EXPONENTS), BINS)[..., -1, :]
    for i in range(4):
        for j in range(4):
            if i != j and matrix[i, j] >= 0.01:
                level = 20 * np.log10(matrix[i, j] / matrix[j, j])
                assert abs(centres[strongest[i, j].argmax()] - level) <= 2.0, (i, j, level)


def pair_tunet(bands=1):
    return tunet.TUNet(3, channels=(4, 4, 8), pool=4, dense=(16,), frequency_bands=bands,
                       pair_histogram_bins=9, n_fft=256, hop=64, rngs=nnx.Rngs(0))


def test_pair_head_starts_at_the_initial_matrix_and_follows_track_order():
    model = pair_tunet()
    mics = jax.random.normal(jax.random.key(1), (2, 3, 2000))
    lam = nnx.jit(lambda m, x: m(x))(model, mics)
    start = np.eye(3) + tunet.INITIAL_BLEED * (1 - np.eye(3))
    np.testing.assert_allclose(lam, np.broadcast_to(start, (2, 3, 3)), rtol=1e-6)
    trained_like = nnx.clone(model)
    last = trained_like.head[-1]
    last.kernel[...] = jax.random.normal(jax.random.key(2), last.kernel.shape)
    order = np.array([2, 0, 1])
    lam = nnx.jit(lambda m, x: m(x))(trained_like, mics)
    permuted = nnx.jit(lambda m, x: m(x))(trained_like, mics[:, order])
    assert not np.allclose(lam, np.broadcast_to(start, lam.shape), atol=1e-3)
    np.testing.assert_allclose(permuted, lam[:, order][:, :, order], rtol=1e-5, atol=1e-6)


def test_pair_head_with_bands_is_nonnegative():
    model = pair_tunet(bands=2)
    last = model.head[-1]
    last.kernel[...] = -5.0 * jnp.ones(last.kernel.shape)
    lam = nnx.jit(lambda m, x: m(x))(model, jax.random.normal(jax.random.key(3), (2, 3, 2000)))
    assert lam.shape == (2, 2, 3, 3) and bool(jnp.all(lam >= 0))


def test_pair_head_takes_any_number_of_tracks():
    model = pair_tunet()
    last = model.head[-1]
    last.kernel[...] = jax.random.normal(jax.random.key(4), last.kernel.shape)
    mics = jax.random.normal(jax.random.key(5), (1, 5, 2000))
    lam = nnx.jit(lambda m, x: m(x))(model, mics)
    assert lam.shape == (1, 5, 5) and bool(jnp.all(lam >= 0))
    first_three = nnx.jit(lambda m, x: m(x))(model, mics[:, :3])
    assert first_three.shape == (1, 3, 3)


def test_sessions_of_any_size_pass_the_check_only_with_the_pair_head():
    config = tunet_config.get_config("runlocal")
    names = [f"track{i}" for i in range(5)]
    with pytest.raises(sessions.SessionError, match="trained for 4 tracks"):
        neural.check_session(names, config, "tunet")
    config.model.pair_histogram_bins = 9
    neural.check_session(names, config, "tunet")
