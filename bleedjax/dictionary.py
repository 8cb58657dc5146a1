"""Interference dictionaries: NMF spectral templates learned from example recordings.

Supervised and semi-supervised NMF separation [1] describes one source by a dictionary ``W``
learned beforehand from examples of it alone: here examples of coughs, knocks, claps and other
interference, for :mod:`bleedjax.methods.kam_nmf` [2]. A dictionary is learned on the magnitude
spectrograms (:mod:`bleedjax.signal` layout and scaling, each file scaled to a peak of 1 and its
silent frames left out) of all examples together, by KL-NMF (:mod:`bleedjax.nmf`), and stored as
an ``.npz`` with the STFT it belongs to:

    W            (bins, components) float32, columns summing to 1
    sample_rate  Hz
    n_fft, hop   STFT sizes (bins = n_fft // 2 + 1)
    window       "hann" or "hamming"
    sources      the example files' names

References:
    [1] P. Smaragdis, B. Raj, M. Shashanka, "Supervised and semi-supervised separation of sounds
        from single-channel mixtures", ICA 2007.
    [2] D. Fano Yela, S. Ewert, D. FitzGerald, M. Sandler, "Interference reduction in music
        recordings combining kernel additive modelling and non-negative matrix factorization",
        ICASSP 2017.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import nmf, sessions, signal

SILENCE_DB = -60.0
"""Frames whose energy is this far below the file's loudest frame are left out of learning."""


@dataclasses.dataclass(frozen=True)
class Dictionary:
    """A learned dictionary and the STFT it belongs to (module docstring)."""

    W: np.ndarray
    sample_rate: int
    n_fft: int
    hop: int
    window: str = "hann"
    sources: tuple[str, ...] = ()

    @property
    def bins(self) -> int:
        return self.W.shape[0]

    @property
    def components(self) -> int:
        return self.W.shape[1]

    def check(self, sample_rate: int, n_fft: int, where: str = "dictionary") -> None:
        """Raises ``ValueError`` unless the dictionary fits audio at ``sample_rate`` analysed with
        ``n_fft``."""
        if self.bins != n_fft // 2 + 1:
            raise ValueError(
                f"{where}: has {self.bins} frequency bins, but n_fft={n_fft} needs {n_fft // 2 + 1} "
                f"(learned with n_fft={self.n_fft})"
            )
        if self.sample_rate != sample_rate:
            raise ValueError(
                f"{where}: learned at {self.sample_rate} Hz, but the audio is at {sample_rate} Hz"
            )


def read_mono(paths: Sequence[str | os.PathLike]) -> tuple[list[np.ndarray], int]:
    """Reads audio files as mono float32 (channels averaged); all must share one sample rate.

    Raises:
        ValueError: no files, an unreadable file, or differing sample rates.
    """
    if not paths:
        raise ValueError("no interference files given (need at least one WAV/FLAC example)")
    signals, rate, first = [], None, None
    for path in map(pathlib.Path, paths):
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        audio, sample_rate, _ = sessions.read_audio(path)
        if rate is not None and sample_rate != rate:
            raise ValueError(f"{path}: sample rate {sample_rate} Hz differs from {first.name} ({rate} Hz)")
        rate, first = (sample_rate, path) if rate is None else (rate, first)
        signals.append(audio.mean(axis=0))
    return signals, rate


def example_magnitudes(
    signals: Sequence[np.ndarray], *, n_fft: int, hop: int, window: str = "hann"
) -> np.ndarray:
    """Magnitude spectrograms of the examples, each scaled to a peak of 1, silent frames
    (:data:`SILENCE_DB`) dropped, concatenated along time: ``(bins, frames)``."""
    parts = []
    for x in signals:
        if x.shape[-1] < n_fft:
            x = np.pad(x, (0, n_fft - x.shape[-1]))
        magnitude = np.asarray(jnp.abs(signal.stft(jnp.asarray(x), n_fft=n_fft, hop=hop, window_name=window)))
        peak = magnitude.max()
        if peak <= 0:
            continue
        magnitude = magnitude / peak
        energy = np.sum(magnitude**2, axis=0)
        parts.append(magnitude[:, energy >= energy.max() * 10 ** (SILENCE_DB / 10)])
    if not parts:
        raise ValueError("the interference examples are silent")
    return np.concatenate(parts, axis=1)


def learn(
    signals: Sequence[np.ndarray],
    sample_rate: int,
    *,
    components: int = 32,
    n_fft: int = 2048,
    hop: int = 512,
    window: str = "hann",
    iterations: int = 200,
    sources: Sequence[str] = (),
    key: jax.Array,
) -> Dictionary:
    """Learns a ``(bins, components)`` dictionary by KL-NMF of the examples' magnitudes.

    Args:
        signals: mono example recordings of the interference.
        sample_rate: their sample rate in Hz.
        components: dictionary size.
        n_fft, hop, window: the STFT (the method using the dictionary must use the same).
        iterations: multiplicative updates.
        sources: names stored with the dictionary.
        key: PRNG key of the random initialisation.
    """
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    V = jnp.asarray(example_magnitudes(signals, n_fft=n_fft, hop=hop, window=window))
    W, H = nmf.random_init(V, components, key=key)
    result = nmf.nmf(V, W, H, beta=1.0, iterations=iterations)
    W, _ = nmf.normalise_columns(result.W, result.H)
    return Dictionary(np.asarray(W, np.float32), int(sample_rate), n_fft, hop, window, tuple(sources))


def learn_from_files(
    paths: Sequence[str | os.PathLike], *, components: int = 32, n_fft: int = 2048, hop: int = 512,
    iterations: int = 200, seed: int = 0,
) -> Dictionary:
    """:func:`learn` on audio files (:func:`read_mono`)."""
    signals, rate = read_mono(paths)
    return learn(
        signals, rate, components=components, n_fft=n_fft, hop=hop, iterations=iterations,
        sources=[pathlib.Path(p).name for p in paths], key=jax.random.key(seed),
    )


def save(dictionary: Dictionary, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Writes the dictionary atomically; refuses to replace a file unless ``overwrite``."""
    path = pathlib.Path(path)
    if not overwrite:
        sessions.refuse_overwrite([path])
    sessions.write_npz_atomic(
        path,
        {
            "W": dictionary.W,
            "sample_rate": np.int64(dictionary.sample_rate),
            "n_fft": np.int64(dictionary.n_fft),
            "hop": np.int64(dictionary.hop),
            "window": np.str_(dictionary.window),
            "sources": np.asarray(dictionary.sources, dtype=str),
        },
    )


def load(path: str | os.PathLike) -> Dictionary:
    """Reads a dictionary written by :func:`save`.

    Raises:
        ValueError: missing or unreadable file, missing fields, or a malformed ``W``.
    """
    path = pathlib.Path(path)
    made_by = "make one with `bleedjax learn-dictionary NOISE_FILES... --out dict.npz`"
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a dictionary .npz (not an .npz archive at all); {made_by}")
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a dictionary .npz ({' '.join(str(error).split())}); {made_by}") from None
    missing = [name for name in ("W", "sample_rate", "n_fft", "hop") if name not in fields]
    if missing:
        raise ValueError(f"{path}: not a dictionary .npz (missing {', '.join(missing)})")
    W = np.asarray(fields["W"], np.float32)
    if W.ndim != 2 or not np.all(np.isfinite(W)) or np.any(W < 0):
        raise ValueError(f"{path}: W must be a finite non-negative (bins, components) matrix")
    return Dictionary(
        W, int(fields["sample_rate"]), int(fields["n_fft"]), int(fields["hop"]),
        str(fields.get("window", "hann")), tuple(str(s) for s in fields.get("sources", ())),
    )
