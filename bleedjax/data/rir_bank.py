"""A bank of room impulse responses, made once with pyroomacoustics, stored as a TFDS dataset.

Each example is one random shoebox room (:func:`bleedjax.room.random_geometry` with a random size,
RT60 and microphone distance) with ``J`` sources, each with its close microphone: the ``(J, J,
rir_samples)`` impulse responses from every source ``j`` to every microphone ``i`` exactly as
pyroomacoustics computes them (image source method), truncated or zero-padded to a fixed length.
The bank is written in ArrayRecord format under ``data_dir/rir_bank/<config>`` and read back
whole by :func:`load` (a few tens of MB) for :func:`bleedjax.data.augment.room_bleed`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from bleedjax import room
from bleedjax.data.local_builder import LocalBuilder, LocalDatasetInfo

ROOM_SIZE_RANGE = ((9.0, 7.0, 3.0), (14.0, 10.0, 4.5))
MIC_DISTANCE_RANGE = (0.3, 1.0)


@dataclasses.dataclass
class RirBankConfig(tfds.core.BuilderConfig):
    num_tracks: int = 4
    sample_rate: int = 22050
    rooms: int = 64
    rir_seconds: float = 1.0
    rt60: tuple[float, float] = (0.25, 0.6)
    seed: int = 0

    @property
    def rir_samples(self) -> int:
        return round(self.rir_seconds * self.sample_rate)

    def __reduce__(self):
        # Unpickled as the listed default object when it is that one (TFDS requires it).
        settings = {"num_tracks": self.num_tracks, "sample_rate": self.sample_rate,
                    "rooms": self.rooms, "rir_seconds": self.rir_seconds, "rt60": self.rt60,
                    "seed": self.seed}
        return functools.partial(make_config, **settings), ()


def _new_config(
    *, num_tracks: int, sample_rate: int, rooms: int, rir_seconds: float,
    rt60: tuple[float, float], seed: int,
) -> RirBankConfig:
    low, high = (float(v) for v in rt60)
    if rooms < 1 or num_tracks < 1 or not 0 < low <= high:
        raise ValueError(f"bad RIR bank settings: rooms={rooms}, num_tracks={num_tracks}, rt60={rt60}")
    name = (f"{num_tracks}tracks-{sample_rate}hz-{rooms}rooms-{round(rir_seconds * 1000)}ms-"
            f"rt{round(low * 1000)}-{round(high * 1000)}ms-seed{seed}")
    return RirBankConfig(
        name=name, description=f"{rooms} rooms, {num_tracks} sources and microphones",
        num_tracks=num_tracks, sample_rate=sample_rate, rooms=rooms, rir_seconds=rir_seconds,
        rt60=(low, high), seed=seed,
    )


DEFAULT_CONFIG = _new_config(num_tracks=4, sample_rate=22050, rooms=64, rir_seconds=1.0,
                             rt60=(0.25, 0.6), seed=0)


def make_config(**settings) -> RirBankConfig:
    """The bank config of these settings (keywords of ``_new_config``)."""
    config = _new_config(**settings)
    return DEFAULT_CONFIG if config.name == DEFAULT_CONFIG.name else config


def config_from(data_config) -> RirBankConfig:
    """The bank that a ``configs/data.py`` config asks for."""
    return make_config(
        num_tracks=data_config.num_tracks, sample_rate=data_config.sample_rate,
        rooms=data_config.rir_rooms, rir_seconds=data_config.rir_seconds,
        rt60=tuple(data_config.rir_rt60), seed=data_config.rir_seed,
    )


def random_room(index: int, config: RirBankConfig) -> room.RoomGeometry:
    """Room ``index`` of the bank: size, RT60 and microphone distance drawn from its seed."""
    rng = np.random.default_rng([config.seed, index])
    for _ in range(100):
        dimensions = tuple(float(v) for v in rng.uniform(*ROOM_SIZE_RANGE))
        rt60 = float(rng.uniform(*config.rt60))
        geometry = room.random_geometry(
            config.num_tracks, seed=int(rng.integers(2**31)), dimensions=dimensions, rt60=rt60,
            mic_distance=float(rng.uniform(*MIC_DISTANCE_RANGE)),
        )
        try:
            room.inverse_sabine(rt60, dimensions)
        except ValueError:  # RT60 too short for this room size: draw again
            continue
        return geometry
    raise ValueError(f"no room of size {ROOM_SIZE_RANGE} reaches RT60 in {config.rt60}")


def fixed_length(responses: list[list[np.ndarray]], samples: int) -> np.ndarray:
    """``[mic][source]`` responses as one ``(I, J, samples)`` float32 array (cut or zero-padded)."""
    out = np.zeros((len(responses), len(responses[0]), samples), np.float32)
    for i, row in enumerate(responses):
        for j, h in enumerate(row):
            out[i, j, : min(samples, len(h))] = h[:samples]
    return out


def exact(shape, dtype) -> tfds.features.Tensor:
    """A tensor stored as raw bytes (tf.Example floats would round float64 to float32)."""
    return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)


class RirBank(LocalBuilder):
    """Room impulse responses from pyroomacoustics shoebox rooms."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list] = [DEFAULT_CONFIG]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        tracks = config.num_tracks
        return LocalDatasetInfo(
            builder=self,
            description=__doc__.split("\n")[0],
            features=tfds.features.FeaturesDict({
                "rirs": tfds.features.Tensor(shape=(tracks, tracks, config.rir_samples), dtype=np.float32),
                "rir_lengths": tfds.features.Tensor(shape=(tracks, tracks), dtype=np.int64),
                "room": np.int64,
                "rt60": exact((), np.float64),
                "dimensions": exact((3,), np.float64),
                "source_positions": exact((tracks, 3), np.float64),
                "mic_positions": exact((tracks, 3), np.float64),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        config = self.builder_config
        for index in range(config.rooms):
            geometry = random_room(index, config)
            responses = room.impulse_responses(geometry, sample_rate=config.sample_rate)
            yield index, {
                "rirs": fixed_length(responses, config.rir_samples),
                "rir_lengths": np.array([[len(h) for h in row] for row in responses], np.int64),
                "room": index,
                "rt60": np.float64(geometry.rt60),
                "dimensions": np.asarray(geometry.dimensions, np.float64),
                "source_positions": np.asarray(geometry.source_positions, np.float64),
                "mic_positions": np.asarray(geometry.mic_positions, np.float64),
            }


def geometry_of(example: dict) -> room.RoomGeometry:
    """The :class:`bleedjax.room.RoomGeometry` of one bank example."""
    as_tuples = lambda a: tuple(tuple(float(v) for v in p) for p in np.asarray(a))
    return room.RoomGeometry(
        tuple(float(v) for v in example["dimensions"]), float(example["rt60"]),
        as_tuples(example["source_positions"]), as_tuples(example["mic_positions"]),
    )


def prepare(config: RirBankConfig, data_dir: str | os.PathLike | None) -> RirBank:
    builder = RirBank(config=config, data_dir=None if data_dir is None else str(data_dir),
                      file_format="array_record")
    builder.download_and_prepare()
    return builder


def load(config: RirBankConfig, data_dir: str | os.PathLike | None) -> np.ndarray:
    """The whole bank, ``(rooms, J, J, rir_samples)`` float32 in room order.

    Raises:
        ValueError: naming the folder, when the bank has not been prepared.
    """
    builder = RirBank(config=config, data_dir=None if data_dir is None else str(data_dir),
                      file_format="array_record")
    if not builder.is_prepared():
        raise ValueError(
            f"{builder.data_dir}: no room impulse-response bank here; make it with "
            "`bleedjax data prepare --rir-bank` (same data_dir and rir_* settings)"
        )
    source = builder.as_data_source(split="train")
    examples = sorted((source[i] for i in range(len(source))), key=lambda e: int(e["room"]))
    return np.stack([e["rirs"] for e in examples])
