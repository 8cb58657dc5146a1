"""Microphones of one source found without a channel map (:func:`bleedjax.same_source.detect`):
spectral subtraction's and KAMIR's phase checks and the differentiable model leave such pairs
apart, as a map would, ``reduce`` says so, ``analyze`` reports them, and ``--set detect_same_source=false`` turns
it off."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from bleedjax import analyze, cli, evaluate, methods, same_source
from bleedjax.methods import differentiable_long
from tests.test_same_source import (  # noqa: F401
    assert_choir_kept_and_cleaned,
    choir_microphones,
    two_microphones_on_one_source,
)

CLOSE_AND_ROOM = same_source.from_pairs([(0, 1)], 4)
CHOIR_SINGERS = [("A2_DYN.wav", "A2_HSM.wav"), ("T2_DYN.wav", "T2_HSM.wav"), ("B2_DYN.wav", "B2_HSM.wav")]


def test_detect_needs_a_gain_and_a_delay_of_one_source():
    gains = np.array([[1.0, 0.0, 0.3], [0.7, 1.0, 0.6], [0.1, 0.9, 1.0]])
    delays = np.array([[0.0, 0.0, 0.0], [22.0, 0.0, 45.0], [0.0, 44.0, 0.0]])  # samples at 44.1 kHz
    # (1, 0): 0.7 at 0.50 ms; (1, 2): 0.6 at 1.02 ms, too late; (2, 1): 0.9 at 0.998 ms
    assert same_source.pairs(same_source.detect(gains, delays, 44100)) == [(0, 1), (1, 2)]
    assert same_source.detect(gains, delays, 44100, same_source.Detection(same_source_min_gain=0.95)) == ()
    late = same_source.Detection(same_source_max_delay_ms=0.4)
    assert same_source.detect(gains, delays, 44100, late) == ()
    assert same_source.detect(gains, delays, 88200, late) == same_source.from_pairs([(0, 1)], 3)  # 0.25 and 0.5 ms
    assert same_source.from_pairs([], 3) == () and same_source.pairs(()) == []
    with pytest.raises(ValueError, match="same_source_min_gain"):
        same_source.Detection(same_source_min_gain=0.0)
    with pytest.raises(ValueError, match="same_source_max_delay_ms"):
        same_source.Detection(same_source_max_delay_ms=float("nan"))


def test_a_pair_is_kept_only_if_found_again_with_the_others_apart():
    """The degenerate first fit of two microphones of one source (0 and 1) also puts 1 in 3 at a
    gain of one source; fitted with (0, 1) apart that gain goes, fitted with (1, 3) apart (0, 1)
    stays."""
    spurious = np.eye(4)
    spurious[1, 0], spurious[3, 1] = 0.7, 0.72
    fits = {(): spurious, CLOSE_AND_ROOM: np.eye(4), same_source.from_pairs([(1, 3)], 4): spurious * (np.arange(4) < 3)}
    asked = []

    def fit(table):
        asked.append(table)
        return fits[table], np.zeros((4, 4))

    assert same_source.detect_confirmed(fit, 44100) == CLOSE_AND_ROOM
    assert asked == [(), same_source.from_pairs([(1, 3)], 4), CLOSE_AND_ROOM]


def test_fits_with_different_tables_share_one_compilation(monkeypatch):
    """The confirmations of :func:`same_source.detect_confirmed` fit one session with several
    tables; the table goes in traced, so they compile once (the Dagstuhl choir's five fits:
    22 s → 13 s of spectral subtraction's first run), and each still fits no bleed within its
    pairs."""
    from bleedjax import bleed_fit
    from bleedjax.methods import differentiable

    traced, fit = [], bleed_fit.fit
    monkeypatch.setattr(bleed_fit, "fit", lambda spectra, settings, *mask: traced.append(settings.same_source)
                        or fit(spectra, settings, *mask))
    rng = np.random.default_rng(0)
    mics = jnp.asarray((np.eye(3) + 0.3 * (1 - np.eye(3))) @ rng.standard_normal((3, 8000)), jnp.float32)
    settings = differentiable.Settings(steps=2, rounds=2)
    fitted = {}
    for pair in [None, (0, 1), (1, 2)]:
        table = () if pair is None else same_source.from_pairs([pair], 3)
        fitted[pair] = np.asarray(differentiable.fit_session(
            mics, dataclasses.replace(settings, same_source=table)).params.gains)
    assert traced == [()]
    assert np.all(fitted[None][[0, 1, 1, 2], [1, 0, 2, 1]] > 0.01), fitted[None]
    for pair in [(0, 1), (1, 2)]:
        assert fitted[pair][pair] == 0.0 and fitted[pair][pair[::-1]] == 0.0, fitted[pair]


def test_sessions_with_a_pair_are_fitted_again_with_their_table(monkeypatch):
    """The differentiable model's batch (the fits faked): the session whose fit finds a pair is
    fitted and cleaned again with that table, in place, and the other keeps its first result."""
    from bleedjax.bleed_model import BleedParams
    from bleedjax.methods import differentiable

    def fake_reduce(audio, settings, lengths, apart_masks):
        sessions, tracks = audio.shape[:2]
        assert not settings.same_source  # the tables go in as masks
        mark = np.where(np.asarray(apart_masks)[:, 0, 1] == 0.0, 2.0, 1.0)  # 2: fitted with (0, 1) apart
        params = BleedParams(np.broadcast_to(mark[:, None, None], (sessions, tracks, tracks)).copy(),
                             np.zeros((sessions, tracks, tracks)), np.ones((sessions, tracks, tracks, 1)))
        return differentiable.Result(np.broadcast_to(mark[:, None, None], audio.shape).copy(), params, params,
                                     np.zeros((sessions, 4)), np.zeros((sessions, tracks, tracks)),
                                     np.zeros((sessions, tracks, tracks)))

    tables = []

    def fake_table(audio, settings, sample_rate, detection, length=None, first=None):
        tables.append(settings.same_source)
        found = CLOSE_AND_ROOM if audio[0, 0] > 0 else ()
        return found, first[0]

    monkeypatch.setattr(differentiable, "reduce_sessions", fake_reduce)
    monkeypatch.setattr(differentiable, "one_source_table", fake_table)
    audio = np.stack([np.zeros((4, 100)), np.ones((4, 100))]).astype(np.float32)
    method = methods.get_method("differentiable")
    result = method.run(audio, np.array([100, 100]), method.default_config(None), list("abcd"), sample_rate=44100)
    assert tables == [(), ()]
    np.testing.assert_array_equal(result.cleaned[:, 0, 0], [1.0, 2.0])
    np.testing.assert_array_equal(result.matrices[:, 0, 1], [1.0, 2.0])
    np.testing.assert_array_equal(result.one_source[1], np.asarray(CLOSE_AND_ROOM) & ~np.eye(4, dtype=bool))
    assert not result.one_source[0].any()


def test_presets_without_the_check_estimate_lambda_again_where_the_search_finds_a_pair(monkeypatch):
    """Spectral subtraction's paper presets (no phase check), the search faked: a session with a
    found pair is cleaned again with λ estimated without regressing the pair on each other, and no
    phase weights; the other session keeps its λ; nothing says a check ran. End to end (the
    search on the rendered close and room microphones, in memory and streamed): the heavy
    ``test_streamed_reduce_the_off_switch_and_analyze_agree``."""
    from bleedjax.methods import phase_check, spectral_subtraction

    rng = np.random.default_rng(0)
    sources = rng.standard_normal((2, 3, 8000)).astype(np.float32)
    audio = np.einsum("ij,sjn->sin", np.eye(3) + 0.5 * (1 - np.eye(3)), sources).astype(np.float32)
    pair = same_source.from_pairs([(0, 1)], 3)
    asked = []

    def fake_check(session, lam, samples, step, threshold, table, sample_rate, detection):
        asked.append((table, sample_rate, detection))
        return phase_check.Checked(np.full((3, 3), 0.01), pair if session[0, 0] == audio[1, 0, 0] else ())

    monkeypatch.setattr(phase_check, "check_session", fake_check)
    method = methods.get_method("spectral-subtraction")
    config = method.default_config("floor")
    result = method.run(audio, np.array([8000, 8000]), config, ["a", "b", "c"], sample_rate=8000)
    assert asked == [((), 8000, same_source.Detection())] * 2 and result.checked is None
    np.testing.assert_array_equal(result.one_source[1], np.asarray(pair) & ~np.eye(3, dtype=bool))
    assert not result.one_source[0].any()
    settings = methods._settings(spectral_subtraction.Settings, config)
    apart = spectral_subtraction.reduce_session(jnp.asarray(audio[1]), dataclasses.replace(settings, same_source=pair))
    # the table's λ, unweighted (batched with the table as a mask: float32 rounding apart)
    np.testing.assert_allclose(result.matrices[1], np.asarray(apart.lam), rtol=1e-4, atol=1e-6)
    assert result.matrices[1][0, 1] == 0.0 and result.matrices[0][0, 1] > 0.1
    plain = spectral_subtraction.reduce_session(jnp.asarray(audio[0]), settings)
    np.testing.assert_allclose(result.matrices[0], np.asarray(plain.lam), rtol=1e-4, atol=1e-6)
    config.detect_same_source = False
    asked.clear()
    method.run(audio, np.array([8000, 8000]), config, ["a", "b", "c"], sample_rate=8000)
    assert asked == []  # the paper's λ as it is


def test_kamir_presets_that_keep_lambda_at_rho_only_search(monkeypatch):
    """KAMIR's presets with Λ fixed at ρ (here K2), the search faked: the check gets K4's gains
    and bounds nothing; the session where it finds a pair is cleaned with the pair on one source,
    as with a channel map (reported 0 between the two, ρ elsewhere), the other as the preset alone,
    and nothing says a bound ran. On the choir, in memory and streamed: the heavy
    :func:`test_kamir_with_lambda_at_rho_finds_the_choirs_pairs`."""
    from bleedjax.methods import kamir, phase_check

    rng = np.random.default_rng(0)
    sources = rng.standard_normal((2, 3, 8000)).astype(np.float32)
    audio = np.einsum("ij,sjn->sin", np.eye(3) + 0.5 * (1 - np.eye(3)), sources).astype(np.float32)
    pair = same_source.from_pairs([(0, 1)], 3)
    apart = np.asarray(pair) & ~np.eye(3, dtype=bool)
    asked = []

    def fake_check(session, gains, sample_rate, check, detection=None, session_samples=None, bound=True):
        asked.append((np.asarray(gains), bound, detection))
        if session[0, 0] != audio[1, 0, 0]:
            return None
        return phase_check.KamirChecked(np.full((3, 3), np.inf, np.float32), pair)

    monkeypatch.setattr(phase_check, "kamir_check", fake_check)
    passes = []  # K4's pass only picks the sessions to search: its gains, not its cleaning

    def recorded(name, function):
        def call(audio, phi, settings, *rest):
            if not isinstance(audio, jax.core.Tracer):
                passes.append((name, settings))
            return function(audio, phi, settings, *rest)
        return call

    monkeypatch.setattr(kamir, "reduce_sessions", recorded("clean", kamir.reduce_sessions))
    monkeypatch.setattr(kamir, "gains_of_sessions", recorded("gains", kamir.gains_of_sessions))
    method = methods.get_method("kamir")
    config = method.default_config("K2")
    settings = methods._settings(kamir.Settings, config)
    result = method.run(audio, np.array([8000, 8000]), config, list("abc"), sample_rate=8000)
    assert passes == [("gains", phase_check.trigger_settings(settings)), ("clean", settings)], passes
    phi = jnp.asarray(kamir.identity_phi(3))
    k4 = kamir.reduce_sessions(jnp.asarray(audio), phi, phase_check.trigger_settings(settings),
                               jnp.array([8000, 8000]), jnp.full((2, 3, 3), jnp.inf))
    assert [(bound, detection) for _, bound, detection in asked] == [(False, same_source.Detection())] * 2
    for (gains, _, _), expected in zip(asked, np.asarray(k4.gains), strict=True):
        np.testing.assert_array_equal(gains, expected)
    assert result.checked is None
    np.testing.assert_array_equal(result.one_source[1], apart)
    assert not result.one_source[0].any()
    assert np.all(result.matrices[1][apart] == 0.0)
    np.testing.assert_allclose(result.matrices[1][~apart & ~np.eye(3, dtype=bool)], np.sqrt(settings.rho), rtol=1e-5)
    mapped = kamir.reduce_session(jnp.asarray(audio[1]), jnp.asarray([[True, False], [True, False], [False, True]]),
                                  settings)
    np.testing.assert_allclose(result.cleaned[1], mapped.cleaned, atol=1e-6)

    config.detect_same_source = False
    asked.clear()
    alone = method.run(audio, np.array([8000, 8000]), config, list("abc"), sample_rate=8000)
    assert asked == [] and alone.one_source is None
    np.testing.assert_allclose(result.cleaned[0], alone.cleaned[0], atol=1e-6)
    np.testing.assert_allclose(result.matrices[0], alone.matrices[0], rtol=1e-6)
    assert np.abs(result.cleaned[1] - alone.cleaned[1]).max() > 0.1


@pytest.mark.heavy
def test_without_a_map_the_pair_is_found_and_every_track_gains(two_microphones_on_one_source):  # noqa: F811
    """The differentiable model end to end (spectral subtraction: :func:`test_reduce_names_the_pair`)."""
    mics, references, names = two_microphones_on_one_source
    method = methods.get_method("differentiable")
    result = method.run_session(mics, method.default_config(None), names, sample_rate=44100)
    np.testing.assert_array_equal(result.one_source[0], np.asarray(CLOSE_AND_ROOM) & ~np.eye(4, dtype=bool))
    matrix = np.asarray(result.matrices[0])
    assert matrix[0, 1] == 0.0 and matrix[1, 0] == 0.0 and matrix[2, 0] > 0.1, matrix
    gains = evaluate.score(references, np.asarray(result.cleaned[0]))["sdr"] - evaluate.score(references, mics)["sdr"]
    assert np.all(gains > 5.0), gains  # measured: at least 9.1 dB


# About 11 s with a cold compile cache. The differentiable model reads the switch through
# methods._searched, as spectral subtraction does, whose off switch the default run tests (faked search).
@pytest.mark.heavy
def test_detection_can_be_turned_off(two_microphones_on_one_source):  # noqa: F811
    mics, references, names = two_microphones_on_one_source
    method = methods.get_method("differentiable")
    config = method.default_config(None)
    config.detect_same_source = False
    result = method.run_session(mics, config, names, sample_rate=44100)
    assert result.one_source is None and np.asarray(result.matrices[0])[1, 0] > 0.5
    gains = evaluate.score(references, np.asarray(result.cleaned[0]))["sdr"] - evaluate.score(references, mics)["sdr"]
    assert gains[:2].min() < -3.0, gains  # the failure that detection prevents


# Heavy: 40 s of the default run on a 2-core AVX2 machine (2026-12-07), most of it the seven
# microphones' six fits. Detection without a map stays in the default run in
# test_reduce_names_the_pair, and the real choir (with its map) in
# tests/test_same_source.py::test_real_choir_microphones_cleaned_together_with_a_map.
@pytest.mark.heavy
@pytest.mark.parametrize("name", ["spectral-subtraction", "kamir"])
def test_real_choir_microphones_cleaned_together_without_a_map(shared_data, monkeypatch, name):
    """The Dagstuhl quartet's seven close microphones in one session, as
    ``test_same_source.test_real_choir_microphones_cleaned_together_with_a_map`` but with no map:
    spectral subtraction's and KAMIR's checks find each singer's two microphones, and both
    defaults keep every dynamic microphone (without detection spectral subtraction lost 7.6 dB on
    one) and clean every headset (KAMIR without detection: one headset 1.24 dB worse). KAMIR's
    (20 s of the check's fits) runs in the heavy run. Spectral subtraction's passes (before the
    check, λ with the table, the checked λ) share one compilation, and the check's five fits
    another: the tables go in as arrays."""
    from bleedjax.methods import spectral_subtraction

    traced, refine = [], spectral_subtraction.refine_from_statistics

    def counted(gram, points, settings, apart_mask=None):
        traced.append(gram.shape)
        return refine(gram, points, settings, apart_mask)

    monkeypatch.setattr(spectral_subtraction, "refine_from_statistics", counted)
    mics, names, read = choir_microphones(shared_data)
    method = methods.get_method(name)
    result = method.run_session(mics, method.default_config(None), names, sample_rate=22050)
    if name == "spectral-subtraction":
        assert len(traced) <= 2, traced  # traced once each (none where this process compiled them already)
    found = [(names[i], names[k]) for i, k in np.argwhere(np.triu(result.one_source[0], 1))]
    assert found == CHOIR_SINGERS, name
    # measured, dynamic microphones: worst ΔSDR −0.02 / +0.00 dB, mean ΔSIR 0.56 / 0.60 dB;
    # headsets: worst ΔSDR 0.21 / 0.32 dB, worst ΔSIR 2.84 / 3.19 dB (spectral subtraction / KAMIR)
    assert_choir_kept_and_cleaned(mics, np.asarray(result.cleaned[0]), names, read)


@pytest.mark.heavy
@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_kamir_with_lambda_at_rho_finds_the_choirs_pairs(shared_data, tmp_path, streaming):
    """K1 (Λ at ρ = 1) on the choir's seven microphones, in memory and streamed: the search from
    K4's gains finds the three singers' pairs, which it pools (0 between them), and no dynamic
    microphone loses more than 1 dB (without the search one lost 4.34 dB, as each singer's
    second microphone took the first's voice for bleed; measured with it: −0.35 dB, as with a
    channel map; with the pairs held at KAMIR's floor instead of pooled: −0.80 dB). The plumbing,
    the search faked, in the default run: :func:`test_kamir_presets_that_keep_lambda_at_rho_only_search`."""
    mics, names, read = choir_microphones(shared_data)
    _write(mics, names, tmp_path / "choir", 22050)
    assert cli.main(["reduce", str(tmp_path / "choir"), "--out", str(tmp_path / "o"), "--method", "kamir",
                     "--preset", "K1", streaming]) == 0
    saved = json.loads((tmp_path / "o" / "bleed.json").read_text())
    assert sorted(map(tuple, saved["one_source"])) == sorted(CHOIR_SINGERS)
    assert "lambda_before_phase_check" not in saved
    lam = np.asarray(saved["lambda"])
    for first, second in CHOIR_SINGERS:
        i, k = saved["tracks"].index(first), saved["tracks"].index(second)
        assert lam[i, k] == 0.0 and lam[k, i] == 0.0, (first, second, lam)
    singers = ["S1", "A2", "T2", "B2"]
    rows = [names.index(f"{s}_DYN.wav") for s in singers]
    cleaned = np.stack([sf.read(tmp_path / "o" / names[row], dtype="float32")[0] for row in rows])
    references = np.stack([read(s, "LRX") for s in singers])
    gains = evaluate.score(references, cleaned)["sdr"] - evaluate.score(references, mics[rows])["sdr"]
    assert gains.min() > -1.0, gains


@pytest.mark.heavy
def test_streamed_kamir_finds_the_choirs_pairs(shared_data, tmp_path, capsys):
    """KAMIR streamed (its own compilation for seven tracks: 21 s) finds the pairs in memory found,
    and its check's warnings leave them to the one-source warnings."""
    mics, names, _ = choir_microphones(shared_data)
    _write(mics, names, tmp_path / "choir", 22050)
    assert cli.main(["reduce", str(tmp_path / "choir"), "--out", str(tmp_path / "o"), "--method", "kamir",
                     "--streaming"]) == 0
    saved = json.loads((tmp_path / "o" / "bleed.json").read_text())["one_source"]
    assert sorted(map(tuple, saved)) == sorted(CHOIR_SINGERS)
    err = capsys.readouterr().err
    assert all(f"{first} and {second}: taken for two microphones of one source" in err for first, second in CHOIR_SINGERS)
    assert "bounded to" not in err, err  # the session is under 2 s: the check bounds nothing else


def _write(mics: np.ndarray, names: list[str], folder, rate: int = 44100) -> None:
    folder.mkdir(exist_ok=True)
    for name, mic in zip(names, mics, strict=True):
        sf.write(folder / name, mic, rate, subtype="FLOAT")


@pytest.mark.heavy
def test_streamed_differentiable_model_finds_the_pair(two_microphones_on_one_source, tmp_path):  # noqa: F811
    mics, _, names = two_microphones_on_one_source
    _write(mics, names, tmp_path)
    settings = methods._settings(differentiable_long.differentiable.Settings,
                                 methods.get_method("differentiable").default_config(None))
    streamed = differentiable_long.reduce_long(tmp_path, tmp_path / "diff", settings, detection=same_source.Detection())
    assert streamed.one_source == CLOSE_AND_ROOM


def test_reduce_names_the_pair(two_microphones_on_one_source, tmp_path, capsys):  # noqa: F811
    """Spectral subtraction's default without a map, from the command line."""
    mics, references, names = two_microphones_on_one_source
    session = tmp_path / "session"
    _write(mics, names, session)
    assert cli.main(["reduce", str(session), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "close.wav and room.wav: taken for two microphones of one source" in err, err
    assert "detect_same_source=false" in err and "between close.wav and room.wav" not in err, err
    saved = json.loads((tmp_path / "o" / "bleed.json").read_text())
    assert saved["one_source"] == [["close.wav", "room.wav"]]
    lam = np.asarray(saved["lambda"])
    assert lam[0, 1] == 0.0 and lam[1, 0] == 0.0 and lam[2, 0] + lam[2, 1] > 0.1, lam
    cleaned = np.stack([sf.read(tmp_path / "o" / name, dtype="float32")[0] for name in names])
    gains = evaluate.score(references, cleaned)["sdr"] - evaluate.score(references, mics)["sdr"]
    assert np.all(gains > 5.0), gains  # measured: at least 7.4 dB


@pytest.mark.heavy
def test_streamed_reduce_the_off_switch_and_analyze_agree(two_microphones_on_one_source, tmp_path, capsys):  # noqa: F811
    mics, _, names = two_microphones_on_one_source
    session = tmp_path / "session"
    _write(mics, names, session)
    assert cli.main(["reduce", str(session), "--out", str(tmp_path / "o")]) == 0
    assert cli.main(["reduce", str(session), "--out", str(tmp_path / "s"), "--streaming"]) == 0
    assert "close.wav and room.wav: taken for two microphones of one source" in capsys.readouterr().err
    saved, streamed = (json.loads((tmp_path / out / "bleed.json").read_text()) for out in ("o", "s"))
    assert streamed["one_source"] == saved["one_source"] == [["close.wav", "room.wav"]]
    np.testing.assert_allclose(streamed["lambda"], saved["lambda"], atol=1e-5)
    # the paper's presets (no phase check) search too, streamed as in memory
    for out, streaming in (("q", "--no-streaming"), ("r", "--streaming")):
        assert cli.main(["reduce", str(session), "--out", str(tmp_path / out), "--set", "phase_check=false",
                         streaming]) == 0
    unchecked = [json.loads((tmp_path / out / "bleed.json").read_text()) for out in ("q", "r")]
    assert unchecked[0]["one_source"] == unchecked[1]["one_source"] == [["close.wav", "room.wav"]]
    np.testing.assert_allclose(unchecked[1]["lambda"], unchecked[0]["lambda"], atol=1e-5)
    assert "lambda_before_phase_check" not in unchecked[1]
    assert "room.wav: taken for two microphones of one source" in capsys.readouterr().err
    assert cli.main(["reduce", str(session), "--out", str(tmp_path / "p"), "--set", "detect_same_source=false"]) == 0
    assert "taken for two microphones of one source" not in capsys.readouterr().err
    assert "one_source" not in json.loads((tmp_path / "p" / "bleed.json").read_text())
    report = analyze.analyze_session(session)
    assert report.one_source == (("close.wav", "room.wav"),)
    assert report.to_json()["one_source"] == [["close.wav", "room.wav"]]
    assert any("close.wav and room.wav: taken for two microphones of one source" in w for w in report.warnings)
