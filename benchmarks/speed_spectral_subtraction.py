"""Speed of spectral subtraction: bleedjax against the paper's algorithm in plain NumPy/SciPy.

Three comparisons in one run (see ``benchmarks/README.md``):

1. One session of J tracks × M minutes at 44.1 kHz: bleedjax ``reduce_session`` (compiled once,
   then the best of N runs) against ``_numpy_spectral_subtraction`` (one pass over the
   spectrograms per descent iteration, as in Seipel & Lerch [1]); also the STFT + iSTFT alone,
   the floor for any method that works on spectrograms.
2. A batch of short sessions: ``reduce_sessions`` (vmapped) against NumPy looping over them.
3. What a user waits for: the ``bleedjax reduce`` command twice with a fresh persistent
   compilation cache, and the import time of ``bleedjax.cli``.

Each measurement runs in a fresh Python process limited to ``--threads`` CPUs, which reports its
peak resident set size (``VmHWM``). Input is music-like: the bundled demo stems and the benchmark
string quartet, repeated to length with a random gain and circular shift per track, mixed by a
Seipel & Lerch matrix (-12 dB maximum crosstalk, no delays).

Usage:
    .venv/bin/python benchmarks/speed_spectral_subtraction.py [--tracks 4 8 16 32] [--minutes 3]
        [--quick] [--json PATH]

References:
    [1] F. Seipel, A. Lerch, "Multi-track crosstalk reduction", AES 144th Convention, 2018.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _common

SAMPLE_RATE = 44100
MAX_CROSSTALK_DB = -12.0
STEM_FOLDERS = (REPO / "bleedjax" / "assets" / "demo", HERE / "audio" / "string_quartet")
TARGET_SPEEDUP_AT_16 = 20.0
TARGET_TRANSFORM_RATIO = 1.5


# --------------------------------------------------------------------------------------------
# Input


def load_stems():
    """The demo and quartet stems as float32 arrays at 44.1 kHz (the quartet upsampled ×2)."""
    import numpy as np
    import scipy.signal
    import soundfile as sf

    stems = []
    for folder in STEM_FOLDERS:
        for path in sorted(folder.glob("*.flac")):
            audio, rate = sf.read(path, dtype="float32")
            if rate != SAMPLE_RATE:
                audio = scipy.signal.resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32)
            stems.append(audio)
    return stems


def make_sessions(stems, *, sessions: int, tracks: int, samples: int, seed: int):
    """``(sessions, tracks, samples)`` float32 microphone tracks with linear bleed.

    Track ``j`` of a session is stem ``perm[j mod S]`` repeated to ``samples``, circularly shifted
    by a random amount and scaled by a random gain in [-6, 0] dB, so that tracks built from the
    same stem still differ. The mix is ``A @ s`` with ``A`` from
    :func:`bleedjax.simulation.seipel_mixing_matrix`, normalised so the loudest track peaks at 0.9
    (:func:`bleedjax.simulation.simulate_linear` with ``with_delays=False``, without its FFTs).
    """
    import jax
    import numpy as np

    from bleedjax import simulation

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    out = np.empty((sessions, tracks, samples), np.float32)
    for index in range(sessions):
        order = rng.permutation(len(stems))
        sources = np.empty((tracks, samples), np.float32)
        for track in range(tracks):
            stem = stems[order[track % len(stems)]]
            shift = int(rng.integers(len(stem)))
            gain = np.float32(10.0 ** (rng.uniform(-6.0, 0.0) / 20.0))
            sources[track] = np.roll(np.resize(stem, samples), shift) * gain
        matrix = np.asarray(
            simulation.seipel_mixing_matrix(
                key=jax.random.fold_in(key, index),
                num_tracks=tracks,
                max_crosstalk_db=MAX_CROSSTALK_DB,
            ),
            np.float32,
        )
        mics = matrix @ sources
        del sources
        mics *= np.float32(simulation.PEAK_AFTER_NORMALISATION / np.abs(mics).max())
        out[index] = mics
    return out


# --------------------------------------------------------------------------------------------
# Workers (each runs in its own process)


def _load(task):
    import numpy as np

    audio = np.load(task["audio"])
    return audio, _common.current_rss_bytes()


def _round_trip(settings):
    """``istft(stft(x))`` with the method's settings, jitted together: the floor."""
    import jax

    from bleedjax import signal

    transform = {"n_fft": settings.n_fft, "hop": settings.hop, "window_name": settings.window}

    @jax.jit
    def round_trip(x):
        return signal.istft(signal.stft(x, **transform), length=x.shape[-1], **transform)

    return round_trip


def _bleedjax_worker(task: dict) -> dict:
    """Compile, then ``reduce_session`` (``reduce_sessions`` for a batch) best of N.

    With ``task["transforms"]`` the STFT + iSTFT round trip is compiled after the method's peak
    memory has been read, and timed in alternation with it, so that both see the same load.
    """
    import jax
    import numpy as np

    from bleedjax.methods import spectral_subtraction as ss

    audio, loaded_rss = _load(task)
    settings = ss.Settings(**ss.PRESETS[task.get("preset", "paper")])
    function = ss.reduce_sessions if audio.ndim == 3 else ss.reduce_session
    x = jax.device_put(audio)
    del audio
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    compiled = function.lower(x, settings).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(x))
    first_s = time.perf_counter() - start
    peak = _common.peak_rss_bytes()
    timed = {"reduce": lambda: jax.block_until_ready(compiled(x))}
    if task.get("transforms"):
        round_trip = _round_trip(settings).lower(x).compile()
        jax.block_until_ready(round_trip(x))
        timed["transforms"] = lambda: jax.block_until_ready(round_trip(x))
    times = _common.interleaved_times(timed, task["repeats"])
    out = {
        "compile_s": compile_s,
        "first_run_s": first_s,
        "best_s": min(t.wall for t in times["reduce"]),
        "best_cpu_s": min(t.cpu for t in times["reduce"]),
        "times_s": [t.wall for t in times["reduce"]],
        "iterations": np.asarray(result.iterations).tolist(),
        "lam": np.asarray(result.lam).tolist(),
        "rss_after_load_bytes": loaded_rss,
        "method_peak_rss_bytes": peak,
        "platform": jax.devices()[0].platform,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    if "transforms" in times:
        out["transforms"] = {
            "best_s": min(t.wall for t in times["transforms"]),
            "best_cpu_s": min(t.cpu for t in times["transforms"]),
            "times_s": [t.wall for t in times["transforms"]],
        }
    return out


def _breakdown_worker(task: dict) -> dict:
    """Each stage of ``reduce_session`` jitted on its own (best of N): where the time goes."""
    import jax
    import jax.numpy as jnp

    from bleedjax import signal
    from bleedjax.methods import spectral_subtraction as ss

    audio, _ = _load(task)
    settings = ss.Settings(**ss.PRESETS[task.get("preset", "paper")])
    transform = {"n_fft": settings.n_fft, "hop": settings.hop, "window_name": settings.window}
    length = audio.shape[-1]
    x = jax.device_put(audio)
    del audio
    stages = {}

    def stage(name, function, *args):
        compiled = jax.jit(function).lower(*args).compile()
        out = jax.block_until_ready(compiled(*args))
        stages[name] = _common.best_of(
            lambda: jax.block_until_ready(compiled(*args)), task["repeats"]
        )[0]
        return out

    spec = stage("stft", lambda a: signal.stft(a, **transform), x)
    mags = stage("abs", jnp.abs, spec)
    gram = stage("gram", ss.magnitude_gram, mags)
    lam = stage(
        "descent",
        lambda g: (
            jax.vmap(ss.descend_row, in_axes=(None, 0, None))(
                g, jnp.arange(g.shape[0]), settings
            ).lam
        ),
        gram,
    )
    del mags, gram
    cleaned = stage(
        "subtract (Eq. 7)", lambda s, m: ss.subtract(s, m, settings.lambda_scale, settings.exponent), spec, lam
    )
    del spec
    stage("istft", lambda c: signal.istft(c, length=length, **transform), cleaned)
    return {"stages_s": stages}


def _numpy_session(audio, settings, plan: dict) -> dict:
    """The NumPy reference on one session, with the literal descent run or extrapolated.

    ``plan`` carries ``probe_iterations``, ``budget_s``, ``sessions`` and, after the first
    session, the decision ``literal`` and the measured ``per_iteration_s``.
    """
    import _numpy_spectral_subtraction as nss
    import numpy as np

    seconds = {}
    start = time.perf_counter()
    spec = nss.stft(audio, settings)
    magnitudes = np.abs(spec)
    flat = magnitudes.reshape(magnitudes.shape[0], -1).astype(np.float64)
    seconds["stft_abs"] = time.perf_counter() - start

    start = time.perf_counter()
    gram = nss.gram(flat)
    setups = [nss.row_setup(gram, i, settings) for i in range(len(flat))]
    seconds["normalisation"] = time.perf_counter() - start

    replay = [nss.descend_row_gram(gram, i, setups[i], settings) for i in range(len(flat))]
    replay_iterations = [row.iterations for row in replay]
    if "per_iteration_s" not in plan:
        # NumPy gets its best BLAS thread count: on a loaded machine one thread can beat two.
        probe = min(plan["probe_iterations"], replay_iterations[0])
        candidates = sorted({1, len(os.sched_getaffinity(0))})
        per_iteration = {}
        for threads in candidates:
            _common.set_blas_threads(threads)
            start = time.perf_counter()
            ran = nss.descend_row(flat, 0, setups[0], settings, iteration_limit=probe).iterations
            per_iteration[threads] = (time.perf_counter() - start) / ran
        plan["blas_threads"] = min(per_iteration, key=per_iteration.get)
        _common.set_blas_threads(plan["blas_threads"])
        plan["per_iteration_s"] = per_iteration[plan["blas_threads"]]
        plan["per_iteration_by_threads_s"] = per_iteration
        plan["probe_iterations"] = ran
        single = magnitudes.reshape(len(flat), -1)
        start = time.perf_counter()
        ran = nss.descend_row(single, 0, setups[0], settings, iteration_limit=probe).iterations
        plan["per_iteration_float32_s"] = (time.perf_counter() - start) / ran
        predicted = plan["per_iteration_s"] * sum(replay_iterations) * plan["sessions"]
        plan["literal"] = predicted <= plan["budget_s"]

    if plan["literal"]:
        start = time.perf_counter()
        rows = [nss.descend_row(flat, i, setups[i], settings) for i in range(len(flat))]
        seconds["descent"] = time.perf_counter() - start
        literal_iterations = [row.iterations for row in rows]
    else:
        rows = replay
        seconds["descent"] = plan["per_iteration_s"] * sum(replay_iterations)
        literal_iterations = None
    del flat

    start = time.perf_counter()
    lam = np.stack([row.lam for row in rows]).astype(np.float32)
    cleaned = nss.istft(
        nss.subtract(spec, magnitudes, lam, settings.lambda_scale), audio.shape[-1], settings
    )
    del cleaned
    seconds["subtract_istft"] = time.perf_counter() - start
    return {
        "seconds": seconds,
        "total_s": sum(seconds.values()),
        "lam": lam.tolist(),
        "iterations": literal_iterations,
        "replayed_iterations": replay_iterations,
    }


def _numpy_worker(task: dict) -> dict:
    """The literal NumPy/SciPy method on one session or a loop over a batch of sessions."""
    import _numpy_spectral_subtraction as nss

    audio, loaded_rss = _load(task)
    settings = nss.Settings()
    batch = audio if audio.ndim == 3 else audio[None]
    plan = {
        "probe_iterations": task["probe_iterations"],
        "budget_s": task["budget_s"],
        "sessions": len(batch),
    }
    sessions = [_numpy_session(session, settings, plan) for session in batch]
    result = {
        "total_s": sum(s["total_s"] for s in sessions),
        "literal": plan["literal"],
        "per_iteration_s": plan["per_iteration_s"],
        "per_iteration_float32_s": plan["per_iteration_float32_s"],
        "per_iteration_by_blas_threads_s": plan["per_iteration_by_threads_s"],
        "blas_threads": plan["blas_threads"],
        "probe_iterations": plan["probe_iterations"],
        "rss_after_load_bytes": loaded_rss,
        "seconds": {k: sum(s["seconds"][k] for s in sessions) for k in sessions[0]["seconds"]},
    }
    for key in ("lam", "iterations", "replayed_iterations"):
        values = [s[key] for s in sessions]
        result[key] = values if audio.ndim == 3 else values[0]
    if not plan["literal"]:
        result["iterations"] = None
    return result


HANDLERS = {
    "bleedjax": _bleedjax_worker,
    "breakdown": _breakdown_worker,
    "numpy": _numpy_worker,
}


# --------------------------------------------------------------------------------------------
# Driver


@dataclasses.dataclass
class Options:
    tracks: list[int]
    seconds: float
    batch_sessions: int
    batch_tracks: int
    batch_seconds: float
    cli_tracks: int
    cli_seconds: float
    repeats: int
    numpy_budget: float
    probe_iterations: int
    breakdown: bool
    parts: list[str]
    seed: int
    preset: str = "paper"


def _save_audio(folder: pathlib.Path, name: str, audio) -> str:
    import numpy as np

    path = folder / f"{name}.npy"
    np.save(path, audio)
    return str(path)


def _agreement(bleedjax_result: dict, numpy_result: dict) -> dict:
    import numpy as np

    ours = np.asarray(bleedjax_result["iterations"])
    literal = numpy_result["iterations"]
    replayed = np.asarray(numpy_result["replayed_iterations"])
    theirs = replayed if literal is None else np.asarray(literal)
    lam_diff = np.abs(np.asarray(bleedjax_result["lam"]) - np.asarray(numpy_result["lam"])).max()
    return {
        "iterations_bleedjax_total": int(ours.sum()),
        "iterations_numpy_total": int(theirs.sum()),
        "iterations_numpy_counted": "literal" if literal is not None else "replayed on the Gram",
        "iterations_equal": bool(np.array_equal(ours, theirs)),
        "iterations_rows_differing": int((ours != theirs).sum()),
        "iterations_min": int(ours.min()),
        "iterations_max": int(ours.max()),
        "literal_equals_replay": None
        if literal is None
        else bool(np.array_equal(literal, replayed)),
        "max_abs_lambda_difference": float(lam_diff),
    }


NOT_COMPARED = "not run: the NumPy reference is the paper's algorithm (--preset paper)"


def compares_with_numpy(options: Options) -> bool:
    """The NumPy reference is the paper's algorithm; against another preset there is no
    like-for-like speed-up or agreement, so it is not run (bleedjax's times and the transforms
    ratio are reported alone)."""
    return options.preset == "paper"


def _against_numpy(options: Options, path: str, ours: dict) -> dict:
    """``{"numpy", "agreement", "speedup"}`` of the NumPy reference on the audio at ``path``
    against bleedjax's result ``ours``; ``None`` each where :func:`compares_with_numpy` is false."""
    if not compares_with_numpy(options):
        return {"numpy": None, "agreement": None, "speedup": None}
    task = {"kind": "numpy", "audio": path, "budget_s": options.numpy_budget,
            "probe_iterations": options.probe_iterations}
    theirs = _common.run_worker(__file__, task)
    return {"numpy": theirs, "agreement": _agreement(ours, theirs), "speedup": theirs["total_s"] / ours["best_s"]}


def run_sessions(options: Options, stems, folder: pathlib.Path) -> list[dict]:
    rows = []
    samples = round(options.seconds * SAMPLE_RATE)
    for tracks in options.tracks:
        print(f"[sessions] {tracks} tracks × {options.seconds:g} s", file=sys.stderr, flush=True)
        audio = make_sessions(
            stems, sessions=1, tracks=tracks, samples=samples, seed=options.seed + tracks
        )[0]
        path = _save_audio(folder, f"session_{tracks}", audio)
        del audio
        common = {"audio": path, "repeats": options.repeats, "preset": options.preset}
        row = {"tracks": tracks, "seconds_of_audio": samples / SAMPLE_RATE}
        row["bleedjax"] = _common.run_worker(
            __file__, {"kind": "bleedjax", "transforms": True, **common}
        )
        row["transforms"] = row["bleedjax"].pop("transforms")
        if options.breakdown:
            row["breakdown"] = _common.run_worker(__file__, {"kind": "breakdown", **common})[
                "stages_s"
            ]
        row |= _against_numpy(options, path, row["bleedjax"])
        row["reduce_over_transforms"] = row["bleedjax"]["best_s"] / row["transforms"]["best_s"]
        row["reduce_over_transforms_cpu"] = (
            row["bleedjax"]["best_cpu_s"] / row["transforms"]["best_cpu_s"]
        )
        pathlib.Path(path).unlink()
        rows.append(row)
    return rows


def run_batch(options: Options, stems, folder: pathlib.Path) -> dict:
    print(
        f"[batch] {options.batch_sessions} sessions × {options.batch_tracks} tracks × "
        f"{options.batch_seconds:g} s",
        file=sys.stderr,
        flush=True,
    )
    samples = round(options.batch_seconds * SAMPLE_RATE)
    audio = make_sessions(
        stems,
        sessions=options.batch_sessions,
        tracks=options.batch_tracks,
        samples=samples,
        seed=options.seed,
    )
    path = _save_audio(folder, "batch", audio)
    del audio
    result = {
        "sessions": options.batch_sessions,
        "tracks": options.batch_tracks,
        "seconds_of_audio": samples / SAMPLE_RATE,
        "bleedjax": _common.run_worker(
            __file__, {"kind": "bleedjax", "audio": path, "repeats": options.repeats, "preset": options.preset}
        ),
    }
    result |= _against_numpy(options, path, result["bleedjax"])
    pathlib.Path(path).unlink()
    return result


def _timed_process(command: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, check=True, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def _cli_command() -> list[str]:
    """The installed ``bleedjax`` script beside this Python, else ``python -m bleedjax.cli``.

    The second form serves an install without console scripts (``pip install --target``).
    """
    executable = pathlib.Path(sys.executable).parent / "bleedjax"
    if executable.exists():
        return [str(executable)]
    return [sys.executable, "-m", "bleedjax.cli"]


def run_cli(options: Options, stems, folder: pathlib.Path) -> dict:
    import soundfile as sf

    print(
        f"[cli] {options.cli_tracks} tracks × {options.cli_seconds:g} s",
        file=sys.stderr,
        flush=True,
    )
    samples = round(options.cli_seconds * SAMPLE_RATE)
    audio = make_sessions(
        stems, sessions=1, tracks=options.cli_tracks, samples=samples, seed=options.seed
    )[0]
    session = folder / "cli_session"
    session.mkdir()
    for index, track in enumerate(audio):
        sf.write(session / f"mic{index:02d}.wav", track, SAMPLE_RATE, subtype="FLOAT")
    cache = folder / "jax_cache"
    command = _cli_command()
    env = {"BLEEDJAX_CACHE_DIR": str(cache)}
    first = _timed_process(
        [*command, "reduce", str(session), "--out", str(folder / "out1"), "--preset", options.preset], env
    )
    cache_entries = sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0
    second = _timed_process(
        [*command, "reduce", str(session), "--out", str(folder / "out2"), "--preset", options.preset], env
    )
    imports = [_timed_process([sys.executable, "-c", "import bleedjax.cli"]) for _ in range(3)]
    jax_imports = [
        _timed_process([sys.executable, "-c", "import bleedjax.methods.spectral_subtraction"])
        for _ in range(3)
    ]
    return {
        "tracks": options.cli_tracks,
        "seconds_of_audio": samples / SAMPLE_RATE,
        "first_run_s": first,
        "second_run_s": second,
        "cache_entries_after_first_run": cache_entries,
        "import_bleedjax_cli_s": min(imports),
        "import_bleedjax_cli_all_s": imports,
        "import_with_jax_s": min(jax_imports),
    }


# --------------------------------------------------------------------------------------------
# Report


def _numpy_how(numpy_result: dict) -> str:
    if numpy_result["literal"]:
        return "literal (1 run)"
    return f"extrapolated from {numpy_result['probe_iterations']} iterations"


def _iterations_cell(agreement: dict) -> str:
    same = (
        "="
        if agreement["iterations_equal"]
        else f"≠ in {agreement['iterations_rows_differing']} rows"
    )
    counted = "" if agreement["iterations_numpy_counted"] == "literal" else " (replay)"
    return (
        f"{agreement['iterations_bleedjax_total']} / {agreement['iterations_numpy_total']}{counted} {same}"
        f" [{agreement['iterations_min']}–{agreement['iterations_max']}]"
    )


def _float32_bound(row: dict) -> float:
    """NumPy's time had its descent passes run in float32 (it could then not test δ = 1e-10)."""
    numpy_result = row["numpy"]
    iterations = numpy_result["iterations"] or numpy_result["replayed_iterations"]
    total_iterations = (
        sum(map(sum, iterations))
        if iterations and isinstance(iterations[0], list)
        else sum(iterations)
    )
    descent = numpy_result["per_iteration_float32_s"] * total_iterations
    return numpy_result["total_s"] - numpy_result["seconds"]["descent"] + descent


def report(results: dict, options: Options) -> str:
    fs, fb, fr = _common.format_seconds, _common.format_bytes, _common.format_ratio
    parts = [f"bleedjax settings: preset {options.preset!r} (benchmarks/speed_spectral_subtraction.py --preset)"]
    rows = results.get("sessions", [])
    if rows:
        parts.append(
            _common.format_table(
                [
                    "tracks",
                    "compile",
                    "bleedjax",
                    "NumPy/SciPy",
                    "NumPy ÷ bleedjax",
                    "RTF bleedjax",
                    "RTF NumPy",
                    "peak RSS bleedjax",
                    "peak RSS NumPy",
                    "NumPy timing",
                ],
                [
                    [
                        r["tracks"],
                        fs(r["bleedjax"]["compile_s"]),
                        fs(r["bleedjax"]["best_s"]),
                        *(
                            [
                                fs(r["numpy"]["total_s"]),
                                fr(r["speedup"]),
                                f"{r['seconds_of_audio'] / r['bleedjax']['best_s']:.1f}",
                                f"{r['seconds_of_audio'] / r['numpy']['total_s']:.2f}",
                                fb(r["bleedjax"]["method_peak_rss_bytes"]),
                                fb(r["numpy"]["peak_rss_bytes"]),
                                _numpy_how(r["numpy"]),
                            ]
                            if r["numpy"]
                            else ["—", "—", f"{r['seconds_of_audio'] / r['bleedjax']['best_s']:.1f}", "—",
                                  fb(r["bleedjax"]["method_peak_rss_bytes"]), "—", NOT_COMPARED]
                        ),
                    ]
                    for r in rows
                ],
                title=f"1. One session, {options.seconds / 60:g} min at 44.1 kHz: reduce_session (best of "
                f"{options.repeats}) vs literal NumPy/SciPy",
            )
        )
        parts.append(
            _common.format_table(
                [
                    "tracks",
                    "STFT+iSTFT",
                    "reduce ÷ transforms (wall / CPU)",
                    "iterations bleedjax / NumPy",
                    "max |Δλ|",
                    "NumPy: stft+abs / norm / descent / subtract+istft",
                    "NumPy ÷ bleedjax, f32 passes",
                ],
                [
                    [
                        r["tracks"],
                        fs(r["transforms"]["best_s"]),
                        f"{fr(r['reduce_over_transforms'], 2)} / {fr(r['reduce_over_transforms_cpu'], 2)}",
                        *(
                            [
                                _iterations_cell(r["agreement"]),
                                f"{r['agreement']['max_abs_lambda_difference']:.1e}",
                                " / ".join(
                                    fs(r["numpy"]["seconds"][k])
                                    for k in ("stft_abs", "normalisation", "descent", "subtract_istft")
                                ),
                                fr(_float32_bound(r) / r["bleedjax"]["best_s"]),
                            ]
                            if r["numpy"]
                            else ["—", "—", "—", "—"]
                        ),
                    ]
                    for r in rows
                ],
                title="1b. The floor (STFT + iSTFT alone, jitted together, timed alternately with reduce) "
                "and agreement",
            )
        )
        if options.breakdown:
            names = list(rows[0]["breakdown"])
            parts.append(
                _common.format_table(
                    ["tracks", *names, "sum", "whole reduce"],
                    [
                        [
                            r["tracks"],
                            *(fs(r["breakdown"][n]) for n in names),
                            fs(sum(r["breakdown"].values())),
                            fs(r["bleedjax"]["best_s"]),
                        ]
                        for r in rows
                    ],
                    title="1c. bleedjax stages jitted separately (best of N; the whole reduce fuses them)",
                )
            )
    batch = results.get("batch")
    if batch:
        total_audio = batch["sessions"] * batch["seconds_of_audio"]
        bj, numpy_result = batch["bleedjax"], batch["numpy"]
        parts.append(
            _common.format_table(
                ["", "seconds", "sessions/s", "RTF", "peak RSS", "notes"],
                [
                    [
                        "bleedjax reduce_sessions",
                        fs(bj["best_s"]),
                        f"{batch['sessions'] / bj['best_s']:.1f}",
                        f"{total_audio / bj['best_s']:.0f}",
                        fb(bj["method_peak_rss_bytes"]),
                        f"compile {fs(bj['compile_s'])}, best of {options.repeats}",
                    ],
                    *(
                        [
                            [
                                "NumPy loop",
                                fs(numpy_result["total_s"]),
                                f"{batch['sessions'] / numpy_result['total_s']:.2f}",
                                f"{total_audio / numpy_result['total_s']:.1f}",
                                fb(numpy_result["peak_rss_bytes"]),
                                _numpy_how(numpy_result),
                            ],
                            [
                                "NumPy ÷ bleedjax",
                                fr(batch["speedup"]),
                                "",
                                "",
                                "",
                                (
                                    f"iterations {_iterations_cell(batch['agreement'])}, max |Δλ| "
                                    f"{batch['agreement']['max_abs_lambda_difference']:.1e}"
                                ),
                            ],
                        ]
                        if numpy_result
                        else [["NumPy loop", "—", "", "", "", NOT_COMPARED]]
                    ),
                ],
                title=f"2. Batch: {batch['sessions']} sessions × {batch['tracks']} tracks × "
                f"{batch['seconds_of_audio']:g} s",
            )
        )
    cli = results.get("cli")
    if cli:
        parts.append(
            _common.format_table(
                ["", "wall time"],
                [
                    [
                        (
                            f"bleedjax reduce, first run (empty cache; {cli['tracks']} tracks × "
                            f"{cli['seconds_of_audio']:g} s)"
                        ),
                        fs(cli["first_run_s"]),
                    ],
                    [
                        f"bleedjax reduce, second run (cache: {cli['cache_entries_after_first_run']} files)",
                        fs(cli["second_run_s"]),
                    ],
                    [
                        "python -c 'import bleedjax.cli' (best of 3)",
                        fs(cli["import_bleedjax_cli_s"]),
                    ],
                    [
                        "python -c 'import bleedjax.methods.spectral_subtraction' (JAX; best of 3)",
                        fs(cli["import_with_jax_s"]),
                    ],
                ],
                title="3. Whole process, as a user waits for it",
            )
        )
    parts.append(_targets(results))
    return "\n\n".join(parts)


def _targets(results: dict) -> str:
    lines = ["Targets"]
    rows = {r["tracks"]: r for r in results.get("sessions", [])}
    if rows and not any(r["numpy"] for r in rows.values()):
        lines.append(f"  NumPy ÷ bleedjax: {NOT_COMPARED}")
    elif 16 in rows:
        speedup = rows[16]["speedup"]
        verdict = "met" if speedup >= TARGET_SPEEDUP_AT_16 else "NOT met"
        lines.append(
            f"  NumPy ÷ bleedjax at 16 tracks: {speedup:.1f}× (target ≥ {TARGET_SPEEDUP_AT_16:g}×): {verdict}"
            f" ({_float32_bound(rows[16]) / rows[16]['bleedjax']['best_s']:.1f}× had NumPy's passes been float32)"
        )
    else:
        lines.append("  NumPy ÷ bleedjax at 16 tracks: not measured in this run")
    for tracks, row in rows.items():
        ratios = (row["reduce_over_transforms"], row["reduce_over_transforms_cpu"])
        met = [ratio <= TARGET_TRANSFORM_RATIO for ratio in ratios]
        verdict = (
            "met"
            if all(met)
            else "NOT met"
            if not any(met)
            else "unclear (wall and CPU time disagree)"
        )
        lines.append(
            f"  reduce ÷ (STFT+iSTFT) at {tracks} tracks: {ratios[0]:.2f}× wall, "
            f"{row['reduce_over_transforms_cpu']:.2f}× CPU time (target ≤ {TARGET_TRANSFORM_RATIO:g}×): {verdict}"
        )
    loads = [
        load
        for row in [*rows.values(), results.get("batch")]
        if row
        for load in row["bleedjax"]["load_average"]
    ]
    cpus = max(1, len(results.get("cpus", [])))
    if loads and max(loads) > cpus + 0.5:
        lines.append(
            f"  WARNING: 1-min load average reached {max(loads):.1f} on {cpus} CPUs during the bleedjax "
            "timings: other processes competed, wall times are inflated (best-of-N and the alternation "
            "with the transforms limit the damage)"
        )
    lines.append(
        "  peak RSS = VmHWM (peak resident set) of the worker process: Python, libraries and the loaded "
        "input included; bleedjax's is read before the transforms were compiled. RTF = audio "
        "duration ÷ processing time"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tracks", type=int, nargs="+", default=None, help="track counts (4 8 16 32)"
    )
    parser.add_argument("--minutes", type=float, default=None, help="session length (3)")
    parser.add_argument(
        "--batch-sessions", type=int, default=None, help="sessions in the batch (100)"
    )
    parser.add_argument("--batch-tracks", type=int, default=4)
    parser.add_argument("--batch-seconds", type=float, default=10.0)
    parser.add_argument("--cli-tracks", type=int, default=4)
    parser.add_argument("--cli-seconds", type=float, default=None, help="CLI session length (30)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="bleedjax timing: best of N ≥ 2 (5)"
    )
    parser.add_argument(
        "--numpy-budget",
        type=float,
        default=None,
        help="seconds (600; 10 with --quick): a literal NumPy descent predicted to take "
        "longer is extrapolated",
    )
    parser.add_argument(
        "--numpy-iterations",
        type=int,
        default=20,
        help="literal iterations timed to predict or extrapolate the NumPy descent",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="CPUs to use (affinity and BLAS threads)"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("sessions", "batch", "cli"),
        default=["sessions", "batch", "cli"],
    )
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also time bleedjax's stages separately (the paper preset's stages: descent without rounds or bound, "
        "plain Eq. (7), whatever --preset is)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--preset",
        default="paper",
        choices=("paper", "refined", "power", "floor", "auto"),
        help="bleedjax's settings: 'paper' (default) is the algorithm the NumPy version implements; "
        "'auto' is the CLI's default ('floor' up to 6 tracks, 'refined', the box plus refinement "
        "rounds, above), for the transforms ratio; 'power' and 'floor' are the other presets. With "
        "any preset but 'paper' the NumPy reference is not run (no like-for-like speed-up exists)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 4 and 8 tracks × 20 s, 10 sessions, CLI on 10 s",
    )
    parser.add_argument("--json", help="write all figures to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        _common.worker_main(args.worker, args.result, HANDLERS)
        return 0
    quick = args.quick
    options = Options(
        tracks=args.tracks or ([4, 8] if quick else [4, 8, 16, 32]),
        seconds=60.0 * args.minutes if args.minutes is not None else (20.0 if quick else 180.0),
        batch_sessions=args.batch_sessions or (10 if quick else 100),
        batch_tracks=args.batch_tracks,
        batch_seconds=args.batch_seconds,
        cli_tracks=args.cli_tracks,
        cli_seconds=args.cli_seconds or (10.0 if quick else 30.0),
        repeats=max(2, args.repeats or (2 if quick else 5)),
        numpy_budget=args.numpy_budget
        if args.numpy_budget is not None
        else (10.0 if quick else 600.0),
        probe_iterations=max(1, args.numpy_iterations),
        breakdown=args.breakdown,
        parts=args.parts,
        seed=args.seed,
        preset=args.preset,
    )
    cpus = _common.limit_cpus(args.threads)
    results = {"options": dataclasses.asdict(options), "cpus": cpus}
    stems = load_stems()
    with tempfile.TemporaryDirectory(prefix="bleedjax_speed_") as name:
        folder = pathlib.Path(name)
        if "sessions" in options.parts:
            results["sessions"] = run_sessions(options, stems, folder)
        if "batch" in options.parts:
            results["batch"] = run_batch(options, stems, folder)
        if "cli" in options.parts:
            results["cli"] = run_cli(options, stems, folder)
    text = report(results, options)
    print(text)
    results["table"] = text
    if args.json:
        _common.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
