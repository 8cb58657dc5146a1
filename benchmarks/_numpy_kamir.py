"""KAMIR (Prätzlich et al., ICASSP 2015 [1]) in plain NumPy/SciPy, step by step as [1] writes it.

This is the reference that ``speed_kamir.py`` compares :mod:`bleedjax.methods.kamir` against. It
imports neither JAX nor bleedjax, so its time and memory are NumPy's and SciPy's alone. It runs
the same algorithm as bleedjax, with the same settings, in **float32** (the dtype of
``scipy.signal.stft`` for float32 input) and loops over sources and channels:

    X_i = stft(x_i)  (``scipy.signal.stft``: same window, n_fft and hop as bleedjax, whose STFT
                      equals SciPy's defaults: boundary='zeros', padded=True, scaling='spectrum')
    V_i = |X_i|²     (optionally |X_i| divided by its 5 % time quantile per bin: gain equalisation),
                      divided by its peak over the session (all V_i together), as bleedjax does
                      so that ``EPS`` means −120 dB of the peak at any input level
    λ_ij = 1 for i ∈ φ(j), else ρ;   P_j = mean_{i ∈ φ(j)} V_i
    repeat L times:
      1. Wiener images of the current model, W_ij = λ_ij P_j / V̂_i, V̂_i = Σ_j λ_ij P_j, and
         P_j = mean_{i ∈ φ(j)} |Ŷ_ij|² / λ_ij  with  |Ŷ_ij|² = W_ij² V_i
      2. optionally P_j ← ``scipy.ndimage.median_filter(P_j, footprint, mode="reflect")`` (KAM [2])
      3. λ_ij(f) ← λ_ij(f) (Σ_t P_j V_i V̂_i^(β−2) / Σ_t P_j V̂_i^(β−1))^γ(β)   ([3] Eq. 4.1,
         γ(β) = 1/(2−β) for β < 1, 1 for 1 ≤ β ≤ 2, 1/(β−1) above: the MM exponent of [3] Table 2)
      4. normalise λ ("paper": each source's own channels average 1; "channel": Σ_j λ_ij = 1),
         then floor it at ``min_leakage``
    output of microphone i: istft(Σ_{j: i∈φ(j)} W_ij · X_i), or with the sigmoid gain
    g(W) = 1 − 1 / (1 + exp(s (W − τ))) of [1]'s fast variant.

``|Ŷ_ij|²`` is computed as ``W_ij² V_i`` (``W`` is real), not from complex images: what anyone
writing it in NumPy would do, and the same arithmetic bleedjax does in another order. Constants
(``EPS`` added to ``V̂`` and to the denominators) are bleedjax's.

References:
    [1] T. Prätzlich, R. M. Bittner, A. Liutkus, M. Müller, "Kernel additive modeling for
        interference reduction in multi-channel music recordings", ICASSP 2015.
    [2] A. Liutkus, D. Fitzgerald, Z. Rafii, B. Pardo, L. Daudet, "Kernel additive models for
        source separation", IEEE Trans. Signal Processing 62(16), 2014.
    [3] C. Févotte, J. Idier, "Algorithms for nonnegative matrix factorization with the
        β-divergence", Neural Computation 23(9), 2011.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager

import numpy as np
import scipy.ndimage
import scipy.signal
import scipy.special

EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class Settings:
    """The same fields and defaults as ``bleedjax.methods.kamir.Settings``, so that
    ``Settings(**dataclasses.asdict(bleedjax_settings))`` works."""

    n_fft: int = 4096
    hop: int = 1024
    window: str = "hann"
    iterations: int = 4
    rho: float = 0.1
    update_lambda: bool = True
    beta: float = 0.0
    update_rule: str = "mm"
    normalisation: str = "paper"
    min_leakage: float = 1e-3
    kernel: str = "none"
    kernel_size: int = 9
    sigmoid: bool = False
    sigmoid_slope: float = 160.0
    sigmoid_threshold: float = 0.25
    gain_equalisation: bool = False
    equalisation_quantile: float = 0.05
    bound_quantile: float = 0.0
    bound_headroom: float = 2.0
    bound_frames: int = 64
    bound_band: int = 16

    def __post_init__(self):
        if self.bound_quantile:
            raise ValueError("the NumPy reference is the paper's KAMIR: it has no ratio-floor bound "
                             f"(bound_quantile must be 0, got {self.bound_quantile})")

    def footprint(self) -> np.ndarray | None:
        """``(bins_extent, frames_extent)`` boolean footprint of the KAM kernel, or ``None``."""
        size = self.kernel_size
        if self.kernel == "none":
            return None
        if self.kernel == "horizontal":
            return np.ones((1, size), dtype=bool)
        if self.kernel == "vertical":
            return np.ones((size, 1), dtype=bool)
        if self.kernel == "cross":
            footprint = np.zeros((size, size), dtype=bool)
            footprint[size // 2, :] = True
            footprint[:, size // 2] = True
            return footprint
        raise ValueError(f"unknown kernel {self.kernel!r}")


PRESETS = {
    "K1": {"iterations": 0, "rho": 1.0, "update_lambda": False, "sigmoid": False},
    "K2": {"iterations": 0, "rho": 0.1, "update_lambda": False, "sigmoid": False},
    "K3": {"iterations": 4, "rho": 0.1, "update_lambda": False, "sigmoid": False},
    "K4": {"iterations": 4, "rho": 0.1, "update_lambda": True, "sigmoid": False},
    "K5": {"iterations": 1, "rho": 0.1, "update_lambda": False, "sigmoid": True},
}
"""A copy of ``bleedjax.methods.kamir.PRESETS`` (``speed_kamir.py --check`` compares them)."""


@contextmanager
def _stage(timings: dict | None, name: str):
    start = time.perf_counter()
    yield
    if timings is not None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def stft(audio: np.ndarray, settings: Settings) -> np.ndarray:
    """``(I, samples)`` float32 → ``(I, F, T)`` complex64 with ``scipy.signal.stft``'s defaults."""
    _, _, spectrogram = scipy.signal.stft(
        audio,
        window=settings.window,
        nperseg=settings.n_fft,
        noverlap=settings.n_fft - settings.hop,
    )
    return spectrogram


def istft(spectrogram: np.ndarray, length: int, settings: Settings) -> np.ndarray:
    """Inverse of :func:`stft`, cut to ``length`` samples."""
    _, audio = scipy.signal.istft(
        spectrogram,
        window=settings.window,
        nperseg=settings.n_fft,
        noverlap=settings.n_fft - settings.hop,
    )
    return audio[..., :length].astype(np.float32)


def model_power(lam: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """``V̂_i = Σ_j λ_ij P_j + EPS``: ``(F, I, J)``, ``(J, F, T)`` → ``(I, F, T)``."""
    _, num_mics, num_sources = lam.shape
    modelled = np.full((num_mics, *psd.shape[1:]), EPS, dtype=psd.dtype)
    for i in range(num_mics):
        for j in range(num_sources):
            modelled[i] += lam[:, i, j, None] * psd[j]
    return modelled


def estimate(power: np.ndarray, phi: np.ndarray, settings: Settings, timings: dict | None = None):
    """Algorithm 1 of [1] on ``(I, F, T)`` power spectrograms: Λ ``(F, I, J)`` and P ``(J, F, T)``."""
    num_mics, num_bins, num_frames = power.shape
    num_sources = phi.shape[1]
    owners = [np.flatnonzero(phi[:, j]) for j in range(num_sources)]
    lam = np.empty((num_bins, num_mics, num_sources), np.float32)
    lam[:] = np.where(phi, 1.0, settings.rho).astype(np.float32)
    psd = np.zeros((num_sources, num_bins, num_frames), np.float32)
    for j, mics in enumerate(owners):
        for i in mics:
            psd[j] += power[i]
        psd[j] /= max(len(mics), 1)
    footprint = settings.footprint()

    for iteration in range(settings.iterations):
        with _stage(timings, "psd update (Wiener images)"):
            if iteration == 0:
                new_psd = psd
            else:
                modelled = model_power(lam, psd)
                new_psd = np.zeros_like(psd)
                for j, mics in enumerate(owners):
                    for i in mics:
                        gain = lam[:, i, j, None]
                        wiener = gain * psd[j] / modelled[i]
                        new_psd[j] += wiener * wiener * power[i] / gain
                    new_psd[j] /= max(len(mics), 1)
            psd = new_psd
        if footprint is not None:
            with _stage(timings, "median filter"):
                for j in range(num_sources):
                    psd[j] = scipy.ndimage.median_filter(
                        psd[j], footprint=footprint, mode="reflect"
                    )
        if settings.update_lambda:
            with _stage(timings, "lambda update"):
                modelled = model_power(lam, psd)
                new_lam = np.empty_like(lam)
                for i in range(num_mics):
                    numerator_weight, denominator_weight = _update_weights(power[i], modelled[i], settings.beta)
                    for j in range(num_sources):
                        numerator = np.sum(psd[j] * numerator_weight, axis=-1)
                        denominator = np.sum(psd[j] * denominator_weight, axis=-1)
                        ratio = numerator / (denominator + EPS)
                        exponent = mm_exponent(settings.beta) if settings.update_rule == "mm" else 1.0
                        new_lam[:, i, j] = lam[:, i, j] * ratio ** exponent
                lam = normalise_lambda(new_lam, phi, owners, settings)
    return lam, psd


def _update_weights(power: np.ndarray, modelled: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``power · V̂^(β−2)`` and ``V̂^(β−1)``, by products for β = 0, 1, 2 as bleedjax does (a
    general power is several times slower in NumPy too)."""
    if beta == 0.0:
        inverse = 1.0 / modelled
        return power * inverse * inverse, inverse
    if beta == 1.0:
        return power / modelled, np.ones_like(modelled)
    if beta == 2.0:
        return power, modelled
    return power * modelled ** (beta - 2.0), modelled ** (beta - 1.0)


def mm_exponent(beta: float) -> float:
    """The exponent of the multiplicative update that makes it a majorisation–minimisation step
    ([3] Table 2), as ``bleedjax.methods.kamir.mm_exponent``."""
    if beta < 1.0:
        return 1.0 / (2.0 - beta)
    if beta <= 2.0:
        return 1.0
    return 1.0 / (beta - 1.0)


def normalise_lambda(
    lam: np.ndarray, phi: np.ndarray, owners: list, settings: Settings
) -> np.ndarray:
    """Step 4: the paper's per-source or the footnote's per-channel normalisation, then the floor."""
    lam = lam.copy()
    if settings.normalisation == "paper":
        for j, mics in enumerate(owners):
            own = lam[:, mics, j].sum(axis=1) / max(len(mics), 1)
            lam[:, :, j] /= (own + EPS)[:, None]
    else:
        lam /= lam.sum(axis=2, keepdims=True) + EPS
    return np.maximum(lam, np.float32(settings.min_leakage))


def output_masks(
    lam: np.ndarray, psd: np.ndarray, phi: np.ndarray, settings: Settings
) -> np.ndarray:
    """``Σ_{j: i∈φ(j)} λ_ij P_j / V̂_i`` per microphone ``(I, F, T)``, or its sigmoid gain."""
    modelled = model_power(lam, psd)
    masks = np.zeros_like(modelled)
    for i in range(phi.shape[0]):
        for j in np.flatnonzero(phi[i]):
            masks[i] += lam[:, i, j, None] * psd[j]
        masks[i] /= modelled[i]
    if settings.sigmoid:
        masks = scipy.special.expit(settings.sigmoid_slope * (masks - settings.sigmoid_threshold))
    return masks.astype(np.float32)


def reduce_session_numpy(
    audio: np.ndarray, phi: np.ndarray, settings: Settings, timings: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """KAMIR on one session.

    Args:
        audio: ``(I, samples)`` float32 microphone tracks.
        phi: ``(I, J)`` boolean channel selection (``np.eye(I, dtype=bool)``: mic j ↔ source j).
        settings: :class:`Settings` (or any object with its fields).
        timings: if given, seconds per stage are added to it.

    Returns:
        ``(cleaned, lam)``: ``(I, samples)`` float32 cleaned tracks and ``(F, I, J)`` Λ.
    """
    audio = np.asarray(audio, np.float32)
    phi = np.asarray(phi, bool)
    with _stage(timings, "stft"):
        spectrogram = stft(audio, settings)
    with _stage(timings, "power"):
        magnitude = np.abs(spectrogram)
        if settings.gain_equalisation:
            level = np.quantile(magnitude, settings.equalisation_quantile, axis=-1, keepdims=True)
            magnitude = magnitude / np.where(level > 0, level, 1.0).astype(np.float32)
        power = magnitude * magnitude
        peak = power.max()
        power /= peak if peak > 0 else 1.0
    lam, psd = estimate(power, phi, settings, timings)
    with _stage(timings, "masks"):
        cleaned = output_masks(lam, psd, phi, settings) * spectrogram
    with _stage(timings, "istft"):
        cleaned = istft(cleaned, audio.shape[-1], settings)
    return cleaned, lam
