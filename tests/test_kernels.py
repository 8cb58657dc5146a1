"""Median-filter kernels against ``scipy.ndimage.median_filter``: bitwise equal on float32."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from bleedjax import kernels

SHAPE = (33, 41)
MODES = ("reflect", "nearest", "mirror", "constant", "wrap")
METHODS = ("network", "patches")
FOOTPRINTS = {
    "horizontal17": kernels.horizontal(17),
    "vertical17": kernels.vertical(17),
    "cross9x9": kernels.cross(9, 9),
    "cross5x3": kernels.cross(5, 3),
    "custom_even": np.array([[1, 0, 1, 1, 0], [0, 1, 0, 1, 1], [1, 0, 0, 0, 0]]),
    "wider_than_input": kernels.horizontal(45),
    "single": np.ones((1, 1), dtype=bool),
}
CASES = [(name, mode, 0.0) for name, mode in itertools.product(FOOTPRINTS, MODES)]
CASES += [("cross5x3", "constant", 0.5)]


@pytest.fixture(scope="module")
def spectrogram() -> np.ndarray:
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


@pytest.fixture(scope="module", params=METHODS)
def filtered(request, spectrogram) -> tuple[str, dict]:
    """Every case filtered by one method in one compiled call.

    LLVM optimisation is off to halve the compile time: a median is chosen by comparisons only,
    so the result cannot depend on it (the tests below without this option check the default).
    """
    method = request.param

    def all_cases(x):
        return {
            case: kernels.median_filter(
                x, FOOTPRINTS[case[0]], mode=case[1], cval=case[2], method=method
            )
            for case in CASES
        }

    x = jnp.asarray(spectrogram)
    compiled = jax.jit(all_cases).lower(x).compile({"xla_backend_optimization_level": 0})
    return method, compiled(x)


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[0]}-{case[1]}-{case[2]}")
def test_equals_scipy_bitwise(filtered, spectrogram, case):
    method, outputs = filtered
    name, mode, cval = case
    expected = scipy.ndimage.median_filter(
        spectrogram, footprint=FOOTPRINTS[name], mode=mode, cval=cval
    )
    got = np.asarray(outputs[case])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(
        got.view(np.uint32), expected.view(np.uint32), err_msg=f"{method} {case}"
    )


def test_ties_and_direct_call_equal_scipy():
    x = np.random.default_rng(1).integers(0, 4, SHAPE).astype(np.float32)
    for method in METHODS:
        got = kernels.median_filter(jnp.asarray(x), kernels.cross(9, 9), mode="wrap", method=method)
        expected = scipy.ndimage.median_filter(x, footprint=kernels.cross(9, 9), mode="wrap")
        np.testing.assert_array_equal(np.asarray(got), expected)


def test_filter_of_first_frames_ignores_what_follows_them(spectrogram):
    """A session padded into a batch by fewer frames than half the kernel's width (as
    :func:`bleedjax.reduce.padded_length` pads by up to 9 %) is filtered as it is alone."""
    garbage = np.random.default_rng(3).random((SHAPE[0], 12), dtype=np.float32) * 100
    for name in ["horizontal17", "cross5x3"]:
        filter_first = jax.jit(functools.partial(kernels.median_filter_of_first, footprint=FOOTPRINTS[name]))
        for length, padding in [(41, 0), (40, 1), (36, 5), (29, 12)]:
            first = spectrogram[:, :length]
            padded = np.concatenate([first, garbage[:, :padding]], axis=1)
            expected = scipy.ndimage.median_filter(first, footprint=FOOTPRINTS[name], mode="reflect")
            got = np.asarray(filter_first(jnp.asarray(padded), frames=length))
            assert got.shape == padded.shape
            np.testing.assert_array_equal(got[:, :length], expected, err_msg=f"{name} {padding}")


@pytest.mark.parametrize("size", range(1, 19))
def test_selection_network_zero_one_principle(size):
    """A comparator network selects rank r of any input iff it does on every 0/1 input."""
    rank = size // 2
    bits = ((np.arange(2**size)[:, None] >> np.arange(size)[None, :]) & 1).astype(np.int8)
    wires = list(bits.T)
    for i, j, keep_min, keep_max in kernels._selection_network(size, rank):
        low, high = np.minimum(wires[i], wires[j]), np.maximum(wires[i], wires[j])
        wires[i], wires[j] = (low if keep_min else None), (high if keep_max else None)
    np.testing.assert_array_equal(wires[rank], np.sort(bits, axis=1)[:, rank])


def test_builders():
    assert kernels.horizontal(5).shape == (1, 5)
    assert kernels.vertical(5).shape == (5, 1)
    footprint = kernels.cross(3, 5)
    assert footprint.dtype == bool and footprint.shape == (3, 5) and footprint.sum() == 7
    np.testing.assert_array_equal(footprint[1], True)
    np.testing.assert_array_equal(footprint[:, 2], True)
    np.testing.assert_array_equal(kernels.as_footprint([[0, 1, 0]]), [[False, True, False]])


@pytest.mark.parametrize(
    "footprint",
    [
        np.ones(3, dtype=bool),
        np.ones((3, 3, 3), dtype=bool),
        np.ones((2, 3), dtype=bool),
        np.ones((3, 4), dtype=bool),
        np.ones((0, 3), dtype=bool),
        np.zeros((3, 3), dtype=bool),
        np.array([[0, 2, 0]]),
        np.array([[0.0, 0.5, 1.0]]),
    ],
    ids=["1d", "3d", "even_rows", "even_cols", "empty", "all_false", "two", "half"],
)
def test_bad_footprint_raises(footprint):
    with pytest.raises(ValueError):
        kernels.as_footprint(footprint)
    with pytest.raises(ValueError):
        kernels.median_filter(jnp.zeros(SHAPE), footprint)


@pytest.mark.parametrize(
    "build",
    [lambda: kernels.horizontal(4), lambda: kernels.vertical(0), lambda: kernels.cross(3, 2)],
)
def test_bad_extent_raises(build):
    with pytest.raises(ValueError):
        build()


def test_bad_mode_and_method_raise():
    # TypeError: the runtime type checker rejects the Literal before the function's own ValueError.
    with pytest.raises((ValueError, TypeError)):
        kernels.median_filter(jnp.zeros(SHAPE), kernels.horizontal(3), mode="symmetric")
    with pytest.raises((ValueError, TypeError)):
        kernels.median_filter(jnp.zeros(SHAPE), kernels.horizontal(3), method="sort")


def test_vmap_over_sources_and_channels_equals_loop():
    stack = jnp.asarray(np.random.default_rng(2).random((3, 2, *SHAPE), dtype=np.float32))
    footprint = kernels.cross(9, 9)
    per_channel = jax.vmap(kernels.median_filter, in_axes=(0, None))
    got = np.asarray(jax.vmap(per_channel, in_axes=(0, None))(stack, footprint))
    assert got.shape == stack.shape
    for source, channel in np.ndindex(*stack.shape[:2]):
        one = kernels.median_filter(stack[source, channel], footprint)
        np.testing.assert_array_equal(got[source, channel], np.asarray(one))
        expected = scipy.ndimage.median_filter(
            np.asarray(stack[source, channel]), footprint=footprint
        )
        np.testing.assert_array_equal(got[source, channel], expected)
