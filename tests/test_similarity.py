"""The similarity kernel (k-NN median) against a brute-force NumPy k-NN median."""

import jax.numpy as jnp
import numpy as np
import pytest

from bleedjax import similarity


def brute_force(values, features, *, k, context=0, min_separation=0, valid=None):
    """float64, the full distance matrix, a stable argsort (ties to the lower index)."""
    values, features = np.asarray(values, np.float64), np.asarray(features, np.float64)
    frames = features.shape[1]
    padded = np.pad(features, ((0, 0), (context, context)), mode="edge")
    stacked = np.concatenate([padded[:, c : c + frames] for c in range(2 * context + 1)])
    distance = ((stacked[:, :, None] - stacked[:, None, :]) ** 2).sum(axis=0)
    index = np.arange(frames)
    distance[np.abs(index[:, None] - index[None, :]) < min_separation] = np.inf
    if valid is not None:
        distance[:, np.asarray(valid) == 0] = np.inf
    distance = np.pad(distance, ((0, 0), (0, max(0, k - frames))), constant_values=np.inf)
    neighbours = np.argsort(distance, axis=1, kind="stable")[:, :k]
    finite = np.isfinite(np.take_along_axis(distance, neighbours, axis=1))
    neighbours = np.where(finite, neighbours, index[:, None])
    return np.sort(values[:, neighbours], axis=-1)[..., k // 2], neighbours


@pytest.mark.parametrize(
    "k, context, min_separation, block",
    [(1, 0, 0, 64), (5, 0, 0, 7), (6, 2, 3, 16), (9, 1, 5, 256), (40, 1, 30, 8)],
)
def test_equals_brute_force(k, context, min_separation, block):
    rng = np.random.default_rng(k + context)
    frames = 61
    values = rng.random((13, frames)).astype(np.float32)
    features = rng.standard_normal((4, frames)).astype(np.float32)
    expected, expected_neighbours = brute_force(values, features, k=k, context=context, min_separation=min_separation)
    stacked = similarity.stack_context(jnp.asarray(features), context)
    neighbours = similarity.nearest_frames(stacked, k=k, min_separation=min_separation, block=block)
    np.testing.assert_array_equal(neighbours, expected_neighbours)
    got = similarity.similarity_median(jnp.asarray(values), jnp.asarray(features), k=k, context=context,
                                       min_separation=min_separation, block=block)
    np.testing.assert_array_equal(got, expected.astype(np.float32))  # a selection: exact


def test_padding_frames_are_never_neighbours():
    rng = np.random.default_rng(1)
    frames = 30
    values = rng.random((5, frames)).astype(np.float32)
    features = rng.standard_normal((3, frames)).astype(np.float32)
    valid = (np.arange(frames) < 24).astype(np.float32)
    expected, expected_neighbours = brute_force(values, features, k=3, valid=valid)
    neighbours = similarity.nearest_frames(jnp.asarray(features), k=3, valid=jnp.asarray(valid), block=8)
    np.testing.assert_array_equal(neighbours, expected_neighbours)
    assert np.all(np.asarray(neighbours)[:24] < 24)
    got = similarity.similarity_median(jnp.asarray(values), jnp.asarray(features), k=3, valid=jnp.asarray(valid))
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_padding_after_the_last_real_frame_leaves_the_real_frames_as_alone():
    """Features of padding frames need not be zero (KAM + NMF's activations there are not fitted):
    the context of the last real frames repeats the last real frame, as it does alone, so a track
    padded into a batch keeps its neighbours and its median (the end of a KAM + NMF track moved by
    up to 1e-3 before)."""
    rng = np.random.default_rng(2)
    frames, real = 30, 24
    values = rng.random((5, frames)).astype(np.float32)
    features = rng.standard_normal((3, frames)).astype(np.float32)
    valid = jnp.asarray((np.arange(frames) < real).astype(np.float32))
    stacked = similarity.stack_context(jnp.asarray(features), 2, valid)
    np.testing.assert_array_equal(stacked[:, :real], similarity.stack_context(jnp.asarray(features[:, :real]), 2))
    padded = similarity.similarity_median(jnp.asarray(values), jnp.asarray(features), k=3, context=2, valid=valid)
    alone = similarity.similarity_median(jnp.asarray(values[:, :real]), jnp.asarray(features[:, :real]), k=3, context=2)
    np.testing.assert_array_equal(np.asarray(padded)[:, :real], alone)


def test_repeated_frames_replace_an_outlier():
    pattern = np.random.default_rng(2).random((8, 10)).astype(np.float32)
    values = np.tile(pattern, (1, 6))
    corrupted = values.copy()
    corrupted[:, 25] += 10.0
    restored = similarity.similarity_median(jnp.asarray(corrupted), jnp.asarray(values), k=5, min_separation=3)
    np.testing.assert_array_equal(restored, values)


def test_bad_arguments():
    features = jnp.ones((2, 5))
    with pytest.raises(ValueError, match="k must"):
        similarity.nearest_frames(features, k=0)
    with pytest.raises(ValueError, match="context"):
        similarity.stack_context(features, -1)
