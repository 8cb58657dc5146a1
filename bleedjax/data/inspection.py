"""``bleedjax data inspect``: what a prepared dataset holds, and a picture of one training example."""

from __future__ import annotations

import os
import pathlib

import ml_collections

from bleedjax import plotting
from bleedjax.data import datasets, pipeline


def summary(data_config) -> dict:
    """Counts and durations of a prepared dataset, per split.

    Returns:
        ``{"dataset": folder, "config": name, "sample_rate", "channels", "block_seconds",
        "splits": {split: {"tracks", "track_seconds", "blocks", "block_seconds_total",
        "stems"}}}``.
    """
    builder = datasets.builder_from_config(data_config)
    if not builder.is_prepared():
        datasets.data_source(data_config, data_config.split)  # raises the "not prepared" error
    metadata = builder.info.metadata or {}
    config = builder.builder_config
    splits = {}
    for name, split in builder.info.splits.items():
        source = builder.as_data_source(split=name)
        stems = len(source[0]["stem_names"]) if len(source) else 0
        splits[name] = {
            "tracks": len(metadata.get("tracks", {}).get(name, [])),
            "track_seconds": float(metadata.get("track_seconds", {}).get(name, 0.0)),
            "blocks": int(split.num_examples),
            "block_seconds_total": int(split.num_examples) * config.block_seconds,
            "stems": stems,
        }
    return {
        "dataset": str(builder.data_dir),
        "config": config.name,
        "sample_rate": config.sample_rate,
        "channels": config.channels,
        "block_seconds": config.block_seconds,
        "splits": splits,
    }


def _duration(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}"


def format_summary(info: dict) -> str:
    lines = [
        f"{info['dataset']}",
        (f"  {info['config']}: {info['block_seconds']:g} s blocks at {info['sample_rate']} Hz, "
         f"{info['channels']} channel(s) per stem"),
        f"  {'split':<12}{'tracks':>8}{'duration':>12}{'blocks':>9}{'in blocks':>12}{'stems':>7}",
    ]
    for name, split in info["splits"].items():
        lines.append(
            f"  {name:<12}{split['tracks']:>8}{_duration(split['track_seconds']):>12}{split['blocks']:>9}"
            f"{_duration(split['block_seconds_total']):>12}{split['stems']:>7}"
        )
    return "\n".join(lines)


def plot_example(data_config, path: str | os.PathLike, *, seed: int = 0) -> pathlib.Path:
    """Writes a PNG of the first augmented example of ``data_config.split`` (in-process, no
    shuffling): its matrix and every track's microphone and target spectrograms."""
    config = ml_collections.ConfigDict(data_config.to_dict())
    config.update(global_batch_size=1, worker_count=0, prefetch_batches=0)
    iterator = pipeline.make_iterator(config, seed=seed, split=config.split, num_epochs=1,
                                      shuffle=False)
    example = {name: value[0] for name, value in next(iterator).items()}
    title = f"{config.builder} {config.split}, first block, {config.augmentation} bleed (seed {seed})"
    return plotting.plot_training_example(path, sample_rate=config.sample_rate, title=title, **example)
