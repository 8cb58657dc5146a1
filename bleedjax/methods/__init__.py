"""Bleed-reduction methods, each a batch function behind one registry that the CLI uses.

A method takes a zero-padded batch ``(sessions, tracks, samples)`` and returns the cleaned batch
and a ``(sessions, tracks, tracks)`` bleed matrix (λ_ij: how much of track j is in track i).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bleedjax.methods import spectral_subtraction


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method: its default config and its batch function."""

    name: str
    default_config: Callable[[], ml_collections.ConfigDict]
    reduce_batch: Callable[[np.ndarray, ml_collections.ConfigDict], tuple[np.ndarray, np.ndarray]]


def _spectral_subtraction_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dataclasses.asdict(spectral_subtraction.Settings()))


def _spectral_subtraction_batch(audio: np.ndarray, config: ml_collections.ConfigDict):
    settings = spectral_subtraction.Settings(**config.to_dict())
    result = spectral_subtraction.reduce_sessions(jnp.asarray(audio, jnp.float32), settings)
    cleaned, lam = jax.device_get((result.cleaned, result.lam))
    return np.asarray(cleaned), np.asarray(lam)


METHODS = {
    "spectral-subtraction": Method(
        "spectral-subtraction", _spectral_subtraction_config, _spectral_subtraction_batch
    ),
}


def get_method(name: str) -> Method:
    """Looks a method up by its CLI name."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]
