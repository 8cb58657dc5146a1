"""Microphones of one source: the ``(I, I)`` table that spectral subtraction and the differentiable
model take from a channel map (:mod:`bleedjax.channel_map`).

Both methods model each microphone as its own source plus bleed of the others. Two microphones on
one source (a singer's dynamic and headset microphones, a piano's pair) break that model: each is
mostly a filtered copy of the other, so Eq. (1) of Seipel & Lerch explains one by the other and
Eq. (7) takes the source out of both (the Dagstuhl choir's seven close microphones cleaned
together: one dynamic microphone 7.6 dB worse, README "Real bleed"). With the table, the pairs it
marks are neither regressed on nor subtracted from each other; their bleed matrix entries stay 0.
The table is static (a hashable tuple of tuples) so that it can live in a method's settings.

Without a channel map, :func:`detect` finds such pairs from the differentiable model's fitted
gains and delays (a microphone about as near another's source as that source's own microphone),
and :func:`detect_confirmed` confirms each of several by fitting again with the others apart;
spectral subtraction's phase check and the differentiable model then use the table they give,
and KAMIR's phase check holds the leakage Λ between such microphones at its floor
(:func:`bleedjax.methods.phase_check.kamir_check`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from bleedjax._types import Float

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


@dataclasses.dataclass(frozen=True)
class Detection:
    """Whether, and from which fitted gain and delay, two microphones are taken for one source
    (:func:`detect`) where no channel map says which microphones share a source."""

    detect_same_source: bool = True
    same_source_min_gain: float = 0.6
    same_source_max_delay_ms: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.same_source_min_gain < math.inf:
            raise ValueError(f"same_source_min_gain must be finite and > 0, got {self.same_source_min_gain}")
        if not 0.0 <= self.same_source_max_delay_ms < math.inf:
            raise ValueError(f"same_source_max_delay_ms must be finite and >= 0, got {self.same_source_max_delay_ms}")


def detect(
    gains: Float[np.ndarray, "tracks tracks"],
    delays: Float[np.ndarray, "tracks tracks"],
    sample_rate: int,
    detection: Detection = Detection(),
) -> Table:
    """The pairs of microphones that the fitted bleed model (``(I, I)`` gains and delays in samples,
    :class:`bleedjax.bleed_model.BleedParams`) says hear one source: in either direction the gain
    is at least ``same_source_min_gain`` (0.6, −4.4 dB) and the delay at most
    ``same_source_max_delay_ms`` (1 ms, 34 cm of path); ``()`` when there are none.

    The model's gain ``g_ij`` and delay ``τ_ij`` of microphone ``j`` in microphone ``i`` are, in a
    free field, ``r_j / r_ij`` and ``(r_ij − r_j) / c`` (``r_j``: source ``j`` to its own
    microphone, ``r_ij``: to microphone ``i``). Both thresholds at once mean that microphone ``i``
    is about as near source ``j`` as ``j``'s own microphone: a second microphone of that source
    (a singer's dynamic and headset microphones, a piano's pair), or a placement where the two
    cannot be told apart. Cleaning one against the other then takes the source out of both (the
    Dagstuhl choir's seven close microphones: a dynamic microphone 7.6 dB worse with spectral
    subtraction, 11.2 dB with the differentiable model; README, "Real bleed"), while leaving the
    pair alone only leaves bleed. Fitted on that session, the singers' pairs have ``(g, τ)`` of
    (0.69, 0.13 ms), (1.00, 0.21 ms) and (0.72, 0.22 ms), every other pair ``g ≤ 0.14``; over
    the simulated bleed of the quality benchmarks (the rendered pieces and the PHENICX stems at
    −6/−12/−18 dB and in rooms, the unison desks, the room microphones; 2 seeds each) no pair
    with ``τ ≤ 1 ms`` reached ``g = 0.46``."""
    gains, delays = np.asarray(gains, np.float64), np.asarray(delays, np.float64)
    if gains.ndim != 2 or gains.shape[0] != gains.shape[1] or delays.shape != gains.shape:
        raise ValueError(f"need square (tracks, tracks) gains and delays, got {gains.shape} and {delays.shape}")
    close = (gains >= detection.same_source_min_gain) & (delays * 1e3 <= detection.same_source_max_delay_ms * sample_rate)
    close |= close.T
    return from_pairs([(int(i), int(k)) for i, k in np.argwhere(np.triu(close, 1))], len(close))


def pairs(table: Table) -> list[tuple[int, int]]:
    """``(i, k)`` with ``i < k`` of every two different microphones that ``table`` puts on one source."""
    return [(i, k) for i in range(len(table)) for k in range(i + 1, len(table)) if table[i][k]]


def from_pairs(found: Sequence[tuple[int, int]], num_tracks: int) -> Table:
    """The table of ``num_tracks`` microphones that puts each pair of ``found`` on one source
    (``()`` when ``found`` is empty)."""
    if not found:
        return ()
    table = np.eye(num_tracks, dtype=bool)
    for i, k in found:
        table[i, k] = table[k, i] = True
    return tuple(tuple(bool(x) for x in row) for row in table)


def detect_confirmed(
    fit: Callable[[Table], tuple[np.ndarray, np.ndarray]], sample_rate: int, detection: Detection = Detection()
) -> Table:
    """:func:`detect` on the model that ``fit(table)`` returns (``(gains, delays)`` fitted with no
    bleed between the pairs of ``table``), with every pair confirmed where it found several: a
    pair is kept if it is found again when the model is fitted with the other pairs apart.

    Two microphones of one source make the model degenerate, and its other gains that involve
    either of them unreliable: a close and a room microphone of one stem (0.7 and 0.5 ms apart)
    also gave a third microphone the room microphone's sound at 0.72 and 0.12 ms, where with the
    true pair apart the fit gives 0. Each confirmation is one more fit (and, as the table is a
    static setting, one more compilation)."""
    gains, delays = fit(())
    num = len(gains)
    found = pairs(detect(gains, delays, sample_rate, detection))
    if len(found) < 2:
        return from_pairs(found, num)
    kept = []
    for pair in found:
        again = detect(*fit(from_pairs([other for other in found if other != pair], num)), sample_rate, detection)
        if again and again[pair[0]][pair[1]]:
            kept.append(pair)
    return from_pairs(kept, num)
