"""Peak memory on long recordings: 16 tracks (`--tracks`) × 5, 15 and 30 minutes through `reduce`.

For each duration a 16-track session is written to disk block by block (the bundled stems and the
quartet, tiled with per-track offsets and mixed with a Seipel matrix at -12 dB, 44.1 kHz, 16-bit
WAV), then `bleedjax reduce --method METHOD` runs in a fresh process, streamed (`--streaming`)
and, with `--paths streaming in-memory`, also loaded whole (`--no-streaming`), and its peak
resident set size (``ru_maxrss`` of the child) and wall time are reported. Bounded memory means
the streamed peak does not grow with the duration. The methods with a streamed path are KAMIR
(:mod:`bleedjax.methods.kamir_long`), spectral subtraction
(:mod:`bleedjax.methods.spectral_subtraction_long`), the differentiable model
(:mod:`bleedjax.methods.differentiable_long`) and the t-UNet and CAE
(:mod:`bleedjax.methods.neural_long`; the CAE needs `--checkpoint`); KAM + NMF has its own benchmark
(`memory_kam_nmf_long.py`, one track). `--paths analyze` runs `bleedjax analyze SESSION --json F`
instead (the differentiable model on the session's busiest excerpt of at most 60 s).

    .venv/bin/python benchmarks/memory_long.py [--method kamir|spectral-subtraction|differentiable|tunet|cae]
        [--preset K4] [--checkpoint DIR]
        [--minutes 5 15 30] [--paths streaming in-memory analyze] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np
import scipy.signal
import soundfile as sf
from _common import run_measured, run_reduce_measured

REPO = pathlib.Path(__file__).resolve().parents[1]
RATE = 44100
TRACKS = 16
BLOCK = RATE * 10


def stem_pool() -> list[np.ndarray]:
    stems = [sf.read(p, dtype="float32")[0] for p in sorted((REPO / "bleedjax" / "assets" / "demo").glob("*.flac"))]
    for path in sorted((REPO / "benchmarks" / "audio" / "string_quartet").glob("*.flac")):
        stems.append(scipy.signal.resample_poly(sf.read(path, dtype="float32")[0], 2, 1).astype(np.float32))
    return stems


def write_session(folder: pathlib.Path, minutes: float, seed: int = 0, tracks: int = TRACKS) -> None:
    rng = np.random.default_rng(seed)
    pool = stem_pool()
    choice = [pool[i % len(pool)] for i in range(tracks)]
    offsets = rng.integers(0, RATE * 10, tracks)
    upper = 10 ** (-12 / 20)
    mixing = np.triu(rng.uniform(0, upper, (tracks, tracks)), 1)
    mixing = (mixing + mixing.T + np.eye(tracks)) / (1 + upper * tracks / 2)
    folder.mkdir(parents=True)
    handles = [sf.SoundFile(folder / f"mic{i:02d}.wav", "w", RATE, 1, "PCM_16") for i in range(tracks)]
    total = int(minutes * 60 * RATE)
    for start in range(0, total, BLOCK):
        count = min(BLOCK, total - start)
        index = (start + offsets[:, None] + np.arange(count)[None, :])
        sources = np.stack([stem[i % len(stem)] for stem, i in zip(choice, index)])
        mics = np.clip(mixing @ sources * 0.9, -1, 1)
        for handle, mic in zip(handles, mics):
            handle.write(mic)
    for handle in handles:
        handle.close()


def untrained_checkpoint(folder: pathlib.Path, spec: str) -> pathlib.Path:
    """A freshly initialised model of the config ``spec`` at this benchmark's rate, saved as a
    checkpoint (memory and time do not depend on the weights; the CAE has no bundled model)."""
    import jax
    from flax import nnx

    from bleedjax import checkpointing, models, train

    config = train.load_config(str(REPO / spec))
    config.data.sample_rate = RATE
    model = models.build_model(config.model, rngs=nnx.Rngs(jax.random.key(0)))
    checkpointing.save_model(folder, model, config)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=["kamir", "spectral-subtraction", "differentiable", "tunet", "cae"], default="kamir")
    parser.add_argument("--preset", default=None, help="the method's preset (its default when omitted)")
    parser.add_argument("--checkpoint", default=None,
                        help="tunet/cae: a trained model (default: the bundled t-UNet; for the CAE, an untrained "
                             "configs/cae.py:bundled at 44.1 kHz)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 15, 30])
    parser.add_argument("--tracks", type=int, default=TRACKS)
    parser.add_argument("--paths", nargs="+", choices=["streaming", "in-memory", "analyze"], default=["streaming"],
                        help="analyze: `bleedjax analyze SESSION --json F` (its default method and --max-seconds) "
                             "instead of reduce")
    parser.add_argument("--workdir", type=pathlib.Path, default=None)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bleedjax-long-", dir=args.workdir))
    rows = []
    if args.method == "cae" and args.checkpoint is None:
        args.checkpoint = str(untrained_checkpoint(work / "cae", "configs/cae.py:bundled"))
    reducing = [path for path in args.paths if path != "analyze"]
    print(f"reduce: {args.method} {args.preset or '(default preset)'}" if reducing else "analyze (its defaults)")
    print(f"{'minutes':>8} {'path':>10} {'tracks':>6} {'input GB':>9} {'wall s':>8} {'x real time':>11} "
          f"{'peak RSS GiB':>12}")
    try:
        for minutes in args.minutes:
            session = work / f"s{minutes:g}"
            write_session(session, minutes, tracks=args.tracks)
            size = sum(p.stat().st_size for p in session.iterdir()) / 1e9
            for path in args.paths:
                out = work / f"o{minutes:g}{path}"
                if path == "analyze":
                    command = [str(REPO / ".venv" / "bin" / "bleedjax"), "analyze", str(session), "--json", str(out)]
                    elapsed, peak = run_measured(command, dict(os.environ, BLEEDJAX_CACHE_DIR=str(work / "cache")))
                    assert len(json.loads(out.read_text())["tracks"]) == args.tracks
                    out.unlink()
                else:
                    arguments = ["--method", args.method, *(["--preset", args.preset] if args.preset else []),
                                 *(["--checkpoint", args.checkpoint] if args.checkpoint else [])]
                    elapsed, peak = run_reduce_measured(session, out, arguments, streamed=path == "streaming",
                                                        cache=str(work / "cache"))
                    written = sorted(p.name for p in out.glob("*.wav"))
                    assert len(written) == args.tracks and sf.info(out / written[0]).frames == int(minutes * 60 * RATE)
                    shutil.rmtree(out)
                rows.append({"minutes": minutes, "path": path, "tracks": args.tracks, "input_gb": size,
                             "seconds": elapsed, "peak_rss_bytes": peak, "method": args.method,
                             "preset": args.preset})
                print(f"{minutes:8g} {path:>10} {args.tracks:6d} {size:9.2f} {elapsed:8.1f} "
                      f"{minutes * 60 / elapsed:11.2f} {peak / 2**30:12.2f}", flush=True)
            shutil.rmtree(session)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
