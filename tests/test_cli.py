"""The command line on real files: every bad input, safe writing, layouts, batches, end to end."""

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, reduce, sessions

RATE = 16000
PLUMBING = ("--set", "phase_check=false", "--set", "detect_same_source=false")
"""Overrides for tests of the command line's plumbing (folders, batches, failures, files): the
paper's spectral subtraction, without the phase check and the search for microphones of one
source. On every :func:`write_session` both fit the differentiable model (2.8 s a session, against
0.02 s without them, compiled); ``tests/test_phase_check.py`` and
``tests/test_same_source_detection.py`` test them, through the command line too."""


def plumbing_config():
    """Spectral subtraction's default config with :data:`PLUMBING`, for ``reduce.reduce_folders``."""
    from bleedjax import methods

    return reduce.apply_overrides(methods.get_method("spectral-subtraction").default_config(None), PLUMBING[1::2])


def write_session(folder: pathlib.Path, tracks: int = 3, samples: int = RATE, seed: int = 0, **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((tracks, samples)) * np.linspace(0.05, 0.2, tracks)[:, None]
    mix = np.eye(tracks) + 0.2 * (1 - np.eye(tracks))
    mics = mix @ sources
    for i, mic in enumerate(mics):
        sf.write(folder / f"mic{i}.wav", mic, RATE, subtype=kwargs.get("subtype", "PCM_16"))
    return folder


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def snapshot(folder: pathlib.Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_reduce_writes_layout_and_bleed_json(tmp_path):
    session = write_session(tmp_path / "take1")
    stereo = np.stack([np.sin(np.arange(RATE) * 0.01), np.cos(np.arange(RATE) * 0.02)], axis=1) * 0.1
    sf.write(session / "pair.flac", stereo, RATE, subtype="PCM_24")
    before = snapshot(session)
    assert run("reduce", session, "--out", tmp_path / "out") == 0
    out = tmp_path / "out"
    assert snapshot(session) == before
    assert sorted(p.name for p in out.iterdir()) == ["bleed.json", "mic0.wav", "mic1.wav", "mic2.wav", "pair.flac"]
    info = sf.info(out / "pair.flac")
    assert (info.channels, info.samplerate, info.subtype, info.frames) == (2, RATE, "PCM_24", RATE)
    assert sf.info(out / "mic0.wav").subtype == "PCM_16"
    bleed = json.loads((out / "bleed.json").read_text())
    assert bleed["method"] == "spectral-subtraction"
    assert bleed["tracks"] == ["mic0.wav", "mic1.wav", "mic2.wav", "pair.flac[0]", "pair.flac[1]"]
    lam = np.asarray(bleed["lambda"])
    assert lam.shape == (5, 5) and np.all(lam >= 0) and np.all(np.diag(lam) == 0)
    assert not list(out.glob(".*"))


def test_several_sessions_batch_into_named_folders(tmp_path):
    first = write_session(tmp_path / "in" / "a", seed=1)
    second = write_session(tmp_path / "in" / "b", seed=2, samples=RATE // 2)
    assert run("reduce", first, second, "--out", tmp_path / "out", *PLUMBING) == 0
    assert run("reduce", second, "--out", tmp_path / "alone", *PLUMBING) == 0
    together = sf.read(tmp_path / "out" / "b" / "mic1.wav")[0]
    alone = sf.read(tmp_path / "alone" / "mic1.wav")[0]
    assert together.shape == (RATE // 2,)
    np.testing.assert_allclose(together, alone, atol=2 / 32768)
    lam_batch = json.loads((tmp_path / "out" / "b" / "bleed.json").read_text())["lambda"]
    lam_alone = json.loads((tmp_path / "alone" / "bleed.json").read_text())["lambda"]
    np.testing.assert_allclose(lam_batch, lam_alone, atol=1e-4)


def test_set_overrides_and_config_file(tmp_path, capsys):
    session = write_session(tmp_path / "s")
    config = pathlib.Path(__file__).resolve().parents[1] / "configs" / "spectral_subtraction.py"
    assert run("reduce", session, "--out", tmp_path / "o", "--config", config, "--set", "solver=nnls",
               "--set", "lambda_scale=0", "--set", "max_lambda=inf") == 0
    bleed = json.loads((tmp_path / "o" / "bleed.json").read_text())
    assert bleed["config"]["solver"] == "nnls" and bleed["config"]["lambda_scale"] == 0.0
    assert bleed["config"]["max_lambda"] == "inf"
    assert run("reduce", session, "--out", tmp_path / "q", "--set", "max_lambda=0.5", *PLUMBING) == 0
    assert np.asarray(json.loads((tmp_path / "q" / "bleed.json").read_text())["lambda"]).max() <= 0.5
    cleaned = sf.read(tmp_path / "o" / "mic0.wav")[0]
    np.testing.assert_allclose(cleaned, sf.read(session / "mic0.wav")[0], atol=2 / 32768)
    assert run("reduce", session, "--out", tmp_path / "p", "--set", "no_such_key=1") == 2
    assert "no_such_key" in capsys.readouterr().err
    # a word setting given a number is the settings' own message, not a ConfigDict cast error
    assert run("reduce", session, "--out", tmp_path / "p", "--set", "passes=0") == 2
    assert "passes must be 'auto', 'chunked' or 'whole', got '0'" in capsys.readouterr().err
    assert reduce.apply_overrides(reduce.load_config(config), ["window='hann'"]).window == "hann"


@pytest.mark.parametrize(("text", "expected"), [
    ("x = 1\n", "get_config() returning an ml_collections.ConfigDict"),
    ("def get_config(:\n", "the config file failed: SyntaxError"),
    ("def get_config():\n    return 1 / 0\n", "the config file failed: ZeroDivisionError"),
    ("from configs.kamir import get_config\n", "beta, bound_band"),
])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, text, expected):
    """A config file that fails, has no get_config(), or is another method's (its keys would be
    dropped without a word, and the method run with that config's STFT)."""
    session = write_session(tmp_path / "s")
    (tmp_path / "bad.py").write_text(text.replace("from configs.kamir", "from bleedjax.configs.kamir"))
    assert run("reduce", session, "--out", tmp_path / "o", "--config", tmp_path / "bad.py") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "bad.py" in error and expected in error, error
    assert not (tmp_path / "o").exists()


def test_switches_take_true_and_false_in_any_spelling():
    config = reduce.load_config(pathlib.Path(__file__).resolve().parents[1] / "configs" / "kamir.py")
    assert config.phase_check is True and config.phase_check_gate is True
    for text, value in [("False", False), ("false", False), ("OFF", False), ("no", False), ("0", False),
                        ("true", True), ("Yes", True), ("on", True), ("1", True)]:
        assert reduce.apply_overrides(config, [f"phase_check={text}"]).phase_check is value
    for text in ["maybe", "2", ""]:
        with pytest.raises(sessions.SessionError, match="phase_check_gate is a switch, give true or false"):
            reduce.apply_overrides(config, [f"phase_check_gate={text}"])
    assert reduce.apply_overrides(config, ["iterations=8"]).iterations == 8  # other keys as before


def bad_rate(folder):
    sf.write(folder / "mic1.wav", np.zeros(RATE), 22050)
    return "mic1.wav"


def bad_length(folder):
    sf.write(folder / "mic1.wav", np.zeros(RATE - 5), RATE)
    return "mic1.wav"


def too_few(folder):
    for p in folder.iterdir():
        if p.name != "mic0.wav":
            p.unlink()
    return "at least 2"


def unreadable(folder):
    (folder / "mic1.wav").write_bytes(b"RIFF not really a wave file")
    return "mic1.wav"


def nan_samples(folder):
    data = np.zeros(RATE, np.float32)
    data[100] = np.nan
    sf.write(folder / "mic2.wav", data, RATE, subtype="FLOAT")
    return "mic2.wav"


def inf_samples(folder):
    data = np.zeros(RATE, np.float32)
    data[5] = np.inf
    sf.write(folder / "mic2.wav", data, RATE, subtype="FLOAT")
    return "mic2.wav"


def empty_file(folder):
    sf.write(folder / "mic1.wav", np.zeros(0, np.float32), RATE)
    return "mic1.wav: holds no samples"


@pytest.mark.parametrize("spoil", [bad_rate, bad_length, too_few, unreadable, nan_samples, inf_samples, empty_file])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, spoil):
    good = write_session(tmp_path / "good", seed=3)
    session = write_session(tmp_path / "bad")
    expected = spoil(session)
    before = snapshot(session)
    assert run("reduce", good, session, "--out", tmp_path / "out") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and expected in error and error.startswith("bleedjax reduce: error:")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".bleedjax-staging-*"))
    assert snapshot(session) == before


def test_a_failure_in_a_later_batch_leaves_nothing_behind(tmp_path, capsys):
    """Each batch is written as soon as it is cleaned, but under a staging folder that only a
    run without error moves into place."""
    good = write_session(tmp_path / "good", tracks=3, seed=3)
    bad = write_session(tmp_path / "bad", tracks=2)
    nan_samples(bad)
    (bad / "mic2.wav").rename(bad / "mic1.wav")
    assert run("reduce", good, bad, "--out", tmp_path / "out", *PLUMBING) == 2
    assert "mic1.wav: contains NaN" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".bleedjax-staging-*"))
    (tmp_path / "out").mkdir()
    assert run("reduce", good, bad, "--out", tmp_path / "out", *PLUMBING) == 2
    assert not list((tmp_path / "out").iterdir())
    assert run("reduce", good, "--out", tmp_path / "out" / "deeper" / "still", *PLUMBING) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "deeper" / "still").iterdir()) == [
        "bleed.json", "mic0.wav", "mic1.wav", "mic2.wav"]
    assert not list(tmp_path.rglob(".bleedjax-staging-*"))


def test_library_results_without_audio(tmp_path):
    from bleedjax import reduce, streaming

    sessions = [write_session(tmp_path / name, seed=seed) for name, seed in (("a", 1), ("b", 2))]
    kept = reduce.reduce_folders(sessions, tmp_path / "kept", config=plumbing_config())
    light = reduce.reduce_folders(sessions, tmp_path / "light", config=plumbing_config(), keep_audio=False)
    for full, header in zip(kept, light):
        assert header.cleaned is None and isinstance(header.session, streaming.SessionReader)
        assert full.cleaned.shape == (3, RATE)
        np.testing.assert_array_equal(header.matrix, full.matrix)
        for name in ("mic0.wav", "mic1.wav", "mic2.wav"):
            assert (header.out_dir / name).read_bytes() == (full.out_dir / name).read_bytes()


def test_a_batch_holds_no_more_than_the_methods_streaming_threshold(tmp_path, monkeypatch):
    """Three sessions of 3 × 1000 samples: a method that streams above 7000 samples gets them in
    batches of two (6000 samples) and one, not all three at once (9000)."""
    import dataclasses

    from bleedjax import methods, reduce

    sizes = []
    chosen = methods.METHODS["spectral-subtraction"]

    def run_recording(audio, lengths, config, track_names, **rate):
        sizes.append(audio.shape[0])
        return chosen.run(audio, lengths, config, track_names, **rate)

    folders = [write_session(tmp_path / name, samples=1000, seed=seed) for seed, name in enumerate("abc")]
    monkeypatch.setitem(methods.METHODS, "spectral-subtraction",
                        dataclasses.replace(chosen, run=run_recording, long_samples=7000))
    assert reduce.batch_limit(methods.METHODS["spectral-subtraction"]) == 7000
    reduce.reduce_folders(folders, tmp_path / "out", config=plumbing_config(), keep_audio=False)
    assert sizes == [2, 1]
    assert reduce.batch_limit(methods.get_method("differentiable")) == methods.DIFFERENTIABLE_LONG_SAMPLES
    assert reduce.batch_limit(methods.get_method("kamir")) == reduce.MAX_BATCH_SAMPLES


def test_padded_lengths_lie_on_a_grid_at_most_9_percent_above():
    from bleedjax import reduce

    samples = np.unique(np.geomspace(1, 1e8, 4000).astype(int))
    padded = np.asarray([reduce.padded_length(int(n), 1 << 40) for n in samples])
    assert np.all(padded >= samples) and np.all(padded[samples > 1024] <= 1.0905 * samples[samples > 1024])
    assert set(padded.tolist()) == {math.ceil(1024 * 2 ** (k / 8)) for k in range(134)}  # up to 1.02e8
    assert reduce.padded_length(1000, 1 << 40) == 1024 and reduce.padded_length(1025, 1 << 40) == 1117
    assert reduce.padded_length(44100, 45000) == 45000 and reduce.padded_length(50000, 45000) == 50000


def test_sessions_of_different_lengths_share_padded_batch_shapes(tmp_path, monkeypatch):
    """Five sessions of 3 × 3500-3700 samples, two per batch at most: padded to the grid (3757),
    the three batches have two shapes (padded to their longest: three), and every output keeps its
    own file's length; the longest and the shortest equal the session cleaned alone (each alone
    is one more compilation)."""
    import dataclasses

    from bleedjax import methods, reduce

    shapes = []
    chosen = methods.METHODS["spectral-subtraction"]

    def run_recording(audio, lengths, config, track_names, **rate):
        shapes.append(audio.shape)
        return chosen.run(audio, lengths, config, track_names, **rate)

    lengths = [3700, 3500, 3600, 3550, 3650]
    folders = [write_session(tmp_path / f"s{k}", samples=n, seed=k) for k, n in enumerate(lengths)]
    monkeypatch.setitem(methods.METHODS, "spectral-subtraction",
                        dataclasses.replace(chosen, run=run_recording, long_samples=2 * 3 * 4096))
    reduce.reduce_folders(folders, tmp_path / "out", config=plumbing_config(), keep_audio=False)
    assert sorted(shapes) == [(1, 3, 3757), (2, 3, 3757), (2, 3, 3757)], shapes
    monkeypatch.setitem(methods.METHODS, "spectral-subtraction", chosen)
    for k, n in enumerate(lengths):
        if n in (min(lengths), max(lengths)):
            reduce.reduce_folders([folders[k]], tmp_path / f"alone{k}", config=plumbing_config(), keep_audio=False)
        for i in range(3):
            batched = sf.read(tmp_path / "out" / f"s{k}" / f"mic{i}.wav")[0]
            assert batched.shape == (n,)
            if n in (min(lengths), max(lengths)):
                np.testing.assert_allclose(batched, sf.read(tmp_path / f"alone{k}" / f"mic{i}.wav")[0], atol=1e-4)


def test_nan_in_a_streamed_session_is_refused_before_anything_is_written(tmp_path, capsys):
    """The streamed path reads audio block by block while it writes; it is checked first."""
    good = write_session(tmp_path / "good", seed=3)
    session = write_session(tmp_path / "bad")
    nan_samples(session)
    assert run("reduce", good, session, "--out", tmp_path / "out", "--method", "kamir", "--streaming") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "mic2.wav: contains NaN" in error
    assert not (tmp_path / "out").exists()


def test_non_finite_output_is_refused_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    """A method that returns NaN (settings it does not converge with) would fill a PCM file with
    full-scale noise; in memory or streamed, the run stops and writes nothing."""
    import dataclasses

    from bleedjax import methods, streaming

    chosen = methods.METHODS["spectral-subtraction"]

    def nan_run(audio, lengths, config, track_names, **rate):
        result = chosen.run(audio, lengths, config, track_names, **rate)
        return result._replace(cleaned=result.cleaned * np.nan)

    def nan_run_long(folder, out_dir, config, track_names, pad, progress, offsets, leave_out):
        reader = streaming.SessionReader(folder, pad=pad, leave_out=leave_out)
        writer = streaming.TrackWriter(reader, out_dir)
        with streaming.committed(writer):
            writer.write(np.full((reader.num_tracks, reader.length), np.nan))

    monkeypatch.setitem(methods.METHODS, "spectral-subtraction",
                        dataclasses.replace(chosen, run=nan_run, run_long=nan_run_long))
    good = write_session(tmp_path / "good", seed=3)
    for flag in ("--no-streaming", "--streaming"):
        assert run("reduce", good, "--out", tmp_path / "out", flag) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "NaN or infinite samples" in error and "good" in error, error
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".bleedjax-staging-*"))


def test_cleaned_tracks_clipped_in_a_pcm_file_are_named(tmp_path, capsys, monkeypatch):
    """A cleaned track beyond full scale (cleaning a track recorded near 0 dBFS can overshoot)
    loses its peaks in a PCM file: in memory or streamed, the run names the file and counts them;
    a float file keeps them and is not named."""
    import dataclasses

    from bleedjax import methods, streaming

    chosen = methods.METHODS["spectral-subtraction"]
    loud = np.zeros((3, RATE))
    loud[1, :100] = 1.5

    def loud_run(audio, lengths, config, track_names, **rate):
        return chosen.run(audio, lengths, config, track_names, **rate)._replace(
            cleaned=np.stack([loud[:, : audio.shape[-1]]] * len(audio)))

    def loud_run_long(folder, out_dir, config, track_names, pad, progress, offsets, leave_out):
        reader = streaming.SessionReader(folder, pad=pad, leave_out=leave_out)
        writer = streaming.TrackWriter(reader, out_dir)
        with streaming.committed(writer):
            writer.write(loud)
        return methods.BatchResult(None, np.zeros((1, 3, 3)), clipped=writer.clipped)

    monkeypatch.setitem(methods.METHODS, "spectral-subtraction",
                        dataclasses.replace(chosen, run=loud_run, run_long=loud_run_long))
    session = write_session(tmp_path / "s")
    floats = write_session(tmp_path / "f", subtype="FLOAT")
    for flag in ("--no-streaming", "--streaming"):
        out = tmp_path / flag
        assert run("reduce", session, floats, "--out", out, flag, *PLUMBING) == 0
        err = capsys.readouterr().err
        assert f"{out / 's' / 'mic1.wav'}: 100 samples of the cleaned track exceed full scale" in err, err
        assert err.count("exceed full scale") == 1
        assert np.abs(sf.read(out / "f" / "mic1.wav")[0]).max() > 1.49  # 1.5 plus the track's DC offset


def test_a_failure_in_a_later_streamed_session_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    """Streamed sessions are staged with the others: the first session's cleaned files, removed/
    and bleed.json appear only when every session is done (they once appeared one by one, and an
    interrupted run left cleaned files without bleed.json)."""
    import dataclasses

    from bleedjax import methods

    chosen = methods.METHODS["spectral-subtraction"]

    def failing_second(folder, *args):
        if pathlib.Path(folder).name == "second":
            raise ValueError("failed on purpose")
        return chosen.run_long(folder, *args)

    monkeypatch.setitem(methods.METHODS, "spectral-subtraction", dataclasses.replace(chosen, run_long=failing_second))
    first, second = write_session(tmp_path / "first", seed=1), write_session(tmp_path / "second", seed=2)
    assert run("reduce", first, second, "--out", tmp_path / "out", "--streaming", "--removed", *PLUMBING) == 2
    assert "second: failed on purpose" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".bleedjax-staging-*"))
    assert run("reduce", first, "--out", tmp_path / "out", "--streaming", "--removed", *PLUMBING) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bleed.json", "mic0.wav", "mic1.wav", "mic2.wav",
                                                                    "removed"]


def test_an_output_path_that_is_a_file_is_refused_before_anything_is_written(tmp_path, capsys):
    first, second = write_session(tmp_path / "in" / "a", seed=1), write_session(tmp_path / "in" / "b", seed=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "b").write_bytes(b"precious")
    assert run("reduce", first, second, "--out", out) == 2
    assert capsys.readouterr().err.strip() == f"bleedjax reduce: error: {out / 'b'}: exists and is not a folder"
    assert sorted(p.name for p in out.iterdir()) == ["b"] and (out / "b").read_bytes() == b"precious"
    assert run("simulate", first, "--out", out / "b") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("bleedjax simulate: error:") and "b" in error


def test_outputs_get_the_permissions_of_the_umask(tmp_path):
    """``mkstemp`` makes 0600 files; renamed into place they would be unreadable to the rest of a
    studio's group."""
    session = write_session(tmp_path / "s")
    previous = os.umask(0o022)
    try:
        assert run("reduce", session, "--out", tmp_path / "o", *PLUMBING) == 0
    finally:
        os.umask(previous)
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "o").iterdir()} == {
        name: 0o644 for name in ["bleed.json", "mic0.wav", "mic1.wav", "mic2.wav"]
    }


def test_too_few_tracks_names_the_audio_in_other_formats(tmp_path, capsys):
    """A session of one WAV and an AIFF (soundfile reads it, but a session is WAV/FLAC): the
    error names the AIFF, which is why the engineer's second microphone is missing."""
    session = tmp_path / "s"
    session.mkdir()
    sf.write(session / "close.wav", np.zeros(4410, np.float32), 44100)
    sf.write(session / "room.aiff", np.zeros(4410, np.float32), 44100)
    for streaming in ("--streaming", "--no-streaming"):
        assert run("reduce", session, "--out", tmp_path / "o", streaming) == 2
        assert capsys.readouterr().err.endswith(
            "has 1 microphone track(s) in WAV/FLAC files, needs at least 2 (room.aiff: not WAV or FLAC, left out)\n")
    assert not (tmp_path / "o").exists()


def test_reduce_names_audio_it_leaves_out_and_stale_artefacts(tmp_path, capsys):
    session = write_session(tmp_path / "s")
    (session / "overhead.aiff").write_bytes(b"FORM")
    write_session(session / "take2", tracks=2)
    (session / "notes").mkdir()
    out = tmp_path / "o"
    out.mkdir()
    (out / "bleed.npz").write_bytes(b"an earlier kamir run")
    (out / "mic9.wav").write_bytes(b"a track of an earlier session")
    assert run("reduce", session, "--out", out, *PLUMBING) == 0
    err = capsys.readouterr().err
    assert "overhead.aiff: not WAV or FLAC, left out of the session" in err
    assert "take2/: a folder of audio inside the session, left out" in err and "notes/" not in err
    assert f"{out / 'bleed.npz'}: from an earlier run, not by --method spectral-subtraction" in err
    assert f"{out / 'mic9.wav'}: not a track of this session" in err and "mic0.wav: not a track" not in err
    assert (out / "bleed.npz").read_bytes() == b"an earlier kamir run"


def test_pad_accepts_unequal_lengths_and_warns_about_the_padding(tmp_path, capsys):
    """The padding of a shorter track counts as its silence in every method's estimate, which
    lowers its bleed (to 0 with the default's ratio floor); the run says so."""
    session = write_session(tmp_path / "s")
    sf.write(session / "mic1.wav", np.full(RATE - 8000, 0.1), RATE)
    assert run("reduce", session, "--out", tmp_path / "o", "--pad") == 0
    assert sf.info(tmp_path / "o" / "mic1.wav").frames == RATE - 8000
    assert sf.info(tmp_path / "o" / "mic0.wav").frames == RATE
    err = capsys.readouterr().err
    assert "mic1.wav (0.50 s): shorter than the session (1.00 s) and zero-padded (--pad)" in err
    assert "mic0.wav (" not in err


@pytest.mark.parametrize("where", [".", "inside", "inside/deeper"])
def test_out_inside_input_is_refused(tmp_path, capsys, where):
    session = write_session(tmp_path / "s")
    before = snapshot(session)
    assert run("reduce", session, "--out", session / where) == 2
    assert "inside" in capsys.readouterr().err
    assert snapshot(session) == before


def test_existing_outputs_are_not_overwritten(tmp_path, capsys):
    session = write_session(tmp_path / "s")
    out = tmp_path / "o"
    out.mkdir()
    (out / "mic1.wav").write_bytes(b"precious")
    assert run("reduce", session, "--out", out) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "mic1.wav").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["mic1.wav"]
    assert run("reduce", session, "--out", out, "--overwrite", *PLUMBING) == 0
    assert sf.info(out / "mic1.wav").frames == RATE


def test_dc_offsets_do_not_change_the_bleed_estimate_and_are_kept(tmp_path):
    plain = write_session(tmp_path / "plain", subtype="FLOAT")
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    offsets = (0.1, -0.05, 0.0)
    for i, offset in enumerate(offsets):
        audio, _ = sf.read(plain / f"mic{i}.wav", dtype="float32")
        sf.write(shifted / f"mic{i}.wav", audio + offset, RATE, subtype="FLOAT")
    for session in (plain, shifted):
        assert run("reduce", session, "--out", tmp_path / f"{session.name}_out") == 0
    lam = [json.loads((tmp_path / f"{n}_out" / "bleed.json").read_text())["lambda"] for n in ("plain", "shifted")]
    np.testing.assert_allclose(lam[1], lam[0], atol=1e-5)
    for i, offset in enumerate(offsets):
        cleaned = sf.read(tmp_path / "plain_out" / f"mic{i}.wav", dtype="float32")[0]
        kept = sf.read(tmp_path / "shifted_out" / f"mic{i}.wav", dtype="float32")[0]
        np.testing.assert_allclose(kept - offset, cleaned, atol=1e-5)


def test_offsets_are_measured_over_each_track_s_own_samples():
    from bleedjax import sessions

    audio = np.array([[1.0, 3.0, 0.0, 0.0], [2.0, 2.0, 2.0, 6.0]], np.float32)
    lengths = np.array([2, 4])
    offsets = sessions.track_offsets(audio, lengths)
    np.testing.assert_allclose(offsets, [2.0, 3.0])
    centred = sessions.shift_tracks(audio, -offsets, lengths)
    np.testing.assert_array_equal(centred, [[-1.0, 1.0, 0.0, 0.0], [-1.0, -1.0, -1.0, 3.0]])
    assert centred.dtype == np.float32
    np.testing.assert_array_equal(sessions.shift_tracks(centred, offsets, lengths), audio)


def test_silent_track_is_processed_without_nan(tmp_path):
    session = write_session(tmp_path / "s")
    sf.write(session / "mic1.wav", np.zeros(RATE), RATE)
    assert run("reduce", session, "--out", tmp_path / "o") == 0
    cleaned = sf.read(tmp_path / "o" / "mic1.wav")[0]
    assert np.all(cleaned == 0)
    assert np.all(np.isfinite(json.loads((tmp_path / "o" / "bleed.json").read_text())["lambda"]))


def test_simulate_reduce_evaluate_on_real_audio(tmp_path, shared_data, capsys):
    stems = tmp_path / "stems"
    stems.mkdir()
    for name in ["violin1", "cello", "oboe1", "horn1"]:
        shutil.copy(shared_data / "phenicx-anechoic-excerpt" / f"{name}.wav", stems)
    sim = tmp_path / "sim"
    assert run("simulate", stems, "--out", sim, "--bleed", "linear", "--max-crosstalk-db", "-12", "--seed", "3") == 0
    truth = json.loads((sim / "truth.json").read_text())
    assert np.asarray(truth["matrix"]).shape == (4, 4) and truth["tracks"][0] == "cello.wav"
    assert run("reduce", sim / "session", "--out", tmp_path / "clean") == 0
    assert run("evaluate", sim / "references", sim / "session", "--json", tmp_path / "before.json") == 0
    assert run("evaluate", sim / "references", tmp_path / "clean", "--json", tmp_path / "after.json") == 0
    before = json.loads((tmp_path / "before.json").read_text())
    after = json.loads((tmp_path / "after.json").read_text())
    assert set(after["tracks"]) == {"cello.wav", "horn1.wav", "oboe1.wav", "violin1.wav"}
    assert set(after["mean"]) == {"sdr", "sir", "sar"}
    assert after["mean"]["sir"] > before["mean"]["sir"] + 10
    assert after["mean"]["sdr"] > before["mean"]["sdr"]
    assert "violin1.wav" in capsys.readouterr().out


def test_simulate_room(tmp_path):
    stems = write_session(tmp_path / "stems", tracks=3, samples=RATE // 2)
    assert run("simulate", stems, "--out", tmp_path / "sim", "--bleed", "room", "--seed", "1") == 0
    truth = json.loads((tmp_path / "sim" / "truth.json").read_text())
    assert truth["bleed"] == "room" and len(truth["room"]["mic_positions"]) == 3
    mics = np.stack([sf.read(tmp_path / "sim" / "session" / f"mic{i}.wav")[0] for i in range(3)])
    refs = np.stack([sf.read(tmp_path / "sim" / "references" / f"mic{i}.wav")[0] for i in range(3)])
    assert np.abs(mics - refs).max() > 1e-3


def test_evaluate_framewise(tmp_path):
    refs = write_session(tmp_path / "refs", samples=2 * RATE)
    estimates = write_session(tmp_path / "est", samples=2 * RATE, seed=1)
    assert run("evaluate", refs, estimates, "--framewise", "--json", tmp_path / "v4.json") == 0
    scores = json.loads((tmp_path / "v4.json").read_text())
    assert set(scores["mean"]) == {"sdr", "isr", "sir", "sar"}
    assert run("evaluate", refs, estimates, "--json", tmp_path / "v3.json") == 0
    whole = json.loads((tmp_path / "v3.json").read_text())
    assert scores["tracks"]["mic0.wav"]["sdr"] != whole["tracks"]["mic0.wav"]["sdr"]


def test_evaluate_reports_missing_estimate(tmp_path, capsys):
    refs = write_session(tmp_path / "refs")
    estimates = tmp_path / "est"
    estimates.mkdir()
    shutil.copy(refs / "mic0.wav", estimates)
    assert run("evaluate", refs, estimates) == 2
    assert "mic1.wav" in capsys.readouterr().err


def test_evaluate_silent_reference_gives_null_not_crash(tmp_path):
    refs = write_session(tmp_path / "refs")
    sf.write(refs / "mic2.wav", np.zeros(RATE), RATE)
    assert run("evaluate", refs, refs, "--json", tmp_path / "s.json") == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["tracks"]["mic2.wav"]["sdr"] is None
    assert scores["mean"]["sdr"] is not None


def test_evaluate_writes_standard_json_and_keeps_existing_files(tmp_path, capsys):
    """One track has no interference, so its SIR is +inf: standard JSON has no Infinity."""
    refs = write_session(tmp_path / "refs", tracks=2)
    (refs / "mic1.wav").unlink()
    report = tmp_path / "s.json"
    assert run("evaluate", refs, refs, "--json", report) == 0
    scores = json.loads(report.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert scores["tracks"]["mic0.wav"]["sir"] is None and scores["tracks"]["mic0.wav"]["sdr"] > 100
    report.write_text("precious")
    assert run("evaluate", refs, refs, "--json", report) == 2
    assert "exists" in capsys.readouterr().err and report.read_text() == "precious"
    assert run("evaluate", refs, refs, "--json", report, "--overwrite") == 0


def test_a_report_that_cannot_be_written_fails_first_and_names_itself(tmp_path, capsys, monkeypatch):
    """A read-only folder (os.access says no; the suite may run as root, which chmod does not
    stop) fails before evaluate or analyze computes anything, naming the report, not a hidden
    temporary file; a write that fails anyway names the file asked for."""
    from bleedjax import analyze, evaluate

    refs = write_session(tmp_path / "refs", tracks=2)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: pathlib.Path(path) != locked and real_access(path, mode))
    monkeypatch.setattr(evaluate, "evaluate_folders", lambda *a, **k: pytest.fail("computed before the check"))
    monkeypatch.setattr(analyze, "analyze_session", lambda *a, **k: pytest.fail("computed before the check"))
    for command in (["evaluate", refs, refs, "--json", locked / "s.json"], ["analyze", refs, "--png", locked / "a.png"]):
        assert run(*command) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and str(command[-1]) in error and "cannot write in" in error
    monkeypatch.undo()

    def refuse(final):
        raise PermissionError(13, "Permission denied", str(final.parent / f".{final.name}.x1y2.tmp"))

    monkeypatch.setattr(sessions, "temporary_beside", refuse)
    with pytest.raises(PermissionError) as raised:
        sessions.write_json_atomic(tmp_path / "r.json", {})
    assert raised.value.filename == str(tmp_path / "r.json")


def test_evaluate_refuses_a_silent_estimate_of_a_sounding_reference(tmp_path, capsys):
    """BSS Eval is 0/0 there: a NaN would drop the track from the means and reward muting it."""
    refs = write_session(tmp_path / "refs")
    estimates = shutil.copytree(refs, tmp_path / "est")
    sf.write(estimates / "mic1.wav", np.zeros(RATE), RATE)
    assert run("evaluate", refs, estimates) == 2
    assert "mic1.wav: the estimate is silent" in capsys.readouterr().err


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run("demo", "--out", out) == 0
    printed = capsys.readouterr().out
    assert "sdr in" in printed and "timpani.flac" in printed and "mean" in printed and "worst" in printed
    png = (out / "demo.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20000
    assert len(list((out / "cleaned").glob("*.flac"))) == 5
    scores = json.loads((out / "scores.json").read_text())
    assert scores["rows"]["mean"]["Δsir"] > 10
    # The default's phase check caps horn/timpani's λ (0.49 -> 0.22), and the demo says so as reduce does.
    assert "horn.flac and timpani.flac capped to" in printed and "by the phase check" in printed
    assert scores["notes"] and "by the phase check" in scores["notes"][0]
    names = scores["tracks"]
    horn, timpani = names.index("horn.flac"), names.index("timpani.flac")
    assert scores["estimated_lambda"][horn][timpani] < scores["lambda_before_phase_check"][horn][timpani]
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    assert run("demo", "--out", tmp_path / "foreign") == 2


def test_console_script_entry_point(tmp_path):
    session = write_session(tmp_path / "s")
    bad = subprocess.run([sys.executable, "-m", "bleedjax.cli", "reduce", str(session), "--out", str(session)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


CLI_WITH_TERMINAL_SIGNALS = (
    "import runpy, signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM}); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); runpy.run_module('bleedjax.cli', run_name='__main__')"
)
"""``python -c`` of ``python -m bleedjax.cli`` with SIGINT and SIGTERM unblocked and Ctrl-C raising
KeyboardInterrupt, as a shell starts a command. Both are inherited across exec, and in a fresh
clone's full run the worker passed SIGINT on ignored or blocked (an earlier test's library, not
bleedjax), so the child never saw Ctrl-C and finished with status 0."""


def _still_empty(folder: pathlib.Path) -> bool:
    try:
        return not any(folder.iterdir())
    except FileNotFoundError:
        return False


def test_ctrl_c_or_sigterm_during_the_commit_takes_effect_after_its_last_rename(tmp_path, monkeypatch):
    """A signal between two renames of ``StagedOutputs.commit``: every output is in place and the
    staging folder gone before the handler runs (KeyboardInterrupt; the CLI's ``Terminated``), and
    the handlers are restored (a signal there once could leave half of the outputs)."""
    import os
    import signal

    from bleedjax import sessions

    real_replace = os.replace
    handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: cli._raise_terminated}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        for signum, raised in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, cli.Terminated)):
            out = tmp_path / f"out_{signum.name}"
            staged = sessions.StagedOutputs(out)
            staged.create()
            for name in ["a.wav", "b.wav", "c/d.json"]:
                staged.path(out / name).parent.mkdir(parents=True, exist_ok=True)
                staged.path(out / name).write_text(name)
            sent = []

            def replace_after_a_signal(source, target, sent=sent, signum=signum):
                if not sent:
                    sent.append(os.kill(os.getpid(), signum))
                real_replace(source, target)

            monkeypatch.setattr(sessions.os, "replace", replace_after_a_signal)
            with pytest.raises(raised):
                staged.commit()
            monkeypatch.setattr(sessions.os, "replace", real_replace)
            assert sent and sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
                "a.wav", "b.wav", "c/d.json"]
            assert not staged.staging.exists() and signal.getsignal(signum) is handlers[signum]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_interrupted_or_terminated_reduce_leaves_nothing_and_says_so_in_one_line(tmp_path):
    """Ctrl-C (SIGINT) and SIGTERM (a job scheduler, `kill`) while outputs are staged: the staging
    folder is removed and one line is printed (SIGTERM once left the staging folder behind, and
    Ctrl-C printed a traceback)."""
    import signal
    import time

    session = write_session(tmp_path / "s", samples=16 * RATE)
    runs = {}
    for sent in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"out_{sent.name}"
        runs[sent] = subprocess.Popen([sys.executable, "-c", CLI_WITH_TERMINAL_SIGNALS, "reduce", str(session), "--out",
                                       str(out), "--method", "differentiable"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    waiting = set(runs)
    while waiting and time.monotonic() < deadline:
        for sent in list(waiting):
            # while the method runs: the staging folder exists and is still empty (a poll starved by
            # a loaded machine once signalled a run that had written and committed everything)
            if any(_still_empty(staging) for staging in tmp_path.glob(f".bleedjax-staging-out_{sent.name}.*")):
                runs[sent].send_signal(sent)
                waiting.discard(sent)
        time.sleep(0.01)
    ended = {sent: (run.communicate(timeout=120)[1], run.returncode) for sent, run in runs.items()}
    # one failure in about five full runs of the suite, before the stderr of both runs was kept here
    assert not waiting, f"never seen staging with nothing written: {ended}"
    for sent, status, word in ((signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")):
        assert (ended[sent][0].strip(), ended[sent][1]) == (f"bleedjax reduce: {word}", status), ended
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "s")
    assert left == [], (left, ended)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_inside_a_garbage_collector_callback_is_not_lost(signum):
    """A SIGTERM or Ctrl-C whose handler runs inside a garbage-collector callback (JAX registers
    one): Python prints the exception as ignored, and a fresh clone's full run once saw
    ``bleedjax reduce`` then finish with status 0. Inside ``cli._terminate_as_exception`` it is
    raised after the callback."""
    import gc
    import signal
    import time

    expected = {"SIGTERM": cli.Terminated, "SIGINT": KeyboardInterrupt}[signum]
    sent = []

    def signal_during_collection(phase, info):
        if phase == "start" and not sent:
            sent.append(signum)
            os.kill(os.getpid(), getattr(signal, signum))
            for _ in range(1000):  # the handler runs here, inside the callback
                pass

    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.callbacks.append(signal_during_collection)
    try:
        with pytest.raises(expected), cli._terminate_as_exception():
            gc.collect()
            for _ in range(500):
                time.sleep(0.01)
    finally:
        gc.callbacks.remove(signal_during_collection)
        signal.signal(signal.SIGINT, previous_int)
    assert sent
