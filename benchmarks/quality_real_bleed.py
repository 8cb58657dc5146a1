"""Every method on real bleed: the Dagstuhl ChoirSet excerpt, scored against larynx microphones.

All other quality benchmarks simulate the bleed. Here it is real: one second of a choir quartet
(``../shared/data/dagstuhl-choirset-excerpt``, Rosenzweig et al., TISMIR 2020), where every
singer's dynamic (``DYN``) and headset (``HSM``) microphones hear the other singers. There is no
clean reference, but every singer also wears a larynx microphone (``LRX``), a contact microphone
on the throat that hears almost nothing but its own singer. BSS Eval (512-tap distortion filters)
against the four larynx signals then splits each close microphone into its own singer's voice
(what a filter of the own larynx signal explains), the other singers (what filters of their
larynx signals explain) and the rest. The scores are proxies:

* ΔSIR (the change in the energy of the other singers relative to the own singer) measures bleed
  removal. It undercounts: a larynx signal lacks most of the voice above a few kHz, so bleed up
  there counts as artefact, not interference.
* SAR and SDR are low in absolute terms for the same reason; their changes still say whether a
  method damages the own voice.

Sessions: the four ``DYN`` microphones (S1, A2, T2, B2), and the three ``HSM`` microphones (A2, T2,
B2; S1 has none), which hear more of the others. Methods: every spectral-subtraction and KAMIR
preset and the differentiable model, with their defaults. The neural models need at least 3.68 s
and are left out. A control row adds 10 % of the other microphones to each microphone (more real
bleed): its ΔSIR must be negative, or the proxy does not measure bleed. The scores are
cross-checked against ``mir_eval.separation.bss_eval_sources``.

A third session holds all seven close microphones (two per singer, one for S1), cleaned together
by the default methods, with and without a channel map that puts each singer's microphones on one
source (``--set channel_map=FILE``; :mod:`bleedjax.same_source`). Its outputs are scored as the
two sessions above: the dynamic microphones against the four larynx signals, the headsets against
three. ``--parts together-presets`` does the same for every other preset of spectral subtraction
and KAMIR.

    .venv/bin/python benchmarks/quality_real_bleed.py [--json out.json] [--parts presets together together-presets]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
from _common import write_json
from _quality import clean_with, cross_check
from bleedjax.configs import kamir as kamir_config
from bleedjax.configs import spectral_subtraction as spectral_subtraction_config

from bleedjax import evaluate, methods

CHOIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "dagstuhl-choirset-excerpt"
TAKE = "DCS_LI_QuartetB_Take04"
SESSIONS = {"DYN": ["S1", "A2", "T2", "B2"], "HSM": ["A2", "T2", "B2"]}
METHODS = [("spectral-subtraction", preset) for preset in methods.get_method("spectral-subtraction").presets]
METHODS += [("kamir", preset) for preset in methods.get_method("kamir").presets] + [("differentiable", None)]
CONTROL_BLEED = 0.1
TOGETHER = [("S1", "DYN"), ("A2", "DYN"), ("A2", "HSM"), ("T2", "DYN"), ("T2", "HSM"), ("B2", "DYN"), ("B2", "HSM")]
DEFAULTS = [("spectral-subtraction", None), ("kamir", None), ("differentiable", None)]


def load(microphone: str, singers: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(references, microphones, names)``: the singers' larynx signals and close microphones,
    each ``(singers, samples)``."""

    def read(singer: str, kind: str) -> np.ndarray:
        audio, rate = sf.read(CHOIR / f"{TAKE}_{singer}_{kind}.wav", dtype="float32")
        if rate != 22050 or audio.ndim != 1:
            raise ValueError(f"{singer}_{kind}: expected mono 22.05 kHz, got {audio.shape} at {rate} Hz")
        return audio

    references = np.stack([read(s, "LRX") for s in singers])
    mics = np.stack([read(s, microphone) for s in singers])
    return references, mics, [f"{s}_{microphone}" for s in singers]


def with_more_bleed(mics: np.ndarray) -> np.ndarray:
    """The control: each microphone plus ``CONTROL_BLEED`` times every other microphone."""
    return mics + CONTROL_BLEED * (mics.sum(axis=0, keepdims=True) - mics)


def outputs(mics: np.ndarray, names: list[str]):
    """``(label, (tracks, samples) output)`` of every method, then of the control."""
    for method, preset in METHODS:
        yield f"{method} {preset or ''}".strip(), clean_with(method, preset, mics, names)[0]
    yield f"control: + {CONTROL_BLEED:g} × other mics", with_more_bleed(mics)


def together(map_file: pathlib.Path, runs: list[tuple[str, str | None]] = DEFAULTS) -> dict:
    """The seven close microphones as one session, each of the ``runs`` (method, preset) with the
    channel map, without it, and without it and with the search for microphones of one source
    turned off (``detect_same_source=false``): ΔSDR / ΔSIR of the dynamic and the headset
    microphones, scored separately."""
    read = lambda singer, kind: sf.read(CHOIR / f"{TAKE}_{singer}_{kind}.wav", dtype="float32")[0]
    mics = np.stack([read(s, k) for s, k in TOGETHER])
    names = [f"{s}_{k}" for s, k in TOGETHER]
    singers = {}
    for singer, kind in TOGETHER:
        singers.setdefault(singer, []).append(f"{singer}_{kind}")
    map_file.write_text(json.dumps(singers))
    print(f"\nall seven close microphones in one session ({', '.join(names)}), scored per kind against the larynx "
          "microphones")
    print(f"{'method':<22} {'variant':>18}  {'DYN ΔSDR mean':>13} {'worst':>6} {'ΔSIR mean':>9} {'worst':>6}   "
          f"{'HSM ΔSDR mean':>13} {'worst':>6} {'ΔSIR mean':>9} {'worst':>6}")
    rows = {}
    variants = {"no map, search off": {"detect_same_source": False}, "no map": {}, "map": {"channel_map": str(map_file)}}
    for method, preset in runs:
        for variant, overrides in variants.items():
            cleaned = clean_with(method, preset, mics, names, overrides, sample_rate=22050)[0]
            row = {}
            for kind, voices in SESSIONS.items():
                picked = [names.index(f"{v}_{kind}") for v in voices]
                references = np.stack([read(v, "LRX") for v in voices])
                before, after = evaluate.score(references, mics[picked]), evaluate.score(references, cleaned[picked])
                row[kind] = {m: (after[m] - before[m]).tolist() for m in ("sdr", "sir")}
            label = f"{method} {preset or ''}".strip()
            rows[f"{label} {variant}"] = row
            cells = "   ".join(
                f"{np.mean(row[k]['sdr']):13.2f} {np.min(row[k]['sdr']):6.2f} {np.mean(row[k]['sir']):9.2f} "
                f"{np.min(row[k]['sir']):6.2f}" for k in SESSIONS
            )
            print(f"{label:<22} {variant:>18}  {cells}", flush=True)
    return {"tracks": names, "map": singers, "gains": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--parts", nargs="+", choices=["presets", "together", "together-presets"],
                        default=["presets", "together"],
                        help="presets: every preset on the DYN and HSM sessions; together: the seven microphones "
                             "in one session, with and without a channel map, for the default methods; "
                             "together-presets: the same for every other preset")
    args = parser.parse_args(argv)
    if not CHOIR.is_dir():
        parser.error(f"{CHOIR} not found: this benchmark needs ../shared/data beside the repository")
    start = time.perf_counter()
    figures = {}
    if "together" in args.parts:
        with tempfile.TemporaryDirectory() as scratch:
            figures["together"] = together(pathlib.Path(scratch) / "map.json")
    if "together-presets" in args.parts:
        defaults = {"spectral-subtraction": spectral_subtraction_config.DEFAULT_PRESET,
                    "kamir": kamir_config.DEFAULT_PRESET}
        others = [(m, p) for m, p in METHODS if p is not None and p != defaults[m]]
        with tempfile.TemporaryDirectory() as scratch:
            figures["together_presets"] = together(pathlib.Path(scratch) / "map.json", others)
    for microphone, singers in SESSIONS.items() if "presets" in args.parts else ():
        references, mics, names = load(microphone, singers)
        before = evaluate.score(references, mics)
        print(f"\n{microphone} microphones of {', '.join(singers)} against their larynx microphones; unprocessed: "
              + ", ".join(f"{n} SDR {before['sdr'][k]:.2f} SIR {before['sir'][k]:.2f}" for k, n in enumerate(names)))
        print(f"{'method':<34} {'ΔSDR mean':>9} {'worst':>6} {'ΔSIR mean':>9} {'worst':>6} {'ΔSAR mean':>9}   ΔSDR per track")
        rows = {}
        worst_check = cross_check(references, mics)
        for label, cleaned in outputs(mics, names):
            after = evaluate.score(references, cleaned)
            gains = {m: after[m] - before[m] for m in ("sdr", "sir", "sar")}
            worst_check = max(worst_check, cross_check(references, cleaned))
            rows[label] = {m: g.tolist() for m, g in gains.items()}
            print(f"{label:<34} {gains['sdr'].mean():9.2f} {gains['sdr'].min():6.2f} {gains['sir'].mean():9.2f} "
                  f"{gains['sir'].min():6.2f} {gains['sar'].mean():9.2f}   " + " ".join(f"{g:5.2f}" for g in gains['sdr']), flush=True)
        print(f"largest |bleedjax − mir_eval| over these scores: {worst_check:.4f} dB")
        figures[microphone] = {"tracks": names, "before": {m: before[m].tolist() for m in ("sdr", "sir", "sar")},
                               "gains": rows, "mir_eval_max_abs_db": worst_check}
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
