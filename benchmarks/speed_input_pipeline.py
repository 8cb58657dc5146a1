"""Throughput of the Grain input pipeline: examples per second on CPU for J = 4 tracks × 10 s
examples at 22.05 kHz, with linear and with convolutive (room) bleed, by worker count.

Every configuration runs in a fresh process limited to ``--threads`` CPUs (``_common.run_worker``)
and reports:

- ``first batch``: from ``make_iterator`` to the first batch (opening the dataset, starting the
  workers, compiling the augmentation);
- ``examples/s``: steady state over the next ``--batches`` batches of ``--batch`` examples, the
  number that matters during training;
- ``read only``: the same pipeline up to the track choice (ArrayRecord read, decode, shuffle,
  shard, batch) without augmentation, the floor that augmentation adds to.

The data: the benchmark string quartet (4 stems, 22.05 kHz) and the bundled demo stems (5 stems,
44.1 kHz, resampled), each repeated to ``--seconds`` with a random circular shift and gain per
stem, ``--copies`` sessions of each, prepared as a ``multitrack_stems`` TFDS dataset in a
temporary folder. Room bleed uses a ``--rir-rooms`` bank of 1 s impulse responses.

Training-step hook: the issue asks for the ratio of the pipeline's time per batch to a measured
t-UNet training step on one GPU. Pass ``--train-step-seconds S`` (and ``--train-batch B``, the
global batch of that step) once issue 6's training benchmark has measured S; the table then adds
``pipeline / step`` per configuration (below 1: the pipeline keeps up, since it runs
concurrently with the step). ``--train-step-json`` reads ``{"step_seconds", "global_batch_size"}``
from a file instead.

Usage:
    .venv/bin/python benchmarks/speed_input_pipeline.py [--workers 0 1 2] [--batches 10]
        [--quick] [--train-step-seconds S --train-batch B] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _common

SAMPLE_RATE = 22050
BLOCK_SECONDS = 10.0
NUM_TRACKS = 4
STEM_FOLDERS = (HERE / "audio" / "string_quartet", REPO / "bleedjax" / "assets" / "demo")
KINDS = ("read only", "linear-paper", "linear-seipel", "room")


def write_sessions(root: pathlib.Path, *, seconds: float, copies: int, seed: int = 0) -> pathlib.Path:
    """Stem sessions repeated to ``seconds`` with a random circular shift and gain per stem."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    for copy in range(copies):
        for folder in STEM_FOLDERS:
            session = root / f"{folder.name}_{copy}"
            session.mkdir(parents=True, exist_ok=True)
            for path in sorted(folder.glob("*.flac")):
                audio, rate = sf.read(path, dtype="float32")
                samples = int(seconds * rate)
                audio = np.resize(np.roll(audio, rng.integers(len(audio))), samples)
                gain = 10 ** (rng.uniform(-6, 0) / 20)
                sf.write(session / f"{path.stem}.wav", audio * gain, rate, subtype="PCM_16")
    return root


def data_config(data_dir: str, kind: str, workers: int, batch: int, rir_rooms: int):
    from bleedjax.configs import data as data_configs

    config = data_configs.get_config()
    config.update({
        "data_dir": data_dir, "sample_rate": SAMPLE_RATE, "block_seconds": BLOCK_SECONDS,
        "num_tracks": NUM_TRACKS, "global_batch_size": batch, "worker_count": workers,
        "augmentation": "linear-paper" if kind == "read only" else kind, "rir_rooms": rir_rooms,
    })
    return config


def read_only_iterator(config, seed: int):
    """The pipeline up to the track choice, batched, without augmentation."""
    from bleedjax.data import pipeline

    dataset = pipeline.block_stream(config, seed=seed, split="train")
    dataset = dataset.map(pipeline.SelectTracks(config.num_tracks, seed)).batch(config.global_batch_size)
    return iter(dataset.to_iter_dataset())


def measure(task: dict) -> dict:
    from bleedjax.data import pipeline

    config = data_config(task["data_dir"], task["augmentation"], task["workers"], task["batch"],
                         task["rir_rooms"])
    start = time.perf_counter()
    if task["augmentation"] == "read only":
        iterator = read_only_iterator(config, seed=0)
    else:
        iterator = pipeline.make_iterator(config, seed=0, split="train")
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(task["batches"]):
        next(iterator)
    steady = time.perf_counter() - start
    if hasattr(iterator, "close"):
        iterator.close()
    return {"first_batch_s": first, "steady_s": steady,
            "examples_per_s": task["batches"] * task["batch"] / steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="Grain worker processes (0: in-process threads)")
    parser.add_argument("--batch", type=int, default=4, help="examples per batch")
    parser.add_argument("--batches", type=int, default=10, help="batches timed after the first")
    parser.add_argument("--threads", type=int, default=2, help="CPUs per configuration")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each session")
    parser.add_argument("--copies", type=int, default=2, help="sessions per stem folder")
    parser.add_argument("--rir-rooms", type=int, default=16)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--quick", action="store_true", help="3 batches, workers 0 and 1")
    parser.add_argument("--train-step-seconds", type=float,
                        help="measured t-UNet training step time (issue 6) for the ratio")
    parser.add_argument("--train-batch", type=int, help="global batch of that training step")
    parser.add_argument("--train-step-json", help='JSON with {"step_seconds", "global_batch_size"}')
    parser.add_argument("--json", help="write the results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        task = json.loads(args.worker)
        _common.limit_cpus(task["threads"])
        _common.worker_main(args.worker, args.result, {"pipeline": measure})
        return
    if args.quick:
        args.batches, args.workers = 3, [0, 1]
    step_seconds, step_batch = args.train_step_seconds, args.train_batch
    if args.train_step_json:
        measured = json.loads(pathlib.Path(args.train_step_json).read_text())
        step_seconds, step_batch = measured["step_seconds"], measured["global_batch_size"]

    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as folder:
        folder = pathlib.Path(folder)
        start = time.perf_counter()
        stems = write_sessions(folder / "stems", seconds=args.seconds, copies=args.copies)
        from bleedjax.data import datasets

        config = data_config(str(folder / "tfds"), "room", 0, args.batch, args.rir_rooms)
        config.manual_dir = str(stems)
        datasets.prepare_from_config(config)
        print(f"prepared {len(list(stems.iterdir()))} sessions and a {args.rir_rooms}-room bank in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
        results = []
        for kind in args.kinds:
            for workers in args.workers if kind != "read only" else [0]:
                task = {"kind": "pipeline", "augmentation": kind, "data_dir": str(folder / "tfds"),
                        "batch": args.batch, "batches": args.batches, "threads": args.threads,
                        "rir_rooms": args.rir_rooms, "workers": workers}
                result = _common.run_worker(__file__, task)
                results.append({"kind": kind, "workers": workers, **result})
                print(f"{kind}, {workers} workers: {result['examples_per_s']:.2f} examples/s",
                      file=sys.stderr)

    linear = {r["workers"]: r["examples_per_s"] for r in results if r["kind"] == "linear-paper"}
    headers = ["augmentation", "workers", "first batch", "examples/s", "per batch", "vs linear-paper"]
    if step_seconds:
        headers.append(f"pipeline / step ({step_batch or args.batch} ex.)")
    rows = []
    for r in results:
        per_example = 1.0 / r["examples_per_s"]
        row = [r["kind"], r["workers"], _common.format_seconds(r["first_batch_s"]),
               f"{r['examples_per_s']:.2f}", _common.format_seconds(per_example * args.batch),
               _common.format_ratio(r["examples_per_s"] / linear[r["workers"]], 2)
               if r["workers"] in linear else "–"]
        if step_seconds:
            row.append(f"{per_example * (step_batch or args.batch) / step_seconds:.2f}")
        rows.append(row)
    title = (f"Input pipeline on CPU: {NUM_TRACKS} tracks × {BLOCK_SECONDS:g} s at {SAMPLE_RATE} Hz, "
             f"batch {args.batch}, {args.threads} CPUs per configuration")
    print(_common.format_table(headers, rows, title=title))
    if args.json:
        _common.write_json(args.json, {"results": results, "args": vars(args)})


if __name__ == "__main__":
    main()
