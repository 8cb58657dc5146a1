"""What the stem builders share: the builder config, the example features, and fixed-length blocks.

Every example is one block of one track: ``(stems, channels, block_samples)`` 16-bit PCM (lossless
for the 16-bit WAVs of MUSDB18-HQ at 44.1 kHz; requantised after resampling) with the track name,
the block's offset in samples and each stem's RMS level in dBFS (for the near-silence filter).
Blocks do not overlap; the remainder shorter than a block at the end of a track is dropped.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from bleedjax.data.local_builder import LocalBuilder, LocalDatasetInfo
from bleedjax.sessions import SessionError

PCM_SCALE = 32768.0
VERSION = tfds.core.Version("1.0.0")


@dataclasses.dataclass
class StemBlocksConfig(tfds.core.BuilderConfig):
    """Sample rate, stored channels per stem and block length of a prepared dataset."""

    sample_rate: int = 22050
    channels: int = 1
    block_seconds: float = 10.0

    @property
    def block_samples(self) -> int:
        return round(self.block_seconds * self.sample_rate)

    def __reduce__(self):
        # Unpickled (e.g. in Grain worker processes) as the same listed object, which TFDS
        # requires for its standard configs.
        return make_config, (self.sample_rate, self.channels, self.block_seconds)


def config_name(sample_rate: int, channels: int, block_seconds: float) -> str:
    """E.g. ``22050hz-mono-10000ms``: the TFDS config name of these settings."""
    layout = {1: "mono", 2: "stereo"}.get(channels)
    if layout is None:
        raise ValueError(f"channels must be 1 (mono) or 2 (stereo), got {channels}")
    return f"{int(sample_rate)}hz-{layout}-{round(block_seconds * 1000)}ms"


def _new_config(sample_rate: int, channels: int, block_seconds: float) -> StemBlocksConfig:
    if sample_rate <= 0 or block_seconds <= 0:
        raise ValueError(f"sample_rate and block_seconds must be positive, got {sample_rate}, {block_seconds}")
    return StemBlocksConfig(
        name=config_name(sample_rate, channels, block_seconds),
        description=f"{block_seconds:g} s blocks at {sample_rate} Hz, {channels} channel(s) per stem",
        sample_rate=int(sample_rate),
        channels=int(channels),
        block_seconds=float(block_seconds),
    )


STANDARD_CONFIGS = [
    _new_config(rate, channels, 10.0) for rate in (44100, 22050) for channels in (2, 1)
]


def make_config(sample_rate: int, channels: int, block_seconds: float) -> StemBlocksConfig:
    """The builder config of these settings (TFDS wants the listed object for a standard one)."""
    standard = {config.name: config for config in STANDARD_CONFIGS}
    name = config_name(sample_rate, channels, block_seconds)
    return standard.get(name) or _new_config(sample_rate, channels, block_seconds)


def features(config: StemBlocksConfig) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "stems": tfds.features.Tensor(
                shape=(None, config.channels, config.block_samples), dtype=np.int16,
                encoding=tfds.features.Encoding.BYTES,
            ),
            "stem_names": tfds.features.Sequence(tfds.features.Text()),
            "stem_rms_db": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "track": tfds.features.Text(),
            "offset": np.int64,
        }
    )


def to_layout(audio: np.ndarray, *, rate: int, config: StemBlocksConfig, path: pathlib.Path) -> np.ndarray:
    """``(channels_in, samples)`` float audio at ``rate`` to the config's channels and rate."""
    if audio.shape[0] != config.channels:
        if config.channels == 1:
            audio = audio.mean(axis=0, keepdims=True)
        elif audio.shape[0] == 1:
            audio = np.repeat(audio, config.channels, axis=0)
        else:
            raise SessionError(f"{path}: {audio.shape[0]} channels, cannot store as {config.channels}")
    if rate != config.sample_rate:
        from scipy import signal as scipy_signal

        ratio = fractions.Fraction(config.sample_rate, rate)
        audio = scipy_signal.resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1)
    return np.asarray(audio, np.float32)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1).astype(np.int16)


def from_pcm16(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / PCM_SCALE


def rms_db(audio: np.ndarray) -> np.ndarray:
    """RMS level in dBFS over every axis but the first (stems), floored at -200 dB."""
    axes = tuple(range(1, audio.ndim))
    power = np.mean(np.square(audio, dtype=np.float64), axis=axes)
    return (10.0 * np.log10(np.maximum(power, 1e-20))).astype(np.float32)


def blocks(
    track: str, stems: np.ndarray, names: Sequence[str], config: StemBlocksConfig
) -> Iterator[tuple[str, dict]]:
    """TFDS ``(key, example)`` pairs for the non-overlapping blocks of one track.

    Args:
        track: the track's name (unique within the dataset).
        stems: ``(stems, channels, samples)`` float32 at the config's rate and channels.
        names: the stem names.
        config: the builder config.
    """
    length = config.block_samples
    for offset in range(0, stems.shape[-1] - length + 1, length):
        block = stems[..., offset : offset + length]
        yield f"{track}@{offset}", {
            "stems": to_pcm16(block),
            "stem_names": list(names),
            "stem_rms_db": rms_db(block),
            "track": track,
            "offset": offset,
        }


def check_manual_dir(manual_dir: str | os.PathLike | None) -> pathlib.Path:
    if not manual_dir:
        raise SessionError("no manual_dir given: pass the folder that holds the stems (--manual-dir)")
    path = pathlib.Path(manual_dir).expanduser()
    if not path.is_dir():
        raise SessionError(f"{path}: manual_dir is not a folder")
    if not any(path.iterdir()):
        raise SessionError(f"{path}: manual_dir is empty")
    return path


def read_stems(
    folder: pathlib.Path, config: StemBlocksConfig, *, required: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Reads one track's stem files (one WAV/FLAC file per stem) in the config's layout.

    Args:
        folder: the track folder.
        config: sample rate and channels to convert to.
        required: stem names (file names without suffix) to read, in this order; others are
            ignored. ``None`` reads every audio file, sorted by name.

    Returns:
        ``(stems, channels, samples)`` float32 and the stem names.

    Raises:
        SessionError: naming the file, for a missing stem, an unreadable file, or files whose
            sample rates or lengths differ.
    """
    from bleedjax.streaming import SessionReader

    if required is not None:
        present = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac")}
        for name in required:
            if name not in present:
                raise SessionError(f"{folder / (name + '.wav')}: missing stem {name!r}")
    reader = SessionReader(folder, min_tracks=1)
    audio = reader.read(0, reader.length)
    rows, start = {}, 0
    for track in reader.files:
        rows[track.path.stem] = (track.path, audio[start : start + track.channels])
        start += track.channels
    names = list(required) if required is not None else list(rows)
    stems = [
        to_layout(rows[n][1], rate=reader.sample_rate, config=config, path=rows[n][0]) for n in names
    ]
    return np.stack(stems), names


def track_name(folder: pathlib.Path, root: pathlib.Path) -> str:
    return folder.name if folder == root else folder.relative_to(root).as_posix()


def record_sources(
    info: tfds.core.DatasetInfo,
    root: pathlib.Path,
    splits: dict[str, list[pathlib.Path]],
    seconds: dict[str, float],
) -> None:
    """Stores where a dataset was prepared from, its tracks and their durations in its metadata."""
    info.metadata.update(
        manual_dir=str(root.resolve()),
        tracks={name: [track_name(f, root) for f in folders] for name, folders in splits.items()},
        track_seconds={name: float(value) for name, value in seconds.items()},
    )


class StemBlocksBuilder(LocalBuilder, skip_registration=True):
    """What the stem builders share: version, the standard configs and the dataset info.

    Subclasses set ``MANUAL_DOWNLOAD_INSTRUCTIONS`` (their module docstring; its first line is
    the description) and optionally ``HOMEPAGE``.
    """

    VERSION = VERSION
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list] = STANDARD_CONFIGS
    DEFAULT_CONFIG_NAME = config_name(22050, 1, 10.0)
    HOMEPAGE: ClassVar[str | None] = None

    def _info(self) -> tfds.core.DatasetInfo:
        return LocalDatasetInfo(
            builder=self,
            description=self.MANUAL_DOWNLOAD_INSTRUCTIONS.split("\n")[0],
            features=features(self.builder_config),
            metadata=tfds.core.MetadataDict(),
            homepage=self.HOMEPAGE,
        )
