"""What cleaning took out of each track: the input less the cleaned output, as audio files.

An engineer checks a bleed remover by listening to what it removed: the neighbours' bleed alone
is right, the track's own instrument in it is damage. :func:`write_removed` reads a session's
input files and its cleaned files block by block (memory bounded by the block, for a recording
of any length), writes ``input − cleaned`` in the session's layout (names, channels, format,
subtype, each file's own length) and measures how loud it is against the input. It reads the
cleaned files back as they were written, so a removed file plus its cleaned file gives the input
up to the removed file's own quantisation, as a null test in a DAW would.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from bleedjax import streaming

FOLDER = "removed"
"""The removed tracks go to ``<output>/removed/`` under the input files' names."""

BLOCK_SAMPLES = 1 << 18
"""Samples of every track read and written at a time (16 tracks: about 0.1 GiB of blocks)."""


@dataclasses.dataclass(frozen=True)
class RemovedLevels:
    """How much cleaning took out of each track.

    Attributes:
        level_db: ``(tracks,)`` ``10 log10(Σ removed² / Σ input²)`` over the track's own samples;
            NaN for a silent input track.
        peak: ``(tracks,)`` largest ``|removed|`` sample (1.0 is full scale).
        clipped: the removed files whose samples exceed full scale in an integer subtype (PCM),
            which clips them there.
    """

    level_db: np.ndarray
    peak: np.ndarray
    clipped: tuple[str, ...]


def write_removed(
    reader: streaming.SessionReader,
    cleaned_dir: pathlib.Path,
    out_dir: pathlib.Path,
    block: int = BLOCK_SAMPLES,
) -> RemovedLevels:
    """Writes each track's input less its cleaned output into ``out_dir``.

    Args:
        reader: the session's input (its files as recorded; offsets are not taken out).
        cleaned_dir: the folder holding the cleaned files under the input files' names.
        out_dir: where the removed files go (renamed into place only when all are written).
        block: samples of every track per read.

    Returns:
        :class:`RemovedLevels`.

    Raises:
        SessionError: when a cleaned file is missing or has another layout than its input.
    """
    original = reader.same_layout_in(reader.folder)
    cleaned = reader.same_layout_in(cleaned_dir)
    removed_energy = np.zeros(reader.num_tracks)
    input_energy = np.zeros(reader.num_tracks)
    peak = np.zeros(reader.num_tracks)
    writer = streaming.TrackWriter(reader, pathlib.Path(out_dir))
    with streaming.committed(writer):
        for start in range(0, reader.length, block):
            stop = min(start + block, reader.length)
            recorded = original.read(start, stop).astype(np.float64)
            removed = recorded - cleaned.read(start, stop)
            input_energy += np.sum(recorded**2, axis=1)
            removed_energy += np.sum(removed**2, axis=1)
            peak = np.maximum(peak, np.max(np.abs(removed), axis=1))
            writer.write(removed)
    with np.errstate(divide="ignore", invalid="ignore"):
        level_db = np.where(input_energy > 0, 10 * np.log10(removed_energy / input_energy), np.nan)
    clipped, row = [], 0
    for track in reader.files:
        if streaming.subtype_is_integer(track.subtype) and np.any(peak[row : row + track.channels] > 1.0):
            clipped.append(track.name)
        row += track.channels
    return RemovedLevels(level_db, peak, tuple(clipped))
