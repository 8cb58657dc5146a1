"""A small checkpointable Grain iterator for the training tests: white-noise sources under linear
bleed with the paper's matrices (``bleedjax.train.synthetic_batch``), one global batch per index,
each process taking its own rows, so the global batches are the same for any process count."""

from __future__ import annotations

import os
import signal

import grain
import jax
import numpy as np

from bleedjax import train

EVAL_SEED_OFFSET = 1_000_003


def make_iterator(data_config, *, seed: int, split: str, num_epochs: int | None = None,
                  kill_at: int | None = None, num_batches: int = 64):
    """Grain ``DatasetIterator`` of process-local batch dicts; ``kill_at``: SIGKILL this process
    when that batch index is read (to test resuming after a crash)."""
    offset = EVAL_SEED_OFFSET if split != "train" else 0
    processes, index = jax.process_count(), jax.process_index()
    rows = data_config.global_batch_size // processes

    def load(k: int) -> dict[str, np.ndarray]:
        if kill_at is not None and k == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        batch = train.synthetic_batch(data_config, seed=seed * 7919 + offset + int(k))
        return {name: value[index * rows:(index + 1) * rows] for name, value in batch.items()}

    dataset = grain.MapDataset.range(num_batches)
    if num_epochs is None or num_epochs > 1:
        dataset = dataset.repeat(num_epochs)
    dataset = dataset.map(load)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.train_helpers WORKDIR [--steps N] [--kill-at K] [--export OUT]``: train the
    runlocal t-UNet on this module's batches, export it as ``bleedjax train --export`` does, and
    print the result as JSON (subprocess tests), with whether pyroomacoustics was imported
    (:func:`bleedjax.room._pyroomacoustics`: only where rooms are drawn)."""
    import argparse
    import functools
    import json
    import sys

    from bleedjax import cli

    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--config", default="configs/tunet.py:runlocal")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--export")
    args = parser.parse_args(argv)
    cli._enable_compilation_cache()
    config = train.load_config(args.config)
    config.training.num_train_steps = args.steps
    config.training.eval_batches = 0
    iterator = functools.partial(make_iterator, kill_at=args.kill_at)
    result = train.train_and_evaluate(config, args.workdir, make_iterator=iterator)
    if args.export:
        from bleedjax import checkpointing

        written = checkpointing.export_model(args.workdir, args.export)
        result["exported"] = None if written is None else str(written)
    result["pyroomacoustics_imported"] = "pyroomacoustics" in sys.modules
    print(json.dumps(result))


if __name__ == "__main__":
    main()
