"""The convolutional autoencoder (CAE) of Rajesh R & Rajan (WASPAA 2023 [1], Sec. 3.1), which
treats bleed as noise on one microphone's magnitude spectrogram; one model per stem type.

Architecture (the authors' code [2], ``CAE/train.py`` and ``CAE/DynamicInput.py``):

* Input: ``context_frames`` (3) consecutive magnitude frames of the microphone track (n_fft 2048,
  1025 bins), concatenated along frequency into one ``3 · 1025``-long column.
* Encoder: valid convolutions along that column (kernel 2; 32 then 64 channels; ReLU, batch norm).
* Bottleneck: flatten, dense 100 (ReLU), dense back to the encoder's size (ReLU).
* Decoder: transposed convolutions (kernel 2; 32 channels with ReLU and batch norm, then 1 channel)
  back to ``3 · 1025``: the clean magnitudes of all three frames, trained with MSE.
* Reconstruction ([1], ``CAE/test.py``): the predicted magnitude with the mixture phase.

Deviations, each documented where it is made: the last layer is a ReLU without the authors'
final batch norm (so predicted magnitudes are ≥ 0); inputs are divided by the track's mean
magnitude (:func:`track_scale`) and outputs multiplied back, so the model does not depend on the
recording level; at inference every frame is the average of the three windows that contain it
(the authors keep the first frame of each window).

References:
    [1] Rajesh R, P. Rajan, "Neural networks for interference reduction in multi-track
        recordings", IEEE WASPAA 2023.
    [2] https://github.com/its-rajesh/IRMR (``CAE/``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bleedjax import signal
from bleedjax._types import Array, Complex, Float, Int

EPS = 1e-8


class CAE(nnx.Module):
    """The CAE of [1] on windows of ``context_frames`` magnitude frames.

    Args:
        n_fft: STFT size (``n_fft // 2 + 1`` bins per frame).
        context_frames: frames per window (3 in [1]).
        conv_channels: channels of the encoder's convolutions (32, 64 in [1]).
        bottleneck: width of the dense bottleneck (100 in [1]).
        kernel_size: convolution length along the concatenated frequency axis (2 in [2]).
        rngs: parameter initialisation.
    """

    def __init__(
        self,
        n_fft: int,
        *,
        context_frames: int = 3,
        conv_channels: Sequence[int] = (32, 64),
        bottleneck: int = 100,
        kernel_size: int = 2,
        rngs: nnx.Rngs,
    ):
        if context_frames < 1 or context_frames % 2 == 0:
            raise ValueError(f"context_frames must be odd and positive, got {context_frames}")
        self.bins = n_fft // 2 + 1
        self.context_frames = context_frames
        length = context_frames * self.bins
        encoded = length - len(conv_channels) * (kernel_size - 1)
        if encoded < 1:
            raise ValueError(f"n_fft={n_fft} is too small for {len(conv_channels)} convolutions")
        self.encoded_shape = (encoded, conv_channels[-1])
        widths = (1, *conv_channels)
        self.convs = nnx.List(
            [nnx.Conv(a, b, (kernel_size,), padding="VALID", rngs=rngs) for a, b in itertools.pairwise(widths)]
        )
        self.conv_norms = nnx.List([nnx.BatchNorm(b, rngs=rngs) for b in conv_channels])
        self.down = nnx.Linear(encoded * conv_channels[-1], bottleneck, rngs=rngs)
        self.up = nnx.Linear(bottleneck, encoded * conv_channels[-1], rngs=rngs)
        back = widths[::-1]
        self.deconvs = nnx.List(
            [nnx.ConvTranspose(a, b, (kernel_size,), padding="VALID", rngs=rngs) for a, b in itertools.pairwise(back)]
        )
        self.deconv_norms = nnx.List([nnx.BatchNorm(b, rngs=rngs) for b in back[1:-1]])

    def __call__(
        self, windows: Float[Array, "batch context bins"], *, use_running_average: bool | None = None
    ) -> Float[Array, "batch context bins"]:
        """Clean magnitudes of every window.

        Args:
            windows: ``(N, context_frames, bins)`` (normalised) microphone magnitudes.
            use_running_average: batch norm with the stored statistics (inference) rather than the
                batch's; by default the modules' mode (``model.train()`` / ``model.eval()``).

        Returns:
            ``(N, context_frames, bins)`` non-negative magnitudes.
        """
        batch = windows.shape[0]
        x = windows.reshape(batch, -1, 1)
        for conv, norm in zip(self.convs, self.conv_norms):
            x = norm(jax.nn.relu(conv(x)), use_running_average=use_running_average)
        x = jax.nn.relu(self.down(x.reshape(batch, -1)))
        x = jax.nn.relu(self.up(x)).reshape(batch, *self.encoded_shape)
        for deconv, norm in zip(self.deconvs[:-1], self.deconv_norms):
            x = norm(jax.nn.relu(deconv(x)), use_running_average=use_running_average)
        x = jax.nn.relu(self.deconvs[-1](x))
        return x.reshape(windows.shape)


def context_windows(
    magnitudes: Float[Array, "bins frames"],
    context: int,
    centres: Int[Array, " windows"] | np.ndarray,
    frames: Int[Array, ""] | int | None = None,
) -> Float[Array, "windows {context} bins"]:
    """The ``context`` frames centred on each of ``centres`` (indices clamped at the edges: frame 0
    and frame ``frames − 1``, the last real frame of a padded track; the last frame without it),
    vmapped over the centres."""
    half = context // 2
    last = magnitudes.shape[-1] - 1 if frames is None else frames - 1

    def one(centre):
        index = jnp.clip(centre + jnp.arange(context) - half, 0, last)
        return jnp.take(magnitudes, index, axis=1).T

    return jax.vmap(one)(jnp.asarray(centres))


def merge_windows(
    predicted: Float[Array, "frames context bins"], real_frames: Int[Array, ""] | int | None = None
) -> Float[Array, "bins frames"]:
    """Inverse of :func:`context_windows` over all frames: every frame is the mean of the
    estimates of the windows that contain it (clamped duplicates at the edges left out, and the
    windows centred after ``real_frames``, the real frames of a padded track)."""
    frames, context, _ = predicted.shape
    half = context // 2
    end = frames if real_frames is None else real_frames
    source = np.arange(frames)[:, None] + half - np.arange(context)[None, :]
    valid = (source >= 0) & (source < end)
    values = predicted[np.clip(source, 0, frames - 1), np.arange(context)[None, :]]
    merged = jnp.sum(values * valid[..., None], axis=1) / jnp.maximum(valid.sum(axis=1), 1)[:, None]
    return merged.T


def track_scale(magnitudes: Float[Array, "bins frames"], mask: Float[Array, " frames"] | None = None) -> Float[Array, ""]:
    """The mean magnitude of a track over its (unmasked) frames, the CAE's level normalisation."""
    if mask is None:
        return jnp.mean(magnitudes) + EPS
    return jnp.sum(magnitudes * mask[None, :]) / (jnp.maximum(jnp.sum(mask), 1.0) * magnitudes.shape[0]) + EPS


def training_frames(frames: int, count: int) -> np.ndarray:
    """``count`` evenly spaced window centres out of ``frames`` (all frames when ``count`` is 0)."""
    if count <= 0 or count >= frames:
        return np.arange(frames)
    return np.round(np.linspace(0, frames - 1, count)).astype(int)


def stem_tracks(model_config, config, num_tracks: int) -> np.ndarray:
    """Indices of the batch's tracks that a CAE for ``model_config.stem`` trains on: all tracks for
    ``"any"``, a track index, or a name looked up in ``config.data.track_names``."""
    stem = model_config.get("stem", "any")
    if stem in ("any", "all", "", None):
        return np.arange(num_tracks)
    if isinstance(stem, int) or (isinstance(stem, str) and stem.isdigit()):
        index = int(stem)
    else:
        data = config.get("data") if hasattr(config, "get") else None
        names = list(data.get("track_names", ()) or ()) if data is not None else []
        if stem not in names:
            raise ValueError(f"CAE stem {stem!r} is not among the data's track_names {names}; "
                             "give a track index or 'any'")
        index = names.index(stem)
    if not 0 <= index < num_tracks:
        raise ValueError(f"CAE stem index {index} is outside the batch's {num_tracks} tracks")
    return np.asarray([index])


def clean_track(
    model: CAE,
    audio: Float[Array, " samples"],
    *,
    n_fft: int,
    hop: int,
    length: Int[Array, ""] | None = None,
    chunk: int = 256,
) -> Float[Array, " samples"]:
    """One microphone track cleaned by the CAE: magnitudes of all context windows (in chunks of
    ``chunk`` windows, with batch norm's stored statistics), merged (:func:`merge_windows`), with
    the mixture phase ([1], ``CAE/test.py``), inverted by :func:`bleedjax.signal.istft`.

    Args:
        model: a trained :class:`CAE`.
        audio: ``(samples,)`` microphone signal, possibly zero-padded at the end.
        n_fft, hop: the model's STFT.
        length: the true length of a padded track (its padding frames leave the level out).
        chunk: windows per model call (bounds memory on long recordings).
    """
    spectrogram = signal.stft(audio, n_fft=n_fft, hop=hop)
    magnitudes = jnp.abs(spectrogram)
    frames = magnitudes.shape[-1]
    mask = None if length is None else signal.frame_mask(length, frames, n_fft=n_fft, hop=hop)
    scale = track_scale(magnitudes, mask)
    real = None if mask is None else jnp.sum(mask).astype(jnp.int32)
    windows = context_windows(magnitudes / scale, model.context_frames, np.arange(frames), real)
    predicted = jax.lax.map(lambda w: model(w[None], use_running_average=True)[0], windows, batch_size=chunk)
    cleaned = with_mixture_phase(spectrogram, merge_windows(predicted, real) * scale)
    return signal.istft(cleaned, length=audio.shape[-1], n_fft=n_fft, hop=hop, valid_length=length)


def with_mixture_phase(
    spectrogram: Complex[Array, "*batch bins frames"], magnitudes: Float[Array, "*batch bins frames"]
) -> Complex[Array, "*batch bins frames"]:
    """``magnitudes · e^{i∠X}`` ([1], ``CAE/test.py``); phase 0 where ``X`` is 0."""
    mixture = jnp.abs(spectrogram)
    phase = jnp.where(mixture > 0, spectrogram / jnp.where(mixture > 0, mixture, 1.0), 1.0)
    return magnitudes * phase
