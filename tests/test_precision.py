"""Every matrix product of the signal-processing methods is a float32 one on any backend.

JAX's DEFAULT precision is TF32 on NVIDIA GPUs since Ampere and bfloat16 passes on TPUs. On an
H200, before this check, spectral subtraction's λ differed from NumPy's float64 by up to 4.5e-4 and
the refined preset reached other iterations with its two schedules, most likely for that reason.
The neural models are left out: they train and infer at the accelerator's fast precision on
purpose.
"""

import jax
import jax.numpy as jnp
import pytest
from jax.extend import core

from bleedjax.methods import differentiable, kam_nmf, kamir
from bleedjax.methods import spectral_subtraction as ss

HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)


def dot_generals(jaxpr: core.Jaxpr):
    """Every ``dot_general`` equation of ``jaxpr`` and of the jaxprs nested in it (loops, conds)."""
    for equation in jaxpr.eqns:
        if equation.primitive.name == "dot_general":
            yield equation
        for value in equation.params.values():
            for inner in value if isinstance(value, (tuple, list)) else [value]:
                if isinstance(inner, core.ClosedJaxpr):
                    yield from dot_generals(inner.jaxpr)
                elif isinstance(inner, core.Jaxpr):
                    yield from dot_generals(inner)


def precisions(function, *args) -> list:
    return [equation.params["precision"] for equation in dot_generals(jax.make_jaxpr(function)(*args).jaxpr)]


@pytest.mark.parametrize("solver", ["descent", "nnls"])
@pytest.mark.parametrize("preset", ["refined", "paper", "power"])
def test_spectral_subtraction(preset, solver):
    fields = dict(ss.PRESETS[preset], solver=solver)
    if solver == "nnls":
        fields["max_lambda"] = float("inf")
    settings = ss.Settings(**fields)
    found = precisions(lambda audio: ss.reduce_session(audio, settings), jnp.zeros((3, 8192)))
    assert len(found) >= 10  # the Gram, the descent or NNLS and Eq. (7)
    assert found == [HIGHEST] * len(found)


def test_kamir_lambda_update():
    settings = kamir.Settings(**kamir.PRESETS["K4"])
    phi = jnp.asarray(kamir.identity_phi(3))
    found = precisions(lambda audio: kamir.reduce_session(audio, phi, settings), jnp.zeros((3, 8192)))
    assert found and found == [HIGHEST] * len(found)


def test_kam_nmf():
    dictionary = jnp.full((1025, 4), 0.1)
    found = precisions(lambda audio: kam_nmf.reduce_tracks(audio, dictionary, kam_nmf.Settings()), jnp.zeros((2, 16384)))
    assert found and found == [HIGHEST] * len(found)


def test_differentiable_model():
    settings = differentiable.Settings()
    found = precisions(lambda audio: differentiable.reduce_session(audio, settings), jnp.zeros((3, 16384)))
    assert len(found) >= 20  # the fit's statistics, transfer functions and the demixing solve
    assert found == [HIGHEST] * len(found)
