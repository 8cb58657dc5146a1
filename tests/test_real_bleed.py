"""The default methods on real bleed: the Dagstuhl ChoirSet excerpt of ``../shared/data``.

Every singer's headset (``HSM``) and dynamic (``DYN``) microphones hear the other singers; the
larynx microphones (``LRX``) hear almost only their own singer and serve as proxy references for
BSS Eval (``benchmarks/quality_real_bleed.py`` explains the proxy and scores every preset).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bleedjax import evaluate, methods

TAKE = "DCS_LI_QuartetB_Take04"
DEFAULT_METHODS = ["spectral-subtraction", "kamir", "differentiable"]


def _choir(shared_data, microphone: str, singers: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = shared_data / "dagstuhl-choirset-excerpt"

    def read(singer: str, kind: str) -> np.ndarray:
        return sf.read(folder / f"{TAKE}_{singer}_{kind}.wav", dtype="float32")[0]

    references = np.stack([read(s, "LRX") for s in singers])
    mics = np.stack([read(s, microphone) for s in singers])
    return references, mics, [f"{s}_{microphone}" for s in singers]


def _gains(references, mics, cleaned) -> dict[str, np.ndarray]:
    before, after = evaluate.score(references, mics), evaluate.score(references, cleaned)
    return {m: after[m] - before[m] for m in ("sdr", "sir")}


def _clean(name: str, mics: np.ndarray, names: list[str]) -> np.ndarray:
    method = methods.get_method(name)
    return np.asarray(method.run_session(mics, method.default_config(None), names).cleaned[0])


@pytest.fixture(scope="module")
def headset(shared_data):
    return _choir(shared_data, "HSM", ["A2", "T2", "B2"])


@pytest.fixture(scope="module")
def dynamic(shared_data):
    return _choir(shared_data, "DYN", ["S1", "A2", "T2", "B2"])


def test_larynx_proxy_counts_added_bleed_as_interference(headset):
    references, mics, _ = headset
    more_bleed = mics + 0.1 * (mics.sum(axis=0, keepdims=True) - mics)
    gains = _gains(references, mics, more_bleed)
    assert np.all(gains["sir"] < -0.1), gains  # A2 is the loudest: the others add only about -26 dB there
    assert gains["sir"].mean() < -2.0, gains


@pytest.mark.parametrize("name", DEFAULT_METHODS)
def test_default_methods_remove_real_headset_bleed_without_harm(headset, name):
    references, mics, names = headset
    gains = _gains(references, mics, _clean(name, mics, names))
    assert np.all(gains["sir"] > 1.0), gains
    assert np.all(gains["sdr"] > 0.0), gains


# The differentiable model's case is heavy (13 s on a 2-core AVX2 machine, 2026-12-07); on these
# recordings it stays in the default run with the headsets (above).
@pytest.mark.parametrize("name", [*DEFAULT_METHODS[:-1], pytest.param(DEFAULT_METHODS[-1], marks=pytest.mark.heavy)])
def test_default_methods_do_not_worsen_real_dynamic_microphones(dynamic, name):
    references, mics, names = dynamic
    gains = _gains(references, mics, _clean(name, mics, names))
    assert np.all(gains["sdr"] > -0.1), gains
    assert gains["sir"].mean() > 0.3, gains
