"""On-the-fly bleed augmentation: pure, jittable functions of ``(stems, key)`` for one example.

Each returns :class:`Augmented`: microphone tracks with bleed, the clean targets, the true
``(J, J)`` matrix and the mask of active tracks. ``jax.vmap`` them over a batch at the call site;
the same code runs in the input pipeline on the host or inside a training step on the device.

Conventions (all kinds): a random gain per source (uniform in dB) is applied first and is part of
the targets; then a random number ``K`` of active tracks, uniform in ``[min_active_tracks, J]``,
is kept and the others are silenced: their targets and microphones are zero, and their rows and
columns of the matrix are zero.

- ``linear-paper``: ``mics[i] = Σ_j A[i, j] · targets[j]`` with ``A[i, i] ~ U(0.6, 1)`` and
  ``A[i, j] ~ U(0.05, 0.31)`` for ``i ≠ j``, the distributions of the neural bleed paper.
- ``linear-seipel``: ``A`` symmetric with unit diagonal and off-diagonal ``U(0, 10^(dB/20))``
  ([1] Sec. 3.1, :func:`bleedjax.simulation.seipel_mixing_matrix`), the maximum crosstalk ``dB``
  drawn uniformly per example, and free-field delays ``d[i, j]`` from the gains
  (:func:`bleedjax.simulation.free_field_delays`): ``mics[i] = Σ_j A[i, j] · targets[j](t − d[i, j])``
  (:func:`bleedjax.bleed_model.bleed`). ``matrix`` is ``A``; the delays are not returned.
- ``room``: one room of the impulse-response bank (:mod:`bleedjax.data.rir_bank`) drawn
  uniformly; ``images[i, j] = h[i, j] * targets_dry[j]`` (linear convolution, truncated to the
  block), ``mics[i] = Σ_j images[i, j]``, and, as in :mod:`bleedjax.room`, the target of track
  ``i`` is its own image ``images[i, i]`` (the room colouration stays, only bleed is removed).
  ``matrix[i, j] = RMS(images[i, j]) / RMS(images[j, j])`` is the effective bleed level (unit
  diagonal); ``mics = matrix @ targets`` does not hold exactly here.

References:
    [1] F. Seipel, A. Lerch, "Multi-track crosstalk reduction", AES 144th Convention, 2018.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import bleed_model, simulation
from bleedjax._types import Array, Bool, Float, PRNGKeyArray

KINDS = ("linear-paper", "linear-seipel", "room")


class Augmented(NamedTuple):
    """One augmented example (``J`` tracks, ``T`` samples)."""

    mics: Float[Array, "tracks samples"]
    targets: Float[Array, "tracks samples"]
    matrix: Float[Array, "tracks tracks"]
    active: Bool[Array, " tracks"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Static augmentation settings (hashable, so they can be ``jax.jit`` static arguments)."""

    kind: str = "linear-paper"
    sample_rate: int = 22050
    paper_diagonal: tuple[float, float] = (0.6, 1.0)
    paper_off_diagonal: tuple[float, float] = (0.05, 0.31)
    seipel_crosstalk_db: tuple[float, float] = (-18.0, -6.0)
    seipel_delays: bool = True
    gain_db: tuple[float, float] = (-6.0, 0.0)
    min_active_tracks: int = 2

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"augmentation must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @classmethod
    def from_config(cls, config) -> Settings:
        """From a ``configs/data.py`` config."""
        pair = lambda v: tuple(float(x) for x in v)
        return cls(
            kind=config.augmentation,
            sample_rate=int(config.sample_rate),
            paper_diagonal=pair(config.paper_diagonal),
            paper_off_diagonal=pair(config.paper_off_diagonal),
            seipel_crosstalk_db=pair(config.seipel_crosstalk_db),
            seipel_delays=bool(config.seipel_delays),
            gain_db=pair(config.gain_db),
            min_active_tracks=int(config.min_active_tracks),
        )


def paper_matrix(
    *,
    key: PRNGKeyArray,
    num_tracks: int,
    diagonal: tuple[float, float] = (0.6, 1.0),
    off_diagonal: tuple[float, float] = (0.05, 0.31),
) -> Float[Array, "{num_tracks} {num_tracks}"]:
    """``(J, J)`` bleed matrix with diagonal ``U(diagonal)`` and off-diagonal ``U(off_diagonal)``."""
    key_diagonal, key_off = jax.random.split(key)
    eye = jnp.eye(num_tracks, dtype=bool)
    diag = jax.random.uniform(key_diagonal, (num_tracks, num_tracks), minval=diagonal[0], maxval=diagonal[1])
    off = jax.random.uniform(key_off, (num_tracks, num_tracks), minval=off_diagonal[0], maxval=off_diagonal[1])
    return jnp.where(eye, diag, off)


def random_gain(
    stems: Float[Array, "tracks samples"], *, key: PRNGKeyArray, gain_db: tuple[float, float]
) -> Float[Array, "tracks samples"]:
    """Scales each stem by a gain drawn uniformly in dB from ``gain_db``."""
    db = jax.random.uniform(key, (stems.shape[0],), minval=gain_db[0], maxval=gain_db[1])
    return stems * (10.0 ** (db / 20.0))[:, None]


def random_active(*, key: PRNGKeyArray, num_tracks: int, min_active: int) -> Bool[Array, " {num_tracks}"]:
    """A mask with ``K ~ U{min_active, ..., J}`` active tracks at random positions."""
    key_count, key_order = jax.random.split(key)
    count = jax.random.randint(key_count, (), min(min_active, num_tracks), num_tracks + 1)
    ranks = jnp.argsort(jax.random.uniform(key_order, (num_tracks,)))
    return ranks < count


def seipel_max_delay(sample_rate: int) -> int:
    """Static bound on the free-field delays of :func:`bleedjax.simulation.free_field_delays`
    (reached at its smallest gain), in samples, for :func:`bleedjax.bleed_model.bleed`."""
    with jax.ensure_compile_time_eval():
        delay = simulation.free_field_delays(jnp.zeros((1, 1)), sample_rate=sample_rate)
    return bleed_model.max_delay_samples(np.asarray(delay))


def linear_paper(
    targets: Float[Array, "tracks samples"], *, key: PRNGKeyArray, settings: Settings
) -> tuple[Float[Array, "tracks samples"], Float[Array, "tracks tracks"]]:
    """Instantaneous bleed with the paper's matrix; returns ``(mics, matrix)``."""
    matrix = paper_matrix(
        key=key, num_tracks=targets.shape[0], diagonal=settings.paper_diagonal,
        off_diagonal=settings.paper_off_diagonal,
    )
    return matrix @ targets, matrix


def linear_seipel(
    targets: Float[Array, "tracks samples"], *, key: PRNGKeyArray, settings: Settings
) -> tuple[Float[Array, "tracks samples"], Float[Array, "tracks tracks"]]:
    """Seipel & Lerch's bleed [1] with free-field delays; returns ``(mics, matrix)``."""
    key_db, key_matrix = jax.random.split(key)
    low, high = settings.seipel_crosstalk_db
    max_db = jax.random.uniform(key_db, (), minval=low, maxval=high)
    gains = simulation.seipel_mixing_matrix(key=key_matrix, num_tracks=targets.shape[0], max_crosstalk_db=max_db)
    if not settings.seipel_delays:
        return gains @ targets, gains
    delays = simulation.free_field_delays(gains, sample_rate=settings.sample_rate)
    mics = bleed_model.bleed(targets, gains, delays, max_delay=seipel_max_delay(settings.sample_rate))
    return mics, gains


def convolve_images(
    sources: Float[Array, "tracks samples"], rirs: Float[Array, "mics tracks taps"]
) -> Float[Array, "mics tracks samples"]:
    """``images[i, j] = rirs[i, j] * sources[j]`` (linear convolution, first ``samples``)."""
    samples, taps = sources.shape[-1], rirs.shape[-1]
    n = 1 << (samples + taps - 2).bit_length()
    spectra = jnp.fft.rfft(sources, n=n)[None] * jnp.fft.rfft(rirs, n=n)
    return jnp.fft.irfft(spectra, n=n)[..., :samples]


def room_bleed(
    sources: Float[Array, "tracks samples"],
    rirs: Float[Array, "mics tracks taps"],
) -> tuple[Float[Array, "tracks samples"], Float[Array, "tracks samples"], Float[Array, "tracks tracks"]]:
    """Convolutive bleed through one room; returns ``(mics, targets, matrix)`` (module docstring)."""
    images = convolve_images(sources, rirs)
    num = sources.shape[0]
    targets = images[jnp.arange(num), jnp.arange(num)]
    rms = jnp.sqrt(jnp.mean(jnp.square(images), axis=-1))
    own = jnp.diagonal(rms)
    matrix = rms / jnp.where(own > 0, own, 1.0)[None, :]
    return images.sum(axis=1), targets, matrix


@functools.partial(jax.jit, static_argnames=("settings",))
def augment(
    stems: Float[Array, "tracks samples"],
    *,
    key: PRNGKeyArray,
    settings: Settings,
    present: Bool[Array, " tracks"] | None = None,
    rir_bank: Float[Array, "rooms tracks tracks taps"] | None = None,
) -> Augmented:
    """Random gain, random active tracks and bleed of ``settings.kind`` for one example.

    Args:
        stems: ``(J, T)`` clean stems.
        key: PRNG key.
        settings: static :class:`Settings`.
        present: ``(J,)`` tracks that exist (padding slots are ``False`` and never active);
            all by default.
        rir_bank: ``(rooms, J, J, taps)`` impulse responses, required for ``room``.

    Returns:
        :class:`Augmented` (conventions in the module docstring).
    """
    num_tracks = stems.shape[0]
    key_gain, key_active, key_bleed, key_room = jax.random.split(key, 4)
    active = random_active(key=key_active, num_tracks=num_tracks, min_active=settings.min_active_tracks)
    if present is not None:
        active = active & present
    sources = random_gain(stems, key=key_gain, gain_db=settings.gain_db) * active[:, None]
    if settings.kind == "linear-paper":
        mics, matrix = linear_paper(sources, key=key_bleed, settings=settings)
        targets = sources
    elif settings.kind == "linear-seipel":
        mics, matrix = linear_seipel(sources, key=key_bleed, settings=settings)
        targets = sources
    else:
        if rir_bank is None:
            raise ValueError("room augmentation needs rir_bank (bleedjax.data.rir_bank.load)")
        index = jax.random.randint(key_room, (), 0, rir_bank.shape[0])
        mics, targets, matrix = room_bleed(sources, rir_bank[index])
    mask = active[:, None] & active[None, :]
    return Augmented(
        mics=jnp.where(active[:, None], mics, 0.0).astype(jnp.float32),
        targets=targets.astype(jnp.float32),
        matrix=jnp.where(mask, matrix, 0.0).astype(jnp.float32),
        active=active,
    )
