"""Spectral subtraction's schedules side by side in one run: chunked or whole-array passes over the
spectrogram, and 1 or more descent steps per trip of its ``while_loop``.

One session of ``--tracks`` × ``--seconds`` at 44.1 kHz (the speed benchmark's material) goes
through ``reduce_session`` with ``passes`` ∈ {chunked, whole} × ``unroll`` ∈ ``--unrolls``, each
compiled once and timed best of ``--repeats`` in round-robin with the others and with the STFT +
iSTFT alone (the floor), so that all see the same load. Every schedule must reach λ within 1e-5
of ``passes='chunked', unroll=1`` (the CPU's schedule); the script fails otherwise. The table
shows how far each schedule moved the descent's stopping iteration: the steps are the same, but
XLA fuses them differently, and float32 rounding can move a stop by a few iterations. The
``auto`` row is what the default settings pick on this backend.

    .venv/bin/python benchmarks/speed_ss_schedules.py [--tracks 4 16] [--seconds 180]
        [--preset refined] [--unrolls 1 4 8 16 32] [--repeats 5] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time

import _common
from speed_spectral_subtraction import SAMPLE_RATE, _round_trip, load_stems, make_sessions


def time_schedules(tracks: int, args) -> dict:
    import dataclasses

    import jax
    import numpy as np

    from bleedjax.methods import spectral_subtraction as ss

    stems = load_stems()
    audio = make_sessions(stems, sessions=1, tracks=tracks, samples=round(args.seconds * SAMPLE_RATE),
                          seed=args.seed + tracks)[0]
    x = jax.device_put(audio)
    base = ss.Settings(**ss.PRESETS[args.preset])
    schedules = {"auto": base}
    for passes in ("chunked", "whole"):
        for unroll in args.unrolls:
            schedules[f"{passes}, unroll {unroll}"] = dataclasses.replace(base, passes=passes, unroll=unroll)
    compiled, compile_s, results = {}, {}, {}
    for name, settings in schedules.items():
        start = time.perf_counter()
        compiled[name] = ss.reduce_session.lower(x, settings).compile()
        compile_s[name] = time.perf_counter() - start
        results[name] = jax.block_until_ready(compiled[name](x))
    round_trip = _round_trip(base).lower(x).compile()
    jax.block_until_ready(round_trip(x))
    reference = results["chunked, unroll 1"]
    iteration_changes = {}
    for name, result in results.items():
        iteration_changes[name] = int(np.abs(np.asarray(result.iterations) - np.asarray(reference.iterations)).max())
        lam_change = float(np.abs(np.asarray(result.lam) - np.asarray(reference.lam)).max())
        if lam_change > 1e-5 * max(1.0, float(np.abs(np.asarray(reference.lam)).max())):
            raise SystemExit(f"{name}: λ differs from the CPU schedule's by {lam_change:.2e} (iterations "
                             f"{np.asarray(result.iterations)} against {np.asarray(reference.iterations)})")
    timed = {name: (lambda c=c: jax.block_until_ready(c(x))) for name, c in compiled.items()}
    timed["transforms"] = lambda: jax.block_until_ready(round_trip(x))
    times = _common.interleaved_times(timed, args.repeats)
    device = jax.devices()[0]
    return {
        "device": f"{device.platform} ({device.device_kind})",
        "iterations": np.asarray(reference.iterations).tolist(),
        "iteration_changes": iteration_changes,
        "auto": {"passes": "whole" if ss.whole_array_passes(base) else "chunked", "unroll": ss.descent_unroll(base)},
        "compile_s": compile_s,
        "best_s": {name: min(t.wall for t in ts) for name, ts in times.items()},
        "best_cpu_s": {name: min(t.cpu for t in ts) for name, ts in times.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--preset", default="refined", choices=["refined", "paper", "power"])
    parser.add_argument("--unrolls", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPUs to use (affinity and BLAS threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if 1 not in args.unrolls:
        parser.error("--unrolls must include 1 (the CPU schedule is the reference)")
    _common.limit_cpus(args.threads)
    results = {}
    for tracks in args.tracks:
        result = time_schedules(tracks, args)
        results[tracks] = result
        best, cpu = result["best_s"], result["best_cpu_s"]
        floor = best["transforms"]
        reference = best["chunked, unroll 1"]
        rows = [[name, _common.format_seconds(result["compile_s"].get(name)), _common.format_seconds(seconds),
                 f"{seconds / floor:.2f}× / {cpu[name] / cpu['transforms']:.2f}×",
                 f"{reference / seconds:.2f}×", result["iteration_changes"].get(name, "–")]
                for name, seconds in best.items()]
        title = (f"{tracks} tracks × {args.seconds:g} s, preset {args.preset!r}, on {result['device']}; "
                 f"auto = {result['auto']['passes']}, unroll {result['auto']['unroll']}; "
                 f"descent iterations per row {result['iterations']}")
        print(_common.format_table(["schedule", "compile", f"best of {args.repeats}", "÷ transforms (wall / CPU)",
                                    "speed-up over chunked, unroll 1", "max |Δ iterations|"], rows, title=title),
              flush=True)
        print()
    if args.json:
        _common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
