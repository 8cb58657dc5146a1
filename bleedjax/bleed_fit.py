"""Fitting the differentiable bleed model (:mod:`bleedjax.bleed_model`) from the microphones alone.

Model: in the STFT domain microphone ``i`` is ``X_i = S_i + Σ_{j≠i} A_ij S_j`` with
``A_ij(f) = g_ij c_ij(f) ρ_w(τ_ij) e^{−2πi f τ_ij}`` (:func:`bleedjax.bleed_model.stft_transfer`;
``A_ii = 1``: each source as its own microphone hears it is the reference). The sources are
unknown, so the fit alternates between

1. **unmixing**: ``Ŝ(f, t) = A(f)⁻¹ X(f, t)`` per frequency with the current parameters (in round
   0, ``Ŝ = X``: the microphones stand in for their sources), and
2. **fitting**: minimising the whitened residual energy of the complex-domain (phase-aware)
   subtraction of the modelled bleed,

       C(θ) = Σ_i Σ_f w_i(f) Σ_t |X_i(f, t) − Σ_{j≠i} A_ij(f; θ) Ŝ_j(f, t)|² / Σ_f w_i(f) P_i(f),

   with ``Ŝ`` held fixed, by Adam (optax) with projections: gains in ``[0, max_gain]``, delays in
   ``[0, max_delay]`` samples, colouration ``≥ 0`` with mean 1 per pair. ``P_i(f) = Σ_t |X_i|²``
   and ``w_i(f) = (P_i(f) + floor · mean_f P_i)^(−whitening)`` weights the frequencies towards
   equal importance (as PHAT does for delays), so the delay is set by the whole band.

For fixed ``Ŝ`` the cost is a quadratic form in the transfer functions, so it needs only the
cross-power spectra of ``X`` and ``Ŝ`` (summed over frames once per round); each Adam step costs
``O(J² F)`` whatever the length of the recording. If the sources are mutually uncorrelated, the
true parameters are a fixed point of the alternation (regressing ``X_i`` on the true other
sources is unbiased), while regressing on the microphones (round 0) is biased by the target's
own leakage into them; with positive delays most of that bias sits at negative lags, which the
delay-aware model does not fit.

Initialisation: delays by GCC-PHAT between microphone pairs (:mod:`bleedjax.gcc_phat`), gains from
Seipel & Lerch's magnitude λ (:func:`bleedjax.methods.spectral_subtraction.estimate_lambda`).
From round 1 on, each pair's delay is re-chosen before the fitting (:func:`select_delays`) among
its current value and the ``candidates`` highest GCC-PHAT peaks of the microphone against the
unmixed source, by the decrease of the cost at the closed-form best gain, which also resets the
gain. The highest peak alone is not enough when sources are correlated: stems that share a faint
common floor peak at lag 0, and a note held through a short excerpt makes the correlation repeat
every pitch period.

Shrinkage (``shrinkage``, after the last round). A gain is a least-squares coefficient at the
delay that the fit chose as the best of many, so two sources that are alike without bleeding into
each other (two players of one part) get a gain of chance correlation, and the inversion then
subtracts a partner's playing as bleed. The spread of the gain between blocks of frames measures
that chance level: each gain's block-jackknife standard error ``se``
(:func:`gain_standard_errors`) shrinks it by the positive-part James–Stein factor
``max(0, 1 − (κ se / g)²)`` (:func:`shrinkage_factors`, ``κ = shrinkage_scale``). On the rendered
unison desks at −18 dB (seed 0) the violins' gains, 0.003 both ways in truth, go from 0.053 / 0.061
(t = 1.3 / 2.4) to 0 / 0.038; the violas' (truth 0.123, t = 3.6 / 7.9) lose 17 % / 4 %, and the
other eight (t ≥ 17) less than 1 % (README, "Unison").

References:
    [1] L. Parra, C. Spence, "Convolutive blind separation of non-stationary sources", IEEE
        Trans. Speech and Audio Processing 8(3), 2000 (per-frequency unmixing ``Ŝ = A⁻¹X``).
    [2] B. Widrow et al., "Adaptive noise cancelling: principles and applications", Proc. IEEE
        63(12), 1975 (subtraction of a reference filtered to minimise the output energy).
    [3] H. R. Künsch, "The jackknife and the bootstrap for general stationary observations", Annals
        of Statistics 17(3), 1989 (the block jackknife).
    [4] B. Efron, C. Morris, "Stein's estimation rule and its competitors: an empirical Bayes
        approach", JASA 68(341), 1973 (positive-part shrinkage).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bleedjax import bleed_model, gcc_phat
from bleedjax._types import Array, Complex, Float
from bleedjax.bleed_model import BleedParams
from bleedjax.methods import spectral_subtraction
from bleedjax.same_source import apart, check_table

HIGHEST = jax.lax.Precision.HIGHEST
GAIN_TERM_BINS = 128


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Hyperparameters of the fit (mirrored by ``configs/differentiable.py``)."""

    n_fft: int = 4096
    hop: int = 1024
    window: str = "hann"
    max_delay: int = 1024
    max_gain: float = 1.0
    bands: int = 1
    rounds: int = 4
    steps: int = 150
    learning_rate_gain: float = 0.01
    learning_rate_delay: float = 0.05
    learning_rate_colour: float = 0.02
    whitening: float = 0.5
    floor: float = 1e-3
    upsample: int = 4
    phat_beta: float = 0.8
    candidates: int = 4
    regularisation: float = 1e-4
    shrinkage: bool = True
    shrinkage_scale: float = 1.5
    shrinkage_blocks: int = 8
    same_source: tuple[tuple[bool, ...], ...] = ()

    def __post_init__(self):
        if self.window not in ("hann", "hamming"):
            raise ValueError(f"window must be 'hann' or 'hamming', got {self.window!r}")
        if not 0 < self.max_delay < self.n_fft // 2:
            raise ValueError(f"max_delay must be in (0, n_fft / 2 = {self.n_fft // 2}), got {self.max_delay}")
        if self.max_gain <= 0 or self.bands < 1 or self.rounds < 1 or self.steps < 0 or self.candidates < 1:
            raise ValueError("need max_gain > 0, bands >= 1, rounds >= 1, steps >= 0 and candidates >= 1")
        if not 0.0 <= self.whitening <= 1.0:
            raise ValueError(f"whitening must be in [0, 1], got {self.whitening}")
        for name in ("learning_rate_gain", "learning_rate_delay", "learning_rate_colour", "floor", "phat_beta",
                     "regularisation"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        if self.upsample < 1:
            raise ValueError(f"upsample must be >= 1, got {self.upsample}")
        if not self.shrinkage_scale >= 0.0:
            raise ValueError(f"shrinkage_scale must be >= 0, got {self.shrinkage_scale}")
        if self.shrinkage_blocks < 2:
            raise ValueError(f"shrinkage_blocks must be >= 2, got {self.shrinkage_blocks}")
        check_table(self.same_source)


class Statistics(NamedTuple):
    """Weighted second-order statistics of one round (``Y`` is the current ``Ŝ``)."""

    power: Float[Array, "tracks bins"]
    cross: Complex[Array, "tracks tracks bins"]
    gram: Complex[Array, "tracks tracks bins"]
    weights: Float[Array, "tracks bins"]


class FitResult(NamedTuple):
    """The fitted model and how it was reached."""

    params: BleedParams
    initial: BleedParams
    costs: Float[Array, " rounds"]
    peaks: Float[Array, "tracks tracks"]
    standard_errors: Float[Array, "tracks tracks"]
    """The gains' block-jackknife standard errors before the shrinkage (:func:`gain_standard_errors`);
    ``nan`` with ``shrinkage=False``, which does not need them."""
    shrinkage_factors: Float[Array, "tracks tracks"]
    """The factors the shrinkage multiplied the gains by (:func:`shrinkage_factors`; ones with
    ``shrinkage=False``): near 1 for a pair whose bleed is significant, 0 for one that the
    spread between blocks puts at chance level."""


def _off_diagonal(num: int) -> Float[Array, "tracks tracks"]:
    return 1.0 - jnp.eye(num, dtype=jnp.float32)


def project(
    params: BleedParams, settings: FitSettings, apart_mask: Float[Array, "tracks tracks"] | None = None
) -> BleedParams:
    """Onto the feasible set: ``0 ≤ g ≤ max_gain``, ``0 ≤ τ ≤ max_delay``, colour ≥ 0 with mean 1
    (its mean moved into the gain), the diagonal fixed to ``g = 1, τ = 0, c = 1``, and no bleed
    (``g = 0``) between microphones of one source (``settings.same_source``, or where given the
    traced ``apart_mask``: :func:`bleedjax.same_source.apart` of a table)."""
    num = params.gains.shape[0]
    off = jnp.asarray(apart(settings.same_source, num)) if apart_mask is None else apart_mask
    colour = jnp.clip(params.colour, 0.0, None)
    mean = jnp.mean(colour, axis=-1)
    safe = jnp.where(mean > 0, mean, 1.0)
    gains = jnp.where(mean > 0, params.gains * mean, params.gains)
    colour = jnp.where(mean[..., None] > 0, colour / safe[..., None], 1.0)
    gains = jnp.clip(gains, 0.0, settings.max_gain) * off + jnp.eye(num)
    delays = jnp.clip(params.delays, 0.0, float(settings.max_delay)) * off
    colour = colour * off[..., None] + jnp.eye(num)[..., None]
    return BleedParams(gains, delays, colour)


def initialise(
    spectra: Complex[Array, "tracks bins frames"],
    settings: FitSettings,
    apart_mask: Float[Array, "tracks tracks"] | None = None,
) -> tuple[BleedParams, Float[Array, "tracks tracks"]]:
    """GCC-PHAT delays and spectral-subtraction λ gains (module docstring).

    Returns:
        the projected initial parameters and the ``(J, J)`` GCC-PHAT peak heights.
    """
    delays, peaks = gcc_phat.delays(
        spectra, max_delay=settings.max_delay, upsample=settings.upsample, beta=settings.phat_beta
    )
    lam_settings = spectral_subtraction.Settings(
        max_lambda=settings.max_gain, refinements=0, same_source=settings.same_source
    )
    lam, _ = spectral_subtraction.estimate_lambda(jnp.abs(spectra), lam_settings, apart_mask=apart_mask)
    params = bleed_model.flat(lam, delays, settings.bands)
    return project(params, settings, apart_mask), peaks


def pair_targets(params: BleedParams, stats: Statistics, settings: FitSettings) -> Complex[Array, "tracks tracks bins"]:
    """``G_ij − Σ_{k≠i,j} A_ik Γ_kj`` for every pair: the cross-spectrum of microphone ``i`` with
    regressor ``j`` once the modelled bleed of every other regressor is taken out (``G`` =
    ``stats.cross``, ``Γ`` = ``stats.gram``, ``A`` from ``params``)."""
    off = _off_diagonal(params.gains.shape[0])
    bleed = bleed_model.stft_transfer(params, n_fft=settings.n_fft, window_name=settings.window) * off[..., None]
    own_gram = jnp.einsum("jjf->jf", stats.gram)
    others = jnp.einsum("ikf,kjf->ijf", bleed, stats.gram, precision=HIGHEST) - bleed * own_gram[None]
    return stats.cross - others


def pair_gains(
    params: BleedParams, stats: Statistics, delays: Float[Array, "tracks tracks count"], settings: FitSettings
) -> tuple[Float[Array, "tracks tracks count"], Float[Array, "tracks tracks count"]]:
    """Best gain of each pair ``(i, j)`` for each candidate delay, all other pairs as in ``params``.

    The cost of target ``i`` is quadratic in ``g_ij``: ``a − 2 g b(τ) + g² c(τ)`` with
    ``b = Re Σ_f w_i conj(h) (G_ij − Σ_{k≠i,j} A_ik Γ_kj)``, ``c = Σ_f w_i |h|² Γ_jj`` and
    ``h = c_ij(f) ρ_w(τ) e^{−2πifτ}`` (``G`` = ``stats.cross``, ``Γ`` = ``stats.gram``), so
    ``g* = clip(b / c, 0, max_gain)`` lowers it by ``2 g* b − g*² c`` (the least-squares gain of
    [2] for one reference).

    Returns:
        ``(J, J, K)`` best gains and the decrease of the cost (before the per-target
        normalisation) that each brings.
    """
    target = pair_targets(params, stats, settings)
    own_gram = jnp.einsum("jjf->jf", stats.gram)
    frequencies = jnp.arange(settings.n_fft // 2 + 1, dtype=jnp.float32) / settings.n_fft
    colour = bleed_model.colour_response(params.colour, frequencies)
    overlap = bleed_model.window_correlation(delays, n_fft=settings.n_fft, window_name=settings.window)
    phase = jnp.exp(-2j * jnp.pi * frequencies[None, None, None, :] * delays[..., None])
    unit = colour[:, :, None, :] * overlap[..., None] * phase
    weights = stats.weights[:, None, None, :]
    b = jnp.real(jnp.sum(weights * jnp.conj(unit) * target[:, :, None, :], axis=-1))
    c = jnp.sum(weights * jnp.abs(unit) ** 2 * jnp.real(own_gram)[None, :, None, :], axis=-1)
    gains = jnp.clip(b / jnp.where(c > 0, c, 1.0), 0.0, settings.max_gain)
    return gains, 2.0 * gains * b - gains**2 * c


def select_delays(
    params: BleedParams,
    stats: Statistics,
    settings: FitSettings,
    apart_mask: Float[Array, "tracks tracks"] | None = None,
) -> BleedParams:
    """Each pair's delay and gain: the current delay or one of the ``candidates`` highest GCC-PHAT
    peaks of ``stats.cross``, whichever lowers the cost most, with its best gain (:func:`pair_gains`).

    The peaks are sharp but some belong to what the sources share rather than to the bleed
    (correlation near lag 0, the pitch period of a held note). The cost arbitrates between them,
    weighted here by ``1 / (P_i + floor · mean P_i)`` (PHAT on the microphone's power) so that,
    as in GCC-PHAT, the delay is judged by the whole band rather than by the loudest partials.
    """
    num = params.gains.shape[0]
    pair = lambda c: gcc_phat.pair_candidates(
        c, max_delay=settings.max_delay, count=settings.candidates, upsample=settings.upsample, beta=settings.phat_beta
    )[0]
    found = jax.vmap(pair)(stats.cross.reshape(num * num, -1)).reshape(num, num, settings.candidates)
    delays = jnp.concatenate([params.delays[..., None], found], axis=-1)
    level = jnp.mean(stats.power, axis=-1, keepdims=True)
    phat = stats._replace(weights=1.0 / (stats.power + settings.floor * level + 1e-30))
    gains, decrease = pair_gains(params, phat, delays, settings)
    best = jnp.argmax(decrease, axis=-1)[..., None]
    pick = lambda values: jnp.take_along_axis(values, best, axis=-1)[..., 0]
    off = _off_diagonal(num)
    return project(params._replace(gains=pick(gains) * off + jnp.eye(num), delays=pick(delays)), settings, apart_mask)


def unmix_stft(
    params: BleedParams, spectra: Complex[Array, "tracks bins frames"], settings: FitSettings
) -> Complex[Array, "tracks bins frames"]:
    """``Ŝ(f) = (AᴴA + μI)⁻¹ Aᴴ X(f)`` per bin with the STFT-domain transfer functions
    (Tikhonov-regularised inversion, ``μ = regularisation``)."""
    mixing = bleed_model.stft_transfer(params, n_fft=settings.n_fft, window_name=settings.window)
    return _solve(jnp.moveaxis(mixing, -1, 0), jnp.moveaxis(spectra, 1, 0), settings.regularisation).swapaxes(0, 1)


def _solve(
    mixing: Complex[Array, "bins tracks sources"], mics: Complex[Array, "bins tracks frames"], mu: float
) -> Complex[Array, "bins sources frames"]:
    hermitian = jnp.conj(jnp.swapaxes(mixing, -1, -2))
    num = mixing.shape[-1]
    normal = jnp.matmul(hermitian, mixing, precision=HIGHEST) + mu * jnp.eye(num, dtype=mixing.dtype)[None]
    return jnp.linalg.solve(normal, jnp.matmul(hermitian, mics, precision=HIGHEST))


def statistics(
    mics: Complex[Array, "tracks bins frames"],
    sources: Complex[Array, "tracks bins frames"],
    settings: FitSettings,
) -> Statistics:
    """Per-bin powers, cross-spectra ``Σ_t X_i conj(Ŝ_j)``, ``Σ_t Ŝ_j conj(Ŝ_k)`` and weights."""
    power = jnp.sum(jnp.abs(mics) ** 2, axis=-1)
    cross = jnp.einsum("ift,jft->ijf", mics, jnp.conj(sources), precision=HIGHEST)
    gram = jnp.einsum("jft,kft->jkf", sources, jnp.conj(sources), precision=HIGHEST)
    return Statistics(power, cross, gram, _whitening(power, settings))


def _whitening(power: Float[Array, "tracks bins"], settings: FitSettings) -> Float[Array, "tracks bins"]:
    level = jnp.mean(power, axis=-1, keepdims=True)
    return (power + settings.floor * level + 1e-30) ** (-settings.whitening)


BROADCAST_TRACKS = 7
"""Up to this many tracks :func:`_quadratic_form` multiplies elementwise (``J³ · bins`` values: 5.6 MB
at 7 tracks and ``n_fft`` 4096); above, it contracts with ``einsum``. With XLA's default CPU
emitters (2-core AVX2 EPYC, 2026-12-07) a step of the fit's Adam loop took 4.6 ms elementwise and
5.6 ms by ``einsum`` on 7 tracks, but 11.4 ms against 5.3 ms on 8, and a fit of 8 tracks × 20 s
6.2 s against 7.0 s (mean of 3 runs each; gains within 5e-8)."""


def _quadratic_form(
    bleed: Complex[Array, "tracks tracks bins"], gram: Complex[Array, "tracks tracks bins"]
) -> Complex[Array, "tracks bins"]:
    """``(J, bins)`` ``Σ_jk B_ij conj(B_ik) Γ_jk`` per bin, the quadratic term of :func:`cost`, from
    ``(J, J, bins)`` ``B`` and ``Γ``. XLA's CPU backend runs the ``einsum`` as one small product per
    bin: its gradient took 776 µs against 58 µs elementwise (3 tracks, 2049 bins, 2026-12-07), and
    a fit on 3 tracks × 1 s 0.97 s against 0.26 s (gains within 2.2e-8 of each other; 5 tracks ×
    4 s: 2.45 s against 1.98 s)."""
    if bleed.shape[0] > BROADCAST_TRACKS:
        return jnp.einsum("ijf,ikf,jkf->if", bleed, jnp.conj(bleed), gram, precision=HIGHEST)
    return jnp.sum(bleed[:, :, None, :] * jnp.conj(bleed)[:, None, :, :] * gram[None], axis=(1, 2))


def cost(params: BleedParams, stats: Statistics, settings: FitSettings) -> Float[Array, ""]:
    """``C(θ)`` of the module docstring from the statistics of one round (a sum over targets,
    each normalised by its cost without subtraction)."""
    num = params.gains.shape[0]
    bleed = bleed_model.stft_transfer(params, n_fft=settings.n_fft, window_name=settings.window)
    bleed = bleed * _off_diagonal(num)[..., None]
    linear = jnp.real(jnp.sum(bleed * jnp.conj(stats.cross), axis=1))
    quadratic = jnp.real(_quadratic_form(bleed, stats.gram))
    residual = stats.power - 2.0 * linear + quadratic
    norm = jnp.sum(stats.weights * stats.power, axis=-1)
    per_target = jnp.sum(stats.weights * residual, axis=-1) / jnp.where(norm > 0, norm, 1.0)
    return jnp.sum(per_target)


def frame_gain_terms(
    params: BleedParams, spectra: Complex[Array, "tracks bins frames"], settings: FitSettings
) -> tuple[Float[Array, "tracks tracks frames"], Float[Array, "tracks tracks frames"]]:
    """Each frame's share of :func:`pair_gains`' ``b`` and ``c`` at the fitted delays.

    With the sources unmixed by ``params`` (``Ŝ``, :func:`unmix_stft`), target ``i``'s residual
    ``R_i = X_i − Σ_{k≠i} A_ik Ŝ_k`` and ``h_ij = A_ij / g_ij``:
    ``b_ij(t) = Re Σ_f w_i conj(h_ij) (R_i + A_ij Ŝ_j) conj(Ŝ_j)`` and
    ``c_ij(t) = Σ_f w_i |h_ij|² |Ŝ_j|²``, so ``Σ_t b / Σ_t c`` is the least-squares gain of pair
    ``(i, j)`` with every other pair as fitted, and sums over blocks of frames give each block's.
    Computed over chunks of :data:`GAIN_TERM_BINS` bins, one target at a time, so that memory
    beyond the ``(J, J, frames)`` results stays ``O(J · GAIN_TERM_BINS · frames)``.

    Returns:
        ``(J, J, frames)`` ``b`` and ``c``.
    """
    num, bins, frames = spectra.shape
    chunks = -(-bins // GAIN_TERM_BINS)
    pad = chunks * GAIN_TERM_BINS - bins
    eye = jnp.eye(num, dtype=jnp.complex64)
    # h_ij for every pair; the diagonal is the model's (g_ii = 1 after `project`), so A = g h
    response = bleed_model.stft_transfer(
        params._replace(gains=jnp.ones_like(params.gains)), n_fft=settings.n_fft, window_name=settings.window
    )
    mixing = params.gains[..., None] * response
    unit = response * _off_diagonal(num)[..., None]
    weights = _whitening(jnp.sum(jnp.abs(spectra) ** 2, axis=-1), settings)

    def by_chunk(array, fill=0.0):
        """``(..., bins)`` -> ``(chunks, ..., GAIN_TERM_BINS)``, the last chunk padded with ``fill``."""
        filler = jnp.broadcast_to(jnp.asarray(fill, array.dtype), (*array.shape[:-1], pad))
        padded = jnp.concatenate([array, filler], axis=-1)
        return jnp.moveaxis(padded.reshape(*array.shape[:-1], chunks, GAIN_TERM_BINS), -2, 0)

    def chunk_terms(totals, args):
        x, transfer, bleed_unit, w = args
        sources = _solve(jnp.moveaxis(transfer, -1, 0), jnp.moveaxis(x, 1, 0), settings.regularisation).swapaxes(0, 1)
        residual = x - jnp.einsum("ijf,jft->ift", params.gains[..., None] * bleed_unit, sources, precision=HIGHEST)
        weighted = w[:, None, :] * jnp.conj(bleed_unit)

        def target_terms(target):
            unit_row, residual_row = target
            return jnp.real(jnp.einsum("jf,ft,jft->jt", unit_row, residual_row, jnp.conj(sources), precision=HIGHEST))

        regression = jax.lax.map(target_terms, (weighted, residual))
        own = jnp.einsum(
            "ijf,jft->ijt", w[:, None, :] * jnp.abs(bleed_unit) ** 2, jnp.abs(sources) ** 2, precision=HIGHEST
        )
        return (totals[0] + regression, totals[1] + own), None

    inputs = (
        jnp.moveaxis(by_chunk(jnp.moveaxis(spectra, 1, -1)), -1, 2),
        by_chunk(mixing, eye[..., None]),  # padding bins: identity, so their (zero) sources solve
        by_chunk(unit),
        by_chunk(weights),
    )
    zeros = jnp.zeros((num, num, frames), jnp.float32)
    (regression, own), _ = jax.lax.scan(chunk_terms, (zeros, zeros), inputs)
    return regression + params.gains[..., None] * own, own


def gain_standard_errors(
    params: BleedParams, spectra: Complex[Array, "tracks bins frames"], settings: FitSettings
) -> Float[Array, "tracks tracks"]:
    """Block-jackknife standard error of every pair's least-squares gain (Quenouille 1956; Tukey
    1958; Künsch 1989 for blocks of a time series).

    The frames that carry the recording (not the zeroed padding of a batched session) are split
    into ``shrinkage_blocks`` contiguous blocks; the gain is re-estimated with each block left
    out (:func:`frame_gain_terms`), and ``se² = (K − 1) / K · Σ_k (g_(−k) − ḡ)²`` with ``ḡ`` the
    mean of the ``K`` leave-one-out gains ``g_(−k)``.

    Returns:
        ``(J, J)`` standard errors (0 on the diagonal).
    """
    blocks = settings.shrinkage_blocks
    b, c = frame_gain_terms(params, spectra, settings)
    valid = jnp.any(jnp.abs(spectra) > 0, axis=(0, 1))
    count = jnp.maximum(jnp.sum(valid), 1)
    block = ((jnp.cumsum(valid) - 1) * blocks) // count
    member = ((block[None, :] == jnp.arange(blocks)[:, None]) & valid[None, :]).astype(b.dtype)
    block_b = jnp.einsum("kt,ijt->kij", member, b, precision=HIGHEST)
    block_c = jnp.einsum("kt,ijt->kij", member, c, precision=HIGHEST)
    rest_c = jnp.sum(block_c, axis=0)[None] - block_c
    left_out = (jnp.sum(block_b, axis=0)[None] - block_b) / jnp.where(rest_c > 0, rest_c, 1.0)
    spread = jnp.sum((left_out - jnp.mean(left_out, axis=0)[None]) ** 2, axis=0)
    return jnp.sqrt((blocks - 1) / blocks * spread) * _off_diagonal(params.gains.shape[0])


def shrinkage_factors(
    gains: Float[Array, "tracks tracks"], standard_errors: Float[Array, "tracks tracks"], scale: float
) -> Float[Array, "tracks tracks"]:
    """``max(0, 1 − (κ se / g)²)`` (``κ`` = ``scale``): the positive-part James–Stein factor of
    each gain towards 0 (James & Stein 1961; Efron & Morris 1973). A gain within ``κ`` standard
    errors of 0 is set to 0, one of ``t = g / se`` standard errors is scaled by ``1 − κ² / t²``
    (``t = 10``: 0.98 at ``κ = 1.5``)."""
    ratio = (scale * standard_errors) ** 2 / jnp.maximum(gains**2, 1e-30)
    return jnp.clip(1.0 - ratio, 0.0, 1.0)


def optimiser(settings: FitSettings) -> optax.GradientTransformation:
    """Adam per parameter group with a cosine-decayed step size (one round of ``steps`` steps)."""

    def adam(rate):
        return optax.adam(optax.cosine_decay_schedule(rate, max(settings.steps, 1), alpha=0.01))

    transforms = {
        "gains": adam(settings.learning_rate_gain),
        "delays": adam(settings.learning_rate_delay),
        "colour": adam(settings.learning_rate_colour),
    }
    return optax.multi_transform(transforms, BleedParams("gains", "delays", "colour"))


def fit(
    spectra: Complex[Array, "tracks bins frames"],
    settings: FitSettings,
    apart_mask: Float[Array, "tracks tracks"] | None = None,
) -> FitResult:
    """Fits the model to one session's microphone STFTs (pure; ``jax.vmap`` it over sessions).

    Args:
        spectra: ``(J, bins, frames)`` microphone STFTs in :mod:`bleedjax.signal`'s layout, with
            any padding frames of a batched session zeroed.
        settings: hyperparameters.
        apart_mask: ``(J, J)``, 1 where two different microphones may bleed into each other
            (:func:`bleedjax.same_source.apart`), traced: it replaces ``settings.same_source``,
            so fits of one session with different tables share one compilation.

    Returns:
        :class:`FitResult`: fitted and initial parameters, the cost after each round and the
        GCC-PHAT peak heights.
    """
    # Scale-free (every statistic is a ratio), so bring the spectra to unit mean power: products
    # of faint bins then stay clear of float32 subnormals, which are ~10x slower on CPU.
    level = jnp.sqrt(jnp.mean(jnp.abs(spectra) ** 2))
    spectra = spectra / jnp.where(level > 0, level, 1.0)
    initial, peaks = initialise(spectra, settings, apart_mask)
    tx = optimiser(settings)
    value_and_grad = jax.value_and_grad(cost)

    def round_(params, index):
        unmixed = jnp.where(index == 0, spectra, unmix_stft(params, spectra, settings))
        stats = statistics(spectra, jax.lax.stop_gradient(unmixed), settings)
        # in round 0 the regressors are microphones, whose common third sources bias the cost
        params = jax.tree.map(lambda a, b: jnp.where(index == 0, a, b), params,
                              select_delays(params, stats, settings, apart_mask))

        def step(carry, _):
            params, state = carry
            value, grads = value_and_grad(params, stats, settings)
            updates, state = tx.update(grads, state, params)
            return (project(optax.apply_updates(params, updates), settings, apart_mask), state), value

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=settings.steps)
        return params, cost(params, stats, settings)

    params, costs = jax.lax.scan(round_, initial, jnp.arange(settings.rounds))
    if not settings.shrinkage:
        return FitResult(params, initial, costs, peaks, jnp.full_like(params.gains, jnp.nan), jnp.ones_like(params.gains))
    errors = gain_standard_errors(params, spectra, settings)
    factors = shrinkage_factors(params.gains, errors, settings.shrinkage_scale)
    params = project(params._replace(gains=params.gains * factors), settings, apart_mask)
    return FitResult(params, initial, costs, peaks, errors, factors)
