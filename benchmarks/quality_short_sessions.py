"""The differentiable model's residual stage on short excerpts: its default against its guards.

On sessions shorter than ``residual_significance_min_frames`` STFT frames (86: 2 s at 44.1 kHz,
4 s at 22.05 kHz) the fitted delays are often wrong and the fit's significance does not apply, so
the residual magnitude stage has two other guards (:func:`bleedjax.methods.differentiable.short_session_weights`):
the ratio floor (``residual_bound_quantile``) and the unison guard (``residual_unison_gain``).
Rows, each as ``bleedjax reduce --method differentiable`` runs it (its config, with
``--set`` overrides):

* ``differentiable``: the default;
* ``residual_bound_quantile=0.0 residual_unison_gain=0.0``: without either (the default until
  2026-12-07, late);
* ``residual_unison_coherence=2.0 residual_floor_coherence=2.0``: both guards without their
  exceptions for pairs coherent both ways (a393f2b's default), and the floor without its exception;
* each guard alone, and ``residual=none`` (the inversion alone).

Sessions (``--part short``): the desks of ``benchmarks/quality_unison.py`` (PHENICX, 1 s; the
rendered desks cut to 1, 2 and 3 s) with its linear −6/−12/−18 dB bleed and room, and the pieces
of ``benchmarks/_quality.py`` cut to 1 and 2 s with ``benchmarks/quality_differentiable.py``'s
delayed bleed (1–10 ms at −6/−12/−18 dB) and rooms (RT60 0.2/0.4/0.6 s). ``--part long``: the
rendered desks (10 s, also with viola_b 6 dB louder) and the pieces cut to 15 s, default against
the guards off, where the two must be equal. ΔSDR mean / worst track (and ΔSIR mean) over
``--seeds`` seeds, bleedjax's BSS Eval.

    .venv/bin/python benchmarks/quality_short_sessions.py [--part short|long] [--seeds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import quality_differentiable as qd
import quality_unison as qu
from _common import write_json
from _quality import clean_with, load_pieces, score_gains

GUARDS_OFF = {"residual_bound_quantile": 0.0, "residual_unison_gain": 0.0}
VARIANTS = [
    ("differentiable", None, {}),
    ("differentiable", None, GUARDS_OFF),
    ("differentiable", None, {"residual_unison_coherence": 2.0, "residual_floor_coherence": 2.0}),
    ("differentiable", None, {"residual_floor_coherence": 2.0}),
    ("differentiable", None, {"residual_unison_gain": 0.0}),
    ("differentiable", None, {"residual_bound_quantile": 0.0}),
    ("differentiable", None, {"residual": "none"}),
]
CONDITIONS = ["delayed-6", "delayed-12", "delayed-18", "room-0.2", "room-0.4", "room-0.6"]
PARTS = {
    "short": ([("phenicx", None), ("rendered", 1.0), ("rendered", 2.0), ("rendered", 3.0)],
              {"mozart": [1.0, 2.0], "phenicx": [1.0], "bach": [1.0, 2.0]}, VARIANTS),
    "long": ([("rendered", None), ("louder", None)], {"mozart": [15.0], "bach": [15.0]}, VARIANTS[:2]),
}


def pieces(cases: dict, seeds: int, variants: list) -> dict:
    """``{"piece Ns": {condition: {variant: {"sdr": [...], "sir": [...]}}}}`` of the pieces cut to N s."""
    figures = {}
    for piece, session in load_pieces().items():
        rate = session.sample_rate
        for seconds in next((v for k, v in cases.items() if piece.startswith(k)), []):
            sources = session.audio[:, : int(seconds * rate)]
            for condition in CONDITIONS:
                kind, value = condition.split("-", 1)
                scores = {}
                for seed in range(seeds):
                    simulate = qd.delayed if kind == "delayed" else qd.in_room
                    mics, references, *_ = simulate(sources, -float(value) if kind == "delayed" else float(value), seed, rate)
                    names = [f"track{k}" for k in range(len(mics))]
                    for method, preset, overrides in variants:
                        cleaned, _ = clean_with(method, preset, mics, names, overrides, rate)
                        scores.setdefault(qu.label(method, preset, overrides), []).append(
                            score_gains(references, mics, cleaned))
                for name, runs in scores.items():
                    sdr, sir = (np.concatenate([r[m] for r in runs]) for m in ("sdr", "sir"))
                    key = f"{piece}, first {sources.shape[-1] / rate:g} s"
                    figures.setdefault(key, {}).setdefault(condition, {})[name] = {"sdr": sdr.tolist(), "sir": sir.tolist()}
                    print(f"{key:<42} {condition:<11} {name:<72} {sdr.mean():7.2f} {sdr.min():7.2f} {sir.mean():7.2f}",
                          flush=True)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=list(PARTS), default="short")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    desks, cases, variants = PARTS[args.part]
    if not qu.PHENICX.is_dir():
        parser.error(f"{qu.PHENICX} not found: the PHENICX sessions need ../shared/data beside the repository")
    start, figures = time.perf_counter(), {}
    for key, seconds in desks:
        name, load, pairs = qu.DESKS[key]
        session = load()
        if seconds is not None:
            session, name = qu.first_seconds(session, name, seconds)
        print(f"== {name}")
        figures[name] = qu.compare_methods(session, pairs, args.seeds, variants)
    figures |= pieces(cases, args.seeds, variants)
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
