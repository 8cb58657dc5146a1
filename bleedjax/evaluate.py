"""Scoring cleaned tracks against references with BSS Eval, from arrays or from folders."""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from bleedjax import metrics, sessions

FRAMEWISE_SECONDS = 1.0


def score(
    references: np.ndarray,
    estimates: np.ndarray,
    *,
    framewise: bool = False,
    sample_rate: int | None = None,
) -> dict[str, np.ndarray]:
    """SDR/SIR/SAR per track, ``(J,)`` each in dB (NaN where undefined).

    Whole-signal BSS Eval v3 ``sources`` mode by default, as
    ``mir_eval.separation.bss_eval_sources`` without permutation. With ``framewise``, museval's v4
    images mode on 1 s windows, summarised per track by the median over frames (SiSEC 2018),
    which adds ISR.
    """
    references = jnp.asarray(references, jnp.float32)
    estimates = jnp.asarray(estimates, jnp.float32)
    if not framewise:
        result = metrics.bss_eval_sources(references, estimates)
        return {name: np.asarray(value) for name, value in result._asdict().items()}
    if sample_rate is None:
        raise ValueError("framewise scoring needs the sample rate")
    window = round(FRAMEWISE_SECONDS * sample_rate)
    result = metrics.bss_eval_images_framewise(
        references[..., None], estimates[..., None], window=window, hop=window
    )
    return {
        name: np.asarray(metrics.nan_aggregate(value, axis=-1, how="median"))
        for name, value in result._asdict().items()
    }


def _finite_or_none(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 4)


def report(names: Sequence[str], scores: dict[str, np.ndarray]) -> dict:
    """``{"tracks": {name: {metric: dB}}, "mean": {metric: dB}}``; NaN becomes null and is
    left out of the means."""
    tracks = {
        name: {metric: _finite_or_none(values[i]) for metric, values in scores.items()}
        for i, name in enumerate(names)
    }
    mean = {
        metric: _finite_or_none(metrics.nan_aggregate(jnp.asarray(values), how="mean"))
        for metric, values in scores.items()
    }
    return {"tracks": tracks, "mean": mean}


def format_table(rows: dict[str, dict[str, float | None]], columns: Sequence[str]) -> str:
    """A plain text table, one row per track."""
    width = max([len("track")] + [len(name) for name in rows])
    lines = [f"{'track':<{width}}  " + "  ".join(f"{c:>8}" for c in columns)]
    for name, values in rows.items():
        cells = ["     nan" if values.get(c) is None else f"{values[c]:8.2f}" for c in columns]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def evaluate_folders(
    references: str | os.PathLike, estimates: str | os.PathLike, *, framewise: bool = False
) -> dict:
    """Matches files by name and scores every reference track against its estimate.

    Raises:
        SessionError: a reference without an estimate, layouts that do not match, or a silent
            estimate of a reference that is not silent.
    """
    reference_session = sessions.read_session(references, min_tracks=1)
    estimate_dir = pathlib.Path(estimates)
    matched = []
    for track in reference_session.files:
        candidate = estimate_dir / track.name
        if not candidate.is_file():
            raise sessions.SessionError(f"{candidate}: no estimate for reference {track.path}")
        data, rate, info = sessions.read_audio(candidate)
        if rate != reference_session.sample_rate:
            raise sessions.SessionError(
                f"{candidate}: sample rate {rate} Hz differs from the reference's "
                f"{reference_session.sample_rate} Hz"
            )
        if info.channels != track.channels or info.frames != track.frames:
            raise sessions.SessionError(
                f"{candidate}: {info.channels} channel(s) × {info.frames} samples, the reference "
                f"has {track.channels} × {track.frames}"
            )
        matched.append(data)
    estimate_audio = np.concatenate(matched)
    reference_audio = reference_session.audio
    for name, estimate, reference in zip(reference_session.track_names, estimate_audio, reference_audio):
        if not np.any(estimate) and np.any(reference):
            # BSS Eval is 0/0 there; a NaN would leave the track out of the means and reward
            # a method that mutes it.
            raise sessions.SessionError(f"{estimate_dir / name}: the estimate is silent where the reference is not")
    scores = score(
        reference_audio, estimate_audio, framewise=framewise, sample_rate=reference_session.sample_rate
    )
    return report(reference_session.track_names, scores)
