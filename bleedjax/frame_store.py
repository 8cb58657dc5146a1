"""A ``(bins, frames)`` float32 matrix kept on disk frame by frame, for recordings too long to keep
their spectrograms in memory.

Frames are stored contiguously (frame-major), written and read with ``pwrite``/``pread`` rather
than a memory map, so that pages read do not count in the process's resident memory. The file is
unlinked as soon as it is created: it disappears when the store is closed or the process ends,
whatever happens. Reading scattered frames (:meth:`FrameStore.gather`) reads each run of
consecutive frames at once.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


class FrameStore:
    """``bins × frames`` float32 values in an anonymous temporary file (in ``folder``, by
    default the system's temporary folder)."""

    def __init__(self, bins: int, frames: int, folder: str | os.PathLike | None = None):
        self.bins, self.frames = bins, frames
        self.row = bins * 4
        fd, path = tempfile.mkstemp(prefix=".bleedjax-frames-", dir=folder)
        os.unlink(path)
        self.fd = fd
        os.ftruncate(fd, self.row * frames)

    def write(self, first: int, block: np.ndarray) -> None:
        """Stores ``block`` ``(bins, B)`` as frames ``first .. first + B``."""
        data = np.ascontiguousarray(np.asarray(block, np.float32).T)
        self._check(first, first + data.shape[0])
        os.pwrite(self.fd, data.tobytes(), first * self.row)

    def read(self, first: int, last: int) -> np.ndarray:
        """Frames ``first .. last`` as ``(bins, last - first)``."""
        self._check(first, last)
        data = os.pread(self.fd, (last - first) * self.row, first * self.row)
        return np.frombuffer(data, np.float32).reshape(last - first, self.bins).T

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """Frames ``indices`` (sorted, unique) as ``(bins, len(indices))``."""
        indices = np.asarray(indices, np.int64)
        out = np.empty((len(indices), self.bins), np.float32)
        runs = np.split(np.arange(len(indices)), np.flatnonzero(np.diff(indices) != 1) + 1)
        for run in runs:
            if len(run):
                out[run[0] : run[-1] + 1] = self.read(int(indices[run[0]]), int(indices[run[-1]]) + 1).T
        return out.T

    def close(self) -> None:
        os.close(self.fd)

    def _check(self, first: int, last: int) -> None:
        if not 0 <= first <= last <= self.frames:
            raise IndexError(f"frames {first}..{last} outside 0..{self.frames}")
