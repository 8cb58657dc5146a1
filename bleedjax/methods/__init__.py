"""Bleed-reduction methods behind one registry that :mod:`bleedjax.reduce` and the CLI use.

A method runs on a zero-padded batch ``(sessions, tracks, samples)`` whose sessions share one
batch key (the track count, and for KAMIR the channel selection) and returns the cleaned batch,
a ``(sessions, tracks, sources)`` amplitude bleed matrix for ``bleed.json`` and any full-size
arrays for ``bleed.npz``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


class BatchResult(NamedTuple):
    """What a method returns for a batch of sessions."""

    cleaned: np.ndarray
    matrices: np.ndarray
    sources: list[str] | None = None
    arrays: dict[str, np.ndarray | list[np.ndarray]] | None = None
    """Arrays for ``bleed.npz``, indexed by session first (a list where their shapes differ)."""
    interference: np.ndarray | None = None
    checked: np.ndarray | None = None
    """Spectral subtraction with its phase check: ``(sessions, J, J)`` λ before the check."""
    one_source: np.ndarray | None = None
    """``(sessions, J, J)`` booleans: the microphones that :func:`bleedjax.same_source.detect`
    took for one source and that were not cleaned against each other (``None``: no detection ran)."""
    clipped: dict[str, int] | None = None
    """A streamed session (``run_long``): ``{file name: samples}`` of its cleaned files beyond full
    scale in an integer (PCM) format, which clips them there (:attr:`bleedjax.streaming.TrackWriter.clipped`)."""


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: the CLI name.
        default_config: ``preset -> ConfigDict`` (``None`` picks the default preset).
        presets: preset names (empty when the method has none).
        run: ``(audio, lengths, config, track_names) -> BatchResult`` on a batch.
        batch_key: ``(track_names, config) -> hashable``; sessions with equal keys batch together.
        artefacts: the files written beside the cleaned audio.
        run_long: ``(folder, out_dir, config, track_names, pad, progress, offsets, leave_out) -> BatchResult``
            of one session, streamed with bounded memory (``None``: the method has no such path);
            ``offsets`` are the tracks' DC offsets, taken out before and put back after; its
            ``clipped`` counts the samples it clipped in PCM files.
        min_tracks: the fewest tracks a session may have.
        validate: ``(config, sample_rate) -> None``, raises ``ValueError`` on a config that does
            not fit a session; called for every session before anything is written.
        uses_sample_rate: ``run`` and ``batch_key`` take the sessions' ``sample_rate=`` keyword
            (and sessions batch only with sessions of the same rate).
        long_samples: sessions with more samples (tracks × length) take ``run_long``; ``None``:
            :data:`bleedjax.reduce.LONG_SESSION_SAMPLES`.
    """

    name: str
    default_config: Callable[[str | None], ml_collections.ConfigDict]
    presets: tuple[str, ...]
    run: Callable[[np.ndarray, np.ndarray, ml_collections.ConfigDict, Sequence[str]], BatchResult]
    batch_key: Callable[[Sequence[str], ml_collections.ConfigDict], Hashable] = lambda names, config: None
    artefacts: tuple[str, ...] = ("bleed.json",)
    run_long: Callable | None = None
    min_tracks: int = 2
    validate: Callable[[ml_collections.ConfigDict, int], None] | None = None
    uses_sample_rate: bool = False
    long_samples: int | None = None

    def run_session(
        self, audio: np.ndarray, config: ml_collections.ConfigDict, track_names: Sequence[str], **kwargs
    ) -> BatchResult:
        """``run`` on one unpadded ``(tracks, samples)`` session, as a batch of one (``kwargs``: e.g.
        ``sample_rate=`` for the methods that take it)."""
        audio = np.asarray(audio)
        return self.run(audio[None], np.asarray([audio.shape[-1]]), config, track_names, **kwargs)


def _settings(cls, config: ml_collections.ConfigDict):
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in config.to_dict().items() if k in fields})


def _spectral_subtraction_config(preset: str | None = None) -> ml_collections.ConfigDict:
    from bleedjax.configs import spectral_subtraction

    return spectral_subtraction.get_config(spectral_subtraction.DEFAULT_PRESET if preset is None else preset)


def _spectral_subtraction_run(audio, lengths, config, track_names, *, sample_rate=None) -> BatchResult:
    """Spectral subtraction on a batch; with ``phase_check`` the sessions that have a pair with
    ``√(λ_ij λ_ji) ≥ phase_check_min_lambda`` are cleaned again, together in one padded batch,
    with those pairs' λ set to the phase-aware gains
    (:mod:`bleedjax.methods.phase_check`), and ``checked`` holds the λ before the check.
    ``sample_rate`` sets the check's excerpt (``None``: the whole session). Where no channel map
    is given and the sample rate is known, the check's fit also looks for microphones of one
    source (:func:`bleedjax.same_source.detect`); λ is then estimated again without regressing
    them on each other, and ``one_source`` says which they are. The presets without the check
    fit the same model for that search alone, on the sessions with such a pair, and estimate λ
    again where it finds microphones of one source (``detect_same_source=false``: the paper's
    λ as it is)."""
    from bleedjax import same_source
    from bleedjax.methods import phase_check, spectral_subtraction

    settings = _mapped_settings(spectral_subtraction.Settings, track_names, config)
    check = _settings(phase_check.CheckSettings, config)
    detection = _searched(config, sample_rate)
    if not check.phase_check and detection is None:
        result = spectral_subtraction.reduce_sessions(jnp.asarray(audio, jnp.float32), settings, jnp.asarray(lengths))
        return BatchResult(*(np.array(a) for a in jax.device_get((result.cleaned, result.lam))))
    # Every pass takes its λ weights and same-source table as arrays, so that the first pass and
    # the checked sessions' passes share one compilation.
    audio, lengths = np.asarray(audio), np.asarray(lengths)
    tracks = audio.shape[1]
    plain = dataclasses.replace(settings, same_source=())

    def run(rows, weights, tables):
        masks = np.stack([same_source.apart(table, tracks) for table in tables])
        return spectral_subtraction.reduce_sessions(
            jnp.asarray(audio[rows], jnp.float32), plain, jnp.asarray(lengths[rows]),
            jnp.asarray(np.stack(weights), jnp.float32), jnp.asarray(masks))

    everyone = list(range(len(audio)))
    ones = [np.ones((tracks, tracks), np.float32)] * len(everyone)
    result = run(everyone, ones, [settings.same_source] * len(everyone))
    cleaned, lam = (np.array(a) for a in jax.device_get((result.cleaned, result.lam)))
    before = lam.copy()
    found = {}
    for row, length in enumerate(lengths.tolist()):
        session = np.asarray(audio[row, :, :length], np.float32)
        checked = phase_check.check_session(
            session, before[row], *phase_check.excerpt(check, sample_rate, length), check.phase_check_min_lambda,
            settings.same_source, sample_rate, detection,
        )
        if checked is not None and (check.phase_check or checked.table):
            found[row] = checked
    if found:
        rows, tables = list(found), [found[row].table for row in found]
        if not check.phase_check:  # the search alone: λ estimated again with the tables found
            again = run(rows, ones[: len(rows)], tables)
        else:
            regressed = before[rows]
            if any(table != settings.same_source for table in tables):
                regressed = np.asarray(run(rows, ones[: len(rows)], tables).lam)
            weights = [phase_check.checked_weights(regressed[k], found[row].gains, check.phase_check_min_lambda,
                                                   settings.max_lambda) for k, row in enumerate(rows)]
            again = run(rows, weights, tables)
        cleaned[rows], lam[rows] = jax.device_get((again.cleaned, again.lam))
    one_source = _one_source({row: c.table for row, c in found.items()}, lam.shape, detection)
    return BatchResult(cleaned, lam, checked=before if check.phase_check else None, one_source=one_source)


def _detection(config):
    """The :class:`~bleedjax.same_source.Detection` of ``config`` (its values checked); ``None``
    where nothing is looked for: a channel map says which microphones share a source, or
    ``detect_same_source`` is off."""
    from bleedjax.same_source import Detection

    if config.get("channel_map"):
        return None
    detection = _settings(Detection, config)
    return detection if detection.detect_same_source else None


def _searched(config, sample_rate: int | None):
    """:func:`_detection` (its values checked in any case), where the sample rate is known: the
    search's delays are in milliseconds; ``None`` otherwise."""
    detection = _detection(config)
    return detection if sample_rate is not None else None


def _one_source(tables: dict, shape: tuple[int, ...], detection) -> np.ndarray | None:
    """``(sessions, J, J)`` booleans of the microphones that detection put on one source (the
    diagonal False), from ``{row: table}``; ``None`` without detection."""
    if detection is None:
        return None
    found = np.zeros(shape, bool)
    for row, table in tables.items():
        if table:
            found[row] = np.asarray(table) & ~np.eye(shape[-1], dtype=bool)
    return found


def _mapped_settings(cls, track_names, config):
    """:func:`_settings` of a method that takes ``same_source`` (spectral subtraction, the
    differentiable model), with the table from the ``channel_map``: the microphones of one source
    are not regressed on, nor subtracted from, each other."""
    return dataclasses.replace(_settings(cls, config), same_source=_same_source(track_names, config))


def _same_source(track_names, config):
    """The table of microphones that the ``channel_map`` puts on one source (``()`` without one)."""
    from bleedjax.same_source import from_channel_map

    return from_channel_map(_load_channel_map(track_names, config)[0]) if config.get("channel_map") else ()


def _load_channel_map(track_names, config) -> tuple[np.ndarray, list[str]]:
    from bleedjax.channel_map import load_channel_map

    return load_channel_map(config.channel_map, track_names)


def _spectral_subtraction_batch_key(track_names, config, *, sample_rate):
    """Sessions batch by sample rate (the phase check's excerpt is in seconds) and by the
    microphones that the channel map puts on one source."""
    return sample_rate, _same_source(track_names, config)


def _spectral_subtraction_run_long(
    folder, out_dir, config, track_names, pad, progress, offsets, leave_out=()
) -> BatchResult:
    from bleedjax.methods import phase_check, spectral_subtraction, spectral_subtraction_long

    settings = _mapped_settings(spectral_subtraction.Settings, track_names, config)
    long = _settings(spectral_subtraction_long.LongSettings, config)
    check = _settings(phase_check.CheckSettings, config)
    detection = _detection(config)
    lam, before, table, clipped = spectral_subtraction_long.reduce_long(
        folder, out_dir, settings, long, check, pad=pad, progress=progress, offsets=offsets, leave_out=leave_out,
        detection=detection,
    )
    return BatchResult(None, lam[None], checked=None if before is None else before[None],
                       one_source=_one_source({0: table}, (1, *lam.shape), detection), clipped=clipped)


def _kamir_config(preset: str | None = None) -> ml_collections.ConfigDict:
    from bleedjax.configs import kamir

    return kamir.get_config(kamir.DEFAULT_PRESET if preset is None else preset)


def _kamir_phi(track_names, config) -> tuple[np.ndarray, list[str]]:
    from bleedjax.methods.kamir import identity_phi

    if config.get("channel_map"):
        return _load_channel_map(track_names, config)
    return identity_phi(len(track_names)), list(track_names)


def _kamir_run(audio, lengths, config, track_names, *, sample_rate=None) -> BatchResult:
    """KAMIR on a batch; with the phase check (:func:`bleedjax.methods.phase_check.kamir_check`:
    identity channel selection, a known ``sample_rate``) the sessions with a pair of
    ``√(g_ij g_ji) ≥ phase_check_min_gain`` are cleaned again, together in one padded batch:
    with those pairs' Λ bounded by the phase-aware gains (presets that update Λ), and where no
    channel map is given, with the microphones of one source that the check's fit finds
    (:func:`bleedjax.same_source.detect`) put on one source, as a map would
    (:func:`~bleedjax.methods.kamir.pooled_phi`; reported one column per microphone,
    :func:`~bleedjax.methods.kamir.spread_pooled`); ``one_source`` says which they are.
    ``checked`` holds the gains before the check. The presets that keep Λ at ρ only search, on
    the sessions where K4's gains have such a pair
    (:func:`~bleedjax.methods.phase_check.trigger_settings`), and are cleaned once, after it."""
    from bleedjax.methods import kamir, phase_check

    phi, sources = _kamir_phi(track_names, config)
    settings = _settings(kamir.Settings, config)
    check = _settings(phase_check.KamirCheckSettings, config)
    detection = _detection(config)
    host_audio = np.asarray(audio, np.float32)
    audio, lengths = jnp.asarray(host_audio), jnp.asarray(lengths)
    if not phase_check.kamir_applies(check, settings.update_lambda, phi, sample_rate, detection):
        result = kamir.reduce_sessions(audio, jnp.asarray(phi), settings, lengths)
        cleaned, lam, gains = (np.array(a) for a in jax.device_get((result.cleaned, result.lam, result.gains)))
        return BatchResult(cleaned, gains, sources, {"lambda": lam})
    # every pass takes one channel selection and one bound per session (the first: the identity,
    # and inf), so that a batch cleaned again whole (a single session) reuses its compiled program
    phis = np.broadcast_to(phi, (len(audio), *phi.shape))
    unbounded = np.full((len(audio), *phi.shape), np.inf, np.float32)
    trigger = (audio, jnp.asarray(phis), phase_check.trigger_settings(settings), lengths, jnp.asarray(unbounded))
    if settings.update_lambda:
        first = kamir.reduce_sessions(*trigger)
        cleaned, lam, gains = (np.array(a) for a in jax.device_get((first.cleaned, first.lam, first.gains)))
    else:  # Λ at ρ: K4's gains only pick the sessions to search, and every session is cleaned after it
        gains = np.array(jax.device_get(kamir.gains_of_sessions(*trigger)))
        cleaned = lam = None
    before = gains.copy()
    found = {}
    for row, length in enumerate(np.asarray(lengths).tolist()):
        checked = phase_check.kamir_check(host_audio[row, :, :length], before[row], sample_rate, check,
                                          detection, bound=settings.update_lambda)
        if checked is not None:
            found[row] = checked
    rows = list(found) if settings.update_lambda else list(range(len(audio)))
    if rows:
        tables = [found[row].table if row in found else () for row in rows]
        again = kamir.reduce_sessions(
            audio[np.asarray(rows)],
            jnp.asarray(np.stack([kamir.pooled_phi(table, len(phi)) for table in tables])),
            settings,
            lengths[np.asarray(rows)],
            jnp.asarray(np.stack([found[row].cap if row in found else unbounded[row] for row in rows])),
        )
        again_lam, again_gains = jax.device_get((again.lam, again.gains))
        if cleaned is None:  # Λ at ρ: every session is in rows, in order
            cleaned = np.array(jax.device_get(again.cleaned))
            lam = np.empty((len(audio), again_lam.shape[1], *gains.shape[1:]), again_lam.dtype)
        else:
            cleaned[rows] = jax.device_get(again.cleaned)
        for index, (row, table) in enumerate(zip(rows, tables, strict=True)):
            lam[row] = kamir.spread_pooled(again_lam[index], table)
            gains[row] = kamir.spread_pooled(again_gains[index], table)
    one_source = _one_source({row: checked.table for row, checked in found.items()}, gains.shape, detection)
    return BatchResult(cleaned, gains, sources, {"lambda": lam}, checked=before if settings.update_lambda else None,
                       one_source=one_source)


def _kamir_run_long(
    folder, out_dir, config, track_names, pad, progress, offsets, leave_out=()
) -> BatchResult:
    from bleedjax.methods import kamir, kamir_long, phase_check

    phi, sources = _kamir_phi(track_names, config)
    settings = _settings(kamir.Settings, config)
    long = _settings(kamir_long.LongSettings, config)
    check = _settings(phase_check.KamirCheckSettings, config)
    detection = _detection(config)
    streamed = kamir_long.reduce_long(
        folder, out_dir, phi, settings, long, pad=pad, progress=progress, offsets=offsets, check=check,
        leave_out=leave_out, detection=detection,
    )
    searched = detection if streamed.one_source is not None else None
    return BatchResult(None, streamed.gains[None], sources, {"lambda": streamed.lam[None]},
                       checked=None if streamed.before is None else streamed.before[None],
                       one_source=_one_source({0: streamed.one_source or ()}, (1, *streamed.gains.shape), searched),
                       clipped=streamed.clipped)


def _kamir_validate(config, sample_rate: int) -> None:
    from bleedjax.methods import kamir, phase_check

    _settings(kamir.Settings, config)
    _settings(phase_check.KamirCheckSettings, config)
    _detection(config)


def _kamir_batch_key(track_names, config, *, sample_rate):
    """Sessions batch by channel selection and sample rate (the phase check's excerpt is in seconds)."""
    return _kamir_phi(track_names, config)[0].tobytes(), sample_rate


def _kam_nmf_config(preset: str | None = None) -> ml_collections.ConfigDict:
    from bleedjax.configs import kam_nmf

    if preset is not None:
        raise ValueError("kam-nmf has no presets; use --set or --config")
    return kam_nmf.get_config()


def _kam_nmf_dictionary(config):
    from bleedjax import dictionary

    if not config.get("dictionary"):
        raise ValueError("--method kam-nmf needs an interference dictionary: --dictionary dict.npz "
                         "(from bleedjax learn-dictionary)")
    return dictionary.load(config.dictionary)


def _kam_nmf_validate(config, sample_rate: int) -> None:
    from bleedjax.methods import kam_nmf

    _settings(kam_nmf.Settings, config)
    _kam_nmf_dictionary(config).check(sample_rate, config.n_fft, where=str(config.dictionary))


def _kam_nmf_run(audio, lengths, config, track_names) -> BatchResult:
    """KAM + NMF on every track of a batch; ``corruption`` holds each session's own frames, not
    the padding's."""
    from bleedjax import signal
    from bleedjax.methods import kam_nmf

    learned = _kam_nmf_dictionary(config)
    settings = _settings(kam_nmf.Settings, config)
    sessions, tracks, samples = audio.shape
    result = kam_nmf.reduce_tracks(
        jnp.asarray(audio.reshape(-1, samples), jnp.float32), jnp.asarray(learned.W), settings,
        jnp.asarray(np.repeat(lengths, tracks)),
    )
    cleaned, interference, share, k = (np.asarray(a) for a in jax.device_get(result))
    share = share.reshape(sessions, tracks, -1)
    frames = [signal.num_frames(int(length), settings.n_fft, settings.hop) for length in np.asarray(lengths)]
    arrays = {"corruption": [share[row, :, :count] for row, count in enumerate(frames)], "k": k.reshape(sessions, tracks)}
    return BatchResult(
        cleaned.reshape(audio.shape), np.zeros((sessions, tracks, tracks)), None, arrays,
        interference.reshape(audio.shape),
    )


def _kam_nmf_run_long(
    folder, out_dir, config, track_names, pad, progress, offsets, leave_out=()
) -> BatchResult:
    from bleedjax.methods import kam_nmf, kam_nmf_long

    learned = _kam_nmf_dictionary(config)
    settings = _settings(kam_nmf.Settings, config)
    long = _settings(kam_nmf_long.LongSettings, config)
    share, k, clipped = kam_nmf_long.reduce_long(
        folder, out_dir, learned.W, settings, long, pad=pad, progress=progress, offsets=offsets, leave_out=leave_out
    )
    tracks = len(track_names)
    return BatchResult(None, np.zeros((1, tracks, tracks)), None, {"corruption": share[None], "k": k[None]},
                       clipped=clipped)


KAM_NMF_LONG_SAMPLES = 1 << 23
"""KAM + NMF streams sessions above 2^23 samples (6.3 minutes of one track at 22.05 kHz): the
in-memory path needs about 0.1 GiB per minute of a track."""


def _differentiable_config(preset: str | None = None) -> ml_collections.ConfigDict:
    from bleedjax.configs import differentiable

    if preset is not None:
        raise ValueError("differentiable has no presets; use --set or --config")
    return differentiable.get_config()


def _differentiable_arrays(result) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The gains and the arrays for ``bleed.npz`` of a :class:`~bleedjax.methods.differentiable.Result`,
    as writable host arrays."""
    params, initial, residual, coherent = jax.device_get(
        (result.params, result.initial, result.residual_lambda, result.coherence)
    )
    arrays = {
        "delays_samples": np.array(params.delays),
        "colour": np.array(params.colour),
        "initial_gains": np.array(initial.gains),
        "initial_delays_samples": np.array(initial.delays),
        "residual_lambda": np.array(residual),
        "coherence": np.array(coherent),
    }
    return np.array(params.gains), arrays


def _differentiable_run(audio, lengths, config, track_names, *, sample_rate=None) -> BatchResult:
    """The differentiable model on a batch. Where no channel map is given and the sample rate is
    known, the sessions in which the fit finds microphones of one source
    (:func:`bleedjax.same_source.detect`) are fitted and cleaned again, together in one padded
    batch, with no bleed between those microphones; ``one_source`` says which they are. Every
    pass takes its same-source tables as arrays, so the passes share one compilation."""
    from bleedjax import same_source
    from bleedjax.methods import differentiable

    settings = _mapped_settings(differentiable.Settings, track_names, config)
    audio, lengths = np.asarray(audio), np.asarray(lengths)
    tracks = audio.shape[1]
    plain = dataclasses.replace(settings, same_source=())

    def run(rows, tables):
        masks = np.stack([same_source.apart(table, tracks) for table in tables])
        return differentiable.reduce_sessions(jnp.asarray(audio[rows], jnp.float32), plain,
                                              jnp.asarray(lengths[rows]), jnp.asarray(masks))

    result = run(list(range(len(audio))), [settings.same_source] * len(audio))
    cleaned = np.array(jax.device_get(result.cleaned))
    gains, arrays = _differentiable_arrays(result)
    detection = _searched(config, sample_rate)
    tables = {}
    if detection is not None:
        for row, length in enumerate(lengths.tolist()):
            table, _ = differentiable.one_source_table(
                jnp.asarray(audio[row, :, :length], jnp.float32), settings, sample_rate, detection,
                first=(gains[row], arrays["delays_samples"][row]),
            )
            if table:
                tables[row] = table
    if tables:
        rows = list(tables)
        again = run(rows, [tables[row] for row in rows])
        cleaned[rows] = jax.device_get(again.cleaned)
        gains[rows], again_arrays = _differentiable_arrays(again)
        for name, value in again_arrays.items():
            arrays[name][rows] = value
    return BatchResult(cleaned, gains, None, arrays, one_source=_one_source(tables, gains.shape, detection))


def _differentiable_run_long(
    folder, out_dir, config, track_names, pad, progress, offsets, leave_out=()
) -> BatchResult:
    from bleedjax.methods import differentiable, differentiable_long

    settings = _mapped_settings(differentiable.Settings, track_names, config)
    long = _settings(differentiable_long.LongSettings, config)
    detection = _detection(config)
    fitted, start, samples, table, clipped = differentiable_long.reduce_long(
        folder, out_dir, settings, long, pad=pad, progress=progress, offsets=offsets, leave_out=leave_out,
        detection=detection,
    )
    gains, arrays = _differentiable_arrays(fitted)
    arrays["fitted_on_samples"] = np.asarray([start, start + samples])
    return BatchResult(None, gains[None], None, {name: value[None] for name, value in arrays.items()},
                       one_source=_one_source({0: table}, (1, *gains.shape), detection), clipped=clipped)


def _differentiable_batch_key(track_names, config, *, sample_rate):
    """Sessions batch by sample rate (detection's delays are in milliseconds) and by the
    microphones that the channel map puts on one source."""
    return sample_rate, _same_source(track_names, config)


DIFFERENTIABLE_LONG_SAMPLES = 1 << 25
"""The differentiable model streams sessions above 2^25 samples (4 tracks × 3.2 minutes at
44.1 kHz): its in-memory path needs about 120 bytes per sample (1.86 GiB for 4 tracks × 60 s)."""


METHODS = {
    "spectral-subtraction": Method(
        "spectral-subtraction", _spectral_subtraction_config, ("refined", "paper", "power", "floor", "auto"),
        _spectral_subtraction_run, _spectral_subtraction_batch_key, run_long=_spectral_subtraction_run_long,
        uses_sample_rate=True,
    ),
    "kamir": Method(
        "kamir", _kamir_config, ("K1", "K2", "K3", "K4", "K5"), _kamir_run, _kamir_batch_key,
        ("bleed.json", "bleed.npz"), _kamir_run_long, validate=_kamir_validate, uses_sample_rate=True,
    ),
    "kam-nmf": Method(
        "kam-nmf", _kam_nmf_config, (), _kam_nmf_run, artefacts=("bleed.json", "bleed.npz", "interference"),
        min_tracks=1, validate=_kam_nmf_validate, run_long=_kam_nmf_run_long, long_samples=KAM_NMF_LONG_SAMPLES,
    ),
    "differentiable": Method(
        "differentiable", _differentiable_config, (), _differentiable_run, _differentiable_batch_key,
        artefacts=("bleed.json", "bleed.npz"), run_long=_differentiable_run_long,
        long_samples=DIFFERENTIABLE_LONG_SAMPLES, uses_sample_rate=True,
    ),
}


def _neural(name: str) -> Method:
    """``tunet`` and ``cae``: trained models (:mod:`bleedjax.methods.neural`)."""

    def default_config(preset=None):
        from bleedjax.methods import neural

        return neural.default_config(name, preset)

    def run(audio, lengths, config, track_names, *, sample_rate):
        from bleedjax.methods import neural

        return neural.run(name, audio, lengths, config, track_names, sample_rate=sample_rate)

    def batch_key(track_names, config, *, sample_rate):
        from bleedjax.methods import neural

        return neural.batch_key(name, track_names, config, sample_rate=sample_rate)

    def run_long(folder, out_dir, config, track_names, pad, progress, offsets, leave_out=()):
        from bleedjax.methods import neural, neural_long

        long = _settings(neural_long.LongSettings, config)
        return neural.run_long(name, folder, out_dir, config, long, pad, progress, offsets, leave_out)

    def validate(config, sample_rate):
        from bleedjax.methods import neural

        neural.validate(name, config, sample_rate)

    return Method(name, default_config, (), run, batch_key, run_long=run_long, validate=validate,
                  uses_sample_rate=True, long_samples=NEURAL_LONG_SAMPLES)


NEURAL_LONG_SAMPLES = 1 << 25
"""The t-UNet and the CAE stream sessions above 2^25 samples (16 tracks × 47 s at 44.1 kHz): in
memory the bundled t-UNet needs about 2.9 GiB per minute of 16 tracks at 44.1 kHz (its Wiener
demixing's spectrograms), the CAE about 0.9 GiB."""


METHODS["tunet"] = _neural("tunet")
METHODS["cae"] = _neural("cae")


def get_method(name: str) -> Method:
    """Looks a method up by its CLI name."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]
