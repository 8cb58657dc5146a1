"""Speed of fitting the differentiable bleed model: one session, and a batch compiled once.

Sizes (the issue's): sessions of 4 tracks × 10 s at 44.1 kHz, and a batch of 100 of them. For each:

* ``fit``: ``differentiable.fit_session`` (STFT, GCC-PHAT and λ initialisation, ``rounds`` ×
  ``steps`` Adam steps alternating with unmixing), vmapped over sessions for the batch;
* ``reduce``: the whole method (fit, whole-signal inversion, residual spectral subtraction,
  iSTFT), ``differentiable.reduce_sessions``.

The batch runs as chunks of ``--chunk`` sessions through one vmapped function compiled once (its
first call, compilation plus one chunk's run, is reported apart), each chunk blocked with ``block_until_ready``; spectral
subtraction's ``reduce_sessions`` on the same chunks is timed alongside as the reference, with
the ratio. Input: random 10 s excerpts of the bundled stems (the demo's five and the quartet's
four, the quartet upsampled 2×) with Seipel's mixing matrix at -12 dB and delays of 1–10 ms.
The default run takes tens of minutes on a loaded 2-core machine; ``--sessions 10 --seconds 5``
is a quick check.

    .venv/bin/python benchmarks/speed_differentiable.py [--sessions 100] [--tracks 4]
        [--seconds 10] [--chunk 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import format_ratio, format_seconds, format_table, process_cpu_seconds
from _quality import REPO

from bleedjax import bleed_model, demo, sessions, simulation
from bleedjax.methods import differentiable
from bleedjax.methods import spectral_subtraction as ss

RATE = 44100


def stems() -> np.ndarray:
    demo_stems = sessions.read_session(demo.bundled_stems()).audio
    quartet = sessions.read_session(REPO / "benchmarks" / "audio" / "string_quartet").audio
    upsampled = np.repeat(quartet, 2, axis=-1)[:, : demo_stems.shape[-1]]
    return np.concatenate([demo_stems, upsampled])


def make_sessions(count: int, tracks: int, seconds: float, *, seed: int) -> np.ndarray:
    pool = stems()
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    out = []
    for k in range(count):
        chosen = rng.choice(len(pool), tracks, replace=False)
        start = rng.integers(0, pool.shape[-1] - samples)
        sources = jnp.asarray(pool[chosen, start : start + samples])
        gains = simulation.seipel_mixing_matrix(key=jax.random.key(k), num_tracks=tracks, max_crosstalk_db=-12.0)
        delays = jnp.where(jnp.eye(tracks, dtype=bool), 0.0, jnp.asarray(rng.uniform(1e-3, 10e-3, (tracks, tracks)) * RATE, jnp.float32))
        mics = bleed_model.bleed(sources, gains, delays, max_delay=10 * RATE // 1000 + 2)
        out.append(np.asarray(simulation.normalise_by_loudest(mics, sources)[0]))
    return np.stack(out)


CPU_TIMES: dict[str, float] = {}


def timed(function, *args, label: str | None = None) -> float:
    """Wall seconds of one blocked call; the process CPU seconds go to ``CPU_TIMES[label]``."""
    start, cpu = time.perf_counter(), process_cpu_seconds()
    jax.block_until_ready(function(*args))
    if label is not None:
        CPU_TIMES[label] = CPU_TIMES.get(label, 0.0) + process_cpu_seconds() - cpu
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    settings = differentiable.Settings()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} devices); "
          f"{args.sessions} sessions × {args.tracks} tracks × {args.seconds:g} s at {RATE} Hz; "
          f"{settings.rounds} rounds × {settings.steps} Adam steps\n", flush=True)
    audio = make_sessions(args.sessions, args.tracks, args.seconds, seed=0)
    one = jnp.asarray(audio[0])
    fit_one = jax.jit(differentiable.fit_session, static_argnames="settings")
    fit_batch = jax.jit(jax.vmap(lambda a: differentiable.fit_session(a, settings)))
    results = {}
    compile_fit = timed(fit_one, one, settings)
    results["fit, one session"] = (compile_fit, min(timed(fit_one, one, settings) for _ in range(3)))
    CPU_TIMES["fit, one session"] = 0.0
    timed(fit_one, one, settings, label="fit, one session")
    compile_reduce = timed(differentiable.reduce_session, one, settings)
    results["reduce, one session"] = (compile_reduce, min(timed(differentiable.reduce_session, one, settings) for _ in range(3)))
    compile_ss = timed(ss.reduce_session, one)
    results["spectral subtraction, one session"] = (compile_ss, min(timed(ss.reduce_session, one) for _ in range(3)))
    print("one session done", flush=True)

    chunks = [jnp.asarray(audio[k : k + args.chunk]) for k in range(0, args.sessions, args.chunk)]
    if len(chunks[-1]) != args.chunk:
        raise SystemExit("--sessions must be a multiple of --chunk (one compiled shape)")
    batch_functions = {
        "fit, batch": fit_batch,
        "reduce, batch": lambda a: differentiable.reduce_sessions(a, settings),
        "spectral subtraction, batch": lambda a: ss.reduce_sessions(a),
    }
    for name, function in batch_functions.items():
        compile_time = timed(function, chunks[0])
        results[name] = (compile_time, sum(timed(function, c, label=name) for c in chunks))
        print(f"{name} done", flush=True)

    audio_seconds = {"one": args.seconds, "batch": args.seconds * args.sessions}
    rows = []
    for name, (first, best) in results.items():
        scope = "batch" if "batch" in name else "one"
        reference = results[f"spectral subtraction, {'batch' if scope == 'batch' else 'one session'}"][1]
        cpu = CPU_TIMES.get(name)
        rows.append([name, format_seconds(first), format_seconds(best), format_seconds(cpu),
                     f"{audio_seconds[scope] / best:.1f}", format_ratio(best / reference)])
    print(format_table(["", "first call (compile + one run)", "time", "CPU time", "real-time factor", "÷ spectral subtraction"], rows,
                       title=f"differentiable bleed model, {args.tracks} tracks × {args.seconds:g} s"))
    if args.json:
        args.json.write_text(json.dumps({k: {"first_s": v[0], "time_s": v[1], "cpu_s": CPU_TIMES.get(k)}
                                         for k, v in results.items()}
                                        | {"args": vars(args) | {"json": str(args.json)}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
