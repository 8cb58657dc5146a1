"""Bleed augmentation: distributions, the mixing conventions, and rooms against pyroomacoustics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bleedjax import room
from bleedjax.data import augment, rir_bank

RATE = 8000
J = 4


def stems(seed=0, samples=1024, tracks=J):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal((tracks, samples)) * 0.1, jnp.float32)


@functools.partial(jax.jit, static_argnames=("settings",))
def _draw(x, keys, present, bank, *, settings):
    one = lambda key: augment.augment(x, key=key, settings=settings, present=present, rir_bank=bank)
    return jax.vmap(one)(keys)


def draw(settings, count, x=None, present=None, rir_bank=None, seed=7):
    """``count`` augmented examples of the same stems, one compilation per settings and shape."""
    x = stems() if x is None else x
    present = jnp.ones(x.shape[0], bool) if present is None else present
    keys = jax.random.split(jax.random.key(seed), count)
    return x, jax.tree.map(np.asarray, _draw(x, keys, present, rir_bank, settings=settings))


PAPER = augment.Settings(kind="linear-paper", min_active_tracks=2, gain_db=(-6.0, 0.0))


def test_linear_paper_distributions_and_mixing():
    x, out = draw(PAPER, 2000, x=stems(samples=64))
    active = out.active
    pair = active[:, :, None] & active[:, None, :]
    eye = np.eye(J, dtype=bool)
    # matrix entries of active pairs: diagonal U(0.6, 1), off-diagonal U(0.05, 0.31), i.e. mean
    # (low + high) / 2 and standard deviation (high - low) / sqrt(12); inactive ones are zero
    for values, (low, high) in ((out.matrix[pair & eye], (0.6, 1.0)), (out.matrix[pair & ~eye], (0.05, 0.31))):
        assert values.min() >= low and values.max() <= high
        assert values.mean() == pytest.approx((low + high) / 2, abs=0.01)
        assert values.std() == pytest.approx((high - low) / np.sqrt(12), rel=0.05)
        assert values.min() < low + 0.01 and values.max() > high - 0.01
    assert np.all(out.matrix[~pair] == 0)
    np.testing.assert_allclose(out.mics, np.einsum("bij,bjt->bit", out.matrix, out.targets), atol=1e-5)
    assert np.all(out.targets[~active] == 0) and np.all(out.mics[~active] == 0)
    # K ~ U{2, 3, 4} active tracks at random positions
    counts = active.sum(axis=1)
    for k in (2, 3, 4):
        assert np.mean(counts == k) == pytest.approx(1 / 3, abs=0.04)
    assert np.mean(active, axis=0) == pytest.approx([0.75] * J, abs=0.04)
    # random gain: each active target is its stem times one gain, uniform in [-6, 0] dB
    gains = out.targets[active] / np.broadcast_to(np.asarray(x), out.targets.shape)[active]
    per_track = gains[:, 0]
    np.testing.assert_allclose(gains, np.broadcast_to(per_track[:, None], gains.shape), rtol=1e-5)
    db = 20 * np.log10(per_track)
    assert db.min() >= -6.0 - 1e-4 and db.max() <= 1e-4
    assert db.mean() == pytest.approx(-3.0, abs=0.15)
    assert db.std() == pytest.approx(6 / np.sqrt(12), rel=0.05)


def test_same_key_same_example_and_padding_stays_inactive():
    x = stems(samples=64)
    _, first = draw(PAPER, 2000, x=x)
    _, again = draw(PAPER, 2000, x=x)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    _, other = draw(PAPER, 2000, x=x, seed=8)
    assert not np.array_equal(first.matrix, other.matrix)
    present = jnp.array([True, True, False, True])
    _, padded = draw(PAPER, 2000, x=x, present=present)
    assert not padded.active[:, 2].any()
    np.testing.assert_array_equal(padded.active, first.active & np.asarray(present))
    with pytest.raises(ValueError, match="augmentation must be one of"):
        augment.Settings(kind="reverb")


def reference_fractional_delay(x, delay, n):
    """Band-limited delay by a linear phase in the DFT of the zero-padded signal."""
    spectrum = np.fft.rfft(x, n)
    phase = np.exp(-2j * np.pi * np.arange(len(spectrum)) / n * delay)
    return np.fft.irfft(spectrum * phase, n)[: len(x)]


def test_linear_seipel_is_symmetric_limited_and_delayed():
    settings = augment.Settings(kind="linear-seipel", sample_rate=RATE, min_active_tracks=J,
                                seipel_crosstalk_db=(-12.0, -6.0))
    _, out = draw(settings, 20)
    matrix = out.matrix
    np.testing.assert_allclose(matrix, np.swapaxes(matrix, 1, 2))
    np.testing.assert_allclose(np.diagonal(matrix, axis1=1, axis2=2), 1.0)
    off = matrix[:, ~np.eye(J, dtype=bool)]
    assert off.min() >= 0 and off.max() <= 10 ** (-6 / 20)
    # bleed_model pads to the power of two >= samples + max_delay + 1: the sinc interpolation is
    # periodic over that length, so the reference uses the same one
    max_delay = augment.seipel_max_delay(RATE)
    n = 1 << (out.targets.shape[-1] + max_delay).bit_length()
    for b in range(3):
        # free field, 1 m reference: a = 1 / r^2, delay (r - 1 m) / c (Seipel & Lerch 2018)
        distance = 1 / np.sqrt(np.maximum(matrix[b], 1e-3))
        delays = np.maximum(distance - 1, 0) / 343.0 * RATE
        expected = np.stack([
            sum(matrix[b, i, j] * reference_fractional_delay(out.targets[b, j], delays[i, j], n)
                for j in range(J))
            for i in range(J)
        ])
        np.testing.assert_allclose(out.mics[b], expected, atol=1e-5)


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory):
    config = rir_bank.make_config(num_tracks=3, sample_rate=RATE, rooms=2, rir_seconds=1.2,
                                  rt60=(0.25, 0.3), seed=0)
    data_dir = tmp_path_factory.mktemp("rir")
    builder = rir_bank.prepare(config, data_dir)
    examples = builder.as_data_source(split="train")
    examples = sorted((examples[i] for i in range(len(examples))), key=lambda e: int(e["room"]))
    return config, data_dir, examples


def test_rir_bank_stores_pyroomacoustics_responses(small_bank):
    config, data_dir, examples = small_bank
    bank = rir_bank.load(config, data_dir)
    assert bank.shape == (2, 3, 3, config.rir_samples)
    for index, example in enumerate(examples):
        geometry = rir_bank.geometry_of(example)
        assert geometry == rir_bank.random_room(index, config)
        responses = room.impulse_responses(geometry, sample_rate=RATE)
        assert max(len(h) for row in responses for h in row) <= config.rir_samples  # nothing cut
        for i in range(3):
            for j in range(3):
                h = responses[i][j]
                np.testing.assert_allclose(bank[index, i, j, : len(h)], h, rtol=1e-6, atol=1e-7)
                assert not bank[index, i, j, len(h):].any()


def test_room_targets_and_mics_match_pyroomacoustics(small_bank):
    config, data_dir, examples = small_bank
    bank = rir_bank.load(config, data_dir)
    x = stems(seed=3, samples=4000, tracks=3)
    settings = augment.Settings(kind="room", sample_rate=RATE, min_active_tracks=3, gain_db=(0.0, 0.0))
    for index in range(2):
        out = augment.augment(x, key=jax.random.key(index), settings=settings, rir_bank=bank[index : index + 1])
        reference = room.simulate_room(np.asarray(x), sample_rate=RATE, geometry=rir_bank.geometry_of(examples[index]))
        # simulate_room scales everything so the loudest microphone peaks at 0.9
        scale = 0.9 / np.abs(np.asarray(out.mics)).max()
        peak = np.abs(reference.mics).max()
        np.testing.assert_allclose(np.asarray(out.targets) * scale, reference.references, atol=1e-4 * peak)
        np.testing.assert_allclose(np.asarray(out.mics) * scale, reference.mics, atol=1e-4 * peak)
        np.testing.assert_allclose(out.matrix, reference.gains, rtol=1e-3)
        np.testing.assert_allclose(np.diagonal(out.matrix), 1.0, rtol=1e-6)


def test_room_draws_rooms_from_the_bank_and_masks(small_bank):
    config, data_dir, _ = small_bank
    bank = jnp.asarray(rir_bank.load(config, data_dir))
    settings = augment.Settings(kind="room", sample_rate=RATE, min_active_tracks=2)
    _, out = draw(settings, 8, x=stems(samples=2000, tracks=3), rir_bank=bank)
    pair = out.active[:, :, None] & out.active[:, None, :]
    assert np.all(out.matrix[~pair] == 0) and np.all(out.mics[~out.active] == 0)
    assert len({tuple(np.round(m[p], 5)) for m, p in zip(out.matrix, pair) if p.all()}) > 1
