"""Shared pieces of the quality benchmarks: the test material, the bleed conditions, scoring.

Pieces: the bundled Bach chorale (flute, oboe, horn, cello and a sparse timpani derived from the
bass line), a Mozart string quartet (two violins: similar instruments), and 1 s of real anechoic
orchestra recordings (PHENICX, six instruments). Conditions: Seipel's linear bleed at -6/-12/-18 dB
with free-field delays, and a shoebox room (RT60 0.4 s).
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np

from bleedjax import demo, evaluate, methods, reduce, sessions
from bleedjax.simulate_folder import simulate_arrays

REPO = pathlib.Path(__file__).resolve().parents[1]
PHENICX = REPO.parent / "shared" / "data" / "phenicx-anechoic-excerpt"
PHENICX_TRACKS = ["violin1", "viola1", "cello", "oboe1", "clarinet1", "horn1"]
CONDITIONS = [("linear", -6.0), ("linear", -12.0), ("linear", -18.0), ("room", None)]
METRICS = ("sdr", "sir", "sar")


def load_pieces() -> dict[str, sessions.Session]:
    pieces = {
        "bach-bwv80 (5 tr, timpani)": sessions.read_session(demo.bundled_stems()),
        "mozart-k458 (2 violins)": sessions.read_session(REPO / "benchmarks" / "audio" / "string_quartet"),
    }
    if PHENICX.is_dir():
        pieces["phenicx real (6 tr, 1 s)"] = phenicx_session(PHENICX_TRACKS, "subset")
    return pieces


def phenicx_session(tracks: list[str], name: str) -> sessions.Session:
    """A session of the given PHENICX tracks, symlinked into ``/tmp/bleedjax-phenicx-<name>``."""
    folder = pathlib.Path(f"/tmp/bleedjax-phenicx-{name}")
    folder.mkdir(exist_ok=True)
    for track in tracks:
        target = folder / f"{track}.wav"
        if not target.exists():
            target.symlink_to(PHENICX / f"{track}.wav")
    return sessions.read_session(folder)


def condition_name(bleed: str, db: float | None) -> str:
    return bleed if db is None else f"{db:g} dB"


def simulate(session: sessions.Session, bleed: str, db: float | None, seed: int):
    """Microphones, references and the true mixing matrix of one condition."""
    mics, references, truth = simulate_arrays(
        session.audio, sample_rate=session.sample_rate, bleed=bleed,
        max_crosstalk_db=-12.0 if db is None else db, seed=seed,
    )
    return mics, references, np.asarray(truth["matrix"])


def clean_with(method: str, preset: str | None, mics: np.ndarray, names: list[str], overrides: dict | None = None,
               sample_rate: int | None = None):
    """``(cleaned (tracks, samples), (tracks, sources) bleed matrix)`` of a registered method on
    one session, with its ``preset`` (``None``: the default) and config ``overrides``; methods that
    take the ``sample_rate`` get it (``None``: spectral subtraction's phase check fits the whole
    session, KAMIR's does not run)."""
    chosen = methods.get_method(method)
    config = chosen.default_config(preset)
    config.update(overrides or {})
    rate = {"sample_rate": sample_rate} if chosen.uses_sample_rate else {}
    result = chosen.run_session(mics, config, names, **rate)
    return np.asarray(result.cleaned[0]), np.asarray(result.matrices[0])


def parse_variant(method: str, preset: str | None, text: str) -> dict:
    """Config overrides from ``"key=value key=value"`` (as ``bleedjax reduce --set`` reads them),
    checked against the method's config: ``{key: value}``."""
    base = methods.get_method(method).default_config(preset)
    changed = reduce.apply_overrides(base, text.split())
    return {key: changed[key] for key in (item.partition("=")[0] for item in text.split())}


def score_gains(references, mics, cleaned) -> dict[str, np.ndarray]:
    """Per-track gain (output minus unprocessed microphone) of SDR/SIR/SAR, bleedjax's BSS Eval."""
    before = evaluate.score(references, mics)
    after = evaluate.score(references, np.asarray(cleaned))
    return {m: after[m] - before[m] for m in METRICS}


def cross_check(references, estimates) -> float:
    """Largest |bleedjax - mir_eval| over SDR/SIR/SAR of every track, in dB."""
    import mir_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = mir_eval.separation.bss_eval_sources(
            np.asarray(references, np.float64), np.asarray(estimates, np.float64), compute_permutation=False
        )
    ours = evaluate.score(references, estimates)
    return float(max(np.nanmax(np.abs(ours[m] - t)) for m, t in zip(METRICS, theirs[:3])))


def off_diagonal_correlation(estimated: np.ndarray, mixing: np.ndarray) -> float:
    """Pearson correlation of the off-diagonal entries of an amplitude bleed matrix with A's."""
    off = ~np.eye(len(mixing), dtype=bool)
    return float(np.corrcoef(np.asarray(estimated)[off], mixing[off])[0, 1])
