"""DC offsets: every method with and without a constant offset on some microphones, side by side.

A preamp or converter can leave a constant offset on a track. It is not bleed, but it fills
every microphone's lowest STFT bins alike, so a bleed estimate that sees it finds bleed where
there is none. ``bleedjax reduce`` takes each track's offset out before a method runs and puts it
back after (:func:`bleedjax.sessions.shift_tracks`). For each method's default, this benchmark
reports ΔSDR (mean / worst track, over the unprocessed microphones without their offsets):

* ``clean``: the session without offsets, through ``reduce``;
* ``offsets, method alone``: the offsets given straight to the method (``Method.run_session``),
  which is what ``reduce`` did before 2026-12-05;
* ``offsets, reduce``: the offsets through ``reduce``; the cleaned tracks are scored less their
  offsets, which ``reduce`` keeps.

Pieces: the bundled Bach chorale and the Mozart quartet of the quality benchmarks, linear bleed
at −12 dB with free-field delays, one seed.

    .venv/bin/python benchmarks/quality_dc_offset.py [--seconds 8] [--offset 0.1] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import tempfile

import numpy as np
import soundfile as sf
from _common import format_table, write_json
from _quality import load_pieces, score_gains, simulate

from bleedjax import methods, reduce

METHODS = ("spectral-subtraction", "kamir", "differentiable")
PATTERN = (1.0, 0.0, -1.0, 0.5, 0.0, 0.0)
"""Offsets as multiples of ``--offset``, track by track (cycled): some tracks have none."""


def _mean_worst(gains: np.ndarray) -> str:
    return f"{np.nanmean(gains):.2f} / {np.nanmin(gains):.2f}"


def _through_reduce(method: str, mics: np.ndarray, names: list[str], rate: int, folder: pathlib.Path) -> np.ndarray:
    folder.mkdir(parents=True)
    for name, track in zip(names, mics):
        sf.write(folder / f"{pathlib.Path(name).stem}.wav", track, rate, subtype="FLOAT")
    [result] = reduce.reduce_folders([folder], folder.with_name(folder.name + "_out"), method=method)
    return result.cleaned


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--offset", type=float, default=0.1, help="the largest offset, of full scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)

    rows, payload = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for piece, session in load_pieces().items():
            if "phenicx" in piece:
                continue
            samples = int(args.seconds * session.sample_rate)
            clipped = dataclasses.replace(session, audio=session.audio[:, :samples])
            mics, references, _ = simulate(clipped, "linear", -12.0, args.seed)
            mics = np.asarray(mics, np.float32)
            offsets = args.offset * np.resize(PATTERN, len(mics))[:, None].astype(np.float32)
            names = [f"{pathlib.Path(n).stem}.wav" for n in session.track_names]
            for method in METHODS:
                base = pathlib.Path(scratch) / f"{len(payload)}"
                clean = _through_reduce(method, mics, names, session.sample_rate, base / "clean")
                chosen = methods.get_method(method)
                rate = {"sample_rate": session.sample_rate} if chosen.uses_sample_rate else {}
                alone = np.asarray(chosen.run_session(mics + offsets, chosen.default_config(None), names,
                                                      **rate).cleaned[0]) - offsets
                handled = _through_reduce(method, mics + offsets, names, session.sample_rate, base / "offsets") - offsets
                gains = {label: score_gains(references, mics, cleaned)["sdr"]
                         for label, cleaned in (("clean", clean), ("alone", alone), ("reduce", handled))}
                rows.append([piece, method, *(_mean_worst(g) for g in gains.values())])
                payload[f"{piece} / {method}"] = {k: v.tolist() for k, v in gains.items()}
                print(rows[-1], flush=True)
    print(format_table(
        ["piece", "method", "clean", "offsets, method alone", "offsets, reduce"], rows,
        title=f"ΔSDR mean / worst track (dB), −12 dB linear bleed, offsets up to {args.offset:g}, {args.seconds:g} s",
    ))
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
