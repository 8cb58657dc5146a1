"""Desks that play in unison (real PHENICX stems with simulated bleed): methods must not remove the
target along with the bleed (``benchmarks/quality_unison.py`` measures every method)."""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from bleedjax import cli, evaluate, methods, reduce, sessions
from bleedjax.methods import differentiable
from bleedjax.simulate_folder import simulate_arrays

REPO = pathlib.Path(__file__).resolve().parents[1]
DESKS = ["violin1", "violin2", "violin3", "violin4", "viola1", "viola2"]


@pytest.fixture(scope="module")
def desks_at_minus_18_db(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("desks")
    for name in DESKS:
        (folder / f"{name}.wav").symlink_to(shared_data / "phenicx-anechoic-excerpt" / f"{name}.wav")
    session = sessions.read_session(folder)
    mics, references, _ = simulate_arrays(
        session.audio, sample_rate=session.sample_rate, bleed="linear", max_crosstalk_db=-18.0, seed=0
    )
    return mics, references, session.track_names


def _sdr_gains(name: str, overrides: dict, mics, references, names) -> np.ndarray:
    method = methods.get_method(name)
    config = method.default_config(None)
    config.update(overrides)
    cleaned = np.asarray(method.run_session(mics, config, names).cleaned[0])
    return evaluate.score(references, cleaned)["sdr"] - evaluate.score(references, mics)["sdr"]


def test_kamir_default_does_not_worsen_unison_desks(desks_at_minus_18_db):
    gains = _sdr_gains("kamir", {}, *desks_at_minus_18_db)
    assert np.all(gains > 0.0), gains


def test_differentiable_default_keeps_unison_targets(desks_at_minus_18_db):
    # With the residual stage's λ ≤ 1 (the old default) the mean is −6.7 dB and the worst track −11.5.
    gains = _sdr_gains("differentiable", {}, *desks_at_minus_18_db)
    assert gains.mean() > 0.0, gains
    assert gains.min() > -4.0, gains


# About 10 s with a cold compile cache; the shrinkage itself stays in the default run in
# tests/test_bleed_fit.py (the block jackknife, and the fit without it).
@pytest.mark.heavy
def test_differentiable_default_keeps_ten_seconds_of_rendered_desks():
    """The rendered desks (10 s, two humanised players per part), −18 dB, seed 0: the violins'
    true gains are 0.003 both ways, but the fit's least-squares gains were 0.053 / 0.061, chance
    correlation of the two players at the best of many delays, and the inversion took 0.87 dB off
    violin1_a (1.91 dB with the residual stage). The jackknife shrinkage (bleedjax.bleed_fit)
    takes them to 0 / 0.038 and every track gains."""
    session = sessions.read_session(REPO / "benchmarks" / "audio" / "unison_desks")
    mics, references, simulated = simulate_arrays(
        session.audio, sample_rate=session.sample_rate, bleed="linear", max_crosstalk_db=-18.0, seed=0
    )
    truth = np.asarray(simulated["matrix"])
    violins = [session.track_names.index(name) for name in ("violin1_a.flac", "violin1_b.flac")]
    assert truth[violins[0], violins[1]] < 0.01 and truth[violins[1], violins[0]] < 0.01
    result = differentiable.reduce_session(jnp.asarray(mics), differentiable.Settings())
    gains = np.asarray(result.params.gains)
    assert gains[violins[0], violins[1]] < 0.045 and gains[violins[1], violins[0]] < 0.045, gains
    errors = np.asarray(result.params.gains) - truth
    strong = (truth > 0.03) & ~np.eye(len(mics), dtype=bool)
    assert np.all(np.abs(errors[strong]) < 0.25 * truth[strong]), (gains, truth)
    improvement = evaluate.score(references, np.asarray(result.cleaned))["sdr"] - evaluate.score(references, mics)["sdr"]
    assert improvement.min() > 1.0, improvement


def test_residual_stage_follows_the_fits_significance():
    """The residual stage's weights are ``min(f_ij, f_ji)`` of the shrinkage factors on sessions of
    at least ``residual_significance_min_frames`` frames (the true length of a padded one), and
    ones on shorter ones."""
    settings = differentiable.Settings(n_fft=256, hop=64, max_delay=32, residual_significance_min_frames=20)
    factors = jnp.asarray([[1.0, 0.9, 0.0], [0.2, 1.0, 1.0], [1.0, 0.7, 1.0]])
    expected = [[1.0, 0.2, 0.0], [0.2, 1.0, 0.7], [0.0, 0.7, 1.0]]
    long_enough = 19 * 64  # 20 frames with the centred padding
    np.testing.assert_allclose(differentiable.significance_weights(factors, long_enough, settings), expected)
    np.testing.assert_array_equal(differentiable.significance_weights(factors, long_enough - 64, settings), 1.0)
    padded = 4 * long_enough
    np.testing.assert_allclose(
        differentiable.significance_weights(factors, padded, settings, jnp.asarray(long_enough)), expected)
    np.testing.assert_array_equal(
        differentiable.significance_weights(factors, padded, settings, jnp.asarray(long_enough - 64)), 1.0)


def test_differentiable_default_keeps_four_seconds_of_rendered_desks():
    """The rendered desks cut to 4 s, −18 dB, seed 0, with the default settings. Over 4 s the
    partners' outputs stay coherent enough to open the residual stage's gate, and without the
    significance its magnitude regression took each partner for the other's bleed at its box
    (λ = 0.25 both ways, both desks): ΔSDR −1.25 dB mean, violin1_a 5.97 dB worse. The fit's
    shrinkage factors are 0 / 0.60 between the violins and 0.60 / 0.66 between the violas, so the
    residual subtracts nothing between the violins and 0.15 between the violas, and every track
    gains (7.62 dB mean, worst +1.38, the inversion's own: 8.81 / +1.38 without the stage)."""
    session = sessions.read_session(REPO / "benchmarks" / "audio" / "unison_desks")
    mics, references, _ = simulate_arrays(session.audio[:, : 4 * session.sample_rate], sample_rate=session.sample_rate,
                                          bleed="linear", max_crosstalk_db=-18.0, seed=0)
    result = differentiable.reduce_session(jnp.asarray(mics), differentiable.Settings())
    improvement = evaluate.score(references, np.asarray(result.cleaned))["sdr"] - evaluate.score(references, mics)["sdr"]
    assert improvement.min() > 1.0, improvement
    assert [name.split("_")[0] for name in session.track_names] == ["viola", "viola", "violin1", "violin1"]
    residual = np.asarray(result.residual_lambda)
    np.testing.assert_array_equal(residual[2:, 2:], 0.0)
    assert residual[0, 1] < 0.2 and residual[1, 0] < 0.2, residual


def test_mutual_bleed_pairs_names_pairs_whose_geometric_mean_reaches_the_threshold():
    matrix = np.array([[0.0, 0.5, 0.9], [0.45, 0.0, 0.1], [0.2, 0.6, 0.0]])
    # √(λ_ij λ_ji): a/b 0.47, a/c 0.42 (λ_ca = 0.2 alone is under either threshold), b/c 0.24.
    assert reduce.mutual_bleed_pairs(matrix, ["a", "b", "c"]) == [("a", "b", 0.5, 0.45), ("a", "c", 0.9, 0.2)]
    assert reduce.mutual_bleed_pairs(matrix, ["a", "b", "c"], threshold=0.45) == [("a", "b", 0.5, 0.45)]
    assert reduce.mutual_bleed_pairs(matrix, ["a", "b", "c"], threshold=0.2) == [
        ("a", "b", 0.5, 0.45), ("a", "c", 0.9, 0.2), ("b", "c", 0.1, 0.6)
    ]
    with pytest.raises(ValueError, match="square"):
        reduce.mutual_bleed_pairs(matrix[:2], ["a", "b", "c"])


@pytest.mark.parametrize("partner, warned", [("violin2", True), ("oboe1", False)])
def test_reduce_warns_about_unison_pairs(shared_data, tmp_path, capsys, partner, warned):
    stems = tmp_path / "stems"
    stems.mkdir()
    for name in ["violin1", partner, "cello"]:
        (stems / f"{name}.wav").symlink_to(shared_data / "phenicx-anechoic-excerpt" / f"{name}.wav")
    sim = tmp_path / "sim"
    assert cli.main(["simulate", str(stems), "--out", str(sim), "--max-crosstalk-db", "-18", "--seed", "0"]) == 0
    # --preset floor: the warning without the default's phase check (tests/test_phase_check.py)
    assert cli.main(["reduce", str(sim / "session"), "--out", str(tmp_path / "clean"), "--preset", "floor"]) == 0
    err = capsys.readouterr().err
    assert (f"between violin1.wav and {partner}.wav" in err or f"between {partner}.wav and violin1.wav" in err) == warned, err
    assert ("warning:" in err) == warned, err
