"""Automatic k by k-NN hubness against brute-force NumPy k-occurrences, and on known clusters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bleedjax import hubness, similarity
from bleedjax.methods import kam_nmf


def brute_force_skewness(features, *, k, min_separation=0, valid=None):
    """float64, the full distance matrix, a stable argsort; N_k and its (population) skewness."""
    features = np.asarray(features, np.float64)
    frames = features.shape[1]
    distance = ((features[:, :, None] - features[:, None, :]) ** 2).sum(axis=0)
    index = np.arange(frames)
    distance[np.abs(index[:, None] - index[None, :]) < min_separation] = np.inf
    weight = np.ones(frames) if valid is None else np.asarray(valid, np.float64)
    distance[:, weight == 0] = np.inf
    neighbours = np.argsort(distance, axis=1, kind="stable")[:, :k]
    counts = np.zeros(frames)
    for t in range(frames):
        if weight[t]:
            np.add.at(counts, neighbours[t], 1.0)
    counts = counts[weight > 0]
    return 0.0 if np.ptp(counts) == 0 else float(scipy.stats.skew(counts))


@pytest.mark.parametrize("min_separation, use_valid", [(0, False), (3, False), (2, True)])
def test_skewness_equals_brute_force(min_separation, use_valid):
    rng = np.random.default_rng(min_separation)
    frames = 47
    features = rng.standard_normal((6, frames)).astype(np.float32) ** 3  # heavy tails: some hubs
    valid = (np.arange(frames) < 40).astype(np.float32) if use_valid else None
    candidates = (1, 2, 4, 7, 12)
    neighbours, _, skew = hubness.auto_neighbours(
        jnp.asarray(features), candidates=candidates, threshold=1.0, min_separation=min_separation,
        valid=None if valid is None else jnp.asarray(valid), block=8,
    )
    assert neighbours.shape == (frames, 12)
    for k in range(1, 13):
        expected = brute_force_skewness(features, k=k, min_separation=min_separation, valid=valid)
        np.testing.assert_allclose(skew[k - 1], expected, rtol=1e-4, atol=1e-5)


def clusters(repeats: int, count: int, *, seed: int) -> np.ndarray:
    """``count`` clusters of ``repeats`` frames each, frames of a cluster on a small circle (all
    other members nearer than any other cluster), clusters interleaved in time."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, count)) * 10.0
    angle = 2 * np.pi * np.arange(repeats) / repeats
    frames = []
    for r in range(repeats):
        offset = np.zeros((8, count))
        offset[0], offset[1] = 0.1 * np.cos(angle[r]), 0.1 * np.sin(angle[r])
        frames.append(centres + offset)
    return np.concatenate(frames, axis=1).astype(np.float32)  # frame r * count + c


@pytest.mark.parametrize("repeats", [4, 6])
def test_clusters_of_repeated_frames_give_repeats_minus_one(repeats):
    features = clusters(repeats, 16, seed=repeats)
    candidates = tuple(range(1, 25))
    _, index, skew = hubness.auto_neighbours(jnp.asarray(features), candidates=candidates, threshold=0.5,
                                             min_separation=1, block=16)
    assert skew[repeats - 2] == 0.0  # every frame has all the other repetitions: N_k = k everywhere
    assert candidates[int(index)] == repeats - 1


def test_choose_k_rule():
    skew = jnp.asarray([0.1, 2.0, 0.3, 0.9, 1.5, 0.2])
    assert int(hubness.choose_k(skew, (1, 3, 4), 1.0)) == 2  # k = 4: 1, 3, 4 all at or below 1
    assert int(hubness.choose_k(skew, (1, 3, 4, 5, 6), 1.0)) == 2  # stops before k = 5
    assert int(hubness.choose_k(skew, (2, 5, 6), 1.0)) == 2  # k = 2 exceeds: the least skewed, k = 6


def test_vmaps_over_tracks():
    features = jnp.stack([jnp.asarray(clusters(r, 60 // r, seed=r)) for r in (3, 5)])  # 60 frames each
    run = jax.vmap(lambda f: hubness.auto_neighbours(f, candidates=(1, 2, 3, 4, 5, 6), threshold=0.5,
                                                     min_separation=1, block=16)[1])
    np.testing.assert_array_equal(run(features), [1, 3])


def test_chosen_median_equals_the_fixed_k_median():
    rng = np.random.default_rng(3)
    values = jnp.asarray(rng.random((5, 30)), jnp.float32)
    neighbours = similarity.nearest_frames(jnp.asarray(rng.standard_normal((3, 30)), jnp.float32), k=7)
    for index, k in enumerate((3, 5, 7)):
        got = hubness.chosen_median(values, neighbours, jnp.asarray(index), (3, 5, 7), block=8)
        np.testing.assert_array_equal(got, similarity.neighbour_median(values, neighbours[:, :k], block=8))


def test_settings():
    assert kam_nmf.Settings(auto_k=True, k_candidates=[9, 3, 5]).candidates == (3, 5, 9)
    assert kam_nmf.Settings(k=4).candidates == (4,)
    with pytest.raises(ValueError, match="k_candidates"):
        kam_nmf.Settings(auto_k=True, k_candidates=())
    with pytest.raises(ValueError, match="k_candidates"):
        kam_nmf.Settings(auto_k=True, k_candidates=(0, 3))
