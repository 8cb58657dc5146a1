"""Broadcast metadata (BWF ``bext`` timecode, ``iXML``) carried from the input tracks to the files
that ``reduce`` writes, in memory and streamed."""

import struct

import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, wav_chunks
from tests.test_cli import PLUMBING

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
    assert cli.main(["reduce", str(session), "--out", str(out), "--removed", path, *PLUMBING]) == 0
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


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


def write_with_markers(path, samples: np.ndarray) -> dict[bytes, bytes]:
    """A 16-bit mono WAV written byte by byte as a DAW exports it: ``fmt ``, ``data``, then INFO
    tags (an odd-sized title), two markers and their labels (one odd-sized). Returns the bodies
    of those three chunks by kind."""
    fmt = struct.pack("<HHIIHH", 1, 1, RATE, 2 * RATE, 2, 16)
    info = b"INFO" + chunk(b"INAM", b"Take 3, lead vocal\0") + chunk(b"ICMT", b"bleed from the drums\0")
    points = ((1, 100), (2, len(samples) - 1))
    cue = struct.pack("<I", 2) + b"".join(struct.pack("<II4sIII", n, at, b"data", 0, 0, at) for n, at in points)
    adtl = b"adtl" + chunk(b"labl", struct.pack("<I", 1) + b"chorus\0") + chunk(b"labl", struct.pack("<I", 2) + b"end\0")
    riff = b"WAVE" + b"".join(chunk(*c) for c in ((b"fmt ", fmt), (b"data", samples.astype("<i2").tobytes()),
                                                   (b"LIST", info), (b"cue ", cue), (b"LIST", adtl)))
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    return {b"LISTINFO": info, b"cue ": cue, b"LISTadtl": adtl}


def kept(path) -> dict[bytes, list[bytes]]:
    """The bodies of each kept kind of chunk, in file order."""
    raw = path.read_bytes()
    found = {}
    for kind, body, size in wav_chunks.kinds(path):
        if kind in wav_chunks.KEPT:
            found.setdefault(kind, []).append(raw[body : body + size])
    return found


def assert_well_formed(path):
    """RIFF's size is the file's, and the chunks tile the file to its last byte."""
    raw = path.read_bytes()
    assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8
    _, body, size = wav_chunks.chunks(path)[-1]
    assert body + size + (size & 1) in (len(raw), len(raw) + 1)


def test_info_tags_markers_and_labels_are_copied_byte_for_byte(tmp_path):
    """soundfile drops LIST INFO (title, comments) and the markers (cue, LIST adtl labels): the
    cleaned files lost them. Into a file of the same length all three come across, once each;
    soundfile reads the same samples and the title."""
    samples = (np.random.default_rng(0).standard_normal(RATE) * 3000).astype(np.int16)
    source = tmp_path / "in.wav"
    bodies = write_with_markers(source, samples)
    np.testing.assert_array_equal(sf.read(source, dtype="int16")[0], samples)
    target = tmp_path / "out.wav"
    sf.write(target, samples[::-1] / 32768, RATE, subtype="PCM_16")
    audio = sf.read(target, dtype="int16")[0]
    assert wav_chunks.copy_metadata(source, target)
    assert kept(target) == {kind: [body] for kind, body in bodies.items()}
    assert_well_formed(target)
    np.testing.assert_array_equal(sf.read(target, dtype="int16")[0], audio)
    with sf.SoundFile(target) as handle:
        assert (handle.frames, handle.title, handle.comment) == (RATE, "Take 3, lead vocal", "bleed from the drums")
    assert not wav_chunks.copy_metadata(source, target)


def test_markers_stay_out_of_a_file_of_another_length_and_tags_are_not_doubled(tmp_path):
    """Cue points are sample offsets: a file of another length gets the tags but not the markers.
    A file that libsndfile gave INFO tags of its own keeps those (two LIST INFO chunks would
    leave readers to pick one) and gets the markers."""
    samples = np.arange(-500, 500, dtype=np.int16) * 30
    source = tmp_path / "in.wav"
    bodies = write_with_markers(source, samples)
    shorter = tmp_path / "shorter.wav"
    sf.write(shorter, np.zeros(len(samples) - 1), RATE, subtype="PCM_16")
    assert wav_chunks.copy_metadata(source, shorter)
    assert kept(shorter) == {b"LISTINFO": [bodies[b"LISTINFO"]]}
    assert_well_formed(shorter)
    tagged = tmp_path / "tagged.wav"
    with sf.SoundFile(tagged, "w", RATE, 1, subtype="PCM_16") as handle:
        handle.title = "written by libsndfile"
        handle.write(samples / 32768)
    own = kept(tagged)[b"LISTINFO"]
    assert wav_chunks.copy_metadata(source, tagged)
    assert kept(tagged) == {b"LISTINFO": own, b"cue ": [bodies[b"cue "]], b"LISTadtl": [bodies[b"LISTadtl"]]}
    assert_well_formed(tagged)
    with sf.SoundFile(tagged) as handle:
        assert handle.title == "written by libsndfile"
        np.testing.assert_array_equal(handle.read(dtype="int16"), samples)


@pytest.mark.parametrize("path", ["--no-streaming", "--streaming"])
def test_cleaned_and_removed_files_keep_the_inputs_tags_and_markers(tmp_path, path):
    rng = np.random.default_rng(1)
    mics = (np.eye(3) + 0.2 * (1 - np.eye(3))) @ (rng.standard_normal((3, RATE)) * 3000)
    session = tmp_path / "take1"
    session.mkdir()
    bodies = [write_with_markers(session / f"mic{i}.wav", mic) for i, mic in enumerate(mics)]
    out = tmp_path / "out"
    assert cli.main(["reduce", str(session), "--out", str(out), "--removed", path, *PLUMBING]) == 0
    for folder in (out, out / "removed"):
        for i in range(3):
            assert kept(folder / f"mic{i}.wav") == {kind: [body] for kind, body in bodies[i].items()}
            assert_well_formed(folder / f"mic{i}.wav")
            assert sf.info(folder / f"mic{i}.wav").frames == RATE
