"""Frame-exact streaming STFT and iSTFT over session files, with bounded memory.

A recording of an hour does not fit a spectrogram in memory, but every STFT frame only needs its
own ``n_fft`` samples. :class:`SessionReader` validates a session from the file headers alone and
reads any sample range (zeros outside the recording), :func:`stft_block` computes exactly the
frames ``[t0, t1)`` of :func:`bleedjax.signal.stft` of the whole recording, and
:class:`OverlapAddWriter` turns cleaned frame blocks, given in order, back into samples of exactly
:func:`bleedjax.signal.istft` and streams them into temporary files that are renamed into place
only when everything succeeded. Peak memory depends on the block size, not on the length.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import soundfile as sf

from bleedjax import signal, wav_chunks
from bleedjax.sessions import (
    PAD_HINT,
    SessionError,
    TrackFile,
    TrackLayout,
    audio_files,
    audio_info,
    require_finite,
    temporary_beside,
    too_few_tracks,
)


class SessionReader(TrackLayout):
    """A session checked from its headers (rates, lengths, track count), read range by range.

    Attributes:
        folder, sample_rate, files, num_tracks, length (samples of the longest file).
        offsets: ``(tracks,)`` DC offsets that :meth:`read` takes out of each track's own samples
            (zeros unless given; :meth:`scan_offsets` measures them).
    """

    def __init__(self, folder: str | os.PathLike, *, pad: bool = False, min_tracks: int = 2,
                 offsets: np.ndarray | None = None, leave_out: Sequence[str] = ()):
        self.folder = pathlib.Path(folder)
        files = []
        for path in audio_files(self.folder, leave_out):
            info = audio_info(path)
            if info.frames == 0:
                raise SessionError(f"{path}: holds no samples")
            files.append((path, info))
        if not files or sum(info.channels for _, info in files) < min_tracks:
            raise too_few_tracks(self.folder, sum(info.channels for _, info in files), min_tracks, leave_out)
        first_path, first = files[0]
        for path, info in files[1:]:
            if info.samplerate != first.samplerate:
                raise SessionError(f"{path}: sample rate {info.samplerate} Hz differs from "
                                   f"{first_path.name} ({first.samplerate} Hz)")
            if info.frames != first.frames and not pad:
                raise SessionError(f"{path}: length {info.frames} samples differs from "
                                   f"{first.frames} samples of {first_path.name} {PAD_HINT}")
        self.sample_rate = int(first.samplerate)
        self.files = tuple(TrackFile(p, i.channels, i.frames, i.format, i.subtype) for p, i in files)
        self.num_tracks = sum(f.channels for f in self.files)
        self.length = max(f.frames for f in self.files)
        self.offsets = np.zeros(self.num_tracks) if offsets is None else np.asarray(offsets, np.float64)
        if self.offsets.shape != (self.num_tracks,):
            raise ValueError(f"offsets of shape {self.offsets.shape} for {self.num_tracks} tracks")

    def scan_offsets(self, block: int = 1 << 20) -> np.ndarray:
        """Reads every file once, ``block`` samples at a time, and returns each track's DC offset
        (``(tracks,)``, the mean of its own samples, as :func:`bleedjax.sessions.track_offsets`);
        raises :class:`SessionError` on NaN or infinite samples, so that bad input is refused
        before anything is written."""
        sums = []
        for track in self.files:
            total = np.zeros(track.channels)
            with sf.SoundFile(str(track.path)) as handle:
                for data in handle.blocks(blocksize=block, dtype="float32", always_2d=True):
                    require_finite(track.path, data)
                    total += np.sum(data, axis=0, dtype=np.float64)
            sums.append(total / track.frames)
        return np.concatenate(sums)

    def same_layout_in(self, folder: str | os.PathLike) -> SessionReader:
        """A reader of the files of this session's names in ``folder`` (e.g. its cleaned
        outputs), each checked to have its input's channels and length; without offsets.

        Raises:
            SessionError: naming a file that is missing, unreadable or of another layout.
        """
        folder = pathlib.Path(folder)
        files = []
        for track in self.files:
            path = folder / track.name
            info = audio_info(path)
            if (info.channels, info.frames) != (track.channels, track.frames):
                raise SessionError(f"{path}: {info.channels} channel(s) × {info.frames} samples, where "
                                   f"{track.path} has {track.channels} × {track.frames}")
            files.append(dataclasses.replace(track, path=path, format=info.format, subtype=info.subtype))
        other = copy.copy(self)
        other.folder, other.files, other.offsets = folder, tuple(files), np.zeros(self.num_tracks)
        return other

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of every track less its offset, ``(tracks, stop - start)``
        float32, zero outside each file; raises :class:`SessionError` on NaN or infinite samples."""
        out = np.zeros((self.num_tracks, stop - start), np.float32)
        row = 0
        for track in self.files:
            lo, hi = max(start, 0), min(stop, track.frames)
            if hi > lo:
                with sf.SoundFile(str(track.path)) as handle:
                    handle.seek(lo)
                    data = handle.read(hi - lo, dtype="float32", always_2d=True)
                require_finite(track.path, data)
                offsets = self.offsets[row : row + track.channels, None].astype(np.float32)
                out[row : row + track.channels, lo - start : lo - start + data.shape[0]] = data.T - offsets
            row += track.channels
        return out


def num_frames(length: int, n_fft: int, hop: int) -> int:
    """Frames of the whole recording's STFT (as :func:`bleedjax.signal.num_frames`)."""
    return signal.num_frames(length, n_fft, hop)


def stft_block(reader: SessionReader, first: int, last: int, *, n_fft: int, hop: int, window: str):
    """Frames ``[first, last)`` of the whole recording's STFT, ``(tracks, bins, last - first)``."""
    half = n_fft // 2
    segment = reader.read(first * hop - half, (last - 1) * hop + half + (n_fft - 2 * half))
    return signal.stft_frames(segment, n_fft=n_fft, hop=hop, window_name=window)


def window_norm(start: int, stop: int, total_frames: int, *, n_fft: int, hop: int, window: str) -> np.ndarray:
    """``Σ_t w²`` of the frames covering samples ``[start, stop)`` (the iSTFT normalisation)."""
    win2 = np.float64(signal.window(window, n_fft)) ** 2
    half = n_fft // 2
    samples = np.arange(start, stop) + half
    norm = np.zeros(stop - start)
    for back in range(-(-n_fft // hop) + 1):
        frame = samples // hop - back
        offset = samples - frame * hop
        valid = (frame >= 0) & (frame < total_frames) & (offset >= 0) & (offset < n_fft)
        norm[valid] += win2[offset[valid]]
    return norm


def busiest_excerpt(reader: SessionReader, samples: int, step: int) -> int:
    """The first sample of the ``samples``-long excerpt, starting at a multiple of ``step``, in
    which every track plays most (:func:`busiest_start`). Reads the session once, ``step`` samples
    at a time. ``0`` when the session is not longer than ``samples``."""
    return _busiest(reader.read, reader.length, samples, step)


def busiest_excerpt_of(audio: np.ndarray, samples: int, step: int) -> int:
    """:func:`busiest_excerpt` of ``(tracks, n)`` samples in memory."""
    return _busiest(lambda start, stop: audio[:, start:stop], audio.shape[-1], samples, step)


def _busiest(read, length: int, samples: int, step: int) -> int:
    if length <= samples:
        return 0
    steps = []
    for start in range(0, length, step):
        block = np.asarray(read(start, min(start + step, length)), np.float64)
        steps.append(np.sum((block - block.mean(axis=1, keepdims=True)) ** 2, axis=1))
    return busiest_start(np.stack(steps), -(-samples // step)) * step


def busiest_start(step_energies: np.ndarray, span: int) -> int:
    """The first step of the ``span`` consecutive steps in which every track plays most: the
    highest geometric mean over the tracks of their activity (a track's energy in the excerpt
    over its average energy per excerpt), so that a track silent in an excerpt rules it out, and a
    track that plays more counts as much as any other's. Tracks silent throughout are left out.

    Args:
        step_energies: ``(steps, tracks)`` energies of each step about its own mean (a DC offset
            does not count).
        span: steps per excerpt.
    """
    energies = np.cumsum(np.concatenate([np.zeros((1, step_energies.shape[1])), step_energies]), axis=0)
    count = len(step_energies)
    starts = np.arange(0, max(1, count - span + 1))
    excerpt = energies[starts + np.minimum(span, count)] - energies[starts]
    average = energies[-1] * min(span, count) / count
    sounding = average > 0
    if not sounding.any():
        return 0
    activity = np.maximum(excerpt[:, sounding] / average[sounding], 1e-12)
    return int(starts[np.argmax(np.mean(np.log(activity), axis=1))])


def busiest_seconds(reader: SessionReader, seconds: float) -> tuple[int, int]:
    """``(first sample, length)`` of the session's :func:`busiest_excerpt` of at most ``seconds``
    (at least one sample), searched in steps of one second."""
    samples = min(reader.length, max(1, round(seconds * reader.sample_rate)))
    return busiest_excerpt(reader, samples, step=reader.sample_rate), samples


class TrackWriter:
    """Streams consecutive samples of every track into temporary files in a session's layout
    (names, channels, format, subtype), renamed into place by :meth:`commit` or removed by
    :meth:`abort`. ``offsets`` (``(tracks,)``, zeros when ``None``) are added back to each track's
    own samples, as :func:`bleedjax.sessions.shift_tracks` does; each file gets its own length.
    ``observer(start, samples)``, when given, sees every written range before the offsets are
    added back (``(tracks, n)`` float64 samples from ``start``), e.g. to gather statistics of the
    result.

    Attributes:
        clipped: ``{file name: samples}`` written so far beyond full scale into an integer (PCM)
            file, which clips them there (files without clipping are absent).
    """

    def __init__(self, reader: SessionReader, out_dir: pathlib.Path, offsets: np.ndarray | None = None,
                 observer=None):
        self.reader, self.out_dir, self.observer = reader, out_dir, observer
        self.offsets = np.zeros(reader.num_tracks) if offsets is None else np.asarray(offsets, np.float64)
        self.done = 0
        self.clipped: dict[str, int] = {}
        out_dir.mkdir(parents=True, exist_ok=True)
        self.handles, self.temporaries = [], []
        for track in reader.files:
            temporary = temporary_beside(out_dir / track.name)
            subtype = track.subtype if sf.check_format(track.format, track.subtype) else None
            self.temporaries.append(pathlib.Path(temporary))
            self.handles.append(sf.SoundFile(temporary, "w", samplerate=reader.sample_rate,
                                             channels=track.channels, subtype=subtype, format=track.format))

    def write(self, samples: np.ndarray) -> None:
        """Writes ``(tracks, n)`` samples, the next ``n`` of the session (those past its end are
        dropped); integer subtypes are clipped to [-1, 1]. Raises ``ValueError`` on NaN or infinite
        samples."""
        lo, hi = self.done, min(self.done + samples.shape[1], self.reader.length)
        samples = np.asarray(samples[:, : hi - lo], np.float64)
        if not np.all(np.isfinite(samples)):
            raise ValueError(f"the method returned NaN or infinite samples from sample {lo} on; nothing is written "
                             "(check the --set and --config values)")
        if self.observer is not None:
            self.observer(lo, samples)
        block = (samples + self.offsets[:, None]).astype(np.float32)
        row = 0
        for track, handle in zip(self.reader.files, self.handles):
            part = block[row : row + track.channels, : max(0, min(hi, track.frames) - lo)]
            if subtype_is_integer(handle.subtype):
                if count := int(np.count_nonzero(np.abs(part) > 1.0)):
                    self.clipped[track.name] = self.clipped.get(track.name, 0) + count
                part = np.clip(part, -1.0, 1.0)
            handle.write(part.T)
            row += track.channels
        self.done = hi

    def commit(self) -> list[pathlib.Path]:
        """Renames the files into place, with their inputs' broadcast metadata
        (:func:`bleedjax.wav_chunks.copy_metadata`); returns their paths."""
        written = []
        for handle, temporary, track in zip(self.handles, self.temporaries, self.reader.files):
            handle.close()
            wav_chunks.copy_metadata(track.path, temporary)
            os.replace(temporary, self.out_dir / track.name)
            written.append(self.out_dir / track.name)
        return written

    def abort(self) -> None:
        for handle, temporary in zip(self.handles, self.temporaries):
            if not handle.closed:
                handle.close()
            temporary.unlink(missing_ok=True)


class OverlapAddWriter:
    """Streams cleaned frame blocks back to audio files, exactly as one :func:`istft` would.

    Feed blocks of frames in order with :meth:`add`; :meth:`commit` renames the temporary files
    into place, :meth:`abort` removes them (a :class:`TrackWriter`, which adds ``offsets`` back
    and shows the samples to ``observer``).
    """

    def __init__(self, reader: SessionReader, out_dir: pathlib.Path, total_frames: int, *,
                 n_fft: int, hop: int, window: str, offsets: np.ndarray | None = None, observer=None):
        self.reader, self.total_frames = reader, total_frames
        self.n_fft, self.hop, self.window = n_fft, hop, window
        self.tail = np.zeros((reader.num_tracks, 0), np.float64)
        self.tail_start = -(n_fft // 2)
        self.tracks = TrackWriter(reader, out_dir, offsets, observer)

    @property
    def clipped(self) -> dict[str, int]:
        """:attr:`TrackWriter.clipped` of the samples written so far."""
        return self.tracks.clipped

    def add(self, first: int, cleaned_frames: np.ndarray) -> None:
        """Adds frames ``[first, first + B)`` (``(tracks, bins, B)`` complex) of the cleaned STFT."""
        count = cleaned_frames.shape[-1]
        pieces = np.asarray(signal.overlap_add_frames(cleaned_frames, n_fft=self.n_fft, hop=self.hop,
                                                       window_name=self.window), np.float64)
        start = first * self.hop - self.n_fft // 2
        end = start + pieces.shape[-1]
        buffer = np.zeros((pieces.shape[0], end - self.tail_start))
        buffer[:, : self.tail.shape[1]] += self.tail
        buffer[:, start - self.tail_start :] += pieces
        complete = (first + count) * self.hop - self.n_fft // 2
        if first + count == self.total_frames:
            complete = end
        self._write(buffer[:, : complete - self.tail_start], self.tail_start)
        self.tail = buffer[:, complete - self.tail_start :]
        self.tail_start = complete

    def _write(self, samples: np.ndarray, start: int) -> None:
        lo, hi = max(start, self.tracks.done), min(start + samples.shape[1], self.reader.length)
        if hi <= lo:
            return
        norm = window_norm(lo, hi, self.total_frames, n_fft=self.n_fft, hop=self.hop, window=self.window)
        self.tracks.write(samples[:, lo - start : hi - start] / norm)

    def commit(self) -> list[pathlib.Path]:
        return self.tracks.commit()

    def abort(self) -> None:
        self.tracks.abort()


@contextlib.contextmanager
def committed(writer):
    """Commits ``writer`` (:class:`TrackWriter`, :class:`OverlapAddWriter`) when the block
    succeeds and aborts it when the block raises, so that a failure leaves no output behind;
    yields the list that receives the written paths. Nest it for several writers."""
    written: list[pathlib.Path] = []
    try:
        yield written
    except BaseException:
        writer.abort()
        raise
    written.extend(writer.commit())


def subtype_is_integer(subtype: str) -> bool:
    return subtype.startswith("PCM")


def progress_blocks(blocks: Sequence[tuple[int, int]], label: str, progress: bool):
    """``blocks`` behind a tqdm progress bar (shown only with ``progress``)."""
    from tqdm import tqdm

    return tqdm(blocks, desc=label, unit="block", disable=not progress)


def block_ranges(total_frames: int, block_frames: int) -> Sequence[tuple[int, int]]:
    """``[(first, last), ...]`` blocks of at most ``block_frames`` frames covering all frames."""
    return [(t, min(t + block_frames, total_frames)) for t in range(0, total_frames, block_frames)]
