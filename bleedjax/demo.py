"""The demo: simulate bleed on the bundled stems, remove it, score it, write audio and a picture."""

from __future__ import annotations

import importlib.resources
import pathlib

import numpy as np

from bleedjax import evaluate, methods, plotting, reduce, sessions, simulate_folder

MARKER = ".bleedjax-demo"
METRICS = ("sdr", "sir", "sar")


def bundled_stems() -> pathlib.Path:
    """The folder of bundled example stems (one FLAC per instrument)."""
    return pathlib.Path(str(importlib.resources.files("bleedjax") / "assets" / "demo"))


def _prepare(out: pathlib.Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise sessions.SessionError(
            f"{out}: exists and was not written by the demo; choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()


def run_demo(
    out: str | pathlib.Path = "demo_out",
    *,
    method: str = "spectral-subtraction",
    max_crosstalk_db: float = -12.0,
    seed: int = 0,
    stems: str | pathlib.Path | None = None,
    progress: bool | None = None,
    echo=print,
) -> dict:
    """Runs the whole job and returns the before/after scores and matrices.

    Writes ``out/simulated/{session,references,truth.json}``, ``out/cleaned/`` (audio and
    ``bleed.json``), ``out/scores.json`` and ``out/demo.png``, and prints (and keeps in
    ``scores.json``) the notes that ``bleedjax reduce`` would print, e.g. the pairs whose λ the
    phase check capped. ``out`` may only be a new folder
    or one the demo wrote before (it is then refreshed).
    """
    out = pathlib.Path(out)
    stems = bundled_stems() if stems is None else pathlib.Path(stems)
    _prepare(out)
    simulated = out / "simulated"
    truth = simulate_folder.simulate_folder(
        stems, simulated, bleed="linear", max_crosstalk_db=max_crosstalk_db, seed=seed,
        overwrite=True,
    )
    echo(f"simulated {len(truth['tracks'])} tracks with up to {max_crosstalk_db:g} dB bleed "
         f"-> {simulated}")
    config = methods.get_method(method).default_config(None)
    [result] = reduce.reduce_folders(
        [simulated / "session"], out / "cleaned", method=method, config=config,
        overwrite=True, progress=progress,
    )
    mics = sessions.read_session(simulated / "session")
    references = sessions.read_session(simulated / "references")
    before = evaluate.score(references.audio, mics.audio)
    after = evaluate.score(references.audio, result.cleaned)
    names = mics.track_names
    rows = {}
    for i, name in enumerate(names):
        rows[name] = {}
        for metric in METRICS:
            b, a = float(before[metric][i]), float(after[metric][i])
            rows[name] |= {f"{metric} in": b, f"{metric} out": a, f"Δ{metric}": a - b}
    columns = [c for m in METRICS for c in (f"{m} in", f"{m} out", f"Δ{m}")]
    rows["mean"] = {c: float(np.nanmean([rows[n][c] for n in names])) for c in columns}
    rows["worst"] = {c: float(np.nanmin([rows[n][c] for n in names])) for c in columns}
    rows = {n: {c: (None if np.isnan(v) else v) for c, v in r.items()} for n, r in rows.items()}
    echo(f"\n{method}: BSS Eval v3 (dB) before (in) and after (out) bleed removal")
    echo(evaluate.format_table(rows, columns))
    notes = reduce.warnings(result, method, config)
    for note in notes:
        echo(f"note: {note}")

    true_bleed = np.asarray(truth["matrix"]) - np.eye(len(names))
    worst = int(np.argmax(np.sum(true_bleed, axis=1)))
    picture = plotting.plot_bleed_report(
        out / "demo.png", names=names, true_matrix=true_bleed, estimated_matrix=result.matrix,
        track=worst, before=mics.audio[worst], after=result.cleaned[worst],
        reference=references.audio[worst], sample_rate=mics.sample_rate,
    )
    summary = {
        "method": method,
        "max_crosstalk_db": max_crosstalk_db,
        "seed": seed,
        "tracks": names,
        "rows": rows,
        "true_matrix": truth["matrix"],
        "estimated_lambda": np.asarray(result.matrix).round(6).tolist(),
        "notes": notes,
    }
    if result.checked is not None:
        summary["lambda_before_phase_check"] = np.asarray(result.checked).round(6).tolist()
    sessions.write_json_atomic(out / "scores.json", summary)
    echo(f"\ncleaned audio -> {result.out_dir}\npicture -> {picture}")
    return summary
