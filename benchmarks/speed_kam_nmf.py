"""Speed of KAM + NMF: bleedjax against a NumPy implementation of the same algorithm, same run.

Cases (each in a fresh worker process, which reports its peak RSS):

* one track of ``--minutes`` (3 by default) at 22.05 kHz;
* a batch of ``--batch`` tracks (32) × ``--batch-seconds`` (30 s): bleedjax vmapped, NumPy in a loop;
* bleedjax alone on tracks of ``--memory-minutes`` (1 5 15): peak RSS as the track grows.

``--skip-numpy`` times bleedjax alone (on a GPU, say, where the NumPy side only repeats the CPU
figures); ``--repeats`` sets how many bleedjax calls are made (the first one compiles).

bleedjax times exclude compilation (reported apart: first call minus second). The music is the
string quartet mix tiled to length, plus cough events at 0 dB; the dictionary has 32 atoms.

    .venv/bin/python benchmarks/speed_kam_nmf.py [--minutes 3] [--batch 32] [--batch-seconds 30]
        [--memory-minutes 1 5 15] [--repeats 2] [--skip-numpy] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np
from _common import format_bytes, format_seconds, run_worker, worker_main, write_json

REPO = pathlib.Path(__file__).resolve().parents[1]
NOISE = REPO.parent / "shared" / "data" / "interference"
RATE = 22050


def _material(tracks: int, seconds: float):
    import jax

    from bleedjax import dictionary, sessions
    from bleedjax.simulate_interference import add_events

    quartet = sessions.read_session(REPO / "benchmarks" / "audio" / "string_quartet").audio.mean(axis=0)
    samples = int(seconds * RATE)
    music = np.stack([np.roll(np.resize(quartet, samples), 997 * i) for i in range(tracks)]).astype(np.float32)
    noises, _ = dictionary.read_mono([NOISE / "cough.flac"])
    events = max(1, int(seconds // 20))
    interference, _ = add_events(music, noises, RATE, snr_db=0.0, events=events, event_seconds=1.0,
                                 names=["cough.flac"], rng=np.random.default_rng(0))
    others = sorted(p for p in NOISE.glob("*.flac") if p.name != "cough.flac")
    W = dictionary.learn_from_files(others, components=32, iterations=50).W
    del jax
    return music + interference, W


def _bleedjax(task: dict) -> dict:
    import jax
    import jax.numpy as jnp

    from bleedjax.methods import kam_nmf

    audio, W = _material(task["tracks"], task["seconds"])
    audio, W = jnp.asarray(audio), jnp.asarray(W)
    settings = kam_nmf.Settings()
    times = []
    for _ in range(max(1, task.get("repeats", 2))):
        start = time.perf_counter()
        jax.block_until_ready(kam_nmf.reduce_tracks(audio, W, settings))
        times.append(time.perf_counter() - start)
    device = jax.devices()[0]
    return {"first_s": times[0], "best_s": min(times[1:]) if len(times) > 1 else times[0],
            "device": f"{device.platform} ({device.device_kind})"}


def _numpy(task: dict) -> dict:
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from _numpy_kam_nmf import reduce_track

    audio, W = _material(task["tracks"], task["seconds"])
    start = time.perf_counter()
    for track in audio:
        reduce_track(track, W)
    return {"best_s": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=32, help="tracks in the vmapped batch (0: skip that case)")
    parser.add_argument("--batch-seconds", type=float, default=30.0)
    parser.add_argument("--memory-minutes", type=float, nargs="*", default=[1.0, 5.0, 15.0])
    parser.add_argument("--repeats", type=int, default=2, help="bleedjax calls per case, the first compiling (2)")
    parser.add_argument("--skip-numpy", action="store_true", help="time bleedjax alone")
    parser.add_argument("--json")
    parser.add_argument("--worker")
    parser.add_argument("--result")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.result, {"bleedjax": _bleedjax, "numpy": _numpy})
        return 0

    script = pathlib.Path(__file__)
    if args.repeats < 2:
        parser.error("--repeats must be at least 2: the first call compiles")
    rows = {}
    device = "?"
    if args.batch < 0 or args.minutes <= 0 or args.batch_seconds <= 0:
        parser.error("--batch must be >= 0, --minutes and --batch-seconds > 0")
    cases = [(f"1 track x {args.minutes:g} min", 1, 60 * args.minutes)]
    if args.batch:
        cases.append((f"{args.batch} tracks x {args.batch_seconds:g} s", args.batch, args.batch_seconds))
    for label, tracks, seconds in cases:
        ours = run_worker(script, {"kind": "bleedjax", "tracks": tracks, "seconds": seconds, "repeats": args.repeats})
        device = ours["device"]
        row = {"bleedjax_s": ours["best_s"], "compile_s": ours["first_s"] - ours["best_s"],
               "bleedjax_rss": ours["peak_rss_bytes"]}
        line = (f"{label}: bleedjax {format_seconds(ours['best_s'])} (+{format_seconds(row['compile_s'])} "
                f"compile), peak RSS {format_bytes(ours['peak_rss_bytes'])}")
        if not args.skip_numpy:
            theirs = run_worker(script, {"kind": "numpy", "tracks": tracks, "seconds": seconds})
            row.update(numpy_s=theirs["best_s"], speedup=theirs["best_s"] / ours["best_s"],
                       numpy_rss=theirs["peak_rss_bytes"])
            line += (f"; NumPy {format_seconds(theirs['best_s'])}, speed-up {row['speedup']:.1f}x, "
                     f"NumPy peak RSS {format_bytes(theirs['peak_rss_bytes'])}")
        rows[label] = row
        print(line, flush=True)
    memory = {}
    for minutes in args.memory_minutes:
        result = run_worker(script, {"kind": "bleedjax", "tracks": 1, "seconds": 60 * minutes, "repeats": 1})
        memory[minutes] = result["peak_rss_bytes"]
        print(f"bleedjax, 1 track x {minutes:g} min: peak RSS {format_bytes(result['peak_rss_bytes'])}, "
              f"{format_seconds(result['first_s'])} with compilation", flush=True)
    print(f"bleedjax on {device}; NumPy on the host CPU ({os.cpu_count()} CPUs, 1-min load {os.getloadavg()[0]:.1f})")
    if args.json:
        write_json(args.json, {"speed": rows, "peak_rss_by_minutes": memory, "device": device})
    return 0


if __name__ == "__main__":
    sys.exit(main())
