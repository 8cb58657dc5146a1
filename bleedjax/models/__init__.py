"""Neural bleed reduction (Rajesh R & Rajan, WASPAA 2023): the t-UNet and the CAE in Flax NNX.

The interface that training (:mod:`bleedjax.train`) and inference (:mod:`bleedjax.methods.neural`)
use: :func:`build_model` from ``config.model``, :func:`loss_fn` on a batch of the data pipeline,
:func:`predict` for cleaned tracks and :func:`load_for_inference` for a checkpoint or the bundled
model. Configs: ``configs/tunet.py`` and ``configs/cae.py``.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from bleedjax._types import Array, Float, Int
from bleedjax.models import cae, inference, losses, tunet

MODEL_NAMES = ("tunet", "cae")
DEMIX_MODES = ("pinv", "wiener")
BUNDLED = {"tunet": pathlib.Path(__file__).resolve().parents[1] / "assets" / "tunet"}


def build_model(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
    """A fresh :class:`~bleedjax.models.tunet.TUNet` or :class:`~bleedjax.models.cae.CAE` from
    ``config.model`` (``name`` ``"tunet"`` or ``"cae"``)."""
    name = model_config.name
    if name == "tunet":
        return tunet.TUNet(
            model_config.num_tracks,
            channels=tuple(model_config.channels),
            kernel_size=model_config.kernel_size,
            pool=model_config.pool,
            dense=tuple(model_config.dense),
            frequency_bands=model_config.get("frequency_bands", 1),
            pair_histogram_bins=model_config.get("pair_histogram_bins", 0),
            n_fft=model_config.n_fft,
            hop=model_config.hop,
            rngs=rngs,
        )
    if name == "cae":
        return cae.CAE(
            model_config.n_fft,
            context_frames=model_config.context_frames,
            conv_channels=tuple(model_config.conv_channels),
            bottleneck=model_config.bottleneck,
            kernel_size=model_config.get("kernel_size", 2),
            rngs=rngs,
        )
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def loss_fn(model: nnx.Module, batch: dict, config: ml_collections.ConfigDict) -> tuple[Float[Array, ""], dict]:
    """The training loss of ``config.model.name`` and ``config.loss`` on a batch.

    Args:
        model: from :func:`build_model`.
        batch: ``"mics"``, ``"targets"`` ``(B, J, T)`` float32 with ``mics = matrix @ targets``
            and ``"active"`` ``(B, J)`` bool (other keys are ignored).
        config: the full training config.

    Returns:
        ``(loss, aux)``: the scalar loss and a dict of scalar metrics.
    """
    if config.model.name == "tunet":
        return losses.tunet_loss(model, batch, config)
    if config.model.name == "cae":
        if config.get("loss", "magnitude") != "magnitude":
            raise ValueError(f"the CAE's loss is 'magnitude', got {config.loss!r}")
        return losses.cae_loss(model, batch, config)
    raise ValueError(f"unknown model {config.model.name!r}; choose from {', '.join(MODEL_NAMES)}")


def predict(
    model: nnx.Module,
    mics: Float[Array, "batch tracks samples"],
    model_config: ml_collections.ConfigDict,
    lengths: Int[Array, " batch"] | None = None,
) -> Float[Array, "batch tracks samples"]:
    """Cleaned tracks: ``pinv(Λ̂) X`` for the t-UNet (per band for a frequency-dependent Λ̂),
    the CAE's magnitudes with the mixture phase for the CAE (one track at a time).

    Args:
        model: a trained model (the CAE uses batch norm's stored statistics).
        mics: ``(B, J, T)`` microphone signals at the model's sample rate.
        model_config: ``config.model``.
        lengths: ``(B,)`` true lengths of zero-padded sessions (all ``T`` when ``None``).
    """
    if model_config.name == "tunet":
        lam = model(mics, lengths)
        return demix_batch(mics, lam, n_fft=model_config.n_fft, hop=model_config.hop,
                           demix=model_config.get("demix", "pinv"))
    if model_config.name == "cae":
        batch, tracks, samples = mics.shape
        if lengths is None:
            lengths = jnp.full((batch,), samples)
        flat_lengths = jnp.repeat(lengths, tracks)
        clean = lambda args: cae.clean_track(
            model, args[0], n_fft=model_config.n_fft, hop=model_config.hop, length=args[1]
        )
        cleaned = jax.lax.map(clean, (mics.reshape(batch * tracks, samples), flat_lengths))
        return cleaned.reshape(mics.shape)
    raise ValueError(f"unknown model {model_config.name!r}; choose from {', '.join(MODEL_NAMES)}")


def demix_batch(
    mics: Float[Array, "batch tracks samples"],
    lam: Float[Array, "batch tracks tracks"] | Float[Array, "batch bands tracks tracks"],
    *,
    n_fft: int,
    hop: int,
    sample_rate: float = 1.0,
    model_rate: float = 1.0,
    demix: str = "pinv",
    lengths: Int[Array, " batch"] | None = None,
) -> Float[Array, "batch tracks samples"]:
    """``pinv(Λ̂) X`` (``demix="pinv"``) or the power-domain soft mask (``"wiener"``,
    :func:`~bleedjax.models.inference.wiener_spectrogram`) for every session of a batch. The STFT
    (every ``"wiener"``, and ``"pinv"`` with a frequency-dependent Λ̂) runs at ``sample_rate``
    with the frame duration of the model's ``n_fft``/``hop`` at ``model_rate`` and its bands in
    hertz (:func:`~bleedjax.models.inference.band_of_bin`). ``lengths``, the sessions' true
    lengths in a zero-padded batch, keeps the padding's STFT frames out of the inverse STFT, so a
    session comes out as it does alone."""
    if demix not in DEMIX_MODES:
        raise ValueError(f"demix must be one of {', '.join(DEMIX_MODES)}, got {demix!r}")
    if lam.ndim == 3 and demix == "pinv":
        return jax.vmap(inference.demix)(mics, inference.pinv_each(lam))
    lam = lam[:, None] if lam.ndim == 3 else lam
    session_n_fft, session_hop, band_index = session_stft(
        lam.shape[1], n_fft=n_fft, hop=hop, sample_rate=sample_rate, model_rate=model_rate
    )
    band_index = jnp.asarray(band_index)
    lengths = jnp.full(mics.shape[0], mics.shape[-1]) if lengths is None else lengths
    if demix == "wiener":
        return jax.vmap(
            lambda x, m, n: inference.wiener_bands(x, m, band_index, n_fft=session_n_fft, hop=session_hop, length=n)
        )(mics, lam, lengths)
    unmixing = inference.pinv_each(lam)
    return jax.vmap(
        lambda x, m, n: inference.demix_bands(x, m, band_index, n_fft=session_n_fft, hop=session_hop, length=n)
    )(mics, unmixing, lengths)


def session_stft(bands: int, *, n_fft: int, hop: int, sample_rate: float, model_rate: float) -> tuple[int, int, np.ndarray]:
    """``(n_fft, hop, band_index)`` of the STFT in which a session at ``sample_rate`` is demixed:
    the frame duration of the model's ``n_fft``/``hop`` at ``model_rate``, and the model band of
    each of its bins (:func:`~bleedjax.models.inference.band_of_bin`)."""
    scale = sample_rate / model_rate
    session_n_fft = max(2, round(n_fft * scale))
    session_hop = max(1, round(hop * scale))
    band_index = inference.band_of_bin(
        bands, n_fft=session_n_fft, sample_rate=sample_rate, model_n_fft=n_fft, model_rate=model_rate,
    )
    return session_n_fft, session_hop, band_index


def load_for_inference(
    checkpoint_dir: str | os.PathLike | None, method_name: str
) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """A trained model and its full training config, ready for :func:`predict`.

    Args:
        checkpoint_dir: a training workdir or its ``checkpoints`` folder (``bleedjax train``);
            ``None`` for the model bundled in ``bleedjax/assets/<method>/``.
        method_name: ``"tunet"`` or ``"cae"``; the checkpoint must hold that model.

    Raises:
        ValueError: no such checkpoint, no bundled model, or a checkpoint of another model.
    """
    if method_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {method_name!r}; choose from {', '.join(MODEL_NAMES)}")
    if checkpoint_dir is None:
        bundled = BUNDLED.get(method_name)
        if bundled is None or not bundled.is_dir() or not any(bundled.iterdir()):
            config = "configs/tunet.py" if method_name == "tunet" else "configs/cae.py"
            raise ValueError(
                f"no bundled {method_name} model in {bundled or 'bleedjax/assets'}; pass "
                f"--checkpoint DIR with a model trained by `bleedjax train --config {config} "
                f"--workdir DIR`"
            )
        checkpoint_dir = bundled
    from bleedjax import checkpointing

    model, config = checkpointing.restore_model(checkpoint_dir, model_name=method_name)
    if method_name == "cae":
        model.eval()
    return model, config


def receptive_field(model_config: ml_collections.ConfigDict) -> int:
    """The shortest input (samples) a model of ``model_config`` accepts."""
    if model_config.name == "tunet":
        return tunet.min_samples(
            kernel_size=model_config.kernel_size, pool=model_config.pool, stages=len(model_config.channels)
        )
    return int(model_config.n_fft)


__all__ = [
    "build_model",
    "cae",
    "demix_batch",
    "inference",
    "load_for_inference",
    "loss_fn",
    "losses",
    "predict",
    "receptive_field",
    "tunet",
]
