"""GCC-PHAT, the fit of the differentiable bleed model and cleaning with it, on synthetic mixtures."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from bleedjax import bleed_fit, bleed_model, gcc_phat, signal
from bleedjax.methods import differentiable

RATE = 16000
SETTINGS = differentiable.Settings(
    n_fft=1024, hop=256, max_delay=256, rounds=3, steps=100, residual="none"
)
GAINS = np.asarray([[1.0, 0.3, 0.15], [0.25, 1.0, 0.35], [0.1, 0.2, 1.0]], np.float32)
DELAYS_MS = np.asarray([[0.0, 3.1, 7.45], [2.37, 0.0, 1.2], [9.8, 5.55, 0.0]], np.float32)


def coloured_sources(seed: int, tracks: int = 3, seconds: float = 2.0) -> np.ndarray:
    """Independent noises through different resonant filters, amplitude-modulated (music-like
    spectra and non-stationarity, but no shared content)."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    out = []
    for k in range(tracks):
        b, a = scipy.signal.iirpeak(300.0 * (k + 1), 2.0, fs=RATE)
        noise = scipy.signal.lfilter(b, a, rng.standard_normal(samples)) + 0.3 * rng.standard_normal(samples)
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * np.arange(samples) / RATE + k)
        out.append(0.1 * noise * envelope)
    return np.asarray(out, np.float32)


def delayed_mixture(seed: int = 0, seconds: float = 2.0):
    sources = coloured_sources(seed, seconds=seconds)
    delays = DELAYS_MS * 1e-3 * RATE
    mics = bleed_model.bleed(jnp.asarray(sources), jnp.asarray(GAINS), jnp.asarray(delays), max_delay=200)
    return np.asarray(mics), sources, delays


def test_gcc_phat_finds_fractional_delays():
    mics, _, delays = delayed_mixture()
    spectra = signal.stft(jnp.asarray(mics), n_fft=1024, hop=256)
    found, peaks = gcc_phat.delays(spectra, max_delay=256)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(np.asarray(found)[off], delays[off], atol=0.25)
    assert np.all(np.diag(np.asarray(found)) == 0) and np.all(np.asarray(peaks)[off] > 0)


def test_gcc_phat_candidates_start_with_the_highest_peak():
    mics, _, delays = delayed_mixture()
    cross = gcc_phat.cross_spectra(signal.stft(jnp.asarray(mics), n_fft=1024, hop=256))
    found, heights = gcc_phat.pair_candidates(cross[0, 2], max_delay=256, count=4)
    best, height = gcc_phat.pair_delay(cross[0, 2], max_delay=256)
    assert float(found[0]) == pytest.approx(float(best)) and float(heights[0]) == pytest.approx(float(height))
    assert np.all(np.diff(np.asarray(heights)) <= 0)
    assert np.min(np.abs(np.asarray(found) - delays[0, 2])) < 0.25


def test_select_delays_restores_a_lost_pair_from_the_gcc_peaks():
    """A pair whose delay went wrong and whose gain collapsed to 0 comes back: the true delay is
    among the GCC-PHAT peaks of the microphone against the sources, and the cost picks it."""
    mics, sources, delays = delayed_mixture()
    transform = {"n_fft": 1024, "hop": 256}
    stats = bleed_fit.statistics(
        signal.stft(jnp.asarray(mics), **transform), signal.stft(jnp.asarray(sources), **transform), SETTINGS
    )
    lost = bleed_model.flat(jnp.asarray(GAINS).at[0, 2].set(0.0), jnp.asarray(delays).at[0, 2].set(3.0))
    chosen = bleed_fit.select_delays(lost, stats, SETTINGS)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(np.asarray(chosen.delays)[off], delays[off], atol=0.25)
    np.testing.assert_allclose(np.asarray(chosen.gains)[off], GAINS[off], rtol=0.1)


def test_pair_gains_minimise_the_cost_along_each_gain():
    mics, _, delays = delayed_mixture()
    spectra = signal.stft(jnp.asarray(mics), n_fft=1024, hop=256)
    params = bleed_model.flat(jnp.full((3, 3), 0.1), jnp.asarray(delays))
    stats = bleed_fit.statistics(spectra, spectra, SETTINGS)
    gains, decrease = bleed_fit.pair_gains(params, stats, jnp.asarray(delays)[..., None], SETTINGS)
    off = ~np.eye(3, dtype=bool)
    assert np.all(np.asarray(gains)[off] > 0) and np.all(np.asarray(decrease)[off] > 0)
    gradient = jax.jit(jax.grad(bleed_fit.cost), static_argnums=2)
    for i, j in zip(*np.nonzero(off)):
        at_best = params._replace(gains=params.gains.at[i, j].set(gains[i, j, 0]))
        slope = float(gradient(at_best, stats, SETTINGS).gains[i, j])
        assert abs(slope) < 1e-3 * abs(float(gradient(params, stats, SETTINGS).gains[i, j])), (i, j, slope)


def _random_params(seed: int = 1) -> bleed_model.BleedParams:
    rng = np.random.default_rng(seed)
    return bleed_fit.project(
        bleed_model.BleedParams(
            jnp.asarray(rng.uniform(0, 0.5, (3, 3)), jnp.float32),
            jnp.asarray(rng.uniform(0, 100, (3, 3)), jnp.float32),
            jnp.asarray(rng.uniform(0.5, 1.5, (3, 3, 4)), jnp.float32),
        ),
        SETTINGS,
    )


def test_cost_from_statistics_equals_the_residual_energy():
    mics, _, _ = delayed_mixture()
    spectra = signal.stft(jnp.asarray(mics), n_fft=1024, hop=256)
    params = _random_params()
    proxies = bleed_fit.unmix_stft(params, spectra, SETTINGS)
    stats = bleed_fit.statistics(spectra, proxies, SETTINGS)
    ours = float(bleed_fit.cost(params, stats, SETTINGS))
    x, y = np.asarray(spectra, np.complex128), np.asarray(proxies, np.complex128)
    bleed = np.asarray(bleed_model.stft_transfer(params, n_fft=1024), np.complex128) * (1 - np.eye(3))[..., None]
    residual = x - np.einsum("ijf,jft->ift", bleed, y)
    weights = np.asarray(stats.weights, np.float64)
    direct = np.sum(np.sum(weights * np.sum(np.abs(residual) ** 2, -1), -1) / np.sum(weights * np.sum(np.abs(x) ** 2, -1), -1))
    assert ours == pytest.approx(direct, rel=1e-3)


def test_gain_standard_errors_are_the_block_jackknife_of_least_squares_gains():
    """Against a float64 NumPy jackknife over blocks of frames: each block left out in turn, every
    pair's least-squares gain against the unmixed sources with the other pairs as given; zero
    frames appended (a padded session) change nothing."""
    mics, _, _ = delayed_mixture()
    spectra = signal.stft(jnp.asarray(mics), n_fft=1024, hop=256)
    params = _random_params()
    ours = np.asarray(bleed_fit.gain_standard_errors(params, spectra, SETTINGS))
    padded = jnp.pad(spectra, ((0, 0), (0, 0), (0, 9)))
    np.testing.assert_allclose(np.asarray(bleed_fit.gain_standard_errors(params, padded, SETTINGS)), ours, rtol=1e-5)

    x = np.asarray(spectra, np.complex128)
    y = np.asarray(bleed_fit.unmix_stft(params, spectra, SETTINGS), np.complex128)
    unit = np.asarray(bleed_model.stft_transfer(params._replace(gains=jnp.ones((3, 3))), n_fft=1024), np.complex128)
    mixing = np.asarray(params.gains, np.float64)[..., None] * unit * (1 - np.eye(3))[..., None]
    power = np.sum(np.abs(x) ** 2, -1)
    weights = (power + SETTINGS.floor * power.mean(-1, keepdims=True)) ** -SETTINGS.whitening
    blocks, frames = SETTINGS.shrinkage_blocks, x.shape[-1]
    member = (np.arange(frames) * blocks) // frames
    left_out = np.zeros((blocks, 3, 3))
    for k in range(blocks):
        keep = member != k
        for i in range(3):
            for j in range(3):
                if i == j:
                    continue
                others = [m for m in range(3) if m not in (i, j)]
                target = x[i][:, keep] - np.einsum("kf,kft->ft", mixing[i, others], y[others][..., keep])
                b = np.real(np.sum(weights[i] * np.conj(unit[i, j]) * np.sum(target * np.conj(y[j][:, keep]), -1)))
                c = np.sum(weights[i] * np.abs(unit[i, j]) ** 2 * np.sum(np.abs(y[j][:, keep]) ** 2, -1))
                left_out[k, i, j] = b / c
    expected = np.sqrt((blocks - 1) / blocks * np.sum((left_out - left_out.mean(0)) ** 2, 0))
    np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=1e-6)
    assert np.all(ours[~np.eye(3, dtype=bool)] > 0)


def test_shrinkage_factors():
    gains = jnp.asarray([[1.0, 0.3, 0.0], [0.1, 1.0, 0.2], [0.15, 0.05, 1.0]])
    errors = jnp.asarray([[0.0, 0.03, 0.01], [0.1, 0.0, 0.0], [0.1, 0.02, 0.0]])
    factors = np.asarray(bleed_fit.shrinkage_factors(gains, errors, 1.5))
    # t = 10 -> 1 - 1.5²/100; t = 1 and t = 1.5 (= κ) -> 0; se = 0 -> 1; g = 0 -> 0; t = 2.5 -> 0.64
    np.testing.assert_allclose(factors, [[1.0, 0.9775, 0.0], [0.0, 1.0, 1.0], [0.0, 0.64, 1.0]], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bleed_fit.shrinkage_factors(gains, errors, 0.0)), 1.0)


def test_projection_keeps_parameters_in_range():
    params = bleed_model.BleedParams(
        jnp.asarray([[3.0, -1.0], [0.5, 2.0]]), jnp.asarray([[5.0, -3.0], [900.0, 1.0]]),
        jnp.asarray([[[2.0, 0.0], [1.0, 3.0]], [[-1.0, 1.0], [0.5, 0.5]]]),
    )
    out = bleed_fit.project(params, SETTINGS)
    np.testing.assert_allclose(np.asarray(out.gains), [[1.0, 0.0], [0.25, 1.0]])
    np.testing.assert_allclose(np.asarray(out.delays), [[0.0, 0.0], [256.0, 0.0]])
    np.testing.assert_allclose(np.asarray(out.colour), [[[1.0, 1.0], [0.5, 1.5]], [[0.0, 2.0], [1.0, 1.0]]])
    one_source = bleed_fit.project(params, dataclasses.replace(SETTINGS, same_source=((True, True), (True, True))))
    np.testing.assert_allclose(np.asarray(one_source.gains), np.eye(2))
    np.testing.assert_allclose(np.asarray(one_source.delays), 0.0)


def test_without_shrinkage_the_fit_is_the_one_before_the_shrinkage():
    """``shrinkage=False`` skips the standard errors (``nan``) and returns the gains that the
    default then shrinks by :func:`bleed_fit.shrinkage_factors`, which the result reports (ones
    without the shrinkage)."""
    mics, _, _ = delayed_mixture(0, seconds=1.0)
    small = dataclasses.replace(SETTINGS, rounds=1, steps=10)
    shrunk = differentiable.fit_session(jnp.asarray(mics), small)
    plain = differentiable.fit_session(jnp.asarray(mics), dataclasses.replace(small, shrinkage=False))
    assert np.all(np.isnan(np.asarray(plain.standard_errors)))
    assert np.all(np.isfinite(np.asarray(shrunk.standard_errors)))
    factors = bleed_fit.shrinkage_factors(plain.params.gains, shrunk.standard_errors, small.shrinkage_scale)
    expected = bleed_fit.project(plain.params._replace(gains=plain.params.gains * factors), small)
    np.testing.assert_allclose(np.asarray(shrunk.params.gains), np.asarray(expected.gains), atol=1e-6)
    np.testing.assert_allclose(np.asarray(shrunk.shrinkage_factors), np.asarray(factors), atol=1e-6)
    assert np.asarray(factors)[~np.eye(3, dtype=bool)].max() < 1.0  # every gain is shrunk a little here (0.996-0.9996)
    np.testing.assert_array_equal(np.asarray(plain.shrinkage_factors), 1.0)


def test_fit_recovers_delays_and_gains_and_cleans():
    """8 s: a gain is estimated against the microphone's own source, whose finite-sample
    correlation with the leaking source (about 1/sqrt(bandwidth x duration)) sets the gain error;
    with 2 s of these narrow-band sources it reaches 0.6 dB (measured over seeds), with 8 s 0.25 dB."""
    mics, sources, delays = delayed_mixture(seconds=8.0)
    result = differentiable.reduce_session(jnp.asarray(mics), SETTINGS)
    off = ~np.eye(3, dtype=bool)
    delay_error_ms = np.abs(np.asarray(result.params.delays) - delays)[off] / RATE * 1e3
    gain_error_db = np.abs(20 * np.log10(np.asarray(result.params.gains)[off] / GAINS[off]))
    assert delay_error_ms.max() < 0.1, delay_error_ms
    assert gain_error_db.max() < 0.5, gain_error_db
    costs = np.asarray(result.costs)
    assert costs[-1] <= costs[0]
    error = np.linalg.norm(np.asarray(result.cleaned) - sources, axis=-1) / np.linalg.norm(sources, axis=-1)
    before = np.linalg.norm(mics - sources, axis=-1) / np.linalg.norm(sources, axis=-1)
    assert np.all(error < 0.05) and np.all(error < before / 5), (error, before)


def test_batch_equals_sessions_one_by_one():
    """Two more compilations (a padded batch and a shorter session): about 11 s on 2 cores, in the
    default run since the suite runs in two workers. With the residual stage and its gate, which
    once read the inverse filter's ringing into the padding (0.030 there, up to 0.026 off in the
    output of a tonal session)."""
    settings = dataclasses.replace(SETTINGS, residual="spectral-subtraction")
    first, _, _ = delayed_mixture(0, seconds=8.0)
    second, _, _ = delayed_mixture(1)
    batch = np.stack([first, np.pad(second, ((0, 0), (0, first.shape[1] - second.shape[1])))])
    batched = differentiable.reduce_sessions(jnp.asarray(batch), settings, jnp.asarray([first.shape[1], second.shape[1]]))
    alone = differentiable.reduce_session(jnp.asarray(second), settings)
    np.testing.assert_allclose(np.asarray(batched.params.gains[1]), np.asarray(alone.params.gains), atol=2e-4)
    np.testing.assert_allclose(np.asarray(batched.params.delays[1]), np.asarray(alone.params.delays), atol=2e-3)
    np.testing.assert_allclose(np.asarray(batched.coherence[1]), np.asarray(alone.coherence), atol=1e-5)
    np.testing.assert_allclose(np.asarray(batched.cleaned[1, :, : second.shape[1]]), np.asarray(alone.cleaned), atol=2e-4)
    np.testing.assert_array_equal(np.asarray(batched.cleaned[1, :, second.shape[1] :]), 0.0)


def test_silent_track_stays_finite():
    mics, _, _ = delayed_mixture(2, seconds=8.0)
    mics = mics.copy()
    mics[2] = 0.0
    result = differentiable.reduce_session(jnp.asarray(mics), SETTINGS)
    for leaf in jax.tree.leaves(result):
        assert np.all(np.isfinite(np.asarray(leaf)))
    np.testing.assert_array_equal(np.asarray(result.cleaned)[2], 0.0)


@pytest.mark.parametrize(
    "change", [{"max_delay": 600}, {"window": "kaiser"}, {"cleaning": "magic"}, {"residual": "x"}, {"whitening": 2.0}, {"candidates": 0},
               {"residual_max_lambda": 0.0}, {"residual_gate_low": 0.3}, {"residual_gate_low": -0.1}, {"residual_gate_lags": -1},
               {"shrinkage_scale": -1.0}, {"shrinkage_blocks": 1}, {"regularisation": -1.0}, {"upsample": 0},
               {"floor": -1e-3}, {"phat_beta": -0.5}, {"learning_rate_gain": float("nan")}, {"residual_bound_quantile": 1.0},
               {"residual_bound_quantile": -0.1}, {"residual_unison_gain": -0.1}, {"residual_unison_gain": float("nan")},
               {"residual_unison_coherence": 0.0}, {"residual_unison_coherence": float("nan")},
               {"residual_floor_coherence": -0.5}, {"residual_floor_coherence": float("nan")}]
)
def test_bad_settings(change):
    with pytest.raises(ValueError):
        differentiable.Settings(**{"n_fft": 1024, "hop": 256, "max_delay": 256} | change)


@pytest.mark.parametrize("tracks", [3, bleed_fit.BROADCAST_TRACKS + 1])
def test_quadratic_form_is_the_einsum_either_way(tracks):
    """The cost's quadratic term, elementwise up to ``BROADCAST_TRACKS`` tracks and by ``einsum``
    above, against NumPy's ``einsum`` in float64."""
    rng = np.random.default_rng(tracks)
    draw = lambda: (rng.standard_normal((tracks, tracks, 33)) + 1j * rng.standard_normal((tracks, tracks, 33)))
    bleed, gram = draw(), draw()
    expected = np.einsum("ijf,ikf,jkf->if", bleed, np.conj(bleed), gram)
    got = bleed_fit._quadratic_form(jnp.asarray(bleed, jnp.complex64), jnp.asarray(gram, jnp.complex64))
    assert got.shape == (tracks, 33)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
