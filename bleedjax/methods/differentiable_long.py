"""The differentiable bleed model on recordings of any length, with bounded memory.

The microphones stand still during a session, so the fitted model (gains, delays, colouration)
and the residual stage's λ hold for all of it. This path fits them once, with the in-memory
:func:`bleedjax.methods.differentiable.reduce_session`, on the session's busiest excerpt of at most
``fit_seconds`` (:func:`bleedjax.streaming.busiest_excerpt`: where every track plays most), then
cleans the whole session block by block with them fixed: each block of ``block_seconds``, read with
a margin on both sides, is unmixed on its own whole-signal DFT, masked (``cleaning="wiener"``) and
passed through the residual magnitude subtraction with the excerpt's λ (gate, significance, ratio floor and unison guard included); only its
core is written. The margin (:func:`margin_samples`) covers the inverse filter's ringing (echoes
at sums of delays, 16 times the longest delay) and the STFT frames of the mask and the residual
stage, and blocks and margins lie on the STFTs' frame grid, so the blocks join without seams
(tested against one block of the whole session). Peak memory is set
by ``fit_seconds`` and ``block_seconds``, not by the duration.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import same_source, signal, streaming
from bleedjax._types import Array, Float
from bleedjax.bleed_model import BleedParams
from bleedjax.methods import differentiable
from bleedjax.methods import spectral_subtraction as ss

RESIDUAL_SETTINGS = ss.Settings()
"""The residual stage's STFT (:func:`bleedjax.methods.differentiable.reduce_session` runs
spectral subtraction with these transform settings)."""


@dataclasses.dataclass(frozen=True)
class LongSettings:
    """How the long-recording path fits and streams."""

    fit_seconds: float = 60.0
    block_seconds: float = 30.0

    def __post_init__(self):
        if not (self.fit_seconds > 0 and self.block_seconds > 0):
            raise ValueError("fit_seconds and block_seconds must be positive")


def frame_grid(settings: differentiable.Settings) -> int:
    """Blocks and margins are multiples of both STFTs' hops, so that every block's frames fall on
    the whole session's frame grid (Eq. (7) and the mask are not linear: other frames, other
    output)."""
    return math.lcm(settings.hop, RESIDUAL_SETTINGS.hop)


def margin_samples(settings: differentiable.Settings) -> int:
    """Samples read on each side of a block: 16 longest delays (the inverse filter's echoes at
    sums of delays, a product of gains weaker per round trip) plus two frames of the longer STFT
    (the Wiener mask's and the residual stage's), rounded up to the :func:`frame_grid`."""
    grid = frame_grid(settings)
    return -(-(16 * settings.max_delay + 2 * max(settings.n_fft, RESIDUAL_SETTINGS.n_fft)) // grid) * grid


@functools.partial(jax.jit, static_argnames=("settings",))
def clean_block(
    audio: Float[Array, "tracks samples"],
    params: BleedParams,
    residual_lambda: Float[Array, "tracks tracks"],
    settings: differentiable.Settings,
) -> Float[Array, "tracks samples"]:
    """The cleaning of :func:`~bleedjax.methods.differentiable.reduce_session` with the model and
    the residual λ (gate, significance, ratio floor and unison guard included) fixed, on one block."""
    cleaned = differentiable.clean(params, audio, settings)
    if settings.residual == "spectral-subtraction":
        transform = {"n_fft": RESIDUAL_SETTINGS.n_fft, "hop": RESIDUAL_SETTINGS.hop,
                     "window_name": RESIDUAL_SETTINGS.window}
        spectrogram = ss.subtract(signal.stft(cleaned, **transform), residual_lambda)
        cleaned = signal.istft(spectrogram, length=audio.shape[-1], **transform)
    return cleaned


class LongResult(NamedTuple):
    """What :func:`reduce_long` fitted and wrote."""

    fitted: differentiable.Result
    """The excerpt's fit and cleaning (its ``cleaned`` is the excerpt's)."""
    start: int
    """The excerpt's first sample."""
    samples: int
    """The excerpt's length."""
    one_source: same_source.Table
    """The microphones that the fit took for one source (``()``: none, or not looked for)."""
    clipped: dict[str, int]
    """``{file name: samples}`` clipped in PCM files (:attr:`bleedjax.streaming.TrackWriter.clipped`)."""


def reduce_long(
    folder: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    settings: differentiable.Settings,
    long: LongSettings = LongSettings(),
    *,
    pad: bool = False,
    progress: bool = False,
    offsets: np.ndarray | None = None,
    leave_out: tuple[str, ...] = (),
    detection: same_source.Detection | None = None,
) -> LongResult:
    """Cleans one session folder of any length into ``out_dir``.

    Args:
        folder: the session.
        out_dir: where the cleaned files go, in the session's layout.
        settings: the differentiable model's settings.
        long: excerpt and block lengths.
        pad: zero-pad files of unequal length.
        progress: show a progress bar.
        offsets: ``(tracks,)`` DC offsets, taken out before and put back on the cleaned tracks
            (from :meth:`~bleedjax.streaming.SessionReader.scan_offsets`).
        leave_out: file names of the folder that are not part of the session (``reduce --keep``).
        detection: where on and ``settings`` has no ``same_source`` table, the excerpt's fit looks
            for microphones of one source (:func:`bleedjax.same_source.detect`) and, where it finds
            them, is fitted again with no bleed between them.

    Returns:
        a :class:`LongResult`.
    """
    reader = streaming.SessionReader(folder, pad=pad, offsets=offsets, leave_out=leave_out)
    rate = reader.sample_rate
    start, excerpt = streaming.busiest_seconds(reader, long.fit_seconds)
    audio = jnp.asarray(reader.read(start, start + excerpt))
    mask = lambda table: jnp.asarray(same_source.apart(table, reader.num_tracks))
    fitted, table = differentiable.reduce_session(audio, settings, None, mask(settings.same_source)), ()
    if detection is not None and detection.detect_same_source and not settings.same_source:
        first = np.asarray(fitted.params.gains), np.asarray(fitted.params.delays)
        table, _ = differentiable.one_source_table(audio, settings, rate, detection, first=first)
        if table:
            fitted = differentiable.reduce_session(audio, settings, None, mask(table))
    grid = frame_grid(settings)
    block, margin = max(1, round(long.block_seconds * rate / grid)) * grid, margin_samples(settings)
    writer = streaming.TrackWriter(reader, pathlib.Path(out_dir), reader.offsets)
    with streaming.committed(writer):
        blocks = streaming.block_ranges(reader.length, block)
        for first, _ in streaming.progress_blocks(blocks, "clean", progress):
            audio = jnp.asarray(reader.read(first - margin, first + block + margin))
            cleaned = clean_block(audio, fitted.params, fitted.residual_lambda, settings)
            writer.write(np.asarray(cleaned[:, margin : margin + block]))
    return LongResult(fitted, start, excerpt, table, writer.clipped)
