"""Bleed removal with the fitted differentiable bleed model (delay- and phase-aware).

The model of :mod:`bleedjax.bleed_model` is fitted to the microphones by
:func:`bleedjax.bleed_fit.fit` (GCC-PHAT and λ initialisation, then Adam on the whitened residual
of complex-domain subtraction, alternating with per-frequency unmixing; last, each gain shrunk
towards 0 by its block-jackknife significance, so that two players of one part do not take each
other for bleed). The session is then cleaned in one of three ways (``cleaning``):

* ``"invert"`` (default): the mixing is inverted per frequency of the whole-signal DFT,
  ``Ŝ(f) = (AᴴA + μI)⁻¹ Aᴴ X(f)`` with the exact transfer functions
  ``A_ij(f) = g_ij c_ij(f) e^{−2πi f τ_ij}`` (no frame approximation, so delays of any length are
  undone exactly). This is phase-aware subtraction that also removes the bleed of the bleed.
* ``"subtract"``: first-order complex subtraction with the microphones as the sources,
  ``x_i − Σ_{j≠i} A_ij x_j``, also on the whole-signal DFT.
* ``"wiener"``: a soft mask from the modelled bleed, ``|Ŝ_i|² / (|Ŝ_i|² + |B_i|²)`` per STFT bin
  with ``B_i = X_i − Ŝ_i`` the bleed that ``"invert"`` removes, applied to the microphone's STFT
  (Wiener 1949; fewer artefacts where the model is wrong, e.g. reverberant rooms).

In rooms most of the bleed is reverberation that arrives long after the direct path and is not
coherent with it; the gain-and-delay model explains the direct path only. ``residual =
"spectral-subtraction"`` (the default) then removes what is left by Seipel & Lerch's magnitude
subtraction (:mod:`bleedjax.methods.spectral_subtraction`, with λ ≤ ``residual_max_lambda``) on the
phase-aware output, so the magnitude stage only has to deal with the incoherent part. That part
is weak, so the box is 0.25 (−12 dB) by default, not the 1 of spectral subtraction alone: where two
tracks play the same part (a desk of violins in unison), their cleaned outputs are still alike in
magnitude, and an unbounded residual λ takes one for the other's bleed and removes the target
(on the PHENICX violin and viola desks with −18 dB bleed: mean ΔSDR −7.7 dB with a box of 1,
+1.2 dB with 0.25; ``benchmarks/quality_unison.py``).
The residual stage is **gated** pair by pair (``residual_gate``): it subtracts ``λ_ij · γ_ij`` with
``γ_ij = clip((min(E_ij, E_ji) − residual_gate_low) / (residual_gate_high − residual_gate_low), 0, 1)``,
where ``E_ij`` is the coherent fraction of :mod:`bleedjax.coherence`: how much of output ``i`` a
convolutive filter of output ``j`` explains. Bleed that the inversion has removed leaves both
fractions near zero and the output untouched; reverberant bleed that it has not removed is
coherent with its source both ways and keeps the stage on. The minimum of the two directions
keeps the gate shut where only a faint copy of source ``i`` is left in output ``j``, which raises
``E_ij`` alone. Without the gate the magnitude stage also subtracted where nothing was left to
subtract, and on delayed linear bleed cost up to 22 dB of the inversion's ΔSDR (the Mozart
quartet at −12 dB: 5.91 dB with a worst track of −1.32, against 27.93 / 22.55 for the inversion
alone); gated on ``E_ij`` alone it still cost up to 23.5 dB on one track (2 seeds of 15 s: worst
−1.79 against 21.75; ``benchmarks/quality_differentiable.py``).
The stage also follows the fit's **significance** (``residual_significance``): each pair's λ is
scaled by the lesser of the two directions' shrinkage factors of :mod:`bleedjax.bleed_fit` (the
positive-part James–Stein factor of the gain by its block-jackknife spread). Bleed, direct or
reverberant, arrives by a direct path whose gain is consistent from block to block; two players of
one part are alike without one, and the fit shrinks their gains towards 0. On a few seconds of
such desks the coherence gate cannot tell them from reverberation (the rendered desks cut to 4 s
at −18 dB: mutual coherent fraction 0.24–0.33 between partners, against 0.09–0.12 over 10 s), and
the magnitude stage took each for the other's bleed: mean ΔSDR 0.16 dB with a track 5.97 dB worse,
against 9.21 / +1.38 dB with the significance (``benchmarks/quality_unison.py --seconds 4``). It
needs ``residual_significance_min_frames`` frames (86: 2 s at 44.1 kHz with the default hop,
where the fitted delays become reliable, :data:`bleedjax.analyze.MIN_SECONDS_FOR_DELAYS`): on
shorter excerpts a gain is insignificant because its delay is wrong, and the magnitude stage is
what removes that pair's bleed (on 1 s of the PHENICX stems the significance cost 3–6 dB of mean
ΔSDR in delayed and room bleed).
On those shorter sessions two other guards hold (:func:`short_session_weights`). The residual λ
is capped by the **ratio floor** (``residual_bound_quantile``, :mod:`bleedjax.ratio_floor`, as in
spectral subtraction's preset ``floor``): bleed that the inversion has left shows at its own
level where its source plays alone, so two similar instruments no longer pass for each other's
bleed (the Mozart quartet cut to 1 s, delayed bleed at −18 dB: a track 7.66 dB worse without the
floor, 0.18 dB with it). And a pair whose λ (before the floor) is at the box both ways while the
fit finds no direct path in one direction (a gain below ``residual_unison_gain``) is taken for
two players of one part and left out of the stage (:func:`unison_weights`): reverberant bleed at
−12 dB comes with a direct path, partners alike in magnitude need none (the rendered desks cut to
2 s at −18 dB: a track 5.90 dB worse without the guard, 5.43 dB better with it;
``benchmarks/quality_unison.py --seconds 2``). On one second of a room the fitted gains are too
unreliable for that test alone, and a pair whose outputs are coherent both ways (mutual coherent
fraction at least ``residual_unison_coherence``, 0.65) is taken for reverberant bleed and kept:
on the real PHENICX stems' 1 s rooms the pairs the guard dropped had 0.70–0.89, partners on the
desks' 1–3 s excerpts at most 0.58 (0.63 between the true viola stems). For the same reason
the floor caps no pair coherent both ways (``residual_floor_coherence``, 0.65): a delayed copy
that wrong delays left is bleed, however much it varies from frame to frame (the PHENICX stems'
1 s at −12 dB: worst track 5.55 dB with the floor on every pair, 14.40 without it on those).
Both guards cost some of the residual on these excerpts (up to 1.11 dB of mean ΔSDR, the quartet
cut to 2 s in a room of RT60 0.4 s; the worst track of 46 conditions −0.27 dB, as without them;
README "The residual stage on short sessions"); longer sessions are unchanged.
``residual = "none"`` keeps the model's output.

The per-frequency solves run over chunks of bins (``lax.map``), so memory stays ``O(J · samples)``
for any number of tracks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import bleed_fit, bleed_model, coherence, same_source, signal
from bleedjax._types import Array, Bool, Complex, Float, Int
from bleedjax.bleed_model import BleedParams
from bleedjax.methods import spectral_subtraction

CLEANINGS = ("invert", "subtract", "wiener")
RESIDUALS = ("spectral-subtraction", "none")
CHUNK_BINS = 8192


@dataclasses.dataclass(frozen=True)
class Settings(bleed_fit.FitSettings):
    """The fit's hyperparameters plus the cleaning (``configs/differentiable.py``)."""

    cleaning: str = "invert"
    residual: str = "spectral-subtraction"
    residual_max_lambda: float = 0.25
    residual_gate: bool = True
    residual_gate_low: float = 0.08
    residual_gate_high: float = 0.2
    residual_gate_lags: int = 3
    residual_significance: bool = True
    residual_significance_min_frames: int = 86
    residual_bound_quantile: float = 0.3
    residual_unison_gain: float = 0.1
    residual_unison_coherence: float = 0.65
    residual_floor_coherence: float = 0.65

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.residual_bound_quantile < 1.0:
            raise ValueError(f"residual_bound_quantile must be in [0, 1) (0: no bound), got {self.residual_bound_quantile}")
        if not self.residual_unison_gain >= 0.0:
            raise ValueError(f"residual_unison_gain must be >= 0 (0: off), got {self.residual_unison_gain}")
        if not self.residual_unison_coherence > 0.0:
            raise ValueError(
                f"residual_unison_coherence must be > 0 (above 1: no exception), got {self.residual_unison_coherence}"
            )
        if not self.residual_floor_coherence > 0.0:
            raise ValueError(
                f"residual_floor_coherence must be > 0 (above 1: the floor caps every pair), got {self.residual_floor_coherence}"
            )
        if self.residual_significance_min_frames < 0:
            raise ValueError(
                f"residual_significance_min_frames must be >= 0, got {self.residual_significance_min_frames}"
            )
        if not self.residual_max_lambda > 0:
            raise ValueError(f"residual_max_lambda must be > 0, got {self.residual_max_lambda}")
        if not 0.0 <= self.residual_gate_low < self.residual_gate_high:
            raise ValueError(
                f"need 0 <= residual_gate_low < residual_gate_high, got {self.residual_gate_low} and {self.residual_gate_high}"
            )
        if self.residual_gate_lags < 0:
            raise ValueError(f"residual_gate_lags must be >= 0, got {self.residual_gate_lags}")
        if self.cleaning not in CLEANINGS:
            raise ValueError(f"cleaning must be one of {', '.join(CLEANINGS)}, got {self.cleaning!r}")
        if self.residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {', '.join(RESIDUALS)}, got {self.residual!r}")


class Result(NamedTuple):
    """Output of :func:`reduce_session`.

    Attributes:
        cleaned: ``(I, samples)`` cleaned tracks.
        params: the fitted model (gains ``(I, J)`` with a unit diagonal, delays in samples).
        initial: the GCC-PHAT / λ initialisation.
        costs: ``(rounds,)`` the fit's cost after each round.
        residual_lambda: ``(I, J)`` λ that the residual magnitude subtraction applied, with the
            gate, the significance, the ratio floor and the unison guard (zeros without the stage).
        coherence: ``(I, J)`` coherent fractions ``E_ij`` of the inversion's output that gated it
            (:mod:`bleedjax.coherence`; zeros without the gate).
    """

    cleaned: Float[Array, "tracks samples"]
    params: BleedParams
    initial: BleedParams
    costs: Float[Array, " rounds"]
    residual_lambda: Float[Array, "tracks tracks"]
    coherence: Float[Array, "tracks tracks"]


def _whole_signal_length(samples: int, max_delay: int) -> int:
    # the inverse filter rings for a few round trips of the longest delay
    return bleed_model._fft_length(samples, 4 * max_delay + 1)


def unmix(
    params: BleedParams,
    mics: Float[Array, "tracks samples"],
    *,
    max_delay: int,
    regularisation: float = 1e-4,
    first_order: bool = False,
) -> Float[Array, "tracks samples"]:
    """Sources from microphones by per-frequency inversion of the model on the whole signal.

    Args:
        params: the fitted model.
        mics: ``(J, samples)`` microphone tracks.
        max_delay: bound on the delays in samples (sets the zero padding).
        regularisation: Tikhonov ``μ``.
        first_order: subtract ``Σ_{j≠i} A_ij x_j`` instead of inverting.

    Returns:
        ``(J, samples)`` estimated sources as their own microphones hear them.
    """
    samples = mics.shape[-1]
    n = _whole_signal_length(samples, max_delay)
    spectra = jnp.fft.rfft(mics, n=n, axis=-1)
    bins = spectra.shape[-1]
    chunks = -(-bins // CHUNK_BINS)
    padded = jnp.pad(spectra, ((0, 0), (0, chunks * CHUNK_BINS - bins)))
    blocks = jnp.moveaxis(padded.reshape(mics.shape[0], chunks, CHUNK_BINS), 1, 0)
    frequencies = (jnp.arange(chunks * CHUNK_BINS, dtype=jnp.float32) / n).reshape(chunks, CHUNK_BINS)
    num = mics.shape[0]

    def solve(block):
        spectrum, freqs = block
        mixing = bleed_model.transfer(params, freqs)
        if first_order:
            bleed = mixing * (1.0 - jnp.eye(num))[..., None]
            return spectrum - jnp.einsum("ijf,jf->if", bleed, spectrum, precision=jax.lax.Precision.HIGHEST)
        out = bleed_fit._solve(jnp.moveaxis(mixing, -1, 0), spectrum.T[..., None], regularisation)
        return out[..., 0].T

    cleaned = jax.lax.map(solve, (blocks, frequencies))
    cleaned = jnp.moveaxis(cleaned, 0, 1).reshape(num, chunks * CHUNK_BINS)[:, :bins]
    return jnp.fft.irfft(cleaned, n=n, axis=-1)[..., :samples]


def wiener_mask(
    mics: Float[Array, "tracks samples"],
    sources: Float[Array, "tracks samples"],
    settings: Settings,
    length: Int[Array, ""] | None = None,
) -> Float[Array, "tracks samples"]:
    """Soft mask ``|Ŝ|² / (|Ŝ|² + |X − Ŝ|²)`` on the microphones' STFT, then the inverse STFT
    (of the frames of the first ``length`` samples only, when the session is padded)."""
    transform = {"n_fft": settings.n_fft, "hop": settings.hop, "window_name": settings.window}
    x = signal.stft(mics, **transform)
    own = jnp.abs(signal.stft(sources, **transform)) ** 2
    bleed = jnp.abs(x - signal.stft(sources, **transform)) ** 2
    mask = own / (own + bleed + 1e-20)
    return signal.istft(x * mask, length=mics.shape[-1], valid_length=length, **transform)


def masked_stft(
    audio: Float[Array, "tracks samples"], settings: Settings, length: Int[Array, ""] | None
) -> tuple[Complex[Array, "tracks bins frames"], Float[Array, " frames"] | None]:
    """The fit's STFT with the frames beyond ``length`` zeroed, and that ``(frames,)`` mask
    (``None`` without ``length``)."""
    spectra = signal.stft(audio, n_fft=settings.n_fft, hop=settings.hop, window_name=settings.window)
    if length is None:
        return spectra, None
    mask = signal.frame_mask(length, spectra.shape[-1], n_fft=settings.n_fft, hop=settings.hop)
    return spectra * mask[None, None, :], mask


def fit_session(
    audio: Float[Array, "tracks samples"],
    settings: Settings = Settings(),
    length: Int[Array, ""] | None = None,
) -> bleed_fit.FitResult:
    """The fit alone (no cleaning): STFT, frames beyond ``length`` zeroed, :func:`bleed_fit.fit`.
    ``settings.same_source`` goes in as a traced mask, so that the fits of one session with
    different tables (:func:`one_source_table`'s confirmations) compile once."""
    apart_mask = jnp.asarray(same_source.apart(settings.same_source, audio.shape[0]))
    return _fit_masked(audio, dataclasses.replace(settings, same_source=()), length, apart_mask)


@functools.partial(jax.jit, static_argnames=("settings",))
def _fit_masked(
    audio: Float[Array, "tracks samples"],
    settings: Settings,
    length: Int[Array, ""] | None,
    apart_mask: Float[Array, "tracks tracks"],
) -> bleed_fit.FitResult:
    return bleed_fit.fit(masked_stft(audio, settings, length)[0], settings, apart_mask)


def one_source_table(
    audio: Float[Array, "tracks samples"],
    settings: Settings,
    sample_rate: int,
    detection: same_source.Detection,
    length: Int[Array, ""] | None = None,
    first: tuple[Float[np.ndarray, "tracks tracks"], Float[np.ndarray, "tracks tracks"]] | None = None,
) -> tuple[same_source.Table, Float[np.ndarray, "tracks tracks"]]:
    """The microphones of one source in ``(J, samples)`` tracks (``length``: their true length
    when padded) by :func:`bleedjax.same_source.detect_confirmed` on this model's fits with
    ``settings``, and the ``(J, J)`` gains fitted with that table (each table is fitted once);
    ``first``: the ``(gains, delays)`` of the fit without a table, when already known."""
    fits = {} if first is None else {(): first}

    def fit(table: same_source.Table) -> tuple[np.ndarray, np.ndarray]:
        if table not in fits:
            params = fit_session(audio, dataclasses.replace(settings, same_source=table), length).params
            fits[table] = np.asarray(params.gains), np.asarray(params.delays)
        return fits[table]

    table = same_source.detect_confirmed(fit, sample_rate, detection)
    return table, fit(table)[0]


@functools.partial(jax.jit, static_argnames=("settings",))
def reduce_session(
    audio: Float[Array, "tracks samples"],
    settings: Settings = Settings(),
    length: Int[Array, ""] | None = None,
    apart_mask: Float[Array, "tracks tracks"] | None = None,
) -> Result:
    """Fits the model to one session and cleans it.

    Args:
        audio: ``(J, samples)`` microphone tracks, possibly zero-padded at the end.
        settings: hyperparameters.
        length: the true length when ``audio`` is padded (the padding's frames are left out of
            the fit).
        apart_mask: ``(J, J)``, 1 where two microphones may bleed into each other
            (:func:`bleedjax.same_source.apart` of a table), traced: it replaces
            ``settings.same_source`` (``None``: that table), so sessions with different tables
            share one compilation.

    Returns:
        :class:`Result`.
    """
    if apart_mask is None:
        apart_mask = jnp.asarray(same_source.apart(settings.same_source, audio.shape[0]))
    settings = dataclasses.replace(settings, same_source=())
    fitted = _fit_masked(audio, settings, length, apart_mask)
    cleaned = clean(fitted.params, audio, settings, length)
    residual_lambda = coherent = jnp.zeros_like(fitted.params.gains)
    if settings.residual == "spectral-subtraction":
        weights = None
        if settings.residual_gate:
            coherent = output_coherence(cleaned, settings, length)
            weights = coherence.gate(coherent, settings.residual_gate_low, settings.residual_gate_high)
        if settings.residual_significance:
            significant = significance_weights(fitted.shrinkage_factors, audio.shape[-1], settings, length)
            weights = significant if weights is None else weights * significant
        analysis, refinement, lambdas = residual_estimate(cleaned, settings, length, apart_mask)
        if settings.residual_bound_quantile or settings.residual_unison_gain:
            fractions = coherent if settings.residual_gate else output_coherence(cleaned, settings, length)
            short = short_session_weights(lambdas, fitted.params.gains, fractions, cleaned.shape[-1], settings, length)
            weights = short if weights is None else weights * short
        residual_lambda = lambdas.lam if weights is None else lambdas.lam * weights
        cleaned = spectral_subtraction.resynthesise(analysis.spectrogram, refinement._replace(lam=residual_lambda),
                                                    residual_settings(settings), cleaned.shape[-1], length)
    return Result(cleaned, fitted.params, fitted.initial, fitted.costs, residual_lambda, coherent)


def residual_settings(settings: Settings) -> spectral_subtraction.Settings:
    """Spectral subtraction's settings of the residual stage: the paper's Eq. (1)–(7) with the box
    ``residual_max_lambda`` and no refinement rounds."""
    return spectral_subtraction.Settings(max_lambda=settings.residual_max_lambda, refinements=0)


class ResidualLambdas(NamedTuple):
    """The residual stage's ``(J, J)`` λ before any weights, and the same capped by the ratio
    floor (``residual_bound_quantile``; equal to ``lam`` when it is 0)."""

    lam: Float[Array, "tracks tracks"]
    floored: Float[Array, "tracks tracks"]


def residual_estimate(
    cleaned: Float[Array, "tracks samples"],
    settings: Settings,
    length: Int[Array, ""] | None = None,
    apart_mask: Float[Array, "tracks tracks"] | None = None,
) -> tuple[spectral_subtraction.Analysis, spectral_subtraction.Refinement, ResidualLambdas]:
    """The residual stage's estimate on the inversion's ``(J, samples)`` output (``length``,
    ``apart_mask`` as for :func:`reduce_session`): spectral subtraction's
    :func:`~bleedjax.methods.spectral_subtraction.analyse` with :func:`residual_settings`, its
    λ (one descent) and :class:`ResidualLambdas`, whose floor caps that λ as spectral
    subtraction's ``bound_quantile`` does."""
    residual = residual_settings(settings)
    analysis = spectral_subtraction.analyse(cleaned, residual, length)
    refinement = spectral_subtraction.refine_from_statistics(analysis.gram, analysis.points, residual, apart_mask)
    floored = refinement.lam
    if settings.residual_bound_quantile:
        floored = spectral_subtraction.floor_lambda(refinement.lam, analysis.points, settings.residual_bound_quantile)
    return analysis, refinement, ResidualLambdas(refinement.lam, floored)


def significance_weights(
    factors: Float[Array, "tracks tracks"],
    samples: int,
    settings: Settings,
    length: Int[Array, ""] | None = None,
) -> Float[Array, "tracks tracks"]:
    """The residual stage's weights from the fit's significance (module docstring):
    ``min(f_ij, f_ji)`` of the ``(J, J)`` shrinkage ``factors`` where the session (``length``
    samples of ``samples`` when padded) has at least ``settings.residual_significance_min_frames``
    STFT frames, ones where it has fewer."""
    mutual = jnp.minimum(factors, factors.T)
    return jnp.where(_long_enough(samples, settings, length), mutual, jnp.ones_like(mutual))


def short_session_weights(
    lambdas: ResidualLambdas,
    gains: Float[Array, "tracks tracks"],
    coherent: Float[Array, "tracks tracks"],
    samples: int,
    settings: Settings,
    length: Int[Array, ""] | None = None,
) -> Float[Array, "tracks tracks"]:
    """The residual stage's guards for sessions shorter than ``residual_significance_min_frames``
    (module docstring), as ``(J, J)`` factors on its λ: the ratio floor's ``min(1, u_ij / λ_ij)``
    (``residual_bound_quantile``, as spectral subtraction's ``bound_quantile`` caps λ by ``u``;
    1 for a pair whose mutual coherent fraction reaches ``residual_floor_coherence``) times
    :func:`unison_weights` of the λ before the floor, which can take a unison pair just
    under the box. ``lambdas``: :func:`residual_estimate`'s of the inversion's output; ``gains``: the
    fitted ``(J, J)`` gains; ``coherent``: the ``(J, J)`` coherent fractions of that output
    (:func:`output_coherence`); ``samples``: its length (``length``: the true one when padded).
    Ones on longer sessions."""
    lam, floored = lambdas
    factors = unison_weights(lam, gains, coherent, samples, settings, length)
    if settings.residual_bound_quantile:
        capped = jnp.where(floored < lam, floored / jnp.where(lam > 0, lam, 1.0), 1.0)
        coherent_pair = jnp.minimum(coherent, coherent.T) >= settings.residual_floor_coherence
        factors = factors * jnp.where(coherent_pair, 1.0, capped)
    return jnp.where(_long_enough(samples, settings, length), 1.0, factors)


def unison_weights(
    lam: Float[Array, "tracks tracks"],
    gains: Float[Array, "tracks tracks"],
    coherent: Float[Array, "tracks tracks"],
    samples: int,
    settings: Settings,
    length: Int[Array, ""] | None = None,
) -> Float[Array, "tracks tracks"]:
    """The residual stage's guard for players of one part on sessions too short for the
    significance (module docstring): 0 for the pairs whose residual ``λ`` (``(J, J)``) reaches
    the box ``residual_max_lambda`` both ways while the fitted direct-path ``gains`` (``(J, J)``)
    are below ``residual_unison_gain`` in one direction or both and whose mutual coherent fraction
    ``min(E_ij, E_ji)`` of the inversion's output (``coherent``, ``(J, J)``) is below
    ``residual_unison_coherence``, where the session (``length`` samples of ``samples`` when
    padded) has fewer than ``residual_significance_min_frames`` STFT frames; 1 elsewhere."""
    at_box = lam >= settings.residual_max_lambda * (1.0 - 1e-3)
    no_direct_path = jnp.minimum(gains, gains.T) < settings.residual_unison_gain
    incoherent = jnp.minimum(coherent, coherent.T) < settings.residual_unison_coherence
    unison = at_box & at_box.T & no_direct_path & incoherent & ~_long_enough(samples, settings, length)
    return jnp.where(unison, 0.0, 1.0)


def _long_enough(samples: int, settings: Settings, length: Int[Array, ""] | None) -> Bool[Array, ""]:
    """Whether a session (``length`` samples of ``samples`` when padded) has at least
    ``settings.residual_significance_min_frames`` STFT frames."""
    frames = signal.num_frames(samples, settings.n_fft, settings.hop)
    if length is not None:
        frames = jnp.sum(signal.frame_mask(length, frames, n_fft=settings.n_fft, hop=settings.hop))
    return jnp.asarray(frames >= settings.residual_significance_min_frames)


def clean(
    params: BleedParams,
    audio: Float[Array, "tracks samples"],
    settings: Settings,
    length: Int[Array, ""] | None = None,
) -> Float[Array, "tracks samples"]:
    """The tracks cleaned with a fitted model, before the residual stage: the inversion
    (:func:`unmix`, first order for ``cleaning="subtract"``) and, for ``cleaning="wiener"``, the
    mask (:func:`wiener_mask`; ``length`` as for :func:`reduce_session`). The inverse filter rings
    past a session's end; in a padded session the samples from ``length`` on are set to 0, as
    they are absent from the session alone, so that the mask and the residual stage see the same
    end."""
    unmixed = unmix(
        params, audio, max_delay=settings.max_delay, regularisation=settings.regularisation,
        first_order=settings.cleaning == "subtract",
    )
    if length is not None:
        unmixed = jnp.where(jnp.arange(audio.shape[-1]) < length, unmixed, 0.0)
    return wiener_mask(audio, unmixed, settings, length) if settings.cleaning == "wiener" else unmixed


def output_coherence(
    cleaned: Float[Array, "tracks samples"], settings: Settings, length: Int[Array, ""] | None = None
) -> Float[Array, "tracks tracks"]:
    """:func:`bleedjax.coherence.coherent_fraction` of the cleaned tracks on the fit's STFT, the
    frames beyond ``length`` left out."""
    spectra, mask = masked_stft(cleaned, settings, length)
    return coherence.coherent_fraction(spectra, lags=settings.residual_gate_lags, mask=mask)


@functools.partial(jax.jit, static_argnames=("settings",))
def reduce_sessions(
    audio: Float[Array, "sessions tracks samples"],
    settings: Settings = Settings(),
    lengths: Int[Array, " sessions"] | None = None,
    apart_masks: Float[Array, "sessions tracks tracks"] | None = None,
) -> Result:
    """:func:`reduce_session` vmapped over a batch of zero-padded sessions of equal track count,
    each with its own ``apart_masks`` (``settings.same_source`` when ``None``)."""
    if lengths is None:
        lengths = jnp.full(audio.shape[0], audio.shape[-1])
    masks_axis = None if apart_masks is None else 0
    return jax.vmap(reduce_session, in_axes=(0, None, 0, masks_axis))(audio, settings, lengths, apart_masks)
