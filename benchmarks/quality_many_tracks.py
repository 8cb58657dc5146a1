"""Spectral subtraction on a session of many tracks: the presets side by side.

Sixteen tracks are the stems of the first four rendered training chorales (``bundled_stems/train``,
made by ``scripts/render_demo_audio.py --piece training``, see ``bleedjax/assets/tunet/README.md``;
4 stems each, first 10 s), with Seipel & Lerch's linear bleed. A handful of tracks hides errors
that grow with the number of tracks (each microphone's bleed of every other source); this shows
them. Every preset runs as ``bleedjax reduce`` runs it (``auto`` with its phase check). Reported per
condition: ΔSDR mean / worst track and ΔSIR mean, bleedjax's BSS Eval.

    .venv/bin/python benchmarks/quality_many_tracks.py [--stems bundled_stems/train] [--seeds 2]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
import soundfile as sf
from _quality import score_gains

from bleedjax import methods
from bleedjax.methods import spectral_subtraction as ss
from bleedjax.simulate_folder import simulate_arrays

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_tracks(folder: pathlib.Path, pieces: int, seconds: float) -> tuple[np.ndarray, int]:
    chorales = sorted(p for p in folder.iterdir() if p.is_dir())[:pieces]
    if len(chorales) < pieces:
        raise SystemExit(f"{folder}: need {pieces} folders of stems, found {len(chorales)}")
    stems, rates = [], set()
    for chorale in chorales:
        for path in sorted(chorale.glob("*.flac")):
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            stems.append(audio.mean(axis=1))
            rates.add(rate)
    if len(rates) != 1:
        raise SystemExit(f"{folder}: stems at several sample rates {sorted(rates)}")
    rate = rates.pop()
    length = min(min(len(s) for s in stems), int(seconds * rate))
    return np.stack([s[:length] for s in stems]), rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stems", type=pathlib.Path, default=REPO / "bundled_stems" / "train")
    parser.add_argument("--pieces", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    sources, rate = load_tracks(args.stems, args.pieces, args.seconds)
    print(f"{len(sources)} tracks × {sources.shape[1] / rate:g} s at {rate} Hz; seeds 0..{args.seeds - 1}\n")
    print(f"{'bleed':<8} {'preset':<8} {'ΔSDR mean':>9} {'worst':>7} {'ΔSIR mean':>9}")
    method, names = methods.get_method("spectral-subtraction"), [f"track{k}" for k in range(len(sources))]
    for db in (-6.0, -12.0, -18.0):
        for preset in ss.PRESETS:
            gains = []
            for seed in range(args.seeds):
                mics, references, _ = simulate_arrays(sources, sample_rate=rate, bleed="linear",
                                                      max_crosstalk_db=db, seed=seed)
                result = method.run_session(mics, method.default_config(preset), names)
                gains.append(score_gains(references, mics, result.cleaned[0]))
            sdr = np.concatenate([g["sdr"] for g in gains])
            sir = np.concatenate([g["sir"] for g in gains])
            print(f"{db:<8g} {preset:<8} {np.mean(sdr):9.2f} {np.min(sdr):7.2f} {np.mean(sir):9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
