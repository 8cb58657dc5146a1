"""Metadata chunks of WAV files carried from an input track to the files written from it.

soundfile (libsndfile) writes a WAV file's ``fmt `` and ``data`` chunks, and a float file's
``PEAK``, but not the chunks that a recorder or a DAW adds: the Broadcast Wave ``bext`` chunk
(EBU Tech 3285) with its ``TimeReference``, the sample at which the file starts, which is how a DAW
puts every track of a session back at its place on the timeline; ``iXML`` (scene, take, track
names) and ``axml``; the ``LIST`` ``INFO`` tags (title, artist, comments); and the markers, a
``cue `` chunk of sample offsets with their labels in a ``LIST`` ``adtl``. :func:`copy_metadata`
copies those chunks of the input, byte for byte, into the file written from it, before its
``data`` chunk, where BWF readers look for them. Plain RIFF only (not RF64, nor FLAC: soundfile
keeps no such chunks there either).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import struct

import soundfile as sf

KEPT = (b"bext", b"iXML", b"axml", b"LISTINFO", b"cue ", b"LISTadtl")
"""What :func:`copy_metadata` carries over, by chunk id, and a ``LIST`` chunk by its id and list
type (:func:`kinds`): other lists are not metadata (a ``wavl`` holds audio)."""

MARKERS = (b"cue ", b"LISTadtl")
"""The kept chunks that hold sample offsets: valid only in a file of the source's length."""


def chunks(path: pathlib.Path) -> list[tuple[bytes, int, int]] | None:
    """``(id, offset of the chunk's body, size of the body)`` of every chunk of a RIFF WAVE file,
    in file order; ``None`` for any other file (RF64, FLAC, a truncated header)."""
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        end = min(struct.unpack("<I", header[4:8])[0] + 8, os.fstat(handle.fileno()).st_size)
        found, offset = [], 12
        while offset + 8 <= end:
            handle.seek(offset)
            chunk_id, size = struct.unpack("<4sI", handle.read(8))
            found.append((chunk_id, offset + 8, size))
            offset += 8 + size + (size & 1)
        return found


def kinds(path: pathlib.Path) -> list[tuple[bytes, int, int]] | None:
    """:func:`chunks`, with each ``LIST`` chunk's id followed by its list type (``b"LISTINFO"``,
    ``b"LISTadtl"``)."""
    found = chunks(path)
    if found is None:
        return None
    with open(path, "rb") as handle:
        named = []
        for chunk_id, body, size in found:
            if chunk_id == b"LIST" and size >= 4:
                handle.seek(body)
                chunk_id += handle.read(4)
            named.append((chunk_id, body, size))
    return named


def copy_metadata(source: pathlib.Path, target: pathlib.Path) -> bool:
    """Copies the :data:`KEPT` chunks of ``source`` into ``target`` before its ``data`` chunk
    (rewriting ``target`` in place, its audio streamed, not loaded): the first of each kind, byte
    for byte, unless ``target`` holds that kind already (libsndfile writes its own ``LIST``
    ``INFO`` when given tags), and the :data:`MARKERS` only when ``target`` has as many sample
    frames as ``source``. Returns whether anything was copied: nothing when either file is not
    plain RIFF WAVE, ``source`` has none of those chunks whole, or the result would pass RIFF's
    4 GiB."""
    theirs, ours = kinds(source), kinds(target)
    if theirs is None or ours is None or not any(kind == b"data" for kind, _, _ in ours):
        return False
    present, whole = {kind for kind, _, _ in ours}, os.path.getsize(source)
    wanted: dict[bytes, tuple[int, int]] = {}
    for kind, body, size in theirs:
        if kind in KEPT and kind not in present and body + size <= whole:
            wanted.setdefault(kind, (body, size))
    if any(kind in MARKERS for kind in wanted) and sf.info(str(source)).frames != sf.info(str(target)).frames:
        wanted = {kind: place for kind, place in wanted.items() if kind not in MARKERS}
    if not wanted:
        return False
    with open(source, "rb") as handle:
        extra = b""
        for kind, (body, size) in wanted.items():
            handle.seek(body)
            extra += struct.pack("<4sI", kind[:4], size) + handle.read(size) + b"\0" * (size & 1)
    data_at = next(body for kind, body, _ in ours if kind == b"data") - 8
    total = os.path.getsize(target) + len(extra)
    if total - 8 > 0xFFFFFFFF:
        return False
    rewritten = target.with_name(target.name + ".meta")
    try:
        with open(target, "rb") as old, open(rewritten, "wb") as new:
            new.write(b"RIFF" + struct.pack("<I", total - 8) + b"WAVE")
            old.seek(12)
            new.write(old.read(data_at - 12))
            new.write(extra)
            shutil.copyfileobj(old, new, 1 << 20)
        shutil.copymode(target, rewritten)
        os.replace(rewritten, target)
    finally:
        rewritten.unlink(missing_ok=True)
    return True
