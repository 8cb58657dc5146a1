"""Simulated sessions on disk: clean stems in, microphone tracks with bleed plus references out.

Layout written by :func:`simulate_folder`::

    DIR/session/      microphone tracks (one file per stem, same names and layout)
    DIR/references/   what each microphone records without bleed
    DIR/truth.json    mixing matrix, delays (samples and ms) and, for rooms, the geometry
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Literal

import jax
import numpy as np

from bleedjax import room, sessions, simulation


def simulate_arrays(
    stems: np.ndarray,
    *,
    sample_rate: int,
    bleed: Literal["linear", "room"],
    max_crosstalk_db: float = -12.0,
    seed: int = 0,
    with_delays: bool = True,
    rt60: float = 0.4,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulates bleed on ``(J, samples)`` stems; returns mics, references and the truth dict."""
    if bleed == "linear":
        result = simulation.simulate_linear(
            jax.numpy.asarray(stems),
            key=jax.random.key(seed),
            max_crosstalk_db=max_crosstalk_db,
            sample_rate=sample_rate,
            with_delays=with_delays,
        )
        mics, references, gains, delays = (np.asarray(x) for x in jax.device_get(tuple(result)))
        truth = {"bleed": "linear", "max_crosstalk_db": max_crosstalk_db}
    elif bleed == "room":
        geometry = room.random_geometry(stems.shape[0], seed=seed, rt60=rt60)
        result = room.simulate_room(stems, sample_rate=sample_rate, geometry=geometry)
        mics, references, gains, delays = result.mics, result.references, result.gains, result.delays
        truth = {"bleed": "room", "room": geometry.to_json()}
    else:
        raise ValueError(f"bleed must be 'linear' or 'room', got {bleed!r}")
    truth |= {
        "seed": seed,
        "sample_rate": sample_rate,
        "matrix": np.asarray(gains, float).round(6).tolist(),
        "delays_samples": np.asarray(delays, float).round(4).tolist(),
        "delays_ms": (np.asarray(delays, float) / sample_rate * 1e3).round(4).tolist(),
    }
    return np.asarray(mics), np.asarray(references), truth


def simulate_folder(
    stems: str | os.PathLike,
    out: str | os.PathLike,
    *,
    bleed: Literal["linear", "room"] = "linear",
    max_crosstalk_db: float = -12.0,
    seed: int = 0,
    pad: bool = False,
    overwrite: bool = False,
) -> dict:
    """Reads a folder of clean stems and writes a simulated session, its references and truth.

    Raises:
        SessionError: bad stems, ``out`` inside the stems folder, or existing outputs.
    """
    if not math.isfinite(max_crosstalk_db):
        raise ValueError(f"--max-crosstalk-db must be a finite number of dB, got {max_crosstalk_db}")
    stems, out = pathlib.Path(stems), pathlib.Path(out)
    source = sessions.read_session(stems, pad=pad)
    sessions.check_output_location([stems], [out])
    session_dir, reference_dir = out / "session", out / "references"
    if not overwrite:
        sessions.refuse_overwrite(
            sessions.planned_outputs(source.files, session_dir)
            + sessions.planned_outputs(source.files, reference_dir)
            + [out / "truth.json"]
        )
    mics, references, truth = simulate_arrays(
        source.audio,
        sample_rate=source.sample_rate,
        bleed=bleed,
        max_crosstalk_db=max_crosstalk_db,
        seed=seed,
    )
    truth["tracks"] = source.track_names
    sessions.write_session(source, mics, session_dir)
    sessions.write_session(source, references, reference_dir)
    sessions.write_json_atomic(out / "truth.json", truth)
    return truth
