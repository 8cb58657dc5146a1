"""Orbax checkpoints: model, optimiser, data iterator and config round trips, keep-last-K, and
clear errors for checkpoints of another config."""

import pathlib

import jax
import numpy as np
import pytest

from bleedjax import checkpointing, cli, parallel, train, training_log
from bleedjax.data import pipeline
from tests import train_helpers


@pytest.fixture(autouse=True, scope="module")
def compilation_cache():
    cli._enable_compilation_cache()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three steps of the runlocal t-UNet, checkpointed at every step (keep 2), with the
    in-memory states, the iterator and the batch that follows step 3."""
    workdir = tmp_path_factory.mktemp("ckpt")
    config = train.load_config("configs/tunet.py:runlocal")
    config.training.num_train_steps = 16
    mesh = parallel.make_mesh()
    state = train.init_state(config, mesh)
    step = train.make_train_step(state, config, mesh)
    iterator = train_helpers.make_iterator(config.data, seed=0, split="train")
    manager = checkpointing.make_manager(workdir / "checkpoints", save_every=1, keep=2)
    model_state, optimizer_state = state.model_state, state.optimizer_state
    for number in range(1, 4):
        batch = pipeline.to_global(next(iterator), mesh)
        model_state, optimizer_state, _ = step(model_state, optimizer_state, batch)
        checkpointing.save(manager, number, model_state=model_state,
                           optimizer_state=optimizer_state, iterator=iterator, config=config)
    manager.wait_until_finished()
    manager.close()
    return {"workdir": workdir, "config": config, "mesh": mesh, "state": state,
            "model_state": jax.device_get(model_state),
            "optimizer_state": jax.device_get(optimizer_state), "next_batch": next(iterator)}


def _assert_trees_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_keeps_the_last_k_steps(trained):
    steps = sorted(int(p.name) for p in (trained["workdir"] / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 3]


def test_restore_gives_back_model_optimizer_and_the_next_batch(trained):
    config, mesh, state = trained["config"], trained["mesh"], trained["state"]
    manager = checkpointing.make_manager(trained["workdir"] / "checkpoints", save_every=1, keep=2)
    assert manager.latest_step() == 3
    iterator = train_helpers.make_iterator(config.data, seed=0, split="train")
    model_state, optimizer_state = checkpointing.restore(
        manager, 3, model_state=state.model_state, optimizer_state=state.optimizer_state,
        iterator=iterator, config=config, sharding=parallel.replicated(mesh))
    manager.close()
    _assert_trees_equal(model_state, trained["model_state"])
    _assert_trees_equal(optimizer_state, trained["optimizer_state"])
    assert int(optimizer_state["step"][...]) == 3
    _assert_trees_equal(next(iterator), trained["next_batch"])
    assert jax.tree.leaves(model_state)[0].sharding.is_fully_replicated


def test_restore_model_rebuilds_the_model_from_the_checkpoint_alone(trained):
    from flax import nnx

    model, config = checkpointing.restore_model(trained["workdir"])  # the workdir above checkpoints/
    assert config.to_dict() == trained["config"].to_dict()
    assert config.model.channels == (4, 4, 8, 8, 16)
    _assert_trees_equal(nnx.state(model), trained["model_state"])
    older, _ = checkpointing.restore_model(trained["workdir"] / "checkpoints", step=2)
    assert not np.array_equal(jax.tree.leaves(nnx.state(older))[0],
                              jax.tree.leaves(trained["model_state"])[0])


def test_checkpoint_of_another_config_is_a_clear_error(trained, tmp_path):
    config = train.load_config("configs/tunet.py:runlocal")
    config.training.num_train_steps = 16
    config.model.channels = (4, 4, 8, 8, 32)
    config.loss = "signal"
    with pytest.raises(ValueError, match=r"checkpoints/3: .* different model config \(model.channels: "
                                         r"checkpoint \[4, 4, 8, 8, 16\], config \[4, 4, 8, 8, 32\]; "
                                         r"loss: checkpoint 'matrix', config 'signal'\)"):
        train.train_and_evaluate(config, trained["workdir"], make_iterator=train_helpers.make_iterator)
    # The refused config is not recorded as the run's (before the check it was written first).
    assert not (pathlib.Path(trained["workdir"]) / "config.json").exists()
    saved = checkpointing.config_to_json(trained["config"])
    changed = train.load_config("configs/tunet.py:runlocal")
    changed.training.num_train_steps = 99
    changed.data.global_batch_size = 2 * changed.data.global_batch_size
    differences = checkpointing.resume_differences(saved, changed)
    assert len(differences) == 1 and differences[0].startswith("data.global_batch_size: checkpoint")
    with pytest.raises(ValueError, match="holds a 'tunet' model, not 'cae'"):
        checkpointing.restore_model(trained["workdir"], model_name="cae")
    with pytest.raises(ValueError, match="no checkpoint steps"):
        checkpointing.restore_model(tmp_path)
    with pytest.raises(ValueError, match="checkpoint folder not found"):
        checkpointing.restore_model(tmp_path / "missing")


def test_export_keeps_model_and_config_only(trained, tmp_path):
    from flax import nnx

    written = checkpointing.export_model(trained["workdir"], tmp_path / "export")
    assert written.name == "3"
    assert sorted(p.name for p in written.iterdir() if not p.name.startswith("_")) == [
        "commit_success.txt", "config", "model"]
    model, config = checkpointing.restore_model(tmp_path / "export", model_name="tunet")
    _assert_trees_equal(nnx.state(model), trained["model_state"])
    assert config.to_dict() == trained["config"].to_dict()
    with pytest.raises(ValueError, match="not empty"):
        checkpointing.export_model(trained["workdir"], tmp_path / "export")
    (tmp_path / "export" / "README.md").write_text("how this model was made")
    written = checkpointing.export_model(trained["workdir"], tmp_path / "export", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["3", "README.md"]
    assert (tmp_path / "export" / "README.md").read_text() == "how this model was made"
    for inside_out in (trained["workdir"], pathlib.Path(trained["workdir"]).parent, pathlib.Path(trained["workdir"]) / "x"):
        with pytest.raises(ValueError, match="outside the training run"):
            checkpointing.export_model(trained["workdir"], inside_out, overwrite=True)
    assert (pathlib.Path(trained["workdir"]) / "checkpoints").is_dir()


def test_export_refuses_a_folder_that_holds_another_runs_checkpoints(trained, tmp_path):
    """An export into another training run's workdir reported success, but reading that folder
    back loaded the other run (checkpoint_dir prefers OUT/checkpoints)."""
    other = tmp_path / "other_run"
    (other / "checkpoints" / "20").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds a training run's checkpoints/ folder"):
        checkpointing.export_model(trained["workdir"], other, overwrite=True)
    assert sorted(p.name for p in other.iterdir()) == ["checkpoints"]


def test_a_damaged_step_is_one_line_naming_it(trained, tmp_path, monkeypatch, caplog):
    """A step folder without its config item, or with truncated weights, array metadata or
    arrays, raised Orbax's KeyError with a traceback, or a ValueError holding a multi-kilobyte
    TensorStore spec. The failure leaves nothing running behind it: Orbax's restore of a damaged
    step left reads in flight on its closed event loop, which raised "Event loop is closed" in
    TensorStore's threads (always with the metadata alone damaged, while the arrays were read) or
    logged "Task exception was never retrieved"."""
    import gc
    import shutil
    import sys
    import time

    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    truncated = {"model": "", "metadata": "array_metadatas", "arrays": "d"}
    for damage in ("config", "model", "metadata", "arrays"):
        copy = tmp_path / damage
        shutil.copytree(trained["workdir"], copy)
        step = copy / "checkpoints" / "3"
        if damage == "config":
            shutil.rmtree(step / "config")
        else:
            for file in (step / "model" / truncated[damage]).rglob("*"):
                if file.is_file() and file.stat().st_size > 0 and file.name not in ("_METADATA", "_sharding"):
                    file.write_bytes(b"")
        with pytest.raises(ValueError) as raised:
            checkpointing.restore_model(copy)
        message = str(raised.value)
        assert str(step) in message and len(message) < 600 and "\n" not in message, message
    del raised
    time.sleep(1.0)  # the reads left in flight ended within milliseconds
    gc.collect()
    assert [repr(u.exc_value) for u in ignored] == []
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


def _record_managers(monkeypatch) -> list[dict]:
    """``{"manager": m, "closed": bool}`` for every manager :func:`checkpointing.make_manager`
    makes from now on (``close`` still closes it)."""
    made = []
    make = checkpointing.make_manager

    def recording(*args, **kwargs):
        entry = {"manager": make(*args, **kwargs), "closed": False}
        close = entry["manager"].close

        def recorded_close():
            close()
            entry["closed"] = True

        entry["manager"].close = recorded_close
        made.append(entry)
        return entry["manager"]

    monkeypatch.setattr(checkpointing, "make_manager", recording)
    return made


def test_train_and_evaluate_closes_its_manager_on_every_way_out(trained, tmp_path, monkeypatch):
    """train_and_evaluate made its CheckpointManager before the try that closes it: a checkpoint
    of another model config (check_compatible's ValueError), or a failure before the first step,
    left the manager open (its threads and async state stay: one more per failed call in a
    notebook). A finished run closes it too, and still writes nothing."""
    import copy
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained["workdir"], run)
    managers = _record_managers(monkeypatch)
    other = copy.deepcopy(trained["config"])
    other.model.channels = (4, 4, 8, 8, 32)
    with pytest.raises(ValueError, match="different model config"):
        train.train_and_evaluate(other, run, make_iterator=train_helpers.make_iterator)

    def no_data(*args, **kwargs):
        raise RuntimeError("no data")

    with pytest.raises(RuntimeError, match="no data"):
        train.train_and_evaluate(trained["config"], run, make_iterator=no_data)
    finished = copy.deepcopy(trained["config"])
    finished.training.num_train_steps = 3
    assert train.train_and_evaluate(finished, run, make_iterator=train_helpers.make_iterator) == {
        "train": {}, "eval": {}, "start_step": 3}
    assert [entry["closed"] for entry in managers] == [True, True, True]


def test_resuming_from_a_damaged_step_is_one_line_saying_what_to_do(trained, tmp_path, monkeypatch, caplog,
                                                                      capfd):
    """Resuming training from a step with truncated weights or array metadata (of the model or
    the optimiser) went straight into Orbax's concurrent restore, which failed with a
    multi-kilobyte TensorStore error after "Event loop is closed" from TensorStore's threads and
    "Task exception was never retrieved". The step is now read first, as restore_model reads it:
    one line naming the step folder, saying it is damaged and what to do, with nothing left
    running and the manager closed. Deleting the step folder, as the message says, resumes from
    the previous checkpoint; with no previous one, the message says so."""
    import copy
    import gc
    import shutil
    import sys
    import time

    ignored = []

    def print_as_outside_pytest(unraisable):  # pytest's own hook would keep them off stderr
        ignored.append(repr(unraisable.exc_value))
        sys.__unraisablehook__(unraisable)

    monkeypatch.setattr(sys, "unraisablehook", print_as_outside_pytest)
    managers = _record_managers(monkeypatch)
    config = copy.deepcopy(trained["config"])
    config.training.num_train_steps, config.training.eval_batches, config.training.checkpoint_every = 4, 0, 1
    for item in ("model", "optimizer"):
        for part in ("d", "array_metadatas"):  # the arrays; their metadata
            run = tmp_path / f"{item}_{part}"
            shutil.copytree(trained["workdir"], run)
            step = run / "checkpoints" / "3"
            for file in (step / item / part).rglob("*"):
                if file.is_file() and file.stat().st_size > 0:
                    file.write_bytes(b"")
            with pytest.raises(ValueError) as raised:
                train.train_and_evaluate(config, run, make_iterator=train_helpers.make_iterator)
            message = str(raised.value)
            assert message.startswith(f"{step}: this checkpoint step cannot be read (") and message.endswith(
                "); the step is damaged: delete this step folder and run again to resume from step 2, "
                "the previous checkpoint"), message
            assert len(message) < 600 and "\n" not in message, message
    del raised
    time.sleep(1.0)  # reads left in flight would end within milliseconds
    gc.collect()
    printed = capfd.readouterr().err
    for noise in ("Event loop is closed", "Task exception was never retrieved", "Exception ignored", "Traceback"):
        assert noise not in printed, printed[-3000:]
    assert ignored == []
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert [entry["closed"] for entry in managers] == [True] * 4
    # What the message says works: Orbax's next manager lists the step folders afresh.
    shutil.rmtree(step)
    assert train.train_and_evaluate(config, run, make_iterator=train_helpers.make_iterator)["start_step"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["3", "4"]
    assert [(r["step"], r["split"]) for r in training_log.read_metrics(run)] == [(3, "train"), (4, "train")]
    # Without an earlier step to resume from.
    run = tmp_path / "alone"
    shutil.copytree(trained["workdir"], run)
    shutil.rmtree(run / "checkpoints" / "2")
    for file in (run / "checkpoints" / "3" / "model" / "d").rglob("*"):
        file.write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoints/3: .*; the step is damaged and is this run's only "
                                         r"checkpoint: train again in a new workdir$"):
        train.train_and_evaluate(config, run, make_iterator=train_helpers.make_iterator)
