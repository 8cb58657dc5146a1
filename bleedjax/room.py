"""Room bleed through pyroomacoustics shoebox rooms (image source method, Allen & Berkley 1979).

Each source has a close microphone. Every source image at every microphone is kept, so the exact
no-bleed reference of microphone ``i`` is the image of source ``i`` at microphone ``i`` (room
colouration included): only the bleed is to be removed, not the room.

This is host-side NumPy (pyroomacoustics is not JAX); it makes data, it is not on any hot path.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bleedjax.simulation import PEAK_AFTER_NORMALISATION, SPEED_OF_SOUND


@dataclasses.dataclass(frozen=True)
class RoomGeometry:
    """A shoebox room with one close microphone per source (metres, seconds)."""

    dimensions: tuple[float, float, float]
    rt60: float
    source_positions: tuple[tuple[float, float, float], ...]
    mic_positions: tuple[tuple[float, float, float], ...]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RoomBleed:
    """A simulated room session.

    Attributes:
        mics: ``(I, samples)`` microphone tracks.
        images: ``(I, J, samples)`` image of source ``j`` at microphone ``i``.
        references: ``(I, samples)`` ``images[i, i]``, what microphone ``i`` hears without bleed.
        gains: ``(I, J)`` RMS of ``images[i, j]`` relative to ``images[j, j]`` (effective ``A``).
        delays: ``(I, J)`` direct-path delay of source ``j`` at mic ``i`` relative to mic ``j``,
            in samples.
        geometry: the room.
    """

    mics: np.ndarray
    images: np.ndarray
    references: np.ndarray
    gains: np.ndarray
    delays: np.ndarray
    geometry: RoomGeometry


def random_geometry(
    num_sources: int,
    *,
    seed: int,
    dimensions: tuple[float, float, float] = (12.0, 9.0, 4.0),
    rt60: float = 0.4,
    mic_distance: float = 0.5,
) -> RoomGeometry:
    """Sources on a stage-like arc, each with a microphone ``mic_distance`` in front of it."""
    rng = np.random.default_rng(seed)
    width, depth, _ = dimensions
    centre = np.array([width / 2, depth / 3])
    angles = np.linspace(0.15 * np.pi, 0.85 * np.pi, num_sources) + rng.uniform(-0.05, 0.05, num_sources)
    radii = rng.uniform(2.0, 3.5, num_sources)
    sources, mics = [], []
    for angle, radius in zip(angles, radii):
        direction = np.array([np.cos(angle), np.sin(angle)])
        position = centre + radius * direction
        mic = position - mic_distance * direction
        sources.append((*position, 1.2))
        mics.append((*mic, 1.5))
    as_tuples = lambda points: tuple(tuple(float(v) for v in p) for p in points)
    return RoomGeometry(dimensions, rt60, as_tuples(sources), as_tuples(mics))


def _pyroomacoustics():
    """pyroomacoustics, imported on first use: with SciPy's signal module under it, it took 2.3 of
    the 6.4 s that ``import bleedjax.train`` took (2-core AMD EPYC, 2026-12-07), and training, the
    CLI and the processes they start need it only to draw rooms."""
    import pyroomacoustics

    return pyroomacoustics


def inverse_sabine(rt60: float, dimensions: tuple[float, ...]) -> tuple[float, int]:
    """Wall energy absorption and image-source order that give ``rt60`` seconds in a shoebox of
    ``dimensions`` metres (Sabine's formula inverted, pyroomacoustics); ``ValueError`` where the
    room is too small to reach it."""
    return _pyroomacoustics().inverse_sabine(rt60, dimensions)


def shoebox(
    geometry: RoomGeometry, *, sample_rate: int, signals: np.ndarray | None = None
):
    """The ``pyroomacoustics.ShoeBox`` of ``geometry`` (absorption and image order from the RT60
    by :func:`inverse_sabine`), with its sources (carrying ``signals`` when given) and microphones."""
    pra = _pyroomacoustics()
    absorption, max_order = inverse_sabine(geometry.rt60, geometry.dimensions)
    room = pra.ShoeBox(
        geometry.dimensions,
        fs=sample_rate,
        materials=pra.Material(absorption),
        max_order=max_order,
    )
    for index, position in enumerate(geometry.source_positions):
        room.add_source(position, signal=None if signals is None else signals[index])
    room.add_microphone_array(np.asarray(geometry.mic_positions).T)
    return room


def impulse_responses(geometry: RoomGeometry, *, sample_rate: int) -> list[list[np.ndarray]]:
    """Impulse responses ``[mic][source]`` of the room (varying lengths), as
    :func:`simulate_room` convolves them."""
    room = shoebox(geometry, sample_rate=sample_rate)
    room.compute_rir()
    return [[np.asarray(h) for h in row] for row in room.rir]


def simulate_room(sources: np.ndarray, *, sample_rate: int, geometry: RoomGeometry) -> RoomBleed:
    """Renders ``(J, samples)`` dry sources in a shoebox room, normalised by the loudest mic.

    Args:
        sources: ``(J, samples)`` dry stems.
        sample_rate: in Hz.
        geometry: the room, e.g. from :func:`random_geometry`.

    Returns:
        :class:`RoomBleed` with the images truncated to the input length.
    """
    sources = np.asarray(sources, np.float64)
    num_sources, samples = sources.shape
    if len(geometry.source_positions) != num_sources or len(geometry.mic_positions) != num_sources:
        raise ValueError("the room needs one source and one microphone position per track")
    room = shoebox(geometry, sample_rate=sample_rate, signals=sources)
    premix = room.simulate(return_premix=True)
    images = np.transpose(premix, (1, 0, 2))[..., :samples]
    if images.shape[-1] < samples:
        images = np.pad(images, ((0, 0), (0, 0), (0, samples - images.shape[-1])))
    mics = images.sum(axis=1)
    scale = PEAK_AFTER_NORMALISATION / max(np.abs(mics).max(), 1e-12)
    images, mics = images * scale, mics * scale
    references = images[np.arange(num_sources), np.arange(num_sources)]
    rms = np.sqrt(np.mean(images**2, axis=-1))
    own = np.diag(rms)
    gains = rms / np.where(own > 0, own, 1.0)[None, :]
    src = np.asarray(geometry.source_positions)
    mic = np.asarray(geometry.mic_positions)
    distance = np.linalg.norm(mic[:, None, :] - src[None, :, :], axis=-1)
    delays = (distance - np.diag(distance)[None, :]) / SPEED_OF_SOUND * sample_rate
    return RoomBleed(
        mics.astype(np.float32),
        images.astype(np.float32),
        references.astype(np.float32),
        gains.astype(np.float32),
        delays.astype(np.float32),
        geometry,
    )
