"""Peak memory of `bleedjax reduce` on many sessions at once: does it grow with their number?

Writes N sessions of 4 tracks × 30 s at 44.1 kHz (16-bit WAV; the bundled stems at different
offsets, mixed with a Seipel matrix at -12 dB), then runs `bleedjax reduce S1 ... SN --out OUT`
in a fresh process and reports its wall time and peak RSS (``ru_maxrss`` of the child), for each
N of ``--sessions``. The researcher's use case: one command over a folder of thousands of
sessions. Bounded memory means the peak does not grow with N.

    .venv/bin/python benchmarks/memory_many_sessions.py [--sessions 10 40 160] [--method spectral-subtraction]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

import numpy as np
import soundfile as sf
from _common import run_measured, write_json

REPO = pathlib.Path(__file__).resolve().parents[1]
RATE = 44100
TRACKS = 4
SECONDS = 30


def write_sessions(root: pathlib.Path, count: int, seed: int = 0) -> list[pathlib.Path]:
    stems = [sf.read(p, dtype="float32")[0] for p in sorted((REPO / "bleedjax" / "assets" / "demo").glob("*.flac"))]
    rng = np.random.default_rng(seed)
    samples = SECONDS * RATE
    upper = 10 ** (-12 / 20)
    folders = []
    for index in range(count):
        choice = rng.choice(len(stems), TRACKS, replace=False)
        starts = rng.integers(0, RATE * 10, TRACKS)
        sources = np.stack([stems[c][(s + np.arange(samples)) % len(stems[c])] for c, s in zip(choice, starts)])
        mixing = np.triu(rng.uniform(0, upper, (TRACKS, TRACKS)), 1)
        mixing = mixing + mixing.T + np.eye(TRACKS)
        mics = mixing @ sources
        mics *= 0.9 / np.abs(mics).max()
        folder = root / f"session{index:04d}"
        folder.mkdir(parents=True)
        for track, mic in enumerate(mics):
            sf.write(folder / f"mic{track}.wav", mic, RATE, subtype="PCM_16")
        folders.append(folder)
    return folders


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 40, 160])
    parser.add_argument("--method", default="spectral-subtraction")
    parser.add_argument("--workdir", type=pathlib.Path, default=None)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    rows = []
    print(f"{args.method}, sessions of {TRACKS} tracks x {SECONDS} s at {RATE} Hz")
    print(f"{'sessions':>8} {'input GB':>9} {'wall s':>8} {'s per session':>13} {'peak RSS GiB':>12}")
    with tempfile.TemporaryDirectory(prefix="bleedjax-many-", dir=args.workdir) as scratch:
        work = pathlib.Path(scratch)
        folders = write_sessions(work / "in", max(args.sessions))
        for count in args.sessions:
            out = work / f"out{count}"
            command = [str(REPO / ".venv" / "bin" / "bleedjax"), "reduce", *map(str, folders[:count]),
                       "--out", str(out), "--method", args.method]
            elapsed, peak = run_measured(command)
            assert len(list(out.glob("*/mic*.wav"))) == count * TRACKS
            size = sum(p.stat().st_size for f in folders[:count] for p in f.iterdir()) / 1e9
            rows.append({"sessions": count, "input_gb": size, "seconds": elapsed, "peak_rss_bytes": peak,
                         "method": args.method})
            print(f"{count:8d} {size:9.2f} {elapsed:8.1f} {elapsed / count:13.3f} {peak / 2**30:12.2f}", flush=True)
            shutil.rmtree(out)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
