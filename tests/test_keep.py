"""`reduce --keep FILE`: room, overhead and audience microphones copied as recorded and left out."""

import json
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, reduce, removed, sessions

RATE = 16000


def write_session_with_room_pair(folder: pathlib.Path) -> pathlib.Path:
    """Three close microphones with bleed (PCM_16) and a stereo room file (PCM_24 FLAC) that hears
    every source, with a BWF-like extra chunk that only a byte copy keeps."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sources = rng.standard_normal((3, RATE)) * np.array([0.05, 0.1, 0.15])[:, None]
    mics = (np.eye(3) + 0.2 * (1 - np.eye(3))) @ sources
    for i, mic in enumerate(mics):
        sf.write(folder / f"mic{i}.wav", mic, RATE, subtype="PCM_16")
    pair = np.stack([0.5 * sources.sum(axis=0), 0.5 * np.roll(sources, 40, axis=1).sum(axis=0)], axis=1)
    with sf.SoundFile(folder / "room.flac", "w", RATE, 2, subtype="PCM_24") as handle:
        handle.comment = "room pair, 3 m behind the stage"
        handle.write(pair)
    return folder


@pytest.mark.parametrize("streamed", [False, True])
def test_kept_files_are_copied_and_the_rest_is_cleaned_as_without_them(tmp_path, streamed):
    session = write_session_with_room_pair(tmp_path / "take")
    alone = tmp_path / "alone"
    shutil.copytree(session, alone, ignore=shutil.ignore_patterns("room.flac"))
    with_pair, without = tmp_path / "kept", tmp_path / "without"
    results = reduce.reduce_folders([session], with_pair, keep=["room.flac"], streaming_path=streamed,
                                    write_removed=True)
    reduce.reduce_folders([alone], without, streaming_path=streamed)
    assert (with_pair / "room.flac").read_bytes() == (session / "room.flac").read_bytes()
    for name in ["mic0.wav", "mic1.wav", "mic2.wav"]:
        assert (with_pair / name).read_bytes() == (without / name).read_bytes()
    bleed = json.loads((with_pair / "bleed.json").read_text())
    assert bleed["tracks"] == ["mic0.wav", "mic1.wav", "mic2.wav"] and bleed["kept"] == ["room.flac"]
    assert bleed["lambda"] == json.loads((without / "bleed.json").read_text())["lambda"]
    assert sorted(p.name for p in (with_pair / removed.FOLDER).iterdir()) == ["mic0.wav", "mic1.wav", "mic2.wav"]
    assert results[0].kept == ("room.flac",) and results[0].session.num_tracks == 3


def test_without_keep_the_room_pair_is_cleaned_as_bleed(tmp_path):
    """The failure that --keep prevents: the room pair is nothing but the others' sound, which the
    method takes for bleed (here it changes one channel by -0.2 dB of the channel's energy, i.e.
    nearly all of it, and the other by -18.6 dB)."""
    session = write_session_with_room_pair(tmp_path / "take")
    reduce.reduce_folders([session], tmp_path / "out")
    before, after = sf.read(session / "room.flac")[0], sf.read(tmp_path / "out" / "room.flac")[0]
    changed = 10 * np.log10(np.sum((after - before) ** 2, axis=0) / np.sum(before**2, axis=0))
    assert changed.max() > -3.0 and changed.min() > -25.0, changed


def test_bad_keep_names_are_refused_before_anything_is_written(tmp_path, capsys):
    session = write_session_with_room_pair(tmp_path / "take")
    out = tmp_path / "out"
    assert cli.main(["reduce", str(session), "--out", str(out), "--keep", "room.wav"]) == 2
    err = capsys.readouterr().err
    assert "no WAV/FLAC file named 'room.wav' to keep as recorded (the files: mic0.wav, mic1.wav" in err
    assert cli.main(["reduce", str(session), "--out", str(out), "--keep", "room.flac", "--keep", "mic0.wav",
                     "--keep", "mic1.wav"]) == 2
    assert "has 1 microphone track(s) in WAV/FLAC files besides room.flac, mic0.wav, mic1.wav, needs at least 2" in (
        capsys.readouterr().err)
    assert not out.exists()
    out.mkdir()
    (out / "room.flac").write_bytes(b"mine")
    assert cli.main(["reduce", str(session), "--out", str(out), "--keep", "room.flac"]) == 2
    assert "room.flac: exists already" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["room.flac"]
    assert cli.main(["reduce", str(session), "--out", str(out), "--keep", "room.flac", "--overwrite"]) == 0
    assert "(3 tracks; kept as recorded: room.flac)" in capsys.readouterr().out
    assert (out / "room.flac").read_bytes() == (session / "room.flac").read_bytes()
    with pytest.raises(sessions.SessionError, match="has 2 microphone track.s. in WAV/FLAC files besides mic0.wav"):
        sessions.read_session(session, leave_out=["mic0.wav", "mic1.wav", "mic2.wav"], min_tracks=3)


def test_every_streamed_method_reads_the_session_without_the_kept_files(tmp_path, monkeypatch):
    """Each registered method's ``run_long`` hands ``leave_out`` to the reader of the session (the
    reader stops the run once it has been made, so nothing is compiled)."""
    from bleedjax import dictionary, methods, streaming

    session = write_session_with_room_pair(tmp_path / "take")
    made = []

    class Made(Exception):
        pass

    class Recorder(streaming.SessionReader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.track_names)
            raise Made

    monkeypatch.setattr(streaming, "SessionReader", Recorder)
    bins = 4096 // 2 + 1
    dictionary.save(dictionary.Dictionary(np.full((bins, 2), 1.0 / bins, np.float32), RATE, 4096, 1024),
                    tmp_path / "dict.npz")
    for name, method in methods.METHODS.items():
        config = method.default_config(None)
        if "dictionary" in config:
            config.dictionary = str(tmp_path / "dict.npz")
        names = ["mic0.wav", "mic1.wav", "mic2.wav"]
        with pytest.raises(Made):
            method.run_long(session, tmp_path / name, config, names, False, False, None, ("room.flac",))
        assert made.pop() == names, name
    assert set(methods.METHODS) >= {"spectral-subtraction", "kamir", "kam-nmf", "differentiable", "tunet", "cae"}


def test_analyze_leaves_the_kept_files_out(tmp_path, capsys):
    session = write_session_with_room_pair(tmp_path / "take")
    assert cli.main(["analyze", str(session), "--method", "spectral-subtraction", "--keep", "room.flac",
                     "--json", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["tracks"] == ["mic0.wav", "mic1.wav", "mic2.wav"]
    capsys.readouterr()
    assert cli.main(["analyze", str(session), "--keep", "room"]) == 2
    assert "no WAV/FLAC file named 'room' to keep as recorded" in capsys.readouterr().err
