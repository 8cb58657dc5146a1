"""Training loop: schedules, resuming after SIGKILL, and 1 against 8 devices."""

import math
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from bleedjax import cli, parallel, train, training_log
from bleedjax.data import pipeline
from tests import train_helpers, xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def compilation_cache():
    """The CLI's persistent compilation cache, so reruns do not compile the models again."""
    cli._enable_compilation_cache()


def _run_helper(workdir, *args, devices: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"XLA_FLAGS": xla_flags.with_devices(devices),
                        "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "tests.train_helpers", str(workdir), *args], check=False,
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _train_curve(workdir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in training_log.read_metrics(workdir) if r["split"] == "train"]


def test_schedule_warmup_then_cosine():
    config = train.load_config("configs/tunet.py").optimizer
    config.learning_rate, config.warmup_steps = 2e-3, 10
    schedule = train.learning_rate_schedule(config, 110)
    expected = {0: 0.0, 5: 1e-3, 10: 2e-3, 60: 1e-3, 110: 0.0}  # 0.5·peak·(1 + cos(π·t/T))
    for step, value in expected.items():
        assert math.isclose(float(schedule(step)), value, rel_tol=1e-5, abs_tol=1e-9)
    config.schedule = "constant"
    constant = train.learning_rate_schedule(config, 110)
    assert [float(constant(s)) for s in (5, 10, 100)] == pytest.approx([1e-3, 2e-3, 2e-3], rel=1e-6)
    config.schedule = "linear"
    with pytest.raises(ValueError, match="cosine"):
        train.learning_rate_schedule(config, 110)


def test_resume_with_another_num_train_steps_says_what_it_does():
    """Extending or shortening a cosine run rebuilt its schedule without a word (the audit's 20 ->
    22 steps tripled the rate at step 21), and a total below the checkpoint trained nothing."""
    config = train.load_config("configs/tunet.py")
    config.optimizer.learning_rate, config.optimizer.warmup_steps = 2e-3, 10
    config.training.num_train_steps = 210
    saved = {"training": {"num_train_steps": 110}}
    (note,) = train.resume_schedule_notes(saved, config, 60)
    assert "num_train_steps 110 -> 210" in note and "from 0.001 to 0.00171" in note  # cos: 1e-3 -> 1.71e-3
    assert train.resume_schedule_notes({"training": {"num_train_steps": 210}}, config, 60) == []
    config.training.num_train_steps = 50
    assert train.resume_schedule_notes(saved, config, 60) == [
        "the checkpoint is at step 60, num_train_steps is 50: nothing is trained"]
    config.training.num_train_steps, config.optimizer.schedule = 210, "constant"
    assert train.resume_schedule_notes(saved, config, 60) == []


def test_load_config_variant_and_errors(tmp_path):
    assert train.load_config("configs/tunet.py:runlocal").data.sample_rate == 8000
    with pytest.raises(ValueError, match="runlocal"):
        train.load_config("configs/tunet.py:tiny")
    with pytest.raises(ValueError, match="not found"):
        train.load_config(str(tmp_path / "missing.py"))
    # The paper's CAE cleans vocals: a stem name the MUSDB18-HQ data's track_names must hold.
    from bleedjax.data import musdb18hq
    from bleedjax.models import cae

    paper = train.load_config("configs/cae.py")
    assert paper.data.builder == "musdb18hq" and tuple(paper.data.track_names) == musdb18hq.STEMS
    assert cae.stem_tracks(paper.model, paper, paper.data.num_tracks).tolist() == [musdb18hq.STEMS.index("vocals")]


def test_several_processes_need_a_shared_data_dir_to_prepare_into(monkeypatch):
    config = train.load_config("configs/tunet.py:runlocal").data
    config.manual_dir, config.data_dir = "/stems", ""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="needs data.data_dir, a folder every process reads"):
        train.prepare_data(config)


def test_bundled_cae_trains_on_the_bundled_tunet_data():
    """``configs/cae.py:bundled`` reads the same prepared dataset and bleed as the bundled t-UNet,
    with every track active, and keeps the paper's shape (3 frames, two convolutions, 100)."""
    cae, tunet = train.load_config("configs/cae.py:bundled"), train.load_config("configs/tunet.py:bundled")
    for key in ("builder", "manual_dir", "sample_rate", "block_seconds", "augmentation", "seipel_crosstalk_db"):
        assert cae.data[key] == tunet.data[key], key
    assert cae.data.min_active_tracks == cae.data.num_tracks
    model = cae.model
    assert (model.context_frames, len(model.conv_channels), model.bottleneck, model.stem) == (3, 2, 100, "any")
    assert model.hop * 4 == model.n_fft and 0 < model.train_frames


def test_sigkill_and_resume_continue_the_loss_curve_exactly(tmp_path):
    """A training process killed with SIGKILL while reading batch 12 (the checkpoint at step 10
    may still be in flight) and restarted in the same workdir ends with the same metrics.jsonl
    as an uninterrupted run."""
    killed = _run_helper(tmp_path / "run", "--steps", "16", "--kill-at", "12", devices=8)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _train_curve(tmp_path / "run")[-1][0] >= 10
    config = train.load_config("configs/tunet.py:runlocal")
    config.training.num_train_steps, config.training.eval_batches = 16, 0
    resumed = train.train_and_evaluate(config, tmp_path / "run", make_iterator=train_helpers.make_iterator)
    assert resumed["start_step"] in (5, 10)
    train.train_and_evaluate(config, tmp_path / "reference", make_iterator=train_helpers.make_iterator)
    curve = _train_curve(tmp_path / "run")
    assert [step for step, _ in curve] == list(range(1, 17))
    assert curve == _train_curve(tmp_path / "reference")  # bitwise: same program, same batches


def _files_and_times(folder: pathlib.Path) -> dict:
    """Every path under ``folder`` (and itself) with its modification time and, for files, bytes."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in [folder, *folder.rglob("*")]}


def test_a_finished_run_trains_nothing_and_writes_nothing(tmp_path, capsys):
    """Resuming a run at or past num_train_steps says that nothing is trained, as before, and
    leaves the run as it was: config.json was rewritten (with the new num_train_steps), and so
    were metrics.jsonl and a new TensorBoard event file."""
    config = train.load_config("configs/tunet.py:runlocal")
    config.training.num_train_steps, config.training.eval_batches = 2, 0
    run = tmp_path / "run"
    train.train_and_evaluate(config, run, make_iterator=train_helpers.make_iterator)
    before = _files_and_times(run)
    assert {"config.json", "metrics.jsonl", "checkpoints/2"} <= set(before)
    capsys.readouterr()
    for steps in (2, 1):
        config.training.num_train_steps = steps
        result = train.train_and_evaluate(config, run, make_iterator=train_helpers.make_iterator)
        assert result == {"train": {}, "eval": {}, "start_step": 2}
        assert capsys.readouterr().err == (
            f"warning: {run}: the checkpoint is at step 2, num_train_steps is {steps}: nothing is trained\n")
        assert _files_and_times(run) == before


def test_one_and_eight_devices_give_the_same_training():
    """Three steps on a 1-device mesh and on the 8-device mesh (batch split 8 ways, gradients
    all-reduced): the same losses and weights up to float32 summation order."""
    assert jax.device_count() == 8
    config = train.load_config("configs/tunet.py:runlocal")
    batches = [train.synthetic_batch(config.data, seed=s) for s in range(3)]
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = parallel.make_mesh(devices)
        state = train.init_state(config, mesh)
        step = train.make_train_step(state, config, mesh)
        model_state, optimizer_state, losses = state.model_state, state.optimizer_state, []
        for batch in batches:
            model_state, optimizer_state, metrics = step(model_state, optimizer_state,
                                                         pipeline.to_global(batch, mesh))
            losses.append(float(metrics["loss"]))
        results.append((losses, jax.tree.leaves(jax.device_get(model_state))))
    (losses_1, weights_1), (losses_8, weights_8) = results
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
    for a, b in zip(weights_1, weights_8, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_batch_must_divide_over_devices():
    mesh = parallel.make_mesh()
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        parallel.local_batch_size(12, mesh)


def test_cli_trains_on_prepared_stems_and_resumes_exactly(tmp_path, capsys):
    """`bleedjax train` with the Grain pipeline on a small stem tree: stopped at step 6 and
    continued to 10 in the same workdir, it gives the losses of one 10-step run (the iterator
    state comes back with the checkpoint: the same next batch)."""
    from bleedjax.data import fake_trees

    stems = tmp_path / "stems"
    fake_trees.write_sessions(stems / "train", sessions=2, seconds=2.0, sample_rate=8000)
    fake_trees.write_sessions(stems / "validation", sessions=1, seconds=1.0, sample_rate=8000, seed=1)
    common = ["--config", "configs/tunet.py:runlocal", "--set", f"data.manual_dir={stems}",
              "--set", f"data.data_dir={tmp_path / 'tfds'}", "--set", "optimizer.schedule=constant",
              "--set", "training.eval_split=validation", "--set", "training.eval_every=6",
              "--set", "training.checkpoint_every=3"]
    assert cli.main(["train", *common, "--workdir", str(tmp_path / "a"),
                     "--set", "training.num_train_steps=6"]) == 0
    assert cli.main(["train", *common, "--workdir", str(tmp_path / "a"),
                     "--set", "training.num_train_steps=10"]) == 0
    assert cli.main(["train", *common, "--workdir", str(tmp_path / "b"),
                     "--set", "training.num_train_steps=10"]) == 0
    captured = capsys.readouterr()
    assert "eval: loss" in captured.out
    assert "warning" not in captured.err  # only the number of steps changed on resume
    curve = _train_curve(tmp_path / "a")
    assert [step for step, _ in curve] == list(range(1, 11))
    np.testing.assert_array_equal(curve, _train_curve(tmp_path / "b"))
    records = training_log.read_metrics(tmp_path / "b")
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [6, 10]
    assert all(np.isfinite([r["sdr"], r["sir"], r["sdr_input"], r["sir_input"]]).all() for r in evals)
    assert list((tmp_path / "b" / "tensorboard").glob("events.out.tfevents.*"))
    # A missing evaluation split stops the run before its first step, not at its first evaluation.
    assert cli.main(["train", *common, "--workdir", str(tmp_path / "c"), "--set", "training.eval_split=test",
                     "--set", "training.num_train_steps=10"]) == 2
    assert "no split 'test'" in capsys.readouterr().err and not (tmp_path / "c" / "checkpoints").exists()


def test_cli_train_bad_config_is_one_line_error(tmp_path, capsys):
    assert cli.main(["train", "--config", "configs/tunet.py:runlocal", "--workdir", str(tmp_path),
                     "--set", "model.nonsense=1"]) == cli.EXIT_BAD_INPUT
    assert "model.nonsense=1" in capsys.readouterr().err


def test_device_augmentation_trains_like_host_augmentation(tmp_path):
    """``data.augment_on="device"``: the pipeline yields stems and the train step makes the bleed
    inside its jit; the losses of three steps equal those with the bleed made on the host."""
    from bleedjax.data import fake_trees

    config = train.load_config("configs/tunet.py:runlocal")
    config.data = fake_trees.tiny_dataset(tmp_path, seconds=2.0, block_seconds=0.5,
                                          global_batch_size=8, num_tracks=4)
    losses = {}
    for where in ("host", "device"):
        config.data.augment_on = where
        mesh = parallel.make_mesh()
        state = train.init_state(config, mesh)
        step = train.make_train_step(state, config, mesh)
        batches = pipeline.make_iterator(config.data, seed=config.training.seed, split="train")
        model_state, optimizer_state, losses[where] = state.model_state, state.optimizer_state, []
        for _ in range(3):
            batch = next(batches)
            assert ("stems" in batch) == (where == "device")
            model_state, optimizer_state, metrics = step(model_state, optimizer_state,
                                                         pipeline.to_global(batch, mesh))
            losses[where].append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses["host"]))
    np.testing.assert_allclose(losses["device"], losses["host"], rtol=1e-5)
