"""Spectral subtraction for recordings of any length, streamed over the files with bounded memory.

Seipel & Lerch's λ depends on the spectrograms only through two statistics
(:func:`bleedjax.methods.spectral_subtraction.refine_from_statistics`): the ``J × J`` Gram matrix
of the magnitude spectrograms, a sum over time-frequency points, and the magnitudes on a lattice
of every ``stride``-th point for the refinement rounds and the ratio floor. Eq. (7) then acts on
every time-frequency point on its own. So two passes over the files suffice
(:mod:`bleedjax.streaming`):

1. **Statistics.** Block by block, the Gram matrix is accumulated (in float64) and the lattice
   points are collected, then λ is fitted once.
2. **Subtraction.** Block by block, the cleaned regressors and Eq. (7), overlap-added exactly as
   one iSTFT of the whole recording would.

Below ``LongSettings.max_points`` lattice points (every track together) the lattice is the
in-memory path's, and so are λ and the output (to float32 summation order). Above it (about
12.7 minutes of 4 to 16 tracks at 44.1 kHz with the paper's STFT) the lattice's stride is
multiplied by the smallest integer that keeps it below the cap: a coarser but still uniform
lattice, while the Gram matrix still sums over every point. Peak memory is then set by
``block_frames`` and ``max_points``, not by the duration.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import same_source, streaming
from bleedjax._types import Array, Complex, Float
from bleedjax.methods import phase_check
from bleedjax.methods import spectral_subtraction as ss


@dataclasses.dataclass(frozen=True)
class LongSettings:
    """How the long-recording path streams: frames per block, and the most lattice points kept
    (all tracks together) for the refinement rounds and the ratio floor."""

    block_frames: int = 256
    max_points: int = 1 << 25

    def __post_init__(self):
        if self.block_frames < 1 or self.max_points < 1:
            raise ValueError("block_frames and max_points must be positive")


def long_stride(settings: ss.Settings, long: LongSettings, num_tracks: int, num_frames: int, num_bins: int) -> int:
    """The lattice stride of a recording of ``num_frames`` frames: the in-memory path's
    :func:`~bleedjax.methods.spectral_subtraction.lattice_stride`, times the smallest integer that
    keeps ``num_tracks × points`` within ``long.max_points``."""
    stride = ss.lattice_stride(settings, num_tracks)
    points = num_tracks * -(-num_frames * num_bins // stride)
    return stride * max(1, -(-points // long.max_points))


@jax.jit
def _block_statistics(spectrogram: Complex[Array, "tracks bins frames"]):
    magnitudes = jnp.swapaxes(jnp.abs(spectrogram), -1, -2).reshape(spectrogram.shape[0], -1)
    return jnp.matmul(magnitudes, magnitudes.T, precision=ss.HIGHEST), magnitudes


def statistics(
    reader: streaming.SessionReader, settings: ss.Settings, long: LongSettings, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: the ``(J, J)`` magnitude Gram matrix of the whole recording and its ``(J, P)``
    lattice points (every :func:`long_stride`-th point of the flattened ``(frames, bins)``
    magnitudes, as :func:`~bleedjax.methods.spectral_subtraction.spectrogram_statistics`)."""
    total = streaming.num_frames(reader.length, settings.n_fft, settings.hop)
    num_bins = settings.n_fft // 2 + 1
    stride = long_stride(settings, long, reader.num_tracks, total, num_bins)
    gram = np.zeros((reader.num_tracks, reader.num_tracks))
    points = []
    blocks = streaming.progress_blocks(streaming.block_ranges(total, long.block_frames), "statistics", progress)
    for first, last in blocks:
        spectrogram = streaming.stft_block(reader, first, last, n_fft=settings.n_fft, hop=settings.hop,
                                           window=settings.window)
        block_gram, flat = _block_statistics(spectrogram)
        gram += np.asarray(block_gram, np.float64)
        # A copy, not a view: a view would keep every block's whole spectrogram alive.
        points.append(np.array(np.asarray(flat)[:, (-first * num_bins) % stride :: stride]))
    return gram.astype(np.float32), np.concatenate(points, axis=1)


@functools.partial(jax.jit, static_argnames=("settings",))
def _clean_block(
    spectrogram: Complex[Array, "tracks bins frames"], refinement: ss.Refinement, settings: ss.Settings
) -> Complex[Array, "tracks bins frames"]:
    frames_first = jnp.swapaxes(spectrogram, -1, -2)
    cleaned = ss.subtract_in_place(frames_first, refinement, settings.lambda_scale, settings.exponent)
    return jnp.swapaxes(cleaned, -1, -2)


_refine = jax.jit(ss.refine_from_statistics, static_argnames=("settings",))


class LongResult(NamedTuple):
    """What :func:`reduce_long` applied."""

    lam: Float[np.ndarray, "tracks tracks"]
    """``(J, J)`` λ applied (as :func:`~bleedjax.methods.spectral_subtraction.reduce_session`)."""
    before: Float[np.ndarray, "tracks tracks"] | None
    """λ before the phase check (:mod:`~bleedjax.methods.phase_check`; ``None`` without it)."""
    one_source: same_source.Table
    """The microphones that the check's fit took for one source (``()``: none, or not looked for)."""
    clipped: dict[str, int]
    """``{file name: samples}`` clipped in PCM files (:attr:`bleedjax.streaming.TrackWriter.clipped`)."""


def reduce_long(
    folder: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    settings: ss.Settings,
    long: LongSettings = LongSettings(),
    check: phase_check.CheckSettings | None = None,
    *,
    pad: bool = False,
    progress: bool = False,
    offsets: np.ndarray | None = None,
    leave_out: tuple[str, ...] = (),
    detection: same_source.Detection | None = None,
) -> LongResult:
    """Cleans one session folder of any length into ``out_dir`` in two streamed passes and
    returns a :class:`LongResult`. The phase check fits the session's busiest excerpt of at most
    ``phase_check_seconds`` (:func:`bleedjax.streaming.busiest_seconds`, one more read); with
    ``detection`` (and no ``settings.same_source``) that fit also looks for microphones of one
    source (:func:`bleedjax.methods.phase_check.check_session`), and λ is then estimated again,
    from the same statistics, without regressing them on each other. Without the check (the
    paper's presets) the same fit runs for that search alone, where a pair has
    ``√(λ_ij λ_ji) ≥ phase_check_min_lambda``.

    ``offsets`` (``(tracks,)`` DC offsets, from
    :meth:`~bleedjax.streaming.SessionReader.scan_offsets`) are taken out before and put back on
    the cleaned tracks. ``leave_out``: file names of the folder that are not part of the session
    (``reduce --keep``).
    """
    reader = streaming.SessionReader(folder, pad=pad, offsets=offsets, leave_out=leave_out)
    gram, points = (jnp.asarray(a) for a in statistics(reader, settings, long, progress=progress))
    # the table goes in as an array, so that refining λ again with a found one reuses the program
    plain = dataclasses.replace(settings, same_source=())
    apart_mask = lambda table: jnp.asarray(same_source.apart(table, reader.num_tracks))
    refinement = _refine(gram, points, plain, apart_mask(settings.same_source))
    check = phase_check.CheckSettings() if check is None else check
    first, table = np.asarray(refinement.lam), settings.same_source
    searching = detection is not None and detection.detect_same_source and not table
    if (check.phase_check or searching) and phase_check.mutual_pairs(first, check.phase_check_min_lambda).any():
        start, samples = streaming.busiest_seconds(reader, check.phase_check_seconds)
        found = phase_check.check_session(reader.read(start, start + samples), first, samples, reader.sample_rate,
                                          check.phase_check_min_lambda, table, reader.sample_rate, detection)
        if found.table != table:
            table = found.table
            refinement = _refine(gram, points, plain, apart_mask(table))
        if check.phase_check:
            weights = phase_check.checked_weights(np.asarray(refinement.lam), found.gains,
                                                  check.phase_check_min_lambda, settings.max_lambda)
            refinement = refinement._replace(lam=refinement.lam * jnp.asarray(weights))
    before = first if check.phase_check else None
    del points
    total = streaming.num_frames(reader.length, settings.n_fft, settings.hop)
    writer = streaming.OverlapAddWriter(reader, pathlib.Path(out_dir), total, n_fft=settings.n_fft,
                                        hop=settings.hop, window=settings.window, offsets=reader.offsets)
    with streaming.committed(writer):
        blocks = streaming.progress_blocks(streaming.block_ranges(total, long.block_frames), "subtract", progress)
        for first, last in blocks:
            spectrogram = streaming.stft_block(reader, first, last, n_fft=settings.n_fft, hop=settings.hop,
                                               window=settings.window)
            writer.add(first, np.asarray(_clean_block(spectrogram, refinement, settings)))
    return LongResult(np.asarray(refinement.lam), before, () if table == settings.same_source else table,
                      writer.clipped)
