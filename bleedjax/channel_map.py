"""Channel selection φ for KAMIR: which microphones belong to which source (many-to-many).

A map is a JSON object ``{"source": ["mic file or track name", ...], ...}`` or a CSV file with
one ``source,track`` pair per line (an optional ``source,track`` header is skipped). Track names
are those of :class:`bleedjax.sessions.Session` (the file name, ``name[c]`` for channel ``c`` of
a multichannel file).
"""

from __future__ import annotations

import csv
import json
import pathlib
from collections.abc import Sequence

import numpy as np

from bleedjax.sessions import SessionError


def _pairs(path: pathlib.Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise SessionError(f"{path}: channel map not found")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as error:
            raise SessionError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, list) for v in mapping.values()):
            raise SessionError(f"{path}: expected {{\"source\": [\"track\", ...], ...}}")
        return [(str(source), str(track)) for source, tracks in mapping.items() for track in tracks]
    rows = [row for row in csv.reader(text.splitlines()) if row and any(cell.strip() for cell in row)]
    if rows and [c.strip().lower() for c in rows[0]] == ["source", "track"]:
        rows = rows[1:]
    for number, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise SessionError(f"{path}: line {number} should be 'source,track', got {row}")
    return [(source.strip(), track.strip()) for source, track in rows]


def load_channel_map(path: str | pathlib.Path, track_names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Reads a channel map for a session's tracks.

    Returns:
        ``φ`` as an ``(I, J)`` boolean array (tracks × sources) and the ``J`` source names.

    Raises:
        SessionError: unreadable map, an unknown track, a source without microphones, or a
            microphone without a source (its output would be silence).
    """
    path = pathlib.Path(path)
    pairs = _pairs(path)
    sources = list(dict.fromkeys(source for source, _ in pairs))
    if not sources:
        raise SessionError(f"{path}: the channel map is empty")
    phi = np.zeros((len(track_names), len(sources)), dtype=bool)
    for source, track in pairs:
        if track not in track_names:
            raise SessionError(f"{path}: track {track!r} of source {source!r} is not in the session "
                               f"({', '.join(track_names)})")
        phi[list(track_names).index(track), sources.index(source)] = True
    for index, name in enumerate(track_names):
        if not phi[index].any():
            raise SessionError(f"{path}: microphone {name!r} belongs to no source")
    return phi, sources
