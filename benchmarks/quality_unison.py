"""Unison: every method on real desks of players that play the same part (PHENICX), side by side.

An orchestra's strings play in sections: the two players of a desk, and often the desks of a
section, play the same notes. The PHENICX anechoic excerpt of ``../shared/data`` has such pairs,
recorded one player at a time: violin1/violin2 and violin3/violin4 (magnitude spectrograms
correlated 0.83 and 0.88) and viola1/viola2 (0.94), against at most 0.10 across desks (printed
first). A session of these six tracks gets the quality benchmarks' simulated bleed (Seipel & Lerch's matrix at
−6/−12/−18 dB, free-field delays, and a shoebox room; ``_quality.simulate``), and every method
cleans it:

* spectral subtraction, every preset (the default ``auto`` with its phase check of pairs with λ ≥ 0.3
  both ways, and with the check from 0.4); KAMIR, every preset;
* the differentiable model: its default (inversion, then a residual magnitude subtraction with
  λ ≤ 0.25), the residual's box at 1 (the default before it was lowered), and the inversion alone.

In unison, a microphone's own source and the bleed of its desk partner have almost the same
magnitude spectrogram, so a magnitude method cannot tell them apart: at weak bleed it finds a
large λ between the partners and removes the target. Gains are over the unprocessed microphones,
scored with bleedjax's BSS Eval (cross-checked against ``mir_eval`` on the first session).

``--parts warnings`` lists, on these desks and on the pieces of the other quality benchmarks, the
pairs with λ ≥ 0.3 both ways (``phase_check_min_lambda``) before the default's phase check (:mod:`bleedjax.methods.phase_check`), their true gains, and whether the check capped
them (``bleedjax reduce`` warns about those) or kept them.

    .venv/bin/python benchmarks/quality_unison.py [--seeds 2] [--parts methods warnings] [--json out.json]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax.numpy as jnp
import numpy as np
from _common import write_json
from _quality import (
    CONDITIONS,
    PHENICX,
    clean_with,
    condition_name,
    cross_check,
    load_pieces,
    phenicx_session,
    score_gains,
    simulate,
)
from bleedjax.configs import spectral_subtraction as spectral_subtraction_config

from bleedjax import methods, reduce, sessions, signal

DESKS = ["violin1", "violin2", "violin3", "violin4", "viola1", "viola2"]
VARIANTS = [("spectral-subtraction", preset, {}) for preset in methods.get_method("spectral-subtraction").presets]
VARIANTS += [("spectral-subtraction", "auto", {"phase_check_min_lambda": 0.4})]
VARIANTS += [("kamir", preset, {}) for preset in methods.get_method("kamir").presets]
VARIANTS += [
    ("differentiable", None, {}),
    ("differentiable", None, {"residual_max_lambda": 1.0}),
    ("differentiable", None, {"residual": "none"}),
]


def unison_session() -> sessions.Session:
    return phenicx_session(DESKS, "desks")


def label(method: str, preset: str | None, overrides: dict) -> str:
    return " ".join([method, preset or ""] + [f"{k}={v}" for k, v in overrides.items()]).replace("  ", " ").strip()


def partners(names: list[str]) -> list[tuple[int, int]]:
    """Index pairs (both orders) of the desk partners among the session's tracks."""
    index = {pathlib.Path(n).stem: k for k, n in enumerate(names)}
    pairs = [("violin1", "violin2"), ("violin3", "violin4"), ("viola1", "viola2")]
    return [(index[a], index[b]) for a, b in pairs] + [(index[b], index[a]) for a, b in pairs]


def partner_correlations(session: sessions.Session) -> dict[str, float]:
    """Pearson correlation of the stems' magnitude spectrograms (Hamming 4096 / 2048): every desk
    pair, and the largest between tracks of different desks."""
    spectrograms = np.abs(np.asarray(signal.stft(jnp.asarray(session.audio), n_fft=4096, hop=2048,
                                                 window_name="hamming"))).reshape(len(session.audio), -1)
    correlation = np.corrcoef(spectrograms)
    pairs = partners(session.track_names)[:3]
    out = {f"{session.track_names[i]}/{session.track_names[j]}": float(correlation[i, j]) for i, j in pairs}
    across = [correlation[i, j] for i in range(len(correlation)) for j in range(i)
              if (i, j) not in pairs and (j, i) not in pairs]
    out["largest across desks"] = float(max(across))
    return out


def compare_methods(seeds: int) -> dict:
    """Every variant on the desks: ``{condition: {variant: {"sdr": [...], "sir": [...]}}}``."""
    session, figures, checked = unison_session(), {}, 0.0
    print(f"{'bleed':<8} {'method':<58} {'ΔSDR mean':>9} {'worst':>7} {'ΔSIR mean':>9} {'worst':>7}")
    for bleed, db in CONDITIONS:
        scores = {}
        for seed in range(seeds):
            mics, references, mixing = simulate(session, bleed, db, seed)
            for method, preset, overrides in VARIANTS:
                cleaned, matrix = clean_with(method, preset, mics, session.track_names, overrides)
                if seed == 0 and (method, preset, overrides) == ("spectral-subtraction", spectral_subtraction_config.DEFAULT_PRESET, {}):
                    found = " ".join(f"{matrix[i, j]:.3f}/{mixing[i, j]:.3f}" for i, j in partners(session.track_names))
                    print(f"{condition_name(bleed, db)}, seed 0: λ of the default between desk partners / truth: {found}")
                scores.setdefault(label(method, preset, overrides), []).append(score_gains(references, mics, cleaned))
                if not figures and seed == 0:
                    checked = max(checked, cross_check(references, cleaned))
        condition = condition_name(bleed, db)
        for name, runs in scores.items():
            sdr, sir = (np.concatenate([r[m] for r in runs]) for m in ("sdr", "sir"))
            figures.setdefault(condition, {})[name] = {"sdr": sdr.tolist(), "sir": sir.tolist()}
            print(f"{condition:<8} {name:<58} {sdr.mean():9.2f} {sdr.min():7.2f} {sir.mean():9.2f} {sir.min():7.2f}",
                  flush=True)
    print(f"largest |bleedjax − mir_eval| on the first condition's first seed: {checked:.4f} dB")
    return figures


def named_pairs(seeds: int) -> dict:
    """``{piece: {condition: [[seed, name_i, name_j, λ_ij, λ_ji, min true gain, capped], ...]}}``:
    the pairs that the default's phase check fits (λ ≥ ``phase_check_min_lambda`` both ways), whether it capped
    them (``bleedjax reduce`` then warns, :func:`bleedjax.reduce.capped_pairs`) or kept them."""
    pieces = load_pieces() | {"phenicx desks (unison)": unison_session()}
    chosen = methods.get_method("spectral-subtraction")
    found = {}
    for piece, session in pieces.items():
        for bleed, db in CONDITIONS:
            rows = found.setdefault(piece, {}).setdefault(condition_name(bleed, db), [])
            for seed in range(seeds):
                mics, _, mixing = simulate(session, bleed, db, seed)
                config = chosen.default_config(None)
                result = chosen.run_session(mics, config, session.track_names)
                checked, applied = result.checked[0], result.matrices[0]
                capped = {(a, b) for a, b, *_ in reduce.capped_pairs(checked, applied, session.track_names)}
                for first, second, forward, backward in reduce.mutual_bleed_pairs(
                    checked, session.track_names, config.phase_check_min_lambda
                ):
                    i, j = session.track_names.index(first), session.track_names.index(second)
                    rows.append([seed, first, second, forward, backward, float(min(mixing[i, j], mixing[j, i])),
                                 (first, second) in capped])
            named = ", ".join(f"{a}/{b} (true {t:.2f}, {'capped' if c else 'kept'})"
                              for _, a, b, _, _, t, c in rows) or "none"
            print(f"{piece:<28} {condition_name(bleed, db):<8} mutual pairs over {seeds} seeds: {named}", flush=True)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=["methods", "warnings"], default=["methods", "warnings"])
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if not PHENICX.is_dir():
        parser.error(f"{PHENICX} not found: this benchmark needs ../shared/data beside the repository")
    start, figures = time.perf_counter(), {}
    figures["correlations"] = partner_correlations(unison_session())
    print("magnitude correlation of the stems: "
          + ", ".join(f"{k} {v:.2f}" for k, v in figures["correlations"].items()))
    if "methods" in args.parts:
        figures["methods"] = compare_methods(args.seeds)
    if "warnings" in args.parts:
        figures["warnings"] = named_pairs(args.seeds)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
