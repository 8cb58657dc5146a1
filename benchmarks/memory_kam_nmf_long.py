"""Peak memory of KAM + NMF as a track grows: one track of 1, 5 and 15 minutes through `reduce`.

For each duration a one-track session is written to disk block by block (the string quartet mix
at 22.05 kHz, tiled, with a real cough every 20 s at 0 dB), and `bleedjax reduce --method kam-nmf`
runs in a fresh process, streamed (`--streaming`: spectrogram on disk, block-wise NMF and KAM,
:mod:`bleedjax.methods.kam_nmf_long`) and, with `--paths streaming in-memory`, also in memory
(`--no-streaming`). Reported: the child's peak resident set size (``ru_maxrss``) and wall time,
compilation included. The dictionary (32 atoms) is learned from the other interference files.

    .venv/bin/python benchmarks/memory_kam_nmf_long.py [--minutes 1 5 15]
        [--paths streaming in-memory] [--set nmf_iterations=100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile

import numpy as np
import soundfile as sf
from _common import run_reduce_measured

REPO = pathlib.Path(__file__).resolve().parents[1]
NOISE = REPO.parent / "shared" / "data" / "interference"
RATE = 22050
BLOCK = RATE * 20


def write_session(folder: pathlib.Path, minutes: float) -> None:
    from bleedjax import sessions

    quartet = sessions.read_session(REPO / "benchmarks" / "audio" / "string_quartet").audio.mean(axis=0)
    cough, rate = sf.read(NOISE / "cough.flac", dtype="float32")
    assert rate == RATE
    event = cough[RATE : 2 * RATE]
    folder.mkdir(parents=True)
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(folder / "track.wav", "w", RATE, 1, "FLOAT") as handle:
        for start in range(0, total, BLOCK):
            count = min(BLOCK, total - start)
            music = quartet[(start + np.arange(count)) % len(quartet)]
            at = slice(BLOCK // 2, BLOCK // 2 + len(event))
            if count >= at.stop:
                gain = np.sqrt(np.sum(music[at] ** 2) / np.sum(event**2))
                music = music.copy()
                music[at] += gain * event
            handle.write(music.astype(np.float32))


def learn_dictionary(path: pathlib.Path) -> None:
    from bleedjax import dictionary

    others = sorted(p for p in NOISE.glob("*.flac") if p.name != "cough.flac")
    dictionary.save(dictionary.learn_from_files(others, components=32, iterations=50), path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 15])
    parser.add_argument("--paths", nargs="+", choices=("streaming", "in-memory"), default=["streaming"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a kam-nmf config override passed to reduce")
    parser.add_argument("--workdir", type=pathlib.Path, default=None)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bleedjax-kam-nmf-long-", dir=args.workdir))
    rows = []
    print(f"{'minutes':>8} {'path':>10} {'wall s':>8} {'x real time':>11} {'peak RSS GiB':>12}")
    try:
        learn_dictionary(work / "dict.npz")
        for minutes in args.minutes:
            session = work / f"s{minutes:g}"
            write_session(session, minutes)
            for path in args.paths:
                out = work / f"o{minutes:g}-{path}"
                arguments = ["--method", "kam-nmf", "--dictionary", str(work / "dict.npz")]
                arguments += [part for item in args.set for part in ("--set", item)]
                elapsed, peak = run_reduce_measured(session, out, arguments, streamed=path == "streaming",
                                                    cache=str(work / "cache"))
                assert sf.info(out / "track.wav").frames == int(minutes * 60 * RATE)
                assert sf.info(out / "interference" / "track.wav").frames == int(minutes * 60 * RATE)
                rows.append({"minutes": minutes, "path": path, "seconds": elapsed, "peak_rss_bytes": peak,
                             "overrides": args.set})
                print(f"{minutes:8g} {path:>10} {elapsed:8.1f} {minutes * 60 / elapsed:11.2f} "
                      f"{peak / 2**30:12.2f}", flush=True)
                shutil.rmtree(out)
            shutil.rmtree(session)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
