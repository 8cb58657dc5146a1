import jax
import jax.numpy as jnp
import numpy as np
import pyroomacoustics as pra
import pytest
from jax.test_util import check_grads

from bleedjax import bleed_model, room, simulation


@pytest.mark.parametrize("db", [-6.0, -12.0, -18.0])
def test_seipel_matrix(db):
    a = np.asarray(simulation.seipel_mixing_matrix(key=jax.random.key(0), num_tracks=6, max_crosstalk_db=db))
    np.testing.assert_array_equal(np.diag(a), 1.0)
    np.testing.assert_array_equal(a, a.T)
    off = a[~np.eye(6, dtype=bool)]
    assert off.min() >= 0 and off.max() <= 10 ** (db / 20)
    assert off.max() > 0.5 * 10 ** (db / 20)
    again = simulation.seipel_mixing_matrix(key=jax.random.key(0), num_tracks=6, max_crosstalk_db=db)
    other = simulation.seipel_mixing_matrix(key=jax.random.key(1), num_tracks=6, max_crosstalk_db=db)
    np.testing.assert_array_equal(a, np.asarray(again))
    assert not np.allclose(a, np.asarray(other))


def test_free_field_delays_follow_inverse_square():
    gains = jnp.asarray([[1.0, 0.25], [1 / 9, 1.0]])
    delays = np.asarray(simulation.free_field_delays(gains, sample_rate=343.0))
    # a = 1/r^2: r = 2 m and 3 m, 1 m reference; at fs = c one sample per metre.
    np.testing.assert_allclose(delays, [[0.0, 1.0], [2.0, 0.0]], atol=1e-5)


def test_simulate_linear_normalises_and_keeps_references():
    rng = np.random.default_rng(0)
    sources = jnp.asarray(rng.standard_normal((3, 4000)) * [[1.0], [0.1], [3.0]], jnp.float32)
    sim = simulation.simulate_linear(sources, key=jax.random.key(2), max_crosstalk_db=-12, sample_rate=16000,
                                     with_delays=False)
    peak = np.abs(np.asarray(sim.mics)).max()
    assert abs(peak - simulation.PEAK_AFTER_NORMALISATION) < 1e-5
    scale = np.asarray(sim.references)[0, 0] / np.asarray(sources)[0, 0]
    np.testing.assert_allclose(np.asarray(sim.references), np.asarray(sources) * scale, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sim.mics), np.asarray(sim.gains) @ np.asarray(sim.references),
                               atol=1e-5)


def test_integer_delays_are_shifts():
    rng = np.random.default_rng(1)
    sources = rng.standard_normal((2, 1000)).astype(np.float32)
    gains = jnp.asarray([[1.0, 0.5], [0.25, 1.0]])
    delays = jnp.asarray([[0.0, 7.0], [3.0, 0.0]])
    mics = np.asarray(bleed_model.bleed(jnp.asarray(sources), gains, delays, max_delay=8))
    shift = lambda s, d: np.concatenate([np.zeros(d), s[:-d]])
    np.testing.assert_allclose(mics[0], sources[0] + 0.5 * shift(sources[1], 7), atol=1e-5)
    np.testing.assert_allclose(mics[1], 0.25 * shift(sources[0], 3) + sources[1], atol=1e-5)


def test_fractional_delay_of_band_limited_signal():
    t = np.arange(4096)
    envelope = np.sin(np.pi * t / 4096) ** 4
    signal_at = lambda time: np.sin(2 * np.pi * 0.013 * time) * np.sin(np.pi * time / 4096) ** 4
    x = signal_at(t).astype(np.float32)
    delayed = np.asarray(bleed_model.fractional_delay(jnp.asarray(x), jnp.asarray(10.37), max_delay=16))
    expected = np.where(t >= 10.37, signal_at(t - 10.37), 0.0)
    assert envelope.max() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(delayed, expected, atol=2e-4)


def test_bleed_gradients():
    rng = np.random.default_rng(2)
    sources = jnp.asarray(rng.standard_normal((2, 64)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((2, 64)), jnp.float32)

    def loss(gains, delays):
        return jnp.mean((bleed_model.bleed(sources, gains, delays, max_delay=4) - target) ** 2)

    gains = jnp.asarray([[1.0, 0.3], [0.2, 1.0]])
    delays = jnp.asarray([[0.0, 1.3], [2.6, 0.0]])
    check_grads(loss, (gains, delays), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
    grad_delay = jax.grad(loss, argnums=1)(gains, delays)
    assert np.all(np.isfinite(np.asarray(grad_delay))) and np.abs(np.asarray(grad_delay)).max() > 0


def test_room_keeps_every_image():
    rng = np.random.default_rng(3)
    sources = rng.standard_normal((3, 4000)) * 0.1
    geometry = room.random_geometry(3, seed=0, rt60=0.3)
    result = room.simulate_room(sources, sample_rate=8000, geometry=geometry)
    np.testing.assert_allclose(result.mics, result.images.sum(axis=1), atol=1e-5)
    np.testing.assert_array_equal(result.references, result.images[[0, 1, 2], [0, 1, 2]])
    assert abs(np.abs(result.mics).max() - simulation.PEAK_AFTER_NORMALISATION) < 1e-5
    # Against pyroomacoustics' own mix of the same room.
    absorption, max_order = pra.inverse_sabine(geometry.rt60, geometry.dimensions)
    reference_room = pra.ShoeBox(geometry.dimensions, fs=8000, materials=pra.Material(absorption),
                                 max_order=max_order)
    for position, s in zip(geometry.source_positions, sources):
        reference_room.add_source(position, signal=s)
    reference_room.add_microphone_array(np.asarray(geometry.mic_positions).T)
    reference_room.simulate()
    theirs = reference_room.mic_array.signals[:, :4000]
    scale = result.mics[0, 100] / theirs[0, 100]
    np.testing.assert_allclose(result.mics, theirs * scale, atol=1e-4)
    np.testing.assert_array_equal(np.diag(result.gains), 1.0)
    assert np.all(np.diag(result.delays) == 0) and np.all(result.delays[~np.eye(3, dtype=bool)] > 0)
