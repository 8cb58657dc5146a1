"""Small fake stem folders in the real layouts, for tests and quick pipeline checks.

``write_sessions`` makes a ``multitrack_stems`` folder and ``write_musdb`` a MUSDB18-HQ tree; with
:func:`bleedjax.data.datasets.prepare` they give a tiny prepared dataset in about a second.
:func:`tiny_dataset` does both and returns a data config for ``pipeline.make_iterator``::

    config = fake_trees.tiny_dataset(tmp_path, global_batch_size=4)
    batch = next(pipeline.make_iterator(config, seed=0, split="train"))  # (4, 4, 2000) at 8 kHz
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import ml_collections
import numpy as np
import soundfile as sf

from bleedjax.data.musdb18hq import STEMS as MUSDB_STEMS


def stem_audio(rng: np.random.Generator, *, samples: int, sample_rate: int, channels: int) -> np.ndarray:
    """``(samples, channels)`` of a random harmonic tone with a little noise, peak about 0.3."""
    t = np.arange(samples) / sample_rate
    f0 = rng.uniform(80.0, min(800.0, sample_rate / 8))
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t)
    audio = 0.12 * tone * envelope + 0.01 * rng.standard_normal(samples)
    return np.repeat(audio[:, None], channels, axis=1) * rng.uniform(0.5, 1.0, channels)


def write_session(
    folder: str | os.PathLike,
    names: Sequence[str],
    *,
    seconds: float,
    sample_rate: int,
    channels: int = 1,
    seed: int = 0,
) -> pathlib.Path:
    """One folder with a 16-bit WAV per stem name."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = round(seconds * sample_rate)
    for name in names:
        audio = stem_audio(rng, samples=samples, sample_rate=sample_rate, channels=channels)
        sf.write(folder / f"{name}.wav", audio, sample_rate, subtype="PCM_16")
    return folder


def write_sessions(
    root: str | os.PathLike,
    *,
    sessions: int = 2,
    stems: int = 4,
    seconds: float = 1.0,
    sample_rate: int = 8000,
    channels: int = 1,
    seed: int = 0,
) -> pathlib.Path:
    """``root/session_k/stem_m.wav``: a ``multitrack_stems`` folder."""
    root = pathlib.Path(root)
    for k in range(sessions):
        names = [f"stem_{m}" for m in range(stems)]
        write_session(root / f"session_{k}", names, seconds=seconds, sample_rate=sample_rate,
                      channels=channels, seed=seed * 1000 + k)
    return root


def write_musdb(
    root: str | os.PathLike,
    *,
    train: Sequence[str] = ("Fake Artist - Train Song", "Actions - One Minute Smile"),
    test: Sequence[str] = ("Fake Artist - Test Song",),
    seconds: float = 1.0,
    sample_rate: int = 44100,
    seed: int = 0,
) -> pathlib.Path:
    """A MUSDB18-HQ tree: ``{train,test}/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav``,
    stereo 16-bit, the mixture the sum of the stems."""
    root = pathlib.Path(root)
    for index, (subset, name) in enumerate([("train", n) for n in train] + [("test", n) for n in test]):
        folder = write_session(root / subset / name, MUSDB_STEMS, seconds=seconds,
                               sample_rate=sample_rate, channels=2, seed=seed * 1000 + index)
        mixture = sum(sf.read(folder / f"{stem}.wav")[0] for stem in MUSDB_STEMS)
        sf.write(folder / "mixture.wav", np.clip(mixture, -1, 1), sample_rate, subtype="PCM_16")
    return root


def tiny_dataset(
    root: str | os.PathLike,
    *,
    sessions: int = 2,
    stems: int = 4,
    seconds: float = 1.0,
    sample_rate: int = 8000,
    block_seconds: float = 0.25,
    **overrides,
) -> ml_collections.ConfigDict:
    """Writes ``root/stems`` and prepares it under ``root/tfds``; returns the ``configs/data.py``
    config that reads it, with ``overrides`` (e.g. ``global_batch_size=4``) applied.

    Room augmentation (``augmentation="room"``) also gets its impulse-response bank, of
    ``rir_rooms`` rooms (2 unless overridden, 0.3 s responses).
    """
    from bleedjax.configs import data as data_configs
    from bleedjax.data import datasets

    root = pathlib.Path(root)
    config = data_configs.get_config()
    if overrides.get("augmentation") == "room":
        overrides = {"rir_rooms": 2, "rir_seconds": 0.3} | overrides
    config.update({
        "manual_dir": str(write_sessions(root / "stems", sessions=sessions, stems=stems,
                                         seconds=seconds, sample_rate=sample_rate)),
        "data_dir": str(root / "tfds"), "sample_rate": sample_rate, "block_seconds": block_seconds,
    } | overrides)
    datasets.prepare_from_config(config)
    return config
