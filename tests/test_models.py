"""The t-UNet and CAE models, their losses and the pinv inference path (bleedjax.models)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.signal
from bleedjax.configs import cae as cae_config
from bleedjax.configs import tunet as tunet_config
from flax import nnx
from flax.linen import max_pool

from bleedjax import models, signal
from bleedjax.models import cae, inference, losses, tunet
from bleedjax.simulation import seipel_mixing_matrix


def linear_batch(config, *, batch=2, samples=None, seed=0):
    """Noiseless linear bleed ``X = A S`` with the paper's matrices; white-noise sources."""
    tracks = config.model.num_tracks
    samples = samples or models.receptive_field(config.model) + 300
    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((batch, tracks, samples)).astype(np.float32)
    keys = jax.random.split(jax.random.key(seed), batch)
    matrix = np.stack([np.asarray(seipel_mixing_matrix(key=k, num_tracks=tracks, max_crosstalk_db=-6.0)) for k in keys]).astype(np.float32)
    mics = np.einsum("bij,bjt->bit", matrix, sources)
    return {"mics": mics, "targets": sources, "matrix": matrix, "active": np.ones((batch, tracks), bool)}


@nnx.jit
def apply(model, mics, lengths=None):
    return model(mics, lengths)


def build(model_config):
    """``models.build_model`` as one compiled program, initialised with the RBG generator (both
    only to compile faster than op-by-op Threefry initialisation)."""
    return nnx.jit(lambda rngs: models.build_model(model_config, rngs=rngs))(
        nnx.Rngs(jax.random.key(0, impl="rbg"))
    )


@pytest.fixture(scope="module")
def tunets():
    """Small t-UNets (``configs/tunet.py:runlocal``, J = 3) with a scalar and a 3-band Λ̂, built
    once; tests that train them work on clones."""
    built = {}
    for bands in (1, 3):
        config = small_tunet(bands=bands)
        built[bands] = (config, build(config.model))
    return built


def small_tunet(tracks=3, bands=1, loss="matrix", pairs=0):
    config = tunet_config.get_config("runlocal")
    config.model.num_tracks = tracks
    config.model.frequency_bands = bands
    config.model.pair_histogram_bins = pairs
    config.loss = loss
    return config


def test_paper_tunet_shapes_and_nonnegative_lambda():
    config = tunet_config.get_config()
    config.model.num_tracks = 3
    model = build(config.model)
    assert model.min_samples == 81192  # 1 -> 12 -> 111 -> 1002 -> 9021 -> 81192
    mics = jax.random.normal(jax.random.key(1), (2, 3, model.min_samples))
    lam = apply(model, mics)
    assert lam.shape == (2, 3, 3) and bool(jnp.all(lam >= 0))
    with pytest.raises(ValueError, match="at least 81192 samples"):
        model(mics[..., :-1])


@pytest.mark.parametrize("pool,size", [(9, 4), (3, 2)])
def test_fused_first_block_equals_conv_and_max_pool(pool, size):
    kernel = jax.random.normal(jax.random.key(1), (size, 1, 5))
    bias = jax.random.normal(jax.random.key(3), (5,))
    x = jax.random.normal(jax.random.key(2), (3, 10 * pool + 7))

    @jax.jit
    def reference(x):
        y = jax.lax.conv_general_dilated(x[..., None], kernel, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"))
        return max_pool(jax.nn.relu(y + bias[None, None, :]), (pool,), strides=(pool,), padding="VALID")

    got = jax.jit(tunet.conv_pool_mono, static_argnums=3)(x, kernel, bias, pool)
    np.testing.assert_allclose(got, reference(x), rtol=1e-5, atol=1e-6)


def test_valid_length_matches_the_authors_ten_second_input():
    # The authors' Keras model on 10 s at 22.05 kHz keeps 3 positions after five blocks.
    assert int(tunet.valid_length(220500, kernel_size=4, pool=9, stages=5)) == 3
    assert int(tunet.valid_length(81191, kernel_size=4, pool=9, stages=5)) == 0


def test_frequency_dependent_lambda_shape(tunets):
    config, model = tunets[3]
    lam = apply(model, jnp.asarray(linear_batch(config)["mics"]))
    assert lam.shape == (2, 3, 3, 3) and bool(jnp.all(lam >= 0))


def test_tunet_ignores_zero_padding_and_level(tunets):
    config, model = tunets[1]
    mics = jnp.asarray(linear_batch(config, batch=1, samples=3000)["mics"])
    alone = apply(model, mics)
    padded = jnp.pad(mics, ((0, 0), (0, 0), (0, 1700)))
    np.testing.assert_allclose(apply(model, padded, jnp.asarray([3000])), alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(apply(model, 7.0 * mics), alone, rtol=1e-5, atol=1e-6)


def test_interference_matrix_is_x_pinv_s():
    batch = linear_batch(small_tunet(), batch=1, samples=500)
    mics, sources = batch["mics"][0], batch["targets"][0]
    sources[1] = 0.0  # a silent source: pinv leaves its column at zero
    expected = mics.astype(np.float64) @ np.linalg.pinv(sources.astype(np.float64))
    np.testing.assert_allclose(losses.interference_matrix(jnp.asarray(mics), jnp.asarray(sources)), expected, atol=1e-5)


def test_banded_interference_matrix_of_linear_bleed_is_the_matrix():
    config = small_tunet(bands=4)
    batch = linear_batch(config, batch=1, samples=4000)
    n_fft, hop = config.model.n_fft, config.model.hop
    band_index = inference.band_of_bin(4, n_fft=n_fft, sample_rate=8000, model_n_fft=n_fft, model_rate=8000)
    spec = lambda x: signal.stft(jnp.asarray(x[0]), n_fft=n_fft, hop=hop)
    lam = losses.banded_interference_matrix(spec(batch["mics"]), spec(batch["targets"]), jnp.asarray(band_index), 4)
    np.testing.assert_allclose(lam, np.broadcast_to(batch["matrix"][0], (4, 3, 3)), atol=1e-4)


def test_band_of_bin_covers_every_band_and_maps_hertz():
    index = inference.band_of_bin(8, n_fft=256, sample_rate=8000, model_n_fft=256, model_rate=8000)
    assert index[0] == 0 and index[-1] == 7
    assert np.all(np.diff(index) >= 0) and set(index) == set(range(8))
    edges = inference.band_edges_hz(8, n_fft=256, sample_rate=8000)
    # At twice the rate (same frame duration) a bin keeps its band; bins above 4 kHz use the top one.
    double = inference.band_of_bin(8, n_fft=512, sample_rate=16000, model_n_fft=256, model_rate=8000)
    np.testing.assert_array_equal(double[:129], index)
    assert np.all(double[129:] == 7)
    assert np.all(np.diff(edges) > 0)


def test_exact_lambda_gives_exact_reconstruction():
    config = small_tunet()
    batch = linear_batch(config, samples=4000)
    n_fft, hop = config.model.n_fft, config.model.hop
    mics, matrix = jnp.asarray(batch["mics"]), jnp.asarray(batch["matrix"])
    cleaned = models.demix_batch(mics, matrix, n_fft=n_fft, hop=hop)
    np.testing.assert_allclose(cleaned, batch["targets"], atol=2e-4)
    per_band = jnp.repeat(matrix[:, None], 6, axis=1)
    cleaned = models.demix_batch(mics, per_band, n_fft=n_fft, hop=hop)
    np.testing.assert_allclose(cleaned, batch["targets"], atol=2e-4)


def test_per_band_demixing_inverts_each_band():
    # Bleed that differs per band, applied in the STFT domain; the reference inverts bin by bin in NumPy.
    config = small_tunet(tracks=2, bands=3)
    n_fft, hop = config.model.n_fft, config.model.hop
    rng = np.random.default_rng(3)
    lam = np.eye(2)[None] + 0.3 * rng.uniform(size=(3, 2, 2))
    mics = rng.standard_normal((2, 2000)).astype(np.float32)
    band_index = inference.band_of_bin(3, n_fft=n_fft, sample_rate=8000, model_n_fft=n_fft, model_rate=8000)
    spectrogram = np.asarray(signal.stft(jnp.asarray(mics), n_fft=n_fft, hop=hop))
    expected = np.stack(
        [np.linalg.inv(lam[band_index[f]]) @ spectrogram[:, f, :] for f in range(spectrogram.shape[1])], axis=1
    )
    unmixing = inference.pinv_each(jnp.asarray(lam, jnp.float32))
    got = inference.demix_spectrogram(jnp.asarray(spectrogram), unmixing, jnp.asarray(band_index))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_pinv_each_matches_numpy():
    matrices = np.random.default_rng(4).standard_normal((2, 3, 4, 4)).astype(np.float32)
    matrices[1, 2, :, 3] = 0.0  # rank deficient
    np.testing.assert_allclose(inference.pinv_each(jnp.asarray(matrices)), np.linalg.pinv(matrices), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("num", [1500, 1499, 4001, 4000])
def test_resample_matches_scipy(num):
    x = np.random.default_rng(0).standard_normal((2, 2001 if num % 2 else 2000)).astype(np.float32)
    np.testing.assert_allclose(inference.resample(jnp.asarray(x), num), scipy.signal.resample(x, num, axis=-1),
                               atol=2e-5)


def training_losses(config, batch, steps, model):
    model = nnx.clone(model)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, batch):
        (loss, _), grads = nnx.value_and_grad(lambda m: models.loss_fn(m, batch, config), has_aux=True)(model)
        optimizer.update(model, grads)
        return loss

    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    return [float(step(model, optimizer, batch)) for _ in range(steps)]


@pytest.mark.parametrize(
    "loss,bands",
    [
        ("matrix", 1),
        pytest.param("signal", 1, marks=pytest.mark.heavy),
        pytest.param("matrix", 3, marks=pytest.mark.heavy),
        ("signal", 3),
    ],
)
def test_tunet_training_steps_lower_the_loss(tunets, loss, bands):
    config, model = tunets[bands]
    config = small_tunet(bands=bands, loss=loss)
    history = training_losses(config, linear_batch(config, batch=4), steps=5, model=model)
    assert all(np.isfinite(history))
    assert history[-1] < 0.9 * history[0], history


@pytest.mark.parametrize("loss", ["matrix", pytest.param("signal", marks=pytest.mark.heavy)])
def test_pair_tunet_training_steps_lower_the_loss(loss):
    config = small_tunet(loss=loss, pairs=9)
    model = build(config.model)
    history = training_losses(config, linear_batch(config, batch=4), steps=5, model=model)
    assert all(np.isfinite(history))
    assert history[-1] < 0.9 * history[0], history


@pytest.fixture(scope="module")
def small_cae():
    config = cae_config.get_config("runlocal")
    config.model.stem = "any"
    config.model.train_frames = 12
    return config, build(config.model)


def test_cae_training_steps_lower_the_loss(small_cae):
    config, model = small_cae
    batch = linear_batch(config, batch=2, samples=2000)
    history = training_losses(config, batch, steps=5, model=model)
    assert history[-1] < 0.9 * history[0], history


def test_cae_shapes_and_nonnegative_output(small_cae):
    _, model = small_cae
    windows = jax.random.uniform(jax.random.key(0), (5, 3, 129))
    out = nnx.jit(lambda m, w: m(w, use_running_average=False))(nnx.clone(model), windows)
    assert out.shape == (5, 3, 129) and bool(jnp.all(out >= 0))


def test_context_windows_and_merge():
    magnitudes = np.random.default_rng(1).uniform(size=(7, 6)).astype(np.float32)
    windows = cae.context_windows(jnp.asarray(magnitudes), 3, np.arange(6))
    for t in range(6):
        expected = magnitudes[:, [max(t - 1, 0), t, min(t + 1, 5)]].T
        np.testing.assert_array_equal(windows[t], expected)
    np.testing.assert_allclose(cae.merge_windows(windows), magnitudes, rtol=1e-6)


def test_cae_stem_selection():
    config = ml_collections.ConfigDict({"model": {"stem": "viola"}, "data": {"track_names": ("violin", "viola")}})
    np.testing.assert_array_equal(cae.stem_tracks(config.model, config, 2), [1])
    config.model.stem = "any"
    np.testing.assert_array_equal(cae.stem_tracks(config.model, config, 2), [0, 1])
    config.model.stem = "cello"
    with pytest.raises(ValueError, match="cello"):
        cae.stem_tracks(config.model, config, 2)


def test_cae_predict_shapes_and_mixture_phase(small_cae):
    config, model = small_cae
    mics = jnp.asarray(linear_batch(config, batch=1, samples=1500)["mics"])
    cleaned = nnx.jit(lambda m, x: models.predict(m, x, config.model, jnp.asarray([1200])))(model, mics)
    assert cleaned.shape == mics.shape and bool(jnp.all(jnp.isfinite(cleaned)))
    # The mixture's own magnitudes with the mixture phase give the mixture back.
    n_fft, hop = config.model.n_fft, config.model.hop
    spectrogram = signal.stft(mics[0], n_fft=n_fft, hop=hop)
    rebuilt = cae.with_mixture_phase(spectrogram, jnp.abs(spectrogram))
    np.testing.assert_allclose(signal.istft(rebuilt, length=1500, n_fft=n_fft, hop=hop), mics[0], atol=1e-5)
