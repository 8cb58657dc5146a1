"""Training checkpoints with Orbax: model, optimiser, step, data iterator and config together.

A checkpoint folder (``WORKDIR/checkpoints``) holds one sub-folder per saved step, each with four
items:

- ``model``: ``nnx.state(model)`` (parameters and any batch statistics);
- ``optimizer``: ``nnx.state(optimizer)`` (optax state and the step counter);
- ``data``: the Grain iterator state, one JSON file per process (Grain's Orbax handler);
- ``config``: the full training config as JSON, so that :func:`restore_model` can rebuild the
  model from the checkpoint alone.

The step is the sub-folder's name. :func:`make_manager` keeps the last ``keep`` steps and saves
every ``save_every`` steps; saving is asynchronous, so call ``manager.wait_until_finished()``
before the process exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath
from flax import nnx

CHECKPOINTS = "checkpoints"
MODEL_KEYS = ("model", "loss")
"""Config entries a checkpoint must share with the config that restores it."""


def checkpoint_dir(path: str | os.PathLike) -> epath.Path:
    """The folder of step sub-folders: ``path`` itself, or ``path/checkpoints`` for a workdir."""
    path = epath.Path(path if "://" in str(path) else os.path.abspath(path))  # Orbax: absolute
    return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def make_manager(
    directory: str | os.PathLike, *, save_every: int, keep: int, read_only: bool = False, alone: bool = False
) -> ocp.CheckpointManager:
    """An ``ocp.CheckpointManager`` saving every ``save_every`` steps and keeping the last ``keep``.

    ``alone`` (implied by ``read_only``): this process uses it by itself, without the barriers
    that Orbax otherwise holds with every process of a multi-process run (an export or an
    inference restore on process 0 waited there forever for the others); the caller then makes
    ``directory``."""
    # A read-only manager saves nothing: Orbax warns when given a save interval or a number to keep.
    schedule = {"save_interval_steps": 0} if read_only else {"save_interval_steps": save_every, "max_to_keep": keep}
    me = jax.process_index()
    processes = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me}) if (
        alone or read_only) else ocp.options.MultiprocessingOptions()
    options = ocp.CheckpointManagerOptions(
        create=not (read_only or alone), read_only=read_only, cleanup_tmp_directories=not read_only,
        multiprocessing_options=processes, **schedule
    )
    if not read_only:
        return ocp.CheckpointManager(epath.Path(directory), options=options)
    # Orbax logs "Given directory is read only" at WARNING for every read-only manager, which is
    # what this one is asked to be: every `reduce --method tunet` printed it.
    quiet = _AbslMessageFilter("Given directory is read only")
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(quiet)
    try:
        return ocp.CheckpointManager(epath.Path(directory), options=options)
    finally:
        absl_logger.removeFilter(quiet)


class _AbslMessageFilter(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def config_to_json(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON values (tuples become lists)."""
    return json.loads(config.to_json())


def config_from_json(values: dict) -> ml_collections.ConfigDict:
    """Inverse of :func:`config_to_json`; lists come back as tuples, as the config files write them."""

    def tuples(value):
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        return value

    return ml_collections.ConfigDict(tuples(values))


def _differences(saved: Any, current: Any, prefix: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current)):
            found += _differences(saved.get(key, "<missing>"), current.get(key, "<missing>"),
                                  f"{prefix}.{key}")
        return found
    return [] if saved == current else [f"{prefix}: checkpoint {saved!r}, config {current!r}"]


def check_compatible(saved: dict, config: ml_collections.ConfigDict, where: str) -> None:
    """Raises ``ValueError`` naming every model/loss entry where ``config`` differs from the
    checkpoint's saved config (other entries, e.g. the number of steps, may change on resume)."""
    current = config_to_json(config)
    found = []
    for key in MODEL_KEYS:
        found += _differences(saved.get(key, "<missing>"), current.get(key, "<missing>"), key)
    if found:
        raise ValueError(
            f"{where}: checkpoint was written with a different model config ({'; '.join(found)}); "
            "use a new workdir or the config it was trained with"
        )


# Entries that may change on resume without changing what the run learns from: how long it runs
# and how often it logs, evaluates and saves (a new num_train_steps also rebuilds a cosine schedule:
# bleedjax.train.resume_schedule_notes says so).
SCHEDULE_KEYS = ("training.num_train_steps", "training.log_every", "training.eval_every", "training.eval_batches",
                 "training.checkpoint_every", "training.keep_checkpoints", "training.eval_filter_length")


def resume_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
    """The data, optimiser and training entries (outside :data:`SCHEDULE_KEYS`) where ``config``
    differs from a checkpoint's saved config: a resume takes them, but the run then mixes two
    settings (a new batch size also moves the restored data iterator by a different amount)."""
    current = config_to_json(config)
    found = []
    for key in sorted(set(saved) | set(current)):
        if key not in MODEL_KEYS:
            found += _differences(saved.get(key, "<missing>"), current.get(key, "<missing>"), key)
    return [entry for entry in found if entry.split(":")[0] not in SCHEDULE_KEYS]


def save(manager: ocp.CheckpointManager, step: int, *, model_state: Any,
         optimizer_state: Any, iterator: Any, config: ml_collections.ConfigDict,
         force: bool = False) -> bool:
    """Saves all four items at ``step`` when the manager's interval asks for it (or ``force``).

    Args:
        manager: from :func:`make_manager`.
        step: the number of training steps taken (and of batches drawn from ``iterator``).
        model_state: ``nnx.state(model)``.
        optimizer_state: ``nnx.state(optimizer)``.
        iterator: a Grain iterator (``DatasetIterator`` or ``DataLoaderIterator``) or ``None``.
        config: the training config.
        force: save even off the interval (the last step).

    Returns:
        whether a checkpoint was started (it finishes in the background).
    """
    items = {
        "model": ocp.args.StandardSave(model_state),
        "optimizer": ocp.args.StandardSave(optimizer_state),
        "config": ocp.args.JsonSave(config_to_json(config)),
    }
    if iterator is not None:
        import grain

        items["data"] = grain.checkpoint.CheckpointSave(iterator)
    return manager.save(step, args=ocp.args.Composite(**items), force=force)


def _abstract(state, sharding):
    """Restore target: shapes and dtypes of ``state``, placed with ``sharding``."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


@contextlib.contextmanager
def _readable(where: str, advice: str = "delete the step folder to resume from an earlier one"):
    """Turns whatever Orbax or TensorStore raise on a damaged step (a missing item, truncated
    files) into one ``ValueError`` line naming the step folder, ending with ``advice``."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 (they raise many kinds; one line says which)
        raise ValueError(f"{where}: this checkpoint step cannot be read ({_briefly(error)}); {advice}") from None


def _resume_advice(manager: ocp.CheckpointManager, step: int) -> str:
    """What to do when ``step``, the step a run resumes from, is damaged: delete its folder, and
    the next run's manager, which lists the step folders afresh, resumes from the one before."""
    earlier = [s for s in manager.all_steps() if s < step]
    if earlier:
        return (f"the step is damaged: delete this step folder and run again to resume from step "
                f"{max(earlier)}, the previous checkpoint")
    return "the step is damaged and is this run's only checkpoint: train again in a new workdir"


def _briefly(error: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, cut at ``limit`` characters (TensorStore's run to kilobytes)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text if len(text) <= limit else text[:limit] + '...'}"


def check_process_count(step_dir: epath.Path) -> None:
    """Raises ``ValueError`` when the step's data-iterator states (``data/process_<i>-of-<n>.json``)
    were written by another number of processes than this run has: Grain restores each process's
    own file, so the run must resume with the topology it was saved with (the generic "cannot be
    read" advice to delete the step would have deleted every step)."""
    counts = {name.rsplit("-of-", 1)[-1].removesuffix(".json")
              for name in (p.name for p in (step_dir / "data").glob("process_*-of-*.json"))}
    if counts and counts != {str(jax.process_count())}:
        raise ValueError(
            f"{step_dir}: saved by {', '.join(sorted(counts))} processes, and this run has {jax.process_count()}; "
            "resume with the same number of processes (hosts of the slice), or train in a new workdir"
        )


def saved_config(manager: ocp.CheckpointManager, step: int) -> dict:
    """The config JSON saved with ``step``."""
    with _readable(str(manager.directory / str(step))):
        restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return restored["config"]


def restore(manager: ocp.CheckpointManager, step: int, *, model_state: Any,
            optimizer_state: Any, iterator: Any, config: ml_collections.ConfigDict,
            sharding: jax.sharding.Sharding) -> tuple[Any, Any]:
    """Restores ``step``: returns the model and optimiser states, and sets ``iterator`` in place.

    Args:
        manager: from :func:`make_manager`.
        step: a saved step.
        model_state, optimizer_state: states of the freshly built model and optimiser (only their
            structure, shapes and dtypes are used).
        iterator: the Grain iterator to continue, or ``None``.
        config: the config of this run; its model and loss must equal the checkpoint's.
        sharding: where to put the restored arrays (replicated over the mesh in training).

    Raises:
        ValueError: the checkpoint was written with a different model or loss config, or the
            step is damaged (the message says which earlier step deleting it resumes from).
    """
    where = str(manager.directory / str(step))
    check_compatible(saved_config(manager, step), config, where)
    advice = _resume_advice(manager, step)
    with _readable(where, advice):  # before Orbax's concurrent restore: see _read_arrays
        for name in ("model", "optimizer"):
            _read_arrays(manager.directory / str(step) / name)
    items = {
        "model": ocp.args.StandardRestore(_abstract(model_state, sharding)),
        "optimizer": ocp.args.StandardRestore(_abstract(optimizer_state, sharding)),
    }
    if iterator is not None:
        import grain

        check_process_count(manager.directory / str(step))
        items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    with _readable(where, advice):
        restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["model"], restored["optimizer"]


def restore_model(
    path: str | os.PathLike, *, step: int | None = None, model_name: str | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """Rebuilds a model from a checkpoint folder (or a workdir) alone, for inference.

    Args:
        path: a ``checkpoints`` folder of step sub-folders, or the training workdir above it.
        step: which step (default: the latest).
        model_name: when given, the checkpoint must hold this model (``"tunet"`` or ``"cae"``).

    Returns:
        ``(model, config)``: the model on the default device with the checkpoint's weights, and
        the full training config it was saved with.

    Raises:
        ValueError: no checkpoint there, a different model, or weights that do not fit the model
            the saved config describes.
    """
    from bleedjax import models

    directory = checkpoint_dir(path)
    if not directory.is_dir():
        raise ValueError(f"{directory}: checkpoint folder not found")
    with contextlib.closing(make_manager(directory, save_every=1, keep=1, read_only=True)) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"{directory}: no checkpoint steps in this folder")
        config = config_from_json(saved_config(manager, step))
        if model_name is not None and config.model.name != model_name:
            raise ValueError(
                f"{directory}: checkpoint holds a {config.model.name!r} model, not {model_name!r}"
            )
        abstract_model = nnx.eval_shape(lambda: models.build_model(config.model, rngs=nnx.Rngs(0)))
        graphdef, abstract_state = nnx.split(abstract_model)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        with _readable(str(directory / str(step))):
            _read_arrays(directory / str(step) / "model")
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                model=ocp.args.StandardRestore(_abstract(abstract_state, device))))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{directory / str(step)}: the saved weights do not fit the model its config describes, or are "
                f"damaged ({_briefly(error)})"
            ) from None
    return nnx.merge(graphdef, restored["model"]), config


def _read_arrays(item: epath.Path) -> None:
    """Reads every stored value of an Orbax item (e.g. ``STEP/model``) once, blocking: its
    ``array_metadatas`` JSON and every key of the OCDBT database that holds its arrays (a model's
    weights: milliseconds). Raises what a damaged file raises (``JSONDecodeError``, TensorStore's
    ``ValueError``).

    Orbax restores an item's arrays and their metadata concurrently, in an event loop of its own
    that it closes as soon as one read fails, with the others still in flight: their completions
    then raise "Event loop is closed" in TensorStore's threads (printed as ignored exceptions) and
    "Task exception was never retrieved" is printed for the reads nobody awaited. Read here first,
    a damaged step fails before any of that starts.
    """
    for path in sorted((item / "array_metadatas").glob("*")):
        json.loads(path.read_text())
    if (item / "manifest.ocdbt").exists():
        url = str(item) if "://" in str(item) else f"file://{item}"
        store = ts.KvStore.open({"driver": "ocdbt", "base": url + "/"}).result()
        for key in store.list().result():
            store.read(key).result()


def _local_or_remote(path: str | os.PathLike) -> epath.Path:
    return epath.Path(path if "://" in str(path) else os.path.realpath(path))


def check_export_target(path: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool) -> epath.Path:
    """Refuses an export folder that holds, is, or lies inside the training run ``path``, that
    holds another run's ``checkpoints/`` (:func:`checkpoint_dir` would read that instead), or
    that is not empty (without ``overwrite``); returns it as an absolute path. Called before
    training starts too, so that a long run does not end in a refusal."""
    out, run = _local_or_remote(out), _local_or_remote(path)
    out_text, run_text = str(out).rstrip("/") + "/", str(run).rstrip("/") + "/"
    if run_text.startswith(out_text) or out_text.startswith(run_text):
        raise ValueError(f"{out}: the export folder must lie outside the training run {run}")
    if (out / CHECKPOINTS).is_dir():
        raise ValueError(f"{out}: holds a training run's {CHECKPOINTS}/ folder, which reading {out} back "
                         f"(`reduce --checkpoint {out}`) would load instead of the export; export to another folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out}: exists and is not empty; pass overwrite to replace it")
    return out


def export_model(path: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None,
                 overwrite: bool = False) -> epath.Path | None:
    """Writes the model and config of a training checkpoint, without optimiser or data state, as
    a checkpoint folder that :func:`restore_model` reads (how ``bleedjax/assets/tunet`` is made).

    Args:
        path: a training workdir or its ``checkpoints`` folder.
        out: the new checkpoint folder (one step sub-folder inside).
        step: which step (default: the latest).
        overwrite: replace the step folders of an existing export in ``out``; other files there
            (a README) are kept.

    Returns:
        the step folder written; ``None`` on the processes other than 0 of a multi-process run,
        where process 0 alone writes it (it restores onto its own first device; the other
        processes, which hold no shard there, once failed while process 0 hung).
    """
    import jax

    out = check_export_target(path, out, overwrite=overwrite)
    if jax.process_index() != 0:
        return None
    model, config = restore_model(path, step=step)
    directory = checkpoint_dir(path)
    if step is None:
        reader = make_manager(directory, save_every=1, keep=1, read_only=True)
        step = reader.latest_step()
        reader.close()
    if out.exists():
        # Only what an export writes: its step folders (Orbax's temporary ones included).
        for entry in out.iterdir():
            if entry.is_dir() and entry.name.split(".")[0].isdigit():
                entry.rmtree()
    return save_model(out, model, config, step=step)


def save_model(out: str | os.PathLike, model: nnx.Module, config: ml_collections.ConfigDict, *,
               step: int = 0) -> epath.Path:
    """Writes ``model`` and its training ``config`` as a checkpoint folder that
    :func:`restore_model` reads (``out/<step>``), without optimiser or data state; returns the
    step folder."""
    out = epath.Path(out)
    out.mkdir(parents=True, exist_ok=True)  # Orbax creates no folder for a manager of one process
    writer = make_manager(out, save_every=1, keep=1, alone=True)
    # As host NumPy arrays: Orbax refuses a process-local jax.Array in a multi-process run.
    weights = jax.tree.map(np.asarray, nnx.state(model))
    writer.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(weights),
        config=ocp.args.JsonSave(config_to_json(config))), force=True)
    writer.wait_until_finished()
    writer.close()
    return out / str(step)

