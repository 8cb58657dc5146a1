"""The streamed KAM + NMF path against the in-memory path, its frame store, and the CLI switch."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, dictionary, methods
from bleedjax.frame_store import FrameStore
from bleedjax.methods import kam_nmf, kam_nmf_long
from tests.test_kam_nmf import RATE, music_loop


@pytest.fixture(scope="module")
def case(shared_data, tmp_path_factory):
    """Two tracks (a music loop with a cough, and the loop delayed with a knock) in one session,
    and a dictionary learned from a later part of the cough file."""
    noise = shared_data / "interference"
    cough, _ = sf.read(noise / "cough.flac", dtype="float32")
    knock, _ = sf.read(noise / "knock-1.flac", dtype="float32")
    learned = dictionary.learn([cough[3 * RATE :], knock[3 * RATE :]], RATE, components=8, iterations=30,
                               key=jax.random.key(0))
    music = music_loop(5)
    tracks = np.stack([music, np.roll(music, 3000)])
    for row, event, start in ((0, cough[RATE : int(1.6 * RATE)], int(2.1 * RATE)),
                              (1, knock[: int(0.5 * RATE)], int(3.3 * RATE))):
        tracks[row, start : start + len(event)] += event
    folder = tmp_path_factory.mktemp("kam_nmf_long") / "session"
    folder.mkdir()
    for i, track in enumerate(tracks):
        sf.write(folder / f"t{i}.wav", track, RATE, subtype="FLOAT")
    return folder, tracks, learned


@pytest.mark.parametrize("changes", [
    {},
    {"auto_k": True, "k_candidates": (3, 5, 7), "kam_iterations": 1},
    {"variant": "nmf"},
], ids=["kam-nmf", "auto-k", "nmf"])
def test_streamed_path_equals_in_memory(case, tmp_path, changes):
    folder, tracks, learned = case
    settings = kam_nmf.Settings(music_components=8, k=5, min_separation=20, nmf_iterations=25, **changes)
    memory = kam_nmf.reduce_tracks(jnp.asarray(tracks), jnp.asarray(learned.W), settings)
    # 37 frames per block: many blocks, and a last one that is partial.
    share, k, _ = kam_nmf_long.reduce_long(folder, tmp_path / "out", learned.W, settings,
                                        kam_nmf_long.LongSettings(block_frames=37))
    assert np.sum(np.asarray(memory.corruption) > settings.detection_threshold) >= 10
    np.testing.assert_array_equal(k, memory.k)
    # Only the order of float32 sums differs (the W update sums over blocks): ~1e-7.
    np.testing.assert_allclose(share, memory.corruption, atol=5e-6)
    for i in range(2):
        cleaned, _ = sf.read(tmp_path / "out" / f"t{i}.wav", dtype="float32")
        removed, _ = sf.read(tmp_path / "out" / "interference" / f"t{i}.wav", dtype="float32")
        np.testing.assert_allclose(cleaned, memory.cleaned[i], atol=2e-6)
        np.testing.assert_allclose(removed, memory.interference[i], atol=2e-6)


def test_kam_alone_has_no_streamed_path(case, tmp_path):
    folder, _, learned = case
    with pytest.raises(ValueError, match="no streaming path"):
        kam_nmf_long.reduce_long(folder, tmp_path / "out", learned.W, kam_nmf.Settings(variant="kam"))
    assert not (tmp_path / "out").exists()


def test_frame_store_round_trip():
    rng = np.random.default_rng(0)
    matrix = rng.random((5, 23)).astype(np.float32)
    store = FrameStore(5, 23)
    for first in range(0, 23, 4):
        store.write(first, matrix[:, first : first + 4])
    np.testing.assert_array_equal(store.read(3, 17), matrix[:, 3:17])
    columns = np.asarray([0, 1, 2, 7, 9, 10, 22])
    np.testing.assert_array_equal(store.gather(columns), matrix[:, columns])
    with pytest.raises(IndexError, match="outside"):
        store.read(20, 24)
    store.close()


def test_cli_streams_long_tracks(case, tmp_path, monkeypatch, capsys):
    folder, tracks, learned = case
    dict_path = tmp_path / "d.npz"
    dictionary.save(learned, dict_path)
    common = ("--method", "kam-nmf", "--dictionary", dict_path, "--set", "music_components=8",
              "--set", "nmf_iterations=10", "--set", "min_separation=20", "--set", "block_frames=64")
    assert cli.main([str(a) for a in ("reduce", folder, "--out", tmp_path / "streamed", "--streaming", *common)]) == 0
    assert cli.main([str(a) for a in ("reduce", folder, "--out", tmp_path / "memory", "--no-streaming", *common)]) == 0
    # Above the method's threshold the streamed path is taken without --streaming.
    small = dataclasses.replace(methods.METHODS["kam-nmf"], long_samples=tracks.size - 1)
    monkeypatch.setitem(methods.METHODS, "kam-nmf", small)
    assert cli.main([str(a) for a in ("reduce", folder, "--out", tmp_path / "auto", *common)]) == 0
    for out in ("streamed", "auto"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == [
            "bleed.json", "bleed.npz", "interference", "t0.wav", "t1.wav"]
        for i in range(2):
            for sub in ("", "interference/"):
                got, _ = sf.read(tmp_path / out / f"{sub}t{i}.wav", dtype="float32")
                expected, _ = sf.read(tmp_path / "memory" / f"{sub}t{i}.wav", dtype="float32")
                np.testing.assert_allclose(got, expected, atol=2e-6)
        arrays = np.load(tmp_path / out / "bleed.npz")
        np.testing.assert_allclose(arrays["corruption"], np.load(tmp_path / "memory" / "bleed.npz")["corruption"],
                                   atol=5e-6)
        assert json.loads((tmp_path / out / "bleed.json").read_text())["method"] == "kam-nmf"
    assert cli.main([str(a) for a in ("reduce", folder, "--out", tmp_path / "never", "--streaming", *common,
                                      "--set", "variant='kam'")]) == 2
    assert "no streaming path" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_dc_offsets_are_kept_on_the_music_not_the_interference(case, tmp_path):
    folder, tracks, learned = case
    dict_path = tmp_path / "d.npz"
    dictionary.save(learned, dict_path)
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    offsets = (0.1, -0.05)
    for i, offset in enumerate(offsets):
        sf.write(shifted / f"t{i}.wav", tracks[i] + offset, RATE, subtype="FLOAT")
    common = ("--method", "kam-nmf", "--dictionary", dict_path, "--set", "music_components=8",
              "--set", "nmf_iterations=10", "--set", "min_separation=20", "--set", "block_frames=64")
    for source, out, path in ((shifted, "streamed", "--streaming"), (shifted, "memory", "--no-streaming"),
                              (folder, "plain", "--no-streaming")):
        assert cli.main([str(a) for a in ("reduce", source, "--out", tmp_path / out, path, *common)]) == 0
    for i, offset in enumerate(offsets):
        for sub, added in (("", offset), ("interference/", 0.0)):
            plain, _ = sf.read(tmp_path / "plain" / f"{sub}t{i}.wav", dtype="float32")
            for out in ("streamed", "memory"):
                got, _ = sf.read(tmp_path / out / f"{sub}t{i}.wav", dtype="float32")
                np.testing.assert_allclose(got - np.float32(added), plain, atol=2e-5)


def test_a_failure_while_writing_leaves_no_output(case, tmp_path, monkeypatch):
    """The cleaned tracks and the interference are both written to temporary files, which an
    error in a later block removes (``streaming.committed``)."""
    from bleedjax import streaming

    folder, _, learned = case
    add, calls = streaming.OverlapAddWriter.add, []

    def failing(self, first, frames):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return add(self, first, frames)

    monkeypatch.setattr(streaming.OverlapAddWriter, "add", failing)
    settings = kam_nmf.Settings(music_components=8, k=5, min_separation=20, nmf_iterations=5, kam_iterations=1)
    with pytest.raises(RuntimeError, match="disk full"):
        kam_nmf_long.reduce_long(folder, tmp_path / "out", learned.W, settings, kam_nmf_long.LongSettings(block_frames=37))
    assert len(calls) == 5
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
