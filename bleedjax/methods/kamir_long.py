"""KAMIR for recordings of any length with bounded memory (after Di Carlo, Déguernel & Liutkus,
"Gaussian framework for interference reduction in live recordings", AES 2017 [1], and their
MIRA implementation).

Two stages, both streaming over the files block by block (:mod:`bleedjax.streaming`):

1. **Learn Λ.** ``learn="projection"`` (one pass, after [1]): the power spectrograms are
   compressed along time by a random projection ``R`` (``frames × K``), ``S_i = V_i R``,
   accumulated block by block. Because the model ``V_i = Σ_j λ_ij P_j`` is linear in time,
   ``S_i = Σ_j λ_ij (P_j R)`` has the same Λ, and Algorithm 1 runs on the fixed-size
   ``(I, F, K)`` summary. ``R`` is a random *selection* (one-hot columns: bottom-k sampling of
   frames by a per-frame random priority, independent of the block size). Dense non-negative
   projections average hundreds of frames into each column; the columns then look alike, the
   temporal variation that separates Λ from P is lost, and Λ came out uncorrelated with the
   truth in our tests, whereas a uniform sample of frames keeps that variation. ``learn="exact"`` (``iterations + 1`` passes): every Λ update's sums
   over time are accumulated block by block, replaying the ``P`` updates of each block from the
   Λ of earlier passes, which reproduces the in-memory result.
2. **Separate** block by block with Λ fixed: each block (with enough neighbouring frames for
   the median kernel) gets its ``P`` iterations and Wiener masks, and the cleaned frames are
   overlap-added exactly as one iSTFT of the whole recording would.

Peak memory is set by ``block_frames`` and the summary size ``K``, not by the duration.

References:
    [1] D. Di Carlo, K. Déguernel, A. Liutkus, "Gaussian framework for interference reduction
        in live recordings", AES International Conference on Semantic Audio, 2017.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bleedjax import same_source, streaming
from bleedjax._types import Array, Bool, Float, PRNGKeyArray
from bleedjax.methods import kamir, phase_check


@dataclasses.dataclass(frozen=True)
class LongSettings:
    """How the long-recording path streams: blocks, summary size, learning mode."""

    block_frames: int = 256
    projection_size: int = 256
    learn: str = "projection"
    seed: int = 0

    def __post_init__(self):
        if self.learn not in ("projection", "exact"):
            raise ValueError(f"learn must be 'projection' or 'exact', got {self.learn!r}")
        if self.block_frames < 1 or self.projection_size < 1:
            raise ValueError("block_frames and projection_size must be positive")


_frame_priorities = jax.jit(kamir.frame_priorities, static_argnames=("count",))


class FrameSample:
    """A uniform random sample of ``size`` frames of a stream (bottom-k sampling on the frames'
    priorities): a fixed-size summary of the whole recording, accumulated block by block."""

    def __init__(self, size: int, key: PRNGKeyArray):
        self.size, self.key = size, key
        self.priorities = np.zeros(0, np.float32)
        self.frames: np.ndarray | None = None
        self.peak = 0.0

    def add(self, first: int, power: np.ndarray) -> None:
        """Offers frames ``first ..`` (``(I, F, B)`` power) to the sample."""
        priorities = np.asarray(_frame_priorities(self.key, first, power.shape[-1]))
        self.peak = max(self.peak, float(power.max(initial=0.0)))
        candidates = power if self.frames is None else np.concatenate([self.frames, power], axis=-1)
        priorities = np.concatenate([self.priorities, priorities])
        keep = np.sort(np.argsort(priorities, kind="stable")[: self.size])
        self.priorities, self.frames = priorities[keep], candidates[..., keep]


@functools.partial(jax.jit, static_argnames=("settings", "upto"))
def replay_psd(
    power: Float[Array, "mics bins frames"],
    phi: Bool[Array, "mics sources"],
    history: Float[Array, "steps bins mics sources"],
    settings: kamir.Settings,
    upto: int,
) -> Float[Array, "sources bins frames"]:
    """``P`` after ``upto`` iterations of Algorithm 1 on one block, with the Λ of each
    iteration taken from ``history`` (iteration ``k > 0`` re-estimates P from the Wiener images
    of ``history[k]``, the Λ after ``k`` updates; iteration 0 starts from the microphones)."""
    psd = kamir.initial_psd(power, phi)
    footprint = settings.footprint()
    for step in range(upto):
        if step > 0:
            psd = kamir.update_psd(psd, history[step], power, phi)
        if footprint is not None:
            psd = jax.vmap(kamir.kernels.median_filter, in_axes=(0, None))(psd, footprint)
    return psd


@functools.partial(jax.jit, static_argnames=("settings",))
def _lambda_sums(power, phi, lam, psd, settings: kamir.Settings):
    return kamir.lambda_sums(lam, psd, power, settings.beta)


@functools.partial(jax.jit, static_argnames=("settings",))
def _finish_update(lam, numerator, denominator, phi, settings: kamir.Settings, lambda_cap=None):
    return kamir.next_lambda(lam, numerator, denominator, phi, settings, lambda_cap)


def _margin(settings: kamir.Settings) -> int:
    footprint = settings.footprint()
    return 0 if footprint is None else settings.iterations * (footprint.shape[1] // 2)


def _power_block(reader, first, last, settings, peak):
    spec = streaming.stft_block(reader, first, last, n_fft=settings.n_fft, hop=settings.hop, window=settings.window)
    return spec, jnp.abs(spec) ** 2 / peak


def _blocks(total, long: LongSettings, label: str, progress: bool):
    return streaming.progress_blocks(streaming.block_ranges(total, long.block_frames), label, progress)


class Summary(NamedTuple):
    """:func:`summarise`'s sample: ``(I, F, K)`` power divided by ``peak``, and the ``(K,)``
    frames' priorities."""

    power: jax.Array
    peak: float
    priorities: np.ndarray


def summarise(
    reader: streaming.SessionReader, settings: kamir.Settings, long: LongSettings, *, progress: bool = False
) -> Summary:
    """One pass: the ``(I, F, K)`` power of ``K`` = ``projection_size`` frames sampled uniformly
    (:class:`FrameSample`), divided by its peak, the peak and the frames' priorities."""
    if settings.gain_equalisation:
        raise ValueError("gain_equalisation needs the whole recording's quantiles; it is not "
                         "available for long recordings")
    total = streaming.num_frames(reader.length, settings.n_fft, settings.hop)
    sample = FrameSample(long.projection_size, jax.random.key(long.seed))
    for first, last in _blocks(total, long, "summary", progress):
        spec = streaming.stft_block(reader, first, last, n_fft=settings.n_fft, hop=settings.hop,
                                    window=settings.window)
        sample.add(first, np.asarray(jnp.abs(spec) ** 2))
    peak = sample.peak if sample.peak > 0 else 1.0
    return Summary(jnp.asarray(sample.frames) / peak, peak, sample.priorities)


def learn_lambda(
    reader: streaming.SessionReader,
    phi: np.ndarray,
    settings: kamir.Settings,
    long: LongSettings,
    *,
    progress: bool = False,
    lambda_cap: np.ndarray | None = None,
    summarised: Summary | None = None,
) -> tuple[np.ndarray, float, jax.Array]:
    """Stage 1: the Λ of every iteration ``(iterations + 1, F, I, J)``, the power peak, and the
    sources' projected PSDs ``(J, F, K)`` (weights for summarising Λ over frequency).

    With ``learn="projection"`` every entry is the Λ learned on the summary (separation then
    uses it fixed in all iterations); with ``"exact"`` entry ``k`` is the in-memory Λ after
    ``k`` iterations. ``lambda_cap``: ``(I, J)`` bound on Λ (:func:`kamir.cap_lambda`); the ratio
    floor's bound (``settings.bound_quantile``, :func:`kamir.floor_cap`) reads the summary's
    ``bound_frames`` of lowest priority, which are the in-memory bound's frames when
    ``seed`` is :data:`kamir.BOUND_SEED` and ``projection_size`` ≥ ``bound_frames``.
    ``summarised``: :func:`summarise`'s result when it is already known (no pass then).
    """
    summary, peak, priorities = summarise(reader, settings, long, progress=progress) if summarised is None else summarised
    total = streaming.num_frames(reader.length, settings.n_fft, settings.hop)
    phi_j = jnp.asarray(phi)
    cap = None if lambda_cap is None else jnp.asarray(lambda_cap, jnp.float32)
    # The in-memory bound reads the session's bound_frames of lowest priority: with the same seed,
    # the summary's lowest (bottom-k samples nest).
    cap = kamir.combined_cap(summary, phi_j, settings, cap, jnp.asarray(priorities))
    summary_psd = kamir.initial_psd(summary, phi_j)
    steps = settings.iterations + 1
    if long.learn == "projection" or not settings.update_lambda:
        summary_settings = dataclasses.replace(settings, kernel="none", gain_equalisation=False)
        lam, _ = kamir.estimate(summary, phi_j, summary_settings, lambda_cap=cap)
        return np.broadcast_to(np.asarray(lam), (steps, *lam.shape)).copy(), peak, summary_psd
    bins = settings.n_fft // 2 + 1
    history = [np.asarray(kamir.cap_lambda(kamir.initial_lambda(phi_j, bins, settings.rho), cap, settings))]
    margin = _margin(settings)
    for iteration in range(1, steps):
        numerator = denominator = 0.0
        lam_previous = jnp.asarray(history[-1])
        for first, last in _blocks(total, long, f"Λ pass {iteration}", progress):
            lo, hi = max(first - margin, 0), min(last + margin, total)
            _, power = _power_block(reader, lo, hi, settings, peak)
            psd = replay_psd(power, phi_j, jnp.asarray(np.stack(history)), settings, iteration)
            inner = slice(first - lo, last - lo)
            block_num, block_den = _lambda_sums(power[..., inner], phi_j, lam_previous, psd[..., inner], settings)
            numerator, denominator = numerator + block_num, denominator + block_den
        history.append(np.asarray(_finish_update(lam_previous, numerator, denominator, phi_j, settings, cap)))
    return np.stack(history), peak, summary_psd


@functools.partial(jax.jit, static_argnames=("settings",))
def _masks(lam, psd, phi, settings):
    return kamir.output_masks(lam, psd, phi, settings)


def separate(
    reader: streaming.SessionReader,
    out_dir: pathlib.Path,
    phi: np.ndarray,
    history: np.ndarray,
    peak: float,
    settings: kamir.Settings,
    long: LongSettings,
    *,
    progress: bool = False,
) -> dict[str, int]:
    """Stage 2: block-wise Wiener filtering with Λ fixed, streamed into ``out_dir``'s files;
    returns the samples clipped in PCM files (:attr:`bleedjax.streaming.TrackWriter.clipped`)."""
    total = streaming.num_frames(reader.length, settings.n_fft, settings.hop)
    phi_j, history_j = jnp.asarray(phi), jnp.asarray(history)
    margin = _margin(settings)
    writer = streaming.OverlapAddWriter(reader, out_dir, total, n_fft=settings.n_fft, hop=settings.hop,
                                        window=settings.window, offsets=reader.offsets)
    with streaming.committed(writer):
        for first, last in _blocks(total, long, "separate", progress):
            lo, hi = max(first - margin, 0), min(last + margin, total)
            spec, power = _power_block(reader, lo, hi, settings, peak)
            psd = replay_psd(power, phi_j, history_j, settings, settings.iterations)
            masks = _masks(history_j[-1], psd, phi_j, settings)
            inner = slice(first - lo, last - lo)
            writer.add(first, np.asarray(masks[..., inner] * spec[..., inner]))
    return writer.clipped


class LongResult(NamedTuple):
    """What :func:`reduce_long` applied."""

    lam: Float[np.ndarray, "bins mics sources"]
    """``(F, I, J)`` the final Λ."""
    gains: Float[np.ndarray, "mics sources"]
    """``(I, J)`` amplitude matrix: Λ averaged over frequency with the sources' summarised
    energies as weights, as :func:`kamir.average_gains`."""
    before: Float[np.ndarray, "mics sources"] | None
    """That matrix before the phase check (``None`` when the check bounded nothing)."""
    one_source: same_source.Table | None
    """The microphones that the check's fit took for one source (``()``: none); ``None`` where
    the check did not apply (:func:`~bleedjax.methods.phase_check.kamir_applies`) and nothing
    was looked for."""
    clipped: dict[str, int]
    """``{file name: samples}`` clipped in PCM files (:attr:`bleedjax.streaming.TrackWriter.clipped`)."""


def reduce_long(
    folder: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    phi: np.ndarray,
    settings: kamir.Settings,
    long: LongSettings = LongSettings(),
    *,
    pad: bool = False,
    progress: bool = False,
    offsets: np.ndarray | None = None,
    leave_out: tuple[str, ...] = (),
    check: phase_check.KamirCheckSettings | None = None,
    detection: same_source.Detection | None = None,
) -> LongResult:
    """Cleans one session folder of any length into ``out_dir``. ``offsets``
    (``(tracks,)`` DC offsets, from :meth:`~bleedjax.streaming.SessionReader.scan_offsets`) are
    taken out before and put back on the cleaned tracks. ``leave_out``: file names of the folder
    that are not part of the session (``reduce --keep``).

    ``check``: the phase check of ``bleedjax reduce --method kamir`` (``None``: none, as
    :func:`kamir.reduce_session`), on the busiest excerpt of at most ``phase_check_seconds``
    (one more read, :func:`bleedjax.streaming.busiest_seconds`; with ``detection``, it also
    looks for microphones of one source: :func:`bleedjax.methods.phase_check.kamir_check`); a
    bounded Λ is learned again from the same summary (with ``learn="exact"``, ``iterations``
    more passes), with the microphones of one source that it finds put on one source
    (:func:`kamir.pooled_phi`; ``lam`` and ``gains`` one column per microphone again,
    :func:`kamir.spread_pooled`). The presets that keep Λ at ρ only search, on the sessions where
    K4's Λ, learned from the same summary (:func:`~bleedjax.methods.phase_check.trigger_settings`),
    has a pair to check."""
    reader = streaming.SessionReader(folder, pad=pad, offsets=offsets, leave_out=leave_out)
    summarised = summarise(reader, settings, long, progress=progress)
    history, peak, summary_psd = learn_lambda(reader, phi, settings, long, progress=progress, summarised=summarised)
    gains = np.asarray(kamir.average_gains(jnp.asarray(history[-1]), summary_psd))
    before = checked = table = None
    if check is not None and phase_check.kamir_applies(check, settings.update_lambda, phi, reader.sample_rate,
                                                       detection):
        table = ()
        trigger = gains
        if not settings.update_lambda:
            trigger_history, _, trigger_psd = learn_lambda(
                reader, phi, phase_check.trigger_settings(settings), long, progress=progress, summarised=summarised,
            )
            trigger = np.asarray(kamir.average_gains(jnp.asarray(trigger_history[-1]), trigger_psd))
        if phase_check.mutual_pairs(trigger, check.phase_check_min_gain).any():
            start, samples = streaming.busiest_seconds(reader, check.phase_check_seconds)
            checked = phase_check.kamir_check(reader.read(start, start + samples), trigger, reader.sample_rate, check,
                                              detection, session_samples=reader.length, bound=settings.update_lambda)
    if checked is not None:
        before, table = (gains if settings.update_lambda else None), checked.table
        phi = kamir.pooled_phi(table, len(phi))
        history, peak, summary_psd = learn_lambda(
            reader, phi, settings, long, progress=progress, summarised=summarised, lambda_cap=checked.cap,
        )
        gains = np.asarray(kamir.average_gains(jnp.asarray(history[-1]), summary_psd))
    clipped = separate(reader, pathlib.Path(out_dir), phi, history, peak, settings, long, progress=progress)
    pooled = table or ()
    return LongResult(kamir.spread_pooled(history[-1], pooled), kamir.spread_pooled(gains, pooled), before, table,
                      clipped)
