import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from bleedjax import demo, sessions, signal, simulation, streaming
from bleedjax.methods import kamir, kamir_long

RATE = 22050


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    stems = sessions.read_session(demo.bundled_stems())
    audio = jnp.asarray(stems.audio[:3, : 6 * 44100 : 2])
    sim = simulation.simulate_linear(audio, key=jax.random.key(1), max_crosstalk_db=-12, sample_rate=RATE)
    folder = tmp_path_factory.mktemp("long") / "session"
    folder.mkdir()
    for i, mic in enumerate(np.asarray(sim.mics)):
        sf.write(folder / f"mic{i}.wav", mic, RATE, subtype="FLOAT")
    return folder, np.asarray(sim.mics), np.asarray(sim.gains)


def read_all(folder, count):
    return np.stack([sf.read(folder / f"mic{i}.wav", dtype="float32")[0] for i in range(count)])


@pytest.mark.parametrize("settings", [
    kamir.Settings(n_fft=1024, hop=256, bound_quantile=0.3),
    kamir.Settings(n_fft=1024, hop=256, iterations=2, kernel="horizontal", kernel_size=5, update_rule="heuristic"),
], ids=["K4-bound", "kernel-heuristic"])
def test_exact_chunked_path_equals_in_memory(session, tmp_path, settings):
    folder, mics, _ = session
    phi = kamir.identity_phi(3)
    memory = kamir.reduce_session(jnp.asarray(mics), jnp.asarray(phi), settings)
    lam = kamir_long.reduce_long(folder, tmp_path / "out", phi, settings,
                                 kamir_long.LongSettings(block_frames=37, learn="exact")).lam
    np.testing.assert_allclose(lam, np.asarray(memory.lam), rtol=2e-3, atol=1e-6)
    chunked = read_all(tmp_path / "out", 3)
    assert chunked.shape == mics.shape
    np.testing.assert_allclose(chunked, np.asarray(memory.cleaned), atol=2e-5)


def test_streamed_bound_reads_the_in_memory_bounds_frames(session):
    """The ratio floor's frames: the in-memory path's lowest-priority frames of the session are
    the lowest of the streamed summary's sample (bottom-k samples nest), in the same order."""
    folder, mics, _ = session
    settings = kamir.Settings(n_fft=1024, hop=256, bound_quantile=0.3)
    summary = kamir_long.summarise(streaming.SessionReader(folder), settings, kamir_long.LongSettings(block_frames=37))
    power = jnp.abs(signal.stft(jnp.asarray(mics), n_fft=1024, hop=256, window_name=settings.window)) ** 2
    frames = kamir.bound_frames(kamir.frame_priorities(jax.random.key(kamir.BOUND_SEED), 0, power.shape[-1]), settings)
    streamed = summary.power[..., kamir.bound_frames(jnp.asarray(summary.priorities), settings)] * summary.peak
    assert streamed.shape == (3, 513, settings.bound_frames)
    np.testing.assert_allclose(np.asarray(streamed), np.asarray(power[..., frames]), rtol=1e-4, atol=1e-6 * float(power.max()))


def test_projection_learns_the_same_bleed(session, tmp_path):
    folder, mics, _ = session
    phi = kamir.identity_phi(3)
    settings = kamir.Settings(n_fft=1024, hop=256)
    memory = kamir.reduce_session(jnp.asarray(mics), jnp.asarray(phi), settings)
    summary = kamir_long.reduce_long(folder, tmp_path / "a", phi, settings, kamir_long.LongSettings(block_frames=50)).gains
    other_blocks = kamir_long.reduce_long(folder, tmp_path / "b", phi, settings, kamir_long.LongSettings(block_frames=23)).gains
    np.testing.assert_allclose(summary, other_blocks, rtol=1e-4)
    np.testing.assert_allclose(summary, np.asarray(memory.gains), atol=0.01)
    cleaned = read_all(tmp_path / "a", 3)
    error = 10 * np.log10(np.sum((cleaned - np.asarray(memory.cleaned)) ** 2) / np.sum(np.asarray(memory.cleaned) ** 2))
    assert error < -20


def test_failure_leaves_no_output(session, tmp_path):
    folder, _, _ = session
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in folder.iterdir():
        data, rate = sf.read(path, dtype="float32")
        if path.name == "mic2.wav":
            data[-100] = np.nan
        sf.write(bad / path.name, data, rate, subtype="FLOAT")
    with pytest.raises(sessions.SessionError, match="mic2.wav"):
        kamir_long.reduce_long(bad, tmp_path / "out", kamir.identity_phi(3), kamir.Settings(n_fft=1024, hop=256))
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_cli_streams_long_sessions(session, tmp_path, capsys, monkeypatch):
    from bleedjax import cli, methods

    folder, _, _ = session
    common = ["--method", "kamir", "--set", "n_fft=1024", "--set", "hop=256", "--set", "block_frames=40"]
    assert cli.main(["reduce", str(folder), "--out", str(tmp_path / "s"), *common, "--streaming",
                     "--set", "learn=exact"]) == 0
    assert cli.main(["reduce", str(folder), "--out", str(tmp_path / "m"), *common, "--no-streaming"]) == 0
    np.testing.assert_allclose(read_all(tmp_path / "s", 3), read_all(tmp_path / "m", 3), atol=2e-5)
    for name in ("bleed.json", "bleed.npz"):
        assert (tmp_path / "s" / name).is_file()
    # Every registered method streams; one without a streaming path refuses --streaming.
    monkeypatch.setitem(methods.METHODS, "kamir", dataclasses.replace(methods.METHODS["kamir"], run_long=None))
    assert cli.main(["reduce", str(folder), "--out", str(tmp_path / "x"), *common, "--streaming"]) == 2
    assert "has no streaming path" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_dc_offsets_are_taken_out_and_kept_on_both_paths(session, tmp_path):
    from bleedjax import cli

    folder, mics, _ = session
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    offsets = np.array([0.1, -0.05, 0.02])
    for i, offset in enumerate(offsets):
        sf.write(shifted / f"mic{i}.wav", mics[i] + offset, RATE, subtype="FLOAT")
    common = ["--method", "kamir", "--set", "n_fft=1024", "--set", "hop=256", "--set", "block_frames=40"]
    assert cli.main(["reduce", str(shifted), "--out", str(tmp_path / "s"), *common, "--streaming",
                     "--set", "learn=exact"]) == 0
    assert cli.main(["reduce", str(shifted), "--out", str(tmp_path / "m"), *common, "--no-streaming"]) == 0
    assert cli.main(["reduce", str(folder), "--out", str(tmp_path / "plain"), *common, "--no-streaming"]) == 0
    np.testing.assert_allclose(read_all(tmp_path / "s", 3), read_all(tmp_path / "m", 3), atol=2e-5)
    np.testing.assert_allclose(read_all(tmp_path / "m", 3) - offsets[:, None].astype(np.float32),
                               read_all(tmp_path / "plain", 3), atol=2e-5)
