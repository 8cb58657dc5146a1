"""The phase check of mutual bleed (spectral subtraction and KAMIR): is a pair's large λ bleed, or unison?

Seipel & Lerch's λ regresses magnitudes. Where two tracks play the same part (two desks of a
string section, unison voices) a microphone's own source and its partner's bleed have almost the
same magnitude spectrogram, so λ comes out large both ways and Eq. (7) removes the target. Strong
bleed between unrelated instruments gives the same λ, and magnitudes cannot tell the two apart
(README, "Unison").

Phase can. Bleed is a delayed, scaled copy of its source, coherent with it in every
time-frequency point; a second player of the same part is not. The differentiable model's
complex-domain fit (:func:`bleedjax.methods.differentiable.fit_session`: per-frequency unmixing
and the least-squares gain of each delayed source, :mod:`bleedjax.bleed_fit`) finds the gain
``g_ij`` of that coherent copy. For every pair whose λ has a geometric mean of at least
``phase_check_min_lambda`` (0.3), the check sets λ to ``g`` both ways,

    λ_ij ← g_ij    for the pairs with √(λ_ij λ_ji) ≥ 0.3,

and leaves every other pair alone: mostly a cap (the magnitudes took a partner's playing for
bleed), sometimes a raise (they missed bleed that phase finds: the chorale's flute and oboe at
−6 dB, λ 0.25 against g 0.37 and truth 0.37). The geometric mean, because unison makes λ depend on the
partners' levels: a partner ``a`` times louder gives ``λ ≈ c a`` one way and ``c / a`` the other
(:func:`mutual_pairs`), and with viola_b 6 dB louder than viola_a on the rendered desks
(``benchmarks/audio/unison_desks``, −18 dB) λ is 0.27 / 0.99, which a test of both λ ≥ 0.3 misses
while Eq. (7) takes 11.4 dB off viola_b. On simulated linear bleed between different instruments
``g`` is within a few per cent of the truth where the fit finds the delays (the Mozart quartet at
−6 dB: every checked λ moves by a few per cent at most); on the PHENICX desks at −18 dB (seed 0) it takes
violin1 / violin2's λ from 0.37 / 0.44 to 0.01 / 0.16 (truth 0.12 both ways). Reverberant bleed
is only partly coherent with one delayed copy, and on a second of audio the fit can miss the
delays, so in rooms and on such short excerpts g falls short and the check removes too little (README, "Unison",
has the figures: on the 1 s PHENICX stems at −6 dB the mean ΔSDR falls from 19.38 to 12.59 dB,
while no track of ``benchmarks/quality_spectral_subtraction.py`` ends worse than it started). The
fit runs only for sessions with such a pair, on their busiest excerpt of at
most ``phase_check_seconds``.

KAMIR (``bleedjax reduce --method kamir``, presets that update Λ: K4) has the same failure in a
milder form: between partners its Λ converges to about 0.27² whatever the bleed, and its Wiener
filter gives the partner's share of every shared point away. Its check (:func:`kamir_check`)
bounds Λ, at every frequency and iteration, by ``(h g)²`` for the pairs whose amplitude gains
have ``√(g_ij g_ji) ≥ 0.2``. The headroom ``h`` goes from 1 to 2 (6 dB) with the differentiable
model's residual gate on the same excerpt (:func:`phase_gains_and_gate`): 2 for the reverberant
bleed that a room adds and one delayed copy does not explain, about 1 where the model's
inversion leaves no bleed to allow for (:func:`kamir_cap`). The bound runs only on sessions of at
least 2 s, where the fitted delays hold (on the 1 s PHENICX stems it cost up to 19 dB on a track).
Without a channel map the same fit also looks for microphones of one source, on sessions of any
length, and KAMIR then puts each such group on one source, as a channel map would
(:func:`bleedjax.methods.kamir.pooled_phi`). The presets that keep Λ at ρ (K1–K3, K5) have
nothing to bound, but a microphone of the same source at ρ took the choir's dynamic microphones
up to 4.3 dB down under K1: they search too, on the sessions where K4's Λ has such a pair
(:func:`trigger_settings`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import numpy as np

from bleedjax import same_source, streaming
from bleedjax._types import Array, Bool, Float, Int

MUTUAL_BLEED_THRESHOLD = 0.4
"""Geometric mean of a pair's λ (amplitude, −8 dB) from which ``bleedjax reduce`` warns about the
pair when spectral subtraction runs without the phase check (:func:`bleedjax.reduce.mutual_bleed_pairs`)."""


@dataclasses.dataclass(frozen=True)
class CheckSettings:
    """Whether spectral subtraction checks mutual pairs by phase, and on how much audio."""

    phase_check: bool = False
    phase_check_seconds: float = 20.0
    phase_check_min_lambda: float = 0.3

    def __post_init__(self):
        if not self.phase_check_seconds > 0:
            raise ValueError(f"phase_check_seconds must be > 0, got {self.phase_check_seconds}")
        if not self.phase_check_min_lambda > 0:
            raise ValueError(f"phase_check_min_lambda must be > 0, got {self.phase_check_min_lambda}")


def mutual_pairs(
    lam: Float[np.ndarray, "tracks tracks"], threshold: float = MUTUAL_BLEED_THRESHOLD
) -> Bool[np.ndarray, "tracks tracks"]:
    """``(J, J)`` booleans: the geometric mean ``√(λ_ij λ_ji) ≥ threshold`` (the diagonal is
    False).

    The geometric mean, not the smaller of the two, because unison is level-invariant only in the
    product: if track ``j`` plays the same part ``a`` times louder than track ``i``, magnitude
    regression gives ``λ_ij ≈ c / a`` and ``λ_ji ≈ c a`` (``c`` their similarity), so the quieter
    direction can fall under the threshold while the louder one removes the target (module
    docstring)."""
    lam = np.asarray(lam)
    if lam.ndim != 2 or lam.shape[0] != lam.shape[1]:
        raise ValueError(f"need a square (tracks, tracks) λ, got shape {lam.shape}")
    positive = np.clip(lam, 0.0, None)
    mutual = positive * positive.T >= threshold**2
    np.fill_diagonal(mutual, False)
    return mutual


def phase_weights(
    lam: Float[np.ndarray, "tracks tracks"],
    gains: Float[np.ndarray, "tracks tracks"],
    mutual: Bool[np.ndarray, "tracks tracks"],
) -> Float[np.ndarray, "tracks tracks"]:
    """``(J, J)`` factors on λ that set the ``mutual`` pairs to the phase-aware ``gains``:
    ``g_ij / λ_ij`` there (0 where λ is 0), 1 elsewhere."""
    lam, gains = np.asarray(lam, np.float64), np.asarray(gains, np.float64)
    ratio = np.clip(gains, 0.0, None) / np.where(lam > 0, lam, 1.0)
    return np.where(mutual, np.where(lam > 0, ratio, 0.0), 1.0).astype(np.float32)


def _fit_excerpt(audio: Float[np.ndarray, "tracks samples"], samples: int, step: int, settings=None):
    """``(fit, excerpt, length, settings)``: the differentiable model (``settings``, the defaults
    when ``None``) fitted to the busiest ``samples``-long excerpt (starting at a multiple of
    ``step``, :func:`bleedjax.streaming.busiest_excerpt_of`) of ``(J, n)`` tracks, that excerpt
    zero-padded to a whole number of ``step`` s, and its true length."""
    import jax.numpy as jnp

    from bleedjax.methods import differentiable

    settings = differentiable.Settings() if settings is None else settings
    audio = np.asarray(audio, np.float32)
    samples = min(audio.shape[-1], max(1, samples))
    start = streaming.busiest_excerpt_of(audio, samples, step)
    padded = -(-samples // max(1, step)) * max(1, step)
    excerpt = jnp.asarray(np.pad(audio[:, start : start + samples], ((0, 0), (0, padded - samples))))
    length = jnp.asarray(samples, jnp.int32)
    return differentiable.fit_session(excerpt, settings, length), excerpt, length, settings


def phase_gains(
    audio: Float[np.ndarray, "tracks samples"], samples: int, step: int, settings=None
) -> Float[np.ndarray, "tracks tracks"]:
    """``(J, J)`` gains of the differentiable model (``settings``: its
    :class:`~bleedjax.methods.differentiable.Settings`, the defaults when ``None``) fitted to the
    busiest ``samples``-long excerpt (starting at a multiple of ``step``,
    :func:`bleedjax.streaming.busiest_excerpt_of`) of ``(J, n)`` microphone tracks.

    The excerpt is zero-padded to a whole number of ``step`` s and fitted with its true length
    (the fit leaves the padding's frames out), so sessions shorter than the excerpt compile the fit
    once per second of length instead of once per length; the gains are the same (to 3e-8)."""
    return np.asarray(_fit_excerpt(audio, samples, step, settings)[0].params.gains)


def phase_gains_and_gate(
    audio: Float[np.ndarray, "tracks samples"], samples: int, step: int, settings=None
) -> tuple[Float[np.ndarray, "tracks tracks"], Float[np.ndarray, "tracks tracks"]]:
    """``(gains, gate)``, both ``(J, J)``: the gains of :func:`phase_gains` and, on the same
    excerpt, the differentiable model's residual gate (:func:`_residual_gate`): about 1 where
    bleed is left that one delayed copy does not explain (a room's reverberation), 0 where the
    model's inversion removed it all."""
    fitted, excerpt, length, settings = _fit_excerpt(audio, samples, step, settings)
    gate = _residual_gate(fitted.params, excerpt, length, settings)
    return np.asarray(fitted.params.gains), np.asarray(gate)


@functools.partial(jax.jit, static_argnames=("settings",))
def _residual_gate(
    params, excerpt: Float[Array, "tracks padded"], length: Int[Array, ""], settings
) -> Float[Array, "tracks tracks"]:
    """``(J, J)`` :func:`bleedjax.coherence.gate` (the ramp of ``settings.residual_gate_low`` /
    ``residual_gate_high``, as the differentiable method's residual stage) of the coherent
    fractions of the fitted model's inversion of ``excerpt``, in the fit's own STFT
    (:func:`bleedjax.bleed_fit.unmix_stft`, per bin, the frames beyond ``length`` left out). The
    whole-signal inversion of :func:`bleedjax.methods.differentiable.unmix` gave gates within
    0.05 of these except under strong delayed bleed (lower there, where these lean towards the
    full headroom), at 4 s more on 16 tracks × 20 s (README, "KAMIR: the phase check's headroom
    follows the residual gate")."""
    from bleedjax import bleed_fit, coherence
    from bleedjax.methods import differentiable

    spectra, mask = differentiable.masked_stft(excerpt, settings, length)
    inverted = bleed_fit.unmix_stft(params, spectra, settings)
    fractions = coherence.coherent_fraction(inverted, lags=settings.residual_gate_lags, mask=mask)
    return coherence.gate(fractions, settings.residual_gate_low, settings.residual_gate_high)


class Checked(NamedTuple):
    """What :func:`check_session` fitted for one session."""

    gains: Float[np.ndarray, "tracks tracks"]
    """``(J, J)`` gains of the differentiable model (:func:`phase_gains`)."""
    table: same_source.Table
    """The microphones of one source that the model was fitted with, and that λ's regression
    must leave apart: the given table, or where none was given the pairs that
    :func:`bleedjax.same_source.detect` found (``()`` for none)."""


def check_session(
    audio: Float[np.ndarray, "tracks samples"],
    lam: Float[np.ndarray, "tracks tracks"],
    samples: int,
    step: int,
    threshold: float,
    table: same_source.Table = (),
    sample_rate: int | None = None,
    detection: same_source.Detection | None = None,
) -> Checked | None:
    """The fit of the phase check for one session's ``(J, n)`` tracks and ``(J, J)`` λ: ``None``
    when no pair is mutual (:func:`mutual_pairs` at ``threshold``; then nothing is fitted), else
    the gains of the model fitted on an excerpt as :func:`phase_gains`. ``table``: the
    microphones of one source (:mod:`bleedjax.same_source`), between which the model fits no bleed.

    Without a ``table``, with a ``sample_rate`` and ``detection`` on, the fit also looks for
    microphones of one source (:func:`bleedjax.same_source.detect`: a gain of at least 0.6 with a
    delay of at most 1 ms); where it finds them, the model is fitted again without bleed between
    them, and :attr:`Checked.table` says which they are. λ must then be estimated again with that
    table before :func:`checked_weights`."""
    if not mutual_pairs(lam, threshold).any():
        return None
    from bleedjax.methods import differentiable

    fitted, excerpt_audio, length, settings = _fit_excerpt(audio, samples, step, differentiable.Settings(same_source=table))
    gains = np.asarray(fitted.params.gains)
    if not table and sample_rate is not None and detection is not None and detection.detect_same_source:
        first = gains, np.asarray(fitted.params.delays)
        table, gains = differentiable.one_source_table(excerpt_audio, settings, sample_rate, detection, length, first)
    return Checked(gains, table)


def checked_weights(
    lam: Float[np.ndarray, "tracks tracks"],
    gains: Float[np.ndarray, "tracks tracks"],
    threshold: float,
    max_lambda: float = np.inf,
) -> Float[np.ndarray, "tracks tracks"]:
    """The factors of :func:`phase_weights` that set the pairs of :func:`mutual_pairs` (at
    ``threshold``) of ``(J, J)`` λ to the fitted ``gains``, kept in spectral subtraction's box
    (``max_lambda``: a gain never raises λ above it)."""
    return phase_weights(lam, np.minimum(gains, max_lambda), mutual_pairs(lam, threshold))


def excerpt(check: CheckSettings | KamirCheckSettings, sample_rate: int | None, length: int) -> tuple[int, int]:
    """``(samples, step)`` of the check's excerpt: ``phase_check_seconds`` in steps of one second,
    or the whole ``length`` when the rate is not known."""
    if sample_rate is None:
        return length, length
    return max(1, round(check.phase_check_seconds * sample_rate)), sample_rate


@dataclasses.dataclass(frozen=True)
class KamirCheckSettings:
    """KAMIR's phase check (:func:`kamir_cap`): on or off, its excerpt, which pairs it checks, how
    far above the coherent gain their leakage may stay, and the shortest session it trusts."""

    phase_check: bool = True
    phase_check_seconds: float = 20.0
    phase_check_min_gain: float = 0.2
    phase_check_headroom: float = 2.0
    phase_check_gate: bool = True
    phase_check_min_seconds: float = 2.0

    def __post_init__(self):
        if not self.phase_check_seconds > 0:
            raise ValueError(f"phase_check_seconds must be > 0, got {self.phase_check_seconds}")
        if not self.phase_check_min_gain > 0:
            raise ValueError(f"phase_check_min_gain must be > 0, got {self.phase_check_min_gain}")
        if not self.phase_check_headroom >= 1:
            raise ValueError(f"phase_check_headroom must be >= 1, got {self.phase_check_headroom}")
        if not self.phase_check_min_seconds >= 0:
            raise ValueError(f"phase_check_min_seconds must be >= 0, got {self.phase_check_min_seconds}")


def kamir_cap(
    mutual: Bool[np.ndarray, "tracks tracks"],
    gains: Float[np.ndarray, "tracks tracks"],
    headroom: float,
    gate: Float[np.ndarray, "tracks tracks"] | None = None,
) -> Float[np.ndarray, "tracks tracks"]:
    """``(J, J)`` bound on KAMIR's Λ (power, :func:`bleedjax.methods.kamir.cap_lambda`):
    ``(h_ij · g_ij)²`` for the ``mutual`` pairs, ``inf`` elsewhere, with ``h_ij = headroom``, or
    with a ``gate`` (:func:`phase_gains_and_gate`) ``h_ij = 1 + (headroom − 1) · gate_ij``.

    KAMIR's Λ between two tracks that play the same part converges to about 0.27² whatever the
    bleed (four iterations of the Itakura–Saito update on alike power spectrograms), and its
    Wiener filter then gives the partner's share of every shared point away (on the rendered
    desks at −18 dB, violin1_a 4.54 dB worse). The fitted gain of the coherent, delayed copy
    ``g`` is the bleed that phase can vouch for. In a room Λ also carries reverberant bleed that
    one delayed copy does not explain (``g / √Λ`` down to 0.1–0.5 on the chorale's room), so the
    bound leaves ``headroom`` (2: 6 dB) above ``g`` instead of capping at ``g`` itself, which cost
    the chorale's room 1.5 dB of mean ΔSDR (README, "Unison").

    Where the bleed is one delayed copy, though, the headroom lets a partner's playing back in:
    with viola_b 6 dB louder than viola_a on the rendered desks at −18 dB (seed 0), g is 0.111
    (truth 0.123), K4's gain 0.242, and bounded at 2g it settles at 0.184, which cost viola_a
    1.07 dB. The gate tells the two apart: after the model's inversion a room's reverberant
    bleed stays coherent with its source (gate 0.54–1 on every checked pair of the rooms of
    ``benchmarks/quality_unison.py`` and ``quality_kamir.py``, 2 seeds), while delayed copies
    leave little (desk partners 0.03–0.32; other pairs 0–0.05, up to 0.64 under the chorale's
    −6 dB bleed). So the headroom goes from 1 (nothing left to explain) to ``headroom``
    (reverberation left) with the gate."""
    factor = headroom if gate is None else 1.0 + (headroom - 1.0) * np.asarray(gate, np.float64)
    bound = (factor * np.clip(np.asarray(gains, np.float64), 0.0, None)) ** 2
    return np.where(np.asarray(mutual), bound, np.inf).astype(np.float32)


def kamir_applies(
    check: KamirCheckSettings,
    update_lambda: bool,
    phi: np.ndarray,
    sample_rate: int | None,
    detection: same_source.Detection | None = None,
) -> bool:
    """Whether KAMIR's check can run: it is on, it has something to do (a preset that estimates
    Λ, ``update_lambda``, is bounded; the others, which keep Λ at ρ, only search for microphones
    of one source, with ``detection``), every microphone is its own source (the fit's gains are
    between tracks) and the sample rate is known (for the excerpt and the shortest session)."""
    phi = np.asarray(phi)
    identity = phi.ndim == 2 and phi.shape[0] == phi.shape[1] and np.array_equal(phi, np.eye(len(phi), dtype=bool))
    searching = detection is not None and detection.detect_same_source
    return check.phase_check and (update_lambda or searching) and identity and sample_rate is not None


def trigger_settings(settings):
    """The :class:`~bleedjax.methods.kamir.Settings` whose Λ picks the pairs that the check looks
    at: ``settings`` where the preset estimates Λ, else K4's (its iterations, ρ and update, the
    rest as given), since Λ at ρ says nothing about which tracks bleed into each other."""
    from bleedjax.methods import kamir

    return settings if settings.update_lambda else dataclasses.replace(settings, **kamir.PRESETS["K4"])


class KamirChecked(NamedTuple):
    """What KAMIR's check (:func:`kamir_check`) found for one session."""

    cap: Float[np.ndarray, "tracks tracks"]
    """``(J, J)`` bound on Λ (power, :func:`bleedjax.methods.kamir.cap_lambda`): :func:`kamir_cap`
    on the checked pairs, ``inf`` elsewhere."""
    table: same_source.Table
    """The microphones that the check's fit took for one source (``()``: none, or not looked for),
    for KAMIR's channel selection (:func:`bleedjax.methods.kamir.pooled_phi`)."""


def kamir_check(
    audio: Float[np.ndarray, "tracks samples"],
    gains: Float[np.ndarray, "tracks tracks"],
    sample_rate: int,
    check: KamirCheckSettings,
    detection: same_source.Detection | None = None,
    session_samples: int | None = None,
    bound: bool = True,
) -> KamirChecked | None:
    """KAMIR's check of one session from its ``(J, n)`` tracks (or, streamed, their busiest
    excerpt; ``session_samples``: the whole session's length, ``n`` when ``None``) and KAMIR's
    ``(J, J)`` amplitude gains (of :func:`trigger_settings`). ``None`` when it neither bounds nor
    finds anything.

    It looks at the pairs with ``√(g_ij g_ji) ≥ phase_check_min_gain`` (:func:`mutual_pairs`;
    none: nothing is fitted) and fits the differentiable model on the busiest excerpt of at most
    ``phase_check_seconds`` (:func:`phase_gains`). With ``detection`` (no channel map), the fit
    also looks for microphones of one source (:func:`bleedjax.same_source.detect`), which the
    caller puts on one source (:func:`bleedjax.methods.kamir.pooled_phi`): the Dagstuhl choir's
    seven close microphones, where a singer's headset and dynamic microphones gave each other Λ
    of about 0.3 and K4 made a headset 1.24 dB worse (README, "Real bleed"). The other pairs are
    bounded by :func:`kamir_cap` (with the model fitted with those microphones apart, and its
    residual gate when ``phase_check_gate``), on sessions of at least ``phase_check_min_seconds`` (2 s, where the fitted
    delays become reliable: :data:`bleedjax.analyze.MIN_SECONDS_FOR_DELAYS`; on the 1 s PHENICX
    stems at −12 dB the bound took the worst track from 22.4 to 3.2 dB). The search also runs on
    shorter sessions: on the choir's 1 s it finds exactly the three singers' pairs. With ``bound``
    false (the presets that keep Λ at ρ) it only searches."""
    mutual = mutual_pairs(gains, check.phase_check_min_gain)
    session_samples = audio.shape[-1] if session_samples is None else session_samples
    bounded = bound and session_samples >= check.phase_check_min_seconds * sample_rate
    if not mutual.any() or not (bounded or detection is not None):
        return None
    from bleedjax.methods import differentiable, kamir

    samples, step = excerpt(check, sample_rate, audio.shape[-1])
    fitted, excerpt_audio, length, settings = _fit_excerpt(audio, samples, step)
    table = ()
    if detection is not None and detection.detect_same_source:
        first = np.asarray(fitted.params.gains), np.asarray(fitted.params.delays)
        table, _ = differentiable.one_source_table(excerpt_audio, settings, sample_rate, detection, length, first)
    one = np.zeros_like(mutual)
    for group in kamir.source_groups(table):  # one source, directly or through a partner: never bounded
        one[np.ix_(group, group)] = True
    one &= ~np.eye(len(mutual), dtype=bool)
    checked = mutual & ~one if bounded else np.zeros_like(mutual)
    if not (checked.any() or one.any()):
        return None
    cap = np.full(mutual.shape, np.inf, np.float32)
    if checked.any():
        if table:
            settings = dataclasses.replace(settings, same_source=table)
            fitted = differentiable.fit_session(excerpt_audio, settings, length)
        gate = _residual_gate(fitted.params, excerpt_audio, length, settings) if check.phase_check_gate else None
        cap = kamir_cap(checked, np.asarray(fitted.params.gains), check.phase_check_headroom,
                        None if gate is None else np.asarray(gate))
    return KamirChecked(cap, table)
