"""``bleedjax reduce --method tunet|cae``: checkpoints made here with bleedjax.checkpointing, the CLI
end to end, batching, and the errors for sessions a model cannot clean."""

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import soundfile as sf
from bleedjax.configs import cae as cae_config
from bleedjax.configs import tunet as tunet_config
from flax import nnx

from bleedjax import checkpointing, cli, demo, evaluate, models
from bleedjax.methods import neural
from bleedjax.simulate_folder import simulate_arrays

TRACKS = 3


def run(*args) -> int:
    return cli.main([str(a) for a in args])


def save_checkpoint(folder: pathlib.Path, config) -> pathlib.Path:
    """A freshly initialised model saved as ``bleedjax train`` saves it (step 0)."""
    model = nnx.jit(lambda rngs: models.build_model(config.model, rngs=rngs))(
        nnx.Rngs(jax.random.key(0, impl="rbg"))
    )
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    manager = checkpointing.make_manager(folder / "checkpoints", save_every=1, keep=1)
    checkpointing.save(manager, 0, model_state=nnx.state(model), optimizer_state=nnx.state(optimizer),
                       iterator=None, config=config, force=True)
    manager.wait_until_finished()
    manager.close()
    return folder


@pytest.fixture(scope="module")
def tunet_checkpoint(tmp_path_factory):
    config = tunet_config.get_config("runlocal")
    config.model.num_tracks = config.data.num_tracks = TRACKS
    return save_checkpoint(tmp_path_factory.mktemp("tunet"), config), config


@pytest.fixture(scope="module")
def cae_checkpoint(tmp_path_factory):
    config = cae_config.get_config("runlocal")
    config.model.stem = "any"
    return save_checkpoint(tmp_path_factory.mktemp("cae"), config), config


def write_session(folder, *, rate, samples, tracks=TRACKS, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((tracks, samples)) * 0.1
    mics = (np.eye(tracks) + 0.2 * (1 - np.eye(tracks))) @ sources
    for i, mic in enumerate(mics):
        sf.write(folder / f"mic{i}.wav", mic, rate, subtype="FLOAT")
    return folder, mics


def test_tunet_cli_end_to_end_at_another_rate(tmp_path, tunet_checkpoint):
    checkpoint, _ = tunet_checkpoint
    first, first_mics = write_session(tmp_path / "in" / "a", rate=16000, samples=16000, seed=1)
    second, second_mics = write_session(tmp_path / "in" / "b", rate=16000, samples=11000, seed=2)
    out = tmp_path / "out"
    assert run("reduce", first, second, "--out", out, "--method", "tunet", "--checkpoint", checkpoint) == 0
    for name, mics in (("a", first_mics), ("b", second_mics)):
        bleed = json.loads((out / name / "bleed.json").read_text())
        lam = np.asarray(bleed["lambda"])
        assert bleed["method"] == "tunet" and lam.shape == (TRACKS, TRACKS) and np.all(lam >= 0)
        cleaned = np.stack([sf.read(out / name / f"mic{i}.wav", dtype="float32")[0] for i in range(TRACKS)])
        # Λ̂ is estimated at the model's 8 kHz; Ŝ = pinv(Λ̂) X is applied at the session's 16 kHz,
        # to the tracks less their DC offsets, which reduce puts back.
        offsets = mics.mean(axis=1, keepdims=True)
        np.testing.assert_allclose(cleaned, np.linalg.pinv(lam) @ (mics - offsets) + offsets, atol=1e-4)


@pytest.mark.parametrize("demix", ["pinv", "wiener"])
def test_tunet_batched_sessions_equal_one_at_a_time(tunet_checkpoint, demix):
    """Λ̂ and the cleaned audio, every sample: with ``wiener`` the STFT's frames after a padded
    session's end are left out of the inverse STFT."""
    checkpoint, _ = tunet_checkpoint
    config = neural.with_checkpoint("tunet", neural.default_config("tunet"), str(checkpoint))
    config.demix = demix
    graphdef, state, training_config = neural.load(config, "tunet")
    audio = np.random.default_rng(0).standard_normal((2, TRACKS, 9000)).astype(np.float32)
    audio[1, :, 6500:] = 0.0
    cleaned, together = neural.reduce_tunet(graphdef, state, training_config, audio, np.array([9000, 6500]), 8000.0,
                                            config)
    cleaned_alone, alone = neural.reduce_tunet(graphdef, state, training_config, audio[1:, :, :6500], np.array([6500]),
                                               8000.0, config)
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cleaned[1, :, :6500]), np.asarray(cleaned_alone[0]), atol=1e-5)


def test_tunet_refuses_sessions_it_cannot_clean(tmp_path, tunet_checkpoint, capsys):
    checkpoint, _ = tunet_checkpoint
    four, _ = write_session(tmp_path / "four", rate=8000, samples=8000, tracks=4)
    assert run("reduce", four, "--out", tmp_path / "out4", "--method", "tunet", "--checkpoint", checkpoint) == 2
    assert "trained for 3 tracks; this session has 4" in capsys.readouterr().err
    assert not (tmp_path / "out4").exists()
    short, _ = write_session(tmp_path / "short", rate=8000, samples=1000)
    assert run("reduce", short, "--out", tmp_path / "outs", "--method", "tunet", "--checkpoint", checkpoint) == 2
    assert "needs at least 0.26 s of audio" in capsys.readouterr().err
    assert run("reduce", short, "--out", tmp_path / "outk", "--method", "kamir", "--checkpoint", checkpoint) == 2
    assert "--checkpoint works only with --method tunet or cae" in capsys.readouterr().err


def test_checkpoint_of_the_other_model_is_an_error(tmp_path, cae_checkpoint, capsys):
    checkpoint, _ = cae_checkpoint
    session, _ = write_session(tmp_path / "s", rate=8000, samples=8000)
    assert run("reduce", session, "--out", tmp_path / "out", "--method", "tunet", "--checkpoint", checkpoint) == 2
    assert "holds a 'cae' model, not 'tunet'" in capsys.readouterr().err


def test_bundled_tunet(tmp_path, capsys, caplog):
    session, _ = write_session(tmp_path / "s", rate=22050, samples=22050 * 5, tracks=4)
    bundled = models.BUNDLED["tunet"]
    code = run("reduce", session, "--out", tmp_path / "out", "--method", "tunet")
    if bundled.is_dir() and any(bundled.iterdir()):
        assert code == 0
        # Reading the model is not worth a warning (Orbax's read-only notices are kept quiet).
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
        lam = np.asarray(json.loads((tmp_path / "out" / "bleed.json").read_text())["lambda"])
        assert lam.shape == (4, 4) and np.all(lam >= 0)
    else:
        assert code == 2
        assert "no bundled tunet model" in capsys.readouterr().err


QUARTET = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "audio" / "string_quartet"


@pytest.mark.skipif(not (models.BUNDLED["tunet"] / "README.md").is_file(), reason="no bundled t-UNet")
def test_bundled_tunet_cleans_a_held_out_quartet_without_making_a_track_worse():
    """The bundled model on a piece it never saw (two violins, viola, cello), Seipel & Lerch's
    bleed at −12 dB with free-field delays: every track's SDR rises, and Λ̂ is near the truth."""
    stems = np.stack([sf.read(QUARTET / f"{n}.flac", dtype="float32")[0][: 22050 * 5]
                      for n in ("violin1", "violin2", "viola", "cello")])
    mics, references, truth = simulate_arrays(stems, sample_rate=22050, bleed="linear", max_crosstalk_db=-12.0, seed=0)
    config = neural.default_config("tunet")
    graphdef, state, training = neural.load(config, "tunet")
    cleaned, lam = neural.reduce_tunet(graphdef, state, training, mics[None], np.array([mics.shape[-1]]), 22050.0, config)
    before = evaluate.score(references, mics)["sdr"]
    after = evaluate.score(references, np.asarray(cleaned)[0])["sdr"]
    assert np.all(after - before > 1.0), after - before
    assert np.mean(after - before) > 4.0, after - before
    error = np.asarray(lam)[0] - np.asarray(truth["matrix"])
    assert np.sqrt(np.sum(error**2)) < 0.15, np.asarray(lam)[0]


@pytest.mark.skipif(not (models.BUNDLED["tunet"] / "README.md").is_file(), reason="no bundled t-UNet")
def test_bundled_tunet_takes_the_five_track_demo_session(tmp_path):
    assert run("reduce", demo.bundled_stems(), "--out", tmp_path / "out", "--method", "tunet") == 0
    lam = np.asarray(json.loads((tmp_path / "out" / "bleed.json").read_text())["lambda"])
    assert lam.shape == (5, 5) and np.all(lam >= 0)


def test_cae_batched_sessions_equal_one_at_a_time(cae_checkpoint):
    """Every sample: the STFT frames after a padded session's end are left out of the iSTFT."""
    checkpoint, _ = cae_checkpoint
    config = neural.with_checkpoint("cae", neural.default_config("cae"), str(checkpoint))
    audio = np.random.default_rng(1).standard_normal((2, TRACKS, 3000)).astype(np.float32) * 0.1
    audio[1, :, 2100:] = 0.0
    together = neural.run("cae", audio, np.array([3000, 2100]), config, [f"m{i}" for i in range(TRACKS)],
                          sample_rate=8000.0)
    alone = neural.run("cae", audio[1:, :, :2100], np.array([2100]), config, [f"m{i}" for i in range(TRACKS)],
                       sample_rate=8000.0)
    np.testing.assert_allclose(together.cleaned[1, :, :2100], alone.cleaned[0], atol=1e-5)


def test_cae_cli_end_to_end(tmp_path, cae_checkpoint, capsys):
    checkpoint, _config = cae_checkpoint
    session, mics = write_session(tmp_path / "s", rate=8000, samples=3000)
    assert run("reduce", session, "--out", tmp_path / "out", "--method", "cae", "--checkpoint", checkpoint) == 0
    cleaned = np.stack([sf.read(tmp_path / "out" / f"mic{i}.wav", dtype="float32")[0] for i in range(TRACKS)])
    assert cleaned.shape == mics.shape and np.all(np.isfinite(cleaned))
    lam = np.asarray(json.loads((tmp_path / "out" / "bleed.json").read_text())["lambda"])
    # What bleed.json reports for the CAE: the least-squares X · pinv(Ŝ), of the tracks less their
    # DC offsets (reduce puts them back on Ŝ).
    offsets = mics.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(lam, (mics - offsets) @ np.linalg.pinv(cleaned.astype(np.float64) - offsets),
                               atol=2e-3)
    other, _ = write_session(tmp_path / "r", rate=16000, samples=3000)
    assert run("reduce", other, "--out", tmp_path / "out2", "--method", "cae", "--checkpoint", checkpoint) == 2
    assert "resample it first" in capsys.readouterr().err


@pytest.mark.parametrize("demix", ["pinv", "wiener"])
def test_predict_matches_the_method_path(tunet_checkpoint, demix):
    checkpoint, _ = tunet_checkpoint
    model, config = models.load_for_inference(checkpoint, "tunet")
    config.model.demix = demix
    audio = jnp.asarray(np.random.default_rng(5).standard_normal((1, TRACKS, 4000)), jnp.float32)
    predicted = nnx.jit(lambda m, x: models.predict(m, x, config.model))(model, audio)
    method = neural.with_checkpoint("tunet", neural.default_config("tunet"), str(checkpoint))
    method.demix = demix
    graphdef, state, training_config = neural.load(method, "tunet")
    cleaned, _ = neural.reduce_tunet(graphdef, state, training_config, audio, np.array([4000]), 8000.0, method)
    np.testing.assert_allclose(cleaned, predicted, rtol=1e-4, atol=1e-5)
