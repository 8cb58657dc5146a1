"""The oracle of ``benchmarks/quality_differentiable.py`` that says which delays an excerpt determines."""

import pathlib
import sys

import jax.numpy as jnp
import numpy as np

from bleedjax import bleed_model

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import quality_differentiable as qd

RATE = 16000


def mixture(sources: np.ndarray, gains: np.ndarray, delays: np.ndarray) -> np.ndarray:
    return np.asarray(bleed_model.bleed(jnp.asarray(sources), jnp.asarray(gains), jnp.asarray(delays),
                                        max_delay=bleed_model.max_delay_samples(delays)))


def test_independent_noise_determines_every_delay():
    rng = np.random.default_rng(0)
    sources = rng.standard_normal((3, RATE)).astype(np.float32)
    gains = np.array([[1.0, 0.2, 0.1], [0.15, 1.0, 0.2], [0.1, 0.25, 1.0]], np.float32)
    delays = np.array([[0.0, 37.25, 90.5], [61.0, 0.0, 18.75], [120.5, 44.0, 0.0]], np.float32)
    found = qd.determined_pairs(mixture(sources, gains, delays), sources, gains, delays, RATE, qd.settings_for(RATE, "none"))
    np.testing.assert_array_equal(found, ~np.eye(3, dtype=bool))
    shifted = delays + 16.0 * (1 - np.eye(3, dtype=np.float32))  # 1 ms off: no pair is within 0.1 ms
    found = qd.determined_pairs(mixture(sources, gains, delays), sources, gains, shifted, RATE, qd.settings_for(RATE, "none"))
    assert not found.any(), found


def test_a_source_that_plays_along_leaves_its_delay_undetermined():
    """Source 0 holds a copy of source 1 played 2.5 ms early (a player doubling a line). The
    microphone of source 1 then holds, besides its bleed of source 0 at 3.8 ms, a waveform that
    source 0 holds 2.5 ms later, and louder: least squares with the true sources puts that delay
    at 2.5 ms, so it is undetermined. Microphone 2's bleed of source 0 (gain 0.08) is quieter than
    the part of its bleed of source 1 that source 0 also holds; only the other pairs' known bleed,
    taken out first, keeps that pair determined."""
    rng = np.random.default_rng(1)
    sources = rng.standard_normal((3, RATE)).astype(np.float32)
    sources[0] += 0.5 * np.roll(sources[1], -40)
    gains = np.array([[1.0, 0.2, 0.1], [0.15, 1.0, 0.2], [0.08, 0.25, 1.0]], np.float32)
    delays = np.array([[0.0, 32.0, 90.5], [61.0, 0.0, 18.75], [120.5, 44.0, 0.0]], np.float32)
    found = qd.determined_pairs(mixture(sources, gains, delays), sources, gains, delays, RATE, qd.settings_for(RATE, "none"))
    expected = ~np.eye(3, dtype=bool)
    expected[1, 0] = False
    np.testing.assert_array_equal(found, expected)
