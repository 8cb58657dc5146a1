"""Figures: bleed matrices as heatmaps and spectrograms before and after.

Uses matplotlib's object API (``Figure`` without pyplot), so it never changes the caller's backend
(a notebook keeps its inline plots) and needs no display.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from bleedjax import signal


def _heatmap(axis, matrix: np.ndarray, names: Sequence[str], title: str, vmax: float):
    image = axis.imshow(matrix, cmap="magma", vmin=0.0, vmax=vmax)
    axis.set_title(title)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xlabel("leaking track j")
    axis.set_ylabel("microphone i")
    for (i, j), value in np.ndenumerate(matrix):
        axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                  color="white" if value < 0.6 * vmax else "black")
    return image


def _spectrogram_db(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    magnitude = np.abs(np.asarray(signal.stft(audio, n_fft=n_fft, hop=hop)))
    return 20 * np.log10(np.maximum(magnitude, 1e-6))


def plot_bleed_report(
    path: str | pathlib.Path,
    *,
    names: Sequence[str],
    true_matrix: np.ndarray,
    estimated_matrix: np.ndarray,
    track: int,
    before: np.ndarray,
    after: np.ndarray,
    reference: np.ndarray,
    sample_rate: int,
    n_fft: int = 2048,
    hop: int = 512,
) -> pathlib.Path:
    """Writes one PNG: true vs estimated bleed matrix, and one track's spectrograms.

    Args:
        path: PNG file to write.
        names: ``J`` track names.
        true_matrix: ``(J, J)`` true bleed (off-diagonal part of the mixing matrix).
        estimated_matrix: ``(J, J)`` estimated λ.
        track: which track's spectrograms to show.
        before, after, reference: ``(samples,)`` that track with bleed, cleaned, and clean.
        sample_rate: in Hz, for the axes.
    """
    path = pathlib.Path(path)
    figure = Figure(figsize=(15, 9), layout="constrained")
    grid = figure.add_gridspec(2, 3)
    vmax = float(max(np.max(true_matrix), np.max(estimated_matrix), 1e-3))
    _heatmap(figure.add_subplot(grid[0, 0]), true_matrix, names, "true bleed (A − I)", vmax)
    image = _heatmap(figure.add_subplot(grid[0, 1]), estimated_matrix, names, "estimated λ", vmax)
    figure.colorbar(image, ax=figure.axes[:2], shrink=0.8, label="amplitude ratio")
    scatter = figure.add_subplot(grid[0, 2])
    off = ~np.eye(len(names), dtype=bool)
    scatter.scatter(true_matrix[off], estimated_matrix[off], s=14)
    scatter.plot([0, vmax], [0, vmax], "k--", lw=0.8)
    scatter.set_xlabel("true")
    scatter.set_ylabel("estimated")
    scatter.set_title("off-diagonal entries")
    spectra = [(before, "with bleed"), (after, "cleaned"), (reference, "reference (no bleed)")]
    duration = before.shape[-1] / sample_rate
    top = sample_rate / 2000
    for column, (audio, label) in enumerate(spectra):
        axis = figure.add_subplot(grid[1, column])
        db = _spectrogram_db(np.asarray(audio, np.float32), n_fft, hop)
        peak = db.max()
        axis.imshow(db, origin="lower", aspect="auto", cmap="viridis", vmin=peak - 80, vmax=peak,
                    extent=(0, duration, 0, top))
        axis.set_ylim(0, min(top, 8.0))
        axis.set_title(f"{names[track]}: {label}")
        axis.set_xlabel("time (s)")
        axis.set_ylabel("frequency (kHz)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def plot_training_example(
    path: str | pathlib.Path,
    *,
    mics: np.ndarray,
    targets: np.ndarray,
    matrix: np.ndarray,
    active: np.ndarray,
    sample_rate: int,
    title: str = "",
    n_fft: int = 1024,
    hop: int = 256,
) -> pathlib.Path:
    """Writes one PNG of a training example: its bleed matrix, and every track's microphone and
    target spectrograms.

    Args:
        path: PNG file to write.
        mics, targets: ``(J, samples)`` microphone tracks and clean targets.
        matrix: ``(J, J)`` true bleed matrix.
        active: ``(J,)`` active tracks (inactive ones are labelled so).
        sample_rate: in Hz, for the axes.
    """
    path = pathlib.Path(path)
    num_tracks = mics.shape[0]
    names = [f"track {j}" + ("" if active[j] else " (off)") for j in range(num_tracks)]
    figure = Figure(figsize=(4 + 3.2 * num_tracks, 6.5), layout="constrained")
    grid = figure.add_gridspec(2, num_tracks + 1)
    image = _heatmap(figure.add_subplot(grid[:, 0]), matrix, names, "true bleed matrix",
                     float(max(np.max(matrix), 1e-3)))
    figure.colorbar(image, ax=figure.axes[0], shrink=0.6, label="amplitude")
    duration = mics.shape[-1] / sample_rate
    top = sample_rate / 2000
    peak = max(_spectrogram_db(np.asarray(mics, np.float32), n_fft, hop).max(), -100.0)
    for row, (audio, label) in enumerate(((mics, "microphone"), (targets, "target"))):
        db = _spectrogram_db(np.asarray(audio, np.float32), n_fft, hop)
        for j in range(num_tracks):
            axis = figure.add_subplot(grid[row, j + 1])
            axis.imshow(db[j], origin="lower", aspect="auto", cmap="viridis", vmin=peak - 80,
                        vmax=peak, extent=(0, duration, 0, top))
            axis.set_title(f"{names[j]}: {label}", fontsize=9)
            axis.set_xlabel("time (s)")
            axis.set_ylabel("frequency (kHz)")
    if title:
        figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
