"""Broadcast metadata (BWF ``bext`` timecode, ``iXML``) carried from the input tracks to the files
that ``reduce`` writes, in memory and streamed."""

import struct

import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, wav_chunks

RATE = 16000
TIME_REFERENCE = 158_760_000
"""One hour at 44.1 kHz: where a DAW places the track."""


def bext_body() -> bytes:
    body = (b"a take".ljust(256, b"\0") + b"recorder".ljust(32, b"\0") + b"ref".ljust(32, b"\0") + b"2026-01-01"
            + b"12:00:00" + struct.pack("<IIH", TIME_REFERENCE, 0, 1) + b"\0" * 254 + b"A=PCM,F=16000,W=24\r\n")
    return body + b" " * (len(body) & 1)


IXML = b"<BWFXML><PROJECT>take 1</PROJECT></BWFXML>!"
"""Odd length: the chunk is followed by a pad byte."""


def with_metadata(path):
    """Inserts bext and iXML chunks after ``fmt `` (where recorders put them)."""
    data = path.read_bytes()
    fmt_end = 20 + struct.unpack("<I", data[16:20])[0]
    extra = (b"bext" + struct.pack("<I", len(bext_body())) + bext_body()
             + b"iXML" + struct.pack("<I", len(IXML)) + IXML + b"\0")
    data = data[:fmt_end] + extra + data[fmt_end:]
    path.write_bytes(data[:4] + struct.pack("<I", len(data) - 8) + data[8:])


def metadata(path) -> dict[bytes, bytes]:
    raw = path.read_bytes()
    return {chunk_id: raw[body : body + size] for chunk_id, body, size in wav_chunks.chunks(path)
            if chunk_id in wav_chunks.KEPT}


@pytest.fixture
def session(tmp_path):
    folder = tmp_path / "take1"
    folder.mkdir()
    rng = np.random.default_rng(0)
    mics = (np.eye(3) + 0.2 * (1 - np.eye(3))) @ (rng.standard_normal((3, RATE)) * 0.1)
    for i, mic in enumerate(mics):
        sf.write(folder / f"mic{i}.wav", mic, RATE, subtype="PCM_24")
        with_metadata(folder / f"mic{i}.wav")
    sf.write(folder / "room.flac", mics[0], RATE)
    return folder


@pytest.mark.parametrize("path", ["--no-streaming", "--streaming"])
def test_cleaned_and_removed_files_keep_the_inputs_timecode_and_ixml(session, tmp_path, path):
    """soundfile drops these chunks: a DAW put the cleaned tracks at zero instead of at their
    recorded time."""
    out = tmp_path / "out"
    assert cli.main(["reduce", str(session), "--out", str(out), "--removed", path]) == 0
    for folder in (out, out / "removed"):
        for i in range(3):
            name = f"mic{i}.wav"
            assert metadata(folder / name) == {b"bext": bext_body(), b"iXML": IXML}
            ids = [chunk_id for chunk_id, _, _ in wav_chunks.chunks(folder / name)]
            assert ids.index(b"bext") < ids.index(b"data")
            info = sf.info(folder / name)
            assert (info.frames, info.subtype, info.samplerate) == (RATE, "PCM_24", RATE)
    assert wav_chunks.chunks(out / "room.flac") is None
    cleaned = sf.read(out / "mic0.wav")[0]
    removed = sf.read(out / "removed" / "mic0.wav")[0]
    np.testing.assert_allclose(cleaned + removed, sf.read(session / "mic0.wav")[0], atol=2 ** -22)


def test_nothing_is_copied_from_or_into_files_without_such_chunks(tmp_path):
    plain, other = tmp_path / "plain.wav", tmp_path / "other.wav"
    sf.write(plain, np.zeros(100), RATE)
    sf.write(other, np.zeros(100), RATE)
    before = other.read_bytes()
    assert not wav_chunks.copy_metadata(plain, other) and other.read_bytes() == before
    with_metadata(plain)
    assert wav_chunks.copy_metadata(plain, other)
    assert metadata(other) == metadata(plain) and not wav_chunks.copy_metadata(plain, other)
    assert sf.read(other)[0].shape == (100,)
