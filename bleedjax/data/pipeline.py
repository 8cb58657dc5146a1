"""The Grain input pipeline: prepared stem blocks in, augmented batches out, deterministic and
resumable.

Per process, :func:`make_iterator` builds::

    tfds.data_source(split)                    ArrayRecord blocks, random access
      .shuffle(shuffle_seed).repeat(epochs)    global shuffle, a new order every epoch
      .map_with_index(...)                     global position in the stream (keys the randomness)
      [process_index::process_count]           per-process sharding (ShardByJaxProcess)
      .map(SelectTracks)                       J mono tracks per block (+ padding mask)
      [.filter(NotSilent)]                     optional near-silence filter
      .batch(global_batch_size // processes)
      .map(AugmentBatch)                       jitted, vmapped bleed augmentation on the host CPU
      .to_iter_dataset() + prefetch            threads, or Grain worker processes

With ``augment_on="device"`` the last map is left out: batches are ``stems`` float32 (B, J, T),
``present`` bool (B, J) and ``position`` uint32 (B,), and the training step applies
:func:`augment_batch` on the accelerator, which gives the same batches as on the host.

Randomness is a function of ``(seed, global position)`` only, so the batches do not depend on
threads, workers or restarts, and every process sees a disjoint part of the same global order.
Without the silence filter they do not depend on the number of workers either.

Batches are dicts of NumPy arrays (``B`` = the process-local batch size)::

    mics     float32 (B, J, T)   microphone tracks with bleed
    targets  float32 (B, J, T)   clean targets
    matrix   float32 (B, J, J)   true bleed matrix (conventions in bleedjax.data.augment)
    active   bool    (B, J)      active tracks (inactive ones are all zero)

:func:`to_global` turns them into global ``jax.Array`` batches over a ``('data',)`` mesh.

Checkpointing: the iterator has ``get_state()``/``set_state()``; with Orbax use
``grain.checkpoint.CheckpointHandler`` through ``grain.checkpoint.CheckpointSave(iterator)`` /
``grain.checkpoint.CheckpointRestore(iterator)`` inside ``ocp.args.Composite`` (orbax-checkpoint
0.12), which writes one JSON state file per process.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bleedjax.data import augment, datasets, rir_bank, stem_blocks


@dataclasses.dataclass(frozen=True)
class SelectTracks(grain.transforms.Map):
    """``(position, record)`` -> ``J`` mono tracks, chosen at random when a block has more stems,
    padded with absent tracks when it has fewer."""

    num_tracks: int
    seed: int

    def map(self, element):
        position, record = element
        stems = stem_blocks.from_pcm16(record["stems"]).mean(axis=1)
        levels = np.asarray(record["stem_rms_db"], np.float32)
        count = stems.shape[0]
        present = np.ones(self.num_tracks, bool)
        if count > self.num_tracks:
            rng = np.random.default_rng([self.seed, position, 1])
            chosen = np.sort(rng.choice(count, self.num_tracks, replace=False))
            stems, levels = stems[chosen], levels[chosen]
        elif count < self.num_tracks:
            missing = self.num_tracks - count
            stems = np.concatenate([stems, np.zeros((missing, stems.shape[1]), np.float32)])
            levels = np.concatenate([levels, np.full(missing, np.inf, np.float32)])
            present[count:] = False
        position = np.uint32(position % 2**32)
        return {"stems": stems, "present": present, "levels": levels, "position": position}


@dataclasses.dataclass(frozen=True)
class NotSilent(grain.transforms.Filter):
    """Keeps blocks whose chosen stems all have an RMS level of at least ``threshold_db``."""

    threshold_db: float

    def filter(self, element) -> bool:
        return bool(np.all(element["levels"] >= self.threshold_db))


class DropLevels(grain.transforms.Map):
    """``augment_on="device"``: yields the augmentation inputs ``stems``, ``present``, ``position``."""

    def map(self, batch):
        return {name: batch[name] for name in ("stems", "present", "position")}


def _cpu():
    return jax.local_devices(backend="cpu")[0]


@functools.partial(jax.jit, static_argnames=("settings",))
def _augment_batch(stems, present, positions, seed, rir_bank_array, *, settings):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), positions)
    one = functools.partial(augment.augment, settings=settings)
    return jax.vmap(lambda s, k, p: one(s, key=k, present=p, rir_bank=rir_bank_array))(stems, keys, present)


def augment_batch(batch: dict, *, settings: augment.Settings, seed: int, rir_bank=None) -> dict:
    """The pipeline's augmentation of a batch ``{"stems", "present", "position"}``.

    :func:`make_iterator` applies it on the host CPU; with ``augment_on="device"`` it yields those
    inputs instead, and a training step calls this on the accelerator (inside its ``jax.jit``,
    on global arrays); both give the same batches. Keys are ``fold_in(key(seed), position)``.

    Args:
        batch: ``stems`` float32 ``(B, J, T)``, ``present`` bool ``(B, J)``, ``position`` uint32
            ``(B,)``.
        settings: ``augment.Settings.from_config(data_config)``.
        seed: the ``seed`` given to :func:`make_iterator`.
        rir_bank: ``(rooms, J, J, taps)`` from :func:`load_rir_bank`, for room bleed.

    Returns:
        ``{"mics", "targets", "matrix", "active"}`` (module docstring).
    """
    out = _augment_batch(batch["stems"], batch["present"], batch["position"],
                         np.uint32(seed % 2**32), rir_bank, settings=settings)
    return out._asdict()


def load_rir_bank(data_config) -> np.ndarray | None:
    """The impulse-response bank a config's room augmentation draws from (``None`` otherwise)."""
    if data_config.augmentation != "room":
        return None
    return rir_bank.load(rir_bank.config_from(data_config), datasets.resolve_data_dir(data_config.data_dir))


class AugmentBatch(grain.transforms.Map):
    """Applies :func:`augment_batch` on the host CPU (the bank is loaded once per process)."""

    def __init__(self, data_config, seed: int):
        self.settings, self.seed = augment.Settings.from_config(data_config), seed
        self.data_config = ml_collections.ConfigDict(data_config.to_dict())
        self._bank = None

    def __getstate__(self):
        return self.__dict__ | {"_bank": None}

    def map(self, batch):
        with jax.default_device(_cpu()):
            if self._bank is None and self.settings.kind == "room":
                self._bank = jax.device_put(load_rir_bank(self.data_config), _cpu())
            inputs = {name: batch[name] for name in ("stems", "present", "position")}
            out = augment_batch(inputs, settings=self.settings, seed=self.seed, rir_bank=self._bank)
            return {name: np.asarray(value) for name, value in out.items()}


def _with_position(position: int, record: dict) -> tuple[int, dict]:
    return position, record


def _absl_flags_parsed() -> None:
    """Grain reads an absl flag when it starts worker processes; programs that do not run
    ``absl.app`` never parse flags, so take the defaults then."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["bleedjax"], known_only=True)


def _cpu_only_worker(worker_index: int, worker_count: int) -> None:
    """Augmentation in worker processes runs on the host CPU, never on the accelerators."""
    del worker_index, worker_count
    jax.config.update("jax_platforms", "cpu")
    _absl_flags_parsed()


def block_stream(
    data_config,
    *,
    seed: int,
    split: str,
    num_epochs: int | None = None,
    shuffle: bool | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
) -> grain.MapDataset:
    """This process's ``(position, record)`` pairs: the globally shuffled, repeated stream of
    stored blocks, every ``process_count``-th from ``process_index`` (arguments as
    :func:`make_iterator`)."""
    shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    shuffle = split == "train" if shuffle is None else shuffle
    order_seed = data_config.shuffle_seed if data_config.shuffle_seed >= 0 else seed
    dataset = grain.MapDataset.source(datasets.data_source(data_config, split))
    if shuffle:
        dataset = dataset.shuffle(seed=order_seed)
    dataset = dataset.repeat(num_epochs)
    dataset = dataset.map_with_index(_with_position)
    return dataset[shard.shard_index :: shard.shard_count]


def make_iterator(
    data_config,
    *,
    seed: int,
    split: str,
    num_epochs: int | None = None,
    shuffle: bool | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
) -> grain.DatasetIterator:
    """A checkpointable iterator of this process's batches (module docstring).

    Args:
        data_config: a ``configs/data.py`` config (the dataset must be prepared).
        seed: drives the augmentation and the track choice, and the order unless
            ``data_config.shuffle_seed >= 0``.
        split: ``"train"``, ``"validation"``, ``"test"``, ... as prepared.
        num_epochs: passes over the split; ``None`` repeats forever.
        shuffle: shuffle the order; by default only the train split is shuffled.
        shard_options: which part of the data this process reads; by default
            ``grain.sharding.ShardByJaxProcess(drop_remainder=True)``. Pass
            ``grain.sharding.ShardOptions(index, count)`` to simulate processes.

    Returns:
        A ``grain.DatasetIterator`` with ``get_state()``/``set_state()``.
    """
    shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
    if data_config.global_batch_size % shard.shard_count:
        raise ValueError(f"global_batch_size {data_config.global_batch_size} is not divisible by "
                         f"the {shard.shard_count} processes")
    local_batch = data_config.global_batch_size // shard.shard_count
    augment.Settings.from_config(data_config)  # bad augmentation settings fail here
    dataset = block_stream(data_config, seed=seed, split=split, num_epochs=num_epochs,
                           shuffle=shuffle, shard_options=shard)
    dataset = dataset.map(SelectTracks(data_config.num_tracks, seed))

    augment_on = data_config.get("augment_on", "host")
    if augment_on == "host":
        load_rir_bank(data_config)  # fails early when the bank is missing
        augment_step = AugmentBatch(data_config, seed)
    elif augment_on == "device":
        augment_step = DropLevels()
    else:
        raise ValueError(f"augment_on must be 'host' or 'device', got {augment_on!r}")
    read_options = grain.ReadOptions(num_threads=data_config.read_threads,
                                     prefetch_buffer_size=max(1, data_config.prefetch_batches * local_batch))
    if data_config.drop_silent:
        dataset = dataset.filter(NotSilent(data_config.silence_threshold_db))
        iterable = dataset.to_iter_dataset(read_options).batch(local_batch, drop_remainder=True)
        iterable = iterable.map(augment_step)
    else:
        dataset = dataset.batch(local_batch, drop_remainder=True).map(augment_step)
        iterable = dataset.to_iter_dataset(read_options)
    if data_config.worker_count > 0:
        _absl_flags_parsed()
        iterable = iterable.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=data_config.worker_count,
                                         per_worker_buffer_size=data_config.worker_buffer_size),
            worker_init_fn=_cpu_only_worker,
        )
    elif data_config.prefetch_batches > 0:
        iterable = grain.experimental.ThreadPrefetchIterDataset(
            iterable, prefetch_buffer_size=data_config.prefetch_batches)
    return iter(iterable)


def to_global(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Process-local batches -> global ``jax.Array`` batches sharded ``P('data')`` over ``mesh``."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def dataset_dir(data_config) -> pathlib.Path:
    """The prepared dataset's folder for ``data_config``."""
    return pathlib.Path(datasets.builder_from_config(data_config).data_dir)
