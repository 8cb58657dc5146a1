"""Unison: every method on desks of players that play the same part, side by side.

An orchestra's strings play in sections: the two players of a desk, and often the desks of a
section, play the same notes. Two sessions of such desks:

* **PHENICX desks** (real, 1 s): the PHENICX anechoic excerpt of ``../shared/data`` has such pairs,
  recorded one player at a time: violin1/violin2 and violin3/violin4 (magnitude spectrograms
  correlated 0.83 and 0.88) and viola1/viola2 (0.94), against at most 0.10 across desks. A second
  of held notes is also where phase cannot tell partners apart: a convolutive filter of one
  partner explains 69 % of the other (:mod:`bleedjax.coherence`).
* **Rendered desks** (10 s, ``benchmarks/audio/unison_desks``): Mozart's 1st violin and viola parts,
  each played by two humanised players (onset jitter, intonation, dynamics and vibrato of their own;
  ``scripts/render_demo_audio.py --piece unison``), magnitude correlation 0.87–0.88 within a desk.
  Over ten seconds the partners are phase-coherent only as much as unrelated tracks are not
  (coherent fraction 0.09–0.12), as in a real recording of more than a few notes.
* **The rendered desks with viola_b 6 dB louder** (``louder``): in unison λ depends on the
  partners' levels (:func:`bleedjax.methods.phase_check.mutual_pairs`), so this is the case for
  the phase check's geometric mean.

Each session gets the quality benchmarks' simulated bleed (Seipel & Lerch's matrix at −6/−12/−18
dB, free-field delays, and a shoebox room; ``_quality.simulate``), and every method cleans it:

* spectral subtraction, every preset (the default ``auto`` with its phase check of pairs with
  √(λ_ij λ_ji) ≥ 0.3, and with the check from 0.4); KAMIR, every preset (K4 with the ratio floor's bound
  and its phase check of pairs with √(g_ij g_ji) ≥ 0.2 on sessions of at least 2 s, and without
  the check);
* the differentiable model: its default (inversion, then a residual magnitude subtraction with
  λ ≤ 0.25), the residual's box at 1 (the default before it was lowered), the residual without
  the fit's significance, without the ratio floor and the unison guard of short sessions (the
  default until 2026-12-07, late), and the inversion alone.

In unison, a microphone's own source and the bleed of its desk partner have almost the same
magnitude spectrogram, so a magnitude method cannot tell them apart: at weak bleed it finds a
large λ between the partners and removes the target. Gains are over the unprocessed microphones,
scored with bleedjax's BSS Eval (cross-checked against ``mir_eval`` on the first session).

``--parts warnings`` lists, on the desks and on the pieces of the other quality benchmarks, the
pairs that the default's phase check (:mod:`bleedjax.methods.phase_check`) fits
(√(λ_ij λ_ji) ≥ ``phase_check_min_lambda``), their true gains, and whether the check capped
them (``bleedjax reduce`` warns about those) or kept them.

``--crosstalk-db -24 -30`` runs linear bleed at those maximum crosstalks instead of the four
conditions (weak bleed: below the partners' own likeness, no method can tell bleed from the
part), ``--defaults`` keeps each method's default row and the differentiable model's inversion
alone, ``--methods`` keeps the rows of some methods only, each ``--kamir-variant "key=value ..."``
adds a row of KAMIR's K4 (with its check) with those ``--set`` overrides, and ``--seconds S`` cuts
every session to its first S seconds (a short excerpt is where the phase-based tests see least).

    .venv/bin/python benchmarks/quality_unison.py [--seeds 2] [--desks phenicx rendered louder]
        [--parts methods warnings] [--methods kamir ...] [--kamir-variant "key=value ..."] [--seconds S]
        [--crosstalk-db DB ...] [--defaults]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

import jax.numpy as jnp
import numpy as np
from _common import write_json
from _quality import (
    CONDITIONS,
    PHENICX,
    REPO,
    clean_with,
    condition_name,
    cross_check,
    load_pieces,
    parse_variant,
    phenicx_session,
    score_gains,
    simulate,
)
from bleedjax.configs import kamir as kamir_config
from bleedjax.configs import spectral_subtraction as spectral_subtraction_config

from bleedjax import methods, reduce, sessions, signal

VARIANTS = [("spectral-subtraction", preset, {}) for preset in methods.get_method("spectral-subtraction").presets]
VARIANTS += [("spectral-subtraction", "auto", {"phase_check_min_lambda": 0.4})]
VARIANTS += [("kamir", preset, {}) for preset in methods.get_method("kamir").presets]
VARIANTS += [("kamir", "K4", {"phase_check": False})]
VARIANTS += [
    ("differentiable", None, {}),
    ("differentiable", None, {"residual_max_lambda": 1.0}),
    ("differentiable", None, {"residual_significance": False}),
    ("differentiable", None, {"residual_bound_quantile": 0.0, "residual_unison_gain": 0.0}),
    ("differentiable", None, {"residual": "none"}),
]


def phenicx_desks() -> sessions.Session:
    return phenicx_session(["violin1", "violin2", "violin3", "violin4", "viola1", "viola2"], "desks")


def rendered_desks() -> sessions.Session:
    return sessions.read_session(REPO / "benchmarks" / "audio" / "unison_desks")


def rendered_desks_louder() -> sessions.Session:
    """The rendered desks with viola_b 6 dB louder than its partner (a closer microphone, a
    stronger player): unison λ then differs by a factor of about 4 between the two directions."""
    session = rendered_desks()
    audio = session.audio.copy()
    audio[session.track_names.index("viola_b.flac")] *= 2.0
    return dataclasses.replace(session, audio=audio)


DESKS = {
    "phenicx": ("phenicx desks (6 tr, 1 s)", phenicx_desks,
                [("violin1", "violin2"), ("violin3", "violin4"), ("viola1", "viola2")]),
    "rendered": ("rendered desks (4 tr, 10 s)", rendered_desks, [("violin1_a", "violin1_b"), ("viola_a", "viola_b")]),
    "louder": ("rendered desks, viola_b +6 dB", rendered_desks_louder,
               [("violin1_a", "violin1_b"), ("viola_a", "viola_b")]),
}
"""``{key: (label, session loader, desk partners by file stem)}``."""


def is_default(method: str, preset: str | None, overrides: dict) -> bool:
    """Whether a row is what ``bleedjax reduce --method METHOD`` runs (or the differentiable
    model's inversion alone)."""
    if method == "differentiable":
        return overrides in ({}, {"residual": "none"})
    default = {"spectral-subtraction": spectral_subtraction_config, "kamir": kamir_config}[method].DEFAULT_PRESET
    return not overrides and preset == default


def first_seconds(session: sessions.Session, name: str, seconds: float) -> tuple[sessions.Session, str]:
    """The session cut to its first ``seconds`` (all of it when shorter), and ``name`` with the
    length it has."""
    session = dataclasses.replace(session, audio=session.audio[:, : round(seconds * session.sample_rate)])
    return session, f"{name}, first {session.audio.shape[-1] / session.sample_rate:g} s"


def label(method: str, preset: str | None, overrides: dict) -> str:
    return " ".join([method, preset or ""] + [f"{k}={v}" for k, v in overrides.items()]).replace("  ", " ").strip()


def partners(names: list[str], desks: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """Index pairs (both orders) of the desk partners among the session's tracks."""
    index = {pathlib.Path(n).stem: k for k, n in enumerate(names)}
    return [(index[a], index[b]) for a, b in desks] + [(index[b], index[a]) for a, b in desks]


def partner_correlations(session: sessions.Session, desks: list[tuple[str, str]]) -> dict[str, float]:
    """Pearson correlation of the stems' magnitude spectrograms (Hamming 4096 / 2048): every desk
    pair, and the largest between tracks of different desks."""
    spectrograms = np.abs(np.asarray(signal.stft(jnp.asarray(session.audio), n_fft=4096, hop=2048,
                                                 window_name="hamming"))).reshape(len(session.audio), -1)
    correlation = np.corrcoef(spectrograms)
    pairs = partners(session.track_names, desks)[: len(desks)]
    out = {f"{session.track_names[i]}/{session.track_names[j]}": float(correlation[i, j]) for i, j in pairs}
    across = [correlation[i, j] for i in range(len(correlation)) for j in range(i)
              if (i, j) not in pairs and (j, i) not in pairs]
    out["largest across desks"] = float(max(across))
    return out


def compare_methods(session: sessions.Session, desks: list[tuple[str, str]], seeds: int,
                    variants: list[tuple[str, str | None, dict]] = VARIANTS,
                    conditions: list[tuple[str, float | None]] = CONDITIONS) -> dict:
    """Every variant on one session of desks under each ``(bleed, dB)`` condition:
    ``{condition: {variant: {"sdr": [...], "sir": [...]}}}``."""
    figures, checked = {}, 0.0
    print(f"{'bleed':<8} {'method':<58} {'ΔSDR mean':>9} {'worst':>7} {'ΔSIR mean':>9} {'worst':>7}")
    for bleed, db in conditions:
        scores = {}
        for seed in range(seeds):
            mics, references, mixing = simulate(session, bleed, db, seed)
            for method, preset, overrides in variants:
                cleaned, matrix = clean_with(method, preset, mics, session.track_names, overrides,
                                             session.sample_rate)
                if seed == 0 and (method, preset, overrides) == ("spectral-subtraction", spectral_subtraction_config.DEFAULT_PRESET, {}):
                    found = " ".join(f"{matrix[i, j]:.3f}/{mixing[i, j]:.3f}" for i, j in partners(session.track_names, desks))
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


def named_pairs(seeds: int, desks: dict[str, sessions.Session]) -> dict:
    """``{piece: {condition: [[seed, name_i, name_j, λ_ij, λ_ji, min true gain, capped], ...]}}``:
    the pairs that the default's phase check fits (√(λ_ij λ_ji) ≥ ``phase_check_min_lambda``), whether it capped
    them (``bleedjax reduce`` then warns, :func:`bleedjax.reduce.capped_pairs`) or kept them."""
    pieces = load_pieces() | desks
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
    parser.add_argument("--desks", nargs="+", choices=list(DESKS), default=list(DESKS))
    parser.add_argument("--parts", nargs="+", choices=["methods", "warnings"], default=["methods", "warnings"])
    parser.add_argument("--methods", nargs="+", choices=sorted({v[0] for v in VARIANTS}),
                        default=sorted({v[0] for v in VARIANTS}), help="the methods whose rows to run")
    parser.add_argument("--kamir-variant", action="append", default=[],
                        help='"key=value ..." overrides of KAMIR\'s K4, one row each')
    parser.add_argument("--crosstalk-db", type=float, nargs="+",
                        help="linear bleed at these maximum crosstalks only (e.g. -24 -30: weak bleed), no room")
    parser.add_argument("--defaults", action="store_true",
                        help="each method's default row only, and the differentiable model's inversion alone")
    parser.add_argument("--seconds", type=float,
                        help="cut every session to its first SECONDS (default: whole; the PHENICX desks have 1 s)")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.seconds is not None and not args.seconds > 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    if args.crosstalk_db is not None and not all(db < 0 for db in args.crosstalk_db):
        parser.error(f"--crosstalk-db takes negative dB, got {args.crosstalk_db}")
    conditions = CONDITIONS if args.crosstalk_db is None else [("linear", db) for db in args.crosstalk_db]
    variants = [v for v in VARIANTS if v[0] in args.methods and (not args.defaults or is_default(*v))]
    variants += [("kamir", "K4", parse_variant("kamir", "K4", text)) for text in args.kamir_variant]
    if "phenicx" in args.desks and not PHENICX.is_dir():
        parser.error(f"{PHENICX} not found: --desks phenicx needs ../shared/data beside the repository")
    start, figures, sessions_by_name = time.perf_counter(), {}, {}
    for key in args.desks:
        name, load, desks = DESKS[key]
        session = load()
        if args.seconds is not None:
            session, name = first_seconds(session, name, args.seconds)
        sessions_by_name[name] = session
        correlations = partner_correlations(session, desks)
        print(f"{name}: magnitude correlation of the stems: " + ", ".join(f"{k} {v:.2f}" for k, v in correlations.items()))
        figures.setdefault("correlations", {})[name] = correlations
        if "methods" in args.parts:
            figures.setdefault("methods", {})[name] = compare_methods(session, desks, args.seeds, variants, conditions)
    if "warnings" in args.parts:
        figures["warnings"] = named_pairs(args.seeds, sessions_by_name)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
