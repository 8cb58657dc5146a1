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
        return {"stems": stems, "present": present, "levels": levels, "position": np.int64(position)}


@dataclasses.dataclass(frozen=True)
class NotSilent(grain.transforms.Filter):
    """Keeps blocks whose chosen stems all have an RMS level of at least ``threshold_db``."""

    threshold_db: float

    def filter(self, element) -> bool:
        return bool(np.all(element["levels"] >= self.threshold_db))


def _cpu():
    return jax.local_devices(backend="cpu")[0]


@functools.partial(jax.jit, static_argnames=("settings",))
def _augment_batch(stems, present, positions, seed, rir_bank_array, *, settings):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), positions)
    one = functools.partial(augment.augment, settings=settings)
    return jax.vmap(lambda s, k, p: one(s, key=k, present=p, rir_bank=rir_bank_array))(stems, keys, present)


class AugmentBatch(grain.transforms.Map):
    """Applies :func:`bleedjax.data.augment.augment` to a batch, on the host CPU."""

    def __init__(self, settings: augment.Settings, seed: int, rir_config=None, rir_data_dir=None):
        self.settings, self.seed = settings, seed
        self.rir_config, self.rir_data_dir = rir_config, rir_data_dir
        self._bank = None

    def __getstate__(self):
        return self.__dict__ | {"_bank": None}

    def _rir_bank(self):
        if self.settings.kind != "room":
            return None
        if self._bank is None:
            bank = rir_bank.load(self.rir_config, self.rir_data_dir)
            self._bank = jax.device_put(bank, _cpu())
        return self._bank

    def map(self, batch):
        with jax.default_device(_cpu()):
            positions = (batch["position"] % 2**32).astype(np.uint32)
            out = _augment_batch(batch["stems"], batch["present"], positions, np.uint32(self.seed),
                                 self._rir_bank(), settings=self.settings)
            return {name: np.asarray(value) for name, value in out._asdict().items()}


def _with_position(position: int, record: dict) -> tuple[int, dict]:
    return position, record


def _cpu_only_worker(worker_index: int, worker_count: int) -> None:
    del worker_index, worker_count
    jax.config.update("jax_platforms", "cpu")


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
    settings = augment.Settings.from_config(data_config)
    dataset = block_stream(data_config, seed=seed, split=split, num_epochs=num_epochs,
                           shuffle=shuffle, shard_options=shard)
    dataset = dataset.map(SelectTracks(data_config.num_tracks, seed))

    rir = None
    if settings.kind == "room":
        rir = rir_bank.config_from(data_config)
        rir_bank.load(rir, datasets.resolve_data_dir(data_config.data_dir))  # fail early if missing
    augment_batch = AugmentBatch(settings, seed, rir, datasets.resolve_data_dir(data_config.data_dir))
    read_options = grain.ReadOptions(num_threads=data_config.read_threads,
                                     prefetch_buffer_size=max(1, data_config.prefetch_batches * local_batch))
    if data_config.drop_silent:
        dataset = dataset.filter(NotSilent(data_config.silence_threshold_db))
        iterable = dataset.to_iter_dataset(read_options).batch(local_batch, drop_remainder=True)
        iterable = iterable.map(augment_batch)
    else:
        dataset = dataset.batch(local_batch, drop_remainder=True).map(augment_batch)
        iterable = dataset.to_iter_dataset(read_options)
    if data_config.worker_count > 0:
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
