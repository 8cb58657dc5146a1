"""``bleedjax analyze`` against a known simulation, through the library and the CLI, and bad input."""

import json
import pathlib

import numpy as np
import pytest
import soundfile as sf
from bleedjax.configs import differentiable as differentiable_config

from bleedjax import analyze, cli, reduce, sessions, simulate_folder
from tests.test_bleed_fit import RATE

SMALL = ["n_fft=1024", "hop=256", "max_delay=256", "rounds=3", "steps=100"]


def small_config():
    return reduce.apply_overrides(differentiable_config.get_config(), SMALL)


def broadband_sources(seed: int, tracks: int = 3, seconds: float = 4.0) -> np.ndarray:
    """Independent white noises with different slow envelopes. Broadband, so that a gain is
    estimated from many independent samples: its error against the microphone's own source is
    then about 1 / (g sqrt(samples)) relative: 0.1 dB (one standard deviation) at -7 dB and
    0.3 dB at -19 dB for these 4 s (it halves with 16 s; narrow-band sources, as in test_bleed_fit,
    need longer recordings for the same precision)."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    t = np.arange(samples) / RATE
    envelopes = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5, (tracks, 1)) * t + rng.uniform(0, 6, (tracks, 1)))
    return (0.1 * rng.standard_normal((tracks, samples)) * envelopes).astype(np.float32)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("analyze")
    stems = root / "stems"
    stems.mkdir()
    for k, source in enumerate(broadband_sources(7)):
        sf.write(stems / f"track{k}.wav", source, RATE, subtype="FLOAT")
    simulate_folder.simulate_folder(stems, root / "sim", bleed="linear", max_crosstalk_db=-6.0, seed=2)
    return root / "sim"


def test_analysis_matches_the_simulation(simulated):
    truth = json.loads((simulated / "truth.json").read_text())
    result = analyze.analyze_session(simulated / "session", config=small_config(), threshold_db=-12.0)
    gains, delays_ms = np.asarray(truth["matrix"]), np.asarray(truth["delays_ms"])
    off = ~np.eye(3, dtype=bool)
    assert np.all(gains[off] > 10 ** (-25 / 20)) and np.all(delays_ms[off] < 256 / RATE * 1e3)
    strong = gains > 10 ** (-10 / 20)
    np.testing.assert_allclose(result.levels_db[off & strong], 20 * np.log10(gains[off & strong]), atol=0.3)
    np.testing.assert_allclose(result.levels_db[off], 20 * np.log10(gains[off]), atol=1.0)
    np.testing.assert_allclose(result.delays_ms[off], delays_ms[off], atol=0.1)
    np.testing.assert_allclose(result.distances_m[off], delays_ms[off] * 1e-3 * 343.0, atol=0.04)
    energies = np.sum(sf.read(simulated / "session" / "track0.wav")[0] ** 2)
    assert energies > 0
    mics = np.stack([sf.read(simulated / "session" / f"track{k}.wav", dtype="float32")[0] for k in range(3)])
    expected = analyze.bleed_scores(gains, np.sum(mics.astype(np.float64) ** 2, axis=-1))
    np.testing.assert_allclose(result.scores_db, expected, atol=0.5)
    assert result.flagged == [t for t, s in zip(result.tracks, expected) if s > -12.0]
    assert result.seconds == pytest.approx(4.0, abs=0.01) and result.warnings == []


def test_delays_from_a_short_recording_come_with_a_warning():
    def analysis(seconds, delays):
        gains = np.full((2, 2), 0.1)
        return analyze.Analysis("s", "differentiable", ["a.wav", "b.wav"], RATE, gains, 20 * np.log10(gains),
                                delays, delays, np.zeros(2), -20.0, seconds)

    short = analysis(1.5, np.ones((2, 2)))
    assert len(short.warnings) == 1 and "1.50 s" in short.warnings[0]
    assert "warning: only 1.50 s" in analyze.format_report(short)
    assert short.to_json()["warnings"] == short.warnings
    assert analysis(analyze.MIN_SECONDS_FOR_DELAYS, np.ones((2, 2))).warnings == []
    assert analysis(1.5, None).warnings == []


@pytest.mark.parametrize("seconds", [1.5, analyze.MIN_SECONDS_FOR_DELAYS])
def test_reduce_warns_when_the_differentiable_model_fits_delays_from_a_short_session(tmp_path, seconds):
    folder = tmp_path / "session"
    folder.mkdir()
    noise = np.random.default_rng(0).standard_normal((2, int(seconds * RATE))).astype(np.float32) * 0.1
    for name, track in zip(("a", "b"), noise):
        sf.write(folder / f"{name}.wav", track, RATE)
    result = reduce.SessionResult(sessions.read_session(folder), tmp_path / "out", None, np.eye(2))
    found = reduce.warnings(result, "differentiable")
    if seconds < analyze.MIN_SECONDS_FOR_DELAYS:
        assert len(found) == 1 and found[0].startswith("only 1.50 s of audio"), found
    else:
        assert found == []
    assert reduce.warnings(result, "kamir") == []


def test_cli_writes_report_and_refuses_to_overwrite(simulated, tmp_path, capsys):
    png, report = tmp_path / "bleed.png", tmp_path / "bleed.json"
    args = ["analyze", str(simulated / "session"), "--png", str(png), "--json", str(report),
            *[part for s in SMALL for part in ("--set", s)]]
    assert cli.main(args) == 0
    assert "track0.wav" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(report.read_text())
    assert data["tracks"] == ["track0.wav", "track1.wav", "track2.wav"]
    assert data["levels_db"][0][0] is None and len(data["delays_ms"]) == 3
    before = report.read_bytes()
    assert cli.main(args) == 2
    assert "exists already" in capsys.readouterr().err
    assert report.read_bytes() == before
    assert cli.main(args + ["--overwrite"]) == 0


def test_magnitude_method_reports_levels_without_delays(simulated, tmp_path):
    report = tmp_path / "ss.json"
    assert cli.main(["analyze", str(simulated / "session"), "--method", "spectral-subtraction", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["method"] == "spectral-subtraction" and data["delays_ms"] is None
    assert all(v is None or v < 0 for row in data["levels_db"] for v in row)


def test_bad_input(tmp_path, capsys):
    single = tmp_path / "single"
    single.mkdir()
    sf.write(single / "a.wav", np.zeros(RATE), RATE)
    assert cli.main(["analyze", str(single)]) == 2
    assert "needs at least 2" in capsys.readouterr().err
    rates = tmp_path / "rates"
    rates.mkdir()
    sf.write(rates / "a.wav", np.zeros(RATE), RATE)
    sf.write(rates / "b.wav", np.zeros(RATE), 2 * RATE)
    assert cli.main(["analyze", str(rates)]) == 2
    assert "sample rate" in capsys.readouterr().err
    inside = tmp_path / "inside"
    inside.mkdir()
    for k in range(2):
        sf.write(inside / f"m{k}.wav", np.zeros(RATE), RATE)
    assert cli.main(["analyze", str(inside), "--json", str(inside / "report.json")]) == 2
    assert "inside the session folder" in capsys.readouterr().err
    assert not (inside / "report.json").exists()
    same = tmp_path / "report"
    assert cli.main(["analyze", str(inside), "--json", str(same), "--png", str(same)]) == 2
    assert "given for two reports" in capsys.readouterr().err and not same.exists()
    assert cli.main(["analyze", str(inside), "--method", "kam-nmf"]) == 2
    assert "removes interference within one" in capsys.readouterr().err


def test_dc_offsets_do_not_change_the_analysis(simulated, tmp_path):
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for k, offset in enumerate((0.1, -0.05, 0.0)):
        audio, rate = sf.read(simulated / "session" / f"track{k}.wav", dtype="float32")
        sf.write(shifted / f"track{k}.wav", audio + offset, rate, subtype="FLOAT")
    plain = analyze.analyze_session(simulated / "session", config=small_config())
    result = analyze.analyze_session(shifted, config=small_config())
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(result.levels_db[off], plain.levels_db[off], atol=0.01)
    np.testing.assert_allclose(result.delays_ms[off], plain.delays_ms[off], atol=0.001)
    np.testing.assert_allclose(result.scores_db, plain.scores_db, atol=0.01)


def test_busiest_excerpt_is_where_every_track_plays(tmp_path):
    from bleedjax import streaming

    rate, rng = 1000, np.random.default_rng(0)
    tracks = rng.standard_normal((3, 30 * rate)).astype(np.float32) * 0.1
    tracks[2, : 20 * rate] = 0.3  # silent but for a DC offset until 20 s
    tracks[2, 26 * rate :] = 0.0
    tracks[0, 22 * rate : 23 * rate] *= 0.01
    for k, track in enumerate(tracks):
        sf.write(tmp_path / f"t{k}.wav", track, rate, subtype="FLOAT")
    reader = streaming.SessionReader(tmp_path)
    assert streaming.busiest_excerpt(reader, 5 * rate, step=rate) == 20 * rate
    assert streaming.busiest_excerpt(reader, 3 * rate, step=rate) == 23 * rate
    assert streaming.busiest_excerpt(reader, 30 * rate, step=rate) == 0
    assert streaming.busiest_seconds(reader, 5.0) == (20 * rate, 5 * rate)
    assert streaming.busiest_seconds(reader, 45.0) == (0, 30 * rate)
    assert streaming.busiest_seconds(reader, 3.0) == (23 * rate, 3 * rate)
    # The same search on samples in memory.
    assert streaming.busiest_excerpt_of(tracks, 5 * rate, step=rate) == 20 * rate
    assert streaming.busiest_excerpt_of(tracks, 3 * rate, step=rate) == 23 * rate
    assert streaming.busiest_excerpt_of(tracks, 30 * rate, step=rate) == 0


def test_a_long_session_is_analysed_on_its_busiest_excerpt(simulated, tmp_path, capsys):
    """The simulated 4 s, then 2 s in which track1 is silent: with at most 4 s, the analysis is
    that of the simulated session alone, and the report says where the excerpt lies."""
    longer = tmp_path / "longer"
    longer.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        audio, rate = sf.read(simulated / "session" / f"track{k}.wav", dtype="float32")
        tail = np.zeros(2 * rate, np.float32) if k == 1 else 0.1 * rng.standard_normal(2 * rate).astype(np.float32)
        sf.write(longer / f"track{k}.wav", np.concatenate([audio, tail]), rate, subtype="FLOAT")
    alone = analyze.analyze_session(simulated / "session", config=small_config())
    excerpt = analyze.analyze_session(longer, config=small_config(), max_seconds=4.0)
    np.testing.assert_array_equal(excerpt.levels_db, alone.levels_db)
    np.testing.assert_array_equal(excerpt.delays_ms, alone.delays_ms)
    assert (excerpt.start_seconds, excerpt.seconds, excerpt.session_seconds) == (0.0, 4.0, 6.0)
    assert alone.session_seconds is None
    assert "analysed 4.0 s from 0:00.0 of 0:06.0" in analyze.format_report(excerpt)
    assert excerpt.to_json()["session_seconds"] == 6.0
    assert cli.main(["analyze", str(longer), "--max-seconds", "-1"]) == 2
    assert "max_seconds must be >= 0" in capsys.readouterr().err
    assert cli.main(["analyze", str(longer), "--threshold-db", "nan"]) == 2  # once "flagged above nan dB: none"
    assert "threshold_db must be a finite level" in capsys.readouterr().err


def test_silent_track_is_reported_not_flagged(simulated, tmp_path):
    session = tmp_path / "silent"
    session.mkdir()
    for k in range(3):
        audio, rate = sf.read(simulated / "session" / f"track{k}.wav", dtype="float32")
        sf.write(session / f"track{k}.wav", audio if k < 2 else np.zeros_like(audio), rate, subtype="FLOAT")
    result = analyze.analyze_session(session, config=small_config(), threshold_db=-60.0)
    assert np.isnan(result.scores_db[2]) and "track2.wav" not in result.flagged
    assert set(result.flagged) == {"track0.wav", "track1.wav"}
    written = json.loads(json.dumps(result.to_json()))
    assert written["scores_db"]["track2.wav"] is None
    report = analyze.format_report(result)
    assert "silent" in report
    # nothing leaks from a silent track: no level, and no delay or distance either
    assert np.all(result.gains[:2, 2] == 0) and np.all(np.isneginf(result.levels_db[:2, 2]))
    assert np.all(np.isnan(result.delays_ms[:2, 2])) and np.all(np.isnan(result.distances_m[:2, 2]))
    assert [row[2] for row in written["delays_ms"]] == [None, None, None]
    assert np.isfinite(result.delays_ms[0, 1]) and "-inf" not in report
    rows = {line.split()[0]: line for line in report.splitlines()[1:4]}
    assert all("none" in rows[f"track{k}.wav"].split() for k in (0, 1)), report
    analyze.plot_analysis(tmp_path / "silent.png", result)


def test_reduce_differentiable_writes_model_artefacts(simulated, tmp_path):
    out = tmp_path / "cleaned"
    args = ["reduce", str(simulated / "session"), "--out", str(out), "--method", "differentiable",
            *[part for s in SMALL for part in ("--set", s)]]
    assert cli.main(args) == 0
    bleed = json.loads((out / "bleed.json").read_text())
    assert bleed["method"] == "differentiable" and np.allclose(np.diag(bleed["lambda"]), 1.0)
    arrays = np.load(out / "bleed.npz")
    truth = json.loads((simulated / "truth.json").read_text())
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(arrays["delays_samples"][off], np.asarray(truth["delays_samples"])[off], atol=1.6)
    assert sorted(p.name for p in out.iterdir()) == ["bleed.json", "bleed.npz", "track0.wav", "track1.wav", "track2.wav"]
    assert cli.main(args) == 2
