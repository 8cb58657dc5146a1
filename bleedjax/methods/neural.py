"""Bleed reduction with a trained t-UNet or CAE (Rajesh R & Rajan, WASPAA 2023), as a method of
:mod:`bleedjax.methods` (``bleedjax reduce --method tunet|cae [--checkpoint DIR]``).

t-UNet: Λ̂ is estimated on blocks of the model's training length (``block_seconds``, or the
batch's length when that is shorter; the last, shorter block counts when it covers the model's
receptive field), averaged over the blocks
weighted by their length, and the session is demixed whole, ``Ŝ = pinv(Λ̂) X`` or, with
``demix`` ``"wiener"`` (the model's ``config.model.demix`` unless ``--set demix=...``), by the
power-domain soft mask of :func:`bleedjax.models.inference.wiener_spectrogram`. Blocks bound the
memory of the encoder and keep the input like the training examples. A session at another sample
rate than the model's is resampled (band-limited, :func:`bleedjax.models.inference.resample`)
for the estimate of Λ̂ only: the demixing is applied at the session's own rate, so nothing above
the model's Nyquist frequency is lost (a frequency-dependent Λ̂ is applied per band in hertz, the
top band above the model's range).

CAE: it works on STFT bins whose frequencies depend on the rate, so a session at another rate is
an error (resample it first). Every track goes through the same CAE (the paper trains one per
stem type: pass the checkpoint of the stem you clean). ``bleed.json`` gets the least-squares
matrix ``X · pinv(Ŝ)`` of the result, the CAE having no Λ of its own.

Sessions above :data:`bleedjax.methods.NEURAL_LONG_SAMPLES` samples (or with ``--streaming``)
are streamed with bounded memory by :mod:`bleedjax.methods.neural_long`, to the same result
(for a t-UNet at another rate than the session's, up to the edges of the blocks' resampling).

Sessions must have the model's number of tracks ``J``; that is checked for every session before
anything is written. A t-UNet with the cross-track pair head (``model.pair_histogram_bins > 0``,
the bundled model) has no weight that depends on ``J`` and takes sessions of any number of tracks.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bleedjax import models, sessions
from bleedjax.methods import BatchResult
from bleedjax.models import inference, losses

NEURAL_METHODS = ("tunet", "cae")


def default_config(method: str, preset: str | None = None) -> ml_collections.ConfigDict:
    """Inference settings: ``checkpoint`` (``""``: the bundled model), ``block_seconds``
    (t-UNet: ``0`` uses the model's training block length), ``chunk`` (blocks or windows per
    model call, which bounds memory), and for long sessions (:mod:`bleedjax.methods.neural_long`)
    ``block_frames`` and the t-UNet's ``resample_margin``."""
    if preset is not None:
        raise ValueError(f"{method} has no presets; use --checkpoint, --set or --config")
    from bleedjax.methods.neural_long import LongSettings

    config = ml_collections.ConfigDict()
    config.checkpoint = ""
    if method == "tunet":
        config.block_seconds = 0.0
        config.chunk = 4
        config.demix = ""  # "": the model's own (config.model.demix); "pinv" or "wiener"
        config.resample_margin = LongSettings().resample_margin
    else:
        config.chunk = 256
    config.block_frames = LongSettings().block_frames
    return config


def with_checkpoint(method: str, config: ml_collections.ConfigDict, checkpoint: str | None):
    """``config`` with ``checkpoint`` set; an error for methods that have no model."""
    if checkpoint is None:
        return config
    if method not in NEURAL_METHODS:
        raise ValueError(f"--checkpoint works only with --method {' or '.join(NEURAL_METHODS)}, not {method}")
    config = ml_collections.ConfigDict(config.to_dict())
    config.checkpoint = str(checkpoint)
    return config


@functools.lru_cache(maxsize=4)
def _load(checkpoint: str, method: str):
    model, config = models.load_for_inference(checkpoint or None, method)
    graphdef, state = nnx.split(model)
    return graphdef, state, config


def load(config: ml_collections.ConfigDict, method: str):
    """``(graphdef, state, training config)`` of the model that ``config.checkpoint`` names
    (cached per process)."""
    checkpoint = config.get("checkpoint", "") or ""
    if checkpoint:
        checkpoint = str(pathlib.Path(checkpoint).resolve())
    return _load(checkpoint, method)


def check_session(track_names, training_config: ml_collections.ConfigDict, method: str):
    """SessionError unless the session has the model's number of tracks (any number for a
    t-UNet with the pair head)."""
    any_count = training_config.model.get("pair_histogram_bins", 0) > 0
    expected = training_config.model.num_tracks if method == "tunet" and not any_count else None
    if expected is not None and len(track_names) != expected:
        raise sessions.SessionError(
            f"the {method} model was trained for {expected} tracks; this session has "
            f"{len(track_names)} ({', '.join(track_names)})"
        )


def piece_lambdas(graphdef, state, pieces, piece_lengths, *, chunk: int):
    """The t-UNet's Λ̂ of every piece ``(N, J, block)`` of true length ``piece_lengths`` ``(N,)``
    (a piece shorter than the model's receptive field is run at that length and must be given
    no weight), ``chunk`` pieces per model call."""
    model = nnx.merge(graphdef, state)
    return jax.lax.map(
        lambda args: model(args[0][None], jnp.maximum(args[1], model.min_samples)[None])[0],
        (pieces, piece_lengths),
        batch_size=chunk,
    )


piece_lambdas_jit = jax.jit(piece_lambdas, static_argnames=("graphdef", "chunk"))


@functools.partial(jax.jit, static_argnames=("graphdef", "block", "chunk"))
def tunet_lambda(graphdef, state, audio, lengths, *, block: int, chunk: int):
    """Λ̂ of every session of a zero-padded batch at the model's rate: the length-weighted mean
    of the model's Λ̂ on blocks of ``block`` samples (module docstring).

    Args:
        graphdef, state: the t-UNet (``nnx.split``).
        audio: ``(S, J, T)`` sessions at the model's rate.
        lengths: ``(S,)`` true lengths.
        block: block length in samples (at least the model's receptive field).
        chunk: blocks per model call.

    Returns:
        ``(S, J, J)`` or ``(S, bands, J, J)`` Λ̂.
    """
    count, tracks, samples = audio.shape
    blocks = -(-samples // block)
    padded = jnp.pad(audio, ((0, 0), (0, 0), (0, blocks * block - samples)))
    pieces = padded.reshape(count, tracks, blocks, block).transpose(0, 2, 1, 3).reshape(-1, tracks, block)
    piece_lengths = jnp.clip(lengths[:, None] - block * jnp.arange(blocks)[None, :], 0, block).reshape(-1)
    estimates = piece_lambdas(graphdef, state, pieces, piece_lengths, chunk=chunk)
    weights = piece_weights(piece_lengths, minimum=nnx.merge(graphdef, state).min_samples).reshape(count, blocks)
    weights = weights / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
    estimates = estimates.reshape(count, blocks, *estimates.shape[1:])
    return jnp.einsum("sb,sb...->s...", weights, estimates)


def piece_weights(piece_lengths, *, minimum: int):
    """A piece's weight in the mean Λ̂: its length, or 0 below the model's receptive field."""
    return (piece_lengths * (piece_lengths >= minimum)).astype(jnp.float32)


def tunet_block(training_config, config, sample_rate: float, length: int) -> tuple[float, int]:
    """``(model_rate, block)``: the model's rate and the block length (model samples) in which
    Λ̂ is estimated for a session of ``length`` samples at ``sample_rate``."""
    model_rate = losses.model_rate(training_config)
    minimum = models.receptive_field(training_config.model)
    block_seconds = config.get("block_seconds", 0.0) or training_config.data.block_seconds
    longest = round(length * model_rate / sample_rate)
    return model_rate, max(min(round(block_seconds * model_rate), longest), minimum)


def check_length(training_config, sample_rate: float, lengths) -> None:
    """SessionError when a session is shorter than the t-UNet's receptive field."""
    model_rate = losses.model_rate(training_config)
    minimum = models.receptive_field(training_config.model)
    short = [int(n) for n in lengths if int(n * model_rate / sample_rate) < minimum]
    if short:
        raise sessions.SessionError(
            f"the t-UNet needs at least {minimum / model_rate:.2f} s of audio; a session has "
            f"{min(short) / sample_rate:.2f} s"
        )


def demix_mode(training_config, config) -> str:
    """``config.demix``, or the model's own; SessionError for an unknown mode."""
    demix = config.get("demix", "") or training_config.model.get("demix", "pinv")
    if demix not in models.DEMIX_MODES:
        raise sessions.SessionError(f"demix must be one of {', '.join(models.DEMIX_MODES)}, got {demix!r}")
    return demix


_demix = jax.jit(models.demix_batch, static_argnames=("n_fft", "hop", "sample_rate", "model_rate", "demix"))


def reduce_tunet(graphdef, state, training_config, audio, lengths, sample_rate: float, config):
    """Cleans a zero-padded batch ``(S, J, T)`` at ``sample_rate`` with a t-UNet; returns the
    cleaned batch and Λ̂ (module docstring)."""
    model_config = training_config.model
    check_length(training_config, sample_rate, lengths)
    model_rate, block = tunet_block(training_config, config, sample_rate, audio.shape[-1])
    ratio = model_rate / sample_rate
    longest = round(audio.shape[-1] * ratio)
    audio = jnp.asarray(audio, jnp.float32)
    lengths = jnp.asarray(lengths)
    if sample_rate != model_rate:
        at_model_rate = inference.resample(audio, longest)
        model_lengths = jnp.floor(lengths * ratio).astype(jnp.int32)
    else:
        at_model_rate, model_lengths = audio, lengths
    lam = tunet_lambda(graphdef, state, at_model_rate, model_lengths, block=block, chunk=int(config.get("chunk", 4)))
    demix = demix_mode(training_config, config)
    cleaned = _demix(
        audio, lam, n_fft=model_config.n_fft, hop=model_config.hop, sample_rate=float(sample_rate),
        model_rate=float(model_rate), demix=demix, lengths=lengths,
    )
    return cleaned, lam


@functools.partial(jax.jit, static_argnames=("graphdef", "n_fft", "hop", "chunk"))
def cae_clean(graphdef, state, audio, lengths, *, n_fft: int, hop: int, chunk: int):
    """Every track of a zero-padded batch ``(S, J, T)`` cleaned by the CAE, one track at a time."""
    model = nnx.merge(graphdef, state)
    _, tracks, samples = audio.shape
    flat_lengths = jnp.repeat(lengths, tracks)

    def one(args):
        return models.cae.clean_track(model, args[0], n_fft=n_fft, hop=hop, length=args[1], chunk=chunk)

    return jax.lax.map(one, (audio.reshape(-1, samples), flat_lengths)).reshape(audio.shape)


def effective_matrix(mics: np.ndarray, cleaned: np.ndarray) -> np.ndarray:
    """``X · pinv(Ŝ)`` per session, ``(S, J, J)``: the bleed matrix that best maps the result
    back to the microphones (what ``bleed.json`` reports for the CAE)."""
    return np.asarray(losses.interference_matrix(jnp.asarray(mics), jnp.asarray(cleaned)))


def run(method: str, audio, lengths, config, track_names, *, sample_rate: float) -> BatchResult:
    """The registry's ``run`` for ``tunet`` and ``cae`` (module docstring)."""
    graphdef, state, training_config = load(config, method)
    check_session(track_names, training_config, method)
    if method == "tunet":
        cleaned, lam = reduce_tunet(graphdef, state, training_config, audio, lengths, sample_rate, config)
        cleaned, lam = jax.device_get((cleaned, lam))
        matrices = np.asarray(lam) if lam.ndim == 3 else np.asarray(lam).mean(axis=1)
        return BatchResult(np.asarray(cleaned), matrices)
    check_cae_rate(training_config, sample_rate)
    model_config = training_config.model
    cleaned = cae_clean(
        graphdef, state, jnp.asarray(audio, jnp.float32), jnp.asarray(lengths),
        n_fft=model_config.n_fft, hop=model_config.hop, chunk=int(config.get("chunk", 256)),
    )
    cleaned = np.asarray(jax.device_get(cleaned))
    return BatchResult(cleaned, effective_matrix(np.asarray(audio, np.float32), cleaned))


def check_cae_rate(training_config, sample_rate: float) -> None:
    """SessionError unless the session is at the CAE's rate (its STFT bins depend on it)."""
    model_rate = losses.model_rate(training_config)
    if sample_rate != model_rate:
        raise sessions.SessionError(
            f"the CAE was trained at {model_rate:g} Hz and its STFT bins depend on the rate; the "
            f"session is at {sample_rate:g} Hz (resample it first)"
        )


def validate(method: str, config, sample_rate: float) -> None:
    """The registry's ``validate``: the model loads, the CAE's rate and the t-UNet's ``demix``
    fit (before anything is written)."""
    _, _, training_config = load(config, method)
    if method == "cae":
        check_cae_rate(training_config, sample_rate)
    else:
        demix_mode(training_config, config)


def run_long(method: str, folder, out_dir, config, long, pad, progress, offsets, leave_out=()) -> BatchResult:
    """The registry's ``run_long`` (:mod:`bleedjax.methods.neural_long`; ``long``: its
    ``LongSettings``)."""
    from bleedjax.methods import neural_long

    matrix, clipped = neural_long.reduce_long(method, folder, out_dir, config, long, pad=pad, progress=progress,
                                              offsets=offsets, leave_out=leave_out)
    return BatchResult(None, (matrix if matrix.ndim == 2 else matrix.mean(axis=0))[None], clipped=clipped)


def batch_key(method: str, track_names, config, *, sample_rate: float):
    """Checks the session against the model (before anything is written); sessions batch by rate."""
    _, _, training_config = load(config, method)
    check_session(track_names, training_config, method)
    return float(sample_rate)
