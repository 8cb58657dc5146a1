"""Many sessions of different lengths in one ``reduce``: batches padded to a grid of lengths
against batches padded to their own longest session, side by side in one run.

``reduce_folders`` sorts sessions by length and fills batches up to a number of samples
(:func:`bleedjax.reduce.batch_limit`). Padded to their longest session, almost every batch has a
shape of its own, and each shape compiles the method again (1-5 s on a CPU). Padded to
:func:`bleedjax.reduce.padded_length`'s grid (at most 9 % longer), batches share a few shapes.

Part 1 counts batches and shapes for 1000 sessions at the real batch limit (arithmetic only).
Part 2 times ``reduce_folders`` on music-like sessions scaled down 64 times: 4 tracks × 2-6 s at
44.1 kHz with a batch limit of 2^20 samples instead of 2^26, so that two or three sessions fill a
batch as 4 tracks × 2-6 minutes do. Each path runs in a fresh process with an empty persistent
compilation cache; the outputs of the two are compared.

Usage:
    .venv/bin/python benchmarks/speed_many_lengths.py [--sessions 40] [--methods spectral-subtraction kamir]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common

SAMPLE_RATE = 44100
SCALED_BATCH_LIMIT = 1 << 20
PATHS = ("longest", "grid")


def pad_to_longest_batches(samples: list[int], tracks: int, limit: int) -> list[list[int]]:
    """The batching before the grid: sorted by length, each batch padded to its longest."""
    batches, current = [], []
    for index in sorted(range(len(samples)), key=lambda i: samples[i]):
        longest = max([samples[i] for i in current] + [samples[index]])
        if current and (len(current) + 1) * tracks * longest > limit:
            batches.append(current)
            current = []
        current.append(index)
    return batches + [current] if current else batches


def count_shapes(sessions: int = 1000, seed: int = 0) -> list[list[object]]:
    import numpy as np

    from bleedjax import reduce

    rng = np.random.default_rng(seed)
    limit, most = reduce.MAX_BATCH_SAMPLES, reduce.LONG_SESSION_SAMPLES
    rows = []
    for tracks, low, high in [(4, 2, 6), (8, 2, 6), (16, 0.5, 3), (4, 0.1, 0.5)]:
        samples = (rng.uniform(low, high, sessions) * 60 * SAMPLE_RATE).astype(int).tolist()
        before = pad_to_longest_batches(samples, tracks, limit)
        after, widths = zip(*reduce._batches(list(range(sessions)), samples, tracks, limit, most // tracks))
        rows.append([
            f"{tracks} tracks × {low}-{high} min", len(before), len({(len(b), max(samples[i] for i in b)) for b in before}),
            len(after), len({(len(b), w) for b, w in zip(after, widths)}),
            f"{sum(len(b) * w for b, w in zip(after, widths)) / sum(samples):.3f}",
        ])
    return rows


def write_sessions(root: pathlib.Path, count: int, seed: int) -> list[pathlib.Path]:
    import jax
    import numpy as np
    import soundfile as sf

    from bleedjax import sessions, simulation

    stems = sessions.read_session(HERE.parent / "bleedjax" / "assets" / "demo").audio
    rng = np.random.default_rng(seed)
    folders = []
    for index in range(count):
        length = int(rng.uniform(2, 6) * SAMPLE_RATE)
        chosen = rng.choice(len(stems), 4, replace=False)
        starts = rng.integers(0, stems.shape[-1] - length, 4)
        sources = np.stack([stems[c, s : s + length] for c, s in zip(chosen, starts)])
        key = jax.random.key(int(rng.integers(1 << 30)))
        matrix = np.asarray(simulation.seipel_mixing_matrix(key=key, num_tracks=4, max_crosstalk_db=-12.0))
        mics = matrix @ sources
        mics *= 0.9 / np.abs(mics).max()
        folder = root / f"session{index:03d}"
        folder.mkdir()
        for track in range(4):
            sf.write(folder / f"track{track}.wav", mics[track], SAMPLE_RATE, subtype="FLOAT")
        folders.append(folder)
    return folders


def reduce_task(task: dict) -> dict:
    import time

    import jax

    from bleedjax import reduce

    jax.config.update("jax_compilation_cache_dir", task["cache"])
    reduce.MAX_BATCH_SAMPLES = task["limit"]
    if task["path"] == "longest":
        reduce.padded_length = lambda samples, most: samples
    folders = sorted(pathlib.Path(task["root"]).glob("session*"))
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **kwargs: compiles.append(seconds) if event == "/jax/core/compile/backend_compile_duration" else None
    )
    start = time.perf_counter()
    reduce.reduce_folders(folders, task["out"], method=task["method"], progress=False, keep_audio=False)
    return {"wall_s": time.perf_counter() - start, "compiles": len(compiles), "compile_s": sum(compiles)}


def largest_difference(first: pathlib.Path, second: pathlib.Path) -> float:
    import numpy as np
    import soundfile as sf

    worst = 0.0
    for path in sorted(first.glob("session*/*.wav")):
        a, b = sf.read(path, dtype="float32")[0], sf.read(second / path.relative_to(first), dtype="float32")[0]
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--methods", nargs="+", default=["spectral-subtraction", "kamir"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--worker")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.worker:
        _common.worker_main(args.worker, args.result, {"reduce": reduce_task})
        return

    shapes = count_shapes(seed=args.seed)
    print(_common.format_table(
        ["1000 sessions", "batches (longest)", "shapes (longest)", "batches (grid)", "shapes (grid)", "samples × (grid)"],
        shapes, title="Part 1: batch shapes at the real batch limit (2^26 samples)"))
    print()
    rows, report = [], {"shapes": shapes, "timed": []}
    with tempfile.TemporaryDirectory(prefix="bench_lengths_") as folder:
        root = pathlib.Path(folder)
        write_sessions(root, args.sessions, args.seed)
        for method in args.methods:
            results = {}
            for path in PATHS:
                task = {"kind": "reduce", "path": path, "method": method, "root": str(root), "limit": SCALED_BATCH_LIMIT,
                        "out": str(root / f"out-{method}-{path}"), "cache": str(root / f"cache-{method}-{path}")}
                results[path] = _common.run_worker(__file__, task)
            difference = largest_difference(root / f"out-{method}-longest", root / f"out-{method}-grid")
            longest, grid = results["longest"], results["grid"]
            rows.append([
                method, longest["compiles"], f"{longest['compile_s']:.1f}", f"{longest['wall_s']:.1f}",
                grid["compiles"], f"{grid['compile_s']:.1f}", f"{grid['wall_s']:.1f}",
                _common.format_ratio(longest["wall_s"] / grid["wall_s"], 2), f"{difference:.1e}",
            ])
            report["timed"].append({"method": method, "longest": longest, "grid": grid, "max_abs_difference": difference})
    print(_common.format_table(
        ["method", "compiles (longest)", "compile s", "wall s", "compiles (grid)", "compile s", "wall s",
         "speed-up", "max |Δ output|"],
        rows, title=f"Part 2: {args.sessions} sessions of 4 tracks × 2-6 s, batch limit 2^20 samples (scaled down 64×)"))
    if args.json:
        _common.write_json(args.json, report)


if __name__ == "__main__":
    main()
