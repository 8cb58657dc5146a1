"""Microphones of one source: the ``(I, I)`` table that spectral subtraction and the differentiable
model take from a channel map (:mod:`bleedjax.channel_map`).

Both methods model each microphone as its own source plus bleed of the others. Two microphones on
one source (a singer's dynamic and headset microphones, a piano's pair) break that model: each is
mostly a filtered copy of the other, so Eq. (1) of Seipel & Lerch explains one by the other and
Eq. (7) takes the source out of both (the Dagstuhl choir's seven close microphones cleaned
together: one dynamic microphone 7.6 dB worse, README "Real bleed"). With the table, the pairs it
marks are neither regressed on nor subtracted from each other; their bleed matrix entries stay 0.
The table is static (a hashable tuple of tuples) so that it can live in a method's settings.
"""

from __future__ import annotations

import numpy as np

Table = tuple[tuple[bool, ...], ...]


def from_channel_map(phi: np.ndarray) -> Table:
    """``table[i][k]``: microphones ``i`` and ``k`` share a source of ``phi`` (``(I, J)`` booleans)."""
    phi = np.asarray(phi, np.int32)
    return tuple(tuple(bool(x) for x in row) for row in (phi @ phi.T) > 0)


def check_table(table: Table) -> None:
    """Raises ``ValueError`` unless ``table`` is empty or a symmetric square table with a true diagonal."""
    if not table:
        return
    size = len(table)
    square = all(len(row) == size for row in table)
    if not square or not all(table[i][i] and table[i][k] == table[k][i] for i in range(size) for k in range(size)):
        raise ValueError("same_source must be a symmetric (tracks, tracks) table of booleans with a true diagonal")


def apart(table: Table, num_tracks: int) -> np.ndarray:
    """``(I, I)`` float32, 1 where two different microphones do not share a source (all pairs
    off the diagonal for an empty table)."""
    if not table:
        return 1.0 - np.eye(num_tracks, dtype=np.float32)
    if len(table) != num_tracks:
        raise ValueError(f"same_source is for {len(table)} tracks, the session has {num_tracks}")
    return 1.0 - np.asarray(table, np.float32)
