"""t-UNet: the truncated UNet of Rajesh R & Rajan (WASPAA 2023 [1]) that predicts the interference
matrix Λ from the microphone waveforms.

Architecture (the authors' code [2], ``tUNet/train.py``):

* Input: the ``J`` microphone waveforms ``(batch, J, samples)``. Every track goes through the same
  encoder (the authors' ``Conv2D`` with kernel ``(1, 4)`` slides along time only, one row per
  microphone).
* Encoder: five blocks of a valid 1-D convolution along time (kernel 4; 16, 32, 64, 128 and 512
  channels; ReLU), each followed by max-pooling by 9.
* Head: dense layers 512 → 128 → 64 → 32 → J² (all ReLU, so Λ̂ ≥ 0), reshaped to ``(J, J)``.

Beyond [1]:

* Global average pooling over the remaining time positions before the head. The authors flatten
  ``(J, L₅, 512)``, which ties the model to one input length (L₅ = 3 for their 10 s at 22.05 kHz);
  averaging over L₅ gives ``J · 512`` features for any input of at least :func:`min_samples`
  samples (81 192 for the defaults: ``L ← 9 L + 3`` five times from ``L₅ = 1``). Zero padding at the
  end of a batched input is left out of the average when ``lengths`` is given (only positions
  whose receptive field lies inside the signal count, :func:`valid_length`).
* The input is divided by its RMS over all tracks, so Λ̂ (like its target ``X · pinv(S)``) does
  not change with the recording level.
* The last layer's bias starts at the identity with ``INITIAL_BLEED`` (0.05) off the diagonal: Λ̂
  starts as a well-conditioned matrix (which ``pinv`` in the signal loss needs) with every output
  in ReLU's active range (with a zero bias about half of the J² outputs start at 0, where ReLU
  passes no gradient, and stay there).
* ``frequency_bands > 1``: the last layer has ``bands · J²`` outputs and Λ̂ is frequency
  dependent, ``(bands, J, J)``, one matrix per band of STFT bins (:mod:`bleedjax.models.inference`).
* ``pair_histogram_bins > 0`` (the bundled model): a cross-track head. The paper's head sees the
  time-averaged features of each track on its own and learns little beyond the mean training
  matrix. Here one dense head, shared by every ordered pair ``(i, j)``, sees the level-ratio
  histograms of the pair (:mod:`bleedjax.models.pair_features`: where microphone ``j`` dominates,
  microphone ``i`` is ``Λ_ij / Λ_jj`` as loud), the encoder features of ``i`` and ``j`` and
  ``[i = j]``, and outputs ``Λ̂_ij`` for every band through a sharpened softplus (:meth:`TUNet.
  _pair_head`). No weight depends on ``J``, so a model trained on 4 tracks estimates Λ̂ for a
  session of any number of tracks.

References:
    [1] Rajesh R, P. Rajan, "Neural networks for interference reduction in multi-track
        recordings", IEEE WASPAA 2023.
    [2] https://github.com/its-rajesh/IRMR (``tUNet/train.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.linen import max_pool

from bleedjax import signal
from bleedjax._types import Array, Float, Int
from bleedjax.models import pair_features

EPS = 1e-8
INITIAL_BLEED = 0.05
PAIR_SHARPNESS = 10.0


def initial_matrix(tracks: int) -> np.ndarray:
    """``(tracks, tracks)`` the Λ̂ an untrained head outputs: the identity with ``INITIAL_BLEED``
    off the diagonal."""
    return np.eye(tracks) + INITIAL_BLEED * (1 - np.eye(tracks))


def _constant(value: np.ndarray):
    return lambda key, shape, dtype=jnp.float32: jnp.asarray(value, dtype).reshape(shape)


def valid_length(length: Int[Array, "*batch"] | int, *, kernel_size: int, pool: int, stages: int):
    """Encoder output positions whose receptive field lies inside a ``length``-sample signal:
    ``L ← ⌊(L − kernel_size + 1) / pool⌋`` per stage (``length`` may be traced)."""
    for _ in range(stages):
        length = jnp.maximum(length - kernel_size + 1, 0) // pool
    return length


def conv_pool_mono(
    x: Float[Array, "batch samples"],
    kernel: Float[Array, "kernel 1 channels"],
    bias: Float[Array, " channels"],
    pool: int,
) -> Float[Array, "batch pooled channels"]:
    """``max_pool(relu(conv(x)), pool)`` of a one-channel signal as one matrix product per pooling
    window: each window's ``pool + kernel − 1`` samples times a banded ``(pool + kernel − 1,
    pool · channels)`` matrix give its ``pool`` convolution outputs at once, then the maximum.

    The same numbers as ``nnx.Conv`` (valid) followed by ``max_pool`` (valid, stride ``pool``), but
    about twice as fast on CPU (needs ``kernel ≤ pool + 1``) for the t-UNet's first block, which sees every input sample and
    dominates its cost (a dense product instead of a 1-input-channel convolution and a
    separate pooling pass over 16 channels at the full sample rate).
    """
    size = kernel.shape[0]
    batch, samples = x.shape
    pooled = (samples - size + 1) // pool
    span = pool + size - 1
    head = x[:, : pooled * pool].reshape(batch, pooled, pool)
    tail = jnp.pad(x[:, pool : pooled * pool + size - 1], ((0, 0), (0, pool - size + 1)))
    frames = jnp.concatenate([head, tail.reshape(batch, pooled, pool)[:, :, : size - 1]], axis=-1)
    offset = np.arange(span)[:, None] - np.arange(pool)[None, :]
    inside = (offset >= 0) & (offset < size)
    banded = jnp.where(inside[:, :, None], kernel[np.clip(offset, 0, size - 1), 0], 0.0)
    outputs = jnp.einsum("bpj,jqc->bpqc", frames, banded, precision=jax.lax.Precision.HIGHEST)
    return jax.nn.relu(jnp.max(outputs, axis=2) + bias[None, None, :])


def min_samples(*, kernel_size: int, pool: int, stages: int) -> int:
    """The shortest input the encoder accepts: one output position after ``stages`` blocks."""
    length = 1
    for _ in range(stages):
        length = length * pool + kernel_size - 1
    return length


class TUNet(nnx.Module):
    """The t-UNet of [1] with a length-independent pooling (module docstring).

    Args:
        num_tracks: ``J``, the number of microphones (and sources).
        channels: output channels of the encoder's convolutions.
        kernel_size: convolution length along time.
        pool: max-pooling window and stride.
        dense: widths of the hidden dense layers of the head.
        frequency_bands: 1 for one Λ per pair as in [1]; more for a frequency-dependent Λ.
        rngs: parameter initialisation.
    """

    def __init__(
        self,
        num_tracks: int,
        *,
        channels: Sequence[int] = (16, 32, 64, 128, 512),
        kernel_size: int = 4,
        pool: int = 9,
        dense: Sequence[int] = (512, 128, 64, 32),
        frequency_bands: int = 1,
        pair_histogram_bins: int = 0,
        n_fft: int = 2048,
        hop: int = 512,
        rngs: nnx.Rngs,
    ):
        if num_tracks < 1 or frequency_bands < 1 or kernel_size < 1 or pool < 1 or not channels:
            raise ValueError(
                f"t-UNet needs num_tracks, frequency_bands, kernel_size, pool >= 1 and channels; got "
                f"{num_tracks}, {frequency_bands}, {kernel_size}, {pool}, {tuple(channels)}"
            )
        if pair_histogram_bins == 1 or pair_histogram_bins < 0:
            raise ValueError(f"pair_histogram_bins must be 0 (off) or at least 2, got {pair_histogram_bins}")
        self.num_tracks = num_tracks
        self.frequency_bands = frequency_bands
        self.kernel_size = kernel_size
        self.pool = pool
        self.pair_histogram_bins = pair_histogram_bins
        self.n_fft, self.hop = n_fft, hop
        widths = (1, *channels)
        self.convs = nnx.List(
            [
                nnx.Conv(c_in, c_out, (kernel_size,), padding="VALID", rngs=rngs)
                for c_in, c_out in itertools.pairwise(widths)
            ]
        )
        if pair_histogram_bins:
            self.band_index = nnx.Variable(jnp.asarray(pair_features.band_index_of(frequency_bands, n_fft)))
            pair_inputs = pair_features.features_per_pair(pair_histogram_bins, frequency_bands) + 2 * channels[-1] + 1
            sizes = (pair_inputs, *dense, frequency_bands)
            last = {"kernel_init": nnx.initializers.zeros_init()}
        else:
            sizes = (num_tracks * channels[-1], *dense, frequency_bands * num_tracks**2)
            start = np.tile(initial_matrix(num_tracks), (frequency_bands, 1, 1))
            last = {"bias_init": _constant(start.reshape(-1))}
        self.head = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes[:-1])])
        self.head.append(nnx.Linear(sizes[-2], sizes[-1], rngs=rngs, **last))

    @property
    def min_samples(self) -> int:
        """The shortest input this model accepts (:func:`min_samples`)."""
        return min_samples(kernel_size=self.kernel_size, pool=self.pool, stages=len(self.convs))

    def __call__(
        self,
        mics: Float[Array, "batch tracks samples"],
        lengths: Int[Array, " batch"] | None = None,
    ) -> Float[Array, "batch tracks tracks"] | Float[Array, "batch bands tracks tracks"]:
        """Λ̂ for a batch of sessions.

        Args:
            mics: ``(B, J, T)`` microphone waveforms, ``T >= self.min_samples``.
            lengths: ``(B,)`` true lengths of zero-padded inputs (all ``T`` when ``None``).

        Returns:
            ``(B, J, J)`` non-negative Λ̂ (``Λ̂[i, j]``: how much of source ``j`` microphone ``i``
            hears), or ``(B, bands, J, J)`` when ``frequency_bands > 1``.
        """
        batch, tracks, samples = mics.shape
        if tracks != self.num_tracks and not (self.pair_histogram_bins and tracks >= 1):
            raise ValueError(f"t-UNet was built for {self.num_tracks} tracks, got {tracks}")
        if samples < self.min_samples:
            raise ValueError(f"t-UNet needs at least {self.min_samples} samples, got {samples}")
        if lengths is None:
            lengths = jnp.full((batch,), samples)
        inside = (jnp.arange(samples)[None, :] < lengths[:, None]).astype(mics.dtype)
        power = jnp.sum(mics**2, axis=(1, 2)) / jnp.maximum(tracks * lengths, 1)
        x = mics / (jnp.sqrt(power)[:, None, None] + EPS)
        normalised = x * inside[:, None, :]
        x = normalised.reshape(batch * tracks, samples)
        first = self.convs[0]
        if self.kernel_size <= self.pool + 1:
            x = conv_pool_mono(x, first.kernel[...], first.bias[...], self.pool)
        else:
            x = max_pool(jax.nn.relu(first(x[..., None])), (self.pool,), strides=(self.pool,), padding="VALID")
        for conv in self.convs[1:]:
            x = jax.nn.relu(conv(x))
            x = max_pool(x, (self.pool,), strides=(self.pool,), padding="VALID")
        valid = valid_length(lengths, kernel_size=self.kernel_size, pool=self.pool, stages=len(self.convs))
        weights = (jnp.arange(x.shape[1])[None, :] < valid[:, None]).astype(x.dtype)
        weights = weights / jnp.maximum(valid, 1)[:, None].astype(x.dtype)
        features = jnp.einsum("btpc,bp->btc", x.reshape(batch, tracks, *x.shape[1:]), weights)
        if self.pair_histogram_bins:
            return self._pair_head(normalised, features)
        h = features.reshape(batch, tracks * x.shape[-1])
        for layer in self.head:
            h = jax.nn.relu(layer(h))
        if self.frequency_bands == 1:
            return h.reshape(batch, tracks, tracks)
        return h.reshape(batch, self.frequency_bands, tracks, tracks)

    def _pair_head(
        self, mics: Float[Array, "batch tracks samples"], features: Float[Array, "batch tracks channels"]
    ) -> Float[Array, "batch tracks tracks"] | Float[Array, "batch bands tracks tracks"]:
        """Λ̂ from one shared head per ordered pair ``(i, j)``: the level-ratio histograms of the
        pair (:mod:`bleedjax.models.pair_features`), the encoder features of ``i`` and ``j`` and
        ``[i = j]``, through the dense layers to ``bands`` values, then
        ``Λ̂_ij = softplus(s · out + softplus⁻¹(s · Λ⁰_ij)) / s`` (``Λ⁰`` the identity with
        ``INITIAL_BLEED`` off the diagonal, where the zero-initialised last layer starts; the
        sharpness ``s`` = ``PAIR_SHARPNESS`` keeps ``∂Λ̂/∂out`` near 0.4 at a bleed of 0.05, where a
        plain softplus would give 0.05 and learn small bleeds twenty times slower)."""
        batch, tracks, _ = mics.shape
        power = jnp.abs(signal.stft(mics, n_fft=self.n_fft, hop=self.hop)) ** 2
        histograms = jax.vmap(
            lambda p: pair_features.pair_histograms(
                p, self.band_index[...], histogram_bins=self.pair_histogram_bins, bands=self.frequency_bands
            )
        )(power)
        rows = jnp.broadcast_to(features[:, :, None, :], (batch, tracks, tracks, features.shape[-1]))
        columns = jnp.broadcast_to(features[:, None, :, :], rows.shape)
        same = jnp.broadcast_to(jnp.eye(tracks, dtype=features.dtype)[None, :, :, None], (batch, tracks, tracks, 1))
        h = jnp.concatenate([histograms, rows, columns, same], axis=-1)
        for layer in self.head[:-1]:
            h = jax.nn.relu(layer(h))
        out = self.head[-1](h)
        offset = np.log(np.expm1(PAIR_SHARPNESS * initial_matrix(tracks))).astype(np.float32)
        pre = PAIR_SHARPNESS * jnp.moveaxis(out, -1, 1) + offset[None, None]
        lam = jax.nn.softplus(pre) / PAIR_SHARPNESS
        return lam[:, 0] if self.frequency_bands == 1 else lam
