"""Spectral subtraction (Seipel & Lerch, AES 2018 [1]) in plain NumPy/SciPy, as the paper writes it.

This is the reference that the benchmarks compare :mod:`bleedjax.methods.spectral_subtraction`
against, for speed (``speed_spectral_subtraction.py``) and quality. It imports neither JAX nor
bleedjax, so its time and memory are NumPy's and SciPy's alone.

What is literal:
    * ``scipy.signal.stft`` / ``scipy.signal.istft`` (Hamming, 4096/2048 in [1]).
    * For every target track ``i``, momentum gradient descent on Eq. (1),
      ``C_i(λ) = Σ_{k,n} (X_i − Σ_{j≠i} λ_ij X_j)²``, where EVERY iteration makes a pass over the
      magnitude spectrograms: the residual ``r = X_i − Σ_j λ_ij X_j``, the cost ``C = Σ r²`` and the
      gradient ``∂C/∂λ_j = −2 Σ r X_j``. Eqs. (2)–(6): ``v ← β v + ∇C``, ``λ ← max(λ − γ(m) v, 0)``,
      ``γ(m+1) = 0.99 γ(m)``; stop when ``|C(m) − C(m−1)| < δ C(0)`` on ``STOP_PATIENCE``
      consecutive iterations (bleedjax's rule since commit ba78e39; [1] stops at the first).
    * Eq. (7), ``Ŝ_i = max(X_i − s Σ_{j≠i} λ_ij X_j, 0) · e^{i∠X_i}``.

What is taken from bleedjax (``descend_row``) so that both take the same iterations:
    * The normalisation: the descent runs on unit-energy spectrograms (``λ̃_ij = λ_ij ‖X_j‖ /
      ‖X_i‖``) with the cost multiplied by ``curvature / (γ(0) · λmax(2 Ĝ_{−i,−i}))``, ``Ĝ`` the
      Gram matrix of the unit-energy spectrograms. That constant needs the largest eigenvalue of
      the Hessian, so ``G = X Xᵀ`` is computed once per session for it (one extra pass); the
      descent itself never uses ``G``.
    * The clamp is the box ``0 ≤ λ ≤ max_lambda`` (∞ by default, i.e. [1]'s ``λ ≥ 0``), and the
      momentum of a coordinate that the clamp stopped is dropped (projected heavy ball).
    * The descent runs in float64: the stopping test compares two costs that are sums over
      ~10⁷ bins and differ by ``δ = 10⁻¹⁰`` of ``C(0)``, which float32 cannot resolve.

The speed benchmark checks every run that both give the same iteration counts and λ, so a
change to bleedjax's descent that this file does not follow shows up there.

:func:`descend_row_gram` replays the same recursion on ``G`` (the cost is ``cᵀ G c``), which is
mathematically the same descent at O(J²) per iteration. The speed benchmark uses it only to count
how many literal iterations a run too long to wait for would take.

References:
    [1] F. Seipel, A. Lerch, "Multi-track crosstalk reduction", AES 144th Convention, 2018.
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import numpy as np
import scipy.signal

from bleedjax.methods.spectral_subtraction import STOP_PATIENCE


@dataclasses.dataclass(frozen=True)
class Settings:
    """The same fields and defaults as ``bleedjax.methods.spectral_subtraction.Settings``.

    Only ``solver="descent"`` exists here; the field is kept so that
    ``Settings(**dataclasses.asdict(bleedjax_settings))`` works.
    """

    n_fft: int = 4096
    hop: int = 2048
    window: str = "hamming"
    solver: str = "descent"
    momentum: float = 0.8
    learning_rate: float = 1e-3
    learning_rate_decay: float = 0.99
    tolerance: float = 1e-10
    max_iterations: int = 3000
    curvature: float = 2.0
    lambda_scale: float = 1.0
    max_lambda: float = float("inf")

    def __post_init__(self):
        if self.solver != "descent":
            raise ValueError(f"the NumPy reference only has solver='descent', got {self.solver!r}")


class RowEstimate(NamedTuple):
    lam: np.ndarray
    iterations: int


class Result(NamedTuple):
    cleaned: np.ndarray
    lam: np.ndarray
    iterations: np.ndarray
    seconds: dict


def stft(audio: np.ndarray, settings: Settings = Settings()) -> np.ndarray:
    """``(..., samples)`` → complex ``(..., bins, frames)`` with ``scipy.signal.stft``'s defaults."""
    _, _, spec = scipy.signal.stft(
        audio,
        window=settings.window,
        nperseg=settings.n_fft,
        noverlap=settings.n_fft - settings.hop,
        boundary="zeros",
        padded=True,
        axis=-1,
    )
    return spec


def istft(spec: np.ndarray, length: int, settings: Settings = Settings()) -> np.ndarray:
    """Inverse of :func:`stft` by ``scipy.signal.istft``, trimmed to ``length`` samples."""
    _, audio = scipy.signal.istft(
        spec,
        window=settings.window,
        nperseg=settings.n_fft,
        noverlap=settings.n_fft - settings.hop,
        boundary=True,
        time_axis=-1,
        freq_axis=-2,
    )
    return audio[..., :length]


def gram(magnitudes: np.ndarray) -> np.ndarray:
    """``G = X Xᵀ`` in float64 for ``X`` the ``(J, bins·frames)`` magnitudes."""
    flat = magnitudes.reshape(magnitudes.shape[0], -1)
    return flat @ flat.T


class RowSetup(NamedTuple):
    """bleedjax ``descend_row``'s normalisation of one target's cost, from the Gram matrix.

    The descent runs on unit-energy spectrograms ``X̂_j = X_j / ‖X_j‖`` (``λ̃``), with the cost
    multiplied by ``scale`` so that ``γ(0) · λmax(Hessian) = curvature``; ``λ = λ̃ · to_lambda``.
    """

    norms: np.ndarray  # (J,) ‖X_j‖, 1 for silent tracks
    others: np.ndarray  # (J,) bool: j ≠ i and X_j not silent
    scale: float
    to_lambda: np.ndarray  # (J,) ‖X_i‖ / ‖X_j‖
    upper: np.ndarray  # (J,) max_lambda in λ̃ units


def row_setup(gram_matrix: np.ndarray, target: int, settings: Settings = Settings()) -> RowSetup:
    """The normalisation constants of target ``target`` (see :class:`RowSetup`)."""
    norms = np.sqrt(np.clip(np.diag(gram_matrix), 0.0, None))
    audible = norms > 0
    norms = np.where(audible, norms, 1.0)
    others = audible & (np.arange(len(norms)) != target)
    unit = gram_matrix / np.outer(norms, norms)
    masked = unit * np.outer(others, others)
    hessian_max = 2.0 * np.linalg.eigvalsh(masked)[-1]
    scale = settings.curvature / (
        settings.learning_rate * (hessian_max if hessian_max > 0 else 1.0)
    )
    to_lambda = norms[target] / norms
    with np.errstate(divide="ignore"):
        upper = settings.max_lambda / to_lambda
    return RowSetup(norms, others, float(scale), to_lambda, upper)


def _step(lam_unit, velocity, gradient, rate, setup: RowSetup, settings: Settings):
    """Eqs. (2)–(6) and the clamp, as bleedjax does them (velocity dropped where clamped)."""
    gradient = np.where(setup.others, gradient, 0.0)
    velocity = settings.momentum * velocity + gradient
    unclamped = lam_unit - rate * velocity
    new = np.clip(unclamped, 0.0, setup.upper) * setup.others
    velocity = np.where(new == unclamped, velocity, 0.0)
    return new, velocity


def descend_row(
    magnitudes: np.ndarray,
    target: int,
    setup: RowSetup,
    settings: Settings = Settings(),
    *,
    iteration_limit: int | None = None,
) -> RowEstimate:
    """Eqs. (1)–(6) for one target, a pass over the spectrograms in every iteration.

    Each iteration computes the residual ``r = X_i − Σ_j λ_ij X_j``, the gradient
    ``−2 X r`` and the cost ``Σ r²`` from the data (both in the units of :class:`RowSetup`).

    Args:
        magnitudes: ``(J, bins·frames)`` magnitude spectrograms, float64 for the stopping test to
            be meaningful (a float32 array runs the same passes, which the speed benchmark times).
        target: index ``i`` of the target track.
        setup: :func:`row_setup` for this target.
        settings: hyperparameters.
        iteration_limit: stop after this many iterations whether converged or not (for timing).

    Returns:
        λ_i ``(J,)`` (zero at ``i``) and the iterations taken, counted as in bleedjax: the number
        of λ updates, the last being the ``STOP_PATIENCE``-th in a row whose cost change fell
        below ``δ C(0)`` (0 for a silent target).
    """
    num_tracks = magnitudes.shape[0]
    limit = settings.max_iterations if iteration_limit is None else iteration_limit
    unit = setup.scale / setup.norms[target] ** 2
    gradient_unit = -2.0 * setup.scale / (setup.norms[target] * setup.norms)
    lam_unit = np.zeros(num_tracks)
    velocity = np.zeros(num_tracks)
    rate = settings.learning_rate
    residual = magnitudes[target]
    previous = unit * float(residual @ residual)
    threshold = settings.tolerance * previous
    if setup.norms[target] == 0:
        return RowEstimate(lam_unit, 0)  # a silent target: bleedjax's row takes no step either
    quiet = 0
    for step in range(limit):
        gradient = gradient_unit * (magnitudes @ residual)
        lam_unit, velocity = _step(lam_unit, velocity, gradient, rate, setup, settings)
        rate *= settings.learning_rate_decay
        lam = (lam_unit * setup.to_lambda).astype(magnitudes.dtype)
        residual = magnitudes[target] - lam @ magnitudes
        cost = unit * float(residual @ residual)
        quiet = quiet + 1 if abs(cost - previous) < threshold else 0
        if quiet >= STOP_PATIENCE:
            return RowEstimate(lam_unit * setup.to_lambda, step + 1)
        previous = cost
    return RowEstimate(lam_unit * setup.to_lambda, limit)


def descend_row_gram(
    gram_matrix: np.ndarray, target: int, setup: RowSetup, settings: Settings = Settings()
) -> RowEstimate:
    """:func:`descend_row` with Eq. (1) evaluated as ``cᵀ G c`` (``c = e_i − λ``): same iterates."""
    num_tracks = gram_matrix.shape[0]
    scaled = setup.scale * gram_matrix / np.outer(setup.norms, setup.norms)
    basis = np.zeros(num_tracks)
    basis[target] = 1.0
    lam_unit = np.zeros(num_tracks)
    velocity = np.zeros(num_tracks)
    rate = settings.learning_rate
    previous = scaled[target, target]
    threshold = settings.tolerance * previous
    if setup.norms[target] == 0:
        return RowEstimate(lam_unit, 0)
    quiet = 0
    for step in range(settings.max_iterations):
        gradient = -2.0 * (scaled @ (basis - lam_unit))
        lam_unit, velocity = _step(lam_unit, velocity, gradient, rate, setup, settings)
        rate *= settings.learning_rate_decay
        coefficients = basis - lam_unit
        cost = coefficients @ scaled @ coefficients
        quiet = quiet + 1 if abs(cost - previous) < threshold else 0
        if quiet >= STOP_PATIENCE:
            return RowEstimate(lam_unit * setup.to_lambda, step + 1)
        previous = cost
    return RowEstimate(lam_unit * setup.to_lambda, settings.max_iterations)


def subtract(spec: np.ndarray, magnitudes: np.ndarray, lam: np.ndarray, lambda_scale: float = 1.0):
    """Eq. (7) on ``(J, bins, frames)``: magnitude subtraction floored at zero, mixture phase."""
    num_tracks = spec.shape[0]
    flat = magnitudes.reshape(num_tracks, -1)
    bleed = ((lam * lambda_scale).astype(flat.dtype) @ flat).reshape(magnitudes.shape)
    cleaned = np.maximum(magnitudes - bleed, 0.0)
    gain = cleaned / np.where(magnitudes > 0, magnitudes, 1.0)
    return spec * gain


def reduce_session(audio: np.ndarray, settings: Settings = Settings()) -> Result:
    """The whole method on one ``(J, samples)`` session, every descent iteration a data pass.

    Returns:
        :class:`Result`: cleaned ``(J, samples)`` float32 tracks, λ ``(J, J)``, iterations
        ``(J,)`` and the seconds spent per stage.
    """
    seconds = {}
    start = time.perf_counter()
    spec = stft(audio, settings)
    magnitudes = np.abs(spec)
    flat = magnitudes.reshape(magnitudes.shape[0], -1).astype(np.float64)
    seconds["stft"] = time.perf_counter() - start

    start = time.perf_counter()
    gram_matrix = gram(flat)
    setups = [row_setup(gram_matrix, i, settings) for i in range(len(flat))]
    seconds["normalisation"] = time.perf_counter() - start

    start = time.perf_counter()
    rows = [descend_row(flat, i, setups[i], settings) for i in range(len(flat))]
    seconds["descent"] = time.perf_counter() - start
    del flat

    start = time.perf_counter()
    lam = np.stack([row.lam for row in rows]).astype(np.float32)
    cleaned = istft(
        subtract(spec, magnitudes, lam, settings.lambda_scale), audio.shape[-1], settings
    )
    seconds["subtract_istft"] = time.perf_counter() - start
    iterations = np.array([row.iterations for row in rows])
    return Result(cleaned.astype(np.float32), lam, iterations, seconds)
