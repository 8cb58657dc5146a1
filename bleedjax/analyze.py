"""Bleed analysis of a session before cleaning: which tracks leak into which, how loud, how late.

For every ordered pair (microphone ``i``, leaking track ``j``) the estimated bleed level
``20 log10 g_ij`` in dB (the level of source ``j`` at microphone ``i`` relative to its own
microphone), and with the differentiable model (:mod:`bleedjax.bleed_fit`) its delay in ms and
the extra path length in metres (343 m/s). Per track a **bleed score**, the estimated
bleed-to-track energy ratio

    score_i = 10 log10( Σ_{j≠i} g_ij² E_j / E_i ),    E = energy of each microphone track,

and a flag where it exceeds a threshold. Other methods (spectral subtraction, KAMIR) give levels
from their amplitude matrices and no delays. Results go to a table, a JSON file and a heatmap.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from bleedjax import methods, sessions, streaming
from bleedjax.simulation import SPEED_OF_SOUND

DEFAULT_THRESHOLD_DB = -20.0
MIN_SECONDS_FOR_DELAYS = 2.0
"""Below this length the fitted delays are unreliable. On the Bach chorale and the Mozart quartet
with delayed linear bleed (``benchmarks/quality_differentiable.py --seconds S``, 2 seeds) the mean
delay error is 0.36–1.16 ms with 1 s and 0.34–0.62 ms with 1.5 s of audio, and 0.002–0.008 ms (worst
pair 0.05 ms) from 2 s on: too few frames to tell a bleed's delay from its source's pitch period."""


DEFAULT_MAX_SECONDS = 60.0
"""``analyze`` fits on at most this much audio. The microphones stand still during a session, so
its bleed does too, and a minute is 30 times what the delays need (:data:`MIN_SECONDS_FOR_DELAYS`);
a longer session is analysed on its :func:`bleedjax.streaming.busiest_excerpt`. This bounds time
and memory: the differentiable model's fit takes 6.5 s and 1.5 GiB for 4 tracks × 60 s, and grows
with the length."""


def short_recording_warnings(seconds: float, advice: str) -> list[str]:
    """The caveat on delays fitted from ``seconds`` of audio (none from
    :data:`MIN_SECONDS_FOR_DELAYS` on), ending with ``advice``; ``analyze`` and ``reduce`` print it."""
    if seconds >= MIN_SECONDS_FOR_DELAYS:
        return []
    text = (
        f"only {seconds:.2f} s of audio: delays fitted from less than {MIN_SECONDS_FOR_DELAYS:g} s are "
        f"unreliable (errors of ms, whole pitch periods); {advice}"
    )
    return [text]


@dataclasses.dataclass(frozen=True)
class Analysis:
    """What :func:`analyze_session` found (``delays_ms``/``distances_m`` are ``None`` for
    methods without delays, and ``nan`` for pairs without bleed, whose level is ``-inf``: a gain
    of 0 has no delay; silent tracks have a ``nan`` score and are not flagged)."""

    session: str
    method: str
    tracks: list[str]
    sample_rate: int
    gains: np.ndarray
    levels_db: np.ndarray
    delays_ms: np.ndarray | None
    distances_m: np.ndarray | None
    scores_db: np.ndarray
    threshold_db: float
    seconds: float = math.inf
    start_seconds: float = 0.0
    session_seconds: float | None = None
    """The analysed excerpt: ``seconds`` from ``start_seconds`` of a session of
    ``session_seconds`` (``None``: the whole session was analysed)."""
    one_source: tuple[tuple[str, str], ...] = ()
    """Pairs of tracks taken for microphones of one source (:func:`bleedjax.same_source.detect`),
    which ``reduce`` does not clean against each other."""

    @property
    def warnings(self) -> list[str]:
        """Caveats on the numbers: delays fitted from too short a recording, and microphones of one
        source, whose levels are not bleed."""
        notes = [f"{first} and {second}: taken for two microphones of one source (one about as near the other's "
                 "source as that source's own microphone); their levels are not bleed, and reduce does not clean "
                 "them against each other"
                 for first, second in self.one_source]
        if self.delays_ms is None:
            return notes
        return short_recording_warnings(self.seconds, "analyze a longer excerpt") + notes

    @property
    def flagged(self) -> list[str]:
        """Tracks whose bleed score exceeds the threshold."""
        return [t for t, s in zip(self.tracks, self.scores_db) if np.isfinite(s) and s > self.threshold_db]

    def to_json(self) -> dict:
        """A JSON-safe dict (``null`` for ``-inf`` levels of absent bleed, their delays and
        distances, and ``nan`` scores)."""

        def clean(array):
            if array is None:
                return None
            return [[_number(v) for v in row] for row in np.asarray(array, float)]

        return {
            "session": self.session,
            "method": self.method,
            "tracks": self.tracks,
            "sample_rate": self.sample_rate,
            "speed_of_sound_m_s": SPEED_OF_SOUND,
            "threshold_db": self.threshold_db,
            "levels_db": clean(self.levels_db),
            "delays_ms": clean(self.delays_ms),
            "distances_m": clean(self.distances_m),
            "gains": clean(self.gains),
            "scores_db": {t: _number(s) for t, s in zip(self.tracks, self.scores_db)},
            "flagged": self.flagged,
            "one_source": [list(pair) for pair in self.one_source],
            "seconds": _number(self.seconds),
            "start_seconds": _number(self.start_seconds),
            "session_seconds": None if self.session_seconds is None else _number(self.session_seconds),
            "warnings": self.warnings,
        }


def _number(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def estimate(
    audio: np.ndarray, *, method: str, config: ml_collections.ConfigDict, track_names: list[str], sample_rate: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Amplitude bleed matrix ``(I, J)`` (off-diagonal), delays in samples (or ``None``), and the
    ``(I, I)`` booleans of microphones taken for one source (or ``None``: not looked for).

    The differentiable model is only fitted (no cleaning); other methods run as registered.
    """
    chosen = methods.get_method(method)
    if method == "differentiable":
        from bleedjax.methods import differentiable

        settings = methods._mapped_settings(differentiable.Settings, track_names, config)
        audio = jnp.asarray(audio, jnp.float32)
        params = jax.device_get(differentiable.fit_session(audio, settings).params)
        gains, delays = np.asarray(params.gains), np.asarray(params.delays)
        detection = methods._detection(config)
        if detection is None:
            return gains, delays, None
        table, _ = differentiable.one_source_table(audio, settings, sample_rate, detection, first=(gains, delays))
        apart = np.eye(len(gains), dtype=bool)
        return gains, delays, (np.asarray(table) & ~apart) if table else np.zeros_like(apart)
    if chosen.min_tracks < 2:
        raise ValueError(f"analyze measures bleed between tracks; --method {method} removes interference within one")
    rate = {"sample_rate": sample_rate} if chosen.uses_sample_rate else {}
    output = chosen.run_session(audio, config, track_names, **rate)
    if output.sources is not None and list(output.sources) != list(track_names):
        raise ValueError(f"analyze needs one source per track; the {method} channel map changes the sources")
    return np.asarray(output.matrices[0]), None, None if output.one_source is None else output.one_source[0]


def bleed_scores(gains: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """``10 log10(Σ_{j≠i} g_ij² E_j / E_i)`` per track (``nan`` for silent tracks)."""
    off = 1.0 - np.eye(len(energies))
    bleed = (np.asarray(gains, np.float64) ** 2 * off) @ energies
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(energies > 0, 10.0 * np.log10(bleed / np.where(energies > 0, energies, 1.0)), np.nan)


def analyze_session(
    folder: str | os.PathLike,
    *,
    method: str = "differentiable",
    config: ml_collections.ConfigDict | None = None,
    threshold_db: float = DEFAULT_THRESHOLD_DB,
    pad: bool = False,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    leave_out: Sequence[str] = (),
) -> Analysis:
    """Estimates the bleed between every pair of tracks of one session folder, on at most
    ``max_seconds`` of it (its :func:`bleedjax.streaming.busiest_excerpt`; ``None`` or ``0``: the whole session).
    ``leave_out``: file names of the folder left out of the analysis (``--keep``: room, overhead
    or audience microphones, which hear every source by design).

    Raises:
        SessionError: bad session (as for ``reduce``: fewer than 2 tracks, differing sample
            rates or lengths, unreadable files, NaN/inf samples).
    """
    if max_seconds is not None and not max_seconds >= 0:
        raise ValueError(f"max_seconds must be >= 0 (0: the whole session), got {max_seconds}")
    if not np.isfinite(threshold_db):
        raise ValueError(f"threshold_db must be a finite level in dB, got {threshold_db}")
    chosen = methods.get_method(method)
    config = chosen.default_config(None) if config is None else config
    reader = streaming.SessionReader(folder, pad=pad, leave_out=leave_out)
    rate = reader.sample_rate
    start, samples = streaming.busiest_seconds(reader, max_seconds) if max_seconds else (0, reader.length)
    audio = reader.read(start, start + samples)
    lengths = np.clip(reader.track_lengths - start, 0, samples)
    audio = sessions.shift_tracks(audio, -sessions.track_offsets(audio, lengths), lengths)
    gains, delays, one_source = estimate(audio, method=method, config=config, track_names=reader.track_names,
                                         sample_rate=rate)
    gains = np.where(np.eye(len(gains), dtype=bool), 0.0, gains)
    energies = np.sum(np.asarray(audio, np.float64) ** 2, axis=-1)
    with np.errstate(divide="ignore"):
        levels = np.where(np.eye(len(gains), dtype=bool), np.nan, 20.0 * np.log10(gains))
    delays_ms = distances = None
    if delays is not None:
        seconds = np.where(np.eye(len(gains), dtype=bool) | (gains <= 0), np.nan, delays / rate)
        delays_ms, distances = seconds * 1e3, seconds * SPEED_OF_SOUND
    return Analysis(
        str(reader.folder), method, reader.track_names, rate, gains, levels,
        delays_ms, distances, bleed_scores(gains, energies), float(threshold_db),
        samples / rate, start / rate, None if samples == reader.length else reader.length / rate,
        () if one_source is None else tuple((reader.track_names[i], reader.track_names[k])
                                            for i, k in np.argwhere(np.triu(one_source, 1))),
    )


def format_report(analysis: Analysis) -> str:
    """A plain-text table: one row per microphone, ``level dB / delay ms`` per leaking track."""
    names = analysis.tracks
    width = max(12, *(len(n) for n in names))
    corner = "mic \\ leaking"
    lines = [f"{corner:<{width}} " + " ".join(f"{n[:16]:>16}" for n in names) + f" {'score dB':>9}  flag"]
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            if i == j:
                cells.append(f"{'—':>16}")
                continue
            level = analysis.levels_db[i, j]
            text = "none" if not np.isfinite(level) else f"{level:.1f} dB"
            if analysis.delays_ms is not None and np.isfinite(analysis.delays_ms[i, j]):
                text += f" {analysis.delays_ms[i, j]:.2f} ms"
            cells.append(f"{text:>16}")
        score = analysis.scores_db[i]
        flag = "BLEED" if name in analysis.flagged else ("silent" if not np.isfinite(score) else "")
        score_text = f"{score:9.1f}" if np.isfinite(score) else f"{'—':>9}"
        lines.append(f"{name:<{width}} " + " ".join(cells) + f" {score_text}  {flag}")
    lines.append(f"flagged above {analysis.threshold_db:g} dB: {', '.join(analysis.flagged) or 'none'}")
    if analysis.session_seconds is not None:
        lines.append(f"analysed {analysis.seconds:.1f} s from {_clock(analysis.start_seconds)} of "
                     f"{_clock(analysis.session_seconds)}, where every track plays most (--max-seconds)")
    lines.extend(f"warning: {text}" for text in analysis.warnings)
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def plot_analysis(path: str | os.PathLike, analysis: Analysis) -> pathlib.Path:
    """Writes a PNG: the bleed-level heatmap (dB, with delays) and the per-track scores."""
    path = pathlib.Path(path)
    names = analysis.tracks
    figure = Figure(figsize=(6 + 0.9 * len(names), 4 + 0.5 * len(names)), layout="constrained")
    grid = figure.add_gridspec(1, 2, width_ratios=[3, 2])
    axis = figure.add_subplot(grid[0, 0])
    levels = np.where(np.isfinite(analysis.levels_db), analysis.levels_db, np.nan)
    floor = -60.0
    image = axis.imshow(np.clip(levels, floor, 0.0), cmap="magma", vmin=floor, vmax=0.0)
    for (i, j), value in np.ndenumerate(levels):
        if i == j:
            continue
        text = "−∞" if not np.isfinite(value) else f"{value:.0f}"
        if analysis.delays_ms is not None and np.isfinite(analysis.delays_ms[i, j]):
            text += f"\n{analysis.delays_ms[i, j]:.1f} ms"
        axis.text(j, i, text, ha="center", va="center", fontsize=7,
                  color="white" if np.isfinite(value) and value < -30 else "black")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xlabel("leaking track j")
    axis.set_ylabel("microphone i")
    axis.set_title(f"bleed level ({analysis.method})")
    figure.colorbar(image, ax=axis, shrink=0.8, label="dB relative to the track's own microphone")
    bars = figure.add_subplot(grid[0, 1])
    scores = np.where(np.isfinite(analysis.scores_db), analysis.scores_db, floor)
    colours = ["tab:red" if n in analysis.flagged else "tab:blue" for n in names]
    bars.barh(range(len(names)), scores - floor, left=floor, color=colours)
    bars.axvline(analysis.threshold_db, color="k", ls="--", lw=0.8, label=f"threshold {analysis.threshold_db:g} dB")
    bars.set_yticks(range(len(names)), names, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("bleed score (dB, bleed / track energy)")
    bars.legend(fontsize=7, loc="lower right")
    bars.set_title("per-track bleed")
    path.parent.mkdir(parents=True, exist_ok=True)
    with sessions._atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    return path


def check_outputs(paths: list[str | os.PathLike | None], *, folder: str | os.PathLike, overwrite: bool) -> None:
    """Refuses report files that exist (without ``overwrite``), lie inside the session folder, are
    folders, lie in a folder that cannot be written, or are one path given twice (the second would
    replace the first)."""
    chosen = [pathlib.Path(p) for p in paths if p]
    resolved = [p.resolve() for p in chosen]
    for path, where in zip(chosen, resolved):
        if resolved.count(where) > 1:
            raise sessions.SessionError(f"{path}: given for two reports")
        if path.is_dir():
            raise sessions.SessionError(f"{path}: is a folder, not a report file")
    for path in chosen:
        if pathlib.Path(folder).resolve() in path.resolve().parents:
            raise sessions.SessionError(f"{path}: report file is inside the session folder {folder}")
    sessions.check_writable(chosen)
    if not overwrite:
        sessions.refuse_overwrite(chosen)
