"""The composable bleed model: the simulation is a special case, STFT-domain form, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bleedjax import bleed_model, signal, simulation
from bleedjax.bleed_model import BleedParams


def test_true_parameters_reproduce_the_linear_simulation():
    rng = np.random.default_rng(0)
    sources = jnp.asarray(rng.standard_normal((4, 3000)), jnp.float32)
    sim = simulation.simulate_linear(sources, key=jax.random.key(3), max_crosstalk_db=-6, sample_rate=8000)
    params = bleed_model.flat(sim.gains, sim.delays)
    max_delay = bleed_model.max_delay_samples(np.asarray(sim.delays))
    modelled = bleed_model.apply(params, sim.references, max_delay=max_delay)
    np.testing.assert_allclose(np.asarray(modelled), np.asarray(sim.mics), atol=1e-6)


def test_colour_multiplies_the_spectrum_per_band():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2048)).astype(np.float32)
    colour = jnp.asarray([[[0.5, 2.0, 1.0]]])
    params = BleedParams(jnp.ones((1, 1)), jnp.zeros((1, 1)), colour)
    out = np.asarray(bleed_model.apply(params, jnp.asarray(x), max_delay=1))
    n = bleed_model._fft_length(2048, 2)
    freqs = np.arange(n // 2 + 1) / n
    centres = np.log2(bleed_model.band_centres(3))
    response = np.interp(np.log2(np.clip(freqs, bleed_model.LOWEST_BAND, 0.5)), centres, [0.5, 2.0, 1.0])
    expected = np.fft.irfft(np.fft.rfft(x[0], n) * response, n)[:2048]
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


@pytest.mark.parametrize("n_fft", [256, 4096])
@pytest.mark.parametrize("window_name", ["hann", "hamming"])
def test_window_correlation_against_direct_sum(window_name, n_fft):
    win = signal.window(window_name, n_fft).astype(np.float64)
    lags = [0, 3, 40, n_fft // 2 + 1, n_fft - 1]
    direct = [np.sum(win[lag:] * win[: n_fft - lag]) / np.sum(win**2) for lag in lags]
    ours = bleed_model.window_correlation(jnp.asarray(lags, jnp.float32), n_fft=n_fft, window_name=window_name)
    np.testing.assert_allclose(np.asarray(ours), direct, atol=1e-6)


def test_window_correlation_series_is_short_for_a_hann_window():
    """The fit evaluates the series at every step: a Hann window's needs 54 of 4097 terms."""
    assert len(bleed_model._window_series("hann", 4096)) < 100
    assert len(bleed_model._window_series("hamming", 4096)) > 4000  # sidelobes fall as 1/k: all kept


def test_stft_model_predicts_delayed_white_noise():
    """The frame-wise model (phase ramp times ρ_w(τ)) is the least-squares prediction of a delayed
    signal's STFT from the undelayed STFT (Avargel & Cohen 2007): the regression coefficient of
    white noise measured per bin matches it."""
    rng = np.random.default_rng(2)
    source = jnp.asarray(rng.standard_normal((1, 200_000)), jnp.float32)
    params = bleed_model.flat(jnp.asarray([[0.7]]), jnp.asarray([[37.4]]))
    delayed = bleed_model.apply(params, source, max_delay=40)
    s = np.asarray(signal.stft(source, n_fft=512, hop=128))[0]
    x = np.asarray(signal.stft(delayed, n_fft=512, hop=128))[0]
    measured = np.sum(x * np.conj(s), axis=-1) / np.sum(np.abs(s) ** 2, axis=-1)
    model = np.asarray(bleed_model.stft_transfer(params, n_fft=512))[0, 0]
    np.testing.assert_allclose(measured[5:-5], model[5:-5], atol=0.03)
    predicted = np.asarray(bleed_model.apply_stft(params, jnp.asarray(s[None]), n_fft=512))[0]
    np.testing.assert_allclose(predicted, model[:, None] * s, atol=1e-6)


def test_gradients_of_every_parameter():
    rng = np.random.default_rng(3)
    sources = jnp.asarray(rng.standard_normal((2, 96)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((2, 96)), jnp.float32)
    spectra = signal.stft(sources, n_fft=32, hop=8)

    @jax.jit
    def time_loss(params):
        params = jax.tree.map(jnp.asarray, params)  # check_grads perturbs with NumPy arrays
        return jnp.mean((bleed_model.apply(params, sources, max_delay=6) - target) ** 2)

    @jax.jit
    def stft_loss(params):
        params = jax.tree.map(jnp.asarray, params)
        return jnp.mean(jnp.abs(bleed_model.apply_stft(params, spectra, n_fft=32)) ** 2)

    params = BleedParams(
        jnp.asarray([[1.0, 0.3], [0.2, 1.0]]),
        jnp.asarray([[0.0, 1.3], [2.6, 0.4]]),
        jnp.asarray([[[1.0, 0.8, 1.2], [0.9, 1.1, 0.7]], [[1.3, 0.6, 1.0], [1.0, 1.0, 1.0]]]),
    )
    for loss in (time_loss, stft_loss):
        check_grads(loss, (params,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2, eps=1e-2)
        grads = jax.grad(loss)(params)
        for leaf in jax.tree.leaves(grads):
            assert np.all(np.isfinite(np.asarray(leaf))) and np.abs(np.asarray(leaf)).max() > 0


def test_vmapped_over_sessions():
    rng = np.random.default_rng(4)
    sources = jnp.asarray(rng.standard_normal((3, 2, 500)), jnp.float32)
    gains = jnp.asarray(rng.uniform(0, 1, (3, 2, 2)), jnp.float32)
    delays = jnp.asarray(rng.uniform(0, 5, (3, 2, 2)), jnp.float32)
    batched = jax.vmap(lambda p, s: bleed_model.apply(p, s, max_delay=6))(
        jax.vmap(bleed_model.flat)(gains, delays), sources
    )
    for k in range(3):
        one = bleed_model.bleed(sources[k], gains[k], delays[k], max_delay=6)
        np.testing.assert_allclose(np.asarray(batched[k]), np.asarray(one), atol=1e-6)


def test_delays_outside_the_padding_are_clipped_not_wrapped():
    """A negative delay or one past ``max_delay`` would wrap the source's end onto its start."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal(500), jnp.float32)
    delayed = lambda d: bleed_model.fractional_delay(x, jnp.asarray(d, jnp.float32), max_delay=8)
    np.testing.assert_allclose(np.asarray(delayed(-3.0)), np.asarray(x), atol=1e-5)
    np.testing.assert_allclose(np.asarray(delayed(40.0)), np.asarray(delayed(8.0)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(delayed(8.0))[8:], np.asarray(x)[:-8], atol=1e-5)
