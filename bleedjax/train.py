"""Training the neural bleed models (t-UNet, CAE; Rajesh R & Rajan, WASPAA 2023 [1]).

:func:`train_and_evaluate` is the whole loop: one ``('data',)`` mesh (:mod:`bleedjax.parallel`),
a jitted train step with explicit shardings (batch ``P('data')``, model and optimiser ``P()``),
optax Adam(W) with warm-up, a cosine or constant schedule and gradient clipping, Orbax checkpoints
of model, optimiser, step and data iterator (:mod:`bleedjax.checkpointing`), metrics to
``WORKDIR/metrics.jsonl`` and TensorBoard (:mod:`bleedjax.training_log`), and periodic evaluation
on a held-out split with BSS Eval SDR/SIR (:mod:`bleedjax.metrics`). Restarting with the same
workdir continues from the last checkpoint exactly: same weights, optimiser state and next batch.

[1] Rajesh R & Padmanabhan Rajan, "Neural networks for interference reduction in multi-track
    recordings", WASPAA 2023.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath
from flax import nnx

from bleedjax import checkpointing, parallel, reduce, training_log
from bleedjax.data import datasets, pipeline
from bleedjax.metrics import bss_eval_sources

MakeIterator = Callable[..., Iterator[dict[str, np.ndarray]]]


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of a config file given as ``path`` or ``path:arg``
    (``configs/tunet.py:runlocal``)."""
    path, _, arg = str(spec).partition(":")
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    module_spec = importlib.util.spec_from_file_location(f"bleedjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """``section.key=value`` strings (``data.manual_dir=stems``, ``training.num_train_steps=50``);
    values are Python literals or bare strings, as ``bleedjax reduce --set``."""
    config = ml_collections.ConfigDict(config.to_dict())
    for item in overrides:
        path, sep, value = item.partition("=")
        *sections, key = path.split(".")
        parent = config
        for section in sections:
            if section not in parent or not isinstance(parent[section], ml_collections.ConfigDict):
                raise ValueError(f"--set {item}: no config section {section!r} in {path!r}")
            parent = parent[section]
        if not sep or key not in parent:
            known = ", ".join(sorted(parent.keys()))
            raise ValueError(f"--set {item}: expected section.key=value with key one of {known}")
        updated = reduce.apply_overrides(parent, [f"{key}{sep}{value}"])
        parent.update(updated)
    return config


def prepare_data(data_config: ml_collections.ConfigDict) -> None:
    """Prepares the dataset from ``data_config.manual_dir`` when it is not prepared yet (process 0
    writes, the others wait); nothing to do without a ``manual_dir``."""
    if not data_config.get("manual_dir"):
        return
    if jax.process_count() > 1 and not data_config.get("data_dir"):
        # Each worker's default ~/tensorflow_datasets is its own: the others would find nothing.
        raise ValueError("data.manual_dir with several processes needs data.data_dir, a folder every "
                         "process reads (e.g. gs://BUCKET/tfds); process 0 prepares the dataset there")
    if jax.process_index() == 0:
        datasets.prepare_from_config(data_config)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("bleedjax prepare_data")


def learning_rate_schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``, then cosine decay to 0 at
    ``num_steps`` or constant."""
    peak, warmup = config.learning_rate, config.warmup_steps
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup_steps=warmup, decay_steps=max(num_steps, warmup + 1), end_value=0.0
        )
    if config.schedule == "constant":
        if warmup == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup]
        )
    raise ValueError(f"optimizer.schedule must be 'cosine' or 'constant', got {config.schedule!r}")


def resume_schedule_notes(saved: dict, config: ml_collections.ConfigDict, start: int) -> list[str]:
    """What a resume from step ``start`` with another ``training.num_train_steps`` than the
    checkpoint's ``saved`` config does beyond running longer or shorter: the cosine schedule
    decays over the new total, so the learning rate jumps; a total at or below ``start`` trains
    nothing."""
    before = saved.get("training", {}).get("num_train_steps")
    after = config.training.num_train_steps
    notes = []
    if after <= start:
        notes.append(f"the checkpoint is at step {start}, num_train_steps is {after}: nothing is trained")
    elif before not in (None, after) and config.optimizer.schedule == "cosine":
        old, new = (float(learning_rate_schedule(config.optimizer, n)(start)) for n in (before, after))
        notes.append(f"num_train_steps {before} -> {after} rebuilds the cosine learning-rate schedule over the new "
                     f"total: the rate at step {start} goes from {old:.3g} to {new:.3g}")
    return notes


def make_optimizer(config: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (``clip_norm > 0``), then Adam, or AdamW when ``weight_decay > 0``."""
    schedule = learning_rate_schedule(config, num_steps)
    if config.weight_decay > 0:
        adam = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        adam = optax.adam(schedule)
    if config.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)
    return adam


class TrainState:
    """Graph definitions (static) and states (replicated arrays) of the model and optimiser."""

    def __init__(self, model_def, optimizer_def, model_state: Any, optimizer_state: Any):
        self.model_def, self.optimizer_def = model_def, optimizer_def
        self.model_state, self.optimizer_state = model_state, optimizer_state

    def model(self) -> nnx.Module:
        return nnx.merge(self.model_def, self.model_state)


def init_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> TrainState:
    """Builds the model (seed ``config.training.seed``) and optimiser, replicated over ``mesh``.

    Initialisation runs under ``jit`` with replicated outputs, so every process of a
    multi-process run computes the same values on its own devices.
    """
    from bleedjax import models

    tx = make_optimizer(config.optimizer, config.training.num_train_steps)

    def create():
        model = models.build_model(config.model, rngs=nnx.Rngs(config.training.seed))
        return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

    abstract_model, abstract_optimizer = nnx.eval_shape(create)
    model_def = nnx.graphdef(abstract_model)
    optimizer_def = nnx.graphdef(abstract_optimizer)

    def states():
        model, optimizer = create()
        return nnx.state(model), nnx.state(optimizer)

    model_state, optimizer_state = jax.jit(states, out_shardings=parallel.replicated(mesh))()
    return TrainState(model_def, optimizer_def, model_state, optimizer_state)


def batch_preparation(config: ml_collections.ConfigDict) -> Callable[[dict], dict]:
    """What the jitted steps apply to a pipeline batch first.

    With ``data.augment_on="device"`` the pipeline yields the augmentation inputs (``stems``,
    ``present``, ``position``) and the bleed is made here, on the accelerator, by
    :func:`bleedjax.data.pipeline.augment_batch` with the iterator's seed (``training.seed``), so
    the host only reads; the batches equal the host-augmented ones. Otherwise the identity.
    """
    if config.data.get("augment_on", "host") != "device":
        return lambda batch: batch
    from bleedjax.data import augment

    bank = pipeline.load_rir_bank(config.data)
    return functools.partial(
        pipeline.augment_batch, settings=augment.Settings.from_config(config.data),
        seed=config.training.seed, rir_bank=None if bank is None else jnp.asarray(bank),
    )


def make_train_step(state: TrainState, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    """The jitted step ``(model_state, optimizer_state, batch) -> (model_state, optimizer_state,
    metrics)``: loss and gradients of ``models.loss_fn`` on the global batch, one optimiser update.

    Shardings are explicit: the batch is split over ``'data'``, everything else replicated, so
    XLA inserts one gradient all-reduce.
    """
    from bleedjax import models

    schedule = learning_rate_schedule(config.optimizer, config.training.num_train_steps)
    model_def, optimizer_def = state.model_def, state.optimizer_def
    prepare = batch_preparation(config)

    def step(model_state, optimizer_state, batch):
        batch = prepare(batch)
        model = nnx.merge(model_def, model_state)
        optimizer = nnx.merge(optimizer_def, optimizer_state)
        model.train()
        learning_rate = schedule(optimizer.step.get_value())
        (loss, aux), grads = nnx.value_and_grad(
            lambda m: models.loss_fn(m, batch, config), has_aux=True
        )(model)
        optimizer.update(model, grads)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "learning_rate": learning_rate} | dict(aux)
        return nnx.state(model), nnx.state(optimizer), metrics

    replicated, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(step, in_shardings=(replicated, replicated, split),
                   out_shardings=(replicated, replicated, replicated))


def _active_mean(values: jax.Array, active: jax.Array) -> jax.Array:
    return jnp.nanmean(jnp.where(active, values, jnp.nan))


def make_eval_step(state: TrainState, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    """The jitted evaluation ``(model_state, batch) -> metrics``: the loss, and BSS Eval v3 SDR and
    SIR (mean over active tracks of the batch) of the cleaned tracks and, for reference, of the
    microphones themselves (``*_input``)."""
    from bleedjax import models

    model_def = state.model_def
    one = functools.partial(bss_eval_sources, filter_length=config.training.eval_filter_length)
    # One example at a time: a vmapped solve runs batched LAPACK kernels, which split the batch
    # over XLA's thread pool from inside a pool thread; on a loaded 2-core machine this deadlocked
    # the evaluation at step 400 of the bundled t-UNet (idle process in device_get).
    score = lambda references, estimates: jax.lax.map(lambda pair: one(*pair), (references, estimates))

    prepare = batch_preparation(config)

    def evaluate(model_state, batch):
        batch = prepare(batch)
        model = nnx.merge(model_def, model_state)
        model.eval()
        loss, aux = models.loss_fn(model, batch, config)
        cleaned = models.predict(model, batch["mics"], config.model)
        out = score(batch["targets"], cleaned)
        mics = score(batch["targets"], batch["mics"])
        active = batch["active"]
        return {"loss": loss, "sdr": _active_mean(out.sdr, active),
                "sir": _active_mean(out.sir, active), "sdr_input": _active_mean(mics.sdr, active),
                "sir_input": _active_mean(mics.sir, active)} | dict(aux)

    replicated, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(evaluate, in_shardings=(replicated, split), out_shardings=replicated)


def evaluate(eval_step, model_state: Any, batches: Iterator[dict], mesh,
             num_batches: int) -> dict[str, float]:
    """Mean of :func:`make_eval_step`'s metrics over ``num_batches`` batches (NaN-skipping)."""
    collected = []
    for _ in range(num_batches):
        try:
            batch = next(batches)
        except StopIteration:
            break
        collected.append(jax.device_get(eval_step(model_state, pipeline.to_global(batch, mesh))))
    if not collected:
        raise ValueError("the evaluation split gave no batches")
    return {name: float(np.nanmean([c[name] for c in collected])) for name in collected[0]}


def _write_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(checkpointing.config_to_json(config), indent=2))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       make_iterator: MakeIterator | None = None) -> dict[str, dict[str, float]]:
    """Trains ``config.model`` for ``config.training.num_train_steps`` steps in ``workdir``.

    Resumes from the latest checkpoint in ``workdir/checkpoints`` when there is one (its model
    and loss config must equal ``config``'s).

    Args:
        config: a ``configs/tunet.py`` or ``configs/cae.py`` config.
        workdir: folder for checkpoints, ``metrics.jsonl``, TensorBoard files and ``config.json``;
            local or ``gs://``.
        make_iterator: ``(data_config, *, seed, split, num_epochs)`` → checkpointable Grain
            iterator of process-local NumPy batch dicts (``mics``, ``targets``, ``matrix``,
            ``active``); default :func:`bleedjax.data.pipeline.make_iterator`.

    Returns:
        ``{"train": last logged train metrics, "eval": last evaluation metrics, "start_step":
        the step it resumed from (0 for a fresh run)}``; the metrics are empty dicts when nothing
        was left to do, and ``workdir`` is then left as it was (a finished run's files keep their
        bytes and times).
    """
    parallel.initialize_distributed(config.training.distributed)
    if config.model.name == "cae":
        from bleedjax.models import cae

        cae.stem_tracks(config.model, config, config.data.num_tracks)  # a stem the data lacks: now
    if make_iterator is None:
        make_iterator = pipeline.make_iterator
        prepare_data(config.data)
        if config.training.eval_batches:
            # A missing evaluation split would otherwise stop the run at its first evaluation.
            datasets.data_source(config.data, config.training.eval_split)
    training = config.training
    workdir = epath.Path(workdir)
    if not str(workdir).startswith("gs://"):
        workdir = epath.Path(os.path.abspath(workdir))  # Orbax wants absolute paths
    mesh = parallel.make_mesh()
    parallel.local_batch_size(config.data.global_batch_size, mesh)

    manager = checkpointing.make_manager(workdir / checkpointing.CHECKPOINTS,
                                         save_every=training.checkpoint_every,
                                         keep=training.keep_checkpoints)
    # Closed on every way out, a refused checkpoint or a failed restore included (they once raised
    # before the try and left the manager open: in a notebook, one more per failed call).
    writer = None
    try:
        start = manager.latest_step() or 0
        if start:
            saved = checkpointing.saved_config(manager, start)
            checkpointing.check_compatible(saved, config, str(manager.directory / str(start)))
            if jax.process_index() == 0:
                for difference in checkpointing.resume_differences(saved, config):
                    print(f"warning: {workdir}: resuming from step {start} with a changed setting, "
                          f"{difference}", file=sys.stderr)
                for note in resume_schedule_notes(saved, config, start):
                    print(f"warning: {workdir}: {note}", file=sys.stderr)
            if start >= training.num_train_steps:
                return {"train": {}, "eval": {}, "start_step": start}
        # Only once the checkpoint accepted the config: config.json describes the run's checkpoints.
        _write_config(workdir, config)
        state = init_state(config, mesh)
        train_batches = make_iterator(config.data, seed=training.seed, split="train", num_epochs=None)
        if start:
            state.model_state, state.optimizer_state = checkpointing.restore(
                manager, start, model_state=state.model_state, optimizer_state=state.optimizer_state,
                iterator=train_batches, config=config, sharding=parallel.replicated(mesh))
        writer = training_log.MetricsWriter(workdir, start_step=start)
        train_step = make_train_step(state, config, mesh)
        eval_step = make_eval_step(state, config, mesh)
        last = {"train": {}, "eval": {}, "start_step": start}
        for step in range(start + 1, training.num_train_steps + 1):
            batch = pipeline.to_global(next(train_batches), mesh)
            state.model_state, state.optimizer_state, metrics = train_step(
                state.model_state, state.optimizer_state, batch)
            final = step == training.num_train_steps
            if step % training.log_every == 0 or final:
                last["train"] = {k: float(v) for k, v in jax.device_get(metrics).items()}
                writer.write(step, "train", last["train"])
            if training.eval_batches and (step % training.eval_every == 0 or final):
                held_out = make_iterator(config.data, seed=training.seed,
                                         split=training.eval_split, num_epochs=None)
                last["eval"] = evaluate(eval_step, state.model_state, iter(held_out), mesh,
                                        training.eval_batches)
                writer.write(step, "eval", last["eval"])
            checkpointing.save(manager, step, model_state=state.model_state,
                               optimizer_state=state.optimizer_state, iterator=train_batches,
                               config=config, force=final)
    finally:
        try:
            manager.close()  # waits for the checkpoints still being written first
        finally:
            if writer is not None:
                writer.close()
    return last


def synthetic_batch(data_config: ml_collections.ConfigDict, *, seed: int = 0) -> dict[str, np.ndarray]:
    """One global batch of white-noise sources under linear bleed with the paper's matrices
    (diagonal U(0.6, 1), off-diagonal U(0.05, 0.31) [1]), shaped as ``data_config`` says: for
    timing and tests, not for learning."""
    rng = np.random.default_rng(seed)
    batch, tracks = data_config.global_batch_size, data_config.num_tracks
    samples = round(data_config.sample_rate * data_config.block_seconds)
    targets = (0.1 * rng.standard_normal((batch, tracks, samples))).astype(np.float32)
    eye = np.eye(tracks, dtype=bool)
    matrix = np.where(eye, rng.uniform(0.6, 1.0, (batch, tracks, tracks)),
                      rng.uniform(0.05, 0.31, (batch, tracks, tracks))).astype(np.float32)
    mics = np.einsum("bij,bjt->bit", matrix, targets).astype(np.float32)
    return {"mics": mics, "targets": targets, "matrix": matrix,
            "active": np.ones((batch, tracks), dtype=bool)}


def measure_step_time(config: ml_collections.ConfigDict, steps: int = 10) -> dict[str, float]:
    """Times ``steps`` train steps of ``config`` on all devices (one fixed synthetic batch, so the
    input pipeline is not part of the time).

    Returns:
        ``compile_seconds`` (first step, including compilation), ``step_seconds`` (mean of the
        following steps), ``steps_per_second``, ``examples_per_second`` (global batch / step time)
        and ``devices``.
    """
    mesh = parallel.make_mesh()
    state = init_state(config, mesh)
    train_step = make_train_step(state, config, mesh)
    rows = parallel.local_batch_size(config.data.global_batch_size, mesh)
    local = {k: v[jax.process_index() * rows:(jax.process_index() + 1) * rows]
             for k, v in synthetic_batch(config.data).items()}
    batch = pipeline.to_global(local, mesh)
    model_state, optimizer_state = state.model_state, state.optimizer_state
    begin = time.perf_counter()
    model_state, optimizer_state, metrics = train_step(model_state, optimizer_state, batch)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - begin
    begin = time.perf_counter()
    for _ in range(steps):
        model_state, optimizer_state, metrics = train_step(model_state, optimizer_state, batch)
    jax.block_until_ready((model_state, metrics))
    step_seconds = (time.perf_counter() - begin) / steps
    return {"compile_seconds": compile_seconds, "step_seconds": step_seconds,
            "steps_per_second": 1.0 / step_seconds,
            "examples_per_second": config.data.global_batch_size / step_seconds,
            "devices": float(jax.device_count())}
