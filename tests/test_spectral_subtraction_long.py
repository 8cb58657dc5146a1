"""The streamed spectral-subtraction path against the in-memory one, its lattice cap, and the CLI."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from bleedjax import cli, demo, methods, sessions, simulation
from bleedjax.methods import spectral_subtraction as ss
from bleedjax.methods import spectral_subtraction_long as ss_long

RATE = 22050
SMALL = {"n_fft": 1024, "hop": 256}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    stems = sessions.read_session(demo.bundled_stems())
    audio = jnp.asarray(stems.audio[:4, : 6 * 44100 : 2])
    sim = simulation.simulate_linear(audio, key=jax.random.key(3), max_crosstalk_db=-12, sample_rate=RATE)
    folder = tmp_path_factory.mktemp("ss_long") / "session"
    folder.mkdir()
    for i, mic in enumerate(np.asarray(sim.mics)):
        sf.write(folder / f"mic{i}.wav", mic, RATE, subtype="FLOAT")
    return folder, np.asarray(sim.mics)


def read_all(folder, count):
    return np.stack([sf.read(folder / f"mic{i}.wav", dtype="float32")[0] for i in range(count)])


@pytest.mark.parametrize("preset", ["refined", "floor", "paper"])
def test_streamed_path_equals_in_memory(session, tmp_path, preset):
    folder, mics = session
    settings = ss.Settings(**ss.PRESETS[preset], **SMALL)
    memory = ss.reduce_session(jnp.asarray(mics), settings)
    lam = ss_long.reduce_long(folder, tmp_path / "out", settings, ss_long.LongSettings(block_frames=37)).lam
    np.testing.assert_allclose(lam, np.asarray(memory.lam), atol=1e-5)
    streamed = read_all(tmp_path / "out", len(mics))
    assert streamed.shape == mics.shape
    np.testing.assert_allclose(streamed, np.asarray(memory.cleaned), atol=2e-6)


def test_capped_lattice_is_the_in_memory_path_with_a_coarser_stride(session, tmp_path):
    """Above ``max_points`` the lattice's stride is multiplied: λ is then the in-memory path's
    with that ``refinement_stride`` (the Gram matrix still sums every point)."""
    folder, mics = session
    settings = ss.Settings(**SMALL)
    frames, bins = ss_long.streaming.num_frames(mics.shape[1], 1024, 256), 513
    stride = ss.lattice_stride(settings, len(mics))
    every = len(mics) * -(-frames * bins // stride)
    long = ss_long.LongSettings(block_frames=50, max_points=every // 3)
    coarse = ss_long.long_stride(settings, long, len(mics), frames, bins)
    assert coarse == 4 * stride
    assert ss_long.long_stride(settings, ss_long.LongSettings(max_points=every), len(mics), frames, bins) == stride
    _, points = ss_long.statistics(ss_long.streaming.SessionReader(folder), settings, long)
    assert points.size <= long.max_points
    lam = ss_long.reduce_long(folder, tmp_path / "out", settings, long).lam
    memory = ss.reduce_session(jnp.asarray(mics), dataclasses.replace(settings, refinement_stride=coarse))
    np.testing.assert_allclose(lam, np.asarray(memory.lam), atol=1e-5)
    # Blocks and the whole array round differently: up to 2.06e-6 (2 samples of 529 200 above
    # 2e-6, near a peak of 0.44) on an AVX2-only AMD EPYC, below 2e-6 where AVX-512 is used.
    np.testing.assert_allclose(read_all(tmp_path / "out", len(mics)), np.asarray(memory.cleaned), atol=2e-6, rtol=1e-5)


def test_failure_leaves_no_output(session, tmp_path):
    _, mics = session
    bad = tmp_path / "bad"
    bad.mkdir()
    for i, mic in enumerate(mics):
        sf.write(bad / f"mic{i}.wav", np.where(np.arange(mic.size) == mic.size - 100, np.nan, mic) if i == 2 else mic,
                 RATE, subtype="FLOAT")
    with pytest.raises(sessions.SessionError, match="mic2.wav"):
        ss_long.reduce_long(bad, tmp_path / "out", ss.Settings(**SMALL))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_failure_while_writing_leaves_no_output(session, tmp_path, monkeypatch):
    """Blocks already written go to temporary files, which a later block's error removes
    (``streaming.committed``)."""
    folder, _ = session
    clean_block, calls = ss_long._clean_block, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return clean_block(*args)

    monkeypatch.setattr(ss_long, "_clean_block", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        ss_long.reduce_long(folder, tmp_path / "out", ss.Settings(**SMALL), ss_long.LongSettings(block_frames=40))
    assert len(calls) == 3 and list((tmp_path / "out").iterdir()) == []


def test_cli_streams_long_sessions_with_their_offsets(session, tmp_path, monkeypatch):
    _, mics = session
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    offsets = np.array([0.05, 0.0, -0.02, 0.01], np.float32)
    for i, mic in enumerate(mics):
        sf.write(shifted / f"mic{i}.wav", mic + offsets[i], RATE, subtype="FLOAT")
    common = ["--set", "n_fft=1024", "--set", "hop=256", "--set", "block_frames=40"]
    assert cli.main(["reduce", str(shifted), "--out", str(tmp_path / "s"), *common, "--streaming"]) == 0
    assert cli.main(["reduce", str(shifted), "--out", str(tmp_path / "m"), *common, "--no-streaming"]) == 0
    # Above the threshold the streamed path is taken without --streaming.
    small = dataclasses.replace(methods.METHODS["spectral-subtraction"], long_samples=mics.size - 1)
    monkeypatch.setitem(methods.METHODS, "spectral-subtraction", small)
    assert cli.main(["reduce", str(shifted), "--out", str(tmp_path / "a"), *common]) == 0
    memory = read_all(tmp_path / "m", len(mics))
    for out in ("s", "a"):
        np.testing.assert_allclose(read_all(tmp_path / out, len(mics)), memory, atol=2e-6)
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["bleed.json", *[f"mic{i}.wav" for i in range(4)]]
    # Both paths take out each track's whole offset (its own small mean too) and put it back.
    own = mics.mean(axis=1, keepdims=True)
    settings = ss.Settings(**ss.PRESETS["auto"], **SMALL)
    expected = np.asarray(ss.reduce_session(jnp.asarray(mics - own), settings).cleaned) + own
    np.testing.assert_allclose(memory - offsets[:, None], expected, atol=2e-5)
