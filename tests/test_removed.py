"""`reduce --removed`: what cleaning took out of each track, written beside the cleaned files."""

import json
import pathlib

import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, reduce, removed, sessions, streaming, wav_chunks
from tests.test_cli import PLUMBING, plumbing_config

RATE = 16000
LSB = {"PCM_16": 2.0**-15, "PCM_24": 2.0**-23, "FLOAT": 1e-7}


def write_bleeding_session(folder: pathlib.Path) -> pathlib.Path:
    """Three mono PCM_16 microphones with bleed, a stereo PCM_24 FLAC pair 0.25 s shorter and a
    silent 32-bit float track."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sources = rng.standard_normal((5, RATE)) * np.array([0.05, 0.1, 0.15, 0.1, 0.1])[:, None]
    mics = (np.eye(5) + 0.25 * (1 - np.eye(5))) @ sources
    for i in range(3):
        sf.write(folder / f"mic{i}.wav", mics[i], RATE, subtype="PCM_16")
    sf.write(folder / "pair.flac", mics[3:, : 3 * RATE // 4].T, RATE, subtype="PCM_24")
    sf.write(folder / "silent.wav", np.zeros(RATE, np.float32), RATE, subtype="FLOAT")
    return folder


def read(path: pathlib.Path) -> np.ndarray:
    return sf.read(path, dtype="float64", always_2d=True)[0]


def test_removed_plus_cleaned_gives_the_input_in_its_layout(tmp_path, capsys):
    session = write_bleeding_session(tmp_path / "take")
    out = tmp_path / "out"
    assert cli.main(["reduce", str(session), "--out", str(out), "--pad", "--removed"]) == 0
    levels = json.loads((out / "bleed.json").read_text())["removed_db"]
    printed = capsys.readouterr().out
    assert "removed (re the input): mic0.wav " in printed and "silent.wav nan dB" in printed
    computed = []
    for name in ["mic0.wav", "mic1.wav", "mic2.wav", "pair.flac", "silent.wav"]:
        original, cleaned, taken = session / name, out / name, out / removed.FOLDER / name
        info, taken_info = sf.info(original), sf.info(taken)
        assert (taken_info.format, taken_info.subtype, taken_info.channels, taken_info.frames) == (
            info.format, info.subtype, info.channels, info.frames)
        np.testing.assert_allclose(read(taken) + read(cleaned), read(original), rtol=0, atol=LSB[info.subtype])
        energy = np.sum(read(original) ** 2, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            computed += list(10 * np.log10(np.sum(read(taken) ** 2, axis=0) / energy))
    assert levels[-1] is None and np.isnan(computed[-1])
    np.testing.assert_allclose(levels[:-1], computed[:-1], atol=0.01)
    # Bleed of 0.25 from each of four neighbours: cleaning takes out between -20 and -3 dB of each
    # microphone, and not its whole signal.
    assert all(-20.0 < level < -3.0 for level in levels[:-1]), levels


def test_streamed_sessions_write_the_same_removed_tracks(tmp_path):
    session = write_bleeding_session(tmp_path / "take")
    results = {
        path: reduce.reduce_folders([session], tmp_path / path, config=plumbing_config(), pad=True,
                                    streaming_path=streamed, write_removed=True)[0]
        for path, streamed in [("memory", False), ("streamed", True)]
    }
    for name in ["mic0.wav", "mic1.wav", "mic2.wav", "pair.flac"]:
        taken = read(tmp_path / "streamed" / removed.FOLDER / name)
        np.testing.assert_allclose(taken + read(tmp_path / "streamed" / name), read(session / name), rtol=0, atol=1e-4)
        np.testing.assert_allclose(taken, read(tmp_path / "memory" / removed.FOLDER / name), rtol=0, atol=1e-3)
    np.testing.assert_allclose(results["streamed"].removed_levels.level_db, results["memory"].removed_levels.level_db,
                               atol=0.05)


def without_peak_time(path: pathlib.Path) -> bytes:
    """The bytes of the WAV file ``path`` with the timestamp of libsndfile's PEAK chunk (float WAV
    files; the second at which the file was written, bytes 4-8 of the chunk's body) zeroed, so
    that two writes of the same samples compare equal byte for byte whenever they were made."""
    data = bytearray(path.read_bytes())
    for chunk_id, body, _ in wav_chunks.chunks(path):
        if chunk_id == b"PEAK":
            data[body + 4 : body + 8] = bytes(4)
    return bytes(data)


def test_blocks_of_any_size_write_the_same_files_and_clipping_is_reported(tmp_path):
    """``input − cleaned`` is written block by block; a cleaned track of the opposite sign leaves
    a removed track at twice the input, which a PCM file clips (a float file keeps it)."""
    session, cleaned = tmp_path / "take", tmp_path / "cleaned"
    session.mkdir()
    cleaned.mkdir()
    tone = 0.9 * np.sin(np.arange(RATE) * 0.05)
    sf.write(session / "a.wav", tone, RATE, subtype="PCM_16")
    sf.write(session / "b.wav", tone, RATE, subtype="FLOAT")
    sf.write(cleaned / "a.wav", -tone, RATE, subtype="PCM_16")
    sf.write(cleaned / "b.wav", 0.5 * tone, RATE, subtype="FLOAT")
    reader = streaming.SessionReader(session)
    whole = removed.write_removed(reader, cleaned, tmp_path / "whole")
    blocks = removed.write_removed(reader, cleaned, tmp_path / "blocks", block=777)
    # the chunk that without_peak_time masks
    assert b"PEAK" in [chunk_id for chunk_id, _, _ in wav_chunks.chunks(tmp_path / "whole" / "b.wav")]
    for name in ["a.wav", "b.wav"]:
        written = [without_peak_time(tmp_path / run / name) for run in ("whole", "blocks")]
        assert written[0] == written[1]
    np.testing.assert_array_equal(whole.level_db, blocks.level_db)
    assert whole.clipped == ("a.wav",)
    np.testing.assert_allclose(whole.peak, [1.8, 0.45], atol=1e-3)
    np.testing.assert_allclose(whole.level_db, [20 * np.log10(2.0), 20 * np.log10(0.5)], atol=0.01)
    assert np.abs(read(tmp_path / "whole" / "a.wav")).max() <= 1.0
    result = reduce.SessionResult(reader, tmp_path, None, np.zeros((2, 2)), removed_levels=whole)
    (tmp_path / removed.FOLDER).mkdir()
    notes = reduce.warnings(result, "kamir")
    assert len(notes) == 2 and "a.wav: what was removed exceeds full scale" in notes[0]
    assert notes[1].startswith("a.wav: what was removed is +6.0 dB against the track itself")


def test_a_missing_or_changed_cleaned_file_is_named(tmp_path):
    session, cleaned = tmp_path / "take", tmp_path / "cleaned"
    session.mkdir()
    cleaned.mkdir()
    for name in ["a.wav", "b.wav"]:
        sf.write(session / name, np.zeros(RATE), RATE)
    sf.write(cleaned / "a.wav", np.zeros(RATE - 1), RATE)
    reader = streaming.SessionReader(session)
    with pytest.raises(sessions.SessionError, match=r"cleaned/a.wav: 1 channel\(s\) × 15999 samples"):
        removed.write_removed(reader, cleaned, tmp_path / "out")
    sf.write(cleaned / "a.wav", np.zeros(RATE), RATE)
    with pytest.raises(sessions.SessionError, match="cleaned/b.wav: unreadable audio file"):
        removed.write_removed(reader, cleaned, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_an_existing_removed_folder_is_refused_or_reported(tmp_path, capsys):
    session = write_bleeding_session(tmp_path / "take")
    out = tmp_path / "out"
    (out / removed.FOLDER).mkdir(parents=True)
    (out / removed.FOLDER / "mine.txt").write_text("keep")
    assert cli.main(["reduce", str(session), "--out", str(out), "--pad", "--removed"]) == 2
    assert "removed: exists already" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [removed.FOLDER]
    assert cli.main(["reduce", str(session), "--out", str(out), "--pad", *PLUMBING]) == 0
    err = capsys.readouterr().err
    assert f"{out / removed.FOLDER}: from an earlier run (this one was without --removed); left in place" in err
    assert [p.name for p in (out / removed.FOLDER).iterdir()] == ["mine.txt"]
