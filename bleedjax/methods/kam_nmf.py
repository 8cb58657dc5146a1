"""KAM + NMF: removing non-stationary interference (coughs, knocks, claps) from a music track.

After Fano Yela, Ewert, FitzGerald & Sandler, ICASSP 2017 [1]. One track at a time (a single
microphone suffices), on the magnitude spectrogram ``V = |X|`` (scaled to a peak of 1):

1. **Semi-supervised NMF** ([2], :mod:`bleedjax.nmf`): ``V ≈ W_n H_n + W_m H_m`` with the
   interference dictionary ``W_n`` learned beforehand from examples (:mod:`bleedjax.dictionary`)
   and kept fixed, and a free music dictionary ``W_m``; β-divergence (KL by default) with an
   optional L1 penalty on the activations. ``N₀ = W_n H_n`` and ``M₀ = W_m H_m`` are the NMF
   estimates of interference and music.
2. **Locating the interference** through its activations: the share of the interference in
   each frame, ``r_t = Σ_f N₀ / Σ_f (N₀ + M₀)``; frames with ``r_t > detection_threshold`` are
   corrupted, all others pass unchanged.
3. **KAM with a similarity kernel** [1, 3] (:mod:`bleedjax.similarity`): for every frame the ``k``
   frames most similar to it in the NMF music estimate ``M₀`` (with ``context`` frames of context
   and at least ``min_separation`` frames away, so that the interference event does not find
   itself); the music in a corrupted frame is the median of the current music estimate over
   those frames, ``M = min(median, V)``. Distances between columns of ``M₀ = W_m H_m`` are
   computed exactly as distances between columns of ``R H_m`` with ``W_m = Q R`` (QR), so in
   ``components`` rather than ``bins`` dimensions. With ``auto_k``, ``k`` is chosen per track
   among ``k_candidates`` from the hubness of the k-NN graph [4] (:mod:`bleedjax.hubness`: the
   largest candidate whose k-occurrence skewness is at most ``hubness_threshold``).
4. **Soft mask**: the interference is the NMF estimate ``N = N₀ V / (N₀ + M₀)``, the music
   ``M``, and the Wiener gain ``G = M² / (M² + N²)`` in corrupted frames (1 elsewhere); the
   music estimate is refined as ``G V`` and steps 3–4 repeat ``kam_iterations`` times.

The cleaned track is ``istft(G X)`` and the interference estimate ``istft((1 − G) X)``. Two
ablations use the same code (``variant``): ``"nmf"`` is plain semi-supervised NMF with the
Wiener gain ``M₀² / (M₀² + N₀²)`` in every frame, and ``"kam"`` is KAM alone (REPET-SIM-like
[3]: similarity and median on the mixture ``V`` itself, interference ``V − M``, every frame).

References:
    [1] D. Fano Yela, S. Ewert, D. FitzGerald, M. Sandler, "Interference reduction in music
        recordings combining kernel additive modelling and non-negative matrix factorization",
        ICASSP 2017.
    [2] P. Smaragdis, B. Raj, M. Shashanka, "Supervised and semi-supervised separation of sounds
        from single-channel mixtures", ICA 2007.
    [3] Z. Rafii, B. Pardo, "Music/voice separation using the similarity matrix", ISMIR 2012.
    [4] D. Fano Yela, D. Stowell, M. Sandler, "Does k matter? k-NN hubness analysis for kernel
        additive modelling vocal separation", LVA/ICA 2018.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bleedjax import hubness, nmf, signal, similarity
from bleedjax._types import Array, Float, Int

EPS = 1e-12
# The most neighbours of the similarity kernel; Fano Yela et al. use k of 5-20.
MAX_K = 64
VARIANTS = ("kam-nmf", "nmf", "kam")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Hyperparameters; mirrored by ``configs/kam_nmf.py`` (frames at 22.05 kHz, hop 512 = 23 ms)."""

    n_fft: int = 2048
    hop: int = 512
    window: str = "hann"
    variant: str = "kam-nmf"
    music_components: int = 32
    beta: float = 1.0
    nmf_iterations: int = 100
    sparsity: float = 0.0
    detection_threshold: float = 0.1
    k: int = 9
    auto_k: bool = False
    k_candidates: Sequence[int] = (3, 5, 7, 9, 11, 15, 19)
    hubness_threshold: float = 1.0
    context: int = 2
    min_separation: int = 43
    kam_iterations: int = 2
    block: int = 256
    seed: int = 0

    def __post_init__(self):
        if self.window not in ("hann", "hamming"):
            raise ValueError(f"window must be 'hann' or 'hamming', got {self.window!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if float(self.beta) not in nmf.BETAS:
            raise ValueError(f"beta must be 0, 1 or 2, got {self.beta}")
        if self.music_components < 1 or self.nmf_iterations < 0 or self.kam_iterations < 1:
            raise ValueError("need music_components >= 1, nmf_iterations >= 0 and kam_iterations >= 1")
        if self.k < 1 or self.context < 0 or self.min_separation < 0 or self.block < 1:
            raise ValueError("need k >= 1, context >= 0, min_separation >= 0 and block >= 1")
        if not 0.0 <= self.detection_threshold < 1.0:
            raise ValueError(f"detection_threshold must be in [0, 1), got {self.detection_threshold}")
        if self.sparsity < 0:
            raise ValueError(f"sparsity must be >= 0, got {self.sparsity}")
        object.__setattr__(self, "k_candidates", hubness.check_candidates(self.k_candidates))
        if max(self.k, *self.k_candidates) > MAX_K:
            raise ValueError(f"k and k_candidates must be at most {MAX_K} (the median's selection network grows "
                             f"with k), got {max(self.k, *self.k_candidates)}")

    @property
    def candidates(self) -> tuple[int, ...]:
        """The values of ``k`` to choose from: ``k_candidates`` with ``auto_k``, else ``(k,)``."""
        return self.k_candidates if self.auto_k else (self.k,)


class Result(NamedTuple):
    """Output of :func:`reduce_track`.

    Attributes:
        cleaned: the music estimate.
        interference: the interference estimate (``cleaned + interference`` is the input).
        corruption: ``(frames,)`` the NMF's interference share ``r_t`` per frame.
        k: the number of neighbours used (``settings.k`` unless ``auto_k``).
    """

    cleaned: Float[Array, " samples"]
    interference: Float[Array, " samples"]
    corruption: Float[Array, " frames"]
    k: Int[Array, ""]


def music_features(W: Float[Array, "bins components"], H: Float[Array, "components frames"], atoms: int):
    """``R H_m`` with ``W_m = Q R``: columns as far apart as the columns of ``W_m H_m``."""
    R = jnp.linalg.qr(W[:, atoms:], mode="r")
    return jnp.matmul(R, H[atoms:], precision=jax.lax.Precision.HIGHEST)


def initial_factors(
    dictionary: Float[Array, "bins atoms"], mean: Float[Array, ""] | float, frames: int, settings: Settings
) -> tuple[Float[Array, "bins components"], Float[Array, "components frames"]]:
    """Step 1's start: ``W = [W_n, random W_m]`` and random ``H`` for a spectrogram of ``frames``
    frames and mean ``mean``, at :func:`bleedjax.nmf.random_init`'s scale. Column ``t`` of ``H``
    is drawn from its own key (``fold_in(key, t)``), so the first frames of a track padded into a
    batch start where the track alone does."""
    atoms = dictionary.shape[1]
    components = atoms + settings.music_components
    W_random, _ = nmf.random_init_from_mean(mean, (dictionary.shape[0], 1), components, key=jax.random.key(settings.seed))
    key_h = jax.random.fold_in(jax.random.key(settings.seed), 1)
    columns = jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(key_h, t), (components,)))(jnp.arange(frames))
    H = jnp.sqrt(jnp.maximum(mean, EPS) / components) * jnp.abs(columns.T) + EPS
    return jnp.concatenate([dictionary, W_random[:, atoms:]], axis=1), H


def estimates(
    W: Float[Array, "bins components"], H: Float[Array, "components frames"], atoms: int
) -> tuple[Float[Array, "bins frames"], Float[Array, "bins frames"]]:
    """The NMF estimates ``N₀ = W_n H_n`` (interference) and ``M₀ = W_m H_m`` (music)."""
    N0 = jnp.matmul(W[:, :atoms], H[:atoms], precision=jax.lax.Precision.HIGHEST)
    M0 = jnp.matmul(W[:, atoms:], H[atoms:], precision=jax.lax.Precision.HIGHEST)
    return N0, M0


def interference_share(N0, M0, valid: Float[Array, " frames"]) -> Float[Array, " frames"]:
    """Step 2's ``r_t = Σ_f N₀ / Σ_f (N₀ + M₀)`` (0 in padding frames)."""
    return jnp.sum(N0, axis=0) / jnp.maximum(jnp.sum(N0 + M0, axis=0), EPS) * valid


def nmf_gain(N0, M0) -> Float[Array, "bins frames"]:
    """The ``"nmf"`` variant's Wiener gain ``M₀² / (M₀² + N₀²)``."""
    return M0**2 / jnp.maximum(M0**2 + N0**2, EPS)


def start_gain(N0, M0) -> Float[Array, "bins frames"]:
    """The music gain before step 3: ``M₀ / (M₀ + N₀)``."""
    return M0 / jnp.maximum(M0 + N0, EPS)


def kam_gain(
    median: Float[Array, "bins frames"],
    V: Float[Array, "bins frames"],
    N0: Float[Array, "bins frames"],
    M0: Float[Array, "bins frames"],
    corrupted: Float[Array, " frames"],
) -> Float[Array, "bins frames"]:
    """Step 4: ``M = min(median, V)``, ``N = N₀ V / (N₀ + M₀)`` and ``G = M² / (M² + N²)`` in
    corrupted frames, 1 elsewhere."""
    M = jnp.minimum(median, V)
    N = N0 * V / jnp.maximum(N0 + M0, EPS)
    return jnp.where(corrupted[None, :] > 0, M**2 / jnp.maximum(M**2 + N**2, EPS), 1.0)


class Kernel(NamedTuple):
    """The similarity kernel of one track: neighbours for the largest candidate ``k`` and the
    index of the ``k`` used among :attr:`Settings.candidates`."""

    neighbours: Int[Array, "frames k"]
    index: Int[Array, ""]

    def median(self, values: Float[Array, "bins frames"], settings: Settings) -> Float[Array, "bins frames"]:
        """The median of ``values`` over every frame's chosen neighbours."""
        return hubness.chosen_median(values, self.neighbours, self.index, settings.candidates, block=settings.block)

    def k(self, settings: Settings) -> Int[Array, ""]:
        return jnp.asarray(settings.candidates)[self.index]


def similarity_kernel(features: Float[Array, "dims frames"], settings: Settings, valid: Float[Array, " frames"]) -> Kernel:
    """Step 3's neighbours by ``features`` (context stacked here), ``k`` fixed or by hubness [4]."""
    if max(settings.candidates) >= features.shape[-1]:
        raise ValueError(f"k = {max(settings.candidates)} neighbours need more than the {features.shape[-1]} frames "
                         "of the track; lower k (or k_candidates)")
    stacked = similarity.stack_context(features, settings.context, valid)
    neighbours, index, _ = hubness.auto_neighbours(
        stacked, candidates=settings.candidates, threshold=settings.hubness_threshold,
        min_separation=settings.min_separation, valid=valid, block=settings.block,
    )
    return Kernel(neighbours, index)


def soft_mask(
    V: Float[Array, "bins frames"],
    dictionary: Float[Array, "bins atoms"],
    settings: Settings,
    valid: Float[Array, " frames"],
) -> tuple[Float[Array, "bins frames"], Float[Array, " frames"], Int[Array, ""]]:
    """Steps 1–4 of the module docstring on one magnitude spectrogram.

    Args:
        V: ``(bins, frames)`` magnitude spectrogram, peak about 1.
        dictionary: ``(bins, atoms)`` fixed interference dictionary ``W_n``.
        settings: hyperparameters.
        valid: ``(frames,)`` 1 for real frames, 0 for zero padding.

    Returns:
        the ``(bins, frames)`` music gain ``G`` in [0, 1], the ``(frames,)`` share ``r_t`` and
        the ``k`` used (``settings.k`` for the ``"nmf"`` variant, which has no kernel).
    """
    if settings.variant == "kam":
        kernel = similarity_kernel(V, settings, valid)
        M = jnp.minimum(kernel.median(V, settings), V)
        gain = M**2 / jnp.maximum(M**2 + (V - M) ** 2, EPS)
        return gain, jnp.zeros(V.shape[1]), kernel.k(settings)
    atoms = dictionary.shape[1]
    mean = jnp.sum(V * valid[None, :]) / (V.shape[0] * jnp.maximum(jnp.sum(valid), 1.0))
    W, H = initial_factors(dictionary, mean, V.shape[1], settings)
    fit = nmf.nmf(V, W, H, beta=settings.beta, iterations=settings.nmf_iterations,
                  sparsity=settings.sparsity, fixed=atoms, weights=valid)
    N0, M0 = estimates(fit.W, fit.H, atoms)
    share = interference_share(N0, M0, valid)
    if settings.variant == "nmf":
        return nmf_gain(N0, M0), share, jnp.asarray(settings.k)
    corrupted = (share > settings.detection_threshold).astype(jnp.float32)
    kernel = similarity_kernel(music_features(fit.W, fit.H, atoms), settings, valid)

    def refine(gain, _):
        return kam_gain(kernel.median(gain * V, settings), V, N0, M0, corrupted), None

    gain, _ = jax.lax.scan(refine, start_gain(N0, M0), None, length=settings.kam_iterations)
    return gain, share, kernel.k(settings)


@functools.partial(jax.jit, static_argnames=("settings",))
def reduce_track(
    audio: Float[Array, " samples"],
    dictionary: Float[Array, "bins atoms"],
    settings: Settings = Settings(),
    length: Int[Array, ""] | None = None,
) -> Result:
    """Removes non-stationary interference from one track (module docstring).

    Args:
        audio: ``(samples,)`` the track, possibly zero-padded at the end.
        dictionary: ``(n_fft // 2 + 1, atoms)`` interference dictionary for the same STFT.
        settings: hyperparameters.
        length: the true length when ``audio`` is padded (padding frames are ignored).

    Returns:
        :class:`Result`.
    """
    transform = {"n_fft": settings.n_fft, "hop": settings.hop, "window_name": settings.window}
    if audio.ndim != 1 or dictionary.ndim != 2:
        raise ValueError(f"need (samples,) audio and a (bins, atoms) dictionary, got shapes {audio.shape} and "
                         f"{dictionary.shape}; reduce_tracks takes (tracks, samples)")
    X = signal.stft(audio, **transform)
    if dictionary.shape[0] != X.shape[0]:
        raise ValueError(f"dictionary has {dictionary.shape[0]} bins, n_fft={settings.n_fft} needs {X.shape[0]}")
    length = audio.shape[-1] if length is None else length
    valid = signal.frame_mask(length, X.shape[1], n_fft=settings.n_fft, hop=settings.hop)
    V = jnp.abs(X)
    V = V / jnp.maximum(jnp.max(V * valid[None, :]), EPS)
    gain, share, k = soft_mask(V, dictionary, settings, valid)
    cleaned = signal.istft(gain * X, length=audio.shape[-1], valid_length=length, **transform)
    return Result(cleaned, audio - cleaned, share, k)


@functools.partial(jax.jit, static_argnames=("settings",))
def reduce_tracks(
    audio: Float[Array, "tracks samples"],
    dictionary: Float[Array, "bins atoms"],
    settings: Settings = Settings(),
    lengths: Int[Array, " tracks"] | None = None,
) -> Result:
    """:func:`reduce_track` vmapped over zero-padded tracks (of any sessions)."""
    if lengths is None:
        lengths = jnp.full(audio.shape[0], audio.shape[-1])
    return jax.vmap(reduce_track, in_axes=(0, None, None, 0))(audio, dictionary, settings, lengths)
