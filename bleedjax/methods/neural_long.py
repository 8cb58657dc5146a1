"""The t-UNet and the CAE of Rajesh R & Rajan (WASPAA 2023) on recordings of any length with
bounded memory: the results of :mod:`bleedjax.methods.neural` for one session, streamed over its
files (:mod:`bleedjax.streaming`).

t-UNet, two stages:

1. **Λ̂.** The session is read in the model's blocks (``block_seconds`` at the model's rate),
   ``chunk`` blocks at a time, and the length-weighted mean of the model's Λ̂ is accumulated, as
   :func:`bleedjax.methods.neural.tunet_lambda` averages the blocks of a whole session. A session
   at another rate is resampled block by block, each block with ``resample_margin`` model samples
   of context on either side, on the rational grid of the two rates; the in-memory path resamples
   the whole session at once, so the two differ only through the resampling's edges.
2. **Demixing** with Λ̂ fixed: ``pinv(Λ̂) X`` block by block of samples for a scalar Λ̂;
   otherwise blocks of ``block_frames`` frames of the session's STFT, demixed per band or masked by
   :func:`~bleedjax.models.inference.wiener_spectrogram`, and overlap-added exactly as one inverse
   STFT of the whole recording (:class:`~bleedjax.streaming.OverlapAddWriter`). The Wiener mask's
   floor uses the mean power of the whole STFT, which one more pass measures first.

CAE, two passes: every track's level (its mean STFT magnitude,
:func:`bleedjax.models.cae.track_scale`), then blocks of frames with ``context_frames − 1``
frames of context on either side, whose context windows the model cleans and which are merged
as :func:`~bleedjax.models.cae.merge_windows` merges a whole track. ``bleed.json``'s
``X · pinv(Ŝ)`` comes from the Gram matrices of the microphones and the result, gathered as the
result is written.

Peak memory is set by the block sizes (and ``chunk``), not by the duration.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bleedjax import models, streaming
from bleedjax.methods import neural
from bleedjax.models import cae, inference, losses

WINDOW = "hann"


@dataclasses.dataclass(frozen=True)
class LongSettings:
    """How the neural methods stream: frames of the session's STFT per block (a scalar Λ̂ is
    applied in blocks of as many hops of samples), and the context (model samples on either side)
    with which a block is resampled to the model's rate."""

    block_frames: int = 256
    resample_margin: int = 8192

    def __post_init__(self):
        if self.block_frames < 1 or self.resample_margin < 0:
            raise ValueError("block_frames must be positive and resample_margin non-negative")


def rate_fraction(model_rate: float, sample_rate: int) -> Fraction:
    """``model_rate / sample_rate`` as an exact fraction (both are whole numbers of hertz)."""
    if model_rate != round(model_rate):
        raise ValueError(f"the model's rate {model_rate} Hz is not a whole number of hertz")
    return Fraction(round(model_rate), int(sample_rate))


def model_rate_range(reader: streaming.SessionReader, start: int, stop: int, fraction: Fraction,
                     margin: int) -> np.ndarray:
    """Samples ``[start, stop)`` of the session at ``fraction`` times its rate, ``(tracks, n)``:
    a segment of the session around them, aligned to the grid on which both rates have samples,
    resampled as :func:`bleedjax.models.inference.resample` (band-limited) and cut."""
    if fraction == 1:
        return reader.read(start, stop)
    up, down = fraction.numerator, fraction.denominator
    lo, hi = (start - margin) // up, -(-(stop + margin) // up)
    segment = reader.read(lo * down, hi * down)
    resampled = np.array(inference.resample(jnp.asarray(segment), (hi - lo) * up))
    return resampled[:, start - lo * up : stop - lo * up]


def tunet_lambda_long(reader: streaming.SessionReader, graphdef, state, training_config, config,
                      long: LongSettings, *, progress: bool = False) -> np.ndarray:
    """Stage 1: the session's Λ̂, ``(J, J)`` or ``(bands, J, J)`` (module docstring)."""
    model_rate, block = neural.tunet_block(training_config, config, reader.sample_rate, reader.length)
    fraction = rate_fraction(model_rate, reader.sample_rate)
    model_length = reader.length * fraction.numerator // fraction.denominator
    longest = round(reader.length * float(fraction))
    minimum = models.receptive_field(training_config.model)
    chunk = int(config.get("chunk", 4))
    blocks = -(-longest // block)
    total, weight = 0.0, 0.0
    groups = [(k, min(k + chunk, blocks)) for k in range(0, blocks, chunk)]
    for first, last in streaming.progress_blocks(groups, "Λ̂", progress):
        pieces = np.zeros((chunk, reader.num_tracks, block), np.float32)
        lengths = np.zeros(chunk, np.int32)
        for row, k in enumerate(range(first, last)):
            lengths[row] = np.clip(model_length - k * block, 0, block)
            piece = model_rate_range(reader, k * block, (k + 1) * block, fraction, long.resample_margin)
            piece[:, max(longest - k * block, 0) :] = 0.0
            pieces[row] = piece
        estimates = np.asarray(neural.piece_lambdas_jit(graphdef, state, jnp.asarray(pieces), jnp.asarray(lengths),
                                                        chunk=chunk), np.float64)
        weights = np.asarray(neural.piece_weights(lengths, minimum=minimum), np.float64)
        total = total + np.tensordot(weights, estimates, axes=1)
        weight += weights.sum()
    return (total / max(weight, 1.0)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("iterations",))
def _wiener(spectrogram, per_bin, mean_power, iterations=inference.WIENER_ITERATIONS):
    return inference.wiener_spectrogram(spectrogram, per_bin, iterations=iterations, mean_power=mean_power)


_demix_spectrogram = jax.jit(inference.demix_spectrogram)


def _frame_blocks(total: int, long: LongSettings, label: str, progress: bool):
    return streaming.progress_blocks(streaming.block_ranges(total, long.block_frames), label, progress)


def mean_magnitudes(reader: streaming.SessionReader, *, n_fft: int, hop: int, exponent: int, long: LongSettings,
                    progress: bool = False) -> np.ndarray:
    """``(tracks,)`` every track's mean of ``|X|^exponent`` over the bins and frames of the
    session's whole STFT (Hann, ``n_fft``/``hop``), accumulated block by block."""
    total = streaming.num_frames(reader.length, n_fft, hop)
    sums = np.zeros(reader.num_tracks)
    for first, last in _frame_blocks(total, long, f"|X|^{exponent}", progress):
        spec = np.asarray(streaming.stft_block(reader, first, last, n_fft=n_fft, hop=hop, window=WINDOW))
        sums += np.sum(np.abs(spec).astype(np.float64) ** exponent, axis=(1, 2))
    return sums / ((n_fft // 2 + 1) * total)


def mean_power(reader: streaming.SessionReader, *, n_fft: int, hop: int, long: LongSettings,
               progress: bool = False) -> float:
    """The mean of ``|X|²`` over every track, bin and frame of the session's whole STFT."""
    return float(np.mean(mean_magnitudes(reader, n_fft=n_fft, hop=hop, exponent=2, long=long, progress=progress)))


def demix_long(reader: streaming.SessionReader, out_dir: pathlib.Path, lam: np.ndarray, training_config,
               demix: str, long: LongSettings, *, progress: bool = False) -> dict[str, int]:
    """Stage 2 of the t-UNet: the session demixed with Λ̂ fixed into ``out_dir`` (module
    docstring), as :func:`bleedjax.models.demix_batch` demixes a whole session; returns the
    samples clipped in PCM files (:attr:`bleedjax.streaming.TrackWriter.clipped`)."""
    model_config = training_config.model
    model_rate = losses.model_rate(training_config)
    banded = lam[None] if lam.ndim == 2 else lam
    n_fft, hop, band_index = models.session_stft(banded.shape[0], n_fft=model_config.n_fft, hop=model_config.hop,
                                                 sample_rate=reader.sample_rate, model_rate=model_rate)
    if lam.ndim == 2 and demix == "pinv":
        unmixing = inference.pinv_each(jnp.asarray(lam)[None])
        writer = streaming.TrackWriter(reader, out_dir, reader.offsets)
        ranges = streaming.block_ranges(reader.length, long.block_frames * hop)
        with streaming.committed(writer):
            for start, stop in streaming.progress_blocks(ranges, "demix", progress):
                mics = jnp.asarray(reader.read(start, stop))
                writer.write(np.asarray(inference.demix(mics, unmixing[0])))
        return writer.clipped
    total = streaming.num_frames(reader.length, n_fft, hop)
    band_index = jnp.asarray(band_index)
    if demix == "wiener":
        power = jnp.float32(mean_power(reader, n_fft=n_fft, hop=hop, long=long, progress=progress))
        per_bin = jnp.asarray(banded)[band_index]
        clean = lambda spec: _wiener(spec, per_bin, power)
    else:
        unmixing = inference.pinv_each(jnp.asarray(banded))
        clean = lambda spec: _demix_spectrogram(spec, unmixing, band_index)
    writer = streaming.OverlapAddWriter(reader, out_dir, total, n_fft=n_fft, hop=hop, window=WINDOW,
                                        offsets=reader.offsets)
    with streaming.committed(writer):
        for first, last in _frame_blocks(total, long, "demix", progress):
            spec = streaming.stft_block(reader, first, last, n_fft=n_fft, hop=hop, window=WINDOW)
            writer.add(first, np.asarray(clean(spec)))
    return writer.clipped


class LeastSquaresMatrix:
    """``X · pinv(Ŝ)`` of a whole session (:func:`bleedjax.models.losses.interference_matrix`)
    from the Gram matrices ``X Ŝᵀ`` and ``Ŝ Ŝᵀ``, gathered range by range as a
    :class:`~bleedjax.streaming.TrackWriter` writes ``Ŝ`` (its ``observer``)."""

    def __init__(self, reader: streaming.SessionReader):
        self.reader = reader
        self.cross = np.zeros((reader.num_tracks, reader.num_tracks))
        self.gram = np.zeros((reader.num_tracks, reader.num_tracks))

    def __call__(self, start: int, cleaned: np.ndarray) -> None:
        mics = self.reader.read(start, start + cleaned.shape[1]).astype(np.float64)
        self.cross += mics @ cleaned.T
        self.gram += cleaned @ cleaned.T

    def matrix(self) -> np.ndarray:
        return self.cross @ np.linalg.pinv(self.gram, hermitian=True)


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk"))
def _cae_block(graphdef, state, spectrogram, scale, window_frames, merge_source, merge_valid, own, *, chunk: int):
    """The CAE's cleaned STFT of a block's own frames, from the block with its context.

    Args:
        spectrogram: ``(J, F, N)`` frames of the block and its context.
        scale: ``(J,)`` the tracks' levels.
        window_frames: ``(C, context)`` frames (indices into ``N``) of each window to clean.
        merge_source: ``(B, context)`` for each own frame and window position, the window (index
            into ``C``) whose estimate it takes; ``merge_valid`` ``(B, context)`` which count.
        own: ``(B,)`` the own frames (indices into ``N``).
    """
    model = nnx.merge(graphdef, state)
    tracks, bins, _ = spectrogram.shape
    magnitudes = jnp.abs(spectrogram) / scale[:, None, None]
    windows = jnp.transpose(magnitudes[:, :, window_frames], (0, 2, 3, 1))
    count, context = window_frames.shape
    predicted = jax.lax.map(lambda w: model(w[None], use_running_average=True)[0],
                            windows.reshape(tracks * count, context, bins), batch_size=chunk)
    predicted = predicted.reshape(tracks, count, context, bins)
    values = predicted[:, merge_source, jnp.arange(context)[None, :]]
    merged = jnp.sum(values * merge_valid[None, :, :, None], axis=2) / jnp.maximum(
        jnp.sum(merge_valid, axis=1), 1)[None, :, None]
    merged = jnp.transpose(merged, (0, 2, 1)) * scale[:, None, None]
    return cae.with_mixture_phase(spectrogram[:, :, own], merged)


def cae_long(reader: streaming.SessionReader, out_dir: pathlib.Path, graphdef, state, training_config, config,
             long: LongSettings, *, progress: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """The session cleaned track by track by the CAE into ``out_dir`` (module docstring); returns
    ``X · pinv(Ŝ)`` ``(J, J)`` and the samples clipped in PCM files
    (:attr:`bleedjax.streaming.TrackWriter.clipped`)."""
    model_config = training_config.model
    n_fft, hop = model_config.n_fft, model_config.hop
    total = streaming.num_frames(reader.length, n_fft, hop)
    levels = mean_magnitudes(reader, n_fft=n_fft, hop=hop, exponent=1, long=long, progress=progress)
    scale = jnp.asarray(levels + cae.EPS, jnp.float32)
    context = nnx.merge(graphdef, state).context_frames
    half = context // 2
    positions = np.arange(context)
    matrix = LeastSquaresMatrix(reader)
    writer = streaming.OverlapAddWriter(reader, out_dir, total, n_fft=n_fft, hop=hop, window=WINDOW,
                                        offsets=reader.offsets, observer=matrix)
    chunk = int(config.get("chunk", 256))
    with streaming.committed(writer):
        for first, last in _frame_blocks(total, long, "cae", progress):
            lo, hi = max(first - 2 * half, 0), min(last + 2 * half, total)
            centre_lo, centre_hi = max(first - half, 0), min(last + half, total)
            centres = np.arange(centre_lo, centre_hi)
            window_frames = np.clip(centres[:, None] + positions[None, :] - half, 0, total - 1) - lo
            source = np.arange(first, last)[:, None] + half - positions[None, :]
            valid = ((source >= 0) & (source < total)).astype(np.float32)
            spec = streaming.stft_block(reader, lo, hi, n_fft=n_fft, hop=hop, window=WINDOW)
            cleaned = _cae_block(graphdef, state, spec, scale, jnp.asarray(window_frames),
                                 jnp.asarray(np.clip(source - centre_lo, 0, len(centres) - 1)), jnp.asarray(valid),
                                 jnp.asarray(np.arange(first, last) - lo), chunk=chunk)
            writer.add(first, np.asarray(cleaned))
    return matrix.matrix(), writer.clipped


def reduce_long(method: str, folder, out_dir, config, long: LongSettings = LongSettings(), *, pad: bool = False,
                progress: bool = False, offsets: np.ndarray | None = None,
                leave_out: tuple[str, ...] = ()) -> tuple[np.ndarray, dict[str, int]]:
    """Cleans one session folder of any length with the t-UNet or CAE into ``out_dir``; returns
    the matrix for ``bleed.json`` (the t-UNet's Λ̂, ``(J, J)`` or ``(bands, J, J)``; the CAE's
    ``X · pinv(Ŝ)``) and the samples clipped in PCM files
    (:attr:`bleedjax.streaming.TrackWriter.clipped`). ``offsets`` (the tracks' DC offsets) are
    taken out before and put back."""
    reader = streaming.SessionReader(folder, pad=pad, offsets=offsets, leave_out=leave_out)
    graphdef, state, training_config = neural.load(config, method)
    neural.check_session(reader.track_names, training_config, method)
    out_dir = pathlib.Path(out_dir)
    if method == "cae":
        neural.check_cae_rate(training_config, reader.sample_rate)
        return cae_long(reader, out_dir, graphdef, state, training_config, config, long, progress=progress)
    neural.check_length(training_config, reader.sample_rate, [reader.length])
    demix = neural.demix_mode(training_config, config)
    lam = tunet_lambda_long(reader, graphdef, state, training_config, config, long, progress=progress)
    return lam, demix_long(reader, out_dir, lam, training_config, demix, long, progress=progress)
