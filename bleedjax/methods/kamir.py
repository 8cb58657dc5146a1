"""KAMIR: kernel additive modelling for interference reduction (Prätzlich et al., ICASSP 2015 [1]).

Model ([1] Sec. 2): microphone ``i``'s STFT is the sum of source images ``Y_ij``, each a zero-mean
complex Gaussian with variance ``λ_ij(f) P_j(f, t)``. ``Λ`` is frequency dependent, ``(F, I, J)``,
and the channel selection ``φ(j)`` (``phi``, an ``(I, J)`` boolean matrix) says which
microphones belong to source ``j`` (by default microphone ``j``).

Algorithm 1 of [1], on power spectrograms ``V_i = |X_i|²``:

    initialise λ_ij = 1 for i ∈ φ(j), else ρ;  Ŷ_ij = X_i
    repeat L times:
      1. P_j = mean_{i ∈ φ(j)} |Ŷ_ij|² / λ_ij   (Ŷ = X in the first iteration, then the Wiener
         images of step 5)
      2. optionally P_j ← median filter of P_j with a kernel (KAM [2])
      3. λ_ij(f) ← λ_ij(f) (Σ_t P_j V_i V̂_i^(β−2) / Σ_t P_j V̂_i^(β−1))^γ(β), V̂_i = Σ_j λ_ij P_j
         (β-divergence multiplicative update [3], β = 0 Itakura–Saito; γ(β) = 1/(2 − β) for
         β < 1 makes every update decrease the divergence; ``update_rule="heuristic"`` takes
         γ = 1, the plain update, which moves λ twice as far per step for β = 0)
      4. normalise λ (the paper's per-source normalisation, or the footnote's Σ_j λ_ij = 1 per
         channel) and floor it at ``min_leakage``
      5. Ŷ_ij = λ_ij P_j / V̂_i · X_i   (Wiener filter)

The output of microphone ``i`` is the sum of the images of its own sources,
``Σ_{j: i ∈ φ(j)} Ŷ_ij``. The fast variant of [1] replaces the Wiener gain ``W`` by
``g(W) = 1 − 1 / (1 + exp(s (W − τ)))`` with ``s = 160``, ``τ = 0.25`` after a single iteration.
Optional gain equalisation (as in the authors' later code) divides every (bin, channel) of
``|X|`` by its 5 % time quantile before estimation; the mask is then applied to the original.

Beyond [1], ``bound_quantile`` > 0 (the command line's default, 0.3) bounds Λ, where it is updated,
by the ratio floor (:func:`floor_cap`, :mod:`bleedjax.ratio_floor`): ``λ_ij(f) ≤ (h u_ij)²`` at
every frequency and iteration, ``u_ij`` the energy-weighted quantile of ``|X_i| / |X_j|`` over
``bound_frames`` frames sampled by priority (:func:`bound_frames`), in bands of ``bound_band``
bins, counted only where microphone ``j`` is the loudest, and ``h`` = ``bound_headroom``.
The λ update with KAMIR's own P overestimates weak gains (two violins at −18 dB: 1.66×); the
floor sits near them from above.

Implementation notes: powers are divided by their peak over the session first, so the small
constant that guards divisions (``EPS``, −120 dB) means the same at any input level and zero
padding changes nothing. ``|Ŷ_ij|² = W_ij² V_i``, so step 1 is
``P_j ← P_j² / |φ(j)| Σ_{i ∈ φ(j)} λ_ij V_i / V̂_i²`` and no ``(I, J, F, T)`` array of images is
ever formed; the iteration is a ``lax.fori_loop`` on one session, vmapped over sessions. For
speed on CPU, sums over the (few) sources or microphones are unrolled into elementwise loops
that XLA fuses, the λ update's sums over frames are one batched matrix product, and β ∈ {0, 1, 2}
use products instead of general powers.

References:
    [1] T. Prätzlich, R. M. Bittner, A. Liutkus, M. Müller, "Kernel additive modeling for
        interference reduction in multi-channel music recordings", ICASSP 2015.
    [2] A. Liutkus, D. Fitzgerald, Z. Rafii, B. Pardo, L. Daudet, "Kernel additive models for
        source separation", IEEE Trans. Signal Processing 62(16), 2014.
    [3] C. Févotte, J. Idier, "Algorithms for nonnegative matrix factorization with the
        β-divergence", Neural Computation 23(9), 2011, Sec. 4 (multiplicative updates).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import kernels, ratio_floor, signal
from bleedjax._types import Array, Bool, Complex, Float, Int, PRNGKeyArray

EPS = 1e-12
KERNEL_SHAPES = ("none", "horizontal", "vertical", "cross")
NORMALISATIONS = ("paper", "channel")
UPDATE_RULES = ("mm", "heuristic")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Hyperparameters of KAMIR; presets K1–K5 live in ``configs/kamir.py``."""

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
        if self.window not in ("hann", "hamming"):
            raise ValueError(f"window must be 'hann' or 'hamming', got {self.window!r}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not np.isfinite(self.beta):
            raise ValueError(f"beta (of the β-divergence) must be finite, got {self.beta}")
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        if self.update_rule not in UPDATE_RULES:
            raise ValueError(f"update_rule must be one of {UPDATE_RULES}, got {self.update_rule!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.kernel not in KERNEL_SHAPES:
            raise ValueError(f"kernel must be one of {KERNEL_SHAPES}, got {self.kernel!r}")
        if self.kernel != "none" and (self.kernel_size < 1 or self.kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if not 0.0 < self.min_leakage < 1.0:
            raise ValueError(f"min_leakage must be in (0, 1), got {self.min_leakage}")
        if not 0.0 < self.equalisation_quantile < 1.0:
            raise ValueError("equalisation_quantile must be in (0, 1)")
        if not 0.0 <= self.bound_quantile < 1.0:
            raise ValueError(f"bound_quantile must be in [0, 1) (0: no bound), got {self.bound_quantile}")
        if not self.bound_headroom >= 1.0:
            raise ValueError(f"bound_headroom must be >= 1, got {self.bound_headroom}")
        if self.bound_frames < 1 or self.bound_band < 1:
            raise ValueError(f"bound_frames and bound_band must be positive, got {self.bound_frames} "
                             f"and {self.bound_band}")

    def footprint(self) -> np.ndarray | None:
        """The KAM kernel's footprint, or ``None`` for no kernel."""
        if self.kernel == "none":
            return None
        if self.kernel == "horizontal":
            return kernels.horizontal(self.kernel_size)
        if self.kernel == "vertical":
            return kernels.vertical(self.kernel_size)
        return kernels.cross(self.kernel_size, self.kernel_size)


PRESETS = {
    "K1": {"iterations": 0, "rho": 1.0, "update_lambda": False, "sigmoid": False},
    "K2": {"iterations": 0, "rho": 0.1, "update_lambda": False, "sigmoid": False},
    "K3": {"iterations": 4, "rho": 0.1, "update_lambda": False, "sigmoid": False},
    "K4": {"iterations": 4, "rho": 0.1, "update_lambda": True, "sigmoid": False},
    "K5": {"iterations": 1, "rho": 0.1, "update_lambda": False, "sigmoid": True},
}
"""The settings of [1]'s evaluation: no iteration (plain Wiener filter from the initial Λ) with
ρ = 1 or 0.1, four iterations with Λ fixed or updated, and the one-iteration sigmoid variant."""


class Result(NamedTuple):
    """Output of :func:`reduce_session`.

    Attributes:
        cleaned: ``(I, samples)`` cleaned microphone tracks.
        lam: ``(F, I, J)`` Λ (power ratios).
        gains: ``(I, J)`` amplitude bleed matrix: the square root of Λ averaged over frequency,
            weighted by each source's energy per bin (so bins where a source is silent, and Λ
            keeps its initial value, do not count).
    """

    cleaned: Float[Array, "mics samples"]
    lam: Float[Array, "bins mics sources"]
    gains: Float[Array, "mics sources"]


def average_gains(
    lam: Float[Array, "bins mics sources"], psd: Float[Array, "sources bins frames"]
) -> Float[Array, "mics sources"]:
    """``sqrt(Σ_f λ_ij(f) w_j(f) / Σ_f w_j(f))`` with ``w_j(f) = Σ_t P_j(f, t)``."""
    weights = jnp.sum(psd, axis=-1).T
    mean = jnp.sum(lam * weights[:, None, :], axis=0) / (jnp.sum(weights, axis=0)[None, :] + EPS)
    return jnp.sqrt(mean)


def identity_phi(num_tracks: int) -> np.ndarray:
    """The default channel selection: microphone ``j`` belongs to source ``j``."""
    return np.eye(num_tracks, dtype=bool)


def source_groups(table: tuple[tuple[bool, ...], ...]) -> list[list[int]]:
    """The microphones that a same-source table (:mod:`bleedjax.same_source`) joins, directly or
    through others, as sorted groups of at least two."""
    joined = np.asarray(table, bool) if table else np.zeros((0, 0), bool)
    groups, seen = [], set()
    for first in range(len(joined)):
        if first in seen:
            continue
        group, frontier = {first}, [first]
        while frontier:
            for other in np.flatnonzero(joined[frontier.pop()]).tolist():
                if other not in group:
                    group.add(other)
                    frontier.append(other)
        seen |= group
        if len(group) > 1:
            groups.append(sorted(group))
    return groups


def pooled_phi(table: tuple[tuple[bool, ...], ...], num_tracks: int) -> np.ndarray:
    """``(I, I)`` channel selection that puts each group of microphones of one source
    (:func:`source_groups` of ``table``) on one source, in the column of its first microphone;
    the other members' columns hold no microphone, so their ``P_j`` is 0 and they add nothing to
    any model. That is a channel map's selection ([1] φ) in the identity's shape, so sessions with
    different tables batch together (:func:`reduce_sessions`); ``()``: the identity."""
    phi = identity_phi(num_tracks)
    for group in source_groups(table):
        phi[:, group] = False
        phi[group, group[0]] = True
    return phi


def spread_pooled(
    matrix: Float[np.ndarray, "*rest mics sources"], table: tuple[tuple[bool, ...], ...]
) -> Float[np.ndarray, "*rest mics sources"]:
    """A Λ or gain matrix of :func:`pooled_phi` as one column per microphone again: each member
    of a group takes its source's column (the bleed of that source into every other microphone)
    and its own entry from it; between the members of one group it is 0 (one source, not bleed),
    as spectral subtraction and the differentiable model report a channel map's pairs. No table
    (``()``): a copy of ``matrix``."""
    spread = np.array(matrix, copy=True)
    for group in source_groups(table):
        source = np.asarray(matrix)[..., :, group[0]]
        for member in group:
            spread[..., :, member] = source
        for member in group:
            spread[..., member, group] = 0.0
            spread[..., member, member] = source[..., member]
    return spread


def _mix(
    weights: Float[Array, "bins mics sources"], psd: Float[Array, "sources bins frames"]
) -> Float[Array, "mics bins frames"]:
    """``Σ_j w_ij(f) P_j(f, t)``, unrolled over the (few, static) sources: one elementwise loop
    that XLA fuses with its neighbours. (An einsum becomes a batched product of tiny matrices
    with transposes around it, and a broadcast-and-reduce over a non-minor axis is slow on CPU.)"""
    per_bin = jnp.transpose(weights, (1, 2, 0))[..., None]
    total = per_bin[:, 0] * psd[0][None]
    for j in range(1, psd.shape[0]):
        total = total + per_bin[:, j] * psd[j][None]
    return total


def _project(
    weights: Float[Array, "bins mics sources"], values: Float[Array, "mics bins frames"]
) -> Float[Array, "sources bins frames"]:
    """``Σ_i w_ij(f) X_i(f, t)``, the transpose of :func:`_mix`, unrolled over the microphones."""
    per_bin = jnp.transpose(weights, (1, 2, 0))[..., None]
    total = per_bin[0] * values[0][None]
    for i in range(1, values.shape[0]):
        total = total + per_bin[i] * values[i][None]
    return total


def _correlate(
    psd: Float[Array, "sources bins frames"], values: Float[Array, "rows bins frames"]
) -> Float[Array, "bins rows sources"]:
    """``Σ_t P_j(f, t) X_r(f, t)``: one batched matrix product over bins. (A broadcast
    multiply-and-sum over frames is about as fast, but XLA's CPU backend in jax 0.10.2
    miscompiles it when an elementwise step is fused after the sum, e.g. with 2049 bins.)"""
    return jnp.einsum("jft,rft->frj", psd, values, precision=jax.lax.Precision.HIGHEST)


def initial_lambda(
    phi: Bool[Array, "mics sources"], num_bins: int, rho: float
) -> Float[Array, "bins mics sources"]:
    """``λ_ij = 1`` for ``i ∈ φ(j)``, else ``ρ`` ([1] Alg. 1)."""
    start = jnp.where(phi, 1.0, rho).astype(jnp.float32)
    return jnp.broadcast_to(start[None], (num_bins, *phi.shape))


def initial_psd(
    power: Float[Array, "mics bins frames"], phi: Bool[Array, "mics sources"]
) -> Float[Array, "sources bins frames"]:
    """The first iteration's ``P_j``: the mean power of source ``j``'s own microphones
    (``Ŷ_ij = X_i``, λ_ij = 1 for ``i ∈ φ(j)``)."""
    owned = phi.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(owned, axis=0), 1.0)
    weights = jnp.broadcast_to((owned / count[None, :])[None], (power.shape[1], *phi.shape))
    return _project(weights, power)


def model_power(
    lam: Float[Array, "bins mics sources"], psd: Float[Array, "sources bins frames"]
) -> Float[Array, "mics bins frames"]:
    """``V̂_i(f, t) = Σ_j λ_ij(f) P_j(f, t)``."""
    return _mix(lam, psd) + EPS


def update_psd(
    psd: Float[Array, "sources bins frames"],
    lam: Float[Array, "bins mics sources"],
    power: Float[Array, "mics bins frames"],
    phi: Bool[Array, "mics sources"],
) -> Float[Array, "sources bins frames"]:
    """Step 1: ``P_j = mean_{i∈φ(j)} |Ŷ_ij|² / λ_ij`` with ``Ŷ_ij`` the current Wiener images."""
    inverse = 1.0 / model_power(lam, psd)
    owned = jnp.where(phi[None], lam, 0.0)
    ratio = _project(owned, power * inverse * inverse)
    count = jnp.maximum(jnp.sum(phi, axis=0), 1).astype(jnp.float32)
    return psd**2 * ratio / count[:, None, None]


def mm_exponent(beta: float) -> float:
    """The exponent that makes the multiplicative update a majorisation–minimisation step, so
    the β-divergence never increases ([3] Table 2): ``1/(2−β)`` for β < 1, ``1`` for
    1 ≤ β ≤ 2, ``1/(β−1)`` for β > 2."""
    if beta < 1.0:
        return 1.0 / (2.0 - beta)
    if beta <= 2.0:
        return 1.0
    return 1.0 / (beta - 1.0)


def _update_weights(
    power: Float[Array, "mics bins frames"], modelled: Float[Array, "mics bins frames"], beta: float
) -> tuple[Float[Array, "mics bins frames"], Float[Array, "mics bins frames"] | None]:
    """``V V̂^(β−2)`` and ``V̂^(β−1)`` (``None`` for β = 1, where it is 1): products instead
    of a general power (slow on CPU) for β ∈ {0, 1, 2}, one power otherwise."""
    if beta == 0.0:
        inverse = 1.0 / modelled
        return power * inverse * inverse, inverse
    if beta == 1.0:
        return power / modelled, None
    if beta == 2.0:
        return power, modelled
    scaled = modelled ** (beta - 1.0)
    return power * scaled / modelled, scaled


def lambda_sums(
    lam: Float[Array, "bins mics sources"],
    psd: Float[Array, "sources bins frames"],
    power: Float[Array, "mics bins frames"],
    beta: float,
    mask: Float[Array, " frames"] | None = None,
) -> tuple[Float[Array, "bins mics sources"], Float[Array, "bins mics sources"]]:
    """The sums over time in the λ update, ``Σ_t P_j V_i V̂_i^(β−2)`` and ``Σ_t P_j V̂_i^(β−1)``,
    over the frames that ``mask`` keeps (so sums over blocks of frames add up)."""
    weighted, modelled_weights = _update_weights(power, model_power(lam, psd), beta)
    if mask is not None:
        psd = psd * mask[None, None, :]
    if modelled_weights is None:
        numerator = _correlate(psd, weighted)
        return numerator, jnp.broadcast_to(jnp.sum(psd, axis=-1).T[:, None, :], numerator.shape)
    # Both sums in one product, so that P is read once.
    both = _correlate(psd, jnp.concatenate([weighted, modelled_weights], axis=0))
    mics = power.shape[0]
    return both[:, :mics], both[:, mics:]


def apply_lambda_sums(
    lam: Float[Array, "bins mics sources"],
    numerator: Float[Array, "bins mics sources"],
    denominator: Float[Array, "bins mics sources"],
    beta: float,
    rule: str = "mm",
) -> Float[Array, "bins mics sources"]:
    """``λ (numerator / denominator)^γ``: ``rule="mm"`` takes γ of :func:`mm_exponent` (a square
    root for β = 0, nothing for 1 ≤ β ≤ 2); ``"heuristic"`` takes γ = 1 for every β, the plain
    multiplicative update of [3] Eq. 4.1, which moves λ further per iteration but with no
    guarantee that the divergence decreases."""
    if rule not in UPDATE_RULES:
        raise ValueError(f"rule must be one of {UPDATE_RULES}, got {rule!r}")
    ratio = numerator / (denominator + EPS)
    exponent = mm_exponent(beta) if rule == "mm" else 1.0
    if exponent == 0.5:
        return lam * jnp.sqrt(ratio)
    if exponent == 1.0:
        return lam * ratio
    return lam * ratio**exponent


def update_lambda(
    lam: Float[Array, "bins mics sources"],
    psd: Float[Array, "sources bins frames"],
    power: Float[Array, "mics bins frames"],
    beta: float,
    mask: Float[Array, " frames"] | None = None,
    rule: str = "mm",
) -> Float[Array, "bins mics sources"]:
    """Step 3: the β-divergence multiplicative update of λ with P fixed ([3] Eq. 4.1 with the
    exponent of :func:`apply_lambda_sums`), ``λ ← λ (Σ_t P_j V_i V̂_i^(β−2) / Σ_t P_j V̂_i^(β−1))^γ``."""
    return apply_lambda_sums(lam, *lambda_sums(lam, psd, power, beta, mask), beta, rule)


def beta_divergence(
    power: Float[Array, "*shape"], modelled: Float[Array, "*shape"], beta: float
) -> Float[Array, ""]:
    """``D_β(V | V̂)`` summed over all entries ([3] Eq. 2.1); β = 0 is Itakura–Saito."""
    power = power + EPS
    if beta == 0.0:
        return jnp.sum(power / modelled - jnp.log(power / modelled) - 1.0)
    if beta == 1.0:
        return jnp.sum(power * jnp.log(power / modelled) - power + modelled)
    return jnp.sum(
        (power**beta + (beta - 1.0) * modelled**beta - beta * power * modelled ** (beta - 1.0))
        / (beta * (beta - 1.0))
    )


def normalise_lambda(
    lam: Float[Array, "bins mics sources"], phi: Bool[Array, "mics sources"], settings: Settings
) -> Float[Array, "bins mics sources"]:
    """Step 4. ``"paper"``: per source, its own channels average 1 (P_j is then the PSD at its
    own microphone); ``"channel"``: the footnote of [1], ``Σ_j λ_ij = 1`` per channel. Then the
    floor ``min_leakage``."""
    if settings.normalisation == "paper":
        count = jnp.maximum(jnp.sum(phi, axis=0), 1)[None, :]
        own = jnp.sum(jnp.where(phi[None], lam, 0.0), axis=1) / count
        lam = lam / (own[:, None, :] + EPS)
    else:
        lam = lam / (jnp.sum(lam, axis=2, keepdims=True) + EPS)
    return jnp.maximum(lam, settings.min_leakage)


def sigmoid_gain(mask: Float[Array, "*shape"], slope: float, threshold: float) -> Float[Array, "*shape"]:
    """The fast variant's gain of [1]: ``g(W) = 1 − 1 / (1 + exp(s (W − τ)))``."""
    return jax.nn.sigmoid(slope * (mask - threshold))


def equalisation_gains(
    magnitude: Float[Array, "mics bins frames"], quantile: float, mask: Float[Array, " frames"] | None = None
) -> Float[Array, "mics bins 1"]:
    """Per (channel, bin) the ``quantile`` of ``|X|`` over time (1 where it is zero), over the
    frames where ``mask`` is 1 (all without a mask)."""
    if mask is not None:
        magnitude = jnp.where(mask[None, None, :] > 0, magnitude, jnp.nan)
    level = jnp.nanquantile(magnitude, quantile, axis=-1, keepdims=True)
    return jnp.where(level > 0, level, 1.0)


def cap_lambda(
    lam: Float[Array, "bins mics sources"], cap: Float[Array, "mics sources"] | None, settings: Settings
) -> Float[Array, "bins mics sources"]:
    """``min(λ_ij(f), max(cap_ij, min_leakage))`` at every frequency (``cap`` ``None``: λ as it
    is). The phase check's bound on the leakage between two tracks
    (:func:`bleedjax.methods.phase_check.kamir_cap`); the floor stays."""
    if cap is None:
        return lam
    return jnp.minimum(lam, jnp.maximum(cap, settings.min_leakage)[None])


BOUND_SEED = 0
"""The key of the frames that the in-memory ratio-floor bound reads (:func:`bound_frames`); the
streamed path's summary samples with ``LongSettings.seed``, 0 by default, so the two agree."""


def frame_priorities(key: PRNGKeyArray, first: Int[Array, ""] | int, count: int) -> Float[Array, " frames"]:
    """A uniform random number per frame ``first .. first + count``, from the frame's own key,
    so any blocking of the recording sees the same numbers."""
    return jax.vmap(lambda t: jax.random.uniform(jax.random.fold_in(key, t)))(first + jnp.arange(count))


def bound_frames(
    priorities: Float[Array, " frames"], settings: Settings, mask: Float[Array, " frames"] | None = None
) -> Int[Array, " sampled"]:
    """The ``min(bound_frames, T)`` frames of lowest priority (:func:`frame_priorities`), the
    padding (``mask`` 0) last, in ascending priority: the frames the ratio floor reads."""
    if mask is not None:
        priorities = jnp.where(mask > 0, priorities, jnp.inf)
    return jax.lax.top_k(-priorities, min(settings.bound_frames, priorities.shape[0]))[1]


def floor_cap(
    power: Float[Array, "mics bins frames"], phi: Bool[Array, "mics sources"], settings: Settings
) -> Float[Array, "mics sources"]:
    """The ratio floor's bound on Λ (``settings.bound_quantile`` > 0; beyond [1]):
    ``(bound_headroom · u_ik)²`` for source ``j`` at microphone ``i``, where ``u_ik`` is
    :func:`bleedjax.ratio_floor.ratio_floor_bound` (``loudest_only``) of ``|X_i| / |X_k|`` and
    ``k`` is ``j``'s own microphone (the loosest of them if ``φ(j)`` has several; no bound for a
    source without one).

    ``power``: ``(I, F, T')``, the frames to read (:func:`bound_frames`) of the power that Λ is
    estimated on. The ratios are of bands of ``bound_band`` adjacent bins (their power summed; the
    last ``F mod bound_band`` bins are left out): a room's transfer function varies from bin to
    bin, and single bins put the floor far below its broadband gain (README "KAMIR: the ratio
    floor"). At weak bleed the λ update with KAMIR's own P overestimates the gains (two violins
    at −18 dB: 1.66× the truth); the floor sits near them from above, and the headroom leaves room
    for bleed that varies with frequency."""
    bins = power.shape[1] // settings.bound_band * settings.bound_band
    bands = power[:, :bins].reshape(power.shape[0], -1, settings.bound_band, power.shape[2]).sum(axis=2)
    floor = ratio_floor.ratio_floor_bound(jnp.sqrt(bands).reshape(power.shape[0], -1), settings.bound_quantile,
                                          loudest_only=True)
    own = jnp.max(jnp.where(phi[None, :, :], floor[:, :, None], 0.0), axis=1)
    own = jnp.where(jnp.any(phi, axis=0)[None, :], own, jnp.inf)
    return (settings.bound_headroom * own) ** 2


def combined_cap(
    power: Float[Array, "mics bins frames"],
    phi: Bool[Array, "mics sources"],
    settings: Settings,
    lambda_cap: Float[Array, "mics sources"] | None,
    priorities: Float[Array, " frames"],
    mask: Float[Array, " frames"] | None = None,
) -> Float[Array, "mics sources"] | None:
    """``lambda_cap`` and, where Λ is updated and ``settings.bound_quantile`` > 0, the ratio
    floor's bound (:func:`floor_cap`) on the :func:`bound_frames` of ``power``, whose frames have
    the given ``priorities``: the smaller of the two at every pair. The in-memory path passes the
    whole session (its padding, ``mask`` 0, is read as silence when a session has fewer frames
    than ``bound_frames``); the streamed path its summary's sample, whose lowest priorities are
    the same frames."""
    if not (settings.bound_quantile and settings.update_lambda):
        return lambda_cap
    frames = bound_frames(priorities, settings, mask)
    sampled = power[..., frames] if mask is None else power[..., frames] * mask[frames][None, None, :]
    cap = floor_cap(sampled, phi, settings)
    return cap if lambda_cap is None else jnp.minimum(lambda_cap, cap)


def next_lambda(
    lam: Float[Array, "bins mics sources"],
    numerator: Float[Array, "bins mics sources"],
    denominator: Float[Array, "bins mics sources"],
    phi: Bool[Array, "mics sources"],
    settings: Settings,
    lambda_cap: Float[Array, "mics sources"] | None = None,
) -> Float[Array, "bins mics sources"]:
    """Steps 3–4 from the update's sums (:func:`lambda_sums`, over the whole session or added up
    block by block): the multiplicative update with ``settings.update_rule``, the normalisation
    and floor, then the bound ``lambda_cap`` (:func:`cap_lambda`)."""
    updated = apply_lambda_sums(lam, numerator, denominator, settings.beta, settings.update_rule)
    return cap_lambda(normalise_lambda(updated, phi, settings), lambda_cap, settings)


def estimate(
    power: Float[Array, "mics bins frames"],
    phi: Bool[Array, "mics sources"],
    settings: Settings,
    mask: Float[Array, " frames"] | None = None,
    lambda_cap: Float[Array, "mics sources"] | None = None,
) -> tuple[Float[Array, "bins mics sources"], Float[Array, "sources bins frames"]]:
    """Algorithm 1 of [1] on power spectrograms: returns Λ and the source PSDs P. ``mask``
    (``(T,)``, 0 for the padding of a batched session) leaves frames out of the Λ update, and the
    kernel reflects at the session's last real frame. ``lambda_cap`` (``(I, J)``, :func:`cap_lambda`)
    bounds the initial Λ and every update after its normalisation."""
    lam = cap_lambda(initial_lambda(phi, power.shape[1], settings.rho), lambda_cap, settings)
    psd = initial_psd(power, phi)
    footprint = settings.footprint()

    def step(iteration, carry):
        lam, psd = carry
        psd = jax.lax.cond(iteration > 0, lambda p: update_psd(p, lam, power, phi), lambda p: p, psd)
        if footprint is not None:
            if mask is None:
                psd = jax.vmap(kernels.median_filter, in_axes=(0, None))(psd, footprint)
            else:
                frames = jnp.sum(mask).astype(jnp.int32)
                psd = jax.vmap(kernels.median_filter_of_first, in_axes=(0, None, None))(psd, footprint, frames)
        if settings.update_lambda:
            lam = next_lambda(lam, *lambda_sums(lam, psd, power, settings.beta, mask), phi, settings, lambda_cap)
        return lam, psd

    return jax.lax.fori_loop(0, settings.iterations, step, (lam, psd))


def output_masks(
    lam: Float[Array, "bins mics sources"],
    psd: Float[Array, "sources bins frames"],
    phi: Bool[Array, "mics sources"],
    settings: Settings,
) -> Float[Array, "mics bins frames"]:
    """Step 5 for each microphone's own sources: ``Σ_{j: i∈φ(j)} λ_ij P_j / V̂_i``, or its
    sigmoid gain in the fast variant."""
    own = _mix(jnp.where(phi[None], lam, 0.0), psd)
    mask = own / model_power(lam, psd)
    if settings.sigmoid:
        mask = sigmoid_gain(mask, settings.sigmoid_slope, settings.sigmoid_threshold)
    return mask


def separate(
    spectrogram: Complex[Array, "mics bins frames"],
    phi: Bool[Array, "mics sources"],
    settings: Settings,
    mask: Float[Array, " frames"] | None = None,
    lambda_cap: Float[Array, "mics sources"] | None = None,
) -> tuple[
    Complex[Array, "mics bins frames"], Float[Array, "bins mics sources"], Float[Array, "sources bins frames"]
]:
    """KAMIR on one STFT: the cleaned STFT of every microphone, Λ and the source PSDs
    (``lambda_cap``: :func:`estimate`).

    The complex spectrogram is only read in the frames-major layout that the FFT produces
    (``swapaxes`` here cancels the one in :func:`bleedjax.signal.stft` under ``jit``, and the one
    on the result cancels that of :func:`bleedjax.signal.istft`): only the real power
    (``re² + im²``, no square root) and the masks are transposed, not the complex array."""
    frames_major = jnp.swapaxes(spectrogram, -1, -2)
    power = jnp.swapaxes(jnp.real(frames_major) ** 2 + jnp.imag(frames_major) ** 2, -1, -2)
    if settings.gain_equalisation:
        power = power / equalisation_gains(jnp.sqrt(power), settings.equalisation_quantile, mask) ** 2
    peak = jnp.max(power if mask is None else power * mask[None, None, :])
    power = power / jnp.where(peak > 0, peak, 1.0)
    priorities = frame_priorities(jax.random.key(BOUND_SEED), 0, power.shape[-1])
    lam, psd = estimate(power, phi, settings, mask, combined_cap(power, phi, settings, lambda_cap, priorities, mask))
    masks = jnp.swapaxes(output_masks(lam, psd, phi, settings), -1, -2)
    return jnp.swapaxes(masks * frames_major, -1, -2), lam, psd


@functools.partial(jax.jit, static_argnames=("settings",))
def reduce_session(
    audio: Float[Array, "mics samples"],
    phi: Bool[Array, "mics sources"],
    settings: Settings = Settings(),
    length: Int[Array, ""] | None = None,
    lambda_cap: Float[Array, "mics sources"] | None = None,
) -> Result:
    """Removes interference from one session with KAMIR.

    Args:
        audio: ``(I, samples)`` microphone tracks, possibly zero-padded at the end.
        phi: ``(I, J)`` channel selection (:func:`identity_phi` by default at the call site).
        settings: hyperparameters.
        length: the true length of a padded session: the padding's frames are left out of the
            Λ update (the Itakura–Saito divergence weighs quiet frames like loud ones, so they
            would change Λ).
        lambda_cap: ``(I, J)`` upper bound on Λ (:func:`cap_lambda`), e.g. from the phase check
            (:func:`bleedjax.methods.phase_check.kamir_cap`); ``None``: none.

    Returns:
        :class:`Result`: cleaned ``(I, samples)`` tracks and the ``(F, I, J)`` Λ.
    """
    if audio.ndim != 2 or phi.ndim != 2 or phi.shape[0] != audio.shape[0]:
        raise ValueError(f"need (mics, samples) audio and a (mics, sources) phi with one row per microphone, "
                         f"got {audio.shape} and {phi.shape}")
    transform = {"n_fft": settings.n_fft, "hop": settings.hop, "window_name": settings.window}
    spectrogram = signal.stft(audio, **transform)
    mask = None
    if length is not None:
        mask = signal.frame_mask(length, spectrogram.shape[-1], n_fft=settings.n_fft, hop=settings.hop)
    cleaned, lam, psd = separate(spectrogram, phi, settings, mask, lambda_cap)
    cleaned = signal.istft(cleaned, length=audio.shape[-1], valid_length=length, **transform)
    return Result(cleaned, lam, average_gains(lam, psd))


@functools.partial(jax.jit, static_argnames=("settings",))
def reduce_sessions(
    audio: Float[Array, "sessions mics samples"],
    phi: Bool[Array, "*each mics sources"],
    settings: Settings = Settings(),
    lengths: Int[Array, " sessions"] | None = None,
    lambda_caps: Float[Array, "sessions mics sources"] | None = None,
) -> Result:
    """:func:`reduce_session` vmapped over zero-padded sessions, with one ``(I, J)`` channel
    selection for all or one each (``(sessions, I, J)``, e.g. :func:`pooled_phi`), each session
    masked to its own ``lengths`` (all full when ``None``) and with its own ``lambda_caps`` (none
    when ``None``)."""
    if lengths is None:
        lengths = jnp.full(audio.shape[0], audio.shape[-1])
    phi_axis = 0 if phi.ndim == 3 else None
    caps_axis = None if lambda_caps is None else 0
    return jax.vmap(reduce_session, in_axes=(0, phi_axis, None, 0, caps_axis))(
        audio, phi, settings, lengths, lambda_caps
    )


@functools.partial(jax.jit, static_argnames=("settings",))
def gains_of_sessions(
    audio: Float[Array, "sessions mics samples"],
    phi: Bool[Array, "*each mics sources"],
    settings: Settings = Settings(),
    lengths: Int[Array, " sessions"] | None = None,
    lambda_caps: Float[Array, "sessions mics sources"] | None = None,
) -> Float[Array, "sessions mics sources"]:
    """The ``(sessions, I, J)`` gains of :func:`reduce_sessions` (:func:`average_gains` of Λ,
    arguments as there) without the cleaning: the output masks and the inverse STFT are not in
    the compiled program."""
    return reduce_sessions(audio, phi, settings, lengths, lambda_caps).gains
