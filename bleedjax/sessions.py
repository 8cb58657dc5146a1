"""Sessions: folders with one audio file (WAV or FLAC) per microphone, and safe output writing.

Every channel of every file is one microphone track; tracks are ordered by file name, then by
channel. Cleaned tracks are written back in the same layout (file names, channel count, sample
rate, format and, where the format allows, subtype). Outputs are written under a temporary name
and renamed into place, inputs are never opened for writing, and existing files are not replaced
unless asked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import pathlib
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import soundfile as sf

from bleedjax import wav_chunks

AUDIO_SUFFIXES = (".wav", ".flac")
PAD_HINT = "(use --pad to zero-pad)"
"""How the errors about unequal track lengths end, for ``bleedjax reduce``; other commands that
read sessions without a ``--pad`` replace it (:func:`without_pad_hint`)."""
# Audio that a session folder may hold but that bleedjax does not read (``reduce`` names them).
OTHER_AUDIO_SUFFIXES = (".aif", ".aiff", ".aifc", ".caf", ".w64", ".rf64", ".mp3", ".ogg", ".opus", ".m4a")
_INTEGER_SUBTYPES = ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32")


class SessionError(ValueError):
    """Bad input or output location; the message is one line that names the file."""


@dataclasses.dataclass(frozen=True)
class TrackFile:
    """One audio file of a session and the layout to write it back in."""

    path: pathlib.Path
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def name(self) -> str:
        return self.path.name

    def track_names(self) -> list[str]:
        if self.channels == 1:
            return [self.name]
        return [f"{self.name}[{c}]" for c in range(self.channels)]


class TrackLayout:
    """Names derived from a session's ``folder`` and ``files`` (shared by :class:`Session` and
    :class:`bleedjax.streaming.SessionReader`)."""

    folder: pathlib.Path
    files: tuple[TrackFile, ...]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def track_names(self) -> list[str]:
        return [name for f in self.files for name in f.track_names()]

    @property
    def track_lengths(self) -> np.ndarray:
        """``(tracks,)`` samples of each track's own file (shorter than the session when padded)."""
        return np.repeat([f.frames for f in self.files], [f.channels for f in self.files])


@dataclasses.dataclass(frozen=True)
class Session(TrackLayout):
    """A loaded session.

    Attributes:
        folder: where it was read from.
        sample_rate: common sample rate in Hz.
        files: the files, in track order.
        audio: ``(tracks, samples)`` float32; shorter files zero-padded when read with ``pad``.
    """

    folder: pathlib.Path
    sample_rate: int
    files: tuple[TrackFile, ...]
    audio: np.ndarray

    @property
    def num_tracks(self) -> int:
        return self.audio.shape[0]


def audio_files(folder: pathlib.Path, leave_out: Sequence[str] = ()) -> list[pathlib.Path]:
    """The WAV/FLAC files of a folder, sorted by name; hidden files are ignored, and so are the
    file names in ``leave_out`` (tracks that ``reduce --keep`` passes through), each of which must
    be one of the files."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise SessionError(f"{folder}: not a folder")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
    )
    names = [p.name for p in files]
    for name in leave_out:
        if name not in names:
            raise SessionError(f"{folder}: no WAV/FLAC file named {name!r} to keep as recorded "
                               f"(the files: {', '.join(names) or 'none'})")
    return [p for p in files if p.name not in leave_out]


def too_few_tracks(folder: pathlib.Path, count: int, min_tracks: int, leave_out: Sequence[str] = ()) -> SessionError:
    """The error for a session folder with ``count`` microphone tracks (besides ``leave_out``),
    naming the files in other audio formats that it left out (:func:`ignored_audio_files`)."""
    besides = f" besides {', '.join(leave_out)}" if leave_out else ""
    other = [p.name for p in ignored_audio_files(folder)]
    left_out = f" ({', '.join(other)}: not WAV or FLAC, left out)" if other else ""
    return SessionError(
        f"{folder}: has {count} microphone track(s) in WAV/FLAC files{besides}, needs at least {min_tracks}{left_out}"
    )


def audio_info(path: pathlib.Path):
    """``soundfile.info`` of ``path``; :class:`SessionError` naming it when it is unreadable."""
    try:
        return sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as error:
        raise SessionError(f"{path}: unreadable audio file ({_one_line(error)})") from None


def without_pad_hint(error: SessionError, hint: str) -> SessionError:
    """``error`` with :data:`PAD_HINT` replaced by ``hint``, for a command that has no ``--pad``."""
    return SessionError(str(error).replace(PAD_HINT, hint))


def ignored_subfolders(folder: pathlib.Path) -> list[pathlib.Path]:
    """Folders inside a session folder that hold WAV or FLAC files: a session is one folder of
    tracks, so their tracks are left out (a multitrack recorder's per-take folders, for instance)."""
    return sorted(
        p for p in pathlib.Path(folder).iterdir()
        if p.is_dir() and not p.name.startswith(".")
        and any(f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES for f in p.iterdir())
    )


def ignored_audio_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """Files of a folder in other audio formats (:data:`OTHER_AUDIO_SUFFIXES`), which a session
    leaves out: a microphone recorded as AIFF would otherwise be missing without a word."""
    return sorted(
        p for p in pathlib.Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in OTHER_AUDIO_SUFFIXES and not p.name.startswith(".")
    )


def require_finite(path: pathlib.Path, data: np.ndarray) -> None:
    """Raises :class:`SessionError` naming ``path`` when ``data`` (read from it) holds NaN or inf."""
    if not np.all(np.isfinite(data)):
        raise SessionError(f"{path}: contains NaN or infinite samples")


def track_offsets(audio: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``(tracks,)`` DC offset of each track of ``(tracks, samples)`` audio: the mean of its first
    ``lengths[i]`` samples (its own file; the zero padding after it is left out)."""
    inside = np.arange(audio.shape[-1]) < np.asarray(lengths)[:, None]
    return np.sum(np.where(inside, audio, 0.0), axis=-1, dtype=np.float64) / np.maximum(lengths, 1)


def shift_tracks(audio: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``audio`` with ``offsets[i]`` added to the first ``lengths[i]`` samples of track ``i``;
    padding after a track's own file stays zero. Same dtype as ``audio``.

    ``reduce`` and ``analyze`` take each track's DC offset out before a method sees it and put it
    back on the cleaned track: a constant is not bleed, but it is the same in every microphone's
    lowest STFT bins and skews every bleed estimate (offsets up to 0.1 of full scale took the
    differentiable method's mean ΔSDR on the bundled stems at −12 dB from 30.5 to 11.3 dB; README).
    """
    inside = np.arange(audio.shape[-1]) < np.asarray(lengths)[:, None]
    return np.where(inside, audio + np.asarray(offsets, audio.dtype)[:, None], audio).astype(audio.dtype)


def read_audio(path: pathlib.Path) -> tuple[np.ndarray, int, TrackFile]:
    """Reads one file as ``(channels, samples)`` float32 and checks it is finite."""
    try:
        info = sf.info(str(path))
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as error:
        raise SessionError(f"{path}: unreadable audio file ({_one_line(error)})") from None
    if data.shape[0] == 0:
        raise SessionError(f"{path}: holds no samples")
    require_finite(path, data)
    track = TrackFile(path, data.shape[1], data.shape[0], info.format, info.subtype)
    return data.T.copy(), int(sample_rate), track


def read_session(
    folder: str | os.PathLike, *, pad: bool = False, min_tracks: int = 2, leave_out: Sequence[str] = ()
) -> Session:
    """Loads and validates a session folder.

    Args:
        folder: the session folder.
        pad: zero-pad shorter files to the longest instead of rejecting unequal lengths.
        min_tracks: the fewest microphone tracks accepted.
        leave_out: file names of the folder that are not part of the session (:func:`audio_files`).

    Raises:
        SessionError: unreadable or empty file, NaN/inf samples, differing sample rates, differing
            lengths (without ``pad``), or fewer than ``min_tracks`` tracks.
    """
    folder = pathlib.Path(folder)
    paths = audio_files(folder, leave_out)
    arrays, files, rate_of = [], [], {}
    for path in paths:
        data, rate, track = read_audio(path)
        arrays.append(data)
        files.append(track)
        rate_of[path] = rate
    if paths:
        first = paths[0]
        for path in paths[1:]:
            if rate_of[path] != rate_of[first]:
                raise SessionError(
                    f"{path}: sample rate {rate_of[path]} Hz differs from {first.name} "
                    f"({rate_of[first]} Hz)"
                )
        lengths = [a.shape[1] for a in arrays]
        if len(set(lengths)) > 1 and not pad:
            shortest = paths[int(np.argmin(lengths))]
            raise SessionError(
                f"{shortest}: length {min(lengths)} samples differs from {max(lengths)} samples of "
                f"{paths[int(np.argmax(lengths))].name} {PAD_HINT}"
            )
    num_tracks = sum(a.shape[0] for a in arrays)
    if num_tracks < min_tracks:
        raise too_few_tracks(folder, num_tracks, min_tracks, leave_out)
    longest = max(a.shape[1] for a in arrays)
    audio = np.concatenate([np.pad(a, ((0, 0), (0, longest - a.shape[1]))) for a in arrays])
    return Session(folder, rate_of[paths[0]], tuple(files), audio)


def nearest_existing(path: str | os.PathLike) -> pathlib.Path:
    """``path`` made absolute if it exists, else its nearest ancestor that does."""
    path = pathlib.Path(path).absolute()
    return next(p for p in (path, *path.parents) if p.exists())


def check_output_location(inputs: Sequence[pathlib.Path], outputs: Sequence[pathlib.Path]) -> None:
    """Refuses output folders that equal, or lie inside, any input folder, and those that are,
    or lie inside, an existing file."""
    resolved_inputs = [pathlib.Path(p).resolve() for p in inputs]
    for out in outputs:
        existing = nearest_existing(out)
        if not existing.is_dir():
            raise SessionError(f"{existing}: exists and is not a folder")
        target = pathlib.Path(out).resolve()
        for source in resolved_inputs:
            if target == source or source in target.parents:
                raise SessionError(f"{out}: output folder is, or is inside, input folder {source}")


class StagedOutputs:
    """Outputs written under a hidden staging folder and moved into place together.

    :meth:`path` maps a final path (anywhere below ``root``) to its place in the staging folder,
    which lies in the nearest existing ancestor of ``root`` (the same file system, so that the
    moves are renames, and nothing of ``root`` is created before :meth:`commit`). :meth:`commit`
    renames every staged file onto its final path; :meth:`abort` removes the staging folder. This
    lets ``reduce`` write each batch as soon as it is cleaned, so that memory holds one batch, and
    still leave nothing behind when a later session fails.

    The constructor only names the folder; :meth:`create` makes it. Call that inside the ``try``
    whose handler aborts, so that an exception raised by a signal handler (Ctrl-C, the CLI's
    SIGTERM) right after the folder appears still removes it.
    """

    def __init__(self, root: pathlib.Path):
        root = pathlib.Path(root).absolute()
        self.anchor = nearest_existing(root)
        self.staging = self.anchor / f".bleedjax-staging-{root.name}.{secrets.token_hex(6)}"

    def create(self) -> None:
        """Makes the staging folder (private to its owner, as ``tempfile.mkdtemp`` would)."""
        self.staging.mkdir(mode=0o700)

    def path(self, final: pathlib.Path) -> pathlib.Path:
        return self.staging / pathlib.Path(final).absolute().relative_to(self.anchor)

    def commit(self) -> None:
        """Renames every staged file onto its final path, then removes the staging folder. Ctrl-C
        or SIGTERM meanwhile takes effect after both (:func:`_signals_deferred`), so that an
        interrupted run leaves all of its outputs or none."""
        with _signals_deferred():
            for staged in sorted(p for p in self.staging.rglob("*") if p.is_file()):
                final = self.anchor / staged.relative_to(self.staging)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are handled as they would have been when it
    ends (in the main thread; elsewhere Python runs no signal handlers, and the block is plain).
    Python-level handlers, not a signal mask: another thread of the process (JAX's) would still
    take a masked signal and have the main thread run its handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])


def temporary_beside(final: pathlib.Path) -> pathlib.Path:
    """An empty hidden file next to ``final``, to be renamed onto it, with the permissions a
    new file gets under the process's umask (``mkstemp`` alone leaves 0600, which other users of
    a shared studio machine could not read once renamed)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return pathlib.Path(temporary)


@contextlib.contextmanager
def _atomic_path(final: pathlib.Path) -> Iterator[pathlib.Path]:
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        temporary = temporary_beside(final)
    except OSError as error:  # name the file asked for, not the hidden temporary one
        raise OSError(error.errno, error.strerror, str(final)) from None
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def write_audio_atomic(path: pathlib.Path, audio: np.ndarray, sample_rate: int, like: TrackFile) -> None:
    """Writes ``(channels, samples)`` audio in the format and subtype of ``like``, atomically,
    with ``like``'s broadcast metadata (:mod:`bleedjax.wav_chunks`: BWF ``bext`` timecode, ``iXML``).

    Integer subtypes are clipped to [-1, 1] rather than wrapped.
    """
    data = np.asarray(audio, np.float32).T
    subtype = like.subtype if sf.check_format(like.format, like.subtype) else None
    if subtype is None or subtype in _INTEGER_SUBTYPES:
        data = np.clip(data, -1.0, 1.0)
    with _atomic_path(path) as temporary:
        sf.write(str(temporary), data, sample_rate, subtype=subtype, format=like.format)
        wav_chunks.copy_metadata(like.path, temporary)


def _strict_json(value):
    """``value`` with every non-finite float as ``None``: standard JSON has no NaN or Infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


def write_json_atomic(path: pathlib.Path, payload: dict) -> None:
    """Writes standard JSON atomically (NaN and ±inf as ``null``)."""
    with _atomic_path(path) as temporary:
        temporary.write_text(json.dumps(_strict_json(payload), indent=2, allow_nan=False) + "\n")


def copy_file_atomic(source: pathlib.Path, path: pathlib.Path) -> None:
    """Copies ``source``'s bytes to ``path`` atomically (a kept track: every header chunk stays)."""
    with _atomic_path(path) as temporary:
        shutil.copyfile(source, temporary)


def write_npz_atomic(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes arrays to an ``.npz`` file atomically."""
    with _atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)


def planned_outputs(
    files: Sequence[TrackFile], out_dir: pathlib.Path, extra: Sequence[str] = ()
) -> list[pathlib.Path]:
    """The files a session's ``files`` become in ``out_dir``, plus ``extra`` names."""
    return [out_dir / f.name for f in files] + [out_dir / name for name in extra]


def check_writable(paths: Sequence[pathlib.Path]) -> None:
    """Raises ``OSError`` naming the first path whose nearest existing folder cannot take a new
    file (read-only, no permission), so that a report fails before the computation, not after."""
    for path in paths:
        folder = nearest_existing(pathlib.Path(path).absolute().parent)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, f"cannot write in {folder} (read-only or no permission)", str(path))


def refuse_overwrite(paths: Sequence[pathlib.Path]) -> None:
    """Raises if any path exists already."""
    for path in paths:
        if path.exists():
            raise SessionError(f"{path}: exists already (use --overwrite to replace it)")


def write_session(session: Session | TrackLayout, cleaned: np.ndarray, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Writes ``(tracks, samples)`` cleaned audio in the layout of the session's ``files`` (and
    at its ``sample_rate``) into ``out_dir``."""
    written, start = [], 0
    for track in session.files:
        block = cleaned[start : start + track.channels, : track.frames]
        start += track.channels
        target = out_dir / track.name
        write_audio_atomic(target, block, session.sample_rate, track)
        written.append(target)
    return written


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
