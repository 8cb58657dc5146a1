"""Spectral subtraction's frame length at 44.1 and 96 kHz, side by side.

Seipel & Lerch chose 4096-sample frames at 44.1 kHz (93 ms) so that delays between microphones
matter little. A session recorded at 96 kHz gets 43 ms frames from the same 4096 samples. This
benchmark resamples the Bach chorale and the Mozart quartet (10 s) to each ``--rates``, simulates
the quality benchmarks' bleed (Seipel's matrix with free-field delays at −6 and −12 dB, and a
shoebox room), and cleans every session with each ``--n-fft`` (hop ``n_fft / 2``, Hamming,
``--preset``). It reports ΔSDR mean / worst track and ΔSIR mean over ``--seeds`` seeds. The
command line's default stays the paper's 4096 / 2048 (issue: follow the paper exactly).

    .venv/bin/python benchmarks/quality_frame_length.py [--rates 44100 96000] [--n-fft 4096 8192]
        [--preset auto] [--seeds 2] [--seconds 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib

import numpy as np
import scipy.signal
from _common import format_table, write_json
from _quality import clean_with, condition_name, load_pieces, score_gains, simulate

from bleedjax.methods import spectral_subtraction as ss

CONDITIONS = [("linear", -6.0), ("linear", -12.0), ("room", None)]


def resampled(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return audio
    common = math.gcd(rate, target)
    return scipy.signal.resample_poly(audio, target // common, rate // common, axis=1).astype(np.float32)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[44100, 96000])
    parser.add_argument("--n-fft", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--preset", default="auto", choices=list(ss.PRESETS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)

    rows, payload = [], {}
    for piece, session in load_pieces().items():
        if "phenicx" in piece:
            continue
        excerpt = session.audio[:, : int(args.seconds * session.sample_rate)]
        for rate in args.rates:
            at_rate = dataclasses.replace(session, audio=resampled(excerpt, session.sample_rate, rate), sample_rate=rate)
            for bleed, db in CONDITIONS:
                gains = {n_fft: {"sdr": [], "sir": []} for n_fft in args.n_fft}
                for seed in range(args.seeds):
                    mics, references, _ = simulate(at_rate, bleed, db, seed)
                    for n_fft in args.n_fft:
                        cleaned, _ = clean_with("spectral-subtraction", args.preset, mics, session.track_names,
                                                {"n_fft": n_fft, "hop": n_fft // 2})
                        scores = score_gains(references, mics, np.asarray(cleaned))
                        gains[n_fft]["sdr"].append(scores["sdr"])
                        gains[n_fft]["sir"].append(scores["sir"])
                condition = condition_name(bleed, db)
                cells = []
                for n_fft in args.n_fft:
                    sdr, sir = np.concatenate(gains[n_fft]["sdr"]), np.concatenate(gains[n_fft]["sir"])
                    cells.append(f"{np.nanmean(sdr):.2f} / {np.nanmin(sdr):.2f} / {np.nanmean(sir):.2f}")
                    payload[f"{piece} / {rate} / {condition} / {n_fft}"] = {"sdr": sdr.tolist(), "sir": sir.tolist()}
                rows.append([piece, f"{rate}", condition, *cells])
                print(rows[-1], flush=True)
    headers = ["piece", "rate", "bleed", *(f"n_fft {n}" for n in args.n_fft)]
    print(format_table(headers, rows, title=f"ΔSDR mean / worst / ΔSIR mean (dB), preset {args.preset}, "
                                            f"{args.seeds} seeds, {args.seconds:g} s"))
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
