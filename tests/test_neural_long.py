"""The streamed t-UNet and CAE (``bleedjax.methods.neural_long``) against the in-memory paths, and
``bleedjax reduce --method tunet|cae`` on long sessions."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from bleedjax.configs import cae as cae_config
from bleedjax.configs import tunet as tunet_config

from bleedjax import cli, methods, models, signal, streaming
from bleedjax.methods import neural, neural_long
from tests.test_neural_method import save_checkpoint

TRACKS = 3


@pytest.fixture(scope="module")
def tunet(tmp_path_factory):
    """A 3-track runlocal t-UNet at 8 kHz (blocks of 0.5 s), with 4 frequency bands."""
    config = tunet_config.get_config("runlocal")
    config.model.num_tracks = config.data.num_tracks = TRACKS
    config.model.frequency_bands = 4
    folder = save_checkpoint(tmp_path_factory.mktemp("tunet_long"), config)
    return neural.with_checkpoint("tunet", neural.default_config("tunet"), str(folder))


@pytest.fixture(scope="module")
def cae(tmp_path_factory):
    config = cae_config.get_config("runlocal")
    config.model.stem = "any"
    folder = save_checkpoint(tmp_path_factory.mktemp("cae_long"), config)
    return neural.with_checkpoint("cae", neural.default_config("cae"), str(folder))


def write_session(folder, *, rate, samples, offsets=(0.0, 0.0, 0.0), seed=0, below_hz=None):
    """Noise (white, or without content above ``below_hz``) under a fixed bleed matrix, with a
    louder second half, written as float WAV."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((TRACKS, samples))
    if below_hz is not None:
        spectrum = np.fft.rfft(sources)
        spectrum[:, np.fft.rfftfreq(samples, 1 / rate) > below_hz] = 0
        sources = np.fft.irfft(spectrum, samples) * np.clip(np.minimum(np.arange(samples), samples - np.arange(samples)) / 2000, 0, 1)
    sources *= np.where(np.arange(samples) < samples // 2, 0.05, 0.2)
    mics = ((np.eye(TRACKS) + 0.2 * (1 - np.eye(TRACKS))) @ sources).astype(np.float32)
    for i, mic in enumerate(mics):
        sf.write(folder / f"mic{i}.wav", mic + np.float32(offsets[i]), rate, subtype="FLOAT")
    return folder, mics


def read_all(folder):
    return np.stack([sf.read(folder / f"mic{i}.wav", dtype="float32")[0] for i in range(TRACKS)])


def in_memory(method, config, mics, rate):
    return methods.get_method(method).run_session(mics, config, [f"mic{i}" for i in range(TRACKS)], sample_rate=rate)


def test_tunet_streamed_equals_in_memory_at_the_models_rate(tunet, tmp_path):
    """6 model blocks of 4000 samples and a last one of 500, below the receptive field (no
    weight), in groups of ``chunk`` = 4, the last group part empty."""
    folder, mics = write_session(tmp_path / "s", rate=8000, samples=24500)
    config = neural.with_checkpoint("tunet", tunet, tunet.checkpoint)
    config.demix = "pinv"
    graphdef, state, training = neural.load(config, "tunet")
    assert models.receptive_field(training.model) > 500
    reader = streaming.SessionReader(folder)
    lam = neural_long.tunet_lambda_long(reader, graphdef, state, training, config, neural_long.LongSettings())
    cleaned, expected = neural.reduce_tunet(graphdef, state, training, mics[None], np.array([24500]), 8000.0, config)
    assert lam.shape == (4, TRACKS, TRACKS)
    np.testing.assert_allclose(lam, np.asarray(expected)[0], rtol=1e-5, atol=1e-6)
    matrix, _ = neural_long.reduce_long("tunet", folder, tmp_path / "out", config, neural_long.LongSettings(block_frames=7))
    np.testing.assert_allclose(matrix, lam, atol=1e-7)
    np.testing.assert_allclose(read_all(tmp_path / "out"), np.asarray(cleaned)[0], atol=2e-6)


def test_tunet_resamples_block_by_block_like_the_whole_session(tunet, tmp_path):
    """A 16 kHz session and the 8 kHz model: Λ̂ from blocks resampled with their margins, against
    the whole session resampled at once. Both resample band-limited (a brick wall at 4 kHz), so
    they agree where the session has no content at the cut (here nothing above 3 kHz); every
    block's segment is periodic for the FFT, and without margins its edges wrap."""
    folder, mics = write_session(tmp_path / "s", rate=16000, samples=40000, below_hz=3000)
    graphdef, state, training = neural.load(tunet, "tunet")
    _, expected = neural.reduce_tunet(graphdef, state, training, mics[None], np.array([40000]), 16000.0, tunet)
    reader = streaming.SessionReader(folder)
    lam = neural_long.tunet_lambda_long(reader, graphdef, state, training, tunet, neural_long.LongSettings())
    np.testing.assert_allclose(lam, np.asarray(expected)[0], atol=1e-5)
    whole = np.asarray(neural_long.inference.resample(jnp.asarray(mics), 20000))[:, 7000:13000]
    fraction = neural_long.rate_fraction(8000.0, 16000)
    error = [np.abs(neural_long.model_rate_range(reader, 7000, 13000, fraction, margin) - whole).max()
             for margin in (0, 2048)]
    assert error[1] < 1e-4 * np.abs(whole).max() < error[0]


@pytest.mark.parametrize("demix, banded", [("pinv", False), ("pinv", True), ("wiener", False), ("wiener", True)])
def test_demixing_in_blocks_equals_the_whole_session(tunet, tmp_path, demix, banded):
    """Λ̂ fixed, a 12 kHz session (its STFT is not the model's): time-domain blocks for a scalar
    ``pinv``, frame blocks of the session's STFT otherwise, and the Wiener floor of the whole STFT."""
    folder, mics = write_session(tmp_path / "s", rate=12000, samples=9001)
    _, _, training = neural.load(tunet, "tunet")
    rng = np.random.default_rng(3)
    lam = np.eye(TRACKS) + rng.uniform(0, 0.3, (4, TRACKS, TRACKS)) * (1 - np.eye(TRACKS))
    lam = (lam if banded else lam[0]).astype(np.float32)
    reader = streaming.SessionReader(folder)
    neural_long.demix_long(reader, tmp_path / "out", lam, training, demix, neural_long.LongSettings(block_frames=9))
    expected = models.demix_batch(jnp.asarray(mics[None]), jnp.asarray(lam[None]), n_fft=training.model.n_fft,
                                  hop=training.model.hop, sample_rate=12000.0, model_rate=8000.0, demix=demix,
                                  lengths=jnp.asarray([9001]))
    np.testing.assert_allclose(read_all(tmp_path / "out"), np.asarray(expected)[0], atol=2e-6)


def test_the_wiener_floor_uses_the_whole_sessions_mean_power(tunet, tmp_path):
    """After 0.5 s the session is 10⁶ times quieter, so the mask's floor (10⁻¹² of the mean power)
    matters there: a floor from each block's own power would clean the quiet part otherwise."""
    rng = np.random.default_rng(4)
    mics = (rng.standard_normal((TRACKS, 12000)) * np.where(np.arange(12000) < 6000, 0.2, 2e-7)).astype(np.float32)
    folder = tmp_path / "s"
    folder.mkdir()
    for i, mic in enumerate(mics):
        sf.write(folder / f"mic{i}.wav", mic, 12000, subtype="FLOAT")
    reader = streaming.SessionReader(folder)
    whole = float(jnp.mean(jnp.abs(signal.stft(jnp.asarray(mics), n_fft=384, hop=96)) ** 2))
    blocks = neural_long.mean_power(reader, n_fft=384, hop=96, long=neural_long.LongSettings(block_frames=9))
    np.testing.assert_allclose(blocks, whole, rtol=1e-5)
    _, _, training = neural.load(tunet, "tunet")
    lam = (np.eye(TRACKS) + 0.2 * (1 - np.eye(TRACKS))).astype(np.float32)
    neural_long.demix_long(reader, tmp_path / "out", lam, training, "wiener", neural_long.LongSettings(block_frames=9))
    expected = np.asarray(models.demix_batch(jnp.asarray(mics[None]), jnp.asarray(lam[None]), n_fft=training.model.n_fft,
                                             hop=training.model.hop, sample_rate=12000.0, model_rate=8000.0,
                                             demix="wiener"))[0]
    quiet = slice(7000, 11000)
    np.testing.assert_allclose(read_all(tmp_path / "out")[:, quiet], expected[:, quiet], rtol=1e-3, atol=1e-12)


def test_cae_streamed_equals_in_memory(cae, tmp_path):
    """Blocks of 5 frames with the context windows of their neighbours; the matrix from the Gram
    matrices gathered while writing."""
    folder, mics = write_session(tmp_path / "s", rate=8000, samples=6001)
    expected = in_memory("cae", cae, mics, 8000.0)
    matrix, _ = neural_long.reduce_long("cae", folder, tmp_path / "out", cae, neural_long.LongSettings(block_frames=5))
    np.testing.assert_allclose(read_all(tmp_path / "out"), expected.cleaned[0], atol=2e-6)
    np.testing.assert_allclose(matrix, expected.matrices[0], rtol=1e-5)  # the in-memory path is float32


@pytest.mark.parametrize("method, demix", [("tunet", "pinv"), ("tunet", "wiener"), ("cae", None)])
def test_streamed_models_return_the_samples_they_clipped(tunet, cae, tmp_path, monkeypatch, method, demix):
    """Every sample written is 1.5, so each cleaned PCM file clips all of its samples; ``run_long``
    returns the counts, from the time-domain writer (``pinv``) and the overlap-add one."""
    write = streaming.TrackWriter.write
    monkeypatch.setattr(streaming.TrackWriter, "write",
                        lambda self, samples: write(self, np.full(np.shape(samples), 1.5)))
    folder = tmp_path / "s"
    folder.mkdir()
    names = [f"mic{i}.wav" for i in range(TRACKS)]
    rng = np.random.default_rng(0)
    for name in names:
        sf.write(folder / name, rng.standard_normal(6001) * 0.1, 8000, subtype="PCM_16")
    config = {"tunet": tunet, "cae": cae}[method].copy_and_resolve_references()
    if demix is not None:
        config.demix = demix
    result = methods.get_method(method).run_long(folder, tmp_path / "out", config, names, False, False, None)
    assert result.clipped == dict.fromkeys(names, 6001)


@pytest.mark.parametrize("method", ["tunet", "cae"])
def test_cli_streams_long_sessions_with_their_offsets(tunet, cae, tmp_path, monkeypatch, method):
    config = {"tunet": tunet, "cae": cae}[method]
    folder, _ = write_session(tmp_path / "s", rate=8000, samples=12000, offsets=(0.05, 0.0, -0.02))
    common = ["--method", method, "--checkpoint", config.checkpoint, "--set", "block_frames=11"]
    assert cli.main(["reduce", str(folder), "--out", str(tmp_path / "m"), *common, "--no-streaming"]) == 0
    assert cli.main(["reduce", str(folder), "--out", str(tmp_path / "s1"), *common, "--streaming"]) == 0
    small = dataclasses.replace(methods.METHODS[method], long_samples=TRACKS * 12000 - 1)
    monkeypatch.setitem(methods.METHODS, method, small)
    assert cli.main(["reduce", str(folder), "--out", str(tmp_path / "a"), *common]) == 0
    memory = read_all(tmp_path / "m")
    lam = json.loads((tmp_path / "m" / "bleed.json").read_text())["lambda"]
    for out in ("s1", "a"):
        np.testing.assert_allclose(read_all(tmp_path / out), memory, atol=1e-5)
        np.testing.assert_allclose(json.loads((tmp_path / out / "bleed.json").read_text())["lambda"], lam, rtol=1e-5, atol=1e-6)
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["bleed.json", "mic0.wav", "mic1.wav", "mic2.wav"]


def test_cae_at_another_rate_is_refused_before_writing(cae, tmp_path, capsys):
    folder, _ = write_session(tmp_path / "s", rate=16000, samples=8000)
    code = cli.main(["reduce", str(folder), "--out", str(tmp_path / "out"), "--method", "cae",
                     "--checkpoint", cae.checkpoint, "--streaming"])
    assert code == 2
    assert "resample it first" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_streamed_multichannel_and_padded_files_keep_their_layout(tunet, tmp_path):
    """A stereo 24-bit WAV and a shorter 16-bit FLAC with ``--pad``: both paths write the same
    layout, lengths and formats, equal to within the files' last bit."""
    rng = np.random.default_rng(6)
    folder = tmp_path / "s"
    folder.mkdir()
    sf.write(folder / "a.wav", (rng.standard_normal((12000, 2)) * 0.1 + 0.02).astype(np.float32), 8000,
             subtype="PCM_24")
    sf.write(folder / "b.flac", (rng.standard_normal(10000) * 0.1).astype(np.float32), 8000)
    common = ["--method", "tunet", "--checkpoint", tunet.checkpoint, "--pad", "--set", "block_frames=7",
              "--set", "demix=wiener"]
    for mode in ("--streaming", "--no-streaming"):
        assert cli.main(["reduce", str(folder), "--out", str(tmp_path / mode), *common, mode]) == 0
    for name, shape, subtype, bit in (("a.wav", (12000, 2), "PCM_24", 2**-23), ("b.flac", (10000,), "PCM_16", 2**-15)):
        streamed, memory = (sf.read(tmp_path / mode / name)[0] for mode in ("--streaming", "--no-streaming"))
        assert streamed.shape == memory.shape == shape and sf.info(tmp_path / "--streaming" / name).subtype == subtype
        assert np.abs(streamed - memory).max() <= bit
