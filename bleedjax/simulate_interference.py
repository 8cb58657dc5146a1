"""Simulated interference: coughs, knocks and claps added to clean music at random times.

The test material of Fano Yela et al. (ICASSP 2017) in miniature: every track of a folder of
clean music gets ``events`` excerpts of interference recordings, each ``event_seconds`` long,
cut around a loud moment of a randomly chosen file (10 ms fades) and placed at a random time.
All events of a track share one gain, set so that the music-to-interference ratio over the
samples the events cover is ``snr_db``. Written:

    OUT/session/        music + interference, one file per music file (the input of ``reduce``)
    OUT/references/     the clean music (for ``bleedjax evaluate``)
    OUT/interference/   the interference alone
    OUT/truth.json      per track: the events (file, start in the noise file, start in the track,
                        length, in seconds) and the gain; ``gain``, the one factor applied to all
                        three folders (below 1 only where the session would exceed full scale)
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from bleedjax import dictionary, sessions, simulation

FADE_SECONDS = 0.01
LOUD_DB = -20.0
"""Events are cut around frames within this many dB of the noise file's loudest frame."""


def _excerpt(noise: np.ndarray, length: int, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    hop = max(1, sample_rate // 100)
    usable = noise[: len(noise) // hop * hop]
    energy = np.mean(usable.reshape(-1, hop) ** 2, axis=1) if len(usable) else np.zeros(1)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (LOUD_DB / 10))
    onset = int(rng.choice(loud)) * hop
    start = int(np.clip(onset - sample_rate // 20, 0, max(0, len(noise) - length)))
    excerpt = np.zeros(length, np.float32)
    piece = noise[start : start + length]
    excerpt[: len(piece)] = piece
    fade = min(length // 2, int(FADE_SECONDS * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        excerpt[:fade] *= ramp
        excerpt[length - fade :] *= ramp[::-1]
    return excerpt, start


def add_events(
    music: np.ndarray,
    noises: Sequence[np.ndarray],
    sample_rate: int,
    *,
    snr_db: float,
    events: int,
    event_seconds: float,
    names: Sequence[str],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[dict]]:
    """The interference for ``(tracks, samples)`` music (module docstring), as arrays.

    Returns:
        ``(tracks, samples)`` float32 interference and, per track, ``{"gain", "events"}``.
    """
    if events < 1 or event_seconds <= 0:
        raise ValueError(f"need events >= 1 and event_seconds > 0, got {events} and {event_seconds}")
    samples = music.shape[1]
    length = min(samples, round(event_seconds * sample_rate))
    interference = np.zeros(music.shape, np.float32)
    truth = []
    for index in range(music.shape[0]):
        covered = np.zeros(samples, bool)
        placed = []
        for _ in range(events):
            which = int(rng.integers(len(noises)))
            excerpt, source_start = _excerpt(noises[which], length, sample_rate, rng)
            at = int(rng.integers(samples - length + 1))
            interference[index, at : at + length] += excerpt
            covered[at : at + length] = True
            placed.append({
                "file": names[which],
                "source_start_s": source_start / sample_rate,
                "start_s": at / sample_rate,
                "length_s": length / sample_rate,
            })
        music_energy = np.sum(music[index, covered].astype(np.float64) ** 2)
        if music_energy <= 0:
            music_energy = np.sum(music[index].astype(np.float64) ** 2)
        noise_energy = np.sum(interference[index, covered].astype(np.float64) ** 2)
        gain = float(np.sqrt(music_energy / noise_energy * 10 ** (-snr_db / 10))) if noise_energy > 0 else 0.0
        interference[index] *= gain
        truth.append({"gain": gain, "events": placed})
    return interference, truth


def simulate_interference(
    music_dir: str | os.PathLike,
    noise_files: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    snr_db: float = 0.0,
    events: int = 3,
    event_seconds: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Adds interference events to every track of ``music_dir`` (module docstring).

    Returns:
        the ``truth.json`` payload.

    Raises:
        SessionError / ValueError: unreadable or empty inputs, no noise files, a sample-rate
            mismatch, bad sizes, or outputs that exist already (without ``overwrite``).
    """
    if not np.isfinite(snr_db):
        raise ValueError(f"--snr must be a finite number of dB, got {snr_db}")
    music = sessions.read_session(music_dir, min_tracks=1)
    noises, noise_rate = dictionary.read_mono(noise_files)
    if noise_rate != music.sample_rate:
        raise ValueError(
            f"{noise_files[0]}: sample rate {noise_rate} Hz differs from the music in {music_dir} "
            f"({music.sample_rate} Hz)"
        )
    out = pathlib.Path(out)
    sessions.check_output_location([music.folder], [out])
    folders = {name: out / name for name in ("session", "references", "interference")}
    if not overwrite:
        planned = [p for folder in folders.values() for p in sessions.planned_outputs(music.files, folder)]
        sessions.refuse_overwrite(planned + [out / "truth.json"])
    interference, events_of = add_events(
        music.audio, noises, music.sample_rate, snr_db=snr_db, events=events,
        event_seconds=event_seconds, names=[pathlib.Path(p).name for p in noise_files],
        rng=np.random.default_rng(seed),
    )
    tracks = dict(zip(music.track_names, events_of))
    # One gain for all three folders keeps session = references + interference; it brings the
    # session's peak to that of bleedjax simulate when the events would push it past full scale (and clip it).
    peak = float(np.max(np.abs(music.audio + interference)))
    limit = simulation.PEAK_AFTER_NORMALISATION  # as bleedjax simulate
    scale = limit / peak if peak > limit else 1.0
    sessions.write_session(music, scale * (music.audio + interference), folders["session"])
    sessions.write_session(music, scale * music.audio, folders["references"])
    sessions.write_session(music, scale * interference, folders["interference"])
    truth = {
        "sample_rate": music.sample_rate,
        "snr_db": snr_db,
        "gain": scale,
        "seed": seed,
        "noise_files": [str(p) for p in noise_files],
        "tracks": tracks,
    }
    sessions.write_json_atomic(out / "truth.json", truth)
    return truth
