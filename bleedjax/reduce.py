"""Cleaning session folders: validate everything, batch sessions of equal track count, write safely.

Sessions with the same number of tracks go through the method as one batch, zero-padded and
vmapped (zero padding is the mask: it adds nothing to the spectrogram statistics, and outputs are
trimmed back to each file's length). A batch is padded to a length of a fixed grid
(:func:`padded_length`, at most 9 % longer than its longest session), so that sessions of many
lengths share a few compiled programs instead of compiling one per batch.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import math
import os
import pathlib
import sys
from collections.abc import Sequence

import ml_collections
import numpy as np
from tqdm import tqdm

from bleedjax import methods, removed, sessions, streaming
from bleedjax.methods import phase_check

MAX_BATCH_SAMPLES = 1 << 26
"""The most samples (sessions × tracks × the batch's padded length, :func:`padded_length`) that
one in-memory batch holds; a method whose streaming threshold is lower holds at most that (:func:`batch_limit`)."""
LENGTH_GRID_STEPS = 8
"""Steps per octave of the grid of padded lengths (:func:`padded_length`)."""
LONG_SESSION_SAMPLES = 1 << 27
"""Sessions with more samples (tracks × length, e.g. 16 tracks × 3 min at 44.1 kHz) go through
the method's streaming path, when it has one, instead of being loaded whole (a method may set
its own threshold, :attr:`bleedjax.methods.Method.long_samples`)."""


@dataclasses.dataclass(frozen=True)
class SessionResult:
    """What :func:`reduce_folders` did for one session (``cleaned`` is ``None`` when the session
    was streamed, ``session`` is then its :class:`~bleedjax.streaming.SessionReader`)."""

    session: sessions.Session | streaming.SessionReader
    out_dir: pathlib.Path
    cleaned: np.ndarray | None
    matrix: np.ndarray
    checked: np.ndarray | None = None
    """Spectral subtraction's λ, or KAMIR's gains, before the phase check (``None`` without it)."""
    removed_levels: removed.RemovedLevels | None = None
    """How much was taken out of each track, when :func:`reduce_folders` wrote it (``write_removed``)."""
    kept: tuple[str, ...] = ()
    """The files copied to the output as recorded (``keep``), which are not in ``session``."""
    clipped: dict[str, int] = dataclasses.field(default_factory=dict)
    """``{file name: samples}`` of the cleaned files in integer (PCM) formats whose samples
    exceeded full scale and were clipped there."""
    one_source: np.ndarray | None = None
    """``(J, J)`` booleans: the microphones taken for one source and not cleaned against each
    other (:func:`bleedjax.same_source.detect`; ``None`` when nothing was looked for)."""


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """Imports ``get_config()`` from a Python config file (``configs/*.py``); a file that is missing,
    fails to run, or has no ``get_config()`` returning a ``ConfigDict`` raises
    :class:`~bleedjax.sessions.SessionError`."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f"bleedjax_config_{path.stem}", path)
    if spec is None or not path.is_file():
        raise sessions.SessionError(f"{path}: config file not found")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        config = module.get_config() if hasattr(module, "get_config") else None
    except Exception as error:  # noqa: BLE001 (the user's file may raise anything; one line says what)
        raise sessions.SessionError(f"{path}: the config file failed: {type(error).__name__}: {error}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise sessions.SessionError(f"{path}: a config file defines get_config() returning an ml_collections.ConfigDict")
    return config


def clipped_samples(layout: sessions.TrackLayout, cleaned: np.ndarray) -> dict[str, int]:
    """``{file name: samples}`` of ``(tracks, samples)`` cleaned audio beyond full scale, for the
    files whose integer (PCM) format clips them when written."""
    counts, row = {}, 0
    for track in layout.files:
        rows = cleaned[row : row + track.channels]
        if streaming.subtype_is_integer(track.subtype) and (count := int(np.count_nonzero(np.abs(rows) > 1.0))):
            counts[track.name] = count
        row += track.channels
    return counts


def refuse_non_finite(folder: pathlib.Path, *arrays: np.ndarray) -> None:
    """Raises :class:`~bleedjax.sessions.SessionError` when one of a session's ``arrays`` (cleaned
    samples, bleed) holds NaN or infinite values (no default does; settings outside the range a
    method converges in could); a PCM file would hold them as full-scale noise."""
    if not all(np.all(np.isfinite(array)) for array in arrays):
        raise sessions.SessionError(
            f"{folder}: the method returned NaN or infinite samples or bleed; nothing is written (check the --set "
            "and --config values)"
        )


SWITCH_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
"""What ``--set key=value`` accepts for a boolean key (lower-cased)."""


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``key=value`` strings; values are Python literals or bare strings, and a switch
    (a boolean key) also takes ``true/false``, ``yes/no``, ``on/off`` or ``1/0`` in any case."""
    config = ml_collections.ConfigDict(config.to_dict())
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in config:
            known = ", ".join(sorted(config.keys()))
            raise sessions.SessionError(f"--set {item}: expected key=value with key one of {known}")
        current = config[key]
        if isinstance(current, bool):
            word = text.strip().lower()
            if word not in SWITCH_WORDS:
                raise sessions.SessionError(f"--set {item}: {key} is a switch, give true or false")
            config[key] = SWITCH_WORDS[word]
            continue
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if isinstance(current, str) and not isinstance(value, str):
            value = text  # a word setting: the settings say which words it takes (`passes=0` met a cast error)
        if isinstance(current, float) and not isinstance(value, bool):
            try:
                value = float(value)
            except ValueError:
                pass
        try:
            config[key] = value
        except (TypeError, ValueError) as error:
            raise sessions.SessionError(f"--set {item}: {error}") from None
    return config


def _json_safe(values: dict) -> dict:
    """Non-finite floats as strings ("inf"), which JSON cannot hold as numbers."""
    return {k: (str(v) if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}


def mutual_bleed_pairs(
    matrix: np.ndarray, track_names: Sequence[str], threshold: float = phase_check.MUTUAL_BLEED_THRESHOLD
) -> list[tuple[str, str, float, float]]:
    """The pairs of tracks with ``√(matrix[i, j] matrix[j, i]) ≥ threshold``
    (:func:`bleedjax.methods.phase_check.mutual_pairs`), as ``(name_i, name_j, matrix[i, j],
    matrix[j, i])`` with ``i < j``.

    For spectral subtraction's ``(J, J)`` λ this means either strong bleed both ways or two tracks
    that play the same part. Magnitudes cannot tell the two apart, and in unison Eq. (7) removes
    the target (``benchmarks/quality_unison.py --parts warnings`` lists the pairs named on its
    desks and on the other quality benchmarks' pieces).
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(track_names):
        raise ValueError(f"need a square matrix with one row per track, got {matrix.shape} for {len(track_names)} tracks")
    pairs = np.argwhere(np.triu(phase_check.mutual_pairs(matrix, threshold)))
    return [(track_names[i], track_names[j], float(matrix[i, j]), float(matrix[j, i])) for i, j in pairs]


CAPPED_BY = 0.1
"""The fraction of a mutual pair's λ that the phase check must take away for a warning."""


def capped_pairs(
    checked: np.ndarray, applied: np.ndarray, track_names: Sequence[str]
) -> list[tuple[str, str, tuple[float, float], tuple[float, float]]]:
    """The pairs whose λ the phase check lowered by more than :data:`CAPPED_BY` in either
    direction (``checked``: λ before the check), as ``(name_i, name_j, (λ_ij, λ_ji) before,
    (λ_ij, λ_ji) applied)`` with ``i < j``. On strong delayed bleed the phase-aware gain is within a
    few per cent of λ, which is no reason to warn."""
    checked, applied = np.asarray(checked, np.float64), np.asarray(applied, np.float64)
    lowered = applied < (1.0 - CAPPED_BY) * checked
    pairs = np.argwhere(np.triu(lowered | lowered.T, k=1))
    return [(track_names[i], track_names[j], (checked[i, j], checked[j, i]), (applied[i, j], applied[j, i]))
            for i, j in pairs]


def warnings(result: SessionResult, method: str, config: ml_collections.ConfigDict | None = None) -> list[str]:
    """Caveats on one cleaned session, for the command line to print.

    * any method: audio files in other formats, and folders of audio, that the session left out;
      tracks that ``--pad`` lengthened (:func:`_padding_warnings`); WAV or FLAC files in the output
      folder that are not this session's tracks (an earlier run's, with ``--overwrite``); artefacts
      of another method or run (``bleed.npz``, ``interference/``, ``removed/``) left beside the
      outputs by an earlier run; cleaned tracks that exceed full scale in a PCM file, which clips
      them; removed tracks that exceed full scale in a PCM file, or that hold more energy than their
      input track (bleed adds to a track's own sound, so removing it cannot take out more than the
      track holds);
    * spectral subtraction: with its phase check (:mod:`bleedjax.methods.phase_check`), the
      pairs whose λ it capped; without, the pairs of :func:`mutual_bleed_pairs` (unison parts lose
      their target);
    * KAMIR: the pairs whose gains its phase check bounded (of those it checked: ``config``'s
      ``phase_check_min_gain``, the default when ``None``; re-estimating Λ moves the others a little);
    * differentiable: a session shorter than :data:`bleedjax.analyze.MIN_SECONDS_FOR_DELAYS`, from
      which the fitted delays are unreliable;
    * spectral subtraction, KAMIR and differentiable: the pairs of microphones taken for one
      source (:func:`one_source_warnings`; the checks' warnings leave them out).
    """
    notes = [f"{path.name}: not WAV or FLAC, left out of the session"
             for path in sessions.ignored_audio_files(result.session.folder)]
    notes += [f"{path.name}/: a folder of audio inside the session, left out (give it as a session of its own)"
              for path in sessions.ignored_subfolders(result.session.folder)]
    notes += _padding_warnings(result.session)
    ours = {f.name for f in result.session.files} | set(result.kept)
    notes += [f"{path}: not a track of this session nor written by this run (an earlier run's?); left in place"
              for path in (sorted(result.out_dir.iterdir()) if result.out_dir.is_dir() else [])
              if path.is_file() and path.suffix.lower() in sessions.AUDIO_SUFFIXES and path.name not in ours
              and not path.name.startswith(".")]
    produced = methods.get_method(method).artefacts
    notes += [f"{result.out_dir / name}: from an earlier run, not by --method {method}; left in place"
              for name in ("bleed.npz", "interference") if name not in produced and (result.out_dir / name).exists()]
    folder = result.out_dir / removed.FOLDER
    if result.removed_levels is None and folder.exists():
        notes.append(f"{folder}: from an earlier run (this one was without --removed); left in place")
    notes += [f"{result.out_dir / name}: {count} samples of the cleaned track exceed full scale and are clipped in "
              "this PCM file; convert the inputs to 32-bit float WAV to keep them whole"
              for name, count in result.clipped.items()]
    if result.removed_levels is not None:
        notes += [f"{folder / name}: what was removed exceeds full scale and is clipped in this PCM file; "
                  "convert the inputs to 32-bit float WAV to keep it whole" for name in result.removed_levels.clipped]
        notes += [f"{name}: what was removed is {level:+.1f} dB against the track itself, more than bleed that adds "
                  "to the track's own sound can hold; the method changed the track itself (listen to "
                  f"{removed.FOLDER}/)"
                  for name, level in zip(result.session.track_names, result.removed_levels.level_db) if level > 0.0]
    return notes + one_source_warnings(result) + _method_warnings(result, method, config)


def one_source_warnings(result: SessionResult) -> list[str]:
    """The pairs that :func:`bleedjax.same_source.detect` took for microphones of one source,
    which were not cleaned against each other."""
    if result.one_source is None:
        return []
    names = result.session.track_names
    return [
        f"{names[i]} and {names[k]}: taken for two microphones of one source (the fitted bleed model puts one about "
        "as near the other's source as that source's own microphone: same_source_min_gain, same_source_max_delay_ms), "
        "so neither is cleaned against the other (README: Several microphones on one source). If they are different "
        "sources, give --set detect_same_source=false; --set channel_map=FILE says which microphones share a source"
        for i, k in np.argwhere(np.triu(result.one_source, 1))
    ]


def _padding_warnings(session: sessions.TrackLayout) -> list[str]:
    """Tracks that ``--pad`` lengthened with zeros: every method counts the padding as silence of
    that microphone, where its neighbours still play, which lowers its estimated bleed."""
    lengths = session.track_lengths
    if len(lengths) == 0 or lengths.min() == lengths.max():
        return []
    rate, longest = session.sample_rate, int(lengths.max())
    short = ", ".join(f"{f.name} ({f.frames / rate:.2f} s)" for f in session.files if f.frames < longest)
    return [(f"{short}: shorter than the session ({longest / rate:.2f} s) and zero-padded (--pad); the padding "
             "counts as silence in the bleed estimate, so less of these tracks' bleed may be removed. For the best "
             "estimate, trim every track to the shortest")]


ONE_SOURCE_HINT = ("If both are microphones of one source, give --set channel_map=FILE (README: Several microphones "
                   "on one source) so that neither is subtracted from the other")


def _method_warnings(result: SessionResult, method: str, config: ml_collections.ConfigDict | None) -> list[str]:
    names = result.session.track_names
    one_source = set() if result.one_source is None else {(names[i], names[k]) for i, k in np.argwhere(result.one_source)}
    if method == "spectral-subtraction" and result.checked is not None:
        return [
            f"λ {before[0]:.2f} / {before[1]:.2f} between {first} and {second} capped to {after[0]:.2f} / "
            f"{after[1]:.2f} by the phase check: less of either is a delayed copy of the other than the magnitudes "
            "suggest, as when the two play the same part; in a reverberant room, or on a few seconds of audio, the "
            f"cap can leave some bleed (README: Unison). {ONE_SOURCE_HINT}"
            for first, second, before, after in capped_pairs(result.checked, result.matrix, result.session.track_names)
            if (first, second) not in one_source
        ]
    if method == "kamir" and result.checked is not None:
        # a microphone of one source is pooled with its partner (kamir.pooled_phi), which moves
        # its reported bleed whether or not the check bounded it: no warning names it
        pooled = {name for pair in one_source for name in pair}
        threshold = (config or {}).get("phase_check_min_gain", phase_check.KamirCheckSettings().phase_check_min_gain)
        checked = {(result.session.track_names[i], result.session.track_names[j])
                   for i, j in np.argwhere(phase_check.mutual_pairs(result.checked, threshold))}
        return [
            f"bleed {before[0]:.2f} / {before[1]:.2f} between {first} and {second} bounded to {after[0]:.2f} / "
            f"{after[1]:.2f} by the phase check: less of either is a delayed copy of the other than KAMIR's Λ "
            "suggests, as when the two play the same part (README: Unison)"
            for first, second, before, after in capped_pairs(result.checked, result.matrix, result.session.track_names)
            if (first, second) in checked and not {first, second} & pooled
        ]
    if method == "spectral-subtraction":
        return [
            f"λ {forward:.2f} / {backward:.2f} between {first} and {second}: strong bleed both ways, or the two "
            "play the same part; in unison spectral subtraction removes the target, so try the default preset "
            "auto (it checks such pairs by phase), --method differentiable or --method kamir --preset K5 (README: Unison). "
            f"{ONE_SOURCE_HINT}"
            for first, second, forward, backward in mutual_bleed_pairs(result.matrix, result.session.track_names)
        ]
    if method == "differentiable":
        from bleedjax.analyze import short_recording_warnings

        seconds = max(f.frames for f in result.session.files) / result.session.sample_rate
        return short_recording_warnings(seconds, "the phase-aware inversion may miss; clean a longer excerpt")
    return []


def output_dirs(folders: Sequence[pathlib.Path], out: pathlib.Path) -> list[pathlib.Path]:
    """``OUT`` itself for one session, ``OUT/<session name>`` for several (names must differ)."""
    if len(folders) == 1:
        return [out]
    names = [pathlib.Path(f).resolve().name for f in folders]
    for name in names:
        if names.count(name) > 1:
            raise sessions.SessionError(f"{out / name}: two sessions are named {name!r}")
    return [out / name for name in names]


def batch_limit(chosen: methods.Method) -> int:
    """The most samples one batch of ``chosen`` holds: :data:`MAX_BATCH_SAMPLES`, or the method's
    streaming threshold when that is lower (a batch then needs no more memory than the largest
    session loaded whole; the differentiable model needs about 120 bytes per sample)."""
    return min(MAX_BATCH_SAMPLES, _long_samples(chosen))


def padded_length(samples: int, most: int) -> int:
    """The length that a batch whose longest session has ``samples`` samples is zero-padded to:
    the smallest ``⌈1024 · 2^(k / LENGTH_GRID_STEPS)⌉`` (``k = 0, 1, …``) that holds it, at most
    9 % more, but not above ``most`` (nor below ``samples``).

    Every distinct batch shape is one compilation of the method (1-5 s on a CPU). On the grid, a
    thousand sessions of 4 tracks × 2-6 minutes at 44.1 kHz go through 865 batches of 14 shapes
    instead of 862 batches of 862 shapes, for 4.6 % more samples."""
    step = 0
    while (length := math.ceil(1024 * 2 ** (step / LENGTH_GRID_STEPS))) < samples:
        step += 1
    return max(samples, min(length, most))


def _batches(
    indices: list[int], samples_of: list[int], tracks: int, limit: int, most: int
) -> list[tuple[list[int], int]]:
    """Sessions in order of length, in batches that hold at most ``limit`` samples once padded
    (one session always fits), each with the length it is padded to (:func:`padded_length` of
    its longest session, up to ``most``)."""
    batches, current, width = [], [], 0
    for index in sorted(indices, key=lambda i: samples_of[i]):
        length = padded_length(samples_of[index], most)
        if current and (len(current) + 1) * tracks * length > limit:
            batches.append((current, width))
            current = []
        current.append(index)
        width = length
    return batches + [(current, width)] if current else batches


def reduce_folders(
    folders: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    method: str = "spectral-subtraction",
    config: ml_collections.ConfigDict | None = None,
    preset: str | None = None,
    pad: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    streaming_path: bool | None = None,
    keep_audio: bool = True,
    write_removed: bool = False,
    keep: Sequence[str] = (),
) -> list[SessionResult]:
    """Cleans session folders into ``out``; validates all inputs before writing anything.

    Sessions are read one batch at a time, and each batch's outputs are written as soon as it is
    cleaned, under a staging folder (:class:`bleedjax.sessions.StagedOutputs`) that is moved into
    place only when every in-memory batch succeeded: memory holds one batch, whatever the number
    of sessions, and a failure in a later batch (NaN samples, a session too short for the t-UNet)
    leaves nothing behind. Streamed sessions follow, each written when it is done.

    Args:
        folders: session folders.
        out: output folder (``out`` itself for one session, ``out/<name>/`` for several).
        method: a name from :data:`bleedjax.methods.METHODS`.
        config: the method's config; its default (or ``preset``) when ``None``.
        preset: a preset of the method (e.g. KAMIR's ``K1``–``K5``) for the default config.
        pad: zero-pad files of unequal length within a session.
        overwrite: replace existing output files.
        progress: show a progress bar; by default only when stderr is a terminal.
        streaming_path: force (``True``) or forbid (``False``) the method's bounded-memory path;
            by default it is taken for sessions above :data:`LONG_SESSION_SAMPLES`.
        keep_audio: return each session's audio and cleaned audio; ``False`` (the command line)
            keeps only the headers and matrices, so that memory does not grow with the sessions.
        write_removed: also write what cleaning took out of each track (input less cleaned,
            :func:`bleedjax.removed.write_removed`) into ``removed/`` beside the cleaned files, and
            its level into ``bleed.json`` (``removed_db``).
        keep: file names (in every session) to copy to the output unchanged and leave out of the
            session: room, overhead or audience microphones, which hear every source by design.
            Left in, a method takes them for bleed and rewrites them, and a close microphone
            regressed on them can lose some of its own source (README: Room, overhead and audience
            microphones).

    Returns:
        one :class:`SessionResult` per session, in input order (``cleaned`` is ``None`` for
        streamed sessions, whose audio never is in memory whole, and without ``keep_audio``).

    Raises:
        SessionError: on any bad input or output location, before anything is written.
    """
    chosen = methods.get_method(method)
    config = chosen.default_config(preset) if config is None else config
    folders = [pathlib.Path(f) for f in folders]
    keep = tuple(dict.fromkeys(keep))
    headers = [streaming.SessionReader(f, pad=pad, min_tracks=chosen.min_tracks, leave_out=keep)
               for f in folders]
    if streaming_path and chosen.run_long is None:
        raise sessions.SessionError(f"--method {method} has no streaming path for long recordings")
    streamed = [
        chosen.run_long is not None
        and (streaming_path if streaming_path is not None else h.num_tracks * h.length > _long_samples(chosen))
        for h in headers
    ]
    if chosen.validate is not None:
        for header in headers:
            try:
                chosen.validate(config, header.sample_rate)
            except ValueError as error:
                raise sessions.SessionError(f"{header.folder}: {error}") from None
    targets = output_dirs(folders, pathlib.Path(out))
    sessions.check_output_location(folders, targets)
    # Each track's DC offset is taken out before a method sees it and put back on the cleaned
    # track (sessions.shift_tracks says why); streamed sessions measure it in their NaN pass here,
    # the others when their batch is read.
    offsets = [h.scan_offsets() if s else None for h, s in zip(headers, streamed)]
    if not overwrite:
        for header, target in zip(headers, targets):
            extra = chosen.artefacts + ((removed.FOLDER,) if write_removed else ()) + keep
            sessions.refuse_overwrite(sessions.planned_outputs(header.files, target, extra))

    groups: dict[tuple, list[int]] = {}
    for index, header in enumerate(headers):
        if streamed[index]:
            _batch_key(chosen, header, config)
            continue
        key = (header.num_tracks, _batch_key(chosen, header, config))
        groups.setdefault(key, []).append(index)
    samples_of = [h.length for h in headers]
    batches = [
        batch
        for (tracks, _), indices in groups.items()
        for batch in _batches(indices, samples_of, tracks, batch_limit(chosen), _long_samples(chosen) // tracks)
    ]
    show = sys.stderr.isatty() if progress is None else progress
    results: dict[int, SessionResult] = {}
    staged = sessions.StagedOutputs(pathlib.Path(out))
    try:
        staged.create()
        for batch, longest in tqdm(batches, desc=f"{method}", unit="batch", disable=not show):
            loaded = {
                i: sessions.read_session(folders[i], pad=pad, min_tracks=chosen.min_tracks, leave_out=keep)
                for i in batch
            }
            for i in batch:
                offsets[i] = sessions.track_offsets(loaded[i].audio, loaded[i].track_lengths)
            audio = np.stack([
                np.pad(sessions.shift_tracks(loaded[i].audio, -offsets[i], loaded[i].track_lengths),
                       ((0, 0), (0, longest - samples_of[i])))
                for i in batch
            ])
            lengths = np.asarray([samples_of[i] for i in batch])
            rate = {"sample_rate": headers[batch[0]].sample_rate} if chosen.uses_sample_rate else {}
            try:
                output = chosen.run(audio, lengths, config, headers[batch[0]].track_names, **rate)
            except ValueError as error:
                named = ", ".join(str(folders[i]) for i in batch)
                raise sessions.SessionError(f"{named}: {error}") from None
            del audio
            for row, index in enumerate(batch):
                session, target = loaded[index], targets[index]
                refuse_non_finite(folders[index], output.cleaned[row, :, : samples_of[index]], output.matrices[row])
                cleaned = sessions.shift_tracks(
                    output.cleaned[row, :, : samples_of[index]], offsets[index], session.track_lengths
                )
                sessions.write_session(session, cleaned, staged.path(target))
                clipped = clipped_samples(session, cleaned)
                levels = _write_removed(headers[index], staged.path(target)) if write_removed else None
                _write_artefacts(method, config, session, staged.path(target), output, row, levels, keep)
                _copy_kept(folders[index], keep, staged.path(target))
                results[index] = SessionResult(
                    session if keep_audio else headers[index], target, cleaned if keep_audio else None,
                    output.matrices[row], None if output.checked is None else output.checked[row],
                    levels, keep, clipped, None if output.one_source is None else output.one_source[row],
                )
        for index in [i for i, s in enumerate(streamed) if s]:
            header, target = headers[index], targets[index]
            try:
                output = chosen.run_long(folders[index], staged.path(target), config, header.track_names, pad, show,
                                         offsets[index], keep)
            except ValueError as error:
                raise sessions.SessionError(f"{folders[index]}: {error}") from None
            refuse_non_finite(folders[index], output.matrices[0])
            levels = _write_removed(header, staged.path(target)) if write_removed else None
            _write_artefacts(method, config, header, staged.path(target), output, 0, levels, keep)
            _copy_kept(folders[index], keep, staged.path(target))
            results[index] = SessionResult(header, target, None, output.matrices[0],
                                           None if output.checked is None else output.checked[0], levels, keep,
                                           dict(output.clipped or {}),
                                           None if output.one_source is None else output.one_source[0])
        staged.commit()
    except BaseException:
        staged.abort()
        raise
    return [results[i] for i in range(len(headers))]


def _long_samples(chosen: methods.Method) -> int:
    return LONG_SESSION_SAMPLES if chosen.long_samples is None else chosen.long_samples


def _batch_key(chosen: methods.Method, session, config):
    if chosen.uses_sample_rate:
        return chosen.batch_key(session.track_names, config, sample_rate=session.sample_rate)
    return chosen.batch_key(session.track_names, config)


def _write_removed(reader: streaming.SessionReader, target: pathlib.Path) -> removed.RemovedLevels:
    return removed.write_removed(reader, target, target / removed.FOLDER)


def _copy_kept(folder: pathlib.Path, keep: Sequence[str], target: pathlib.Path) -> None:
    for name in keep:
        sessions.copy_file_atomic(folder / name, target / name)


def _write_artefacts(method, config, session, target: pathlib.Path, output: methods.BatchResult, row: int,
                     levels: removed.RemovedLevels | None = None, keep: Sequence[str] = ()):
    payload = {
        "method": method,
        "tracks": session.track_names,
        "lambda": np.asarray(output.matrices[row], float).round(6).tolist(),
        "sample_rate": session.sample_rate,
        "config": _json_safe(config.to_dict()),
    }
    if keep:
        payload["kept"] = list(keep)
    if levels is not None:
        payload["removed_db"] = np.asarray(levels.level_db, float).round(2).tolist()
    if output.checked is not None:
        payload["lambda_before_phase_check"] = np.asarray(output.checked[row], float).round(6).tolist()
    if output.one_source is not None and output.one_source[row].any():
        payload["one_source"] = [[session.track_names[i], session.track_names[k]]
                                 for i, k in np.argwhere(np.triu(output.one_source[row], 1))]
    if output.sources is not None and list(output.sources) != session.track_names:
        payload["sources"] = list(output.sources)
    sessions.write_json_atomic(target / "bleed.json", payload)
    if output.arrays:
        arrays = {name: value[row] for name, value in output.arrays.items()}
        arrays["frequencies_hz"] = np.fft.rfftfreq(config.n_fft, 1.0 / session.sample_rate)
        sessions.write_npz_atomic(target / "bleed.npz", arrays)
    if output.interference is not None:
        sessions.write_session(session, output.interference[row], target / "interference")
